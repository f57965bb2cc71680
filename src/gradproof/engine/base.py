"""The interface every engine implements, and the checks of its arguments that engines share.

An :class:`Engine` answers the question of :func:`gradproof.numerics.finite_diff.sample`
(the loss, with each coordinate in turn set to each of its given values) and
returns its :class:`~gradproof.numerics.finite_diff.Samples`. The engines
themselves live in :mod:`~gradproof.engine.serial`, :mod:`~gradproof.engine.processes`
and :mod:`~gradproof.engine.executors`; :mod:`gradproof.engine.execution` is their
public home.

Note [Identical results]
    Every engine gives the values :func:`~gradproof.numerics.finite_diff.sample` gives,
    bit for bit. An evaluation sees `x` with exactly one coordinate set to its
    column value, whoever runs it, and the engines only copy the values the
    function returns: they never add, average or reorder them. So a function
    that depends only on its argument returns the same bits in a worker as in
    this process, and the verdict of a check cannot depend on the engine.
    Batched evaluation (``fun.batch``, one call for ``B`` points) keeps this
    guarantee when ``fun.batch`` computes each row the way ``fun`` does.
"""

from __future__ import annotations

import abc
from types import TracebackType
from typing import TypeVar

import numpy as np
import numpy.typing as npt

from gradproof._typing import FlatFunction, FloatArray
from gradproof.engine.progress import Progress
from gradproof.errors import InputError
from gradproof.numerics.finite_diff import Samples

__all__ = ["Engine"]


_EngineT = TypeVar("_EngineT", bound="Engine")


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
    gradproof.engine.execution.make_engine : Choose an engine from a user's ``executor`` argument.
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
            :class:`~gradproof.errors.WorkerLostError`. See Note [Stopping early]
            in :mod:`gradproof.engine.pools`.

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


def _order(x: FloatArray, indices: npt.NDArray[np.intp] | None) -> npt.NDArray[np.intp]:
    if indices is None:
        return np.arange(x.size)
    return np.asarray(indices, dtype=np.intp).reshape(-1)


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
