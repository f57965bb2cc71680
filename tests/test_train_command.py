"""`gradproof train`: the fraud model trained with the gradient guard on."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from gradproof.cli.app import app
from gradproof.cli.train import run_training
from gradproof.errors import InputError
from gradproof.models import FraudNetwork, make_payments, write_csv
from gradproof.report.json import schema_path

runner = CliRunner()


def test_default_run_trains_checks_and_beats_the_baseline(tmp_path):
    result = runner.invoke(app, ["train", "--output", str(tmp_path)], terminal_width=200)
    assert result.exit_code == 0, result.output
    out = result.output
    # ~1000 parameters are checked in random directions, and the line says so.
    assert "gradient check: step 1: passed (directional, " in out
    assert "Gradient guard: " in out and "all passed" in out
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    network, baseline = metrics["network"], metrics["logistic_regression"]
    assert network["pr_auc"] > baseline["pr_auc"]
    assert network["roc_auc"] > baseline["roc_auc"]
    assert [record["step"] for record in metrics["guard"]][:2] == [1, 250]
    assert all(record["verdict"] == "pass" for record in metrics["guard"])
    assert (tmp_path / "learning_curve.png").stat().st_size > 10_000
    # The README quotes this run's test metrics: they must be what it prints.
    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    quoted = [line for line in readme.splitlines() if line.startswith("  network   ")]
    quoted += [line for line in readme.splitlines() if line.startswith("  logistic regression")]
    assert len(quoted) == 2
    for line in quoted:
        assert line in out.splitlines()


def test_the_saved_model_reproduces_its_test_metrics(tmp_path):
    lines: list[str] = []
    run = run_training(
        n_transactions=4_000, epochs=3, guard_every=20, output=tmp_path, write=lines.append
    )
    assert run.exit_code == 0 and run.network is not None
    saved = np.load(tmp_path / "model.npz")
    sizes = tuple(int(s) for s in saved["sizes"])
    params = {name: saved[name] for name in saved.files if name[0] in "Wb"}
    net = FraudNetwork(sizes=sizes)
    from gradproof.models import split

    _, _, test = split(make_payments(4_000, seed=0), seed=0)
    X = (test.X - saved["mean"]) / saved["scale"]
    predicted = net.predict_proba(params, X) >= float(saved["threshold"])
    true_positive = int(np.sum(predicted & (test.y == 1)))
    assert true_positive / max(1, int(predicted.sum())) == pytest.approx(run.network.precision)


def test_a_planted_bug_stops_training_at_the_first_check_with_exit_code_1(tmp_path):
    result = runner.invoke(
        app, ["train", "--plant-bug", "--output", str(tmp_path)], terminal_width=200
    )
    assert result.exit_code == 1, result.output
    out = result.output
    assert "Planted bug in the backward pass: dW2-doubled." in out
    assert "The gradient guard stopped training at step 1." in out
    assert "gradproof: WRONG: 1 of 6 parameters has a wrong gradient: W2" in out
    assert "analytic = 2 × numeric" in out
    assert not (tmp_path / "model.npz").exists()


def test_another_bug_is_named_by_its_parameter(tmp_path):
    lines: list[str] = []
    run = run_training(
        n_transactions=3_000,
        epochs=2,
        plant_bug="db1-times-4",
        output=tmp_path,
        write=lines.append,
    )
    assert run.exit_code == 1 and run.stopped is not None
    assert run.stopped.result.suspects == ("b1",)
    assert "analytic = 4 × numeric" in "\n".join(lines)


def test_training_on_a_users_csv(tmp_path):
    path = tmp_path / "payments.csv"
    write_csv(make_payments(3_000, seed=5), path)
    result = runner.invoke(
        app,
        ["train", "--data", str(path), "--epochs", "2", "--output", str(tmp_path / "out")],
        terminal_width=200,
    )
    assert result.exit_code == 0, result.output
    assert f"Data: 3000 transactions from {path}" in result.output


def test_an_unreadable_csv_is_a_usage_error_with_exit_code_2(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("amount,hour\n1.0,3\n")
    result = runner.invoke(app, ["train", "--data", str(path)], terminal_width=200)
    assert result.exit_code == 2
    assert "is_fraud" in result.output


def test_every_bug_the_help_lists_is_one_the_model_can_plant():
    from gradproof.models import BUGS

    result = runner.invoke(app, ["train", "--help"], terminal_width=200)
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    for name in BUGS:
        assert name in text


def _flat(text: str) -> str:
    """The text with rich's panel borders and line breaks taken out."""
    return " ".join(re.sub("[│╭╮╰╯─]", " ", text).split())


def test_an_unknown_bug_is_refused_before_any_data_is_drawn(tmp_path, monkeypatch):
    import gradproof.cli.train

    def no_data(*args, **kwargs):
        raise AssertionError("data was drawn before --bug was checked")

    monkeypatch.setattr(gradproof.cli.train, "make_payments", no_data)
    monkeypatch.setattr(gradproof.cli.train, "load_csv", no_data)
    result = runner.invoke(
        app, ["train", "--plant-bug", "--bug", "nope", "--output", str(tmp_path)]
    )
    assert result.exit_code == 2, result.output
    assert (
        "--bug: 'nope' is not one of 'dW2-doubled', 'db1-times-4', 'no-l2-in-dW1', "
        "'dropout-mask-missing', 'sample-weights-ignored'" in _flat(result.stderr)
    )
    assert not list(tmp_path.iterdir())
    # The Python API checks first too.
    with pytest.raises(InputError, match="`plant_bug` 'nope' is not one of 'dW2-doubled'"):
        run_training(plant_bug="nope", output=tmp_path)


def test_bug_implies_plant_bug_and_the_failing_report_is_saved(tmp_path):
    jsonschema = pytest.importorskip("jsonschema")
    result = runner.invoke(
        app, ["train", "--bug", "db1-times-4", "--output", str(tmp_path)], terminal_width=200
    )
    assert result.exit_code == 1, result.output
    assert "Planted bug in the backward pass: db1-times-4." in result.stdout
    report, text = tmp_path / "guard-report.json", tmp_path / "guard-report.txt"
    assert f"Saved the failing check's report: {report}, {text}" in result.stdout
    document = json.loads(report.read_text())
    jsonschema.validate(document, json.loads(schema_path().read_text()))
    assert document["verdict"] == "fail" and document["suspects"] == ["b1"]
    assert document["context"] == {"command": "gradproof train", "step": 1}
    saved = text.read_text(encoding="utf-8")
    assert saved.startswith("The gradient guard stopped training at step 1.")
    assert "analytic = 4 × numeric" in saved
    assert saved.rstrip().splitlines()[-1] == (
        "gradproof: WRONG: 1 of 6 parameters has a wrong gradient: b1"
    )
    assert not (tmp_path / "model.npz").exists()


def test_a_missing_csv_is_named_by_its_option(tmp_path):
    missing = tmp_path / "nosuch.csv"
    result = runner.invoke(app, ["train", "--data", str(missing)], terminal_width=200)
    assert result.exit_code == 2, result.output
    assert result.stderr.strip() == (
        f"gradproof train: --data {missing} is not a file; check the name and directory"
    )


def test_a_csv_without_the_label_column_says_what_to_rename(tmp_path):
    path = tmp_path / "labelled.csv"
    path.write_text("amount,label\n1.0,0\n")
    result = runner.invoke(app, ["train", "--data", str(path)], terminal_width=200)
    assert result.exit_code == 2, result.output
    assert "has no label column 'is_fraud'" in result.stderr
    assert (
        "Rename the column that holds 0/1 fraud labels to is_fraud, where gradproof train "
        "reads them." in result.stderr
    )
    assert "label=" not in result.stderr


def test_train_help_shows_flags_as_flags():
    result = runner.invoke(app, ["train", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "<bool>" not in result.output
    assert "(implies --plant-bug)" in result.output
