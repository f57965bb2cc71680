"""The user guide is true: it builds, its code runs, and the output it quotes is real."""

from __future__ import annotations

import contextlib
import html
import importlib.util
import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_examples import OUTPUTS, mask_timings

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.rglob("*.md"))


def _blocks(text: str, language: str) -> list[str]:
    """Bodies of the fenced blocks in `language` whose opening line has nothing else on it."""
    return re.findall(rf"^```{language}\n(.*?)^```$", text, flags=re.S | re.M)


def _page_id(page: Path) -> str:
    return page.relative_to(DOCS).as_posix()


def _load_hooks():
    """tools/mkdocs_hooks.py, which MkDocs loads by its path, as a module."""
    pytest.importorskip("mkdocs")
    spec = importlib.util.spec_from_file_location(
        "mkdocs_hooks", ROOT / "tools" / "mkdocs_hooks.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, module)  # its dataclass looks its module up
    spec.loader.exec_module(sys.modules[spec.name])
    return sys.modules[spec.name]


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The site, built once for this module's tests by ``mkdocs build --strict``."""
    if importlib.util.find_spec("mkdocs") is None:
        pytest.skip("mkdocs is not installed (pip install '.[docs]')")
    out: Path = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        env=env,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return out


def test_site_builds_strictly(site):
    """``mkdocs build --strict``: every page in the nav, no broken link, snippet or API name."""
    for page in ("guide/reports", "guide/numpy", "api", "cli", "notes"):
        assert (site / page / "index.html").is_file()
    api = (site / "api" / "index.html").read_text(encoding="utf-8")
    # The function, not the module of the same name, with its numpydoc sections rendered.
    assert 'id="gradproof.checking.check.check"' in api
    for section in ("Parameters", "Returns", "Raises", "Examples"):
        assert f'<span class="doc-section-title">{section}:</span>' in api, section
    assert "<code>rtol</code>" in api
    # The docstrings' Sphinx roles became links or code (tools/mkdocs_hooks.py).
    assert 'href="#gradproof.CheckResult"' in api
    for built in site.rglob("*.html"):
        text = built.read_text(encoding="utf-8")
        roles = re.findall(r":(?:func|meth|mod|class|data|attr|exc|obj):(?:<code>|`)", text)
        assert not roles, f"{built.relative_to(site)} shows Sphinx roles: {roles[:3]}"


def _tables(html: str) -> list[tuple[list[str], list[list[str]]]]:
    """(header cells, rows of cells) of each table of `html`, each cell's inner HTML."""
    found = []
    for table in re.findall(r"<table\b.*?</table>", html, flags=re.S):
        heads = [
            re.sub(r"<[^>]+>", "", h).strip()
            for h in re.findall(r"<th\b[^>]*>(.*?)</th>", table, flags=re.S)
        ]
        rows = [
            re.findall(r"<td\b[^>]*>(.*?)</td>", row, flags=re.S)
            for row in re.findall(r"<tr\b[^>]*>(.*?)</tr>", table, flags=re.S)
        ]
        found.append((heads, [row for row in rows if row]))
    return found


def test_api_type_cells_show_no_backticks(site):
    """Numpydoc type lines quoting code (``callable ``loss(params) -> scalar``) render as code."""
    api = (site / "api" / "index.html").read_text(encoding="utf-8")
    types = [
        row[heads.index("Type")]
        for heads, rows in _tables(api)
        if "Type" in heads
        for row in rows
        if len(row) == len(heads)
    ]
    assert len(types) > 50
    quoting = [cell.strip() for cell in types if "`" in cell]
    assert not quoting, f"Type cells show literal backticks: {quoting[:3]}"
    assert "<code>callable loss(params) -&gt; scalar</code>" in types[0]


def test_check_signature_is_formatted_over_several_lines(site):
    """The signature of check() is formatted (ruff, from the docs extra) to fit 80 columns."""
    api = (site / "api" / "index.html").read_text(encoding="utf-8")
    start = api.index('id="gradproof.checking.check.check"')
    signature = re.search(
        r'<div class="doc-signature highlight"><pre>(.*?)</pre>', api[start:], flags=re.S
    )
    assert signature is not None
    text = html.unescape(re.sub(r"<[^>]+>", "", signature.group(1)))
    lines = text.strip().splitlines()
    assert lines[0] == "check(" and lines[-1] == ") -> CheckResult", lines
    assert "    loss: LossFunction," in lines
    assert len(lines) > 20  # one parameter a line
    assert max(len(line) for line in lines) <= 80


# -- the source's Notes ("How it works", generated by tools/mkdocs_hooks.py) ---------------------
SOURCES = sorted((ROOT / "src" / "gradproof").rglob("*.py"))


def _source_citations() -> dict[str, list[str]]:
    """Each title cited as ``Note [Title]`` in src, with the files that cite or define it."""
    cited: dict[str, list[str]] = {}
    for path in SOURCES:
        # A citation may break across lines, in a docstring or in a comment.
        text = re.sub(r"\n[ \t]*(?:#[ \t]*)?", " ", path.read_text(encoding="utf-8"))
        for title in re.findall(r"Note \[([^\]]+)\]", text):
            cited.setdefault(" ".join(title.split()), []).append(path.relative_to(ROOT).as_posix())
    return cited


def _module(path: Path) -> str:
    return ".".join(path.relative_to(ROOT / "src").with_suffix("").parts).removesuffix(".__init__")


def _note_headings(page: str) -> dict[str, str]:
    """Title of each Note on the built notes page, by its anchor."""
    found = re.findall(r'<h3 id="(note-[^"]+)">(.*?)<a class="headerlink"', page)
    return {anchor: html.unescape(title) for anchor, title in found}


def test_every_note_cited_in_the_source_is_on_the_notes_page(site):
    page = (site / "notes" / "index.html").read_text(encoding="utf-8")
    headings = _note_headings(page)
    cited = _source_citations()
    assert len(cited) >= 40
    dangling = {title: files for title, files in cited.items() if title not in headings.values()}
    assert not dangling, f"Notes cited but not on the notes page: {dangling}"
    # Every definition is there, under its title, with its module; a title that two modules
    # use is there twice.
    definitions = sorted(
        (" ".join(match.group(1).split()), _module(path))
        for path in SOURCES
        for match in re.finditer(
            r"^\s*(?:#\s*)?Note \[([^\]]+)\]\s*$", path.read_text(encoding="utf-8"), flags=re.M
        )
    )
    shown = sorted(
        (html.unescape(title), module)
        for title, module in re.findall(
            r'<h3 id="note-[^"]+">(.*?)<a class="headerlink".*?<p><em>In <code>([\w.]+)</code>',
            page,
            flags=re.S,
        )
    )
    assert len(definitions) >= 40
    assert shown == definitions
    assert " notes.md" in (ROOT / "mkdocs.yml").read_text(encoding="utf-8")  # in the nav


def test_the_notes_page_quotes_the_notes(site):
    page = (site / "notes" / "index.html").read_text(encoding="utf-8")
    start = page.index('id="note-verdict-pipeline"')
    section = page[start : page.index("<h3", start + 1)]
    assert "<em>In <code>gradproof.checking.check</code>" in section
    assert "<ol>" in section and section.count("<li>") == 5  # the pipeline's five steps
    assert "Extra evaluations are spent only on coordinates that need them" in section
    assert "``" not in page


def test_note_citations_link_to_the_notes_page(site):
    notes = set(_note_headings((site / "notes" / "index.html").read_text(encoding="utf-8")))
    linked = 0
    for built in site.rglob("*.html"):
        text = built.read_text(encoding="utf-8")
        for href in re.findall(r'<a class="gradproof-note" href="([^"]+)"', text):
            target, anchor = href.split("#")
            assert anchor in notes, f"{built.relative_to(site)} links to a missing Note: {href}"
            assert (built.parent / target / "index.html").resolve() == (
                site / "notes" / "index.html"
            )
            linked += 1
        # Outside code, no citation is left without its link.
        prose = re.sub(r"<(pre|code|a)\b.*?</\1>", "", text, flags=re.S)
        assert not re.search(r"Note\s+\[", prose), f"{built.relative_to(site)} has an unlinked Note"
    assert linked >= 15
    api = (site / "api" / "index.html").read_text(encoding="utf-8")
    assert 'href="../notes/#note-choosing-a-strategy">Note [Choosing a strategy]</a>' in api
    assert 'href="../notes/#note-x64">Note [x64]</a>' in api


def test_the_hook_finds_notes_in_docstrings_and_comments(tmp_path):
    hooks = _load_hooks()
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text(
        '"""Top.\n\nNote [Shared]\n    First text\n    of the note.\n\nAfter.\n"""\n'
    )
    (package / "sub" / "mod.py").write_text(
        "def f():\n"
        '    """Do.\n\n    Note [Shared]\n        Second.\n    """\n'
        "\n"
        "# Note [In a comment]\n"
        "#     Commented text,\n"
        "#     cites Note [Shared] (mod).\n"
        "x = 1\n"
    )
    notes = hooks.collect_notes(package)
    assert [(n.title, n.module, n.line, n.body) for n in notes] == [
        ("Shared", "pkg", 3, "First text\nof the note."),
        ("Shared", "pkg.sub.mod", 4, "Second."),
        ("In a comment", "pkg.sub.mod", 8, "Commented text,\ncites Note [Shared] (mod)."),
    ]
    assert [n.anchor for n in notes] == [
        "note-shared-pkg",
        "note-shared-sub-mod",
        "note-in-a-comment",
    ]
    assert hooks.cited_titles("x  # Note [In a\n    # comment]") == {"In a comment"}
    # A citation names the module of a title that two modules use.
    hooks._notes = notes
    linked = hooks._link_citations(
        "<p>See Note [Shared] (mod) and Note\n[In a comment].</p><pre>Note [Shared]</pre>",
        "api/",
        "notes/",
    )
    assert 'href="../notes/#note-shared-sub-mod">Note [Shared]</a> (mod)' in linked
    assert 'href="../notes/#note-in-a-comment">Note\n[In a comment]</a>' in linked
    assert linked.endswith("<pre>Note [Shared]</pre>")


def test_a_dangling_note_citation_is_a_build_warning(caplog):
    """A warning on MkDocs' logger, which ``mkdocs build --strict`` turns into a failure."""
    hooks = _load_hooks()
    hooks._notes = []
    with caplog.at_level("WARNING"):
        out = hooks._link_citations("<p>Note [Nowhere]</p>", "api/", "notes/")
    assert out == "<p>Note [Nowhere]</p>"
    (record,) = caplog.records
    assert record.levelname == "WARNING" and record.name.startswith("mkdocs.")
    assert "cites Note [Nowhere], which the source does not define" in record.getMessage()


@pytest.mark.parametrize("page", sorted((DOCS / "guide").glob("*.md")), ids=_page_id)
def test_quoted_output_is_recorded_output(page):
    """Every line a guide page shows as output appears in some example's recorded output."""
    recorded = "\n".join(
        mask_timings(path.read_text(encoding="utf-8")) for path in OUTPUTS.glob("*.txt")
    )
    lines = set(recorded.splitlines())
    for body in _blocks(page.read_text(encoding="utf-8"), "text"):
        if "--8<--" in body:
            continue
        for line in mask_timings(body).splitlines():
            if line.strip() in ("", "...") or line.lstrip().startswith("... "):
                continue
            assert line in lines, f"{_page_id(page)} quotes a line no example prints:\n{line}"


def _runnable_blocks(page: Path) -> list[str]:
    """Untitled Python blocks of `page` that are not snippets of an example."""
    text = page.read_text(encoding="utf-8")
    return [body for body in _blocks(text, "python") if "--8<--" not in body]


@pytest.mark.parametrize("page", [p for p in PAGES if _runnable_blocks(p)], ids=_page_id)
def test_python_blocks_run(page, tmp_path, monkeypatch):
    """Untitled Python blocks run, in order, in one namespace per page.

    A block with a title (```python title="tests/test_x.py"```) shows a file of the reader's
    own project and is not run; a block that includes an example is run by test_examples.
    """
    blocks = _runnable_blocks(page)
    for module in ("torch", "jax"):
        if any(re.search(rf"^\s*(import|from) {module}\b", b, flags=re.M) for b in blocks):
            pytest.importorskip(module)
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": f"docs.{page.stem}"}
    for i, body in enumerate(blocks):
        with contextlib.redirect_stdout(io.StringIO()):
            exec(compile(body, f"{_page_id(page)} python block {i}", "exec"), namespace)


def test_index_example_finds_the_missing_factor():
    (block,) = _blocks((DOCS / "index.md").read_text(encoding="utf-8"), "python")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(block, "docs/index.md", "exec"), {"__name__": "docs.index"})
    report = out.getvalue()
    assert "WRONG: 2 of 2 parameters have wrong gradients: w, b" in report
    assert report.count("analytic = 1/2 × numeric on every entry") == 1  # w
    assert "b: its one entry is wrong: analytic" in report  # one value fits any factor


def test_cli_reference_documents_every_option():
    pytest.importorskip("typer")
    import typer.main

    from gradproof.cli.app import app

    text = (DOCS / "cli.md").read_text(encoding="utf-8")
    group = typer.main.get_command(app)
    for name, command in group.commands.items():  # type: ignore[attr-defined]
        assert f"## gradproof {name}" in text
        for parameter in command.params:
            for option in parameter.opts + parameter.secondary_opts:
                if option.startswith("-") and option != "--help":
                    assert f"`{option}" in text, f"docs/cli.md does not document {name} {option}"


def test_every_page_is_in_the_nav():
    config = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    for page in PAGES:
        assert f" {_page_id(page)}" in config, f"{_page_id(page)} is not in mkdocs.yml's nav"


# -- a real browser ------------------------------------------------------------------------------
_PROBE = (
    "<script>let errors = [];"
    "window.addEventListener('error', e => errors.push(e.message || (e.target && "
    "(e.target.src || e.target.href)) || 'error'), true);"
    "window.addEventListener('load', () => { document.title = 'probe:' + "
    "document.styleSheets.length + ':' + errors.join('|'); });</script>"
)


def _probe(browser: str, page: Path, extra: str = "") -> tuple[int, list[str], str]:
    """Load a copy of `page` with a probe: its stylesheets, its error events and its DOM.

    The copy sits beside the page, so that its relative links hold. Errors are script errors
    and files that fail to load; the theme's web font comes from Google Fonts, which an offline
    machine cannot reach, and is left out.
    """
    from tests.test_report_html import _headless

    probed = page.with_name("probe.html")
    text = page.read_text(encoding="utf-8").replace("<head>", "<head>" + _PROBE + extra, 1)
    probed.write_text(text, encoding="utf-8")
    try:
        dom = _headless(browser, "--dump-dom", "--virtual-time-budget=5000", probed.as_uri())
    finally:
        probed.unlink()
    assert dom.returncode == 0, dom.stderr[-2000:]
    title = re.search(r"<title>probe:(\d+):(.*?)</title>", dom.stdout, flags=re.S)
    assert title is not None, dom.stdout[:1000]
    errors = [e for e in title.group(2).split("|") if e and not e.startswith("https://fonts.")]
    return int(title.group(1)), errors, dom.stdout


def _browser() -> str:
    from tests.test_report_html import _chromium

    browser = _chromium()
    if browser is None:
        pytest.skip("chromium is not installed (Debian: apt-get install chromium)")
    return browser


@pytest.mark.parametrize("page", ["index.html", "api/index.html", "notes/index.html"])
def test_a_headless_browser_renders_the_site(site, page, tmp_path):
    from tests.test_report_html import PNG_MAGIC, _headless

    browser = _browser()
    stylesheets, errors, dom = _probe(browser, site / page)
    assert not errors, f"errors in {page}: {errors}"
    assert stylesheets >= 2  # the theme's own
    assert 'class="md-header' in dom and "<h1" in dom

    shot = tmp_path / "shot.png"
    done = _headless(
        browser, f"--screenshot={shot}", "--window-size=1280,1600", (site / page).as_uri()
    )
    assert done.returncode == 0, done.stderr[-2000:]
    data = shot.read_bytes()
    assert data.startswith(PNG_MAGIC)
    assert int.from_bytes(data[16:20], "big") == 1280 and int.from_bytes(data[20:24], "big") == 1600
    assert len(data) > 50_000  # a page of text, not a blank screen


def test_the_browser_probe_sees_errors(site):
    """The probe above is not blind: a missing script and a script error are both counted."""
    browser = _browser()
    broken = '<script src="no-such-file.js"></script><script>noSuchFunction();</script>'
    _, errors, _ = _probe(browser, site / "index.html", extra=broken)
    assert len(errors) == 2, errors
    assert errors[0].endswith("no-such-file.js")
    assert "noSuchFunction" in errors[1]
