"""`check_function`: a JAX function's derivative rules, checked through gradproof.check.

The Notes it follows are in the docstring of :mod:`gradproof.jax`.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from gradproof._typing import Params
from gradproof.checking.check import check_with_options
from gradproof.checking.options import CheckOptions
from gradproof.engine.randomness import preserved_random_state
from gradproof.jax._arguments import _Arguments
from gradproof.jax._convert import _x64
from gradproof.jax._loss import (
    JVP_PREFIX,
    _Along,
    _Loss,
    _Under,
)
from gradproof.jax._merge import FORWARD, REVERSE, _merge, _Part, _worst
from gradproof.jax._options import _argnums, _keywords, _validate, _validate_modes
from gradproof.jax._outputs import JACOBIAN_ROWS, _cotangents, _rows, _shown, _structure
from gradproof.jax._program import _Program
from gradproof.jax._second import _SecondOrder
from gradproof.results import CheckResult

DEFAULT_BATCH_SIZE = 64
"""Points per call of the vmapped function, unless `batch_size` is given."""

VMAP_MIN_ENTRIES = 256
"""With ``vmap="auto"``, checks of this many entries or more are batched (Note [When vmap pays]).

Note [When vmap pays]
    A batched evaluation costs a compilation of the vmapped function (40 to
    150 ms on a CPU for a small function) and then saves the dispatch of each
    point (about 30 to 60 µs). A full check costs about ``2 n``
    evaluations for ``n`` entries, so below a few hundred entries compiling
    the batch costs more than it saves, on the first check of a process
    (the one ``jax.test_util.check_grads`` users feel). ``vmap=True`` batches
    anyway, ``vmap=False`` never.
"""


@preserved_random_state()  # the global generators are re-seeded when seed= is given
def check_function(
    fn: Callable[..., Any],
    *args: Any,
    argnums: int | Sequence[int] | None = None,
    has_aux: bool = False,
    modes: Sequence[str] | None = None,
    second_order: bool = False,
    n_cotangents: int = 1,
    vmap: bool | str = "auto",
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
        any output] in :mod:`gradproof.jax`). An output of 2 to
        :data:`JACOBIAN_ROWS` entries is checked row by row of its Jacobian
        (reports ``d out[i] / d x``, Note [Jacobian rows]).
    *args : jax.Array, numpy array or pytree of them
        The point to check at, passed to `fn` in order: arrays, Python floats
        (``check_function(f, 2.0, 3.0)``, Note [Python scalars] in
        :mod:`gradproof.jax`) or pytrees of them. Never modified. Leaves
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
    second_order : bool, optional
        Also check the derivatives of the rules themselves: reverse over
        reverse and forward over reverse, in the chosen modes (Note [Second
        order] in :mod:`gradproof.jax`). False by default.
    n_cotangents : int, optional
        For an output of more than :data:`JACOBIAN_ROWS` entries, how many
        random cotangents to check reverse mode with (one check each); 1 by
        default. The result shown is the first that fails, else the first
        inconclusive, else the first. (Smaller outputs are checked row by row.)
    vmap : bool or "auto", optional
        Evaluate the finite differences `batch_size` points per call through
        ``jax.vmap``: ``"auto"`` (default) for checks of at least
        :data:`VMAP_MIN_ENTRIES` entries (Note [When vmap pays]), True always,
        False never. If `fn` does not vmap, the check falls back to one point
        per call and says so in a note.
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
        with ``mode="full"``. Any other keyword is passed to `fn` when `fn`
        takes it, and is not differentiated, as with ``jax.grad`` (Note
        [Keyword arguments] in ``_options.py``).

    Returns
    -------
    CheckResult
        The same result as :func:`gradproof.check`. ``result.params`` holds the
        reverse-mode reports, named by pytree path, then the forward-mode ones
        (``jvp.w``) and the second-order ones (``vjp_of_vjp.w``,
        ``jvp_of_vjp.w``); each has the leaf as its ``subject`` and its mode as
        its ``section``, and ``result.suspects`` names leaves, each once.
        ``result.notes`` says what the adapter did and the random cotangent
        and tangents the values are weighed by (float64
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
    Set-up reads the output's structure with ``jax.eval_shape``, linearizes
    `fn` once for the analytic derivatives (Note [Cold start]), and compiles
    `fn` once (and its vmapped form when batching pays, Note [When vmap
    pays]); the finite differences cost what :func:`gradproof.check` says
    (about ``2 n`` evaluations for ``n`` entries, more where entries are
    re-measured), one point per call or ``batch_size`` points. Nothing is
    retraced per evaluation: shapes and dtypes do not change, and a second
    check of the same function reuses what the first compiled (Note [Compiled
    once per process]). All JAX work runs inside ``jax.enable_x64(True)``
    unless ``precision="native"`` (Note [x64]).

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
    >>> x = jnp.array([-30.0, -1.0, 0.5, 2.0, 30.0])
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
    fn_kwargs, options = _keywords(fn, options)
    _validate(options, n_cotangents, batch_size, vmap, second_order)
    checked = CheckOptions(**options)
    chosen_modes = _validate_modes(modes)
    precision = options.get("precision", "auto")
    x64 = precision != "native"
    seed = options.get("seed")
    rng = np.random.default_rng(seed if isinstance(seed, (int, np.integer)) else 0)
    notes: list[str] = []
    with _x64(x64):
        arguments = _Arguments.read(fn, args, _argnums(argnums, len(args)), notes, fn_kwargs)
        output, treedef = _structure(fn, args, fn_kwargs, has_aux)
        size = sum(max(out.size, 1) for out in output)
        rows = _rows(output, treedef) if 1 < size <= JACOBIAN_ROWS else []
        if rows:
            cotangents = [cotangent for _, cotangent in rows]
            weights = _cotangents(output, 1, rng)[0]  # forward mode and second order weigh by it
        else:
            cotangents = _cotangents(output, n_cotangents, rng)
            weights = cotangents[0]
        program = _Program(fn, arguments, has_aux, x64=x64, jit=jit)
        values = program.differentiate(
            "rev" in chosen_modes, "fwd" in chosen_modes, explicit=modes is not None, notes=notes
        )
        program.set_up(values, weights, notes)
        entries = sum(v.size for v in arguments.values)
        batched = vmap is True or (vmap == "auto" and entries >= VMAP_MIN_ENTRIES)
        if batched:
            program.set_up_batches(batch_size or DEFAULT_BATCH_SIZE, weights, notes)
        gradients = program.vjps(cotangents) if "rev" in chosen_modes else []
        forward = program.jvps(weights, rng, notes) if "fwd" in chosen_modes else None
        second = None
        if second_order:
            second = _SecondOrder.set_up(
                program, weights, rng, notes, chosen_modes, batched, batch_size
            )

    parts: list[_Part] = []

    def run(loss: _Loss, grad: Params, params: Params, options: CheckOptions) -> CheckResult:
        result = _check(loss, grad, params, options, loss.program.batch_options(loss.batch))
        if result.interrupted:
            raise _Interrupted(result)
        return result

    try:
        if "rev" in chosen_modes:
            _reverse(parts, run, program, arguments, cotangents, gradients, rows, checked)
            if not rows and size > 1:
                notes.append(_cotangent_note(weights, len(cotangents)))
        if forward is not None:
            tangents, jvps = forward
            loss = _Loss(program, weights, _Along(arguments, tangents, JVP_PREFIX))
            result = run(
                loss,
                {JVP_PREFIX: arguments.container([np.float64(v) for v in jvps])},
                {JVP_PREFIX: arguments.container([np.zeros((), d) for d in arguments.proxies])},
                checked.replace(mode="full"),
            )
            parts.append(_Part(result, FORWARD, JVP_PREFIX, f"{JVP_PREFIX}."))
            notes.append(_tangent_note(tangents, weights, size))
        if second is not None:
            parts += second.run(run, arguments, checked)
    except _Interrupted as stopped:
        parts.append(_Part(stopped.result, ""))
    return _merge(parts, notes, started)


class _Interrupted(Exception):
    """A check stopped early (Ctrl-C, a deadline, a budget): the checks after it do not run."""

    def __init__(self, result: CheckResult) -> None:
        super().__init__()
        self.result = result


def _reverse(
    parts: list[_Part],
    run: Callable[..., CheckResult],
    program: _Program,
    arguments: _Arguments,
    cotangents: list[list[Any]],
    gradients: list[list[Any]],
    rows: list[tuple[str, list[Any]]],
    checked: CheckOptions,
) -> None:
    """Check reverse mode: one check per Jacobian row, or per random cotangent (the worst shown).

    The parts are appended to `parts` as they are made, so that an interruption keeps the
    rows checked before it.
    """
    values = arguments.container(arguments.values)
    if rows:
        for k, ((name, cotangent), gradient) in enumerate(zip(rows, gradients, strict=True)):
            prefix = f"jacobian_row_{k}"
            loss = _Loss(program, cotangent, _Under(arguments, prefix))
            result = run(loss, {prefix: arguments.container(gradient)}, {prefix: values}, checked)
            parts.append(_Part(result, REVERSE, prefix, f"d {name} / d "))
        return
    results = []
    for cotangent, gradient in zip(cotangents, gradients, strict=True):
        loss = _Loss(program, cotangent, arguments.extract)
        results.append(run(loss, arguments.container(gradient), values, checked))
    shown = _worst(results)
    part = _Part(
        dataclasses.replace(
            results[shown],
            n_evals=sum(r.n_evals for r in results),
            n_refined=sum(r.n_refined for r in results),
            n_probes=sum(r.n_probes for r in results),
        ),
        REVERSE,
    )
    if len(results) > 1:
        part = dataclasses.replace(
            part,
            result=dataclasses.replace(
                part.result,
                notes=(
                    f"Reverse mode was checked along {len(results)} random cotangents; the "
                    f"report shows cotangent {shown + 1} ({results[shown].verdict.value}).",
                    *part.result.notes,
                ),
            ),
        )
    parts.append(part)


def _cotangent_note(cotangent: list[Any], count: int) -> str:
    several = f" (the first of {count})" if count > 1 else ""
    return (
        "Reverse mode checks the gradient of `<u, out>` for a random cotangent u"
        f"{several}: the values shown are the entries of `u·J`, with u = {_shown(cotangent)}."
    )


def _tangent_note(tangents: list[Any], weights: list[Any], size: int) -> str:
    weighed = "" if size == 1 else f", weighed by u = {_shown(weights)}"
    return (
        "Forward mode moves each argument along a random tangent v; the values shown are "
        f"`J·v`{weighed}. v = {_shown(tangents)}."
    )


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
