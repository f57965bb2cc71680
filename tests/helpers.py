"""Helpers for tests: prove that a parameter container was not modified."""

from __future__ import annotations

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
