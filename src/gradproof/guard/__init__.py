"""Guard a training loop: check the hand-written gradients every few steps, on a fixed batch.

Gradient checking is far too slow to run at every iteration, so the guard
runs it now and then: every `every` steps, at chosen steps, and at the first
call. Each check uses a small fixed batch and re-seeds the random generators
before every evaluation, so dropout does not break it. A wrong gradient stops
training with the full report (:class:`GuardError`), or warns, as chosen.

- :class:`GradientGuard`: a numpy model with a hand-written ``loss`` and ``grad``.
- :class:`TorchGradientGuard`: a PyTorch ``nn.Module`` (custom autograd
  Functions included), through :func:`gradproof.torch.check_module`.
- ``GradientGuardCallback``: the same as a PyTorch Lightning callback,
  available when ``lightning`` (or ``pytorch_lightning``) is installed;
  without it, accessing the name raises
  :class:`~gradproof.errors.BackendUnavailableError`. It is left out of
  ``__all__`` so that ``from gradproof.guard import *`` works without Lightning.

Importing this module imports neither torch nor Lightning.

Examples
--------
>>> import numpy as np
>>> from gradproof.guard import GradientGuard
>>> loss = lambda w: float(np.sum(w**2))
>>> guard = GradientGuard(loss, lambda w: 2 * w, every=100)
>>> w = np.array([1.0, -2.0, 3.0])
>>> for step in range(300):
...     w = w - 0.001 * 2 * w
...     _ = guard(step, w)
>>> [str(record.verdict) for record in guard.history]
['pass', 'pass', 'pass']
"""

from __future__ import annotations

from typing import Any

from gradproof.guard._core import DEFAULT_CHECK_OPTIONS, DEFAULT_EVERY, ON_FAILURE
from gradproof.guard._numpy import GradientGuard
from gradproof.guard._records import GuardError, GuardRecord
from gradproof.guard._torch import TORCH_OPTIONS, TorchGradientGuard

__all__ = [
    "DEFAULT_CHECK_OPTIONS",
    "DEFAULT_EVERY",
    "ON_FAILURE",
    "TORCH_OPTIONS",
    "GradientGuard",
    "GuardError",
    "GuardRecord",
    "TorchGradientGuard",
]


def __getattr__(name: str) -> Any:
    if name == "GradientGuardCallback":
        from gradproof.guard._lightning import callback_class

        return callback_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), "GradientGuardCallback"])
