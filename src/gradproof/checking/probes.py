"""Directional probes: the loss along random signed directions, as coordinates of its own.

Note [Directional probes]
    A probe is a random direction ``v`` over a contiguous range ``S`` of one
    parameter tensor's entries. Along it the loss is ``phi(t) = f(x + t v)``,
    whose derivative at 0 is ``g . v``: one central difference (two
    evaluations) checks every entry of ``S`` at once. ``v_i = s_i u_i max(1,
    |x_i|)`` with random signs ``s_i`` and magnitudes ``u_i`` in [0.5, 1.5):
    a wrong entry always contributes ``u_i |error_i| >= |error_i| / 2``, and
    two opposite errors (a swap) cancel only if their weights happen to be
    equal.

    The probe's step is ``rel / sqrt(|S|)``, so the point moves about as far
    as a single-coordinate step would: the pre-activations of a ReLU network
    move as little as in a coordinate check, and kinks are crossed no more
    often. The tolerance is the error-aware one of the verdict pipeline,
    ``atol + rtol |g . v| + error bar``, on the probe's own derivative: it
    does not grow with the number of entries. A single wrong entry whose error
    is as large as a typical gradient entry changes ``g . v`` by about
    ``1 / sqrt(|S|)`` of its size, far above ``rtol`` in float64 for any
    realistic tensor.

    The weights of entry ``i`` come from a counter-based hash of the seed,
    the tensor, the draw and ``i`` itself (splitmix64), so a probe restricted
    to a sub-range has exactly the weights of the larger probe there: the
    derivatives of two halves add up to their parent's, which is what
    localisation exploits (:mod:`gradproof.localise`). Weights are computed
    on demand, in time proportional to the range, and never stored for the
    whole model.

    Probes are the coordinates of a :class:`ProbeFunction` ``F(t) = f(x + sum_j t_j v_j)``:
    the coordinate pipeline of :mod:`gradproof.checking.sweep` judges them exactly as
    it judges parameter entries, kink test and Richardson re-measurement
    included. A :class:`SubsetFunction` does the same for a few chosen
    parameter entries of a large model, so that judging them costs arrays of
    their number, not the model's.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from gradproof._typing import FloatArray
from gradproof.engine.evaluator import LossEvaluator
from gradproof.numerics.compare import scaled_norm

__all__ = [
    "Probe",
    "ProbeFunction",
    "SubsetFunction",
    "probe_analytic",
    "probe_weights",
    "rounding_bar",
]

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


@dataclass(frozen=True, slots=True)
class Probe:
    """A random signed direction over entries ``start:stop`` of the flat parameter vector.

    Attributes
    ----------
    leaf : int
        Index of the parameter tensor (in ``ParamTree.leaves``) the range lies in.
    start, stop : int
        The range of flat positions (within that tensor's span).
    draw : int
        Which of the tensor's random directions this is a part of.
    """

    leaf: int
    start: int
    stop: int
    draw: int

    @property
    def size(self) -> int:
        """Number of entries the probe moves."""
        return self.stop - self.start

    def halves(self) -> tuple[Probe, Probe]:
        """Split into the first and second half of the range, same direction."""
        middle = self.start + self.size // 2
        return (
            Probe(self.leaf, self.start, middle, self.draw),
            Probe(self.leaf, middle, self.stop, self.draw),
        )


def _splitmix(z: np.ndarray[Any, np.dtype[np.uint64]]) -> np.ndarray[Any, np.dtype[np.uint64]]:
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * _MIX1
        z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


def _key(seed: int, leaf: int, draw: int) -> np.uint64:
    parts = np.array([seed % 2**64, leaf, draw], dtype=np.uint64)
    key = np.uint64(0)
    for part in parts:
        with np.errstate(over="ignore"):
            key = _splitmix(np.array([key ^ part], dtype=np.uint64) + _GOLDEN)[0]
    return np.uint64(key)


def probe_weights(probe: Probe, x0: FloatArray, seed: int) -> FloatArray:
    """Return the probe's direction over its range (Note [Directional probes]).

    Parameters
    ----------
    probe : Probe
        The probe.
    x0 : ndarray of shape (n,)
        The point: each weight is scaled by ``max(1, |x_i|)``.
    seed : int
        The check's probe seed.

    Returns
    -------
    ndarray of shape (probe.size,)
        ``s_i u_i max(1, |x_i|)``, signs ``s_i`` and magnitudes ``u_i`` in
        [0.5, 1.5) drawn from a hash of the seed, tensor, draw and position.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.zeros(8)
    >>> whole = probe_weights(Probe(0, 0, 8, 0), x, seed=0)
    >>> part = probe_weights(Probe(0, 2, 5, 0), x, seed=0)
    >>> bool(np.array_equal(whole[2:5], part)), bool(np.all(np.abs(whole) >= 0.5))
    (True, True)
    """
    counter = np.arange(probe.start, probe.stop, dtype=np.uint64)
    with np.errstate(over="ignore"):
        bits = _splitmix(counter * _GOLDEN + _key(seed, probe.leaf, probe.draw))
    sign = np.where(bits & np.uint64(1), -1.0, 1.0)
    magnitude = 0.5 + (bits >> np.uint64(11)).astype(np.float64) * 2.0**-53
    return sign * magnitude * np.maximum(1.0, np.abs(x0[probe.start : probe.stop]))


def probe_analytic(
    probes: Sequence[Probe], gradient: FloatArray, x0: FloatArray, seed: int
) -> FloatArray:
    """Return each probe's analytic directional derivative ``g . v``."""
    with np.errstate(over="ignore", invalid="ignore"):  # an overflow is judged, not warned of
        return np.array(
            [float(gradient[p.start : p.stop] @ probe_weights(p, x0, seed)) for p in probes]
        )


def rounding_bar(
    probes: Sequence[Probe],
    gradient: FloatArray,
    x0: FloatArray,
    spacing: FloatArray,
    steps: FloatArray,
) -> FloatArray:
    """Return the error bar that rounding the probe's points adds to its difference.

    Each point ``x + t v`` is rounded to the working dtype, by up to half a
    spacing per entry; the difference of the two points of a central
    difference then moves ``g . v`` by ``g . (r_plus - r_minus) / (2 t)``. The
    rounding errors of different entries are independent, so four standard
    deviations of that sum bound it: negligible in float64, a few per cent of
    ``rtol`` when a float32 loss is differenced in float32.
    """
    bars = np.empty(len(probes))
    for j, p in enumerate(probes):
        g = gradient[p.start : p.stop] * spacing[p.start : p.stop]
        bars[j] = 4.0 * scaled_norm(g) / math.sqrt(6.0) / (2.0 * steps[j])
    return bars


class _Buffers(threading.local):
    """Working copies of the point, one set per thread: an executor's threads share the function."""

    def __init__(self, x0: FloatArray) -> None:
        self.x0 = x0
        self._work: FloatArray | None = None
        self._stack: FloatArray | None = None

    def work(self) -> FloatArray:
        if self._work is None:
            self._work = self.x0.copy()
        return self._work

    def stack(self, rows: int) -> FloatArray:
        if self._stack is None or self._stack.shape[0] < rows:
            self._stack = np.tile(self.x0, (rows, 1))
        return self._stack[:rows]


class _PointFunction:
    """The loss as a function of a few new coordinates that move the point ``x0``.

    Holds the evaluator and the point, and per thread one working copy of the
    point (and a stack of them for batches), rebuilt after unpickling rather
    than shipped to workers.
    """

    def __init__(self, evaluator: LossEvaluator, x0: FloatArray) -> None:
        self.evaluator = evaluator
        self.x0 = x0
        self._buffers = _Buffers(x0)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        del state["_buffers"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._buffers = _Buffers(self.x0)

    @property
    def batch(self) -> Any:
        """Evaluate many points at once through the loss's batched form, or None without one."""
        if self.evaluator.batch is None:
            return None
        return self._batch

    def _batch(self, rows: FloatArray) -> FloatArray:
        raise NotImplementedError


class ProbeFunction(_PointFunction):
    """The loss as a function of the probes' step lengths ``t`` (Note [Directional probes]).

    Parameters
    ----------
    evaluator : LossEvaluator
        The loss as a function of the flat parameter vector.
    x0 : ndarray of shape (n,)
        The point.
    probes : sequence of Probe
        One coordinate per probe.
    seed : int
        The probe seed (see :func:`probe_weights`).

    Notes
    -----
    Calling it with a vector ``t`` evaluates the loss at ``x0 + sum_j t_j
    v_j``, touching only the entries of the probes whose ``t_j`` is nonzero,
    and restores them afterwards. It keeps one working copy of the parameters
    and computes weights on demand, so it pickles small and holds O(n) memory
    in any worker.
    """

    def __init__(
        self, evaluator: LossEvaluator, x0: FloatArray, probes: Sequence[Probe], seed: int
    ) -> None:
        super().__init__(evaluator, x0)
        self.probes = tuple(probes)
        self.seed = seed

    def _move(self, work: FloatArray, t: FloatArray) -> list[Probe]:
        moved = []
        for j in np.flatnonzero(t):
            probe = self.probes[j]
            work[probe.start : probe.stop] += t[j] * probe_weights(probe, self.x0, self.seed)
            moved.append(probe)
        return moved

    def _restore(self, work: FloatArray, moved: list[Probe]) -> None:
        for probe in moved:
            work[probe.start : probe.stop] = self.x0[probe.start : probe.stop]

    def __call__(self, t: FloatArray) -> float:
        """Evaluate the loss at ``x0 + sum_j t_j v_j``."""
        work = self._buffers.work()
        moved = self._move(work, t)
        try:
            return self.evaluator(work)
        finally:
            self._restore(work, moved)

    def _batch(self, rows: FloatArray) -> FloatArray:
        stack = self._buffers.stack(rows.shape[0])
        moved = [self._move(row, t) for row, t in zip(stack, rows, strict=True)]
        try:
            values: FloatArray = self.evaluator.batch(stack)
            return values
        finally:
            for row, probes in zip(stack, moved, strict=True):
                self._restore(row, probes)


class SubsetFunction(_PointFunction):
    """The loss as a function of a few of its parameter entries, the others held at the point.

    Parameters
    ----------
    evaluator : LossEvaluator
        The loss as a function of the flat parameter vector.
    x0 : ndarray of shape (n,)
        The point.
    indices : ndarray of int, shape (k,)
        The entries that become the coordinates, in order.

    Notes
    -----
    Judging ``k`` entries of a large model through it keeps every array of
    the coordinate pipeline at size ``k`` rather than ``n``; like
    :class:`ProbeFunction` it keeps one working copy of the parameters.
    """

    def __init__(
        self, evaluator: LossEvaluator, x0: FloatArray, indices: npt.NDArray[np.intp]
    ) -> None:
        super().__init__(evaluator, x0)
        self.indices = indices

    def __call__(self, y: FloatArray) -> float:
        """Evaluate the loss with the chosen entries set to `y`."""
        work = self._buffers.work()
        work[self.indices] = y
        try:
            return self.evaluator(work)
        finally:
            work[self.indices] = self.x0[self.indices]

    def _batch(self, rows: FloatArray) -> FloatArray:
        stack = self._buffers.stack(rows.shape[0])
        stack[:, self.indices] = rows
        try:
            values: FloatArray = self.evaluator.batch(stack)
            return values
        finally:
            stack[:, self.indices] = self.x0[self.indices]


class LineFunction(_PointFunction):
    """The loss along one fixed direction, as a function of one coordinate ``t``.

    Parameters
    ----------
    evaluator : LossEvaluator
        The loss as a function of the flat parameter vector.
    x0 : ndarray of shape (n,)
        The point.
    direction : ndarray of shape (n,)
        The direction; ``fun([t])`` evaluates the loss at ``x0 + t * direction``.

    Notes
    -----
    The noise ladder (:meth:`gradproof.checking.context.Context.measure_noise`)
    evaluates it through the check's engine, so its evaluations are counted,
    budgeted and stopped like every other.
    """

    def __init__(self, evaluator: LossEvaluator, x0: FloatArray, direction: FloatArray) -> None:
        super().__init__(evaluator, x0)
        self.direction = direction

    def _point(self, t: float, out: FloatArray) -> FloatArray:
        with np.errstate(over="ignore"):  # an overflowing point gives a non-finite loss
            np.multiply(self.direction, t, out=out)
            out += self.x0
        return out

    def __call__(self, t: FloatArray) -> float:
        """Evaluate the loss at ``x0 + t[0] * direction``."""
        work = self._buffers.work()
        try:
            return self.evaluator(self._point(float(t[0]), work))
        finally:
            work[...] = self.x0

    def _batch(self, rows: FloatArray) -> FloatArray:
        stack = self._buffers.stack(rows.shape[0])
        try:
            for row, t in zip(stack, rows, strict=True):
                self._point(float(t[0]), row)
            values: FloatArray = self.evaluator.batch(stack)
            return values
        finally:
            stack[...] = self.x0
