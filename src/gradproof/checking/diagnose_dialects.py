"""Hints in the words of the code checked: numpy backpropagation, PyTorch or JAX.

Note [Hints fit the code]
    A diagnosis's hint names the usual cause of its pattern in the code that
    computed the gradient. The rules write it for hand-written numpy
    backpropagation (``np.add.at``, clipping probabilities before a log); a
    PyTorch or JAX rule has other tools and other failure modes, so the
    adapters pass ``dialect="torch"`` or ``"jax"`` and each numpy phrase is
    replaced by its counterpart here. JAX has no in-place updates: an
    overwrite there is ``.at[...].set`` where ``.at[...].add`` was meant, and a
    path goes missing through ``stop_gradient`` or a custom rule's residuals.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from types import MappingProxyType

from gradproof.results import Diagnosis

__all__ = ["DIALECTS", "in_dialect"]

DIALECTS = ("numpy", "torch", "jax")
"""The kinds of code a hint can be written for."""

_ACCUMULATE = "(`+=`, `np.add.at`)"
_OVERWRITE = "an overwrite (`=`) where repeated indices must accumulate"
_GUARD = "guard it, e.g. clip probabilities before taking their log."
_MISSING = "(a forgotten term, a detached or overwritten variable)"

PHRASES: Mapping[str, Mapping[str, str]] = MappingProxyType(
    {
        _ACCUMULATE: {
            "torch": "(`+=`, `index_add_`, `scatter_add_`)",
            "jax": "(`.at[...].add(...)`)",
        },
        _OVERWRITE: {
            "torch": "an overwrite (`=`, `index_copy_`, `scatter_`) where repeated indices must "
            "accumulate",
            "jax": "an `.at[...].set(...)` where repeated indices must accumulate",
        },
        _GUARD: {
            "torch": "guard it, e.g. compute log-probabilities with `torch.log_softmax` or "
            "`F.binary_cross_entropy_with_logits`, or clamp before `torch.log`; in a custom "
            "`autograd.Function`, check what `ctx.save_for_backward` kept.",
            "jax": "guard it, e.g. with `jax.nn.log_softmax`, or with a second `jnp.where` on the "
            "input (a `jnp.where` on the output alone still sends NaN through the branch not "
            "taken); in a `custom_vjp`, check the residuals its forward returns.",
        },
        _MISSING: {
            "torch": "(a forgotten term, a `.detach()`, `.data` or `torch.no_grad()` that cuts "
            "the graph, an in-place overwrite)",
            "jax": "(a forgotten term, a `jax.lax.stop_gradient`, a `custom_vjp` whose backward "
            "omits this input or whose residuals miss it)",
        },
    }
)
"""Each numpy phrase of a hint, and what it becomes for PyTorch and JAX code."""


def in_dialect(diagnosis: Diagnosis, dialect: str) -> Diagnosis:
    """Return `diagnosis` with its hint in the words of `dialect` (Note [Hints fit the code]).

    Parameters
    ----------
    diagnosis : Diagnosis
        A diagnosis whose hint is written for numpy code.
    dialect : {"numpy", "torch", "jax"}
        The code the gradient came from.

    Returns
    -------
    Diagnosis
        The same diagnosis, its hint translated (unchanged for ``"numpy"``).

    Examples
    --------
    >>> d = Diagnosis(kind="few_entries", summary="s", hint="accumulate (`+=`, `np.add.at`).")
    >>> in_dialect(d, "jax").hint
    'accumulate (`.at[...].add(...)`).'
    """
    if dialect == "numpy":
        return diagnosis
    hint = diagnosis.hint
    for phrase, translations in PHRASES.items():
        hint = hint.replace(phrase, translations[dialect])
    return dataclasses.replace(diagnosis, hint=hint)
