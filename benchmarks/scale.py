"""Measure how gradproof's checks scale, and compare them with torch's and jax's checkers.

Three measurements, all in one run on the same functions (ratios, never absolute limits):

1. Full sweeps. ``gradproof.check(..., mode="full")`` on the classic assignment's
   network (47 parameters) and on ReLU networks of about 1e3, 1e4 and 1e5 parameters
   (:func:`gradproof.corpus.scaling.relu_network`), serially and through the batched
   path (``loss_batch=net.loss_batch, batch_size=64``). Each time is divided by the time
   of 2N bare forward calls (``loss(params)`` called 2N times in a loop). The project's
   goal is a ratio of at most 1.1. The batched path's own floor, 2N/64 bare calls of
   ``loss_batch`` on a stack of 64 points, is given as a ratio to the same 2N calls.
2. Localisation at a million parameters. ``mode="directional"`` on
   ``relu_network((1000, 1000, 1))`` (1,002,001 parameters) with one and with ten
   planted wrong entries (:func:`gradproof.corpus.scaling.plant_wrong_entries`) and with
   the correct gradient: evaluations used, wall time, and whether exactly the planted
   entries were named. The goal is one wrong entry found, with its exact index, in at
   most 100 evaluations and under 5 s on a 2-core machine. The process-pool engine
   (``executor=2``) runs the same checks, and its time is given as a ratio to the serial
   engine.
3. Side by side. On every network above, with the correct gradient and with the planted
   one, four checkers run on the same numpy loss and gradient:
   ``gradproof.check`` with its defaults (``mode="auto"``), ``torch.autograd.gradcheck``
   (default and ``fast_mode=True``) and ``jax.test_util.check_grads`` (``order=1``,
   ``modes=["rev"]``). Each checker gets a wrapper that calls the numpy code: a
   ``torch.autograd.Function``, and a ``jax.custom_vjp`` with ``jax.pure_callback``.
   Times are ratios to gradproof. The default gradcheck takes 2N evaluations, so above
   ``TORCH_FULL_MAX`` parameters it is not run: its time is estimated from the
   per-evaluation time. torch and jax never name an entry, so they never localise.

4. What a check costs (issue 15), as ratios measured side by side in one run: the fixed
   set-up (evaluations before the first difference), the assignment network with its two
   bugs (serial, batched, and the assignment's own ``gradient_check_n`` loop) against 2N bare
   forwards, a whole tensor wrong (a factor of 2 on ``W1``) against the clean sweep, and the
   1e4 full sweep through ``executor=2`` and a Dask ``LocalCluster`` of 2 workers against the
   serial sweep. Evaluation counts are exact; timings on a shared machine are not. The cost
   timings are medians of interleaved repeats (5, or 3 with ``--quick``).

Short timings (at most 1 s) are the best of 3 (of 1 with ``--quick``); longer ones are a
single run. Each configuration first runs once untimed (a short check, or a few calls), so
that one-time costs of the process are not counted (see :func:`warm_up`). Seeds are fixed.
The torch and jax columns are skipped, with a message, when the package is not installed.
The machine's load average, and the CPU time other processes used while each table was
measured, are printed with the tables: timings taken while other work runs are not
comparable.

Run:  python benchmarks/scale.py [--quick] [--cost] [--json PATH]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import multiprocessing
import os
import platform
import sys
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from functools import partial
from typing import Any, TypeVar

import numpy as np

import gradproof
from gradproof.corpus.scaling import plant_wrong_entries, relu_network
from gradproof.course import (
    backward_propagation_n,
    backward_propagation_n_corrected,
    forward_propagation_n,
    gradient_check_n,
    gradient_check_n_test_case,
    parameter_gradients,
)
from gradproof.results import CheckResult

Arrays = dict[str, np.ndarray]
Loss = Callable[[Arrays], float]
Grad = Callable[[Arrays], Arrays]
Entries = frozenset[tuple[str, int]]
T = TypeVar("T")

TORCH_FULL_MAX = 20_000
"""The default (2N-evaluation) torch gradcheck runs only up to this many parameters."""

SHORT = 1.0
"""Timings up to this many seconds are repeated and the best one kept."""

FULL_SIZES: dict[str, tuple[int, ...]] = {
    "1e3": (10, 90, 1),  # 1,081 parameters
    "1e4": (100, 98, 1),  # 9,997
    "1e5": (300, 330, 1),  # 99,661
}
"""The ReLU networks of the full sweeps, by order of magnitude."""

LARGE_SIZES = (1000, 1000, 1)
"""The million-parameter network of the localisation measurement (1,002,001 entries)."""

N_EXAMPLES = 64
"""Examples each ReLU network's loss averages over."""

BATCH = 64
"""Points per call of the batched loss."""

PLANTED_IN = "W1"
"""The tensor the wrong entries are planted in (the largest one)."""


# -- cases ----------------------------------------------------------------------------------------
@dataclass
class Case:
    """A loss with its correct gradient, a wrong gradient, and where the wrong one is wrong."""

    name: str
    params: Arrays
    loss: Loss
    grad: Grad
    bad_name: str
    bad_grad: Grad
    wrong: Entries
    loss_batch: Callable[[Arrays], np.ndarray] | None = None

    @property
    def n(self) -> int:
        """Number of parameter entries."""
        return sum(value.size for value in self.params.values())


@dataclass
class Row:
    """One line of a table."""

    n: int
    section: str = ""
    case: str = ""
    tool: str = ""
    verdict: str = ""
    found: str = "n.a."
    false_alarm: str = "n.a."
    evals: int | None = None
    seconds: float | None = None
    ratio: float | None = None
    estimated: bool = False


def differing_entries(good: Arrays, bad: Arrays) -> Entries:
    """Return the (tensor, flat index) pairs where two gradients differ."""
    return frozenset(
        (name, int(i))
        for name in good
        for i in np.flatnonzero(np.ravel(good[name]) != np.ravel(bad[name]))
    )


def with_offsets(grad: Grad, offsets: dict[str, tuple[np.ndarray, np.ndarray]]) -> Grad:
    """Return ``grad`` with fixed amounts added to some entries (a planted bug)."""

    def planted(p: Arrays) -> Arrays:
        out = {name: np.array(value, dtype=np.float64) for name, value in grad(p).items()}
        for name, (indices, amounts) in offsets.items():
            out[name].flat[indices] += amounts
        return out

    return planted


def relu_case(sizes: tuple[int, ...], label: str, count: int, plant_seed: int) -> Case:
    """Build a ReLU network with `count` wrong entries planted in ``W1`` of its gradient."""
    net = relu_network(sizes, n_examples=N_EXAMPLES, seed=0)
    good = net.grad(net.params)
    bad, indices = plant_wrong_entries(good, PLANTED_IN, count, seed=plant_seed)
    amounts = bad[PLANTED_IN].flat[indices] - good[PLANTED_IN].flat[indices]
    bad_grad = with_offsets(net.grad, {PLANTED_IN: (indices, amounts)})
    shape = "-".join(str(s) for s in sizes)
    entries = "1 wrong entry" if count == 1 else f"{count} wrong entries"
    return Case(
        name=f"ReLU {label} ({shape})",
        params=net.params,
        loss=net.loss,
        grad=net.grad,
        bad_name=entries,
        bad_grad=bad_grad,
        wrong=frozenset((PLANTED_IN, int(i)) for i in indices),
        loss_batch=net.loss_batch,
    )


def assignment_case() -> Case:
    """Build the classic assignment's network, with its own two bugs (``dW2``, ``db1``)."""
    X, Y, params = gradient_check_n_test_case()

    def loss(p: Arrays) -> float:
        return forward_propagation_n(X, Y, p)[0]

    def grad(p: Arrays) -> Arrays:
        return parameter_gradients(
            backward_propagation_n_corrected(X, Y, forward_propagation_n(X, Y, p)[1])
        )

    def bad_grad(p: Arrays) -> Arrays:
        return parameter_gradients(backward_propagation_n(X, Y, forward_propagation_n(X, Y, p)[1]))

    def loss_batch(p: Arrays) -> np.ndarray:
        """Hand-batched copy of ``forward_propagation_n``'s cost: a leading axis of points."""
        a1 = np.maximum(0, p["W1"] @ X + p["b1"])
        a2 = np.maximum(0, p["W2"] @ a1 + p["b2"])
        a3 = 1 / (1 + np.exp(-(p["W3"] @ a2 + p["b3"])))
        logprobs = np.multiply(-np.log(a3), Y) + np.multiply(-np.log(1 - a3), 1 - Y)
        values: np.ndarray = 1.0 / X.shape[1] * np.sum(logprobs, axis=(-2, -1))
        return values

    return Case(
        name="assignment network (4-5-3-1)",
        params=params,
        loss=loss,
        grad=grad,
        bad_name="its 2 bugs (dW2, db1)",
        bad_grad=bad_grad,
        wrong=differing_entries(grad(params), bad_grad(params)),
        loss_batch=loss_batch,
    )


# -- timing ---------------------------------------------------------------------------------------
def timed(run: Callable[[], T], repeats: int) -> tuple[T, float]:
    """Run once; if that took at most ``SHORT`` seconds, run again and keep the best time.

    Returns the first run's result and the best time.
    """
    started = time.perf_counter()
    result = run()
    best = time.perf_counter() - started
    if best <= SHORT:
        for _ in range(repeats - 1):
            started = time.perf_counter()
            run()
            best = min(best, time.perf_counter() - started)
    return result, best


def warm_up(case: Case, **options: Any) -> None:
    """Run a short untimed check (512 sampled entries) with the same options.

    The first batched check of a network in a process ran about twice as slow as
    the next ones (1e4 parameters: 2.0 s, then 0.85 s), all of the difference
    inside the loss's own numpy calls: glibc's allocator maps fresh pages for
    the large temporaries until its dynamic mmap threshold has grown
    (``MALLOC_MMAP_THRESHOLD_`` fixed from the start removes most of it). That
    is no cost of the check, so it is paid here, untimed.
    """
    options = {**options, "mode": "sampled", "n_samples": 512, "progress": False}
    gradproof.check(case.loss, case.grad, case.params, **options)


def bare_forwards(loss: Loss, params: Arrays, count: int) -> None:
    """Call the loss `count` times at the same point: the floor of any full sweep."""
    for _ in range(count):
        loss(params)


def stacked(params: Arrays, size: int) -> Arrays:
    """Return `size` copies of the parameters as views of one ``(size, n)`` array.

    This is the layout gradproof's batched path hands to ``loss_batch``.
    """
    vector, _ = flat_layout(params)
    stack = np.tile(vector, (size, 1))
    out, start = {}, 0
    for name, value in params.items():
        stop = start + np.size(value)
        out[name] = stack[:, start:stop].reshape(size, *np.shape(value))
        start = stop
    return out


def bare_batches(loss_batch: Callable[[Arrays], np.ndarray], stack: Arrays, count: int) -> None:
    """Call the batched loss `count` times on the same stack: the floor of a batched sweep."""
    for _ in range(count):
        loss_batch(stack)


class Counted:
    """A function that counts its calls."""

    def __init__(self, fun: Callable[..., Any]) -> None:
        self.fun = fun
        self.calls = 0

    def __call__(self, *args: Any) -> Any:
        """Count the call and make it."""
        self.calls += 1
        return self.fun(*args)


def flat_layout(params: Arrays) -> tuple[np.ndarray, Callable[[np.ndarray], Arrays]]:
    """Return the parameters as one float64 vector, and its inverse (the dict layout)."""
    names = list(params)
    shapes = [np.shape(params[name]) for name in names]
    bounds = np.cumsum([0] + [int(np.prod(s)) for s in shapes])
    vector = np.concatenate([np.ravel(params[name]) for name in names]).astype(np.float64)

    def unflatten(v: np.ndarray) -> Arrays:
        return {
            name: v[bounds[i] : bounds[i + 1]].reshape(shapes[i]) for i, name in enumerate(names)
        }

    return vector, unflatten


def flatten(grads: Arrays, names: Iterable[str]) -> np.ndarray:
    """Concatenate gradients in the parameters' order."""
    return np.concatenate([np.ravel(grads[name]) for name in names]).astype(np.float64)


# -- gradproof ------------------------------------------------------------------------------------
def named_entries(result: CheckResult) -> tuple[Entries, bool]:
    """Return the entries gradproof called wrong, and whether it listed all of them."""
    named = set()
    complete = True
    for report in result.params:
        complete &= len(report.failures) == report.n_failed
        for entry in report.failures:
            flat = int(np.ravel_multi_index(entry.index, report.shape)) if report.shape else 0
            named.add((report.name, flat))
    return frozenset(named), complete


def found_label(result: CheckResult, wrong: Entries) -> str:
    """Return "yes" when gradproof named exactly the wrong entries, else "no"."""
    named, complete = named_entries(result)
    return "yes" if complete and named == wrong else "no"


def run_gradproof(
    case: Case, grad: Grad, repeats: int, *, bad: bool, **options: Any
) -> tuple[CheckResult | None, Row]:
    """Time one gradproof.check and describe it as a row (ratio left to the caller)."""
    try:
        result, seconds = timed(
            lambda: gradproof.check(case.loss, grad, case.params, progress=False, **options),
            repeats,
        )
    except Exception as exc:  # a crash is a result too
        return None, Row(case.n, verdict=f"error: {type(exc).__name__}: {exc}"[:160])
    verdict = result.verdict.value
    return result, Row(
        case.n,
        verdict=verdict,
        found=found_label(result, case.wrong) if bad else "n.a.",
        false_alarm="n.a." if bad else ("yes" if verdict == "fail" else "no"),
        evals=result.n_evals,
        seconds=seconds,
    )


# -- torch and jax --------------------------------------------------------------------------------
def torch_function(params: Arrays, loss: Loss, grad: Grad) -> tuple[Any, Counted]:
    """Wrap a numpy loss and gradient in a ``torch.autograd.Function`` of the flat vector."""
    import torch

    _, unflatten = flat_layout(params)
    names = list(params)
    counted = Counted(loss)

    class NumpyLoss(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
            point = x.detach().numpy().copy()  # gradcheck perturbs x in place afterwards
            ctx.point = point
            return torch.tensor(float(counted(unflatten(point))), dtype=torch.float64)

        @staticmethod
        def backward(ctx: Any, grad_output: torch.Tensor) -> torch.Tensor:
            g = flatten(grad(unflatten(ctx.point.copy())), names)
            return grad_output * torch.from_numpy(g)

    return NumpyLoss.apply, counted


TORCH_OVERHEAD: dict[str, float] = {}
"""Seconds the default gradcheck spends per evaluation besides calling the function,
measured on the largest network it ran on (``"seconds"``; ``"n"``: that network's size)."""


def call_seconds(fn: Callable[[], Any]) -> float:
    """Return the time of one call: the best of 5 runs of 10 calls, divided by 10."""
    _, seconds = timed(lambda: [fn() for _ in range(10)], 5)
    return seconds / 10


def run_torch(case: Case, grad: Grad, repeats: int, *, bad: bool, fast: bool) -> Row:
    """Run ``torch.autograd.gradcheck`` on the wrapped numpy code (estimated when too long).

    The default (2N-evaluation) mode is estimated above ``TORCH_FULL_MAX``
    parameters as 2N times the per-evaluation time: one call of the wrapped
    function, plus gradcheck's own work per evaluation as measured where it ran.
    """
    import torch

    vector, _ = flat_layout(case.params)
    fn, counted = torch_function(case.params, case.loss, grad)
    x = torch.tensor(vector, dtype=torch.float64, requires_grad=True)
    row = Row(case.n, found="no" if bad else "n.a.")
    if not fast and case.n > TORCH_FULL_MAX:
        per_eval = call_seconds(lambda: fn(x)) + TORCH_OVERHEAD.get("seconds", 0.0)
        row.seconds = 2 * case.n * per_eval
        row.evals = 2 * case.n
        row.estimated = True
        row.verdict = f"not run (estimated {row.seconds:.0f} s from the per-evaluation time)"
        row.found = row.false_alarm = "n.a."
        return row

    def check() -> bool:
        counted.calls = 0
        return bool(torch.autograd.gradcheck(fn, (x,), raise_exception=False, fast_mode=fast))

    try:
        passed, row.seconds = timed(check, repeats)
    except Exception as exc:
        row.verdict = f"error: {type(exc).__name__}: {exc}"[:160]
        return row
    row.evals = counted.calls
    row.verdict = "pass" if passed else "fail"
    if not bad:
        row.false_alarm = "no" if passed else "yes"
    if not fast and row.evals and case.n >= TORCH_OVERHEAD.get("n", 0):
        overhead = row.seconds / row.evals - call_seconds(lambda: fn(x))
        TORCH_OVERHEAD.update(seconds=max(overhead, 0.0), n=case.n)
    return row


def jax_function(params: Arrays, loss: Loss, grad: Grad) -> tuple[Any, Counted]:
    """Wrap a numpy loss and gradient in a ``jax.custom_vjp`` calling them back."""
    import jax
    import jax.numpy as jnp

    _, unflatten = flat_layout(params)
    names = list(params)
    counted = Counted(loss)

    def loss_back(v: Any) -> np.ndarray:
        return np.asarray(counted(unflatten(np.asarray(v, dtype=np.float64))), dtype=np.float64)

    def grad_back(v: Any) -> np.ndarray:
        return flatten(grad(unflatten(np.array(v, dtype=np.float64))), names)

    @jax.custom_vjp
    def f(x: Any) -> Any:
        return jax.pure_callback(loss_back, jax.ShapeDtypeStruct((), jnp.float64), x)

    def f_fwd(x: Any) -> tuple[Any, Any]:
        return f(x), x

    def f_bwd(x: Any, cotangent: Any) -> tuple[Any]:
        g = jax.pure_callback(grad_back, jax.ShapeDtypeStruct(x.shape, jnp.float64), x)
        return (cotangent * g,)

    f.defvjp(f_fwd, f_bwd)
    return f, counted


def run_jax(case: Case, grad: Grad, repeats: int, *, bad: bool) -> Row:
    """Run ``jax.test_util.check_grads(f, (x,), order=1, modes=["rev"])`` on the numpy code."""
    import jax
    import jax.numpy as jnp
    from jax.test_util import check_grads

    vector, _ = flat_layout(case.params)
    f, counted = jax_function(case.params, case.loss, grad)
    x = jnp.asarray(vector, dtype=jnp.float64)
    row = Row(case.n, found="no" if bad else "n.a.")

    def check() -> bool:
        counted.calls = 0
        try:
            check_grads(f, (x,), order=1, modes=["rev"])
        except AssertionError:
            return False
        return True

    try:
        passed, row.seconds = timed(check, repeats)
    except Exception as exc:
        row.verdict = f"error: {type(exc).__name__}: {exc}"[:160]
        return row
    jax.effects_barrier()
    row.evals = counted.calls
    row.verdict = "pass" if passed else "fail"
    if not bad:
        row.false_alarm = "no" if passed else "yes"
    return row


def available(module: str) -> bool:
    """Whether `module` can be imported (and, for jax, switch to float64)."""
    try:
        if module == "torch":
            import torch  # noqa: F401
        else:
            import jax

            jax.config.update("jax_enable_x64", True)
    except ImportError:
        return False
    return True


# -- the measurements -----------------------------------------------------------------------------
def say(message: str) -> None:
    """Tell the person waiting what is being measured (on stderr)."""
    print(message, file=sys.stderr, flush=True)


def label(row: Row, section: str, case: str, tool: str) -> Row:
    """Fill in a row's section, case and tool."""
    row.section, row.case, row.tool = section, case, tool
    return row


def measure_full(cases: list[Case], repeats: int) -> list[Row]:
    """Full sweeps (serial and batched) as ratios to 2N bare forward calls."""
    rows = []
    for case in cases:
        say(f"full sweep: {case.name}, N = {case.n}")
        bare_forwards(case.loss, case.params, 10)  # untimed warm-up
        _, bare = timed(partial(bare_forwards, case.loss, case.params, 2 * case.n), repeats)
        rows.append(
            Row(
                case.n,
                section="full",
                case=case.name,
                tool="2N bare forward calls",
                verdict="n.a.",
                evals=2 * case.n,
                seconds=bare,
                ratio=1.0,
            )
        )
        if case.loss_batch is not None:
            stack = stacked(case.params, BATCH)
            calls = -(-2 * case.n // BATCH)
            bare_batches(case.loss_batch, stack, 3)  # untimed warm-up
            _, seconds = timed(partial(bare_batches, case.loss_batch, stack, calls), repeats)
            rows.append(
                Row(
                    case.n,
                    section="full",
                    case=case.name,
                    tool=f"2N/{BATCH} bare loss_batch calls ({BATCH} points each)",
                    verdict="n.a.",
                    evals=calls * BATCH,
                    seconds=seconds,
                    ratio=seconds / bare,
                )
            )
        runs: list[tuple[str, dict[str, Any]]] = [("gradproof full", {})]
        if case.loss_batch is not None:
            runs.append(
                (
                    f"gradproof full, batched ({BATCH})",
                    {"loss_batch": case.loss_batch, "batch_size": BATCH},
                )
            )
        for tool, options in runs:
            warm_up(case, **options)
            _, row = run_gradproof(case, case.grad, repeats, bad=False, mode="full", **options)
            row.ratio = None if row.seconds is None else row.seconds / bare
            rows.append(label(row, "full", case.name, tool))
    return rows


def measure_large(case: Case, ten: Case, repeats: int) -> list[Row]:
    """Directional checks and localisation in the million-parameter network."""
    rows = []
    serial: dict[str, float] = {}
    runs = [
        (case, case.bad_grad, True, case.bad_name),
        (ten, ten.bad_grad, True, ten.bad_name),
        (case, case.grad, False, "correct gradient"),
    ]
    say("directional: untimed warm-up")
    gradproof.check(case.loss, case.grad, case.params, mode="directional", progress=False)
    for engine, options in (("serial", {}), ("executor=2", {"executor": 2})):
        for which, grad, bad, what in runs:
            if engine != "serial" and which is ten:
                continue
            say(f"directional, {engine}: {which.name}, {what}")
            _, row = run_gradproof(which, grad, repeats, bad=bad, mode="directional", **options)
            if row.seconds is not None:
                if engine == "serial":
                    serial[what] = row.seconds
                elif what in serial:
                    row.ratio = row.seconds / serial[what]
            rows.append(
                label(row, "large", f"{which.name}, {what}", f"gradproof directional, {engine}")
            )
    return rows


def measure_side_by_side(cases: list[Case], repeats: int) -> list[Row]:
    """Run gradproof (defaults), torch gradcheck (default, fast), jax check_grads: same code."""
    has_torch, has_jax = available("torch"), available("jax")
    if not has_torch:
        say("torch is not installed: its columns are skipped (pip install torch)")
    if not has_jax:
        say("jax is not installed: its columns are skipped (pip install jax jaxlib)")
    if has_torch:  # the first calls pay for torch's and jax's own set-up: untimed
        run_torch(cases[0], cases[0].grad, 1, bad=False, fast=False)
        run_torch(cases[0], cases[0].grad, 1, bad=False, fast=True)
    if has_jax:
        run_jax(cases[0], cases[0].grad, 1, bad=False)
    rows = []
    for case in cases:
        for grad, bad, what in (
            (case.grad, False, "correct"),
            (case.bad_grad, True, case.bad_name),
        ):
            name = f"{case.name}, {what}"
            say(f"side by side: {name}")
            result, ref = run_gradproof(case, grad, repeats, bad=bad)
            mode = "?" if result is None else result.mode
            ref.ratio = 1.0
            rows.append(label(ref, "side", name, f"gradproof.check (auto: {mode})"))
            tools = (["torch gradcheck", "torch gradcheck (fast_mode)"] if has_torch else []) + (
                ["jax check_grads (rev)"] if has_jax else []
            )
            for tool in tools:
                if tool.startswith("torch"):
                    row = run_torch(case, grad, repeats, bad=bad, fast="fast" in tool)
                else:
                    row = run_jax(case, grad, repeats, bad=bad)
                if row.seconds is not None and ref.seconds:
                    row.ratio = row.seconds / ref.seconds
                rows.append(label(row, "side", name, tool))
    return rows


def interleaved(runs: dict[str, Callable[[], Any]], repeats: int) -> dict[str, float]:
    """Time several runs in turn, `repeats` rounds; return each one's median seconds.

    Interleaving exposes every run to the same load, so their ratios are fairer than
    those of runs timed one after the other on a shared machine.
    """
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            started = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - started)
    return {name: float(np.median(values)) for name, values in times.items()}


def _check(case: Case, grad: Grad, **options: Any) -> CheckResult:
    return gradproof.check(case.loss, grad, case.params, progress=False, **options)


def _cost_row(case: Case, tool: str, n: int, evals: int | None, seconds: float | None) -> Row:
    return Row(n, section="cost", case=case.name, tool=tool, verdict="", evals=evals,
               seconds=seconds)  # fmt: skip


def measure_cost(assignment: Case, sweep: Case, repeats: int) -> list[Row]:
    """Measure what a check costs (issue 15): set-up, the assignment, a tensor wrong, engines."""
    rows: list[Row] = []
    n = assignment.n
    X, Y, _ = gradient_check_n_test_case()
    say(f"cost: {assignment.name}")
    clean = _check(assignment, assignment.grad)
    rows.append(
        Row(
            n,
            section="cost",
            case=assignment.name,
            tool="fixed set-up (evaluations before the first difference; clean check)",
            verdict=clean.verdict.value,
            evals=clean.n_evals - 2 * n,
        )
    )
    stack = stacked(assignment.params, BATCH)
    calls = -(-2 * n // BATCH)
    bad = {f"d{name}": value for name, value in assignment.bad_grad(assignment.params).items()}
    runs: dict[str, Callable[[], Any]] = {
        "2N bare forward calls": partial(bare_forwards, assignment.loss, assignment.params, 2 * n),
        "gradproof, its 2 bugs": partial(_check, assignment, assignment.bad_grad),
        "gradproof, its 2 bugs, noise=False": partial(
            _check, assignment, assignment.bad_grad, noise=False
        ),
        f"gradproof, its 2 bugs, batched ({BATCH})": partial(
            _check,
            assignment,
            assignment.bad_grad,
            loss_batch=assignment.loss_batch,
            batch_size=BATCH,
        ),
        f"2N/{BATCH} bare loss_batch calls": partial(
            bare_batches, assignment.loss_batch, stack, calls
        ),
        "the assignment's own loop (gradient_check_n)": partial(
            gradient_check_n, assignment.params, bad, X, Y, print_msg=False
        ),
    }
    for run in runs.values():  # untimed warm-up
        run()
    seconds = interleaved(runs, repeats)
    floor = seconds["2N bare forward calls"]
    results = {
        "gradproof, its 2 bugs": _check(assignment, assignment.bad_grad),
        "gradproof, its 2 bugs, noise=False": _check(assignment, assignment.bad_grad, noise=False),
        f"gradproof, its 2 bugs, batched ({BATCH})": _check(
            assignment, assignment.bad_grad, loss_batch=assignment.loss_batch, batch_size=BATCH
        ),
    }
    for tool, value in seconds.items():
        result = results.get(tool)
        evals = result.n_evals if result is not None else (2 * n if "2N" in tool else None)
        row = _cost_row(assignment, tool, n, evals, value)
        row.ratio = value / floor
        if result is not None:
            row.verdict = result.verdict.value
            row.found = found_label(result, assignment.wrong)
        rows.append(row)

    say(f"cost: whole tensor wrong, {sweep.name}")
    net_grad = sweep.grad(sweep.params)
    doubled = {**net_grad, PLANTED_IN: 2 * net_grad[PLANTED_IN]}
    good = _check(sweep, sweep.grad, mode="full")
    wrong = gradproof.check(sweep.loss, doubled, sweep.params, mode="full", progress=False)
    failing = wrong[PLANTED_IN].n_failed
    size = sweep.params[PLANTED_IN].size
    rows.append(_cost_row(sweep, "clean full sweep", sweep.n, good.n_evals, None))
    whole = _cost_row(
        sweep, f"{PLANTED_IN} × 2 ({failing:,} failing entries of {size:,})", sweep.n,
        wrong.n_evals, None,
    )  # fmt: skip
    whole.verdict, whole.ratio = wrong.verdict.value, wrong.n_evals / good.n_evals
    rows.append(whole)

    say(f"cost: engines, {sweep.name}")
    engines: dict[str, Callable[[], Any]] = {
        "full sweep, serial": partial(_check, sweep, sweep.grad, mode="full"),
        "full sweep, executor=2": partial(_check, sweep, sweep.grad, mode="full", executor=2),
    }
    # A pool the caller keeps across checks pays its start once, as the Dask cluster does.
    pool = ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("forkserver"))
    engines["full sweep, ProcessPoolExecutor(2) kept across checks"] = partial(
        _check, sweep, sweep.grad, mode="full", executor=pool
    )
    cluster = None
    if importlib.util.find_spec("distributed") is not None:
        from dask.distributed import Client, LocalCluster

        cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True)
        client = Client(cluster)
        engines["full sweep, Dask LocalCluster (2 workers)"] = partial(
            _check, sweep, sweep.grad, mode="full", executor=client.get_executor()
        )
    else:
        say("dask.distributed is not installed: its row is skipped (pip install dask distributed)")
    try:
        for run in engines.values():  # untimed warm-up (starts the workers)
            run()
        seconds = interleaved(engines, max(repeats - 2, 1))
    finally:
        pool.shutdown()
        if cluster is not None:
            client.close()
            cluster.close()
    serial = seconds["full sweep, serial"]
    for tool, value in seconds.items():
        row = _cost_row(sweep, tool, sweep.n, None, value)
        row.ratio = serial / value  # a speed-up: above 1 is faster than serial
        rows.append(row)
    return rows


# -- output ---------------------------------------------------------------------------------------
TITLES = {
    "full": "Full sweeps, correct gradient (ratio: to 2N bare forward calls; goal at most 1.1)",
    "large": (
        "Directional check and localisation, 1e6 parameters (ratio: executor=2 to serial; goal: "
        "1 wrong entry found exactly in at most 100 evaluations and under 5 s)"
    ),
    "side": "Side by side on the same numpy code (ratio: to gradproof.check on the same row group)",
    "cost": (
        "What a check costs, medians of interleaved runs (ratio: the assignment's rows to 2N "
        "bare forwards; the whole-tensor row, evaluations to the clean sweep's; the engine rows, "
        "speed-up over serial)"
    ),
}


def cell(value: float | int | None, fmt: str, estimated: bool = False) -> str:
    """Format a number, "—" when there is none, "~" when it is an estimate."""
    if value is None:
        return "—"
    if fmt == "ratio":  # two decimals, two significant digits below 0.1, no exponent
        fmt = ".2f" if value >= 0.1 else ".2g"
        if value >= 100:
            fmt = ",.0f"
    if fmt == "seconds":  # three significant digits, no exponent
        fmt = ",.0f" if value >= 99.95 else "#.3g"
    return ("~" if estimated else "") + format(value, fmt)


def render(rows: list[Row], others: dict[str, float | None]) -> str:
    """Format the rows as one Markdown table per section, with the other processes' CPU use."""
    out = []
    for section, title in TITLES.items():
        chosen = [r for r in rows if r.section == section]
        if not chosen:
            continue
        out += [
            f"### {title}",
            "",
            "| case | N | tool | verdict | found the planted entries | false alarm | "
            "evaluations | seconds | ratio |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in chosen:
            out.append(
                f"| {r.case} | {r.n:,} | {r.tool} | {r.verdict} | {r.found} | {r.false_alarm} | "
                f"{cell(r.evals, ',')} | {cell(r.seconds, 'seconds', r.estimated)} | "
                f"{cell(r.ratio, 'ratio', r.estimated)} |"
            )
        out += [
            "",
            f"Other processes used {cell(others.get(section), '.0f')} s of CPU time while this "
            "table was measured.",
            "",
        ]
    return "\n".join(out)


def goals(rows: list[Row]) -> list[str]:
    """Say, from the rows, which of the issue's goals were met."""
    lines = []
    for r in rows:
        if r.section == "full" and r.tool.startswith("gradproof") and r.ratio is not None:
            met = "met" if r.ratio <= 1.1 else "NOT met"
            lines.append(f"- {r.case}, {r.tool}: {r.ratio:.2f} × 2N bare forwards ({met})")
    for r in rows:
        if r.section != "cost" or r.ratio is None:
            continue
        if r.tool == "gradproof, its 2 bugs" and r.evals is not None:
            met = "met" if r.evals <= 2 * r.n + 6 and r.ratio <= 1.3 else "NOT met"
            lines.append(
                f"- assignment network, its 2 bugs: {r.evals} evaluations (goal ≤ 2N + 6 = "
                f"{2 * r.n + 6}), {r.ratio:.2f} × the 2N floor (goal ≤ 1.3) ({met})"
            )
        elif r.tool.startswith("gradproof, its 2 bugs, batched"):
            met = "met" if r.ratio <= 0.2 else "NOT met"
            lines.append(f"- batched: {r.ratio:.2f} × the 2N floor (goal ≤ 0.2) ({met})")
        elif r.tool.startswith(PLANTED_IN + " × 2"):
            met = "met" if r.ratio <= 1.1 else "NOT met"
            lines.append(
                f"- whole tensor wrong: {r.ratio:.3f} × the clean sweep's evaluations "
                f"(goal ≤ 1.1) ({met})"
            )
        elif r.tool == "full sweep, executor=2":
            met = "met" if r.ratio >= 1.7 else "NOT met"
            lines.append(f"- executor=2: {r.ratio:.2f}× faster than serial (goal ≥ 1.7) ({met})")
        elif r.tool.startswith("full sweep, ProcessPoolExecutor"):
            met = "met" if r.ratio >= 1.7 else "NOT met"
            lines.append(
                f"- a process pool kept across checks: {r.ratio:.2f}× faster than serial "
                f"(goal ≥ 1.7) ({met})"
            )
        elif r.tool.startswith("full sweep, Dask"):
            met = "met" if r.ratio >= 1.6 else "NOT met"
            lines.append(
                f"- Dask, 2 workers: {r.ratio:.2f}× faster than serial (goal ≥ 1.6) ({met})"
            )
    for r in rows:
        if r.section == "cost" and r.tool.startswith("fixed set-up") and r.evals is not None:
            met = "met" if r.evals <= 4 else "NOT met"
            lines.append(f"- fixed set-up: {r.evals} evaluations (goal ≤ 4) ({met})")
    for r in rows:
        if r.section == "large" and r.tool.endswith("serial") and "1 wrong entry" in r.case:
            ok = r.found == "yes" and r.evals is not None and r.evals <= 100
            ok = ok and r.seconds is not None and r.seconds < 5
            lines.append(
                f"- 1e6 parameters, one wrong entry: found exactly: {r.found}, "
                f"{cell(r.evals, ',')} evaluations, {cell(r.seconds, '.2f')} s "
                f"({'met' if ok else 'NOT met'})"
            )
    return lines


def cpu_seconds() -> tuple[float, float] | None:
    """Return the CPU seconds used so far by the whole machine and by this process (Linux).

    This process's share counts its threads, its reaped children and its live
    descendants with their reaped children: the process pool's workers are
    children of a forkserver process, not of this one.
    """
    tick = os.sysconf("SC_CLK_TCK")
    try:
        with open("/proc/stat", encoding="utf-8") as stat:
            ticks = [int(v) for v in stat.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    busy = (sum(ticks) - ticks[3] - ticks[4]) / tick  # all but idle and iowait
    own = os.times()
    mine = own.user + own.system + own.children_user + own.children_system
    parents: dict[int, tuple[int, float]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="utf-8") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # it ended meanwhile
        # after the name: state, ppid, ..., utime (12th), stime, cutime, cstime
        parents[int(entry)] = (int(fields[1]), sum(int(v) for v in fields[11:15]) / tick)
    ancestors = {os.getpid()}
    changed = True
    while changed:
        changed = False
        for pid, (ppid, _) in parents.items():
            if ppid in ancestors and pid not in ancestors:
                ancestors.add(pid)
                mine += parents[pid][1]
                changed = True
    return busy, mine


def others_since(start: tuple[float, float] | None) -> float | None:
    """CPU seconds that other processes used since `start` (a :func:`cpu_seconds` reading)."""
    end = cpu_seconds()
    if start is None or end is None:
        return None
    return max((end[0] - start[0]) - (end[1] - start[1]), 0.0)


def machine() -> dict[str, str]:
    """Describe the machine and the versions measured with."""
    model = "unknown"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            model = next(
                (line.split(":", 1)[1].strip() for line in info if line.startswith("model name")),
                model,
            )
    except OSError:
        pass
    versions = {"python": platform.python_version(), "numpy": np.__version__}
    versions["gradproof"] = getattr(gradproof, "__version__", "?")
    for module in ("torch", "jax"):
        try:
            versions[module] = __import__(module).__version__
        except ImportError:
            versions[module] = "not installed"
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    return {"cores": str(os.cpu_count()), "cpu": model, "load": load, **versions}


def main() -> None:
    """Measure, print the tables; optionally write the rows as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="no 1e5 network, one repeat: a smoke run of well under a minute",
    )
    parser.add_argument(
        "--cost", action="store_true", help="only the table of what a check costs (issue 15)"
    )
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args()
    repeats = 1 if args.quick else 3
    started = time.perf_counter()
    load_at_start = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    labels = ["1e3", "1e4"] if args.quick else ["1e3", "1e4", "1e5"]
    cases = [assignment_case()] + [
        relu_case(FULL_SIZES[name], name, 1, plant_seed=1) for name in labels
    ]
    large = relu_case(LARGE_SIZES, "1e6", 1, plant_seed=1) if not args.cost else cases[0]
    ten = relu_case(LARGE_SIZES, "1e6", 10, plant_seed=2) if not args.cost else cases[0]
    cpu_at_start = cpu_seconds()
    others: dict[str, float | None] = {}
    rows: list[Row] = []
    if not args.cost:
        reading = cpu_seconds()
        rows += measure_full(cases, repeats)
        others["full"] = others_since(reading)
        reading = cpu_seconds()
        rows += measure_large(large, ten, repeats)
        others["large"] = others_since(reading)
        reading = cpu_seconds()
        rows += measure_side_by_side([*cases, large], repeats)
        others["side"] = others_since(reading)
    reading = cpu_seconds()
    rows += measure_cost(cases[0], cases[2], 3 if args.quick else 5)
    others["cost"] = others_since(reading)
    others["run"] = others_since(cpu_at_start)
    about = machine()
    about["load at start"] = load_at_start
    print(
        f"{about['cores']} cores, {about['cpu']}; Python {about['python']}, "
        f"numpy {about['numpy']}, torch {about['torch']}, jax {about['jax']}, "
        f"gradproof {about['gradproof']}{' (--quick)' if args.quick else ''}; load average "
        f"(1, 5, 15 min) {about['load at start']} at the start, {about['load']} at the end; "
        f"CPU time used by other processes during the run: {cell(others['run'], '.0f')} s\n"
    )
    print(render(rows, others))
    for module, install in (("torch", "pip install torch"), ("jax", "pip install jax jaxlib")):
        if about[module] == "not installed":
            print(f"{module} is not installed: its rows are skipped ({install}).\n")
    if "seconds" in TORCH_OVERHEAD:
        print(
            "The default torch gradcheck's estimates are 2N × (one call of the wrapped function "
            f"+ {TORCH_OVERHEAD['seconds'] * 1e6:.0f} µs, gradcheck's own time per evaluation "
            f"measured at N = {TORCH_OVERHEAD['n']:,.0f}).\n"
        )
    print("Goals:")
    print("\n".join(goals(rows)))
    total = time.perf_counter() - started
    print(f"\nWhole run: {total:.0f} s")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            record = {
                "machine": about,
                "quick": args.quick,
                "seconds": total,
                "rows": [asdict(r) for r in rows],
                "goals": goals(rows),
                "cpu_seconds_of_other_processes": others,
                "torch_gradcheck_overhead_per_evaluation": TORCH_OVERHEAD,
            }
            json.dump(record, out, indent=2)


if __name__ == "__main__":
    main()
