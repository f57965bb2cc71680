"""Make random losses checkable: re-seed the generators before every evaluation.

A finite difference subtracts two loss values; if the loss draws random
numbers (dropout, a shuffled or sampled batch, random augmentation), the two
values differ by the randomness, which dwarfs the change the step makes, and
a correct gradient fails. Re-seeding the generators before every evaluation
makes each evaluation draw the same numbers, so the loss becomes a
deterministic function of the parameters whose gradient can be checked.

Note [What reseeding controls]
    :func:`reseed` seeds the global generators a loss usually draws from:
    Python's :mod:`random`, numpy's legacy global generator (``np.random.rand``,
    ``np.random.shuffle`` and the other ``np.random.*`` functions) and, when
    torch has already been imported, torch's generators (``torch.manual_seed``
    seeds the CPU generator and every CUDA device's). It imports no framework
    itself: a program that has not imported torch draws nothing from it.

    It cannot reach a generator the loss creates without a seed:
    ``np.random.default_rng()``, ``random.Random()`` or a fresh
    ``torch.Generator()`` inside the loss start from operating-system entropy
    on every call. Draw from the global generators instead, or build the
    generator inside the loss from a fixed seed
    (``np.random.default_rng(0)``), or pass a seeded generator in and rebuild
    it for every evaluation. Nor does seeding make nondeterministic GPU
    kernels repeatable (atomic additions in some reductions and scatters):
    ``torch.use_deterministic_algorithms(True)`` does. JAX needs nothing: its
    random functions take explicit keys.
"""

from __future__ import annotations

import contextlib
import functools
import math
import random
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, ParamSpec, SupportsFloat, TypeVar

import numpy as np

from gradproof.errors import InputError

__all__ = ["RepeatCheck", "check_repeatable", "preserved_random_state", "reseed", "seeded"]

P = ParamSpec("P")
R = TypeVar("R")


def reseed(seed: int | np.integer[Any]) -> None:
    """Seed Python's, numpy's and (if imported) torch's global random generators.

    Parameters
    ----------
    seed : int or numpy integer
        The seed, from 0 to ``2**32 - 1`` (the range numpy's legacy generator
        accepts).

    Raises
    ------
    InputError
        If `seed` is not an integer in that range.

    Notes
    -----
    Torch is seeded only when ``"torch"`` is already in ``sys.modules``;
    importing it just to seed it would cost seconds and change nothing.
    Generators created inside the loss without a seed, such as
    ``np.random.default_rng()``, cannot be controlled: draw from the global
    generators or build the generator from a fixed seed inside the loss
    (see Note [What reseeding controls]).

    Examples
    --------
    >>> import random
    >>> import numpy as np
    >>> reseed(7)
    >>> first = (random.random(), np.random.rand())
    >>> reseed(7)
    >>> first == (random.random(), np.random.rand())
    True
    """
    value = _validate_seed(seed)
    random.seed(value)
    np.random.seed(value)  # noqa: NPY002 - the legacy global generator is what losses draw from
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.manual_seed(value)


def seeded(fun: Callable[P, R], seed: int | np.integer[Any]) -> Callable[P, R]:
    """Wrap a function so that every call re-seeds the random generators first.

    Parameters
    ----------
    fun : callable
        Typically a loss that draws random numbers (dropout, sampling).
    seed : int or numpy integer
        Passed to :func:`reseed` before every call, from 0 to ``2**32 - 1``.

    Returns
    -------
    callable
        A function with `fun`'s signature, name and docstring
        (:func:`functools.wraps`) that calls ``reseed(seed)`` and then `fun`.

    Raises
    ------
    InputError
        If `seed` is not an integer from 0 to ``2**32 - 1``; checked at once,
        not at the first call.

    Examples
    --------
    A loss with dropout draws a new mask at every call; seeded, it draws the
    same one:

    >>> import numpy as np
    >>> def loss(w):
    ...     mask = np.random.rand(w.size) > 0.5
    ...     return float(np.sum((w * mask) ** 2))
    >>> w = np.arange(1.0, 21.0)
    >>> steady = seeded(loss, seed=0)
    >>> steady(w) == steady(w)
    True
    """
    value = _validate_seed(seed)

    @functools.wraps(fun)
    def reseeded(*args: P.args, **kwargs: P.kwargs) -> R:
        reseed(value)
        return fun(*args, **kwargs)

    return reseeded


@dataclass(frozen=True, slots=True, kw_only=True)
class RepeatCheck:
    """Whether a loss returns the same value twice at the same parameters.

    Attributes
    ----------
    values : tuple of (float, float)
        The two values, in the order they were computed.
    deterministic : bool
        Whether they are identical (NaN counts as identical to NaN).
    message : str
        Empty when deterministic; otherwise what differs, the usual causes
        and the fix.
    """

    values: tuple[float, float]
    deterministic: bool
    message: str


def check_repeatable(evaluate: Callable[[], SupportsFloat]) -> RepeatCheck:
    """Evaluate a loss twice at the same point and require identical values.

    Parameters
    ----------
    evaluate : callable ``evaluate() -> float``
        Computes the loss at fixed parameters, e.g.
        ``lambda: loss(params)``. Exceptions it raises propagate unchanged.

    Returns
    -------
    RepeatCheck
        ``deterministic`` is true when the two values are equal. No tolerance
        is allowed: a deterministic computation repeats bit for bit, and a
        random one, however slightly it differs, feeds its randomness into
        every finite difference.

    Examples
    --------
    >>> import numpy as np
    >>> check_repeatable(lambda: 1.5).deterministic
    True
    >>> noisy = check_repeatable(lambda: float(np.random.rand()))
    >>> noisy.deterministic, "seed=" in noisy.message
    (False, True)
    """
    first = float(evaluate())
    second = float(evaluate())
    same = first == second or (math.isnan(first) and math.isnan(second))
    message = (
        ""
        if same
        else (
            f"The loss returned different values at the same parameters ({first!r} vs "
            f"{second!r}), so finite differences of it measure its randomness, not its slope. "
            "Typical causes are dropout, data shuffling or sampling, random augmentation, and "
            "nondeterministic GPU kernels. Pass `seed=` to gradproof.check so that every "
            "evaluation re-seeds Python's, numpy's and torch's generators, or disable the "
            "randomness (e.g. model.eval(), a fixed batch, "
            "torch.use_deterministic_algorithms(True))."
        )
    )
    return RepeatCheck(values=(first, second), deterministic=same, message=message)


def _validate_seed(seed: object) -> int:
    """Return the seed as a Python int, refusing what numpy's legacy generator refuses."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise InputError(
            f"`seed` must be an integer; got a {type(seed).__name__} ({seed!r}). Pass e.g. seed=0."
        )
    if not 0 <= int(seed) < 2**32:
        raise InputError(
            f"`seed` must be from 0 to 2**32 - 1 (numpy's legacy generator accepts no other); "
            f"got {seed}. Pass e.g. seed=0."
        )
    return int(seed)


@contextlib.contextmanager
def preserved_random_state() -> Iterator[None]:
    """Restore Python's, numpy's and torch's global generators on exit, however it exits.

    A check re-seeds the global generators before every evaluation when it
    is given a seed (Note [What reseeding controls]); the caller's program
    must find them as it left them, after a pass, a failure, an error or
    Ctrl-C. Torch's generators (CPU, and CUDA where initialised) are saved
    only when torch is already imported.

    Examples
    --------
    >>> import numpy as np
    >>> np.random.seed(1)
    >>> with preserved_random_state():
    ...     reseed(7)
    >>> np.random.seed(1)
    >>> first = np.random.rand()
    >>> np.random.seed(1)
    >>> with preserved_random_state():
    ...     reseed(7)
    >>> bool(np.random.rand() == first)
    True
    """
    python_state = random.getstate()
    numpy_state = np.random.get_state()  # noqa: NPY002 - the legacy global generator is restored
    torch = sys.modules.get("torch")
    torch_state = None if torch is None else torch.get_rng_state()
    cuda_states = (
        torch.cuda.get_rng_state_all()
        if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized()
        else None
    )
    try:
        yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)  # noqa: NPY002
        if torch is not None:
            torch.set_rng_state(torch_state)
            if cuda_states is not None:
                torch.cuda.set_rng_state_all(cuda_states)
