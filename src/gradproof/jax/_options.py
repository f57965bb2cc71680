"""The options of :func:`gradproof.jax.check_function`: which are known, which are valid."""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import numpy as np

from gradproof.checking.options import CheckOptions
from gradproof.errors import InputError

MODES = ("rev", "fwd")
"""The autodiff modes :func:`check_function` checks: reverse (VJP) and forward (JVP)."""

_OWN_OPTIONS = (
    "argnums",
    "has_aux",
    "modes",
    "second_order",
    "n_cotangents",
    "vmap",
    "batch_size",
    "jit",
)
_RESERVED = ("loss", "grad", "params", "loss_batch")


def _keywords(fn: object, keywords: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split keywords into `fn`'s keyword arguments and gradproof's options.

    Note [Keyword arguments]
        ``check_function(fn, x, scale=2.0)`` passes ``scale`` to `fn`, as
        ``jax.grad(fn)(x, scale=2.0)`` does, and never differentiates it. A
        keyword is an option when gradproof has an option of that name (see
        :func:`check_function`), else it is `fn`'s when `fn` accepts it (a
        parameter of that name, or ``**kwargs``, or a signature that cannot be
        read); anything else is an unknown option. A keyword argument of `fn`
        that shares an option's name is bound with ``functools.partial``.
    """
    if not callable(fn):
        raise InputError(
            f"`fn` must be a JAX function of the arguments; got a {type(fn).__name__}. Pass "
            "the function itself, e.g. `check_function(my_layer, x, w)`."
        )
    allowed = [name for name in CheckOptions.names() if name not in _RESERVED]
    accepts = _accepted_keywords(fn)
    options = {name: value for name, value in keywords.items() if name in allowed}
    passed = {
        name: value
        for name, value in keywords.items()
        if name not in allowed and name not in _RESERVED and (accepts is None or name in accepts)
    }
    unknown = [name for name in keywords if name not in options and name not in passed]
    if unknown:
        listed = ", ".join(f"`{name}`" for name in dict.fromkeys((*_OWN_OPTIONS, *allowed)))
        raise InputError(
            f"Unknown option {', '.join(f'`{name}`' for name in unknown)} for "
            f"`check_function`, and `fn` has no parameter of that name; the options are "
            f"{listed}. Other keywords are passed to `fn` when it takes them (keyword "
            "arguments of `fn` that share an option's name: bind them with "
            "`functools.partial(fn, name=value)`)."
        )
    return passed, options


def _accepted_keywords(fn: object) -> set[str] | None:
    """Return the keywords `fn` takes; None when it takes any (``**kwargs``) or is unreadable."""
    try:
        parameters = inspect.signature(fn).parameters.values()  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    names = set()
    for parameter in parameters:
        if parameter.kind is inspect.Parameter.VAR_KEYWORD:
            return None
        if parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY):
            names.add(parameter.name)
    return names


def _validate(
    options: dict[str, Any],
    n_cotangents: object,
    batch_size: object,
    vmap: object,
    second_order: object,
) -> None:
    if vmap not in (True, False, "auto"):
        raise InputError(
            f"`vmap` must be True, False or 'auto'; got {vmap!r}. 'auto' (the default) batches "
            "the evaluations with jax.vmap only where that pays: checks of many entries."
        )
    if not isinstance(second_order, bool):
        raise InputError(
            f"`second_order` must be True or False; got {second_order!r}. True also checks the "
            "derivative of the rules themselves (what `check_grads(..., order=2)` checks)."
        )
    if options.get("precision", "auto") not in ("auto", "native"):
        raise InputError(f"`precision` must be 'auto' or 'native'; got {options['precision']!r}.")
    for label, count in (("n_cotangents", n_cotangents), ("batch_size", batch_size)):
        if count is None and label == "batch_size":
            continue
        if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 1:
            raise InputError(f"`{label}` must be a positive integer; got {count!r}.")


def _validate_modes(modes: Sequence[str] | None) -> tuple[str, ...]:
    if modes is None:
        return MODES
    chosen = (modes,) if isinstance(modes, str) else tuple(modes)
    if not chosen or any(mode not in MODES for mode in chosen):
        choices = ", ".join(repr(m) for m in MODES)
        raise InputError(
            f"`modes` must be a non-empty sequence of {choices}; got {modes!r}. Leave it unset "
            "to check both where `fn` has a forward mode."
        )
    return chosen


def _argnums(argnums: int | Sequence[int] | None, n_args: int) -> tuple[int, ...] | None:
    if argnums is None:
        return None
    chosen = (argnums,) if isinstance(argnums, (int, np.integer)) else tuple(argnums)
    for i in chosen:
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)) or not -n_args <= i < n_args:
            raise InputError(
                f"`argnums` must name positions of the {n_args} argument(s) passed, "
                f"0 to {n_args - 1}; got {argnums!r}."
            )
    return tuple(sorted({int(i) % n_args for i in chosen}))
