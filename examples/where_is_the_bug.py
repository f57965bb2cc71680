"""Where is the bug? The layer whose backward is wrong, and the line of backprop where it enters.

A wrong gradient in one layer's backward corrupts every gradient computed after it, so a
parameter check finds many wrong parameters: symptoms. This example finds the cause:

1. ``gradproof.torch.locate`` on a small residual network with a custom layer-norm
   ``autograd.Function`` in each block, one of which passes on twice its input gradient: it
   names that block's norm, and not the blocks it feeds a wrong gradient;
2. the same network with the bug fixed: no culprit;
3. ``gradproof.check_stages`` on the classic assignment's backward pass, line by line: the
   lines that compute dW2 and db1 are wrong, not the ones upstream of them;
4. ``gradproof.check_stages`` on a network of one's own, with a wrong activation line.

Run it with ``python examples/where_is_the_bug.py`` (it needs PyTorch).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

import gradproof
from gradproof import course
from gradproof.torch import locate


# --8<-- [start:model]
class LayerNormFn(torch.autograd.Function):
    """Layer norm over the last axis, with a hand-written backward."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, factor: float) -> torch.Tensor:
        """Normalise `x`; `factor` scales the input gradient (1 is right)."""
        mu = x.mean(-1, keepdim=True)
        rstd = 1 / torch.sqrt(x.var(-1, unbiased=False, keepdim=True) + 1e-5)
        xhat = (x - mu) * rstd
        ctx.save_for_backward(xhat, rstd)
        ctx.factor = factor
        return xhat

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor, None]:
        """Return the input gradient, times `factor`."""
        xhat, rstd = ctx.saved_tensors
        gx = (g - g.mean(-1, keepdim=True) - xhat * (g * xhat).mean(-1, keepdim=True)) * rstd
        return ctx.factor * gx, None


class LayerNorm(torch.nn.Module):
    """The custom layer norm, with a weight and a bias."""

    def __init__(self, width: int, factor: float = 1.0) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(width))
        self.bias = torch.nn.Parameter(torch.zeros(width))
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise, scale and shift."""
        return LayerNormFn.apply(x, self.factor) * self.weight + self.bias  # type: ignore[no-any-return]


class Block(torch.nn.Module):
    """``x + fc2(tanh(fc1(norm(x))))``: a residual block."""

    def __init__(self, width: int, factor: float = 1.0) -> None:
        super().__init__()
        self.norm = LayerNorm(width, factor)
        self.fc1 = torch.nn.Linear(width, 2 * width)
        self.fc2 = torch.nn.Linear(2 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Add the block's branch to its input."""
        return x + self.fc2(torch.tanh(self.fc1(self.norm(x))))


class Net(torch.nn.Module):
    """An embedding, four residual blocks and a head; block `wrong`'s norm is wrong."""

    def __init__(self, wrong: int | None) -> None:
        super().__init__()
        self.embed = torch.nn.Linear(3, 8)
        self.blocks = torch.nn.ModuleList(Block(8, 2.0 if i == wrong else 1.0) for i in range(4))
        self.head = torch.nn.Linear(8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Run the blocks in turn."""
        h = self.embed(x)
        for block in self.blocks:
            h = block(h)
        return self.head(h)  # type: ignore[no-any-return]


torch.manual_seed(0)
x = torch.randn(6, 3, dtype=torch.float64)
y = torch.randn(6, 1, dtype=torch.float64)


def loss(out: torch.Tensor) -> torch.Tensor:
    """Mean squared error against `y`."""
    return ((out - y) ** 2).mean()


# --8<-- [end:model]


def main() -> None:
    """Run the four steps."""
    print("== 1. A residual network with a wrong layer norm in block 2 ==")
    # --8<-- [start:locate]
    torch.manual_seed(1)
    model = Net(wrong=2).double()
    result = locate(model, x, loss)
    print(result.culprits)
    print(result)
    # --8<-- [end:locate]
    print()
    print("== 2. The same network, fixed ==")
    # --8<-- [start:fixed]
    torch.manual_seed(1)
    print(locate(Net(wrong=None).double(), x, loss))
    # --8<-- [end:fixed]
    print()
    print("== 3. The assignment's backward pass, line by line ==")
    # --8<-- [start:assignment]
    X, Y, parameters = course.gradient_check_n_test_case()
    _, cache = course.forward_propagation_n(X, Y, parameters)
    gradients = course.backward_propagation_n(X, Y, cache)  # dZ3, dA2, ..., dW1, db1
    staged = gradproof.check_stages(course.forward_stages_n(Y), X, gradients, params=parameters)
    print(staged)
    # --8<-- [end:assignment]
    print()
    print("== 4. A network of one's own ==")
    # --8<-- [start:own]
    rng = np.random.default_rng(0)
    inputs, targets = rng.normal(size=(8, 3)), rng.normal(size=(8, 2))
    params = {"W1": rng.normal(size=(3, 4)), "W2": rng.normal(size=(4, 2))}
    stages = [
        ("Z", lambda a, p: a @ p["W1"]),
        ("H", lambda z, p: np.tanh(z)),
        ("P", lambda h, p: h @ p["W2"]),
        ("loss", lambda out, p: float(np.mean((out - targets) ** 2))),
    ]
    H = np.tanh(inputs @ params["W1"])
    dP = 2 * (H @ params["W2"] - targets) / targets.size
    dH = dP @ params["W2"].T
    dZ = dH * (1 - H)  # bug: tanh's derivative is 1 - H**2
    grads = {"dP": dP, "dW2": H.T @ dP, "dH": dH, "dZ": dZ, "dW1": inputs.T @ dZ}
    print(gradproof.check_stages(stages, inputs, grads, params=params).where)
    # --8<-- [end:own]


if __name__ == "__main__":
    main()
