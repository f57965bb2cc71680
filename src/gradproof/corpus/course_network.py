"""The assignment's fraud-detection network (deeplearning.ai, week 1) as corpus cases.

The model is :mod:`gradproof.course`'s LINEAR -> RELU -> LINEAR -> RELU ->
LINEAR -> SIGMOID network at the assignment's test point, with the
assignment's corrected backward pass as the truth and its shipped backward
pass (``dW2`` twice and ``db1`` four times too large) as the first bug.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from gradproof import course
from gradproof.corpus._types import Bug, BugSpec, Case, Grads, assemble, check_bug_name, frozen_data

__all__ = ["build"]

_BUGS = (
    BugSpec(
        "assignment-shipped",
        "scale",
        ("W2", "b1"),
        "The assignment's own planted bugs: dW2 = 1/m dZ2 A1^T * 2 and db1 = 4/m sum(dZ1), "
        "2 and 4 times the true gradients.",
    ),
    BugSpec(
        "dZ3-sign",
        "sign",
        ("W1", "b1", "W2", "b2", "W3", "b3"),
        "The output error is written dZ3 = Y - A3 instead of A3 - Y, so every gradient "
        "downstream of it is negated.",
    ),
    BugSpec(
        "relu-mask-forgotten-layer-1",
        "unknown",
        ("W1", "b1"),
        "dZ1 = dA1: the first ReLU's derivative (A1 > 0) is not applied, so inactive units "
        "pass the gradient through.",
    ),
)


def _forward(p: Any, data: Mapping[str, Any]) -> tuple[float, dict[str, Any]]:
    cost, cache = course.forward_propagation_n(data["X"], data["Y"], p)
    return cost, {"cache": cache}


def _backward(p: Any, data: Mapping[str, Any], cache: dict[str, Any], bug: str | None) -> Grads:
    check_bug_name(bug, _BUGS)
    X, Y = data["X"], data["Y"]
    if bug == "assignment-shipped":
        return course.parameter_gradients(course.backward_propagation_n(X, Y, cache["cache"]))
    grads = course.parameter_gradients(
        course.backward_propagation_n_corrected(X, Y, cache["cache"])
    )
    if bug == "dZ3-sign":
        # Every gradient is linear in dZ3, so flipping its sign flips all of them.
        return {key: -value for key, value in grads.items()}
    if bug == "relu-mask-forgotten-layer-1":
        m = X.shape[1]
        _Z1, _A1, _W1, _b1, _Z2, A2, W2, _b2, _Z3, A3, W3, _b3 = cache["cache"]
        dZ3 = A3 - Y
        dA2 = W3.T @ dZ3
        dZ2 = dA2 * (A2 > 0)
        dA1 = W2.T @ dZ2
        dZ1 = dA1  # BUG: the ReLU mask (A1 > 0) is missing
        grads = {
            **grads,
            "W1": 1.0 / m * np.dot(dZ1, X.T),
            "b1": 1.0 / m * np.sum(dZ1, axis=1, keepdims=True),
        }
    return grads


def build() -> tuple[tuple[Case, tuple[Bug, ...]], ...]:
    """Build the assignment's network case and its bugs.

    Returns
    -------
    tuple of (Case, tuple of Bug)
        The one case ``"course-network"`` with its planted bugs.
    """
    X, Y, params = course.gradient_check_n_test_case()
    return (
        assemble(
            name="course-network",
            description="The assignment's 4-5-3-1 ReLU network with a sigmoid cross-entropy "
            "cost, at its test point (47 parameters).",
            params=params,
            data=frozen_data(X=X, Y=Y),
            forward=_forward,
            backward=_backward,
            bugs=_BUGS,
        ),
    )
