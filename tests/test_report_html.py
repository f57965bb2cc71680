"""The HTML report: self-contained, escaped, complete, and rendered by a real browser."""

from __future__ import annotations

import base64
import shutil
import subprocess
from html.parser import HTMLParser

import numpy as np
import pytest

from gradproof import __version__, check, course
from gradproof.errors import BackendUnavailableError
from gradproof.report.html import render_html, write_html

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class Collector(HTMLParser):
    """Record every tag with its attributes, and the page's text."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def parse(page: str) -> Collector:
    collector = Collector()
    collector.feed(page)
    collector.close()
    return collector


def course_case():
    X, Y, params = course.gradient_check_n_test_case()

    def loss(p):
        cost, _ = course.forward_propagation_n(X, Y, p)
        return float(cost)

    def grad(p):
        _, cache = course.forward_propagation_n(X, Y, p)
        return course.parameter_gradients(course.backward_propagation_n(X, Y, cache))

    return loss, grad, params


@pytest.fixture(scope="module")
def course_page():
    pytest.importorskip("matplotlib")
    loss, grad, params = course_case()
    result = check(loss, grad, params)
    return result, render_html(result, loss=loss, params=params)


def test_page_is_self_contained(course_page):
    _, page = course_page
    doc = parse(page)
    for tag, attrs in doc.tags:
        for key in ("src", "href", "srcset", "action", "data"):
            value = attrs.get(key)
            if value is not None:
                assert value.startswith("data:"), f"<{tag} {key}={value[:60]!r}> is external"
        assert tag not in {"link", "script", "iframe", "object"}
    assert "http://" not in page and "https://" not in page
    assert "@import" not in page and "url(" not in page


def test_every_image_is_an_embedded_png(course_page):
    _, page = course_page
    images = [attrs for tag, attrs in parse(page).tags if tag == "img"]
    assert len(images) >= 5  # tensors, scatter, heat maps of b1 and W2, step sweep
    for attrs in images:
        src = attrs["src"]
        assert src is not None and src.startswith("data:image/png;base64,")
        data = base64.b64decode(src.split(",", 1)[1], validate=True)
        assert data.startswith(PNG_MAGIC) and len(data) > 5_000
        assert attrs.get("alt")


def test_page_shows_heat_maps_of_the_wrong_tensors_only(course_page):
    result, page = course_page
    doc = parse(page)
    alts = [attrs["alt"] or "" for tag, attrs in doc.tags if tag == "img"]
    heat_maps = [alt for alt in alts if alt.startswith("Heat map")]
    # b1 (a 5 x 1 column) and W2 are wrong; W1, a right 5 x 4 matrix, gets no heat map
    assert set(result.suspects) == {"b1", "W2"} and result["W1"].passed
    assert len(heat_maps) == 2
    assert any(" in b1 (4 wrong" in alt for alt in heat_maps)
    assert any(" in W2 (" in alt for alt in heat_maps)
    assert not any(" in W1 (" in alt for alt in heat_maps)
    assert "Error per entry of W1" not in "".join(doc.text)


def test_page_holds_the_verdict_tables_and_diagnosis(course_page):
    result, page = course_page
    text = "".join(parse(page).text)
    assert "gradproof: WRONG: 2 of 6 parameters have wrong gradients" in text
    for report in result.params:
        assert report.name in text
        if report.diagnosis is not None:
            # the page shows `code` spans as <code> elements, without the backticks
            assert report.diagnosis.summary.replace("`", "") in text
            assert report.diagnosis.hint.replace("`", "") in text
        for entry in report.failures:
            assert entry.name in text
    assert "How the check ran" in text and str(result.n_evals) in text
    assert f"gradproof {__version__}" in text
    assert 'class="verdict fail"' in page
    assert "Step sweep of" in text


def test_user_strings_are_escaped():
    params = {"<script>alert(1)</script>": np.array([1.0, 2.0]), "b&<i>": np.array([0.5])}

    def loss(p):
        return float(np.sum(p["<script>alert(1)</script>"] ** 2) + p["b&<i>"][0] ** 3)

    def grad(p):
        return {
            "<script>alert(1)</script>": 3 * p["<script>alert(1)</script>"],
            "b&<i>": 0 * p["b&<i>"],
        }

    result = check(loss, grad, params)
    page = render_html(result, figures=False)
    tags = {tag for tag, _ in parse(page).tags}
    assert "script" not in tags and "i" not in tags
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "b&amp;&lt;i&gt;" in page
    text = "".join(parse(page).text)
    assert "<script>alert(1)</script>" in text  # shown to the reader, as text


def test_code_in_the_diagnosis_is_shown_as_code():
    # A parameter whose name needs escaping, quoted in backticks by the diagnosis's hint.
    params = {"a<b": np.array([1.0, 2.0, 3.0])}
    result = check(lambda p: float(np.sum(p["a<b"] ** 2)), lambda p: {"a<b": 4 * p["a<b"]}, params)
    diagnosis = result.params[0].diagnosis
    assert diagnosis is not None and "`['a<b']`" in diagnosis.hint
    page = render_html(result, figures=False)
    assert "<code>[&#x27;a&lt;b&#x27;]</code>" in page
    assert "`" not in page.split("<h2>Diagnosis</h2>", 1)[1].split("<h2>", 1)[0]
    assert {tag for tag, _ in parse(page).tags} >= {"code"}


def test_unmatched_backticks_stay_text():
    from gradproof.report.html import _prose

    assert _prose("use `x` and ` alone <here>") == ("use <code>x</code> and ` alone &lt;here&gt;")


def test_without_matplotlib_the_page_says_so(monkeypatch):
    from gradproof.report import figures as plots

    def unavailable():
        raise BackendUnavailableError("Figures need matplotlib (no module)", framework="matplotlib")

    monkeypatch.setattr(plots, "_plt", unavailable)
    result = check(lambda w: float(np.sum(w**2)), lambda w: 2 * w, np.array([1.0, 2.0]))
    page = render_html(result)
    assert "No figures: Figures need matplotlib" in page
    assert "<img" not in page
    assert "gradproof: CORRECT" in page


def test_passing_and_directional_checks_render():
    rng = np.random.default_rng(1)
    w = rng.normal(size=(30, 20))
    result = check(
        lambda p: float(np.sum(np.tanh(p))),
        lambda p: 1 - np.tanh(p) ** 2,
        w,
        mode="directional",
    )
    page = render_html(result, figures=False)
    assert "Directional probes" in page
    assert "CORRECT" in page


def test_write_html_writes_the_file(tmp_path):
    result = check(lambda w: float(np.sum(w**2)), lambda w: 2 * w, np.array([1.0, 2.0]))
    path = write_html(result, tmp_path / "sub" / "report.html", figures=False)
    assert path.exists()
    assert path.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _headless(browser: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [browser, "--headless", "--disable-gpu", "--no-sandbox", "--no-first-run", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_a_headless_browser_renders_the_page(course_page, tmp_path):
    browser = _chromium()
    if browser is None:
        pytest.skip("chromium is not installed (Debian: apt-get install chromium)")
    _, page = course_page
    html_path = tmp_path / "report.html"
    html_path.write_text(page, encoding="utf-8")
    url = html_path.as_uri()

    dom = _headless(browser, "--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert "gradproof: WRONG: 2 of 6 parameters have wrong gradients" in dom.stdout
    # the images decoded: the browser reports their natural size through the DOM it dumps
    assert dom.stdout.count("data:image/png;base64,") >= 5

    shot = tmp_path / "shot.png"
    done = _headless(browser, f"--screenshot={shot}", "--window-size=1200,2000", url)
    assert done.returncode == 0, done.stderr[-2000:]
    data = shot.read_bytes()
    assert data.startswith(PNG_MAGIC)
    import matplotlib.image

    pixels = matplotlib.image.imread(str(shot))
    assert pixels.shape[0] == 2000 and pixels.shape[1] == 1200
    assert float(pixels[..., :3].std()) > 0.05  # not blank
    # the verdict banner's red-tinted background and the figures' colours are on screen
    rgb = pixels[..., :3]
    reddish = (rgb[..., 0] > 0.75) & (rgb[..., 1] < 0.3) & (rgb[..., 2] < 0.3)
    assert reddish.sum() > 200  # red bars and crosses of the figures


def test_page_loads_without_errors_and_images_decode_in_the_browser(course_page, tmp_path):
    browser = _chromium()
    if browser is None:
        pytest.skip("chromium is not installed (Debian: apt-get install chromium)")
    _, page = course_page
    # A probe, added to a copy of the page (the report itself holds no script), that counts
    # error events (a resource that fails to load, a script error), resources fetched from
    # anywhere but the page itself, and each image's decoded width, into the title.
    probe = (
        "<script>let errors = 0; window.addEventListener('error', () => errors++, true);"
        "window.addEventListener('load', () => { const fetched = performance"
        ".getEntriesByType('resource').filter(r => !r.name.startsWith('data:')).length;"
        "document.title = 'probe:' + errors + ';' + fetched + ';' + "
        "Array.from(document.images).map(i => i.complete ? i.naturalWidth : -1).join(','); "
        "});</script>"
    )
    html_path = tmp_path / "probe.html"
    html_path.write_text(page.replace("<head>", "<head>" + probe, 1), encoding="utf-8")
    dom = _headless(browser, "--dump-dom", "--virtual-time-budget=5000", html_path.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    start = dom.stdout.index("<title>probe:") + len("<title>probe:")
    errors, fetched, widths = dom.stdout[start : dom.stdout.index("</title>", start)].split(";")
    assert int(errors) == 0
    assert int(fetched) == 0  # nothing from the network, not even a font
    sizes = [int(s) for s in widths.split(",")]
    assert len(sizes) >= 5
    assert all(size > 100 for size in sizes), sizes


def test_the_browser_probe_sees_a_broken_image(tmp_path):
    """The probe above is not blind: a page with a broken image gives an error and width 0."""
    browser = _chromium()
    if browser is None:
        pytest.skip("chromium is not installed (Debian: apt-get install chromium)")
    probe = (
        "<script>let errors = 0; window.addEventListener('error', () => errors++, true);"
        "window.addEventListener('load', () => { document.title = 'probe:' + errors + ';' + "
        "Array.from(document.images).map(i => i.naturalWidth).join(','); });</script>"
    )
    broken = "<!DOCTYPE html><html><head>" + probe + "</head><body>"
    broken += '<img src="data:image/png;base64,iVBORw0KGgoAAAA" alt="x"></body></html>'
    html_path = tmp_path / "broken.html"
    html_path.write_text(broken, encoding="utf-8")
    dom = _headless(browser, "--dump-dom", "--virtual-time-budget=5000", html_path.as_uri())
    assert "<title>probe:1;0</title>" in dom.stdout, dom.stdout[:500]
