"""Shared fixtures: the classic assignment's network as a loss and two gradients."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from gradproof import course

Arrays = dict[str, np.ndarray]


@dataclass(frozen=True)
class Network:
    """The assignment's fraud-detection network at its test point."""

    params: Arrays
    loss: Callable[[Arrays], float]
    shipped_grad: Callable[[Arrays], Arrays]
    corrected_grad: Callable[[Arrays], Arrays]


def _gradient(backward: Callable[..., Any], X: np.ndarray, Y: np.ndarray):
    def grad(p: Arrays) -> Arrays:
        _, cache = course.forward_propagation_n(X, Y, p)
        return course.parameter_gradients(backward(X, Y, cache))

    return grad


@pytest.fixture
def network() -> Network:
    X, Y, params = course.gradient_check_n_test_case()
    return Network(
        params=params,
        loss=lambda p: float(course.forward_propagation_n(X, Y, p)[0]),
        shipped_grad=_gradient(course.backward_propagation_n, X, Y),
        corrected_grad=_gradient(course.backward_propagation_n_corrected, X, Y),
    )
