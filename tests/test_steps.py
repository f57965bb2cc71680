"""Step sizes: eps**(1/3) scaled by max(1, |x|), snapped to each span's dtype."""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gradproof import InputError
from gradproof.numerics.steps import central_points, default_relative_step, machine_epsilon

F16, F32, F64 = np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64)


def _points(x, dtype=F64, **options):
    x = np.asarray(x, dtype=np.float64)
    return central_points(x, [(slice(0, x.size), np.dtype(dtype))], **options)


def _half_spacing(value, dtype):
    """Half the spacing of `dtype` at `value`: the most a rounding to `dtype` can move it."""
    return np.spacing(np.asarray(value).astype(dtype)).astype(np.float64) / 2


def _exact(a: float, b: float, difference: float) -> bool:
    """Whether the float64 `difference` is exactly a - b."""
    return Fraction(a) - Fraction(b) == Fraction(difference)


# -- machine epsilon and the default relative step ------------------------------------------------
@pytest.mark.parametrize(
    ("dtype", "eps"),
    [(F64, 2.0**-52), (F32, 2.0**-23), (F16, 2.0**-10), (np.dtype(np.int64), 2.0**-52)],
    ids=["float64", "float32", "float16", "int-falls-back-to-float64"],
)
def test_machine_epsilon(dtype, eps):
    assert machine_epsilon(dtype) == eps


@pytest.mark.parametrize(
    ("dtype", "expected"),
    [
        (np.float64, 6.0554544523933395e-06),  # 2**(-52/3), exact to 17 digits
        (np.float32, 4.921566601151848e-03),  # 2**(-23/3)
        (np.float16, 9.921256574801247e-02),  # 2**(-10/3)
        (np.int32, 6.0554544523933395e-06),  # not a float: float64's
    ],
    ids=["float64", "float32", "float16", "int32"],
)
def test_default_relative_step_is_the_cube_root_of_epsilon(dtype, expected):
    # 1/3 is stored 1.85e-17 low, which moves eps ** (1/3) by |ln eps| * 1.85e-17 <= 36 * 1.85e-17
    # = 6.7e-16 relative, and pow rounds once more (1.1e-16).
    np.testing.assert_allclose(default_relative_step(dtype), expected, rtol=8e-16, atol=0)
    assert type(default_relative_step(dtype)) is float


# -- the points ------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [F16, F32, F64], ids=str)
def test_points_are_representable_in_their_dtype_and_straddle_x(dtype):
    x = np.array([0.0, 0.1, -0.7, 1.0, 3.0, -250.0, 1e4], dtype=dtype).astype(np.float64)
    pts = _points(x, dtype)
    for p in (pts.plus, pts.minus):
        assert p.dtype == np.float64
        np.testing.assert_array_equal(p.astype(dtype).astype(np.float64), p, strict=True)
    assert np.all(pts.minus < x)
    assert np.all(x < pts.plus)
    np.testing.assert_array_equal(pts.width, pts.plus - pts.minus, strict=True)
    assert np.all(pts.width > 0)


@pytest.mark.parametrize("dtype", [F16, F32, F64], ids=str)
def test_default_step_is_relative_step_times_max_of_one_and_abs_x(dtype):
    x = np.array([0.0, 0.1, -0.5, 2.0, -8.0, 64.0], dtype=dtype).astype(np.float64)
    pts = _points(x, dtype)
    h = default_relative_step(dtype) * np.maximum(1.0, np.abs(x))
    # x + h is rounded in float64 and then to the dtype: off by at most half the dtype's
    # spacing there, plus one float64 spacing from the first rounding.
    bound = _half_spacing(np.abs(x) + h, dtype) + np.spacing(np.abs(x) + h)
    assert np.all(np.abs((pts.plus - x) - h) <= bound)
    assert np.all(np.abs((x - pts.minus) - h) <= bound)


def test_steps_scale_with_the_coordinate():
    pts = _points([0.1, 1e6])
    # Both widths are 2 * 6.055e-6 * max(1, |x|), each rounded by at most ulp(x) (1.2e-10 at
    # 1e6, 1.4e-17 at 0.1): the ratio is 1e6 to about 1e-11 relative.
    np.testing.assert_allclose(pts.width[1] / pts.width[0], 1e6, rtol=1e-10)
    np.testing.assert_allclose(pts.width[0], 2 * default_relative_step(F64), rtol=1e-11)


@pytest.mark.parametrize(
    ("dtype", "x", "step"),
    [
        (F64, 0.3, 1e-3),
        (F64, -5.0, 1e-7),
        (F64, 300.0, 1e-3),
        (F64, 0.0, 1e-7),
        (F32, 0.3, 1e-3),
        (F16, 2.0, 0.01),
    ],
    ids=[
        "float64",
        "float64-assignment-eps",
        "float64-large-x",
        "float64-zero",
        "float32",
        "float16",
    ],
)
def test_absolute_step_is_honoured_to_within_rounding(dtype, x, step):
    x = float(np.asarray(x, dtype=dtype))
    pts = _points([x], dtype, abs_step=step)
    # As above: half the dtype's spacing at |x| + h, plus one float64 spacing.
    bound = _half_spacing(abs(x) + step, dtype) + np.spacing(abs(x) + step)
    assert abs((pts.plus[0] - x) - step) <= bound
    assert abs((x - pts.minus[0]) - step) <= bound
    assert pts.plus[0] != x + step or dtype == F64  # the float32/16 points really were snapped


def test_array_valued_steps_apply_one_per_coordinate():
    x = np.array([0.5, 2.0, -4.0])
    absolute = _points(x, abs_step=np.array([2.0**-10, 2.0**-8, 2.0**-6]))
    # Dyadic steps on dyadic points: every point is exact, no rounding at all.
    np.testing.assert_array_equal(absolute.plus - x, [2.0**-10, 2.0**-8, 2.0**-6], strict=True)
    relative = _points(x, rel_step=np.array([2.0**-10, 2.0**-8, 2.0**-6]))
    # h = rel * max(1, |x|), also exact.
    np.testing.assert_array_equal(
        relative.width, 2 * np.array([2.0**-10, 2.0**-7, 2.0**-4]), strict=True
    )


def test_each_span_is_snapped_in_its_own_dtype():
    x = np.array([0.1, 0.1], dtype=np.float32).astype(np.float64)
    pts = central_points(x, [(slice(0, 1), F32), (slice(1, 2), F64)])
    assert pts.plus[0] == np.float32(pts.plus[0])
    assert pts.plus[1] != np.float32(pts.plus[1])
    # Each span uses its own dtype's default step: 4.9e-3 and 6.1e-6.
    np.testing.assert_allclose(pts.width / 2, [4.92e-3, 6.06e-6], rtol=2e-3)


# -- errors --------------------------------------------------------------------------------------
def test_both_steps_are_refused():
    with pytest.raises(
        InputError,
        match=r"^Both `eps`=1e-07 \(an absolute step\) and `rel_step`=0\.001 were given; "
        r"pass only one of them\.$",
    ):
        _points([1.0], abs_step=1e-7, rel_step=1e-3)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"abs_step": 0.0}, r"^`eps` must be a positive finite step; got 0\.0\. Leave it unset"),
        ({"abs_step": -1e-7}, r"^`eps` must be a positive finite step; got -1e-07\."),
        ({"abs_step": float("nan")}, r"`eps` must be a positive finite step; got nan"),
        ({"abs_step": np.inf}, r"`eps` must be a positive finite step; got inf"),
        ({"rel_step": 0.0}, r"^`rel_step` must be a positive finite step; got 0\.0"),
        ({"rel_step": np.array([1e-3, 0.0])}, r"`rel_step` must be a positive finite step"),
    ],
    ids=["eps-zero", "eps-negative", "eps-nan", "eps-inf", "rel-zero", "rel-array-with-zero"],
)
def test_non_positive_or_non_finite_steps_are_refused(options, match):
    with pytest.raises(InputError, match=match):
        _points([1.0, 2.0], **options)


def test_step_below_resolution_names_the_first_stuck_coordinate():
    x = np.array([0.5, 1000.0, 3000.0])
    with pytest.raises(
        InputError,
        match=r"^The finite-difference step is below the resolution of 2 coordinate\(s\): "
        r"`W1\[1\]` = 1000\.0 \(float64\) cannot change by less than about 1\.14e-13\. "
        r"Use a larger `eps`, or leave it unset",
    ):
        # spacing(1000.0) = 2**-43 = 1.137e-13: a 1e-14 step rounds back to x.
        _points(x, abs_step=1e-14, describe=lambda i: f"W1[{i}]")


def test_step_below_resolution_in_float32_reports_float32_spacing():
    x = np.array([0.0, 1.0])
    spans: list[tuple[slice, np.dtype[Any]]] = [(slice(0, 1), F64), (slice(1, 2), F32)]
    with pytest.raises(
        InputError,
        match=r"1 coordinate\(s\): `b` = 1\.0 \(float32\) cannot change by less than about "
        r"1\.19e-07",  # float32 spacing at 1: 2**-23
    ):
        central_points(x, spans, abs_step=1e-9, describe=lambda i: "ab"[i])


# -- properties ----------------------------------------------------------------------------------
@st.composite
def _points_in_dtype(draw):
    dtype = draw(st.sampled_from([F16, F32, F64]))
    limit = float(np.finfo(dtype).max) / 2  # room for x + h without overflow
    x = draw(
        hnp.arrays(
            dtype,
            st.integers(1, 6),
            elements=hnp.from_dtype(
                dtype,
                allow_nan=False,
                allow_infinity=False,
                min_value=-limit,
                max_value=limit,
            ),
        )
    )
    return dtype, x.astype(np.float64)


@settings(deadline=None, max_examples=50)
@given(case=_points_in_dtype())
def test_points_are_snapped_on_both_sides_for_any_magnitude(case):
    dtype, x = case
    pts = _points(x, dtype)
    np.testing.assert_array_equal(pts.plus.astype(dtype).astype(np.float64), pts.plus)
    np.testing.assert_array_equal(pts.minus.astype(dtype).astype(np.float64), pts.minus)
    assert np.all(pts.plus - x > 0)
    assert np.all(x - pts.minus > 0)
    assert np.all(pts.width > 0)
    h = default_relative_step(dtype) * np.maximum(1.0, np.abs(x))
    for i in range(x.size):
        if abs(x[i]) >= 4 * h[i]:
            # Sterbenz: x, x + h and x - h are within a factor 2 of each other (3 h would do,
            # 4 h leaves room for the snapping), so their float64 differences are exact.
            assert _exact(pts.plus[i], x[i], pts.plus[i] - x[i])
            assert _exact(x[i], pts.minus[i], x[i] - pts.minus[i])
        if dtype != F64 or abs(x[i]) >= 4 * h[i]:
            # Note [Snapped steps]: the width is the points' exact distance.
            assert _exact(pts.plus[i], pts.minus[i], pts.width[i])


_F16_MAX = float(np.finfo(np.float16).max)


@settings(deadline=None, max_examples=50)
@given(
    x=hnp.arrays(
        F16,
        st.integers(1, 6),
        elements=hnp.from_dtype(
            F16,
            allow_nan=False,
            allow_infinity=False,
            min_value=-_F16_MAX / 2,
            max_value=_F16_MAX / 2,
        ),
    )
)
def test_float16_steps_are_always_exact(x):
    # float16 values are multiples of 2**-24 below 2**16: any difference of two fits in
    # 41 bits, so every float64 subtraction of float16 points is exact, at any magnitude.
    x = x.astype(np.float64)
    pts = _points(x, F16)
    for i in range(x.size):
        assert _exact(pts.plus[i], x[i], pts.plus[i] - x[i])
        assert _exact(x[i], pts.minus[i], x[i] - pts.minus[i])
        assert _exact(pts.plus[i], pts.minus[i], pts.width[i])


def test_float64_width_straddling_zero_is_rounded_once():
    # Note [Snapped steps]: when x + h and x - h have opposite signs (|x| < h) their float64
    # distance needs more than 53 bits, so it is rounded once: a relative error of at most eps/2.
    pts = _points([3e-6])
    exact = Fraction(float(pts.plus[0])) - Fraction(float(pts.minus[0]))
    error = abs(Fraction(float(pts.width[0])) - exact) / exact
    assert error <= Fraction(np.finfo(np.float64).eps) / 2


def test_points_near_the_top_of_the_float16_range_stay_finite():
    x = np.array([60000.0])
    with np.errstate(over="ignore"):
        try:
            pts = _points(x, F16)
        except InputError:
            return  # refusing the point is acceptable too
    assert np.all(np.isfinite(pts.plus))
    assert np.all(np.isfinite(pts.width))
