"""The gradient-checking assignment, step by step, and what gradproof adds to each step.

deeplearning.ai's "Improving Deep Neural Networks" (week 1) asks a fraud-detection team to
prove to its CEO that backpropagation works. This script does the assignment's checks with its
own functions (`gradproof.course`) and then with `gradproof.check`, and finishes with the
assignment's two lessons: dropout breaks a check, and float64 matters.

Run it with ``python examples/assignment_walkthrough.py``.
"""

from __future__ import annotations

import numpy as np

import gradproof
from gradproof import course
from gradproof.models import FraudNetwork

# --8<-- [start:one-d]
# 1. One dimension: J(theta) = theta * x, whose derivative is x.
x, theta, epsilon = 2.0, 4.0, 1e-7
J = course.forward_propagation(x, theta)
dtheta = course.backward_propagation(x, theta)
# The centered difference and the relative difference, written out as the assignment does.
gradapprox = (
    course.forward_propagation(x, theta + epsilon) - course.forward_propagation(x, theta - epsilon)
) / (2 * epsilon)
difference = abs(dtheta - gradapprox) / (abs(dtheta) + abs(gradapprox))
print(f"J = {J}, dJ/dtheta = {dtheta}, centered difference = {gradapprox:.10f}")
print(f"relative difference {difference:.10e} < 1e-7: {difference < 1e-7}")

# The same check with gradproof: a float is a parameter too.
one_d = gradproof.check(lambda t: t * x, lambda t: x, theta)
worst = one_d["params"].worst
print(f"gradproof: {one_d.verdict}, analytic {worst.analytic} against numeric {worst.numeric:.10f}")
# --8<-- [end:one-d]
print()

# --8<-- [start:n-d]
# 2. The fraud network: LINEAR -> RELU -> LINEAR -> RELU -> LINEAR -> SIGMOID.
X, Y, parameters = course.gradient_check_n_test_case()
theta_vector, keys = course.dictionary_to_vector(parameters)
print(f"{theta_vector.shape[0]} parameters, flattened to a vector of shape {theta_vector.shape}")
print("keys of its first entries:", keys[:6], "...", "last:", keys[-1])

# The assignment's check: one number for the whole network.
cost, cache = course.forward_propagation_n(X, Y, parameters)
gradients = course.backward_propagation_n(X, Y, cache)
difference = course.gradient_check_n(parameters, gradients, X, Y)


# gradproof's check: a loss of the parameters and a gradient keyed like them.
def loss(p: dict[str, np.ndarray]) -> float:
    """Return the network's logistic cost at parameters `p`."""
    return float(course.forward_propagation_n(X, Y, p)[0])


def shipped_grad(p: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Return the assignment's backward pass, with its two planted bugs."""
    _, cache = course.forward_propagation_n(X, Y, p)
    return course.parameter_gradients(course.backward_propagation_n(X, Y, cache))


result = gradproof.check(loss, shipped_grad, parameters)
print(result)
# --8<-- [end:n-d]
print()


# --8<-- [start:fixed]
# 3. The fixed backward pass: dW2 without the stray 2, db1 with 1/m instead of 4/m.
def fixed_grad(p: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Return the corrected backward pass."""
    _, cache = course.forward_propagation_n(X, Y, p)
    return course.parameter_gradients(course.backward_propagation_n_corrected(X, Y, cache))


_, cache = course.forward_propagation_n(X, Y, parameters)
course.gradient_check_n(parameters, course.backward_propagation_n_corrected(X, Y, cache), X, Y)
fixed = gradproof.check(loss, fixed_grad, parameters)
print(f"gradproof: {fixed.verdict}, worst entry at {fixed.margin:.0f}x inside its tolerance")
# --8<-- [end:fixed]
print()

# --8<-- [start:dropout]
# 4. Lesson one: dropout breaks gradient checking. The same architecture with inverted
#    dropout (keep_prob 0.8) draws new masks at every call, so the loss is random. A batch
#    of 32 examples makes it likely that some dropped unit matters.
rng = np.random.default_rng(0)
batch, labels = rng.normal(size=(32, 4)), (rng.random(32) < 0.5).astype(float)
net = FraudNetwork(sizes=(4, 5, 3, 1), keep_prob=0.8)  # one example per row


def dropout_loss(p: dict[str, np.ndarray]) -> float:
    """Return the cost with dropout, masks drawn from numpy's global generator."""
    return net.loss(p, batch, labels)


def dropout_grad(p: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Return the hand-written gradient with dropout, masks drawn the same way."""
    return net.gradients(p, batch, labels)


np.random.seed(1)  # noqa: NPY002 (the masks come from numpy's global generator)
try:
    gradproof.check(dropout_loss, dropout_grad, parameters)
except gradproof.InputError as error:
    print("without a seed:", str(error).split(", so")[0])
# seed=0 re-seeds the generators before every call: one fixed mask, a deterministic loss.
print("with seed=0:", gradproof.check(dropout_loss, dropout_grad, parameters, seed=0).verdict)
forgot_mask = net.with_bug("dropout-mask-missing")  # the backward ignores the mask of layer 1
buggy = gradproof.check(
    dropout_loss, lambda p: forgot_mask.gradients(p, batch, labels), parameters, seed=0
)
print("a backward that forgets the mask:", buggy.verdict, buggy.suspects)
print("  W1:", buggy["W1"].diagnosis.summary)
# --8<-- [end:dropout]
print()


# --8<-- [start:float32]
# 5. Lesson two: float64 matters. This loss computes in float32, as a GPU model would.
def loss32(p: dict[str, np.ndarray]) -> float:
    """Return the network's cost, computed in float32."""
    p32 = {name: np.asarray(value, np.float32) for name, value in p.items()}
    return float(course.forward_propagation_n(X.astype(np.float32), Y, p32)[0])


# The assignment's recipe with eps = 1e-7 on the float32 loss: the step is about the
# float32 resolution of the cost, so the differences measure rounding, not the slope.
_, cache = course.forward_propagation_n(X, Y, parameters)
exact = course.gradients_to_vector(course.backward_propagation_n_corrected(X, Y, cache))
approx = np.zeros_like(exact)
for i in range(theta_vector.shape[0]):
    plus, minus = theta_vector.copy(), theta_vector.copy()
    plus[i] += epsilon
    minus[i] -= epsilon
    up = loss32(course.vector_to_dictionary(plus))
    down = loss32(course.vector_to_dictionary(minus))
    approx[i] = (up - down) / (2 * epsilon)
difference = np.linalg.norm(exact - approx) / (np.linalg.norm(exact) + np.linalg.norm(approx))
print(f"the assignment's recipe on a float32 loss: difference = {difference:.3g} > 2e-7")

# gradproof measures the loss's noise first, steps far enough to rise above it, and widens
# the error bars by it: the correct gradient passes, and a note says what it found.
checked32 = gradproof.check(loss32, fixed_grad, parameters)
print("gradproof on the same loss:", checked32.verdict, f"margin {checked32.margin:.1f}x")
print(f"step: {checked32.step}; without noise it would be relative 6.06e-06")
print("note:", checked32.notes[0][:105] + "...")
# --8<-- [end:float32]
