"""Plain-text report of a check: the table a person reads first.

The same renderer serves ``str(result)``, the command line and (later) the
messages of assertion helpers, so they cannot drift apart.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from gradproof._words import counted, noun
from gradproof.results import (
    CheckResult,
    EntryReport,
    InconclusiveEntry,
    ParamReport,
    ProbeReport,
    Verdict,
    register_renderer,
)

__all__ = ["refined_phrase", "render_result", "render_table", "wrong_count"]

ENTRIES_SHOWN = 3
"""Wrong entries listed per parameter unless ``verbose``."""

_REASON_TEXT = {
    "kink": "kink: no step avoids it; the analytic value is a valid subgradient",
    "no_safe_step": "no safe step: noise or a kink closer than any usable step",
    "non_finite": "the loss is not finite at a neighbouring point",
    "discontinuous": "discontinuous: the loss jumps here, no derivative exists",
    "several_kinks": "several kinks meet here; the analytic value is a limit of the gradient "
    "from nearby smooth points",
}

_VERDICT_LABEL = {Verdict.PASS: "ok", Verdict.FAIL: "WRONG", Verdict.INCONCLUSIVE: "inconclusive"}


def render_table(headers: Sequence[str], rows: Sequence[Sequence[str]], indent: str = "  ") -> str:
    """Lay out rows of strings in left-aligned columns under their headers.

    Examples
    --------
    >>> print(render_table(["a", "bb"], [["1", "2"], ["333", "4"]]))
      a    bb
      1    2
      333  4
    """
    widths = [max(len(str(c)) for c in column) for column in zip(headers, *rows, strict=True)]
    lines = [
        indent + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in (headers, *rows)
    ]
    return "\n".join(lines)


def _num(value: float, digits: int = 3) -> str:
    return f"{value:.{digits}g}" if value == value else "nan"


def _shape(shape: tuple[int, ...]) -> str:
    return (
        "()" if not shape else "(" + ", ".join(map(str, shape)) + (",)" if len(shape) == 1 else ")")
    )


def _headline(result: CheckResult) -> str:
    subjects, what = result.subjects, result.subject_noun
    if result.verdict is Verdict.FAIL:
        wrong = [_failing_in(result, subject) for subject in result.suspects]
        if len(subjects) == 1:
            return f"gradproof: WRONG: {wrong[0]} has a wrong gradient"
        return (
            f"gradproof: WRONG: {len(wrong)} of {counted(len(subjects), what)} "
            f"{'has a wrong gradient' if len(wrong) == 1 else 'have wrong gradients'}: "
            f"{', '.join(wrong)}"
        )
    if result.verdict is Verdict.INCONCLUSIVE:
        if result.interrupted and result.mode == "directional":
            return (
                f"gradproof: INCONCLUSIVE: interrupted after "
                f"{counted(result.n_probes, 'directional probe')} and "
                f"{counted(result.n_checked, 'single entry', 'single entries')}; nothing wrong "
                "among those measured"
            )
        if result.interrupted:
            return (
                f"gradproof: INCONCLUSIVE: interrupted after {result.n_checked} of "
                f"{counted(result.n_entries, 'entry')}; nothing wrong among those measured"
            )
        return (
            f"gradproof: INCONCLUSIVE: nothing wrong, but some entries could not be judged: "
            f"{', '.join(result.inconclusive)}"
        )
    entries = counted(result.n_entries, "entry")
    if len(subjects) == 1:
        return f"gradproof: CORRECT: {subjects[0]} ({entries}) passes"
    return f"gradproof: CORRECT: all {counted(len(subjects), what)} ({entries}) pass"


def _failing_in(result: CheckResult, subject: str) -> str:
    """Name a wrong subject, with the sections it fails in when the result has several.

    An input whose reverse-mode gradient is right and whose forward mode is
    wrong reads ``x (forward mode)``: the headline counts the input once and
    says where it is wrong.
    """
    if len(result.sections) < 2:
        return subject
    failing = [
        p.section
        for p in result.params
        if p.subject_name == subject and p.verdict is Verdict.FAIL and p.section
    ]
    return f"{subject} ({' and '.join(dict.fromkeys(failing))})" if failing else subject


def _sectioned(result: CheckResult) -> list[tuple[str, list[ParamReport]]]:
    """Group the reports by `section` in order of first use, each heading capitalised.

    A plain check has one group with an empty heading.
    """
    groups: dict[str, list[ParamReport]] = {}
    for report in result.params:
        groups.setdefault(report.section, []).append(report)
    return [(heading[:1].upper() + heading[1:], reports) for heading, reports in groups.items()]


def _label(result: CheckResult, report: ParamReport) -> str:
    """Name a report, with its section when the result has several (``x (forward mode)``)."""
    if report.section and len(result.sections) > 1:
        return f"{report.name} ({report.section})"
    return report.name


@dataclass(frozen=True, slots=True)
class _Wrong:
    """One block of the Diagnosis section: a wrong report, or several with one diagnosis."""

    label: str
    summary: str
    count: str
    hint: str | None
    failures: tuple[EntryReport, ...]
    n_failed: int


def _wrong_blocks(result: CheckResult) -> list[_Wrong]:
    """Block the Diagnosis section: one block per wrong report or group of alike reports.

    Note [One diagnosis per input]
        The adapters check one input through several reports (a Jacobian row
        each): an elementwise backward that doubles its gradient makes every
        row wrong the same way. Wrong reports with the same subject, section
        and diagnosis are shown as one block, named by the subject with the
        first and last report, whose entries are the worst of them all, so
        the same sentence is not printed once per row.
    """
    groups: dict[tuple[str, str, str, str], list[ParamReport]] = {}
    for report in result.params:
        if report.verdict is not Verdict.FAIL:
            continue
        d = report.diagnosis
        key = (
            (report.subject_name, report.section, d.kind if d else "", d.summary if d else "")
            if report.subject and report.subject != report.name
            else (report.name, report.section, "", str(id(report)))
        )
        groups.setdefault(key, []).append(report)
    blocks = []
    for reports in groups.values():
        first, d = reports[0], reports[0].diagnosis
        if len(reports) == 1:
            blocks.append(
                _Wrong(
                    _label(result, first),
                    d.summary if d else "wrong",
                    wrong_count(first),
                    d.hint if d else None,
                    first.failures,
                    first.n_failed,
                )
            )
            continue
        subject = first.subject_name
        section = f", {first.section}" if first.section and len(result.sections) > 1 else ""
        failures = sorted(
            (e for r in reports for e in r.failures),
            key=lambda e: e.error / e.tolerance if e.tolerance > 0 else float("inf"),
            reverse=True,
        )
        n_failed = sum(r.n_failed for r in reports)
        blocks.append(
            _Wrong(
                f"{subject} ({len(reports)} reports{section}: {first.name} … {reports[-1].name})",
                d.summary if d else "wrong",
                f"{counted(n_failed, 'wrong entry', 'wrong entries')} in all",
                d.hint.replace(f"`{first.name}`", f"`{subject}`") if d else None,
                tuple(failures),
                n_failed,
            )
        )
    return blocks


def _param_headers(result: CheckResult) -> tuple[str, ...]:
    """Return the report table's headers: the first column is named for what was checked."""
    return (result.subject_noun, *_PARAM_HEADERS[1:])


def _probe_figures(report: ParamReport) -> tuple[float, float]:
    """Relative difference and err/tol of a tensor's worst top-level probe."""
    worst = max(report.probes, key=lambda p: _probe_ratio(p))
    total = abs(worst.analytic) + abs(worst.numeric)
    relative = abs(worst.analytic - worst.numeric) / total if total else 0.0
    return relative, _probe_ratio(worst)


def _probe_ratio(probe: ProbeReport) -> float:
    error = abs(probe.analytic - probe.numeric)
    if error == 0:
        return 0.0
    return error / probe.tolerance if probe.tolerance > 0 else float("inf")


def _param_row(report: ParamReport) -> list[str]:
    worst = report.worst
    relative, ratio = report.relative_difference, report.error_ratio
    if report.probes:  # directional: the probes judged the whole tensor, entries only a few
        relative, probe_ratio = _probe_figures(report)
        ratio = max(ratio, probe_ratio)
        worst = report.failures[0] if report.failures else None
    return [
        report.name,
        _shape(report.shape),
        _VERDICT_LABEL[report.verdict],
        _num(relative, 2),
        _num(ratio, 2),
        worst.name if worst else "-",
        _num(worst.analytic, 6) if worst else "-",
        _num(worst.numeric, 6) if worst else "-",
    ]


_CODE_SPAN = re.compile(r"`([^`]+)`")


def _split_code(text: str) -> list[str]:
    """Split a sentence into prose and `code` parts, alternating, prose first.

    Diagnoses, hints and notes quote code between backticks; the plain text
    keeps them, the terminal and HTML reports show those parts as code.
    Unmatched backticks stay in the prose.
    """
    parts, last = [], 0
    for match in _CODE_SPAN.finditer(text):
        parts += [text[last : match.start()], match.group(1)]
        last = match.end()
    return [*parts, text[last:]]


# The tables every renderer (text, rich, HTML) shows: one set of columns and cells for all.
_PARAM_HEADERS = (
    "parameter",
    "shape",
    "verdict",
    "rel. diff",
    "err/tol",
    "worst entry",
    "analytic",
    "numeric",
)
_ENTRY_HEADERS = ("entry", "analytic", "numeric", "|error|", "tolerance")
_INCONCLUSIVE_HEADERS = ("entry", "analytic", "left", "right", "why")
_PROBE_HEADERS = ("probe", "analytic", "numeric", "|error|", "tolerance", "verdict")


def _entry_rows(entries: Sequence[EntryReport]) -> list[list[str]]:
    return [
        [e.name, _num(e.analytic, 6), _num(e.numeric, 6), _num(e.error, 2), _num(e.tolerance, 2)]
        for e in entries
    ]


def _inconclusive_rows(entries: Sequence[InconclusiveEntry]) -> list[list[str]]:
    return [
        [
            e.name,
            _num(e.analytic, 6),
            _num(e.left, 6),
            _num(e.right, 6),
            _REASON_TEXT.get(e.reason, e.reason),
        ]
        for e in entries
    ]


def _probe_cells(probe: ProbeReport) -> list[str]:
    """Return a probe's row without its verdict cell, which each renderer draws its own way."""
    return [
        probe.name,
        _num(probe.analytic, 6),
        _num(probe.numeric, 6),
        _num(abs(probe.analytic - probe.numeric), 2),
        _num(probe.tolerance, 2),
    ]


def render_result(result: CheckResult, *, verbose: bool = False) -> str:
    """Render a check result as a plain-text report.

    Parameters
    ----------
    result : CheckResult
        The result to show.
    verbose : bool, optional
        List every recorded wrong entry instead of the worst few.

    Returns
    -------
    str
        A headline verdict, a table with one row per parameter, the diagnosis
        of each wrong parameter with its worst entries, and how the check ran.
    """
    parts = [_headline(result)]
    for heading, reports in _sectioned(result):
        parts += ["", *([heading] if heading else [])]
        parts.append(render_table(_param_headers(result), [_param_row(p) for p in reports]))

    wrong = _wrong_blocks(result)
    if wrong:
        parts += ["", "Diagnosis"]
    for block in wrong:
        count = block.count
        parts.append(f"  {block.label}: {block.summary}" + (f" ({count})" if count else ""))
        if block.hint:
            parts.append(f"    {block.hint}")
        shown = block.failures if verbose else block.failures[:ENTRIES_SHOWN]
        if not shown:
            continue
        parts.append(
            render_table(
                _ENTRY_HEADERS,
                _entry_rows(shown),
                indent="    ",
            )
        )
        hidden = block.n_failed - len(shown)
        if hidden:
            parts.append(f"    ... {hidden} more wrong {noun(hidden, 'entry')}")

    inconclusive = [p for p in result.params if p.n_inconclusive]
    if inconclusive:
        parts += ["", "Inconclusive entries (not counted as wrong)"]
    for report in inconclusive:
        parts.append(
            f"  {_label(result, report)}: {report.n_inconclusive} of "
            f"{counted(report.n_checked, 'entry')}"
        )
        shown_entries = (
            report.inconclusive_entries if verbose else report.inconclusive_entries[:ENTRIES_SHOWN]
        )
        parts.append(
            render_table(_INCONCLUSIVE_HEADERS, _inconclusive_rows(shown_entries), indent="    ")
        )
        hidden = report.n_inconclusive - len(shown_entries)
        if hidden:
            parts.append(f"    ... {hidden} more inconclusive {noun(hidden, 'entry')}")

    probed = [p for p in result.params if p.probes]
    if probed and (verbose or any(p.verdict is not Verdict.PASS for p in probed)):
        parts += ["", "Directional probes (the gradient along random signed directions)"]
        rows = [
            [*_probe_cells(probe), _VERDICT_LABEL[probe.verdict]]
            for report in probed
            for probe in report.probes
            if verbose or report.verdict is not Verdict.PASS
        ]
        parts.append(render_table(_PROBE_HEADERS, rows))

    if result.notes:
        parts += ["", "Notes"]
        parts += [f"  - {note}" for note in result.notes]

    tolerance = f"rtol {result.rtol:.3g}" + (f", atol {result.atol:.3g}" if result.atol else "")
    refined = refined_phrase(result.n_refined)
    seed = f", seed {result.seed}" if result.seed is not None else ""
    margin = (
        f"; margin {result.margin:.3g}× (the worst entry uses {100 / result.margin:.2g}% of its "
        "tolerance)"
        if result.passed and np.isfinite(result.margin)
        else ""
    )
    parts += [
        "",
        _relative_difference_line(result),
        f"{result.method.capitalize()} differences, step {result.step}, {tolerance}{seed}{margin}.",
        _coverage_line(result, refined),
    ]
    return "\n".join(parts)


def _relative_difference_line(result: CheckResult) -> str:
    """Say what the assignment's relative difference covers: every entry only in full mode."""
    judged = sum(p.n_checked - p.n_inconclusive for p in result.params)
    total = sum(p.n_entries for p in result.params)
    if result.mode == "full" or judged == total:
        covers = "all entries"
    elif result.mode == "sampled":
        covers = f"the {counted(judged, 'sampled entry', 'sampled entries')}"
    elif judged:
        covers = f"the {counted(judged, 'entry', 'entries')} measured one by one"
    else:
        return (
            "Relative difference (the assignment's formula): none, no entry was measured one by one"
        )
    return (
        f"Relative difference, {covers} (the assignment's formula): "
        f"{_num(result.relative_difference, 6)}"
    )


def refined_phrase(n_refined: int) -> str:
    """Return ``" (N entries re-measured at smaller steps)"``, or ``""`` when none were.

    Examples
    --------
    >>> refined_phrase(1), refined_phrase(0)
    (' (1 entry re-measured at smaller steps)', '')
    """
    return f" ({counted(n_refined, 'entry')} re-measured at smaller steps)" if n_refined else ""


def wrong_count(report: ParamReport) -> str:
    """Say how many of a wrong parameter's entries are wrong, out of how many measured.

    The text, terminal and HTML reports show it in parentheses after the
    diagnosis; it is empty when the diagnosis already gives the same count.

    Examples
    --------
    >>> import numpy as np
    >>> from gradproof import check
    >>> result = check(lambda w: np.sum(w**2), lambda w: 4 * w, np.ones(3))
    >>> wrong_count(result.params[0])
    'all 3 entries wrong'
    """
    if report.strategy == "directional" and report.n_failed:
        failed_probes = sum(p.verdict is Verdict.FAIL for p in report.probes)
        why = (
            f"after its {noun(failed_probes, 'probe')} failed"
            if failed_probes
            else "because NaN or infinite analytic entries are"
        )
        measured = (
            ("its only entry" if report.n_entries == 1 else "every entry")
            if report.n_checked == report.n_entries
            else f"{report.n_checked} of {counted(report.n_entries, 'entry')}"
        )
        return f"{report.n_failed} wrong; {measured} measured one by one {why}"
    if not report.n_failed:
        return "found by its directional probes"
    n_failed, n_checked = report.n_failed, report.n_checked
    summary = report.diagnosis.summary if report.diagnosis else ""
    if f"{n_failed} of {counted(n_checked, 'entry')}" in summary:
        return ""  # the diagnosis already says it (e.g. NaN or infinite at 1 of 20 entries)
    if report.diagnosis is not None and report.diagnosis.kind == "one_entry":
        return ""  # "its one entry is wrong: analytic 4.5, numeric 3" says it all
    if n_checked < report.n_entries:
        return f"{n_failed} of {counted(n_checked, 'measured entry', 'measured entries')} wrong"
    if n_failed == n_checked:
        return "its only entry wrong" if n_failed == 1 else f"all {n_failed} entries wrong"
    return f"{n_failed} of {counted(n_checked, 'entry')} wrong"


def _coverage_line(result: CheckResult, refined: str) -> str:
    """Say what the strategy covered and what it cost."""
    engine = "" if result.engine == "serial" else f" ({result.engine})"
    evals = counted(result.n_evals, "loss evaluation")
    cost = f"{evals}{refined} in {result.seconds:.2f} s{engine}."
    measured = f"{result.n_checked} of {counted(result.n_entries, 'entry')}"
    if result.mode == "directional":
        return (
            "Mode directional: every tensor probed along random directions, "
            f"{counted(result.n_probes, 'probe')} in all; {measured} measured one by one; " + cost
        )
    if result.mode == "sampled":
        partial = [p for p in result.params if p.n_checked < p.n_entries]
        worst = max(partial, key=lambda p: p.miss_chance(0.01), default=None)
        chance = (
            f"; a bug touching 1% of a tensor's entries is missed with probability at most "
            f"{worst.miss_chance(0.01):.2g} ({worst.name})"
            if worst is not None
            else ""
        )
        share = result.n_checked / result.n_entries if result.n_entries else 1.0
        return f"Mode sampled: {measured} ({share:.2%}) measured{chance}; " + cost
    return f"{measured} checked with " + cost


register_renderer(render_result)  # str(result) renders with it (Note [Results render late])
