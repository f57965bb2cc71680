"""The engine that evaluates on the caller's :class:`concurrent.futures.Executor`.

:class:`ExecutorEngine` submits its tasks to any executor: a dask cluster's, a
thread pool. It never shuts the executor down, and it carries its own stop flag
in the tasks, which threads of this process read (Note [Stopping early] in
:mod:`gradproof.engine.pools`).
"""

from __future__ import annotations

from concurrent.futures import Executor, Future, ProcessPoolExecutor
from typing import Any

from gradproof._typing import FlatFunction, FloatArray
from gradproof.engine.base import _batch_note
from gradproof.engine.chunks import _ChunkOutcome
from gradproof.engine.pools import _available_cpus, _PoolEngine
from gradproof.engine.tasks import (
    _Parcel,
    _run_shipped,
    _run_task,
    _serialize,
    _StopFlag,
    _Task,
)

__all__ = ["ExecutorEngine"]


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
    which is short (Note [Stopping early] in :mod:`gradproof.engine.pools`).
    A task whose worker dies is submitted once more; dask, which retries such
    tasks itself, reports ``KilledWorker`` only after several deaths.

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
        self._scattered: Any = None  # Dask: this sweep's function and point on every worker

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

    def _pickles_plainly(self) -> bool:
        """Whether the executor sends tasks with plain pickle (concurrent.futures' processes).

        Note [Plain-pickling executors]
            A :class:`~concurrent.futures.ProcessPoolExecutor` pickles each
            task with the standard pickle, which refuses lambdas and nested
            functions: the error surfaced as a worker that "died", twice. Its
            tasks carry the function already pickled with cloudpickle (as
            :class:`~gradproof.engine.processes.ProcessEngine`'s do), and a
            function that cannot be pickled at all is refused before any
            evaluation with the reason. Dask pickles with cloudpickle itself.
        """
        return isinstance(self.executor, ProcessPoolExecutor)

    def _payload(self, fun: FlatFunction) -> object:
        return _serialize(fun) if self._pickles_plainly() else fun

    def _require_sendable(self, fun: FlatFunction) -> None:
        if self._pickles_plainly():
            _serialize(fun)

    def _ship(self, payload: object, x: FloatArray) -> _Parcel | None:
        """Scatter the function and the point to every Dask worker once (else: None).

        Note [Shipped once per worker] in :mod:`gradproof.engine.tasks`.
        """
        scatter = getattr(getattr(self.executor, "_client", None), "scatter", None)
        if not callable(scatter):
            return None  # threads share them; other executors get them with each task
        try:
            self._scattered = scatter((payload, x), broadcast=True, hash=False)
        except Exception:  # a client that cannot scatter now: every task carries them
            self._scattered = None
            return None
        return _Parcel(key="scattered", path="")

    def _unship(self, parcel: _Parcel | None) -> None:
        scattered, self._scattered = self._scattered, None
        release = getattr(scattered, "release", None)
        if callable(release):
            release()

    def _submit(self, task: _Task) -> Future[_ChunkOutcome]:
        if isinstance(task.fun, _Parcel) and self._scattered is not None:
            return self.executor.submit(_run_shipped, task, self._scattered)
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
