"""Between JAX and numpy: the float dtypes numpy holds, loss values, x64, errors in words.

See Note [x64] in the docstring of :mod:`gradproof.jax`.
"""

from __future__ import annotations

import contextlib
import importlib
from typing import Any

import jax
import numpy as np
import numpy.typing as npt

from gradproof.errors import UserCodeError

_NUMPY_FLOATS = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))
_Array = npt.NDArray[Any]


def _x64(enabled: bool) -> contextlib.AbstractContextManager[Any]:
    """``jax.enable_x64(True)`` where it exists, else the older experimental one (Note [x64])."""
    if not enabled:
        return contextlib.nullcontext()
    state: Any = getattr(jax, "enable_x64", None)
    if state is None:  # pragma: no cover - JAX releases before jax.enable_x64
        return importlib.import_module("jax.experimental").enable_x64()  # type: ignore[no-any-return]
    return state(True)  # type: ignore[no-any-return]


def _numpy(value: Any) -> _Array:
    """Read a loss value into numpy; bfloat16 and other JAX-only dtypes as float32."""
    array = np.asarray(value)
    return array if array.dtype in _NUMPY_FLOATS else array.astype(np.float32)


def _fn_error(exc: Exception) -> UserCodeError:
    return UserCodeError(
        f"`fn` raised {type(exc).__name__} at the given arguments: {exc}", function="fn"
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    if not text:
        return type(exc).__name__
    line = text[0] if len(text[0]) <= 200 else text[0][:200].rsplit(" ", 1)[0] + " ..."
    return f"{type(exc).__name__}: {line}"
