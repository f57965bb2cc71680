"""What a check costs, counted in evaluations (issue 15): each mechanism's count, never a time.

Note [Pay for what the verdict needs] in :mod:`gradproof.checking.remeasure`: the set-up is
the point twice, the noise ladder runs only when a verdict depends on it, and a certain
failure is not re-measured. Counts are exact, so these tests assert them exactly where the
rule gives an exact number.
"""

from __future__ import annotations

import math
import os
import pickle

import numpy as np
import pytest

from gradproof import check
from gradproof.checking.context import LADDER_EVALS
from gradproof.checking.remeasure import CERTAIN_FACTOR
from gradproof.checking.setup import SET_UP_EVALS
from gradproof.corpus.scaling import plant_wrong_entries, relu_network
from gradproof.course import (
    backward_propagation_n,
    forward_propagation_n,
    gradient_check_n_test_case,
    parameter_gradients,
)
from gradproof.results import Verdict

N_ASSIGNMENT = 47
"""Parameters of the classic assignment's network (4-5-3-1)."""


def _ladder_notes(result):
    return [note for note in result.notes if "noise was" in note]


def test_the_set_up_is_the_point_twice():
    assert SET_UP_EVALS == 2
    w = np.linspace(0.1, 2.0, 10)
    result = check(lambda v: float(np.sum(np.sin(v))), np.cos, w, mode="full")
    assert result.passed
    assert result.n_evals == SET_UP_EVALS + 2 * w.size
    assert result.noise_level is None and not _ladder_notes(result)


def test_a_clean_assignment_check_costs_2n_plus_2(network):
    result = check(network.loss, network.corrected_grad, network.params)
    assert result.passed
    assert result.n_evals == 2 * N_ASSIGNMENT + 2  # issue 15's goal: at most 2N + 6
    assert result.n_refined == 0 and not _ladder_notes(result)


def test_the_assignments_two_bugs_cost_at_most_2n_plus_6(network):
    result = check(network.loss, network.shipped_grad, network.params)
    assert result.suspects == ("b1", "W2")
    # The sweep, and one certain failure confirmed at a smaller step (2 evaluations).
    assert result.n_evals == 2 * N_ASSIGNMENT + 2 + 2
    assert result.n_evals <= 2 * N_ASSIGNMENT + 6
    assert result.n_refined == 0 and not _ladder_notes(result)


def test_a_blatant_bug_adds_nothing_for_noise():
    w = np.linspace(0.1, 2.0, 30)
    clean = check(lambda v: float(np.sum(np.sin(v))), np.cos, w)
    wrong = check(lambda v: float(np.sum(np.sin(v))), lambda v: -np.cos(v), w)
    assert wrong.suspects == ("params",)
    assert wrong.noise_level is None and not _ladder_notes(wrong)
    assert wrong.n_evals == clean.n_evals + 2  # the confirmation only, no ladder (40)
    assert wrong.n_refined == 0


def test_a_marginal_failure_measures_the_noise_and_is_re_measured():
    # 1e-4 relative is 10 tolerances (rtol 1e-5): within CERTAIN_FACTOR, so the verdict
    # depends on the error model; the ladder runs once and the entries are re-measured.
    assert CERTAIN_FACTOR > 10
    w = np.linspace(0.1, 2.0, 5)
    result = check(lambda v: float(np.sum(np.sin(v))), lambda v: np.cos(v) * (1 + 1e-4), w)
    assert result.suspects == ("params",)
    assert len(_ladder_notes(result)) == 1
    assert "5 failing coordinates" in _ladder_notes(result)[0]
    assert result.n_refined == 5
    assert result.n_evals > SET_UP_EVALS + 2 * w.size + LADDER_EVALS


def test_a_kink_suspect_runs_the_ladder_once_and_says_why():
    w = np.array([0.0, 1.0, -2.0, 0.5])
    result = check(lambda v: float(np.sum(np.abs(v))), np.sign, w)
    assert result.verdict is Verdict.INCONCLUSIVE
    (note,) = _ladder_notes(result)
    assert "params[0]" in note and "kink suspect" in note
    assert result.n_refined == 1
    # The sweep, the ladder, and the kink test of the one suspect: nothing else.
    assert SET_UP_EVALS + 2 * w.size + LADDER_EVALS < result.n_evals
    assert result.n_evals < SET_UP_EVALS + 2 * w.size + LADDER_EVALS + 40


def test_the_ladder_respects_max_evals_and_says_so():
    w = np.array([0.0, 1.0, -2.0, 0.5])
    result = check(lambda v: float(np.sum(np.abs(v))), np.sign, w, max_evals=30, mode="full")
    assert result.n_evals <= 30
    assert any("not measured" in note and "max_evals=30" in note for note in result.notes)


def test_no_noise_never_runs_the_ladder():
    w = np.array([0.0, 1.0, -2.0, 0.5])
    result = check(lambda v: float(np.sum(np.abs(v))), np.sign, w, noise=False)
    assert result.noise_level is None and not _ladder_notes(result)


def test_a_whole_tensor_factor_bug_costs_at_most_1_1_times_the_clean_sweep():
    net = relu_network((30, 60, 1))
    grad = net.grad(net.params)
    clean = check(net.loss, grad, net.params, mode="full")
    wrong = dict(grad, W1=1.5 * grad["W1"])
    result = check(net.loss, wrong, net.params, mode="full")
    assert result.suspects == ("W1",)
    assert result["W1"].diagnosis is not None
    assert "3/2" in result["W1"].diagnosis.summary
    assert clean.n_evals == SET_UP_EVALS + 2 * net.n_params
    assert result.n_evals <= 1.1 * clean.n_evals


def test_the_batched_path_calls_the_batched_loss_ceil_2n_over_b_times():
    X, Y, params = gradient_check_n_test_case()
    calls = {"single": 0, "batch": 0}

    def loss(p):
        calls["single"] += 1
        return float(forward_propagation_n(X, Y, p)[0])

    def loss_batch(p):
        calls["batch"] += 1
        a1 = np.maximum(0, p["W1"] @ X + p["b1"])
        a2 = np.maximum(0, p["W2"] @ a1 + p["b2"])
        a3 = 1 / (1 + np.exp(-(p["W3"] @ a2 + p["b3"])))
        logprobs = np.multiply(-np.log(a3), Y) + np.multiply(-np.log(1 - a3), 1 - Y)
        return 1.0 / X.shape[1] * np.sum(logprobs, axis=(-2, -1))

    def grad(p):
        return parameter_gradients(backward_propagation_n(X, Y, forward_propagation_n(X, Y, p)[1]))

    result = check(loss, grad, params, loss_batch=loss_batch, batch_size=16, mode="full")
    assert result.suspects == ("b1", "W2")
    assert calls["single"] == SET_UP_EVALS
    # One call to see that the batched loss agrees, ceil(2N / B) for the sweep, one for the
    # confirmation of a certain failure.
    assert calls["batch"] == 1 + math.ceil(2 * N_ASSIGNMENT / 16) + 1


def test_the_pool_gives_the_serial_results_and_counts(network):
    serial = check(network.loss, network.shipped_grad, network.params, mode="full")
    pooled = check(network.loss, network.shipped_grad, network.params, mode="full", executor=2)
    assert pooled.suspects == serial.suspects
    assert pooled.n_evals == serial.n_evals
    for a, b in zip(serial.params, pooled.params, strict=True):
        np.testing.assert_array_equal(a.numeric, b.numeric)  # Note [Identical results]


@pytest.fixture(scope="module")
def wide():
    return relu_network((300, 300, 100, 1))


def test_directional_localisation_of_one_wrong_entry_costs_at_most_60(wide):
    grad = wide.grad(wide.params)
    wrong, planted = plant_wrong_entries(grad, "W1", 1, seed=9)
    result = check(wide.loss, wrong, wide.params, mode="directional")
    assert result.suspects == ("W1",)
    row, column = np.unravel_index(int(planted[0]), wide.params["W1"].shape)
    assert [e.name for e in result["W1"].failures] == [f"W1[{row}, {column}]"]
    assert result.n_evals <= 60
    assert not _ladder_notes(result)


def test_a_parcel_is_read_once_and_its_file_removed(tmp_path):
    from gradproof.engine.tasks import _discard, _pack, _unpack

    x = np.linspace(0.0, 1.0, 1000)
    parcel = _pack(pickle.dumps(np.sum), x)
    fun, point = _unpack(parcel)
    assert fun is np.sum
    np.testing.assert_array_equal(point, x)
    _discard(parcel)
    assert not os.path.exists(parcel.path)
    # Later tasks of the sweep find it loaded: the file is no longer needed.
    again, point_again = _unpack(parcel)
    assert again is fun and point_again is point


def test_process_pool_tasks_carry_neither_the_function_nor_the_point(monkeypatch):
    from gradproof.engine import pools, processes
    from gradproof.engine.execution import ProcessEngine
    from gradproof.engine.tasks import _Parcel

    monkeypatch.setattr(processes, "_POOL_START_SECONDS", 0.0)
    monkeypatch.setattr(pools, "_DISPATCH_SECONDS", 0.0)
    monkeypatch.setattr(pools, "_CALIBRATION_SECONDS", 0.0)
    x = np.linspace(-1.0, 1.0, 200)
    columns = (x - 1e-3, x + 1e-3)
    sent = []
    with ProcessEngine(2) as engine:
        submit = engine._submit

        def recording(task):
            sent.append(task)
            return submit(task)

        monkeypatch.setattr(engine, "_submit", recording)
        samples = engine.sample(np.sum, x, columns)
    assert sent and all(isinstance(t.fun, _Parcel) and t.x is None for t in sent)
    assert len({t.fun.key for t in sent}) == 1  # one parcel for the sweep
    assert not os.path.exists(sent[0].fun.path)  # removed when the sweep ended
    expected = np.array([[np.sum(np.where(np.arange(x.size) == i, c[i], x)) for i in range(x.size)]
                         for c in columns])  # fmt: skip
    np.testing.assert_array_equal(samples.values, expected)


def test_dask_tasks_receive_the_scattered_function_and_point():
    distributed = pytest.importorskip("dask.distributed")
    from gradproof.engine import pools
    from gradproof.engine.execution import ExecutorEngine
    from gradproof.engine.tasks import _run_shipped
    from gradproof.numerics.finite_diff import sample

    x = np.linspace(-1.0, 1.0, 200)
    columns = (x - 1e-3, x + 1e-3)
    with (
        pytest.MonkeyPatch.context() as patch,
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        patch.setattr(pools, "_DISPATCH_SECONDS", 0.0)
        patch.setattr(pools, "_CALIBRATION_SECONDS", 0.0)
        executor = client.get_executor()
        submitted = []
        submit = executor.submit

        def recording(fn, *args):
            submitted.append(fn)
            return submit(fn, *args)

        patch.setattr(executor, "submit", recording)
        with ExecutorEngine(executor) as engine:
            samples = engine.sample(np.sum, x, columns)
    assert submitted and set(submitted) == {_run_shipped}
    expected = sample(np.sum, x, columns)
    np.testing.assert_array_equal(samples.values, expected.values)


def test_a_budget_without_room_for_the_confirmation_keeps_the_verdict_and_says_so():
    w = np.linspace(0.1, 2.0, 10)
    sweep = SET_UP_EVALS + 2 * w.size
    tight = check(lambda v: float(np.sum(np.sin(v))), lambda v: -np.cos(v), w, max_evals=sweep)
    assert tight.suspects == ("params",) and tight.stop_reason is None
    assert tight.n_evals == sweep
    assert any("not confirmed" in note and "max_evals" in note for note in tight.notes)
    roomy = check(lambda v: float(np.sum(np.sin(v))), lambda v: -np.cos(v), w, max_evals=sweep + 2)
    assert roomy.n_evals == sweep + 2 and not any("not confirmed" in n for n in roomy.notes)


def test_a_threaded_loss_keeps_the_process_pool_idle_and_says_why(monkeypatch):
    from gradproof.engine import pools, processes
    from gradproof.engine.execution import ProcessEngine

    monkeypatch.setattr(processes, "_POOL_START_SECONDS", 0.0)
    monkeypatch.setattr(pools, "_DISPATCH_SECONDS", 0.0)
    monkeypatch.setattr(pools, "_CALIBRATION_SECONDS", 0.0)
    engine = ProcessEngine(2)
    # Note [Threaded losses]: at least 3/4 of the CPUs busy from this process alone.
    assert engine._threaded(1.5, 2) and not engine._threaded(1.2, 2)
    assert not engine._threaded(1.0, 1)  # one core: nothing to compete for
    monkeypatch.setattr(pools, "_available_cpus", lambda: 2)
    monkeypatch.setattr(engine, "_threaded", lambda busy, cpus: True)
    monkeypatch.setattr(engine, "_submit", lambda task: pytest.fail("a task was submitted"))
    x = np.linspace(-1.0, 1.0, 50)
    with engine:
        samples = engine.sample(np.sum, x, (x - 1e-3, x + 1e-3))
    assert samples.measured.all() and engine.worker_evals == 0
    (note,) = engine.notes
    assert "already keeps about" in note and "OMP_NUM_THREADS=1" in note
