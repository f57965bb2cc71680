"""Engines that run the finite-difference evaluations of a check.

A check evaluates the loss with one coordinate moved at a time: ``k`` points
per coordinate, tens of thousands of evaluations for a real model. An
:class:`Engine` runs them, in this process (:class:`SerialEngine`), in worker
processes (:class:`ProcessEngine`) or on any :class:`concurrent.futures.Executor`
the caller brings, such as a dask cluster's (:class:`ExecutorEngine`). All
answer the question of :func:`gradproof.numerics.finite_diff.sample` and return its
:class:`~gradproof.numerics.finite_diff.Samples`.

Note [Identical results]
    Every engine gives the values :func:`~gradproof.numerics.finite_diff.sample` gives,
    bit for bit. An evaluation sees `x` with exactly one coordinate set to its
    column value, whoever runs it, and the engines only copy the values the
    function returns: they never add, average or reorder them. So a function
    that depends only on its argument returns the same bits in a worker as in
    this process, and the verdict of a check cannot depend on the engine.
    Batched evaluation (``fun.batch``, one call for ``B`` points) keeps this
    guarantee when ``fun.batch`` computes each row the way ``fun`` does.

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
    order (Note [Identical results]), so only which coordinates get measured
    before a stop depends on the split.

Note [One copy of x per task]
    A task carries the point `x` and, for its ``m`` coordinates, only their
    ``k`` column values (a ``(k, m)`` array), not the ``k`` full columns: it
    sends ``O(n + k m)`` numbers instead of ``O(k n)``. The worker moves one
    coordinate of a single work vector, evaluates, and restores it, so it
    holds one copy of `x` (or one ``(B, n)`` stack when batching) whatever
    the chunk's size.

Note [Stopping early]
    A sweep stops early on Ctrl-C, at its deadline, when the function raises
    and when a worker is lost twice; in every case it returns what it
    measured, with ``Samples.stop`` saying why (and ``Samples.error`` holding
    the exception, for the caller to raise once it has kept the
    measurements). A coordinate counts only with all its ``k`` values. The
    serial engine checks the deadline once per coordinate. A task checks a
    stop flag once per coordinate (once per batch when batching): the
    parent sets it, gives running tasks a short grace time to return what
    they measured, and only then terminates the workers that did not. A
    worker process reads the flag from shared memory, set up when the pool
    starts; a thread of an executor reads the engine's flag object itself.
    Elsewhere (a dask worker process) no flag can reach the task, and the
    short chunks bound what is lost: at most the chunks in flight, two per
    worker. The function's own exceptions travel back inside the task's
    outcome, never as the task's exception, so anything that
    ``future.result()`` raises is a fault of the workers, not of the function.

Note [Lost workers]
    A worker process that dies (``os._exit``, a crash in native code, the
    out-of-memory killer) takes its chunk with it; a process pool then fails
    every chunk it holds, and a dask cluster fails the task with
    ``KilledWorker``. Tasks of which none completes for a long time
    (:data:`_STALL_SECONDS`: a cluster with no live worker, a loss hung in a
    worker) count as lost too. Each lost chunk is submitted once more (to a
    fresh pool for a process pool), split into :data:`_RETRY_PIECES` pieces:
    a one-off death costs only the repeated work, and when the fault comes
    back, the pieces without it still return whole. A chunk lost twice stops
    the sweep with a :class:`~gradproof.errors.WorkerLostError`, which says
    how to see the cause: evaluate in this process.

Note [Unguarded scripts]
    The 'spawn' and 'forkserver' start methods start each worker by running
    the main script again (as ``__mp_main__``). A script that calls gradproof
    at its top level, without an ``if __name__ == "__main__":`` guard, would
    start the check again in every worker, which fails with a long
    multiprocessing traceback. Before starting a pool, the engine finds the
    line of the main script that is running (the ``<module>`` frame of
    ``__main__``) and, if it lies outside such a guard, evaluates in this
    process and says so in :attr:`Engine.notes`. The same holds for a main
    module the workers cannot read again (``python - < script.py``).
"""

from __future__ import annotations

import abc
import ast
import functools
import importlib
import math
import multiprocessing
import os
import pickle
import signal
import sys
import time
import traceback
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ProcessPoolExecutor, wait
from multiprocessing.context import BaseContext
from types import FrameType, TracebackType
from typing import Any, NamedTuple, Protocol, TypeVar

import numpy as np
import numpy.typing as npt

from gradproof._typing import BoolArray, FlatFunction, FloatArray
from gradproof.engine.progress import Progress
from gradproof.errors import InputError, WorkerLostError
from gradproof.numerics.finite_diff import Samples

__all__ = ["Engine", "ExecutorEngine", "ProcessEngine", "SerialEngine", "make_engine"]

_CHUNK_SECONDS = 0.05
"""How long a serial chunk should take: the progress bar moves about 20 times a second."""

_MAX_CHUNK = 4096
"""The most coordinates in a serial chunk (bounds its ``(k, m)`` arrays)."""

_CHUNKS_PER_WORKER = 4
"""The fewest chunks per worker a pooled engine submits (to balance the load)."""

_TASK_SECONDS = 0.05
"""How long a pooled task should evaluate: what an interrupt or a lost worker can cost."""

_OVERHEAD_SHARE = 0.05
"""The most of a task's time that sending it (the function, the point) should take."""

_BYTES_PER_SECOND = 1e9
"""About how fast a task's arrays are pickled, sent and unpickled."""

_IN_FLIGHT_PER_WORKER = 2
"""Tasks submitted and not yet complete, per worker: one running, one ready to start."""

_CALIBRATION_SECONDS = 0.02
"""How long a pooled engine evaluates in this process first, to time the function."""

_POOL_START_SECONDS = 0.5
"""About what starting worker processes costs (measured: 0.3-0.5 s for two on Linux)."""

_DISPATCH_SECONDS = 0.05
"""Work below this (in this process's time) runs serially even when workers are ready."""

_RETRY_PIECES = 4
"""A chunk lost with its worker is retried in this many pieces (Note [Lost workers])."""

_STALL_SECONDS = 60.0
"""With tasks pending, no answer for this long (or 50 tasks' time, if longer) loses them."""

_GRACE_SECONDS = 1.0
"""The least time running tasks get to return what they measured after a stop."""

_EngineT = TypeVar("_EngineT", bound="Engine")

_WORKER_STOP: Any = None
"""In a worker process of a :class:`ProcessEngine`: the pool's shared stop flag."""


class Engine(abc.ABC):
    """Runs the finite-difference evaluations of a check.

    Attributes
    ----------
    remote_evals : int
        Evaluations made outside the calling process, by copies of the
        function: counters kept by the function itself do not see them.
        0 for a serial engine.
    worker_evals : int
        Evaluations made by the workers (processes, threads or a cluster's),
        as opposed to this thread; 0 for a serial engine, or for a pooled one
        that evaluated everything in this process (see `notes`).
    notes : list of str
        What the user should know about how the evaluations ran, e.g. that a
        pooled engine evaluated in this process because the work was too
        small to pay for its workers. Each note appears once.

    See Also
    --------
    make_engine : Choose an engine from a user's ``executor`` argument.
    """

    remote_evals: int
    worker_evals: int
    notes: list[str]

    def __init__(self) -> None:
        self.remote_evals = 0
        self.worker_evals = 0
        self.notes = []

    @abc.abstractmethod
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
        """Evaluate `fun` with each coordinate in turn set to each of its given values.

        Parameters
        ----------
        fun : callable ``fun(x) -> float``
            The scalar function of a flat float64 vector. It receives a work
            vector changed in one coordinate at a time and must not keep it.
            If it has a callable ``batch`` attribute (``fun.batch(vectors)``,
            vectors of shape (B, n), returning B values) and the engine has a
            `batch_size`, points are evaluated `batch_size` at a time.
        x : ndarray of shape (n,), float64
            The point. It is not modified.
        columns : tuple of ndarray of shape (n,)
            For each of ``k`` offsets, the value every coordinate takes there.
        indices : ndarray of int, optional
            The coordinates to sample; all of them by default.
        progress : Progress, optional
            Advanced by the number of evaluations as chunks complete.
        deadline : float, optional
            A :func:`time.monotonic` instant: when it passes, the sampling
            stops as after Ctrl-C, with ``stop="deadline"``.

        Returns
        -------
        Samples
            The same values as :func:`gradproof.numerics.finite_diff.sample`, bit for
            bit. When the sampling stops early (Ctrl-C, the deadline, an
            exception of `fun`, a worker lost twice), what was complete is
            returned with ``interrupted=True``, NaN and not measured
            elsewhere; ``stop`` says why and ``error`` holds the exception:
            the one `fun` raised (with its type, message and, from a worker
            process, its traceback as text in ``__cause__``), or a
            :class:`~gradproof.errors.WorkerLostError`. See Note [Stopping early].

        Raises
        ------
        InputError
            If `fun` cannot be sent to worker processes (before any evaluation).
        """

    @property
    @abc.abstractmethod
    def description(self) -> str:
        """How the evaluations run, for reports: e.g. ``"4 worker processes"``."""

    # Not abstract: engines without resources have nothing to close.
    def close(self) -> None:  # noqa: B027
        """Release the engine's resources (worker processes); safe to call twice."""

    def _note(self, text: str) -> None:
        """Add a note, unless one of its kind (its words before the first colon) is there."""
        kind = text.split(":")[0]
        if all(note.split(":")[0] != kind for note in self.notes):
            self.notes.append(text)

    def __enter__(self: _EngineT) -> _EngineT:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__}: {self.description}>"


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


class _PoolEngine(Engine):
    """Submits chunks of coordinates to workers and gathers them as they complete.

    See Notes [Chunks], [Stopping early] and [Lost workers].
    """

    _private_x = False
    """Whether each task receives its own copy of `x` (pickled for it) to perturb in place."""

    def __init__(self, workers: int | None, batch_size: int | None) -> None:
        super().__init__()
        self._workers = None if workers is None else _check_workers(workers, "workers")
        self.batch_size = _check_batch_size(batch_size)

    @abc.abstractmethod
    def _payload(self, fun: FlatFunction) -> object:
        """Return what the tasks carry to rebuild `fun` in a worker."""

    @abc.abstractmethod
    def _submit(self, task: _Task) -> Future[_ChunkOutcome]:
        """Start one task (may raise when the workers are gone)."""

    @abc.abstractmethod
    def _stop_flag(self) -> _StopFlag | None:
        """Return the flag to carry in this call's tasks (None: the workers have their own)."""

    @abc.abstractmethod
    def _request_stop(self, flag: _StopFlag | None) -> None:
        """Ask the running tasks to return what they measured."""

    @abc.abstractmethod
    def _finish(self, flag: _StopFlag | None, stragglers: list[Future[_ChunkOutcome]]) -> None:
        """End a call: reset the stop flag, or stop the tasks that did not return in time."""

    def _replace_workers(self, future: Future[_ChunkOutcome] | None) -> None:
        """Make sure new tasks do not go to workers that were lost with `future`."""

    def _serial_reason(self) -> str | None:
        """Why the workers must not be used for this call, if they must not."""
        return None

    def _start_seconds(self) -> float:
        """Return what starting to use the workers costs: below it, evaluate in this process."""
        return _DISPATCH_SECONDS

    def _describe_loss(self, future: Future[_ChunkOutcome] | None, error: BaseException) -> str:
        """Say what was lost with `future`, e.g. ``"exit code 1"``."""
        del future
        return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__

    def _lost_message(self, what: str) -> str:
        return (
            f"A worker of {self.description} died or stopped answering while evaluating the "
            f"loss, twice ({what}): its chunk of coordinates was retried once and lost again. "
            "The loss may call os._exit, crash in native code, run out of memory or hang, or "
            "the cluster lost its workers; run with executor=None to see the loss's error in "
            "this process."
        )

    @property
    def workers(self) -> int:
        """How many workers the chunks are planned for."""
        return self._workers if self._workers is not None else _available_cpus()

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
        """Evaluate in chunks on the workers (see :meth:`Engine.sample`)."""
        order = _order(x, indices)
        sweep = _Sweep(x, columns, progress)
        if order.size == 0:
            return sweep.samples()
        runner = _ChunkRunner(fun, x, self.batch_size, rows=len(columns) * order.size)
        reason = self._serial_reason()
        if reason is not None:
            self._note(f"The {self.description} were not used: {reason}")
            _run_serially(runner, order, columns, sweep, deadline)
            return sweep.samples()
        began = time.perf_counter()
        payload = self._payload(fun)  # refuses an unpicklable loss before any evaluation
        size = x.nbytes + (len(payload) if isinstance(payload, bytes) else 0)
        overhead = time.perf_counter() - began + size / _BYTES_PER_SECOND
        # Time the function on a first few coordinates, in this process (Note [Chunks]).
        done, seconds = _run_serially(
            runner, order, columns, sweep, deadline, budget=_CALIBRATION_SECONDS
        )
        rest = order[done:]
        if sweep.stop is not None:
            return sweep.samples()
        serial_seconds = seconds * rest.size
        if rest.size == 0 or serial_seconds < self._start_seconds():
            self._note(
                f"The {self.description} were not used for a small sweep: its evaluations "
                f"take about {seconds * order.size:.2g} s in this process, less than starting "
                f"to use the workers costs (about {self._start_seconds():.2g} s)."
            )
            _run_serially(runner, rest, columns, sweep, deadline)
            return sweep.samples()
        task_seconds = max(_TASK_SECONDS, overhead / _OVERHEAD_SHARE)
        count = max(_CHUNKS_PER_WORKER * self.workers, math.ceil(serial_seconds / task_seconds))
        chunks = np.array_split(rest, min(rest.size, count))
        grace = max(_GRACE_SECONDS, 2.5 * max(task_seconds, seconds))
        stall = max(_STALL_SECONDS, 50 * max(task_seconds, seconds))
        self._run_pool(fun, payload, x, columns, chunks, sweep, deadline, grace, stall)
        return sweep.samples()

    def _run_pool(
        self,
        fun: FlatFunction,
        payload: object,
        x: FloatArray,
        columns: tuple[FloatArray, ...],
        chunks: list[npt.NDArray[np.intp]],
        sweep: _Sweep,
        deadline: float | None,
        grace: float,
        stall: float,
    ) -> None:
        """Evaluate `chunks` on the workers, at most `_IN_FLIGHT_PER_WORKER` each at a time.

        Tasks of which none completes for `stall` seconds count as lost with
        their workers (Note [Lost workers]): a cluster whose workers are all
        gone, or a loss that hangs in a worker, cannot hang the check.
        """
        flag = self._stop_flag()
        parent = (os.getpid(), id(fun))
        queue = [(chunk, 0) for chunk in reversed(chunks)]  # (chunk, times lost); pop() = next
        pending: dict[Future[_ChunkOutcome], tuple[npt.NDArray[np.intp], int]] = {}
        window = _IN_FLIGHT_PER_WORKER * self.workers

        def submit() -> None:
            while queue and len(pending) < window and sweep.stop is None:
                chunk, lost = queue.pop()
                task = _Task(
                    fun=payload,
                    x=x,
                    indices=chunk,
                    points=_points(columns, chunk),
                    batch_size=self.batch_size,
                    parent=parent,
                    private_x=self._private_x,
                    stop=flag,
                )
                try:
                    pending[self._submit(task)] = (chunk, lost)
                except Exception as exc:  # the workers are gone (a broken pool)
                    lose(None, chunk, lost, exc)

        def lose(
            future: Future[_ChunkOutcome] | None,
            chunk: npt.NDArray[np.intp],
            lost: int,
            error: BaseException,
        ) -> None:
            if sweep.stop is not None:
                return  # stopping anyway: its work is not wanted
            if lost >= 1:
                message = self._lost_message(self._describe_loss(future, error))
                sweep.halt("lost", WorkerLostError(message))
                return
            self._replace_workers(future)
            # Retried in pieces: the pieces without the fault come back whole (Note [Lost
            # workers]); the queue is popped from its end, so the first piece goes last.
            pieces = np.array_split(chunk, min(chunk.size, _RETRY_PIECES))
            queue.extend((piece, lost + 1) for piece in reversed(pieces))

        def collect(future: Future[_ChunkOutcome]) -> None:
            chunk, lost = pending.pop(future)
            if future.cancelled():
                return
            try:
                outcome = future.result()
            except Exception as exc:  # never the function's: see Note [Stopping early]
                lose(future, chunk, lost, exc)
                return
            sweep.record(chunk, outcome)
            self.worker_evals += outcome.n_evals
            if outcome.remote:
                self.remote_evals += outcome.n_evals
            if outcome.stop == "error":
                sweep.halt("error", _rebuild(outcome.error))
            elif outcome.stop is not None:
                # KeyboardInterrupt raised by the function itself; or ("stopped") a flag set
                # by nobody, which must not pass for a complete sweep.
                sweep.halt("interrupt")
            sweep.advance(outcome.n_evals)

        try:
            submit()
            answered = time.monotonic()
            while pending and sweep.stop is None:
                now = time.monotonic()
                timeout = answered + stall - now
                if deadline is not None:
                    timeout = min(timeout, deadline - now)
                done, _ = wait(pending, timeout=max(0.0, timeout), return_when=FIRST_COMPLETED)
                if done:
                    answered = time.monotonic()
                elif deadline is not None and time.monotonic() >= deadline:
                    sweep.halt("deadline")
                else:  # no answer for `stall` seconds: the workers are lost
                    silent = TimeoutError(f"no task completed for {stall:.3g} s")
                    for future in list(pending):
                        chunk, lost = pending.pop(future)
                        future.cancel()
                        lose(future, chunk, lost, silent)
                    answered = time.monotonic()
                for future in done:
                    collect(future)
                submit()
        except KeyboardInterrupt:
            sweep.halt("interrupt")
        if not pending:
            self._finish(flag, [])
            return
        # Stopping: let running tasks return what they measured (Note [Stopping early]).
        self._request_stop(flag)
        end = time.monotonic() + grace
        try:
            while pending:
                done, _ = wait(
                    pending, timeout=max(0.0, end - time.monotonic()), return_when=FIRST_COMPLETED
                )
                if not done:
                    break
                for future in done:
                    collect(future)
        except KeyboardInterrupt:  # Ctrl-C again: stop waiting
            pass
        self._finish(flag, list(pending))


def _safe_context() -> BaseContext:
    """Return the forkserver context where the platform has it, else spawn."""
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")


class ProcessEngine(_PoolEngine):
    """Run the evaluations in a pool of worker processes owned by the engine.

    The pool starts on first use and stops at :meth:`close` (or at the end of
    a ``with`` block). Its workers ignore Ctrl-C: the interrupt reaches this
    process only, which asks the workers to stop, keeps what they measured
    and returns it. A worker that dies is replaced and its work retried once
    (Note [Lost workers]).

    Parameters
    ----------
    workers : int, optional
        The number of processes; by default, the CPUs this process may use.
    batch_size : int, optional
        Evaluate this many points per call of ``fun.batch`` when the function
        has one (ignored otherwise).
    mp_context : multiprocessing context, optional
        How to start the processes, e.g. ``multiprocessing.get_context("spawn")``.
        By default ``"forkserver"`` where the platform has it, else ``"spawn"``:
        never a plain ``fork`` of this process, which deadlocks children when
        the parent runs threads (JAX, PyTorch, a BLAS pool); Python 3.14 makes
        the same choice.

    Notes
    -----
    The function is sent to the workers with ``cloudpickle`` when it is
    installed, which also sends lambdas and closures; otherwise with
    :mod:`pickle`, which needs a function defined at a module's top level.

    The evaluations run in this process instead, with a note in
    :attr:`notes`, when the sweep is too short to pay for starting the
    workers, and when they would run the caller's script again (a script
    without an ``if __name__ == "__main__":`` guard, Note [Unguarded scripts]).

    Examples
    --------
    >>> ProcessEngine(4).description  # no process starts before the first evaluation
    '4 worker processes'
    """

    _private_x = True

    def __init__(
        self,
        workers: int | None = None,
        *,
        batch_size: int | None = None,
        mp_context: BaseContext | None = None,
    ) -> None:
        super().__init__(workers, batch_size)
        self._mp_context = mp_context if mp_context is not None else _safe_context()
        self._pool: ProcessPoolExecutor | None = None
        self._flag: Any = None  # the pool's shared stop flag (a ctypes byte)
        self._owners: dict[Future[_ChunkOutcome], ProcessPoolExecutor] = {}
        self._processes: dict[int, list[Any]] = {}  # id(pool): its processes, for exit codes

    @property
    def description(self) -> str:
        """``"N worker processes"``, with the batch size when batching."""
        n = self.workers
        return f"{n} worker process{'es' if n != 1 else ''}" + _batch_note(self.batch_size)

    def close(self) -> None:
        """Stop the worker processes, if they were started; safe to call twice."""
        pool, self._pool = self._pool, None
        self._owners.clear()
        self._processes.clear()
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    def _serial_reason(self) -> str | None:
        if self._pool is not None or self._mp_context.get_start_method() == "fork":
            return None
        return _main_script_problem()

    def _start_seconds(self) -> float:
        return _POOL_START_SECONDS if self._pool is None else _DISPATCH_SECONDS

    def _payload(self, fun: FlatFunction) -> object:
        return _serialize(fun)

    def _stop_flag(self) -> _StopFlag | None:
        return None  # the workers read the pool's flag (`_start_worker`)

    def _submit(self, task: _Task) -> Future[_ChunkOutcome]:
        if self._pool is None:
            # Shared memory, inherited by the workers as they start: reading it costs ~50 ns.
            self._flag = self._mp_context.RawValue("b", 0)
            self._pool = ProcessPoolExecutor(
                max_workers=self.workers,
                mp_context=self._mp_context,
                initializer=_start_worker,
                initargs=(self._flag,),
            )
        pool = self._pool
        future = pool.submit(_run_task, task)
        self._owners[future] = pool
        # Workers start on demand during submit(): remember them while the pool still lists them.
        self._processes[id(pool)] = list((getattr(pool, "_processes", None) or {}).values())
        return future

    def _describe_loss(self, future: Future[_ChunkOutcome] | None, error: BaseException) -> str:
        pool = self._owners.get(future) if future is not None else self._pool
        processes = self._processes.get(id(pool), []) if pool is not None else []
        codes = [getattr(p, "exitcode", None) for p in processes]
        deaths = [_exit_status(c) for c in codes if c is not None and c != -signal.SIGTERM]
        if deaths:
            return ", ".join(sorted(set(deaths)))
        return super()._describe_loss(future, error)

    def _lost_message(self, what: str) -> str:
        return (
            f"A worker process died or stopped answering while evaluating the loss, twice "
            f"({what}): its chunk of coordinates was retried once in a fresh pool and lost "
            "again. The loss may call os._exit, crash in native code, run out of memory or "
            "hang; run with executor=None to see its error in this process."
        )

    def _replace_workers(self, future: Future[_ChunkOutcome] | None) -> None:
        pool = self._owners.get(future) if future is not None else self._pool
        if pool is not None and pool is self._pool:
            self._discard_pool()  # broken: the next submit starts a fresh one

    def _request_stop(self, flag: _StopFlag | None) -> None:
        del flag
        if self._flag is not None:
            self._flag.value = 1

    def _finish(self, flag: _StopFlag | None, stragglers: list[Future[_ChunkOutcome]]) -> None:
        del flag
        self._owners.clear()
        if stragglers:
            # Tasks that ignored the stop flag past the grace time: stop their workers (a
            # fresh pool starts on the next call). The futures are not cancelled here:
            # Python 3.11's pool fails on cancelled futures when it finds its workers gone;
            # shutting down cancels them.
            self._discard_pool()
        elif self._flag is not None:
            self._flag.value = 0  # every task of this call has returned: ready for the next

    def _discard_pool(self) -> None:
        pool, self._pool, self._flag = self._pool, None, None
        if pool is not None:
            _terminate(pool)


class ExecutorEngine(_PoolEngine):
    """Run the evaluations on the caller's :class:`concurrent.futures.Executor`.

    Any executor works: a dask ``Client.get_executor()``, ray's, a
    :class:`~concurrent.futures.ThreadPoolExecutor` (for a loss that releases
    the GIL). The engine never shuts it down: it belongs to the caller.

    Parameters
    ----------
    executor : concurrent.futures.Executor
        Where to run the tasks. The function and the point are submitted as
        they are; the executor serializes them if it needs to (dask uses
        cloudpickle).
    workers : int, optional
        How many tasks can run at once, to plan the chunks and keep two tasks
        per worker submitted; by default read from the executor (its
        ``max_workers``, or the threads of a dask cluster), else the CPUs of
        this machine.
    batch_size : int, optional
        Evaluate this many points per call of ``fun.batch`` when the function
        has one (ignored otherwise).

    Notes
    -----
    Threads of this process stop at the next coordinate after Ctrl-C or the
    deadline; tasks in other processes (dask workers) finish their chunk,
    which is short (Note [Stopping early]). A task whose worker dies is
    submitted once more; dask, which retries such tasks itself, reports
    ``KilledWorker`` only after several deaths.

    Examples
    --------
    >>> import numpy as np
    >>> from concurrent.futures import ThreadPoolExecutor
    >>> x = np.array([1.0, 2.0])
    >>> with ThreadPoolExecutor(2) as pool, ExecutorEngine(pool) as engine:
    ...     s = engine.sample(lambda v: float(v @ v), x, (x - 0.5, x + 0.5))
    ...     engine.description
    'ThreadPoolExecutor (concurrent.futures)'
    >>> s.values
    array([[4.25, 3.25],
           [6.25, 7.25]])
    """

    def __init__(
        self, executor: Executor, *, workers: int | None = None, batch_size: int | None = None
    ) -> None:
        super().__init__(workers, batch_size)
        self.executor = executor

    @property
    def workers(self) -> int:
        """How many tasks can run at once (given, or read from the executor)."""
        if self._workers is not None:
            return self._workers
        return _executor_workers(self.executor)

    @property
    def description(self) -> str:
        """The executor's class and library, e.g. ``"ClientExecutor (dask)"``."""
        kind = type(self.executor)
        library = kind.__module__.split(".")[0]
        library = {"distributed": "dask", "concurrent": "concurrent.futures"}.get(library, library)
        return f"{kind.__name__} ({library})" + _batch_note(self.batch_size)

    def _payload(self, fun: FlatFunction) -> object:
        return fun

    def _submit(self, task: _Task) -> Future[_ChunkOutcome]:
        return self.executor.submit(_run_task, task)

    def _stop_flag(self) -> _StopFlag | None:
        return _StopFlag()  # reaches threads of this process; a pickled copy is never set

    def _request_stop(self, flag: _StopFlag | None) -> None:
        if flag is not None:
            flag.value = True

    def _finish(self, flag: _StopFlag | None, stragglers: list[Future[_ChunkOutcome]]) -> None:
        del flag
        for future in stragglers:
            future.cancel()  # dask's futures pass it on to the cluster


def make_engine(
    executor: int | Executor | Engine | None, *, batch_size: int | None = None
) -> Engine:
    """Choose the engine for a check's ``executor`` argument.

    Parameters
    ----------
    executor : None, int, concurrent.futures.Executor or Engine
        ``None``: evaluate in this process. An int ``n``: in ``n`` worker
        processes (1 means this process). An executor: on it (a dask
        ``Client.get_executor()``, a thread pool...). An engine: itself.
    batch_size : int, optional
        Points per call of the function's ``batch`` method, if it has one.
        An engine passed in keeps its own.

    Returns
    -------
    Engine
        A new engine, or `executor` itself when it is one. Close only the
        engines this function created: one passed in belongs to the caller.

    Raises
    ------
    InputError
        If `executor` is none of these, or an int below 1.

    Examples
    --------
    >>> make_engine(None).description, make_engine(1).description
    ('serial', 'serial')
    >>> make_engine(None, batch_size=64).description
    'serial, batches of 64'
    >>> make_engine(2).description
    '2 worker processes'
    """
    if isinstance(executor, Engine):
        return executor
    if executor is None:
        return SerialEngine(batch_size)
    if isinstance(executor, int) and not isinstance(executor, bool):
        workers = _check_workers(executor, "executor")
        return (
            SerialEngine(batch_size)
            if workers == 1
            else ProcessEngine(workers, batch_size=batch_size)
        )
    if isinstance(executor, Executor):
        return ExecutorEngine(executor, batch_size=batch_size)
    raise InputError(
        f"`executor` is {_describe(executor)}; expected None (evaluate in this process), a "
        "number of worker processes (an int >= 1), a concurrent.futures.Executor (e.g. a dask "
        "`client.get_executor()`) or a gradproof Engine. Pass e.g. `executor=4` for four "
        "processes, or `executor=None`."
    )


# -- one sample call's measurements ------------------------------------------------------------
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


class _Flag(Protocol):
    """What a task checks once per coordinate: stop when `value` is true."""

    @property
    def value(self) -> Any: ...


class _StopFlag:
    """A stop flag for tasks in this process; a copy sent to another process is never set."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = False

    def __reduce__(self) -> tuple[Any, ...]:
        return (_StopFlag, ())


class _Deadline:
    """A stop flag that sets itself at a :func:`time.monotonic` instant."""

    __slots__ = ("deadline",)

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline

    @property
    def value(self) -> bool:
        return time.monotonic() >= self.deadline


# -- evaluating chunks --------------------------------------------------------------------------
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
    except Exception as exc:  # the function's: returned, see Note [Stopping early]
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


# -- tasks for workers --------------------------------------------------------------------------
class _Task(NamedTuple):
    """One chunk of coordinates, with everything a worker needs to evaluate it."""

    fun: object  # the function, or its pickle (bytes) for a process pool
    x: FloatArray
    indices: npt.NDArray[np.intp]
    points: FloatArray  # (k, m): the chunk's column values only
    batch_size: int | None
    parent: tuple[int, int]  # (pid, id(fun)) of the caller: tells copies of fun from fun
    private_x: bool  # x was pickled for this task alone: perturb it in place
    stop: _StopFlag | None = None  # the caller's flag, when the task runs in its process


def _run_task(task: _Task) -> _ChunkOutcome:
    """Evaluate one chunk in a worker (top level, so that pickle can send it).

    Never raises for the function's errors: they come back in the outcome
    (from another process, as a :class:`_PortableError`), so that whatever
    ``future.result()`` raises is a fault of the workers (Note [Stopping early]).
    """
    stop = _WORKER_STOP if _WORKER_STOP is not None else task.stop
    in_caller = os.getpid() == task.parent[0]
    remote = not in_caller
    try:
        fun = _load(task.fun)
        remote = (os.getpid(), id(fun)) != task.parent
        own_x = task.private_x and bool(task.x.flags.writeable)
        runner = _ChunkRunner(fun, task.x, task.batch_size, rows=task.points.size, own_x=own_x)
        outcome = runner.run(task.indices, task.points, stop)
    except Exception as exc:  # loading the function, or a value that is not a number
        outcome = _ChunkOutcome(np.full(task.points.shape, np.nan), 0, 0, "error", exc)
    if isinstance(outcome.error, BaseException) and not in_caller:
        outcome = outcome._replace(error=_PortableError.capture(outcome.error))
    return outcome._replace(remote=remote)


def _start_worker(flag: Any) -> None:
    """Set up a worker process of a :class:`ProcessEngine`: its stop flag, and no Ctrl-C.

    Ctrl-C reaches the parent only, which asks the workers to stop through the flag.
    """
    global _WORKER_STOP
    _WORKER_STOP = flag
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _rebuild(error: object) -> BaseException | None:
    """Return the exception of an outcome as the caller should see it."""
    if isinstance(error, _PortableError):
        return error.rebuild()
    if error is None or isinstance(error, BaseException):
        return error
    return RuntimeError(repr(error))


def _exit_status(code: int) -> str:
    if code >= 0:
        return f"exit code {code}"
    try:
        return f"killed by {signal.Signals(-code).name}"
    except ValueError:
        return f"killed by signal {-code}"


def _serialize(fun: FlatFunction) -> bytes:
    """Pickle `fun` for worker processes: with cloudpickle if installed (lambdas, closures)."""
    try:
        cloudpickle: Any = importlib.import_module("cloudpickle")
    except ImportError:
        cloudpickle = None
    try:
        return bytes(cloudpickle.dumps(fun) if cloudpickle is not None else pickle.dumps(fun))
    except Exception as exc:
        name = _function_name(fun)
        if cloudpickle is None:
            fixes = (
                f"Define `{name}` at the top level of a module (not as a lambda or a nested "
                "function), or `pip install cloudpickle` to send lambdas and closures, or pass "
                "`executor=None` to evaluate in this process."
            )
        else:
            fixes = (
                f"Make sure `{name}` holds no open files, locks or connections, or pass "
                "`executor=None` to evaluate in this process."
            )
        raise InputError(
            f"The loss `{name}` cannot be sent to worker processes: pickling it raised "
            f"{type(exc).__name__}: {exc}. {fixes}"
        ) from exc


def _load(payload: object) -> FlatFunction:
    if not isinstance(payload, bytes):
        return payload  # type: ignore[return-value]  # an executor's task: fun as submitted
    try:
        fun: FlatFunction = pickle.loads(payload)
    except Exception as exc:
        raise InputError(
            f"A worker process could not load the loss ({type(exc).__name__}: {exc}). With "
            "the 'spawn' start method the loss must be importable: define it in a module, "
            "not in `__main__` or a notebook, or pass `executor=None`."
        ) from None
    return fun


def _terminate(pool: ProcessPoolExecutor) -> None:
    terminate = getattr(pool, "terminate_workers", None)  # Python 3.14+
    if terminate is not None:
        terminate()
        return
    # No public way before 3.14: the pool notices its dead workers and cleans up.
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        process.terminate()


def _survives_pickle(exc: BaseException) -> bool:
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        return False
    return True


class _RemoteTraceback(Exception):
    """The traceback of an exception raised in a worker, as text (set as ``__cause__``)."""

    def __str__(self) -> str:
        return f"\n'''\n{self.args[0]}'''"


class _PortableError(Exception):
    """An exception from a worker, with its traceback as text, in a form pickle can send.

    The exception itself travels when pickle can rebuild it. Pickle rebuilds
    an exception as ``type(exc)(*exc.args)``, which fails for classes with
    other required arguments (keyword-only ones, say); those travel as their
    class, arguments and attributes, and the parent rebuilds them without
    calling ``__init__``.
    """

    def __init__(
        self,
        kind: type[BaseException],
        args: tuple[Any, ...],
        state: dict[str, Any],
        text: str,
        original: BaseException | None = None,
    ) -> None:
        super().__init__(kind, args, state, text, original)

    @classmethod
    def capture(cls, exc: BaseException) -> _PortableError:
        text = "".join(traceback.format_exception(exc))
        if _survives_pickle(exc):
            return cls(type(exc), exc.args, {}, text, exc)
        portable = cls(type(exc), exc.args, dict(vars(exc)), text)
        if _survives_pickle(portable):
            return portable
        return cls(RuntimeError, (f"{type(exc).__qualname__}: {exc}",), {}, text)

    def rebuild(self) -> BaseException:
        """Return the exception, its worker's traceback chained as ``__cause__``."""
        kind, args, state, text, original = self.args
        if original is not None:
            exc: BaseException = original
        else:
            exc = kind.__new__(kind, *args)
            exc.args = args
            vars(exc).update(state)
        exc.__cause__ = _RemoteTraceback(text)
        return exc


# -- scripts that workers would run again (Note [Unguarded scripts]) ----------------------------
def _main_script_problem() -> str | None:
    """Say why worker processes started by spawn or forkserver cannot be used here, if so."""
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if main is None or not isinstance(path, str):
        return None  # an interactive session or `python -c`: workers do not run it again
    if getattr(main, "__spec__", None) is None and not os.path.isfile(path):
        return (
            f"the main script ({path}) cannot be read again by worker processes, so they would "
            "fail to start; the evaluations ran in this process. Run the script from a file, "
            'under an `if __name__ == "__main__":` guard, to use worker processes.'
        )
    line = _main_line(vars(main))
    if line is None:
        return None
    guarded = _guarded_lines(os.path.abspath(path))
    if guarded is None or any(first <= line <= last for first, last in guarded):
        return None
    return (
        "this script calls gradproof at its top level (line "
        f'{line}) without an `if __name__ == "__main__":` guard, so worker processes would '
        "run it again; the evaluations ran in this process. Put the call under such a guard "
        "to use worker processes."
    )


def _main_line(main: dict[str, Any]) -> int | None:
    """Return the line of the main script's top-level code that led here, if it runs."""
    frame: FrameType | None = sys._getframe(1)
    line = None
    while frame is not None:
        if frame.f_code.co_name == "<module>" and frame.f_globals is main:
            line = frame.f_lineno
        frame = frame.f_back
    return line


@functools.lru_cache(maxsize=8)
def _guarded_lines(path: str) -> tuple[tuple[int, int], ...] | None:
    """Return the lines of the file's ``if __name__ == "__main__":`` blocks (None: unreadable)."""
    try:
        with open(path, "rb") as file:
            tree = ast.parse(file.read(), filename=path)
    except (OSError, SyntaxError, ValueError):
        return None
    ranges = []
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and _is_main_test(node.test):
            ranges.append((node.body[0].lineno, node.body[-1].end_lineno or node.lineno))
    return tuple(ranges)


def _is_main_test(test: ast.expr) -> bool:
    """Whether `test` is ``__name__ == "__main__"`` (either way round)."""
    if not (isinstance(test, ast.Compare) and len(test.ops) == 1):
        return False
    if not isinstance(test.ops[0], ast.Eq):
        return False
    sides = {_literal(test.left), _literal(test.comparators[0])}
    return sides == {"name:__name__", "str:__main__"}


def _literal(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return f"name:{node.id}"
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return f"str:{node.value}"
    return None


# -- small helpers ------------------------------------------------------------------------------
def _order(x: FloatArray, indices: npt.NDArray[np.intp] | None) -> npt.NDArray[np.intp]:
    if indices is None:
        return np.arange(x.size)
    return np.asarray(indices, dtype=np.intp).reshape(-1)


def _empty(x: FloatArray, columns: tuple[FloatArray, ...]) -> tuple[FloatArray, BoolArray]:
    return np.full((len(columns), x.size), np.nan), np.zeros(x.size, dtype=bool)


def _points(columns: tuple[FloatArray, ...], chunk: npt.NDArray[np.intp]) -> FloatArray:
    """Take the chunk's column values, ``(k, m)``: all a task needs of the ``k`` columns."""
    return np.stack([column[chunk] for column in columns])


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


def _available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _executor_workers(executor: Executor) -> int:
    """How many tasks an executor runs at once, as far as it says."""
    count = getattr(executor, "_max_workers", None)  # the standard library's pools
    if isinstance(count, int) and count > 0:
        return count
    nthreads = getattr(getattr(executor, "_client", None), "nthreads", None)  # dask
    if callable(nthreads):
        try:
            total = sum(nthreads().values())
        except Exception:  # a cluster that cannot answer now: plan for this machine
            total = 0
        if total > 0:
            return int(total)
    return _available_cpus()


def _check_workers(workers: object, name: str) -> int:
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise InputError(
            f"`{name}` is {workers!r}; a number of worker processes must be an int >= 1. "
            f"Pass e.g. `{name}=4`, or `executor=None` to evaluate in this process."
        )
    return workers


def _check_batch_size(batch_size: object) -> int | None:
    if batch_size is None:
        return None
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(
            f"`batch_size` is {batch_size!r}; expected an int >= 1, the number of points per "
            "call of the loss's `batch` method. Pass e.g. `batch_size=64`, or None to "
            "evaluate one point per call."
        )
    return batch_size


def _batch_note(batch_size: int | None) -> str:
    return f", batches of {batch_size}" if batch_size is not None and batch_size >= 2 else ""


def _function_name(fun: object) -> str:
    target = getattr(fun, "loss", fun)  # a LossEvaluator: name the caller's loss
    name = getattr(target, "__qualname__", None)
    return name if isinstance(name, str) else type(target).__qualname__


def _describe(value: object) -> str:
    kind = type(value)
    module = "" if kind.__module__ == "builtins" else f"{kind.__module__}."
    text = repr(value)
    text = text if len(text) <= 60 else f"{text[:57]}..."
    return f"{text} (a {module}{kind.__qualname__})"
