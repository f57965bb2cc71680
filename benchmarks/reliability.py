"""A fault matrix: every engine survives faults and keeps what it measured.

Each cell runs ``engine.sample`` on a sweep of 4,000 coordinates (two offsets each: 8,000
evaluations) of a cheap numpy loss that also sleeps 0.5 ms per evaluation, so that a sweep
lasts a few seconds (about 4 s in this process) without loading the shared cores. Engines:
this process, a :class:`~gradproof.engine.execution.ProcessEngine` with 2 workers (started afresh
for each cell), and a dask ``LocalCluster`` of 2 worker processes. Faults:

- ``raises``: the loss raises ValueError at coordinate 2,000 (mid-sweep);
- ``dies once``: the worker evaluating coordinate 2,000 calls ``os._exit(3)``, the first time
  only (a marker file remembers it);
- ``dies always``: the same, every time;
- ``Ctrl-C``: SIGINT reaches this process when half the evaluations are reported;
- ``deadline``: the sweep must stop 1.5 s after it starts.

A second table runs the same faults through ``gradproof.check`` (``mode="full"``, no noise
measurement, ``time_budget=1.5`` for the deadline, SIGINT after 1 s for Ctrl-C): every cell
must end in a result or a gradproof error that carries the partial result, and the entries it
reports as checked are counted as kept.

Each cell of the first table prints its outcome (``survived``: every coordinate measured;
``stop=...``: a partial :class:`~gradproof.numerics.finite_diff.Samples` with its error;
``RAW ...``: an exception escaped the engine, which must never happen), the evaluations kept (in
coordinates with all their values) over those made (every process appends a byte to a counter
file per evaluation, also the workers that are stopped or killed), whether the kept values are
bit-for-bit those of :func:`gradproof.numerics.finite_diff.sample`, and the time. A worker that dies
cannot be simulated in this process (the loss would end it): those cells read ``n/a``.
Dask retries a task that killed its worker itself (``distributed.scheduler.allowed-failures``,
3 by default) before it reports ``KilledWorker``, which the engine then retries once more.

It takes about two minutes on 2 cores.

Run:  python benchmarks/reliability.py
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from gradproof.engine.execution import Engine, ExecutorEngine, ProcessEngine, SerialEngine
from gradproof.engine.progress import Progress
from gradproof.numerics.finite_diff import sample

N = 4000
AT = 2000  # where faults strike
SECONDS = 0.0005  # per evaluation
RNG = np.random.default_rng(0)
X = RNG.normal(size=N)
WEIGHTS = RNG.normal(size=N)
COLUMNS = (X - 1e-4, X + 1e-4)
FAULTS = ("none", "raises", "dies once", "dies always", "Ctrl-C", "deadline")


def value(v: np.ndarray) -> float:
    """Return the loss (without its sleep or its fault)."""
    return float(np.sin(v) @ WEIGHTS)


class Loss:
    """`value`, taking `SECONDS`, counting its evaluations in a file, with a fault at `AT`."""

    def __init__(self, fault: str, counter: str, marker: str) -> None:
        self.fault = fault
        self.counter = counter
        self.marker = marker
        self._fd: tuple[int, int] | None = None  # (pid, file descriptor)

    def __getstate__(self) -> dict[str, object]:
        return {**vars(self), "_fd": None}

    def __call__(self, v: np.ndarray) -> float:
        """Evaluate, or fail as `fault` says when coordinate `AT` is moved."""
        if self._fd is None or self._fd[0] != os.getpid():
            self._fd = (os.getpid(), os.open(self.counter, os.O_WRONLY | os.O_APPEND | os.O_CREAT))
        time.sleep(SECONDS)
        if v[AT] != X[AT]:
            if self.fault == "raises":
                raise ValueError(f"the loss failed at coordinate {AT}")
            if self.fault in ("dies once", "dies always") and _in_worker() and self._die():
                os._exit(3)
        result = value(v)
        os.write(self._fd[1], b".")
        return result

    def _die(self) -> bool:
        if self.fault == "dies always":
            return True
        try:
            os.close(os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return False
        return True


def _in_worker() -> bool:
    return multiprocessing.parent_process() is not None


class SigintAtHalf(Progress):
    """Sends SIGINT to this process (as Ctrl-C does) when half the evaluations are reported."""

    def __init__(self, total: int) -> None:
        super().__init__(total, enabled=False)
        self.sent = False

    def advance(self, n: int = 1) -> None:
        """Count `n` evaluations; send SIGINT at half."""
        super().advance(n)
        if not self.sent and self.done >= self.total // 2:
            self.sent = True
            os.kill(os.getpid(), signal.SIGINT)


def run_cell(engine: Engine, fault: str, folder: Path, reference: np.ndarray) -> list[str]:
    """Run one sweep with `fault`; return its outcome, kept / made, exactness and time."""
    counter, marker = folder / f"{id(engine)}-{fault}.count", folder / f"{id(engine)}-{fault}"
    fun = Loss(fault, str(counter), str(marker))
    total = len(COLUMNS) * N
    progress = SigintAtHalf(total) if fault == "Ctrl-C" else None
    began = time.monotonic()
    deadline = began + 1.5 if fault == "deadline" else None
    try:
        result = engine.sample(fun, X, COLUMNS, progress=progress, deadline=deadline)
    except BaseException as exc:  # never expected: the engines return what they measured
        return [
            f"RAW {type(exc).__name__}: {exc}"[:60],
            "-",
            "-",
            f"{time.monotonic() - began:.1f}",
        ]
    elapsed = time.monotonic() - began
    made = counter.stat().st_size if counter.exists() else 0
    kept = len(COLUMNS) * int(result.measured.sum())
    if result.stop is None and result.measured.all():
        outcome = "survived"
    else:
        outcome = f"stop={result.stop}"
        if result.error is not None:
            outcome += f": {type(result.error).__name__}"
    m = result.measured
    exact = np.array_equal(result.values[:, m], reference[:, m]) and bool(
        np.isnan(result.values[:, ~m]).all()
    )
    share = f"{kept:,} / {made:,} ({kept / made:.1%})" if made else "0 / 0"
    return [outcome, share, "yes" if exact else "NO", f"{elapsed:.1f}"]


def run_check_cell(executor: object, fault: str, folder: Path) -> list[str]:
    """Run ``gradproof.check`` with `fault`: a result or a gradproof error, never a raw one."""
    import threading

    import gradproof

    counter, marker = folder / f"check-{id(executor)}-{fault}.count", folder / f"check-{fault}"
    fun = Loss(fault, str(counter), str(marker))
    options: dict[str, Any] = {"mode": "full", "noise": False, "executor": executor}
    if fault == "deadline":
        options["time_budget"] = 1.5
    timer = threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT))
    if fault == "Ctrl-C":
        timer.start()
    began = time.monotonic()
    try:
        result = gradproof.check(fun, np.cos(X) * WEIGHTS, X, **options)
        outcome = "result" + ("" if result.stop_reason is None else f", stop={result.stop_reason}")
    except gradproof.GradproofError as error:
        result = error.partial_result
        outcome = f"{type(error).__name__}, with its partial result"
        if result is None:
            outcome = f"{type(error).__name__}, nothing measured"
    except BaseException as exc:  # never expected
        return [f"RAW {type(exc).__name__}: {exc}"[:60], "-", f"{time.monotonic() - began:.1f}"]
    finally:
        timer.cancel()
    elapsed = time.monotonic() - began
    made = counter.stat().st_size if counter.exists() else 0
    # The check's own evaluations of the point (three) and its re-measurements count as made;
    # kept are the two evaluations of every entry the result reports as checked.
    kept = 0 if result is None else len(COLUMNS) * result.n_checked
    share = f"{kept:,} / {made:,} ({kept / made:.1%})" if made else "0 / 0"
    wrong = "" if result is None or result.verdict.value != "fail" else " FALSE ALARM"
    return [outcome + wrong, share, f"{elapsed:.1f}"]


def main() -> None:
    """Run the matrix and print it as a markdown table."""
    reference = sample(value, X, COLUMNS).values
    rows = []
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        for fault in FAULTS:
            if fault.startswith("dies"):
                rows.append(["serial", fault, "n/a (no workers)", "-", "-", "-"])
            else:
                with SerialEngine() as engine:
                    rows.append(["serial", fault, *run_cell(engine, fault, folder, reference)])
            print(" | ".join(rows[-1]), flush=True)
        for fault in FAULTS:
            with ProcessEngine(2) as engine:
                rows.append(["2 processes", fault, *run_cell(engine, fault, folder, reference)])
            print(" | ".join(rows[-1]), flush=True)
        check_rows = []
        for engine_name, executor in (("serial", None), ("2 processes", 2)):
            for fault in FAULTS:
                if engine_name == "serial" and fault.startswith("dies"):
                    check_rows.append([engine_name, fault, "n/a (no workers)", "-", "-"])
                else:
                    check_rows.append(
                        [engine_name, fault, *run_check_cell(executor, fault, folder)]
                    )
                print(" | ".join(check_rows[-1]), flush=True)
        # A fresh cluster for every cell: after repeated deaths a LocalCluster's nannies may
        # stop restarting workers, which would leave the next cell without any.
        for fault in FAULTS:
            with _dask_client() as client, ExecutorEngine(client.get_executor()) as engine:
                row = ["dask, 2 processes", fault, *run_cell(engine, fault, folder, reference)]
            rows.append(row)
            print(" | ".join(row), flush=True)
        for fault in FAULTS:
            with _dask_client() as client:
                executor = client.get_executor()
                row = ["dask, 2 processes", fault, *run_check_cell(executor, fault, folder)]
            check_rows.append(row)
            print(" | ".join(row), flush=True)
    _print_table(
        ["engine", "fault", "outcome", "evaluations kept / made", "values exact", "s"], rows
    )
    _print_table(["engine", "fault", "gradproof.check", "evaluations kept / made", "s"], check_rows)


@contextlib.contextmanager
def _dask_client() -> Iterator[Any]:
    """Yield a dask client of a new ``LocalCluster`` of 2 single-threaded worker processes."""
    from dask.distributed import Client, LocalCluster

    with (
        LocalCluster(  # type: ignore[no-untyped-call]
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            silence_logs=logging.CRITICAL,  # the nannies' warnings as workers die
        ) as cluster,
        Client(cluster) as client,  # type: ignore[no-untyped-call]
    ):
        yield client


def _print_table(header: list[str], rows: list[list[str]]) -> None:
    print()
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
