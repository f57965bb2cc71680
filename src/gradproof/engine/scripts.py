"""Finding a main script that worker processes would run again.

Note [Unguarded scripts]
    The 'spawn' and 'forkserver' start methods start each worker by running
    the main script again (as ``__mp_main__``). A script that calls gradproof
    at its top level, without an ``if __name__ == "__main__":`` guard, would
    start the check again in every worker, which fails with a long
    multiprocessing traceback. Before starting a pool, the engine finds the
    line of the main script that is running (the ``<module>`` frame of
    ``__main__``) and, if it lies outside such a guard, evaluates in this
    process and says so in :attr:`~gradproof.engine.base.Engine.notes`. The same holds for a main
    module the workers cannot read again (``python - < script.py``).
"""

from __future__ import annotations

import ast
import functools
import os
import sys
from types import FrameType
from typing import Any


def _main_script_problem() -> str | None:
    """Say why worker processes started by spawn or forkserver cannot be used here, if so."""
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if main is None or not isinstance(path, str):
        return None  # an interactive session or `python -c`: workers do not run it again
    if getattr(main, "__spec__", None) is None and not os.path.isfile(path):
        return (
            f"the main script ({path}) cannot be read again by worker processes, so they would "
            "fail to start; the evaluations ran in this process. Run the script from a file, "
            'under an `if __name__ == "__main__":` guard, to use worker processes.'
        )
    line = _main_line(vars(main))
    if line is None:
        return None
    guarded = _guarded_lines(os.path.abspath(path))
    if guarded is None or any(first <= line <= last for first, last in guarded):
        return None
    return (
        "this script calls gradproof at its top level (line "
        f'{line}) without an `if __name__ == "__main__":` guard, so worker processes would '
        "run it again; the evaluations ran in this process. Put the call under such a guard "
        "to use worker processes."
    )


def _main_line(main: dict[str, Any]) -> int | None:
    """Return the line of the main script's top-level code that led here, if it runs."""
    frame: FrameType | None = sys._getframe(1)
    line = None
    while frame is not None:
        if frame.f_code.co_name == "<module>" and frame.f_globals is main:
            line = frame.f_lineno
        frame = frame.f_back
    return line


@functools.lru_cache(maxsize=8)
def _guarded_lines(path: str) -> tuple[tuple[int, int], ...] | None:
    """Return the lines of the file's ``if __name__ == "__main__":`` blocks (None: unreadable)."""
    try:
        with open(path, "rb") as file:
            tree = ast.parse(file.read(), filename=path)
    except (OSError, SyntaxError, ValueError):
        return None
    ranges = []
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and _is_main_test(node.test):
            ranges.append((node.body[0].lineno, node.body[-1].end_lineno or node.lineno))
    return tuple(ranges)


def _is_main_test(test: ast.expr) -> bool:
    """Whether `test` is ``__name__ == "__main__"`` (either way round)."""
    if not (isinstance(test, ast.Compare) and len(test.ops) == 1):
        return False
    if not isinstance(test.ops[0], ast.Eq):
        return False
    sides = {_literal(test.left), _literal(test.comparators[0])}
    return sides == {"name:__name__", "str:__main__"}


def _literal(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return f"name:{node.id}"
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return f"str:{node.value}"
    return None
