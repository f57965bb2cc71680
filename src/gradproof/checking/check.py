"""The general gradient checker: compare a hand-written gradient with finite differences.

Note [Verdict pipeline]
    1. Evaluate the loss at the point, twice: the values must be identical,
       or else the loss's noise is measured from repeats there, and a loss
       too noisy for any verdict is refused (it needs ``seed=``; Note
       [Noisy losses] in :mod:`gradproof.checking.setup`).
    2. Low-precision parameters are evaluated in float64 when the loss
       accepts it, so the finite differences are as accurate as float64 allows.
    3. Start from the rounding model of the working dtype. The loss's own
       noise (:mod:`gradproof.numerics.noise`) is measured along one
       direction only when a verdict depends on it, after the first
       differences (Note [Pay for what the verdict needs] in
       :mod:`gradproof.checking.remeasure`); it then sets the error bar and,
       when above rounding, the step of the entries that depend on it.
    4. One finite difference per coordinate, with steps scaled to each
       coordinate. A coordinate passes when ``|a - n| <= atol + rtol * max(|a|, |n|) + e``,
       where ``e`` is the difference's error bar (round-off or noise).
    5. Coordinates that do not pass, unless certainly wrong, are re-measured at shrinking steps
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

import time
from concurrent.futures import Executor

from gradproof._typing import GradFunction, LossFunction, Params
from gradproof.checking.options import MAX_LISTED_ENTRIES, METHODS, MODES, CheckOptions
from gradproof.checking.run import _measure, _Run, _set_up
from gradproof.checking.setup import (
    AUTO_FULL_ENTRIES,
    _require_budget_covers_set_up,
    _validate_functions,
)
from gradproof.engine.base import Engine
from gradproof.engine.randomness import preserved_random_state
from gradproof.errors import GradproofError, NondeterministicLossError
from gradproof.results import CheckResult
from gradproof.tree import ParamTree

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
    dialect: str = "numpy",
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
        Measure the loss's own noise (40 evaluations, Moré and Wild's ECnoise
        at five steps) when some entry's verdict depends on it; default True.
        Without it, rounding at the working dtype's epsilon is assumed
        throughout.
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
    dialect : {"numpy", "torch", "jax"}
        The code the gradient comes from, so that the diagnosis hints speak
        its language (``np.add.at`` for numpy, ``index_add_`` for PyTorch,
        ``.at[...].add`` for JAX). The PyTorch and JAX adapters set it.

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
    entries with central differences costs ``2 n + 2`` loss evaluations
    (the point twice) when nothing is doubtful; 40 more for the noise ladder
    when a verdict depends on it, 2 to confirm the first failure far beyond
    its tolerance, and two per re-measured entry and step (Note [Pay for what
    the verdict needs] in :mod:`gradproof.checking.remeasure`). A directional
    check costs ``2 T + 2`` for ``T`` tensors when nothing is wrong. A
    ``KeyboardInterrupt`` returns what was measured so far, with
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
        progress=progress, max_listed=max_listed, dialect=dialect,
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
