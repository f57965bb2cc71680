"""A deep fraud-detection network with hand-written backpropagation.

The network is the deeplearning.ai assignment's (:mod:`gradproof.course`)
made configurable: any list of layer sizes, LINEAR -> RELU hidden layers, a
LINEAR -> SIGMOID output, the logistic cost, He initialisation, L2
regularisation and inverted dropout, each with its backward written out by hand.

Note [Layout]
    Public arrays put one example per row, as in a CSV file or scikit-learn:
    ``X`` is (m, n_features) and ``y`` and ``sample_weight`` are (m,).
    Parameters follow the course: ``W<l>`` is (n_l, n_{l-1}) and ``b<l>`` is
    (n_l, 1). Inside the passes the activations are transposed to one example
    per column, so every equation reads as in the course:
    ``Z<l> = W<l> A<l-1> + b<l>``, ``dW<l> = dZ<l> A<l-1>^T (+ l2 W<l>)``.

Note [Cost]
    ``J = 1/m sum_i w_i (softplus(z_i) - y_i z_i) + l2/2 sum_l ||W<l>||_F^2``,
    the weighted mean logistic cost written with the output logit ``z`` so it
    never takes the log of 0 (``softplus(z) - y z = -y log s(z) - (1 - y)
    log(1 - s(z))``), plus an L2 penalty on the weights (not the biases).
    Unlike the course's ``lambda / (2 m)``, the penalty does not depend on the
    number of examples, so that mini-batch steps and the full-data loss
    minimise one objective; the course's ``lambda`` is ``l2 * m``.

Note [Dropout masks]
    With ``keep_prob < 1`` and ``training=True``, every hidden activation is
    multiplied by a mask ``D<l> = np.random.random((n_l, m)) < keep_prob`` and
    divided by `keep_prob` (inverted dropout). The masks come from numpy's
    *global* generator, drawn in layer order, one call per hidden layer, and
    :meth:`FraudNetwork.loss` and :meth:`FraudNetwork.gradients` draw them in
    exactly the same way. So when the global generator is put in the same
    state before each call (``np.random.seed(s)``, which
    ``gradproof.check(..., seed=s)`` does before every evaluation), the two
    calls see the same masks and the gradient is the exact gradient of that
    loss. Nothing else in this module touches the global generator.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from gradproof._typing import BoolArray, FloatArray
from gradproof.errors import InputError
from gradproof.models._inputs import examples, features, require_params
from gradproof.models.bugs import require_applicable

__all__ = ["HIDDEN_BIAS", "FraudNetwork"]

HIDDEN_BIAS = 0.01
"""The initial value of every hidden bias (see :meth:`FraudNetwork.init_params`)."""


@dataclass(frozen=True, slots=True)
class _Forward:
    """What the forward pass keeps for the backward one (one example per column)."""

    activations: list[FloatArray]  # A0 = X^T, A1, ..., A<L-1> (after dropout)
    logits: list[FloatArray]  # Z1, ..., Z<L>
    masks: list[BoolArray | None]  # D1, ..., D<L-1>; None without dropout


@dataclass(frozen=True, slots=True, kw_only=True)
class FraudNetwork:
    """A deep binary classifier with hand-written gradients.

    LINEAR -> RELU for every hidden layer, then LINEAR -> SIGMOID; the cost is
    the (weighted) mean logistic cost plus an L2 penalty (Note [Cost] in the
    module's source). The object holds only the architecture: parameters are
    plain dicts passed to every method, so any of them can be checked with
    :func:`gradproof.check`.

    Parameters
    ----------
    sizes : tuple of int
        Layer widths: the number of features, the hidden widths, then 1.
        ``(f, 1)`` is logistic regression.
    l2 : float, default 0.0
        Strength of the L2 penalty ``l2/2 * sum ||W||^2``.
    keep_prob : float, default 1.0
        Probability of keeping a hidden unit under inverted dropout; 1 turns
        dropout off.
    bug : str, optional
        A planted bug of the backward pass, one of :data:`BUGS`; set it with
        :meth:`with_bug`.

    Raises
    ------
    InputError
        If `sizes` does not end in 1 or has a width below 1, `l2` is negative,
        `keep_prob` is outside (0, 1], or `bug` is not one of :data:`BUGS`.

    Examples
    --------
    >>> import numpy as np
    >>> import gradproof
    >>> net = FraudNetwork(sizes=(4, 5, 3, 1), l2=1e-2)
    >>> params = net.init_params(seed=0)
    >>> X = np.random.default_rng(0).standard_normal((16, 4))
    >>> y = np.arange(16) % 2
    >>> loss = lambda p: net.loss(p, X, y)
    >>> gradproof.check(loss, lambda p: net.gradients(p, X, y), params).passed
    True
    >>> bad = net.with_bug("dW2-doubled")
    >>> gradproof.check(loss, lambda p: bad.gradients(p, X, y), params).suspects
    ('W2',)
    """

    sizes: tuple[int, ...]
    l2: float = 0.0
    keep_prob: float = 1.0
    bug: str | None = None

    def __post_init__(self) -> None:
        sizes = tuple(self.sizes)
        if (
            len(sizes) < 2
            or any(isinstance(s, bool) or not isinstance(s, (int, np.integer)) for s in sizes)
            or min(sizes) < 1
            or sizes[-1] != 1
        ):
            raise InputError(
                f"`sizes` must list at least two positive integer widths ending in 1 (the "
                f"output); got {sizes!r}. Pass e.g. sizes=(n_features, 32, 16, 1)."
            )
        object.__setattr__(self, "sizes", tuple(int(s) for s in sizes))
        if not (np.isfinite(self.l2) and self.l2 >= 0):
            raise InputError(f"`l2` must be a finite number >= 0; got {self.l2!r}.")
        if not (0 < self.keep_prob <= 1):
            raise InputError(
                f"`keep_prob` must be in (0, 1]; got {self.keep_prob!r}. Use 1.0 for no dropout."
            )
        if self.bug is not None:
            require_applicable(self.bug, sizes=self.sizes, l2=self.l2, keep_prob=self.keep_prob)

    @property
    def n_layers(self) -> int:
        """Number of LINEAR layers (hidden layers plus the output)."""
        return len(self.sizes) - 1

    @property
    def param_names(self) -> tuple[str, ...]:
        """``("W1", "b1", ..., "W<L>", "b<L>")``, in layer order."""
        return tuple(f"{kind}{layer}" for layer in range(1, self.n_layers + 1) for kind in "Wb")

    def init_params(self, *, seed: int = 0) -> dict[str, FloatArray]:
        """Return He-initialised parameters.

        ``W<l>`` is drawn from ``N(0, 2 / n_{l-1})`` (He et al. 2015, suited to
        ReLU). The hidden biases start at 0.01 and the output bias at 0: with
        zero hidden biases, an example that switches off every unit of a layer
        puts the next layer's units exactly at 0, on the ReLU's kink, where a
        gradient check can only answer "inconclusive".

        Parameters
        ----------
        seed : int, default 0
            Seed of a private generator (the global one is not touched).

        Returns
        -------
        dict of str to numpy.ndarray
            ``W<l>`` of shape (n_l, n_{l-1}) and ``b<l>`` of shape (n_l, 1), float64.

        Examples
        --------
        >>> params = FraudNetwork(sizes=(4, 5, 1)).init_params(seed=0)
        >>> {name: value.shape for name, value in params.items()}
        {'W1': (5, 4), 'b1': (5, 1), 'W2': (1, 5), 'b2': (1, 1)}
        """
        rng = np.random.default_rng(seed)
        params: dict[str, FloatArray] = {}
        for layer in range(1, self.n_layers + 1):
            fan_in, fan_out = self.sizes[layer - 1], self.sizes[layer]
            params[f"W{layer}"] = rng.standard_normal((fan_out, fan_in)) * np.sqrt(2.0 / fan_in)
            bias = 0.0 if layer == self.n_layers else HIDDEN_BIAS
            params[f"b{layer}"] = np.full((fan_out, 1), bias)
        return params

    def with_bug(self, name: str) -> FraudNetwork:
        """Return this network with a bug planted in its backward pass.

        The loss is unchanged; only :meth:`gradients` is wrong, in the way
        :data:`BUGS` describes, so a gradient check should catch it.

        Parameters
        ----------
        name : str
            One of :data:`BUGS`.

        Returns
        -------
        FraudNetwork
            A copy with ``bug=name``.

        Raises
        ------
        InputError
            If `name` is unknown, or the bug cannot show in this network
            (``"dW2-doubled"`` without a second layer, ``"no-l2-in-dW1"``
            with ``l2 == 0``, ``"dropout-mask-missing"`` without dropout).

        Examples
        --------
        >>> FraudNetwork(sizes=(3, 4, 1)).with_bug("db1-times-4").bug
        'db1-times-4'
        """
        require_applicable(name, sizes=self.sizes, l2=self.l2, keep_prob=self.keep_prob)
        return dataclasses.replace(self, bug=name)

    def loss(
        self,
        params: Mapping[str, FloatArray],
        X: npt.ArrayLike,
        y: npt.ArrayLike,
        *,
        sample_weight: npt.ArrayLike | None = None,
        training: bool = True,
    ) -> float:
        """Return the weighted mean logistic cost plus the L2 penalty.

        Parameters
        ----------
        params : dict of str to numpy.ndarray
            ``W1, b1, ..., W<L>, b<L>`` with the shapes of :meth:`init_params`.
        X : array_like of shape (m, n_features)
            One example per row (Note [Layout]).
        y : array_like of shape (m,)
            The labels, 0 or 1.
        sample_weight : array_like of shape (m,), optional
            Non-negative weight of each example's cost; 1 by default.
        training : bool, default True
            Apply dropout (when ``keep_prob < 1``), drawing the masks from
            numpy's global generator (Note [Dropout masks]).

        Returns
        -------
        float
            ``1/m sum w_i cost_i + l2/2 sum ||W||^2``.

        Raises
        ------
        InputError
            If a parameter is missing or misshapen, or `X`, `y` or
            `sample_weight` do not match.
        """
        Xt, labels, weights = examples(params, self.sizes, X, y, sample_weight)
        z = self._forward(params, Xt, training=training).logits[-1][0]
        cost = float(np.mean(weights * (np.logaddexp(0.0, z) - labels * z)))
        penalty = 0.5 * self.l2 * sum(float(np.sum(params[f"W{k}"] ** 2)) for k in self._layers)
        return cost + penalty

    def gradients(
        self,
        params: Mapping[str, FloatArray],
        X: npt.ArrayLike,
        y: npt.ArrayLike,
        *,
        sample_weight: npt.ArrayLike | None = None,
        training: bool = True,
    ) -> dict[str, FloatArray]:
        """Return the gradient of :meth:`loss`, by hand-written backpropagation.

        With dropout, the masks are drawn from numpy's global generator exactly
        as :meth:`loss` draws them: re-seed it identically before each call
        (``gradproof.check(..., seed=0)`` does) and the gradient is that of the
        same loss (Note [Dropout masks]).

        Parameters
        ----------
        params : dict of str to numpy.ndarray
            ``W1, b1, ..., W<L>, b<L>``.
        X : array_like of shape (m, n_features)
            One example per row.
        y : array_like of shape (m,)
            The labels, 0 or 1.
        sample_weight : array_like of shape (m,), optional
            Non-negative weight of each example's cost; 1 by default.
        training : bool, default True
            Apply dropout (when ``keep_prob < 1``).

        Returns
        -------
        dict of str to numpy.ndarray
            The gradients, with the keys and shapes of `params`.

        Raises
        ------
        InputError
            As :meth:`loss`.
        """
        Xt, labels, weights = examples(params, self.sizes, X, y, sample_weight)
        cache = self._forward(params, Xt, training=training)
        m = Xt.shape[1]
        if self.bug == "sample-weights-ignored":
            weights = np.ones_like(weights)
        # d/dz of softplus(z) - y z is sigmoid(z) - y.
        dZ = weights * (_sigmoid(cache.logits[-1]) - labels) / m
        grads: dict[str, FloatArray] = {}
        for layer in range(self.n_layers, 0, -1):
            W = params[f"W{layer}"]
            dW = dZ @ cache.activations[layer - 1].T
            if not (self.bug == "no-l2-in-dW1" and layer == 1):
                dW = dW + self.l2 * W
            grads[f"W{layer}"] = dW
            grads[f"b{layer}"] = np.sum(dZ, axis=1, keepdims=True)
            if layer > 1:
                dA = W.T @ dZ
                mask = cache.masks[layer - 2]
                if mask is not None:
                    forgot = self.bug == "dropout-mask-missing" and layer == 2
                    dA = dA / self.keep_prob if forgot else dA * mask / self.keep_prob
                dZ = dA * (cache.logits[layer - 2] > 0)
        if self.bug == "dW2-doubled":
            grads["W2"] = 2.0 * grads["W2"]
        if self.bug == "db1-times-4":
            grads["b1"] = 4.0 * grads["b1"]
        return {name: grads[name] for name in self.param_names}

    def predict_proba(self, params: Mapping[str, FloatArray], X: npt.ArrayLike) -> FloatArray:
        """Return the predicted probability of fraud of each example, without dropout.

        Parameters
        ----------
        params : dict of str to numpy.ndarray
            ``W1, b1, ..., W<L>, b<L>``.
        X : array_like of shape (m, n_features)
            One example per row.

        Returns
        -------
        numpy.ndarray of shape (m,)
            ``sigmoid(z)`` of each example.

        Examples
        --------
        >>> import numpy as np
        >>> net = FraudNetwork(sizes=(2, 1))
        >>> net.predict_proba({"W1": np.zeros((1, 2)), "b1": np.zeros((1, 1))}, np.ones((3, 2)))
        array([0.5, 0.5, 0.5])
        """
        require_params(params, self.sizes)
        Xt = features(X, self.sizes[0])
        out: FloatArray = _sigmoid(self._forward(params, Xt, training=False).logits[-1][0])
        return out

    # -- internals --------------------------------------------------------------------------------
    @property
    def _layers(self) -> range:
        return range(1, self.n_layers + 1)

    def _forward(
        self, params: Mapping[str, FloatArray], Xt: FloatArray, *, training: bool
    ) -> _Forward:
        """Run the layers on ``Xt`` (one example per column), keeping what backward needs."""
        dropout = training and self.keep_prob < 1
        A = Xt
        activations, logits, masks = [A], [], []
        for layer in self._layers:
            Z = params[f"W{layer}"] @ A + params[f"b{layer}"]
            logits.append(Z)
            if layer == self.n_layers:
                break
            A = np.maximum(Z, 0.0)
            mask: BoolArray | None = None
            if dropout:
                # Note [Dropout masks]: the global generator, so that a re-seed freezes them.
                mask = np.random.random(A.shape) < self.keep_prob  # noqa: NPY002
                A = A * mask / self.keep_prob
            masks.append(mask)
            activations.append(A)
        return _Forward(activations=activations, logits=logits, masks=masks)


def _sigmoid(z: FloatArray) -> FloatArray:
    """Return ``1 / (1 + exp(-z))`` without overflow."""
    e = np.exp(-np.abs(z))
    s: FloatArray = np.where(z >= 0, 1 / (1 + e), e / (1 + e))
    return s
