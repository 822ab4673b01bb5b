"""What a reader sees: checks on the rendered pages of the book.

A page that shows a reader a warning, a traceback, a machine path, a raw repr, an uncaptioned
figure or an unrendered table fails the build (:func:`check_rendered_pages`).
"""

from __future__ import annotations

from typing import Any

from klhuber.book.sources import BookError, BookPaths, toc_files

__all__ = ["OUTPUT_PROBLEMS", "check_page", "check_rendered_pages"]

#: What a cell's output must never show a reader, each with the name of the problem (regular
#: expressions; see the source for them).
#:
#: :meta hide-value:
OUTPUT_PROBLEMS: tuple[tuple[str, str], ...] = (
    (r"Warning\b", "a warning"),
    (r"Traceback", "a traceback"),
    (r"(?:^|(?<=[\s'\"(\[=:,]))(?:/(?:[\w.+@-]+/)+[\w.+@-]*|~/[\w.+@-]+|[A-Za-z]:\\[\w.+@-]+)",
     "an absolute file-system path"),
    (r"\b[A-Z]\w*\(\w+=", "a raw object repr"),
    (r" object at 0x[0-9a-fA-F]+", "a raw object repr"),
    (r"\{\s*(?:'[^'\n]{0,80}'|\"[^\"\n]{0,80}\"|-?\d+(?:\.\d+)?)\s*:\s", "a raw dict repr"),
)
_IMAGE_FILE_ALT = r"(?:^|/)[\w.-]*\.(?:svg|png|jpe?g|gif|webp)$|^[0-9a-f]{16,}$"


def _text_without_math(node: Any) -> str:
    """The text of a BeautifulSoup node, with MathJax source (``span.math``/``div.math``) left out."""
    import copy

    node = copy.copy(node)
    for math in node.select(".math, mjx-container, script"):
        math.decompose()
    return node.get_text(" ")


def check_page(html: str, name: str = "page") -> list[str]:
    """What a reader should not see on one rendered page: one line per problem.

    * a cell output with a warning, a traceback, an absolute file-system path or a raw
      ``Row(...)``/dict/object repr (:data:`OUTPUT_PROBLEMS`);
    * an image without a numbered caption (a ``<figure>`` with a ``caption-number``), or whose
      alt text is empty or a file name;
    * a table cell, or a paragraph, with a ``|`` that Markdown did not turn into a table
      (outside maths).
    """
    import re

    from bs4 import BeautifulSoup

    soup = BeautifulSoup(html, "html.parser")
    body = soup.select_one("article.bd-article") or soup.select_one("main") or soup
    problems: list[str] = []

    def short(text: str, match: re.Match) -> str:
        start = max(match.start() - 30, 0)
        return " ".join(text[start:match.end() + 30].split())

    for output in body.select("div.cell_output"):
        text = _text_without_math(output)
        for pattern, what in OUTPUT_PROBLEMS:
            found = re.search(pattern, text, flags=re.MULTILINE)
            if found:
                problems.append(f"{name}: a cell output shows {what}: …{short(text, found)}…")
    for image in body.find_all("img"):
        alt = (image.get("alt") or "").strip()
        source = image.get("src", "")
        figure = image.find_parent("figure")
        caption = figure.find("figcaption") if figure is not None else None
        if caption is None or not caption.get_text(strip=True):
            problems.append(f"{name}: figure {source} has no caption")
        elif caption.find(class_="caption-number") is None:
            problems.append(f"{name}: figure {source} has an unnumbered caption")
        if not alt or re.search(_IMAGE_FILE_ALT, alt):
            problems.append(f"{name}: figure {source} has no alt text (alt={alt!r})")
    for cell in body.find_all(["td", "th"]):
        if "|" in _text_without_math(cell):
            problems.append(f"{name}: a table cell shows a raw '|': "
                            f"{' '.join(cell.get_text(' ').split())[:80]}")
    for paragraph in body.find_all("p"):
        text = _text_without_math(paragraph).strip()
        if text.startswith("|") and text.count("|") >= 3:
            problems.append(f"{name}: a Markdown table rendered as text: {text[:80]}")
    return problems


def check_rendered_pages(paths: BookPaths | None = None) -> list[str]:
    """:func:`check_page` on every page of the table of contents except the API reference."""
    paths = BookPaths() if paths is None else paths
    problems = []
    for entry in toc_files(paths):
        if entry.startswith("book/api/"):
            continue
        page = paths.html / f"{entry}.html"
        if page.exists():
            problems += check_page(page.read_text(encoding="utf-8"), entry)
    return problems


def _check_reader_view(paths: BookPaths) -> None:
    problems = check_rendered_pages(paths)
    if problems:
        raise BookError(f"the rendered pages show a reader {len(problems)} thing(s) they should "
                        "not (tag the cell remove-input/remove-cell, print prose instead of "
                        "reprs, give the figure a mystnb caption and alt text):\n  "
                        + "\n  ".join(problems))
