"""Evaluating one chunk of coordinates, in this process or in a worker.

A chunk is ``m`` coordinates and, for each, its ``k`` column values (a
``(k, m)`` array, :func:`_points`). A :class:`_ChunkRunner` evaluates it one
point per call of the function, or ``B`` points per call of ``fun.batch``, and
returns a :class:`_ChunkOutcome`: the values, how many coordinates got all of
them, and why it stopped early if it did. Both engines in this process
(:mod:`~gradproof.engine.serial`) and tasks in workers (:mod:`~gradproof.engine.tasks`)
evaluate through it.

Note [Chunks]
    The coordinates are evaluated in chunks. The serial engine advances the
    progress bar once per chunk, so evaluating costs no callback, and it sizes
    its chunks to take about 50 ms each, so the bar moves smoothly whether an
    evaluation takes a microsecond or a second. The pooled engines first time
    a few coordinates in this process, then submit chunks of about
    `_TASK_SECONDS` of work (longer when sending the function and the point
    costs more), at least four per worker: enough to balance the load, short
    enough that an interrupt or a lost worker costs little of the work. The
    split depends on timing, but it cannot change a value: each coordinate's
    ``k`` evaluations see the same vector in any chunk, on any worker, in any
    order (Note [Identical results] in :mod:`gradproof.engine.base`), so only
    which coordinates get measured before a stop depends on the split. The
    sizes are set in :mod:`gradproof.engine.serial` (`_CHUNK_SECONDS`) and
    :mod:`gradproof.engine.pools` (`_TASK_SECONDS`).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple, Protocol

import numpy as np
import numpy.typing as npt

from gradproof._typing import FlatFunction, FloatArray
from gradproof.errors import InputError


class _Flag(Protocol):
    """What a task checks once per coordinate: stop when `value` is true."""

    @property
    def value(self) -> Any: ...


class _ChunkOutcome(NamedTuple):
    """The values of one chunk of coordinates: ``values[j, c]`` for ``indices[c]``."""

    values: FloatArray  # (k, m), NaN for the coordinates after `done`
    done: int  # the first `done` coordinates of the chunk have all their values
    n_evals: int
    stop: str | None = None  # "interrupt" (Ctrl-C), "stopped" (the stop flag), "error"
    error: object = None  # the function's exception, or a _PortableError from elsewhere
    remote: bool = False  # computed by a copy of the function (another process)


class _ChunkRunner:
    """Evaluates chunks of coordinates, reusing one work vector (or one stack) for all."""

    def __init__(
        self,
        fun: FlatFunction,
        x: FloatArray,
        batch_size: int | None,
        *,
        rows: int,
        own_x: bool = False,
    ) -> None:
        batch = getattr(fun, "batch", None)
        self.fun = fun
        self.x = x
        self.batch = batch if callable(batch) and (batch_size or 0) >= 2 else None
        if self.batch is None:
            # `x` itself is the work vector when nobody else can see it.
            self.work = x if own_x else x.copy()
            self.stack = np.zeros((0, x.size))
        else:
            self.work = x
            self.stack = np.tile(x, (min(batch_size or 0, rows), 1))

    def unit(self, k: int) -> int:
        """Return the smallest chunk that fills whole batches (1 when not batching)."""
        rows = self.stack.shape[0]
        return 1 if self.batch is None else rows // math.gcd(rows, k)

    def run(
        self, indices: npt.NDArray[np.intp], points: FloatArray, stop: _Flag | None = None
    ) -> _ChunkOutcome:
        """Evaluate coordinates `indices`; ``points[j, c]`` is the j-th value of ``indices[c]``.

        The function's exceptions, and Ctrl-C, end the chunk early: they are
        returned in the outcome, with the coordinates completed before.
        """
        if self.batch is None:
            return _sample_single(self.fun, self.work, indices, points, stop)
        return _sample_batched(self.batch, self.x, self.stack, indices, points, stop)


def _sample_single(
    fun: FlatFunction,
    work: FloatArray,
    indices: npt.NDArray[np.intp],
    points: FloatArray,
    stop: _Flag | None = None,
) -> _ChunkOutcome:
    """One evaluation per call, as :func:`gradproof.numerics.finite_diff.sample` does it."""
    k, m = points.shape
    values = np.full((k, m), np.nan)
    # Python ints and floats index and fill numpy arrays faster than numpy scalars do; this
    # loop runs once per evaluation, and its cost is the overhead of a whole sweep.
    targets, rows = indices.tolist(), points.T.tolist()
    measured: list[list[float]] = []
    n_evals = 0
    reason: str | None = None
    error: BaseException | None = None
    try:
        for i, row in zip(targets, rows, strict=True):
            if stop is not None and stop.value:
                reason = "stopped"
                break
            original = work[i]
            found = []
            try:
                for point in row:
                    work[i] = point
                    n_evals += 1
                    found.append(fun(work))
            finally:
                work[i] = original
            measured.append(found)
    except KeyboardInterrupt:
        reason = "interrupt"
    except Exception as exc:  # the function's: returned, see Note [Stopping early] (pools)
        reason, error = "error", exc
    if measured:
        values[:, : len(measured)] = np.array(measured, dtype=np.float64).T
    return _ChunkOutcome(values, len(measured), n_evals, reason, error)


def _sample_batched(
    batch: Any,
    x: FloatArray,
    stack: FloatArray,
    indices: npt.NDArray[np.intp],
    points: FloatArray,
    stop: _Flag | None = None,
) -> _ChunkOutcome:
    """Up to ``len(stack)`` evaluations per call of `batch`; each row moves one coordinate.

    The (coordinate, offset) pairs are taken coordinate by coordinate, so a
    stop loses at most the coordinates of the batch it hit. Only the entries
    a batch changed are restored afterwards: the stack is built once.
    """
    k, m = points.shape
    total = k * m
    coordinate = np.repeat(np.arange(m), k)  # pair p is (coordinate p // k, offset p % k)
    offset = np.tile(np.arange(k), m)
    target = indices[coordinate]
    value = points.T.reshape(-1)
    values = np.full((k, m), np.nan)
    n_evals = 0
    completed = 0
    reason: str | None = None
    error: BaseException | None = None
    try:
        for start in range(0, total, stack.shape[0]):
            if stop is not None and stop.value:
                reason = "stopped"
                break
            end = min(start + stack.shape[0], total)
            rows = np.arange(end - start)
            columns = target[start:end]
            stack[rows, columns] = value[start:end]
            n_evals += end - start
            try:
                out = batch(stack[: end - start])
            finally:
                stack[rows, columns] = x[columns]
            values[offset[start:end], coordinate[start:end]] = _batch_values(out, end - start)
            completed = end
    except KeyboardInterrupt:
        reason = "interrupt"
    except Exception as exc:  # the function's (or a batch of the wrong shape)
        reason, error = "error", exc
    done = completed // k
    values[:, done:] = np.nan  # a coordinate counts only with all its k values
    return _ChunkOutcome(values, done, n_evals, reason, error)


def _batch_values(out: object, rows: int) -> FloatArray:
    values = np.asarray(out, dtype=np.float64)
    if values.shape != (rows,):
        raise InputError(
            f"`fun.batch` returned an array of shape {values.shape} for {rows} points; expected "
            f"({rows},), one loss per row of its argument. Reduce each row to one number."
        )
    return values


def _points(columns: tuple[FloatArray, ...], chunk: npt.NDArray[np.intp]) -> FloatArray:
    """Take the chunk's column values, ``(k, m)``: all a task needs of the ``k`` columns."""
    return np.stack([column[chunk] for column in columns])
