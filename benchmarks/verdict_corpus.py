"""Measure gradient checkers on gradproof's corpus: bugs found, bugs pinned, false alarms.

Runs every correct case and every planted bug of :mod:`gradproof.corpus` through

- gradproof.check (defaults; ``seed=`` for the random cases),
- the classic assignment's rule: central differences with epsilon 1e-7 over the flattened
  parameters, "wrong" when the global relative difference exceeds 2e-7,
- scipy.optimize.check_grad: the 2-norm of (gradient - forward difference); scipy gives no
  verdict, so "wrong" means above 1e-5 x max(1, ||gradient||),
- torch.autograd.gradcheck, default (slow) mode and fast mode, with one input per parameter
  tensor (float64 copies), so that its message can name the wrong input,

and prints one table: bugs detected, bugs localised to exactly the wrong parameters, false
alarms on correct code, inconclusive verdicts, inconclusive verdicts on smooth code (goal 0),
the smallest systematic error caught, and the time taken. Every checker sees the same loss;
for the random (dropout) case it is re-seeded before every evaluation, which gives the other
checkers gradproof's ``seed=`` for free.

"Smallest systematic error caught" multiplies the correct gradient of every smooth case
(no kink, no measured noise, a gradient not 0, passed by the checker) by ``1 + e`` for
``e`` = 1e-2, 3e-3, ..., 1e-8 and reports, over those cases, the median and the worst of
the smallest ``e`` from which every larger one is called wrong.

A second table runs the same checkers over the frontier families of issue 14
(:mod:`gradproof.corpus.frontier`): several kinks at once, jumps, tiny derivatives, domain
edges and small systematic errors.

Run:  python benchmarks/verdict_corpus.py [--json PATH] [--no-frontier] [--no-systematic]
"""

from __future__ import annotations

import argparse
import json
import math
import re
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

import gradproof
from gradproof import corpus
from gradproof.corpus import frontier
from gradproof.engine.randomness import reseed
from gradproof.tree import ParamTree

Verdict = tuple[str, frozenset[str]]  # ("fail" | "pass" | "inconclusive", parameters named)


def _seeded(fun: Callable[[Any], Any], seed: int | None) -> Callable[[Any], Any]:
    if seed is None:
        return fun

    def call(p: Any) -> Any:
        reseed(seed)
        return fun(p)

    return call


def run_gradproof(case: corpus.Case, grad: Callable[[Any], Any]) -> Verdict:
    """Run gradproof.check with its defaults."""
    result = gradproof.check(case.loss, grad, case.params, seed=case.seed)
    return result.verdict.value, frozenset(result.suspects)


def run_assignment_rule(case: corpus.Case, grad: Callable[[Any], Any]) -> Verdict:
    """Run the assignment's global relative-difference test (epsilon 1e-7, threshold 2e-7)."""
    tree, x = ParamTree.flatten(case.params)
    loss = _seeded(case.loss, case.seed)
    g = tree.flatten_like(_seeded(grad, case.seed)(tree.unflatten(x.copy())))
    approx = np.empty_like(x)
    for i in range(x.size):
        plus, minus = x.copy(), x.copy()
        plus[i] += 1e-7
        minus[i] -= 1e-7
        approx[i] = (float(loss(tree.unflatten(plus))) - float(loss(tree.unflatten(minus)))) / 2e-7
    difference = np.linalg.norm(g - approx) / (np.linalg.norm(g) + np.linalg.norm(approx))
    return ("fail" if difference > 2e-7 else "pass"), frozenset()


def run_scipy(case: corpus.Case, grad: Callable[[Any], Any]) -> Verdict:
    """Run scipy.optimize.check_grad, read as wrong above 1e-5 x max(1, ||grad||)."""
    from scipy.optimize import check_grad

    tree, x = ParamTree.flatten(case.params)
    loss = _seeded(case.loss, case.seed)
    seeded_grad = _seeded(grad, case.seed)

    def f(v: np.ndarray) -> float:
        return float(loss(tree.unflatten(v.copy())))

    def g(v: np.ndarray) -> np.ndarray:
        return tree.flatten_like(seeded_grad(tree.unflatten(v.copy())))

    error = check_grad(f, g, x)
    bound = 1e-5 * max(1.0, float(np.linalg.norm(g(x))))
    return ("fail" if error > bound else "pass"), frozenset()


def run_torch(case: corpus.Case, grad: Callable[[Any], Any], *, fast: bool) -> Verdict:
    """Run torch.autograd.gradcheck with one float64 input per parameter tensor."""
    import torch
    from torch.autograd.gradcheck import GradcheckError

    tree, x = ParamTree.flatten(case.params)
    loss = _seeded(case.loss, case.seed)
    seeded_grad = _seeded(grad, case.seed)
    names = [leaf.name for leaf in tree.leaves]

    def to_vector(tensors: tuple[torch.Tensor, ...]) -> np.ndarray:
        return np.concatenate([t.detach().numpy().reshape(-1) for t in tensors])

    class Loss(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, *tensors: torch.Tensor) -> torch.Tensor:
            ctx.vector = to_vector(tensors)
            return torch.tensor(float(loss(tree.unflatten(ctx.vector))), dtype=torch.float64)

        @staticmethod
        def backward(ctx: Any, upstream: torch.Tensor) -> tuple[torch.Tensor, ...]:
            g = tree.flatten_like(seeded_grad(tree.unflatten(ctx.vector.copy())))
            return tuple(
                upstream * torch.from_numpy(g[leaf.span].reshape(leaf.shape).copy())
                for leaf in tree.leaves
            )

    inputs = tuple(
        torch.tensor(x[leaf.span].reshape(leaf.shape), dtype=torch.float64, requires_grad=True)
        for leaf in tree.leaves
    )
    try:
        torch.autograd.gradcheck(Loss.apply, inputs, fast_mode=fast)
    except GradcheckError as exc:
        found = re.search(r"with respect to input (\d+)", str(exc))
        named = frozenset({names[int(found.group(1))]}) if found else frozenset()
        return "fail", named
    return "pass", frozenset()


CHECKERS: dict[str, Callable[[corpus.Case, Callable[[Any], Any]], Verdict]] = {
    "gradproof.check": run_gradproof,
    "assignment rule (2e-7)": run_assignment_rule,
    "scipy check_grad": run_scipy,
    "torch gradcheck": lambda c, g: run_torch(c, g, fast=False),
    "torch gradcheck (fast)": lambda c, g: run_torch(c, g, fast=True),
}


SYSTEMATIC_ERRORS = (1e-2, 3e-3, 1e-3, 3e-4, 1e-4, 3e-5, 1e-5, 3e-6, 1e-6, 3e-7, 1e-7, 3e-8, 1e-8)
"""The relative errors planted on every entry, largest first."""

SMOOTH_FAMILIES = ("tiny-derivatives", "domain-edge", "systematic")
"""Frontier families of smooth code: an inconclusive verdict there is a failure."""


@dataclass
class Tally:
    """One checker's counts over the corpus."""

    detected: int = 0
    localised: int = 0
    false_alarms: int = 0
    inconclusive: int = 0
    inconclusive_smooth: int = 0
    seconds: float = 0.0
    systematic: str = "-"
    false_alarm_cases: list[str] = field(default_factory=list)
    missed_bugs: list[str] = field(default_factory=list)
    inconclusive_smooth_cases: list[str] = field(default_factory=list)


def _is_smooth(case: corpus.Case) -> bool:
    """Whether a correct case is differentiable everywhere near its point."""
    if case.name in {c.name for c in frontier.cases()}:
        return frontier.family_of(case.name) in SMOOTH_FAMILIES
    return "kink" not in case.tags


def _nonzero(case: corpus.Case) -> bool:
    """Whether the case's gradient is far from 0 (a factor on a zero gradient changes nothing)."""
    tree, x = ParamTree.flatten(case.params)
    g = tree.flatten_like(_seeded(case.grad, case.seed)(tree.unflatten(x.copy())))
    return bool(np.max(np.abs(g)) > 1e-12)


def _scaled(grad: Callable[[Any], Any], factor: float) -> Callable[[Any], Any]:
    def scaled(p: Any) -> Any:
        return {k: np.asarray(v, dtype=np.float64) * factor for k, v in grad(p).items()}

    return scaled


def _smallest_systematic(
    checker: Callable[[corpus.Case, Callable[[Any], Any]], Verdict], cases: tuple[corpus.Case, ...]
) -> str:
    """Return the median and the worst, over the given cases, of the smallest error caught."""
    found = []
    for case in cases:
        smallest = math.inf
        for error in SYSTEMATIC_ERRORS:
            if checker(case, _scaled(case.grad, 1.0 + error))[0] != "fail":
                break
            smallest = error
        found.append(smallest)
    if not found:
        return "-"

    def shown(value: float) -> str:
        return "none" if math.isinf(value) else f"{value:.0e}"

    return f"{shown(statistics.median(found))} ({shown(max(found))})"


def measure(
    cases: tuple[corpus.Case, ...],
    bugs: tuple[tuple[corpus.Case, corpus.Bug], ...],
    *,
    systematic: bool = True,
) -> dict[str, Tally]:
    """Run every checker over every correct case and every planted bug."""
    tallies = {name: Tally() for name in CHECKERS}
    plain = tuple(c for c in cases if _is_smooth(c) and not {"noise", "saturation"} & c.tags)
    for name, checker in CHECKERS.items():
        tally = tallies[name]
        started = time.perf_counter()
        for case in cases:
            verdict, _ = checker(case, case.grad)
            if verdict == "fail":
                tally.false_alarms += 1
                tally.false_alarm_cases.append(case.name)
            elif verdict == "inconclusive":
                tally.inconclusive += 1
                if _is_smooth(case):
                    tally.inconclusive_smooth += 1
                    tally.inconclusive_smooth_cases.append(case.name)
        for case, bug in bugs:
            verdict, named = checker(case, bug.grad)
            if verdict == "fail":
                tally.detected += 1
                tally.localised += named == bug.wrong
            else:
                tally.missed_bugs.append(f"{case.name}/{bug.name}")
        tally.seconds = time.perf_counter() - started
        if systematic:  # where the checker passes the correct code, and a factor shows
            kept = tuple(c for c in plain if _nonzero(c) and checker(c, c.grad)[0] == "pass")
            tally.systematic = _smallest_systematic(checker, kept)
    return tallies


def render(tallies: dict[str, Tally], n_cases: int, n_bugs: int) -> str:
    """Format the counts as a Markdown table, with the misses and false alarms listed."""
    lines = [
        f"| checker | bugs detected (of {n_bugs}) | localised exactly | "
        f"false alarms (of {n_cases} correct) | inconclusive | inconclusive on smooth code | "
        "smallest systematic error caught, median (worst) | time |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, t in tallies.items():
        lines.append(
            f"| {name} | {t.detected} | {t.localised} | {t.false_alarms} | {t.inconclusive} | "
            f"{t.inconclusive_smooth} | {t.systematic} | {t.seconds:.1f} s |"
        )
    details = []
    for name, t in tallies.items():
        if t.false_alarm_cases:
            details.append(f"- {name}: false alarms on {', '.join(t.false_alarm_cases)}")
        if t.missed_bugs:
            details.append(f"- {name}: missed {', '.join(t.missed_bugs)}")
        if t.inconclusive_smooth_cases:
            details.append(
                f"- {name}: inconclusive on smooth {', '.join(t.inconclusive_smooth_cases)}"
            )
    return "\n".join([*lines, "", *details] if details else lines)


def main() -> None:
    """Print the tables; optionally write the counts as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="also write the counts to this file")
    parser.add_argument("--no-frontier", action="store_true", help="the main corpus only")
    parser.add_argument(
        "--no-systematic", action="store_true", help="skip the systematic-error sweep"
    )
    args = parser.parse_args()
    cases, bugs = corpus.cases(), corpus.bugs()
    tallies = measure(cases, bugs, systematic=not args.no_systematic)
    print(render(tallies, len(cases), len(bugs)))
    out = {"corpus": {k: vars(v) for k, v in tallies.items()}}
    if not args.no_frontier:
        f_cases, f_bugs = frontier.cases(), frontier.bugs()
        f_tallies = measure(f_cases, f_bugs, systematic=not args.no_systematic)
        print("\nFrontier families (issue 14):\n")
        print(render(f_tallies, len(f_cases), len(f_bugs)))
        out["frontier"] = {k: vars(v) for k, v in f_tallies.items()}
    if args.json:
        with open(args.json, "w", encoding="utf-8") as stream:
            json.dump(out, stream, indent=2)


if __name__ == "__main__":
    main()
