"""The command line: `gradproof demo`, `--version`, `--help`, and `python -m gradproof`."""

from __future__ import annotations

import subprocess
import sys

import pytest
from typer.testing import CliRunner

import gradproof
from gradproof.__main__ import main
from gradproof.cli.app import app
from gradproof.cli.demo import run_demo

runner = CliRunner()


def test_demo_walks_through_the_assignment_and_exits_0():
    result = runner.invoke(app, ["demo"], terminal_width=200)
    assert result.exit_code == 0, result.output
    out = result.output
    # 1-D check, with the assignment's figure.
    assert "forward J = 8, backward dJ/dtheta = 2" in out
    assert "relative difference 2.9193358833e-10 < 1e-7: the gradient is correct." in out
    # The assignment's N-D check only says that something is wrong...
    assert "There is a mistake in the backward propagation! difference = 0.285093156776" in out
    # ...gradproof names the two gradients and how far off they are...
    assert "gradproof: WRONG: 2 of 6 parameters have wrong gradients: b1, W2" in out
    assert "b1: analytic = 4 × numeric on every entry" in out
    assert "W2: analytic = 2 × numeric on every entry" in out
    assert (
        "The wrong gradients are db1 (analytic = 4 × numeric), dW2 (analytic = 2 × numeric)." in out
    )
    # ...and the corrected backward passes both checks.
    assert "Your backward propagation works perfectly fine! difference = 1.189e-07" in out
    corrected = out.split("3. The corrected backward pass")[1].split("4. Where the error enters")[0]
    assert "gradproof: CORRECT: all 6 parameters (47 entries) pass" in corrected
    assert "margin" in corrected
    assert "WRONG" not in corrected


def test_run_demo_returns_the_passing_check_of_the_corrected_backward():
    lines: list[str] = []
    result = run_demo(lines.append)
    assert result.passed
    assert [p.name for p in result.params] == ["W1", "b1", "W2", "b2", "W3", "b3"]
    assert any("dW2" in line for line in lines)


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"gradproof {gradproof.__version__}"


def test_help_lists_the_commands():
    result = runner.invoke(app, ["--help"], terminal_width=100)
    assert result.exit_code == 0, result.output
    assert "demo" in result.output
    assert "--version" in result.output


def test_unknown_command_is_a_usage_error():
    result = runner.invoke(app, ["frobnicate"])
    assert result.exit_code == 2


def test_python_dash_m_runs_the_command_line():
    done = subprocess.run(
        [sys.executable, "-m", "gradproof", "--version"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"gradproof {gradproof.__version__}"


def test_missing_cli_extra_says_how_to_install_it(monkeypatch, capsys):
    monkeypatch.delitem(sys.modules, "gradproof.cli.app", raising=False)
    monkeypatch.setitem(sys.modules, "typer", None)  # makes `import typer` fail
    with pytest.raises(SystemExit) as info:
        main()
    assert info.value.code == 2
    assert "pip install 'gradproof[cli]'" in capsys.readouterr().err


def test_a_crash_of_any_command_exits_4(monkeypatch):
    import gradproof.cli.demo

    def broken(write):
        raise ZeroDivisionError("demo fell over")

    monkeypatch.setattr(gradproof.cli.demo, "run_demo", broken)
    result = runner.invoke(app, ["demo"])
    assert result.exit_code == 4, result.output
    assert "this is a gradproof bug, please report it" in result.stderr
    assert "ZeroDivisionError: demo fell over" in result.stderr
