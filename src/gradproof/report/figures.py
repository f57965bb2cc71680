"""Figures, drawn with matplotlib (an optional dependency, imported only when a figure is made).

This module lists a check's figures (:func:`iter_figures`) and writes them
(:func:`write_figures`, :func:`figure_png`); the figures themselves are drawn by
:mod:`~gradproof.report.figures_tensors` (analytic against numeric, error ratio
per tensor), :mod:`~gradproof.report.figures_heatmap` (error per entry of a
wrong or inconclusive parameter) and :mod:`~gradproof.report.figures_stepsweep`
(the step sweep), from the numbers of :mod:`~gradproof.report.figures_ratios`;
:mod:`~gradproof.report.figures_training` draws a training run's learning curve.
All of them are importable from here.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from gradproof._typing import Params
from gradproof.report.figures_heatmap import plot_error_heatmap
from gradproof.report.figures_pyplot import (
    _plt as _plt,  # re-exported: report/html.py and the tests use it
)
from gradproof.report.figures_ratios import (
    HeatmapGrid,
    error_matrix,
    error_ratios,
    heatmap_grid,
    tensor_ratios,
)
from gradproof.report.figures_stepsweep import plot_step_sweep
from gradproof.report.figures_tensors import (
    _tensor_grid,
    plot_analytic_vs_numeric,
    plot_relative_differences,
)
from gradproof.report.figures_training import plot_learning_curve
from gradproof.results import CheckResult, ParamReport, Verdict

__all__ = [
    "FigureSpec",
    "HeatmapGrid",
    "error_matrix",
    "error_ratios",
    "figure_png",
    "heatmap_grid",
    "heatmap_params",
    "iter_figures",
    "plot_analytic_vs_numeric",
    "plot_error_heatmap",
    "plot_learning_curve",
    "plot_relative_differences",
    "plot_step_sweep",
    "tensor_ratios",
    "write_figures",
]

MAX_TENSOR_PANELS = 12
"""Analytic-against-numeric panels drawn at most (the worst tensors first)."""

MAX_HEATMAPS = 6
"""Heat maps drawn at most (the worst wrong parameters first, see :func:`heatmap_params`)."""


class FigureSpec:
    """A figure to draw later: a file stem, a caption, alt text and how to draw it.

    Attributes
    ----------
    stem : str
        The file name without its suffix, e.g. ``heatmap_W1``.
    title : str
        A caption.
    alt : str
        A description for readers who cannot see the image.
    draw : callable
        Returns a new matplotlib Figure.
    """

    __slots__ = ("alt", "draw", "stem", "title")

    def __init__(self, stem: str, title: str, alt: str, draw: Callable[[], Any]) -> None:
        self.stem, self.title, self.alt, self.draw = stem, title, alt, draw

    def __repr__(self) -> str:
        return f"FigureSpec({self.stem!r})"


def _stem(prefix: str, name: str) -> str:
    return f"{prefix}_{re.sub(r'[^A-Za-z0-9_.-]+', '_', name).strip('_') or 'param'}"


def _severity(report: ParamReport) -> float:
    ratio = report.error_ratio
    return ratio if ratio == ratio else -1.0


def _heatmap_drawer(report: ParamReport) -> Callable[[], Any]:
    return lambda: plot_error_heatmap(report)


def heatmap_params(result: CheckResult) -> list[ParamReport]:
    """Return the parameters that get an error heat map, the wrong ones first, worst first.

    A parameter gets one when it is wrong or inconclusive, whatever its shape
    (a vector, a column, a scalar, a matrix or more), and something in it was
    judged or found inconclusive entry by entry: a heat map of a correct
    parameter would show nothing to look at, and one with no entry measured
    (a tensor checked only along probes) would be blank.

    Parameters
    ----------
    result : CheckResult
        A finished check.

    Returns
    -------
    list of ParamReport
        Wrong parameters by decreasing error ratio, then inconclusive ones.
    """
    chosen = [
        p
        for p in result.params
        if p.verdict in (Verdict.FAIL, Verdict.INCONCLUSIVE)
        and p.n_entries > 0
        and (np.isfinite(p.numeric).any() or p.inconclusive_entries)
    ]
    return sorted(chosen, key=lambda p: (p.verdict is Verdict.FAIL, _severity(p)), reverse=True)


def iter_figures(
    result: CheckResult,
    *,
    loss: Callable[[Any], Any] | None = None,
    params: Params | None = None,
    entry: str | None = None,
) -> Iterator[FigureSpec]:
    """List the figures of a check, to be drawn one at a time.

    Parameters
    ----------
    result : CheckResult
        A finished check.
    loss, params : optional
        The loss and the checked point: with both, a step sweep is added
        (it evaluates the loss again, 58 times).
    entry : str, optional
        The entry to sweep; by default the worst entry of the worst parameter.

    Yields
    ------
    FigureSpec
        The error ratio per tensor, analytic against numeric gradients (the
        worst tensors first), an error heat map per wrong or inconclusive
        parameter (:func:`heatmap_params`, at most :data:`MAX_HEATMAPS`), and
        the step sweep.
    """
    yield FigureSpec(
        "relative_differences",
        "Error against tolerance per tensor",
        "Bar chart of each parameter tensor's worst error divided by its tolerance, log scale; "
        f"bars past 1 are wrong. Wrong: {', '.join(result.suspects) or 'none'}.",
        lambda: plot_relative_differences(result),
    )
    ordered = sorted(result.params, key=_severity, reverse=True)[:MAX_TENSOR_PANELS]
    yield FigureSpec(
        "analytic_vs_numeric",
        "Analytic against numeric gradient",
        "Scatter plots, one per tensor, of analytic against numeric gradient entries; "
        "wrong entries are red crosses off the diagonal. A tensor checked only along random "
        "directions shows its probes.",
        lambda: _tensor_grid(ordered),
    )
    for report in heatmap_params(result)[:MAX_HEATMAPS]:
        grid = heatmap_grid(report)
        unmeasured = int(grid.unmeasured.sum())
        yield FigureSpec(
            _stem("heatmap", report.name),
            f"Error per entry of {report.name}",
            f"Heat map of each entry's error divided by its tolerance in {report.name} "
            f"({report.n_failed} wrong, {report.n_inconclusive} inconclusive, {unmeasured} not "
            "measured), log scale: right entries blue, wrong entries orange to red, entries "
            "not measured hatched grey. A transpose shows as a mirrored pattern; a wrong row "
            "or column as a stripe." + (f" Laid out as {grid.note}." if grid.note else ""),
            _heatmap_drawer(report),
        )
    if loss is not None and params is not None:
        from gradproof.report.stepsweep import default_entry, step_sweep

        try:
            chosen = entry if entry is not None else default_entry(result)
        except Exception:  # nothing judged: nothing to sweep
            return
        wrong = any(e.name == chosen for p in result.params for e in p.failures)
        yield FigureSpec(
            _stem("step_sweep", chosen),
            f"Step sweep of {chosen}",
            f"Log-log plot of the central-difference error of {chosen} against the step: "
            "truncation error on the right, round-off on the left, gradproof's step dashed.",
            lambda: plot_step_sweep(
                step_sweep(
                    loss,
                    params,
                    chosen,
                    result=result,
                    against="extrapolated" if wrong else "analytic",
                )
            ),
        )


def write_figures(
    result: CheckResult,
    folder: str | Path,
    *,
    loss: Callable[[Any], Any] | None = None,
    params: Params | None = None,
    entry: str | None = None,
) -> list[Path]:
    """Draw a check's figures and write them as PNG files.

    Parameters
    ----------
    result : CheckResult
        A finished check.
    folder : str or Path
        Where to write (created if missing).
    loss, params : optional
        The loss and the checked point; with both, the step sweep is drawn too.
    entry : str, optional
        The entry to sweep; by default the worst entry of the worst parameter.

    Returns
    -------
    list of Path
        The files written, in the order of :func:`iter_figures`.

    Raises
    ------
    BackendUnavailableError
        If matplotlib is not installed.
    """
    plt = _plt()
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for spec in iter_figures(result, loss=loss, params=params, entry=entry):
        figure = spec.draw()
        try:
            path = out / f"{spec.stem}.png"
            figure.savefig(path, dpi=100)
        finally:
            plt.close(figure)
        written.append(path)
    return written


def figure_png(spec: FigureSpec, *, dpi: int = 90) -> bytes:
    """Draw one figure and return it as PNG bytes (the figure is closed)."""
    import io

    plt = _plt()
    figure = spec.draw()
    try:
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=dpi)
    finally:
        plt.close(figure)
    return buffer.getvalue()
