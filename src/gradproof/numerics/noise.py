"""The loss's own noise level, measured with Moré and Wild's ECnoise.

A gradient check compares a gradient with differences of loss values; if the
loss values themselves are noisy (rounded in float32, computed by a numerically
careless formula, or random), the differences measure the noise as much as the
slope. This module measures that noise along one direction, with the method of
J. J. Moré and S. M. Wild, "Estimating computational noise", SIAM J. Sci.
Comput. 33(3), 2011, pp. 1292-1314 (their ECnoise code), and turns the result
into advice (:func:`precision_notes`).

Note [ECnoise]
    The loss is evaluated at ``m + 1`` equally spaced points ``x + t_i p`` with
    ``t_i = (i - m/2) h``, ``i = 0..m``. If ``f = smooth + noise`` with noise of
    standard deviation ``sigma``, independent from point to point, the k-th
    differences ``Delta^k f`` have a smooth part of about ``h**k |f^(k)|``,
    which shrinks with ``k`` once ``h`` is small, and a noise part of variance
    ``sigma**2 * C(2k, k)`` (the sum of the squared binomial coefficients).
    So ``sigma_k = sqrt(gamma_k * mean((Delta^k f)**2))`` with
    ``gamma_k = (k!)**2 / (2k)! = 1 / C(2k, k)`` estimates ``sigma`` for every
    order ``k`` at which the smooth part has died out. ECnoise accepts order
    ``k`` when ``sigma_k``, ``sigma_{k+1}`` and ``sigma_{k+2}`` agree within a
    factor of 4 (``max <= 4 * min``) and the k-th differences take both signs
    (noise; the differences of a smooth function keep the sign of its k-th
    derivative), and reports the lowest such ``k``. Before that it gives up
    with "h too large" when the values differ by more than 10 % of the largest
    one (the smooth part cannot have died out), and with "h too small" when at
    least half of the first differences are exactly zero (the values are
    quantised: the points are closer than the loss can resolve). These are
    ECnoise's rules and constants, unchanged.

    Each ``sigma_k`` is a root mean square of at most ``m`` correlated
    differences, so it is a rough statistic. Measured on 1,500 independent
    Gaussian noise sequences with the default 8 points, the accepted estimate
    fell within a factor of 2 of the true ``sigma`` 90 % of the time and within
    a factor of 3 98 % of the time (median 0.89 ``sigma``; uniform noise, like
    rounding, does slightly better; 12 points bring the factor-of-2 rate to
    96 %). Moré and Wild likewise call their estimates reliable to within a
    small factor, which is all that judging how many digits a loss has needs.

Note [No noise]
    A loss can also have no noise detectable at the step: a polynomial whose
    values are exact, or a smooth function whose rounding errors are too
    sparse to pass the sign and agreement tests. ECnoise then says "h too
    large", which would send the caller after a smaller step in vain. When no
    order is accepted but three consecutive estimates ``sigma_k`` are all at
    or below one unit of rounding, ``eps * max|f|``, the loss is smooth to
    machine precision at this step: the status is ``"no_noise"`` and the level
    is reported as the rounding level ``eps * |f(x)|``. Three estimates, not
    one, because a single high-order difference of a noisy loss can be small
    by chance.

Note [Noise across steps]
    One ECnoise estimate can mistake two things for noise, and miss a third.
    A kink of the loss inside the probe's span (ReLU at 0, ``|x|`` at 0)
    makes the differences take both signs with a size proportional to the
    step: the "level" is ``c * h``. A coarsely quantised loss
    (``log(1 - sigmoid(z))`` near saturation moves in jumps of about
    ``1e-16 / (1 - sigmoid(z))``) can look noiseless at one step, and noisier
    at steps that catch more of its jumps; what matters to a finite
    difference is the noise at its own step. :func:`measure_noise` therefore
    estimates at a ladder of steps ``sqrt(10)`` apart, centred on the step
    the differences will use, and accepts a level only where three adjacent
    steps agree within a factor of ``RUN_AGREEMENT`` (2.5): a kink's level
    grows by ``sqrt(10) = 3.16`` from one step to the next (measured on ReLU,
    ``|x|`` and max-pool ties: ratios of 3.16, with an occasional 1.9 where
    the kink falls between grid points, never twice in a row), while true
    noise and quantisation stay within a factor of 2.5 (measured: ratios 0.7
    to 2.4). The largest agreeing level is reported (the geometric mean of
    its three), so the error bars cover the noisiest regime near the step.

Note [Choosing h]
    The step must be large enough for the loss values to differ (else
    ``"step_too_small"``) and small enough for the smooth part's differences
    to sink below the noise within the first few orders (else
    ``"step_too_large"``). Along a unit direction, ``h = 1e-6 * max(1, |x|)``
    suits float64 losses and ``h = 1e-3 * max(1, |x|)`` float32 losses, whose
    inputs are themselves rounded at 6e-8 relative; on smooth test losses
    anything from 1e-14 to 1e-3 worked in float64 and from 1e-5 to 1e-2 in
    float32 (Moré and Wild's own driver uses 1e-14 for a float64 norm). A loss
    computed through a coarsely quantised intermediate (``1 - sigmoid(25)``
    has only about 1e5 representable values per factor of 2) needs a larger
    step, 1e-4 or more, for its values to differ. On ``"step_too_large"``
    retry with ``h / 100``, on ``"step_too_small"`` with ``100 * h``, as
    ECnoise advises; ``"no_noise"`` and ``"ok"`` need no retry.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, SupportsFloat, TypeAlias

import numpy as np

from gradproof._typing import FloatArray
from gradproof.errors import InputError
from gradproof.numerics.compare import scaled_norm
from gradproof.numerics.steps import machine_epsilon

__all__ = [
    "AGREEMENT_FACTOR",
    "MAX_RELATIVE_RANGE",
    "NOISY_FACTOR",
    "RUN_AGREEMENT",
    "NoiseEstimate",
    "NoiseStatus",
    "estimate_noise",
    "ladder_offsets",
    "measure_noise",
    "noise_from_ladder",
    "noise_from_repeats",
    "precision_notes",
]

NoiseStatus: TypeAlias = Literal["ok", "step_too_large", "step_too_small", "no_noise"]
"""The outcome of a noise estimate, as ECnoise's ``inform`` flags (Note [ECnoise])."""

AGREEMENT_FACTOR = 4.0
"""How far three consecutive estimates ``sigma_k`` may spread and still be accepted (ECnoise's)."""

MAX_RELATIVE_RANGE = 0.1
"""The largest spread of the loss values, relative to the largest, at which noise is sought."""

NOISY_FACTOR = 100.0
"""Relative noise above this many machine epsilons is reported as a loss of precision."""

_HUGE_LOSS = 1e12
_TINY_LOSS = 1e-12


@dataclass(frozen=True, slots=True, kw_only=True)
class NoiseEstimate:
    """The noise level of a loss along one direction.

    Attributes
    ----------
    level : float
        Estimated standard deviation ``sigma`` of the loss values' noise, in
        the loss's units; ``0.0`` when the step was unsuitable, and the
        rounding level ``eps * |f(x)|`` when no noise was detected.
    relative : float
        ``level / |f(x)|``: the fraction of the loss value that is noise
        (``inf`` when ``f(x) == 0`` and ``level > 0``; the epsilon itself when
        the status is ``"no_noise"``; ``0.0`` when the step was unsuitable).
    order : int or None
        The order of the differences that gave `level`; None unless the status
        is ``"ok"``.
    n_evals : int
        How many times the loss was evaluated.
    status : {"ok", "step_too_large", "step_too_small", "no_noise"}
        ``"ok"``: noise was detected. ``"step_too_large"``: the smooth part of
        the loss dominates the differences; retry with ``h / 100``.
        ``"step_too_small"``: the loss values are (mostly) identical or
        quantised; retry with ``100 * h`` (or the loss does not depend on this
        direction). ``"no_noise"``: the loss is smooth to machine precision at
        this step (Note [No noise]).
    """

    level: float
    relative: float
    order: int | None
    n_evals: int
    status: NoiseStatus


def estimate_noise(
    fun: Callable[[float], SupportsFloat],
    *,
    h: float,
    n_points: int = 8,
    dtype: np.dtype[Any] | type[Any] = np.float64,
) -> NoiseEstimate:
    """Estimate the noise level of a loss along a direction (Moré and Wild's ECnoise).

    Parameters
    ----------
        fun : callable ``fun(t) -> float``
            The loss at ``x + t * p``, for the point ``x`` and a direction ``p``
            chosen by the caller; `t` is in units of ``p``'s length. It returns a
            real scalar (a float, a numpy scalar or a one-entry array). Exceptions
            it raises propagate unchanged.
        h : float
            The spacing of the points, in units of ``p``'s length. For a unit
            direction, about ``1e-6 * max(1, |x|)`` for a float64 loss and
            ``1e-3 * max(1, |x|)`` for a float32 loss (see Note [Noise across steps]
        One ECnoise estimate can mistake two things for noise. A kink of the loss
        inside the probe's span (ReLU at 0, ``|x|`` at 0) makes the differences
        take both signs with a size proportional to the step: the "level" is then
        ``c * h``. And a coarsely quantised loss (``log(1 - sigmoid(z))`` near
        saturation changes in steps of about ``1e-16 / (1 - sigmoid(z))``) can look
        noiseless at one step and noisy at the next. :func:`measure_noise`
        therefore estimates at a ladder of steps ``sqrt(10)`` apart and accepts a
        level only when it does not grow with the step: the median over pairs of
        the slope of ``log(level)`` against ``log(h)`` must be below 1/2 (true noise
        gives a slope near 0, a kink exactly 1). The level reported is the median
        of the ladder's estimates, which discards an odd estimate such as a
        quantised loss caught between two jumps.

    Note [Choosing h]).
        n_points : int, optional
            How many points to evaluate, ``m + 1`` (at least 4); the differences
            of orders 1 to ``m`` are used. ECnoise recommends at least 7.
        dtype : numpy dtype, optional
            The dtype the loss is computed in; its epsilon is the rounding level
            reported when no noise is detected.

    Returns
    -------
        NoiseEstimate
            The noise level and how it was found. Only ``"ok"`` and ``"no_noise"``
            give a usable level; otherwise retry with the step the status advises.

    Raises
    ------
        InputError
            If `h` is not a positive finite number, `n_points` is not an integer of
            at least 4, `dtype` is not a floating dtype, or `fun` returns something
            that is not a finite real scalar.

    See Also
    --------
        precision_notes : what to do about a noisy loss.

    Notes
    -----
        The points are ``t_i = (i - m/2) h`` for ``i = 0..m``, symmetric about
        ``t = 0``; ``f(x)`` is the middle value (the mean of the two middle
        values when `n_points` is even). The decision rules are ECnoise's
        (Note [ECnoise]), plus the ``"no_noise"`` status (Note [No noise]).

    Examples
    --------
        A loss with noise of size 1e-9 added to it, deterministic in ``t``:

        >>> import numpy as np
        >>> def noise(t):
        ...     return np.random.default_rng(int(np.float64(t).view(np.uint64))).standard_normal()
        >>> est = estimate_noise(lambda t: np.exp(1 + t) + 1e-9 * noise(t), h=1e-6)
        >>> est.status, bool(0.5e-9 < est.level < 2e-9)
        ('ok', True)

        A polynomial computed exactly has no noise at all:

        >>> estimate_noise(lambda t: 3.0 + 2.0 * t, h=2.0**-20).status
        'no_noise'
    """
    if not (isinstance(h, (int, float, np.floating)) and math.isfinite(h) and h > 0):
        raise InputError(
            f"`h` must be a positive finite spacing; got {h!r}. Use about 1e-6 for a float64 "
            "loss and 1e-3 for a float32 loss, with the direction scaled to the parameters."
        )
    if isinstance(n_points, bool) or not isinstance(n_points, (int, np.integer)) or n_points < 4:
        raise InputError(
            f"`n_points` must be an integer of at least 4; got {n_points!r}. "
            "Leave it unset for 8 points."
        )
    eps = _float_epsilon(dtype)
    m = int(n_points) - 1
    values = np.empty(m + 1)
    for i in range(m + 1):
        t = (i - m / 2) * float(h)
        values[i] = _finite_scalar(fun(t), t)
    return _ecnoise(values, eps)


def precision_notes(
    f0: float, noise: NoiseEstimate, dtype: np.dtype[Any] | type[Any]
) -> tuple[str, ...]:
    """Explain what limits the precision of a loss, and how to fix it.

    Parameters
    ----------
    f0 : float
        The loss at the point.
    noise : NoiseEstimate
        Its noise level there, from :func:`estimate_noise`.
    dtype : numpy dtype
        The dtype the loss is computed in.

    Returns
    -------
    tuple of str
        One note per problem, each a sentence or two with the measured
        numbers; empty when nothing is wrong. Problems are: relative noise
        above ``NOISY_FACTOR`` times the dtype's epsilon (only an ``"ok"``
        estimate measures noise; the other statuses give no note about it),
        and a loss larger than 1e12 or smaller than 1e-12 in magnitude.

    Raises
    ------
    InputError
        If `f0` is not finite or `dtype` is not a floating dtype.

    Examples
    --------
    >>> import numpy as np
    >>> z = 25.0
    >>> naive = lambda t: np.log(1 - 1 / (1 + np.exp(-(z + t))))
    >>> est = estimate_noise(naive, h=1e-3)
    >>> notes = precision_notes(naive(0.0), est, np.float64)
    >>> len(notes), "logaddexp" in notes[0]
    (1, True)
    >>> precision_notes(1.5, estimate_noise(lambda t: 1.5 + t, h=2.0**-20), np.float64)
    ()
    """
    eps = _float_epsilon(dtype)
    if not math.isfinite(f0):
        raise InputError(
            f"`f0` must be the finite loss value at the point; got {f0!r}. "
            "Pass the loss evaluated at the parameters."
        )
    magnitude = abs(float(f0))
    name = np.dtype(dtype).name
    notes: list[str] = []
    if noise.status == "ok" and noise.level > 0:
        relative = noise.level / magnitude if magnitude > 0 else math.inf
        if relative > NOISY_FACTOR * eps:
            fix = (
                "Compute log(sigmoid(z)) as -np.logaddexp(0, -z) and log(1 - sigmoid(z)) as "
                "-softplus(z) = -np.logaddexp(0, z), avoid subtracting large nearly equal "
                "numbers, and accumulate float32 sums in float64."
            )
            if magnitude > 0:
                lost = min(math.log10(relative / eps), -math.log10(eps))
                measured = (
                    f"The loss loses precision: its value {f0:.6g} carries noise of about "
                    f"{noise.level:.2g} ({relative:.2g} relative, {relative / eps:.2g} times the "
                    f"{name} epsilon), so about {lost:.0f} of its {-math.log10(eps):.0f} "
                    "significant digits are noise."
                )
            else:
                measured = (
                    f"The loss loses precision: it is 0 at the point but its values nearby carry "
                    f"noise of about {noise.level:.2g}, so not one of its digits can be trusted."
                )
            notes.append(f"{measured} {fix}")
    if magnitude > _HUGE_LOSS:
        notes.append(
            f"The loss is {f0:.3g}, so each value is rounded by about eps × |f| = "
            f"{eps * magnitude:.2g}, which can swamp the change a finite-difference step makes. "
            "Rescale it to order 1, e.g. average instead of summing over examples, drop constant "
            "terms, or normalise the targets."
        )
    elif 0 < magnitude < _TINY_LOSS:
        notes.append(
            f"The loss is only {f0:.3g}, so a rounding error of {eps:.2g} in an order-1 "
            f"intermediate value is already {eps / magnitude:.2g} times the loss. Rescale it "
            "to order 1, or check at parameters further from a perfect fit."
        )
    return tuple(notes)


RUN_AGREEMENT = 2.5
"""Three adjacent ladder steps must agree within this factor for their level to count as noise."""


def measure_noise(
    fun: Callable[[float], SupportsFloat],
    *,
    base_step: float,
    n_steps: int = 5,
    n_points: int = 8,
    dtype: np.dtype[Any] | type[Any] = np.float64,
) -> NoiseEstimate:
    """Measure the noise at a ladder of steps, refusing levels that grow with the step.

    Parameters
    ----------
    fun : callable ``fun(t) -> float``
        The loss at ``x + t * p`` along a fixed direction ``p``.
    base_step : float
        The middle step of the ladder: the step the finite differences will
        use. The ladder runs from ``base_step / 10`` to ``base_step * 10``,
        ``sqrt(10)`` apart for the default five steps.
    n_steps : int, optional
        How many steps; each costs about ``n_points`` evaluations.
    n_points : int, optional
        ECnoise's ``m`` at each step.
    dtype : numpy dtype, optional
        The dtype the loss is computed in.

    Returns
    -------
    NoiseEstimate
        Status ``"ok"`` with the largest level on which three adjacent steps
        agree (Note [Noise across steps]); ``"no_noise"`` with the rounding
        level when no such pair exists but some step saw the loss smooth or
        found a level (a kink's level grows with the step and never agrees);
        ``"step_too_small"`` or ``"step_too_large"`` when no step was usable.

    Examples
    --------
    >>> import numpy as np
    >>> hinge = lambda t: 1.0 + 3 * max(t, 0.0) + t * t  # a kink at t = 0, no noise
    >>> measure_noise(hinge, base_step=1e-6).status
    'no_noise'
    """
    eps = _float_epsilon(dtype)
    offsets = ladder_offsets(base_step, n_steps=n_steps, n_points=n_points)
    values = np.array([_finite_scalar(fun(float(t)), float(t)) for t in offsets.ravel()])
    return noise_from_ladder(values.reshape(offsets.shape), eps)


def ladder_offsets(base_step: float, *, n_steps: int = 5, n_points: int = 8) -> FloatArray:
    """Return the points of :func:`measure_noise`'s ladder, one row per step.

    Parameters
    ----------
    base_step : float
        The middle step of the ladder (see :func:`measure_noise`).
    n_steps, n_points : int, optional
        How many steps, and ECnoise's ``m + 1`` points at each.

    Returns
    -------
    ndarray of shape (n_steps, n_points)
        Row ``s`` holds ``t_i = (i - m/2) h_s`` for the step ``h_s``, the
        offsets along the direction at which the loss is evaluated; give the
        values to :func:`noise_from_ladder` in the same shape.

    Examples
    --------
    >>> ladder_offsets(1.0, n_steps=1, n_points=5).tolist()
    [[-2.0, -1.0, 0.0, 1.0, 2.0]]
    """
    ladder = base_step * np.sqrt(10.0) ** (np.arange(n_steps) - (n_steps - 1) / 2)
    m = n_points - 1
    offsets: FloatArray = np.outer(ladder, np.arange(m + 1) - m / 2)
    return offsets


def noise_from_ladder(values: FloatArray, eps: float) -> NoiseEstimate:
    """Judge the loss values of a ladder of steps (Note [Noise across steps]).

    Parameters
    ----------
    values : ndarray of shape (n_steps, n_points)
        The loss at :func:`ladder_offsets`' points, finite.
    eps : float
        Machine epsilon of the dtype the loss is computed in.

    Returns
    -------
    NoiseEstimate
        As :func:`measure_noise` returns it.
    """
    estimates = [_ecnoise(np.asarray(row, dtype=np.float64), eps) for row in values]
    n_evals = sum(e.n_evals for e in estimates)
    agreeing = [
        run
        for run in zip(estimates, estimates[1:], estimates[2:], strict=False)
        if all(e.status == "ok" and e.level > 0 for e in run)
        and max(e.level for e in run) <= RUN_AGREEMENT * min(e.level for e in run)
    ]
    if agreeing:
        # Geometric means through logarithms: levels near 1e300 would overflow a product.
        run = max(agreeing, key=lambda r: sum(math.log(e.level) for e in r))
        level = math.exp(sum(math.log(e.level) for e in run) / len(run))
        magnitude = run[0].level / run[0].relative if run[0].relative else 0.0
        return NoiseEstimate(
            level=level,
            relative=level / magnitude if magnitude else 0.0,
            order=None,
            n_evals=n_evals,
            status="ok",
        )
    usable = [e for e in estimates if e.status in ("ok", "no_noise") and e.relative]
    if usable:
        magnitude = usable[0].level / usable[0].relative
        return NoiseEstimate(
            level=eps * magnitude, relative=eps, order=None, n_evals=n_evals, status="no_noise"
        )
    too_large = any(e.status == "step_too_large" for e in estimates)
    status: NoiseStatus = "step_too_large" if too_large else "step_too_small"
    return NoiseEstimate(level=0.0, relative=0.0, order=None, n_evals=n_evals, status=status)


def noise_from_repeats(values: FloatArray) -> NoiseEstimate:
    """Measure a random loss's noise from its values at one point, evaluated repeatedly.

    Note [Noise from repeats]
        A loss whose value changes from call to call at the same point (an
        unseeded reduction in threads or on a GPU, which adds its terms in a
        different order each time) has noise that is independent between
        evaluations: the standard deviation of repeated values at one point
        measures it directly, with no smooth part to remove. With ``r``
        repeats the sample standard deviation is within a factor of 2 of the
        true one with high probability for ``r >= 5`` (its relative spread is
        about ``1 / sqrt(2 (r - 1))``); the verdicts use four of them
        (``NOISE_BOUND``), which covers that.

    Parameters
    ----------
    values : ndarray of shape (r,)
        The loss at one point, ``r >= 2`` finite evaluations.

    Returns
    -------
    NoiseEstimate
        Status ``"ok"`` with the sample standard deviation as the level
        (``"no_noise"`` with level 0 when all values are equal).

    Examples
    --------
    >>> est = noise_from_repeats(np.array([1.0, 1.0 + 2e-12, 1.0 - 2e-12, 1.0]))
    >>> est.status, bool(1e-12 < est.level < 2e-12)
    ('ok', True)
    """
    values = np.asarray(values, dtype=np.float64)
    centre = float(np.mean(values))
    level = float(np.std(values, ddof=1)) if values.size > 1 else 0.0
    if level == 0.0:
        return NoiseEstimate(
            level=0.0, relative=0.0, order=None, n_evals=values.size, status="no_noise"
        )
    relative = level / abs(centre) if centre else math.inf
    return NoiseEstimate(
        level=level, relative=relative, order=None, n_evals=values.size, status="ok"
    )


def _float_epsilon(dtype: np.dtype[Any] | type[Any]) -> float:
    """Return the epsilon of a floating dtype, refusing anything else."""
    try:
        dt = np.dtype(dtype)
    except TypeError as exc:
        raise InputError(
            f"`dtype` must be a floating numpy dtype; got {dtype!r} ({exc}). "
            "Pass the dtype the loss is computed in, e.g. np.float32."
        ) from exc
    if dt.kind != "f":
        raise InputError(
            f"`dtype` must be a floating numpy dtype; got {dt.name}. "
            "Pass the dtype the loss is computed in, e.g. np.float32."
        )
    return machine_epsilon(dt)


def _finite_scalar(value: object, t: float) -> float:
    """Read one loss value as a finite float."""
    try:
        array = np.asarray(value)
    except Exception as exc:
        raise InputError(
            f"`fun` returned a {type(value).__name__} at t = {t!r}, which is not a number "
            f"({exc}); expected a real scalar. Return the loss as a float."
        ) from exc
    if array.dtype.kind not in "fiu" or array.size != 1:
        raise InputError(
            f"`fun` returned a {type(value).__name__} of dtype {array.dtype} and shape "
            f"{array.shape} at t = {t!r}; expected a real scalar. Return the loss as a float."
        )
    number = float(array.reshape(()))
    if not math.isfinite(number):
        raise InputError(
            f"`fun` returned {number} at t = {t!r}; noise can only be measured where the loss "
            "is finite. Use a smaller `h`, or measure at other parameters."
        )
    return number


def _ecnoise(values: FloatArray, eps: float) -> NoiseEstimate:
    """Apply ECnoise's rules (Note [ECnoise], Note [No noise]) to equally spaced values."""
    n = values.size
    m = n - 1
    centre = float(values[m // 2] if m % 2 == 0 else (values[m // 2] + values[m // 2 + 1]) / 2)

    def unsuitable(status: NoiseStatus) -> NoiseEstimate:
        return NoiseEstimate(level=0.0, relative=0.0, order=None, n_evals=n, status=status)

    largest = float(np.max(np.abs(values)))
    if largest > 0 and float(np.ptp(values)) / largest > MAX_RELATIVE_RANGE:
        return unsuitable("step_too_large")
    levels = np.empty(m)
    both_signs = np.zeros(m, dtype=bool)
    differences = values
    for k in range(1, m + 1):
        differences = np.diff(differences)
        if k == 1 and np.count_nonzero(differences == 0) >= n / 2:
            return unsuitable("step_too_small")
        # The RMS without overflow: loss values near 1e300 are differenced too.
        rms = scaled_norm(differences) / math.sqrt(differences.size)
        levels[k - 1] = rms / math.sqrt(math.comb(2 * k, k))
        both_signs[k - 1] = differences.min() < 0 < differences.max()
    for k in range(1, m - 1):
        window = levels[k - 1 : k + 2]
        if both_signs[k - 1] and window.max() <= AGREEMENT_FACTOR * window.min():
            level = float(levels[k - 1])
            relative = level / abs(centre) if centre != 0 else math.inf
            return NoiseEstimate(level=level, relative=relative, order=k, n_evals=n, status="ok")
    rounding = eps * largest
    if any(float(levels[k : k + 3].max()) <= rounding for k in range(m - 2)):
        return NoiseEstimate(
            level=eps * abs(centre), relative=eps, order=None, n_evals=n, status="no_noise"
        )
    return unsuitable("step_too_large")
