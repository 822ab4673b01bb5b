r"""The book's one verdict on Figure 2 (:func:`figure2_verdict`), computed from a results payload,
and the committed full-profile results (:func:`committed_results`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from klhuber.toy._common import _check_positive_int
from klhuber.toy.data import _FAMILY_TITLE, PAPER_FAMILIES
from klhuber.toy.summary import _finite_or_none, best_alpha

__all__ = ["COMMITTED_FILES", "FIG2_R2_THRESHOLD", "FamilyVerdict", "Figure2Verdict",
           "committed_results", "figure2_verdict"]


#: The least share of variance (R²) that the line through the best α per scale must explain, with
#: a positive slope, for Figure 2's "near linear" (:func:`figure2_verdict`).
FIG2_R2_THRESHOLD = 0.8


@dataclass(frozen=True)
class FamilyVerdict:
    """Figure 2's claim for one noise family (see :func:`figure2_verdict`)."""

    family: str
    slope: float | None
    slope_low: float | None
    slope_high: float | None
    r2: float | None
    p_linear_growth: float
    c_f: float | None
    max_regret: float | None
    verdict: str


@dataclass(frozen=True)
class Figure2Verdict:
    """The book's one verdict on Section 5's claim ("a near linear relationship between the
    scale of the label noise and the optimal α"), derived by :func:`figure2_verdict`."""

    status: str
    method: str
    source: str
    families: tuple[FamilyVerdict, ...]
    n_boot: int

    def family(self, name: str) -> FamilyVerdict:
        for fam in self.families:
            if fam.family == name:
                return fam
        raise ValueError(f"family must be one of {[f.family for f in self.families]}, "
                         f"got {name!r}")

    def c_text(self) -> str:
        """``"c_f = 0 (Laplace), 2.1 (Logistic), 0.395 (Cauchy)"``."""
        return "$c_f$ = " + ", ".join(
            f"{'∞' if f.c_f is None else format(f.c_f, '.3g')} ({_FAMILY_TITLE[f.family]})"
            for f in self.families)

    def sentence(self) -> str:
        """The verdict as one paragraph for every page that mentions Figure 2 (MyST Markdown)."""
        method = ("gradient descent with a grid search, the paper's method" if self.method == "gd"
                  else "the exact minimiser of each loss")
        failing = [_FAMILY_TITLE[f.family] for f in self.families if f.verdict == "differs"]
        claim = {"reproduced": "is reproduced for every noise family",
                 "differs": "is not reproduced: it fails for " + ", ".join(failing),
                 "inconclusive": "is undecided: the data neither show nor rule it out"
                 }[self.status]
        fams = "; ".join(
            f"{_FAMILY_TITLE[f.family]}: slope {_fmt_num(f.slope, '.2f')} (95 % interval "
            f"{_fmt_num(f.slope_low, '.2f')} to {_fmt_num(f.slope_high, '.2f')}), "
            f"$R^2$ {_fmt_num(f.r2, '.2f')}" for f in self.families)
        regret = max((f.max_regret for f in self.families if f.max_regret is not None),
                     default=None)
        text = (f"On the polynomial toy problem ({self.source}; {method}) the paper's "
                f"near-linear relation between the noise scale and the best α {claim} ({fams}; "
                f"near-linear means a positive slope with $R^2 \\ge {FIG2_R2_THRESHOLD:g}$ in at "
                f"least 97.5 % of {self.n_boot} bootstrap resamples of the seeds). The asymptotic "
                f"theory gives $\\alpha^* = c_f s$ exactly, with {self.c_text()}")
        if regret is not None:
            text += (f"; choosing $\\alpha = c_f s$ costs at most {regret:.1%} test RMSE over "
                     "the best α of the grid")
        return text + "."

    def recipe_rows(self) -> list[list[str]]:
        """Per family: (family, :math:`c_f`, how α follows the noise scale :math:`s`)."""
        rows = []
        for f in self.families:
            if f.c_f is None:
                rule = "α → ∞: the L2 loss (no Huber transition is best)"
            elif f.c_f == 0:
                rule = "α → 0: the L1 loss, whatever the scale"
            else:
                rule = f"α = {f.c_f:.3g}·s"
            rows.append([_FAMILY_TITLE[f.family], "∞" if f.c_f is None else f"{f.c_f:.3g}",
                         rule])
        return rows


def _fmt_num(v: float | None, spec: str = ".3g") -> str:
    return "–" if v is None else format(v, spec)


def _bootstrap_growth(rmse: np.ndarray, alphas: np.ndarray, scales: np.ndarray, n_boot: int,
                      rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Slopes and R² of the line through the best α of the seed-averaged MSE curve per scale,
    for ``n_boot`` resamples of the seeds of ``rmse`` (S, seeds, A).

    Each resample goes through the point estimate's own steps (:func:`summarize`'s
    ``curve_best`` and ``curve_fit``): an α where a resampled seed diverged (NaN) is not a
    candidate, a scale with no candidate left is left out of the line, and a resample with
    fewer than two scales left has a NaN slope and R².  R² is 0 for a flat line."""
    n_seeds = rmse.shape[1]
    sq = np.where(np.isfinite(rmse), rmse, np.nan) ** 2
    picks = rng.integers(0, n_seeds, (n_boot, n_seeds))
    curve = sq[:, picks].mean(axis=2)  # (S, B, A): NaN where a resampled seed diverged
    best, _ = best_alpha(np.sqrt(curve), alphas)  # (S, B), NaN where no alpha is left
    used = np.isfinite(best)
    n = used.sum(axis=0)
    x = np.where(used, scales[:, None], 0.0)
    y = np.where(used, best, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        xc = np.where(used, x - x.sum(axis=0) / n, 0.0)
        yc = np.where(used, y - y.sum(axis=0) / n, 0.0)
        slopes = (xc * yc).sum(axis=0) / (xc * xc).sum(axis=0)
        ss_tot = np.sum(yc**2, axis=0)
        ss_res = np.sum((yc - slopes * xc) ** 2, axis=0)
        r2s = np.where(ss_tot > 0, 1.0 - ss_res / ss_tot, 0.0)
    few = n < 2
    return np.where(few, np.nan, slopes), np.where(few, np.nan, r2s)


def figure2_verdict(results: dict[str, Any], *, source: str = "", n_boot: int = 1000,
                    seed: int = 0, level: float = 0.95) -> Figure2Verdict:
    """Decide Section 5's claim once, from a :func:`run` payload (a committed results file).

    Uses GD (the paper's method) when the payload has it, else the exact minimiser.  Per paper
    family the best α of the seed-averaged test MSE is found at each noise scale and a line is
    fitted through them; the seeds are resampled ``n_boot`` times.  The event "near-linear
    growth" is slope > 0 and :math:`R^2 \\ge` :data:`FIG2_R2_THRESHOLD`.  A family is
    ``reproduced`` when the event holds in at least ``(1 + level)/2`` of the resamples,
    ``differs`` when it holds in at most ``(1 - level)/2`` of them, else ``inconclusive``; the
    claim is ``reproduced`` when every family is, ``differs`` when one family differs.
    Also reports the theory's :math:`c_f` and the largest excess RMSE of choosing
    :math:`\\alpha = c_f s` (the ``regret`` of :func:`run`).
    """
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    n_boot = _check_positive_int(n_boot, "n_boot")
    cfg = results["config"]
    method = "gd" if results["methods"].get("gd", {}).get("huber") else "exact"
    entry = results["methods"][method]["huber"]
    rmse_all = np.array([[[[np.nan if v is None else v for v in row] for row in seed_rows]
                          for seed_rows in fam] for fam in entry["rmse"]], dtype=np.float64)
    alphas = np.asarray(cfg["alphas"], dtype=np.float64)
    scales = np.asarray(cfg["scales"], dtype=np.float64)
    rng = np.random.default_rng(seed)
    tail = (1 - level) / 2
    fams = []
    for fi, fam in enumerate(cfg["families"]):
        if fam not in PAPER_FAMILIES:
            continue
        slopes, r2s = _bootstrap_growth(rmse_all[fi], alphas, scales, n_boot, rng)
        ok = np.isfinite(slopes)
        lo, hi = (np.quantile(slopes[ok], [tail, 1 - tail]) if ok.any() else (np.nan, np.nan))
        p = float(np.mean((slopes > 0) & (r2s >= FIG2_R2_THRESHOLD)))
        fit = entry["summary"][fam]["curve_fit"]
        verdict = "reproduced" if p >= 1 - tail else "differs" if p <= tail else "inconclusive"
        regret = [v for v in entry.get("regret", {}).get(fam, {}).get("theory", []) if v is not None]
        fams.append(FamilyVerdict(
            fam, fit["slope"], _finite_or_none(float(lo)), _finite_or_none(float(hi)),
            fit["r2"], p, results["theory"][fam]["huber"]["c"],
            max(regret) if regret else None, verdict))
    verdicts = [f.verdict for f in fams]
    status = ("reproduced" if verdicts and all(v == "reproduced" for v in verdicts)
              else "differs" if "differs" in verdicts else "inconclusive")
    return Figure2Verdict(status, method, source or f"{results.get('profile', '')} profile",
                          tuple(fams), n_boot)


#: Committed full-profile results files, most complete first.
COMMITTED_FILES: tuple[str, ...] = ("toy_full.json", "toy_full_exact.json")


def committed_results(results_dir: str | Path) -> tuple[dict[str, Any], str] | None:
    """The most complete committed full-profile payload under ``results_dir/toy`` and its file
    name (``COMMITTED_FILES``), or ``None`` when there is none."""
    from klhuber.results import load_results

    for name in COMMITTED_FILES:
        path = Path(results_dir) / "toy" / name
        if path.exists():
            return load_results(path), name
    return None
