"""MkDocs hooks for gradproof's documentation site (named in ``mkdocs.yml``).

gradproof's docstrings are numpydoc, written with Sphinx roles such as ``:func:`check``` and
``:mod:`gradproof.numerics.noise```, which mkdocstrings renders as the role's name followed by the
code. The hook turns each into a cross-reference: a link where the site documents the object,
plain code where it does not.
"""

from __future__ import annotations

import re
from typing import Any

_ROLE = re.compile(r":(?:py:)?(?:func|meth|mod|class|data|attr|exc|obj|const):<code>([^<]+)</code>")


def _reference(match: re.Match[str]) -> str:
    target = match.group(1).lstrip("~.").removesuffix("()")
    # mkdocs-autorefs resolves <autoref> elements once every page is rendered; an identifier
    # that the site does not document stays plain code ("optional").
    return f'<autoref identifier="{target}" optional><code>{match.group(1)}</code></autoref>'


def on_page_content(html: str, **_: Any) -> str:
    """Replace the Sphinx roles left in a page's rendered docstrings by cross-references."""
    return _ROLE.sub(_reference, html)
