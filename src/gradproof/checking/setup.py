"""The set-up of a check: the point, its repeatability, its precision, the budget, the strategy.

Steps 1 to 3 of Note [Verdict pipeline] in :mod:`~gradproof.checking.check`, as
functions of the loss evaluator and the point; :mod:`~gradproof.checking.run`
calls them in order.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from gradproof._typing import FloatArray
from gradproof._words import counted
from gradproof.checking.context import LADDER_POINTS, NOISE_BOUND
from gradproof.checking.options import CheckOptions
from gradproof.engine.base import Engine
from gradproof.engine.evaluator import LossEvaluator
from gradproof.errors import InputError, NondeterministicLossError, UserCodeError
from gradproof.numerics.noise import NoiseEstimate, noise_from_repeats
from gradproof.numerics.sampling import DEFAULT_SAMPLES
from gradproof.numerics.steps import machine_epsilon
from gradproof.tree import ParamTree

__all__ = [
    "AUTO_FULL_ENTRIES",
    "MAX_NOISE_BAR",
    "NOISE_BOUND",
    "NOISE_POINTS",
    "REPEATS",
    "SET_UP_EVALS",
]

AUTO_FULL_ENTRIES = 10_000
"""Without a budget, ``mode="auto"`` sweeps every entry of models up to this size."""


NOISE_POINTS = LADDER_POINTS
"""ECnoise's ``m + 1`` at each of the five steps of the noise ladder (see ``measure_noise``)."""


SET_UP_EVALS = 2
"""Evaluations before the first difference: the point, and once more to see that it repeats.

The loss's noise is measured later, and only when a verdict needs it (Note [Pay for what the
verdict needs] in :mod:`gradproof.checking.remeasure`)."""

REPEATS = 8
"""Values at the point that measure a loss's noise when two of them differ (Note [Noise from
repeats] in :mod:`gradproof.numerics.noise`)."""

MAX_NOISE_BAR = 0.01
"""The largest relative error bar a derivative may carry for a verdict (Note [Noisy losses])."""


_EVALS_PER_ENTRY = {"forward": 1, "backward": 1, "central4": 4, "richardson": 4, "complex": 3}


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


def _require_repeatable(
    evaluator: LossEvaluator, x0: FloatArray, f0: float, seed: int | None, notes: list[str]
) -> NoiseEstimate | None:
    """See that the loss repeats at the point; measure its noise from repeats if it does not.

    Note [Noisy losses]
        One more evaluation at the point must give `f0` again, bit for bit.
        If it does not, the loss is random: :data:`REPEATS` values at the
        point measure its noise (Note [Noise from repeats] in
        :mod:`gradproof.numerics.noise`). Noise of relative size ``r`` gives
        a central difference at its best step (``h ~ (4 r)^(1/3)``, Note
        [Choosing h]) a relative error bar of about ``(4 r)^(2/3)``: tiny for
        the 1e-12 of a threaded or GPU reduction that adds its terms in a
        different order each time, which is measured, widens the error bars,
        and is judged. Above :data:`MAX_NOISE_BAR` (1 %, ``r`` about 2.5e-4:
        dropout, a sampled batch) no verdict is possible, and the loss is
        refused with the noise measured and the advice that can help. 1 %,
        not more: at ``r = 8e-4`` (a 2 % bar) the steps are so long and the
        noise so large that the kink test took every entry of a quadratic
        for a kink, an answer that says nothing.

    Returns
    -------
    NoiseEstimate or None
        None when the loss repeats; else its noise, measured from the repeats.
    """
    again = evaluator.evaluate(x0.copy(), where="at the given parameters")[0]
    if again == f0 or (math.isnan(again) and math.isnan(f0)):
        return None
    values = [f0, again]
    for _ in range(REPEATS - 2):
        values.append(evaluator.evaluate(x0.copy(), where="at the given parameters")[0])
    estimate = noise_from_repeats(np.array(values))
    relative = estimate.relative
    bar = (NOISE_BOUND * relative) ** (2 / 3) if math.isfinite(relative) else math.inf
    if bar <= MAX_NOISE_BAR:
        notes.append(
            f"The loss returned different values at the same parameters ({f0!r} vs {again!r}): "
            f"it is random, with noise of about {estimate.level:.2g} ({relative:.2g} relative, "
            f"measured from {len(values)} evaluations at the point). The error bars and steps "
            f"cover it (relative error bars of about {bar:.1g}); pass `seed=` or make the loss "
            "deterministic (e.g. torch.use_deterministic_algorithms(True)) for sharper verdicts."
        )
        return estimate
    message = (
        f"The loss returned different values at the same parameters ({f0!r} vs {again!r}): "
        f"over {len(values)} evaluations at the point its values spread by "
        f"{estimate.level:.3g} (standard deviation; {relative:.2g} of the loss), so a finite "
        f"difference would carry an error of about {bar:.0%} of the gradient, and no verdict "
        "is possible. Typical causes are dropout, data shuffling or sampling, random "
        "augmentation, and nondeterministic GPU kernels. Pass `seed=` to gradproof.check so "
        "that every evaluation re-seeds Python's, numpy's and torch's generators, or disable "
        "the randomness (e.g. model.eval(), a fixed batch, "
        "torch.use_deterministic_algorithms(True))."
    )
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


def _measured_level(estimate: NoiseEstimate | None) -> float:
    """Return the bound on a loss value's noise: ``NOISE_BOUND`` sigma when noise was found."""
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
    set_up = SET_UP_EVALS  # the loss at the point, then once more to see that it repeats
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
            f"{counted(tensors, 'tensor')}) {least} more. Pass "
            f"`max_evals={set_up + least}` or more; a budget without "
            f"{5 * NOISE_POINTS} evaluations to spare skips measuring the loss's noise."
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
