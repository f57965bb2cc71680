"""Re-seeding random generators so that random losses become checkable."""

# The losses under test draw from numpy's legacy global generator on purpose: it is what reseed
# controls and what real training code calls.
# ruff: noqa: NPY002

from __future__ import annotations

import random
import subprocess
import sys

import numpy as np
import pytest

from gradproof.engine.randomness import RepeatCheck, check_repeatable, reseed, seeded
from gradproof.errors import InputError


def test_reseed_repeats_python_and_numpy_draws():
    reseed(123)
    first = (random.random(), np.random.rand(3).tolist())
    reseed(123)
    assert (random.random(), np.random.rand(3).tolist()) == first
    reseed(124)
    assert (random.random(), np.random.rand(3).tolist()) != first


def test_reseed_repeats_torch_draws():
    torch = pytest.importorskip("torch")  # imported first, so reseed finds it in sys.modules
    reseed(5)
    first = torch.rand(4)
    reseed(5)
    assert torch.equal(torch.rand(4), first)


def test_reseed_does_not_import_torch():
    code = (
        "import sys\n"
        "from gradproof.engine.randomness import reseed\n"
        "reseed(0)\n"
        "assert 'torch' not in sys.modules, 'reseed imported torch'\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=60
    )
    assert done.returncode == 0, done.stderr


def dropout_loss(w: np.ndarray) -> float:
    """A loss with dropout: a fresh random mask from numpy's global generator at every call."""
    mask = np.random.rand(w.size) > 0.5
    return float(np.sum((w * mask) ** 2) / 0.5)


def test_seeded_makes_a_dropout_loss_repeatable():
    w = np.linspace(-1.0, 1.0, 50)
    assert not check_repeatable(lambda: dropout_loss(w)).deterministic
    steady = seeded(dropout_loss, seed=3)
    values = {steady(w) for _ in range(5)}
    assert len(values) == 1
    assert steady.__name__ == "dropout_loss"
    assert steady.__doc__ == dropout_loss.__doc__
    assert steady.__wrapped__ is dropout_loss  # type: ignore[attr-defined]
    assert seeded(dropout_loss, seed=4)(w) != steady(w)


def test_check_repeatable_flags_a_random_loss():
    w = np.linspace(-1.0, 1.0, 50)
    found = check_repeatable(lambda: dropout_loss(w))
    assert not found.deterministic
    v1, v2 = found.values
    assert v1 != v2
    assert f"({v1!r} vs {v2!r})" in found.message
    assert "seed=" in found.message and "dropout" in found.message


def test_check_repeatable_passes_a_deterministic_loss():
    w = np.linspace(-1.0, 1.0, 50)
    assert check_repeatable(lambda: float(np.sum(w**2))) == RepeatCheck(
        values=(float(np.sum(w**2)),) * 2, deterministic=True, message=""
    )
    assert check_repeatable(seeded(lambda: dropout_loss(w), seed=0)).deterministic


def test_check_repeatable_counts_nan_as_repeatable():
    assert check_repeatable(lambda: float("nan")).deterministic


def test_check_repeatable_evaluates_exactly_twice():
    calls = iter([1.0, 1.0 + 2.0**-52])
    found = check_repeatable(lambda: next(calls))
    assert found.values == (1.0, 1.0 + 2.0**-52) and not found.deterministic


@pytest.mark.parametrize("seed", [-1, 2**32, 1.5, "0", True, None])
def test_bad_seeds_are_refused_at_once(seed):
    with pytest.raises(InputError, match="`seed` must be"):
        reseed(seed)
    with pytest.raises(InputError, match="`seed` must be"):
        seeded(dropout_loss, seed)


def test_numpy_integer_seed_is_accepted():
    reseed(np.int64(9))
    first = random.random()
    reseed(9)
    assert random.random() == first
