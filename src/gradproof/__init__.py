"""gradproof: prove backpropagation correct.

Compare a hand-written gradient with finite differences, parameter by
parameter, and say which parameters are wrong, where, and what the error
looks like.

>>> import numpy as np
>>> import gradproof
>>> result = gradproof.check(lambda w: np.sum(w**3), lambda w: 3 * w**2, np.array([1.0, 2.0]))
>>> result.passed
True
"""

from __future__ import annotations

from gradproof.checking.check import check
from gradproof.checking.options import CheckOptions
from gradproof.checking.stages import StageReport, StageResult, check_stages
from gradproof.errors import (
    BackendUnavailableError,
    GradientMismatchError,
    GradproofError,
    GradproofWarning,
    InputError,
    NondeterministicLossError,
    UserCodeError,
    WorkerLostError,
)
from gradproof.numerics.compare import relative_difference
from gradproof.results import (
    CheckResult,
    Diagnosis,
    EntryReport,
    ParamReport,
    ProbeReport,
    StepRule,
    Verdict,
)
from gradproof.tree import ParamTree

__version__ = "0.1.0"

__all__ = [
    "BackendUnavailableError",
    "CheckOptions",
    "CheckResult",
    "Diagnosis",
    "EntryReport",
    "GradientMismatchError",
    "GradproofError",
    "GradproofWarning",
    "InputError",
    "NondeterministicLossError",
    "ParamReport",
    "ParamTree",
    "ProbeReport",
    "StageReport",
    "StageResult",
    "StepRule",
    "UserCodeError",
    "Verdict",
    "WorkerLostError",
    "__version__",
    "check",
    "check_stages",
    "relative_difference",
]
