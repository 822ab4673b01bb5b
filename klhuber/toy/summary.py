r"""Summaries of RMSE grids: the best alpha per (family, scale, seed), over seeds, and lines."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["best_alpha", "linear_fit", "summarize"]




def best_alpha(rmse: np.ndarray, alphas: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Best alpha and its RMSE along the last axis, ignoring NaN (NaN where all are NaN)."""
    alphas = np.asarray(alphas, dtype=np.float64)
    r = np.where(np.isfinite(rmse), rmse, np.inf)
    idx = np.argmin(r, axis=-1)
    best = np.take_along_axis(r, idx[..., None], axis=-1)[..., 0]
    ok = np.isfinite(best)
    return np.where(ok, alphas[idx], np.nan), np.where(ok, best, np.nan)


def linear_fit(x: Sequence[float], y: Sequence[float]) -> dict[str, float | int | None]:
    """Least-squares line :math:`y = a x + b` over the finite points: slope, intercept, R², n."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if x.size < 2:
        return {"slope": None, "intercept": None, "r2": None, "n": int(x.size)}
    a, b = np.polyfit(x, y, 1)
    ss_res = float(np.sum((y - (a * x + b)) ** 2))
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    r2 = None if ss_tot == 0 else 1.0 - ss_res / ss_tot
    return {"slope": float(a), "intercept": float(b), "r2": r2, "n": int(x.size)}


def _finite_or_none(v: Any) -> Any:
    if isinstance(v, float | np.floating):
        return float(v) if math.isfinite(v) else None
    if isinstance(v, np.ndarray):
        return [_finite_or_none(u) for u in v.tolist()] if v.ndim else _finite_or_none(v.item())
    if isinstance(v, list | tuple):
        return [_finite_or_none(u) for u in v]
    if isinstance(v, dict):
        return {k: _finite_or_none(u) for k, u in v.items()}
    return v


def summarize(rmse: np.ndarray, alphas: Sequence[float], scales: Sequence[float],
              families: Sequence[str], *, n_boot: int = 200, seed: int = 0) -> dict[str, Any]:
    """Best alpha per (family, scale, seed) from ``rmse`` (F, S, seeds, A) and its summary.

    Returns per family: ``best_alpha`` (S, seeds), ``mean``/``std``/``sem``/``median``/``n`` over
    seeds (NaN seeds, i.e. all-diverged curves, are left out and counted), ``min_rmse_mean``,
    and ``fit``: the line through the per-scale means.  ``curve_best`` is the best alpha of the
    seed-averaged MSE curve (a grid search on the mean over seeds), ``curve_lo``/``curve_hi`` its
    16%/84% bootstrap quantiles over resampled seeds, ``curve_fit`` the line through it.
    Non-finite numbers become ``None``.
    """
    rng = np.random.default_rng(seed)
    best, best_r = best_alpha(rmse, alphas)
    out: dict[str, Any] = {}
    scales = np.asarray(scales, dtype=np.float64)
    for fi, fam in enumerate(families):
        b = best[fi]
        n_ok = np.isfinite(b).sum(-1)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(n_ok > 0, np.nansum(b, -1) / np.maximum(n_ok, 1), np.nan)
            dev = np.where(np.isfinite(b), (b - mean[:, None]) ** 2, 0.0).sum(-1)
            std = np.where(n_ok > 1, np.sqrt(dev / np.maximum(n_ok - 1, 1)), np.nan)
            sem = std / np.sqrt(np.maximum(n_ok, 1))
            med = np.array([np.median(row[np.isfinite(row)]) if np.isfinite(row).any() else np.nan
                            for row in b])
            mr = best_r[fi]
            min_rmse = np.where(n_ok > 0, np.nansum(np.where(np.isfinite(mr), mr, 0), -1)
                                / np.maximum(n_ok, 1), np.nan)
        cb, lo, hi = _curve_best(rmse[fi], alphas, n_boot, rng)
        out[fam] = _finite_or_none({
            "best_alpha": b, "mean": mean, "std": std, "sem": sem, "median": med,
            "n": n_ok.astype(float), "n_missing": (b.shape[-1] - n_ok).astype(float),
            "min_rmse_mean": min_rmse, "fit": linear_fit(scales, mean),
            "curve_best": cb, "curve_lo": lo, "curve_hi": hi,
            "curve_fit": linear_fit(scales, cb),
        })
    return out


def _curve_best(rmse: np.ndarray, alphas: Sequence[float], n_boot: int,
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Best alpha of the seed-averaged MSE curve per scale, with a bootstrap 68% interval.

    ``rmse`` is (S, seeds, A); an alpha where any seed's value is missing (diverged) is skipped.
    """
    alphas = np.asarray(alphas, dtype=np.float64)
    mse = np.where(np.isfinite(rmse), rmse, np.nan) ** 2
    with np.errstate(invalid="ignore"):
        curve = mse.mean(axis=1)  # NaN if any seed is missing
    best, _ = best_alpha(np.sqrt(curve), alphas)
    nseed = rmse.shape[1]
    idx = rng.integers(0, nseed, size=(n_boot, nseed))
    boot = mse[:, idx, :].mean(axis=2)  # (S, B, A)
    bb, _ = best_alpha(np.sqrt(boot), alphas)
    with np.errstate(invalid="ignore"):
        lo = np.array([np.nanquantile(r, 0.16) if np.isfinite(r).any() else np.nan for r in bb])
        hi = np.array([np.nanquantile(r, 0.84) if np.isfinite(r).any() else np.nan for r in bb])
    return best, lo, hi
