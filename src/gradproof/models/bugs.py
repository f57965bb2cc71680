"""The bugs a :class:`~gradproof.models.FraudNetwork` can plant in its backward pass, for demos.

A gradient checker is only as good as the bugs it catches: each bug here is a
mistake people make when writing backpropagation by hand, and
``FraudNetwork.with_bug(name)`` plants it so that ``gradproof.check`` (or a
guard during training) can be seen to catch it and name the parameter.
"""

from __future__ import annotations

from gradproof.errors import InputError

__all__ = ["BUGS", "bug_parameters", "require_applicable"]

BUGS: tuple[str, ...] = (
    "dW2-doubled",
    "db1-times-4",
    "no-l2-in-dW1",
    "dropout-mask-missing",
    "sample-weights-ignored",
)
"""The bugs :meth:`FraudNetwork.with_bug` can plant in the backward pass.

* ``"dW2-doubled"``: ``dW2`` is twice the true gradient (the course's first
  bug); caught in ``W2``.
* ``"db1-times-4"``: ``db1`` is four times the true gradient (the course's
  second bug); caught in ``b1``.
* ``"no-l2-in-dW1"``: ``dW1`` lacks the penalty's ``l2 * W1``; caught in
  ``W1``, needs ``l2 > 0``.
* ``"dropout-mask-missing"``: the backward through the first hidden layer's
  dropout divides by `keep_prob` but forgets the mask ``D1``; caught in ``W1``
  and ``b1``, needs ``keep_prob < 1``.
* ``"sample-weights-ignored"``: the backward treats every weight as 1; caught
  in every parameter when the weights are not all equal (class weighting).
"""


def bug_parameters(name: str, n_layers: int) -> tuple[str, ...]:
    """Return the parameters whose gradients bug `name` makes wrong.

    Parameters
    ----------
    name : str
        One of :data:`BUGS`.
    n_layers : int
        The network's number of LINEAR layers.

    Returns
    -------
    tuple of str
        The parameter names a gradient check should report, in layer order.

    Raises
    ------
    InputError
        If `name` is not one of :data:`BUGS`.

    Examples
    --------
    >>> bug_parameters("dropout-mask-missing", 3)
    ('W1', 'b1')
    """
    _require_known(name)
    if name == "sample-weights-ignored":
        return tuple(f"{kind}{layer}" for layer in range(1, n_layers + 1) for kind in "Wb")
    return {
        "dW2-doubled": ("W2",),
        "db1-times-4": ("b1",),
        "no-l2-in-dW1": ("W1",),
        "dropout-mask-missing": ("W1", "b1"),
    }[name]


def require_applicable(name: str, *, sizes: tuple[int, ...], l2: float, keep_prob: float) -> None:
    """Raise :class:`InputError` unless bug `name` exists and can show in this network.

    Parameters
    ----------
    name : str
        The bug.
    sizes : tuple of int
        The network's layer sizes.
    l2 : float
        Its L2 strength.
    keep_prob : float
        Its dropout keep probability.

    Raises
    ------
    InputError
        If `name` is unknown, or the bug changes nothing here: ``"dW2-doubled"``
        without a second layer, ``"no-l2-in-dW1"`` with ``l2 == 0``,
        ``"dropout-mask-missing"`` without dropout.
    """
    _require_known(name)
    if name == "dW2-doubled" and len(sizes) < 3:
        raise InputError(
            f"bug 'dW2-doubled' needs a second layer, but sizes={sizes} has one; add a hidden "
            "layer, e.g. sizes=(n_features, 16, 1)."
        )
    if name == "no-l2-in-dW1" and l2 == 0:
        raise InputError(
            "bug 'no-l2-in-dW1' changes nothing when `l2` is 0; build the network with l2 > 0, "
            "e.g. FraudNetwork(sizes=..., l2=1e-2)."
        )
    if name == "dropout-mask-missing" and (keep_prob == 1 or len(sizes) < 3):
        raise InputError(
            "bug 'dropout-mask-missing' needs dropout: a hidden layer and keep_prob < 1; got "
            f"sizes={sizes}, keep_prob={keep_prob}. Use e.g. keep_prob=0.8."
        )


def _require_known(name: str) -> None:
    if name not in BUGS:
        choices = ", ".join(repr(b) for b in BUGS)
        raise InputError(f"unknown bug {name!r}; the plantable bugs are {choices}.")
