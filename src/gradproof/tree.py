"""Parameter containers flattened to one vector, with every leaf named by its path.

A model's parameters arrive as an array, a float, or nested dicts, lists and
tuples of arrays. The numerical core works on one flat float64 vector; this
module maps between the two and names each leaf the way a person would write
it: ``W1``, ``layers[0].weight``, ``params[2]``.
"""

from __future__ import annotations

import dataclasses
import math
import operator
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from gradproof._typing import FloatArray, Params
from gradproof._words import counted
from gradproof.errors import InputError

__all__ = ["Leaf", "ParamTree", "format_index"]

ROOT_NAME = "params"
"""The name given to a parameter container that is a single array or float."""

MAX_DEPTH = 100
"""Containers nested deeper than this are refused with a clear error, not a RecursionError."""

LeafKind = Literal["array", "float", "numpy_scalar"]


@dataclass(frozen=True, slots=True)
class Leaf:
    """One named array (or scalar) of a parameter container.

    Attributes
    ----------
    name : str
        The leaf's path in the container, e.g. ``"layers[0].weight"``.
    shape : tuple of int
        Its shape; ``()`` for a scalar.
    dtype : numpy.dtype
        Its floating dtype, kept when the container is rebuilt.
    offset : int
        Where its entries start in the flat vector.
    kind : {"array", "float", "numpy_scalar"}
        What to rebuild: an array, a Python float or a numpy scalar.
    """

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype[Any]
    offset: int
    kind: LeafKind

    @property
    def size(self) -> int:
        """Number of entries."""
        return math.prod(self.shape)

    @property
    def span(self) -> slice:
        """The leaf's slice of the flat vector."""
        return slice(self.offset, self.offset + self.size)


# A container node is one of:
#   ("leaf", index)                    index into ParamTree.leaves
#   ("dict", keys, children)           rebuilt as a plain dict
#   ("list" | "tuple", children)       rebuilt as a list or tuple
#   ("namedtuple", type, children)     rebuilt by calling the namedtuple type
_Node = tuple[Any, ...]


def format_index(name: str, index: tuple[int, ...]) -> str:
    """Name one entry of a leaf, e.g. ``W1[3, 2]``; a scalar leaf keeps its bare name."""
    if not index:
        return name
    return f"{name}[{', '.join(str(int(i)) for i in index)}]"


def _child_name(prefix: str, key: object) -> str:
    if isinstance(key, int):
        return f"{prefix or ROOT_NAME}[{key}]"
    if isinstance(key, str) and key.isidentifier():
        return f"{prefix}.{key}" if prefix else key
    return f"{prefix}[{key!r}]"


def _describe(value: object) -> str:
    kind = type(value)
    return (
        f"{kind.__module__}.{kind.__qualname__}" if kind.__module__ != "builtins" else kind.__name__
    )


def _is_namedtuple(value: object) -> bool:
    return isinstance(value, tuple) and hasattr(value, "_fields")


class ParamTree:
    """The structure of a parameter container and the named leaves it holds.

    Build one with :meth:`flatten`; it then rebuilds containers of the same
    structure from flat vectors (:meth:`unflatten`) and flattens other
    containers that must match it, such as gradients (:meth:`flatten_like`).

    Examples
    --------
    >>> import numpy as np
    >>> tree, x = ParamTree.flatten({"W": np.ones((2, 2)), "b": np.zeros(2)})
    >>> [leaf.name for leaf in tree.leaves], x.shape
    (['W', 'b'], (6,))
    >>> tree.unflatten(x)["b"]
    array([0., 0.])
    """

    __slots__ = ("_assemble", "_flat", "_last", "_node", "_views", "leaves", "size")

    def __init__(self, node: _Node, leaves: tuple[Leaf, ...]) -> None:
        self._node = node
        self.leaves = leaves
        self.size = sum(leaf.size for leaf in leaves)
        # unflatten runs once per loss evaluation: its plan is worked out here, once.
        self._assemble = _compile(node)
        self._views = all(leaf.kind == "array" and leaf.dtype == np.float64 for leaf in leaves)
        self._last: tuple[npt.NDArray[Any], list[Any], Any] | None = None
        # Each call gets a fresh container (the loss may change it): a one-level container of
        # leaves is copied from the last one, a nested one is assembled again.
        self._flat = node[0] in ("dict", "list") and all(
            child[0] == "leaf" for child in _children(node)
        )

    def __getstate__(self) -> tuple[_Node, tuple[Leaf, ...]]:
        return self._node, self.leaves

    def __setstate__(self, state: tuple[_Node, tuple[Leaf, ...]]) -> None:
        self.__init__(*state)  # type: ignore[misc]

    def __repr__(self) -> str:
        names = ", ".join(f"{leaf.name}{list(leaf.shape)}" for leaf in self.leaves)
        return f"ParamTree({names})"

    # -- building --------------------------------------------------------------------------
    @classmethod
    def flatten(cls, params: Params) -> tuple[ParamTree, FloatArray]:
        """Read a parameter container into a tree and a new flat float64 vector.

        Parameters
        ----------
        params : array_like, float, or nested dict/list/tuple of them
            Floating-point parameters. They are copied, never modified.

        Returns
        -------
        tree : ParamTree
            The container's structure and named leaves, in container order.
        vector : ndarray of shape (tree.size,), float64
            The entries of all leaves, each leaf in C order.

        Raises
        ------
        InputError
            If a leaf is not floating point (integers, booleans, complex numbers,
            objects), holds NaN or infinity, or the container is empty.
        """
        leaves: list[Leaf] = []
        values: list[FloatArray] = []

        def visit(value: object, name: str, depth: int = 0) -> _Node:
            if depth > MAX_DEPTH:
                raise InputError(
                    f"`params` is nested more than {MAX_DEPTH} containers deep (at "
                    f"`{name[:80]}...`); gradproof reads dicts, lists, tuples, named tuples "
                    "and dataclasses of arrays. Flatten the structure, e.g. into a dict of "
                    "arrays keyed by path."
                )
            depth += 1
            if dataclasses.is_dataclass(value) and not isinstance(value, type):
                names = _dataclass_fields(value, name)
                children = tuple(
                    visit(getattr(value, f), _child_name(name, f), depth) for f in names
                )
                return ("dataclass", type(value), names, children)
            if isinstance(value, Mapping):
                keys = tuple(value.keys())
                children = tuple(visit(value[k], _child_name(name, k), depth) for k in keys)
                return ("dict", keys, children)
            if _is_namedtuple(value):
                assert isinstance(value, tuple)  # for mypy: _is_namedtuple checked it
                fields: tuple[str, ...] = value._fields  # type: ignore[attr-defined]
                children = tuple(
                    visit(v, _child_name(name, f), depth)
                    for f, v in zip(fields, value, strict=True)
                )
                return ("namedtuple", type(value), children)
            if isinstance(value, (list, tuple)):
                kind = "list" if isinstance(value, list) else "tuple"
                items = tuple(visit(v, _child_name(name, i), depth) for i, v in enumerate(value))
                return (kind, items)
            leaf, flat = _read_leaf(value, name or ROOT_NAME, offset=sum(x.size for x in values))
            leaves.append(leaf)
            values.append(flat)
            return ("leaf", len(leaves) - 1)

        node = visit(params, "")
        if not leaves:
            raise InputError(
                f"`params` ({_describe(params)}) holds no arrays: there is nothing to check. "
                "Pass the model's parameters, e.g. {'W1': W1, 'b1': b1}."
            )
        vector = np.concatenate(values) if values else np.zeros(0)
        return cls(node, tuple(leaves)), vector

    # -- rebuilding ------------------------------------------------------------------------
    def unflatten(self, vector: npt.NDArray[Any]) -> Params:
        """Rebuild a container of this structure from a flat vector.

        Float64 array leaves are views into `vector` (no copy); leaves of other
        dtypes are cast copies, and scalar leaves come back as Python floats or
        numpy scalars, as they went in. A complex `vector` (for the complex
        step) gives complex128 arrays and Python complex scalars.

        Parameters
        ----------
        vector : ndarray of shape (self.size,), float64 or complex128
            The flat entries.

        Returns
        -------
        params
            A new container with the structure of the flattened one.
        """
        if self._views and vector.dtype == np.float64:
            # A sweep rebuilds from the same work vector every time: its views are reused, and
            # only the container around them is new.
            last = self._last
            if last is None or last[0] is not vector:
                built = [
                    vector[leaf.offset : leaf.offset + leaf.size].reshape(leaf.shape)
                    for leaf in self.leaves
                ]
                last = self._last = (vector, built, self._assemble(built))
            return last[2].copy() if self._flat else self._assemble(last[1])
        elif np.iscomplexobj(vector):
            built = [_build_complex_leaf(leaf, vector[leaf.span]) for leaf in self.leaves]
        else:
            built = [_build_leaf(leaf, vector[leaf.span]) for leaf in self.leaves]
        return self._assemble(built)

    def unflatten_batch(self, vectors: FloatArray) -> Params:
        """Rebuild one container of this structure whose leaves hold a batch of points.

        Parameters
        ----------
        vectors : ndarray of shape (B, self.size), float64
            One flat vector per row.

        Returns
        -------
        params
            A new container with the structure of the flattened one, whose
            leaves have a leading batch axis: an array leaf of shape ``S``
            becomes an array of shape ``(B, *S)`` and a scalar leaf an array of
            shape ``(B,)``, each in the leaf's dtype. Float64 leaves are views
            into `vectors` (no copy), as in :meth:`unflatten`.

        Raises
        ------
        InputError
            If `vectors` is not two-dimensional with ``self.size`` columns.

        Examples
        --------
        >>> import numpy as np
        >>> tree, x = ParamTree.flatten({"W": np.ones((2, 2)), "b": 0.5})
        >>> batch = tree.unflatten_batch(np.stack([x, 2 * x, 3 * x]))
        >>> batch["W"].shape, batch["b"]
        ((3, 2, 2), array([0.5, 1. , 1.5]))
        """
        if vectors.ndim != 2 or vectors.shape[1] != self.size:
            raise InputError(
                f"`vectors` has shape {vectors.shape}; expected (B, {self.size}): one flat "
                f"vector of the {self.size} parameters per row. Stack the vectors with "
                "`np.stack(list_of_vectors)`."
            )
        built = [_build_batched_leaf(leaf, vectors[:, leaf.span]) for leaf in self.leaves]
        return self._assemble(built)

    def with_dtype(self, dtype: np.dtype[Any] | type[Any]) -> ParamTree:
        """Return the same tree with every leaf rebuilt in `dtype` (e.g. float32 as float64)."""
        leaves = tuple(
            Leaf(
                name=leaf.name,
                shape=leaf.shape,
                dtype=np.dtype(dtype),
                offset=leaf.offset,
                kind=leaf.kind,
            )
            for leaf in self.leaves
        )
        return ParamTree(self._node, leaves)

    def flatten_like(self, other: Params, *, what: str = "gradient") -> FloatArray:
        """Flatten a container that must have exactly this tree's structure and shapes.

        Parameters
        ----------
        other : container
            For example the gradients returned by a backward pass.
        what : str, optional
            What `other` is, for error messages.

        Returns
        -------
        vector : ndarray of shape (self.size,), float64
            A new vector; `other` is not modified.

        Raises
        ------
        InputError
            If a key is missing or extra, a sequence has the wrong length, a leaf
            has the wrong shape, or a leaf is not numeric.
        """
        out = np.empty(self.size, dtype=np.float64)
        wrong_shapes: list[str] = []  # every leaf of the wrong shape, reported together
        for leaf, value in _match(self._node, other, self.leaves, "", what):
            array = _read_matching_leaf(value, leaf, what)
            if array.shape != leaf.shape:
                wrong_shapes.append(_shape_problem(array.shape, leaf))
                continue
            out[leaf.span] = np.array(array, dtype=np.float64).reshape(-1)
        if len(wrong_shapes) == 1:
            raise InputError(f"The {what} for {wrong_shapes[0]}")
        if wrong_shapes:
            listed = "\n".join(f"  - {problem}" for problem in wrong_shapes)
            raise InputError(
                f"The {what} has the wrong shape for {len(wrong_shapes)} parameters:\n{listed}"
            )
        return out

    def locate(self, flat_index: int) -> tuple[Leaf, tuple[int, ...]]:
        """Map a position in the flat vector to its leaf and index within that leaf."""
        for leaf in self.leaves:
            if leaf.offset <= flat_index < leaf.offset + leaf.size:
                index = np.unravel_index(flat_index - leaf.offset, leaf.shape) if leaf.shape else ()
                return leaf, tuple(int(i) for i in index)
        raise IndexError(f"flat index {flat_index} is outside 0..{self.size - 1}")


# -- leaves -----------------------------------------------------------------------------------
def _read_leaf(value: object, name: str, *, offset: int) -> tuple[Leaf, FloatArray]:
    kind: LeafKind
    if isinstance(value, (bool, np.bool_)):
        raise InputError(
            f"`{name}` is the boolean {value!r}; finite differences need floating-point "
            f"parameters. Pass `{float(value)!r}` instead, or leave flags out of the parameters."
        )
    if isinstance(value, (int, np.integer)):
        raise InputError(
            f"`{name}` is the integer {value!r}; finite differences need floating-point "
            f"parameters. Pass `{float(value)!r}` instead."
        )
    # np.float64 subclasses float: test for numpy scalars first, to give back what came in.
    if isinstance(value, np.generic):
        kind, array = "numpy_scalar", np.asarray(value)
    elif isinstance(value, float):
        kind, array = "float", np.asarray(value, dtype=np.float64)
    elif isinstance(value, np.ndarray):
        kind, array = "array", value
    else:
        raise InputError(
            f"`{name}` is a {_describe(value)}; gradproof.check takes numpy arrays and floats, "
            "in dicts, lists, tuples, named tuples and dataclasses. Convert it with "
            "`np.asarray(...)` (for a torch tensor, `t.detach().cpu().numpy()`)."
        )
    if array.dtype.kind in "iub":
        kind_word = "boolean" if array.dtype.kind == "b" else "integer"
        raise InputError(
            f"`{name}` has {kind_word} dtype {array.dtype}; finite differences need "
            f"floating-point parameters. Pass `{name}.astype(np.float64)`, or leave masks and "
            "indices out of the parameters."
        )
    if array.dtype.kind != "f":
        raise InputError(
            f"`{name}` has dtype {array.dtype}; gradproof checks real floating-point parameters "
            "(float16, float32, float64). Pass real parameters, splitting complex ones into "
            "real and imaginary parts."
        )
    if not np.all(np.isfinite(array)):
        bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
        entries = counted(bad, "NaN or infinite entry", "NaN or infinite entries")
        raise InputError(
            f"`{name}` holds {entries}; a gradient can only be checked at a finite point. "
            "Check the model's initialisation."
        )
    leaf = Leaf(name=name, shape=tuple(array.shape), dtype=array.dtype, offset=offset, kind=kind)
    return leaf, np.array(array, dtype=np.float64).reshape(-1)


def _build_leaf(leaf: Leaf, values: FloatArray) -> Any:
    if leaf.kind == "float":
        return float(values[0])
    if leaf.kind == "numpy_scalar":
        return leaf.dtype.type(values[0])
    if leaf.dtype == np.float64:
        return values.reshape(leaf.shape)
    return values.astype(leaf.dtype).reshape(leaf.shape)


def _build_batched_leaf(leaf: Leaf, values: FloatArray) -> Any:
    """Rebuild a leaf with a leading batch axis; `values` has one row per point."""
    if leaf.kind != "array":
        return values[:, 0].astype(leaf.dtype, copy=False)
    shape = (values.shape[0], *leaf.shape)
    if leaf.dtype == np.float64:
        return values.reshape(shape)
    return values.astype(leaf.dtype).reshape(shape)


def _build_complex_leaf(leaf: Leaf, values: npt.NDArray[Any]) -> Any:
    """Rebuild a leaf for the complex step: complex128 arrays, Python complex scalars."""
    if leaf.kind != "array":
        return complex(values[0])
    return values.reshape(leaf.shape)


def _read_matching_leaf(value: object, leaf: Leaf, what: str) -> npt.NDArray[Any]:
    """Read a leaf's counterpart as a real array; its shape is checked by the caller."""
    try:
        array = np.asarray(value)
    except Exception as exc:  # e.g. a tensor that refuses conversion
        raise InputError(
            f"The {what} for `{leaf.name}` ({_describe(value)}) cannot be read as a numpy array "
            f"({exc}). Return a numpy array of shape {leaf.shape}."
        ) from exc
    if array.dtype.kind not in "fiu":
        raise InputError(
            f"The {what} for `{leaf.name}` has dtype {array.dtype}; expected real numbers of "
            f"shape {leaf.shape}. Return a float array."
        )
    return array


def _shape_problem(shape: tuple[int, ...], leaf: Leaf) -> str:
    """Say how an array of `shape`, given for `leaf`, is wrong, with what to do about it."""
    if len(shape) == 2 and shape == leaf.shape[::-1]:
        # A reshape would scramble a transposed gradient: qualify it, and name the transpose.
        hint = (
            f" It has the right number of entries: reshape it with `.reshape{leaf.shape}` "
            "only if its entries are already in order. It looks transposed: return its "
            "`.T`, or check the order of the product in its backward."
        )
    elif math.prod(shape) == leaf.size:
        hint = (
            f" It has the right number of entries: reshape it with `.reshape{leaf.shape}` "
            "(or keep the summed axis with `keepdims=True`)."
        )
    else:
        hint = " Check which axes the backward sums over."
    expected = f"expected {leaf.shape}, the shape of `{leaf.name}`"
    return f"`{leaf.name}` has shape {shape}; {expected}.{hint}"


# -- structure --------------------------------------------------------------------------------
def _children(node: _Node) -> tuple[_Node, ...]:
    if node[0] == "leaf":
        return ()
    return tuple(node[-1])


def _dataclass_fields(value: object, name: str) -> tuple[str, ...]:
    """Return a dataclass instance's fields, all of which a rebuilt copy must take."""
    fields = dataclasses.fields(value)  # type: ignore[arg-type]
    hidden = [f.name for f in fields if not f.init]
    if hidden:
        raise InputError(
            f"`{name or ROOT_NAME}` is a {type(value).__qualname__} dataclass with fields that "
            f"its constructor does not take ({', '.join(hidden)}), so gradproof cannot rebuild "
            "it at perturbed points. Pass its arrays in a dict, e.g. "
            "`dataclasses.asdict(params)`, and rebuild it inside the loss."
        )
    return tuple(f.name for f in fields)


def _compile(node: _Node) -> Callable[[list[Any]], Any]:
    """Turn a container node into a function that assembles the container from built leaves."""
    tag = node[0]
    if tag == "leaf":
        return operator.itemgetter(node[1])
    if tag == "dict":
        keys, children = node[1], [_compile(child) for child in node[2]]
        pairs = tuple(zip(keys, children, strict=True))
        return lambda built: {key: child(built) for key, child in pairs}
    if tag in ("list", "tuple"):
        items = [_compile(child) for child in node[1]]
        if tag == "list":
            return lambda built: [item(built) for item in items]
        return lambda built: tuple(item(built) for item in items)
    if tag == "dataclass":
        make, names = node[1], node[2]
        parts = tuple(zip(names, [_compile(child) for child in node[3]], strict=True))
        return lambda built: make(**{field: child(built) for field, child in parts})
    make, fields = node[1], [_compile(child) for child in node[2]]
    return lambda built: make(*(field(built) for field in fields))


def _match(
    node: _Node, other: object, leaves: tuple[Leaf, ...], name: str, what: str
) -> Iterator[tuple[Leaf, object]]:
    """Walk `other` alongside the tree, yielding each leaf with its counterpart."""
    tag = node[0]
    at = f" at `{name}`" if name else ""
    if tag == "leaf":
        yield leaves[node[1]], other
        return
    if tag in ("dict", "dataclass"):
        keys: tuple[Any, ...] = node[1] if tag == "dict" else node[2]
        expected = "a dict" if tag == "dict" else f"a {node[1].__qualname__} (or a dict)"
        if tag == "dataclass" and dataclasses.is_dataclass(other) and not isinstance(other, type):
            other = {f.name: getattr(other, f.name) for f in dataclasses.fields(other)}
        if not isinstance(other, Mapping):
            raise InputError(
                f"The {what}{at} is a {_describe(other)}; expected {expected} with keys "
                f"{list(keys)}, like the parameters."
            )
        _check_keys(keys, other, at, what)
        for key, child in zip(keys, node[-1], strict=True):
            yield from _match(child, other[key], leaves, _child_name(name, key), what)
        return
    children = node[-1]
    if not isinstance(other, Sequence) or isinstance(other, (str, bytes)):
        expected = "list" if tag == "list" else "tuple"
        raise InputError(
            f"The {what}{at} is a {_describe(other)}; expected a {expected} of "
            f"{len(children)} entries, like the parameters."
        )
    if len(other) != len(children):
        raise InputError(
            f"The {what}{at} has {len(other)} entries; expected {len(children)}, one per "
            "entry of the parameters."
        )
    for i, (child, value) in enumerate(zip(children, other, strict=True)):
        yield from _match(child, value, leaves, _child_name(name, i), what)


def _check_keys(keys: tuple[Any, ...], other: Mapping[Any, Any], at: str, what: str) -> None:
    missing = [k for k in keys if k not in other]
    extra = [k for k in other if k not in keys]
    if not missing and not extra:
        return
    parts = []
    if missing:
        parts.append(f"is missing {_plural_keys(missing)}")
    if extra:
        parts.append(f"has unexpected {_plural_keys(extra)}")
    message = f"The {what}{at} {' and '.join(parts)}; expected exactly the keys {list(keys)}."
    prefixed = [k for k in missing if isinstance(k, str) and f"d{k}" in other]
    if prefixed:
        message += (
            f" It names gradients with a 'd' prefix (`d{prefixed[0]}` for `{prefixed[0]}`): "
            "pass `{name: grads['d' + name] for name in params}`."
        )
    else:
        message += " Return one gradient per parameter, under the parameter's own key."
    raise InputError(message)


def _plural_keys(keys: list[Any]) -> str:
    shown = ", ".join(repr(k) for k in keys[:8]) + (", ..." if len(keys) > 8 else "")
    return f"key{'s' if len(keys) > 1 else ''} {shown}"
