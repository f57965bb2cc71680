"""Figures per tensor: analytic against numeric entries (or probes), and each one's error ratio."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from gradproof.report.figures_pyplot import _plt
from gradproof.report.figures_ratios import error_ratios, tensor_ratios
from gradproof.results import CheckResult, ParamReport, Verdict

__all__ = ["plot_analytic_vs_numeric", "plot_relative_differences"]

_VERDICT_COLOUR = {
    Verdict.PASS: "tab:green",
    Verdict.FAIL: "tab:red",
    Verdict.INCONCLUSIVE: "tab:orange",
}


def plot_analytic_vs_numeric(report: ParamReport, ax: Any = None) -> Any:
    """Scatter a tensor's analytic gradient entries against the numerical ones.

    Correct entries lie on the diagonal; wrong entries (error above their
    tolerance) are drawn in red. A tensor checked only along random directions
    (``mode="directional"``, no entry measured one by one) shows its probes
    instead: the directional derivatives ``g . v`` against their finite
    differences.

    Parameters
    ----------
    report : ParamReport
        One parameter's report.
    ax : matplotlib Axes, optional
        Where to draw; a new figure by default.

    Returns
    -------
    matplotlib.figure.Figure
        The figure drawn on.
    """
    if ax is None:
        figure, ax = _plt().subplots(figsize=(4.5, 4.2), constrained_layout=True)
    else:
        figure = ax.figure
    analytic, numeric = report.analytic.ravel(), report.numeric.ravel()
    measured = np.isfinite(analytic) & np.isfinite(numeric)
    wrong = measured & (error_ratios(report).ravel() > 1)
    probed = not measured.any() and bool(report.probes)
    if probed:
        analytic = np.array([p.analytic for p in report.probes])
        numeric = np.array([p.numeric for p in report.probes])
        measured = np.isfinite(analytic) & np.isfinite(numeric)
        wrong = measured & np.array([p.verdict is Verdict.FAIL for p in report.probes])
    good = measured & ~wrong
    if measured.any():
        values = np.concatenate([analytic[measured], numeric[measured]])
        low, high = float(values.min()), float(values.max())
        pad = max(0.05 * (high - low), 0.05 * max(abs(high), abs(low)), 1e-12)
        ax.plot([low - pad, high + pad], [low - pad, high + pad], color="0.6", linewidth=1)
        ax.scatter(numeric[good], analytic[good], s=14, color="tab:blue", label="agrees")
        if wrong.any():
            ax.scatter(
                numeric[wrong],
                analytic[wrong],
                s=30,
                color="tab:red",
                marker="X",
                label=f"wrong ({int(wrong.sum())})",
            )
        ax.legend(loc="best", fontsize="small")
    else:
        ax.text(0.5, 0.5, "no entry measured", ha="center", va="center", transform=ax.transAxes)
    ax.ticklabel_format(useOffset=False)
    ax.locator_params(nbins=5)  # long tick labels of close values must not overlap
    if probed:
        ax.set_xlabel("numeric derivative along the probe")
        ax.set_ylabel("analytic derivative along the probe (g · v)")
        what = "probe wrong" if len(report.probes) == 1 else "probes wrong"
    else:
        ax.set_xlabel("numeric gradient")
        ax.set_ylabel("analytic gradient")
        what = "wrong"
    ax.set_title(f"{report.name}: {int(wrong.sum())} of {int(measured.sum())} {what}", fontsize=10)
    return figure


def plot_relative_differences(result: CheckResult) -> Any:
    """Draw each tensor's error ratio (worst ``|analytic - numeric| / tolerance``).

    One bar per tensor on a log axis, coloured by verdict, with the line at 1:
    a bar past the line holds a wrong entry, so where the bug is shows at a glance.

    Parameters
    ----------
    result : CheckResult
        A finished check.

    Returns
    -------
    matplotlib.figure.Figure
        The figure.
    """
    rows = tensor_ratios(result)
    positive = [r for _, r, _ in rows if r == r and 0 < r < np.inf]
    floor = min(1e-6, min(positive, default=1.0) / 10)
    ceiling = max(10.0, max(positive, default=1.0) * 10)
    figure, ax = _plt().subplots(figsize=(7.5, 1.2 + 0.4 * len(rows)), constrained_layout=True)
    names = [name for name, _, _ in rows]
    widths = [
        floor if r != r else min(max(r, floor), ceiling) for _, r, _ in rows
    ]  # NaN: not judged
    colours = [_VERDICT_COLOUR[v] if r == r else "0.75" for _, r, v in rows]
    positions = np.arange(len(rows))[::-1]
    ax.barh(positions, widths, color=colours, left=0)
    for y, (_, ratio, _) in zip(positions, rows, strict=True):
        label = "not judged" if ratio != ratio else f"{ratio:.2g}"
        ax.text(
            min(max(ratio, floor), ceiling) if ratio == ratio else floor,
            y,
            " " + label,
            va="center",
            fontsize=8,
        )
    ax.set_xscale("log")
    ax.set_xlim(floor, ceiling * 10)
    ax.axvline(1.0, color="black", linestyle="--", linewidth=1)
    ax.set_yticks(positions, names)
    ax.set_xlabel("worst |analytic − numeric| / tolerance (past the dashed line: wrong)")
    ax.set_title(f"Error against tolerance per tensor: {result.verdict.value}")
    return figure


def _tensor_grid(reports: Sequence[ParamReport]) -> Any:
    columns = min(3, len(reports))
    rows = -(-len(reports) // columns)
    figure, axes = _plt().subplots(
        rows, columns, figsize=(4.2 * columns, 3.9 * rows), constrained_layout=True, squeeze=False
    )
    for ax, report in zip(axes.ravel(), reports, strict=False):
        plot_analytic_vs_numeric(report, ax=ax)
    for ax in axes.ravel()[len(reports) :]:
        ax.set_visible(False)
    return figure
