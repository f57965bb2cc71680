"""The general gradient checker: compare a hand-written gradient with finite differences.

Note [Verdict pipeline]
    1. Evaluate the loss at the point, twice: the values must be identical
       (a random loss needs ``seed=``).
    2. Low-precision parameters are evaluated in float64 when the loss
       accepts it, so the finite differences are as accurate as float64 allows.
    3. Measure the loss's own noise along one direction (:mod:`gradproof.numerics.noise`).
       The noise sets the error bar of every difference and, when it is
       above rounding, the step.
    4. One finite difference per coordinate, with steps scaled to each
       coordinate. A coordinate passes when ``|a - n| <= atol + rtol * max(|a|, |n|) + e``,
       where ``e`` is the difference's error bar (round-off or noise).
    5. Coordinates that do not pass are re-measured at shrinking steps
       (:mod:`gradproof.numerics.kinks`): a smooth loss gives a Richardson estimate with
       a truncation error bar and is judged again; a kink gives left and right
       derivatives. At a kink, an analytic value between them is a valid
       subgradient (inconclusive, never wrong); one outside them is wrong.
    Extra evaluations are spent only on coordinates that need them. Steps 4
    and 5 live in :mod:`gradproof.checking.sweep`; the coordinates are the parameter
    entries (``mode="full"`` or ``"sampled"``) or directional probes
    (``mode="directional"``, :mod:`gradproof.checking.directional`).

Note [Choosing a strategy]
    ``mode="auto"`` sweeps every entry when that fits the evaluation budget
    (``max_evals``, or ``time_budget`` divided by the measured time of one
    evaluation), or, without a budget, when the model has at most
    :data:`AUTO_FULL_ENTRIES` entries. Otherwise it probes every tensor along
    random directions and localises the wrong entries of failing tensors,
    which costs two evaluations per tensor and about ``2 log2 n`` per wrong
    entry instead of ``2 n``.
"""

from __future__ import annotations

import dataclasses
import math
import time
from concurrent.futures import Executor
from typing import Any

import numpy as np
import numpy.typing as npt

from gradproof._typing import FloatArray, GradFunction, LossFunction, Params
from gradproof.checking.context import Context, StopState
from gradproof.checking.diagnose import (
    diagnose_parameter,
    diagnose_probes,
    diagnose_swaps,
)
from gradproof.checking.directional import DirectionalOutcome, check_directional
from gradproof.checking.options import MAX_LISTED_ENTRIES, METHODS, MODES, CheckOptions
from gradproof.checking.sweep import (
    FAIL,
    INCONCLUSIVE,
    PASS,
    REASON_NON_FINITE,
    REASONS,
    UNCHECKED,
    Entries,
    unchecked_entries,
)
from gradproof.engine.base import Engine
from gradproof.engine.evaluator import LossEvaluator, analytic_gradient
from gradproof.engine.execution import make_engine
from gradproof.engine.progress import Progress
from gradproof.engine.randomness import check_repeatable, preserved_random_state
from gradproof.errors import GradproofError, InputError, UserCodeError
from gradproof.numerics.compare import relative_difference
from gradproof.numerics.noise import NoiseEstimate, measure_noise, precision_notes
from gradproof.numerics.sampling import DEFAULT_SAMPLES, sample_indices
from gradproof.numerics.steps import (
    default_relative_step,
    machine_epsilon,
    offset_points,
    step_sizes,
)
from gradproof.numerics.tolerances import ROUNDOFF_FACTOR, default_rtol, loss_value_noise
from gradproof.results import (
    CheckResult,
    Diagnosis,
    EntryReport,
    InconclusiveEntry,
    ParamReport,
    ProbeReport,
    StepRule,
    Verdict,
)
from gradproof.tree import Leaf, ParamTree, format_index

__all__ = [
    "AUTO_FULL_ENTRIES",
    "MAX_LISTED_ENTRIES",
    "METHODS",
    "MODES",
    "CheckOptions",
    "NondeterministicLossError",
    "check",
    "check_with_options",
]

AUTO_FULL_ENTRIES = 10_000
"""Without a budget, ``mode="auto"`` sweeps every entry of models up to this size."""

NOISE_POINTS = 8
"""ECnoise's ``m`` at each of the five steps of the noise ladder (see ``measure_noise``)."""

NOISE_BOUND = 4.0
"""A loss value is trusted to within this many measured noise standard deviations."""

SET_UP_EVALS = 3 + 5 * NOISE_POINTS
"""Evaluations before the first difference: the point three times and the noise ladder."""

_EVALS_PER_ENTRY = {"forward": 1, "backward": 1, "central4": 4, "richardson": 4, "complex": 3}


class NondeterministicLossError(InputError):
    """The loss returned different values at the same parameters."""


def check(
    loss: LossFunction,
    grad: GradFunction | Params,
    params: Params,
    *,
    mode: str = "auto",
    method: str = "central",
    eps: float | None = None,
    rel_step: float | None = None,
    rtol: float | None = None,
    atol: float = 0.0,
    seed: int | None = None,
    precision: str = "auto",
    noise: bool = True,
    max_evals: int | None = None,
    time_budget: float | None = None,
    n_probes: int = 1,
    n_samples: int | None = None,
    executor: Executor | Engine | int | None = None,
    loss_batch: LossFunction | None = None,
    batch_size: int | None = None,
    progress: bool | None = None,
    max_listed: int | None = MAX_LISTED_ENTRIES,
) -> CheckResult:
    """Check a gradient against finite differences, parameter by parameter.

    Parameters
    ----------
    loss : callable ``loss(params) -> scalar``
        The function whose gradient is checked. It receives a container of
        the same structure as `params` (new arrays, never the caller's) and
        must return a real scalar: a float, a numpy scalar or a one-entry array.
    grad : callable ``grad(params) -> gradients``, or gradients
        The hand-written gradient: a function of the parameters, or its value
        at `params`. Gradients have the structure of `params`: the same keys,
        list lengths and array shapes.
    params : ndarray, float, or nested dict/list/tuple of them
        The point to check at. Floating point only; never modified.
    mode : {"auto", "full", "directional", "sampled"}
        The strategy (Note [Choosing a strategy]). ``"full"`` measures every
        entry. ``"directional"`` measures the gradient of every tensor along
        `n_probes` random signed directions (two evaluations each) and, when
        one fails, halves its entries until the wrong ones are found (about
        ``2 log2 n`` evaluations per wrong entry). ``"sampled"`` measures
        `n_samples` random entries and reports the chance that a bug was
        missed. ``"auto"`` (default) is ``"full"`` when it fits the budget,
        else ``"directional"``.
    method : {"central", "forward", "backward", "central4", "richardson", "complex"}
        The finite differences: ``"central"`` (default, 2 evaluations per
        entry), one-sided ``"forward"`` and ``"backward"`` (1), the five-point
        ``"central4"`` (4, fourth order), ``"richardson"`` (central at two steps,
        extrapolated, 4), or the complex step ``"complex"`` (1 complex
        evaluation per entry, for losses written for complex inputs; always
        cross-checked against central differences, 2 more; directional probes
        use central differences). Whatever the method, entries that do not
        pass are re-measured (Note [Verdict pipeline]).
    eps : float, optional
        An absolute step for every coordinate (the assignment's epsilon).
    rel_step : float, optional
        A relative step: each coordinate ``x`` moves by ``rel_step * max(1, |x|)``.
        By default ``eps_dtype ** (1 / (p + 1))`` for a rule of order ``p``
        (about 6.1e-6 for central differences in float64), with the loss's
        measured noise in place of ``eps_dtype`` when it is larger; see
        :mod:`gradproof.numerics.steps`. Exclusive with `eps`.
    rtol : float, optional
        Relative tolerance of each entry: 1e-5 for float64, 1e-3 for float32,
        1e-2 for float16 by default (by the parameter's and the loss's dtype).
    atol : float, optional
        Absolute tolerance of each entry, added to the numerical error bar; 0
        by default.
    seed : int, optional
        Re-seed Python's, numpy's and (when imported) torch's random
        generators with this seed before every evaluation of the loss and of
        the gradient, so that a random loss (dropout, random augmentation)
        draws the same randomness every time and can be checked. Also seeds
        the random directions and samples (0 when not given).
    precision : {"auto", "native"}
        ``"auto"`` (default): float16 and float32 parameters are evaluated in
        float64 when the loss accepts it (returns a float64 value close to
        its low-precision one). ``"native"``: always in their own dtype.
    noise : bool
        Measure the loss's own noise first (40 evaluations, Moré and Wild's
        ECnoise at five steps); default True. Without it, rounding at the
        working dtype's epsilon is assumed.
    max_evals : int, optional
        An evaluation budget: ``mode="auto"`` sweeps every entry only if that
        fits, localisation stops before exceeding it, and ``"sampled"``
        measures as many entries as fit.
    time_budget : float, optional
        A budget in seconds, turned into evaluations with the measured time
        of one evaluation (and the number of workers); combined with
        `max_evals`, the smaller wins.
    n_probes : int, optional
        Random directions per tensor in ``"directional"`` mode; 1 by default.
    n_samples : int, optional
        Entries measured in ``"sampled"`` mode (at least 8 per tensor); by
        default as many as `max_evals` allows, else 1000.
    executor : None, int, concurrent.futures.Executor or Engine, optional
        What runs the finite differences: None (default) in this process; an
        integer ``n`` for a pool of ``n`` worker processes (the loss must be
        picklable, or cloudpickle installed); any ``Executor``, e.g. Dask's
        ``client.get_executor()``. Results are identical whichever runs them.
    loss_batch : callable ``loss_batch(stacked) -> values``, optional
        The loss for a stack of parameter points: every leaf gets a leading
        axis of ``B`` points and it returns the ``B`` losses (``jax.vmap`` or
        ``torch.func.vmap`` of the loss, or a hand-batched numpy loss). Used
        with `batch_size` to evaluate many perturbations per call.
    batch_size : int, optional
        Points per call of `loss_batch`; 64 by default when it is given.
    progress : bool, optional
        Show a progress bar with the time left on stderr: by default only when
        stderr is a terminal.
    max_listed : int or None, optional
        How many wrong entries, and how many inconclusive ones, each parameter
        report lists (worst first); ``None`` lists every one. The counts, the
        diagnosis and the full arrays never depend on it.

    Returns
    -------
    CheckResult
        ``result.passed`` is the overall verdict, ``result.suspects`` names the
        parameters whose gradients are wrong, ``result.inconclusive`` those
        with entries that could not be judged (kinks, a loss that is not
        finite nearby), ``result.mode`` the strategy that ran, and
        ``str(result)`` is a readable report with a diagnosis of each wrong
        parameter.

    Raises
    ------
    InputError
        Before any finite difference is taken, if the parameters are not
        floating point or not finite, the gradients do not match the
        parameters' structure or shapes, the loss is not a finite scalar, the
        loss modifies its argument, `loss_batch` disagrees with `loss`, or an
        option is invalid.
    NondeterministicLossError
        If the loss returns different values at the same parameters (pass `seed`).
    UserCodeError
        If `loss`, `loss_batch` or `grad` raises; the original exception is
        its ``__cause__``.

    See Also
    --------
    gradproof.course.gradient_check_n : the classic assignment's global check.

    Notes
    -----
    See Note [Verdict pipeline] in this module's source. A full check of ``n``
    entries with central differences costs ``2 n + 43`` loss evaluations
    (the point three times and the noise ladder), plus two per re-measured entry
    and step; a directional one ``2 T + 43`` for ``T`` tensors when nothing
    is wrong. A ``KeyboardInterrupt`` returns what was measured so far, with
    ``result.interrupted`` set. Memory is O(n): no n-by-n matrix is ever
    formed, and each worker holds one working copy of the parameters (times
    `batch_size` when batching).

    Examples
    --------
    >>> import numpy as np
    >>> w = np.array([1.0, -2.0, 3.0])
    >>> good = check(lambda p: np.sum(p**2), lambda p: 2 * p, w)
    >>> good.passed
    True
    >>> bad = check(lambda p: np.sum(p**2), lambda p: 4 * p, w)
    >>> bad.suspects, bad["params"].diagnosis.summary
    (('params',), 'analytic = 2 × numeric on every entry')
    >>> big = np.linspace(-1.0, 1.0, 100_000)
    >>> wrong = 2 * big
    >>> wrong[12_345] += 1.0
    >>> found = check(lambda p: np.sum(p**2), wrong, big, mode="directional")
    >>> [e.name for e in found["params"].failures], found.n_evals < 100
    (['params[12345]'], True)
    """
    options = CheckOptions(
        mode=mode, method=method, eps=eps, rel_step=rel_step, rtol=rtol, atol=atol, seed=seed,
        precision=precision, noise=noise, max_evals=max_evals, time_budget=time_budget,
        n_probes=n_probes, n_samples=n_samples, executor=executor, batch_size=batch_size,
        progress=progress, max_listed=max_listed,
    )  # fmt: skip
    return check_with_options(loss, grad, params, options, loss_batch=loss_batch)


def check_with_options(
    loss: LossFunction,
    grad: GradFunction | Params,
    params: Params,
    options: CheckOptions,
    *,
    loss_batch: LossFunction | None = None,
) -> CheckResult:
    """Run :func:`check` with its options as one object: what adapters and front ends call.

    Parameters
    ----------
    loss, grad, params
        As for :func:`check`.
    options : CheckOptions
        Every option of :func:`check`, validated.
    loss_batch : callable, optional
        As for :func:`check`.

    Returns
    -------
    CheckResult
        The same result :func:`check` returns.

    Examples
    --------
    >>> import numpy as np
    >>> options = CheckOptions(mode="full", rtol=1e-6)
    >>> check_with_options(lambda w: float(w @ w), lambda w: 2 * w, np.ones(3), options).passed
    True
    """
    started = time.perf_counter()
    _validate_functions(loss, loss_batch, options.batch_size)
    tree, x0 = ParamTree.flatten(params)
    _require_budget_covers_set_up(options, tree, loss_batch)
    budget = options.time_budget
    deadline = None if budget is None else time.monotonic() + float(budget)
    # Note [The caller's world is left as found]: re-seeding reaches the global generators.
    with preserved_random_state():
        run = _Run(tree=tree, x0=x0, options=options)
        try:
            ctx, chosen = _set_up(run, loss, grad, loss_batch=loss_batch, deadline=deadline)
        except KeyboardInterrupt:
            run.stop.record("interrupt")
            return run.result(started)
        try:
            with ctx.progress:
                _measure(run, ctx, chosen)
        finally:
            if run.owns_engine:
                ctx.engine.close()
        run.notes.extend(ctx.engine.notes)
        if ctx.engine.notes and not ctx.engine.worker_evals:  # a pool that ran nothing
            run.engine_description = f"serial: the {run.engine_description} were not used"
        result = run.result(started)
    error = run.stop.error
    if error is not None:
        if isinstance(error, GradproofError):
            error.partial_result = result
        raise error
    return result


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
        self.method, self.seed, self.max_listed = options.method, options.seed, options.max_listed
        self.stop = StopState()
        self.notes: list[str] = []
        self.analytic = np.full(x0.size, np.nan)
        self.f0 = math.nan
        self.loss_dtype: np.dtype[Any] = np.dtype(np.float64)
        self.sampling: list[tuple[slice, np.dtype[Any]]] = [
            (leaf.span, leaf.dtype) for leaf in tree.leaves
        ]
        self.rtols = _per_coordinate(self.sampling, x0.size, default_rtol)
        self.atol = 0.0
        self.eps: float | None = None
        self.rel_step: float | None = None
        self.order = 2
        self.estimate: NoiseEstimate | None = None
        self.engine_description = "serial"
        self.owns_engine = False
        self.budget: int | None = None  # for planning: max_evals, or what time_budget buys
        self.max_evals: int | None = None  # the caller's hard cap
        self.mode = "full"
        self.n_evals = 0
        self.entries: Entries | None = None
        self.outcome: DirectionalOutcome | None = None

    def result(self, started: float) -> CheckResult:
        """Build the result from what was measured (everything, or what came before a stop)."""
        entries = self.entries or unchecked_entries(self.analytic, self.rtols, self.atol)
        if self.stop.reason is not None:
            entries.interrupted = True
            self.notes.append(_stop_note(self.stop.reason, self.max_evals, entries, self.mode))
        reports = _param_reports(self.tree, entries, self.mode, self.outcome, self.max_listed)
        judged = (entries.codes == PASS) | (entries.codes == FAIL)
        return CheckResult(
            params=reports,
            relative_difference=relative_difference(
                entries.analytic[judged], entries.numeric[judged]
            ),
            loss_value=self.f0,
            method=self.method,
            step_rules=_step_rules(
                self.eps, self.rel_step, self.sampling, self.order, self.estimate, self.f0
            ),
            rtol=float(np.max(entries.rtol)) if self.x0.size else default_rtol(self.loss_dtype),
            atol=self.atol,
            seed=self.seed,
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
    tree, x0, method, seed = run.tree, run.x0, run.method, run.seed
    options = run.options
    eps, rel_step, atol, max_evals = options.eps, options.rel_step, options.atol, options.max_evals
    rtol, precision, time_budget = options.rtol, options.precision, options.time_budget
    run.eps, run.rel_step, run.atol, run.max_evals = eps, rel_step, atol, max_evals
    run.order = {"forward": 1, "backward": 1, "central4": 4}.get(method, 2)
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
    try:
        _require_repeatable(evaluator, x0, seed)
    finally:
        run.n_evals = evaluator.n_calls
    seconds_per_eval = (time.perf_counter() - timer) / 2
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
        run.budget = budget = _budget(max_evals, time_budget, seconds_per_eval, engine)
        measures_noise = options.noise and method != "complex"
        least = evaluator.n_calls + _least_measurement(tree, method)
        if time_budget is not None and budget is not None and budget < least:
            raise InputError(
                f"`time_budget={time_budget}` is too small for any verdict: one evaluation of "
                f"the loss takes about {seconds_per_eval:.3g} s, and the set-up and the "
                f"smallest measurement (one random direction per tensor) need {least} "
                f"evaluations, about {least * seconds_per_eval:.3g} s. Pass a larger "
                "`time_budget`."
            )
        if measures_noise and budget is not None and least + 5 * NOISE_POINTS > budget:
            measures_noise = False
            run.notes.append(
                f"The loss's noise was not measured ({5 * NOISE_POINTS} evaluations) to stay "
                f"within the budget of {budget} evaluations; rounding-level noise was assumed."
            )
        spent = evaluator.n_calls + (5 * NOISE_POINTS if measures_noise else 0)
        chosen = run.mode = _choose_mode(options.mode, x0.size, method, budget, spent)
        if measures_noise:
            try:
                run.estimate = _measure_noise(
                    evaluator, x0, sampling, normalise=chosen == "directional"
                )
            finally:
                run.n_evals = evaluator.n_calls
        if run.estimate is not None:
            run.notes.extend(
                precision_notes(
                    run.f0, run.estimate, max((d for _, d in sampling), key=machine_epsilon)
                )
            )
        level = _measured_level(run.estimate)
        ctx = Context(
            evaluator=evaluator,
            tree=tree,
            x0=x0,
            f0=f_center,
            analytic=run.analytic,
            sampling=sampling,
            step_eps=np.maximum(machine_eps, level / max(abs(run.f0), 1e-300)),
            spacing=_spacing(x0, sampling),
            value_noise=loss_value_noise(run.f0, machine_eps, level),
            rtol=run.rtols,
            atol=atol,
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
            max_evals=max_evals,
            deadline=deadline,
            stop=run.stop,
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
    finally:
        run.n_evals = ctx.n_evals
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
    done = f"{measured} of {entries.codes.size} entries were measured"
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


# -- set-up ---------------------------------------------------------------------------------------
def _validate_functions(loss: object, loss_batch: object, batch_size: int | None) -> None:
    """Refuse a loss (or batched loss) that is not a function, or a batch size without one."""
    if not callable(loss):
        raise InputError(
            f"`loss` must be a function of the parameters returning a scalar; got a "
            f"{type(loss).__name__}. Pass e.g. `lambda p: model_loss(X, Y, p)`."
        )
    if loss_batch is not None and not callable(loss_batch):
        raise InputError(
            f"`loss_batch` must be a function of stacked parameters; got a "
            f"{type(loss_batch).__name__}."
        )
    if batch_size is not None and loss_batch is None:
        raise InputError(
            "`batch_size` was given without `loss_batch`; pass the loss's batched form as "
            "`loss_batch=` (e.g. a vmap of the loss), or drop `batch_size`."
        )


def _require_repeatable(evaluator: LossEvaluator, x0: FloatArray, seed: int | None) -> None:
    """Refuse a loss whose value changes between two evaluations at the same point."""
    repeat = check_repeatable(
        lambda: evaluator.evaluate(x0.copy(), where="at the given parameters")[0]
    )
    if not repeat.deterministic:
        message = repeat.message
        if seed is not None:
            message += (
                f" It does so even with `seed={seed}`: its randomness does not come from "
                "Python's `random`, numpy's global generator or torch's, e.g. a "
                "`np.random.default_rng()` created without a seed inside the loss."
            )
        raise NondeterministicLossError(message)


def _float64_value(
    evaluator: LossEvaluator, tree: ParamTree, x0: FloatArray, f0: float, notes: list[str]
) -> float | None:
    """Return the loss at float64 copies of low-precision leaves, if it computes in float64."""
    low = [leaf.name for leaf in tree.leaves if leaf.dtype.itemsize < 8]
    shown = ", ".join(low[:4]) + (", ..." if len(low) > 4 else "")
    trial = LossEvaluator(evaluator.loss, tree.with_dtype(np.float64), evaluator.seed)
    try:
        value, dtype = trial.evaluate(x0.copy(), where="with float64 copies of the parameters")
    except (InputError, UserCodeError):
        value, dtype = float("nan"), np.dtype(np.float32)
    evaluator.n_calls += trial.n_calls
    # The float64 value must be the same loss: within the low-precision value's rounding.
    agrees = np.isfinite(value) and abs(value - f0) <= 1e-2 * max(abs(f0), abs(value), 1e-30)
    lowest = min((leaf.dtype for leaf in tree.leaves), key=lambda d: d.itemsize).name
    verb = "is" if len(low) == 1 else "are"
    if dtype == np.float64 and agrees:
        notes.append(
            f"{shown} {verb} {lowest}; the loss accepts float64 copies, so the finite "
            "differences were taken in float64, and the analytic gradient is judged with "
            f"{lowest}'s tolerance."
        )
        return value
    notes.append(
        f"{shown} {verb} {lowest}; the loss does not compute in float64 when given float64 "
        f"copies (it returned {dtype.name}), so the finite differences were taken in {lowest} "
        "and judged with its error model."
    )
    return None


def _measure_noise(
    evaluator: LossEvaluator,
    x0: FloatArray,
    sampling: list[tuple[slice, np.dtype[Any]]],
    *,
    normalise: bool,
) -> NoiseEstimate | None:
    """Measure the loss's noise along one fixed random direction (Note [Verdict pipeline]).

    With `normalise`, the direction is divided by ``sqrt(n)``, so the ladder
    moves the point as far as one coordinate's step, like a directional probe
    (Note [Directional probes] in :mod:`gradproof.checking.probes`).
    """
    rng = np.random.default_rng(0)
    direction = rng.choice([-1.0, 1.0], size=x0.size) * np.maximum(1.0, np.abs(x0))
    if normalise and x0.size:
        direction /= math.sqrt(x0.size)
    working = max((dtype for _, dtype in sampling), key=machine_epsilon)
    h = default_relative_step(working)  # the step the differences use (Note [Noise across steps])

    def along(t: float) -> float:
        with np.errstate(over="ignore"):  # an overflowing point gives a non-finite loss
            point = x0 + t * direction
        return evaluator(point)

    try:
        estimate = measure_noise(along, base_step=h, n_points=NOISE_POINTS, dtype=working)
    except InputError:
        return None  # the loss is not finite along the probe: assume rounding-level noise
    return estimate if estimate.status in ("ok", "no_noise") else None


def _measured_level(estimate: NoiseEstimate | None) -> float:
    if estimate is None or estimate.status != "ok":
        return 0.0
    return NOISE_BOUND * estimate.level


def _per_coordinate(dtypes: list[tuple[slice, np.dtype[Any]]], size: int, rule: Any) -> FloatArray:
    values = np.empty(size)
    for span, dtype in dtypes:
        values[span] = rule(dtype)
    return values


def _working_dtype(param_dtype: np.dtype[Any], loss_dtype: np.dtype[Any]) -> np.dtype[Any]:
    """Return the less precise of the two dtypes: it limits the finite difference."""
    return (
        param_dtype if machine_epsilon(param_dtype) >= machine_epsilon(loss_dtype) else loss_dtype
    )


def _require_batch_agrees(evaluator: LossEvaluator, x0: FloatArray, f0: float) -> None:
    """Refuse a batched loss that does not compute the loss (checked on two stacked points)."""
    assert evaluator.batch is not None
    values = evaluator.batch(np.stack([x0, x0]))
    tolerance = 64 * machine_epsilon(np.float64) * max(abs(f0), 1.0) + 1e-6 * abs(f0)
    if not np.all(np.abs(values - f0) <= tolerance):
        raise InputError(
            f"`loss_batch` returned {values.tolist()} for two copies of the parameters, but "
            f"`loss` returns {f0!r} there; the batched loss must compute the same loss for each "
            "stacked point (reduce over examples, not over the leading batch axis)."
        )


def _least_measurement(tree: ParamTree, method: str) -> int:
    """Return the cost of the smallest measurement that gives a verdict: a probe per tensor."""
    tensors = sum(1 for leaf in tree.leaves if leaf.size)
    return tensors * (2 if method == "complex" else _EVALS_PER_ENTRY.get(method, 2))


def _require_budget_covers_set_up(
    options: CheckOptions, tree: ParamTree, loss_batch: object
) -> None:
    """Refuse a `max_evals` too small for any verdict, naming the minimum."""
    max_evals, method, precision = options.max_evals, options.method, options.precision
    if max_evals is None:
        return
    set_up = 3  # the loss at the point, then twice more to see that it repeats
    if precision == "auto" and any(leaf.dtype.itemsize < 8 for leaf in tree.leaves):
        set_up += 1  # in float64
    if loss_batch is not None:
        set_up += 2  # the batched loss at two copies of the point
    least = _least_measurement(tree, method)
    if max_evals < set_up + least:
        tensors = sum(1 for leaf in tree.leaves if leaf.size)
        raise InputError(
            f"`max_evals={max_evals}` is too small for any verdict: the set-up takes {set_up} "
            f"loss evaluations and the smallest measurement (one random direction per tensor, "
            f"{tensors} tensor{'s' if tensors != 1 else ''}) {least} more. Pass "
            f"`max_evals={set_up + least}` or more; a budget below "
            f"{set_up + least + 5 * NOISE_POINTS} also skips measuring the loss's noise."
        )


def _budget(
    max_evals: int | None, time_budget: float | None, seconds_per_eval: float, engine: Engine
) -> int | None:
    """Return the evaluation budget: `max_evals`, or `time_budget` over one evaluation's time."""
    budgets = [] if max_evals is None else [int(max_evals)]
    if time_budget is not None:
        per_eval = max(seconds_per_eval, 1e-9) / max(getattr(engine, "workers", 1), 1)
        budgets.append(max(1, int(time_budget / per_eval)))
    return min(budgets) if budgets else None


def _choose_mode(mode: str, n: int, method: str, budget: int | None, spent: int) -> str:
    """Resolve ``mode="auto"`` (Note [Choosing a strategy])."""
    if mode != "auto":
        return mode
    if method == "complex":
        return "full"  # the complex step is defined entry by entry
    if budget is None:
        return "full" if n <= AUTO_FULL_ENTRIES else "directional"
    full_cost = spent + _EVALS_PER_ENTRY.get(method, 2) * n
    return "full" if full_cost <= budget else "directional"


def _samples_in_budget(budget: int | None, spent: int, method: str) -> int:
    if budget is None:
        return DEFAULT_SAMPLES
    left = budget - spent
    return max(1, left // _EVALS_PER_ENTRY.get(method, 2))


def _spacing(x0: FloatArray, sampling: list[tuple[slice, np.dtype[Any]]]) -> FloatArray:
    out = np.empty_like(x0)
    for span, dtype in sampling:
        with np.errstate(over="ignore"):  # the spacing of the largest float is infinite
            out[span] = np.spacing(np.abs(x0[span]).astype(dtype)).astype(np.float64)
    return out


# -- reports --------------------------------------------------------------------------------------
def _param_reports(
    tree: ParamTree,
    entries: Entries,
    strategy: str,
    outcome: DirectionalOutcome | None,
    max_listed: int | None,
) -> tuple[ParamReport, ...]:
    tolerance = entries.tolerance()
    reports = [
        _param_report(
            leaf,
            entries,
            tolerance,
            strategy=strategy,
            probes=() if outcome is None else tuple(outcome.probes.get(i, ())),
            localised=outcome is not None and outcome.localised.get(i, False),
            max_listed=max_listed,
        )
        for i, leaf in enumerate(tree.leaves)
    ]
    # Two wrong parameters whose gradients fit each other's: a swap explains both at once.
    swaps = diagnose_swaps(
        [(r.name, r.analytic, r.numeric, r.verdict is Verdict.FAIL) for r in reports]
    )
    return tuple(
        dataclasses.replace(r, diagnosis=swaps[r.name]) if r.name in swaps else r for r in reports
    )


def _param_report(
    leaf: Leaf,
    entries: Entries,
    tolerance_all: FloatArray,
    *,
    strategy: str,
    probes: tuple[ProbeReport, ...],
    localised: bool,
    max_listed: int | None,
) -> ParamReport:
    span = leaf.span
    analytic, numeric = entries.analytic[span], entries.numeric[span]
    tolerance, codes = tolerance_all[span], entries.codes[span]
    error_bar = entries.error_bar[span]
    judged = (codes == PASS) | (codes == FAIL)
    failed = codes == FAIL
    inconclusive = codes == INCONCLUSIVE
    with np.errstate(invalid="ignore", divide="ignore"):
        error = np.abs(analytic - numeric)
        ratio = np.where(error == 0, 0.0, error / tolerance)
    ratio = np.where(np.isnan(ratio) & judged, np.inf, ratio)  # a NaN analytic entry is wrong
    ranked = np.where(judged, _beyond_roundoff(ratio), -1.0)

    def index_of(i: int) -> tuple[int, ...]:
        return tuple(int(j) for j in np.unravel_index(i, leaf.shape)) if leaf.shape else ()

    def entry(i: int) -> EntryReport:
        return EntryReport(
            name=format_index(leaf.name, index_of(i)),
            index=index_of(i),
            analytic=float(analytic[i]),
            numeric=float(numeric[i]),
            tolerance=float(tolerance[i]),
            error_bar=float(error_bar[i]),
        )

    def doubtful(i: int) -> InconclusiveEntry:
        j = span.start + i if span.start else i
        return InconclusiveEntry(
            name=format_index(leaf.name, index_of(i)),
            index=index_of(i),
            analytic=float(analytic[i]),
            left=float(entries.left[j]),
            right=float(entries.right[j]),
            reason=REASONS[int(entries.reason[j])],
            subgradient=bool(entries.reason[j] != REASON_NON_FINITE),
        )

    order = np.argsort(-ranked, kind="stable")
    listed = int(failed.sum()) if max_listed is None else min(int(failed.sum()), max_listed)
    failures = tuple(entry(int(i)) for i in order[:listed])
    verdict = _verdict(failed.any(), inconclusive.any(), probes, localised)
    return ParamReport(
        name=leaf.name,
        shape=leaf.shape,
        dtype=str(leaf.dtype),
        verdict=verdict,
        relative_difference=relative_difference(analytic[judged], numeric[judged]),
        max_abs_error=float(np.max(error[judged])) if judged.any() else 0.0,
        error_ratio=float(np.max(ratio[judged])) if judged.any() else 0.0,
        worst=entry(int(np.argmax(ranked))) if judged.any() else None,
        failures=failures,
        inconclusive_entries=tuple(
            doubtful(int(i)) for i in np.flatnonzero(inconclusive)[:max_listed]
        ),
        n_entries=leaf.size,
        n_checked=int(np.count_nonzero(codes != UNCHECKED)),
        n_failed=int(failed.sum()),
        n_inconclusive=int(inconclusive.sum()),
        diagnosis=(
            diagnose_parameter(
                leaf.name,
                analytic.reshape(leaf.shape),
                # Localisation showed that the entries it found account for the probe's
                # discrepancy: the entries it did not measure count as right.
                (np.where(np.isnan(numeric), analytic, numeric) if localised else numeric).reshape(
                    leaf.shape
                ),
                wrong=failed.reshape(leaf.shape),
            )
            if failed.any()
            else _probe_diagnosis(leaf.name, probes, verdict)
        ),
        analytic=analytic.reshape(leaf.shape),
        numeric=numeric.reshape(leaf.shape),
        tolerance=tolerance.reshape(leaf.shape),
        strategy=strategy,
        probes=probes,
    )


def _beyond_roundoff(ratio: FloatArray) -> FloatArray:
    """Round error ratios to six significant digits, far above their round-off.

    Entries are listed worst first; entries whose ratios agree to six digits
    (a factor bug gives every entry the same ratio, up to round-off) are
    listed in index order, so that round-off, which differs between CPUs,
    never reorders a report.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        unit = 10.0 ** (np.floor(np.log10(ratio)) - 5)
        rounded: FloatArray = np.where(
            np.isfinite(ratio) & (ratio > 0), np.round(ratio / unit) * unit, ratio
        )
    return rounded


def _probe_diagnosis(
    name: str, probes: tuple[ProbeReport, ...], verdict: Verdict
) -> Diagnosis | None:
    failing = [p for p in probes if p.verdict is Verdict.FAIL]
    if verdict is not Verdict.FAIL or not failing:
        return None
    return diagnose_probes(
        name,
        np.array([p.analytic for p in failing]),
        np.array([p.numeric for p in failing]),
    )


def _verdict(
    failed: bool, inconclusive: bool, probes: tuple[ProbeReport, ...], localised: bool
) -> Verdict:
    """Return a tensor's verdict from its entries and, in directional mode, its probes.

    A failing probe whose localisation reached single entries without finding
    a wrong one is not proof of a bug (the entries were measured more
    precisely): inconclusive. One that could not be localised stands.
    """
    if failed:
        return Verdict.FAIL
    probe_verdicts = {p.verdict for p in probes}
    if Verdict.FAIL in probe_verdicts:
        return Verdict.INCONCLUSIVE if localised else Verdict.FAIL
    if inconclusive or (probes and Verdict.PASS not in probe_verdicts):
        return Verdict.INCONCLUSIVE
    return Verdict.PASS


def _step_rules(
    eps: float | None,
    rel_step: float | None,
    dtypes: list[tuple[slice, np.dtype[Any]]],
    order: int,
    estimate: NoiseEstimate | None,
    f0: float,
) -> tuple[StepRule, ...]:
    if eps is not None:
        return (StepRule("absolute", float(eps)),)
    if rel_step is not None:
        return (StepRule("relative", float(rel_step)),)
    level = _measured_level(estimate) / max(abs(f0), 1e-300)
    steps = sorted(
        {(max(machine_epsilon(dt), level) ** (1 / (order + 1)), dt.name) for _, dt in dtypes}
    )
    return tuple(StepRule("relative", float(h), name) for h, name in steps)
