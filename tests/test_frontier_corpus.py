"""The frontier corpus: every correct gradient agrees with PyTorch's autograd."""

from __future__ import annotations

import numpy as np
import pytest

from gradproof.corpus import frontier

torch = pytest.importorskip("torch")
F = torch.nn.functional


def _t(a):
    return torch.tensor(np.asarray(a, dtype=np.float64), requires_grad=True)


def _maxpool1d(p, data):
    x = _t(p["x"])
    w = torch.tensor(data["w"])
    loss = (w * F.max_pool1d(x[None, None], 2, 1)[0, 0]).sum() + 0.25 * (x**2).sum()
    return loss, {"x": x}


def _maxpool2d(p, data):
    x = _t(p["x"])
    w = torch.tensor(data["w"])
    return (w * F.max_pool2d(x[None, None], 2, 1)[0, 0]).sum(), {"x": x}


def _knots(p, data):
    t = {k: _t(v) for k, v in p.items()}
    X, y = torch.tensor(data["X"]), torch.tensor(data["y"])
    pred = torch.relu(X @ t["W1"] + t["b1"]) @ t["W2"]
    return 0.5 * ((pred - y) ** 2).sum(), t


def _hinge(p, data):
    x = _t(p["x"])
    return F.hinge_embedding_loss(x, torch.tensor(p["y"]), margin=1.0), {"x": x}


def _cosine(p, data):
    x = _t(p["x"])
    loss = F.cosine_embedding_loss(x, torch.tensor(data["b"]), torch.tensor(p["y"]))
    return loss, {"x": x}


def _regression(p, data):
    t = {k: _t(v) for k, v in p.items()}
    X, y = torch.tensor(data["X"]), torch.tensor(data["y"])
    return 0.5 * ((X @ t["W"] + t["b"] - y) ** 2).sum(dim=1).mean(), t


def _softmax(p, data):
    W = _t(p["W"])
    logits = torch.tensor(data["X"]) @ W
    return F.cross_entropy(logits, torch.tensor(data["labels"])), {"W": W}


def _smooth(fn):
    def run(p, data):
        x = _t(p["x"])
        return fn(x), {"x": x}

    return run


AUTOGRAD = {
    "maxpool1d-overlap-ties": _maxpool1d,
    "maxpool2d-overlap-ties": _maxpool2d,
    "relu-knots": _knots,
    "hinge-embedding-target": _hinge,
    "cosine-embedding-target": _cosine,
    "normaliser-regression": _regression,
    "softmax-temperature": _softmax,
    "least-squares-optimum": None,  # its data are not kept; checked analytically below
    "cumulative-logsumexp": _smooth(lambda x: torch.logcumsumexp(x, 0).sum()),
    "quartic-near-zero": _smooth(lambda x: 1 + (x**4).sum()),
    "cosine-stationary": _smooth(lambda x: 5 + torch.cos(x).sum()),
    "erfc-tail": _smooth(lambda x: 1 + torch.special.erfc(x).sum()),
    "power-at-edge": _smooth(lambda x: (x**1.5).sum()),
    "log-at-edge": _smooth(lambda x: (x * torch.log(x + 1) + torch.log(1 - x)).sum()),
}

CASES = [c for c in frontier.cases() if AUTOGRAD.get(c.name) is not None]


def test_every_frontier_case_has_an_autograd_twin_or_a_reason():
    assert {c.name for c in frontier.cases()} - {"integer-loss", "threshold-penalty"} == set(
        AUTOGRAD
    )


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_the_hand_written_gradient_is_autograds(case):
    loss, leaves = AUTOGRAD[case.name](case.params, case.data)
    np.testing.assert_allclose(float(loss.detach()), case.loss(case.params), rtol=1e-12)
    loss.backward()
    mine = case.grad(case.params)
    for name, leaf in leaves.items():
        # Exact conventions (first maximum, relu'(0) = 0) and the same arithmetic: only
        # round-off differs.
        np.testing.assert_allclose(mine[name], leaf.grad.numpy(), rtol=1e-9, atol=1e-12)


def test_the_least_squares_gradient_is_the_residual_times_the_data():
    case = next(c for c in frontier.cases() if c.name == "least-squares-optimum")
    x = case.params["x"]
    g = case.grad(case.params)["x"]
    # A directional second difference of a quadratic is exact up to round-off.
    for e in np.eye(3):
        h = 1e-3
        slope = (case.loss({"x": x + h * e}) - case.loss({"x": x - h * e})) / (2 * h)
        np.testing.assert_allclose(g @ e, slope, rtol=1e-6, atol=1e-6)


def test_the_several_kinks_cases_put_the_gradient_outside_the_one_sided_derivatives():
    # What makes the family hard: along the coordinate, the framework's value is outside
    # [left, right], which the single-kink rule would call wrong.
    case = next(c for c in frontier.cases() if c.name == "relu-knots")
    w, g = case.params["W1"], case.grad(case.params)["W1"][0, 0]
    h = 1e-6
    left_params = {**case.params, "W1": w.copy()}
    left_params["W1"][0, 0] -= h
    right_params = {**case.params, "W1": w.copy()}
    right_params["W1"][0, 0] += h
    f0 = case.loss(case.params)
    left = (f0 - case.loss(left_params)) / h
    right = (case.loss(right_params) - f0) / h
    assert g == 0.0
    assert min(left, right) > 0.5  # both one-sided slopes positive, 0 outside them
