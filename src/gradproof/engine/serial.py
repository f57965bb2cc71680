"""The serial engine, and the record of one sweep that every engine fills.

:class:`SerialEngine` evaluates in this process, chunk after chunk
(:func:`_run_serially`, Note [Chunks] in :mod:`gradproof.engine.chunks`); the
pooled engines run it too, to time the function before they submit work and to
evaluate sweeps too small to pay for their workers. A :class:`_Sweep` holds
what one call of :meth:`~gradproof.engine.base.Engine.sample` has measured so
far and why it stopped, whoever measured it.
"""

from __future__ import annotations

import time

import numpy as np
import numpy.typing as npt

from gradproof._typing import BoolArray, FlatFunction, FloatArray
from gradproof.engine.base import Engine, _batch_note, _check_batch_size, _order
from gradproof.engine.chunks import _ChunkOutcome, _ChunkRunner, _points
from gradproof.engine.progress import Progress
from gradproof.engine.tasks import _rebuild
from gradproof.numerics.finite_diff import Samples

__all__ = ["SerialEngine"]


_CHUNK_SECONDS = 0.05
"""How long a serial chunk should take: the progress bar moves about 20 times a second."""

_MAX_CHUNK = 4096
"""The most coordinates in a serial chunk (bounds its ``(k, m)`` arrays)."""


class SerialEngine(Engine):
    """Run every evaluation in this process, one chunk of coordinates after another.

    Parameters
    ----------
    batch_size : int, optional
        Evaluate this many points per call of ``fun.batch`` when the function
        has one (ignored otherwise).

    Examples
    --------
    >>> import numpy as np
    >>> x = np.array([1.0, 2.0])
    >>> with SerialEngine() as engine:
    ...     s = engine.sample(lambda v: float(v @ v), x, (x - 0.5, x + 0.5))
    >>> s.values
    array([[4.25, 3.25],
           [6.25, 7.25]])
    """

    def __init__(self, batch_size: int | None = None) -> None:
        super().__init__()
        self.batch_size = _check_batch_size(batch_size)

    @property
    def description(self) -> str:
        """``"serial"``, with the batch size when batching."""
        return "serial" + _batch_note(self.batch_size)

    def sample(
        self,
        fun: FlatFunction,
        x: FloatArray,
        columns: tuple[FloatArray, ...],
        *,
        indices: npt.NDArray[np.intp] | None = None,
        progress: Progress | None = None,
        deadline: float | None = None,
    ) -> Samples:
        """Evaluate in this process (see :meth:`Engine.sample`)."""
        order = _order(x, indices)
        sweep = _Sweep(x, columns, progress)
        if order.size:
            runner = _ChunkRunner(fun, x, self.batch_size, rows=len(columns) * order.size)
            _run_serially(runner, order, columns, sweep, deadline)
        return sweep.samples()


class _Sweep:
    """What one call of :meth:`Engine.sample` has measured so far, and why it stopped."""

    def __init__(
        self, x: FloatArray, columns: tuple[FloatArray, ...], progress: Progress | None
    ) -> None:
        self.values, self.measured = _empty(x, columns)
        self.n_evals = 0
        self.stop: str | None = None
        self.error: BaseException | None = None
        self.progress = progress

    def record(self, chunk: npt.NDArray[np.intp], outcome: _ChunkOutcome) -> None:
        self.n_evals += outcome.n_evals
        _scatter(self.values, self.measured, chunk, outcome)

    def advance(self, n_evals: int) -> None:
        if self.progress is not None:
            self.progress.advance(n_evals)

    def halt(self, stop: str, error: BaseException | None = None) -> None:
        """Stop for `stop` ("interrupt", "deadline", "error", "lost"); the first reason wins."""
        if self.stop is None:
            self.stop, self.error = stop, error

    def samples(self) -> Samples:
        return Samples(
            values=self.values,
            measured=self.measured,
            n_evals=self.n_evals,
            interrupted=self.stop is not None,
            stop=self.stop,
            error=self.error,
        )


_SERIAL_STOPS = {"interrupt": "interrupt", "error": "error", "stopped": "deadline"}
"""A chunk's reason to stop, as the sweep's reason (in this process the flag is the deadline)."""


def _run_serially(
    runner: _ChunkRunner,
    order: npt.NDArray[np.intp],
    columns: tuple[FloatArray, ...],
    sweep: _Sweep,
    deadline: float | None,
    *,
    budget: float | None = None,
) -> tuple[int, float]:
    """Evaluate `order` in this process, chunk by chunk, into `sweep`.

    Returns how many coordinates of `order` it went through (all of them,
    unless stopped or past `budget` seconds) and the seconds per coordinate
    of its last chunk.
    """
    unit = runner.unit(len(columns))
    size, start, spent, seconds = unit, 0, 0.0, 0.0
    flag = None if deadline is None else _Deadline(deadline)
    try:
        while start < order.size:
            if flag is not None and flag.value:
                sweep.halt("deadline")
                break
            chunk = order[start : start + size]
            began = time.perf_counter()
            outcome = runner.run(chunk, _points(columns, chunk), flag)
            elapsed = time.perf_counter() - began
            sweep.record(chunk, outcome)
            start += chunk.size
            seconds = elapsed / chunk.size
            if outcome.stop is not None:
                sweep.halt(_SERIAL_STOPS[outcome.stop], _rebuild(outcome.error))
            sweep.advance(outcome.n_evals)
            spent += elapsed
            if outcome.stop is not None or (budget is not None and spent >= budget):
                break
            size = _next_chunk_size(size, elapsed, unit)
    except KeyboardInterrupt:  # between chunks: the work vector is already restored
        sweep.halt("interrupt")
    return start, seconds


class _Deadline:
    """A stop flag that sets itself at a :func:`time.monotonic` instant."""

    __slots__ = ("deadline",)

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline

    @property
    def value(self) -> bool:
        return time.monotonic() >= self.deadline


def _empty(x: FloatArray, columns: tuple[FloatArray, ...]) -> tuple[FloatArray, BoolArray]:
    return np.full((len(columns), x.size), np.nan), np.zeros(x.size, dtype=bool)


def _scatter(
    values: FloatArray, measured: BoolArray, chunk: npt.NDArray[np.intp], outcome: _ChunkOutcome
) -> None:
    done = chunk[: outcome.done]
    values[:, done] = outcome.values[:, : outcome.done]
    measured[done] = True


def _next_chunk_size(size: int, elapsed: float, unit: int) -> int:
    """Double a quick chunk, halve a slow one: about `_CHUNK_SECONDS` each."""
    if elapsed < _CHUNK_SECONDS / 2:
        size *= 2
    elif elapsed > _CHUNK_SECONDS * 2:
        size //= 2
    size = min(size, max(_MAX_CHUNK, unit))
    return max(unit, size - size % unit)
