"""Measure what ``gradproof.torch.locate`` costs, against a directional parameter check.

The model is a residual network of 24 blocks, ``x + fc2(tanh(fc1(norm(x))))`` at width 8,
on a batch of 8 examples, with a custom layer-norm ``autograd.Function`` in every block.
In the wrong models, one block's layer norm passes on twice its input gradient (a wrong
custom Function in one block); the block is 0 (the culprit farthest from the loss), 11 or
23 (nearest). For each model the benchmark runs:

* ``gradproof.torch.locate(model, x, loss)``: loss evaluations, forward and backward
  passes, wall time, and whether the culprit is named exactly (``culprits[0]`` is the
  wrong block's ``norm``; none for the correct model);
* ``gradproof.torch.check_module(model, x, loss, mode="directional")``: the directional
  check of every parameter, on the same model and loss: evaluations and wall time.

The goals (issue 16): the culprit named exactly in at most 300 loss evaluations and in at
most 10 times the time of the directional parameter check of the same model; no culprit
on the correct model. The directional check of a wrong model localises the wrong entries
of every parameter that receives a wrong gradient, so the table also gives the ratio to the
directional check of the correct model, the check's cost when nothing needs localising.
Times are the best of 3 runs (1 with ``--quick``) when a run takes at most a second, else
of one run, after an untimed run of both on the correct model.

torch runs on one thread (``torch.set_num_threads(1)``): the models are tiny, and on a loaded
machine waiting for intra-op threads costs more than the arithmetic, for both checks alike.

Run:  python benchmarks/locate.py [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from typing import Any

import torch

from gradproof.torch import check_module, locate

N_BLOCKS = 24
WIDTH = 8
BATCH = 8
WRONG_BLOCKS = (0, 11, 23)
EVAL_GOAL = 300
TIME_GOAL = 10.0


class LayerNormFn(torch.autograd.Function):
    """Layer norm over the last axis; ``factor`` scales the input gradient (1 is right)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, factor: float) -> torch.Tensor:
        """Normalise `x` over its last axis."""
        mu = x.mean(-1, keepdim=True)
        rstd = 1 / torch.sqrt(x.var(-1, unbiased=False, keepdim=True) + 1e-5)
        xhat = (x - mu) * rstd
        ctx.save_for_backward(xhat, rstd)
        ctx.factor = factor
        return xhat

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor, None]:
        """Return `factor` times the input gradient."""
        xhat, rstd = ctx.saved_tensors
        gx = (g - g.mean(-1, keepdim=True) - xhat * (g * xhat).mean(-1, keepdim=True)) * rstd
        return ctx.factor * gx, None


class Norm(torch.nn.Module):
    """The custom layer norm with a weight and a bias."""

    def __init__(self, width: int, factor: float) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(width))
        self.bias = torch.nn.Parameter(torch.zeros(width))
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise, scale and shift."""
        return LayerNormFn.apply(x, self.factor) * self.weight + self.bias  # type: ignore[no-any-return]


class Block(torch.nn.Module):
    """``x + fc2(tanh(fc1(norm(x))))``."""

    def __init__(self, width: int, factor: float) -> None:
        super().__init__()
        self.norm = Norm(width, factor)
        self.fc1 = torch.nn.Linear(width, 2 * width)
        self.fc2 = torch.nn.Linear(2 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Add the block's branch to its input."""
        return x + self.fc2(torch.tanh(self.fc1(self.norm(x))))


class ResidualNet(torch.nn.Module):
    """An embedding, 24 residual blocks and a head; block `wrong`'s norm is wrong."""

    def __init__(self, wrong: int | None) -> None:
        super().__init__()
        self.embed = torch.nn.Linear(4, WIDTH)
        self.blocks = torch.nn.ModuleList(
            Block(WIDTH, 2.0 if i == wrong else 1.0) for i in range(N_BLOCKS)
        )
        self.head = torch.nn.Linear(WIDTH, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Run the blocks in turn."""
        h = self.embed(x)
        for block in self.blocks:
            h = block(h)
        return self.head(h)  # type: ignore[no-any-return]


def best_of(runs: int, fn: Callable[[], Any]) -> tuple[float, Any]:
    """Time `fn`: the best of `runs` runs when one takes at most a second, else one run."""
    best, out = float("inf"), None
    for _ in range(runs):
        started = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - started)
        if best > 1.0:
            break
    return best, out


def main() -> None:
    """Measure locate and the directional check on each model, and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="time one run instead of 3")
    parser.add_argument("--json", help="also write the measurements to this file")
    args = parser.parse_args()
    runs = 1 if args.quick else 3
    torch.set_num_threads(1)
    torch.manual_seed(0)
    x = torch.randn(BATCH, 4, dtype=torch.float64)
    y = torch.randn(BATCH, 1, dtype=torch.float64)

    def loss(out: torch.Tensor) -> torch.Tensor:
        return ((out - y) ** 2).mean()

    torch.manual_seed(1)
    warm = ResidualNet(None).double()  # untimed: one-time costs of the process
    locate(warm, x, loss)
    check_module(warm, x, loss, mode="directional")
    rows = []
    baseline = None
    for wrong in (None, *WRONG_BLOCKS):
        torch.manual_seed(1)
        model = ResidualNet(wrong).double()
        t_locate, found = best_of(runs, lambda m=model: locate(m, x, loss))
        t_check, checked = best_of(
            runs, lambda m=model: check_module(m, x, loss, mode="directional")
        )
        if wrong is None:
            baseline = t_check
        expected = () if wrong is None else (f"blocks.{wrong}.norm", f"blocks.{wrong}")
        rows.append(
            {
                "wrong block": "none" if wrong is None else wrong,
                "culprits": list(found.culprits),
                "exact": found.culprits == expected,
                "locate evals": found.n_evals,
                "forward passes": found.n_forward,
                "backward passes": found.n_backward,
                "locate s": t_locate,
                "directional check evals": checked.n_evals,
                "directional check s": t_check,
                "ratio": t_locate / t_check,
                "ratio to correct check": t_locate / (baseline or t_check),
            }
        )
    n_params = sum(p.numel() for p in ResidualNet(None).parameters())
    print(
        f"{N_BLOCKS} residual blocks, width {WIDTH}, batch {BATCH}: {n_params} parameters in "
        f"{len(list(ResidualNet(None).parameters()))} tensors; best of {runs} "
        f"(load average {os.getloadavg()[0]:.2f})"
    )
    print()
    header = (
        f"{'wrong block':>11}  {'culprits[0]':<14} {'exact':>5}  {'evals':>5}  {'fwd':>4}  "
        f"{'bwd':>3}  {'locate':>8}  {'dir. evals':>10}  {'dir. check':>10}  {'ratio':>5}  "
        f"{'vs correct':>10}"
    )
    print(header)
    for r in rows:
        first = r["culprits"][0] if r["culprits"] else "-"
        print(
            f"{r['wrong block']!s:>11}  {first:<14} {r['exact']!s:>5}  {r['locate evals']:>5}  "
            f"{r['forward passes']:>4}  {r['backward passes']:>3}  {r['locate s']:>7.3f}s  "
            f"{r['directional check evals']:>10}  {r['directional check s']:>9.3f}s  "
            f"{r['ratio']:>5.2f}  {r['ratio to correct check']:>10.2f}"
        )
    ok = all(r["exact"] for r in rows) and all(
        r["locate evals"] <= EVAL_GOAL and r["ratio"] <= TIME_GOAL for r in rows
    )
    print()
    print(
        f"Goals: culprit exact, at most {EVAL_GOAL} evaluations and {TIME_GOAL:g}x the "
        f"directional check's time: {'met' if ok else 'NOT met'}."
    )
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump({"rows": rows, "goals_met": ok}, handle, indent=2)


if __name__ == "__main__":
    main()
