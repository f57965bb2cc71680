"""The course network's forward pass in stages, one line of the assignment's forward each."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from gradproof._typing import FloatArray
from gradproof.course._network import relu, sigmoid
from gradproof.course._rebinding import _public

__all__ = ["forward_stages_n"]

_Stage = tuple[str, Callable[[FloatArray, Mapping[str, FloatArray]], Any]]


def forward_stages_n(Y: npt.ArrayLike) -> list[_Stage]:
    """Return :func:`forward_propagation_n` as stages: ``Z1, A1, Z2, A2, Z3, A3, cost``.

    Each stage is a ``(name, fn)`` pair with ``fn(value, parameters)``: the
    first receives ``X``, each later one the value of the stage before, and the
    last returns the cost, with the same arithmetic as
    :func:`forward_propagation_n`. Together with the intermediate gradients
    that :func:`backward_propagation_n` returns (``dZ3, dA2, dZ2, dA1, dZ1``),
    they let :func:`gradproof.check_stages` check the backward pass line by
    line.

    Parameters
    ----------
    Y : array_like of shape (m,) or (1, m)
        The labels, 0 or 1.

    Returns
    -------
    list of (str, callable)
        ``("Z1", ...), ("A1", ...), ("Z2", ...), ("A2", ...), ("Z3", ...),
        ("A3", ...), ("cost", ...)``.

    Examples
    --------
    >>> from gradproof.course import forward_propagation_n, gradient_check_n_test_case
    >>> X, Y, parameters = gradient_check_n_test_case()
    >>> value = X
    >>> for name, fn in forward_stages_n(Y):
    ...     value = fn(value, parameters)
    >>> value == forward_propagation_n(X, Y, parameters)[0]
    True
    """
    labels = np.asarray(Y)

    def cost(A3: FloatArray, _: Mapping[str, FloatArray]) -> float:
        m = A3.shape[1]
        logprobs = np.multiply(-np.log(A3), labels) + np.multiply(-np.log(1 - A3), 1 - labels)
        return float(1.0 / m * np.sum(logprobs))

    # The activations are those gradproof.course holds now (Note [Rebinding the course's
    # functions]), as in forward_propagation_n.
    return [
        ("Z1", lambda X, p: np.dot(p["W1"], X) + p["b1"]),
        ("A1", lambda Z1, p: _public(relu)(Z1)),
        ("Z2", lambda A1, p: np.dot(p["W2"], A1) + p["b2"]),
        ("A2", lambda Z2, p: _public(relu)(Z2)),
        ("Z3", lambda A2, p: np.dot(p["W3"], A2) + p["b3"]),
        ("A3", lambda Z3, p: _public(sigmoid)(Z3)),
        ("cost", cost),
    ]
