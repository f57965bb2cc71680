"""The records of the corpus: a correct :class:`Case` and a planted :class:`Bug`.

Every model of the corpus is written as two functions side by side, like
micrograd: ``forward(p, data) -> (loss, cache)`` and ``backward(p, data,
cache, bug) -> gradients``. The backward pass is the correct one when ``bug``
is None; each planted bug is a named branch at the line where a person would
make the mistake, so that a bug propagates through the rest of the backward
pass exactly as the real mistake would. :func:`assemble` turns such a pair
into a :class:`Case` and its :class:`Bug` records.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, TypeAlias

import numpy as np

from gradproof._typing import FloatArray

__all__ = [
    "KINDS",
    "Backward",
    "Bug",
    "BugSpec",
    "Case",
    "Forward",
    "Grads",
    "assemble",
    "check_bug_name",
    "frozen_data",
]

Grads: TypeAlias = dict[str, FloatArray]
"""Gradients keyed like the parameters (the corpus's parameters are flat dicts)."""

Forward: TypeAlias = Callable[[Any, Mapping[str, Any]], tuple[float, dict[str, Any]]]
"""``forward(params, data) -> (loss, cache)``."""

Backward: TypeAlias = Callable[[Any, Mapping[str, Any], dict[str, Any], str | None], Grads]
"""``backward(params, data, cache, bug) -> gradients``; ``bug=None`` is the correct pass."""

KINDS: Mapping[str, str] = MappingProxyType(
    {
        "scale": "every wrong parameter's gradient is a constant multiple (not 1) of the true one",
        "sign": "every wrong parameter's gradient is the true one negated",
        "zero": "every wrong parameter's gradient is all zeros (a missing term or path)",
        "transpose": "every wrong parameter's gradient is the true one with two axes swapped",
        "few_entries": "a minority of the entries are wrong, the rest are exactly right",
        "axis": "the mistake lies along one axis: a reduction over the wrong axis, a "
        "reduction then broadcast, or an axis reversed",
        "swapped": "two parameters of the same shape receive each other's gradients",
        "unknown": "no simple pattern (a wrong term, a wrong path, a mixture)",
    }
)
"""The diagnosis families of :attr:`Bug.kind`, with what each means."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Case:
    """A correct model of the corpus: a loss, its hand-written gradient, and a point.

    Attributes
    ----------
    name : str
        A unique name, e.g. ``"softmax-classifier"``.
    description : str
        One line: the model and what makes it interesting.
    params : dict of str to numpy.ndarray
        The point to check at. The corpus builds a new dict each time
        :func:`gradproof.corpus.cases` is called; checkers must not modify it.
    loss : callable ``loss(params) -> float``
        The loss at any parameters of the same structure.
    grad : callable ``grad(params) -> dict``
        The correct hand-written gradient, keyed like `params`.
    seed : int or None
        Not None when the loss is random (dropout masks drawn from numpy's
        legacy global generator): the loss and the gradient agree only when
        that generator is re-seeded with `seed` before every evaluation.
    tags : frozenset of str
        What makes the case special: ``"kink"``, ``"float32"``, ``"noise"``,
        ``"scale"``, ``"large"``, ``"dead"``, ``"random"``, ``"saturation"``.
    hard_point : bool
        True for correct code at a point where naive gradient checks fail:
        kinks, saturation, extreme scales, low precision, many parameters.
    data : Mapping of str to object
        The fixed inputs the loss closes over (examples, labels, masks'
        probability, ...), read-only, for re-implementations of the same
        loss in other frameworks.
    """

    name: str
    description: str
    params: Any
    loss: Callable[[Any], float]
    grad: Callable[[Any], Any]
    seed: int | None = None
    tags: frozenset[str] = frozenset()
    hard_point: bool = False
    data: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True, slots=True, kw_only=True)
class Bug:
    """A planted mistake in a case's backward pass.

    Attributes
    ----------
    case : str
        The name of the :class:`Case` whose backward pass has the mistake.
    name : str
        A name unique within the case, e.g. ``"dW2-transposed"``.
    description : str
        The mistake, in backpropagation terms.
    grad : callable ``grad(params) -> dict``
        The buggy gradient.
    wrong : frozenset of str
        Exactly the parameters (top-level keys) whose gradient is wrong; the
        gradients of all others are bit-for-bit those of the correct pass.
    kind : str
        The diagnosis family expected of a checker, one of :data:`KINDS`.
    """

    case: str
    name: str
    description: str
    grad: Callable[[Any], Any]
    wrong: frozenset[str]
    kind: str


@dataclass(frozen=True, slots=True)
class BugSpec:
    """The declaration of a planted bug, before it is bound to a case.

    Attributes
    ----------
    name : str
        The bug's name, also the value of ``bug`` that selects it in the backward pass.
    kind : str
        One of :data:`KINDS`.
    wrong : tuple of str
        The parameters whose gradient it makes wrong.
    description : str
        The mistake, in backpropagation terms.
    """

    name: str
    kind: str
    wrong: tuple[str, ...]
    description: str


def check_bug_name(bug: str | None, specs: Sequence[BugSpec]) -> None:
    """Refuse a bug name that the backward pass does not know.

    Parameters
    ----------
    bug : str or None
        The requested bug; None is the correct pass.
    specs : sequence of BugSpec
        The bugs the backward pass has.

    Raises
    ------
    ValueError
        If `bug` is neither None nor one of the names in `specs`.

    Examples
    --------
    >>> check_bug_name(None, ())
    >>> check_bug_name("typo", (BugSpec("dW-sign", "sign", ("W",), "..."),))
    Traceback (most recent call last):
    ...
    ValueError: unknown bug 'typo'; this model has: dW-sign
    """
    if bug is not None and bug not in {spec.name for spec in specs}:
        known = ", ".join(spec.name for spec in specs)
        raise ValueError(f"unknown bug {bug!r}; this model has: {known}")


def frozen_data(**arrays: Any) -> Mapping[str, Any]:
    """Return a read-only mapping of read-only copies of the fixed inputs.

    Parameters
    ----------
    **arrays
        The inputs; arrays are copied and made read-only, other values kept.

    Returns
    -------
    Mapping of str to object
        A :class:`types.MappingProxyType` over the copies.

    Examples
    --------
    >>> import numpy as np
    >>> data = frozen_data(X=np.ones(2), keep_prob=0.8)
    >>> data["X"].flags.writeable, data["keep_prob"]
    (False, 0.8)
    """
    out: dict[str, Any] = {}
    for key, value in arrays.items():
        if isinstance(value, np.ndarray):
            value = value.copy()
            value.setflags(write=False)
        out[key] = value
    return MappingProxyType(out)


def assemble(
    *,
    name: str,
    description: str,
    params: dict[str, FloatArray],
    data: Mapping[str, Any],
    forward: Forward,
    backward: Backward,
    bugs: Sequence[BugSpec] = (),
    seed: int | None = None,
    tags: Sequence[str] = (),
    hard_point: bool = False,
) -> tuple[Case, tuple[Bug, ...]]:
    """Bind a forward/backward pair, its data and its point into a case and its bugs.

    Parameters
    ----------
    name, description : str
        The case's name and one-line description.
    params : dict of str to numpy.ndarray
        The point to check at.
    data : Mapping of str to object
        The fixed inputs, passed to `forward` and `backward`.
    forward : callable ``forward(params, data) -> (loss, cache)``
        The forward pass.
    backward : callable ``backward(params, data, cache, bug) -> gradients``
        The backward pass; ``bug=None`` is the correct one.
    bugs : sequence of BugSpec
        The planted bugs, each selected by ``bug=spec.name``.
    seed : int, optional
        For random losses, the seed of numpy's legacy global generator.
    tags : sequence of str
        The case's tags.
    hard_point : bool
        Whether the case is correct code at a hard point.

    Returns
    -------
    case : Case
        The correct case.
    bugs : tuple of Bug
        One record per spec, in order.

    Raises
    ------
    ValueError
        If a spec's kind is not one of :data:`KINDS` or names a parameter
        that does not exist, or if two specs share a name.
    """

    def loss(p: Any) -> float:
        return forward(p, data)[0]

    def gradient_with(bug: str | None) -> Callable[[Any], Grads]:
        def grad(p: Any) -> Grads:
            _, cache = forward(p, data)
            return backward(p, data, cache, bug)

        return grad

    case = Case(
        name=name,
        description=description,
        params=params,
        loss=loss,
        grad=gradient_with(None),
        seed=seed,
        tags=frozenset(tags),
        hard_point=hard_point,
        data=data,
    )
    names = [spec.name for spec in bugs]
    if len(set(names)) != len(names):
        raise ValueError(f"{name}: duplicate bug names in {names}")
    records = []
    for spec in bugs:
        if spec.kind not in KINDS:
            raise ValueError(f"{name}/{spec.name}: unknown kind {spec.kind!r}")
        unknown = set(spec.wrong) - set(params)
        if unknown or not spec.wrong:
            raise ValueError(f"{name}/{spec.name}: bad wrong parameters {spec.wrong}")
        records.append(
            Bug(
                case=name,
                name=spec.name,
                description=spec.description,
                grad=gradient_with(spec.name),
                wrong=frozenset(spec.wrong),
                kind=spec.kind,
            )
        )
    return case, tuple(records)
