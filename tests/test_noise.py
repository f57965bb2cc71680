"""ECnoise: the noise level of a loss along a direction, and the advice drawn from it."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gradproof.errors import InputError
from gradproof.numerics.noise import NoiseEstimate, estimate_noise, precision_notes

EPS64 = float(np.finfo(np.float64).eps)
EPS32 = float(np.finfo(np.float32).eps)


def table_noise(u: float, seed: int = 0) -> float:
    """A standard normal number determined by the evaluation point: a seeded noise table."""
    key = int(np.float64(u).view(np.uint64))
    return float(np.random.default_rng([seed, key]).standard_normal())


# --- smooth losses -----------------------------------------------------------------------------


@pytest.mark.parametrize("x0", [0.5, 1.7, -3.0, 10.0])
def test_smooth_float64_loss_has_rounding_noise_at_most(x0):
    est = estimate_noise(lambda t: float(np.exp(x0 + t)), h=1e-6)
    f0 = math.exp(x0)
    assert est.status in ("ok", "no_noise")
    # Rounding to nearest has a standard deviation of ulp / sqrt(12), 0.14 to 0.29 eps |f|, and
    # the rounding of the argument x0 + t adds as much again times exp's condition number |x0|.
    assert EPS64 * f0 / 50 <= est.level <= 2 * EPS64 * f0 * max(1.0, abs(x0))
    assert est.n_evals == 8


def test_exact_polynomial_has_no_noise():
    est = estimate_noise(lambda t: 3.0 + 2.0 * t, h=2.0**-20)
    assert est == NoiseEstimate(
        level=EPS64 * 3.0, relative=EPS64, order=None, n_evals=8, status="no_noise"
    )


# --- known noise -------------------------------------------------------------------------------


def test_known_noise_is_estimated_within_a_small_factor():
    # ECnoise's sigma_k are root mean squares of at most 7 correlated differences: on Gaussian
    # noise with 8 points they land within a factor of 3 of sigma 98 % of the time (see Note
    # [ECnoise]), so each of these ten must, and together they must be unbiased within 1.5x.
    sigma = 1e-8
    ratios = []
    for i in range(10):
        x0 = 0.1 * i

        def loss(t: float, x0: float = x0) -> float:
            return math.exp(x0 + t) + sigma * table_noise(x0 + t)

        est = estimate_noise(loss, h=1e-6)
        assert est.status == "ok"
        assert est.order is not None and est.order >= 2  # the slope dominates first differences
        ratios.append(est.level / sigma)
    assert all(1 / 3 < r < 3 for r in ratios), ratios
    assert 1 / 1.5 < math.exp(np.mean(np.log(ratios))) < 1.5, ratios


@settings(max_examples=25, deadline=None)
@given(scale=st.floats(0.1, 10.0), seed=st.integers(0, 2**32 - 1))
def test_noise_level_scales_linearly_with_the_noise(scale, seed):
    def loss(c: float):
        return lambda t: 2.0 + 0.5 * t + c * 1e-9 * table_noise(t, seed)

    base = estimate_noise(loss(1.0), h=1e-6)
    scaled = estimate_noise(loss(scale), h=1e-6)
    assert (scaled.status, scaled.order) == (base.status, base.order)
    assert scaled.level == pytest.approx(scale * base.level, rel=1e-3)


def test_float32_rounding_noise_is_detected_at_float32_epsilon():
    rng = np.random.default_rng(0)
    w = rng.standard_normal(1000).astype(np.float32)
    p = rng.standard_normal(1000).astype(np.float32)

    def loss(t: float) -> np.float32:  # a mean softplus, computed in float32 throughout
        return np.mean(np.logaddexp(np.float32(0), w + np.float32(t) * p))

    est = estimate_noise(loss, h=1e-3, dtype=np.float32)
    assert est.status == "ok"
    assert EPS32 / 10 < est.relative < 3 * EPS32, est.relative / EPS32
    assert est.relative > 1e6 * EPS64  # far above anything float64 rounding could explain


def test_odd_number_of_points_uses_the_middle_value():
    est = estimate_noise(lambda t: 4.0 + 1e-6 * table_noise(t), h=1e-3, n_points=9)
    assert est.n_evals == 9
    assert est.status == "ok"
    assert est.relative == est.level / abs(4.0 + 1e-6 * table_noise(0.0))


# --- unsuitable steps --------------------------------------------------------------------------


def test_large_step_on_a_curved_loss_is_flagged():
    # Values within 10 % of each other, but the smooth part dominates every difference order.
    assert estimate_noise(lambda t: math.cos(t) + 10.0, h=0.1).status == "step_too_large"
    # Values spread by more than 10 %: ECnoise gives up at once.
    flagged = estimate_noise(lambda t: math.exp(50 * t), h=0.1)
    assert (flagged.status, flagged.level, flagged.order) == ("step_too_large", 0.0, None)


def test_quantised_or_constant_values_mean_the_step_is_too_small():
    quantised = estimate_noise(lambda t: np.float32(1.0 + t), h=1e-12, dtype=np.float32)
    assert quantised.status == "step_too_small"
    assert estimate_noise(lambda t: 2.0, h=1e-6).status == "step_too_small"


def test_values_straddling_zero_are_too_spread_for_ecnoise():
    # Noise around zero: the spread exceeds 10 % of the largest value, so ECnoise gives up (its
    # documented limitation); a relative noise level means nothing there anyway.
    est = estimate_noise(lambda t: 1e-3 * table_noise(t, 5), h=1.0)
    assert est.status == "step_too_large"


# --- input errors ------------------------------------------------------------------------------


@pytest.mark.parametrize("h", [0.0, -1e-6, math.inf, math.nan])
def test_bad_step_is_refused(h):
    with pytest.raises(InputError, match="`h` must be a positive finite spacing"):
        estimate_noise(lambda t: 1.0, h=h)


@pytest.mark.parametrize("n_points", [3, 0, 7.0, True])
def test_bad_point_count_is_refused(n_points):
    with pytest.raises(InputError, match="`n_points` must be an integer of at least 4"):
        estimate_noise(lambda t: 1.0, h=1e-6, n_points=n_points)


def test_non_floating_dtype_is_refused():
    with pytest.raises(InputError, match="floating numpy dtype; got int64"):
        estimate_noise(lambda t: 1.0, h=1e-6, dtype=np.int64)


def test_non_finite_or_non_scalar_values_are_refused():
    with pytest.raises(InputError, match=r"returned nan at t = -3\.5e-06"):
        estimate_noise(lambda t: math.nan, h=1e-6)
    with pytest.raises(InputError, match=r"expected a real scalar"):
        estimate_noise(lambda t: np.ones(2), h=1e-6)


# --- precision notes ---------------------------------------------------------------------------


def test_naive_log_one_minus_sigmoid_is_diagnosed():
    z = 25.0

    def naive(t: float) -> float:  # 1 - sigmoid(25) = 1.4e-11 keeps only 5 digits
        return float(np.log(1 - 1 / (1 + np.exp(-(z + t)))))

    est = estimate_noise(naive, h=1e-3)
    assert est.status == "ok"
    assert est.relative > 1e6 * EPS64
    f0 = naive(0.0)
    (note,) = precision_notes(f0, est, np.float64)
    assert "logaddexp" in note and "softplus" in note
    assert f"{est.level / abs(f0):.2g} relative" in note
    assert f"{est.level:.2g}" in note

    def stable(t: float) -> float:
        return float(-np.logaddexp(0.0, z + t))

    fixed = estimate_noise(stable, h=1e-3)
    assert precision_notes(stable(0.0), fixed, np.float64) == ()


@pytest.mark.parametrize(("f0", "words"), [(1e15, "0.22"), (-1e15, "0.22"), (1e-15, "0.22 times")])
def test_extreme_scales_suggest_rescaling(f0, words):
    est = estimate_noise(lambda t: f0 * math.exp(t), h=1e-6)
    (note,) = precision_notes(f0, est, np.float64)
    assert "Rescale" in note and f"{f0:.3g}" in note and words in note


def test_nothing_to_say_about_a_well_scaled_smooth_loss():
    est = estimate_noise(lambda t: math.exp(1.0 + t), h=1e-6)
    assert precision_notes(math.e, est, np.float64) == ()


def test_failed_estimates_give_no_noise_note():
    failed = NoiseEstimate(level=0.0, relative=0.0, order=None, n_evals=8, status="step_too_large")
    assert precision_notes(1.0, failed, np.float64) == ()


def test_noise_on_a_zero_loss_is_reported_without_a_ratio():
    noisy = NoiseEstimate(level=1e-6, relative=math.inf, order=2, n_evals=8, status="ok")
    (note,) = precision_notes(0.0, noisy, np.float32)
    assert "it is 0 at the point but its values nearby carry noise of about 1e-06" in note


def test_float32_noise_is_judged_against_float32_epsilon():
    noisy = NoiseEstimate(level=1e-9, relative=1e-9, order=3, n_evals=8, status="ok")
    assert precision_notes(1.0, noisy, np.float32) == ()  # 1e-9 is below float32's own rounding
    assert len(precision_notes(1.0, noisy, np.float64)) == 1  # but 4.5e6 float64 epsilons


def test_precision_notes_refuse_non_finite_loss():
    est = NoiseEstimate(level=0.0, relative=0.0, order=None, n_evals=8, status="step_too_small")
    with pytest.raises(InputError, match="`f0` must be the finite loss value"):
        precision_notes(math.inf, est, np.float64)
