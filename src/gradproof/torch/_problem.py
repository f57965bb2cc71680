"""A function of tensors at a point: how to call it, what it returns, its backward."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from gradproof.engine.randomness import reseed
from gradproof.errors import InputError, UserCodeError
from gradproof.torch._convert import (
    Array,
    _backward_error,
    _clone_layout,
    _describe_error,
    _is_low_float,
    _materialized,
    _numpy_dtype,
    _to_numpy,
    _to_torch,
)
from gradproof.tree import format_index


class _NothingToCheckError(InputError):
    """Nothing is differentiable: every checked input or every float output is empty or constant.

    ``check_function`` refuses it; ``gradcheck`` passes it, as torch's does.
    """


@dataclasses.dataclass(frozen=True)
class _Outputs:
    """Which of a function's outputs are checked, with their names and shapes."""

    positions: tuple[int | None, ...]  # None: the function returned a single tensor
    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    dtypes: tuple[torch.dtype, ...]
    skipped: tuple[str, ...]
    constant: tuple[str, ...] = ()  # floating-point outputs autograd marks non-differentiable

    @property
    def sizes(self) -> list[int]:
        return [math.prod(shape) for shape in self.shapes]

    @property
    def size(self) -> int:
        return sum(self.sizes)

    def entry_names(self) -> list[str]:
        """Name every output entry, in the flat order of :meth:`_Problem.flat`."""
        return [
            entry
            for name, shape in zip(self.names, self.shapes, strict=True)
            for entry in self.entries(name, shape)
        ]

    @staticmethod
    def entries(name: str, shape: tuple[int, ...]) -> list[str]:
        """Name the entries of one output, in row-major order."""
        names = []
        for i in range(math.prod(shape)):
            index = np.unravel_index(i, shape) if shape else ()
            names.append(format_index(name, tuple(int(j) for j in index)))
        return names

    @classmethod
    def read(cls, raw: object, *, stem: str = "output") -> _Outputs:
        """Read the outputs of a call at leaves that require grad.

        Outputs that are empty or that autograd marks non-differentiable (no
        ``requires_grad``: integer results, ``mark_non_differentiable``, the
        saved statistics of ``native_layer_norm``) are skipped, as gradcheck
        skips them; `stem` names them (``output``, ``output0``, ...).
        """
        if isinstance(raw, torch.Tensor):
            items: list[tuple[int | None, str, object]] = [(None, stem, raw)]
        elif isinstance(raw, (tuple, list)):
            items = [(i, f"{stem}{i}", value) for i, value in enumerate(raw)]
        else:
            raise InputError(
                f"`fn` returned a {type(raw).__name__}; expected a tensor or a tuple of "
                "tensors, whose gradients its backward computes. Return torch tensors (e.g. "
                "`torch.as_tensor(value)`), not Python numbers or numpy arrays."
            )
        kept: list[tuple[int | None, str, torch.Tensor]] = []
        skipped, constant = [], []
        for position, name, value in items:
            if not isinstance(value, torch.Tensor):
                skipped.append(f"{name} ({type(value).__name__})")
            elif value.is_complex():
                raise InputError(
                    f"`fn` returned a complex tensor as `{name}`; gradproof checks real "
                    "outputs. Return `torch.view_as_real(...)` of it instead, or check it "
                    "with `gradproof.torch.gradcheck`, which does that itself."
                )
            elif not value.is_floating_point():
                skipped.append(f"{name} ({value.dtype})")
            elif value.numel() == 0:
                skipped.append(f"{name} (empty, shape {tuple(value.shape)})")
            elif not value.requires_grad:
                constant.append(name)
            else:
                kept.append((position, name, value))
        if not kept:
            listed = [*skipped, *(f"{n} (not differentiable)" for n in constant)]
            raise _NothingToCheckError(
                "`fn` returned no differentiable floating-point tensor with entries "
                f"({', '.join(listed) or 'an empty tuple'}); only floating-point outputs "
                "that depend on an "
                "input through autograd have gradients. Return the differentiable result "
                "(integer results such as indices from argmax have none), without "
                "`.detach()` or `torch.no_grad()`."
            )
        return cls(
            positions=tuple(p for p, _, _ in kept),
            names=tuple(n for _, n, _ in kept),
            shapes=tuple(tuple(t.shape) for _, _, t in kept),
            dtypes=tuple(t.dtype for _, _, t in kept),
            skipped=tuple(skipped),
            constant=tuple(constant),
        )

    def select(self, raw: object) -> list[torch.Tensor]:
        if self.positions == (None,):
            tensors = [raw]
        elif isinstance(raw, (tuple, list)):
            tensors = [raw[p] for p in self.positions if p is not None and p < len(raw)]
        else:
            tensors = []
        shapes = [tuple(t.shape) for t in tensors if isinstance(t, torch.Tensor)]
        if len(shapes) != len(self.shapes) or any(
            s != e for s, e in zip(shapes, self.shapes, strict=True)
        ):
            raise InputError(
                f"`fn` returned outputs of shapes {shapes} at a perturbed point, but "
                f"{list(self.shapes)} at the given inputs; a checked function must keep its "
                "output structure and shapes when its inputs change slightly."
            )
        return [t for t in tensors if isinstance(t, torch.Tensor)]


class _Problem:
    """A function of tensors at a point: how to call it, what it returns, its backward."""

    def __init__(
        self,
        fn: Callable[..., Any],
        names: list[str],
        values: list[Any],
        keyword: bool,
        checked: list[int],
        seed: int | None,
        stem: str = "output",
    ) -> None:
        self.fn = fn
        self.stem = stem
        self.frozen: list[torch.Tensor | None] = []  # per checked input: its non-finite entries
        self.arg_names = names
        self.values = values
        self.keyword = keyword
        self.checked = checked
        self.seed = seed
        self.notes: list[str] = []
        self.n_forward = 0
        self.n_backward = 0
        self.outputs: _Outputs
        # The largest difference between two backward passes, and where (the structural check).
        self.nondeterminism: tuple[float, str] | None = None

    @property
    def names(self) -> list[str]:
        return [self.arg_names[i] for i in self.checked]

    @property
    def bases(self) -> list[torch.Tensor]:
        return [self.values[i] for i in self.checked]

    @property
    def device(self) -> torch.device:
        device: torch.device = self.bases[0].device
        return device

    def base_arrays(self) -> list[Array]:
        """Return the checked inputs as arrays, frozen entries (Note [Frozen entries]) as 0."""
        arrays = [_to_numpy(t) for t in self.bases]
        for array, mask in zip(arrays, self.frozen, strict=True):
            if mask is not None:
                array[_to_numpy(mask)] = 0
        return arrays

    # -- set-up ---------------------------------------------------------------------------------
    @classmethod
    def build(
        cls,
        fn: Callable[..., Any],
        inputs: tuple[Any, ...],
        *,
        precision: str,
        seed: int | None,
        names: Sequence[str] | None = None,
        stem: str = "output",
    ) -> _Problem:
        """Read the call ``fn(*inputs)``: what is checked, what it returns, in what precision.

        `names` names the positional inputs (by default ``input0``, ...);
        `stem` names the outputs (``output``, or ``output0``, ``output1``, ...).
        """
        if not inputs:
            raise InputError(
                "`check_function` got no inputs: pass the point to check at after the "
                "function, e.g. `check_function(fn, x, w)` with `x.requires_grad_()`."
            )
        keyword = len(inputs) == 1 and isinstance(inputs[0], Mapping)
        if keyword:
            mapping = inputs[0]
            bad = [k for k in mapping if not isinstance(k, str)]
            if bad:
                raise InputError(
                    f"A dict of inputs is passed as keyword arguments, so its keys must be "
                    f"strings; got {bad[0]!r}. Use the names of `fn`'s parameters."
                )
            names, values = list(mapping.keys()), list(mapping.values())
        else:
            names = list(names) if names is not None else []
            names += [f"input{i}" for i in range(len(names), len(inputs))]
            values = list(inputs)
        differentiable = [
            i
            for i, v in enumerate(values)
            if isinstance(v, torch.Tensor) and v.requires_grad and v.is_floating_point()
        ]
        checked = [i for i in differentiable if values[i].numel() > 0]
        if differentiable and not checked:
            raise _NothingToCheckError(
                "Every input that requires grad is empty "
                f"({', '.join(names[i] for i in differentiable)}), so there is no gradient "
                "entry to check. Check the "
                "function at inputs with entries."
            )
        for i, v in enumerate(values):
            if isinstance(v, torch.Tensor) and v.requires_grad and v.is_complex():
                raise InputError(
                    f"`{names[i]}` is a complex tensor; gradproof checks real inputs. Pass "
                    f"`torch.view_as_real({names[i]})` and rebuild it inside `fn`."
                )
        if not checked:
            tensors = [n for n, v in zip(names, values, strict=True) if isinstance(v, torch.Tensor)]
            raise InputError(
                "No input is a floating-point tensor that requires grad "
                f"({', '.join(tensors) or 'no tensors at all'}), so there is no gradient to "
                "check. Call `.requires_grad_()` on the inputs whose gradients you want checked, "
                "e.g. `x = torch.randn(3, dtype=torch.float64, requires_grad=True)`."
            )
        problem = cls(fn, names, values, keyword, checked, seed, stem)
        empty = [names[i] for i in differentiable if i not in checked]
        if empty:
            problem.notes.append(
                f"{', '.join(f'`{n}`' for n in empty)} {'is' if len(empty) == 1 else 'are'} "
                "empty: no entry to check."
            )
        passed = [
            n
            for i, (n, v) in enumerate(zip(names, values, strict=True))
            if i not in checked and isinstance(v, torch.Tensor) and v.is_floating_point()
        ]
        if passed:
            problem.notes.append(
                f"{', '.join(f'`{n}`' for n in passed)} do{'es' if len(passed) == 1 else ''} "
                "not require grad: passed through unchanged, not checked."
            )
        problem._set_precision(precision)
        problem._freeze_non_finite()
        if problem.outputs.constant:
            listed = ", ".join(f"`{n}`" for n in problem.outputs.constant)
            problem.notes.append(
                f"{listed} {'is' if len(problem.outputs.constant) == 1 else 'are'} marked "
                "non-differentiable by autograd (no grad_fn): not checked, as gradcheck "
                "does not check it."
            )
        return problem

    def _freeze_non_finite(self) -> None:
        """Hold non-finite input entries where they are (Note [Frozen entries]).

        Note [Frozen entries]
            An input entry that is infinite or NaN cannot be moved by a finite
            step (``-inf + h`` is ``-inf``), yet such entries are legitimate:
            ``-inf`` masks out a logit before a softmax. gradcheck perturbs
            them and compares whatever comes out. gradproof holds them fixed
            instead: they enter the check as 0 (so the finite differences of
            the other entries are unaffected), every evaluation puts the
            original value back, and their analytic gradient is read as 0, so
            both sides agree and the entry says nothing. A note lists them as
            unchecked.
        """
        self.frozen = []
        unchecked = []
        for name, base in zip(self.names, self.bases, strict=True):
            mask = ~torch.isfinite(base.detach())
            if not bool(mask.any()):
                self.frozen.append(None)
                continue
            self.frozen.append(mask)
            where = [tuple(int(j) for j in i) for i in torch.nonzero(mask).tolist()]
            shown = ", ".join(
                f"{format_index(name, i)} = {float(base.detach()[i])}" for i in where[:4]
            )
            more = f" and {len(where) - 4} more" if len(where) > 4 else ""
            unchecked.append(f"{shown}{more}")
        if unchecked:
            self.notes.append(
                "Unchecked, because a finite step cannot move a non-finite value: "
                f"{'; '.join(unchecked)}. Their analytic gradients were not compared."
            )

    def _set_precision(self, precision: str) -> None:
        # Copies: nothing `fn` does to its arguments can reach the caller's tensors.
        native = [_clone_layout(v) if isinstance(v, torch.Tensor) else v for v in self.values]
        low = sorted(
            {str(v.dtype).removeprefix("torch.") for v in native if _is_low_float(v)},
        )
        if precision == "auto" and low:
            self.values = [v.detach().to(torch.float64) if _is_low_float(v) else v for v in native]
            try:
                outputs = self._read_outputs()
            except _NothingToCheckError:
                raise
            except Exception as exc:  # the function refuses float64: check it as it is
                reason = _describe_error(exc)
            else:
                if all(d == torch.float64 for d in outputs.dtypes):
                    self.outputs = outputs
                    self.notes.append(
                        f"The {' and '.join(low)} tensors were checked through float64 copies: "
                        "`fn` and its backward ran in float64, and the gradients are judged "
                        "with float64's tolerance."
                    )
                    return
                reason = f"it returned {', '.join(sorted({str(d) for d in outputs.dtypes}))}"
            self.notes.append(
                f"`fn` did not compute in float64 when given float64 copies ({reason}), so "
                f"it was checked in {' and '.join(low)} with that precision's tolerance."
            )
        self.values = native
        for name, value in zip(self.names, self.bases, strict=True):
            _numpy_dtype(value.dtype, name)
        self.outputs = self._read_outputs()

    def _read_outputs(self) -> _Outputs:
        # At leaves that require grad: outputs that autograd leaves without a grad_fn are
        # marked non-differentiable (gradcheck's `_differentiable_outputs`).
        with torch.enable_grad():
            return _Outputs.read(self._call(self.leaves()), stem=self.stem)

    # -- calling --------------------------------------------------------------------------------
    def _call(self, checked: Sequence[torch.Tensor]) -> Any:
        # Fresh copies of the other tensors too: a function that updates an argument in place
        # must not change what the next call sees.
        values = [_clone_layout(v) if isinstance(v, torch.Tensor) else v for v in self.values]
        for i, value in zip(self.checked, checked, strict=True):
            values[i] = value
        if self.seed is not None:
            reseed(self.seed)
        self.n_forward += 1
        try:
            if self.keyword:
                return self.fn(**dict(zip(self.arg_names, values, strict=True)))
            return self.fn(*values)
        except (KeyboardInterrupt, GeneratorExit):
            raise
        except Exception as exc:
            raise UserCodeError(f"`fn` raised {_describe_error(exc)}", function="loss") from exc

    def forward(self, checked: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Return the checked outputs of `fn` at `checked`."""
        return self.outputs.select(self._call(checked))

    def flat(self, outputs: Sequence[torch.Tensor]) -> torch.Tensor:
        """All checked output entries in one float64 vector."""
        return torch.cat([o.reshape(-1).to(torch.float64) for o in outputs])

    def tensors(self, arrays: Sequence[Array]) -> list[torch.Tensor]:
        """Tensors of the checked inputs at a point (frozen entries at their own values)."""
        tensors = [_to_torch(a, like) for a, like in zip(arrays, self.bases, strict=True)]
        return [
            t if mask is None else torch.where(mask, like, t)
            for t, like, mask in zip(tensors, self.bases, self.frozen, strict=True)
        ]

    def leaves(self) -> list[torch.Tensor]:
        """Fresh leaf copies of the checked inputs that require grad."""
        return [_clone_layout(b).requires_grad_(True) for b in self.bases]

    def split(self, vector: torch.Tensor) -> list[torch.Tensor]:
        """Cut a flat vector over the outputs into tensors of the outputs' shapes and dtypes."""
        pieces = torch.split(vector, self.outputs.sizes)
        return [
            p.reshape(shape).to(dtype)
            for p, shape, dtype in zip(
                pieces, self.outputs.shapes, self.outputs.dtypes, strict=True
            )
        ]

    def vjp(
        self,
        outputs: Sequence[torch.Tensor],
        inputs: Sequence[torch.Tensor],
        cotangents: Sequence[torch.Tensor],
        *,
        create_graph: bool = False,
        retain_graph: bool = False,
    ) -> list[torch.Tensor]:
        """Run the backward of `outputs` with `cotangents`; zeros where autograd gives None."""
        pairs = [(o, c) for o, c in zip(outputs, cotangents, strict=True) if o.requires_grad]
        if not pairs:
            return [torch.zeros_like(x) for x in inputs]
        self.n_backward += 1
        try:
            grads = torch.autograd.grad(
                [o for o, _ in pairs],
                list(inputs),
                grad_outputs=[c for _, c in pairs],
                create_graph=create_graph,
                retain_graph=retain_graph or create_graph,
                allow_unused=True,
            )
        except RuntimeError as exc:
            raise _backward_error(exc, self.names) from exc
        return [
            self._unfrozen(torch.zeros_like(x) if g is None else _materialized(g), mask)
            for g, x, mask in zip(grads, inputs, self.frozen or [None] * len(inputs), strict=True)
        ]

    @staticmethod
    def _unfrozen(grad: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """Read a gradient as 0 at the frozen entries (Note [Frozen entries])."""
        if mask is None or grad.shape != mask.shape:
            return grad
        return grad.masked_fill(mask, 0)
