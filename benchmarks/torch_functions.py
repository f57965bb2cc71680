"""Run gradproof.torch and torch.autograd.gradcheck side by side on the custom-Function suite.

Every case of ``tests/torch_functions.py`` (correct custom Functions, and ones with planted
backward bugs) goes through

- ``torch.autograd.gradcheck(fn, inputs)`` with its defaults (slow mode, eps 1e-6,
  atol 1e-5, rtol 1e-3), on the inputs as given (float64, except the float32 case), and
- ``gradproof.torch.check_function(fn, *inputs)`` with its defaults,

and prints one Markdown table: each tool's verdict, the input gradproof names and the wrong
entries it lists, and gradproof's time as a multiple of gradcheck's (the best of three runs
each, after a warm-up). Torch runs on one thread: the tensors are tiny, and on a loaded machine
idle intra-op threads only slow both tools down.

Run:  python benchmarks/torch_functions.py
"""

from __future__ import annotations

import math
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.autograd.gradcheck import GradcheckError

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.torch_functions import CASES, Case

from gradproof import CheckResult, Verdict
from gradproof.torch import check_function
from gradproof.torch._prepare import _argument_names

REPEATS = 3


def best_time(run: Callable[[], Any]) -> tuple[Any, float]:
    """Return the first run's result and the shortest of `REPEATS` wall-clock times."""
    times, result = [], None
    for i in range(REPEATS):
        started = time.perf_counter()
        value = run()
        times.append(time.perf_counter() - started)
        result = value if i == 0 else result
    return result, min(times)


def run_gradcheck(case: Case) -> str:
    """Run gradcheck with its defaults: "pass", "FAIL", or "error" if it cannot run."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # its warning about float32 inputs
        try:
            return "pass" if torch.autograd.gradcheck(case.fn, case.make_inputs()) else "FAIL"
        except GradcheckError:
            return "FAIL"
        except Exception as error:  # e.g. a backward whose gradient has the wrong shape
            return f"error ({type(error).__name__})"


def run_gradproof(case: Case) -> CheckResult:
    """Run gradproof.torch.check_function with its defaults."""
    return check_function(case.fn, *case.make_inputs())


def wrong_entries(result: CheckResult) -> dict[str, tuple[set[tuple[int, ...]], int]]:
    """Collect, by input, the wrong entries gradproof lists and how many it found.

    ``d output[2]/d x`` is about ``x``. A report lists at most ``MAX_LISTED_ENTRIES``
    entries; its ``n_failed`` counts them all.
    """
    found: dict[str, tuple[set[tuple[int, ...]], int]] = {}
    for report in result.params:
        if report.verdict is Verdict.FAIL:
            name = report.name.rsplit("/d ", 1)[-1]
            listed, count = found.get(name, (set(), 0))
            listed.update(entry.index for entry in report.failures)
            found[name] = (listed, max(count, report.n_failed))
    return found


def describe_entries(case: Case, found: dict[str, tuple[set[tuple[int, ...]], int]]) -> str:
    """Write the entries found: ``all 6``, a few indices, or ``24 (20 listed)``."""
    if not found:
        return "-"
    arguments = case.make_inputs()
    inputs = dict(zip(_argument_names(case.fn, len(arguments)), arguments, strict=True))
    parts = []
    for name, (listed, count) in sorted(found.items()):
        size = math.prod(inputs[name].shape)
        count = max(count, len(listed))
        if count == size:
            text = f"all {size}"
        elif count <= 3:
            text = " ".join(f"`{list(index)}`" for index in sorted(listed))  # code: not links
        else:
            text = f"{count} of {size}"
        if count > len(listed):
            text += f" ({len(listed)} listed)"
        parts.append(text)
    return "; ".join(parts)


def verdict_text(result: CheckResult) -> str:
    """Write gradproof's verdict like gradcheck's: ``pass``, ``FAIL`` or ``inconclusive``."""
    return {Verdict.PASS: "pass", Verdict.FAIL: "FAIL", Verdict.INCONCLUSIVE: "inconclusive"}[
        result.verdict
    ]


HEADERS = ["case", "truth", "gradcheck", "gradproof", "input named", "entries listed"]


def table_row(case: Case, reference: str, result: CheckResult) -> list[str]:
    """Build the table row of one case, without the time column."""
    found = wrong_entries(result)
    return [
        case.name,
        case.bug or "correct",
        reference,
        verdict_text(result),
        ", ".join(sorted(found)) or "-",
        describe_entries(case, found),
    ]


def main() -> None:
    """Run both tools over the suite and print the table and the totals."""
    torch.set_num_threads(1)
    run_gradcheck(CASES[0])  # warm-up: first calls load torch's kernels
    run_gradproof(CASES[0])
    rows = []
    caught = {"gradcheck": 0, "gradproof": 0}
    alarms = {"gradcheck": 0, "gradproof": 0}
    totals = {"gradcheck": 0.0, "gradproof": 0.0}
    for case in CASES:
        reference, reference_time = best_time(lambda case=case: run_gradcheck(case))
        result, own_time = best_time(lambda case=case: run_gradproof(case))
        totals["gradcheck"] += reference_time
        totals["gradproof"] += own_time
        tally = alarms if case.correct else caught
        tally["gradcheck"] += reference != "pass"
        tally["gradproof"] += result.verdict is Verdict.FAIL
        rows.append([*table_row(case, reference, result), f"{own_time / reference_time:.0f}×"])
    headers = [*HEADERS, "time"]
    print("| " + " | ".join(headers) + " |")
    print("|" + "---|" * len(headers))
    for row in rows:
        print("| " + " | ".join(row) + " |")
    n_bugs = sum(not c.correct for c in CASES)
    n_correct = len(CASES) - n_bugs
    print()
    print(
        f"Planted bugs caught: gradcheck {caught['gradcheck']} of {n_bugs}, "
        f"gradproof {caught['gradproof']} of {n_bugs}. "
        f"False alarms on correct functions: gradcheck {alarms['gradcheck']} of {n_correct}, "
        f"gradproof {alarms['gradproof']} of {n_correct}. "
        f"Total time: gradcheck {totals['gradcheck']:.2f} s, "
        f"gradproof {totals['gradproof']:.2f} s."
    )


if __name__ == "__main__":
    main()
