"""Trustworthy verdicts: kinks, noise, precision, randomness and the finite-difference methods."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gradproof import InputError, Verdict, check
from gradproof.checking.check import METHODS, NondeterministicLossError


# -- kinks ---------------------------------------------------------------------------------------
def _abs_loss(w):
    return float(np.sum(np.abs(w)))


def _relu_loss(w):
    return float(np.sum(3 * np.maximum(w, 0.0)))


def _relu_grad(w):
    return 3.0 * (w > 0)  # the usual subgradient convention: relu'(0) = 0


def test_abs_at_zero_is_an_inconclusive_kink_with_its_one_sided_derivatives():
    result = check(_abs_loss, np.sign, np.array([0.0, 2.0]))
    assert result.verdict is Verdict.INCONCLUSIVE
    assert result.suspects == ()
    (entry,) = result["params"].inconclusive_entries
    assert entry.name == "params[0]"
    assert entry.reason == "kink"
    assert entry.subgradient
    # One-sided derivatives of |x| at 0 are exactly -1 and +1 (a piecewise-linear loss).
    assert (entry.left, entry.right) == pytest.approx((-1.0, 1.0), rel=1e-9)
    assert result["params"].n_inconclusive == 1
    assert "kink" in str(result)


def test_an_analytic_value_outside_the_one_sided_derivatives_is_wrong():
    result = check(_abs_loss, lambda w: np.array([5.0, 1.0]), np.array([0.0, 2.0]))
    assert result.suspects == ("params",)
    assert [e.index for e in result["params"].failures] == [(0,)]


def test_relu_exactly_at_its_kink_is_never_called_wrong():
    result = check(_relu_loss, _relu_grad, np.array([0.0, 1.0, -2.0]))
    assert result.suspects == ()
    (entry,) = result["params"].inconclusive_entries
    assert (entry.index, entry.reason) == ((0,), "kink")
    assert (entry.left, entry.right) == pytest.approx((0.0, 3.0), abs=1e-6)


def test_near_a_kink_the_step_shrinks_until_it_no_longer_crosses_it():
    # 1e-7 is inside the first step (6e-6) but outside a step 4**3 times smaller.
    result = check(_relu_loss, _relu_grad, np.array([1e-7, -1e-7, 1.0]))
    assert result.passed, str(result)
    assert result.n_refined == 2


def test_a_kink_closer_than_any_usable_step_is_inconclusive_not_wrong():
    result = check(_relu_loss, _relu_grad, np.array([1e-13, 1.0]))
    assert result.suspects == ()
    (entry,) = result["params"].inconclusive_entries
    assert entry.index == (0,)


def test_max_pool_ties_give_valid_subgradients():
    # max(a, b) at a == b: the gradient goes to the first maximal entry, as max-pooling does.
    result = check(lambda w: float(np.max(w)), lambda w: np.array([1.0, 0.0]), np.array([2.0, 2.0]))
    assert result.suspects == ()
    assert {e.reason for e in result["params"].inconclusive_entries} == {"kink"}
    assert all(e.subgradient for e in result["params"].inconclusive_entries)


def test_a_real_bug_is_still_found_next_to_a_kink():
    params = {"w": np.array([0.0, 1.0]), "v": np.array([0.5, -0.5])}

    def loss(p):
        return _relu_loss(p["w"]) + float(np.sum(p["v"] ** 2))

    result = check(loss, lambda p: {"w": _relu_grad(p["w"]), "v": 4 * p["v"]}, params)
    assert result.suspects == ("v",)
    assert result.verdict is Verdict.FAIL  # a wrong parameter outweighs a kink elsewhere
    assert result.inconclusive == ("w",)


# -- randomness ----------------------------------------------------------------------------------
def _dropout_loss(w):
    mask = np.random.rand(*w.shape) < 0.5  # noqa: NPY002 -- dropout draws from the global RNG
    return float(np.sum((w * mask / 0.5) ** 2))


def _dropout_grad(w):
    mask = np.random.rand(*w.shape) < 0.5  # noqa: NPY002 -- the same draw as the loss's
    return 2 * w * mask / 0.25


def test_a_random_loss_is_refused_with_a_clear_message():
    # Distinct weights, so two different masks cannot give the same loss; and a fixed global
    # state, so the two draws are always different masks.
    np.random.seed(7)  # noqa: NPY002 -- the loss under test draws from the global generator
    with pytest.raises(NondeterministicLossError, match=r"different values.*seed="):
        check(_dropout_loss, _dropout_grad, np.linspace(0.1, 2.0, 20) ** 2)


def test_dropout_is_checkable_with_a_seed():
    w = np.linspace(-1, 1, 6)
    assert check(_dropout_loss, _dropout_grad, w, seed=0).passed
    # Forgetting the mask in the backward pass is caught.
    result = check(_dropout_loss, lambda v: 2 * v / 0.25, w, seed=0)
    assert result.suspects == ("params",)
    assert result.seed == 0


def test_randomness_the_seed_cannot_reach_is_named():
    def loss(w):
        return float(np.sum(w**2) * np.random.default_rng().random())

    with pytest.raises(NondeterministicLossError, match=r"even with `seed=1`.*default_rng"):
        check(loss, lambda w: 2 * w, np.ones(3), seed=1)


def test_seed_must_be_an_integer():
    with pytest.raises(InputError, match="`seed` must be an integer"):
        check(_abs_loss, np.sign, np.ones(2), seed=1.5)  # type: ignore[arg-type]


# -- precision and noise -------------------------------------------------------------------------
def _tanh_loss(v):
    return np.sum(np.tanh(v) * v)


def _tanh_grad(v):
    return np.tanh(v) + v / np.cosh(v) ** 2


@pytest.fixture
def w32():
    return np.random.default_rng(3).normal(size=5).astype(np.float32)


def test_float32_parameters_are_differenced_in_float64_when_the_loss_accepts_it(w32):
    result = check(_tanh_loss, _tanh_grad, w32)
    assert result.passed
    assert any("finite differences were taken in float64" in note for note in result.notes)
    # float64 differences are far more accurate than float32's best (~1e-5 relative).
    assert result["params"].relative_difference < 1e-6
    assert check(_tanh_loss, lambda v: 1.01 * _tanh_grad(v), w32).suspects == ("params",)


def test_a_loss_that_computes_in_float32_is_judged_with_float32_error_model(w32):
    def loss(v):
        u = np.asarray(v).astype(np.float32)  # computes in float32 whatever it is given
        return np.sum(np.tanh(u) * u)

    result = check(loss, _tanh_grad, w32)
    assert result.passed, str(result)
    assert any("does not compute in float64" in note for note in result.notes)
    assert check(loss, lambda v: 1.5 * _tanh_grad(v), w32).suspects == ("params",)


def test_precision_native_keeps_float32(w32):
    result = check(_tanh_loss, _tanh_grad, w32, precision="native")
    assert result.passed
    assert result.notes == ()
    assert "float32" in result.step


def test_a_saturated_naive_logistic_loss_is_not_a_false_alarm_and_is_explained():
    # -log(1 - sigmoid(z)) at z = 24, written naively: 1 - sigmoid(z) keeps only a few digits,
    # so the loss is quantised in steps of about 3e-6. The gradient sigmoid(z) * x is right.
    x = np.array([1.0, 2.0, 3.0])

    def loss(w):
        return float(-np.log(1 - 1 / (1 + np.exp(-(w @ x)))))

    def grad(w):
        return x / (1 + np.exp(-(w @ x)))

    result = check(loss, grad, np.array([5.0, 5.0, 3.0]))
    assert result.suspects == ()
    assert result.noise_level is not None and 1e-7 < result.noise_level < 1e-5
    assert any("logaddexp" in note for note in result.notes)
    # The precise formula has no precision note at all.
    precise = check(lambda w: float(np.logaddexp(0, w @ x)), grad, np.array([5.0, 5.0, 3.0]))
    assert precise.passed and precise.notes == ()


def test_a_kink_is_not_mistaken_for_noise():
    # The noise probe crosses the kink at w[0] = 0: its "noise" grows with the step, so it is
    # rejected and no precision note appears. The ladder ran for the kink test, and says so.
    result = check(_relu_loss, _relu_grad, np.array([0.0, 1.0, -2.0]))
    assert len(result.notes) == 1, result.notes
    assert "noise was measured" in result.notes[0] and "params[0]" in result.notes[0]
    assert "found no noise above rounding" in result.notes[0]


def _hash_noise(w):
    """Deterministic pseudo-random noise in [-0.5, 0.5): a different value at every point."""
    return np.sin(w @ np.array([12.9898, 78.233, 37.719]) * 1e6) * 43758.5453 % 1.0 - 0.5


def test_noise_in_the_loss_widens_the_error_bars_instead_of_crying_wolf():
    # A smooth loss plus 1e-9 of noise: 1e7 times float64's rounding of a loss near 1.
    def loss(w):
        return float(np.sum(np.sin(w)) + 1e-9 * _hash_noise(w))

    w = np.array([0.3, 0.2, 0.1])
    result = check(loss, np.cos, w)
    assert result.suspects == (), str(result)
    # Uniform noise of width 1e-9 has a standard deviation of 1e-9 / sqrt(12) = 2.9e-10;
    # ECnoise is good to a small factor.
    assert result.noise_level is not None and 1e-10 < result.noise_level < 1e-9
    assert check(loss, lambda v: 1.01 * np.cos(v), w).suspects == ("params",)


# -- methods -------------------------------------------------------------------------------------
def _smooth(w):
    return np.sum(np.sin(w) * np.exp(w))  # complex-safe: no float(), abs or comparisons


def _smooth_grad(w):
    return (np.cos(w) + np.sin(w)) * np.exp(w)


@pytest.mark.parametrize("method", METHODS, ids=str)
def test_every_method_passes_a_correct_gradient_and_catches_a_1e_4_error(method):
    x = np.array([1.0, 2.0, 3.0])
    assert check(_smooth, _smooth_grad, x, method=method).passed
    result = check(_smooth, lambda w: _smooth_grad(w) * (1 + 1e-4), x, method=method)
    assert result.suspects == ("params",)
    assert result.method == method


@pytest.mark.parametrize(
    ("method", "per_entry"),
    [("central", 2), ("forward", 1), ("backward", 1), ("central4", 4), ("richardson", 4)],
)
def test_methods_cost_what_their_stencils_say(method, per_entry):
    x = np.linspace(0.5, 1.5, 10)
    base = check(_smooth, _smooth_grad, x, method="central", noise=False)
    result = check(_smooth, _smooth_grad, x, method=method, noise=False)
    setup = base.n_evals - 2 * x.size  # the point, checked three times
    assert result.n_evals == setup + per_entry * x.size


def test_higher_order_methods_are_more_accurate():
    x = np.array([1.0, 2.0, 3.0])
    exact = _smooth_grad(x)
    error = {}
    for m in ("forward", "central", "central4", "complex"):
        numeric = check(_smooth, _smooth_grad, x, method=m)["params"].numeric
        error[m] = float(np.max(np.abs(numeric - exact) / np.abs(exact)))
    # Forward ~ sqrt(eps) = 1e-8, central ~ eps**(2/3) = 4e-11, five-point ~ eps**(4/5) = 3e-13,
    # complex step ~ eps: each at least 10x better than the one before.
    assert error["forward"] > 10 * error["central"] > 100 * error["central4"]
    assert error["complex"] < 1e-14


def test_complex_step_falls_back_to_central_where_the_loss_is_not_complex_safe():
    def loss(w):
        return np.sum(np.abs(w) * w)  # abs breaks the complex step: |x + ih| has no i part

    result = check(loss, lambda w: 2 * np.abs(w), np.array([-1.0, 2.0]), method="complex")
    assert result.passed
    assert any("complex step disagrees with central differences at 2" in n for n in result.notes)


def test_complex_step_on_a_loss_that_refuses_complex_input():
    def loss(w):
        if np.iscomplexobj(w):
            raise TypeError("this loss takes real arrays only")
        return math.fsum(w**2)

    with pytest.raises(InputError, match=r"`method='complex'` needs a loss that accepts complex"):
        check(loss, lambda w: 2 * w, np.ones(2), method="complex")


def test_unknown_method_lists_the_choices():
    with pytest.raises(InputError, match=r"`method` must be one of 'central', 'forward'"):
        check(_smooth, _smooth_grad, np.ones(2), method="centre")
