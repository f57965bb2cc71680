"""Which first estimates are worth paying for again: noise only when a verdict needs it.

After the first finite difference of every coordinate, :func:`review` decides
what more to spend (Note [Pay for what the verdict needs]): it measures the
loss's noise only when some coordinate's verdict depends on it, re-takes the
first estimates of those coordinates with the measured error model, and hands
back the coordinates that re-measurement at smaller steps
(:func:`gradproof.checking.sweep._resolve`) could still change.

Note [Pay for what the verdict needs]
    A check starts from the rounding model of its working dtype: every loss
    value is trusted to ``ROUNDOFF_FACTOR * eps * |f|``. The loss's own noise
    (Moré and Wild's ECnoise at five steps, 40 evaluations) can only widen the
    error bars and lengthen the steps, so it matters to a coordinate only if
    its verdict could change with wider bars:

    - a coordinate that passes with the narrow bars passes with wider ones;
      it is not re-measured (unless it is a kink suspect, below);
    - a failure whose discrepancy ``|a - n|`` exceeds ``CERTAIN_FACTOR`` (100)
      times its tolerance and whose one-sided differences agree
      (``|D+ - D-| <= SIDE_AGREEMENT * |a - n|``) is *certain*: noise large
      enough to explain it would make the one-sided differences disagree by
      about as much (each carries the noise over the step), and a kink close
      enough to matter would too (the analytic value of a subgradient lies
      between them, so ``|a - n| <= |D+ - D-| / 2``). Smaller steps cannot
      rescue it either: a central difference's truncation error (``h**2 / 6``
      times the third derivative) is far below 100 tolerances unless the loss
      bends on the scale of the step, and then its sides disagree. It is
      reported from its first estimate, neither re-measured nor a reason to
      measure the noise, once the first certain failure of the check has been
      confirmed at a smaller step (Note [Confirming a certain failure]);
    - every other doubtful coordinate (a marginal failure, a failure whose
      sides disagree, a kink suspect) depends on the noise: the ladder runs
      once for the check (through :meth:`Context.sample`, so within the budget
      and the deadline). When it finds noise above rounding, the doubtful
      coordinates (the certain failures too: they were certain under the
      rounding model) get a first estimate with the measured noise's step
      and error bar, and are then re-measured as before. When it finds none,
      nothing changes: the rounding model was right.

    So a clean check pays nothing for noise and nothing for re-measurement,
    and a blatant bug (a factor, a sign, a missing term on a whole tensor)
    pays the 2 evaluations of one confirmation. The report says when the
    ladder ran, and why. No verdict of the project's corpora changed (every
    case and planted bug, in the full, directional and sampled modes).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from gradproof._typing import BoolArray, FloatArray
from gradproof._words import noun
from gradproof.checking.entries import (
    FAIL,
    PASS,
    CoordinateProblem,
    Entries,
    _CentralLevel,
)
from gradproof.checking.sweep import (
    _doubtful,
    _first_estimates,
)
from gradproof.numerics.steps import offset_points

__all__ = ["CERTAIN_FACTOR", "CONFIRM_STEP", "SIDE_AGREEMENT", "certain_failures", "review"]

CERTAIN_FACTOR = 100.0
"""A failure this many times beyond its tolerance, with agreeing sides, is certain."""

SIDE_AGREEMENT = 0.01
"""One-sided differences agree when they differ by at most this fraction of ``|a - n|``."""


def certain_failures(
    problem: CoordinateProblem,
    entries: Entries,
    level0: _CentralLevel | None,
    doubtful: npt.NDArray[np.intp],
) -> BoolArray:
    """Mark the doubtful coordinates whose failure no noise or step can change.

    Note [Pay for what the verdict needs]: far beyond the tolerance, with
    one-sided differences that agree. Without a central pair (one-sided
    methods) the sides are unknown and nothing is certain.
    """
    certain = np.zeros(doubtful.size, dtype=bool)
    if level0 is None or not doubtful.size:
        return certain
    i = doubtful
    x0, f0 = problem.x0[i], problem.f0
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        right = (level0.f_plus[i] - f0) / (level0.plus[i] - x0)
        left = (f0 - level0.f_minus[i]) / (x0 - level0.minus[i])
        miss = np.abs(entries.analytic[i] - entries.numeric[i])
        certain = (
            (entries.codes[i] == FAIL)
            & (miss > CERTAIN_FACTOR * entries.tolerance()[i])
            & (np.abs(right - left) <= SIDE_AGREEMENT * miss)
        )
    flags: BoolArray = certain & np.isfinite(miss) & np.isfinite(entries.analytic[i])
    return flags


def review(
    problem: CoordinateProblem,
    entries: Entries,
    level0: _CentralLevel | None,
    wanted: BoolArray,
    doubtful: npt.NDArray[np.intp],
    *,
    measure: Callable[[str], bool],
    rebuild: Callable[[], CoordinateProblem],
    confirmed: list[bool],
    room: Callable[[int], bool] = lambda evals: True,
) -> tuple[CoordinateProblem, _CentralLevel | None, npt.NDArray[np.intp]]:
    """Measure the noise if a verdict needs it; return the coordinates to re-measure.

    Parameters
    ----------
    problem, entries, level0, wanted, doubtful
        The first estimates, as :func:`gradproof.checking.sweep.judge_coordinates`
        has them; `entries` is updated in place.
    measure : callable ``measure(reason) -> bool``
        Measures the loss's noise once per check; true when that changed the
        error model (a level above rounding).
    rebuild : callable ``rebuild() -> CoordinateProblem``
        The same problem with the check's current error model.
    confirmed : list of one bool
        Whether a certain failure of this check was already confirmed at a
        smaller step (Note [Confirming a certain failure]); set here.
    room : callable ``room(evals) -> bool``, optional
        Whether the check's budget has room for that many more evaluations.

    Returns
    -------
    problem, level0, doubtful
        With the noise-dependent coordinates' first estimates re-taken when
        the error model changed, and only the coordinates that re-measurement
        could change (Note [Pay for what the verdict needs]).
    """
    certain = certain_failures(problem, entries, level0, doubtful)
    if np.any(certain) and not confirmed[0] and not room(2):
        confirmed[0] = True  # taken as they are: the budget has no room to confirm them
        entries.notes.append(
            f"{_count(int(np.count_nonzero(certain)))} far beyond the tolerance were not "
            "confirmed at a smaller step (2 evaluations), to stay within max_evals."
        )
    if np.any(certain) and not confirmed[0]:
        if _confirmed(problem, entries, level0, doubtful[certain]):
            confirmed[0] = True
        elif not entries.interrupted:
            certain[:] = False
    if entries.interrupted:
        return problem, level0, np.zeros(0, dtype=np.intp)
    dependent = doubtful[~certain]
    if dependent.size and measure(_reason(problem, entries, dependent)):
        # The certain failures were certain under the rounding model: with noise above it,
        # they are taken again too.
        problem, level0, stopped = _retake(problem, rebuild(), entries, level0, doubtful)
        entries.judge()
        if stopped:
            return problem, level0, np.zeros(0, dtype=np.intp)
        doubtful = _doubtful(problem, entries, level0, wanted)
        dependent = doubtful[~certain_failures(problem, entries, level0, doubtful)]
    return problem, level0, dependent


CONFIRM_STEP = 8.0
"""The step of the confirmation of a certain failure is this many times smaller."""


def _confirmed(
    problem: CoordinateProblem,
    entries: Entries,
    level0: _CentralLevel | None,
    certain: npt.NDArray[np.intp],
) -> bool:
    """Confirm the least certain of the certain failures at a smaller step (two evaluations).

    Note [Confirming a certain failure]
        Agreeing sides cannot tell a wrong gradient from a loss whose values
        are quantised far above rounding: ``log(1 - sigmoid(z))`` at ``z = 24``
        is a staircase of steps some 1e8 roundings high, and a difference over
        ten stairs has agreeing sides and a slope 3 % off. A change of step
        tells them apart: a wrong gradient stays as wrong at ``h / 8`` (the
        estimate moves by its truncation and rounding only), a staircase's
        estimate jumps. So before the first failure of a check is called
        certain, the least certain one (smallest discrepancy over tolerance)
        is measured again at ``h / 8``; if its estimate moves by more than
        ``SIDE_AGREEMENT`` of its discrepancy plus the smaller step's rounding
        bar, nothing is certain and the noise decides. Once confirmed, later
        certain failures of the check are taken as they are.
    """
    if level0 is None:
        return False
    ratio = np.abs(entries.analytic[certain] - entries.numeric[certain]) / (
        entries.tolerance()[certain] + 1e-300
    )
    j = int(certain[np.argmin(ratio)])
    x0 = problem.x0
    dtype = next(d for span, d in problem.sampling if (span.start or 0) <= j < span.stop)
    h = np.array([(level0.plus[j] - level0.minus[j]) / (2 * CONFIRM_STEP)])
    # Snapped to the working dtype, like every step (Note [Snapped steps]); only j moves.
    low, high = offset_points(x0[j : j + 1], [(slice(0, 1), dtype)], h, (-1.0, 1.0))
    minus, plus = x0.copy(), x0.copy()
    minus[j], plus[j] = low[0], high[0]
    s = problem.sampler(problem.fun, x0, (plus, minus), indices=np.array([j], dtype=np.intp))
    if s.interrupted:
        entries.interrupted = True
        return False
    width = float(plus[j] - minus[j])
    with np.errstate(invalid="ignore", over="ignore"):
        numeric = float(s.values[0, j] - s.values[1, j]) / width
        miss = abs(float(entries.analytic[j] - entries.numeric[j]))
        moved = abs(numeric - float(entries.numeric[j]))
        bar = 2 * float(problem.value_noise[j]) / width
    return bool(np.isfinite(numeric) and moved <= SIDE_AGREEMENT * miss + bar)


def _count(failures: int) -> str:
    return f"{failures} failing {noun(failures, 'coordinate')}"


def _reason(problem: CoordinateProblem, entries: Entries, dependent: npt.NDArray[np.intp]) -> str:
    """Say which verdicts depend on the noise, for the note that the ladder ran."""
    failing = dependent[entries.codes[dependent] == FAIL]
    suspects = dependent[entries.codes[dependent] == PASS]
    parts = []
    if failing.size:
        shown = ", ".join(problem.describe(int(j)) for j in failing[:3])
        more = ", ..." if failing.size > 3 else ""
        parts.append(
            f"{failing.size} failing {noun(failing.size, 'coordinate')} ({shown}{more}) "
            f"{noun(failing.size, 'was')} within {CERTAIN_FACTOR:g} times the tolerance or "
            "had one-sided differences that disagree"
        )
    if suspects.size:
        shown = ", ".join(problem.describe(int(j)) for j in suspects[:3])
        more = ", ..." if suspects.size > 3 else ""
        parts.append(
            f"{suspects.size} {noun(suspects.size, 'coordinate')} ({shown}{more}) "
            f"{noun(suspects.size, 'was')} a kink suspect"
        )
    return " and ".join(parts) or "a verdict depended on it"


def _retake(
    old: CoordinateProblem,
    new: CoordinateProblem,
    entries: Entries,
    level0: _CentralLevel | None,
    redo: npt.NDArray[np.intp],
) -> tuple[CoordinateProblem, _CentralLevel | None, bool]:
    """Take the first estimates of `redo` again with `new`'s error model; merge them in.

    The other measured coordinates keep their estimates, which passed; their
    error bars are widened in proportion to the noise now known (free, and
    it can only widen their tolerance), so that every bar reported covers it.
    Returns the merged problem and central pair, and whether the sampling
    stopped early.
    """
    fresh, fresh_level, taken = _first_estimates(new, redo)
    kept = entries.measured.copy()
    kept[redo] = False
    with np.errstate(invalid="ignore", divide="ignore"):
        widening = np.maximum(1.0, taken.value_noise / old.value_noise)
    entries.error_bar[kept] *= np.nan_to_num(widening[kept], nan=1.0, posinf=1.0)
    for name in ("numeric", "error_bar", "measured"):
        getattr(entries, name)[redo] = getattr(fresh, name)[redo]
    stopped = bool(np.any(~fresh.measured[redo]))
    entries.interrupted = entries.interrupted or stopped

    def merged(before: FloatArray, after: FloatArray) -> FloatArray:
        out: FloatArray = np.array(before, dtype=np.float64, copy=True)
        out[redo] = after[redo]
        return out

    extra = (
        None
        if old.extra_bar is None or new.extra_bar is None
        else merged(old.extra_bar, new.extra_bar)
    )
    problem = dataclasses.replace(
        old,
        h=merged(old.h, new.h),
        value_noise=merged(old.value_noise, taken.value_noise),
        extra_bar=extra,
    )
    if level0 is None or fresh_level is None:
        return problem, fresh_level if level0 is None else level0, stopped
    pair = _CentralLevel(
        plus=merged(level0.plus, fresh_level.plus),
        minus=merged(level0.minus, fresh_level.minus),
        f_plus=merged(level0.f_plus, fresh_level.f_plus),
        f_minus=merged(level0.f_minus, fresh_level.f_minus),
    )
    return problem, pair, stopped
