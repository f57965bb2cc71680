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

Note [Second order]
    ``second_order=True`` (``check_grads(..., order=2)``) checks the derivative
    of the rules themselves. The first-order gradient along the cotangent
    ``u``, ``g(x) = VJP(fn)(x)(u)``, is a JAX function of the same arguments
    whose evaluation runs the ``bwd`` (or the transposed ``custom_jvp``
    rule); it is checked like `fn` itself, through ``<w, g(x)>`` for a random
    cotangent ``w``. Its VJP is reverse over reverse, its JVP forward over
    reverse, and the finite differences of ``g`` use the first-order rule
    only, so a rule whose values are right but whose own derivative is wrong
    (a ``stop_gradient`` inside it, residuals that do not depend on ``x``)
    fails here and nowhere else. The reports are named ``vjp_of_vjp.x`` and
    ``jvp_of_vjp.x``, with subject ``x``, under their own headings.

Note [Python scalars]
    ``check_function(f, 2., 3.)`` is how JAX's docs call ``jax.grad``. Python
    floats are usually configuration (an epsilon, a temperature), so by
    default only floating arrays are differentiated; but when the arguments
    hold no floating array at all, the Python floats are what there is to
    check, and they are checked, in float64. ``argnums`` (and
    :func:`check_grads`, which differentiates every argument as JAX's does)
    always include them.

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

from gradproof.errors import BackendUnavailableError

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

from gradproof.jax._check_grads import check_grads
from gradproof.jax._convert import _x64 as _x64  # re-exported: the tests use it
from gradproof.jax._function import DEFAULT_BATCH_SIZE, VMAP_MIN_ENTRIES, check_function
from gradproof.jax._loss import JVP_PREFIX, SECOND_JVP_PREFIX, SECOND_PREFIX
from gradproof.jax._options import MODES
from gradproof.jax._outputs import JACOBIAN_ROWS

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "JACOBIAN_ROWS",
    "JVP_PREFIX",
    "MODES",
    "SECOND_JVP_PREFIX",
    "SECOND_PREFIX",
    "VMAP_MIN_ENTRIES",
    "check_function",
    "check_grads",
]
