"""Tests of gradproof.models' optimisers, training loop and the network-versus-baseline claim."""

# Training re-seeds numpy's legacy global generator for dropout; the tests check that contract.
# ruff: noqa: NPY002

from __future__ import annotations

import numpy as np
import pytest

import gradproof
from gradproof.errors import InputError
from gradproof.models import (
    Adam,
    FraudNetwork,
    GradientDescent,
    Metrics,
    PaymentData,
    TrainingConfig,
    TrainingResult,
    best_f1_threshold,
    evaluate,
    logistic_baseline,
    make_optimizer,
    make_payments,
    split,
    train,
)
from gradproof.models.training import class_weights

# Two float64 evaluations of one formula in a different order agree to a few hundred ulps.
ROUNDOFF = 1e-12


@pytest.fixture(scope="module")
def small():
    """A 3,000-transaction problem, split 70/15/15, for fast training tests."""
    return split(make_payments(3_000, seed=1), seed=1)


def _net(data, **kwargs):
    return FraudNetwork(sizes=(data.n_features, 8, 4, 1), **kwargs)


# -- optimisers -----------------------------------------------------------------------------------
def test_gradient_descent_step():
    params = {"w": np.array([1.0, -1.0])}
    grads = {"w": np.array([0.5, 2.0])}
    gd = GradientDescent(learning_rate=0.1)
    new, state = gd.update(params, grads, gd.init(params))
    np.testing.assert_allclose(new["w"], [0.95, -1.2], rtol=ROUNDOFF)
    assert state.step == 1
    np.testing.assert_array_equal(params["w"], [1.0, -1.0])  # not modified


def test_adam_follows_kingma_and_ba():
    adam = Adam(learning_rate=0.01, beta1=0.9, beta2=0.999, eps=1e-8)
    params = {"w": np.array([1.0])}
    state = adam.init(params)
    w, m, v = 1.0, 0.0, 0.0
    for t, g in enumerate([3.0, -1.0, 0.5], start=1):
        params, state = adam.update(params, {"w": np.array([g])}, state)
        m = 0.9 * m + 0.1 * g
        v = 0.999 * v + 0.001 * g * g
        w -= 0.01 * (m / (1 - 0.9**t)) / (np.sqrt(v / (1 - 0.999**t)) + 1e-8)
        np.testing.assert_allclose(params["w"], [w], rtol=ROUNDOFF)
    assert state.step == 3


def test_make_optimizer():
    assert make_optimizer("adam") == Adam()
    assert make_optimizer("gd", 0.5) == GradientDescent(learning_rate=0.5)
    with pytest.raises(InputError, match="must be one of 'adam', 'gd'; got 'sgd'"):
        make_optimizer("sgd")
    with pytest.raises(InputError, match="positive"):
        Adam(learning_rate=0.0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"optimizer": "rmsprop"}, "'adam', 'gd'"),
        ({"epochs": 0}, "`epochs`"),
        ({"batch_size": 1.5}, "`batch_size` must be an integer >= 1"),
        ({"seed": -1}, "`seed` must be an integer >= 0"),
        ({"class_weight": "auto"}, "'balanced' or None"),
        ({"learning_rate": -1.0}, "`learning_rate`"),
    ],
)
def test_training_config_validates(kwargs, match):
    with pytest.raises(InputError, match=match):
        TrainingConfig(**kwargs)


# -- class weighting ------------------------------------------------------------------------------
def test_balanced_class_weights():
    y = np.array([0.0] * 97 + [1.0] * 3)
    weights = class_weights(y, "balanced", reference=y)
    np.testing.assert_allclose(weights[y == 0].sum(), weights[y == 1].sum(), rtol=ROUNDOFF)
    np.testing.assert_allclose(weights.mean(), 1.0, rtol=ROUNDOFF)
    np.testing.assert_array_equal(class_weights(y, None, reference=y), np.ones(100))
    # other splits are weighted with the training split's counts
    np.testing.assert_allclose(
        class_weights(np.array([0.0, 1.0]), "balanced", reference=y), [100 / 194, 100 / 6]
    )


# -- training -------------------------------------------------------------------------------------
def test_training_is_deterministic(small):
    train_data, val_data, _ = small
    config = TrainingConfig(epochs=3, seed=5)
    first = train(_net(train_data, keep_prob=0.8), train_data, val_data, config)
    again = train(_net(train_data, keep_prob=0.8), train_data, val_data, config)
    assert all(np.array_equal(first.params[k], again.params[k]) for k in first.params)
    assert first.history == again.history
    assert first.threshold == again.threshold
    other = train(_net(train_data, keep_prob=0.8), train_data, val_data, TrainingConfig(epochs=3))
    assert not np.array_equal(first.params["W1"], other.params["W1"])


def test_callback_sees_every_step_and_cannot_change_the_dropout_masks(small):
    train_data, val_data, _ = small
    net = _net(train_data, keep_prob=0.8)
    config = TrainingConfig(epochs=2, batch_size=256)
    seen = []

    def meddle(step, params, batch):
        seen.append((step, batch[0].shape, batch[1].shape, batch[2].shape))
        np.random.seed(12345)  # what a gradient check with seed= does

    np.random.seed(99)
    expected_next = np.random.random()
    np.random.seed(99)
    watched = train(net, train_data, val_data, config, callback=meddle)
    assert np.random.random() == expected_next  # the global generator is restored
    plain = train(net, train_data, val_data, config)
    assert all(np.array_equal(watched.params[k], plain.params[k]) for k in plain.params)
    steps_per_epoch = -(-train_data.n // 256)
    assert watched.steps == 2 * steps_per_epoch
    assert [s[0] for s in seen] == list(range(1, watched.steps + 1))
    assert seen[0][1:] == ((256, train_data.n_features), (256,), (256,))


def test_a_raising_callback_stops_training(small):
    train_data, val_data, _ = small
    calls = []

    class Halt(Exception):
        pass

    def halt_at_three(step, params, batch):
        calls.append(step)
        if step == 3:
            raise Halt

    with pytest.raises(Halt):
        train(
            _net(train_data), train_data, val_data, TrainingConfig(epochs=5), callback=halt_at_three
        )
    assert calls == [1, 2, 3]


def test_callback_can_check_gradients_during_training(small):
    """What a gradient guard does: check the gradient at a step, on that step's batch."""
    train_data, val_data, _ = small
    config = TrainingConfig(epochs=1, batch_size=64)
    verdicts = {}

    def guard(net):
        def callback(step, params, batch):
            if step % 10 == 0:
                X, y, w = (part[:32] for part in batch)
                verdicts[step] = gradproof.check(
                    lambda p: net.loss(p, X, y, sample_weight=w),
                    lambda p: net.gradients(p, X, y, sample_weight=w),
                    params,
                    seed=step,
                )
                if not verdicts[step].passed:
                    raise gradproof.GradientMismatchError("wrong", result=verdicts[step])

        return callback

    net = _net(train_data, l2=1e-3, keep_prob=0.9)
    train(net, train_data, val_data, config, callback=guard(net))
    assert verdicts and all(v.passed for v in verdicts.values())
    buggy = net.with_bug("sample-weights-ignored")
    with pytest.raises(gradproof.GradientMismatchError) as caught:
        train(buggy, train_data, val_data, config, callback=guard(buggy))
    assert caught.value.result.suspects == net.param_names


def test_standardizer_is_fitted_on_the_training_split_only(small):
    train_data, val_data, test_data = small
    result = train(_net(train_data), train_data, val_data, TrainingConfig(epochs=1))
    np.testing.assert_allclose(result.standardizer.mean, train_data.X.mean(axis=0), rtol=ROUNDOFF)
    np.testing.assert_allclose(result.standardizer.scale, train_data.X.std(axis=0), rtol=ROUNDOFF)
    expected = (test_data.X - train_data.X.mean(axis=0)) / train_data.X.std(axis=0)
    np.testing.assert_allclose(result.standardizer.transform(test_data.X), expected, atol=ROUNDOFF)
    assert not np.allclose(result.standardizer.mean, val_data.X.mean(axis=0))


def test_threshold_and_history(small):
    train_data, val_data, test_data = small
    net = _net(train_data)
    result = train(net, train_data, val_data, TrainingConfig(epochs=4))
    assert isinstance(result, TrainingResult) and result.network is net
    proba = result.predict_proba(val_data.X)
    assert result.threshold == best_f1_threshold(val_data.y, proba)
    assert [h.epoch for h in result.history] == [1, 2, 3, 4]
    assert result.history[-1].train_loss < result.history[0].train_loss
    last = result.history[-1]
    net_loss = net.loss(
        result.params,
        result.standardizer.transform(val_data.X),
        val_data.y,
        sample_weight=class_weights(val_data.y, "balanced", reference=train_data.y),
        training=False,
    )
    np.testing.assert_allclose(last.val_loss, net_loss, rtol=ROUNDOFF)
    metrics = evaluate(net, result.params, result.standardizer, test_data, result.threshold)
    assert isinstance(metrics, Metrics)
    assert (metrics.n, metrics.n_positive) == (test_data.n, test_data.n_positive)
    assert set(metrics.to_dict()) == {
        "precision", "recall", "f1", "roc_auc", "pr_auc", "threshold", "n", "n_positive"
    }  # fmt: skip
    assert "PR-AUC" in str(metrics) and f"{test_data.n} examples" in str(metrics)


def test_plain_gradient_descent_trains(small):
    train_data, val_data, _ = small
    config = TrainingConfig(optimizer="gd", epochs=3, class_weight=None)
    result = train(_net(train_data), train_data, val_data, config)
    assert result.history[-1].train_loss < result.history[0].train_loss


def test_training_refuses_data_that_does_not_fit(small):
    train_data, val_data, _ = small
    with pytest.raises(InputError, match="has 14 features but the network takes 3"):
        train(FraudNetwork(sizes=(3, 1)), train_data, val_data)
    no_fraud = PaymentData(
        X=val_data.X[:5], y=np.zeros(5, np.int64), feature_names=val_data.feature_names
    )
    with pytest.raises(InputError, match="`val_data` has 0 frauds among 5 examples"):
        train(_net(train_data), train_data, no_fraud)


def test_divergence_is_reported(small):
    train_data, val_data, _ = small
    net = FraudNetwork(sizes=(train_data.n_features, 1))
    config = TrainingConfig(optimizer="gd", learning_rate=1e300, epochs=2)
    with np.errstate(all="ignore"), pytest.raises(InputError, match="training diverged"):
        train(net, train_data, val_data, config)


# -- the claim: a network beats logistic regression on the synthetic payments ---------------------
@pytest.fixture(scope="module")
def default_run():
    """The default pipeline: 20,000 transactions, default split, config and architecture."""
    train_data, val_data, test_data = split(make_payments())
    net = FraudNetwork(sizes=(train_data.n_features, 32, 16, 1), l2=1e-4)
    config = TrainingConfig()
    network = train(net, train_data, val_data, config)
    baseline = logistic_baseline(train_data, val_data, config)
    return test_data, network, baseline


def test_network_beats_logistic_regression_on_pr_auc(default_run):
    test_data, network, baseline = default_run
    assert baseline.network.sizes == (test_data.n_features, 1)
    ours = evaluate(
        network.network, network.params, network.standardizer, test_data, network.threshold
    )
    base = evaluate(
        baseline.network, baseline.params, baseline.standardizer, test_data, baseline.threshold
    )
    assert ours.pr_auc > base.pr_auc, f"network: {ours}\nbaseline: {base}"
    assert ours.roc_auc > base.roc_auc
    assert base.pr_auc > test_data.fraud_rate  # the baseline is not useless
