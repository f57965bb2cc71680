"""The result of :func:`gradproof.check_stages`: a backward pass judged line by line."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from typing import Any

from gradproof.results import CheckResult, Verdict

__all__ = ["StageReport", "StageResult"]

WIDTH = 92
"""The width the report's sentences are wrapped to."""


@dataclass(frozen=True, slots=True, kw_only=True)
class StageReport:
    """One hand-written gradient of a staged forward pass, compared.

    Attributes
    ----------
    name : str
        The gradient's key in `grads`, e.g. ``dZ2`` or ``dW2``.
    of : str
        What it is the gradient of: a stage's value (``Z2``) or a parameter
        (``W2``).
    kind : {"value", "parameter"}
        Whether `of` is an intermediate value or a parameter.
    verdict : Verdict
        The check's verdict, against the loss (times the convention's factor,
        for intermediate values).
    factor : float or None
        For a wrong gradient that is a multiple of the right one: the ``k`` of
        ``analytic = k × numeric``.
    summary : str
        What the wrong gradient looks like (the diagnosis), or ``""``.
    source : str or None
        What this gradient is computed from: for a parameter, the gradient of
        the value at the stage where the parameter enters; for a value, the
        gradient checked before it in the backward order (``"the loss"`` for
        the first); by its key in `grads`.
    check : CheckResult
        gradproof's check of this gradient.
    """

    name: str
    of: str
    kind: str
    verdict: Verdict
    factor: float | None
    summary: str
    source: str | None
    check: CheckResult

    @property
    def passed(self) -> bool:
        """Whether the gradient agrees with finite differences."""
        return self.verdict is not Verdict.FAIL

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return {
            "name": self.name,
            "of": self.of,
            "kind": self.kind,
            "verdict": self.verdict.value,
            "factor": self.factor,
            "summary": self.summary,
            "source": self.source,
            "check": self.check.to_dict(),
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class StageResult:
    """The result of :func:`gradproof.check_stages`.

    Attributes
    ----------
    stages : tuple of StageReport
        One report per gradient given: the intermediate values in backward
        order (the last stage's first), then the parameters.
    where : str
        Where the error enters, in one sentence; or that every gradient is right.
    convention : float or None
        A factor shared by every intermediate gradient, recognised as a
        convention (they are gradients of ``convention × loss``, e.g. the
        summed cost ``m·J`` of a mean over ``m`` examples) and not a bug:
        they were judged against that multiple of the loss. None when they
        are gradients of the loss itself.
    convention_note : str
        The convention, in words (``""`` without one).
    n_evals : int
        Loss evaluations in all.
    seconds : float
        Wall-clock time.
    """

    stages: tuple[StageReport, ...]
    where: str
    convention: float | None
    convention_note: str
    n_evals: int
    seconds: float

    @property
    def passed(self) -> bool:
        """Whether every gradient agrees with finite differences."""
        return all(s.passed for s in self.stages)

    @property
    def suspects(self) -> tuple[str, ...]:
        """The wrong gradients, by their keys."""
        return tuple(s.name for s in self.stages if not s.passed)

    def __getitem__(self, name: str) -> StageReport:
        """Return the report of the gradient called `name` (its key in `grads`)."""
        for report in self.stages:
            if name in (report.name, report.of):
                return report
        known = ", ".join(s.name for s in self.stages)
        raise KeyError(f"no gradient named {name!r}; the gradients are: {known}")

    def __str__(self) -> str:
        verdict = "ok" if self.passed else "WRONG"
        lines = [*textwrap.wrap(f"gradproof stages: {verdict}: {self.where}", WIDTH), ""]
        rows = [("gradient", "of", "verdict", "what it looks like", "computed from")]
        for s in self.stages:
            rows.append(
                (
                    s.name,
                    s.of,
                    "ok" if s.passed else "WRONG",
                    s.summary or "-",
                    s.source or "-",
                )
            )
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines.extend(
            "  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
            for row in rows
        )
        if self.convention_note:
            lines += ["", *textwrap.wrap(self.convention_note, WIDTH)]
        lines += ["", f"{self.n_evals} loss evaluations in {self.seconds:.2f} s."]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict: ``json.dumps(result.to_dict())`` works."""
        return {
            "passed": self.passed,
            "suspects": list(self.suspects),
            "where": self.where,
            "convention": self.convention,
            "convention_note": self.convention_note,
            "stages": [s.to_dict() for s in self.stages],
            "n_evals": self.n_evals,
            "seconds": self.seconds,
        }
