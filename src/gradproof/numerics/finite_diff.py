"""Finite differences of a scalar function of a flat vector, one coordinate at a time.

This is the numerical core: it knows nothing of parameter names, tolerances
or verdicts, only of a function ``fun(x) -> float`` and the points to
evaluate it at (see :mod:`gradproof.numerics.steps`). :func:`sample` evaluates the
function with one coordinate moved at a time; the stencils in :data:`STENCILS`
turn those samples into derivatives.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from gradproof._typing import BoolArray, FlatFunction, FloatArray
from gradproof.numerics.steps import CentralPoints

__all__ = [
    "STENCILS",
    "CentralDifferences",
    "Samples",
    "Stencil",
    "central_differences",
    "richardson",
    "sample",
    "stencil_derivative",
]


@dataclass(frozen=True, slots=True)
class Samples:
    """Loss values at points that move one coordinate at a time.

    Attributes
    ----------
    values : ndarray of shape (k, n), float64
        ``values[j, i]`` is the loss with coordinate ``i`` set to
        ``columns[j][i]``; NaN where not measured.
    measured : ndarray of shape (n,), bool
        Which coordinates have all their ``k`` values.
    n_evals : int
        How many times the function was called.
    interrupted : bool
        Whether the sampling stopped before every coordinate was measured
        (see `stop`).
    stop : {None, "interrupt", "deadline", "error", "lost"}
        Why it stopped early: Ctrl-C, a deadline passed, the function raised
        (`error` holds the exception), or a worker process was lost and could
        not be replaced (`error` holds a :class:`~gradproof.errors.WorkerLostError`).
        None when every coordinate was measured.
    error : BaseException, optional
        The exception that stopped the sampling, to be raised by the caller
        once it has kept what was measured.
    """

    values: FloatArray
    measured: BoolArray
    n_evals: int
    interrupted: bool
    stop: str | None = None
    error: BaseException | None = None


def sample(
    fun: FlatFunction,
    x: FloatArray,
    columns: tuple[FloatArray, ...],
    *,
    indices: npt.NDArray[np.intp] | None = None,
) -> Samples:
    """Evaluate `fun` with each coordinate in turn set to each of its given values.

    Parameters
    ----------
    fun : callable ``fun(x) -> float``
        The scalar function of a flat float64 vector. It receives one work
        vector, changed in one coordinate at a time; it must not keep it.
    x : ndarray of shape (n,), float64
        The point. It is not modified.
    columns : tuple of ndarray of shape (n,)
        For each of ``k`` offsets, the value every coordinate takes there
        (from :func:`gradproof.numerics.steps.offset_points`).
    indices : ndarray of int, optional
        The coordinates to sample, in order; all of them by default.

    Returns
    -------
    Samples
        The ``k`` loss values of every sampled coordinate. If Ctrl-C
        interrupts, what was complete until then is returned with
        ``interrupted=True``; the work vector is always restored.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.array([1.0, 2.0])
    >>> s = sample(lambda v: float(v @ v), x, (x - 0.5, x + 0.5))
    >>> s.values  # row j: coordinate i moved to columns[j][i]
    array([[4.25, 3.25],
           [6.25, 7.25]])
    """
    n = x.size
    order = np.arange(n) if indices is None else np.asarray(indices, dtype=np.intp)
    values = np.full((len(columns), n), np.nan)
    measured = np.zeros(n, dtype=bool)
    work = x.copy()
    n_evals = 0
    interrupted = False
    i = 0
    try:
        for i in order.tolist():  # Python ints index numpy arrays fastest
            for j, column in enumerate(columns):
                work[i] = column[i]
                n_evals += 1
                values[j, i] = fun(work)
            work[i] = x[i]
            measured[i] = True
    except KeyboardInterrupt:
        interrupted = True
        work[i] = x[i]
        values[:, i] = np.nan  # a coordinate counts only with all of its values
    return Samples(values=values, measured=measured, n_evals=n_evals, interrupted=interrupted)


@dataclass(frozen=True, slots=True)
class Stencil:
    """A finite-difference rule for a first derivative.

    Attributes
    ----------
    name : str
        ``"forward"``, ``"backward"``, ``"central"`` or ``"central4"``.
    offsets : tuple of float
        Where the rule samples, in units of the step (0 is the point itself,
        whose value is known and never re-evaluated).
    weights : tuple of float
        ``f'(x) ~ sum(w * f(x + o * h)) / h`` over the offsets.
    order : int
        The truncation error is ``O(h ** order)``.
    """

    name: str
    offsets: tuple[float, ...]
    weights: tuple[float, ...]
    order: int

    @property
    def sampled_offsets(self) -> tuple[float, ...]:
        """The offsets that cost an evaluation (all but 0)."""
        return tuple(o for o in self.offsets if o != 0)


STENCILS: dict[str, Stencil] = {
    "forward": Stencil("forward", (0.0, 1.0), (-1.0, 1.0), 1),
    "backward": Stencil("backward", (-1.0, 0.0), (-1.0, 1.0), 1),
    "central": Stencil("central", (-1.0, 1.0), (-0.5, 0.5), 2),
    "central4": Stencil("central4", (-2.0, -1.0, 1.0, 2.0), (1 / 12, -8 / 12, 8 / 12, -1 / 12), 4),
}
"""The first-derivative rules, by name."""


def stencil_derivative(
    stencil: Stencil, x: FloatArray, f0: float, columns: tuple[FloatArray, ...], values: FloatArray
) -> FloatArray:
    """Combine samples into derivative estimates with a stencil.

    Parameters
    ----------
    stencil : Stencil
        The rule.
    x : ndarray of shape (n,)
        The point.
    f0 : float
        The function's value at `x`.
    columns : tuple of ndarray of shape (n,)
        The sampled coordinate values, one per sampled offset of the stencil.
    values : ndarray of shape (k, n)
        The function's values there (:attr:`Samples.values`).

    Returns
    -------
    ndarray of shape (n,)
        The estimates; NaN where a value is missing or not finite.

    Notes
    -----
    Two-point rules divide by the exact distance between their (rounded)
    points (Note [Snapped steps] in :mod:`gradproof.numerics.steps`). The five-point
    rule uses the mean spacing of its outer points, whose rounding changes
    the estimate by a relative ``eps * |x| / h``, far below its accuracy.
    """
    table = dict(zip(stencil.sampled_offsets, values, strict=True))
    points = dict(zip(stencil.sampled_offsets, columns, strict=True))
    table[0.0] = np.full_like(x, f0)
    points[0.0] = x
    with np.errstate(invalid="ignore", divide="ignore"):
        if len(stencil.offsets) == 2:
            lo, hi = stencil.offsets
            derivative = (table[hi] - table[lo]) / (points[hi] - points[lo])
        else:
            lo, hi = min(stencil.offsets), max(stencil.offsets)
            h = (points[hi] - points[lo]) / (hi - lo)
            derivative = (
                sum(
                    (w * table[o] for o, w in zip(stencil.offsets, stencil.weights, strict=True)),
                    start=np.zeros_like(x),
                )
                / h
            )
    finite = np.all(np.isfinite(values), axis=0) & np.isfinite(f0)
    derivative[~finite] = np.nan
    return np.asarray(derivative, dtype=np.float64)


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
        The perturbed values of every coordinate, from
        :func:`~gradproof.numerics.steps.central_points`.
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
    >>> from gradproof.numerics.steps import central_points
    >>> x = np.array([1.0, 2.0])
    >>> pts = central_points(x, [(slice(0, 2), np.dtype(np.float64))])
    >>> d = central_differences(lambda v: float(v[0] ** 2 + 3 * v[1]), x, pts)
    >>> np.round(d.derivative, 6)
    array([2., 3.])
    """
    samples = sample(fun, x, (points.plus, points.minus), indices=indices)
    f_plus, f_minus = samples.values
    with np.errstate(invalid="ignore"):
        derivative = (f_plus - f_minus) / points.width
    # An infinite loss on either side gives no estimate, even when the quotient looks finite.
    derivative[~(np.isfinite(f_plus) & np.isfinite(f_minus))] = np.nan
    return CentralDifferences(
        derivative=derivative,
        f_plus=f_plus,
        f_minus=f_minus,
        measured=samples.measured,
        n_evals=samples.n_evals,
        interrupted=samples.interrupted,
    )


def richardson(
    coarse: FloatArray, fine: FloatArray, *, order: int = 2, ratio: float = 2.0
) -> tuple[FloatArray, FloatArray]:
    """Combine estimates at steps ``h`` and ``h / ratio`` to cancel their leading error term.

    Parameters
    ----------
    coarse, fine : ndarray
        Estimates at step ``h`` and ``h / ratio``.
    order : int, optional
        Order of the rule: its error is ``c * h ** order + ...``. 2 for central
        differences (the default), 1 for forward and backward ones.
    ratio : float, optional
        How much smaller the fine step is; 2 by default.

    Returns
    -------
    estimate : ndarray
        ``fine + (fine - coarse) / (ratio ** order - 1)``.
    error : ndarray
        ``|fine - coarse|``: the error of `coarse` is about
        ``ratio ** order / (ratio ** order - 1)`` times it and that of `fine`
        ``1 / (ratio ** order - 1)`` times it, so it bounds the error of the
        estimate generously while the next error term is small.

    Examples
    --------
    >>> import numpy as np
    >>> h = 1e-2
    >>> d = lambda s: (np.exp(s) - np.exp(-s)) / (2 * s)  # derivative of exp at 0 is 1
    >>> est, err = richardson(np.array(d(h)), np.array(d(h / 2)))
    >>> bool(abs(est - 1) < 1e-9 and err > abs(est - 1))
    True
    """
    gain = ratio**order - 1.0
    return fine + (fine - coarse) / gain, np.abs(fine - coarse)
