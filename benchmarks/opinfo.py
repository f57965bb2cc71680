"""Run PyTorch's own operator suite through torch.autograd.gradcheck and gradproof.torch.gradcheck.

Every OpInfo of ``torch.testing._internal.common_methods_invocations.op_db`` that supports
autograd in float64 on the CPU gives its samples (``op.sample_inputs("cpu", torch.float64,
requires_grad=True)``), and each sample becomes a function of the tensors that require grad
exactly as PyTorch's own gradient tests build it (``TestCase._check_helper``: the inputs
recomposed into the sample's positional and keyword arguments, ``op.gradcheck_wrapper``, and
``sample.output_process_fn_grad``). Both checkers then run on it with the flags PyTorch's
``test_fn_grad`` passes (``check_grad_dtypes=True``, ``check_undefined_grad=True``,
``nondet_tol=op.gradcheck_nondet_tol``, ``fast_mode=op.gradcheck_fast_mode``), except
``check_batched_grad``, which is off: it tests vmap's batching rules, not the gradient.

The script prints the samples checked, agreements, each disagreement with its reason, errors
by cause, and gradproof's time as a multiple of gradcheck's (median per sample, for samples
with fewer than 10 input entries and overall, and the ratio of the totals). Each call has a
time limit; a call that runs over it counts as a timeout.

The planted-bug pass wraps one input of one sample per op (for up to ``--planted-ops`` ops)
in an identity Function whose backward is wrong, and asks both checkers about it:

- ``scale``: the input's VJP times 1.01;
- ``entry``: entry 0 of the VJP off by 10% of its largest entry;
- ``sign``: the VJP's sign flipped;
- ``swap``: the VJPs of two inputs of the same shape exchanged.

It prints how often each checker caught each bug, and how often gradproof localised it
exactly: every wrong report is about the planted input(s) and, for ``entry``, every wrong
entry is entry 0.

Run all (about an hour on one core):   python benchmarks/opinfo.py
A quick sample:                         python benchmarks/opinfo.py --ops 40 --samples 3
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import itertools
import math
import re
import signal
import statistics
import sys
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch.autograd.gradcheck import GradcheckError

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import gradproof.torch as gradproof_torch
from gradproof.torch._prepare import _argument_names

SMALL = 10
"""Samples with fewer input entries than this are 'small' (the timing goal is 1.5x there)."""


@dataclasses.dataclass
class Sample:
    """One OpInfo sample as a function of its tensors that require grad."""

    op: str
    index: int
    fn: Callable[..., Any]
    inputs: tuple[torch.Tensor, ...]
    flags: dict[str, Any]

    @property
    def label(self) -> str:
        """The op and the sample's index: ``sin#3``."""
        return f"{self.op}#{self.index}"

    @property
    def n_entries(self) -> int:
        """Entries of the checked inputs."""
        return sum(t.numel() for t in self.inputs)


@dataclasses.dataclass
class Outcome:
    """What one checker said about one sample."""

    status: str  # "pass", "fail", "error" or "timeout"
    seconds: float
    message: str = ""
    error: BaseException | None = None
    warned: bool = False


# -- building the samples as PyTorch's tests do ---------------------------------------------------
def grad_ops(names: list[str] | None = None) -> list[Any]:
    """Return the OpInfos with autograd in float64 on the CPU (those named, if given)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from torch.testing._internal.common_methods_invocations import op_db
    ops = [
        op
        for op in op_db
        if op.supports_autograd and torch.float64 in op.supported_backward_dtypes("cpu")  # type: ignore[no-untyped-call]
    ]
    if names:
        wanted = set(names)
        ops = [op for op in ops if full_name(op) in wanted]
    return ops


def full_name(op: Any) -> str:
    """Return the op's name with its variant: ``softmax.with_dtype``."""
    name: str = op.name + (f".{op.variant_test_name}" if op.variant_test_name else "")
    return name


def _requires_grad(x: Any) -> bool:
    return isinstance(x, torch.Tensor) and x.requires_grad


def _is_tensor_list(x: Any) -> bool:
    return (
        isinstance(x, (list, tuple)) and len(x) > 0 and all(isinstance(t, torch.Tensor) for t in x)
    )


def samples_of(op: Any, limit: int | None = None) -> Iterator[Sample]:
    """Yield the op's float64 CPU samples, as PyTorch's ``_check_helper`` builds them."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        raw = list(op.sample_inputs("cpu", torch.float64, requires_grad=True))
    variant = op.get_op()
    for index, sample in enumerate(raw[:limit]):
        if _is_tensor_list(sample.input):
            everything = itertools.chain(sample.input, sample.args, sample.kwargs.values())
        else:
            everything = itertools.chain((sample.input,), sample.args, sample.kwargs.values())
        inputs = tuple(x for x in everything if _requires_grad(x))
        if not inputs:
            continue
        yield Sample(
            op=full_name(op),
            index=index,
            fn=_recomposed(op, variant, sample),
            inputs=inputs,
            flags={
                "check_grad_dtypes": True,
                "check_undefined_grad": True,
                "check_batched_grad": False,
                "nondet_tol": op.gradcheck_nondet_tol,
                "fast_mode": bool(op.gradcheck_fast_mode),
            },
        )


def _recomposed(op: Any, variant: Any, sample: Any) -> Callable[..., Any]:
    """Put the checked tensors back into the sample's arguments and call the op."""

    def put_back(inputs: tuple[torch.Tensor, ...], value: Any, at: int) -> tuple[Any, int]:
        if _is_tensor_list(value):
            rebuilt = []
            for x in value:
                if _requires_grad(x):
                    rebuilt.append(inputs[at])
                    at += 1
                else:
                    rebuilt.append(x)
            return rebuilt, at
        if _requires_grad(value):
            return inputs[at], at + 1
        return value, at

    def fn(*inputs: torch.Tensor) -> Any:
        at = 0
        positional = []
        value, at = put_back(inputs, sample.input, at)
        positional.append(value)
        for arg in sample.args:
            value, at = put_back(inputs, arg, at)
            positional.append(value)
        keywords = {}
        for key, arg in sample.kwargs.items():
            keywords[key], at = put_back(inputs, arg, at)
        output = op.gradcheck_wrapper(variant, *positional, **keywords)
        if sample.output_process_fn_grad is not None:
            return sample.output_process_fn_grad(output)
        return output

    return fn


# -- running one checker with a time limit --------------------------------------------------------
class _Timeout(Exception):
    pass


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Interrupt the block after `seconds` (between Python bytecodes, so torch kernels finish)."""

    def expire(signum: int, frame: Any) -> None:
        raise _Timeout

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def run_one(check: Callable[..., bool], sample: Sample, limit: float, **flags: Any) -> Outcome:
    """Run `check(fn, inputs, **flags)` within `limit` seconds and say what it found."""
    started = time.perf_counter()
    warned = False
    error: BaseException | None
    try:
        with time_limit(limit), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            passed = check(sample.fn, sample.inputs, **{**sample.flags, **flags})
        warned = any("could not judge" in str(w.message) for w in caught)
        status, message, error = ("pass" if passed else "fail"), "", None
    except _Timeout:
        status, message, error = "timeout", f"over the {limit:g} s limit", None
    except GradcheckError as exc:
        status, message, error = "fail", str(exc), exc
    except Exception as exc:
        status, message, error = "error", f"{type(exc).__name__}: {exc}", exc
    return Outcome(status, time.perf_counter() - started, message, error, warned)


def first_line(text: str, width: int = 150) -> str:
    """Return the first line of `text`, cut to `width` characters."""
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= width else line[: width - 1] + "…"


def cause(outcome: Outcome) -> str:
    """Name an error's cause, with numbers masked so that like errors group."""
    error = outcome.error
    if error is not None and error.__cause__ is not None:
        error = error.__cause__
    text = f"{type(error).__name__}: {first_line(str(error), 90)}" if error else outcome.message
    return re.sub(r"\d+", "N", text)


# -- the side-by-side pass ------------------------------------------------------------------------
@dataclasses.dataclass
class Comparison:
    """Both checkers' outcomes on one sample."""

    sample: Sample
    torch: Outcome
    gradproof: Outcome


def compare(samples: list[Sample], limit: float, progress: bool = True) -> list[Comparison]:
    """Run gradcheck, then gradproof, on every sample."""
    rows = []
    for i, sample in enumerate(samples):
        torch_outcome = run_one(torch.autograd.gradcheck, sample, limit)
        ours = run_one(gradproof_torch.gradcheck, sample, limit)
        rows.append(Comparison(sample, torch_outcome, ours))
        if progress and (i + 1) % 50 == 0:
            print(f"  ... {i + 1} of {len(samples)} samples", file=sys.stderr)
    return rows


def summarize(rows: list[Comparison]) -> dict[str, Any]:
    """Count agreements, disagreements, errors by cause and time ratios (a dict for the test)."""
    handled = [r for r in rows if r.torch.status in ("pass", "fail")]
    agree = [r for r in handled if r.torch.status == r.gradproof.status]
    false_alarms = [r for r in handled if r.torch.status == "pass" and r.gradproof.status == "fail"]
    missed = [r for r in handled if r.torch.status == "fail" and r.gradproof.status == "pass"]
    our_errors = [r for r in handled if r.gradproof.status in ("error", "timeout")]
    timed = [r for r in handled if r.gradproof.status in ("pass", "fail") and r.torch.seconds > 0]
    ratios = [r.gradproof.seconds / r.torch.seconds for r in timed]
    small = [r.gradproof.seconds / r.torch.seconds for r in timed if r.sample.n_entries < SMALL]
    return {
        "samples": len(rows),
        "handled": len(handled),
        "torch_errors": Counter(cause(r.torch) for r in rows if r.torch.status == "error"),
        "torch_timeouts": sum(r.torch.status == "timeout" for r in rows),
        "agree": len(agree),
        "both_fail": sum(r.torch.status == "fail" for r in agree),
        "false_alarms": false_alarms,
        "missed": missed,
        "errors": Counter(cause(r.gradproof) for r in our_errors),
        "error_rows": our_errors,
        "warned": [r.sample.label for r in rows if r.gradproof.warned],
        "median_ratio": statistics.median(ratios) if ratios else math.nan,
        "median_ratio_small": statistics.median(small) if small else math.nan,
        "n_small": len(small),
        "total_ratio": (
            sum(r.gradproof.seconds for r in timed) / sum(r.torch.seconds for r in timed)
            if timed
            else math.nan
        ),
    }


def print_summary(summary: dict[str, Any]) -> None:
    """Print what :func:`summarize` found."""
    print(f"Samples: {summary['samples']} ({summary['handled']} that gradcheck handles)")
    print(
        f"Agreements: {summary['agree']} of {summary['handled']} "
        f"(both fail: {summary['both_fail']})"
    )
    print(f"gradproof false alarms (gradcheck passes): {len(summary['false_alarms'])}")
    for row in summary["false_alarms"]:
        print(f"  - {row.sample.label}: {first_line(row.gradproof.message)}")
    print(f"gradproof passes where gradcheck fails: {len(summary['missed'])}")
    for row in summary["missed"]:
        print(f"  - {row.sample.label}: gradcheck: {first_line(row.torch.message)}")
    print(
        f"gradproof errors or timeouts on samples gradcheck handles: {len(summary['error_rows'])}"
    )
    for text, count in summary["errors"].most_common():
        print(f"  - {count} × {text}")
    for row in summary["error_rows"][:20]:
        print(f"    e.g. {row.sample.label}")
    if summary["torch_errors"] or summary["torch_timeouts"]:
        print(
            f"gradcheck errors: {sum(summary['torch_errors'].values())}, timeouts: "
            f"{summary['torch_timeouts']} (not compared)"
        )
        for text, count in summary["torch_errors"].most_common(10):
            print(f"  - {count} × {text}")
    warned = summary["warned"]
    print(f"Samples with entries gradproof could not judge (passed with a warning): {len(warned)}")
    if warned:
        print(f"  {', '.join(warned[:30])}{' …' if len(warned) > 30 else ''}")
    print(
        f"Time, gradproof / gradcheck: median {summary['median_ratio']:.2f}× over all "
        f"samples, {summary['median_ratio_small']:.2f}× over the {summary['n_small']} with "
        f"fewer than {SMALL} input entries; totals {summary['total_ratio']:.2f}×"
    )


# -- the planted-bug pass -------------------------------------------------------------------------
BUGS = ("scale", "entry", "sign", "swap")


def _planted(kind: str, count: int) -> Any:
    """Make an identity Function of `count` tensors whose backward carries the bug `kind`."""

    class Planted(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, *xs: torch.Tensor) -> Any:
            return tuple(x.view_as(x) for x in xs) if count > 1 else xs[0].view_as(xs[0])

        @staticmethod
        def backward(ctx: Any, *grads: torch.Tensor) -> Any:
            if kind == "scale":
                return grads[0] * 1.01
            if kind == "sign":
                return -grads[0]
            if kind == "entry":
                grad = grads[0].contiguous().clone()
                flat = grad.view(-1)
                flat[0] = flat[0] + 0.1 * flat.abs().max()
                return grad
            return grads[1], grads[0]  # swap

    return Planted


def plant(sample: Sample, kind: str) -> tuple[Sample, set[int]] | None:
    """Plant a bug in the backward of the sample's first input (two for 'swap')."""
    if kind == "swap":
        shapes = [tuple(t.shape) for t in sample.inputs]
        pair = next(
            (
                (i, j)
                for i in range(len(shapes))
                for j in range(i + 1, len(shapes))
                if shapes[i] == shapes[j] and sample.inputs[i].numel() > 0
            ),
            None,
        )
        if pair is None:
            return None
        targets = list(pair)
    else:
        first = next((i for i, t in enumerate(sample.inputs) if t.numel() > 0), None)
        if first is None:
            return None
        targets = [first]
    if not _moves(sample, targets):
        return None  # a zero VJP (e.g. sgn's): scaling or flipping it plants no bug
    function = _planted(kind, len(targets))

    def fn(*inputs: torch.Tensor) -> Any:
        moved = function.apply(*(inputs[i] for i in targets))
        moved = moved if isinstance(moved, tuple) else (moved,)
        replaced = list(inputs)
        for i, value in zip(targets, moved, strict=True):
            replaced[i] = value
        return sample.fn(*replaced)

    return dataclasses.replace(sample, fn=fn), set(targets)


def _moves(sample: Sample, targets: list[int]) -> bool:
    """Whether the VJP of the targets along a random cotangent is nonzero at the sample."""
    leaves = [t.detach().clone().requires_grad_(True) for t in sample.inputs]
    outputs = sample.fn(*leaves)
    outputs = [
        o
        for o in (outputs if isinstance(outputs, (tuple, list)) else (outputs,))
        if isinstance(o, torch.Tensor) and o.requires_grad
    ]
    if not outputs:
        return False
    generator = torch.Generator().manual_seed(0)
    total = sum(
        (o * torch.rand(o.shape, generator=generator, dtype=torch.float64).to(o.dtype)).sum()
        for o in outputs
        if not o.is_complex()
    )
    if not isinstance(total, torch.Tensor):
        return False
    grads = torch.autograd.grad(total, [leaves[i] for i in targets], allow_unused=True)
    return any(g is not None and bool(g.ne(0).any()) for g in grads)


def _localised(outcome: Outcome, sample: Sample, targets: set[int], kind: str) -> bool:
    """Whether gradproof's wrong reports are about the planted inputs alone (and entry 0)."""
    result = getattr(outcome.error, "result", None)
    if result is None:
        return False
    names = _argument_names(sample.fn, len(sample.inputs))
    planted = {names[i] for i in targets}
    failing = [p for p in result.params if p.verdict.value == "fail"]
    subjects = {p.subject_name.rsplit(" / d ", 1)[-1] for p in failing}
    if not failing or not subjects <= planted:
        return False
    if kind == "entry":
        return all(not any(e.index) for p in failing for e in p.failures)
    return True


def planted_pass(
    ops: list[Any], limit: float, n_ops: int
) -> tuple[dict[str, Counter[str]], list[str]]:
    """Plant each bug in one sample per op (the first that gradcheck passes).

    Returns the counts per bug, and a line per bug gradproof missed or did not localise.
    """
    counts: dict[str, Counter[str]] = {kind: Counter() for kind in BUGS}
    misses: list[str] = []
    for op in ops[:n_ops]:
        sample = next(
            (
                s
                for s in samples_of(op, 4)
                if run_one(torch.autograd.gradcheck, s, limit).status == "pass"
            ),
            None,
        )
        if sample is None:
            continue
        for kind in BUGS:
            planted = plant(sample, kind)
            if planted is None:
                continue
            buggy, targets = planted
            theirs = run_one(torch.autograd.gradcheck, buggy, limit)
            ours = run_one(gradproof_torch.gradcheck, buggy, limit)
            counts[kind]["planted"] += 1
            counts[kind]["gradcheck caught"] += theirs.status == "fail"
            counts[kind]["gradproof caught"] += ours.status == "fail"
            localised = ours.status == "fail" and _localised(ours, buggy, targets, kind)
            counts[kind]["gradproof localised"] += localised
            if not localised:
                misses.append(
                    f"{buggy.label} {kind}: gradcheck {theirs.status}, gradproof {ours.status}"
                    + (f" ({first_line(ours.message, 110)})" if ours.message else "")
                )
            counts[kind]["only gradcheck caught"] += (
                theirs.status == "fail" and ours.status != "fail"
            )
            counts[kind]["gradproof errors"] += ours.status in ("error", "timeout")
    return counts, misses


def print_planted(counts: dict[str, Counter[str]], misses: list[str]) -> None:
    """Print what :func:`planted_pass` found."""
    print("Planted bugs: planted / gradcheck caught / gradproof caught / localised exactly")
    for kind, count in counts.items():
        print(
            f"  {kind:6s} {count['planted']:4d} {count['gradcheck caught']:4d} "
            f"{count['gradproof caught']:4d} {count['gradproof localised']:4d}"
            + (
                f"  (only gradcheck caught {count['only gradcheck caught']})"
                if count["only gradcheck caught"]
                else ""
            )
            + (
                f"  (gradproof errors {count['gradproof errors']})"
                if count["gradproof errors"]
                else ""
            )
        )
    for line in misses:
        print(f"  - not caught or not localised: {line}")


def main(argv: list[str] | None = None) -> None:
    """Run the side-by-side pass and the planted-bug pass on the ops chosen."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=None, help="the first N ops only")
    parser.add_argument("--every", type=int, default=1, help="every k-th op only")
    parser.add_argument("--op", action="append", help="this op only (repeatable)")
    parser.add_argument("--samples", type=int, default=None, help="samples per op (default all)")
    parser.add_argument("--limit", type=float, default=30.0, help="seconds per call")
    parser.add_argument("--planted-ops", type=int, default=60, help="ops in the planted pass")
    parser.add_argument("--no-planted", action="store_true", help="skip the planted pass")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # tiny tensors: threads only add overhead on a shared machine
    ops = grad_ops(args.op)[:: args.every][: args.ops]
    samples = [s for op in ops for s in samples_of(op, args.samples)]
    started = time.perf_counter()
    rows = compare(samples, args.limit)
    print(f"OpInfo ops: {len(ops)}")
    print_summary(summarize(rows))
    if not args.no_planted:
        chosen = ops[:: max(1, len(ops) // args.planted_ops)]
        print_planted(*planted_pass(chosen, args.limit, args.planted_ops))
    print(f"Wall time: {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
