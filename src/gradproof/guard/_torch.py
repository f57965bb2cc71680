"""The gradient guard for PyTorch training loops: checks a module's current parameters."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from gradproof.checking.options import CheckOptions
from gradproof.errors import InputError
from gradproof.guard._core import _Guard
from gradproof.results import CheckResult

if TYPE_CHECKING:
    import torch

__all__ = ["TORCH_OPTIONS", "TorchGradientGuard"]

TORCH_OPTIONS = (frozenset(CheckOptions.names()) - {"seed"}) | {"vmap"}
"""The options of :func:`gradproof.torch.check_module` a PyTorch guard passes through."""


class TorchGradientGuard(_Guard):
    """Check a PyTorch module's gradients every few training steps, on a fixed batch.

    When a check is due, :func:`gradproof.torch.check_module` compares the
    module's autograd gradients (custom ``autograd.Function`` layers
    included) with finite differences at its current parameters. The module
    is evaluated on copies of its parameters and buffers, so neither they,
    their ``.grad``, nor the optimiser's state change, and the training's
    random streams are restored after the check.

    Parameters
    ----------
    module : torch.nn.Module
        The model being trained. It is checked in the mode it is in
        (``train()`` or ``eval()``); `seed` freezes its dropout.
    inputs : torch.Tensor, or tuple or list of arguments
        A small fixed batch: ``module(*inputs)``. A few dozen examples are
        enough; the check costs about two forward passes per parameter entry,
        or two per tensor for large models.
    loss_fn : callable ``loss_fn(output) -> scalar tensor``
        Turns the module's output into the loss, e.g.
        ``lambda out: F.cross_entropy(out, target)`` with the batch's target.
    every, at, first, on_failure, seed, allow_inconclusive
        As for :class:`GradientGuard`.
    **check_options
        Passed to :func:`gradproof.torch.check_module` (`vmap`, `precision`,
        `mode`, `rtol`, `max_evals`, ...), over the guard's defaults
        (:data:`~gradproof.guard.DEFAULT_CHECK_OPTIONS`).

    Raises
    ------
    BackendUnavailableError
        If PyTorch is not installed.
    InputError
        If `module` is not an ``nn.Module``, `loss_fn` is not callable, or
        the schedule or an option is invalid.

    See Also
    --------
    GradientGuard : the guard for numpy models with hand-written gradients.
    gradproof.torch.check_module : the check each due step runs.

    Examples
    --------
    >>> import torch
    >>> _ = torch.manual_seed(0)
    >>> net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))
    >>> x, y = torch.randn(8, 3), torch.randn(8, 1)
    >>> guard = TorchGradientGuard(net, x, lambda out: (out - y).pow(2).mean(), every=2)
    >>> optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    >>> for step in range(4):
    ...     optimizer.zero_grad()
    ...     (net(x) - y).pow(2).mean().backward()
    ...     optimizer.step()
    ...     _ = guard(step)
    >>> print(guard.summary())  # doctest: +ELLIPSIS
    2 checks at steps 0, 2: all passed (...)
    """

    def __init__(
        self,
        module: torch.nn.Module,
        inputs: Any,
        loss_fn: Callable[[Any], torch.Tensor],
        *,
        every: int | None = None,
        at: Iterable[int] | None = None,
        first: bool | None = None,
        on_failure: str = "stop",
        seed: int | None = 0,
        allow_inconclusive: bool = True,
        **check_options: Any,
    ) -> None:
        import torch

        from gradproof import torch as torch_adapter  # raises BackendUnavailableError

        if not isinstance(module, torch.nn.Module):
            raise InputError(
                f"`module` must be a torch.nn.Module; got a {type(module).__name__}. For a "
                "numpy model with a hand-written gradient use `GradientGuard(loss, grad)`."
            )
        if not callable(loss_fn):
            raise InputError(
                f"`loss_fn` must turn the module's output into a scalar loss; got a "
                f"{type(loss_fn).__name__}. Pass e.g. `lambda out: out.pow(2).mean()`."
            )
        super().__init__(
            every=every,
            at=at,
            first=first,
            on_failure=on_failure,
            seed=seed,
            allow_inconclusive=allow_inconclusive,
            check_options=check_options,
            known_options=TORCH_OPTIONS,
            owner="TorchGradientGuard",
        )
        self.module = module
        self.inputs = inputs
        self.loss_fn = loss_fn
        self._check_module: Callable[..., CheckResult] = torch_adapter.check_module

    def __call__(self, step: int) -> CheckResult | None:
        """Check the module's current parameters at `step` if a check is due.

        Parameters
        ----------
        step : int
            The training step (non-negative, usually increasing by one).

        Returns
        -------
        CheckResult or None
            The check's result when one ran (and did not stop training),
            with the parameters named as ``module.named_parameters()`` names
            them; else None.

        Raises
        ------
        GuardError
            If a gradient is wrong and ``on_failure="stop"``.
        NondeterministicLossError
            If the loss is random even with the guard's seed.
        UserCodeError
            If the module, `loss_fn` or a backward raises during the check.
        """
        __tracebackhide__ = True
        return self._step(step, self._check, stacklevel=2)

    def _check(self) -> CheckResult:
        return self._check_module(
            self.module, self.inputs, self.loss_fn, seed=self.seed, **self.check_options
        )
