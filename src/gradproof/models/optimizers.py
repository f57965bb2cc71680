"""Gradient-based optimisers as pure functions: plain gradient descent and Adam.

An optimiser holds only its hyperparameters. ``init(params)`` returns the
starting state and ``update(params, grads, state)`` returns new parameters and
a new state, never modifying its arguments, so a training loop can be replayed
or inspected at any step.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from gradproof._typing import FloatArray
from gradproof.errors import InputError

__all__ = ["OPTIMIZERS", "Adam", "GradientDescent", "Optimizer", "OptimizerState", "make_optimizer"]

Arrays = dict[str, FloatArray]

OPTIMIZERS: tuple[str, ...] = ("adam", "gd")
"""The names :func:`make_optimizer` accepts."""


@dataclass(frozen=True, slots=True, kw_only=True)
class OptimizerState:
    """An optimiser's memory between steps.

    Attributes
    ----------
    step : int
        Updates made so far.
    first, second : dict of str to numpy.ndarray
        Adam's moving averages of the gradients and of their squares (empty
        for gradient descent).
    """

    step: int = 0
    first: Arrays = field(default_factory=dict)
    second: Arrays = field(default_factory=dict)


class Optimizer(Protocol):
    """What the training loop needs of an optimiser."""

    def init(self, params: Mapping[str, FloatArray]) -> OptimizerState:
        """Return the state before the first step."""

    def update(
        self,
        params: Mapping[str, FloatArray],
        grads: Mapping[str, FloatArray],
        state: OptimizerState,
    ) -> tuple[Arrays, OptimizerState]:
        """Return the parameters after one step, and the new state."""


def _check_rate(learning_rate: float) -> None:
    if not (np.isfinite(learning_rate) and learning_rate > 0):
        raise InputError(f"`learning_rate` must be a positive number; got {learning_rate!r}.")


@dataclass(frozen=True, slots=True, kw_only=True)
class GradientDescent:
    """Plain gradient descent: ``theta <- theta - learning_rate * grad``.

    Parameters
    ----------
    learning_rate : float, default 0.1
        The step size.

    Examples
    --------
    >>> import numpy as np
    >>> gd = GradientDescent(learning_rate=0.5)
    >>> params = {"w": np.array([1.0])}
    >>> new, state = gd.update(params, {"w": np.array([2.0])}, gd.init(params))
    >>> new["w"].tolist(), state.step
    ([0.0], 1)
    """

    learning_rate: float = 0.1

    def __post_init__(self) -> None:
        _check_rate(self.learning_rate)

    def init(self, params: Mapping[str, FloatArray]) -> OptimizerState:
        """Return the state before the first step (a step count of 0)."""
        return OptimizerState()

    def update(
        self,
        params: Mapping[str, FloatArray],
        grads: Mapping[str, FloatArray],
        state: OptimizerState,
    ) -> tuple[Arrays, OptimizerState]:
        """Take one step; return new parameters and state (the arguments are not modified)."""
        new = {name: value - self.learning_rate * grads[name] for name, value in params.items()}
        return new, OptimizerState(step=state.step + 1)


@dataclass(frozen=True, slots=True, kw_only=True)
class Adam:
    """Adam: steps scaled by running moments of the gradient (Kingma and Ba 2015, Algorithm 1).

    Parameters
    ----------
    learning_rate : float, default 1e-3
        The step size (the paper's alpha).
    beta1, beta2 : float, default 0.9 and 0.999
        Decay rates of the first- and second-moment averages.
    eps : float, default 1e-8
        Added to the second moment's square root, against division by zero.

    Notes
    -----
    ``m <- beta1 m + (1 - beta1) g``, ``v <- beta2 v + (1 - beta2) g^2``, then
    ``theta <- theta - lr * m_hat / (sqrt(v_hat) + eps)`` with the bias-corrected
    ``m_hat = m / (1 - beta1^t)`` and ``v_hat = v / (1 - beta2^t)``.

    References
    ----------
    D. P. Kingma and J. Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015.

    Examples
    --------
    >>> import numpy as np
    >>> adam = Adam(learning_rate=0.1)
    >>> params = {"w": np.array([1.0])}
    >>> new, _ = adam.update(params, {"w": np.array([5.0])}, adam.init(params))
    >>> new["w"].round(6).tolist()  # the first step is about lr, whatever the gradient's scale
    [0.9]
    """

    learning_rate: float = 1e-3
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8

    def __post_init__(self) -> None:
        _check_rate(self.learning_rate)
        if not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1 and self.eps > 0):
            raise InputError(
                f"Adam needs 0 <= beta1, beta2 < 1 and eps > 0; got beta1={self.beta1}, "
                f"beta2={self.beta2}, eps={self.eps}."
            )

    def init(self, params: Mapping[str, FloatArray]) -> OptimizerState:
        """Return zero moments and a step count of 0."""
        zeros = {name: np.zeros_like(value) for name, value in params.items()}
        return OptimizerState(first=zeros, second=dict(zeros))

    def update(
        self,
        params: Mapping[str, FloatArray],
        grads: Mapping[str, FloatArray],
        state: OptimizerState,
    ) -> tuple[Arrays, OptimizerState]:
        """Take one step; return new parameters and state (the arguments are not modified)."""
        step = state.step + 1
        first, second, new = {}, {}, {}
        for name, value in params.items():
            g = grads[name]
            first[name] = self.beta1 * state.first[name] + (1 - self.beta1) * g
            second[name] = self.beta2 * state.second[name] + (1 - self.beta2) * g * g
            m_hat = first[name] / (1 - self.beta1**step)
            v_hat = second[name] / (1 - self.beta2**step)
            new[name] = value - self.learning_rate * m_hat / (np.sqrt(v_hat) + self.eps)
        return new, OptimizerState(step=step, first=first, second=second)


def make_optimizer(name: str, learning_rate: float | None = None) -> Optimizer:
    """Return the optimiser called `name`.

    Parameters
    ----------
    name : {"adam", "gd"}
        Adam, or plain gradient descent.
    learning_rate : float, optional
        The step size; by default 1e-3 for Adam and 0.1 for gradient descent.

    Returns
    -------
    Optimizer
        :class:`Adam` or :class:`GradientDescent`.

    Raises
    ------
    InputError
        If `name` is not one of :data:`OPTIMIZERS` or the rate is not positive.

    Examples
    --------
    >>> make_optimizer("gd")
    GradientDescent(learning_rate=0.1)
    """
    if name == "adam":
        return Adam() if learning_rate is None else Adam(learning_rate=learning_rate)
    if name == "gd":
        return (
            GradientDescent()
            if learning_rate is None
            else GradientDescent(learning_rate=learning_rate)
        )
    choices = ", ".join(repr(o) for o in OPTIMIZERS)
    raise InputError(f"`optimizer` must be one of {choices}; got {name!r}.")
