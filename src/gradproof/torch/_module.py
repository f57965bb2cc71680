"""An ``nn.Module`` with an input and a loss, as a numpy loss of its parameters."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from torch.func import functional_call
from torch.func import vmap as torch_vmap

from gradproof._words import counted, noun
from gradproof.engine.randomness import reseed
from gradproof.errors import InputError
from gradproof.torch._convert import (
    Array,
    _backward_error,
    _describe_error,
    _is_low_float,
    _module_args,
    _numpy_dtype,
    _scalar_loss,
    _to_numpy,
    _to_torch,
)
from gradproof.torch._run import _require_close


class _ModuleProblem:
    """An ``nn.Module`` with an input and a loss, as a numpy loss of its parameters."""

    def __init__(
        self,
        module: torch.nn.Module,
        loss_fn: Callable[[Any], torch.Tensor],
        checked: dict[str, torch.Tensor],
        others: dict[str, torch.Tensor],
        args: tuple[Any, ...],
        seed: int | None,
    ) -> None:
        self.module = module
        self.loss_fn = loss_fn
        self.checked = checked
        self.others = others
        self.args = args
        self.seed = seed
        self.notes: list[str] = []
        self.aliases = {name: f"gpt{i}m" for i, name in enumerate(checked)}
        self.names = {alias: name for name, alias in self.aliases.items()}
        self.batched_fn: Callable[[dict[str, torch.Tensor]], torch.Tensor] | None = None
        self.base_value = 0.0

    @classmethod
    def build(
        cls,
        module: torch.nn.Module,
        inputs: Any,
        loss_fn: Callable[[Any], torch.Tensor],
        *,
        precision: str,
        seed: int | None,
    ) -> _ModuleProblem:
        args = _module_args(inputs, "check_module")
        checked = {n: p.detach().clone() for n, p in module.named_parameters() if p.requires_grad}
        if not checked:
            raise InputError(
                f"No parameter of the {type(module).__name__} requires grad, so there is no "
                "gradient to check. Unfreeze the parameters to check with "
                "`p.requires_grad_(True)`."
            )
        frozen = {n: p.detach() for n, p in module.named_parameters() if not p.requires_grad}
        others = {**frozen, **{n: b.detach() for n, b in module.named_buffers()}}
        problem = cls(module, loss_fn, checked, others, tuple(args), seed)
        kept = [counted(len(frozen), "frozen parameter")] if frozen else []
        buffers = len(others) - len(frozen)
        kept += [counted(buffers, "buffer")] if buffers else []
        n = len(checked)
        which = "the only parameter" if n == 1 else f"the {n} parameters"
        verb = "was" if len(others) == 1 else "were"  # one frozen parameter or one buffer
        problem.notes.append(
            f"The {noun(n, 'gradient')} of {which} of the {type(module).__name__} that "
            f"{'requires' if n == 1 else 'require'} grad {noun(n, 'was')} checked for the given "
            "inputs and loss"
            + (
                f"; its {' and '.join(kept)} {verb} passed as fresh copies and left alone"
                if kept
                else ""
            )
            + "."
        )
        problem._set_precision(precision)
        return problem

    def _set_precision(self, precision: str) -> None:
        tensors = [*self.checked.values(), *self.others.values(), *self.args]
        low = sorted({str(t.dtype).removeprefix("torch.") for t in tensors if _is_low_float(t)})
        native = (dict(self.checked), dict(self.others), self.args)
        if precision == "auto" and low:

            def wide(t: Any) -> Any:
                return t.detach().to(torch.float64) if _is_low_float(t) else t

            self.checked = {n: wide(t) for n, t in self.checked.items()}
            self.others = {n: wide(t) for n, t in self.others.items()}
            self.args = tuple(wide(a) for a in self.args)
            try:
                value = self.evaluate(self.checked)
            except Exception as exc:  # the module refuses float64: check it as it is
                reason = _describe_error(exc)
            else:
                if value.dtype == torch.float64:
                    self.notes.append(
                        f"The module's {' and '.join(low)} tensors were checked through float64 "
                        "copies of its parameters, buffers and inputs: the module and its "
                        "backward ran in float64, and the gradients are judged with float64's "
                        "tolerance."
                    )
                    self.base_value = float(value)
                    return
                reason = f"the loss came out in {value.dtype}"
            self.notes.append(
                f"The module did not compute in float64 with float64 copies ({reason}), so it "
                f"was checked in {' and '.join(low)} with that precision's tolerance."
            )
            self.checked, self.others, self.args = native
        for name, tensor in self.checked.items():
            _numpy_dtype(tensor.dtype, name)
        self.base_value = float(self.evaluate(self.checked))

    def evaluate(self, params: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Return the loss at `params`, with fresh copies of the buffers and frozen parameters."""
        if self.seed is not None:
            reseed(self.seed)
        # Fresh copies of buffers, frozen parameters and inputs at every call: the module may
        # update them in place (BatchNorm's running statistics, an in-place first activation).
        state = {**params, **{n: t.clone() for n, t in self.others.items()}}
        args = tuple(a.clone() if isinstance(a, torch.Tensor) else a for a in self.args)
        value = self.loss_fn(functional_call(self.module, state, args))
        return _scalar_loss(value)

    def tensors(self, params: Mapping[str, Array]) -> dict[str, torch.Tensor]:
        return {
            name: _to_torch(params[alias], self.checked[name])
            for name, alias in self.aliases.items()
        }

    def params(self) -> dict[str, Array]:
        return {alias: _to_numpy(self.checked[name]) for name, alias in self.aliases.items()}

    def loss(self, params: Mapping[str, Array]) -> float:
        with torch.no_grad():
            return float(self.evaluate(self.tensors(params)))

    def loss_batch(self, stacked: Mapping[str, Array]) -> Array:
        assert self.batched_fn is not None
        tensors = {
            name: _to_torch(stacked[alias], self.checked[name])
            for name, alias in self.aliases.items()
        }
        with torch.no_grad():
            return _to_numpy(self.batched_fn(tensors)).astype(np.float64).reshape(-1)

    def grads(self, cotangent: float) -> list[torch.Tensor]:
        leaves = {n: t.detach().clone().requires_grad_(True) for n, t in self.checked.items()}
        value = self.evaluate(leaves)
        if not value.requires_grad:
            return [torch.zeros_like(t) for t in leaves.values()]
        try:
            grads = torch.autograd.grad(
                value, list(leaves.values()), torch.full_like(value, cotangent), allow_unused=True
            )
        except RuntimeError as exc:
            raise _backward_error(exc, list(leaves)) from exc
        return [
            torch.zeros_like(t) if g is None else g
            for g, t in zip(grads, leaves.values(), strict=True)
        ]

    def gradient(self, params: Mapping[str, Array]) -> dict[str, Array]:
        grads = self.grads(1.0)
        return {alias: _to_numpy(g) for alias, g in zip(self.aliases.values(), grads, strict=True)}

    def trials(self) -> list[Callable[[], None]]:
        def single(params: dict[str, torch.Tensor]) -> torch.Tensor:
            return self.evaluate(params)

        def trial() -> None:
            self.batched_fn = torch_vmap(single, randomness="error")
            base = self.params()
            try:
                values = self.loss_batch({a: np.stack([v, v]) for a, v in base.items()})
                _require_close(values, np.array([self.base_value, self.base_value]))
            except Exception:
                self.batched_fn = None
                raise

        return [trial]
