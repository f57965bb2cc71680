"""A self-contained HTML report of a check: one file, figures embedded, opens offline.

The page holds what the text report holds (the verdict, the per-parameter
table, the diagnosis with hints, the wrong and inconclusive entries, the
probes, the notes, how the check ran) and, when matplotlib is installed, the
figures of :mod:`gradproof.report.figures` as inline PNG images. It loads nothing from
the network: the CSS is inline and the images are ``data:`` URIs.
"""

from __future__ import annotations

import base64
import datetime
from collections.abc import Callable, Mapping, Sequence
from html import escape
from pathlib import Path
from typing import Any

import numpy as np

from gradproof._typing import Params
from gradproof._words import counted, noun
from gradproof.errors import BackendUnavailableError
from gradproof.report.text import (
    _ENTRY_HEADERS,
    _INCONCLUSIVE_HEADERS,
    _PROBE_HEADERS,
    _VERDICT_LABEL,
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
    _wrong_blocks,
    refined_phrase,
)
from gradproof.results import CheckResult

__all__ = ["render_html", "write_html"]

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 2em auto;
       max-width: 1100px; padding: 0 1em; color: #1d1d1f; line-height: 1.45; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; }
h2 { font-size: 1.2em; margin-top: 1.8em; border-bottom: 1px solid #ddd; padding-bottom: 0.2em; }
h3 { font-size: 1.05em; margin-bottom: 0.3em; }
.verdict { padding: 0.8em 1em; border-radius: 6px; font-weight: 600; font-size: 1.1em; }
.verdict.pass { background: #e6f4ea; border-left: 6px solid #1e8e3e; }
.verdict.fail { background: #fce8e6; border-left: 6px solid #d93025; }
.verdict.inconclusive { background: #fef7e0; border-left: 6px solid #f29900; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.92em; }
th, td { border: 1px solid #ddd; padding: 0.3em 0.6em; text-align: left; }
th { background: #f3f3f3; }
td.num { font-family: ui-monospace, Menlo, Consolas, monospace; text-align: right; }
tr.fail td.v { color: #d93025; font-weight: 600; }
tr.inconclusive td.v { color: #b06000; font-weight: 600; }
tr.pass td.v { color: #1e8e3e; }
code { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 0.92em;
       background: #f3f3f3; padding: 0.05em 0.3em; border-radius: 3px; }
dl.context { display: grid; grid-template-columns: max-content auto; gap: 0.1em 1em;
             margin: 0.8em 0; }
dl.context dt { color: #555; } dl.context dd { margin: 0; }
.hint { color: #444; margin: 0.2em 0 0.6em 1em; }
figure { margin: 1em 0 2em; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.9em; }
.note { background: #f1f3f4; padding: 0.6em 1em; border-radius: 4px; }
footer { margin-top: 3em; color: #777; font-size: 0.85em; }
"""

_NUMERIC_COLUMNS = {"rel. diff", "err/tol", "analytic", "numeric", "|error|", "tolerance", "left",
                    "right"}  # fmt: skip


def _prose(text: str) -> str:
    """Escape a sentence of the report, showing its `code` spans as ``<code>`` elements."""
    return "".join(
        f"<code>{escape(part)}</code>" if i % 2 else escape(part)
        for i, part in enumerate(_split_code(text))
    )


def _table(
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    row_classes: Sequence[str] | None = None,
    verdict_column: int | None = None,
) -> str:
    """Render an HTML table; every cell is escaped."""
    head = "".join(f'<th scope="col">{escape(h)}</th>' for h in headers)
    body = []
    for i, row in enumerate(rows):
        cls = f' class="{escape(row_classes[i])}"' if row_classes else ""
        cells = []
        for j, (header, cell) in enumerate(zip(headers, row, strict=True)):
            kind = "v" if j == verdict_column else "num" if header in _NUMERIC_COLUMNS else ""
            attribute = f' class="{kind}"' if kind else ""
            cells.append(f"<td{attribute}>{escape(cell)}</td>")
        body.append(f"<tr{cls}>{''.join(cells)}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _context_section(context: Mapping[str, str] | None) -> str:
    if not context:
        return ""
    items = "".join(
        f"<dt>{escape(key)}</dt><dd><code>{escape(str(value))}</code></dd>"
        for key, value in context.items()
    )
    return f'<dl class="context">{items}</dl>'


def _parameters_section(result: CheckResult) -> str:
    parts = [f"<h2>{escape(result.subject_noun.capitalize())}s</h2>"]
    for heading, reports in _sectioned(result):
        if heading:
            parts.append(f"<h3>{escape(heading)}</h3>")
        rows = [_param_row(p) for p in reports]
        classes = [p.verdict.value for p in reports]
        parts.append(_table(_param_headers(result), rows, row_classes=classes, verdict_column=2))
    return "".join(parts)


def _diagnosis_section(result: CheckResult) -> str:
    wrong = _wrong_blocks(result)
    if not wrong:
        return ""
    parts = ["<h2>Diagnosis</h2>"]
    for block in wrong:
        shown_count = f" ({escape(block.count)})" if block.count else ""
        parts.append(f"<h3>{escape(block.label)}: {_prose(block.summary)}{shown_count}</h3>")
        if block.hint:
            parts.append(f'<p class="hint">{_prose(block.hint)}</p>')
        if block.failures:
            parts.append(_table(_ENTRY_HEADERS, _entry_rows(block.failures)))
            hidden = block.n_failed - len(block.failures)
            if hidden > 0:
                parts.append(f"<p>… {hidden} more wrong {noun(hidden, 'entry')} not listed.</p>")
    return "".join(parts)


def _inconclusive_section(result: CheckResult) -> str:
    reports = [p for p in result.params if p.n_inconclusive]
    if not reports:
        return ""
    parts = ["<h2>Inconclusive entries (not counted as wrong)</h2>"]
    for report in reports:
        parts.append(
            f"<h3>{escape(_label(result, report))}: {report.n_inconclusive} of "
            f"{counted(report.n_checked, 'entry')}</h3>"
        )
        parts.append(_table(_INCONCLUSIVE_HEADERS, _inconclusive_rows(report.inconclusive_entries)))
    return "".join(parts)


def _probes_section(result: CheckResult) -> str:
    probed = [p for p in result.params if p.probes]
    if not probed:
        return ""
    rows, classes = [], []
    for report in probed:
        for probe in report.probes:
            rows.append([*_probe_cells(probe), _VERDICT_LABEL[probe.verdict]])
            classes.append(probe.verdict.value)
    return (
        "<h2>Directional probes</h2><p>The gradient along random signed directions.</p>"
        + _table(_PROBE_HEADERS, rows, row_classes=classes, verdict_column=5)
    )


def _how_section(result: CheckResult) -> str:
    tolerance = f"rtol {result.rtol:.3g}" + (f", atol {result.atol:.3g}" if result.atol else "")
    refined = refined_phrase(result.n_refined)
    rows = [
        ["method", f"{result.method} differences"],
        ["step", result.step],
        ["tolerances", tolerance],
        ["mode", result.mode],
        ["engine", result.engine],
        ["loss evaluations", f"{result.n_evals}{refined}"],
        ["time", f"{result.seconds:.2f} s"],
        ["entries checked", f"{result.n_checked} of {result.n_entries}"],
        ["relative difference, all entries", _num(result.relative_difference, 6)],
        ["loss at the point", _num(result.loss_value, 8)],
    ]
    if result.seed is not None:
        rows.append(["seed", str(result.seed)])
    if result.noise_level is not None:
        rows.append(["measured loss noise", _num(result.noise_level, 3)])
    if result.passed and np.isfinite(result.margin):
        rows.append(["margin", f"{result.margin:.3g}× (worst entry within its tolerance)"])
    if result.interrupted:
        rows.append(["interrupted", "yes: only the measured entries are reported"])
    return (
        "<h2>How the check ran</h2>"
        + _table(["", "value"], rows)
        + f"<p>{escape(_coverage_line(result, refined))}</p>"
    )


def _notes_section(result: CheckResult) -> str:
    if not result.notes:
        return ""
    items = "".join(f"<li>{_prose(note)}</li>" for note in result.notes)
    return f"<h2>Notes</h2><ul>{items}</ul>"


def _figures_section(
    result: CheckResult,
    *,
    loss: Callable[[Any], Any] | None,
    params: Params | None,
    entry: str | None,
) -> str:
    try:
        from gradproof.report import figures as plots

        plots._plt()  # fails early, with a clear message, without matplotlib
        parts = ["<h2>Figures</h2>"]
        for spec in plots.iter_figures(result, loss=loss, params=params, entry=entry):
            encoded = base64.b64encode(plots.figure_png(spec)).decode("ascii")
            parts.append(
                f'<figure><img src="data:image/png;base64,{encoded}" alt="{escape(spec.alt)}">'
                f"<figcaption>{escape(spec.title)}</figcaption></figure>"
            )
    except BackendUnavailableError as exc:
        return f'<h2>Figures</h2><p class="note">No figures: {escape(str(exc))}</p>'
    if loss is None or params is None:
        parts.append(
            '<p class="note">The step-size sweep needs the loss and the parameters '
            "(it evaluates the loss again); it is not drawn here.</p>"
        )
    return "".join(parts)


def render_html(
    result: CheckResult,
    *,
    figures: bool = True,
    loss: Callable[[Any], Any] | None = None,
    params: Params | None = None,
    entry: str | None = None,
    title: str = "gradproof report",
    context: Mapping[str, str] | None = None,
) -> str:
    """Render a check as one self-contained HTML page.

    Parameters
    ----------
    result : CheckResult
        The check to report.
    figures : bool, optional
        Embed figures (needs matplotlib; without it the page says so).
    loss, params : optional
        The loss and the checked point: with both, the step-size sweep of
        `entry` is drawn too (it evaluates the loss again).
    entry : str, optional
        The entry to sweep; by default the worst entry of the worst parameter.
    title : str, optional
        The page's title.
    context : mapping of str to str, optional
        What was checked, shown under the verdict, e.g. ``{"target": "model.py",
        "loss": "loss"}`` (``gradproof check`` passes its arguments).

    Returns
    -------
    str
        The HTML document. It references no external resource.

    Examples
    --------
    >>> import numpy as np
    >>> from gradproof import check
    >>> result = check(lambda w: float(np.sum(w**2)), lambda w: 2 * w, np.array([1.0, 2.0]))
    >>> page = render_html(result, figures=False)
    >>> page.startswith("<!DOCTYPE html>"), "CORRECT" in page
    (True, True)
    """
    from gradproof import __version__

    verdict = result.verdict.value
    sections = [
        f'<h1>{escape(title)}</h1><p class="verdict {verdict}" id="verdict">'
        f"{escape(_headline(result))}</p>",
        _context_section(context),
        _parameters_section(result),
        _diagnosis_section(result),
        _inconclusive_section(result),
        _probes_section(result),
        _notes_section(result),
        _figures_section(result, loss=loss, params=params, entry=entry) if figures else "",
        _how_section(result),
    ]
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}: {escape(verdict)}</title><style>{_CSS}</style></head>"
        f"<body>{''.join(sections)}"
        f"<footer>Made by gradproof {escape(__version__)} on {stamp}.</footer>"
        "</body></html>\n"
    )


def write_html(result: CheckResult, path: str | Path, **kwargs: Any) -> Path:
    """Write :func:`render_html`'s page to a file.

    Parameters
    ----------
    result : CheckResult
        The check to report.
    path : str or Path
        The file to write (its folder is created if missing).
    **kwargs
        Passed to :func:`render_html` (``figures``, ``loss``, ``params``, ``entry``, ``title``).

    Returns
    -------
    Path
        The written file.
    """
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_html(result, **kwargs), encoding="utf-8")
    return out
