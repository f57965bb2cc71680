"""``gradcheck`` and ``gradgradcheck``: torch's signatures, gradproof's verdicts.

Note [A drop-in gradcheck]
    A test suite that calls ``torch.autograd.gradcheck`` must keep working
    when one import line changes, so the contract is torch's: ``True`` when
    the gradients are right; when they are wrong, an exception that *is* a
    ``torch.autograd.gradcheck.GradcheckError`` (so ``except`` clauses and
    ``pytest.raises`` keep matching), or ``False`` with
    ``raise_exception=False``. What happens in between is gradproof's: every
    entry is judged against its own finite-difference error bar (no false
    alarm at a kink or in float32), the report names each wrong input by the
    function's own argument names and each wrong Jacobian entry, and the
    message carries the whole report after a one-line summary.

    Entries gradproof cannot judge (a kink where the backward's value lies
    between the one-sided slopes, a point with no derivative) do not fail the
    check by default: gradcheck's central difference passes many of them by
    luck, and a suite that passed must not break on the swap. They are listed
    in a warning; ``strict=True`` makes them failures.
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch.autograd.gradcheck import GradcheckError as _TorchGradcheckError

from gradproof._words import counted
from gradproof.checking.options import CheckOptions
from gradproof.errors import GradproofWarning, InputError, UserCodeError
from gradproof.results import CheckResult, Verdict
from gradproof.torch._conformance import (
    _batched_grad_failure,
    _nondeterminism_failure,
    _undefined_grad_failure,
)
from gradproof.torch._convert import _random_like
from gradproof.torch._function import _Forward, _Reverse, _SecondOrder
from gradproof.torch._options import _check_options
from gradproof.torch._prepare import _argument_names, _prepare, _Prepared
from gradproof.torch._problem import _NothingToCheckError, _Problem
from gradproof.torch._run import _run_problem, _with_subjects
from gradproof.torch._structure import _check_function_structure
from gradproof.torch._terms import _Combined, _Family

TORCH_EPS = 1e-6
"""torch's default ``eps``: when given, gradproof chooses its own step."""
TORCH_ATOL = 1e-5
"""torch's default ``atol``: when given, gradproof's own tolerance applies."""
TORCH_RTOL = 1e-3
"""torch's default ``rtol``: when given, gradproof's own tolerance applies."""
ATOL_FLOOR = 1e-12
"""The absolute tolerance under torch's default atol and rtol.

See Note [gradcheck's eps, atol and rtol].
"""
JACOBIAN_ROWS = 16
"""Up to this many output entries, slow mode checks the Jacobian row by row."""
VMAP_ENTRIES = 64
"""From this many input entries on, the finite differences are tried through vmap.

Below it a batched call saves less than the trial of vmap costs.
"""


class GradcheckError(_TorchGradcheckError):
    """A gradient check found a wrong gradient (a ``torch.autograd.gradcheck.GradcheckError``).

    Attributes
    ----------
    result : CheckResult or None
        gradproof's full result, when the finite differences ran; ``None``
        when a check before them failed (undefined gradients, reentrancy,
        batched gradients, a malformed gradient).
    """

    def __init__(self, message: str, *, result: CheckResult | None = None) -> None:
        super().__init__(message)
        self.result = result


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class _Flags:
    """torch's flags, and what gradproof makes of them, as one object."""

    eps: float
    atol: float
    rtol: float
    raise_exception: bool
    nondet_tol: float
    check_undefined_grad: bool
    check_batched_grad: bool
    check_batched_forward_grad: bool
    forward: bool
    backward: bool
    fast_mode: bool
    masked: bool
    strict: bool
    function: str

    def options(self) -> dict[str, float]:
        """Return the explicit step and tolerances as :func:`gradproof.check` options.

        Note [gradcheck's eps, atol and rtol]
            torch's defaults (eps=1e-6, atol=1e-5, rtol=1e-3) are ignored:
            gradproof picks a step by dtype and judges each entry against
            ``rtol·|numeric| + atol + e``, with ``e`` the finite difference's
            own error bar (rtol 1e-5 in float64) and ``atol`` =
            :data:`ATOL_FLOOR`. Values other than the defaults are the
            caller's: `eps` becomes the absolute step, and `atol`/`rtol`
            replace gradproof's (the error bar is still added).

            The floor is for outputs that are exactly constant near the point
            (a layer norm over one element is 0 for every input): their finite
            difference is exactly 0 with no error bar, while the backward
            computes ``(x - mean(x)) * rstd``, whose rounding leaves 1e-13.
            gradproof's error bar measures the finite difference, not the
            backward's rounding; the floor, 10⁷ times below torch's atol, stands
            in for it.
        """
        options: dict[str, float] = {}
        if self.eps != TORCH_EPS:
            options["eps"] = self.eps
        if (self.atol, self.rtol) != (TORCH_ATOL, TORCH_RTOL):
            options["atol"] = self.atol
            options["rtol"] = self.rtol
        else:
            options["atol"] = ATOL_FLOOR
        return options


def _as_tuple(inputs: Any) -> tuple[Any, ...]:
    if isinstance(inputs, tuple):
        return inputs
    if isinstance(inputs, list):
        return tuple(inputs)
    return (inputs,)


def _run_gradcheck(
    func: Callable[..., Any],
    inputs: Any,
    flags: _Flags,
    *,
    second_order: bool = False,
    grad_outputs: Sequence[torch.Tensor] | None = None,
    non_contiguous: bool = False,
) -> bool:
    """Run the shared body of :func:`gradcheck` and :func:`gradgradcheck`."""
    started = time.perf_counter()
    if not callable(func):
        raise InputError(
            f"`func` must be a function of tensors; got a {type(func).__name__}. Pass e.g. "
            "`MyFunction.apply` or `lambda x, w: my_layer(x, w)`."
        )
    tupled = _as_tuple(inputs)
    names = _argument_names(func, len(tupled))
    prepared = _prepare(func, tupled, names, flags.masked)
    checked = _check_options(flags.options(), flags.function)
    try:
        problem = _Problem.build(
            prepared.fn,
            tuple(prepared.inputs),
            precision="auto",
            seed=None,
            names=names,
            stem="out",
        )
    except _NothingToCheckError:
        return True  # every differentiable input or output is empty: nothing can be wrong
    try:
        return _judge(
            problem,
            flags,
            prepared,
            checked,
            started,
            second_order=second_order,
            grad_outputs=grad_outputs,
            non_contiguous=non_contiguous,
        )
    except UserCodeError as error:
        if error.function != "grad":
            raise  # the function itself raised: as torch, let it through (as its cause)
        # A backward that raises is a wrong backward: gradcheck's callers expect a failure.
        if flags.raise_exception:
            raise GradcheckError(str(error)) from error.__cause__
        return False


def _judge(
    problem: _Problem,
    flags: _Flags,
    prepared: _Prepared,
    checked: CheckOptions,
    started: float,
    *,
    second_order: bool,
    grad_outputs: Sequence[torch.Tensor] | None,
    non_contiguous: bool,
) -> bool:
    """Run the checks without finite differences, then the finite differences, and judge."""
    rng = np.random.default_rng(0)
    try:
        _check_function_structure(
            problem,
            _random_like(rng, (problem.outputs.size,), problem.device),
            report_nondeterminism=False,
            rounding_repeats=True,
        )
    except InputError as error:  # a malformed gradient, a function that does not repeat
        return _fail(flags, str(error), None)
    failure = None
    if flags.backward or second_order:
        failure = _nondeterminism_failure(problem, flags.nondet_tol)
        if failure is None and flags.check_undefined_grad:
            failure = _undefined_grad_failure(problem)
        if failure is None and flags.check_batched_grad and not second_order:
            failure = _batched_grad_failure(problem, rng)
    if failure is not None:
        return _fail(flags, failure, None)
    families = _families(
        problem,
        flags,
        rng,
        second_order=second_order,
        grad_outputs=grad_outputs,
        non_contiguous=non_contiguous,
    )
    combined = _Combined(families)
    notes = [*prepared.notes, *(f.description for f in families), *problem.notes]
    vmap = None if sum(b.numel() for b in problem.bases) >= VMAP_ENTRIES else False
    # gradproof.check measures the function's noise only where a verdict depends on it,
    # so a check of a function whose entries all agree costs two calls per entry.
    result = _run_problem(combined, vmap=vmap, seed=None, options=checked, notes=notes)
    notes += prepared.output_notes()
    several = len(problem.outputs.names) > 1
    result = _with_subjects(
        result, combined.subjects, "(output, input) pair" if several else "input"
    )
    result = dataclasses.replace(
        result, notes=(*result.notes, *notes), seconds=time.perf_counter() - started
    )
    return _verdict(flags, result)


def _families(
    problem: _Problem,
    flags: _Flags,
    rng: np.random.Generator,
    *,
    second_order: bool,
    grad_outputs: Sequence[torch.Tensor] | None,
    non_contiguous: bool,
) -> list[_Family]:
    """Choose what is checked: the Jacobian (rows or cotangents), forward mode, second order."""
    if second_order:
        cotangent = None if grad_outputs is None else _cotangents(problem, grad_outputs)
        return [
            _SecondOrder.build(problem, rng=rng, cotangent=cotangent, non_contiguous=non_contiguous)
        ]
    full = not flags.fast_mode and problem.outputs.size <= JACOBIAN_ROWS
    families: list[_Family] = []
    if flags.backward:
        families.append(
            _Reverse.build(
                problem, full=full, n_cotangents=1, rng=rng, per_output=True, spaced=True
            )
        )
    if flags.forward:
        families.append(_Forward.build(problem, full=full, rng=rng, per_input=True, spaced=True))
    return families


def _cotangents(problem: _Problem, grad_outputs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Match the caller's `grad_outputs` to the checked outputs (empty ones dropped)."""
    given = (
        [g for g in grad_outputs if g.numel() > 0]
        if len(grad_outputs) != len(problem.outputs.names)
        else list(grad_outputs)
    )
    shapes = [tuple(g.shape) for g in given]
    if shapes != [tuple(s) for s in problem.outputs.shapes]:
        raise InputError(
            f"`grad_outputs` has shapes {shapes}; expected one tensor per differentiable "
            f"output of `func`, of shapes {list(problem.outputs.shapes)}. Pass "
            "`grad_outputs=None` to draw random ones."
        )
    return [
        (torch.view_as_real(g) if g.is_complex() else g).detach().to(dtype)
        for g, dtype in zip(given, problem.outputs.dtypes, strict=True)
    ]


def _fail(flags: _Flags, message: str, result: CheckResult | None) -> bool:
    if flags.raise_exception:
        raise GradcheckError(message, result=result)
    return False


def _verdict(flags: _Flags, result: CheckResult) -> bool:
    """Return True or False, or raise GradcheckError (Note [A drop-in gradcheck])."""
    if result.verdict is Verdict.FAIL:
        return _fail(flags, f"{_summary(result)}\n\n{result}", result)
    unjudged = [e for p in result.params for e in p.inconclusive_entries]
    count = sum(p.n_inconclusive for p in result.params)
    if count:
        listed = ", ".join(
            f"{e.name} ({e.reason.replace('_', ' ')}"
            + ("; the analytic value is a valid subgradient)" if e.subgradient else ")")
            for e in unjudged[:8]
        )
        more = f" and {count - 8} more" if count > 8 else ""
        message = (
            f"gradproof could not judge {counted(count, 'gradient entry', 'gradient entries')}: "
            f"{listed}{more}. The function has no derivative there (a kink, or a value that is "
            "not finite nearby), so no finite difference can confirm or refute the backward."
        )
        if flags.strict:
            return _fail(
                flags, f"{message} (`strict=True` makes them failures.)\n\n{result}", result
            )
        warnings.warn(
            f"{message} Checked anyway as passing; pass `strict=True` to fail on them.",
            GradproofWarning,
            stacklevel=4,
        )
    return True


def _summary(result: CheckResult) -> str:
    """Say in one line which inputs (or pairs) have wrong gradients, and the worst entry."""
    failing = [p for p in result.params if p.verdict is Verdict.FAIL]
    worst = max(failing, key=lambda p: p.error_ratio)
    entry = worst.worst
    where = ""
    if entry is not None:
        where = f"; worst {entry.name}: {entry.analytic:.6g} vs numeric {entry.numeric:.6g}"
    kind = f"{worst.section}: " if worst.section else ""
    wrong = ", ".join(f"`{s}`" for s in result.suspects)
    count = counted(sum(p.n_failed for p in failing), "wrong entry", "wrong entries")
    return f"gradproof: {kind}wrong gradient for {wrong}: {count}{where}."
