"""gradproof.torch.gradcheck and gradgradcheck: torch's contract, gradproof's verdicts.

The project's own custom Functions (tests/torch_functions.py) are checked the way a user's
suite would check them after changing one import line.
"""

from __future__ import annotations

import warnings
from typing import Any

import pytest

pytest.importorskip("torch")

import torch
from torch.autograd.gradcheck import GradcheckError as TorchGradcheckError

from gradproof.errors import GradproofWarning, InputError, UserCodeError
from gradproof.torch import GradcheckError, check_function, gradcheck, gradgradcheck
from gradproof.torch._prepare import _argument_names
from tests.torch_functions import CASES, Case, XSinY

F64 = torch.float64


def randn(*shape: int, seed: int = 0, dtype: Any = F64) -> Any:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=generator, dtype=F64).to(dtype).requires_grad_(True)


def wrong_names(case: Case) -> set[str]:
    """The planted wrong inputs, by the names both checkers give them (the forward's own)."""
    return set(case.wrong)


# -- the project's custom Functions, as a user's suite checks them ---------------------------------
@pytest.mark.parametrize("case", [c for c in CASES if c.correct], ids=lambda c: c.name)
def test_correct_functions_pass(case: Case) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", GradproofWarning)
        assert gradcheck(case.fn, case.make_inputs()) is True
    kinks = "at_0" in case.name
    assert bool(caught) == kinks, [str(w.message) for w in caught]


@pytest.mark.parametrize("case", [c for c in CASES if not c.correct], ids=lambda c: c.name)
def test_planted_bugs_raise_a_torch_gradcheck_error_naming_the_input(case: Case) -> None:
    with pytest.raises(TorchGradcheckError) as caught:
        gradcheck(case.fn, case.make_inputs())
    error = caught.value
    assert isinstance(error, GradcheckError) and isinstance(error, RuntimeError)
    assert error.result is not None
    # one output: the inputs themselves; several: (output, input) pairs `d out1 / d r`
    inputs = {s.rsplit(" / d ", 1)[-1] for s in error.result.suspects}
    assert inputs == wrong_names(case), str(error)
    summary = str(error).splitlines()[0]
    assert summary.startswith("gradproof: wrong gradient for ")
    for subject in error.result.suspects:
        assert f"`{subject}`" in summary
    assert "WRONG" in str(error)  # the report follows the summary
    assert gradcheck(case.fn, case.make_inputs(), raise_exception=False) is False


def test_wrong_entries_are_localised_to_the_planted_ones() -> None:
    case = next(c for c in CASES if c.name == "cumsum_off_by_one")
    with pytest.raises(GradcheckError) as caught:
        gradcheck(case.fn, case.make_inputs())
    result = caught.value.result
    assert result is not None
    failures = [e for p in result.params for e in p.failures]
    assert failures and {e.index for e in failures} == {(0,)}
    # Jacobian rows are entries of the input `x`, written d out[i] / d x[j]
    assert all(e.name.startswith("d out[") and e.name.endswith(" / d x[0]") for e in failures)
    assert result.suspects == ("x",) and result.subject_noun == "input"


def test_a_tiny_gradient_gradcheck_misses_is_caught() -> None:
    case = next(c for c in CASES if c.name == "weight_decay_half")
    assert torch.autograd.gradcheck(case.fn, case.make_inputs())  # below its atol of 1e-5
    with pytest.raises(GradcheckError):
        gradcheck(case.fn, case.make_inputs())


def test_float32_inputs_are_checked_in_float64_copies() -> None:
    case = next(c for c in CASES if c.name == "softplus_float32")
    assert gradcheck(case.fn, case.make_inputs())
    assert check_function(case.fn, *case.make_inputs()).passed


# -- names, subjects and sections ------------------------------------------------------------------
def test_inputs_are_named_by_the_forward_signature() -> None:
    assert _argument_names(XSinY.apply, 2) == ["x", "y"]  # setup_context: no ctx
    case = next(c for c in CASES if c.name == "linear_bias_mean")
    assert _argument_names(case.fn, 3) == ["x", "w", "b"]  # ctx skipped
    assert _argument_names(lambda a, *rest: a, 3) == ["a", "input1", "input2"]
    assert _argument_names(torch.add, 2) == ["input0", "input1"]  # no Python signature


def test_several_outputs_get_a_verdict_per_output_and_input_pair() -> None:
    case = next(c for c in CASES if c.name == "two_outputs_missing_term")
    with pytest.raises(GradcheckError) as caught:
        gradcheck(case.fn, case.make_inputs())
    result = caught.value.result
    assert result is not None and result.subject_noun == "(output, input) pair"
    assert set(result.subjects) == {f"d out{k} / d {x}" for k in (0, 1) for x in ("r", "theta")}
    assert all(s.endswith("/ d r") for s in result.suspects), result.suspects


def test_fast_mode_reports_inputs_and_shows_the_cotangent() -> None:
    case = next(c for c in CASES if c.name == "softmax_missing_term")
    with pytest.raises(GradcheckError) as caught:
        gradcheck(case.fn, case.make_inputs(), fast_mode=True)
    result = caught.value.result
    assert result is not None
    assert [p.name for p in result.params] == ["x"]
    assert any("u = [" in note for note in result.notes)


class XSinYBadJvp(XSinY):
    @staticmethod
    def jvp(ctx: Any, x_tangent: Any, y_tangent: Any) -> Any:
        x, y = ctx.saved_tensors
        return x_tangent * torch.sin(y) - x * torch.cos(y) * y_tangent  # sign of the y term


def test_forward_mode_reports_under_its_own_heading_per_input() -> None:
    inputs = (randn(2, 2, seed=1), randn(2, 2, seed=2))
    assert gradcheck(XSinY.apply, inputs, check_forward_ad=True)
    with pytest.raises(GradcheckError) as caught:
        gradcheck(XSinYBadJvp.apply, inputs, check_forward_ad=True)
    result = caught.value.result
    assert result is not None
    assert result.suspects == ("y",), str(result)
    wrong = [p for p in result.params if p.verdict.value == "fail"]
    assert [(p.name, p.section) for p in wrong] == [("jvp(d out / d y)", "Forward mode (JVP)")]
    assert "1 of 2 inputs" in str(result).splitlines()[0]


def test_both_modes_off_is_refused() -> None:
    with pytest.raises(InputError, match="check_backward_ad=True"):
        gradcheck(torch.sin, (randn(2),), check_backward_ad=False)


# -- what gradcheck handles ------------------------------------------------------------------------
def test_empty_inputs_and_outputs_pass() -> None:
    assert gradcheck(torch.sin, (torch.empty(1, 0, 3, dtype=F64, requires_grad=True),))
    x = randn(3)
    assert gradcheck(lambda a: (a.sin(), a[:0] * 2), (x,))
    with pytest.raises(InputError, match="Every input that requires grad is empty"):
        check_function(torch.sin, torch.empty(0, dtype=F64, requires_grad=True))


def test_non_differentiable_outputs_are_skipped_with_a_note() -> None:
    x, weight, bias = randn(3, 4, seed=1), randn(4, seed=2), randn(4, seed=3)

    def layer_norm(x: Any, weight: Any, bias: Any) -> Any:
        return torch.native_layer_norm(x, [4], weight, bias, 1e-5)

    assert gradcheck(layer_norm, (x, weight, bias))
    result = check_function(layer_norm, x, weight, bias)
    assert result.passed
    assert any("marked non-differentiable" in n for n in result.notes), result.notes


class TwoOutputs(torch.autograd.Function):
    """``(2x, 3x)`` whose backward assumes both output gradients are defined."""

    @staticmethod
    def forward(ctx: Any, x: Any) -> Any:
        ctx.set_materialize_grads(False)
        return 2 * x, 3 * x

    @staticmethod
    def backward(ctx: Any, g1: Any, g2: Any) -> Any:
        return 2 * g1 + 3 * g2  # TypeError when either is None


class OnesWhenUndefined(torch.autograd.Function):
    """``2x`` whose backward returns ones when no gradient flows in."""

    @staticmethod
    def forward(ctx: Any, x: Any) -> Any:
        ctx.set_materialize_grads(False)
        return 2 * x

    @staticmethod
    def backward(ctx: Any, grad: Any) -> Any:
        return torch.ones(3, dtype=F64) if grad is None else 2 * grad


def test_undefined_output_gradients_are_checked() -> None:
    x = randn(3)
    with pytest.raises(GradcheckError, match=r"fails when every output.s gradient is undefined"):
        gradcheck(TwoOutputs.apply, (x,))
    with pytest.raises(TypeError):  # torch's own Jacobian computation trips over it
        torch.autograd.gradcheck(TwoOutputs.apply, (x,))
    with pytest.raises(GradcheckError, match=r"returned a nonzero gradient"):
        gradcheck(OnesWhenUndefined.apply, (x,))
    assert gradcheck(OnesWhenUndefined.apply, (x,), check_undefined_grad=False)


def test_a_backward_that_drops_an_output_alone_is_caught() -> None:
    # native_group_norm's backward ignores the mean's gradient when the output's is undefined
    x, weight, bias = randn(1, 6, 3, seed=1), randn(6, seed=2), randn(6, seed=3)

    def group_norm(x: Any, weight: Any, bias: Any) -> Any:
        return torch.native_group_norm(x, weight, bias, 1, 6, 3, 2, 1e-5)

    with pytest.raises(TorchGradcheckError):
        torch.autograd.gradcheck(group_norm, (x, weight, bias))
    with pytest.raises(GradcheckError) as caught:
        gradcheck(group_norm, (x, weight, bias))
    assert caught.value.result is not None
    assert "d out1 / d x" in caught.value.result.suspects


class NoisyBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Any) -> Any:
        ctx.save_for_backward(x)
        return x.sin()

    @staticmethod
    def backward(ctx: Any, grad: Any) -> Any:
        (x,) = ctx.saved_tensors
        return grad * (x.cos() + 1e-11 * torch.randn_like(x))


def test_nondet_tol_bounds_how_much_backward_passes_may_differ() -> None:
    torch.manual_seed(0)
    with pytest.raises(GradcheckError, match=r"not reentrant.*nondet_tol=0"):
        gradcheck(NoisyBackward.apply, (randn(3),))
    assert gradcheck(NoisyBackward.apply, (randn(3),), nondet_tol=1e-9)


def test_batched_gradients_are_checked_when_asked() -> None:
    case = next(c for c in CASES if c.name == "softplus")
    for fn, inputs in ((torch.sin, (randn(3),)), (case.fn, case.make_inputs())):
        assert torch.autograd.gradcheck(fn, inputs, check_batched_grad=True)
        assert gradcheck(fn, inputs, check_batched_grad=True)


def test_non_finite_input_entries_are_unchecked_not_refused() -> None:
    logits = torch.randn(2, 3, dtype=F64)
    logits[0, 1] = -torch.inf
    logits.requires_grad_(True)
    assert gradcheck(lambda t: torch.softmax(t, -1), (logits,))
    result = check_function(lambda t: torch.softmax(t, -1), logits)
    assert result.passed
    assert any("t[0, 1] = -inf" in n and "Unchecked" in n for n in result.notes)


def test_zero_tensors_from_torch_backwards_are_read_as_zeros() -> None:
    assert gradcheck(torch.sgn, (randn(4),))  # its backward returns a ZeroTensor


@pytest.mark.parametrize("layout", ["coo", "csr"])
@pytest.mark.parametrize("masked", [True, False])
def test_sparse_inputs(layout: str, masked: bool) -> None:
    dense = torch.randn(3, 4, dtype=F64)
    dense[0, 1] = dense[2] = 0
    sparse = (dense.to_sparse() if layout == "coo" else dense.to_sparse_csr()).requires_grad_()
    other = randn(4, 2, seed=1)

    def product(s: Any, d: Any) -> Any:
        return torch.sparse.mm(s, d) if layout == "coo" else s @ d

    if layout == "coo" and not masked:
        # sparse.mm's backward gives the specified entries only: wrong for the dense
        # function, which masked=False checks (torch's gradcheck fails it too)
        with pytest.raises(GradcheckError) as caught:
            gradcheck(product, (sparse, other), masked=masked)
        assert caught.value.result is not None
        wrong = {e.index for p in caught.value.result.params for e in p.failures}
        assert wrong <= {(0, 1), (2, 0), (2, 1), (2, 2), (2, 3)}  # the unspecified entries
        return
    assert gradcheck(product, (sparse, other), masked=masked)


class ComplexSquare(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, z: Any) -> Any:
        ctx.save_for_backward(z)
        return z * z

    @staticmethod
    def backward(ctx: Any, grad: Any) -> Any:
        (z,) = ctx.saved_tensors
        return grad * 2 * z  # bug: torch's convention needs conj(2 z)


def test_complex_inputs_and_outputs() -> None:
    z = torch.randn(3, dtype=torch.complex128, requires_grad=True)
    assert gradcheck(torch.sin, (z,))
    assert gradcheck(torch.abs, (z,))
    with pytest.raises(TorchGradcheckError):
        torch.autograd.gradcheck(ComplexSquare.apply, (z,))
    with pytest.raises(GradcheckError) as caught:
        gradcheck(ComplexSquare.apply, (z,))
    assert caught.value.result is not None and caught.value.result.suspects == ("z",)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32], ids=str)
def test_low_precision_inputs(dtype: Any) -> None:
    x = randn(4, dtype=dtype)
    assert gradcheck(torch.tanh, (x,))
    note = check_function(torch.tanh, x).notes
    assert any("float64 copies" in n for n in note)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_inputs() -> None:  # pragma: no cover - no GPU on CI
    x = torch.randn(3, dtype=F64, device="cuda", requires_grad=True)
    assert gradcheck(torch.sin, (x,))
    case = next(c for c in CASES if c.name == "softplus_doubled")
    inputs = tuple(t.detach().cuda().requires_grad_() for t in case.make_inputs())
    with pytest.raises(GradcheckError):
        gradcheck(case.fn, inputs)


# -- kinks, tolerances and steps -------------------------------------------------------------------
def test_entries_without_a_derivative_warn_or_fail_when_strict() -> None:
    case = next(c for c in CASES if c.name == "relu_at_0")
    with pytest.warns(GradproofWarning, match=r"could not judge .*strict=True"):
        assert gradcheck(case.fn, case.make_inputs())
    with pytest.raises(GradcheckError, match="could not judge"):
        gradcheck(case.fn, case.make_inputs(), strict=True)


def test_explicit_tolerances_and_step_are_honoured() -> None:
    case = next(c for c in CASES if c.name == "linear_bias_mean")  # a factor 1/4 on `b`
    assert gradcheck(case.fn, case.make_inputs(), atol=10.0, rtol=1.0)
    with pytest.raises(GradcheckError) as caught:
        gradcheck(case.fn, case.make_inputs(), eps=1e-4)
    result = caught.value.result
    assert result is not None
    assert "absolute 0.0001" in result.step, result.step
    assert result.atol == 1e-12 and result.rtol == 1e-5  # torch's defaults: gradproof's own


def test_a_malformed_gradient_is_a_gradcheck_error() -> None:
    class WrongShape(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, x: Any) -> Any:
            return 2 * x

        @staticmethod
        def backward(ctx: Any, grad: Any) -> Any:
            return grad.sum()

    with pytest.raises(GradcheckError, match="shape"):
        gradcheck(WrongShape.apply, (randn(3),))


# -- gradgradcheck ---------------------------------------------------------------------------------
class CubeOnceWrong(torch.autograd.Function):
    """``x**3`` whose backward is right but whose double backward is not."""

    @staticmethod
    def forward(ctx: Any, x: Any) -> Any:
        ctx.save_for_backward(x)
        return x**3

    @staticmethod
    def backward(ctx: Any, grad: Any) -> Any:
        (x,) = ctx.saved_tensors
        return grad * 3 * x.detach() ** 2 + 0 * x  # detached: the second order misses 6x


def test_gradgradcheck() -> None:
    x = randn(3)
    assert gradgradcheck(torch.tanh, (x,))
    assert gradgradcheck(torch.tanh, (x,), gen_non_contig_grad_outputs=True)
    assert gradgradcheck(torch.tanh, (x,), (torch.ones(3, dtype=F64),))
    assert gradcheck(CubeOnceWrong.apply, (x,))
    with pytest.raises(TorchGradcheckError):
        torch.autograd.gradgradcheck(CubeOnceWrong.apply, (x,))
    with pytest.raises(GradcheckError) as caught:
        gradgradcheck(CubeOnceWrong.apply, (x,))
    result = caught.value.result
    assert result is not None and result.suspects == ("x",)
    assert {p.section for p in result.params} == {"Second order"}
    assert gradgradcheck(CubeOnceWrong.apply, (x,), raise_exception=False) is False
    with pytest.raises(InputError, match="grad_outputs"):
        gradgradcheck(torch.tanh, (x,), (torch.ones(4, dtype=F64),))


def test_gradgradcheck_leaves_forward_over_reverse_to_torch() -> None:
    assert gradgradcheck(
        torch.tanh,
        (randn(3),),
        check_fwd_over_rev=True,
        check_rev_over_rev=False,
        check_undefined_grad=False,
    )


class SinDoubled(torch.autograd.Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(x: Any) -> Any:
        return x.sin()

    @staticmethod
    def setup_context(ctx: Any, inputs: Any, output: Any) -> None:
        ctx.save_for_backward(inputs[0])

    @staticmethod
    def backward(ctx: Any, grad: Any) -> Any:
        (x,) = ctx.saved_tensors
        return 2 * grad * x.cos()  # bug: a stray factor 2


def test_an_elementwise_bug_is_one_wrong_input_not_a_row_per_output_entry() -> None:
    with pytest.raises(GradcheckError) as caught:
        gradcheck(SinDoubled.apply, (randn(3, 4),))
    result = caught.value.result
    assert result is not None
    assert len(result.params) == 12  # one Jacobian row per output entry
    assert result.suspects == ("x",)
    headline = str(result).splitlines()[0]
    assert headline == "gradproof: WRONG: x has a wrong gradient", headline
    # each row's wrong entry is the diagonal one: d out[i, j] / d x[i, j]
    for report in result.params:
        (entry,) = report.failures
        row = report.name.removeprefix("d out").removesuffix(" / d x")  # "[i, j]"
        assert entry.name == f"d out{row} / d x{row}", (report.name, entry.name)


class RaisingBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Any) -> Any:
        return 2 * x

    @staticmethod
    def backward(ctx: Any, grad: Any) -> Any:
        raise RuntimeError("backward not implemented for this case")


def test_a_backward_that_raises_is_a_gradcheck_error_a_forward_that_raises_is_not() -> None:
    with pytest.raises(GradcheckError, match="The backward raised RuntimeError") as caught:
        gradcheck(RaisingBackward.apply, (randn(3),))
    assert isinstance(caught.value.__cause__, RuntimeError)
    assert gradcheck(RaisingBackward.apply, (randn(3),), raise_exception=False) is False

    def broken(x: Any) -> Any:
        raise ValueError("the forward itself is broken")

    with pytest.raises(UserCodeError) as raised:
        gradcheck(broken, (randn(3),))
    assert isinstance(raised.value.__cause__, ValueError)
