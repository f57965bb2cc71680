"""Count the wrong entries that a directional check's localisation misses, and why.

Scattered wrong entries are planted in ``W1`` of three ReLU networks
(:func:`gradproof.corpus.scaling.relu_network`, 1e4 to 1e5 parameters) with
:func:`gradproof.corpus.scaling.plant_wrong_entries`: 6 or 10 entries, seeds 0 to 59, 360
cases in all. Each case is checked with ``mode="directional"`` twice: as gradproof runs it,
and with one round of localisation weighed against the searched direction alone, which is how
it ran before Note [Localisation] gained the confirming direction (:class:`FirstDirectionOnly`).
Each case falls in one of three outcomes:

- every planted entry named exactly;
- the tensor failed, but some planted entries were not named (errors that cancel inside a
  half along the searched direction);
- the tensor passed: the errors cancelled along its one random probe, which no localisation
  can recover (``n_probes=2`` makes it need two coincidences).

The script prints the counts of both variants side by side, the evaluations they used in
all, and every case that was not found in full. It takes about 80 s on 2 cores.

Run:  python benchmarks/localisation_misses.py
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator
from unittest import mock

import numpy as np

import gradproof
from gradproof.checking import directional
from gradproof.checking.entries import (
    INCONCLUSIVE,
)
from gradproof.corpus.scaling import plant_wrong_entries, relu_network

SIZES = ((100, 100, 1), (200, 200, 1), (300, 300, 1))
COUNTS = (6, 10)
SEEDS = range(60)


class FirstDirectionOnly:
    """Localise along the probe's own direction only, and weigh against it alone.

    The confirming direction is still measured (two evaluations), but marked unjudgeable, so
    the search ignores it, as when no evaluations are left for it; its evaluations are taken
    off the count.
    """

    def __init__(self) -> None:
        self.skipped = 0
        self._judge = directional._judge_probes

    def _judge_probes(self, ctx, probes, *, resolve=True):  # type: ignore[no-untyped-def]
        judged = self._judge(ctx, probes, resolve=resolve)
        if probes and all(p.draw >= 2 for p in probes):  # confirming directions (n_probes=1)
            judged.entries.codes[:] = INCONCLUSIVE
            self.skipped += 2 * len(probes)
        return judged

    @contextlib.contextmanager
    def patched(self) -> Iterator[None]:
        """Apply the variant inside the block."""
        with (
            mock.patch.object(directional, "MAX_DIRECTIONS", 1),
            mock.patch.object(directional, "_judge_probes", self._judge_probes),
        ):
            yield


def outcome(net, wrong, planted) -> tuple[str, int]:  # type: ignore[no-untyped-def]
    """Return which of the three outcomes a directional check gives, and its evaluations."""
    result = gradproof.check(net.loss, wrong, net.params, mode="directional", progress=False)
    report = result["W1"]
    named = {int(np.ravel_multi_index(e.index, report.shape)) for e in report.failures}
    if report.verdict is gradproof.Verdict.PASS:
        return "tensor passed", result.n_evals
    if named >= set(planted.tolist()):
        return "all named", result.n_evals
    return "some missed", result.n_evals


def run_first_direction_only(net, wrong, planted) -> tuple[str, int]:  # type: ignore[no-untyped-def]
    """Like :func:`outcome`, without the confirming direction."""
    variant = FirstDirectionOnly()
    with variant.patched():
        found, n_evals = outcome(net, wrong, planted)
    return found, n_evals - variant.skipped


def main() -> None:
    """Run every case with both variants and print the counts."""
    counts: dict[str, Counter[str]] = {"gradproof": Counter(), "first direction only": Counter()}
    evals: Counter[str] = Counter()
    misses: list[str] = []
    for sizes in SIZES:
        net = relu_network(sizes)
        correct = net.grad(net.params)
        for count in COUNTS:
            for seed in SEEDS:
                wrong, planted = plant_wrong_entries(correct, "W1", count, seed=seed)
                for name, run in (("gradproof", outcome), ("first direction only",
                                                           run_first_direction_only)):  # fmt: skip
                    found, n_evals = run(net, wrong, planted)
                    counts[name][found] += 1
                    evals[name] += n_evals
                    if found != "all named":
                        misses.append(f"  {name}: {sizes}, {count} wrong, seed {seed}: {found}")
    total = len(SIZES) * len(COUNTS) * len(SEEDS)
    print(f"{total} cases: {len(COUNTS)} counts x {len(SEEDS)} seeds x networks {SIZES}")
    print("| variant | all named | some missed | tensor passed | evaluations in all |")
    print("|---|---|---|---|---|")
    for name, counter in counts.items():
        print(
            f"| {name} | {counter['all named']} | {counter['some missed']} | "
            f"{counter['tensor passed']} | {evals[name]:,} |"
        )
    print("Cases not found in full:")
    print("\n".join(misses) if misses else "  none")


if __name__ == "__main__":
    main()
