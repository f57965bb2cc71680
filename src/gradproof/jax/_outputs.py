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


def _structure(
    fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], has_aux: bool
) -> tuple[list[Any], Any]:
    """Return `fn`'s output leaves (shapes and dtypes) and treedef, checked, without running it.

    ``jax.eval_shape`` traces `fn` without compiling or running anything: the
    first call of a process would otherwise compile every operation of `fn`
    one by one (Note [Cold start]). What cannot be traced (Python control flow
    on values, a string among the outputs) is called eagerly instead, which
    also turns an exception of `fn` into a UserCodeError.
    """
    try:
        raw = jax.eval_shape(lambda: fn(*args, **kwargs))
    except (KeyboardInterrupt, GeneratorExit):
        raise
    except Exception:
        return _call_eagerly(fn, args, kwargs, has_aux)
    return _checked(raw, has_aux)


def _call_eagerly(
    fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], has_aux: bool
) -> tuple[list[Any], Any]:
    """Call `fn` once at the given arguments; return its checked output leaves and treedef."""
    try:
        raw = fn(*args, **kwargs)
    except (KeyboardInterrupt, GeneratorExit):
        raise
    except Exception as exc:
        raise _fn_error(exc) from exc
    return _checked(raw, has_aux)


def _checked(raw: Any, has_aux: bool) -> tuple[list[Any], Any]:
    """Check that `fn` returned a pytree of real floating arrays; return its leaves and treedef."""
    if has_aux:
        if not isinstance(raw, (tuple, list)) or len(raw) != 2:
            raise InputError(
                f"`fn` returned a {type(raw).__name__}, but `has_aux=True` expects a pair "
                "`(output, aux)`. Return the pair, or drop `has_aux`."
            )
        raw = raw[0]
    leaves, treedef = jax.tree_util.tree_flatten(raw)
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
    return [
        leaf if isinstance(leaf, jax.ShapeDtypeStruct) else jnp.asarray(leaf) for leaf in leaves
    ], treedef


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


JACOBIAN_ROWS = 4
"""Outputs of at most this many entries are checked by Jacobian row (Note [Jacobian rows])."""


def _rows(outputs: list[Any], treedef: Any) -> list[tuple[str, list[_Array]]]:
    """One-hot cotangents, one per output entry, each with the entry's name (``out[1]``).

    Note [Jacobian rows]
        A random cotangent ``u`` weighs the outputs into one number, and the
        report then shows entries of ``u·J``, which nobody can compare with
        the derivative they expect. An output of a few entries is checked
        instead one entry at a time (``u`` one-hot), so every reported value is
        an entry of the Jacobian itself: ``d out[1] / d x[2]``. The compiled
        loss takes the cotangent as an argument, so the rows share one program.
    """
    keyed = jax.tree_util.tree_flatten_with_path(jax.tree_util.tree_unflatten(treedef, outputs))[0]
    single = len(outputs) == 1
    rows = []
    for k, ((path, _), out) in enumerate(zip(keyed, outputs, strict=True)):
        base = "out" + ("" if single else jax.tree_util.keystr(path))
        for flat in range(max(out.size, 1)):
            index = np.unravel_index(flat, out.shape) if out.shape else ()
            cotangent = [np.zeros(o.shape, np.dtype(o.dtype)) for o in outputs]
            cotangent[k].reshape(-1)[flat] = 1
            name = base + (f"[{', '.join(str(int(i)) for i in index)}]" if index else "")
            rows.append((name, cotangent))
    return rows


def _shown(values: list[_Array], limit: int = 6) -> str:
    """Write a few numbers of a (co)tangent for a note: ``[0.73, -1.2, ... (12 entries)]``."""
    flat = np.concatenate([np.ravel(np.asarray(v, np.float64)) for v in values])
    text = ", ".join(f"{v:.3g}" for v in flat[:limit])
    more = f", ... ({flat.size} entries)" if flat.size > limit else ""
    return f"[{text}{more}]"
