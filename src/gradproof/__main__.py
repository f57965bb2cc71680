"""Entry point of the ``gradproof`` command and of ``python -m gradproof``."""

from __future__ import annotations

import sys


def main() -> None:
    """Run the command line, or say how to install it when its extra is missing."""
    try:
        from gradproof.cli.app import app
    except ImportError as exc:  # typer or rich missing: the `cli` extra is not installed
        sys.stderr.write(
            f"gradproof's command line needs typer and rich ({exc}).\n"
            "Install them with:  pip install 'gradproof[cli]'\n"
        )
        sys.exit(2)
    app()


if __name__ == "__main__":
    main()
