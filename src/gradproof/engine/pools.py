"""What the engines that evaluate on workers share: chunking, submitting, stopping, retrying.

:class:`_PoolEngine` times the function in this process, splits the rest of
the coordinates into chunks, keeps about two tasks per worker submitted, and
gathers the outcomes into the sweep as they complete. Its subclasses say how a
task reaches a worker: :class:`~gradproof.engine.processes.ProcessEngine` owns
a pool of worker processes, :class:`~gradproof.engine.executors.ExecutorEngine`
submits to the caller's executor. See Note [Chunks] in :mod:`gradproof.engine.chunks`.

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
"""

from __future__ import annotations

import abc
import math
import os
import time
from concurrent.futures import FIRST_COMPLETED, Future, wait

import numpy as np
import numpy.typing as npt

from gradproof._typing import FlatFunction, FloatArray
from gradproof.engine.base import Engine, _check_batch_size, _check_workers, _order
from gradproof.engine.chunks import _ChunkOutcome, _ChunkRunner, _points
from gradproof.engine.progress import Progress
from gradproof.engine.serial import _run_serially, _Sweep
from gradproof.engine.tasks import _discard, _Parcel, _rebuild, _StopFlag, _Task
from gradproof.errors import WorkerLostError
from gradproof.numerics.finite_diff import Samples

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

_DISPATCH_SECONDS = 0.05
"""Work below this (in this process's time) runs serially even when workers are ready."""

_THREADED_SHARE = 0.75
"""A loss keeping this share of the CPUs busy alone leaves a process pool nothing to add."""

_BUSY_MIN_SECONDS = 0.005
"""The shortest timing whose CPU-to-wall ratio is trusted to say a loss is multi-threaded."""

_RETRY_PIECES = 4
"""A chunk lost with its worker is retried in this many pieces (Note [Lost workers])."""

_STALL_SECONDS = 60.0
"""With tasks pending, no answer for this long (or 50 tasks' time, if longer) loses them."""

_GRACE_SECONDS = 1.0
"""The least time running tasks get to return what they measured after a stop."""


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

    def _threaded(self, busy: float, cpus: int) -> bool:
        """Whether the loss already uses the cores the workers would need (Note [Threaded losses]).

        Note [Threaded losses]
            A loss that computes with several threads (OpenBLAS and MKL use one
            per core by default, and so do torch and jax) keeps the machine's
            cores busy from this process alone: timed on the first
            coordinates, its CPU time is several times its wall time. Worker
            processes then split the same cores among more threads, and the
            pool was measured 2.4 to 4.5 times *slower* than serial on a
            BLAS-heavy loss of a million parameters on 2 cores. When the loss
            keeps at least :data:`_THREADED_SHARE` of the CPUs busy, the
            sweep runs here, with a note that says why and how to use the
            workers. An executor's workers may be other machines: only a
            process pool, whose workers share these cores, is held back. A
            timing shorter than :data:`_BUSY_MIN_SECONDS` is no evidence: over
            a few microseconds another thread of this process (a framework's
            thread pool waking up) can outweigh the loss.
        """
        del busy, cpus
        return False

    def _require_sendable(self, fun: FlatFunction) -> None:
        """Refuse, before any evaluation, a function that cannot reach the workers."""

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

    def _ship(self, payload: object, x: FloatArray) -> _Parcel | None:
        """Send the function and the point once per worker, if the workers allow it.

        None: every task carries them (Note [Shipped once per worker] in
        :mod:`gradproof.engine.tasks`).
        """
        del payload, x
        return None

    def _unship(self, parcel: _Parcel | None) -> None:
        """Release what :meth:`_ship` sent, once the sweep is over."""
        _discard(parcel)

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
        self._require_sendable(fun)  # refuses an unpicklable loss before any evaluation
        # Time the function on a first few coordinates, in this process (Note [Chunks]
        # in chunks.py), and see how many cores it keeps busy (Note [Threaded losses]).
        cpu, wall = time.process_time(), time.perf_counter()
        done, seconds = _run_serially(
            runner, order, columns, sweep, deadline, budget=_CALIBRATION_SECONDS
        )
        timed = time.perf_counter() - wall
        busy = (time.process_time() - cpu) / max(timed, 1e-9) if timed >= _BUSY_MIN_SECONDS else 0.0
        rest = order[done:]
        if sweep.stop is not None:
            return sweep.samples()
        serial_seconds = seconds * rest.size
        # What the workers can save: all but a 1/W share of the time, at best.
        gain = serial_seconds * (1.0 - 1.0 / max(self.workers, 1))
        if rest.size == 0 or gain < self._start_seconds():
            self._note(
                f"The {self.description} were not used for a small sweep: what was left of it "
                f"after timing the loss would take about {serial_seconds:.2g} s in this process, "
                "and sharing it would save less than starting to use the workers costs "
                f"(about {self._start_seconds():.2g} s)."
            )
            _run_serially(runner, rest, columns, sweep, deadline)
            return sweep.samples()
        cpus = _available_cpus()
        if self._threaded(busy, cpus):
            self._note(
                f"The {self.description} were not used: the loss already keeps about "
                f"{busy:.1f} of this machine's {cpus} cores busy in this process (a "
                "multi-threaded BLAS or framework), so worker processes would only compete "
                "for them. Limit its threads (e.g. OMP_NUM_THREADS=1) to use the workers."
            )
            _run_serially(runner, rest, columns, sweep, deadline)
            return sweep.samples()
        began = time.perf_counter()
        payload = self._payload(fun)  # only now: a sweep evaluated here needs no pickle
        size = x.nbytes + (len(payload) if isinstance(payload, bytes) else 0)
        overhead = time.perf_counter() - began + size / _BYTES_PER_SECOND
        task_seconds = max(_TASK_SECONDS, overhead / _OVERHEAD_SHARE)
        count = max(_CHUNKS_PER_WORKER * self.workers, math.ceil(serial_seconds / task_seconds))
        chunks = np.array_split(rest, min(rest.size, count))
        grace = max(_GRACE_SECONDS, 2.5 * max(task_seconds, seconds))
        stall = max(_STALL_SECONDS, 50 * max(task_seconds, seconds))
        parcel = self._ship(payload, x)
        try:
            carried = payload if parcel is None else parcel
            self._run_pool(fun, carried, x, columns, chunks, sweep, deadline, grace, stall)
        finally:
            self._unship(parcel)
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
                    x=None if isinstance(payload, _Parcel) else x,
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


def _available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
