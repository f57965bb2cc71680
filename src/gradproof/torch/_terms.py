"""The combined loss: a sum of terms, each a function of its own copy of the parameters.

See Note [Checking a function of tensors] in the docstring of :mod:`gradproof.torch`.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from gradproof.torch._convert import Array

_CACHE_SIZE = 4096
"""Points whose projections are remembered (a few floats each)."""


def _key(arrays: Sequence[Array]) -> bytes:
    """Identify a point by a digest of its bytes: the cache holds digests, not copies."""
    digest = hashlib.blake2b(digest_size=16)
    for array in arrays:
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.digest()


class _Family:
    """Terms of the combined loss, each with its own copy of the parameters."""

    description: str
    aliases: list[list[str]]  # per term: the parameter blocks it reads
    display: dict[str, str]  # block alias -> the name shown in the report
    subjects: dict[str, str]  # block alias -> what its report is about (an input, a pair)
    section: str = ""  # the heading its reports come under ("": the main, reverse-mode check)
    base_points: list[list[Array]]  # per term: its blocks at the point
    base_values: list[float]  # per term: its value at the point

    def evaluate(self, requests: list[tuple[int, list[Array]]], batched: bool) -> list[float]:
        """Return the values of terms at moved points, given as ``(term, blocks)`` pairs."""
        raise NotImplementedError

    def gradient(self) -> dict[str, Array]:
        """Return the analytic gradient of every block at the point, from autograd."""
        raise NotImplementedError

    def batchable(self) -> Callable[[], None] | None:
        """Return a trial of the batched evaluation, or None if this family never batches."""
        return None


class _Combined:
    """The sum of the families' terms as one loss of numpy parameters (the aliases)."""

    def __init__(self, families: list[_Family]) -> None:
        self.families = families
        self.names = {alias: name for f in families for alias, name in f.display.items()}
        self.subjects = {
            f.display[alias]: (subject, f.section)
            for f in families
            for alias, subject in f.subjects.items()
        }  # the name shown -> (subject, section)
        self.base_bytes = [
            [[block.tobytes() for block in point] for point in f.base_points] for f in families
        ]

    def params(self) -> dict[str, Array]:
        return {
            alias: block.copy()
            for family in self.families
            for blocks, points in zip(family.aliases, family.base_points, strict=True)
            for alias, block in zip(blocks, points, strict=True)
        }

    def gradient(self, params: Mapping[str, Array]) -> dict[str, Array]:
        grads: dict[str, Array] = {}
        for family in self.families:
            grads.update(family.gradient())
        return grads

    def loss(self, params: Mapping[str, Array]) -> float:
        return float(self._totals([params], batched=False)[0])

    def loss_batch(self, stacked: Mapping[str, Array]) -> Array:
        count = len(next(iter(stacked.values())))
        rows = [{alias: values[b] for alias, values in stacked.items()} for b in range(count)]
        return self._totals(rows, batched=True)

    def _totals(self, rows: Sequence[Mapping[str, Array]], *, batched: bool) -> Array:
        terms = [[v for f in self.families for v in f.base_values] for _ in rows]
        offset = 0
        for family, base_bytes in zip(self.families, self.base_bytes, strict=True):
            requests: list[tuple[int, list[Array]]] = []
            where: list[tuple[int, int]] = []
            for b, row in enumerate(rows):
                for t, (blocks, base) in enumerate(zip(family.aliases, base_bytes, strict=True)):
                    point = [row[alias] for alias in blocks]
                    # Comparing bytes is the cheapest exact test; this runs per term and call.
                    if any(p.tobytes() != q for p, q in zip(point, base, strict=True)):
                        requests.append((t, point))
                        where.append((b, offset + t))
            if requests:
                for (b, i), value in zip(where, family.evaluate(requests, batched), strict=True):
                    terms[b][i] = value
            offset += len(family.aliases)
        return np.array([math.fsum(row) for row in terms])

    def trials(self) -> list[Callable[[], None]]:
        return [trial for f in self.families if (trial := f.batchable()) is not None]
