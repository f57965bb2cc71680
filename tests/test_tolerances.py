"""Tolerances: the default rtol per dtype, the round-off error bar and the entry tolerance."""

from __future__ import annotations

import numpy as np
import pytest

from gradproof.numerics.tolerances import (
    ROUNDOFF_FACTOR,
    default_rtol,
    entry_tolerance,
    loss_value_noise,
)

EPS64 = 2.0**-52
EPS32 = 2.0**-23


@pytest.mark.parametrize(
    ("dtype", "rtol"),
    [
        (np.float64, 1e-5),
        (np.float32, 1e-3),
        (np.float16, 1e-2),
        (np.dtype("float32"), 1e-3),
        (np.longdouble, 1e-5),  # at least as precise as float64
        (np.int64, 1e-5),
        (np.int8, 1e-5),  # not a float: float64's, whatever the item size
        (np.bool_, 1e-5),
        (np.complex64, 1e-5),
    ],
    ids=[
        "float64",
        "float32",
        "float16",
        "dtype-object",
        "longdouble",
        "int64",
        "int8",
        "bool",
        "complex64",
    ],
)
def test_default_rtol(dtype, rtol):
    assert default_rtol(dtype) == rtol


def test_default_rtol_is_above_the_best_central_difference_accuracy():
    # Note [Entry tolerance]: the best relative accuracy of a central difference is about
    # eps ** (2/3); the default must leave room above it in every float dtype.
    for dtype in (np.float16, np.float32, np.float64):
        assert default_rtol(dtype) >= float(np.finfo(dtype).eps) ** (2 / 3)


def test_roundoff_factor_is_32():
    assert ROUNDOFF_FACTOR == 32.0


def test_loss_value_noise_is_rounding_or_measured_noise_whichever_is_larger():
    # ROUNDOFF_FACTOR * eps * |f0| on powers of two is exact: 32 * 2**-52 * 4 = 2**-45.
    eps = np.array([EPS64, EPS64, EPS32])
    noise = loss_value_noise(-4.0, eps)
    np.testing.assert_array_equal(noise, [2.0**-45, 2.0**-45, 32 * EPS32 * 4], strict=True)
    assert noise.dtype == np.float64
    # A measured level above rounding replaces it; one below leaves rounding in place.
    np.testing.assert_array_equal(loss_value_noise(-4.0, eps, 1e-9), [1e-9, 1e-9, 32 * EPS32 * 4])
    np.testing.assert_array_equal(loss_value_noise(-4.0, EPS64, 1e-20), 2.0**-45)


def test_loss_value_noise_of_a_zero_loss_is_the_measured_level():
    np.testing.assert_array_equal(loss_value_noise(0.0, np.full(2, EPS64)), [0.0, 0.0])
    np.testing.assert_array_equal(loss_value_noise(0.0, np.full(2, EPS64), 3e-12), [3e-12] * 2)


def test_entry_tolerance_formula():
    # atol + rtol * max(|analytic|, |numeric|) + error_bar, on binary fractions: exact.
    analytic = np.array([1.0, -3.0, 0.0, -0.5])
    numeric = np.array([2.0, 2.0, 0.0, 0.25])
    error_bar = np.array([0.5, 0.0, 0.25, 0.0])
    tol = entry_tolerance(analytic, numeric, error_bar, rtol=0.25, atol=0.125)
    np.testing.assert_array_equal(tol, [1.125, 0.875, 0.375, 0.25], strict=True)


def test_entry_tolerance_with_one_rtol_per_entry():
    tol = entry_tolerance(
        np.array([4.0, 4.0]),
        np.array([-8.0, 2.0]),
        np.zeros(2),
        rtol=np.array([2.0**-10, 2.0**-3]),
        atol=0.0,
    )
    np.testing.assert_array_equal(tol, [8 * 2.0**-10, 4 * 2.0**-3], strict=True)


def test_entry_tolerance_on_hand_computed_numbers():
    # A float64 entry: 1e-5 * 0.643341 + 6.4e-6 error bar + 1e-8 atol = 1.2843410e-5.
    tol = entry_tolerance(
        np.array([0.0804176]), np.array([0.643341]), np.array([6.4e-6]), rtol=1e-5, atol=1e-8
    )
    np.testing.assert_allclose(tol, [1.284341e-5], rtol=4 * EPS64)  # three roundings


def test_entry_tolerance_propagates_nan():
    # A NaN estimate must not produce a finite tolerance that could pass.
    tol = entry_tolerance(np.array([1.0]), np.array([np.nan]), np.array([0.0]), rtol=1e-5, atol=0.0)
    assert np.isnan(tol[0])
