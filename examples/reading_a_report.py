r"""Run ``gradproof check`` on a user's file and read its reports: terminal, JSON, HTML, figures.

The model is ``examples/cli/model.py``. This script runs the same commands a user would type
in a shell, from the repository root::

    gradproof check examples/cli/model.py --loss loss --grad grad --params params \\
        --json-out report.json --html report.html --plots figures

and shows what each report holds and which exit code each verdict gives.

Run it with ``python examples/reading_a_report.py [OUTPUT_FOLDER]``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

MODEL = Path(__file__).resolve().parent / "cli" / "model.py"
out = Path(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="gradproof-report-"))
out.mkdir(parents=True, exist_ok=True)


def gradproof_check(*options: str) -> int:
    """Run ``gradproof check`` on the example model, print its output, return its exit code."""
    command = [sys.executable, "-m", "gradproof", "check", str(MODEL), *options]
    done = subprocess.run(command, capture_output=True, text=True, check=False, cwd=out)
    print(done.stdout, end="")
    print(done.stderr, end="")
    print(f"[exit code {done.returncode}]")
    return done.returncode


# --8<-- [start:wrong]
# The gradient with an off-by-one: exit code 1, and three report files.
gradproof_check(
    "--loss", "loss", "--grad", "grad", "--params", "params",
    "--json-out", "report.json", "--html", "report.html", "--plots", "figures",
)  # fmt: skip
# --8<-- [end:wrong]
print()

# --8<-- [start:files]
print("files written:")
for path in sorted(out.rglob("*")):
    if path.is_file():
        print(f"  {path.relative_to(out).as_posix()}")
# --8<-- [end:files]
print()

# --8<-- [start:json]
report = json.loads((out / "report.json").read_text(encoding="utf-8"))
print("schema version:", report["schema_version"], "| verdict:", report["verdict"])
print("suspects:", report["suspects"], "| gradproof", report["gradproof_version"])
print("strategy:", report["mode"], "| evaluations:", report["n_evals"], "| step:", report["step"])
W1 = next(p for p in report["params"] if p["name"] == "W1")
print("W1 diagnosis:", W1["diagnosis"]["kind"], "- axis", W1["diagnosis"]["axis"])
print("W1 wrong entries:", [entry["name"] for entry in W1["failures"]])
first = W1["failures"][0]
print(f"  {first['name']}: analytic {first['analytic']}, numeric {first['numeric']:.6f}")
# --8<-- [end:json]
print()

# --8<-- [start:fixed]
# The fixed gradient: exit code 0.
gradproof_check("--loss", "loss", "--grad", "grad_fixed", "--params", "params")
# --8<-- [end:fixed]
print()

# --8<-- [start:kinks]
# |w| at w = 0: nothing is wrong, but half the entries cannot be judged. Exit code 3.
gradproof_check("--loss", "abs_loss", "--grad", "abs_grad", "--params", "sparse_params")
# --8<-- [end:kinks]
