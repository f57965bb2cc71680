"""The options of :mod:`gradproof.torch`: what is passed through, what is chosen, what is valid."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

from gradproof.checking.check import PASS_THROUGH_OPTIONS
from gradproof.errors import InputError

CHECK_OPTIONS = PASS_THROUGH_OPTIONS | {"batch_size"}
"""The options of :func:`gradproof.check` that the adapters pass through unchanged."""

JACOBIAN_CHOICES = ("auto", "full", "random")
PRECISIONS = ("auto", "native")


def _check_options(options: Mapping[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(options) - CHECK_OPTIONS)
    if unknown:
        extra = (
            " The adapter builds `loss_batch` itself (pass `vmap=`) and handles `precision` "
            "before calling gradproof.check."
            if {"loss_batch"} & set(unknown)
            else ""
        )
        raise InputError(
            f"Unknown option{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}; "
            f"the options passed to gradproof.check are {', '.join(sorted(CHECK_OPTIONS))}.{extra}"
        )
    return dict(options)


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
