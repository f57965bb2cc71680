"""The README is true: its commands are what CI runs, and its examples print what it shows."""

from __future__ import annotations

import contextlib
import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")

DEMO_COMMAND = 'pip install ".[cli]" && gradproof demo'
TEST_COMMAND = 'pip install torch==2.13.0 && pip install -e ".[test]" && python -m pytest'


def _fenced_blocks(text: str) -> list[tuple[str, str]]:
    """Return (language, body) of every top-level fenced block, in order."""
    return re.findall(r"^```(\w*)\n(.*?)^```$", text, flags=re.S | re.M)


def _mask_timing(text: str) -> str:
    return re.sub(r" in \d+\.\d+ s\.", " in <time> s.", text).rstrip()


def test_quick_start_is_exactly_two_commands():
    bash = [body.strip() for lang, body in _fenced_blocks(README) if lang == "bash"]
    assert bash == [DEMO_COMMAND, TEST_COMMAND]


def test_ci_runs_the_readme_test_command():
    script = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    commands = [line for line in script.splitlines() if line and not line.startswith("#")]
    assert commands[-1] == TEST_COMMAND


CONTINUES = "<!-- continues the example above -->"
"""Put before a block that uses the names of the block before it; every other block is whole."""


def _python_blocks() -> list[tuple[str, bool, str]]:
    """(body, whether it continues the previous block, the next block's text output or "")."""
    found = list(re.finditer(r"^```(\w*)\n(.*?)^```$", README, flags=re.S | re.M))
    blocks = []
    for i, match in enumerate(found):
        if match.group(1) != "python":
            continue
        before = README[found[i - 1].end() if i else 0 : match.start()]
        following = found[i + 1] if i + 1 < len(found) else None
        shown = following.group(2) if following and following.group(1) == "text" else ""
        blocks.append((match.group(2), before.strip().endswith(CONTINUES), shown))
    return blocks


def _is_test_file(body: str) -> bool:
    return re.search(r"^def test_\w+\(", body, flags=re.M) is not None


def test_python_examples_print_what_the_readme_shows():
    """Each block runs on its own (or after the one it continues) and prints what follows it."""
    namespace: dict[str, object] = {}
    compared = 0
    for i, (body, continues, shown) in enumerate(_python_blocks()):
        if _is_test_file(body):
            continue  # run by pytest below
        if not continues:
            namespace = {"__name__": "readme"}
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(body, f"README.md python block {i}", "exec"), namespace)
        if shown:
            assert _mask_timing(out.getvalue()) == _mask_timing(shown)
            compared += 1
    assert compared >= 3


def _pytest(path: Path) -> subprocess.CompletedProcess[str]:
    """Run pytest on `path` in a fresh process, with this gradproof's plugin as installed."""
    import gradproof

    source = str(Path(gradproof.__file__).resolve().parents[1])
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([source, os.environ.get("PYTHONPATH", "")]),
        # The plugin by name, whether or not this gradproof's entry point is installed.
        "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1",
    }
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    command += ["-p", "gradproof.pytest_plugin", "--strict-markers", path.name]
    return subprocess.run(
        command, cwd=path.parent, capture_output=True, text=True, env=env, timeout=300, check=False
    )


def test_the_readme_test_file_passes_under_pytest(tmp_path):
    (body,) = [body for body, _, _ in _python_blocks() if _is_test_file(body)]
    path = tmp_path / "test_model.py"
    path.write_text(body, encoding="utf-8")
    done = _pytest(path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed" in done.stdout


def test_the_readme_test_file_fails_on_a_wrong_gradient(tmp_path):
    (body,) = [body for body, _, _ in _python_blocks() if _is_test_file(body)]
    planted = body.replace("dz = 2 * h", "dz = 3 * h")
    assert planted != body
    path = tmp_path / "test_model.py"
    path.write_text(planted, encoding="utf-8")
    done = _pytest(path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "1 failed" in done.stdout
    assert "GradientMismatchError" in done.stdout
    assert "w: analytic = 3/2 × numeric on every entry" in done.stdout


@pytest.mark.parametrize("figure", ["2.9193358833e-10", "0.2850931567761623", "1.19e-7"])
def test_figures_quoted_in_the_readme_are_the_assignments(figure):
    assert figure in README
