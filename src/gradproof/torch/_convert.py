"""Tensors and numpy arrays: copies both ways, dtypes, random tensors, exceptions in words.

The random tensors follow Note [Random cotangents] in the docstring of
:mod:`gradproof.torch`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from gradproof.errors import GradproofError, InputError, UserCodeError

_TORCH_TO_NUMPY: dict[torch.dtype, type[np.floating[Any]]] = {
    torch.float16: np.float16,
    torch.float32: np.float32,
    torch.float64: np.float64,
}

Array = npt.NDArray[Any]


def _numpy_dtype(dtype: torch.dtype, name: str) -> type[np.floating[Any]]:
    if dtype not in _TORCH_TO_NUMPY:
        raise InputError(
            f"`{name}` has dtype {dtype}, which numpy cannot hold for the finite differences; "
            "use precision='auto' (float64 copies) or convert it with `.double()`."
        )
    return _TORCH_TO_NUMPY[dtype]


def _to_numpy(tensor: torch.Tensor) -> Array:
    return np.array(_materialized(tensor).detach().cpu().numpy(), copy=True)


def _materialized(tensor: torch.Tensor) -> torch.Tensor:
    """Replace a ``ZeroTensor``, which torch's own backwards return, by real zeros.

    Note [ZeroTensor]
        Some of torch's derivative formulas (``sgn``, ``linalg`` ops) return an
        efficient zero, a ``ZeroTensor``: it has no storage, so ``.numpy()``
        and in-place operations refuse it. It means zeros, so it is read as
        zeros; it is not the user's fault.
    """
    if tensor._is_zerotensor():
        return torch.zeros(tensor.shape, dtype=tensor.dtype, device=tensor.device)
    return tensor


def _compact(tensor: torch.Tensor) -> bool:
    """Whether a tensor is the whole of its storage, laid out contiguously."""
    return (
        tensor.layout == torch.strided
        and tensor.is_contiguous()
        and tensor.storage_offset() == 0
        and tensor.untyped_storage().nbytes() == tensor.numel() * tensor.element_size()
    )


def _clone_layout(tensor: torch.Tensor) -> torch.Tensor:
    """Copy a tensor with its storage, offset and strides, not just its values.

    Note [Views of a larger storage]
        gradcheck perturbs its inputs in place, so a function that reads an
        input's storage beyond the view (``as_strided`` with a storage offset,
        as in OpInfo's ``as_strided.partial_views``) sees the storage it
        expects. gradproof calls the function on copies; a plain ``clone`` is
        compact, and such a function would read out of bounds. Copies of
        inputs that are not compact keep the whole storage and the view on it.
    """
    tensor = tensor.detach()
    if _compact(tensor) or tensor.layout != torch.strided:
        return tensor.clone()
    storage = tensor.untyped_storage().clone()  # type: ignore[no-untyped-call]
    copy = torch.empty(0, dtype=tensor.dtype, device=tensor.device)
    copy.set_(storage, tensor.storage_offset(), tensor.size(), tensor.stride())
    return copy


def _to_torch(array: Array, like: torch.Tensor) -> torch.Tensor:
    """Copy an array into a new tensor (never a view of gradproof's vector) like `like`."""
    if not _compact(like) and like.layout == torch.strided and like.numel():
        copy = _clone_layout(like)
        copy.copy_(torch.as_tensor(np.asarray(array), dtype=like.dtype, device=like.device))
        return copy
    if like.device.type == "cpu" and like.dtype in _TORCH_TO_NUMPY:
        # torch.from_numpy of a fresh copy: a third of torch.tensor's cost on small arrays.
        return torch.from_numpy(np.array(array, dtype=_TORCH_TO_NUMPY[like.dtype], copy=True))
    return torch.tensor(np.asarray(array), dtype=like.dtype, device=like.device)


def _is_low_float(value: object) -> bool:
    return (
        isinstance(value, torch.Tensor) and value.is_floating_point() and value.dtype.itemsize < 8
    )


def _random_like(
    rng: np.random.Generator, shape: tuple[int, ...], device: torch.device | None = None
) -> torch.Tensor:
    """Random signs times sizes uniform in [0.5, 1.5) (Note [Random cotangents]), float64."""
    values = rng.choice([-1.0, 1.0], size=shape) * rng.uniform(0.5, 1.5, size=shape)
    return torch.tensor(values, dtype=torch.float64, device=device)


def _describe_error(error: BaseException) -> str:
    """Name an exception by its type and the first sentence of its message."""
    lines = str(error).strip().splitlines()
    sentence = lines[0].split(". ")[0].rstrip(".") if lines else ""
    return f"{type(error).__name__}: {sentence}"


def _backward_error(
    exc: RuntimeError, names: Sequence[str], *, second_order: bool = False
) -> GradproofError:
    """Turn a failing backward into InputError (a malformed gradient) or UserCodeError."""
    message = str(exc)
    shape = re.search(r"invalid gradient at index (\d+) - (.*)", message)
    if shape:
        index = int(shape.group(1))
        which = f"`{names[index]}`" if index < len(names) else f"input {index}"
        return InputError(
            f"The backward returned a malformed gradient for {which}: {shape.group(2).strip()}. "
            "A gradient has its input's shape, dtype and device; if its shape is transposed, "
            "check the order of the product in the backward (`grad_output @ w.T`, not `w @ ...`)."
        )
    if second_order and ("once_differentiable" in message or "does not require grad" in message):
        return InputError(
            f"The backward cannot be differentiated ({_describe_error(exc)}), so its second "
            "order cannot be checked. Write the backward with differentiable torch "
            "operations (no `@once_differentiable`), or leave `second_order=False`."
        )
    return UserCodeError(f"The backward raised {_describe_error(exc)}", function="grad")


def _scalar_loss(value: object) -> torch.Tensor:
    """Return `loss_fn`'s value as a 0-d tensor, or say why it is not a real scalar tensor."""
    if not isinstance(value, torch.Tensor) or value.numel() != 1 or not value.is_floating_point():
        shown = (
            f"a tensor of shape {tuple(value.shape)} and dtype {value.dtype}"
            if isinstance(value, torch.Tensor)
            else f"a {type(value).__name__}"
        )
        raise InputError(
            f"`loss_fn` returned {shown}; expected a real scalar tensor computed from the "
            "module's output, e.g. `lambda out: out.pow(2).mean()`."
        )
    return value.reshape(())


def _module_args(inputs: object, function: str) -> tuple[Any, ...]:
    """Return a module's positional arguments from `inputs`: one tensor, or a tuple or list."""
    if isinstance(inputs, torch.Tensor):
        return (inputs,)
    if isinstance(inputs, (tuple, list)):
        return tuple(inputs)
    raise InputError(
        f"`inputs` must be a tensor or a tuple of the module's positional arguments; got a "
        f"{type(inputs).__name__}. For keyword arguments or a target, close over them: "
        f"`{function}(model, (x,), lambda out: loss(out, target))`."
    )
