"""Evaluating the user's loss: the evaluator, the engines that run it, randomness, progress.

:mod:`~gradproof.engine.evaluator` calls the loss and the gradient (validated,
counted, re-seeded); :mod:`~gradproof.engine.execution` is the public home of the
engines that run the evaluations in this process, in worker processes or on any
executor (:mod:`~gradproof.engine.base`, :mod:`~gradproof.engine.serial`,
:mod:`~gradproof.engine.processes`, :mod:`~gradproof.engine.executors`, with
:mod:`~gradproof.engine.chunks`, :mod:`~gradproof.engine.pools`,
:mod:`~gradproof.engine.tasks` and :mod:`~gradproof.engine.scripts` beneath them);
:mod:`~gradproof.engine.randomness` makes random losses repeatable and restores the
global generators; :mod:`~gradproof.engine.progress` draws the progress bar. It
imports the numerical core and the ground floor only (see ``docs/architecture.md``).
"""
