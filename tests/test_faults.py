"""Never a false pass, never a lost measurement: non-finite gradients, faults, budgets, RNG state.

Each test plants one situation that once fooled the checker or threw its work away, and asserts
the verdict, the entry named, what the partial result covers, or the state left behind.
"""

from __future__ import annotations

import dataclasses
import json
import random
import sys
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import gradproof
from gradproof import InputError, UserCodeError, Verdict, check
from gradproof.report.json import to_json_text

MODES = ("full", "sampled", "directional")


def _square(p):
    return float(p @ p)


# -- non-finite and overflowing analytic values are wrong, never right ----------------------------
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
def test_a_non_finite_analytic_entry_is_wrong_and_named_in_every_mode(mode, bad):
    w = np.ones(3)
    g = 2 * w
    g[1] = bad
    result = check(_square, g, w, mode=mode)
    assert not result.passed and result.verdict is Verdict.FAIL
    assert result.suspects == ("params",)
    (failure,) = result["params"].failures
    assert failure.name == "params[1]"
    assert failure.numeric == pytest.approx(2.0, rel=1e-6)
    assert np.isnan(failure.analytic) if np.isnan(bad) else failure.analytic == bad
    # Every report renders it.
    text = str(result)
    assert "WRONG" in text and "params[1]" in text
    document = json.loads(to_json_text(result))
    assert document["passed"] is False and document["suspects"] == ["params"]


def test_one_nan_in_a_large_model_is_localised_in_directional_mode():
    w = np.random.default_rng(0).normal(size=20_000)
    g = 2 * w
    g[12_345] = np.nan
    result = check(_square, g, w, mode="directional")
    assert result.suspects == ("params",)
    assert [e.name for e in result["params"].failures] == ["params[12345]"]
    assert result.n_evals < 100


@pytest.mark.parametrize("huge", [1e200, -1e300, 1.7e308])
def test_a_huge_finite_entry_that_overflows_the_probe_is_found(huge):
    w = np.random.default_rng(1).normal(size=20_000)
    g = 2 * w
    g[123] = huge
    result = check(_square, g, w, mode="directional")
    assert result.suspects == ("params",)
    assert [e.name for e in result["params"].failures] == ["params[123]"]


def test_a_non_finite_entry_where_the_loss_is_not_finite_either_stays_inconclusive():
    # log(x) at x = 0 is -inf: no finite difference exists next to it.
    def loss(p):
        with np.errstate(divide="ignore", invalid="ignore"):
            return float(np.sum(np.where(p > 0, np.log(np.abs(p) + (p <= 0)), 0.0)) + p @ p)

    x = np.array([1.0, 2.0])
    g = 1 / x + 2 * x
    g[0] = np.inf  # and the loss stays finite: wrong
    assert check(loss, g, x).suspects == ("params",)


@given(
    bad=st.sampled_from([np.inf, -np.inf, np.nan]),
    where=st.integers(0, 9),
    mode=st.sampled_from(MODES),
)
@settings(max_examples=25, deadline=None)
def test_property_no_non_finite_gradient_ever_passes(bad, where, mode):
    x = np.linspace(-1.0, 1.0, 10)
    g = np.cos(x)
    g[where] = bad
    result = check(lambda p: float(np.sum(np.sin(p))), g, x, mode=mode)
    assert result.verdict is Verdict.FAIL
    assert [e.index for e in result["params"].failures] == [(where,)]


# -- error bars from the values differenced --------------------------------------------------------
@pytest.mark.parametrize("scale", [1e-20, 1e-150, 1e-300, 1.0, 1e150, 1e300])
def test_no_false_alarm_at_tiny_or_huge_parameters(scale):
    x = scale * np.array([1.0, -2.0, 3.0])
    result = check(
        lambda p: float(np.sum(p) + np.sum(p * (p / scale)) / 2), lambda p: 1 + p / scale, x
    )
    assert result.verdict is Verdict.PASS, str(result)


def test_the_quadratic_near_zero_is_right_not_a_factor_bug():
    # sum(x**2) at 1e-20: the loss is 3e-40 but its neighbours are 1e-11; the error bar must
    # come from the values differenced, or 2x looks like "0.9995 x numeric".
    x = np.full(3, 1e-20)
    result = check(lambda p: float(np.sum(p**2)), lambda p: 2 * p, x)
    assert result.passed, str(result)
    assert check(lambda p: float(np.sum(p**2)), lambda p: 4 * p + 1.0, x).suspects == ("params",)


def test_parameters_near_overflow_are_checked_or_refused_about_their_values():
    x = np.full(3, 1e300)
    assert check(lambda p: float(np.sum(p)), lambda p: np.ones_like(p), x).passed
    edge = np.full(2, np.finfo(np.float64).max)
    with pytest.raises(InputError, match=r"overflows float64.*largest representable value"):
        check(lambda p: float(np.sum(p / 4)), lambda p: np.full_like(p, 0.25), edge)


# -- faults keep what was measured -----------------------------------------------------------------
def _raises_at(flat: int, after: float = 1.0):
    def loss(p):
        w = p["W"]
        if w.reshape(-1)[flat] != after:
            raise ValueError("the loss is not defined here")
        return float(np.sum(w**2))

    return loss


def test_a_loss_that_raises_at_one_coordinate_names_it_and_carries_the_partial_result():
    params = {"W": np.ones((100, 4))}
    loss = _raises_at(75 * 4)  # W[75, 0]
    with pytest.raises(UserCodeError) as caught:
        check(loss, lambda p: {"W": 2 * p["W"]}, params, mode="full", noise=False)
    err = caught.value
    assert "W[75, 0]" in str(err)
    assert isinstance(err.__cause__, ValueError)
    partial = err.partial_result
    assert partial is not None and partial.interrupted and partial.stop_reason == "error"
    # Every entry before the failing one was measured, and found right.
    assert partial["W"].n_checked == 300
    assert partial["W"].n_failed == 0
    assert "Stopped because the loss raised" in str(partial)


def test_sys_exit_in_the_loss_is_a_user_code_error():
    def loss(p):
        sys.exit(0)

    with pytest.raises(UserCodeError, match=r"called sys.exit\(0\)") as caught:
        check(loss, lambda p: 2 * p, np.ones(2))
    assert isinstance(caught.value.__cause__, SystemExit)


def test_ctrl_c_during_set_up_returns_an_interrupted_result():
    calls = []

    def loss(p):
        calls.append(1)
        if len(calls) == 2:  # the repeat of the point: still setting up
            raise KeyboardInterrupt
        return float(p @ p)

    result = check(loss, lambda p: 2 * p, np.ones(3))
    assert result.interrupted and result.stop_reason == "interrupt"
    assert result.verdict is Verdict.INCONCLUSIVE and result.n_checked == 0
    assert "interrupted after 0 of 3 entries" in str(result)


def test_ctrl_c_during_the_sweep_keeps_every_finished_entry():
    calls = []

    def loss(p):
        calls.append(1)
        if len(calls) == 3 + 2 * 60 + 1:  # set-up, then 60 entries in
            raise KeyboardInterrupt
        return float(p @ p)

    result = check(loss, lambda p: 2 * p, np.ones(100), mode="full", noise=False)
    assert result.stop_reason == "interrupt"
    assert result.n_checked == 60 and result["params"].n_failed == 0


def test_a_loss_that_starts_scribbling_on_its_argument_fakes_no_kink():
    calls = []

    def loss(p):
        calls.append(1)
        value = float(np.sum(np.sin(p["W"])))
        if len(calls) > 5:
            p["W"] *= 3.0  # a training step left inside the loss
        return value

    params = {"W": np.linspace(0.1, 1.0, 12).reshape(3, 4)}
    before = params["W"].copy()
    result = check(loss, lambda p: {"W": np.cos(p["W"])}, params)
    assert result.passed, str(result)
    assert result["W"].n_inconclusive == 0
    np.testing.assert_array_equal(params["W"], before)


def test_an_integer_valued_loss_is_pointed_out_as_piecewise_constant():
    result = check(lambda p: int(np.sum(p > 0)), lambda p: np.zeros_like(p), np.ones(2))
    assert any("piecewise constant" in note for note in result.notes)


# -- budgets are caps ------------------------------------------------------------------------------
@pytest.mark.parametrize("max_evals", [15, 20, 60, 150, 400])
@pytest.mark.parametrize("mode", ["auto", "full", "sampled", "directional"])
def test_max_evals_bounds_the_whole_check(network, max_evals, mode):
    result = check(
        network.loss, network.shipped_grad, network.params, max_evals=max_evals, mode=mode
    )
    assert result.n_evals <= max_evals
    if result.stop_reason == "budget":
        assert result.interrupted
        assert any("evaluation budget" in note for note in result.notes)
    # A failing probe is a wrong gradient even when its search was cut short.
    assert set(result.suspects) <= {"W2", "b1"}


def test_a_budget_too_small_for_any_verdict_names_the_minimum(network):
    with pytest.raises(InputError, match=r"max_evals=5.*Pass `max_evals=14`"):
        check(network.loss, network.shipped_grad, network.params, max_evals=5)
    # 2 to set up, 2 per tensor: 14 is enough for a verdict. The bugs are blatant, so no
    # verdict needs the noise, and the ladder is not even asked for.
    result = check(network.loss, network.shipped_grad, network.params, max_evals=14)
    assert result.n_evals <= 14 and result.verdict is Verdict.FAIL
    assert not any("noise was" in note for note in result.notes)


def test_time_budget_is_a_wall_clock_deadline_that_returns_a_partial_result():
    import time

    def slow(p):
        time.sleep(0.002)
        return float(p @ p)

    started = time.monotonic()
    result = check(slow, lambda p: 2 * p, np.ones(2_000), mode="full", time_budget=0.5)
    # The whole sweep would take 8 s; the check returns at its deadline (slack for a busy CI).
    assert time.monotonic() - started < 4.0
    assert result.stop_reason == "deadline" and result.interrupted
    assert 0 < result.n_checked < 2_000 and result["params"].n_failed == 0


# -- the caller's world is left as found -----------------------------------------------------------
def _rng_states():
    legacy: Any = np.random.get_state()  # noqa: NPY002 - the global generator is the point
    return random.getstate(), legacy[1].tobytes(), legacy[2:]


@pytest.mark.parametrize("case", ["pass", "fail", "error", "interrupt"])
def test_seed_leaves_the_global_generators_as_found(case):
    random.seed(123)
    np.random.seed(456)  # noqa: NPY002
    before = _rng_states()

    def loss(p):
        noise = np.random.rand()  # noqa: NPY002 - a dropout-like draw, made repeatable by seed
        if case == "error" and p[0] != 1.0:
            raise RuntimeError("boom")
        if case == "interrupt" and p[1] != 1.0:
            raise KeyboardInterrupt
        return float(p @ p) * (1 + 0 * noise)

    grad = (lambda p: 3 * p) if case == "fail" else (lambda p: 2 * p)
    try:
        check(loss, grad, np.ones(3), seed=0)
    except UserCodeError:
        assert case == "error"
    assert _rng_states() == before


def test_torch_generators_are_restored_too():
    torch = pytest.importorskip("torch")
    torch.manual_seed(7)
    expected = torch.get_rng_state().clone()

    def loss(p):
        return float(p @ p) + 0 * float(torch.rand(1))

    check(loss, lambda p: 2 * p, np.ones(3), seed=0)
    assert torch.equal(torch.get_rng_state(), expected)


def test_the_torch_adapter_restores_every_global_generator():
    torch = pytest.importorskip("torch")
    from gradproof.torch import check_function, check_module

    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Dropout(0.3)).double()
    inputs = (torch.ones(5, 3, dtype=torch.float64),)
    x = torch.linspace(0.1, 1.0, 4, dtype=torch.float64, requires_grad=True)
    torch.manual_seed(7)
    np.random.seed(3)  # noqa: NPY002
    random.seed(5)
    before = (torch.get_rng_state().clone(), _rng_states())
    check_function(lambda t: torch.nn.functional.dropout(t, 0.5).sin(), x, seed=0)
    check_module(model, inputs, lambda out: out.pow(2).mean(), seed=0)
    assert torch.equal(torch.get_rng_state(), before[0])
    assert _rng_states() == before[1]


def test_the_jax_adapter_restores_pythons_and_numpys_generators():
    jax = pytest.importorskip("jax")
    from gradproof.jax import check_function

    np.random.seed(3)  # noqa: NPY002
    random.seed(5)
    before = _rng_states()
    check_function(lambda x: jax.numpy.sum(jax.numpy.sin(x)), np.linspace(0.1, 1.0, 4), seed=0)
    assert _rng_states() == before


# -- smaller defects -------------------------------------------------------------------------------
@dataclasses.dataclass
class _Layer:
    W: np.ndarray
    b: np.ndarray


def test_dataclasses_are_parameter_containers_with_named_fields():
    layer = _Layer(np.arange(6.0).reshape(2, 3) / 6, np.ones(3))

    def loss(p):
        return float(np.sum(np.tanh(p.W) * p.b))

    def grad(p):
        return _Layer((1 - np.tanh(p.W) ** 2) * p.b, np.sum(np.tanh(p.W), axis=0))

    assert check(loss, grad, layer).passed
    wrong = check(loss, lambda p: {"W": grad(p).W, "b": 2 * grad(p).b}, layer)
    assert wrong.suspects == ("b",)


def test_a_dataclass_with_fields_its_constructor_does_not_take_is_refused_clearly():
    @dataclasses.dataclass
    class Cached:
        W: np.ndarray
        norm: float = dataclasses.field(init=False, default=0.0)

    with pytest.raises(InputError, match=r"does not take \(norm\).*dataclasses.asdict"):
        check(lambda p: 0.0, lambda p: p, Cached(np.ones(2)))


def test_deep_nesting_is_an_input_error_not_a_recursion_error():
    deep: object = np.ones(2)
    for _ in range(2_000):
        deep = [deep]
    with pytest.raises(InputError, match=r"nested more than 100 containers deep"):
        check(lambda p: 0.0, deep, deep)


def test_boolean_parameters_are_called_boolean():
    with pytest.raises(InputError, match=r"`mask` has boolean dtype bool"):
        check(lambda p: 0.0, lambda p: p, {"mask": np.ones(2, dtype=bool)})
    with pytest.raises(InputError, match=r"`flag` is the boolean True"):
        check(lambda p: 0.0, lambda p: p, {"flag": True})


def test_gradproof_exports_the_worker_lost_error():
    assert issubclass(gradproof.WorkerLostError, gradproof.GradproofError)
    assert issubclass(gradproof.WorkerLostError, RuntimeError)


def test_a_torch_backward_that_returns_inf_is_wrong():
    torch = pytest.importorskip("torch")
    from gradproof.torch import check_function

    class Square(torch.autograd.Function):  # type: ignore[name-defined, misc]
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return (x**2).sum()

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            out = 2 * x * g
            out[1] = float("inf")
            return out

    x = torch.linspace(0.1, 1.0, 4, dtype=torch.float64, requires_grad=True)
    result = check_function(Square.apply, x)
    assert result.verdict is Verdict.FAIL
    assert [e.name for e in result.params[0].failures] == [f"{result.params[0].name}[1]"]


def test_a_jax_custom_vjp_that_returns_inf_is_wrong():
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    from gradproof.jax import check_function

    @jax.custom_vjp
    def f(x):
        return jnp.sum(x**2)

    def forward(x):
        return f(x), x

    def backward(x, g):
        return ((2 * x * g).at[1].set(jnp.inf),)

    f.defvjp(forward, backward)
    result = check_function(f, jnp.linspace(0.1, 1.0, 4))
    assert result.suspects == ("x",)
    assert [e.name for e in result["x"].failures] == ["x[1]"]
