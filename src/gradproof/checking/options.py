"""The options of a check, as one typed, validated, immutable object.

:func:`gradproof.check` takes its options as keywords, the user-facing
surface; it builds a :class:`CheckOptions` from them, and everything that runs
a check on someone's behalf (the PyTorch and JAX adapters, the training
guards, the command line, the pytest plugin) passes a :class:`CheckOptions`
through instead of threading a set of keyword names
(:func:`~gradproof.checking.check.check_with_options`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Collection, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

import numpy as np

from gradproof.engine.execution import Engine
from gradproof.errors import InputError

__all__ = ["DIALECTS", "MAX_LISTED_ENTRIES", "METHODS", "MODES", "PRECISIONS", "CheckOptions"]

MAX_LISTED_ENTRIES = 20
"""How many wrong (or inconclusive) entries each parameter report lists, worst first."""

METHODS = ("central", "forward", "backward", "central4", "richardson", "complex")
"""The finite-difference methods :func:`gradproof.check` accepts."""

MODES = ("auto", "full", "directional", "sampled")
"""The strategies :func:`gradproof.check` accepts (Note [Choosing a strategy])."""

DIALECTS = ("numpy", "torch", "jax")
"""The code a gradient comes from, for the words of the diagnosis hints."""

PRECISIONS = ("auto", "native")
"""How low-precision parameters are differenced: in float64 where possible, or natively."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckOptions:
    """The knobs of one check; see :func:`gradproof.check` for what each does.

    Every field is validated when the object is made, so a bad option is an
    :class:`~gradproof.errors.InputError` before any evaluation, wherever the
    options came from.

    Attributes
    ----------
    mode : {"auto", "full", "directional", "sampled"}
        The strategy.
    method : {"central", "forward", "backward", "central4", "richardson", "complex"}
        The finite differences.
    eps, rel_step : float or None
        An absolute or a relative step (at most one).
    rtol : float or None
        Relative tolerance (None: by dtype).
    atol : float
        Absolute tolerance.
    seed : int or None
        Re-seed the global generators with it before every evaluation.
    precision : {"auto", "native"}
        Difference low-precision parameters in float64 where the loss allows.
    noise : bool
        Measure the loss's noise.
    max_evals : int or None
        A cap on the loss evaluations of the whole check.
    time_budget : float or None
        A wall-clock deadline, in seconds.
    n_probes : int
        Random directions per tensor in directional mode.
    n_samples : int or None
        Entries measured in sampled mode.
    executor : None, int, concurrent.futures.Executor or Engine
        What runs the evaluations.
    batch_size : int or None
        Points per call of the batched loss (with ``loss_batch``).
    progress : bool or None
        Show a progress bar (None: on a terminal).
    max_listed : int or None
        Wrong and inconclusive entries listed per parameter (None: all).
    dialect : {"numpy", "torch", "jax"}
        The code the gradient comes from: the diagnosis hints speak its
        language (Note [Hints fit the code] in
        :mod:`gradproof.checking.diagnose_dialects`). The adapters set it.

    Examples
    --------
    >>> options = CheckOptions(mode="directional", rtol=1e-4)
    >>> options.replace(n_probes=2).n_probes, options.method
    (2, 'central')
    >>> CheckOptions(mode="fast")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    gradproof.errors.InputError: `mode` must be one of 'auto', 'full', ...; got 'fast'.
    """

    mode: str = "auto"
    method: str = "central"
    eps: float | None = None
    rel_step: float | None = None
    rtol: float | None = None
    atol: float = 0.0
    seed: int | None = None
    precision: str = "auto"
    noise: bool = True
    max_evals: int | None = None
    time_budget: float | None = None
    n_probes: int = 1
    n_samples: int | None = None
    executor: Executor | Engine | int | None = None
    batch_size: int | None = None
    progress: bool | None = None
    max_listed: int | None = MAX_LISTED_ENTRIES
    dialect: str = "numpy"

    def __post_init__(self) -> None:
        _choose("mode", self.mode, MODES)
        _choose("dialect", self.dialect, DIALECTS)
        _choose("method", self.method, METHODS)
        _choose("precision", self.precision, PRECISIONS)
        for label, value in (("rtol", self.rtol), ("atol", self.atol)):
            if value is not None and not (
                isinstance(value, (int, float, np.floating))
                and not isinstance(value, bool)
                and np.isfinite(value)
                and value >= 0
            ):
                raise InputError(
                    f"`{label}` must be a non-negative finite number; got {value!r}. "
                    "Leave it unset for the default."
                )
        if self.seed is not None and (
            isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer))
        ):
            raise InputError(f"`seed` must be an integer or None; got {self.seed!r}.")
        for label, count in (
            ("max_evals", self.max_evals),
            ("n_samples", self.n_samples),
            ("batch_size", self.batch_size),
        ):
            if count is not None and not _positive_int(count):
                raise InputError(
                    f"`{label}` must be a positive integer; got {count!r}. Leave it unset for "
                    "the default."
                )
        if not _positive_int(self.n_probes):
            raise InputError(f"`n_probes` must be a positive integer; got {self.n_probes!r}.")
        budget = self.time_budget
        if budget is not None and not (
            isinstance(budget, (int, float)) and math.isfinite(budget) and budget > 0
        ):
            raise InputError(f"`time_budget` must be a positive number of seconds; got {budget!r}.")
        listed = self.max_listed
        if listed is not None:
            if isinstance(listed, bool) or not isinstance(listed, (int, np.integer)):
                raise InputError(f"`max_listed` must be an integer or None; got {listed!r}.")
            if listed < 0:
                raise InputError(
                    f"`max_listed` must be 0 or more; got {listed}. Pass None to list every entry."
                )

    def replace(self, **changes: Any) -> CheckOptions:
        """Return a copy with `changes` applied (and validated)."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """Return the option names, in order: the keywords :func:`gradproof.check` takes."""
        return tuple(field.name for field in dataclasses.fields(cls))

    @classmethod
    def from_keywords(
        cls,
        keywords: Mapping[str, Any],
        *,
        function: str,
        handled: Collection[str] = (),
        base: CheckOptions | None = None,
    ) -> CheckOptions:
        """Build options from a caller's keywords, naming any that is not an option.

        Parameters
        ----------
        keywords : mapping
            The caller's options, e.g. an adapter's ``**options``.
        function : str
            The function they were passed to, for the message.
        handled : collection of str, optional
            Options the caller sets itself, which its users may not pass
            (e.g. ``"precision"`` in an adapter that chooses the precision).
        base : CheckOptions, optional
            Defaults to start from (the caller's own defaults).

        Raises
        ------
        InputError
            If a keyword is not an option (or is one `handled` by the caller),
            or an option is invalid.
        """
        allowed = [name for name in cls.names() if name not in handled]
        unknown = sorted(set(keywords) - set(allowed))
        if unknown:
            plural = "s" if len(unknown) > 1 else ""
            raise InputError(
                f"Unknown option{plural} {', '.join(f'`{name}`' for name in unknown)} for "
                f"`{function}`; the options it passes to gradproof.check are "
                f"{', '.join(f'`{name}`' for name in allowed)}."
            )
        return (base or cls()).replace(**keywords)


def _choose(label: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        listed = ", ".join(repr(choice) for choice in choices)
        raise InputError(f"`{label}` must be one of {listed}; got {value!r}.")


def _positive_int(value: object) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, np.integer)) and int(value) >= 1
