"""The questions asked of a function of tensors: reverse mode, forward mode, second order.

Each is a family of terms of the combined loss (Note [Checking a function of
tensors] in the docstring of :mod:`gradproof.torch`).
"""

from __future__ import annotations

import math
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
    _random_like,
    _to_numpy,
    _to_torch,
)
from gradproof.torch._problem import _Problem
from gradproof.torch._run import _require_close
from gradproof.torch._terms import _CACHE_SIZE, _Family, _key

# torch.autograd.forward_ad is not annotated.
_make_dual: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = forward_ad.make_dual
_unpack_dual: Callable[[torch.Tensor], Any] = forward_ad.unpack_dual


class _Reverse(_Family):
    """``<u_t, fn(x)>`` for cotangents ``u_t``: random ones, or the Jacobian's unit rows."""

    def __init__(
        self, problem: _Problem, cotangents: torch.Tensor | None, labels: list[str]
    ) -> None:
        self.problem = problem
        self.cotangents = cotangents  # (terms, output entries), float64; None: the unit rows
        self.cache: OrderedDict[bytes, Array] = OrderedDict()
        self.batched_fn: Callable[..., torch.Tensor] | None = None
        base = problem.base_arrays()
        self.aliases, self.display, self.base_points = [], {}, []
        for t, label in enumerate(labels):
            blocks: list[str] = []
            for name in problem.names:
                alias = f"gpt{t}r{len(blocks)}"
                self.display[alias] = label.format(input=name)
                blocks.append(alias)
            self.aliases.append(blocks)
            self.base_points.append([a.copy() for a in base])
        self.base_values = [float(v) for v in self._project(problem.bases)]
        self.cache[_key(base)] = np.array(self.base_values)

    @classmethod
    def build(
        cls, problem: _Problem, *, full: bool, n_cotangents: int, rng: np.random.Generator
    ) -> _Reverse:
        size = problem.outputs.size
        if full:
            entries = problem.outputs.entry_names()
            labels = ["{input}"] if size == 1 else [f"d {e}/d {{input}}" for e in entries]
            reverse = cls(problem, None, labels)
            reverse.description = (
                "Reverse mode (VJP): the gradient of `fn`"
                if size == 1
                else f"Reverse mode (VJP): the full Jacobian, one output entry at a time ({size} "
                "entries): `d output[i]/d x` is the gradient of output entry i"
            ) + ", computed by the backward with unit cotangents."
            return reverse
        labels = ["{input}"] + [f"{{input}} (cotangent {k + 1})" for k in range(1, n_cotangents)]
        cotangents = torch.stack(
            [_random_like(rng, (size,), problem.device) for _ in range(n_cotangents)]
        )
        reverse = cls(problem, cotangents, labels)
        reverse.description = (
            f"Reverse mode (VJP): the gradient of <u, output> for {n_cotangents} random "
            f"{noun(n_cotangents, 'cotangent')} u over the "
            f"{counted(size, 'output entry', 'output entries')} "
            "(entries of random sign and size in [0.5, 1.5)), computed by the backward."
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
            except Exception:
                self.batched_fn = None
                raise

        return trial

    def gradient(self) -> dict[str, Array]:
        leaves = self.problem.leaves()
        outputs = self.problem.forward(leaves)
        grads: dict[str, Array] = {}
        for t, blocks in enumerate(self.aliases):
            # Copies: a backward that overwrites its grad_output must not change the cotangents.
            cotangent = [c.clone() for c in self.problem.split(self._cotangent(t))]
            vjp = self.problem.vjp(outputs, leaves, cotangent, retain_graph=True)
            grads.update({alias: _to_numpy(g) for alias, g in zip(blocks, vjp, strict=True)})
        return grads


class _Forward(_Family):
    """``sum_i w_i fn(x + t_i v)_i`` per output, whose gradient is ``w * jvp(fn, x, v)``."""

    def __init__(self, problem: _Problem, full: bool, rng: np.random.Generator) -> None:
        self.problem = problem
        self.full = full
        self.tangents = [
            (
                _random_like(rng, tuple(b.shape), problem.device) * b.detach().abs().clamp(min=1.0)
            ).to(b.dtype)
            for b in problem.bases
        ]
        sizes = problem.outputs.sizes
        self.weights = [
            torch.ones(n, dtype=torch.float64, device=problem.device)
            if full
            else _random_like(rng, (n,), problem.device)
            for n in sizes
        ]
        self.offsets = np.cumsum([0, *sizes])
        self.cache: OrderedDict[float, Array] = OrderedDict()
        dtype = _TORCH_TO_NUMPY[problem.bases[0].dtype]
        self.aliases, self.display, self.base_points = [], {}, []
        for k, (name, shape) in enumerate(
            zip(problem.outputs.names, problem.outputs.shapes, strict=True)
        ):
            alias = f"gpt{k}f"
            self.aliases.append([alias])
            self.display[alias] = f"jvp({name})"
            self.base_points.append([np.zeros(shape if full else (), dtype=dtype)])
        self.base_values = [self._value(k, points[0]) for k, points in enumerate(self.base_points)]
        self.description = (
            "Forward mode (JVP): `jvp(output)` compares the JVP along a random tangent v "
            "(entries of random sign, size in [0.5, 1.5) × max(1, |x|)) with the "
            "finite-difference slope of "
            + ("each output entry along v." if full else "<w, output> along v, w random.")
        )

    @classmethod
    def build(cls, problem: _Problem, *, full: bool, rng: np.random.Generator) -> _Forward:
        forward = cls(problem, full, rng)
        forward._tangents_out()  # refuse a function without forward mode before any work
        return forward

    def _at(self, t: float) -> Array:
        """Per output entry (full) or per output (projected): weighted values at ``x + t v``."""
        if t in self.cache:
            self.cache.move_to_end(t)
            return self.cache[t]
        problem = self.problem
        moved = [b + t * v for b, v in zip(problem.bases, self.tangents, strict=True)]
        with torch.no_grad():
            flat = problem.flat(problem.forward(moved)) * torch.cat(self.weights)
        values = _to_numpy(flat)
        if not self.full:
            values = np.add.reduceat(values, self.offsets[:-1]) if values.size else values
        self.cache[t] = values
        while len(self.cache) > _CACHE_SIZE:
            self.cache.popitem(last=False)
        return values

    def _value(self, k: int, steps: Array) -> float:
        if not self.full:
            return float(self._at(float(steps))[k])
        flat = steps.reshape(-1)
        segment = slice(int(self.offsets[k]), int(self.offsets[k + 1]))
        parts = [self._at(float(t))[segment][flat == t] for t in np.unique(flat)]
        return math.fsum(np.concatenate(parts).tolist()) if parts else 0.0

    def evaluate(self, requests: list[tuple[int, list[Array]]], batched: bool) -> list[float]:
        return [self._value(k, point[0]) for k, point in requests]

    def _tangents_out(self) -> list[torch.Tensor]:
        problem = self.problem
        try:
            with forward_ad.dual_level(), warnings.catch_warnings():
                # Forward AD loads torch's jvp decompositions through torch.jit.script on
                # first use, which warns about torch's own deprecation.
                warnings.filterwarnings("ignore", "`torch.jit.script`", DeprecationWarning)
                duals = [
                    _make_dual(b.detach(), v)
                    for b, v in zip(problem.bases, self.tangents, strict=True)
                ]
                outputs = problem.forward(duals)
                tangents = [_unpack_dual(o).tangent for o in outputs]
        except (RuntimeError, NotImplementedError) as exc:
            raise InputError(
                f"Forward mode failed: {_describe_error(exc)}. A custom Function needs a "
                "`jvp` staticmethod (with `ctx.save_for_forward` in `forward`) for forward "
                "mode; define one, or pass `forward=False`."
            ) from exc
        return [
            torch.zeros_like(o) if t is None else t.detach()
            for o, t in zip(outputs, tangents, strict=True)
        ]

    def gradient(self) -> dict[str, Array]:
        grads: dict[str, Array] = {}
        for k, (blocks, tangent) in enumerate(zip(self.aliases, self._tangents_out(), strict=True)):
            weighted = tangent.reshape(-1).to(torch.float64) * self.weights[k]
            value = weighted.reshape(tangent.shape) if self.full else weighted.sum()
            grads[blocks[0]] = _to_numpy(value)
        return grads


class _SecondOrder(_Family):
    """``<w, vjp(x, u)>`` of the inputs and the cotangent, differentiated through the backward."""

    def __init__(self, problem: _Problem, rng: np.random.Generator) -> None:
        self.problem = problem
        self.cotangent = problem.split(_random_like(rng, (problem.outputs.size,), problem.device))
        self.weights = [
            _random_like(rng, tuple(b.shape), problem.device).to(b.dtype) for b in problem.bases
        ]
        self.cache: OrderedDict[bytes, float] = OrderedDict()
        dtype = _TORCH_TO_NUMPY[problem.bases[0].dtype]
        blocks, self.display = [], {}
        for j, name in enumerate(problem.names):
            blocks.append(f"gpt{j}s")
            self.display[blocks[-1]] = f"{name} (2nd order)"
        for k, name in enumerate(problem.outputs.names):
            blocks.append(f"gpt{k}c")
            self.display[blocks[-1]] = f"cotangent of {name} (2nd order)"
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
    def build(cls, problem: _Problem, *, rng: np.random.Generator) -> _SecondOrder:
        second = cls(problem, rng)
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
            _to_torch(a, like)
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

    def gradient(self) -> dict[str, Array]:
        problem = self.problem
        inputs = problem.leaves()
        cotangent = [c.detach().clone().requires_grad_(True) for c in self.cotangent]
        vjp = problem.vjp(problem.forward(inputs), inputs, cotangent, create_graph=True)
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
