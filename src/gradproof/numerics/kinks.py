"""Re-measure doubtful entries at shrinking steps, to tell a smooth loss from a kink.

Note [Kink test]
    With the loss's value ``f0`` at the point and its values at ``x +- h``, the
    one-sided derivatives ``D+ = (f(x+h) - f0) / h`` and ``D- = (f0 - f(x-h)) / h``
    differ by the gap ``G(h) = D+ - D- = h f''(x) + O(h**3)``. On a smooth loss
    the gap shrinks in proportion to the step: a step four times smaller gives
    a gap four times smaller. Two such shrinks in a row are required, since
    noise in the loss can mimic one by chance. Where the loss has a kink within the step (ReLU
    at 0, ``|x|`` at 0, a max with a tie), the gap is the jump of the
    derivative and stays the same however small the step. So the step is
    divided by 4 until two consecutive gaps shrink like a smooth function's;
    the central differences at those two steps are then free of the kink and
    are Richardson-extrapolated. A kink that sits at the point itself keeps
    its gap at every step: no step avoids it, and the entry is reported with
    its left and right derivatives ``D-`` and ``D+``.

    The step is not divided beyond the point where the round-off error of
    the central difference (which grows like ``noise / h``) would exceed the
    entry's tolerance. A kink closer to the point than that step cannot be
    stepped around ("no safe step"); the entry is then judged by whether the
    analytic value lies between the one-sided derivatives.

    An entry whose tolerance leaves no room at all (a derivative far below
    the round-off of the values differenced, like ``sum(x**2)`` at
    ``x = 1e-20``) still gets up to :data:`SMOOTH_SHRINKS` smaller steps while
    its gap stands well above the gap's own round-off: the gap alone tells a
    smooth loss (it shrinks) from a kink (it stays), even where the central
    difference is too noisy to judge the derivative. Without that evidence a
    large gap would be taken for a kink. One such level whose gap keeps three
    quarters of its size settles a kink (two evaluations); a smooth loss needs
    the usual two shrinks.

Note [A kink is a gap that persists]
    A gap at one step alone does not tell a kink from curvature: a smooth
    loss's gap is ``h f''``, and where the derivative is tiny next to the
    curvature (``x**4`` at ``x = 0.01``, a sum of many squares at its optimum)
    that gap is large against the derivative although nothing bends sharply.
    So an entry is called a kink only when a smaller step was taken and the
    gap stayed (it did not shrink like a smooth function's) while standing
    out of its round-off at that smaller step. An entry that no smaller step
    could be taken for, because its round-off would swamp both the derivative
    and the gap, is ``UNRESOLVED``: the caller keeps its first verdict if it
    passed (round-off took over, not a kink), and judges it by its one-sided
    derivatives otherwise. An entry whose gap shrank like a smooth function's
    once, before round-off stopped the steps, is taken as smooth, with an
    error bar as wide as the whole change between its two central
    differences: agreement within that bar is all the loss allows.

Note [Jumps are not kinks]
    At a jump of the loss (a step function, a comparison with the parameter,
    a loss that only takes whole values) the one-sided difference across it
    is ``J / h``: it grows as the step shrinks, and so does the gap, by about
    the shrink factor per level, whereas a kink's gap stays and a smooth gap
    shrinks. But a smooth loss whose scale of variation is far below the
    step (parameters near 1e-6 with a float32 step of 5e-3) also looks like
    a jump until the step gets below that scale. So an entry whose gap grows
    is followed down to the smallest step (:data:`MAX_LEVELS`), and it is
    ``DISCONTINUOUS`` only if its gap was still growing, by more than
    :data:`JUMP_GROWTH` at each of the last two levels at least, with the
    implied jump ``gap * h`` far above the loss's noise. No derivative
    exists there, and no analytic value can be right or wrong.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from gradproof._typing import BoolArray, FlatFunction, FloatArray
from gradproof.numerics.finite_diff import Samples, richardson, sample
from gradproof.numerics.steps import offset_points

__all__ = ["DISCONTINUOUS", "KINK", "SMOOTH", "UNRESOLVED", "Resolution", "resolve_entries"]

SMOOTH, KINK, UNRESOLVED, DISCONTINUOUS = 0, 1, 2, 3
"""How an entry was resolved: a smooth estimate, a kink at the point, neither, or a jump."""

JUMP_GROWTH = 2.5
"""A gap that grows by more than this factor over one level is a jump's (Note [Jumps are not
kinks]): a jump's gap grows by the shrink factor, 4; a kink's stays; a smooth one shrinks by 4."""

JUMP_NOISE = 16.0
"""A jump must exceed this many times the noise of a loss value (Note [Jumps are not kinks])."""

SHRINK = 4.0
"""Each level divides the step by this factor (Note [Kink test])."""

SMOOTH_SHRINKS = 2
"""Consecutive step reductions whose gap must shrink like a smooth function's (Note [Kink test])."""

MAX_LEVELS = 8
"""At most this many levels: the step goes down to ``h / 4**8``, about ``h / 65,000``."""


@dataclass(frozen=True, slots=True)
class Resolution:
    """What re-measuring the doubtful entries found. Arrays cover every coordinate.

    Attributes
    ----------
    status : ndarray of int8, shape (n,)
        ``SMOOTH``, ``KINK``, ``UNRESOLVED`` or ``DISCONTINUOUS`` for the resolved coordinates;
        -1 for coordinates that were not re-measured (or interrupted).
    numeric : ndarray of shape (n,)
        For ``SMOOTH`` entries, the Richardson estimate; NaN elsewhere.
    error_bar : ndarray of shape (n,)
        For ``SMOOTH`` entries, its truncation plus round-off error bar.
    left, right : ndarray of shape (n,)
        For ``KINK``, ``UNRESOLVED`` and ``DISCONTINUOUS`` entries, the
        one-sided derivatives at the smallest step taken (at the first step
        for a jump, and where no smaller step was taken).
    step : ndarray of shape (n,)
        The smallest step taken.
    n_evals : int
        Evaluations spent.
    interrupted : bool
        Whether Ctrl-C cut the re-measurement short.
    """

    status: npt.NDArray[np.int8]
    numeric: FloatArray
    error_bar: FloatArray
    left: FloatArray
    right: FloatArray
    step: FloatArray
    n_evals: int
    interrupted: bool


@dataclass(frozen=True, slots=True)
class _Level:
    """Central difference, gap and round-off at one step, for every coordinate."""

    central: FloatArray
    gap: FloatArray
    left: FloatArray
    right: FloatArray
    roundoff: FloatArray
    width: FloatArray


def _level(
    x: FloatArray,
    f0: float,
    plus: FloatArray,
    minus: FloatArray,
    f_plus: FloatArray,
    f_minus: FloatArray,
    noise: FloatArray,
) -> _Level:
    h_plus, h_minus = plus - x, x - minus
    with np.errstate(invalid="ignore", divide="ignore"):
        right = (f_plus - f0) / h_plus
        left = (f0 - f_minus) / h_minus
        central = (f_plus - f_minus) / (plus - minus)
    return _Level(
        central=central,
        gap=right - left,
        left=left,
        right=right,
        roundoff=2 * noise / (plus - minus),
        width=plus - minus,
    )


def _gap_noise(level: _Level, noise: FloatArray) -> FloatArray:
    """Return the gap's own round-off: each one-sided difference carries ``2 noise / h``."""
    return 8 * noise / level.width


def resolve_entries(
    fun: FlatFunction,
    x: FloatArray,
    f0: float,
    indices: npt.NDArray[np.intp],
    *,
    plus: FloatArray,
    minus: FloatArray,
    f_plus: FloatArray,
    f_minus: FloatArray,
    dtypes: list[tuple[slice, np.dtype[Any]]],
    noise: FloatArray,
    resolution: FloatArray,
    sampler: Callable[..., Samples] = sample,
) -> Resolution:
    """Re-measure the given entries at shrinking steps until each is smooth or a kink.

    Parameters
    ----------
    fun : callable ``fun(x) -> float``
        The loss as a function of the flat vector.
    x : ndarray of shape (n,)
        The point.
    f0 : float
        The loss at `x`.
    indices : ndarray of int
        The doubtful coordinates.
    plus, minus, f_plus, f_minus : ndarray of shape (n,)
        The first central difference's points and values (level 0).
    dtypes : list of (slice, dtype)
        Each span's dtype, to round the new points in.
    noise : ndarray of shape (n,)
        The absolute noise level of a loss value, per coordinate.
    resolution : ndarray of shape (n,)
        The smallest derivative error that matters for each entry (its
        tolerance): the step is not shrunk so far that round-off exceeds it.
    sampler : callable, optional
        ``sampler(fun, x, columns, *, indices) -> Samples`` that evaluates the
        points: :func:`gradproof.numerics.finite_diff.sample` by default, or an
        engine's ``sample`` (:mod:`gradproof.engine.execution`).

    Returns
    -------
    Resolution
        The status, estimate and one-sided derivatives of each entry.
    """
    n = x.size
    status = np.full(n, -1, dtype=np.int8)
    numeric = np.full(n, np.nan)
    error_bar = np.full(n, np.nan)
    step = (plus - minus) / 2
    level = _level(x, f0, plus, minus, f_plus, f_minus, noise)
    h = step.copy()
    active = np.asarray(indices, dtype=np.intp)
    n_evals = 0
    interrupted = False
    shrinks = np.zeros(n, dtype=np.int8)  # consecutive smooth-looking shrinks of each gap
    gap_only = np.zeros(n, dtype=np.int8)  # levels taken only to watch the gap
    measured_derivative = np.zeros(n, dtype=bool)  # some level had room for the derivative
    stayed = np.zeros(n, dtype=bool)  # a gap-only level found the gap unshrunk: a kink
    grows = np.zeros(n, dtype=np.int8)  # consecutive levels whose gap grew like a jump's
    # A gap stayed at a smaller step (Note [A kink is a gap that persists]).
    persisted = np.zeros(n, dtype=bool)
    first = level
    previous_central = np.full(n, np.nan)  # the central difference one level up
    for _ in range(MAX_LEVELS):
        h = h / SHRINK
        # Shrink only while round-off at the new step stays below what matters for the entry,
        # or, a few times, while the gap stands out of its round-off (Note [Kink test]).
        room = noise[active] / h[active] <= resolution[active]
        with np.errstate(invalid="ignore"):
            gap_room = (np.abs(level.gap[active]) > 16 * noise[active] / h[active]) & (
                (
                    (gap_only[active] < SMOOTH_SHRINKS)
                    & ~measured_derivative[active]
                    & ~stayed[active]
                )
                # a gap that grew like a jump's is followed further (Note [Jumps are not kinks])
                | (grows[active] > 0)
            )
        gap_only[active[gap_room & ~room]] += 1
        measured_derivative[active[room]] = True
        room |= gap_room
        if interrupted or not np.any(room):
            break
        shrinking = active[room]
        new_minus, new_plus = offset_points(x, dtypes, h, (-1.0, 1.0))
        moved = (new_plus[shrinking] != x[shrinking]) & (new_minus[shrinking] != x[shrinking])
        shrinking = shrinking[moved]
        samples = sampler(fun, x, (new_plus, new_minus), indices=shrinking)
        n_evals += samples.n_evals
        interrupted = samples.interrupted
        shrinking = shrinking[samples.measured[shrinking]]
        current = _level(x, f0, new_plus, new_minus, samples.values[0], samples.values[1], noise)
        looks_smooth = _shrinks_like_smooth(level, current, noise, shrinking)
        # A gap that kept three quarters of its size over a gap-only level is a kink's: one
        # such level settles it (a smooth gap would have shrunk to a quarter).
        with np.errstate(invalid="ignore"):
            kept = np.abs(current.gap[shrinking]) > 0.75 * np.abs(level.gap[shrinking])
        # A gap that grew like 1 / h, with a jump far above the noise, at two levels in a row:
        # no derivative exists (Note [Jumps are not kinks]).
        with np.errstate(invalid="ignore", divide="ignore"):
            growth = np.abs(current.gap[shrinking]) / np.abs(level.gap[shrinking])
            size = np.abs(current.gap[shrinking]) * current.width[shrinking] / 2
            grown = (
                (growth > JUMP_GROWTH)
                & (growth < SHRINK**2)
                & (size > JUMP_NOISE * noise[shrinking])
            )
        grows[shrinking] = np.where(grown, grows[shrinking] + 1, 0)
        jumped = grown  # followed to the end of the steps (Note [Jumps are not kinks])
        stayed[shrinking] |= kept & ~grown & ~measured_derivative[shrinking]
        persisted[shrinking] |= ~looks_smooth & ~grown
        shrinks[shrinking] = np.where(looks_smooth, shrinks[shrinking] + 1, 0)
        smooth = (shrinks[shrinking] >= SMOOTH_SHRINKS) & ~jumped
        done = shrinking[smooth]
        estimate, truncation = richardson(level.central[done], current.central[done], ratio=SHRINK)
        status[done] = SMOOTH
        numeric[done] = estimate
        error_bar[done] = truncation + current.roundoff[done]
        step[shrinking] = h[shrinking]
        kept_on = shrinking[~smooth]
        previous_central[kept_on] = level.central[kept_on]
        level = _merge(level, current, kept_on)
        active = active[status[active] != SMOOTH]
    # What is left never shrank like a smooth function: a kink where its gap stayed at a
    # smaller step and stands out of the noise, otherwise undecided (Note [Kink test],
    # Note [A kink is a gap that persists]).
    if not interrupted:
        kink = (
            (np.abs(level.gap[active]) > _gap_noise(level, noise)[active])
            & persisted[active]
            & (shrinks[active] == 0)
        )
        status[active] = np.where(kink, KINK, UNRESOLVED)
        status[active[grows[active] >= SMOOTH_SHRINKS]] = DISCONTINUOUS
        kink &= grows[active] < SMOOTH_SHRINKS
        # One smooth shrink before round-off stopped the steps: an estimate whose error bar is
        # the whole change between the two levels (Note [A kink is a gap that persists]).
        once = active[(shrinks[active] >= 1) & ~kink & np.isfinite(previous_central[active])]
        estimate, change = richardson(previous_central[once], level.central[once], ratio=SHRINK)
        status[once] = SMOOTH
        numeric[once] = estimate
        error_bar[once] = change + np.abs(estimate - level.central[once]) + level.roundoff[once]
    # Gap-only levels watch the gap, not the derivative: their one-sided derivatives carry
    # more round-off than the first level's, which are reported instead; so are a jump's,
    # whose one-sided differences only grow at smaller steps.
    watched = ~measured_derivative | (status == DISCONTINUOUS)
    left = np.where(status >= KINK, np.where(watched, first.left, level.left), np.nan)
    right = np.where(status >= KINK, np.where(watched, first.right, level.right), np.nan)
    step = np.where(watched & (status >= KINK), (plus - minus) / 2, step)
    return Resolution(
        status=status,
        numeric=numeric,
        error_bar=error_bar,
        left=left,
        right=right,
        step=step,
        n_evals=n_evals,
        interrupted=interrupted,
    )


def _shrinks_like_smooth(
    previous: _Level, current: _Level, noise: FloatArray, active: npt.NDArray[np.intp]
) -> BoolArray:
    """Whether the gap went from ``G`` to ``G / 4`` (within half of that, plus noise)."""
    expected = previous.gap[active] / SHRINK
    slack = (
        0.5 * np.abs(expected)
        + _gap_noise(current, noise)[active]
        + _gap_noise(previous, noise)[active] / SHRINK
    )
    with np.errstate(invalid="ignore"):
        ok = np.abs(current.gap[active] - expected) <= slack
    return np.asarray(ok & np.isfinite(current.central[active]), dtype=bool)


def _merge(previous: _Level, current: _Level, active: npt.NDArray[np.intp]) -> _Level:
    """Keep the newest level's numbers for the entries still being resolved."""
    merged = {}
    for field in ("central", "gap", "left", "right", "roundoff", "width"):
        values = getattr(previous, field).copy()
        values[active] = getattr(current, field)[active]
        merged[field] = values
    return _Level(**merged)
