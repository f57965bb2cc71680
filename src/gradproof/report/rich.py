"""Terminal report of a check, drawn with rich: colour, a table and a closing verdict.

The command line uses it when its output is a terminal; redirected output gets
the plain text of :func:`gradproof.report.text.render_result` instead. rich is
part of the ``cli`` extra and is imported only by this module.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from rich import box
from rich.console import Console, Group, RenderableType
from rich.padding import Padding
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from gradproof._words import counted, noun
from gradproof.report.text import (
    _ENTRY_HEADERS,
    _INCONCLUSIVE_HEADERS,
    _PROBE_HEADERS,
    ENTRIES_SHOWN,
    _coverage_line,
    _entry_rows,
    _headline,
    _inconclusive_rows,
    _label,
    _num,
    _param_headers,
    _param_row,
    _probe_cells,
    _sectioned,
    _split_code,
    _Wrong,
    _wrong_blocks,
    refined_phrase,
)
from gradproof.results import CheckResult, ParamReport, Verdict

__all__ = ["VERDICT_STYLE", "print_result", "render_renderable"]

VERDICT_STYLE: Mapping[Verdict, str] = {
    Verdict.PASS: "bold green",
    Verdict.FAIL: "bold red",
    Verdict.INCONCLUSIVE: "bold yellow",
}
"""The colour of each verdict."""


def _param_table(result: CheckResult, reports: Sequence[ParamReport]) -> Table:
    table = Table(
        box=box.SIMPLE_HEAD,
        show_edge=False,
        header_style="bold",
        pad_edge=False,
        collapse_padding=True,
    )
    justified = ("left", "left", "left", "right", "right", "left", "right", "right")
    headers = _param_headers(result)
    for column, (header, justify) in enumerate(zip(headers, justified, strict=True)):
        table.add_column(
            header,
            justify=justify,  # type: ignore[arg-type]
            no_wrap=column not in (0, 5),  # the names wrap, the numbers never
            min_width=len(header) if column == 0 else None,
        )
    for report in reports:
        row = _param_row(report)
        cells: list[RenderableType] = [Text(cell) for cell in row]
        cells[2] = Text(row[2], style=VERDICT_STYLE[report.verdict])
        table.add_row(*cells)
    return table


def _entry_table(headers: Sequence[str], rows: list[list[str]]) -> Table:
    table = Table(show_edge=False, header_style="dim", pad_edge=False, box=None)
    for header in headers:
        table.add_column(header)
    for row in rows:
        table.add_row(*row)
    return table


def _prose(text: str, style: str = "") -> Text:
    """Return a sentence of the report as rich text, its `code` spans bold, without backticks."""
    return Text.assemble(
        *((part, "bold") if i % 2 else part for i, part in enumerate(_split_code(text))),
        style=style,
    )


def _diagnosis(block: _Wrong, verbose: bool) -> list[RenderableType]:
    parts: list[RenderableType] = [
        Text.assemble(
            ("  " + block.label, "bold red"),
            ": ",
            _prose(block.summary),
            f" ({block.count})" if block.count else "",
        )
    ]
    if block.hint:
        parts.append(Padding(_prose("hint: " + block.hint, style="cyan"), (0, 0, 0, 4)))
    shown = block.failures if verbose else block.failures[:ENTRIES_SHOWN]
    if shown:
        parts.append(
            Padding(
                _entry_table(_ENTRY_HEADERS, _entry_rows(shown)),
                (0, 0, 0, 4),
                expand=False,
            )
        )
    hidden = block.n_failed - len(shown)
    if hidden:
        parts.append(Text(f"    ... {hidden} more wrong {noun(hidden, 'entry')}"))
    return parts


def _inconclusive(result: CheckResult, report: ParamReport, verbose: bool) -> list[RenderableType]:
    entries = report.inconclusive_entries
    shown = entries if verbose else entries[:ENTRIES_SHOWN]
    parts: list[RenderableType] = [
        Text.assemble(
            ("  " + _label(result, report), "bold yellow"),
            f": {report.n_inconclusive} of {counted(report.n_checked, 'entry')}",
        ),
        Padding(
            _entry_table(_INCONCLUSIVE_HEADERS, _inconclusive_rows(shown)),
            (0, 0, 0, 4),
            expand=False,
        ),
    ]
    hidden = report.n_inconclusive - len(shown)
    if hidden:
        parts.append(Text(f"    ... {hidden} more inconclusive {noun(hidden, 'entry')}"))
    return parts


def render_renderable(
    result: CheckResult, *, verbose: bool = False, title: str = "gradproof check"
) -> Group:
    """Build the rich renderable of a check's report.

    Parameters
    ----------
    result : CheckResult
        The result to show.
    verbose : bool, optional
        List every recorded wrong or inconclusive entry, and every probe.
    title : str, optional
        The header panel's title, e.g. what was checked.

    Returns
    -------
    rich.console.Group
        A header panel, the per-parameter table, the diagnosis of each wrong
        parameter with its hint, the inconclusive entries, notes, how the
        check ran, and a closing one-line verdict.
    """
    style = VERDICT_STYLE[result.verdict]
    header = Panel(
        Text(
            f"{counted(len(result.subjects), result.subject_noun)}, "
            f"{counted(result.n_entries, 'entry')}; "
            f"mode {result.mode}, "
            f"{result.method} differences, step {result.step}, rtol {result.rtol:.3g}"
            + (f", atol {result.atol:.3g}" if result.atol else "")
            + (f", seed {result.seed}" if result.seed is not None else "")
        ),
        title=Text(title),
        title_align="left",
        border_style=style.replace("bold ", ""),
    )
    parts: list[RenderableType] = [header]
    for heading, reports in _sectioned(result):
        if heading:
            parts += [Text(""), Text(heading, style="bold")]
        parts.append(_param_table(result, reports))

    wrong = _wrong_blocks(result)
    if wrong:
        parts += [Text(""), Text("Diagnosis", style="bold")]
    for block in wrong:
        parts += _diagnosis(block, verbose)

    inconclusive = [p for p in result.params if p.n_inconclusive]
    if inconclusive:
        parts += [Text(""), Text("Inconclusive entries (not counted as wrong)", style="bold")]
    for report in inconclusive:
        parts += _inconclusive(result, report, verbose)

    probed = [p for p in result.params if p.probes and (verbose or p.verdict is not Verdict.PASS)]
    if probed:
        parts += [Text(""), Text("Directional probes", style="bold")]
        table = _entry_table(_PROBE_HEADERS, [])
        for report in probed:
            for probe in report.probes:
                table.add_row(
                    *_probe_cells(probe),
                    Text(probe.verdict.value, style=VERDICT_STYLE[probe.verdict]),
                )
        parts.append(Padding(table, (0, 0, 0, 2), expand=False))

    if result.notes:
        parts += [Text(""), Text("Notes", style="bold")]
        parts += [_prose(f"  - {note}") for note in result.notes]

    refined = refined_phrase(result.n_refined)
    parts += [
        Text(""),
        Text(
            f"Relative difference, all entries: {_num(result.relative_difference, 6)}; "
            + (
                f"margin {result.margin:.3g}×. "
                if result.passed and result.margin != float("inf")
                else ""
            )
            + _coverage_line(result, refined),
            style="dim",
        ),
        Text(""),
        Text(_headline(result), style=style),
    ]
    return Group(*parts)


def print_result(
    result: CheckResult,
    console: Console | None = None,
    *,
    verbose: bool = False,
    title: str = "gradproof check",
) -> None:
    """Print a check's report to a rich console (stdout by default).

    Parameters
    ----------
    result : CheckResult
        The result to show.
    console : rich.console.Console, optional
        Where to print it.
    verbose : bool, optional
        See :func:`render_renderable`.
    title : str, optional
        See :func:`render_renderable`.
    """
    (console or Console(highlight=False)).print(
        render_renderable(result, verbose=verbose, title=title)
    )
