"""The ``gradproof check`` command: load the user's code, check it, report, exit."""

from __future__ import annotations

import math
import os
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

if TYPE_CHECKING:
    from gradproof.results import CheckResult

from gradproof._words import counted
from gradproof.cli.deadline import _Deadline
from gradproof.cli.exits import (
    EXIT_FAIL,
    EXIT_INCONCLUSIVE,
    EXIT_PASS,
    _exit_message,
    _fail,
    _reports_internal_errors,
)

__all__ = ["CHECK_EPILOG", "check"]

CHECK_EPILOG = (
    "Exit codes: 0 every gradient is correct; 1 a gradient is wrong; 2 usage or input "
    "error, or the user's code raised an exception or called sys.exit; 3 inconclusive "
    "(kinks, noise) or incomplete (Ctrl-C, --time-budget or --max-evals reached) with "
    "nothing wrong found; 4 gradproof itself crashed (a bug, please report it)."
)
"""The epilogue of ``gradproof check --help``: its exit codes."""


class Mode(str, Enum):
    """The strategies of :func:`gradproof.check`."""

    auto = "auto"
    full = "full"
    directional = "directional"
    sampled = "sampled"


class Precision(str, Enum):
    """How :func:`gradproof.check` differences low-precision parameters."""

    auto = "auto"
    native = "native"


class Method(str, Enum):
    """The finite-difference methods of :func:`gradproof.check`."""

    central = "central"
    forward = "forward"
    backward = "backward"
    central4 = "central4"
    richardson = "richardson"
    complex = "complex"


def _positive(value: float | None) -> float | None:
    """Refuse a step of 0 or less, or not a number: ``--eps: must be greater than 0; got 0``."""
    if value is not None and not (math.isfinite(value) and value > 0):
        raise typer.BadParameter(
            f"must be a step greater than 0 (the width of the finite differences); got {value:g}"
        )
    return value


@dataclass(frozen=True, slots=True)
class _PrefixedGrad:
    """The user's gradient function with ``--grad-prefix`` stripped from its keys.

    A class at module level, not a closure, so that ``--executor`` can send it
    to worker processes.

    Examples
    --------
    >>> _PrefixedGrad(lambda p: {"dW1": 1, "db1": 2, "other": 3}, "d")({})
    {'W1': 1, 'b1': 2, 'other': 3}
    """

    grad: Callable[[Any], Any]
    prefix: str

    def __call__(self, params: Any) -> Any:
        grads = self.grad(params)
        if not isinstance(grads, Mapping):
            return grads  # the structure check says what is wrong
        return {
            key.removeprefix(self.prefix) if isinstance(key, str) else key: value
            for key, value in grads.items()
        }


def _say_written(lines: list[str]) -> None:
    """Say on stderr what was written, so that stdout keeps the report alone."""
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    for line in lines:
        err.print(f"gradproof check: {line}", markup=False)


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
    "eps": ("--eps", "STEP"),
    "rel_step": ("--rel-step", "STEP"),
    "rtol": ("--rtol", "TOL"),
    "atol": ("--atol", "TOL"),
    "seed": ("--seed", "N"),
    "mode": ("--mode", "MODE"),
    "method": ("--method", "METHOD"),
    "precision": ("--precision", "auto|native"),
    "max_evals": ("--max-evals", "N"),
    "time_budget": ("--time-budget", "SECONDS"),
    "n_probes": ("--n-probes", "N"),
    "n_samples": ("--n-samples", "N"),
    "executor": ("--executor", "N"),
}
"""The keywords of :func:`gradproof.check` that are options of ``gradproof check``.

Each maps to the option and the placeholder of its value, for a message that
names the keyword without a value (``Pass `seed=` ...``).
"""

_FLAGS = {"noise": ("--noise", "--no-noise")}
"""The boolean keywords of :func:`gradproof.check` that are on/off flags of ``gradproof check``."""


_KEYWORD = re.compile(
    r"`(" + "|".join(_OPTIONS) + r")(?:=(['\"]?)([^`'\"]*)\2)?`(?:=([^\s,;)]*[^\s,;).]))?"
)
_FLAG = re.compile(r"`(" + "|".join(_FLAGS) + r")(?:=(True|False))?`(?:=(True|False))?")
_PREFIXED_KEYS = re.compile(r"`\{name: \w+\[(['\"])(\w+)\1 \+ name\] for name in \w+\}`")
"""The Python fix for gradients keyed ``dW1`` for ``W1``; ``--grad-prefix`` on the CLI."""
_TO_THE_API = re.compile(r" to gradproof\.check\b(?![.(])")
_API_NAME = re.compile(r"\bgradproof\.check\b(?![.(])")


def _in_cli_words(message: str) -> str:
    """Name the options of ``gradproof check`` in a message of :func:`gradproof.check`.

    Parameters
    ----------
    message : str
        A message written for the Python API, naming keywords of
        :func:`gradproof.check` such as ``seed=`` or ``max_evals``.

    Returns
    -------
    str
        The message with each keyword replaced by its option of ``gradproof
        check``, and the Python-only fixes by their options.

    Examples
    --------
    >>> _in_cli_words("`max_evals` must be a positive integer; got 0.")
    '`--max-evals` must be a positive integer; got 0.'
    >>> _in_cli_words("Use `method='central'`, or pass `executor=None`.")
    'Use `--method central`, or pass `--executor 1`.'
    >>> _in_cli_words("Both `eps`=1e-06 and `rel_step`=1e-06 were given.")
    'Both `--eps 1e-06` and `--rel-step 1e-06` were given.'
    >>> _in_cli_words("Pass `seed=` to gradproof.check so that every evaluation re-seeds.")
    'Pass `--seed N` so that every evaluation re-seeds.'
    >>> _in_cli_words("Or pass `noise=False`.")
    'Or pass `--no-noise`.'
    >>> _in_cli_words("pass `{name: grads['d' + name] for name in params}`.")
    'pass `--grad-prefix d`.'
    """

    def option(match: re.Match[str]) -> str:
        name = match[1]
        flag, placeholder = _OPTIONS[name]
        value = match[3] if match[3] is not None else match[4]
        if value is None:
            return f"`{flag}`"
        if value == "":  # `seed=`: the keyword, to be given a value
            value = placeholder
        if name == "executor" and value == "None":
            value = "1"  # this process
        return f"`{flag} {value}`"

    def on_off(match: re.Match[str]) -> str:
        on, off = _FLAGS[match[1]]
        value = match[2] or match[3]
        return f"`{off if value == 'False' else on}`"

    message = _KEYWORD.sub(option, message)
    message = _FLAG.sub(on_off, message)
    message = _PREFIXED_KEYS.sub(lambda match: f"`--grad-prefix {match[2]}`", message)
    return _API_NAME.sub("gradproof check", _TO_THE_API.sub("", message))


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


@_reports_internal_errors
def check(
    target: Annotated[
        str,
        typer.Argument(
            metavar="TARGET",
            help="The code to check: a Python file (model.py) or an importable module (pkg.model).",
        ),
    ],
    loss: Annotated[
        str,
        typer.Option(
            "--loss", metavar="NAME", help="Name of the loss function in TARGET: loss(params)."
        ),
    ],
    grad: Annotated[
        str,
        typer.Option(
            "--grad",
            metavar="NAME",
            help="Name of the hand-written gradient function: grad(params).",
        ),
    ],
    params: Annotated[
        str,
        typer.Option(
            "--params",
            metavar="SOURCE",
            help="The point to check at: a .npz or .npy file, a .pt state dict (needs torch), "
            "or the name of a function in TARGET that returns the parameters.",
        ),
    ],
    mode: Annotated[
        Mode,
        typer.Option(
            metavar="MODE",
            help="The strategy: auto, full, directional or sampled (auto: full if it fits).",
        ),
    ] = Mode.auto,
    method: Annotated[
        Method,
        typer.Option(
            metavar="METHOD",
            help="The finite differences: central, forward, backward, central4, richardson "
            "or complex.",
        ),
    ] = Method.central,
    rtol: Annotated[
        float | None,
        typer.Option(metavar="RTOL", min=0, help="Relative tolerance (default: by dtype)."),
    ] = None,
    atol: Annotated[float, typer.Option(metavar="ATOL", min=0, help="Absolute tolerance.")] = 0.0,
    eps: Annotated[
        float | None,
        typer.Option(
            metavar="STEP",
            callback=_positive,
            help="An absolute step for every coordinate (greater than 0).",
        ),
    ] = None,
    rel_step: Annotated[
        float | None,
        typer.Option(
            metavar="STEP",
            callback=_positive,
            help="A relative step: STEP * max(1, |x|) (greater than 0).",
        ),
    ] = None,
    precision: Annotated[
        Precision,
        typer.Option(
            metavar="PRECISION",
            help="auto: float16 and float32 parameters are differenced in float64 when the "
            "loss accepts it; native: always in their own dtype.",
        ),
    ] = Precision.auto,
    noise: Annotated[
        bool,
        typer.Option(
            "--noise/--no-noise",
            help="Measure the loss's noise (40 loss evaluations) when a verdict depends on "
            "it; without it, rounding at the dtype's epsilon is assumed.",
        ),
    ] = True,
    seed: Annotated[
        int | None,
        typer.Option(metavar="N", help="Reset the random generators to this seed each evaluation."),
    ] = None,
    max_evals: Annotated[
        int | None,
        typer.Option(
            metavar="N",
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
    grad_prefix: Annotated[
        str | None,
        typer.Option(
            "--grad-prefix",
            metavar="TEXT",
            help="Strip TEXT from the front of the gradient's keys before checking: "
            "--grad-prefix d for a gradient keyed dW1 for the parameter W1.",
        ),
    ] = None,
    as_json: Annotated[
        bool,
        typer.Option("--json", help="Print the JSON report (schema report-v1) instead of text."),
    ] = False,
    json_out: Annotated[
        Path | None,
        typer.Option("--json-out", metavar="FILE", help="Also write the JSON report to FILE."),
    ] = None,
    html: Annotated[
        Path | None,
        typer.Option("--html", metavar="FILE", help="Also write an HTML report to FILE."),
    ] = None,
    plots: Annotated[
        Path | None,
        typer.Option("--plots", metavar="DIR", help="Also draw the report's figures in DIR."),
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
            metavar="ENTRY",
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
        if grad_prefix:
            grad_fn = _PrefixedGrad(grad_fn, grad_prefix)
        point = load_params(params, module)
        if executor > 1:
            send_by_value(module)
        with deadline:
            options = CheckOptions(
                mode=mode.value,
                method=method.value,
                precision=precision.value,
                noise=noise,
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
            written: list[str] = []
            try:
                if json_out is not None:
                    path = write_json(partial, json_out, extra=context)
                    written.append(f"wrote the partial report to {path}")
            except OSError as write_error:
                message += f" (and the partial report could not be written: {write_error})"
            _print_report(partial, context, as_json=as_json, verbose=verbose)
            _say_written(written)
            message += "; the report above covers what was measured before"
        _fail(message, detail)

    figure_options: dict[str, Any] = {}
    if sweep and not result.interrupted and (write_page or write_plots):
        figure_options = {"loss": loss_fn, "params": point, "entry": sweep_entry}
    written = []
    try:
        if json_out is not None:
            written.append(f"wrote {write_json(result, json_out, extra=context)}")
        if write_page is not None:
            written.append(f"wrote {write_page(result, html, context=context, **figure_options)}")
        if write_plots is not None:
            figures = write_plots(result, plots, **figure_options)
            count = counted(len(figures), "figure")
            written.append(f"wrote {count} to {plots}{os.sep}")
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
    _say_written(written)
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
