"""The README is true: its commands are what CI runs, and its examples print what it shows."""

from __future__ import annotations

import contextlib
import io
import re
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


def test_python_examples_print_what_the_readme_shows():
    blocks = _fenced_blocks(README)
    namespace: dict[str, object] = {"__name__": "readme"}
    compared = 0
    for i, (lang, body) in enumerate(blocks):
        if lang != "python":
            continue
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(body, f"README.md python block {i}", "exec"), namespace)
        following = blocks[i + 1] if i + 1 < len(blocks) else ("", "")
        if following[0] == "text":
            assert _mask_timing(out.getvalue()) == _mask_timing(following[1])
            compared += 1
    assert compared >= 3


@pytest.mark.parametrize("figure", ["2.9193358833e-10", "0.2850931567761623", "1.19e-7"])
def test_figures_quoted_in_the_readme_are_the_assignments(figure):
    assert figure in README
