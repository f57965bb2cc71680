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

__all__ = ["CentralPoints", "central_points", "default_relative_step", "machine_epsilon"]


def machine_epsilon(dtype: np.dtype[Any] | type[Any]) -> float:
    """Return the machine epsilon of a floating dtype (float64's for anything else)."""
    dt = np.dtype(dtype)
    return float(np.finfo(dt).eps) if dt.kind == "f" else float(np.finfo(np.float64).eps)


def default_relative_step(dtype: np.dtype[Any] | type[Any]) -> float:
    """Return the relative step of a central difference in a dtype: ``eps ** (1/3)``.

    Parameters
    ----------
    dtype : numpy dtype
        The dtype the loss is evaluated in.

    Returns
    -------
    float
        About 6.1e-6 for float64, 4.9e-3 for float32 and 0.1 for float16.

    Examples
    --------
    >>> import numpy as np
    >>> round(default_relative_step(np.float64), 9)
    6.055e-06
    """
    return float(machine_epsilon(dtype) ** (1.0 / 3.0))


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
    abs_step : float or ndarray of shape (n,), optional
        An absolute step, one for every coordinate or one each (what the
        classic assignment calls epsilon). Exclusive with `rel_step`.
    rel_step : float or ndarray of shape (n,), optional
        A relative step: ``h_i = rel_step_i * max(1, |x_i|)``. Defaults to
        ``eps ** (1/3)`` of each span's dtype, see Note [Step choice].
    describe : callable, optional
        Names coordinate ``i`` in error messages (e.g. ``W1[0, 3]``).

    Returns
    -------
    CentralPoints
        The rounded points and their exact distances.

    Raises
    ------
    InputError
        If both steps are given, a step is not a positive finite number, or a
        step is so small that a coordinate does not move in its dtype.
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
    plus = np.empty_like(x)
    minus = np.empty_like(x)
    for span, dtype in dtypes:
        xs = x[span]
        if abs_step is not None:
            h = np.broadcast_to(np.asarray(abs_step, dtype=np.float64), x.shape)[span]
        else:
            rel = (
                np.broadcast_to(np.asarray(rel_step, dtype=np.float64), x.shape)[span]
                if rel_step is not None
                else default_relative_step(dtype)
            )
            h = rel * np.maximum(1.0, np.abs(xs))
        # Round the perturbed points to the dtype the loss sees (Note [Snapped steps]).
        with np.errstate(over="ignore"):
            plus[span] = (xs + h).astype(dtype).astype(np.float64)
            minus[span] = (xs - h).astype(dtype).astype(np.float64)
        overflow = np.flatnonzero(~(np.isfinite(plus[span]) & np.isfinite(minus[span])))
        if overflow.size:
            i = int(overflow[0]) + (span.start or 0)
            raise InputError(
                f"A finite-difference point of `{describe(i)}` = {float(x[i])!r} overflows "
                f"{np.dtype(dtype).name}: the coordinate is within a step of the largest "
                f"representable value ({float(np.finfo(dtype).max):.4g}). Rescale the parameter, "
                "use a wider dtype, or use a smaller `eps`."
            )
        stuck = np.flatnonzero((plus[span] == xs) | (minus[span] == xs))
        if stuck.size:
            i = int(stuck[0]) + (span.start or 0)
            spacing = float(np.spacing(np.abs(np.asarray(x[i], dtype=dtype))))
            raise InputError(
                f"The finite-difference step is below the resolution of {stuck.size} "
                f"coordinate(s): `{describe(i)}` = {float(x[i])!r} ({np.dtype(dtype).name}) cannot "
                f"change by less than about {spacing:.3g}. Use a larger `eps`, or leave it "
                "unset for a step scaled to each coordinate."
            )
    return CentralPoints(plus=plus, minus=minus, width=plus - minus)
