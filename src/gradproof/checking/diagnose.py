"""What a wrong gradient looks like, and where to look in the backward pass.

Each rule reads the analytic and numerical gradients of one parameter that
failed its check and names the pattern: non-finite values, a gradient that is
all zeros, a transpose, a flipped sign, a constant factor (``x2``, ``x1/4``),
a few wrong entries, errors along one axis, or no simple pattern.
:func:`diagnose_swaps` looks across parameters for two gradients returned
under each other's names.

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

from collections.abc import Sequence
from fractions import Fraction
from typing import Any

import numpy as np

from gradproof._typing import BoolArray, FloatArray
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

FEW_ENTRIES_MIN = 3
"""So many wrong entries are "a few" in any parameter, however small."""

FEW_ENTRIES_FRACTION = 0.1
"""Largest share of a parameter's judged entries that are "a few" (when above `FEW_ENTRIES_MIN`).

An off-by-one or an overwrite of repeated indices touches one or a handful of
entries (rows of an embedding, a loop's first or last step); a tenth of the
parameter leaves room for a few repeated rows while a pattern spread over the
whole parameter is left to the later rules.
"""

_WRONG_SLICE_SHARE = 0.5
"""A slice (row, column) is wrong when more than this share of its judged entries failed.

An entry of a wrong row can pass by coincidence, when the missing or extra
term happens to vanish there (a ReLU unit that is off, a zero input): the
majority decides. The slices called right must have no failing entry at all.
"""

_FALLBACK_FLOOR = 0.1
"""Absolute floor of the fallback failure test, as a share of ``rtol`` times the largest entry.

Central-difference noise is absolute: about ``eps ** (2/3)`` of the gradient's
scale on every entry (4e-11 in float64, 2e-5 in float32), so an entry near zero
carries the noise of the large ones. With float64's default ``rtol`` of 1e-5
the floor is 1e-6 of the largest entry, far above that noise.
"""

_LISTED = 10
"""How many entries or slices a summary lists before saying how many more."""

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
    'only these entries are wrong: W[1, 2]; every other entry is right'
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
    candidates: list[tuple[float, int, int]] = []
    for i, (_, a_i, n_i) in enumerate(failed):
        for j in range(i + 1, len(failed)):
            _, a_j, n_j = failed[j]
            if a_i.shape != a_j.shape:
                continue
            fit_i = _swap_fit(a_i, n_own=n_i, n_other=n_j)
            fit_j = _swap_fit(a_j, n_own=n_j, n_other=n_i)
            if fit_i is not None and fit_j is not None:
                candidates.append((max(fit_i, fit_j), i, j))
    found: dict[str, Diagnosis] = {}
    for _, i, j in sorted(candidates):
        first, second = failed[i][0], failed[j][0]
        if first in found or second in found:
            continue  # already paired with a better fit
        found[first] = _swap_diagnosis(first, second)
        found[second] = _swap_diagnosis(second, first)
    return found


# -- the rules ---------------------------------------------------------------------------------
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


def _transpose_diagnosis(
    name: str, a_full: FloatArray, n_full: FloatArray, usable: BoolArray, failing: BoolArray
) -> Diagnosis | None:
    """``analytic = k * numeric.T`` for a square parameter whose numeric is not symmetric."""
    if a_full.ndim != 2 or a_full.shape[0] != a_full.shape[1] or a_full.shape[0] < 2:
        return None
    both = usable & usable.T
    if not np.any(both & ~np.eye(a_full.shape[0], dtype=bool)):
        return None  # no off-diagonal pair measured: a transpose cannot show
    a, n, n_t = a_full[both], n_full[both], n_full.T[both]
    fit_t = _fit(a, n_t)
    if fit_t is None:
        return None
    k, residual = fit_t
    fit_n = _fit(a, n)
    if fit_n is not None and fit_n[1] <= SCALE_FIT_TOLERANCE:
        # numeric is its own transpose up to noise (symmetric-ish): a transpose would not
        # show, and the factor rule names what is wrong.
        return None
    inside = failing & both
    if residual > MAIN_TERM_FIT_TOLERANCE or not _explains(
        a_full - k * n_full.T, a_full - n_full, inside
    ):
        return None
    exact = residual <= SCALE_FIT_TOLERANCE
    shown = _shown_factor(k, residual, exact=exact)
    if shown == "1":
        model, extra = "numeric.T", ""
    elif shown == "-1":
        model, extra = "-numeric.T", " Its sign is flipped too."
    else:
        model, extra = f"{shown} × numeric.T", f" It is also off by a factor of {shown}."
    if exact:
        summary = f"analytic = {model} on every entry: the gradient is transposed"
    else:
        summary = (
            f"analytic ≈ {model}, up to {_percent(residual)} of its norm: the gradient's main "
            "term is transposed"
        )
        extra += _MAIN_TERM_REMAINDER
    return Diagnosis(
        kind="transpose",
        summary=summary,
        hint=(
            f"The backward of `{name}` returns the transpose of its gradient: check the order "
            "of the product that builds it (e.g. `dW = dZ @ X.T` written as `X @ dZ.T`, or "
            f"`A.T @ dZ` as `dZ.T @ A`).{extra}"
        ),
        factor=k,
    )


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


def _few_entries_diagnosis(name: str, usable: BoolArray, failing: BoolArray) -> Diagnosis | None:
    """Name a few wrong entries (FEW_ENTRIES_MIN, FEW_ENTRIES_FRACTION) among right ones."""
    judged = int(usable.sum())
    count = int(failing.sum())
    few = max(FEW_ENTRIES_MIN, FEW_ENTRIES_FRACTION * judged)
    # Half or more of the entries wrong is not "a few", however small the parameter.
    if count == 0 or count > few or 2 * count > judged:
        return None
    entries = tuple(tuple(int(i) for i in index) for index in np.argwhere(failing))
    listed = _listing([format_index(name, index) for index in entries], conjunction=False)
    return Diagnosis(
        kind="few_entries",
        summary=f"only these entries are wrong: {listed}; every other entry is right",
        hint=(
            f"Only some entries of `{name}`'s gradient are wrong: look for an off-by-one index "
            "or loop bound, or an overwrite (`=`) where repeated indices must accumulate "
            "(`+=`, `np.add.at`)."
        ),
        entries=entries,
    )


def _axis_diagnosis(
    name: str, a_full: FloatArray, n_full: FloatArray, usable: BoolArray, failing: BoolArray
) -> Diagnosis | None:
    """Find wrong entries that fill some slices of an axis, or an error the same along one."""
    # Slices first: when some rows are right, naming the wrong ones is the sharper statement
    # (a row off by a constant is also "the same error in every column").
    best: tuple[float, int, list[int]] | None = None
    for axis in range(a_full.ndim if a_full.ndim >= 2 else 0):
        found = _wrong_slices(axis, usable, failing)
        # Prefer the axis whose wrong slices are the most completely wrong.
        if found is not None and (best is None or found[0] > best[0]):
            best = (found[0], axis, found[1])
    if best is not None:
        _, axis, indices = best
        return _wrong_slices_diagnosis(name, axis, a_full.ndim, indices)
    constant = [
        axis
        for axis in range(a_full.ndim)
        if _error_is_constant_along(axis, a_full, n_full, usable, failing)
    ]
    if constant:
        return _constant_error_diagnosis(name, constant, a_full.ndim, a_full - n_full, usable)
    return None


def _error_is_constant_along(
    axis: int, a_full: FloatArray, n_full: FloatArray, usable: BoolArray, failing: BoolArray
) -> bool:
    """Whether ``a - n`` is one value per slice across `axis` (a missing reduction or broadcast)."""
    if a_full.shape[axis] < 2:
        return False  # every array is constant along an axis of length 1
    error = a_full - n_full  # zero where not usable
    counts = np.sum(usable, axis=axis, keepdims=True)
    mean = np.sum(error, axis=axis, keepdims=True) / np.maximum(counts, 1)
    left = np.where(usable, error - mean, 0.0)
    # Each slice's mean is fitted: fewer than two entries left over to test is no evidence.
    if int(usable.sum()) - int(np.count_nonzero(counts)) < 2:
        return False
    size = max(float(np.linalg.norm(a_full)), float(np.linalg.norm(n_full)), 1e-300)
    return float(np.linalg.norm(left)) <= SCALE_FIT_TOLERANCE * size and _explains(
        left, error, failing
    )


def _wrong_slices(
    axis: int, usable: BoolArray, failing: BoolArray
) -> tuple[float, list[int]] | None:
    """Find the wrong slices along `axis`, if every other slice is right (_WRONG_SLICE_SHARE).

    Returns the share of failing entries within the wrong slices, and their indices.
    """
    others = tuple(i for i in range(usable.ndim) if i != axis)
    judged = np.sum(usable, axis=others)
    wrong = np.sum(failing, axis=others)
    is_wrong = wrong > _WRONG_SLICE_SHARE * judged
    is_right = (wrong == 0) & (judged > 0)
    if not is_wrong.any() or not is_right.any() or np.any(~is_wrong & ~is_right & (judged > 0)):
        return None
    share = float(wrong[is_wrong].sum()) / float(judged[is_wrong].sum())
    return share, [int(i) for i in np.flatnonzero(is_wrong)]


def _slice_words(axis: int, ndim: int) -> tuple[str, str]:
    """Singular and plural names of the slices across `axis`: rows, columns, indices."""
    if ndim == 2:
        return ("row", "rows") if axis == 0 else ("column", "columns")
    return "index", "indices"


def _wrong_slices_diagnosis(name: str, axis: int, ndim: int, indices: list[int]) -> Diagnosis:
    one, many = _slice_words(axis, ndim)
    along = "" if ndim == 2 else f" along axis {axis}"
    listed = _listing([str(i) for i in indices], conjunction=True)
    if len(indices) == 1:
        summary = f"{one} {listed}{along} of `{name}` is wrong; the other {many} are right"
    else:
        summary = f"{many} {listed}{along} of `{name}` are wrong; the other {many} are right"
    return Diagnosis(
        kind="axis",
        summary=summary,
        hint=(
            f"Look at what the backward of `{name}` does differently for those {many}: an "
            "overwrite (`=`) where repeated indices must accumulate (`+=`, `np.add.at`), an "
            "off-by-one in a loop or slice bound, or a term missing or masked for some units "
            "(a mask or a broadcast along the wrong axis)."
        ),
        axis=axis,
    )


def _constant_error_diagnosis(
    name: str, axes: list[int], ndim: int, error: FloatArray, usable: BoolArray
) -> Diagnosis:
    axis = axes[0]
    if len(axes) == ndim:
        value = float(np.mean(error[usable]))
        summary = f"every entry is off by the same amount: analytic - numeric = {value:.3g}"
        where = ""
    else:
        one, _ = _slice_words(axis, ndim)
        same = f"every {one} is off by the same amounts" if ndim == 2 else "it repeats along it"
        summary = f"the error analytic - numeric is the same along axis {axis}: {same}"
        where = f" along axis {axis}"
    return Diagnosis(
        kind="axis",
        summary=summary,
        hint=(
            f"A reduction or a broadcast{where} is missing or wrong in the backward of `{name}`: "
            "e.g. a sum over the batch forgotten or taken over the wrong axis before a "
            "broadcast, the backward of a mean, centering or normalisation missing its "
            "`- g.mean(...)` term, or `keepdims` on the wrong axis."
        ),
        axis=axis,
    )


# -- swaps -------------------------------------------------------------------------------------
def _swap_fit(a: FloatArray, *, n_own: FloatArray, n_other: FloatArray) -> float | None:
    """How well `a` fits the other parameter's numeric (residual), or None if it does not."""
    compared = np.isfinite(n_other) & np.isfinite(n_own) & np.isfinite(a)
    if not compared.any():
        return None
    a, n_own, n_other = a[compared], n_own[compared], n_other[compared]
    left = a - n_other
    residual = float(np.linalg.norm(left)) / max(float(np.linalg.norm(a)), 1e-300)
    if residual > SCALE_FIT_TOLERANCE or not _explains(
        left, a - n_own, np.ones(a.shape, dtype=bool)
    ):
        return None
    return residual


def _swap_diagnosis(name: str, partner: str) -> Diagnosis:
    if name.isidentifier() and partner.isidentifier():
        example = f'`return {{"{name}": d{partner}, "{partner}": d{name}}}`'
    else:
        example = '`return {"W1": dW2, "W2": dW1}`'
    return Diagnosis(
        kind="swapped",
        summary=(
            f"analytic = the numeric gradient of `{partner}`, and the other way round: "
            "the two gradients are swapped"
        ),
        hint=(
            f"The backward returns the gradients of `{name}` and `{partner}` under each "
            f"other's names (e.g. {example}): return each under its own parameter's key."
        ),
        partner=partner,
    )


def _listing(items: list[str], *, conjunction: bool) -> str:
    """Join ``a, b, c`` or ``a, b and c``: at most _LISTED items and a count of the rest."""
    shown = items[:_LISTED]
    hidden = len(items) - len(shown)
    if hidden:
        return ", ".join(shown) + f" and {hidden} more"
    if conjunction and len(shown) > 1:
        return ", ".join(shown[:-1]) + f" and {shown[-1]}"
    return ", ".join(shown)
