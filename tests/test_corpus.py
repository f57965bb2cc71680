"""Ground truth of gradproof.corpus: its correct gradients are exact and its bugs are as declared.

The correct hand-written numpy gradients are compared with PyTorch autograd on
independent float64 re-implementations of the same losses (written here, with
torch's own layers where it has them: conv1d, batch_norm, cross_entropy,
embedding, scaled_dot_product_attention). Every planted bug is compared with
the correct gradient, parameter by parameter, and its declared kind is
checked against the actual pattern of the error.

gradproof's verdicts are deliberately not asserted here: the corpus is the
yardstick for them, not the other way round.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from gradproof import corpus
from gradproof.corpus import KINDS, Bug, Case
from gradproof.corpus._types import BugSpec, check_bug_name

CASES = corpus.cases()
BUGS = corpus.bugs()
CASE_IDS = [case.name for case in CASES]
BUG_IDS = [f"{case.name}/{bug.name}" for case, bug in BUGS]

# float64 round-off: the two implementations sum in different orders, so they agree to
# a few units of 1e-16 relative to the largest entry of each gradient; 1e-10 leaves a
# wide margin while still catching any real difference (the bugs differ by > 1e-2).
RTOL = 1e-10


def _evaluate(case: Case, fn: Callable[[Any], Any]) -> Any:
    """Call ``fn(case.params)`` with numpy's legacy generator seeded as the case requires."""
    if case.seed is None:
        return fn(case.params)
    state = np.random.get_state()  # noqa: NPY002 (restored below: other tests are unaffected)
    try:
        np.random.seed(case.seed)  # noqa: NPY002 (what a checker's seed= option does)
        return fn(case.params)
    finally:
        np.random.set_state(state)  # noqa: NPY002


def _dropout_mask(case: Case, shape: tuple[int, ...]) -> np.ndarray:
    """Draw the dropout mask the way the numpy loss does, from the case's seed."""
    state = np.random.get_state()  # noqa: NPY002
    try:
        np.random.seed(case.seed)  # noqa: NPY002
        mask: np.ndarray = np.random.rand(*shape) < case.data["keep_prob"]  # noqa: NPY002
        return mask
    finally:
        np.random.set_state(state)  # noqa: NPY002


# -- independent torch re-implementations ------------------------------------------------------


def _torch_losses(torch: Any) -> dict[str, Callable[[dict[str, Any], Case], Any]]:
    """Each case's loss in torch (float64), keyed by case name."""
    F = torch.nn.functional

    def t(array: Any) -> Any:
        return torch.as_tensor(np.array(array))  # a writable copy of the read-only data

    def relu0(z: Any) -> Any:
        # The subgradient convention of the corpus, written out: relu'(0) = 0.
        return torch.where(z > 0, z, torch.zeros_like(z))

    def course_network(p, case):
        X, Y = t(case.data["X"]), t(case.data["Y"]).double()
        A1 = relu0(p["W1"] @ X + p["b1"])
        A2 = relu0(p["W2"] @ A1 + p["b2"])
        A3 = torch.sigmoid(p["W3"] @ A2 + p["b3"])
        return -(Y * torch.log(A3) + (1 - Y) * torch.log(1 - A3)).mean()

    def softmax_classifier(p, case):
        logits = t(case.data["X"]) @ p["W"] + p["b"]
        return F.cross_entropy(logits, t(case.data["labels"]))

    def l2_mlp(p, case):
        X, y, lam = t(case.data["X"]), t(case.data["y"]), case.data["lambd"]
        A2 = torch.tanh(torch.tanh(X @ p["W1"] + p["b1"]) @ p["W2"] + p["b2"])
        logits = A2 @ p["W3"] + p["b3"]
        decay = sum((p[k] ** 2).sum() for k in ("W1", "W2", "W3"))
        return F.binary_cross_entropy_with_logits(logits, y) + lam / (2 * len(X)) * decay

    def dropout_mlp(p, case):
        X, y, keep = t(case.data["X"]), t(case.data["y"]), case.data["keep_prob"]
        mask = t(_dropout_mask(case, (X.shape[0], p["W1"].shape[1])))
        D1 = relu0(X @ p["W1"] + p["b1"]) * mask / keep
        return F.binary_cross_entropy_with_logits(D1 @ p["W2"] + p["b2"], y)

    def batchnorm(p, case):
        Z = t(case.data["X"]) @ p["W"]
        Y = F.batch_norm(
            Z, None, None, p["gamma"], p["beta"], training=True, eps=case.data["bn_eps"]
        )
        return 0.5 * ((torch.tanh(Y) @ p["v"] - t(case.data["t"])) ** 2).mean()

    def conv1d(p, case):
        Y = F.conv1d(t(case.data["X"]), p["K"], p["b"])
        return 0.5 * ((torch.tanh(Y) - t(case.data["T"])) ** 2).mean()

    def tanh_rnn(p, case):
        tokens, targets = case.data["tokens"], t(case.data["targets"])
        h = torch.zeros(p["Wh"].shape[0], dtype=torch.float64)
        total = torch.zeros((), dtype=torch.float64)
        for step, token in enumerate(tokens):
            x = F.one_hot(t(token), p["Wx"].shape[0]).double()  # the token as a one-hot row
            h = torch.tanh(x @ p["Wx"] + h @ p["Wh"] + p["b"])
            total = total + ((h @ p["V"] - targets[step]) ** 2).sum()
        return 0.5 * total / len(tokens)

    def attention(p, case):
        Xp = t(case.data["X"]) + p["P"]
        out = F.scaled_dot_product_attention(Xp @ p["Wq"], Xp @ p["Wk"], Xp @ p["Wv"])
        return 0.5 * ((out - t(case.data["targets"])) ** 2).mean()

    def embedding(p, case):
        X = F.embedding(t(case.data["tokens"]), p["E"])
        return F.cross_entropy(X @ p["W"] + p["b"], t(case.data["labels"]))

    def relu_regression(p, case):
        A1 = relu0(t(case.data["X"]) @ p["W1"] + p["b1"])
        r = A1 @ p["W2"] + p["b2"] - t(case.data["y"])
        return 0.5 * (r**2).sum(dim=1).mean()

    def maxpool_ties(p, case):
        Y = F.conv1d(t(case.data["X"]), p["K"], p["b"])
        pairs = Y.reshape(*Y.shape[:2], -1, 2)
        # torch.argmax returns the first maximal index, the corpus's convention at ties;
        # gather sends the whole gradient of each window to that entry.
        first = torch.argmax(pairs.detach(), dim=-1, keepdim=True)
        M = pairs.gather(-1, first)[..., 0]
        return 0.5 * ((torch.tanh(M) - t(case.data["T"])) ** 2).mean()

    def abs_at_zero(p, case):
        r = t(case.data["X"]) @ p["w"] + p["b"] - t(case.data["y"])
        # torch.abs's gradient is sgn(w), 0 at w = 0: the corpus's subgradient convention.
        return 0.5 * (r**2).mean() + case.data["l1"] * p["w"].abs().sum()

    def tanh_mlp(p, case):
        A1 = torch.tanh(t(case.data["X"]).double() @ p["W1"] + p["b1"])
        return F.cross_entropy(A1 @ p["W2"] + p["b2"], t(case.data["labels"]))

    def saturated_logistic(p, case):
        z = t(case.data["X"]) @ p["w"] + p["b"]
        # The same function written stably: the corpus's gradient is exact for the math.
        return F.binary_cross_entropy_with_logits(z, t(case.data["y"]))

    def tanh_regression(p, case):
        A1 = torch.tanh(t(case.data["X"]) @ p["W1"] + p["b1"])
        return 0.5 * ((A1 @ p["w2"] + p["b2"] - t(case.data["y"])) ** 2).mean()

    return {
        "course-network": course_network,
        "softmax-classifier": softmax_classifier,
        "l2-mlp": l2_mlp,
        "dropout-mlp": dropout_mlp,
        "batchnorm": batchnorm,
        "conv1d": conv1d,
        "tanh-rnn": tanh_rnn,
        "attention": attention,
        "embedding": embedding,
        "relu-exact-zero": relu_regression,
        "relu-near-zero": relu_regression,
        "dead-relu": relu_regression,
        "maxpool-ties": maxpool_ties,
        "abs-at-zero": abs_at_zero,
        "float32-mlp": tanh_mlp,
        "large-mlp": tanh_mlp,
        "saturated-logistic": saturated_logistic,
        "large-scale": tanh_regression,
        "small-scale": tanh_regression,
    }


def _torch_gradient(case: Case) -> tuple[float, dict[str, np.ndarray]]:
    torch = pytest.importorskip("torch")
    losses = _torch_losses(torch)
    assert case.name in losses, f"no torch re-implementation of {case.name}"
    params = {
        key: torch.tensor(np.asarray(value, dtype=np.float64), requires_grad=True)
        for key, value in case.params.items()
    }
    loss = losses[case.name](params, case)
    loss.backward()
    return float(loss.detach()), {key: value.grad.numpy() for key, value in params.items()}


def test_every_case_has_a_torch_reimplementation():
    torch = pytest.importorskip("torch")
    assert set(_torch_losses(torch)) == set(CASE_IDS)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_correct_gradient_equals_torch_autograd(case):
    reference_loss, reference = _torch_gradient(case)
    ours = _evaluate(case, case.grad)
    loss = _evaluate(case, case.loss)
    assert list(ours) == list(case.params)
    if case.name == "float32-mlp":
        # float32 arithmetic against torch's float64 on the same (float32) point: float32
        # round-off, about 1e-7 relative per operation, a few dozen operations deep.
        rtol, loss_rtol = 1e-4, 1e-5
    elif case.name == "saturated-logistic":
        # The naive log(1 - sigmoid(z)) keeps only ~3 digits of 1 - s at z = 30 (the point
        # of the case): an error of ~1e-3 in one log, 1.5e-5 relative in the mean of 8.
        # torch's stable loss is the exact value. The gradients do not suffer: s - y.
        rtol, loss_rtol = RTOL, 1e-4
    else:
        rtol, loss_rtol = RTOL, 1e-12
    assert loss == pytest.approx(reference_loss, rel=loss_rtol)
    for key, expected in reference.items():
        got = np.asarray(ours[key])
        assert got.shape == case.params[key].shape
        assert got.dtype == case.params[key].dtype
        scale = float(np.max(np.abs(expected)))
        np.testing.assert_allclose(got, expected, rtol=rtol, atol=rtol * scale, err_msg=key)


# -- the planted bugs --------------------------------------------------------------------------


def _differs(bad: np.ndarray, good: np.ndarray) -> np.ndarray:
    """Entries that differ by more than round-off, relative to the parameter's largest entry."""
    scale = max(float(np.max(np.abs(good))), float(np.max(np.abs(bad))))
    out: np.ndarray = np.abs(bad - good) > 1e-12 * scale
    return out


@pytest.mark.parametrize(("case", "bug"), BUGS, ids=BUG_IDS)
def test_bug_is_wrong_exactly_in_its_declared_parameters(case, bug):
    good = _evaluate(case, case.grad)
    bad = _evaluate(case, bug.grad)
    assert list(bad) == list(good)
    for key in good:
        if key in bug.wrong:
            size = max(float(np.max(np.abs(good[key]))), float(np.max(np.abs(bad[key]))))
            assert float(np.max(np.abs(bad[key] - good[key]))) > 1e-6 * size, key
        else:
            np.testing.assert_array_equal(bad[key], good[key], strict=True, err_msg=key)


def _fits_scale(bad: np.ndarray, good: np.ndarray) -> float | None:
    """The factor k with bad = k * good, or None when no constant factor fits."""
    if not np.any(good):
        return None
    k = float(np.vdot(bad, good) / np.vdot(good, good))
    scale = float(np.max(np.abs(good)))
    return k if np.allclose(bad, k * good, rtol=1e-9, atol=1e-12 * scale) else None


def _fits_transpose(bad: np.ndarray, good: np.ndarray) -> bool:
    for i in range(good.ndim):
        for j in range(i + 1, good.ndim):
            swapped = np.swapaxes(good, i, j)
            if swapped.shape == bad.shape and np.allclose(bad, swapped, rtol=1e-9, atol=0):
                return True
    return False


def _simple_pattern(bad: np.ndarray, good: np.ndarray) -> str | None:
    """The simplest family that explains one parameter's error, if any."""
    if not np.any(bad):
        return "zero"
    k = _fits_scale(bad, good)
    if k is not None:
        return "sign" if np.isclose(k, -1, rtol=1e-9) else "scale"
    if _fits_transpose(bad, good):
        return "transpose"
    if np.mean(_differs(bad, good)) <= 0.5:
        return "few_entries"
    return None


@pytest.mark.parametrize(("case", "bug"), BUGS, ids=BUG_IDS)
def test_bug_kind_matches_the_error_pattern(case, bug):
    assert bug.kind in KINDS
    good = _evaluate(case, case.grad)
    bad = _evaluate(case, bug.grad)
    patterns = {key: _simple_pattern(bad[key], good[key]) for key in bug.wrong}
    if bug.kind == "swapped":
        first, second = sorted(bug.wrong)
        np.testing.assert_array_equal(bad[first], good[second])
        np.testing.assert_array_equal(bad[second], good[first])
    elif bug.kind in {"zero", "sign", "scale", "transpose", "few_entries"}:
        assert set(patterns.values()) == {bug.kind}, patterns
        if bug.kind == "zero":
            assert all(np.any(good[key]) for key in bug.wrong)  # zero is really wrong
    else:  # "axis" and "unknown": no simpler family may explain every wrong parameter
        assert None in patterns.values(), patterns


def test_axis_bugs_have_their_axis_structure():
    found = {f"{case.name}/{bug.name}": (case, bug) for case, bug in BUGS if bug.kind == "axis"}
    case, bug = found["attention/dP-reduced-over-positions"]
    bad = bug.grad(case.params)["P"]
    assert np.all(bad == bad[0])  # constant along the position axis
    case, bug = found["conv1d/dK-taps-reversed"]
    np.testing.assert_allclose(
        bug.grad(case.params)["K"], case.grad(case.params)["K"][..., ::-1], rtol=1e-12
    )
    case, bug = found["batchnorm/dbeta-summed-over-features"]
    assert case.params["beta"].shape == (len(case.data["X"]),)  # why the shapes match


def test_assignment_bug_is_the_shipped_backward_pass():
    case, bug = next((c, b) for c, b in BUGS if b.name == "assignment-shipped")
    good, bad = case.grad(case.params), bug.grad(case.params)
    np.testing.assert_allclose(bad["W2"], 2 * good["W2"], rtol=1e-15)
    np.testing.assert_allclose(bad["b1"], 4 * good["b1"], rtol=1e-15)


def test_every_kind_is_planted_and_every_ordinary_case_has_bugs():
    assert {bug.kind for _, bug in BUGS} == set(KINDS)
    per_case = {case.name: 0 for case in CASES}
    for case, _ in BUGS:
        per_case[case.name] += 1
    for case in CASES:
        if case.hard_point:
            assert per_case[case.name] == 0, case.name
        else:
            assert 2 <= per_case[case.name] <= 4, case.name


def test_bug_names_are_unique_within_a_case():
    keys = [(case.name, bug.name) for case, bug in BUGS]
    assert len(set(keys)) == len(keys)
    assert all(bug.case == case.name for case, bug in BUGS)


def test_a_backward_pass_refuses_an_unknown_bug():
    with pytest.raises(ValueError, match="unknown bug 'typo'"):
        check_bug_name("typo", (BugSpec("dW-sign", "sign", ("W",), "..."),))


# -- the corpus as a whole ---------------------------------------------------------------------


def test_case_names_are_unique_and_found_by_get_case():
    assert len(set(CASE_IDS)) == len(CASE_IDS)
    for name in CASE_IDS:
        assert corpus.get_case(name).name == name


def test_get_case_lists_the_known_names():
    with pytest.raises(KeyError, match="no corpus case named 'nope'") as info:
        corpus.get_case("nope")
    for name in CASE_IDS:
        assert name in str(info.value)


def test_building_twice_gives_identical_points_and_data():
    again = corpus.cases()
    for first, second in zip(CASES, again, strict=True):
        assert first.name == second.name
        assert list(first.params) == list(second.params)
        for key in first.params:
            assert first.params[key] is not second.params[key]  # fresh arrays
            np.testing.assert_array_equal(first.params[key], second.params[key], strict=True)
        assert list(first.data) == list(second.data)
        for key, value in first.data.items():
            np.testing.assert_array_equal(value, second.data[key], strict=True)
        assert _evaluate(first, first.loss) == _evaluate(second, second.loss)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_case_is_well_formed(case):
    assert case.description and "\n" not in case.description
    assert isinstance(case.params, dict)
    dtype = np.float32 if "float32" in case.tags else np.float64
    for value in case.params.values():
        assert isinstance(value, np.ndarray) and value.dtype == dtype
    for value in case.data.values():
        if isinstance(value, np.ndarray):
            assert not value.flags.writeable
    before = {key: value.copy() for key, value in case.params.items()}
    assert isinstance(_evaluate(case, case.loss), float)
    _evaluate(case, case.grad)
    for key, value in before.items():
        np.testing.assert_array_equal(case.params[key], value, strict=True)  # not modified


def test_dropout_loss_is_random_unless_seeded():
    (case,) = (c for c in CASES if c.seed is not None)
    assert "random" in case.tags
    seeded = {_evaluate(case, case.loss) for _ in range(3)}
    assert len(seeded) == 1
    state = np.random.get_state()  # noqa: NPY002
    try:
        unseeded = {case.loss(case.params) for _ in range(5)}
    finally:
        np.random.set_state(state)  # noqa: NPY002
    assert len(unseeded) > 1


# -- the hard points are where they claim to be ------------------------------------------------


def test_relu_kinks_are_exactly_and_nearly_zero():
    for name, low, high in (("relu-exact-zero", 0.0, 0.0), ("relu-near-zero", 5e-11, 2e-10)):
        case = corpus.get_case(name)
        Z1 = case.data["X"] @ case.params["W1"] + case.params["b1"]
        near = np.abs(Z1) <= 1e-9
        assert np.count_nonzero(near) == 3
        assert np.all((np.abs(Z1[near]) >= low) & (np.abs(Z1[near]) <= high))
        assert np.min(np.abs(Z1[~near])) >= 0.1


def test_maxpool_has_tied_windows():
    case = corpus.get_case("maxpool-ties")
    X, K, b = case.data["X"], case.params["K"], case.params["b"]
    windows = np.lib.stride_tricks.sliding_window_view(X, K.shape[-1], axis=2)
    Y = np.einsum("bctj,ocj->bot", windows, K) + b[:, None]
    pairs = Y.reshape(*Y.shape[:2], -1, 2)
    assert np.count_nonzero(pairs[..., 0] == pairs[..., 1]) >= 2


def test_other_hard_points_hold():
    assert np.count_nonzero(corpus.get_case("abs-at-zero").params["w"] == 0.0) == 3
    case = corpus.get_case("saturated-logistic")
    z = case.data["X"] @ case.params["w"] + case.params["b"]
    assert np.max(z[case.data["y"] == 0]) == pytest.approx(30)
    case = corpus.get_case("dead-relu")
    grads = case.grad(case.params)
    dead = np.all(grads["W1"] == 0, axis=0)
    assert dead.tolist() == [False, True, False, False, True, False]
    assert not np.any(grads["W2"][dead])
    assert sum(v.size for v in corpus.get_case("large-mlp").params.values()) == 3128
    assert abs(corpus.get_case("large-scale").loss(corpus.get_case("large-scale").params)) > 1e10
    assert 0 < corpus.get_case("small-scale").loss(corpus.get_case("small-scale").params) < 1e-10
    for case in CASES:
        assert case.hard_point == bool(
            case.tags & {"kink", "float32", "noise", "scale", "large", "dead"}
        )


def test_bug_records_are_frozen():
    case, bug = BUGS[0]
    assert isinstance(bug, Bug)
    with pytest.raises(AttributeError):
        bug.kind = "sign"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        case.name = "other"  # type: ignore[misc]
