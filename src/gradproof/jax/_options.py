"""The options of :func:`gradproof.jax.check_function`: which are known, which are valid."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from gradproof.checking.options import CheckOptions
from gradproof.errors import InputError

MODES = ("rev", "fwd")
"""The autodiff modes :func:`check_function` checks: reverse (VJP) and forward (JVP)."""

_OWN_OPTIONS = ("argnums", "has_aux", "modes", "n_cotangents", "vmap", "batch_size", "jit")
_RESERVED = ("loss", "grad", "params", "loss_batch")


def _validate(
    fn: object, options: dict[str, Any], n_cotangents: object, batch_size: object
) -> None:
    if not callable(fn):
        raise InputError(
            f"`fn` must be a JAX function of the arguments; got a {type(fn).__name__}. Pass "
            "the function itself, e.g. `check_function(my_layer, x, w)`."
        )
    allowed = [name for name in CheckOptions.names() if name not in _RESERVED]
    unknown = [name for name in options if name not in allowed]
    if unknown:
        listed = ", ".join(f"`{name}`" for name in dict.fromkeys((*_OWN_OPTIONS, *allowed)))
        raise InputError(
            f"Unknown option {', '.join(f'`{name}`' for name in unknown)} for "
            f"`check_function`; the options are {listed}. Keyword arguments of `fn` itself "
            "are not passed: bind them with `functools.partial(fn, name=value)`."
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
