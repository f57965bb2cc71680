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
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from gradproof._typing import FlatFunction, FloatArray
from gradproof.checking import remeasure
from gradproof.checking.entries import (
    CoordinateProblem,
    Entries,
    unchecked_entries,
)
from gradproof.checking.probes import LineFunction, SubsetFunction
from gradproof.checking.sweep import (
    Review,
    judge_coordinates,
)
from gradproof.engine.base import Engine
from gradproof.engine.evaluator import LossEvaluator
from gradproof.engine.progress import Progress
from gradproof.numerics.finite_diff import Samples
from gradproof.numerics.noise import NoiseEstimate, ladder_offsets, noise_from_ladder
from gradproof.numerics.steps import default_relative_step, machine_epsilon, step_sizes
from gradproof.numerics.tolerances import loss_value_noise
from gradproof.tree import ParamTree

__all__ = ["LADDER_EVALS", "NOISE_BOUND", "Context", "NoiseState", "StopState"]

NOISE_BOUND = 4.0
"""A loss value is trusted to within this many measured noise standard deviations."""

LADDER_STEPS, LADDER_POINTS = 5, 8
"""The noise ladder: ECnoise with ``m + 1 = 8`` points at each of five steps (Note [Noise across
steps] in :mod:`gradproof.numerics.noise`)."""

LADDER_EVALS = LADDER_STEPS * LADDER_POINTS
"""Evaluations of one noise ladder."""


@dataclass
class NoiseState:
    """The loss's noise as one check knows it (Note [Pay for what the verdict needs]).

    Until measured, the rounding model of the working dtype. Shared by every
    copy of the :class:`Context`, so that the ladder runs at most once.

    Attributes
    ----------
    allowed : bool
        Whether the ladder may run (``noise=True`` and not the complex step).
    normalise : bool
        Scale the ladder's direction like a directional probe's.
    estimate : NoiseEstimate or None
        The noise measured, by the ladder or from repeats at the point.
    settled : bool
        The ladder ran, was ruled out, or the noise is known from repeats.
    level : float
        The bound on a loss value's noise the error model uses
        (``NOISE_BOUND`` standard deviations), 0 for the rounding model.
    notes : list of str
        What the check should report about the noise.
    confirmed : list of one bool
        Whether a certain failure was confirmed at a smaller step (Note
        [Confirming a certain failure] in :mod:`gradproof.checking.remeasure`).
    from_repeats : bool
        The estimate comes from repeated values at the point (a random
        loss, Note [Noisy losses] in :mod:`gradproof.checking.setup`).
    """

    allowed: bool = False
    normalise: bool = False
    estimate: NoiseEstimate | None = None
    settled: bool = False
    level: float = 0.0
    notes: list[str] = field(default_factory=list)
    confirmed: list[bool] = field(default_factory=lambda: [False])
    from_repeats: bool = False

    def bound(self) -> float:
        """Return `level` from the estimate: ``NOISE_BOUND`` sigma when noise was found."""
        estimate = self.estimate
        if estimate is None or estimate.status != "ok":
            return 0.0
        return NOISE_BOUND * estimate.level


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
    noise : NoiseState
        The loss's noise, measured when a verdict needs it (Note [Pay for
        what the verdict needs] in :mod:`gradproof.checking.remeasure`);
        `step_eps` and `value_noise` are the error model before that.
    loss_value : float
        The loss at the point in its own precision (NaN: `f0`), the size its
        noise is relative to.
    find_systematic : bool
        Whether the sweeps look for small systematic errors within `rtol`
        (off when the caller chose `rtol`).
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
    noise: NoiseState = field(default_factory=NoiseState)
    loss_value: float = math.nan
    find_systematic: bool = True
    _sampled: list[int] = field(default_factory=lambda: [0])
    _rules: dict[float, FloatArray] = field(default_factory=dict)  # step rules by noise level

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

    def relative_step(self) -> float | FloatArray:
        """Return the relative step rule of every coordinate: ``eps ** (1 / (order + 1))``.

        ``eps`` is the rounding of the working dtype, or the measured noise
        relative to the loss when that is larger.
        """
        if self.rel_step is not None:
            return self.rel_step
        rule = self._rules.get(self.noise.level)
        if rule is None:  # computed once per error model: localisation asks for it often
            rule = self._rules[self.noise.level] = self.current_step_eps() ** (
                1.0 / (self.order + 1)
            )
        return rule

    def current_step_eps(self) -> FloatArray:
        """Return the relative error of a loss value that sets each step, noise included."""
        level = self.noise.level
        if not level:
            return self.step_eps
        f = self.f0 if math.isnan(self.loss_value) else self.loss_value
        widened: FloatArray = np.maximum(self.step_eps, level / max(abs(f), 1e-300))
        return widened

    def current_value_noise(self) -> FloatArray:
        """Return how far each loss value may be off, the measured noise included."""
        level = self.noise.level
        if not level:
            return self.value_noise
        f = self.f0 if math.isnan(self.loss_value) else self.loss_value
        noisy: FloatArray = np.maximum(self.value_noise, loss_value_noise(f, 0.0, level))
        return noisy

    def measure_noise(self, reason: str) -> bool:
        """Run the noise ladder once, if allowed; true when it raised the error model.

        The ladder's 40 points along one fixed random direction are evaluated
        through :meth:`sample`, so they count against the budget and stop at
        the deadline like any other evaluation (Note [Stopping early]).
        """
        state = self.noise
        if state.settled or not state.allowed:
            return False
        state.settled = True
        if self.max_evals is not None and self.n_evals + LADDER_EVALS > self.max_evals:
            state.notes.append(
                f"The loss's noise was not measured ({LADDER_EVALS} evaluations), although "
                f"{reason}, to stay within max_evals={self.max_evals}; rounding-level noise "
                "was assumed."
            )
            return False
        x0 = self.x0
        rng = np.random.default_rng(0)
        direction = rng.choice([-1.0, 1.0], size=x0.size) * np.maximum(1.0, np.abs(x0))
        if state.normalise and x0.size:
            direction /= math.sqrt(x0.size)
        working = max((dtype for _, dtype in self.sampling), key=machine_epsilon)
        # The step the differences use (Note [Noise across steps]).
        offsets = ladder_offsets(
            default_relative_step(working), n_steps=LADDER_STEPS, n_points=LADDER_POINTS
        )
        columns = tuple(np.array([t]) for t in offsets.ravel())
        samples = self.sample(LineFunction(self.evaluator, x0, direction), np.zeros(1), columns)
        if samples.interrupted:
            return False
        values = samples.values[:, 0].reshape(offsets.shape)
        estimate = None
        if np.all(np.isfinite(values)):  # else: not finite along the probe, assume rounding
            found = noise_from_ladder(values, machine_epsilon(working))
            estimate = found if found.status in ("ok", "no_noise") else None
        state.estimate = estimate
        state.level = state.bound()
        if estimate is None or estimate.status != "ok":
            found_text = "it found no noise above rounding"
        else:
            found_text = (
                f"it found noise of about {estimate.level:.2g} (standard deviation), which "
                "sets the error bars and steps of those coordinates"
            )
        state.notes.append(
            f"The loss's noise was measured ({LADDER_EVALS} evaluations, ECnoise along one "
            f"random direction) because {reason}: {found_text}."
        )
        return state.level > 0

    def has_room(self, evals: int) -> bool:
        """Whether `max_evals` leaves room for that many more evaluations."""
        return self.max_evals is None or self.n_evals + evals <= self.max_evals

    def reviewer(self, rebuild: Callable[[Context], CoordinateProblem]) -> Review:
        """Return the hook that measures the noise when a verdict needs it (:mod:`.remeasure`)."""

        def review(
            problem: CoordinateProblem,
            entries: Entries,
            level0: Any,
            wanted: npt.NDArray[np.bool_],
            doubtful: npt.NDArray[np.intp],
        ) -> Any:
            return remeasure.review(
                problem,
                entries,
                level0,
                wanted,
                doubtful,
                measure=self.measure_noise,
                rebuild=lambda: rebuild(self),
                confirmed=self.noise.confirmed,
                room=self.has_room,
            )

        return review

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
            value_noise=self.current_value_noise()[pick],
            rtol=self.rtol[pick],
            atol=self.atol,
            method=self.method,
            groups=[span for span, _ in sampling],  # one per parameter tensor
            sampler=self.sample,
            describe=describe,
            evaluator=self.evaluator if indices is None else None,
            roundoff=None if self.roundoff is None else self.roundoff[pick],
            find_systematic=self.find_systematic,
        )

    def judge_entries(self, indices: npt.NDArray[np.intp] | None = None) -> Entries:
        """Judge every entry, or only the given ones (sorted flat positions).

        A subset is judged through :meth:`coordinate_problem` on the subset
        alone; its verdicts are then placed in full-size arrays, unchecked
        elsewhere. The complex step, which works on the full vector, judges
        the subset there instead.
        """
        if indices is None:
            return judge_coordinates(
                self.coordinate_problem(),
                review=self.reviewer(lambda ctx: ctx.coordinate_problem()),
            )
        idx = np.asarray(indices, dtype=np.intp)
        if self.method == "complex":
            return judge_coordinates(self.coordinate_problem(), idx)
        sub = judge_coordinates(
            self.coordinate_problem(idx),
            review=self.reviewer(lambda ctx: ctx.coordinate_problem(idx)),
        )
        full = unchecked_entries(self.analytic, self.rtol, self.atol)
        for name in ("numeric", "error_bar", "measured", "left", "right", "reason", "codes"):
            getattr(full, name)[idx] = getattr(sub, name)
        full.n_resolved, full.interrupted, full.notes = sub.n_resolved, sub.interrupted, sub.notes
        full.systematic = [fit.moved(idx) for fit in sub.systematic]
        return full
