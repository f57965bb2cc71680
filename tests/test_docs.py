"""The user guide is true: it builds, its code runs, and the output it quotes is real."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_examples import OUTPUTS, mask_timings

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.rglob("*.md"))


def _blocks(text: str, language: str) -> list[str]:
    """Bodies of the fenced blocks in `language` whose opening line has nothing else on it."""
    return re.findall(rf"^```{language}\n(.*?)^```$", text, flags=re.S | re.M)


def _page_id(page: Path) -> str:
    return page.relative_to(DOCS).as_posix()


def test_site_builds_strictly(tmp_path):
    """``mkdocs build --strict``: every page in the nav, no broken link, snippet or API name."""
    if importlib.util.find_spec("mkdocs") is None:
        pytest.skip("mkdocs is not installed (pip install '.[docs]')")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        env=env,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    for page in ("guide/reports", "guide/numpy", "api", "cli"):
        assert (tmp_path / page / "index.html").is_file()
    api = (tmp_path / "api" / "index.html").read_text(encoding="utf-8")
    # The function, not the module of the same name, with its numpydoc sections rendered.
    assert 'id="gradproof.checking.check.check"' in api
    for section in ("Parameters", "Returns", "Raises", "Examples"):
        assert f'<span class="doc-section-title">{section}:</span>' in api, section
    assert "<code>rtol</code>" in api
    # The docstrings' Sphinx roles became links or code (tools/mkdocs_hooks.py).
    assert 'href="#gradproof.CheckResult"' in api
    for built in tmp_path.rglob("*.html"):
        text = built.read_text(encoding="utf-8")
        roles = re.findall(r":(?:func|meth|mod|class|data|attr|exc|obj):(?:<code>|`)", text)
        assert not roles, f"{built.relative_to(tmp_path)} shows Sphinx roles: {roles[:3]}"


@pytest.mark.parametrize("page", sorted((DOCS / "guide").glob("*.md")), ids=_page_id)
def test_quoted_output_is_recorded_output(page):
    """Every line a guide page shows as output appears in some example's recorded output."""
    recorded = "\n".join(
        mask_timings(path.read_text(encoding="utf-8")) for path in OUTPUTS.glob("*.txt")
    )
    lines = set(recorded.splitlines())
    for body in _blocks(page.read_text(encoding="utf-8"), "text"):
        if "--8<--" in body:
            continue
        for line in mask_timings(body).splitlines():
            if line.strip() in ("", "...") or line.lstrip().startswith("... "):
                continue
            assert line in lines, f"{_page_id(page)} quotes a line no example prints:\n{line}"


def _runnable_blocks(page: Path) -> list[str]:
    """Untitled Python blocks of `page` that are not snippets of an example."""
    text = page.read_text(encoding="utf-8")
    return [body for body in _blocks(text, "python") if "--8<--" not in body]


@pytest.mark.parametrize("page", [p for p in PAGES if _runnable_blocks(p)], ids=_page_id)
def test_python_blocks_run(page, tmp_path, monkeypatch):
    """Untitled Python blocks run, in order, in one namespace per page.

    A block with a title (```python title="tests/test_x.py"```) shows a file of the reader's
    own project and is not run; a block that includes an example is run by test_examples.
    """
    blocks = _runnable_blocks(page)
    for module in ("torch", "jax"):
        if any(re.search(rf"^\s*(import|from) {module}\b", b, flags=re.M) for b in blocks):
            pytest.importorskip(module)
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": f"docs.{page.stem}"}
    for i, body in enumerate(blocks):
        with contextlib.redirect_stdout(io.StringIO()):
            exec(compile(body, f"{_page_id(page)} python block {i}", "exec"), namespace)


def test_index_example_finds_the_missing_factor():
    (block,) = _blocks((DOCS / "index.md").read_text(encoding="utf-8"), "python")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(block, "docs/index.md", "exec"), {"__name__": "docs.index"})
    report = out.getvalue()
    assert "WRONG: 2 of 2 parameters have wrong gradients: w, b" in report
    assert report.count("analytic = 1/2 × numeric on every entry") == 2


def test_cli_reference_documents_every_option():
    pytest.importorskip("typer")
    import typer.main

    from gradproof.cli.app import app

    text = (DOCS / "cli.md").read_text(encoding="utf-8")
    group = typer.main.get_command(app)
    for name, command in group.commands.items():  # type: ignore[attr-defined]
        assert f"## gradproof {name}" in text
        for parameter in command.params:
            for option in parameter.opts + parameter.secondary_opts:
                if option.startswith("-") and option != "--help":
                    assert f"`{option}" in text, f"docs/cli.md does not document {name} {option}"


def test_every_page_is_in_the_nav():
    config = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    for page in PAGES:
        assert f" {_page_id(page)}" in config, f"{_page_id(page)} is not in mkdocs.yml's nav"
