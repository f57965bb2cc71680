"""The lint, type and layering gates run in the test suite: one command checks everything."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "command",
    [
        ["ruff", "check", "."],
        ["ruff", "format", "--check", "."],
        ["mypy"],  # files and strictness come from pyproject.toml
    ],
    ids=["ruff-check", "ruff-format", "mypy"],
)
def test_tool_passes(command):
    done = subprocess.run(
        [sys.executable, "-m", *command], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}"


def test_the_layers_hold():
    """The contracts of pyproject.toml ([tool.importlinter], docs/architecture.md) are kept."""
    lint_imports = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert lint_imports, "lint-imports not found: `pip install -e '.[test]'` installs import-linter"
    done = subprocess.run(
        [lint_imports, "--no-cache"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


def test_no_module_imports_itself_back():
    """No import cycles in src/, type-only imports included (no strongly connected component)."""
    grimp = pytest.importorskip("grimp")
    graph = grimp.build_graph("gradproof")
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_a_planted_cycle():
    grimp = pytest.importorskip("grimp")
    graph = grimp.build_graph("gradproof")
    graph.add_import(
        importer="gradproof.errors", imported="gradproof.results", line_number=1, line_contents="x"
    )
    assert any({"gradproof.errors", "gradproof.results"} <= set(c) for c in _cycles(graph))


def _cycles(graph):
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for imported in sorted(graph.find_modules_directly_imported_by(module)):
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in on_stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return found


def test_the_architecture_page_draws_the_contracted_layers():
    """docs/architecture.md's diagram names every layer of the import-linter contract."""
    tomllib = pytest.importorskip("tomllib")
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    (layers_contract,) = [
        c for c in config["tool"]["importlinter"]["contracts"] if c["type"] == "layers"
    ]
    page = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    diagram = page.split("```mermaid", 1)[1].split("```", 1)[0]
    for layer in layers_contract["layers"]:
        assert f'"{layer}' in diagram or f"{layer}:" in diagram or f'["{layer}' in diagram, layer
