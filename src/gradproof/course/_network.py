"""The course's 3-layer network: LINEAR -> RELU -> LINEAR -> RELU -> LINEAR -> SIGMOID.

Its forward pass and cost, and its backward pass twice: as the assignment
ships it, with two planted bugs, and corrected.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeAlias

import numpy as np
import numpy.typing as npt

from gradproof._typing import FloatArray
from gradproof.course._parameters import PARAMETER_KEYS, _require
from gradproof.course._rebinding import _public

__all__ = [
    "backward_propagation_n",
    "backward_propagation_n_corrected",
    "forward_propagation_n",
    "relu",
    "sigmoid",
]

_Cache: TypeAlias = tuple[FloatArray, ...]
"""``(Z1, A1, W1, b1, Z2, A2, W2, b2, Z3, A3, W3, b3)`` from :func:`forward_propagation_n`."""


def sigmoid(x: npt.ArrayLike) -> FloatArray:
    """Compute the logistic sigmoid ``1 / (1 + exp(-x))`` elementwise.

    Parameters
    ----------
    x : array_like
        The input.

    Returns
    -------
    numpy.ndarray
        ``1 / (1 + exp(-x))``, elementwise.

    Examples
    --------
    >>> print(sigmoid([0.0]))
    [0.5]
    """
    s: FloatArray = 1 / (1 + np.exp(-np.asarray(x, dtype=np.float64)))
    return s


def relu(x: npt.ArrayLike) -> FloatArray:
    """Compute the rectified linear unit ``max(0, x)`` elementwise.

    Parameters
    ----------
    x : array_like
        The input.

    Returns
    -------
    numpy.ndarray
        ``np.maximum(0, x)``.

    Examples
    --------
    >>> print(relu([-1.0, 2.0]))
    [0. 2.]
    """
    s: FloatArray = np.maximum(0, np.asarray(x, dtype=np.float64))
    return s


def forward_propagation_n(
    X: FloatArray, Y: npt.ArrayLike, parameters: Mapping[str, FloatArray]
) -> tuple[float, _Cache]:
    """Run the 3-layer network forward and compute its logistic cost.

    The network is LINEAR -> RELU -> LINEAR -> RELU -> LINEAR -> SIGMOID.

    Parameters
    ----------
    X : numpy.ndarray of shape (4, m)
        The input, one example per column.
    Y : array_like of shape (m,) or (1, m)
        The labels, 0 or 1.
    parameters : dict
        ``"W1"`` (5, 4), ``"b1"`` (5, 1), ``"W2"`` (3, 5), ``"b2"`` (3, 1), ``"W3"`` (1, 3)
        and ``"b3"`` (1, 1).

    Returns
    -------
    cost : float
        The cross-entropy cost ``-1/m * sum(Y log(A3) + (1 - Y) log(1 - A3))``.
    cache : tuple of numpy.ndarray
        ``(Z1, A1, W1, b1, Z2, A2, W2, b2, Z3, A3, W3, b3)``, for
        :func:`backward_propagation_n`.

    Raises
    ------
    InputError
        If a parameter is missing.

    Examples
    --------
    >>> from gradproof.course import gradient_check_n_test_case
    >>> X, Y, parameters = gradient_check_n_test_case()
    >>> cost, cache = forward_propagation_n(X, Y, parameters)
    >>> len(cache)
    12
    """
    m = X.shape[1]
    W1, b1, W2, b2, W3, b3 = (
        _require(parameters, key, "parameters", PARAMETER_KEYS) for key in PARAMETER_KEYS
    )
    labels = np.asarray(Y)

    # LINEAR -> RELU -> LINEAR -> RELU -> LINEAR -> SIGMOID, with the activations
    # gradproof.course holds now (Note [Rebinding the course's functions])
    Z1 = np.dot(W1, X) + b1
    A1 = _public(relu)(Z1)
    Z2 = np.dot(W2, A1) + b2
    A2 = _public(relu)(Z2)
    Z3 = np.dot(W3, A2) + b3
    A3 = _public(sigmoid)(Z3)

    # Cost
    logprobs = np.multiply(-np.log(A3), labels) + np.multiply(-np.log(1 - A3), 1 - labels)
    cost = 1.0 / m * np.sum(logprobs)

    cache = (Z1, A1, W1, b1, Z2, A2, W2, b2, Z3, A3, W3, b3)
    return float(cost), cache


def _backward(
    X: FloatArray,
    Y: npt.ArrayLike,
    cache: _Cache,
    *,
    dW2_factor: float,
    db1_factor: float,
) -> dict[str, FloatArray]:
    """Backpropagate through the 3-layer network, with adjustable ``dW2`` and ``db1``.

    Parameters
    ----------
    X : numpy.ndarray of shape (4, m)
        The input, one example per column.
    Y : array_like of shape (m,) or (1, m)
        The labels, 0 or 1.
    cache : tuple of numpy.ndarray
        The cache returned by :func:`forward_propagation_n`.
    dW2_factor : float
        ``dW2`` is ``1/m * dZ2 . A1.T`` times this factor (1 is correct).
    db1_factor : float
        ``db1`` is ``db1_factor/m * sum(dZ1)`` (1 is correct).

    Returns
    -------
    dict of str to numpy.ndarray
        The gradients ``dZ3, dW3, db3, dA2, dZ2, dW2, db2, dA1, dZ1, dW1, db1``.
    """
    m = X.shape[1]
    _Z1, A1, _W1, _b1, _Z2, A2, W2, _b2, _Z3, A3, W3, _b3 = cache
    labels = np.asarray(Y)

    dZ3 = A3 - labels
    dW3 = 1.0 / m * np.dot(dZ3, A2.T)
    db3 = 1.0 / m * np.sum(dZ3, axis=1, keepdims=True)

    dA2 = np.dot(W3.T, dZ3)
    dZ2 = np.multiply(dA2, (A2 > 0).astype(np.int64))
    dW2 = 1.0 / m * np.dot(dZ2, A1.T) * dW2_factor
    db2 = 1.0 / m * np.sum(dZ2, axis=1, keepdims=True)

    dA1 = np.dot(W2.T, dZ2)
    dZ1 = np.multiply(dA1, (A1 > 0).astype(np.int64))
    dW1 = 1.0 / m * np.dot(dZ1, X.T)
    db1 = db1_factor / m * np.sum(dZ1, axis=1, keepdims=True)

    return {
        "dZ3": dZ3,
        "dW3": dW3,
        "db3": db3,
        "dA2": dA2,
        "dZ2": dZ2,
        "dW2": dW2,
        "db2": db2,
        "dA1": dA1,
        "dZ1": dZ1,
        "dW1": dW1,
        "db1": db1,
    }


def backward_propagation_n(X: FloatArray, Y: npt.ArrayLike, cache: _Cache) -> dict[str, FloatArray]:
    """Backpropagate through the 3-layer network, WITH THE ASSIGNMENT'S TWO PLANTED BUGS.

    This is the backward pass as the assignment ships it, for the gradient check
    to catch. It is wrong on purpose, in two places:

    * ``dW2 = 1./m * np.dot(dZ2, A1.T) * 2``: twice the true gradient (the correct
      line has no ``* 2``);
    * ``db1 = 4./m * np.sum(dZ1, axis=1, keepdims=True)``: four times the true
      gradient (the correct factor is ``1./m``).

    Every other gradient is correct. :func:`backward_propagation_n_corrected` has
    both bugs fixed.

    Parameters
    ----------
    X : numpy.ndarray of shape (4, m)
        The input, one example per column.
    Y : array_like of shape (m,) or (1, m)
        The labels, 0 or 1.
    cache : tuple of numpy.ndarray
        The cache returned by :func:`forward_propagation_n`.

    Returns
    -------
    dict of str to numpy.ndarray
        The gradients ``"dZ3"``, ``"dW3"``, ``"db3"``, ``"dA2"``, ``"dZ2"``, ``"dW2"``
        (doubled: bug), ``"db2"``, ``"dA1"``, ``"dZ1"``, ``"dW1"`` and ``"db1"``
        (quadrupled: bug).

    See Also
    --------
    backward_propagation_n_corrected : The same pass without the bugs.

    Examples
    --------
    >>> from gradproof.course import gradient_check_n, gradient_check_n_test_case
    >>> X, Y, parameters = gradient_check_n_test_case()
    >>> cost, cache = forward_propagation_n(X, Y, parameters)
    >>> gradients = backward_propagation_n(X, Y, cache)
    >>> difference = gradient_check_n(parameters, gradients, X, Y)  # doctest: +ELLIPSIS
    There is a mistake in the backward propagation! difference = 0.285093156...
    """
    return _backward(X, Y, cache, dW2_factor=2.0, db1_factor=4.0)


def backward_propagation_n_corrected(
    X: FloatArray, Y: npt.ArrayLike, cache: _Cache
) -> dict[str, FloatArray]:
    """Backpropagate through the 3-layer network, with the assignment's bugs fixed.

    Same as :func:`backward_propagation_n`, but with ``dW2 = 1./m * np.dot(dZ2, A1.T)``
    and ``db1 = 1./m * np.sum(dZ1, axis=1, keepdims=True)``.

    Parameters
    ----------
    X : numpy.ndarray of shape (4, m)
        The input, one example per column.
    Y : array_like of shape (m,) or (1, m)
        The labels, 0 or 1.
    cache : tuple of numpy.ndarray
        The cache returned by :func:`forward_propagation_n`.

    Returns
    -------
    dict of str to numpy.ndarray
        The gradients ``"dZ3"``, ``"dW3"``, ``"db3"``, ``"dA2"``, ``"dZ2"``, ``"dW2"``,
        ``"db2"``, ``"dA1"``, ``"dZ1"``, ``"dW1"`` and ``"db1"``.

    Examples
    --------
    >>> from gradproof.course import gradient_check_n_test_case
    >>> X, Y, parameters = gradient_check_n_test_case()
    >>> cost, cache = forward_propagation_n(X, Y, parameters)
    >>> gradients = backward_propagation_n_corrected(X, Y, cache)
    >>> gradients["dW2"].shape
    (3, 5)
    """
    return _backward(X, Y, cache, dW2_factor=1.0, db1_factor=1.0)
