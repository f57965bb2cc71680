"""Measure a derivative at the edge of the loss's domain, on its finite side."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from gradproof._typing import FloatArray
from gradproof._words import counted, noun
from gradproof.checking.entries import (
    REASON_NONE,
    CoordinateProblem,
    Entries,
    _CentralLevel,
)
from gradproof.numerics.steps import offset_points


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
