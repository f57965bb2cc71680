"""What gradcheck's callers pass, made checkable: argument names, sparse and complex tensors.

``gradproof.torch.gradcheck`` accepts whatever ``torch.autograd.gradcheck``
accepts. The core checks real dense tensors, so the function is wrapped:
sparse inputs enter as dense tensors and are rebuilt sparse for the call,
complex inputs enter as their real views (``torch.view_as_real``), and
complex or sparse outputs leave as real dense tensors. Notes say what was done.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from gradproof.errors import InputError

_SPARSE = (torch.sparse_coo, torch.sparse_csr)
"""The sparse layouts a sparse input may have (those gradcheck supports)."""


def _argument_names(func: Callable[..., Any], count: int) -> list[str]:
    """Name `count` positional inputs by the parameters of `func` (or of its ``forward``).

    For a custom Function's ``apply``, the names are those of ``forward``
    after ``ctx`` (with ``setup_context``, ``forward`` has no ``ctx``). Inputs
    beyond the named parameters (``*args``) are ``input3``, ``input4``, ...

    Examples
    --------
    >>> _argument_names(lambda x, weight, bias=None: x, 2)
    ['x', 'weight']
    >>> _argument_names(lambda *args: args, 2)
    ['input0', 'input1']
    """
    target: Callable[..., Any] = func
    skip = 0
    owner = getattr(func, "__self__", None)
    if isinstance(owner, type) and issubclass(owner, torch.autograd.Function):
        target = owner.forward
        own_setup = owner.setup_context is not torch.autograd.Function.setup_context
        skip = 0 if own_setup else 1  # the ctx argument
    try:
        parameters = list(inspect.signature(target).parameters.values())[skip:]
    except (TypeError, ValueError):  # builtins and C functions may have no signature
        parameters = []
    names: list[str] = []
    for parameter in parameters:
        if parameter.kind not in (parameter.POSITIONAL_ONLY, parameter.POSITIONAL_OR_KEYWORD):
            break
        names.append(parameter.name)
    names = names[:count]
    taken = set(names)
    for i in range(len(names), count):
        name = f"input{i}"
        while name in taken:
            name = f"_{name}"
        names.append(name)
    return names


@dataclass
class _Prepared:
    """The function and inputs as the core sees them, and notes on what was changed."""

    fn: Callable[..., Any]
    inputs: list[Any]
    notes: list[str] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)  # output conversions made, for the notes
    complex_in: bool = False
    complex_out: bool = False

    def output_notes(self) -> list[str]:
        notes = []
        if "complex" in self.seen:
            notes.append(
                "Complex outputs were checked as their real views (`torch.view_as_real`: "
                "the last index is 0 for the real part, 1 for the imaginary part), i.e. the "
                "real and imaginary parts of each output separately, as gradcheck does."
            )
        if "sparse" in self.seen:
            notes.append("Sparse outputs were checked through `to_dense()`.")
        return notes


def _prepare(
    func: Callable[..., Any], inputs: Sequence[Any], names: Sequence[str], masked: bool
) -> _Prepared:
    """Wrap `func` so that its checked inputs and outputs are real dense tensors."""
    rebuild: list[Callable[[torch.Tensor], torch.Tensor] | None] = []
    values: list[Any] = []
    notes: list[str] = []
    complex_in = False
    for name, value in zip(names, inputs, strict=True):
        if not (isinstance(value, torch.Tensor) and value.requires_grad):
            rebuild.append(None)
            values.append(value)
            continue
        if value.layout in _SPARSE:
            dense, back = _densified(value, name, masked)
            notes.append(
                f"`{name}` is sparse ({str(value.layout).removeprefix('torch.')}): checked as "
                "a dense tensor rebuilt "
                + (
                    "with the same specified entries before each call, so only those are "
                    "checked (`masked=True`)."
                    if masked
                    else "with every entry specified for the finite differences and with its "
                    "own entries for the backward, so every entry is checked, unspecified "
                    "ones included (`masked=False`, as gradcheck)."
                )
            )
            value, rebuild_one = dense, back
        elif value.layout != torch.strided:
            raise InputError(
                f"`{name}` has layout {value.layout}; gradproof checks strided (dense) and "
                "sparse COO/CSR tensors. Pass `{name}.to_dense()`."
            )
        else:
            rebuild_one = None
        if value.is_complex():
            complex_in = True
            real = torch.view_as_real(value.detach().resolve_conj()).clone().requires_grad_(True)
            notes.append(
                f"`{name}` is complex: checked as its real view (`torch.view_as_real({name})`: "
                "the last index is 0 for the real part, 1 for the imaginary part). The gradient "
                "of a real function of a complex input is then checked part by part, which "
                "is what gradcheck's Wirtinger check amounts to."
            )
            inner = rebuild_one
            rebuild_one = _complexifier(inner)
            value = real
        rebuild.append(rebuild_one)
        values.append(value)
    prepared = _Prepared(fn=func, inputs=values, notes=notes, complex_in=complex_in)
    prepared.fn = _wrapped(func, rebuild if any(r is not None for r in rebuild) else None, prepared)
    return prepared


def _complexifier(
    inner: Callable[[torch.Tensor], torch.Tensor] | None,
) -> Callable[[torch.Tensor], torch.Tensor]:
    def complexify(real: torch.Tensor) -> torch.Tensor:
        value = torch.view_as_complex(real.contiguous())
        return value if inner is None else inner(value)

    return complexify


def _densified(
    value: torch.Tensor, name: str, masked: bool
) -> tuple[torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]:
    """Make a dense leaf for a sparse input, and say how to rebuild the sparse tensor.

    Note [Sparse inputs]
        With `masked`, the tensor is rebuilt with the input's own specified
        entries: only they move, and only their gradients are compared. Without
        it (gradcheck's default), gradcheck differences a copy with every entry
        specified (explicit zeros included) but takes the analytical gradient at
        the input as given. So does this: evaluations without autograd (the
        finite differences) see every entry specified, and the call that
        computes the backward sees ``to_sparse`` of the dense leaf, whose
        pattern is the input's nonzeros and whose backward passes on whatever
        gradient the function's backward gives. A backward that returns
        gradients on the specified entries only then fails, as in gradcheck.
    """
    sparse = value.detach()
    if sparse.dense_dim() or (sparse.layout == torch.sparse_csr and sparse.dim() != 2):
        raise InputError(
            f"`{name}` is a hybrid or batched sparse tensor; gradproof checks plain sparse COO "
            f"and CSR tensors. Pass `{name}.to_dense()` and convert inside the function."
        )
    dense = sparse.to_dense().requires_grad_(True)
    own = _rebuilder(sparse)
    if masked:
        return dense, own
    full = _rebuilder(torch.ones_like(dense).to_sparse(layout=sparse.layout))
    layout = sparse.layout
    return dense, lambda d: d.to_sparse(layout=layout) if d.requires_grad else full(d)


def _rebuilder(pattern: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """Rebuild a sparse tensor with `pattern`'s specified entries from a dense one."""
    size = pattern.shape
    if pattern.layout == torch.sparse_coo:
        indices = pattern.coalesce().indices()
        return lambda d: torch.sparse_coo_tensor(
            indices, d[tuple(indices)], size, check_invariants=False
        )
    crow, col = pattern.crow_indices(), pattern.col_indices()
    rows = torch.repeat_interleave(torch.arange(len(crow) - 1, device=crow.device), crow.diff())
    return lambda d: torch.sparse_csr_tensor(
        crow, col, d[rows, col], size=size, check_invariants=False
    )


def _wrapped(
    func: Callable[..., Any],
    rebuild: Sequence[Callable[[torch.Tensor], torch.Tensor] | None] | None,
    prepared: _Prepared,
) -> Callable[..., Any]:
    """`func` with its inputs rebuilt and its outputs made real and dense."""

    def call(*args: Any) -> Any:
        if rebuild is not None:
            args = tuple(
                a if r is None or not isinstance(a, torch.Tensor) else r(a)
                for a, r in zip(args, rebuild, strict=True)
            )
        raw = func(*args)
        if isinstance(raw, torch.Tensor):
            return _real_dense(raw, prepared)
        if isinstance(raw, (tuple, list)):
            return tuple(
                _real_dense(o, prepared) if isinstance(o, torch.Tensor) else o for o in raw
            )
        return raw

    return call


def _real_dense(output: torch.Tensor, prepared: _Prepared) -> torch.Tensor:
    if output.layout != torch.strided:
        prepared.seen.add("sparse")
        output = output.to_dense()
    if output.is_complex():
        prepared.seen.add("complex")
        prepared.complex_out = True
        output = torch.view_as_real(output.resolve_conj())
    return output
