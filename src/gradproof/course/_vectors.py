"""The course network's parameters and gradients as dictionaries and as one column vector."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from gradproof._typing import FloatArray
from gradproof.course._parameters import (
    _GRADIENT_KEYS,
    _N_PARAMETERS,
    _SHAPES,
    PARAMETER_KEYS,
    _require,
)
from gradproof.errors import InputError

__all__ = [
    "dictionary_to_vector",
    "gradients_to_vector",
    "parameter_gradients",
    "vector_to_dictionary",
]


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
    >>> from gradproof.course import gradient_check_n_test_case
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
    >>> from gradproof.course import (
    ...     backward_propagation_n_corrected,
    ...     forward_propagation_n,
    ...     gradient_check_n_test_case,
    ... )
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
    >>> from gradproof.course import (
    ...     backward_propagation_n_corrected,
    ...     forward_propagation_n,
    ...     gradient_check_n_test_case,
    ... )
    >>> X, Y, parameters = gradient_check_n_test_case()
    >>> cost, cache = forward_propagation_n(X, Y, parameters)
    >>> list(parameter_gradients(backward_propagation_n_corrected(X, Y, cache)))
    ['W1', 'b1', 'W2', 'b2', 'W3', 'b3']
    """
    return {
        key: _require(gradients, "d" + key, "gradients", _GRADIENT_KEYS) for key in PARAMETER_KEYS
    }
