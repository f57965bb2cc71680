"""The public ``gradcheck`` and ``gradgradcheck`` (Note [A drop-in gradcheck])."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.autograd.gradcheck import GradcheckError as _TorchGradcheckError

from gradproof.errors import InputError
from gradproof.torch._gradcheck import (
    TORCH_ATOL,
    TORCH_EPS,
    TORCH_RTOL,
    GradcheckError,
    _as_tuple,
    _fail,
    _Flags,
    _run_gradcheck,
)


def gradcheck(
    func: Callable[..., Any],
    inputs: Any,
    *,
    eps: float = TORCH_EPS,
    atol: float = TORCH_ATOL,
    rtol: float = TORCH_RTOL,
    raise_exception: bool = True,
    nondet_tol: float = 0.0,
    check_undefined_grad: bool = True,
    check_grad_dtypes: bool = False,
    check_batched_grad: bool = False,
    check_batched_forward_grad: bool = False,
    check_forward_ad: bool = False,
    check_backward_ad: bool = True,
    fast_mode: bool = False,
    masked: bool | None = None,
    strict: bool = False,
) -> bool:
    """Check a function's gradients like ``torch.autograd.gradcheck``, with gradproof's verdicts.

    A drop-in replacement: ``from gradproof.torch import gradcheck`` in place
    of ``from torch.autograd import gradcheck`` keeps a test suite working,
    with every wrong entry named and judged against its own error bar.

    Parameters
    ----------
    func : callable ``func(*inputs) -> Tensor or tuple of Tensor``
        The function: a custom Function's ``apply``, or any function of
        tensors. Its inputs are named by its own parameter names (those of
        ``forward`` for a Function), ``input0``, ``input1``, ... where it has
        none.
    inputs : Tensor or tuple of Tensor and other arguments
        The point. Every floating-point or complex tensor that requires grad
        is checked (dense, sparse COO or CSR, any dtype; float16, bfloat16 and
        float32 in float64 copies when `func` accepts them). Never modified.
    eps : float, optional
        The absolute finite-difference step. torch's default (1e-6) lets
        gradproof choose the step by dtype; any other value is used.
    atol, rtol : float, optional
        Tolerances. torch's defaults (1e-5, 1e-3) let gradproof judge each
        entry by its own error bar and rtol 1e-5 (float64); other values
        replace gradproof's ``atol`` and ``rtol`` (the error bar still applies).
    raise_exception : bool, optional
        Raise :class:`GradcheckError` when a gradient is wrong (default);
        ``False`` returns ``False`` instead.
    nondet_tol : float, optional
        How much two backward passes with the same cotangent may differ.
    check_undefined_grad : bool, optional
        Check that the backward treats undefined (``None``) output gradients
        as zeros, for all outputs at once and for each one alone.
    check_grad_dtypes : bool, optional
        Accepted for compatibility: gradproof always requires each gradient to
        have its input's dtype, shape and device.
    check_batched_grad : bool, optional
        Check that the backward gives the same gradients on a batch of
        cotangents (vmap) as on each one.
    check_batched_forward_grad : bool, optional
        The same for forward mode; run by ``torch.autograd.gradcheck`` itself.
    check_forward_ad : bool, optional
        Also check forward mode (the JVP along a random tangent per input).
    check_backward_ad : bool, optional
        Check reverse mode (default). At least one mode must be on.
    fast_mode : bool, optional
        Check the VJP along one random cotangent per output rather than the
        Jacobian row by row.
    masked : bool, optional
        For sparse inputs: check only the specified entries (``True``), or
        every entry through ``to_sparse`` (default, as gradcheck).
    strict : bool, optional
        Fail on entries gradproof cannot judge (a kink, a point with no
        derivative); by default they pass with a :class:`GradproofWarning`
        that lists them. Not a torch flag.

    Returns
    -------
    bool
        ``True`` when every gradient is right; ``False`` when one is wrong and
        `raise_exception` is ``False``.

    Raises
    ------
    GradcheckError
        A wrong gradient (with `raise_exception`): a subclass of
        ``torch.autograd.gradcheck.GradcheckError``, whose message is a
        one-line summary then gradproof's report, and whose ``result`` is the
        :class:`~gradproof.CheckResult`.
    InputError
        If `func` is not callable, no input requires grad, or the flags
        contradict each other (a ``ValueError``).
    UserCodeError
        If `func` or its backward raises; the original exception is its
        ``__cause__``.

    See Also
    --------
    gradgradcheck : second-order gradients.
    check_function : the same check, returning the result.

    Notes
    -----
    Slow mode (the default) checks the Jacobian one output entry at a time
    when the outputs have at most 16 entries, and otherwise the VJP along a
    random cotangent per output (entries of random sign, so that no wrong
    entry cancels); either way every input entry is differenced. Outputs that
    are empty or that autograd marks non-differentiable are skipped. See
    ``docs/torch.md`` for how each flag maps.

    Examples
    --------
    >>> import torch
    >>> from gradproof.torch import gradcheck
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
    >>> gradcheck(torch.sin, (x,))
    True
    >>> gradcheck(Cube.apply, (x,), raise_exception=False)
    False
    >>> from torch.autograd.gradcheck import GradcheckError as TorchGradcheckError
    >>> try:
    ...     gradcheck(Cube.apply, (x,))
    ... except TorchGradcheckError as error:
    ...     print(str(error).splitlines()[0])
    gradproof: wrong gradient for `x`: 2 wrong entries; worst d out[1] / d x[1]: 8 vs numeric 12.
    """
    del check_grad_dtypes  # always checked (Note [A drop-in gradcheck])
    flags = _Flags(
        eps=eps,
        atol=atol,
        rtol=rtol,
        raise_exception=raise_exception,
        nondet_tol=nondet_tol,
        check_undefined_grad=check_undefined_grad,
        check_batched_grad=check_batched_grad,
        check_batched_forward_grad=check_batched_forward_grad,
        forward=check_forward_ad,
        backward=check_backward_ad,
        fast_mode=fast_mode,
        masked=bool(masked),
        strict=strict,
        function="gradproof.torch.gradcheck",
    )
    if not (check_forward_ad or check_backward_ad):
        raise InputError(
            "`check_forward_ad` and `check_backward_ad` are both False, so there is nothing "
            "to check; set `check_backward_ad=True` (reverse mode, the default) or "
            "`check_forward_ad=True`."
        )
    if check_batched_forward_grad and not check_forward_ad:
        raise InputError(
            "`check_batched_forward_grad=True` checks forward mode, which is off; pass "
            "`check_forward_ad=True` too."
        )
    if not _run_gradcheck(func, inputs, flags):
        return False
    if check_batched_forward_grad:
        return _by_torch(
            flags,
            "the batched forward-mode check",
            lambda: torch.autograd.gradcheck(
                func,
                inputs,
                eps=eps,
                atol=atol,
                rtol=rtol,
                check_undefined_grad=False,
                check_forward_ad=True,
                check_backward_ad=False,
                check_batched_forward_grad=True,
                masked=masked,
            ),
        )
    return True


def gradgradcheck(
    func: Callable[..., Any],
    inputs: Any,
    grad_outputs: Any = None,
    *,
    eps: float = TORCH_EPS,
    atol: float = TORCH_ATOL,
    rtol: float = TORCH_RTOL,
    gen_non_contig_grad_outputs: bool = False,
    raise_exception: bool = True,
    nondet_tol: float = 0.0,
    check_undefined_grad: bool = True,
    check_grad_dtypes: bool = False,
    check_batched_grad: bool = False,
    check_fwd_over_rev: bool = False,
    check_rev_over_rev: bool = True,
    fast_mode: bool = False,
    masked: bool = False,
    strict: bool = False,
) -> bool:
    """Check second-order gradients like ``torch.autograd.gradgradcheck``, with gradproof.

    The backward's own backward is checked: the gradient of ``<w, vjp(x, u)>``
    with respect to the inputs ``x`` and the cotangent ``u`` (random ``w``;
    `grad_outputs` as ``u`` when given), computed with ``create_graph=True``,
    against finite differences. The derivative in ``u`` is the first-order
    Jacobian applied to ``w``, so the backward is checked too.

    Parameters
    ----------
    func : callable ``func(*inputs) -> Tensor or tuple of Tensor``
        As for :func:`gradcheck`.
    inputs : Tensor or tuple of Tensor and other arguments
        As for :func:`gradcheck`.
    grad_outputs : Tensor or tuple of Tensor, optional
        The cotangent ``u``, one per differentiable output; random (entries of
        random sign and size in [0.5, 1.5)) when not given.
    eps, atol, rtol : float, optional
        As for :func:`gradcheck`.
    gen_non_contig_grad_outputs : bool, optional
        Hand the backward non-contiguous cotangents.
    raise_exception : bool, optional
        Raise :class:`GradcheckError` when a gradient is wrong (default), or
        return ``False``.
    nondet_tol : float, optional
        How much two backward passes with the same cotangent may differ.
    check_undefined_grad : bool, optional
        Check that the (first-order) backward treats undefined output
        gradients as zeros.
    check_grad_dtypes : bool, optional
        Accepted for compatibility: always checked.
    check_batched_grad : bool, optional
        Check batched second-order gradients; run by
        ``torch.autograd.gradgradcheck`` itself.
    check_fwd_over_rev : bool, optional
        Check forward-over-reverse; run by ``torch.autograd.gradgradcheck``.
    check_rev_over_rev : bool, optional
        Check reverse-over-reverse (default), as described above.
    fast_mode : bool, optional
        Accepted for compatibility: the second-order check already uses one
        random projection.
    masked : bool, optional
        As for :func:`gradcheck`.
    strict : bool, optional
        Fail on entries gradproof cannot judge (not a torch flag).

    Returns
    -------
    bool
        ``True`` when right; ``False`` when wrong and `raise_exception` is
        ``False``.

    Raises
    ------
    GradcheckError
        A wrong second-order gradient (with `raise_exception`).
    InputError
        If the flags contradict each other or `grad_outputs` does not match
        the outputs.

    See Also
    --------
    gradcheck : first-order gradients.

    Examples
    --------
    >>> import torch
    >>> from gradproof.torch import gradgradcheck
    >>> x = torch.tensor([0.5, -1.0], dtype=torch.float64, requires_grad=True)
    >>> gradgradcheck(torch.tanh, (x,))
    True
    """
    del check_grad_dtypes, fast_mode  # always checked / one projection already
    if not (check_fwd_over_rev or check_rev_over_rev):
        raise InputError(
            "`check_fwd_over_rev` and `check_rev_over_rev` are both False, so there is "
            "nothing to check; set `check_rev_over_rev=True` (the default)."
        )
    if check_undefined_grad and not check_rev_over_rev:
        raise InputError(
            "`check_undefined_grad=True` checks the reverse-over-reverse pass, which is off "
            "(`check_rev_over_rev=False`); pass `check_undefined_grad=False` too."
        )
    flags = _Flags(
        eps=eps,
        atol=atol,
        rtol=rtol,
        raise_exception=raise_exception,
        nondet_tol=nondet_tol,
        check_undefined_grad=check_undefined_grad,
        check_batched_grad=False,
        check_batched_forward_grad=False,
        forward=False,
        backward=False,
        fast_mode=False,
        masked=bool(masked),
        strict=strict,
        function="gradproof.torch.gradgradcheck",
    )
    given = None if grad_outputs is None else list(_as_tuple(grad_outputs))
    if check_rev_over_rev and not _run_gradcheck(
        func,
        inputs,
        flags,
        second_order=True,
        grad_outputs=given,
        non_contiguous=gen_non_contig_grad_outputs,
    ):
        return False
    if check_fwd_over_rev or check_batched_grad:
        return _by_torch(
            flags,
            "the forward-over-reverse and batched second-order checks",
            lambda: torch.autograd.gradgradcheck(
                func,
                inputs,
                grad_outputs,
                eps=eps,
                atol=atol,
                rtol=rtol,
                gen_non_contig_grad_outputs=gen_non_contig_grad_outputs,
                nondet_tol=nondet_tol,
                check_undefined_grad=False,
                check_batched_grad=check_batched_grad,
                check_fwd_over_rev=check_fwd_over_rev,
                check_rev_over_rev=check_batched_grad,
                masked=masked,
            ),
        )
    return True


def _by_torch(flags: _Flags, what: str, run: Callable[[], bool]) -> bool:
    """Run a check gradproof leaves to torch; its failure is a GradcheckError all the same."""
    try:
        run()
    except _TorchGradcheckError as error:
        return _fail(
            flags,
            f"torch.autograd.gradcheck failed {what} (gradproof leaves it to torch): {error}",
            None,
        )
    return True


__all__ = ["GradcheckError", "gradcheck", "gradgradcheck"]
