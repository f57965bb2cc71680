"""The general gradient checker: compare a hand-written gradient with central differences."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import numpy.typing as npt

from gradproof._typing import FloatArray, GradFunction, LossFunction, Params
from gradproof.compare import relative_difference
from gradproof.diagnose import diagnose_parameter
from gradproof.errors import InputError, UserCodeError
from gradproof.finite_diff import CentralDifferences, central_differences, richardson
from gradproof.results import CheckResult, EntryReport, ParamReport, Verdict
from gradproof.steps import CentralPoints, central_points, default_relative_step, machine_epsilon
from gradproof.tolerances import default_rtol, entry_tolerance, roundoff_error
from gradproof.tree import Leaf, ParamTree, format_index

__all__ = ["MAX_LISTED_ENTRIES", "check"]

MAX_LISTED_ENTRIES = 20
"""How many wrong entries each parameter report lists, worst first."""

# Per-entry verdict codes, kept in one int8 array while judging.
_PASS, _FAIL, _INCONCLUSIVE, _UNCHECKED = 0, 1, 2, 3


def check(
    loss: LossFunction,
    grad: GradFunction | Params,
    params: Params,
    *,
    eps: float | None = None,
    rel_step: float | None = None,
    rtol: float | None = None,
    atol: float = 0.0,
) -> CheckResult:
    """Check a gradient against central finite differences, parameter by parameter.

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
    eps : float, optional
        An absolute step for every coordinate (the assignment's epsilon).
    rel_step : float, optional
        A relative step: each coordinate ``x`` moves by ``rel_step * max(1, |x|)``.
        By default ``eps_dtype ** (1/3)``, about 6.1e-6 in float64; see
        :mod:`gradproof.steps`. Exclusive with `eps`.
    rtol : float, optional
        Relative tolerance of each entry: 1e-5 for float64, 1e-3 for float32,
        1e-2 for float16 by default.
    atol : float, optional
        Absolute tolerance of each entry, added to the numerical error bar; 0
        by default.

    Returns
    -------
    CheckResult
        ``result.passed`` is the overall verdict, ``result.suspects`` names the
        parameters whose gradients are wrong, and ``str(result)`` is a readable
        report with a diagnosis of each wrong parameter.

    Raises
    ------
    InputError
        Before any finite difference is taken, if the parameters are not
        floating point or not finite, the gradients do not match the
        parameters' structure or shapes, the loss is not a finite scalar, the
        loss modifies its argument, or an option is invalid.
    UserCodeError
        If `loss` or `grad` raises; the original exception is its ``__cause__``.

    See Also
    --------
    gradproof.course.gradient_check_n : the classic assignment's global check.

    Notes
    -----
    Each entry ``i`` passes when ``|a_i - n_i| <= atol + rtol * max(|a_i|, |n_i|)
    + e_i``, where ``n_i`` is the central difference and ``e_i`` its round-off
    error bar. Entries that fail are measured again at half the step and
    Richardson-extrapolated, and the change between the two steps is added to
    their error bar, so that truncation error is not mistaken for a bug
    (see :mod:`gradproof.tolerances`). The check costs ``2 n + 1`` loss
    evaluations for ``n`` entries, plus two for each re-measured entry.

    A ``KeyboardInterrupt`` during the sweep returns the entries measured so
    far, with ``result.interrupted`` set.

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
    if not callable(loss):
        raise InputError(
            f"`loss` must be a function of the parameters returning a scalar; got a "
            f"{type(loss).__name__}. Pass e.g. `lambda p: model_loss(X, Y, p)`."
        )
    _validate_tolerances(rtol, atol)
    tree, x0 = ParamTree.flatten(params)
    evaluate = _LossEvaluator(loss, tree)
    loss_value, loss_dtype = evaluate.at_base_point(x0)
    analytic = _analytic_gradient(grad, tree, x0)

    dtypes = [(leaf.span, _working_dtype(leaf.dtype, loss_dtype)) for leaf in tree.leaves]
    machine_eps, rtols, default_steps = _precision_per_coordinate(dtypes, x0.size, rtol)
    points = central_points(
        x0,
        [(leaf.span, leaf.dtype) for leaf in tree.leaves],
        abs_step=eps,
        rel_step=default_steps if eps is None and rel_step is None else rel_step,
        describe=lambda i: format_index(*_name_and_index(tree, i)),
    )

    sweep = central_differences(evaluate, x0, points)
    numeric = sweep.derivative
    error_bar = roundoff_error(sweep.f_plus, sweep.f_minus, points.width, machine_eps)
    codes = _judge(analytic, numeric, error_bar, sweep.measured, rtols, atol)

    n_refined = 0
    interrupted = sweep.interrupted
    failing = np.flatnonzero(codes == _FAIL)
    if failing.size and not interrupted:
        refined = _refine(evaluate, x0, points, sweep, failing, tree, machine_eps)
        if refined is not None:
            fine_numeric, fine_error, interrupted = refined
            done = failing[np.isfinite(fine_numeric[failing])]
            numeric = numeric.copy()
            numeric[done] = fine_numeric[done]
            error_bar[done] = fine_error[done]
            codes = _judge(analytic, numeric, error_bar, sweep.measured, rtols, atol)
            n_refined = int(done.size)

    tolerance = entry_tolerance(analytic, numeric, error_bar, rtol=rtols, atol=atol)
    reports = tuple(
        _param_report(
            leaf, analytic[leaf.span], numeric[leaf.span], tolerance[leaf.span], codes[leaf.span]
        )
        for leaf in tree.leaves
    )
    judged = (codes == _PASS) | (codes == _FAIL)
    return CheckResult(
        params=reports,
        relative_difference=relative_difference(analytic[judged], numeric[judged]),
        loss_value=loss_value,
        method="central",
        step=_describe_step(eps, rel_step, dtypes),
        rtol=float(np.max(rtols)) if rtols.size else default_rtol(loss_dtype),
        atol=atol,
        n_evals=evaluate.n_calls,
        n_refined=n_refined,
        seconds=time.perf_counter() - started,
        interrupted=interrupted,
    )


class _LossEvaluator:
    """The loss as a function of the flat vector, validating and counting its calls."""

    def __init__(self, loss: LossFunction, tree: ParamTree) -> None:
        self.loss = loss
        self.tree = tree
        self.n_calls = 0

    def __call__(self, vector: FloatArray) -> float:
        value, _ = self._evaluate(vector, where="at a perturbed point")
        return value

    def at_base_point(self, x0: FloatArray) -> tuple[float, np.dtype[Any]]:
        """Evaluate at the point itself, where the loss must be a finite scalar."""
        work = x0.copy()
        value, dtype = self._evaluate(work, where="at the given parameters")
        if not np.isfinite(value):
            raise InputError(
                f"`loss` returned {value} at the given parameters; a gradient can only be "
                "checked where the loss is finite. Look for log(0), division by zero or "
                "overflow in the forward pass, or check at other parameters."
            )
        changed = [
            leaf.name
            for leaf in self.tree.leaves
            if not np.array_equal(work[leaf.span], x0[leaf.span])
        ]
        if changed:
            raise InputError(
                f"`loss` modified its parameters in place ({', '.join(changed)}); a checked loss "
                "must leave its argument unchanged, or every perturbation is corrupted. Copy "
                "the parameters before updating them inside the loss."
            )
        return value, dtype

    def _evaluate(self, vector: FloatArray, *, where: str) -> tuple[float, np.dtype[Any]]:
        self.n_calls += 1
        try:
            value = self.loss(self.tree.unflatten(vector))
        except (KeyboardInterrupt, GeneratorExit):
            raise
        except Exception as exc:
            raise UserCodeError(
                f"`loss` raised {type(exc).__name__} {where}: {exc}", function="loss"
            ) from exc
        return _scalar_loss(value)


def _scalar_loss(value: object) -> tuple[float, np.dtype[Any]]:
    """Read the loss's return value as a float, with the dtype it was computed in."""
    if isinstance(value, float):
        return value, np.dtype(np.float64)
    try:
        array = np.asarray(value)
    except Exception as exc:
        raise InputError(
            f"`loss` returned a {type(value).__name__}, which is not a number ({exc}); "
            "expected a real scalar. Return the loss as a float."
        ) from exc
    if array.dtype.kind not in "fiu":
        raise InputError(
            f"`loss` returned a value of dtype {array.dtype} ({type(value).__name__}); expected "
            "a real scalar. Return the loss as a float."
        )
    if array.size != 1:
        raise InputError(
            f"`loss` returned an array of shape {array.shape}; expected a scalar. Reduce it to "
            "one number, e.g. with `.sum()` or `.mean()` over the examples."
        )
    dtype = array.dtype if array.dtype.kind == "f" else np.dtype(np.float64)
    return float(array.reshape(())), dtype


def _analytic_gradient(grad: GradFunction | Params, tree: ParamTree, x0: FloatArray) -> FloatArray:
    """Compute (or read) the analytic gradient and flatten it in the parameters' order."""
    if callable(grad):
        try:
            value = grad(tree.unflatten(x0.copy()))
        except (KeyboardInterrupt, GeneratorExit):
            raise
        except Exception as exc:
            raise UserCodeError(
                f"`grad` raised {type(exc).__name__} at the given parameters: {exc}",
                function="grad",
            ) from exc
    else:
        value = grad
    return tree.flatten_like(value, what="gradient")


def _validate_tolerances(rtol: float | None, atol: float) -> None:
    for label, value in (("rtol", rtol), ("atol", atol)):
        if value is not None and not (np.isfinite(value) and value >= 0):
            raise InputError(
                f"`{label}` must be a non-negative finite number; got {value!r}. "
                "Leave it unset for the default."
            )


def _precision_per_coordinate(
    dtypes: list[tuple[slice, np.dtype[Any]]], size: int, rtol: float | None
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Machine epsilon, relative tolerance and default relative step of every coordinate."""
    machine_eps = np.empty(size)
    rtols = np.empty(size)
    steps = np.empty(size)
    for span, dtype in dtypes:
        machine_eps[span] = machine_epsilon(dtype)
        rtols[span] = default_rtol(dtype) if rtol is None else rtol
        steps[span] = default_relative_step(dtype)
    return machine_eps, rtols, steps


def _working_dtype(param_dtype: np.dtype[Any], loss_dtype: np.dtype[Any]) -> np.dtype[Any]:
    """Return the less precise of the two dtypes: it limits the finite difference."""
    return (
        param_dtype if machine_epsilon(param_dtype) >= machine_epsilon(loss_dtype) else loss_dtype
    )


def _judge(
    analytic: FloatArray,
    numeric: FloatArray,
    error_bar: FloatArray,
    measured: npt.NDArray[np.bool_],
    rtols: FloatArray,
    atol: float,
) -> npt.NDArray[np.int8]:
    """Give every entry its verdict code."""
    tolerance = entry_tolerance(analytic, numeric, error_bar, rtol=rtols, atol=atol)
    with np.errstate(invalid="ignore"):
        within = np.abs(analytic - numeric) <= tolerance
    codes = np.full(analytic.shape, _FAIL, dtype=np.int8)
    codes[within] = _PASS
    # A loss that is not finite next to the point gives no estimate to compare with.
    codes[~np.isfinite(numeric)] = _INCONCLUSIVE
    codes[~measured] = _UNCHECKED
    return codes


def _refine(
    evaluate: _LossEvaluator,
    x0: FloatArray,
    points: CentralPoints,
    coarse: CentralDifferences,
    indices: npt.NDArray[np.intp],
    tree: ParamTree,
    machine_eps: FloatArray,
) -> tuple[FloatArray, FloatArray, bool] | None:
    """Re-measure entries at half the step.

    Returns the Richardson estimates, their error bars, and whether Ctrl-C cut
    the re-measurement short; None when half the step is too small to take.
    """
    try:
        half = central_points(
            x0, [(leaf.span, leaf.dtype) for leaf in tree.leaves], abs_step=points.width / 4
        )
    except InputError:
        return None  # half the step is below some coordinate's resolution: keep the verdicts
    fine = central_differences(evaluate, x0, half, indices=indices)
    estimate, truncation = richardson(coarse.derivative, fine.derivative)
    error = roundoff_error(fine.f_plus, fine.f_minus, half.width, machine_eps) + truncation
    return estimate, error, fine.interrupted


def _name_and_index(tree: ParamTree, flat_index: int) -> tuple[str, tuple[int, ...]]:
    leaf, index = tree.locate(flat_index)
    return leaf.name, index


def _param_report(
    leaf: Leaf,
    analytic: FloatArray,
    numeric: FloatArray,
    tolerance: FloatArray,
    codes: npt.NDArray[np.int8],
) -> ParamReport:
    judged = (codes == _PASS) | (codes == _FAIL)
    failed = codes == _FAIL
    with np.errstate(invalid="ignore", divide="ignore"):
        error = np.abs(analytic - numeric)
        ratio = np.where(error == 0, 0.0, error / tolerance)
    ratio = np.where(np.isnan(ratio) & judged, np.inf, ratio)  # a NaN analytic entry is wrong
    ranked = np.where(judged, ratio, -1.0)

    def entry(i: int) -> EntryReport:
        index = tuple(int(j) for j in np.unravel_index(i, leaf.shape)) if leaf.shape else ()
        return EntryReport(
            name=format_index(leaf.name, index),
            index=index,
            analytic=float(analytic[i]),
            numeric=float(numeric[i]),
            tolerance=float(tolerance[i]),
        )

    worst = entry(int(np.argmax(ranked))) if judged.any() else None
    order = np.argsort(-ranked, kind="stable")
    failures = tuple(entry(int(i)) for i in order[: min(int(failed.sum()), MAX_LISTED_ENTRIES)])
    if failed.any():
        verdict = Verdict.FAIL
    elif np.any(codes == _INCONCLUSIVE):
        verdict = Verdict.INCONCLUSIVE
    else:
        verdict = Verdict.PASS
    shaped = {
        name: values.reshape(leaf.shape)
        for name, values in (("analytic", analytic), ("numeric", numeric), ("tolerance", tolerance))
    }
    return ParamReport(
        name=leaf.name,
        shape=leaf.shape,
        dtype=str(leaf.dtype),
        verdict=verdict,
        relative_difference=relative_difference(analytic[judged], numeric[judged]),
        max_abs_error=float(np.max(error[judged])) if judged.any() else 0.0,
        error_ratio=float(np.max(ratio[judged])) if judged.any() else 0.0,
        worst=worst,
        failures=failures,
        n_entries=leaf.size,
        n_checked=int(np.count_nonzero(codes != _UNCHECKED)),
        n_failed=int(failed.sum()),
        n_inconclusive=int(np.count_nonzero(codes == _INCONCLUSIVE)),
        diagnosis=diagnose_parameter(leaf.name, analytic, numeric) if failed.any() else None,
        **shaped,
    )


def _describe_step(
    eps: float | None, rel_step: float | None, dtypes: list[tuple[slice, np.dtype[Any]]]
) -> str:
    if eps is not None:
        return f"absolute {eps:.3g}"
    if rel_step is not None:
        return f"relative {rel_step:.3g} × max(1, |x|)"
    steps = sorted({(default_relative_step(dt), dt.name) for _, dt in dtypes})
    return ", ".join(f"relative {h:.3g} × max(1, |x|) ({name})" for h, name in steps)
