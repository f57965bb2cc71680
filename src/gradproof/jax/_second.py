"""Second order: the first-order gradient as a function, checked like `fn` (Note [Second order])."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from gradproof.checking.options import CheckOptions
from gradproof.jax._arguments import _Arguments
from gradproof.jax._convert import _Array
from gradproof.jax._loss import SECOND_JVP_PREFIX, SECOND_PREFIX, _Along, _Loss, _Under
from gradproof.jax._merge import SECOND_FORWARD, SECOND_REVERSE, _Part
from gradproof.jax._outputs import _cotangents
from gradproof.jax._program import _Program
from gradproof.results import CheckResult


@dataclasses.dataclass
class _SecondOrder:
    """The gradient ``g(x) = VJP(fn)(x)(u)`` as a program, its analytic derivatives, its checks."""

    program: _Program
    weights: list[_Array]  # the cotangent w of g's outputs (one per differentiated leaf)
    reverse: list[_Array] | None  # VJP of g along w: reverse over reverse
    forward: tuple[list[_Array], list[float]] | None  # JVPs of <w, g>: forward over reverse

    @classmethod
    def set_up(
        cls,
        first: _Program,
        u: Sequence[_Array],
        rng: np.random.Generator,
        notes: list[str],
        modes: Sequence[str],
        batched: bool,
        batch_size: int | None,
    ) -> _SecondOrder | None:
        """Build, compile and test the gradient's program, and differentiate it once.

        None, with a note, when the gradient is not finite at the point.
        """
        arguments = first.arguments
        program = _Program(
            first.fn,
            arguments,
            first.has_aux,
            x64=first.x64,
            jit=first.jit,
            order=2,
            first=u,
        )
        weights = _cotangents(list(arguments.values), 1, rng)[0]
        values = program.differentiate("rev" in modes, "fwd" in modes, explicit=False, notes=notes)
        if not all(np.all(np.isfinite(v)) for v in values):
            # The first-order check reports the NaN or infinite gradient; the second order of a
            # gradient that is not finite has no finite differences to compare with.
            notes.append(
                "Second order was not checked: the first-order gradient is NaN or infinite at "
                "the point (see the reverse-mode report)."
            )
            return None
        program.set_up(values, weights, notes)
        if batched:
            program.set_up_batches(batch_size or 64, weights, notes)
        reverse = program.vjps([weights])[0] if "rev" in modes else None
        forward = program.jvps(weights, rng, notes) if "fwd" in modes else None
        return cls(program, weights, reverse, forward)

    def run(
        self,
        run: Callable[[_Loss, Any, Any, CheckOptions], CheckResult],
        arguments: _Arguments,
        checked: CheckOptions,
    ) -> list[_Part]:
        """Check reverse over reverse, then forward over reverse."""
        parts = []
        if self.reverse is not None:
            loss = _Loss(self.program, self.weights, _Under(arguments, SECOND_PREFIX))
            result = run(
                loss,
                {SECOND_PREFIX: arguments.container(self.reverse)},
                {SECOND_PREFIX: arguments.container(arguments.values)},
                checked,
            )
            parts.append(_Part(result, SECOND_REVERSE, SECOND_PREFIX, f"{SECOND_PREFIX}."))
        if self.forward is not None:
            tangents, jvps = self.forward
            loss = _Loss(self.program, self.weights, _Along(arguments, tangents, SECOND_JVP_PREFIX))
            result = run(
                loss,
                {SECOND_JVP_PREFIX: arguments.container([np.float64(v) for v in jvps])},
                {
                    SECOND_JVP_PREFIX: arguments.container(
                        [np.zeros((), d) for d in arguments.proxies]
                    )
                },
                checked.replace(mode="full"),
            )
            parts.append(_Part(result, SECOND_FORWARD, SECOND_JVP_PREFIX, f"{SECOND_JVP_PREFIX}."))
        return parts
