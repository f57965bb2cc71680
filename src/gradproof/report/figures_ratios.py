"""The numbers the gradient-check figures draw: each entry's error against its tolerance.

Pure numpy: nothing here needs matplotlib.
"""

from __future__ import annotations

import numpy as np

from gradproof._typing import FloatArray
from gradproof.results import CheckResult, ParamReport, Verdict

__all__ = ["error_matrix", "error_ratios", "tensor_ratios"]


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

    This is what :func:`~gradproof.report.figures_heatmap.plot_error_heatmap`
    draws: a transposed gradient shows as an antisymmetric pattern, a wrong row
    or column as a stripe.

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
