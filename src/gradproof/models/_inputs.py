"""Validation of a network's arguments, shared by its loss, gradients and predictions."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from gradproof._typing import FloatArray
from gradproof.errors import InputError

__all__ = ["examples", "features", "require_params"]


def require_params(params: Mapping[str, Any], sizes: tuple[int, ...]) -> None:
    """Raise :class:`InputError` unless `params` has every ``W<l>``, ``b<l>``, correctly shaped."""
    names = ", ".join(f"W{layer}, b{layer}" for layer in range(1, len(sizes)))
    for layer in range(1, len(sizes)):
        for name, shape in (
            (f"W{layer}", (sizes[layer], sizes[layer - 1])),
            (f"b{layer}", (sizes[layer], 1)),
        ):
            if name not in params:
                raise InputError(
                    f"`params` has no {name!r}; a network with sizes={sizes} needs {names}. "
                    "Use `net.init_params()`."
                )
            if np.shape(params[name]) != shape:
                raise InputError(
                    f"`params[{name!r}]` has shape {np.shape(params[name])}; expected {shape} "
                    f"for sizes={sizes}."
                )


def features(X: npt.ArrayLike, n_features: int) -> FloatArray:
    """Return `X` as float64 with one example per *column* (Note [Layout] of the network)."""
    Xa = np.asarray(X, dtype=np.float64)
    if Xa.ndim != 2 or Xa.shape[1] != n_features:
        raise InputError(
            f"`X` has shape {Xa.shape}; expected (m, {n_features}): one example per row with "
            f"the network's {n_features} features."
        )
    return Xa.T


def examples(
    params: Mapping[str, Any],
    sizes: tuple[int, ...],
    X: npt.ArrayLike,
    y: npt.ArrayLike,
    sample_weight: npt.ArrayLike | None,
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Validate a loss's arguments; return ``X^T``, the labels and the weights, float64."""
    require_params(params, sizes)
    Xt = features(X, sizes[0])
    m = Xt.shape[1]
    labels = np.asarray(y, dtype=np.float64)
    if labels.shape != (m,):
        raise InputError(f"`y` has shape {labels.shape}; expected ({m},), one label per row.")
    if not np.all((labels == 0) | (labels == 1)):
        raise InputError("`y` must hold only 0 and 1 (1 = fraud); convert the labels first.")
    if sample_weight is None:
        return Xt, labels, np.ones(m)
    weights = np.asarray(sample_weight, dtype=np.float64)
    if weights.shape != (m,) or not np.all(weights >= 0):
        raise InputError(
            f"`sample_weight` must be {m} non-negative numbers, one per row of `X`; got shape "
            f"{weights.shape}."
        )
    return Xt, labels, weights
