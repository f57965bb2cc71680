"""The plot of a step sweep: the central-difference error against the step, log-log."""

from __future__ import annotations

from typing import Any

import numpy as np

from gradproof.report.figures_pyplot import _plt
from gradproof.report.stepsweep import StepSweep

__all__ = ["plot_step_sweep"]


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
