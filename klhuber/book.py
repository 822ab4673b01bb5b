"""The book pipeline: execute the notebooks with papermill, then render them with Jupyter Book.

Layout (``output`` defaults to ``book/``; everything generated lives in ``<output>/_build``)::

    _build/executed/<stem>.ipynb   papermill's executed copy of notebooks/<stem>.py
    _build/cache/<stem>.json       cache key, profile, device and run time of that execution
    _build/artefacts/<stem>.json   scorecard rows the notebook recorded (klhuber.scorecard)
    _build/site/                   the staged Jupyter Book source (config, toc, pages, notebooks)
    _build/html/                   the rendered book

A notebook is executed again only when its cache key changes: the hash of its source, of the
``klhuber`` package sources, of its parameters, of the pins (``constraints.txt``) and of the
committed ``results/``. Jupyter Book runs with its own execution off (``_config.yml``) and with
Sphinx warnings as errors.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from klhuber.results import atomic_write_text
from klhuber.scorecard import figures_dir

__all__ = [
    "PROFILES",
    "BookError",
    "BookPaths",
    "OUTPUT_PROBLEMS",
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
    "write_scorecard",
]



def find_book_root(start: str | os.PathLike | None = None) -> Path | None:
    """The book source folder (``_toc.yml`` and ``notebooks/``) at ``start`` (default: the
    current directory) or above it, else ``None``."""
    here = Path.cwd() if start is None else Path(start)
    for folder in (here.resolve(), *here.resolve().parents):
        if (folder / "_toc.yml").is_file() and (folder / "notebooks").is_dir():
            return folder
    return None


def _default_root() -> Path:
    from klhuber.results import CHECKOUT_ROOT

    if CHECKOUT_ROOT is not None:
        return CHECKOUT_ROOT
    return find_book_root() or Path.cwd()


#: The book's sources: the klhuber checkout, or for an installed wheel the book found from the
#: current directory (the command line's ``--root`` overrides it).
REPO_ROOT = _default_root()
PROFILES = ("quick", "full")
#: papermill per-cell timeout in seconds, per profile (None: no limit).
CELL_TIMEOUT_S: dict[str, int | None] = {"quick": 900, "full": None}
NOTEBOOK_PREFIX = "book/nb/"
#: API reference pages (``book/api/<page>`` in ``_toc.yml``) and the modules each documents.
API_PAGES: dict[str, tuple[str, ...]] = {
    "losses": ("klhuber.losses",),
    "symbolic": ("klhuber.symbolic",),
    "interpret": ("klhuber.interpret",),
    "toy": ("klhuber.toy",),
    "detection": ("klhuber.detection.models", "klhuber.detection.heads",
                  "klhuber.detection.backbones", "klhuber.detection.box_losses",
                  "klhuber.detection.synthetic", "klhuber.detection.data",
                  "klhuber.detection.config", "klhuber.detection.engine",
                  "klhuber.detection.evaluate", "klhuber.detection.experiments",
                  "klhuber.detection.report"),
    "related": ("klhuber.related.barron", "klhuber.related.harmonic"),
    "infrastructure": ("klhuber.book", "klhuber.results", "klhuber.scorecard", "klhuber.plotting"),
}


class BookError(RuntimeError):
    """A notebook failed to execute, or the book failed to build."""


@dataclass(frozen=True)
class BookPaths:
    """Where the sources are read and where the build writes."""

    root: Path = REPO_ROOT
    output: Path = REPO_ROOT / "book"

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


# --------------------------------------------------------------------------------------------
# Table of contents and cache keys
# --------------------------------------------------------------------------------------------
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


def toc_files(paths: BookPaths = BookPaths()) -> list[str]:
    """Every file named in ``_toc.yml``, without extension, in order."""
    import yaml

    toc_path = paths.root / "_toc.yml"
    if not toc_path.is_file():
        raise BookError(f"no book at {paths.root} (no _toc.yml): run klhuber book from a "
                        f"klhuber checkout or pass --root <checkout>")
    toc = yaml.safe_load(toc_path.read_text(encoding="utf-8"))
    return _toc_files(toc)


def notebook_stems(paths: BookPaths = BookPaths()) -> list[str]:
    """The notebooks of the book, in table-of-contents order."""
    return [f[len(NOTEBOOK_PREFIX):] for f in toc_files(paths) if f.startswith(NOTEBOOK_PREFIX)]


def _hash_files(digest: Any, files: Iterable[Path], base: Path) -> None:
    for path in sorted(files):
        digest.update(str(path.relative_to(base)).encode())
        digest.update(b"\0")
        digest.update(path.read_bytes())
        digest.update(b"\0")


def _package_files(root: Path) -> list[Path]:
    package = root / "klhuber"
    return [p for p in package.rglob("*") if p.is_file() and p.suffix in {".py", ".json", ".mplstyle"}
            and "__pycache__" not in p.parts]


def cache_key(stem: str, parameters: Mapping[str, Any], paths: BookPaths = BookPaths(),
              *, include_results: bool = True) -> str:
    """Hash of the notebook source, the klhuber sources, the parameters, the pins and results/.

    ``include_results=False`` leaves ``results/`` out: the *source key* that decides whether a
    chapter's last execution is stale (a chapter may itself add results)."""
    digest = hashlib.sha256()
    digest.update(b"klhuber-book-v1\0")
    _hash_files(digest, [paths.notebooks / f"{stem}.py"], paths.root)
    _hash_files(digest, _package_files(paths.root), paths.root)
    constraints = paths.root / "constraints.txt"
    if constraints.exists():
        _hash_files(digest, [constraints], paths.root)
    if include_results and paths.results.exists():
        _hash_files(digest, [p for p in paths.results.rglob("*") if p.is_file()], paths.root)
    digest.update(json.dumps(dict(parameters), sort_keys=True, default=str).encode())
    return digest.hexdigest()


def chapter_state(stem: str, paths: BookPaths = BookPaths()) -> tuple[str, dict[str, Any]]:
    """``(state, meta)`` of a chapter's last execution: ``"current"`` (succeeded for the
    current sources), ``"stale"`` (succeeded, but the notebook, the klhuber sources or the pins
    changed since), ``"failed"`` (its last execution did not finish) or ``"not executed"``."""
    meta_path = paths.cache / f"{stem}.json"
    executed = paths.executed / f"{stem}.ipynb"
    if not meta_path.exists():
        return ("failed" if executed.exists() else "not executed"), {}
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    if not executed.exists():
        return "not executed", meta
    source = paths.notebooks / f"{stem}.py"
    if not source.exists():
        return "stale", meta
    parameters = _key_parameters(_parameters(stem, meta.get("profile", "quick"),
                                             meta.get("device", "cpu"), meta.get("seed", 0),
                                             paths))
    if "source_key" in meta:
        current = meta["source_key"] == cache_key(stem, parameters, paths, include_results=False)
    else:
        current = meta.get("key") == cache_key(stem, parameters, paths)
    return ("current" if current else "stale"), meta


def _check_publishable(paths: BookPaths) -> None:
    """Raise :class:`BookError` unless every chapter's last execution succeeded for its
    current sources."""
    problems = []
    for stem in notebook_stems(paths):
        state, _ = chapter_state(stem, paths)
        if state != "current":
            problems.append(f"  {stem}: {_STATE_HELP[state]}")
    if problems:
        raise BookError("not publishing: these chapters have no successful execution for their "
                        "current sources\n" + "\n".join(problems)
                        + "\nrun `klhuber book build` (or `klhuber book run <chapter>`) first")


_STATE_HELP = {
    "failed": "its last execution failed or was interrupted",
    "stale": "stale: its notebook, the klhuber sources or the pins changed since it ran",
    "not executed": "not executed",
}


# --------------------------------------------------------------------------------------------
# Execution
# --------------------------------------------------------------------------------------------
@dataclass
class RunRecord:
    stem: str
    status: str  # "executed" | "cached" | "failed"
    seconds: float
    profile: str
    device: str


def _parameters(stem: str, profile: str, device: str, seed: int, paths: BookPaths) -> dict[str, Any]:
    return {
        "profile": profile,
        "device": device,
        "seed": seed,
        "artefacts_dir": str(paths.artefacts.resolve()),
        "results_dir": str(paths.results.resolve()),
    }


def _key_parameters(parameters: Mapping[str, Any]) -> dict[str, Any]:
    # output folders do not change what a notebook computes
    return {k: v for k, v in parameters.items() if k not in ("artefacts_dir", "results_dir")}


def _kernel_environment() -> None:
    """Make the kernel papermill starts use this interpreter (the virtual environment)."""
    bindir = str(Path(sys.executable).parent)
    path = os.environ.get("PATH", "")
    if path.split(os.pathsep)[:1] != [bindir]:
        os.environ["PATH"] = bindir + os.pathsep + path
    os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    os.environ.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")


def _format_failure(stem: str, error: BaseException, executed: Path) -> str:
    cell = getattr(error, "exec_count", None)
    cell_index = getattr(error, "cell_index", None)
    ename = getattr(error, "ename", type(error).__name__)
    evalue = getattr(error, "evalue", str(error))
    traceback = getattr(error, "traceback", None)
    lines = [f"notebook '{stem}' (notebooks/{stem}.py) failed"]
    if cell_index is not None or cell is not None:
        lines.append(f"  cell: index {cell_index}, execution count {cell}")
    lines.append(f"  error: {ename}: {evalue}")
    if traceback:
        import re

        text = "\n".join(traceback) if isinstance(traceback, list) else str(traceback)
        lines.append(re.sub(r"\x1b\[[0-9;]*m", "", text))
    lines.append(f"  executed copy with the error: {executed}")
    return "\n".join(lines)


def run_notebooks(
    stems: Sequence[str] | None = None,
    *,
    profile: str = "quick",
    device: str = "cpu",
    seed: int = 0,
    force: bool = False,
    paths: BookPaths = BookPaths(),
    log: Any = print,
) -> list[RunRecord]:
    """Execute notebooks whose cache key changed; raise :class:`BookError` on the first failure."""
    import jupytext
    import papermill

    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {PROFILES}, got {profile!r}")
    all_stems = notebook_stems(paths)
    stems = list(all_stems if stems is None else stems)
    unknown = [s for s in stems if s not in all_stems]
    if unknown:
        raise ValueError(f"unknown chapter(s) {unknown}; chapters in _toc.yml: {all_stems}")
    for folder in (paths.executed, paths.cache, paths.artefacts):
        folder.mkdir(parents=True, exist_ok=True)
    _kernel_environment()
    records = []
    for stem in stems:
        source = paths.notebooks / f"{stem}.py"
        if not source.exists():
            raise BookError(f"notebook '{stem}' is in _toc.yml but {source} does not exist")
        parameters = _parameters(stem, profile, device, seed, paths)
        key = cache_key(stem, _key_parameters(parameters), paths)
        meta_path = paths.cache / f"{stem}.json"
        executed = paths.executed / f"{stem}.ipynb"
        source_key = cache_key(stem, _key_parameters(parameters), paths, include_results=False)
        if not force and meta_path.exists() and executed.exists():
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            if meta.get("key") == key:
                if meta.get("source_key") != source_key or "seed" not in meta:
                    meta.update(source_key=source_key, seed=seed)
                    atomic_write_text(meta_path, json.dumps(meta))
                records.append(RunRecord(stem, "cached", meta.get("seconds", 0.0),
                                         meta.get("profile", profile), meta.get("device", device)))
                log(f"[book] {stem}: unchanged, not re-executed (ran {meta.get('seconds', 0):.1f} s)")
                continue
        log(f"[book] {stem}: executing (profile={profile}, device={device})")
        notebook = jupytext.read(source)
        notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                           "language": "python"}
        staged = paths.executed / f".{stem}.input.ipynb"
        jupytext.write(notebook, staged, fmt="ipynb")
        meta_path.unlink(missing_ok=True)
        start = time.perf_counter()
        try:
            papermill.execute_notebook(
                str(staged),
                str(executed),
                parameters=parameters,
                cwd=str(paths.notebooks),
                kernel_name="python3",
                execution_timeout=CELL_TIMEOUT_S[profile],
                progress_bar=False,
                report_mode=False,
            )
        except Exception as error:  # papermill wraps cell errors in PapermillExecutionError
            seconds = time.perf_counter() - start
            records.append(RunRecord(stem, "failed", seconds, profile, device))
            _print_timings(records, log)
            raise BookError(_format_failure(stem, error, executed)) from error
        finally:
            staged.unlink(missing_ok=True)
        seconds = time.perf_counter() - start
        atomic_write_text(meta_path, json.dumps({"key": key, "source_key": source_key,
                                                 "seconds": round(seconds, 2),
                                                 "profile": profile, "device": device,
                                                 "seed": seed,
                                                 "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                           time.gmtime())}))
        records.append(RunRecord(stem, "executed", seconds, profile, device))
        log(f"[book] {stem}: done in {seconds:.1f} s")
    return records


def _print_timings(records: Sequence[RunRecord], log: Any = print) -> None:
    if not records:
        return
    width = max(len(r.stem) for r in records)
    log("")
    log(f"{'notebook':<{width}}  {'status':<9} {'profile':<8} {'device':<7} {'seconds':>8}")
    for r in records:
        log(f"{r.stem:<{width}}  {r.status:<9} {r.profile:<8} {r.device:<7} {r.seconds:>8.1f}")
    executed = sum(r.seconds for r in records if r.status != "cached")
    log(f"{'executed in this build':<{width}}  {'':<9} {'':<8} {'':<7} {executed:>8.1f}")


# --------------------------------------------------------------------------------------------
# Generated pages: scorecard, API reference
# --------------------------------------------------------------------------------------------
_STATUS_BADGE = {
    "verified": "✓ verified",
    "reproduced": "✓ reproduced",
    "differs": "≠ differs",
    "inconclusive": "? inconclusive",
    "not run at this profile": "– not run at this profile",
}


def _cell(text: str) -> str:
    return " ".join(str(text).replace("|", "\\|").split())


def _md_cell(text: str) -> str:
    """A table cell of plain text with its scripted symbols (``D_{α,β}``) set as maths."""
    from klhuber.plotting import markdown_text

    return " ".join(markdown_text(str(text)).split())


def _result_device(path: Path) -> str:
    """`` (on <device>)`` from a committed result's provenance block, or ``""``."""
    try:
        provenance = json.loads(path.read_text(encoding="utf-8")).get("provenance", {})
    except (OSError, ValueError, AttributeError):
        return ""
    device = provenance.get("device") if isinstance(provenance, dict) else None
    return f" (ran on {device})" if device else ""


def write_scorecard(paths: BookPaths = BookPaths()) -> Path:
    """Generate ``book/scorecard.md`` in the staged site from the notebooks' artefact rows.

    Raises :class:`BookError` when a row marked verified/reproduced carries a failing check.
    """
    from klhuber.plotting import markdown_text
    from klhuber.scorecard import ARTEFACTS, EXTENSIONS, load_rows

    rows = load_rows(paths.artefacts) if paths.artefacts.exists() else []
    failing = [r for r in rows if r["status"] in ("verified", "reproduced") and r["check"] is not True]
    if failing:
        raise BookError("scorecard rows marked verified with a failing check: "
                        + ", ".join(f"{r['key']} ({r['chapter']})" for r in failing))
    by_key: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_key.setdefault(row["key"], []).append(row)
    counts: dict[str, int] = {}
    lines = [
        "(scorecard)=",
        "# Reproduction scorecard",
        "",
        "Generated at build time from what the notebooks computed: every equation, figure and "
        "table of the paper that the book reproduces (the paper map), with the chapter that "
        "reproduces it. The table gives each row's status, chapter and run (profile / device); "
        "the list below it what the paper states and what the notebook computed. A row marked "
        "verified fails the build when its check fails.",
        "",
        "| artefact | status | chapter | run |",
        "|---|---|---|---|",
    ]
    details: list[str] = ["", "## What each row compares", "",
                          "*Paper* quotes the paper; *ours* was computed by the chapter named in "
                          "the row, at the profile and on the device of the table above.", ""]
    for artefact in ARTEFACTS + EXTENSIONS:
        if artefact is EXTENSIONS[0]:
            lines.append("| **Beyond the paper** | | | |")
            details += ["", "**Beyond the paper**", ""]
        found = by_key.get(artefact.key, [])
        if not found:
            counts["missing"] = counts.get("missing", 0) + 1
            lines.append(f"| {_md_cell(artefact.title)} | ✗ not recorded by any "
                         "chapter | — | — |")
            continue
        for row in found:
            counts[row["status"]] = counts.get(row["status"], 0) + 1
            target = f"nb/{row['chapter']}"
            where = f"[{row['chapter']}]({target}.ipynb)"
            if row.get("anchor"):
                where = f"{{ref}}`{row['chapter']} <{row['anchor']}>`"
            lines.append(
                f"| {_md_cell(artefact.title)} "
                f"| {_STATUS_BADGE.get(row['status'], row['status'])} "
                f"| {where} | {row['profile']} / {row['device']} |")
            details.append(f"- **{markdown_text(artefact.title)}** ({where}). *Paper:* "
                           f"{markdown_text(str(row['paper']))}. *Ours:* "
                           f"{markdown_text(str(row['ours']))}.")
    lines += details
    summary = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    summary_line = (f"**Summary:** {len(ARTEFACTS)} artefacts of the paper map and "
                    f"{len(EXTENSIONS)} beyond it; rows: {summary}.")
    lines[5:5] = [summary_line, ""]
    lines += ["", "## Chapter run times", "",
              "Measured when each notebook was last executed for this build.", "",
              "| chapter | profile | device | seconds | executed (UTC) |", "|---|---|---|---|---|"]
    for stem in notebook_stems(paths):
        meta_path = paths.cache / f"{stem}.json"
        if meta_path.exists():
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            lines.append(f"| {{doc}}`nb/{stem}` | {meta['profile']} | {meta['device']} "
                         f"| {meta['seconds']:.1f} | {meta['date_utc']} |")
    downloads = sorted(p for p in paths.results.rglob("*.json")) if paths.results.exists() else []
    if downloads:
        lines += ["", "## Committed results", "",
                  "Runs too long for a book build, each with a provenance block that names its "
                  "command, commit and the device it ran on (shown here).", ""]
        for path in downloads:
            relative = path.relative_to(paths.results).as_posix()
            lines.append(f"- {{download}}`results/{relative} <results/{relative}>`"
                         f"{_result_device(path)}")
    target = paths.site / "book" / "scorecard.md"
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(target, "\n".join(lines) + "\n")
    rows_for = {a.key: by_key.get(a.key, []) for a in ARTEFACTS + EXTENSIONS}
    landing = [summary_line, "",
               "| artefact | status |", "|---|---|"]
    for artefact in ARTEFACTS + EXTENSIONS:
        statuses = sorted({_STATUS_BADGE.get(r["status"], r["status"]) for r in rows_for[artefact.key]})
        landing.append(f"| {_md_cell(artefact.title.split(':')[0])} "
                       f"| {', '.join(statuses) or '✗ not recorded'} |")
    atomic_write_text(paths.site / "book" / "_scorecard_summary.md", "\n".join(landing) + "\n")
    atomic_write_text(paths.build / "scorecard.json",
                      json.dumps({"counts": counts, "rows": rows}, indent=2, default=str))
    return target


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


def stage_site(paths: BookPaths = BookPaths()) -> Path:
    """Assemble the Jupyter Book source: config, toc, static pages, executed notebooks."""
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


def build_html(paths: BookPaths = BookPaths(), *, strict: bool = True, log: Any = print) -> Path:
    """Render the staged site with Jupyter Book 1.x into ``<output>/_build/html``.

    Only a book whose every chapter's last execution succeeded for its current sources is
    rendered; otherwise :class:`BookError` names the failed, stale or missing chapters. The
    rendered pages are then checked (:func:`check_rendered_pages`): a page that shows a reader a
    warning, a traceback, a machine path, a raw repr, an uncaptioned figure or an unrendered
    table fails the build."""
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


# --------------------------------------------------------------------------------------------
# What a reader sees: checks on the rendered pages
# --------------------------------------------------------------------------------------------
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


def check_rendered_pages(paths: BookPaths = BookPaths()) -> list[str]:
    """:func:`check_page` on every page of the table of contents except the API reference."""
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


def build(*, profile: str = "quick", device: str = "cpu", seed: int = 0, force: bool = False,
          paths: BookPaths = BookPaths(), log: Any = print) -> Path:
    """Execute every changed notebook, then render the book. Returns the HTML folder."""
    start = time.perf_counter()
    records = run_notebooks(profile=profile, device=device, seed=seed, force=force, paths=paths,
                            log=log)
    html = build_html(paths, log=log)
    _print_timings(records, log)
    log(f"[book] total {time.perf_counter() - start:.1f} s")
    return html


# --------------------------------------------------------------------------------------------
# Command line: klhuber book {build,run,html,list}
# --------------------------------------------------------------------------------------------
def _default_device() -> str:
    try:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    except ImportError:  # pragma: no cover
        return "cpu"


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--profile", choices=PROFILES, default="quick",
                        help="quick: minutes on a laptop; full: paper scale (default: quick)")
    parser.add_argument("--device", default=None,
                        help="cpu or cuda (default: cuda when available with --profile full, else cpu)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--force", action="store_true", help="re-execute even if the cache is valid")


def _paths_from(args: argparse.Namespace) -> BookPaths:
    root = getattr(args, "root", None)
    if root is not None:
        found = find_book_root(root)
        if found is None or found != Path(root).resolve():
            raise BookError(f"--root {root}: no book there (it needs _toc.yml and notebooks/)")
        root_path = found
    else:
        root_path = REPO_ROOT
        if not (root_path / "_toc.yml").is_file():
            raise BookError("no book found: run klhuber book from a klhuber checkout (or a "
                            "folder inside one) or pass --root <checkout>")
    output = getattr(args, "output", None)
    return BookPaths(root=root_path,
                     output=Path(output).resolve() if output else root_path / "book")


def _device_from(args: argparse.Namespace) -> str:
    if args.device is not None:
        return args.device
    return _default_device() if args.profile == "full" else "cpu"


def _cmd_build(args: argparse.Namespace) -> int:
    build(profile=args.profile, device=_device_from(args), seed=args.seed, force=args.force,
          paths=_paths_from(args))
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    paths = _paths_from(args)
    records = run_notebooks(args.chapters, profile=args.profile, device=_device_from(args),
                            seed=args.seed, force=True if args.force is None else args.force,
                            paths=paths)
    _print_timings(records)
    return 0


def _cmd_html(args: argparse.Namespace) -> int:
    build_html(_paths_from(args))
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    paths = _paths_from(args)
    for stem in notebook_stems(paths):
        state, meta = chapter_state(stem, paths)
        text = state
        if meta and state in ("current", "stale"):
            text = (f"{meta['profile']}/{meta['device']}, {meta['seconds']} s, "
                    f"{meta['date_utc']}")
            if state == "stale":
                text = "STALE (sources changed since) " + text
        elif state == "failed":
            text = "FAILED (last execution did not finish)"
        print(f"{stem:<20} {text}")
    return 0


def _run_and_exit(func: Any) -> Any:
    def wrapped(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except BookError as error:
            print(f"\n[book] FAILED\n{error}", file=sys.stderr)
            return 1
    return wrapped


def _add_location_options(parser: argparse.ArgumentParser, default: Any) -> None:
    parser.add_argument("--root", default=default,
                        help="the book's sources: a klhuber checkout (default: the one found "
                             "from the current directory, or this package's checkout)")
    parser.add_argument("--output", default=default,
                        help="folder whose _build/ receives everything generated "
                             "(default: <root>/book)")


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Sub-commands of ``klhuber book``."""
    _add_location_options(parser, None)
    sub = parser.add_subparsers(dest="book_command", metavar="ACTION")
    p_build = sub.add_parser("build", help="execute changed notebooks, then render the HTML")
    _add_run_options(p_build)
    p_build.set_defaults(func=_run_and_exit(_cmd_build))
    p_run = sub.add_parser("run", help="execute chapters (always, unless --cached), no HTML")
    p_run.add_argument("chapters", nargs="+", help="notebook stems, e.g. toy_problem")
    _add_run_options(p_run)
    p_run.add_argument("--cached", dest="force", action="store_false", default=None,
                       help="skip chapters whose cache key is unchanged")
    p_run.set_defaults(func=_run_and_exit(_cmd_run), force=None)
    p_html = sub.add_parser("html", help="render the HTML from the executed notebooks only")
    p_html.set_defaults(func=_run_and_exit(_cmd_html))
    p_list = sub.add_parser("list", help="list chapters, their last execution, stale ones")
    p_list.set_defaults(func=_run_and_exit(_cmd_list))
    for action in (p_build, p_run, p_html, p_list):  # also accepted after the action
        _add_location_options(action, argparse.SUPPRESS)
