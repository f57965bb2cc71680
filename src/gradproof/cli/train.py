"""``gradproof train``: the fraud model trained for real, with a gradient guard watching.

The assignment's lesson is that gradient checking is too slow to run at every
step, so it should run a few times during training. This run does exactly
that: it trains :class:`~gradproof.models.FraudNetwork` on synthetic payments
(or the caller's CSV), with a :class:`~gradproof.guard.GradientGuard` that
checks the hand-written backward pass on a small fixed batch, dropout frozen,
every few hundred steps. With a planted bug the guard stops training at its
first check, with the full report. Otherwise the run ends with the test
metrics of the network and of a logistic-regression baseline, a
learning-curve figure, and the model saved to a file.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gradproof._typing import FloatArray
from gradproof.engine.progress import Progress
from gradproof.errors import InputError
from gradproof.guard import GradientGuard, GuardError, GuardRecord
from gradproof.models import (
    BUGS,
    FraudNetwork,
    Metrics,
    TrainingConfig,
    TrainingResult,
    evaluate,
    load_csv,
    logistic_baseline,
    make_payments,
    split,
    train,
)

__all__ = ["GUARD_BATCH", "HIDDEN", "TrainingRun", "run_training"]

HIDDEN = (32, 16)
"""Hidden layer widths of the trained network."""

GUARD_BATCH = 64
"""Examples in the guard's fixed batch: enough to exercise every unit, cheap to check."""

Writer = Callable[[str], None]


@dataclass(frozen=True, slots=True, kw_only=True)
class TrainingRun:
    """What ``gradproof train`` did.

    Attributes
    ----------
    stopped : GuardError or None
        The guard's error when it stopped training (a wrong gradient).
    network, baseline : Metrics or None
        Test metrics of the network and of logistic regression (None if stopped).
    guard_summary : str
        What the guard checked and found.
    files : tuple of Path
        What was written: the model, its metrics and the learning curve; or,
        when the guard stopped training, the failing check's JSON and text
        reports.
    """

    stopped: GuardError | None
    network: Metrics | None
    baseline: Metrics | None
    guard_summary: str
    files: tuple[Path, ...]

    @property
    def exit_code(self) -> int:
        """0 when training finished with correct gradients, 1 when the guard stopped it."""
        return 1 if self.stopped is not None else 0


def run_training(
    *,
    data_path: str | Path | None = None,
    n_transactions: int = 20_000,
    epochs: int = 20,
    guard_every: int = 250,
    plant_bug: str | None = None,
    output: str | Path = "gradproof-train",
    seed: int = 0,
    write: Writer = print,
    progress: bool | None = None,
) -> TrainingRun:
    """Train the fraud model with the gradient guard on, and report.

    Parameters
    ----------
    data_path : str or Path, optional
        A CSV of labelled transactions (see :func:`gradproof.models.load_csv`);
        by default `n_transactions` synthetic ones.
    n_transactions : int, optional
        How many synthetic transactions to draw.
    epochs : int, optional
        Passes over the training split.
    guard_every : int, optional
        The guard checks the gradient at the first step and every this many.
    plant_bug : str, optional
        A bug to plant in the backward pass (one of :data:`gradproof.models.BUGS`).
    output : str or Path, optional
        Folder for the saved model and the learning curve, or, when the guard
        stops training, for the failing check's report (``guard-report.json``
        and ``guard-report.txt``).
    seed : int, optional
        Seed of the data, the initialisation, the shuffles and the dropout.
    write : callable, optional
        Where the report's lines go.
    progress : bool, optional
        Show a progress bar on stderr (by default only on a terminal).

    Returns
    -------
    TrainingRun
        The outcome; ``exit_code`` is 1 when the guard stopped training.

    Raises
    ------
    InputError
        If `plant_bug` is not one of :data:`gradproof.models.BUGS` (said
        before any data is read or drawn), or the CSV cannot be read.
    """
    if plant_bug is not None and plant_bug not in BUGS:
        known = ", ".join(repr(name) for name in BUGS)
        raise InputError(f"`plant_bug` {plant_bug!r} is not one of {known}.")
    data = (
        load_csv(data_path) if data_path is not None else make_payments(n_transactions, seed=seed)
    )
    train_data, val_data, test_data = split(data, seed=seed)
    source = str(data_path) if data_path is not None else "synthetic payments (make_payments)"
    write(
        f"Data: {data.n} transactions from {source}, {data.n_positive} frauds "
        f"({data.fraud_rate:.2%}); split {train_data.n} / {val_data.n} / {test_data.n} "
        "for training / validation / test."
    )
    net = FraudNetwork(sizes=(data.n_features, *HIDDEN, 1), l2=1e-4, keep_prob=0.9)
    if plant_bug is not None:
        net = net.with_bug(plant_bug)
        write(f"Planted bug in the backward pass: {plant_bug}.")
    config = TrainingConfig(epochs=epochs, seed=seed)
    steps_per_epoch = -(-train_data.n // config.batch_size)
    write(
        f"Network {' -> '.join(map(str, net.sizes))} (ReLU, sigmoid), L2 {net.l2:g}, dropout "
        f"keep_prob {net.keep_prob:g}; Adam, {epochs} epochs of {steps_per_epoch} steps; the "
        f"gradient guard checks {GUARD_BATCH} fixed examples at step 1 and every "
        f"{guard_every} steps."
    )
    watcher = _GuardedTraining(net, guard_every, seed, write)
    with Progress(epochs * steps_per_epoch, enabled=progress, label="training") as bar:
        try:
            result = train(net, train_data, val_data, config, callback=watcher.callback(bar))
        except GuardError as error:
            write("")
            write(f"The gradient guard stopped training at step {error.step}.")
            write(str(error))
            return TrainingRun(
                stopped=error,
                network=None,
                baseline=None,
                guard_summary=watcher.summary(),
                files=_save_failure(Path(output), error, write),
            )
    write(watcher.summary())
    baseline = logistic_baseline(train_data, val_data, config)
    network_metrics = evaluate(net, result.params, result.standardizer, test_data, result.threshold)
    baseline_metrics = evaluate(
        baseline.network, baseline.params, baseline.standardizer, test_data, baseline.threshold
    )
    write("")
    write(f"Test split ({test_data.n} transactions, {test_data.n_positive} frauds):")
    write(f"  network             {network_metrics}")
    write(f"  logistic regression {baseline_metrics}")
    checked_epochs = watcher.checked_epochs(steps_per_epoch)
    files = _save(
        Path(output), result, network_metrics, baseline_metrics, watcher, checked_epochs, write
    )
    return TrainingRun(
        stopped=None,
        network=network_metrics,
        baseline=baseline_metrics,
        guard_summary=watcher.summary(),
        files=files,
    )


class _GuardedTraining:
    """The training callback: advances the progress bar and runs the guard when it is due."""

    def __init__(self, net: FraudNetwork, every: int, seed: int, write: Writer) -> None:
        self.net = net
        self.every = every
        self.seed = seed
        self.write = write
        self.guard: GradientGuard | None = None
        self.steps_per_check: list[int] = []

    def _make_guard(self, batch: tuple[FloatArray, FloatArray, FloatArray]) -> GradientGuard:
        # The first batch, frozen: the guard compares the same function at every check.
        X, y, weights = (np.array(part[:GUARD_BATCH]) for part in batch)
        net = self.net
        return GradientGuard(
            lambda p: net.loss(p, X, y, sample_weight=weights),
            lambda p: net.gradients(p, X, y, sample_weight=weights),
            every=self.every,
            seed=self.seed,
        )

    def callback(self, bar: Progress) -> Callable[[int, dict[str, FloatArray], Any], None]:
        def on_step(step: int, params: dict[str, FloatArray], batch: Any) -> None:
            bar.advance()
            if self.guard is None:
                self.guard = self._make_guard(batch)
            result = self.guard(step, params)
            if result is not None:
                self.write(f"  gradient check: {_with_mode(self.guard.history[-1])}")

        return on_step

    def summary(self) -> str:
        if self.guard is None:
            return "The gradient guard did not run."
        return f"Gradient guard: {self.guard.summary()}"

    def checked_epochs(self, steps_per_epoch: int) -> list[float]:
        if self.guard is None:
            return []
        return [record.step / steps_per_epoch for record in self.guard.history]


def _with_mode(record: GuardRecord) -> str:
    """Return the record's line with the check's mode: ``passed (directional, 55 loss ...)``.

    A model of a thousand parameters is checked in random directions, not
    entry by entry: the line says so.
    """
    text = str(record)
    head, parenthesis, cost = text.rpartition(" (")
    if not parenthesis:
        return text
    return f"{head} ({record.result.mode}, {cost}"


def _save_failure(folder: Path, error: GuardError, write: Writer) -> tuple[Path, ...]:
    """Write the failing check's JSON and text reports to `folder`; say where."""
    from gradproof.report.json import write_json
    from gradproof.report.text import _headline, render_result

    folder.mkdir(parents=True, exist_ok=True)
    extra = {"command": "gradproof train", "step": error.step}
    report = write_json(error.result, folder / "guard-report.json", extra=extra)
    text = folder / "guard-report.txt"
    text.write_text(
        f"The gradient guard stopped training at step {error.step}.\n\n"
        f"{render_result(error.result)}\n\n{_headline(error.result)}\n",
        encoding="utf-8",
    )
    write(f"Saved the failing check's report: {report}, {text}")
    return (report, text)


def _save(
    folder: Path,
    result: TrainingResult,
    network: Metrics,
    baseline: Metrics,
    watcher: _GuardedTraining,
    checked_epochs: list[float],
    write: Writer,
) -> tuple[Path, ...]:
    """Write the model, its metrics and the learning curve; say where."""
    from gradproof.errors import BackendUnavailableError
    from gradproof.report.figures import plot_learning_curve

    folder.mkdir(parents=True, exist_ok=True)
    model = folder / "model.npz"
    arrays: dict[str, Any] = {
        "sizes": np.array(result.network.sizes),
        "mean": result.standardizer.mean,
        "scale": result.standardizer.scale,
        "threshold": np.array(result.threshold),
        **result.params,
    }
    np.savez(model, **arrays)
    metrics = folder / "metrics.json"
    metrics.write_text(
        json.dumps(
            {
                "network": network.to_dict(),
                "logistic_regression": baseline.to_dict(),
                "guard": [record.to_dict() for record in _history(watcher)],
            },
            indent=2,
        )
    )
    files = [model, metrics]
    history = result.history
    try:
        files.append(
            plot_learning_curve(
                folder / "learning_curve.png",
                train_loss=[h.train_loss for h in history],
                validation_loss=[h.val_loss for h in history],
                validation_pr_auc=[h.val_pr_auc for h in history],
                checked_epochs=checked_epochs,
                title="Fraud network, trained with gradient checks",
            )
        )
    except BackendUnavailableError as error:
        write(f"No learning curve: {error}")
    write("Saved: " + ", ".join(str(path) for path in files))
    return tuple(files)


def _history(watcher: _GuardedTraining) -> tuple[Any, ...]:
    return () if watcher.guard is None else watcher.guard.history
