"""The heat map of a parameter's error against tolerance per entry."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from gradproof._typing import FloatArray
from gradproof.report.figures_pyplot import _plt
from gradproof.report.figures_ratios import HeatmapGrid, heatmap_grid
from gradproof.results import ParamReport

__all__ = [
    "INCONCLUSIVE_COLOUR",
    "UNMEASURED_COLOUR",
    "heatmap_colours",
    "heatmap_scale",
    "plot_error_heatmap",
]

UNMEASURED_COLOUR = "0.86"
"""The light grey, hatched, of the cells that were not measured."""

INCONCLUSIVE_COLOUR = "white"
"""The colour of the cells the check could not judge (each marked "?")."""

_RIGHT_RANGE = (0.3, 0.65)  # the part of "Blues" right entries take: light to mid blue
_WRONG_RANGE = (0.35, 1.0)  # the part of "YlOrRd" wrong entries take: orange to dark red


def heatmap_scale(ratios: FloatArray) -> tuple[float, float]:
    """Return the decades the colour scale spans: ``(low, high)`` in ``log10(error / tol)``.

    ``low`` is at most -2 (the smallest non-zero ratio's decade, clipped at
    -8); ``high`` is at least 1 (the largest finite ratio's decade, clipped at
    12), so the boundary at ratio 1 (decade 0) always lies inside.

    Parameters
    ----------
    ratios : ndarray
        Error ratios; NaN and zero ignored.

    Returns
    -------
    tuple of float
        The lowest and highest decade.
    """
    positive = ratios[np.isfinite(ratios) & (ratios > 0)]
    if not positive.size:
        return -3.0, 1.0
    low = min(-2.0, max(-8.0, math.floor(math.log10(float(positive.min())))))
    high = max(1.0, min(12.0, math.ceil(math.log10(float(positive.max())))))
    return float(low), float(high)


def heatmap_colours() -> Any:
    """Return the two-segment colour map: blues for right entries, orange to red for wrong ones.

    Used with a norm whose centre is ratio 1 (decade 0): the lower half is
    light to mid blue (the darker, the closer to the tolerance), the upper half
    orange to dark red, so the boundary is a jump of hue. Its "bad" colour is
    transparent: unmeasured cells show the hatched grey drawn under the image.

    Returns
    -------
    matplotlib.colors.ListedColormap
        The colour map.
    """
    plt = _plt()
    from matplotlib.colors import ListedColormap

    right = plt.get_cmap("Blues")(np.linspace(*_RIGHT_RANGE, 128))
    wrong = plt.get_cmap("YlOrRd")(np.linspace(*_WRONG_RANGE, 128))
    colours = ListedColormap(np.vstack([right, wrong]), name="gradproof_error")
    return colours.with_extremes(bad=(0.0, 0.0, 0.0, 0.0))


def _white() -> Any:
    from matplotlib.colors import ListedColormap

    return ListedColormap([INCONCLUSIVE_COLOUR])


def _axes_labels(ax: Any, grid: HeatmapGrid) -> None:
    from matplotlib.ticker import MaxNLocator

    rows, cols = grid.ratios.shape
    if len(grid.shape) == 2:
        ax.set_xlabel("column")
        ax.set_ylabel("row")
    elif len(grid.shape) > 2:
        ax.set_xlabel(f"index over axes 1–{len(grid.shape) - 1}, flattened")
        ax.set_ylabel("index along axis 0")
    elif rows > 1:  # a wrapped vector
        ax.set_xlabel(f"entry mod {grid.row_width}")
        ax.set_ylabel(f"entry // {grid.row_width}")
    else:
        ax.set_xlabel("entry")
    for axis, n in ((ax.xaxis, cols), (ax.yaxis, rows)):
        if n <= 12:
            axis.set_ticks(range(n))
        else:
            axis.set_major_locator(MaxNLocator(integer=True))


def _entry_background(ax: Any, grid: HeatmapGrid) -> None:
    """Hatched grey under every entry's cell (not under padding): what shows where unmeasured."""
    from matplotlib.patches import Rectangle

    rows, cols = grid.ratios.shape
    full_rows = rows - int(grid.padding[-1].any())
    pieces = [(-0.5, -0.5, cols, full_rows)]
    if full_rows < rows:  # the last, partial row of a wrapped vector
        pieces.append((-0.5, rows - 1.5, int((~grid.padding[-1]).sum()), 1))
    for x, y, width, height in pieces:
        ax.add_patch(
            Rectangle(
                (x, y),
                width,
                height,
                facecolor=UNMEASURED_COLOUR,
                edgecolor="0.55",
                hatch="///",
                linewidth=0,
                zorder=0,
                label="_unmeasured",
            )
        )


def plot_error_heatmap(report: ParamReport) -> Any:
    """Draw a parameter's error against tolerance, ``|analytic - numeric| / tolerance``, per entry.

    The colour scale is logarithmic and has two segments that meet at 1: right
    entries are blue (light for a tiny error, darker towards the tolerance),
    wrong entries orange to dark red. Entries that were not measured are a
    hatched light grey, so a right entry never looks like a missing one;
    inconclusive entries are white with a ``?``. A wrong entry is marked ▲ where the
    analytic value is above the numeric one and ▼ where below (at most 400
    marks): a transposed gradient shows as mirrored ▲/▼ pairs, a wrong row or
    column as a stripe.

    A vector is drawn as a ``1 × n`` strip (wrapped into rows past 48
    entries), a tensor of three or more dimensions flattened to
    ``shape[0] × rest``; the title says how (see
    :func:`~gradproof.report.figures_ratios.heatmap_grid`).

    Parameters
    ----------
    report : ParamReport
        One parameter's report, of any shape with at least one entry.

    Returns
    -------
    matplotlib.figure.Figure
        The figure.

    Raises
    ------
    ValueError
        If the parameter has no entries.
    """
    plt = _plt()
    from matplotlib.colors import TwoSlopeNorm
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    grid = heatmap_grid(report)
    rows, cols = grid.ratios.shape
    low, high = heatmap_scale(grid.ratios)
    with np.errstate(divide="ignore"):
        decades = np.clip(np.log10(grid.ratios), low, high)  # 0 -> low, inf -> high, NaN stays
    width = min(9.0, max(4.5, 0.35 * cols + 2.8))
    height = min(9.0, max(2.8, 0.35 * rows + 2.2))
    figure, ax = plt.subplots(figsize=(width, height), layout="constrained")
    _entry_background(ax, grid)
    image = ax.imshow(
        np.ma.masked_invalid(decades),
        cmap=heatmap_colours(),
        norm=TwoSlopeNorm(vmin=low, vcenter=0.0, vmax=high),
        interpolation="nearest",
        aspect="auto",
        zorder=1,
    )
    handles: list[Any] = []
    wrong = grid.wrong
    if 0 < wrong.sum() <= 400:
        for mask, marker, label in (
            (wrong & grid.above, "^", "wrong, analytic above numeric"),
            (wrong & ~grid.above, "v", "wrong, analytic below numeric"),
        ):
            where = np.argwhere(mask)
            if len(where):
                ax.scatter(where[:, 1], where[:, 0], marker=marker, s=30, color="white",
                           edgecolors="black", linewidths=0.5, zorder=3)  # fmt: skip
                handles.append(Line2D([], [], linestyle="", marker=marker, color="white",
                                      markeredgecolor="black", label=label))  # fmt: skip
    doubtful = np.argwhere(grid.inconclusive)
    if len(doubtful):  # white cells with a "?", over the hatching
        ax.imshow(np.ma.masked_where(~grid.inconclusive, grid.inconclusive), cmap=_white(),
                  interpolation="nearest", aspect="auto", zorder=2)  # fmt: skip
        ax.scatter(doubtful[:, 1], doubtful[:, 0], marker="$?$", s=40, color="black", zorder=3)
        handles.append(Patch(facecolor=INCONCLUSIVE_COLOUR, edgecolor="black", linewidth=0.5,
                             label="? inconclusive (not judged)"))  # fmt: skip
    if grid.unmeasured.any():
        handles.append(Patch(facecolor=UNMEASURED_COLOUR, edgecolor="0.55", hatch="///",
                             label="not measured"))  # fmt: skip
    bar = figure.colorbar(
        image, ax=ax, label="|analytic − numeric| / tolerance\n(right below 1, wrong above)"
    )
    bar.ax.axhline(0.0, color="black", linewidth=1.5)
    bar.ax.yaxis.set_major_locator(MaxNLocator(integer=True, nbins=8))
    bar.ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"1e{v:+.0f}" if v else "1"))
    _axes_labels(ax, grid)
    shape = "×".join(str(d) for d in report.shape) or "scalar"
    title = f"{report.name} ({shape}): error / tolerance per entry, {int(wrong.sum())} wrong"
    ax.set_title(title + (f"\n({grid.note})" if grid.note else ""), fontsize=10)
    if handles:
        figure.legend(handles=handles, loc="outside lower center", ncols=min(2, len(handles)),
                      fontsize=8, frameon=False)  # fmt: skip
    return figure
