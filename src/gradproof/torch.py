"""Check PyTorch gradients: custom autograd Functions, functions of tensors, modules.

:func:`check_function` checks the backward (and, on request, the forward-mode
and second-order rules) of a function of tensors; :func:`check_module` checks
the gradients of an ``nn.Module``'s parameters for a given loss. Both build a
numpy loss and its analytic gradient from torch autograd and hand them to
:func:`gradproof.check`, which gives every verdict: the result is the same
:class:`~gradproof.CheckResult` a numpy check returns, with notes on what this
adapter checked and found on its own.

Note [Checking a function of tensors]
    :func:`gradproof.check` judges the gradient of one scalar loss. The
    adapter builds that loss as a sum of terms, each a function of its own
    copy of the parameters, so that one check answers several questions and
    names each answer:

    - reverse mode: ``<u, fn(x)>`` for a fixed cotangent ``u``. Its gradient
      is the VJP ``torch.autograd.grad(fn(x), x, u)``, which runs the custom
      backward. For the full Jacobian there is one term per output entry
      ``i`` (``u`` the unit vector), and its copy of ``x`` is called
      ``d output[i]/d x``.
    - forward mode: ``sum_i fn(x + t_i v)_i`` over the entries of a parameter
      ``t`` at 0 (or ``<w, fn(x + t v)>`` for a scalar ``t``). Its gradient is
      the JVP along the tangent ``v``, entry by entry.
    - second order: ``<w, vjp(x, u)>`` as a function of ``x`` and ``u``. Its
      gradient comes from differentiating the backward (``create_graph=True``).

    A finite difference moves one coordinate of one copy, so it measures that
    copy's term alone: every other term keeps its value at the point, computed
    once (after checking that the function repeats itself there exactly). The
    terms are summed with :func:`math.fsum`, so the sum carries the rounding of
    one value the size of the total, which is what gradproof's error model
    assumes. Points already evaluated are looked up: the Jacobian's rows share
    their perturbed points, so the full Jacobian costs the forward passes of
    a single row.

Note [Random cotangents]
    Cotangents, tangents and weights have entries of random sign and size
    uniform in [0.5, 1.5) (Theano's ``verify_grad`` draws from [0.5, 1.5);
    Chainer floors small entries): every output entry then weighs at least
    half as much as it would in the Jacobian, so a wrong Jacobian entry shows in
    the VJP at half its size or more, and mixed signs keep errors of different
    rows from adding up into a pattern that hides them. Errors of several rows
    in the same input entry cancel only on a set of measure zero, which is
    why one cotangent is the default (``n_cotangents``): each further one
    costs a full sweep of the inputs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import re
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from gradproof.check import NondeterministicLossError, check
from gradproof.errors import BackendUnavailableError, GradproofError, InputError, UserCodeError
from gradproof.randomness import reseed
from gradproof.results import CheckResult
from gradproof.tree import format_index

try:
    import torch
    from torch.autograd import forward_ad
    from torch.func import functional_call
    from torch.func import vmap as torch_vmap
except ImportError as error:  # pragma: no cover - the test suite runs with torch installed
    if (error.name or "torch").partition(".")[0] != "torch":
        raise  # torch is there but something it needs is not: its own message says what
    raise BackendUnavailableError(
        "`gradproof.torch` checks PyTorch code, but PyTorch is not installed. Install it with "
        "`pip install torch`, or install gradproof with its PyTorch extra: "
        "`pip install 'gradproof[torch]'`.",
        framework="torch",
    ) from error

__all__ = ["CHECK_OPTIONS", "JACOBIAN_MAX_ENTRIES", "check_function", "check_module"]

JACOBIAN_MAX_ENTRIES = 16
"""With ``jacobian="auto"``, functions with at most this many output entries get the full Jacobian.

Each row is a copy of the inputs in the report, so 16 keeps the table short;
the rows share their forward passes (Note [Checking a function of tensors]).
"""

CHECK_OPTIONS = frozenset(
    {
        "atol",
        "batch_size",
        "eps",
        "executor",
        "max_evals",
        "method",
        "mode",
        "n_probes",
        "n_samples",
        "noise",
        "progress",
        "rel_step",
        "rtol",
        "time_budget",
    }
)
"""The options of :func:`gradproof.check` that the adapters pass through unchanged."""

JACOBIAN_CHOICES = ("auto", "full", "random")
PRECISIONS = ("auto", "native")

_CACHE_SIZE = 4096
"""Points whose projections are remembered (a few floats each)."""

_TORCH_TO_NUMPY: dict[torch.dtype, type[np.floating[Any]]] = {
    torch.float16: np.float16,
    torch.float32: np.float32,
    torch.float64: np.float64,
}

Array = npt.NDArray[Any]

# torch.autograd.forward_ad is not annotated.
_make_dual: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = forward_ad.make_dual
_unpack_dual: Callable[[torch.Tensor], Any] = forward_ad.unpack_dual


# -- public entry points ------------------------------------------------------------------------
def check_function(
    fn: Callable[..., Any],
    *inputs: Any,
    jacobian: str = "auto",
    n_cotangents: int = 1,
    forward: bool | None = None,
    second_order: bool = False,
    vmap: bool | None = None,
    precision: str = "auto",
    seed: int | None = None,
    **options: Any,
) -> CheckResult:
    """Check the gradients of a function of tensors (e.g. a custom ``autograd.Function``).

    Parameters
    ----------
    fn : callable ``fn(*inputs) -> Tensor or tuple of Tensor``
        The function whose backward is checked: a custom Function's ``apply``,
        or any function of tensors (a layer with custom parts inside).
    *inputs : torch.Tensor or other arguments, or one dict of them
        The point to check at, passed to `fn` in order and named ``input0``,
        ``input1``, ... by position; or a single dict, passed as keyword
        arguments (``fn(**inputs)``) and named by its keys. Every floating-point
        tensor that requires grad is checked; other tensors, integer tensors
        and other arguments are passed through unchanged. Never modified.
    jacobian : {"auto", "full", "random"}
        ``"full"`` checks the Jacobian row by row: one copy of the inputs per
        output entry, named ``d output[i]/d input0``, so the report says which
        output entry has a wrong gradient. ``"random"`` checks the VJP along
        `n_cotangents` random cotangents (Note [Random cotangents]), with the
        inputs under their own names. ``"auto"`` (default): ``"full"`` when the
        outputs have at most :data:`JACOBIAN_MAX_ENTRIES` entries in all.
    n_cotangents : int, optional
        Random cotangents in ``"random"`` mode; 1 by default, which catches a
        wrong backward with probability one (Note [Random cotangents]).
    forward : bool, optional
        Also check forward mode: the JVP along a random tangent against the
        finite-difference slope along it (parameters ``jvp(output)``). By default
        only when `fn` is the ``apply`` of a Function that defines ``jvp``.
    second_order : bool, optional
        Also check the backward's own backward: the gradient of
        ``<w, vjp(x, u)>`` with respect to the inputs and the cotangent,
        computed with ``create_graph=True`` (what ``gradgradcheck`` checks).
    vmap : bool, optional
        Evaluate the finite differences in batches through ``torch.func.vmap``
        (`batch_size` points per call). By default when `fn` supports it,
        which is tried once at the point; ``True`` requires it.
    precision : {"auto", "native"}
        ``"auto"`` (default): float16 and float32 tensors are checked through
        float64 copies when `fn` computes in float64 (a note says so), with
        float64's tolerances. ``"native"``: in their own dtype.
    seed : int, optional
        Re-seed Python's, numpy's and torch's generators before every call of
        `fn`, so that a random function (dropout) is checkable. Also seeds the
        random cotangents and tangents (0 when not given).
    **options
        Passed to :func:`gradproof.check`: `mode`, `method`, `eps`,
        `rel_step`, `rtol`, `atol`, `noise`, `max_evals`, `time_budget`,
        `n_probes`, `n_samples`, `executor`, `batch_size`, `progress`.

    Returns
    -------
    CheckResult
        One parameter report per checked input and question: ``input0``
        (random cotangent), ``d output[i]/d input0`` (Jacobian row ``i``),
        ``jvp(output)``, ``input0 (2nd order)`` and ``cotangent of output
        (2nd order)``. ``result.notes`` says what was checked and what the
        structural checks found (a backward that is not deterministic, that
        is not zero for a zero cotangent, or that overwrites its
        ``grad_output``).

    Raises
    ------
    InputError
        Before any finite difference: if `fn` is not callable, no input is a
        floating-point tensor that requires grad, `fn` returns no
        floating-point tensor, the backward returns a gradient of the wrong
        shape, dtype or device, or an option is invalid.
    NondeterministicLossError
        If `fn` returns different values at the same inputs (pass `seed`).
    UserCodeError
        If `fn` or its backward raises; the original exception is its
        ``__cause__``.

    See Also
    --------
    check_module : the parameters of an ``nn.Module``.
    gradproof.check : the numpy check that gives the verdicts.

    Notes
    -----
    See Note [Checking a function of tensors] in this module's source. A
    check makes about two calls of `fn` per input entry, and the rows of the
    full Jacobian share them: a perturbed point is evaluated once. The
    structural checks (before any finite difference) are described in
    ``docs/torch.md``.

    Examples
    --------
    >>> import torch
    >>> class Cube(torch.autograd.Function):
    ...     @staticmethod
    ...     def forward(ctx, x):
    ...         ctx.save_for_backward(x)
    ...         return x**3
    ...
    ...     @staticmethod
    ...     def backward(ctx, grad_output):
    ...         (x,) = ctx.saved_tensors
    ...         return grad_output * 2 * x**2  # bug: 3 * x**2
    >>> x = torch.tensor([1.0, -2.0], dtype=torch.float64, requires_grad=True)
    >>> result = check_function(Cube.apply, x)
    >>> result.suspects
    ('d output[0]/d input0', 'd output[1]/d input0')
    >>> result["d output[1]/d input0"].failures[0].name
    'd output[1]/d input0[1]'
    >>> check_function(Cube.apply, x, jacobian="random")["input0"].diagnosis.summary
    'analytic = 2/3 × numeric on every entry'
    """
    started = time.perf_counter()
    options = _check_options(options)
    _validate(jacobian, "jacobian", JACOBIAN_CHOICES)
    _validate(precision, "precision", PRECISIONS)
    if isinstance(n_cotangents, bool) or not isinstance(n_cotangents, int) or n_cotangents < 1:
        raise InputError(f"`n_cotangents` must be a positive integer; got {n_cotangents!r}.")
    if not callable(fn):
        raise InputError(
            f"`fn` must be a function of tensors; got a {type(fn).__name__}. Pass e.g. "
            "`MyFunction.apply` or `lambda x, w: my_layer(x, w)`."
        )
    rng = np.random.default_rng(0 if seed is None else seed)
    problem = _Problem.build(fn, inputs, precision=precision, seed=seed)
    full = jacobian == "full" or (
        jacobian == "auto" and problem.outputs.size <= JACOBIAN_MAX_ENTRIES
    )
    problem.check_structure(_random_like(rng, (problem.outputs.size,), problem))
    families: list[_Family] = [
        _Reverse.build(problem, full=full, n_cotangents=n_cotangents, rng=rng)
    ]
    if forward is None:
        forward = _defines_jvp(fn)
    if forward:
        families.append(_Forward.build(problem, full=full, rng=rng))
    if second_order:
        families.append(_SecondOrder.build(problem, rng=rng))
    notes = [*(family.description for family in families), *problem.notes]
    combined = _Combined(families)
    loss_batch = combined.loss_batch if _use_vmap(vmap, combined.trials(), notes) else None
    options = _drop_batch_size(options, loss_batch, notes)
    result = _run_check(
        combined.loss,
        combined.gradient,
        combined.params(),
        combined.names,
        loss_batch=loss_batch,
        seed=seed,
        options=options,
    )
    notes.append(
        f"`fn` ran {problem.n_forward} times forward and its backward {problem.n_backward} "
        f"times ({result.n_evals} loss evaluations; points already evaluated are reused)."
    )
    return dataclasses.replace(
        result, notes=(*result.notes, *notes), seconds=time.perf_counter() - started
    )


def check_module(
    module: torch.nn.Module,
    inputs: Any,
    loss_fn: Callable[[Any], torch.Tensor],
    *,
    vmap: bool | None = None,
    precision: str = "auto",
    seed: int | None = None,
    **options: Any,
) -> CheckResult:
    """Check the gradients of an ``nn.Module``'s parameters for a given input and loss.

    Parameters
    ----------
    module : torch.nn.Module
        The module, with whatever custom layers it contains. It is evaluated
        with ``torch.func.functional_call`` on copies of its parameters and
        buffers, so neither it nor its state changes (BatchNorm's running
        statistics included), and in the mode it is in (``train()`` or
        ``eval()``).
    inputs : torch.Tensor, or tuple or list of arguments
        The batch: ``module(*inputs)``. Not checked; floating-point tensors
        follow the module's precision.
    loss_fn : callable ``loss_fn(output) -> scalar tensor``
        Turns the module's output into the loss, e.g.
        ``lambda out: torch.nn.functional.cross_entropy(out, target)``.
    vmap : bool, optional
        Evaluate the finite differences in batches through ``torch.func.vmap``.
        By default when the module supports it (BatchNorm in training mode and
        dropout do not); ``True`` requires it.
    precision : {"auto", "native"}
        ``"auto"`` (default): a float16 or float32 module is checked through
        float64 copies of its parameters, buffers and inputs, when it computes
        in float64 (a note says so). ``"native"``: in its own dtype.
    seed : int, optional
        Re-seed Python's, numpy's and torch's generators before every
        evaluation, so that a module with dropout is checkable.
    **options
        Passed to :func:`gradproof.check` (see :data:`CHECK_OPTIONS`).

    Returns
    -------
    CheckResult
        One parameter report per parameter that requires grad, named as
        ``module.named_parameters()`` names it (``encoder.layers.0.weight``).
        Frozen parameters and buffers are not checked.

    Raises
    ------
    InputError
        If no parameter requires grad, `loss_fn` does not return a real scalar
        tensor that depends on the parameters, or an option is invalid.
    NondeterministicLossError
        If the loss differs between two evaluations at the same parameters
        (pass `seed` for dropout).
    UserCodeError
        If the module, `loss_fn` or a backward raises.

    See Also
    --------
    check_function : a function of tensors, with forward mode and second order.

    Examples
    --------
    >>> import torch
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))
    >>> x = torch.randn(5, 3)
    >>> result = check_module(net, x, lambda out: out.pow(2).mean())
    >>> result.passed, [p.name for p in result.params]
    (True, ['0.weight', '0.bias', '2.weight', '2.bias'])
    """
    started = time.perf_counter()
    options = _check_options(options)
    _validate(precision, "precision", PRECISIONS)
    if not isinstance(module, torch.nn.Module):
        raise InputError(
            f"`module` must be a torch.nn.Module; got a {type(module).__name__}. For a function "
            "of tensors use `gradproof.torch.check_function`."
        )
    if not callable(loss_fn):
        raise InputError(
            f"`loss_fn` must turn the module's output into a scalar loss; got a "
            f"{type(loss_fn).__name__}. Pass e.g. `lambda out: out.pow(2).mean()`."
        )
    problem = _ModuleProblem.build(module, inputs, loss_fn, precision=precision, seed=seed)
    problem.check_structure()
    notes = list(problem.notes)
    loss_batch = problem.loss_batch if _use_vmap(vmap, problem.trials(), notes) else None
    options = _drop_batch_size(options, loss_batch, notes)
    result = _run_check(
        problem.loss,
        problem.gradient,
        problem.params(),
        problem.names,
        loss_batch=loss_batch,
        seed=seed,
        options=options,
    )
    return dataclasses.replace(
        result, notes=(*result.notes, *notes), seconds=time.perf_counter() - started
    )


# -- validation ---------------------------------------------------------------------------------
def _check_options(options: Mapping[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(options) - CHECK_OPTIONS)
    if unknown:
        extra = (
            " The adapter builds `loss_batch` itself (pass `vmap=`) and handles `precision` "
            "before calling gradproof.check."
            if {"loss_batch"} & set(unknown)
            else ""
        )
        raise InputError(
            f"Unknown option{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}; "
            f"the options passed to gradproof.check are {', '.join(sorted(CHECK_OPTIONS))}.{extra}"
        )
    return dict(options)


def _validate(value: object, label: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        listed = ", ".join(repr(c) for c in choices)
        raise InputError(f"`{label}` must be one of {listed}; got {value!r}.")


def _defines_jvp(fn: Callable[..., Any]) -> bool:
    """Whether `fn` is the ``apply`` of an ``autograd.Function`` that overrides ``jvp``."""
    owner = getattr(fn, "__self__", None)
    return (
        isinstance(owner, type)
        and issubclass(owner, torch.autograd.Function)
        and owner.jvp is not torch.autograd.Function.jvp
    )


def _describe_error(error: BaseException) -> str:
    """Name an exception by its type and the first sentence of its message."""
    lines = str(error).strip().splitlines()
    sentence = lines[0].split(". ")[0].rstrip(".") if lines else ""
    return f"{type(error).__name__}: {sentence}"


# -- tensors and arrays -------------------------------------------------------------------------
def _numpy_dtype(dtype: torch.dtype, name: str) -> type[np.floating[Any]]:
    if dtype not in _TORCH_TO_NUMPY:
        raise InputError(
            f"`{name}` has dtype {dtype}, which numpy cannot hold for the finite differences; "
            "use precision='auto' (float64 copies) or convert it with `.double()`."
        )
    return _TORCH_TO_NUMPY[dtype]


def _to_numpy(tensor: torch.Tensor) -> Array:
    return np.array(tensor.detach().cpu().numpy(), copy=True)


def _to_torch(array: Array, like: torch.Tensor) -> torch.Tensor:
    """Copy an array into a new tensor (never a view of gradproof's vector) like `like`."""
    return torch.tensor(np.asarray(array), dtype=like.dtype, device=like.device)


def _key(arrays: Sequence[Array]) -> bytes:
    """Identify a point by a digest of its bytes: the cache holds digests, not copies."""
    digest = hashlib.blake2b(digest_size=16)
    for array in arrays:
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.digest()


def _random_like(
    rng: np.random.Generator, shape: tuple[int, ...], problem: _Problem | None = None
) -> torch.Tensor:
    """Random signs times sizes uniform in [0.5, 1.5) (Note [Random cotangents]), float64."""
    values = rng.choice([-1.0, 1.0], size=shape) * rng.uniform(0.5, 1.5, size=shape)
    device = problem.device if problem is not None else None
    return torch.tensor(values, dtype=torch.float64, device=device)


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bitwise equality, NaN equal to NaN."""
    return bool(((a == b) | (torch.isnan(a) & torch.isnan(b))).all())


def _largest(
    tensors: Sequence[torch.Tensor | None], names: Sequence[str]
) -> tuple[float, str] | None:
    """Return the largest absolute entry of some tensors and its name (None if all are 0)."""
    best: tuple[float, str] | None = None
    for tensor, name in zip(tensors, names, strict=True):
        if tensor is None or tensor.numel() == 0:
            continue
        flat = tensor.detach().abs().reshape(-1).to(torch.float64)
        i = int(torch.argmax(torch.nan_to_num(flat, nan=math.inf)))
        value = float(flat[i])
        if value != 0 and (best is None or value > best[0] or math.isnan(value)):
            index = tuple(int(j) for j in np.unravel_index(i, tuple(tensor.shape)))
            best = (value, format_index(name, index))
    return best


def _largest_difference(
    first: Sequence[torch.Tensor], second: Sequence[torch.Tensor], names: Sequence[str]
) -> tuple[float, str] | None:
    return _largest([a - b for a, b in zip(first, second, strict=True)], names)


# -- a function of tensors ----------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class _Outputs:
    """Which of a function's outputs are checked, with their names and shapes."""

    positions: tuple[int | None, ...]  # None: the function returned a single tensor
    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    dtypes: tuple[torch.dtype, ...]
    skipped: tuple[str, ...]

    @property
    def sizes(self) -> list[int]:
        return [math.prod(shape) for shape in self.shapes]

    @property
    def size(self) -> int:
        return sum(self.sizes)

    def entry_names(self) -> list[str]:
        """Name every output entry, in the flat order of :meth:`_Problem.flat`."""
        names = []
        for name, shape in zip(self.names, self.shapes, strict=True):
            for i in range(math.prod(shape)):
                index = np.unravel_index(i, shape) if shape else ()
                names.append(format_index(name, tuple(int(j) for j in index)))
        return names

    @classmethod
    def read(cls, raw: object) -> _Outputs:
        if isinstance(raw, torch.Tensor):
            items: list[tuple[int | None, str, object]] = [(None, "output", raw)]
        elif isinstance(raw, (tuple, list)):
            items = [(i, f"output{i}", value) for i, value in enumerate(raw)]
        else:
            raise InputError(
                f"`fn` returned a {type(raw).__name__}; expected a tensor or a tuple of "
                "tensors, whose gradients its backward computes. Return torch tensors (e.g. "
                "`torch.as_tensor(value)`), not Python numbers or numpy arrays."
            )
        kept: list[tuple[int | None, str, torch.Tensor]] = []
        skipped = []
        for position, name, value in items:
            if not isinstance(value, torch.Tensor):
                skipped.append(f"{name} ({type(value).__name__})")
            elif value.is_complex():
                raise InputError(
                    f"`fn` returned a complex tensor as `{name}`; gradproof checks real "
                    "outputs. Return `torch.view_as_real(...)` of it instead."
                )
            elif not value.is_floating_point():
                skipped.append(f"{name} ({value.dtype})")
            else:
                kept.append((position, name, value))
        if not kept:
            raise InputError(
                "`fn` returned no floating-point tensor "
                f"({', '.join(skipped) or 'an empty tuple'}); only floating-point outputs "
                "have gradients. Return the differentiable result (integer results such as "
                "indices from argmax have none)."
            )
        return cls(
            positions=tuple(p for p, _, _ in kept),
            names=tuple(n for _, n, _ in kept),
            shapes=tuple(tuple(t.shape) for _, _, t in kept),
            dtypes=tuple(t.dtype for _, _, t in kept),
            skipped=tuple(skipped),
        )

    def select(self, raw: object) -> list[torch.Tensor]:
        if self.positions == (None,):
            tensors = [raw]
        elif isinstance(raw, (tuple, list)):
            tensors = [raw[p] for p in self.positions if p is not None and p < len(raw)]
        else:
            tensors = []
        shapes = [tuple(t.shape) for t in tensors if isinstance(t, torch.Tensor)]
        if len(shapes) != len(self.shapes) or any(
            s != e for s, e in zip(shapes, self.shapes, strict=True)
        ):
            raise InputError(
                f"`fn` returned outputs of shapes {shapes} at a perturbed point, but "
                f"{list(self.shapes)} at the given inputs; a checked function must keep its "
                "output structure and shapes when its inputs change slightly."
            )
        return [t for t in tensors if isinstance(t, torch.Tensor)]


class _Problem:
    """A function of tensors at a point: how to call it, what it returns, its backward."""

    def __init__(
        self,
        fn: Callable[..., Any],
        names: list[str],
        values: list[Any],
        keyword: bool,
        checked: list[int],
        seed: int | None,
    ) -> None:
        self.fn = fn
        self.arg_names = names
        self.values = values
        self.keyword = keyword
        self.checked = checked
        self.seed = seed
        self.notes: list[str] = []
        self.n_forward = 0
        self.n_backward = 0
        self.outputs: _Outputs

    @property
    def names(self) -> list[str]:
        return [self.arg_names[i] for i in self.checked]

    @property
    def bases(self) -> list[torch.Tensor]:
        return [self.values[i] for i in self.checked]

    @property
    def device(self) -> torch.device:
        device: torch.device = self.bases[0].device
        return device

    def base_arrays(self) -> list[Array]:
        return [_to_numpy(t) for t in self.bases]

    # -- set-up ---------------------------------------------------------------------------------
    @classmethod
    def build(
        cls, fn: Callable[..., Any], inputs: tuple[Any, ...], *, precision: str, seed: int | None
    ) -> _Problem:
        if not inputs:
            raise InputError(
                "`check_function` got no inputs: pass the point to check at after the "
                "function, e.g. `check_function(fn, x, w)` with `x.requires_grad_()`."
            )
        keyword = len(inputs) == 1 and isinstance(inputs[0], Mapping)
        if keyword:
            mapping = inputs[0]
            bad = [k for k in mapping if not isinstance(k, str)]
            if bad:
                raise InputError(
                    f"A dict of inputs is passed as keyword arguments, so its keys must be "
                    f"strings; got {bad[0]!r}. Use the names of `fn`'s parameters."
                )
            names, values = list(mapping.keys()), list(mapping.values())
        else:
            names = [f"input{i}" for i in range(len(inputs))]
            values = list(inputs)
        checked = [
            i
            for i, v in enumerate(values)
            if isinstance(v, torch.Tensor) and v.requires_grad and v.is_floating_point()
        ]
        for i, v in enumerate(values):
            if isinstance(v, torch.Tensor) and v.requires_grad and v.is_complex():
                raise InputError(
                    f"`{names[i]}` is a complex tensor; gradproof checks real inputs. Pass "
                    f"`torch.view_as_real({names[i]})` and rebuild it inside `fn`."
                )
        if not checked:
            tensors = [n for n, v in zip(names, values, strict=True) if isinstance(v, torch.Tensor)]
            raise InputError(
                "No input is a floating-point tensor that requires grad "
                f"({', '.join(tensors) or 'no tensors at all'}), so there is no gradient to "
                "check. Call `.requires_grad_()` on the inputs whose gradients you want checked, "
                "e.g. `x = torch.randn(3, dtype=torch.float64, requires_grad=True)`."
            )
        problem = cls(fn, names, values, keyword, checked, seed)
        passed = [
            n
            for i, (n, v) in enumerate(zip(names, values, strict=True))
            if i not in checked and isinstance(v, torch.Tensor) and v.is_floating_point()
        ]
        if passed:
            problem.notes.append(
                f"{', '.join(f'`{n}`' for n in passed)} do{'es' if len(passed) == 1 else ''} "
                "not require grad: passed through unchanged, not checked."
            )
        problem._set_precision(precision)
        return problem

    def _set_precision(self, precision: str) -> None:
        # Copies: nothing `fn` does to its arguments can reach the caller's tensors.
        native = [v.detach().clone() if isinstance(v, torch.Tensor) else v for v in self.values]
        low = sorted(
            {str(v.dtype).removeprefix("torch.") for v in native if _is_low_float(v)},
        )
        if precision == "auto" and low:
            self.values = [v.detach().to(torch.float64) if _is_low_float(v) else v for v in native]
            try:
                outputs = _Outputs.read(self._call(self.bases))
            except Exception as exc:  # the function refuses float64: check it as it is
                reason = _describe_error(exc)
            else:
                if all(d == torch.float64 for d in outputs.dtypes):
                    self.outputs = outputs
                    self.notes.append(
                        f"The {' and '.join(low)} tensors were checked through float64 copies: "
                        "`fn` and its backward ran in float64, and the gradients are judged "
                        "with float64's tolerance."
                    )
                    return
                reason = f"it returned {', '.join(sorted({str(d) for d in outputs.dtypes}))}"
            self.notes.append(
                f"`fn` did not compute in float64 when given float64 copies ({reason}), so "
                f"it was checked in {' and '.join(low)} with that precision's tolerance."
            )
        self.values = native
        for name, value in zip(self.names, self.bases, strict=True):
            _numpy_dtype(value.dtype, name)
        self.outputs = _Outputs.read(self._call(self.bases))

    # -- calling --------------------------------------------------------------------------------
    def _call(self, checked: Sequence[torch.Tensor]) -> Any:
        # Fresh copies of the other tensors too: a function that updates an argument in place
        # must not change what the next call sees.
        values = [v.clone() if isinstance(v, torch.Tensor) else v for v in self.values]
        for i, value in zip(self.checked, checked, strict=True):
            values[i] = value
        if self.seed is not None:
            reseed(self.seed)
        self.n_forward += 1
        try:
            if self.keyword:
                return self.fn(**dict(zip(self.arg_names, values, strict=True)))
            return self.fn(*values)
        except (KeyboardInterrupt, GeneratorExit):
            raise
        except Exception as exc:
            raise UserCodeError(f"`fn` raised {_describe_error(exc)}", function="loss") from exc

    def forward(self, checked: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Return the checked outputs of `fn` at `checked`."""
        return self.outputs.select(self._call(checked))

    def flat(self, outputs: Sequence[torch.Tensor]) -> torch.Tensor:
        """All checked output entries in one float64 vector."""
        return torch.cat([o.reshape(-1).to(torch.float64) for o in outputs])

    def tensors(self, arrays: Sequence[Array]) -> list[torch.Tensor]:
        return [_to_torch(a, like) for a, like in zip(arrays, self.bases, strict=True)]

    def leaves(self) -> list[torch.Tensor]:
        """Fresh leaf copies of the checked inputs that require grad."""
        return [b.detach().clone().requires_grad_(True) for b in self.bases]

    def split(self, vector: torch.Tensor) -> list[torch.Tensor]:
        """Cut a flat vector over the outputs into tensors of the outputs' shapes and dtypes."""
        pieces = torch.split(vector, self.outputs.sizes)
        return [
            p.reshape(shape).to(dtype)
            for p, shape, dtype in zip(
                pieces, self.outputs.shapes, self.outputs.dtypes, strict=True
            )
        ]

    def vjp(
        self,
        outputs: Sequence[torch.Tensor],
        inputs: Sequence[torch.Tensor],
        cotangents: Sequence[torch.Tensor],
        *,
        create_graph: bool = False,
        retain_graph: bool = False,
    ) -> list[torch.Tensor]:
        """Run the backward of `outputs` with `cotangents`; zeros where autograd gives None."""
        pairs = [(o, c) for o, c in zip(outputs, cotangents, strict=True) if o.requires_grad]
        if not pairs:
            return [torch.zeros_like(x) for x in inputs]
        self.n_backward += 1
        try:
            grads = torch.autograd.grad(
                [o for o, _ in pairs],
                list(inputs),
                grad_outputs=[c for _, c in pairs],
                create_graph=create_graph,
                retain_graph=retain_graph or create_graph,
                allow_unused=True,
            )
        except RuntimeError as exc:
            raise _backward_error(exc, self.names) from exc
        return [torch.zeros_like(x) if g is None else g for g, x in zip(grads, inputs, strict=True)]

    # -- structural checks ----------------------------------------------------------------------
    def check_structure(self, cotangent: torch.Tensor) -> None:
        """Repeatability, shapes, dtypes and devices, linearity at zero, grad_output left alone."""
        first = self.flat(self.forward(self.bases))
        second = self.flat(self.forward(self.bases))
        if not _same(first, second):
            differs = _largest_difference([first], [second], ["output"])
            raise NondeterministicLossError(
                f"`fn` returned different outputs at the same inputs (largest difference "
                f"{differs[0] if differs else float('nan'):.3g} at entry "
                f"{differs[1] if differs else '?'} of its flattened outputs), so finite "
                "differences would measure its randomness, not its slope. Typical causes are "
                "dropout, random sampling and nondeterministic GPU kernels. "
                + (
                    f"It does so even with `seed={self.seed}`: its randomness does not come "
                    "from torch's, numpy's or Python's global generators."
                    if self.seed is not None
                    else "Pass `seed=` so that every call re-seeds torch's generators, or "
                    "disable the randomness (`torch.use_deterministic_algorithms(True)`)."
                )
            )
        leaves = self.leaves()
        outputs = self.forward(leaves)
        pieces = self.split(cotangent)
        given = [p.clone() for p in pieces]
        grads = self.vjp(outputs, leaves, given, retain_graph=True)
        self._require_shapes(grads)
        changed = _largest_difference(given, pieces, self.outputs.names)
        if changed is not None:
            self.notes.append(
                f"The backward modified its `grad_output` in place ({changed[1]} changed by "
                f"{changed[0]:.3g}). Autograd hands the same gradient tensor to every branch "
                "that uses the output, so other branches then get a wrong gradient. Compute "
                "into a new tensor: `grad_output * d` instead of `grad_output.mul_(d)`."
            )
        again = self.vjp(outputs, leaves, [p.clone() for p in pieces], retain_graph=True)
        differs = _largest_difference(grads, again, self.names)
        if differs is not None:
            self.notes.append(
                f"The backward is not deterministic: two backward passes through the same "
                f"graph with the same cotangent differ by up to {differs[0]:.3g} (at "
                f"{differs[1]}); gradcheck calls this 'not reentrant'. The finite differences "
                "judged one of them. If it comes from atomic additions on a GPU, "
                "`torch.use_deterministic_algorithms(True)` removes it; otherwise look for "
                "state the backward changes (saved tensors modified in place)."
            )
        zero = self.vjp(outputs, leaves, [torch.zeros_like(p) for p in pieces])
        nonzero = _largest(zero, self.names)
        if nonzero is not None:
            self.notes.append(
                f"With a zero cotangent the backward returned nonzero gradients "
                f"(|{nonzero[1]}| = {nonzero[0]:.3g}). A backward is linear in `grad_output`: "
                "look for a term it adds without multiplying by `grad_output`."
            )

    def _require_shapes(self, grads: Sequence[torch.Tensor]) -> None:
        for name, grad, base in zip(self.names, grads, self.bases, strict=True):
            wrong = [
                f"{what} {got}, expected {want}"
                for what, got, want in (
                    ("shape", tuple(grad.shape), tuple(base.shape)),
                    ("dtype", grad.dtype, base.dtype),
                    ("device", grad.device, base.device),
                )
                if got != want
            ]
            if wrong:
                raise InputError(
                    f"The backward returned a gradient for `{name}` with {'; '.join(wrong)}. "
                    "A gradient has its input's shape, dtype and device: return one "
                    f"gradient per input of `fn`, built like `torch.zeros_like({name})`."
                )


def _is_low_float(value: object) -> bool:
    return (
        isinstance(value, torch.Tensor) and value.is_floating_point() and value.dtype.itemsize < 8
    )


def _backward_error(
    exc: RuntimeError, names: Sequence[str], *, second_order: bool = False
) -> GradproofError:
    """Turn a failing backward into InputError (a malformed gradient) or UserCodeError."""
    message = str(exc)
    shape = re.search(r"invalid gradient at index (\d+) - (.*)", message)
    if shape:
        index = int(shape.group(1))
        which = f"`{names[index]}`" if index < len(names) else f"input {index}"
        return InputError(
            f"The backward returned a malformed gradient for {which}: {shape.group(2).strip()}. "
            "A gradient has its input's shape, dtype and device; if its shape is transposed, "
            "check the order of the product in the backward (`grad_output @ w.T`, not `w @ ...`)."
        )
    if second_order and ("once_differentiable" in message or "does not require grad" in message):
        return InputError(
            f"The backward cannot be differentiated ({_describe_error(exc)}), so its second "
            "order cannot be checked. Write the backward with differentiable torch "
            "operations (no `@once_differentiable`), or leave `second_order=False`."
        )
    return UserCodeError(f"The backward raised {_describe_error(exc)}", function="grad")


# -- the terms of the combined loss -------------------------------------------------------------
class _Family:
    """Terms of the combined loss, each with its own copy of the parameters."""

    description: str
    aliases: list[list[str]]  # per term: the parameter blocks it reads
    display: dict[str, str]  # block alias -> the name shown in the report
    base_points: list[list[Array]]  # per term: its blocks at the point
    base_values: list[float]  # per term: its value at the point

    def evaluate(self, requests: list[tuple[int, list[Array]]], batched: bool) -> list[float]:
        """Return the values of terms at moved points, given as ``(term, blocks)`` pairs."""
        raise NotImplementedError

    def gradient(self) -> dict[str, Array]:
        """Return the analytic gradient of every block at the point, from autograd."""
        raise NotImplementedError

    def batchable(self) -> Callable[[], None] | None:
        """Return a trial of the batched evaluation, or None if this family never batches."""
        return None


class _Reverse(_Family):
    """``<u_t, fn(x)>`` for cotangents ``u_t``: random ones, or the Jacobian's unit rows."""

    def __init__(
        self, problem: _Problem, cotangents: torch.Tensor | None, labels: list[str]
    ) -> None:
        self.problem = problem
        self.cotangents = cotangents  # (terms, output entries), float64; None: the unit rows
        self.cache: OrderedDict[bytes, Array] = OrderedDict()
        self.batched_fn: Callable[..., torch.Tensor] | None = None
        base = problem.base_arrays()
        self.aliases, self.display, self.base_points = [], {}, []
        for t, label in enumerate(labels):
            blocks: list[str] = []
            for name in problem.names:
                alias = f"gpt{t}r{len(blocks)}"
                self.display[alias] = label.format(input=name)
                blocks.append(alias)
            self.aliases.append(blocks)
            self.base_points.append([a.copy() for a in base])
        self.base_values = [float(v) for v in self._project(problem.bases)]
        self.cache[_key(base)] = np.array(self.base_values)

    @classmethod
    def build(
        cls, problem: _Problem, *, full: bool, n_cotangents: int, rng: np.random.Generator
    ) -> _Reverse:
        size = problem.outputs.size
        if full:
            entries = problem.outputs.entry_names()
            labels = ["{input}"] if size == 1 else [f"d {e}/d {{input}}" for e in entries]
            reverse = cls(problem, None, labels)
            reverse.description = (
                "Reverse mode (VJP): the gradient of `fn`"
                if size == 1
                else f"Reverse mode (VJP): the full Jacobian, one output entry at a time ({size} "
                "entries): `d output[i]/d x` is the gradient of output entry i"
            ) + ", computed by the backward with unit cotangents."
            return reverse
        labels = ["{input}"] + [f"{{input}} (cotangent {k + 1})" for k in range(1, n_cotangents)]
        cotangents = torch.stack([_random_like(rng, (size,), problem) for _ in range(n_cotangents)])
        reverse = cls(problem, cotangents, labels)
        reverse.description = (
            f"Reverse mode (VJP): the gradient of <u, output> for {n_cotangents} random "
            f"cotangent{'s' if n_cotangents > 1 else ''} u over the {size} output entries "
            "(entries of random sign and size in [0.5, 1.5)), computed by the backward."
        )
        return reverse

    def _project(self, inputs: Sequence[torch.Tensor]) -> Array:
        with torch.no_grad():
            return _to_numpy(self._apply(self.problem.flat(self.problem.forward(inputs))))

    def _apply(self, flat: torch.Tensor) -> torch.Tensor:
        """Project the outputs on every term's cotangent (the identity for the Jacobian)."""
        return flat if self.cotangents is None else self.cotangents @ flat

    def _cotangent(self, t: int) -> torch.Tensor:
        if self.cotangents is not None:
            return self.cotangents[t]
        unit = torch.zeros(
            self.problem.outputs.size, dtype=torch.float64, device=self.problem.device
        )
        unit[t] = 1.0
        return unit

    def evaluate(self, requests: list[tuple[int, list[Array]]], batched: bool) -> list[float]:
        keys = [_key(point) for _, point in requests]
        missing: dict[bytes, list[Array]] = {}
        for key, (_, point) in zip(keys, requests, strict=True):
            if key in self.cache:
                self.cache.move_to_end(key)
            else:
                missing[key] = point
        if missing:
            points = list(missing.values())
            if batched and self.batched_fn is not None and len(points) > 1:
                found = self._project_batch(points)
            else:
                found = [self._project(self.problem.tensors(p)) for p in points]
            for key, value in zip(missing, found, strict=True):
                self.cache[key] = value
        values = [float(self.cache[key][t]) for key, (t, _) in zip(keys, requests, strict=True)]
        while len(self.cache) > _CACHE_SIZE:
            self.cache.popitem(last=False)
        return values

    def _project_batch(self, points: list[list[Array]]) -> list[Array]:
        assert self.batched_fn is not None
        stacked = [
            _to_torch(np.stack([p[j] for p in points]), like)
            for j, like in enumerate(self.problem.bases)
        ]
        with torch.no_grad():
            values = _to_numpy(self.batched_fn(*stacked))
        return list(values)

    def batchable(self) -> Callable[[], None]:
        problem = self.problem

        def project(*inputs: torch.Tensor) -> torch.Tensor:
            return self._apply(problem.flat(problem.forward(inputs)))

        def trial() -> None:
            self.batched_fn = torch_vmap(project, randomness="error")
            base = problem.base_arrays()
            try:
                _require_close(
                    np.stack(self._project_batch([base, base])), np.array([self.base_values] * 2)
                )
            except Exception:
                self.batched_fn = None
                raise

        return trial

    def gradient(self) -> dict[str, Array]:
        leaves = self.problem.leaves()
        outputs = self.problem.forward(leaves)
        grads: dict[str, Array] = {}
        for t, blocks in enumerate(self.aliases):
            # Copies: a backward that overwrites its grad_output must not change the cotangents.
            cotangent = [c.clone() for c in self.problem.split(self._cotangent(t))]
            vjp = self.problem.vjp(outputs, leaves, cotangent, retain_graph=True)
            grads.update({alias: _to_numpy(g) for alias, g in zip(blocks, vjp, strict=True)})
        return grads


class _Forward(_Family):
    """``sum_i w_i fn(x + t_i v)_i`` per output, whose gradient is ``w * jvp(fn, x, v)``."""

    def __init__(self, problem: _Problem, full: bool, rng: np.random.Generator) -> None:
        self.problem = problem
        self.full = full
        self.tangents = [
            (_random_like(rng, tuple(b.shape), problem) * b.detach().abs().clamp(min=1.0)).to(
                b.dtype
            )
            for b in problem.bases
        ]
        sizes = problem.outputs.sizes
        self.weights = [
            torch.ones(n, dtype=torch.float64, device=problem.device)
            if full
            else _random_like(rng, (n,), problem)
            for n in sizes
        ]
        self.offsets = np.cumsum([0, *sizes])
        self.cache: OrderedDict[float, Array] = OrderedDict()
        dtype = _TORCH_TO_NUMPY[problem.bases[0].dtype]
        self.aliases, self.display, self.base_points = [], {}, []
        for k, (name, shape) in enumerate(
            zip(problem.outputs.names, problem.outputs.shapes, strict=True)
        ):
            alias = f"gpt{k}f"
            self.aliases.append([alias])
            self.display[alias] = f"jvp({name})"
            self.base_points.append([np.zeros(shape if full else (), dtype=dtype)])
        self.base_values = [self._value(k, points[0]) for k, points in enumerate(self.base_points)]
        self.description = (
            "Forward mode (JVP): `jvp(output)` compares the JVP along a random tangent v "
            "(entries of random sign, size in [0.5, 1.5) × max(1, |x|)) with the "
            "finite-difference slope of "
            + ("each output entry along v." if full else "<w, output> along v, w random.")
        )

    @classmethod
    def build(cls, problem: _Problem, *, full: bool, rng: np.random.Generator) -> _Forward:
        forward = cls(problem, full, rng)
        forward._tangents_out()  # refuse a function without forward mode before any work
        return forward

    def _at(self, t: float) -> Array:
        """Per output entry (full) or per output (projected): weighted values at ``x + t v``."""
        if t in self.cache:
            self.cache.move_to_end(t)
            return self.cache[t]
        problem = self.problem
        moved = [b + t * v for b, v in zip(problem.bases, self.tangents, strict=True)]
        with torch.no_grad():
            flat = problem.flat(problem.forward(moved)) * torch.cat(self.weights)
        values = _to_numpy(flat)
        if not self.full:
            values = np.add.reduceat(values, self.offsets[:-1]) if values.size else values
        self.cache[t] = values
        while len(self.cache) > _CACHE_SIZE:
            self.cache.popitem(last=False)
        return values

    def _value(self, k: int, steps: Array) -> float:
        if not self.full:
            return float(self._at(float(steps))[k])
        flat = steps.reshape(-1)
        segment = slice(int(self.offsets[k]), int(self.offsets[k + 1]))
        parts = [self._at(float(t))[segment][flat == t] for t in np.unique(flat)]
        return math.fsum(np.concatenate(parts).tolist()) if parts else 0.0

    def evaluate(self, requests: list[tuple[int, list[Array]]], batched: bool) -> list[float]:
        return [self._value(k, point[0]) for k, point in requests]

    def _tangents_out(self) -> list[torch.Tensor]:
        problem = self.problem
        try:
            with forward_ad.dual_level(), warnings.catch_warnings():
                # Forward AD loads torch's jvp decompositions through torch.jit.script on
                # first use, which warns about torch's own deprecation.
                warnings.filterwarnings("ignore", "`torch.jit.script`", DeprecationWarning)
                duals = [
                    _make_dual(b.detach(), v)
                    for b, v in zip(problem.bases, self.tangents, strict=True)
                ]
                outputs = problem.forward(duals)
                tangents = [_unpack_dual(o).tangent for o in outputs]
        except (RuntimeError, NotImplementedError) as exc:
            raise InputError(
                f"Forward mode failed: {_describe_error(exc)}. A custom Function needs a "
                "`jvp` staticmethod (with `ctx.save_for_forward` in `forward`) for forward "
                "mode; define one, or pass `forward=False`."
            ) from exc
        return [
            torch.zeros_like(o) if t is None else t.detach()
            for o, t in zip(outputs, tangents, strict=True)
        ]

    def gradient(self) -> dict[str, Array]:
        grads: dict[str, Array] = {}
        for k, (blocks, tangent) in enumerate(zip(self.aliases, self._tangents_out(), strict=True)):
            weighted = tangent.reshape(-1).to(torch.float64) * self.weights[k]
            value = weighted.reshape(tangent.shape) if self.full else weighted.sum()
            grads[blocks[0]] = _to_numpy(value)
        return grads


class _SecondOrder(_Family):
    """``<w, vjp(x, u)>`` of the inputs and the cotangent, differentiated through the backward."""

    def __init__(self, problem: _Problem, rng: np.random.Generator) -> None:
        self.problem = problem
        self.cotangent = problem.split(_random_like(rng, (problem.outputs.size,), problem))
        self.weights = [
            _random_like(rng, tuple(b.shape), problem).to(b.dtype) for b in problem.bases
        ]
        self.cache: OrderedDict[bytes, float] = OrderedDict()
        dtype = _TORCH_TO_NUMPY[problem.bases[0].dtype]
        blocks, self.display = [], {}
        for j, name in enumerate(problem.names):
            blocks.append(f"gpt{j}s")
            self.display[blocks[-1]] = f"{name} (2nd order)"
        for k, name in enumerate(problem.outputs.names):
            blocks.append(f"gpt{k}c")
            self.display[blocks[-1]] = f"cotangent of {name} (2nd order)"
        self.aliases = [blocks]
        self.n_inputs = len(problem.names)
        self.base_points = [
            [*problem.base_arrays(), *(_to_numpy(c).astype(dtype) for c in self.cotangent)]
        ]
        self.base_values = [self._value(self.base_points[0])]
        self.description = (
            "Second order: `<input> (2nd order)` and `cotangent of <output> (2nd order)` "
            "check the gradient of <w, vjp(x, u)> (w, u random) with respect to the inputs x "
            "and the cotangent u, computed by differentiating the backward "
            "(create_graph=True), as gradgradcheck does."
        )

    @classmethod
    def build(cls, problem: _Problem, *, rng: np.random.Generator) -> _SecondOrder:
        second = cls(problem, rng)
        inputs = problem.leaves()
        cotangent = [c.detach().clone().requires_grad_(True) for c in second.cotangent]
        vjp = problem.vjp(problem.forward(inputs), inputs, cotangent, create_graph=True)
        if any(g.grad_fn is not None and g.grad_fn.name().endswith("Error") for g in vjp):
            problem.notes.append(
                "The backward is marked `@once_differentiable`: autograd cannot differentiate "
                "it and gives no second-order gradient (None, checked as zeros). Write the "
                "backward with differentiable torch operations to support double backward."
            )
        return second

    def _value(self, point: list[Array]) -> float:
        key = _key(point)
        if key in self.cache:
            return self.cache[key]
        problem = self.problem
        inputs = [t.requires_grad_(True) for t in problem.tensors(point[: self.n_inputs])]
        cotangent = [
            _to_torch(a, like)
            for a, like in zip(point[self.n_inputs :], self.cotangent, strict=True)
        ]
        vjp = problem.vjp(problem.forward(inputs), inputs, cotangent)
        value = math.fsum(
            float(torch.sum(w.to(torch.float64) * g.detach().to(torch.float64)))
            for w, g in zip(self.weights, vjp, strict=True)
        )
        self.cache[key] = value
        while len(self.cache) > _CACHE_SIZE:
            self.cache.popitem(last=False)
        return value

    def evaluate(self, requests: list[tuple[int, list[Array]]], batched: bool) -> list[float]:
        return [self._value(point) for _, point in requests]

    def gradient(self) -> dict[str, Array]:
        problem = self.problem
        inputs = problem.leaves()
        cotangent = [c.detach().clone().requires_grad_(True) for c in self.cotangent]
        vjp = problem.vjp(problem.forward(inputs), inputs, cotangent, create_graph=True)
        total = sum(torch.sum(w * g) for w, g in zip(self.weights, vjp, strict=True))
        wrt = [*inputs, *cotangent]
        if not isinstance(total, torch.Tensor) or not total.requires_grad:
            grads: list[torch.Tensor] = [torch.zeros_like(x) for x in wrt]
        else:
            names = [*problem.names, *problem.outputs.names]
            problem.n_backward += 1
            try:
                found = torch.autograd.grad(total, wrt, allow_unused=True)
            except RuntimeError as exc:
                raise _backward_error(exc, names, second_order=True) from exc
            grads = [
                torch.zeros_like(x) if g is None else g for g, x in zip(found, wrt, strict=True)
            ]
        return {alias: _to_numpy(g) for alias, g in zip(self.aliases[0], grads, strict=True)}


def _require_close(values: Array, expected: Array) -> None:
    """Refuse batched values that differ from the unbatched ones beyond rounding.

    Batched kernels may sum in another order; 1e-12 relative allows that for
    sums of up to about a million terms.
    """
    scale = np.maximum(np.abs(expected), 1.0)
    if not np.all(np.abs(values - expected) <= 1e-12 * scale):
        raise ValueError(
            f"batched values {np.asarray(values).ravel()[:4].tolist()} differ from the "
            f"unbatched ones {np.asarray(expected).ravel()[:4].tolist()}"
        )


class _Combined:
    """The sum of the families' terms as one loss of numpy parameters (the aliases)."""

    def __init__(self, families: list[_Family]) -> None:
        self.families = families
        self.names = {alias: name for f in families for alias, name in f.display.items()}
        self.base_bytes = [
            [[block.tobytes() for block in point] for point in f.base_points] for f in families
        ]

    def params(self) -> dict[str, Array]:
        return {
            alias: block.copy()
            for family in self.families
            for blocks, points in zip(family.aliases, family.base_points, strict=True)
            for alias, block in zip(blocks, points, strict=True)
        }

    def gradient(self, params: Mapping[str, Array]) -> dict[str, Array]:
        grads: dict[str, Array] = {}
        for family in self.families:
            grads.update(family.gradient())
        return grads

    def loss(self, params: Mapping[str, Array]) -> float:
        return float(self._totals([params], batched=False)[0])

    def loss_batch(self, stacked: Mapping[str, Array]) -> Array:
        count = len(next(iter(stacked.values())))
        rows = [{alias: values[b] for alias, values in stacked.items()} for b in range(count)]
        return self._totals(rows, batched=True)

    def _totals(self, rows: Sequence[Mapping[str, Array]], *, batched: bool) -> Array:
        terms = [[v for f in self.families for v in f.base_values] for _ in rows]
        offset = 0
        for family, base_bytes in zip(self.families, self.base_bytes, strict=True):
            requests: list[tuple[int, list[Array]]] = []
            where: list[tuple[int, int]] = []
            for b, row in enumerate(rows):
                for t, (blocks, base) in enumerate(zip(family.aliases, base_bytes, strict=True)):
                    point = [row[alias] for alias in blocks]
                    # Comparing bytes is the cheapest exact test; this runs per term and call.
                    if any(p.tobytes() != q for p, q in zip(point, base, strict=True)):
                        requests.append((t, point))
                        where.append((b, offset + t))
            if requests:
                for (b, i), value in zip(where, family.evaluate(requests, batched), strict=True):
                    terms[b][i] = value
            offset += len(family.aliases)
        return np.array([math.fsum(row) for row in terms])

    def trials(self) -> list[Callable[[], None]]:
        return [trial for f in self.families if (trial := f.batchable()) is not None]


# -- a module -----------------------------------------------------------------------------------
class _ModuleProblem:
    """An ``nn.Module`` with an input and a loss, as a numpy loss of its parameters."""

    def __init__(
        self,
        module: torch.nn.Module,
        loss_fn: Callable[[Any], torch.Tensor],
        checked: dict[str, torch.Tensor],
        others: dict[str, torch.Tensor],
        args: tuple[Any, ...],
        seed: int | None,
    ) -> None:
        self.module = module
        self.loss_fn = loss_fn
        self.checked = checked
        self.others = others
        self.args = args
        self.seed = seed
        self.notes: list[str] = []
        self.aliases = {name: f"gpt{i}m" for i, name in enumerate(checked)}
        self.names = {alias: name for name, alias in self.aliases.items()}
        self.batched_fn: Callable[[dict[str, torch.Tensor]], torch.Tensor] | None = None
        self.base_value = 0.0

    @classmethod
    def build(
        cls,
        module: torch.nn.Module,
        inputs: Any,
        loss_fn: Callable[[Any], torch.Tensor],
        *,
        precision: str,
        seed: int | None,
    ) -> _ModuleProblem:
        args = (
            (inputs,)
            if isinstance(inputs, torch.Tensor)
            else tuple(inputs)
            if isinstance(inputs, (tuple, list))
            else None
        )
        if args is None:
            raise InputError(
                f"`inputs` must be a tensor or a tuple of the module's positional arguments; "
                f"got a {type(inputs).__name__}. For keyword arguments or a target, close over "
                "them: `check_module(model, (x,), lambda out: loss(out, target))`."
            )
        checked = {n: p.detach().clone() for n, p in module.named_parameters() if p.requires_grad}
        if not checked:
            raise InputError(
                f"No parameter of the {type(module).__name__} requires grad, so there is no "
                "gradient to check. Unfreeze the parameters to check with "
                "`p.requires_grad_(True)`."
            )
        frozen = {n: p.detach() for n, p in module.named_parameters() if not p.requires_grad}
        others = {**frozen, **{n: b.detach() for n, b in module.named_buffers()}}
        problem = cls(module, loss_fn, checked, others, tuple(args), seed)
        kept = [f"{len(frozen)} frozen parameter{'s' * (len(frozen) != 1)}"] if frozen else []
        buffers = len(others) - len(frozen)
        kept += [f"{buffers} buffer{'s' * (buffers != 1)}"] if buffers else []
        problem.notes.append(
            f"The gradients of the {len(checked)} parameters of the {type(module).__name__} that "
            "require grad were checked for the given inputs and loss"
            + (
                f"; its {' and '.join(kept)} were passed as fresh copies and left alone"
                if kept
                else ""
            )
            + "."
        )
        problem._set_precision(precision)
        return problem

    def _set_precision(self, precision: str) -> None:
        tensors = [*self.checked.values(), *self.others.values(), *self.args]
        low = sorted({str(t.dtype).removeprefix("torch.") for t in tensors if _is_low_float(t)})
        native = (dict(self.checked), dict(self.others), self.args)
        if precision == "auto" and low:

            def wide(t: Any) -> Any:
                return t.detach().to(torch.float64) if _is_low_float(t) else t

            self.checked = {n: wide(t) for n, t in self.checked.items()}
            self.others = {n: wide(t) for n, t in self.others.items()}
            self.args = tuple(wide(a) for a in self.args)
            try:
                value = self._evaluate(self.checked)
            except Exception as exc:  # the module refuses float64: check it as it is
                reason = _describe_error(exc)
            else:
                if value.dtype == torch.float64:
                    self.notes.append(
                        f"The module's {' and '.join(low)} tensors were checked through float64 "
                        "copies of its parameters, buffers and inputs: the module and its "
                        "backward ran in float64, and the gradients are judged with float64's "
                        "tolerance."
                    )
                    self.base_value = float(value)
                    return
                reason = f"the loss came out in {value.dtype}"
            self.notes.append(
                f"The module did not compute in float64 with float64 copies ({reason}), so it "
                f"was checked in {' and '.join(low)} with that precision's tolerance."
            )
            self.checked, self.others, self.args = native
        for name, tensor in self.checked.items():
            _numpy_dtype(tensor.dtype, name)
        self.base_value = float(self._evaluate(self.checked))

    def _evaluate(self, params: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Return the loss at `params`, with fresh copies of the buffers and frozen parameters."""
        if self.seed is not None:
            reseed(self.seed)
        # Fresh copies of buffers, frozen parameters and inputs at every call: the module may
        # update them in place (BatchNorm's running statistics, an in-place first activation).
        state = {**params, **{n: t.clone() for n, t in self.others.items()}}
        args = tuple(a.clone() if isinstance(a, torch.Tensor) else a for a in self.args)
        value = self.loss_fn(functional_call(self.module, state, args))
        if (
            not isinstance(value, torch.Tensor)
            or value.numel() != 1
            or not value.is_floating_point()
        ):
            shown = (
                f"a tensor of shape {tuple(value.shape)} and dtype {value.dtype}"
                if isinstance(value, torch.Tensor)
                else f"a {type(value).__name__}"
            )
            raise InputError(
                f"`loss_fn` returned {shown}; expected a real scalar tensor computed from the "
                "module's output, e.g. `lambda out: out.pow(2).mean()`."
            )
        return value.reshape(())

    def tensors(self, params: Mapping[str, Array]) -> dict[str, torch.Tensor]:
        return {
            name: _to_torch(params[alias], self.checked[name])
            for name, alias in self.aliases.items()
        }

    def params(self) -> dict[str, Array]:
        return {alias: _to_numpy(self.checked[name]) for name, alias in self.aliases.items()}

    def loss(self, params: Mapping[str, Array]) -> float:
        with torch.no_grad():
            return float(self._evaluate(self.tensors(params)))

    def loss_batch(self, stacked: Mapping[str, Array]) -> Array:
        assert self.batched_fn is not None
        tensors = {
            name: _to_torch(stacked[alias], self.checked[name])
            for name, alias in self.aliases.items()
        }
        with torch.no_grad():
            return _to_numpy(self.batched_fn(tensors)).astype(np.float64).reshape(-1)

    def _grads(self, cotangent: float) -> list[torch.Tensor]:
        leaves = {n: t.detach().clone().requires_grad_(True) for n, t in self.checked.items()}
        value = self._evaluate(leaves)
        if not value.requires_grad:
            return [torch.zeros_like(t) for t in leaves.values()]
        try:
            grads = torch.autograd.grad(
                value, list(leaves.values()), torch.full_like(value, cotangent), allow_unused=True
            )
        except RuntimeError as exc:
            raise _backward_error(exc, list(leaves)) from exc
        return [
            torch.zeros_like(t) if g is None else g
            for g, t in zip(grads, leaves.values(), strict=True)
        ]

    def gradient(self, params: Mapping[str, Array]) -> dict[str, Array]:
        grads = self._grads(1.0)
        return {alias: _to_numpy(g) for alias, g in zip(self.aliases.values(), grads, strict=True)}

    def check_structure(self) -> None:
        """Repeatable, connected to the parameters, right shapes, deterministic, zero at zero."""
        with torch.no_grad():
            first_value, second_value = (float(self._evaluate(self.checked)) for _ in range(2))
        if first_value != second_value and not (
            math.isnan(first_value) and math.isnan(second_value)
        ):
            raise NondeterministicLossError(
                f"The loss returned different values at the same parameters ({first_value!r} vs "
                f"{second_value!r}), so finite differences would measure its randomness, not its "
                "slope. "
                + (
                    f"It does so even with `seed={self.seed}`: its randomness does not come from "
                    "torch's, numpy's or Python's global generators."
                    if self.seed is not None
                    else "A module in training mode with dropout draws a new mask at every call: "
                    "pass `seed=` so that every evaluation re-seeds torch's generators, or call "
                    "`module.eval()`."
                )
            )
        leaves = {n: t.detach().clone().requires_grad_(True) for n, t in self.checked.items()}
        if not self._evaluate(leaves).requires_grad:
            raise InputError(
                "`loss_fn` returned a loss that does not depend on the module's parameters "
                "through autograd (no grad_fn); compute it from the module's output without "
                "`.detach()`, `.item()` or `torch.no_grad()`."
            )
        names = list(self.checked)
        first, second = self._grads(1.0), self._grads(1.0)
        for name, grad in zip(names, first, strict=True):
            base = self.checked[name]
            if grad.shape != base.shape or grad.dtype != base.dtype or grad.device != base.device:
                raise InputError(
                    f"The backward returned a gradient for `{name}` of shape "
                    f"{tuple(grad.shape)}, {grad.dtype} on {grad.device}; expected "
                    f"{tuple(base.shape)}, {base.dtype} on {base.device}, like the parameter."
                )
        differs = _largest_difference(first, second, names)
        if differs is not None:
            self.notes.append(
                f"The backward is not deterministic: two backward passes at the same "
                f"parameters differ by up to {differs[0]:.3g} (at {differs[1]}). The finite "
                "differences judged one of them. If it comes from atomic additions on a GPU, "
                "`torch.use_deterministic_algorithms(True)` removes it."
            )
        nonzero = _largest(self._grads(0.0), names)
        if nonzero is not None:
            self.notes.append(
                f"With a zero upstream gradient the backward returned nonzero gradients "
                f"(|{nonzero[1]}| = {nonzero[0]:.3g}). A backward is linear in `grad_output`: "
                "look for a term a custom layer adds without multiplying by `grad_output`."
            )

    def trials(self) -> list[Callable[[], None]]:
        def single(params: dict[str, torch.Tensor]) -> torch.Tensor:
            return self._evaluate(params)

        def trial() -> None:
            self.batched_fn = torch_vmap(single, randomness="error")
            base = self.params()
            try:
                values = self.loss_batch({a: np.stack([v, v]) for a, v in base.items()})
                _require_close(values, np.array([self.base_value, self.base_value]))
            except Exception:
                self.batched_fn = None
                raise

        return [trial]


# -- running the check --------------------------------------------------------------------------
def _use_vmap(vmap: bool | None, trials: list[Callable[[], None]], notes: list[str]) -> bool:
    """Try the batched evaluation once at the point; fall back (with a note) when it fails."""
    if vmap is False:
        return False
    failure = "" if trials else "no part of the check can be batched"
    for trial in trials:
        try:
            with torch.no_grad():
                trial()
        except Exception as exc:  # vmap refuses many things: fall back rather than fail
            cause = exc.__cause__ if isinstance(exc, UserCodeError) else None
            failure = _describe_error(cause or exc)
            break
    if not failure:
        notes.append("The finite differences were evaluated in batches through torch.func.vmap.")
        return True
    if vmap:
        raise InputError(
            f"`vmap=True`, but the function cannot be evaluated through torch.func.vmap "
            f"({failure}). A custom Function needs `generate_vmap_rule = True` (with "
            "`setup_context`) or a `vmap` staticmethod; random operations and in-place updates "
            "of buffers (BatchNorm in training mode) cannot be batched. Leave `vmap` unset to "
            "fall back to one point per call."
        )
    notes.append(
        f"Not batched: torch.func.vmap could not evaluate the function ({failure}), so each "
        "call evaluated one point."
    )
    return False


def _drop_batch_size(
    options: dict[str, Any], loss_batch: object | None, notes: list[str]
) -> dict[str, Any]:
    if loss_batch is None and options.get("batch_size") is not None:
        notes.append("`batch_size` was ignored: the evaluation is not batched.")
        return {k: v for k, v in options.items() if k != "batch_size"}
    return options


def _run_check(
    loss: Callable[[Mapping[str, Array]], float],
    gradient: Callable[[Mapping[str, Array]], dict[str, Array]],
    params: dict[str, Array],
    names: Mapping[str, str],
    *,
    loss_batch: Callable[[Mapping[str, Array]], Array] | None,
    seed: int | None,
    options: dict[str, Any],
) -> CheckResult:
    """Run gradproof.check on the aliases; report (and fail) under the displayed names."""
    rename = _renamer(names)
    try:
        result = check(
            loss,
            gradient,
            params,
            seed=seed,
            precision="native",  # the adapter chose the precision already
            loss_batch=loss_batch,
            **options,
        )
    except GradproofError as error:
        if error.args and isinstance(error.args[0], str):
            error.args = (rename(error.args[0]), *error.args[1:])
        raise
    renamed: CheckResult = _rename(result, rename)
    return renamed


def _renamer(names: Mapping[str, str]) -> Callable[[str], str]:
    pattern = re.compile(r"\b(" + "|".join(re.escape(a) for a in names) + r")\b")
    return lambda text: pattern.sub(lambda m: names[m.group(1)], text)


def _rename(value: Any, rename: Callable[[str], str]) -> Any:
    """Replace the aliases in every string of a result (Enums, e.g. verdicts, are kept)."""
    if type(value) is str:
        return rename(value)
    if isinstance(value, tuple) and not hasattr(value, "_fields"):
        return tuple(_rename(v, rename) for v in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        changes = {
            field.name: _rename(getattr(value, field.name), rename)
            for field in dataclasses.fields(value)
            if isinstance(getattr(value, field.name), (str, tuple))
            or dataclasses.is_dataclass(getattr(value, field.name))
        }
        return dataclasses.replace(value, **changes)
    return value
