"""Immutable results of a gradient check: one report per parameter and the overall verdict."""

from __future__ import annotations

import dataclasses
import functools
import importlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any, Literal

import numpy as np

from gradproof._typing import FloatArray
from gradproof.numerics.sampling import miss_chance

__all__ = [
    "CheckResult",
    "Diagnosis",
    "DiagnosisKind",
    "EntryReport",
    "InconclusiveEntry",
    "ParamReport",
    "ProbeReport",
    "StepRule",
    "Verdict",
    "register_renderer",
]


DiagnosisKind = Literal[
    "non_finite",
    "zero",
    "transpose",
    "sign",
    "scale",
    "few_entries",
    "one_entry",
    "axis",
    "swapped",
    "unknown",
]
"""The patterns :class:`Diagnosis` names."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Diagnosis:
    """The pattern of one parameter's wrong gradient.

    Attributes
    ----------
    kind : DiagnosisKind
        The pattern found: ``"non_finite"``, ``"zero"``, ``"transpose"``,
        ``"sign"``, ``"scale"``, ``"few_entries"``, ``"one_entry"`` (a
        parameter with a single entry checked, which no pattern can describe),
        ``"axis"``, ``"swapped"`` or ``"unknown"``.
    summary : str
        One line saying what the error looks like, e.g. ``analytic = 2 x numeric``.
    hint : str
        Where to look in the backward pass.
    factor : float or None
        For ``scale`` and ``sign``: the fitted ``k`` in ``analytic = k * numeric``;
        for ``transpose``: the ``k`` in ``analytic = k * numeric.T``.
    entries : tuple of tuple of int
        For ``few_entries``: the index of every wrong entry, in C order; for
        ``one_entry``: the index of that entry.
    axis : int or None
        For ``axis``: the axis along which the error is the same, or across
        whose slices the wrong entries lie.
    partner : str or None
        For ``swapped``: the parameter whose gradient this one's analytic
        gradient is.
    """

    kind: DiagnosisKind
    summary: str
    hint: str
    factor: float | None = None
    entries: tuple[tuple[int, ...], ...] = ()
    axis: int | None = None
    partner: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return {
            "kind": self.kind,
            "summary": self.summary,
            "hint": self.hint,
            "factor": self.factor,
            "entries": [list(index) for index in self.entries],
            "axis": self.axis,
            "partner": self.partner,
        }


class Verdict(str, Enum):
    """The verdict on a gradient entry, a parameter, or a whole check."""

    PASS = "pass"
    """The analytic gradient agrees with the numerical one within tolerance."""
    FAIL = "fail"
    """The analytic gradient is wrong."""
    INCONCLUSIVE = "inconclusive"
    """No reliable numerical estimate could be made (e.g. the loss was not finite nearby)."""

    def __str__(self) -> str:
        return self.value


def _json_float(value: float) -> float | None:
    """JSON has no NaN or infinity: write them as null."""
    return float(value) if math.isfinite(value) else None


def _frozen(array: FloatArray) -> FloatArray:
    """Return a read-only copy: ``frozen`` dataclasses do not freeze arrays."""
    out = np.array(array, dtype=np.float64)
    out.setflags(write=False)
    return out


@dataclass(frozen=True, slots=True, kw_only=True)
class EntryReport:
    """One entry of a gradient, compared.

    Attributes
    ----------
    name : str
        The entry, e.g. ``W1[3, 2]``.
    index : tuple of int
        Its index within the parameter.
    analytic, numeric : float
        The two values of the gradient entry.
    tolerance : float
        The largest acceptable ``|analytic - numeric|``:
        ``atol + rtol * max(|analytic|, |numeric|) + error_bar``.
    error_bar : float
        The finite difference's own uncertainty (the loss's noise and
        round-off divided by the step, plus truncation for re-measured
        entries), included in `tolerance`; NaN where it is not known.
    """

    name: str
    index: tuple[int, ...]
    analytic: float
    numeric: float
    tolerance: float
    error_bar: float = math.nan

    @property
    def error(self) -> float:
        """``|analytic - numeric|``."""
        return abs(self.analytic - self.numeric)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return {
            "name": self.name,
            "index": list(self.index),
            "analytic": _json_float(self.analytic),
            "numeric": _json_float(self.numeric),
            "error": _json_float(self.error),
            "tolerance": _json_float(self.tolerance),
            "error_bar": _json_float(self.error_bar),
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class InconclusiveEntry:
    """An entry the finite differences could not judge.

    Attributes
    ----------
    name : str
        The entry, e.g. ``W1[3, 2]``.
    index : tuple of int
        Its index within the parameter.
    analytic : float
        The analytic gradient's value.
    left, right : float
        The loss's one-sided derivatives at the smallest step taken (NaN when
        the loss was not finite nearby).
    reason : {"kink", "no_safe_step", "non_finite", "discontinuous", "several_kinks"}
        ``kink``: the loss has a kink here (one-sided derivatives that
        differ at every step); ``no_safe_step``: no step could be taken that is
        both smooth and above the noise; ``non_finite``: the loss was not
        finite at a neighbouring point; ``discontinuous``: the loss jumps here
        (one-sided differences that grow as the step shrinks), so no
        derivative exists; ``several_kinks``: several kinks meet here and the
        analytic value, outside the one-sided derivatives, is a limit of the
        gradient from nearby smooth points.
    subgradient : bool
        Whether the analytic value lies between the one-sided derivatives
        (within tolerance): at a kink it is then a valid subgradient.
    """

    name: str
    index: tuple[int, ...]
    analytic: float
    left: float
    right: float
    reason: str
    subgradient: bool

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return {
            "name": self.name,
            "index": list(self.index),
            "analytic": _json_float(self.analytic),
            "left": _json_float(self.left),
            "right": _json_float(self.right),
            "reason": self.reason,
            "subgradient": self.subgradient,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class ProbeReport:
    """One directional probe: the gradient along a random direction, compared.

    Attributes
    ----------
    name : str
        What the probe covers, e.g. ``W1 (direction 0)``.
    param : str
        The parameter tensor it lies in.
    start, stop : int
        The range of the tensor's entries it moves (flat, row-major).
    draw : int
        Which random direction of the tensor it is.
    analytic, numeric : float
        The directional derivative from the analytic gradient (``g . v``) and
        from finite differences along ``v``.
    tolerance : float
        The largest acceptable ``|analytic - numeric|``, `error_bar` included.
    verdict : Verdict
        Whether the two agree.
    error_bar : float
        The finite difference's own uncertainty along the direction; NaN
        where it is not known.
    """

    name: str
    param: str
    start: int
    stop: int
    draw: int
    analytic: float
    numeric: float
    tolerance: float
    verdict: Verdict
    error_bar: float = math.nan

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return {
            "name": self.name,
            "param": self.param,
            "start": self.start,
            "stop": self.stop,
            "draw": self.draw,
            "analytic": _json_float(self.analytic),
            "numeric": _json_float(self.numeric),
            "tolerance": _json_float(self.tolerance),
            "error_bar": _json_float(self.error_bar),
            "verdict": self.verdict.value,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class ParamReport:
    """The check of one parameter tensor.

    Attributes
    ----------
    name : str
        The parameter's path, e.g. ``W1`` or ``layers[0].weight``.
    shape : tuple of int
        Its shape.
    dtype : str
        Its dtype.
    verdict : Verdict
        ``FAIL`` if any entry is wrong; else ``INCONCLUSIVE`` if any entry
        could not be judged; else ``PASS``.
    relative_difference : float
        The assignment's ``||a - n|| / (||a|| + ||n||)`` over this parameter's
        judged entries.
    max_abs_error : float
        Largest ``|analytic - numeric|`` over the judged entries.
    error_ratio : float
        Largest ``|analytic - numeric| / tolerance``: below 1 every entry
        passes, and how far below is the margin.
    worst : EntryReport or None
        The entry with the largest error ratio (None if nothing was judged).
    failures : tuple of EntryReport
        The wrong entries, worst first (at most the check's `max_listed`,
        20 by default).
    inconclusive_entries : tuple of InconclusiveEntry
        The entries that could not be judged, with why (at most `max_listed`).
    n_entries, n_checked, n_failed, n_inconclusive : int
        Entry counts: in all, measured, wrong, not judged.
    diagnosis : Diagnosis or None
        For a failing parameter, what the error looks like.
    analytic, numeric, tolerance : ndarray
        The full gradients and per-entry tolerances, shaped like the parameter
        (read-only; NaN where not measured).
    strategy : {"full", "sampled", "directional"}
        How the tensor was checked: every entry, a random sample of entries,
        or random directional probes (with the wrong entries localised).
    probes : tuple of ProbeReport
        The directional probes of the whole tensor (``directional`` only).
    subject : str
        What the report is about in the user's terms when that is not `name`
        itself: the adapters check a function's input ``x`` through several
        reports (``d out[0] / d x``, ``d out[1] / d x``, its forward-mode
        check) that all have the subject ``x``. Empty for :func:`gradproof.check`,
        whose reports are the parameters themselves (see :attr:`subject_name`).
    section : str
        The heading the report is shown under, e.g. ``"reverse mode"``,
        ``"forward mode"`` or ``"second order"``; empty for a check that has
        one kind of report only.
    """

    name: str
    shape: tuple[int, ...]
    dtype: str
    verdict: Verdict
    relative_difference: float
    max_abs_error: float
    error_ratio: float
    worst: EntryReport | None
    failures: tuple[EntryReport, ...]
    inconclusive_entries: tuple[InconclusiveEntry, ...]
    n_entries: int
    n_checked: int
    n_failed: int
    n_inconclusive: int
    diagnosis: Diagnosis | None
    analytic: FloatArray
    numeric: FloatArray
    tolerance: FloatArray
    strategy: str = "full"
    probes: tuple[ProbeReport, ...] = ()
    subject: str = ""
    section: str = ""

    def __post_init__(self) -> None:
        for field in ("analytic", "numeric", "tolerance"):
            object.__setattr__(self, field, _frozen(getattr(self, field)))

    def __reduce__(self) -> tuple[Any, ...]:
        # Unpickling bypasses __init__; rebuild through it so the arrays come back read-only.
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return (functools.partial(type(self), **fields), ())

    @property
    def passed(self) -> bool:
        """Whether every entry of this parameter passed."""
        return self.verdict is Verdict.PASS

    @property
    def subject_name(self) -> str:
        """What the report is about: its `subject`, or its `name` when it has none."""
        return self.subject or self.name

    @property
    def coverage(self) -> float:
        """Fraction of the entries measured one by one (1 for a full sweep)."""
        return self.n_checked / self.n_entries if self.n_entries else 1.0

    def miss_chance(self, density: float = 0.01) -> float:
        """Chance that entry sampling missed a bug touching this fraction of the entries.

        Meaningful for ``strategy == "sampled"``; 0 when every entry was measured.
        """
        return miss_chance(self.n_entries, self.n_checked, density)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict (without the full gradient arrays)."""
        return {
            "name": self.name,
            "shape": list(self.shape),
            "dtype": self.dtype,
            "verdict": self.verdict.value,
            "relative_difference": _json_float(self.relative_difference),
            "max_abs_error": _json_float(self.max_abs_error),
            "error_ratio": _json_float(self.error_ratio),
            "worst": None if self.worst is None else self.worst.to_dict(),
            "failures": [entry.to_dict() for entry in self.failures],
            "inconclusive_entries": [entry.to_dict() for entry in self.inconclusive_entries],
            "n_entries": self.n_entries,
            "n_checked": self.n_checked,
            "n_failed": self.n_failed,
            "n_inconclusive": self.n_inconclusive,
            "diagnosis": None if self.diagnosis is None else self.diagnosis.to_dict(),
            "strategy": self.strategy,
            "coverage": self.coverage,
            "probes": [probe.to_dict() for probe in self.probes],
            "subject": self.subject_name,
            "section": self.section,
        }


@dataclass(frozen=True, slots=True)
class StepRule:
    """How a check chose its finite-difference steps.

    Attributes
    ----------
    kind : {"relative", "absolute"}
        ``"relative"``: the step at ``x`` is ``value * max(1, |x|)``;
        ``"absolute"``: it is `value` everywhere.
    value : float
        The relative or absolute step.
    dtype : str or None
        The dtype of the parameters it applies to (checks of mixed dtypes have
        one rule each), or None when it applies to all.
    """

    kind: str
    value: float
    dtype: str | None = None

    def at(self, x: float) -> float:
        """Return the step this rule takes at a coordinate of value `x`."""
        return self.value * max(1.0, abs(x)) if self.kind == "relative" else self.value

    def __str__(self) -> str:
        if self.kind == "absolute":
            return f"absolute {self.value:.3g}"
        return f"relative {self.value:.3g} × max(1, |x|)" + (
            f" ({self.dtype})" if self.dtype else ""
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckResult:
    """The result of :func:`gradproof.check`.

    Attributes
    ----------
    params : tuple of ParamReport
        One report per parameter tensor, in the order of the parameters.
    relative_difference : float
        The assignment's relative difference over all judged entries together.
    loss_value : float
        The loss at the checked point.
    method : str
        The finite-difference method, e.g. ``"central"``.
    step_rules : tuple of StepRule
        The step rules used: one per dtype, or the user's `eps` or `rel_step`.
        ``result.step`` describes them, e.g. ``"relative 6.06e-06 × max(1, |x|)
        (float64)"`` or ``"absolute 1e-07"``.
    rtol, atol : float
        The tolerances applied (for parameters of mixed dtypes, the loosest
        default `rtol`).
    seed : int or None
        The seed the random generators were reset to before every evaluation.
    noise_level : float or None
        The loss's measured noise (standard deviation of its values near the
        point); None when not measured.
    notes : tuple of str
        Things the check noticed and did about them: precision lost in the
        loss, float32 parameters evaluated in float64, a complex step that
        disagreed with central differences.
    n_evals : int
        Loss evaluations spent.
    n_refined : int
        Entries re-measured at smaller steps (to separate truncation error
        from a bug, or to find a kink).
    seconds : float
        Wall-clock time of the check.
    interrupted : bool
        Whether the check stopped before it measured everything it meant to
        (see `stop_reason`); the reports then cover only the measured entries
        (``n_checked``).
    stop_reason : {None, "interrupt", "deadline", "budget", "error", "lost"}
        Why it stopped early: Ctrl-C, `time_budget` passed, `max_evals`
        reached, the loss raised at some point (the error raised with this
        result as its ``partial_result`` names it), or a worker process was
        lost. None when the check ran to the end.
    mode : {"full", "sampled", "directional"}
        The strategy that ran (``mode="auto"`` says which it chose).
    engine : str
        What ran the evaluations, e.g. ``"serial"`` or ``"4 worker processes"``.
    n_probes : int
        Directional probes measured (localisation included).
    max_evals : int or None
        The evaluation budget the strategy was chosen for, if any.
    subject_noun : str
        What the checked things are called in the headline: ``"parameter"``
        for :func:`gradproof.check`, ``"input"`` or ``"argument"`` for the
        adapters, which count their inputs (the reports' subjects), not their
        reports.
    """

    params: tuple[ParamReport, ...]
    relative_difference: float
    loss_value: float
    method: str
    step_rules: tuple[StepRule, ...]
    rtol: float
    atol: float
    seed: int | None = None
    noise_level: float | None = None
    notes: tuple[str, ...] = ()
    n_evals: int
    n_refined: int
    seconds: float
    interrupted: bool
    stop_reason: str | None = None
    mode: str = "full"
    engine: str = "serial"
    n_probes: int = 0
    max_evals: int | None = None
    subject_noun: str = "parameter"

    @property
    def step(self) -> str:
        """The step rules as one line, e.g. ``"relative 6.06e-06 × max(1, |x|) (float64)"``."""
        return ", ".join(str(rule) for rule in self.step_rules)

    @property
    def verdict(self) -> Verdict:
        """``FAIL`` if any parameter failed, else ``INCONCLUSIVE`` if any was, else ``PASS``.

        An interrupted check that found nothing wrong is ``INCONCLUSIVE``: it
        did not look at everything.
        """
        verdicts = {p.verdict for p in self.params}
        if Verdict.FAIL in verdicts:
            return Verdict.FAIL
        if Verdict.INCONCLUSIVE in verdicts or self.interrupted:
            return Verdict.INCONCLUSIVE
        return Verdict.PASS

    @property
    def passed(self) -> bool:
        """Whether every entry of every parameter was checked and passed."""
        return self.verdict is Verdict.PASS

    @property
    def subjects(self) -> tuple[str, ...]:
        """What was checked, each once: the parameters' names, or the adapters' inputs.

        A report's subject is its `subject_name`; an input checked through
        several reports (Jacobian rows, forward and reverse mode) is one
        subject.
        """
        return tuple(dict.fromkeys(p.subject_name for p in self.params))

    @property
    def suspects(self) -> tuple[str, ...]:
        """The subjects (parameters, or the adapters' inputs) with a wrong gradient."""
        failing = (p.subject_name for p in self.params if p.verdict is Verdict.FAIL)
        return tuple(dict.fromkeys(failing))

    @property
    def inconclusive(self) -> tuple[str, ...]:
        """The subjects with entries that could not be judged, and none wrong."""
        wrong = set(self.suspects)
        return tuple(
            dict.fromkeys(
                p.subject_name
                for p in self.params
                if p.verdict is Verdict.INCONCLUSIVE and p.subject_name not in wrong
            )
        )

    @property
    def sections(self) -> tuple[str, ...]:
        """The report headings in order of first use (``("",)`` for a plain check)."""
        return tuple(dict.fromkeys(p.section for p in self.params))

    @property
    def n_entries(self) -> int:
        """Number of parameter entries in all."""
        return sum(p.n_entries for p in self.params)

    @property
    def n_checked(self) -> int:
        """Number of parameter entries measured."""
        return sum(p.n_checked for p in self.params)

    @property
    def margin(self) -> float:
        """How many times over the worst judged entry fits within its tolerance.

        Above 1 every judged entry passes: 50 means the worst one uses 2 % of
        its tolerance. Below 1 some entry is wrong. Infinite when every
        judged entry agrees exactly.
        """
        worst = max((p.error_ratio for p in self.params), default=0.0)
        return float("inf") if worst == 0 else 1.0 / worst

    def __getitem__(self, name: str) -> ParamReport:
        """Return the report called `name`, or the one report whose subject is `name`."""
        for report in self.params:
            if report.name == name:
                return report
        about = [p for p in self.params if p.subject_name == name]
        if len(about) == 1:
            return about[0]
        known = ", ".join(p.name for p in self.params)
        if about:
            raise KeyError(
                f"{name!r} is checked by {len(about)} reports; ask for one by its name: "
                + ", ".join(p.name for p in about)
            )
        what = "report" if any(p.subject for p in self.params) else self.subject_noun
        raise KeyError(f"no {what} named {name!r}; the {what}s are: {known}")

    def __str__(self) -> str:
        return _render(self)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict: ``json.dumps(result.to_dict())`` works."""
        return {
            "verdict": self.verdict.value,
            "passed": self.passed,
            "suspects": list(self.suspects),
            "inconclusive": list(self.inconclusive),
            "relative_difference": _json_float(self.relative_difference),
            "loss_value": _json_float(self.loss_value),
            "method": self.method,
            "step": self.step,
            "rtol": self.rtol,
            "atol": self.atol,
            "margin": _json_float(self.margin),
            "seed": self.seed,
            "noise_level": None if self.noise_level is None else _json_float(self.noise_level),
            "notes": list(self.notes),
            "n_entries": self.n_entries,
            "n_checked": self.n_checked,
            "n_evals": self.n_evals,
            "n_refined": self.n_refined,
            "seconds": self.seconds,
            "interrupted": self.interrupted,
            "stop_reason": self.stop_reason,
            "mode": self.mode,
            "engine": self.engine,
            "n_probes": self.n_probes,
            "max_evals": self.max_evals,
            "subject_noun": self.subject_noun,
            "params": [p.to_dict() for p in self.params],
        }


# -- rendering -------------------------------------------------------------------------------------
_RENDERERS: dict[str, Callable[[CheckResult], str]] = {}
"""The text renderer, registered by :mod:`gradproof.report.text` (Note [Results render late])."""


def register_renderer(render: Callable[[CheckResult], str]) -> None:
    """Register the function that ``str(result)`` calls (the report layer's text renderer).

    Note [Results render late]
        Results sit below the reports in the layers (``docs/architecture.md``):
        this module must not import :mod:`gradproof.report.text`, which imports
        it. The report layer registers its renderer when it is imported, and
        ``str(result)`` imports that layer by name the first time, if nobody
        has yet.
    """
    _RENDERERS["text"] = render


def _render(result: CheckResult) -> str:
    if "text" not in _RENDERERS:
        importlib.import_module("gradproof.report.text")  # registers itself
    return _RENDERERS["text"](result)
