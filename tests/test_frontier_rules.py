"""The rules behind the frontier verdicts (issue 14), as properties of small losses."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from gradproof import Verdict, check
from gradproof.numerics.finite_diff import sample
from gradproof.numerics.kinks import DISCONTINUOUS, KINK, resolve_entries
from gradproof.numerics.steps import offset_points

F64 = [(slice(0, 1), np.dtype(np.float64))]


def _resolve(fun, x0, noise=1e-15):
    x = np.array([x0])
    h = np.array([6e-6 * max(1.0, abs(x0))])
    minus, plus = offset_points(x, F64, h, (-1.0, 1.0))
    s = sample(fun, x, (plus, minus))
    return resolve_entries(
        fun, x, fun(x), np.array([0]), plus=plus, minus=minus, f_plus=s.values[0],
        f_minus=s.values[1], dtypes=F64, noise=np.array([noise]),
        resolution=np.array([1e-12]),
    )  # fmt: skip


# -- jumps ---------------------------------------------------------------------------------------
@settings(max_examples=30, deadline=None)
@given(
    jump=st.floats(1e-6, 1e3),
    slope=st.floats(-10, 10),
    at=st.sampled_from([0.0, 0.5, -3.0, 1e3]),
    right=st.booleans(),
)
def test_a_jump_at_the_point_is_discontinuous(jump, slope, at, right):
    def fun(v):
        side = v[0] > at if right else v[0] < at
        return float(slope * v[0] + jump * side)

    found = _resolve(fun, at)
    assert found.status[0] == DISCONTINUOUS


@settings(max_examples=30, deadline=None)
@given(size=st.floats(0.1, 10), at=st.sampled_from([0.0, 0.25, -2.0]))
def test_a_kink_is_not_a_jump(size, at):
    found = _resolve(lambda v: float(size * abs(v[0] - at)), at)
    assert found.status[0] == KINK
    np.testing.assert_allclose([found.left[0], found.right[0]], [-size, size], rtol=1e-6)


# -- tiny derivatives ----------------------------------------------------------------------------
@settings(max_examples=30, deadline=None)
@given(
    x=st.floats(1e-3, 0.05),
    offset=st.sampled_from([1.0, 1e3, 1e6]),
    power=st.sampled_from([3, 4, 6]),
)
def test_a_tiny_derivative_under_large_curvature_is_never_a_kink(x, offset, power):
    # d/dx x**p is tiny next to both the loss's round-off and its curvature: the gap between
    # the one-sided derivatives at the first step says nothing about a kink.
    result = check(
        lambda v: float(offset + np.sum(v**power)), lambda v: power * v ** (power - 1),
        np.array([x, 2 * x, 0.5]), mode="full",
    )  # fmt: skip
    assert result.verdict is Verdict.PASS, str(result)


@settings(max_examples=20, deadline=None)
@given(points=st.lists(st.sampled_from([0.0, np.pi, 2 * np.pi, -np.pi]), min_size=1, max_size=4))
def test_a_derivative_of_exactly_zero_at_a_stationary_point_passes(points):
    x = np.array(points)
    # (5 + ...: a loss of exactly 0 by cancellation hides its round-off from the noise model.)
    result = check(lambda v: float(5 + np.sum(np.cos(v))), lambda v: -np.sin(v), x)
    assert result.verdict is Verdict.PASS, str(result)
    assert result.params[0].n_inconclusive == 0


def test_smooth_gap_shrinking_once_before_round_off_is_an_estimate_not_a_kink():
    # float32 at 1000: the step is 4.9 and round-off stops the shrinking after one level.
    x = np.full(5, 1000.0, dtype=np.float32)

    def loss(v):
        return np.sum(np.logaddexp.accumulate(v))

    def grad(v):
        v = np.asarray(v, dtype=np.float64)
        c = np.logaddexp.accumulate(v)
        return (np.exp(v[None, :] - c[:, None]) * np.tri(v.size)).sum(axis=0)

    result = check(loss, grad, x, precision="native")
    assert result.verdict is Verdict.PASS, str(result)
    bug = check(loss, lambda v: 2 * grad(v), x, precision="native")
    assert bug.suspects == ("params",)


# -- several kinks -------------------------------------------------------------------------------
@settings(max_examples=20, deadline=None)
@given(
    weights=st.lists(st.sampled_from([-2.0, -1.0, -0.5, 0.5, 1.0, 2.0]), min_size=2, max_size=4),
    tilt=st.lists(st.sampled_from([-0.25, -0.125, 0.0, 0.125, 0.25]), min_size=2, max_size=2),
    data=st.data(),
)
def test_relu_knots_meeting_at_the_point_accept_the_frameworks_value(weights, tilt, data):
    # Pre-activations z_i = X_i . w are all 0 at w = 0; every row has a dominant first entry,
    # so a direction exists along which all of them are negative: relu'(0) = 0 everywhere is
    # the limit of the true gradient along it, whatever the signs of the weights.
    k = len(weights)
    signs = data.draw(st.lists(st.sampled_from([-1.0, 1.0]), min_size=k, max_size=k))
    X = np.array([[1.0, s * tilt[0], -s * tilt[1]] for s in signs])
    c = np.array(weights)
    # The rule needs the kinks to show along each coordinate that 0 is outside of: where the
    # contributions cancel exactly, the coordinate's line is smooth and nothing marks the
    # point as a kink (docs/verdicts.md, "What is left").
    right = np.sum(c[:, None] * np.maximum(X, 0.0), axis=0)
    left = np.sum(c[:, None] * np.minimum(X, 0.0), axis=0)
    inside = (np.minimum(left, right) <= 0) & (np.maximum(left, right) >= 0)
    assume(np.all(inside | (left != right)))

    def loss(w):
        return float(c @ np.maximum(X @ w, 0.0))

    w0 = np.zeros(3)
    result = check(loss, lambda w: X.T @ (c * (X @ w > 0)), w0, mode="full")
    assert result.verdict is not Verdict.FAIL, str(result)
    # A value outside the box of every sign pattern is no limit of the gradient: wrong.
    top = np.sum(np.maximum(0.0, c[:, None] * X), axis=0)
    wrong = check(loss, lambda w: top + 1.0, w0, mode="full")
    assert wrong.suspects == ("params",), str(wrong)


# -- the edge of the domain ----------------------------------------------------------------------
@pytest.mark.parametrize("method", ["central", "forward", "backward", "central4", "richardson"])
@pytest.mark.parametrize("power", [1.5, 2.0, 2.5])
def test_the_edge_of_the_domain_is_measured_on_its_finite_side(method, power):
    def loss(v):
        with np.errstate(invalid="ignore"):
            return float(np.sum(np.where(v >= 0, np.abs(v) ** power, np.nan)))

    x = np.array([0.0, 1.0, 2.0])
    right = check(loss, lambda v: power * np.abs(v) ** (power - 1), x, method=method)
    assert right.verdict is Verdict.PASS, str(right)
    assert "left nan" not in str(right).lower()
    wrong = check(loss, lambda v: power * np.abs(v) ** (power - 1) + [0.5, 0.0, 0.0], x,
                  method=method)  # fmt: skip
    assert wrong.suspects == ("params",)
    assert [e.index for e in wrong["params"].failures] == [(0,)]
    assert wrong["params"].diagnosis is not None
    assert "1 × numeric" not in wrong["params"].diagnosis.summary


# -- one entry, dialects, the relative difference line -------------------------------------------
@pytest.mark.parametrize("params", [np.float64(1.5), np.array([1.5])], ids=["scalar", "one-entry"])
def test_one_entry_gets_no_factor_diagnosis_but_both_values(params):
    result = check(lambda p: float(np.sum(np.asarray(p) ** 2)), lambda p: 3 * np.asarray(p), params)
    d = result["params"].diagnosis
    assert d is not None and d.kind == "one_entry"
    assert d.summary == "its one entry is wrong: analytic 4.5, numeric 3"
    assert "×" not in d.summary


def test_one_wrong_entry_beside_a_right_tensor_names_only_its_values():
    result = check(
        lambda p: float(p["a"] ** 2 + np.sum(p["w"] ** 2)),
        lambda p: {"a": 3 * p["a"], "w": 2 * p["w"]},
        {"a": np.float64(2.0), "w": np.ones(3)},
    )
    assert result.suspects == ("a",)
    d = result["a"].diagnosis
    assert d is not None and d.summary == "its one entry is wrong: analytic 6, numeric 4"


def test_one_entry_with_the_opposite_value_is_a_sign_flip_with_both_values():
    result = check(lambda p: float(np.sum(p**2)), lambda p: -2 * p, np.array([[0.5]]))
    d = result["params"].diagnosis
    assert d is not None and d.kind == "sign"
    assert d.summary == "its one entry has its sign flipped: analytic -1, numeric 1"


@pytest.mark.parametrize(
    ("dialect", "absent", "present"),
    [
        ("numpy", "index_add_", "np.add.at"),
        ("torch", "np.add.at", "index_add_"),
        ("jax", "np.add.at", ".at[...].add(...)"),
    ],
)
def test_hints_speak_the_dialect_of_the_code(dialect, absent, present):
    n = np.arange(1.0, 13.0).reshape(3, 4)

    def grad(p):
        g = 2 * p
        g[1, 2] = 0.0  # an overwritten entry: "a few entries" names accumulation
        return g

    result = check(lambda p: float(np.sum(p**2)), grad, n, dialect=dialect)
    diagnosis = result["params"].diagnosis
    assert diagnosis is not None
    hint = diagnosis.hint
    assert present in hint and absent not in hint


@pytest.mark.parametrize("dialect", ["torch", "jax"])
def test_non_finite_hints_never_give_numpy_advice_to_frameworks(dialect):
    result = check(
        lambda p: float(np.sum(p**2)), lambda p: np.where(p > 0, np.nan, 2 * p),
        np.array([1.0, -1.0]), dialect=dialect,
    )  # fmt: skip
    diagnosis = result["params"].diagnosis
    assert diagnosis is not None
    hint = diagnosis.hint
    assert "clip probabilities" not in hint
    assert ("torch.log" if dialect == "torch" else "jnp.where") in hint


def test_a_bad_dialect_is_refused():
    from gradproof import InputError

    with pytest.raises(InputError, match=r"`dialect` must be one of 'numpy', 'torch', 'jax'"):
        check(lambda p: 0.0, lambda p: p, np.ones(1), dialect="tf")


@pytest.mark.parametrize(
    ("mode", "phrase"),
    [
        ("full", "Relative difference, all entries (the assignment's formula)"),
        ("sampled", "Relative difference, the {n} sampled entries (the assignment's formula)"),
        ("directional", "Relative difference (the assignment's formula): none, no entry"),
    ],
)
def test_the_relative_difference_says_what_it_covers(mode, phrase):
    x = np.linspace(-1, 1, 40)
    result = check(lambda p: float(np.sum(p**3)), lambda p: 3 * p**2, x, mode=mode, n_samples=5)
    n = result["params"].n_checked
    assert n < 40 or mode == "full"
    assert phrase.format(n=n) in str(result)


# -- small systematic errors ---------------------------------------------------------------------
@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), error=st.sampled_from([1e-6, 3e-6, 1e-5, -1e-5]))
def test_a_systematic_error_far_outside_the_error_bars_is_caught(seed, error):
    rng = np.random.default_rng(seed)
    X, y = rng.normal(size=(30, 5)), rng.normal(size=30)

    def loss(w):
        return float(np.mean((X @ w - y) ** 2))

    def grad(w):
        return 2 * X.T @ (X @ w - y) / len(y)

    w = rng.normal(size=5)
    assert check(loss, grad, w).verdict is Verdict.PASS
    result = check(loss, lambda v: (1 + error) * grad(v), w)
    assert result.suspects == ("params",), str(result)
    d = result["params"].diagnosis
    assert d is not None and d.kind == "scale"
    assert d.factor == pytest.approx(1 + error, abs=abs(error) / 100)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), dtype=st.sampled_from([np.float64, np.float32]))
def test_correct_smooth_code_raises_no_systematic_alarm(seed, dtype):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(20, 4)).astype(dtype)
    labels = rng.integers(0, 3, size=20)

    def loss(W):
        logits = X @ W
        logits = logits - logits.max(axis=1, keepdims=True)
        return -np.mean(logits[np.arange(20), labels] - np.log(np.exp(logits).sum(axis=1)))

    def grad(W):
        logits = (X @ W).astype(np.float64)
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        p[np.arange(20), labels] -= 1
        return X.astype(np.float64).T @ p / 20

    W = rng.normal(size=(4, 3)).astype(dtype)
    for precision in ("auto", "native"):
        result = check(loss, grad, W, precision=precision)
        assert result.verdict is Verdict.PASS, str(result)


def test_an_rtol_the_caller_chose_is_the_error_they_accept():
    # The same 1e-5 factor the default rtol's search catches passes when the caller sets
    # rtol: their tolerance says how large an error they accept (an approximate gradient).
    rng = np.random.default_rng(7)
    X, y = rng.normal(size=(30, 5)), rng.normal(size=30)

    def loss(w):
        return float(np.mean((X @ w - y) ** 2))

    def off(w):
        return (1 + 1e-5) * 2 * X.T @ (X @ w - y) / len(y)

    w = rng.normal(size=5)
    assert check(loss, off, w).suspects == ("params",)
    assert check(loss, off, w, rtol=1e-4).verdict is Verdict.PASS
    assert check(loss, off, w, rtol=1e-6).suspects == ("params",)  # beyond it: wrong per entry


def test_one_wrong_entry_within_rtol_is_not_spread_into_a_factor():
    rng = np.random.default_rng(3)
    X, y = rng.normal(size=(30, 6)), rng.normal(size=30)

    def grad(w):
        g = 2 * X.T @ (X @ w - y) / len(y)
        g[2] *= 1 + 5e-6  # one entry off by a relative 5e-6: no pattern across the tensor
        return g

    result = check(lambda w: float(np.mean((X @ w - y) ** 2)), grad, rng.normal(size=6))
    assert result.verdict is Verdict.PASS, str(result)


def test_the_torch_adapter_speaks_torch():
    torch = pytest.importorskip("torch")
    from gradproof.torch import check_function

    class Square(torch.autograd.Function):  # type: ignore[name-defined,misc]
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x**2

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            out = 2 * x * g
            out[1] = 0.0  # one entry overwritten
            return out

    x = torch.arange(1.0, 13.0, dtype=torch.float64, requires_grad=True)
    result = check_function(Square.apply, x)
    # The adapter checks d output[i] / d input: the overwritten entry's row is all zeros.
    hint = next(p.diagnosis for p in result.params if p.diagnosis is not None).hint
    assert "`.detach()`" in hint and "detached or overwritten variable" not in hint


def test_the_jax_adapter_speaks_jax():
    jax = pytest.importorskip("jax")
    from gradproof.jax import check_function

    @jax.custom_vjp
    def square(x):
        return x**2

    def square_fwd(x):
        return x**2, x

    def square_bwd(x, g):
        return ((2 * x * g).at[1].set(0.0),)  # one entry overwritten

    square.defvjp(square_fwd, square_bwd)
    result = check_function(square, jax.numpy.arange(1.0, 13.0))
    hint = next(p.diagnosis for p in result.params if p.diagnosis is not None).hint
    assert ".at[...].add(...)" in hint and "np.add.at" not in hint
