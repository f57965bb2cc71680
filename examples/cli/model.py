"""A model to check from the command line: ``gradproof check examples/cli/model.py ...``.

A two-layer network with softplus hidden units and a squared-error loss. Its gradient function
``grad`` has an off-by-one in a loop: the last hidden unit's weights get no gradient.
``grad_fixed`` is the corrected version, and ``abs_loss``/``abs_grad`` a loss with kinks.
"""

from __future__ import annotations

import numpy as np

_rng = np.random.default_rng(3)
X = _rng.normal(size=(30, 5))
y = np.sin(X[:, 0]) + 0.5 * X[:, 1]
HIDDEN = 6


def params() -> dict[str, np.ndarray]:
    """Return the point to check at (``--params params``)."""
    rng = np.random.default_rng(4)
    return {
        "W1": rng.normal(size=(5, HIDDEN)) / 2,
        "b1": np.zeros(HIDDEN),
        "w2": rng.normal(size=HIDDEN),
    }


def _hidden(p: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    z = X @ p["W1"] + p["b1"]
    return z, np.logaddexp(0.0, z)  # softplus


def loss(p: dict[str, np.ndarray]) -> float:
    """Return half the mean squared error."""
    _, h = _hidden(p)
    return float(0.5 * np.mean((h @ p["w2"] - y) ** 2))


def _grad(p: dict[str, np.ndarray], units: int) -> dict[str, np.ndarray]:
    z, h = _hidden(p)
    r = (h @ p["w2"] - y) / len(X)
    dz = np.outer(r, p["w2"]) / (1.0 + np.exp(-z))  # softplus' = sigmoid
    dW1 = np.zeros_like(p["W1"])
    for j in range(units):  # one hidden unit at a time
        dW1[:, j] = X.T @ dz[:, j]
    return {"W1": dW1, "b1": dz.sum(axis=0), "w2": h.T @ r}


def grad(p: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Return the gradient, with an off-by-one: the loop stops one unit short."""
    return _grad(p, HIDDEN - 1)


def grad_fixed(p: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Return the gradient, every unit included."""
    return _grad(p, HIDDEN)


def abs_loss(p: dict[str, np.ndarray]) -> float:
    """Return an L1 penalty, whose derivative has a kink at 0."""
    return float(np.sum(np.abs(p["W1"])))


def abs_grad(p: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Return the sign of each weight (0 at 0, a valid subgradient)."""
    return {"W1": np.sign(p["W1"])}


def sparse_params() -> dict[str, np.ndarray]:
    """Return weights of which some are exactly 0, where |w| has its kink."""
    W1 = params()["W1"]
    W1[:, ::2] = 0.0
    return {"W1": W1}
