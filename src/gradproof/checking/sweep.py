"""Judge coordinates one at a time: first estimates, kink suspects, re-measurement.

A *coordinate problem* is a scalar function of a flat vector, a point, the
analytic derivative along each coordinate and the error model of its loss
values. The coordinates are a model's parameter entries for a full or
sampled sweep, or the step lengths along random directions for a directional
probe (:mod:`gradproof.checking.probes`): the same pipeline judges both (Note
[Verdict pipeline] in :mod:`gradproof.checking.check`, steps 4 and 5).

Every evaluation goes through the problem's engine
(:mod:`gradproof.engine.execution`), so a sweep runs serially, batched, in a
process pool or on a cluster with identical results.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from gradproof._typing import BoolArray, FlatFunction, FloatArray
from gradproof._words import counted, noun
from gradproof.engine.evaluator import LossEvaluator
from gradproof.errors import InputError, UserCodeError
from gradproof.numerics.finite_diff import STENCILS, Samples, richardson, stencil_derivative
from gradproof.numerics.kinks import DISCONTINUOUS, KINK, SMOOTH, UNRESOLVED, resolve_entries
from gradproof.numerics.steps import machine_epsilon, offset_points, step_sizes
from gradproof.numerics.tolerances import entry_tolerance

__all__ = [
    "INCONCLUSIVE",
    "KINK_GAP",
    "REASONS",
    "CoordinateProblem",
    "Entries",
    "judge_coordinates",
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


Review = Callable[
    [CoordinateProblem, "Entries", "_CentralLevel | None", BoolArray, npt.NDArray[np.intp]],
    tuple[CoordinateProblem, "_CentralLevel | None", npt.NDArray[np.intp]],
]
"""``review(problem, entries, level0, wanted, doubtful) -> (problem, level0, doubtful)``: a hook
between the first estimates and their re-measurement (:mod:`gradproof.checking.remeasure`)."""


def judge_coordinates(
    problem: CoordinateProblem,
    indices: npt.NDArray[np.intp] | None = None,
    *,
    resolve: bool = True,
    review: Review | None = None,
) -> Entries:
    """Estimate, judge and, where doubtful, re-measure the given coordinates.

    Parameters
    ----------
    problem : CoordinateProblem
        The function, point and error model.
    indices : ndarray of int, optional
        The coordinates to judge; all of them by default. The others stay
        unchecked.
    resolve : bool, optional
        Re-measure doubtful coordinates at shrinking steps (default). Without
        it, the first estimates are judged as they are: cheaper, for
        measurements that only guide a search (:mod:`gradproof.checking.directional`).
    review : callable, optional
        Called with the first estimates and the doubtful coordinates before
        they are re-measured; it may measure the loss's noise and re-take
        some estimates, and returns the coordinates to re-measure
        (:func:`gradproof.checking.remeasure.review`).

    Returns
    -------
    Entries
        Per coordinate: the numeric estimate, its error bar, the verdict code
        and, at kinks, the one-sided derivatives. ``interrupted`` is set if
        Ctrl-C cut the work short (what was measured is kept).
    """
    entries, level0, problem = _first_estimates(problem, indices)
    entries.judge()
    wanted = np.zeros(problem.x0.size, dtype=bool)
    wanted[np.arange(problem.x0.size) if indices is None else indices] = True
    entries.interrupted = bool(np.any(wanted & ~entries.measured))
    if not resolve:
        return entries
    blank = np.flatnonzero(entries.measured & ~np.isfinite(entries.numeric))
    if blank.size and not entries.interrupted and np.isfinite(problem.f0):
        # An estimate that is NaN because the loss is finite on one side only (Note [The edge
        # of the domain]); one-sided methods first sample both sides to see which.
        level = level0 if level0 is not None else _central_pair(problem, blank)
        edge = blank[_one_side_finite(problem, level, blank) != 0]
        if edge.size:
            _edge_estimates(problem, entries, edge, level)
            entries.n_resolved += edge.size
    doubtful = _doubtful(problem, entries, level0, wanted)
    if review is not None and not entries.interrupted:
        problem, level0, doubtful = review(problem, entries, level0, wanted, doubtful)
    if doubtful.size and not entries.interrupted:
        _resolve(problem, entries, doubtful, level0)
    if not entries.interrupted and problem.method != "complex" and problem.find_systematic:
        _find_systematic(problem, entries, wanted)
    return entries


def _doubtful(
    problem: CoordinateProblem,
    entries: Entries,
    level0: _CentralLevel | None,
    wanted: BoolArray,
) -> npt.NDArray[np.intp]:
    """Return the coordinates a re-measurement could change: failures and kink suspects."""
    # A non-finite analytic entry next to a finite estimate is wrong whatever the step: it
    # is not re-measured.
    settled = ~np.isfinite(entries.analytic) & np.isfinite(entries.numeric)
    return np.flatnonzero(
        ((entries.codes == FAIL) & ~settled) | _kink_suspects(problem, entries, level0, wanted)
    )


# -- first estimates ------------------------------------------------------------------------------
@dataclass(frozen=True)
class _CentralLevel:
    """The ``x +- h`` samples that the kink test starts from."""

    plus: FloatArray
    minus: FloatArray
    f_plus: FloatArray
    f_minus: FloatArray
    interrupted: bool = False


def _central_pair(problem: CoordinateProblem, indices: npt.NDArray[np.intp]) -> _CentralLevel:
    """Sample ``x +- h`` for the given coordinates (one-sided methods have only one side)."""
    p = problem
    minus, plus = offset_points(p.x0, p.sampling, p.h, (-1.0, 1.0))
    s = p.sampler(p.fun, p.x0, (plus, minus), indices=indices)
    return _CentralLevel(plus, minus, s.values[0], s.values[1], s.interrupted)


def _new_entries(
    problem: CoordinateProblem, numeric: FloatArray, bar: FloatArray, measured: BoolArray
) -> Entries:
    n = problem.x0.size
    if problem.extra_bar is not None:
        bar = bar + problem.extra_bar
    return Entries(
        analytic=problem.analytic,
        numeric=numeric,
        error_bar=bar,
        measured=measured,
        rtol=problem.rtol,
        atol=problem.atol,
        left=np.full(n, np.nan),
        right=np.full(n, np.nan),
        reason=np.zeros(n, dtype=np.int8),
        codes=np.zeros(n, dtype=np.int8),
    )


def _with_roundoff_of(problem: CoordinateProblem, values: FloatArray) -> CoordinateProblem:
    """Raise each coordinate's value noise to the rounding of the values it differences.

    Note [Rounding of the values differenced]
        A loss value is trusted to ``ROUNDOFF_FACTOR * eps`` of its own size,
        and the values a difference subtracts can be far larger than the loss
        at the point: ``sum(x**2)`` at ``x = 1e-20`` is 3e-40, its neighbours at
        ``x +- h`` some 1e-11. Scaling the error bar by ``|f(x)|`` alone would
        make it 1e29 times too small there and call a right gradient wrong.
    """
    if problem.roundoff is None:
        return problem
    with np.errstate(invalid="ignore"):
        largest = np.nanmax(np.abs(values), axis=0, initial=0.0)
    noise = np.maximum(problem.value_noise, problem.roundoff * np.nan_to_num(largest))
    return dataclasses.replace(problem, value_noise=noise)


def _first_estimates(
    problem: CoordinateProblem, indices: npt.NDArray[np.intp] | None
) -> tuple[Entries, _CentralLevel | None, CoordinateProblem]:
    """Take every coordinate's first estimate with the chosen method, and its error bar.

    Also returns the problem with its value noise raised to the rounding of
    the values sampled (Note [Rounding of the values differenced]).
    """
    p = problem
    x0, h, method = p.x0, p.h, p.method
    level0: _CentralLevel | None = None
    if method == "complex":
        entries, level = _complex_step(problem, indices)
        return entries, level, problem
    if method == "richardson":
        minus, plus = offset_points(x0, p.sampling, h, (-1.0, 1.0), describe=p.describe)
        half_minus, half_plus = offset_points(
            x0, p.sampling, h / 2, (-1.0, 1.0), describe=p.describe
        )
        s = p.sampler(p.fun, x0, (plus, minus, half_plus, half_minus), indices=indices)
        p = _with_roundoff_of(p, s.values)
        with np.errstate(invalid="ignore", divide="ignore"):
            coarse = (s.values[0] - s.values[1]) / (plus - minus)
            fine = (s.values[2] - s.values[3]) / (half_plus - half_minus)
        numeric, truncation = richardson(coarse, fine)
        numeric[~np.all(np.isfinite(s.values), axis=0)] = np.nan
        error_bar = truncation + 2 * p.value_noise / (half_plus - half_minus)
        level0 = _CentralLevel(plus, minus, s.values[0], s.values[1])
        return _new_entries(p, numeric, error_bar, s.measured), level0, p
    stencil = STENCILS[method]
    columns = offset_points(x0, p.sampling, h, stencil.sampled_offsets, describe=p.describe)
    s = p.sampler(p.fun, x0, columns, indices=indices)
    p = _with_roundoff_of(p, s.values)
    numeric = stencil_derivative(stencil, x0, p.f0, columns, s.values)
    weight = sum(abs(w) for w in stencil.weights)
    error_bar = weight * p.value_noise / h
    if method in ("central", "central4"):
        by_offset = dict(
            zip(stencil.sampled_offsets, zip(columns, s.values, strict=True), strict=True)
        )
        (plus, f_plus), (minus, f_minus) = by_offset[1.0], by_offset[-1.0]
        level0 = _CentralLevel(plus, minus, f_plus, f_minus)
    return _new_entries(p, numeric, error_bar, s.measured), level0, p


def _complex_step(
    problem: CoordinateProblem, indices: npt.NDArray[np.intp] | None
) -> tuple[Entries, _CentralLevel]:
    """Complex-step derivatives, cross-checked entry by entry against central differences."""
    p = problem
    if p.evaluator is None:
        raise InputError("`method='complex'` checks parameter entries one by one; use mode='full'.")
    x0 = p.x0
    order = np.arange(x0.size) if indices is None else np.asarray(indices, dtype=np.intp)
    h = COMPLEX_STEP * np.maximum(1.0, np.abs(x0))
    work = x0.astype(np.complex128)
    derivative = np.full(x0.size, np.nan)
    done: list[int] = []
    try:
        with warnings.catch_warnings():
            # A loss that drops the imaginary part (float(), np.real) is reported below, by
            # comparison with central differences; numpy's warning about it would only repeat that.
            warnings.simplefilter("ignore", np.exceptions.ComplexWarning)
            for i in order:
                work[i] = x0[i] + 1j * h[i]
                try:
                    raw = p.evaluator.call(work, where="at a complex perturbed point")
                except UserCodeError as exc:
                    raise InputError(
                        "`method='complex'` needs a loss that accepts complex parameters, but "
                        f"`loss` raised {type(exc.__cause__).__name__} on them ({exc.__cause__}). "
                        "Use `method='central'` (the default), or write the loss with complex-safe "
                        "operations."
                    ) from exc
                finally:
                    work[i] = x0[i]
                derivative[i] = float(np.imag(np.asarray(raw).reshape(()))) / h[i]
                done.append(int(i))
    except KeyboardInterrupt:
        pass
    central_h = step_sizes(x0, p.sampling)
    minus, plus = offset_points(x0, p.sampling, central_h, (-1.0, 1.0), describe=p.describe)
    s = p.sampler(p.fun, x0, (plus, minus), indices=np.asarray(done, dtype=np.intp))
    with np.errstate(invalid="ignore"):
        central = (s.values[0] - s.values[1]) / (plus - minus)
    central_bar = 2 * p.value_noise / (plus - minus)
    # Where the two disagree the loss is not complex-analytic (abs, max, comparisons): trust
    # the central difference there.
    agree = np.abs(derivative - central) <= central_bar + p.rtol * np.abs(central) + p.atol
    numeric = np.where(agree, derivative, central)
    error_bar = np.where(agree, 4 * machine_epsilon(np.float64) * np.abs(derivative), central_bar)
    entries = _new_entries(problem, numeric, error_bar, s.measured)
    entries.direct_evals = len(done)
    disagree = np.flatnonzero(~agree & s.measured)
    if disagree.size:
        shown = ", ".join(p.describe(int(i)) for i in disagree[:5])
        more = ", ..." if disagree.size > 5 else ""
        entries.notes.append(
            f"The complex step disagrees with central differences at {disagree.size} "
            f"{noun(disagree.size, 'entry')} ({shown}{more}): the loss is not "
            "complex-safe there (abs, max, comparisons or np.real break it); central "
            "differences were used for them."
        )
    return entries, _CentralLevel(plus, minus, s.values[0], s.values[1])


def _kink_suspects(
    problem: CoordinateProblem,
    entries: Entries,
    level0: _CentralLevel | None,
    wanted: BoolArray,
) -> BoolArray:
    """Coordinates whose one-sided derivatives already disagree at the first step (free to test).

    On a smooth loss the gap between them is ``h f''``, tiny against the
    gradient; a kink within the step makes it the size of the gradient itself
    even when the central difference happens to agree (``|x|`` at 0).
    """
    x0, f0 = problem.x0, problem.f0
    suspects = np.zeros(x0.size, dtype=bool)
    if level0 is None:
        return suspects
    with np.errstate(invalid="ignore", divide="ignore"):
        gap = (level0.f_plus - f0) / (level0.plus - x0) - (f0 - level0.f_minus) / (
            x0 - level0.minus
        )
        gap_noise = 8 * problem.value_noise / (level0.plus - level0.minus)
    magnitude = np.maximum(np.abs(entries.analytic), np.abs(entries.numeric))
    for span in problem.groups:
        scale = float(np.nanmax(np.where(wanted[span], magnitude[span], 0.0), initial=0.0))
        suspects[span] = np.abs(gap[span]) > KINK_GAP * scale + gap_noise[span]
    flagged: BoolArray = suspects & entries.measured & (entries.codes == PASS)
    return flagged


# -- re-measuring doubtful coordinates ------------------------------------------------------------
def _resolve(
    problem: CoordinateProblem,
    entries: Entries,
    doubtful: npt.NDArray[np.intp],
    level0: _CentralLevel | None,
) -> None:
    """Re-measure doubtful coordinates (Note [Kink test] in numerics.kinks); judge them again."""
    p = problem
    x0 = p.x0
    if level0 is None:  # one-sided methods: sample the other side to start from a central pair
        level0 = _central_pair(p, doubtful)
        if level0.interrupted:
            entries.interrupted = True
            return
    # Entries at the edge of the loss's domain are measured on its finite side instead.
    edge = doubtful[_one_side_finite(p, level0, doubtful) != 0]
    if edge.size:
        _edge_estimates(p, entries, edge, level0)
        doubtful = np.setdiff1d(doubtful, edge)
        if not doubtful.size:
            return
    first_codes = entries.codes.copy()
    scale = np.maximum(np.abs(entries.analytic), np.abs(entries.numeric))
    resolution = resolve_entries(
        p.fun,
        x0,
        p.f0,
        doubtful,
        plus=level0.plus,
        minus=level0.minus,
        f_plus=level0.f_plus,
        f_minus=level0.f_minus,
        dtypes=p.sampling,
        noise=p.value_noise,
        resolution=np.maximum(entries.rtol * np.nan_to_num(scale), entries.atol) + 1e-300,
        sampler=p.sampler,
    )
    smooth = doubtful[resolution.status[doubtful] == SMOOTH]
    entries.numeric[smooth] = resolution.numeric[smooth]
    entries.error_bar[smooth] = resolution.error_bar[smooth] + (
        0.0 if p.extra_bar is None else p.extra_bar[smooth]
    )
    entries.judge()
    status = resolution.status[doubtful]
    # An entry that passed, and whose gap could not be followed to a smaller step, keeps its
    # verdict: round-off took over, no kink was shown (Note [A kink is a gap that persists]).
    bracketed = doubtful[
        (status == KINK) | ((status == UNRESOLVED) & (first_codes[doubtful] != PASS))
    ]
    left, right = resolution.left[bracketed], resolution.right[bracketed]
    entries.left[bracketed], entries.right[bracketed] = left, right
    entries.numeric[bracketed] = (left + right) / 2
    # At a kink the analytic value is a valid subgradient if it lies between the one-sided
    # derivatives (with the tolerance of their scale); only outside them is it wrong.
    a = entries.analytic[bracketed]
    slack = entries.rtol[bracketed] * np.maximum(np.abs(a), np.maximum(abs(left), abs(right)))
    slack += entries.atol + 4 * p.value_noise[bracketed] / resolution.step[bracketed]
    inside = (a >= np.minimum(left, right) - slack) & (a <= np.maximum(left, right) + slack)
    inside &= np.isfinite(a)  # an infinite slack would accept a NaN or infinite entry
    is_kink = resolution.status[bracketed] == KINK
    entries.reason[bracketed] = np.where(is_kink, REASON_KINK, REASON_NO_SAFE_STEP)
    entries.codes[bracketed] = np.where(inside, INCONCLUSIVE, FAIL)
    # Outside the one-sided derivatives, the value may still be a limit of the gradient from
    # nearby smooth points where several kinks meet (Note [Several kinks at once]).
    outside = bracketed[~inside & np.isfinite(a) & is_kink]
    # A tensor already wrong at smooth entries is wrong whatever its kinks hold: the limits
    # are sought only where they can change its verdict.
    smooth_failures = (entries.codes == FAIL) & (entries.reason == REASON_NONE)
    wrong_groups = np.zeros(x0.size, dtype=bool)
    for span in p.groups:
        wrong_groups[span] = np.any(smooth_failures[span])
    outside = outside[~wrong_groups[outside]]
    if outside.size:
        _judge_limits(p, entries, outside, resolution.step)
    jumps = doubtful[status == DISCONTINUOUS]
    entries.left[jumps], entries.right[jumps] = resolution.left[jumps], resolution.right[jumps]
    entries.numeric[jumps] = np.nan  # no derivative exists (Note [Jumps are not kinks])
    entries.reason[jumps] = REASON_DISCONTINUOUS
    entries.codes[jumps] = INCONCLUSIVE
    entries.n_resolved = int(np.count_nonzero(resolution.status[doubtful] >= 0)) + edge.size
    entries.interrupted = entries.interrupted or resolution.interrupted


# -- several kinks at once ------------------------------------------------------------------------
LIMIT_DIRECTIONS = 4
"""Random directions whose rays, both ways, are followed to the point.

See Note [Several kinks at once].
"""

_LIMIT_SEED = 20_141_014
"""Fixed seed of the displacements: a check is reproducible and leaves global generators alone."""


def _judge_limits(
    problem: CoordinateProblem,
    entries: Entries,
    outside: npt.NDArray[np.intp],
    step: FloatArray,
) -> None:
    """Accept analytic values outside the one-sided derivatives that limiting gradients explain.

    Note [Several kinks at once]
        "Outside ``[left, right]`` is wrong" holds for one kink on the
        coordinate's line. Where several kinks meet at the point (an input
        that ties in one pooling window and wins in another, a parameter
        that moves several pre-activations across their knots in different
        directions), the backward pass a framework writes returns the limit
        of the gradient along a tie-breaking direction, and that limit can
        lie outside both one-sided derivatives along the coordinate. What a
        correct backward pass may return is bounded by Clarke's generalized
        gradient: the convex hull of the limits of gradients from nearby
        points where the loss is smooth (Clarke 1983, Theorem 2.5.1). Its
        projection on coordinate ``i`` is the interval between the smallest
        and the largest limiting partial derivative.

        So the entry is re-measured at points ``x + t d`` along
        :data:`LIMIT_DIRECTIONS` random directions ``d`` (every coordinate
        moved, both signs) and along a ramp that makes earlier coordinates
        larger (or, with the other sign, smaller): the tie-breaking direction
        of "the first maximum wins", which argmax, max-pooling and sorting
        follow, and which random directions find only by chance where many
        values tie. Each point is taken at two distances ``t`` (a quarter and an
        eighth of the first step), with a central difference 4 times finer than
        ``t`` (finer still along the ramp, whose entries are only ``1 / size``
        apart), but never so fine that its round-off exceeds a quarter of the
        entry's tolerance; a limit whose error bar exceeds the tolerance is not
        used, so imprecise measurements never excuse a value.
        A point is used only if it is smooth along the coordinate there (its
        one-sided derivatives agree); the two distances are extrapolated to
        ``t = 0``, with their difference as error bar, giving one limiting
        partial derivative per ray. The analytic value is a valid limiting
        gradient (inconclusive, ``several_kinks``) when it lies between the
        smallest and the largest of these and of the one-sided derivatives,
        within the tolerance and the error bars. The sampled hull lies inside
        the true one, so a value accepted is inside Clarke's; a value no
        limiting gradient explains stays wrong.
    """
    p = problem
    x0, n = p.x0, p.x0.size
    rng = np.random.default_rng(_LIMIT_SEED)
    low = np.minimum(entries.left[outside], entries.right[outside])
    high = np.maximum(entries.left[outside], entries.right[outside])
    bar = 4 * p.value_noise[outside] / step[outside]
    # Within each tensor, earlier entries larger (the first maximum wins), by 1/size apart.
    ramp, spacing = np.zeros(n), np.ones(n)
    for span in p.groups:
        size = len(range(n)[span])
        ramp[span] = 1.0 - np.arange(size) / max(size, 1)
        spacing[span] = 1.0 / max(size, 1)
    # The finest step whose round-off stays below a quarter of the entry's tolerance.
    scale = np.maximum(np.abs(entries.analytic[outside]), np.maximum(np.abs(low), np.abs(high)))
    tolerance = entries.rtol[outside] * scale + entries.atol
    coarsest = np.zeros(n)
    with np.errstate(divide="ignore"):
        coarsest[outside] = 8 * p.value_noise[outside] / tolerance
    for r in range(LIMIT_DIRECTIONS + 1):
        jitter = rng.uniform(-1.0, 1.0, size=n)
        if r == 0:
            direction = ramp + 0.1 * spacing * jitter
            # The difference along the coordinate must not cross the ties the ramp broke.
            fineness = np.minimum(1 / 4, 0.4 * spacing)
        else:
            direction = np.sign(jitter) * (0.5 + 0.5 * np.abs(jitter))
            fineness = np.full(n, 1 / 4)
        for sign in (1.0, -1.0):
            found = []
            for distance in (0.25, 0.125):
                base = _rounded(x0 + sign * distance * p.h * direction, p.sampling)
                try:
                    fine = np.minimum(
                        np.maximum(distance * p.h * fineness, coarsest), distance * p.h / 2
                    )
                    minus, plus = offset_points(base, p.sampling, fine, (-1.0, 1.0))
                except InputError:
                    return
                s = p.sampler(p.fun, base, (plus, minus, base), indices=outside)
                if s.interrupted:
                    entries.interrupted = True
                    return
                f_plus, f_minus, f_base = (v[outside] for v in s.values)
                width = (plus - minus)[outside]
                with np.errstate(invalid="ignore", divide="ignore"):
                    right = (f_plus - f_base) / (plus - base)[outside]
                    left = (f_base - f_minus) / (base - minus)[outside]
                    central = (f_plus - f_minus) / width
                roundoff = 2 * p.value_noise[outside] / width
                size = np.maximum.reduce([np.abs(central), np.abs(entries.analytic[outside])])
                smooth_here = np.abs(right - left) <= KINK_GAP * size + 4 * roundoff
                found.append((np.where(smooth_here, central, np.nan), roundoff))
            (far, far_bar), (near, near_bar) = found
            with np.errstate(invalid="ignore"):
                limit = 2 * near - far  # linear in the distance along the ray, extrapolated to 0
                spread = np.abs(near - far) + 2 * far_bar + 2 * near_bar
                # A limit less precise than the tolerance cannot tell a right value from a
                # wrong one: it is not used (the entry keeps its verdict).
                usable = np.isfinite(limit) & (spread <= tolerance)
            low = np.where(usable, np.minimum(low, limit), low)
            high = np.where(usable, np.maximum(high, limit), high)
            bar = np.where(usable, np.maximum(bar, spread), bar)
            explained = _within(entries, outside, low, high, bar)
            if np.all(explained):  # every value is explained: no need for more rays
                break
        else:
            continue
        break
    accepted = outside[_within(entries, outside, low, high, bar)]
    entries.reason[accepted] = REASON_KINKS
    entries.codes[accepted] = INCONCLUSIVE


def _within(
    entries: Entries,
    indices: npt.NDArray[np.intp],
    low: FloatArray,
    high: FloatArray,
    bar: FloatArray,
) -> BoolArray:
    """Whether each analytic value lies in ``[low, high]``, within its tolerance and `bar`."""
    a = entries.analytic[indices]
    slack = entries.rtol[indices] * np.maximum(np.abs(a), np.maximum(np.abs(low), np.abs(high)))
    slack += entries.atol + bar
    inside: BoolArray = (a >= low - slack) & (a <= high + slack)
    return inside


def _rounded(x: FloatArray, sampling: list[tuple[slice, np.dtype[Any]]]) -> FloatArray:
    """Round each span of a point to the dtype its coordinates are evaluated in."""
    out = x.copy()
    for span, dtype in sampling:
        out[span] = x[span].astype(dtype).astype(np.float64)
    return out


# -- the edge of the loss's domain ----------------------------------------------------------------
def _one_side_finite(
    problem: CoordinateProblem, level0: _CentralLevel, indices: npt.NDArray[np.intp]
) -> npt.NDArray[np.int8]:
    """Per coordinate: +1 if only ``f(x + h)`` is finite, -1 if only ``f(x - h)``, else 0."""
    side = np.zeros(problem.x0.size, dtype=np.int8)
    if not np.isfinite(problem.f0):
        return side[indices]
    plus_ok, minus_ok = np.isfinite(level0.f_plus), np.isfinite(level0.f_minus)
    side[plus_ok & ~minus_ok] = 1
    side[minus_ok & ~plus_ok] = -1
    return side[indices]


def _edge_estimates(
    problem: CoordinateProblem,
    entries: Entries,
    edge: npt.NDArray[np.intp],
    level0: _CentralLevel,
) -> None:
    """Estimate derivatives at the edge of the loss's domain from its finite side.

    Note [The edge of the domain]
        Where the loss is finite on one side of the point and not on the
        other (``sqrt``, ``log`` or ``x**1.5`` at 0, a probability at 1), a
        central difference is NaN and a one-sided first-order one is too
        coarse to judge by. The derivative is estimated on the finite side
        with the second-order one-sided rule (the derivative of the quadratic
        through ``f(x)``, ``f(x + s)`` and ``f(x + 2s)``) at the steps
        ``s = h, h/2, h/4``. Its error is taken from how fast the three
        estimates converge: with the observed contraction ``r = |D(h/4) -
        D(h/2)| / |D(h/2) - D(h)|``, the error of ``D(h/4)`` is at most about
        ``|D(h/4) - D(h/2)| r / (1 - r)`` (a geometric tail; ``r = 1/4`` on a
        smooth loss, ``1/2`` for ``x**1.5``), plus round-off. Estimates that
        do not converge (``r`` near 1) leave the entry inconclusive.
    """
    p = problem
    side = _one_side_finite(p, level0, edge).astype(np.float64)
    sides = np.zeros(p.x0.size)
    sides[edge] = side
    offsets = (0.25, 0.5, 1.0, 2.0)
    columns = offset_points(p.x0, p.sampling, p.h * np.where(sides == 0, 1.0, sides), offsets)
    s = p.sampler(p.fun, p.x0, columns, indices=edge)
    t = [(c - p.x0)[edge] for c in columns]
    f = [v[edge] for v in s.values]
    f0 = p.f0
    with np.errstate(invalid="ignore", divide="ignore"):
        estimates = [
            _quadratic_slope(f0, f[i], f[i + 1], t[i], t[i + 1]) for i in (2, 1, 0)
        ]  # at s = h, h/2, h/4
        d1 = np.abs(estimates[1] - estimates[0])
        d2 = np.abs(estimates[2] - estimates[1])
        r = np.where(d1 > 0, d2 / d1, 0.0)
        roundoff = 8 * p.value_noise[edge] / np.abs(t[0])
        # Converging, or already settled within round-off at every step.
        converging = np.isfinite(estimates[2]) & ((r < 0.75) | (np.maximum(d1, d2) <= roundoff))
        r = np.minimum(r, 0.75)
        bar = d2 * np.maximum(r, 0.25) / (1 - r) + d2 / 3
    entries.numeric[edge] = np.where(converging, estimates[2], np.nan)
    entries.error_bar[edge] = bar + roundoff + (0.0 if p.extra_bar is None else p.extra_bar[edge])
    entries.reason[edge] = REASON_NONE
    entries.judge()
    measured = edge[converging]
    if measured.size:
        entries.notes.append(
            f"{counted(measured.size, 'entry')} {noun(measured.size, 'sits', 'sit')} at the edge "
            "of the loss's domain (the loss is not finite on one side): "
            f"{noun(measured.size, 'its derivative was', 'their derivatives were')} measured "
            "on the finite side with one-sided differences of second order."
        )


def _quadratic_slope(
    f0: float, f1: FloatArray, f2: FloatArray, t1: FloatArray, t2: FloatArray
) -> FloatArray:
    """Slope at 0 of the parabola through ``(0, f0)``, ``(t1, f1)`` and ``(t2, f2)``."""
    # Differences from f0 first: the weights sum to 0, and f0 times them only adds round-off.
    slope: FloatArray = (f1 - f0) * t2 / (t1 * (t2 - t1)) - (f2 - f0) * t1 / (t2 * (t2 - t1))
    return slope


# -- small systematic errors ----------------------------------------------------------------------
SYSTEMATIC_SIGMAS = 10.0
"""A tensor's fitted factor must differ from 1 by this many times its error bar (Note [Small
systematic errors])."""

SYSTEMATIC_MIN_ENTRIES = 3
"""Entries a tensor needs for its factor to show a pattern: one wrong value fits any factor."""

SYSTEMATIC_FLOOR = 1e-3
"""The factor must also differ from 1 by this fraction of ``rtol`` (1e-8 in float64): below,
the truncation and round-off models themselves are not trusted."""

SYSTEMATIC_CONFIRMED = 8
"""Entries per tensor re-measured by Richardson extrapolation to confirm a factor."""


def _find_systematic(problem: CoordinateProblem, entries: Entries, wanted: BoolArray) -> None:
    """Find tensors whose passing entries all deviate by one factor.

    Note [Small systematic errors]
        ``rtol`` (1e-5 in float64) covers what a first central difference
        does not model, its truncation error, with a wide margin; the error
        bars of the estimates (round-off and measured noise) are often orders
        of magnitude smaller. A backward pass off by a relative 1e-5 on every
        entry (an off-by-one in a large normaliser, ``1 / (m - 1)`` for
        ``1 / m``) then passes entry by entry, although every entry deviates
        the same way. So the passing entries of each tensor are fitted with
        ``analytic = k * numeric``, weighting each by its error bar. The
        tensor is wrong when

        - the fit is consistent: at least 90% of the entries are within
          their error bar (plus a quarter of the deviation) of ``k *
          numeric``, so that one wrong entry is not spread into a factor;
        - ``|k - 1|`` is more than :data:`SYSTEMATIC_SIGMAS` times the
          factor's error bar and more than :data:`SYSTEMATIC_FLOOR` times
          ``rtol``; and
        - it is confirmed: up to :data:`SYSTEMATIC_CONFIRMED` of the best
          resolved entries are re-measured at steps ``h/2`` and ``h/4`` and
          Richardson-extrapolated, whose error bar covers truncation too, and
          the factor fitted on them passes the same test.

        At least :data:`SYSTEMATIC_MIN_ENTRIES` resolved entries are needed
        (a single value fits any factor). A `rtol` the caller chose turns
        the search off: it says how large an error they accept (an
        approximate gradient, a drop-in's ``rtol=1e-2``), and a factor within
        it is not theirs to fix. The entries whose own deviation
        exceeds their error bar are called wrong and held to their error
        bars; the report gives the factor and its error bar.
    """
    p = problem
    found: list[SystematicFit] = []
    for span in p.groups:
        group = np.arange(span.start or 0, span.stop)[wanted[span]]
        codes = entries.codes[group]
        if group.size < SYSTEMATIC_MIN_ENTRIES or np.any(codes == FAIL):
            continue
        passing = group[codes == PASS]
        n, bar = entries.numeric[passing], entries.error_bar[passing]
        resolved = passing[(np.abs(n) > 2 * bar) & (bar > 0)]
        if resolved.size < SYSTEMATIC_MIN_ENTRIES:
            continue
        fit = _factor_fit(entries, resolved, entries.numeric[resolved], entries.error_bar[resolved])
        if fit is None:
            continue
        confirmed = _confirm(p, entries, resolved)
        if confirmed is None:
            continue
        k, sigma = confirmed
        if abs(k - 1) <= 0.5 * abs(fit[0] - 1) or (k - 1) * (fit[0] - 1) <= 0:
            continue
        dev = np.abs(entries.analytic[resolved] - entries.numeric[resolved])
        alone = resolved[dev > entries.error_bar[resolved] + entries.atol]
        found.append(
            SystematicFit(
                indices=group,
                flagged=alone if alone.size else resolved,
                factor=k,
                uncertainty=sigma,
            )
        )
    if found:
        entries.systematic.extend(found)
        entries.judge()


def _factor_fit(
    entries: Entries, indices: npt.NDArray[np.intp], numeric: FloatArray, bar: FloatArray
) -> tuple[float, float] | None:
    """Fit ``analytic = k * numeric``; return ``(k, error bar)`` if it is a systematic error."""
    a = entries.analytic[indices]
    weight = 1.0 / bar**2
    norm = float(np.sum(weight * numeric**2))
    if not np.isfinite(norm) or norm <= 0:
        return None
    k = float(np.sum(weight * a * numeric)) / norm
    sigma = 1.0 / np.sqrt(norm)
    deviation = abs(k - 1)
    floor = SYSTEMATIC_FLOOR * float(np.min(entries.rtol[indices]))
    if not (deviation > SYSTEMATIC_SIGMAS * sigma and deviation > floor):
        return None
    consistent = np.abs(a - k * numeric) <= bar + 0.25 * deviation * np.abs(numeric)
    if np.count_nonzero(consistent) < 0.9 * indices.size:
        return None
    return k, float(sigma)


def _confirm(
    problem: CoordinateProblem, entries: Entries, resolved: npt.NDArray[np.intp]
) -> tuple[float, float] | None:
    """Re-measure the best-resolved entries with Richardson extrapolation and refit the factor."""
    p = problem
    with np.errstate(divide="ignore"):
        quality = np.abs(entries.numeric[resolved]) / entries.error_bar[resolved]
    best = np.sort(resolved[np.argsort(-quality, kind="stable")[:SYSTEMATIC_CONFIRMED]])
    if best.size < SYSTEMATIC_MIN_ENTRIES:
        return None
    try:
        columns = offset_points(p.x0, p.sampling, p.h, (0.5, -0.5, 0.25, -0.25))
    except InputError:
        return None
    s = p.sampler(p.fun, p.x0, columns, indices=best)
    if s.interrupted or not np.all(s.measured[best]):
        return None
    with np.errstate(invalid="ignore", divide="ignore"):
        coarse = (s.values[0] - s.values[1]) / (columns[0] - columns[1])
        fine = (s.values[2] - s.values[3]) / (columns[2] - columns[3])
    estimate, truncation = richardson(coarse[best], fine[best])
    bar = truncation + 2 * p.value_noise[best] / (columns[2] - columns[3])[best]
    if p.extra_bar is not None:
        bar = bar + p.extra_bar[best]
    if not np.all(np.isfinite(estimate)) or np.any(bar <= 0):
        return None
    return _factor_fit(entries, best, estimate, bar)
