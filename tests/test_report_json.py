"""The JSON report: its versioned schema, validated against real results of every kind."""

from __future__ import annotations

import copy
import json
import math
import zlib
from pathlib import Path

import numpy as np
import pytest

import gradproof
from gradproof.corpus import get_case
from gradproof.report.json import (
    REPORT_SCHEMA_VERSION,
    result_to_json,
    schema_path,
    to_json_text,
    write_json,
)

jsonschema = pytest.importorskip("jsonschema")


@pytest.fixture(scope="module")
def validator():
    schema = json.loads(schema_path().read_text(encoding="utf-8"))
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def quadratic_loss(p):
    return float(np.sum(p["W"] ** 2) + np.sum(p["b"] ** 3))


def quadratic_grad(p):
    return {"W": 2 * p["W"], "b": 3 * p["b"] ** 2}


def doubled_grad(p):
    return {"W": 4 * p["W"], "b": 3 * p["b"] ** 2}


POINT = {"W": np.arange(1.0, 13.0).reshape(3, 4) / 10, "b": np.array([0.5, -1.0])}


def results():
    kink = get_case("abs-at-zero")
    return {
        "pass": gradproof.check(quadratic_loss, quadratic_grad, POINT),
        "fail": gradproof.check(quadratic_loss, doubled_grad, POINT),
        "kink": gradproof.check(kink.loss, kink.grad, kink.params),
        "directional": gradproof.check(quadratic_loss, doubled_grad, POINT, mode="directional"),
        "sampled": gradproof.check(
            quadratic_loss, quadratic_grad, POINT, mode="sampled", n_samples=4, seed=0
        ),
    }


@pytest.fixture(scope="module")
def documents():
    return {name: result_to_json(result) for name, result in results().items()}


@pytest.mark.parametrize("name", ["pass", "fail", "kink", "directional", "sampled"])
def test_real_results_validate(validator, documents, name):
    document = documents[name]
    validator.validate(document)
    # Strict JSON: the document survives a round trip with NaN forbidden.
    assert json.loads(json.dumps(document, allow_nan=False)) == document


def test_documents_carry_what_the_terminal_shows(documents):
    failed = documents["fail"]
    assert failed["schema_version"] == REPORT_SCHEMA_VERSION == "1"
    assert failed["verdict"] == "fail"
    assert failed["headline"] == "gradproof: WRONG: 1 of 2 parameters has a wrong gradient: W"
    assert failed["gradproof_version"] == gradproof.__version__
    assert failed["numpy_version"] == np.__version__
    assert failed["created"].endswith("+00:00")
    w = failed["params"][0]
    assert (w["name"], w["shape"], w["verdict"]) == ("W", [3, 4], "fail")
    assert w["diagnosis"]["kind"] == "scale"
    assert w["diagnosis"]["hint"]
    assert w["worst"]["analytic"] == pytest.approx(2 * w["worst"]["numeric"], rel=1e-6)
    assert w["failures"][0]["tolerance"] > 0
    assert failed["n_evals"] > 0
    assert failed["seconds"] >= 0
    assert failed["step"].startswith("relative")

    kink = documents["kink"]
    assert kink["verdict"] == "inconclusive"
    reasons = {e["reason"] for p in kink["params"] for e in p["inconclusive_entries"]}
    assert reasons == {"kink"}

    directional = documents["directional"]
    assert directional["mode"] == "directional"
    assert all(p["probes"] for p in directional["params"])
    assert all(p["miss_chance_1pct"] is None for p in directional["params"])

    sampled = documents["sampled"]
    assert sampled["mode"] == "sampled"
    assert any(0 < p["miss_chance_1pct"] <= 1 for p in sampled["params"])
    assert documents["pass"]["params"][0]["miss_chance_1pct"] == 0


def test_entries_and_probes_carry_their_error_bars(documents):
    """The tolerance is atol + rtol * max(|a|, |n|) + the finite difference's error bar."""
    failed = documents["fail"]
    entries = [e for p in failed["params"] for e in [p["worst"], *p["failures"]] if e]
    assert entries
    for e in entries:
        assert 0 < e["error_bar"] < e["tolerance"]
        scale = max(abs(e["analytic"]), abs(e["numeric"]))
        assert e["tolerance"] == pytest.approx(
            failed["atol"] + failed["rtol"] * scale + e["error_bar"], rel=1e-9
        )
    probes = [q for p in documents["directional"]["params"] for q in p["probes"]]
    assert probes and all(0 < q["error_bar"] < q["tolerance"] for q in probes)


def test_error_bars_grow_with_the_losss_noise():
    rng = np.random.default_rng(0)
    # A fixed table of noise, indexed by the point: deterministic, as the check requires.
    table = rng.uniform(-1, 1, size=4096)

    def noisy(level):
        def loss(p):
            key = zlib.crc32(p["W"].tobytes() + p["b"].tobytes()) % table.size
            return quadratic_loss(p) + level * table[key]

        return loss

    bars = []
    # Noise is measured when a verdict depends on it (1e-12 here would not be): 1e-10 and 1e-9
    # make the first estimates of some entries fail, the ladder runs, and every bar widens.
    for level in (0.0, 1e-10, 1e-9):
        document = result_to_json(gradproof.check(noisy(level), quadratic_grad, POINT))
        assert document["verdict"] == "pass"
        bars.append(np.median([p["worst"]["error_bar"] for p in document["params"]]))
    assert bars[0] < bars[1] < bars[2]
    assert bars[2] > 10 * bars[0]


def test_extra_goes_to_context(validator):
    result = gradproof.check(quadratic_loss, quadratic_grad, POINT)
    document = result_to_json(result, extra={"target": "model.py", "loss": "loss"})
    validator.validate(document)
    assert document["context"] == {"target": "model.py", "loss": "loss"}


def test_non_finite_values_become_null(validator):
    result = gradproof.check(lambda w: float(np.sum(w**2)), lambda w: 2 * w, np.zeros(3))
    document = result_to_json(result)
    assert document["margin"] is None or math.isfinite(document["margin"])
    assert "NaN" not in to_json_text(result)
    validator.validate(document)


def test_write_json(tmp_path):
    result = gradproof.check(quadratic_loss, quadratic_grad, POINT)
    path = write_json(result, tmp_path / "report.json")
    assert json.loads(path.read_text())["verdict"] == "pass"


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d.pop("verdict"),
        lambda d: d.update(verdict="maybe"),
        lambda d: d.update(schema_version="2"),
        lambda d: d.update(mode="everything"),
        lambda d: d.update(n_evals=-1),
        lambda d: d.update(unexpected_field=1),
        lambda d: d["params"][0].update(shape="3x4"),
        lambda d: d["params"][0]["diagnosis"].update(kind="cosmic-ray"),
        lambda d: d["params"][0]["failures"][0].pop("tolerance"),
        lambda d: d["params"][0].update(strategy="guess"),
    ],
    ids=[
        "missing-verdict",
        "bad-verdict",
        "bad-version",
        "bad-mode",
        "negative-count",
        "unknown-field",
        "bad-shape",
        "bad-diagnosis-kind",
        "entry-missing-tolerance",
        "bad-strategy",
    ],
)
def test_invalid_documents_are_rejected(validator, documents, mutate):
    document = copy.deepcopy(documents["fail"])
    mutate(document)
    with pytest.raises(jsonschema.ValidationError):
        validator.validate(document)


def test_the_schema_ships_in_the_package():
    path = schema_path()
    assert path.is_file()
    assert path.parent.parent == Path(gradproof.__file__).parent
