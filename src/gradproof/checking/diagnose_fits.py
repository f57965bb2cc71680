"""Models of a wrong gradient: when one is accepted, and the constant-factor models.

A model of the analytic gradient ``a`` is built from the numerical one ``n``;
this module fits ``a = k * n`` (:func:`_fit`), decides whether a fit accounts
for the failure (:func:`_explains`), names a factor (:func:`format_factor`) and
writes the diagnoses of a factor on the whole gradient or on its main term.
The other models (transpose, few entries, axes, swaps) live in
:mod:`~gradproof.checking.diagnose_transpose`,
:mod:`~gradproof.checking.diagnose_patterns` and
:mod:`~gradproof.checking.diagnose_swapped`.

Note [Models of a wrong gradient]
    Each pattern is a model of the analytic gradient ``a`` built from the
    numerical one ``n``: ``k * n``, ``k * n.T``, ``n`` plus the same error in
    every row, the other parameter's ``n``. A model is accepted when

    - it fits: what it leaves, ``||a - model||``, is at most
      :data:`SCALE_FIT_TOLERANCE` of the gradient's norm, the most a central
      difference's noise can explain in float32 and float64; and
    - it explains the failure: on the entries that failed the check, what it
      leaves is at most :data:`EXPLAINED_FRACTION` of the error
      ``||a - n||`` there.

    The first test alone is met by any small error in a large gradient (one
    entry off by 0.05 among 10,000 entries of size 1 leaves ``5e-4`` of the
    norm), so it would call a single wrong entry "``1 × numeric``"; the second
    asks the model to account for the entries that are actually wrong.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np

from gradproof._typing import BoolArray, FloatArray
from gradproof.results import Diagnosis

__all__ = [
    "EXPLAINED_FRACTION",
    "MAIN_TERM_FIT_TOLERANCE",
    "SCALE_FIT_TOLERANCE",
    "format_factor",
]

SCALE_FIT_TOLERANCE = 1e-3
"""Largest relative residual of ``analytic - k * numeric`` for a constant-factor diagnosis.

A central difference is accurate to about 1e-8 relative on smooth float64
losses and 1e-2 in float16; entries this far off a fitted factor are a
pattern, not noise, for float32 and float64 parameters. The same bound applies
to every other model of the gradient (Note [Models of a wrong gradient]).
"""

MAIN_TERM_FIT_TOLERANCE = 0.05
"""Largest relative residual for a factor or transpose of the gradient's main term only.

A backward pass often builds a gradient from a main term and a smaller one: the
data term and an L2 penalty, or two paths through a layer. A bug in the main
term alone (``dW = 2 * (A.T @ dZ) + l2 * W``, or a transposed product plus a
penalty) leaves a residual of the size of the smaller term, a few percent, far
above :data:`SCALE_FIT_TOLERANCE`. Such a fit is reported with "≈" and the size
of what it leaves; it must still explain the failure (:data:`EXPLAINED_FRACTION`).
"""

EXPLAINED_FRACTION = 0.1
"""Largest share of the error on the failing entries that a model may leave unexplained.

Fitting one factor, a transpose or one constant per slice to an unstructured
error removes little of it: a per-slice constant fitted along an axis of
length ``L`` leaves ``sqrt(1 - 1/L)`` of its norm, at least 0.71. A tenth
(1% of the squared error) rejects such errors by a wide margin, and still
accepts a real pattern measured with float32 noise (about 1e-4 relative) in
an error that fails float32's default tolerance (1e-3 relative).
"""

_LARGEST_SHOWN_TERM = 10**6
"""Largest numerator or denominator written as a fraction (1/m for up to a million examples)."""

_SMALLEST_FRACTION = 1.0 / _LARGEST_SHOWN_TERM


def format_factor(k: float, tolerance: float = SCALE_FIT_TOLERANCE) -> str:
    """Write a factor the way a person would: ``2``, ``-1``, ``1/4``, ``1.37``.

    Parameters
    ----------
    k : float
        The factor.
    tolerance : float, optional
        How far, relatively, `k` may be from a simple fraction to be written
        as one. A factor near 1 is never rounded to 1: a wrong gradient off by
        1.0001 says so.

    Returns
    -------
    str
        An integer, a small fraction, or `k` to 6 significant digits.

    Examples
    --------
    >>> format_factor(2.0000001), format_factor(0.25), format_factor(-1/3), format_factor(1.37)
    ('2', '1/4', '-1/3', '1.37')
    >>> format_factor(1.0001)
    '1.0001'
    """
    if _SMALLEST_FRACTION <= abs(k) <= _LARGEST_SHOWN_TERM:
        # The usual bugs are integer factors (x2, x4), their inverses (x1/m) and small ratios.
        sign = 1 if k > 0 else -1
        whole = Fraction(round(k)) if abs(k) >= 1 else sign * Fraction(1, round(1 / abs(k)))
        ratio = Fraction(k).limit_denominator(16)
        for fraction in (whole, ratio):
            if (
                fraction not in (0, 1)
                and (fraction is whole or abs(fraction.numerator) <= 16)
                and abs(float(fraction) - k) <= tolerance * abs(k)
            ):
                return str(fraction)
    return f"{k:.6g}"


def _fit(a: FloatArray, n: FloatArray) -> tuple[float, float] | None:
    """Fit ``a = k * n``: the factor and the residual relative to ``||a||`` (None if n = 0)."""
    norm_n = float(n @ n)
    if norm_n <= 0:
        return None
    k = float(a @ n) / norm_n
    residual = float(np.linalg.norm(a - k * n)) / max(float(np.linalg.norm(a)), 1e-300)
    return k, residual


def _explains(left: FloatArray, error: FloatArray, failing: BoolArray) -> bool:
    """Whether a model leaving `left` accounts for the `error` on the failing entries."""
    if not failing.any():
        return True  # nothing failed by the test at hand: the fit alone decides
    unexplained = float(np.linalg.norm(left[failing]))
    return unexplained <= EXPLAINED_FRACTION * float(np.linalg.norm(error[failing]))


_MAIN_TERM_REMAINDER = (
    " The rest of the gradient fits: a smaller term added to it (a penalty such as `l2 * W`, "
    "a second path) is right, or a second, smaller error is mixed in."
)


def _percent(fraction: float) -> str:
    return f"{100 * fraction:.2g}%"


def _exact_fit_rounding(residual: float) -> float:
    """How far to round the factor of an exact fit: only as far as the fit is uncertain."""
    return min(max(10 * residual, 1e-6), SCALE_FIT_TOLERANCE)


def _shown_factor(k: float, residual: float, *, exact: bool) -> str:
    """Print the factor, rounded only as far as the fit is uncertain."""
    if exact:
        return format_factor(k, _exact_fit_rounding(residual))
    # A main-term fit is biased by the remainder, by about the residual.
    for simple in (1.0, -1.0):
        if abs(k - simple) <= 2 * residual:
            return "1" if simple > 0 else "-1"
    return format_factor(k, 2 * residual)


def _factor_diagnosis(name: str, k: float, tolerance: float) -> Diagnosis:
    shown = format_factor(k, tolerance)
    summary = f"analytic = {shown} × numeric on every entry"
    if shown == "-1":
        return Diagnosis(
            kind="sign",
            summary=summary,
            hint=f"The sign of `{name}`'s gradient is flipped: look for a `-` too many or too few.",
            factor=k,
        )
    magnitude = abs(k)
    if magnitude > 1:
        cause = f"is {format_factor(magnitude, tolerance)} times too large (a stray constant?)"
    else:
        cause = (
            f"is {format_factor(1 / magnitude, tolerance)} times too small "
            "(a mean where a sum was meant, a missing constant?)"
        )
    if k < 0:
        cause += " and has its sign flipped"
    return Diagnosis(
        kind="scale",
        summary=summary,
        hint=(
            f"The gradient of `{name}` has the right pattern but {cause}: check the constants "
            "in its backward (1/m, 2, the number of examples)."
        ),
        factor=k,
    )


def _main_term_factor_diagnosis(
    name: str, k: float, residual: float, left: FloatArray, error: FloatArray, failing: BoolArray
) -> Diagnosis | None:
    """``analytic ≈ k * numeric`` for a simple k, up to MAIN_TERM_FIT_TOLERANCE."""
    if residual > MAIN_TERM_FIT_TOLERANCE or not _explains(left, error, failing):
        return None
    shown = _shown_factor(k, residual, exact=False)
    # Only a simple factor is a pattern at this fit; 1 would mean "right, apart from the rest".
    if shown == "1" or not (shown.lstrip("-").isdigit() or "/" in shown):
        return None
    found = _factor_diagnosis(name, k, 2 * residual)
    return Diagnosis(
        kind=found.kind,
        summary=(
            f"analytic ≈ {shown} × numeric, up to {_percent(residual)} of its norm: the "
            "gradient's main term is off"
        ),
        hint=found.hint + _MAIN_TERM_REMAINDER,
        factor=k,
    )


def _systematic_diagnosis(name: str, k: float, uncertainty: float) -> Diagnosis:
    """``analytic = k × numeric`` on every entry, within rtol but far outside the error bars."""
    deviation = k - 1
    digits = max(2, int(np.ceil(-np.log10(max(abs(deviation), 1e-300)))) + 2)
    shown = f"{k:.{min(digits, 15)}f}".rstrip("0")
    return Diagnosis(
        kind="scale",
        summary=(
            f"analytic = {shown} × numeric on every entry (factor 1 {'+' if deviation > 0 else '-'}"
            f" {abs(deviation):.3g} ± {uncertainty:.2g}): each entry is within rtol, but the "
            "deviation is the same on all of them, far outside their error bars"
        ),
        hint=(
            f"The gradient of `{name}` is off by a relative {abs(deviation):.3g} on every entry: "
            "a normaliser off by one (m - 1 for m), a constant rounded (a temperature, eps "
            "inside a square root), or a term of that relative size missing everywhere."
        ),
        factor=k,
    )
