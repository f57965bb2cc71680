"""Judge a value at a kink where several kinks meet: the limits of nearby gradients."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from gradproof._typing import BoolArray, FloatArray
from gradproof.checking.entries import (
    INCONCLUSIVE,
    KINK_GAP,
    REASON_KINKS,
    CoordinateProblem,
    Entries,
)
from gradproof.errors import InputError
from gradproof.numerics.steps import offset_points

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
