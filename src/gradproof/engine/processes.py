"""The engine that evaluates in a pool of worker processes of its own.

:class:`ProcessEngine` starts its pool on first use, with the forkserver or
spawn start method, and gives each worker the pool's stop flag in shared
memory (Note [Stopping early] in :mod:`gradproof.engine.pools`). A broken pool is
replaced by a fresh one (Note [Lost workers] there), and a main script that the
workers would run again makes it evaluate in this process instead (Note
[Unguarded scripts] in :mod:`gradproof.engine.scripts`).
"""

from __future__ import annotations

import multiprocessing
import signal
import weakref
from concurrent.futures import Future, ProcessPoolExecutor
from multiprocessing.context import BaseContext
from typing import Any

from gradproof._typing import FlatFunction, FloatArray
from gradproof._words import counted
from gradproof.engine.base import _batch_note
from gradproof.engine.chunks import _ChunkOutcome
from gradproof.engine.pools import _THREADED_SHARE, _PoolEngine
from gradproof.engine.scripts import _main_script_problem
from gradproof.engine.tasks import (
    _pack,
    _Parcel,
    _run_task,
    _serialize,
    _start_worker,
    _StopFlag,
    _Task,
)

__all__ = ["ProcessEngine"]


_POOL_START_SECONDS = 0.7
"""About what starting worker processes costs a check, its first sweep's dispatch included.

Measured on an idle 2-core Linux machine: 0.3 s to start two forkserver workers, and
``check(executor=2)`` on a 1e4-entry sweep 0.64 s slower than half the serial time; with
0.5 s the pool was chosen for that sweep and came out 5 % slower than serial."""


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
    (Note [Lost workers] in :mod:`gradproof.engine.pools`).

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
    without an ``if __name__ == "__main__":`` guard, Note [Unguarded scripts]
    in :mod:`gradproof.engine.scripts`).

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
        self._sendable: weakref.ref[Any] | None = None  # the evaluator last seen to pickle

    @property
    def description(self) -> str:
        """``"N worker processes"``, with the batch size when batching."""
        n = self.workers
        return f"{counted(n, 'worker process', 'worker processes')}" + _batch_note(self.batch_size)

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
        return _POOL_START_SECONDS if self._pool is None else super()._start_seconds()

    def _payload(self, fun: FlatFunction) -> object:
        return _serialize(fun)

    def _threaded(self, busy: float, cpus: int) -> bool:
        # Note [Threaded losses] in pools.py: the workers would share these cores.
        return cpus >= 2 and busy >= _THREADED_SHARE * cpus

    def _require_sendable(self, fun: FlatFunction) -> None:
        """Pickle the function once per loss evaluator, to refuse an unpicklable loss early.

        A check samples many functions of one evaluator (the sweep, subsets,
        probes, the noise ladder's line), and short ones run in this process:
        pickling each of them only to see that it can be pickled would cost
        as much as the pickling the workers need (8 MB at a million
        parameters), for every call of a directional search.
        """
        owner = getattr(fun, "evaluator", fun)
        if self._sendable is not None and self._sendable() is owner:
            return
        _serialize(fun)
        try:
            self._sendable = weakref.ref(owner)
        except TypeError:  # an object without weak references: check it every time
            self._sendable = None

    def _ship(self, payload: object, x: FloatArray) -> _Parcel | None:
        """Write the function and the point for the workers to read once.

        Note [Shipped once per worker] in :mod:`gradproof.engine.tasks`.
        """
        assert isinstance(payload, bytes)
        try:
            return _pack(payload, x)
        except OSError:  # no writable temporary folder: every task carries them
            return None

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


def _exit_status(code: int) -> str:
    if code >= 0:
        return f"exit code {code}"
    try:
        return f"killed by {signal.Signals(-code).name}"
    except ValueError:
        return f"killed by signal {-code}"


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
