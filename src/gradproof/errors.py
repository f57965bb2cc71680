"""Exceptions and warnings raised by gradproof.

Every gradproof exception derives from :class:`GradproofError`, and also from the
built-in class a caller would naturally catch (``ValueError`` for bad input,
``RuntimeError`` for a failure inside the caller's own code).
"""

from __future__ import annotations

import functools
from typing import Any

__all__ = ["GradproofError", "GradproofWarning", "InputError", "UserCodeError"]


class GradproofError(Exception):
    """Base class of every exception raised by gradproof."""


class InputError(GradproofError, ValueError):
    """The arguments of a check are unusable.

    The message says what is wrong, what was expected and how to fix it. It is
    raised before any expensive work is done.
    """


class UserCodeError(GradproofError, RuntimeError):
    """The caller's loss or gradient function raised an exception.

    The original exception is chained as ``__cause__``, so its traceback points
    at the caller's own code.

    Parameters
    ----------
    message : str
        What gradproof was doing when the caller's code failed.
    function : str
        Which of the caller's functions failed: ``"loss"`` or ``"grad"``.
    """

    def __init__(self, message: str, *, function: str) -> None:
        super().__init__(message)
        self.function = function

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickle rebuilds an exception as cls(*args), which lacks the keyword-only `function`;
        # a worker process's error must survive the trip back to the caller.
        return (functools.partial(type(self), function=self.function), self.args)


class GradproofWarning(UserWarning):
    """A check ran, but something about it deserves the caller's attention."""
