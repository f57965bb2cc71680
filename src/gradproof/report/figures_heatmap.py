"""The heat map of a matrix parameter's signed error per entry."""

from __future__ import annotations

from typing import Any

import numpy as np

from gradproof.report.figures_pyplot import _plt
from gradproof.report.figures_ratios import error_matrix
from gradproof.results import ParamReport

__all__ = ["plot_error_heatmap"]


def plot_error_heatmap(report: ParamReport) -> Any:
    """Draw a matrix parameter's signed error ratio per entry.

    Red entries have an analytic value above the numeric one, blue below; the
    colour scale is linear within the tolerance (±1) and logarithmic beyond.
    Unmeasured entries are grey. A transposed gradient shows as an
    antisymmetric pattern; a wrong row or column as a stripe.

    Parameters
    ----------
    report : ParamReport
        The report of a two-dimensional parameter.

    Returns
    -------
    matplotlib.figure.Figure
        The figure.

    Raises
    ------
    ValueError
        If the parameter is not two-dimensional.
    """
    plt = _plt()
    from matplotlib.colors import SymLogNorm

    matrix = error_matrix(report)
    finite = np.abs(matrix[np.isfinite(matrix)])
    bound = max(1.0, float(finite.max())) if finite.size else 1.0
    cmap = plt.get_cmap("RdBu_r").with_extremes(bad="0.8")
    rows, cols = matrix.shape
    width = min(9.0, max(4.0, 0.35 * cols + 2.5))
    height = min(9.0, max(3.0, 0.35 * rows + 1.5))
    figure, ax = plt.subplots(figsize=(width, height), constrained_layout=True)
    shown = np.ma.masked_invalid(np.clip(matrix, -bound, bound))
    image = ax.imshow(
        shown,
        cmap=cmap,
        norm=SymLogNorm(linthresh=1.0, vmin=-bound, vmax=bound),
        interpolation="nearest",
        aspect="auto",
    )
    wrong = np.argwhere(np.abs(np.nan_to_num(matrix)) > 1)
    if 0 < len(wrong) <= 400:
        ax.scatter(wrong[:, 1], wrong[:, 0], marker="x", s=12, color="black", linewidths=0.8)
    figure.colorbar(image, ax=ax, label="(analytic − numeric) / tolerance")
    ax.set_xlabel("column")
    ax.set_ylabel("row")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(
        f"{report.name} ({rows}×{cols}): error per entry\n× wrong, grey unmeasured", fontsize=10
    )
    return figure
