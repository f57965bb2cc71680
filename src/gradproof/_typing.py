"""Type aliases shared by gradproof's modules."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt

FloatArray: TypeAlias = npt.NDArray[np.float64]
"""A float64 numpy array."""

BoolArray: TypeAlias = npt.NDArray[np.bool_]
"""A boolean numpy array."""

Params: TypeAlias = Any
"""A parameter container: an array, a float, or nested dicts, lists and tuples of them."""

LossFunction: TypeAlias = Callable[[Params], Any]
"""A function of the parameters that returns a scalar loss."""

GradFunction: TypeAlias = Callable[[Params], Params]
"""A function of the parameters that returns gradients in the same structure."""

FlatFunction: TypeAlias = Callable[[FloatArray], float]
"""A scalar function of a flat float64 parameter vector."""
