"""The directional strategy: random probes per tensor, then localisation of the wrong entries.

Note [Localisation]
    When a tensor's probe fails, its range is split in two halves and the
    probe restricted to the first half is measured (two evaluations). The
    probe's derivative is linear in its range, so the second half's
    discrepancy ``r2 = r - r1`` follows without evaluating it; its
    uncertainty is the sum of the two error bars. A half is descended into
    when its discrepancy exceeds its tolerance plus that uncertainty, and is
    otherwise clean: an error hidden in that uncertainty is one the tensor's
    own probe, whose error bar is of the same size, could not have shown
    either. A first half that cannot be judged (a kink along the probe) gets
    its second half measured directly. The halves' measurements only guide the
    search, so they are not re-measured at smaller steps. Halving continues until a range has at
    most two entries, which are then judged one coordinate at a time by the
    full pipeline, so every wrong entry is reported with its analytic and
    numerical values as a full sweep would report it.

    One wrong entry among ``n`` costs about ``2 log2 n`` evaluations, and
    ``k`` of them about ``2 k log2(n / k)``. A bug that touches many entries
    (a wrong factor on a whole tensor) would make every range fail: when more
    than :data:`MAX_FRONTIER` ranges of one tensor fail at once, halving stops
    and :data:`DENSE_SAMPLE` random entries of the failing ranges are judged
    instead, enough for the diagnosis.

    Finally the entries found are weighed: their errors along a direction
    should account for the probe's discrepancy along it. They are weighed
    against the direction searched, and against a fresh random direction
    measured for the purpose (two evaluations per failing tensor). Errors that
    cancel along the searched direction (several in one half whose weighted
    sum is below that half's tolerance) are missed by its halving and account
    for none of its discrepancy, but show along the fresh direction; a shortfall
    there starts a new search, along the fresh direction, up to
    :data:`MAX_DIRECTIONS` rounds. If the entries found still fall short, the
    result says that more wrong entries may remain.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from gradproof._words import noun
from gradproof.checking.context import Context
from gradproof.checking.entries import (
    FAIL,
    INCONCLUSIVE,
    PASS,
    CoordinateProblem,
    Entries,
)
from gradproof.checking.probes import (
    Probe,
    ProbeFunction,
    probe_analytic,
    probe_weights,
    rounding_bar,
)
from gradproof.checking.sweep import (
    judge_coordinates,
)
from gradproof.results import ProbeReport, Verdict
from gradproof.tree import format_index

__all__ = [
    "DENSE_SAMPLE",
    "LEAF_RANGE",
    "MAX_DIRECTIONS",
    "MAX_FRONTIER",
    "DirectionalOutcome",
    "check_directional",
]

MAX_FRONTIER = 16
"""More failing ranges than this in one tensor at once mark a dense bug (Note [Localisation])."""

DENSE_SAMPLE = 32
"""Entries judged one by one from the failing ranges of a dense bug."""

LEAF_RANGE = 2
"""Ranges of at most this many entries are judged entry by entry."""

MAX_DIRECTIONS = 3
"""Rounds of localisation a failing tensor gets, each along a new random direction, while the
entries found fall short of a confirming direction (Note [Localisation])."""

_VERDICTS = {PASS: Verdict.PASS, FAIL: Verdict.FAIL, INCONCLUSIVE: Verdict.INCONCLUSIVE}


@dataclass(frozen=True)
class _Known:
    """A probe whose discrepancy is known, measured or inferred."""

    probe: Probe
    analytic: float
    numeric: float
    error_bar: float


@dataclass
class DirectionalOutcome:
    """What the directional strategy found.

    Attributes
    ----------
    indices : ndarray of int
        The entries judged one by one (candidates and dense samples).
    entries : Entries or None
        Their verdicts, over the whole flat vector (None if none was judged).
    probes : dict of int to list of ProbeReport
        The top-level probes of every tensor, by leaf index.
    localised : dict of int to bool
        Per failing tensor, whether halving reached single entries.
    notes : list of str
        What the localisation noticed.
    n_probes : int
        Probes measured in all, localisation included.
    interrupted : bool
        Whether Ctrl-C cut it short.
    """

    indices: npt.NDArray[np.intp]
    entries: Entries | None
    probes: dict[int, list[ProbeReport]]
    localised: dict[int, bool] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    n_probes: int = 0
    interrupted: bool = False


@dataclass
class _Judged:
    """Verdicts on a list of probes."""

    probes: list[Probe]
    entries: Entries

    def known(self, j: int) -> _Known:
        e = self.entries
        return _Known(
            self.probes[j], float(e.analytic[j]), float(e.numeric[j]), float(e.error_bar[j])
        )

    def code(self, j: int) -> int:
        return int(self.entries.codes[j])


def _probe_name(ctx: Context, probe: Probe) -> str:
    leaf = ctx.tree.leaves[probe.leaf]
    if probe.size == leaf.size:
        return f"{leaf.name} (direction {probe.draw})"
    first = format_index(leaf.name, ctx.tree.locate(probe.start)[1])
    last = format_index(leaf.name, ctx.tree.locate(probe.stop - 1)[1])
    return f"{first}..{last} (direction {probe.draw})"


def _judge_probes(ctx: Context, probes: list[Probe], *, resolve: bool = True) -> _Judged:
    """Measure and judge a list of probes as coordinates of one probe function."""
    problem = _probe_problem(ctx, probes)
    review = ctx.reviewer(lambda c: _probe_problem(c, probes)) if resolve else None
    return _Judged(probes, judge_coordinates(problem, resolve=resolve, review=review))


def _probe_problem(ctx: Context, probes: list[Probe]) -> CoordinateProblem:
    """Make the probes coordinates of one probe function, with the check's current error model."""
    k = len(probes)
    starts = np.array([p.start for p in probes], dtype=np.intp)
    sizes = np.array([p.size for p in probes], dtype=np.float64)
    rel = np.broadcast_to(np.asarray(ctx.relative_step(), dtype=np.float64), ctx.x0.shape)[starts]
    if ctx.abs_step is not None:
        rel = np.full(k, ctx.abs_step)
    steps = rel / np.sqrt(sizes)  # Note [Directional probes]: move as far as one coordinate
    analytic = probe_analytic(probes, ctx.analytic, ctx.x0, ctx.probe_seed)
    method = "central" if ctx.method == "complex" else ctx.method
    return CoordinateProblem(
        fun=ProbeFunction(ctx.evaluator, ctx.x0, probes, ctx.probe_seed),
        x0=np.zeros(k),
        f0=ctx.f0,
        analytic=analytic,
        sampling=[(slice(0, k), np.dtype(np.float64))],
        h=steps,
        value_noise=ctx.current_value_noise()[starts],
        rtol=ctx.rtol[starts],
        atol=ctx.atol,
        method=method,
        groups=[slice(j, j + 1) for j in range(k)],
        sampler=ctx.sample,
        describe=lambda j: _probe_name(ctx, probes[j]),
        extra_bar=rounding_bar(probes, ctx.analytic, ctx.x0, ctx.spacing, steps),
        roundoff=None if ctx.roundoff is None else ctx.roundoff[starts],
    )


def _report(ctx: Context, judged: _Judged, j: int) -> ProbeReport:
    e = judged.entries
    probe = judged.probes[j]
    leaf = ctx.tree.leaves[probe.leaf]
    return ProbeReport(
        name=_probe_name(ctx, probe),
        param=leaf.name,
        start=probe.start - leaf.offset,
        stop=probe.stop - leaf.offset,
        draw=probe.draw,
        analytic=float(e.analytic[j]),
        numeric=float(e.numeric[j]),
        tolerance=float(e.tolerance()[j]),
        verdict=_VERDICTS.get(judged.code(j), Verdict.INCONCLUSIVE),
        error_bar=float(e.error_bar[j]),
    )


def check_directional(
    ctx: Context, *, n_probes: int, localise: bool, max_evals: int | None
) -> DirectionalOutcome:
    """Probe every tensor along random directions; localise the wrong entries of failing ones.

    Parameters
    ----------
    ctx : Context
        The check's set-up.
    n_probes : int
        Random directions per tensor.
    localise : bool
        Whether to look for the wrong entries of a failing tensor (Note [Localisation]).
    max_evals : int or None
        Stop localising before the check's evaluations would exceed this.

    Returns
    -------
    DirectionalOutcome
        The probes' reports and the entries judged one by one.
    """
    leaves = [i for i, leaf in enumerate(ctx.tree.leaves) if leaf.size]
    top = [
        Probe(i, ctx.tree.leaves[i].offset, ctx.tree.leaves[i].span.stop, d)
        for i in leaves
        for d in range(n_probes)
    ]
    judged = _judge_probes(ctx, top)
    outcome = DirectionalOutcome(
        indices=np.zeros(0, dtype=np.intp), entries=None, probes={}, n_probes=len(top)
    )
    # A probe that is inconclusive (a kink along its direction) gets one fresh direction.
    retry = [p for j, p in enumerate(top) if judged.code(j) == INCONCLUSIVE]
    rounds = [judged]
    if retry and not judged.entries.interrupted:
        again = [Probe(p.leaf, p.start, p.stop, p.draw + n_probes) for p in retry]
        rounds.append(_judge_probes(ctx, again))
        outcome.n_probes += len(again)
    failing: dict[int, _Known] = {}
    for r in rounds:
        outcome.interrupted |= r.entries.interrupted
        for j, probe in enumerate(r.probes):
            outcome.probes.setdefault(probe.leaf, []).append(_report(ctx, r, j))
            if r.code(j) == FAIL and probe.leaf not in failing:
                failing[probe.leaf] = r.known(j)
    if not failing or not localise or outcome.interrupted:
        return outcome
    _search(ctx, failing, max_evals, outcome, fresh_draw=2 * n_probes)
    return outcome


def _search(
    ctx: Context,
    failing: dict[int, _Known],
    max_evals: int | None,
    outcome: DirectionalOutcome,
    *,
    fresh_draw: int,
) -> None:
    """Localise every failing tensor, confirm along a fresh direction, search again if short.

    Note [Localisation]: each round localises along one direction, then weighs the
    entries found against that direction and against a fresh one, measured for the
    purpose. Errors that cancel along the first direction do not cancel along the
    fresh one, so a shortfall there starts the next round, along the fresh direction.
    """
    found: list[npt.NDArray[np.intp]] = []
    searching = dict(failing)
    directions = dict.fromkeys(failing, 0)  # searched along, per tensor
    first_found: dict[int, int] = {}  # wrong entries found in the first round, if short
    missed: dict[int, float] = {}
    draw = fresh_draw
    for _ in range(MAX_DIRECTIONS):
        for leaf_index, known in searching.items():
            indices, localised = _localise(ctx, known, max_evals, outcome)
            found.append(indices)
            outcome.localised[leaf_index] = localised
            directions[leaf_index] += 1
            if _stopped(outcome):
                break
        outcome.indices = np.unique(np.concatenate(found))
        if not outcome.indices.size or _stopped(outcome):
            return
        outcome.entries = ctx.judge_entries(outcome.indices)
        outcome.interrupted |= outcome.entries.interrupted
        if outcome.interrupted:
            # A tensor whose candidate entries were not all judged is not localised: its
            # failing probe stands (Ctrl-C, a budget or an error stopped the judging).
            unjudged = outcome.indices[~outcome.entries.measured[outcome.indices]]
            for leaf_index, known in searching.items():
                probe = known.probe
                if np.any((unjudged >= probe.start) & (unjudged < probe.stop)):
                    outcome.localised[leaf_index] = False
            return
        searched = {leaf: k for leaf, k in searching.items() if outcome.localised.get(leaf)}
        fresh = [Probe(leaf, k.probe.start, k.probe.stop, draw + i)
                 for i, (leaf, k) in enumerate(searched.items())]  # fmt: skip
        draw += len(fresh)
        confirmations: dict[int, _Known] = {}
        if fresh and (max_evals is None or ctx.n_evals + 2 * len(fresh) <= max_evals):
            judged = _judge_probes(ctx, fresh, resolve=False)  # like the halves: a guide
            outcome.n_probes += len(fresh)
            outcome.interrupted |= judged.entries.interrupted
            if outcome.interrupted:
                return
            for j, probe in enumerate(fresh):
                outcome.probes.setdefault(probe.leaf, []).append(_report(ctx, judged, j))
                if judged.code(j) in (PASS, FAIL):
                    confirmations[probe.leaf] = judged.known(j)
        searching = {}
        for leaf_index, known in searched.items():
            weighed = [known, *([confirmations[leaf_index]] if leaf_index in confirmations else [])]
            shares = [_unexplained_share(ctx, k, outcome) for k in weighed]
            short = [share for share in shares if share is not None]
            if not short:
                missed.pop(leaf_index, None)
                continue
            missed[leaf_index] = min(short)
            first_found.setdefault(leaf_index, _wrong_in(outcome, known.probe).size)
            fresh_known = confirmations.get(leaf_index)
            if fresh_known is not None and shares[-1] is not None:
                searching[leaf_index] = fresh_known  # the errors it shows are not cancelled
        if not searching:
            break
    for leaf_index, before in first_found.items():
        name = ctx.tree.leaves[leaf_index].name
        count = _wrong_in(outcome, failing[leaf_index].probe).size
        if leaf_index in missed:
            outcome.localised[leaf_index] = False
            outcome.notes.append(
                f"{name}: the {_entries(count)} found account for {missed[leaf_index]:.0%} of "
                f"its probes' discrepancy, after a search along {directions[leaf_index]} random "
                "direction(s); other wrong entries may remain. Use mode='full' to sweep every "
                "entry."
            )
        elif count > before:  # else the shortfall was the confirming probe's own error
            outcome.notes.append(
                f"{name}: the {_entries(before)} found along its first random direction did "
                "not account for a second one (their errors cancel along the first); the "
                f"search along {directions[leaf_index] - 1} more found {count - before} more."
            )


def _entries(count: int) -> str:
    return f"{count} wrong {noun(count, 'entry')}"


def _stopped(outcome: DirectionalOutcome) -> bool:
    return outcome.interrupted


def _localise(
    ctx: Context, top: _Known, max_evals: int | None, outcome: DirectionalOutcome
) -> tuple[npt.NDArray[np.intp], bool]:
    """Halve a failing probe's range down to its wrong entries (Note [Localisation])."""
    leaf = ctx.tree.leaves[top.probe.leaf]
    frontier = [top]
    found: list[npt.NDArray[np.intp]] = []
    uncertain = 0
    while frontier:
        small = [k for k in frontier if k.probe.size <= LEAF_RANGE]
        found.extend(np.arange(k.probe.start, k.probe.stop) for k in small)
        frontier = [k for k in frontier if k.probe.size > LEAF_RANGE]
        if not frontier:
            break
        if len(frontier) > MAX_FRONTIER:
            found.append(_dense_sample(ctx, frontier))
            outcome.notes.append(
                f"{leaf.name}: more than {MAX_FRONTIER} ranges of its entries fail at once, so "
                f"the error touches many entries; {DENSE_SAMPLE} random entries of those ranges "
                "were judged one by one instead of halving further."
            )
            return np.concatenate(found), False
        if max_evals is not None and ctx.n_evals + 2 * len(frontier) > max_evals:
            outcome.notes.append(
                f"{leaf.name}: localisation stopped at the evaluation budget (max_evals="
                f"{max_evals}) with {len(frontier)} failing range(s) of up to "
                f"{max(k.probe.size for k in frontier)} entries left; raise max_evals to "
                "find the wrong entries."
            )
            return np.concatenate(found) if found else np.zeros(0, dtype=np.intp), False
        halves = [k.probe.halves() for k in frontier]
        first = _judge_probes(ctx, [h[0] for h in halves], resolve=False)
        outcome.n_probes += len(halves)
        if first.entries.interrupted:
            outcome.interrupted = True
            break
        next_frontier: list[_Known] = []
        direct: list[Probe] = []
        for j, (parent, (_, second)) in enumerate(zip(frontier, halves, strict=True)):
            code = first.code(j)
            if code == FAIL:
                next_frontier.append(first.known(j))
            if code not in (PASS, FAIL):
                uncertain += code == INCONCLUSIVE
                direct.append(second)
                continue
            inferred, verdict = _infer_second(ctx, parent, first.known(j), second)
            if verdict == FAIL:
                next_frontier.append(inferred)
            elif verdict != PASS:
                direct.append(second)
        if direct:
            measured = _judge_probes(ctx, direct, resolve=False)
            outcome.n_probes += len(direct)
            outcome.interrupted |= measured.entries.interrupted
            for j in range(len(direct)):
                if measured.code(j) == FAIL:
                    next_frontier.append(measured.known(j))
                uncertain += measured.code(j) == INCONCLUSIVE
        frontier = next_frontier
    if uncertain:
        outcome.notes.append(
            f"{leaf.name}: {uncertain} range(s) could not be judged along the probe (a kink "
            "along its direction) and were not searched."
        )
    # A search cut short (Ctrl-C, a budget, an error) did not reach single entries: the
    # failing probe stands as the tensor's verdict.
    found_all = np.concatenate(found) if found else np.zeros(0, dtype=np.intp)
    return found_all, not outcome.interrupted


def _infer_second(ctx: Context, parent: _Known, first: _Known, second: Probe) -> tuple[_Known, int]:
    """Infer the second half's discrepancy from its parent's and the first half's."""
    analytic = parent.analytic - first.analytic
    discrepancy = (parent.analytic - parent.numeric) - (first.analytic - first.numeric)
    numeric = analytic - discrepancy
    uncertainty = parent.error_bar + first.error_bar
    rtol = float(ctx.rtol[second.start])
    allowance = ctx.atol + rtol * max(abs(analytic), abs(numeric))
    known = _Known(second, analytic, numeric, uncertainty)
    if not (np.isfinite(discrepancy) and np.isfinite(allowance + uncertainty)):
        return known, INCONCLUSIVE  # an overflowing half is measured, never inferred
    return known, FAIL if abs(discrepancy) > allowance + uncertainty else PASS


def _dense_sample(ctx: Context, frontier: list[_Known]) -> npt.NDArray[np.intp]:
    """Draw entries uniformly from the union of the failing ranges."""
    rng = np.random.default_rng([ctx.probe_seed, frontier[0].probe.leaf, 1])
    union = np.concatenate([np.arange(k.probe.start, k.probe.stop) for k in frontier])
    size = min(DENSE_SAMPLE, union.size)
    return np.sort(rng.choice(union, size=size, replace=False))


def _wrong_in(outcome: DirectionalOutcome, probe: Probe) -> npt.NDArray[np.intp]:
    """Return the entries judged wrong so far within the probe's range."""
    assert outcome.entries is not None
    indices = outcome.indices
    inside = indices[(indices >= probe.start) & (indices < probe.stop)]
    wrong: npt.NDArray[np.intp] = inside[outcome.entries.codes[inside] == FAIL]
    return wrong


def _unexplained_share(ctx: Context, top: _Known, outcome: DirectionalOutcome) -> float | None:
    """Weigh the wrong entries found against the probe (Note [Localisation]).

    Returns None when their errors along the probe's direction account for its
    discrepancy (within its tolerance and theirs), else the share they explain.
    """
    entries = outcome.entries
    assert entries is not None
    probe = top.probe
    wrong = _wrong_in(outcome, probe)
    weights = probe_weights(probe, ctx.x0, ctx.probe_seed)[wrong - probe.start]
    with np.errstate(over="ignore", invalid="ignore"):  # entries near the float64 limit
        explained = float(((entries.analytic[wrong] - entries.numeric[wrong]) * weights).sum())
        slack = float((np.abs(weights) * entries.tolerance()[wrong]).sum())
    discrepancy = top.analytic - top.numeric
    allowance = ctx.atol + float(ctx.rtol[probe.start]) * abs(top.analytic) + top.error_bar
    # Nothing found: the probe failed at a kink along it (the entries are inconclusive), and
    # the verdict logic handles that; there is nothing to weigh.
    if not wrong.size or abs(discrepancy - explained) <= allowance + slack:
        return None
    return abs(explained / discrepancy) if discrepancy else 0.0
