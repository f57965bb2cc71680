"""A suite of custom ``torch.autograd.Function``s: correct ones, and ones with planted bugs.

Each :class:`Case` is a function of tensors with the point to check it at and,
for a planted bug, the inputs and entries whose gradients are wrong. The
suite runs through :func:`gradproof.torch.check_function` and
``torch.autograd.gradcheck`` side by side (``tests/test_torch_adapter.py``
asserts the comparison; ``benchmarks/torch_functions.py`` prints it).

The bugs are the usual ones in hand-written backward passes: a wrong factor,
a transposed product, a missing term of the product rule, an off-by-one that
leaves one entry wrong, an overwrite where repeated indices must accumulate,
a ``grad_output`` modified in place, a slightly wrong constant, and a wrong
factor in a gradient too small for gradcheck's absolute tolerance. The
correct functions include kinks (relu and abs at exactly 0) and a float32
function, where finite differences need care.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = ["CASES", "Case"]

F64 = torch.float64


def _tensor(values: Any, dtype: torch.dtype = F64) -> torch.Tensor:
    return torch.tensor(values, dtype=dtype, requires_grad=True)


def _randn(*shape: int, seed: int, dtype: torch.dtype = F64) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    values = torch.randn(*shape, generator=generator, dtype=F64)
    return values.to(dtype).requires_grad_(True)


def _indices(shape: tuple[int, ...]) -> frozenset[tuple[int, ...]]:
    out: list[tuple[int, ...]] = [()]
    for n in shape:
        out = [(*index, i) for index in out for i in range(n)]
    return frozenset(out)


@dataclass(frozen=True)
class Case:
    """A function of tensors, the point to check it at, and what is wrong with it.

    Attributes
    ----------
    name : str
        Short identifier, used as the test id.
    fn : callable
        The function, usually a custom Function's ``apply``.
    make_inputs : callable
        Returns fresh inputs (tensors that require grad are checked).
    wrong : dict of str to frozenset of index tuples
        For a planted bug: each input with a wrong gradient and its wrong entries.
        Empty for a correct function.
    kind : str or None
        The diagnosis gradproof should give the wrong input, where the bug has a
        simple pattern.
    bug : str
        What is planted (or why the correct case is hard), for the comparison table.
    """

    name: str
    fn: Callable[..., Any]
    make_inputs: Callable[[], tuple[Any, ...]]
    wrong: dict[str, frozenset[tuple[int, ...]]] = field(default_factory=dict)
    kind: str | None = None
    bug: str = ""

    @property
    def correct(self) -> bool:
        """Whether the function's backward is right."""
        return not self.wrong


# -- correct functions ------------------------------------------------------------------------
class XSinY(torch.autograd.Function):
    """``x * sin(y)`` (new style: vmap and forward mode supported)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x, y):
        return x * torch.sin(y)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(*inputs)
        ctx.save_for_forward(*inputs)

    @staticmethod
    def backward(ctx, grad_output):
        x, y = ctx.saved_tensors
        return grad_output * torch.sin(y), grad_output * x * torch.cos(y)

    @staticmethod
    def jvp(ctx, x_tangent, y_tangent):
        x, y = ctx.saved_tensors
        return x_tangent * torch.sin(y) + x * torch.cos(y) * y_tangent


class Linear(torch.autograd.Function):
    """``x @ w.T + b``, a custom linear layer."""

    @staticmethod
    def forward(ctx, x, w, b):
        ctx.save_for_backward(x, w)
        return x @ w.T + b

    @staticmethod
    def backward(ctx, grad_output):
        x, w = ctx.saved_tensors
        return grad_output @ w, grad_output.T @ x, grad_output.sum(0)


class Softplus(torch.autograd.Function):
    """``log(1 + exp(x))``, whose derivative is the sigmoid."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.nn.functional.softplus(x)

    @staticmethod
    def backward(ctx, grad_output):
        (x,) = ctx.saved_tensors
        return grad_output * torch.sigmoid(x)


class MatMul(torch.autograd.Function):
    """``a @ b``, two inputs."""

    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return a @ b

    @staticmethod
    def backward(ctx, grad_output):
        a, b = ctx.saved_tensors
        return grad_output @ b.T, a.T @ grad_output


class PolarToCartesian(torch.autograd.Function):
    """Two outputs: ``(r cos(theta), r sin(theta))``."""

    @staticmethod
    def forward(ctx, r, theta):
        ctx.save_for_backward(r, theta)
        return r * torch.cos(theta), r * torch.sin(theta)

    @staticmethod
    def backward(ctx, grad_x, grad_y):
        r, theta = ctx.saved_tensors
        cos, sin = torch.cos(theta), torch.sin(theta)
        return grad_x * cos + grad_y * sin, r * (grad_y * cos - grad_x * sin)


class Softmax(torch.autograd.Function):
    """Row-wise softmax: its backward is ``s * (g - <g, s>)``."""

    @staticmethod
    def forward(ctx, x):
        s = torch.softmax(x, dim=-1)
        ctx.save_for_backward(s)
        return s

    @staticmethod
    def backward(ctx, grad_output):
        (s,) = ctx.saved_tensors
        return s * (grad_output - (grad_output * s).sum(-1, keepdim=True))


class Relu(torch.autograd.Function):
    """``max(x, 0)``, with the subgradient 0 at 0."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, grad_output):
        (x,) = ctx.saved_tensors
        return grad_output * (x > 0).to(grad_output.dtype)


class Abs(torch.autograd.Function):
    """``|x|``, with the subgradient 0 at 0."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.abs()

    @staticmethod
    def backward(ctx, grad_output):
        (x,) = ctx.saved_tensors
        return grad_output * torch.sign(x)


class Lookup(torch.autograd.Function):
    """``table[index]``, an embedding lookup: repeated indices accumulate their gradients."""

    @staticmethod
    def forward(ctx, table, index):
        ctx.save_for_backward(index)
        ctx.rows = table.shape[0]
        return table[index]

    @staticmethod
    def backward(ctx, grad_output):
        (index,) = ctx.saved_tensors
        grad = grad_output.new_zeros(ctx.rows, grad_output.shape[-1])
        grad.index_add_(0, index, grad_output)
        return grad, None


class Cumsum(torch.autograd.Function):
    """Running sum, whose backward is the reversed running sum, written as a loop."""

    @staticmethod
    def forward(ctx, x):
        return torch.cumsum(x, 0)

    @staticmethod
    def backward(ctx, grad_output):
        grad = torch.zeros_like(grad_output)
        total = grad_output.new_zeros(())
        for i in range(grad_output.shape[0] - 1, -1, -1):
            total = total + grad_output[i]
            grad[i] = total
        return grad


class Gelu(torch.autograd.Function):
    """The tanh approximation of GELU, ``x/2 (1 + tanh(c (x + 0.044715 x**3)))``."""

    C = math.sqrt(2 / math.pi)
    K = 0.044715

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return 0.5 * x * (1 + torch.tanh(Gelu.C * (x + Gelu.K * x**3)))

    @staticmethod
    def backward(ctx, grad_output):
        (x,) = ctx.saved_tensors
        return grad_output * Gelu.derivative(x, Gelu.K)

    @staticmethod
    def derivative(x: torch.Tensor, k: float) -> torch.Tensor:
        t = torch.tanh(Gelu.C * (x + k * x**3))
        return 0.5 * (1 + t) + 0.5 * x * (1 - t**2) * Gelu.C * (1 + 3 * k * x**2)


class WeightDecay(torch.autograd.Function):
    """``lam * sum(w**2)`` with a small ``lam``: a regulariser with tiny gradients."""

    LAM = 1e-6

    @staticmethod
    def forward(ctx, w):
        ctx.save_for_backward(w)
        return WeightDecay.LAM * (w**2).sum()

    @staticmethod
    def backward(ctx, grad_output):
        (w,) = ctx.saved_tensors
        return grad_output * 2 * WeightDecay.LAM * w


# -- planted bugs -----------------------------------------------------------------------------
class LinearBiasMean(Linear):
    """Wrong factor: the bias gradient averages over the batch instead of summing."""

    @staticmethod
    def backward(ctx, grad_output):
        x, w = ctx.saved_tensors
        return grad_output @ w, grad_output.T @ x, grad_output.mean(0)


class SoftplusDoubled(Softplus):
    """Wrong factor: twice the sigmoid."""

    @staticmethod
    def backward(ctx, grad_output):
        (x,) = ctx.saved_tensors
        return 2 * grad_output * torch.sigmoid(x)


class MatMulTransposed(MatMul):
    """Transpose: ``grad_output.T @ a`` where ``a.T @ grad_output`` was meant."""

    @staticmethod
    def backward(ctx, grad_output):
        a, b = ctx.saved_tensors
        return grad_output @ b.T, grad_output.T @ a


class XSinXMissingTerm(torch.autograd.Function):
    """Missing term: ``x sin(x)`` differentiated as if ``x`` were a constant factor."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * torch.sin(x)

    @staticmethod
    def backward(ctx, grad_output):
        (x,) = ctx.saved_tensors
        return grad_output * x * torch.cos(x)  # forgets + sin(x)


class SoftmaxMissingTerm(Softmax):
    """Missing term: the softmax backward without ``- <g, s>``."""

    @staticmethod
    def backward(ctx, grad_output):
        (s,) = ctx.saved_tensors
        return s * grad_output


class PolarMissingTerm(PolarToCartesian):
    """Missing term: the gradient of ``r`` ignores the second output."""

    @staticmethod
    def backward(ctx, grad_x, grad_y):
        r, theta = ctx.saved_tensors
        cos, sin = torch.cos(theta), torch.sin(theta)
        return grad_x * cos, r * (grad_y * cos - grad_x * sin)


class CumsumOffByOne(Cumsum):
    """Single wrong entry: the loop stops one step early, leaving the first entry at 0."""

    @staticmethod
    def backward(ctx, grad_output):
        grad = torch.zeros_like(grad_output)
        total = grad_output.new_zeros(())
        for i in range(grad_output.shape[0] - 1, 0, -1):
            total = total + grad_output[i]
            grad[i] = total
        return grad


class LookupOverwrite(Lookup):
    """In-place overwrite: ``grad[index] = g`` where repeated indices must accumulate."""

    @staticmethod
    def backward(ctx, grad_output):
        (index,) = ctx.saved_tensors
        grad = grad_output.new_zeros(ctx.rows, grad_output.shape[-1])
        grad[index] = grad_output
        return grad, None


class SinInPlace(torch.autograd.Function):
    """In-place ``grad_output``: ``sin`` whose backward multiplies ``grad_output`` in place."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.sin(x)

    @staticmethod
    def backward(ctx, grad_output):
        (x,) = ctx.saved_tensors
        return grad_output.mul_(torch.cos(x))


class GeluTruncated(Gelu):
    """Slightly wrong constant: the backward uses 0.0447 where the forward uses 0.044715."""

    @staticmethod
    def backward(ctx, grad_output):
        (x,) = ctx.saved_tensors
        return grad_output * Gelu.derivative(x, 0.0447)


class WeightDecayHalf(WeightDecay):
    """Wrong factor in a tiny gradient: the 2 of ``d w**2`` is missing."""

    @staticmethod
    def backward(ctx, grad_output):
        (w,) = ctx.saved_tensors
        return grad_output * WeightDecay.LAM * w


def _shifted_sin(x: torch.Tensor) -> Any:
    # The other branch of the sum receives the same grad_output tensor after SinInPlace
    # has overwritten it: the first term's gradient comes out multiplied by cos(x).
    return 2 * x + SinInPlace.apply(x)


def _lookup_inputs() -> tuple[Any, ...]:
    return _randn(5, 3, seed=7), torch.tensor([1, 3, 1, 4])


def _at_kinks() -> tuple[Any, ...]:
    return (_tensor([-1.5, 0.0, 0.7, 0.0, 2.0]),)


CASES: tuple[Case, ...] = (
    # correct functions
    Case("x_sin_y", XSinY.apply, lambda: (_randn(3, 4, seed=0), _randn(3, 4, seed=1))),
    Case(
        "linear",
        Linear.apply,
        lambda: (_randn(4, 3, seed=2), _randn(2, 3, seed=3), _randn(2, seed=4)),
    ),
    Case("softplus", Softplus.apply, lambda: (_randn(6, seed=5),)),
    Case("matmul", MatMul.apply, lambda: (_randn(3, 3, seed=6), _randn(3, 3, seed=8))),
    Case(
        "two_outputs",
        PolarToCartesian.apply,
        lambda: (_randn(4, seed=9).abs().detach().requires_grad_(), _randn(4, seed=10)),
    ),
    Case("softmax", Softmax.apply, lambda: (_randn(4, 6, seed=11),)),
    Case("lookup", Lookup.apply, _lookup_inputs),
    Case("cumsum", Cumsum.apply, lambda: (_randn(6, seed=12),)),
    Case("gelu", Gelu.apply, lambda: (_randn(8, seed=13),)),
    Case("weight_decay", WeightDecay.apply, lambda: (_randn(5, seed=14),)),
    Case("relu_at_0", Relu.apply, _at_kinks, bug="correct; kinks at exactly 0"),
    Case("abs_at_0", Abs.apply, _at_kinks, bug="correct; kinks at exactly 0"),
    Case(
        "softplus_float32",
        Softplus.apply,
        lambda: (_randn(6, seed=5, dtype=torch.float32),),
        bug="correct; float32 inputs",
    ),
    # planted bugs
    Case(
        "linear_bias_mean",
        LinearBiasMean.apply,
        lambda: (_randn(4, 3, seed=2), _randn(2, 3, seed=3), _randn(2, seed=4)),
        wrong={"b": _indices((2,))},
        kind="scale",
        bug="wrong factor (mean for sum)",
    ),
    Case(
        "softplus_doubled",
        SoftplusDoubled.apply,
        lambda: (_randn(6, seed=5),),
        wrong={"x": _indices((6,))},
        kind="scale",
        bug="wrong factor (2x)",
    ),
    Case(
        "matmul_transposed",
        MatMulTransposed.apply,
        lambda: (_randn(3, 3, seed=6), _randn(3, 3, seed=8)),
        wrong={"b": _indices((3, 3)) - {(0, 0), (1, 1), (2, 2)}},
        kind="transpose",
        bug="transpose",
    ),
    Case(
        "x_sin_x_missing_term",
        XSinXMissingTerm.apply,
        lambda: (_randn(5, seed=15),),
        wrong={"x": _indices((5,))},
        bug="missing term (product rule)",
    ),
    Case(
        "softmax_missing_term",
        SoftmaxMissingTerm.apply,
        lambda: (_randn(4, 6, seed=11),),
        wrong={"x": _indices((4, 6))},
        bug="missing term (softmax)",
    ),
    Case(
        "two_outputs_missing_term",
        PolarMissingTerm.apply,
        lambda: (_randn(4, seed=9).abs().detach().requires_grad_(), _randn(4, seed=10)),
        wrong={"r": _indices((4,))},
        bug="missing term (second output)",
    ),
    Case(
        "cumsum_off_by_one",
        CumsumOffByOne.apply,
        lambda: (_randn(6, seed=12),),
        wrong={"x": frozenset({(0,)})},
        kind="few_entries",
        bug="single wrong entry (off-by-one)",
    ),
    Case(
        "lookup_overwrite",
        LookupOverwrite.apply,
        _lookup_inputs,
        wrong={"table": frozenset({(1, 0), (1, 1), (1, 2)})},
        kind="few_entries",
        bug="in-place overwrite (= for +=)",
    ),
    Case(
        "grad_output_in_place",
        _shifted_sin,
        lambda: (_randn(5, seed=16),),
        wrong={"x": _indices((5,))},
        bug="grad_output modified in place",
    ),
    Case(
        "gelu_truncated_constant",
        GeluTruncated.apply,
        lambda: (_tensor([-3.0, -2.5, -2.25, -1.25, -1.0, -0.75]),),
        wrong={"x": _indices((6,))},
        bug="constant off by 3e-4 (relative)",
    ),
    Case(
        "weight_decay_half",
        WeightDecayHalf.apply,
        lambda: (_randn(5, seed=14),),
        wrong={"w": _indices((5,))},
        kind="scale",
        bug="wrong factor in a 1e-6 gradient",
    ),
)
"""The suite: the correct functions first, then the planted bugs."""
