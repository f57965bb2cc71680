"""Check PyTorch gradients: custom autograd Functions, functions of tensors, modules.

:func:`gradcheck` and :func:`gradgradcheck` are drop-in replacements for
torch's (same signatures, ``True`` or a ``GradcheckError``), with gradproof's
verdicts and reports.
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
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from gradproof.errors import BackendUnavailableError, InputError
from gradproof.results import CheckResult

try:
    # torch and what the private modules below import from it, imported first so that a
    # torch without them reads as torch missing.
    import torch
    import torch.autograd.forward_ad
    import torch.func
except ImportError as error:  # pragma: no cover - the test suite runs with torch installed
    if (error.name or "torch").partition(".")[0] != "torch":
        raise  # torch is there but something it needs is not: its own message says what
    raise BackendUnavailableError(
        "`gradproof.torch` checks PyTorch code, but PyTorch is not installed. Install it with "
        "`pip install torch`, or install gradproof with its PyTorch extra: "
        "`pip install 'gradproof[torch]'`.",
        framework="torch",
    ) from error

from gradproof.engine.randomness import preserved_random_state
from gradproof.torch._convert import _random_like
from gradproof.torch._dropin import GradcheckError, gradcheck, gradgradcheck
from gradproof.torch._function import _Forward, _Reverse, _SecondOrder
from gradproof.torch._module import _ModuleProblem
from gradproof.torch._options import (
    CHECK_OPTIONS,
    JACOBIAN_CHOICES,
    PRECISIONS,
    _check_options,
    _defines_jvp,
    _validate,
)
from gradproof.torch._prepare import _argument_names
from gradproof.torch._problem import _Problem
from gradproof.torch._run import _run_problem, _with_subjects
from gradproof.torch._structure import _check_function_structure, _check_module_structure
from gradproof.torch._terms import _Combined, _Family
from gradproof.torch.locate import LocateResult, ModuleVerdict, locate

__all__ = [
    "CHECK_OPTIONS",
    "JACOBIAN_MAX_ENTRIES",
    "GradcheckError",
    "LocateResult",
    "ModuleVerdict",
    "check_function",
    "check_module",
    "gradcheck",
    "gradgradcheck",
    "locate",
]

JACOBIAN_MAX_ENTRIES = 16
"""With ``jacobian="auto"``, functions with at most this many output entries get the full Jacobian.

Each row is a copy of the inputs in the report, so 16 keeps the table short;
the rows share their forward passes (Note [Checking a function of tensors]).
"""


# -- public entry points ------------------------------------------------------------------------
@preserved_random_state()  # the global generators are re-seeded when seed= is given
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
        The point to check at, passed to `fn` in order and named by the
        parameters of `fn` (of ``forward`` for a Function's ``apply``), or
        ``input0``, ``input1``, ... by position where it has none; or a single
        dict, passed as keyword arguments (``fn(**inputs)``) and named by its
        keys. Every floating-point
        tensor that requires grad is checked; other tensors, integer tensors
        and other arguments are passed through unchanged. Never modified.
    jacobian : {"auto", "full", "random"}
        ``"full"`` checks the Jacobian row by row: one copy of the inputs per
        output entry, named ``d output[i]/d x``, so the report says which
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
        (`batch_size` points per call). By default when `fn` supports it and
        a batch is at least twice as fast per point as a single call, which
        is tried once at the point; ``True`` requires it.
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
        One report per checked input and question, for an input ``x``:
        ``x`` (random cotangent), ``d output[i]/d x`` (Jacobian row ``i``),
        ``jvp(output)``, ``x (2nd order)`` and ``cotangent of output (2nd
        order)``. Each report's ``subject`` is the input it is about (for the
        full Jacobian of several outputs, the pair ``d output1/d x``), and
        ``section`` its heading (``"Forward mode (JVP)"``, ``"Second
        order"``), so ``result.suspects`` names inputs, not rows.
        ``result.notes`` says what was checked and what the structural checks
        found (a backward that is not deterministic, that
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
    >>> result.suspects  # the input whose gradient is wrong
    ('x',)
    >>> [p.name for p in result.params if not p.passed]  # its wrong Jacobian rows
    ['d output[0]/d x', 'd output[1]/d x']
    >>> result["d output[1]/d x"].failures[0].name
    'd output[1]/d x[1]'
    >>> check_function(Cube.apply, x, jacobian="random")["x"].diagnosis.summary
    'analytic = 2/3 × numeric on every entry'
    """
    started = time.perf_counter()
    checked = _check_options(options, "gradproof.torch.check_function")
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
    keyword = len(inputs) == 1 and isinstance(inputs[0], Mapping)
    names = None if keyword else _argument_names(fn, len(inputs))
    problem = _Problem.build(fn, inputs, precision=precision, seed=seed, names=names)
    full = jacobian == "full" or (
        jacobian == "auto" and problem.outputs.size <= JACOBIAN_MAX_ENTRIES
    )
    _check_function_structure(problem, _random_like(rng, (problem.outputs.size,), problem.device))
    reverse = _Reverse.build(problem, full=full, n_cotangents=n_cotangents, rng=rng)
    reverse.auto_vmap = vmap is None
    families: list[_Family] = [reverse]
    if forward is None:
        forward = _defines_jvp(fn)
    if forward:
        families.append(_Forward.build(problem, full=full, rng=rng))
    if second_order:
        families.append(_SecondOrder.build(problem, rng=rng))
    notes = [*(family.description for family in families), *problem.notes]
    combined = _Combined(families)
    result = _run_problem(combined, vmap=vmap, seed=seed, options=checked, notes=notes)
    pairs = full and len(problem.outputs.names) > 1
    result = _with_subjects(result, combined.subjects, "(output, input) pair" if pairs else "input")
    notes.append(
        f"`fn` ran {problem.n_forward} times forward and its backward {problem.n_backward} "
        f"times ({result.n_evals} loss evaluations; points already evaluated are reused)."
    )
    return dataclasses.replace(
        result, notes=(*result.notes, *notes), seconds=time.perf_counter() - started
    )


@preserved_random_state()  # the global generators are re-seeded when seed= is given
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
    checked = _check_options(options, "gradproof.torch.check_module")
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
    _check_module_structure(problem)
    notes = list(problem.notes)
    result = _run_problem(problem, vmap=vmap, seed=seed, options=checked, notes=notes)
    return dataclasses.replace(
        result, notes=(*result.notes, *notes), seconds=time.perf_counter() - started
    )
