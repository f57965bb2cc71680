"""Calls between the course's public functions go through :mod:`gradproof.course`.

Note [Rebinding the course's functions]
    In the assignment, the student writes ``forward_propagation``,
    ``backward_propagation`` and the network's passes, and the checks call
    whatever the notebook holds under those names. ``gradproof.course`` keeps
    that: rebinding one of its public functions (``course.backward_propagation
    = my_backward``, or a test's ``monkeypatch.setattr``) changes what
    :func:`~gradproof.course.gradient_check`, :func:`~gradproof.course.gradient_check_n`
    and :func:`~gradproof.course.forward_propagation_n` call, as it did when the
    course was one module. The functions live in the package's private modules,
    so a call between them looks the callee up in the package when it is made
    (:func:`_public`), not in the caller's module.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, TypeVar, cast

_F = TypeVar("_F", bound=Callable[..., Any])

_PACKAGE = __name__.rpartition(".")[0]
"""``gradproof.course``, the package that re-exports the public functions."""


def _public(function: _F) -> _F:
    """Return what ``gradproof.course`` holds now under `function`'s name.

    That is `function` itself unless the name was rebound there (Note
    [Rebinding the course's functions]); `function` too while the package is
    still being imported.
    """
    package = sys.modules.get(_PACKAGE)
    return cast(_F, getattr(package, function.__name__, function))
