"""The gradient guard: periodic checks inside training loops (numpy, PyTorch, Lightning)."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import warnings
from typing import Any

import numpy as np
import pytest

import gradproof.guard
from gradproof import check, course
from gradproof.checking.check import NondeterministicLossError
from gradproof.engine.randomness import preserved_random_state
from gradproof.errors import (
    BackendUnavailableError,
    GradientMismatchError,
    GradproofWarning,
    InputError,
    UserCodeError,
)
from gradproof.guard import (
    DEFAULT_CHECK_OPTIONS,
    GradientGuard,
    GuardError,
    GuardRecord,
    TorchGradientGuard,
)
from gradproof.report.text import ENTRIES_SHOWN, render_result
from gradproof.results import Verdict


# -- the course network, trained by mini-batch gradient descent ----------------------------------
def _data(m=64, seed=1):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((4, m))
    Y = (rng.random((1, m)) < 0.5).astype(np.float64)
    return X, Y


def _loss(X, Y):
    return lambda p: course.forward_propagation_n(X, Y, p)[0]


def _grad(X, Y, backward=course.backward_propagation_n_corrected):
    def grad(p):
        _, cache = course.forward_propagation_n(X, Y, p)
        return course.parameter_gradients(backward(X, Y, cache))

    return grad


class Clock:
    """The training step, for gradient code whose behaviour changes during training."""

    step = 0


def _switching_grad(X, Y, clock, after):
    """The course's gradient, with its two planted bugs switched on once `clock.step > after`."""
    good = _grad(X, Y)
    bad = _grad(X, Y, course.backward_propagation_n)
    return lambda p: (bad if clock.step > after else good)(p)


def _train(guard, n_steps, *, lr=0.1, batch=16, clock=None):
    """Mini-batch gradient descent on the course network; return the params and the last step."""
    X, Y = _data()
    _, _, params = course.gradient_check_n_test_case()
    last = None
    for step in range(n_steps):
        if clock is not None:
            clock.step = step
        cols = slice((step * batch) % X.shape[1], (step * batch) % X.shape[1] + batch)
        grads = _grad(X[:, cols], Y[:, cols])(params)
        params = {k: v - lr * grads[k] for k, v in params.items()}
        guard(step, params)
        last = step
    return params, last


@pytest.fixture
def small_batch():
    X, Y = _data()
    return X[:, :8], Y[:, :8]  # the guard's fixed batch: 8 examples, 47 parameters


# -- numpy ----------------------------------------------------------------------------------------
def test_correct_gradients_pass_at_every_due_step(small_batch):
    X, Y = small_batch
    guard = GradientGuard(_loss(X, Y), _grad(X, Y), every=5)
    start = course.gradient_check_n_test_case()[2]
    params, last = _train(guard, 23)
    assert last == 22
    assert [r.step for r in guard.history] == [0, 5, 10, 15, 20]
    assert all(r.verdict is Verdict.PASS and not r.failed for r in guard.history)
    assert not np.allclose(params["W1"], start["W1"])  # it did train
    assert guard.summary().startswith("5 checks at steps 0, 5, 10, 15, 20: all passed (")
    assert "of training time)" in guard.summary()


def test_bug_that_switches_on_mid_training_stops_at_the_next_due_step(small_batch):
    X, Y = small_batch
    clock = Clock()
    guard = GradientGuard(_loss(X, Y), _switching_grad(X, Y, clock, after=12), every=5)
    with pytest.raises(GuardError) as caught:
        _train(guard, 30, clock=clock)
    error = caught.value
    assert isinstance(error, GradientMismatchError)
    assert isinstance(error, AssertionError)
    assert error.step == 15
    assert error.result.suspects == ("b1", "W2")
    headline, _, report = str(error).partition("\n\n")
    assert headline == (
        "gradient check failed at step 15: wrong gradients: b1 (4× too large), W2 (2× too large)"
    )
    assert report == render_result(error.result)  # the report str(result) prints follows
    assert "Diagnosis" in report
    assert "4 times too large" in report
    assert clock.step == 15  # training stopped there
    assert [(r.step, r.verdict) for r in guard.history] == [
        (0, Verdict.PASS),
        (5, Verdict.PASS),
        (10, Verdict.PASS),
        (15, Verdict.FAIL),
    ]


def test_the_guard_lists_as_many_wrong_entries_as_check_does():
    """A tensor with many wrong entries: the guard's error and warning list ENTRIES_SHOWN each."""
    w = np.linspace(0.5, 2.0, 40)
    result = check(lambda p: float(np.sum(p**2)), lambda p: 3 * p, w, seed=0)
    assert result["params"].n_failed == 40 and len(result["params"].failures) == 20

    guard = GradientGuard(lambda p: float(np.sum(p**2)), lambda p: 3 * p, every=1)
    with pytest.raises(GuardError) as caught:
        guard(0, w)
    listed = [line for line in str(caught.value).splitlines() if line.startswith("    params[")]
    check_listed = [line for line in str(result).splitlines() if line.startswith("    params[")]
    assert len(listed) == len(check_listed) == ENTRIES_SHOWN
    assert f"... {40 - ENTRIES_SHOWN} more wrong entries" in str(caught.value)
    assert len(caught.value.result["params"].failures) == 20  # the result keeps them all

    warner = GradientGuard(
        lambda p: float(np.sum(p**2)), lambda p: 3 * p, every=1, on_failure="warn"
    )
    with pytest.warns(GradproofWarning) as caught_warnings:
        warner(0, w)
    (warning,) = caught_warnings
    listed = [line for line in str(warning.message).splitlines() if line.startswith("    params[")]
    assert len(listed) == ENTRIES_SHOWN


def test_warn_records_the_failure_and_training_goes_on(small_batch):
    X, Y = small_batch
    clock = Clock()
    guard = GradientGuard(
        _loss(X, Y), _switching_grad(X, Y, clock, after=12), every=5, on_failure="warn"
    )
    with pytest.warns(GradproofWarning, match="gradient check failed at step (15|20)") as caught:
        _, last = _train(guard, 23, clock=clock)
    assert last == 22
    assert [str(w.message).splitlines()[0][:35] for w in caught] == [
        "gradient check failed at step 15: w",
        "gradient check failed at step 20: w",
    ]
    assert "Diagnosis" in str(caught[0].message)
    assert caught[0].filename == __file__  # stacklevel points at the training loop
    assert [r.failed for r in guard.history] == [False, False, False, True, True]
    assert guard.history[3].suspects == ("b1", "W2")
    summary = guard.summary()
    assert summary.startswith(
        "5 checks at steps 0, 5, 10, 15, 20: 3 passed, 2 failed at steps 15, 20 "
        "(wrong gradients: b1, W2) ("
    ), summary


@pytest.mark.parametrize(
    ("options", "steps", "checked"),
    [
        ({"at": [0, 7]}, range(20), [0, 7]),
        ({"at": [0, 7]}, range(1, 20), [7]),  # the list alone is the schedule
        ({"at": [0, 7], "first": True}, range(3, 20), [3, 7]),
        ({"at": [3], "every": 10}, range(25), [0, 3, 10, 20]),
        ({"every": 5, "first": False}, range(12), [5, 10]),
        ({"every": 5}, range(1, 12), [1, 5, 10]),
        ({"every": 5}, range(0, 14, 3), [0, 6, 12]),  # steps 5 and 10 were passed over
        ({"every": 5}, [0, 4, 5, 5, 5, 6], [0, 5]),  # a repeated step is checked once
        ({"every": 5}, [0, 4, 5, 6, 0, 1, 5], [0, 5, 5]),  # a counter that restarts
        ({"at": [4, 7]}, [0, 2, 6, 9], [6, 9]),
        ({}, range(250), [0, 100, 200]),
    ],
    ids=[
        "at",
        "at-from-1",
        "at-and-first",
        "at-and-every",
        "every-not-first",
        "every-from-1",
        "every-skipping",
        "repeated-step",
        "restart",
        "at-skipped",
        "default-100",
    ],
)
def test_schedule(options, steps, checked):
    guard = GradientGuard(lambda w: float(np.sum(w**2)), lambda w: 2 * w, **options)
    w = np.array([1.0, -2.0])
    returned = [guard(step, w) is not None for step in steps]
    assert [r.step for r in guard.history] == checked
    assert sum(returned) == len(checked)
    assert guard.n_calls == len(list(steps))


def test_is_due_and_next_due_do_not_change_the_guard():
    guard = GradientGuard(lambda w: float(np.sum(w**2)), lambda w: 2 * w, every=10, at=[3])
    assert guard.is_due(0) and guard.is_due(57)  # the first call
    assert guard.next_due() == 3
    assert guard.summary() == "no gradient checks yet (0 calls); the first call will run one"
    guard(0, np.ones(2))
    assert not guard.is_due(2) and guard.is_due(3) and guard.is_due(12)
    assert guard.next_due() == 3
    guard(4, np.ones(2))
    assert guard.next_due() == 10
    assert [r.step for r in guard.history] == [0, 4]
    quiet = GradientGuard(lambda w: float(np.sum(w**2)), lambda w: 2 * w, at=[5])
    quiet(6, np.ones(2))
    assert quiet.summary() == "no gradient checks yet (1 call); none is scheduled"


def _dropout_problem(w):
    """A loss with dropout drawn from numpy's global generator, and its gradient."""
    x = np.linspace(-1.0, 1.0, w.size)

    def loss(v):
        mask = (np.random.rand(v.size) > 0.3) / 0.7  # noqa: NPY002 - what dropout code does
        return float(np.sum((v * x * mask) ** 2))

    def grad(v):
        mask = (np.random.rand(v.size) > 0.3) / 0.7  # noqa: NPY002
        return 2 * v * (x * mask) ** 2

    return loss, grad


def test_dropout_passes_with_the_seed_frozen():
    w = np.linspace(0.5, 2.0, 12)
    loss, grad = _dropout_problem(w)
    guard = GradientGuard(loss, grad, every=2)
    for step in range(5):
        guard(step, w * (1 + 0.01 * step))
    assert [r.verdict for r in guard.history] == [Verdict.PASS] * 3
    assert all(r.result.seed == 0 for r in guard.history)


def test_dropout_without_a_seed_stops_with_a_clear_error():
    w = np.linspace(0.5, 2.0, 12)
    loss, grad = _dropout_problem(w)
    guard = GradientGuard(loss, grad, every=2, seed=None, on_failure="warn")
    with pytest.raises(NondeterministicLossError, match="check at step 0 could not run") as caught:
        guard(0, w)
    message = str(caught.value)
    assert "different values at the same parameters" in message
    assert "keep its default `seed=0`" in message
    assert isinstance(caught.value.__cause__, NondeterministicLossError)
    assert guard.history == ()


def test_the_guard_leaves_the_training_randomness_alone():
    w = np.linspace(0.5, 2.0, 12)
    loss, grad = _dropout_problem(w)

    def run(guard):
        np.random.seed(123)  # noqa: NPY002 - the training loop's own global stream
        draws = []
        for step in range(6):
            draws.append(np.random.rand())  # noqa: NPY002
            if guard is not None:
                guard(step, w)
        return draws

    guard = GradientGuard(loss, grad, every=2)
    assert run(guard) == run(None)
    assert len(guard.history) == 3


def test_preserved_random_state_restores_python_and_numpy():
    import random

    random.seed(5)
    np.random.seed(5)  # noqa: NPY002
    expected = (random.random(), np.random.rand())  # noqa: NPY002
    random.seed(5)
    np.random.seed(5)  # noqa: NPY002
    with preserved_random_state():
        random.seed(0)
        np.random.seed(0)  # noqa: NPY002
        random.random()
    assert (random.random(), np.random.rand()) == expected  # noqa: NPY002


def test_an_inconclusive_check_is_not_a_failure_unless_asked():
    # |w| at w = 0 has a kink; sign(0) = 0 is a valid subgradient, so the check cannot judge it.
    args = (lambda w: float(np.sum(np.abs(w))), np.sign)
    w = np.array([0.0, 1.0, -2.0])
    guard = GradientGuard(*args, every=1)
    result = guard(0, w)
    assert result is not None and result.verdict is Verdict.INCONCLUSIVE
    (record,) = guard.history
    assert not record.failed
    assert str(record).startswith("step 0: inconclusive, not counted as a failure: params (")
    assert guard.summary().startswith("1 check at step 0: 1 inconclusive at step 0 (not a failure)")

    strict = GradientGuard(*args, every=1, allow_inconclusive=False)
    with pytest.raises(
        GuardError, match="gradient check counted as failed at step 0: inconclusive"
    ):
        strict(0, w)
    assert strict.history[0].failed
    assert "(counted as failed)" in strict.summary()


def test_history_records_and_dicts(small_batch):
    X, Y = small_batch
    clock = Clock()
    guard = GradientGuard(
        _loss(X, Y), _switching_grad(X, Y, clock, after=3), every=4, on_failure="warn"
    )
    with pytest.warns(GradproofWarning):
        _train(guard, 6, clock=clock)
    passed, failed = guard.history
    assert isinstance(guard.history, tuple)
    assert isinstance(passed, GuardRecord)
    assert (passed.step, passed.verdict, passed.failed) == (0, Verdict.PASS, False)
    assert (failed.step, failed.verdict, failed.failed) == (4, Verdict.FAIL, True)
    assert passed.n_evals == passed.result.n_evals > 2 * 47
    assert 0 < passed.seconds < 5
    assert str(passed).startswith(f"step 0: passed ({passed.n_evals} loss evaluations, ")
    assert str(failed).startswith("step 4: FAILED, wrong gradients: b1, W2 (")
    data = json.loads(json.dumps(failed.to_dict()))
    assert {k: data[k] for k in ("step", "verdict", "failed", "suspects", "inconclusive")} == {
        "step": 4,
        "verdict": "fail",
        "failed": True,
        "suspects": ["b1", "W2"],
        "inconclusive": [],
    }
    assert data["n_evals"] == failed.n_evals
    assert data["result"]["suspects"] == ["b1", "W2"]
    with pytest.raises(AttributeError):
        passed.step = 3  # type: ignore[misc]


def test_check_options_are_cheap_by_default_and_can_be_overridden(small_batch):
    X, Y = small_batch
    guard = GradientGuard(_loss(X, Y), _grad(X, Y))
    assert dict(guard.check_options) == dict(DEFAULT_CHECK_OPTIONS)
    with pytest.raises(TypeError):
        guard.check_options["mode"] = "full"  # type: ignore[index]
    assert repr(guard) == (
        "GradientGuard(every=100, first=True, on_failure='stop', seed=0, 0 checks in 0 calls)"
    )
    assert guard.check_options["progress"] is False
    assert (guard.every, guard.at, guard.first, guard.on_failure, guard.seed) == (
        100,
        (),
        True,
        "stop",
        0,
    )
    first = guard(0, course.gradient_check_n_test_case()[2])
    assert first is not None and first.mode == "full"  # 47 entries fit the budget
    directional = GradientGuard(_loss(X, Y), _grad(X, Y), mode="directional", max_evals=None)
    result = directional(0, course.gradient_check_n_test_case()[2])
    assert result is not None and result.mode == "directional" and result.max_evals is None


def test_wrap_runs_the_guard_after_each_step():
    guard = GradientGuard(lambda w: float(np.sum(w**2)), lambda w: 2 * w, every=3)

    def in_place(w, lr):
        w -= lr * 2 * w

    step = guard.wrap(in_place)
    assert step.__name__ == "in_place"
    w = np.array([1.0, -2.0])
    for _ in range(7):
        assert step(w, 0.1) is None
    assert [r.step for r in guard.history] == [0, 3, 6]
    np.testing.assert_allclose(guard.history[-1].result.loss_value, np.sum(w**2), rtol=1e-15)


def test_wrap_stops_training_on_a_wrong_gradient():
    guard = GradientGuard(lambda w: float(np.sum(w**2)), lambda w: -2 * w, every=3)
    step = guard.wrap(lambda w: w * 0.9)
    with pytest.raises(GuardError, match=r"step 0: wrong gradient: params \(sign flipped\)"):
        step(np.array([1.0, -2.0]))


def test_errors_in_the_loss_stop_training_whatever_on_failure_says():
    def loss(w):
        raise ZeroDivisionError("boom")

    guard = GradientGuard(loss, lambda w: 2 * w, on_failure="warn")
    with pytest.raises(UserCodeError, match="check at step 0 could not run") as caught:
        guard(0, np.ones(2))
    assert caught.value.function == "loss"


def test_guard_error_survives_pickling():
    guard = GradientGuard(lambda w: float(np.sum(w**2)), lambda w: 4 * w)
    with pytest.raises(GuardError) as caught:
        guard(7, np.array([1.0, 2.0]))
    copy = pickle.loads(pickle.dumps(caught.value))
    assert (copy.step, copy.result.suspects, str(copy)) == (7, ("params",), str(caught.value))


def _fn(w):
    return float(np.sum(w**2))


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"every": 0}, "`every` must be a positive number of steps; got 0"),
        ({"every": True}, "`every` must be a positive"),
        ({"at": "7"}, "`at` must be a collection of steps"),
        ({"at": [3, -1]}, "`at` must hold non-negative integer steps; got -1"),
        ({"at": [1.5]}, "`at` must hold non-negative integer steps; got 1.5"),
        ({"at": []}, "The guard would never check: `at` is empty"),
        ({"on_failure": "raise"}, "`on_failure` must be one of 'stop', 'warn'; got 'raise'"),
        ({"seed": -1}, "`seed` must be a non-negative integer or None"),
        ({"modes": "full"}, "GradientGuard got unknown option 'modes'; the options it passes"),
        ({"loss_batch": _fn}, "unknown option 'loss_batch'"),
    ],
    ids=["every-0", "every-bool", "at-str", "at-negative", "at-float", "at-empty", "on-failure",
         "seed", "unknown", "loss-batch"],
)  # fmt: skip
def test_invalid_options_are_refused_at_construction(options, match):
    with pytest.raises(InputError, match=match):
        GradientGuard(_fn, lambda w: 2 * w, **options)


def test_invalid_calls_are_refused():
    with pytest.raises(InputError, match="`grad` must be a function of the parameters"):
        GradientGuard(_fn, np.ones(2))  # type: ignore[arg-type]
    guard = GradientGuard(_fn, lambda w: 2 * w)
    for step in (-1, 1.0, True):
        with pytest.raises(InputError, match="`step` must be a non-negative integer"):
            guard(step, np.ones(2))  # type: ignore[arg-type]
    assert guard.n_calls == 0


def test_import_needs_neither_torch_nor_lightning():
    code = (
        "import sys, gradproof.guard as g; "
        "print(sorted(m for m in ('torch', 'lightning', 'pytorch_lightning') if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "[]"


def test_unknown_attribute():
    with pytest.raises(AttributeError, match="has no attribute 'Guard'"):
        gradproof.guard.Guard  # noqa: B018
    assert "GradientGuardCallback" in dir(gradproof.guard)


# -- PyTorch -------------------------------------------------------------------------------------
def _torch_model():
    """A small model with a custom autograd Function layer, BatchNorm and dropout."""
    import torch  # the callers have skipped without it

    class LinearFunction(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, weight, bias, buggy):
            ctx.save_for_backward(x, weight)
            ctx.buggy = buggy
            return x @ weight.T + bias

        @staticmethod
        def backward(ctx, grad_output):
            x, weight = ctx.saved_tensors
            # the planted bug: a mean over the batch where the forward sums
            grad_bias = grad_output.mean(0) if ctx.buggy else grad_output.sum(0)
            return grad_output @ weight, grad_output.T @ x, grad_bias, None

    class CustomLinear(torch.nn.Module):
        def __init__(self, n_in, n_out):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.randn(n_out, n_in) / n_in**0.5)
            self.bias = torch.nn.Parameter(0.1 * torch.randn(n_out))
            self.buggy = False

        def forward(self, x):
            return LinearFunction.apply(x, self.weight, self.bias, self.buggy)

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.norm = torch.nn.BatchNorm1d(4)
            self.hidden = CustomLinear(4, 6)
            self.drop = torch.nn.Dropout(0.2)
            self.out = torch.nn.Linear(6, 1)

        def forward(self, x):
            return self.out(self.drop(torch.tanh(self.hidden(self.norm(x)))))

    return Net()


def _snapshot(torch, model, optimizer):
    return (
        {k: v.clone() for k, v in model.state_dict().items()},
        {k: None if p.grad is None else p.grad.clone() for k, p in model.named_parameters()},
        {
            i: {k: v.clone() for k, v in state.items()}
            for i, state in optimizer.state_dict()["state"].items()
        },
        torch.get_rng_state(),
        model.training,
    )


def _same(torch, a, b):
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(torch, a[k], b[k]) for k in a)
    if isinstance(a, tuple):
        return len(a) == len(b) and all(_same(torch, x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, torch.Tensor):
        return a.dtype == b.dtype and torch.equal(a, b)
    return a == b


def _torch_train(torch, guard, model, n_steps, *, bug_after=None):
    """SGD with momentum on random data; the guard is called after each update."""
    generator = torch.Generator().manual_seed(1)
    X, y = torch.randn(64, 4, generator=generator), torch.randn(64, 1, generator=generator)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for step in range(n_steps):
        model.hidden.buggy = bug_after is not None and step > bug_after
        rows = slice(16 * (step % 4), 16 * (step % 4) + 16)
        optimizer.zero_grad()
        torch.nn.functional.mse_loss(model(X[rows]), y[rows]).backward()
        optimizer.step()
        before = _snapshot(torch, model, optimizer)
        guard(step)
        assert _same(torch, before, _snapshot(torch, model, optimizer)), f"changed at {step}"
    return model


@pytest.fixture
def torch_setup():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    model = _torch_model()
    generator = torch.Generator().manual_seed(2)
    x, y = torch.randn(8, 4, generator=generator), torch.randn(8, 1, generator=generator)
    return torch, model, x, lambda out: torch.nn.functional.mse_loss(out, y)


def test_torch_guard_passes_and_leaves_the_model_untouched(torch_setup):
    torch, model, x, loss_fn = torch_setup
    guard = TorchGradientGuard(model, x, loss_fn, every=3)
    _torch_train(torch, guard, model, 7)
    assert [r.step for r in guard.history] == [0, 3, 6]
    assert all(r.verdict is Verdict.PASS for r in guard.history)
    names = [p.name for p in guard.history[0].result.params]
    assert names == [n for n, _ in model.named_parameters()]


def test_torch_guard_catches_a_custom_backward_bug_mid_training(torch_setup):
    torch, model, x, loss_fn = torch_setup
    guard = TorchGradientGuard(model, x, loss_fn, every=3)
    with pytest.raises(GuardError, match="gradient check failed at step 6") as caught:
        _torch_train(torch, guard, model, 10, bug_after=4)
    assert caught.value.step == 6
    assert caught.value.result.suspects == ("hidden.bias",)  # named as PyTorch names it
    assert "hidden.bias (8× too small)" in str(caught.value).splitlines()[0]
    assert [r.verdict for r in guard.history] == [Verdict.PASS, Verdict.PASS, Verdict.FAIL]


def test_torch_guard_warns_and_training_continues(torch_setup):
    torch, model, x, loss_fn = torch_setup
    guard = TorchGradientGuard(model, x, loss_fn, at=[2, 5], on_failure="warn")
    with pytest.warns(GradproofWarning, match=r"step [25]: wrong gradient: hidden\.bias \("):
        _torch_train(torch, guard, model, 6, bug_after=1)
    assert [(r.step, r.failed) for r in guard.history] == [(2, True), (5, True)]


def test_torch_guard_validates_its_arguments(torch_setup):
    _, model, x, loss_fn = torch_setup
    with pytest.raises(InputError, match=r"`module` must be a torch\.nn\.Module; got a function"):
        TorchGradientGuard(loss_fn, x, loss_fn)
    with pytest.raises(InputError, match="`loss_fn` must turn the module's output"):
        TorchGradientGuard(model, x, "mse")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="TorchGradientGuard got unknown option 'jacobian'"):
        TorchGradientGuard(model, x, loss_fn, jacobian="full")
    assert TorchGradientGuard(model, x, loss_fn, vmap=False).check_options["vmap"] is False


def test_torch_guard_without_a_seed_refuses_dropout(torch_setup):
    _, model, x, loss_fn = torch_setup
    guard = TorchGradientGuard(model, x, loss_fn, seed=None)
    with pytest.raises(NondeterministicLossError, match="guard's check at step 3 could not run"):
        guard(3)


def test_torch_guard_restores_torch_randomness(torch_setup):
    torch, model, x, loss_fn = torch_setup
    guard = TorchGradientGuard(model, x, loss_fn, every=1)
    torch.manual_seed(9)
    expected = torch.rand(3)
    torch.manual_seed(9)
    guard(0)
    assert torch.equal(torch.rand(3), expected)


# -- PyTorch Lightning ---------------------------------------------------------------------------
def _fit(every, *, bug_after=None, max_steps=6, **options):
    L = pytest.importorskip("lightning")
    torch = pytest.importorskip("torch")
    from gradproof.guard import GradientGuardCallback

    torch.manual_seed(0)
    net = _torch_model()

    base: Any = L.LightningModule

    class Module(base):  # type: ignore[misc]
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, x):
            return self.net(x)

        def training_step(self, batch, batch_idx):
            self.net.hidden.buggy = bug_after is not None and self.global_step > bug_after
            x, y = batch
            return torch.nn.functional.mse_loss(self(x), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.05)

    generator = torch.Generator().manual_seed(1)
    X, y = torch.randn(64, 4, generator=generator), torch.randn(64, 1, generator=generator)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X, y), batch_size=16)
    callback = GradientGuardCallback(
        X[:8], lambda out: torch.nn.functional.mse_loss(out, y[:8]), every=every, **options
    )
    trainer = L.Trainer(
        max_steps=max_steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        callbacks=[callback],
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*GPU available but not used.*")
        warnings.filterwarnings(
            "ignore", message=r".*isinstance\(treespec, LeafSpec\)", category=FutureWarning
        )
        trainer.fit(Module(), loader)
    return callback, trainer


def test_lightning_callback_checks_every_k_global_steps():
    callback, trainer = _fit(every=2)
    assert trainer.global_step == 6
    assert [r.step for r in callback.history] == [1, 2, 4, 6]  # global_step is 1 after a step
    assert all(r.verdict is Verdict.PASS for r in callback.history)
    assert callback.summary().startswith("4 checks at steps 1, 2, 4, 6: all passed (")
    L = pytest.importorskip("lightning")
    assert isinstance(callback, L.pytorch.Callback)
    assert type(callback) is gradproof.guard.GradientGuardCallback  # made once


def test_lightning_callback_stops_training_on_a_wrong_gradient():
    pytest.importorskip("lightning")
    with pytest.raises(GuardError, match="gradient check failed at step 4") as caught:
        _fit(every=2, bug_after=2, max_steps=10)
    assert caught.value.result.suspects == ("net.hidden.bias",)


def test_lightning_callback_can_warn_and_continue():
    pytest.importorskip("lightning")
    with pytest.warns(GradproofWarning, match=r"wrong gradient: net\.hidden\.bias \("):
        callback, trainer = _fit(every=2, bug_after=2, on_failure="warn")
    assert trainer.global_step == 6
    assert [(r.step, r.failed) for r in callback.history] == [
        (1, False),
        (2, False),
        (4, True),
        (6, True),
    ]


def test_lightning_callback_sets_should_stop():
    pytest.importorskip("lightning")
    torch = pytest.importorskip("torch")
    from gradproof.guard import GradientGuardCallback

    torch.manual_seed(0)
    model = _torch_model()
    model.hidden.buggy = True
    callback = GradientGuardCallback(torch.randn(8, 4), lambda out: out.pow(2).mean())

    class FakeTrainer:
        global_step = 0
        should_stop = False

    trainer = FakeTrainer()
    with pytest.raises(GuardError):
        callback.on_train_batch_end(trainer, model, None, None, 0)
    assert trainer.should_stop is True


def _mean_square(out):
    return out.pow(2).mean()


def test_lightning_callback_pickles():
    pytest.importorskip("lightning")
    torch = pytest.importorskip("torch")
    from gradproof.guard import GradientGuardCallback

    callback = GradientGuardCallback(torch.ones(2, 4), _mean_square, at=[3], mode="full")
    copy = pickle.loads(pickle.dumps(callback))
    assert type(copy) is GradientGuardCallback
    assert (copy.guard.at, copy.guard.check_options["mode"]) == ((3,), "full")
    assert repr(copy.guard).startswith("_Guard(at=[3], first=False, on_failure='stop', seed=0")


def test_lightning_callback_without_lightning(monkeypatch):
    for name in ("lightning", "lightning.pytorch", "pytorch_lightning"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(BackendUnavailableError, match="pip install lightning") as caught:
        from gradproof.guard import GradientGuardCallback  # noqa: F401
    assert caught.value.framework == "lightning"
    assert isinstance(caught.value, ImportError)
    with pytest.raises(BackendUnavailableError, match="neither `lightning` nor"):
        _ = gradproof.guard.GradientGuardCallback
