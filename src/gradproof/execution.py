"""Engines that run the finite-difference evaluations of a check.

A check evaluates the loss with one coordinate moved at a time: ``k`` points
per coordinate, tens of thousands of evaluations for a real model. An
:class:`Engine` runs them, in this process (:class:`SerialEngine`), in worker
processes (:class:`ProcessEngine`) or on any :class:`concurrent.futures.Executor`
the caller brings, such as a dask cluster's (:class:`ExecutorEngine`). All
answer the question of :func:`gradproof.finite_diff.sample` and return its
:class:`~gradproof.finite_diff.Samples`.

Note [Identical results]
    Every engine gives the values :func:`~gradproof.finite_diff.sample` gives,
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
    evaluation takes a microsecond or a second. The pooled engines submit
    about four chunks per worker: enough to balance the load when some chunks
    run slower, few enough that sending the function and the point to every
    task costs little. The split depends only on the indices and the number of
    workers, never on timing.

Note [One copy of x per task]
    A task carries the point `x` and, for its ``m`` coordinates, only their
    ``k`` column values (a ``(k, m)`` array), not the ``k`` full columns: it
    sends ``O(n + k m)`` numbers instead of ``O(k n)``. The worker moves one
    coordinate of a single work vector, evaluates, and restores it, so it
    holds one copy of `x` (or one ``(B, n)`` stack when batching) whatever
    the chunk's size.
"""

from __future__ import annotations

import abc
import importlib
import math
import multiprocessing
import os
import pickle
import signal
import time
import traceback
from concurrent.futures import Executor, Future, ProcessPoolExecutor, as_completed
from multiprocessing.context import BaseContext
from types import TracebackType
from typing import Any, NamedTuple, TypeVar

import numpy as np
import numpy.typing as npt

from gradproof._typing import BoolArray, FlatFunction, FloatArray
from gradproof.errors import InputError
from gradproof.finite_diff import Samples
from gradproof.progress import Progress

__all__ = ["Engine", "ExecutorEngine", "ProcessEngine", "SerialEngine", "make_engine"]

_CHUNK_SECONDS = 0.05
"""How long a serial chunk should take: the progress bar moves about 20 times a second."""

_MAX_CHUNK = 4096
"""The most coordinates in a serial chunk (bounds its ``(k, m)`` arrays)."""

_CHUNKS_PER_WORKER = 4

_EngineT = TypeVar("_EngineT", bound="Engine")


class Engine(abc.ABC):
    """Runs the finite-difference evaluations of a check.

    Attributes
    ----------
    remote_evals : int
        Evaluations made outside the calling process, by copies of the
        function: counters kept by the function itself do not see them.
        0 for a serial engine.

    See Also
    --------
    make_engine : Choose an engine from a user's ``executor`` argument.
    """

    remote_evals: int

    def __init__(self) -> None:
        self.remote_evals = 0

    @abc.abstractmethod
    def sample(
        self,
        fun: FlatFunction,
        x: FloatArray,
        columns: tuple[FloatArray, ...],
        *,
        indices: npt.NDArray[np.intp] | None = None,
        progress: Progress | None = None,
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

        Returns
        -------
        Samples
            The same values as :func:`gradproof.finite_diff.sample`, bit for
            bit. After Ctrl-C, what was complete is returned with
            ``interrupted=True`` (NaN and not measured elsewhere).

        Raises
        ------
        InputError
            If `fun` cannot be sent to worker processes, or ``fun.batch``
            returns the wrong shape.
        Exception
            Whatever `fun` raises, with its type and message, also when it
            was raised in a worker process.
        """

    @property
    @abc.abstractmethod
    def description(self) -> str:
        """How the evaluations run, for reports: e.g. ``"4 worker processes"``."""

    # Not abstract: engines without resources have nothing to close.
    def close(self) -> None:  # noqa: B027
        """Release the engine's resources (worker processes); safe to call twice."""

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
    ) -> Samples:
        """Evaluate in this process (see :meth:`Engine.sample`)."""
        order = _order(x, indices)
        values, measured = _empty(x, columns)
        n_evals = 0
        interrupted = False
        if order.size == 0:
            return Samples(values=values, measured=measured, n_evals=0, interrupted=False)
        runner = _ChunkRunner(fun, x, self.batch_size, rows=len(columns) * order.size)
        unit = runner.unit(len(columns))
        size, start = unit, 0
        try:
            while start < order.size:
                chunk = order[start : start + size]
                began = time.perf_counter()
                outcome = runner.run(chunk, _points(columns, chunk))
                elapsed = time.perf_counter() - began
                _scatter(values, measured, chunk, outcome)
                n_evals += outcome.n_evals
                start += chunk.size
                if progress is not None:
                    progress.advance(outcome.n_evals)
                if outcome.interrupted:
                    interrupted = True
                    break
                size = _next_chunk_size(size, elapsed, unit)
        except KeyboardInterrupt:  # between chunks: the work vector is already restored
            interrupted = True
        return Samples(values=values, measured=measured, n_evals=n_evals, interrupted=interrupted)


class _PoolEngine(Engine):
    """Submits about four chunks per worker to an executor and gathers them as they complete."""

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
        """Start one task."""

    def _abandon(self, futures: list[Future[_ChunkOutcome]]) -> None:
        """Give up on tasks not yet complete, after an interrupt or an error."""
        for future in futures:
            future.cancel()

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
    ) -> Samples:
        """Evaluate in chunks on the workers (see :meth:`Engine.sample`)."""
        order = _order(x, indices)
        values, measured = _empty(x, columns)
        n_evals = 0
        interrupted = False
        if order.size == 0:
            return Samples(values=values, measured=measured, n_evals=0, interrupted=False)
        payload = self._payload(fun)
        parent = (os.getpid(), id(fun))
        pending: dict[Future[_ChunkOutcome], npt.NDArray[np.intp]] = {}
        try:
            for chunk in _split(order, self.workers):
                task = _Task(
                    fun=payload,
                    x=x,
                    indices=chunk,
                    points=_points(columns, chunk),
                    batch_size=self.batch_size,
                    parent=parent,
                    private_x=self._private_x,
                )
                pending[self._submit(task)] = chunk
            for future in as_completed(list(pending)):
                chunk = pending.pop(future)
                outcome = _outcome(future)
                n_evals += self._record(values, measured, chunk, outcome)
                if progress is not None:
                    progress.advance(outcome.n_evals)
                if outcome.interrupted:
                    interrupted = True
                    break
        except KeyboardInterrupt:
            interrupted = True
        except BaseException:
            self._abandon(list(pending))
            raise
        if interrupted:
            # Keep the chunks that completed while the interrupt was handled.
            for future, chunk in list(pending.items()):
                if future.done() and not future.cancelled() and future.exception() is None:
                    del pending[future]
                    n_evals += self._record(values, measured, chunk, future.result())
            self._abandon(list(pending))
        return Samples(values=values, measured=measured, n_evals=n_evals, interrupted=interrupted)

    def _record(
        self,
        values: FloatArray,
        measured: BoolArray,
        chunk: npt.NDArray[np.intp],
        outcome: _ChunkOutcome,
    ) -> int:
        _scatter(values, measured, chunk, outcome)
        if outcome.remote:
            self.remote_evals += outcome.n_evals
        return outcome.n_evals


def _safe_context() -> BaseContext:
    """Return the forkserver context where the platform has it, else spawn."""
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")


class ProcessEngine(_PoolEngine):
    """Run the evaluations in a pool of worker processes owned by the engine.

    The pool starts on first use and stops at :meth:`close` (or at the end of
    a ``with`` block). Its workers ignore Ctrl-C: the interrupt reaches this
    process only, which stops the workers and returns what was complete.

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

    @property
    def description(self) -> str:
        """``"N worker processes"``, with the batch size when batching."""
        n = self.workers
        return f"{n} worker process{'es' if n != 1 else ''}" + _batch_note(self.batch_size)

    def close(self) -> None:
        """Stop the worker processes, if they were started; safe to call twice."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    def _payload(self, fun: FlatFunction) -> object:
        return _serialize(fun)

    def _submit(self, task: _Task) -> Future[_ChunkOutcome]:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                max_workers=self.workers, mp_context=self._mp_context, initializer=_ignore_sigint
            )
        return self._pool.submit(_run_task, task)

    def _abandon(self, futures: list[Future[_ChunkOutcome]]) -> None:
        # Running tasks cannot be cancelled; after Ctrl-C or an error nobody wants their
        # results, so stop the workers instead of waiting for them (a fresh pool starts on
        # the next call). The futures are not cancelled here: Python 3.11's pool fails on
        # cancelled futures when it finds its workers gone; shutting down cancels them.
        del futures
        pool, self._pool = self._pool, None
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
        How many tasks can run at once, to plan about four chunks per worker;
        by default read from the executor (its ``max_workers``, or the threads
        of a dask cluster), else the CPUs of this machine.
    batch_size : int, optional
        Evaluate this many points per call of ``fun.batch`` when the function
        has one (ignored otherwise).

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


# -- evaluating chunks --------------------------------------------------------------------------
class _ChunkOutcome(NamedTuple):
    """The values of one chunk of coordinates: ``values[j, c]`` for ``indices[c]``."""

    values: FloatArray  # (k, m), NaN for the coordinates after `done`
    done: int  # the first `done` coordinates of the chunk have all their values
    n_evals: int
    interrupted: bool
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

    def run(self, indices: npt.NDArray[np.intp], points: FloatArray) -> _ChunkOutcome:
        """Evaluate coordinates `indices`; ``points[j, c]`` is the j-th value of ``indices[c]``."""
        if self.batch is None:
            return _sample_single(self.fun, self.work, indices, points)
        return _sample_batched(self.batch, self.x, self.stack, indices, points)


def _sample_single(
    fun: FlatFunction, work: FloatArray, indices: npt.NDArray[np.intp], points: FloatArray
) -> _ChunkOutcome:
    """One evaluation per call, as :func:`gradproof.finite_diff.sample` does it."""
    k, m = points.shape
    values = np.full((k, m), np.nan)
    # Python ints and floats index and fill numpy arrays faster than numpy scalars do; this
    # loop runs once per evaluation, and its cost is the overhead of a whole sweep.
    targets, rows = indices.tolist(), points.T.tolist()
    measured: list[list[float]] = []
    n_evals = 0
    interrupted = False
    try:
        for i, row in zip(targets, rows, strict=True):
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
        interrupted = True
    if measured:
        values[:, : len(measured)] = np.array(measured, dtype=np.float64).T
    return _ChunkOutcome(values, len(measured), n_evals, interrupted=interrupted)


def _sample_batched(
    batch: Any,
    x: FloatArray,
    stack: FloatArray,
    indices: npt.NDArray[np.intp],
    points: FloatArray,
) -> _ChunkOutcome:
    """Up to ``len(stack)`` evaluations per call of `batch`; each row moves one coordinate.

    The (coordinate, offset) pairs are taken coordinate by coordinate, so an
    interrupt loses at most the coordinates of the batch it hit. Only the
    entries a batch changed are restored afterwards: the stack is built once.
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
    try:
        for start in range(0, total, stack.shape[0]):
            stop = min(start + stack.shape[0], total)
            rows = np.arange(stop - start)
            columns = target[start:stop]
            stack[rows, columns] = value[start:stop]
            n_evals += stop - start
            try:
                out = batch(stack[: stop - start])
            finally:
                stack[rows, columns] = x[columns]
            values[offset[start:stop], coordinate[start:stop]] = _batch_values(out, stop - start)
            completed = stop
    except KeyboardInterrupt:
        done = completed // k
        values[:, done:] = np.nan  # a coordinate counts only with all its k values
        return _ChunkOutcome(values, done, n_evals, interrupted=True)
    return _ChunkOutcome(values, m, n_evals, interrupted=False)


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


def _run_task(task: _Task) -> _ChunkOutcome:
    """Evaluate one chunk in a worker (top level, so that pickle can send it)."""
    fun = _load(task.fun)
    own_x = task.private_x and bool(task.x.flags.writeable)
    in_caller = os.getpid() == task.parent[0]
    try:
        runner = _ChunkRunner(fun, task.x, task.batch_size, rows=task.points.size, own_x=own_x)
        outcome = runner.run(task.indices, task.points)
    except Exception as exc:
        if in_caller or _survives_pickle(exc):
            raise
        raise _PortableError.capture(exc) from None
    return outcome._replace(remote=(os.getpid(), id(fun)) != task.parent)


def _outcome(future: Future[_ChunkOutcome]) -> _ChunkOutcome:
    try:
        return future.result()
    except _PortableError as err:
        raise err.rebuild() from _RemoteTraceback(err.args[3])


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


def _ignore_sigint() -> None:
    """Let Ctrl-C reach the parent only, which stops the workers itself."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


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
    """An exception from a worker that pickle cannot rebuild, in a form that it can.

    Pickle rebuilds an exception as ``type(exc)(*exc.args)``, which fails for
    classes with other required arguments (keyword-only ones, say); the parent
    rebuilds it without calling ``__init__`` instead.
    """

    def __init__(
        self, kind: type[BaseException], args: tuple[Any, ...], state: dict[str, Any], text: str
    ) -> None:
        super().__init__(kind, args, state, text)

    @classmethod
    def capture(cls, exc: BaseException) -> _PortableError:
        text = "".join(traceback.format_exception(exc))
        portable = cls(type(exc), exc.args, dict(vars(exc)), text)
        if _survives_pickle(portable):
            return portable
        return cls(RuntimeError, (f"{type(exc).__qualname__}: {exc}",), {}, text)

    def rebuild(self) -> BaseException:
        kind, args, state, _ = self.args
        exc: BaseException = kind.__new__(kind, *args)
        exc.args = args
        vars(exc).update(state)
        return exc


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


def _split(order: npt.NDArray[np.intp], workers: int) -> list[npt.NDArray[np.intp]]:
    """About four chunks per worker, of near-equal sizes, in order (see Note [Chunks])."""
    return np.array_split(order, min(order.size, _CHUNKS_PER_WORKER * workers))


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
