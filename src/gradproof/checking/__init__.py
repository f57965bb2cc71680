"""Checking strategies: :func:`gradproof.check` and everything that reaches its verdicts.

:mod:`~gradproof.checking.check` holds ``check()`` itself; its set-up and its
measurement live in :mod:`~gradproof.checking.context` and the strategies:
entry by entry (:mod:`~gradproof.checking.sweep`), along random directions with
localisation (:mod:`~gradproof.checking.directional`, :mod:`~gradproof.checking.probes`),
and the diagnosis of a wrong gradient (:mod:`~gradproof.checking.diagnose`, whose rules
live in :mod:`~gradproof.checking.diagnose_fits`, :mod:`~gradproof.checking.diagnose_transpose`,
:mod:`~gradproof.checking.diagnose_patterns` and :mod:`~gradproof.checking.diagnose_swapped`).
It builds the results of :mod:`gradproof.results` and imports nothing above
them (see ``docs/architecture.md``).
"""
