"""The plain-text report: headline, per-parameter table, diagnosis, footer."""

from __future__ import annotations

import numpy as np

from gradproof import check
from gradproof.report.text import ENTRIES_SHOWN, render_result


def _quadratic(factor_b: float = 1.0):
    params = {"a": np.array([1.0, -2.0]), "b": np.linspace(0.5, 3.0, 6).reshape(2, 3)}

    def loss(p):
        return float(np.sum(p["a"] ** 2) + np.sum(p["b"] ** 2))

    def grad(p):
        return {"a": 2 * p["a"], "b": 2 * p["b"] * factor_b}

    return loss, grad, params


def test_passing_report_has_a_row_per_parameter_and_a_footer():
    result = check(*_quadratic())
    text = render_result(result)
    lines = text.splitlines()
    assert lines[0] == "gradproof: CORRECT: all 2 parameters (8 entries) pass"
    header = next(line for line in lines if line.strip().startswith("parameter"))
    assert header.split() == [
        "parameter", "shape", "verdict", "rel.", "diff", "err/tol", "worst", "entry",
        "analytic", "numeric",
    ]  # fmt: skip
    rows = {line.split()[0]: line.split() for line in lines if line.startswith("  a ")
            or line.startswith("  b ")}  # fmt: skip
    assert rows["a"][1:3] == ["(2,)", "ok"]
    assert rows["b"][1:4] == ["(2,", "3)", "ok"]
    assert "Diagnosis" not in text
    assert f"8 of 8 entries checked with {result.n_evals} loss evaluations" in text
    assert "margin" in text


def test_failing_report_diagnoses_and_lists_the_worst_entries():
    result = check(*_quadratic(factor_b=3.0))
    text = render_result(result)
    assert text.splitlines()[0] == ("gradproof: WRONG: 1 of 2 parameters has a wrong gradient: b")
    assert "  b: analytic = 3 × numeric on every entry (6 of 6 entries wrong)" in text
    assert "is 3 times too large" in text
    # The worst entry of `b` is the largest one, b[1, 2] = 3.0: analytic 18 against numeric 6.
    entry_lines = [line.split() for line in text.splitlines() if line.strip().startswith("b[")]
    assert len(entry_lines) == ENTRIES_SHOWN
    assert entry_lines[0][:4] == ["b[1,", "2]", "18", "6"]
    assert f"... {6 - ENTRIES_SHOWN} more wrong entries" in text


def test_verbose_lists_every_recorded_wrong_entry():
    result = check(*_quadratic(factor_b=3.0))
    text = render_result(result, verbose=True)
    assert sum(line.strip().startswith("b[") for line in text.splitlines()) == 6
    assert "more wrong entries" not in text


def test_str_of_a_result_is_the_text_report():
    result = check(*_quadratic(factor_b=3.0))
    assert str(result) == render_result(result)
