"""A quick-profile build of the whole book into a temporary folder, checked file by file and
in a real browser (headless Chromium, network off).

The build executes every notebook, so it is the slowest part of the suite; all tests here share
one build; `make test` runs them in a separate, serial pytest run. Set ``KLHUBER_TEST_BOOK_OUTPUT`` to an existing build's output folder
to check that build instead of making a new one.
"""

from __future__ import annotations

import os
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from klhuber import book
from klhuber.book.scorecard import ARTEFACTS

pytestmark = pytest.mark.slow

REMOTE_PATTERN = re.compile(
    r"https?://(?:[\w-]+\.)*(?:unpkg\.com|jsdelivr\.net|cdnjs\.cloudflare\.com|googleapis\.com|"
    r"gstatic\.com|mathjax\.org|polyfill\.io|cloudflare\.com|bootstrapcdn\.com)")


@pytest.fixture(scope="module")
def built_book(tmp_path_factory) -> book.BookPaths:
    existing = os.environ.get("KLHUBER_TEST_BOOK_OUTPUT")
    if existing:
        paths = book.BookPaths(output=Path(existing))
        if not paths.html.exists():
            pytest.fail(f"KLHUBER_TEST_BOOK_OUTPUT={existing} has no _build/html")
        return paths
    paths = book.BookPaths(output=tmp_path_factory.mktemp("book"))
    book.build(profile="quick", device="cpu", paths=paths)
    return paths


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.links: list[str] = []

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if tag == "img" and attributes.get("src"):
            self.images.append(attributes["src"])
        if tag == "a" and attributes.get("href"):
            self.links.append(attributes["href"])


def _pages(paths: book.BookPaths) -> list[Path]:
    return [paths.html / f"{entry}.html" for entry in book.toc_files(paths)]


def _local_target(page: Path, href: str) -> Path | None:
    parts = urlsplit(href)
    if parts.scheme or parts.netloc or not parts.path:
        return None
    return (page.parent / unquote(parts.path)).resolve()


def test_every_toc_page_is_rendered(built_book):
    missing = [str(p) for p in _pages(built_book) if not p.exists()]
    assert not missing, missing


def test_images_and_internal_links_resolve(built_book):
    problems = []
    for page in built_book.html.rglob("*.html"):
        if "_static" in page.parts or "_modules" in page.parts:
            continue
        parser = _Links()
        parser.feed(page.read_text(encoding="utf-8"))
        for src in parser.images:
            if src.startswith("data:"):
                continue
            target = _local_target(page, src)
            if target is None or not target.exists():
                problems.append(f"{page.name}: image {src}")
        for href in parser.links:
            parts = urlsplit(href)
            target = page if not parts.path and not parts.scheme else _local_target(page, href)
            if target is None:
                continue
            if not target.exists():
                problems.append(f"{page.name}: link {href}")
            elif parts.fragment and target.suffix == ".html":
                ids = _ids(target)
                if unquote(parts.fragment) not in ids:
                    problems.append(f"{page.name}: link {href} (no such anchor)")
    assert not problems, problems[:20]


_ID_CACHE: dict[Path, set[str]] = {}


def _ids(page: Path) -> set[str]:
    if page not in _ID_CACHE:
        _ID_CACHE[page] = set(re.findall(r'\bid="([^"]+)"', page.read_text(encoding="utf-8")))
    return _ID_CACHE[page]


def test_no_cdn_address_in_the_html(built_book):
    offenders = []
    for page in built_book.html.rglob("*.html"):
        found = REMOTE_PATTERN.findall(page.read_text(encoding="utf-8"))
        if found:
            offenders.append((str(page.relative_to(built_book.html)), sorted(set(found))))
    assert not offenders, offenders[:10]
    assert (built_book.html / "_static" / "mathjax" / "tex-chtml.js").exists()


def test_scorecard_has_a_computed_status_for_every_artefact(built_book):
    import json

    summary = json.loads((built_book.build / "scorecard.json").read_text())
    recorded = {row["key"] for row in summary["rows"]}
    missing = [a.key for a in ARTEFACTS if a.key not in recorded]
    assert not missing, f"artefacts recorded by no chapter: {missing}"
    html = (built_book.html / "book" / "scorecard.html").read_text(encoding="utf-8")
    assert "not recorded by any chapter" not in html


# ---------------------------------------------------------------------------------------------
# In a browser
# ---------------------------------------------------------------------------------------------
def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.skip("chromium is not installed (make test installs it when run as root)")
    return path


BOOK_ORIGIN = "http://book.klhuber.invalid"


@pytest.fixture(scope="module")
def browser(built_book):
    """A browser context with the network off: requests to BOOK_ORIGIN are answered from the
    built HTML folder on disk, every other request is aborted (and reported by ``_open``).

    Pages are served under an http origin rather than opened as file:// URLs because the search
    page fetches page summaries, which browsers refuse for file:// origins.
    """
    playwright_api = pytest.importorskip("playwright.sync_api")
    executable = _chromium()
    root = built_book.html.resolve()

    def serve(route):
        parts = urlsplit(route.request.url)
        if f"{parts.scheme}://{parts.netloc}" != BOOK_ORIGIN:
            route.abort("internetdisconnected")
            return
        target = (root / unquote(parts.path).lstrip("/")).resolve()
        if target.is_dir():
            target = target / "index.html"
        if root not in target.parents or not target.is_file():
            route.fulfill(status=404, body="not found")
            return
        route.fulfill(path=str(target))

    with playwright_api.sync_playwright() as playwright:
        instance = playwright.chromium.launch(
            executable_path=executable,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--no-first-run", "--disable-sync"])
        context = instance.new_context(viewport={"width": 1280, "height": 900})
        context.route("**/*", serve)
        yield context
        context.close()
        instance.close()


def _url(paths: book.BookPaths, page: Path) -> str:
    return f"{BOOK_ORIGIN}/{page.relative_to(paths.html).as_posix()}"


def _open(context, url: str):
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(f"console.{m.type}: {m.text}")
            if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
    page.on("requestfailed", lambda r: errors.append(f"request failed: {r.url}"))
    page.on("response", lambda r: errors.append(f"HTTP {r.status}: {r.url}")
            if r.status >= 400 else None)
    page.goto(url, wait_until="load")
    return page, errors


def _wait_for_mathjax(page) -> None:
    if page.evaluate("typeof window.MathJax === 'undefined'"):
        return
    page.wait_for_function("window.MathJax && MathJax.startup && MathJax.startup.promise",
                           timeout=20_000)
    page.evaluate("MathJax.startup.promise")


def test_every_page_in_the_browser(built_book, browser):
    """No console errors, every image loads, MathJax typeset every equation."""
    failures = []
    for path in _pages(built_book):
        page, errors = _open(browser, _url(built_book, path))
        _wait_for_mathjax(page)
        broken_images = page.evaluate(
            "Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0))"
            ".map(i => i.src)")
        math_nodes = page.locator("div.math, span.math").count()
        typeset = page.locator("div.math mjx-container, span.math mjx-container").count()
        raw = page.evaluate("document.querySelector('article') ? "
                            "document.querySelector('article').innerText : ''")
        name = path.relative_to(built_book.html)
        if errors:
            failures.append(f"{name}: {errors}")
        if broken_images:
            failures.append(f"{name}: images that did not load {broken_images}")
        if typeset < math_nodes:
            failures.append(f"{name}: MathJax typeset {typeset} of {math_nodes} equations")
        if "$$" in raw or "\\[" in raw:
            failures.append(f"{name}: raw TeX left in the page")
        page.close()
    assert not failures, "\n".join(failures)


def test_intro_typesets_math_and_screenshots(built_book, browser):
    shots = built_book.build / "screenshots"
    shots.mkdir(exist_ok=True)
    page, errors = _open(browser, _url(built_book, built_book.html / "book" / "intro.html"))
    _wait_for_mathjax(page)
    assert page.locator("mjx-container").count() >= 5
    page.screenshot(path=str(shots / "intro.png"), full_page=True)
    page.close()
    chapter, _ = _open(browser, _url(built_book,
                                      built_book.html / "book" / "nb" / "huber_at_a_glance.html"))
    _wait_for_mathjax(chapter)
    chapter.screenshot(path=str(shots / "huber_at_a_glance.png"), full_page=True)
    chapter.close()
    assert not errors
    assert (shots / "intro.png").stat().st_size > 10_000


def test_search_finds_huber(built_book, browser):
    page, errors = _open(browser, _url(built_book, built_book.html / "search.html") + "?q=Huber")
    page.wait_for_selector("#search-results ul.search li", timeout=20_000)
    hits = page.locator("#search-results ul.search li").count()
    page.close()
    assert hits >= 3, hits
    assert not errors


def test_pages_fit_a_phone_and_are_screenshotted(built_book, browser):
    """Every page at 1400 px and at 400 px wide: screenshots of both (in
    ``_build/screenshots/<width>/``); at 400 px no page is wider than the viewport (wide
    tables and equations scroll inside their own box); at 1400 px no figure is shrunk below
    90 % of its size, so the style's 10 pt text (9 pt legends) stays at least 9 pt / 8 pt."""
    shots = built_book.build / "screenshots"
    too_wide, shrunk = [], []
    for width in (1400, 400):
        (shots / str(width)).mkdir(parents=True, exist_ok=True)
        for path in _pages(built_book):
            page, _ = _open(browser, _url(built_book, path))
            page.set_viewport_size({"width": width, "height": 900})
            _wait_for_mathjax(page)
            overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
            name = path.relative_to(built_book.html).as_posix().replace("/", "_")[:-len(".html")]
            page.screenshot(path=str(shots / str(width) / f"{name}.png"), full_page=True)
            if width == 400 and overflow > 1:
                too_wide.append(f"{name}: {overflow} px wider than the 400 px viewport")
            if width == 1400:
                scales = page.evaluate(
                    "Array.from(document.querySelectorAll('article img'))"
                    ".filter(i => i.naturalWidth > 0)"
                    ".map(i => [i.getAttribute('src'), i.getBoundingClientRect().width / i.naturalWidth])")
                shrunk += [f"{name}: {src} shown at {scale:.0%}" for src, scale in scales
                           if scale < 0.9]
            page.close()
    assert not too_wide and not shrunk, "\n".join(too_wide + shrunk)
