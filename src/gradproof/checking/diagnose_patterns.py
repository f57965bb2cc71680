"""Where the wrong entries are: a few entries, whole slices of an axis, an error along an axis.

These rules read which entries failed rather than fit one formula to the whole
gradient: a few wrong entries among right ones (an off-by-one, an overwrite of
repeated indices), some rows or columns wrong and the others right, or an error
``analytic - numeric`` that is the same along an axis (a missing reduction or
broadcast), the last accepted as in Note [Models of a wrong gradient]
(:mod:`~gradproof.checking.diagnose_fits`).
"""

from __future__ import annotations

import numpy as np

from gradproof._typing import BoolArray, FloatArray
from gradproof._words import noun
from gradproof.checking.diagnose_fits import SCALE_FIT_TOLERANCE, _explains
from gradproof.results import Diagnosis
from gradproof.tree import format_index

__all__ = ["FEW_ENTRIES_FRACTION", "FEW_ENTRIES_MIN"]

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

_LISTED = 10
"""How many entries or slices a summary lists before saying how many more."""


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
    these = "only this entry is wrong" if count == 1 else "only these entries are wrong"
    return Diagnosis(
        kind="few_entries",
        summary=f"{these}: {listed}; every other entry is right",
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
    best: tuple[float, int, list[int], int] | None = None
    for axis in range(a_full.ndim if a_full.ndim >= 2 else 0):
        found = _wrong_slices(axis, usable, failing)
        # Prefer the axis whose wrong slices are the most completely wrong.
        if found is not None and (best is None or found[0] > best[0]):
            best = (found[0], axis, found[1], found[2])
    if best is not None:
        _, axis, indices, n_right = best
        return _wrong_slices_diagnosis(name, axis, a_full.ndim, indices, n_right)
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
) -> tuple[float, list[int], int] | None:
    """Find the wrong slices along `axis`, if every other slice is right (_WRONG_SLICE_SHARE).

    Returns the share of failing entries within the wrong slices, their indices, and how
    many slices are right.
    """
    others = tuple(i for i in range(usable.ndim) if i != axis)
    judged = np.sum(usable, axis=others)
    wrong = np.sum(failing, axis=others)
    is_wrong = wrong > _WRONG_SLICE_SHARE * judged
    is_right = (wrong == 0) & (judged > 0)
    if not is_wrong.any() or not is_right.any() or np.any(~is_wrong & ~is_right & (judged > 0)):
        return None
    share = float(wrong[is_wrong].sum()) / float(judged[is_wrong].sum())
    return share, [int(i) for i in np.flatnonzero(is_wrong)], int(is_right.sum())


def _slice_words(axis: int, ndim: int) -> tuple[str, str]:
    """Singular and plural names of the slices across `axis`: rows, columns, indices."""
    if ndim == 2:
        return ("row", "rows") if axis == 0 else ("column", "columns")
    return "index", "indices"


def _wrong_slices_diagnosis(
    name: str, axis: int, ndim: int, indices: list[int], n_right: int
) -> Diagnosis:
    one, many = _slice_words(axis, ndim)
    along = "" if ndim == 2 else f" along axis {axis}"
    listed = _listing([str(i) for i in indices], conjunction=True)
    wrong = f"{one} {listed}" if len(indices) == 1 else f"{many} {listed}"
    right = f"the other {one} is right" if n_right == 1 else f"the other {many} are right"
    summary = f"{wrong}{along} of `{name}` {noun(len(indices), 'is')} wrong; {right}"
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


def _listing(items: list[str], *, conjunction: bool) -> str:
    """Join ``a, b, c`` or ``a, b and c``: at most _LISTED items and a count of the rest."""
    shown = items[:_LISTED]
    hidden = len(items) - len(shown)
    if hidden:
        return ", ".join(shown) + f" and {hidden} more"
    if conjunction and len(shown) > 1:
        return ", ".join(shown[:-1]) + f" and {shown[-1]}"
    return ", ".join(shown)
