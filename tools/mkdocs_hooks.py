"""MkDocs hooks for gradproof's documentation site (named in ``mkdocs.yml``).

gradproof's docstrings are numpydoc, written with Sphinx roles such as ``:func:`check``` and
``:mod:`gradproof.numerics.noise```, which mkdocstrings renders as the role's name followed by the
code. The hook turns each into a cross-reference: a link where the site documents the object,
plain code where it does not.

Numpydoc type lines may quote code in double backticks (``callable ``loss(params) -> scalar```),
which mkdocstrings shows verbatim inside the Type column's code; the hook drops the backticks.

The source explains its design in Notes: a line ``Note [Title]`` in a docstring or comment,
followed by an indented paragraph, which other docstrings cite as ``Note [Title]``. The hook
collects every Note of ``src/gradproof`` into a generated page, ``notes.md`` ("How it works"),
with an anchor per Note, and turns each citation on the site into a link to it.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mkdocs.plugins import get_plugin_logger
from mkdocs.structure.files import File, Files
from mkdocs.utils import get_relative_url

log = get_plugin_logger("gradproof")

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "gradproof"
NOTES_PAGE = "notes.md"

_ROLE = re.compile(r":(?:py:)?(?:func|meth|mod|class|data|attr|exc|obj|const):<code>([^<]+)</code>")


def _reference(match: re.Match[str]) -> str:
    target = match.group(1).lstrip("~.").removesuffix("()")
    # mkdocs-autorefs resolves <autoref> elements once every page is rendered; an identifier
    # that the site does not document stays plain code ("optional").
    return f'<autoref identifier="{target}" optional><code>{match.group(1)}</code></autoref>'


# -- numpydoc type lines ------------------------------------------------------------------------
# A table cell that is one code span quoting code in backticks: mkdocstrings' Type column for a
# type line such as ``callable ``grad(params) -> gradients``, or gradients``.
_QUOTING_TYPE_CELL = re.compile(r"(<td>\s*<code>)([^<]*`[^<]*)(</code>)")


def _unquote_type(match: re.Match[str]) -> str:
    code = re.sub(r"``(.+?)``|`([^`]+)`", lambda m: m.group(1) or m.group(2), match.group(2))
    return match.group(1) + code + match.group(3)


# -- Notes --------------------------------------------------------------------------------------
_DEFINITION = re.compile(r"^(?P<indent>\s*)(?P<comment>#\s*)?Note \[(?P<title>[^\]]+)\]\s*$")
_CITATION = re.compile(r"Note\s+\[([^\]]+)\]")
# The packages in the order of docs/architecture.md's layers, from the ground floor up.
_LAYERS = (
    "tree",
    "errors",
    "numerics",
    "engine",
    "results",
    "checking",
    "report",
    "torch",
    "jax",
    "guard",
    "testing",
    "pytest_plugin",
    "cli",
    "course",
    "models",
    "corpus",
)


@dataclass(frozen=True)
class Note:
    """One ``Note [Title]`` of the source: its title, its text and where it is written."""

    title: str
    body: str
    module: str
    path: str
    line: int
    anchor: str = ""


def _module_name(path: Path, package: Path) -> str:
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _slug(text: str) -> str:
    return "note-" + re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _definitions(path: Path, package: Path) -> Iterator[Note]:
    lines = path.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines, start=1):
        match = _DEFINITION.match(line)
        if match is None:
            continue
        comment = match.group("comment") is not None
        # The Note's own indentation: of the line, or in a comment of the text after the "#".
        depth = len(match.group("comment") or "") if comment else len(match.group("indent"))
        body: list[str] = []
        for following in lines[number:]:
            if comment:
                if not following.lstrip().startswith("#"):
                    break
                following = following.lstrip()[1:]
            text = following.removesuffix('"""')
            if text.strip() and len(text) - len(text.lstrip()) < depth + 1:
                break
            body.append(text)
            if following.rstrip().endswith('"""'):
                break
        yield Note(
            title=" ".join(match.group("title").split()),
            body=textwrap.dedent("\n".join(body)).strip("\n"),
            module=_module_name(path, package),
            path=path.relative_to(package.parents[1]).as_posix(),
            line=number,
        )


def _layer(note: Note) -> tuple[int, str, int]:
    top = note.module.split(".")[1] if "." in note.module else ""
    rank = _LAYERS.index(top) if top in _LAYERS else len(_LAYERS)
    return rank, note.module, note.line


def collect_notes(package: Path = PACKAGE) -> list[Note]:
    """Every Note defined under `package`, in the order of the layers, with its anchor.

    A title is its Note's anchor (``note-`` and the title's words); a title that two modules
    use gets the module's name as well.
    """
    found = sorted(
        (note for path in sorted(package.rglob("*.py")) for note in _definitions(path, package)),
        key=_layer,
    )
    titles = [note.title for note in found]
    notes = []
    for note in found:
        anchor = _slug(note.title)
        if titles.count(note.title) > 1:
            within = note.module.split(".", 1)[-1]  # the module, less the package's name
            anchor += "-" + within.replace(".", "-")
        notes.append(Note(**{**note.__dict__, "anchor": anchor}))
    return notes


def cited_titles(text: str) -> set[str]:
    """Return the titles of the Notes that `text` (Python source) cites, across line breaks."""
    joined = re.sub(r"\n[ \t]*(?:#[ \t]*)?", " ", text)
    return {" ".join(title.split()) for title in _CITATION.findall(joined)}


def _markdown(body: str) -> str:
    """Translate a Note's reStructuredText body to Markdown: its literals and lists."""
    body = re.sub(r"``(.+?)``", lambda m: f"`{m.group(1)}`", body, flags=re.S)
    lines: list[str] = []
    in_list = False
    for line in body.splitlines():
        item = re.match(r"(\d+\.|[-*]) ", line)
        if item and not in_list and lines and lines[-1].strip():
            lines.append("")  # Markdown starts a list only after a blank line
        elif line[:1].strip() and not item and in_list and lines[-1].strip():
            lines.append("")  # an unindented line after a list ends it, as in reST
        if line[:1].strip():
            in_list = bool(item)
        lines.append(line)
    return "\n".join(lines)


def notes_page(notes: list[Note]) -> str:
    """Return the Markdown of the "How it works" page."""
    out = [
        "# How it works",
        "",
        "gradproof's source explains its design decisions in *Notes*: a paragraph headed",
        "`Note [Title]` in a module's docstring, which other docstrings and comments cite by its",
        "title. This page collects every Note of `src/gradproof`, in the order of the layers of",
        "the [architecture](architecture.md), from the ground floor up. It is generated from the",
        "source when the site is built (`tools/mkdocs_hooks.py`), so it says what the code says.",
        "",
    ]
    section = None
    for note in notes:
        package = ".".join(note.module.split(".")[:2])
        if package != section:
            section = package
            out += [f"## `{package}`", ""]
        out += [
            f"### {note.title} {{#{note.anchor}}}",
            "",
            f"*In `{note.module}` (`{note.path}`, line {note.line}).*",
            "",
            _markdown(note.body),
            "",
        ]
    return "\n".join(out)


_notes: list[Note] = []


def on_files(files: Files, config: Any, **_: Any) -> Files:
    """Add the generated Notes page to the site."""
    global _notes
    _notes = collect_notes()
    files.append(File.generated(config, NOTES_PAGE, content=notes_page(_notes)))
    return files


def _anchor(title: str, context: str) -> str | None:
    """Return the anchor of the Note a citation means: by title, then by the module named."""
    candidates = [note for note in _notes if note.title == title]
    for note in candidates:
        if note.module in context or f"{note.module.rsplit('.', 1)[-1]})" in context:
            return note.anchor
    return candidates[0].anchor if candidates else None


# Code and headings are left alone; a citation elsewhere becomes a link.
_CITATION_OR_CODE = re.compile(
    r"(?P<skip><(?P<tag>pre|code|h[1-6]|a)\b.*?</(?P=tag)>)|Note\s+\[(?P<title>[^\]]+)\]", re.S
)


def _link_citations(html: str, page_url: str, notes_url: str) -> str:
    def link(match: re.Match[str]) -> str:
        if match.group("skip"):
            return match.group("skip")
        title = " ".join(match.group("title").split())
        anchor = _anchor(title, html[match.end() : match.end() + 120])
        if anchor is None:
            log.warning(
                "page /%s cites Note [%s], which the source does not define", page_url, title
            )
            return match.group(0)
        href = get_relative_url(notes_url, page_url) + "#" + anchor
        return f'<a class="gradproof-note" href="{href}">{match.group(0)}</a>'

    return _CITATION_OR_CODE.sub(link, html)


def on_page_content(html: str, page: Any, files: Files, **_: Any) -> str:
    """Turn a page's Sphinx roles, quoted types and Note citations into code and links."""
    html = _ROLE.sub(_reference, html)
    html = _QUOTING_TYPE_CELL.sub(_unquote_type, html)
    notes = files.get_file_from_path(NOTES_PAGE)
    if notes is not None:
        html = _link_citations(html, page.url, notes.url)
    return html
