"""The plain-text report: headline, per-parameter table, diagnosis, footer."""

from __future__ import annotations

import io
import re
from html import unescape

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

from gradproof import check
from gradproof._words import counted
from gradproof.report import html
from gradproof.report.rich import print_result
from gradproof.report.text import ENTRIES_SHOWN, refined_phrase, render_result, wrong_count
from gradproof.results import (
    CheckResult,
    Diagnosis,
    EntryReport,
    InconclusiveEntry,
    ParamReport,
    ProbeReport,
    StepRule,
    Verdict,
)


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
    assert "  b: analytic = 3 × numeric on every entry (all 6 entries wrong)" in text
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


# -- counts: singular and plural agree with the number, and nothing is said twice ---------------
_WORDS = ("entry", "parameter", "probe", "loss evaluation", "measured entry", "step")
_PLURALS = {"entry": "entries", "measured entry": "measured entries"}
_FIXED_WORDS = (
    "kink: no step avoids it; the analytic value is a valid subgradient",
    "no safe step: noise or a kink closer than any usable step",
)


def _misagreements(text: str) -> list[str]:
    """Every count followed by a noun that disagrees with it: ``1 entries``, ``2 entry``."""
    found = []
    for word in _WORDS:
        plural = _PLURALS.get(word, word + "s")
        found += re.findall(rf"(?<![\w.\[-])1 {re.escape(plural)}\b", text)
        found += re.findall(rf"(?<![\w.\[,-])(?:0|[2-9]|\d\d+) {re.escape(word)}\b(?!-)", text)
    return found


def _entry(name: str, i: int) -> EntryReport:
    return EntryReport(name=f"{name}[{i}]", index=(i,), analytic=2.0, numeric=1.0, tolerance=1e-5)


@st.composite
def _param_reports(draw: st.DrawFn, name: str) -> ParamReport:
    n_entries = draw(st.integers(1, 30))
    strategy = draw(st.sampled_from(["full", "sampled", "directional"]))
    n_checked = n_entries if strategy == "full" else draw(st.integers(0, n_entries))
    n_failed = draw(st.integers(0, n_checked))
    n_inconclusive = draw(st.integers(0, n_checked - n_failed))
    probes: tuple[ProbeReport, ...] = ()
    if strategy == "directional":
        verdicts = draw(st.lists(st.sampled_from([Verdict.PASS, Verdict.FAIL]), max_size=3))
        probes = tuple(
            ProbeReport(name=f"{name} (direction {k})", param=name, start=0, stop=n_entries,
                        draw=k, analytic=1.0, numeric=1.0, tolerance=1.0, verdict=v)
            for k, v in enumerate(verdicts)
        )  # fmt: skip
    failing = n_failed or any(p.verdict is Verdict.FAIL for p in probes)
    kind = draw(st.sampled_from(["none", "scale", "non_finite", "few"]))
    diagnosis = None
    if failing and kind == "scale":
        diagnosis = Diagnosis(kind="scale", summary="analytic = 2 × numeric", hint="h", factor=2.0)
    elif n_failed and kind == "non_finite":
        # As a check gives it: every NaN or infinite entry (next to a finite estimate) is one
        # of the wrong ones, so at most n_failed of them; a probe alone never gives this kind.
        bad = draw(st.integers(1, n_failed))
        summary = f"analytic gradient is NaN or infinite at {bad} of {counted(n_checked, 'entry')}"
        diagnosis = Diagnosis(kind="non_finite", summary=summary, hint="h")
    elif failing and kind == "few":
        entries = tuple((i,) for i in range(max(n_failed, 1)))
        diagnosis = Diagnosis(kind="few_entries", summary="only these", hint="h", entries=entries)
    verdict = Verdict.FAIL if failing else Verdict.INCONCLUSIVE if n_inconclusive else Verdict.PASS
    return ParamReport(
        name=name, shape=(n_entries,), dtype="float64", verdict=verdict,
        relative_difference=0.1, max_abs_error=1.0, error_ratio=2.0 if failing else 0.5,
        worst=_entry(name, 0) if n_checked else None,
        failures=tuple(_entry(name, i) for i in range(min(n_failed, 20))),
        inconclusive_entries=tuple(
            InconclusiveEntry(name=f"{name}[{i}]", index=(i,), analytic=1.0, left=0.0, right=2.0,
                              reason="kink", subgradient=True)
            for i in range(min(n_inconclusive, 20))
        ),
        n_entries=n_entries, n_checked=n_checked, n_failed=n_failed,
        n_inconclusive=n_inconclusive, diagnosis=diagnosis,
        analytic=np.zeros(n_entries), numeric=np.zeros(n_entries), tolerance=np.zeros(n_entries),
        strategy=strategy, probes=probes,
    )  # fmt: skip


@st.composite
def _results(draw: st.DrawFn) -> CheckResult:
    names = draw(st.lists(st.sampled_from("abcdefgh"), min_size=1, max_size=4, unique=True))
    params = tuple(draw(_param_reports(name)) for name in names)
    modes = {p.strategy for p in params}
    mode = "directional" if "directional" in modes else "sampled" if "sampled" in modes else "full"
    return CheckResult(
        params=params, relative_difference=0.1, loss_value=1.0, method="central",
        step_rules=(StepRule("relative", 1e-5),), rtol=1e-5, atol=0.0,
        n_evals=draw(st.integers(0, 3)), n_refined=draw(st.integers(0, 3)), seconds=0.01,
        interrupted=draw(st.booleans()), mode=mode, n_probes=draw(st.integers(0, 3)),
    )  # fmt: skip


def _rich_text(result: CheckResult, verbose: bool) -> str:
    out = io.StringIO()
    print_result(
        result, Console(file=out, width=400, color_system=None, highlight=False), verbose=verbose
    )
    return out.getvalue()


def _html_text(result: CheckResult) -> str:
    sections = html._diagnosis_section(result) + html._inconclusive_section(result)
    return unescape(re.sub(r"<[^>]+>", " ", sections + html._how_section(result)))


@given(_results(), st.booleans())
@settings(max_examples=150, deadline=None)
def test_every_count_agrees_with_its_noun_in_every_renderer(result, verbose):
    for text in (
        render_result(result, verbose=verbose),
        _rich_text(result, verbose),
        _html_text(result),
    ):
        assert _misagreements(text) == [], text
        assert "1 of 1 entries" not in text and "all 1 " not in text


@given(_results())
@settings(max_examples=150, deadline=None)
def test_each_wrong_parameter_says_its_counts_once_and_truly(result):
    text = render_result(result)
    block = text.split("\nDiagnosis\n")[1].split("\n\n")[0] if result.suspects else ""
    diagnosis_lines = {
        line.split(":")[0].strip(): line
        for line in block.splitlines()
        if line.startswith("  ") and not line.startswith("    ")
    }
    assert sorted(diagnosis_lines) == sorted(result.suspects)
    for report in result.params:
        if report.verdict is not Verdict.FAIL:
            continue
        line = diagnosis_lines[report.name]
        summary = report.diagnosis.summary if report.diagnosis else "wrong"
        count = wrong_count(report)
        assert line == f"  {report.name}: {summary}" + (f" ({count})" if count else "")
        if report.n_failed:
            # How many are wrong is said exactly once, by the count or by the diagnosis.
            pattern = (
                rf"(?<![\d.]){report.n_failed}(?: of \d+ (?:measured )?entr(?:y|ies))? wrong\b"
            )
            said = len(re.findall(pattern, line))
            said += len(re.findall(rf"\ball {report.n_failed} entries wrong\b", line))
            said += "its only entry wrong" in line
            if report.diagnosis and report.diagnosis.kind == "non_finite":
                said += f"infinite at {report.n_failed} of" in line and not count
            assert said == 1, line
        assert line.count("one by one") <= 1, line
    first = text.splitlines()[0]
    n_wrong, n = len(result.suspects), len(result.params)
    if n_wrong > 1:
        assert first.startswith(f"gradproof: WRONG: {n_wrong} of {n} parameters have wrong ")
    elif n_wrong == 1:
        assert first.endswith(": " + result.suspects[0] if n > 1 else " has a wrong gradient")


def test_counts_of_one_are_singular():
    one = check(lambda w: float(np.sum(w**2)), lambda w: 2 * w, np.array([1.5]))
    assert render_result(one).splitlines()[0] == "gradproof: CORRECT: params (1 entry) passes"
    wrong = check(lambda w: float(np.sum(w**2)), lambda w: 4 * w, np.array([1.5]))
    text = render_result(wrong)
    assert text.splitlines()[0] == "gradproof: WRONG: params has a wrong gradient"
    assert "params: its one entry is wrong: analytic 6, numeric 3\n" in text
    assert "1 of 1 entry checked" in text
    flipped = render_result(check(lambda w: float(np.sum(w**2)), lambda w: -2 * w, np.array([1.5])))
    assert "(its only entry wrong)" in flipped  # a sign flip says which, then how many
    assert refined_phrase(1) == " (1 entry re-measured at smaller steps)"
    assert _misagreements(text) == []


def test_a_non_finite_diagnosis_does_not_repeat_its_count():
    w = np.linspace(0.5, 2.0, 20)

    def grad(p):
        g = 2 * p
        g[3] = np.nan
        return g

    text = render_result(check(lambda p: float(np.sum(p**2)), grad, w))
    assert "  params: analytic gradient is NaN or infinite at 1 of 20 entries\n" in text
    assert "1 of 20 entries wrong" not in text


def test_a_directional_count_says_how_many_were_measured_once():
    w = np.linspace(0.5, 2.0, 32)
    result = check(lambda p: float(np.sum(p**2)), lambda p: 4 * p, w, mode="directional", seed=0)
    text = render_result(result)
    assert "(32 wrong; every entry measured one by one after its probes failed)" in text
    assert "out of 32" not in text


def test_a_one_entry_diagnosis_is_not_followed_by_a_count_that_repeats_it():
    result = check(
        lambda p: float(p["w"] @ p["w"] + 3 * p["b"][0]),
        lambda p: {"w": 2 * p["w"], "b": np.array([4.5])},
        {"w": np.ones(3), "b": np.zeros(1)},
    )
    line = next(line for line in str(result).splitlines() if line.startswith("  b: "))
    assert line == "  b: its one entry is wrong: analytic 4.5, numeric 3"
