"""Check a JAX ``custom_vjp`` over a pytree of parameters, find its bug, and test the fix.

The function is the last layer of a classifier fused with its loss: a linear map
``x @ w + b`` followed by softmax cross-entropy, one loss per example. Its backward is written
by hand with ``jax.custom_vjp`` so that it keeps one number per example (the log-sum-exp of the
logits) instead of the logits themselves, and recomputes the softmax when it is needed. The
first backward forgets to multiply one of its three gradients by the cotangent ``g``.
gradproof names that gradient by its pytree path and shows the shape of the error; the fixed
backward passes; and both are then run as a test would run them.

Run it with ``python examples/jax_custom_vjp.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gradproof.jax import check_function
from gradproof.testing import GradientMismatchError, assert_jax_function

Params = dict[str, jax.Array]
Residuals = tuple[Params, jax.Array, jax.Array, jax.Array]


# --8<-- [start:function]
def _losses_and_lse(params: Params, x: jax.Array, labels: jax.Array) -> tuple[jax.Array, ...]:
    """Return the per-example cross-entropy and the log-sum-exp of each row of logits."""
    logits = x @ params["w"] + params["b"]
    lse = jax.nn.logsumexp(logits, axis=-1)  # stable: subtracts the row maximum first
    picked = jnp.take_along_axis(logits, labels[:, None], axis=-1)[:, 0]
    return lse - picked, lse


def with_backward(bwd: Callable[[Residuals, jax.Array], Any]) -> Callable[..., jax.Array]:
    """Return the fused linear + cross-entropy op, with `bwd` as its hand-written backward."""

    @jax.custom_vjp
    def linear_cross_entropy(params: Params, x: jax.Array, labels: jax.Array) -> jax.Array:
        return _losses_and_lse(params, x, labels)[0]

    def fwd(params: Params, x: jax.Array, labels: jax.Array) -> tuple[jax.Array, Residuals]:
        losses, lse = _losses_and_lse(params, x, labels)
        return losses, (params, x, labels, lse)  # one number per example, not the logits

    linear_cross_entropy.defvjp(fwd, bwd)
    return linear_cross_entropy


def bwd_first(residuals: Residuals, g: jax.Array) -> tuple[Params, jax.Array, None]:
    """Return the gradients for (params, x, labels), given `g`, one cotangent per example."""
    params, x, labels, lse = residuals
    probs = jnp.exp(x @ params["w"] + params["b"] - lse[:, None])  # softmax, recomputed
    delta = probs - jax.nn.one_hot(labels, probs.shape[-1], dtype=probs.dtype)
    dlogits = g[:, None] * delta
    dparams = {"w": x.T @ dlogits, "b": dlogits.sum(axis=0)}
    return dparams, delta @ params["w"].T, None  # the bug: `delta` where `dlogits` was meant


linear_cross_entropy = with_backward(bwd_first)
# --8<-- [end:function]

# --8<-- [start:data]
rng = np.random.default_rng(0)
n_examples, n_features, n_classes = 8, 3, 5
params = {
    "w": jnp.asarray(rng.normal(size=(n_features, n_classes)), dtype=jnp.float32),
    "b": jnp.asarray(0.1 * rng.normal(size=n_classes), dtype=jnp.float32),
}
x = jnp.asarray(rng.normal(size=(n_examples, n_features)), dtype=jnp.float32)
labels = jnp.asarray(rng.integers(0, n_classes, size=n_examples))
print("losses:", np.round(np.asarray(linear_cross_entropy(params, x, labels)), 3))
# --8<-- [end:data]
print()

# --8<-- [start:check]
print("== 1. The first backward ==")
result = check_function(linear_cross_entropy, params, x, labels)
print(result)
# --8<-- [end:check]
print()

# --8<-- [start:rows]
# The wrong gradient, row by row: one example per row of `x`.
report = result["x"]
print(f"suspects: {result.suspects}; {report.name}: {report.diagnosis.summary}")
on_the_line = []
for row, (analytic, numeric) in enumerate(zip(report.analytic, report.numeric, strict=True)):
    factor = float(analytic @ numeric / (numeric @ numeric))  # least-squares analytic / numeric
    on_the_line.append(np.allclose(analytic, factor * numeric, rtol=1e-5, atol=1e-6))
    print(f"  x[{row}, :]  analytic = {factor:+.3f} × numeric")
print("each row is a multiple of its numeric row, to 1e-5:", all(on_the_line))
# --8<-- [end:rows]
print()

# --8<-- [start:reduced]
# Checked through a reduction, every example gets the same cotangent.
summed = check_function(
    lambda params, x, labels: jnp.sum(linear_cross_entropy(params, x, labels)), params, x, labels
)
averaged = check_function(
    lambda params, x, labels: jnp.mean(linear_cross_entropy(params, x, labels)), params, x, labels
)
print("the first backward, checked through jnp.sum: ", summed.verdict)
print("the first backward, checked through jnp.mean:", averaged.verdict, end="; ")
print(f"suspects {averaged.suspects}, x: {averaged['x'].diagnosis.summary}")
# --8<-- [end:reduced]
print()


# --8<-- [start:fix]
def bwd_fixed(residuals: Residuals, g: jax.Array) -> tuple[Params, jax.Array, None]:
    """Return the gradients for (params, x, labels): every one scaled by `g`."""
    params, x, labels, lse = residuals
    probs = jnp.exp(x @ params["w"] + params["b"] - lse[:, None])
    delta = probs - jax.nn.one_hot(labels, probs.shape[-1], dtype=probs.dtype)
    dlogits = g[:, None] * delta
    dparams = {"w": x.T @ dlogits, "b": dlogits.sum(axis=0)}
    return dparams, dlogits @ params["w"].T, None


linear_cross_entropy_fixed = with_backward(bwd_fixed)

print("== 2. The fixed backward ==")
print(check_function(linear_cross_entropy_fixed, params, x, labels))
# --8<-- [end:fix]
print()

# --8<-- [start:test]
print("== 3. In a test suite ==")


def test_linear_cross_entropy(fn: Callable[..., jax.Array]) -> None:
    """Fail, with the full report as the message, when `fn`'s backward is wrong."""
    assert_jax_function(fn, params, x, labels)


try:
    test_linear_cross_entropy(linear_cross_entropy)
except GradientMismatchError as error:
    print("first backward: GradientMismatchError:", str(error).splitlines()[0])
test_linear_cross_entropy(linear_cross_entropy_fixed)
print("fixed backward: passed")
# --8<-- [end:test]
print()

# --8<-- [start:jit]
print("== 4. Under jax.jit, with x64 left alone ==")
traces: list[str] = []


@jax.jit
def jitted(params: Params, x: jax.Array, labels: jax.Array) -> jax.Array:
    """Return the fixed op's losses; the Python body runs only while JAX traces it."""
    traces.append(str(x.dtype))
    return linear_cross_entropy_fixed(params, x, labels)


x64_before = jax.config.jax_enable_x64
result = check_function(jitted, params, x, labels)
print(f"jitted op: {result.verdict}, {result.n_evals} loss evaluations, engine: {result.engine}")
print(f"traced {len(traces)} times, for inputs of dtype {sorted(set(traces))}")
print(f"jax_enable_x64 before the check: {x64_before}, after: {jax.config.jax_enable_x64}")
print(
    "gradient dtype outside the check:",
    jax.grad(lambda x: jitted(params, x, labels).sum())(x).dtype,
)
# --8<-- [end:jit]
