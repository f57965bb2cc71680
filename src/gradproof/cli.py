"""The ``gradproof`` command line: a thin layer over the library; no numerics here."""

from __future__ import annotations

import sys
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console

from gradproof import __version__

__all__ = ["EXIT_FAIL", "EXIT_INCONCLUSIVE", "EXIT_PASS", "EXIT_USAGE", "app"]

EXIT_PASS = 0
"""``gradproof check``: every gradient is correct."""
EXIT_FAIL = 1
"""``gradproof check``: a gradient is wrong."""
EXIT_USAGE = 2
"""``gradproof check``: a usage or input error, or the user's code raised an exception."""
EXIT_INCONCLUSIVE = 3
"""``gradproof check``: nothing wrong, but some entries could not be judged (kinks, noise)."""

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


@app.command()
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
    gradient and stopped training. 2: bad input (a CSV that cannot be read).
    """
    from gradproof.errors import InputError
    from gradproof.fraud_training import run_training

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


class Mode(str, Enum):
    """The strategies of :func:`gradproof.check`."""

    auto = "auto"
    full = "full"
    directional = "directional"
    sampled = "sampled"


class Method(str, Enum):
    """The finite-difference methods of :func:`gradproof.check`."""

    central = "central"
    forward = "forward"
    backward = "backward"
    central4 = "central4"
    richardson = "richardson"
    complex = "complex"


def _fail(message: str, detail: str = "") -> NoReturn:
    """Print a usage or input error to stderr and exit with code 2."""
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    if detail:
        err.print(detail.rstrip("\n"), markup=False)
    err.print(f"gradproof check: {message}", markup=False)
    raise typer.Exit(code=EXIT_USAGE)


def _optional_writer(module: str, function: str, option: str) -> Callable[..., Any]:
    """Return an optional report writer, or exit 2 when this version lacks it."""
    import importlib

    try:
        writer = getattr(importlib.import_module(module), function, None)
    except ImportError as exc:
        _fail(f"{option} needs {exc.name or 'an optional dependency'}: {exc}")
    if writer is None:
        _fail(f"{option} is not available in this version of gradproof")
    return writer  # type: ignore[no-any-return]


@app.command(
    epilog="Exit codes: 0 every gradient is correct; 1 a gradient is wrong; 2 usage or input "
    "error, or the user's code raised an exception; 3 inconclusive only (kinks, noise)."
)
def check(
    target: Annotated[
        str,
        typer.Argument(
            help="The code to check: a Python file (model.py) or an importable module (pkg.model)."
        ),
    ],
    loss: Annotated[
        str, typer.Option("--loss", help="Name of the loss function in TARGET: loss(params).")
    ],
    grad: Annotated[
        str,
        typer.Option("--grad", help="Name of the hand-written gradient function: grad(params)."),
    ],
    params: Annotated[
        str,
        typer.Option(
            "--params",
            help="The point to check at: a .npz or .npy file, a .pt state dict (needs torch), "
            "or the name of a function in TARGET that returns the parameters.",
        ),
    ],
    mode: Annotated[Mode, typer.Option(help="The strategy (auto: full if it fits).")] = Mode.auto,
    method: Annotated[Method, typer.Option(help="The finite differences.")] = Method.central,
    rtol: Annotated[
        float | None, typer.Option(min=0, help="Relative tolerance (default: by dtype).")
    ] = None,
    atol: Annotated[float, typer.Option(min=0, help="Absolute tolerance.")] = 0.0,
    eps: Annotated[
        float | None, typer.Option(min=0, help="An absolute step for every coordinate.")
    ] = None,
    rel_step: Annotated[
        float | None, typer.Option(min=0, help="A relative step: rel_step * max(1, |x|).")
    ] = None,
    seed: Annotated[
        int | None, typer.Option(help="Reset the random generators to this seed each evaluation.")
    ] = None,
    max_evals: Annotated[
        int | None, typer.Option(min=1, help="Budget of loss evaluations (picks the strategy).")
    ] = None,
    as_json: Annotated[
        bool,
        typer.Option("--json", help="Print the JSON report (schema report-v1) instead of text."),
    ] = False,
    json_out: Annotated[
        Path | None, typer.Option("--json-out", help="Also write the JSON report to this file.")
    ] = None,
    html: Annotated[
        Path | None, typer.Option("--html", help="Also write an HTML report to this file.")
    ] = None,
    plots: Annotated[
        Path | None, typer.Option("--plots", help="Also draw the report's figures in this folder.")
    ] = None,
    sweep: Annotated[
        bool,
        typer.Option(
            "--sweep/--no-sweep",
            help="Draw the step-size sweep in --html and --plots (58 more loss evaluations).",
        ),
    ] = True,
    sweep_entry: Annotated[
        str | None,
        typer.Option(
            "--sweep-entry",
            help="The entry to sweep, e.g. 'W1[3, 2]' (default: the worst entry of the worst "
            "parameter).",
        ),
    ] = None,
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose",
            "-v",
            help="List every wrong or inconclusive entry, in every report (by default the "
            "text shows the 3 worst of each parameter, JSON and HTML the 20 worst).",
        ),
    ] = False,
) -> None:
    """Check the gradient of your own code, without writing a script.

    Loads TARGET, calls the loss and gradient functions at the parameters, and
    compares the gradient with finite differences, parameter by parameter.
    """
    from gradproof.check import MAX_LISTED_ENTRIES
    from gradproof.check import check as run_check
    from gradproof.errors import GradproofError, UserCodeError
    from gradproof.target import (
        format_user_traceback,
        load_params,
        load_target,
        resolve_function,
    )

    # Looked up before the check, so that a missing extra fails fast.
    write_page = _optional_writer("gradproof.report.html", "write_html", "--html") if html else None
    write_plots = _optional_writer("gradproof.plots", "write_figures", "--plots") if plots else None

    try:
        module = load_target(target)
        loss_fn = resolve_function(module, loss, role="loss")
        grad_fn = resolve_function(module, grad, role="gradient")
        point = load_params(params, module)
        result = run_check(
            loss_fn,
            grad_fn,
            point,
            mode=mode.value,
            method=method.value,
            rtol=rtol,
            atol=atol,
            eps=eps,
            rel_step=rel_step,
            seed=seed,
            max_evals=max_evals,
            # --verbose lists every wrong and inconclusive entry, in every report.
            max_listed=None if verbose else MAX_LISTED_ENTRIES,
        )
    except UserCodeError as error:
        cause = error.__cause__
        _fail(str(error), format_user_traceback(cause) if cause is not None else "")
    except GradproofError as error:
        _fail(str(error))

    context = {"target": target, "loss": loss, "grad": grad, "params": params}
    from gradproof.report.json import to_json_text, write_json

    figure_options: dict[str, Any] = {}
    if sweep and (write_page or write_plots):
        figure_options = {"loss": loss_fn, "params": point, "entry": sweep_entry}
    try:
        if json_out is not None:
            write_json(result, json_out, extra=context)
        if write_page is not None:
            write_page(result, html, context=context, **figure_options)
        if write_plots is not None:
            write_plots(result, plots, **figure_options)
    except OSError as error:
        _fail(f"cannot write the report: {error}")
    except UserCodeError as error:  # the loss raised in the step sweep
        cause = error.__cause__
        _fail(
            f"{error}; pass --no-sweep to leave the step sweep out",
            format_user_traceback(cause) if cause is not None else "",
        )
    except GradproofError as error:  # e.g. --sweep-entry names no entry
        _fail(str(error))

    console = Console(highlight=False, soft_wrap=True)
    if as_json:
        typer.echo(to_json_text(result, extra=context), nl=False)
    elif console.is_terminal:
        from gradproof.report.rich import print_result

        print_result(
            result, Console(highlight=False), verbose=verbose, title=f"gradproof check {target}"
        )
    else:
        from gradproof.report.text import _headline, render_result

        typer.echo(render_result(result, verbose=verbose))
        typer.echo("")
        typer.echo(_headline(result))
    sys.stdout.flush()
    verdict = result.verdict.value
    raise typer.Exit(
        code={"pass": EXIT_PASS, "fail": EXIT_FAIL, "inconclusive": EXIT_INCONCLUSIVE}[verdict]
    )
