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
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from gradproof._typing import BoolArray, FloatArray
from gradproof._words import noun
from gradproof.checking.domain_edge import _edge_estimates, _one_side_finite
from gradproof.checking.entries import (
    COMPLEX_STEP,
    FAIL,
    INCONCLUSIVE,
    KINK_GAP,
    PASS,
    REASON_DISCONTINUOUS,
    REASON_KINK,
    REASON_NO_SAFE_STEP,
    REASON_NONE,
    CoordinateProblem,
    Entries,
    _CentralLevel,
)
from gradproof.checking.several_kinks import _judge_limits
from gradproof.checking.systematic import _find_systematic
from gradproof.errors import InputError, UserCodeError
from gradproof.numerics.finite_diff import STENCILS, richardson, stencil_derivative
from gradproof.numerics.kinks import DISCONTINUOUS, KINK, SMOOTH, UNRESOLVED, resolve_entries
from gradproof.numerics.steps import machine_epsilon, offset_points, step_sizes

__all__ = ["Review", "judge_coordinates"]

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
