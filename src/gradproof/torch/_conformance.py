"""gradcheck's checks of a backward that need no finite difference.

Each returns ``None`` when the backward behaves, or a message saying what it
did, what autograd expects, and which flag skips the check. They run after
the structural checks of :mod:`gradproof.torch._structure` and before the
finite differences, so a failure costs a few backward passes.
"""

from __future__ import annotations

import numpy as np
import torch

from gradproof.torch._convert import _describe_error, _materialized, _random_like
from gradproof.torch._problem import _Problem
from gradproof.torch._structure import _largest

_BATCH = 2
"""Cotangents per batched backward (gradcheck's ``_test_batched_grad`` draws two as well)."""


def _undefined_grad_failure(problem: _Problem) -> str | None:
    """Call the backward with undefined gradients for all outputs, then for each one alone.

    Note [Undefined output gradients]
        When an output of a Function does not reach the loss, autograd hands
        its backward no gradient for it: ``None`` in a custom Function, an
        undefined tensor in a native one. A backward must read that as zeros:
        not raise, and give zero input gradients when every output's gradient
        is undefined. gradcheck checks it with ``UndefinedGrad``, which makes
        the gradient flowing into an output undefined; so does this.
    """
    leaves = problem.leaves()
    names = problem.outputs.names
    undefined_sets: list[set[int]] = [set(range(len(names)))]
    if len(names) > 1:
        undefined_sets += [{k} for k in range(len(names))]
    for undefined in undefined_sets:
        with torch.enable_grad():
            outputs = problem.forward(leaves)
            marked = [_undefined(o) if k in undefined else o for k, o in enumerate(outputs)]
        which = (
            "every output's gradient"
            if len(undefined) == len(names)
            else f"the gradient of `{names[next(iter(undefined))]}`"
        )
        problem.n_backward += 1
        try:
            grads = torch.autograd.grad(
                marked, leaves, [torch.zeros_like(o) for o in marked], allow_unused=True
            )
        except Exception as exc:  # a Python backward fails on None with TypeError
            return (
                f"The backward fails when {which} is undefined: it raised "
                f"{_describe_error(exc)}. Autograd passes None (an undefined gradient) for "
                "outputs that do not reach the loss; a backward must treat it as zeros "
                "(`if grad_output is None: ...`). Pass `check_undefined_grad=False` to skip "
                "this check."
            )
        found = [None if g is None else _materialized(g) for g in grads]
        nonzero = _largest(found, problem.names)
        if nonzero is not None:
            return (
                f"With {which} undefined (and the others zero), the backward returned a "
                f"nonzero gradient (|{nonzero[1]}| = {nonzero[0]:.3g}); expected zeros, since "
                "no gradient flows in. Read an undefined grad_output as zeros, and multiply "
                "every term by it. Pass `check_undefined_grad=False` to skip this check."
            )
    return None


def _undefined(output: torch.Tensor) -> torch.Tensor:
    """Pass `output` through, with the gradient flowing back into it made undefined."""
    marked = torch._C._functions.UndefinedGrad()(output)
    return marked[0] if isinstance(marked, list) else marked


def _nondeterminism_failure(problem: _Problem, nondet_tol: float) -> str | None:
    """Gradcheck's reentrancy check: two backward passes must agree within `nondet_tol`."""
    differs = problem.nondeterminism
    if differs is None or differs[0] <= nondet_tol:
        return None
    return (
        f"Backward is not reentrant: two backward passes through the same graph with the "
        f"same cotangent differ by up to {differs[0]:.3g} (at {differs[1]}), more than "
        f"`nondet_tol={nondet_tol:g}`. If the backward is nondeterministic on purpose "
        "(atomic additions on a GPU), pass a `nondet_tol` above that difference; otherwise "
        "look for state the backward changes, e.g. saved tensors modified in place."
    )


def _batched_grad_failure(problem: _Problem, rng: np.random.Generator) -> str | None:
    """Compare the backward on a batch of cotangents (vmap) with it on each one."""
    leaves = problem.leaves()
    with torch.enable_grad():
        outputs = problem.forward(leaves)
    draws = [
        problem.split(_random_like(rng, (problem.outputs.size,), problem.device))
        for _ in range(_BATCH)
    ]
    batched_cotangents = [torch.stack(parts) for parts in zip(*draws, strict=True)]
    problem.n_backward += _BATCH + 1
    try:
        batched = torch.autograd.grad(
            outputs,
            leaves,
            batched_cotangents,
            retain_graph=True,
            allow_unused=True,
            is_grads_batched=True,
        )
    except RuntimeError as exc:
        return (
            f"The backward cannot run on a batch of cotangents through vmap: "
            f"{_describe_error(exc)}. A custom Function needs `generate_vmap_rule = True` "
            "(with `setup_context`) or a `vmap` staticmethod for batched gradients. Pass "
            "`check_batched_grad=False` to skip this check."
        )
    for b, cotangent in enumerate(draws):
        single = problem.vjp(outputs, leaves, cotangent, retain_graph=True)
        for name, one, many in zip(problem.names, single, batched, strict=True):
            got = torch.zeros_like(one) if many is None else _materialized(many[b])
            if not torch.allclose(got.to(one.dtype), one, equal_nan=True):
                differs = _largest([got - one], [name])
                where = f" (by {differs[0]:.3g} at {differs[1]})" if differs else ""
                return (
                    f"The batched backward (vmap over {_BATCH} cotangents) differs from the "
                    f"backward run on each cotangent for `{name}`{where}: the Function's batching "
                    "rule is wrong. Fix its `vmap` staticmethod, or pass "
                    "`check_batched_grad=False` to skip this check."
                )
    return None
