"""Find the module whose backward is wrong: :func:`locate`.

See Note [Where the error enters] in :mod:`gradproof.torch._locate_search` for
the search, and Note [Perturbing an activation] in
:mod:`gradproof.torch._locate_model` for how the loss becomes a function of one
activation.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from gradproof._words import counted, noun
from gradproof.checking.options import CheckOptions
from gradproof.engine.randomness import preserved_random_state
from gradproof.errors import InputError
from gradproof.torch._convert import _module_args
from gradproof.torch._locate_model import _Model
from gradproof.torch._locate_results import LOSS_FN, VERDICTS, LocateResult, ModuleVerdict
from gradproof.torch._locate_search import _Search, culprit_names

__all__ = ["LOSS_FN", "VERDICTS", "LocateResult", "ModuleVerdict", "locate"]

_HANDLED = (
    "seed",
    "precision",
    "mode",
    "n_samples",
    "n_probes",
    "max_evals",
    "time_budget",
    "executor",
    "batch_size",
)
"""Options of gradproof.check that locate chooses itself, stage by stage."""


@preserved_random_state()  # the global generators are re-seeded when seed= is given
def locate(
    module: torch.nn.Module,
    inputs: Any,
    loss_fn: Callable[[Any], torch.Tensor],
    *,
    seed: int | None = None,
    precision: str = "auto",
    exhaustive: bool = False,
    **options: Any,
) -> LocateResult:
    """Find the module whose backward is wrong, and say what its wrong gradient looks like.

    Every module call is judged by the gradients autograd delivers at its
    output (the gradient reaching it) and at its input and parameters (the
    gradients it passes on), each compared with finite differences of the loss
    with respect to that activation, moved through a forward hook. A call
    whose output gradient is right and whose input or parameter gradient is
    wrong is to blame; a call that merely passes on a wrong gradient it
    received is not.

    Parameters
    ----------
    module : torch.nn.Module
        The model. It is run with ``torch.func.functional_call`` on copies of
        its parameters and buffers, in the mode it is in; hooks are added to
        its submodules for the search and removed afterwards, so neither it
        nor its state changes.
    inputs : torch.Tensor, or tuple or list of arguments
        The batch: ``module(*inputs)``. Floating-point tensors follow the
        model's precision; they are never modified.
    loss_fn : callable ``loss_fn(output) -> scalar tensor``
        Turns the model's output into the loss.
    seed : int, optional
        Re-seed Python's, numpy's and torch's generators before every
        evaluation (dropout). Also seeds the random directions (0 when not
        given).
    precision : {"auto", "native"}
        ``"auto"`` (default): float16 and float32 models are run on float64
        copies of their parameters, buffers and inputs. ``"native"``: as they are.
    exhaustive : bool, optional
        Also examine the calls inside modules that pass on right gradients,
        so that every call gets a verdict (a probe or two each). By default
        the search descends only into calls to blame.
    **options
        Passed to :func:`gradproof.check` for every stage: `method`, `eps`,
        `rel_step`, `rtol`, `atol`, `noise` (False by default here: the
        stages are many and small), `progress`, `max_listed`.

    Returns
    -------
    LocateResult
        ``result.culprits`` names the modules whose backward is wrong,
        innermost first (``()`` when none is; ``("loss_fn",)`` when the
        gradient reaching the model's output is already wrong);
        ``result.modules`` has a verdict per module call examined, and
        ``str(result)`` says for each culprit what its wrong gradient looks like.

    Raises
    ------
    InputError
        If `module` is not an ``nn.Module``, `loss_fn` is not callable or does
        not return a real scalar, `inputs` is not a tensor or a tuple of
        arguments, `precision` is not a choice, or an option is unknown.
    NondeterministicLossError
        If the loss differs between two evaluations at the same point (pass
        `seed` for dropout).
    UserCodeError
        If the model, `loss_fn` or a backward raises.

    See Also
    --------
    gradproof.torch.check_module : the gradients of every parameter, entry by entry.

    Notes
    -----
    A model whose gradients are right costs a trace and two probes of the
    whole model, the gradient reaching its output and the one it passes on
    (ten loss evaluations, set-up included), and two backward passes. A
    wrong one costs a probe or two per call at each level of the call tree
    on the way down to the culprit, and a few dozen evaluations to describe
    the culprit's wrong gradient entry by entry.

    Examples
    --------
    >>> import torch
    >>> class Double(torch.autograd.Function):
    ...     @staticmethod
    ...     def forward(ctx, x):
    ...         return x.clone()
    ...
    ...     @staticmethod
    ...     def backward(ctx, grad_output):
    ...         return 2 * grad_output  # bug: the identity's gradient is grad_output
    >>> class Shaky(torch.nn.Module):
    ...     def forward(self, x):
    ...         return Double.apply(x)
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> net = torch.nn.Sequential(torch.nn.Linear(3, 4), Shaky(), torch.nn.Tanh())
    >>> result = locate(net, torch.randn(5, 3), lambda out: out.pow(2).sum())
    >>> result.culprits
    ('1',)
    >>> print(result["1"].sentence())  # doctest: +NORMALIZE_WHITESPACE
    `1` (a Shaky calling the custom autograd Function `Double`): the gradient reaching it is
    right, the gradient it passes on is wrong: analytic = 2 × numeric on every entry of its
    input.
    """
    started = time.perf_counter()
    checked = CheckOptions.from_keywords(
        options,
        function="gradproof.torch.locate",
        handled=_HANDLED,
        base=CheckOptions(noise=False, dialect="torch"),
    )
    if precision not in ("auto", "native"):
        raise InputError(f"`precision` must be one of 'auto', 'native'; got {precision!r}.")
    if not isinstance(module, torch.nn.Module):
        raise InputError(
            f"`module` must be a torch.nn.Module; got a {type(module).__name__}. Wrap a function "
            "of tensors in a module, or check it with `gradproof.torch.check_function`."
        )
    if not callable(loss_fn):
        raise InputError(
            f"`loss_fn` must turn the module's output into a scalar loss; got a "
            f"{type(loss_fn).__name__}. Pass e.g. `lambda out: out.pow(2).mean()`."
        )
    args = _module_args(inputs, "locate")
    model = _Model(module, args, loss_fn, precision=precision, seed=seed)
    options_used = checked.replace(seed=seed, precision="native")
    if model.low_precision and "noise" not in options:
        # Note [Low precision, measured]: the probes' coefficients are float64, but the loss
        # is computed in float16 or float32, so its rounding is measured rather than assumed.
        options_used = options_used.replace(noise=True)
    with model.attached():
        calls, value = model.trace()
        search = _Search(
            model,
            calls,
            options_used,
            rng=np.random.default_rng(0 if seed is None else seed),
            exhaustive=exhaustive,
        )
        found = search.locate()
        for i in found or []:
            search.details[i] = search.describe(i)
        modules = search.verdicts_in_order(found or [])
    notes = _notes(model, search, calls)
    return LocateResult(
        culprits=culprit_names(search, found),
        modules=tuple(modules),
        loss_value=value,
        n_evals=search.n_evals,
        n_forward=model.n_forward,
        n_backward=model.n_backward,
        n_probes=search.n_probes,
        seconds=time.perf_counter() - started,
        notes=tuple(notes),
    )


def _notes(model: _Model, search: _Search, calls: list[Any]) -> list[str]:
    notes = []
    if model.widened:
        notes.append(
            "The model's low-precision tensors were run through float64 copies of its "
            "parameters, buffers and inputs."
        )
    if calls and not calls[0].outputs:
        notes.append(
            "The model's output holds no floating-point tensor (the loss is computed from "
            "something else), so the gradient `loss_fn` delivers to it was taken on trust."
        )
    shared = sorted({c.name for c in calls if c.n_calls > 1})
    if shared:
        listed = ", ".join(f"`{name}`" for name in shared)
        notes.append(
            f"Called more than once per forward pass: {listed}. Each call is judged on its own; "
            "a shared module's parameters are judged when every one of its calls receives a "
            "right gradient (their gradient is the sum over the calls)."
        )
    if search.inconclusive:
        notes.append(
            f"{counted(len(search.inconclusive), 'probe')} could not be judged (a kink along the "
            "direction, e.g. a ReLU at 0) and counted as right."
        )
    unjudged = [v for v in search.verdicts.values() if v == "receives_wrong"]
    if unjudged:
        notes.append(
            f"{counted(len(unjudged), 'module call')} received a wrong gradient: what "
            f"{noun(len(unjudged), 'it passes', 'they pass')} on cannot show whether "
            f"{noun(len(unjudged), 'its', 'their')} own backward is right."
        )
    return notes
