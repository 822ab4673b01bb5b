"""Execute the book's notebooks with papermill, each only when its cache key changed.

A notebook is executed again only when its cache key changes: the hash of its source, of the
``klhuber`` package sources, of its parameters, of the pins (``constraints.txt``) and of the
committed ``results/``. Each notebook runs with its own folder (``notebooks/``) as the current
directory and receives ``profile``, ``device``, ``seed``, ``artefacts_dir`` and ``results_dir``
(absolute paths) as papermill parameters.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from klhuber.book.sources import BookError, BookPaths, notebook_stems
from klhuber.results import atomic_write_text

__all__ = ["CELL_TIMEOUT_S", "PROFILES", "RunRecord", "cache_key", "chapter_state", "run_notebooks"]

PROFILES = ("quick", "full")
#: papermill's per-cell timeout in seconds for each profile (None means no limit).
CELL_TIMEOUT_S: dict[str, int | None] = {"quick": 900, "full": None}


# --------------------------------------------------------------------------------------------
# Cache keys and the state of a chapter
# --------------------------------------------------------------------------------------------
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


def cache_key(stem: str, parameters: Mapping[str, Any], paths: BookPaths | None = None,
              *, include_results: bool = True) -> str:
    """Hash of the notebook source, the klhuber sources, the parameters, the pins and results/.

    ``include_results=False`` leaves ``results/`` out: the *source key* that decides whether a
    chapter's last execution is stale (a chapter may itself add results)."""
    paths = BookPaths() if paths is None else paths
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


def chapter_state(stem: str, paths: BookPaths | None = None) -> tuple[str, dict[str, Any]]:
    """``(state, meta)`` of a chapter's last execution: ``"current"`` (succeeded for the
    current sources), ``"stale"`` (succeeded, but the notebook, the klhuber sources or the pins
    changed since), ``"failed"`` (its last execution did not finish) or ``"not executed"``."""
    paths = BookPaths() if paths is None else paths
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
    """Raise :class:`~klhuber.book.sources.BookError` unless every chapter's last execution
    succeeded for its current sources."""
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
    """One chapter of a run: ``status`` is ``"executed"``, ``"cached"`` or ``"failed"``."""

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
    paths: BookPaths | None = None,
    log: Any = print,
) -> list[RunRecord]:
    """Execute notebooks whose cache key changed; raise
    :class:`~klhuber.book.sources.BookError` on the first failure."""
    import jupytext
    import papermill

    paths = BookPaths() if paths is None else paths
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

