"""Collect the doctests of optional parts only where what they need is installed.

The test suite's own tests of the adapters skip themselves without torch or
JAX; the doctests in ``src/gradproof`` cannot, so their modules are left out
instead. CI installs torch, JAX and matplotlib, so everything runs there.
"""

from __future__ import annotations

import importlib.util

_NEEDS = {
    "src/gradproof/torch": ("torch",),
    "src/gradproof/jax": ("jax",),
    "src/gradproof/testing.py": ("torch", "jax"),
    "src/gradproof/report/figures_training.py": ("matplotlib",),
}

collect_ignore = [
    path
    for path, modules in _NEEDS.items()
    if not all(importlib.util.find_spec(module) for module in modules)
]
