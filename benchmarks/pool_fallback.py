"""Measure a pool that is too small to pay: the 1e6 directional check, serial and executor=2.

A directional check of ``relu_network((1000, 1000, 1))`` (1,002,001 parameters, the case of
``benchmarks/scale.py``) makes about 100 evaluations of about 2 ms each. Starting two worker
processes and shipping them the loss and the 8 MB point costs more than that, so since the
engines time a few evaluations first (Note [Chunks] in :mod:`gradproof.engine.chunks`), such a
check runs in this process and says so. This script runs it both ways, with one wrong entry
and with the correct gradient, and prints, after one untimed check, the best of 3 times, the
evaluations, the engine the result names and the ratio of the pool's time to the serial time
(goal: about 1, never the 4.5x it was when the pool always started).

Run:  python benchmarks/pool_fallback.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import scale

from gradproof import check


def main() -> None:
    """Print one line per gradient: serial and pool times, evaluations, engines, ratio."""
    case = scale.relu_case((1000, 1000, 1), "1e6", 1, 1)
    # Untimed first: the first check of a process pays for fresh memory pages (docs/scale.md).
    check(case.loss, case.grad, case.params, mode="directional", progress=False)
    for label, grad in (("1 wrong entry", case.bad_grad), ("correct gradient", case.grad)):
        seconds: dict[str, float] = {}
        for name, executor in (("serial", None), ("executor=2", 2)):
            best = float("inf")
            for _ in range(3):
                began = time.perf_counter()
                result = check(
                    case.loss, grad, case.params, mode="directional", progress=False,
                    executor=executor,
                )  # fmt: skip
                best = min(best, time.perf_counter() - began)
            seconds[name] = best
            print(
                f"{label:16}  {name:10}  {best:6.3f} s  {result.n_evals:4d} evaluations  "
                f"{result.verdict.value:4}  engine: {result.engine}"
            )
        ratio = seconds["executor=2"] / seconds["serial"]
        print(f"{label:16}  ratio executor=2 / serial: {ratio:.2f}")


if __name__ == "__main__":
    main()
