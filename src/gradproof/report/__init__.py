"""Renderings of check results for people: text, rich, JSON, HTML, figures and the step sweep.

Importing this package registers the text renderer that ``str(result)`` uses
(Note [Results render late] in :mod:`gradproof.results`).
"""

from gradproof.report.text import render_result

__all__ = ["render_result"]
