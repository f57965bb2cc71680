"""Renderings of check results for people: plain text (and, later, richer formats)."""

from gradproof.report.text import render_result

__all__ = ["render_result"]
