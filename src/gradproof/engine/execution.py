"""Engines that run the finite-difference evaluations of a check: their public home.

A check evaluates the loss with one coordinate moved at a time: ``k`` points
per coordinate, tens of thousands of evaluations for a real model. An
:class:`Engine` runs them, in this process (:class:`SerialEngine`), in worker
processes (:class:`ProcessEngine`) or on any :class:`concurrent.futures.Executor`
the caller brings, such as a dask cluster's (:class:`ExecutorEngine`). All
answer the question of :func:`gradproof.numerics.finite_diff.sample` and return its
:class:`~gradproof.numerics.finite_diff.Samples`; :func:`make_engine` chooses one
for a check's ``executor`` argument.

The engines live in modules of their own, each with the Notes that explain it:

- :mod:`~gradproof.engine.base`: the :class:`Engine` interface
  (Note [Identical results]);
- :mod:`~gradproof.engine.chunks`: evaluating one chunk of coordinates (Note [Chunks]);
- :mod:`~gradproof.engine.serial`: :class:`SerialEngine`, and the record of a sweep;
- :mod:`~gradproof.engine.pools`: what the engines with workers share
  (Notes [Stopping early] and [Lost workers]);
- :mod:`~gradproof.engine.processes`: :class:`ProcessEngine`;
- :mod:`~gradproof.engine.executors`: :class:`ExecutorEngine`;
- :mod:`~gradproof.engine.tasks`: what crosses to a worker (Note [One copy of x per task]);
- :mod:`~gradproof.engine.scripts`: main scripts that workers would run again
  (Note [Unguarded scripts]).
"""

from __future__ import annotations

from concurrent.futures import Executor

from gradproof.engine.base import Engine, _check_workers
from gradproof.engine.executors import ExecutorEngine
from gradproof.engine.processes import ProcessEngine
from gradproof.engine.serial import SerialEngine
from gradproof.errors import InputError

__all__ = ["Engine", "ExecutorEngine", "ProcessEngine", "SerialEngine", "make_engine"]


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


def _describe(value: object) -> str:
    kind = type(value)
    module = "" if kind.__module__ == "builtins" else f"{kind.__module__}."
    text = repr(value)
    text = text if len(text) <= 60 else f"{text[:57]}..."
    return f"{text} (a {module}{kind.__qualname__})"
