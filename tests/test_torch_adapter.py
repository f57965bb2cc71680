"""gradproof.torch: custom Functions, modules, and the side-by-side suite against gradcheck."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import re
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")

import torch

from gradproof import CheckResult, InputError, UserCodeError, Verdict
from gradproof.checking.check import MAX_LISTED_ENTRIES, NondeterministicLossError
from gradproof.torch import JACOBIAN_MAX_ENTRIES, check_function, check_module
from tests.helpers import mask_roundoff
from tests.torch_functions import (
    CASES,
    Case,
    Gelu,
    Linear,
    Lookup,
    SinInPlace,
    Softplus,
    XSinY,
)

F64 = torch.float64


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # The tensors here are tiny: torch's intra-op threads only spin, and on a loaded CI
    # machine they make each operation thousands of times slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def randn(*shape, seed=0, dtype=F64, grad=True):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=generator, dtype=F64).to(dtype).requires_grad_(grad)


def input_of(report_name: str) -> str:
    """The input a report is about: ``d output[2]/d x`` is about ``x``."""
    return report_name.rsplit("/d ", 1)[-1]


def wrong_entries(result: CheckResult) -> dict[str, set[tuple[int, ...]]]:
    """The listed wrong entries of each input, over all the reports about it."""
    found: dict[str, set[tuple[int, ...]]] = {}
    for report in result.params:
        if report.verdict is Verdict.FAIL:
            found.setdefault(input_of(report.name), set()).update(e.index for e in report.failures)
    return found


def truncated(result: CheckResult, name: str) -> bool:
    """Whether a report about `name` lists fewer wrong entries than it found."""
    return any(r.n_failed > len(r.failures) for r in result.params if input_of(r.name) == name)


def _wrong_reports(result: Any) -> tuple[str, ...]:
    """The names of the failing reports (`suspects` names their subjects)."""
    return tuple(p.name for p in result.params if not p.passed and p.verdict.value == "fail")


# -- the module itself --------------------------------------------------------------------------
def test_import_gradproof_does_not_import_torch():
    code = "import sys, gradproof, gradproof.testing; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_missing_torch_says_how_to_install_it():
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "try:\n"
        "    import gradproof.torch\n"
        "except ImportError as error:\n"
        "    print(type(error).__name__, error.name, '|', error)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.startswith("BackendUnavailableError torch |")
    assert "pip install torch" in done.stdout
    assert "gradproof[torch]" in done.stdout


# -- check_function: correct functions ------------------------------------------------------------
CORRECT = [c for c in CASES if c.correct and "kink" not in c.bug]


@pytest.mark.parametrize("case", CORRECT, ids=[c.name for c in CORRECT])
def test_correct_functions_pass(case: Case):
    result = check_function(case.fn, *case.make_inputs())
    assert isinstance(result, CheckResult)
    assert result.passed, str(result)


@pytest.mark.parametrize("jacobian", ["full", "random"])
def test_a_correct_function_passes_in_both_reverse_modes(jacobian):
    result = check_function(
        XSinY.apply, randn(2, 3, seed=1), randn(2, 3, seed=2), jacobian=jacobian
    )
    assert result.passed, str(result)
    # Full: one copy of both inputs per output entry, and the JVP entry by entry.
    assert result.n_entries == (6 * (6 + 6) + 6 if jacobian == "full" else 6 + 6 + 1)


def test_inputs_are_left_alone():
    x, y = randn(3, seed=1), randn(3, seed=2)
    before = (x.detach().clone(), y.detach().clone())
    check_function(XSinY.apply, x, y)
    assert torch.equal(x, before[0]) and torch.equal(y, before[1])
    assert x.grad is None and y.grad is None
    assert x.requires_grad and y.requires_grad


# -- naming ---------------------------------------------------------------------------------------
def test_full_jacobian_rows_are_named_by_output_entry():
    x = randn(2, seed=3)
    result = check_function(Softplus.apply, x)
    assert [p.name for p in result.params] == ["d output[0]/d x", "d output[1]/d x"]
    assert any("full Jacobian" in note for note in result.notes)


def test_a_scalar_output_keeps_the_input_names():
    result = check_function(lambda x, w: (Softplus.apply(x) * w).sum(), randn(3), randn(3, seed=1))
    assert [p.name for p in result.params] == ["x", "w"]


def test_random_cotangents_keep_the_input_names():
    result = check_function(XSinY.apply, randn(3), randn(3, seed=1), jacobian="random")
    assert [p.name for p in result.params] == ["x", "y", "jvp(output)"]
    result = check_function(Softplus.apply, randn(3), jacobian="random", n_cotangents=2)
    assert [p.name for p in result.params] == ["x", "x (cotangent 2)"]


def test_large_outputs_use_a_random_cotangent_by_default():
    x = randn(JACOBIAN_MAX_ENTRIES + 1)
    assert [p.name for p in check_function(Softplus.apply, x).params] == ["x"]


def test_dict_inputs_are_named_by_their_keys_and_passed_as_keywords():
    def fn(*, weight, x):
        return Linear.apply(x, weight, torch.zeros(2, dtype=F64))

    inputs = {"x": randn(4, 3), "weight": randn(2, 3, seed=1)}
    result = check_function(fn, inputs, jacobian="random")
    assert result.passed, str(result)
    assert [p.name for p in result.params] == ["x", "weight"]


def test_other_arguments_pass_through_unchanged():
    table, index, scale = randn(5, 3), torch.tensor([1, 3, 1, 4]), randn(3, seed=1, grad=False)

    def fn(table, index, scale, offset):
        return Lookup.apply(table, index) * scale + offset

    result = check_function(fn, table, index, scale, 0.5, jacobian="random")
    assert result.passed, str(result)
    assert [p.name for p in result.params] == ["table"]
    assert any("`scale` does not require grad" in note for note in result.notes)


# -- check_function: planted bugs -----------------------------------------------------------------
BUGS = [c for c in CASES if not c.correct]


@pytest.mark.parametrize("case", BUGS, ids=[c.name for c in BUGS])
def test_planted_bugs_are_caught_named_and_located(case: Case):
    result = check_function(case.fn, *case.make_inputs())
    assert result.verdict is Verdict.FAIL, str(result)
    found = wrong_entries(result)
    assert set(found) == set(case.wrong), str(result)
    for name, entries in case.wrong.items():
        assert found[name] <= entries
        if not truncated(result, name):
            assert found[name] == entries, str(result)


KINDS = [c for c in BUGS if c.kind is not None]


@pytest.mark.parametrize("case", KINDS, ids=[c.name for c in KINDS])
def test_planted_bugs_are_diagnosed(case: Case):
    result = check_function(case.fn, *case.make_inputs(), jacobian="random")
    (name,) = case.wrong
    report = result[name]
    assert report.verdict is Verdict.FAIL
    assert report.diagnosis is not None and report.diagnosis.kind == case.kind, str(result)
    assert {e.index for e in report.failures} == case.wrong[name]


def test_a_wrong_factor_is_reported_with_its_value():
    class Cube(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x**3

        @staticmethod
        def backward(ctx, grad_output):
            (x,) = ctx.saved_tensors
            return grad_output * 2 * x**2

    result = check_function(Cube.apply, randn(4), jacobian="random")
    diagnosis = result["x"].diagnosis
    assert diagnosis is not None and diagnosis.kind == "scale"
    assert diagnosis.factor == pytest.approx(2 / 3, rel=1e-6)  # 2x² for 3x², up to FD noise
    assert "x" in str(result) and "gpt" not in str(result)


def test_the_report_is_json_ready_and_uses_the_display_names():
    case = next(c for c in CASES if c.name == "cumsum_off_by_one")
    result = check_function(case.fn, *case.make_inputs())
    data = json.loads(json.dumps(result.to_dict()))
    assert data["suspects"] == ["x"]  # the input, not its Jacobian rows
    wrong_rows = {p["name"] for p in data["params"] if p["verdict"] == "fail"}
    assert "d output[3]/d x" in wrong_rows
    assert {p["subject"] for p in data["params"]} == {"x"}
    assert "gpt" not in json.dumps(data)


# -- forward mode and second order ----------------------------------------------------------------
class XSinYBadJvp(XSinY):
    @staticmethod
    def jvp(ctx, x_tangent, y_tangent):
        x, y = ctx.saved_tensors
        return x_tangent * torch.sin(y) - x * torch.cos(y) * y_tangent  # sign of the y term


def test_forward_mode_runs_when_the_function_defines_a_jvp():
    result = check_function(XSinY.apply, randn(2, seed=1), randn(2, seed=2))
    assert result["jvp(output)"].passed
    assert result.passed, str(result)
    assert any("Forward mode (JVP)" in note for note in result.notes)


def test_a_wrong_jvp_is_caught_entry_by_entry():
    result = check_function(XSinYBadJvp.apply, randn(2, 2, seed=1), randn(2, 2, seed=2))
    assert result.suspects == ("jvp(output)",), str(result)
    assert result["jvp(output)"].shape == (2, 2)
    projected = check_function(
        XSinYBadJvp.apply, randn(2, 2, seed=1), randn(2, 2, seed=2), jacobian="random"
    )
    assert projected.suspects == ("jvp(output)",)
    assert projected["jvp(output)"].shape == ()


def test_forward_mode_is_off_by_default_for_functions_without_a_jvp():
    result = check_function(Softplus.apply, randn(3))
    assert not any(p.name.startswith("jvp") for p in result.params)
    with pytest.raises(InputError, match=r"Forward mode failed.*`jvp` staticmethod"):
        check_function(Softplus.apply, randn(3), forward=True)


class DoubleSoftplus(torch.autograd.Function):
    """Softplus whose backward is itself a custom Function: the sigmoid."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.nn.functional.softplus(x)

    @staticmethod
    def backward(ctx, grad_output):
        (x,) = ctx.saved_tensors
        return grad_output * SigmoidFn.apply(x)


class SigmoidFn(torch.autograd.Function):
    factor = 1.0

    @staticmethod
    def forward(ctx, x):
        s = torch.sigmoid(x)
        ctx.save_for_backward(s)
        return s

    @staticmethod
    def backward(ctx, grad_output):
        (s,) = ctx.saved_tensors
        return grad_output * s * (1 - s) * SigmoidFn.factor


def test_second_order_passes_a_differentiable_backward(monkeypatch):
    result = check_function(DoubleSoftplus.apply, randn(3), second_order=True)
    assert result.passed, str(result)
    names = [p.name for p in result.params]
    assert "x (2nd order)" in names and "cotangent of output (2nd order)" in names


def test_second_order_catches_a_wrong_double_backward(monkeypatch):
    monkeypatch.setattr(SigmoidFn, "factor", 1.5)
    first = check_function(DoubleSoftplus.apply, randn(3))
    assert first.passed  # the first-order backward is right
    result = check_function(DoubleSoftplus.apply, randn(3), second_order=True)
    assert _wrong_reports(result) == ("x (2nd order)",), str(result)
    assert result.suspects == ("x",)  # the subject of the report
    diagnosis = result["x (2nd order)"].diagnosis
    assert diagnosis is not None and diagnosis.kind == "scale"


def test_second_order_fails_a_backward_that_cannot_be_differentiated():
    class Once(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x**2

        @staticmethod
        @torch.autograd.function.once_differentiable
        def backward(ctx, grad_output):
            (x,) = ctx.saved_tensors
            return 2 * x * grad_output

    result = check_function(Once.apply, randn(3), second_order=True)
    assert set(_wrong_reports(result)) == {
        "x (2nd order)",
        "cotangent of output (2nd order)",
    }
    diagnosis = result["x (2nd order)"].diagnosis
    assert diagnosis is not None and diagnosis.kind == "zero"
    assert any("`@once_differentiable`" in note for note in result.notes)


# -- structural checks --------------------------------------------------------------------------
def test_a_backward_that_is_not_zero_for_a_zero_cotangent_is_reported():
    class Offset(Softplus):
        @staticmethod
        def backward(ctx, grad_output):
            (x,) = ctx.saved_tensors
            return grad_output * torch.sigmoid(x) + 0.1

    result = check_function(Offset.apply, randn(3), jacobian="random")
    assert result.suspects == ("x",)
    assert any("zero cotangent" in note for note in result.notes), result.notes


def test_a_nondeterministic_backward_is_reported():
    class Jittery(Softplus):
        @staticmethod
        def backward(ctx, grad_output):
            (x,) = ctx.saved_tensors
            return grad_output * torch.sigmoid(x) * (1 + 1e-13 * torch.rand_like(x))

    result = check_function(Jittery.apply, randn(3))
    assert any("backward is not deterministic" in note for note in result.notes), result.notes
    assert result.verdict is not Verdict.FAIL  # 1e-13 is far below any tolerance


def test_a_nondeterministic_forward_needs_a_seed():
    def noisy(x):
        return torch.nn.functional.dropout(Softplus.apply(x), p=0.5, training=True)

    with pytest.raises(NondeterministicLossError, match="seed="):
        check_function(noisy, randn(6))
    result = check_function(noisy, randn(6), seed=0)
    assert result.passed, str(result)


def test_a_backward_that_overwrites_grad_output_is_reported():
    result = check_function(SinInPlace.apply, randn(4))
    assert result.passed, str(result)  # the gradient itself is right
    assert any("modified its `grad_output` in place" in note for note in result.notes)


def test_a_gradient_of_the_wrong_shape_is_refused():
    class Transposed(torch.autograd.Function):
        @staticmethod
        def forward(ctx, a, b):
            ctx.save_for_backward(a, b)
            return a @ b

        @staticmethod
        def backward(ctx, grad_output):
            a, b = ctx.saved_tensors
            return grad_output @ b.T, grad_output.T @ a  # (3, 2) for a (2, 3) input

    with pytest.raises(InputError, match=r"malformed gradient for `b`.*\[3, 2\]"):
        check_function(Transposed.apply, randn(4, 2), randn(2, 3, seed=1))


# -- bad input ------------------------------------------------------------------------------------
def test_a_function_that_returns_no_tensor_is_refused():
    with pytest.raises(InputError, match="returned a float; expected a tensor"):
        check_function(lambda x: float(x.sum()), randn(3))


def test_a_function_without_floating_outputs_is_refused():
    with pytest.raises(
        InputError,
        match=r"no differentiable floating-point tensor with entries \(output \(torch.int64\)\)",
    ):
        check_function(lambda x: torch.argmax(x), randn(3))


def test_integer_outputs_beside_floating_ones_are_skipped():
    result = check_function(lambda x: (Softplus.apply(x), torch.argmax(x)), randn(3))
    assert result.passed
    assert result.params[0].name == "d output0[0]/d x"


def test_inputs_that_do_not_require_grad_are_refused_with_the_fix():
    with pytest.raises(InputError, match=r"No input .* requires grad .*requires_grad_\(\)"):
        check_function(Softplus.apply, randn(3, grad=False))


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"jacobian": "all"}, "`jacobian` must be one of 'auto', 'full', 'random'; got 'all'"),
        ({"n_cotangents": 0}, "`n_cotangents` must be a positive integer"),
        ({"precision": "double"}, "`precision` must be one of 'auto', 'native'"),
        ({"loss_batch": len}, "Unknown option `loss_batch`.*`vmap=`"),
        ({"rtol": -1.0}, "`rtol` must be a non-negative finite number"),
    ],
    ids=["jacobian", "n_cotangents", "precision", "loss_batch", "rtol"],
)
def test_bad_options_are_refused(options, match):
    with pytest.raises(InputError, match=match):
        check_function(Softplus.apply, randn(3), **options)


def test_a_failing_function_raises_user_code_error():
    def broken(x):
        raise ZeroDivisionError("no")

    with pytest.raises(UserCodeError) as caught:
        check_function(broken, randn(3))
    assert isinstance(caught.value.__cause__, ZeroDivisionError)


# -- precision ------------------------------------------------------------------------------------
def test_float32_inputs_are_checked_through_float64_copies():
    result = check_function(Gelu.apply, randn(5, dtype=torch.float32))
    assert result.passed, str(result)
    assert all(p.dtype == "float64" for p in result.params)
    assert any("float32 tensors were checked through float64 copies" in n for n in result.notes)
    assert result.rtol == 1e-5  # float64's default, as the backward ran in float64


def test_native_precision_keeps_float32():
    result = check_function(Gelu.apply, randn(5, dtype=torch.float32), precision="native")
    assert result.passed, str(result)
    assert all(p.dtype == "float32" for p in result.params)
    assert result.rtol == 1e-3  # float32's default


def test_a_function_that_refuses_float64_is_checked_in_its_own_dtype():
    def float32_only(x):
        return Softplus.apply(x.float())

    result = check_function(float32_only, randn(3, dtype=torch.float32))
    assert result.passed, str(result)
    assert any("did not compute in float64" in note for note in result.notes)


# -- batching through vmap ------------------------------------------------------------------------
def test_vmap_batches_functions_that_support_it():
    result = check_function(XSinY.apply, randn(20), randn(20, seed=1), batch_size=16, vmap=True)
    assert result.passed, str(result)
    assert "batches of 16" in result.engine
    assert any("batches through torch.func.vmap" in note for note in result.notes)


@pytest.mark.parametrize("per_point", [0.1, 1.0], ids=["pays", "does-not-pay"])
def test_vmap_is_used_by_default_only_where_batching_pays(monkeypatch, per_point):
    from gradproof.torch import _function

    # A single call costs 1; a batch of n points costs n * per_point (Note [Batching must pay]).
    monkeypatch.setattr(
        _function,
        "_timed",
        lambda run: (
            per_point * _function._TRIAL_BATCH if "_project_batch" in run.__code__.co_names else 1.0
        ),
    )
    result = check_function(XSinY.apply, randn(20), randn(20, seed=1), batch_size=16)
    assert result.passed, str(result)
    assert ("batches of 16" in result.engine) is (per_point < 0.5)
    if per_point >= 0.5:
        assert any(
            note.startswith(
                "Not batched: a batch through torch.func.vmap took 1000000 µs per "
                "point against 1000000 µs for a single call"
            )
            for note in result.notes
        ), result.notes


def test_vmap_falls_back_for_functions_that_do_not_support_it():
    result = check_function(Softplus.apply, randn(3), batch_size=16)
    assert result.passed
    assert "batches" not in result.engine
    assert (
        "Not batched: torch.func.vmap cannot run this autograd.Function (it has no "
        "setup_context); each call evaluated one point."
    ) in result.notes
    assert "functorch" not in str(result)  # torch's long error stays out of the report
    with pytest.raises(InputError, match=r"`vmap=True`.*setup_context"):
        check_function(Softplus.apply, randn(3), vmap=True)
    quiet = check_function(Softplus.apply, randn(3), vmap=False)
    assert not any("batch" in note for note in quiet.notes)


def test_batched_and_unbatched_checks_agree():
    x, y = randn(6, seed=3), randn(6, seed=4)
    batched = check_function(XSinY.apply, x, y, jacobian="random", vmap=True)
    single = check_function(XSinY.apply, x, y, jacobian="random", vmap=False)
    assert "batches" in batched.engine and "batches" not in single.engine
    for a, b in zip(batched.params, single.params, strict=True):
        assert a.verdict is b.verdict is Verdict.PASS
        # Batched kernels sum in another order: the estimates agree to rounding, far
        # inside the 1e-5 tolerance.
        assert abs(a.numeric - b.numeric).max() <= 1e-8 * max(1.0, abs(b.numeric).max())


# -- check_module ---------------------------------------------------------------------------------
class CustomLinear(torch.nn.Module):
    def __init__(self, n_in, n_out, *, factor=1.0):
        super().__init__()
        self.weight = torch.nn.Parameter(0.5 * torch.randn(n_out, n_in))
        self.bias = torch.nn.Parameter(0.1 * torch.randn(n_out))
        self.factor = factor

    def forward(self, x):
        fn = Linear if self.factor == 1.0 else ScaledWeightGrad
        return fn.apply(x, self.weight, self.bias)


class ScaledWeightGrad(Linear):
    @staticmethod
    def backward(ctx, grad_output):
        x, w = ctx.saved_tensors
        return grad_output @ w, 2 * grad_output.T @ x, grad_output.sum(0)


class Net(torch.nn.Module):
    def __init__(self, *, factor=1.0):
        super().__init__()
        torch.manual_seed(0)
        self.layers = torch.nn.Sequential(
            CustomLinear(3, 4, factor=factor),
            torch.nn.BatchNorm1d(4),
            torch.nn.Tanh(),
            torch.nn.Dropout(0.25),
            torch.nn.Linear(4, 2),
        )
        self.scale = torch.nn.Parameter(torch.tensor(1.5), requires_grad=False)

    def forward(self, x):
        return self.layers(x) * self.scale


def snapshot(module):
    params = {n: (p.detach().clone(), p.requires_grad) for n, p in module.named_parameters()}
    buffers = {n: b.detach().clone() for n, b in module.named_buffers()}
    return params, buffers, module.training


def assert_untouched(module, before):
    params, buffers, training = snapshot(module)
    assert params.keys() == before[0].keys() and buffers.keys() == before[1].keys()
    for name, (value, flag) in params.items():
        assert torch.equal(value, before[0][name][0]) and flag == before[0][name][1], name
        assert value.dtype == before[0][name][0].dtype
    for name, value in buffers.items():
        assert torch.equal(value, before[1][name]), name
    assert training == before[2]
    assert all(p.grad is None for p in module.parameters())


def data(seed=0):
    return randn(8, 3, seed=seed, dtype=torch.float32, grad=False)


def test_check_module_names_parameters_as_pytorch_does_and_leaves_the_module_alone():
    net, x = Net(), data()
    before = snapshot(net)
    result = check_module(net, x, lambda out: out.pow(2).mean(), seed=0)
    assert result.passed, str(result)
    assert [p.name for p in result.params] == [
        "layers.0.weight",
        "layers.0.bias",
        "layers.1.weight",
        "layers.1.bias",
        "layers.4.weight",
        "layers.4.bias",
    ]
    assert "scale" not in [p.name for p in result.params]  # frozen
    assert_untouched(net, before)
    assert any("1 frozen parameter and 3 buffers" in note for note in result.notes)


def test_check_module_sequential_names():
    torch.manual_seed(1)
    net = torch.nn.Sequential(CustomLinear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))
    result = check_module(net, (data(),), lambda out: out.sum())
    assert [p.name for p in result.params] == ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert result.passed, str(result)


def test_check_module_finds_a_bug_in_a_custom_layer():
    net, x = Net(factor=2.0), data()
    before = snapshot(net)
    result = check_module(net, x, lambda out: out.pow(2).mean(), seed=0)
    assert result.suspects == ("layers.0.weight",), str(result)
    diagnosis = result["layers.0.weight"].diagnosis
    assert diagnosis is not None and diagnosis.kind == "scale"
    assert diagnosis.factor == pytest.approx(2.0, rel=1e-6)
    assert "layers.0.weight[" in result["layers.0.weight"].failures[0].name
    assert_untouched(net, before)


def test_check_module_needs_a_seed_for_dropout():
    net = Net()
    with pytest.raises(NondeterministicLossError, match="seed="):
        check_module(net, data(), lambda out: out.pow(2).mean())


def test_a_float32_module_is_checked_through_float64_copies():
    net = Net().eval()
    result = check_module(net, data(), lambda out: out.pow(2).mean())
    assert result.passed, str(result)
    assert {p.dtype for p in result.params} == {"float64"}
    assert any("float64 copies of its parameters, buffers and inputs" in n for n in result.notes)
    assert all(p.dtype == torch.float32 for p in net.parameters())


def test_a_module_in_native_float32():
    net = Net().eval()
    result = check_module(net, data(), lambda out: out.pow(2).mean(), precision="native")
    # float32 rounding leaves some entries unjudged (gradproof calls them inconclusive), but
    # nothing is wrong.
    assert result.verdict is not Verdict.FAIL, str(result)
    assert {p.dtype for p in result.params} == {"float32"}
    assert result.rtol == 1e-3  # float32's default


def test_check_module_batches_through_vmap_where_it_can():
    torch.manual_seed(2)
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))
    result = check_module(net, data(), lambda out: out.pow(2).mean())
    assert result.passed
    assert "batches of 64" in result.engine
    training_bn = Net()  # BatchNorm updates its running statistics in place: no vmap
    fallback = check_module(training_bn, data(), lambda out: out.pow(2).mean(), seed=0)
    assert "batches" not in fallback.engine
    assert any(note.startswith("Not batched: torch.func.vmap cannot") for note in fallback.notes)
    assert all(len(note) < 200 for note in fallback.notes if note.startswith("Not batched"))


def test_check_module_reports_a_zero_upstream_violation():
    class Offset(Linear):
        @staticmethod
        def backward(ctx, grad_output):
            x, w = ctx.saved_tensors
            return grad_output @ w, grad_output.T @ x + 0.01, grad_output.sum(0)

    class Layer(CustomLinear):
        def forward(self, x):
            return Offset.apply(x, self.weight, self.bias)

    torch.manual_seed(3)
    result = check_module(Layer(3, 2), data(), lambda out: out.pow(2).sum())
    assert result.suspects == ("weight",)
    assert any("zero upstream gradient" in note for note in result.notes)


@pytest.mark.parametrize(
    ("loss_fn", "match"),
    [
        (lambda out: out, r"returned a tensor of shape \(8, 2\)"),
        (lambda out: float(out.sum()), "returned a float"),
        (lambda out: out.detach().sum(), "does not depend on the module's parameters"),
    ],
    ids=["not-scalar", "not-tensor", "detached"],
)
def test_check_module_refuses_a_bad_loss(loss_fn, match):
    with pytest.raises((InputError, UserCodeError), match=match):
        check_module(Net().eval(), data(), loss_fn)


def test_check_module_refuses_a_frozen_module():
    net = Net().eval().requires_grad_(False)
    with pytest.raises(InputError, match="No parameter of the Net requires grad"):
        check_module(net, data(), lambda out: out.sum())


# -- the side-by-side suite ---------------------------------------------------------------------
def run_gradcheck(case: Case) -> bool:
    """Whether torch.autograd.gradcheck (defaults) accepts the case; errors count as rejection."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # its float32 warning
        try:
            return bool(torch.autograd.gradcheck(case.fn, case.make_inputs()))
        except Exception:  # GradcheckError, or a backward that gradcheck cannot even run
            return False


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_gradproof_catches_what_gradcheck_catches_and_is_right_on_correct_code(case: Case):
    result = check_function(case.fn, *case.make_inputs())
    if case.correct:
        assert result.verdict is not Verdict.FAIL, str(result)
        return
    assert result.verdict is Verdict.FAIL, str(result)
    if not run_gradcheck(case):  # gradcheck caught it: so must gradproof, at the right input
        assert set(wrong_entries(result)) == set(case.wrong)


def test_the_suite_shows_where_gradproof_goes_further():
    by_name = {c.name: c for c in CASES}
    for name in ("gelu_truncated_constant", "weight_decay_half"):  # below gradcheck's tolerances
        assert run_gradcheck(by_name[name])
    for name in ("relu_at_0", "softplus_float32"):  # gradcheck's false alarms
        assert not run_gradcheck(by_name[name])
    kink = check_function(by_name["relu_at_0"].fn, *by_name["relu_at_0"].make_inputs())
    assert kink.verdict is Verdict.INCONCLUSIVE
    assert kink.inconclusive and all(
        e.subgradient for r in kink.params for e in r.inconclusive_entries
    )


def test_more_wrong_entries_than_listed_are_counted():
    case = next(c for c in CASES if c.name == "softmax_missing_term")
    result = check_function(case.fn, *case.make_inputs())
    assert result["x"].n_failed == 24 > len(result["x"].failures) == MAX_LISTED_ENTRIES


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_tensors_are_checked_on_their_device():
    x = randn(4).detach().cuda().requires_grad_()
    y = randn(4, seed=1).detach().cuda().requires_grad_()
    assert check_function(XSinY.apply, x, y).passed
    bad = next(c for c in CASES if c.name == "softplus_doubled")
    (z,) = bad.make_inputs()
    result = check_function(bad.fn, z.detach().cuda().requires_grad_())
    assert result.verdict is Verdict.FAIL


# -- docs/torch.md is true ------------------------------------------------------------------------
ROOT = Path(__file__).resolve().parents[1]
DOCS = (ROOT / "docs" / "torch.md").read_text(encoding="utf-8")


def fenced_blocks(text: str) -> list[tuple[str, str]]:
    return re.findall(r"^```(\w*)\n(.*?)^```$", text, flags=re.S | re.M)


def mask_timing(text: str) -> str:
    # Round-off figures depend on the CPU's kernels (see mask_roundoff); verdicts do not.
    return mask_roundoff(re.sub(r" in \d+\.\d+ s\.", " in <time> s.", text).rstrip())


def test_docs_examples_print_what_the_docs_show():
    blocks = fenced_blocks(DOCS)
    namespace: dict[str, object] = {"__name__": "docs"}
    compared = 0
    for i, (lang, body) in enumerate(blocks):
        if lang != "python":
            continue
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(body, f"docs/torch.md python block {i}", "exec"), namespace)
        following = blocks[i + 1] if i + 1 < len(blocks) else ("", "")
        assert following[0] == "text", f"python block {i} is not followed by its output"
        assert mask_timing(out.getvalue()) == mask_timing(following[1])
        compared += 1
    assert compared == 5


def load_benchmark():
    path = ROOT / "benchmarks" / "torch_functions.py"
    spec = importlib.util.spec_from_file_location("torch_functions_benchmark", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_docs_table_is_what_the_benchmark_prints():
    assert "```bash\npython benchmarks/torch_functions.py\n```" in DOCS
    benchmark = load_benchmark()
    lines = [line for line in DOCS.splitlines() if line.startswith("| ")]
    table = [line.strip("| ").split(" | ") for line in lines]
    header = next(row for row in table if row[0] == "case")
    assert header == [*benchmark.HEADERS, "time"]
    documented = {row[0]: row[: len(benchmark.HEADERS)] for row in table if row[0] != "case"}
    documented = {name: row for name, row in documented.items() if name in {c.name for c in CASES}}
    assert list(documented) == [case.name for case in CASES]
    for case in CASES:
        reference, result = benchmark.run_gradcheck(case), benchmark.run_gradproof(case)
        assert documented[case.name] == benchmark.table_row(case, reference, result)


def test_an_unrecognised_vmap_error_is_quoted_briefly():
    from gradproof.torch._run import _REASON_LENGTH, _why_not_batched

    long = "RuntimeError: " + "x" * 500
    reason = _why_not_batched(long)
    assert reason.startswith("torch.func.vmap could not evaluate the function (RuntimeError: x")
    assert len(reason) < _REASON_LENGTH + 60
    assert reason.endswith("…)")
    assert _why_not_batched("vmap: called random operation while in randomness error mode") == (
        "torch.func.vmap refuses the function's random operations"
    )
