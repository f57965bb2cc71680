"""gradproof.jax.check_grads, the drop-in for jax.test_util.check_grads, and the JAX calling style.

Scalars, keyword arguments, pytrees, second order, the exception and the caller's x64 setting.
"""

from __future__ import annotations

import dataclasses
import re
from collections import namedtuple
from functools import partial
from typing import Any

import numpy as np
import pytest

jax = pytest.importorskip("jax")

import jax.numpy as jnp  # noqa: E402
from jax.test_util import check_grads as jax_check_grads  # noqa: E402

from gradproof import GradientMismatchError, GradproofWarning, InputError, Verdict  # noqa: E402
from gradproof.jax import check_function, check_grads  # noqa: E402


def make_sin(slope: float = 1.0, second: str = "right"):
    """Return ``sin`` with a custom_jvp rule, right unless `slope` or `second` says otherwise.

    `slope` scales the first derivative; ``second="frozen"`` keeps the rule's value but
    breaks its own derivative (a stop_gradient on x).
    """

    @jax.custom_jvp
    def f(x):
        return jnp.sin(x)

    @f.defjvp
    def f_jvp(primals, tangents):
        (x,), (t,) = primals, tangents
        at = jax.lax.stop_gradient(x) if second == "frozen" else x
        return f(x), slope * jnp.cos(at) * t

    return f


def make_softplus_vjp(second: str = "right"):
    """softplus with a custom_vjp whose bwd is right; "frozen" makes its own derivative 0."""

    @jax.custom_vjp
    def softplus(x):
        return jnp.logaddexp(0.0, x)

    def fwd(x):
        return softplus(x), x

    def bwd(x, g):
        at = jax.lax.stop_gradient(x) if second == "frozen" else x
        return (g * jax.nn.sigmoid(at),)

    softplus.defvjp(fwd, bwd)
    return softplus


X = jnp.array([-1.3, -0.4, 0.6, 1.1, 2.2])


# -- the drop-in ----------------------------------------------------------------------------------
def test_correct_rules_pass_at_orders_one_and_two_like_jax():
    f = make_sin()
    jax_check_grads(f, (X,), order=2)  # JAX agrees: these rules are right
    result = check_grads(f, (X,), order=2)
    assert result.passed, result
    sections = {p.section for p in result.params}
    assert sections == {
        "",
        "Forward mode (JVP)",
        "Second order: reverse over reverse (VJP of the VJP)",
        "Second order: forward over reverse (JVP of the VJP)",
    }
    assert result.subjects == ("x",)


def test_a_wrong_rule_raises_an_assertion_error_naming_the_argument_and_the_kind():
    with pytest.raises(AssertionError) as caught:
        check_grads(lambda x, y: jnp.sum(make_sin(slope=2.0)(x) * y), (X, X + 1.0), order=1)
    error = caught.value
    assert isinstance(error, GradientMismatchError)
    first = str(error).splitlines()[0]
    assert first == (
        "check_grads: wrong reverse-mode gradient (VJP) of `x`, "
        "wrong forward-mode derivative (JVP) of `x`"
    )
    assert "gradproof: WRONG: 1 of 2 arguments has a wrong gradient: x" in str(error)
    assert error.result.suspects == ("x",)
    assert error.result["x"].diagnosis.kind == "scale"


def test_only_the_asked_modes_are_checked():
    with pytest.raises(GradientMismatchError) as caught:
        check_grads(make_sin(slope=2.0), (X,), order=1, modes=("rev",))
    assert str(caught.value).splitlines()[0] == (
        "check_grads: wrong reverse-mode gradient (VJP) of `x`"
    )
    assert {p.section for p in caught.value.result.params} == {""}


def test_a_wrong_second_order_rule_passes_order_one_and_fails_order_two():
    f = make_sin(second="frozen")  # its JVP is right; its own derivative is 0
    jax_check_grads(f, (X,), order=1)  # first order: right
    assert check_grads(f, (X,), order=1).passed
    with pytest.raises(GradientMismatchError) as caught:
        check_grads(f, (X,), order=2)
    first = str(caught.value).splitlines()[0]
    assert "second derivative, reverse over reverse (VJP of the VJP) of `x`" in first
    assert "second derivative, forward over reverse (JVP of the VJP) of `x`" in first
    wrong = caught.value.result["vjp_of_vjp.x"]
    assert wrong.verdict is Verdict.FAIL and wrong.subject_name == "x"
    assert wrong.n_failed == X.size  # every entry of the Hessian-vector product
    first_order = [p for p in caught.value.result.params if p.section in ("", "Forward mode (JVP)")]
    assert all(p.passed for p in first_order)


def test_second_order_reaches_a_custom_vjp_bwd():
    wrong = make_softplus_vjp(second="frozen")
    assert check_grads(wrong, (X,), order=1, modes=("rev",)).passed
    with pytest.raises(AssertionError, match="VJP of the VJP"):
        check_grads(wrong, (X,), order=2, modes=("rev",))
    assert check_grads(make_softplus_vjp(), (X,), order=2, modes=("rev",)).passed


def test_second_order_in_check_function_names_entries():
    result = check_function(make_sin(second="frozen"), X, second_order=True, modes=("rev",))
    assert result.suspects == ("x",)
    assert [p.name for p in result.params] == ["x", "vjp_of_vjp.x"]
    assert result["vjp_of_vjp.x"].failures[0].name.startswith("vjp_of_vjp.x[")


def test_unjudged_entries_pass_with_a_warning_unless_strict():
    relu = lambda x: jnp.sum(jax.nn.relu(x) * jnp.arange(1.0, 4.0))  # noqa: E731
    at_kink = jnp.array([0.0, 1.0, -1.0])
    with pytest.warns(GradproofWarning, match=r"1 entry could not be judged: x\[0\] \(kink"):
        result = check_grads(relu, (at_kink,), order=1, modes=("rev",))
    assert result.verdict is Verdict.INCONCLUSIVE
    with pytest.raises(GradientMismatchError, match=r"^check_grads: unjudged"):
        check_grads(relu, (at_kink,), order=1, modes=("rev",), strict=True)


def test_tolerances_as_numbers_or_by_dtype():
    f = make_sin(slope=1.001)  # 0.1% off: wrong at float64's rtol, right at 1e-2
    x64 = np.asarray(X, np.float64)
    with pytest.raises(AssertionError):
        check_grads(f, (x64,), order=1)
    assert check_grads(f, (x64,), order=1, rtol=1e-2).rtol == 1e-2
    assert check_grads(f, (x64,), order=1, rtol={np.float64: 1e-2, np.float32: 1e-4}).passed


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: check_grads(jnp.sin, X, 1), "`args` must be a tuple or list"),  # type: ignore[arg-type]
        (lambda: check_grads(jnp.sin, (X,), 3), "`order` must be 1 or 2; got 3"),
        (lambda: check_grads(jnp.sin, (X,), 1, modes=("reverse",)), "`modes` must be"),
        (
            lambda: check_grads(jnp.sin, (X,), 1, rtol="tight"),  # type: ignore[arg-type]
            "`rtol` must be a number",
        ),
        (lambda: check_grads(make_softplus_vjp(), (X,), 1), "custom_vjp"),
        (lambda: check_grads(lambda n: n * 2, (3,), 1), r"no floating-point.*`\(3.0,\)`"),
    ],
    ids=["args", "order", "modes", "rtol", "fwd-of-custom_vjp", "integers"],
)
def test_bad_input_is_an_input_error(call, match):
    with pytest.raises(InputError, match=match):
        call()


# -- arguments as JAX takes them ------------------------------------------------------------------
def test_python_scalars_are_checked_as_in_jax_docs():
    def f(x, y):
        return 2.0 * x * y**2

    result = check_function(f, 2.0, 3.0)
    assert result.passed, result
    assert [p.name for p in result.params if p.section == ""] == ["x", "y"]
    np.testing.assert_allclose(result["x"].analytic, 18.0)  # 2 y**2, computed in float64
    np.testing.assert_allclose(result["y"].analytic, 24.0)  # 4 x y
    assert check_grads(f, (2.0, 3.0), order=2).passed


def test_a_wrong_rule_of_python_scalars_is_caught():
    with pytest.raises(AssertionError, match="of `x`"):
        check_grads(make_sin(slope=-1.0), (0.5,), order=1)


def test_keyword_arguments_are_passed_to_fn_and_not_differentiated():
    def f(x, *, scale, shift=0.0):
        return jnp.sum(make_sin()(x) * scale + shift)

    result = check_function(f, X, scale=jnp.full(5, 3.0), shift=1.0, rtol=1e-3)
    assert result.passed, result
    assert result.subjects == ("x",)
    np.testing.assert_allclose(result["x"].analytic, 3.0 * np.cos(np.asarray(X)), rtol=1e-6)


def test_an_unknown_keyword_names_the_options_and_fn():
    with pytest.raises(InputError, match=r"Unknown option `scael`.*`fn` has no parameter"):
        check_function(lambda x, scale=1.0: jnp.sum(x * scale), X, scael=2.0)


Dense = namedtuple("Dense", ["weight", "bias"])


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class Affine:
    scale: Any
    offset: Any


@pytest.mark.parametrize(
    ("params", "names"),
    [
        ({"w": X, "b": X[:2]}, ["b", "w"]),
        ((X, X[:2]), ["params[0]", "params[1]"]),
        (Dense(X, X[:2]), ["weight", "bias"]),
        (Affine(X, X[:2]), ["scale", "offset"]),
    ],
    ids=["dict", "tuple", "namedtuple", "dataclass"],
)
def test_pytrees_of_every_kind_are_named_and_checked(params, names):
    def f(params):
        a, b = jax.tree_util.tree_leaves(params)
        big, small = (a, b) if a.size > b.size else (b, a)
        return jnp.sum(make_sin()(big)) * jnp.sum(small**2)

    result = check_grads(f, (params,), order=1)
    assert [p.name for p in result.params if p.section == ""] == names

    def wrong(params):
        big = max(jax.tree_util.tree_leaves(params), key=lambda leaf: leaf.size)
        return f(params) + jnp.sum(make_sin(slope=2.0)(big))

    big_name = names[0] if names[0] != "b" else "w"
    with pytest.raises(AssertionError, match=re.escape(f"VJP) of `{big_name}`")):
        check_grads(wrong, (params,), order=1, modes=("rev",))


def test_nondiff_argnums_rules_are_compiled_with_their_arrays_as_constants():
    @partial(jax.custom_vjp, nondiff_argnums=(0,))
    def clip_gradient(bound, x):
        return x

    def fwd(bound, x):
        return x, None

    def bwd(bound, _, g):
        return (jnp.clip(g, -bound, bound),)

    clip_gradient.defvjp(fwd, bwd)

    def f(bound, x):
        return jnp.sum(clip_gradient(bound, x) ** 2)

    small = jnp.array([0.1, -0.2, 0.3, 0.05, -0.15])  # gradients 2x within the bound: unclipped
    result = check_function(f, jnp.asarray(1.0), small, argnums=1)
    assert result.passed, result
    assert not any("eagerly" in note for note in result.notes)  # compiled, with `bound` baked in
    clipped = check_function(f, jnp.asarray(0.25), small, argnums=1)
    assert clipped.suspects == ("x",)  # clipping is not the derivative: the check says so


# -- the caller's x64 setting ---------------------------------------------------------------------
@pytest.mark.parametrize("enabled", [False, True], ids=["x64-off", "x64-on"])
def test_the_callers_x64_setting_is_left_as_it_was(enabled):
    before = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", enabled)
    try:
        check_grads(make_sin(), (X,), order=2)
        with pytest.raises(AssertionError):
            check_grads(make_sin(slope=2.0), (X,), order=1)
        assert jax.config.jax_enable_x64 is enabled
        assert jnp.asarray(1.0).dtype == (jnp.float64 if enabled else jnp.float32)
    finally:
        jax.config.update("jax_enable_x64", before)


# -- compiled once per process --------------------------------------------------------------------
def test_a_second_check_of_the_same_function_does_not_trace_it_again():
    traces: list[int] = []
    sin = make_sin()

    def f(x):
        traces.append(1)  # runs when JAX traces f, not when the compiled code runs
        return jnp.sum(sin(x) ** 2)

    check_function(f, X, modes=("rev",))
    first = len(traces)
    check_function(f, X + 0.5, modes=("rev",))
    # The second check traces f only for its eager call and its VJP, never to compile.
    assert len(traces) - first <= 2 < first


# -- reports by argument and output ---------------------------------------------------------------
def test_a_small_output_is_checked_row_by_row_of_its_jacobian():
    def two_outputs(x):
        # out[0] is right; out[1] goes through a rule whose derivative is 2x too large
        return jnp.stack([jnp.sum(x**2), jnp.sum(make_sin(slope=2.0)(x))])

    result = check_function(two_outputs, X, modes=("rev",))
    assert [p.name for p in result.params] == ["d out[0] / d x", "d out[1] / d x"]
    assert [p.subject_name for p in result.params] == ["x", "x"]
    assert [p.verdict for p in result.params] == [Verdict.PASS, Verdict.FAIL]
    wrong = result["d out[1] / d x"]
    # Entries of the Jacobian itself: d out[1] / d x[j] = 2 cos(x[j]) where cos(x[j]) is right.
    np.testing.assert_allclose(wrong.analytic, 2 * np.cos(np.asarray(X)), rtol=1e-6)
    np.testing.assert_allclose(wrong.numeric, np.cos(np.asarray(X)), rtol=1e-5)
    assert wrong.failures[0].name.startswith("d out[1] / d x[")
    assert wrong.diagnosis is not None
    assert "d out[1] / d x" in wrong.diagnosis.summary + wrong.diagnosis.hint
    assert str(result).splitlines()[0] == "gradproof: WRONG: x has a wrong gradient"


def test_rows_of_a_tuple_output_are_named_by_its_path():
    result = check_function(lambda x: (jnp.sum(x), jnp.prod(x[:2])), X, modes=("rev",))
    assert result.passed, result
    assert [p.name for p in result.params] == ["d out[0] / d x", "d out[1] / d x"]


def test_a_large_output_prints_the_cotangent_its_values_are_weighed_by():
    result = check_function(lambda x: jnp.sin(x) * 2.0, X)  # 5 outputs: a random cotangent
    assert result.passed, result
    (note,) = [n for n in result.notes if n.startswith("Reverse mode checks")]
    u = [float(v) for v in note.split("u = [")[1].split("]")[0].split(", ")]
    # The note prints u to 3 significant digits: the values agree to their rounding, 5e-3.
    np.testing.assert_allclose(result["x"].analytic, 2.0 * np.cos(np.asarray(X)) * u, rtol=5e-3)
    assert any(n.startswith("Forward mode moves each argument") for n in result.notes)


def test_sections_and_subjects_reach_the_json_report():
    result = check_function(make_sin(), X, second_order=True)
    reports = result.to_dict()["params"]
    assert [(r["subject"], r["section"]) for r in reports] == [
        ("x", ""),
        ("x", "Forward mode (JVP)"),
        ("x", "Second order: reverse over reverse (VJP of the VJP)"),
        ("x", "Second order: forward over reverse (JVP of the VJP)"),
    ]
    assert result.to_dict()["subject_noun"] == "argument"


def test_second_order_of_a_function_with_data_and_keyword_arguments():
    def f(w, x, *, temperature):
        return jnp.sum(jax.nn.softplus(x @ w / temperature))

    w = jnp.array([[0.3, -0.2], [0.1, 0.4], [-0.5, 0.2]])
    x = jnp.array([[1.0, -2.0, 0.5], [0.3, 0.1, -1.2]])
    result = check_function(f, w, x, argnums=0, second_order=True, temperature=2.0)
    assert result.passed, result
    assert result.subjects == ("w",)


def _sine(x):
    return jnp.sin(x)


def test_the_loss_pickles_for_worker_processes_and_compiles_there_again():
    import pickle

    from gradproof.jax._arguments import _Arguments
    from gradproof.jax._loss import _Loss
    from gradproof.jax._program import _Program

    arguments = _Arguments.read(_sine, (X,), None, [])
    program = _Program(_sine, arguments, False, x64=True, jit=True)
    program.differentiate(True, True, explicit=False, notes=[])  # holds a linearization now
    cotangent = [np.ones(5, np.float32)]
    loss = _Loss(program, cotangent, arguments.extract)
    copy = pickle.loads(pickle.dumps(loss))
    point = {"x": np.linspace(-1.0, 1.0, 5)}
    assert copy(point) == loss(point) == pytest.approx(0.0, abs=1e-12)  # sin is odd


def test_float32_leaves_with_float64_constants_are_still_compiled():
    # Under x64 jnp.arange(4.0) is float64, so fn's own output is float64 computed from float32
    # softmax; the compiled program (float64 copies) differs from it by float32 rounding only,
    # which must not be mistaken for a miscompilation (Note [One dtype per program]).
    def f(z):
        return jnp.sum(jax.nn.softmax(z) * jnp.arange(4.0))

    result = check_function(f, jnp.array([0.3, -1.0, 2.0, 0.5]))
    assert result.passed, result
    assert not any("eagerly" in note for note in result.notes), result.notes
