"""A corpus of small models with hand-written numpy backpropagation, correct and planted bugs.

The corpus is ground truth for measuring gradient checkers. Each
:class:`Case` is a small model (a loss, its correct hand-written gradient and
a point to check at); each :class:`Bug` is a realistic mistake planted in one
case's backward pass, with exactly the parameters it makes wrong and the
kind of error it produces (:data:`KINDS`). The hard points (``hard_point=True``)
are correct code where naive checks raise false alarms: kinks, saturation,
float32, extreme scales, dead units, thousands of parameters.

Every model is written in numpy, forward and backward side by side; the
tests compare each correct gradient with PyTorch's autograd on an
independent re-implementation of the same loss.

Examples
--------
>>> import gradproof
>>> from gradproof import corpus
>>> case = corpus.get_case("softmax-classifier")
>>> sorted(case.params), case.hard_point
(['W', 'b'], False)
>>> bug = next(bug for c, bug in corpus.bugs() if bug.name == "db-mean-after-1/m")
>>> bug.case, sorted(bug.wrong), bug.kind
('softmax-classifier', ['b'], 'scale')
>>> result = gradproof.check(case.loss, bug.grad, case.params)  # should suspect exactly "b"
"""

from __future__ import annotations

from gradproof.corpus import classic, conv, course_network, hard_points, sequence
from gradproof.corpus._types import KINDS, Bug, Case

__all__ = ["KINDS", "Bug", "Case", "bugs", "cases", "get_case"]

_FAMILIES = (
    course_network.build,
    classic.build,
    conv.build,
    sequence.build,
    hard_points.build,
)
"""Every model family's builder, in the corpus's order."""


def _build() -> tuple[tuple[Case, tuple[Bug, ...]], ...]:
    """Build every case with its bugs, fresh, in order."""
    built = tuple(entry for family in _FAMILIES for entry in family())
    names = [case.name for case, _ in built]
    if len(set(names)) != len(names):
        raise RuntimeError(f"duplicate case names in the corpus: {names}")
    return built


def cases() -> tuple[Case, ...]:
    """Return every correct case of the corpus, built fresh.

    Returns
    -------
    tuple of Case
        The cases in a fixed order; their data and points come from fixed
        seeds, so two calls give equal (but distinct) parameter arrays.

    Examples
    --------
    >>> names = [case.name for case in cases()]
    >>> names[:3]
    ['course-network', 'softmax-classifier', 'l2-mlp']
    """
    return tuple(case for case, _ in _build())


def bugs() -> tuple[tuple[Case, Bug], ...]:
    """Return every planted bug with the case it is planted in.

    Returns
    -------
    tuple of (Case, Bug)
        One pair per bug, in the order of the cases. Check ``bug.grad``
        against ``case.loss`` at ``case.params`` (with ``case.seed`` when it
        is set); the wrong parameters are ``bug.wrong``.

    Examples
    --------
    >>> case, bug = bugs()[0]
    >>> case.name, bug.name, sorted(bug.wrong), bug.kind
    ('course-network', 'assignment-shipped', ['W2', 'b1'], 'scale')
    """
    return tuple((case, bug) for case, planted in _build() for bug in planted)


def get_case(name: str) -> Case:
    """Return one correct case by name, built fresh.

    Parameters
    ----------
    name : str
        The case's name, e.g. ``"tanh-rnn"``.

    Returns
    -------
    Case
        The case.

    Raises
    ------
    KeyError
        If no case has that name; the message lists the known names.

    Examples
    --------
    >>> get_case("embedding").params["E"].shape
    (8, 4)
    """
    built = cases()
    for case in built:
        if case.name == name:
            return case
    known = ", ".join(case.name for case in built)
    raise KeyError(f"no corpus case named {name!r}; the cases are: {known}")
