"""Make the guide's report figures and screenshot again, from ``examples/reading_a_report.py``.

They are the images of ``docs/images/report/``, shown on the guide's page "Reading a report".
Run from the repository root, with the ``cli`` extra and Debian's ``chromium`` installed::

    python tools/regenerate_report_images.py

The figures are those the example's ``gradproof check --plots`` writes; the screenshot is the
top of its HTML report as headless Chromium draws it at 1100 × 1500 pixels.
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
    """Run the example into a scratch folder and copy its figures and a screenshot here."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        sys.exit("chromium is needed for the screenshot: apt-get install chromium")
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch)
        env = {**os.environ, "MPLBACKEND": "Agg"}
        example = ROOT / "examples" / "reading_a_report.py"
        subprocess.run([sys.executable, str(example), str(out)], check=True, env=env,
                       stdout=subprocess.DEVNULL)  # fmt: skip
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
