"""Find small systematic errors: a tensor whose entries all deviate by one factor."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from gradproof._typing import BoolArray, FloatArray
from gradproof.checking.entries import (
    FAIL,
    PASS,
    CoordinateProblem,
    Entries,
    SystematicFit,
)
from gradproof.errors import InputError
from gradproof.numerics.finite_diff import richardson
from gradproof.numerics.steps import offset_points

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
