"""relative_difference: the classic assignment's ||a - n|| / (||a|| + ||n||)."""

from __future__ import annotations

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gradproof.numerics.compare import relative_difference

EPS = float(np.finfo(np.float64).eps)


@pytest.mark.parametrize(
    ("analytic", "numeric", "expected"),
    [
        ([2.0, 0.0], [1.0, 0.0], 1 / 3),  # |1| / (2 + 1)
        ([3.0, 4.0], [3.0, 4.0], 0.0),
        ([3.0, 4.0], [0.0, 0.0], 1.0),  # 5 / (5 + 0)
        ([0.0, 0.0], [0.0, 0.0], 0.0),  # both zero: defined as agreement
        ([1.0, 2.0, 2.0], [-1.0, -2.0, -2.0], 1.0),  # opposite: 6 / (3 + 3)
        ([[3.0, 0.0], [0.0, 4.0]], [[0.0, 0.0], [0.0, 4.0]], 3 / 9),  # Frobenius: 3 / (5 + 4)
        (2.0, 1.0, 1 / 3),  # scalars
        ([1.0, 0.0], [0.0, 1.0], np.sqrt(2) / 2),  # orthogonal unit vectors
    ],
    ids=["halves", "equal", "one-zero", "both-zero", "opposite", "matrix", "scalar", "orthogonal"],
)
def test_relative_difference_on_hand_computed_values(analytic, numeric, expected):
    result = relative_difference(analytic, numeric)
    assert type(result) is float
    # Three norms and a division, each correctly rounded to within a few eps.
    np.testing.assert_allclose(result, expected, rtol=4 * EPS, atol=0)


def test_the_assignments_one_dimensional_example():
    # gradient_check of J = theta * x at x = 2: grad 2, central difference with eps = 1e-7.
    theta, x, eps = 4.0, 2.0, 1e-7
    approx = (x * (theta + eps) - x * (theta - eps)) / (2 * eps)
    expected = abs(2.0 - approx) / (2.0 + abs(approx))
    assert relative_difference(2.0, approx) == pytest.approx(expected, rel=4 * EPS)
    assert relative_difference(2.0, approx) < 1e-7


_vectors = st.integers(1, 6).flatmap(
    lambda n: st.tuples(
        *[hnp.arrays(np.float64, n, elements=st.floats(-1e6, 1e6, allow_subnormal=False))] * 2
    )
)


@settings(deadline=None, max_examples=50)
@given(pair=_vectors)
def test_relative_difference_is_symmetric_and_bounded(pair):
    a, n = pair
    d = relative_difference(a, n)
    assert d == relative_difference(n, a)  # a - n and n - a have the same norm, exactly
    # Triangle inequality ||a - n|| <= ||a|| + ||n||; each norm rounds by a few eps.
    assert 0.0 <= d <= 1.0 + 8 * EPS


@settings(deadline=None, max_examples=50)
@given(
    # Rounded to 1e-6 so that no square underflows, even scaled by 2**-20.
    a=hnp.arrays(np.float64, 4, elements=st.floats(-1e3, 1e3).map(lambda v: round(v, 6))),
    exponent=st.integers(-20, 20),
)
def test_relative_difference_is_scale_free_and_one_for_opposite_vectors(a, exponent):
    if not np.any(a):
        assert relative_difference(a, -a) == 0.0  # both zero
        return
    assert relative_difference(a, -a) == 1.0  # ||2a|| = 2 ||a|| exactly
    n = a + 1.0
    # Scaling by a power of two is exact, and so is every norm of the scaled vectors (squares,
    # sums and a correctly rounded sqrt all scale exactly): the result is exactly the same.
    # (Any other factor rounds a and n, which a - n amplifies by ||a|| / ||a - n||.)
    scale = 2.0**exponent
    assert relative_difference(scale * a, scale * n) == relative_difference(a, n)


@pytest.mark.parametrize(
    ("analytic", "numeric", "expected"),
    [
        ([1e-170, 0.0], [0.0, 0.0], 1.0),
        ([3e-170], [1e-170], 0.5),
        ([1e200], [0.0], 1.0),
        ([1e200], [-1e200], 1.0),
    ],
    ids=["tiny-vs-zero", "tiny-halves", "huge-vs-zero", "huge-opposite"],
)
def test_relative_difference_of_extreme_magnitudes(analytic, numeric, expected):
    with np.errstate(over="ignore", invalid="ignore"):
        result = relative_difference(analytic, numeric)
    # As for ordinary magnitudes: three norms and a division, a few eps.
    np.testing.assert_allclose(result, expected, rtol=4 * EPS)
