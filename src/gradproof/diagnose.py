"""What a wrong gradient looks like, and where to look in the backward pass.

Each rule reads the analytic and numerical gradients of one parameter that
failed its check and names the pattern: a constant factor (``x2``, ``x1/4``),
a flipped sign, a gradient that is all zeros, non-finite values, or no simple
pattern.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Literal

import numpy as np

from gradproof._typing import FloatArray

__all__ = ["Diagnosis", "DiagnosisKind", "diagnose_parameter", "format_factor"]

DiagnosisKind = Literal["scale", "sign", "zero", "non_finite", "unknown"]

SCALE_FIT_TOLERANCE = 1e-3
"""Largest relative residual of ``analytic - k * numeric`` for a constant-factor diagnosis.

A central difference is accurate to about 1e-8 relative on smooth float64
losses and 1e-2 in float16; entries this far off a fitted factor are a
pattern, not noise, for float32 and float64 parameters.
"""


_LARGEST_SHOWN_TERM = 10**6
"""Largest numerator or denominator written as a fraction (1/m for up to a million examples)."""

_SMALLEST_FRACTION = 1.0 / _LARGEST_SHOWN_TERM


@dataclass(frozen=True, slots=True, kw_only=True)
class Diagnosis:
    """The pattern of one parameter's wrong gradient.

    Attributes
    ----------
    kind : {"scale", "sign", "zero", "non_finite", "unknown"}
        The pattern found.
    summary : str
        One line saying what the error looks like, e.g. ``analytic = 2 x numeric``.
    hint : str
        Where to look in the backward pass.
    factor : float or None
        For ``scale`` and ``sign``: the fitted ``k`` in ``analytic = k * numeric``.
    """

    kind: DiagnosisKind
    summary: str
    hint: str
    factor: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return {
            "kind": self.kind,
            "summary": self.summary,
            "hint": self.hint,
            "factor": self.factor,
        }


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


def diagnose_parameter(name: str, analytic: FloatArray, numeric: FloatArray) -> Diagnosis:
    """Name the pattern of a parameter's wrong gradient.

    Parameters
    ----------
    name : str
        The parameter, used in the messages.
    analytic, numeric : ndarray
        Its analytic gradient and numerical estimate, same shape. Entries
        whose numerical estimate is not finite are ignored.

    Returns
    -------
    Diagnosis
        The first pattern that fits, in the order: non-finite analytic values,
        all zeros, a sign flip, a constant factor, no simple pattern.

    Examples
    --------
    >>> import numpy as np
    >>> d = diagnose_parameter("W2", np.array([2.0, -4.0, 6.0]), np.array([1.0, -2.0, 3.0]))
    >>> d.kind, d.summary
    ('scale', 'analytic = 2 × numeric on every entry')
    """
    usable = np.isfinite(numeric)
    a = np.asarray(analytic, dtype=np.float64)[usable]
    n = np.asarray(numeric, dtype=np.float64)[usable]
    bad = ~np.isfinite(a)
    if np.any(bad):
        return Diagnosis(
            kind="non_finite",
            summary=f"analytic gradient is NaN or infinite at {int(bad.sum())} of {a.size} entries",
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
    norm_n = float(n @ n)
    if norm_n > 0:
        k = float(a @ n) / norm_n
        residual = float(np.linalg.norm(a - k * n)) / max(float(np.linalg.norm(a)), 1e-300)
        if residual <= SCALE_FIT_TOLERANCE:
            # Round the factor only as far as the fit itself is uncertain.
            tolerance = min(max(10 * residual, 1e-6), SCALE_FIT_TOLERANCE)
            return _factor_diagnosis(name, k, tolerance)
    return Diagnosis(
        kind="unknown",
        summary="no simple pattern (not a constant factor, not a sign flip, not all zeros)",
        hint=(
            f"Re-derive the backward of `{name}` term by term; the worst entries below show "
            "where it differs most."
        ),
    )


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
