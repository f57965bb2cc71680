"""Checking strategies: full, directional with localisation, sampled, and the automatic choice."""

from __future__ import annotations

import importlib
import math
import time
import tracemalloc
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gradproof import InputError, Verdict, check, corpus
from gradproof.checking.probes import Probe, probe_analytic, probe_weights
from gradproof.checking.setup import AUTO_FULL_ENTRIES, SET_UP_EVALS
from gradproof.corpus.scaling import plant_wrong_entries, relu_network
from gradproof.numerics.sampling import miss_chance, sample_indices
from gradproof.tree import ParamTree
from tests.helpers import assert_same, snapshot

CHECK_RUN = importlib.import_module(
    "gradproof.checking.run"
)  # where the budget is read  # `gradproof.check` is the function


@pytest.fixture(scope="module")
def wide():
    """A ReLU network of 120,501 parameters, cheap to evaluate (16 examples)."""
    return relu_network((300, 300, 100, 1), n_examples=16, seed=3)


@pytest.fixture(scope="module")
def wide_grad(wide):
    return wide.grad(wide.params)


def flat_position(report, entry):
    return int(np.ravel_multi_index(entry.index, report.shape))


# -- directional ----------------------------------------------------------------------------------
def test_directional_passes_correct_network_with_two_evaluations_per_tensor(wide, wide_grad):
    result = check(wide.loss, wide_grad, wide.params, mode="directional")
    assert result.passed, str(result)
    assert result.mode == "directional"
    assert result.n_probes == len(wide.params)
    assert result.n_evals == SET_UP_EVALS + 2 * len(wide.params)
    for report in result.params:
        assert report.strategy == "directional"
        assert report.n_checked == 0
        (probe,) = report.probes
        assert probe.verdict is Verdict.PASS
        assert (probe.start, probe.stop) == (0, report.n_entries)
        # The probe's tolerance is relative to its own directional derivative, not to the
        # tensor's size: a few times rtol, whatever the number of entries.
        assert probe.tolerance < 1e-3 * abs(probe.analytic) + 1e-9


def test_one_wrong_entry_in_a_million_is_found_with_its_index_in_under_100_evaluations():
    net = relu_network((1000, 1000, 1), n_examples=4, seed=0)
    assert net.n_params > 1_000_000
    wrong, planted = plant_wrong_entries(net.grad(net.params), "W1", 1, seed=5)
    result = check(net.loss, wrong, net.params, mode="directional")
    assert result.suspects == ("W1",)
    report = result["W1"]
    assert [flat_position(report, e) for e in report.failures] == planted.tolist()
    (entry,) = report.failures
    assert entry.analytic == wrong["W1"].flat[planted[0]]
    correct = net.grad(net.params)["W1"].flat[planted[0]]
    assert entry.numeric == pytest.approx(correct, rel=1e-6, abs=1e-12)
    assert result.n_evals <= 100
    assert report.diagnosis is not None and report.diagnosis.kind == "few_entries"


def test_ten_wrong_entries_are_all_found_and_nothing_else(wide, wide_grad):
    wrong, planted = plant_wrong_entries(wide_grad, "W1", 10, seed=2)
    result = check(wide.loss, wrong, wide.params, mode="directional")
    report = result["W1"]
    assert result.suspects == ("W1",)
    assert sorted(flat_position(report, e) for e in report.failures) == planted.tolist()
    assert report.n_failed == 10
    # About 2 k log2(n / k) evaluations, far below the 2 n of a sweep.
    bound = SET_UP_EVALS + 2 * len(wide.params) + 4 * 10 * math.log2(wide.n_params / 10)
    assert result.n_evals < bound
    assert not result.notes, result.notes


def test_errors_that_cancel_along_the_first_direction_are_found_along_a_second():
    # Seed 15 plants 10 errors in W1 of which 5 lie in one half of the tensor and, weighted
    # by the first direction, sum to less than that half's tolerance: halving along it finds
    # only the other 5, and those account for its whole discrepancy. The confirming direction
    # shows the shortfall, and the search along it finds the rest.
    net = relu_network((100, 100, 1))
    correct = net.grad(net.params)
    wrong, planted = plant_wrong_entries(correct, "W1", 10, seed=15)
    result = check(net.loss, wrong, net.params, mode="directional")
    report = result["W1"]
    assert sorted(flat_position(report, e) for e in report.failures) == planted.tolist()
    assert result.suspects == ("W1",)
    (note,) = result.notes
    assert note.startswith("W1: the 5 wrong entries found along its first random direction")
    assert note.endswith("the search along 1 more found 5 more.")
    # Errors cancelling along the first direction: the first half-split misses 5 of them.
    half = report.shape[0] * report.shape[1] // 2
    top = next(p for p in report.probes if p.draw == 0)
    weights = probe_weights(Probe(0, 0, 2 * half, 0), net.params["W1"].ravel(), 0)
    errors = (wrong["W1"] - correct["W1"]).ravel()
    second = planted[planted >= half]
    assert abs(float(weights[second] @ errors[second])) < top.tolerance
    assert len(second) == 5


def test_the_confirming_direction_costs_two_evaluations_per_failing_tensor(wide, wide_grad):
    wrong, _ = plant_wrong_entries(wide_grad, "W2", 1, seed=4)
    result = check(wide.loss, wrong, wide.params, mode="directional")
    draws = sorted(p.draw for p in result["W2"].probes)
    assert draws == [0, 2]  # the tensor's probe, then one fresh direction (1 is for kinks)
    assert all(len(result[name].probes) == 1 for name in ("W1", "b1", "W3", "b3"))
    assert not result.notes


def test_wrong_entries_found_by_localisation_match_the_full_sweep():
    net = relu_network((40, 30, 1), n_examples=32, seed=1)
    wrong, planted = plant_wrong_entries(net.grad(net.params), "W2", 3, seed=4)
    directional = check(net.loss, wrong, net.params, mode="directional")
    full = check(net.loss, wrong, net.params, mode="full")
    assert directional.suspects == full.suspects == ("W2",)
    report = directional["W2"]
    assert sorted(flat_position(report, e) for e in report.failures) == planted.tolist()
    by_name = {e.name: e for e in full["W2"].failures}
    assert sorted(by_name) == sorted(e.name for e in directional["W2"].failures)
    for entry in directional["W2"].failures:
        assert entry.analytic == by_name[entry.name].analytic
        assert entry.numeric == pytest.approx(by_name[entry.name].numeric, rel=1e-7)
    assert directional.n_evals < full.n_evals / 4


def test_a_bug_on_every_entry_stops_halving_and_still_diagnoses_the_factor(wide, wide_grad):
    wrong = dict(wide_grad, W2=2 * wide_grad["W2"])
    result = check(wide.loss, wrong, wide.params, mode="directional")
    assert result.suspects == ("W2",)
    diagnosis = result["W2"].diagnosis
    assert diagnosis is not None and diagnosis.kind == "scale"
    assert "2 × numeric" in diagnosis.summary
    report = result["W2"]
    assert any("touches many entries" in note for note in result.notes)
    assert 16 <= report.n_checked <= 64
    assert result.n_evals < 600


def test_sign_flip_of_a_small_tensor_is_caught(wide, wide_grad):
    wrong = dict(wide_grad, b3=-wide_grad["b3"])
    result = check(wide.loss, wrong, wide.params, mode="directional")
    assert result.suspects == ("b3",)
    diagnosis = result["b3"].diagnosis
    assert diagnosis is not None and diagnosis.kind == "sign"


def test_max_evals_stops_localisation_but_keeps_the_failure(wide, wide_grad):
    wrong, _ = plant_wrong_entries(wide_grad, "W1", 1, seed=9)
    # The whole search takes 54 evaluations: 30 stop it half way.
    result = check(wide.loss, wrong, wide.params, mode="directional", max_evals=30)
    assert result.suspects == ("W1",)
    assert result["W1"].verdict is Verdict.FAIL
    assert result["W1"].probes[0].verdict is Verdict.FAIL
    assert any("max_evals=30" in note for note in result.notes)
    assert result.n_evals <= 30


def test_more_probes_per_tensor(wide, wide_grad):
    result = check(wide.loss, wide_grad, wide.params, mode="directional", n_probes=3)
    assert result.passed
    assert all(len(p.probes) == 3 for p in result.params)
    assert {p.draw for p in result["W1"].probes} == {0, 1, 2}


@pytest.mark.parametrize("case", corpus.cases(), ids=lambda c: c.name)
def test_directional_never_calls_correct_corpus_code_wrong(case):
    result = check(case.loss, case.grad, case.params, seed=case.seed, mode="directional")
    assert result.verdict is not Verdict.FAIL, str(result)
    if not case.hard_point:
        assert result.passed, str(result)


@pytest.mark.parametrize("case_bug", corpus.bugs(), ids=lambda cb: f"{cb[0].name}/{cb[1].name}")
def test_directional_pins_every_corpus_bug_to_its_parameters(case_bug):
    case, bug = case_bug
    result = check(case.loss, bug.grad, case.params, seed=case.seed, mode="directional")
    assert set(result.suspects) == set(bug.wrong), str(result)


def test_directional_checks_do_not_modify_the_callers_arrays(wide, wide_grad):
    before, grads_before = snapshot(wide.params), snapshot(wide_grad)
    wrong, _ = plant_wrong_entries(wide_grad, "W2", 2)
    check(wide.loss, wrong, wide.params, mode="directional")
    assert_same(wide.params, before)
    assert_same(wide_grad, grads_before)


def test_directional_memory_stays_a_few_copies_of_the_parameters():
    net = relu_network((1000, 1000, 1), n_examples=2, seed=0)
    wrong, _ = plant_wrong_entries(net.grad(net.params), "W1", 1, seed=1)
    copy_bytes = net.n_params * 8
    tracemalloc.start()
    try:
        check(net.loss, wrong, net.params, mode="directional")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # An n-by-n matrix would be a million copies; the check holds a few dozen vectors at its
    # peak (the reports' arrays and the diagnosis's temporaries), whatever n is.
    assert peak < 40 * copy_bytes, peak / copy_bytes


# -- probes ---------------------------------------------------------------------------------------
@settings(max_examples=50, deadline=None)
@given(
    n=st.integers(3, 500),
    cut=st.floats(0.01, 0.99),
    seed=st.integers(0, 2**31),
    draw=st.integers(0, 5),
)
def test_probe_derivatives_add_up_over_a_split(n, cut, seed, draw):
    rng = np.random.default_rng(seed)
    x0, gradient = rng.standard_normal(n) * 3, rng.standard_normal(n)
    middle = max(1, min(n - 1, int(cut * n)))
    whole = Probe(0, 0, n, draw)
    left, right = Probe(0, 0, middle, draw), Probe(0, middle, n, draw)
    weights = probe_weights(whole, x0, seed)
    assert np.array_equal(weights[:middle], probe_weights(left, x0, seed))
    assert np.all(np.abs(weights) >= 0.5 * np.maximum(1, np.abs(x0)))
    assert np.all(np.abs(weights) < 1.5 * np.maximum(1, np.abs(x0)))
    a_whole, a_left, a_right = probe_analytic([whole, left, right], gradient, x0, seed)
    assert a_whole == pytest.approx(a_left + a_right, rel=1e-12, abs=1e-12)


def test_probe_weights_have_balanced_signs_and_differ_between_draws():
    x0 = np.zeros(100_000)
    first = probe_weights(Probe(0, 0, x0.size, 0), x0, seed=0)
    second = probe_weights(Probe(0, 0, x0.size, 1), x0, seed=0)
    assert abs(np.mean(np.sign(first))) < 0.01
    assert np.mean(np.abs(first)) == pytest.approx(1.0, abs=0.01)
    assert np.mean(np.sign(first) == np.sign(second)) == pytest.approx(0.5, abs=0.01)


# -- sampled --------------------------------------------------------------------------------------
def test_sampled_mode_measures_the_requested_entries_and_reports_coverage(wide, wide_grad):
    result = check(wide.loss, wide_grad, wide.params, mode="sampled", n_samples=400)
    assert result.passed and result.mode == "sampled"
    assert 400 <= result.n_checked <= 400 + 8 * len(wide.params)
    w1 = result["W1"]
    assert w1.strategy == "sampled"
    assert w1.coverage == w1.n_checked / w1.n_entries
    assert w1.miss_chance(0.01) == pytest.approx((1 - 0.01) ** w1.n_checked, rel=0.05)
    assert result["b3"].coverage == 1.0 and result["b3"].miss_chance(0.01) == 0.0


def test_sampled_mode_catches_a_dense_bug(wide, wide_grad):
    wrong = dict(wide_grad, b1=wide_grad["b1"] * 0.5)
    result = check(wide.loss, wrong, wide.params, mode="sampled", n_samples=200)
    assert result.suspects == ("b1",)
    diagnosis = result["b1"].diagnosis
    assert diagnosis is not None and diagnosis.kind == "scale"


def test_sampled_mode_fits_the_budget(wide, wide_grad):
    result = check(wide.loss, wide_grad, wide.params, mode="sampled", max_evals=600)
    assert result.n_evals <= 600 + 2 * 8 * len(wide.params)
    assert result.n_checked >= 250


def test_sample_indices_cover_every_tensor_without_repeats():
    tree, _ = ParamTree.flatten({"W": np.zeros((50, 40)), "b": np.zeros(3), "c": np.zeros(20)})
    picked = sample_indices(tree, 100, seed=1)
    assert np.unique(picked).size == picked.size
    assert ((picked >= 2000) & (picked < 2003)).sum() == 3
    assert (picked >= 2003).sum() == 8
    assert np.array_equal(picked, sample_indices(tree, 100, seed=1))


@pytest.mark.parametrize(("n", "m", "density"), [(100, 10, 0.05), (1000, 300, 0.01), (50, 1, 0.5)])
def test_miss_chance_is_the_hypergeometric_probability(n, m, density):
    wrong = max(1, math.ceil(density * n))
    expected = math.comb(n - wrong, m) / math.comb(n, m)
    assert miss_chance(n, m, density) == pytest.approx(expected, rel=1e-9)


# -- auto -----------------------------------------------------------------------------------------
def test_auto_sweeps_small_models_in_full(network):
    result = check(network.loss, network.corrected_grad, network.params)
    assert result.mode == "full"
    assert result.n_checked == result.n_entries


def test_auto_probes_models_above_the_full_limit(wide, wide_grad):
    assert wide.n_params > AUTO_FULL_ENTRIES
    result = check(wide.loss, wide_grad, wide.params)
    assert result.mode == "directional" and result.passed


def test_auto_follows_the_evaluation_budget(network):
    full = check(network.loss, network.shipped_grad, network.params, max_evals=1000)
    assert full.mode == "full"
    probed = check(network.loss, network.shipped_grad, network.params, max_evals=80)
    assert probed.mode == "directional"
    assert set(probed.suspects) == {"W2", "b1"}
    assert probed.max_evals == 80


def test_a_time_budget_too_small_for_any_verdict_is_refused_with_the_minimum(network):
    with pytest.raises(InputError, match=r"time_budget=1e-09.* need \d+ evaluations"):
        check(network.loss, network.corrected_grad, network.params, time_budget=1e-9)


def test_time_budget_turns_into_an_evaluation_budget(network, monkeypatch):
    # One evaluation "takes" 1 ms: 0.05 s buys 50 evaluations, too few for a full sweep (96).
    original = CHECK_RUN._budget

    def budget_at_one_ms(max_evals, time_budget, seconds_per_eval, engine):
        return original(max_evals, time_budget, 1e-3, engine)

    monkeypatch.setattr(CHECK_RUN, "_budget", budget_at_one_ms)
    result = check(network.loss, network.corrected_grad, network.params, time_budget=0.05)
    assert result.mode == "directional"
    assert result.max_evals == 50


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"mode": "fast"}, "`mode` must be one of"),
        ({"max_evals": 0}, "`max_evals` must be a positive integer"),
        ({"n_samples": 2.5}, "`n_samples` must be a positive integer"),
        ({"n_probes": 0}, "`n_probes` must be a positive integer"),
        ({"time_budget": -1.0}, "`time_budget` must be a positive number"),
        ({"batch_size": 8}, "`batch_size` was given without `loss_batch`"),
        ({"loss_batch": 3}, "`loss_batch` must be a function"),
    ],
)
def test_strategy_options_are_validated(network, options, message):
    with pytest.raises(InputError, match=message):
        check(network.loss, network.corrected_grad, network.params, **options)


# -- engines end to end ---------------------------------------------------------------------------
def _arrays(result):
    return [(p.name, p.analytic.copy(), p.numeric.copy()) for p in result.params]


def _assert_identical(first, second):
    assert first.verdict == second.verdict
    assert first.n_evals == second.n_evals
    for (name, a1, n1), (_, a2, n2) in zip(_arrays(first), _arrays(second), strict=True):
        np.testing.assert_array_equal(a1, a2, err_msg=name)
        np.testing.assert_array_equal(n1, n2, err_msg=name)


@pytest.mark.parametrize("mode", ["full", "directional"])
def test_results_are_identical_in_a_process_pool_and_a_thread_pool(mode, network):
    serial = check(network.loss, network.shipped_grad, network.params, mode=mode)
    pooled = check(network.loss, network.shipped_grad, network.params, mode=mode, executor=2)
    assert pooled.engine != serial.engine == "serial"
    _assert_identical(serial, pooled)
    with ThreadPoolExecutor(2) as pool:
        threaded = check(
            network.loss, network.shipped_grad, network.params, mode=mode, executor=pool
        )
    _assert_identical(serial, threaded)


def test_batched_loss_gives_the_same_verdicts_with_fewer_calls():
    net = relu_network((20, 30, 10, 1), n_examples=16, seed=2)
    wrong, _ = plant_wrong_entries(net.grad(net.params), "W2", 2, seed=3)
    calls = {"n": 0}

    def counted_batch(stacked):
        calls["n"] += 1
        return net.loss_batch(stacked)

    serial = check(net.loss, wrong, net.params, mode="full")
    batched = check(
        net.loss, wrong, net.params, mode="full", loss_batch=counted_batch, batch_size=32
    )
    assert batched.suspects == serial.suspects == ("W2",)
    assert sorted(e.name for e in batched["W2"].failures) == sorted(
        e.name for e in serial["W2"].failures
    )
    for b, s in zip(batched.params, serial.params, strict=True):
        np.testing.assert_allclose(b.numeric, s.numeric, rtol=1e-6, atol=1e-12)
    assert calls["n"] < serial.n_evals / 16
    assert "batches of 32" in batched.engine


def test_a_batched_loss_that_computes_something_else_is_refused(network):
    with pytest.raises(InputError, match="`loss_batch` returned"):
        check(
            network.loss,
            network.corrected_grad,
            network.params,
            loss_batch=lambda stacked: np.zeros(len(stacked["W1"])),
        )


# -- interruption ---------------------------------------------------------------------------------
def test_ctrl_c_during_localisation_returns_what_was_measured(wide, wide_grad):
    wrong, _ = plant_wrong_entries(wide_grad, "W1", 1, seed=9)
    calls = {"n": 0}

    def interrupted_loss(p):
        calls["n"] += 1
        if calls["n"] == 30:  # half way through the 54 evaluations of the search
            raise KeyboardInterrupt
        return wide.loss(p)

    result = check(interrupted_loss, wrong, wide.params, mode="directional")
    assert result.interrupted
    assert result.verdict is not Verdict.PASS
    assert result["W1"].probes[0].verdict is Verdict.FAIL


def test_a_long_check_shows_a_progress_bar_when_asked(capsys):
    def slow_loss(w):
        time.sleep(0.002)
        return float(np.sum(w**2))

    w = np.linspace(-1.0, 1.0, 60)
    result = check(slow_loss, 2 * w, w, progress=True, noise=False)
    assert result.passed
    err = capsys.readouterr().err
    assert "evaluations" in err and "%" in err
    check(slow_loss, 2 * w, w, noise=False)  # not a terminal here: silent by default
    assert capsys.readouterr().err == ""


def test_an_interrupted_directional_check_says_what_it_covered(wide, wide_grad):
    calls = {"n": 0}

    def interrupted_loss(p):
        calls["n"] += 1
        if calls["n"] == 8:  # among the 2 + 12 evaluations of set-up and probes
            raise KeyboardInterrupt
        return wide.loss(p)

    result = check(interrupted_loss, wide_grad, wide.params, mode="directional")
    assert result.interrupted and result.verdict is Verdict.INCONCLUSIVE
    assert "interrupted after" in str(result) and "directional probes" in str(result)
