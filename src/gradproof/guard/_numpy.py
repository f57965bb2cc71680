"""The gradient guard for numpy training loops with a hand-written gradient."""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Iterable
from typing import Any

from gradproof._typing import GradFunction, LossFunction, Params
from gradproof.checking.check import check_with_options
from gradproof.checking.options import CheckOptions
from gradproof.errors import InputError
from gradproof.guard._core import _Guard
from gradproof.results import CheckResult

__all__ = ["GradientGuard"]

_NUMPY_OPTIONS = frozenset(CheckOptions.names()) - {"seed", "batch_size"}
"""The options of :func:`gradproof.check` a :class:`GradientGuard` passes through."""


class GradientGuard(_Guard):
    """Check a hand-written gradient every few training steps; stop (or warn) when it is wrong.

    Call the guard once per training step, before or after the update. When
    a check is due it runs :func:`gradproof.check` on the current parameters,
    with `loss` and `grad` evaluated on a small fixed batch and every random
    generator re-seeded before each evaluation (so dropout is frozen), and
    records the result in :attr:`history`.

    Parameters
    ----------
    loss : callable ``loss(params) -> float``
        The loss on a small fixed batch: the guard does not pick data. A few
        dozen examples are enough; the check costs about two evaluations of
        it per parameter entry (see :data:`DEFAULT_CHECK_OPTIONS`).
    grad : callable ``grad(params) -> gradients``
        The hand-written gradient of `loss`, on the same batch.
    every : int, optional
        Check at steps ``every, 2 * every, ...``. By default 100, unless `at`
        is given, in which case only the steps in `at` (and the first call,
        with `first`) are checked. Given together with `at`, both apply.
    at : iterable of int, optional
        Steps to check at, e.g. ``[0, 10, 1000]``.
    first : bool, optional
        Also check at the first call, whatever its step: a gradient wrong
        from the start is caught before any training is wasted. True by
        default, unless only `at` is given (then the list is the schedule).
    on_failure : {"stop", "warn"}
        On a wrong gradient, ``"stop"`` (default) raises :class:`GuardError`;
        ``"warn"`` emits a :class:`~gradproof.errors.GradproofWarning` with the
        same text, and training continues.
    seed : int or None, optional
        Passed to :func:`gradproof.check`: Python's, numpy's and torch's
        generators are re-seeded with it before every evaluation of `loss`
        and `grad`, so a loss with dropout is a deterministic function during
        the check. 0 by default; None leaves the randomness alone (and a
        random loss then fails with ``NondeterministicLossError``). The
        training's own random streams are restored after each check (Note
        [The guard leaves the training's randomness alone]).
    allow_inconclusive : bool, optional
        Whether a check that found nothing wrong but could not judge every
        entry (a ReLU kink at the point) is acceptable; True by default. Such
        checks are recorded as inconclusive either way.
    **check_options
        Passed to :func:`gradproof.check` (`mode`, `method`, `rtol`, `atol`,
        `max_evals`, `time_budget`, `executor`, ...), over
        :data:`DEFAULT_CHECK_OPTIONS`.

    Raises
    ------
    InputError
        At construction, if the schedule, `on_failure`, `seed` or an option
        name is invalid.

    See Also
    --------
    TorchGradientGuard : the same for a PyTorch module.
    gradproof.check : the check each due step runs.

    Notes
    -----
    Errors that mean the check cannot run (a loss that is random even with
    the seed, a loss that raises) propagate whatever `on_failure` says, with
    the step added to the message: they are mistakes in the set-up, not
    findings about the gradient. A ``KeyboardInterrupt`` during a check stops
    training. See Note [Why a guard checks only now and then] and Note
    [Schedules that skip] in this module's source.

    Examples
    --------
    >>> import numpy as np
    >>> loss = lambda w: float(np.sum(w**2))
    >>> guard = GradientGuard(loss, lambda w: 2 * w, every=5)
    >>> w = np.array([1.0, -2.0, 3.0])
    >>> for step in range(12):
    ...     w = w - 0.1 * 2 * w
    ...     _ = guard(step, w)
    >>> [record.step for record in guard.history]
    [0, 5, 10]
    >>> print(guard.summary())  # doctest: +ELLIPSIS
    3 checks at steps 0, 5, 10: all passed (... s, ...% of training time)
    >>> from gradproof.guard import GuardError
    >>> wrong = GradientGuard(loss, lambda w: 4 * w, every=5)
    >>> try:
    ...     wrong(0, w)
    ... except GuardError as error:
    ...     print(error.step, error.result.suspects)
    ...     print(str(error).splitlines()[0])  # doctest: +NORMALIZE_WHITESPACE
    0 ('params',)
    gradient check failed at step 0: wrong gradient: params (2× too large)
    """

    def __init__(
        self,
        loss: LossFunction,
        grad: GradFunction,
        *,
        every: int | None = None,
        at: Iterable[int] | None = None,
        first: bool | None = None,
        on_failure: str = "stop",
        seed: int | None = 0,
        allow_inconclusive: bool = True,
        **check_options: Any,
    ) -> None:
        for label, value in (("loss", loss), ("grad", grad)):
            if not callable(value):
                raise InputError(
                    f"`{label}` must be a function of the parameters; got a "
                    f"{type(value).__name__}. The guard evaluates it at the parameters of every "
                    "due step: pass e.g. `lambda p: model_loss(X_small, Y_small, p)`."
                )
        super().__init__(
            every=every,
            at=at,
            first=first,
            on_failure=on_failure,
            seed=seed,
            allow_inconclusive=allow_inconclusive,
            check_options=check_options,
            known_options=_NUMPY_OPTIONS,
            owner="GradientGuard",
        )
        self.loss = loss
        self.grad = grad
        # Validated now, not at the first due step (a typo fails before training starts).
        self._options = CheckOptions(**self.check_options, seed=self.seed)

    def __call__(self, step: int, params: Params) -> CheckResult | None:
        """Run a check at `step` if one is due.

        Parameters
        ----------
        step : int
            The training step (non-negative, usually increasing by one).
        params : ndarray, or nested dict/list/tuple of them
            The current parameters; never modified.

        Returns
        -------
        CheckResult or None
            The check's result when one ran (and did not stop training), else None.

        Raises
        ------
        GuardError
            If a gradient is wrong and ``on_failure="stop"`` (or the check
            was inconclusive and ``allow_inconclusive=False``).
        NondeterministicLossError
            If the loss is random even with the guard's seed (or the seed is None).
        UserCodeError
            If `loss` or `grad` raises during the check.
        """
        __tracebackhide__ = True
        return self._step(step, lambda: self._check(params), stacklevel=2)

    def wrap(self, train_step: Callable[..., Any]) -> Callable[..., Any]:
        """Wrap a training step function so that the guard runs after each call.

        Parameters
        ----------
        train_step : callable ``train_step(params, *args, **kwargs) -> params or None``
            One training step: it returns the updated parameters, or None
            when it updates `params` in place.

        Returns
        -------
        callable
            A function with `train_step`'s signature that calls it, then the
            guard with the number of earlier calls as the step (0, 1, 2, ...)
            and the updated parameters, and returns what `train_step` returned.

        Examples
        --------
        >>> import numpy as np
        >>> guard = GradientGuard(lambda w: float(np.sum(w**2)), lambda w: 2 * w, every=2)
        >>> step = guard.wrap(lambda w, lr: w - lr * 2 * w)
        >>> w = np.array([1.0, -2.0])
        >>> for _ in range(5):
        ...     w = step(w, 0.1)
        >>> [record.step for record in guard.history]
        [0, 2, 4]
        """
        counter = itertools.count()

        @functools.wraps(train_step)
        def guarded(params: Params, *args: Any, **kwargs: Any) -> Any:
            __tracebackhide__ = True
            updated = train_step(params, *args, **kwargs)
            checked = params if updated is None else updated
            self._step(next(counter), lambda: self._check(checked), stacklevel=2)
            return updated

        return guarded

    def _check(self, params: Params) -> CheckResult:
        return check_with_options(self.loss, self.grad, params, self._options)
