"""Two gradients returned under each other's names.

A failed parameter's analytic gradient is modelled by another failed
parameter's numerical one, of the same shape; a pair is accepted as in Note
[Models of a wrong gradient] (:mod:`~gradproof.checking.diagnose_fits`), with
every compared entry counted as failing.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from gradproof._typing import FloatArray
from gradproof.checking.diagnose_fits import SCALE_FIT_TOLERANCE, _explains
from gradproof.results import Diagnosis


def _swapped_pairs(failed: Sequence[tuple[str, FloatArray, FloatArray]]) -> dict[str, Diagnosis]:
    """Pair failed parameters whose gradients are swapped, each with its best fit.

    `failed` holds the name, analytic gradient and numerical estimate (float64)
    of every failed parameter; the result is :func:`~gradproof.checking.diagnose.diagnose_swaps`'s.
    """
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
