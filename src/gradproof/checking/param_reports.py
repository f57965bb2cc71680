"""One report per parameter tensor, from the verdicts of its entries and probes."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from gradproof._typing import FloatArray
from gradproof.checking.diagnose import (
    diagnose_parameter,
    diagnose_probes,
    diagnose_swaps,
)
from gradproof.checking.diagnose_dialects import in_dialect
from gradproof.checking.diagnose_fits import _systematic_diagnosis
from gradproof.checking.directional import DirectionalOutcome
from gradproof.checking.entries import (
    FAIL,
    INCONCLUSIVE,
    PASS,
    REASON_DISCONTINUOUS,
    REASON_NON_FINITE,
    REASONS,
    UNCHECKED,
    Entries,
)
from gradproof.checking.setup import _measured_level
from gradproof.numerics.compare import relative_difference
from gradproof.numerics.noise import NoiseEstimate
from gradproof.numerics.steps import (
    machine_epsilon,
)
from gradproof.results import (
    Diagnosis,
    EntryReport,
    InconclusiveEntry,
    ParamReport,
    ProbeReport,
    StepRule,
    Verdict,
)
from gradproof.tree import Leaf, ParamTree, format_index


def _param_reports(
    tree: ParamTree,
    entries: Entries,
    strategy: str,
    outcome: DirectionalOutcome | None,
    max_listed: int | None,
    dialect: str = "numpy",
) -> tuple[ParamReport, ...]:
    tolerance = entries.tolerance()
    reports = [
        _param_report(
            leaf,
            entries,
            tolerance,
            strategy=strategy,
            probes=() if outcome is None else tuple(outcome.probes.get(i, ())),
            localised=outcome is not None and outcome.localised.get(i, False),
            max_listed=max_listed,
        )
        for i, leaf in enumerate(tree.leaves)
    ]
    # Two wrong parameters whose gradients fit each other's: a swap explains both at once.
    swaps = diagnose_swaps(
        [(r.name, r.analytic, r.numeric, r.verdict is Verdict.FAIL) for r in reports]
    )
    reports = [
        dataclasses.replace(r, diagnosis=swaps[r.name]) if r.name in swaps else r for r in reports
    ]
    # Hints in the words of the code checked (Note [Hints fit the code]).
    return tuple(
        dataclasses.replace(r, diagnosis=in_dialect(r.diagnosis, dialect))
        if r.diagnosis is not None
        else r
        for r in reports
    )


def _param_report(
    leaf: Leaf,
    entries: Entries,
    tolerance_all: FloatArray,
    *,
    strategy: str,
    probes: tuple[ProbeReport, ...],
    localised: bool,
    max_listed: int | None,
) -> ParamReport:
    span = leaf.span
    analytic, numeric = entries.analytic[span], entries.numeric[span]
    tolerance, codes = tolerance_all[span], entries.codes[span]
    error_bar = entries.error_bar[span]
    judged = (codes == PASS) | (codes == FAIL)
    failed = codes == FAIL
    inconclusive = codes == INCONCLUSIVE
    with np.errstate(invalid="ignore", divide="ignore"):
        error = np.abs(analytic - numeric)
        ratio = np.where(error == 0, 0.0, error / tolerance)
    ratio = np.where(np.isnan(ratio) & judged, np.inf, ratio)  # a NaN analytic entry is wrong
    ranked = np.where(judged, _beyond_roundoff(ratio), -1.0)

    def index_of(i: int) -> tuple[int, ...]:
        return tuple(int(j) for j in np.unravel_index(i, leaf.shape)) if leaf.shape else ()

    def entry(i: int) -> EntryReport:
        return EntryReport(
            name=format_index(leaf.name, index_of(i)),
            index=index_of(i),
            analytic=float(analytic[i]),
            numeric=float(numeric[i]),
            tolerance=float(tolerance[i]),
            error_bar=float(error_bar[i]),
        )

    def doubtful(i: int) -> InconclusiveEntry:
        j = span.start + i if span.start else i
        return InconclusiveEntry(
            name=format_index(leaf.name, index_of(i)),
            index=index_of(i),
            analytic=float(analytic[i]),
            left=float(entries.left[j]),
            right=float(entries.right[j]),
            reason=REASONS[int(entries.reason[j])],
            # At a jump no derivative exists, so nothing is a subgradient.
            subgradient=bool(entries.reason[j] not in (REASON_NON_FINITE, REASON_DISCONTINUOUS)),
        )

    # A small systematic error found across the tensor's entries (Note [Small systematic errors]).
    systematic = next(
        (
            fit
            for fit in entries.systematic
            if fit.indices.size and span.start <= int(fit.indices[0]) < span.stop
        ),
        None,
    )
    order = np.argsort(-ranked, kind="stable")
    listed = int(failed.sum()) if max_listed is None else min(int(failed.sum()), max_listed)
    failures = tuple(entry(int(i)) for i in order[:listed])
    verdict = _verdict(failed.any(), inconclusive.any(), probes, localised)
    return ParamReport(
        name=leaf.name,
        shape=leaf.shape,
        dtype=str(leaf.dtype),
        verdict=verdict,
        relative_difference=relative_difference(analytic[judged], numeric[judged]),
        max_abs_error=float(np.max(error[judged])) if judged.any() else 0.0,
        error_ratio=float(np.max(ratio[judged])) if judged.any() else 0.0,
        worst=entry(int(np.argmax(ranked))) if judged.any() else None,
        failures=failures,
        inconclusive_entries=tuple(
            doubtful(int(i)) for i in np.flatnonzero(inconclusive)[:max_listed]
        ),
        n_entries=leaf.size,
        n_checked=int(np.count_nonzero(codes != UNCHECKED)),
        n_failed=int(failed.sum()),
        n_inconclusive=int(inconclusive.sum()),
        diagnosis=(
            _systematic_diagnosis(leaf.name, systematic.factor, systematic.uncertainty)
            if systematic is not None
            else diagnose_parameter(
                leaf.name,
                analytic.reshape(leaf.shape),
                # Localisation showed that the entries it found account for the probe's
                # discrepancy: the entries it did not measure count as right.
                (np.where(np.isnan(numeric), analytic, numeric) if localised else numeric).reshape(
                    leaf.shape
                ),
                wrong=failed.reshape(leaf.shape),
            )
            if failed.any()
            else _probe_diagnosis(leaf.name, probes, verdict)
        ),
        analytic=analytic.reshape(leaf.shape),
        numeric=numeric.reshape(leaf.shape),
        tolerance=tolerance.reshape(leaf.shape),
        strategy=strategy,
        probes=probes,
    )


def _beyond_roundoff(ratio: FloatArray) -> FloatArray:
    """Round error ratios to six significant digits, far above their round-off.

    Entries are listed worst first; entries whose ratios agree to six digits
    (a factor bug gives every entry the same ratio, up to round-off) are
    listed in index order, so that round-off, which differs between CPUs,
    never reorders a report.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        unit = 10.0 ** (np.floor(np.log10(ratio)) - 5)
        rounded: FloatArray = np.where(
            np.isfinite(ratio) & (ratio > 0), np.round(ratio / unit) * unit, ratio
        )
    return rounded


def _probe_diagnosis(
    name: str, probes: tuple[ProbeReport, ...], verdict: Verdict
) -> Diagnosis | None:
    failing = [p for p in probes if p.verdict is Verdict.FAIL]
    if verdict is not Verdict.FAIL or not failing:
        return None
    return diagnose_probes(
        name,
        np.array([p.analytic for p in failing]),
        np.array([p.numeric for p in failing]),
    )


def _verdict(
    failed: bool, inconclusive: bool, probes: tuple[ProbeReport, ...], localised: bool
) -> Verdict:
    """Return a tensor's verdict from its entries and, in directional mode, its probes.

    A failing probe whose localisation reached single entries without finding
    a wrong one is not proof of a bug (the entries were measured more
    precisely): inconclusive. One that could not be localised stands.
    """
    if failed:
        return Verdict.FAIL
    probe_verdicts = {p.verdict for p in probes}
    if Verdict.FAIL in probe_verdicts:
        return Verdict.INCONCLUSIVE if localised else Verdict.FAIL
    if inconclusive or (probes and Verdict.PASS not in probe_verdicts):
        return Verdict.INCONCLUSIVE
    return Verdict.PASS


def _step_rules(
    eps: float | None,
    rel_step: float | None,
    dtypes: list[tuple[slice, np.dtype[Any]]],
    order: int,
    estimate: NoiseEstimate | None,
    f0: float,
) -> tuple[StepRule, ...]:
    if eps is not None:
        return (StepRule("absolute", float(eps)),)
    if rel_step is not None:
        return (StepRule("relative", float(rel_step)),)
    level = _measured_level(estimate) / max(abs(f0), 1e-300)
    steps = sorted(
        {(max(machine_epsilon(dt), level) ** (1 / (order + 1)), dt.name) for _, dt in dtypes}
    )
    return tuple(StepRule("relative", float(h), name) for h, name in steps)
