"""Losses for the execution tests, at module level so that worker processes can import them.

Plain pickle and the 'spawn' start method send functions by reference (module
and name), so the functions a worker process must run live here rather than in
the test module.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time

import numpy as np

from gradproof.errors import UserCodeError


class RowWise:
    """A loss with a batched form whose values equal the single form's, bit for bit.

    Both forms compute the same elementwise products and sums (each one
    correctly rounded by IEEE 754, whatever the array's shape), then add the
    terms in the same order: left to right. So ``batch(V)[b] == fun(V[b])``
    exactly, which lets the tests demand identical values from batched engines.
    """

    def __init__(self, weights: np.ndarray) -> None:
        self.weights = weights

    def __call__(self, v: np.ndarray) -> float:
        terms = (v * v) * self.weights + v
        total = 0.0
        for term in terms:
            total += term
        return float(total)

    def batch(self, vectors: np.ndarray) -> np.ndarray:
        terms = (vectors * vectors) * self.weights + vectors
        total = np.zeros(len(vectors))
        for j in range(terms.shape[1]):
            total += terms[:, j]
        return total


class RecordingRowWise(RowWise):
    """RowWise that records (thread-safely) a copy of every stack ``batch`` receives."""

    def __init__(self, weights: np.ndarray) -> None:
        super().__init__(weights)
        self.stacks: list[np.ndarray] = []
        self._lock = threading.Lock()

    def batch(self, vectors: np.ndarray) -> np.ndarray:
        with self._lock:
            self.stacks.append(vectors.copy())
        return super().batch(vectors)


def sines(v: np.ndarray) -> float:
    """A loss without a batched form."""
    return float(np.sum(np.sin(v) * np.arange(1.0, v.size + 1.0)))


def slow_sines(v: np.ndarray) -> float:
    """`sines`, taking 10 ms: chunks stay running long enough to be interrupted."""
    time.sleep(0.01)
    return sines(v)


def raise_user_code_error(v: np.ndarray) -> float:
    raise UserCodeError("`loss` raised ValueError at a perturbed point: boom", function="loss")


def raise_value_error(v: np.ndarray) -> float:
    raise ValueError("plain boom")


class InterruptWhenMoved:
    """Raises KeyboardInterrupt whenever coordinate `index` differs from `x`: deterministic in
    any process, unlike a call counter (every task evaluates a copy)."""

    def __init__(self, x: np.ndarray, index: int) -> None:
        self.x = x
        self.index = index

    def __call__(self, v: np.ndarray) -> float:
        if v[self.index] != self.x[self.index]:
            raise KeyboardInterrupt
        return sines(v)


class KeywordOnlyError(Exception):
    """An exception that pickle cannot rebuild by itself (``cls(*args)`` lacks `code`)."""

    def __init__(self, message: str, *, code: int) -> None:
        super().__init__(message)
        self.code = code


def raise_keyword_only_error(v: np.ndarray) -> float:
    raise KeywordOnlyError("needs its code", code=42)


class RaiseWhenMoved:
    """Raises `error` whenever coordinate `index` differs from `x` (in any process).

    `error` is an exception, or a function that makes one (for an exception that pickle
    cannot rebuild, which the loss cannot hold).
    """

    def __init__(self, x: np.ndarray, index: int, error) -> None:
        self.x = x
        self.index = index
        self.error = error

    def __call__(self, v: np.ndarray) -> float:
        if v[self.index] != self.x[self.index]:
            raise self.error() if callable(self.error) else self.error
        return sines(v)


def in_worker() -> bool:
    """Whether this is a worker process (started by multiprocessing or a dask nanny)."""
    return multiprocessing.parent_process() is not None


class DieInWorker:
    """Ends its worker process with exit code 3 (never the test's own process).

    With a `marker` path, only the first time in any process: the file records that a
    worker has died, so the retry succeeds.
    """

    def __init__(self, marker: str | None = None, seconds: float = 0.0) -> None:
        self.marker = marker
        self.seconds = seconds

    def __call__(self, v: np.ndarray) -> float:
        if self.seconds:
            time.sleep(self.seconds)
        if in_worker():
            if self.marker is None:
                os._exit(3)
            try:
                os.close(os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                pass
            else:
                os._exit(3)
        return sines(v)


class Counted:
    """Wraps a loss, appending one byte per evaluation to `path` from any process.

    The file's size counts the evaluations made, including those of workers that were
    stopped or killed before they could report.
    """

    def __init__(self, fun, path: str, seconds: float = 0.0) -> None:
        self.fun = fun
        self.path = path
        self.seconds = seconds
        self._fds: dict[int, int] = {}

    def __getstate__(self):
        return {"fun": self.fun, "path": self.path, "seconds": self.seconds, "_fds": {}}

    def __call__(self, v: np.ndarray) -> float:
        fd = self._fds.get(os.getpid())
        if fd is None:
            fd = self._fds[os.getpid()] = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        if self.seconds:
            time.sleep(self.seconds)
        value = float(self.fun(v))
        os.write(fd, b".")
        return value
