"""``gradproof demo``: the classic gradient-checking assignment, reproduced and taken further.

The walk-through runs the assignment's 1-D check, then its N-dimensional
check on the fraud-detection network, whose shipped backward pass has two
planted bugs. The assignment's check only says that something is wrong;
gradproof's check names the two wrong gradients and how far off they are,
then passes the corrected backward pass. Its last step checks the shipped
backward pass line by line, each intermediate gradient against the loss, and
says which lines the error enters in.
"""

from __future__ import annotations

from collections.abc import Callable

from gradproof import course
from gradproof._typing import FloatArray
from gradproof.checking.check import check
from gradproof.checking.stages import check_stages
from gradproof.results import CheckResult

__all__ = ["run_demo"]

Writer = Callable[[str], None]


def _check_network(backward: Callable[..., dict[str, FloatArray]]) -> CheckResult:
    X, Y, parameters = course.gradient_check_n_test_case()

    def loss(p: dict[str, FloatArray]) -> float:
        cost, _ = course.forward_propagation_n(X, Y, p)
        return float(cost)

    def grad(p: dict[str, FloatArray]) -> dict[str, FloatArray]:
        _, cache = course.forward_propagation_n(X, Y, p)
        return course.parameter_gradients(backward(X, Y, cache))

    return check(loss, grad, parameters)


def _indent(text: str, prefix: str = "   ") -> str:
    return "\n".join(prefix + line if line else line for line in text.splitlines())


def run_demo(write: Writer = print) -> CheckResult:
    """Walk through the assignment, writing each step with `write`.

    Parameters
    ----------
    write : callable, optional
        Receives each block of text; ``print`` by default.

    Returns
    -------
    CheckResult
        gradproof's check of the corrected backward pass (it passes).
    """
    x, theta, epsilon = 2.0, 4.0, 1e-7
    J = course.forward_propagation(x, theta)
    dtheta = course.backward_propagation(x, theta)
    difference_1d = course.gradient_check(x, theta, epsilon, print_msg=False)
    write("gradproof demo: is this backpropagation right, and if not, where and how is it wrong?")
    write("")
    write("1. One dimension: J(theta) = theta * x, at x = 2, theta = 4")
    write(f"   forward J = {J:g}, backward dJ/dtheta = {dtheta:g}")
    write(f"   centered difference (J(theta + eps) - J(theta - eps)) / (2 eps), eps = {epsilon:g}:")
    write(f"   relative difference {difference_1d:.10e} < 1e-7: the gradient is correct.")
    write("")

    X, Y, parameters = course.gradient_check_n_test_case()
    n = sum(p.size for p in parameters.values())
    _, cache = course.forward_propagation_n(X, Y, parameters)
    shipped = course.backward_propagation_n(X, Y, cache)
    difference_shipped = course.gradient_check_n(parameters, shipped, X, Y, print_msg=False)
    write("2. The fraud-detection network: LINEAR -> RELU -> LINEAR -> RELU -> LINEAR -> SIGMOID,")
    write(f"   {n} parameters (W1 5x4, b1, W2 3x5, b2, W3 1x3, b3), logistic cost over 3 examples.")
    write("   The assignment's check of the backward pass it ships:")
    write(f"   There is a mistake in the backward propagation! difference = {difference_shipped}")
    write("   Something is wrong, but where? gradproof checks each parameter:")
    write("")
    found = _check_network(course.backward_propagation_n)
    write(_indent(str(found)))
    write("")
    culprits = ", ".join(
        f"d{p.name} ({p.diagnosis.summary.split(' on ')[0]})" if p.diagnosis else f"d{p.name}"
        for p in found.params
        if not p.passed
    )
    write(f"   The wrong gradients are {culprits}.")
    write("")

    corrected = course.backward_propagation_n_corrected(X, Y, cache)
    difference_fixed = course.gradient_check_n(parameters, corrected, X, Y, print_msg=False)
    write("3. The corrected backward pass (dW2 without the stray 2, db1 with 1/m instead of 4/m):")
    write(
        "   The assignment's check: Your backward propagation works perfectly fine! "
        f"difference = {difference_fixed:.3e}"
    )
    write(f"   (only {2e-7 / difference_fixed:.1f}x below its 2e-7 threshold). gradproof's check:")
    write("")
    fixed = _check_network(course.backward_propagation_n_corrected)
    write(_indent(str(fixed)))
    write("")

    write("4. Where the error enters: the shipped backward pass, line by line. Each intermediate")
    write("   gradient it returns (dZ3, dA2, dZ2, dA1, dZ1) is checked against finite differences")
    write("   of the cost with respect to that value, running the forward pass from it:")
    write("")
    staged = check_stages(course.forward_stages_n(Y), X, shipped, params=parameters)
    write(_indent(str(staged)))
    return fixed
