"""Classic fully connected models: softmax regression, an L2-regularised MLP, dropout, batch norm.

Each model is a ``_forward``/``_backward`` pair written the way a course
teaches it, with examples in rows (``X`` of shape ``(m, features)``). The
planted bugs are named branches of the backward pass.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from gradproof.corpus._ops import log_softmax, one_hot, sigmoid, softplus
from gradproof.corpus._types import Bug, BugSpec, Case, Grads, assemble, check_bug_name, frozen_data

__all__ = ["batchnorm_mlp", "build", "dropout_mlp", "l2_mlp", "softmax_classifier"]

Cache = dict[str, Any]

# -- softmax classifier ------------------------------------------------------------------------

_SOFTMAX_BUGS = (
    BugSpec(
        "dZ-sign",
        "sign",
        ("W", "b"),
        "The logits' error is written (onehot - P) / m instead of (P - onehot) / m.",
    ),
    BugSpec(
        "db-mean-after-1/m",
        "scale",
        ("b",),
        "db = dZ.mean(axis=0): a mean over the examples although dZ already carries the 1/m, "
        "so db is m = 8 times too small.",
    ),
    BugSpec(
        "dZ-missing-onehot",
        "unknown",
        ("W", "b"),
        "dZ = P / m: the -onehot term of the softmax cross-entropy's derivative is forgotten.",
    ),
)


def _softmax_forward(p: Any, data: Mapping[str, Any]) -> tuple[float, Cache]:
    X, Y1 = data["X"], data["Y1"]
    Z = X @ p["W"] + p["b"]  # logits, (m, classes)
    logP = log_softmax(Z)
    loss = -np.sum(Y1 * logP) / len(X)  # mean cross-entropy
    return float(loss), {"P": np.exp(logP)}


def _softmax_backward(p: Any, data: Mapping[str, Any], cache: Cache, bug: str | None) -> Grads:
    check_bug_name(bug, _SOFTMAX_BUGS)
    X, Y1 = data["X"], data["Y1"]
    m = len(X)
    dZ = (cache["P"] - Y1) / m  # d loss / d logits
    if bug == "dZ-sign":
        dZ = (Y1 - cache["P"]) / m  # BUG: sign flipped
    elif bug == "dZ-missing-onehot":
        dZ = cache["P"] / m  # BUG: - onehot forgotten
    dW = X.T @ dZ
    db = dZ.sum(axis=0)
    if bug == "db-mean-after-1/m":
        db = dZ.mean(axis=0)  # BUG: dZ already has the 1/m
    return {"W": dW, "b": db}


def softmax_classifier() -> tuple[Case, tuple[Bug, ...]]:
    """Build the multi-class softmax regression case.

    Returns
    -------
    case : Case
        ``"softmax-classifier"``: 8 examples, 5 features, 4 classes, mean
        cross-entropy; parameters ``W`` (5, 4) and ``b`` (4,).
    bugs : tuple of Bug
        Its planted bugs.
    """
    rng = np.random.default_rng(101)
    X = rng.normal(size=(8, 5))
    labels = np.array([0, 1, 2, 3, 1, 2, 0, 3])
    params = {"W": 0.5 * rng.normal(size=(5, 4)), "b": 0.1 * rng.normal(size=4)}
    return assemble(
        name="softmax-classifier",
        description="Softmax regression, 5 features to 4 classes, mean cross-entropy.",
        params=params,
        data=frozen_data(X=X, labels=labels, Y1=one_hot(labels, 4)),
        forward=_softmax_forward,
        backward=_softmax_backward,
        bugs=_SOFTMAX_BUGS,
    )


# -- L2-regularised MLP ------------------------------------------------------------------------

_L2_BUGS = (
    BugSpec(
        "reg-grad-forgotten",
        "unknown",
        ("W1", "W2", "W3"),
        "The cost has lambda/(2m) sum W^2 but the backward adds no lambda/m W to dW1, dW2, dW3.",
    ),
    BugSpec(
        "reg-lambda-not-over-m",
        "unknown",
        ("W1", "W2", "W3"),
        "The regulariser's gradient is written lambda W instead of lambda/m W.",
    ),
    BugSpec(
        "reg-grad-halved",
        "unknown",
        ("W1", "W2", "W3"),
        "The regulariser's gradient is written lambda/(2m) W: the 2 of d(W^2)/dW is forgotten.",
    ),
    BugSpec(
        "tanh-derivative-of-preactivation",
        "unknown",
        ("W1", "b1", "W2", "b2"),
        "dZ2 = dA2 (1 - Z2^2): the tanh derivative is taken of the pre-activation Z2 instead "
        "of 1 - A2^2.",
    ),
)


def _l2_forward(p: Any, data: Mapping[str, Any]) -> tuple[float, Cache]:
    X, y, lam = data["X"], data["y"], data["lambd"]
    m = len(X)
    Z1 = X @ p["W1"] + p["b1"]
    A1 = np.tanh(Z1)
    Z2 = A1 @ p["W2"] + p["b2"]
    A2 = np.tanh(Z2)
    z3 = A2 @ p["W3"] + p["b3"]  # logits, (m, 1)
    cross_entropy = np.mean(softplus(z3) - y * z3)  # -y log(s) - (1 - y) log(1 - s), s = sigmoid
    l2 = lam / (2 * m) * (np.sum(p["W1"] ** 2) + np.sum(p["W2"] ** 2) + np.sum(p["W3"] ** 2))
    return float(cross_entropy + l2), {"A1": A1, "Z2": Z2, "A2": A2, "z3": z3}


def _l2_backward(p: Any, data: Mapping[str, Any], cache: Cache, bug: str | None) -> Grads:
    check_bug_name(bug, _L2_BUGS)
    X, y, lam = data["X"], data["y"], data["lambd"]
    A1, Z2, A2, z3 = cache["A1"], cache["Z2"], cache["A2"], cache["z3"]
    m = len(X)
    reg = lam / m  # d/dW of lambda/(2m) W^2 is lambda/m W
    if bug == "reg-grad-forgotten":
        reg = 0.0  # BUG
    elif bug == "reg-lambda-not-over-m":
        reg = lam  # BUG
    elif bug == "reg-grad-halved":
        reg = lam / (2 * m)  # BUG
    dz3 = (sigmoid(z3) - y) / m
    dW3 = A2.T @ dz3 + reg * p["W3"]
    db3 = dz3.sum(axis=0)
    dA2 = dz3 @ p["W3"].T
    dZ2 = dA2 * (1 - A2**2)
    if bug == "tanh-derivative-of-preactivation":
        dZ2 = dA2 * (1 - Z2**2)  # BUG
    dW2 = A1.T @ dZ2 + reg * p["W2"]
    db2 = dZ2.sum(axis=0)
    dA1 = dZ2 @ p["W2"].T
    dZ1 = dA1 * (1 - A1**2)
    dW1 = X.T @ dZ1 + reg * p["W1"]
    db1 = dZ1.sum(axis=0)
    return {"W1": dW1, "b1": db1, "W2": dW2, "b2": db2, "W3": dW3, "b3": db3}


def l2_mlp() -> tuple[Case, tuple[Bug, ...]]:
    """Build the L2-regularised MLP case.

    Returns
    -------
    case : Case
        ``"l2-mlp"``: 4 -> 6 -> 6 -> 1, tanh hidden layers, sigmoid
        cross-entropy plus ``lambda/(2m) * sum(W**2)`` over the three weights.
    bugs : tuple of Bug
        Its planted bugs.
    """
    rng = np.random.default_rng(202)
    X = rng.normal(size=(10, 4))
    y = (rng.random(size=(10, 1)) < 0.5).astype(np.float64)
    params = {
        "W1": 0.6 * rng.normal(size=(4, 6)),
        "b1": 0.1 * rng.normal(size=6),
        "W2": 0.5 * rng.normal(size=(6, 6)),
        "b2": 0.1 * rng.normal(size=6),
        "W3": 0.5 * rng.normal(size=(6, 1)),
        "b3": 0.1 * rng.normal(size=1),
    }
    return assemble(
        name="l2-mlp",
        description="A 4-6-6-1 tanh MLP, sigmoid cross-entropy with L2 weight decay "
        "(lambda = 0.7).",
        params=params,
        data=frozen_data(X=X, y=y, lambd=0.7),
        forward=_l2_forward,
        backward=_l2_backward,
        bugs=_L2_BUGS,
    )


# -- dropout MLP -------------------------------------------------------------------------------

_DROPOUT_BUGS = (
    BugSpec(
        "mask-not-applied-in-backward",
        "unknown",
        ("W1", "b1"),
        "dA1 = dD1 / keep_prob: the backward scales by 1/keep_prob but forgets the dropout "
        "mask, so dropped units receive gradient.",
    ),
    BugSpec(
        "keep-prob-scaling-forgotten",
        "scale",
        ("W1", "b1"),
        "dA1 = dD1 * mask: the inverted-dropout scaling 1/keep_prob is applied in the forward "
        "pass but not in the backward pass (gradients keep_prob = 0.8 times too small).",
    ),
    BugSpec(
        "mask-redrawn-in-backward",
        "unknown",
        ("W1", "b1"),
        "The backward pass draws a new dropout mask instead of reusing the forward pass's.",
    ),
)


def _dropout_forward(p: Any, data: Mapping[str, Any]) -> tuple[float, Cache]:
    X, y, keep = data["X"], data["y"], data["keep_prob"]
    Z1 = X @ p["W1"] + p["b1"]
    A1 = np.maximum(Z1, 0)
    # The legacy global generator on purpose: a checker's seed= option re-seeds it before
    # every evaluation, which makes the mask the same in every loss and gradient call.
    mask = np.random.rand(*A1.shape) < keep  # noqa: NPY002
    D1 = A1 * mask / keep  # inverted dropout
    z2 = D1 @ p["W2"] + p["b2"]
    loss = np.mean(softplus(z2) - y * z2)
    return float(loss), {"Z1": Z1, "mask": mask, "D1": D1, "z2": z2}


def _dropout_backward(p: Any, data: Mapping[str, Any], cache: Cache, bug: str | None) -> Grads:
    check_bug_name(bug, _DROPOUT_BUGS)
    X, y, keep = data["X"], data["y"], data["keep_prob"]
    Z1, mask, D1, z2 = cache["Z1"], cache["mask"], cache["D1"], cache["z2"]
    dz2 = (sigmoid(z2) - y) / len(X)
    dW2 = D1.T @ dz2
    db2 = dz2.sum(axis=0)
    dD1 = dz2 @ p["W2"].T
    dA1 = dD1 * mask / keep
    if bug == "mask-not-applied-in-backward":
        dA1 = dD1 / keep  # BUG
    elif bug == "keep-prob-scaling-forgotten":
        dA1 = dD1 * mask  # BUG
    elif bug == "mask-redrawn-in-backward":
        fresh = np.random.rand(*D1.shape) < keep  # noqa: NPY002 (BUG: a second mask)
        dA1 = dD1 * fresh / keep
    dZ1 = dA1 * (Z1 > 0)
    dW1 = X.T @ dZ1
    db1 = dZ1.sum(axis=0)
    return {"W1": dW1, "b1": db1, "W2": dW2, "b2": db2}


def dropout_mlp() -> tuple[Case, tuple[Bug, ...]]:
    """Build the inverted-dropout MLP case.

    The dropout mask is drawn with ``np.random.rand`` inside the loss, so the
    case has a `seed`: check it with numpy's legacy global generator
    re-seeded before every loss and gradient evaluation.

    Returns
    -------
    case : Case
        ``"dropout-mlp"``: 5 -> 7 (ReLU, inverted dropout with keep_prob
        0.8) -> 1, sigmoid cross-entropy.
    bugs : tuple of Bug
        Its planted bugs.
    """
    rng = np.random.default_rng(303)
    X = rng.normal(size=(8, 5))
    y = np.array([[1.0], [0.0], [1.0], [1.0], [0.0], [0.0], [1.0], [0.0]])
    params = {
        "W1": 0.7 * rng.normal(size=(5, 7)),
        "b1": 0.1 * rng.normal(size=7),
        "W2": 0.7 * rng.normal(size=(7, 1)),
        "b2": 0.1 * rng.normal(size=1),
    }
    return assemble(
        name="dropout-mlp",
        description="A 5-7-1 ReLU MLP with inverted dropout (keep_prob 0.8, mask from "
        "np.random.rand), sigmoid cross-entropy.",
        params=params,
        data=frozen_data(X=X, y=y, keep_prob=0.8),
        forward=_dropout_forward,
        backward=_dropout_backward,
        bugs=_DROPOUT_BUGS,
        seed=1234,
        tags=("random",),
    )


# -- batch normalisation -----------------------------------------------------------------------

_BN_BUGS = (
    BugSpec(
        "dgamma-dbeta-swapped",
        "swapped",
        ("gamma", "beta"),
        "The gradients are returned as {'gamma': dbeta, 'beta': dgamma}.",
    ),
    BugSpec(
        "batch-statistics-ignored",
        "unknown",
        ("W",),
        "dZ = dZhat / sqrt(var + eps): the batch mean and variance are treated as constants, "
        "dropping the two terms that flow through them.",
    ),
    BugSpec(
        "dbeta-summed-over-features",
        "axis",
        ("beta",),
        "dbeta = dY.sum(axis=1): summed over the features instead of the batch (the batch of "
        "5 and the 5 features make the shapes match).",
    ),
)


def _bn_forward(p: Any, data: Mapping[str, Any]) -> tuple[float, Cache]:
    X, t, eps = data["X"], data["t"], data["bn_eps"]
    Z = X @ p["W"]  # no bias: beta plays its role
    mu = Z.mean(axis=0)
    var = Z.var(axis=0)  # training mode: the batch's own statistics
    inv_std = 1 / np.sqrt(var + eps)
    Zhat = (Z - mu) * inv_std
    Y = p["gamma"] * Zhat + p["beta"]
    A = np.tanh(Y)
    out = A @ p["v"]
    loss = 0.5 * np.mean((out - t) ** 2)
    return float(loss), {"inv_std": inv_std, "Zhat": Zhat, "A": A, "out": out}


def _bn_backward(p: Any, data: Mapping[str, Any], cache: Cache, bug: str | None) -> Grads:
    check_bug_name(bug, _BN_BUGS)
    X, t = data["X"], data["t"]
    inv_std, Zhat, A, out = cache["inv_std"], cache["Zhat"], cache["A"], cache["out"]
    m = len(X)
    dout = (out - t) / m
    dv = A.T @ dout
    dY = np.outer(dout, p["v"]) * (1 - A**2)
    dgamma = np.sum(dY * Zhat, axis=0)
    dbeta = np.sum(dY, axis=0)
    if bug == "dbeta-summed-over-features":
        dbeta = np.sum(dY, axis=1)  # BUG: wrong axis
    dZhat = dY * p["gamma"]
    # Through Zhat = (Z - mean(Z)) / std(Z), with the batch statistics depending on Z:
    dZ = inv_std / m * (m * dZhat - dZhat.sum(axis=0) - Zhat * np.sum(dZhat * Zhat, axis=0))
    if bug == "batch-statistics-ignored":
        dZ = dZhat * inv_std  # BUG
    dW = X.T @ dZ
    if bug == "dgamma-dbeta-swapped":
        dgamma, dbeta = dbeta, dgamma  # BUG
    return {"W": dW, "gamma": dgamma, "beta": dbeta, "v": dv}


def batchnorm_mlp() -> tuple[Case, tuple[Bug, ...]]:
    """Build the batch-normalisation case.

    Returns
    -------
    case : Case
        ``"batchnorm"``: a linear layer ``W`` (4, 5), batch normalisation
        with training-mode statistics and parameters ``gamma``, ``beta``
        (5,), tanh, and a linear read-out ``v`` (5,), mean squared error over
        a batch of 5.
    bugs : tuple of Bug
        Its planted bugs.
    """
    rng = np.random.default_rng(404)
    X = rng.normal(size=(5, 4))
    t = rng.normal(size=5)
    params = {
        "W": rng.normal(size=(4, 5)),
        "gamma": 1 + 0.3 * rng.normal(size=5),
        "beta": 0.2 * rng.normal(size=5),
        "v": rng.normal(size=5),
    }
    return assemble(
        name="batchnorm",
        description="Linear layer, batch normalisation (training-mode batch statistics), tanh "
        "and a linear read-out; mean squared error.",
        params=params,
        data=frozen_data(X=X, t=t, bn_eps=1e-5),
        forward=_bn_forward,
        backward=_bn_backward,
        bugs=_BN_BUGS,
    )


def build() -> tuple[tuple[Case, tuple[Bug, ...]], ...]:
    """Build the classic fully connected cases and their bugs.

    Returns
    -------
    tuple of (Case, tuple of Bug)
        Softmax regression, the L2-regularised MLP, the dropout MLP and batch norm.
    """
    return softmax_classifier(), l2_mlp(), dropout_mlp(), batchnorm_mlp()
