"""What judging coordinates works on and produces: the problem, verdict codes, entries.

A *coordinate problem* (:class:`CoordinateProblem`) is a scalar function of a flat
vector, a point, the analytic derivative along each coordinate and the error model of its
loss values; :class:`Entries` holds, per coordinate, the estimate, its error bar and the
verdict code that :mod:`gradproof.checking.sweep` and the rules beside it
(:mod:`~gradproof.checking.several_kinks`, :mod:`~gradproof.checking.domain_edge`,
:mod:`~gradproof.checking.systematic`) fill in.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from gradproof._typing import BoolArray, FlatFunction, FloatArray
from gradproof.engine.evaluator import LossEvaluator
from gradproof.numerics.finite_diff import Samples
from gradproof.numerics.tolerances import entry_tolerance

__all__ = [
    "INCONCLUSIVE",
    "KINK_GAP",
    "REASONS",
    "CoordinateProblem",
    "Entries",
    "SystematicFit",
    "unchecked_entries",
]

KINK_GAP = 1e-3
"""One-sided derivatives that differ by more than this fraction of their group's gradient scale
at the first step make an entry a kink suspect, re-measured even if it passed (see
:func:`_kink_suspects`). A smooth loss's gap is ``h |f''|``, some 1e-5 of the scale."""

COMPLEX_STEP = 1e-20
"""Relative step of the complex-step method: far below any round-off (Martins et al. 2003)."""

# Per-entry verdict codes, kept in one int8 array while judging.
PASS, FAIL, INCONCLUSIVE, UNCHECKED = 0, 1, 2, 3
# Why an entry is inconclusive.
REASON_NONE, REASON_NON_FINITE, REASON_KINK, REASON_NO_SAFE_STEP = 0, 1, 2, 3
REASON_DISCONTINUOUS, REASON_KINKS = 4, 5
REASONS = {
    REASON_NON_FINITE: "non_finite",
    REASON_KINK: "kink",
    REASON_NO_SAFE_STEP: "no_safe_step",
    REASON_DISCONTINUOUS: "discontinuous",
    REASON_KINKS: "several_kinks",
}

Sampler = Callable[..., Samples]
"""``sampler(fun, x, columns, *, indices=None) -> Samples``: an engine's ``sample``."""


@dataclass(frozen=True)
class CoordinateProblem:
    """Everything the pipeline needs to judge the coordinates of one flat function.

    Attributes
    ----------
    fun : callable ``fun(x) -> float``
        The loss as a function of the flat vector (a ``LossEvaluator`` or a
        directional probe function).
    x0 : ndarray of shape (n,)
        The point.
    f0 : float
        The loss at `x0`, in the precision the differences are taken in.
    analytic : ndarray of shape (n,)
        The analytic derivative along each coordinate.
    sampling : list of (slice, dtype)
        The dtype each span of the vector is rounded to (Note [Snapped steps]).
    h : ndarray of shape (n,)
        The first step of each coordinate.
    value_noise : ndarray of shape (n,)
        How far a loss value may be off, per coordinate.
    rtol : ndarray of shape (n,)
        Relative tolerance per coordinate.
    atol : float
        Absolute tolerance.
    method : str
        The finite-difference method (see :data:`gradproof.checking.check.METHODS`).
    groups : sequence of slice
        Coordinates that share a gradient scale (a parameter tensor), for the
        kink test.
    sampler : callable
        The engine's ``sample``.
    describe : callable ``describe(i) -> str``
        Names coordinate ``i`` in messages.
    extra_bar : ndarray of shape (n,), optional
        An error bar added to every estimate's (the rounding of a probe's
        points, see :mod:`gradproof.checking.probes`).
    evaluator : LossEvaluator, optional
        The plain evaluator, for the complex step (which runs serially).
    roundoff : ndarray of shape (n,), optional
        The relative rounding error of a loss value, per coordinate
        (``ROUNDOFF_FACTOR * eps``). When given, each coordinate's
        `value_noise` is raised to the rounding of the values actually
        differenced (Note [Rounding of the values differenced]).
    find_systematic : bool
        Whether to look for small systematic errors within `rtol` (Note [Small
        systematic errors]); off when the caller chose `rtol`.
    """

    fun: FlatFunction
    x0: FloatArray
    f0: float
    analytic: FloatArray
    sampling: list[tuple[slice, np.dtype[Any]]]
    h: FloatArray
    value_noise: FloatArray
    rtol: FloatArray
    atol: float
    method: str
    groups: Sequence[slice]
    sampler: Sampler
    describe: Callable[[int], str] = str
    extra_bar: FloatArray | None = None
    evaluator: LossEvaluator | None = None
    roundoff: FloatArray | None = None
    find_systematic: bool = True


@dataclass(frozen=True, slots=True)
class SystematicFit:
    """A tensor whose entries all deviate by one factor, far outside their error bars.

    Attributes
    ----------
    indices : ndarray of int
        The coordinates the factor was fitted on (the tensor's judged entries).
    flagged : ndarray of int
        The coordinates called wrong: those whose deviation exceeds their own
        error bar (all of `indices` if none does alone).
    factor : float
        ``analytic / numeric``, fitted.
    uncertainty : float
        The factor's error bar, from the entries' error bars.
    """

    indices: npt.NDArray[np.intp]
    flagged: npt.NDArray[np.intp]
    factor: float
    uncertainty: float

    def moved(self, positions: npt.NDArray[np.intp]) -> SystematicFit:
        """Return the fit with coordinate ``i`` renamed ``positions[i]`` (a subset's)."""
        return SystematicFit(
            indices=positions[self.indices],
            flagged=positions[self.flagged],
            factor=self.factor,
            uncertainty=self.uncertainty,
        )


@dataclass
class Entries:
    """Everything known about every coordinate while it is judged (mutable)."""

    analytic: FloatArray
    numeric: FloatArray
    error_bar: FloatArray
    measured: BoolArray
    rtol: FloatArray
    atol: float
    left: FloatArray
    right: FloatArray
    reason: npt.NDArray[np.int8]
    codes: npt.NDArray[np.int8]
    n_resolved: int = 0
    interrupted: bool = False
    direct_evals: int = 0
    notes: list[str] = field(default_factory=list)
    systematic: list[SystematicFit] = field(default_factory=list)

    def tolerance(self) -> FloatArray:
        """Return the largest acceptable ``|analytic - numeric|`` of every coordinate.

        Entries of a tensor with a systematic error (Note [Small systematic
        errors]) are held to their error bars alone.
        """
        tolerance = entry_tolerance(
            self.analytic, self.numeric, self.error_bar, rtol=self.rtol, atol=self.atol
        )
        for fit in self.systematic:
            tolerance[fit.flagged] = self.atol + self.error_bar[fit.flagged]
        return tolerance

    def judge(self) -> None:
        """Give every coordinate its verdict code from the numbers (kinks keep theirs)."""
        with np.errstate(invalid="ignore"):
            within = np.abs(self.analytic - self.numeric) <= self.tolerance()
        # A NaN or infinite analytic entry is never right: its tolerance (rtol times its own
        # size) would be infinite too, and accept it.
        within &= np.isfinite(self.analytic)
        codes = np.where(within, PASS, FAIL).astype(np.int8)
        # A loss that is not finite next to the point gives no estimate to compare with.
        non_finite = ~np.isfinite(self.numeric) & (self.reason == REASON_NONE)
        self.reason[non_finite] = REASON_NON_FINITE
        codes[self.reason == REASON_NON_FINITE] = INCONCLUSIVE
        codes[self.reason >= REASON_KINK] = self.codes[self.reason >= REASON_KINK]
        for fit in self.systematic:
            codes[fit.flagged] = FAIL
        codes[~self.measured] = UNCHECKED
        self.codes = codes


def unchecked_entries(analytic: FloatArray, rtol: FloatArray, atol: float) -> Entries:
    """Return entries of which none has been measured yet."""
    n = analytic.size
    return Entries(
        analytic=analytic,
        numeric=np.full(n, np.nan),
        error_bar=np.full(n, np.nan),
        measured=np.zeros(n, dtype=bool),
        rtol=rtol,
        atol=atol,
        left=np.full(n, np.nan),
        right=np.full(n, np.nan),
        reason=np.zeros(n, dtype=np.int8),
        codes=np.full(n, UNCHECKED, dtype=np.int8),
    )


@dataclass(frozen=True)
class _CentralLevel:
    """The ``x +- h`` samples that the kink test starts from."""

    plus: FloatArray
    minus: FloatArray
    f_plus: FloatArray
    f_minus: FloatArray
    interrupted: bool = False
