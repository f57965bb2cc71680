"""The assertion helpers: pass right gradients, raise the full report on wrong ones."""

from __future__ import annotations

import importlib
import multiprocessing
import pickle
import sys
import types
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np
import pytest

from gradproof import CheckResult, Verdict, check, corpus
from gradproof.errors import (
    BackendUnavailableError,
    GradientMismatchError,
    GradproofError,
    InputError,
)
from gradproof.report.text import render_result
from gradproof.testing import (
    HEADLINE_WIDTH,
    GradientAssertions,
    assert_function,
    assert_gradients,
    assert_jax_function,
    assert_module,
)


def _shipped_error(network) -> GradientMismatchError:
    with pytest.raises(GradientMismatchError) as caught:
        assert_gradients(network.loss, network.shipped_grad, network.params)
    return caught.value


# -- assert_gradients ---------------------------------------------------------------------------
def test_corrected_backward_passes_and_returns_the_result(network):
    result = assert_gradients(network.loss, network.corrected_grad, network.params)
    assert isinstance(result, CheckResult)
    assert result.passed
    assert [p.name for p in result.params] == ["W1", "b1", "W2", "b2", "W3", "b3"]


def test_shipped_backward_raises_the_full_report(network):
    message = str(_shipped_error(network))
    for expected in ("W2", "b1", "2 × numeric", "4 × numeric", "Diagnosis"):
        assert expected in message, expected
    assert "W2: analytic = 2 × numeric on every entry" in message
    assert "b1: analytic = 4 × numeric on every entry" in message


def test_the_first_line_names_every_wrong_parameter_with_its_diagnosis(network):
    first = str(_shipped_error(network)).splitlines()[0]
    assert first == "wrong gradients: b1 (4× too large), W2 (2× too large)"
    assert len(first) <= HEADLINE_WIDTH


def test_the_message_goes_on_with_the_verbose_report(network):
    error = _shipped_error(network)
    _, blank, *rest = str(error).splitlines()
    assert blank == ""
    assert "\n".join(rest) == render_result(error.result, verbose=True)
    # Verbose lists every wrong entry: W2 has 4, more than the 3 a short report shows.
    assert error.result["W2"].n_failed == 4
    assert all(f"{entry.name} " in str(error) for entry in error.result["W2"].failures)
    assert "more wrong entr" not in str(error)


def test_the_error_carries_the_result_and_is_an_assertion_error(network):
    error = _shipped_error(network)
    assert isinstance(error, AssertionError)
    assert isinstance(error, GradproofError)
    assert isinstance(error.result, CheckResult)
    assert error.result.verdict is Verdict.FAIL
    assert set(error.result.suspects) == {"W2", "b1"}
    with pytest.raises(AssertionError, match=r"^wrong gradients: b1 "):
        assert_gradients(network.loss, network.shipped_grad, network.params)


def test_a_single_wrong_parameter_is_named_in_the_singular():
    w = np.array([1.0, -2.0, 3.0])
    with pytest.raises(GradientMismatchError) as caught:
        assert_gradients(lambda p: np.sum(p**2), lambda p: -2 * p, w)
    assert str(caught.value).splitlines()[0] == "wrong gradient: params (sign flipped)"


def _first_line(loss, grad, params) -> str:
    with pytest.raises(GradientMismatchError) as caught:
        assert_gradients(loss, grad, params, seed=0)
    return str(caught.value).splitlines()[0]


def _quadratic(p):
    return sum(np.sum(v**2) for v in p.values())


def _scaled(**factors):
    return lambda p: {k: factors.get(k, 1.0) * 2 * v for k, v in p.items()}


_SQUARE = {"W": np.arange(1.0, 10.0).reshape(3, 3), "b": np.array([1.0, -2.0])}


def _off_entry(p):
    g = {k: 2 * v for k, v in p.items()}
    g["W"] = g["W"].copy()
    g["W"][1, 2] += 1.0
    return g


FIRST_LINES = {
    "scale": (_scaled(W=2.0), "wrong gradient: W (2× too large)"),
    "too-small": (_scaled(b=0.25), "wrong gradient: b (4× too small)"),
    "sign": (_scaled(W=-1.0), "wrong gradient: W (sign flipped)"),
    "sign-and-scale": (_scaled(b=-3.0), "wrong gradient: b (sign flipped, 3× too large)"),
    "few-entries": (_off_entry, "wrong gradient: W (1 entry wrong)"),
    "transposed": (
        lambda p: {"W": 2 * p["W"].T, "b": 2 * p["b"]},
        "wrong gradient: W (transposed)",
    ),
    "zeros": (lambda p: {"W": 2 * p["W"], "b": 0 * p["b"]}, "wrong gradient: b (all zeros)"),
    "two": (_scaled(W=2.0, b=4.0), "wrong gradients: W (2× too large), b (4× too large)"),
}


@pytest.mark.parametrize(("grad", "expected"), list(FIRST_LINES.values()), ids=list(FIRST_LINES))
def test_the_first_line_gives_the_verdict_in_a_few_words(grad, expected):
    first = _first_line(_quadratic, grad, _SQUARE)
    assert first == expected
    assert len(first) <= HEADLINE_WIDTH


def test_the_first_line_of_many_wrong_parameters_fits_and_counts_the_rest():
    params = {f"layer{i}_weight": np.full(3, 1.0 + i) for i in range(8)}
    first = _first_line(_quadratic, _scaled(**dict.fromkeys(params, 2.0)), params)
    assert len(first) <= HEADLINE_WIDTH
    assert first.startswith("wrong gradients: layer0_weight (2× too large)")
    shown = first.count("_weight")
    assert first.endswith(f" and {8 - shown} more")


def test_a_long_parameter_name_is_cut_to_fit_the_first_line():
    name = "encoder_block_11_attention_output_projection_weight"
    first = _first_line(_quadratic, _scaled(**{name: 2.0}), {name: np.ones(2)})
    assert len(first) <= HEADLINE_WIDTH
    assert first.startswith("wrong gradient: encoder_block_11_attention")


def test_options_reach_the_check(network):
    result = assert_gradients(
        network.loss, network.corrected_grad, network.params, mode="directional", rtol=1e-4
    )
    assert result.mode == "directional"
    assert result.rtol == 1e-4


def test_invalid_options_raise_the_checks_input_error(network):
    with pytest.raises(InputError, match="`mode` must be one of"):
        assert_gradients(network.loss, network.corrected_grad, network.params, mode="fast")


# -- inconclusive checks ------------------------------------------------------------------------
@pytest.fixture
def kink():
    case = corpus.get_case("abs-at-zero")
    # The premise: |w| at w = 0 with its correct subgradient cannot be judged, only accepted.
    assert check(case.loss, case.grad, case.params).verdict is Verdict.INCONCLUSIVE
    return case


def test_an_inconclusive_check_passes_by_default(kink):
    result = assert_gradients(kink.loss, kink.grad, kink.params)
    assert result.verdict is Verdict.INCONCLUSIVE
    assert result.inconclusive == ("w",)


def test_an_inconclusive_check_fails_when_not_allowed(kink):
    with pytest.raises(GradientMismatchError) as caught:
        assert_gradients(kink.loss, kink.grad, kink.params, allow_inconclusive=False)
    error = caught.value
    assert error.result.verdict is Verdict.INCONCLUSIVE
    assert error.result.suspects == ()
    first, second, *_ = str(error).splitlines()
    assert first == "inconclusive gradient check: w (kink)"
    assert second.startswith("Nothing wrong, but not every entry could be judged (`w`: 3 of 6 ")
    assert "`allow_inconclusive=False`" in second
    assert "Inconclusive entries" in str(error)  # the report lists them: w[0], w[3], w[4]
    assert all(f"w[{i}]" in str(error) for i in (0, 3, 4))


def test_a_wrong_gradient_at_a_kink_still_fails_when_inconclusive_is_allowed(kink):
    def wrong(p):
        g = kink.grad(p)
        return {"w": g["w"], "b": 3 * g["b"]}

    # `b` has one entry: no factor is claimed from a single value (issue 14).
    with pytest.raises(
        GradientMismatchError, match=r"^wrong gradient: b \(its one entry wrong\)\n"
    ):
        assert_gradients(kink.loss, wrong, kink.params, allow_inconclusive=True)


def test_an_interrupted_check_stops_the_run_instead_of_passing(network):
    calls = {"n": 0}

    def interrupted_loss(p):
        calls["n"] += 1
        if calls["n"] == 60:  # after the 43 set-up evaluations, during the sweep
            raise KeyboardInterrupt
        return network.loss(p)

    assert check(interrupted_loss, network.corrected_grad, network.params).interrupted
    calls["n"] = 0
    with pytest.raises(KeyboardInterrupt, match="interrupted after"):
        assert_gradients(interrupted_loss, network.corrected_grad, network.params)


# -- GradientAssertions (what the pytest fixture returns) ----------------------------------------
def test_call_keywords_override_defaults_and_forced_options_override_both():
    assertions = GradientAssertions({"mode": "directional", "seed": 1, "rtol": 1e-3}, {"seed": 7})
    assert assertions.options() == {"mode": "directional", "seed": 7, "rtol": 1e-3}
    assert assertions.options(mode="full", seed=2) == {"mode": "full", "seed": 7, "rtol": 1e-3}


def test_assertions_run_the_check_with_the_merged_options(network):
    assertions = GradientAssertions({"mode": "directional", "rtol": 1e-3}, {"seed": 5})
    result = assertions(network.loss, network.corrected_grad, network.params, rtol=1e-4)
    assert (result.mode, result.rtol, result.seed) == ("directional", 1e-4, 5)
    with pytest.raises(GradientMismatchError, match="W2"):
        assertions(network.loss, network.shipped_grad, network.params)


def test_assertions_show_their_options():
    assertions = GradientAssertions({"seed": 1}, {"mode": "full"})
    assert repr(assertions) == "GradientAssertions(defaults={'seed': 1}, forced={'mode': 'full'})"


def test_assertions_are_immutable():
    options = {"seed": 1}
    assertions = GradientAssertions(options)
    options["seed"] = 2  # the caller's dict was copied
    assert assertions.options() == {"seed": 1}
    with pytest.raises(TypeError):
        assertions.defaults["seed"] = 3  # type: ignore[index]
    with pytest.raises(AttributeError):
        assertions.forced = {}  # type: ignore[misc]


# -- the PyTorch and JAX wrappers, against stand-in backends --------------------------------------
def _square_result(factor: float) -> CheckResult:
    w = np.array([1.0, -2.0, 3.0])
    return check(lambda p: np.sum(p**2), lambda p: factor * p, w)


@pytest.fixture
def stand_ins(monkeypatch):
    """Install stand-in ``gradproof.torch`` and ``gradproof.jax`` that record their calls."""
    calls: list[tuple[str, tuple[object, ...], dict[str, object]]] = []
    answer = {"result": _square_result(2.0)}

    def recorder(qualified: str):
        def check_stand_in(*args, **options):
            calls.append((qualified, args, options))
            return answer["result"]

        return check_stand_in

    for name, functions in (
        ("torch", ("check_function", "check_module")),
        ("jax", ("check_function",)),
    ):
        module = types.ModuleType(f"gradproof.{name}")
        for function in functions:
            setattr(module, function, recorder(f"{name}.{function}"))
        monkeypatch.setitem(sys.modules, f"gradproof.{name}", module)
    return calls, answer


def _fn(x):
    return x


WRAPPERS = [
    pytest.param(assert_function, (_fn, 1.0, 2.0), "torch.check_function", id="assert_function"),
    pytest.param(assert_module, ("module", ("x",), _fn), "torch.check_module", id="assert_module"),
    pytest.param(assert_jax_function, (_fn, 1.0), "jax.check_function", id="assert_jax_function"),
]


@pytest.mark.parametrize(("helper", "args", "called"), WRAPPERS)
def test_wrappers_forward_their_arguments_and_return_a_passing_result(
    stand_ins, helper, args, called
):
    calls, answer = stand_ins
    result = helper(*args, rtol=1e-3, seed=4)
    assert result is answer["result"]
    # allow_inconclusive is the helper's own: the backend's check never sees it.
    assert calls == [(called, args, {"rtol": 1e-3, "seed": 4})]


@pytest.mark.parametrize(("helper", "args", "called"), WRAPPERS)
def test_wrappers_raise_like_assert_gradients(stand_ins, helper, args, called):
    _, answer = stand_ins
    answer["result"] = _square_result(4.0)
    with pytest.raises(GradientMismatchError) as wrapped:
        helper(*args)
    with pytest.raises(GradientMismatchError) as direct:
        assert_gradients(lambda p: np.sum(p**2), lambda p: 4 * p, np.array([1.0, -2.0, 3.0]))
    assert wrapped.value.result is answer["result"]
    # Identical up to the timing line, which differs between the two checks.
    assert str(wrapped.value).splitlines()[:-1] == str(direct.value).splitlines()[:-1]


@pytest.mark.parametrize(("helper", "args", "called"), WRAPPERS)
def test_wrappers_apply_allow_inconclusive(stand_ins, helper, args, called):
    _, answer = stand_ins
    case = corpus.get_case("abs-at-zero")
    answer["result"] = check(case.loss, case.grad, case.params)
    assert helper(*args).verdict is Verdict.INCONCLUSIVE
    with pytest.raises(GradientMismatchError, match="inconclusive"):
        helper(*args, allow_inconclusive=False)


def test_the_assertions_object_forwards_to_the_wrappers(stand_ins):
    calls, _ = stand_ins
    assertions = GradientAssertions({"seed": 1, "rtol": 1e-3}, {"mode": "full"})
    assertions.function(_fn, 1.0, seed=2)
    assertions.module("module", ("x",), _fn)
    assertions.jax_function(_fn, 3.0)
    assert calls == [
        ("torch.check_function", (_fn, 1.0), {"seed": 2, "rtol": 1e-3, "mode": "full"}),
        ("torch.check_module", ("module", ("x",), _fn), {"seed": 1, "rtol": 1e-3, "mode": "full"}),
        ("jax.check_function", (_fn, 3.0), {"seed": 1, "rtol": 1e-3, "mode": "full"}),
    ]


@pytest.mark.parametrize(
    ("helper", "args", "missing", "framework", "install"),
    [
        (assert_function, (_fn, 1.0), "torch", "torch", "pip install torch"),
        (assert_module, ("module", (), _fn), "torch._C", "torch", "pip install torch"),
        (assert_jax_function, (_fn, 1.0), "jaxlib", "jax", "pip install jax jaxlib"),
    ],
    ids=["torch", "torch-submodule", "jaxlib"],
)
def test_a_missing_framework_says_what_to_install(
    monkeypatch, helper, args, missing, framework, install
):
    cause = ModuleNotFoundError(f"No module named {missing!r}", name=missing)

    def import_module(name):
        raise cause

    monkeypatch.setattr(importlib, "import_module", import_module)
    with pytest.raises(BackendUnavailableError) as caught:
        helper(*args)
    error = caught.value
    assert isinstance(error, ImportError)
    assert error.framework == framework
    assert error.name == framework
    assert install in str(error)
    assert error.__cause__ is cause


def test_a_backends_own_unavailable_error_passes_through(monkeypatch):
    own = BackendUnavailableError("gradproof.torch needs torch>=2.1", framework="torch")

    def import_module(name):
        raise own

    monkeypatch.setattr(importlib, "import_module", import_module)
    with pytest.raises(BackendUnavailableError) as caught:
        assert_function(_fn, 1.0)
    assert caught.value is own


def test_an_unrelated_import_error_is_not_blamed_on_the_framework(monkeypatch):
    monkeypatch.setitem(sys.modules, "gradproof.torch", None)  # the module itself is missing
    with pytest.raises(ImportError) as caught:
        assert_function(_fn, 1.0)
    assert not isinstance(caught.value, BackendUnavailableError)
    assert caught.value.name == "gradproof.torch"


# -- the real PyTorch and JAX backends (skipped until they exist) ---------------------------------
def test_assert_function_with_pytorch():
    pytest.importorskip("gradproof.torch")
    torch: Any = pytest.importorskip("torch")

    class Cube(torch.autograd.Function):  # type: ignore[misc]
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x**3

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            return g * 2 * x**2  # planted bug: d(x^3)/dx = 3 x^2

    x = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64, requires_grad=True)
    assert assert_function(lambda t: (t**3).sum(), x).passed
    with pytest.raises(GradientMismatchError) as caught:
        assert_function(lambda t: Cube.apply(t).sum(), x)
    assert caught.value.result.verdict is Verdict.FAIL
    assert "2/3 × numeric" in str(caught.value)


def test_assert_module_with_pytorch():
    pytest.importorskip("gradproof.torch")
    torch: Any = pytest.importorskip("torch")

    class DoubledGrad(torch.autograd.Function):  # type: ignore[misc]
        @staticmethod
        def forward(ctx, x, w):
            ctx.save_for_backward(x, w)
            return x * w

        @staticmethod
        def backward(ctx, g):
            x, w = ctx.saved_tensors
            return g * w, 2 * (g * x).sum(dim=0)  # planted bug: w's gradient doubled

    class Scale(torch.nn.Module):  # type: ignore[misc]
        def __init__(self, wrong: bool) -> None:
            super().__init__()
            self.weight = torch.nn.Parameter(torch.tensor([1.5, -0.5], dtype=torch.float64))
            self.wrong = wrong

        def forward(self, x):
            return DoubledGrad.apply(x, self.weight) if self.wrong else x * self.weight

    x = torch.tensor([[1.0, 2.0], [-0.5, 0.25]], dtype=torch.float64)
    loss_fn = lambda out: (out**2).sum()  # noqa: E731
    assert assert_module(Scale(wrong=False), (x,), loss_fn).passed
    with pytest.raises(GradientMismatchError, match="weight") as caught:
        assert_module(Scale(wrong=True), (x,), loss_fn)
    assert "2 × numeric" in str(caught.value)


def test_assert_jax_function_with_jax():
    pytest.importorskip("gradproof.jax")
    jax: Any = pytest.importorskip("jax")
    jnp = jax.numpy

    @jax.custom_vjp
    def cube(x):
        return x**3

    def cube_fwd(x):
        return cube(x), x

    def cube_bwd(x, g):
        return (g * 2 * x**2,)  # planted bug: d(x^3)/dx = 3 x^2

    cube.defvjp(cube_fwd, cube_bwd)
    x = jnp.array([0.5, -1.0, 2.0])  # float32 unless x64 is enabled: judged, or inconclusive
    assert assert_jax_function(lambda t: jnp.sum(t**3), x).verdict is not Verdict.FAIL
    with pytest.raises(GradientMismatchError) as caught:
        assert_jax_function(lambda t: jnp.sum(cube(t)), x)
    assert caught.value.result.verdict is Verdict.FAIL


# -- the exceptions cross process boundaries ------------------------------------------------------
def test_gradient_mismatch_error_pickles(network):
    error = _shipped_error(network)
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is GradientMismatchError
    assert str(copy) == str(error)
    assert copy.result.to_dict() == error.result.to_dict()
    assert set(copy.result.suspects) == {"W2", "b1"}


def test_backend_unavailable_error_pickles():
    error = BackendUnavailableError("install torch", framework="torch")
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is BackendUnavailableError
    assert (str(copy), copy.framework, copy.name) == ("install torch", "torch", "torch")


def _raise_in_worker(kind: str) -> None:
    if kind == "mismatch":
        assert_gradients(lambda p: np.sum(p**2), lambda p: 4 * p, np.array([1.0, -2.0]))
    raise BackendUnavailableError("`gradproof.jax` needs JAX: pip install jax", framework="jax")


def test_both_errors_survive_the_trip_back_from_a_worker_process():
    # spawn: forking a process that has imported JAX (the backend tests) can deadlock.
    with ProcessPoolExecutor(
        max_workers=1, mp_context=multiprocessing.get_context("spawn")
    ) as pool:
        mismatch = pool.submit(_raise_in_worker, "mismatch")
        unavailable = pool.submit(_raise_in_worker, "unavailable")
        with pytest.raises(GradientMismatchError, match="2 × numeric") as caught:
            mismatch.result()
        assert caught.value.result.suspects == ("params",)
        with pytest.raises(BackendUnavailableError, match="pip install jax") as missing:
            unavailable.result()
        assert missing.value.framework == "jax"
