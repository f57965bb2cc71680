"""Every script in ``examples/`` runs and prints exactly the output the user guide shows.

The guide includes each example's code and its recorded output
(``examples/output/NAME.txt``) verbatim, so this comparison keeps the guide true. Only
timings may differ between runs; they are masked on both sides. After a deliberate change,
record the new output with ``GRADPROOF_RECORD_EXAMPLES=1 python -m pytest tests/test_examples.py``
and read the diff before committing it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import mask_roundoff

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
OUTPUTS = EXAMPLES / "output"
DOCS = ROOT / "docs"

# What each example needs beyond the `cli` extra; it is skipped where that is missing.
NEEDS = {
    "torch_custom_function": ("torch",),
    "jax_custom_vjp": ("jax",),
    "training_with_guard_torch": ("torch", "lightning"),
    "where_is_the_bug": ("torch",),
}

_TIMING = re.compile(r"\b\d+(?:\.\d+)? ?(?:s|ms|µs)\b")


def mask_timings(text: str) -> str:
    """Replace durations such as ``0.01 s`` or ``12 ms`` by ``<time>``; strip trailing space."""
    return "\n".join(line.rstrip() for line in _TIMING.sub("<time>", text).splitlines())


def example_names() -> list[str]:
    return sorted(path.stem for path in EXAMPLES.glob("*.py") if not path.stem.startswith("_"))


def run_example(name: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONHASHSEED": "0", "MPLBACKEND": "Agg", "COLUMNS": "100"}
    # Run from an unrelated folder: an example must not depend on the working directory.
    return subprocess.run(
        [sys.executable, str(EXAMPLES / f"{name}.py"), str(tmp_path / "out")],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
        env=env,
        timeout=300,
    )


@pytest.mark.parametrize("name", example_names())
def test_example_prints_its_recorded_output(name, tmp_path):
    for module in NEEDS.get(name, ()):
        pytest.importorskip(module)
    done = run_example(name, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    recorded = OUTPUTS / f"{name}.txt"
    if os.environ.get("GRADPROOF_RECORD_EXAMPLES") == "1":
        recorded.write_text(done.stdout, encoding="utf-8")
    assert recorded.is_file(), f"record the output of examples/{name}.py in {recorded}"
    # Round-off figures depend on the CPU's kernels (see mask_roundoff); verdicts do not.
    expected = mask_roundoff(mask_timings(recorded.read_text(encoding="utf-8")))
    assert mask_roundoff(mask_timings(done.stdout)) == expected


@pytest.mark.parametrize("name", example_names())
def test_every_example_and_its_output_are_in_the_guide(name):
    pages = "\n".join(p.read_text(encoding="utf-8") for p in DOCS.rglob("*.md"))
    assert f'--8<-- "examples/{name}.py"' in pages
    assert f'--8<-- "examples/output/{name}.txt"' in pages


def test_every_recorded_output_has_its_example():
    names = set(example_names())
    orphans = [p.name for p in OUTPUTS.glob("*.txt") if p.stem not in names]
    assert not orphans


def test_mask_timings():
    assert mask_timings("in 0.01 s.  \n(55 loss evaluations, 0.019 s)") == (
        "in <time>.\n(55 loss evaluations, <time>)"
    )
    assert mask_timings("W[0, 1] 0.5 shape") == "W[0, 1] 0.5 shape"


def test_examples_need_only_what_they_declare():
    """An example that imports torch or jax must be listed in NEEDS, to skip cleanly without it."""
    for name in example_names():
        source = (EXAMPLES / f"{name}.py").read_text(encoding="utf-8")
        for module in ("torch", "jax", "lightning"):
            if re.search(rf"^\s*(import|from) {module}\b", source, flags=re.M):
                assert module in NEEDS.get(name, ()), f"{name} imports {module}"


def test_needs_lists_only_real_examples():
    assert set(NEEDS) <= set(example_names())
