"""Running gradproof.check: batching through ``torch.func.vmap``, names, the result."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import numpy as np
import torch

from gradproof.checking.check import check_with_options
from gradproof.checking.options import CheckOptions
from gradproof.errors import GradproofError, InputError, UserCodeError
from gradproof.results import CheckResult
from gradproof.torch._convert import Array, _describe_error


def _require_close(values: Array, expected: Array) -> None:
    """Refuse batched values that differ from the unbatched ones beyond rounding.

    Batched kernels may sum in another order; 1e-12 relative allows that for
    sums of up to about a million terms.
    """
    scale = np.maximum(np.abs(expected), 1.0)
    if not np.all(np.abs(values - expected) <= 1e-12 * scale):
        raise ValueError(
            f"batched values {np.asarray(values).ravel()[:4].tolist()} differ from the "
            f"unbatched ones {np.asarray(expected).ravel()[:4].tolist()}"
        )


class SlowBatch(Exception):
    """A batch works but was measured not to pay (Note [Batching must pay]); says why."""


def _use_vmap(vmap: bool | None, trials: list[Callable[[], None]], notes: list[str]) -> bool:
    """Try the batched evaluation once at the point; fall back (with a note) when it fails."""
    if vmap is False:
        return False
    failure = "" if trials else "no part of the check can be batched"
    for trial in trials:
        try:
            with torch.no_grad():
                trial()
        except SlowBatch as exc:
            notes.append(f"Not batched: {exc}; each call evaluated one point.")
            return False
        except Exception as exc:  # vmap refuses many things: fall back rather than fail
            cause = exc.__cause__ if isinstance(exc, UserCodeError) else None
            failure = _describe_error(cause or exc)
            break
    if not failure:
        notes.append("The finite differences were evaluated in batches through torch.func.vmap.")
        return True
    if vmap:
        raise InputError(
            f"`vmap=True`, but the function cannot be evaluated through torch.func.vmap "
            f"({failure}). A custom Function needs `generate_vmap_rule = True` (with "
            "`setup_context`) or a `vmap` staticmethod; random operations and in-place updates "
            "of buffers (BatchNorm in training mode) cannot be batched. Leave `vmap` unset to "
            "fall back to one point per call."
        )
    notes.append(f"Not batched: {_why_not_batched(failure)}; each call evaluated one point.")
    return False


_VMAP_REFUSALS = (
    (
        "must override the setup_context staticmethod",
        "torch.func.vmap cannot run this autograd.Function (it has no setup_context)",
    ),
    (
        "Batch norm got a batched tensor",
        "torch.func.vmap cannot run BatchNorm in training mode (it updates its running "
        "statistics in place)",
    ),
    ("random operation", "torch.func.vmap refuses the function's random operations"),
)
"""What torch's long vmap errors mean, in a few words: (text of the error, the note's reason)."""

_REASON_LENGTH = 120
"""The most characters of an unrecognised vmap error a note quotes."""


def _why_not_batched(failure: str) -> str:
    """Say briefly why torch.func.vmap could not evaluate the function.

    Examples
    --------
    >>> _why_not_batched("RuntimeError: ... it must override the setup_context staticmethod")
    'torch.func.vmap cannot run this autograd.Function (it has no setup_context)'
    >>> _why_not_batched("ValueError: odd")
    'torch.func.vmap could not evaluate the function (ValueError: odd)'
    """
    for text, reason in _VMAP_REFUSALS:
        if text in failure:
            return reason
    if len(failure) > _REASON_LENGTH:
        failure = failure[: _REASON_LENGTH - 1].rstrip() + "…"
    return f"torch.func.vmap could not evaluate the function ({failure})"


def _drop_batch_size(
    options: CheckOptions, loss_batch: object | None, notes: list[str]
) -> CheckOptions:
    if loss_batch is None and options.batch_size is not None:
        notes.append("`batch_size` was ignored: the evaluation is not batched.")
        return options.replace(batch_size=None)
    return options


class _Checkable(Protocol):
    """A numpy loss of aliased parameters: a function's combined terms, or a module's loss."""

    @property
    def names(self) -> Mapping[str, str]:
        """Map every parameter alias to the name shown in the report."""
        ...

    def params(self) -> dict[str, Array]:
        """Return the parameters at the point, under their aliases."""
        ...

    def loss(self, params: Mapping[str, Array]) -> float:
        """Return the loss at `params`."""
        ...

    def loss_batch(self, stacked: Mapping[str, Array]) -> Array:
        """Return the loss at every stacked point."""
        ...

    def gradient(self, params: Mapping[str, Array]) -> dict[str, Array]:
        """Return the analytic gradient at the point, from autograd."""
        ...

    def trials(self) -> list[Callable[[], None]]:
        """Return trials of the batched evaluation, one per part that batches."""
        ...


def _run_problem(
    problem: _Checkable,
    *,
    vmap: bool | None,
    seed: int | None,
    options: CheckOptions,
    notes: list[str],
) -> CheckResult:
    """Batch the evaluation where ``torch.func.vmap`` can (noted), then run the check."""
    loss_batch = problem.loss_batch if _use_vmap(vmap, problem.trials(), notes) else None
    options = _drop_batch_size(options, loss_batch, notes)
    return _run_check(
        problem.loss,
        problem.gradient,
        problem.params(),
        problem.names,
        loss_batch=loss_batch,
        seed=seed,
        options=options,
    )


def _run_check(
    loss: Callable[[Mapping[str, Array]], float],
    gradient: Callable[[Mapping[str, Array]], dict[str, Array]],
    params: dict[str, Array],
    names: Mapping[str, str],
    *,
    loss_batch: Callable[[Mapping[str, Array]], Array] | None,
    seed: int | None,
    options: CheckOptions,
) -> CheckResult:
    """Run gradproof.check on the aliases; report (and fail) under the displayed names."""
    rename = _renamer(names)
    try:
        result = check_with_options(
            loss,
            gradient,
            params,
            # The adapter chose the precision already.
            options.replace(seed=seed, precision="native", dialect="torch"),
            loss_batch=loss_batch,
        )
    except GradproofError as error:
        if error.args and isinstance(error.args[0], str):
            error.args = (rename(error.args[0]), *error.args[1:])
        raise
    renamed: CheckResult = _rename(result, rename)
    return renamed


def _renamer(names: Mapping[str, str]) -> Callable[[str], str]:
    pattern = re.compile(r"\b(" + "|".join(re.escape(a) for a in names) + r")\b")
    return lambda text: pattern.sub(lambda m: names[m.group(1)], text)


def _rename(value: Any, rename: Callable[[str], str]) -> Any:
    """Replace the aliases in every string of a result (Enums, e.g. verdicts, are kept)."""
    if type(value) is str:
        return rename(value)
    if isinstance(value, tuple) and not hasattr(value, "_fields"):
        return tuple(_rename(v, rename) for v in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        changes = {
            field.name: _rename(getattr(value, field.name), rename)
            for field in dataclasses.fields(value)
            if isinstance(getattr(value, field.name), (str, tuple))
            or dataclasses.is_dataclass(getattr(value, field.name))
        }
        return dataclasses.replace(value, **changes)
    return value


def _with_subjects(
    result: CheckResult, subjects: Mapping[str, tuple[str, str]], noun: str
) -> CheckResult:
    """Say what each report is about and under which heading it goes.

    `subjects` maps a report's name to its subject (the input, or the
    (output, input) pair, it is about) and its section (``""`` for the main,
    reverse-mode check); the headline then counts `noun`s, not reports.
    """
    params = tuple(
        dataclasses.replace(p, subject=subjects[p.name][0], section=subjects[p.name][1])
        if p.name in subjects
        else p
        for p in result.params
    )
    return dataclasses.replace(result, params=params, subject_noun=noun)
