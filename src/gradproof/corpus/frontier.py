"""Correct code and planted bugs at the frontier of what finite differences can judge.

Five families, one per verdict that an honest checker must get right where naive
rules go wrong (issue 14). Every case is correct code (``hard_point=True``), with
planted bugs at the same hard points; :func:`cases` and :func:`bugs` list them apart
from the main corpus, whose figures they would otherwise change.

* ``several-kinks``: one coordinate on several kinks at once. Overlapping max-pool
  windows where one input ties in one window and wins in another (1-D and 2-D), and a
  ReLU layer where one weight moves two pre-activations, both exactly at 0, across 0
  in opposite directions. The correct gradient (PyTorch's conventions: the first
  maximum of a window, ``relu'(0) = 0``) is a limit of true gradients along a
  tie-breaking direction, yet lies outside the one-sided derivatives along the
  coordinate. Expected: pass or inconclusive, never wrong.
* ``jumps``: losses that jump at the point (a hinge embedding loss and a cosine
  embedding loss differentiated with respect to their +-1 target, a threshold
  penalty, a loss returning a Python int). No derivative exists there: inconclusive.
* ``tiny-derivatives``: smooth code whose derivative is tiny next to the loss's
  round-off or curvature: a least-squares loss at its optimum, cumulative
  log-sum-exp of large equal values, ``x**4`` near 0, ``cos`` at its stationary
  points, the tail of ``erfc``. Expected: pass.
* ``domain-edge``: losses finite on one side of the point only (``x**1.5`` and
  ``x * sqrt(x + 1) ...`` at the edge of their domain). Expected: pass.
* ``systematic``: well-conditioned models whose planted bugs are off by a relative
  1e-5 on every entry of one tensor (a normaliser off by one), within ``rtol``.
  Expected: the correct code passes, the bugs are wrong.

The kink points are built from small dyadic numbers, for which every sum and product
is exact, so that "exactly 0" and "exactly tied" hold whatever the order of summation.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from gradproof.corpus._types import Bug, BugSpec, Case, Grads, assemble, check_bug_name, frozen_data

__all__ = ["FAMILIES", "bugs", "cases", "family_of"]

Cache = dict[str, Any]


# -- several kinks: overlapping max-pool with ties --------------------------------------------
_POOL_BUGS = (
    BugSpec(
        "tie-counted-twice",
        "few_entries",
        ("x",),
        "At a tied window the first maximum receives the window's gradient twice (once per "
        "tied entry), instead of once.",
    ),
    BugSpec(
        "weights-dropped",
        "unknown",
        ("x",),
        "The window's upstream weight is forgotten: the maximum receives 1 instead of w.",
    ),
)


def _pool1d_forward(p: Any, data: Mapping[str, Any]) -> tuple[float, Cache]:
    x, w = p["x"], data["w"]
    windows = sliding_window_view(x, 2)  # overlapping windows of width 2, stride 1
    loss = float(np.sum(w * windows.max(axis=1)) + 0.25 * np.sum(x**2))
    return loss, {"windows": windows}


def _pool1d_backward(p: Any, data: Mapping[str, Any], cache: Cache, bug: str | None) -> Grads:
    check_bug_name(bug, _POOL_BUGS)
    x, w = p["x"], data["w"]
    windows = cache["windows"]
    first = np.argmax(windows, axis=1)  # the first maximum, as PyTorch's CPU max-pool
    tied = np.sum(windows == windows.max(axis=1, keepdims=True), axis=1)
    upstream = np.ones_like(w) if bug == "weights-dropped" else w.copy()
    if bug == "tie-counted-twice":
        upstream = upstream * np.where(tied > 1, 2.0, 1.0)
    dx = 0.5 * x
    np.add.at(dx, np.arange(len(w)) + first, upstream)
    return {"x": dx}


def maxpool1d_overlap_ties() -> tuple[Case, tuple[Bug, ...]]:
    """Build a 1-D max-pool of width 2 and stride 1 over a signal with plateaus.

    Returns
    -------
    case : Case
        ``"maxpool1d-overlap-ties"``: ``sum(w * maxpool(x)) + |x|**2 / 4`` with signed
        weights ``w``. The middle of each plateau of three equal values is the second
        maximum of the window on its left (it gets nothing) and the first of the window
        on its right (it gets that window's weight): along its coordinate it wins or
        loses both windows, so the one-sided derivatives are ``w_l + w_r`` and 0, and
        the weights are chosen so that ``w_r`` lies outside them.
    bugs : tuple of Bug
        A tie counted twice, and the weights forgotten.
    """
    x = np.array([0.0, 1.0, 1.0, 1.0, 0.25, 0.75, 0.75, 0.75, -0.5])
    w = np.array([0.5, -1.5, 1.0, 0.25, -0.75, -2.0, 1.25, 0.5])
    return assemble(
        name="maxpool1d-overlap-ties",
        description="Overlapping 1-D max-pool (width 2, stride 1) over plateaus of tied maxima "
        "with signed weights: one input ties in one window and wins in another.",
        params={"x": x},
        data=frozen_data(w=w),
        forward=_pool1d_forward,
        backward=_pool1d_backward,
        bugs=_POOL_BUGS,
        tags=("kink", "several-kinks"),
        hard_point=True,
    )


def _pool2d_forward(p: Any, data: Mapping[str, Any]) -> tuple[float, Cache]:
    x, w = p["x"], data["w"]
    windows = sliding_window_view(x, (2, 2)).reshape(x.shape[0] - 1, x.shape[1] - 1, 4)
    loss = float(np.sum(w * windows.max(axis=2)))
    return loss, {"windows": windows}


def _pool2d_backward(p: Any, data: Mapping[str, Any], cache: Cache, bug: str | None) -> Grads:
    check_bug_name(bug, _POOL_BUGS)
    x, w = p["x"], data["w"]
    windows = cache["windows"]
    first = np.argmax(windows, axis=2)  # row-major first maximum, as PyTorch's CPU max-pool
    tied = np.sum(windows == windows.max(axis=2, keepdims=True), axis=2)
    upstream = np.ones_like(w) if bug == "weights-dropped" else w.copy()
    if bug == "tie-counted-twice":
        upstream = upstream * np.where(tied > 1, 2.0, 1.0)
    rows, cols = np.indices(w.shape)
    dx = np.zeros_like(x)
    np.add.at(dx, (rows + first // 2, cols + first % 2), upstream)
    return {"x": dx}


def maxpool2d_overlap_ties() -> tuple[Case, tuple[Bug, ...]]:
    """Build a 2-D max-pool of 2x2 windows and stride 1 over an image with tied values.

    Returns
    -------
    case : Case
        ``"maxpool2d-overlap-ties"``: ``sum(w * maxpool(x))`` on a 4x4 image with a
        3x3 plateau of ones: its centre is the first maximum of one window and a later
        one of three, and the signed weights put the window's weight outside the
        one-sided derivatives along it.
    bugs : tuple of Bug
        A tie counted twice, and the weights forgotten.
    """
    x = np.array(
        [
            [1.0, 1.0, 1.0, -0.5],
            [1.0, 1.0, 1.0, 0.75],
            [1.0, 1.0, 1.0, 0.5],
            [0.0, 0.5, -0.25, 0.125],
        ]
    )
    w = np.array([[-1.0, 0.5, 0.25], [-1.0, 1.0, -0.75], [0.25, -1.5, 1.25]])
    return assemble(
        name="maxpool2d-overlap-ties",
        description="Overlapping 2-D max-pool (2x2, stride 1) over plateaus of tied values, "
        "with signed weights.",
        params={"x": x},
        data=frozen_data(w=w),
        forward=_pool2d_forward,
        backward=_pool2d_backward,
        bugs=_POOL_BUGS,
        tags=("kink", "several-kinks"),
        hard_point=True,
    )


# -- several kinks: ReLU pre-activations moved across 0 in opposite directions -----------------
_KNOT_BUGS = (
    BugSpec(
        "relu-mask-forgotten",
        "unknown",
        ("W1", "b1"),
        "The ReLU's derivative is forgotten: dZ = dA instead of dA * (Z > 0).",
    ),
    BugSpec("dW2-sign", "sign", ("W2",), "The gradient of W2 has its sign flipped."),
)


def _knots_forward(p: Any, data: Mapping[str, Any]) -> tuple[float, Cache]:
    X, y = data["X"], data["y"]
    Z = X @ p["W1"] + p["b1"]
    A = np.maximum(Z, 0.0)
    pred = A @ p["W2"]
    return float(0.5 * np.sum((pred - y) ** 2)), {"Z": Z, "A": A, "pred": pred}


def _knots_backward(p: Any, data: Mapping[str, Any], cache: Cache, bug: str | None) -> Grads:
    check_bug_name(bug, _KNOT_BUGS)
    X, y = data["X"], data["y"]
    Z, A, pred = cache["Z"], cache["A"], cache["pred"]
    dpred = pred - y
    dW2 = A.T @ dpred
    dA = dpred @ p["W2"].T
    dZ = dA if bug == "relu-mask-forgotten" else dA * (Z > 0)  # relu'(0) = 0
    return {
        "W1": X.T @ dZ,
        "b1": dZ.sum(axis=0),
        "W2": -dW2 if bug == "dW2-sign" else dW2,
    }


def relu_knots() -> tuple[Case, tuple[Bug, ...]]:
    """Build a ReLU regression where one weight moves two pre-activations at 0 oppositely.

    Returns
    -------
    case : Case
        ``"relu-knots"``: a 2-3-1 ReLU regression on 3 examples. Unit 0's
        pre-activation is exactly 0 on examples 0 and 1, whose first input is
        +1 and -1: moving ``W1[0, 0]`` sends one across 0 upwards and the other
        downwards, and their upstream gradients make both one-sided derivatives
        positive while ``relu'(0) = 0`` gives 0.
    bugs : tuple of Bug
        The ReLU mask forgotten, and the sign of ``dW2`` flipped.
    """
    X = np.array([[1.0, 0.5], [-1.0, -0.5], [0.5, 1.0]])
    W1 = np.array([[0.5, -0.25, 1.0], [-1.0, 0.5, 0.25]])  # Z[0, 0] = Z[1, 0] = 0
    b1 = np.array([0.0, 0.25, -0.125])
    W2 = np.array([[1.0], [-0.5], [0.75]])
    y = np.array([[-2.0], [1.5], [0.25]])
    params = {"W1": W1, "b1": b1, "W2": W2}
    _, cache = _knots_forward(params, {"X": X, "y": y})
    if not (cache["Z"][0, 0] == 0 and cache["Z"][1, 0] == 0):
        raise RuntimeError("relu-knots: the knots were not placed as intended")
    return assemble(
        name="relu-knots",
        description="A ReLU regression whose weight W1[0, 0] moves two pre-activations at 0 "
        "across it in opposite directions.",
        params=params,
        data=frozen_data(X=X, y=y),
        forward=_knots_forward,
        backward=_knots_backward,
        bugs=_KNOT_BUGS,
        tags=("kink", "several-kinks"),
        hard_point=True,
    )


# -- jumps ------------------------------------------------------------------------------------
_JUMP_BUGS = (BugSpec("dx-doubled", "scale", ("x",), "The gradient of x is twice too large."),)


def _hinge_forward(p: Any, data: Mapping[str, Any]) -> tuple[float, Cache]:
    x, y = p["x"], p["y"]
    # PyTorch's hinge_embedding_loss: x where y == 1, max(0, margin - x) where y == -1.
    terms = np.where(y == 1, x, 0.0) + np.where(y == -1, np.maximum(0.0, 1.0 - x), 0.0)
    return float(np.mean(terms)), {}


def _hinge_backward(p: Any, data: Mapping[str, Any], cache: Cache, bug: str | None) -> Grads:
    check_bug_name(bug, _JUMP_BUGS)
    x, y = p["x"], p["y"]
    dx = (np.where(y == 1, 1.0, 0.0) - np.where((y == -1) & (x < 1.0), 1.0, 0.0)) / x.size
    return {"x": 2 * dx if bug == "dx-doubled" else dx, "y": np.zeros_like(y)}


def hinge_embedding_target() -> tuple[Case, tuple[Bug, ...]]:
    """Build a hinge embedding loss differentiated with respect to its +-1 target too.

    Returns
    -------
    case : Case
        ``"hinge-embedding-target"``: the loss jumps when ``y`` leaves +-1, so
        ``y`` has no derivative (its hand-written gradient is 0, like PyTorch's).
    bugs : tuple of Bug
        The gradient of ``x`` doubled.
    """
    return assemble(
        name="hinge-embedding-target",
        description="PyTorch's hinge embedding loss, also 'differentiated' with respect to "
        "its +-1 target, where it jumps.",
        params={"x": np.array([0.25, 0.5, 2.0, -0.75]), "y": np.array([1.0, -1.0, -1.0, 1.0])},
        data=frozen_data(),
        forward=_hinge_forward,
        backward=_hinge_backward,
        bugs=_JUMP_BUGS,
        tags=("jump",),
        hard_point=True,
    )


def _cosine_forward(p: Any, data: Mapping[str, Any]) -> tuple[float, Cache]:
    a, b, y = p["x"], data["b"], p["y"]
    cos = np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    terms = np.where(y == 1, 1.0 - cos, 0.0) + np.where(y == -1, np.maximum(0.0, cos), 0.0)
    return float(np.mean(terms)), {"cos": cos}


def _cosine_backward(p: Any, data: Mapping[str, Any], cache: Cache, bug: str | None) -> Grads:
    check_bug_name(bug, _JUMP_BUGS)
    a, b, y = p["x"], data["b"], p["y"]
    cos = cache["cos"]
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    dcos_da = b / (na * nb)[:, None] - (cos / na**2)[:, None] * a
    dterm = np.where(y == 1, -1.0, 0.0) + np.where((y == -1) & (cos > 0), 1.0, 0.0)
    dx = dterm[:, None] * dcos_da / y.size
    return {"x": 2 * dx if bug == "dx-doubled" else dx, "y": np.zeros_like(y)}


def cosine_embedding_target() -> tuple[Case, tuple[Bug, ...]]:
    """Build a cosine embedding loss differentiated with respect to its +-1 target too.

    Returns
    -------
    case : Case
        ``"cosine-embedding-target"``: PyTorch's cosine embedding loss (margin 0)
        of 3 pairs; the loss jumps when ``y`` leaves +-1.
    bugs : tuple of Bug
        The gradient of ``x`` doubled.
    """
    b = np.array([[1.0, 0.5, -0.25], [0.25, -1.0, 0.5], [-0.5, 0.75, 1.0]])
    return assemble(
        name="cosine-embedding-target",
        description="PyTorch's cosine embedding loss, also 'differentiated' with respect to "
        "its +-1 target, where it jumps.",
        params={
            "x": np.array([[0.5, 1.0, 0.25], [1.0, -0.5, 0.75], [0.25, 0.5, -1.0]]),
            "y": np.array([1.0, -1.0, -1.0]),
        },
        data=frozen_data(b=b),
        forward=_cosine_forward,
        backward=_cosine_backward,
        bugs=_JUMP_BUGS,
        tags=("jump",),
        hard_point=True,
    )


def _threshold_forward(p: Any, data: Mapping[str, Any]) -> tuple[float, Cache]:
    x = p["x"]
    # A penalty of 1 for every entry above 0.5: a step function of each entry.
    return float(0.5 * np.sum(x**2) + np.sum(x > 0.5)), {}


def _threshold_backward(p: Any, data: Mapping[str, Any], cache: Cache, bug: str | None) -> Grads:
    check_bug_name(bug, _JUMP_BUGS)
    x = p["x"]
    return {"x": 2 * x if bug == "dx-doubled" else x.copy()}  # the step's derivative is 0


def threshold_penalty() -> tuple[Case, tuple[Bug, ...]]:
    """Build a quadratic loss plus a step penalty, with one entry exactly at the step.

    Returns
    -------
    case : Case
        ``"threshold-penalty"``: ``|x|**2 / 2 + count(x > 0.5)`` at a point with
        ``x[1] = 0.5``: a jump of 1 on its right.
    bugs : tuple of Bug
        The gradient doubled.
    """
    return assemble(
        name="threshold-penalty",
        description="A quadratic loss plus a count of entries above 0.5, one entry exactly at 0.5.",
        params={"x": np.array([0.25, 0.5, 1.5, -1.0])},
        data=frozen_data(),
        forward=_threshold_forward,
        backward=_threshold_backward,
        bugs=_JUMP_BUGS,
        tags=("jump",),
        hard_point=True,
    )


def _integer_forward(p: Any, data: Mapping[str, Any]) -> tuple[float, Cache]:
    # A loss that only takes whole values, returned as a Python int: floor of a sum.
    return int(np.floor(np.sum(p["x"]))), {}


def _integer_backward(p: Any, data: Mapping[str, Any], cache: Cache, bug: str | None) -> Grads:
    check_bug_name(bug, ())
    return {"x": np.zeros_like(p["x"])}


def integer_loss() -> tuple[Case, tuple[Bug, ...]]:
    """Build a loss returning a Python int, at a point where it steps.

    Returns
    -------
    case : Case
        ``"integer-loss"``: ``int(floor(sum(x)))`` at ``sum(x) = 2`` exactly.
    bugs : tuple of Bug
        None: no gradient can be told wrong.
    """
    return assemble(
        name="integer-loss",
        description="A loss returning a Python int (the floor of a sum), at a whole value.",
        params={"x": np.array([0.5, 1.25, 0.25])},
        data=frozen_data(),
        forward=_integer_forward,
        backward=_integer_backward,
        tags=("jump",),
        hard_point=True,
    )


# -- tiny derivatives -------------------------------------------------------------------------
_SMOOTH_BUGS = (
    BugSpec("grad-doubled", "scale", ("x",), "The gradient is twice too large."),
    BugSpec("grad-sign", "sign", ("x",), "The gradient has its sign flipped."),
)

_SHIFTED_BUG = (
    BugSpec(
        "grad-shifted",
        "unknown",
        ("x",),
        "A stray term adds 1e-3 to every entry of the gradient (0 at the point).",
    ),
)


def _smooth_case(
    name: str,
    description: str,
    params: dict[str, Any],
    loss: Any,
    grad: Any,
    specs: tuple[BugSpec, ...] = _SMOOTH_BUGS,
) -> tuple[Case, tuple[Bug, ...]]:
    def forward(p: Any, data: Mapping[str, Any]) -> tuple[float, Cache]:
        return float(loss(p["x"])), {}

    def backward(p: Any, data: Mapping[str, Any], cache: Cache, bug: str | None) -> Grads:
        check_bug_name(bug, specs)
        g = np.asarray(grad(p["x"]), dtype=np.float64)
        if bug == "grad-shifted":
            return {"x": g + 1e-3}
        return {"x": 2 * g if bug == "grad-doubled" else -g if bug == "grad-sign" else g}

    return assemble(
        name=name,
        description=description,
        params=params,
        data=frozen_data(),
        forward=forward,
        backward=backward,
        bugs=specs,
        tags=("tiny-derivative",),
        hard_point=True,
    )


def least_squares_optimum() -> tuple[Case, tuple[Bug, ...]]:
    """Build a least-squares loss of 2,000 terms, at a point near its optimum.

    Returns
    -------
    case : Case
        ``"least-squares-optimum"``: ``|A x - b|**2 / 2`` with ``A`` 2,000 x 3,
        at its optimum moved by 1e-6: the gradient is about 1e-3 against a
        curvature of 2,000 and a loss of 1,000.
    bugs : tuple of Bug
        The gradient doubled, and its sign flipped.
    """
    rng = np.random.default_rng(14)
    A = rng.normal(size=(2000, 3))
    b = A @ np.array([0.5, -1.0, 2.0]) + rng.normal(size=2000)
    x = np.linalg.lstsq(A, b, rcond=None)[0] + np.array([1e-6, -2e-6, 1.5e-6])
    return _smooth_case(
        "least-squares-optimum",
        "A least-squares loss of 2,000 terms near its optimum: tiny gradient, large curvature.",
        {"x": x},
        lambda v: 0.5 * np.sum((A @ v - b) ** 2),
        lambda v: A.T @ (A @ v - b),
    )


def _cumulative_lse(v: Any) -> Any:
    return np.sum(np.logaddexp.accumulate(v))


def _cumulative_lse_grad(v: Any) -> Any:
    v = np.asarray(v, dtype=np.float64)
    c = np.logaddexp.accumulate(v)
    weights = np.exp(v[None, :] - c[:, None]) * np.tri(v.size)  # softmax of each prefix
    return weights.sum(axis=0)


def cumulative_logsumexp() -> tuple[Case, tuple[Bug, ...]]:
    """Build the sum of a cumulative log-sum-exp at large equal values.

    Returns
    -------
    case : Case
        ``"cumulative-logsumexp"``: ``sum_k logsumexp(x[:k+1])`` at ``x = 1000``
        everywhere: a loss near 5,000 whose derivatives, 1/k sums, are small
        next to its round-off.
    bugs : tuple of Bug
        The gradient doubled, and its sign flipped.
    """
    return _smooth_case(
        "cumulative-logsumexp",
        "Cumulative log-sum-exp of 5 equal values of 1000.",
        {"x": np.full(5, 1000.0)},
        _cumulative_lse,
        _cumulative_lse_grad,
    )


def quartic_near_zero() -> tuple[Case, tuple[Bug, ...]]:
    """Build ``1 + sum(x**4)`` near 0, where the derivative is tiny next to the curvature.

    Returns
    -------
    case : Case
        ``"quartic-near-zero"``: at ``x = (0.01, 0.03, 0.001)`` the derivatives are
        4e-6, 1.1e-4 and 4e-9.
    bugs : tuple of Bug
        The gradient doubled, and its sign flipped.
    """
    return _smooth_case(
        "quartic-near-zero",
        "1 + sum(x**4) near 0: derivatives of 4e-9 to 1e-4.",
        {"x": np.array([0.01, 0.03, 0.001])},
        lambda v: 1.0 + np.sum(v**4),
        lambda v: 4 * v**3,
    )


def cosine_stationary() -> tuple[Case, tuple[Bug, ...]]:
    """Build ``5 + sum(cos(x))`` at its stationary points.

    Returns
    -------
    case : Case
        ``"cosine-stationary"``: at ``x = (0, pi, 2 pi)`` every derivative is 0
        (to round-off) and the curvature is 1.
    bugs : tuple of Bug
        A stray 1e-3 added to every entry (doubling 0 would change nothing).
    """
    return _smooth_case(
        "cosine-stationary",
        "5 + sum(cos(x)) at 0, pi and 2 pi, where its derivative is 0.",
        {"x": np.array([0.0, np.pi, 2 * np.pi])},
        lambda v: 5.0 + np.sum(np.cos(v)),
        lambda v: -np.sin(v),
        _SHIFTED_BUG,
    )


def _erfc(v: Any) -> Any:
    import math

    return np.array([math.erfc(float(t)) for t in np.ravel(v)])


def erfc_tail() -> tuple[Case, tuple[Bug, ...]]:
    """Build ``1 + sum(erfc(x))`` in the tail, where the derivative is tiny next to 1.

    Returns
    -------
    case : Case
        ``"erfc-tail"``: at ``x = (3, 4, 5)`` the derivatives are 1.4e-4 to 1.6e-11,
        next to a loss of 1 whose round-off is 2e-16.
    bugs : tuple of Bug
        The gradient doubled, and its sign flipped.
    """
    return _smooth_case(
        "erfc-tail",
        "1 + sum(erfc(x)) at x = 3, 4, 5: derivatives down to 1.6e-11.",
        {"x": np.array([3.0, 4.0, 5.0])},
        lambda v: 1.0 + np.sum(_erfc(v)),
        lambda v: -2 / np.sqrt(np.pi) * np.exp(-(v**2)),
    )


# -- the edge of the domain -------------------------------------------------------------------
def power_at_edge() -> tuple[Case, tuple[Bug, ...]]:
    """Build ``sum(x**1.5)`` with one entry at 0, the edge of its domain.

    Returns
    -------
    case : Case
        ``"power-at-edge"``: NaN for ``x < 0``, so the entry at 0 can only be
        measured from the right; its derivative is 0.
    bugs : tuple of Bug
        The gradient doubled, and its sign flipped.
    """
    return _smooth_case(
        "power-at-edge",
        "sum(x**1.5) with x[0] = 0: finite on its right only.",
        {"x": np.array([0.0, 1.0, 2.25])},
        lambda v: np.sum(np.where(v >= 0, np.abs(v) ** 1.5, np.nan)),
        lambda v: 1.5 * np.sqrt(np.abs(v)),
    )


def log_at_edge() -> tuple[Case, tuple[Bug, ...]]:
    """Build ``sum(x * log(x + 1) + log(1 - x))`` with an entry just inside its domain.

    Returns
    -------
    case : Case
        ``"log-at-edge"``: ``x[0] = 1 - 2e-6``, within the first step of the
        edge at 1, where ``log(1 - x)`` is NaN on the right.
    bugs : tuple of Bug
        The gradient doubled, and its sign flipped.
    """

    def loss(v: Any) -> Any:
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.sum(v * np.log(v + 1) + np.log(1 - v))

    return _smooth_case(
        "log-at-edge",
        "sum(x log(x + 1) + log(1 - x)) with x[0] 2e-6 below the edge at 1.",
        {"x": np.array([1.0 - 2e-6, 0.5, -0.25])},
        loss,
        lambda v: np.log(v + 1) + v / (v + 1) - 1 / (1 - v),
    )


# -- small systematic errors ------------------------------------------------------------------
_SYSTEMATIC_BUGS = (
    BugSpec(
        "normaliser-off-by-one",
        "scale",
        ("W",),
        "dW divides by m - 1 where the loss's mean divides by m (m = 100,001): every entry "
        "is 1e-5 too large.",
    ),
    BugSpec(
        "b-normaliser-off-by-one",
        "scale",
        ("b",),
        "db divides by m - 1 instead of m: every entry is 1e-5 too large.",
    ),
)

_M = 100_001
"""Examples in the systematic-error regression: ``m / (m - 1) = 1 + 1e-5``."""


def _regression_forward(p: Any, data: Mapping[str, Any]) -> tuple[float, Cache]:
    X, y = data["X"], data["y"]
    residual = X @ p["W"] + p["b"] - y
    return float(0.5 * np.mean(np.sum(residual**2, axis=1))), {"residual": residual}


def _regression_backward(p: Any, data: Mapping[str, Any], cache: Cache, bug: str | None) -> Grads:
    check_bug_name(bug, _SYSTEMATIC_BUGS)
    X = data["X"]
    r = cache["residual"]
    m = X.shape[0]
    dW = X.T @ r / (m - 1 if bug == "normaliser-off-by-one" else m)
    db = r.sum(axis=0) / (m - 1 if bug == "b-normaliser-off-by-one" else m)
    return {"W": dW, "b": db}


def normaliser_regression() -> tuple[Case, tuple[Bug, ...]]:
    """Build a linear regression on 100,001 examples, whose bugs divide by m - 1.

    Returns
    -------
    case : Case
        ``"normaliser-regression"``: a 4-3 linear regression, mean squared error
        over ``m = 100,001`` examples, away from its optimum.
    bugs : tuple of Bug
        ``dW`` or ``db`` divided by ``m - 1``: off by a relative 1e-5 on every
        entry, which is float64's default ``rtol``.
    """
    rng = np.random.default_rng(1405)
    X = rng.normal(size=(_M, 4))
    y = X @ rng.normal(size=(4, 3)) + rng.normal(size=(_M, 3))
    return assemble(
        name="normaliser-regression",
        description="A linear regression on 100,001 examples; bugs divide by m - 1 (1e-5 off).",
        params={"W": rng.normal(size=(4, 3)), "b": rng.normal(size=3)},
        data=frozen_data(X=X, y=y),
        forward=_regression_forward,
        backward=_regression_backward,
        bugs=_SYSTEMATIC_BUGS,
        tags=("systematic",),
        hard_point=True,
    )


def _softmax_forward(p: Any, data: Mapping[str, Any]) -> tuple[float, Cache]:
    X, labels = data["X"], data["labels"]
    logits = X @ p["W"]
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.sum(np.exp(shifted), axis=1, keepdims=True))
    loss = -np.mean(log_probs[np.arange(len(labels)), labels])
    return float(loss), {"probs": np.exp(log_probs)}


_SOFTMAX_BUGS = (
    BugSpec(
        "temperature-1e-5",
        "scale",
        ("W",),
        "The backward multiplies by a temperature of 1.00001 that the forward does not use.",
    ),
)


def _softmax_backward(p: Any, data: Mapping[str, Any], cache: Cache, bug: str | None) -> Grads:
    check_bug_name(bug, _SOFTMAX_BUGS)
    X, labels = data["X"], data["labels"]
    d = cache["probs"].copy()
    d[np.arange(len(labels)), labels] -= 1
    dW = X.T @ d / len(labels)
    return {"W": dW * 1.00001 if bug == "temperature-1e-5" else dW}


def softmax_temperature() -> tuple[Case, tuple[Bug, ...]]:
    """Build a softmax classifier whose bug scales its gradient by 1.00001.

    Returns
    -------
    case : Case
        ``"softmax-temperature"``: a 5-4 softmax classifier on 64 examples.
    bugs : tuple of Bug
        ``dW`` off by a relative 1e-5 on every entry.
    """
    rng = np.random.default_rng(1406)
    X = rng.normal(size=(64, 5))
    return assemble(
        name="softmax-temperature",
        description="A softmax classifier; its bug scales dW by 1.00001.",
        params={"W": 0.5 * rng.normal(size=(5, 4))},
        data=frozen_data(X=X, labels=rng.integers(0, 4, size=64)),
        forward=_softmax_forward,
        backward=_softmax_backward,
        bugs=_SOFTMAX_BUGS,
        tags=("systematic",),
        hard_point=True,
    )


# -- the registry -----------------------------------------------------------------------------
FAMILIES: Mapping[str, tuple[Any, ...]] = {
    "several-kinks": (maxpool1d_overlap_ties, maxpool2d_overlap_ties, relu_knots),
    "jumps": (hinge_embedding_target, cosine_embedding_target, threshold_penalty, integer_loss),
    "tiny-derivatives": (
        least_squares_optimum,
        cumulative_logsumexp,
        quartic_near_zero,
        cosine_stationary,
        erfc_tail,
    ),
    "domain-edge": (power_at_edge, log_at_edge),
    "systematic": (normaliser_regression, softmax_temperature),
}
"""Every frontier family's builders, by family name."""


def _build() -> tuple[tuple[str, Case, tuple[Bug, ...]], ...]:
    return tuple(
        (family, *builder()) for family, builders in FAMILIES.items() for builder in builders
    )


def cases() -> tuple[Case, ...]:
    """Return every correct frontier case, built fresh, in the order of :data:`FAMILIES`.

    Examples
    --------
    >>> [case.name for case in cases()][:2]
    ['maxpool1d-overlap-ties', 'maxpool2d-overlap-ties']
    """
    return tuple(case for _, case, _ in _build())


def bugs() -> tuple[tuple[Case, Bug], ...]:
    """Return every planted frontier bug with its case.

    Examples
    --------
    >>> [(c.name, b.name) for c, b in bugs()][0]
    ('maxpool1d-overlap-ties', 'tie-counted-twice')
    """
    return tuple((case, bug) for _, case, found in _build() for bug in found)


def family_of(name: str) -> str:
    """Return the family of a frontier case.

    Examples
    --------
    >>> family_of("relu-knots")
    'several-kinks'
    """
    for family, case, _ in _build():
        if case.name == name:
            return family
    raise KeyError(f"no frontier case {name!r}")
