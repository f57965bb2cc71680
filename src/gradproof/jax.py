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

import contextlib
import dataclasses
import importlib
import inspect
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from gradproof.check import check
from gradproof.errors import BackendUnavailableError, InputError, UserCodeError
from gradproof.results import CheckResult, Verdict

try:
    import jax
    import jax.numpy as jnp
except ImportError as _missing:  # pragma: no cover - the suite runs with JAX installed
    raise BackendUnavailableError(
        "`gradproof.jax` needs JAX, which is not installed. Install it with "
        '`pip install jax jaxlib` (the CPU build) or `pip install "gradproof[jax]"`.',
        framework="jax",
    ) from _missing

__all__ = ["DEFAULT_BATCH_SIZE", "JVP_PREFIX", "MODES", "check_function"]

MODES = ("rev", "fwd")
"""The autodiff modes :func:`check_function` checks: reverse (VJP) and forward (JVP)."""

DEFAULT_BATCH_SIZE = 64
"""Points per call of the vmapped function, unless `batch_size` is given."""

JVP_PREFIX = "jvp"
"""Forward-mode reports are named ``jvp.<leaf>``, e.g. ``jvp.w`` (Note [Forward mode])."""

_OWN_OPTIONS = ("argnums", "has_aux", "modes", "n_cotangents", "vmap", "batch_size", "jit")
_RESERVED = ("loss", "grad", "params", "loss_batch")
_NUMPY_FLOATS = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))
_Array = npt.NDArray[Any]


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
                check(
                    loss,
                    arguments.container(gradient),
                    arguments.container(arguments.values),
                    **program.batch_options(loss),
                    **options,
                )
            )
            if reverse[-1].interrupted:
                break
    forward_result = None
    if forward is not None and not (reverse and reverse[-1].interrupted):
        tangents, jvps = forward
        loss = _Loss(program, cotangents[0], _Along(arguments, tangents))
        forward_result = check(
            loss,
            {JVP_PREFIX: arguments.container([np.float64(v) for v in jvps])},
            {JVP_PREFIX: arguments.container([np.zeros((), d) for d in arguments.proxies])},
            **program.batch_options(loss),
            **{**options, "mode": "full"},
        )
    return _merge(reverse, forward_result, notes, started)


# -- validation -----------------------------------------------------------------------------------
def _validate(
    fn: object, options: dict[str, Any], n_cotangents: object, batch_size: object
) -> None:
    if not callable(fn):
        raise InputError(
            f"`fn` must be a JAX function of the arguments; got a {type(fn).__name__}. Pass "
            "the function itself, e.g. `check_function(my_layer, x, w)`."
        )
    allowed = [name for name in inspect.signature(check).parameters if name not in _RESERVED]
    unknown = [name for name in options if name not in allowed]
    if unknown:
        listed = ", ".join(f"`{name}`" for name in dict.fromkeys((*_OWN_OPTIONS, *allowed)))
        raise InputError(
            f"Unknown option {', '.join(f'`{name}`' for name in unknown)} for "
            f"`check_function`; the options are {listed}. Keyword arguments of `fn` itself "
            "are not passed: bind them with `functools.partial(fn, name=value)`."
        )
    if options.get("precision", "auto") not in ("auto", "native"):
        raise InputError(f"`precision` must be 'auto' or 'native'; got {options['precision']!r}.")
    for label, count in (("n_cotangents", n_cotangents), ("batch_size", batch_size)):
        if count is None and label == "batch_size":
            continue
        if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 1:
            raise InputError(f"`{label}` must be a positive integer; got {count!r}.")


def _validate_modes(modes: Sequence[str] | None) -> tuple[str, ...]:
    if modes is None:
        return MODES
    chosen = (modes,) if isinstance(modes, str) else tuple(modes)
    if not chosen or any(mode not in MODES for mode in chosen):
        choices = ", ".join(repr(m) for m in MODES)
        raise InputError(
            f"`modes` must be a non-empty sequence of {choices}; got {modes!r}. Leave it unset "
            "to check both where `fn` has a forward mode."
        )
    return chosen


def _argnums(argnums: int | Sequence[int] | None, n_args: int) -> tuple[int, ...] | None:
    if argnums is None:
        return None
    chosen = (argnums,) if isinstance(argnums, (int, np.integer)) else tuple(argnums)
    for i in chosen:
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)) or not -n_args <= i < n_args:
            raise InputError(
                f"`argnums` must name positions of the {n_args} argument(s) passed, "
                f"0 to {n_args - 1}; got {argnums!r}."
            )
    return tuple(sorted({int(i) % n_args for i in chosen}))


# -- arguments ------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class _Arguments:
    """The arguments split into differentiated leaves (named) and everything else.

    gradproof receives a nested dict keyed by the leaves' pytree keys (dict
    keys, sequence indices, attribute names), so it names the leaves as it
    names any container: ``w``, ``layers[0].bias``. A single argument whose
    leaves all sit under string keys is the root; otherwise each argument is
    under its name in `fn`'s signature (``x``, or ``arg0`` without one).

    Floating arrays that are not differentiated (data such as a batch of
    inputs) are passed to the compiled function as arguments, not baked into
    it as constants, which would make compilation slow for large data.
    Everything else (integers, strings, Python floats) is a constant.
    """

    treedefs: tuple[Any, ...]
    leaves: tuple[tuple[Any, ...], ...]
    slots: tuple[tuple[int, int], ...]  # (argument, leaf) of each differentiated leaf
    paths: tuple[tuple[Any, ...], ...]  # its keys in the container gradproof sees
    dtypes: tuple[np.dtype[Any], ...]  # its dtype in JAX
    proxies: tuple[np.dtype[Any], ...]  # its dtype in numpy (float32 for bfloat16)
    values: tuple[_Array, ...]  # numpy copies in the proxy dtype
    primals: tuple[Any, ...]  # the JAX arrays
    data_slots: tuple[tuple[int, int], ...]  # (argument, leaf) of each floating data array
    data: tuple[Any, ...]  # those arrays, in JAX

    @classmethod
    def read(
        cls, fn: Any, args: tuple[Any, ...], argnums: tuple[int, ...] | None, notes: list[str]
    ) -> _Arguments:
        names = _argument_names(fn, len(args))
        treedefs, all_leaves, found, data = [], [], [], []
        skipped: list[str] = []
        for i, arg in enumerate(args):
            keyed, treedef = jax.tree_util.tree_flatten_with_path(arg)
            treedefs.append(treedef)
            all_leaves.append(tuple(leaf for _, leaf in keyed))
            chosen = argnums is None or i in argnums
            for j, (path, leaf) in enumerate(keyed):
                keys = tuple(_key(entry) for entry in path)
                if chosen and _differentiable(leaf, explicit=argnums is not None):
                    found.append((i, j, keys, leaf))
                elif _differentiable(leaf, explicit=False):
                    data.append((i, j, leaf))
                elif chosen and np.iscomplexobj(leaf):
                    skipped.append(names[i] + jax.tree_util.keystr(path))
        if not found:
            raise InputError(_nothing_to_check(names, args, argnums))
        if skipped:
            notes.append(
                f"Complex leaves are passed through unchecked: {', '.join(skipped[:4])}. "
                "gradproof checks real parameters; split them into real and imaginary parts."
            )
        rooted = len({i for i, *_ in found}) == 1 and all(
            keys and isinstance(keys[0], str) for _, _, keys, _ in found
        )
        primals = tuple(jnp.asarray(leaf) for *_, leaf in found)
        dtypes = tuple(np.dtype(p.dtype) for p in primals)
        proxies = tuple(d if d in _NUMPY_FLOATS else np.dtype(np.float32) for d in dtypes)
        unusual = sorted({d.name for d in dtypes if d not in _NUMPY_FLOATS})
        if unusual:
            notes.append(
                f"Leaves of dtype {', '.join(unusual)} are checked through float32 copies and "
                "judged with float32's tolerance; pass `rtol=1e-2` for their precision."
            )
        return cls(
            treedefs=tuple(treedefs),
            leaves=tuple(all_leaves),
            slots=tuple((i, j) for i, j, _, _ in found),
            paths=tuple(keys if rooted else (names[i], *keys) for i, _, keys, _ in found),
            dtypes=dtypes,
            proxies=proxies,
            values=tuple(np.asarray(p.astype(q)) for p, q in zip(primals, proxies, strict=True)),
            primals=primals,
            data_slots=tuple((i, j) for i, j, _ in data),
            data=tuple(jnp.asarray(leaf) for *_, leaf in data),
        )

    def rebuild(self, diff: Sequence[Any], data: Sequence[Any]) -> list[Any]:
        """Return the arguments with the differentiated leaves and the data replaced."""
        leaves = [list(arg_leaves) for arg_leaves in self.leaves]
        for (i, j), value in zip((*self.slots, *self.data_slots), (*diff, *data), strict=True):
            leaves[i][j] = value
        return [
            jax.tree_util.tree_unflatten(treedef, arg_leaves)
            for treedef, arg_leaves in zip(self.treedefs, leaves, strict=True)
        ]

    def container(self, leaves: Sequence[Any]) -> dict[Any, Any]:
        """Nest `leaves` (one per differentiated leaf) by their paths, for gradproof."""
        root: dict[Any, Any] = {}
        for keys, leaf in zip(self.paths, leaves, strict=True):
            node = root
            for key in keys[:-1]:
                node = node.setdefault(key, {})
            node[keys[-1]] = leaf
        return root

    def extract(self, container: Any) -> list[_Array]:
        """Read the differentiated leaves back out of a container gradproof built."""
        out = []
        for keys in self.paths:
            node = container
            for key in keys:
                node = node[key]
            out.append(node)
        return out


def _key(entry: Any) -> Any:
    """Return a pytree path entry's key: DictKey.key, SequenceKey.idx, GetAttrKey.name."""
    for attribute in ("key", "idx", "name"):
        if hasattr(entry, attribute):
            return getattr(entry, attribute)
    return str(entry)


def _differentiable(leaf: Any, *, explicit: bool) -> bool:
    if isinstance(leaf, (jax.Array, np.ndarray, np.generic)):
        return bool(jnp.issubdtype(leaf.dtype, jnp.floating))
    # A Python float is usually configuration (an epsilon, a temperature): checked only when
    # its argument is chosen with `argnums`.
    return explicit and isinstance(leaf, float)


def _argument_names(fn: Any, n: int) -> list[str]:
    """Name the positional arguments from `fn`'s signature (``arg0``, ... without one)."""
    names: list[str] = []
    try:
        parameters = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        parameters = []  # type: ignore[assignment]
    for parameter in parameters:
        if parameter.kind is inspect.Parameter.VAR_POSITIONAL:
            break
        if parameter.kind in (parameter.POSITIONAL_ONLY, parameter.POSITIONAL_OR_KEYWORD):
            names.append(parameter.name)
    return [names[i] if i < len(names) else f"arg{i}" for i in range(n)]


def _nothing_to_check(
    names: list[str], args: tuple[Any, ...], argnums: tuple[int, ...] | None
) -> str:
    if not args:
        return (
            "`check_function` got no arguments for `fn`: pass the point to check at, e.g. "
            "`check_function(fn, x)`."
        )
    shown = []
    for i, arg in enumerate(args):
        if argnums is not None and i not in argnums:
            continue
        leaves = jax.tree_util.tree_leaves(arg)
        kinds = sorted({_describe(leaf) for leaf in leaves}) or ["no leaves"]
        shown.append(f"`{names[i]}` holds {', '.join(kinds)}")
    chosen = "" if argnums is None else f" chosen by `argnums={list(argnums)}`"
    return (
        f"The arguments{chosen} hold no floating-point arrays to differentiate: "
        f"{'; '.join(shown)}. Pass floating-point arrays (e.g. `x.astype(jnp.float32)`), "
        "or choose the arguments to check with `argnums=` (which also checks Python floats)."
    )


def _describe(value: Any) -> str:
    dtype = getattr(value, "dtype", None)
    if dtype is not None:
        return f"{np.dtype(dtype).name} arrays"
    return type(value).__name__


# -- outputs and cotangents ------------------------------------------------------------------------
def _call_eagerly(fn: Callable[..., Any], args: tuple[Any, ...], has_aux: bool) -> list[Any]:
    """Call `fn` once at the given arguments and return its checked output leaves."""
    try:
        raw = fn(*args)
    except (KeyboardInterrupt, GeneratorExit):
        raise
    except Exception as exc:
        raise UserCodeError(
            f"`fn` raised {type(exc).__name__} at the given arguments: {exc}", function="fn"
        ) from exc
    if has_aux:
        if not isinstance(raw, (tuple, list)) or len(raw) != 2:
            raise InputError(
                f"`fn` returned a {type(raw).__name__}, but `has_aux=True` expects a pair "
                "`(output, aux)`. Return the pair, or drop `has_aux`."
            )
        raw = raw[0]
    leaves = jax.tree_util.tree_leaves(raw)
    if not leaves:
        raise InputError(
            f"`fn` returned {raw!r}, which holds no arrays; expected a scalar or a pytree of "
            "floating-point arrays. Return the value whose derivative is checked."
        )
    for leaf in leaves:
        dtype = getattr(leaf, "dtype", None)
        if dtype is None and isinstance(leaf, (bool, int, float)):
            dtype = jnp.asarray(leaf).dtype  # a Python number: float counts, int does not
        if dtype is None:
            raise InputError(
                f"`fn` returned a {type(leaf).__name__} ({leaf!r:.60}) among its outputs; "
                "expected a scalar or a pytree of floating-point arrays. Return only arrays "
                "(pass `has_aux=True` to return `(output, aux)`)."
            )
        if not jnp.issubdtype(dtype, jnp.floating):
            raise InputError(
                f"`fn` returned an output of dtype {np.dtype(dtype).name}; only real "
                "floating-point outputs have derivatives to check. Return only those (e.g. "
                "`lambda *a: fn(*a)[0]`), split complex outputs into real and imaginary "
                "parts, or pass `has_aux=True` to return `(output, aux)`."
            )
    return [jnp.asarray(leaf) for leaf in leaves]


def _cotangents(outputs: list[Any], count: int, rng: np.random.Generator) -> list[list[_Array]]:
    """Draw random cotangents for the outputs (Note [Scalar loss from any output])."""
    dtypes = [np.dtype(out.dtype) for out in outputs]
    if len(outputs) == 1 and outputs[0].size == 1:
        return [[np.ones(outputs[0].shape, dtypes[0])]]
    return [
        [
            (rng.choice([-1.0, 1.0], size=out.shape) * rng.uniform(0.5, 1.5, size=out.shape))
            .astype(dtype)
            .reshape(out.shape)
            for out, dtype in zip(outputs, dtypes, strict=True)
        ]
        for _ in range(count)
    ]


# -- the JAX side ---------------------------------------------------------------------------------
def _x64(enabled: bool) -> contextlib.AbstractContextManager[Any]:
    """``jax.enable_x64(True)`` where it exists, else the older experimental one (Note [x64])."""
    if not enabled:
        return contextlib.nullcontext()
    state: Any = getattr(jax, "enable_x64", None)
    if state is None:  # pragma: no cover - JAX releases before jax.enable_x64
        return importlib.import_module("jax.experimental").enable_x64()  # type: ignore[no-any-return]
    return state(True)  # type: ignore[no-any-return]


class _Program:
    """`fn` as a scalar function of the differentiated leaves: compiled, batched, differentiated."""

    def __init__(
        self, fn: Callable[..., Any], arguments: _Arguments, has_aux: bool, *, x64: bool, jit: bool
    ) -> None:
        self.fn = fn
        self.arguments = arguments
        self.has_aux = has_aux
        self.x64 = x64
        self.jit = jit
        self.scalar: Callable[..., Any] = jax.jit(self._scalar) if jit else self._scalar
        self.batched: Callable[..., Any] | None = None
        self.batch_size = 0

    def outputs(self, leaves: Sequence[Any], data: Sequence[Any] | None = None) -> list[Any]:
        """Return `fn`'s output leaves at the given differentiated leaves."""
        out = self.fn(
            *self.arguments.rebuild(leaves, self.arguments.data if data is None else data)
        )
        return list(jax.tree_util.tree_leaves(out[0] if self.has_aux else out))

    def _scalar(self, leaves: Sequence[Any], data: Sequence[Any], cotangent: Sequence[Any]) -> Any:
        outputs = self.outputs(leaves, data)
        terms = [
            jnp.sum(jnp.asarray(u, dtype=out.dtype) * out)
            for u, out in zip(cotangent, outputs, strict=True)
        ]
        total = terms[0]
        for term in terms[1:]:
            total = total + term
        return total

    def _ready(self, leaves: Sequence[_Array]) -> list[Any]:
        """Numpy leaves as `fn` takes them: proxies cast back to their JAX dtype (bfloat16)."""
        out: list[Any] = []
        for leaf, proxy, dtype in zip(
            leaves, self.arguments.proxies, self.arguments.dtypes, strict=True
        ):
            value = leaf.astype(dtype) if leaf.dtype == proxy and dtype != proxy else leaf
            out.append(value if self.jit else jnp.asarray(value))
        return out

    def value(self, leaves: Sequence[_Array], cotangent: Sequence[_Array]) -> _Array:
        """Return the loss at one point, a numpy scalar of the dtype it was computed in."""
        with _x64(self.x64):
            return _numpy(self.scalar(self._ready(leaves), self.arguments.data, cotangent))

    def batch(self, stacked: Sequence[_Array], cotangent: Sequence[_Array]) -> _Array:
        """Return the loss at ``B`` stacked points, ``batch_size`` per call (padded: one trace)."""
        assert self.batched is not None
        size = stacked[0].shape[0]
        values = []
        for start in range(0, size, self.batch_size):
            chunk = [leaf[start : start + self.batch_size] for leaf in stacked]
            rows = chunk[0].shape[0]
            if rows < self.batch_size:
                pad = self.batch_size - rows
                chunk = [np.concatenate([c, np.repeat(c[:1], pad, axis=0)]) for c in chunk]
            with _x64(self.x64):
                out = self.batched(self._ready(chunk), self.arguments.data, cotangent)
                values.append(_numpy(out)[:rows])
        return np.concatenate(values)

    def set_up(self, output: list[Any], cotangent: Sequence[_Array], notes: list[str]) -> None:
        """Evaluate once compiled; run eagerly instead if `fn` does not jit, or jits wrong.

        The compiled value must match `fn`'s own eager `output` (Note [Trust the
        compiled function]).
        """
        point = list(self.arguments.values)
        terms = [
            np.asarray(u, np.float64) * np.asarray(out, np.float64)
            for u, out in zip(cotangent, output, strict=True)
        ]
        expected = float(sum(np.sum(t) for t in terms))
        scale = float(sum(np.sum(np.abs(t)) for t in terms))
        reason = ""
        if self.jit:
            try:
                compiled = self.value(point, cotangent)
            except (KeyboardInterrupt, GeneratorExit):
                raise
            except Exception as exc:
                reason = f"`fn` could not be compiled with jax.jit ({_first_line(exc)})"
            else:
                rounding = math.sqrt(np.finfo(compiled.dtype).eps) * scale
                if not abs(float(compiled) - expected) <= rounding:
                    reason = (
                        f"`jax.jit` of `fn` returned {float(compiled)!r} where `fn` itself "
                        f"returns {expected!r} (a miscompilation?)"
                    )
            if not reason:
                return
        self.jit = False
        self.scalar = self._scalar
        try:
            self.value(point, cotangent)
        except (KeyboardInterrupt, GeneratorExit):
            raise
        except Exception as exc:
            raise _fn_error(exc) from exc
        if reason:
            notes.append(
                f"{reason}; every evaluation ran eagerly, which is slower. Pass `jit=False` to "
                "skip the attempt."
            )

    def set_up_batches(
        self, batch_size: int, cotangent: Sequence[_Array], notes: list[str]
    ) -> None:
        """Compile the vmapped loss and test it against single points; else note the fallback.

        Tested on a batch of copies of the point (what gradproof.check tests first)
        and on a batch of distinct points near it (Note [Trust the compiled function]).
        """
        vmapped = jax.vmap(self._scalar, in_axes=(0, None, None))
        self.batched = jax.jit(vmapped) if self.jit else vmapped
        self.batch_size = batch_size
        # The checks evaluate float64 copies (Note [x64]): compile for those.
        point = [v.astype(np.float64) if self.x64 else v for v in self.arguments.values]
        rng = np.random.default_rng(0)
        moved = [
            np.concatenate(
                [
                    v[None],
                    v
                    + 1e-3
                    * rng.uniform(-1.0, 1.0, size=(batch_size - 1, *v.shape))
                    * np.maximum(1.0, np.abs(v)),
                ]
            ).astype(v.dtype)
            for v in point
        ]
        try:
            copies = self.batch([np.stack([v, v]) for v in point], cotangent)
            batched = self.batch(moved, cotangent)
        except (KeyboardInterrupt, GeneratorExit):
            raise
        except Exception as exc:
            self.batched = None
            notes.append(
                f"`fn` does not vmap ({_first_line(exc)}); the finite differences were "
                "evaluated one point per call. Pass `vmap=False` to skip the attempt."
            )
            return
        pairs = [(copies[0], self.value(point, cotangent))]
        for row in sorted({batch_size // 2, batch_size - 1}):
            pairs.append((batched[row], self.value([m[row] for m in moved], cotangent)))
        for got, single in pairs:
            if not _same_value(float(got), float(single)):
                self.batched = None
                notes.append(
                    f"`jax.vmap` of `fn` returned {float(got)!r} where `fn` returns "
                    f"{float(single)!r} at the same point, so the finite differences were "
                    "evaluated one point per call. Pass `vmap=False` to skip the attempt."
                )
                return

    def batch_options(self, loss: _Loss) -> dict[str, Any]:
        """`loss_batch` and `batch_size` for gradproof.check, when batching works."""
        if self.batched is None:
            return {}
        return {"loss_batch": loss.batch, "batch_size": self.batch_size}

    def vjps(self, cotangents: list[list[_Array]]) -> list[list[_Array]]:
        """Return the analytic gradient for each cotangent: `fn`'s VJP, which runs its bwd rules."""
        with _x64(self.x64):
            try:
                _, pullback = jax.vjp(self.outputs, list(self.arguments.primals))
                return [
                    [np.asarray(g, dtype=np.float64) for g in pullback(list(cotangent))[0]]
                    for cotangent in cotangents
                ]
            except (KeyboardInterrupt, GeneratorExit):
                raise
            except Exception as exc:
                raise UserCodeError(
                    f"Computing `fn`'s gradient with jax.vjp raised {type(exc).__name__}: {exc}\n"
                    "jax.vjp traces `fn` and runs its custom rules (a custom_vjp's bwd, a "
                    "custom_jvp's rule): check what they return, and that `fn` can be "
                    "differentiated by `jax.grad` at all.",
                    function="vjp",
                ) from exc

    def jvps(
        self,
        cotangent: Sequence[_Array],
        rng: np.random.Generator,
        *,
        explicit: bool,
        notes: list[str],
    ) -> tuple[list[_Array], list[float]] | None:
        """Draw a random tangent per leaf and compute the JVPs along them (Note [Forward mode])."""
        tangents = [
            _tangent(v, d, rng)
            for v, d in zip(self.arguments.values, self.arguments.dtypes, strict=True)
        ]
        primals = list(self.arguments.primals)
        zeros = [jnp.zeros_like(p) for p in primals]

        def scalar(leaves: list[Any]) -> Any:
            return self._scalar(leaves, self.arguments.data, cotangent)

        # Not compiled, like the VJP: the analytic values never depend on our jit (Note [Trust
        # the compiled function]). One call per leaf.
        jvps = []
        try:
            for k, tangent in enumerate(tangents):
                directions = list(zeros)
                directions[k] = jnp.asarray(tangent, dtype=primals[k].dtype)
                jvps.append(float(jax.jvp(scalar, (primals,), (directions,))[1]))
        except (KeyboardInterrupt, GeneratorExit):
            raise
        except Exception as exc:
            no_forward = isinstance(exc, TypeError) and "custom_vjp" in str(exc)
            if not explicit:
                notes.append(
                    f"Forward mode was not checked: JAX cannot compute `fn`'s JVP "
                    f"({_first_line(exc)}). Reverse mode was."
                    if not no_forward
                    else "Forward mode was not checked: `fn` uses a custom_vjp, which JAX "
                    "cannot differentiate in forward mode. Reverse mode (its bwd) was."
                )
                return None
            if no_forward:
                raise InputError(
                    "`modes` asks for forward mode, but `fn` uses a custom_vjp, which JAX "
                    "cannot differentiate in forward mode (jax.jvp). Pass `modes=('rev',)`."
                ) from exc
            raise UserCodeError(
                f"Computing `fn`'s JVP with jax.jvp raised {type(exc).__name__}: {exc}\n"
                "jax.jvp runs `fn`'s custom_jvp rules: check what they return.",
                function="jvp",
            ) from exc
        return [np.asarray(t, dtype=np.float64) for t in tangents], jvps


def _tangent(value: _Array, dtype: np.dtype[Any], rng: np.random.Generator) -> _Array:
    """Draw a signed random tangent scaled like a directional probe, exact in the leaf's dtype."""
    size = max(value.size, 1)
    raw = rng.choice([-1.0, 1.0], size=value.shape) * rng.uniform(0.5, 1.5, size=value.shape)
    scaled = raw * np.maximum(1.0, np.abs(value.astype(np.float64))) / math.sqrt(size)
    return np.asarray(scaled.astype(dtype).astype(np.float64))


def _same_value(batched: float, single: float) -> bool:
    """Tell whether a batched value is the single one, by gradproof.check's test of `loss_batch`."""
    if not math.isfinite(single):
        return not math.isfinite(batched)
    tolerance = 64 * float(np.finfo(np.float64).eps) * max(abs(single), 1.0) + 1e-6 * abs(single)
    return abs(batched - single) <= tolerance


def _numpy(value: Any) -> _Array:
    """Read a loss value into numpy; bfloat16 and other JAX-only dtypes as float32."""
    array = np.asarray(value)
    return array if array.dtype in _NUMPY_FLOATS else array.astype(np.float32)


def _fn_error(exc: Exception) -> UserCodeError:
    return UserCodeError(
        f"`fn` raised {type(exc).__name__} at the given arguments: {exc}", function="fn"
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    if not text:
        return type(exc).__name__
    line = text[0] if len(text[0]) <= 200 else text[0][:200].rsplit(" ", 1)[0] + " ..."
    return f"{type(exc).__name__}: {line}"


# -- the numpy side: what gradproof.check calls ---------------------------------------------------
class _Loss:
    """``loss(params)`` and ``loss.batch(stacked)`` for gradproof.check."""

    def __init__(
        self,
        program: _Program,
        cotangent: Sequence[_Array],
        points: Callable[[Any], list[_Array]],
    ) -> None:
        self.program = program
        self.cotangent = list(cotangent)
        self.points = points

    def __call__(self, params: Any) -> _Array:
        return self.program.value(self.points(params), self.cotangent)

    def batch(self, params: Any) -> _Array:
        """Return the loss at every stacked point (leaves with a leading axis ``B``)."""
        return self.program.batch(self.points(params), self.cotangent)


class _Along:
    """The leaves at ``x0 + t_k v_k`` from gradproof's container of ``t`` (Note [Forward mode])."""

    def __init__(self, arguments: _Arguments, tangents: list[_Array]) -> None:
        self.arguments = arguments
        self.base = [v.astype(np.float64) for v in arguments.values]
        self.tangents = tangents

    def __call__(self, params: Any) -> list[_Array]:
        steps = self.arguments.extract(params[JVP_PREFIX])
        out = []
        for t, base, tangent in zip(steps, self.base, self.tangents, strict=True):
            t = np.asarray(t)
            # One t per point: () for one point, (B,) for a batch of them.
            shaped = t.astype(np.float64).reshape(t.shape + (1,) * base.ndim)
            out.append((base + shaped * tangent).astype(t.dtype))
        return out


# -- the result -----------------------------------------------------------------------------------
def _merge(
    reverse: list[CheckResult], forward: CheckResult | None, notes: list[str], started: float
) -> CheckResult:
    """One result: the reverse check shown (the worst cotangent), forward reports appended."""
    rank = {Verdict.FAIL: 0, Verdict.INCONCLUSIVE: 1, Verdict.PASS: 2}
    checks = [*reverse, *([forward] if forward is not None else [])]
    if reverse:
        shown_at = min(range(len(reverse)), key=lambda i: (rank[reverse[i].verdict], i))
        shown = reverse[shown_at]
        if len(reverse) > 1:
            notes.append(
                f"Reverse mode was checked along {len(reverse)} random cotangents; the report "
                f"shows cotangent {shown_at + 1} ({shown.verdict.value})."
            )
    else:
        assert forward is not None
        shown = forward
    all_notes = [*notes, *shown.notes]
    if forward is not None and forward is not shown:
        all_notes += [f"Forward mode: {note}" for note in forward.notes]
    return dataclasses.replace(
        shown,
        params=shown.params
        + (forward.params if forward is not None and forward is not shown else ()),
        notes=tuple(dict.fromkeys(all_notes)),
        n_evals=sum(c.n_evals for c in checks),
        n_refined=sum(c.n_refined for c in checks),
        n_probes=sum(c.n_probes for c in checks),
        interrupted=any(c.interrupted for c in checks),
        seconds=time.perf_counter() - started,
    )
