"""The sampled strategy: a random subset of every tensor's entries, and what it may have missed."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from gradproof.tree import ParamTree

__all__ = ["DEFAULT_SAMPLES", "MIN_PER_TENSOR", "miss_chance", "sample_indices"]

DEFAULT_SAMPLES = 1000
"""Entries sampled in all when neither a number nor an evaluation budget is given."""

MIN_PER_TENSOR = 8
"""Every tensor gets at least this many sampled entries (or all of its entries if fewer)."""


def sample_indices(tree: ParamTree, n_samples: int, seed: int) -> npt.NDArray[np.intp]:
    """Draw entries of every tensor without replacement, in proportion to its size.

    Parameters
    ----------
    tree : ParamTree
        The parameters.
    n_samples : int
        How many entries to draw in all (at least ``MIN_PER_TENSOR`` per tensor).
    seed : int
        Seed of the draw.

    Returns
    -------
    ndarray of int
        Sorted flat positions.

    Examples
    --------
    >>> import numpy as np
    >>> tree, _ = ParamTree.flatten({"W": np.zeros((100, 10)), "b": np.zeros(3)})
    >>> picked = sample_indices(tree, 50, seed=0)
    >>> int((picked < 1000).sum()), int((picked >= 1000).sum())
    (50, 3)
    """
    total = sum(leaf.size for leaf in tree.leaves)
    rng = np.random.default_rng([seed, 2])
    chosen = []
    for leaf in tree.leaves:
        share = round(n_samples * leaf.size / total) if total else 0
        count = min(leaf.size, max(share, MIN_PER_TENSOR))
        chosen.append(leaf.offset + rng.choice(leaf.size, size=count, replace=False))
    return np.sort(np.concatenate(chosen)).astype(np.intp) if chosen else np.zeros(0, np.intp)


def miss_chance(n_entries: int, n_sampled: int, density: float) -> float:
    """Chance that a uniform sample of entries misses every entry of a bug of a given density.

    Parameters
    ----------
    n_entries : int
        Entries of the tensor.
    n_sampled : int
        Entries sampled without replacement.
    density : float
        Fraction of the tensor's entries that are wrong (at least one entry).

    Returns
    -------
    float
        The hypergeometric probability that none of the wrong entries is sampled.

    Examples
    --------
    >>> round(miss_chance(1000, 100, 0.01), 4)  # 10 wrong entries, 100 sampled
    0.3469
    >>> miss_chance(1000, 1000, 0.001)
    0.0
    """
    wrong = max(1, math.ceil(density * n_entries))
    if n_sampled + wrong > n_entries:
        return 0.0
    log_p = (
        math.lgamma(n_entries - wrong + 1)
        - math.lgamma(n_entries - wrong - n_sampled + 1)
        - math.lgamma(n_entries + 1)
        + math.lgamma(n_entries - n_sampled + 1)
    )
    return math.exp(log_p)
