"""Check JAX functions with hand-written ``custom_vjp`` and ``custom_jvp`` rules.

:func:`check_function` turns a JAX function of pytrees into what
:func:`gradproof.check` takes: a loss of named numpy parameters, the analytic
gradient from JAX's own autodiff (which runs the function's custom rules), and a
batched loss built with :func:`jax.vmap`. The verdicts, steps and tolerances are
all :func:`gradproof.check`'s; this module translates and decides nothing.

Note [Scalar loss from any output]
    gradproof checks the gradient of a scalar. A scalar output is its own loss,
    and its gradient is the VJP with cotangent 1 (what ``jax.grad`` computes). Any
    other output, a pytree of arrays ``y``, is checked through ``<u, y>`` for a
    fixed random cotangent ``u``, whose gradient is exactly ``vjp(u)``: what a
    ``custom_vjp``'s ``bwd`` returns when given ``u``. The entries of ``u`` have
    random signs and magnitudes in [0.5, 1.5] (Chainer's floor), so that no output
    entry gets a weight near zero, where a wrong row of the Jacobian could hide.
    They are rounded to each output's dtype, so that JAX and the finite
    differences weigh the outputs by the same numbers.

Note [Forward mode]
    A ``custom_jvp`` rule is also checked directly. Each differentiated leaf
    ``x_k`` gets a random tangent ``v_k`` (signed, scaled like a directional
    probe: ``max(1, |x|) / sqrt(n_k)``) and a scalar parameter ``t_k``, with
    ``x_k = x_k0 + t_k v_k``. The loss's derivative in ``t_k`` at 0 is
    ``jax.jvp`` along ``v_k``, so gradproof checks the ``t_k`` like any other
    parameters and names a wrong rule by leaf, as ``jvp.w``. JAX has no forward
    mode for ``custom_vjp`` functions; by default it is then skipped with a note.

Note [Trust the compiled function]
    The finite differences call `fn` compiled (``jax.jit``) and batched
    (``jax.vmap``), and a compiler or a ``custom_vmap`` rule can get that wrong:
    jaxlib 0.10.2 on CPU returns garbage for ``x.reshape(640, 50) @
    jnp.ones((50, 7))`` under ``jax.jit``, and for ``jax.vmap`` of the same
    product with 20 rows on a batch of 32. A wrong loss value would become a
    false verdict, so set-up compares the compiled value with `fn`'s own eager
    output, and batched values with single evaluations, on copies of the point
    and on distinct points near it. What disagrees is not used, and a note says
    so.

Note [x64]
    JAX computes in float32 unless ``jax_enable_x64`` is set, and float32 central
    differences are accurate to about 5e-6 relative, float64 ones to 4e-11. With
    ``precision="auto"`` every JAX call of a check runs inside
    ``jax.enable_x64(True)``, a context manager whose setting is local to the
    calling thread and restored on exit, so the caller's configuration never
    changes. Each evaluation enters it again, so evaluations run by another
    thread or process (``executor=``) are in float64 too. Leaves keep their dtypes:
    gradproof itself decides to take the finite differences with float64
    copies of float32 leaves, and says so in a note. With ``precision="native"``
    nothing is enabled: the function runs under the caller's own setting.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from gradproof._typing import Params
from gradproof.checking.check import check_with_options
from gradproof.checking.options import CheckOptions
from gradproof.errors import BackendUnavailableError
from gradproof.results import CheckResult

try:
    # Only the private modules below use JAX: importing it first turns its absence into
    # BackendUnavailableError (`import jax.numpy` imports `jax` too).
    import jax.numpy  # noqa: F401
except ImportError as _missing:  # pragma: no cover - the suite runs with JAX installed
    raise BackendUnavailableError(
        "`gradproof.jax` needs JAX, which is not installed. Install it with "
        '`pip install jax jaxlib` (the CPU build) or `pip install "gradproof[jax]"`.',
        framework="jax",
    ) from _missing

from gradproof.engine.randomness import preserved_random_state
from gradproof.jax._arguments import _Arguments
from gradproof.jax._convert import _x64 as _x64  # re-exported: the tests use it
from gradproof.jax._loss import JVP_PREFIX, _Along, _Loss
from gradproof.jax._merge import _merge
from gradproof.jax._options import MODES, _argnums, _validate, _validate_modes
from gradproof.jax._outputs import _call_eagerly, _cotangents
from gradproof.jax._program import _Program

__all__ = ["DEFAULT_BATCH_SIZE", "JVP_PREFIX", "MODES", "check_function"]

DEFAULT_BATCH_SIZE = 64
"""Points per call of the vmapped function, unless `batch_size` is given."""


@preserved_random_state()  # the global generators are re-seeded when seed= is given
def check_function(
    fn: Callable[..., Any],
    *args: Any,
    argnums: int | Sequence[int] | None = None,
    has_aux: bool = False,
    modes: Sequence[str] | None = None,
    n_cotangents: int = 1,
    vmap: bool = True,
    batch_size: int | None = None,
    jit: bool = True,
    **options: Any,
) -> CheckResult:
    """Check the derivative rules of a JAX function against finite differences.

    The analytic gradient is what JAX's autodiff computes for `fn`, so it runs
    `fn`'s ``custom_vjp`` ``bwd`` and ``custom_jvp`` rules, however deep inside
    `fn` they are. Each floating-point leaf of the arguments is a parameter
    named by its pytree path (``w``, ``layers[0].bias``); the numbers and the
    verdict come from :func:`gradproof.check`.

    Parameters
    ----------
    fn : callable ``fn(*args) -> pytree of arrays``
        The function: plain, ``jax.jit``-compiled, or with custom rules. It may
        return a scalar or any pytree of floating arrays (Note [Scalar loss from
        any output] in this module's source). Keyword arguments are not passed;
        bind them with ``functools.partial``.
    *args : jax.Array, numpy array or pytree of them
        The point to check at, passed to `fn` in order. Never modified. Leaves
        are named by their pytree paths: ``w``, ``layers[0].bias`` when a single
        argument of dicts or attributes is differentiated, else after `fn`'s
        parameter names (``params.w``, ``x``).
    argnums : int or sequence of int, optional
        The arguments to differentiate. By default every floating array leaf of
        every argument (Python floats count as static configuration); with
        `argnums`, every floating leaf of the chosen arguments, Python floats
        included. Everything else (integers, strings, other arguments) is passed
        through unchanged.
    has_aux : bool, optional
        `fn` returns ``(output, aux)``; only ``output`` is checked, as in
        ``jax.grad(..., has_aux=True)``.
    modes : sequence of {"rev", "fwd"}, optional
        What to check: ``"rev"``, the VJP (``bwd`` rules, and reverse mode
        derived from ``custom_jvp`` rules); ``"fwd"``, the JVP along a random
        tangent per leaf (Note [Forward mode]). By default both when `fn` has a
        forward mode, else ``"rev"`` with a note (``custom_vjp`` functions).
    n_cotangents : int, optional
        For a non-scalar output, how many random cotangents to check reverse
        mode with (one check each); 1 by default. The result shown is the
        first that fails, else the first inconclusive, else the first.
    vmap : bool, optional
        Evaluate the finite differences `batch_size` points per call through
        ``jax.vmap`` (default True). If `fn` does not vmap, the check falls back
        to one point per call and says so in a note.
    batch_size : int, optional
        Points per vmapped call; :data:`DEFAULT_BATCH_SIZE` (64) by default.
    jit : bool, optional
        Compile the evaluations with ``jax.jit``, once per dtype (default True).
        If `fn` cannot be traced, they run eagerly and a note says so.
    **options
        Passed to :func:`gradproof.check`: `mode`, `method`, `eps`, `rel_step`,
        `rtol`, `atol`, `seed` (also seeds the cotangents and tangents),
        `precision`, `noise`, `max_evals`, `time_budget`, `n_probes`,
        `n_samples`, `executor` (a thread pool, or worker processes, each of which
        compiles the function again), `progress`. Forward mode is always checked
        with ``mode="full"``.

    Returns
    -------
    CheckResult
        The same result as :func:`gradproof.check`. ``result.params`` holds the
        reverse-mode reports, named by pytree path, then the forward-mode ones
        (``jvp.w``); ``result.notes`` says what the adapter did (float64
        evaluation, a skipped forward mode, a fallback from ``vmap``);
        ``result.engine`` says whether the evaluations were batched.

    Raises
    ------
    InputError
        If `fn` is not callable, the arguments hold no floating-point leaves,
        `fn` returns something that is not a pytree of real floating arrays, an
        option is unknown or invalid, or ``"fwd"`` is asked of a ``custom_vjp``
        function.
    UserCodeError
        If `fn`, its ``bwd`` or its JVP rule raises (JAX's own errors about a
        rule's output structure included); the original exception is its
        ``__cause__``.

    See Also
    --------
    gradproof.check : the checker this adapter feeds.
    gradproof.testing.assert_jax_function : the same check, raising when a rule is wrong.
    jax.test_util.check_grads : JAX's own check, a pass/fail assertion.

    Notes
    -----
    Set-up calls `fn` once eagerly, once compiled and once vmapped on a batch,
    then computes the VJP (and the JVPs) once; the finite differences cost
    what :func:`gradproof.check` says (about ``2 n + 43`` evaluations for ``n``
    entries), in calls of ``batch_size`` points. Nothing is retraced per
    evaluation: shapes and dtypes do not change. All JAX work runs inside
    ``jax.enable_x64(True)`` unless ``precision="native"`` (Note [x64]).

    Examples
    --------
    A numerically stable ``log(1 + exp(x))`` with a hand-written backward:

    >>> import jax
    >>> import jax.numpy as jnp
    >>> @jax.custom_vjp
    ... def softplus(x):
    ...     return jnp.logaddexp(0.0, x)
    >>> def softplus_fwd(x):
    ...     return softplus(x), x
    >>> def softplus_bwd(x, g):
    ...     return (g * jax.nn.sigmoid(x),)
    >>> softplus.defvjp(softplus_fwd, softplus_bwd)
    >>> x = jnp.array([-30.0, -1.0, 0.5, 30.0])
    >>> check_function(softplus, x).passed
    True
    >>> def wrong_bwd(x, g):
    ...     return (2 * g * jax.nn.sigmoid(x),)
    >>> softplus.defvjp(softplus_fwd, wrong_bwd)
    >>> result = check_function(softplus, x)
    >>> result.suspects, result["x"].diagnosis.summary
    (('x',), 'analytic = 2 × numeric on every entry')
    """
    started = time.perf_counter()
    _validate(fn, options, n_cotangents, batch_size)
    checked = CheckOptions(**options)
    chosen_modes = _validate_modes(modes)
    precision = options.get("precision", "auto")
    x64 = precision != "native"
    seed = options.get("seed")
    rng = np.random.default_rng(seed if isinstance(seed, (int, np.integer)) else 0)
    notes: list[str] = []
    with _x64(x64):
        arguments = _Arguments.read(fn, args, _argnums(argnums, len(args)), notes)
        output = _call_eagerly(fn, args, has_aux)
        cotangents = _cotangents(output, n_cotangents, rng)
        program = _Program(fn, arguments, has_aux, x64=x64, jit=jit)
        program.set_up(output, cotangents[0], notes)
        if vmap:
            program.set_up_batches(batch_size or DEFAULT_BATCH_SIZE, cotangents[0], notes)
        gradients = program.vjps(cotangents) if "rev" in chosen_modes else []
        forward = None
        if "fwd" in chosen_modes:
            forward = program.jvps(cotangents[0], rng, explicit=modes is not None, notes=notes)

    reverse: list[CheckResult] = []
    if "rev" in chosen_modes:
        for cotangent, gradient in zip(cotangents, gradients, strict=True):
            loss = _Loss(program, cotangent, arguments.extract)
            reverse.append(
                _check(
                    loss,
                    arguments.container(gradient),
                    arguments.container(arguments.values),
                    checked,
                    program.batch_options(loss.batch),
                )
            )
            if reverse[-1].interrupted:
                break
    forward_result = None
    if forward is not None and not (reverse and reverse[-1].interrupted):
        tangents, jvps = forward
        loss = _Loss(program, cotangents[0], _Along(arguments, tangents))
        forward_result = _check(
            loss,
            {JVP_PREFIX: arguments.container([np.float64(v) for v in jvps])},
            {JVP_PREFIX: arguments.container([np.zeros((), d) for d in arguments.proxies])},
            checked.replace(mode="full"),
            program.batch_options(loss.batch),
        )
    return _merge(reverse, forward_result, notes, started)


def _check(
    loss: _Loss, grad: Params, params: Params, options: CheckOptions, batching: dict[str, Any]
) -> CheckResult:
    """Run the check, batched through `loss.batch` when `batching` says it works."""
    return check_with_options(
        loss,
        grad,
        params,
        options.replace(batch_size=batching.get("batch_size"), dialect="jax"),
        loss_batch=batching.get("loss_batch"),
    )
