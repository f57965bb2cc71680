"""Central finite differences of a scalar function of a flat vector, one coordinate at a time.

This is the numerical core: it knows nothing of parameter names, tolerances
or verdicts, only of a function ``fun(x) -> float`` and the points to
evaluate it at (see :mod:`gradproof.steps`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from gradproof._typing import BoolArray, FlatFunction, FloatArray
from gradproof.steps import CentralPoints

__all__ = ["CentralDifferences", "central_differences", "richardson"]


@dataclass(frozen=True, slots=True)
class CentralDifferences:
    """Central-difference estimates of a gradient, with what they were made from.

    Attributes
    ----------
    derivative : ndarray of shape (n,), float64
        ``(f(x + h e_i) - f(x - h e_i)) / width_i``; NaN where not measured
        or where a loss value was not finite.
    f_plus, f_minus : ndarray of shape (n,), float64
        The loss values at the perturbed points (NaN where not measured).
    measured : ndarray of shape (n,), bool
        Which coordinates were evaluated (all but those skipped by an interrupt).
    n_evals : int
        How many times `fun` was called.
    interrupted : bool
        Whether a ``KeyboardInterrupt`` cut the sweep short.
    """

    derivative: FloatArray
    f_plus: FloatArray
    f_minus: FloatArray
    measured: BoolArray
    n_evals: int
    interrupted: bool


def central_differences(
    fun: FlatFunction,
    x: FloatArray,
    points: CentralPoints,
    *,
    indices: npt.NDArray[np.intp] | None = None,
) -> CentralDifferences:
    """Estimate partial derivatives of `fun` at `x` by central differences.

    Parameters
    ----------
    fun : callable ``fun(x) -> float``
        The scalar function of a flat float64 vector. It receives one work
        vector, perturbed in one coordinate at a time; it must not keep it.
    x : ndarray of shape (n,), float64
        The point. It is not modified.
    points : CentralPoints
        The perturbed values of every coordinate, from :func:`~gradproof.steps.central_points`.
    indices : ndarray of int, optional
        The coordinates to estimate, in order; all of them by default.

    Returns
    -------
    CentralDifferences
        Estimates for the measured coordinates, NaN elsewhere. If the sweep
        is interrupted with Ctrl-C, what was measured until then is returned
        with ``interrupted=True``.

    Notes
    -----
    Costs two evaluations per coordinate. Each evaluation sees `x` with a
    single coordinate moved, which is then restored exactly.

    Examples
    --------
    >>> import numpy as np
    >>> from gradproof.steps import central_points
    >>> x = np.array([1.0, 2.0])
    >>> pts = central_points(x, [(slice(0, 2), np.dtype(np.float64))])
    >>> d = central_differences(lambda v: float(v[0] ** 2 + 3 * v[1]), x, pts)
    >>> np.round(d.derivative, 6)
    array([2., 3.])
    """
    n = x.size
    order = np.arange(n) if indices is None else np.asarray(indices, dtype=np.intp)
    f_plus = np.full(n, np.nan)
    f_minus = np.full(n, np.nan)
    measured = np.zeros(n, dtype=bool)
    work = x.copy()
    n_evals = 0
    interrupted = False
    i = 0
    try:
        for i in order:
            work[i] = points.plus[i]
            n_evals += 1
            value_plus = fun(work)
            work[i] = points.minus[i]
            n_evals += 1
            value_minus = fun(work)
            work[i] = x[i]
            f_plus[i], f_minus[i] = value_plus, value_minus
            measured[i] = True
    except KeyboardInterrupt:
        interrupted = True
        work[i] = x[i]
    with np.errstate(invalid="ignore"):
        derivative = (f_plus - f_minus) / points.width
    # An infinite loss on either side gives no estimate, even when the quotient is finite-looking.
    derivative[~(np.isfinite(f_plus) & np.isfinite(f_minus))] = np.nan
    return CentralDifferences(
        derivative=derivative,
        f_plus=f_plus,
        f_minus=f_minus,
        measured=measured,
        n_evals=n_evals,
        interrupted=interrupted,
    )


def richardson(coarse: FloatArray, fine: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Combine central differences at steps ``h`` and ``h/2`` into a fourth-order estimate.

    Parameters
    ----------
    coarse, fine : ndarray
        Central differences at step ``h`` and ``h/2``.

    Returns
    -------
    estimate : ndarray
        ``(4 * fine - coarse) / 3``, whose ``h**2`` error term cancels.
    error : ndarray
        ``|fine - coarse|``: the truncation error of `coarse` is about
        ``4/3`` of it and that of `fine` a third, so it bounds the error of the
        estimate generously while the ``h**4`` term is small.

    Examples
    --------
    >>> import numpy as np
    >>> h = 1e-2
    >>> d = lambda s: (np.exp(s) - np.exp(-s)) / (2 * s)  # derivative of exp at 0 is 1
    >>> est, err = richardson(np.array(d(h)), np.array(d(h / 2)))
    >>> bool(abs(est - 1) < 1e-9 and err > abs(est - 1))
    True
    """
    return (4.0 * fine - coarse) / 3.0, np.abs(fine - coarse)
