"""Evaluation engines: every engine gives finite_diff.sample's values, bit for bit.

Equality is asserted with ``np.array_equal`` (exact), never with a tolerance:
an engine only moves values around, so any difference is a bug. Batched
engines use ``RowWise``, whose batched and single forms agree bit for bit by
construction (see its docstring).
"""

from __future__ import annotations

import math
import multiprocessing
import pickle
import sys
import time
from collections import namedtuple
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from gradproof.errors import InputError, UserCodeError
from gradproof.execution import (
    Engine,
    ExecutorEngine,
    ProcessEngine,
    SerialEngine,
    _split,
    make_engine,
)
from gradproof.finite_diff import Samples, sample
from gradproof.progress import Progress
from gradproof.tree import ParamTree
from tests.helpers_execution import (
    InterruptWhenMoved,
    KeywordOnlyError,
    RecordingRowWise,
    RowWise,
    raise_keyword_only_error,
    raise_user_code_error,
    raise_value_error,
    sines,
    slow_sines,
)

N = 40
RNG = np.random.default_rng(7)
X = RNG.normal(size=N)
COLUMNS = (X - 1e-3, X + 2e-3, X + 5e-3)  # k = 3 offsets
FUN = RowWise(RNG.normal(size=N))
SUBSET = RNG.permutation(N)[:23]  # a strict subset, shuffled


def assert_identical(actual: Samples, expected: Samples) -> None:
    np.testing.assert_array_equal(actual.values, expected.values, strict=True)
    np.testing.assert_array_equal(actual.measured, expected.measured, strict=True)
    assert actual.n_evals == expected.n_evals
    assert actual.interrupted == expected.interrupted


# -- ParamTree.unflatten_batch ------------------------------------------------------------------
def stacked(tree: ParamTree, vectors: np.ndarray, get) -> np.ndarray:
    return np.stack([np.asarray(get(tree.unflatten(row))) for row in vectors])


def test_unflatten_batch_dict_of_arrays_is_a_view():
    tree, x = ParamTree.flatten({"W": np.arange(6.0).reshape(2, 3), "b": np.ones(3)})
    vectors = np.stack([x, x + 1, x * 2, -x])
    batch = tree.unflatten_batch(vectors)
    assert list(batch) == ["W", "b"]
    assert batch["W"].shape == (4, 2, 3) and batch["b"].shape == (4, 3)
    np.testing.assert_array_equal(batch["W"], stacked(tree, vectors, lambda p: p["W"]))
    np.testing.assert_array_equal(batch["b"], stacked(tree, vectors, lambda p: p["b"]))
    assert np.shares_memory(batch["W"], vectors) and np.shares_memory(batch["b"], vectors)


def test_unflatten_batch_nested_list_and_namedtuple():
    Pair = namedtuple("Pair", ["weight", "bias"])
    params = [Pair(np.ones((2, 2)), np.zeros(2)), [np.full(3, 2.0)]]
    tree, x = ParamTree.flatten(params)
    vectors = np.stack([x + i for i in range(3)])
    batch = tree.unflatten_batch(vectors)
    assert isinstance(batch, list) and isinstance(batch[0], Pair) and isinstance(batch[1], list)
    np.testing.assert_array_equal(batch[0].weight, stacked(tree, vectors, lambda p: p[0].weight))
    np.testing.assert_array_equal(batch[0].bias, stacked(tree, vectors, lambda p: p[0].bias))
    np.testing.assert_array_equal(batch[1][0], stacked(tree, vectors, lambda p: p[1][0]))
    assert batch[1][0].shape == (3, 3)


def test_unflatten_batch_scalar_and_float32_leaves():
    params = {"a": 1.5, "s": np.float32(2.5), "h": np.array([1.0, 2.0], dtype=np.float32)}
    tree, x = ParamTree.flatten(params)
    vectors = np.stack([x, x / 3, x * 7])
    batch = tree.unflatten_batch(vectors)
    assert batch["a"].shape == (3,) and batch["a"].dtype == np.float64
    assert batch["s"].shape == (3,) and batch["s"].dtype == np.float32
    assert batch["h"].shape == (3, 2) and batch["h"].dtype == np.float32
    for key in params:
        expected = stacked(tree, vectors, lambda p, key=key: p[key])
        np.testing.assert_array_equal(batch[key], expected, strict=True)


def test_unflatten_batch_refuses_a_wrong_shape():
    tree, x = ParamTree.flatten({"W": np.ones(3)})
    with pytest.raises(InputError, match=r"`vectors` has shape \(3,\); expected \(B, 3\)"):
        tree.unflatten_batch(x)
    with pytest.raises(InputError, match=r"expected \(B, 3\)"):
        tree.unflatten_batch(np.ones((2, 4)))


# -- every engine gives serial finite_diff.sample's values --------------------------------------
def _serial():
    return SerialEngine()


def _serial_batched():
    return SerialEngine(batch_size=7)


def _processes():
    return ProcessEngine(2)


def _processes_batched():
    return ProcessEngine(2, batch_size=5)


def _threads(pool):
    return ExecutorEngine(pool)


ENGINES = {
    "serial": _serial,
    "serial-batched": _serial_batched,
    "processes": _processes,
    "processes-batched": _processes_batched,
}


@pytest.mark.parametrize("make", list(ENGINES.values()), ids=list(ENGINES))
@pytest.mark.parametrize("indices", [None, SUBSET], ids=["all", "shuffled-subset"])
def test_engine_matches_serial_sample(make, indices):
    expected = sample(FUN, X, COLUMNS, indices=indices)
    x_before = X.copy()
    with make() as engine:
        actual = engine.sample(FUN, X, COLUMNS, indices=indices)
    assert_identical(actual, expected)
    np.testing.assert_array_equal(X, x_before)


@pytest.mark.parametrize("batch_size", [None, 4], ids=["single", "batched"])
@pytest.mark.parametrize("indices", [None, SUBSET], ids=["all", "shuffled-subset"])
def test_thread_pool_matches_serial_sample(batch_size, indices):
    expected = sample(FUN, X, COLUMNS, indices=indices)
    with ThreadPoolExecutor(3) as pool, ExecutorEngine(pool, batch_size=batch_size) as engine:
        actual = engine.sample(FUN, X, COLUMNS, indices=indices)
    assert_identical(actual, expected)


def test_a_function_without_batch_ignores_batch_size():
    expected = sample(sines, X, COLUMNS, indices=SUBSET)
    with SerialEngine(batch_size=8) as engine:
        assert_identical(engine.sample(sines, X, COLUMNS, indices=SUBSET), expected)


def test_serial_engine_grows_its_chunks_without_changing_values():
    # Enough coordinates for several chunk sizes (1, 2, 4, ...); values stay identical.
    x = RNG.normal(size=3000)
    columns = (x - 1e-4, x + 1e-4)
    with SerialEngine() as engine:
        assert_identical(engine.sample(sines, x, columns), sample(sines, x, columns))
    fun = RowWise(RNG.normal(size=400))
    with SerialEngine(batch_size=64) as engine:
        batched = engine.sample(fun, x[:400], columns=(x[:400] - 1e-4, x[:400] + 1e-4))
    assert_identical(batched, sample(fun, x[:400], (x[:400] - 1e-4, x[:400] + 1e-4)))


def test_no_indices_means_no_evaluations():
    empty = np.array([], dtype=np.intp)
    for engine in (SerialEngine(), ProcessEngine(2)):
        with engine:
            result = engine.sample(FUN, X, COLUMNS, indices=empty)
        assert result.n_evals == 0 and not result.measured.any()
        assert np.isnan(result.values).all() and result.values.shape == (3, N)


# -- pickling the loss for worker processes -----------------------------------------------------
def test_lambdas_and_closures_reach_worker_processes():
    weights = np.linspace(0.5, 2.0, N)

    def closure(v):
        return float(np.sum(np.cos(v) * weights))

    with ProcessEngine(2) as engine:
        for fun in (lambda v: float(np.sum(v**3)), closure):
            assert_identical(engine.sample(fun, X, COLUMNS), sample(fun, X, COLUMNS))


def test_without_cloudpickle_a_lambda_is_refused_with_the_fixes(monkeypatch):
    monkeypatch.setitem(sys.modules, "cloudpickle", None)  # `import cloudpickle` now fails
    with (
        ProcessEngine(2) as engine,
        pytest.raises(InputError, match="cannot be sent to worker processes") as info,
    ):
        engine.sample(lambda v: float(v.sum()), X, COLUMNS)
    message = str(info.value)
    assert "<lambda>" in message and "pip install cloudpickle" in message
    assert "executor=None" in message and "top level of a module" in message


def test_without_cloudpickle_a_module_level_function_works(monkeypatch):
    monkeypatch.setitem(sys.modules, "cloudpickle", None)
    with ProcessEngine(2) as engine:
        assert_identical(engine.sample(sines, X, COLUMNS), sample(sines, X, COLUMNS))


def test_spawned_workers_import_a_module_level_function():
    spawn = multiprocessing.get_context("spawn")
    with ProcessEngine(2, batch_size=6, mp_context=spawn) as engine:
        actual = engine.sample(FUN, X, COLUMNS, indices=SUBSET)
    assert_identical(actual, sample(FUN, X, COLUMNS, indices=SUBSET))


# -- batched evaluation -------------------------------------------------------------------------
def assert_rows_move_one_coordinate(stacks, x, batch_size):
    for stack in stacks:
        assert 1 <= len(stack) <= batch_size
        moved = (stack != x).sum(axis=1)
        np.testing.assert_array_equal(moved, np.ones(len(stack), dtype=int))


def test_serial_batches_fill_whole_stacks_and_restore_them():
    fun = RecordingRowWise(FUN.weights)
    batch_size = 8
    with SerialEngine(batch_size=batch_size) as engine:
        result = engine.sample(fun, X, COLUMNS, indices=SUBSET)
    # Chunks hold whole batches, so only the last stack can be short.
    assert len(fun.stacks) == math.ceil(len(COLUMNS) * SUBSET.size / batch_size)
    assert [len(s) for s in fun.stacks[:-1]] == [batch_size] * (len(fun.stacks) - 1)
    assert_rows_move_one_coordinate(fun.stacks, X, batch_size)
    assert result.n_evals == len(COLUMNS) * SUBSET.size


def test_pooled_batches_per_chunk_and_restore_them():
    fun = RecordingRowWise(FUN.weights)
    batch_size = 5
    with ThreadPoolExecutor(2) as pool, ExecutorEngine(pool, batch_size=batch_size) as engine:
        result = engine.sample(fun, X, COLUMNS, indices=SUBSET)
    chunks = _split(SUBSET, 2)
    assert len(chunks) == 8  # four per worker
    expected_calls = sum(math.ceil(len(COLUMNS) * len(c) / batch_size) for c in chunks)
    assert len(fun.stacks) == expected_calls
    assert_rows_move_one_coordinate(fun.stacks, X, batch_size)
    assert_identical(result, sample(FUN, X, COLUMNS, indices=SUBSET))


def test_batch_of_the_wrong_shape_is_refused():
    class Bad(RowWise):
        def batch(self, vectors):
            return np.zeros(len(vectors) + 1)

    with SerialEngine(batch_size=4) as engine, pytest.raises(InputError, match=r"shape \(5,\)"):
        engine.sample(Bad(FUN.weights), X, COLUMNS)


# -- errors in workers --------------------------------------------------------------------------
def test_user_code_error_survives_pickle():
    error = pickle.loads(pickle.dumps(UserCodeError("boom", function="grad")))
    assert type(error) is UserCodeError and str(error) == "boom" and error.function == "grad"


@pytest.mark.parametrize(
    ("fun", "kind", "message"),
    [
        (
            raise_user_code_error,
            UserCodeError,
            "`loss` raised ValueError at a perturbed point: boom",
        ),
        (raise_value_error, ValueError, "plain boom"),
    ],
    ids=["UserCodeError", "ValueError"],
)
def test_worker_exception_re_raises_with_type_and_message(fun, kind, message):
    with ProcessEngine(2) as engine:
        with pytest.raises(kind) as info:
            engine.sample(fun, X, COLUMNS)
        assert type(info.value) is kind and str(info.value) == message
        if kind is UserCodeError:
            assert info.value.function == "loss"
        assert info.value.__cause__ is not None  # the worker's traceback, as text
        # The engine recovers: a fresh pool answers the next call.
        assert_identical(engine.sample(sines, X, COLUMNS), sample(sines, X, COLUMNS))


def test_an_exception_pickle_cannot_rebuild_keeps_its_type_message_and_state():
    with ProcessEngine(2) as engine, pytest.raises(KeywordOnlyError) as info:
        engine.sample(raise_keyword_only_error, X, COLUMNS)
    assert str(info.value) == "needs its code" and info.value.code == 42
    assert "raise KeywordOnlyError" in str(info.value.__cause__)  # the worker's traceback


def test_an_exception_of_a_class_workers_cannot_name_becomes_a_runtime_error():
    class LocalError(Exception):
        pass

    def fun(v):
        raise LocalError("local boom")

    with ProcessEngine(2) as engine, pytest.raises(RuntimeError, match="LocalError: local boom"):
        engine.sample(fun, X, COLUMNS)


def test_thread_exception_is_the_original_object():
    with (
        ThreadPoolExecutor(2) as pool,
        ExecutorEngine(pool) as engine,
        pytest.raises(UserCodeError, match="boom") as info,
    ):
        engine.sample(raise_user_code_error, X, COLUMNS)
    assert info.value.function == "loss"


# -- Ctrl-C -------------------------------------------------------------------------------------
class InterruptOnCall:
    """Raises KeyboardInterrupt on its `at`-th call."""

    def __init__(self, fun, at):
        self.fun, self.at, self.calls = fun, at, 0

    def __call__(self, v):
        self.calls += 1
        if self.calls == self.at:
            raise KeyboardInterrupt
        return self.fun(v)


def test_serial_interrupt_returns_what_was_measured():
    expected = sample(InterruptOnCall(sines, 50), X, COLUMNS, indices=SUBSET)
    with SerialEngine() as engine:
        actual = engine.sample(InterruptOnCall(sines, 50), X, COLUMNS, indices=SUBSET)
    assert_identical(actual, expected)
    assert actual.interrupted and actual.n_evals == 50
    assert actual.measured.sum() == 49 // len(COLUMNS)  # 16 whole coordinates before call 50
    full = sample(sines, X, COLUMNS)
    np.testing.assert_array_equal(
        actual.values[:, actual.measured], full.values[:, actual.measured]
    )
    assert np.isnan(actual.values[:, ~actual.measured]).all()


def test_serial_batched_interrupt_keeps_whole_coordinates_and_restores_x():
    class InterruptThirdBatch(RowWise):
        calls = 0

        def batch(self, vectors):
            self.calls += 1
            if self.calls == 3:
                raise KeyboardInterrupt
            return super().batch(vectors)

    x = X.copy()
    with SerialEngine(batch_size=6) as engine:
        actual = engine.sample(InterruptThirdBatch(FUN.weights), x, COLUMNS, indices=SUBSET)
    assert actual.interrupted and actual.n_evals == 18
    measured = np.zeros(N, dtype=bool)
    measured[SUBSET[:4]] = True  # two whole batches: 12 evaluations, 4 coordinates of 3
    np.testing.assert_array_equal(actual.measured, measured)
    full = sample(FUN, X, COLUMNS)
    np.testing.assert_array_equal(actual.values[:, measured], full.values[:, measured])
    assert np.isnan(actual.values[:, ~measured]).all()
    np.testing.assert_array_equal(x, X)


class InterruptingProgress(Progress):
    """Ctrl-C pressed while the parent handles the first completed chunk."""

    def __init__(self, total):
        super().__init__(total, enabled=False)

    def advance(self, n=1):
        super().advance(n)
        raise KeyboardInterrupt


def assert_whole_chunks(measured, order, workers):
    for chunk in _split(order, workers):
        assert measured[chunk].all() or not measured[chunk].any()


def test_process_pool_interrupt_returns_completed_chunks_and_closes_quickly():
    order = np.arange(N)
    expected = sample(sines, X, COLUMNS)
    engine = ProcessEngine(2)
    try:
        actual = engine.sample(slow_sines, X, COLUMNS, progress=InterruptingProgress(3 * N))
        assert actual.interrupted
        assert 0 < actual.measured.sum() < N
        assert_whole_chunks(actual.measured, order, 2)
        m = actual.measured
        np.testing.assert_array_equal(actual.values[:, m], expected.values[:, m])
        assert np.isnan(actual.values[:, ~m]).all()
        assert actual.n_evals == len(COLUMNS) * m.sum() == engine.remote_evals
        # The interrupted workers were stopped; a fresh pool serves the next call.
        assert_identical(engine.sample(sines, X, COLUMNS), expected)
    finally:
        began = time.monotonic()
        engine.close()
        engine.close()  # idempotent
    assert time.monotonic() - began < 5


def test_interrupt_inside_a_worker_stops_the_sweep():
    index = int(SUBSET[10])
    with ProcessEngine(2) as engine:
        actual = engine.sample(InterruptWhenMoved(X, index), X, COLUMNS, indices=SUBSET)
    assert actual.interrupted and not actual.measured[index]
    m = actual.measured
    expected = sample(sines, X, COLUMNS)
    np.testing.assert_array_equal(actual.values[:, m], expected.values[:, m])
    assert np.isnan(actual.values[:, ~m]).all()


# -- counting -----------------------------------------------------------------------------------
@pytest.mark.parametrize("remote", [False, True], ids=["serial", "processes"])
def test_progress_and_remote_evals_count_every_evaluation(remote):
    progress = Progress(len(COLUMNS) * SUBSET.size, enabled=False)
    with ProcessEngine(2) if remote else SerialEngine() as engine:
        result = engine.sample(FUN, X, COLUMNS, indices=SUBSET, progress=progress)
        assert result.n_evals == progress.done == progress.total == len(COLUMNS) * SUBSET.size
        assert engine.remote_evals == (result.n_evals if remote else 0)
        engine.sample(FUN, X, COLUMNS, indices=SUBSET[:5])
        assert engine.remote_evals == (result.n_evals + 15 if remote else 0)


def test_threads_share_the_function_so_nothing_is_remote():
    progress = Progress(len(COLUMNS) * N, enabled=False)
    with ThreadPoolExecutor(2) as pool, ExecutorEngine(pool) as engine:
        result = engine.sample(FUN, X, COLUMNS, progress=progress)
        assert progress.done == result.n_evals == len(COLUMNS) * N
        assert engine.remote_evals == 0


# -- choosing an engine -------------------------------------------------------------------------
def test_make_engine_accepts_the_documented_choices():
    assert isinstance(make_engine(None), SerialEngine)
    assert isinstance(make_engine(1), SerialEngine)
    assert make_engine(None, batch_size=32).description == "serial, batches of 32"
    processes = make_engine(3, batch_size=16)
    assert isinstance(processes, ProcessEngine) and processes.workers == 3
    assert processes.description == "3 worker processes, batches of 16"
    with ThreadPoolExecutor(2) as pool:
        engine = make_engine(pool)
        assert isinstance(engine, ExecutorEngine) and engine.executor is pool
        assert engine.workers == 2
        assert engine.description == "ThreadPoolExecutor (concurrent.futures)"
        engine.close()
        assert pool.submit(int, "7").result() == 7  # the caller's executor is left running
    mine = SerialEngine()
    assert make_engine(mine, batch_size=8) is mine


@pytest.mark.parametrize(
    ("executor", "match"),
    [
        ("4", r"`executor` is '4' \(a str\); expected None"),
        (2.0, r"`executor` is 2.0 \(a float\); expected None"),
        (True, r"`executor` is True \(a bool\)"),
        (0, r"`executor` is 0; a number of worker processes must be an int >= 1"),
        (-2, r"`executor` is -2"),
    ],
    ids=["str", "float", "bool", "zero", "negative"],
)
def test_make_engine_refuses_anything_else(executor, match):
    with pytest.raises(InputError, match=match) as info:
        make_engine(executor)
    assert "executor=None" in str(info.value)


@pytest.mark.parametrize(
    "batch_size", [0, -1, 2.5, True], ids=["zero", "negative", "float", "bool"]
)
def test_bad_batch_size_is_refused(batch_size):
    with pytest.raises(InputError, match="`batch_size` is"):
        make_engine(None, batch_size=batch_size)


def test_engines_describe_themselves():
    assert SerialEngine().description == "serial"
    assert ProcessEngine(1).description == "1 worker process"
    assert (
        repr(ProcessEngine(4, batch_size=2)) == "<ProcessEngine: 4 worker processes, batches of 2>"
    )
    assert isinstance(SerialEngine(), Engine)


# -- dask (last: its cluster's threads should not be running when the tests above fork) ---------
@pytest.fixture(scope="module")
def dask_executor():
    distributed = pytest.importorskip("dask.distributed")
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        yield client.get_executor()


@pytest.mark.parametrize("batch_size", [None, 4], ids=["single", "batched"])
def test_dask_matches_serial_sample(dask_executor, batch_size):
    progress = Progress(len(COLUMNS) * SUBSET.size, enabled=False)
    with ExecutorEngine(dask_executor, batch_size=batch_size) as engine:
        assert engine.description.startswith("ClientExecutor (dask)")
        assert engine.workers == 2
        actual = engine.sample(FUN, X, COLUMNS, indices=SUBSET, progress=progress)
        assert engine.remote_evals == actual.n_evals == progress.done
        assert_identical(actual, sample(FUN, X, COLUMNS, indices=SUBSET))
        closure = lambda v: float(np.sum(np.tanh(v) * FUN.weights))  # noqa: E731
        assert_identical(engine.sample(closure, X, COLUMNS), sample(closure, X, COLUMNS))


def test_dask_re_raises_user_code_error(dask_executor):
    with (
        ExecutorEngine(dask_executor) as engine,
        pytest.raises(UserCodeError, match="at a perturbed point: boom") as info,
    ):
        engine.sample(raise_user_code_error, X, COLUMNS)
    assert info.value.function == "loss"


@pytest.mark.parametrize("mode", ["full", "directional"])
def test_a_whole_check_on_a_dask_cluster_matches_the_serial_check(dask_executor, mode):
    from gradproof import check
    from gradproof.corpus.scaling import plant_wrong_entries, relu_network

    net = relu_network((12, 10, 1), n_examples=8, seed=4)
    wrong, planted = plant_wrong_entries(net.grad(net.params), "W1", 2, seed=1)
    serial = check(net.loss, wrong, net.params, mode=mode, progress=False)
    on_dask = check(net.loss, wrong, net.params, mode=mode, executor=dask_executor)
    assert on_dask.engine.startswith("ClientExecutor (dask)")
    assert on_dask.suspects == serial.suspects == ("W1",)
    assert on_dask.n_evals == serial.n_evals
    for mine, theirs in zip(on_dask.params, serial.params, strict=True):
        np.testing.assert_array_equal(mine.numeric, theirs.numeric)
    found = sorted(np.ravel_multi_index(e.index, (10, 12)) for e in on_dask["W1"].failures)
    assert found == planted.tolist()
