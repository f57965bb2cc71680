"""The numpy side: the loss that gradproof.check calls, at points or along tangents."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from gradproof.jax._arguments import _Arguments
from gradproof.jax._convert import _Array
from gradproof.jax._program import _Program

JVP_PREFIX = "jvp"
"""Forward-mode reports are named ``jvp.<leaf>``, e.g. ``jvp.w`` (Note [Forward mode])."""
SECOND_PREFIX = "vjp_of_vjp"
"""Second-order reverse-mode reports are named ``vjp_of_vjp.<leaf>`` (Note [Second order])."""
SECOND_JVP_PREFIX = "jvp_of_vjp"
"""Second-order forward-mode reports are named ``jvp_of_vjp.<leaf>`` (Note [Second order])."""


class _Loss:
    """``loss(params)`` and ``loss.batch(stacked)`` for gradproof.check."""

    def __init__(
        self,
        program: _Program,
        cotangent: Sequence[_Array],
        points: Callable[[Any], list[_Array]],
    ) -> None:
        self.program = program
        self.cotangent = list(cotangent)
        self.points = points

    def __call__(self, params: Any) -> _Array:
        return self.program.value(self.points(params), self.cotangent)

    def batch(self, params: Any) -> _Array:
        """Return the loss at every stacked point (leaves with a leading axis ``B``)."""
        return self.program.batch(self.points(params), self.cotangent)


class _Under:
    """The leaves from gradproof's container, where they sit under one key (``jacobian_row_0``)."""

    def __init__(self, arguments: _Arguments, prefix: str) -> None:
        self.arguments = arguments
        self.prefix = prefix

    def __call__(self, params: Any) -> list[_Array]:
        return self.arguments.extract(params[self.prefix])


class _Along:
    """The leaves at ``x0 + t_k v_k`` from gradproof's container of ``t`` (Note [Forward mode])."""

    def __init__(
        self, arguments: _Arguments, tangents: list[_Array], prefix: str = JVP_PREFIX
    ) -> None:
        self.arguments = arguments
        self.base = [v.astype(np.float64) for v in arguments.values]
        self.tangents = tangents
        self.prefix = prefix

    def __call__(self, params: Any) -> list[_Array]:
        steps = self.arguments.extract(params[self.prefix])
        out = []
        for t, base, tangent in zip(steps, self.base, self.tangents, strict=True):
            t = np.asarray(t)
            # One t per point: () for one point, (B,) for a batch of them.
            shaped = t.astype(np.float64).reshape(t.shape + (1,) * base.ndim)
            out.append((base + shaped * tangent).astype(t.dtype))
        return out
