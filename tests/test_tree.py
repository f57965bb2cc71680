"""ParamTree: flattening named parameter containers to one vector and back."""

from __future__ import annotations

import copy
import pickle
from collections import OrderedDict, namedtuple
from typing import Any

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gradproof import InputError
from gradproof.tree import ParamTree, format_index
from tests.helpers import assert_same

Layer = namedtuple("Layer", ["weight", "bias"])


def _arange(*shape: int, dtype: Any = np.float64, start: float = 0.0) -> np.ndarray:
    return (start + np.arange(int(np.prod(shape)), dtype=np.float64)).reshape(shape).astype(dtype)


# -- round trips -------------------------------------------------------------------------------
ROUND_TRIPS = {
    "dict": {"W1": _arange(2, 3), "b1": _arange(2, start=10.0)},
    "nested-lists": [[_arange(2)], [_arange(1, 2, start=5.0), [_arange(3, start=-4.0)]]],
    "tuple": (_arange(2), 0.25, (_arange(2, 2, start=1.5),)),
    "namedtuple": {"layer": Layer(weight=_arange(2, 2), bias=_arange(2, start=0.5))},
    "root-array": _arange(3, 2, 2, start=-6.0),
    "root-0d-array": np.array(2.5),
    "root-float": 4.0,
    "numpy-float32-scalar": np.float32(1.5),
    "numpy-float16-scalar": np.float16(-0.375),
    "mixed-dtypes": {"a": _arange(2, dtype=np.float16), "b": _arange(3, dtype=np.float32)},
    "fortran-order": np.asfortranarray(_arange(3, 4)),
    "strided-view": _arange(4, 6)[::2, 1::2],
    "zero-size-leaf": {"empty": np.zeros((0, 3)), "w": _arange(2)},
}


@pytest.mark.parametrize("params", list(ROUND_TRIPS.values()), ids=list(ROUND_TRIPS))
def test_unflatten_rebuilds_what_flatten_read(params):
    before = copy.deepcopy(params)
    tree, vector = ParamTree.flatten(params)
    assert vector.dtype == np.float64
    assert vector.shape == (tree.size,)
    assert_same(tree.unflatten(vector), params)
    assert_same(params, before)  # flatten never modifies its input


def test_numpy_float64_scalar_comes_back_as_numpy_scalar():
    tree, vector = ParamTree.flatten({"t": np.float64(0.5)})
    assert tree.leaves[0].kind == "numpy_scalar"
    assert type(tree.unflatten(vector)["t"]) is np.float64


def test_vector_holds_leaves_in_container_order_each_in_c_order():
    params = {"W": np.asfortranarray([[1.0, 2.0], [3.0, 4.0]]), "b": [5.0, np.array([6.0])]}
    tree, vector = ParamTree.flatten(params)
    np.testing.assert_array_equal(vector, [1.0, 2.0, 3.0, 4.0, 5.0, 6.0], strict=True)
    assert [leaf.name for leaf in tree.leaves] == ["W", "b[0]", "b[1]"]


def test_leaves_record_shape_dtype_offset_and_kind():
    params = {
        "W": np.ones((2, 3), dtype=np.float32),
        "s": 1.0,
        "h": np.float16(2.0),
        "z": np.array(3.0),
    }
    tree, _ = ParamTree.flatten(params)
    described = [
        (leaf.name, leaf.shape, leaf.dtype, leaf.offset, leaf.size, leaf.span, leaf.kind)
        for leaf in tree.leaves
    ]
    assert described == [
        ("W", (2, 3), np.dtype(np.float32), 0, 6, slice(0, 6), "array"),
        ("s", (), np.dtype(np.float64), 6, 1, slice(6, 7), "float"),
        ("h", (), np.dtype(np.float16), 7, 1, slice(7, 8), "numpy_scalar"),
        ("z", (), np.dtype(np.float64), 8, 1, slice(8, 9), "array"),
    ]
    assert tree.size == 9
    assert repr(tree) == "ParamTree(W[2, 3], s[], h[], z[])"


def test_dict_subclasses_are_rebuilt_as_plain_dicts_in_their_order():
    params = OrderedDict([("b", np.ones(1)), ("a", np.zeros(2))])
    tree, vector = ParamTree.flatten(params)
    rebuilt = tree.unflatten(vector)
    assert type(rebuilt) is dict
    assert list(rebuilt) == ["b", "a"]


def test_insertion_order_is_kept_not_sorted():
    params = {"z": np.ones(1), "a": np.full(2, 2.0), "m": 3.0}
    tree, vector = ParamTree.flatten(params)
    assert [leaf.name for leaf in tree.leaves] == ["z", "a", "m"]
    np.testing.assert_array_equal(vector, [1.0, 2.0, 2.0, 3.0], strict=True)
    assert list(tree.unflatten(vector)) == ["z", "a", "m"]


# -- names -------------------------------------------------------------------------------------
NAMES = {
    "top-level-keys": ({"W1": np.ones(2), "b1": 0.0}, ["W1", "b1"]),
    "path": (
        {"layers": [{"weight": np.ones(2), "bias": np.ones(1)}]},
        ["layers[0].weight", "layers[0].bias"],
    ),
    "root-list": ([np.ones(2), np.ones(3)], ["params[0]", "params[1]"]),
    "root-tuple": ((1.0, np.ones(1)), ["params[0]", "params[1]"]),
    "root-array": (np.ones((2, 2)), ["params"]),
    "root-float": (1.0, ["params"]),
    "root-namedtuple": (Layer(np.ones(1), np.ones(1)), ["weight", "bias"]),
    "namedtuple-in-tuple": (
        (np.ones(1), Layer(np.ones(1), 1.0)),
        ["params[0]", "params[1].weight", "params[1].bias"],
    ),
    "nested-lists": ({"x": [[np.ones(1), 2.0]]}, ["x[0][0]", "x[0][1]"]),
    "non-identifier-key": ({"my key": np.ones(1)}, ["['my key']"]),
    "nested-non-identifier-key": (
        {"net": {"my key": 1.0, "2b": 2.0}},
        ["net['my key']", "net['2b']"],
    ),
    "int-keys": ({3: np.ones(1), 7: 2.0}, ["params[3]", "params[7]"]),
    "nested-int-key": ({"net": {0: np.ones(1)}}, ["net[0]"]),
}


@pytest.mark.parametrize(("params", "names"), list(NAMES.values()), ids=list(NAMES))
def test_leaves_are_named_by_their_path(params, names):
    tree, _ = ParamTree.flatten(params)
    assert [leaf.name for leaf in tree.leaves] == names


@pytest.mark.parametrize(
    ("name", "index", "expected"),
    [
        ("W1", (3, 2), "W1[3, 2]"),
        ("b", (0,), "b[0]"),
        ("layers[0].weight", (1, 0), "layers[0].weight[1, 0]"),
        ("s", (), "s"),
        ("W", (np.intp(4), np.int64(1)), "W[4, 1]"),
    ],
    ids=["matrix", "vector", "path", "scalar", "numpy-ints"],
)
def test_format_index(name, index, expected):
    assert format_index(name, index) == expected


# -- dtypes and memory -------------------------------------------------------------------------
def test_rebuilt_leaves_keep_their_dtype():
    params = {
        "w32": np.array([0.1, 0.2], dtype=np.float32),
        "w16": np.array([0.5], dtype=np.float16),
        "w64": np.array([0.3]),
        "f": 2.0,
        "s32": np.float32(0.7),
    }
    tree, vector = ParamTree.flatten(params)
    vector = vector + 0.125  # a perturbed point, as the finite differences produce
    rebuilt = tree.unflatten(vector)
    assert rebuilt["w32"].dtype == np.float32
    assert rebuilt["w16"].dtype == np.float16
    assert rebuilt["w64"].dtype == np.float64
    assert type(rebuilt["f"]) is float
    assert type(rebuilt["s32"]) is np.float32
    # Non-float64 leaves are the vector rounded to their dtype (one correct rounding each).
    np.testing.assert_array_equal(rebuilt["w32"], vector[0:2].astype(np.float32), strict=True)
    assert rebuilt["f"] == vector[4]


def test_float64_leaves_are_views_of_the_vector_others_are_copies():
    params = {"W": np.ones((2, 2)), "v": np.ones(2, dtype=np.float32), "f": 1.0}
    tree, vector = ParamTree.flatten(params)
    rebuilt = tree.unflatten(vector)
    assert np.shares_memory(rebuilt["W"], vector)
    assert not np.shares_memory(rebuilt["v"], vector)
    vector[3] = 7.0
    assert rebuilt["W"][1, 1] == 7.0


def test_flatten_copies_its_input():
    params = {"W": np.ones((2, 2)), "b": [np.zeros(2)]}
    before = copy.deepcopy(params)
    _, vector = ParamTree.flatten(params)
    assert not np.shares_memory(vector, params["W"])
    vector[:] = 5.0
    assert_same(params, before)


# -- bad parameters (the common ones are covered through check() in test_check.py) ----------
@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"n": np.int32(3)}, r"`n` is the integer np\.int32\(3\).*Pass `3\.0` instead"),
        ({"W": np.array([1.0, np.inf, -np.inf])}, r"`W` holds 2 NaN or infinite entries"),
        ({"W": None}, r"`W` is a NoneType; gradproof\.check takes numpy arrays and floats"),
        ({"W": np.ones(2, dtype=bool)}, r"`W` has boolean dtype bool.*astype\(np\.float64\)"),
        ([[], {}], r"`params` \(list\) holds no arrays: there is nothing to check"),
        ({"layers": [{"w": "1.0"}]}, r"`layers\[0\]\.w` is a str"),
    ],
    ids=["numpy-int", "infinities", "none", "bool-array", "empty-nested", "nested-path"],
)
def test_unusable_leaves_are_refused_by_name(params, match):
    with pytest.raises(InputError, match=match):
        ParamTree.flatten(params)


# -- flatten_like ------------------------------------------------------------------------------
@pytest.fixture
def tree():
    params = {
        "W": np.zeros((2, 3)),
        "layers": [{"weight": np.zeros(2), "bias": 0.0}],
        "pair": (np.zeros(1), np.zeros(1)),
    }
    return ParamTree.flatten(params)[0]


def _good_grad() -> dict[str, Any]:
    return {
        "W": np.arange(6.0).reshape(2, 3),
        "layers": [{"weight": np.array([6.0, 7.0]), "bias": 8.0}],
        "pair": (np.array([9.0]), np.array([10.0])),
    }


def test_flatten_like_reads_gradients_in_the_parameters_order(tree):
    grad = _good_grad()
    before = copy.deepcopy(grad)
    flat = tree.flatten_like(grad)
    np.testing.assert_array_equal(flat, np.arange(11.0), strict=True)
    assert_same(grad, before)
    assert not np.shares_memory(flat, grad["W"])


def test_flatten_like_accepts_int_gradients_lists_for_tuples_and_key_order(tree):
    grad = {
        "pair": [np.array([9]), np.array([10], dtype=np.int8)],  # a list where a tuple was
        "layers": [{"bias": 8, "weight": np.array([6, 7], dtype=np.uint16)}],
        "W": np.arange(6).reshape(2, 3),
    }
    flat = tree.flatten_like(grad)
    np.testing.assert_array_equal(flat, np.arange(11.0), strict=True)


def test_flatten_like_of_float32_gradients_is_float64(tree):
    grad = _good_grad()
    grad["W"] = grad["W"].astype(np.float32) / 3
    flat = tree.flatten_like(grad)
    assert flat.dtype == np.float64
    np.testing.assert_array_equal(flat[:6], (np.arange(6.0) / 3).astype(np.float32), strict=False)


def _with(**changes: Any) -> dict[str, Any]:
    grad = _good_grad()
    grad.update(changes)
    return grad


FLATTEN_LIKE_ERRORS = {
    "keepdims": (
        _with(W=np.zeros((3, 2))),
        r"^The gradient for `W` has shape \(3, 2\); expected \(2, 3\), the shape of `W`\. "
        r"It has the right number of entries: reshape it with `\.reshape\(2, 3\)`",
    ),
    "wrong-size": (
        _with(W=np.zeros(5)),
        r"for `W` has shape \(5,\); expected \(2, 3\).* Check which axes the backward sums over",
    ),
    "scalar-leaf-shape": (
        _with(layers=[{"weight": np.zeros(2), "bias": np.zeros(2)}]),
        r"for `layers\[0\]\.bias` has shape \(2,\); expected \(\)",
    ),
    "missing-nested-key": (
        _with(layers=[{"weight": np.zeros(2)}]),
        r"^The gradient at `layers\[0\]` is missing key 'bias'; expected exactly the keys "
        r"\['weight', 'bias'\]\. Return one gradient per parameter",
    ),
    "extra-keys": (
        _with(V=1.0, U=2.0),
        r"^The gradient has unexpected keys 'V', 'U'; expected exactly the keys "
        r"\['W', 'layers', 'pair'\]",
    ),
    "missing-and-extra": (
        {"W": np.zeros((2, 3)), "layers": [{"weight": np.zeros(2), "bias": 0.0}], "pairs": 1},
        r"is missing key 'pair' and has unexpected key 'pairs'",
    ),
    "d-prefix": (
        {"dW": 0, "dlayers": 0, "dpair": 0},
        r"'d' prefix \(`dW` for `W`\): pass `\{name: grads\['d' \+ name\] for name in params\}`",
    ),
    "dict-expected": (
        [np.zeros((2, 3))],
        r"^The gradient is a list; expected a dict with keys \['W', 'layers', 'pair'\], "
        r"like the parameters\.",
    ),
    "list-expected": (
        _with(layers={"weight": np.zeros(2), "bias": 0.0}),
        r"^The gradient at `layers` is a dict; expected a list of 1 entries",
    ),
    "tuple-expected-got-array": (
        _with(pair=np.zeros(2)),
        r"^The gradient at `pair` is a numpy\.ndarray; expected a tuple of 2 entries",
    ),
    "string-is-not-a-sequence": (
        _with(pair="ab"),
        r"at `pair` is a str; expected a tuple of 2 entries",
    ),
    "length": (
        _with(pair=(np.zeros(1),)),
        r"^The gradient at `pair` has 1 entries; expected 2, one per entry of the parameters\.",
    ),
    "bool-dtype": (
        _with(W=np.zeros((2, 3), dtype=bool)),
        r"for `W` has dtype bool; expected real numbers of shape \(2, 3\)\. Return a float array",
    ),
    "complex-dtype": (
        _with(W=np.zeros((2, 3), dtype=complex)),
        r"for `W` has dtype complex128",
    ),
    "none-leaf": (_with(W=None), r"for `W` has dtype object"),
}


@pytest.mark.parametrize(
    ("grad", "match"), list(FLATTEN_LIKE_ERRORS.values()), ids=list(FLATTEN_LIKE_ERRORS)
)
def test_flatten_like_refuses_mismatched_gradients(tree, grad, match):
    before = copy.deepcopy(grad)
    with pytest.raises(InputError, match=match):
        tree.flatten_like(grad)
    assert_same(grad, before)


def test_flatten_like_reports_every_wrong_shape_at_once(tree):
    """Three leaves of the wrong shape: one error names all three, each with its own hint."""
    grad = _with(
        W=np.zeros((3, 2)),  # transposed
        layers=[{"weight": np.zeros((2, 1)), "bias": np.zeros(3)}],  # keepdims; wrong size
    )
    with pytest.raises(InputError) as caught:
        tree.flatten_like(grad)
    lines = str(caught.value).splitlines()
    assert lines == [
        "The gradient has the wrong shape for 3 parameters:",
        "  - `W` has shape (3, 2); expected (2, 3), the shape of `W`. It has the right number "
        "of entries: reshape it with `.reshape(2, 3)` only if its entries are already in order. "
        "It looks transposed: return its `.T`, or check the order of the product in its "
        "backward.",
        "  - `layers[0].weight` has shape (2, 1); expected (2,), the shape of "
        "`layers[0].weight`. It has the right number of entries: reshape it with "
        "`.reshape(2,)` (or keep the summed axis with `keepdims=True`).",
        "  - `layers[0].bias` has shape (3,); expected (), the shape of `layers[0].bias`. "
        "Check which axes the backward sums over.",
    ]


def test_flatten_like_reports_two_wrong_shapes_and_not_the_right_ones(tree):
    grad = _with(W=np.zeros(6), pair=(np.zeros(1), np.zeros(2)))
    with pytest.raises(InputError, match=r"^The gradient has the wrong shape for 2 parameters:\n"):
        tree.flatten_like(grad)
    try:
        tree.flatten_like(grad)
    except InputError as error:
        message = str(error)
    assert "`W` has shape (6,)" in message and "keepdims=True" in message
    assert "`pair[1]` has shape (2,)" in message
    assert "`pair[0]`" not in message and "`layers" not in message


def test_flatten_like_names_what_it_reads(tree):
    with pytest.raises(InputError, match=r"^The Hessian diagonal for `W` has shape \(1,\)"):
        tree.flatten_like(_with(W=np.zeros(1)), what="Hessian diagonal")


def test_flatten_like_lists_at_most_eight_keys():
    tree = ParamTree.flatten({"w": 1.0})[0]
    extra = {f"k{i}": 0.0 for i in range(10)}
    with pytest.raises(InputError, match=r"unexpected keys 'k0', .*'k7', \.\.\.;"):
        tree.flatten_like({"w": 0.0, **extra})


class _Unconvertible:
    def __array__(self, dtype=None, copy=None):
        raise RuntimeError("tensor is on the GPU")


def test_flatten_like_explains_unconvertible_leaves():
    tree = ParamTree.flatten({"w": np.zeros(2)})[0]
    with pytest.raises(
        InputError,
        match=r"^The gradient for `w` \([\w.]*_Unconvertible\) cannot be read as a numpy array "
        r"\(tensor is on the GPU\)\. Return a numpy array of shape \(2,\)\.$",
    ) as info:
        tree.flatten_like({"w": _Unconvertible()})
    assert isinstance(info.value.__cause__, RuntimeError)


# -- locate ------------------------------------------------------------------------------------
def test_locate_maps_flat_indices_back_to_leaf_and_index():
    params = {"W": np.zeros((2, 3)), "b": np.zeros(2), "s": 0.0, "T": np.zeros((1, 2, 2))}
    tree = ParamTree.flatten(params)[0]
    found = [(leaf.name, index) for leaf, index in map(tree.locate, range(tree.size))]
    assert found == [
        ("W", (0, 0)),
        ("W", (0, 1)),
        ("W", (0, 2)),
        ("W", (1, 0)),
        ("W", (1, 1)),
        ("W", (1, 2)),
        ("b", (0,)),
        ("b", (1,)),
        ("s", ()),
        ("T", (0, 0, 0)),
        ("T", (0, 0, 1)),
        ("T", (0, 1, 0)),
        ("T", (0, 1, 1)),
    ]
    assert all(type(i) is int for _, index in found for i in index)


@pytest.mark.parametrize("flat_index", [13, 100, -1], ids=["one-past", "far", "negative"])
def test_locate_outside_the_vector_raises_index_error(flat_index):
    tree = ParamTree.flatten({"W": np.zeros((2, 3)), "b": np.zeros(7)})[0]
    with pytest.raises(IndexError, match=rf"^flat index {flat_index} is outside 0\.\.12$"):
        tree.locate(flat_index)


# -- property: any nested container round-trips ------------------------------------------------
_FLOAT_DTYPES: st.SearchStrategy[np.dtype[Any]] = st.sampled_from(
    [np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64)]
)
_arrays = _FLOAT_DTYPES.flatmap(
    lambda dt: hnp.arrays(
        dt,
        hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=3),
        elements=hnp.from_dtype(dt, allow_nan=False, allow_infinity=False),
    )
)
_leaves = st.one_of(_arrays, st.floats(allow_nan=False, allow_infinity=False))
_keys = st.text(alphabet="ab_ 1", min_size=1, max_size=3)
_containers = st.recursive(
    _leaves,
    lambda children: st.one_of(
        st.lists(children, min_size=1, max_size=3),
        st.lists(children, min_size=1, max_size=3).map(tuple),
        st.dictionaries(_keys, children, min_size=1, max_size=3),
    ),
    max_leaves=8,
)


@settings(deadline=None, max_examples=50)
@given(params=_containers)
def test_any_nested_container_round_trips(params):
    before = copy.deepcopy(params)
    tree, vector = ParamTree.flatten(params)
    assert_same(params, before)

    assert_same(tree.unflatten(vector), params)
    assert vector.dtype == np.float64
    assert vector.size == tree.size == sum(leaf.size for leaf in tree.leaves)
    # Leaves tile the vector in order, and every leaf has its own name.
    assert [leaf.offset for leaf in tree.leaves] == list(
        np.cumsum([0] + [leaf.size for leaf in tree.leaves[:-1]])
    )
    assert len({leaf.name for leaf in tree.leaves}) == len(tree.leaves)
    # The parameters are a valid "gradient" of themselves.
    np.testing.assert_array_equal(tree.flatten_like(params), vector, strict=True)
    for flat_index in range(tree.size):
        leaf, index = tree.locate(flat_index)
        assert leaf.offset + int(np.ravel_multi_index(index, leaf.shape) if index else 0) == (
            flat_index
        )


def test_rebuilding_from_the_same_vector_gives_a_fresh_container_over_its_current_values():
    tree, x = ParamTree.flatten({"W": np.zeros((2, 2)), "layers": [np.zeros(2)]})
    first = tree.unflatten(x)
    first["W"] = "replaced by the loss"
    first["layers"].append("extra")
    x[0] = 5.0
    second = tree.unflatten(x)
    assert second is not first and second["layers"] is not first["layers"]
    assert second["W"][0, 0] == 5.0 and len(second["layers"]) == 1
    other = x.copy()
    other[0] = -1.0
    assert tree.unflatten(other)["W"][0, 0] == -1.0


def test_a_tree_survives_pickling_for_worker_processes():
    tree, x = ParamTree.flatten({"W": np.ones((2, 3)), "b": [0.5, np.float32(2.0)]})
    tree.unflatten(x)
    restored = pickle.loads(pickle.dumps(tree))
    assert_same(restored.unflatten(x), tree.unflatten(x))
    assert [leaf.name for leaf in restored.leaves] == [leaf.name for leaf in tree.leaves]
