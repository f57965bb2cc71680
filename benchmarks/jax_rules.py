"""gradproof.jax.check_grads side by side with jax.test_util.check_grads on real custom rules.

The rules come from JAX's documentation, from JAX itself, and from fixed JAX issues before and
after their fix; a few are planted (a rule whose own derivative is wrong, a swapped gradient).
Each source is cited next to its rule. Every case runs through both checkers with the same call,
``check_grads(f, args, order, modes=...)``, at orders 1 and 2, in JAX's default precision
(float32, ``jax_enable_x64`` off), and the table says for each:

- whether each checker raised (a wrong rule should, a correct one should not: a false alarm);
- whether the message names the argument whose derivative is wrong;
- the time of a warm call (the best of three, after a first call in the same process).

``--cold`` measures the first call in a fresh process instead: one subprocess per checker and
repeat, alternating, on the small cases; it prints the median of each and their ratio.

Run:  python benchmarks/jax_rules.py            (the table, a few minutes on 2 cores)
      python benchmarks/jax_rules.py --cold 5   (cold starts, 5 processes per checker, case
                                                 and order; --cases picks the cases)
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.test_util import check_grads as jax_check_grads

from gradproof.errors import GradproofWarning
from gradproof.jax import check_grads


@dataclass(frozen=True)
class Case:
    """One rule at one point: the function, its arguments, what is true of it, and where from."""

    name: str
    source: str
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    modes: tuple[str, ...]
    wrong: str | None  # the argument whose derivative is wrong, None for a correct rule
    order: int = 1  # the lowest order at which it is wrong (2: only its own derivative is)


# -- JAX docs, "Custom derivative rules for JAX-transformable Python functions" ------------------
# The docs' first example, log1pexp, fixes a NaN gradient of autodiff at x = 100; in float32 the
# function's own value is inf there, so neither checker can compare anything at that point, and
# only the fixed rule is checked (at points where its value is finite).
@jax.custom_jvp
def log1pexp(x):
    """``log(1 + exp(x))`` with the docs' custom_jvp rule."""
    return jnp.log(1.0 + jnp.exp(x))


@log1pexp.defjvp
def _log1pexp_jvp(primals, tangents):
    (x,), (t,) = primals, tangents
    return log1pexp(x), t * (1.0 - 1.0 / (1.0 + jnp.exp(x)))


@partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def clip_gradient(lo, hi, x):
    """Return `x`; the docs' custom_vjp example, whose bwd clips the cotangent to [lo, hi].

    By design its bwd is not the derivative wherever the cotangent leaves [lo, hi].
    """
    return x


def _clip_fwd(lo, hi, x):
    return x, None


def _clip_bwd(lo, hi, _, g):
    return (jnp.clip(g, lo, hi),)


clip_gradient.defvjp(_clip_fwd, _clip_bwd)


# -- jax-ml/jax#6936, fixed by PR #6940: jnp.sinc had NaN gradients at 0 --------------------------
def sinc_before_6940(x):
    """``sin(pi x) / (pi x)`` behind a where-mask, as jnp.sinc was before PR #6940."""
    # A where-mask that guards the value but not the gradient of the masked branch, as jnp.sinc
    # was: 0 * NaN is NaN (the JAX FAQ's "gradients contain NaN where using where").
    pi_x = jnp.pi * x
    return jnp.where(x == 0, 1.0, jnp.sin(pi_x) / pi_x)


# -- jax-ml/jax#2380, fixed by PR #2809: the derivative of det at a singular matrix was NaN ------
@jax.custom_jvp
def det_before_2809(a):
    """``det(a)`` with the JVP rule JAX had before PR #2809."""
    return jnp.linalg.det(a)


@det_before_2809.defjvp
def _det_jvp_before(primals, tangents):
    # d det(a) = det(a) tr(a^-1 da): right where a is invertible, NaN where it is singular.
    (a,), (t,) = primals, tangents
    y = jnp.linalg.det(a)
    return y, y * jnp.trace(jnp.linalg.solve(a, t))


# -- the JAX FAQ's double-where trick, as optax's safe_norm uses it --------------------------------
def norm_naive(x):
    """Return the sum of the rows' norms, for autodiff to differentiate."""
    return jnp.sum(jnp.sqrt(jnp.sum(x**2, axis=-1)))  # NaN gradient for a zero row


def norm_double_where(x):
    """Return the sum of the rows' norms, with the double-where trick."""
    squared = jnp.sum(x**2, axis=-1)
    zero = squared == 0
    safe = jnp.where(zero, 1.0, squared)
    return jnp.sum(jnp.where(zero, 0.0, jnp.sqrt(safe)))


# -- planted: rules right at first order whose own derivative is wrong, and a swapped gradient -----
@jax.custom_vjp
def softplus_frozen(x):
    """softplus, whose bwd has the right value and a frozen derivative."""
    return jnp.logaddexp(0.0, x)


def _softplus_fwd(x):
    return softplus_frozen(x), x


def _softplus_frozen_bwd(x, g):
    # sigmoid(x) is the right value, but stop_gradient hides its derivative from order 2.
    return (g * jax.nn.sigmoid(jax.lax.stop_gradient(x)),)


softplus_frozen.defvjp(_softplus_fwd, _softplus_frozen_bwd)


@jax.custom_jvp
def tanh_frozen(x):
    """tanh, whose custom_jvp rule has the right value and a frozen derivative."""
    return jnp.tanh(x)


@tanh_frozen.defjvp
def _tanh_frozen_jvp(primals, tangents):
    (x,), (t,) = primals, tangents
    y = tanh_frozen(x)
    return y, (1.0 - jax.lax.stop_gradient(y) ** 2) * t  # right value, frozen derivative


@jax.custom_vjp
def scaled_sin(x, y):
    """``x * sin(y)``, whose bwd swaps the two gradients."""
    return x * jnp.sin(y)


def _scaled_sin_fwd(x, y):
    return scaled_sin(x, y), (x, y)


def _scaled_sin_bwd(residuals, g):
    x, y = residuals
    return (g * x * jnp.cos(y), g * jnp.sin(y))  # swapped: these are the gradients of y, x


scaled_sin.defvjp(_scaled_sin_fwd, _scaled_sin_bwd)


X = jnp.array([-3.0, -0.5, 0.4, 2.0, 10.0])
SINGULAR = jnp.array([[1.0, 2.0, 3.0], [2.0, 4.0, 6.0], [0.5, 1.0, 2.0]])  # rank 2
INVERTIBLE = jnp.array([[1.0, 2.0, 3.0], [2.0, 5.0, 6.0], [0.5, 1.0, 4.0]])
ROWS = jnp.array([[0.0, 0.0], [0.6, -0.8], [1.5, 2.0]])  # the first row is zero
BOTH = ("fwd", "rev")
REV = ("rev",)

CASES = [
    Case(
        "log1pexp, custom_jvp (docs)",
        "JAX docs",
        lambda x: jnp.sum(log1pexp(x)),
        (X,),
        BOTH,
        None,
    ),
    Case(
        "clip_gradient, custom_vjp (docs)",
        "JAX docs",
        lambda x: jnp.sum(clip_gradient(-0.5, 0.5, x) ** 2),
        (jnp.array([0.1, -0.2, 1.5]),),
        REV,
        "x",
    ),
    Case(
        "sinc at 0 (jax#6936, before)",
        "jax-ml/jax#6936",
        lambda x: jnp.sum(sinc_before_6940(x)),
        (jnp.array([0.0, 0.3, 1.2]),),
        BOTH,
        "x",
    ),
    Case(
        "sinc at 0 (PR #6940, after)",
        "jnp.sinc",
        lambda x: jnp.sum(jnp.sinc(x)),
        (jnp.array([0.0, 0.3, 1.2]),),
        BOTH,
        None,
    ),
    Case(
        "sinc near 0 (jax#34139)",
        "jnp.sinc, JAX 0.10.2",
        lambda x: jnp.sum(jnp.sinc(x)),
        (jnp.array([1e-3, 0.3, 1.2]),),
        BOTH,
        "x",
    ),
    Case(
        "det, singular (jax#2380, before)",
        "jax-ml/jax#2380",
        det_before_2809,
        (SINGULAR,),
        BOTH,
        "a",
    ),
    Case(
        "det, singular (PR #2809, after)", "jnp.linalg.det", jnp.linalg.det, (SINGULAR,), BOTH, None
    ),
    Case("det, invertible", "jnp.linalg.det", jnp.linalg.det, (INVERTIBLE,), BOTH, None),
    Case("norm with a zero row, naive", "JAX FAQ", norm_naive, (ROWS,), BOTH, "x"),
    Case(
        "norm, double where (optax safe_norm)",
        "JAX FAQ; optax",
        norm_double_where,
        (ROWS,),
        BOTH,
        None,
    ),
    Case(
        "relu at its kink (jax.nn)",
        "jax.nn.relu",
        lambda x: jnp.sum(jax.nn.relu(x) * jnp.arange(1.0, 4.0)),
        (jnp.array([0.0, 1.0, -1.0]),),
        BOTH,
        None,
    ),
    Case(
        "softmax (jax.nn)",
        "jax.nn.softmax",
        lambda z: jnp.sum(jax.nn.softmax(z) * jnp.arange(4.0)),
        (jnp.array([0.3, -1.0, 2.0, 0.5]),),
        BOTH,
        None,
    ),
    Case(
        "softplus bwd, frozen residual",
        "planted",
        lambda x: jnp.sum(softplus_frozen(x)),
        (X[:4],),
        REV,
        "x",
        order=2,
    ),
    Case(
        "tanh custom_jvp, frozen",
        "planted",
        lambda x: jnp.sum(tanh_frozen(x)),
        (X[:4],),
        BOTH,
        "x",
        order=2,
    ),
    Case(
        "x sin(y), swapped bwd",
        "planted",
        lambda x, y: jnp.sum(scaled_sin(x, y)),
        (X[:4], X[:4] + 1.0),
        REV,
        "x",
    ),
]


def run_jax(case: Case, order: int) -> str:
    """Run jax.test_util.check_grads: "pass", "raise: <message>" or "error: <type>"."""
    try:
        jax_check_grads(case.fn, case.args, order, modes=case.modes)
    except AssertionError as error:
        return "raise: " + " ".join(str(error).split())
    except Exception as error:  # the table reports what happened
        return f"error: {type(error).__name__}"
    return "pass"


def run_gradproof(case: Case, order: int) -> str:
    """Run gradproof.jax.check_grads: "pass", "pass, warned", "raise: <first line>", "error"."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", GradproofWarning)
        try:
            check_grads(case.fn, case.args, order, modes=case.modes)
        except AssertionError as error:
            return "raise: " + str(error).splitlines()[0]
        except Exception as error:
            return f"error: {type(error).__name__}"
    return "pass, warned" if caught else "pass"


def timed(run: Callable[[Case, int], str], case: Case, order: int) -> tuple[str, float]:
    """Run a checker once (compiling), then three times; return the outcome and the best time."""
    outcome = run(case, order)  # the first call compiles
    times = []
    for _ in range(3):
        started = time.perf_counter()
        run(case, order)
        times.append(time.perf_counter() - started)
    return outcome, min(times)


def verdict(case: Case, order: int, outcome: str, named: bool) -> str:
    """Say what an outcome means for this case: caught, MISSED, FALSE ALARM or ok."""
    wrong = case.wrong is not None and order >= case.order
    raised = outcome.startswith("raise")
    if outcome.startswith("error"):
        return outcome
    if wrong:
        return ("caught" + (f", names `{case.wrong}`" if named else "")) if raised else "MISSED"
    return "FALSE ALARM" if raised else ("ok, warned" if "warned" in outcome else "ok")


def table() -> None:
    """Print the side-by-side table and the tallies."""
    print(
        "| rule | source | order | truth | jax check_grads | gradproof check_grads"
        " | warm s (jax / gp) |"
    )
    print("|---|---|---|---|---|---|---|")
    tally = {"jax": [0, 0, 0], "gp": [0, 0, 0]}  # caught, missed, false alarms
    for case in CASES:
        for order in (1, 2):
            theirs, t_theirs = timed(run_jax, case, order)
            ours, t_ours = timed(run_gradproof, case, order)
            wrong = case.wrong is not None and order >= case.order
            their_cell = verdict(case, order, theirs, f"`{case.wrong}`" in theirs)
            our_cell = verdict(case, order, ours, f"`{case.wrong}`" in ours)
            for key, cell in (("jax", their_cell), ("gp", our_cell)):
                if wrong:
                    tally[key][0 if cell.startswith("caught") else 1] += 1
                elif cell == "FALSE ALARM":
                    tally[key][2] += 1
            truth = f"wrong (`{case.wrong}`)" if wrong else "right"
            print(
                f"| {case.name} | {case.source} | {order} | {truth} | {their_cell} | {our_cell} "
                f"| {t_theirs:.3f} / {t_ours:.3f} |"
            )
    for key, label in (("jax", "jax.test_util.check_grads"), ("gp", "gradproof.jax.check_grads")):
        caught, missed, alarms = tally[key]
        print(f"\n{label}: {caught} caught, {missed} missed, {alarms} false alarms")


_COLD = """
import sys, time
import jax, jax.numpy as jnp
sys.argv = ["jax_rules"]
from benchmarks.jax_rules import CASES
from {module} import check_grads
case = CASES[{index}]
started = time.perf_counter()
try:
    check_grads(case.fn, case.args, {order}, modes=case.modes)
except AssertionError:
    pass
print(time.perf_counter() - started)
"""


def cold(repeats: int, chosen: list[int]) -> None:
    """Print the first call's time in fresh processes, alternating the checkers."""
    modules = {"jax": "jax.test_util", "gradproof": "gradproof.jax"}
    print(f"First call in a fresh process, median of {repeats} (both modes):")
    for index, order in [(index, order) for order in (1, 2) for index in chosen]:
        times: dict[str, list[float]] = {key: [] for key in modules}
        for _ in range(repeats):
            for key, module in modules.items():  # alternate, so that load hits both alike
                code = _COLD.format(module=module, index=index, order=order)
                done = subprocess.run(
                    [sys.executable, "-c", code], capture_output=True, text=True, check=True
                )
                times[key].append(float(done.stdout.strip().splitlines()[-1]))
        theirs, ours = (statistics.median(times[key]) for key in modules)
        print(
            f"  {CASES[index].name}, order {order}: jax {theirs:.2f} s, gradproof {ours:.2f} s, "
            f"ratio {ours / theirs:.2f}"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cold", type=int, default=0, help="cold-start repeats per checker")
    parser.add_argument(
        "--cases",
        type=int,
        nargs="+",
        default=[0, 6, 7, 11],  # log1pexp, det (singular, invertible), softmax: small functions
        help="indices into CASES for --cold",
    )
    np.set_printoptions(precision=4)
    chosen = parser.parse_args()
    if chosen.cold:
        cold(chosen.cold, chosen.cases)
    else:
        table()
