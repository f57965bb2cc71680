"""The exit codes of the ``gradproof`` command, and how errors become them."""

from __future__ import annotations

import functools
import sys
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, NoReturn, ParamSpec

import typer
from rich.console import Console

if TYPE_CHECKING:
    pass


__all__ = ["EXIT_FAIL", "EXIT_INCONCLUSIVE", "EXIT_INTERNAL", "EXIT_PASS", "EXIT_USAGE"]

EXIT_PASS = 0
"""``gradproof check``: every gradient is correct."""


EXIT_FAIL = 1
"""``gradproof check``: a gradient is wrong."""


EXIT_USAGE = 2
"""``gradproof check``: a usage or input error, or the user's code raised or called ``sys.exit``."""


EXIT_INCONCLUSIVE = 3
"""``gradproof check``: nothing wrong found, but not every entry was judged.

Some entries could not be judged (kinks, noise), or the check stopped early:
Ctrl-C, ``--time-budget`` or ``--max-evals`` reached.
"""


EXIT_INTERNAL = 4
"""Any command: gradproof itself crashed (a bug in gradproof; the traceback is printed)."""


def _internal_error(error: Exception) -> NoReturn:
    """Report an exception that gradproof did not expect, and exit with code 4."""
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    err.print("".join(traceback.format_exception(error)).rstrip("\n"), markup=False)
    err.print(
        "gradproof hit an internal error (this is a gradproof bug, please report it): "
        f"{type(error).__name__}: {error}",
        markup=False,
    )
    raise typer.Exit(code=EXIT_INTERNAL)


_P = ParamSpec("_P")


def _click_answers() -> tuple[type[BaseException], ...]:
    """Return the exit and usage-error classes of the click that typer runs on.

    typer 0.29 and newer vendor click (its errors derive from
    ``typer.exceptions.TyperException``); older ones use the ``click`` package.
    Neither is imported unless it is the one in use.
    """
    answers: list[type[BaseException]] = [typer.Exit, typer.Abort]
    vendored = getattr(getattr(typer, "exceptions", None), "TyperException", None)
    if isinstance(vendored, type):
        answers.append(vendored)
    if "click" in sys.modules:
        click = sys.modules["click"]
        answers += [click.exceptions.Exit, click.exceptions.Abort, click.ClickException]
    return tuple(answers)


_ANSWERS = _click_answers()


def _reports_internal_errors(command: Callable[_P, None]) -> Callable[_P, None]:
    """Exit with code 4 and a bug report when a command raises an exception it did not expect.

    A crash of gradproof must not read as a verdict: uncaught, an exception ends
    the process with Python's exit code 1, which means a wrong gradient.
    """

    @functools.wraps(command)
    def run(*args: _P.args, **kwargs: _P.kwargs) -> None:
        try:
            command(*args, **kwargs)
        except _ANSWERS:
            raise  # exits and usage errors are answers, not crashes
        except Exception as error:
            _internal_error(error)

    return run


def _fail(message: str, detail: str = "", *, code: int = EXIT_USAGE) -> NoReturn:
    """Print an error to stderr (`detail`, then the message) and exit with `code` (2)."""
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    if detail:
        err.print(detail.rstrip("\n"), markup=False)
    err.print(f"gradproof check: {message}", markup=False)
    raise typer.Exit(code=code)


def _exit_message(exception: SystemExit, message: str = "") -> str:
    """Say that the user's code called ``sys.exit`` while its loss or gradient ran."""
    from gradproof.cli.target import exit_call

    where = f" ({message})" if message else " while gradproof evaluated the loss or gradient"
    return (
        f"your code called {exit_call(exception)}{where}; a loss or gradient function must "
        "return its value, not exit (gradproof check exits with 2 whatever code it passed)"
    )
