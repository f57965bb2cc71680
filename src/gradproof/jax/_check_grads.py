"""`check_grads`: ``jax.test_util.check_grads``' signature and meaning, gradproof's verdicts."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gradproof._words import counted
from gradproof.errors import GradientMismatchError, GradproofWarning, InputError
from gradproof.jax._function import check_function
from gradproof.jax._merge import FORWARD, REVERSE, SECOND_FORWARD, SECOND_REVERSE
from gradproof.results import CheckResult, Verdict

_WHAT = {
    REVERSE: "reverse-mode gradient (VJP)",
    FORWARD: "forward-mode derivative (JVP)",
    SECOND_REVERSE: "second derivative, reverse over reverse (VJP of the VJP)",
    SECOND_FORWARD: "second derivative, forward over reverse (JVP of the VJP)",
}


def check_grads(
    f: Callable[..., Any],
    args: Sequence[Any],
    order: int,
    modes: Sequence[str] = ("fwd", "rev"),
    atol: float | Mapping[Any, float] | None = None,
    rtol: float | Mapping[Any, float] | None = None,
    eps: float | None = None,
    *,
    strict: bool = False,
) -> CheckResult:
    """Check a JAX function's derivatives, raising like ``jax.test_util.check_grads``.

    A drop-in for :func:`jax.test_util.check_grads`: the same arguments and
    the same meaning, so ``from gradproof.jax import check_grads`` switches a
    test suite. Where JAX compares one random projection and raises
    ``AssertionError`` with two numbers, this checks every entry of every
    argument (:func:`check_function`) and raises an ``AssertionError`` whose
    first line names the wrong argument and what is wrong with it.

    Parameters
    ----------
    f : callable ``f(*args) -> pytree of arrays``
        The function, with its ``custom_vjp`` / ``custom_jvp`` rules.
    args : sequence
        The point, passed as ``f(*args)``: arrays, Python floats, or pytrees
        of them. Every floating leaf is checked, Python floats included (as
        JAX does); other leaves (integers, strings) are passed unchanged.
    order : {1, 2}
        1 checks the first derivatives; 2 also checks the derivatives of the
        rules themselves (reverse over reverse for ``"rev"``, forward over
        reverse for ``"fwd"``).
    modes : sequence of {"fwd", "rev"}, optional
        The modes to check, both by default. As with JAX, a ``custom_vjp``
        function has no forward mode: pass ``modes=("rev",)`` for it.
    atol, rtol : float or dict of dtype to float, optional
        Absolute and relative tolerance per entry. A dict, as JAX takes it,
        gives them by dtype; the loosest value among the arguments' dtypes
        applies. By default gradproof's own (``rtol`` 1e-5 in float64, 1e-3
        in float32; ``atol`` 0, plus each entry's finite-difference error
        bar), which are per entry, not scaled by the array size as JAX's are.
    eps : float, optional
        An absolute finite-difference step for every entry. By default
        gradproof chooses the step by dtype and re-measures doubtful entries
        at smaller steps, which is what keeps kinks near the point from
        raising false alarms.
    strict : bool, optional
        Entries that cannot be judged (a kink where the rule returns a valid
        subgradient, a point where the function is not differentiable) pass
        with a :class:`~gradproof.errors.GradproofWarning` that lists them;
        with ``strict=True`` they raise too.

    Returns
    -------
    CheckResult
        The result, when every checked derivative is right (JAX's returns
        None; the result is extra).

    Raises
    ------
    GradientMismatchError
        An ``AssertionError``: a derivative is wrong (or, with `strict`, could
        not be judged). Its message names the argument and the kind of
        derivative on its first line, then gives the full report;
        ``err.result`` is the :class:`~gradproof.results.CheckResult`.
    InputError
        If `args` is not a sequence, `order` is not 1 or 2, `modes` or a
        tolerance is invalid, or ``"fwd"`` is asked of a ``custom_vjp``.
    UserCodeError
        If `f` or one of its rules raises.

    See Also
    --------
    check_function : the check behind it, returning the result.
    jax.test_util.check_grads : JAX's own check.

    Notes
    -----
    Forward mode at second order is checked as forward over reverse (the
    JVP of the VJP), where JAX's ``"fwd"`` is forward over forward: both
    differentiate a ``custom_jvp`` rule, and the first also reaches a
    ``custom_vjp``'s ``bwd``. ``jax_enable_x64`` is left as the caller set it
    (Note [x64] in :mod:`gradproof.jax`).

    Examples
    --------
    >>> import jax
    >>> import jax.numpy as jnp
    >>> from gradproof.jax import check_grads
    >>> @jax.custom_jvp
    ... def f(x):
    ...     return jnp.sin(x)
    >>> @f.defjvp
    ... def f_jvp(primals, tangents):
    ...     (x,), (t,) = primals, tangents
    ...     return f(x), 2 * jnp.cos(x) * t  # wrong: a factor of 2
    >>> try:
    ...     check_grads(f, (0.5,), order=1, modes=("fwd",))
    ... except AssertionError as error:
    ...     print(str(error).splitlines()[0])
    check_grads: wrong forward-mode derivative (JVP) of `x`
    """
    __tracebackhide__ = True
    if isinstance(args, (str, bytes)) or not isinstance(args, Sequence):
        raise InputError(
            f"`args` must be a tuple or list of the arguments of `f`; got a "
            f"{type(args).__name__}. Pass `(x,)` for a single argument, as with "
            "jax.test_util.check_grads."
        )
    if isinstance(order, bool) or not isinstance(order, (int, np.integer)) or order not in (1, 2):
        raise InputError(
            f"`order` must be 1 or 2; got {order!r}. gradproof checks first derivatives "
            "(1) and the derivatives of the rules themselves (2); for higher orders use "
            "jax.test_util.check_grads."
        )
    chosen = (modes,) if isinstance(modes, str) else tuple(modes)
    if not chosen or any(mode not in ("fwd", "rev") for mode in chosen):
        raise InputError(
            f"`modes` must be a non-empty sequence of 'fwd', 'rev'; got {modes!r}. Pass "
            "`modes=('rev',)` for a custom_vjp function, which has no forward mode."
        )
    args = tuple(args)
    if not any(_floating(leaf) for leaf in jax.tree_util.tree_leaves(args)):
        kinds = sorted({type(leaf).__name__ for leaf in jax.tree_util.tree_leaves(args)})
        raise InputError(
            f"`args` hold no floating-point values to differentiate (only "
            f"{', '.join(kinds) or 'empty containers'}); check_grads checks the floating-point "
            "leaves of `args`. Pass floats, e.g. `(3.0,)` rather than `(3,)`, or "
            "`x.astype(jnp.float32)`."
        )
    options: dict[str, Any] = {}
    for label, tolerance in (("atol", atol), ("rtol", rtol)):
        value = _tolerance(label, tolerance, args)
        if value is not None:
            options[label] = value
    if eps is not None:
        options["eps"] = eps
    result = check_function(
        f,
        *args,
        argnums=tuple(range(len(args))),
        modes=chosen,
        second_order=order == 2,
        **options,
    )
    if result.interrupted:
        raise KeyboardInterrupt(_first_line(result))
    if result.verdict is Verdict.FAIL or (result.verdict is Verdict.INCONCLUSIVE and strict):
        raise GradientMismatchError(f"{_first_line(result)}\n\n{result}", result=result)
    if result.verdict is Verdict.INCONCLUSIVE:
        warnings.warn(_unjudged(result), GradproofWarning, stacklevel=2)
    return result


def _floating(leaf: Any) -> bool:
    """Tell whether a leaf of `args` is differentiated: a float array, or a Python float."""
    if isinstance(leaf, float):
        return True
    dtype = getattr(leaf, "dtype", None)
    return dtype is not None and bool(jnp.issubdtype(dtype, jnp.floating))  # bfloat16 too


def _first_line(result: CheckResult) -> str:
    """Name each wrong (or unjudged) argument with the kind of derivative that is wrong."""
    if result.interrupted:
        return f"check_grads: interrupted after {counted(result.n_checked, 'entry')} checked"
    wrong = result.verdict is Verdict.FAIL
    verdict = Verdict.FAIL if wrong else Verdict.INCONCLUSIVE
    named = []
    for report in result.params:
        if report.verdict is verdict:
            text = _WHAT.get(report.section, report.section)
            named.append(f"{'wrong' if wrong else 'unjudged'} {text} of `{report.subject_name}`")
    return "check_grads: " + ", ".join(dict.fromkeys(named))


def _unjudged(result: CheckResult) -> str:
    """Write the warning for entries that could not be judged: which, and why."""
    listed = [
        f"{entry.name} ({entry.reason.replace('_', ' ')}"
        + (", the rule's value is a valid subgradient)" if entry.subgradient else ")")
        for report in result.params
        for entry in report.inconclusive_entries
    ]
    return (
        f"check_grads passed, but {counted(len(listed), 'entry', 'entries')} could not be "
        f"judged: {'; '.join(listed[:6])}{'; ...' if len(listed) > 6 else ''}. Pass "
        "`strict=True` to fail on them, or check at a point away from kinks."
    )


def _tolerance(
    label: str, tolerance: float | Mapping[Any, float] | None, args: tuple[Any, ...]
) -> float | None:
    """Read a tolerance as JAX takes it: a number, or the loosest of a dict by the args' dtypes."""
    if tolerance is None:
        return None
    if isinstance(tolerance, Mapping):
        dtypes = {
            np.dtype(getattr(leaf, "dtype", np.asarray(leaf).dtype))
            for leaf in jax.tree_util.tree_leaves(args)
        }
        try:
            chosen = [float(v) for k, v in tolerance.items() if np.dtype(k) in dtypes]
        except TypeError as exc:
            raise InputError(
                f"`{label}` must be a number or a dict of dtype to number; got {tolerance!r}."
            ) from exc
        return max(chosen) if chosen else None
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float, np.floating)):
        raise InputError(
            f"`{label}` must be a number or a dict of dtype to number, as for "
            f"jax.test_util.check_grads; got {tolerance!r}."
        )
    return float(tolerance)
