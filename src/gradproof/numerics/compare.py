"""Summaries of the disagreement between an analytic and a numerical gradient."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["relative_difference", "scaled_norm"]


def relative_difference(analytic: npt.ArrayLike, numeric: npt.ArrayLike) -> float:
    """Return the classic assignment's relative difference of two gradients.

    Parameters
    ----------
    analytic, numeric : array_like
        Two gradients of the same shape.

    Returns
    -------
    float
        ``||analytic - numeric|| / (||analytic|| + ||numeric||)`` with Euclidean
        norms: 0 when they agree, 1 when one is zero or they point in opposite
        directions. Two zero gradients give 0.

    Examples
    --------
    >>> relative_difference([2.0, 0.0], [1.0, 0.0])
    0.3333333333333333
    """
    a = np.asarray(analytic, dtype=np.float64)
    n = np.asarray(numeric, dtype=np.float64)
    # The ratio is scale-free: rescale first so that squares neither underflow (gradients
    # near 1e-160) nor overflow (near 1e160) inside the norms.
    scale = float(max(np.max(np.abs(a), initial=0.0), np.max(np.abs(n), initial=0.0)))
    if scale == 0.0:
        return 0.0
    if not np.isfinite(scale):
        return float("nan")
    a, n = a / scale, n / scale
    return float(np.linalg.norm(a - n)) / float(np.linalg.norm(a) + np.linalg.norm(n))


def scaled_norm(values: npt.ArrayLike) -> float:
    """Return the 2-norm of `values` without overflow or underflow in its squares.

    A wrong gradient entry of 1e200, or loss values near 1e300, would make
    ``sqrt(v @ v)`` infinite; the values are divided by their largest
    magnitude first. NaN or infinite values give a non-finite norm.

    Examples
    --------
    >>> round(scaled_norm([3e200, 4e200]) / 1e200, 12), scaled_norm([0.0, 0.0])
    (5.0, 0.0)
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    with np.errstate(invalid="ignore"):
        scale = float(np.max(np.abs(v), initial=0.0))
    if scale == 0.0 or not np.isfinite(scale):
        return scale
    return scale * float(np.sqrt(np.dot(v / scale, v / scale)))
