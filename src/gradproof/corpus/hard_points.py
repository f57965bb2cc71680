"""Correct gradients at hard points: where a naive gradient check cries wolf.

Every case here is correct code (``hard_point=True``, no planted bugs). What
makes it hard is the point or the arithmetic, not the backward pass:

* kinks: ReLU pre-activations exactly at 0 and within 1e-10 of it, max-pool
  windows with tied maxima, ``|w|`` at ``w = 0``. The analytic gradients use
  the usual subgradient conventions: ``relu'(0) = 0``, ``|x|'(0) = 0``, and
  max-pool sends the gradient to the first maximal entry of a window.
  Central differences straddle the kink and measure the average of the two
  one-sided slopes instead;
* saturation: ``log(1 - sigmoid(z))`` written the naive way with ``z`` up to
  30, where ``1 - sigmoid(z)`` has lost all but a few digits;
* precision: float32 parameters and arithmetic;
* scale: parameters near 1e6 with a loss near 1e12, and parameters near 1e-6
  with a loss near 1e-12;
* dead ReLU units, whose gradients are exactly zero and correct;
* size: an MLP of 3,128 parameters.

The kink points are built from small dyadic numbers (multiples of 1/8), for
which every sum and product is exact, so that "exactly 0" and "exactly tied"
hold whatever the order of summation.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from gradproof._typing import FloatArray
from gradproof.corpus._ops import log_softmax, one_hot, softmax
from gradproof.corpus._types import Bug, Case, Grads, assemble, frozen_data

__all__ = [
    "abs_at_zero",
    "build",
    "dead_relu",
    "float32_mlp",
    "large_mlp",
    "large_scale",
    "maxpool_ties",
    "relu_exact_zero",
    "relu_near_zero",
    "saturated_logistic",
    "small_scale",
]

Cache = dict[str, Any]


# -- a one-hidden-layer ReLU regression (kinks, dead units) ------------------------------------


def _relu_forward(p: Any, data: Mapping[str, Any]) -> tuple[float, Cache]:
    X, y = data["X"], data["y"]
    Z1 = X @ p["W1"] + p["b1"]
    A1 = np.maximum(Z1, 0)
    pred = A1 @ p["W2"] + p["b2"]
    loss = 0.5 * np.mean(np.sum((pred - y) ** 2, axis=1))
    return float(loss), {"Z1": Z1, "A1": A1, "pred": pred}


def _relu_backward(p: Any, data: Mapping[str, Any], cache: Cache, bug: str | None) -> Grads:
    X, y = data["X"], data["y"]
    Z1, A1, pred = cache["Z1"], cache["A1"], cache["pred"]
    dpred = (pred - y) / len(X)
    dW2 = A1.T @ dpred
    db2 = dpred.sum(axis=0)
    dA1 = dpred @ p["W2"].T
    dZ1 = dA1 * (Z1 > 0)  # relu'(z) = 1 if z > 0 else 0, so relu'(0) = 0
    dW1 = X.T @ dZ1
    db1 = dZ1.sum(axis=0)
    return {"W1": dW1, "b1": db1, "W2": dW2, "b2": db2}


def _dyadic_relu_point(rng: np.random.Generator) -> tuple[FloatArray, dict[str, FloatArray]]:
    """Draw inputs and first-layer parameters of multiples of 1/8, 3 pre-activations at 0."""
    X = rng.choice([-1.0, -0.5, 0.5, 1.0], size=(6, 3))
    W1 = rng.integers(-4, 5, size=(3, 4)) / 4
    b1 = rng.integers(-4, 5, size=4) / 4
    # Unit j is exactly at its kink on example i: b1[j] = -X[i] . W1[:, j], exact in dyadics.
    for i, j in ((0, 0), (3, 2), (5, 3)):
        b1[j] = -(X[i] @ W1[:, j])
    return X, {"W1": W1, "b1": b1}


def _relu_case(name: str, description: str, shift: float) -> tuple[Case, tuple[Bug, ...]]:
    rng = np.random.default_rng(1006)  # a seed with exactly the 3 planted zeros
    X, first = _dyadic_relu_point(rng)
    y = rng.normal(size=(6, 2))
    params = {
        "W1": first["W1"],
        "b1": first["b1"] + shift * np.array([1.0, 0.0, -1.0, 1.0]),
        "W2": rng.normal(size=(4, 2)),
        "b2": 0.1 * rng.normal(size=2),
    }
    Z1 = X @ params["W1"] + params["b1"]
    close = np.abs(Z1) <= 2 * abs(shift)
    if np.count_nonzero(close) != 3 or np.count_nonzero(np.abs(Z1)[~close] < 0.1):
        raise RuntimeError(f"{name}: the kinks were not placed as intended")
    return assemble(
        name=name,
        description=description,
        params=params,
        data=frozen_data(X=X, y=y),
        forward=_relu_forward,
        backward=_relu_backward,
        tags=("kink",),
        hard_point=True,
    )


def relu_exact_zero() -> tuple[Case, tuple[Bug, ...]]:
    """Build the ReLU case with pre-activations exactly at 0.

    Returns
    -------
    case : Case
        ``"relu-exact-zero"``: a 3-4-2 ReLU regression where 3 of the 24
        hidden pre-activations are exactly 0.0 (relu'(0) = 0 in the gradient).
    bugs : tuple of Bug
        Empty.
    """
    return _relu_case(
        "relu-exact-zero",
        "A 3-4-2 ReLU regression with 3 hidden pre-activations exactly 0.0 (relu'(0) = 0).",
        0.0,
    )


def relu_near_zero() -> tuple[Case, tuple[Bug, ...]]:
    """Build the ReLU case with pre-activations within 1e-10 of 0.

    Returns
    -------
    case : Case
        ``"relu-near-zero"``: the point of ``"relu-exact-zero"`` with the
        biases moved by +-1e-10, so that the 3 pre-activations are +1e-10,
        -1e-10 and +1e-10: differentiable, but a finite-difference step
        crosses the kink.
    bugs : tuple of Bug
        Empty.
    """
    return _relu_case(
        "relu-near-zero",
        "A 3-4-2 ReLU regression with 3 hidden pre-activations within 1e-10 of 0.",
        1e-10,
    )


def dead_relu() -> tuple[Case, tuple[Bug, ...]]:
    """Build the case with dead ReLU units.

    Returns
    -------
    case : Case
        ``"dead-relu"``: a 4-6-2 ReLU regression where units 1 and 4 have
        biases of -8 and are inactive on every example, so their columns of
        ``W1``, entries of ``b1`` and rows of ``W2`` have exactly zero
        gradients, which are correct.
    bugs : tuple of Bug
        Empty.
    """
    rng = np.random.default_rng(1002)
    X = rng.normal(size=(8, 4))
    y = rng.normal(size=(8, 2))
    b1 = 0.5 + 0.1 * rng.normal(size=6)
    b1[[1, 4]] = -8.0  # dead units, e.g. after a too-large learning-rate step
    params = {
        "W1": 0.5 * rng.normal(size=(4, 6)),
        "b1": b1,
        "W2": rng.normal(size=(6, 2)),
        "b2": 0.1 * rng.normal(size=2),
    }
    Z1 = X @ params["W1"] + params["b1"]
    if np.max(Z1[:, [1, 4]]) > -1 or np.min(np.abs(Z1)) < 1e-3:
        raise RuntimeError("dead-relu: the dead units are not dead")
    return assemble(
        name="dead-relu",
        description="A 4-6-2 ReLU regression with 2 dead hidden units (all-zero gradients).",
        params=params,
        data=frozen_data(X=X, y=y),
        forward=_relu_forward,
        backward=_relu_backward,
        tags=("dead",),
        hard_point=True,
    )


# -- max-pool with ties ------------------------------------------------------------------------


def _pool_forward(p: Any, data: Mapping[str, Any]) -> tuple[float, Cache]:
    X, T = data["X"], data["T"]
    windows = sliding_window_view(X, p["K"].shape[-1], axis=2)  # (batch, C_in, L_out, taps)
    Y = np.einsum("bctj,ocj->bot", windows, p["K"]) + p["b"][:, None]
    pairs = Y.reshape(*Y.shape[:2], -1, 2)  # max-pool, width 2, stride 2
    first_max = np.argmax(pairs, axis=-1)  # np.argmax returns the first maximal index
    M = np.take_along_axis(pairs, first_max[..., None], axis=-1)[..., 0]
    A = np.tanh(M)
    loss = 0.5 * np.mean((A - T) ** 2)
    return float(loss), {"windows": windows, "pairs": pairs, "first_max": first_max, "A": A}


def _pool_backward(p: Any, data: Mapping[str, Any], cache: Cache, bug: str | None) -> Grads:
    windows, pairs, first_max, A = (cache[k] for k in ("windows", "pairs", "first_max", "A"))
    dA = (A - data["T"]) / A.size
    dM = dA * (1 - A**2)
    dpairs = np.zeros_like(pairs)
    np.put_along_axis(dpairs, first_max[..., None], dM[..., None], axis=-1)  # to the first max
    dY = dpairs.reshape(*dpairs.shape[:2], -1)
    dK = np.einsum("bot,bctj->ocj", dY, windows)
    db = dY.sum(axis=(0, 2))
    return {"K": dK, "b": db}


def maxpool_ties() -> tuple[Case, tuple[Bug, ...]]:
    """Build the max-pool case with tied maxima.

    Returns
    -------
    case : Case
        ``"maxpool-ties"``: a 1-D convolution on small-integer signals
        (quantised inputs, kernel in multiples of 1/2) followed by max-pool
        of width 2; several pooling windows hold two equal maxima computed
        from different inputs, so a change of the kernel breaks the tie one
        way or the other. The gradient goes to the first maximal entry.
    bugs : tuple of Bug
        Empty.
    """
    rng = np.random.default_rng(1017)  # a seed with 3 genuine ties
    X = rng.integers(-2, 3, size=(2, 2, 9)).astype(np.float64)
    T = 0.5 * rng.normal(size=(2, 2, 4))
    params = {
        "K": rng.integers(-2, 3, size=(2, 2, 2)) / 2,
        "b": rng.integers(-2, 3, size=2) / 4,
    }
    data = frozen_data(X=X, T=T)
    _, cache = _pool_forward(params, data)
    pairs, windows = cache["pairs"], cache["windows"]
    tied = pairs[..., 0] == pairs[..., 1]
    # A genuine kink: the two tied outputs come from different input windows.
    w = windows.reshape(2, 2, 4, 2, 2)  # (batch, C_in, pool window, position, taps)
    differs = np.any(w[:, :, :, 0] != w[:, :, :, 1], axis=(1, 3))  # (batch, pool window)
    if np.count_nonzero(tied & differs[:, None, :]) < 2:
        raise RuntimeError("maxpool-ties: not enough genuine ties")
    return assemble(
        name="maxpool-ties",
        description="A 1-D convolution on integer signals then max-pool of width 2, with "
        "several windows holding tied maxima (gradient to the first).",
        params=params,
        data=data,
        forward=_pool_forward,
        backward=_pool_backward,
        tags=("kink",),
        hard_point=True,
    )


# -- |w| at 0 ----------------------------------------------------------------------------------


def _lasso_forward(p: Any, data: Mapping[str, Any]) -> tuple[float, Cache]:
    X, y, lam = data["X"], data["y"], data["l1"]
    r = X @ p["w"] + p["b"] - y
    loss = 0.5 * np.mean(r**2) + lam * np.sum(np.abs(p["w"]))
    return float(loss), {"r": r}


def _lasso_backward(p: Any, data: Mapping[str, Any], cache: Cache, bug: str | None) -> Grads:
    X, lam = data["X"], data["l1"]
    dr = cache["r"] / len(X)
    dw = X.T @ dr + lam * np.sign(p["w"])  # np.sign(0) = 0: the subgradient |x|'(0) = 0
    db = dr.sum(keepdims=True)
    return {"w": dw, "b": db}


def abs_at_zero() -> tuple[Case, tuple[Bug, ...]]:
    """Build the L1-regularised regression with weights exactly at 0.

    Returns
    -------
    case : Case
        ``"abs-at-zero"``: least squares plus ``0.1 * sum(|w|)`` (the lasso)
        at a sparse point, 3 of the 6 weights exactly 0.0.
    bugs : tuple of Bug
        Empty.
    """
    rng = np.random.default_rng(1004)
    X = rng.normal(size=(10, 6))
    y = rng.normal(size=10)
    w = rng.normal(size=6)
    w[[0, 3, 4]] = 0.0  # the sparse solutions the lasso is used for
    return assemble(
        name="abs-at-zero",
        description="Lasso regression (least squares + 0.1 sum |w|) at a point with 3 of 6 "
        "weights exactly 0.",
        params={"w": w, "b": np.array([0.3])},
        data=frozen_data(X=X, y=y, l1=0.1),
        forward=_lasso_forward,
        backward=_lasso_backward,
        tags=("kink",),
        hard_point=True,
    )


# -- a tanh MLP with softmax cross-entropy (float32, large) ------------------------------------


def _tanh_mlp_forward(p: Any, data: Mapping[str, Any]) -> tuple[float, Cache]:
    X, Y1 = data["X"], data["Y1"]
    A1 = np.tanh(X @ p["W1"] + p["b1"])
    Z2 = A1 @ p["W2"] + p["b2"]
    loss = -np.sum(Y1 * log_softmax(Z2)) / len(X)
    return float(loss), {"A1": A1, "Z2": Z2}


def _tanh_mlp_backward(p: Any, data: Mapping[str, Any], cache: Cache, bug: str | None) -> Grads:
    X, Y1 = data["X"], data["Y1"]
    A1, Z2 = cache["A1"], cache["Z2"]
    dZ2 = (softmax(Z2) - Y1) / len(X)
    dW2 = A1.T @ dZ2
    db2 = dZ2.sum(axis=0)
    dZ1 = (dZ2 @ p["W2"].T) * (1 - A1**2)
    dW1 = X.T @ dZ1
    db1 = dZ1.sum(axis=0)
    return {"W1": dW1, "b1": db1, "W2": dW2, "b2": db2}


def _tanh_mlp_point(
    seed: int, sizes: tuple[int, int, int, int], dtype: type[np.floating[Any]]
) -> tuple[dict[str, Any], Mapping[str, Any]]:
    m, n_in, n_hidden, n_out = sizes
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(m, n_in))
    labels = rng.integers(0, n_out, size=m)
    params = {
        "W1": rng.normal(size=(n_in, n_hidden)) / np.sqrt(n_in),
        "b1": 0.1 * rng.normal(size=n_hidden),
        "W2": rng.normal(size=(n_hidden, n_out)) / np.sqrt(n_hidden),
        "b2": 0.1 * rng.normal(size=n_out),
    }
    params = {key: value.astype(dtype) for key, value in params.items()}
    data = frozen_data(X=X.astype(dtype), labels=labels, Y1=one_hot(labels, n_out).astype(dtype))
    return params, data


def float32_mlp() -> tuple[Case, tuple[Bug, ...]]:
    """Build the float32 MLP case.

    Returns
    -------
    case : Case
        ``"float32-mlp"``: a 4-6-3 tanh MLP with softmax cross-entropy whose
        parameters, inputs and arithmetic are all float32.
    bugs : tuple of Bug
        Empty.
    """
    params, data = _tanh_mlp_point(1005, (8, 4, 6, 3), np.float32)
    return assemble(
        name="float32-mlp",
        description="A 4-6-3 tanh MLP with softmax cross-entropy, computed in float32.",
        params=params,
        data=data,
        forward=_tanh_mlp_forward,
        backward=_tanh_mlp_backward,
        tags=("float32",),
        hard_point=True,
    )


def large_mlp() -> tuple[Case, tuple[Bug, ...]]:
    """Build the MLP of several thousand parameters.

    Returns
    -------
    case : Case
        ``"large-mlp"``: a 30-80-8 tanh MLP with softmax cross-entropy on 32
        examples: 3,128 parameters.
    bugs : tuple of Bug
        Empty.
    """
    params, data = _tanh_mlp_point(1010, (32, 30, 80, 8), np.float64)
    return assemble(
        name="large-mlp",
        description="A 30-80-8 tanh MLP with softmax cross-entropy, 3,128 parameters.",
        params=params,
        data=data,
        forward=_tanh_mlp_forward,
        backward=_tanh_mlp_backward,
        tags=("large",),
        hard_point=True,
    )


# -- the naive saturated logistic loss ---------------------------------------------------------


def _logistic_forward(p: Any, data: Mapping[str, Any]) -> tuple[float, Cache]:
    X, y = data["X"], data["y"]
    z = X @ p["w"] + p["b"]
    s = 1 / (1 + np.exp(-z))
    # Written the naive way: for z near 30, 1 - s keeps only about 3 significant digits.
    loss = -np.mean(y * np.log(s) + (1 - y) * np.log(1 - s))
    return float(loss), {"s": s}


def _logistic_backward(p: Any, data: Mapping[str, Any], cache: Cache, bug: str | None) -> Grads:
    X, y = data["X"], data["y"]
    dz = (cache["s"] - y) / len(X)  # the exact derivative, free of the cancellation
    return {"w": X.T @ dz, "b": dz.sum(keepdims=True)}


def saturated_logistic() -> tuple[Case, tuple[Bug, ...]]:
    """Build the saturated logistic-regression case.

    Returns
    -------
    case : Case
        ``"saturated-logistic"``: logistic regression with the cross-entropy
        written as ``log(1 - sigmoid(z))``, at a point where three examples
        of label 0 have ``z`` = 15, 22 and 30 (confidently wrong, e.g.
        mislabelled): the loss carries rounding noise of about 1e-4.
    bugs : tuple of Bug
        Empty.
    """
    rng = np.random.default_rng(1007)
    w = np.array([1.5, -0.8, 0.6])
    b = np.array([0.2])
    z_target = np.array([15.0, 22.0, 30.0, 2.0, -1.0, 18.0, 0.5, -3.0])
    y = np.array([0.0, 0.0, 0.0, 1.0, 0.0, 1.0, 1.0, 0.0])
    X = rng.normal(size=(8, 3))
    X[:, 0] = (z_target - X[:, 1:] @ w[1:] - b) / w[0]  # place each example's z
    return assemble(
        name="saturated-logistic",
        description="Logistic regression with the naive log(1 - sigmoid(z)) and z up to 30 on "
        "label-0 examples.",
        params={"w": w, "b": b},
        data=frozen_data(X=X, y=y),
        forward=_logistic_forward,
        backward=_logistic_backward,
        tags=("saturation", "noise"),
        hard_point=True,
    )


# -- extreme scales ----------------------------------------------------------------------------


def _tanh_regression_forward(p: Any, data: Mapping[str, Any]) -> tuple[float, Cache]:
    X, y = data["X"], data["y"]
    A1 = np.tanh(X @ p["W1"] + p["b1"])
    pred = A1 @ p["w2"] + p["b2"]
    loss = 0.5 * np.mean((pred - y) ** 2)
    return float(loss), {"A1": A1, "pred": pred}


def _tanh_regression_backward(
    p: Any, data: Mapping[str, Any], cache: Cache, bug: str | None
) -> Grads:
    X, y = data["X"], data["y"]
    A1, pred = cache["A1"], cache["pred"]
    dpred = (pred - y) / len(X)
    dw2 = A1.T @ dpred
    db2 = dpred.sum(keepdims=True)
    dZ1 = np.outer(dpred, p["w2"]) * (1 - A1**2)
    return {"W1": X.T @ dZ1, "b1": dZ1.sum(axis=0), "w2": dw2, "b2": db2}


def _scaled_case(name: str, scale: float, seed: int) -> tuple[Case, tuple[Bug, ...]]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(8, 3)) / scale  # pre-activations of order 1
    y = scale * rng.normal(size=8)
    params = {
        "W1": scale * rng.normal(size=(3, 4)) / np.sqrt(3),
        "b1": min(scale, 1.0) * 0.1 * rng.normal(size=4),  # order 0.1 at the large scale
        "w2": scale * rng.normal(size=4),
        "b2": scale * 0.1 * rng.normal(size=1),
    }
    word = "large" if scale > 1 else "small"
    return assemble(
        name=name,
        description=f"A 3-4-1 tanh regression at a {word} scale: weights near {scale:g}, loss "
        f"near {scale**2:g}.",
        params=params,
        data=frozen_data(X=X, y=y),
        forward=_tanh_regression_forward,
        backward=_tanh_regression_backward,
        tags=("scale",),
        hard_point=True,
    )


def large_scale() -> tuple[Case, tuple[Bug, ...]]:
    """Build the case with parameters near 1e6 and a loss near 1e12.

    Returns
    -------
    case : Case
        ``"large-scale"``: a 3-4-1 tanh regression with inputs near 1e-6,
        weights and targets near 1e6 (the hidden biases are of order 0.1).
    bugs : tuple of Bug
        Empty.
    """
    return _scaled_case("large-scale", 1e6, 1008)


def small_scale() -> tuple[Case, tuple[Bug, ...]]:
    """Build the case with parameters near 1e-6 and a loss near 1e-12.

    Returns
    -------
    case : Case
        ``"small-scale"``: a 3-4-1 tanh regression with inputs near 1e6,
        weights, biases and targets near 1e-6.
    bugs : tuple of Bug
        Empty.
    """
    return _scaled_case("small-scale", 1e-6, 1009)


def build() -> tuple[tuple[Case, tuple[Bug, ...]], ...]:
    """Build the hard-point cases (none has planted bugs).

    Returns
    -------
    tuple of (Case, tuple of Bug)
        Every hard point, each with an empty tuple of bugs.
    """
    return (
        relu_exact_zero(),
        relu_near_zero(),
        maxpool_ties(),
        abs_at_zero(),
        float32_mlp(),
        saturated_logistic(),
        large_scale(),
        small_scale(),
        dead_relu(),
        large_mlp(),
    )
