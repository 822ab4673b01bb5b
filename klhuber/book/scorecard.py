"""Reproduction scorecard: each notebook records the paper artefacts it reproduces.

A notebook creates one :class:`Recorder` and calls :meth:`Recorder.record` once per artefact
of ``ARTEFACTS`` it covers.  Each call appends a row to a JSON sidecar
(``<artefacts_dir>/<chapter>.json``); the book build turns all sidecars into the scorecard
page (:func:`klhuber.book.scorecard_page.write_scorecard`).  Recording an artefact as ``"verified"`` with a failing check raises, so the notebook
and with it the build fail.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from klhuber.results import atomic_write_text

__all__ = ["ARTEFACTS", "EXTENSIONS", "STATUSES", "Artefact", "Recorder", "figures_dir", "load_rows"]

#: The statuses a scorecard row can have.  ``inconclusive``: the experiment ran, but its
#: confidence interval excludes neither the claim nor its opposite.
STATUSES = ("verified", "reproduced", "differs", "inconclusive", "not run at this profile")


@dataclass(frozen=True)
class Artefact:
    key: str
    title: str
    verification: str


#: The scorecard's rows, the paper's artefacts in the paper's order and then the related
#: losses the book also covers.
#:
#: :meta hide-value:
ARTEFACTS: tuple[Artefact, ...] = (
    Artefact("eq1-7", "eq. 1–7: MLE view, Huber loss H_α (eq. 4), Huber density",
             "H_α equals torch.nn.functional.huber_loss(delta=α)"),
    Artefact("eq8-14", "eq. 8–14: cross entropy / KL view of regression with noisy labels",
             "sympy: KL = cross entropy − entropy"),
    Artefact("eq15-appA", "eq. 15 + Appendix A (eq. 33–42): KL of two Laplace distributions",
             "sympy integration == eq. 15; numeric == torch.distributions.kl_divergence"),
    Artefact("eq16", "eq. 16: D_{α,β}", "identity with eq. 15 up to constants"),
    Artefact("appB", "Appendix B, Claims 1–2 (eq. 43–59): D is twice differentiable, H_α is not",
             "sympy limits; autograd == analytic derivatives"),
    Artefact("eq17-19", "eq. 17–19: small/large-x approximations", "sympy series / limits"),
    Artefact("eq20-appC", "eq. 20 + Appendix C, Claims 3–5 (eq. 60–88): D_{α,1/α} ≤ H_α ≤ D_{α/2,1/α}",
             "sympy on each piece + dense mpmath check"),
    Artefact("eq21", "eq. 21: scaling identities", "sympy"),
    Artefact("fig1", "Figure 1: H_α vs bounds, losses and derivatives", "produced by library code"),
    Artefact("fig2", "Section 5 + Figure 2: polynomial toy, optimal α vs noise scale",
             "re-run from code; quick and full profiles"),
    Artefact("eq22-32", "eq. 22–32: Faster R-CNN parameterisation → interpreted Laplace scales",
             "sympy"),
    Artefact("table1", "Table 1: hyper-parameter presets", "equals the paper's table"),
    Artefact("table2", "Table 2: interpreted label / prediction scales",
             "equals the paper's table exactly"),
    Artefact("table3", "Table 3: Faster R-CNN VGG16 on COCO 2014", "runs recorded with provenance"),
    Artefact("table4", "Table 4: RetinaNet ResNet-101 on COCO 2017", "runs recorded with provenance"),
    Artefact("appD-table5", "Appendix D + Table 5: target approximation t_w = w/w_a − 1",
             "sympy/numeric + runs"),
    Artefact("appE-table6", "Appendix E + Table 6: D_{α/2,1/α} in place of H_α", "runs"),
    Artefact("seed002", "Smooth L1 and 'why β = 1?'", "equality with torch"),
    Artefact("seed003", "Barron's general and adaptive loss, outlier demo",
             "closed forms of the special cases"),
    Artefact("seed004", "Harmonic loss and HIoU loss", "sympy"),
)
#: Questions the paper raises but could not test, answered by this book's own experiments;
#: listed after the paper map on the scorecard.
EXTENSIONS: tuple[Artefact, ...] = (
    Artefact("label-noise", "Beyond the paper: which α localises best under known label noise",
             "α sweep of detectors trained on labels with controlled noise; 95% CIs over "
             "paired seeds"),
)
_KEYS = {artefact.key for artefact in ARTEFACTS + EXTENSIONS}


@dataclass
class Row:
    key: str
    chapter: str
    paper: str
    ours: str
    status: str
    check: bool | None
    profile: str
    device: str
    anchor: str = ""
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


class Recorder:
    """Records the artefacts one chapter reproduces into ``<artefacts_dir>/<chapter>.json``.

    Parameters
    ----------
    chapter:
        The notebook's name (its file stem), used for links from the scorecard.
    artefacts_dir:
        Folder of the sidecars; the papermill parameter ``artefacts_dir`` of each notebook.
        ``None`` (interactive use) records nothing to disk.
    profile, device:
        The notebook's parameters, stored with every row.
    """

    def __init__(self, chapter: str, artefacts_dir: str | os.PathLike | None,
                 profile: str, device: str) -> None:
        self.chapter = chapter
        self.path = None if artefacts_dir is None else Path(artefacts_dir) / f"{chapter}.json"
        self.profile = profile
        self.device = device
        self.rows: list[Row] = []
        if self.path is not None and self.path.exists():
            self.path.unlink()  # a re-run starts a fresh sidecar

    def record(self, key: str, *, paper: str, ours: str, status: str,
               check: bool | None = None, anchor: str = "", note: str = "",
               **extra: Any) -> Row:
        """Record one artefact.

        ``status`` is one of :data:`STATUSES`. ``check`` is the outcome of the cell's
        verification; a ``"verified"`` or ``"reproduced"`` row must have ``check=True``,
        otherwise this raises ``AssertionError`` and the notebook fails.
        ``anchor`` is the heading label (MyST target) where the artefact is shown.
        """
        if key not in _KEYS:
            raise ValueError(f"unknown artefact key {key!r}; valid keys: {sorted(_KEYS)}")
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
        if check is not None:
            check = bool(check)  # numpy / torch booleans
        if status in ("verified", "reproduced") and check is not True:
            raise AssertionError(
                f"artefact {key!r} recorded as {status!r} but its check is {check!r}")
        row = Row(key=key, chapter=self.chapter, paper=str(paper), ours=str(ours),
                  status=status, check=check, profile=self.profile, device=self.device,
                  anchor=anchor, note=note, extra=extra)
        self.rows.append(row)
        if self.path is not None:
            atomic_write_text(self.path, json.dumps([asdict(r) for r in self.rows], indent=2,
                                                    default=str))
        return row

    def save_figure(self, figure: Any, name: str) -> Path | None:
        """Save a matplotlib figure as ``<name>.svg`` for pages outside this chapter.

        The landing page shows ``headline.svg``. Nothing is written in interactive use.
        """
        if self.path is None:
            return None
        target = figures_dir(self.path.parent) / f"{name}.svg"
        target.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(target, format="svg", bbox_inches="tight")
        return target


    def save_markdown(self, text: str, name: str) -> Path | None:
        """Save ``text`` as ``<name>.md`` beside the figures, for pages outside this chapter to
        ``{include}`` (the landing page shows the toy chapter's verdict). Nothing is written in
        interactive use."""
        if self.path is None:
            return None
        target = figures_dir(self.path.parent) / f"{name}.md"
        return atomic_write_text(target, text.rstrip("\n") + "\n")


def figures_dir(artefacts_dir: str | os.PathLike) -> Path:
    """Where notebooks save figures that other pages (the landing page) show."""
    return Path(artefacts_dir).parent / "figures"


def load_rows(artefacts_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """All rows recorded by all chapters, in file-name order."""
    rows: list[dict[str, Any]] = []
    for path in sorted(Path(artefacts_dir).glob("*.json")):
        rows.extend(json.loads(path.read_text(encoding="utf-8")))
    return rows
