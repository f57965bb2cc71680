"""Checking a numpy model's hand-written backpropagation with gradproof.

A small softmax classifier, 6 -> 8 -> 8 -> 3 with tanh hidden layers and an L2 penalty, keeps
its parameters as a list of layers. Its first backward pass has a transposed weight gradient;
gradproof names the layer and the kind of bug. The script then shows the error a gradient of the
wrong shape gets, the fixed backward passing, and the same check as a test.

Run it with ``python examples/numpy_model.py``.
"""

from __future__ import annotations

import json

import numpy as np

import gradproof
from gradproof.testing import GradientMismatchError, assert_gradients

Layers = list[dict[str, np.ndarray]]

# --8<-- [start:model]
rng = np.random.default_rng(42)
X = rng.normal(size=(20, 6))  # 20 examples, one per row
labels = rng.integers(0, 3, size=20)  # 3 classes
Y = np.eye(3)[labels]  # one-hot
L2 = 1e-3
params: Layers = [
    {"W": rng.normal(size=(n_in, n_out)) / np.sqrt(n_in), "b": np.zeros(n_out)}
    for n_in, n_out in [(6, 8), (8, 8), (8, 3)]
]


def forward(p: Layers) -> tuple[list[np.ndarray], np.ndarray]:
    """Return the activations of every layer (the input first) and the class probabilities."""
    activations = [X]
    for layer in p[:-1]:
        activations.append(np.tanh(activations[-1] @ layer["W"] + layer["b"]))
    logits = activations[-1] @ p[-1]["W"] + p[-1]["b"]
    logits = logits - logits.max(axis=1, keepdims=True)  # for stability; the softmax is unchanged
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return activations, probabilities


def loss(p: Layers) -> float:
    """Return the mean cross-entropy plus the L2 penalty on the weights."""
    _, probabilities = forward(p)
    cross_entropy = -np.mean(np.sum(Y * np.log(probabilities), axis=1))
    return float(cross_entropy + 0.5 * L2 * sum(np.sum(layer["W"] ** 2) for layer in p))


def backward(p: Layers, *, transpose_bug: bool = False) -> Layers:
    """Return the gradient of `loss`, layer by layer, by hand."""
    activations, probabilities = forward(p)
    dZ = (probabilities - Y) / len(X)  # d loss / d logits
    grads: Layers = [{} for _ in p]
    for k in reversed(range(len(p))):
        dW = activations[k].T @ dZ
        if transpose_bug and k == 1:
            dW = dZ.T @ activations[k]  # the classic slip: the product in the wrong order
        grads[k] = {"W": dW + L2 * p[k]["W"], "b": dZ.sum(axis=0)}
        if k > 0:
            dZ = (dZ @ p[k]["W"].T) * (1 - activations[k] ** 2)  # tanh' = 1 - tanh^2
    return grads


# --8<-- [end:model]

# --8<-- [start:check-buggy]
result = gradproof.check(loss, lambda p: backward(p, transpose_bug=True), params)
print(result)
# --8<-- [end:check-buggy]
print()

# --8<-- [start:use-result]
# The result is data: which layers are wrong, which entries, and a JSON form.
print("suspects:", result.suspects)
wrong_layer = result["params[1].W"]
print("diagnosis:", wrong_layer.diagnosis.kind, "-", wrong_layer.diagnosis.summary)
worst = wrong_layer.failures[0]
print(f"first wrong entry {worst.name}: analytic {worst.analytic:.6f}, numeric {worst.numeric:.6f}")
document = json.loads(json.dumps(result.to_dict()))
print("JSON keys of a parameter:", sorted(document["params"][0])[:6], "...")
# --8<-- [end:use-result]
print()


# --8<-- [start:shape-error]
# The same mistake in a layer that is not square gives a gradient of the wrong shape,
# and the check refuses it before taking any finite difference.
def backward_wrong_shape(p: Layers) -> Layers:
    """Return the gradient with the first layer's weight gradient transposed."""
    grads = backward(p)
    grads[0]["W"] = grads[0]["W"].T
    return grads


try:
    gradproof.check(loss, backward_wrong_shape, params)
except gradproof.InputError as error:
    print(error)
# --8<-- [end:shape-error]
print()

# --8<-- [start:check-fixed]
fixed = gradproof.check(loss, backward, params)
print(f"{fixed.verdict}: {fixed.n_checked} entries, worst {fixed.margin:.0f}x inside its tolerance")
# --8<-- [end:check-fixed]
print()


# --8<-- [start:test]
# In a test suite (pytest), assert_gradients raises an AssertionError whose message is the report.
def test_backward_is_correct() -> None:
    """The hand-written backward pass matches finite differences."""
    assert_gradients(loss, backward, params)


def test_backward_with_the_bug_is_caught() -> None:
    """A transposed weight gradient is caught and named."""
    try:
        assert_gradients(loss, lambda p: backward(p, transpose_bug=True), params)
    except GradientMismatchError as error:
        print("assert_gradients raised:", str(error).splitlines()[0])
    else:
        raise AssertionError("the transposed gradient was not caught")


test_backward_is_correct()
test_backward_with_the_bug_is_caught()
# --8<-- [end:test]
