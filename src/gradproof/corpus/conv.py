"""A 1-D convolution with weights and bias, written with sliding windows.

``Y[n, o, t] = sum_{c, j} K[o, c, j] X[n, c, t + j] + b[o]`` (a "valid"
cross-correlation, as deep-learning libraries define convolution), then tanh
and a mean squared error against fixed targets.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from gradproof.corpus._types import Bug, BugSpec, Case, Grads, assemble, check_bug_name, frozen_data

__all__ = ["build", "conv1d"]

Cache = dict[str, Any]

_BUGS = (
    BugSpec(
        "dK-channel-axes-swapped",
        "transpose",
        ("K",),
        "dK is accumulated as einsum('bot,bctj->coj'): output and input channels swapped "
        "(3 of each, so the shape still matches).",
    ),
    BugSpec(
        "dK-taps-reversed",
        "axis",
        ("K",),
        "dK correlates dY with the flipped input windows X[n, c, t + k - 1 - j] (convolution "
        "mixed up with cross-correlation): the kernel-tap axis is reversed.",
    ),
    BugSpec(
        "tanh-derivative-forgotten",
        "unknown",
        ("K", "b"),
        "dY = dA: the backward pass skips the tanh's derivative 1 - A^2.",
    ),
)


def _forward(p: Any, data: Mapping[str, Any]) -> tuple[float, Cache]:
    X, T = data["X"], data["T"]
    k = p["K"].shape[-1]
    windows = sliding_window_view(X, k, axis=2)  # (batch, C_in, L - k + 1, k)
    Y = np.einsum("bctj,ocj->bot", windows, p["K"]) + p["b"][:, None]
    A = np.tanh(Y)
    loss = 0.5 * np.mean((A - T) ** 2)
    return float(loss), {"windows": windows, "A": A}


def _backward(p: Any, data: Mapping[str, Any], cache: Cache, bug: str | None) -> Grads:
    check_bug_name(bug, _BUGS)
    T = data["T"]
    windows, A = cache["windows"], cache["A"]
    dA = (A - T) / A.size
    dY = dA * (1 - A**2)
    if bug == "tanh-derivative-forgotten":
        dY = dA  # BUG
    dK = np.einsum("bot,bctj->ocj", dY, windows)
    if bug == "dK-channel-axes-swapped":
        dK = np.einsum("bot,bctj->coj", dY, windows)  # BUG
    elif bug == "dK-taps-reversed":
        dK = np.einsum("bot,bctj->ocj", dY, windows[..., ::-1])  # BUG
    db = dY.sum(axis=(0, 2))
    return {"K": dK, "b": db}


def conv1d() -> tuple[Case, tuple[Bug, ...]]:
    """Build the 1-D convolution case.

    Returns
    -------
    case : Case
        ``"conv1d"``: a batch of 2 signals of 3 channels and length 8, kernel
        ``K`` (3 out, 3 in, 3 taps), bias ``b`` (3,), tanh, mean squared error.
    bugs : tuple of Bug
        Its planted bugs.
    """
    rng = np.random.default_rng(505)
    X = rng.normal(size=(2, 3, 8))
    T = 0.5 * rng.normal(size=(2, 3, 6))
    params = {"K": 0.4 * rng.normal(size=(3, 3, 3)), "b": 0.1 * rng.normal(size=3)}
    return assemble(
        name="conv1d",
        description="A 1-D convolution (3 -> 3 channels, 3 taps, bias), tanh, mean squared error.",
        params=params,
        data=frozen_data(X=X, T=T),
        forward=_forward,
        backward=_backward,
        bugs=_BUGS,
    )


def build() -> tuple[tuple[Case, tuple[Bug, ...]], ...]:
    """Build the convolution cases and their bugs.

    Returns
    -------
    tuple of (Case, tuple of Bug)
        The 1-D convolution.
    """
    return (conv1d(),)
