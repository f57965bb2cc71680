"""The ``gradproof`` command line: a thin layer over the library; no numerics here."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from gradproof import __version__

if TYPE_CHECKING:
    pass

from gradproof.cli.check_command import CHECK_EPILOG, check
from gradproof.cli.exits import (
    EXIT_FAIL,
    EXIT_INCONCLUSIVE,
    EXIT_INTERNAL,
    EXIT_PASS,
    EXIT_USAGE,
    _reports_internal_errors,
)

__all__ = [
    "EXIT_FAIL",
    "EXIT_INCONCLUSIVE",
    "EXIT_INTERNAL",
    "EXIT_PASS",
    "EXIT_USAGE",
    "app",
]

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
@_reports_internal_errors
def demo() -> None:
    """Walk through the classic gradient-checking assignment and catch its planted bugs."""
    from gradproof.cli.demo import run_demo

    console = Console(highlight=False, soft_wrap=True)
    result = run_demo(lambda text: console.print(text, markup=False))
    raise typer.Exit(code=0 if result.passed else 1)


@app.command()
@_reports_internal_errors
def train(
    data: Annotated[
        Path | None,
        typer.Option(
            "--data",
            help="A CSV of labelled transactions (an is_fraud column of 0/1 and numeric "
            "features); synthetic payments by default.",
        ),
    ] = None,
    epochs: Annotated[int, typer.Option(min=1, help="Passes over the training split.")] = 20,
    guard_every: Annotated[
        int, typer.Option(min=1, help="Check the gradient at step 1 and every this many steps.")
    ] = 250,
    plant_bug: Annotated[
        bool,
        typer.Option(
            "--plant-bug", help="Plant a bug in the backward pass and watch the guard stop it."
        ),
    ] = False,
    bug: Annotated[
        str,
        typer.Option(
            help="Which bug --plant-bug plants: dW2-doubled, db1-times-4, no-l2-in-dW1, "
            "dropout-mask-missing or sample-weights-ignored (gradproof.models.BUGS)."
        ),
    ] = "dW2-doubled",
    output: Annotated[
        Path, typer.Option(help="Folder for the saved model, its metrics and the learning curve.")
    ] = Path("gradproof-train"),
    seed: Annotated[int, typer.Option(help="Seed of the data, training and dropout.")] = 0,
) -> None:
    """Train the fraud-detection model with a gradient guard watching its backward pass.

    Exit code 0: trained, every gradient check passed. 1: the guard found a wrong
    gradient and stopped training. 2: bad input (a CSV that cannot be read). 4:
    gradproof itself crashed.
    """
    from gradproof.cli.train import run_training
    from gradproof.errors import InputError

    console = Console(highlight=False, soft_wrap=True)
    try:
        run = run_training(
            data_path=data,
            epochs=epochs,
            guard_every=guard_every,
            plant_bug=bug if plant_bug else None,
            output=output,
            seed=seed,
            write=lambda text: console.print(text, markup=False),
        )
    except InputError as error:
        Console(stderr=True, highlight=False, soft_wrap=True).print(
            f"gradproof train: {error}", markup=False
        )
        raise typer.Exit(code=2) from None
    raise typer.Exit(code=run.exit_code)


app.command(epilog=CHECK_EPILOG)(check)
