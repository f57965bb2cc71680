"""The numbers the gradient-check figures draw: each entry's error against its tolerance.

Pure numpy: nothing here needs matplotlib.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
from numpy.typing import NDArray

from gradproof._typing import FloatArray
from gradproof.results import CheckResult, ParamReport, Verdict

__all__ = ["HeatmapGrid", "error_matrix", "error_ratios", "heatmap_grid", "tensor_ratios"]

MAX_STRIP = 48
"""A vector of up to this many entries is drawn as one row; a longer one wraps into rows."""


def _ratio(error: FloatArray, tolerance: FloatArray) -> FloatArray:
    """``error / tolerance``, with ``0 / 0 = 0`` and ``x / 0 = inf``; NaN stays NaN."""
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(tolerance > 0, error / tolerance, np.where(error == 0, 0.0, np.inf))
    return np.where(np.isnan(error) | np.isnan(tolerance), np.nan, out)


def error_ratios(report: ParamReport) -> FloatArray:
    """Return ``|analytic - numeric| / tolerance`` per entry, shaped like the parameter.

    Above 1 an entry is wrong. NaN where the entry was not measured.

    Examples
    --------
    >>> import numpy as np
    >>> from gradproof import check
    >>> result = check(lambda w: float(np.sum(w**2)), lambda w: 3 * w, np.array([1.0, 0.0]))
    >>> error_ratios(result.params[0]).round(-3) > 1
    array([ True, False])
    """
    return _ratio(np.abs(report.analytic - report.numeric), report.tolerance)


def error_matrix(report: ParamReport) -> FloatArray:
    """Return the signed ``(analytic - numeric) / tolerance`` of a matrix parameter.

    A transposed gradient shows here as an antisymmetric pattern, a wrong row
    or column as a stripe. The heat map
    (:func:`~gradproof.report.figures_heatmap.plot_error_heatmap`) draws the
    size of these ratios, with the sign as a mark on each wrong entry.

    Parameters
    ----------
    report : ParamReport
        The report of a two-dimensional parameter.

    Returns
    -------
    ndarray, shape ``report.shape``
        Signed error ratios; NaN where the entry was not measured.

    Raises
    ------
    ValueError
        If the parameter is not two-dimensional.
    """
    if len(report.shape) != 2:
        raise ValueError(f"{report.name} has shape {report.shape}: a heat map needs a matrix")
    difference = report.analytic - report.numeric
    return np.sign(difference) * _ratio(np.abs(difference), report.tolerance)


def tensor_ratios(result: CheckResult) -> list[tuple[str, float, Verdict]]:
    """Return each tensor's largest error ratio (probes included) with its verdict.

    NaN when nothing in the tensor was judged.
    """
    rows = []
    for report in result.params:
        ratio = report.error_ratio
        for probe in report.probes:
            error = np.array([abs(probe.analytic - probe.numeric)])
            probe_ratio = float(_ratio(error, np.array([probe.tolerance]))[0])
            ratio = probe_ratio if ratio != ratio else max(ratio, probe_ratio)
        rows.append((report.name, float(ratio), report.verdict))
    return rows


@dataclass(frozen=True)
class HeatmapGrid:
    """A parameter's error ratios laid out on a 2-D grid, as its heat map draws them.

    A matrix is drawn as it is; a scalar as one cell; a vector of ``n`` entries
    as a ``1 × n`` strip, or, past :data:`MAX_STRIP` entries, in rows of
    ``ceil(sqrt(n))`` entries (the cells past the last entry are padding); a
    tensor of three or more dimensions as ``shape[0] × (the product of the
    others)``, in C order. Every boolean grid below is shaped like `ratios`.

    Attributes
    ----------
    name : str
        The parameter's name.
    shape : tuple of int
        The parameter's own shape.
    ratios : ndarray of float
        ``|analytic - numeric| / tolerance`` of each judged entry (above 1:
        wrong; ``inf`` for a non-finite analytic value); NaN where the entry
        was not measured, was inconclusive, or is padding.
    above : ndarray of bool
        Where the analytic value is above the numeric one (by any amount).
    unmeasured : ndarray of bool
        Entries with no finite-difference measurement (sampled or probed away).
    inconclusive : ndarray of bool
        Entries the check could not judge (kinks, noise), as far as the report
        lists them (its ``inconclusive_entries``, at most the check's
        ``max_listed``).
    padding : ndarray of bool
        Cells past the end of a wrapped vector: no entry at all.
    row_width : int
        Entries per row of the grid.
    note : str
        How the parameter was laid out when not drawn as it is (empty for a matrix).
    """

    name: str
    shape: tuple[int, ...]
    ratios: FloatArray
    above: NDArray[np.bool_]
    unmeasured: NDArray[np.bool_]
    inconclusive: NDArray[np.bool_]
    padding: NDArray[np.bool_]
    row_width: int
    note: str

    @property
    def wrong(self) -> NDArray[np.bool_]:
        """Where an entry is wrong (its error ratio above 1)."""
        return np.nan_to_num(self.ratios, nan=0.0) > 1

    @property
    def right(self) -> NDArray[np.bool_]:
        """Where an entry was judged and is right (its error ratio at most 1)."""
        return np.isfinite(self.ratios) & (self.ratios <= 1)


def _layout(shape: tuple[int, ...]) -> tuple[int, int, str]:
    """Rows, columns and a note on how a tensor of `shape` is laid out on a grid."""
    size = math.prod(shape)
    if len(shape) == 2:
        return shape[0], shape[1], ""
    if len(shape) == 0:
        return 1, 1, ""
    if len(shape) == 1:
        if size <= MAX_STRIP:
            return 1, size, ""
        width = math.ceil(math.sqrt(size))
        return -(-size // width), width, f"{size} entries in rows of {width}"
    rest = size // shape[0] if shape[0] else 0
    dims = " × ".join(str(d) for d in shape)
    return shape[0], rest, f"{dims} flattened to {shape[0]} × {rest}"


_Scalar = TypeVar("_Scalar", bound=np.generic)


def _on_grid(values: NDArray[_Scalar], fill: float, rows: int, width: int) -> NDArray[_Scalar]:
    """Lay flat `values` out in `rows` rows of `width`, the cells past the end set to `fill`."""
    padding = np.full(rows * width - values.size, fill, dtype=values.dtype)
    return np.concatenate([values, padding]).reshape(rows, width)


def heatmap_grid(report: ParamReport) -> HeatmapGrid:
    """Lay a parameter's per-entry error ratios out on a 2-D grid for its heat map.

    Parameters
    ----------
    report : ParamReport
        One parameter's report, of any shape.

    Returns
    -------
    HeatmapGrid
        The grid: error ratios (NaN where nothing was judged) and where the
        entries are unmeasured, inconclusive, padding, or above the numeric value.

    Raises
    ------
    ValueError
        If the parameter has no entries.

    Examples
    --------
    >>> import numpy as np
    >>> from gradproof import check
    >>> result = check(lambda w: float(np.sum(w**2)), lambda w: 3 * w, np.array([1.0, 0.0]))
    >>> grid = heatmap_grid(result.params[0])
    >>> grid.ratios.shape, grid.wrong.tolist()
    ((1, 2), [[True, False]])
    """
    size = math.prod(report.shape)
    if size == 0:
        raise ValueError(f"{report.name} has shape {report.shape}: no entry to draw")
    rows, width, note = _layout(report.shape)
    inconclusive = np.zeros(size, dtype=bool)
    for entry in report.inconclusive_entries:
        inconclusive[np.ravel_multi_index(entry.index, report.shape) if entry.index else 0] = True
    numeric = report.numeric.ravel()
    unmeasured = ~np.isfinite(numeric) & ~inconclusive
    judged = ~unmeasured & ~inconclusive
    ratios = error_ratios(report).ravel()
    ratios = np.where(judged & np.isnan(ratios), np.inf, ratios)  # a NaN analytic: wrong
    ratios = np.where(judged, ratios, np.nan)
    with np.errstate(invalid="ignore"):
        above = judged & (report.analytic.ravel() > numeric)
    return HeatmapGrid(
        name=report.name,
        shape=report.shape,
        ratios=_on_grid(ratios, np.nan, rows, width),
        above=_on_grid(above, False, rows, width),
        unmeasured=_on_grid(unmeasured, False, rows, width),
        inconclusive=_on_grid(inconclusive, False, rows, width),
        padding=_on_grid(np.zeros(size, dtype=bool), True, rows, width),
        row_width=width,
        note=note,
    )
