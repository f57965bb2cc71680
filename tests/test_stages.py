"""gradproof.check_stages: a staged numpy backward pass checked line by line."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

import gradproof
from gradproof import InputError, course
from gradproof.cli.demo import run_demo

ASSIGNMENT_SENTENCE = (
    "dZ2 and dZ1 are right; dW2 is 2× too large and db1 4× too large: the error is in the "
    "lines that compute them from dZ2 and dZ1, not upstream."
)


def _assignment(backward):
    X, Y, parameters = course.gradient_check_n_test_case()
    _, cache = course.forward_propagation_n(X, Y, parameters)
    grads = backward(X, Y, cache)
    return gradproof.check_stages(course.forward_stages_n(Y), X, grads, params=parameters)


# -- the assignment ------------------------------------------------------------------------------
def test_the_forward_stages_compute_the_assignments_forward_pass():
    X, Y, parameters = course.gradient_check_n_test_case()
    cost, cache = course.forward_propagation_n(X, Y, parameters)
    value, values = X, []
    for _, fn in course.forward_stages_n(Y):
        value = fn(value, parameters)
        values.append(value)
    assert value == cost
    Z1, A1, _, _, Z2, A2, _, _, Z3, A3, _, _ = cache
    for mine, theirs in zip(values[:-1], (Z1, A1, Z2, A2, Z3, A3), strict=True):
        assert np.array_equal(mine, theirs)


def test_the_shipped_backward_says_where_the_error_enters():
    result = _assignment(course.backward_propagation_n)
    assert result.where == ASSIGNMENT_SENTENCE
    assert result.suspects == ("dW2", "db1")
    assert [s.name for s in result.stages] == [
        *("dZ3", "dA2", "dZ2", "dA1", "dZ1"),
        *("dW3", "db3", "dW2", "db2", "dW1", "db1"),
    ]
    assert result["dW2"].factor == pytest.approx(2.0) and result["db1"].factor == pytest.approx(4)
    assert result["dW2"].source == "dZ2" and result["db1"].source == "dZ1"
    assert result["dW3"].source == "dZ3" and result["dA2"].source == "dZ3"
    # The intermediate gradients are of the summed cost m·J, m = 3: a convention, stated.
    assert result.convention == 3
    assert result.convention_note.startswith(
        "dZ3, dA2, dZ2, dA1 and dZ1 are 3 × the gradients of the loss"
    )
    assert "A convention, not a bug" in result.convention_note
    assert "gradproof stages: WRONG: dZ2 and dZ1 are right; dW2 is 2× too large" in str(result)


def test_the_convention_is_real_the_intermediate_gradients_are_m_times_the_costs():
    """The ground truth of the convention: dZ3 = A3 - Y is m × dJ/dZ3, by the formula."""
    X, Y, parameters = course.gradient_check_n_test_case()
    _, cache = course.forward_propagation_n(X, Y, parameters)
    dZ3 = course.backward_propagation_n(X, Y, cache)["dZ3"]
    Z3 = cache[8]
    h = 1e-6
    numeric = np.zeros_like(Z3)
    for j in range(Z3.shape[1]):
        for sign in (1, -1):
            moved = Z3.copy()
            moved[0, j] += sign * h
            stages = course.forward_stages_n(Y)
            numeric[0, j] += sign * stages[-1][1](stages[-2][1](moved, parameters), parameters)
    numeric /= 2 * h
    assert np.allclose(dZ3, 3 * numeric, rtol=1e-6)
    assert not np.allclose(dZ3, numeric, rtol=1e-2)


def test_the_corrected_backward_is_right_line_by_line():
    result = _assignment(course.backward_propagation_n_corrected)
    assert result.passed and result.where == "every gradient is right."
    assert result.convention == 3


def test_the_demo_ends_with_the_line_by_line_check():
    lines: list[str] = []
    run_demo(lines.append)
    text = "\n".join(lines)
    last = text.split("4. Where the error enters")[1]
    assert " ".join(last.split()).count(ASSIGNMENT_SENTENCE) == 1
    assert "A convention, not a bug" in last


def test_no_convention_when_told_so_blames_the_first_line():
    X, Y, parameters = course.gradient_check_n_test_case()
    _, cache = course.forward_propagation_n(X, Y, parameters)
    grads = course.backward_propagation_n_corrected(X, Y, cache)
    result = gradproof.check_stages(
        course.forward_stages_n(Y), X, grads, params=parameters, convention=None
    )
    assert result.convention is None and result.suspects[:5] == ("dZ3", "dA2", "dZ2", "dA1", "dZ1")
    assert result.where == (
        "dZ3 is 3× too large: the error is in the lines that compute it from the loss."
    )
    told = gradproof.check_stages(
        course.forward_stages_n(Y), X, grads, params=parameters, convention=3
    )
    assert told.passed and told.convention == 3


# -- a model of one's own ------------------------------------------------------------------------
RNG = np.random.default_rng(5)
X = RNG.normal(size=(6, 3))
T = RNG.normal(size=(6, 2))
PARAMS = {
    "W1": RNG.normal(size=(3, 4)),
    "b1": RNG.normal(size=4) * 0.1,
    "W2": RNG.normal(size=(4, 2)),
    "b2": np.zeros(2),
}
STAGES = [
    ("Z", lambda x, p: x @ p["W1"] + p["b1"]),
    ("H", lambda z, p: np.tanh(z)),
    ("P", lambda h, p: h @ p["W2"] + p["b2"]),
    ("loss", lambda y, p: float(np.mean((y - T) ** 2))),
]


def mlp_backward(p, *, bug=None):
    """The gradients of the mean squared error, by hand; `bug` plants one wrong line."""
    Z = X @ p["W1"] + p["b1"]
    H = np.tanh(Z)
    P = H @ p["W2"] + p["b2"]
    dP = 2 * (P - T) / P.size
    dW2, db2 = H.T @ dP, dP.sum(axis=0)
    dH = dP @ p["W2"].T
    dZ = dH * (1 - H) if bug == "activation" else dH * (1 - H**2)
    dW1 = X.T @ dZ * (2 if bug == "dW1" else 1)
    db1 = dZ.sum(axis=0)
    return {"dP": dP, "dW2": dW2, "db2": db2, "dH": dH, "dZ": dZ, "dW1": dW1, "db1": db1}


def test_the_hand_written_mlp_gradients_agree_with_autograd():
    torch = pytest.importorskip("torch")
    tensors = {k: torch.tensor(v, requires_grad=True) for k, v in PARAMS.items()}
    Z = torch.tensor(X) @ tensors["W1"] + tensors["b1"]
    Z.retain_grad()
    P = torch.tanh(Z) @ tensors["W2"] + tensors["b2"]
    P.retain_grad()
    ((P - torch.tensor(T)) ** 2).mean().backward()
    right = mlp_backward(PARAMS)
    for key in PARAMS:
        assert np.allclose(right[f"d{key}"], tensors[key].grad.numpy(), rtol=1e-12)
    assert np.allclose(right["dZ"], Z.grad.numpy()) and np.allclose(right["dP"], P.grad.numpy())
    assert not np.allclose(mlp_backward(PARAMS, bug="activation")["dZ"], Z.grad.numpy())


def test_a_right_model_of_ones_own_passes_without_a_convention():
    result = gradproof.check_stages(STAGES, X, mlp_backward(PARAMS), params=PARAMS)
    assert result.passed and result.convention is None and not result.convention_note
    assert result.where == "every gradient is right."


def test_a_wrong_activation_line_is_where_the_error_enters():
    result = gradproof.check_stages(
        STAGES, X, mlp_backward(PARAMS, bug="activation"), params=PARAMS
    )
    assert result["dH"].passed and not result["dZ"].passed
    assert result.where.startswith("dH is right and dZ is wrong (")
    assert result.where.endswith("): the error is in the lines that compute dZ from dH.")
    # What follows from the wrong dZ is wrong too, but the first wrong line is named.
    assert set(result.suspects) == {"dZ", "dW1", "db1"}


def test_a_wrong_parameter_line_is_not_blamed_upstream():
    result = gradproof.check_stages(STAGES, X, mlp_backward(PARAMS, bug="dW1"), params=PARAMS)
    assert result.where == (
        "dZ is right; dW1 is 2× too large: the error is in the line that computes it from dZ, "
        "not upstream."
    )


def test_a_single_intermediate_gradient_off_by_a_factor_is_a_bug_not_a_convention():
    stages: list[tuple[str, Any]] = [("H", np.tanh), ("loss", lambda h: float(np.sum(h**3)))]
    x = np.linspace(-1, 1, 5)
    h = np.tanh(x)
    result = gradproof.check_stages(stages, x, {"H": 6 * h**2})
    assert result.convention is None and result.suspects == ("H",)
    assert (
        result.where
        == "H is 2× too large: the error is in the lines that compute it from the loss."
    )
    assert gradproof.check_stages(stages, x, {"H": 6 * h**2}, convention=2).passed


def test_without_parameters_the_stages_take_the_value_alone():
    stages: list[tuple[str, Any]] = [("H", np.tanh), ("loss", lambda h: float(np.sum(h**3)))]
    x = np.linspace(-1, 1, 5)
    h = np.tanh(x)
    result = gradproof.check_stages(stages, x, {"H": 3 * h**2})
    assert result.passed and result.stages[0].source == "the loss"
    wrong = gradproof.check_stages(stages, x, {"H": -3 * h**2})
    assert (
        wrong.where
        == "H is of the wrong sign: the error is in the lines that compute it from the loss."
    )


def test_the_callers_arrays_are_left_alone_and_the_result_is_json():
    params = {k: v.copy() for k, v in PARAMS.items()}
    grads = mlp_backward(params, bug="dW1")
    x = X.copy()
    snapshot = ({k: v.copy() for k, v in params.items()}, {k: v.copy() for k, v in grads.items()})
    result = gradproof.check_stages(STAGES, x, grads, params=params)
    assert np.array_equal(x, X)
    assert all(np.array_equal(params[k], snapshot[0][k]) for k in params)
    assert all(np.array_equal(grads[k], snapshot[1][k]) for k in grads)
    data = json.loads(json.dumps(result.to_dict()))
    assert data["suspects"] == ["dW1"] and data["stages"][0]["name"] == "dP"
    with pytest.raises(AttributeError):
        result.where = ""  # type: ignore[misc]


# -- bad input -----------------------------------------------------------------------------------
def test_bad_input_says_what_to_pass():
    grads = mlp_backward(PARAMS)
    with pytest.raises(InputError, match=r"`stages` must be a non-empty sequence of \(name, fn\)"):
        gradproof.check_stages([], X, grads, params=PARAMS)
    with pytest.raises(InputError, match=r"`stages\[1\]` must be a \(name, fn\) pair"):
        gradproof.check_stages([STAGES[0], ("H",)], X, grads, params=PARAMS)  # type: ignore[list-item]
    with pytest.raises(InputError, match="`stages` names 'Z' twice"):
        gradproof.check_stages([STAGES[0], *STAGES], X, grads, params=PARAMS)
    with pytest.raises(InputError, match="`grads` has the key 'dQ', which names neither"):
        gradproof.check_stages(STAGES, X, {"dQ": grads["dZ"]}, params=PARAMS)
    with pytest.raises(InputError, match="The stages are Z, H, P; the parameters are W1, b1"):
        gradproof.check_stages(STAGES, X, {"dloss": 1.0}, params=PARAMS)
    with pytest.raises(InputError, match="`convention` must be 'auto', None or a positive number"):
        gradproof.check_stages(STAGES, X, grads, params=PARAMS, convention=-2)
    with pytest.raises(InputError, match="Unknown option `modes`"):
        gradproof.check_stages(STAGES, X, grads, params=PARAMS, modes="full")
    with pytest.raises(gradproof.UserCodeError, match="The stage 'H' raised"):
        gradproof.check_stages(
            [STAGES[0], ("H", lambda z, p: 1 / 0), *STAGES[2:]], X, grads, params=PARAMS
        )
