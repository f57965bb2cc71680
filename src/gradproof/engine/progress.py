"""A one-line progress bar with the time left, for long finite-difference sweeps.

A check of a large model makes tens of thousands of loss evaluations. The bar
tells the user how far it got and how long the rest will take::

    gradproof  [#########           ]  45%  9,010/20,022 evaluations  ~3 s left

It is drawn on a terminal only (by default: when the stream is a tty), so
redirected output, pytest captures and CI logs stay clean. It is redrawn in
place (a carriage return, no escape codes) at most once per ``min_interval``
seconds, and the engines advance it once per chunk of work
(:mod:`gradproof.engine.execution`), so its cost is invisible next to the evaluations
it counts.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from types import TracebackType
from typing import TextIO

__all__ = ["Progress", "time_left"]

_BAR_WIDTH = 20


class Progress:
    """Count evaluations and draw a progress bar with an estimate of the time left.

    Parameters
    ----------
    total : int
        How many evaluations are planned. It can grow with :meth:`add_total`.
    enabled : bool or None, optional
        Whether to draw. ``None`` (the default) draws only when `stream` is a
        terminal, so logs and captured output get no control characters.
    stream : text stream, optional
        Where to draw; ``sys.stderr`` by default.
    label : str, optional
        The text at the start of the line.
    min_interval : float, optional
        The least time in seconds between two redraws.
    clock : callable, optional
        Returns the time in seconds; ``time.monotonic`` by default (tests pass a fake).

    Notes
    -----
    The time left is the work remaining divided by the average rate since the
    bar was created. Nothing is drawn before `min_interval` has passed, so a
    quick check prints nothing at all. :meth:`close` ends a drawn line with a
    newline, so what follows (a report, a traceback) starts on a fresh line.

    Examples
    --------
    >>> import io
    >>> out = io.StringIO()  # not a terminal: the bar stays hidden
    >>> with Progress(100, stream=out) as progress:
    ...     progress.advance(60)
    ...     progress.add_total(20)
    >>> progress.done, progress.total, out.getvalue()
    (60, 120, '')
    """

    __slots__ = (
        "_clock",
        "_closed",
        "_done",
        "_drawn_width",
        "_enabled",
        "_label",
        "_min_interval",
        "_next_draw",
        "_start",
        "_stream",
        "_total",
    )

    def __init__(
        self,
        total: int,
        *,
        enabled: bool | None = None,
        stream: TextIO | None = None,
        label: str = "gradproof",
        min_interval: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._stream = sys.stderr if stream is None else stream
        self._enabled = _is_terminal(self._stream) if enabled is None else bool(enabled)
        self._total = int(total)
        self._done = 0
        self._label = label
        self._min_interval = float(min_interval)
        self._clock = clock
        self._start = clock() if self._enabled else 0.0
        self._next_draw = self._start + self._min_interval
        self._drawn_width = 0  # 0 until something was drawn
        self._closed = False

    @property
    def done(self) -> int:
        """Evaluations counted so far."""
        return self._done

    @property
    def total(self) -> int:
        """Evaluations planned so far."""
        return self._total

    @property
    def enabled(self) -> bool:
        """Whether the bar is drawn."""
        return self._enabled

    def advance(self, n: int = 1) -> None:
        """Count `n` more evaluations, and redraw if the last drawing is old enough."""
        self._done += n
        if self._enabled:
            now = self._clock()
            if now >= self._next_draw:
                self._draw(now)

    def add_total(self, n: int) -> None:
        """Plan `n` more evaluations (e.g. re-measurements decided along the way)."""
        self._total += n

    def close(self) -> None:
        """Draw the final state and end the line, if anything was drawn; idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._enabled and self._drawn_width:
            self._draw(self._clock(), final=True)
            self._stream.write("\n")
            self._stream.flush()
        self._enabled = False

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def render(self, now: float, *, final: bool = False) -> str:
        """Return the line drawn at time `now` (without the carriage return before it)."""
        total = max(self._total, self._done, 1)
        fraction = self._done / total
        filled = int(fraction * _BAR_WIDTH)
        bar = "#" * filled + " " * (_BAR_WIDTH - filled)
        line = (
            f"{self._label}  [{bar}]  {int(fraction * 100)}%  "
            f"{self._done:,}/{self._total:,} evaluations"
        )
        if not final:
            left = time_left(self._done, self._total, now - self._start)
            if left:
                line += f"  {left}"
        return line

    def _draw(self, now: float, *, final: bool = False) -> None:
        line = self.render(now, final=final)
        # Blank out what a longer earlier line left behind; no terminal escapes needed.
        padding = " " * max(self._drawn_width - len(line), 0)
        self._stream.write(f"\r{line}{padding}")
        self._stream.flush()
        self._drawn_width = len(line)
        self._next_draw = now + self._min_interval


def time_left(done: int, total: int, elapsed: float) -> str:
    """Estimate the time left as text, e.g. ``"~3 s left"``; empty when there is no estimate.

    Parameters
    ----------
    done, total : int
        Evaluations made and planned.
    elapsed : float
        Seconds spent on the `done` evaluations.

    Returns
    -------
    str
        ``"~N s left"`` under a minute, ``"~N min left"`` under an hour, and
        ``"~H h M min left"`` beyond; ``""`` before the first evaluation, when
        no time has passed, or when nothing is left.

    Examples
    --------
    >>> time_left(100, 400, 1.0), time_left(100, 10_000, 1.0), time_left(1, 4000, 1.0)
    ('~3 s left', '~2 min left', '~1 h 7 min left')
    >>> time_left(0, 400, 1.0)
    ''
    """
    remaining = total - done
    if done <= 0 or elapsed <= 0 or remaining <= 0:
        return ""
    seconds = remaining * elapsed / done
    if seconds < 59.5:
        return f"~{max(round(seconds), 1)} s left"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"~{minutes} min left"
    hours, minutes = divmod(minutes, 60)
    return f"~{hours} h {minutes} min left" if minutes else f"~{hours} h left"


def _is_terminal(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False
