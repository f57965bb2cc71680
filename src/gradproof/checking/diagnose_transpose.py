"""The transpose model of a wrong gradient: ``analytic = k * numeric.T``.

A square parameter whose backward builds its gradient with the factors of a
product in the wrong order gets the transpose of its gradient, possibly times a
factor; accepted as in Note [Models of a wrong gradient]
(:mod:`~gradproof.checking.diagnose_fits`), exactly or for the main term only.
"""

from __future__ import annotations

import numpy as np

from gradproof._typing import BoolArray, FloatArray
from gradproof.checking.diagnose_fits import (
    _MAIN_TERM_REMAINDER,
    MAIN_TERM_FIT_TOLERANCE,
    SCALE_FIT_TOLERANCE,
    _explains,
    _fit,
    _percent,
    _shown_factor,
)
from gradproof.results import Diagnosis


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
