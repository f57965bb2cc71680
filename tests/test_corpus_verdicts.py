"""gradproof's verdict on its whole corpus: every bug found and pinned, no false alarm."""

from __future__ import annotations

import pytest

from gradproof import Verdict, check, corpus

CASES = corpus.cases()
BUGS = corpus.bugs()


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_correct_code_is_never_called_wrong(case):
    result = check(case.loss, case.grad, case.params, seed=case.seed)
    assert result.verdict is not Verdict.FAIL, str(result)
    if "kink" in case.tags or not case.hard_point:
        # Ordinary models pass outright; at kinks an entry may be inconclusive, never wrong.
        expected = {Verdict.PASS, Verdict.INCONCLUSIVE} if "kink" in case.tags else {Verdict.PASS}
        assert result.verdict in expected, str(result)


@pytest.mark.parametrize("case_bug", BUGS, ids=[f"{c.name}/{b.name}" for c, b in BUGS])
def test_every_planted_bug_is_pinned_to_exactly_its_parameters(case_bug):
    case, bug = case_bug
    result = check(case.loss, bug.grad, case.params, seed=case.seed)
    assert set(result.suspects) == set(bug.wrong), str(result)


@pytest.mark.parametrize(
    "case_bug",
    [(c, b) for c, b in BUGS if b.kind in ("scale", "sign", "zero", "swapped")],
    ids=lambda cb: f"{cb[0].name}/{cb[1].name}",
)
def test_diagnosis_names_factor_sign_zero_and_swap_bugs(case_bug):
    case, bug = case_bug
    result = check(case.loss, bug.grad, case.params, seed=case.seed)
    kinds = {p.diagnosis.kind for p in result.params if p.diagnosis is not None}
    assert kinds == {bug.kind}, str(result)
