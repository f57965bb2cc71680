"""The finite-difference error of one gradient entry as the step shrinks (numpy only).

A central difference with step ``h`` has a truncation error that falls like
``h**2`` and a round-off error that grows like ``eps / h``: on log-log axes the
error against the step is a V, whose bottom is near the step gradproof chooses
(``default_relative_step(float64) * max(1, |x|)`` for a loss without noise, larger
for a noisy one). :func:`step_sweep` measures
that V for one entry; :func:`gradproof.report.figures.plot_step_sweep` draws it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from gradproof._typing import FloatArray, Params
from gradproof.engine.evaluator import LossEvaluator
from gradproof.errors import InputError
from gradproof.numerics.steps import default_relative_step
from gradproof.results import CheckResult, ParamReport
from gradproof.tree import Leaf, ParamTree, format_index

__all__ = ["DEFAULT_STEPS", "StepSweep", "default_entry", "step_sweep"]

DEFAULT_STEPS: FloatArray = np.logspace(-14, -1, 27)
"""The absolute steps swept by default: two per decade from 1e-14 to 1e-1."""

_INDEX = re.compile(r"^\[(\s*-?\d+\s*(?:,\s*-?\d+\s*)*)\]$")


@dataclass(frozen=True, slots=True, kw_only=True)
class StepSweep:
    """Central differences of one gradient entry over a range of steps.

    Attributes
    ----------
    entry : str
        The entry, e.g. ``W1[3, 2]``.
    x : float
        The parameter entry's value at the checked point.
    steps : ndarray
        The absolute steps ``h`` taken, increasing.
    derivatives : ndarray
        ``(L(x + h) - L(x - h)) / (2 h)`` at each step.
    errors : ndarray
        ``|derivative - reference|`` at each step.
    reference : float
        What the differences are compared with.
    reference_kind : {"analytic", "extrapolated"}
        ``analytic``: the analytic gradient's value; ``extrapolated``: a
        Richardson extrapolation of central differences (accurate to
        ``O(h**4)``), for when the analytic value is not trusted.
    analytic : float or None
        The analytic gradient's value, when given.
    chosen_step : float
        The step gradproof took for this entry: the rule in ``result.step_rules``
        for its dtype when a check is given, else
        ``default_relative_step(float64) * max(1, |x|)``.
    """

    entry: str
    x: float
    steps: FloatArray
    derivatives: FloatArray
    errors: FloatArray
    reference: float
    reference_kind: str
    analytic: float | None
    chosen_step: float

    @property
    def best_step(self) -> float:
        """The swept step with the smallest (finite) error; NaN if none is finite."""
        finite = np.isfinite(self.errors)
        if not finite.any():
            return float("nan")
        masked = np.where(finite, self.errors, np.inf)
        return float(self.steps[int(np.argmin(masked))])


def default_entry(result: CheckResult) -> str:
    """Return the worst entry of the worst parameter of a check.

    Parameters
    ----------
    result : CheckResult
        A finished check.

    Returns
    -------
    str
        The entry's name, e.g. ``W2[0, 1]``: the first wrong entry of the
        parameter with the largest error ratio, or its worst judged entry.

    Raises
    ------
    InputError
        If no entry of any parameter was judged.
    """

    def ratio(report: ParamReport) -> float:
        value = report.error_ratio
        return value if value == value else -1.0  # NaN (nothing judged) sorts last

    for report in sorted(result.params, key=ratio, reverse=True):
        if report.failures:
            return report.failures[0].name
        if report.worst is not None:
            return report.worst.name
    raise InputError("no entry of this check was judged: name the entry to sweep")


def _find_entry(tree: ParamTree, entry: str) -> tuple[Leaf, tuple[int, ...]]:
    """Map an entry name such as ``W1[3, 2]`` to its leaf and index."""
    candidates: list[tuple[Leaf, tuple[int, ...]]] = []
    for leaf in tree.leaves:
        if entry == leaf.name and leaf.size == 1:
            candidates.append((leaf, (0,) * len(leaf.shape)))
        elif entry.startswith(leaf.name):
            match = _INDEX.match(entry[len(leaf.name) :])
            if match is None:
                continue
            index = tuple(int(i) for i in match.group(1).split(","))
            if len(index) == len(leaf.shape) and all(
                0 <= i < n for i, n in zip(index, leaf.shape, strict=True)
            ):
                candidates.append((leaf, index))
    if not candidates:
        names = ", ".join(f"{leaf.name}{list(leaf.shape)}" for leaf in tree.leaves)
        raise InputError(
            f"no entry {entry!r} in the parameters ({names}); name one as e.g. "
            f"{format_index(tree.leaves[0].name, (0,) * len(tree.leaves[0].shape))!r}"
        )
    return max(candidates, key=lambda c: len(c[0].name))


def _chosen_step(result: CheckResult | None, dtype: np.dtype[Any], x: float) -> float:
    """Return the step the check took at `x`: its rule for `dtype`, else the float64 default.

    A check has one rule per dtype it differenced in (or the user's `eps` or
    `rel_step`); a parameter differenced in float64 for a float32 loss has no
    rule of its own dtype and takes the first.
    """
    rules = result.step_rules if result is not None else ()
    if rules:
        return next((r for r in rules if r.dtype == dtype.name), rules[0]).at(x)
    return default_relative_step(np.float64) * max(1.0, abs(x))


def step_sweep(
    loss: Callable[[Any], Any],
    params: Params,
    entry: str | None = None,
    *,
    analytic_value: float | None = None,
    against: Literal["analytic", "extrapolated"] = "analytic",
    result: CheckResult | None = None,
    steps: npt.ArrayLike | None = None,
) -> StepSweep:
    """Measure the central-difference error of one gradient entry at many steps.

    Parameters
    ----------
    loss : callable
        The loss, called with a parameter container like `params`; it must
        return a scalar.
    params : container
        The point at which the gradient is checked (not modified).
    entry : str, optional
        The entry to sweep, e.g. ``"W1[3, 2]"``. By default the worst entry of
        the worst parameter of `result`, else the first entry.
    analytic_value : float, optional
        The analytic gradient's value of the entry; by default taken from
        `result` when it measured the entry.
    against : {"analytic", "extrapolated"}, optional
        What to measure the error against: the analytic value (when there is
        one) or a Richardson extrapolation of central differences. Use
        ``"extrapolated"`` when the analytic value may be wrong: against a
        wrong value the error does not fall with the step.
    result : CheckResult, optional
        A check of the same loss and point, to pick the entry, its analytic
        value and the step the check took. The loss is re-seeded before every
        call with the check's `seed`, as the check did.
    steps : array_like, optional
        Absolute steps; by default :data:`DEFAULT_STEPS` (1e-14 to 1e-1).

    Returns
    -------
    StepSweep
        The steps, the differences, their errors and the step gradproof chooses.

    Raises
    ------
    InputError
        If `entry` names no entry of `params`, or the loss returns no scalar.
    UserCodeError
        If the loss raises; the original exception is its ``__cause__``.

    Examples
    --------
    >>> import numpy as np
    >>> sweep = step_sweep(lambda p: float(np.sum(np.sin(p))), np.array([0.5, 1.0]),
    ...                    "params[1]", analytic_value=float(np.cos(1.0)))
    >>> bool(1e-8 < sweep.best_step < 1e-3)
    True
    """
    tree, x0 = ParamTree.flatten(params)
    leaf_dtypes = {leaf.name: leaf.dtype for leaf in tree.leaves}
    tree = tree.with_dtype(np.float64)  # the sweep runs in float64, as the chosen step assumes
    if entry is None:
        entry = (
            default_entry(result)
            if result is not None
            else format_index(tree.leaves[0].name, (0,) * len(tree.leaves[0].shape))
        )
    leaf, index = _find_entry(tree, entry)
    leaf_dtype = leaf_dtypes[leaf.name]
    position = leaf.offset + (int(np.ravel_multi_index(index, leaf.shape)) if index else 0)
    if analytic_value is None and result is not None:
        for report in result.params:
            if report.name == leaf.name:
                value = float(report.analytic[index]) if index else float(report.analytic)
                analytic_value = value if value == value else None
    hs = np.sort(np.asarray(DEFAULT_STEPS if steps is None else steps, dtype=np.float64).ravel())
    if hs.size == 0 or not np.all(hs > 0):
        raise InputError("`steps` must be positive")
    xi = float(x0[position])

    evaluator = LossEvaluator(loss, tree, result.seed if result is not None else None)

    def central(h: float) -> float:
        point = x0.copy()
        point[position] = xi + h
        up = evaluator.evaluate(point, where="during the step sweep")[0]
        point = x0.copy()
        point[position] = xi - h
        down = evaluator.evaluate(point, where="during the step sweep")[0]
        # Divide by the step actually taken (x + h is rounded), as the check does.
        return (up - down) / ((xi + h) - (xi - h))

    derivatives = np.array([central(float(h)) for h in hs])
    chosen = _chosen_step(result, leaf_dtype, xi)
    # Richardson extrapolation from a step well above the round-off regime.
    coarse = max(chosen * 100.0, 1e-3 * max(1.0, abs(xi)))
    extrapolated = (4.0 * central(coarse / 2.0) - central(coarse)) / 3.0
    if against == "analytic" and analytic_value is not None:
        reference, kind = float(analytic_value), "analytic"
    else:
        reference, kind = extrapolated, "extrapolated"
    return StepSweep(
        entry=format_index(leaf.name, index),
        x=xi,
        steps=hs,
        derivatives=derivatives,
        errors=np.abs(derivatives - reference),
        reference=reference,
        reference_kind=kind,
        analytic=None if analytic_value is None else float(analytic_value),
        chosen_step=float(chosen),
    )
