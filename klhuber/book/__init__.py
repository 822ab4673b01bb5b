"""The book pipeline: execute the notebooks with papermill, then render them with Jupyter Book.

The package's modules, one job each:

* ``sources`` -- where the sources are read and the build writes (``BookPaths``), the table
  of contents, ``BookError``;
* ``runner`` -- papermill execution with cache keys, and each chapter's state;
* ``scorecard`` -- what the notebooks record (``Recorder``) for the reproduction scorecard;
* ``scorecard_page`` -- the generated scorecard page;
* ``site`` -- staging the Jupyter Book source and rendering the HTML;
* ``checks`` -- what a reader must never see on a rendered page;
* ``cli`` -- the ``klhuber book`` command;
* ``sphinx_offline`` -- a Sphinx extension that keeps CDN addresses out of the HTML.

The names below are re-exported here, so ``from klhuber.book import build`` works.
"""

from __future__ import annotations

from klhuber.book.checks import OUTPUT_PROBLEMS, check_page, check_rendered_pages
from klhuber.book.cli import configure_parser
from klhuber.book.runner import (
    CELL_TIMEOUT_S,
    PROFILES,
    RunRecord,
    cache_key,
    chapter_state,
    run_notebooks,
)
from klhuber.book.scorecard_page import write_scorecard
from klhuber.book.site import (
    API_PAGES,
    READER_HIDDEN_TAGS,
    build,
    build_html,
    stage_site,
)
from klhuber.book.sources import (
    NOTEBOOK_PREFIX,
    BookError,
    BookPaths,
    find_book_root,
    notebook_stems,
    toc_files,
)

__all__ = [
    "API_PAGES",
    "CELL_TIMEOUT_S",
    "NOTEBOOK_PREFIX",
    "OUTPUT_PROBLEMS",
    "PROFILES",
    "READER_HIDDEN_TAGS",
    "BookError",
    "BookPaths",
    "RunRecord",
    "build",
    "build_html",
    "cache_key",
    "chapter_state",
    "check_page",
    "check_rendered_pages",
    "configure_parser",
    "find_book_root",
    "notebook_stems",
    "run_notebooks",
    "stage_site",
    "toc_files",
    "write_scorecard",
]

# not public; the tests of the staging and of the reader-view check reach them here
from klhuber.book.checks import _check_reader_view as _check_reader_view  # noqa: E402
from klhuber.book.site import _stage_notebook as _stage_notebook  # noqa: E402
