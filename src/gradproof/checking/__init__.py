"""Checking strategies: :func:`gradproof.check` and everything that reaches its verdicts.

- :mod:`~gradproof.checking.check`: ``check()`` and ``check_with_options()``, a
  short pipeline of named steps;
- :mod:`~gradproof.checking.options`: ``CheckOptions``, the options as one object;
- :mod:`~gradproof.checking.setup`: the set-up (the point, repeatability,
  precision, budget, strategy);
- :mod:`~gradproof.checking.run`: one check from set-up to (partial) result;
- :mod:`~gradproof.checking.context`: what every strategy knows, and where a
  check stops early;
- the strategies: entry by entry (:mod:`~gradproof.checking.sweep`), along random
  directions with localisation (:mod:`~gradproof.checking.directional`,
  :mod:`~gradproof.checking.probes`);
- :mod:`~gradproof.checking.param_reports`: one report per parameter tensor;
- the diagnosis of a wrong gradient (:mod:`~gradproof.checking.diagnose`, whose
  rules live in :mod:`~gradproof.checking.diagnose_fits`,
  :mod:`~gradproof.checking.diagnose_transpose`,
  :mod:`~gradproof.checking.diagnose_patterns` and
  :mod:`~gradproof.checking.diagnose_swapped`).

It builds the results of :mod:`gradproof.results` and imports nothing above
them (see ``docs/architecture.md``).
"""
