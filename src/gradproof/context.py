"""What every checking strategy knows about the point being checked, set up once per check."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from gradproof._typing import FlatFunction, FloatArray
from gradproof.evaluation import LossEvaluator
from gradproof.execution import Engine
from gradproof.finite_diff import Samples
from gradproof.probes import SubsetFunction
from gradproof.progress import Progress
from gradproof.steps import step_sizes
from gradproof.sweep import CoordinateProblem, Entries, judge_coordinates, unchecked_entries
from gradproof.tree import ParamTree

__all__ = ["Context"]


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
        """Evaluate through the engine, moving the progress bar."""
        planned = len(columns) * (x.size if indices is None else len(indices))
        self.progress.add_total(planned)
        samples = self.engine.sample(fun, x, columns, indices=indices, progress=self.progress)
        self._sampled[0] += samples.n_evals
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
        """Return parameter entries as coordinates of the pipeline (:mod:`gradproof.sweep`).

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
        return full
