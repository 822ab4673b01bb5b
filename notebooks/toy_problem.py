# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# (toy-problem)=
# # Toy problem: the best α versus the noise scale (Section 5, Figure 2)
#
# Section 5 of {cite}`meyer2021huber` fits a polynomial to noisy samples with the Huber loss and
# reports (Figure 2) a near-linear relation between the scale of the label noise and the best
# transition point α. This chapter regenerates Figure 2 with the paper's method (gradient descent
# and a grid search over the learning rate and α), adds the *exact* minimiser of the convex
# objective (no learning rate) and the *asymptotic theory* of the Huber M-estimator
# {cite}`huber1964robust`, and asks whether the linear relation is a property of the estimator
# or of the optimiser.
#
# **Run time**: quick ≈ 15–60 s on 2 CPU cores (4 noise scales, 3 seeds, 11 values of α);
# full: 88 min on two shared CPU cores for the committed `results/toy/toy_full.json` (5 families,
# 12 scales, 10 seeds, 40 α, 3 learning rates per α, up to 2,000 iterations with early stopping,
# plus the exact solver and the theory); produce it with
# `klhuber toy --profile full --out results/toy --stop-after-s SECONDS` (resumable by chunk).

# %% tags=["parameters"]
profile = "quick"  # "quick" (laptop, minutes) or "full" (paper scale)
device = "cpu"  # "cpu" or "cuda"
seed = 0
artefacts_dir = None  # set by the book runner: where scorecard rows are written
results_dir = "../results"  # committed full-profile results (GPU runs) live here

# %% tags=["remove-cell"]
import math
import time

import matplotlib.pyplot as plt
import numpy as np
from IPython.display import Markdown, display

from klhuber import toy
from klhuber.book.scorecard import Recorder
from klhuber.paper_values import toy as paper
from klhuber.plotting import markdown_table as table
from klhuber.plotting import use_style

use_style()
recorder = Recorder("toy_problem", artefacts_dir, profile, device)




def fmt(v, spec=".3g"):
    return "–" if v is None else format(v, spec)


# %% [markdown]
# (toy-problem-verdict)=
# ## The verdict
#
# The paper reads Figure 2 as "a near linear relationship between the scale of the label noise
# and the optimal α parameter for each of the distributions". This book decides that claim once,
# from its committed full-profile results ({py:func}`klhuber.toy.figure2_verdict`); the
# landing page, the Smooth L1 chapter and the case study show the same computation.

# %% tags=["remove-input"]
committed = toy.committed_results(results_dir)
if committed is not None:
    verdict_source, verdict_file = committed
    verdict = toy.figure2_verdict(verdict_source, source=f"full profile, {verdict_file}")
else:  # a checkout without results/: decide on this build's own run (below) instead
    verdict_source = verdict = None
if verdict is not None:
    display(Markdown(verdict.sentence()))
    recorder.save_markdown(verdict.sentence(), "toy_verdict")

# %% tags=["remove-cell"]
# c_f against an independent reference: the root of dV/dα by mpmath (the library minimises V by
# scipy's bounded Brent search instead). V = N/D² with N = E[ψ_α(ε)²], D = E[ψ'_α(ε)] for
# unit-scale noise of density f and survival S, so dV/dα = 0 ⟺ N'D − 2ND' = 0.
# H_α: ψ = clip(ε, −α, α), N = 2∫_0^α e²f + 2α²S(α), D = 1 − 2S(α), N' = 4αS(α), D' = 2f(α).
# D_{α,1/α} = α(αe^{−|e|/α} + |e| − α) (eq. 16): ψ = α(1 − e^{−|e|/α}) sign e, ψ' = e^{−|e|/α},
# N' and D' by differentiating under the integral. Roots by Anderson–Björck on a bracket.
from functools import partial  # a one-argument function of α (findroot calls f(*bracket) first)

import mpmath

mpmath.mp.dps = 15
cf_pdf = {"logistic": lambda e: mpmath.exp(-e) / (1 + mpmath.exp(-e)) ** 2,
          "cauchy": lambda e: 1 / (mpmath.pi * (1 + e * e))}
cf_sf = {"logistic": lambda a: 1 / (1 + mpmath.exp(a)),
         "cauchy": lambda a: mpmath.mpf(1) / 2 - mpmath.atan(a) / mpmath.pi}


def dv_sign(fam, loss, a):
    """N'D − 2ND', of the sign of dV/dα (V = N/D²)."""
    f = cf_pdf[fam]
    if loss == "huber":
        s = cf_sf[fam](a)
        n = 2 * mpmath.quad(lambda e: e * e * f(e), [0, a]) + 2 * a * a * s
        return 4 * a * s * (1 - 2 * s) - 4 * n * f(a)

    def q(g):  # E[g(|ε|)] for symmetric ε
        return 2 * mpmath.quad(lambda e: g(e) * f(e), [0, a, mpmath.inf])

    def x(e):
        return mpmath.exp(-e / a)

    n, d = q(lambda e: (a * (1 - x(e))) ** 2), q(x)
    dn = q(lambda e: 2 * (1 - x(e)) * (a * (1 - x(e)) - e * x(e)))
    dd = q(lambda e: e * x(e) / (a * a))
    return dn * d - 2 * n * dd


cf_brackets = {("logistic", "huber"): (1, 4), ("cauchy", "huber"): (0.1, 1),
               ("logistic", "kl"): (1, 4), ("cauchy", "kl"): (0.05, 1)}
cf_mpmath = {key: float(mpmath.findroot(partial(dv_sign, *key), bracket, solver="anderson"))
             for key, bracket in cf_brackets.items()}


def assert_cf(theory, label):
    """Every c_f of a results payload (Logistic, Cauchy; H_α and D_{α,1/α}) is the mpmath root."""
    for (fam, loss), want in cf_mpmath.items():
        if fam in theory:
            got = theory[fam][loss]["c"]
            assert got is not None and math.isclose(got, want, rel_tol=1e-6), (
                label, fam, loss, got, want)


if verdict_source is not None:  # the committed file: verdict, Figure 2, slopes and discussion
    assert_cf(verdict_source["theory"], "committed")
    for fam_verdict in verdict.families:
        if (fam_verdict.family, "huber") in cf_mpmath:
            want = cf_mpmath[fam_verdict.family, "huber"]
            assert math.isclose(fam_verdict.c_f, want, rel_tol=1e-6), (fam_verdict, want)
            # the sentence prints c_f to 3 significant digits: those of the reference
            assert f"{want:.3g} ({fam_verdict.family.title()})" in verdict.sentence(), want

# %% tags=["remove-input"] mystnb={"figure": {"caption": "Figure 2 at paper scale, from the committed full-profile results: the best α of the seed-averaged test RMSE against the noise scale, with 68 % bootstrap intervals over seeds, for the paper's method (gradient descent with a grid search, when the committed file has it) and the exact minimiser; dashed, the asymptotic optimum $c_f s$; thin lines, least-squares lines (the paper's near-linear reading).", "name": "fig-toy-figure2-full"}, "image": {"alt": "Three stacked panels (Laplace, Logistic, Cauchy) of the best alpha against the noise scale, with error bars, least-squares lines and the theory line c_f times s."}}
if verdict_source is not None:
    toy.plot_fig2(verdict_source, stacked=True)
    plt.show()

# %% [markdown]
# ## Set-up: the paper's and ours
#
# The paper samples $N = 10\,000$ points $x_i \sim U[-\delta, \delta]$ with $\delta = 2$,
# labels $y_i = F_{\theta^*}(x_i) + \epsilon$ with
# $F_{\theta^*}(x) = 6x^5 - 3x^4 - 25x^3 + 15x^2 + 20x - 10$,
# fits $K = D + 2 = 8$ coefficients by minimising $\sum_i H_\alpha(y_i - F_\theta(x_i))$
# with gradient descent, and picks the learning rate and α with the smallest RMSE on a
# noise-free test set. The choices it leaves open are ours and are parameters of
# {py:class}`klhuber.toy.ToyConfig`:
#
# * **Features**: orthonormal Legendre polynomials $\sqrt{2k+1}P_k(x/\delta)$, so that gradient
#   descent is well conditioned. All bases span the same functions, so the exact minimiser and
#   the RMSE do not depend on the basis; the full profile also runs GD on the raw monomials
#   $x^k$ (the most literal reading of the paper) to show what the basis does to GD.
# * **Objective**: the mean loss (same minimiser as the sum); learning rates are relative to
#   $1/\lambda_{\max}$ of the training Gram matrix; $\theta = 0$ initially; a fixed number of
#   iterations.
# * **Noise**: independent draws for every (family, scale, seed); scale parameters are the Laplace
#   $b$, the Logistic $s$, the Cauchy $\gamma$ (extensions: Normal $\sigma$, Student-t with 3
#   degrees of freedom).
# * **Best α** per (family, scale): the α with the smallest *seed-averaged* test MSE (a grid
#   search on the mean over seeds), with a 68% bootstrap interval over seeds; the per-seed best α
#   is reported too.

# %% tags=["remove-input"]
config = toy.get_config(profile)
display(table(
    ["setting", "paper", "this run"],
    [
        ["N, δ, K", f"{paper.SETUP['n_train']}, {paper.SETUP['delta']}, {paper.SETUP['K']}",
         f"{config.n}, {config.delta}, {config.k}"],
        ["θ*", str(paper.SETUP["theta_star"]), str(config.theta)],
        ["noise families", ", ".join(paper.SETUP["families"]), ", ".join(config.families)],
        ["noise scales", "not stated", ", ".join(f"{s:g}" for s in config.scales)],
        ["α grid", "not stated", f"{len(config.alphas)} values, {config.alphas[0]:.3g} … "
         f"{config.alphas[-1]:.3g} (log-spaced)"],
        ["learning rates", "not stated", ", ".join(f"{v:g}" for v in config.lrs)
         + " × 1/λ_max"],
        ["GD iterations", "not stated", str(config.iterations)],
        ["seeds", "not stated", str(len(config.seeds))],
        ["test set", "noise-free", f"{config.n_test} noise-free points"],
        ["basis", "not stated", config.basis + (" (+ GD on " + ", ".join(config.extra_gd_bases)
                                                + ")" if config.extra_gd_bases else "")],
    ]))

# %% tags=["hide-input"]
t0 = time.perf_counter()
results = toy.run(profile, device, progress=False)
elapsed = time.perf_counter() - t0
print(f"profile {profile!r} on {device}: {elapsed:.1f} s "
      + ", ".join(f"{k} {v:.1f} s" for k, v in results["timings"].items()))
families = [f for f in results["config"]["families"] if f in toy.PAPER_FAMILIES]
methods = results["methods"]

# %% [markdown]
# (toy-problem-figure2)=
# ## Figure 2, regenerated
#
# One panel per noise family. Dots: the paper's method (GD + grid search over learning rate
# and α); squares: the exact minimiser for every α; error bars: 68% bootstrap interval over
# seeds; thin lines: least-squares fits; dashed: the asymptotic optimum $\alpha^* = c_f s$ (next
# section).

# %% tags=["remove-input"] mystnb={"figure": {"caption": "Figure 2 regenerated by this build (quick profile): best α against the noise scale for the three paper families; dots, gradient descent with a grid search over the learning rate (the paper's method); squares, the exact minimiser; 68 % bootstrap intervals over seeds; dashed, the asymptotic optimum $c_f s$.", "name": "fig-toy-figure2-quick"}, "image": {"alt": "Three panels of the best alpha against the noise scale for Laplace, Logistic and Cauchy noise, from the quick profile."}}
fig = toy.plot_fig2(results, families=families, stacked=True)
plt.show()

# %% [markdown]
# ## Theory: the asymptotic variance of the Huber estimator
#
# For a linear model the Huber M-estimator is asymptotically normal with covariance
# $V(\alpha)\,G^{-1}/N$, where $G$ is the Gram matrix of the features and
#
# $$V(\alpha) = \frac{E[\psi_\alpha(\epsilon)^2]}{E[\psi_\alpha'(\epsilon)]^2}, \qquad
#   \psi_\alpha(r) = \max(-\alpha, \min(r, \alpha)).$$
#
# With orthonormal features the expected test MSE is $V(\alpha)K/N$. If the noise is
# $\epsilon = s\epsilon_0$, then $\psi_\alpha(s\epsilon_0) = s\,\psi_{\alpha/s}(\epsilon_0)$, so
# $V(\alpha; s) = s^2 V(\alpha/s; 1)$ and the minimiser is **exactly** $\alpha^*(s) = c_f\,s$ for
# every location-scale family: the linear relation of Figure 2 is a theorem, through the origin,
# with a family constant $c_f$ (computed by numerical integration below). For the Laplace
# family $V$ decreases all the way to $\alpha \to 0$ (the median is the efficient estimator), so
# $c_f = 0$; for the Normal family $c_f = \infty$ (the mean). The same holds for
# $D_{\alpha,1/\alpha}$ with its own constants.

# %% tags=["hide-input"]
rows = []
for fam in results["config"]["families"]:
    th = results["theory"][fam]
    h, k = th["huber"], th["kl"]
    rows.append([fam, fmt(h["c"], ".4g") if h["c"] is not None else "∞",
                 h["boundary"] or "–", fmt(h["v_min"], ".4f"), fmt(h["v_l1"], ".4f"),
                 fmt(h["v_l2"], ".4f"), fmt(k["c"], ".4g") if k["c"] is not None else "∞"])
display(Markdown("**Measured by this build** (numerical integration of $V$ at unit scale; "
                 "checked against mpmath and closed forms):"))
display(table(["family", "c_f (H_α)", "limit", "min V", "V of L1", "V of L2", "c_f (D_{α,1/α})"],
              rows))
theory = results["theory"]
assert theory["laplace"]["huber"]["c"] == 0.0 and theory["laplace"]["huber"]["boundary"] == "lower"
for fam in ("logistic", "cauchy"):
    c = theory[fam]["huber"]["c"]
    assert 0 < c < math.inf
    # the numerically optimal alpha at scales 0.5 and 2, divided by the scale, is c_f again
    assert np.allclose(theory[fam]["huber"]["c_at_scales_0.5_2"], c, rtol=1e-5)

# %% tags=["remove-cell"]
# The table against independent references: V of L1 = 1/(4 f(0)²) and V of L2 = Var ε in closed
# form; for Laplace noise V(α) = 2(1 − (1 + α)e^{−α})/(1 − e^{−α})² exactly (any scale, via
# V(α; s) = s² V(α/s; 1)); min V at c_f by mpmath quadrature, and c_f its minimiser. And the
# noise itself: unit-scale draws times s (mean |ε| = s for Laplace, 2 log(2) s for Logistic,
# median |ε| = s for Cauchy). And c_f of H_α and D_{α,1/α} of this build: the mpmath roots of
# dV/dα (cell after the verdict), rel 1e-6.
assert_cf(theory, "this build")
pdfs = {"logistic": lambda e: mpmath.exp(-e) / (1 + mpmath.exp(-e)) ** 2,
        "cauchy": lambda e: 1 / (mpmath.pi * (1 + e * e))}


def v_mpmath(fam, a):
    f = pdfs[fam]
    e2 = 2 * mpmath.quad(lambda e: e * e * f(e), [0, a]) + 2 * a * a * mpmath.quad(f, [a, mpmath.inf])
    return e2 / (2 * mpmath.quad(f, [0, a])) ** 2


for fam, v_l1, v_l2 in (("laplace", 1.0, 2.0), ("logistic", 4.0, math.pi**2 / 3),
                        ("cauchy", math.pi**2 / 4, None)):
    h = theory[fam]["huber"]
    assert math.isclose(h["v_l1"], v_l1, rel_tol=1e-9) and (
        h["v_l2"] is None if v_l2 is None else math.isclose(h["v_l2"], v_l2, rel_tol=1e-9)), fam
for a, s in ((0.3, 1.0), (1.0, 2.0), (3.0, 0.5)):
    u = a / s
    want = s * s * 2 * (1 - (1 + u) * math.exp(-u)) / (-math.expm1(-u)) ** 2
    assert math.isclose(toy.asymptotic_variance("laplace", a, s), want, rel_tol=1e-8), (a, s)
assert math.isclose(theory["laplace"]["huber"]["v_min"], 1.0, rel_tol=1e-3)
for fam in pdfs:
    c = theory[fam]["huber"]["c"]
    assert math.isclose(theory[fam]["huber"]["v_min"], v_mpmath(fam, c), rel_tol=1e-7), fam
    assert v_mpmath(fam, c) < min(v_mpmath(fam, 1.05 * c), v_mpmath(fam, c / 1.05)), fam
noise_check = toy.make_data(toy.PAPER_FAMILIES, (0.5, 2.0), (seed,), n=40_000)
noise = (noise_check.y - toy.ground_truth(noise_check.x)).abs().numpy()
for fi, fam in enumerate(noise_check.families):
    for si, s in enumerate(noise_check.scales):
        e = noise[fi, si, 0] / s
        stat, want = (np.median(e), 1.0) if fam == "cauchy" else (
            e.mean(), 1.0 if fam == "laplace" else 2 * math.log(2))
        assert abs(stat / want - 1) < 0.03, (fam, s, stat, want)

# %% [markdown]
# ### The theorem, checked on the exact solver
#
# With the *same* standard noise draw at every scale (`common_noise=True`), the exact
# minimiser satisfies $\mathrm{RMSE}(s, \alpha) = s\,\mathrm{RMSE}(1, \alpha/s)$ (the model
# contains $F_{\theta^*}$, so the objective is scale-equivariant). Then the best α on a grid
# proportional to $s$ is exactly proportional to $s$.

# %% tags=["hide-input"]
scales_eq = (0.5, 1.0, 2.0, 4.0)
base_alphas = np.geomspace(0.05, 10.0, 9)
eq_data = toy.make_data(("logistic",), scales_eq, (seed,), common_noise=True)
ratios = []
for si, s in enumerate(scales_eq):
    ex = toy.exact_grid(eq_data, base_alphas * s, progress=False)
    ratios.append(ex.rmse[0, si, 0] / s)
ratios = np.array(ratios)
best_over_s = [base_alphas[int(np.argmin(r))] for r in ratios]
display(Markdown(f"**Measured** (this build's exact solver, {profile} profile):"))
display(table(["scale $s$", "best α / $s$",
               r"max $\lvert \mathrm{RMSE}(s, cs)/s - \mathrm{RMSE}(1, c)\rvert / \mathrm{RMSE}$"],
              [[f"{s:g}", f"{b:.3g}", f"{np.max(np.abs(r - ratios[1]) / ratios[1]):.1e}"]
               for s, b, r in zip(scales_eq, best_over_s, ratios)]))
assert np.allclose(ratios, ratios[1], rtol=1e-6)
assert len(set(best_over_s)) == 1

# %% [markdown]
# (toy-problem-slopes)=
# ## Slopes
#
# Least-squares lines through the best α per scale (seed-averaged grid search), per family and
# method, with the per-seed version (mean of the per-seed best α) beside it. The theory line is
# $c_f s$ (slope $c_f$, intercept 0, exact).


# %% tags=["hide-input"]
def slopes_rows(res, fams):
    rows = []
    for fam in fams:
        for method, label in (("gd", "GD grid (paper)"), ("exact", "exact"),
                              ("gd_monomial", "GD, monomial basis")):
            entry = res["methods"].get(method, {}).get("huber")
            if entry is None:
                continue
            s = entry["summary"][fam]
            cf, sf = s["curve_fit"], s["fit"]
            rows.append([fam, label, fmt(cf["slope"]), fmt(cf["intercept"]), fmt(cf["r2"], ".2f"),
                         fmt(sf["slope"]), fmt(sf["r2"], ".2f")])
        c = res["theory"][fam]["huber"]["c"]
        rows.append([fam, "theory", "∞" if c is None else f"{c:.3g}", "0", "1 (exact)", "", ""])
    return rows


display(Markdown(f"**Measured** (this build, {profile} profile; the theory rows are the "
                 "integrated $c_f$ above):"))
display(table(["family", "method", "slope", "intercept", "R²", "slope (per seed)",
               "R² (per seed)"], slopes_rows(results, families)))


# %% [markdown]
# ## Test RMSE versus α
#
# Seed-averaged test RMSE for three noise scales per family: exact minimiser (lines), GD
# (dots) and the asymptotic prediction $s\sqrt{V(\alpha/s)K/N}$ (dotted). The curves are flat
# around their minimum, which is why the best α of a finite experiment scatters.

# %% tags=["remove-input"] mystnb={"figure": {"caption": "Seed-averaged test RMSE against α for three noise scales per family (quick profile): exact minimiser (lines), gradient descent (dots) and the asymptotic prediction (dotted). The curves are flat around their minimum.", "name": "fig-toy-rmse-quick"}, "image": {"alt": "Panels of test RMSE against alpha on a log axis for three noise scales per noise family."}}
rmse_fig = toy.plot_rmse_panels(results, families)
rmse_fig.set_size_inches(7.0, 7.0 * rmse_fig.get_figheight() / rmse_fig.get_figwidth())
plt.show()

# %% [markdown]
# ## How much does knowing the noise scale buy?
#
# The paper's practical point is that an estimate of the noise lets one choose α without a
# search. The table gives the excess test RMSE (seed-averaged) of the grid α closest to the
# theory's $c_f s$, and of the common default α = 1, over the best α of the grid.

# %% tags=["hide-input"]
rows, worst = [], {}
for method in ("exact", "gd"):
    reg = methods[method]["huber"]["regret"]
    for fam in families:
        th = np.array(reg[fam]["theory"], dtype=float)
        a1 = np.array(reg[fam]["alpha_1"], dtype=float)
        worst[(method, fam)] = float(np.nanmax(th))
        rows.append([method, fam, f"{np.nanmedian(th):.1%}", f"{np.nanmax(th):.1%}",
                     f"{np.nanmedian(a1):.1%}", f"{np.nanmax(a1):.1%}"])
display(Markdown(f"**Measured** (this build, {profile} profile, seed-averaged test RMSE):"))
display(table(["method", "family", "α = c_f s: median excess", "max", "α = 1: median excess",
               "max"], rows))
max_regret = max(worst[("exact", f)] for f in families)
print(f"largest excess RMSE of alpha = c_f s (exact solver, over families and scales): "
      f"{max_regret:.1%}")

# %% [markdown]
# ## $D_{\alpha,1/\alpha}$, L1 and L2
#
# The same grid with $D_{\alpha,1/\alpha}$ (eq. 16, the lower bound of eq. 20) in place of
# $H_\alpha$, and the two limits L1 ($\alpha \to 0$) and L2 ($\alpha \to \infty$), all with the
# exact solver: seed-averaged test RMSE at the best α of each loss.

# %% tags=["hide-input"]
cfg = results["config"]
rows = []
for fi, fam in enumerate(cfg["families"]):
    for si, s in enumerate(cfg["scales"]):
        cells = [fam, f"{s:g}"]
        for loss in ("huber", "kl"):
            summ = methods["exact"][loss]["summary"][fam]
            cells.append(fmt(summ["min_rmse_mean"][si], ".4f"))
            cells.append(fmt(summ["curve_best"][si], ".3g"))
        for loss in ("l1", "l2"):
            vals = np.array([np.nan if v is None else v for v in methods["exact"][loss]["rmse"][fi][si]])
            cells.append(f"{np.nanmean(vals):.4f}")
        rows.append(cells)
display(Markdown(f"**Measured** (this build's exact solver, {profile} profile, test RMSE "
                 "averaged over seeds):"))
display(table(["family", "scale", "RMSE H_α (best α per seed)", "best α (H)",
               "RMSE D_{α,1/α}", "best α (D)", "RMSE L1", "RMSE L2"], rows))
# D_{alpha,1/alpha} and H_alpha reach almost the same best RMSE; L2 collapses under Cauchy noise
h_best = np.array([x for f in cfg["families"] for x in methods["exact"]["huber"]["summary"][f]
                   ["min_rmse_mean"]], dtype=float)
d_best = np.array([x for f in cfg["families"] for x in methods["exact"]["kl"]["summary"][f]
                   ["min_rmse_mean"]], dtype=float)
kl_vs_huber = float(np.max(np.abs(d_best / h_best - 1)))
print(f"best RMSE with D_(alpha,1/alpha) vs H_alpha: largest relative difference {kl_vs_huber:.1%}")
assert kl_vs_huber < 0.15
if "cauchy" in cfg["families"]:
    fi = cfg["families"].index("cauchy")
    l2 = np.nanmean(np.array(methods["exact"]["l2"]["rmse"][fi], dtype=float))
    hb = np.nanmean(np.array(methods["exact"]["huber"]["summary"]["cauchy"]["min_rmse_mean"],
                             dtype=float))
    assert l2 > 5 * hb, (l2, hb)

# %% [markdown]
# ## Gradient descent versus the exact minimiser
#
# How far are the GD answers (best learning rate per α) from the exact minimiser, in test-set
# function distance relative to the exact test RMSE?

# %% tags=["hide-input"]
rows = []
for method in [m for m in methods if m.startswith("gd")]:
    for loss, entry in methods[method].items():
        g = entry.get("gd_vs_exact")
        if g is None:
            continue
        rows.append([method, loss, entry.get("basis", cfg["basis"]), entry["iterations"],
                     f"{g['relative_median']:.1e}", f"{g['relative_p90']:.1e}",
                     f"{g['fraction_within_1pct']:.1%}", f"{entry['diverged_fraction']:.1%}"])
display(Markdown(f"**Measured** (this build, {profile} profile):"))
display(table(["method", "loss", "basis", "iterations", "median rel. distance", "90% quantile",
               "within 1%", "diverged (marked, not scored)"], rows))
gd_close = methods["gd"]["huber"]["gd_vs_exact"]["fraction_within_1pct"]
assert gd_close > 0.8, gd_close

# %% [markdown]
# (toy-problem-full)=
# ## Full-profile results
#
# Two committed files can feed this section: `results/toy/toy_full.json` (every method, from a
# GPU: `klhuber toy --profile full --device cuda --out results/toy`) and
# `results/toy/toy_full_exact.json` (the exact solver and the theory at full scale, which a CPU
# runs in a few minutes: `klhuber toy --profile full --no-gd --out results/toy`). The first one
# present is shown, with where and when it was computed.

# %% tags=["remove-input"]
full = None
committed_full = toy.committed_results(results_dir) if profile == "quick" else None
if committed_full is not None:
    full, full_name = committed_full
    prov = full["provenance"]
    full_has_gd = bool(full["methods"].get("gd"))
    display(Markdown(
        f"**Full profile, from `results/toy/{full_name}`**, computed on {prov['device']} at "
        f"commit `{prov['git_commit'][:10]}` on {prov['date_utc'][:10]} (wall time "
        f"{prov['wall_time_s']:.0f} s; torch {prov['versions']['torch']})."
        + ("" if full_has_gd else " It holds the exact solver and the theory only, so the GD "
           f"statements below come from this build's {profile} run.")))
    fams_full = [f for f in full["config"]["families"] if f in toy.PAPER_FAMILIES]
    extra_fams = [f for f in full["config"]["families"] if f not in toy.PAPER_FAMILIES]
    display(table(["family", "method", "slope", "intercept", "R²", "slope (per seed)",
                   "R² (per seed)"], slopes_rows(full, full["config"]["families"])))
    gd_runs = [(m, loss, e) for m, entries in full["methods"].items() if m.startswith("gd")
               for loss, e in entries.items() if "diverged_fraction_by_family" in e]
    if gd_runs:
        fc = full["config"]
        display(Markdown(
            f"Gradient descent at full scale ran {fc['iterations']} iterations from θ = 0 with "
            f"learning rates {', '.join(f'{v:g}' for v in fc['lrs'])} × 1/λ_max of the loss's "
            "curvature at a robust pilot fit (per family, scale, seed and α; the paper gives no "
            "grid), and stopped a configuration early once its remaining movement could change "
            f"the test RMSE by less than {fc['retire_tol']:g} of it. Diverged runs are marked and "
            "never scored: " + gd_runs[0][2]["best_alpha_rule"] + "."))
        display(table(["method", "loss"] + [f"diverged: {f}" for f in full["config"]["families"]]
                      + ["stopped early"],
                      [[m, loss] + [f"{100 * e['diverged_fraction_by_family'][f]:.1f} %"
                                    for f in full["config"]["families"]]
                       + [f"{100 * e.get('converged_early_fraction', 0):.1f} %"]
                       for m, loss, e in gd_runs]))
elif profile == "full":
    full = results
    display(Markdown("This run *is* the full profile; see the sections above."))
else:
    display(Markdown(
        "No full-profile results file (`results/toy/toy_full.json` or "
        "`results/toy/toy_full_exact.json`) is present; run "
        "`klhuber toy --profile full --device cuda --out results/toy` on a GPU to add it."))

# %% tags=["remove-input"] mystnb={"figure": {"caption": "The extensions at full scale (committed results): best α against the noise scale for Normal noise (where L2 is optimal, $c_f = \\infty$) and Student-t noise with 3 degrees of freedom.", "name": "fig-toy-extensions-full"}, "image": {"alt": "Panels of the best alpha against the noise scale for Normal and Student-t noise."}}
if committed_full is not None and extra_fams:
    toy.plot_fig2(full, families=extra_fams)
    plt.show()

# %% tags=["remove-input"] mystnb={"figure": {"caption": "Seed-averaged test RMSE against α at full scale (committed results), three noise scales per paper family: exact minimiser (lines), gradient descent when the file has it (dots), asymptotic prediction (dotted).", "name": "fig-toy-rmse-full"}, "image": {"alt": "Panels of test RMSE against alpha for three noise scales per paper family, full profile."}}
if committed_full is not None:
    rmse_fig = toy.plot_rmse_panels(full, fams_full)
    rmse_fig.set_size_inches(7.0, 7.0 * rmse_fig.get_figheight() / rmse_fig.get_figwidth())
    plt.show()

# %% [markdown]
# ## Discussion
#
# The numbers printed below are computed from the run above (and the full-profile file when it
# exists); the text around them states which way they came out.

# %% tags=["remove-input"]
ref = full if full is not None else results  # exact solver and theory
ref_label = "full profile" if full is not None else f"{profile} profile"
gd_ref = ref if ref["methods"].get("gd") else results  # GD: the full run only if it has GD
gd_label = ref_label if gd_ref is ref else f"{profile} profile"
ref_fams = [f for f in ref["config"]["families"] if f in toy.PAPER_FAMILIES]
fits = {(m, f): src["methods"][m]["huber"]["summary"][f]["curve_fit"]
        for m, src in (("gd", gd_ref), ("exact", ref)) for f in ref_fams}
r2 = {k: (v["r2"] if v["r2"] is not None else 0.0) for k, v in fits.items()}
lines = [f"* Linear fits of the best α against the noise scale ({gd_label}, paper's GD method): "
         + "; ".join(f"{f}: slope {fmt(fits[('gd', f)]['slope'])}, R² {r2[('gd', f)]:.2f}"
                     for f in ref_fams) + "."]
lines.append(f"* The same fits for the exact minimiser ({ref_label}): "
             + "; ".join(f"{f}: slope {fmt(fits[('exact', f)]['slope'])}, R² "
                         f"{r2[('exact', f)]:.2f}" for f in ref_fams) + ".")
lines.append(
    "* The verdict on the paper's claim is the one at the top of this chapter "
    "({ref}`toy-problem-verdict`), decided with bootstrap intervals over seeds.")
ex_th = ref["theory"]
lines.append(
    "* Theory: the optimum is exactly linear, α* = c_f s, with c_f = "
    + ", ".join(f"{f} {('∞' if ex_th[f]['huber']['c'] is None else format(ex_th[f]['huber']['c'], '.3g'))}"
                for f in ref_fams)
    + ". For Laplace noise the best Huber loss is the L1 limit, so the 'linear relation' has "
      "slope 0 there.")
gdx = gd_ref["methods"]["gd"]["huber"]["gd_vs_exact"]
gd_matches_exact = gdx["relative_median"] < 1e-2
lines.append(
    f"* With orthonormal features GD {'reaches' if gd_matches_exact else 'does not reach'} the "
    f"exact minimiser (median relative distance {gdx['relative_median']:.1e}, "
    f"{gdx['fraction_within_1pct']:.0%} of (configuration, α) within 1%)"
    + (", so in this basis the GD and exact answers coincide and the scatter of the best α is a "
       "property of the estimator on a finite sample, not of the optimiser." if gd_matches_exact
       else "."))
if "gd_monomial" in gd_ref["methods"]:
    gm = gd_ref["methods"]["gd_monomial"]["huber"]
    far = gm["gd_vs_exact"]["relative_median"] > 1.0
    lines.append(
        f"* On the raw monomials (a literal reading of the paper) GD "
        f"{'stays far from' if far else 'gets close to'} the minimiser after {gm['iterations']} "
        f"iterations (median test-function distance {gm['gd_vs_exact']['relative_median']:.3g}× "
        "the exact RMSE)" + (": there the best α is chosen by the optimiser's progress as much "
                              "as by the noise" if far else "")
        + "; per-seed R² of its fits: "
        + ", ".join(f"{f} {fmt(gm['summary'][f]['fit']['r2'], '.2f')}" for f in ref_fams) + ".")
reg_max = max(max(v for v in ref["methods"]["exact"]["huber"]["regret"][f]["theory"]
                  if v is not None) for f in ref_fams)
lines.append(
    f"* Choosing α = c_f·s from the noise scale costs at most {reg_max:.1%} test RMSE over the "
    "best grid α (exact solver), so the paper's practical conclusion (estimate the noise, derive "
    "α) holds even where the best α itself scatters.")
display(Markdown("\n".join(lines)))
assert reg_max < 0.25, reg_max

# %% [markdown]
# In short: the statement "the optimal α is proportional to the noise scale" is exact for the
# asymptotic optimum of any location-scale noise family (a consequence of scale equivariance,
# not of the KL interpretation), with a family-dependent constant ($c_f = 0$ for Laplace, so the
# Huber loss degenerates to L1 there). In finite experiments the RMSE-versus-α curve is so flat
# near its minimum that the grid-searched best α scatters strongly from seed to seed; whether a
# plot of it looks "near linear" depends on that scatter, on the grid, and (in an ill-conditioned
# basis) on how far gradient descent got. The scorecard records the verdict at the top of this
# chapter.

# %% tags=["remove-cell"]
if verdict is None:  # no committed results: decide on this build's run
    verdict = toy.figure2_verdict(results, source=f"{profile} profile, this build")
    recorder.save_markdown(verdict.sentence(), "toy_verdict")
recorder.record(
    "fig2",
    paper=paper.CLAIM_FIG2,
    ours=verdict.sentence(),
    status=verdict.status,
    check=verdict.status == "reproduced",
    anchor="toy-problem-verdict",
    note=(f"near-linear: slope > 0 and R² ≥ {toy.FIG2_R2_THRESHOLD:g} in ≥ 97.5% of bootstrap "
          "resamples of the seeds, for every paper family; theory: α* = c_f s exactly"),
)

# %% [markdown]
# ## Library functions used
#
# {py:func}`klhuber.toy.run`, {py:func}`klhuber.toy.make_data`, {py:func}`klhuber.toy.gd_grid`,
# {py:func}`klhuber.toy.exact_grid`, {py:func}`klhuber.toy.asymptotic_variance`,
# {py:func}`klhuber.toy.optimal_alpha_constant`, {py:func}`klhuber.toy.summarize`,
# {py:func}`klhuber.toy.plot_fig2`, {py:func}`klhuber.toy.plot_rmse_panels`,
# {py:func}`klhuber.losses.huber`, {py:func}`klhuber.losses.kl_huber`.
