"""Central differences and Richardson extrapolation, against derivatives known in closed form."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gradproof.numerics.finite_diff import central_differences, richardson
from gradproof.numerics.steps import CentralPoints, central_points, default_relative_step

EPS = float(np.finfo(np.float64).eps)
F32, F64 = np.dtype(np.float32), np.dtype(np.float64)


def _points(x, dtype=F64, **options) -> CentralPoints:
    return central_points(x, [(slice(0, x.size), dtype)], **options)


def _dyadic_points(x, h) -> CentralPoints:
    """x +- h with every value a short binary fraction: no rounding anywhere."""
    return CentralPoints(plus=x + h, minus=x - h, width=np.full(x.shape, 2 * h))


def assert_within(actual, expected, bound) -> None:
    """|actual - expected| <= bound entry by entry (bound from the error model)."""
    error = np.abs(np.asarray(actual) - np.asarray(expected))
    assert np.all(error <= bound), f"errors {error} exceed their bounds {bound}"


class Recorder:
    """A loss that keeps a copy of every vector it sees (and the last vector object itself)."""

    def __init__(self, fun, *, interrupt_at: int | None = None):
        self.fun = fun
        self.interrupt_at = interrupt_at
        self.seen: list[np.ndarray] = []
        self.last: np.ndarray | None = None

    def __call__(self, v):
        self.seen.append(v.copy())
        self.last = v
        if len(self.seen) == self.interrupt_at:
            raise KeyboardInterrupt
        return self.fun(v)


# -- known derivatives -----------------------------------------------------------------------------
def test_sum_of_sines_gives_cosines():
    x = np.linspace(-3.0, 3.0, 7)
    pts = _points(x)
    d = central_differences(lambda v: float(np.sum(np.sin(v))), x, pts)
    a, b = pts.plus - x, x - pts.minus  # the snapped steps: exact (Sterbenz) or tiny
    f_scale = np.sum(np.abs(np.sin(x))) + 1.0
    bound = (
        ((a + b) / 2) ** 2 / 6  # truncation, |sin'''| <= 1
        + np.abs(a - b) / 2  # asymmetric snapping: the estimate is f' at the midpoint, |f''| <= 1
        + 2 * x.size * EPS * f_scale / pts.width  # round-off: the sum of n sines, twice
    )
    assert np.all(bound < 1e-8)  # the bound is sharp enough to catch a wrong derivative
    assert_within(d.derivative, np.cos(x), bound)
    assert d.measured.all()
    assert d.n_evals == 2 * x.size
    assert not d.interrupted


def test_quadratic_central_difference_is_exact_in_exact_arithmetic():
    # Dyadic x and h: (x+h)**2 - (x-h)**2 = 4xh and the division by 2h are all exact.
    x = np.array([0.5, -1.25, 3.0, 0.0])
    d = central_differences(lambda v: float(np.sum(v**2)), x, _dyadic_points(x, 2.0**-6))
    np.testing.assert_array_equal(d.derivative, 2 * x, strict=True)


def test_quadratic_form_is_exact_up_to_round_off():
    rng = np.random.default_rng(7)
    n = 5
    M = rng.normal(size=(n, n))
    A = M + M.T
    b = rng.normal(size=n)
    x = rng.uniform(0.5, 3.0, size=n) * rng.choice([-1.0, 1.0], size=n)
    pts = _points(x)
    d = central_differences(lambda v: float(0.5 * v @ A @ v + b @ v), x, pts)
    a_step, b_step = pts.plus - x, x - pts.minus
    scale = 0.5 * np.abs(x) @ np.abs(A) @ np.abs(x) + np.abs(b) @ np.abs(x)
    bound = (
        2 * (2 * n * EPS * scale) / pts.width  # round-off: A @ v then a dot, each <= n eps
        + np.abs(np.diag(A)) * np.abs(a_step - b_step) / 2  # f'' (a - b) / 2 from snapping
    )
    assert np.all(bound < 1e-8)
    assert_within(d.derivative, A @ x + b, bound)


def test_float32_points_are_divided_by_the_distance_really_travelled():
    # A linear loss: (f(plus) - f(minus)) / (plus - minus) = c exactly, however the float32
    # snapping moved the points. Dividing by the requested 2h instead would be off by the
    # snapping, up to spacing32(x) / h ~ 6e-8 / 5e-3 ~ 1e-5 relative.
    x = np.array([0.1, 0.7, 1.3, 2.9], dtype=np.float32).astype(np.float64)
    c = np.array([1.0, -2.0, 0.5, 3.0])
    pts = _points(x, F32)
    d = central_differences(lambda v: float(c @ v), x, pts)
    bound = 2 * 4 * EPS * (np.abs(c) @ np.abs(x) + 1) / pts.width  # round-off of a dot, twice
    assert_within(d.derivative, c, bound)
    h = default_relative_step(F32) * np.maximum(1.0, np.abs(x))
    requested = (d.f_plus - d.f_minus) / (2 * h)
    assert np.max(np.abs(requested - c)) > 100 * np.max(bound)


@settings(deadline=None, max_examples=50)
@given(x=st.floats(-2.0, 2.0), h=st.floats(2e-3, 2e-2))
def test_error_is_second_order_in_the_step(x, h):
    # exp: D(h) = e^x sinh(h) / h = e^x (1 + h**2/6 + h**4/120 + ...), so the error ratio
    # e(h) / e(h/2) = 4 (1 + 3 h**2 / 80 + ...): 1.5e-5 off 4 at h = 2e-2. Round-off
    # (~2 eps e^x / h) is at most 48 eps / h**3 = 1.3e-6 of the truncation at h/2 = 1e-3.
    point = np.array([x])
    errors = []
    for step in (h, h / 2):
        d = central_differences(lambda v: float(np.exp(v[0])), point, _points(point, abs_step=step))
        errors.append(d.derivative[0] - np.exp(x))
    np.testing.assert_allclose(errors[0] / errors[1], 4.0, rtol=5e-5)


# -- which coordinates, and what the function sees -------------------------------------------------
def test_indices_measure_only_those_coordinates_in_order():
    x = np.array([0.5, -1.0, 2.0, 0.25, 3.0, -0.75])
    pts = _points(x)
    loss = Recorder(lambda v: float(np.sum(v**2)))
    d = central_differences(loss, x, pts, indices=np.array([4, 1]))
    np.testing.assert_array_equal(d.measured, [False, True, False, False, True, False])
    assert d.n_evals == 4 == len(loss.seen)
    assert np.isnan(d.derivative[[0, 2, 3, 5]]).all()
    assert np.isnan(d.f_plus[[0, 2, 3, 5]]).all() and np.isnan(d.f_minus[[0, 2, 3, 5]]).all()
    # A quadratic is exact up to round-off (4 eps |f| / width) and snapping (|a - b| f''/2).
    bound = 4 * EPS * np.sum(x**2) / pts.width + np.abs((pts.plus - x) - (x - pts.minus))
    assert_within(d.derivative[[1, 4]], 2 * x[[1, 4]], bound[[1, 4]])
    moved = [int(np.flatnonzero(v != x)[0]) for v in loss.seen]
    assert moved == [4, 4, 1, 1]


def test_each_call_sees_x_with_one_coordinate_moved_plus_then_minus():
    x = np.array([1.0, -2.0, 0.5])
    before = x.copy()
    pts = _points(x)
    loss = Recorder(lambda v: float(np.sum(np.cos(v))))
    central_differences(loss, x, pts)
    np.testing.assert_array_equal(x, before, strict=True)  # x is not modified
    assert loss.last is not None and not np.shares_memory(loss.last, x)
    assert len(loss.seen) == 6
    for call, seen in enumerate(loss.seen):
        i, sign = divmod(call, 2)
        expected = x.copy()
        expected[i] = pts.plus[i] if sign == 0 else pts.minus[i]
        np.testing.assert_array_equal(seen, expected, strict=True)


def test_function_values_are_kept():
    x = np.array([1.0, 2.0])
    pts = _points(x)
    d = central_differences(lambda v: float(v[0] * 10 + v[1]), x, pts)
    np.testing.assert_array_equal(d.f_plus, [pts.plus[0] * 10 + 2.0, 10.0 + pts.plus[1]])
    np.testing.assert_array_equal(d.f_minus, [pts.minus[0] * 10 + 2.0, 10.0 + pts.minus[1]])


# -- Ctrl-C ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("interrupt_at", "n_measured"),
    [(1, 0), (2, 0), (5, 2), (6, 2), (10, 4)],
    ids=["first-call", "first-minus", "third-plus", "third-minus", "last-call"],
)
def test_interrupt_returns_what_was_measured(interrupt_at, n_measured):
    x = np.linspace(0.5, 2.5, 5)
    before = x.copy()
    pts = _points(x)
    loss = Recorder(lambda v: float(np.sum(v**3)), interrupt_at=interrupt_at)
    d = central_differences(loss, x, pts)
    assert d.interrupted
    assert d.n_evals == interrupt_at  # the interrupted call counts: it was made
    np.testing.assert_array_equal(d.measured, np.arange(5) < n_measured)
    assert np.isfinite(d.derivative[:n_measured]).all()
    assert np.isnan(d.derivative[n_measured:]).all()
    assert np.isnan(d.f_plus[n_measured:]).all()  # the half-done coordinate is not kept
    # d/dx x**3 = 3 x**2: truncation h**2 * 6 / 6 <= (1.6e-5)**2 plus round-off ~ 1e-10.
    np.testing.assert_allclose(d.derivative[:n_measured], 3 * x[:n_measured] ** 2, rtol=1e-9)
    np.testing.assert_array_equal(x, before, strict=True)
    # The work vector the function held is restored: no perturbation is left behind.
    np.testing.assert_array_equal(loss.last, x, strict=True)
    assert all(np.count_nonzero(v != x) <= 1 for v in loss.seen)


def test_interrupt_with_indices_restores_the_coordinate_being_measured():
    x = np.array([1.0, 2.0, 3.0, 4.0])
    loss = Recorder(lambda v: float(np.sum(v)), interrupt_at=3)
    d = central_differences(loss, x, _points(x), indices=np.array([3, 0]))
    assert d.interrupted and d.n_evals == 3
    np.testing.assert_array_equal(d.measured, [False, False, False, True])
    assert loss.seen[-1][0] != x[0]  # the interrupted call had coordinate 0 moved...
    np.testing.assert_array_equal(loss.last, x, strict=True)  # ...and it was put back


def test_no_interrupt_is_reported_when_the_sweep_completes():
    x = np.ones(3)
    d = central_differences(Recorder(lambda v: 1.0, interrupt_at=7), x, _points(x))
    assert not d.interrupted and d.n_evals == 6 and d.measured.all()


# -- non-finite loss values ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("plus_value", "minus_value"),
    [(np.nan, 1.0), (1.0, np.nan), (np.nan, np.nan), (np.inf, np.inf), (-np.inf, -np.inf)],
    ids=["nan-plus", "nan-minus", "nan-both", "inf-both", "minus-inf-both"],
)
def test_non_finite_loss_values_give_nan(plus_value, minus_value):
    x = np.array([1.0, 2.0])
    pts = _points(x)

    def loss(v):
        if v[0] > x[0]:
            return plus_value
        if v[0] < x[0]:
            return minus_value
        return float(np.sum(v))

    d = central_differences(loss, x, pts)
    assert np.isnan(d.derivative[0])
    assert d.measured[0]  # it was measured; there is just no estimate
    # The other coordinate is unaffected: a sum's derivative, to round-off 4 eps |f| / width.
    np.testing.assert_allclose(d.derivative[1], 1.0, rtol=0, atol=4 * EPS * 3.0 / pts.width[1])


@pytest.mark.parametrize(
    ("plus_value", "minus_value"),
    [(np.inf, 1.0), (1.0, -np.inf), (np.inf, -np.inf)],
    ids=["inf-plus", "minus-inf-minus", "opposite-infinities"],
)
def test_an_infinite_loss_on_one_side_gives_nan(plus_value, minus_value):
    x = np.array([1.0])
    d = central_differences(lambda v: plus_value if v[0] > x[0] else minus_value, x, _points(x))
    assert np.isnan(d.derivative[0])


# -- Richardson extrapolation ----------------------------------------------------------------------
def test_richardson_formula():
    estimate, error = richardson(np.array([1.0, 2.0, -3.0]), np.array([1.5, 1.0, -3.0]))
    # (4 fine - coarse) / 3 and |fine - coarse|, on numbers exact in binary up to one rounding.
    np.testing.assert_allclose(estimate, [5.0 / 3.0, 2.0 / 3.0, -3.0], rtol=2 * EPS)
    np.testing.assert_array_equal(error, [0.5, 1.0, 0.0], strict=True)


def _two_steps(fun, x, h):
    """Central differences at h and at half the realised step, as check.py takes them."""
    coarse_points = _points(x, abs_step=h)
    coarse = central_differences(fun, x, coarse_points)
    fine = central_differences(fun, x, _points(x, abs_step=coarse_points.width / 4))
    return coarse.derivative, fine.derivative


@pytest.mark.parametrize(("fun", "derivative"), [(np.exp, np.exp), (np.sin, np.cos)], ids=str)
def test_richardson_is_fourth_order(fun, derivative):
    # At x = 0.5 with dyadic steps nothing is snapped. The central difference is
    # f'(x) sinh(h)/h for exp and f'(x) sin(h)/h for sin; both have h**4 coefficient 1/120,
    # so the extrapolation's error is -f'(x) h**4 / 480 times (1 + O(h**2)): the next term
    # is 480/16128 h**2 = 1.2e-4
    # relative at h = 1/16, and round-off (~3 eps / h) is below 1e-5 of it.
    x = np.array([0.5])
    errors = []
    for h in (2.0**-4, 2.0**-5, 2.0**-6):
        coarse, fine = _two_steps(lambda v: float(fun(v[0])), x, h)
        estimate, _ = richardson(coarse, fine)
        error = estimate[0] - derivative(0.5)
        np.testing.assert_allclose(error, -derivative(0.5) * h**4 / 480, rtol=2.5e-4)
        errors.append(error)
    # Hence halving the step divides the error by 16.
    np.testing.assert_allclose(errors[0] / errors[1], 16.0, rtol=5e-4)
    np.testing.assert_allclose(errors[1] / errors[2], 16.0, rtol=5e-4)


@settings(deadline=None, max_examples=50)
@given(x=st.floats(-3.0, 3.0), h=st.floats(1e-3, 1e-1), which=st.sampled_from(["exp", "sin"]))
def test_richardson_error_bounds_the_error_of_its_estimate(x, h, which):
    # |fine - coarse| ~ |f'''| h**2 / 8, the estimate's error ~ |f^(5)| h**4 / 480: the bound
    # holds by a factor 60 / h**2 where truncation dominates. Keep away from the zeros of
    # f''' (cos for sin), where there is no truncation to measure.
    fun: Callable[[float], float] = math.exp if which == "exp" else math.sin
    dfun: Callable[[float], float] = math.exp if which == "exp" else math.cos
    third = math.exp(x) if which == "exp" else -math.cos(x)
    if abs(third) < 0.1:
        return
    point = np.array([x])
    coarse, fine = _two_steps(lambda v: float(fun(v[0])), point, h)
    estimate, error = richardson(coarse, fine)
    assert abs(estimate[0] - dfun(x)) <= error[0]
