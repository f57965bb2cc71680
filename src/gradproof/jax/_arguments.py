"""The arguments of `fn`: differentiated leaves (named by pytree path), data, constants."""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gradproof.errors import InputError
from gradproof.jax._convert import _NUMPY_FLOATS, _Array


@dataclasses.dataclass(frozen=True)
class _Arguments:
    """The arguments split into differentiated leaves (named) and everything else.

    gradproof receives a nested dict keyed by the leaves' pytree keys (dict
    keys, sequence indices, attribute names), so it names the leaves as it
    names any container: ``w``, ``layers[0].bias``. A single argument whose
    leaves all sit under string keys is the root; otherwise each argument is
    under its name in `fn`'s signature (``x``, or ``arg0`` without one).

    Floating arrays that are not differentiated (data such as a batch of
    inputs) are passed to the compiled function as arguments, not baked into
    it as constants, which would make compilation slow for large data.
    Everything else (integers, strings, Python floats) is a constant.
    """

    treedefs: tuple[Any, ...]
    leaves: tuple[tuple[Any, ...], ...]
    slots: tuple[tuple[int, int], ...]  # (argument, leaf) of each differentiated leaf
    paths: tuple[tuple[Any, ...], ...]  # its keys in the container gradproof sees
    dtypes: tuple[np.dtype[Any], ...]  # its dtype in JAX
    proxies: tuple[np.dtype[Any], ...]  # its dtype in numpy (float32 for bfloat16)
    values: tuple[_Array, ...]  # numpy copies in the proxy dtype
    primals: tuple[Any, ...]  # the JAX arrays
    data_slots: tuple[tuple[int, int], ...]  # (argument, leaf) of each floating data array
    data: tuple[Any, ...]  # those arrays, in JAX
    n_positional: int = -1  # the arguments past it are one dict: `fn`'s keyword arguments

    @classmethod
    def read(
        cls,
        fn: Any,
        args: tuple[Any, ...],
        argnums: tuple[int, ...] | None,
        notes: list[str],
        kwargs: dict[str, Any] | None = None,
    ) -> _Arguments:
        names = _argument_names(fn, len(args))
        # Keyword arguments travel as one more argument, a dict, that is never differentiated
        # (as in jax.grad); its floating arrays are data.
        everything = (*args, dict(kwargs or {}))
        chosen_args = tuple(range(len(args))) if argnums is None else argnums
        found, data, skipped, treedefs, all_leaves = _split(
            everything, names, chosen_args, explicit=argnums is not None
        )
        if not found and argnums is None:
            # Note [Python scalars]: `f(2., 3.)` is how JAX's docs call jax.grad; with no
            # floating array anywhere, the Python floats are what there is to check.
            found, data, skipped, treedefs, all_leaves = _split(
                everything, names, chosen_args, explicit=True
            )
        if not found:
            raise InputError(_nothing_to_check(names, args, argnums))
        if skipped:
            notes.append(
                f"Complex leaves are passed through unchecked: {', '.join(skipped[:4])}. "
                "gradproof checks real parameters; split them into real and imaginary parts."
            )
        rooted = len({i for i, *_ in found}) == 1 and all(
            keys and isinstance(keys[0], str) for _, _, keys, _ in found
        )
        primals = tuple(jnp.asarray(leaf) for *_, leaf in found)
        dtypes = tuple(np.dtype(p.dtype) for p in primals)
        proxies = tuple(d if d in _NUMPY_FLOATS else np.dtype(np.float32) for d in dtypes)
        unusual = sorted({d.name for d in dtypes if d not in _NUMPY_FLOATS})
        if unusual:
            notes.append(
                f"Leaves of dtype {', '.join(unusual)} are checked through float32 copies and "
                "judged with float32's tolerance; pass `rtol=1e-2` for their precision."
            )
        return cls(
            treedefs=tuple(treedefs),
            leaves=tuple(all_leaves),
            n_positional=len(args),
            slots=tuple((i, j) for i, j, _, _ in found),
            paths=tuple(keys if rooted else (names[i], *keys) for i, _, keys, _ in found),
            dtypes=dtypes,
            proxies=proxies,
            values=tuple(np.asarray(p.astype(q)) for p, q in zip(primals, proxies, strict=True)),
            primals=primals,
            data_slots=tuple((i, j) for i, j, _ in data),
            data=tuple(jnp.asarray(leaf) for *_, leaf in data),
        )

    def rebuild(self, diff: Sequence[Any], data: Sequence[Any]) -> list[Any]:
        """Return the arguments with the differentiated leaves and the data replaced.

        The last element is the dict of `fn`'s keyword arguments (see :meth:`call`).
        """
        leaves = [list(arg_leaves) for arg_leaves in self.leaves]
        for (i, j), value in zip((*self.slots, *self.data_slots), (*diff, *data), strict=True):
            leaves[i][j] = value
        return [
            jax.tree_util.tree_unflatten(treedef, arg_leaves)
            for treedef, arg_leaves in zip(self.treedefs, leaves, strict=True)
        ]

    def call(self, fn: Any, diff: Sequence[Any], data: Sequence[Any]) -> Any:
        """Call `fn` with the differentiated leaves and the data replaced."""
        *args, kwargs = self.rebuild(diff, data)
        return fn(*args, **kwargs)

    def key(self) -> Any:
        """Return a hashable key of what compilation depends on: all but the moving leaves.

        Two checks of the same function whose arguments have the same structure,
        the same constants and the same differentiated and data slots compile to
        the same program (Note [Compiled once per process]). Raises TypeError when
        a constant cannot be hashed (a numpy integer array): such checks compile
        their own.
        """
        moving = set(self.slots) | set(self.data_slots)
        constants = tuple(
            tuple(
                None if (i, j) in moving else _hashable(leaf) for j, leaf in enumerate(arg_leaves)
            )
            for i, arg_leaves in enumerate(self.leaves)
        )
        key = (self.treedefs, constants, self.slots, self.data_slots, self.n_positional)
        hash(key)
        return key

    def container(self, leaves: Sequence[Any]) -> dict[Any, Any]:
        """Nest `leaves` (one per differentiated leaf) by their paths, for gradproof."""
        root: dict[Any, Any] = {}
        for keys, leaf in zip(self.paths, leaves, strict=True):
            node = root
            for key in keys[:-1]:
                node = node.setdefault(key, {})
            node[keys[-1]] = leaf
        return root

    def extract(self, container: Any) -> list[_Array]:
        """Read the differentiated leaves back out of a container gradproof built."""
        out = []
        for keys in self.paths:
            node = container
            for key in keys:
                node = node[key]
            out.append(node)
        return out


def _split(
    everything: tuple[Any, ...], names: list[str], chosen: tuple[int, ...], *, explicit: bool
) -> tuple[list[Any], list[Any], list[str], list[Any], list[tuple[Any, ...]]]:
    """Sort every leaf: differentiated (`found`), floating data, skipped complex leaves."""
    treedefs, all_leaves, found, data = [], [], [], []
    skipped: list[str] = []
    for i, arg in enumerate(everything):
        keyed, treedef = jax.tree_util.tree_flatten_with_path(arg)
        treedefs.append(treedef)
        all_leaves.append(tuple(leaf for _, leaf in keyed))
        for j, (path, leaf) in enumerate(keyed):
            keys = tuple(_key(entry) for entry in path)
            if i in chosen and _differentiable(leaf, explicit=explicit):
                found.append((i, j, keys, leaf))
            elif _differentiable(leaf, explicit=False):
                data.append((i, j, leaf))
            elif i in chosen and np.iscomplexobj(leaf):
                skipped.append(names[i] + jax.tree_util.keystr(path))
    return found, data, skipped, treedefs, all_leaves


def _hashable(leaf: Any) -> Any:
    """Return a constant leaf as a hashable key part, with its type (so that 1 and 1.0 differ)."""
    hash(leaf)
    return (type(leaf), leaf)


def _key(entry: Any) -> Any:
    """Return a pytree path entry's key: DictKey.key, SequenceKey.idx, GetAttrKey.name."""
    for attribute in ("key", "idx", "name"):
        if hasattr(entry, attribute):
            return getattr(entry, attribute)
    return str(entry)


def _differentiable(leaf: Any, *, explicit: bool) -> bool:
    if isinstance(leaf, (jax.Array, np.ndarray, np.generic)):
        return bool(jnp.issubdtype(leaf.dtype, jnp.floating))
    # A Python float is usually configuration (an epsilon, a temperature): checked only when
    # its argument is chosen with `argnums`, or when there is nothing else (Note [Python
    # scalars]).
    return explicit and isinstance(leaf, float)


def _argument_names(fn: Any, n: int) -> list[str]:
    """Name the positional arguments from `fn`'s signature (``arg0``, ... without one)."""
    names: list[str] = []
    try:
        parameters = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        parameters = []  # type: ignore[assignment]
    for parameter in parameters:
        if parameter.kind is inspect.Parameter.VAR_POSITIONAL:
            break
        if parameter.kind in (parameter.POSITIONAL_ONLY, parameter.POSITIONAL_OR_KEYWORD):
            names.append(parameter.name)
    return [names[i] if i < len(names) else f"arg{i}" for i in range(n)]


def _nothing_to_check(
    names: list[str], args: tuple[Any, ...], argnums: tuple[int, ...] | None
) -> str:
    if not args:
        return (
            "`check_function` got no arguments for `fn`: pass the point to check at, e.g. "
            "`check_function(fn, x)`."
        )
    shown = []
    for i, arg in enumerate(args):
        if argnums is not None and i not in argnums:
            continue
        leaves = jax.tree_util.tree_leaves(arg)
        kinds = sorted({_describe(leaf) for leaf in leaves}) or ["no leaves"]
        shown.append(f"`{names[i]}` holds {', '.join(kinds)}")
    chosen = "" if argnums is None else f" chosen by `argnums={list(argnums)}`"
    return (
        f"The arguments{chosen} hold no floating-point arrays to differentiate: "
        f"{'; '.join(shown)}. Pass floating-point arrays (e.g. `x.astype(jnp.float32)`), "
        "or choose the arguments to check with `argnums=` (which also checks Python floats)."
    )


def _describe(value: Any) -> str:
    dtype = getattr(value, "dtype", None)
    if dtype is not None:
        return f"{np.dtype(dtype).name} arrays"
    return type(value).__name__
