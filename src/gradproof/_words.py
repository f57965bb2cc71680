"""Counted nouns for messages and reports: ``1 entry``, ``2 entries``, never ``1 entries``.

Every layer that writes a count into a sentence (reports, diagnoses, error
messages) takes its words from here, so that singular and plural agree with
the number everywhere.
"""

from __future__ import annotations

__all__ = ["counted", "noun"]

_IRREGULAR = {"entry": "entries", "is": "are", "has": "have", "was": "were"}


def noun(count: int, singular: str, plural: str | None = None) -> str:
    """Return `singular` when `count` is 1, else its plural.

    Parameters
    ----------
    count : int
        How many there are.
    singular : str
        The word for one, e.g. ``"entry"`` or ``"parameter"``.
    plural : str or None, optional
        The word for any other number; by default ``"entries"`` for ``"entry"``
        (and ``"are"``, ``"have"``, ``"were"`` for ``"is"``, ``"has"``,
        ``"was"``), else `singular` with an ``s``.

    Returns
    -------
    str
        The word that agrees with `count`.

    Examples
    --------
    >>> noun(1, "entry"), noun(0, "entry"), noun(2, "probe"), noun(3, "axis", "axes")
    ('entry', 'entries', 'probes', 'axes')
    """
    if count == 1:
        return singular
    return plural if plural is not None else _IRREGULAR.get(singular, singular + "s")


def counted(count: int, singular: str, plural: str | None = None) -> str:
    """Return `count` followed by the word that agrees with it.

    Parameters
    ----------
    count : int
        How many there are.
    singular, plural : str
        As for :func:`noun`.

    Returns
    -------
    str
        For example ``"1 entry"`` or ``"32 entries"``.

    Examples
    --------
    >>> counted(1, "entry"), counted(32, "entry"), counted(0, "parameter")
    ('1 entry', '32 entries', '0 parameters')
    """
    return f"{count} {noun(count, singular, plural)}"
