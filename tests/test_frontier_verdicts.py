"""Verdicts at the frontier (issue 14): several kinks, jumps, tiny derivatives, domain edges
and small systematic errors. Correct code passes, or is inconclusive where no derivative
exists; planted bugs at the same hard points are wrong and pinned to their parameters."""

from __future__ import annotations

import numpy as np
import pytest

from gradproof import Verdict, check
from gradproof.corpus import frontier

CASES = frontier.cases()
BUGS = frontier.bugs()


def _reasons(result):
    return {e.reason for p in result.params for e in p.inconclusive_entries}


def _family(name):
    return frontier.family_of(name)


@pytest.mark.parametrize("mode", ["full", "sampled", "directional"])
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_correct_code_at_the_frontier_is_never_wrong(case, mode):
    result = check(case.loss, case.grad, case.params, mode=mode)
    assert result.verdict is not Verdict.FAIL, str(result)
    family = _family(case.name)
    if family in ("tiny-derivatives", "systematic") or case.name == "power-at-edge":
        # Smooth code: no entry may be called a kink, or left without a verdict.
        assert result.verdict is Verdict.PASS, str(result)


@pytest.mark.parametrize(
    "case", [c for c in CASES if _family(c.name) == "several-kinks"], ids=lambda c: c.name
)
def test_several_kinks_are_judged_by_the_limits_of_the_gradient(case):
    result = check(case.loss, case.grad, case.params, mode="full")
    assert result.verdict is Verdict.INCONCLUSIVE, str(result)
    several = [
        e for p in result.params for e in p.inconclusive_entries if e.reason == "several_kinks"
    ]
    assert several, str(result)
    for entry in several:
        # The rule fired where the single-kink rule would call the value wrong.
        assert not min(entry.left, entry.right) <= entry.analytic <= max(entry.left, entry.right)
    assert "several kinks meet here" in str(result)


@pytest.mark.parametrize(
    "case", [c for c in CASES if _family(c.name) == "jumps"], ids=lambda c: c.name
)
def test_a_jump_is_discontinuous_not_a_kink(case):
    result = check(case.loss, case.grad, case.params, mode="full")
    assert result.verdict is Verdict.INCONCLUSIVE, str(result)
    assert _reasons(result) == {"discontinuous"}, str(result)
    entries = [e for p in result.params for e in p.inconclusive_entries]
    assert not any(e.subgradient for e in entries)
    assert "no derivative exists" in str(result)
    assert "valid subgradient" not in str(result)


@pytest.mark.parametrize(
    "case", [c for c in CASES if _family(c.name) == "tiny-derivatives"], ids=lambda c: c.name
)
def test_float32_copies_of_smooth_frontier_code_are_not_called_kinks(case):
    params = {k: v.astype(np.float32) for k, v in case.params.items()}
    result = check(case.loss, case.grad, params, mode="full", precision="native")
    assert result.verdict is Verdict.PASS, str(result)


@pytest.mark.parametrize("case_bug", BUGS, ids=[f"{c.name}/{b.name}" for c, b in BUGS])
def test_planted_bugs_at_the_frontier_are_pinned(case_bug):
    case, bug = case_bug
    result = check(case.loss, bug.grad, case.params, mode="full")
    assert set(result.suspects) == set(bug.wrong), str(result)


@pytest.mark.parametrize(
    "case_bug",
    [(c, b) for c, b in BUGS if _family(c.name) == "systematic"],
    ids=lambda cb: f"{cb[0].name}/{cb[1].name}",
)
def test_a_systematic_error_of_1e5_is_reported_with_its_factor_and_error_bar(case_bug):
    case, bug = case_bug
    result = check(case.loss, bug.grad, case.params, mode="full")
    (name,) = bug.wrong
    diagnosis = result[name].diagnosis
    assert diagnosis is not None and diagnosis.kind == "scale", str(result)
    # The bugs are off by exactly m / (m - 1) = 1 + 1e-5, or by 1.00001.
    assert diagnosis.factor == pytest.approx(1 + 1e-5, rel=1e-8)
    assert "± " in diagnosis.summary and "far outside their error bars" in diagnosis.summary
    # Every entry is within the default rtol of 1e-5: the old verdict missed it.
    report = result[name]
    assert np.all(np.abs(report.analytic - report.numeric) <= 1.01e-5 * np.abs(report.numeric))
