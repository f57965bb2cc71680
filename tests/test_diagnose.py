"""Diagnosis of a wrong gradient: planted patterns are named, with a hint naming the parameter."""

from __future__ import annotations

import json

import numpy as np
import pytest

from gradproof.diagnose import SCALE_FIT_TOLERANCE, Diagnosis, diagnose_parameter, format_factor


@pytest.fixture
def numeric():
    return np.random.default_rng(11).normal(size=(3, 4))


# -- constant factors and signs ------------------------------------------------------------------
@pytest.mark.parametrize(
    ("k", "kind", "shown", "cause"),
    [
        (2.0, "scale", "2", "is 2 times too large (a stray constant?):"),
        (4.0, "scale", "4", "is 4 times too large"),
        (1 / 3, "scale", "1/3", "is 3 times too small (a mean where a sum was meant"),
        (1 / 64, "scale", "1/64", "is 64 times too small"),
        (1.5, "scale", "3/2", "is 3/2 times too large"),
        (-1.0, "sign", "-1", None),
        (-2.0, "scale", "-2", "is 2 times too large (a stray constant?) and has its sign flipped"),
        (-0.25, "scale", "-1/4", "is 4 times too small"),
        (1.0001, "scale", "1.0001", "is 1.0001 times too large"),
        (2.0002, "scale", "2.0002", "is 2.0002 times too large"),
    ],
    ids=["x2", "x4", "x1/3", "x1/64", "x3/2", "sign", "x-2", "x-1/4", "x1.0001", "x2.0002"],
)
def test_planted_factor_is_named(numeric, k, kind, shown, cause):
    d = diagnose_parameter("W2", k * numeric, numeric)
    assert d.kind == kind
    assert d.summary == f"analytic = {shown} × numeric on every entry"
    # k = <a, n> / <n, n> of an exact multiple: two 12-term dot products, each within
    # 12 eps = 2.7e-15 relative, and a division.
    assert d.factor == pytest.approx(k, rel=1e-14)
    assert "`W2`" in d.hint
    if kind == "sign":
        assert (
            d.hint == "The sign of `W2`'s gradient is flipped: look for a `-` too many or too few."
        )
    else:
        assert cause in d.hint
        assert ("sign flipped" in d.hint) == (k < 0)


def test_finite_difference_noise_does_not_hide_the_factor(numeric):
    # Uniform relative noise of 1e-4 (a float32-like estimate; float64's is ~1e-8) leaves a
    # fit residual of ~1e-4 / sqrt(3) = 6e-5, under SCALE_FIT_TOLERANCE. The factor is then
    # rounded to within 10 x that residual, and the fitted k is within ~1e-4 / sqrt(12) of 2.
    noise = np.random.default_rng(12).uniform(-1e-4, 1e-4, size=numeric.shape)
    d = diagnose_parameter("b1", 2 * numeric, numeric * (1 + noise))
    assert (d.kind, d.summary) == ("scale", "analytic = 2 × numeric on every entry")
    assert d.factor == pytest.approx(2.0, rel=1e-4)  # the noise's relative size


def test_a_factor_on_some_entries_only_is_no_pattern(numeric):
    analytic = numeric.copy()
    analytic[0] *= 2  # one row doubled: the fit residual is ~0.3, far above 1e-3
    d = diagnose_parameter("W", analytic, numeric)
    assert d.kind == "unknown"


def test_noise_above_the_fit_tolerance_is_no_pattern(numeric):
    # Relative noise of 10 * SCALE_FIT_TOLERANCE gives a residual ~6e-3 > 1e-3.
    noise = np.random.default_rng(13).uniform(-1, 1, size=numeric.shape) * 10 * SCALE_FIT_TOLERANCE
    d = diagnose_parameter("W", 2 * numeric * (1 + noise), numeric)
    assert d.kind == "unknown"


# -- zeros, non-finite values, no pattern ------------------------------------------------------
def test_all_zero_analytic_gradient_is_a_missing_path(numeric):
    d = diagnose_parameter("layers[0].bias", np.zeros_like(numeric), numeric)
    assert d.kind == "zero"
    assert d.summary == "analytic gradient is all zeros, but the loss depends on this parameter"
    assert d.hint.startswith("No gradient reaches `layers[0].bias`: a path through it is missing")
    assert d.factor is None


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
def test_non_finite_analytic_values_are_counted(numeric, bad):
    analytic = 2 * numeric
    analytic[1, 2] = bad
    analytic[2, 0] = bad
    d = diagnose_parameter("W3", analytic, numeric)
    assert d.kind == "non_finite"
    assert d.summary == "analytic gradient is NaN or infinite at 2 of 12 entries"
    assert d.hint.startswith("The backward of `W3` divides by zero or overflows")
    assert d.factor is None


def test_non_finite_comes_before_zero():
    d = diagnose_parameter("w", np.array([np.nan, 0.0, 0.0]), np.array([1.0, 2.0, 3.0]))
    assert d.kind == "non_finite"


def test_unrelated_gradients_are_no_simple_pattern(numeric):
    analytic = np.random.default_rng(14).normal(size=numeric.shape)
    d = diagnose_parameter("W1", analytic, numeric)
    assert d.kind == "unknown"
    assert d.summary == (
        "no simple pattern (not a constant factor, not a sign flip, not all zeros)"
    )
    assert d.hint.startswith("Re-derive the backward of `W1` term by term")
    assert d.factor is None


def test_entries_without_a_numerical_estimate_are_ignored():
    numeric = np.array([np.nan, 1.0, -2.0, np.inf, 3.0])
    # Garbage (even non-finite) analytic values where the estimate is missing do not count.
    analytic = np.array([np.inf, 2.0, -4.0, 1e9, 6.0])
    d = diagnose_parameter("W", analytic, numeric)
    assert (d.kind, d.summary) == ("scale", "analytic = 2 × numeric on every entry")

    analytic = np.array([np.nan, np.nan, -4.0, 0.0, 6.0])
    d = diagnose_parameter("W", analytic, numeric)
    assert d.summary == "analytic gradient is NaN or infinite at 1 of 3 entries"


def test_diagnosis_is_json_ready(numeric):
    d = diagnose_parameter("W2", 2 * numeric, numeric)
    assert isinstance(d, Diagnosis)
    data = json.loads(json.dumps(d.to_dict(), allow_nan=False))
    assert data == {"kind": "scale", "summary": d.summary, "hint": d.hint, "factor": d.factor}


# -- format_factor ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("k", "expected"),
    [
        (2.0, "2"),
        (-1.0, "-1"),
        (0.25, "1/4"),
        (1 / 3, "1/3"),
        (-1 / 3, "-1/3"),
        (1.5, "3/2"),
        (1 / 64, "1/64"),
        (1.37, "1.37"),
        (0.37, "0.37"),
        (2.0000001, "2"),  # 5e-8 off 2: within the default 1e-3
        (2 * (1 + 1e-4), "2"),  # 1e-4 off 2: still within 1e-3
        (2 * (1 + 2e-3), "2.004"),  # 2e-3 off: beyond it
        (1.0001, "1.0001"),  # never rounded to 1: a failing gradient is not "1 x"
        (1.0, "1"),
        (1e6, "1000000"),
        (1234.5678, "1235"),  # 3.5e-4 off the integer
        (0.0, "0"),
        (float("nan"), "nan"),
        (float("inf"), "inf"),
    ],
    ids=[
        "2",
        "-1",
        "1/4",
        "1/3",
        "-1/3",
        "3/2",
        "1/64",
        "1.37",
        "0.37",
        "near-2",
        "1e-4-off-2",
        "2e-3-off-2",
        "1.0001",
        "1",
        "1e6",
        "1234.5678",
        "0",
        "nan",
        "inf",
    ],
)
def test_format_factor(k, expected):
    assert format_factor(k) == expected


@pytest.mark.parametrize(
    ("k", "tolerance", "expected"),
    [
        (2.0002, 1e-3, "2"),
        (2.0002, 1e-6, "2.0002"),
        (0.2501, 1e-3, "1/4"),
        (0.2501, 1e-6, "0.2501"),
    ],
    ids=["loose", "tight", "fraction-loose", "fraction-tight"],
)
def test_format_factor_rounds_only_within_the_tolerance(k, tolerance, expected):
    assert format_factor(k, tolerance) == expected


@pytest.mark.parametrize("k", [1e-310, -5e-324], ids=["1e-310", "-denormal-min"])
def test_format_factor_of_a_tiny_factor_does_not_raise(k):
    assert format_factor(k) == f"{k:.6g}"


@pytest.mark.parametrize("k", [1e300, 1e-300], ids=["1e300", "1e-300"])
def test_format_factor_of_an_extreme_factor_is_short(k):
    assert len(format_factor(k)) <= 12


def test_a_vanishing_analytic_gradient_is_diagnosed_without_raising():
    numeric = np.array([1.0, -2.0, 3.0])
    d = diagnose_parameter("W", 1e-310 * numeric, numeric)
    assert d.kind in ("scale", "zero", "unknown")
