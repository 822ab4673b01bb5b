r"""The figures of the toy problem: Figure 2 (:func:`plot_fig2`) and the test-RMSE curves."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from klhuber.toy.data import _FAMILY_TITLE, PAPER_FAMILIES
from klhuber.toy.formulas import _results_key

__all__ = ["plot_fig2", "plot_rmse_curves", "plot_rmse_panels"]


_METHOD_STYLE = {
    "gd": ("GD grid search (paper's method)", 0, "o"),
    "exact": ("exact minimiser", 1, "s"),
    "theory": ("asymptotic theory $c_f s$", 2, None),
}


def plot_fig2(results: dict[str, Any], *, loss: str = "huber", families: Sequence[str] | None = None,
              axes: Any = None, title: str | None = None, stat: str = "curve",
              stacked: bool = False) -> Any:
    """Figure 2: best alpha vs noise scale, one panel per family, three methods and fitted lines.

    ``stat="curve"``: best alpha of the seed-averaged RMSE curve with its 68% bootstrap interval
    over seeds; ``stat="seeds"``: mean ± standard deviation of the per-seed best alphas.
    The theory is the line :math:`c_f s`; the thin solid lines are least-squares lines through
    each method's points (the "near linear relationship" the paper reads off its figure).
    ``stacked=True`` puts the panels under each other, each as wide as a page of text (7 in),
    with 9-pt text or larger.  Returns the figure.
    """
    if stat not in ("curve", "seeds"):
        raise ValueError(f"stat must be 'curve' or 'seeds', got {stat!r}")
    import matplotlib.pyplot as plt

    from klhuber.plotting import color

    result_key = _results_key(loss)
    cfg = results["config"]
    families = list(families or [f for f in cfg["families"] if f in PAPER_FAMILIES]
                    or cfg["families"])
    scales = np.asarray(cfg["scales"], dtype=float)
    if axes is None and stacked:
        fig, axes = plt.subplots(len(families), 1, figsize=(7.0, 2.5 * len(families) + 0.6),
                                 squeeze=False, sharex=True)
        axes = axes[:, 0]
    elif axes is None:
        fig, axes = plt.subplots(1, len(families), figsize=(3.4 * len(families), 3.2),
                                 squeeze=False)
        axes = axes[0]
    else:
        fig = np.atleast_1d(axes)[0].figure
    for ax, fam in zip(axes, families):
        r2_text: list[str] = []
        c_text = "$c_f$ = ∞"
        for method in ("gd", "exact"):
            entry = results["methods"].get(method, {}).get(result_key)
            if entry is None or "summary" not in entry:
                continue
            s = entry["summary"][fam]

            def arr(key: str, fill: float, s: dict[str, Any] = s) -> np.ndarray:
                return np.array([fill if v is None else v for v in s[key]], dtype=float)

            if stat == "curve":
                mid = arr("curve_best", np.nan)
                yerr = np.stack([np.maximum(mid - arr("curve_lo", np.nan), 0),
                                 np.maximum(arr("curve_hi", np.nan) - mid, 0)])
                yerr = np.where(np.isfinite(yerr), yerr, 0.0)
                fit = s["curve_fit"]
            else:
                mid, yerr, fit = arr("mean", np.nan), arr("std", 0.0), s["fit"]
            label, ci, marker = _METHOD_STYLE[method]
            off = (-0.012 if method == "gd" else 0.012) * (scales.max() - scales.min())
            ax.errorbar(scales + off, mid, yerr=yerr, fmt=marker, ms=4, capsize=2,
                        color=color(ci), label=label)
            if fit["slope"] is not None:
                ax.plot(scales, fit["slope"] * scales + fit["intercept"], "-", lw=0.8,
                        color=color(ci), alpha=0.6,
                        label="least-squares line" if stacked else None)
                r2_text.append(f"{'GD' if method == 'gd' else 'exact'} {fit['r2'] or 0:.2f}")
        th = results.get("theory", {}).get(fam, {}).get(result_key)
        if th is not None:
            label, ci, _ = _METHOD_STYLE["theory"]
            c = th["c"]
            if c is None:  # inf: L2 is optimal
                ax.axhline(max(cfg["alphas"]), color=color(ci), ls="--", label=label + " (∞)")
            else:
                ax.plot(scales, np.maximum(c * scales, 0), "--", color=color(ci),
                        label=label if stacked else label + f", $c_f$={c:.3g}")
                c_text = f"$c_f$ = {c:.3g}"
        if stacked:
            ax.set_title(f"{_FAMILY_TITLE[fam]} ({c_text}; least-squares $R^2$: "
                         f"{', '.join(r2_text)})", fontsize=10)
        else:
            ax.set_title(_FAMILY_TITLE[fam])
        if not stacked or ax is axes[-1]:
            ax.set_xlabel("noise scale")
        ax.set_ylim(bottom=0)
        if stacked:
            ax.set_ylabel(r"best $\alpha$")
            ax.tick_params(labelsize=9)
    axes[0].set_ylabel(r"best $\alpha$" + (" ($D_{\\alpha,1/\\alpha}$)" if result_key == "kl" else ""))
    if title:
        fig.suptitle(title)
    if stacked:  # one legend for all panels, under them
        handles, labels = axes[0].get_legend_handles_labels()
        seen = dict(zip(labels, handles))
        fig.tight_layout(rect=(0, 0.07, 1, 1))
        fig.legend(list(seen.values()), list(seen), loc="lower center", ncol=2, fontsize=9,
                   frameon=False)
    else:
        axes[0].legend(fontsize=7, loc="upper left")
        fig.tight_layout()
    return fig


def plot_rmse_curves(results: dict[str, Any], family: str, *, scale_indices: Sequence[int] | None
                     = None, loss: str = "huber", ax: Any = None) -> Any:
    """Test RMSE vs alpha (mean over seeds) for a few scales: GD, exact, theory."""
    import matplotlib.pyplot as plt

    from klhuber.plotting import color

    result_key = _results_key(loss)
    cfg = results["config"]
    fi = list(cfg["families"]).index(family)
    alphas = np.asarray(cfg["alphas"], dtype=float)
    scales = cfg["scales"]
    if scale_indices is None:
        scale_indices = sorted({0, len(scales) // 2, len(scales) - 1})
    if ax is None:
        _, ax = plt.subplots(figsize=(4.2, 3.2))

    def mean_curve(entry: dict[str, Any], si: int) -> np.ndarray:
        arr = np.array([[np.nan if v is None else v for v in row] for row in entry["rmse"][fi][si]])
        with np.errstate(invalid="ignore"):
            return np.nanmean(np.where(np.isfinite(arr), arr, np.nan), axis=0) if np.isfinite(
                arr).any() else np.full(arr.shape[-1], np.nan)

    for j, si in enumerate(scale_indices):
        c = color(j)
        ex = results["methods"].get("exact", {}).get(result_key)
        if ex is not None:
            ax.plot(alphas, mean_curve(ex, si), "-", color=c, label=f"s={scales[si]:g} exact")
        gd = results["methods"].get("gd", {}).get(result_key)
        if gd is not None:
            ax.plot(alphas, mean_curve(gd, si), "o", ms=3, color=c, label=f"s={scales[si]:g} GD")
        th = results.get("theory", {}).get(family, {}).get(result_key)
        if th is not None:
            ax.plot(alphas, np.asarray(th["rmse"][si], dtype=float), ":", color=c)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(r"$\alpha$")
    ax.set_ylabel("test RMSE")
    ax.set_title(f"{_FAMILY_TITLE[family]}: solid exact, dots GD, dotted theory", fontsize=8)
    ax.legend(fontsize=6, ncol=2)
    return ax


def plot_rmse_panels(results: dict[str, Any], families: Sequence[str], *, loss: str = "huber"
                     ) -> Any:
    """One :func:`plot_rmse_curves` panel per family, side by side; returns the figure."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(families), figsize=(4.2 * len(families), 3.4))
    for ax, family in zip(np.atleast_1d(axes), families):
        plot_rmse_curves(results, family, loss=loss, ax=ax)
    fig.tight_layout()
    return fig
