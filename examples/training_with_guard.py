"""Guard a numpy training loop: check the hand-written backward every K steps, dropout frozen.

A small fraud classifier (one ReLU hidden layer with inverted dropout, a sigmoid output) is
trained by mini-batch gradient descent on synthetic payments. Dropout switches on after a
warm-up. A ``GradientGuard`` checks the backward pass every 50 steps on 32 fixed examples.
The script trains five times:

1. with a correct backward pass: every check passes;
2. with a "refactored" backward pass that forgets the dropout mask: the bug cannot show while
   dropout is off, and the guard stops training at its first check after dropout switches on;
3. the same with ``on_failure="warn"``: each failed check warns, and training goes on;
4. the same with ``mode="directional"``: checks ten times cheaper, and the bug is still caught;
5. with the guard's seed turned off, to show why the guard re-seeds the random generators.

It ends with what the checks cost, counted in forward passes. Run it with
``python examples/training_with_guard.py``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from gradproof import NondeterministicLossError
from gradproof.errors import GradproofWarning
from gradproof.guard import GradientGuard, GuardError, GuardRecord
from gradproof.models import make_payments

Params = dict[str, np.ndarray]
Cache = dict[str, np.ndarray]
Backward = Callable[[Params, Cache], Params]

HIDDEN = 16  # hidden units
KEEP_PROB = 0.8  # dropout's keep probability, once dropout is on
DROPOUT_FROM = 120  # the step at which dropout switches on, after a warm-up without it
BATCH = 64  # examples per training step
STEPS = 400  # training steps
LEARNING_RATE = 0.5
GUARD_BATCH = 32  # examples in the guard's fixed batch
EVERY = 50  # steps between two checks


# --8<-- [start:model]
class TwoLayerNet:
    """LINEAR -> RELU -> DROPOUT -> LINEAR -> SIGMOID, with a hand-written backward pass.

    Parameters
    ----------
    backward : callable ``backward(params, cache) -> gradients``
        The backward pass.
    """

    def __init__(self, backward: Backward) -> None:
        self.backward = backward
        self.keep_prob = 1.0  # the training loop sets it at every step
        self.forward_passes = 0

    def forward(self, params: Params, X: np.ndarray, y: np.ndarray) -> tuple[float, Cache]:
        """Return the mean logistic cost on a batch, and what the backward pass needs."""
        self.forward_passes += 1
        Z1 = X @ params["W1"] + params["b1"]
        # Inverted dropout. The mask comes from numpy's global generator, which the guard
        # re-seeds before every evaluation: every loss and gradient it computes sees one mask.
        D1 = np.random.random(Z1.shape) < self.keep_prob  # noqa: NPY002
        A1 = np.maximum(Z1, 0.0) * D1 / self.keep_prob
        z2 = A1 @ params["W2"] + params["b2"]
        cost = float(np.mean(np.logaddexp(0.0, z2) - y * z2))  # log loss of sigmoid(z2)
        cache = {"X": X, "y": y, "Z1": Z1, "D1": D1, "A1": A1, "z2": z2}
        return cost, {**cache, "keep_prob": np.asarray(self.keep_prob)}

    def loss(self, params: Params, X: np.ndarray, y: np.ndarray) -> float:
        """Return the cost on a batch."""
        return self.forward(params, X, y)[0]

    def gradients(self, params: Params, X: np.ndarray, y: np.ndarray) -> Params:
        """Return the gradient of the cost on a batch, from the backward pass."""
        return self.backward(params, self.forward(params, X, y)[1])


def backward(params: Params, cache: Cache) -> Params:
    """Return the gradients of the cost (the correct backward pass)."""
    dz2 = (0.5 * (1.0 + np.tanh(cache["z2"] / 2)) - cache["y"]) / len(cache["y"])
    dA1 = np.outer(dz2, params["W2"]) * cache["D1"] / cache["keep_prob"]
    dZ1 = dA1 * (cache["Z1"] > 0)
    return {
        "W1": cache["X"].T @ dZ1,
        "b1": dZ1.sum(axis=0),
        "W2": cache["A1"].T @ dz2,
        "b2": dz2.sum(keepdims=True),
    }


def backward_refactored(params: Params, cache: Cache) -> Params:
    """Return the gradients of the cost, "simplified": the dropout scale folded into W2."""
    dz2 = (0.5 * (1.0 + np.tanh(cache["z2"] / 2)) - cache["y"]) / len(cache["y"])
    dZ1 = np.outer(dz2, params["W2"] / cache["keep_prob"]) * (cache["Z1"] > 0)  # bug: no D1
    return {
        "W1": cache["X"].T @ dZ1,
        "b1": dZ1.sum(axis=0),
        "W2": cache["A1"].T @ dz2,
        "b2": dz2.sum(keepdims=True),
    }


# --8<-- [end:model]


def init_params(n_features: int) -> Params:
    """Return He-initialised parameters (a private generator: the global one stays untouched)."""
    rng = np.random.default_rng(0)
    return {
        "W1": rng.standard_normal((n_features, HIDDEN)) * np.sqrt(2.0 / n_features),
        "b1": np.full(HIDDEN, 0.01),
        "W2": rng.standard_normal(HIDDEN) * np.sqrt(2.0 / HIDDEN),
        "b2": np.zeros(1),
    }


def load_data() -> tuple[np.ndarray, np.ndarray]:
    """Return 4000 synthetic payments, standardised, and their labels (1 for fraud)."""
    data = make_payments(4000, seed=0)
    X = (data.X - data.X.mean(axis=0)) / data.X.std(axis=0)
    return X, data.y.astype(np.float64)


# --8<-- [start:loop]
def train(net: TwoLayerNet, X: np.ndarray, y: np.ndarray, guard: GradientGuard) -> None:
    """Train `net` by mini-batch gradient descent, calling `guard` after every step."""
    params = init_params(X.shape[1])
    order = np.random.default_rng(1).permutation(len(X))
    np.random.seed(2)  # noqa: NPY002 - the training's own dropout masks
    costs = []
    for step in range(STEPS):
        net.keep_prob = 1.0 if step < DROPOUT_FROM else KEEP_PROB
        rows = order[(step * BATCH) % len(X) :][:BATCH]
        cost, cache = net.forward(params, X[rows], y[rows])
        grads = net.backward(params, cache)
        params = {name: value - LEARNING_RATE * grads[name] for name, value in params.items()}
        costs.append(cost)
        if guard(step, params) is not None:  # a check ran (and did not stop training)
            record = guard.history[-1]
            print(
                f"  step {step:3d}  keep_prob {net.keep_prob:.1f}  mean cost {np.mean(costs):.3f}"
                f"  check: {record.verdict.value} ({record.n_evals} loss evaluations)"
            )
            costs = []


# --8<-- [end:loop]


def show_failure(error: GuardError) -> None:
    """Print where the guard stopped training and the lines of its report that name the bug."""
    print(f"  GuardError: training stopped at step {error.step}. From its report:")
    names = tuple(f"  {name}: " for name in error.result.suspects)  # the diagnosis lines
    for line in str(error).splitlines():
        if line.startswith(("  parameter", *names)) or " WRONG " in line:
            print(f"  {line}")


def main() -> None:
    """Train five times: correct, wrong (stop, warn, directional), and without the seed."""
    X, y = load_data()
    # The guard's fixed batch: 4 frauds and 28 other payments, so that it holds both labels.
    rows = np.concatenate([np.flatnonzero(y == 1)[:4], np.flatnonzero(y == 0)[: GUARD_BATCH - 4]])
    X_guard, y_guard = X[rows], y[rows]

    # --8<-- [start:guard]
    def guarded(backward: Backward, **options: Any) -> tuple[TwoLayerNet, GradientGuard]:
        """Return a network and a guard that checks it on the fixed batch every EVERY steps."""
        net = TwoLayerNet(backward)
        guard = GradientGuard(
            lambda p: net.loss(p, X_guard, y_guard),
            lambda p: net.gradients(p, X_guard, y_guard),
            every=EVERY,
            **options,
        )
        return net, guard

    print(f"1. The correct backward pass, checked every {EVERY} steps")
    net, guard = guarded(backward)
    train(net, X, y, guard)
    # --8<-- [end:guard]
    full = guard.history
    full_passes = net.forward_passes - STEPS  # all but the training's own

    print("\n2. The refactored backward pass: the guard stops training")
    # --8<-- [start:stop]
    net, guard = guarded(backward_refactored)
    try:
        train(net, X, y, guard)
    except GuardError as error:
        show_failure(error)
    # --8<-- [end:stop]

    print('\n3. The same with on_failure="warn": training goes on')
    # --8<-- [start:warn]
    net, guard = guarded(backward_refactored, on_failure="warn")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", GradproofWarning)
        train(net, X, y, guard)
    failed = [record.step for record in guard.history if record.failed]
    print(f"  {len(caught)} warnings ({caught[0].category.__name__}), from the checks at {failed}")
    # --8<-- [end:warn]

    print('\n4. The same with mode="directional": cheaper checks')
    # --8<-- [start:directional]
    net, guard = guarded(backward_refactored, mode="directional")
    try:
        train(net, X, y, guard)
    except GuardError as error:
        print(
            f"  GuardError: training stopped at step {error.step}, wrong gradients "
            f"{', '.join(error.result.suspects)} ({error.result.n_evals} loss evaluations)"
        )
    # --8<-- [end:directional]
    directional = guard.history[:-1]  # the checks that passed

    print("\n5. The correct backward pass, with the guard's seed turned off (seed=None)")
    # --8<-- [start:noseed]
    net, guard = guarded(backward, seed=None)
    try:
        train(net, X, y, guard)
    except NondeterministicLossError as error:
        message = str(error)
        print(f"  NondeterministicLossError: {message.split(' (')[0]}.")
        print(f"  {message.rsplit('. ', 1)[1]}")
    # --8<-- [end:noseed]

    print("\n6. What the checks cost, counted in forward passes")
    report_cost(full, full_passes, directional)


def report_cost(
    full: tuple[GuardRecord, ...], guard_passes: int, directional: tuple[GuardRecord, ...]
) -> None:
    """Print the guard's forward passes next to the training's, and what they imply for K."""
    evaluations = sum(record.n_evals for record in full)
    per_check_gradients = (guard_passes - evaluations) // len(full)
    print(f"  training, run 1: {STEPS} steps, {STEPS} forward passes on {BATCH} examples")
    print(
        f"  guard, run 1: {len(full)} checks, {evaluations} loss evaluations + "
        f"{guard_passes - evaluations} gradient evaluations = {guard_passes} forward passes "
        f"on {GUARD_BATCH} examples"
    )
    ratio = guard_passes / STEPS
    print(
        f"  guard / training: {ratio:.1f} forward passes per training step "
        f"({ratio * GUARD_BATCH / BATCH:.1f} counted in examples)"
    )
    print("  forward passes per check, and the K that keeps the guard under 10% of the training's:")
    for name, records in (("full, run 1", full), ("directional, run 4", directional)):
        per_check = records[0].n_evals + per_check_gradients
        print(f"    {name:18s}  {per_check:3d} per check  every={per_check * 10}")


if __name__ == "__main__":
    main()
