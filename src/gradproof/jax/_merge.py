"""One result from the reverse-mode checks (one per cotangent) and the forward-mode check."""

from __future__ import annotations

import dataclasses
import time

from gradproof.results import CheckResult, Verdict


def _merge(
    reverse: list[CheckResult], forward: CheckResult | None, notes: list[str], started: float
) -> CheckResult:
    """One result: the reverse check shown (the worst cotangent), forward reports appended."""
    rank = {Verdict.FAIL: 0, Verdict.INCONCLUSIVE: 1, Verdict.PASS: 2}
    checks = [*reverse, *([forward] if forward is not None else [])]
    if reverse:
        shown_at = min(range(len(reverse)), key=lambda i: (rank[reverse[i].verdict], i))
        shown = reverse[shown_at]
        if len(reverse) > 1:
            notes.append(
                f"Reverse mode was checked along {len(reverse)} random cotangents; the report "
                f"shows cotangent {shown_at + 1} ({shown.verdict.value})."
            )
    else:
        assert forward is not None
        shown = forward
    all_notes = [*notes, *shown.notes]
    if forward is not None and forward is not shown:
        all_notes += [f"Forward mode: {note}" for note in forward.notes]
    return dataclasses.replace(
        shown,
        params=shown.params
        + (forward.params if forward is not None and forward is not shown else ()),
        notes=tuple(dict.fromkeys(all_notes)),
        n_evals=sum(c.n_evals for c in checks),
        n_refined=sum(c.n_refined for c in checks),
        n_probes=sum(c.n_probes for c in checks),
        interrupted=any(c.interrupted for c in checks),
        seconds=time.perf_counter() - started,
    )
