"""Exceptions and warnings raised by gradproof.

Every gradproof exception derives from :class:`GradproofError`, and also from the
built-in class a caller would naturally catch (``ValueError`` for bad input,
``RuntimeError`` for a failure inside the caller's own code, ``AssertionError``
for a wrong gradient found by an ``assert_*`` helper, ``ImportError`` for a
missing optional framework).
"""

from __future__ import annotations

import functools
from typing import Any

__all__ = [
    "BackendUnavailableError",
    "GradientMismatchError",
    "GradproofError",
    "GradproofWarning",
    "InputError",
    "NondeterministicLossError",
    "UserCodeError",
    "WorkerLostError",
]


class GradproofError(Exception):
    """Base class of every exception raised by gradproof.

    Attributes
    ----------
    partial_result : CheckResult or None
        What the check had measured when this error stopped it (a result
        with ``interrupted`` set), or None when it stopped before measuring
        anything. Set by :func:`gradproof.check` on the errors it raises
        mid-check: a loss that raised at one coordinate, a lost worker.
    """

    partial_result: Any = None


class InputError(GradproofError, ValueError):
    """The arguments of a check are unusable.

    The message says what is wrong, what was expected and how to fix it. It is
    raised before any expensive work is done.
    """


class NondeterministicLossError(InputError):
    """The loss returned different values at the same parameters (pass ``seed=``)."""


class UserCodeError(GradproofError, RuntimeError):
    """The caller's loss or gradient function raised an exception.

    The original exception is chained as ``__cause__``, so its traceback points
    at the caller's own code.

    Parameters
    ----------
    message : str
        What gradproof was doing when the caller's code failed.
    function : str
        Which of the caller's functions failed: ``"loss"``, ``"grad"`` or
        ``"loss_batch"`` for :func:`gradproof.check`; ``"fn"``, ``"vjp"`` or
        ``"jvp"`` for the framework adapters; ``"import"`` or ``"params"`` when
        ``gradproof check`` imports the user's file or calls its parameter function.
    """

    def __init__(self, message: str, *, function: str) -> None:
        super().__init__(message)
        self.function = function

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickle rebuilds an exception as cls(*args), which lacks the keyword-only `function`;
        # a worker process's error must survive the trip back to the caller.
        return (functools.partial(type(self), function=self.function), self.args)


class WorkerLostError(GradproofError, RuntimeError):
    """A worker process (or a cluster's worker) died while evaluating the loss.

    gradproof restarts the workers and retries their work once; this is
    raised when the retry dies too, e.g. a loss that calls ``os._exit`` or
    runs out of memory. ``partial_result`` holds everything measured before.
    """


class GradientMismatchError(GradproofError, AssertionError):
    """A gradient check found a wrong gradient (or, when asked, could not judge one).

    Raised by the ``assert_*`` helpers of :mod:`gradproof.testing`; the
    ``check_*`` functions return the same result instead of raising. It is an
    ``AssertionError``, so test runners report it as a failed test, not an error.

    Parameters
    ----------
    message : str
        The full text report: a first line naming the wrong parameters, then
        the report of :func:`gradproof.report.text.render_result`.
    result : CheckResult
        The result of the check, for programmatic use (``err.result.suspects``).

    Attributes
    ----------
    result : CheckResult
        The result of the check.
    """

    # `result` is a CheckResult; this module imports no result type (errors sit below results in
    # the layers, docs/architecture.md), so it is typed loosely here.
    def __init__(self, message: str, *, result: Any) -> None:
        super().__init__(message)
        self.result = result

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickle rebuilds cls(*args), which lacks the keyword-only `result` (see UserCodeError).
        return (functools.partial(type(self), result=self.result), self.args)


class BackendUnavailableError(GradproofError, ImportError):
    """An optional framework that a gradproof helper needs is not installed.

    Parameters
    ----------
    message : str
        What needed the framework and what to ``pip install``.
    framework : str
        The missing framework's top-level module, e.g. ``"torch"`` or ``"jax"``;
        also stored as ``ImportError.name``.

    Attributes
    ----------
    framework : str
        The missing framework's top-level module.
    """

    def __init__(self, message: str, *, framework: str) -> None:
        super().__init__(message, name=framework)
        self.framework = framework

    def __reduce__(self) -> tuple[Any, ...]:
        return (functools.partial(type(self), framework=self.framework), self.args)


class GradproofWarning(UserWarning):
    """A check ran, but something about it deserves the caller's attention."""
