"""Figures, drawn with matplotlib (an optional dependency, imported only when a figure is made)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gradproof._typing import FloatArray, Params
from gradproof.errors import BackendUnavailableError
from gradproof.report.stepsweep import StepSweep
from gradproof.results import CheckResult, ParamReport, Verdict

__all__ = [
    "FigureSpec",
    "error_matrix",
    "error_ratios",
    "figure_png",
    "iter_figures",
    "plot_analytic_vs_numeric",
    "plot_error_heatmap",
    "plot_learning_curve",
    "plot_relative_differences",
    "plot_step_sweep",
    "tensor_ratios",
    "write_figures",
]


def _pyplot() -> object:
    """Import matplotlib's pyplot with a file-only backend, or say how to install it."""
    try:
        import matplotlib
    except ImportError as exc:
        raise BackendUnavailableError(
            f"Figures need matplotlib ({exc}). Install it with `pip install matplotlib` "
            "(or the `gradproof[cli]` extra).",
            framework="matplotlib",
        ) from exc
    matplotlib.use("Agg")  # write files; never open a window
    import matplotlib.pyplot as plt

    return plt


def plot_learning_curve(
    path: str | Path,
    *,
    train_loss: Sequence[float],
    validation_loss: Sequence[float],
    validation_pr_auc: Sequence[float],
    checked_epochs: Sequence[float] = (),
    title: str = "Learning curve",
) -> Path:
    """Draw the losses and the validation PR-AUC per epoch, and save the figure.

    Parameters
    ----------
    path : str or Path
        Where to write the figure; the format follows the suffix (``.png``, ``.svg``, ``.pdf``).
    train_loss, validation_loss : sequence of float
        Mean cost per epoch.
    validation_pr_auc : sequence of float
        Area under the precision-recall curve on the validation split, per epoch.
    checked_epochs : sequence of float, optional
        When the gradient guard ran (in epochs, fractional within an epoch),
        drawn as ticks along the bottom.
    title : str, optional
        The figure's title.

    Returns
    -------
    Path
        The written file.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "curve.png"
    >>> plot_learning_curve(out, train_loss=[0.7, 0.4], validation_loss=[0.7, 0.5],
    ...                     validation_pr_auc=[0.2, 0.6]).stat().st_size > 1000
    True
    """
    plt = _pyplot()
    epochs = list(range(1, len(train_loss) + 1))
    figure, (losses, quality) = plt.subplots(  # type: ignore[attr-defined]
        1, 2, figsize=(10, 4), constrained_layout=True
    )
    losses.plot(epochs, train_loss, marker="o", label="training cost")
    losses.plot(epochs, validation_loss, marker="o", label="validation cost")
    for epoch in checked_epochs:
        losses.axvline(epoch, ymax=0.04, color="tab:green", linewidth=2)
    losses.set_xlabel("epoch")
    losses.set_ylabel("weighted logistic cost")
    losses.legend()
    losses.set_title("cost (green ticks: gradient checks)" if checked_epochs else "cost")
    quality.plot(epochs, validation_pr_auc, marker="o", color="tab:purple")
    quality.set_xlabel("epoch")
    quality.set_ylabel("PR-AUC")
    quality.set_ylim(0.0, 1.0)
    quality.set_title("validation PR-AUC")
    figure.suptitle(title)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=110)
    plt.close(figure)  # type: ignore[attr-defined]
    return out


# -- gradient-check figures -------------------------------------------------------------------
_VERDICT_COLOUR = {
    Verdict.PASS: "tab:green",
    Verdict.FAIL: "tab:red",
    Verdict.INCONCLUSIVE: "tab:orange",
}

MAX_TENSOR_PANELS = 12
"""Analytic-against-numeric panels drawn at most (the worst tensors first)."""

MAX_HEATMAPS = 6
"""Heat maps drawn at most (the worst matrices first)."""


def _plt() -> Any:
    """Pyplot, typed loosely: matplotlib objects are not part of gradproof's typed surface."""
    return _pyplot()


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

    This is what :func:`plot_error_heatmap` draws: a transposed gradient
    shows as an antisymmetric pattern, a wrong row or column as a stripe.

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


def plot_step_sweep(sweep: StepSweep, ax: Any = None) -> Any:
    """Draw a step sweep: the central-difference error against the step, log-log.

    Large steps show the truncation error (slope 2), small steps the round-off
    error (slope -1); the dashed line marks the step gradproof chose.

    Parameters
    ----------
    sweep : StepSweep
        From :func:`gradproof.report.stepsweep.step_sweep`.
    ax : matplotlib Axes, optional
        Where to draw; a new figure by default.

    Returns
    -------
    matplotlib.figure.Figure
        The figure drawn on.
    """
    if ax is None:
        figure, ax = _plt().subplots(figsize=(7.0, 4.5), constrained_layout=True)
    else:
        figure = ax.figure
    steps = sweep.steps
    errors = np.where(sweep.errors > 0, sweep.errors, np.nan)  # exact zeros cannot be drawn
    ax.loglog(
        steps,
        errors,
        marker="o",
        markersize=4,
        label=f"|central difference − {sweep.reference_kind}|",
    )
    usable = np.isfinite(errors)
    if usable.sum() >= 2:
        best = int(np.nanargmin(errors))
        if best < len(steps) - 1:  # truncation guide through the largest step, slope 2
            right = steps[best:]
            anchor = errors[-1] if np.isfinite(errors[-1]) else np.nanmax(errors[best:])
            ax.loglog(
                right,
                anchor * (right / steps[-1]) ** 2,
                ":",
                color="tab:orange",
                label="truncation ∝ h²",
            )
        if best > 0:  # round-off guide through the smallest step, slope -1
            left = steps[: best + 1]
            anchor = errors[0] if np.isfinite(errors[0]) else np.nanmax(errors[: best + 1])
            ax.loglog(
                left, anchor * (steps[0] / left), ":", color="tab:purple", label="round-off ∝ 1/h"
            )
    ax.axvline(
        sweep.chosen_step,
        color="black",
        linestyle="--",
        linewidth=1,
        label=f"gradproof's step {sweep.chosen_step:.2g}",
    )
    if sweep.analytic is not None and sweep.reference_kind == "extrapolated":
        gap = abs(sweep.analytic - sweep.reference)
        if gap > 0:
            ax.axhline(
                gap, color="tab:red", linewidth=1, label=f"|analytic − extrapolated| = {gap:.2g}"
            )
    ax.set_xlabel("step h")
    ax.set_ylabel("error of the central difference")
    ax.set_title(f"Step sweep of {sweep.entry} (x = {sweep.x:.4g})")
    ax.legend(loc="best", fontsize="small")
    ax.grid(True, which="major", alpha=0.3)
    return figure


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
        worst tensors first), an error heat map per matrix, and the step sweep.
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
    # A matrix with no entry measured one by one (probed only) would be a blank heat map.
    matrices = [
        p
        for p in ordered
        if len(p.shape) == 2 and min(p.shape) > 1 and np.isfinite(p.numeric).any()
    ]
    for report in matrices[:MAX_HEATMAPS]:
        yield FigureSpec(
            _stem("heatmap", report.name),
            f"Error per entry of {report.name}",
            f"Heat map of the signed error ratio of each entry of {report.name} "
            f"({report.n_failed} wrong); a transpose shows as an antisymmetric pattern.",
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
