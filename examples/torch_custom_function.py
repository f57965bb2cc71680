"""Check the hand-written backward of a custom PyTorch Function: a fused linear + GELU layer.

The layer computes ``gelu(x @ weight.T + bias)`` in one ``torch.autograd.Function`` with a
backward derived by hand. Its first version builds the weight gradient with the product in the
wrong order. The layer is square (4 features in, 4 out), so the wrong gradient has the right
shape and PyTorch accepts it without complaint. The example shows:

1. ``gradproof.torch.check_function`` on the first version: the report names the wrong input,
   lists its wrong entries and says the gradient is transposed;
2. the fixed version, checked again: it passes;
3. the same check in a test suite, with ``gradproof.testing.assert_function``;
4. a float32 ``nn.Module`` built on the layer, checked with ``gradproof.torch.check_module``.

Run it with ``python examples/torch_custom_function.py`` (it needs PyTorch).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from gradproof.testing import GradientMismatchError, assert_function
from gradproof.torch import check_function, check_module


# --8<-- [start:layer]
def gelu_and_slope(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Return GELU at `z` and its derivative, ``z * Phi(z)`` and ``Phi(z) + z * phi(z)``."""
    cdf = 0.5 * (1.0 + torch.erf(z / math.sqrt(2.0)))
    pdf = torch.exp(-0.5 * z**2) / math.sqrt(2.0 * math.pi)
    return z * cdf, cdf + z * pdf


class LinearGELU(torch.autograd.Function):
    """``gelu(x @ weight.T + bias)`` with a hand-written backward (first version)."""

    generate_vmap_rule = True  # lets gradproof batch its evaluations with torch.func.vmap

    @staticmethod
    def forward(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """Apply the layer to a batch `x` of shape (batch, in)."""
        return gelu_and_slope(x @ weight.T + bias)[0]

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        """Save the inputs for the backward."""
        ctx.save_for_backward(*inputs)

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Return the gradients of x, weight and bias."""
        x, weight, bias = ctx.saved_tensors
        dz = grad_output * gelu_and_slope(x @ weight.T + bias)[1]
        return dz @ weight, x.T @ dz, dz.sum(0)  # bug: the weight's gradient is dz.T @ x


# --8<-- [end:layer]


# --8<-- [start:fix]
class FixedLinearGELU(LinearGELU):
    """The same layer with the weight's gradient fixed."""

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Return the gradients of x, weight and bias."""
        x, weight, bias = ctx.saved_tensors
        dz = grad_output * gelu_and_slope(x @ weight.T + bias)[1]
        return dz @ weight, dz.T @ x, dz.sum(0)


# --8<-- [end:fix]


# --8<-- [start:inputs]
def make_inputs() -> dict[str, torch.Tensor]:
    """Return a batch of 8 examples with 4 features, and the layer's weight and bias."""
    generator = torch.Generator().manual_seed(0)

    def draw(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, dtype=torch.float64, generator=generator, requires_grad=True)

    return {"x": draw(8, 4), "weight": draw(4, 4), "bias": draw(4)}


# --8<-- [end:inputs]


# --8<-- [start:module]
class Block(torch.nn.Module):
    """A small regression network: the fused layer, then a linear head."""

    def __init__(self, features: int, function: type[torch.autograd.Function]) -> None:
        super().__init__()
        self.function = function
        self.weight = torch.nn.Parameter(torch.randn(features, features) / math.sqrt(features))
        self.bias = torch.nn.Parameter(torch.zeros(features))
        self.head = torch.nn.Linear(features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return one prediction per example."""
        return self.head(self.function.apply(x, self.weight, self.bias))


# --8<-- [end:module]


print("== The first version ==")
# --8<-- [start:check]
inputs = make_inputs()
# vmap=True: batch the finite differences through torch.func.vmap. By default gradproof
# batches only where a batch is measured to be twice as fast per point as single calls.
result = check_function(LinearGELU.apply, inputs, vmap=True)
print(result)
# --8<-- [end:check]

print()
print("== The fixed backward ==")
# --8<-- [start:check-fixed]
result = check_function(FixedLinearGELU.apply, inputs, vmap=True)
print(f"verdict: {result.verdict}; passed: {result.passed}; suspects: {result.suspects}")
print(f"{result.n_checked} of {result.n_entries} entries checked; margin {result.margin:.3g}×")
# --8<-- [end:check-fixed]

print()
print("== In a test suite ==")
# --8<-- [start:assert]
try:
    assert_function(LinearGELU.apply, inputs)
except GradientMismatchError as error:
    print("first version:", str(error).splitlines()[0])
print("fixed version passes:", assert_function(FixedLinearGELU.apply, inputs).passed)
# --8<-- [end:assert]

print()
print("== A module built on the layer ==")
# --8<-- [start:check-module]
generator = torch.Generator().manual_seed(1)
features = torch.randn(32, 4, generator=generator)  # float32, as a model's data usually is
target = torch.randn(32, 1, generator=generator)
for function in (LinearGELU, FixedLinearGELU):
    torch.manual_seed(0)  # the same initial parameters for both versions
    model = Block(4, function)
    result = check_module(model, features, lambda out: torch.nn.functional.mse_loss(out, target))
    print(f"{function.__name__}: {result.verdict}; suspects: {result.suspects}")
    for name in result.suspects:
        print(f"  {name}: {result[name].diagnosis.summary}")
print(result)
# --8<-- [end:check-module]
