"""Stage the Jupyter Book source and render it: the generated pages (scorecard, API reference),
the executed notebooks with their parameters cells hidden, then Jupyter Book with Sphinx
warnings as errors and the checks on what a reader sees.

Jupyter Book runs with its own execution off (``_config.yml``): the notebooks were executed
by :func:`klhuber.book.runner.run_notebooks`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from klhuber.book.checks import _check_reader_view
from klhuber.book.runner import _check_publishable, _print_timings, run_notebooks
from klhuber.book.scorecard import figures_dir
from klhuber.book.scorecard_page import write_scorecard
from klhuber.book.sources import BookError, BookPaths, notebook_stems
from klhuber.results import atomic_write_text

__all__ = ["API_PAGES", "READER_HIDDEN_TAGS", "build", "build_html", "stage_site"]

#: API reference pages (``book/api/<page>`` in ``_toc.yml``) and the modules each documents.
API_PAGES: dict[str, tuple[str, ...]] = {
    "losses": ("klhuber.losses",),
    "symbolic": ("klhuber.symbolic",),
    "interpret": ("klhuber.interpret",),
    "toy": ("klhuber.toy",),
    "detection": ("klhuber.detection.models", "klhuber.detection.heads",
                  "klhuber.detection.backbones", "klhuber.detection.roi_align",
                  "klhuber.detection.box_losses",
                  "klhuber.detection.synthetic", "klhuber.detection.data",
                  "klhuber.detection.config", "klhuber.detection.engine",
                  "klhuber.detection.evaluate", "klhuber.detection.experiments",
                  "klhuber.detection.report"),
    "related": ("klhuber.related.barron", "klhuber.related.harmonic"),
    "infrastructure": ("klhuber.book.sources", "klhuber.book.runner", "klhuber.book.site",
                       "klhuber.book.checks", "klhuber.book.scorecard",
                       "klhuber.book.scorecard_page", "klhuber.results", "klhuber.plotting"),
}


def _write_api_pages(paths: BookPaths) -> None:
    """Write ``book/api/index.md`` and one autodoc page per entry of :data:`API_PAGES`."""
    folder = paths.site / "book" / "api"
    folder.mkdir(parents=True, exist_ok=True)
    index = ["(api-index)=", "# API reference", "",
             "Generated from the docstrings of the `klhuber` package at build time.", ""]
    for page, modules in API_PAGES.items():
        index.append(f"- {{doc}}`{page}`: " + ", ".join(f"`{m}`" for m in modules))
        lines = [f"# {page.capitalize()}", ""]
        for module in modules:
            lines += ["```{eval-rst}", f".. automodule:: {module}", "   :members:", "```", ""]
        atomic_write_text(folder / f"{page}.md", "\n".join(lines))
    atomic_write_text(folder / "index.md", "\n".join(index) + "\n")


#: Cell tags whose cells a reader never sees (papermill's parameters and the values it
#: injected, which hold machine paths).
READER_HIDDEN_TAGS = ("parameters", "injected-parameters")


def _stage_notebook(executed: Path, target: Path) -> None:
    """Copy an executed notebook into the site with its parameters cells removed
    (the ``remove-cell`` tag of myst-nb)."""
    notebook = json.loads(executed.read_text(encoding="utf-8"))
    for cell in notebook.get("cells", []):
        tags = cell.setdefault("metadata", {}).setdefault("tags", [])
        if any(t in READER_HIDDEN_TAGS for t in tags) and "remove-cell" not in tags:
            tags.append("remove-cell")
    atomic_write_text(target, json.dumps(notebook, indent=1, ensure_ascii=False) + "\n")


def stage_site(paths: BookPaths | None = None) -> Path:
    """Assemble the Jupyter Book source: config, toc, static pages, executed notebooks."""
    paths = BookPaths() if paths is None else paths
    site = paths.site
    if site.exists():
        shutil.rmtree(site)
    (site / "book" / "nb").mkdir(parents=True)
    shutil.copy2(paths.root / "_config.yml", site / "_config.yml")
    shutil.copy2(paths.root / "_toc.yml", site / "_toc.yml")
    static = paths.root / "book" / "_static"
    if static.is_dir():  # the book's own CSS (Jupyter Book adds every .css in <site>/_static)
        shutil.copytree(static, site / "_static")
    for item in (paths.root / "book").iterdir():
        if item.name in ("_build", "nb", "_static") or item.name.startswith("."):
            continue
        if item.is_dir():
            shutil.copytree(item, site / "book" / item.name)
        else:
            shutil.copy2(item, site / "book" / item.name)
    for stem in notebook_stems(paths):
        executed = paths.executed / f"{stem}.ipynb"
        if not executed.exists():
            raise BookError(f"notebook '{stem}' has not been executed; run `klhuber book run {stem}`")
        _stage_notebook(executed, site / "book" / "nb" / f"{stem}.ipynb")
    if paths.results.exists():
        shutil.copytree(paths.results, site / "book" / "results",
                        ignore=shutil.ignore_patterns(".*", "*.pt", "*.pth"))
    figures = figures_dir(paths.artefacts)
    if figures.exists():
        shutil.copytree(figures, site / "book" / "figures")
    write_scorecard(paths)
    _write_api_pages(paths)
    return site


def build_html(paths: BookPaths | None = None, *, strict: bool = True,
               log: Any = print) -> Path:
    """Render the staged site with Jupyter Book 1.x into ``<output>/_build/html``.

    Only a book whose every chapter's last execution succeeded for its current sources is
    rendered; otherwise :class:`~klhuber.book.sources.BookError` names the failed, stale or
    missing chapters. The rendered pages are then checked
    (:func:`~klhuber.book.checks.check_rendered_pages`): a page that shows a reader a warning, a
    traceback, a machine path, a raw repr, an uncaptioned figure or an unrendered table fails
    the build."""
    paths = BookPaths() if paths is None else paths
    _check_publishable(paths)
    site = stage_site(paths)
    command = [str(Path(sys.executable).parent / "jupyter-book"), "build", str(site),
               "--path-output", str(paths.build / "jb"), "--builder", "html"]
    if strict:
        command += ["-W", "-n", "--keep-going"]
    log("[book] " + " ".join(command))
    start = time.perf_counter()
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    completed = subprocess.run(command, cwd=paths.root, env=env, capture_output=True, text=True)
    if completed.returncode != 0:
        raise BookError("Jupyter Book failed (warnings are errors):\n"
                        + completed.stdout[-8000:] + completed.stderr[-8000:])
    built = paths.build / "jb" / "_build" / "html"
    if paths.html.exists():
        shutil.rmtree(paths.html)
    shutil.move(str(built), str(paths.html))
    log(f"[book] html in {paths.html} ({time.perf_counter() - start:.1f} s)")
    _check_reader_view(paths)
    return paths.html



def build(*, profile: str = "quick", device: str = "cpu", seed: int = 0, force: bool = False,
          paths: BookPaths | None = None, log: Any = print) -> Path:
    """Execute every changed notebook, then render the book. Returns the HTML folder."""
    paths = BookPaths() if paths is None else paths
    start = time.perf_counter()
    records = run_notebooks(profile=profile, device=device, seed=seed, force=force, paths=paths,
                            log=log)
    html = build_html(paths, log=log)
    _print_timings(records, log)
    log(f"[book] total {time.perf_counter() - start:.1f} s")
    return html

