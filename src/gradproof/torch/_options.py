"""The options of :mod:`gradproof.torch`: what is passed through, what is chosen, what is valid."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

from gradproof.checking.options import CheckOptions
from gradproof.errors import InputError

_HANDLED = ("seed", "precision")
"""Options the adapter takes itself (with its own meaning) rather than passing them on."""

CHECK_OPTIONS = frozenset(CheckOptions.names()) - frozenset(_HANDLED)
"""The options of :func:`gradproof.check` that the adapters pass through unchanged."""

JACOBIAN_CHOICES = ("auto", "full", "random")
PRECISIONS = ("auto", "native")


def _check_options(options: Mapping[str, Any], function: str) -> CheckOptions:
    """Validate an adapter's ``**options`` as :class:`CheckOptions` (naming unknown ones)."""
    if "loss_batch" in options:
        raise InputError(
            "Unknown option `loss_batch`: the adapter builds `loss_batch` itself (pass `vmap=`) "
            "and handles `precision` before calling gradproof.check."
        )
    return CheckOptions.from_keywords(options, function=function, handled=_HANDLED)


def _validate(value: object, label: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        listed = ", ".join(repr(c) for c in choices)
        raise InputError(f"`{label}` must be one of {listed}; got {value!r}.")


def _defines_jvp(fn: Callable[..., Any]) -> bool:
    """Whether `fn` is the ``apply`` of an ``autograd.Function`` that overrides ``jvp``."""
    owner = getattr(fn, "__self__", None)
    return (
        isinstance(owner, type)
        and issubclass(owner, torch.autograd.Function)
        and owner.jvp is not torch.autograd.Function.jvp
    )
