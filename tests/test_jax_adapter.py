"""gradproof.jax: custom_vjp / custom_jvp rules over pytrees, checked through gradproof.check.

Run ``python -m tests.test_jax_adapter`` to print the side-by-side table with
``jax.test_util.check_grads`` quoted in docs/jax.md.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections import namedtuple
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

jax = pytest.importorskip("jax")

import jax.numpy as jnp  # noqa: E402
from jax.test_util import check_grads  # noqa: E402

from gradproof import CheckResult, InputError, UserCodeError, Verdict  # noqa: E402
from gradproof.jax import (  # noqa: E402
    DEFAULT_BATCH_SIZE,
    VMAP_MIN_ENTRIES,
    _x64,
    check_function,
)


# -- functions with hand-written rules ------------------------------------------------------------
def make_log1pexp(bwd_bug: str | None = None):
    """``log(1 + exp(x))``, stable in float32, with a hand-written backward (optionally wrong)."""

    @jax.custom_vjp
    def log1pexp(x):
        return jnp.logaddexp(0.0, x)

    def fwd(x):
        return log1pexp(x), x

    def bwd(x, g):
        if bwd_bug == "unstable":  # exp(x) / (1 + exp(x)) is inf / inf = NaN for large x
            return (g * jnp.exp(x) / (1 + jnp.exp(x)),)
        if bwd_bug == "factor2":
            return (2 * g * jax.nn.sigmoid(x),)
        return (g * jax.nn.sigmoid(x),)

    log1pexp.defvjp(fwd, bwd)
    return log1pexp


def make_linear(bug: str | None = None):
    """``x @ w + b`` over ``{"w", "b"}`` with a hand-written VJP, with one optional planted bug."""

    @jax.custom_vjp
    def linear(params, x):
        return x @ params["w"] + params["b"]

    def fwd(params, x):
        return linear(params, x), (params, x)

    def bwd(residuals, g):
        params, x = residuals
        dw, db, dx = x.T @ g, g.sum(axis=0), g @ params["w"].T
        if bug == "factor2":
            dw = 2 * dw
        elif bug == "sign":
            db = -db
        elif bug == "transpose":
            dw = dw.T
        elif bug == "entry":
            dw = dw.at[1, 2].add(0.5)
        elif bug == "input":
            dx = 0.5 * dx
        return {"w": dw, "b": db}, dx

    linear.defvjp(fwd, bwd)
    return linear


def make_softplus_jvp(wrong: bool = False):
    """``softplus`` with a custom_jvp rule; `wrong` uses sigmoid(-x) for sigmoid(x)."""

    @jax.custom_jvp
    def softplus(x):
        return jnp.logaddexp(0.0, x)

    @softplus.defjvp
    def softplus_jvp(primals, tangents):
        (x,), (t,) = primals, tangents
        slope = jax.nn.sigmoid(-x) if wrong else jax.nn.sigmoid(x)
        return softplus(x), slope * t

    return softplus


def linear_point():
    rng = np.random.default_rng(0)
    params = {"w": jnp.asarray(rng.normal(size=(3, 3))), "b": jnp.asarray(rng.normal(size=3))}
    return params, jnp.asarray(rng.normal(size=(5, 3)))


X_SMOOTH = jnp.array([-4.0, -0.5, 0.7, 1.5, 3.0])  # away from 0; 5 entries: no Jacobian rows


# -- custom_vjp: correct rules pass ----------------------------------------------------------------
def test_stable_log1pexp_passes_at_large_inputs():
    x = jnp.array([-60.0, -1.5, 0.25, 2.0, 100.0])  # float32: exp(100) overflows
    result = check_function(make_log1pexp(), x)
    assert isinstance(result, CheckResult)
    assert result.passed, result
    assert [p.name for p in result.params] == ["x"]
    assert any("custom_vjp" in note for note in result.notes)  # forward mode skipped, said so


def test_linear_layer_over_a_dict_pytree_passes_with_pytree_names():
    params, x = linear_point()
    result = check_function(make_linear(), params, x)
    assert result.passed, result
    # Two differentiated arguments: each is named after fn's own parameter.
    assert [p.name for p in result.params] == ["params.b", "params.w", "x"]
    assert result.n_entries == 3 + 9 + 15


def test_argnums_chooses_the_arguments_and_names_relative_to_a_single_dict():
    params, x = linear_point()
    result = check_function(make_linear(), params, x, argnums=0)
    assert result.passed, result
    assert [p.name for p in result.params] == ["b", "w"]


def mlp_over_layers(layers, x):
    for w, b in layers:
        x = jnp.tanh(x @ w + b)
    return jnp.sum(x**2)


def test_list_of_tuples_pytree_passes_and_names_every_leaf():
    rng = np.random.default_rng(1)
    layers = [
        (jnp.asarray(rng.normal(size=(3, 4))), jnp.asarray(rng.normal(size=4))),
        (jnp.asarray(rng.normal(size=(4, 2))), jnp.asarray(rng.normal(size=2))),
    ]
    x = jnp.asarray(rng.normal(size=(5, 3)))
    result = check_function(mlp_over_layers, layers, x, argnums=0)
    assert result.passed, result
    names = [p.name for p in result.params]
    assert names[:4] == ["layers[0][0]", "layers[0][1]", "layers[1][0]", "layers[1][1]"]
    assert names[4:] == [f"jvp.{name}" for name in names[:4]]  # forward mode, leaf by leaf


Dense = namedtuple("Dense", ["weight", "bias"])


def test_namedtuple_leaves_are_named_by_field():
    rng = np.random.default_rng(2)
    layer = Dense(jnp.asarray(rng.normal(size=(2, 2))), jnp.asarray(rng.normal(size=2)))
    result = check_function(lambda p: jnp.sum(jnp.sin(p.weight) @ p.bias), layer)
    assert result.passed, result
    assert [p.name for p in result.params] == ["weight", "bias", "jvp.weight", "jvp.bias"]


# -- custom_vjp: planted bugs fail, named --------------------------------------------------------
@pytest.mark.parametrize(
    ("bug", "suspect", "kind"),
    [
        ("factor2", "w", "scale"),
        ("sign", "b", "sign"),
        ("transpose", "w", "transpose"),
        ("entry", "w", "few_entries"),
    ],
    ids=["factor2", "sign", "transpose", "one-entry"],
)
def test_planted_bwd_bugs_fail_with_the_leaf_and_the_diagnosis(bug, suspect, kind):
    params, x = linear_point()
    result = check_function(make_linear(bug), params, x, argnums=0)
    assert result.verdict is Verdict.FAIL
    assert result.suspects == (suspect,)
    report = result[suspect]
    assert report.diagnosis is not None and report.diagnosis.kind == kind
    assert report.failures, "the wrong entries are listed"
    if bug == "entry":
        assert [e.name for e in report.failures] == ["w[1, 2]"]


def test_a_bug_in_the_input_gradient_names_the_input():
    params, x = linear_point()
    result = check_function(make_linear("input"), params, x)
    assert result.suspects == ("x",)
    assert result["x"].diagnosis is not None and result["x"].diagnosis.kind == "scale"


def test_unstable_bwd_gives_nan_where_the_finite_differences_do_not():
    x = jnp.array([-1.0, 0.5, 100.0])
    result = check_function(make_log1pexp("unstable"), x)
    assert result.suspects == ("x",)
    # Three outputs: checked row by row of the Jacobian, so the NaN is d out[2] / d x[2].
    assert [p.name for p in result.params] == [f"d out[{i}] / d x" for i in range(3)]
    # bwd multiplies its NaN by the cotangent, and 0 * NaN is NaN: every row is NaN at x[2], as
    # jax.grad(lambda x: f(x)[0]) is.
    for i, report in enumerate(result.params):
        assert [e.name for e in report.failures] == [f"d out[{i}] / d x[2]"]
        assert report.diagnosis is not None and report.diagnosis.kind == "non_finite"


def test_factor_two_in_a_scalar_bwd_is_diagnosed_as_scale():
    result = check_function(make_log1pexp("factor2"), X_SMOOTH)
    assert result.suspects == ("x",)
    assert result["x"].diagnosis is not None
    assert result["x"].diagnosis.summary == "analytic = 2 × numeric on every entry"


def test_several_cotangents_run_one_check_each():
    params, x = linear_point()
    one = check_function(make_linear(), params, x, argnums=0)
    three = check_function(make_linear(), params, x, argnums=0, n_cotangents=3)
    assert three.passed
    assert three.n_evals > 2 * one.n_evals
    assert any("3 random cotangents" in note for note in three.notes)


# -- custom_jvp: forward and reverse -------------------------------------------------------------
def test_correct_custom_jvp_passes_in_both_modes():
    result = check_function(make_softplus_jvp(), X_SMOOTH)
    assert result.passed, result
    assert [p.name for p in result.params] == ["x", "jvp.x"]


def test_wrong_custom_jvp_fails_forward_and_the_reverse_mode_derived_from_it():
    result = check_function(make_softplus_jvp(wrong=True), X_SMOOTH)
    assert result.verdict is Verdict.FAIL
    assert result.suspects == ("x",)  # one argument, wrong in both modes
    assert [(p.name, p.subject_name, p.verdict) for p in result.params] == [
        ("x", "x", Verdict.FAIL),
        ("jvp.x", "x", Verdict.FAIL),
    ]
    assert str(result).splitlines()[0].startswith("gradproof: WRONG: x ")
    forward_only = check_function(make_softplus_jvp(wrong=True), X_SMOOTH, modes=("fwd",))
    assert [p.name for p in forward_only.params if not p.passed] == ["jvp.x"]
    assert forward_only.params[0].section == "Forward mode (JVP)"
    reverse_only = check_function(make_softplus_jvp(wrong=True), X_SMOOTH, modes=("rev",))
    assert [p.name for p in reverse_only.params] == ["x"]
    assert reverse_only.suspects == ("x",)


def test_forward_mode_names_the_leaf_whose_rule_is_wrong():
    softplus = make_softplus_jvp(wrong=True)
    params = {"a": X_SMOOTH, "b": X_SMOOTH + 1.0}
    result = check_function(lambda p: jnp.sum(softplus(p["a"])) + jnp.sum(p["b"] ** 2), params)
    assert result.suspects == ("a",)
    assert [p.name for p in result.params if not p.passed] == ["a", "jvp.a"]
    assert str(result).startswith("gradproof: WRONG: 1 of 2 arguments has a wrong gradient: a")


def test_asking_forward_mode_of_a_custom_vjp_is_an_input_error():
    with pytest.raises(InputError, match="custom_vjp"):
        check_function(make_log1pexp(), X_SMOOTH, modes=("fwd",))


# -- jit, vmap, threads ---------------------------------------------------------------------------
def traced_function():
    traces: list[int] = []

    def fn(x):
        traces.append(1)  # runs when JAX traces fn, not when compiled code runs
        return jnp.sum(make_softplus_jvp()(x) ** 2)

    return fn, traces


def test_jitted_function_is_traced_a_fixed_number_of_times_not_per_evaluation():
    fn, traces = traced_function()
    small = check_function(jax.jit(fn), X_SMOOTH)
    small_traces = len(traces)
    traces.clear()
    large = check_function(jax.jit(fn), jnp.linspace(0.1, 3.0, 40))
    assert small.passed and large.passed
    assert large.n_evals > small.n_evals + 60  # many more evaluations ...
    # ... and not one more trace: JAX 0.10 traces twice, once per dtype (float32, float64)
    assert len(traces) == small_traces <= 4


def test_unjitted_function_is_traced_a_fixed_number_of_times_too():
    fn, traces = traced_function()
    result = check_function(fn, jnp.linspace(0.1, 3.0, 40))
    assert result.passed
    assert result.n_evals > 80  # 2 per entry and a few
    # jax.eval_shape, jax.linearize (both modes), jax.jit once (Note [One dtype per program])
    assert len(traces) == 3


def test_batched_evaluation_is_used_and_agrees_with_one_point_per_call():
    params, x = linear_point()
    for bug in (None, "entry"):
        batched = check_function(make_linear(bug), params, x, argnums=0, vmap=True)
        single = check_function(make_linear(bug), params, x, argnums=0, vmap=False)
        assert f"batches of {DEFAULT_BATCH_SIZE}" in batched.engine
        assert "batches" not in single.engine
        assert batched.verdict is single.verdict
        assert batched.suspects == single.suspects
        for a, b in zip(batched.params, single.params, strict=True):
            # The same finite differences, up to the rounding of a vmapped computation.
            np.testing.assert_allclose(a.numeric, b.numeric, rtol=1e-9, atol=1e-12)


def test_batch_size_is_passed_on():
    result = check_function(make_softplus_jvp(), X_SMOOTH, batch_size=8, vmap=True)
    assert "batches of 8" in result.engine


def test_vmap_auto_batches_only_checks_of_many_entries():
    small = check_function(make_softplus_jvp(), X_SMOOTH)
    large = check_function(make_softplus_jvp(), jnp.linspace(-2.0, 2.0, VMAP_MIN_ENTRIES))
    assert small.passed and large.passed
    assert small.engine == "serial"
    assert f"batches of {DEFAULT_BATCH_SIZE}" in large.engine


def _host_sin(x):
    return np.sin(x)


def _host_cos(x):
    return np.cos(x)


def test_a_function_that_does_not_vmap_falls_back_with_a_note():
    @jax.custom_vjp
    def host_sin(x):  # a numpy routine called back from JAX: no batching rule
        return jax.pure_callback(_host_sin, jax.ShapeDtypeStruct(x.shape, x.dtype), x)

    def fwd(x):
        return host_sin(x), x

    def bwd(x, g):
        return (g * jax.pure_callback(_host_cos, jax.ShapeDtypeStruct(x.shape, x.dtype), x),)

    host_sin.defvjp(fwd, bwd)
    result = check_function(host_sin, X_SMOOTH, vmap=True)
    assert result.passed, result
    assert "batches" not in result.engine
    assert any("does not vmap" in note for note in result.notes)


def test_a_function_that_does_not_jit_runs_eagerly_with_a_note():
    def branchy(x):
        return jnp.sum(x**2) if jnp.sum(x) > 0 else jnp.sum(x)  # Python control flow

    result = check_function(branchy, X_SMOOTH)
    assert result.passed, result
    assert any("could not be compiled with jax.jit" in note for note in result.notes)


def test_a_wrong_batching_rule_is_not_trusted():
    from jax.custom_batching import custom_vmap

    @custom_vmap
    def total(x):
        return jnp.sum(x)

    @total.def_vmap
    def total_vmap(axis_size, in_batched, x):
        return jnp.sum(x, axis=1) + 1.0, True  # planted: the batched rule adds 1

    def fn(x):  # total(...) is 0 at every point, but 1 in a batch
        return jnp.sum(x**2) + total(0.0 * jax.lax.stop_gradient(x))

    result = check_function(fn, X_SMOOTH, vmap=True)
    assert result.passed, result
    assert "batches" not in result.engine
    assert any("`jax.vmap` of `fn` returned" in note for note in result.notes)


def test_a_compiled_function_that_disagrees_with_fn_is_not_trusted():
    def odd_under_jit(x):
        # Stands in for a miscompilation (Note [Trust the compiled function]): traced under
        # jax.jit (not under jax.vjp, whose tracers are JVP tracers), the value is off by 1.
        compiled = isinstance(x, jax.core.Tracer) and not hasattr(x, "primal")
        return jnp.sum(x**2) + (1.0 if compiled else 0.0)

    result = check_function(odd_under_jit, X_SMOOTH, modes=("rev",), vmap=False)
    assert result.passed, result
    assert any("`jax.jit` of `fn` returned" in note for note in result.notes)


def test_evaluations_in_other_threads_are_in_float64_too():
    serial = check_function(make_log1pexp(), X_SMOOTH)
    with ThreadPoolExecutor(2) as pool:
        threaded = check_function(make_log1pexp(), X_SMOOTH, executor=pool)
    assert threaded.passed
    assert "ThreadPoolExecutor" in threaded.engine
    # Float32 evaluations would differ from the float64 ones by about 1e-3 here.
    np.testing.assert_allclose(threaded["x"].numeric, serial["x"].numeric, rtol=1e-9)


# -- precision and the caller's x64 setting -------------------------------------------------------
def test_float32_inputs_are_checked_in_float64_and_x64_is_left_as_it_was():
    before = jax.config.jax_enable_x64
    result = check_function(make_log1pexp(), X_SMOOTH)  # float32 leaves
    assert jax.config.jax_enable_x64 == before
    assert jnp.asarray(1.0).dtype == (jnp.float64 if before else jnp.float32)
    assert "(float64)" in result.step
    assert any("finite differences were taken in float64" in note for note in result.notes)


def test_x64_enabled_by_the_caller_stays_enabled():
    jax.config.update("jax_enable_x64", True)
    try:
        result = check_function(make_log1pexp(), jnp.asarray(np.asarray(X_SMOOTH, np.float64)))
        assert jax.config.jax_enable_x64 is True
    finally:
        jax.config.update("jax_enable_x64", False)
    assert result.passed


def test_native_precision_keeps_float32():
    result = check_function(make_log1pexp(), X_SMOOTH, precision="native")
    assert result.passed, result
    assert "(float32)" in result.step
    assert not any("float64" in note for note in result.notes)


def test_float64_numpy_inputs_are_float64_without_the_callers_x64():
    x = np.array([-4.0, -0.5, 0.7, 3.0])
    result = check_function(lambda x: jnp.sum(jnp.sin(x) * x), x)
    assert result.passed
    assert result["x"].dtype == "float64"
    assert result.rtol == 1e-5  # float64's default, not float32's


# -- arguments that are not checked ----------------------------------------------------------------
def test_static_arguments_pass_through_unchanged():
    def fn(x, rows, reduction):
        assert isinstance(rows, int) and reduction == "sum"
        return jnp.sum(jnp.reshape(x, (rows, -1)) ** 3)

    result = check_function(fn, jnp.linspace(0.5, 2.0, 6), 2, "sum")
    assert result.passed, result
    assert [p.name for p in result.params] == ["x", "jvp.x"]


def test_python_floats_are_configuration_unless_chosen_with_argnums():
    def fn(x, scale):
        return jnp.sum(jnp.sin(x) * scale)

    default = check_function(fn, X_SMOOTH, 3.0)
    chosen = check_function(fn, X_SMOOTH, 3.0, argnums=(0, 1))
    assert [p.name for p in default.params] == ["x", "jvp.x"]
    assert [p.name for p in chosen.params] == ["x", "scale", "jvp.x", "jvp.scale"]
    assert chosen.passed


def test_has_aux_checks_the_output_only():
    result = check_function(lambda x: (jnp.sum(x**2), {"steps": 3}), X_SMOOTH, has_aux=True)
    assert result.passed


# -- bad input ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("fn", "match"),
    [
        (lambda x: "loss", "returned a str"),
        (lambda x: None, "holds no arrays"),
        (lambda x: jnp.arange(3), "dtype int(32|64)"),
        (lambda x: (jnp.sum(x), jnp.int32(3)), "dtype int32"),
    ],
    ids=["string", "none", "integer", "integer-leaf"],
)
def test_outputs_that_are_not_floating_arrays_are_input_errors(fn, match):
    with pytest.raises(InputError, match=match):
        check_function(fn, X_SMOOTH)


def test_integer_only_arguments_are_an_input_error():
    with pytest.raises(InputError, match="no floating-point arrays") as caught:
        check_function(lambda i, n: jnp.sum(i * n), jnp.arange(3), 4)
    assert "`i` holds int32 arrays" in str(caught.value)
    assert "argnums" in str(caught.value)


def test_a_raising_function_is_a_user_code_error():
    def broken(x):
        raise ValueError("shapes do not line up")

    with pytest.raises(UserCodeError, match="shapes do not line up") as caught:
        check_function(broken, X_SMOOTH)
    assert caught.value.function == "fn"
    assert isinstance(caught.value.__cause__, ValueError)


def test_a_bwd_returning_the_wrong_shape_is_a_user_code_error():
    @jax.custom_vjp
    def f(x):
        return jnp.sin(x)

    f.defvjp(lambda x: (jnp.sin(x), x), lambda x, g: (g[:2] * jnp.cos(x[:2]),))
    with pytest.raises(UserCodeError, match="bwd rule") as caught:
        check_function(f, X_SMOOTH)
    assert caught.value.function == "vjp"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"step": 1e-3}, "Unknown option `step`.*functools.partial"),
        ({"loss_batch": len}, "Unknown option `loss_batch`"),
        ({"argnums": 2}, "argnums"),
        ({"modes": ("reverse",)}, "`modes` must be"),
        ({"n_cotangents": 0}, "`n_cotangents` must be a positive integer"),
        ({"precision": "double"}, "`precision` must be"),
    ],
    ids=["unknown", "reserved", "argnums", "modes", "cotangents", "precision"],
)
def test_invalid_options_are_input_errors(kwargs, match):
    with pytest.raises(InputError, match=match):
        check_function(make_log1pexp(), X_SMOOTH, **kwargs)


def test_a_function_that_is_not_callable_is_an_input_error():
    with pytest.raises(InputError, match="`fn` must be a JAX function"):
        check_function(np.ones(3), X_SMOOTH)  # type: ignore[arg-type]


# -- the framework is optional ---------------------------------------------------------------------
def test_import_gradproof_does_not_import_jax():
    code = "import sys, gradproof, gradproof.testing; print('jax' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_without_jax_the_import_says_what_to_install():
    code = (
        "import sys; sys.modules['jax'] = None\n"
        "from gradproof.errors import BackendUnavailableError\n"
        "try:\n    import gradproof.jax\n"
        "except BackendUnavailableError as error:\n"
        "    print(isinstance(error, ImportError), error.framework, error)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.startswith("True jax ")
    assert "pip install jax jaxlib" in done.stdout
    assert "gradproof[jax]" in done.stdout


# -- side by side with jax.test_util.check_grads ---------------------------------------------------
KINK_OFFSETS = (0.0, 1e-9, 1e-6, 1e-5, 1e-4, 1e-3)
"""How far above its kink one ReLU pre-activation sits (check_grads steps by 1e-4 × tangent)."""


def relu_network(params, x):
    hidden = jax.nn.relu(x @ params["W1"] + params["b1"])
    return jnp.sum(jnp.tanh(hidden @ params["W2"] + params["b2"]))


def relu_point(offset: float) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """A correct ReLU network whose unit 0 on example 0 sits `offset` above its kink."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 3))
    params = {
        "W1": rng.normal(size=(3, 5)),
        "b1": 0.1 * rng.normal(size=5),
        "W2": rng.normal(size=(5, 2)),
        "b2": np.zeros(2),
    }
    params["b1"][0] = -(x[0] @ params["W1"][:, 0]) + offset
    return params, x


def make_dense_with_wrong_entry():
    """The first layer as a custom_vjp whose weight gradient is wrong in entry [2, 1]."""

    @jax.custom_vjp
    def dense(w, x):
        return x @ w

    dense.defvjp(
        lambda w, x: (x @ w, (w, x)), lambda r, g: ((r[1].T @ g).at[2, 1].add(0.3), g @ r[0].T)
    )

    def network(params, x):
        hidden = jax.nn.relu(dense(params["W1"], x) + params["b1"])
        return jnp.sum(jnp.tanh(hidden @ params["W2"] + params["b2"]))

    return network


def run_check_grads(fn, params, x) -> str:
    """Run check_grads in float64 (its tightest setting): 'pass' or the failing sub-check."""
    with _x64(True):  # jax.enable_x64(True), or its older jax.experimental form
        p = jax.tree_util.tree_map(jnp.asarray, params)
        xx = jnp.asarray(x)
        try:
            check_grads(lambda p: fn(p, xx), (p,), order=1, modes=("rev",))
        except AssertionError as error:
            return "FAIL: " + " ".join(str(error).split())
    return "pass"


def side_by_side() -> list[tuple[str, str, str, str, int, float, float]]:
    """Rows: case, check_grads, gradproof verdict, entries named, evaluations, seconds of each."""
    cases = [(f"correct, kink at +{o:g}", relu_network, *relu_point(o)) for o in KINK_OFFSETS]
    cases.append(("W1[2, 1] wrong by 0.3", make_dense_with_wrong_entry(), *relu_point(0.1)))
    rows = []
    for label, fn, params, x in cases:
        started = time.perf_counter()
        theirs = run_check_grads(fn, params, x)
        their_seconds = time.perf_counter() - started
        ours = check_function(fn, params, x, argnums=0, modes=("rev",))
        named = ", ".join(e.name for p in ours.params for e in p.failures) or "-"
        verdict = ours.verdict.value + (
            f" ({', '.join(ours.inconclusive)})" if ours.inconclusive else ""
        )
        rows.append((label, theirs, verdict, named, ours.n_evals, their_seconds, ours.seconds))
    return rows


@pytest.mark.parametrize("offset", [0.0, 1e-6], ids=["at-kink", "1e-6-above"])
def test_check_grads_falsely_fails_near_a_kink_where_gradproof_does_not(offset):
    params, x = relu_point(offset)
    assert run_check_grads(relu_network, params, x).startswith("FAIL")  # deterministic: seed 0
    ours = check_function(relu_network, params, x, argnums=0)
    assert ours.verdict is not Verdict.FAIL, ours
    if offset == 0.0:
        assert ours.verdict is Verdict.INCONCLUSIVE
        assert {e.reason for p in ours.params for e in p.inconclusive_entries} == {"kink"}
    else:
        assert ours.passed


def test_on_a_planted_bug_both_fail_but_only_gradproof_names_the_entry():
    params, x = relu_point(0.1)
    network = make_dense_with_wrong_entry()
    theirs = run_check_grads(network, params, x)
    assert theirs.startswith("FAIL") and "cotangent projection" in theirs
    assert "W1" not in theirs and "[2, 1]" not in theirs
    ours = check_function(network, params, x, argnums=0)
    assert ours.suspects == ("W1",)
    assert [e.name for e in ours["W1"].failures] == ["W1[2, 1]"]


def _their_discrepancy(outcome: str) -> str:
    """Shorten check_grads' message to its sub-check and its absolute difference."""
    if outcome == "pass":
        return "pass"
    difference = outcome.split("Max absolute difference among violations: ")[1].split()[0]
    return f"FAIL (VJP cotangent projection off by {float(difference):.2g})"


if __name__ == "__main__":
    params, x = relu_point(0.1)
    run_check_grads(relu_network, params, x)  # compile once, so that times compare checks
    check_function(relu_network, params, x, argnums=0, modes=("rev",))
    print("| case | check_grads (float64) | gradproof | entries named | evaluations | seconds |")
    print("|---|---|---|---|---|---|")
    for label, theirs, verdict, named, n_evals, t_theirs, t_ours in side_by_side():
        print(
            f"| {label} | {_their_discrepancy(theirs)} | {verdict} | {named} | {n_evals} | "
            f"{t_theirs:.2f} / {t_ours:.2f} |"
        )
