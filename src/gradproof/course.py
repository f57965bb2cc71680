"""The deeplearning.ai gradient-checking assignment, reproduced.

This module follows the classic gradient-checking exercise of the course
"Improving Deep Neural Networks" (deeplearning.ai, week 1) with the function
names, arguments and return values its students know, and with the same
arithmetic, so that the published figures come out:

* a one-dimensional check of ``J(theta) = theta * x``
  (:func:`forward_propagation`, :func:`backward_propagation`,
  :func:`gradient_check`), whose difference for ``x = 2, theta = 4`` is
  ``2.919335883291695e-10``;
* an N-dimensional check of a 3-layer network LINEAR -> RELU -> LINEAR -> RELU
  -> LINEAR -> SIGMOID with layer sizes 4 -> 5 -> 3 -> 1
  (:func:`forward_propagation_n`, :func:`gradient_check_n`, and the helpers
  :func:`dictionary_to_vector`, :func:`vector_to_dictionary`,
  :func:`gradients_to_vector`).

:func:`backward_propagation_n` is the backward pass *as the assignment ships
it*, with two planted bugs for the gradient check to find (difference
``0.285093156...`` on :func:`gradient_check_n_test_case`);
:func:`backward_propagation_n_corrected` has them fixed (difference about
``1.19e-7``).

None of the functions modifies its arguments.

Examples
--------
>>> from gradproof.course import (
...     backward_propagation_n_corrected,
...     forward_propagation_n,
...     gradient_check_n,
...     gradient_check_n_test_case,
... )
>>> X, Y, parameters = gradient_check_n_test_case()
>>> cost, cache = forward_propagation_n(X, Y, parameters)
>>> gradients = backward_propagation_n_corrected(X, Y, cache)
>>> difference = gradient_check_n(parameters, gradients, X, Y)  # doctest: +ELLIPSIS
Your backward propagation works perfectly fine! difference = 1.18...e-07
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt

from gradproof._typing import FloatArray
from gradproof.errors import InputError

__all__ = [
    "PARAMETER_KEYS",
    "backward_propagation",
    "backward_propagation_n",
    "backward_propagation_n_corrected",
    "dictionary_to_vector",
    "forward_propagation",
    "forward_propagation_n",
    "gradient_check",
    "gradient_check_n",
    "gradient_check_n_test_case",
    "gradients_to_vector",
    "parameter_gradients",
    "relu",
    "sigmoid",
    "vector_to_dictionary",
]

PARAMETER_KEYS: tuple[str, ...] = ("W1", "b1", "W2", "b2", "W3", "b3")
"""The parameter names of the course's 3-layer network, in vector order."""

_GRADIENT_KEYS: tuple[str, ...] = tuple("d" + key for key in PARAMETER_KEYS)
"""The gradient names matching :data:`PARAMETER_KEYS`, in vector order."""

_SHAPES: dict[str, tuple[int, int]] = {
    "W1": (5, 4),
    "b1": (5, 1),
    "W2": (3, 5),
    "b2": (3, 1),
    "W3": (1, 3),
    "b3": (1, 1),
}
"""The shapes of the course network's parameters (layer sizes 4 -> 5 -> 3 -> 1)."""

_N_PARAMETERS = sum(rows * cols for rows, cols in _SHAPES.values())
"""The number of entries of the course network's parameter vector (47)."""

_Cache: TypeAlias = tuple[FloatArray, ...]
"""``(Z1, A1, W1, b1, Z2, A2, W2, b2, Z3, A3, W3, b3)`` from :func:`forward_propagation_n`."""

_YELLOW = "\033[93m"
_GREEN = "\033[92m"
_RESET = "\033[0m"


# ---------------------------------------------------------------------------
# One-dimensional gradient checking
# ---------------------------------------------------------------------------


def forward_propagation(x: float, theta: float) -> float:
    """Compute the linear cost ``J = theta * x``.

    Parameters
    ----------
    x : float
        The input.
    theta : float
        The parameter.

    Returns
    -------
    float
        The cost ``J(theta) = theta * x``.

    Examples
    --------
    >>> forward_propagation(2.0, 4.0)
    8.0
    """
    J = theta * x
    return J


def backward_propagation(x: float, theta: float) -> float:
    """Compute the derivative of ``J = theta * x`` with respect to ``theta``.

    Parameters
    ----------
    x : float
        The input.
    theta : float
        The parameter (unused: the derivative of a linear function does not depend on it).

    Returns
    -------
    float
        ``dtheta = dJ/dtheta = x``.

    Examples
    --------
    >>> backward_propagation(2.0, 4.0)
    2.0
    """
    dtheta = x
    return dtheta


def gradient_check(x: float, theta: float, epsilon: float = 1e-7, print_msg: bool = True) -> float:
    """Check :func:`backward_propagation` against a centered difference.

    The gradient approximation is ``(J(theta + epsilon) - J(theta - epsilon)) /
    (2 * epsilon)`` and the returned difference is the relative distance
    ``|grad - gradapprox| / (|grad| + |gradapprox|)``.

    Parameters
    ----------
    x : float
        The input.
    theta : float
        The parameter at which the gradient is checked.
    epsilon : float, default 1e-7
        The step of the centered difference.
    print_msg : bool, default True
        Print ``"The gradient is correct!"`` when the difference is below ``1e-7``,
        ``"The gradient is wrong!"`` otherwise.

    Returns
    -------
    float
        The relative difference between the analytic and approximated gradients.

    Examples
    --------
    >>> difference = gradient_check(2.0, 4.0)
    The gradient is correct!
    >>> print(f"{difference:.10e}")
    2.9193358833e-10
    """
    thetaplus = theta + epsilon
    thetaminus = theta - epsilon
    J_plus = forward_propagation(x, thetaplus)
    J_minus = forward_propagation(x, thetaminus)
    gradapprox = (J_plus - J_minus) / (2 * epsilon)

    grad = backward_propagation(x, theta)

    numerator = np.linalg.norm(grad - gradapprox)
    denominator = np.linalg.norm(grad) + np.linalg.norm(gradapprox)
    difference = float(numerator / denominator)

    if print_msg:
        if difference < 1e-7:
            print("The gradient is correct!")
        else:
            print("The gradient is wrong!")
    return difference


# ---------------------------------------------------------------------------
# The 3-layer network
# ---------------------------------------------------------------------------


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


def _require(mapping: Mapping[str, Any], key: str, what: str, keys: tuple[str, ...]) -> Any:
    """Return ``mapping[key]``, raising a helpful :class:`InputError` when it is missing.

    Parameters
    ----------
    mapping : Mapping
        The dictionary passed by the caller.
    key : str
        The key to look up.
    what : str
        The argument's name, for the message (``"parameters"`` or ``"gradients"``).
    keys : tuple of str
        Every key the argument must have, for the message.

    Returns
    -------
    object
        ``mapping[key]``.

    Raises
    ------
    InputError
        If ``mapping`` is not a mapping or has no ``key``.
    """
    expected = ", ".join(repr(k) for k in keys)
    if not isinstance(mapping, Mapping):
        raise InputError(
            f"`{what}` is a {type(mapping).__name__}; expected a dict with the keys {expected} "
            "of the course's 3-layer network. Pass a dict such as the one returned by "
            "gradient_check_n_test_case()."
        )
    if key not in mapping:
        present = ", ".join(repr(k) for k in mapping) or "none"
        raise InputError(
            f"`{what}` has no key {key!r}; expected the keys {expected} of the course's "
            f"3-layer network (got: {present}). Add the {key!r} entry to `{what}`."
        )
    return mapping[key]


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

    # LINEAR -> RELU -> LINEAR -> RELU -> LINEAR -> SIGMOID
    Z1 = np.dot(W1, X) + b1
    A1 = relu(Z1)
    Z2 = np.dot(W2, A1) + b2
    A2 = relu(Z2)
    Z3 = np.dot(W3, A2) + b3
    A3 = sigmoid(Z3)

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
    >>> X, Y, parameters = gradient_check_n_test_case()
    >>> cost, cache = forward_propagation_n(X, Y, parameters)
    >>> gradients = backward_propagation_n_corrected(X, Y, cache)
    >>> gradients["dW2"].shape
    (3, 5)
    """
    return _backward(X, Y, cache, dW2_factor=1.0, db1_factor=1.0)


# ---------------------------------------------------------------------------
# Dictionaries <-> vectors
# ---------------------------------------------------------------------------


def _stack(mapping: Mapping[str, Any], keys: tuple[str, ...], what: str) -> FloatArray:
    """Concatenate ``mapping[key]`` for ``key`` in ``keys`` into a float64 column vector.

    Parameters
    ----------
    mapping : Mapping
        The caller's dictionary.
    keys : tuple of str
        The keys, in order.
    what : str
        The argument's name, for error messages.

    Returns
    -------
    numpy.ndarray of shape (n, 1)
        A new array (never a view of the caller's arrays).
    """
    columns = [
        np.reshape(np.asarray(_require(mapping, key, what, keys), dtype=np.float64), (-1, 1))
        for key in keys
    ]
    theta: FloatArray = np.concatenate(columns, axis=0)
    return theta


def dictionary_to_vector(parameters: Mapping[str, npt.ArrayLike]) -> tuple[FloatArray, list[str]]:
    """Flatten the network's parameters into one column vector.

    Parameters
    ----------
    parameters : dict
        ``"W1"``, ``"b1"``, ``"W2"``, ``"b2"``, ``"W3"`` and ``"b3"``; other keys are ignored.

    Returns
    -------
    theta : numpy.ndarray of shape (n, 1)
        The parameters, each reshaped to a column (row-major) and concatenated in the
        order of :data:`PARAMETER_KEYS`; a new float64 array.
    keys : list of str
        The name of the parameter each entry of ``theta`` comes from (length ``n``).

    Raises
    ------
    InputError
        If ``parameters`` is not a dict or lacks one of the keys.

    Examples
    --------
    >>> X, Y, parameters = gradient_check_n_test_case()
    >>> theta, keys = dictionary_to_vector(parameters)
    >>> theta.shape, keys[19], keys[20]
    ((47, 1), 'W1', 'b1')
    """
    theta = _stack(parameters, PARAMETER_KEYS, "parameters")
    keys: list[str] = []
    for key in PARAMETER_KEYS:
        keys += [key] * int(np.size(parameters[key]))
    return theta, keys


def vector_to_dictionary(theta: npt.ArrayLike) -> dict[str, FloatArray]:
    """Unflatten a 47-entry vector into the network's parameter dictionary.

    The inverse of :func:`dictionary_to_vector` for the course's network (layer sizes
    4 -> 5 -> 3 -> 1).

    Parameters
    ----------
    theta : array_like with 47 entries
        Usually of shape (47, 1), as returned by :func:`dictionary_to_vector`.

    Returns
    -------
    dict of str to numpy.ndarray
        ``"W1"`` (5, 4), ``"b1"`` (5, 1), ``"W2"`` (3, 5), ``"b2"`` (3, 1), ``"W3"``
        (1, 3) and ``"b3"`` (1, 1): new float64 arrays, so that modifying them never
        modifies ``theta``.

    Raises
    ------
    InputError
        If ``theta`` does not have 47 entries.

    Examples
    --------
    >>> import numpy as np
    >>> parameters = vector_to_dictionary(np.arange(47.0).reshape(-1, 1))
    >>> print(parameters["b3"])
    [[46.]]
    """
    flat = np.asarray(theta, dtype=np.float64).reshape(-1)
    if flat.size != _N_PARAMETERS:
        sizes = " + ".join(f"{key}{shape}" for key, shape in _SHAPES.items())
        raise InputError(
            f"`theta` has {flat.size} entries (shape {np.shape(theta)}); expected "
            f"{_N_PARAMETERS} = sizes of {sizes}, the course's 4 -> 5 -> 3 -> 1 network. "
            "Pass the vector returned by dictionary_to_vector(parameters)."
        )
    parameters: dict[str, FloatArray] = {}
    start = 0
    for key, shape in _SHAPES.items():
        stop = start + shape[0] * shape[1]
        parameters[key] = flat[start:stop].reshape(shape).copy()
        start = stop
    return parameters


def gradients_to_vector(gradients: Mapping[str, npt.ArrayLike]) -> FloatArray:
    """Flatten the network's gradients into one column vector.

    Parameters
    ----------
    gradients : dict
        ``"dW1"``, ``"db1"``, ``"dW2"``, ``"db2"``, ``"dW3"`` and ``"db3"``; other keys
        (``"dZ3"``, ``"dA2"``, ...) are ignored.

    Returns
    -------
    numpy.ndarray of shape (n, 1)
        The gradients, reshaped to columns and concatenated in that order, matching
        the vector of :func:`dictionary_to_vector`; a new float64 array.

    Raises
    ------
    InputError
        If ``gradients`` is not a dict or lacks one of the keys.

    Examples
    --------
    >>> X, Y, parameters = gradient_check_n_test_case()
    >>> cost, cache = forward_propagation_n(X, Y, parameters)
    >>> gradients_to_vector(backward_propagation_n_corrected(X, Y, cache)).shape
    (47, 1)
    """
    return _stack(gradients, _GRADIENT_KEYS, "gradients")


def parameter_gradients(gradients: Mapping[str, FloatArray]) -> dict[str, FloatArray]:
    """Key the network's gradients like its parameters.

    gradproof's general checker expects the gradients in the same structure as the
    parameters; this maps ``"dW1"`` to ``"W1"``, ..., ``"db3"`` to ``"b3"``.

    Parameters
    ----------
    gradients : dict
        As returned by :func:`backward_propagation_n` or
        :func:`backward_propagation_n_corrected`; keys other than ``"dW1"``,
        ``"db1"``, ..., ``"db3"`` are ignored.

    Returns
    -------
    dict of str to numpy.ndarray
        ``{"W1": gradients["dW1"], ..., "b3": gradients["db3"]}`` (the same arrays,
        not copies).

    Raises
    ------
    InputError
        If ``gradients`` is not a dict or lacks one of the keys.

    Examples
    --------
    >>> X, Y, parameters = gradient_check_n_test_case()
    >>> cost, cache = forward_propagation_n(X, Y, parameters)
    >>> list(parameter_gradients(backward_propagation_n_corrected(X, Y, cache)))
    ['W1', 'b1', 'W2', 'b2', 'W3', 'b3']
    """
    return {
        key: _require(gradients, "d" + key, "gradients", _GRADIENT_KEYS) for key in PARAMETER_KEYS
    }


# ---------------------------------------------------------------------------
# N-dimensional gradient checking
# ---------------------------------------------------------------------------


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
    >>> X, Y, parameters = gradient_check_n_test_case()
    >>> cost, cache = forward_propagation_n(X, Y, parameters)
    >>> gradients = backward_propagation_n(X, Y, cache)
    >>> difference = gradient_check_n(parameters, gradients, X, Y, print_msg=False)
    >>> print(f"{difference:.9f}")
    0.285093157
    """
    # Set-up variables
    parameters_values, _ = dictionary_to_vector(parameters)
    grad = gradients_to_vector(gradients)
    num_parameters = parameters_values.shape[0]
    J_plus = np.zeros((num_parameters, 1))
    J_minus = np.zeros((num_parameters, 1))
    gradapprox = np.zeros((num_parameters, 1))

    # Compute gradapprox
    for i in range(num_parameters):
        thetaplus = np.copy(parameters_values)
        thetaplus[i][0] = thetaplus[i][0] + epsilon
        J_plus[i], _ = forward_propagation_n(X, Y, vector_to_dictionary(thetaplus))

        thetaminus = np.copy(parameters_values)
        thetaminus[i][0] = thetaminus[i][0] - epsilon
        J_minus[i], _ = forward_propagation_n(X, Y, vector_to_dictionary(thetaminus))

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
