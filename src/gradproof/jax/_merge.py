"""One result from the adapter's checks: reverse and forward mode, Jacobian rows, second order."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence

from gradproof.results import CheckResult, ParamReport, Verdict

REVERSE = ""
"""The section of the first-order reverse-mode reports: the main table, no heading."""
FORWARD = "Forward mode (JVP)"
SECOND_REVERSE = "Second order: reverse over reverse (VJP of the VJP)"
SECOND_FORWARD = "Second order: forward over reverse (JVP of the VJP)"

_RANK = {Verdict.FAIL: 0, Verdict.INCONCLUSIVE: 1, Verdict.PASS: 2}


@dataclasses.dataclass(frozen=True)
class _Part:
    """One check's result and how its reports are shown.

    `prefix` is the internal first key of its reports' names (``jvp``,
    ``jacobian_row_0``), `shown` what that prefix becomes in the names
    (``jvp.``, ``d out[0] / d ``; the prefix and its dot are replaced), and the
    subject of a report is its name without the prefix: the argument's leaf.
    """

    result: CheckResult
    section: str
    prefix: str = ""
    shown: str = ""


def _worst(results: Sequence[CheckResult]) -> int:
    """Return the index of the result shown among several cotangents': the first that fails."""
    return min(range(len(results)), key=lambda i: (_RANK[results[i].verdict], i))


def _merge(parts: list[_Part], notes: list[str], started: float) -> CheckResult:
    """One result whose reports carry their subject (the leaf) and section (the mode)."""
    main = parts[0].result
    params: list[ParamReport] = []
    all_notes = list(notes)
    seen: set[str] = set()
    for part in parts:
        params += [_labelled(report, part) for report in part.result.params]
        label = part.section or "Reverse mode"
        for note in part.result.notes:
            # A note about the reports' leaves (float32 copies) is said once, of the leaves.
            plain = note.replace(f"{part.prefix}.", "") if part.prefix else note
            if plain not in seen:
                seen.add(plain)
                all_notes.append(
                    plain if part.result is main or not part.prefix else f"{label}: {plain}"
                )
    results = [part.result for part in parts]
    stops = [r.stop_reason for r in results if r.stop_reason]
    return dataclasses.replace(
        main,
        params=tuple(params),
        notes=tuple(dict.fromkeys(all_notes)),
        n_evals=sum(r.n_evals for r in results),
        n_refined=sum(r.n_refined for r in results),
        n_probes=sum(r.n_probes for r in results),
        interrupted=any(r.interrupted for r in results),
        stop_reason=stops[0] if stops else None,
        seconds=time.perf_counter() - started,
        subject_noun="argument",
    )


def _labelled(report: ParamReport, part: _Part) -> ParamReport:
    """Return the report with its subject and section set, and its internal prefix shown."""
    subject = report.name
    if part.prefix:
        subject = report.name[len(part.prefix) + 1 :]
        if part.shown != f"{part.prefix}.":
            report = _renamed(report, f"{part.prefix}.", part.shown)
    return dataclasses.replace(report, subject=subject, section=part.section)


def _renamed(report: ParamReport, old: str, new: str) -> ParamReport:
    """Replace `old` by `new` in every name and text of a report (Note [Jacobian rows])."""

    def swap(text: str) -> str:
        return text.replace(old, new)

    diagnosis = report.diagnosis
    if diagnosis is not None:
        diagnosis = dataclasses.replace(
            diagnosis,
            summary=swap(diagnosis.summary),
            hint=swap(diagnosis.hint),
            partner=None if diagnosis.partner is None else swap(diagnosis.partner),
        )
    return dataclasses.replace(
        report,
        name=swap(report.name),
        worst=None
        if report.worst is None
        else dataclasses.replace(report.worst, name=swap(report.worst.name)),
        failures=tuple(dataclasses.replace(e, name=swap(e.name)) for e in report.failures),
        inconclusive_entries=tuple(
            dataclasses.replace(e, name=swap(e.name)) for e in report.inconclusive_entries
        ),
        probes=tuple(
            dataclasses.replace(p, name=swap(p.name), param=swap(p.param)) for p in report.probes
        ),
        diagnosis=diagnosis,
    )
