"""One check from set-up to result: what it has learned so far, and the (partial) result."""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any

import numpy as np
import numpy.typing as npt

from gradproof._typing import FloatArray, GradFunction, LossFunction, Params
from gradproof._words import counted, noun
from gradproof.checking.context import Context, NoiseState, StopState
from gradproof.checking.directional import DirectionalOutcome, check_directional
from gradproof.checking.entries import (
    FAIL,
    PASS,
    UNCHECKED,
    Entries,
    unchecked_entries,
)
from gradproof.checking.options import CheckOptions
from gradproof.checking.param_reports import (
    _param_reports,
    _step_rules,
)
from gradproof.checking.setup import (
    _budget,
    _choose_mode,
    _float64_value,
    _least_measurement,
    _per_coordinate,
    _require_batch_agrees,
    _require_repeatable,
    _samples_in_budget,
    _spacing,
    _working_dtype,
)
from gradproof.engine.evaluator import LossEvaluator, analytic_gradient
from gradproof.engine.execution import make_engine
from gradproof.engine.progress import Progress
from gradproof.errors import InputError
from gradproof.numerics.compare import relative_difference
from gradproof.numerics.noise import NoiseEstimate, precision_notes
from gradproof.numerics.sampling import sample_indices
from gradproof.numerics.steps import (
    machine_epsilon,
    offset_points,
    step_sizes,
)
from gradproof.numerics.tolerances import ROUNDOFF_FACTOR, default_rtol, loss_value_noise
from gradproof.results import (
    CheckResult,
)
from gradproof.tree import ParamTree, format_index


class _Run:
    """What one check has set up and measured so far; it builds the (partial) result.

    Note [The caller's world is left as found]
        A check never changes what the caller can see: it copies the
        parameters, hands the loss fresh arrays at every evaluation, and
        restores Python's, numpy's and torch's global generators on every exit
        path (they are re-seeded before each evaluation when ``seed`` is
        given). An interrupt or an error mid-check still returns, or carries,
        what was measured (Note [Stopping early] in :mod:`gradproof.checking.context`).
    """

    def __init__(self, *, tree: ParamTree, x0: FloatArray, options: CheckOptions) -> None:
        self.tree, self.x0, self.options = tree, x0, options
        self.order = {"forward": 1, "backward": 1, "central4": 4}.get(options.method, 2)
        self.stop = StopState()
        self.notes: list[str] = []
        self.analytic = np.full(x0.size, np.nan)
        self.f0 = math.nan
        self.loss_dtype: np.dtype[Any] = np.dtype(np.float64)
        self.sampling: list[tuple[slice, np.dtype[Any]]] = [
            (leaf.span, leaf.dtype) for leaf in tree.leaves
        ]
        self.rtols = _per_coordinate(self.sampling, x0.size, default_rtol)
        self.noise = NoiseState()
        self.engine_description = "serial"
        self.owns_engine = False
        self.budget: int | None = None  # for planning: max_evals, or what time_budget buys
        self.mode = "full"
        self.n_evals = 0
        self.entries: Entries | None = None
        self.outcome: DirectionalOutcome | None = None

    @property
    def estimate(self) -> NoiseEstimate | None:
        """The loss's noise, if it was measured (from repeats, or by the ladder)."""
        return self.noise.estimate

    def _noise_notes(self) -> list[str]:
        """Return what the check learned about the loss's noise, and the advice that follows."""
        notes = list(self.noise.notes)
        estimate = self.estimate
        if (estimate is not None or self.noise.allowed) and math.isfinite(self.f0):
            dtype = max((d for _, d in self.sampling), key=machine_epsilon, default=np.float64)
            if estimate is None or self.noise.from_repeats:
                # Not measured, or random (its note says so): the loss's size still deserves
                # its notes, but advice about formulas that lose precision would not fit.
                eps = machine_epsilon(dtype)
                estimate = NoiseEstimate(
                    level=eps * abs(self.f0), relative=eps, order=None, n_evals=0,
                    status="no_noise",
                )  # fmt: skip
            notes.extend(precision_notes(self.f0, estimate, dtype))
        return notes

    def result(self, started: float) -> CheckResult:
        """Build the result from what was measured (everything, or what came before a stop)."""
        options = self.options
        self.notes.extend(note for note in self._noise_notes() if note not in self.notes)
        entries = self.entries or unchecked_entries(self.analytic, self.rtols, options.atol)
        if self.stop.reason is not None:
            entries.interrupted = True
            self.notes.append(_stop_note(self.stop.reason, options.max_evals, entries, self.mode))
        reports = _param_reports(
            self.tree, entries, self.mode, self.outcome, options.max_listed, options.dialect
        )
        judged = (entries.codes == PASS) | (entries.codes == FAIL)
        return CheckResult(
            params=reports,
            relative_difference=relative_difference(
                entries.analytic[judged], entries.numeric[judged]
            ),
            loss_value=self.f0,
            method=options.method,
            step_rules=_step_rules(
                options.eps, options.rel_step, self.sampling, self.order, self.estimate, self.f0
            ),
            rtol=float(np.max(entries.rtol)) if self.x0.size else default_rtol(self.loss_dtype),
            atol=options.atol,
            seed=options.seed,
            noise_level=None if self.estimate is None else float(self.estimate.level),
            notes=tuple(self.notes),
            n_evals=self.n_evals,
            n_refined=entries.n_resolved,
            seconds=time.perf_counter() - started,
            interrupted=entries.interrupted,
            stop_reason=self.stop.reason,
            mode=self.mode,
            engine=self.engine_description,
            n_probes=0 if self.outcome is None else self.outcome.n_probes,
            max_evals=self.budget,
        )


def _set_up(
    run: _Run,
    loss: LossFunction,
    grad: GradFunction | Params,
    *,
    loss_batch: LossFunction | None,
    deadline: float | None,
) -> tuple[Context, str]:
    """Evaluate the point, read the gradient, measure the noise, choose the strategy and engine.

    Steps 1 to 3 of Note [Verdict pipeline]; everything it learns is kept on
    `run` as soon as it is known, so that Ctrl-C here still gives a result.
    """
    tree, x0, options = run.tree, run.x0, run.options
    method, seed, eps, rel_step = options.method, options.seed, options.eps, options.rel_step
    rtol, precision, time_budget = options.rtol, options.precision, options.time_budget
    evaluator = LossEvaluator(loss, tree, seed)
    try:
        run.f0, run.loss_dtype = evaluator.at_base_point(x0)
        run.analytic = analytic_gradient(grad, tree, x0, seed)
    finally:
        run.n_evals = evaluator.n_calls
    if evaluator.integer_valued:
        run.notes.append(
            f"`loss` returned a whole number ({run.f0:g}) of an integer type: a loss that only "
            "takes whole values is piecewise constant, its finite differences are 0 or jumps, "
            "and no derivative can be checked from them. Return the loss as a float computed "
            "from the parameters."
        )
    native = [(leaf.span, _working_dtype(leaf.dtype, run.loss_dtype)) for leaf in tree.leaves]
    run.sampling = native
    run.rtols = (
        _per_coordinate(native, x0.size, default_rtol) if rtol is None else np.full_like(x0, rtol)
    )

    def describe(i: int) -> str:
        leaf, index = tree.locate(i)
        return format_index(leaf.name, index)

    if eps is not None or rel_step is not None:  # refuse unusable steps before spending more
        offset_points(
            x0, native, step_sizes(x0, native, abs_step=eps, rel_step=rel_step), (-1.0, 1.0),
            describe=describe,
        )  # fmt: skip
    timer = time.perf_counter()
    before = evaluator.n_calls
    try:
        repeated = _require_repeatable(evaluator, x0, run.f0, seed, run.notes)
    finally:
        run.n_evals = evaluator.n_calls
    seconds_per_eval = (time.perf_counter() - timer) / max(evaluator.n_calls - before, 1)
    if repeated is not None:  # Note [Noisy losses]: known from the repeats, no ladder needed
        run.noise.estimate, run.noise.settled, run.noise.from_repeats = repeated, True, True
        run.noise.level = run.noise.bound()
    sampling = native
    f_center = run.f0  # the loss at the point, in the precision the differences are taken in
    if precision == "auto" and any(dtype.itemsize < 8 for _, dtype in native):
        value64 = _float64_value(evaluator, tree, x0, run.f0, run.notes)
        if value64 is not None:
            evaluator.tree = tree.with_dtype(np.float64)
            sampling = [(span, np.dtype(np.float64)) for span, _ in native]
            f_center = value64
    if loss_batch is not None:
        evaluator.loss_batch = loss_batch
        _require_batch_agrees(evaluator, x0, f_center)
    run.sampling = sampling
    run.n_evals = evaluator.n_calls
    machine_eps = _per_coordinate(sampling, x0.size, machine_epsilon)
    batch_size = (options.batch_size or 64) if loss_batch is not None else None
    engine = make_engine(options.executor, batch_size=batch_size)
    # An engine the caller passed in is theirs to close; one made here is closed by check().
    run.owns_engine = engine is not options.executor
    run.engine_description = engine.description
    try:
        run.budget = budget = _budget(options.max_evals, time_budget, seconds_per_eval, engine)
        least = evaluator.n_calls + _least_measurement(tree, method)
        if time_budget is not None and budget is not None and budget < least:
            raise InputError(
                f"`time_budget={time_budget}` is too small for any verdict: one evaluation of "
                f"the loss takes about {seconds_per_eval:.3g} s, and the set-up and the "
                f"smallest measurement (one random direction per tensor) need {least} "
                f"evaluations, about {least * seconds_per_eval:.3g} s. Pass a larger "
                "`time_budget`."
            )
        chosen = run.mode = _choose_mode(options.mode, x0.size, method, budget, evaluator.n_calls)
        # Note [Pay for what the verdict needs]: the ladder runs later, only if a verdict needs it.
        run.noise.allowed = options.noise and method != "complex"
        run.noise.normalise = chosen == "directional"
        ctx = Context(
            evaluator=evaluator,
            tree=tree,
            x0=x0,
            f0=f_center,
            analytic=run.analytic,
            sampling=sampling,
            step_eps=machine_eps,
            spacing=_spacing(x0, sampling),
            value_noise=loss_value_noise(run.f0, machine_eps),
            rtol=run.rtols,
            atol=options.atol,
            find_systematic=rtol is None,
            method=method,
            order=run.order,
            abs_step=eps,
            rel_step=rel_step,
            probe_seed=0 if seed is None else int(seed),
            engine=engine,
            progress=Progress(0, enabled=options.progress),
            describe=describe,
            set_up_evals=evaluator.n_calls,
            roundoff=ROUNDOFF_FACTOR * machine_eps,
            # A hard cap only when the caller set one: the budget that `time_budget` buys is
            # an estimate for planning; the time budget itself is the deadline.
            max_evals=options.max_evals,
            deadline=deadline,
            stop=run.stop,
            noise=run.noise,
            loss_value=run.f0,
        )
    except BaseException:
        if run.owns_engine:
            engine.close()
        raise
    return ctx, chosen


def _measure(run: _Run, ctx: Context, chosen: str) -> None:
    """Take and judge the finite differences with the chosen strategy (steps 4 and 5).

    Note [Non-finite gradient entries]
        A NaN or infinite analytic entry is judged entry by entry in every
        mode, so that it is named and shown: it is wrong wherever the loss is
        finite around it (inconclusive where the loss is not finite either).
        Directional probes then run on the gradient with those entries
        replaced by their finite differences, so that one NaN does not make
        every probe of its tensor NaN and hide the other entries.
    """
    non_finite = np.flatnonzero(~np.isfinite(ctx.analytic))
    try:
        if chosen == "directional":
            known = ctx.judge_entries(non_finite) if non_finite.size else None
            probed = ctx
            if known is not None:
                patched = ctx.analytic.copy()
                patched[non_finite] = np.nan_to_num(known.numeric[non_finite])
                probed = dataclasses.replace(ctx, analytic=patched)
            run.outcome = check_directional(
                probed, n_probes=run.options.n_probes, localise=True, max_evals=run.budget
            )
            entries = run.outcome.entries or unchecked_entries(ctx.analytic, ctx.rtol, ctx.atol)
            entries.interrupted = run.outcome.interrupted
            if known is not None:
                entries = _merged(entries, known, non_finite, ctx.analytic)
            run.notes.extend(run.outcome.notes)
        elif chosen == "sampled":
            count = run.options.n_samples or _samples_in_budget(run.budget, ctx.n_evals, ctx.method)
            indices = np.union1d(sample_indices(ctx.tree, count, ctx.probe_seed), non_finite)
            entries = ctx.judge_entries(indices)
        else:
            entries = ctx.judge_entries()
    except KeyboardInterrupt:  # between two engine calls
        ctx.stop.record("interrupt")
        entries = unchecked_entries(ctx.analytic, ctx.rtol, ctx.atol)
    run.notes.extend(entries.notes)
    run.n_evals = ctx.n_evals + entries.direct_evals
    run.entries = entries


def _merged(
    entries: Entries, known: Entries, indices: npt.NDArray[np.intp], analytic: FloatArray
) -> Entries:
    """Put the verdicts of entries judged on their own into a strategy's entries."""
    entries.analytic = analytic
    for name in ("numeric", "error_bar", "measured", "left", "right", "reason", "codes"):
        getattr(entries, name)[indices] = getattr(known, name)[indices]
    entries.n_resolved += known.n_resolved
    entries.interrupted |= known.interrupted
    entries.notes.extend(known.notes)
    return entries


def _stop_note(reason: str, budget: int | None, entries: Entries, mode: str) -> str:
    """Say why the check stopped before measuring everything."""
    measured = int(np.count_nonzero(entries.codes != UNCHECKED))
    done = f"{measured} of {counted(entries.codes.size, 'entry')} {noun(measured, 'was')} measured"
    cover = (
        "Raise the budget to finish; a failing probe is still a wrong gradient."
        if mode == "directional"
        else "The verdict covers only those: raise the budget, or pass mode='directional' "
        "to probe every tensor within it."
    )
    return {
        "interrupt": f"Interrupted (Ctrl-C): {done}; the verdict covers only those.",
        "deadline": f"Stopped at the time budget (time_budget): {done}. {cover}",
        "budget": f"Stopped at the evaluation budget (max_evals={budget}): {done}. {cover}",
        "error": f"Stopped because the loss raised: {done} before it.",
        "lost": f"Stopped because a worker process was lost twice: {done} before it.",
    }[reason]
