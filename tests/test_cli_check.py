"""`gradproof check TARGET --loss --grad --params`: loading user code, exit codes, reports."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import gradproof
from gradproof.cli import app
from gradproof.report.json import schema_path

runner = CliRunner()

MODEL = """
import numpy as np

X = np.linspace(-1, 1, 12).reshape(4, 3)
y = np.array([0.5, -1.0, 2.0, 0.0])


def loss(p):
    r = X @ p["w"] + p["b"] - y
    return 0.5 * float(r @ r)


def grad(p):
    r = X @ p["w"] + p["b"] - y
    return {"w": X.T @ r, "b": np.array([r.sum()])}


def bad_grad(p):
    g = grad(p)
    g["w"] = 2 * g["w"]
    return g


def failing_loss(p):
    return _inner(p)


def _inner(p):
    raise ValueError("my loss broke here")


def params():
    return {"w": np.array([0.1, -0.2, 0.3]), "b": np.array([0.05])}


def abs_loss(p):
    return float(np.sum(np.abs(p["w"])))


def abs_grad(p):
    return {"w": np.sign(p["w"])}


def kink_params():
    return {"w": np.array([0.0, 1.0, -2.0])}


def fragile_loss(p):
    if abs(p["w"][0] - 0.1) > 1e-2:  # fine for the check's small steps, not for the sweep's
        raise ValueError("w[0] left its valid range")
    return loss(p)


not_a_function = 3
"""

PARAMS = {"w": np.array([0.1, -0.2, 0.3]), "b": np.array([0.05])}


@pytest.fixture
def model(tmp_path: Path) -> Path:
    path = tmp_path / "user_model.py"
    path.write_text(MODEL)
    return path


def invoke(*args: str):
    return runner.invoke(app, ["check", *args], terminal_width=200)


def check_args(model: Path, grad: str = "grad", params: str = "params", loss: str = "loss"):
    return [str(model), "--loss", loss, "--grad", grad, "--params", params]


def test_correct_gradient_exits_0(model):
    result = invoke(*check_args(model))
    assert result.exit_code == 0, result.output
    assert "gradproof: CORRECT: all 2 parameters (4 entries) pass" in result.stdout
    # The verdict is also the last line, for CI logs.
    assert result.stdout.strip().splitlines()[-1].startswith("gradproof: CORRECT")


def test_wrong_gradient_exits_1_and_names_the_parameter(model):
    result = invoke(*check_args(model, grad="bad_grad"))
    assert result.exit_code == 1, result.output
    out = result.stdout
    assert "gradproof: WRONG: 1 of 2 parameters has a wrong gradient: w" in out
    assert "analytic = 2 × numeric" in out
    assert "Diagnosis" in out


def test_kink_only_exits_3(model):
    result = invoke(*check_args(model, "abs_grad", "kink_params", loss="abs_loss"))
    assert result.exit_code == 3, result.output
    assert "INCONCLUSIVE" in result.stdout
    assert "kink" in result.stdout


def test_redirected_output_is_plain_text(model):
    result = invoke(*check_args(model, grad="bad_grad"), "--verbose")
    assert result.exit_code == 1
    assert "\x1b[" not in result.output


def test_params_from_npz(model, tmp_path):
    file = tmp_path / "point.npz"
    np.savez(file, w=PARAMS["w"], b=PARAMS["b"])
    result = invoke(*check_args(model, params=str(file)))
    assert result.exit_code == 0, result.output


def test_params_from_npy_array(tmp_path):
    (tmp_path / "cube.py").write_text(
        "import numpy as np\n"
        "def loss(w):\n    return float(np.sum(w**3))\n"
        "def grad(w):\n    return 3 * w**2\n"
    )
    np.save(tmp_path / "w.npy", np.array([1.0, -2.0, 0.5]))
    result = invoke(str(tmp_path / "cube.py"), "--loss", "loss", "--grad", "grad", "--params",
                    str(tmp_path / "w.npy"))  # fmt: skip
    assert result.exit_code == 0, result.output


def test_npz_with_an_object_array_is_refused(model, tmp_path):
    file = tmp_path / "evil.npz"
    np.savez(file, w=np.array([{"a": 1}, None], dtype=object), b=np.zeros(1))
    result = invoke(*check_args(model, params=str(file)))
    assert result.exit_code == 2, result.output
    assert "pickled Python objects" in result.output
    assert "never as code" in result.output
    assert "Traceback" not in result.output


def test_params_from_pt_state_dict(model, tmp_path):
    torch = pytest.importorskip("torch")
    file = tmp_path / "point.pt"
    torch.save({k: torch.tensor(v, dtype=torch.float32) for k, v in PARAMS.items()}, file)
    result = invoke(*check_args(model, params=str(file)))
    assert result.exit_code == 0, result.output


class Arbitrary:
    def __init__(self) -> None:
        self.payload = [1, 2, 3]


def test_pt_with_an_arbitrary_object_is_refused(model, tmp_path):
    torch = pytest.importorskip("torch")
    file = tmp_path / "evil.pt"
    torch.save({"w": Arbitrary()}, file)
    result = invoke(*check_args(model, params=str(file)))
    assert result.exit_code == 2, result.output
    assert "pickled Python objects" in result.output


def test_import_error_in_user_file_shows_the_users_traceback(tmp_path):
    broken = tmp_path / "broken_model.py"
    broken.write_text("import numpy as np\n\nimport a_module_that_does_not_exist\n")
    result = invoke(str(broken), "--loss", "loss", "--grad", "grad", "--params", "params")
    assert result.exit_code == 2, result.output
    assert f'File "{broken}", line 3' in result.output
    assert "a_module_that_does_not_exist" in result.output
    assert "gradproof" + os.sep not in result.output.replace("gradproof check:", "")


def test_syntax_error_in_user_file_exits_2(tmp_path):
    broken = tmp_path / "typo.py"
    broken.write_text("def loss(p):\n    return p +\n")
    result = invoke(str(broken), "--loss", "loss", "--grad", "grad", "--params", "params")
    assert result.exit_code == 2, result.output
    assert "SyntaxError" in result.output
    assert "line 2" in result.output


def test_exception_in_user_loss_shows_the_users_traceback(model):
    result = invoke(*check_args(model, loss="failing_loss"))
    assert result.exit_code == 2, result.output
    out = result.output
    assert f'File "{model}", line 25, in failing_loss' in out
    assert f'File "{model}", line 29, in _inner' in out
    assert "ValueError: my loss broke here" in out
    assert "gradproof" + os.sep not in out.replace("gradproof check:", "")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--loss", "nope"], "the loss function 'nope' is not defined in user_model.py"),
        (["--grad", "not_a_function"], "'not_a_function' in user_model.py is a int"),
        (["--params", "missing.npz"], "no such parameter file: missing.npz"),
        (["--params", "no_such_function"], "the parameter function 'no_such_function'"),
        (["--params", "not a name"], "neither a parameter file"),
    ],
)
def test_usage_errors_exit_2_with_one_line(model, args, message):
    base = dict(zip(["--loss", "--grad", "--params"], ["loss", "grad", "params"], strict=True))
    base.update(dict(zip(args[::2], args[1::2], strict=True)))
    flat = [item for pair in base.items() for item in pair]
    result = invoke(str(model), *flat)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output


def test_missing_target_and_module(tmp_path):
    result = invoke(str(tmp_path / "nowhere.py"), "--loss", "a", "--grad", "b", "--params", "c")
    assert result.exit_code == 2
    assert "no such Python file" in result.output
    result = invoke("no_such_module_xyz", "--loss", "a", "--grad", "b", "--params", "c")
    assert result.exit_code == 2
    assert "cannot find the module 'no_such_module_xyz'" in result.output


def test_importable_module_target(model, monkeypatch):
    monkeypatch.chdir(model.parent)
    monkeypatch.delitem(sys.modules, "user_model", raising=False)
    result = invoke("user_model", "--loss", "loss", "--grad", "grad", "--params", "params")
    assert result.exit_code == 0, result.output
    sys.modules.pop("user_model", None)


def test_an_invalid_option_combination_exits_2(model):
    result = invoke(*check_args(model), "--eps", "1e-6", "--rel-step", "1e-6")
    assert result.exit_code == 2, result.output
    assert "pass only one of them" in result.output
    assert "Traceback" not in result.output
    result = invoke(*check_args(model), "--mode", "bogus")
    assert result.exit_code == 2


def test_json_output_validates_against_the_schema(model, tmp_path):
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads(schema_path().read_text())
    out_file = tmp_path / "report.json"
    result = invoke(*check_args(model, grad="bad_grad"), "--json", "--json-out", str(out_file))
    assert result.exit_code == 1, result.output
    document = json.loads(result.stdout)
    jsonschema.validate(document, schema)
    assert document["verdict"] == "fail"
    assert document["suspects"] == ["w"]
    assert document["context"] == {
        "target": str(model),
        "loss": "loss",
        "grad": "bad_grad",
        "params": "params",
    }
    assert json.loads(out_file.read_text())["verdict"] == "fail"


def test_options_reach_the_check(model):
    jsonschema = pytest.importorskip("jsonschema")
    result = invoke(*check_args(model), "--json", "--method", "forward", "--eps", "1e-6",
                    "--seed", "7", "--rtol", "1e-3", "--mode", "full")  # fmt: skip
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    jsonschema.validate(document, json.loads(schema_path().read_text()))
    assert (document["method"], document["seed"], document["rtol"]) == ("forward", 7, 1e-3)
    assert document["step"].startswith("absolute")


def test_html_report_and_plots_include_the_step_sweep(model, tmp_path):
    pytest.importorskip("matplotlib")
    page, folder = tmp_path / "report.html", tmp_path / "figures"
    result = invoke(*check_args(model, grad="bad_grad"), "--html", str(page), "--plots",
                    str(folder))  # fmt: skip
    assert result.exit_code == 1, result.output
    names = sorted(p.name for p in folder.iterdir())
    # The worst entry of the wrong parameter is swept by default.
    sweeps = [n for n in names if n.startswith("step_sweep_")]
    assert len(sweeps) == 1 and sweeps[0].startswith("step_sweep_w"), names
    assert {"relative_differences.png", "analytic_vs_numeric.png"} <= set(names)
    text = page.read_text(encoding="utf-8")
    assert "Step sweep of w[" in text
    # What was checked, under the verdict.
    assert '<dl class="context">' in text
    assert f"<dt>target</dt><dd><code>{model}</code></dd>" in text
    assert "<dt>grad</dt><dd><code>bad_grad</code></dd>" in text
    assert text.count("data:image/png;base64,") == len(names)


def test_sweep_entry_and_no_sweep(model, tmp_path):
    pytest.importorskip("matplotlib")
    chosen, skipped = tmp_path / "chosen", tmp_path / "skipped"
    result = invoke(*check_args(model), "--plots", str(chosen), "--sweep-entry", "b[0]")
    assert result.exit_code == 0, result.output
    assert "step_sweep_b_0.png" in {p.name for p in chosen.iterdir()}, list(chosen.iterdir())
    assert invoke(*check_args(model), "--plots", str(skipped), "--no-sweep").exit_code == 0
    assert not [p for p in skipped.iterdir() if p.name.startswith("step_sweep")]


def test_sweep_entry_that_does_not_exist_exits_2(model, tmp_path):
    pytest.importorskip("matplotlib")
    result = invoke(*check_args(model), "--plots", str(tmp_path), "--sweep-entry", "w[9]")
    assert result.exit_code == 2
    assert "no entry 'w[9]'" in result.stderr
    assert "Traceback" not in result.stderr


def test_loss_failing_in_the_sweep_shows_the_users_traceback(model, tmp_path):
    pytest.importorskip("matplotlib")
    args = check_args(model, loss="fragile_loss")
    result = invoke(*args, "--plots", str(tmp_path), "--sweep-entry", "w[0]")
    assert result.exit_code == 2
    assert "during the step sweep" in result.stderr
    assert "--no-sweep" in result.stderr
    assert "w[0] left its valid range" in result.stderr
    assert "user_model.py" in result.stderr
    assert "gradproof/cli.py" not in result.stderr


def test_help_documents_the_exit_codes():
    result = runner.invoke(app, ["check", "--help"], terminal_width=200)
    assert result.exit_code == 0
    out = " ".join(result.output.split())
    assert "0 every gradient is correct" in out
    assert "1 a gradient is wrong" in out
    assert "3 inconclusive (kinks, noise) or incomplete" in out
    assert "4 gradproof itself crashed" in out


@pytest.mark.parametrize(("grad", "code"), [("grad", 0), ("bad_grad", 1)])
def test_python_m_gradproof_check_exit_codes(model, grad, code):
    done = subprocess.run(
        [sys.executable, "-m", "gradproof", "check", *check_args(model, grad=grad)],
        capture_output=True,
        text=True,
        check=False,
        cwd=model.parent,
    )
    assert done.returncode == code, done.stdout + done.stderr
    assert "\x1b[" not in done.stdout
    assert done.stdout.strip().splitlines()[-1].startswith("gradproof: ")


def test_python_m_gradproof_check_user_error_exits_2(model):
    done = subprocess.run(
        [sys.executable, "-m", "gradproof", "check", *check_args(model, loss="failing_loss")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "ValueError: my loss broke here" in done.stderr
    assert "gradproof" + os.sep not in done.stderr


def test_terminal_report_has_colour_table_hints_and_a_closing_verdict(model):
    from io import StringIO

    from rich.console import Console

    from gradproof.report.rich import print_result
    from gradproof.target import load_params, load_target, resolve_function

    module = load_target(str(model))
    result = gradproof.check(
        resolve_function(module, "loss"),
        resolve_function(module, "bad_grad"),
        load_params("params", module),
    )
    buffer = StringIO()
    print_result(result, Console(file=buffer, force_terminal=True, width=160), verbose=True)
    out = buffer.getvalue()
    assert "\x1b[" in out  # coloured
    plain = StringIO()
    print_result(result, Console(file=plain, width=160))
    text = plain.getvalue()
    assert "parameter" in text and "WRONG" in text
    assert "hint:" in text
    assert text.strip().splitlines()[-1] == (
        "gradproof: WRONG: 1 of 2 parameters has a wrong gradient: w"
    )


def test_terminal_report_shows_quoted_code_in_bold(model):
    pytest.importorskip("rich")
    from io import StringIO

    from rich.console import Console

    from gradproof.report.rich import print_result
    from gradproof.target import load_params, load_target, resolve_function

    module = load_target(str(model))
    result = gradproof.check(
        resolve_function(module, "loss"),
        resolve_function(module, "bad_grad"),
        load_params("params", module),
    )
    diagnosis = result["w"].diagnosis
    assert diagnosis is not None and "`w`" in diagnosis.hint  # the plain text keeps backticks
    buffer = StringIO()
    console = Console(file=buffer, force_terminal=True, width=400, color_system="standard")
    print_result(result, console)
    out = buffer.getvalue()
    hint = next(line for line in out.splitlines() if "hint:" in line)
    assert "`" not in hint
    assert re.search(r"\x1b\[1(;\d+)*mw\x1b\[0m", hint), repr(hint)  # bold, on a terminal


def test_verbose_lists_every_wrong_entry_in_every_report(tmp_path):
    user = tmp_path / "dense.py"
    user.write_text(
        "import numpy as np\n"
        "def loss(p): return float(np.sum(np.sin(p['W'])))\n"
        "def grad(p): return {'W': 2 * np.cos(p['W'])}\n"
        "def params(): return {'W': np.linspace(-1, 1, 60).reshape(6, 10)}\n"
    )
    base = (str(user), "--loss", "loss", "--grad", "grad", "--params", "params")
    short_json = tmp_path / "short.json"
    short = invoke(*base, "--json-out", str(short_json))
    assert short.exit_code == 1
    assert short.stdout.count("\n    W[") == 3 and "... 57 more wrong entries" in short.stdout
    document = json.loads(short_json.read_text(encoding="utf-8"))
    assert len(document["params"][0]["failures"]) == 20  # the 20 worst
    out = tmp_path / "report.json"
    full = invoke(*base, "--verbose", "--json-out", str(out))
    assert full.exit_code == 1
    assert full.stdout.count("\n    W[") == 60 and "more wrong entries" not in full.stdout
    document = json.loads(out.read_text(encoding="utf-8"))
    assert len(document["params"][0]["failures"]) == 60
