r"""The experiment of Figure 2: its configuration (:class:`ToyConfig`, :data:`PROFILES`) and
:func:`run`, which computes the theory, the exact minimisers and gradient descent over the grid
and returns one JSON-able payload (the format of ``results/toy/*.json``)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from klhuber.toy._common import (
    _check_positive_grid,
    _check_positive_int,
    _check_seeds,
)
from klhuber.toy.data import (
    BASES,
    DELTA,
    FAMILIES,
    K_PAPER,
    N_TRAIN,
    PAPER_FAMILIES,
    THETA_STAR,
    ToyData,
    _check_families,
    make_data,
)
from klhuber.toy.exact import ExactResult, exact_grid
from klhuber.toy.formulas import ALPHA_LOSSES, _check_loss, _results_key, canonical_loss
from klhuber.toy.gd import GDResult, StoppedEarly, gd_grid
from klhuber.toy.summary import _finite_or_none, linear_fit, summarize
from klhuber.toy.theory import _unit_variance, asymptotic_variance, optimal_alpha_constant

__all__ = ["PROFILES", "ToyConfig", "get_config", "run"]


def _has_alpha(loss: str) -> bool:
    return canonical_loss(loss) in ALPHA_LOSSES


def _is_huber(loss: str) -> bool:
    return canonical_loss(loss) == "huber"




@dataclass(frozen=True)
class ToyConfig:
    r"""Every choice of the experiment (the reasons for the defaults are in the docstring of
    :mod:`klhuber.toy`).

    Learning rates (the paper gives none).  ``lrs`` are relative rates: the step of a
    configuration is ``lr / lambda / N`` on the summed gradient.  With ``lr_reference="gram"``
    :math:`\lambda = \lambda_{\max}(\Phi^\top\Phi/N)` for every alpha, so at small alpha, where
    only the fraction :math:`\approx 2 f(0)\alpha` of points inside the quadratic zone
    contributes curvature, rate 1 crawls and only the largest rates converge, while at large
    alpha every rate above 2 diverges: most of a fixed grid is redundant.  The ``full`` profile
    therefore uses ``lr_reference="curvature"``: :math:`\lambda = \lambda_{\max}(H_\alpha)`,
    the largest eigenvalue of the loss Hessian :math:`\Phi^\top\mathrm{diag}(\psi_\alpha'(\hat
    r))\Phi/N` at a robust (least-absolute-deviations) pilot fit, per family, scale, seed and
    alpha, and three rates ``(0.25, 1.0, 1.8)`` of it: 1 is the classic step of the local
    quadratic, 1.8 close to its stability limit 2, 0.25 a safety margin if the pilot
    underestimates the curvature.  ``l1`` (sign gradient, no curvature) scans ``l1_lrs``
    relative to the Gram matrix (empty: ``lrs`` times the smallest alpha), ``l2`` ``l_lrs``.

    ``retire_tol``: a GD configuration stops early (status 1) once the rest of its run could
    not change its test RMSE by more than this relative amount (see :func:`gd_grid`).
    """

    families: tuple[str, ...] = PAPER_FAMILIES
    scales: tuple[float, ...] = tuple(np.round(np.linspace(0.25, 3.0, 12), 6).tolist())
    seeds: tuple[int, ...] = tuple(range(10))
    alphas: tuple[float, ...] = tuple(np.geomspace(0.01, 30.0, 40).tolist())
    lrs: tuple[float, ...] = (1.0, 4.0, 16.0, 64.0, 256.0)
    iterations: int = 2000
    check_every: int = 100
    n: int = N_TRAIN
    n_test: int = N_TRAIN
    k: int = K_PAPER
    delta: float = DELTA
    theta: tuple[float, ...] = THETA_STAR
    basis: str = "legendre"
    common_noise: bool = False
    # loss names as the results files spell them ("kl" is D_{alpha,1/alpha}, i.e. "kl_lower")
    gd_losses: tuple[str, ...] = ("huber", "kl", "l1", "l2")
    exact_losses: tuple[str, ...] = ("huber", "kl", "l1", "l2")
    gd_dtype: str = "float32"
    l1_iterations: int = 120
    l_lrs: tuple[float, ...] = (0.25, 0.5, 1.0, 1.5, 1.9)
    extra_gd_bases: tuple[str, ...] = ()
    lr_reference: str = "gram"
    l1_lrs: tuple[float, ...] = ()
    retire_tol: float = 1e-6

    def validate(self) -> ToyConfig:
        _check_families(self.families)
        _check_positive_grid(self.scales, "scales")
        _check_seeds(self.seeds)
        _check_positive_grid(self.alphas, "alphas")
        _check_positive_grid(self.lrs, "lrs")
        _check_positive_int(self.iterations, "iterations")
        if self.k < len(self.theta):
            raise ValueError(f"k must be >= D = {len(self.theta)} (K >= D), got {self.k}")
        if self.basis not in BASES:
            raise ValueError(f"basis must be one of {BASES}, got {self.basis!r}")
        for loss in self.gd_losses + self.exact_losses:
            _check_loss(loss)
        for b in self.extra_gd_bases:
            if b not in BASES:
                raise ValueError(f"extra_gd_bases must be in {BASES}, got {b!r}")
        if self.gd_dtype not in ("float32", "float64"):
            raise ValueError(f"gd_dtype must be 'float32' or 'float64', got {self.gd_dtype!r}")
        if self.lr_reference not in ("gram", "curvature"):
            raise ValueError(f"lr_reference must be 'gram' or 'curvature', got {self.lr_reference!r}")
        if self.l1_lrs:
            _check_positive_grid(self.l1_lrs, "l1_lrs")
        if not self.retire_tol >= 0:
            raise ValueError(f"retire_tol must be >= 0, got {self.retire_tol}")
        return self


#: The ``quick`` and ``full`` configurations.
PROFILES: dict[str, ToyConfig] = {
    "quick": ToyConfig(
        scales=(0.5, 1.0, 2.0, 3.0),
        seeds=(0, 1, 2),
        alphas=tuple(np.geomspace(0.02, 20.0, 11).tolist()),
        lrs=(1.0, 12.0, 128.0),
        iterations=150,
        check_every=100,
        n_test=2000,
        gd_losses=("huber",),
        l1_iterations=80,
        exact_losses=("huber", "kl", "l1", "l2"),
    ),
    "full": ToyConfig(families=FAMILIES, extra_gd_bases=("monomial",), lrs=(0.25, 1.0, 1.8),
                      lr_reference="curvature", l1_lrs=(0.01, 0.04, 0.16, 0.64, 2.56)),
}


def get_config(profile: str = "quick", **overrides: Any) -> ToyConfig:
    """The :class:`ToyConfig` of ``profile`` (``quick`` or ``full``) with ``overrides``."""
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {tuple(PROFILES)}, got {profile!r}")
    cfg = PROFILES[profile]
    overrides = {k: (tuple(v) if isinstance(v, list) else v) for k, v in overrides.items()}
    return replace(cfg, **overrides).validate()


def _gd_summary(res: GDResult, exact: ExactResult | None, data: ToyData) -> dict[str, Any]:
    rmse, lr_idx = res.best_over_lr()  # (F, S, seeds, A)
    families = data.families
    stop = res.stop_iteration if res.stop_iteration is not None else np.full(
        res.status.shape, res.iterations)
    out: dict[str, Any] = {
        "rmse": _finite_or_none(rmse),
        "best_lr_index": lr_idx.tolist(),
        "diverged_fraction": float(res.diverged.mean()),
        "diverged_count": int(res.diverged.sum()),
        "diverged_fraction_by_family": {f: float(res.diverged[fi].mean())
                                        for fi, f in enumerate(families)},
        "unscored_curves": int(np.isnan(rmse).sum()),
        "unscored_curves_by_family": {f: int(np.isnan(rmse[fi]).sum())
                                      for fi, f in enumerate(families)},
        "best_alpha_rule": ("best learning rate per alpha among the non-diverged runs (status "
                            "2 excluded); an alpha whose every rate diverged has no RMSE (None) "
                            "and is left out of the best-alpha search"),
        "status_counts": {name: int((res.status == code).sum()) for code, name in
                          ((0, "ran_to_end"), (1, "converged_early"), (2, "diverged"))},
        "converged_early_fraction": float(res.converged_early.mean()),
        "stop_iteration_mean": float(stop.mean()),
        "stop_iteration_median": float(np.median(stop)),
        "lr_reference": res.lr_reference,
        "retire_tol": res.retire_tol,
        "backend": res.backend,
        "wall_time_s": res.wall_time_s,
        "iterations": res.iterations,
    }
    if exact is not None and exact.rmse.shape == rmse.shape:
        th = np.take_along_axis(res.theta, lr_idx[..., None, None], axis=4)[..., 0, :]
        diff = torch.as_tensor(th - exact.theta)
        g = data.gram_test.reshape(1, 1, -1, 1, data.k, data.k)
        dist = torch.einsum("...i,...ij,...j->...", diff, g, diff).clamp_min(0).sqrt().numpy()
        rel = dist / exact.rmse
        ok = np.isfinite(rel)
        out["gd_vs_exact"] = _finite_or_none({
            "function_distance_median": float(np.median(dist[ok])) if ok.any() else math.nan,
            "function_distance_max": float(np.max(dist[ok])) if ok.any() else math.nan,
            "relative_median": float(np.median(rel[ok])) if ok.any() else math.nan,
            "relative_p90": float(np.quantile(rel[ok], 0.9)) if ok.any() else math.nan,
            "fraction_within_1pct": float(np.mean(rel[ok] < 0.01)) if ok.any() else math.nan,
            "rmse_excess_median": float(np.nanmedian(rmse / exact.rmse - 1.0)),
            "relative_by_alpha_median": np.nanmedian(rel.reshape(-1, rel.shape[-1]), axis=0),
        })
    return out


def run(profile: str = "quick", device: str = "cpu", *, config: ToyConfig | None = None,
        progress: bool = True, checkpoint_dir: str | Path | None = None,
        log: Callable[[str], None] | None = None, deadline: float | None = None) -> dict[str, Any]:
    """Run the whole experiment of ``profile`` (or ``config``) and return a JSON-able payload.

    The payload holds the configuration, the theory constants, per method and loss the RMSE
    curves, the best alpha per (family, scale, seed), their summaries and linear fits, the
    GD-vs-exact distances, divergence counts (overall and per family), early-stopping counts
    and timings.  Non-finite numbers are ``None``.  ``deadline`` (a ``time.monotonic()``
    value): no GD chunk starts after it; :class:`StoppedEarly` is raised (finished chunks stay
    in ``checkpoint_dir``).
    """
    cfg = (config or get_config(profile)).validate()
    log = log or (lambda s: None)
    if cfg.gd_losses and deadline is not None and time.monotonic() >= deadline:
        raise StoppedEarly("deadline reached before the run started")
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    t = time.perf_counter()
    data = make_data(cfg.families, cfg.scales, cfg.seeds, n=cfg.n, n_test=cfg.n_test, k=cfg.k,
                     basis=cfg.basis, delta=cfg.delta, theta=cfg.theta,
                     common_noise=cfg.common_noise)
    timings["data"] = time.perf_counter() - t
    dtype = {"float32": torch.float32, "float64": torch.float64}[cfg.gd_dtype]
    methods: dict[str, dict[str, Any]] = {"exact": {}, "gd": {}}
    exact_res: dict[str, ExactResult] = {}
    t = time.perf_counter()
    theory = _theory(cfg)
    timings["theory"] = time.perf_counter() - t
    c_huber = {f: theory[f]["huber"]["c"] for f in cfg.families}
    c_kl = {f: theory[f]["kl"]["c"] for f in cfg.families}
    t = time.perf_counter()
    for loss in cfg.exact_losses:
        res = exact_grid(data, cfg.alphas, loss=loss, device=device, progress=progress,
                         l1_iterations=cfg.l1_iterations)
        exact_res[loss] = res
        entry: dict[str, Any] = {
            "rmse": _finite_or_none(res.rmse if _has_alpha(loss) else res.rmse[..., 0]),
            "converged_fraction": float(res.converged.mean()),
            "iterations_max": int(res.iterations.max()),
            "wall_time_s": res.wall_time_s,
        }
        if _has_alpha(loss):
            entry["summary"] = summarize(res.rmse, cfg.alphas, cfg.scales, cfg.families)
            entry["regret"] = _regret(res.rmse, cfg, c_huber if _is_huber(loss) else c_kl)
        methods["exact"][_results_key(loss)] = entry
        log(f"exact {loss}: {res.wall_time_s:.1f} s, converged {entry['converged_fraction']:.3f}")
    timings["exact"] = time.perf_counter() - t
    t = time.perf_counter()
    runs = [("gd", loss, cfg.basis) for loss in cfg.gd_losses]
    runs += [(f"gd_{b}", "huber", b) for b in cfg.extra_gd_bases]
    for method, loss, basis in runs:
        alphas = cfg.alphas if _has_alpha(loss) else (1.0,)
        lrs = cfg.lrs if _has_alpha(loss) else cfg.l_lrs
        if canonical_loss(loss) == "l1":
            # sign-gradient descent: the step does not shrink, so scan the rates of the Huber grid
            lrs = cfg.l1_lrs or tuple(np.asarray(cfg.lrs) * min(cfg.alphas))
        d_b = data if basis == data.basis else data.with_basis(basis)
        res = gd_grid(d_b, alphas, lrs, loss=loss, iterations=cfg.iterations,
                      check_every=cfg.check_every, device=device, dtype=dtype,
                      checkpoint_dir=checkpoint_dir, progress=progress,
                      lr_reference=cfg.lr_reference if _has_alpha(loss) else "gram",
                      retire_tol=cfg.retire_tol, deadline=deadline)
        if basis != data.basis:  # coefficients back to the reference basis: theta_ref = T theta_b
            tmat = torch.linalg.lstsq(data.phi[0], d_b.phi[0]).solution.numpy()
            res.theta = np.einsum("ij,...j->...i", tmat, res.theta)
        entry = _gd_summary(res, exact_res.get(loss), data)
        entry["lrs"] = list(map(float, lrs))
        entry["basis"] = basis
        if _has_alpha(loss):
            best, _ = res.best_over_lr()
            entry["summary"] = summarize(best, cfg.alphas, cfg.scales, cfg.families)
            entry["regret"] = _regret(best, cfg, c_huber if _is_huber(loss) else c_kl)
        else:
            entry["rmse"] = _finite_or_none(res.best_over_lr()[0][..., 0])
        methods.setdefault(method, {})[_results_key(loss)] = entry
        log(f"{method} {loss}: {res.wall_time_s:.1f} s, diverged {entry['diverged_fraction']:.3f}, "
            f"converged early {entry['converged_early_fraction']:.3f}, mean stop iteration "
            f"{entry['stop_iteration_mean']:.0f}")
    timings["gd"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t_start
    cfg_dict = asdict(cfg)
    return {
        "profile": profile if config is None else "custom",
        "config": cfg_dict,
        "device": str(device),
        "theory": theory,
        "methods": methods,
        "timings": timings,
        "theta_star_basis": data.theta_star.tolist(),
    }


def _theory(cfg: ToyConfig) -> dict[str, Any]:
    """Theory constants and asymptotic RMSE curves for every family of ``cfg``."""
    from scipy import interpolate, optimize

    theory: dict[str, Any] = {}
    u_grid = np.geomspace(1e-4, 1e4, 65)
    for fam in cfg.families:
        theory[fam] = {}
        for loss in map(_results_key, ALPHA_LOSSES):  # "huber", "kl"
            c = optimal_alpha_constant(fam, loss)
            # V(alpha; s) = s^2 V(alpha/s; 1): interpolate log V on a grid of u = alpha/s
            logv = np.log([_unit_variance(fam, float(u), loss) for u in u_grid])
            spline = interpolate.CubicSpline(np.log(u_grid), logv)
            u = np.asarray(cfg.alphas)[None, :] / np.asarray(cfg.scales)[:, None]
            v = np.exp(spline(np.log(np.clip(u, u_grid[0], u_grid[-1]))))
            curve = np.asarray(cfg.scales)[:, None] * np.sqrt(v * cfg.k / cfg.n)
            c["rmse"] = curve
            c["best_alpha_on_grid"] = [cfg.alphas[int(np.argmin(row))] for row in curve]
            c["fit_on_grid"] = linear_fit(cfg.scales, c["best_alpha_on_grid"])
            theory[fam][loss] = _finite_or_none(c)
        # the numerically optimal alpha at other scales, divided by the scale: equals c
        if theory[fam]["huber"]["c"] not in (None, 0.0):
            ratios = []
            for s in (0.5, 2.0):
                r = optimize.minimize_scalar(
                    lambda la, s=s, fam=fam: asymptotic_variance(fam, math.exp(la), s),
                    bounds=(math.log(1e-3 * s), math.log(1e3 * s)), method="bounded",
                    options={"xatol": 1e-6})
                ratios.append(math.exp(r.x) / s)
            theory[fam]["huber"]["c_at_scales_0.5_2"] = ratios
    return theory


def _regret(rmse: np.ndarray, cfg: ToyConfig, c_by_family: dict[str, float | None]
            ) -> dict[str, Any]:
    """How much worse than the grid's best alpha are alpha = c_f s (theory) and alpha = 1?

    On the seed-averaged MSE curve of ``rmse`` (F, S, seeds, A); the grid alpha nearest (in
    log) to the target is used.  Returns per family lists over scales of the relative excess
    RMSE (0 = as good as the best grid alpha).
    """
    alphas = np.asarray(cfg.alphas, dtype=np.float64)
    out: dict[str, Any] = {}
    for fi, fam in enumerate(cfg.families):
        c = c_by_family.get(fam)
        c = math.inf if c is None else c
        with np.errstate(invalid="ignore"):
            curve = np.sqrt(np.mean(np.where(np.isfinite(rmse[fi]), rmse[fi], np.nan) ** 2, 1))
        best = np.nanmin(np.where(np.isfinite(curve), curve, np.nan), axis=-1) if np.isfinite(
            curve).any() else np.full(curve.shape[0], np.nan)
        res: dict[str, list[float]] = {"theory_alpha": [], "theory": [], "alpha_1": []}
        for si, s in enumerate(cfg.scales):
            target = min(max(c * s, alphas[0]), alphas[-1])
            it = int(np.argmin(np.abs(np.log(alphas) - math.log(target))))
            i1 = int(np.argmin(np.abs(np.log(alphas))))
            res["theory_alpha"].append(float(alphas[it]))
            res["theory"].append(float(curve[si, it] / best[si] - 1.0))
            res["alpha_1"].append(float(curve[si, i1] / best[si] - 1.0))
        out[fam] = _finite_or_none(res)
    return out
