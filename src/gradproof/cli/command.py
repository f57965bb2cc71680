"""How the ``gradproof`` commands present themselves: help, usage line and option errors.

typer 0.29 prints a boolean flag as ``--json <bool>``, a required argument as
``{target}`` on the usage line, and a bad choice as pydantic's ``Value error,
'fast' is not one of ...``. The command and group classes here print them the
way a command line is read: ``--json``, ``TARGET``, and ``--mode: 'fast' is not
one of ...``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import typer
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

__all__ = ["CliCommand", "CliGroup", "OptionError"]

_PYDANTIC_PREFIXES = ("Value error, ", "Assertion failed, ")
"""What pydantic puts before the message of a validator's exception."""


class OptionError(typer.BadParameter):
    """A bad option value, said as ``--option: what is wrong``.

    Examples
    --------
    >>> OptionError("must be greater than 0; got 0", param_hint="--eps").format_message()
    '--eps: must be greater than 0; got 0'
    """

    def format_message(self) -> str:
        """Return ``--option: message``, or the message alone when no option is known."""
        if self.param_hint is not None:
            hint = self.param_hint if isinstance(self.param_hint, str) else self.param_hint[0]
        elif isinstance(self.param, TyperOption) and self.param.opts:
            hint = self.param.opts[0]
        elif self.param is not None:
            hint = str(getattr(self.param, "human_readable_name", self.param.name))
        else:
            return self.message
        return f"{hint}: {self.message}"


def _show_flags_as_flags(params: list[Any]) -> None:
    """Give every boolean flag an empty metavar, so that help prints no ``<bool>`` after it."""
    for param in params:
        if getattr(param, "is_flag", False) and getattr(param, "metavar", "") is None:
            param.metavar = ""  # the help option too, which is not always a TyperOption


def _plain_message(error: typer.BadParameter) -> str:
    """Return the message of `error` without pydantic's ``Value error,`` prefix."""
    message = str(error.message)
    for prefix in _PYDANTIC_PREFIXES:
        message = message.removeprefix(prefix)
    return message


def _parse(parse: Callable[[Any, list[str]], list[str]], ctx: Any, args: list[str]) -> list[str]:
    """Parse `args` with `parse`, a bad option value said as ``--option: what is wrong``."""
    try:
        return parse(ctx, args)
    except typer.BadParameter as error:
        if type(error) is not typer.BadParameter:  # a missing option says so itself
            raise
        raise OptionError(
            _plain_message(error), ctx=error.ctx, param=error.param, param_hint=error.param_hint
        ) from error


class _PlainFlags:
    """What every ``gradproof`` command and group shares: flags as flags, plain errors."""

    def get_params(self, ctx: Any) -> list[Any]:
        """Return the parameters, flags (``--help`` too) without a ``<bool>`` type."""
        params: list[Any] = super().get_params(ctx)  # type: ignore[misc]
        _show_flags_as_flags(params)
        return params

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        """Parse the command line; a bad value is said as ``--option: what is wrong``."""
        return _parse(super().parse_args, ctx, args)  # type: ignore[misc]


class CliCommand(_PlainFlags, TyperCommand):
    """A ``gradproof`` command: ``Usage: gradproof check [OPTIONS] TARGET``, flags as flags."""

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        """Return ``[OPTIONS]`` and the arguments, required ones as their bare names."""
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if isinstance(param, TyperArgument):
                name = param.metavar or (param.name or "").upper()
                pieces.append(name if param.required else f"[{name}]")
            else:
                pieces.extend(param.get_usage_pieces(ctx))
        return pieces


class CliGroup(_PlainFlags, TyperGroup):
    """The ``gradproof`` group: its ``--version`` and ``--help`` shown as flags."""
