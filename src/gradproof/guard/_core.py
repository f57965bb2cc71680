"""The guard's machinery: its schedule, its records, and what it does with a verdict.

Note [Why a guard checks only now and then]
    A gradient check costs about two loss evaluations per parameter entry
    (or two per tensor along random directions), far more than a training
    step, so it runs every K steps on a small fixed batch: often enough to
    catch a backward pass that goes wrong mid-training (a code path that
    switches on with a schedule, a layer unfrozen late, a kink the weights
    drift into), rarely enough to cost a few percent of the run.

Note [Schedules that skip]
    A check is due at step ``s`` when a scheduled step lies between the
    previous call's step (excluded) and ``s`` (included), not only when ``s``
    is itself scheduled: a loop that calls the guard every few steps, or a
    step counter that jumps (resumed training), still gets its checks. A
    repeated step (gradient accumulation calls once per micro-batch with the
    same optimiser step) is checked once, and a step counter that goes back
    (a new run, a per-epoch counter) starts the window afresh.

Note [The guard leaves the training's randomness alone]
    The check re-seeds Python's, numpy's and torch's global generators before
    every evaluation (that is what freezes dropout). Left at that, the
    training loop's next dropout mask or shuffle would come from the guard's
    seed, and a run with the guard would differ from one without it. The
    guard saves the generators' states before the check and restores them
    after, so training draws exactly what it would have drawn.
"""

from __future__ import annotations

import bisect
import time
import warnings
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import Any

import numpy as np

from gradproof.checking.check import NondeterministicLossError
from gradproof.engine.randomness import preserved_random_state
from gradproof.errors import GradproofError, GradproofWarning, InputError, UserCodeError
from gradproof.guard._records import (
    GuardError,
    GuardRecord,
    _failure_message,
    _list_steps,
    _outcomes,
    _percent,
    _seconds,
)
from gradproof.results import CheckResult, Verdict

__all__ = ["DEFAULT_CHECK_OPTIONS", "DEFAULT_EVERY", "ON_FAILURE"]

DEFAULT_EVERY = 100
"""Steps between two checks when neither `every` nor `at` is given."""

ON_FAILURE = ("stop", "warn")
"""What a guard can do with a wrong gradient: raise :class:`GuardError`, or warn and go on."""

DEFAULT_CHECK_OPTIONS: Mapping[str, Any] = MappingProxyType({"progress": False, "max_evals": 2000})
"""The options a guard passes to the check unless told otherwise.

``progress=False``: a progress bar would interleave with the training's own
output; :meth:`GradientGuard.summary` reports instead. ``max_evals=2000``:
``mode="auto"`` then sweeps every entry of models up to about 980 entries
(which localises a bug exactly) and probes larger ones along random
directions, two evaluations per tensor plus a few per wrong entry, so a check
costs at most about 2000 evaluations of the loss on the small batch, however
large the model. Directional probes catch a wrong tensor with probability one
(Note [Choosing a strategy] in :mod:`gradproof.checking.check`).
"""


class _Guard:
    """A schedule, a history and the reaction to a verdict; subclasses say how to check."""

    def __init__(
        self,
        *,
        every: int | None,
        at: Iterable[int] | None,
        first: bool | None,
        on_failure: str,
        seed: int | None,
        allow_inconclusive: bool,
        check_options: Mapping[str, Any],
        known_options: frozenset[str],
        owner: str,
    ) -> None:
        self.at: tuple[int, ...] = () if at is None else _validate_at(at)
        if every is None and at is None:
            every = DEFAULT_EVERY
        if every is not None and (
            isinstance(every, bool) or not isinstance(every, (int, np.integer)) or every < 1
        ):
            raise InputError(
                f"`every` must be a positive number of steps; got {every!r}. Pass e.g. "
                "`every=100`, or `at=[...]` for chosen steps only."
            )
        self.every: int | None = None if every is None else int(every)
        self.first: bool = (at is None or every is not None) if first is None else bool(first)
        if self.every is None and not self.at and not self.first:
            raise InputError(
                "The guard would never check: `at` is empty and neither `every` nor `first=True` "
                "was given. Pass `every=K`, some steps in `at`, or `first=True`."
            )
        if on_failure not in ON_FAILURE:
            choices = ", ".join(repr(c) for c in ON_FAILURE)
            raise InputError(f"`on_failure` must be one of {choices}; got {on_failure!r}.")
        self.on_failure = on_failure
        if seed is not None and (
            isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0
        ):
            raise InputError(
                f"`seed` must be a non-negative integer or None; got {seed!r}. Keep the default "
                "(0) to freeze dropout and other randomness during the check."
            )
        self.seed = None if seed is None else int(seed)
        self.allow_inconclusive = bool(allow_inconclusive)
        unknown = sorted(set(check_options) - known_options)
        if unknown:
            raise InputError(
                f"{owner} got unknown option{'s' if len(unknown) > 1 else ''} "
                f"{', '.join(map(repr, unknown))}; the options it passes to the check are "
                f"{', '.join(sorted(known_options))}."
            )
        self._check_options = {**DEFAULT_CHECK_OPTIONS, **check_options}
        self._records: list[GuardRecord] = []
        self._last_step: int | None = None
        self._n_calls = 0
        self._started: float | None = None
        self._last_seen: float | None = None

    @property
    def check_options(self) -> Mapping[str, Any]:
        """The options each check runs with: the defaults, updated with the guard's (read-only)."""
        # A plain dict behind a read-only view: the guard stays picklable (Lightning's spawn).
        return MappingProxyType(self._check_options)

    def __repr__(self) -> str:
        schedule = [f"every={self.every}"] if self.every is not None else []
        schedule += [f"at={list(self.at)}"] if self.at else []
        return (
            f"{type(self).__name__}({', '.join(schedule)}, first={self.first}, "
            f"on_failure={self.on_failure!r}, seed={self.seed}, "
            f"{len(self._records)} checks in {self._n_calls} calls)"
        )

    # -- schedule ----------------------------------------------------------------------------
    def is_due(self, step: int) -> bool:
        """Whether a call at `step` would run a check (Note [Schedules that skip]).

        Parameters
        ----------
        step : int
            The training step, counting from 0 or 1.

        Returns
        -------
        bool
            True for the first call when ``first`` is set, and when a
            scheduled step was reached since the previous call.
        """
        step = _validate_step(step)
        if self._last_step is None:
            return self.first or self._scheduled(step - 1, step)
        if step == self._last_step:
            return False
        low = step - 1 if step < self._last_step else self._last_step
        return self._scheduled(low, step)

    def next_due(self) -> int | None:
        """Return the next scheduled step after the last call's, or None if there is none.

        Returns
        -------
        int or None
            The smallest scheduled step after the latest call's step (after
            -1 before any call; the first call is also checked when ``first``).
        """
        after = -1 if self._last_step is None else self._last_step
        candidates = []
        if self.every is not None:
            candidates.append((max(after, 0) // self.every + 1) * self.every)
        later = bisect.bisect_right(self.at, after)
        if later < len(self.at):
            candidates.append(self.at[later])
        return min(candidates, default=None)

    def _scheduled(self, low: int, high: int) -> bool:
        """Whether a scheduled step lies in ``(low, high]``."""
        if self.every is not None and max(high, 0) // self.every > max(low, 0) // self.every:
            return True
        return bisect.bisect_right(self.at, high) > bisect.bisect_right(self.at, low)

    # -- history -----------------------------------------------------------------------------
    @property
    def history(self) -> tuple[GuardRecord, ...]:
        """The checks run so far, oldest first."""
        return tuple(self._records)

    @property
    def n_calls(self) -> int:
        """How many times the guard was called (checks or not)."""
        return self._n_calls

    def summary(self) -> str:
        """Return one line on the checks so far: how many, at which steps, verdicts, cost.

        Returns
        -------
        str
            E.g. ``"4 checks at steps 0, 100, 200, 300: all passed (2.1 s, 3% of
            training time)"``. The share of training time is the checks' time
            over the time from the first call to the latest one, given once
            the guard has been called more than once.
        """
        records = self._records
        if not records:
            upcoming = self.next_due()
            if self._n_calls == 0 and self.first:
                later = "; the first call will run one"
            elif upcoming is None:
                later = "; none is scheduled"
            else:
                later = f"; the next is due at step {upcoming}"
            calls = f"{self._n_calls} call{'' if self._n_calls == 1 else 's'}"
            return f"no gradient checks yet ({calls}){later}"
        spent = sum(r.seconds for r in records)
        cost = f"{_seconds(spent)} s"
        elapsed = (
            self._last_seen - self._started
            if self._started is not None and self._last_seen is not None
            else 0.0
        )
        if self._n_calls > 1 and elapsed > 0:
            cost += f", {_percent(spent / elapsed)} of training time"
        noun = "check" if len(records) == 1 else "checks"
        steps = _list_steps([r.step for r in records])
        return f"{len(records)} {noun} at step{'s' if len(records) > 1 else ''} {steps}: " + (
            f"{_outcomes(records)} ({cost})"
        )

    # -- running a check ---------------------------------------------------------------------
    def _step(
        self, step: int, run: Callable[[], CheckResult], *, stacklevel: int
    ) -> CheckResult | None:
        """Run `run` if a check is due at `step`, record it, and react to its verdict."""
        __tracebackhide__ = True
        due = self.is_due(step)
        now = time.perf_counter()
        if self._started is None:
            self._started = now
        self._n_calls += 1
        self._last_step = int(step)
        if not due:
            self._last_seen = now
            return None
        try:
            with preserved_random_state():
                result = run()
        except GradproofError as error:
            self._last_seen = time.perf_counter()
            raise _at_step(error, int(step), self.seed) from error
        end = time.perf_counter()
        self._last_seen = end
        if result.interrupted:
            # check() turns Ctrl-C into a partial result; during training the person wants to stop.
            raise KeyboardInterrupt(f"gradient check interrupted at step {step}")
        verdict = result.verdict
        failed = verdict is Verdict.FAIL or (
            verdict is Verdict.INCONCLUSIVE and not self.allow_inconclusive
        )
        self._records.append(
            GuardRecord(
                step=int(step),
                verdict=verdict,
                seconds=end - now,
                n_evals=result.n_evals,
                result=result,
                failed=failed,
            )
        )
        if failed:
            message = _failure_message(result, int(step))
            if self.on_failure == "stop":
                raise GuardError(message, result=result, step=int(step))
            warnings.warn(message, GradproofWarning, stacklevel=stacklevel + 1)
        return result


def _at_step(error: GradproofError, step: int, seed: int | None) -> BaseException:
    """Return `error` with the step named in its message (same type), or unchanged."""
    where = f"the gradient guard's check at step {step} could not run: "
    if isinstance(error, NondeterministicLossError):
        advice = (
            " The guard was made with `seed=None`, so nothing was re-seeded: keep its default "
            "`seed=0`."
            if seed is None
            else ""
        )
        return NondeterministicLossError(where + str(error) + advice)
    if type(error) is InputError:
        return InputError(where + str(error))
    if type(error) is UserCodeError:
        return UserCodeError(where + str(error), function=error.function)
    return error


def _validate_step(step: object) -> int:
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
        raise InputError(
            f"`step` must be a non-negative integer (the training step); got {step!r}."
        )
    return int(step)


def _validate_at(at: Iterable[int]) -> tuple[int, ...]:
    if isinstance(at, (str, bytes)) or not isinstance(at, Iterable):
        raise InputError(f"`at` must be a collection of steps, e.g. `at=[0, 10, 100]`; got {at!r}.")
    steps = list(at)
    bad = [s for s in steps if isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 0]
    if bad:
        raise InputError(f"`at` must hold non-negative integer steps; got {bad[0]!r} in {steps!r}.")
    return tuple(sorted({int(s) for s in steps}))
