"""The gradient guard as a PyTorch Lightning callback, built when Lightning is importable.

Note [A callback class made on demand]
    Lightning accepts only subclasses of its own ``Callback``, so the class
    cannot exist before Lightning is imported, and ``import gradproof.guard``
    must not import it (seconds, and torch with it). :func:`callback_class`
    builds the subclass on first use, once per ``Callback`` base: that of
    ``lightning.pytorch`` when the ``lightning`` package is installed, else
    that of the older ``pytorch_lightning`` package.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from typing import Any

from gradproof.errors import BackendUnavailableError, InputError
from gradproof.guard._core import _Guard
from gradproof.guard._records import GuardError, GuardRecord
from gradproof.guard._torch import TORCH_OPTIONS
from gradproof.results import CheckResult

__all__ = ["callback_class"]

_FRAMEWORKS = ("lightning.pytorch", "pytorch_lightning")
"""Where a Lightning ``Callback`` can come from, preferred first."""

_CLASSES: dict[type[Any], type[Any]] = {}
"""The callback class made for each ``Callback`` base, so that the class is made once."""


def callback_class() -> type[Any]:
    """Return ``GradientGuardCallback``, made for the installed Lightning.

    Returns
    -------
    type
        A subclass of Lightning's ``Callback`` (Note [A callback class made on demand]).

    Raises
    ------
    BackendUnavailableError
        If neither ``lightning`` nor ``pytorch_lightning`` can be imported.
    """
    errors: list[ImportError] = []
    for name in _FRAMEWORKS:
        try:
            framework = importlib.import_module(name)
        except ImportError as error:
            errors.append(error)
            continue
        base: type[Any] = framework.Callback
        if base not in _CLASSES:
            _CLASSES[base] = _make_class(base, framework.__name__.partition(".")[0])
        return _CLASSES[base]
    raise BackendUnavailableError(
        "`GradientGuardCallback` is a PyTorch Lightning callback, but neither `lightning` nor "
        "`pytorch_lightning` can be imported. Install Lightning with `pip install lightning`, or "
        "call `gradproof.guard.TorchGradientGuard` from a plain PyTorch training loop.",
        framework="lightning",
    ) from errors[0]


def _make_class(base: type[Any], package: str) -> type[Any]:
    """Make the callback class on top of `base` (Note [A callback class made on demand])."""

    class GradientGuardCallback(base):  # type: ignore[misc]
        """Check a LightningModule's gradients every few global steps, on a fixed batch.

        After every training batch (``on_train_batch_end``), when a check is
        due at ``trainer.global_step``, it runs
        :func:`gradproof.torch.check_module` on the LightningModule's current
        parameters with the fixed batch (moved to the module's device).

        Parameters
        ----------
        inputs : torch.Tensor, or tuple or list of arguments
            A small fixed batch: ``pl_module(*inputs)``.
        loss_fn : callable ``loss_fn(output) -> scalar tensor``
            Turns the module's output into the loss.
        every, at, first, seed, allow_inconclusive
            As for :class:`gradproof.guard.GradientGuard`; steps are
            ``trainer.global_step``, which is 1 after the first optimiser step.
        on_failure : {"stop", "warn"}
            ``"stop"`` (default) sets ``trainer.should_stop = True`` and raises
            :class:`~gradproof.guard.GuardError`, which Lightning re-raises
            from ``trainer.fit`` after its teardown; ``"warn"`` emits a
            :class:`~gradproof.errors.GradproofWarning` and training continues.
        **check_options
            Passed to :func:`gradproof.torch.check_module`.

        Attributes
        ----------
        history : tuple of GuardRecord
            The checks run so far.

        Examples
        --------
        >>> import lightning as L  # doctest: +SKIP
        >>> guard = GradientGuardCallback((x,), lambda out: out.pow(2).mean(), every=50)
        >>> L.Trainer(max_steps=1000, callbacks=[guard]).fit(model, loader)  # doctest: +SKIP
        >>> print(guard.summary())  # doctest: +SKIP
        21 checks at steps 1, 50, 100, ..., 950, 1000: all passed (3.2 s, 4.1% of training time)
        """

        framework = package
        """The package the callback was made for: ``"lightning"`` or ``"pytorch_lightning"``."""

        def __init__(
            self,
            inputs: Any,
            loss_fn: Callable[[Any], Any],
            *,
            every: int | None = None,
            at: Iterable[int] | None = None,
            first: bool | None = None,
            on_failure: str = "stop",
            seed: int | None = 0,
            allow_inconclusive: bool = True,
            **check_options: Any,
        ) -> None:
            super().__init__()
            if not callable(loss_fn):
                raise InputError(
                    f"`loss_fn` must turn the module's output into a scalar loss; got a "
                    f"{type(loss_fn).__name__}. Pass e.g. `lambda out: out.pow(2).mean()`."
                )
            self.inputs = inputs
            self.loss_fn = loss_fn
            self.guard = _Guard(
                every=every,
                at=at,
                first=first,
                on_failure=on_failure,
                seed=seed,
                allow_inconclusive=allow_inconclusive,
                check_options=check_options,
                known_options=TORCH_OPTIONS,
                owner="GradientGuardCallback",
            )

        @property
        def history(self) -> tuple[GuardRecord, ...]:
            """The checks run so far, oldest first."""
            return self.guard.history

        def summary(self) -> str:
            """Return one line on the checks so far (see ``GradientGuard.summary``)."""
            return self.guard.summary()

        def on_train_batch_end(
            self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
        ) -> None:
            """Run a check at ``trainer.global_step`` if one is due."""
            from gradproof.torch import check_module

            def run() -> CheckResult:
                device = getattr(pl_module, "device", None)  # a LightningModule's
                inputs = self.inputs if device is None else _to_device(self.inputs, device)
                return check_module(
                    pl_module,
                    inputs,
                    self.loss_fn,
                    seed=self.guard.seed,
                    **self.guard.check_options,
                )

            try:
                self.guard._step(trainer.global_step, run, stacklevel=2)
            except GuardError:
                trainer.should_stop = True
                raise

    GradientGuardCallback.__module__ = "gradproof.guard"
    GradientGuardCallback.__qualname__ = "GradientGuardCallback"
    return GradientGuardCallback


def _to_device(inputs: Any, device: Any) -> Any:
    """Move the tensors of a batch (a tensor, or a tuple or list of arguments) to `device`."""
    import torch

    if isinstance(inputs, torch.Tensor):
        return inputs.to(device)
    if isinstance(inputs, (tuple, list)):
        return type(inputs)(
            item.to(device) if isinstance(item, torch.Tensor) else item for item in inputs
        )
    return inputs
