"""What crosses to a worker: the task, the function it carries, the exceptions that come back.

A pooled engine sends each chunk of coordinates as a :class:`_Task` to
:func:`_run_task`, which evaluates it in the worker (through
:class:`~gradproof.engine.chunks._ChunkRunner`) and returns its outcome. A
process pool receives the function pickled (:func:`_serialize`, with cloudpickle
where installed; :func:`_load` in the worker); an exception of the function
raised in another process comes back as a :class:`_PortableError`, with its
traceback as text, and :func:`_rebuild` turns it into the exception the caller
sees.

Note [One copy of x per task]
    A task carries, for its ``m`` coordinates, only their indices and their
    ``k`` column values (a ``(k, m)`` array), not the ``k`` full columns. The
    worker moves one coordinate of a single work vector, evaluates, and
    restores it, so it holds one copy of `x` (or one ``(B, n)`` stack when
    batching) whatever the chunk's size.

Note [Shipped once per worker]
    A process pool's tasks do not carry the function or the point: the
    parent writes them, pickled, to one temporary file per sweep (a
    :class:`_Parcel`, in ``/dev/shm`` where there is one), and every task
    carries only the file's name and key. A worker reads the file at its
    first task of the sweep and keeps what it loaded for the next ones (the
    last :data:`_PARCELS_KEPT` sweeps), so the function, its data and the
    point cross to each worker once per sweep, not once per task: at a
    million parameters the point alone is 8 MB. The parent removes the file
    when the sweep ends. On a Dask cluster (an executor from
    ``client.get_executor()``) the function and the point are scattered to
    every worker once per sweep instead (``client.scatter(...,
    broadcast=True)``), and each task receives them from its worker's memory
    (:func:`_run_shipped`). Other executors' tasks (threads) share them in
    this process.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import pickle
import signal
import tempfile
import traceback
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from gradproof._typing import FlatFunction, FloatArray
from gradproof.engine.chunks import _ChunkOutcome, _ChunkRunner
from gradproof.errors import InputError

_WORKER_STOP: Any = None
"""In a worker process of a ``ProcessEngine``: the pool's shared stop flag."""


class _StopFlag:
    """A stop flag for tasks in this process; a copy sent to another process is never set."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = False

    def __reduce__(self) -> tuple[Any, ...]:
        return (_StopFlag, ())


class _Parcel(NamedTuple):
    """Where a worker finds a sweep's function and point (Note [Shipped once per worker])."""

    key: str
    path: str


_PARCELS_KEPT = 2
"""A worker keeps the function and point of this many sweeps (the current one, the last one)."""

_OPENED: dict[str, tuple[FlatFunction, FloatArray]] = {}
"""In a worker process: the parcels it has loaded, oldest first."""


def _pack(payload: bytes, x: FloatArray) -> _Parcel:
    """Write a sweep's pickled function and its point to a temporary file, once."""
    folder = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    handle, path = tempfile.mkstemp(prefix="gradproof-", suffix=".pkl", dir=folder)
    with os.fdopen(handle, "wb") as out:
        pickle.dump((payload, x), out, protocol=pickle.HIGHEST_PROTOCOL)
    return _Parcel(key=os.path.basename(path), path=path)


def _unpack(parcel: _Parcel) -> tuple[FlatFunction, FloatArray]:
    """Return the function and the point of a parcel, loading them at the first task only."""
    found = _OPENED.get(parcel.key)
    if found is None:
        with open(parcel.path, "rb") as source:
            payload, x = pickle.load(source)
        found = _OPENED[parcel.key] = (_load(payload), x)
        while len(_OPENED) > _PARCELS_KEPT:
            del _OPENED[next(iter(_OPENED))]
    return found


def _discard(parcel: _Parcel | None) -> None:
    """Remove a parcel's file once its sweep is over (the workers keep what they loaded)."""
    if parcel is not None:
        with contextlib.suppress(OSError):
            os.unlink(parcel.path)


class _Task(NamedTuple):
    """One chunk of coordinates, with everything a worker needs to evaluate it."""

    fun: object  # the function; its pickle (bytes); or a _Parcel holding it and the point
    x: FloatArray | None  # None when `fun` is a _Parcel
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
    ``future.result()`` raises is a fault of the workers (Note [Stopping early]
    in :mod:`gradproof.engine.pools`).
    """
    stop = _WORKER_STOP if _WORKER_STOP is not None else task.stop
    in_caller = os.getpid() == task.parent[0]
    remote = not in_caller
    try:
        if isinstance(task.fun, _Parcel):
            # Kept for the next tasks of the sweep: evaluated on a copy (own_x=False).
            fun, x = _unpack(task.fun)
            own_x = False
        else:
            assert task.x is not None
            fun, x = _load(task.fun), task.x
            own_x = task.private_x and bool(x.flags.writeable)
        remote = (os.getpid(), id(fun)) != task.parent
        runner = _ChunkRunner(fun, x, task.batch_size, rows=task.points.size, own_x=own_x)
        outcome = runner.run(task.indices, task.points, stop)
    except Exception as exc:  # loading the function, or a value that is not a number
        outcome = _ChunkOutcome(np.full(task.points.shape, np.nan), 0, 0, "error", exc)
    if isinstance(outcome.error, BaseException) and not in_caller:
        outcome = outcome._replace(error=_PortableError.capture(outcome.error))
    return outcome._replace(remote=remote)


def _run_shipped(task: _Task, shipped: tuple[object, FloatArray]) -> _ChunkOutcome:
    """Evaluate one chunk with the function and point scattered to the worker (Dask)."""
    fun, x = shipped
    return _run_task(task._replace(fun=fun, x=x))


def _start_worker(flag: Any) -> None:
    """Set up a worker process of a ``ProcessEngine``: its stop flag, and no Ctrl-C.

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


def _function_name(fun: object) -> str:
    target = getattr(fun, "loss", fun)  # a LossEvaluator: name the caller's loss
    name = getattr(target, "__qualname__", None)
    return name if isinstance(name, str) else type(target).__qualname__


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
