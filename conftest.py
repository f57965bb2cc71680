"""Collect the doctests of the framework adapters only where their framework is installed.

The test suite's own adapter tests skip themselves without torch or JAX; the
doctests in ``src/gradproof`` cannot, so their modules are left out instead.
CI installs both frameworks, so everything runs there.
"""

from __future__ import annotations

import importlib.util

_NEEDS = {
    "src/gradproof/torch": ("torch",),
    "src/gradproof/jax": ("jax",),
    "src/gradproof/testing.py": ("torch", "jax"),
}

collect_ignore = [
    path
    for path, modules in _NEEDS.items()
    if not all(importlib.util.find_spec(module) for module in modules)
]
