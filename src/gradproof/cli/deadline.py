"""A hard stop for ``--time-budget``: a timer that interrupts a loss that does not return."""

from __future__ import annotations

import signal
import threading
import time
from types import FrameType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    pass


class _Deadline:
    """The hard stop of ``--time-budget``: a Ctrl-C for a check that runs past its budget.

    :func:`gradproof.check` stops at its budget between evaluations; a loss
    evaluation that never returns (a hung loss) is stopped by this timer, which
    raises ``KeyboardInterrupt`` in the main thread at the budget plus a grace,
    and again after every further grace, so that the check returns what it
    measured. Only where ``signal.setitimer`` exists and in the main thread;
    elsewhere it does nothing. The previous SIGALRM handler and timer are
    restored on exit.
    """

    def __init__(self, seconds: float | None) -> None:
        self.seconds = seconds
        self.fired = 0
        self.armed = False
        self._previous: Any = None
        self._timer = (0.0, 0.0)
        self._started = 0.0

    @property
    def grace(self) -> float:
        """Seconds the check has past its budget before it is interrupted."""
        return max(_GRACE_SECONDS, 0.1 * (self.seconds or 0.0))

    def __enter__(self) -> _Deadline:
        if (
            self.seconds is None
            or not hasattr(signal, "setitimer")
            or threading.current_thread() is not threading.main_thread()
        ):
            return self
        self._previous = signal.signal(signal.SIGALRM, self._interrupt)
        self._started = time.monotonic()
        self._timer = signal.setitimer(signal.ITIMER_REAL, self.seconds + self.grace, self.grace)
        self.armed = True
        return self

    def _interrupt(self, signum: int, frame: FrameType | None) -> None:
        if self.armed:
            self.fired += 1
            raise KeyboardInterrupt(f"the --time-budget of {self.seconds:g} s ran out")

    def __exit__(self, *exc_info: object) -> None:
        if not self.armed:
            return
        self.armed = False
        signal.setitimer(signal.ITIMER_REAL, 0)
        previous = self._previous
        signal.signal(signal.SIGALRM, signal.SIG_DFL if previous is None else previous)
        delay, interval = self._timer
        if delay > 0:  # someone else's timer was running: let it run on
            left = delay - (time.monotonic() - self._started)
            signal.setitimer(signal.ITIMER_REAL, max(left, 1e-3), interval)


_GRACE_SECONDS = 2.0
"""The least time a check may run past ``--time-budget`` before its loss is interrupted."""
