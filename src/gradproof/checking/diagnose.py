"""What a wrong gradient looks like, and where to look in the backward pass.

Each rule reads the analytic and numerical gradients of one parameter that
failed its check and names the pattern: non-finite values, a gradient that is
all zeros, a transpose, a flipped sign, a constant factor (``x2``, ``x1/4``),
a few wrong entries, errors along one axis, or no simple pattern.
:func:`diagnose_swaps` looks across parameters for two gradients returned
under each other's names.

This module holds the entry points and the order of the rules; the models
themselves, and Note [Models of a wrong gradient] on when one is accepted, are
in :mod:`~gradproof.checking.diagnose_fits` (constant factors),
:mod:`~gradproof.checking.diagnose_transpose`,
:mod:`~gradproof.checking.diagnose_patterns` (a few entries, axes) and
:mod:`~gradproof.checking.diagnose_swapped`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from gradproof._typing import BoolArray, FloatArray
from gradproof._words import counted
from gradproof.checking.diagnose_fits import (
    EXPLAINED_FRACTION,
    SCALE_FIT_TOLERANCE,
    _exact_fit_rounding,
    _explains,
    _factor_diagnosis,
    _fit,
    _main_term_factor_diagnosis,
    format_factor,
)
from gradproof.checking.diagnose_fits import (
    MAIN_TERM_FIT_TOLERANCE as MAIN_TERM_FIT_TOLERANCE,  # re-exported: the tests use it
)
from gradproof.checking.diagnose_patterns import (
    FEW_ENTRIES_FRACTION,
    FEW_ENTRIES_MIN,
    _axis_diagnosis,
    _few_entries_diagnosis,
)
from gradproof.checking.diagnose_swapped import _swapped_pairs
from gradproof.checking.diagnose_transpose import _transpose_diagnosis
from gradproof.numerics.tolerances import default_rtol
from gradproof.results import Diagnosis
from gradproof.tree import format_index

__all__ = [
    "EXPLAINED_FRACTION",
    "FEW_ENTRIES_FRACTION",
    "FEW_ENTRIES_MIN",
    "SCALE_FIT_TOLERANCE",
    "diagnose_parameter",
    "diagnose_probes",
    "diagnose_swaps",
    "format_factor",
]

_FALLBACK_FLOOR = 0.1
"""Absolute floor of the fallback failure test, as a share of ``rtol`` times the largest entry.

Central-difference noise is absolute: about ``eps ** (2/3)`` of the gradient's
scale on every entry (4e-11 in float64, 2e-5 in float32), so an entry near zero
carries the noise of the large ones. With float64's default ``rtol`` of 1e-5
the floor is 1e-6 of the largest entry, far above that noise.
"""


def diagnose_parameter(
    name: str,
    analytic: FloatArray,
    numeric: FloatArray,
    *,
    wrong: BoolArray | None = None,
) -> Diagnosis:
    """Name the pattern of a parameter's wrong gradient.

    Parameters
    ----------
    name : str
        The parameter, used in the messages.
    analytic, numeric : ndarray
        Its analytic gradient and numerical estimate, same shape (the
        parameter's). Entries whose numerical estimate is not finite (not
        measured, or inconclusive) are ignored.
    wrong : ndarray of bool, optional
        Which entries failed the check, same shape. By default an entry is
        wrong when ``|a - n| > rtol * max(|a|, |n|) + rtol / 10 * max|n|``,
        with ``rtol`` the checker's default for the inputs' dtype (1e-5 for
        float64): the checker's own test without the numerical error bar,
        which the floor stands in for.

    Returns
    -------
    Diagnosis
        The first pattern that fits, in the order: non-finite analytic values;
        all zeros; a transpose (a square parameter whose analytic gradient is
        ``k * numeric.T``); a sign flip; a constant factor; a few wrong entries
        (at most ``max(FEW_ENTRIES_MIN, FEW_ENTRIES_FRACTION * judged)`` and at
        most half); errors along one axis (the wrong entries fill some slices
        of an axis, more than half of each, and every other slice is right;
        else the error ``a - n`` is the same in every slice along an axis); no
        simple pattern. See Note [Models of a wrong gradient] for when a model
        is accepted.

    Raises
    ------
    ValueError
        If `analytic`, `numeric` and `wrong` do not have the same shape.

    Examples
    --------
    >>> import numpy as np
    >>> d = diagnose_parameter("W2", np.array([2.0, -4.0, 6.0]), np.array([1.0, -2.0, 3.0]))
    >>> d.kind, d.summary
    ('scale', 'analytic = 2 × numeric on every entry')
    >>> n = np.arange(12.0).reshape(3, 4)
    >>> a = n.copy()
    >>> a[1, 2] = 0.0
    >>> diagnose_parameter("W", a, n).summary
    'only this entry is wrong: W[1, 2]; every other entry is right'
    """
    # Gradients near the float64 limit (a wrong entry of 1e300) overflow in the fits below;
    # they then fit no pattern, which the tiers below handle.
    with np.errstate(over="ignore", invalid="ignore"):
        return _diagnose_parameter(name, analytic, numeric, wrong)


def _diagnose_parameter(
    name: str, analytic: FloatArray, numeric: FloatArray, wrong: BoolArray | None
) -> Diagnosis:
    dtype = np.result_type(np.asarray(analytic), np.asarray(numeric))
    a_full = np.asarray(analytic, dtype=np.float64)
    n_full = np.asarray(numeric, dtype=np.float64)
    if a_full.shape != n_full.shape:
        raise ValueError(
            f"analytic has shape {a_full.shape} but numeric has shape {n_full.shape}; "
            "pass both gradients of one parameter"
        )
    usable = np.isfinite(n_full)
    a = a_full[usable]
    n = n_full[usable]
    bad = ~np.isfinite(a)
    if np.any(bad):
        return Diagnosis(
            kind="non_finite",
            summary=(
                f"analytic gradient is NaN or infinite at {int(bad.sum())} of "
                f"{counted(a.size, 'entry')}"
            ),
            hint=(
                f"The backward of `{name}` divides by zero or overflows (log of 0, exp of a large "
                "value, 0/0): guard it, e.g. clip probabilities before taking their log."
            ),
        )
    if not np.any(a) and np.any(n):
        return Diagnosis(
            kind="zero",
            summary="analytic gradient is all zeros, but the loss depends on this parameter",
            hint=(
                f"No gradient reaches `{name}`: a path through it is missing from the backward "
                "pass (a forgotten term, a detached or overwritten variable)."
            ),
        )
    if a.size == 1:
        return _one_entry_diagnosis(name, a_full.shape, usable, float(a[0]), float(n[0]))
    failing = _failing(a_full, n_full, usable, wrong, dtype)
    # Only usable entries are compared from here on; zeros elsewhere keep the sums finite.
    a_full = np.where(usable, a_full, 0.0)
    n_full = np.where(usable, n_full, 0.0)
    error = a_full - n_full

    transposed = _transpose_diagnosis(name, a_full, n_full, usable, failing)
    if transposed is not None:
        return transposed
    fit = _fit(a, n)
    if fit is not None:
        k, residual = fit
        if residual <= SCALE_FIT_TOLERANCE and _explains(a_full - k * n_full, error, failing):
            return _factor_diagnosis(name, k, _exact_fit_rounding(residual))
        main = _main_term_factor_diagnosis(name, k, residual, a_full - k * n_full, error, failing)
        if main is not None:
            return main
    few = _few_entries_diagnosis(name, usable, failing)
    if few is not None:
        return few
    along = _axis_diagnosis(name, a_full, n_full, usable, failing)
    if along is not None:
        return along
    return Diagnosis(
        kind="unknown",
        summary="no simple pattern: not a constant factor, a sign flip or all zeros",
        hint=(
            f"Re-derive the backward of `{name}` term by term; the worst entries below show "
            "where it differs most."
        ),
    )


def diagnose_probes(name: str, analytic: FloatArray, numeric: FloatArray) -> Diagnosis:
    """Describe a tensor whose directional probes fail but whose entries were not localised.

    Parameters
    ----------
    name : str
        The parameter.
    analytic, numeric : ndarray of shape (k,)
        The probes' directional derivatives ``g . v`` and their finite-difference estimates.

    Returns
    -------
    Diagnosis
        ``scale`` or ``sign`` when every probe gives the same simple ratio
        ``analytic / numeric`` (what a factor on every entry produces; random
        errors on a few entries give arbitrary ratios), else ``unknown``.

    Examples
    --------
    >>> import numpy as np
    >>> diagnose_probes("W2", np.array([2.49829]), np.array([1.249145])).summary
    'along its random directions, analytic = 2 × numeric; the wrong entries were not localised'
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = np.asarray(analytic, dtype=np.float64) / np.asarray(numeric, dtype=np.float64)
    k = float(np.median(ratios)) if ratios.size else float("nan")
    consistent = bool(
        ratios.size and np.all(np.isfinite(ratios)) and np.ptp(ratios) <= 1e-4 * abs(k)
    )
    shown = format_factor(k, 1e-4) if consistent else ""
    if consistent and ("/" in shown or shown.lstrip("-").isdigit()):
        found = _factor_diagnosis(name, k, 1e-4)
        return Diagnosis(
            kind=found.kind,
            summary=(
                f"along its random directions, analytic = {shown} × numeric; the wrong entries "
                "were not localised"
            ),
            hint=found.hint + " (A factor on every entry gives this ratio along any direction.)",
            factor=k,
        )
    return Diagnosis(
        kind="unknown",
        summary="its directional probes fail; the wrong entries were not localised",
        hint=(f"Raise `max_evals`, or check `{name}` with mode='full', to find the wrong entries."),
    )


def diagnose_swaps(
    reports: Sequence[tuple[str, FloatArray, FloatArray, bool]],
) -> dict[str, Diagnosis]:
    """Find pairs of parameters whose gradients were returned under each other's names.

    Parameters
    ----------
    reports : sequence of (name, analytic, numeric, failed)
        Every parameter's name, analytic gradient, numerical estimate (NaN
        where not measured) and whether it failed its check.

    Returns
    -------
    dict of str to Diagnosis
        A ``swapped`` diagnosis, naming its `partner`, for both parameters of
        each pair found: two failed parameters of the same shape whose
        analytic gradients fit each other's numerical ones (Note [Models of a
        wrong gradient], with every compared entry counted as failing). A
        parameter is paired at most once, with its best fit. Empty when no
        pair is found.

    Examples
    --------
    >>> import numpy as np
    >>> g1, g2 = np.array([1.0, 2.0]), np.array([3.0, -1.0])
    >>> found = diagnose_swaps([("W1", g2, g1, True), ("W2", g1, g2, True)])
    >>> found["W1"].partner, found["W2"].kind
    ('W2', 'swapped')
    """
    failed = [
        (name, np.asarray(a, dtype=np.float64), np.asarray(n, dtype=np.float64))
        for name, a, n, did_fail in reports
        if did_fail
    ]
    return _swapped_pairs(failed)


def _failing(
    a_full: FloatArray,
    n_full: FloatArray,
    usable: BoolArray,
    wrong: BoolArray | None,
    dtype: np.dtype[Any],
) -> BoolArray:
    """Return the failing entries among the usable ones: the caller's, or the fallback test's."""
    if wrong is not None:
        mask: BoolArray = np.asarray(wrong, dtype=np.bool_)
        if mask.shape != a_full.shape:
            raise ValueError(
                f"wrong has shape {mask.shape}; expected {a_full.shape}, the gradients' shape"
            )
        return usable & mask
    rtol = default_rtol(dtype)
    largest = float(np.max(np.abs(n_full[usable]))) if usable.any() else 0.0
    with np.errstate(invalid="ignore"):
        tolerance = rtol * np.maximum(np.abs(a_full), np.abs(n_full)) + (
            _FALLBACK_FLOOR * rtol * largest
        )
        outside = np.abs(a_full - n_full) > tolerance
    return usable & outside


def _one_entry_diagnosis(
    name: str, shape: tuple[int, ...], usable: BoolArray, analytic: float, numeric: float
) -> Diagnosis:
    """Name the one judged entry: a single value fits any factor, so none is given.

    Note [One entry has no pattern]
        A pattern needs several entries to show: any single wrong value is
        some multiple of the right one, so "analytic = 3/2 × numeric" on a
        scalar or a one-entry tensor says nothing the two values do not.
        Such a parameter is diagnosed as its one wrong entry, with both
        values; only the exact opposite value is named, as a sign flip.
    """
    index = tuple(int(i) for i in np.argwhere(usable)[0]) if shape else ()
    where = f" ({format_index(name, index)})" if shape and int(np.prod(shape)) > 1 else ""
    values = f"analytic {analytic:.6g}, numeric {numeric:.6g}"
    if numeric != 0 and abs(analytic + numeric) <= 1e-6 * abs(numeric):
        # The opposite value exactly is a recognisable mistake even in one entry.
        return Diagnosis(
            kind="sign",
            summary=f"its one entry{where} has its sign flipped: {values}",
            hint=f"The sign of `{name}`'s gradient is flipped: look for a `-` too many or too few.",
            factor=-1.0,
        )
    return Diagnosis(
        kind="one_entry",
        summary=(f"its one entry{where} is wrong: {values}"),
        hint=(
            f"`{name}` has a single entry checked, so no pattern can be told from it (any wrong "
            "value is some multiple of the right one): re-derive its backward term by term."
        ),
        entries=(index,),
    )
