"""How close an analytic gradient entry must be to its numerical estimate.

Note [Entry tolerance]
    An entry passes when ``|analytic - numeric| <= atol + rtol * max(|analytic|,
    |numeric|) + error_bar``. The error bar is the numerical estimate's own
    uncertainty, so the test is not a fixed constant that cries wolf on large
    losses or misses bugs in small gradients:

    - noise: each loss value is trusted to within :func:`loss_value_noise`,
      the larger of its rounding (``ROUNDOFF_FACTOR * eps * |f|``) and the
      noise measured in it (:mod:`gradproof.numerics.noise`); a rule with weights ``w``
      and step ``h`` then carries ``sum(|w|) * noise / h``;
    - truncation: for entries re-measured at smaller steps, the change between
      the two finest central differences (:mod:`gradproof.numerics.kinks`,
      :func:`gradproof.numerics.finite_diff.richardson`).

    ``rtol`` covers the truncation error of entries that pass at once (about
    ``h**2 |f'''| / 6``, i.e. 1e-11 relative for a float64 step of 6e-6 on a
    smooth loss) with a wide margin, and is the relative disagreement the
    caller is willing to accept.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gradproof._typing import FloatArray

__all__ = [
    "ROUNDOFF_FACTOR",
    "default_rtol",
    "entry_tolerance",
    "loss_value_noise",
]

ROUNDOFF_FACTOR = 32.0
"""Relative rounding error allowed in each loss value, in units of the machine epsilon.

A loss summed over a batch accumulates a few epsilons of relative error; on
the assignment's network and on ReLU networks of 500 to 2,000 parameters the
observed round-off of correct gradients stayed below 1 unit, so 32 leaves a
wide margin while still resolving a relative gradient error of 1e-4.
"""

_DEFAULT_RTOL = {2: 1e-2, 4: 1e-3, 8: 1e-5}  # float16, float32, float64 (by item size)


def default_rtol(dtype: np.dtype[Any] | type[Any]) -> float:
    """Return the default relative tolerance for a working dtype.

    Parameters
    ----------
    dtype : numpy dtype
        The least precise dtype among the parameter and the loss.

    Returns
    -------
    float
        1e-5 for float64, 1e-3 for float32, 1e-2 for float16; the central
        difference's best accuracy in each is about ``eps ** (2/3)``
        (1e-11, 2e-5, 1e-2), and a real bug is usually far larger.

    Examples
    --------
    >>> import numpy as np
    >>> default_rtol(np.float32)
    0.001
    """
    dt = np.dtype(dtype)
    if dt.kind != "f":
        return _DEFAULT_RTOL[8]
    return _DEFAULT_RTOL.get(dt.itemsize, 1e-5 if dt.itemsize > 8 else 1e-2)


def loss_value_noise(f0: float, eps: FloatArray | float, measured: float = 0.0) -> FloatArray:
    """Return how far each loss value may be off: its rounding or its measured noise.

    Parameters
    ----------
    f0 : float
        The loss at the point (its neighbours are of the same size).
    eps : float or ndarray of shape (n,)
        Machine epsilon of the precision each coordinate's loss values are computed in.
    measured : float, optional
        A bound on the loss's measured noise (e.g. four standard deviations); 0 if none.

    Returns
    -------
    ndarray
        ``max(ROUNDOFF_FACTOR * eps * |f0|, measured)``, in the shape of `eps`
        (Note [Entry tolerance]).

    Examples
    --------
    >>> float(loss_value_noise(2.0, 2.0**-52)), float(loss_value_noise(2.0, 2.0**-52, 1e-9))
    (1.4210854715202004e-14, 1e-09)
    """
    rounding = ROUNDOFF_FACTOR * np.asarray(eps, dtype=np.float64) * abs(f0)
    noise: FloatArray = np.maximum(rounding, measured)
    return noise


def entry_tolerance(
    analytic: FloatArray,
    numeric: FloatArray,
    error_bar: FloatArray,
    *,
    rtol: FloatArray | float,
    atol: float,
) -> FloatArray:
    """Return the largest acceptable ``|analytic - numeric|`` of each entry.

    Parameters
    ----------
    analytic, numeric : ndarray of shape (n,)
        The two gradients.
    error_bar : ndarray of shape (n,)
        Uncertainty of each numerical estimate.
    rtol : float or ndarray of shape (n,)
        Relative tolerance, applied to the larger magnitude of the two.
    atol : float
        Absolute tolerance.

    Returns
    -------
    ndarray of shape (n,)
        ``atol + rtol * max(|analytic|, |numeric|) + error_bar``.
    """
    scale = np.maximum(np.abs(analytic), np.abs(numeric))
    return atol + np.asarray(rtol) * scale + error_bar
