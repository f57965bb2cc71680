"""Helpers for tests: prove that a parameter container was not modified; mask round-off."""

from __future__ import annotations

import re
from typing import Any

import numpy as np


def snapshot(tree: Any) -> Any:
    """Deep copy of a parameter container, to prove later that it was not modified."""
    if isinstance(tree, dict):
        return {k: snapshot(v) for k, v in tree.items()}
    if isinstance(tree, tuple) and hasattr(tree, "_fields"):
        return type(tree)(*(snapshot(v) for v in tree))
    if isinstance(tree, (list, tuple)):
        return type(tree)(snapshot(v) for v in tree)
    return np.array(tree, copy=True)


def assert_same(actual: Any, expected: Any) -> None:
    """Assert two containers match exactly: types, keys and their order, dtypes, shapes, values."""
    assert type(actual) is type(expected), (type(actual), type(expected))
    if isinstance(expected, dict):
        assert list(actual) == list(expected)
        for key in expected:
            assert_same(actual[key], expected[key])
    elif isinstance(expected, (list, tuple)):
        assert len(actual) == len(expected)
        for a, e in zip(actual, expected, strict=True):
            assert_same(a, e)
    elif isinstance(expected, (np.ndarray, np.generic)):
        assert actual.dtype == expected.dtype
        np.testing.assert_array_equal(actual, expected, strict=True)
    else:
        assert actual == expected


# Figures that depend only on the rounding of the loss's own arithmetic (BLAS kernels, vector
# instructions): they differ between CPUs while every verdict stays the same. A passing row's
# measurements, the noise-derived step and the margins are masked; verdicts, counts, shapes,
# wrong entries and their values are compared exactly.
_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?"
_PASSING_ROW = re.compile(r"^(\s*\S+\s+\([\d, ]*\)\s+ok\b).*$", re.M)
_ROUNDOFF_FIGURES = (
    (re.compile(rf"step relative {_NUMBER}"), "step relative <step>"),
    (re.compile(rf"margin {_NUMBER}×"), "margin <margin>"),
    (re.compile(rf"uses {_NUMBER}% of its tolerance"), "uses <share> of its tolerance"),
    (re.compile(rf"(the assignment's formula\)): {_NUMBER}e-\d\d\b"), r"\1: <round-off>"),
)


def mask_roundoff(text: str) -> str:
    """Mask a report's round-off figures (passing rows, noise-derived steps, margins)."""
    text = _PASSING_ROW.sub(r"\1 <round-off>", text)
    for pattern, replacement in _ROUNDOFF_FIGURES:
        text = pattern.sub(replacement, text)
    return text
