"""The course network's parameters: their names, shapes and size, and looking them up."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gradproof.errors import InputError

__all__ = ["PARAMETER_KEYS"]

PARAMETER_KEYS: tuple[str, ...] = ("W1", "b1", "W2", "b2", "W3", "b3")
"""The parameter names of the course's 3-layer network, in vector order."""

_GRADIENT_KEYS: tuple[str, ...] = tuple("d" + key for key in PARAMETER_KEYS)
"""The gradient names matching :data:`PARAMETER_KEYS`, in vector order."""

_SHAPES: dict[str, tuple[int, int]] = {
    "W1": (5, 4),
    "b1": (5, 1),
    "W2": (3, 5),
    "b2": (3, 1),
    "W3": (1, 3),
    "b3": (1, 1),
}
"""The shapes of the course network's parameters (layer sizes 4 -> 5 -> 3 -> 1)."""

_N_PARAMETERS = sum(rows * cols for rows, cols in _SHAPES.values())
"""The number of entries of the course network's parameter vector (47)."""


def _require(mapping: Mapping[str, Any], key: str, what: str, keys: tuple[str, ...]) -> Any:
    """Return ``mapping[key]``, raising a helpful :class:`InputError` when it is missing.

    Parameters
    ----------
    mapping : Mapping
        The dictionary passed by the caller.
    key : str
        The key to look up.
    what : str
        The argument's name, for the message (``"parameters"`` or ``"gradients"``).
    keys : tuple of str
        Every key the argument must have, for the message.

    Returns
    -------
    object
        ``mapping[key]``.

    Raises
    ------
    InputError
        If ``mapping`` is not a mapping or has no ``key``.
    """
    expected = ", ".join(repr(k) for k in keys)
    if not isinstance(mapping, Mapping):
        raise InputError(
            f"`{what}` is a {type(mapping).__name__}; expected a dict with the keys {expected} "
            "of the course's 3-layer network. Pass a dict such as the one returned by "
            "gradient_check_n_test_case()."
        )
    if key not in mapping:
        present = ", ".join(repr(k) for k in mapping) or "none"
        raise InputError(
            f"`{what}` has no key {key!r}; expected the keys {expected} of the course's "
            f"3-layer network (got: {present}). Add the {key!r} entry to `{what}`."
        )
    return mapping[key]
