"""The ``gradproof`` command line: a thin layer over the library; no numerics here."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console

from gradproof import __version__
from gradproof.cli.check_command import CHECK_EPILOG, check
from gradproof.cli.command import CliCommand, CliGroup
from gradproof.cli.exits import (
    EXIT_FAIL,
    EXIT_INCONCLUSIVE,
    EXIT_INTERNAL,
    EXIT_PASS,
    EXIT_USAGE,
    _reports_internal_errors,
)
from gradproof.models import BUGS

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
    cls=CliGroup,
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


@app.command(cls=CliCommand)
@_reports_internal_errors
def demo() -> None:
    """Walk through the classic gradient-checking assignment and catch its planted bugs."""
    from gradproof.cli.demo import run_demo

    console = Console(highlight=False, soft_wrap=True)
    result = run_demo(lambda text: console.print(text, markup=False))
    raise typer.Exit(code=0 if result.passed else 1)


@app.command(cls=CliCommand)
@_reports_internal_errors
def train(
    data: Annotated[
        Path | None,
        typer.Option(
            "--data",
            metavar="FILE",
            help="A CSV of labelled transactions (an is_fraud column of 0/1 and numeric "
            "features); synthetic payments by default.",
        ),
    ] = None,
    epochs: Annotated[
        int, typer.Option(metavar="N", min=1, help="Passes over the training split.")
    ] = 20,
    guard_every: Annotated[
        int,
        typer.Option(metavar="K", min=1, help="Check the gradient at step 1 and every K steps."),
    ] = 250,
    plant_bug: Annotated[
        bool,
        typer.Option(
            "--plant-bug", help="Plant a bug in the backward pass and watch the guard stop it."
        ),
    ] = False,
    bug: Annotated[
        str | None,
        typer.Option(
            metavar="NAME",
            callback=_known_bug,
            help="The bug to plant (implies --plant-bug): dW2-doubled (the default of "
            "--plant-bug), db1-times-4, no-l2-in-dW1, dropout-mask-missing or "
            "sample-weights-ignored (gradproof.models.BUGS).",
        ),
    ] = None,
    output: Annotated[
        Path,
        typer.Option(
            metavar="DIR",
            help="Folder for the saved model, its metrics and the learning curve; when the "
            "guard stops training, for the failing check's report.",
        ),
    ] = Path("gradproof-train"),
    seed: Annotated[
        int, typer.Option(metavar="N", help="Seed of the data, training and dropout.")
    ] = 0,
) -> None:
    """Train the fraud-detection model with a gradient guard watching its backward pass.

    Exit code 0: trained, every gradient check passed. 1: the guard found a wrong
    gradient and stopped training. 2: bad input (a CSV that cannot be read, an
    unknown --bug). 4: gradproof itself crashed.
    """
    from gradproof.cli.train import run_training
    from gradproof.errors import InputError

    if data is not None and not data.is_file():
        _train_fail(f"--data {data} is not a file; check the name and directory")
    if bug is None and plant_bug:
        bug = "dW2-doubled"  # the default of --plant-bug
    console = Console(highlight=False, soft_wrap=True)
    try:
        run = run_training(
            data_path=data,
            epochs=epochs,
            guard_every=guard_every,
            plant_bug=bug,
            output=output,
            seed=seed,
            write=lambda text: console.print(text, markup=False),
        )
    except InputError as error:
        _train_fail(_train_words(str(error)))
    raise typer.Exit(code=run.exit_code)


def _known_bug(value: str | None) -> str | None:
    """Refuse a ``--bug`` the model cannot plant, before any data is read or drawn."""
    if value is not None and value not in BUGS:
        known = ", ".join(repr(name) for name in BUGS)
        raise typer.BadParameter(f"{value!r} is not one of {known}")
    return value


_LABEL_FIX = re.compile(r"Pass `label=` with the name of the column that holds ([^.]*)\.")


def _train_words(message: str) -> str:
    """Say a message of :func:`gradproof.models.load_csv` in the words of ``gradproof train``.

    Examples
    --------
    >>> _train_words("Pass `label=` with the name of the column that holds 0/1 fraud labels.")
    'Rename the column that holds 0/1 fraud labels to is_fraud, where gradproof train reads them.'
    """
    return _LABEL_FIX.sub(
        r"Rename the column that holds \1 to is_fraud, where gradproof train reads them.",
        message,
    )


def _train_fail(message: str) -> NoReturn:
    """Print ``gradproof train: message`` on stderr and exit with code 2."""
    Console(stderr=True, highlight=False, soft_wrap=True).print(
        f"gradproof train: {message}", markup=False
    )
    raise typer.Exit(code=EXIT_USAGE)


app.command(cls=CliCommand, epilog=CHECK_EPILOG)(check)
