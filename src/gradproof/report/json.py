"""The JSON report of a check: a versioned document for machines and CI jobs.

The document is :meth:`CheckResult.to_dict` plus what a reader needs to trust
it later: the schema version, gradproof's, numpy's and Python's versions, when
it was made, the one-line verdict the terminal shows, and, per parameter, the
chance that sampling missed a bug. Its schema is
``gradproof/schemas/report-v1.schema.json`` (see :func:`schema_path`); a change
that removes or retypes a field bumps :data:`REPORT_SCHEMA_VERSION`.
"""

from __future__ import annotations

import datetime
import json
import math
import platform
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from gradproof.results import CheckResult

__all__ = ["REPORT_SCHEMA_VERSION", "result_to_json", "schema_path", "to_json_text", "write_json"]

REPORT_SCHEMA_VERSION = "1"
"""Version of the JSON report's schema (``schema_version`` in every document)."""


def schema_path() -> Path:
    """Return the path of the JSON Schema that the reports of this version follow.

    Returns
    -------
    Path
        ``.../gradproof/schemas/report-v1.schema.json``, shipped with the package.
    """
    return Path(__file__).resolve().parent.parent / "schemas" / "report-v1.schema.json"


def _finite(value: Any) -> Any:
    """Replace non-finite floats, anywhere in a JSON-ready value, with None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value


def result_to_json(
    result: CheckResult, *, extra: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Return the JSON report of a check as a JSON-ready dict.

    Parameters
    ----------
    result : CheckResult
        The result to report.
    extra : mapping, optional
        What was checked, e.g. ``{"target": "model.py", "loss": "loss"}``;
        stored under ``"context"`` (JSON-ready values only).

    Returns
    -------
    dict
        The document described by :func:`schema_path`: every field of
        :meth:`CheckResult.to_dict`, plus ``schema_version``, ``headline``,
        ``gradproof_version``, ``numpy_version``, ``python_version``,
        ``created`` (ISO 8601, UTC), ``context`` and, per parameter,
        ``miss_chance_1pct`` (the chance that entry sampling
        missed a bug touching 1 % of the tensor; null for directional probes).

    Examples
    --------
    >>> import numpy as np, gradproof
    >>> result = gradproof.check(lambda w: np.sum(w**2), lambda w: 2 * w, np.ones(3))
    >>> doc = result_to_json(result)
    >>> doc["schema_version"], doc["verdict"]
    ('1', 'pass')
    """
    from gradproof import __version__
    from gradproof.report.text import _headline

    document: dict[str, Any] = {
        "schema_version": REPORT_SCHEMA_VERSION,
        "headline": _headline(result),
        "gradproof_version": __version__,
        "numpy_version": np.__version__,
        "python_version": platform.python_version(),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "context": dict(extra) if extra else {},
    }
    document.update(result.to_dict())
    for report, entry in zip(result.params, document["params"], strict=True):
        entry["miss_chance_1pct"] = (
            None if report.strategy == "directional" else report.miss_chance(0.01)
        )
    finite: dict[str, Any] = _finite(document)
    return finite


def to_json_text(result: CheckResult, *, extra: Mapping[str, Any] | None = None) -> str:
    """Return the JSON report as text (indented, strict JSON: no NaN).

    Parameters
    ----------
    result : CheckResult
        The result to report.
    extra : mapping, optional
        See :func:`result_to_json`.

    Returns
    -------
    str
        The document, ending with a newline.
    """
    return json.dumps(result_to_json(result, extra=extra), indent=2, allow_nan=False) + "\n"


def write_json(
    result: CheckResult, path: str | Path, *, extra: Mapping[str, Any] | None = None
) -> Path:
    """Write the JSON report of a check to a file.

    Parameters
    ----------
    result : CheckResult
        The result to report.
    path : str or Path
        Where to write it (its folder must exist).
    extra : mapping, optional
        See :func:`result_to_json`.

    Returns
    -------
    Path
        The path written.
    """
    out = Path(path)
    out.write_text(to_json_text(result, extra=extra), encoding="utf-8")
    return out
