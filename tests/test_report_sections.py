"""Subjects and sections: an adapter's input checked through several reports counts once.

The adapters check one input ``x`` through several reports (a Jacobian row
each, a forward-mode check): the headline must count inputs, not reports, and
the tables must show each kind of report under its own heading. These tests
build such results from real checks, relabelled as an adapter does.
"""

from __future__ import annotations

import dataclasses
import json
import re

import numpy as np
import pytest

import gradproof
from gradproof.report.json import result_to_json, schema_path
from gradproof.results import CheckResult

jsonschema = pytest.importorskip("jsonschema")


def _loss(p):
    return float(np.sum(p["x"] ** 2) + np.sum(np.sin(p["y"])))


def _grad(p, *, x_factor=1.0, y_factor=1.0):
    return {"x": 2 * p["x"] * x_factor, "y": np.cos(p["y"]) * y_factor}


PARAMS = {"x": np.array([1.0, -2.0, 0.5]), "y": np.array([0.3, 1.1])}


def _as_adapter(result: CheckResult, forward: CheckResult) -> CheckResult:
    """Relabel two checks as an adapter would: reverse mode and forward mode of inputs x and y."""
    reverse = [
        dataclasses.replace(p, name=f"vjp.{p.name}", subject=p.name, section="reverse mode")
        for p in result.params
    ]
    fwd = [
        dataclasses.replace(p, name=f"jvp.{p.name}", subject=p.name, section="forward mode")
        for p in forward.params
    ]
    return dataclasses.replace(result, params=(*reverse, *fwd), subject_noun="input")


def test_a_plain_check_is_unchanged_by_subjects():
    result = gradproof.check(_loss, lambda p: _grad(p, y_factor=2.0), PARAMS)
    assert result.subjects == ("x", "y")
    assert result.sections == ("",)
    assert result.suspects == ("y",)
    text = str(result)
    assert text.splitlines()[0] == "gradproof: WRONG: 1 of 2 parameters has a wrong gradient: y"
    assert text.splitlines()[2].split()[0] == "parameter"  # the table's first header
    assert result["y"].subject_name == "y"
    with pytest.raises(KeyError, match="no parameter named 'z'; the parameters are: x, y"):
        result["z"]


def test_an_input_wrong_in_forward_mode_only_is_counted_once_and_placed():
    reverse = gradproof.check(_loss, _grad, PARAMS)  # both right
    forward = gradproof.check(_loss, lambda p: _grad(p, y_factor=2.0), PARAMS)  # y wrong
    result = _as_adapter(reverse, forward)
    assert result.subjects == ("x", "y")
    assert result.suspects == ("y",)
    assert result.sections == ("reverse mode", "forward mode")
    lines = str(result).splitlines()
    assert lines[0] == "gradproof: WRONG: 1 of 2 inputs has a wrong gradient: y (forward mode)"
    assert "Reverse mode" in lines and "Forward mode" in lines
    assert lines.index("Reverse mode") < lines.index("Forward mode")
    assert lines[lines.index("Reverse mode") + 1].split()[0] == "input"
    assert any(line.startswith("  jvp.y (forward mode): analytic = 2 × numeric") for line in lines)
    # Asking for an input by name: it has two reports, so the error names both.
    asked = "'y' is checked by 2 reports; ask for one by its name: vjp.y, jvp.y"
    with pytest.raises(KeyError, match=re.escape(asked)):
        result["y"]
    assert result["jvp.y"].verdict is gradproof.Verdict.FAIL


def test_an_input_wrong_in_both_modes_names_both():
    wrong_x = gradproof.check(_loss, lambda p: _grad(p, x_factor=-1.0), PARAMS)
    result = _as_adapter(wrong_x, wrong_x)
    assert result.suspects == ("x",)
    assert str(result).splitlines()[0] == (
        "gradproof: WRONG: 1 of 2 inputs has a wrong gradient: x (reverse mode and forward mode)"
    )


def test_passing_and_inconclusive_headlines_count_subjects():
    right = gradproof.check(_loss, _grad, PARAMS)
    result = _as_adapter(right, right)
    assert result.passed
    assert str(result).splitlines()[0] == "gradproof: CORRECT: all 2 inputs (10 entries) pass"
    at_zero = {"x": np.zeros(3)}
    kinked = gradproof.check(
        lambda p: float(np.sum(np.abs(p["x"]))), lambda p: {"x": np.sign(p["x"])}, at_zero
    )
    assert kinked.verdict is gradproof.Verdict.INCONCLUSIVE
    relabelled = _as_adapter(kinked, kinked)
    assert relabelled.inconclusive == ("x",)
    assert str(relabelled).splitlines()[0].endswith("could not be judged: x")


def test_json_carries_subjects_and_sections_and_validates():
    reverse = gradproof.check(_loss, _grad, PARAMS)
    forward = gradproof.check(_loss, lambda p: _grad(p, y_factor=2.0), PARAMS)
    document = result_to_json(_as_adapter(reverse, forward))
    schema = json.loads(schema_path().read_text(encoding="utf-8"))
    jsonschema.validators.validator_for(schema)(schema).validate(document)
    assert document["subject_noun"] == "input"
    assert document["suspects"] == ["y"]
    assert [(p["name"], p["subject"], p["section"]) for p in document["params"]] == [
        ("vjp.x", "x", "reverse mode"),
        ("vjp.y", "y", "reverse mode"),
        ("jvp.x", "x", "forward mode"),
        ("jvp.y", "y", "forward mode"),
    ]
    plain = result_to_json(reverse)
    assert [p["subject"] for p in plain["params"]] == ["x", "y"]
    assert {p["section"] for p in plain["params"]} == {""}


def test_rich_and_html_show_the_section_headings():
    pytest.importorskip("rich")
    from rich.console import Console

    from gradproof.report.html import render_html
    from gradproof.report.rich import render_renderable

    reverse = gradproof.check(_loss, _grad, PARAMS)
    forward = gradproof.check(_loss, lambda p: _grad(p, y_factor=2.0), PARAMS)
    result = _as_adapter(reverse, forward)
    console = Console(width=120, record=True, color_system=None)
    console.print(render_renderable(result))
    shown = console.export_text()
    assert "2 inputs, 10 entries" in shown
    assert "Reverse mode" in shown and "Forward mode" in shown
    assert "jvp.y (forward mode): analytic = 2 × numeric" in shown
    page = render_html(result, figures=False)
    assert "<h2>Inputs</h2><h3>Reverse mode</h3>" in page
    assert "<h3>Forward mode</h3>" in page
    assert "jvp.y (forward mode): " in page


def test_alike_wrong_reports_of_one_subject_get_one_diagnosis():
    # Three Jacobian rows of one input, each twice too large: one block, not three.
    rows = [np.array([1.0, 2.0]), np.array([-1.0, 0.5]), np.array([3.0, 1.0])]
    params = {f"row{i}": row for i, row in enumerate(rows)}

    def loss(p):
        return float(sum(np.sum(v**2) for v in p.values()))

    def as_rows(checked):
        relabelled = tuple(dataclasses.replace(p, subject="x") for p in checked.params)
        return dataclasses.replace(checked, params=relabelled, subject_noun="input")

    result = as_rows(gradproof.check(loss, lambda p: {k: 4 * v for k, v in p.items()}, params))
    diagnosis = str(result).split("Diagnosis\n")[1].split("\n\n")[0].splitlines()
    assert diagnosis[0] == (
        "  x (3 reports: row0 … row2): analytic = 2 × numeric on every entry (6 wrong entries "
        "in all)"
    )
    assert diagnosis[1].startswith("    The gradient of `x` has the right pattern")
    assert not any(line.startswith("  row") for line in diagnosis)
    assert diagnosis[-1] == "    ... 3 more wrong entries"  # the 3 worst of the 6 are listed
    # A row wrong another way keeps its own block.
    mixed = as_rows(
        gradproof.check(
            loss,
            lambda p: {k: (-2 if k == "row2" else 4) * v for k, v in p.items()},
            params,
        )
    )
    heads = [line for line in str(mixed).splitlines() if line.startswith("  ") and "): " in line]
    assert heads[0].startswith("  x (2 reports: row0 … row1): analytic = 2 × numeric")
    assert any(line.startswith("  row2: ") for line in str(mixed).splitlines())
