"""Tests of gradproof.course, the deeplearning.ai gradient-checking assignment reproduced."""

from __future__ import annotations

import copy
import math
import sys
from typing import Any, TypeAlias

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from numpy.typing import NDArray

from gradproof import course
from gradproof._typing import FloatArray
from gradproof.course import (
    PARAMETER_KEYS,
    backward_propagation,
    backward_propagation_n,
    backward_propagation_n_corrected,
    dictionary_to_vector,
    forward_propagation,
    forward_propagation_n,
    gradient_check,
    gradient_check_n,
    gradient_check_n_test_case,
    gradients_to_vector,
    parameter_gradients,
    relu,
    sigmoid,
    vector_to_dictionary,
)
from gradproof.errors import InputError

IntArray: TypeAlias = NDArray[np.int64]
ComplexArray: TypeAlias = NDArray[np.complex128]
Cache: TypeAlias = tuple[FloatArray, ...]

SHAPES = {"W1": (5, 4), "b1": (5, 1), "W2": (3, 5), "b2": (3, 1), "W3": (1, 3), "b3": (1, 1)}
GRADIENT_KEYS = ("dW1", "db1", "dW2", "db2", "dW3", "db3")
ALL_GRADIENT_KEYS = {"dZ3", "dW3", "db3", "dA2", "dZ2", "dW2", "db2", "dA1", "dZ1", "dW1", "db1"}
U = np.finfo(np.float64).eps / 2  # unit round-off of float64, 2**-53


def _case() -> tuple[FloatArray, IntArray, dict[str, FloatArray], Cache]:
    X, Y, parameters = gradient_check_n_test_case()
    _, cache = forward_propagation_n(X, Y, parameters)
    return X, Y, parameters, cache


# ---------------------------------------------------------------------------
# One-dimensional check
# ---------------------------------------------------------------------------


def test_forward_and_backward_1d() -> None:
    assert forward_propagation(2, 4) == 8
    assert backward_propagation(2, 4) == 2


def test_gradient_check_1d_matches_the_published_figure(capsys: pytest.CaptureFixture[str]) -> None:
    difference = gradient_check(2, 4)
    np.testing.assert_allclose(difference, 2.9193358829e-10, rtol=1e-6)
    assert difference == 2.919335883291695e-10
    assert isinstance(difference, float)
    assert capsys.readouterr().out == "The gradient is correct!\n"


def test_gradient_check_1d_reports_a_wrong_gradient(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(course, "backward_propagation", lambda x, theta: x + 1)
    difference = gradient_check(2, 4)
    np.testing.assert_allclose(difference, 1 / 5, rtol=1e-6)  # |2 - 3| / (2 + 3)
    assert capsys.readouterr().out == "The gradient is wrong!\n"


def test_gradient_check_1d_print_msg_false_prints_nothing(
    capsys: pytest.CaptureFixture[str],
) -> None:
    gradient_check(2, 4, print_msg=False)
    assert capsys.readouterr().out == ""


def test_gradient_check_1d_round_off_can_flag_a_correct_gradient(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The recipe's threshold 1e-7 is below the round-off of the centered difference once
    # |theta| is a few hundred (see the bound in the hypothesis test below): the gradient
    # of theta * x is exactly x, yet the check calls it wrong. This pins the faithful
    # behaviour rather than hiding it.
    difference = gradient_check(1.0, 300.0)
    assert difference > 1e-7
    assert capsys.readouterr().out == "The gradient is wrong!\n"


# Round-off bound for the 1-D check. With u = 2**-53 and each operation rounded,
#   thetaplus  = (theta + eps)(1 + d1),       J_plus  = thetaplus * x * (1 + d2),
#   thetaminus = (theta - eps)(1 + d3),       J_minus = thetaminus * x * (1 + d4),
# so |J_plus - J_minus - 2 eps x| <= |x| (|theta + eps| + |theta - eps|)(2u + u^2)
#                                 <= 2 |x| (|theta| + eps)(2u + u^2),
# and (J_plus - J_minus) / (2 eps) = x (1 + e) with |e| <= E := (|theta| + eps)(2u + u^2) / eps.
# The subtraction and the division by 2 eps (exact: 2 * eps is a power-of-two scaling)
# round once more each: gradapprox = x (1 + e'), |e'| <= B := E + (1 + E)(2u + u^2).
# Then difference = |x - g| / (|x| + |g|) <= B / (2 - B), and the norms, the subtraction
# and the final division add a few u relative; for B < 1 (here B <= 1e-4) all of that
# stays below B. |x| >= 1e-3 keeps every product far from the subnormal range, where
# the relative-error model would not hold.
_magnitudes = st.floats(min_value=1e-3, max_value=1e3, allow_nan=False, allow_infinity=False)


@given(
    theta=st.floats(min_value=-1e4, max_value=1e4, allow_nan=False, allow_infinity=False),
    magnitude=_magnitudes,
    negative=st.booleans(),
    epsilon=st.sampled_from([1e-4, 1e-5, 1e-7]),
)
@settings(max_examples=300, deadline=None)
def test_gradient_check_1d_is_within_the_round_off_bound(
    theta: float, magnitude: float, negative: bool, epsilon: float
) -> None:
    x = -magnitude if negative else magnitude
    E = (abs(theta) + epsilon) * (2 * U + U * U) / epsilon
    B = E + (1 + E) * (2 * U + U * U)
    difference = gradient_check(x, theta, epsilon=epsilon, print_msg=False)
    assert 0 <= difference <= B


# ---------------------------------------------------------------------------
# The 3-layer network
# ---------------------------------------------------------------------------


def test_sigmoid_and_relu() -> None:
    np.testing.assert_allclose(sigmoid(np.array([0.0, 2.0])), [0.5, 1 / (1 + math.exp(-2))])
    np.testing.assert_array_equal(relu(np.array([[-1.5, 0.0, 2.5]])), [[0.0, 0.0, 2.5]])


def test_gradient_check_n_test_case_reproduces_the_assignment() -> None:
    X, Y, parameters = gradient_check_n_test_case()
    assert X[0, 0] == 1.6243453636632417  # np.random.seed(1); np.random.randn() first draw
    np.testing.assert_array_equal(Y, [1, 1, 0])
    assert list(parameters) == list(PARAMETER_KEYS)
    # The draws come from one seed-1 legacy stream, in the order X, W1, b1, W2, b2, W3, b3.
    reference = np.random.RandomState(1)  # the legacy stream np.random.seed(1) sets up
    np.testing.assert_array_equal(X, reference.randn(4, 3))
    for key in PARAMETER_KEYS:
        assert parameters[key].shape == SHAPES[key]
        np.testing.assert_array_equal(parameters[key], reference.randn(*SHAPES[key]))


def test_gradient_check_n_test_case_restores_the_global_random_state() -> None:
    saved = np.random.get_state()  # noqa: NPY002 -- the test is about the legacy global state
    try:
        np.random.seed(123)  # noqa: NPY002
        gradient_check_n_test_case()
        after_call = np.random.rand(5)  # noqa: NPY002
        np.random.seed(123)  # noqa: NPY002
        without_call = np.random.rand(5)  # noqa: NPY002
    finally:
        np.random.set_state(saved)  # noqa: NPY002
    np.testing.assert_array_equal(after_call, without_call)


def test_forward_propagation_n_cost_is_the_hand_computed_logistic_loss() -> None:
    X, Y, parameters = gradient_check_n_test_case()
    cost, cache = forward_propagation_n(X, Y, parameters)
    assert isinstance(cost, float)
    assert len(cache) == 12
    A3 = cache[9]
    assert A3.shape == (1, 3)
    # Y = [1, 1, 0]: cost = -(log a1 + log a2 + log(1 - a3)) / 3.
    a1, a2, a3 = (float(a) for a in A3[0])
    expected = -(math.log(a1) + math.log(a2) + math.log(1 - a3)) / 3
    assert cost == pytest.approx(expected, rel=1e-13)
    assert cost == pytest.approx(2.407833389834357, rel=1e-12)


def test_gradient_check_n_with_the_shipped_backward_finds_the_mistake(
    capsys: pytest.CaptureFixture[str],
) -> None:
    X, Y, parameters, cache = _case()
    gradients = backward_propagation_n(X, Y, cache)
    assert set(gradients) == ALL_GRADIENT_KEYS
    difference = gradient_check_n(parameters, gradients, X, Y)
    assert isinstance(difference, float)
    assert difference == pytest.approx(0.285093156781, abs=1e-9)
    assert difference == pytest.approx(0.2850931567761623, rel=1e-12)
    out = capsys.readouterr().out
    assert out.startswith("There is a mistake in the backward propagation! difference = ")
    assert out == f"There is a mistake in the backward propagation! difference = {difference}\n"
    assert "\033[" not in out  # captured output is not a terminal: no colour codes


def test_gradient_check_n_with_the_corrected_backward_passes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    X, Y, parameters, cache = _case()
    gradients = backward_propagation_n_corrected(X, Y, cache)
    assert set(gradients) == ALL_GRADIENT_KEYS
    difference = gradient_check_n(parameters, gradients, X, Y)
    assert difference < 2e-7
    assert difference == pytest.approx(1.189e-7, rel=1e-3)
    out = capsys.readouterr().out
    assert out == f"Your backward propagation works perfectly fine! difference = {difference}\n"


def test_gradient_check_n_colours_only_on_a_terminal(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    X, Y, parameters, cache = _case()
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    buggy = gradient_check_n(parameters, backward_propagation_n(X, Y, cache), X, Y)
    out = capsys.readouterr().out
    assert out == (
        f"\033[93mThere is a mistake in the backward propagation! difference = {buggy}\033[0m\n"
    )
    fixed = gradient_check_n(parameters, backward_propagation_n_corrected(X, Y, cache), X, Y)
    out = capsys.readouterr().out
    assert out == (
        f"\033[92mYour backward propagation works perfectly fine! difference = {fixed}\033[0m\n"
    )


def test_gradient_check_n_print_msg_false_prints_nothing(
    capsys: pytest.CaptureFixture[str],
) -> None:
    X, Y, parameters, cache = _case()
    difference = gradient_check_n(
        parameters, backward_propagation_n(X, Y, cache), X, Y, print_msg=False
    )
    assert difference > 2e-7
    assert capsys.readouterr().out == ""


def test_gradient_check_n_calls_the_functions_rebound_in_the_course_module(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Note [Rebinding the course's functions]: a student's own forward pass, bound under
    # the assignment's name, is the one the check runs, as in the notebook.
    X, Y, parameters, cache = _case()
    calls: list[str] = []

    def counted(name: str, function: Any) -> Any:
        def wrapper(*args: Any) -> Any:
            calls.append(name)
            return function(*args)

        return wrapper

    for name in ("forward_propagation_n", "vector_to_dictionary", "relu", "sigmoid"):
        monkeypatch.setattr(course, name, counted(name, getattr(course, name)))
    gradient_check_n(
        parameters, backward_propagation_n_corrected(X, Y, cache), X, Y, print_msg=False
    )
    evaluations = 2 * len(dictionary_to_vector(parameters)[1])
    assert calls.count("forward_propagation_n") == evaluations
    assert calls.count("vector_to_dictionary") == evaluations
    assert calls.count("relu") == 2 * evaluations
    assert calls.count("sigmoid") == evaluations


def test_the_shipped_backward_has_exactly_the_two_planted_bugs() -> None:
    X, Y, _, cache = _case()
    buggy = backward_propagation_n(X, Y, cache)
    fixed = backward_propagation_n_corrected(X, Y, cache)
    # Exact equalities: the factors 2 and 4 are powers of two, so scaling by them is exact
    # (and 4./m == 4 * (1./m) exactly), whatever the order of the multiplications.
    np.testing.assert_array_equal(buggy["dW2"], 2 * fixed["dW2"])
    np.testing.assert_array_equal(buggy["db1"], 4 * fixed["db1"])
    assert np.any(fixed["dW2"] != 0)
    assert np.any(fixed["db1"] != 0)
    for key in ALL_GRADIENT_KEYS - {"dW2", "db1"}:
        np.testing.assert_array_equal(buggy[key], fixed[key], err_msg=key)


def _complex_cost(theta: ComplexArray, X: FloatArray, Y: IntArray) -> complex:
    """The course's cost, written independently, for complex-step differentiation.

    relu(z) is z * (Re z > 0) so that the imaginary part carries the derivative.
    """
    sizes = [rows * cols for rows, cols in SHAPES.values()]
    pieces = np.split(theta, np.cumsum(sizes)[:-1])
    W1, b1, W2, b2, W3, b3 = (
        piece.reshape(shape) for piece, shape in zip(pieces, SHAPES.values(), strict=True)
    )
    A1 = W1 @ X + b1
    A1 = A1 * (A1.real > 0)
    A2 = W2 @ A1 + b2
    A2 = A2 * (A2.real > 0)
    A3 = 1 / (1 + np.exp(-(W3 @ A2 + b3)))
    y = np.asarray(Y, dtype=np.float64)
    return complex(np.mean(-y * np.log(A3) - (1 - y) * np.log(1 - A3)))


def test_corrected_backward_matches_complex_step_derivatives() -> None:
    # Complex step: dJ/dtheta_k = Im J(theta + i h e_k) / h + O(h^2), with no subtraction
    # and hence no cancellation, so it is accurate to a few units of round-off. With
    # h = 1e-30 the O(h^2) term vanishes; rtol 1e-10 leaves ample room for the round-off
    # of both sides (the cost's largest condition number, from 1 - A3 with A3 ~ 0.9989,
    # is ~1e3, so errors are ~1e3 u ~ 1e-13 relative).
    X, Y, parameters, cache = _case()
    theta = dictionary_to_vector(parameters)[0].ravel()
    h = 1e-30
    reference = np.array(
        [_complex_cost(theta + 1j * h * e, X, Y).imag / h for e in np.eye(theta.size)]
    )
    analytic = gradients_to_vector(backward_propagation_n_corrected(X, Y, cache)).ravel()
    np.testing.assert_allclose(analytic, reference, rtol=1e-10, atol=1e-15)
    # The real part of the independent forward is the course's cost.
    cost, _ = forward_propagation_n(X, Y, parameters)
    assert _complex_cost(theta.astype(complex), X, Y).real == pytest.approx(cost, rel=1e-13)


def test_corrected_backward_matches_centered_differences() -> None:
    # Centered differences with step h = 1e-6 on the course's own forward pass.
    # Truncation error is h^2 / 6 * |J'''| ~ 1e-13 relative, far inside rtol = 1e-6.
    # Round-off dominates: the cost is computed with an absolute error of about
    # u / (m * min(A3, 1 - A3)) (the cancellation in 1 - A3 for the third example,
    # A3 ~ 0.9989, Y = 0, magnifies it ~1e3 times), and a centered difference turns an
    # error delta in J into delta / h in the slope. atol is that bound with a margin of 4.
    X, Y, parameters, cache = _case()
    theta = dictionary_to_vector(parameters)[0].ravel()
    A3 = cache[9]
    m = X.shape[1]
    h = 1e-6
    atol = 4 * U / (m * float(np.min(np.minimum(A3, 1 - A3)))) / h
    assert atol < 3e-7

    def cost(vector: FloatArray) -> float:
        return forward_propagation_n(X, Y, vector_to_dictionary(vector))[0]

    estimate = np.array(
        [(cost(theta + h * e) - cost(theta - h * e)) / (2 * h) for e in np.eye(theta.size)]
    )
    fixed = gradients_to_vector(backward_propagation_n_corrected(X, Y, cache)).ravel()
    np.testing.assert_allclose(fixed, estimate, rtol=1e-6, atol=atol)
    buggy = gradients_to_vector(backward_propagation_n(X, Y, cache)).ravel()
    assert not np.allclose(buggy, estimate, rtol=1e-6, atol=atol)


def test_parameter_gradients_keys_gradients_like_parameters() -> None:
    X, Y, _, cache = _case()
    gradients = backward_propagation_n_corrected(X, Y, cache)
    keyed = parameter_gradients(gradients)
    assert list(keyed) == list(PARAMETER_KEYS)
    for key in PARAMETER_KEYS:
        assert keyed[key] is gradients["d" + key]


# ---------------------------------------------------------------------------
# Dictionaries <-> vectors
# ---------------------------------------------------------------------------


def test_dictionary_to_vector_round_trip_and_keys() -> None:
    _, _, parameters = gradient_check_n_test_case()
    theta, keys = dictionary_to_vector(parameters)
    assert theta.shape == (47, 1)
    assert theta.dtype == np.float64
    assert keys == ["W1"] * 20 + ["b1"] * 5 + ["W2"] * 15 + ["b2"] * 3 + ["W3"] * 3 + ["b3"]
    np.testing.assert_array_equal(theta[:20, 0], parameters["W1"].ravel())  # row-major
    np.testing.assert_array_equal(theta[46, 0], parameters["b3"][0, 0])
    back = vector_to_dictionary(theta)
    assert list(back) == list(PARAMETER_KEYS)
    for key in PARAMETER_KEYS:
        assert back[key].shape == SHAPES[key]
        np.testing.assert_array_equal(back[key], parameters[key])


def test_dictionary_to_vector_ignores_extra_keys_and_does_not_alias() -> None:
    _, _, parameters = gradient_check_n_test_case()
    theta, _ = dictionary_to_vector({**parameters, "extra": np.ones(3)})
    assert theta.shape == (47, 1)
    theta[:] = 0
    assert np.all(parameters["W1"] != 0)


def test_vector_to_dictionary_returns_copies() -> None:
    theta = np.arange(47.0).reshape(47, 1)
    original = theta.copy()
    parameters = vector_to_dictionary(theta)
    for array in parameters.values():
        array += 1000
        assert not np.shares_memory(array, theta)
    np.testing.assert_array_equal(theta, original)
    # A flat (47,) vector is accepted too.
    flat = vector_to_dictionary(np.arange(47.0))
    for key in PARAMETER_KEYS:
        np.testing.assert_array_equal(flat[key], parameters[key] - 1000)


def test_gradients_to_vector_order() -> None:
    gradients = {
        "dZ3": np.full((1, 3), -1.0),  # ignored
        "db3": np.array([[46.0]]),
        "dW3": np.arange(43.0, 46.0).reshape(1, 3),
        "db2": np.arange(40.0, 43.0).reshape(3, 1),
        "dW2": np.arange(25.0, 40.0).reshape(3, 5),
        "db1": np.arange(20.0, 25.0).reshape(5, 1),
        "dW1": np.arange(20.0).reshape(5, 4),
    }
    vector = gradients_to_vector(gradients)
    np.testing.assert_array_equal(vector, np.arange(47.0).reshape(47, 1))


def test_gradients_to_vector_lines_up_with_dictionary_to_vector() -> None:
    X, Y, parameters, cache = _case()
    gradients = backward_propagation_n_corrected(X, Y, cache)
    vector = gradients_to_vector(gradients)
    _, keys = dictionary_to_vector(parameters)
    for key in PARAMETER_KEYS:
        rows = [i for i, k in enumerate(keys) if k == key]
        np.testing.assert_array_equal(vector[rows, 0], gradients["d" + key].ravel())


@given(theta=hnp.arrays(np.float64, (47, 1), elements=st.floats(allow_nan=False, width=64)))
@settings(max_examples=100, deadline=None)
def test_vector_round_trip_property(theta: FloatArray) -> None:
    back, keys = dictionary_to_vector(vector_to_dictionary(theta))
    np.testing.assert_array_equal(back, theta)
    assert len(keys) == 47


@given(
    parameters=st.fixed_dictionaries(
        {
            key: hnp.arrays(np.float64, shape, elements=st.floats(allow_nan=False, width=64))
            for key, shape in SHAPES.items()
        }
    )
)
@settings(max_examples=100, deadline=None)
def test_dictionary_round_trip_property(parameters: dict[str, FloatArray]) -> None:
    back = vector_to_dictionary(dictionary_to_vector(parameters)[0])
    for key in PARAMETER_KEYS:
        np.testing.assert_array_equal(back[key], parameters[key])


# ---------------------------------------------------------------------------
# Arguments are never modified
# ---------------------------------------------------------------------------


def _assert_same(actual: Any, expected: Any) -> None:
    if isinstance(expected, dict):
        assert list(actual) == list(expected)
        for key in expected:
            np.testing.assert_array_equal(actual[key], expected[key], err_msg=key)
    elif isinstance(expected, tuple):
        assert len(actual) == len(expected)
        for a, e in zip(actual, expected, strict=True):
            np.testing.assert_array_equal(a, e)
    else:
        np.testing.assert_array_equal(actual, expected)


def test_no_function_modifies_its_arguments() -> None:
    X, Y, parameters, cache = _case()
    buggy = backward_propagation_n(X, Y, cache)
    fixed = backward_propagation_n_corrected(X, Y, cache)
    theta, _ = dictionary_to_vector(parameters)
    arguments = {
        "X": X,
        "Y": Y,
        "parameters": parameters,
        "cache": cache,
        "buggy": buggy,
        "fixed": fixed,
        "theta": theta,
    }
    saved = copy.deepcopy(arguments)

    # (The 1-D functions take floats, which cannot be modified.)
    z = np.array([-1.0, 0.5])
    sigmoid(z)
    relu(z)
    np.testing.assert_array_equal(z, [-1.0, 0.5])

    forward_propagation_n(X, Y, parameters)
    backward_propagation_n(X, Y, cache)
    backward_propagation_n_corrected(X, Y, cache)
    dictionary_to_vector(parameters)
    vector_to_dictionary(theta)
    gradients_to_vector(buggy)
    parameter_gradients(fixed)
    gradient_check_n(parameters, buggy, X, Y, print_msg=False)
    gradient_check_n(parameters, fixed, X, Y, print_msg=False)

    for name, value in arguments.items():
        _assert_same(value, saved[name])


# ---------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------


def test_dictionary_to_vector_missing_key() -> None:
    _, _, parameters = gradient_check_n_test_case()
    del parameters["W2"]
    with pytest.raises(InputError, match=r"no key 'W2'.*'W1', 'b1', 'W2', 'b2', 'W3', 'b3'"):
        dictionary_to_vector(parameters)
    with pytest.raises(ValueError, match="W2"):  # InputError is a ValueError
        dictionary_to_vector(parameters)


def test_forward_propagation_n_missing_key() -> None:
    X, Y, parameters = gradient_check_n_test_case()
    del parameters["b3"]
    with pytest.raises(InputError, match="no key 'b3'"):
        forward_propagation_n(X, Y, parameters)


def test_gradients_missing_key() -> None:
    X, Y, _, cache = _case()
    gradients = backward_propagation_n_corrected(X, Y, cache)
    del gradients["db2"]
    with pytest.raises(InputError, match="`gradients` has no key 'db2'"):
        gradients_to_vector(gradients)
    with pytest.raises(InputError, match="`gradients` has no key 'db2'"):
        parameter_gradients(gradients)


def test_not_a_dict() -> None:
    with pytest.raises(InputError, match="`parameters` is a list; expected a dict"):
        dictionary_to_vector([np.zeros((5, 4))])  # type: ignore[arg-type]


@pytest.mark.parametrize("n", [0, 46, 48, 94])
def test_vector_to_dictionary_wrong_length(n: int) -> None:
    with pytest.raises(InputError, match=rf"has {n} entries.*expected 47 = sizes of W1\(5, 4\)"):
        vector_to_dictionary(np.zeros((n, 1)))
