"""Small numpy building blocks shared by the corpus's models (forward only)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from gradproof._typing import FloatArray

__all__ = ["log_softmax", "one_hot", "sigmoid", "softmax", "softplus"]


def sigmoid(z: FloatArray) -> FloatArray:
    """Return the logistic sigmoid ``1 / (1 + exp(-z))``, without overflow.

    Parameters
    ----------
    z : numpy.ndarray
        The input.

    Returns
    -------
    numpy.ndarray
        The sigmoid, elementwise, in the dtype of `z`.

    Examples
    --------
    >>> import numpy as np
    >>> print(sigmoid(np.array([0.0, -1000.0])))
    [0.5 0. ]
    """
    e = np.exp(-np.abs(z))
    s: FloatArray = np.where(z >= 0, 1 / (1 + e), e / (1 + e))
    return s


def softplus(z: FloatArray) -> FloatArray:
    """Return ``log(1 + exp(z))`` without overflow.

    Parameters
    ----------
    z : numpy.ndarray
        The input.

    Returns
    -------
    numpy.ndarray
        ``softplus(z)``, elementwise; its derivative is :func:`sigmoid`.

    Examples
    --------
    >>> import numpy as np
    >>> softplus(np.array([0.0, 1000.0])).round(6).tolist()
    [0.693147, 1000.0]
    """
    out: FloatArray = np.logaddexp(0, z)
    return out


def log_softmax(z: FloatArray, axis: int = -1) -> FloatArray:
    """Return ``log(softmax(z))`` along an axis, shifted by the maximum for stability.

    Parameters
    ----------
    z : numpy.ndarray
        The logits.
    axis : int, optional
        The axis of the classes (the last by default).

    Returns
    -------
    numpy.ndarray
        The log-probabilities, of the shape of `z`.

    Examples
    --------
    >>> import numpy as np
    >>> print(np.exp(log_softmax(np.array([0.0, 0.0]))))
    [0.5 0.5]
    """
    shifted = z - z.max(axis=axis, keepdims=True)
    out: FloatArray = shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))
    return out


def softmax(z: FloatArray, axis: int = -1) -> FloatArray:
    """Return the softmax of `z` along an axis.

    Parameters
    ----------
    z : numpy.ndarray
        The logits.
    axis : int, optional
        The axis of the classes (the last by default).

    Returns
    -------
    numpy.ndarray
        Probabilities summing to 1 along `axis`.

    Examples
    --------
    >>> import numpy as np
    >>> print(softmax(np.array([1.0, 1.0, 1.0, 1.0])))
    [0.25 0.25 0.25 0.25]
    """
    e = np.exp(z - z.max(axis=axis, keepdims=True))
    out: FloatArray = e / e.sum(axis=axis, keepdims=True)
    return out


def one_hot(labels: npt.NDArray[np.integer], n_classes: int) -> FloatArray:
    """Return the one-hot encoding of integer labels.

    Parameters
    ----------
    labels : numpy.ndarray of int, shape (m,)
        Class indices in ``[0, n_classes)``.
    n_classes : int
        The number of classes.

    Returns
    -------
    numpy.ndarray of shape (m, n_classes)
        1.0 at ``[i, labels[i]]``, 0.0 elsewhere.

    Examples
    --------
    >>> import numpy as np
    >>> print(one_hot(np.array([1, 0]), 3))
    [[0. 1. 0.]
     [1. 0. 0.]]
    """
    out: FloatArray = np.eye(n_classes)[labels]
    return out
