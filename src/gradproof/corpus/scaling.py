"""ReLU networks of any size, for measuring how checks scale, with wrong entries to plant.

Not part of :func:`gradproof.corpus.cases` (they are sized by the caller): the
scale benchmark (``benchmarks/scale.py``) and the strategy tests build them
with :func:`relu_network` and plant single wrong gradient entries with
:func:`plant_wrong_entries`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from gradproof._typing import FloatArray
from gradproof.corpus._ops import softplus

__all__ = ["ScaledNetwork", "plant_wrong_entries", "relu_network"]

Arrays = dict[str, FloatArray]


@dataclass(frozen=True, slots=True, kw_only=True)
class ScaledNetwork:
    """A ReLU network with a logistic loss, its hand-written gradient and a batched loss.

    Attributes
    ----------
    sizes : tuple of int
        Layer widths, inputs first, ending in 1 (the logit).
    params : dict of str to ndarray
        ``W1, b1, ..., WL, bL`` with He-initialised weights and small biases.
    loss : callable ``loss(params) -> float``
        Mean logistic loss over the examples.
    grad : callable ``grad(params) -> dict``
        Its hand-written backward pass.
    loss_batch : callable ``loss_batch(stacked) -> ndarray``
        The loss of a stack of parameter points (every array with a leading
        axis of ``B``), one value each, for ``check(loss_batch=...)``.
    """

    sizes: tuple[int, ...]
    params: Arrays
    loss: Callable[[Arrays], float]
    grad: Callable[[Arrays], Arrays]
    loss_batch: Callable[[Arrays], FloatArray]

    @property
    def n_params(self) -> int:
        """Number of parameter entries."""
        return sum(value.size for value in self.params.values())


def relu_network(sizes: Sequence[int], *, n_examples: int = 64, seed: int = 0) -> ScaledNetwork:
    """Build a ReLU network of the given layer sizes on random data.

    Parameters
    ----------
    sizes : sequence of int
        Inputs, hidden widths, and 1 output.
    n_examples : int, optional
        Examples the loss averages over.
    seed : int, optional
        Seed of the data and the weights.

    Returns
    -------
    ScaledNetwork
        The model at its initial point.

    Examples
    --------
    >>> import gradproof
    >>> net = relu_network((10, 20, 1))
    >>> net.n_params
    241
    >>> gradproof.check(net.loss, net.grad, net.params).passed
    True
    """
    rng = np.random.default_rng(seed)
    layers = len(sizes) - 1
    X = rng.standard_normal((sizes[0], n_examples))
    Y = (rng.random((1, n_examples)) < 0.5).astype(np.float64)
    params: Arrays = {}
    for layer in range(1, layers + 1):
        fan_in = sizes[layer - 1]
        params[f"W{layer}"] = rng.standard_normal((sizes[layer], fan_in)) * np.sqrt(2.0 / fan_in)
        params[f"b{layer}"] = 0.1 * rng.standard_normal((sizes[layer], 1))

    def forward(p: Arrays) -> tuple[Any, list[Any], list[Any]]:
        activations, logits = [X], []
        for layer in range(1, layers + 1):
            z = p[f"W{layer}"] @ activations[-1] + p[f"b{layer}"]
            logits.append(z)
            activations.append(np.maximum(z, 0.0) if layer < layers else z)
        return activations[-1], activations, logits

    def loss(p: Arrays) -> float:
        z = forward(p)[0]
        return float(np.mean(softplus(z) - Y * z))

    def loss_batch(p: Arrays) -> FloatArray:
        z = forward(p)[0]  # (B, 1, m): numpy's matmul broadcasts the stacked weights
        values: FloatArray = np.mean(softplus(z) - Y * z, axis=(-2, -1))
        return values

    def grad(p: Arrays) -> Arrays:
        z, activations, logits = forward(p)
        dz = (1.0 / (1.0 + np.exp(-z)) - Y) / n_examples
        grads: Arrays = {}
        for layer in range(layers, 0, -1):
            grads[f"W{layer}"] = dz @ activations[layer - 1].T
            grads[f"b{layer}"] = dz.sum(axis=1, keepdims=True)
            if layer > 1:
                dz = (p[f"W{layer}"].T @ dz) * (logits[layer - 2] > 0)
        return {name: grads[name] for name in params}

    return ScaledNetwork(
        sizes=tuple(sizes), params=params, loss=loss, grad=grad, loss_batch=loss_batch
    )


def plant_wrong_entries(
    gradients: Arrays, name: str, count: int, *, seed: int = 0
) -> tuple[Arrays, npt.NDArray[np.intp]]:
    """Return a copy of `gradients` with `count` entries of one tensor made wrong.

    Each chosen entry is moved by the tensor's mean absolute gradient entry,
    up or down at random: an error as large as a typical entry.

    Parameters
    ----------
    gradients : dict of str to ndarray
        Correct gradients.
    name : str
        The tensor to plant the errors in.
    count : int
        How many distinct entries to make wrong.
    seed : int, optional
        Seed of the choice.

    Returns
    -------
    wrong : dict of str to ndarray
        The gradients with the planted errors (the input is not modified).
    indices : ndarray of int
        The flat (row-major) positions of the wrong entries within `name`, sorted.
    """
    rng = np.random.default_rng(seed)
    wrong = {key: value.copy() for key, value in gradients.items()}
    target = wrong[name]
    indices = np.sort(rng.choice(target.size, size=count, replace=False)).astype(np.intp)
    typical = float(np.mean(np.abs(target)))
    target.flat[indices] += typical * rng.choice([-1.0, 1.0], size=count)
    return wrong, indices
