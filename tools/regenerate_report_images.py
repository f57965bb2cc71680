r"""Make the guide's report figures and screenshot again, with the command the guide shows.

They are the images of ``docs/images/report/``, on the guide's page "Reading a report". The
script runs, from the repository root, the command that page shows a user typing::

    gradproof check examples/cli/model.py --loss loss --grad grad --params params \
        --html report.html --plots figures

(with the two outputs in a scratch folder), copies the figures, and takes a screenshot of the
top of the HTML report with headless Chromium at 1100 × 1500 pixels. Run it from the
repository root, with the ``cli`` extra and Debian's ``chromium`` installed::

    python tools/regenerate_report_images.py
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HERE = ROOT / "docs" / "images" / "report"


def main() -> None:
    """Run the command into a scratch folder; copy its figures and a screenshot here."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        sys.exit("chromium is needed for the screenshot: apt-get install chromium")
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch)
        env = {**os.environ, "MPLBACKEND": "Agg"}
        command = [sys.executable, "-m", "gradproof", "check", "examples/cli/model.py",
                   "--loss", "loss", "--grad", "grad", "--params", "params",
                   "--html", str(out / "report.html"), "--plots", str(out / "figures")]  # fmt: skip
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, check=False)
        if done.returncode != 1:  # the model's gradient is wrong on purpose
            sys.exit(f"gradproof check exited with {done.returncode}:\n{done.stderr.decode()}")
        for figure in sorted((out / "figures").glob("*.png")):
            shutil.copyfile(figure, HERE / figure.name)
            print(f"wrote {(HERE / figure.name).relative_to(ROOT)}")
        shot = HERE / "html_report.png"
        subprocess.run(
            [browser, "--headless", "--disable-gpu", "--no-sandbox", "--no-first-run",
             "--hide-scrollbars", f"--screenshot={shot}", "--window-size=1100,1500",
             (out / "report.html").as_uri()],
            check=True, capture_output=True,
        )  # fmt: skip
        print(f"wrote {shot.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
