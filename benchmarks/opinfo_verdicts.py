"""Run gradproof over PyTorch's own operator samples (OpInfo, float64): false alarms and kinks.

Every operator of ``torch.testing._internal.common_methods_invocations.op_db`` that supports
float64 autograd is checked on its first sample inputs: the loss is ``sum(w * op(*inputs))``
over its floating outputs with fixed random weights ``w``, the parameters are the sample's
floating tensor arguments, and the "hand-written" gradient is torch's autograd. Autograd is
taken as right, so a WRONG verdict is a false alarm unless the operator is not differentiable
at the sample (a jump, an integer output); an inconclusive entry is tallied with its reason.

Needs ``torch`` and ``expecttest`` (``pip install expecttest`` makes op_db importable).

Run:  python benchmarks/opinfo_verdicts.py [--limit N] [--samples K] [--max-size M] [--json PATH]
"""

from __future__ import annotations

import argparse
import collections
import json
import time
import warnings
from typing import Any

import numpy as np

import gradproof

_SKIPPED = frozenset(
    {
        "bfloat16",
        "half",  # convert to a low precision: autograd's 1 is not the rounded loss's slope
        "normal",
        "bernoulli",
        "rand_like",
        "randn_like",
        "randint_like",  # random outputs
        "_batch_norm_with_update",  # update their running statistics in place at every call
        "native_batch_norm",
        "_native_batch_norm_legit",
        "as_strided_scatter",  # overlapping memory: autograd documents its gradient as undefined
        "nn.functional.max_unpool1d",
        "nn.functional.max_unpool2d",
        "nn.functional.max_unpool3d",
        # ^ repeated indices in the samples: PyTorch skips gradcheck for them too
    }
)
"""Operators whose loss is not a fixed function of their inputs."""


def _cases(limit: int | None, samples: int, max_size: int) -> list[tuple[str, Any, Any]]:
    import torch
    from torch.testing._internal.common_methods_invocations import op_db

    found: list[tuple[str, Any, Any]] = []
    for op in op_db[:limit]:
        if not op.supports_autograd or torch.float64 not in op.supported_backward_dtypes("cpu"):
            continue
        if op.name in _SKIPPED:
            continue
        try:
            inputs = list(op.sample_inputs("cpu", torch.float64, requires_grad=True))
        except Exception:
            continue
        kept = 0
        for s in inputs:
            tensors = [s.input, *s.args]
            if not all(isinstance(t, torch.Tensor) for t in tensors[:1]):
                continue
            size = sum(t.numel() for t in tensors if isinstance(t, torch.Tensor))
            if size > max_size:
                continue
            found.append(
                (
                    f"{op.name}{'.' + op.variant_test_name if op.variant_test_name else ''}#{kept}",
                    op,
                    s,
                )
            )
            kept += 1
            if kept >= samples:
                break
    return found


def _check(op: Any, s: Any) -> tuple[str, list[str], int] | None:
    import torch

    leaves = [s.input, *s.args]
    grads_wanted = [
        i
        for i, t in enumerate(leaves)
        if isinstance(t, torch.Tensor) and t.dtype == torch.float64 and t.requires_grad
    ]
    if not grads_wanted:
        return None
    base = [t.detach().clone() if isinstance(t, torch.Tensor) else t for t in leaves]

    def forward(tensors: dict[str, Any]) -> Any:
        args = list(base)
        for i in grads_wanted:
            args[i] = tensors[f"t{i}"]
        # The operator's own gradcheck wrapper (e.g. symmetrising a Hermitian input) and output
        # processing, as PyTorch's gradcheck tests use them.
        out = s.output_process_fn_grad(op.gradcheck_wrapper(op.get_op(), *args, **s.kwargs))
        outs = out if isinstance(out, (tuple, list)) else (out,)
        floating = [o for o in outs if isinstance(o, torch.Tensor) and o.is_floating_point()]
        # native_layer_norm & co. also return saved statistics that autograd does not
        # differentiate through: only their first output is the operator's value.
        return floating[:1] if op.name.startswith(("native_", "_native")) else floating

    with torch.no_grad():
        probe = forward({f"t{i}": base[i] for i in grads_wanted})
    rng = np.random.default_rng(0)
    weights = [torch.from_numpy(rng.normal(size=tuple(o.shape))) for o in probe]
    if not weights:
        return None

    def loss(p: dict[str, np.ndarray]) -> float:
        with torch.no_grad():
            outs = forward({k: torch.from_numpy(np.array(v)) for k, v in p.items()})
            return float(sum((w * o).sum() for w, o in zip(weights, outs, strict=True)))

    def grad(p: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        ts = {k: torch.from_numpy(np.array(v)).requires_grad_(True) for k, v in p.items()}
        outs = forward(ts)
        total = sum((w * o).sum() for w, o in zip(weights, outs, strict=True))
        got = torch.autograd.grad(total, list(ts.values()), allow_unused=True)
        return {
            k: (np.zeros_like(p[k]) if g is None else g.detach().numpy().copy())
            for k, g in zip(ts, got, strict=True)
        }

    params = {f"t{i}": base[i].numpy().copy() for i in grads_wanted}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = gradproof.check(loss, grad, params, mode="full", progress=False)
    reasons = sorted({e.reason for p in r.params for e in p.inconclusive_entries})
    return r.verdict.value, reasons, r.n_evals


def main() -> None:
    """Print the tallies; optionally write every verdict as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=None, help="only the first N operators")
    parser.add_argument("--samples", type=int, default=1, help="samples per operator")
    parser.add_argument("--max-size", type=int, default=60, help="largest total input size")
    parser.add_argument("--json", help="write every verdict to this file")
    args = parser.parse_args()
    started = time.perf_counter()
    verdicts: dict[str, Any] = {}
    for name, op, s in _cases(args.limit, args.samples, args.max_size):
        try:
            found = _check(op, s)
        except Exception as exc:
            verdicts[name] = ["error", [type(exc).__name__], 0]
            continue
        if found is not None:
            verdicts[name] = [found[0], found[1], found[2]]
    tally = collections.Counter(v[0] for v in verdicts.values())
    reasons = collections.Counter(r for v in verdicts.values() if v[0] != "error" for r in v[1])
    print(f"{len(verdicts)} samples in {time.perf_counter() - started:.0f} s: {dict(tally)}")
    print(f"inconclusive reasons: {dict(reasons)} (errors: samples the harness cannot run)")
    print(f"evaluations: {sum(v[2] for v in verdicts.values())}")
    for name, v in sorted(verdicts.items()):
        if v[0] in ("fail", "inconclusive"):
            print(f"  {v[0]:12s} {name} {v[1]}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump(verdicts, out, indent=0)


if __name__ == "__main__":
    main()
