"""The smallest systematic relative error gradproof catches, and its false alarms, per corpus.

For every correct case of :mod:`gradproof.corpus` (and of :mod:`gradproof.corpus.frontier`),
in float64 and in float32 (``precision="native"``: the loss computes in float32), the
correct gradient is checked as it is (a WRONG verdict is a false alarm) and multiplied by
``1 + e`` on every entry for ``e`` = 1e-2, 3e-3, ..., 1e-9 (a WRONG verdict is a catch).
Each case's threshold is the smallest ``e`` from which every larger one is caught too.

Run:  python benchmarks/systematic_errors.py [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import statistics
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

import gradproof
from gradproof import corpus
from gradproof.corpus import frontier

ERRORS = (1e-2, 3e-3, 1e-3, 3e-4, 1e-4, 3e-5, 1e-5, 3e-6, 1e-6, 3e-7, 1e-7, 3e-8, 1e-8, 3e-9, 1e-9)
"""The relative errors planted, largest first."""


def _scaled(grad: Callable[[Any], Any], factor: float, dtype: Any) -> Callable[[Any], Any]:
    def scaled(p: Any) -> Any:
        return {
            k: (np.asarray(v, dtype=np.float64) * factor).astype(dtype) for k, v in grad(p).items()
        }

    return scaled


def _params(case: corpus.Case, dtype: Any) -> Any:
    return {k: np.asarray(v).astype(dtype) for k, v in case.params.items()}


def _wrong(case: corpus.Case, grad: Callable[[Any], Any], dtype: Any) -> bool:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = gradproof.check(
            case.loss, grad, _params(case, dtype), seed=case.seed, mode="full",
            precision="native", progress=False,
        )  # fmt: skip
    return result.verdict is gradproof.Verdict.FAIL


def measure(cases: tuple[corpus.Case, ...]) -> dict[str, Any]:
    """Per dtype: false alarms, and each case's smallest caught relative error."""
    out: dict[str, Any] = {}
    for dtype in (np.float64, np.float32):
        name = np.dtype(dtype).name
        false_alarms = [c.name for c in cases if _wrong(c, _scaled(c.grad, 1.0, dtype), dtype)]
        thresholds: dict[str, float | None] = {}
        for case in cases:
            if case.name in false_alarms:
                continue
            smallest = None
            for e in ERRORS:
                if not _wrong(case, _scaled(case.grad, 1.0 + e, dtype), dtype):
                    break
                smallest = e
            thresholds[case.name] = smallest
        out[name] = {"false_alarms": false_alarms, "thresholds": thresholds}
    return out


def render(found: dict[str, Any]) -> str:
    """Summarise the thresholds: best, median and worst case, and cases that catch none."""
    lines = []
    for name, result in found.items():
        caught = [t for t in result["thresholds"].values() if t is not None]
        none = [c for c, t in result["thresholds"].items() if t is None]
        median = statistics.median(caught) if caught else float("nan")
        lines.append(
            f"{name}: {len(result['false_alarms'])} false alarms {result['false_alarms']}; "
            f"smallest caught: best {min(caught, default=float('nan')):.0e}, "
            f"median {median:.0e}, worst {max(caught, default=float('nan')):.0e} "
            f"over {len(caught)} cases; none caught (even 1e-2) in {none}"
        )
    return "\n".join(lines)


def main() -> None:
    """Print the summary; optionally write every case's threshold as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="also write the thresholds to this file")
    parser.add_argument("--no-frontier", action="store_true", help="the main corpus only")
    args = parser.parse_args()
    cases = corpus.cases() + (() if args.no_frontier else frontier.cases())
    found = measure(cases)
    print(render(found))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump(found, out, indent=1)


if __name__ == "__main__":
    main()
