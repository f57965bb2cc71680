"""Mini-batch training of a :class:`FraudNetwork`, with a threshold chosen on validation data.

Note [Training randomness]
    Three things are random: the initial parameters (``net.init_params(seed=config.seed)``),
    the order of the examples in each epoch (a private generator seeded with
    ``config.seed``) and, with dropout, the masks. The masks come from numpy's
    global generator (the network's contract with ``gradproof.check(..., seed=)``),
    so before every step it is re-seeded with ``(config.seed, step)``: a
    callback that uses the global generator (a gradient check does) cannot
    change the masks of later steps, and the same seed gives the same
    parameters bit for bit. The global generator's state is restored when
    training ends.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from gradproof._typing import FloatArray
from gradproof.errors import InputError
from gradproof.models.data import PaymentData
from gradproof.models.metrics import average_precision, best_f1_threshold
from gradproof.models.network import FraudNetwork
from gradproof.models.optimizers import make_optimizer
from gradproof.models.standardizer import Standardizer

__all__ = [
    "CLASS_WEIGHTS",
    "Batch",
    "EpochRecord",
    "TrainingCallback",
    "TrainingConfig",
    "TrainingResult",
    "class_weights",
    "logistic_baseline",
    "train",
]

Batch = tuple[FloatArray, FloatArray, FloatArray]
"""One mini-batch as the network sees it: standardised ``X`` (b, f), ``y`` (b,), weights (b,)."""

TrainingCallback = Callable[[int, dict[str, FloatArray], Batch], object]
"""``callback(step, params, batch)``, called after every optimiser step."""

CLASS_WEIGHTS: tuple[str | None, ...] = ("balanced", None)
"""The values :attr:`TrainingConfig.class_weight` accepts."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TrainingConfig:
    """How to train: optimiser, step size, epochs, batch size, class weighting, seed.

    Parameters
    ----------
    optimizer : {"adam", "gd"}, default "adam"
        Adam or plain (mini-batch) gradient descent.
    learning_rate : float, optional
        The step size; by default 1e-3 for Adam and 0.1 for gradient descent.
    epochs : int, default 30
        Passes over the training split.
    batch_size : int, default 128
        Examples per optimiser step (the last batch of an epoch may be smaller).
    class_weight : {"balanced", None}, default "balanced"
        ``"balanced"`` weighs each example's cost by ``m / (2 m_c)`` for its
        class's count ``m_c`` in the training split, so that frauds and
        legitimate transactions weigh the same in all; None weighs all by 1.
    seed : int, default 0
        Seed of the initial parameters, the shuffles and the dropout masks (>= 0).

    Raises
    ------
    InputError
        If a value is out of range or not one of the listed choices.
    """

    optimizer: str = "adam"
    learning_rate: float | None = None
    epochs: int = 30
    batch_size: int = 128
    class_weight: str | None = "balanced"
    seed: int = 0

    def __post_init__(self) -> None:
        make_optimizer(self.optimizer, self.learning_rate)  # validates both
        for name, least in (("epochs", 1), ("batch_size", 1), ("seed", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise InputError(f"`{name}` must be an integer >= {least}; got {value!r}.")
        if self.class_weight not in CLASS_WEIGHTS:
            raise InputError(
                f"`class_weight` must be 'balanced' or None; got {self.class_weight!r}."
            )


@dataclass(frozen=True, slots=True, kw_only=True)
class EpochRecord:
    """The state of training after one epoch.

    Attributes
    ----------
    epoch : int
        The epoch, from 1.
    train_loss, val_loss : float
        The training objective (class-weighted cost plus L2, no dropout) on
        the whole training and validation splits.
    val_pr_auc : float
        PR-AUC (average precision) on the validation split.
    """

    epoch: int
    train_loss: float
    val_loss: float
    val_pr_auc: float


@dataclass(frozen=True, slots=True, kw_only=True)
class TrainingResult:
    """A trained model: what :func:`evaluate` and predictions need, and how it got there.

    Attributes
    ----------
    network : FraudNetwork
        The architecture that was trained.
    params : dict of str to numpy.ndarray
        The parameters after the last epoch (read-only arrays).
    standardizer : Standardizer
        Fitted on the training split; apply it to any data before the network.
    threshold : float
        The probability threshold that maximises F1 on the validation split.
    history : tuple of EpochRecord
        One record per epoch.
    steps : int
        Optimiser steps taken.
    seconds : float
        Wall-clock time of training.
    """

    network: FraudNetwork
    params: dict[str, FloatArray]
    standardizer: Standardizer
    threshold: float
    history: tuple[EpochRecord, ...]
    steps: int
    seconds: float

    def predict_proba(self, X: FloatArray) -> FloatArray:
        """Return the fraud probability of each row of raw (unstandardised) `X`."""
        return self.network.predict_proba(self.params, self.standardizer.transform(X))


def class_weights(y: FloatArray, class_weight: str | None, *, reference: FloatArray) -> FloatArray:
    """Return each example's cost weight.

    Parameters
    ----------
    y : numpy.ndarray of shape (m,)
        The labels to weigh.
    class_weight : {"balanced", None}
        As :attr:`TrainingConfig.class_weight`.
    reference : numpy.ndarray
        The labels the class counts are taken from (the training split's).

    Returns
    -------
    numpy.ndarray of shape (m,)
        ``n / (2 n_c)`` for the class ``c`` of each example, or all 1.

    Examples
    --------
    >>> import numpy as np
    >>> y = np.array([0, 0, 0, 1])
    >>> class_weights(y, "balanced", reference=y).tolist()
    [0.6666666666666666, 0.6666666666666666, 0.6666666666666666, 2.0]
    """
    if class_weight is None:
        return np.ones(y.shape[0])
    n_positive = float(np.sum(reference == 1))
    n = float(reference.shape[0])
    per_class = np.array([n / (2 * (n - n_positive)), n / (2 * n_positive)])
    weights: FloatArray = per_class[y.astype(np.intp)]
    return weights


def _require_compatible(net: FraudNetwork, train_data: PaymentData, val_data: PaymentData) -> None:
    """Raise :class:`InputError` unless the splits fit the network and have both classes."""
    for label, data in (("train_data", train_data), ("val_data", val_data)):
        if data.n_features != net.sizes[0]:
            raise InputError(
                f"`{label}` has {data.n_features} features but the network takes "
                f"{net.sizes[0]}; build it with sizes=({data.n_features}, ...)."
            )
        if data.n_positive in (0, data.n):
            raise InputError(
                f"`{label}` has {data.n_positive} frauds among {data.n} examples; training "
                "and threshold choice need both classes. Use a stratified split."
            )
    if val_data.feature_names != train_data.feature_names:
        raise InputError(
            "`train_data` and `val_data` have different features: "
            f"{train_data.feature_names} and {val_data.feature_names}."
        )


def train(
    net: FraudNetwork,
    train_data: PaymentData,
    val_data: PaymentData,
    config: TrainingConfig | None = None,
    *,
    callback: TrainingCallback | None = None,
) -> TrainingResult:
    """Train `net` with mini-batches and choose its threshold on the validation split.

    The features are standardised with statistics of `train_data` alone. The
    parameters start at ``net.init_params(seed=config.seed)``; each epoch
    visits the training examples in a new random order (Note [Training randomness]).

    Parameters
    ----------
    net : FraudNetwork
        The architecture, with its L2 strength and dropout.
    train_data : PaymentData
        The training split.
    val_data : PaymentData
        The validation split: monitored each epoch and used to choose the threshold.
    config : TrainingConfig, optional
        Optimiser, step size, epochs, batch size, class weighting and seed;
        ``TrainingConfig()`` by default.
    callback : callable ``callback(step, params, batch)``, optional
        Called after every optimiser step with the step number (from 1), the
        new parameters (read-only arrays) and the batch ``(X, y, weights)`` just
        used, standardised. If it raises, training stops and the
        exception propagates (this is how a gradient guard halts training).

    Returns
    -------
    TrainingResult
        Parameters, standardiser, threshold, per-epoch history and step count.

    Raises
    ------
    InputError
        If the data do not fit the network or lack a class, or the loss
        stops being finite (lower the learning rate).

    Examples
    --------
    >>> from gradproof.models import FraudNetwork, make_payments, split
    >>> train_data, val_data, _ = split(make_payments(2_000, seed=0))
    >>> net = FraudNetwork(sizes=(train_data.n_features, 8, 1))
    >>> result = train(net, train_data, val_data, TrainingConfig(epochs=2))
    >>> result.steps, len(result.history)
    (22, 2)
    """
    config = TrainingConfig() if config is None else config
    _require_compatible(net, train_data, val_data)
    started = time.perf_counter()
    scaler = Standardizer.fit(train_data.X)
    X_train, X_val = scaler.transform(train_data.X), scaler.transform(val_data.X)
    y_train, y_val = train_data.y.astype(np.float64), val_data.y.astype(np.float64)
    w_train = class_weights(y_train, config.class_weight, reference=y_train)
    w_val = class_weights(y_val, config.class_weight, reference=y_train)
    optimizer = make_optimizer(config.optimizer, config.learning_rate)
    params = net.init_params(seed=config.seed)
    state = optimizer.init(params)
    order_rng = np.random.default_rng(config.seed)
    global_state = np.random.get_state()  # noqa: NPY002 (restored below)
    history: list[EpochRecord] = []
    step = 0
    try:
        for epoch in range(1, config.epochs + 1):
            order = order_rng.permutation(train_data.n)
            for start in range(0, train_data.n, config.batch_size):
                rows = order[start : start + config.batch_size]
                batch = (X_train[rows], y_train[rows], w_train[rows])
                if net.keep_prob < 1:
                    np.random.seed([config.seed, step])  # noqa: NPY002 (Note [Training randomness])
                grads = net.gradients(params, *batch[:2], sample_weight=batch[2])
                params, state = optimizer.update(params, grads, state)
                for value in params.values():  # the callback and the result get them read-only
                    value.setflags(write=False)
                step += 1
                if callback is not None:
                    callback(step, params, batch)
            history.append(
                _record(net, params, epoch, (X_train, y_train, w_train), (X_val, y_val, w_val))
            )
    finally:
        np.random.set_state(global_state)  # noqa: NPY002
    threshold = best_f1_threshold(y_val, net.predict_proba(params, X_val))
    return TrainingResult(
        network=net,
        params=params,
        standardizer=scaler,
        threshold=threshold,
        history=tuple(history),
        steps=step,
        seconds=time.perf_counter() - started,
    )


def _record(
    net: FraudNetwork, params: Mapping[str, FloatArray], epoch: int, train: Batch, val: Batch
) -> EpochRecord:
    """Measure the losses and validation PR-AUC after an epoch; refuse a diverged model."""
    train_loss = net.loss(params, train[0], train[1], sample_weight=train[2], training=False)
    val_loss = net.loss(params, val[0], val[1], sample_weight=val[2], training=False)
    if not (np.isfinite(train_loss) and np.isfinite(val_loss)):
        raise InputError(
            f"training diverged: the loss is {train_loss} after epoch {epoch}. Lower "
            "`learning_rate` (or use optimizer='adam')."
        )
    proba = net.predict_proba(params, val[0])
    return EpochRecord(
        epoch=epoch,
        train_loss=train_loss,
        val_loss=val_loss,
        val_pr_auc=average_precision(val[1], proba),
    )


def logistic_baseline(
    train_data: PaymentData,
    val_data: PaymentData,
    config: TrainingConfig | None = None,
    *,
    l2: float = 1e-4,
) -> TrainingResult:
    """Train logistic regression the same way, as the baseline a network must beat.

    It is :func:`train` with ``FraudNetwork(sizes=(n_features, 1), l2=l2)``: the
    same standardisation, weighting, optimiser and threshold choice.

    Parameters
    ----------
    train_data, val_data : PaymentData
        The training and validation splits.
    config : TrainingConfig, optional
        As for :func:`train`.
    l2 : float, default 1e-4
        Strength of the L2 penalty.

    Returns
    -------
    TrainingResult
        The trained baseline; ``result.network.sizes == (n_features, 1)``.
    """
    net = FraudNetwork(sizes=(train_data.n_features, 1), l2=l2)
    return train(net, train_data, val_data, config)
