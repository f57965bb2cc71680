"""The assignment's N-dimensional gradient check of the course network, and its test case."""

from __future__ import annotations

import sys
from collections.abc import Mapping

import numpy as np
import numpy.typing as npt

from gradproof._typing import FloatArray
from gradproof.course._network import forward_propagation_n
from gradproof.course._rebinding import _public
from gradproof.course._vectors import (
    dictionary_to_vector,
    gradients_to_vector,
    vector_to_dictionary,
)

__all__ = ["gradient_check_n", "gradient_check_n_test_case"]

_YELLOW = "\033[93m"
_GREEN = "\033[92m"
_RESET = "\033[0m"


def gradient_check_n(
    parameters: Mapping[str, FloatArray],
    gradients: Mapping[str, FloatArray],
    X: FloatArray,
    Y: npt.ArrayLike,
    epsilon: float = 1e-7,
    print_msg: bool = True,
) -> float:
    """Check the network's gradients against centered differences of its cost.

    Each of the 47 parameters is nudged by ``+epsilon`` and ``-epsilon`` in turn and
    the cost of :func:`forward_propagation_n` recomputed; the returned difference is
    the relative distance ``||grad - gradapprox|| / (||grad|| + ||gradapprox||)``.

    Parameters
    ----------
    parameters : dict
        ``"W1"``, ``"b1"``, ``"W2"``, ``"b2"``, ``"W3"`` and ``"b3"``.
    gradients : dict
        The backward pass's output, with ``"dW1"``, ``"db1"``, ..., ``"db3"``.
    X : numpy.ndarray of shape (4, m)
        The input, one example per column.
    Y : array_like of shape (m,) or (1, m)
        The labels, 0 or 1.
    epsilon : float, default 1e-7
        The step of the centered differences.
    print_msg : bool, default True
        Print ``"There is a mistake in the backward propagation! difference = ..."``
        when the difference exceeds ``2e-7``, ``"Your backward propagation works
        perfectly fine! difference = ..."`` otherwise; in yellow or green when
        standard output is a terminal.

    Returns
    -------
    float
        The relative difference between the analytic and approximated gradients.

    Raises
    ------
    InputError
        If a parameter or gradient is missing.

    Examples
    --------
    >>> from gradproof.course import backward_propagation_n
    >>> X, Y, parameters = gradient_check_n_test_case()
    >>> cost, cache = forward_propagation_n(X, Y, parameters)
    >>> gradients = backward_propagation_n(X, Y, cache)
    >>> difference = gradient_check_n(parameters, gradients, X, Y, print_msg=False)
    >>> print(f"{difference:.9f}")
    0.285093157
    """
    # Set-up variables; the functions called are those gradproof.course holds now
    # (Note [Rebinding the course's functions])
    parameters_values, _ = _public(dictionary_to_vector)(parameters)
    grad = _public(gradients_to_vector)(gradients)
    num_parameters = parameters_values.shape[0]
    J_plus = np.zeros((num_parameters, 1))
    J_minus = np.zeros((num_parameters, 1))
    gradapprox = np.zeros((num_parameters, 1))

    # Compute gradapprox
    for i in range(num_parameters):
        thetaplus = np.copy(parameters_values)
        thetaplus[i][0] = thetaplus[i][0] + epsilon
        J_plus[i], _ = _public(forward_propagation_n)(
            X, Y, _public(vector_to_dictionary)(thetaplus)
        )

        thetaminus = np.copy(parameters_values)
        thetaminus[i][0] = thetaminus[i][0] - epsilon
        J_minus[i], _ = _public(forward_propagation_n)(
            X, Y, _public(vector_to_dictionary)(thetaminus)
        )

        gradapprox[i] = (J_plus[i] - J_minus[i]) / (2 * epsilon)

    # Compare gradapprox to the backward propagation gradients
    numerator = np.linalg.norm(grad - gradapprox)
    denominator = np.linalg.norm(grad) + np.linalg.norm(gradapprox)
    difference = float(numerator / denominator)

    if print_msg:
        if difference > 2e-7:
            colour = _YELLOW
            message = "There is a mistake in the backward propagation! difference = "
        else:
            colour = _GREEN
            message = "Your backward propagation works perfectly fine! difference = "
        text = message + str(difference)
        print(colour + text + _RESET if sys.stdout.isatty() else text)
    return difference


def gradient_check_n_test_case() -> tuple[FloatArray, npt.NDArray[np.int64], dict[str, FloatArray]]:
    """Return the assignment's test case for :func:`gradient_check_n`.

    The numbers are those of the assignment, which seeds numpy's legacy global
    generator with 1 and draws X, W1, b1, W2, b2, W3, b3 in that order. The same
    stream comes from a private ``RandomState(1)``, so the caller's global random
    state is neither used nor changed.

    Returns
    -------
    X : numpy.ndarray of shape (4, 3)
        The input, one example per column.
    Y : numpy.ndarray of shape (3,)
        The labels ``[1, 1, 0]``.
    parameters : dict of str to numpy.ndarray
        ``"W1"`` (5, 4), ``"b1"`` (5, 1), ``"W2"`` (3, 5), ``"b2"`` (3, 1), ``"W3"``
        (1, 3) and ``"b3"`` (1, 1), in that order.

    Examples
    --------
    >>> X, Y, parameters = gradient_check_n_test_case()
    >>> print(f"{X[0, 0]:.6f}", Y)
    1.624345 [1 1 0]
    """
    # RandomState(1).randn draws exactly what np.random.seed(1); np.random.randn does,
    # without touching the global generator.
    rng = np.random.RandomState(1)
    X = rng.randn(4, 3)
    Y = np.array([1, 1, 0])
    W1 = rng.randn(5, 4)
    b1 = rng.randn(5, 1)
    W2 = rng.randn(3, 5)
    b2 = rng.randn(3, 1)
    W3 = rng.randn(1, 3)
    b3 = rng.randn(1, 1)
    parameters = {"W1": W1, "b1": b1, "W2": W2, "b2": b2, "W3": W3, "b3": b3}
    return X, Y, parameters
