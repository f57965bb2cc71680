"""Assertion helpers for test suites: a gradient check that fails the test when it is wrong.

``gradproof.check`` returns a result; the ``assert_*`` helpers here run the same
check and raise :class:`~gradproof.errors.GradientMismatchError` (an
``AssertionError``) carrying that result when a gradient is wrong. The message is
the full report: which parameters are wrong, which entries, and the diagnosis.
Every helper sets ``__tracebackhide__``, so pytest points at the test's own line
instead of gradproof's internals.

The PyTorch and JAX variants import :mod:`gradproof.torch` and :mod:`gradproof.jax`
only when called: this module needs numpy only.

Examples
--------
>>> import numpy as np
>>> from gradproof.testing import assert_gradients
>>> w = np.array([1.0, -2.0, 3.0])
>>> assert_gradients(lambda p: np.sum(p**2), lambda p: 2 * p, w).passed
True
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType, ModuleType
from typing import Any

from gradproof._typing import GradFunction, LossFunction, Params
from gradproof._words import counted, noun
from gradproof.checking.check import check
from gradproof.checking.diagnose_fits import format_factor
from gradproof.errors import BackendUnavailableError, GradientMismatchError
from gradproof.report.text import render_result, wrong_count
from gradproof.results import CheckResult, ParamReport, Verdict

__all__ = [
    "GradientAssertions",
    "GradientMismatchError",
    "assert_function",
    "assert_gradients",
    "assert_jax_function",
    "assert_module",
]

_BACKENDS = {
    "torch": ("PyTorch", ("torch",), "pip install torch"),
    "jax": ("JAX", ("jax", "jaxlib"), "pip install jax jaxlib"),
}
"""gradproof module -> (framework, the modules whose absence means it is missing, install)."""


def assert_gradients(
    loss: LossFunction,
    grad: GradFunction | Params,
    params: Params,
    *,
    allow_inconclusive: bool = True,
    **options: Any,
) -> CheckResult:
    """Check a gradient against finite differences and raise if it is wrong.

    Parameters
    ----------
    loss : callable ``loss(params) -> scalar``
        The function whose gradient is checked (see :func:`gradproof.check`).
    grad : callable ``grad(params) -> gradients``, or gradients
        The hand-written gradient, or its value at `params`.
    params : ndarray, float, or nested dict/list/tuple of them
        The point to check at; never modified.
    allow_inconclusive : bool, optional
        Whether a check that found nothing wrong but could not judge some
        entries (a kink, a loss that is not finite nearby) passes; True by
        default. With False it raises like a wrong gradient.
    **options
        Passed to :func:`gradproof.check`: `mode`, `method`, `rtol`, `atol`,
        `seed`, `eps`, `max_evals`, `executor`, ...

    Returns
    -------
    CheckResult
        The result of the check, when it passed (or was inconclusive and that
        is allowed).

    Raises
    ------
    GradientMismatchError
        If a gradient is wrong, or inconclusive and `allow_inconclusive` is
        False. It is an ``AssertionError``; ``err.result`` is the result, and
        the message starts with one short line naming the wrong parameters
        (what pytest's ``-ra`` summary shows, e.g. ``wrong gradient: W2 (2×
        too large)``) and goes on with the full report, listing every recorded
        wrong entry.
    KeyboardInterrupt
        If the check was interrupted with Ctrl-C: a test must not pass (or
        fail) on a check that did not finish.
    InputError
        If the arguments or options are unusable (see :func:`gradproof.check`).
    UserCodeError
        If `loss` or `grad` raises.

    See Also
    --------
    gradproof.check : the same check, returning the result instead of raising.
    assert_function, assert_module : PyTorch functions and modules.
    assert_jax_function : JAX functions.

    Examples
    --------
    >>> import numpy as np
    >>> w = np.array([1.0, -2.0, 3.0])
    >>> assert_gradients(lambda p: np.sum(p**2), lambda p: 2 * p, w).passed
    True
    >>> try:
    ...     assert_gradients(lambda p: np.sum(p**2), lambda p: 4 * p, w)
    ... except AssertionError as error:
    ...     print(str(error).splitlines()[0])
    ...     print(error.result.suspects)
    wrong gradient: params (2× too large)
    ('params',)
    """
    __tracebackhide__ = True
    result = check(loss, grad, params, **options)
    return _require_correct(result, allow_inconclusive=allow_inconclusive)


def assert_function(
    fn: Callable[..., Any], *inputs: Any, allow_inconclusive: bool = True, **options: Any
) -> CheckResult:
    """Check a PyTorch function's autograd gradient and raise if it is wrong.

    Runs :func:`gradproof.torch.check_function` and raises like
    :func:`assert_gradients`.

    Parameters
    ----------
    fn : callable
        The function of tensors whose backward (e.g. a custom
        ``torch.autograd.Function``) is checked.
    *inputs : torch.Tensor or other arguments
        The point to check at, passed to `fn` in order.
    allow_inconclusive : bool, optional
        Whether an inconclusive check passes; True by default.
    **options
        Passed to :func:`gradproof.torch.check_function`.

    Returns
    -------
    CheckResult
        The result, when the gradients are right.

    Raises
    ------
    GradientMismatchError
        If a gradient is wrong (or inconclusive and `allow_inconclusive` is False).
    BackendUnavailableError
        If PyTorch is not installed.

    See Also
    --------
    assert_module : the same for a ``torch.nn.Module``'s parameters.

    Examples
    --------
    >>> import torch
    >>> x = torch.randn(3, dtype=torch.float64, requires_grad=True)
    >>> assert_function(lambda x: (x**3).sum(), x).passed
    True
    """
    __tracebackhide__ = True
    check_function: Callable[..., CheckResult] = _backend("torch").check_function
    return _require_correct(
        check_function(fn, *inputs, **options), allow_inconclusive=allow_inconclusive
    )


def assert_module(
    module: Any,
    inputs: Any,
    loss_fn: Callable[..., Any],
    *,
    allow_inconclusive: bool = True,
    **options: Any,
) -> CheckResult:
    """Check the gradients of a PyTorch module's parameters and raise if one is wrong.

    Runs :func:`gradproof.torch.check_module` and raises like
    :func:`assert_gradients`.

    Parameters
    ----------
    module : torch.nn.Module
        The module whose parameters' gradients are checked.
    inputs : torch.Tensor or tuple of torch.Tensor
        The batch it is evaluated on.
    loss_fn : callable
        Turns the module's output into a scalar loss.
    allow_inconclusive : bool, optional
        Whether an inconclusive check passes; True by default.
    **options
        Passed to :func:`gradproof.torch.check_module`.

    Returns
    -------
    CheckResult
        The result, when the gradients are right.

    Raises
    ------
    GradientMismatchError
        If a gradient is wrong (or inconclusive and `allow_inconclusive` is False).
    BackendUnavailableError
        If PyTorch is not installed.

    See Also
    --------
    assert_function : the same for a function of tensors.

    Examples
    --------
    >>> import torch
    >>> layer = torch.nn.Linear(3, 2).double()
    >>> x = torch.randn(4, 3, dtype=torch.float64)
    >>> assert_module(layer, (x,), lambda out: out.pow(2).sum()).passed
    True
    """
    __tracebackhide__ = True
    check_module: Callable[..., CheckResult] = _backend("torch").check_module
    return _require_correct(
        check_module(module, inputs, loss_fn, **options), allow_inconclusive=allow_inconclusive
    )


def assert_jax_function(
    fn: Callable[..., Any], *args: Any, allow_inconclusive: bool = True, **options: Any
) -> CheckResult:
    """Check a JAX function's gradient (e.g. a ``custom_vjp``) and raise if it is wrong.

    Runs :func:`gradproof.jax.check_function` and raises like
    :func:`assert_gradients`.

    Parameters
    ----------
    fn : callable
        The JAX function whose gradient rule is checked.
    *args : jax.Array or pytrees of them
        The point to check at, passed to `fn` in order.
    allow_inconclusive : bool, optional
        Whether an inconclusive check passes; True by default.
    **options
        Passed to :func:`gradproof.jax.check_function`.

    Returns
    -------
    CheckResult
        The result, when the gradients are right.

    Raises
    ------
    GradientMismatchError
        If a gradient is wrong (or inconclusive and `allow_inconclusive` is False).
    BackendUnavailableError
        If JAX is not installed.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> assert_jax_function(lambda x: jnp.sum(jnp.sin(x)), jnp.arange(3.0)).passed
    True
    """
    __tracebackhide__ = True
    check_function: Callable[..., CheckResult] = _backend("jax").check_function
    return _require_correct(
        check_function(fn, *args, **options), allow_inconclusive=allow_inconclusive
    )


@dataclass(frozen=True, slots=True, repr=False)
class GradientAssertions:
    """The ``assert_*`` helpers with preset options: what the pytest fixture returns.

    Options are merged, the later winning: `defaults`, then the keywords of
    each call, then `forced`.

    Parameters
    ----------
    defaults : mapping of str to object, optional
        Options used unless a call overrides them (the ``gradproof`` marker's).
    forced : mapping of str to object, optional
        Options that win over everything (the command line's, e.g. ``mode="full"``).

    Examples
    --------
    >>> import numpy as np
    >>> assert_gradients = GradientAssertions({"mode": "directional", "seed": 0})
    >>> w = np.array([1.0, -2.0, 3.0])
    >>> result = assert_gradients(lambda p: np.sum(p**2), lambda p: 2 * p, w, seed=3)
    >>> result.mode, result.seed
    ('directional', 3)
    """

    defaults: Mapping[str, Any] = field(default_factory=dict)
    forced: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Read-only copies: the instance is frozen, so its options must be too.
        object.__setattr__(self, "defaults", MappingProxyType(dict(self.defaults)))
        object.__setattr__(self, "forced", MappingProxyType(dict(self.forced)))

    def __repr__(self) -> str:
        # pytest prints the fixture's value in tracebacks: show plain dicts, not mappingproxy.
        return f"GradientAssertions(defaults={dict(self.defaults)}, forced={dict(self.forced)})"

    def options(self, **overrides: Any) -> dict[str, Any]:
        """Return the options a call with these keywords runs with.

        Parameters
        ----------
        **overrides
            The call's own keywords.

        Returns
        -------
        dict
            `defaults`, updated with `overrides`, then with `forced`.
        """
        return {**self.defaults, **overrides, **self.forced}

    def __call__(
        self, loss: LossFunction, grad: GradFunction | Params, params: Params, **overrides: Any
    ) -> CheckResult:
        """Run :func:`assert_gradients` with the preset options."""
        __tracebackhide__ = True
        return assert_gradients(loss, grad, params, **self.options(**overrides))

    def function(self, fn: Callable[..., Any], *inputs: Any, **overrides: Any) -> CheckResult:
        """Run :func:`assert_function` (PyTorch) with the preset options."""
        __tracebackhide__ = True
        return assert_function(fn, *inputs, **self.options(**overrides))

    def module(
        self, module: Any, inputs: Any, loss_fn: Callable[..., Any], **overrides: Any
    ) -> CheckResult:
        """Run :func:`assert_module` (PyTorch) with the preset options."""
        __tracebackhide__ = True
        return assert_module(module, inputs, loss_fn, **self.options(**overrides))

    def jax_function(self, fn: Callable[..., Any], *args: Any, **overrides: Any) -> CheckResult:
        """Run :func:`assert_jax_function` with the preset options."""
        __tracebackhide__ = True
        return assert_jax_function(fn, *args, **self.options(**overrides))


HEADLINE_WIDTH = 60
"""The most characters of a GradientMismatchError's first line.

pytest's short summary (``-ra``) shows ``FAILED test_x.py::test_y - GradientMismatchError: ``
and then as much of the first line as fits the terminal: within 60 characters the
verdict survives an 80-column terminal and a short test name.
"""


def _require_correct(result: CheckResult, *, allow_inconclusive: bool) -> CheckResult:
    """Return `result` if it passes; raise the error every ``assert_*`` helper raises."""
    __tracebackhide__ = True
    if result.interrupted:
        # check() turns Ctrl-C into a partial result; in a test run the person wants to stop.
        raise KeyboardInterrupt(_headline(result))
    if result.verdict is Verdict.FAIL or (
        result.verdict is Verdict.INCONCLUSIVE and not allow_inconclusive
    ):
        message = (
            _headline(result) + _explanation(result) + "\n\n" + render_result(result, verbose=True)
        )
        raise GradientMismatchError(message, result=result)
    return result


def _headline(result: CheckResult) -> str:
    """Return the message's first line: the verdict, within HEADLINE_WIDTH characters.

    pytest's short summary (``-ra``) shows only the start of this line, so it
    names the wrong (or unjudged) parameters with a few words on each, e.g.
    ``wrong gradient: W2 (2× too large)``, as many as fit, then how many more.

    Examples
    --------
    >>> import numpy as np
    >>> from gradproof import check
    >>> _headline(check(lambda w: np.sum(w**2), lambda w: -2 * w, np.ones(3)))
    'wrong gradient: params (sign flipped)'
    """
    if result.verdict is Verdict.FAIL:
        wrong = [p for p in result.params if p.verdict is Verdict.FAIL]
        prefix = f"wrong {noun(len(wrong), 'gradient')}: "
        return _fit_names(prefix, [(p.name, _short_diagnosis(p)) for p in wrong])
    if result.interrupted:
        return (
            f"gradient check interrupted after {result.n_checked} of "
            f"{counted(result.n_entries, 'entry')}"
        )
    unjudged = [p for p in result.params if p.verdict is Verdict.INCONCLUSIVE]
    labelled = []
    for report in unjudged:
        reasons = sorted({entry.reason.replace("_", " ") for entry in report.inconclusive_entries})
        labelled.append((report.name, ", ".join(reasons)))
    return _fit_names("inconclusive gradient check: ", labelled)


def _explanation(result: CheckResult) -> str:
    """Return what follows the first line of the message: the counts and what to do."""
    if result.verdict is not Verdict.INCONCLUSIVE or result.interrupted:
        return ""
    unjudged = [
        f"`{report.name}`: {report.n_inconclusive} of {counted(report.n_checked, 'entry')}"
        for report in result.params
        if report.verdict is Verdict.INCONCLUSIVE and report.n_inconclusive
    ]
    return (
        "\nNothing wrong, but not every entry could be judged"
        + (f" ({'; '.join(unjudged)})" if unjudged else "")
        + "; `allow_inconclusive=False` counts this as a failure. Check at a point away from "
        "kinks and non-finite losses, or allow inconclusive checks."
    )


def _short_diagnosis(report: ParamReport) -> str:
    """Say in a few words what is wrong with a parameter's gradient, e.g. ``2× too large``."""
    diagnosis = report.diagnosis
    kind = diagnosis.kind if diagnosis else "unknown"
    factor = diagnosis.factor if diagnosis else None
    if kind in ("scale", "sign") and factor is not None and math.isfinite(factor) and factor:
        about = "≈" if diagnosis and "≈" in diagnosis.summary else ""
        magnitude = abs(factor)
        if format_factor(magnitude) == "1":
            size = ""
        elif magnitude > 1:
            size = f"{about}{_times(magnitude)}× too large"
        else:
            size = f"{about}{_times(1 / magnitude)}× too small"
        if factor > 0:
            return size
        return "sign flipped" + (f", {size}" if size else "")
    if diagnosis and kind == "swapped" and diagnosis.partner:
        return f"swapped with {diagnosis.partner}"
    if diagnosis and kind == "axis" and diagnosis.axis is not None:
        return f"wrong along axis {diagnosis.axis}"
    fixed = {"non_finite": "NaN or infinite", "zero": "all zeros", "transpose": "transposed"}
    if kind in fixed:
        return fixed[kind]
    if kind == "one_entry":
        return "its one entry wrong"
    if kind == "few_entries" and diagnosis:
        return f"{counted(len(diagnosis.entries), 'entry')} wrong"
    if report.n_failed and report.strategy != "directional":
        return wrong_count(report) or f"{counted(report.n_failed, 'entry')} wrong"
    if report.n_failed:
        return f"{counted(report.n_failed, 'entry')} wrong"
    return "its directional probes fail"


def _times(magnitude: float) -> str:
    """Write a factor's size briefly: ``2``, ``16``, ``1.37``."""
    shown = format_factor(magnitude)
    return shown if "/" not in shown and len(shown) <= 4 else f"{magnitude:.3g}"


def _fit_names(prefix: str, items: list[tuple[str, str]]) -> str:
    """Join ``name (label)`` items after `prefix` within HEADLINE_WIDTH, then ``and N more``.

    Labels are dropped when they do not fit, then names; a name longer than the line is cut.

    Examples
    --------
    >>> _fit_names("wrong gradients: ", [("W1", "2× too large"), ("b1", "transposed")])
    'wrong gradients: W1 (2× too large), b1 (transposed)'
    >>> _fit_names("wrong gradients: ", [(f"layer{i}.weight", "sign flipped") for i in range(5)])
    'wrong gradients: layer0.weight (sign flipped) and 4 more'
    """
    shown: list[str] = []
    labels = True
    for i, (name, label) in enumerate(items):
        rest = len(items) - i - 1
        more = f" and {rest} more" if rest else ""
        candidates = [f"{name} ({label})", name] if labels and label else [name]
        for candidate in candidates:
            if len(prefix + ", ".join([*shown, candidate]) + more) <= HEADLINE_WIDTH:
                shown.append(candidate)
                if candidate == name and label:
                    labels = False  # once one label is dropped, the rest are too
                break
        else:
            break
    hidden = len(items) - len(shown)
    if not shown and items:
        more = f" and {hidden - 1} more" if hidden > 1 else ""
        room = max(HEADLINE_WIDTH - len(prefix) - len(more), 2)
        name = items[0][0]
        shown, hidden = [name if len(name) <= room else name[: room - 1] + "…"], hidden - 1
    return prefix + ", ".join(shown) + (f" and {hidden} more" if hidden else "")


def _backend(name: str) -> ModuleType:
    """Import ``gradproof.<name>``; a missing framework raises BackendUnavailableError."""
    __tracebackhide__ = True
    framework, modules, install = _BACKENDS[name]
    try:
        return importlib.import_module(f"gradproof.{name}")
    except BackendUnavailableError:
        raise
    except ImportError as error:
        missing = (error.name or "").partition(".")[0]
        if missing not in modules:
            raise
        raise BackendUnavailableError(
            f"`gradproof.testing` needs {framework} to check {framework} code, but `{missing}` "
            f"is not installed. Install it with `{install}`.",
            framework=modules[0],
        ) from error
