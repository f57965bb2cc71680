"""The ``gradproof`` command line: a thin layer over the library; no numerics here."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from gradproof import __version__

app = typer.Typer(
    name="gradproof",
    help="Prove backpropagation correct: check hand-written gradients against finite "
    "differences, and see which parameter is wrong, where, and how.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"gradproof {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Show the version and exit."
        ),
    ] = False,
) -> None:
    """Prove backpropagation correct."""


@app.command()
def demo() -> None:
    """Walk through the classic gradient-checking assignment and catch its planted bugs."""
    from gradproof.demo import run_demo

    console = Console(highlight=False, soft_wrap=True)
    result = run_demo(lambda text: console.print(text, markup=False))
    raise typer.Exit(code=0 if result.passed else 1)
