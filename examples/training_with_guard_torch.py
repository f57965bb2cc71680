"""Guard a PyTorch training loop: a custom autograd Function with a wrong backward is caught.

A small fraud classifier uses a custom ``torch.autograd.Function`` for its activation (Swish,
``x * sigmoid(x)``) and ``nn.Dropout``. A ``TorchGradientGuard`` checks the module's
parameter gradients every 100 steps on 32 fixed examples, with dropout frozen by its seed.
The script trains twice: with a correct backward, every check passes; with a backward that
forgets the product rule, the guard stops training at its first check, at step 0. Then it
trains the correct model with PyTorch Lightning, with ``GradientGuardCallback``.

Run it with ``python examples/training_with_guard_torch.py``.
"""

from __future__ import annotations

import logging
import warnings

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from gradproof.guard import GradientGuardCallback, GuardError, TorchGradientGuard
from gradproof.models import make_payments

STEPS = 200
EVERY = 100
BATCH = 64
GUARD_BATCH = 32


# --8<-- [start:model]
class Swish(torch.autograd.Function):
    """``x * sigmoid(x)``, with its backward written by hand."""

    @staticmethod
    def forward(ctx, x):
        """Return ``x * sigmoid(x)``."""
        ctx.save_for_backward(x)
        return x * torch.sigmoid(x)

    @staticmethod
    def backward(ctx, grad_output):
        """Return ``grad_output`` times the derivative, by the product rule: ``s + x s'``."""
        (x,) = ctx.saved_tensors
        s = torch.sigmoid(x)
        return grad_output * (s + x * s * (1 - s))


class SwishWrong(Swish):
    """The same forward, with a backward that forgets one term of the product rule."""

    @staticmethod
    def backward(ctx, grad_output):
        """Return ``grad_output`` times ``s``: the ``x s'`` term is missing (the bug)."""
        (x,) = ctx.saved_tensors
        return grad_output * torch.sigmoid(x)


class Classifier(nn.Module):
    """LINEAR -> SWISH -> DROPOUT -> LINEAR, one logit per example."""

    def __init__(self, activation: type[torch.autograd.Function]) -> None:
        super().__init__()
        self.hidden = nn.Linear(14, 8)
        self.activation = activation
        self.dropout = nn.Dropout(0.2)
        self.out = nn.Linear(8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return one logit per example."""
        return self.out(self.dropout(self.activation.apply(self.hidden(x)))).squeeze(-1)


# --8<-- [end:model]


def load_data() -> tuple[torch.Tensor, torch.Tensor]:
    """Return 4000 synthetic payments, standardised, and their labels (1.0 for fraud)."""
    data = make_payments(4000, seed=0)
    X = torch.tensor(data.X, dtype=torch.float32)
    return (X - X.mean(0)) / X.std(0), torch.tensor(data.y, dtype=torch.float32)


def guard_batch(X: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Return the guard's fixed batch: 4 frauds and 28 other payments, so both labels."""
    rows = torch.cat([torch.nonzero(y == 1)[:4, 0], torch.nonzero(y == 0)[: GUARD_BATCH - 4, 0]])
    return X[rows], y[rows]


# --8<-- [start:loop]
def train(activation: type[torch.autograd.Function], X: torch.Tensor, y: torch.Tensor) -> None:
    """Train a Classifier with Adam, guarded every EVERY steps; print each check."""
    torch.manual_seed(0)
    model = Classifier(activation)
    loss_fn = nn.BCEWithLogitsLoss()
    X_guard, y_guard = guard_batch(X, y)
    # The target follows the output's dtype, so that the guard can check in float64.
    guard = TorchGradientGuard(
        model, X_guard, lambda out: loss_fn(out, y_guard.to(out.dtype)), every=EVERY
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for step in range(STEPS):
        rows = torch.arange(step * BATCH, (step + 1) * BATCH) % len(X)
        optimizer.zero_grad()
        loss = loss_fn(model(X[rows]), y[rows])
        loss.backward()
        optimizer.step()
        if guard(step) is not None:  # a check ran (and did not stop training)
            record = guard.history[-1]
            print(
                f"  step {step:3d}  batch loss {loss.item():.3f}  "
                f"check: {record.verdict.value} ({record.n_evals} loss evaluations)"
            )


# --8<-- [end:loop]


# --8<-- [start:lightning]
class FraudModule(L.LightningModule):
    """The Classifier as a LightningModule."""

    def __init__(self, activation: type[torch.autograd.Function]) -> None:
        super().__init__()
        self.model = Classifier(activation)
        self.loss_fn = nn.BCEWithLogitsLoss()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return one logit per example."""
        return self.model(x)

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        """Return the loss on one batch."""
        x, y = batch
        return self.loss_fn(self(x), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """Return Adam, as in the plain loop."""
        return torch.optim.Adam(self.parameters(), lr=1e-2)


def train_lightning(X: torch.Tensor, y: torch.Tensor) -> None:
    """Train a FraudModule with Lightning, guarded by GradientGuardCallback."""
    torch.manual_seed(0)
    loss_fn = nn.BCEWithLogitsLoss()
    X_guard, y_guard = guard_batch(X, y)
    callback = GradientGuardCallback(
        X_guard, lambda out: loss_fn(out, y_guard.to(out.dtype)), every=EVERY
    )
    trainer = L.Trainer(
        max_steps=STEPS,
        callbacks=[callback],
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    loader = DataLoader(TensorDataset(X, y), batch_size=BATCH)
    with warnings.catch_warnings():  # Lightning's advice on data loaders and its own deprecations
        warnings.simplefilter("ignore")
        trainer.fit(FraudModule(Swish), loader)
    for record in callback.history:
        verdict = f"{record.verdict.value} ({record.n_evals} loss evaluations)"
        print(f"  global step {record.step:3d}  check: {verdict}")


# --8<-- [end:lightning]


def main() -> None:
    """Train with the correct Swish, then the wrong one, then with Lightning."""
    torch.set_num_threads(1)  # a model this small trains faster on one thread
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # no banner on stderr
    X, y = load_data()
    print("1. A PyTorch loop, the correct backward")
    train(Swish, X, y)
    print("\n2. The backward that forgets a term")
    # --8<-- [start:stop]
    try:
        train(SwishWrong, X, y)
    except GuardError as error:
        print(f"  GuardError: training stopped at step {error.step}. From its report:")
        for name in error.result.suspects:
            report = error.result[name]
            print(f"    {name}: {report.diagnosis.summary}")
    # --8<-- [end:stop]
    print("\n3. Lightning, the correct backward")
    train_lightning(X, y)


if __name__ == "__main__":
    main()
