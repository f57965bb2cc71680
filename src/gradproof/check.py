"""The general gradient checker: compare a hand-written gradient with finite differences.

Note [Verdict pipeline]
    1. Evaluate the loss at the point, twice: the values must be identical
       (a random loss needs ``seed=``).
    2. Low-precision parameters are evaluated in float64 when the loss
       accepts it, so the finite differences are as accurate as float64 allows.
    3. Measure the loss's own noise along one direction (:mod:`gradproof.noise`).
       The noise sets the error bar of every difference and, when it is
       above rounding, the step.
    4. One finite difference per entry, with steps scaled to each coordinate.
       An entry passes when ``|a - n| <= atol + rtol * max(|a|, |n|) + e``,
       where ``e`` is the difference's error bar (round-off or noise).
    5. Entries that do not pass are re-measured at shrinking steps
       (:mod:`gradproof.kinks`): a smooth loss gives a Richardson estimate with
       a truncation error bar and is judged again; a kink gives left and right
       derivatives. At a kink, an analytic value between them is a valid
       subgradient (inconclusive, never wrong); one outside them is wrong.
    Extra evaluations are spent only on entries that need them.
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from gradproof._typing import FloatArray, GradFunction, LossFunction, Params
from gradproof.compare import relative_difference
from gradproof.diagnose import diagnose_parameter, diagnose_swaps
from gradproof.errors import InputError, UserCodeError
from gradproof.evaluation import LossEvaluator, analytic_gradient
from gradproof.finite_diff import STENCILS, richardson, sample, stencil_derivative
from gradproof.kinks import KINK, SMOOTH, UNRESOLVED, resolve_entries
from gradproof.noise import NoiseEstimate, measure_noise, precision_notes
from gradproof.randomness import check_repeatable
from gradproof.results import CheckResult, EntryReport, InconclusiveEntry, ParamReport, Verdict
from gradproof.steps import default_relative_step, machine_epsilon, offset_points, step_sizes
from gradproof.tolerances import default_rtol, entry_tolerance, loss_value_noise
from gradproof.tree import Leaf, ParamTree, format_index

__all__ = ["MAX_LISTED_ENTRIES", "METHODS", "NondeterministicLossError", "check"]

MAX_LISTED_ENTRIES = 20
"""How many wrong (or inconclusive) entries each parameter report lists, worst first."""

METHODS = ("central", "forward", "backward", "central4", "richardson", "complex")
"""The finite-difference methods :func:`check` accepts."""

NOISE_POINTS = 8
"""ECnoise's ``m`` at each of the five steps of the noise ladder (see ``measure_noise``)."""

NOISE_BOUND = 4.0
"""A loss value is trusted to within this many measured noise standard deviations."""

KINK_GAP = 1e-3
"""One-sided derivatives that differ by more than this fraction of their tensor's gradient scale
at the first step make an entry a kink suspect, re-measured even if it passed (see
:func:`_kink_suspects`). A smooth loss's gap is ``h |f''|``, some 1e-5 of the scale."""

COMPLEX_STEP = 1e-20
"""Relative step of the complex-step method: far below any round-off (Martins et al. 2003)."""

# Per-entry verdict codes, kept in one int8 array while judging.
_PASS, _FAIL, _INCONCLUSIVE, _UNCHECKED = 0, 1, 2, 3
# Why an entry is inconclusive.
_REASON_NONE, _REASON_NON_FINITE, _REASON_KINK, _REASON_NO_SAFE_STEP = 0, 1, 2, 3
_REASONS = {
    _REASON_NON_FINITE: "non_finite",
    _REASON_KINK: "kink",
    _REASON_NO_SAFE_STEP: "no_safe_step",
}


class NondeterministicLossError(InputError):
    """The loss returned different values at the same parameters."""


@dataclass
class _Entries:
    """Everything known about every entry while it is judged (internal, mutable)."""

    analytic: FloatArray
    numeric: FloatArray
    error_bar: FloatArray
    measured: npt.NDArray[np.bool_]
    rtol: FloatArray
    atol: float
    left: FloatArray
    right: FloatArray
    reason: npt.NDArray[np.int8]
    codes: npt.NDArray[np.int8]

    def tolerance(self) -> FloatArray:
        return entry_tolerance(
            self.analytic, self.numeric, self.error_bar, rtol=self.rtol, atol=self.atol
        )

    def judge(self) -> None:
        """Give every entry its verdict code from the numbers (kinks keep theirs)."""
        with np.errstate(invalid="ignore"):
            within = np.abs(self.analytic - self.numeric) <= self.tolerance()
        codes = np.where(within, _PASS, _FAIL).astype(np.int8)
        # A loss that is not finite next to the point gives no estimate to compare with.
        non_finite = ~np.isfinite(self.numeric) & (self.reason == _REASON_NONE)
        self.reason[non_finite] = _REASON_NON_FINITE
        codes[self.reason == _REASON_NON_FINITE] = _INCONCLUSIVE
        codes[~self.measured] = _UNCHECKED
        self.codes = codes


def check(
    loss: LossFunction,
    grad: GradFunction | Params,
    params: Params,
    *,
    method: str = "central",
    eps: float | None = None,
    rel_step: float | None = None,
    rtol: float | None = None,
    atol: float = 0.0,
    seed: int | None = None,
    precision: str = "auto",
    noise: bool = True,
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
    method : {"central", "forward", "backward", "central4", "richardson", "complex"}
        The finite differences: ``"central"`` (default, 2 evaluations per
        entry), one-sided ``"forward"`` and ``"backward"`` (1), the five-point
        ``"central4"`` (4, fourth order), ``"richardson"`` (central at two steps,
        extrapolated, 4), or the complex step ``"complex"`` (1 complex
        evaluation per entry, for losses written for complex inputs; always
        cross-checked against central differences, 2 more). Whatever the
        method, entries that do not pass are re-measured (Note [Verdict pipeline]).
    eps : float, optional
        An absolute step for every coordinate (the assignment's epsilon).
    rel_step : float, optional
        A relative step: each coordinate ``x`` moves by ``rel_step * max(1, |x|)``.
        By default ``eps_dtype ** (1 / (p + 1))`` for a rule of order ``p``
        (about 6.1e-6 for central differences in float64), with the loss's
        measured noise in place of ``eps_dtype`` when it is larger; see
        :mod:`gradproof.steps`. Exclusive with `eps`.
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
        draws the same randomness every time and can be checked.
    precision : {"auto", "native"}
        ``"auto"`` (default): float16 and float32 parameters are evaluated in
        float64 when the loss accepts it (returns a float64 value close to
        its low-precision one). ``"native"``: always in their own dtype.
    noise : bool
        Measure the loss's own noise first (9 evaluations, Moré and Wild's
        ECnoise); default True. Without it, rounding at the working dtype's
        epsilon is assumed.

    Returns
    -------
    CheckResult
        ``result.passed`` is the overall verdict, ``result.suspects`` names the
        parameters whose gradients are wrong, ``result.inconclusive`` those
        with entries that could not be judged (kinks, a loss that is not
        finite nearby), and ``str(result)`` is a readable report with a
        diagnosis of each wrong parameter.

    Raises
    ------
    InputError
        Before any finite difference is taken, if the parameters are not
        floating point or not finite, the gradients do not match the
        parameters' structure or shapes, the loss is not a finite scalar, the
        loss modifies its argument, or an option is invalid.
    NondeterministicLossError
        If the loss returns different values at the same parameters (pass `seed`).
    UserCodeError
        If `loss` or `grad` raises; the original exception is its ``__cause__``.

    See Also
    --------
    gradproof.course.gradient_check_n : the classic assignment's global check.

    Notes
    -----
    See Note [Verdict pipeline] in this module's source. A check of ``n``
    entries with central differences costs ``2 n + 43`` loss evaluations
    (the point three times and the noise ladder), plus two per re-measured entry
    and step. A ``KeyboardInterrupt`` returns what was measured so far, with
    ``result.interrupted`` set.

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
    """
    started = time.perf_counter()
    _validate_options(loss, method, precision, rtol, atol, seed)
    tree, x0 = ParamTree.flatten(params)
    evaluator = LossEvaluator(loss, tree, seed)
    f0, loss_dtype = evaluator.at_base_point(x0)
    analytic = analytic_gradient(grad, tree, x0, seed)
    native = [(leaf.span, _working_dtype(leaf.dtype, loss_dtype)) for leaf in tree.leaves]

    def describe(i: int) -> str:
        leaf, index = tree.locate(i)
        return format_index(leaf.name, index)

    if eps is not None or rel_step is not None:  # refuse unusable steps before spending more
        offset_points(
            x0, native, step_sizes(x0, native, abs_step=eps, rel_step=rel_step), (-1.0, 1.0),
            describe=describe,
        )  # fmt: skip
    _require_repeatable(evaluator, x0, seed)
    notes: list[str] = []
    sampling = native
    f_center = f0  # the loss at the point, in the precision the differences are taken in
    if precision == "auto" and any(dtype.itemsize < 8 for _, dtype in native):
        value64 = _float64_value(evaluator, tree, x0, f0, notes)
        if value64 is not None:
            evaluator.tree = tree.with_dtype(np.float64)
            sampling = [(span, np.dtype(np.float64)) for span, _ in native]
            f_center = value64
    machine_eps = _per_coordinate(sampling, x0.size, machine_epsilon)
    rtols = (
        _per_coordinate(native, x0.size, default_rtol) if rtol is None else np.full_like(x0, rtol)
    )

    estimate = _measure_noise(evaluator, x0, sampling) if noise and method != "complex" else None
    if estimate is not None:
        notes.extend(
            precision_notes(f0, estimate, max((d for _, d in sampling), key=machine_epsilon))
        )
    value_noise = loss_value_noise(f0, machine_eps, _measured_level(estimate))

    stencil_order = {"forward": 1, "backward": 1, "central4": 4}.get(method, 2)
    if eps is None and rel_step is None:
        effective_eps = np.maximum(machine_eps, _measured_level(estimate) / max(abs(f0), 1e-300))
        step_rule: float | FloatArray | None = effective_eps ** (1.0 / (stencil_order + 1))
    else:
        step_rule = rel_step
    h = step_sizes(x0, sampling, abs_step=eps, rel_step=step_rule, order=stencil_order)

    entries, level0 = _first_estimates(
        method,
        evaluator,
        x0,
        f_center,
        h,
        sampling,
        value_noise,
        analytic,
        rtols,
        atol,
        describe,
        notes,
    )
    entries.judge()
    interrupted = not entries.measured.all()
    doubtful = np.flatnonzero(
        (entries.codes == _FAIL) | _kink_suspects(tree, entries, level0, x0, f_center, value_noise)
    )
    n_resolved = 0
    if doubtful.size and not interrupted:
        n_resolved, interrupted = _resolve(
            entries, doubtful, evaluator, x0, f_center, h, sampling, value_noise, level0
        )
    reports = _param_reports(tree, entries)
    judged = (entries.codes == _PASS) | (entries.codes == _FAIL)
    return CheckResult(
        params=reports,
        relative_difference=relative_difference(entries.analytic[judged], entries.numeric[judged]),
        loss_value=f0,
        method=method,
        step=_describe_step(eps, rel_step, sampling, stencil_order, estimate, f0),
        rtol=float(np.max(entries.rtol)) if x0.size else default_rtol(loss_dtype),
        atol=atol,
        seed=seed,
        noise_level=None if estimate is None else float(estimate.level),
        notes=tuple(notes),
        n_evals=evaluator.n_calls,
        n_refined=n_resolved,
        seconds=time.perf_counter() - started,
        interrupted=interrupted,
    )


# -- set-up ---------------------------------------------------------------------------------------
def _validate_options(
    loss: object, method: str, precision: str, rtol: float | None, atol: float, seed: object
) -> None:
    if not callable(loss):
        raise InputError(
            f"`loss` must be a function of the parameters returning a scalar; got a "
            f"{type(loss).__name__}. Pass e.g. `lambda p: model_loss(X, Y, p)`."
        )
    if method not in METHODS:
        choices = ", ".join(repr(m) for m in METHODS)
        raise InputError(f"`method` must be one of {choices}; got {method!r}.")
    if precision not in ("auto", "native"):
        raise InputError(f"`precision` must be 'auto' or 'native'; got {precision!r}.")
    for label, value in (("rtol", rtol), ("atol", atol)):
        if value is not None and not (np.isfinite(value) and value >= 0):
            raise InputError(
                f"`{label}` must be a non-negative finite number; got {value!r}. "
                "Leave it unset for the default."
            )
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))):
        raise InputError(f"`seed` must be an integer or None; got {seed!r}.")


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
    evaluator: LossEvaluator, x0: FloatArray, sampling: list[tuple[slice, np.dtype[Any]]]
) -> NoiseEstimate | None:
    """Measure the loss's noise along one fixed random direction (Note [Verdict pipeline])."""
    rng = np.random.default_rng(0)
    direction = rng.choice([-1.0, 1.0], size=x0.size) * np.maximum(1.0, np.abs(x0))
    working = max((dtype for _, dtype in sampling), key=machine_epsilon)
    h = default_relative_step(working)  # the step the differences use (Note [Noise across steps])

    def along(t: float) -> float:
        return evaluator(x0 + t * direction)

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


# -- first estimates ------------------------------------------------------------------------------
@dataclass(frozen=True)
class _CentralLevel:
    """The ``x +- h`` samples that the kink test starts from."""

    plus: FloatArray
    minus: FloatArray
    f_plus: FloatArray
    f_minus: FloatArray


def _first_estimates(
    method: str,
    evaluator: LossEvaluator,
    x0: FloatArray,
    f0: float,
    h: FloatArray,
    sampling: list[tuple[slice, np.dtype[Any]]],
    value_noise: FloatArray,
    analytic: FloatArray,
    rtols: FloatArray,
    atol: float,
    describe: Any,
    notes: list[str],
) -> tuple[_Entries, _CentralLevel | None]:
    """Take every entry's first estimate with the chosen method, and its error bar."""
    n = x0.size
    nan = np.full(n, np.nan)
    level0: _CentralLevel | None = None
    if method == "complex":
        numeric, error_bar, measured, level0 = _complex_step(
            evaluator, x0, sampling, value_noise, rtols, atol, describe, notes
        )
    elif method == "richardson":
        minus, plus = offset_points(x0, sampling, h, (-1.0, 1.0), describe=describe)
        half_minus, half_plus = offset_points(x0, sampling, h / 2, (-1.0, 1.0), describe=describe)
        s = sample(evaluator, x0, (plus, minus, half_plus, half_minus))
        with np.errstate(invalid="ignore", divide="ignore"):
            coarse = (s.values[0] - s.values[1]) / (plus - minus)
            fine = (s.values[2] - s.values[3]) / (half_plus - half_minus)
        numeric, truncation = richardson(coarse, fine)
        numeric[~np.all(np.isfinite(s.values), axis=0)] = np.nan
        error_bar = truncation + 2 * value_noise / (half_plus - half_minus)
        measured = s.measured
        level0 = _CentralLevel(plus, minus, s.values[0], s.values[1])
    else:
        stencil = STENCILS[method]
        columns = offset_points(x0, sampling, h, stencil.sampled_offsets, describe=describe)
        s = sample(evaluator, x0, columns)
        numeric = stencil_derivative(stencil, x0, f0, columns, s.values)
        weight = sum(abs(w) for w in stencil.weights)
        error_bar = weight * value_noise / h
        measured = s.measured
        if method in ("central", "central4"):
            by_offset = dict(
                zip(stencil.sampled_offsets, zip(columns, s.values, strict=True), strict=True)
            )
            (plus, f_plus), (minus, f_minus) = by_offset[1.0], by_offset[-1.0]
            level0 = _CentralLevel(plus, minus, f_plus, f_minus)
    entries = _Entries(
        analytic=analytic,
        numeric=numeric,
        error_bar=error_bar,
        measured=measured,
        rtol=rtols,
        atol=atol,
        left=nan.copy(),
        right=nan.copy(),
        reason=np.zeros(n, dtype=np.int8),
        codes=np.zeros(n, dtype=np.int8),
    )
    return entries, level0


def _complex_step(
    evaluator: LossEvaluator,
    x0: FloatArray,
    sampling: list[tuple[slice, np.dtype[Any]]],
    value_noise: FloatArray,
    rtols: FloatArray,
    atol: float,
    describe: Any,
    notes: list[str],
) -> tuple[FloatArray, FloatArray, npt.NDArray[np.bool_], _CentralLevel]:
    """Complex-step derivatives, cross-checked entry by entry against central differences."""
    h = COMPLEX_STEP * np.maximum(1.0, np.abs(x0))
    work = x0.astype(np.complex128)
    derivative = np.full(x0.size, np.nan)
    done = 0
    try:
        with warnings.catch_warnings():
            # A loss that drops the imaginary part (float(), np.real) is reported below, by
            # comparison with central differences; numpy's warning about it would only repeat that.
            warnings.simplefilter("ignore", np.exceptions.ComplexWarning)
            for i in range(x0.size):
                work[i] = x0[i] + 1j * h[i]
                try:
                    raw = evaluator.call(work, where="at a complex perturbed point")
                except UserCodeError as exc:
                    raise InputError(
                        "`method='complex'` needs a loss that accepts complex parameters, but "
                        f"`loss` raised {type(exc.__cause__).__name__} on them ({exc.__cause__}). "
                        "Use `method='central'` (the default), or write the loss with complex-safe "
                        "operations."
                    ) from exc
                finally:
                    work[i] = x0[i]
                derivative[i] = float(np.imag(np.asarray(raw).reshape(()))) / h[i]
                done = i + 1
    except KeyboardInterrupt:
        pass
    central_h = step_sizes(x0, sampling)
    minus, plus = offset_points(x0, sampling, central_h, (-1.0, 1.0), describe=describe)
    s = sample(evaluator, x0, (plus, minus), indices=np.arange(done))
    with np.errstate(invalid="ignore"):
        central = (s.values[0] - s.values[1]) / (plus - minus)
    central_bar = 2 * value_noise / (plus - minus)
    # Where the two disagree the loss is not complex-analytic (abs, max, comparisons): trust
    # the central difference there.
    agree = np.abs(derivative - central) <= central_bar + rtols * np.abs(central) + atol
    numeric = np.where(agree, derivative, central)
    error_bar = np.where(agree, 4 * machine_epsilon(np.float64) * np.abs(derivative), central_bar)
    disagree = np.flatnonzero(~agree & s.measured)
    if disagree.size:
        shown = ", ".join(describe(int(i)) for i in disagree[:5])
        more = ", ..." if disagree.size > 5 else ""
        notes.append(
            f"The complex step disagrees with central differences at {disagree.size} "
            f"entr{'y' if disagree.size == 1 else 'ies'} ({shown}{more}): the loss is not "
            "complex-safe there (abs, max, comparisons or np.real break it); central "
            "differences were used for them."
        )
    return numeric, error_bar, s.measured, _CentralLevel(plus, minus, s.values[0], s.values[1])


def _kink_suspects(
    tree: ParamTree,
    entries: _Entries,
    level0: _CentralLevel | None,
    x0: FloatArray,
    f0: float,
    value_noise: FloatArray,
) -> npt.NDArray[np.bool_]:
    """Entries whose one-sided derivatives already disagree at the first step (free to test).

    On a smooth loss the gap between them is ``h f''``, tiny against the
    gradient; a kink within the step makes it the size of the gradient itself
    even when the central difference happens to agree (``|x|`` at 0).
    """
    suspects = np.zeros(x0.size, dtype=bool)
    if level0 is None:
        return suspects
    with np.errstate(invalid="ignore", divide="ignore"):
        gap = (level0.f_plus - f0) / (level0.plus - x0) - (f0 - level0.f_minus) / (
            x0 - level0.minus
        )
        gap_noise = 8 * value_noise / (level0.plus - level0.minus)
    for leaf in tree.leaves:
        span = leaf.span
        magnitude = np.maximum(np.abs(entries.analytic[span]), np.abs(entries.numeric[span]))
        scale = float(np.nanmax(magnitude, initial=0.0))
        suspects[span] = np.abs(gap[span]) > KINK_GAP * scale + gap_noise[span]
    flagged: npt.NDArray[np.bool_] = suspects & entries.measured & (entries.codes == _PASS)
    return flagged


# -- re-measuring doubtful entries ----------------------------------------------------------------
def _resolve(
    entries: _Entries,
    doubtful: npt.NDArray[np.intp],
    evaluator: LossEvaluator,
    x0: FloatArray,
    f0: float,
    h: FloatArray,
    sampling: list[tuple[slice, np.dtype[Any]]],
    value_noise: FloatArray,
    level0: _CentralLevel | None,
) -> tuple[int, bool]:
    """Re-measure doubtful entries (Note [Kink test] in gradproof.kinks) and judge them again."""
    if level0 is None:  # one-sided methods: sample the other side to start from a central pair
        minus, plus = offset_points(x0, sampling, h, (-1.0, 1.0))
        s = sample(evaluator, x0, (plus, minus), indices=doubtful)
        level0 = _CentralLevel(plus, minus, s.values[0], s.values[1])
        if s.interrupted:
            return 0, True
    scale = np.maximum(np.abs(entries.analytic), np.abs(entries.numeric))
    resolution = resolve_entries(
        evaluator,
        x0,
        f0,
        doubtful,
        plus=level0.plus,
        minus=level0.minus,
        f_plus=level0.f_plus,
        f_minus=level0.f_minus,
        dtypes=sampling,
        noise=value_noise,
        resolution=np.maximum(entries.rtol * np.nan_to_num(scale), entries.atol) + 1e-300,
    )
    smooth = doubtful[resolution.status[doubtful] == SMOOTH]
    entries.numeric[smooth] = resolution.numeric[smooth]
    entries.error_bar[smooth] = resolution.error_bar[smooth]
    entries.judge()
    bracketed = doubtful[np.isin(resolution.status[doubtful], (KINK, UNRESOLVED))]
    left, right = resolution.left[bracketed], resolution.right[bracketed]
    entries.left[bracketed], entries.right[bracketed] = left, right
    entries.numeric[bracketed] = (left + right) / 2
    # At a kink the analytic value is a valid subgradient if it lies between the one-sided
    # derivatives (with the tolerance of their scale); only outside them is it wrong.
    a = entries.analytic[bracketed]
    slack = entries.rtol[bracketed] * np.maximum(np.abs(a), np.maximum(abs(left), abs(right)))
    slack += entries.atol + 4 * value_noise[bracketed] / resolution.step[bracketed]
    inside = (a >= np.minimum(left, right) - slack) & (a <= np.maximum(left, right) + slack)
    is_kink = resolution.status[bracketed] == KINK
    entries.reason[bracketed] = np.where(is_kink, _REASON_KINK, _REASON_NO_SAFE_STEP)
    entries.codes[bracketed] = np.where(inside, _INCONCLUSIVE, _FAIL)
    resolved = int(np.count_nonzero(resolution.status[doubtful] >= 0))
    return resolved, resolution.interrupted


# -- reports --------------------------------------------------------------------------------------
def _param_reports(tree: ParamTree, entries: _Entries) -> tuple[ParamReport, ...]:
    tolerance = entries.tolerance()
    reports = [_param_report(leaf, entries, tolerance, leaf.span) for leaf in tree.leaves]
    # Two wrong parameters whose gradients fit each other's: a swap explains both at once.
    swaps = diagnose_swaps(
        [(r.name, r.analytic, r.numeric, r.verdict is Verdict.FAIL) for r in reports]
    )
    return tuple(
        dataclasses.replace(r, diagnosis=swaps[r.name]) if r.name in swaps else r for r in reports
    )


def _param_report(
    leaf: Leaf, entries: _Entries, tolerance_all: FloatArray, span: slice
) -> ParamReport:
    analytic, numeric = entries.analytic[span], entries.numeric[span]
    tolerance, codes = tolerance_all[span], entries.codes[span]
    judged = (codes == _PASS) | (codes == _FAIL)
    failed = codes == _FAIL
    inconclusive = codes == _INCONCLUSIVE
    with np.errstate(invalid="ignore", divide="ignore"):
        error = np.abs(analytic - numeric)
        ratio = np.where(error == 0, 0.0, error / tolerance)
    ratio = np.where(np.isnan(ratio) & judged, np.inf, ratio)  # a NaN analytic entry is wrong
    ranked = np.where(judged, ratio, -1.0)

    def index_of(i: int) -> tuple[int, ...]:
        return tuple(int(j) for j in np.unravel_index(i, leaf.shape)) if leaf.shape else ()

    def entry(i: int) -> EntryReport:
        return EntryReport(
            name=format_index(leaf.name, index_of(i)),
            index=index_of(i),
            analytic=float(analytic[i]),
            numeric=float(numeric[i]),
            tolerance=float(tolerance[i]),
        )

    def doubtful(i: int) -> InconclusiveEntry:
        j = span.start + i if span.start else i
        return InconclusiveEntry(
            name=format_index(leaf.name, index_of(i)),
            index=index_of(i),
            analytic=float(analytic[i]),
            left=float(entries.left[j]),
            right=float(entries.right[j]),
            reason=_REASONS[int(entries.reason[j])],
            subgradient=bool(entries.reason[j] != _REASON_NON_FINITE),
        )

    order = np.argsort(-ranked, kind="stable")
    failures = tuple(entry(int(i)) for i in order[: min(int(failed.sum()), MAX_LISTED_ENTRIES)])
    if failed.any():
        verdict = Verdict.FAIL
    elif inconclusive.any():
        verdict = Verdict.INCONCLUSIVE
    else:
        verdict = Verdict.PASS
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
            doubtful(int(i)) for i in np.flatnonzero(inconclusive)[:MAX_LISTED_ENTRIES]
        ),
        n_entries=leaf.size,
        n_checked=int(np.count_nonzero(codes != _UNCHECKED)),
        n_failed=int(failed.sum()),
        n_inconclusive=int(inconclusive.sum()),
        diagnosis=(
            diagnose_parameter(
                leaf.name,
                analytic.reshape(leaf.shape),
                numeric.reshape(leaf.shape),
                wrong=failed.reshape(leaf.shape),
            )
            if failed.any()
            else None
        ),
        analytic=analytic.reshape(leaf.shape),
        numeric=numeric.reshape(leaf.shape),
        tolerance=tolerance.reshape(leaf.shape),
    )


def _describe_step(
    eps: float | None,
    rel_step: float | None,
    dtypes: list[tuple[slice, np.dtype[Any]]],
    order: int,
    estimate: NoiseEstimate | None,
    f0: float,
) -> str:
    if eps is not None:
        return f"absolute {eps:.3g}"
    if rel_step is not None:
        return f"relative {rel_step:.3g} × max(1, |x|)"
    level = _measured_level(estimate) / max(abs(f0), 1e-300)
    steps = sorted(
        {(max(machine_epsilon(dt), level) ** (1 / (order + 1)), dt.name) for _, dt in dtypes}
    )
    return ", ".join(f"relative {h:.3g} × max(1, |x|) ({name})" for h, name in steps)
