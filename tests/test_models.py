"""Tests of gradproof.models: the network's gradients, the data, the CSV loader and the metrics."""

# The dropout contract is about numpy's legacy global generator, so the tests use it.
# ruff: noqa: NPY002

from __future__ import annotations

import numpy as np
import pytest

import gradproof
from gradproof import course
from gradproof.checking.check import NondeterministicLossError
from gradproof.errors import InputError
from gradproof.models import (
    BUGS,
    FEATURE_NAMES,
    FraudNetwork,
    PaymentData,
    Standardizer,
    average_precision,
    best_f1_threshold,
    bug_parameters,
    load_csv,
    make_payments,
    precision_recall_f1,
    roc_auc,
    split,
    write_csv,
)
from gradproof.models.payments import _fraud_score

# Agreement between two float64 evaluations of the same formula in a different order:
# a few hundred units of round-off on values of order 1.
ROUNDOFF = 1e-12


def _batch(n_features=6, m=64, seed=1):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((m, n_features))
    y = (rng.random(m) < 0.3).astype(np.int64)
    weights = rng.uniform(0.5, 3.0, m)
    return X, y, weights


def _check(net, params, X, y, weights=None, grad_net=None):
    grad_net = net if grad_net is None else grad_net
    return gradproof.check(
        lambda p: net.loss(p, X, y, sample_weight=weights),
        lambda p: grad_net.gradients(p, X, y, sample_weight=weights),
        params,
        seed=0,
    )


# -- the network: initialisation and the course's arithmetic -------------------------------------
def test_init_params_shapes_and_he_scale():
    net = FraudNetwork(sizes=(400, 300, 1))
    params = net.init_params(seed=0)
    assert {k: v.shape for k, v in params.items()} == {
        "W1": (300, 400),
        "b1": (300, 1),
        "W2": (1, 300),
        "b2": (1, 1),
    }
    # He: std sqrt(2 / fan_in); the sample std of 120,000 draws is within 1 % (0.2 % is 1 sigma).
    np.testing.assert_allclose(params["W1"].std(), np.sqrt(2 / 400), rtol=0.01)
    assert np.all(params["b1"] == 0.01)
    assert np.all(params["b2"] == 0.0)
    again = net.init_params(seed=0)
    assert all(np.array_equal(params[k], again[k]) for k in params)
    assert not np.array_equal(params["W1"], net.init_params(seed=1)["W1"])


def test_init_params_leaves_global_rng_alone():
    np.random.seed(5)
    expected = np.random.random()
    np.random.seed(5)
    FraudNetwork(sizes=(3, 4, 1)).init_params(seed=0)
    assert np.random.random() == expected


def test_loss_and_gradients_match_the_course_network():
    X, Y, parameters = course.gradient_check_n_test_case()
    cost, cache = course.forward_propagation_n(X, Y, parameters)
    expected = course.parameter_gradients(course.backward_propagation_n_corrected(X, Y, cache))
    net = FraudNetwork(sizes=(4, 5, 3, 1))
    np.testing.assert_allclose(net.loss(parameters, X.T, Y), cost, rtol=ROUNDOFF)
    grads = net.gradients(parameters, X.T, Y)
    assert list(grads) == list(course.PARAMETER_KEYS)
    for name in course.PARAMETER_KEYS:
        np.testing.assert_allclose(grads[name], expected[name], rtol=ROUNDOFF, atol=ROUNDOFF)


def test_l2_penalty_does_not_depend_on_batch_size():
    net = FraudNetwork(sizes=(3, 1), l2=0.5)
    params = {"W1": np.array([[1.0, 2.0, 2.0]]), "b1": np.array([[7.0]])}
    X = np.zeros((10, 3))
    y = np.zeros(10)
    plain = FraudNetwork(sizes=(3, 1)).loss(params, X, y)
    np.testing.assert_allclose(net.loss(params, X, y) - plain, 0.5 / 2 * 9.0, rtol=ROUNDOFF)
    np.testing.assert_allclose(net.loss(params, X[:2], y[:2]) - plain, 2.25, rtol=ROUNDOFF)


def test_predict_proba_is_the_probability_in_the_loss():
    net = FraudNetwork(sizes=(6, 5, 1), keep_prob=0.5)
    params = net.init_params(seed=3)
    X, _, _ = _batch()
    proba = net.predict_proba(params, X)
    assert proba.shape == (64,)
    assert np.all((proba > 0) & (proba < 1))
    # no dropout in predictions: the cost of one example labelled 1 is -log p
    one = net.loss(params, X[:1], [1], training=False)
    np.testing.assert_allclose(one, -np.log(proba[0]), rtol=ROUNDOFF)
    np.testing.assert_array_equal(net.predict_proba(params, X), proba)


def test_sample_weights_scale_each_example():
    net = FraudNetwork(sizes=(6, 4, 1))
    params = net.init_params(seed=0)
    X, y, _ = _batch(m=2)
    first = net.loss(params, X[:1], y[:1])
    second = net.loss(params, X[1:], y[1:])
    weighted = net.loss(params, X, y, sample_weight=[3.0, 0.0])
    np.testing.assert_allclose(weighted, 3.0 * first / 2, rtol=ROUNDOFF)
    assert second > 0


# -- the network: gradients pass gradproof's check ------------------------------------------------
@pytest.mark.parametrize(
    ("l2", "keep_prob", "weighted"),
    [
        (0.0, 1.0, False),
        (0.1, 1.0, False),
        (0.0, 0.8, False),
        (0.0, 1.0, True),
        (0.1, 0.8, True),
    ],
    ids=["plain", "l2", "dropout", "weights", "all"],
)
def test_gradients_pass_the_check(l2, keep_prob, weighted):
    net = FraudNetwork(sizes=(6, 5, 4, 1), l2=l2, keep_prob=keep_prob)
    X, y, weights = _batch()
    result = _check(net, net.init_params(seed=0), X, y, weights if weighted else None)
    assert result.passed, str(result)


def test_default_architecture_passes_the_check_with_dropout():
    net = FraudNetwork(sizes=(len(FEATURE_NAMES), 32, 16, 1), l2=1e-4, keep_prob=0.8)
    X, y, weights = _batch(n_features=len(FEATURE_NAMES))
    result = _check(net, net.init_params(seed=0), X, y, weights)
    assert result.passed, str(result)


def test_dropout_masks_follow_the_global_seed():
    net = FraudNetwork(sizes=(6, 8, 1), keep_prob=0.5)
    params = net.init_params(seed=0)
    X, y, _ = _batch()
    values = []
    for seed in (0, 0, 1):
        np.random.seed(seed)
        values.append(net.loss(params, X, y))
    assert values[0] == values[1] != values[2]
    no_dropout = FraudNetwork(sizes=(6, 8, 1)).loss(params, X, y)
    assert net.loss(params, X, y, training=False) == no_dropout


def test_dropout_without_seed_is_refused_by_the_check():
    net = FraudNetwork(sizes=(6, 8, 1), keep_prob=0.5)
    X, y, _ = _batch()
    with pytest.raises(NondeterministicLossError):
        gradproof.check(
            lambda p: net.loss(p, X, y), lambda p: net.gradients(p, X, y), net.init_params()
        )


def test_the_seeding_contract_gives_the_same_masks_to_loss_and_gradients():
    net = FraudNetwork(sizes=(6, 8, 1), keep_prob=0.5)
    params = net.init_params(seed=0)
    X, y, _ = _batch()
    np.random.seed(7)
    net.gradients(params, X, y)
    after_gradients = np.random.random()
    np.random.seed(7)
    net.loss(params, X, y)
    assert np.random.random() == after_gradients  # both drew exactly the same numbers


@pytest.mark.parametrize("bug", BUGS)
def test_each_planted_bug_is_caught_in_its_parameter(bug):
    net = FraudNetwork(sizes=(6, 5, 4, 1), l2=0.1, keep_prob=0.8)
    X, y, weights = _batch()
    result = _check(net, net.init_params(seed=0), X, y, weights, grad_net=net.with_bug(bug))
    assert result.passed is False
    assert result.suspects == bug_parameters(bug, net.n_layers)


def test_course_bugs_are_diagnosed_as_scale_errors():
    net = FraudNetwork(sizes=(6, 5, 4, 1))
    X, y, _ = _batch()
    result = _check(net, net.init_params(seed=0), X, y, grad_net=net.with_bug("dW2-doubled"))
    assert "2 ×" in result["W2"].diagnosis.summary


@pytest.mark.parametrize(
    ("net", "bug", "match"),
    [
        (FraudNetwork(sizes=(3, 1)), "dW2-doubled", "second layer"),
        (FraudNetwork(sizes=(3, 4, 1)), "no-l2-in-dW1", "l2"),
        (FraudNetwork(sizes=(3, 4, 1)), "dropout-mask-missing", "keep_prob < 1"),
        (FraudNetwork(sizes=(3, 4, 1)), "dW3-tripled", "'dW2-doubled', 'db1-times-4'"),
    ],
    ids=["no-W2", "no-l2", "no-dropout", "unknown"],
)
def test_with_bug_refuses_bugs_that_cannot_show(net, bug, match):
    with pytest.raises(InputError, match=match):
        net.with_bug(bug)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"sizes": (3, 4, 2)}, "ending in 1"),
        ({"sizes": (3,)}, "at least two"),
        ({"sizes": (3, 0, 1)}, "positive integer"),
        ({"sizes": (3, 1), "l2": -1.0}, "`l2`"),
        ({"sizes": (3, 1), "keep_prob": 0.0}, "`keep_prob`"),
        ({"sizes": (3, 1), "bug": "nope"}, "unknown bug"),
    ],
)
def test_network_validates_its_configuration(kwargs, match):
    with pytest.raises(InputError, match=match):
        FraudNetwork(**kwargs)


def test_loss_validates_its_arguments():
    net = FraudNetwork(sizes=(6, 4, 1))
    params = net.init_params()
    X, y, _ = _batch()
    with pytest.raises(InputError, match="has no 'W2'"):
        net.loss({"W1": params["W1"], "b1": params["b1"]}, X, y)
    with pytest.raises(InputError, match=r"`params\['W1'\]` has shape \(6, 4\)"):
        net.loss({**params, "W1": params["W1"].T}, X, y)
    with pytest.raises(InputError, match=r"expected \(m, 6\)"):
        net.loss(params, X.T, y)
    with pytest.raises(InputError, match="only 0 and 1"):
        net.loss(params, X, y + 1)
    with pytest.raises(InputError, match="non-negative"):
        net.gradients(params, X, y, sample_weight=-np.ones(64))


def test_loss_and_gradients_leave_params_unchanged():
    net = FraudNetwork(sizes=(6, 4, 1), l2=0.1, keep_prob=0.7)
    params = net.init_params()
    frozen = {k: v.copy() for k, v in params.items()}
    X, y, weights = _batch()
    net.loss(params, X, y, sample_weight=weights)
    net.gradients(params, X, y, sample_weight=weights)
    assert all(np.array_equal(params[k], frozen[k]) for k in params)


# -- synthetic payments ---------------------------------------------------------------------------
def test_make_payments_is_reproducible():
    first, again, other = make_payments(3_000, seed=4), make_payments(3_000, seed=4), None
    np.testing.assert_array_equal(first.X, again.X)
    np.testing.assert_array_equal(first.y, again.y)
    other = make_payments(3_000, seed=5)
    assert not np.array_equal(first.X, other.X)


@pytest.mark.parametrize("seed", range(5))
def test_fraud_rate_is_realistic(seed):
    data = make_payments(seed=seed)
    assert data.n == 20_000
    assert 0.01 <= data.fraud_rate <= 0.02


def test_fraud_rate_follows_the_argument():
    # 4 standard deviations of a Binomial(20_000, 0.05) share.
    np.testing.assert_allclose(
        make_payments(fraud_rate=0.05).fraud_rate, 0.05, atol=4 * np.sqrt(0.05 * 0.95 / 20_000)
    )


def test_features_follow_the_documented_distributions():
    data = make_payments(seed=0)
    X = dict(zip(data.feature_names, data.X.T, strict=True))
    assert data.feature_names == FEATURE_NAMES
    assert np.all((X["hour"] >= 0) & (X["hour"] < 24))
    assert np.all(X["account_age_days"] >= 0)
    assert np.all(X["tx_count_24h"] >= X["tx_count_1h"])
    for name in ("tx_count_1h", "foreign", "card_present"):
        assert np.array_equal(X[name], np.round(X[name]))
    one_hot = data.X[:, FEATURE_NAMES.index("category_grocery") :]
    np.testing.assert_array_equal(one_hot.sum(axis=1), 1.0)
    assert np.all(X["card_present"][X["category_digital"] == 1] == 0)


def test_fraud_rings_are_mostly_fraud_and_the_true_logit_ranks_well():
    data = make_payments(seed=0)
    X = dict(zip(data.feature_names, data.X.T, strict=True))
    amount = np.exp(X["log_amount"])
    takeover = (X["hour"] < 6) & (X["account_age_days"] < 60) & (amount > 50)
    card_test = (X["tx_count_1h"] >= 4) & (amount < 10)
    assert data.y[takeover].mean() > 0.8
    assert data.y[card_test].mean() > 0.5
    assert data.y[takeover | card_test].sum() > 0.5 * data.n_positive
    assert average_precision(data.y, _fraud_score(data.X)) > 0.6


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"n": 0}, "`n`"), ({"fraud_rate": 0.0}, "`fraud_rate`"), ({"fraud_rate": 0.7}, "(0, 0.5)")],
)
def test_make_payments_validates(kwargs, match):
    with pytest.raises(InputError, match=match):
        make_payments(**kwargs)


# -- data, split, standardiser -------------------------------------------------------------------
def _numbered(n=1_000, n_positive=20):
    """Data whose single feature is the row number, to follow rows through a split."""
    y = np.zeros(n, dtype=np.int64)
    y[:n_positive] = 1
    return PaymentData(X=np.arange(n, dtype=np.float64)[:, None], y=y, feature_names=("row",))


def test_split_is_a_stratified_partition():
    data = _numbered()
    train, val, test = split(data, seed=0)
    assert (train.n, val.n, test.n) == (700, 150, 150)
    assert (train.n_positive, val.n_positive, test.n_positive) == (14, 3, 3)
    rows = np.concatenate([part.X[:, 0] for part in (train, val, test)])
    np.testing.assert_array_equal(np.sort(rows), np.arange(1_000))
    for part in (train, val, test):  # labels travel with their rows
        np.testing.assert_array_equal(part.y, (part.X[:, 0] < 20).astype(np.int64))


def test_split_is_reproducible_and_seeded():
    data = _numbered()
    first = split(data, seed=3)
    np.testing.assert_array_equal(first[0].X, split(data, seed=3)[0].X)
    assert not np.array_equal(first[0].X, split(data, seed=4)[0].X)
    unstratified = split(data, seed=0, stratify=False, fractions=(0.5, 0.25, 0.25))
    assert [part.n for part in unstratified] == [500, 250, 250]


@pytest.mark.parametrize("fractions", [(0.5, 0.5), (0.7, 0.2, 0.2), (1.0, 0.0, 0.0)])
def test_split_validates_fractions(fractions):
    with pytest.raises(InputError, match="three positive numbers summing to 1"):
        split(_numbered(), fractions=fractions)


def test_payment_data_validates_and_freezes():
    data = PaymentData(X=np.array([[1.0], [2.0]]), y=np.array([0, 1]), feature_names=("a",))
    assert not data.X.flags.writeable and not data.y.flags.writeable
    with pytest.raises(InputError, match="one column per name"):
        PaymentData(X=np.ones((1, 2)), y=np.zeros(1, int), feature_names=("a",))
    with pytest.raises(InputError, match="only 0 and 1"):
        PaymentData(X=np.ones((1, 1)), y=np.array([2]), feature_names=("a",))
    with pytest.raises(InputError, match="row 0, column 'a' is nan"):
        PaymentData(X=np.array([[np.nan]]), y=np.zeros(1, int), feature_names=("a",))


def test_standardizer():
    X = np.array([[1.0, 5.0], [3.0, 5.0], [5.0, 5.0]])
    scaler = Standardizer.fit(X)
    np.testing.assert_allclose(scaler.mean, [3.0, 5.0], rtol=ROUNDOFF)
    np.testing.assert_allclose(scaler.scale, [np.sqrt(8 / 3), 1.0], rtol=ROUNDOFF)
    np.testing.assert_allclose(scaler.transform(X).mean(axis=0), 0.0, atol=ROUNDOFF)
    with pytest.raises(InputError, match=r"expected \(m, 2\)"):
        scaler.transform(np.ones((2, 3)))
    with pytest.raises(InputError, match="non-empty"):
        Standardizer.fit(np.ones((0, 2)))


# -- CSV files ------------------------------------------------------------------------------------
def test_csv_round_trip(tmp_path):
    data = make_payments(500, seed=2)
    path = tmp_path / "payments.csv"
    write_csv(data, path)
    loaded = load_csv(path)
    assert loaded.feature_names == data.feature_names
    np.testing.assert_array_equal(loaded.X, data.X)
    np.testing.assert_array_equal(loaded.y, data.y)


def test_load_csv_reads_a_hand_written_file(tmp_path):
    path = tmp_path / "mine.csv"
    path.write_text("\ufeffamount, label ,hour\n12.5,0,14\n\n900,1,3\n")
    data = load_csv(path, label="label")
    assert data.feature_names == ("amount", "hour")
    np.testing.assert_array_equal(data.X, [[12.5, 14.0], [900.0, 3.0]])
    np.testing.assert_array_equal(data.y, [0, 1])


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("", "is empty; expected a header row"),
        ("\n\n", "is empty"),
        ("amount,is_fraud\n", "has a header but no data rows"),
        (
            "amount,hour\n1,2\n",
            r"has no label column 'is_fraud'; the columns found are: 'amount', 'hour'",
        ),
        (
            "amount,is_fraud\n1,0\nabc,1\n",
            r"line 3 .*column 'amount', has 'abc', which is not a number",
        ),
        ("amount,is_fraud\n1,0\n,1\n", r"line 3 .*column 'amount', has an empty value"),
        ("amount,is_fraud\nnan,0\n", r"line 2 .*column 'amount', has 'nan', which is not finite"),
        ("amount,is_fraud\n1,0\n2,2\n", r"must hold 0 or 1, but line 3 .* has '2'"),
        ("amount,is_fraud\n1,yes\n", r"column 'is_fraud', has 'yes', which is not a number"),
        ("amount,is_fraud\n1,0,3\n", "line 2 .* has 3 values but the header has 2 columns"),
        ("is_fraud\n1\n", "has only the label column"),
        ("a,a,is_fraud\n1,2,0\n", r"repeats the column names \['a'\]"),
    ],
    ids=[
        "empty",
        "blank",
        "header-only",
        "no-label",
        "text",
        "missing",
        "nan",
        "label-2",
        "label-text",
        "ragged",
        "no-features",
        "duplicates",
    ],
)
def test_load_csv_errors(tmp_path, text, match):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(InputError, match=match):
        load_csv(path)


def test_load_csv_missing_file(tmp_path):
    with pytest.raises(InputError, match="is not a file"):
        load_csv(tmp_path / "nowhere.csv")


# -- metrics --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("y_true", "scores", "roc", "ap"),
    [
        ([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8], 0.75, 5 / 6),  # scikit-learn's docstring example
        ([0, 1, 0, 1], [0.5, 0.5, 0.2, 0.9], 0.875, 5 / 6),  # a tie between classes counts 1/2
        ([1, 0, 1, 0], [0.3, 0.3, 0.3, 0.3], 0.5, 0.5),  # all tied: one threshold
        ([0, 0, 1], [0.1, 0.2, 0.3], 1.0, 1.0),
        ([1, 0, 0], [0.1, 0.2, 0.3], 0.0, 1 / 3),
    ],
    ids=["sklearn-doc", "tie", "all-tied", "perfect", "reversed"],
)
def test_ranking_metrics_on_hand_computed_examples(y_true, scores, roc, ap):
    np.testing.assert_allclose(roc_auc(y_true, scores), roc, rtol=ROUNDOFF)
    np.testing.assert_allclose(average_precision(y_true, scores), ap, rtol=ROUNDOFF)


def test_roc_auc_is_the_mann_whitney_probability():
    rng = np.random.default_rng(0)
    y = (rng.random(300) < 0.2).astype(int)
    scores = np.round(rng.random(300) + 0.3 * y, 1)  # coarse: many ties
    pos, neg = scores[y == 1], scores[y == 0]
    pairs = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
    np.testing.assert_allclose(roc_auc(y, scores), pairs.mean(), rtol=ROUNDOFF)


@pytest.mark.parametrize("decimals", [None, 1, 2], ids=["continuous", "coarse-ties", "ties"])
def test_ranking_metrics_match_scikit_learn(decimals):
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(1)
    y = (rng.random(2_000) < 0.05).astype(int)
    scores = rng.random(2_000) + 0.5 * y
    if decimals is not None:
        scores = np.round(scores, decimals)
    np.testing.assert_allclose(roc_auc(y, scores), metrics.roc_auc_score(y, scores), rtol=ROUNDOFF)
    np.testing.assert_allclose(
        average_precision(y, scores), metrics.average_precision_score(y, scores), rtol=ROUNDOFF
    )


@pytest.mark.parametrize(
    ("tp", "fp", "fn", "tn", "expected"),
    [
        (2, 1, 1, 6, (2 / 3, 2 / 3, 2 / 3)),
        (8, 2, 4, 86, (0.8, 8 / 12, 16 / 22)),
        (0, 0, 5, 5, (0.0, 0.0, 0.0)),  # nothing flagged: precision defined as 0
        (5, 5, 0, 0, (0.5, 1.0, 2 / 3)),
    ],
)
def test_precision_recall_f1_on_known_confusion_matrices(tp, fp, fn, tn, expected):
    y_true = [1] * tp + [0] * fp + [1] * fn + [0] * tn
    y_pred = [1] * tp + [1] * fp + [0] * fn + [0] * tn
    np.testing.assert_allclose(precision_recall_f1(y_true, y_pred), expected, rtol=ROUNDOFF)


def test_best_f1_threshold_maximises_f1():
    rng = np.random.default_rng(2)
    y = (rng.random(400) < 0.1).astype(int)
    scores = rng.random(400) + 0.4 * y
    threshold = best_f1_threshold(y, scores)
    best = precision_recall_f1(y, (scores >= threshold).astype(int))[2]
    for candidate in np.unique(scores):
        assert precision_recall_f1(y, (scores >= candidate).astype(int))[2] <= best


@pytest.mark.parametrize(
    "metric", [roc_auc, average_precision, best_f1_threshold], ids=lambda f: f.__name__
)
def test_ranking_metrics_need_both_classes(metric):
    with pytest.raises(InputError, match="need frauds and legitimate examples; got 0 frauds"):
        metric([0, 0, 0], [0.1, 0.2, 0.3])
