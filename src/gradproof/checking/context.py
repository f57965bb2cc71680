"""What every checking strategy knows about the point being checked, set up once per check.

Note [Stopping early]
    Every finite-difference evaluation of a check goes through
    :meth:`Context.sample`, which is where a check stops early: at the
    evaluation budget (it samples only the coordinates that fit), at the
    deadline (passed to the engine), on Ctrl-C, when the loss raises at some
    point, or when a worker is lost. The first reason is kept in
    :class:`StopState`, every later ``sample`` returns at once, and the
    strategies, which already stop on an interrupted sample, unwind with what
    they measured. :func:`gradproof.check` then builds the partial result and,
    for an error, raises it with the result attached (``partial_result``).
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from gradproof._typing import FlatFunction, FloatArray
from gradproof.checking.probes import SubsetFunction
from gradproof.checking.sweep import (
    CoordinateProblem,
    Entries,
    judge_coordinates,
    unchecked_entries,
)
from gradproof.engine.base import Engine
from gradproof.engine.evaluator import LossEvaluator
from gradproof.engine.progress import Progress
from gradproof.numerics.finite_diff import Samples
from gradproof.numerics.steps import step_sizes
from gradproof.tree import ParamTree

__all__ = ["Context", "StopState"]


@dataclass
class StopState:
    """Why a check stopped early (Note [Stopping early]); ``reason`` is None while it runs.

    Attributes
    ----------
    reason : {None, "interrupt", "deadline", "budget", "error", "lost"}
        The first reason the sampling stopped.
    error : BaseException or None
        The exception to raise once the partial result is built ("error", "lost").
    """

    reason: str | None = None
    error: BaseException | None = None

    def record(self, reason: str, error: BaseException | None = None) -> None:
        """Keep the first reason to stop, and its error."""
        if self.reason is None:
            self.reason, self.error = reason, error


@dataclass(frozen=True)
class Context:
    """The loss, the point, the analytic gradient and the error model of one check.

    Attributes
    ----------
    evaluator : LossEvaluator
        The loss as a function of the flat vector (in the working precision).
    tree : ParamTree
        The parameters' structure and names.
    x0 : ndarray of shape (n,)
        The point.
    f0 : float
        The loss at `x0`, in the precision the differences are taken in.
    analytic : ndarray of shape (n,)
        The hand-written gradient, flattened.
    sampling : list of (slice, dtype)
        The dtype each parameter's points are rounded to.
    step_eps : ndarray of shape (n,)
        The relative error of a loss value that sets each coordinate's step:
        the dtype's epsilon, or the measured noise when larger.
    spacing : ndarray of shape (n,)
        The rounding unit of each coordinate in its working dtype.
    value_noise : ndarray of shape (n,)
        How far a loss value may be off.
    rtol : ndarray of shape (n,)
        Relative tolerance of each entry.
    atol : float
        Absolute tolerance.
    method : str
        The finite-difference method.
    order : int
        Its order (for the default step).
    abs_step, rel_step : float or None
        The caller's step, if any.
    probe_seed : int
        Seed of the random directions and samples.
    engine : Engine
        Runs the evaluations.
    progress : Progress
        The progress bar.
    describe : callable
        Names a flat position, e.g. ``W1[3, 2]``.
    roundoff : ndarray of shape (n,) or None
        The relative rounding error of a loss value, per coordinate (Note
        [Rounding of the values differenced] in :mod:`gradproof.checking.sweep`).
    max_evals : int or None
        Evaluations the whole check may spend, set-up included.
    deadline : float or None
        A ``time.monotonic()`` instant at which sampling stops.
    stop : StopState
        Why sampling stopped early, if it did (Note [Stopping early]).
    """

    evaluator: LossEvaluator
    tree: ParamTree
    x0: FloatArray
    f0: float
    analytic: FloatArray
    sampling: list[tuple[slice, np.dtype[Any]]]
    step_eps: FloatArray
    spacing: FloatArray
    value_noise: FloatArray
    rtol: FloatArray
    atol: float
    method: str
    order: int
    abs_step: float | None
    rel_step: float | None
    probe_seed: int
    engine: Engine
    progress: Progress
    describe: Callable[[int], str]
    set_up_evals: int = 0
    roundoff: FloatArray | None = None
    max_evals: int | None = None
    deadline: float | None = None
    stop: StopState = field(default_factory=StopState)
    _sampled: list[int] = field(default_factory=lambda: [0])

    @property
    def n_evals(self) -> int:
        """Loss evaluations spent so far: before the engine started, and through it.

        The engine's own count is used, whichever process or thread evaluated.
        """
        return self.set_up_evals + self._sampled[0]

    def sample(
        self,
        fun: FlatFunction,
        x: FloatArray,
        columns: tuple[FloatArray, ...],
        *,
        indices: npt.NDArray[np.intp] | None = None,
    ) -> Samples:
        """Evaluate through the engine, within the budget and the deadline (Note [Stopping early]).

        Only the coordinates whose evaluations fit in what is left of
        `max_evals` are sampled; the others stay unmeasured and the samples
        say ``stop="budget"``.
        """
        order = np.arange(x.size) if indices is None else np.asarray(indices, dtype=np.intp)
        if self.deadline is not None and time.monotonic() >= self.deadline:
            self.stop.record("deadline")  # kept only if nothing stopped the check before
        if self.stop.reason is not None:
            return Samples(
                values=np.full((len(columns), x.size), np.nan),
                measured=np.zeros(x.size, dtype=bool),
                n_evals=0,
                interrupted=True,
                stop=self.stop.reason,
            )
        fits = order.size
        if self.max_evals is not None:
            fits = max(0, (self.max_evals - self.n_evals) // max(len(columns), 1))
        planned = len(columns) * min(fits, order.size)
        self.progress.add_total(planned)
        samples = self.engine.sample(
            fun, x, columns, indices=order[:fits], progress=self.progress, deadline=self.deadline
        )
        self._sampled[0] += samples.n_evals
        if samples.interrupted:
            self.stop.record(samples.stop or "interrupt", samples.error)
        elif fits < order.size:
            self.stop.record("budget")
            samples = dataclasses.replace(samples, interrupted=True, stop="budget")
        return samples

    @functools.cached_property
    def _relative_step(self) -> float | FloatArray:
        if self.rel_step is not None:
            return self.rel_step
        rule: FloatArray = self.step_eps ** (1.0 / (self.order + 1))
        return rule

    def relative_step(self) -> float | FloatArray:
        """Return the relative step rule of every coordinate: ``eps ** (1 / (order + 1))``."""
        return self._relative_step

    def coordinate_problem(self, indices: npt.NDArray[np.intp] | None = None) -> CoordinateProblem:
        """Return parameter entries as coordinates of the pipeline (see :mod:`.sweep`).

        Every entry by default. A subset (sorted flat positions) becomes the
        coordinates of a :class:`SubsetFunction`, so that the pipeline's arrays
        have the subset's size, not the model's.
        """
        rel = None if self.abs_step is not None else self.relative_step()
        if indices is None:
            pick: slice | npt.NDArray[np.intp] = slice(None)
            sampling = self.sampling
            fun: FlatFunction = self.evaluator
            describe = self.describe
        else:
            idx = pick = np.asarray(indices, dtype=np.intp)
            sampling = []
            for span, dtype in self.sampling:
                lo, hi = np.searchsorted(idx, [span.start or 0, span.stop])
                sampling.append((slice(int(lo), int(hi)), dtype))
            fun = SubsetFunction(self.evaluator, self.x0, idx)
            describe = lambda j: self.describe(int(idx[j]))  # noqa: E731
        if rel is not None and np.ndim(rel):
            rel = np.asarray(rel)[pick]
        x = self.x0[pick]
        return CoordinateProblem(
            fun=fun,
            x0=x,
            f0=self.f0,
            analytic=self.analytic[pick],
            sampling=sampling,
            h=step_sizes(x, sampling, abs_step=self.abs_step, rel_step=rel, order=self.order),
            value_noise=self.value_noise[pick],
            rtol=self.rtol[pick],
            atol=self.atol,
            method=self.method,
            groups=[span for span, _ in sampling],  # one per parameter tensor
            sampler=self.sample,
            describe=describe,
            evaluator=self.evaluator if indices is None else None,
            roundoff=None if self.roundoff is None else self.roundoff[pick],
        )

    def judge_entries(self, indices: npt.NDArray[np.intp] | None = None) -> Entries:
        """Judge every entry, or only the given ones (sorted flat positions).

        A subset is judged through :meth:`coordinate_problem` on the subset
        alone; its verdicts are then placed in full-size arrays, unchecked
        elsewhere. The complex step, which works on the full vector, judges
        the subset there instead.
        """
        if indices is None:
            return judge_coordinates(self.coordinate_problem())
        idx = np.asarray(indices, dtype=np.intp)
        if self.method == "complex":
            return judge_coordinates(self.coordinate_problem(), idx)
        sub = judge_coordinates(self.coordinate_problem(idx))
        full = unchecked_entries(self.analytic, self.rtol, self.atol)
        for name in ("numeric", "error_bar", "measured", "left", "right", "reason", "codes"):
            getattr(full, name)[idx] = getattr(sub, name)
        full.n_resolved, full.interrupted, full.notes = sub.n_resolved, sub.interrupted, sub.notes
        full.systematic = [fit.moved(idx) for fit in sub.systematic]
        return full
