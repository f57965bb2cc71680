"""Evaluating the user's loss: the evaluator, the engines that run it, randomness, progress.

:mod:`~gradproof.engine.evaluator` calls the loss and the gradient (validated,
counted, re-seeded); :mod:`~gradproof.engine.execution` runs the evaluations in
this process, in worker processes or on any executor; :mod:`~gradproof.engine.randomness`
makes random losses repeatable and restores the global generators;
:mod:`~gradproof.engine.progress` draws the progress bar. It imports the
numerical core and the ground floor only (see ``docs/architecture.md``).
"""
