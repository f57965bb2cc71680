"""Diagnosis of a wrong gradient: planted patterns are named, with a hint naming the parameter."""

from __future__ import annotations

import json
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from gradproof.checking.diagnose import (
    EXPLAINED_FRACTION,
    MAIN_TERM_FIT_TOLERANCE,
    SCALE_FIT_TOLERANCE,
    diagnose_parameter,
    diagnose_swaps,
    format_factor,
)
from gradproof.errors import InputError
from gradproof.results import Diagnosis
from gradproof.tree import ParamTree


@pytest.fixture
def numeric():
    return np.random.default_rng(11).normal(size=(3, 4))


# -- constant factors and signs ------------------------------------------------------------------
@pytest.mark.parametrize(
    ("k", "kind", "shown", "cause"),
    [
        (2.0, "scale", "2", "is 2 times too large (a stray constant?):"),
        (4.0, "scale", "4", "is 4 times too large"),
        (1 / 3, "scale", "1/3", "is 3 times too small (a mean where a sum was meant"),
        (1 / 64, "scale", "1/64", "is 64 times too small"),
        (1.5, "scale", "3/2", "is 3/2 times too large"),
        (-1.0, "sign", "-1", None),
        (-2.0, "scale", "-2", "is 2 times too large (a stray constant?) and has its sign flipped"),
        (-0.25, "scale", "-1/4", "is 4 times too small"),
        (1.0001, "scale", "1.0001", "is 1.0001 times too large"),
        (2.0002, "scale", "2.0002", "is 2.0002 times too large"),
    ],
    ids=["x2", "x4", "x1/3", "x1/64", "x3/2", "sign", "x-2", "x-1/4", "x1.0001", "x2.0002"],
)
def test_planted_factor_is_named(numeric, k, kind, shown, cause):
    d = diagnose_parameter("W2", k * numeric, numeric)
    assert d.kind == kind
    assert d.summary == f"analytic = {shown} × numeric on every entry"
    # k = <a, n> / <n, n> of an exact multiple: two 12-term dot products, each within
    # 12 eps = 2.7e-15 relative, and a division.
    assert d.factor == pytest.approx(k, rel=1e-14)
    assert "`W2`" in d.hint
    if kind == "sign":
        assert (
            d.hint == "The sign of `W2`'s gradient is flipped: look for a `-` too many or too few."
        )
    else:
        assert cause in d.hint
        assert ("sign flipped" in d.hint) == (k < 0)


def test_finite_difference_noise_does_not_hide_the_factor(numeric):
    # Uniform relative noise of 1e-4 (a float32-like estimate; float64's is ~1e-8) leaves a
    # fit residual of ~1e-4 / sqrt(3) = 6e-5, under SCALE_FIT_TOLERANCE. The factor is then
    # rounded to within 10 x that residual, and the fitted k is within ~1e-4 / sqrt(12) of 2.
    noise = np.random.default_rng(12).uniform(-1e-4, 1e-4, size=numeric.shape)
    d = diagnose_parameter("b1", 2 * numeric, numeric * (1 + noise))
    assert (d.kind, d.summary) == ("scale", "analytic = 2 × numeric on every entry")
    assert d.factor == pytest.approx(2.0, rel=1e-4)  # the noise's relative size


def test_a_factor_on_one_row_only_is_not_a_factor_but_that_row(numeric):
    analytic = numeric.copy()
    analytic[0] *= 2  # one row doubled: the fit residual is ~0.3, far above 1e-3
    d = diagnose_parameter("W", analytic, numeric)
    # No longer "unknown": the wrong entries fill row 0 and the other rows are right.
    assert (d.kind, d.axis) == ("axis", 0)
    assert d.summary == "row 0 of `W` is wrong; the other rows are right"


def test_a_factor_on_scattered_entries_is_no_pattern(numeric):
    analytic = numeric.copy()
    # Six of twelve entries doubled: too many to be "a few" (more than max(3, 1.2)); every row
    # is half wrong and column 1 a third wrong, so no axis splits into wrong and right slices.
    scattered = np.array([[1, 1, 0, 0], [0, 0, 1, 1], [1, 0, 1, 0]], dtype=bool)
    analytic[scattered] *= 2
    assert diagnose_parameter("W", analytic, numeric).kind == "unknown"


def test_noise_above_the_fit_tolerance_is_an_approximate_factor(numeric):
    # Relative noise of 10 * SCALE_FIT_TOLERANCE gives a residual ~6e-3 > 1e-3: no exact
    # factor, but the main term is still 2 times too large, and the summary says how nearly.
    noise = np.random.default_rng(13).uniform(-1, 1, size=numeric.shape) * 10 * SCALE_FIT_TOLERANCE
    d = diagnose_parameter("W", 2 * numeric * (1 + noise), numeric)
    assert d.kind == "scale"
    assert d.summary.startswith("analytic ≈ 2 × numeric, up to 0.")
    assert d.summary.endswith("% of its norm: the gradient's main term is off")


def test_noise_above_the_main_term_tolerance_is_no_pattern(numeric):
    noise = np.random.default_rng(13).uniform(-1, 1, size=numeric.shape)
    d = diagnose_parameter("W", 2 * numeric * (1 + 10 * MAIN_TERM_FIT_TOLERANCE * noise), numeric)
    assert d.kind == "unknown"


def _with_penalty(main: np.ndarray, W: np.ndarray, l2: float) -> np.ndarray:
    return main + l2 * W


@pytest.mark.parametrize(
    ("bug", "kind", "model", "transposed"),
    [
        (lambda data: 2 * data, "scale", "2 × numeric", False),
        (lambda data: data.T, "transpose", "numeric.T", True),
        (lambda data: -data, "sign", "-1 × numeric", False),
    ],
    ids=["doubled", "transposed", "negated"],
)
def test_a_bug_in_the_main_term_beside_a_right_penalty(bug, kind, model, transposed):
    # dW = data term + l2 * W, with the bug in the data term only: no exact model fits,
    # because the penalty is right; the main-term tier names the bug and says how nearly.
    rng = np.random.default_rng(5)
    data, W, l2 = rng.normal(size=(6, 6)), rng.normal(size=(6, 6)), 0.01
    analytic, numeric = bug(data) + l2 * W, data + l2 * W
    d = diagnose_parameter("W2", analytic, numeric)
    assert d.kind == kind
    # The residual it quotes is the least-squares fit's, ||a - k n|| / ||a||.
    basis = (numeric.T if transposed else numeric).ravel()
    k = basis @ analytic.ravel() / (basis @ basis)
    residual = np.linalg.norm(analytic.ravel() - k * basis) / np.linalg.norm(analytic)
    assert SCALE_FIT_TOLERANCE < residual < MAIN_TERM_FIT_TOLERANCE
    assert d.summary == (
        f"analytic ≈ {model}, up to {100 * residual:.2g}% of its norm: the gradient's main term "
        + ("is transposed" if transposed else "is off")
    )
    assert d.factor == pytest.approx(k)
    assert "a penalty such as `l2 * W`" in d.hint


def test_a_near_one_main_term_fit_is_not_a_factor():
    # A few wrong entries in a big gradient leave a small residual around k = 1; that is
    # "a few entries", not "≈ 1 × numeric".
    numeric = np.random.default_rng(2).normal(size=(40, 40))
    analytic = numeric.copy()
    analytic[3, 7] += 0.5
    assert diagnose_parameter("W", analytic, numeric).kind == "few_entries"


# -- zeros, non-finite values, no pattern ------------------------------------------------------
def test_all_zero_analytic_gradient_is_a_missing_path(numeric):
    d = diagnose_parameter("layers[0].bias", np.zeros_like(numeric), numeric)
    assert d.kind == "zero"
    assert d.summary == "analytic gradient is all zeros, but the loss depends on this parameter"
    assert d.hint.startswith("No gradient reaches `layers[0].bias`: a path through it is missing")
    assert d.factor is None


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
def test_non_finite_analytic_values_are_counted(numeric, bad):
    analytic = 2 * numeric
    analytic[1, 2] = bad
    analytic[2, 0] = bad
    d = diagnose_parameter("W3", analytic, numeric)
    assert d.kind == "non_finite"
    assert d.summary == "analytic gradient is NaN or infinite at 2 of 12 entries"
    assert d.hint.startswith("The backward of `W3` divides by zero or overflows")
    assert d.factor is None


def test_non_finite_comes_before_zero():
    d = diagnose_parameter("w", np.array([np.nan, 0.0, 0.0]), np.array([1.0, 2.0, 3.0]))
    assert d.kind == "non_finite"


def test_unrelated_gradients_are_no_simple_pattern(numeric):
    analytic = np.random.default_rng(14).normal(size=numeric.shape)
    d = diagnose_parameter("W1", analytic, numeric)
    assert d.kind == "unknown"
    assert d.summary == ("no simple pattern: not a constant factor, a sign flip or all zeros")
    assert d.hint.startswith("Re-derive the backward of `W1` term by term")
    assert d.factor is None


def test_entries_without_a_numerical_estimate_are_ignored():
    numeric = np.array([np.nan, 1.0, -2.0, np.inf, 3.0])
    # Garbage (even non-finite) analytic values where the estimate is missing do not count.
    analytic = np.array([np.inf, 2.0, -4.0, 1e9, 6.0])
    d = diagnose_parameter("W", analytic, numeric)
    assert (d.kind, d.summary) == ("scale", "analytic = 2 × numeric on every entry")

    analytic = np.array([np.nan, np.nan, -4.0, 0.0, 6.0])
    d = diagnose_parameter("W", analytic, numeric)
    assert d.summary == "analytic gradient is NaN or infinite at 1 of 3 entries"


def test_diagnosis_is_json_ready(numeric):
    d = diagnose_parameter("W2", 2 * numeric, numeric)
    assert isinstance(d, Diagnosis)
    data = json.loads(json.dumps(d.to_dict(), allow_nan=False))
    assert data == {
        "kind": "scale",
        "summary": d.summary,
        "hint": d.hint,
        "factor": d.factor,
        "entries": [],
        "axis": None,
        "partner": None,
    }


# -- format_factor ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("k", "expected"),
    [
        (2.0, "2"),
        (-1.0, "-1"),
        (0.25, "1/4"),
        (1 / 3, "1/3"),
        (-1 / 3, "-1/3"),
        (1.5, "3/2"),
        (1 / 64, "1/64"),
        (1.37, "1.37"),
        (0.37, "0.37"),
        (2.0000001, "2"),  # 5e-8 off 2: within the default 1e-3
        (2 * (1 + 1e-4), "2"),  # 1e-4 off 2: still within 1e-3
        (2 * (1 + 2e-3), "2.004"),  # 2e-3 off: beyond it
        (1.0001, "1.0001"),  # never rounded to 1: a failing gradient is not "1 x"
        (1.0, "1"),
        (1e6, "1000000"),
        (1234.5678, "1235"),  # 3.5e-4 off the integer
        (0.0, "0"),
        (float("nan"), "nan"),
        (float("inf"), "inf"),
    ],
    ids=[
        "2",
        "-1",
        "1/4",
        "1/3",
        "-1/3",
        "3/2",
        "1/64",
        "1.37",
        "0.37",
        "near-2",
        "1e-4-off-2",
        "2e-3-off-2",
        "1.0001",
        "1",
        "1e6",
        "1234.5678",
        "0",
        "nan",
        "inf",
    ],
)
def test_format_factor(k, expected):
    assert format_factor(k) == expected


@pytest.mark.parametrize(
    ("k", "tolerance", "expected"),
    [
        (2.0002, 1e-3, "2"),
        (2.0002, 1e-6, "2.0002"),
        (0.2501, 1e-3, "1/4"),
        (0.2501, 1e-6, "0.2501"),
    ],
    ids=["loose", "tight", "fraction-loose", "fraction-tight"],
)
def test_format_factor_rounds_only_within_the_tolerance(k, tolerance, expected):
    assert format_factor(k, tolerance) == expected


@pytest.mark.parametrize("k", [1e-310, -5e-324], ids=["1e-310", "-denormal-min"])
def test_format_factor_of_a_tiny_factor_does_not_raise(k):
    assert format_factor(k) == f"{k:.6g}"


@pytest.mark.parametrize("k", [1e300, 1e-300], ids=["1e300", "1e-300"])
def test_format_factor_of_an_extreme_factor_is_short(k):
    assert len(format_factor(k)) <= 12


def test_a_vanishing_analytic_gradient_is_diagnosed_without_raising():
    numeric = np.array([1.0, -2.0, 3.0])
    d = diagnose_parameter("W", 1e-310 * numeric, numeric)
    assert d.kind in ("scale", "zero", "unknown")


# -- planted bugs in small models ------------------------------------------------------------------
def _central_differences(loss: Callable[[np.ndarray], float], x: np.ndarray) -> np.ndarray:
    """The numerical gradient as the checker measures it: one central difference per entry."""
    # h = 1e-5 on these O(1) smooth losses: truncation h**2 |f'''| / 6 ~ 1e-11 and round-off
    # eps |f| / h ~ 1e-11, so each entry is within ~1e-10 of the true derivative.
    h = 1e-5
    grad = np.empty_like(x)
    for index in np.ndindex(x.shape):
        plus, minus = x.copy(), x.copy()
        plus[index] += h
        minus[index] -= h
        grad[index] = (loss(plus) - loss(minus)) / (2 * h)
    return grad


def _failed(analytic: np.ndarray, numeric: np.ndarray) -> np.ndarray:
    """The checker's verdict on each entry: which entries it would call wrong."""
    # float64's default rtol (1e-5), plus 1e-8 of the largest entry standing in for the
    # numerical error bar: the differences above are accurate to ~1e-10, well inside both.
    scale = np.maximum(np.abs(analytic), np.abs(numeric))
    failed: np.ndarray = np.abs(analytic - numeric) > 1e-5 * scale + 1e-8 * np.max(np.abs(numeric))
    return failed


def _check_gradient(analytic, numeric):
    """Assert the planted bug is caught and the model's correct gradient would pass."""
    assert _failed(analytic, numeric).any()


def _linear_regression(m: int = 8):
    """Mean squared error of X @ W against Y, W square (4 x 4): the loss and its true dW."""
    rng = np.random.default_rng(21)
    X, Y, W = rng.normal(size=(m, 4)), rng.normal(size=(m, 4)), rng.normal(size=(4, 4))

    def loss(w):
        return 0.5 * float(np.sum((X @ w - Y) ** 2)) / m

    dZ = (X @ W - Y) / m
    return loss, W, X, dZ


# -- transpose -------------------------------------------------------------------------------------
def test_transposed_weight_gradient_is_named():
    loss, W, X, dZ = _linear_regression()
    numeric = _central_differences(loss, W)
    np.testing.assert_allclose(X.T @ dZ, numeric, rtol=1e-8)  # the right dW = X.T @ dZ
    analytic = dZ.T @ X  # the planted bug: the factors of the product in the wrong order
    d = diagnose_parameter("W", analytic, numeric, wrong=_failed(analytic, numeric))
    assert d.kind == "transpose"
    assert d.summary == "analytic = numeric.T on every entry: the gradient is transposed"
    assert d.hint == (
        "The backward of `W` returns the transpose of its gradient: check the order of the "
        "product that builds it (e.g. `dW = dZ @ X.T` written as `X @ dZ.T`, or `A.T @ dZ` as "
        "`dZ.T @ A`)."
    )
    # The fit is limited by the finite differences' ~1e-10 relative error.
    assert d.factor == pytest.approx(1.0, rel=1e-8)
    assert (d.entries, d.axis, d.partner) == ((), None, None)


@pytest.mark.parametrize(
    ("bug", "summary", "extra"),
    [
        (8.0, "analytic = 8 × numeric.T", " It is also off by a factor of 8."),  # sum, not mean
        (-1.0, "analytic = -numeric.T", " Its sign is flipped too."),
    ],
    ids=["x8", "sign"],
)
def test_a_transpose_with_a_factor_says_both(bug, summary, extra):
    loss, W, X, dZ = _linear_regression(m=8)
    numeric = _central_differences(loss, W)
    analytic = bug * (dZ.T @ X)
    d = diagnose_parameter("W", analytic, numeric, wrong=_failed(analytic, numeric))
    assert d.kind == "transpose"
    assert d.summary == f"{summary} on every entry: the gradient is transposed"
    assert d.hint.endswith(extra)
    assert d.factor == pytest.approx(bug, rel=1e-8)


def _quadratic_form():
    """Sum of x_i^T W x_i over rows x_i of X: its gradient X.T @ X / 2 is symmetric."""
    rng = np.random.default_rng(22)
    X, W = rng.normal(size=(6, 4)), rng.normal(size=(4, 4))

    def loss(w):
        return 0.5 * float(np.einsum("ij,jk,ik->", X, w, X))

    return _central_differences(loss, W), 0.5 * X.T @ X


@pytest.mark.parametrize(
    ("bug", "kind"),
    [
        (lambda g: 2 * g.T, "scale"),  # forgot the 1/2, and "transposed" (a no-op here)
        (lambda g: -g.T, "sign"),
        (lambda g: g.T + np.eye(4)[0] * np.eye(4)[:, [2]], "few_entries"),  # one entry off
    ],
    ids=["x2", "sign", "one-entry"],
)
def test_a_symmetric_gradient_is_never_called_transposed(bug, kind):
    numeric, right = _quadratic_form()
    # The true gradient is symmetric; its numerical estimate is, up to ~1e-10.
    np.testing.assert_allclose(numeric, numeric.T, rtol=1e-8)
    analytic = bug(right)
    d = diagnose_parameter("W", analytic, numeric, wrong=_failed(analytic, numeric))
    assert d.kind == kind


def test_an_exactly_symmetric_numeric_is_never_called_transposed(numeric):
    square = numeric[:3, :3]
    symmetric = square + square.T  # bit-for-bit symmetric: n[i, j] = n[j, i]
    assert diagnose_parameter("W", 3 * symmetric.T, symmetric).kind == "scale"


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), size=st.integers(2, 7))
def test_a_random_transposed_matrix_is_named(seed, size):
    rng = np.random.default_rng(seed)
    numeric = rng.normal(size=(size, size))
    # A random matrix is symmetric to within 1e-2 with negligible probability; such a draw
    # would rightly not be called a transpose (see the tests above).
    assume(np.linalg.norm(numeric - numeric.T) > 1e-2 * np.linalg.norm(numeric))
    # Relative noise of 1e-9, about a float64 central difference's error.
    analytic = numeric.T * (1 + 1e-9 * rng.uniform(-1, 1, size=numeric.shape))
    d = diagnose_parameter("W", analytic, numeric)
    assert d.kind == "transpose"
    assert d.factor == pytest.approx(1.0, rel=1e-8)


# -- a few entries ---------------------------------------------------------------------------------
def _embedding(vocabulary: int, tokens: list[int], width: int = 3):
    """Sum of tanh(E[tokens]) * C: the loss, the point, and the upstream gradient of E[tokens]."""
    rng = np.random.default_rng(23)
    E = rng.normal(size=(vocabulary, width))
    C = rng.normal(size=(len(tokens), width))

    def loss(e):
        return float(np.sum(np.tanh(e[tokens]) * C))

    upstream = (1 - np.tanh(E[tokens]) ** 2) * C
    return loss, E, upstream


def test_an_embedding_overwrite_of_a_repeated_token_is_a_few_entries():
    tokens = [3, 7, 3, 11, 5]  # token 3 appears twice
    loss, E, upstream = _embedding(20, tokens)
    numeric = _central_differences(loss, E)
    right = np.zeros_like(E)
    np.add.at(right, tokens, upstream)
    assert not _failed(right, numeric).any()
    analytic = np.zeros_like(E)
    analytic[tokens] = upstream  # the planted bug: the second 3 overwrites the first
    d = diagnose_parameter("E", analytic, numeric, wrong=_failed(analytic, numeric))
    assert d.kind == "few_entries"
    assert d.entries == ((3, 0), (3, 1), (3, 2))
    assert d.summary == (
        "only these entries are wrong: E[3, 0], E[3, 1], E[3, 2]; every other entry is right"
    )
    assert d.hint == (
        "Only some entries of `E`'s gradient are wrong: look for an off-by-one index or loop "
        "bound, or an overwrite (`=`) where repeated indices must accumulate (`+=`, "
        "`np.add.at`)."
    )


def test_an_off_by_one_loop_bound_is_a_few_entries():
    rng = np.random.default_rng(24)
    w, x, y = rng.normal(size=8), rng.normal(size=8), rng.normal(size=8)

    def loss(v):
        return 0.5 * float(np.sum((v * x - y) ** 2))

    analytic = np.zeros_like(w)
    for t in range(len(w) - 1):  # the planted bug: the loop stops one step early
        analytic[t] = (w[t] * x[t] - y[t]) * x[t]
    numeric = _central_differences(loss, w)
    d = diagnose_parameter("w", analytic, numeric, wrong=_failed(analytic, numeric))
    assert (d.kind, d.entries) == ("few_entries", ((7,),))
    assert d.summary == "only this entry is wrong: w[7]; every other entry is right"


def test_a_few_entries_are_listed_up_to_ten(numeric):
    rng = np.random.default_rng(25)
    n = rng.normal(size=(10, 20))
    a = n.copy()
    wrong = [(i, (7 * i + 3) % 20) for i in range(10)] + [(0, 0), (9, 19)]  # 12 of 200
    for index in wrong:
        a[index] += 1.0
    d = diagnose_parameter("W", a, n)
    assert d.kind == "few_entries"  # 12 <= 10% of 200
    assert d.entries == tuple(sorted(wrong))
    shown = ", ".join(f"W[{i}, {j}]" for i, j in sorted(wrong)[:10])
    assert (
        d.summary == f"only these entries are wrong: {shown} and 2 more; every other entry is right"
    )


@pytest.mark.parametrize(
    ("shape", "wrong", "few"),
    [
        ((3, 4), [(0, 0), (1, 1), (2, 3)], True),  # 3: "a few" in any parameter
        ((3, 4), [(0, 0), (1, 1), (2, 2), (0, 3)], False),  # 4 > max(3, 1.2)
        ((2,), [(1,)], True),  # one of two
        ((3,), [(0,), (2,)], False),  # two of three: more than half
        ((), [()], False),  # a scalar has no "other entries"
    ],
    ids=["3-of-12", "4-of-12", "1-of-2", "2-of-3", "scalar"],
)
def test_a_few_is_at_most_max_3_or_a_tenth_and_at_most_half(shape, wrong, few):
    n = np.random.default_rng(26).normal(size=shape)
    a = n.copy()
    for index in wrong:
        a[index] += 1.0
    assert (diagnose_parameter("p", a, n).kind == "few_entries") == few


def test_one_wrong_entry_in_a_large_gradient_is_not_a_factor_near_1():
    n = np.random.default_rng(27).normal(size=(100, 100))
    a = n.copy()
    a[17, 42] += 0.05
    # The best factor leaves 0.05 / ||a|| = 5e-4 <= SCALE_FIT_TOLERANCE of the gradient, but
    # none of the error on the wrong entry: it is not "analytic = 1 × numeric".
    d = diagnose_parameter("W", a, n)
    assert (d.kind, d.entries) == ("few_entries", ((17, 42),))


# -- errors along one axis -------------------------------------------------------------------------
def test_repeated_tokens_of_a_small_vocabulary_spoil_whole_rows():
    tokens = [1, 3, 1, 3, 0]
    loss, E, upstream = _embedding(5, tokens, width=4)
    numeric = _central_differences(loss, E)
    analytic = np.zeros_like(E)
    analytic[tokens] = upstream  # overwrite: rows 1 and 3 keep only their last occurrence
    d = diagnose_parameter("E", analytic, numeric, wrong=_failed(analytic, numeric))
    # 8 of 20 entries wrong is more than a few: the rows are named instead.
    assert (d.kind, d.axis) == ("axis", 0)
    assert d.summary == "rows 1 and 3 of `E` are wrong; the other rows are right"
    assert d.hint.startswith("Look at what the backward of `E` does differently for those rows")
    assert "`np.add.at`" in d.hint


def test_a_loss_term_missing_from_the_backward_spoils_whole_columns():
    rng = np.random.default_rng(28)
    X, W, T = rng.normal(size=(6, 3)), rng.normal(size=(3, 5)), rng.normal(size=(6, 2))

    def loss(w):
        Z = X @ w
        # Two heads: a squared error on units 0-2 and a cross term on units 3-4.
        return 0.5 * float(np.sum(Z[:, :3] ** 2)) + float(np.sum(np.tanh(Z[:, 3:]) * T))

    dZ = X @ W
    dZ[:, 3:] = 0.0  # the planted bug: the second head's term is left out of the backward
    analytic = X.T @ dZ
    numeric = _central_differences(loss, W)
    d = diagnose_parameter("W", analytic, numeric, wrong=_failed(analytic, numeric))
    assert (d.kind, d.axis) == ("axis", 1)
    assert d.summary == "columns 3 and 4 of `W` are wrong; the other columns are right"


def test_wrong_slices_of_a_3d_parameter_are_named_by_axis():
    n = np.random.default_rng(29).normal(size=(2, 3, 4))
    a = n.copy()
    a[:, [0, 2], :] *= -1.0
    d = diagnose_parameter("K", a, n)
    assert (d.kind, d.axis) == ("axis", 1)
    assert d.summary == "indices 0 and 2 along axis 1 of `K` are wrong; the other index is right"


def test_a_row_can_be_wrong_with_a_coincidentally_right_entry():
    n = np.random.default_rng(30).normal(size=(4, 5))
    a = n.copy()
    a[2, :4] += 1.0  # a[2, 4] happens to be right: 4 of 5 entries is still a wrong row
    d = diagnose_parameter("W", a, n)
    assert d.summary == "row 2 of `W` is wrong; the other rows are right"


def test_a_row_off_by_a_constant_is_named_as_that_row():
    n = np.random.default_rng(40).normal(size=(4, 5))
    a = n.copy()
    a[2] += 1.0  # also "the same error in every column", but naming row 2 says more
    d = diagnose_parameter("W", a, n)
    assert (d.kind, d.axis) == ("axis", 0)
    assert d.summary == "row 2 of `W` is wrong; the other rows are right"


def _centered_layer():
    """tanh(Z - mean of Z over its features) against targets, Z = X @ W + b."""
    rng = np.random.default_rng(31)
    X, W, b, T = (rng.normal(size=s) for s in ((5, 3), (3, 4), (4,), (5, 4)))

    def forward(w, bias):
        Z = X @ w + bias
        return Z - Z.mean(axis=1, keepdims=True)

    def loss(w, bias):
        return 0.5 * float(np.sum((np.tanh(forward(w, bias)) - T) ** 2))

    Y = np.tanh(forward(W, b))
    dY = (Y - T) * (1 - Y**2)  # upstream gradient of the centered Z
    numeric_W = _central_differences(lambda w: loss(w, b), W)
    numeric_b = _central_differences(lambda bias: loss(W, bias), b)
    return X, dY, numeric_W, numeric_b


def test_a_missing_mean_backward_makes_the_error_the_same_along_an_axis():
    X, dY, numeric_W, numeric_b = _centered_layer()
    dZ = dY - dY.mean(axis=1, keepdims=True)  # the backward of the centering
    assert not _failed(X.T @ dZ, numeric_W).any()
    assert not _failed(dZ.sum(axis=0), numeric_b).any()

    # The planted bug: the centering's backward (its `- mean` term) is left out, dZ = dY.
    # dW's error X.T @ mean(dY) is one value per row: the same in every column.
    analytic = X.T @ dY
    d = diagnose_parameter("W", analytic, numeric_W, wrong=_failed(analytic, numeric_W))
    assert (d.kind, d.axis) == ("axis", 1)
    assert d.summary == (
        "the error analytic - numeric is the same along axis 1: every column is off by the "
        "same amounts"
    )
    assert d.hint.startswith(
        "A reduction or a broadcast along axis 1 is missing or wrong in the backward of `W`"
    )
    # db's error, the sum of the same means, is one number on every entry.
    analytic = dY.sum(axis=0)
    d = diagnose_parameter("b", analytic, numeric_b, wrong=_failed(analytic, numeric_b))
    assert (d.kind, d.axis) == ("axis", 0)
    offset = float(np.mean(analytic - numeric_b))
    assert d.summary == (
        f"every entry is off by the same amount: analytic - numeric = {offset:.3g}"
    )
    assert d.hint.startswith("A reduction or a broadcast is missing or wrong in the backward")


def test_a_missing_batch_mean_backward_repeats_the_error_in_every_row():
    rng = np.random.default_rng(32)
    X, T = rng.normal(size=(6, 3)), rng.normal(size=(6, 3))

    def loss(x):
        return float(np.sum(np.sin(x - x.mean(axis=0)) * T))  # inputs centered over the batch

    dY = np.cos(X - X.mean(axis=0)) * T
    numeric = _central_differences(loss, X)
    assert not _failed(dY - dY.mean(axis=0), numeric).any()
    analytic = dY  # the planted bug: the batch mean's backward (a sum over the batch) is missing
    d = diagnose_parameter("X", analytic, numeric, wrong=_failed(analytic, numeric))
    assert (d.kind, d.axis) == ("axis", 0)
    assert d.summary == (
        "the error analytic - numeric is the same along axis 0: every row is off by the same "
        "amounts"
    )


def test_a_scale_bug_stays_a_scale_bug_when_the_error_is_constant_along_an_axis():
    # A bias-like gradient, the same in every row: 3 x numeric has an error that is constant
    # along axis 0 too, but the factor is the simpler and the first explanation.
    numeric = np.tile(np.random.default_rng(33).normal(size=5), (4, 1))
    d = diagnose_parameter("B", 3 * numeric, numeric)
    assert (d.kind, d.summary) == ("scale", "analytic = 3 × numeric on every entry")


def test_a_constant_error_needs_more_than_one_check():
    # Along an axis of length 2 with one column, "the same error in both rows" is one equality:
    # no evidence. The entries are simply wrong.
    numeric = np.array([[1.0], [2.0]])
    analytic = numeric + np.array([[0.5], [0.7]])
    assert diagnose_parameter("w", analytic, numeric).kind == "unknown"


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    rows=st.integers(2, 8),
    columns=st.integers(2, 6),
    data=st.data(),
)
def test_random_wrong_rows_are_named(seed, rows, columns, data):
    rng = np.random.default_rng(seed)
    numeric = rng.normal(size=(rows, columns))
    wrong_rows = data.draw(
        st.lists(st.integers(0, rows - 1), min_size=1, max_size=rows - 1, unique=True)
    )
    analytic = numeric.copy()
    analytic[wrong_rows] += rng.normal(size=(len(wrong_rows), columns))
    d = diagnose_parameter("W", analytic, numeric)
    count = len(wrong_rows) * columns
    if count <= max(3, 0.1 * numeric.size) and 2 * count <= numeric.size:
        assert d.kind == "few_entries"
        assert {i for i, _ in d.entries} == set(wrong_rows)
    else:
        assert (d.kind, d.axis) == ("axis", 0)
        listed = d.summary.split(" of `W`")[0]
        assert {int(i) for i in listed.replace(" and", ",").split(" ", 1)[1].split(",")} == set(
            wrong_rows
        )


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    shape=st.sampled_from([(5,), (2, 2), (3, 4), (4, 4), (2, 3, 2)]),
    k=st.floats(1e-3, 1e3) | st.floats(-1e3, -1e-3),
)
def test_a_random_factor_stays_a_factor(seed, shape, k):
    assume(k != 1.0)
    numeric = np.random.default_rng(seed).normal(size=shape)
    d = diagnose_parameter("W", k * numeric, numeric)
    assert d.kind in ("scale", "sign")
    # k = <a, n> / <n, n> of an exact multiple: within a few eps of k.
    assert d.factor == pytest.approx(k, rel=1e-12)


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    shape=st.sampled_from([(2, 2), (3, 4), (4, 4), (6,), (2, 3, 2)]),
)
def test_random_noise_on_every_entry_is_no_pattern(seed, shape):
    rng = np.random.default_rng(seed)
    numeric = rng.normal(size=shape)
    analytic = numeric + rng.normal(size=shape)
    assert diagnose_parameter("W", analytic, numeric).kind == "unknown"


# -- the failure mask ------------------------------------------------------------------------------
def test_the_checkers_mask_decides_which_entries_are_wrong():
    rng = np.random.default_rng(34)
    numeric = rng.normal(size=(4, 5))
    # Relative noise of 1e-4 everywhere: within float32's rtol (1e-3), not float64's (1e-5).
    analytic = numeric * (1 + 1e-4 * rng.uniform(-1, 1, size=numeric.shape))
    analytic[1, 2] += 1.0
    analytic[3, 0] -= 1.0
    mask = np.zeros(numeric.shape, dtype=bool)
    mask[1, 2] = mask[3, 0] = True  # what a float32 check fails
    d = diagnose_parameter("W", analytic, numeric, wrong=mask)
    assert (d.kind, d.entries) == ("few_entries", ((1, 2), (3, 0)))
    # Without a mask, float64 inputs are judged at float64's rtol: every entry is wrong.
    assert diagnose_parameter("W", analytic, numeric).kind == "unknown"
    # ... and float32 inputs at float32's, like the checker.
    d = diagnose_parameter("W", analytic.astype(np.float32), numeric.astype(np.float32))
    assert (d.kind, d.entries) == ("few_entries", ((1, 2), (3, 0)))


def test_entries_without_an_estimate_are_ignored_by_the_pattern_rules():
    numeric = np.random.default_rng(35).normal(size=(4, 5))
    analytic = numeric.copy()
    analytic[2] *= 2.0
    numeric[0, 1] = np.nan  # not measured: the analytic value there is never compared
    analytic[0, 1] = 1e9
    numeric[2, 3] = np.nan
    d = diagnose_parameter("W", analytic, numeric)
    assert d.summary == "row 2 of `W` is wrong; the other rows are right"


def test_shapes_must_agree():
    with pytest.raises(ValueError, match=r"analytic has shape \(2,\) but numeric has shape \(3,\)"):
        diagnose_parameter("w", np.ones(2), np.ones(3))
    with pytest.raises(ValueError, match=r"wrong has shape \(3,\); expected \(2,\)"):
        diagnose_parameter("w", np.ones(2), 2 * np.ones(2), wrong=np.ones(3, dtype=bool))


# -- swapped gradients -----------------------------------------------------------------------------
def _two_layers():
    """A tanh network with two 3 x 3 weights: the loss, the point and the true gradients."""
    rng = np.random.default_rng(36)
    X, Y = rng.normal(size=(6, 3)), rng.normal(size=(6, 3))
    W1, W2, b = rng.normal(size=(3, 3)), rng.normal(size=(3, 3)), rng.normal(size=3)

    def loss(w1, w2, bias):
        return 0.5 * float(np.sum((np.tanh(X @ w1) @ w2 + bias - Y) ** 2))

    H = np.tanh(X @ W1)
    dO = H @ W2 + b - Y
    grads = {"W1": X.T @ ((dO @ W2.T) * (1 - H**2)), "W2": H.T @ dO, "b": dO.sum(axis=0)}
    numeric = {
        "W1": _central_differences(lambda w: loss(w, W2, b), W1),
        "W2": _central_differences(lambda w: loss(W1, w, b), W2),
        "b": _central_differences(lambda bias: loss(W1, W2, bias), b),
    }
    return grads, numeric


def test_swapped_weight_gradients_are_named():
    grads, numeric = _two_layers()
    for name in grads:
        assert not _failed(grads[name], numeric[name]).any(), name
    # The planted bug: `return {"W1": dW2, "W2": dW1, "b": db}`.
    analytic = {"W1": grads["W2"], "W2": grads["W1"], "b": grads["b"]}
    reports = [
        (name, analytic[name], numeric[name], bool(_failed(analytic[name], numeric[name]).any()))
        for name in ("W1", "W2", "b")
    ]
    assert [failed for *_, failed in reports] == [True, True, False]
    # On its own, each looks like no simple pattern; together they are a swap.
    assert diagnose_parameter("W1", analytic["W1"], numeric["W1"]).kind == "unknown"
    found = diagnose_swaps(reports)
    assert set(found) == {"W1", "W2"}
    d = found["W1"]
    assert (d.kind, d.partner) == ("swapped", "W2")
    assert found["W2"].partner == "W1"
    assert d.summary == (
        "analytic = the numeric gradient of `W2`, and the other way round: the two gradients "
        "are swapped"
    )
    assert d.hint == (
        "The backward returns the gradients of `W1` and `W2` under each other's names "
        '(e.g. `return {"W1": dW2, "W2": dW1}`): return each under its own parameter\'s key.'
    )
    data = json.loads(json.dumps(d.to_dict(), allow_nan=False))
    assert (data["kind"], data["partner"], data["entries"]) == ("swapped", "W2", [])


def test_a_swap_needs_both_directions_and_two_failures(numeric):
    other = np.random.default_rng(37).normal(size=numeric.shape)
    # W1's analytic is W2's numeric, but W2's analytic is not W1's numeric.
    assert diagnose_swaps([("W1", other, numeric, True), ("W2", 2 * other, other, True)]) == {}
    # A parameter that passed is never part of a swap.
    assert diagnose_swaps([("W1", other, numeric, True), ("W2", numeric, other, False)]) == {}
    # Shapes must agree.
    assert (
        diagnose_swaps([("W1", other[:2], numeric[:2], True), ("W2", numeric, other, True)]) == {}
    )


def test_nearly_equal_gradients_with_a_factor_are_not_a_swap(numeric):
    # Tied parameters: their gradients agree to 1e-5. A factor of 1.0001 on both fits the other's
    # numeric within SCALE_FIT_TOLERANCE, but explains none of the error: it is no swap.
    twin = numeric * (1 + 1e-5)
    reports = [("U", 1.0001 * numeric, numeric, True), ("V", 1.0001 * twin, twin, True)]
    assert EXPLAINED_FRACTION < 1
    assert diagnose_swaps(reports) == {}


def test_each_parameter_is_paired_once(numeric):
    other = np.random.default_rng(38).normal(size=numeric.shape)
    # B and C are tied (same numeric); A's analytic is theirs and both of theirs are A's.
    reports = [
        ("A", other, numeric, True),
        ("B", numeric, other, True),
        ("C", numeric, other.copy(), True),
    ]
    found = diagnose_swaps(reports)
    assert len(found) == 2
    assert found["A"].partner in ("B", "C")
    assert found[found["A"].partner].partner == "A"


def test_unmeasured_entries_are_left_out_of_a_swap(numeric):
    other = np.random.default_rng(39).normal(size=numeric.shape)
    n1, n2 = numeric.copy(), other.copy()
    n1[0, 0] = n2[1, 1] = np.nan
    found = diagnose_swaps([("p[0]", other, n1, True), ("p[1]", numeric, n2, True)])
    assert found["p[0]"].partner == "p[1]"
    # Names that are not identifiers get a generic example.
    assert '`return {"W1": dW2, "W2": dW1}`' in found["p[0]"].hint


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    shape=st.sampled_from([(1,), (4,), (2, 3), (3, 3), (2, 2, 2)]),
)
def test_random_swaps_are_found(seed, shape):
    rng = np.random.default_rng(seed)
    n1, n2 = rng.normal(size=shape), rng.normal(size=shape)
    # Two gradients within 1% of each other cannot be told apart from a small error.
    assume(np.linalg.norm(n1 - n2) > 1e-2 * max(np.linalg.norm(n1), np.linalg.norm(n2)))
    noise = 1e-9  # relative, about a float64 central difference's error
    a1 = n2 * (1 + noise * rng.uniform(-1, 1, size=shape))
    a2 = n1 * (1 + noise * rng.uniform(-1, 1, size=shape))
    found = diagnose_swaps([("W1", a1, n1, True), ("W2", a2, n2, True)])
    assert {name: d.partner for name, d in found.items()} == {"W1": "W2", "W2": "W1"}


# -- JSON and the shape check of a transposed gradient ---------------------------------------------
def test_new_fields_are_json_ready():
    n = np.arange(1.0, 21.0).reshape(4, 5)
    a = n.copy()
    a[1, 2] = 0.0
    few = diagnose_parameter("W", a, n)
    assert few.to_dict()["entries"] == [[1, 2]]
    a = n.copy()
    a[:, 1] = 0.0
    along = diagnose_parameter("W", a, n)
    data = json.loads(json.dumps(along.to_dict(), allow_nan=False))
    assert (data["kind"], data["axis"], data["entries"]) == ("axis", 1, [])


def test_a_transposed_gradient_of_the_wrong_shape_is_refused_with_a_transpose_hint():
    tree, _ = ParamTree.flatten({"W": np.ones((5, 3)), "b": np.ones((4, 1))})
    with pytest.raises(InputError) as refused:
        tree.flatten_like({"W": np.ones((3, 5)), "b": np.ones((4, 1))})
    message = str(refused.value)
    assert "The gradient for `W` has shape (3, 5); expected (5, 3), the shape of `W`." in message
    assert message.endswith(
        "It looks transposed: return its `.T`, or check the order of the product in its backward."
    )
    # Same size but not a reversed 2-D shape: the keepdims hint, no transpose.
    with pytest.raises(InputError) as refused:
        tree.flatten_like({"W": np.ones((5, 3)), "b": np.ones(4)})
    assert "keep the summed axis with `keepdims=True`" in str(refused.value)
    assert "transposed" not in str(refused.value)
