"""The structural checks, made before any finite difference.

A function or module that does not repeat itself, or whose backward returns
gradients of the wrong shape, dtype or device, is refused; a backward that is
not deterministic, that is not zero for a zero cotangent, or that overwrites its
``grad_output`` gets a note.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from gradproof.checking.check import NondeterministicLossError
from gradproof.errors import InputError
from gradproof.tree import format_index

if TYPE_CHECKING:
    from gradproof.torch._module import _ModuleProblem
    from gradproof.torch._problem import _Problem


_REPEAT_ULPS = 64
"""How many units of rounding two calls may differ by under ``rounding_repeats``."""


def _eps(problem: _Problem) -> float:
    """Return the machine epsilon of the least precise output."""
    return max(torch.finfo(dtype).eps for dtype in problem.outputs.dtypes)


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bitwise equality, NaN equal to NaN."""
    return bool(((a == b) | (torch.isnan(a) & torch.isnan(b))).all())


def _largest(
    tensors: Sequence[torch.Tensor | None], names: Sequence[str]
) -> tuple[float, str] | None:
    """Return the largest absolute entry of some tensors and its name (None if all are 0)."""
    best: tuple[float, str] | None = None
    for tensor, name in zip(tensors, names, strict=True):
        if tensor is None or tensor.numel() == 0:
            continue
        flat = tensor.detach().abs().reshape(-1).to(torch.float64)
        i = int(torch.argmax(torch.nan_to_num(flat, nan=math.inf)))
        value = float(flat[i])
        if value != 0 and (best is None or value > best[0] or math.isnan(value)):
            index = tuple(int(j) for j in np.unravel_index(i, tuple(tensor.shape)))
            best = (value, format_index(name, index))
    return best


def _largest_difference(
    first: Sequence[torch.Tensor], second: Sequence[torch.Tensor], names: Sequence[str]
) -> tuple[float, str] | None:
    return _largest([a - b for a, b in zip(first, second, strict=True)], names)


def _check_function_structure(
    problem: _Problem,
    cotangent: torch.Tensor,
    *,
    report_nondeterminism: bool = True,
    rounding_repeats: bool = False,
) -> None:
    """Repeatability, shapes, dtypes and devices, linearity at zero, grad_output left alone.

    The backward's nondeterminism is kept in ``problem.nondeterminism`` (and
    noted, with `report_nondeterminism`). With `rounding_repeats`, outputs that
    differ between two calls by no more than rounding (LAPACK's least squares
    does) are accepted with a note: the adapter evaluates each point once.
    """
    first = problem.flat(problem.forward(problem.bases))
    second = problem.flat(problem.forward(problem.bases))
    if not _same(first, second):
        differs = _largest_difference([first], [second], ["output"])
        scale = float(torch.nan_to_num(first.abs(), posinf=0.0).max()) if first.numel() else 0.0
        if (
            rounding_repeats
            and differs is not None
            and differs[0] <= _REPEAT_ULPS * _eps(problem) * max(scale, 1.0)
        ):
            problem.notes.append(
                f"`fn` does not repeat itself bit for bit (two calls at the same inputs differ "
                f"by {differs[0]:.3g} at {differs[1]}, at the level of rounding): each point "
                "was evaluated once and its value reused."
            )
            return _check_backward_structure(problem, cotangent, report_nondeterminism)
        raise NondeterministicLossError(
            f"`fn` returned different outputs at the same inputs (largest difference "
            f"{differs[0] if differs else float('nan'):.3g} at entry "
            f"{differs[1] if differs else '?'} of its flattened outputs), so finite "
            "differences would measure its randomness, not its slope. Typical causes are "
            "dropout, random sampling and nondeterministic GPU kernels. "
            + (
                f"It does so even with `seed={problem.seed}`: its randomness does not come "
                "from torch's, numpy's or Python's global generators."
                if problem.seed is not None
                else "Pass `seed=` so that every call re-seeds torch's generators, or "
                "disable the randomness (`torch.use_deterministic_algorithms(True)`)."
            )
        )
    _check_backward_structure(problem, cotangent, report_nondeterminism)


def _check_backward_structure(
    problem: _Problem, cotangent: torch.Tensor, report_nondeterminism: bool
) -> None:
    """Shapes, dtypes and devices, grad_output left alone, determinism, linearity at zero."""
    leaves = problem.leaves()
    outputs = problem.forward(leaves)
    pieces = problem.split(cotangent)
    given = [p.clone() for p in pieces]
    grads = problem.vjp(outputs, leaves, given, retain_graph=True)
    _require_shapes(problem, grads)
    changed = _largest_difference(given, pieces, problem.outputs.names)
    if changed is not None:
        problem.notes.append(
            f"The backward modified its `grad_output` in place ({changed[1]} changed by "
            f"{changed[0]:.3g}). Autograd hands the same gradient tensor to every branch "
            "that uses the output, so other branches then get a wrong gradient. Compute "
            "into a new tensor: `grad_output * d` instead of `grad_output.mul_(d)`."
        )
    again = problem.vjp(outputs, leaves, [p.clone() for p in pieces], retain_graph=True)
    differs = _largest_difference(grads, again, problem.names)
    problem.nondeterminism = differs
    if differs is not None and report_nondeterminism:
        problem.notes.append(
            f"The backward is not deterministic: two backward passes through the same "
            f"graph with the same cotangent differ by up to {differs[0]:.3g} (at "
            f"{differs[1]}); gradcheck calls this 'not reentrant'. The finite differences "
            "judged one of them. If it comes from atomic additions on a GPU, "
            "`torch.use_deterministic_algorithms(True)` removes it; otherwise look for "
            "state the backward changes (saved tensors modified in place)."
        )
    zero = problem.vjp(outputs, leaves, [torch.zeros_like(p) for p in pieces])
    nonzero = _largest(zero, problem.names)
    if nonzero is not None:
        problem.notes.append(
            f"With a zero cotangent the backward returned nonzero gradients "
            f"(|{nonzero[1]}| = {nonzero[0]:.3g}). A backward is linear in `grad_output`: "
            "look for a term it adds without multiplying by `grad_output`."
        )


def _require_shapes(problem: _Problem, grads: Sequence[torch.Tensor]) -> None:
    for name, grad, base in zip(problem.names, grads, problem.bases, strict=True):
        wrong = [
            f"{what} {got}, expected {want}"
            for what, got, want in (
                ("shape", tuple(grad.shape), tuple(base.shape)),
                ("dtype", grad.dtype, base.dtype),
                ("device", grad.device, base.device),
            )
            if got != want
        ]
        if wrong:
            raise InputError(
                f"The backward returned a gradient for `{name}` with {'; '.join(wrong)}. "
                "A gradient has its input's shape, dtype and device: return one "
                f"gradient per input of `fn`, built like `torch.zeros_like({name})`."
            )


def _check_module_structure(problem: _ModuleProblem) -> None:
    """Repeatable, connected to the parameters, right shapes, deterministic, zero at zero."""
    with torch.no_grad():
        first_value, second_value = (float(problem.evaluate(problem.checked)) for _ in range(2))
    if first_value != second_value and not (math.isnan(first_value) and math.isnan(second_value)):
        raise NondeterministicLossError(
            f"The loss returned different values at the same parameters ({first_value!r} vs "
            f"{second_value!r}), so finite differences would measure its randomness, not its "
            "slope. "
            + (
                f"It does so even with `seed={problem.seed}`: its randomness does not come from "
                "torch's, numpy's or Python's global generators."
                if problem.seed is not None
                else "A module in training mode with dropout draws a new mask at every call: "
                "pass `seed=` so that every evaluation re-seeds torch's generators, or call "
                "`module.eval()`."
            )
        )
    leaves = {n: t.detach().clone().requires_grad_(True) for n, t in problem.checked.items()}
    if not problem.evaluate(leaves).requires_grad:
        raise InputError(
            "`loss_fn` returned a loss that does not depend on the module's parameters "
            "through autograd (no grad_fn); compute it from the module's output without "
            "`.detach()`, `.item()` or `torch.no_grad()`."
        )
    names = list(problem.checked)
    first, second = problem.grads(1.0), problem.grads(1.0)
    for name, grad in zip(names, first, strict=True):
        base = problem.checked[name]
        if grad.shape != base.shape or grad.dtype != base.dtype or grad.device != base.device:
            raise InputError(
                f"The backward returned a gradient for `{name}` of shape "
                f"{tuple(grad.shape)}, {grad.dtype} on {grad.device}; expected "
                f"{tuple(base.shape)}, {base.dtype} on {base.device}, like the parameter."
            )
    differs = _largest_difference(first, second, names)
    if differs is not None:
        problem.notes.append(
            f"The backward is not deterministic: two backward passes at the same "
            f"parameters differ by up to {differs[0]:.3g} (at {differs[1]}). The finite "
            "differences judged one of them. If it comes from atomic additions on a GPU, "
            "`torch.use_deterministic_algorithms(True)` removes it."
        )
    nonzero = _largest(problem.grads(0.0), names)
    if nonzero is not None:
        problem.notes.append(
            f"With a zero upstream gradient the backward returned nonzero gradients "
            f"(|{nonzero[1]}| = {nonzero[0]:.3g}). A backward is linear in `grad_output`: "
            "look for a term a custom layer adds without multiplying by `grad_output`."
        )
