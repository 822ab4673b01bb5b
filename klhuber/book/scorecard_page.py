"""The generated scorecard page: every artefact of the paper map with the chapter that
reproduces it, its status and the run it came from (:func:`write_scorecard`).

The rows come from the sidecars the notebooks wrote with
:class:`klhuber.book.scorecard.Recorder`; a row marked verified or reproduced whose check
failed stops the build.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from klhuber.book.scorecard import ARTEFACTS, EXTENSIONS, load_rows
from klhuber.book.sources import BookError, BookPaths, notebook_stems
from klhuber.results import atomic_write_text

__all__ = ["write_scorecard"]

_STATUS_BADGE = {
    "verified": "✓ verified",
    "reproduced": "✓ reproduced",
    "differs": "≠ differs",
    "inconclusive": "? inconclusive",
    "not run at this profile": "– not run at this profile",
}


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


def write_scorecard(paths: BookPaths | None = None) -> Path:
    """Generate ``book/scorecard.md`` in the staged site from the notebooks' artefact rows.

    Raises :class:`~klhuber.book.sources.BookError` when a row marked verified/reproduced
    carries a failing check.
    """
    from klhuber.plotting import markdown_text

    paths = BookPaths() if paths is None else paths
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
