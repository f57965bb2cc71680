"""`fn` on the JAX side: compiled, batched and differentiated, and checked against itself.

See Note [Trust the compiled function], Note [Forward mode] and Note [x64] in
the docstring of :mod:`gradproof.jax`.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gradproof.errors import InputError, UserCodeError
from gradproof.jax._arguments import _Arguments
from gradproof.jax._convert import _Array, _first_line, _fn_error, _numpy, _x64

_CACHE_SIZE = 32
"""Compiled programs kept per process (Note [Compiled once per process])."""

_COMPILED: collections.OrderedDict[Any, _Compiled] = collections.OrderedDict()


class _Compiled:
    """The compiled scalar loss of one program, and its vmapped form once it is asked for."""

    def __init__(self, scalar: Callable[..., Any]) -> None:
        self.scalar_fn = scalar
        self.jitted: Callable[..., Any] = jax.jit(scalar)
        self._batched: Callable[..., Any] | None = None

    def batched(self, jit: bool) -> Callable[..., Any]:
        vmapped = jax.vmap(self.scalar_fn, in_axes=(0, None, None))
        if not jit:
            return vmapped
        if self._batched is None:
            self._batched = jax.jit(vmapped)
        return self._batched


def _compiled(key: Any, scalar: Callable[..., Any]) -> _Compiled:
    """Return the compiled program for `key`, compiling `scalar` only on the first request.

    Note [Compiled once per process]
        ``jax.jit`` caches what it compiles on the function object it wraps. A
        check builds its loss afresh, so without a cache of our own every check
        would trace and compile `fn` again: most of a warm check's time on a
        small function. The key is `fn` itself (by identity), `has_aux`, the
        order, and the arguments' structure and constants
        (:meth:`_Arguments.key`); JAX's own cache below it adds shapes and
        dtypes. A key that cannot be hashed (a numpy array among the constants)
        compiles its own program. The cache holds the last ``_CACHE_SIZE``
        programs, and with them their functions.
    """
    if key is None:
        return _Compiled(scalar)
    found = _COMPILED.get(key)
    if found is None:
        found = _COMPILED[key] = _Compiled(scalar)
        while len(_COMPILED) > _CACHE_SIZE:
            _COMPILED.popitem(last=False)
    else:
        _COMPILED.move_to_end(key)
    return found


def _build_outputs(
    fn: Callable[..., Any], arguments: _Arguments, has_aux: bool, order: int
) -> Callable[[Sequence[Any], Sequence[Any], Sequence[Any]], list[Any]]:
    """Return the output leaves as a function of (leaves, data, first-order cotangent).

    Order 1: `fn`'s own outputs. Order 2 (Note [Second order]): the VJP of the
    first-order cotangent, one gradient per differentiated leaf, which runs the
    rules' bwd (or the transposed custom_jvp rule) inside the function that
    the check differentiates again.
    """
    call = arguments.call

    def first(leaves: Sequence[Any], data: Sequence[Any], _: Sequence[Any] = ()) -> list[Any]:
        out = call(fn, leaves, data)
        return list(jax.tree_util.tree_leaves(out[0] if has_aux else out))

    if order == 1:
        return first

    def gradient(leaves: Sequence[Any], data: Sequence[Any], u: Sequence[Any]) -> list[Any]:
        _, pullback = jax.vjp(lambda moved: first(moved, data), list(leaves))
        cotangent = [jnp.asarray(c, dtype=out.dtype) for c, out in zip(u, _, strict=True)]
        return list(pullback(cotangent)[0])

    return gradient


class _Program:
    """`fn` as a scalar function of the differentiated leaves: compiled, batched, differentiated.

    With ``order=2`` the function is the first-order gradient along the
    cotangent `first` (Note [Second order]): its VJPs are reverse over
    reverse, its JVPs forward over reverse.
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        arguments: _Arguments,
        has_aux: bool,
        *,
        x64: bool,
        jit: bool,
        order: int = 1,
        first: Sequence[_Array] = (),
    ) -> None:
        self.fn = fn
        self.arguments = arguments
        self.has_aux = has_aux
        self.x64 = x64
        self.jit = jit
        self.order = order
        self.first = [np.asarray(u) for u in first]
        self.batch_size = 0
        self.baked = False
        self._compile(batched=False)
        self._linear: Callable[..., Any] | None = None
        self._pullback: Callable[..., Any] | None = None
        self._outputs_at: list[Any] = []

    def _compile(self, *, batched: bool) -> None:
        """Build the JAX functions, from the process cache (Note [Compiled once per process])."""
        self._outputs = _build_outputs(self.fn, self.arguments, self.has_aux, self.order)
        try:
            key: Any = (self.fn, self.has_aux, self.order, self.x64, self.arguments.key())
            hash(key)
        except TypeError:
            key = None
        self.compiled = _compiled(key, self._scalar_of)
        self.scalar: Callable[..., Any] = self.compiled.jitted if self.jit else self._scalar_of
        if self.baked:
            self.scalar = self._baked()
        self.batched: Callable[..., Any] | None = None
        if batched:
            self.batched = (
                jax.jit(jax.vmap(self.scalar, in_axes=(0, None, None)))
                if self.baked
                else self.compiled.batched(self.jit)
            )

    def __getstate__(self) -> dict[str, Any]:
        # Worker processes (executor=n) get `fn` and the arguments, and compile their own: JAX's
        # functions and linearizations do not pickle.
        transient = ("_outputs", "compiled", "scalar", "batched", "_linear", "_pullback")
        state = {k: v for k, v in self.__dict__.items() if k not in transient}
        state["_outputs_at"] = []
        state["has_batches"] = self.batched is not None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        batched = state.pop("has_batches")
        self.__dict__.update(state)
        self._linear = self._pullback = None
        self._compile(batched=batched)

    def outputs(self, leaves: Sequence[Any], data: Sequence[Any] | None = None) -> list[Any]:
        """Return the output leaves (order 2: the gradients) at the given differentiated leaves."""
        return self._outputs(leaves, self.arguments.data if data is None else data, self.first)

    def _scalar_of(
        self, leaves: Sequence[Any], data: Sequence[Any], cotangent: Sequence[Any]
    ) -> Any:
        # `cotangent` holds the cotangent of the outputs, then (order 2) the first-order one.
        n_out = len(cotangent) - len(self.first) if self.order == 2 else len(cotangent)
        outputs = self._outputs(leaves, data, cotangent[n_out:])
        terms = [
            jnp.sum(jnp.asarray(u, dtype=out.dtype) * out)
            for u, out in zip(cotangent[:n_out], outputs, strict=True)
        ]
        total = terms[0]
        for term in terms[1:]:
            total = total + term
        return total

    def _scalar(self, leaves: Sequence[Any], data: Sequence[Any], cotangent: Sequence[Any]) -> Any:
        return self._scalar_of(leaves, data, [*cotangent, *self.first])

    def _ready(self, leaves: Sequence[_Array]) -> list[Any]:
        """Numpy leaves as `fn` takes them: proxies cast back to their JAX dtype (bfloat16).

        Note [One dtype per program]
            With x64 (``precision="auto"``), float16 and float32 leaves go to the
            compiled function as float64 too. gradproof.check evaluates the loss
            at the given float32 point only to set up (its value, its
            repeatability, whether float64 copies agree with it) and then takes
            every finite difference with float64 copies; compiling `fn` a second
            time, for float32 inputs, for those few evaluations would cost as
            much as the rest of a small check's cold start, and more for a
            second-order program. The analytic derivatives are still computed
            at the leaves' own dtypes (Note [Cold start]); bfloat16 leaves,
            which numpy holds as float32 proxies, still go back as bfloat16.
        """
        out: list[Any] = []
        for leaf, proxy, dtype in zip(
            leaves, self.arguments.proxies, self.arguments.dtypes, strict=True
        ):
            if leaf.dtype == proxy and dtype != proxy:
                value = leaf.astype(dtype)
            elif self.x64 and leaf.dtype.itemsize < 8:
                value = leaf.astype(np.float64)
            else:
                value = leaf
            out.append(value if self.jit else jnp.asarray(value))
        return out

    def value(self, leaves: Sequence[_Array], cotangent: Sequence[_Array]) -> _Array:
        """Return the loss at one point, a numpy scalar of the dtype it was computed in."""
        with _x64(self.x64):
            return _numpy(
                self.scalar(self._ready(leaves), self.arguments.data, [*cotangent, *self.first])
            )

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
                out = self.batched(
                    self._ready(chunk), self.arguments.data, [*cotangent, *self.first]
                )
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
                if "nondiff_argnums" in str(exc) and self._bake(point, cotangent, expected, scale):
                    return
            else:
                rounding = math.sqrt(self._eps(compiled, output)) * scale
                if not abs(float(compiled) - expected) <= rounding:
                    reason = (
                        f"`jax.jit` of `fn` returned {float(compiled)!r} where `fn` itself "
                        f"returns {expected!r} (a miscompilation?)"
                    )
            if not reason:
                return
        self.jit = False
        self.scalar = self._scalar_of
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

    def _bake(
        self, point: list[_Array], cotangent: Sequence[_Array], expected: float, scale: float
    ) -> bool:
        """Compile with the data as constants: a ``nondiff_argnums`` rule refuses tracers there.

        Note [Data as constants]
            Floating arrays that are not differentiated are passed to the
            compiled function as arguments, so that large data does not slow
            compilation. A ``custom_vjp`` or ``custom_jvp`` that marks an array
            argument in ``nondiff_argnums`` refuses a tracer in that position
            (``UnexpectedTracerError``); its arrays are then baked into the
            compiled function as constants, which JAX accepts. This program is
            not shared with other checks (Note [Compiled once per process]).
        """
        self.scalar = self._baked()
        try:
            compiled = self.value(point, cotangent)
        except (KeyboardInterrupt, GeneratorExit):
            raise
        except Exception:
            return False
        rounding = math.sqrt(self._eps(compiled, self._outputs_at)) * scale
        self.baked = abs(float(compiled) - expected) <= rounding
        return self.baked

    def _eps(self, compiled: _Array, output: Sequence[Any]) -> float:
        """Return the coarsest machine epsilon of the values compared and the leaves.

        `fn`'s own outputs were computed from the leaves in their dtypes, the
        compiled value from float64 copies (Note [One dtype per program]): a
        float32 leaf times a float64 constant is a float64 output that only
        float32 rounding separates from the compiled one.
        """
        dtypes = [np.dtype(compiled.dtype), *(_numpy(o).dtype for o in output)]
        dtypes += list(self.arguments.proxies)
        return max(float(np.finfo(d).eps) for d in dtypes)

    def _baked(self) -> Callable[..., Any]:
        """Compile the scalar loss with the data as constants (Note [Data as constants])."""
        data = self.arguments.data
        scalar_of = self._scalar_of

        def baked(leaves: Sequence[Any], _: Sequence[Any], cotangent: Sequence[Any]) -> Any:
            return scalar_of(leaves, data, cotangent)

        return jax.jit(baked)

    def set_up_batches(
        self, batch_size: int, cotangent: Sequence[_Array], notes: list[str]
    ) -> None:
        """Compile the vmapped loss and test it against single points; else note the fallback.

        Tested on a batch of copies of the point (what gradproof.check tests first)
        and on a batch of distinct points near it (Note [Trust the compiled function]).
        """
        if self.baked:
            vmapped = jax.vmap(self.scalar, in_axes=(0, None, None))
            self.batched = jax.jit(vmapped)
        else:
            self.batched = self.compiled.batched(self.jit)
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

    def batch_options(self, loss_batch: Callable[..., Any]) -> dict[str, Any]:
        """`loss_batch` and `batch_size` for gradproof.check, when batching works."""
        if self.batched is None:
            return {}
        return {"loss_batch": loss_batch, "batch_size": self.batch_size}

    def differentiate(
        self, reverse: bool, forward: bool, *, explicit: bool, notes: list[str]
    ) -> list[_Array]:
        """Differentiate the outputs at the point once; return their values there.

        Note [Cold start]
            The first check of a process pays for compiling every operation
            JAX runs eagerly, one small program each (about 25 ms apiece on a
            CPU), which is most of what ``jax.test_util.check_grads`` costs too.
            So the outputs are linearized once (``jax.linearize``, which runs
            the ``custom_jvp`` rules), and reverse mode is the transpose of that
            linear function (what ``jax.vjp`` computes, without tracing `fn`
            again); `fn` is never called eagerly by itself (its output
            structure comes from ``jax.eval_shape``). Without forward mode, or
            for a ``custom_vjp`` (no forward mode), it is one ``jax.vjp``. These
            analytic values are never computed by our compiled functions (Note
            [Trust the compiled function]).
        """
        primals = list(self.arguments.primals)
        self._linear = None
        self._pullback = None
        self._forward = forward
        self._explicit = explicit
        with _x64(self.x64):
            if forward:
                try:
                    out, self._linear = jax.linearize(self.outputs, primals)
                except (KeyboardInterrupt, GeneratorExit):
                    raise
                except Exception as exc:
                    self._no_forward(exc, notes)
            try:
                if self._linear is None:
                    out, self._pullback = jax.vjp(self.outputs, primals)
                elif reverse or self.order == 1:  # second order reads the first's gradient
                    transposed = jax.linear_transpose(self._linear, primals)
                    self._pullback = transposed
            except (KeyboardInterrupt, GeneratorExit):
                raise
            except Exception as exc:
                raise self._vjp_error(exc) from exc
        self._outputs_at = list(out)
        return [np.asarray(o) for o in out]

    def _vjp_error(self, exc: Exception) -> UserCodeError:
        what = "gradient" if self.order == 1 else "second derivative (VJP of its VJP)"
        return UserCodeError(
            f"Computing `fn`'s {what} with jax.vjp raised {type(exc).__name__}: {exc}\n"
            "jax.vjp traces `fn` and runs its custom rules (a custom_vjp's bwd, a "
            "custom_jvp's rule): check what they return, and that `fn` can be "
            "differentiated by `jax.grad` at all.",
            function="vjp",
        )

    def _no_forward(self, exc: Exception, notes: list[str]) -> None:
        """Say why forward mode is not checked, or raise when it was asked for."""
        no_forward = isinstance(exc, TypeError) and "custom_vjp" in str(exc)
        if not self._explicit or self.order == 2:
            what = "Forward mode" if self.order == 1 else "Second order, forward over reverse,"
            notes.append(
                f"{what} was not checked: JAX cannot compute `fn`'s JVP "
                f"({_first_line(exc)}). Reverse mode was."
                if not no_forward
                else f"{what} was not checked: `fn` uses a custom_vjp, which JAX "
                "cannot differentiate in forward mode. Reverse mode (its bwd) was."
            )
            return
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

    def vjps(self, cotangents: list[list[_Array]]) -> list[list[_Array]]:
        """Return the analytic gradient for each cotangent: `fn`'s VJP, which runs its bwd rules."""
        assert self._pullback is not None, "differentiate() first"
        with _x64(self.x64):
            try:
                return [
                    [
                        np.asarray(g, dtype=np.float64)
                        for g in self._pullback(
                            [
                                # numpy, not jnp: an eager cast is one more compilation
                                np.asarray(c, dtype=o.dtype)
                                for c, o in zip(cotangent, self._outputs_at, strict=True)
                            ]
                        )[0]
                    ]
                    for cotangent in cotangents
                ]
            except (KeyboardInterrupt, GeneratorExit):
                raise
            except Exception as exc:
                raise self._vjp_error(exc) from exc

    def jvps(
        self, cotangent: Sequence[_Array], rng: np.random.Generator, notes: list[str]
    ) -> tuple[list[_Array], list[float]] | None:
        """Draw a random tangent per leaf and compute the JVPs along them (Note [Forward mode]).

        None when forward mode is not checked, with a note saying why. (JAX
        linearizes a ``custom_vjp`` function, and transposes it, but refuses to
        apply the linear function forward: that is where its lack of a
        forward mode shows.)
        """
        if self._linear is None:
            return None
        tangents = [
            _tangent(v, d, rng)
            for v, d in zip(self.arguments.values, self.arguments.dtypes, strict=True)
        ]
        # numpy arrays, not jnp: each eager jnp.zeros or cast compiles a program (Note [Cold
        # start]); JAX takes numpy arrays of the primals' dtypes as tangents.
        dtypes = [np.dtype(p.dtype) for p in self.arguments.primals]
        zeros = [np.zeros(p.shape, d) for p, d in zip(self.arguments.primals, dtypes, strict=True)]
        jvps = []
        with _x64(self.x64):
            try:
                for k, tangent in enumerate(tangents):
                    directions = list(zeros)
                    directions[k] = tangent.astype(dtypes[k])
                    moved = self._linear(directions)
                    jvps.append(
                        float(
                            sum(
                                np.sum(np.asarray(u, np.float64) * np.asarray(t, np.float64))
                                for u, t in zip(cotangent, moved, strict=True)
                            )
                        )
                    )
            except (KeyboardInterrupt, GeneratorExit):
                raise
            except Exception as exc:
                self._no_forward(exc, notes)
                return None
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
