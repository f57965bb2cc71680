"""The numerical core: pure functions of numpy arrays, no user code, no framework.

Steps (:mod:`~gradproof.numerics.steps`), finite differences
(:mod:`~gradproof.numerics.finite_diff`), the noise of a loss
(:mod:`~gradproof.numerics.noise`), tolerances
(:mod:`~gradproof.numerics.tolerances`), the kink test
(:mod:`~gradproof.numerics.kinks`), the assignment's relative difference
(:mod:`~gradproof.numerics.compare`) and random samples of entries
(:mod:`~gradproof.numerics.sampling`). It imports only the ground floor:
:mod:`gradproof.errors`, :mod:`gradproof.tree` and ``gradproof._typing``
(see ``docs/architecture.md``).
"""
