"""Where the book's sources are read and where its build writes; its table of contents.

Layout (``output`` defaults to ``<root>/book``; everything generated lives in
``<output>/_build``)::

    _build/executed/<stem>.ipynb   papermill's executed copy of notebooks/<stem>.py
    _build/cache/<stem>.json       cache key, profile, device and run time of that execution
    _build/artefacts/<stem>.json   scorecard rows the notebook recorded (klhuber.book.scorecard)
    _build/site/                   the staged Jupyter Book source (config, toc, pages, notebooks)
    _build/html/                   the rendered book

``root`` defaults to the book found from the current directory (:func:`find_book_root`), so
an installed wheel builds whatever book it is run in, never one beside the package.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["NOTEBOOK_PREFIX", "BookError", "BookPaths", "find_book_root", "notebook_stems",
           "toc_files"]

#: Where the table of contents lists the chapters (``_toc.yml`` entries ``book/nb/<stem>``).
NOTEBOOK_PREFIX = "book/nb/"


class BookError(RuntimeError):
    """A notebook failed to execute, or the book failed to build."""


def find_book_root(start: str | os.PathLike | None = None) -> Path | None:
    """The book source folder (``_toc.yml`` and ``notebooks/``) at ``start`` (default: the
    current directory) or above it, else ``None``."""
    here = Path.cwd() if start is None else Path(start)
    for folder in (here.resolve(), *here.resolve().parents):
        if (folder / "_toc.yml").is_file() and (folder / "notebooks").is_dir():
            return folder
    return None


def _default_root() -> Path:
    return find_book_root() or Path.cwd()


@dataclass(frozen=True)
class BookPaths:
    """Where the sources are read and where the build writes.

    ``root`` defaults to the book found from the current directory when the object is made
    (:func:`find_book_root`, else the current directory); ``output`` to ``<root>/book``.
    """

    root: Path = field(default_factory=_default_root)
    output: Path | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))
        output = self.root / "book" if self.output is None else Path(self.output)
        object.__setattr__(self, "output", output)

    @property
    def build(self) -> Path:
        return self.output / "_build"

    @property
    def executed(self) -> Path:
        return self.build / "executed"

    @property
    def cache(self) -> Path:
        return self.build / "cache"

    @property
    def artefacts(self) -> Path:
        return self.build / "artefacts"

    @property
    def site(self) -> Path:
        return self.build / "site"

    @property
    def html(self) -> Path:
        return self.build / "html"

    @property
    def notebooks(self) -> Path:
        return self.root / "notebooks"

    @property
    def results(self) -> Path:
        return self.root / "results"


def _toc_files(toc: Mapping[str, Any]) -> list[str]:
    files = [toc["root"]]

    def walk(entries: Iterable[Mapping[str, Any]]) -> None:
        for entry in entries:
            if "file" in entry:
                files.append(entry["file"])
            for key in ("chapters", "sections", "parts"):
                if key in entry:
                    walk(entry[key])

    walk(toc.get("parts", []) + toc.get("chapters", []))
    return files


def toc_files(paths: BookPaths | None = None) -> list[str]:
    """Every file named in ``_toc.yml``, without extension, in order."""
    import yaml

    paths = BookPaths() if paths is None else paths
    toc_path = paths.root / "_toc.yml"
    if not toc_path.is_file():
        raise BookError(f"no book at {paths.root} (no _toc.yml): run klhuber book from a "
                        f"klhuber checkout or pass --root <checkout>")
    toc = yaml.safe_load(toc_path.read_text(encoding="utf-8"))
    return _toc_files(toc)


def notebook_stems(paths: BookPaths | None = None) -> list[str]:
    """The notebooks of the book, in table-of-contents order."""
    return [f[len(NOTEBOOK_PREFIX):] for f in toc_files(paths) if f.startswith(NOTEBOOK_PREFIX)]
