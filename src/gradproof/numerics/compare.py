"""Summaries of the disagreement between an analytic and a numerical gradient."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["relative_difference"]


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
