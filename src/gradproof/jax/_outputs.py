"""The outputs of `fn` at the point, and the random cotangents that make them a scalar.

See Note [Scalar loss from any output] in the docstring of :mod:`gradproof.jax`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gradproof.errors import InputError
from gradproof.jax._convert import _Array, _fn_error


def _call_eagerly(fn: Callable[..., Any], args: tuple[Any, ...], has_aux: bool) -> list[Any]:
    """Call `fn` once at the given arguments and return its checked output leaves."""
    try:
        raw = fn(*args)
    except (KeyboardInterrupt, GeneratorExit):
        raise
    except Exception as exc:
        raise _fn_error(exc) from exc
    if has_aux:
        if not isinstance(raw, (tuple, list)) or len(raw) != 2:
            raise InputError(
                f"`fn` returned a {type(raw).__name__}, but `has_aux=True` expects a pair "
                "`(output, aux)`. Return the pair, or drop `has_aux`."
            )
        raw = raw[0]
    leaves = jax.tree_util.tree_leaves(raw)
    if not leaves:
        raise InputError(
            f"`fn` returned {raw!r}, which holds no arrays; expected a scalar or a pytree of "
            "floating-point arrays. Return the value whose derivative is checked."
        )
    for leaf in leaves:
        dtype = getattr(leaf, "dtype", None)
        if dtype is None and isinstance(leaf, (bool, int, float)):
            dtype = jnp.asarray(leaf).dtype  # a Python number: float counts, int does not
        if dtype is None:
            raise InputError(
                f"`fn` returned a {type(leaf).__name__} ({leaf!r:.60}) among its outputs; "
                "expected a scalar or a pytree of floating-point arrays. Return only arrays "
                "(pass `has_aux=True` to return `(output, aux)`)."
            )
        if not jnp.issubdtype(dtype, jnp.floating):
            raise InputError(
                f"`fn` returned an output of dtype {np.dtype(dtype).name}; only real "
                "floating-point outputs have derivatives to check. Return only those (e.g. "
                "`lambda *a: fn(*a)[0]`), split complex outputs into real and imaginary "
                "parts, or pass `has_aux=True` to return `(output, aux)`."
            )
    return [jnp.asarray(leaf) for leaf in leaves]


def _cotangents(outputs: list[Any], count: int, rng: np.random.Generator) -> list[list[_Array]]:
    """Draw random cotangents for the outputs (Note [Scalar loss from any output])."""
    dtypes = [np.dtype(out.dtype) for out in outputs]
    if len(outputs) == 1 and outputs[0].size == 1:
        return [[np.ones(outputs[0].shape, dtypes[0])]]
    return [
        [
            (rng.choice([-1.0, 1.0], size=out.shape) * rng.uniform(0.5, 1.5, size=out.shape))
            .astype(dtype)
            .reshape(out.shape)
            for out, dtype in zip(outputs, dtypes, strict=True)
        ]
        for _ in range(count)
    ]
