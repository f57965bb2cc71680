"""The ``gradproof`` command line: a thin layer over the library; no numerics here."""

from __future__ import annotations

import functools
import math
import re
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, ParamSpec

import typer
from rich.console import Console

from gradproof import __version__

if TYPE_CHECKING:
    from gradproof.results import CheckResult

__all__ = [
    "EXIT_FAIL",
    "EXIT_INCONCLUSIVE",
    "EXIT_INTERNAL",
    "EXIT_PASS",
    "EXIT_USAGE",
    "app",
]

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

app = typer.Typer(
    name="gradproof",
    help="Prove backpropagation correct: check hand-written gradients against finite "
    "differences, and see which parameter is wrong, where, and how.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


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


def _fail(message: str, detail: str = "", *, code: int = EXIT_USAGE) -> NoReturn:
    """Print an error to stderr (`detail`, then the message) and exit with `code` (2)."""
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    if detail:
        err.print(detail.rstrip("\n"), markup=False)
    err.print(f"gradproof check: {message}", markup=False)
    raise typer.Exit(code=code)


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


_OPTIONS = {
    "eps": "--eps",
    "rel_step": "--rel-step",
    "rtol": "--rtol",
    "atol": "--atol",
    "seed": "--seed",
    "mode": "--mode",
    "method": "--method",
    "max_evals": "--max-evals",
    "time_budget": "--time-budget",
    "n_probes": "--n-probes",
    "n_samples": "--n-samples",
    "executor": "--executor",
}
"""The keywords of :func:`gradproof.check` that are options of ``gradproof check``."""

_KEYWORD = re.compile(
    r"`(" + "|".join(_OPTIONS) + r")(?:=(['\"]?)([^`'\"]*)\2)?`(?:=([^\s,;)]*[^\s,;).]))?"
)


def _in_cli_words(message: str) -> str:
    """Name the options of ``gradproof check`` in a message of :func:`gradproof.check`.

    Examples
    --------
    >>> _in_cli_words("`max_evals` must be a positive integer; got 0.")
    '`--max-evals` must be a positive integer; got 0.'
    >>> _in_cli_words("Use `method='central'`, or pass `executor=None`.")
    'Use `--method central`, or pass `--executor 1`.'
    >>> _in_cli_words("Both `eps`=1e-06 and `rel_step`=1e-06 were given.")
    'Both `--eps 1e-06` and `--rel-step 1e-06` were given.'
    """

    def option(match: re.Match[str]) -> str:
        name = match[1]
        value = match[3] if match[3] is not None else match[4]
        if value is None:
            return f"`{_OPTIONS[name]}`"
        if name == "executor" and value == "None":
            value = "1"  # this process
        return f"`{_OPTIONS[name]} {value}`"

    return _KEYWORD.sub(option, message)


def _exit_message(exception: SystemExit, message: str = "") -> str:
    """Say that the user's code called ``sys.exit`` while its loss or gradient ran."""
    from gradproof.cli.target import exit_call

    where = f" ({message})" if message else " while gradproof evaluated the loss or gradient"
    return (
        f"your code called {exit_call(exception)}{where}; a loss or gradient function must "
        "return its value, not exit (gradproof check exits with 2 whatever code it passed)"
    )


class _Deadline:
    """The hard stop of ``--time-budget``: a Ctrl-C for a check that runs past its budget.

    :func:`gradproof.check` stops at its budget between evaluations; a loss
    evaluation that never returns (a hung loss) is stopped by this timer, which
    raises ``KeyboardInterrupt`` in the main thread at the budget plus a grace,
    and again after every further grace, so that the check returns what it
    measured. Only where ``signal.setitimer`` exists and in the main thread;
    elsewhere it does nothing. The previous SIGALRM handler and timer are
    restored on exit.
    """

    def __init__(self, seconds: float | None) -> None:
        self.seconds = seconds
        self.fired = 0
        self.armed = False
        self._previous: Any = None
        self._timer = (0.0, 0.0)
        self._started = 0.0

    @property
    def grace(self) -> float:
        """Seconds the check has past its budget before it is interrupted."""
        return max(_GRACE_SECONDS, 0.1 * (self.seconds or 0.0))

    def __enter__(self) -> _Deadline:
        if (
            self.seconds is None
            or not hasattr(signal, "setitimer")
            or threading.current_thread() is not threading.main_thread()
        ):
            return self
        self._previous = signal.signal(signal.SIGALRM, self._interrupt)
        self._started = time.monotonic()
        self._timer = signal.setitimer(signal.ITIMER_REAL, self.seconds + self.grace, self.grace)
        self.armed = True
        return self

    def _interrupt(self, signum: int, frame: FrameType | None) -> None:
        if self.armed:
            self.fired += 1
            raise KeyboardInterrupt(f"the --time-budget of {self.seconds:g} s ran out")

    def __exit__(self, *exc_info: object) -> None:
        if not self.armed:
            return
        self.armed = False
        signal.setitimer(signal.ITIMER_REAL, 0)
        previous = self._previous
        signal.signal(signal.SIGALRM, signal.SIG_DFL if previous is None else previous)
        delay, interval = self._timer
        if delay > 0:  # someone else's timer was running: let it run on
            left = delay - (time.monotonic() - self._started)
            signal.setitimer(signal.ITIMER_REAL, max(left, 1e-3), interval)


_GRACE_SECONDS = 2.0
"""The least time a check may run past ``--time-budget`` before its loss is interrupted."""


def _print_report(
    result: CheckResult, context: dict[str, str], *, as_json: bool, verbose: bool
) -> None:
    """Print the report on stdout: JSON, colour on a terminal, else plain text."""
    console = Console(highlight=False, soft_wrap=True)
    if as_json:
        from gradproof.report.json import to_json_text

        typer.echo(to_json_text(result, extra=context), nl=False)
    elif console.is_terminal:
        from gradproof.report.rich import print_result

        print_result(
            result,
            Console(highlight=False),
            verbose=verbose,
            title=f"gradproof check {context['target']}",
        )
    else:
        from gradproof.report.text import _headline, render_result

        typer.echo(render_result(result, verbose=verbose))
        typer.echo("")
        typer.echo(_headline(result))
    sys.stdout.flush()


@app.command(
    epilog="Exit codes: 0 every gradient is correct; 1 a gradient is wrong; 2 usage or input "
    "error, or the user's code raised an exception or called sys.exit; 3 inconclusive "
    "(kinks, noise) or incomplete (Ctrl-C, --time-budget or --max-evals reached) with "
    "nothing wrong found; 4 gradproof itself crashed (a bug, please report it)."
)
@_reports_internal_errors
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
        int | None,
        typer.Option(
            min=1,
            help="The most loss evaluations the whole check may spend; it picks the strategy, "
            "and a check that reaches it stops with what it measured (exit code 3 unless a "
            "wrong gradient was found).",
        ),
    ] = None,
    time_budget: Annotated[
        float | None,
        typer.Option(
            "--time-budget",
            metavar="SECONDS",
            help="The most wall-clock seconds the check may take; it picks the strategy, and a "
            "check that reaches it stops with what it measured (exit code 3 unless a wrong "
            "gradient was found). A loss evaluation that hangs is interrupted shortly after.",
        ),
    ] = None,
    executor: Annotated[
        int,
        typer.Option(
            "--executor",
            metavar="N",
            min=1,
            help="Worker processes that evaluate the loss (1: in this process).",
        ),
    ] = 1,
    n_samples: Annotated[
        int | None,
        typer.Option(
            "--n-samples",
            metavar="N",
            min=1,
            help="Entries measured by --mode sampled (default: as many as --max-evals "
            "allows, else 1000).",
        ),
    ] = None,
    n_probes: Annotated[
        int,
        typer.Option(
            "--n-probes",
            metavar="N",
            min=1,
            help="Random directions per tensor in --mode directional.",
        ),
    ] = 1,
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
            help="Draw the step-size sweep in --html and --plots (58 more loss evaluations; "
            "not after an incomplete check).",
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
    from gradproof.checking.check import check_with_options
    from gradproof.checking.options import MAX_LISTED_ENTRIES, CheckOptions
    from gradproof.cli.target import (
        format_user_traceback,
        load_params,
        load_target,
        resolve_function,
        send_by_value,
    )
    from gradproof.errors import GradproofError, UserCodeError
    from gradproof.report.json import write_json

    if time_budget is not None and not (math.isfinite(time_budget) and time_budget > 0):
        _fail(f"--time-budget must be a positive number of seconds; got {time_budget:g}")
    # Looked up before the check, so that a missing extra fails fast.
    write_page = _optional_writer("gradproof.report.html", "write_html", "--html") if html else None
    write_plots = (
        _optional_writer("gradproof.report.figures", "write_figures", "--plots") if plots else None
    )
    context = {"target": target, "loss": loss, "grad": grad, "params": params}

    deadline = _Deadline(time_budget)
    try:
        module = load_target(target)
        loss_fn = resolve_function(module, loss, role="loss")
        grad_fn = resolve_function(module, grad, role="gradient")
        point = load_params(params, module)
        if executor > 1:
            send_by_value(module)
        with deadline:
            options = CheckOptions(
                mode=mode.value,
                method=method.value,
                rtol=rtol,
                atol=atol,
                eps=eps,
                rel_step=rel_step,
                seed=seed,
                max_evals=max_evals,
                time_budget=time_budget,
                n_probes=n_probes,
                n_samples=n_samples,
                executor=executor if executor > 1 else None,
                # --verbose lists every wrong and inconclusive entry, in every report.
                max_listed=None if verbose else MAX_LISTED_ENTRIES,
            )
            result = check_with_options(loss_fn, grad_fn, point, options)
    except KeyboardInterrupt:
        if deadline.fired:
            _fail(
                f"the --time-budget of {time_budget:g} s ran out and a loss or gradient "
                f"evaluation did not return within {deadline.grace:g} s more, before the check "
                "had measured anything to report",
                code=EXIT_INCONCLUSIVE,
            )
        _fail(
            "interrupted before the check had measured anything to report", code=EXIT_INCONCLUSIVE
        )
    except SystemExit as exc:  # the loss or gradient called sys.exit: it must not end gradproof
        _fail(_exit_message(exc), format_user_traceback(exc))
    except GradproofError as error:
        cause = error.__cause__
        if isinstance(error, UserCodeError):
            message = str(error)
            if isinstance(cause, SystemExit) and not message.startswith("your code called"):
                message = _exit_message(cause, message)
            detail = format_user_traceback(cause) if cause is not None else ""
        else:
            message, detail = _in_cli_words(str(error)), ""
        partial = error.partial_result
        if partial is not None:  # what was measured before the error is reported, not lost
            try:
                if json_out is not None:
                    write_json(partial, json_out, extra=context)
            except OSError as write_error:
                message += f" (and the partial report could not be written: {write_error})"
            _print_report(partial, context, as_json=as_json, verbose=verbose)
            message += "; the report above covers what was measured before"
        _fail(message, detail)

    figure_options: dict[str, Any] = {}
    if sweep and not result.interrupted and (write_page or write_plots):
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
        _fail(_in_cli_words(str(error)))

    _print_report(result, context, as_json=as_json, verbose=verbose)
    if deadline.fired:
        Console(stderr=True, highlight=False, soft_wrap=True).print(
            f"gradproof check: the --time-budget of {time_budget:g} s ran out while a loss or "
            "gradient evaluation had not returned; it was interrupted, and the report covers "
            "what was measured before",
            markup=False,
        )
    verdict = result.verdict.value
    raise typer.Exit(
        code={"pass": EXIT_PASS, "fail": EXIT_FAIL, "inconclusive": EXIT_INCONCLUSIVE}[verdict]
    )
