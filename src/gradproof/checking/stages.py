"""Check a backward pass line by line: each intermediate gradient of a staged forward pass.

Note [Checking backprop line by line]
    A hand-written backward pass computes the gradient of every intermediate
    value (``dZ3``, ``dA2``, ``dZ2``, ...) on its way to the parameters'. With
    the forward pass written as stages, ``v_k = f_k(v_{k-1})``, the loss is a
    function of any one intermediate value: run the stages after it. So each
    intermediate gradient can be checked against finite differences of the
    loss with respect to that value, and each parameter's gradient against
    the loss with respect to the parameter. In the backward order, the first
    wrong gradient is where the error enters: the lines that compute it from
    the last right one. A wrong parameter gradient whose source (the value at
    the stage where the parameter enters, whose gradient it is computed from)
    is right points at the lines that compute it from that source, not
    upstream.

    Some code computes its intermediate gradients for a multiple of the loss:
    the classic assignment backpropagates the summed cost ``m·J`` and applies
    the 1/m only in ``dW`` and ``db``. Every intermediate gradient is then
    ``m`` times the loss's, every one by the same factor. That is a
    convention, not a bug: a whole factor shared by every intermediate
    gradient (two of them at least) is recognised (``convention="auto"``),
    stated, and the intermediate gradients are judged against that multiple
    of the loss. A bug in one line scales its
    value and every one computed from it, but never the values nearer the
    loss, so it cannot pass for a convention unless it sits in the very first
    line of the backward pass; pass ``convention=1`` to rule that out.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from gradproof._typing import FloatArray
from gradproof._words import noun
from gradproof.checking.check import check_with_options
from gradproof.checking.diagnose_fits import format_factor
from gradproof.checking.options import CheckOptions
from gradproof.checking.stage_results import StageReport, StageResult
from gradproof.errors import InputError, UserCodeError
from gradproof.results import CheckResult, Verdict

__all__ = ["StageReport", "StageResult", "check_stages"]

Stage = tuple[str, Callable[..., Any]]
"""A stage: the name of the value it computes and ``fn(value)`` or ``fn(value, params)``."""

CONVENTION_TOLERANCE = 1e-6
"""How far apart, relatively, the intermediate gradients' factors may be to be one convention."""


def check_stages(
    stages: Sequence[Stage],
    x: Any,
    grads: Mapping[str, Any],
    *,
    params: Mapping[str, Any] | None = None,
    convention: float | str | None = "auto",
    **options: Any,
) -> StageResult:
    """Check a backward pass line by line, and say where its error enters.

    Parameters
    ----------
    stages : sequence of ``(name, fn)``
        The forward pass in stages: the first stage's ``fn`` receives `x`,
        each later one the value of the stage before, and the last one returns
        the loss (a scalar). With `params`, each ``fn`` is called as
        ``fn(value, params)``.
    x : ndarray
        The forward pass's input. Never modified.
    grads : mapping of str to ndarray
        The hand-written gradients to check, keyed by a stage's name (the
        gradient of the loss with respect to that stage's value) or a
        parameter's name; a ``d`` in front is accepted (``dZ2`` for ``Z2``,
        ``dW2`` for ``W2``), so the output of a backward pass such as the
        assignment's can be passed as it is. The last stage's (the loss's)
        value has no gradient to check.
    params : mapping of str to ndarray, optional
        The parameters, passed to every stage. Never modified.
    convention : "auto", float or None
        The factor between the intermediate gradients and the loss's: with
        ``"auto"`` (default) a factor shared by every intermediate gradient is
        recognised as a convention (Note [Checking backprop line by line]);
        a number says what it is (``m`` for gradients of the summed cost
        ``m·J``); None or 1: the gradients of the loss itself.
    **options
        Passed to :func:`gradproof.check` for every check: `mode`, `method`,
        `eps`, `rel_step`, `rtol`, `atol`, `seed`, `noise`, ...

    Returns
    -------
    StageResult
        ``result.where`` says where the error enters, ``result.stages`` has a
        report per gradient, ``result.convention`` the factor recognised, and
        ``str(result)`` is a table of them.

    Raises
    ------
    InputError
        If `stages` is not a sequence of ``(name, callable)`` pairs with
        distinct names, a key of `grads` names neither a stage nor a
        parameter, `convention` is not a positive number, or a check refuses
        its input (a gradient of the wrong shape, a loss that is not a scalar).
    UserCodeError
        If a stage raises.

    See Also
    --------
    gradproof.check : the check each gradient gets.
    gradproof.course.forward_stages_n : the assignment's forward pass in stages.

    Examples
    --------
    >>> import numpy as np
    >>> X = np.array([[1.0, -2.0], [0.5, 3.0]])
    >>> stages = [
    ...     ("H", lambda x, p: np.tanh(p["W"] @ x)),
    ...     ("loss", lambda h, p: float(np.sum(h**2))),
    ... ]
    >>> W = np.array([[0.3, -0.1], [0.2, 0.4]])
    >>> H = np.tanh(W @ X)
    >>> dH = 2 * H
    >>> dW = 3 * (dH * (1 - H**2)) @ X.T  # bug: a stray factor of 3
    >>> result = check_stages(stages, X, {"dH": dH, "dW": dW}, params={"W": W})
    >>> print(result.where)  # doctest: +NORMALIZE_WHITESPACE
    dH is right; dW is 3× too large: the error is in the line that computes it from dH,
    not upstream.
    """
    started = time.perf_counter()
    checked = CheckOptions.from_keywords(options, function="gradproof.check_stages")
    names = _validate_stages(stages)
    fixed = {k: np.array(v, copy=True) for k, v in (params or {}).items()}
    with_params = params is not None
    factor_given = _validate_convention(convention)
    resolved = _resolve_keys(grads, names[:-1], list(fixed))
    start = np.array(x, copy=True)
    values = _forward(stages, start, fixed, with_params)

    def run_from(k: int, value: Any, p: Mapping[str, Any]) -> float:
        for j in range(k + 1, len(stages)):
            value = _call(stages[j], value, p, with_params)
        return float(np.asarray(value).reshape(()))

    value_keys = sorted(
        (key for key, (kind, _) in resolved.items() if kind == "value"),
        key=lambda key: -names.index(resolved[key][1]),
    )
    param_keys = [key for key, (kind, _) in resolved.items() if kind == "parameter"]
    n_evals = 0

    def check_values(scale: float) -> dict[str, CheckResult]:
        nonlocal n_evals
        found = {}
        for key in value_keys:
            k = names.index(resolved[key][1])

            def loss(v: FloatArray, k: int = k) -> float:
                return scale * run_from(k, v, fixed)

            found[key] = check_with_options(loss, np.asarray(grads[key]), values[k], checked)
            n_evals += found[key].n_evals
        return found

    scale = 1.0 if factor_given is None else factor_given
    value_checks = check_values(scale)
    note = ""
    if convention == "auto":
        shared = _shared_factor(value_checks)
        if shared is not None:
            rechecked = check_values(shared)
            if all(r.verdict is not Verdict.FAIL for r in rechecked.values()):
                scale, value_checks = shared, rechecked
    if scale != 1.0:
        note = _convention_note(value_keys, scale)

    reports = [
        _report(key, resolved[key], value_checks[key], value_keys[i - 1] if i else "the loss")
        for i, key in enumerate(value_keys)
    ]
    if param_keys:
        param_names = [resolved[key][1] for key in param_keys]

        def param_loss(p: Mapping[str, FloatArray]) -> float:
            return run_from(-1, start, {**fixed, **p})

        result = check_with_options(
            param_loss,
            {resolved[key][1]: np.asarray(grads[key]) for key in param_keys},
            {name: fixed[name] for name in param_names},
            checked,
        )
        n_evals += result.n_evals
        sources = _sources(stages, [start, *values[:-1]], fixed, param_names, with_params)
        display = {name: _display(name, grads, resolved) for name in names}
        for key, name in zip(param_keys, param_names, strict=True):
            source = sources[name]
            reports.append(
                _report(
                    key,
                    resolved[key],
                    _only(result, name),
                    None if source is None else display[names[source]],
                )
            )
    return StageResult(
        stages=tuple(reports),
        where=_where(reports, names, resolved),
        convention=None if scale == 1.0 else scale,
        convention_note=note,
        n_evals=n_evals,
        seconds=time.perf_counter() - started,
    )


# -- validation ------------------------------------------------------------------------------------
def _validate_stages(stages: object) -> list[str]:
    if isinstance(stages, (str, bytes)) or not isinstance(stages, Sequence) or not stages:
        raise InputError(
            "`stages` must be a non-empty sequence of (name, fn) pairs, the forward pass in "
            f"order, the last returning the loss; got {type(stages).__name__}."
        )
    names = []
    for i, stage in enumerate(stages):
        if not (
            isinstance(stage, tuple)
            and len(stage) == 2
            and isinstance(stage[0], str)
            and callable(stage[1])
        ):
            raise InputError(
                f"`stages[{i}]` must be a (name, fn) pair with a string name and a callable fn; "
                f"got {stage!r}. For example `('Z1', lambda X, p: p['W1'] @ X + p['b1'])`."
            )
        if stage[0] in names:
            raise InputError(
                f"`stages` names {stage[0]!r} twice; each stage's value needs its own name, "
                "for its gradient in `grads`."
            )
        names.append(stage[0])
    return names


def _validate_convention(convention: float | str | None) -> float | None:
    if convention is None or convention == "auto":
        return None
    if (
        isinstance(convention, bool)
        or not isinstance(convention, (int, float, np.floating))
        or not np.isfinite(convention)
        or convention <= 0
    ):
        raise InputError(
            f"`convention` must be 'auto', None or a positive number (the factor between the "
            f"intermediate gradients and the loss's, e.g. m); got {convention!r}."
        )
    return None if convention == 1 else float(convention)


def _resolve_keys(
    grads: Mapping[str, Any], values: list[str], params: list[str]
) -> dict[str, tuple[str, str]]:
    """Map each key of `grads` to ("value" or "parameter", the name it is the gradient of)."""
    if not isinstance(grads, Mapping):
        raise InputError(
            f"`grads` must be a mapping of names to gradients; got {type(grads).__name__}."
        )
    resolved = {}
    for key in grads:
        for name in (key, key[1:] if isinstance(key, str) and key.startswith("d") else None):
            if name in values:
                resolved[key] = ("value", name)
                break
            if name in params:
                resolved[key] = ("parameter", name)
                break
        else:
            raise InputError(
                f"`grads` has the key {key!r}, which names neither a stage (the last one, the "
                f"loss, excluded) nor a parameter. The stages are {', '.join(values)}; the "
                f"parameters are {', '.join(params) or 'none (pass `params=`)'}. A `d` in front "
                "is accepted (`dZ2` for `Z2`)."
            )
    if not resolved:
        raise InputError("`grads` is empty: pass the hand-written gradients to check.")
    return resolved


# -- the forward pass ------------------------------------------------------------------------------
def _call(stage: Stage, value: Any, params: Mapping[str, Any], with_params: bool) -> Any:
    name, fn = stage
    try:
        return fn(value, params) if with_params else fn(value)
    except Exception as exc:
        raise UserCodeError(
            f"The stage {name!r} raised {type(exc).__name__}: {exc}", function=name
        ) from exc


def _forward(
    stages: Sequence[Stage], x: Any, params: Mapping[str, Any], with_params: bool
) -> list[FloatArray]:
    values = [x]
    for stage in stages:
        out = _call(stage, np.array(values[-1], copy=True), dict(params), with_params)
        values.append(np.asarray(out, dtype=np.float64))
    return values[1:]


def _sources(
    stages: Sequence[Stage],
    inputs: list[Any],
    params: Mapping[str, FloatArray],
    names: list[str],
    with_params: bool,
) -> dict[str, int | None]:
    """Find the stage where each parameter enters: the first whose value moves when it moves."""
    found: dict[str, int | None] = {}
    for name in names:
        moved = {**params, name: params[name] + 1e-3 * (1 + np.abs(params[name]))}
        found[name] = None
        for k, stage in enumerate(stages):
            base = _call(stage, np.array(inputs[k], copy=True), dict(params), with_params)
            out = _call(stage, np.array(inputs[k], copy=True), moved, with_params)
            if not np.array_equal(np.asarray(base), np.asarray(out)):
                found[name] = k
                break
    return found


# -- reports ---------------------------------------------------------------------------------------
def _only(result: CheckResult, name: str) -> CheckResult:
    """Return the check of several parameters as the check of one of them."""
    return dataclasses.replace(result, params=(result[name],))


def _factor(result: CheckResult) -> float | None:
    report = result.params[0]
    d = report.diagnosis
    if d is not None and d.kind in ("scale", "sign") and d.factor is not None:
        return float(d.factor)
    return None


def _report(
    key: str, resolved: tuple[str, str], result: CheckResult, source: str | None
) -> StageReport:
    kind, of = resolved
    report = result.params[0]
    return StageReport(
        name=key,
        of=of,
        kind=kind,
        verdict=result.verdict,
        factor=_factor(result) if report.verdict is Verdict.FAIL else None,
        summary=report.diagnosis.summary if report.diagnosis else "",
        source=source,
        check=result,
    )


def _shared_factor(checks: Mapping[str, CheckResult]) -> float | None:
    """Return the whole factor every intermediate gradient is off by, if they share one.

    At least two intermediate gradients must share it: one alone cannot tell a
    convention from a bug in the first line of the backward pass. The factor
    must be a whole number (the ``m`` of a summed cost).
    """
    factors = [_factor(r) if r.verdict is Verdict.FAIL else None for r in checks.values()]
    known = [f for f in factors if f is not None]
    if len(factors) < 2 or len(known) < len(factors):
        return None
    first = known[0]
    if first <= 1.0 or not format_factor(first).isdigit():
        return None
    if all(abs(f - first) <= CONVENTION_TOLERANCE * first for f in known):
        return float(format_factor(first))
    return None


def _convention_note(keys: list[str], scale: float) -> str:
    k = format_factor(scale)
    listed = _and(keys)
    return (
        f"{listed} {noun(len(keys), 'is')} {k} × the {noun(len(keys), 'gradient')} of the loss: "
        f"{noun(len(keys), 'it is the gradient', 'they are gradients')} of {k} × the loss, as "
        f"when a mean over m = {k} examples is backpropagated as the summed cost m·J, with the "
        f"1/m applied only in the parameters' gradients. A convention, not a bug: "
        f"{noun(len(keys), 'it was', 'they were')} judged against {k} × the loss."
    )


def _and(items: Sequence[str]) -> str:
    items = list(items)
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _how_wrong(report: StageReport) -> str:
    k = report.factor
    if k is not None and k > 0:
        return f"{format_factor(k)}× too large" if k > 1 else f"{format_factor(1 / k)}× too small"
    if k is not None and format_factor(k) == "-1":
        return "of the wrong sign"
    return f"wrong ({report.summary})" if report.summary else "wrong"


def _display(name: str, grads: Mapping[str, Any], resolved: Mapping[str, tuple[str, str]]) -> str:
    """Spell a value's gradient as `grads` does (``dZ2``), or ``d`` + name if not given."""
    for key, (_, of) in resolved.items():
        if of == name:
            return key
    prefixed = any(key != of for key, (_, of) in resolved.items())
    return f"d{name}" if prefixed else name


def _where(reports: list[StageReport], names: list[str], resolved: Mapping[str, Any]) -> str:
    """Say where the error enters (Note [Checking backprop line by line])."""
    values = [r for r in reports if r.kind == "value"]  # backward order
    wrong_value = next((r for r in values if not r.passed), None)
    if wrong_value is not None:
        before = values[: values.index(wrong_value)]
        how = _how_wrong(wrong_value)
        if not before:
            return (
                f"{wrong_value.name} is {how}: the error is in the lines that compute it from "
                "the loss."
            )
        right = before[-1].name
        return (
            f"{right} is right and {wrong_value.name} is {how}: the error is in the lines that "
            f"compute {wrong_value.name} from {right}."
        )
    wrong = [r for r in reports if r.kind == "parameter" and not r.passed]
    if not wrong:
        return "every gradient is right."
    checked = {r.name for r in values}
    order = {r.name: i for i, r in enumerate(values)}
    wrong.sort(key=lambda r: order.get(r.source or "", len(order)))
    sources: list[str] = []
    for r in wrong:
        if r.source is not None and r.source not in sources:
            sources.append(r.source)
    parts = []
    for i, r in enumerate(wrong):
        how = _how_wrong(r)
        verb = "is " if i == 0 or not how[0].isdigit() else ""
        parts.append(f"{r.name} {verb}{how}")
    them = "them" if len(wrong) > 1 else "it"
    lines = "lines that compute" if len(wrong) > 1 else "line that computes"
    unchecked = [s for s in sources if s not in checked]
    if not sources or unchecked:
        missing = _and(unchecked) if unchecked else "their sources"
        return (
            f"{_and(parts)}: the error is in the {lines} {them}, or upstream ({missing} "
            "not checked: pass its gradient in `grads`)."
        )
    return (
        f"{_and(sources)} {noun(len(sources), 'is')} right; {_and(parts)}: the error is in the "
        f"{lines} {them} from {_and(sources)}, not upstream."
    )
