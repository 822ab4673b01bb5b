"""The build check on what a reader sees (klhuber.book.check_page), on small synthetic HTML."""

from __future__ import annotations

import pytest

from klhuber import book

pytest.importorskip("bs4")


def _page(body: str) -> str:
    return f'<html><body><main><article class="bd-article">{body}</article></main></body></html>'


def _output(text: str) -> str:
    return (f'<div class="cell docutils container"><div class="cell_output docutils container">'
            f'<div class="output stream highlight-myst-ansi notranslate"><div class="highlight">'
            f'<pre><span></span>{text}</pre></div></div></div></div>')


FIGURE = ('<figure class="align-default" id="fig-x"><img alt="{alt}" src="../../_images/a1b2.svg" />'
          '<figcaption><p><span class="caption-number">Fig. 1 </span>'
          '<span class="caption-text">{caption}</span></p></figcaption></figure>')

CLEAN = _page(
    "<h1>A chapter</h1><p>Prose with a path-like ratio α/2/3 and 1/α.</p>"
    + _output("bounds hold on all 2001 grid points: True")
    + FIGURE.format(alt="Line plot of the Huber loss between its two bounds.",
                    caption="The Huber loss between its bounds.")
    + '<table><tr><th><span class="math notranslate nohighlight">\\(|x|\\)</span></th>'
      "<th>value</th></tr><tr><td>1</td><td>2</td></tr></table>")


def test_a_clean_page_passes():
    assert book.check_page(CLEAN) == []


@pytest.mark.parametrize("text, what", [
    ("/work/main/.venv/lib/python3.12/site-packages/tqdm/auto.py:21: TqdmWarning: IProgress "
     "not found", "a warning"),
    ("Traceback (most recent call last):", "a traceback"),
    ("wrote /tmp/pytest-0/book/artefacts/fig1.svg", "an absolute file-system path"),
    ("saved to '/home/user/x.json'", "an absolute file-system path"),
    ("Row(key='fig1', chapter='toy_problem', status='verified')", "a raw object repr"),
    ("&lt;klhuber.book.scorecard.Recorder object at 0x7f3a2c&gt;", "a raw object repr"),
    ("{'grid_points': 2001, 'alphas': [0.5, 1.0]}", "a raw dict repr"),
    ("mean learned α: {'laplace': 0.661, 'huber': 0.7}", "a raw dict repr"),
    ("{0.5: 0.0, 1.0: 0.0}", "a raw dict repr"),
])
def test_an_output_a_reader_should_not_see_is_named(text, what):
    problems = book.check_page(_page(_output(text)), "book/nb/x")
    assert problems and all(p.startswith("book/nb/x: a cell output shows") for p in problems)
    assert any(what in p for p in problems), problems


def test_outputs_outside_cells_and_maths_are_not_outputs():
    prose = _page("<p>Warning: the paper's Traceback of /usr/lib is prose, not output.</p>"
                  + _output('<span class="math">\\(\\{a: 1\\}\\)</span> done'))
    assert book.check_page(prose) == []


def test_figures_need_a_numbered_caption_and_real_alt_text():
    bare = _page('<div class="cell_output"><img alt="../../_images/3f2a9c.svg" '
                 'src="../../_images/3f2a9c.svg" /></div>')
    problems = book.check_page(bare)
    assert any("no caption" in p for p in problems)
    assert any("no alt text" in p for p in problems)
    unnumbered = _page('<figure><img alt="A plot." src="a.svg" /><figcaption><p>A plot.</p>'
                       '</figcaption></figure>')
    assert any("unnumbered caption" in p for p in book.check_page(unnumbered))
    hashed = _page(FIGURE.format(alt="0123456789abcdef0123", caption="A plot."))
    assert any("no alt text" in p for p in book.check_page(hashed))


def test_unrendered_pipes_in_tables_are_found():
    cell = _page("<table><tr><th>|x|</th><th>value</th></tr></table>")
    assert any("raw '|'" in p for p in book.check_page(cell))
    paragraph = _page("<p>| |x| ≤ α | H | D |\n|---|---|---|</p>")
    assert any("rendered as text" in p for p in book.check_page(paragraph))


def test_the_build_fails_on_a_page_a_reader_should_not_see(tmp_path):
    paths = book.BookPaths(root=tmp_path, output=tmp_path / "out")
    (tmp_path / "_toc.yml").write_text(
        "format: jb-book\nroot: book/intro\nchapters:\n  - file: book/nb/a\n"
        "  - file: book/api/index\n")
    (paths.html / "book" / "nb").mkdir(parents=True)
    (paths.html / "book" / "api").mkdir(parents=True)
    (paths.html / "book" / "intro.html").write_text(CLEAN)
    (paths.html / "book" / "api" / "index.html").write_text(_page(_output("{'api': 1}")))
    (paths.html / "book" / "nb" / "a.html").write_text(CLEAN)
    book._check_reader_view(paths)  # the API reference is not checked
    (paths.html / "book" / "nb" / "a.html").write_text(_page(_output("TqdmWarning")))
    with pytest.raises(book.BookError, match="book/nb/a: a cell output shows a warning"):
        book._check_reader_view(paths)


def test_the_books_own_css_is_staged_at_the_site_root(tmp_path):
    (tmp_path / "book" / "_static").mkdir(parents=True)
    (tmp_path / "book" / "_static" / "klhuber.css").write_text("code { white-space: normal; }\n")
    (tmp_path / "book" / "intro.md").write_text("# Intro\n")
    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: book/intro\n")
    (tmp_path / "_config.yml").write_text("title: t\n")
    paths = book.BookPaths(root=tmp_path, output=tmp_path / "out")
    site = book.stage_site(paths)
    assert (site / "_static" / "klhuber.css").is_file()  # Jupyter Book links every .css there
    assert not (site / "book" / "_static").exists()
