"""matplotlib's pyplot, imported only when a figure is made (matplotlib is optional)."""

from __future__ import annotations

from typing import Any

from gradproof.errors import BackendUnavailableError


def _pyplot() -> object:
    """Import matplotlib's pyplot with a file-only backend, or say how to install it."""
    try:
        import matplotlib
    except ImportError as exc:
        raise BackendUnavailableError(
            f"Figures need matplotlib ({exc}). Install it with `pip install matplotlib` "
            "(or the `gradproof[cli]` extra).",
            framework="matplotlib",
        ) from exc
    matplotlib.use("Agg")  # write files; never open a window
    import matplotlib.pyplot as plt

    return plt


def _plt() -> Any:
    """Pyplot, typed loosely: matplotlib objects are not part of gradproof's typed surface."""
    return _pyplot()
