"""The learning curve of a training run: losses and validation PR-AUC per epoch."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from gradproof.report.figures_pyplot import _pyplot

__all__ = ["plot_learning_curve"]


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
