"""Evaluation engines: every engine gives finite_diff.sample's values, bit for bit.

Equality is asserted with ``np.array_equal`` (exact), never with a tolerance:
an engine only moves values around, so any difference is a bug. Batched
engines use ``RowWise``, whose batched and single forms agree bit for bit by
construction (see its docstring).
"""

from __future__ import annotations

import math
import multiprocessing
import os
import pickle
import subprocess
import sys
import textwrap
import threading
import time
from collections import namedtuple
from collections.abc import Callable
from concurrent.futures import Executor, Future, ThreadPoolExecutor

import numpy as np
import pytest

from gradproof.engine import pools, processes, scripts
from gradproof.engine.execution import (
    Engine,
    ExecutorEngine,
    ProcessEngine,
    SerialEngine,
    make_engine,
)
from gradproof.engine.progress import Progress
from gradproof.errors import InputError, UserCodeError, WorkerLostError
from gradproof.numerics.finite_diff import Samples, sample
from gradproof.tree import ParamTree
from tests.helpers_execution import (
    Counted,
    DieInWorker,
    InterruptWhenMoved,
    KeywordOnlyError,
    RaiseWhenMoved,
    RecordingRowWise,
    RowWise,
    sines,
    slow_sines,
)

N = 40
RNG = np.random.default_rng(7)
X = RNG.normal(size=N)
COLUMNS = (X - 1e-3, X + 2e-3, X + 5e-3)  # k = 3 offsets
FUN = RowWise(RNG.normal(size=N))
SUBSET = RNG.permutation(N)[:23]  # a strict subset, shuffled


CALIBRATION = len(COLUMNS)  # a pooled engine first evaluates one coordinate in this process


@pytest.fixture(autouse=True)
def pools_always_pay_off(monkeypatch):
    """Make pooled engines use their workers however small the sweep (and time one coordinate).

    The tests of the small-work fallback restore the real thresholds.
    """
    monkeypatch.setattr(processes, "_POOL_START_SECONDS", 0.0)
    monkeypatch.setattr(pools, "_DISPATCH_SECONDS", 0.0)
    monkeypatch.setattr(pools, "_CALIBRATION_SECONDS", 0.0)


def assert_identical(actual: Samples, expected: Samples) -> None:
    np.testing.assert_array_equal(actual.values, expected.values, strict=True)
    np.testing.assert_array_equal(actual.measured, expected.measured, strict=True)
    assert actual.n_evals == expected.n_evals
    assert actual.interrupted == expected.interrupted
    assert actual.stop is None and actual.error is None


def assert_partial(actual: Samples, fun=sines) -> None:
    """Measured values are exact; the others are NaN."""
    full = sample(fun, X, COLUMNS)
    m = actual.measured
    np.testing.assert_array_equal(actual.values[:, m], full.values[:, m])
    assert np.isnan(actual.values[:, ~m]).all()
    assert actual.interrupted


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
    # Chunks (at least four per worker) need not fill whole batches: some stacks are short.
    assert len(fun.stacks) > math.ceil(len(COLUMNS) * SUBSET.size / batch_size)
    assert_rows_move_one_coordinate(fun.stacks, X, batch_size)
    assert_identical(result, sample(FUN, X, COLUMNS, indices=SUBSET))


def test_batch_of_the_wrong_shape_is_refused():
    class Bad(RowWise):
        def batch(self, vectors):
            return np.zeros(len(vectors) + 1)

    with SerialEngine(batch_size=4) as engine:
        result = engine.sample(Bad(FUN.weights), X, COLUMNS)
    assert result.stop == "error" and isinstance(result.error, InputError)
    assert "shape (5,)" in str(result.error) and not result.measured.any()


# -- errors of the loss: the sweep stops, keeps what it measured, returns the error --------------
def test_user_code_error_survives_pickle():
    error = pickle.loads(pickle.dumps(UserCodeError("boom", function="grad")))
    assert type(error) is UserCodeError and str(error) == "boom" and error.function == "grad"


AT = 25  # the failing coordinate: well inside the sweep, never the first (timed in this process)


def user_code_error():
    return UserCodeError("`loss` raised ValueError at a perturbed point: boom", function="loss")


def test_serial_error_keeps_every_coordinate_before_it():
    fun = RaiseWhenMoved(X, AT, user_code_error())
    with SerialEngine() as engine:
        result = engine.sample(fun, X, COLUMNS)
    assert result.stop == "error" and type(result.error) is UserCodeError
    assert result.error.function == "loss" and "boom" in str(result.error)
    np.testing.assert_array_equal(result.measured, np.arange(N) < AT)
    assert result.n_evals == len(COLUMNS) * AT + 1  # the failing evaluation counts
    assert_partial(result)


def test_serial_batched_error_keeps_the_batches_before_it():
    class FailThirdBatch(RowWise):
        calls = 0

        def batch(self, vectors):
            self.calls += 1
            if self.calls == 3:
                raise ValueError("third batch")
            return super().batch(vectors)

    with SerialEngine(batch_size=6) as engine:
        result = engine.sample(FailThirdBatch(FUN.weights), X, COLUMNS)
    assert result.stop == "error" and str(result.error) == "third batch"
    np.testing.assert_array_equal(result.measured, np.arange(N) < 4)  # 12 evaluations
    assert_partial(result, FUN)


@pytest.mark.parametrize(
    ("error", "kind", "message"),
    [
        (user_code_error(), UserCodeError, "`loss` raised ValueError at a perturbed point: boom"),
        (ValueError("plain boom"), ValueError, "plain boom"),
        (lambda: KeywordOnlyError("needs its code", code=42), KeywordOnlyError, "needs its code"),
    ],
    ids=["UserCodeError", "ValueError", "keyword-only"],
)
def test_worker_error_comes_back_with_type_message_and_traceback(error, kind, message):
    with ProcessEngine(2) as engine:
        result = engine.sample(RaiseWhenMoved(X, AT, error), X, COLUMNS)
        assert result.stop == "error" and type(result.error) is kind
        assert result.error is not None and str(result.error) == message
        expected = error() if callable(error) else error
        assert vars(result.error) == vars(expected)  # e.g. UserCodeError.function, .code
        assert "raise self.error" in str(result.error.__cause__)  # the worker's traceback
        assert not result.measured[AT] and result.measured[0]
        assert_partial(result)
        # The engine goes on: the same pool answers the next call.
        assert_identical(engine.sample(sines, X, COLUMNS), sample(sines, X, COLUMNS))


def test_an_exception_of_a_class_workers_cannot_name_becomes_a_runtime_error():
    class LocalError(Exception):
        pass

    def fun(v):
        if v[AT] != X[AT]:
            raise LocalError("local boom")
        return sines(v)

    with ProcessEngine(2) as engine:
        result = engine.sample(fun, X, COLUMNS)
    assert type(result.error) is RuntimeError and "LocalError: local boom" in str(result.error)


def test_thread_error_is_the_original_object_and_stops_the_other_threads(tmp_path):
    error = user_code_error()
    fun = Counted(RaiseWhenMoved(X, AT, error), str(tmp_path / "evaluations"), seconds=0.002)
    with ThreadPoolExecutor(2) as pool, ExecutorEngine(pool) as engine:
        result = engine.sample(fun, X, COLUMNS)
    assert result.stop == "error" and result.error is error
    made = (tmp_path / "evaluations").stat().st_size
    assert made == result.n_evals - 1 < len(COLUMNS) * (N - 1)  # the rest was never started
    assert not result.measured[AT] and result.measured[0]
    assert_partial(result)


# -- lost workers -------------------------------------------------------------------------------
def test_a_worker_that_dies_once_is_replaced_and_its_chunk_retried(tmp_path):
    fun = DieInWorker(str(tmp_path / "died"))
    with ProcessEngine(2) as engine:
        result = engine.sample(fun, X, COLUMNS)
    assert (tmp_path / "died").exists()  # a worker did die
    assert_identical(result, sample(sines, X, COLUMNS))


def test_a_worker_that_dies_every_time_stops_with_worker_lost_error():
    with ProcessEngine(2) as engine:
        result = engine.sample(DieInWorker(), X, COLUMNS)
        assert result.stop == "lost" and type(result.error) is WorkerLostError
        message = str(result.error)
        assert "died or stopped answering while evaluating the loss, twice" in message
        assert "exit code 3" in message  # the dying worker's; a pool may list its partner's too
        assert "executor=None" in message and "os._exit" in message
        assert result.measured[0]  # the coordinate timed in this process is kept
        assert_partial(result)
        assert_identical(engine.sample(sines, X, COLUMNS), sample(sines, X, COLUMNS))


class SilentExecutor(Executor):
    """A cluster whose workers are all gone: tasks are accepted and never answered."""

    def __init__(self):
        self.submitted = 0

    def submit(self, fn, /, *args, **kwargs):
        self.submitted += 1
        return Future()  # never completes


def test_tasks_that_never_answer_are_lost_twice_then_worker_lost_error(monkeypatch):
    monkeypatch.setattr(pools, "_STALL_SECONDS", 0.2)
    monkeypatch.setattr(pools, "_TASK_SECONDS", 0.001)  # so that 0.2 s is the stall
    silent = SilentExecutor()
    with ExecutorEngine(silent, workers=2) as engine:
        result = engine.sample(sines, X, COLUMNS)
    assert result.stop == "lost" and type(result.error) is WorkerLostError
    assert "twice (TimeoutError: no task completed for 0.2 s)" in str(result.error)
    # The first window of tasks, then each of them retried in pieces: never a hang.
    assert silent.submitted > 4
    assert_partial(result)


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
    np.testing.assert_array_equal(actual.values, expected.values)
    np.testing.assert_array_equal(actual.measured, expected.measured)
    assert actual.interrupted and actual.stop == "interrupt" and actual.error is None
    assert actual.n_evals == 50
    assert actual.measured.sum() == 49 // len(COLUMNS)  # 16 whole coordinates before call 50
    assert_partial(actual)


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
    assert actual.interrupted and actual.stop == "interrupt" and actual.n_evals == 18
    measured = np.zeros(N, dtype=bool)
    measured[SUBSET[:4]] = True  # two whole batches: 12 evaluations, 4 coordinates of 3
    np.testing.assert_array_equal(actual.measured, measured)
    assert_partial(actual, FUN)
    np.testing.assert_array_equal(x, X)


class InterruptAfter(Progress):
    """Ctrl-C pressed once, while the parent handles a chunk, after `after` evaluations."""

    def __init__(self, total, after):
        super().__init__(total, enabled=False)
        self.after = after
        self.pressed = False

    def advance(self, n=1):
        super().advance(n)
        if self.done >= self.after and not self.pressed:
            self.pressed = True
            raise KeyboardInterrupt


@pytest.mark.parametrize("kind", ["processes", "threads"])
def test_pool_interrupt_keeps_the_evaluations_made(tmp_path, kind):
    counter = tmp_path / "evaluations"
    fun = Counted(sines, str(counter), seconds=0.005)
    x = RNG.normal(size=200)
    columns = (x - 1e-3, x + 1e-3)
    progress = InterruptAfter(400, after=120)
    pool = ThreadPoolExecutor(2) if kind == "threads" else None
    engine = ProcessEngine(2) if pool is None else ExecutorEngine(pool)
    try:
        began = time.monotonic()
        result = engine.sample(fun, x, columns, progress=progress)
        assert time.monotonic() - began < 3  # the whole sweep would take 2 s on 2 workers
        assert result.stop == "interrupt" and result.error is None
        made = counter.stat().st_size
        kept = 2 * int(result.measured.sum())
        assert 120 <= made < 400
        assert kept >= 0.95 * made and result.n_evals == made
        m = result.measured
        np.testing.assert_array_equal(result.values[:, m], sample(sines, x, columns).values[:, m])
        if isinstance(engine, ProcessEngine):  # the workers stopped by themselves
            assert engine.remote_evals == made - 2 and engine._pool is not None  # still up
        # The stop flag is reset: the next call measures everything.
        assert_identical(engine.sample(sines, X, COLUMNS), sample(sines, X, COLUMNS))
    finally:
        began = time.monotonic()
        engine.close()
        engine.close()  # idempotent
        if pool is not None:
            pool.shutdown()
    assert time.monotonic() - began < 5


def test_sigint_during_a_pool_sweep_keeps_the_evaluations_made(tmp_path):
    counter = tmp_path / "evaluations"
    fun = Counted(sines, str(counter), seconds=0.005)
    timer = threading.Timer(0.4, os.kill, (os.getpid(), 2))  # SIGINT, as Ctrl-C sends it
    with ProcessEngine(2) as engine:
        engine.sample(sines, X, COLUMNS)  # start the workers before the clock runs
        timer.start()
        try:
            result = engine.sample(fun, RNG.normal(size=400), tuple(np.ones((2, 400))))
        finally:
            timer.cancel()
    made = counter.stat().st_size
    assert result.stop == "interrupt" and 0 < made < 800
    assert 2 * result.measured.sum() >= 0.95 * made


def test_interrupt_inside_a_worker_stops_the_sweep():
    index = int(SUBSET[10])
    with ProcessEngine(2) as engine:
        actual = engine.sample(InterruptWhenMoved(X, index), X, COLUMNS, indices=SUBSET)
    assert actual.stop == "interrupt" and not actual.measured[index]
    assert_partial(actual)


# -- deadlines ----------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["serial", "processes", "threads"])
def test_a_deadline_stops_the_sweep_and_keeps_what_it_measured(kind):
    pool = ThreadPoolExecutor(2)
    engines: dict[str, Callable[[], Engine]] = {
        "serial": SerialEngine,
        "processes": lambda: ProcessEngine(2),
        "threads": lambda: ExecutorEngine(pool),
    }
    with engines[kind]() as engine:
        if kind == "processes":
            engine.sample(sines, X, COLUMNS)  # start the workers
        began = time.monotonic()
        result = engine.sample(slow_sines, X, COLUMNS, deadline=began + 0.3)
        elapsed = time.monotonic() - began
    pool.shutdown()
    assert result.stop == "deadline" and result.error is None
    assert 0.3 <= elapsed < 0.3 + 0.5  # a coordinate (30 ms) late, plus a loaded machine
    assert 0 < result.measured.sum() < N
    assert result.n_evals == len(COLUMNS) * result.measured.sum()  # no coordinate half done
    assert_partial(result)


def test_a_deadline_in_the_past_measures_nothing():
    for engine in (SerialEngine(), ProcessEngine(2)):
        with engine:
            result = engine.sample(sines, X, COLUMNS, deadline=time.monotonic() - 1)
        assert result.stop == "deadline" and result.n_evals == 0 and not result.measured.any()


# -- when workers do not pay off ----------------------------------------------------------------
def test_a_small_sweep_runs_serially_and_says_why(monkeypatch):
    monkeypatch.setattr(processes, "_POOL_START_SECONDS", 0.5)
    monkeypatch.setattr(pools, "_CALIBRATION_SECONDS", 0.02)
    with ProcessEngine(2) as engine:
        result = engine.sample(FUN, X, COLUMNS)
        assert_identical(result, sample(FUN, X, COLUMNS))
        assert engine.remote_evals == 0 and engine._pool is None  # no worker started
        [note] = engine.notes
        assert note.startswith("The 2 worker processes were not used for a small sweep")
        assert "less than starting to use the workers costs (about 0.5 s)" in note
        engine.sample(FUN, X, COLUMNS)
        assert len(engine.notes) == 1  # said once


def test_a_long_sweep_uses_the_workers(monkeypatch):
    monkeypatch.setattr(processes, "_POOL_START_SECONDS", 0.1)
    monkeypatch.setattr(pools, "_CALIBRATION_SECONDS", 0.02)
    with ProcessEngine(2) as engine:
        result = engine.sample(slow_sines, X, COLUMNS)  # 1.2 s in this process
        assert engine.remote_evals > 0 and not engine.notes
    assert_identical(result, sample(sines, X, COLUMNS))


SCRIPT = """\
import numpy as np
import gradproof.engine.pools as pools
import gradproof.engine.processes as processes
from gradproof.engine.execution import ProcessEngine

processes._POOL_START_SECONDS = pools._CALIBRATION_SECONDS = 0.0


def loss(v):
    return float(np.sum(np.sin(v)))


def run():
    x = np.linspace(0.0, 1.0, 30)
    with ProcessEngine(2) as engine:
        result = engine.sample(loss, x, (x - 1e-3, x + 1e-3))
    print("measured", int(result.measured.sum()), "remote", engine.remote_evals)
    print("notes", engine.notes)

"""


@pytest.mark.parametrize("guarded", [False, True], ids=["no-guard", "guard"])
def test_a_script_without_a_main_guard_runs_serially(tmp_path, guarded):
    script = tmp_path / "script.py"
    call = 'if __name__ == "__main__":\n    run()\n' if guarded else "run()\n"
    script.write_text(SCRIPT + call)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr and "measured 30" in done.stdout
    if guarded:
        assert "remote 58" in done.stdout and "notes []" in done.stdout  # 1 coordinate here
    else:
        assert "remote 0" in done.stdout
        line = len(SCRIPT.splitlines()) + 1
        assert f"calls gradproof at its top level (line {line}) without an" in done.stdout
        assert "Put the call under such a guard to use worker processes." in done.stdout


def test_guarded_lines_finds_main_blocks(tmp_path):
    path = tmp_path / "m.py"
    path.write_text(
        textwrap.dedent(
            """\
            x = 1
            if __name__ == "__main__":
                y = 2
                z = 3
            if '__main__' == __name__:
                w = 4
            if __name__ != "__main__":
                v = 5
            """
        )
    )
    assert scripts._guarded_lines(str(path)) == ((3, 4), (6, 6))


# -- counting -----------------------------------------------------------------------------------
@pytest.mark.parametrize("remote", [False, True], ids=["serial", "processes"])
def test_progress_and_remote_evals_count_every_evaluation(remote):
    progress = Progress(len(COLUMNS) * SUBSET.size, enabled=False)
    with ProcessEngine(2) if remote else SerialEngine() as engine:
        result = engine.sample(FUN, X, COLUMNS, indices=SUBSET, progress=progress)
        assert result.n_evals == progress.done == progress.total == len(COLUMNS) * SUBSET.size
        first = result.n_evals - CALIBRATION
        assert engine.remote_evals == (first if remote else 0)
        engine.sample(FUN, X, COLUMNS, indices=SUBSET[:5])
        assert engine.remote_evals == (first + 15 - CALIBRATION if remote else 0)


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
        calibration = CALIBRATION if batch_size is None else 12  # whole batches: 4 coordinates
        assert engine.remote_evals == actual.n_evals - calibration
        assert actual.n_evals == progress.done
        assert_identical(actual, sample(FUN, X, COLUMNS, indices=SUBSET))
        closure = lambda v: float(np.sum(np.tanh(v) * FUN.weights))  # noqa: E731
        assert_identical(engine.sample(closure, X, COLUMNS), sample(closure, X, COLUMNS))


def test_dask_returns_the_user_code_error_with_what_it_measured(dask_executor):
    with ExecutorEngine(dask_executor) as engine:
        result = engine.sample(RaiseWhenMoved(X, AT, user_code_error()), X, COLUMNS)
    assert result.stop == "error" and type(result.error) is UserCodeError
    assert result.error.function == "loss" and "at a perturbed point: boom" in str(result.error)
    assert "raise self.error" in str(result.error.__cause__)
    assert result.measured[0] and not result.measured[AT]
    assert_partial(result)


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


def test_a_concurrent_futures_process_pool_takes_a_lambda_and_refuses_a_lock():
    # Note [Plain-pickling executors]: a ProcessPoolExecutor pickles tasks with plain pickle;
    # the function travels cloudpickled, and one that cannot travel is refused up front.
    from concurrent.futures import ProcessPoolExecutor

    context = multiprocessing.get_context("forkserver")
    x = np.linspace(-1.0, 1.0, 40)
    columns = (x - 1e-3, x + 1e-3)
    with ProcessPoolExecutor(2, mp_context=context) as pool:
        with ExecutorEngine(pool) as engine:
            result = engine.sample(lambda v: float(np.sum(np.sin(v))), x, columns)
            assert engine.remote_evals > 0
        np.testing.assert_array_equal(
            result.values, sample(lambda v: float(np.sum(np.sin(v))), x, columns).values
        )
        lock = threading.Lock()
        with ExecutorEngine(pool) as engine, pytest.raises(InputError, match="cannot be sent"):
            engine.sample(lambda v: float(np.sum(v)) if lock else 0.0, x, columns)
