"""A module run under hooks: its calls in execution order, and its loss with activations moved.

Note [Perturbing an activation]
    :func:`gradproof.torch.locate` needs the loss as a function of one
    activation: the output of a module call, or an input *as that call sees
    it*. Forward hooks on every submodule add an offset ``delta`` to the
    chosen activation and leave every other one alone. An offset on an output
    reaches every consumer of that output (the residual branch included), so
    its gradient is the whole gradient autograd delivers there. An offset on
    an input is added inside the call's pre-hook, so only that call sees it:
    its gradient is what the call's backward passes on, without the other
    consumers of the same tensor (a residual connection's identity path).
    With ``delta`` a leaf that requires grad, ``autograd.grad`` gives the
    analytic gradient at the activation; with ``delta = t v`` the loss is a
    function of the scalar ``t``, whose derivative gradproof measures.

    A module called twice (a shared module) is two calls, told apart by their
    order in the pass; the hooks count the calls of each module anew at every
    evaluation, so the same call gets the same offset every time.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.func import functional_call

from gradproof.engine.randomness import reseed
from gradproof.errors import UserCodeError
from gradproof.torch._convert import _describe_error, _is_low_float, _scalar_loss

CallKey = tuple[str, int]
"""A module call: the module's qualified name and which of its calls in the pass (0 first)."""

Site = tuple[CallKey, str, int]
"""An activation: a call, ``"output"`` or ``"input"``, and the position among its tensors."""


@dataclass(slots=True)
class _Call:
    """One call of a module in the forward pass, as the trace saw it."""

    key: CallKey
    kind: str
    parent: int | None
    children: list[int] = field(default_factory=list)
    inputs: list[tuple[int, tuple[int, ...]]] = field(default_factory=list)
    outputs: list[tuple[int, tuple[int, ...]]] = field(default_factory=list)
    n_calls: int = 1

    @property
    def name(self) -> str:
        return self.key[0]


def _float_tensors(values: Any) -> list[tuple[int, torch.Tensor]]:
    """Return the floating-point tensors of a call's arguments or output, by position.

    A tuple or list is taken item by item, a dict (or a model-output mapping)
    value by value, in its order; anything else is one item.
    """
    if isinstance(values, Mapping):
        items: Any = list(values.values())
    else:
        items = values if isinstance(values, (tuple, list)) else (values,)
    return [
        (i, v) for i, v in enumerate(items) if isinstance(v, torch.Tensor) and v.is_floating_point()
    ]


def _replace(values: Any, changes: Mapping[int, torch.Tensor]) -> Any:
    """Return `values` with the items at the positions of `changes` replaced."""
    if isinstance(values, Mapping):
        replaced = copy.copy(values)
        for i, key in enumerate(list(values)):
            if i in changes:
                replaced[key] = changes[i]  # type: ignore[index]
        return replaced
    if not isinstance(values, (tuple, list)):
        return changes.get(0, values)
    items = [changes.get(i, v) for i, v in enumerate(values)]
    return tuple(items) if isinstance(values, tuple) else items


def _moved(tensor: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    """Add an offset to an activation, in the activation's dtype (the offset is float64)."""
    return tensor + offset.to(tensor.dtype)


class _Model:
    """The module, its inputs and loss, evaluated with offsets at chosen activations."""

    def __init__(
        self,
        module: torch.nn.Module,
        args: tuple[Any, ...],
        loss_fn: Callable[[Any], torch.Tensor],
        *,
        precision: str,
        seed: int | None,
    ) -> None:
        self.module = module
        self.loss_fn = loss_fn
        self.seed = seed
        self.names = {id(m): name for name, m in module.named_modules()}
        self.modules = dict(module.named_modules())
        wide = precision == "auto"

        def copy(t: torch.Tensor) -> torch.Tensor:
            t = t.detach().clone()
            return t.to(torch.float64) if wide and _is_low_float(t) else t

        self.params = {n: copy(p) for n, p in module.named_parameters()}
        self.trainable = {n for n, p in module.named_parameters() if p.requires_grad}
        self.buffers = {n: copy(b) for n, b in module.named_buffers()}
        self.args = tuple(copy(a) if isinstance(a, torch.Tensor) else a for a in args)
        low = any(
            _is_low_float(t)
            for t in [*module.parameters(), *module.buffers(), *args]
            if isinstance(t, torch.Tensor)
        )
        self.widened = wide and low
        # Note [Low precision, measured]
        #     With ``precision="native"``, a float16 or float32 model computes the
        #     loss in its own precision while the probes' coefficients are float64:
        #     the loss's rounding is far above float64's, and the checks measure it
        #     (``noise=True``) instead of assuming float64 rounding.
        self.low_precision = low and not wide
        first = [t for t in [*self.params.values(), *self.args] if isinstance(t, torch.Tensor)]
        self.device = first[0].device if first else torch.device("cpu")
        self.n_forward = 0
        self.n_backward = 0
        # The state of one pass (Note [Perturbing an activation]).
        self._offsets: Mapping[Site, torch.Tensor] = {}
        self._counts: dict[str, int] = {}
        self._stack: list[CallKey] = []
        self._trace: list[_Call] | None = None
        self._open: list[int] = []
        self._grad_fns: dict[CallKey, tuple[list[Any], list[Any]]] | None = None

    # -- hooks -------------------------------------------------------------------------------
    def _pre(self, module: torch.nn.Module, args: tuple[Any, ...]) -> Any:
        name = self.names.get(id(module))
        if name is None:  # pragma: no cover - a module added during the forward pass
            return None
        k = self._counts.get(name, 0)
        self._counts[name] = k + 1
        key = (name, k)
        self._stack.append(key)
        tensors = _float_tensors(args)
        if self._trace is not None:
            parent = self._open[-1] if self._open else None
            call = _Call(key=key, kind=type(module).__name__, parent=parent)
            call.inputs = [(i, tuple(t.shape)) for i, t in tensors]
            self._trace.append(call)
            if parent is not None:
                self._trace[parent].children.append(len(self._trace) - 1)
            self._open.append(len(self._trace) - 1)
        changes = {
            i: _moved(t, self._offsets[(key, "input", i)])
            for i, t in tensors
            if (key, "input", i) in self._offsets
        }
        if self._grad_fns is not None:
            seen = [changes.get(i, t).grad_fn for i, t in tensors]
            self._grad_fns[key] = (seen, [])
        return _replace(args, changes) if changes else None

    def _post(self, module: torch.nn.Module, args: tuple[Any, ...], output: Any) -> Any:
        if self.names.get(id(module)) is None:  # pragma: no cover
            return None
        key = self._stack.pop()
        tensors = _float_tensors(output)
        if self._trace is not None:
            self._trace[self._open.pop()].outputs = [(i, tuple(t.shape)) for i, t in tensors]
        if self._grad_fns is not None:
            self._grad_fns[key][1].extend(t.grad_fn for _, t in tensors)
        changes = {
            i: _moved(t, self._offsets[(key, "output", i)])
            for i, t in tensors
            if (key, "output", i) in self._offsets
        }
        return _replace(output, changes) if changes else None

    @contextmanager
    def attached(self) -> Iterator[None]:
        """Attach hooks to every submodule for the duration, and remove them however it exits."""
        handles = []
        try:
            for m in self.modules.values():
                handles.append(m.register_forward_pre_hook(self._pre))
                handles.append(m.register_forward_hook(self._post))
            yield
        finally:
            for handle in handles:
                handle.remove()

    # -- evaluation --------------------------------------------------------------------------
    def evaluate(
        self,
        offsets: Mapping[Site, torch.Tensor],
        param_offsets: Mapping[str, torch.Tensor] | None = None,
        *,
        params: Mapping[str, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Return the loss with `offsets` added at their activations and parameters."""
        if self.seed is not None:
            reseed(self.seed)
        self._offsets = offsets
        self._counts = {}
        self._stack = []
        base = self.params if params is None else params
        moved = param_offsets or {}
        state = {
            **{n: (p + moved[n] if n in moved else p) for n, p in base.items()},
            **{n: b.clone() for n, b in self.buffers.items()},
        }
        args = tuple(a.clone() if isinstance(a, torch.Tensor) else a for a in self.args)
        self.n_forward += 1
        try:
            output = functional_call(self.module, state, args)
        except Exception as exc:
            raise UserCodeError(
                f"The module raised {_describe_error(exc)}", function="module"
            ) from exc
        finally:
            self._offsets = {}
        try:
            value = self.loss_fn(output)
        except Exception as exc:
            raise UserCodeError(
                f"`loss_fn` raised {_describe_error(exc)}", function="loss_fn"
            ) from exc
        return _scalar_loss(value)

    def trace(self) -> tuple[list[_Call], float]:
        """Run once, recording every module call in execution order; return them and the loss."""
        self._trace, self._open = [], []
        try:
            with torch.no_grad():
                value = float(self.evaluate({}))
            calls = self._trace
        finally:
            self._trace, self._open = None, []
        totals: dict[str, int] = {}
        for call in calls:
            totals[call.name] = totals.get(call.name, 0) + 1
        for call in calls:
            call.n_calls = totals[call.name]
        return calls, value

    def grad_fns(self) -> dict[CallKey, tuple[list[Any], list[Any]]]:
        """Run once with grad: each call's input and output ``grad_fn`` nodes."""
        params = {
            n: p.detach().clone().requires_grad_(p.is_floating_point())
            for n, p in self.params.items()
        }
        self._grad_fns = {}
        try:
            self.evaluate({}, params=params)
            return self._grad_fns
        finally:
            self._grad_fns = None


def custom_functions(
    outputs: list[Any], boundary: list[Any], inner: list[tuple[list[Any], list[Any]]]
) -> list[str]:
    """Name the custom ``autograd.Function``s between a call's inputs and outputs.

    The graph is walked from the output nodes towards the inputs, stopping at
    the nodes that produced the inputs; what the call's child calls hold
    (`inner`: their outputs and inputs) is left out, so the Functions named
    are those the call runs itself.
    """

    def reach(starts: list[Any], stops: list[Any]) -> list[Any]:
        stop_ids = {id(s) for s in stops if s is not None}
        seen: dict[int, Any] = {}
        todo = [s for s in starts if s is not None]
        while todo:
            node = todo.pop()
            if id(node) in seen or id(node) in stop_ids:
                continue
            seen[id(node)] = node
            todo.extend(n for n, _ in node.next_functions if n is not None)
        return list(seen.values())

    found = reach(outputs, boundary)
    hidden = {id(n) for outs, ins in inner for n in reach(outs, ins)}
    names: list[str] = []
    for node in reversed(found):
        if isinstance(node, torch.autograd.function.BackwardCFunction) and id(node) not in hidden:
            name = type(node).__name__.removesuffix("Backward")
            if name not in names:
                names.append(name)
    return names
