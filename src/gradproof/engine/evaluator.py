"""Calling the caller's loss and gradient: validated, counted, re-seeded when asked.

Note [Fresh arrays for every evaluation]
    The loss receives arrays it may scribble on: every evaluation copies the
    point into a scratch vector (one per thread) and the loss gets views of
    that copy, so an in-place update inside the loss never reaches the work
    vector that the engines perturb one coordinate at a time. Without the
    copy, a loss that starts updating its argument after a few calls would
    corrupt every later point and fake kinks. The copy is one ``memcpy`` of
    the parameters, far cheaper than any forward pass that reads them.

Note [Naming the point where user code failed]
    When the loss raises at a perturbed point, the error names the point: the
    one coordinate that moved (``W[75, 0]``) in a sweep, or the tensors moved
    along a random direction in a directional probe. The evaluator compares
    the point with the check's base point, only on that error path.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import numpy.typing as npt

from gradproof._typing import FloatArray, GradFunction, LossFunction, Params
from gradproof.engine.randomness import reseed
from gradproof.errors import InputError, UserCodeError
from gradproof.tree import ParamTree, format_index

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
        self.base: FloatArray | None = None  # the check's point, to name perturbed ones
        self.integer_valued = False  # the loss returned a whole number at the point
        self._local = threading.local()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(vars(self))
        del state["_local"]  # per-thread scratch vectors are rebuilt where the copy runs
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        vars(self).update(state)
        self._local = threading.local()

    def _fresh(self, vector: npt.NDArray[Any]) -> npt.NDArray[Any]:
        """Copy `vector` into this thread's scratch (Note [Fresh arrays for every evaluation])."""
        scratch = getattr(self._local, "scratch", None)
        if scratch is None or scratch.shape != vector.shape or scratch.dtype != vector.dtype:
            scratch = self._local.scratch = np.empty_like(vector)
        np.copyto(scratch, vector)
        return scratch

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

    def call(self, vector: npt.NDArray[Any], *, where: str, fresh: bool = True) -> Any:
        """Evaluate once and return the loss's raw return value.

        With `fresh` (default) the loss gets views of a copy of `vector`
        (Note [Fresh arrays for every evaluation]); without it, views of
        `vector` itself, so that the caller can see what the loss changed.
        """
        self.n_calls += 1
        if self.seed is not None:
            reseed(self.seed)
        try:
            return self.loss(self.tree.unflatten(self._fresh(vector) if fresh else vector))
        except (KeyboardInterrupt, GeneratorExit):
            raise
        except (Exception, SystemExit) as exc:
            raise UserCodeError(
                _raised("loss", exc, self._where(vector, where)), function="loss"
            ) from exc

    def _where(self, vector: npt.NDArray[Any], where: str) -> str:
        """Name a perturbed point (Note [Naming the point where user code failed])."""
        base = self.base
        if base is None or vector.shape != base.shape or where != "at a perturbed point":
            return where
        moved = np.flatnonzero(vector != base)
        if moved.size == 1:
            i = int(moved[0])
            leaf, index = self.tree.locate(i)
            return (
                f"with {format_index(leaf.name, index)} moved from {base[i]!r} to "
                f"{complex(vector[i]) if np.iscomplexobj(vector) else float(vector[i])!r} "
                "(every other entry at the given parameters)"
            )
        tensors = sorted({self.tree.locate(int(i))[0].name for i in moved[:10_000]})
        shown = ", ".join(tensors[:4]) + (", ..." if len(tensors) > 4 else "")
        return f"at a point moved along a random direction of {shown} ({moved.size} entries)"

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
            raw = self.loss_batch(self.tree.unflatten_batch(self._fresh(vectors)))
        except (KeyboardInterrupt, GeneratorExit):
            raise
        except (Exception, SystemExit) as exc:
            raise UserCodeError(
                _raised("loss_batch", exc, f"on a stack of {vectors.shape[0]} points"),
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
        raw = self.call(work, where="at the given parameters", fresh=False)
        value, dtype = scalar_loss(raw)
        self.base = x0
        self.integer_valued = isinstance(raw, (int, np.integer)) or (
            isinstance(raw, np.ndarray) and raw.dtype.kind in "iub"
        )
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
        except (Exception, SystemExit) as exc:
            raise UserCodeError(
                _raised("grad", exc, "at the given parameters"),
                function="grad",
            ) from exc
    else:
        value = grad
    return tree.flatten_like(value, what="gradient")


def _raised(function: str, exc: BaseException, where: str) -> str:
    """Say what the caller's function did: raised an exception, or called ``sys.exit``."""
    if isinstance(exc, SystemExit):
        return (
            f"`{function}` called sys.exit({exc.code!r}) {where}; a checked function must "
            "return a value, not end the program."
        )
    return f"`{function}` raised {type(exc).__name__} {where}: {exc}"
