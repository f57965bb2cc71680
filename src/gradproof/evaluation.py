"""Calling the caller's loss and gradient: validated, counted, re-seeded when asked."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from gradproof._typing import FloatArray, GradFunction, LossFunction, Params
from gradproof.errors import InputError, UserCodeError
from gradproof.randomness import reseed
from gradproof.tree import ParamTree

__all__ = ["LossEvaluator", "analytic_gradient", "scalar_loss"]


class LossEvaluator:
    """The loss as a function of the flat parameter vector.

    Each call rebuilds the caller's container from the vector, re-seeds the
    random generators first when a seed is set, and checks that the loss
    returned a real scalar. Calls are counted.

    Parameters
    ----------
    loss : callable
        The caller's loss.
    tree : ParamTree
        The structure to rebuild; its dtypes decide what the loss receives.
        It may be replaced, e.g. by ``tree.with_dtype(np.float64)``.
    seed : int or None
        Re-seed Python's, numpy's and torch's generators before every call.
    loss_batch : callable, optional
        The loss's batched form: given the parameters with a leading axis of
        ``B`` stacked points (``ParamTree.unflatten_batch``), it returns the
        ``B`` loss values. Makes :attr:`batch` available.
    """

    def __init__(
        self,
        loss: LossFunction,
        tree: ParamTree,
        seed: int | None,
        loss_batch: LossFunction | None = None,
    ) -> None:
        self.loss = loss
        self.tree = tree
        self.seed = seed
        self.loss_batch = loss_batch
        self.n_calls = 0

    def __call__(self, vector: FloatArray) -> float:
        """Evaluate at a perturbed point and return the loss as a float."""
        raw = self.call(vector, where="at a perturbed point")
        if type(raw) is float:  # the common case, kept cheap: this runs once per evaluation
            return raw
        return scalar_loss(raw)[0]

    def evaluate(self, vector: npt.NDArray[Any], *, where: str) -> tuple[float, np.dtype[Any]]:
        """Evaluate once; return the value and the dtype it was computed in."""
        raw = self.call(vector, where=where)
        return scalar_loss(raw)

    def call(self, vector: npt.NDArray[Any], *, where: str) -> Any:
        """Evaluate once and return the loss's raw return value."""
        self.n_calls += 1
        if self.seed is not None:
            reseed(self.seed)
        try:
            return self.loss(self.tree.unflatten(vector))
        except (KeyboardInterrupt, GeneratorExit):
            raise
        except Exception as exc:
            raise UserCodeError(
                f"`loss` raised {type(exc).__name__} {where}: {exc}", function="loss"
            ) from exc

    @property
    def batch(self) -> Any:
        """``batch(vectors) -> values`` through `loss_batch`, or None without one."""
        return None if self.loss_batch is None else self._batch

    def _batch(self, vectors: FloatArray) -> FloatArray:
        """Evaluate at the rows of `vectors` with one call of the batched loss."""
        assert self.loss_batch is not None
        self.n_calls += vectors.shape[0]
        if self.seed is not None:
            reseed(self.seed)
        try:
            raw = self.loss_batch(self.tree.unflatten_batch(vectors))
        except (KeyboardInterrupt, GeneratorExit):
            raise
        except Exception as exc:
            raise UserCodeError(
                f"`loss_batch` raised {type(exc).__name__} on a stack of {vectors.shape[0]} "
                f"points: {exc}",
                function="loss_batch",
            ) from exc
        try:
            values = np.asarray(raw, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError) as exc:
            raise InputError(
                f"`loss_batch` returned a {type(raw).__name__} that is not an array of numbers "
                f"({exc}); expected {vectors.shape[0]} loss values, one per stacked point."
            ) from exc
        if values.size != vectors.shape[0]:
            raise InputError(
                f"`loss_batch` returned {values.size} values for a stack of {vectors.shape[0]} "
                "points; expected one loss value per point (shape (B,)). Reduce over the "
                "examples but not over the leading batch axis."
            )
        return values

    def at_base_point(self, x0: FloatArray) -> tuple[float, np.dtype[Any]]:
        """Evaluate at the point itself, where the loss must be finite and leave its input alone."""
        work = x0.copy()
        value, dtype = self.evaluate(work, where="at the given parameters")
        if not np.isfinite(value):
            raise InputError(
                f"`loss` returned {value} at the given parameters; a gradient can only be "
                "checked where the loss is finite. Look for log(0), division by zero or "
                "overflow in the forward pass, or check at other parameters."
            )
        changed = [
            leaf.name
            for leaf in self.tree.leaves
            if not np.array_equal(work[leaf.span], x0[leaf.span])
        ]
        if changed:
            raise InputError(
                f"`loss` modified its parameters in place ({', '.join(changed)}); a checked loss "
                "must leave its argument unchanged, or every perturbation is corrupted. Copy "
                "the parameters before updating them inside the loss."
            )
        return value, dtype


def scalar_loss(value: object) -> tuple[float, np.dtype[Any]]:
    """Read a loss value as a float, with the dtype it was computed in.

    Raises
    ------
    InputError
        If the value is not a real number, or has more than one entry.
    """
    if isinstance(value, float):
        return value, np.dtype(np.float64)
    try:
        array = np.asarray(value)
    except Exception as exc:
        raise InputError(
            f"`loss` returned a {type(value).__name__}, which is not a number ({exc}); "
            "expected a real scalar. Return the loss as a float."
        ) from exc
    if array.dtype.kind not in "fiu":
        raise InputError(
            f"`loss` returned a value of dtype {array.dtype} ({type(value).__name__}); expected "
            "a real scalar. Return the loss as a float."
        )
    if array.size != 1:
        raise InputError(
            f"`loss` returned an array of shape {array.shape}; expected a scalar. Reduce it to "
            "one number, e.g. with `.sum()` or `.mean()` over the examples."
        )
    dtype = array.dtype if array.dtype.kind == "f" else np.dtype(np.float64)
    return float(array.reshape(())), dtype


def analytic_gradient(
    grad: GradFunction | Params, tree: ParamTree, x0: FloatArray, seed: int | None
) -> FloatArray:
    """Compute (or read) the analytic gradient and flatten it in the parameters' order."""
    if callable(grad):
        if seed is not None:
            reseed(seed)
        try:
            value = grad(tree.unflatten(x0.copy()))
        except (KeyboardInterrupt, GeneratorExit):
            raise
        except Exception as exc:
            raise UserCodeError(
                f"`grad` raised {type(exc).__name__} at the given parameters: {exc}",
                function="grad",
            ) from exc
    else:
        value = grad
    return tree.flatten_like(value, what="gradient")
