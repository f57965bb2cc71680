"""The questions asked of a function of tensors: reverse mode, forward mode, second order.

Each is a family of terms of the combined loss (Note [Checking a function of
tensors] in the docstring of :mod:`gradproof.torch`).
"""

from __future__ import annotations

import math
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch.autograd import forward_ad
from torch.func import vmap as torch_vmap

from gradproof._words import counted, noun
from gradproof.errors import InputError
from gradproof.torch._convert import (
    _TORCH_TO_NUMPY,
    Array,
    _backward_error,
    _describe_error,
    _materialized,
    _random_like,
    _to_numpy,
    _to_torch,
)
from gradproof.torch._problem import _Outputs, _Problem
from gradproof.torch._run import SlowBatch, _require_close
from gradproof.torch._terms import _CACHE_SIZE, _Family, _key

# torch.autograd.forward_ad is not annotated.
_make_dual: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = forward_ad.make_dual
_unpack_dual: Callable[[torch.Tensor], Any] = forward_ad.unpack_dual


_TRIAL_BATCH = 8
"""Points in the batch timed against single calls (Note [Batching must pay])."""

_SHOWN_ENTRIES = 8
"""Entries of a random cotangent a note shows."""


def _shown_vector(vector: torch.Tensor) -> str:
    """Show a random cotangent's first entries in a note, so that values can be recomputed."""
    values = vector.tolist()
    shown = ", ".join(f"{v:.4g}" for v in values[:_SHOWN_ENTRIES])
    more = f", … ({len(values)} entries, flattened in row-major order)" if len(values) > 8 else ""
    return f"[{shown}{more}]"


def _timed(run: Callable[[], object]) -> float:
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


class _Reverse(_Family):
    """``<u_t, fn(x)>`` for cotangents ``u_t``: random ones, or the Jacobian's unit rows.

    Note [One output at a time]
        A term whose cotangent covers one output (a Jacobian row, or a
        per-output random cotangent) runs the backward of that output alone:
        the others get no gradient at all (undefined), not zeros. That is
        how autograd calls a backward when the other outputs do not reach the
        loss, and how gradcheck builds its analytical Jacobian; a backward
        that mishandles it (``native_group_norm``'s drops the gradient of its
        mean when the normalised output's is undefined) is caught here.
    """

    def __init__(
        self,
        problem: _Problem,
        cotangents: torch.Tensor | None,
        labels: list[tuple[str, str]],
    ) -> None:
        self.problem = problem
        self.cotangents = cotangents  # (terms, output entries), float64; None: the unit rows
        # Per term, the one output its cotangent covers (empty: all outputs at once).
        self.output_of: list[int] = []
        # vmap left to the adapter: batch only where it pays (Note [Batching must pay]).
        self.auto_vmap = True
        self.cache: OrderedDict[bytes, Array] = OrderedDict()
        self.batched_fn: Callable[..., torch.Tensor] | None = None
        base = problem.base_arrays()
        self.aliases, self.display, self.subjects, self.base_points = [], {}, {}, []
        for t, (label, subject) in enumerate(labels):
            blocks: list[str] = []
            for name in problem.names:
                alias = f"gpt{t}r{len(blocks)}"
                self.display[alias] = label.format(input=name)
                self.subjects[alias] = subject.format(input=name)
                blocks.append(alias)
            self.aliases.append(blocks)
            self.base_points.append([a.copy() for a in base])
        self.base_values = [float(v) for v in self._project(problem.bases)]
        self.cache[_key(base)] = np.array(self.base_values)

    @classmethod
    def build(
        cls,
        problem: _Problem,
        *,
        full: bool,
        n_cotangents: int,
        rng: np.random.Generator,
        per_output: bool = False,
        spaced: bool = False,
    ) -> _Reverse:
        """Build the reverse-mode terms: the Jacobian's rows (`full`) or random cotangents.

        `per_output`: with several outputs, one random cotangent per output (so each
        (output, input) pair gets its own verdict) rather than one over all of them.
        `spaced`: rows named ``d out[2, 1] / d x`` rather than ``d output[2, 1]/d x``.
        """
        size = problem.outputs.size
        outputs = problem.outputs
        several = len(outputs.names) > 1
        slash = " / " if spaced else "/"
        if full:
            labels = []
            for name, shape in zip(outputs.names, outputs.shapes, strict=True):
                subject = f"d {name}{slash}d {{input}}" if several else "{input}"
                labels += [
                    ("{input}" if size == 1 else f"d {entry}{slash}d {{input}}", subject)
                    for entry in _Outputs.entries(name, shape)
                ]
            reverse = cls(problem, None, labels)
            reverse.output_of = [k for k, n in enumerate(outputs.sizes) for _ in range(n)]
            reverse.description = (
                "Reverse mode (VJP): the gradient of `fn`"
                if size == 1
                else f"Reverse mode (VJP): the full Jacobian, one output entry at a time ({size} "
                f"entries): `d {problem.stem}[i]{slash}d x` is the gradient of output entry i"
            ) + ", computed by the backward with unit cotangents."
            return reverse
        if per_output and several:
            draws = [_random_like(rng, (size,), problem.device) for _ in range(n_cotangents)]
            rows, labels = [], []
            for k, name in enumerate(outputs.names):
                start, stop = sum(outputs.sizes[:k]), sum(outputs.sizes[: k + 1])
                for c, draw in enumerate(draws):
                    row = torch.zeros_like(draw)
                    row[start:stop] = draw[start:stop]
                    rows.append(row)
                    suffix = f" (cotangent {c + 1})" if c else ""
                    labels.append(
                        (f"d <u, {name}>{slash}d {{input}}{suffix}", f"d {name}{slash}d {{input}}")
                    )
            reverse = cls(problem, torch.stack(rows), labels)
            reverse.output_of = [k for k in range(len(outputs.names)) for _ in draws]
            first = draws[0]
        else:
            labels = [("{input}", "{input}")] + [
                (f"{{input}} (cotangent {k + 1})", "{input}") for k in range(1, n_cotangents)
            ]
            cotangents = torch.stack(
                [_random_like(rng, (size,), problem.device) for _ in range(n_cotangents)]
            )
            reverse = cls(problem, cotangents, labels)
            first = cotangents[0]
        reverse.description = (
            f"Reverse mode (VJP): the gradient of <u, output> for {n_cotangents} random "
            f"{noun(n_cotangents, 'cotangent')} u over the "
            f"{counted(size, 'output entry', 'output entries')} "
            "(entries of random sign and size in [0.5, 1.5)), computed by the backward"
            + (", one per output" if per_output and several else "")
            + "; u = "
            + _shown_vector(first)
            + "."
        )
        return reverse

    def _project(self, inputs: Sequence[torch.Tensor]) -> Array:
        with torch.no_grad():
            return _to_numpy(self._apply(self.problem.flat(self.problem.forward(inputs))))

    def _apply(self, flat: torch.Tensor) -> torch.Tensor:
        """Project the outputs on every term's cotangent (the identity for the Jacobian)."""
        return flat if self.cotangents is None else self.cotangents @ flat

    def _cotangent(self, t: int) -> torch.Tensor:
        if self.cotangents is not None:
            return self.cotangents[t]
        unit = torch.zeros(
            self.problem.outputs.size, dtype=torch.float64, device=self.problem.device
        )
        unit[t] = 1.0
        return unit

    def evaluate(self, requests: list[tuple[int, list[Array]]], batched: bool) -> list[float]:
        keys = [_key(point) for _, point in requests]
        missing: dict[bytes, list[Array]] = {}
        for key, (_, point) in zip(keys, requests, strict=True):
            if key in self.cache:
                self.cache.move_to_end(key)
            else:
                missing[key] = point
        if missing:
            points = list(missing.values())
            if batched and self.batched_fn is not None and len(points) > 1:
                found = self._project_batch(points)
            else:
                found = [self._project(self.problem.tensors(p)) for p in points]
            for key, value in zip(missing, found, strict=True):
                self.cache[key] = value
        values = [float(self.cache[key][t]) for key, (t, _) in zip(keys, requests, strict=True)]
        while len(self.cache) > _CACHE_SIZE:
            self.cache.popitem(last=False)
        return values

    def _project_batch(self, points: list[list[Array]]) -> list[Array]:
        assert self.batched_fn is not None
        stacked = [
            _to_torch(np.stack([p[j] for p in points]), like)
            for j, like in enumerate(self.problem.bases)
        ]
        with torch.no_grad():
            values = _to_numpy(self.batched_fn(*stacked))
        return list(values)

    def batchable(self) -> Callable[[], None]:
        problem = self.problem

        def project(*inputs: torch.Tensor) -> torch.Tensor:
            return self._apply(problem.flat(problem.forward(inputs)))

        def trial() -> None:
            self.batched_fn = torch_vmap(project, randomness="error")
            base = problem.base_arrays()
            try:
                _require_close(
                    np.stack(self._project_batch([base, base])), np.array([self.base_values] * 2)
                )
                if self.auto_vmap:
                    self._require_faster(base)
            except Exception:
                self.batched_fn = None
                raise

        return trial

    def _require_faster(self, base: list[Array]) -> None:
        """Refuse batching where a batch costs more per point than single calls.

        Note [Batching must pay]
            vmap turns the function's operations into batched ones, which are
            not always faster: on the CPU, ``torch.bmm`` of 64 float64 10×10
            matrices takes about 25 times as long as 64 calls of ``torch.mm``.
            One batch of :data:`_TRIAL_BATCH` points is timed against a single
            call (after the trial batch of two, which warms vmap up); batching
            is kept when it is at least twice as fast per point.
        """
        single = _timed(lambda: self._project(self.problem.bases))
        batched = _timed(lambda: self._project_batch([base] * _TRIAL_BATCH))
        if batched / _TRIAL_BATCH > single / 2:
            raise SlowBatch(
                f"a batch through torch.func.vmap took {1e6 * batched / _TRIAL_BATCH:.0f} µs per "
                f"point against {1e6 * single:.0f} µs for a single call, and batching is kept "
                "only where it is twice as fast (pass vmap=True to batch anyway)"
            )

    def gradient(self) -> dict[str, Array]:
        leaves = self.problem.leaves()
        outputs = self.problem.forward(leaves)
        grads: dict[str, Array] = {}
        for t, blocks in enumerate(self.aliases):
            # Copies: a backward that overwrites its grad_output must not change the cotangents.
            cotangent = [c.clone() for c in self.problem.split(self._cotangent(t))]
            k = self.output_of[t] if self.output_of else None
            if k is None:
                vjp = self.problem.vjp(outputs, leaves, cotangent, retain_graph=True)
            else:  # Note [One output at a time]
                vjp = self.problem.vjp([outputs[k]], leaves, [cotangent[k]], retain_graph=True)
            grads.update({alias: _to_numpy(g) for alias, g in zip(blocks, vjp, strict=True)})
        return grads


class _Forward(_Family):
    """``sum_i w_i fn(x + t_i v)_i`` per output, whose gradient is ``w * jvp(fn, x, v)``.

    With `per_input`, one family of terms per input, each moving that input
    alone along its tangent, so that each input gets its own forward-mode
    verdict; otherwise every input moves along its tangent at once.
    """

    section = "Forward mode (JVP)"

    def __init__(
        self,
        problem: _Problem,
        full: bool,
        rng: np.random.Generator,
        per_input: bool = False,
        spaced: bool = False,
    ) -> None:
        self.problem = problem
        self.full = full
        self.tangents = [
            (
                _random_like(rng, tuple(b.shape), problem.device) * b.detach().abs().clamp(min=1.0)
            ).to(b.dtype)
            for b in problem.bases
        ]
        for tangent, mask in zip(self.tangents, problem.frozen, strict=True):
            if mask is not None:  # frozen entries do not move (Note [Frozen entries])
                tangent.masked_fill_(mask, 0)
        sizes = problem.outputs.sizes
        self.weights = [
            torch.ones(n, dtype=torch.float64, device=problem.device)
            if full
            else _random_like(rng, (n,), problem.device)
            for n in sizes
        ]
        self.offsets = np.cumsum([0, *sizes])
        self.cache: OrderedDict[tuple[int | None, float], Array] = OrderedDict()
        dtype = _TORCH_TO_NUMPY[problem.bases[0].dtype]
        outputs = problem.outputs
        self.groups: list[int | None] = list(range(len(problem.names))) if per_input else [None]
        self.terms: list[tuple[int, int | None]] = []
        self.aliases, self.display, self.subjects, self.base_points = [], {}, {}, []
        several = len(outputs.names) > 1
        slash = " / " if spaced else "/"
        for k, (name, shape) in enumerate(zip(outputs.names, outputs.shapes, strict=True)):
            for g in self.groups:
                alias = f"gpt{k}f{'' if g is None else g}"
                self.terms.append((k, g))
                self.aliases.append([alias])
                if g is None:
                    self.display[alias] = f"jvp({name})"
                    self.subjects[alias] = f"jvp({name})"
                else:
                    x = problem.names[g]
                    self.display[alias] = f"jvp(d {name}{slash}d {x})"
                    self.subjects[alias] = f"d {name}{slash}d {x}" if several else x
                self.base_points.append([np.zeros(shape if full else (), dtype=dtype)])
        self.base_values = [self._value(t, points[0]) for t, points in enumerate(self.base_points)]
        self.description = (
            "Forward mode (JVP): `jvp(...)` compares the JVP along a random tangent v "
            "(entries of random sign, size in [0.5, 1.5) × max(1, |x|)) with the "
            "finite-difference slope of "
            + ("each output entry along v" if full else "<w, output> along v, w random")
            + (", one input at a time." if per_input else ".")
        )

    @classmethod
    def build(
        cls,
        problem: _Problem,
        *,
        full: bool,
        rng: np.random.Generator,
        per_input: bool = False,
        spaced: bool = False,
    ) -> _Forward:
        forward = cls(problem, full, rng, per_input, spaced)
        forward._tangents_out(forward.groups[0])  # refuse a function without forward mode first
        return forward

    def _at(self, group: int | None, t: float) -> Array:
        """Per output entry (full) or per output (projected): weighted values at ``x + t v``."""
        key = (group, t)
        if key in self.cache:
            self.cache.move_to_end(key)
            return self.cache[key]
        problem = self.problem
        moved = [
            b + t * v if group is None or j == group else b
            for j, (b, v) in enumerate(zip(problem.bases, self.tangents, strict=True))
        ]
        with torch.no_grad():
            flat = problem.flat(problem.forward(moved)) * torch.cat(self.weights)
        values = _to_numpy(flat)
        if not self.full:
            values = np.add.reduceat(values, self.offsets[:-1]) if values.size else values
        self.cache[key] = values
        while len(self.cache) > _CACHE_SIZE:
            self.cache.popitem(last=False)
        return values

    def _value(self, term: int, steps: Array) -> float:
        k, group = self.terms[term]
        if not self.full:
            return float(self._at(group, float(steps))[k])
        flat = steps.reshape(-1)
        segment = slice(int(self.offsets[k]), int(self.offsets[k + 1]))
        parts = [self._at(group, float(t))[segment][flat == t] for t in np.unique(flat)]
        return math.fsum(np.concatenate(parts).tolist()) if parts else 0.0

    def evaluate(self, requests: list[tuple[int, list[Array]]], batched: bool) -> list[float]:
        return [self._value(t, point[0]) for t, point in requests]

    def _tangents_out(self, group: int | None) -> list[torch.Tensor]:
        problem = self.problem
        try:
            with forward_ad.dual_level(), warnings.catch_warnings():
                # Forward AD loads torch's jvp decompositions through torch.jit.script on
                # first use, which warns about torch's own deprecation.
                warnings.filterwarnings("ignore", "`torch.jit.script`", DeprecationWarning)
                duals = [
                    _make_dual(b.detach(), v) if group is None or j == group else b.detach()
                    for j, (b, v) in enumerate(zip(problem.bases, self.tangents, strict=True))
                ]
                outputs = problem.forward(duals)
                tangents = [_unpack_dual(o).tangent for o in outputs]
        except (RuntimeError, NotImplementedError) as exc:
            raise InputError(
                f"Forward mode failed: {_describe_error(exc)}. A custom Function needs a "
                "`jvp` staticmethod (with `ctx.save_for_forward` in `forward`) for forward "
                "mode; define one, or pass `forward=False` (`check_forward_ad=False` to "
                "gradcheck)."
            ) from exc
        return [
            torch.zeros_like(o) if t is None else _materialized(t).detach()
            for o, t in zip(outputs, tangents, strict=True)
        ]

    def gradient(self) -> dict[str, Array]:
        grads: dict[str, Array] = {}
        tangents = {g: self._tangents_out(g) for g in self.groups}
        for (k, g), blocks in zip(self.terms, self.aliases, strict=True):
            tangent = tangents[g][k]
            weighted = tangent.reshape(-1).to(torch.float64) * self.weights[k]
            value = weighted.reshape(tangent.shape) if self.full else weighted.sum()
            grads[blocks[0]] = _to_numpy(value)
        return grads


class _SecondOrder(_Family):
    """``<w, vjp(x, u)>`` of the inputs and the cotangent, differentiated through the backward."""

    section = "Second order"

    def __init__(
        self,
        problem: _Problem,
        rng: np.random.Generator,
        cotangent: Sequence[torch.Tensor] | None = None,
        non_contiguous: bool = False,
    ) -> None:
        self.problem = problem
        self.non_contiguous = non_contiguous
        drawn = problem.split(_random_like(rng, (problem.outputs.size,), problem.device))
        self.cotangent = drawn if cotangent is None else [c.detach().clone() for c in cotangent]
        self.weights = [
            _random_like(rng, tuple(b.shape), problem.device).to(b.dtype) for b in problem.bases
        ]
        self.cache: OrderedDict[bytes, float] = OrderedDict()
        dtype = _TORCH_TO_NUMPY[problem.bases[0].dtype]
        blocks, self.display, self.subjects = [], {}, {}
        for j, name in enumerate(problem.names):
            blocks.append(f"gpt{j}s")
            self.display[blocks[-1]] = f"{name} (2nd order)"
            self.subjects[blocks[-1]] = name
        for k, name in enumerate(problem.outputs.names):
            blocks.append(f"gpt{k}c")
            self.display[blocks[-1]] = f"cotangent of {name} (2nd order)"
            self.subjects[blocks[-1]] = f"cotangent of {name}"
        self.aliases = [blocks]
        self.n_inputs = len(problem.names)
        self.base_points = [
            [*problem.base_arrays(), *(_to_numpy(c).astype(dtype) for c in self.cotangent)]
        ]
        self.base_values = [self._value(self.base_points[0])]
        self.description = (
            "Second order: `<input> (2nd order)` and `cotangent of <output> (2nd order)` "
            "check the gradient of <w, vjp(x, u)> (w, u random) with respect to the inputs x "
            "and the cotangent u, computed by differentiating the backward "
            "(create_graph=True), as gradgradcheck does."
        )

    @classmethod
    def build(
        cls,
        problem: _Problem,
        *,
        rng: np.random.Generator,
        cotangent: Sequence[torch.Tensor] | None = None,
        non_contiguous: bool = False,
    ) -> _SecondOrder:
        """Build the second-order term; `cotangent` (one per output) is drawn when not given.

        `non_contiguous`: hand the backward non-contiguous cotangents
        (gradgradcheck's ``gen_non_contig_grad_outputs``).
        """
        second = cls(problem, rng, cotangent, non_contiguous)
        inputs = problem.leaves()
        cotangent = [c.detach().clone().requires_grad_(True) for c in second.cotangent]
        vjp = problem.vjp(problem.forward(inputs), inputs, cotangent, create_graph=True)
        if any(g.grad_fn is not None and g.grad_fn.name().endswith("Error") for g in vjp):
            problem.notes.append(
                "The backward is marked `@once_differentiable`: autograd cannot differentiate "
                "it and gives no second-order gradient (None, checked as zeros). Write the "
                "backward with differentiable torch operations to support double backward."
            )
        return second

    def _value(self, point: list[Array]) -> float:
        key = _key(point)
        if key in self.cache:
            return self.cache[key]
        problem = self.problem
        inputs = [t.requires_grad_(True) for t in problem.tensors(point[: self.n_inputs])]
        cotangent = [
            self._laid_out(_to_torch(a, like))
            for a, like in zip(point[self.n_inputs :], self.cotangent, strict=True)
        ]
        vjp = problem.vjp(problem.forward(inputs), inputs, cotangent)
        value = math.fsum(
            float(torch.sum(w.to(torch.float64) * g.detach().to(torch.float64)))
            for w, g in zip(self.weights, vjp, strict=True)
        )
        self.cache[key] = value
        while len(self.cache) > _CACHE_SIZE:
            self.cache.popitem(last=False)
        return value

    def evaluate(self, requests: list[tuple[int, list[Array]]], batched: bool) -> list[float]:
        return [self._value(point) for _, point in requests]

    def _laid_out(self, cotangent: torch.Tensor) -> torch.Tensor:
        """Lay the cotangent out as the backward gets it: non-contiguous when asked for."""
        if not self.non_contiguous or cotangent.numel() < 2:
            return cotangent
        # Every other entry of a tensor twice as long: same values, strides that skip.
        return torch.stack([cotangent, torch.zeros_like(cotangent)], dim=-1)[..., 0]

    def gradient(self) -> dict[str, Array]:
        problem = self.problem
        inputs = problem.leaves()
        cotangent = [c.detach().clone().requires_grad_(True) for c in self.cotangent]
        laid_out = [self._laid_out(c) for c in cotangent]
        vjp = problem.vjp(problem.forward(inputs), inputs, laid_out, create_graph=True)
        total = sum(torch.sum(w * g) for w, g in zip(self.weights, vjp, strict=True))
        wrt = [*inputs, *cotangent]
        if not isinstance(total, torch.Tensor) or not total.requires_grad:
            grads: list[torch.Tensor] = [torch.zeros_like(x) for x in wrt]
        else:
            names = [*problem.names, *problem.outputs.names]
            problem.n_backward += 1
            try:
                found = torch.autograd.grad(total, wrt, allow_unused=True)
            except RuntimeError as exc:
                raise _backward_error(exc, names, second_order=True) from exc
            grads = [
                torch.zeros_like(x) if g is None else g for g, x in zip(found, wrt, strict=True)
            ]
        return {alias: _to_numpy(g) for alias, g in zip(self.aliases[0], grads, strict=True)}
