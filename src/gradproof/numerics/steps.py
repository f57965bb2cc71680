"""Finite-difference step sizes: scaled to each coordinate and exactly representable.

Note [Step choice]
    A central difference of step h has truncation error about h**2 |f'''| / 6 and
    round-off error about eps |f| / h. Their sum is smallest near h = eps**(1/3)
    (times the scale of the coordinate), which is what scipy's
    ``approx_derivative`` uses for its 3-point rule. Scaling by ``max(1, |x|)``
    keeps the step above the spacing of large coordinates (an absolute step of
    1e-8 is below the resolution of 1e9) without making it huge for small ones.

Note [Snapped steps]
    ``x + h`` is rounded to the parameter's dtype, so the step that really
    happened is ``(x + h) - x``, not ``h``. Dividing by the requested step
    instead of the realised one adds an error of up to eps |x| / h relative to
    the derivative. gradproof evaluates at the rounded points and divides by
    their distance computed in float64. For float16 and float32 parameters
    that distance is exact; for float64 it is exact too unless the two points
    straddle zero (|x| < h), where it is rounded once, a relative error of at
    most eps / 2.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from gradproof._typing import FloatArray
from gradproof.errors import InputError

__all__ = [
    "CentralPoints",
    "central_points",
    "default_relative_step",
    "machine_epsilon",
    "offset_points",
    "step_sizes",
]


def machine_epsilon(dtype: np.dtype[Any] | type[Any]) -> float:
    """Return the machine epsilon of a floating dtype (float64's for anything else)."""
    dt = np.dtype(dtype)
    return float(np.finfo(dt).eps) if dt.kind == "f" else float(np.finfo(np.float64).eps)


def default_relative_step(dtype: np.dtype[Any] | type[Any], order: int = 2) -> float:
    """Return the relative step of a first-derivative rule of a given order in a dtype.

    A rule of order ``p`` has truncation error ``O(h**p)`` and round-off error
    ``O(eps / h)``; their sum is smallest for ``h ~ eps ** (1 / (p + 1))``
    (Note [Step choice]).

    Parameters
    ----------
    dtype : numpy dtype
        The dtype the loss is evaluated in.
    order : int, optional
        The rule's order: 1 for forward and backward differences, 2 for
        central differences (the default), 4 for the five-point central rule.

    Returns
    -------
    float
        For central differences about 6.1e-6 in float64, 4.9e-3 in float32 and
        0.1 in float16.

    Examples
    --------
    >>> import numpy as np
    >>> round(default_relative_step(np.float64), 9), f"{default_relative_step(np.float64, 1):.3g}"
    (6.055e-06, '1.49e-08')
    """
    return float(machine_epsilon(dtype) ** (1.0 / (order + 1)))


@dataclass(frozen=True, slots=True)
class CentralPoints:
    """Where a central difference evaluates, coordinate by coordinate.

    Attributes
    ----------
    plus, minus : ndarray of shape (n,), float64
        The perturbed coordinate values, exactly representable in each
        coordinate's own dtype.
    width : ndarray of shape (n,), float64
        ``plus - minus``: the denominator of the difference (see Note [Snapped steps]).
    """

    plus: FloatArray
    minus: FloatArray
    width: FloatArray


def step_sizes(
    x: FloatArray,
    dtypes: list[tuple[slice, np.dtype[Any]]],
    *,
    abs_step: float | FloatArray | None = None,
    rel_step: float | FloatArray | None = None,
    order: int = 2,
) -> FloatArray:
    """Choose the step ``h_i`` of every coordinate.

    Parameters
    ----------
    x : ndarray of shape (n,), float64
        The point, as a flat vector.
    dtypes : list of (slice, dtype)
        The dtype each span of `x` is evaluated in.
    abs_step : float or ndarray of shape (n,), optional
        An absolute step, one for every coordinate or one each (what the
        classic assignment calls epsilon). Exclusive with `rel_step`.
    rel_step : float or ndarray of shape (n,), optional
        A relative step: ``h_i = rel_step_i * max(1, |x_i|)``. Defaults to
        :func:`default_relative_step` of each span's dtype and `order`.
    order : int, optional
        Order of the difference rule, for the default step.

    Returns
    -------
    ndarray of shape (n,), float64
        The requested steps (before rounding, see :func:`offset_points`).

    Raises
    ------
    InputError
        If both steps are given or a step is not a positive finite number.
    """
    if abs_step is not None and rel_step is not None:
        raise InputError(
            f"Both `eps`={abs_step!r} (an absolute step) and `rel_step`={rel_step!r} were given; "
            "pass only one of them."
        )
    for label, value in (("eps", abs_step), ("rel_step", rel_step)):
        if value is not None and not np.all(np.isfinite(value) & (np.asarray(value) > 0)):
            raise InputError(
                f"`{label}` must be a positive finite step; got {value!r}. "
                "Leave it unset for the default step."
            )
    if abs_step is not None:
        return np.array(np.broadcast_to(np.asarray(abs_step, dtype=np.float64), x.shape))
    h = np.empty_like(x)
    for span, dtype in dtypes:
        rel = (
            np.broadcast_to(np.asarray(rel_step, dtype=np.float64), x.shape)[span]
            if rel_step is not None
            else default_relative_step(dtype, order)
        )
        h[span] = rel * np.maximum(1.0, np.abs(x[span]))
    return h


def offset_points(
    x: FloatArray,
    dtypes: list[tuple[slice, np.dtype[Any]]],
    h: FloatArray,
    offsets: tuple[float, ...],
    *,
    describe: Callable[[int], str] = str,
) -> tuple[FloatArray, ...]:
    """Return the points ``x_i + o * h_i`` for each offset ``o``, rounded to each dtype.

    Parameters
    ----------
    x : ndarray of shape (n,), float64
        The point.
    dtypes : list of (slice, dtype)
        The dtype each span of `x` is evaluated in; points are rounded in it
        (Note [Snapped steps]).
    h : ndarray of shape (n,)
        The step of each coordinate.
    offsets : tuple of float
        Multiples of the step, e.g. ``(-1, 1)`` for central differences.
    describe : callable, optional
        Names coordinate ``i`` in error messages (e.g. ``W1[0, 3]``).

    Returns
    -------
    tuple of ndarray of shape (n,), float64
        One array of coordinate values per offset.

    Raises
    ------
    InputError
        If a point overflows its dtype, or a nonzero offset does not move a
        coordinate (the step is below its resolution).
    """
    columns = []
    spans = _merged_spans(dtypes)
    for offset in offsets:
        column = np.empty_like(x)
        for span, dtype in spans:
            xs = x[span]
            with np.errstate(over="ignore"):
                column[span] = (xs + offset * h[span]).astype(dtype).astype(np.float64)
            overflow = np.flatnonzero(~np.isfinite(column[span]))
            if overflow.size:
                i = int(overflow[0]) + (span.start or 0)
                raise InputError(
                    f"A finite-difference point of `{describe(i)}` = {float(x[i])!r} overflows "
                    f"{np.dtype(dtype).name}: the coordinate is within a step of the largest "
                    f"representable value ({float(np.finfo(dtype).max):.4g}). Rescale the "
                    "parameter, use a wider dtype, or use a smaller `eps`."
                )
            stuck = np.flatnonzero(column[span] == xs) if offset else np.zeros(0, dtype=int)
            if stuck.size:
                i = int(stuck[0]) + (span.start or 0)
                spacing = float(np.spacing(np.abs(np.asarray(x[i], dtype=dtype))))
                raise InputError(
                    f"The finite-difference step is below the resolution of {stuck.size} "
                    f"coordinate(s): `{describe(i)}` = {float(x[i])!r} ({np.dtype(dtype).name}) "
                    f"cannot change by less than about {spacing:.3g}. Use a larger `eps`, or "
                    "leave it unset for a step scaled to each coordinate."
                )
        columns.append(column)
    return tuple(columns)


def _merged_spans(
    dtypes: list[tuple[slice, np.dtype[Any]]],
) -> list[tuple[slice, np.dtype[Any]]]:
    """Join adjacent spans of one dtype: a model's tensors are rounded in one operation each.

    The points do not change (rounding is elementwise); a sweep's set-up makes
    a few numpy calls per dtype instead of per tensor.
    """
    merged: list[tuple[slice, np.dtype[Any]]] = []
    for span, dtype in dtypes:
        if merged and merged[-1][1] == dtype and merged[-1][0].stop == (span.start or 0):
            merged[-1] = (slice(merged[-1][0].start, span.stop), dtype)
        else:
            merged.append((span, dtype))
    return merged


def central_points(
    x: FloatArray,
    dtypes: list[tuple[slice, np.dtype[Any]]],
    *,
    abs_step: float | FloatArray | None = None,
    rel_step: float | FloatArray | None = None,
    describe: Callable[[int], str] = str,
) -> CentralPoints:
    """Choose the points ``x_i + h_i`` and ``x_i - h_i`` of a central difference.

    Parameters
    ----------
    x : ndarray of shape (n,), float64
        The point, as a flat vector.
    dtypes : list of (slice, dtype)
        The dtype each span of `x` is evaluated in; steps are rounded in it.
    abs_step, rel_step : float or ndarray of shape (n,), optional
        The step, see :func:`step_sizes`. By default ``eps ** (1/3)`` of each
        span's dtype, relative (Note [Step choice]).
    describe : callable, optional
        Names coordinate ``i`` in error messages (e.g. ``W1[0, 3]``).

    Returns
    -------
    CentralPoints
        The rounded points and their distances.

    Raises
    ------
    InputError
        If both steps are given, a step is not a positive finite number, a
        point overflows, or a step is so small that a coordinate does not move
        in its dtype.
    """
    h = step_sizes(x, dtypes, abs_step=abs_step, rel_step=rel_step)
    minus, plus = offset_points(x, dtypes, h, (-1.0, 1.0), describe=describe)
    return CentralPoints(plus=plus, minus=minus, width=plus - minus)
