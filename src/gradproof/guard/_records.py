"""What a guard keeps and says: its records, its error, and the one-line summaries."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from gradproof._words import counted, noun
from gradproof.errors import GradientMismatchError
from gradproof.report.text import render_result
from gradproof.results import CheckResult, Verdict
from gradproof.testing import _explanation, _headline

__all__ = ["GuardError", "GuardRecord"]

_LISTED_STEPS = 8
"""Summaries list at most this many steps, then elide the middle."""


class GuardError(GradientMismatchError):
    """A gradient guard found a wrong gradient during training.

    It is a :class:`~gradproof.errors.GradientMismatchError`, so an
    ``AssertionError``: a training run inside a test fails the test.

    Parameters
    ----------
    message : str
        A first line naming the step and the wrong parameters, then the full
        report of the check.
    result : CheckResult
        The failed check.
    step : int
        The training step the check ran at.

    Attributes
    ----------
    result : CheckResult
        The failed check (``err.result.suspects`` names the wrong parameters).
    step : int
        The training step the check ran at.
    """

    def __init__(self, message: str, *, result: CheckResult, step: int) -> None:
        super().__init__(message, result=result)
        self.step = step

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickle rebuilds cls(*args), which lacks the keyword-only arguments.
        return (functools.partial(type(self), result=self.result, step=self.step), self.args)


@dataclass(frozen=True, slots=True, kw_only=True)
class GuardRecord:
    """One check a guard ran: when, what it found, what it cost.

    Attributes
    ----------
    step : int
        The training step the check ran at.
    verdict : Verdict
        The check's verdict.
    seconds : float
        Wall-clock time of the check, as the training loop felt it.
    n_evals : int
        Loss evaluations the check spent.
    result : CheckResult
        The full result; ``str(record.result)`` is the report.
    failed : bool
        Whether the guard counted it as a failure: a wrong gradient, or an
        inconclusive check when the guard has ``allow_inconclusive=False``.

    Examples
    --------
    >>> import numpy as np
    >>> from gradproof.guard import GradientGuard
    >>> guard = GradientGuard(lambda p: np.sum(p**2), lambda p: 2 * p, every=10)
    >>> _ = guard(0, np.array([1.0, -2.0]))
    >>> print(guard.history[0])  # doctest: +ELLIPSIS
    step 0: passed (... loss evaluations, ... s)
    """

    step: int
    verdict: Verdict
    seconds: float
    n_evals: int
    result: CheckResult
    failed: bool

    @property
    def suspects(self) -> tuple[str, ...]:
        """Names of the parameters whose gradients were wrong."""
        return self.result.suspects

    def __str__(self) -> str:
        cost = f"({counted(self.n_evals, 'loss evaluation')}, {_seconds(self.seconds)} s)"
        if self.verdict is Verdict.PASS:
            return f"step {self.step}: passed {cost}"
        if self.verdict is Verdict.FAIL:
            wrong = ", ".join(self.suspects)
            return (
                f"step {self.step}: FAILED, wrong {noun(len(self.suspects), 'gradient')}: "
                f"{wrong} {cost}"
            )
        judged = (
            "counted as a failure (allow_inconclusive=False)"
            if self.failed
            else "not counted as a failure"
        )
        unjudged = ", ".join(self.result.inconclusive) or "interrupted"
        return f"step {self.step}: inconclusive, {judged}: {unjudged} {cost}"

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict, with the full result under ``"result"``."""
        return {
            "step": self.step,
            "verdict": self.verdict.value,
            "failed": self.failed,
            "seconds": self.seconds,
            "n_evals": self.n_evals,
            "suspects": list(self.suspects),
            "inconclusive": list(self.result.inconclusive),
            "result": self.result.to_dict(),
        }


def _failure_message(result: CheckResult, step: int) -> str:
    """Return a GuardError's text: one line with the step and the verdict, then the report.

    The report is the one ``str(result)`` prints, listing the same few worst entries per
    parameter as :func:`gradproof.check`'s text report; ``error.result`` holds them all.
    """
    verb = "failed" if result.verdict is Verdict.FAIL else "counted as failed"
    first = f"gradient check {verb} at step {step}: {_headline(result)}{_explanation(result)}"
    return first + "\n\n" + render_result(result)


def _seconds(value: float) -> str:
    return f"{value:.0f}" if value >= 10 else f"{value:.2g}"


def _percent(fraction: float) -> str:
    value = 100 * fraction
    return f"{value:.0f}%" if value >= 10 else f"{value:.2g}%"


def _list_steps(steps: list[int]) -> str:
    if len(steps) <= _LISTED_STEPS:
        return ", ".join(map(str, steps))
    return ", ".join([*map(str, steps[:3]), "...", *map(str, steps[-2:])])


def _outcomes(records: list[GuardRecord]) -> str:
    """Say how the checks went: all passed, or how many passed, were inconclusive, failed."""
    passed = [r for r in records if r.verdict is Verdict.PASS]
    if len(passed) == len(records):
        return "all passed"
    parts = [f"{len(passed)} passed"] if passed else []
    doubtful = [r for r in records if r.verdict is Verdict.INCONCLUSIVE]
    as_failed = [r for r in doubtful if r.failed]
    if len(as_failed) < len(doubtful):
        n = len(doubtful) - len(as_failed)
        steps = _list_steps([r.step for r in doubtful if not r.failed])
        parts.append(f"{n} inconclusive at {noun(n, 'step')} {steps} (not a failure)")
    if as_failed:
        steps = _list_steps([r.step for r in as_failed])
        parts.append(
            f"{len(as_failed)} inconclusive at {noun(len(as_failed), 'step')} {steps} "
            "(counted as failed)"
        )
    wrong = [r for r in records if r.verdict is Verdict.FAIL]
    if wrong:
        suspects = list(dict.fromkeys(name for r in wrong for name in r.suspects))
        steps = _list_steps([r.step for r in wrong])
        parts.append(
            f"{len(wrong)} failed at {noun(len(wrong), 'step')} {steps} "
            f"(wrong {noun(len(suspects), 'gradient')}: {', '.join(suspects)})"
        )
    return ", ".join(parts)
