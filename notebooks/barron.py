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
# (barron)=
# # Barron's general and adaptive robust loss
#
# Barron {cite}`barron2019general` generalises L2, pseudo-Huber, Cauchy, Geman–McClure and Welsch
# into one loss $\rho(x, \alpha, c)$ with a continuous shape $\alpha$, and makes $\alpha$
# learnable by minimising the negative log-likelihood of the matching density. This chapter
# implements both ({py:mod}`klhuber.related.barron`), checks the special cases against their
# closed forms and the density's normalisation, re-runs the outlier demo of a blog review of
# Barron's paper with L2, Huber, the paper's $D_{\alpha,\beta}$, the general loss and the adaptive
# loss, relates pseudo-Huber to $H_\alpha$ and $D_{\alpha,\beta}$ {cite}`meyer2021huber`, and
# lets the adaptive loss choose its own shape on the Section 5 toy problem.
#
# **Run time**: quick ≈ 30 s on 2 shared CPU cores; full ≈ 4 min (5 demo seeds, 15 toy cases at
# N = 10 000; the toy fits run on `device`).
# Re-run it alone: `klhuber book run barron --profile full`.

# %% tags=["parameters", "remove-cell"]
profile = "quick"  # "quick" (laptop, minutes) or "full" (paper scale)
device = "cpu"  # "cpu" or "cuda"
seed = 0
artefacts_dir = None  # set by the book runner: where scorecard rows are written
results_dir = "../results"  # committed full-profile results live here

# %% tags=["remove-cell"]
import math
import time
import warnings

import matplotlib.pyplot as plt
import mpmath as mp
import numpy as np
import torch
from IPython.display import Markdown, display
from scipy import integrate, optimize, special

from klhuber import losses, toy
from klhuber.book.scorecard import Recorder
from klhuber.paper_values import related as paper
from klhuber.plotting import color, use_style
from klhuber.plotting import markdown_table as md_table
from klhuber.related import barron

with warnings.catch_warnings():  # tqdm.auto (used by klhuber.toy) warns on import that the
    warnings.simplefilter("ignore")  # notebook widgets are missing; the book shows no progress bars
    import tqdm.auto  # noqa: F401
use_style()
if device == "cpu":
    torch.set_num_threads(1)  # tiny problems: extra threads only add overhead on shared CPUs
recorder = Recorder("barron", artefacts_dir, profile, device)
settings = {
    "quick": {"grid": 2001, "demo_seeds": [seed], "density_alphas": 12, "toy_n": 2000,
              "toy_scales": [0.1, 0.5, 1.0], "toy_steps": 1000},
    "full": {"grid": 20001, "demo_seeds": list(range(seed, seed + 5)), "density_alphas": 31,
             "toy_n": 10000, "toy_scales": [0.1, 0.25, 0.5, 0.75, 1.0], "toy_steps": 3000},
}[profile]
F64 = torch.float64
t_start = time.perf_counter()


# %% [markdown]
# ## The general loss
#
# For a residual $x$, shape $\alpha \in [-\infty, \infty]$ and scale $c > 0$,
#
# (barron-rho)=
# ```{math}
# \rho(x, \alpha, c) = \frac{|\alpha - 2|}{\alpha}
#   \left[\left(\frac{(x/c)^2}{|\alpha - 2|} + 1\right)^{\alpha/2} - 1\right], \tag*{(Barron, eq. 1)}
# ```
#
# defined by its limits at $\alpha = 2$ (L2), $0$ (Cauchy) and $\pm\infty$. The formula divides
# by $\alpha$ and by $|\alpha - 2|$, so a direct implementation loses all precision near those
# values; {py:func}`klhuber.related.barron.general_loss` uses one rearranged expression per range
# of $\alpha$ (see its module documentation) that is exact at the special values and accurate
# next to them. We check the five named special cases against their closed forms in float64 and
# a few near-singular shapes against 80-digit arithmetic.

# %% tags=["hide-input"]
x = torch.linspace(-50, 50, settings["grid"], dtype=F64)
x = x[x != 0]
rows, special_errors = [], {}
for name, (a, closed) in barron.special_case_losses().items():
    want = closed(x**2)
    err = ((barron.general_loss(x, a, 1.0) - want).abs() / want).max().item()
    special_errors[name] = err
    rows.append((name, a, paper.BARRON["special_cases"][a], f"{err:.1e}"))
display(md_table(("case", "α", "blog's name", "max relative error (measured)"), rows))


def rho_80_digits(xv, a):
    with mp.workdps(80):
        z, a = mp.mpf(xv) ** 2, mp.mpf(a)
        b = abs(a - 2)
        return float((b / a) * (mp.power(1 + z / b, a / 2) - 1))


near = [1e-12, -1e-12, 1e-7, 1 - 1e-9, 2 - 1e-13, 2 - 1e-9, 2 + 1e-9, 2 + 1e-13, -1e6]
near_errors = []
for a in near:
    for xv in (1e-8, 1e-3, 0.5, 3.0, 30.0):
        got = barron.general_loss(torch.tensor(xv, dtype=F64), a).item()
        ref = rho_80_digits(xv, a)
        near_errors.append(abs(got - ref) / abs(ref))
display(Markdown(f"Near-singular shapes α = {', '.join(f'{a:g}' for a in near)}: "
                 f"max relative error against an 80-digit reference **{max(near_errors):.1e}** "
                 "(measured)."))
special_ok = max(special_errors.values()) <= 1e-12 and max(near_errors) <= 1e-12
assert special_ok

# %% [markdown]
# Gradients with respect to $x$, $\alpha$ and $c$ are checked against finite differences
# (`torch.autograd.gradcheck`), and the closed-form derivative
# $\partial\rho/\partial x = \frac{x}{c^2}\left(\frac{(x/c)^2}{|\alpha-2|} + 1\right)^{\alpha/2-1}$
# against autograd. (At exactly $\alpha = 2$ the $\alpha$-derivative diverges like
# $\log|\alpha - 2|$; the learnable shape is kept inside $(0.001, 1.999)$, as in the reference
# implementation.)

# %% tags=["hide-input"]
gradcheck_ok = True
for a0 in (-3.0, -0.7, 1e-6, 0.0, 0.4, 1.0, 1.7, 2.6):
    xs = torch.tensor([-2.0, -0.3, 0.2, 1.5], dtype=F64, requires_grad=True)
    alpha_t = torch.tensor(a0, dtype=F64, requires_grad=True)
    scale_t = torch.tensor(0.8, dtype=F64, requires_grad=True)
    gradcheck_ok &= torch.autograd.gradcheck(barron.general_loss, (xs, alpha_t, scale_t),
                                             eps=1e-6, atol=1e-7)
xg = torch.linspace(-6, 6, 241, dtype=F64, requires_grad=True)
deriv_err = 0.0
for a in (-math.inf, -2.0, 0.0, 1.0, 2.0, 3.0):
    (g,) = torch.autograd.grad(barron.general_loss(xg, a, 1.3).sum(), xg)
    deriv_err = max(deriv_err, (g - barron.general_loss_derivative(xg.detach(), a, 1.3)).abs().max().item())
display(Markdown(f"`gradcheck` in $(x, \\alpha, c)$ at 8 shapes passes: **{gradcheck_ok}**; autograd "
                 f"against the closed-form $\\partial\\rho/\\partial x$: **{deriv_err:.1e}** (measured)."))
assert gradcheck_ok and deriv_err < 1e-12

# %% tags=["remove-cell"]
# general_loss_derivative shares `_partials` with general_loss's backward, so the check above
# cannot catch a wrong formula. Here autograd and general_loss_derivative (which the figure
# plots) are compared with Barron's ∂ρ/∂x written out in NumPy: x/c²·((x/c)²/|α−2| + 1)^(α/2−1),
# with the limits x/c² (α = 2), x/c²·e^{−x²/(2c²)} (α = −∞) and 2x/(x² + 2c²) (α = 0), at the
# shapes of the figure (and 3) and at the figure's c = 1.1 and the check's c = 1.3.
def drho_dx_numpy(xv, a, cv):
    if a == 2:
        return xv / cv**2
    if a == -math.inf:
        return xv / cv**2 * np.exp(-(xv**2) / (2 * cv**2))
    if a == 0:
        return 2 * xv / (xv**2 + 2 * cv**2)
    return xv / cv**2 * ((xv / cv) ** 2 / abs(a - 2) + 1) ** (a / 2 - 1)


shapes_plotted = [-math.inf, -2.0, 0.0, 0.5, 1.0, 1.5, 2.0]
for cv in (1.1, 1.3):
    for a in [*shapes_plotted, 3.0]:
        (g,) = torch.autograd.grad(barron.general_loss(xg, a, cv).sum(), xg)
        want = drho_dx_numpy(xg.detach().numpy(), a, cv)
        assert np.allclose(g.numpy(), want, rtol=1e-12, atol=1e-15), (a, cv)
        assert np.allclose(barron.general_loss_derivative(xg.detach(), a, cv).numpy(), want,
                           rtol=1e-12, atol=1e-15), (a, cv)

# %% [markdown]
# The blog's reading of the figure below: the loss is monotone in $|x|$ and in $\alpha$; for
# $\alpha = 1$ the derivative saturates at $1/c$; for $\alpha < 1$ it redescends, so outliers
# pull less and less.

# %% tags=["remove-input"] mystnb={"figure": {"caption": "Barron's general loss $\\rho(x, \\alpha, c)$ at $c = 1.1$ (left) and its derivative (right) for shapes from $\\alpha = -\\infty$ to 2. At $\\alpha = 1$ the derivative saturates at $1/c$ (dotted); for $\\alpha < 1$ it redescends.", "name": "fig-barron-general-loss"}, "image": {"alt": "Two line plots against x from -7 to 7: seven loss curves that flatten more as alpha decreases, and their derivatives, which saturate or redescend, with a dotted line at 1 over c."}}
c = 1.1  # the blog's figure uses c = 1.1
xp = torch.linspace(-7, 7, settings["grid"], dtype=F64)
shapes = [-math.inf, -2.0, 0.0, 0.5, 1.0, 1.5, 2.0]
assert shapes == shapes_plotted  # the derivative check above covers the plotted shapes
fig, (ax_l, ax_d) = plt.subplots(1, 2, figsize=(7.0, 3.0))
for i, a in enumerate(shapes):
    ax_l.plot(xp, barron.general_loss(xp, a, c), color=color(i), label=f"α = {a}")
    ax_d.plot(xp, barron.general_loss_derivative(xp, a, c), color=color(i), label=f"α = {a}")
ax_d.axhline(1 / c, color="0.6", ls=":", lw=0.8)
ax_l.set(xlabel="x", ylabel=r"$\rho(x, \alpha, c)$", ylim=(0, 8), title=f"general loss, c = {c}")
ax_d.set(xlabel="x", ylabel=r"$\partial\rho/\partial x$", title="derivative (dotted: 1/c)")
fig.tight_layout()
fig.legend(*ax_l.get_legend_handles_labels(), loc="lower center", ncol=4, bbox_to_anchor=(0.5, 1.0))
plt.show()

# %% tags=["hide-input"]
xa = torch.linspace(0, 20, 401, dtype=F64)
stack = torch.stack([barron.general_loss(xa, a, c) for a in [-math.inf, -5, -2, -1, 0, 0.5, 1, 1.5, 2, 2.5]])
monotone_alpha = bool((stack.diff(dim=0) >= -1e-15).all())
monotone_x = bool((stack.diff(dim=1) >= 0).all())
saturation = barron.general_loss_derivative(torch.tensor(1e6, dtype=F64), 1.0, c).item() * c
display(Markdown(f"Monotone in $\\alpha$: **{monotone_alpha}**; in $\\lvert x\\rvert$: **{monotone_x}**; "
                 f"$c\\,\\partial\\rho/\\partial x$ at $x = 10^6$, $\\alpha = 1$: **{saturation:.12f}** "
                 "(measured; the blog: it saturates at $1/c$)."))
assert monotone_alpha and monotone_x and abs(saturation - 1) < 1e-9

# %% [markdown]
# ## The density and the adaptive loss
#
# Barron's density is $p(x \mid \alpha, c) = e^{-\rho(x,\alpha,c)}/(c\,Z(\alpha))$ for
# $\alpha \ge 0$ (for $\alpha < 0$ the loss is bounded and $e^{-\rho}$ is not integrable). The
# adaptive loss is its negative log-likelihood $\rho + \log c + \log Z(\alpha)$: minimising it
# over $\alpha$ cannot simply lower $\alpha$, because $Z(\alpha)$ grows as the tails get heavier.
# $Z$ has closed forms at $\alpha = 0$ ($\pi\sqrt2$, Cauchy), $1$ ($2e\,K_1(1)$), $2$
# ($\sqrt{2\pi}$, Gaussian) and $\infty$. {py:func}`klhuber.related.barron.log_partition`
# tabulates it by quadrature at first use (about a second, no data file) on $[0, 3]$ and, in
# $1/\alpha$, beyond 3 up to $\alpha = \infty$, and interpolates with cubic Hermite splines after
# removing the non-smooth term $\tfrac14(\alpha-2)\log|\alpha-2|$ at $\alpha = 2$.

# %% tags=["hide-input"]
t0 = time.perf_counter()
table = barron.partition_table()
table_seconds = time.perf_counter() - t0
closed = {0.0: math.log(math.pi * math.sqrt(2)), 2.0: 0.5 * math.log(2 * math.pi)}
closed_err = max(abs(barron.log_partition(torch.tensor(a, dtype=F64)).item() - v) for a, v in closed.items())
rng = np.random.default_rng(seed)
probe = np.concatenate([rng.uniform(0, 3, 30), 2 + rng.uniform(-0.01, 0.01, 5), rng.uniform(0, 0.01, 5)])
interp_err = np.abs(barron.log_partition(torch.tensor(probe, dtype=F64)).numpy()
                    - np.array([barron.log_partition_quad(a) for a in probe])).max()


def total_mass(a, s=1.0):
    """∫ p(x | a, s) dx by quadrature (x = s√2 tan θ handles the Cauchy-like tails)."""
    k = s * math.sqrt(2)

    def integrand(th):
        co = math.cos(th)
        return 0.0 if co <= 0 else barron.density(torch.tensor(k * math.tan(th), dtype=F64), a, s).item() * k / co**2

    return integrate.quad(integrand, -math.pi / 2, math.pi / 2, epsabs=1e-11, limit=200)[0]


density_alphas = np.linspace(0, 3, settings["density_alphas"])
masses = [total_mass(a, s) for a in density_alphas for s in (0.5, 2.0)]
mass_err = max(abs(m - 1) for m in masses)
display(md_table(("check", "measured"), [
    ("table: grid points / time to build", f"{len(table.alpha)} / {table_seconds:.2f} s"),
    ("log Z at α = 0, 2 vs closed forms", f"{closed_err:.1e}"),
    ("log Z interpolation vs quadrature, 40 random α", f"{interp_err:.1e}"),
    (f"∫ p dx − 1 for {len(masses)} (α, c) pairs, α ∈ [0, 3]", f"{mass_err:.1e}"),
]))
assert closed_err < 1e-12 and interp_err < 3e-7 and mass_err < 1e-6

# %% tags=["remove-cell"]
# The stated Z(1) = 2e·K₁(1) (log Z(1) = 1.1854952…) against SciPy: the Bessel function
# scipy.special.k1, and a quadrature of e^{−(√(1+x²) − 1)} over the real line; the library's
# log Z at α = 1 must agree.
z1_bessel = 2 * math.e * special.k1(1.0)
z1_quad = integrate.quad(lambda t: math.exp(-(math.sqrt(1 + t * t) - 1)), -np.inf, np.inf,
                         epsabs=0, epsrel=1e-13)[0]
assert abs(z1_quad / z1_bessel - 1) < 1e-12 and abs(math.log(z1_bessel) - 1.1854952) < 1e-7
assert abs(barron.log_partition(torch.tensor(1.0, dtype=F64)).item() - math.log(z1_bessel)) < 1e-12

# %% tags=["remove-input"] mystnb={"figure": {"caption": "Left: the log partition function $\\log Z(\\alpha)$ of Barron's density, interpolated from the library's table, with the closed forms at $\\alpha = 0$ and 2. Right: the density $p(x \\mid \\alpha, c = 1)$ for four shapes, on a log scale.", "name": "fig-barron-density"}, "image": {"alt": "Two plots: an increasing curve of log Z against alpha from 0 to 3 passing through two marked points, and four bell-shaped densities on a log scale whose tails get lighter as alpha grows."}}
fig, (ax_z, ax_p) = plt.subplots(1, 2, figsize=(7.0, 3.0))
aa = torch.linspace(0, 3, 601, dtype=F64)
ax_z.plot(aa, barron.log_partition(aa), color=color(0), label="interpolated")
ax_z.plot([0, 2], [closed[0.0], closed[2.0]], "o", color=color(1), label="closed forms")
ax_z.set(xlabel="α", ylabel=r"$\log Z(\alpha)$", title="log partition function")
ax_z.legend()
xd = torch.linspace(-6, 6, 601, dtype=F64)
for i, a in enumerate([0.0, 1.0, 2.0, 3.0]):
    ax_p.plot(xd, barron.density(xd, a, 1.0), color=color(i), label=f"α = {a}")
ax_p.set(xlabel="x", ylabel="density", yscale="log", ylim=(1e-5, 1), title="p(x | α, c = 1)")
ax_p.legend()
fig.tight_layout()
plt.show()

# %% [markdown]
# (barron-demo)=
# ## The blog's demo: a line through outliers
#
# The data of the blog review and of the reference implementation's example: $x \sim U(0, 1)$,
# $y = 0.7x + 0.15 + \mathcal N(0, 0.025^2)$, and about 10 % of the points thrown to 0.05 or 0.85;
# a line fitted with Adam (lr 0.01, 2000 full-batch epochs) under each loss. For $H_\alpha$ and
# $D_{\alpha,1/\alpha}$ we use $\alpha = 0.025$, the label-noise scale, as the KL interpretation
# suggests; the general loss uses the blog's fixed $(\alpha, c) = (2, 0.1)$ (L2) and also
# $\alpha = 1$ and $0$; the adaptive loss learns $\alpha \in (0.001, 1.999)$ and $c$.

# %% tags=["hide-input"]
demo = paper.BARRON["demo"]
runs = [("L2", "l2", {}), ("Huber $H_{0.025}$", "huber", {"alpha": 0.025}),
        ("$D_{0.025,40}$ (KL)", "kl_huber", {"alpha": 0.025}),
        ("general α=2, c=0.1 (blog)", "general", {"alpha": 2.0, "scale": 0.1}),
        ("general α=1, c=0.1", "general", {"alpha": 1.0, "scale": 0.1}),
        ("general α=0, c=0.1", "general", {"alpha": 0.0, "scale": 0.1}),
        ("adaptive", "adaptive", {})]
fits = {}
for s in settings["demo_seeds"]:
    xs_, ys_, out_ = barron.outlier_line_data(n=100, seed=s, slope=demo["slope"], shift=demo["shift"],
                                              noise=demo["noise_sigma"],
                                              outlier_fraction=demo["outlier_fraction"])
    if s == settings["demo_seeds"][0]:
        demo_data = (xs_, ys_, out_)
    for label, kind, kw in runs:
        fits.setdefault(label, []).append(
            barron.fit_line(xs_, ys_, kind, epochs=demo["epochs"], lr=demo["lr"], seed=s, **kw))


def line_error(f):
    """RMS distance between the fitted and the true line over x in [0, 1]."""
    xx = np.linspace(0, 1, 101)
    return float(np.sqrt(np.mean(((f.slope - demo["slope"]) * xx + f.shift - demo["shift"]) ** 2)))


rows = []
for label, fl in fits.items():
    f0 = fl[0]
    learned = f"α = {f0.alpha:.4f}, c = {f0.scale:.4f}" if label == "adaptive" else ""
    rows.append((label, f"{f0.slope:.4f}", f"{f0.shift:.4f}",
                 f"{np.mean([line_error(f) for f in fl]):.4f}", learned))
display(Markdown(f"Seed {settings['demo_seeds'][0]}: {int(demo_data[2].sum())} outliers among 100 "
                 f"points; truth: slope {demo['slope']}, shift {demo['shift']} (blog)."))
display(md_table(("loss", "slope", "shift",
                  f"line RMS error (measured, mean of {len(settings['demo_seeds'])} seeds)",
                  "learned (measured)"), rows))

# %% tags=["remove-input"] mystnb={"figure": {"caption": "The blog's demo. Left: 100 points with about 10 % outliers (crosses), the true line (black) and the lines fitted under L2, $H_{0.025}$, $D_{0.025,40}$, the general loss at $\\alpha = 1$ and the adaptive loss. Right: the shape $\\alpha$ the adaptive loss learns during training.", "name": "fig-barron-demo"}, "image": {"alt": "Left, a scatter of points with crosses for outliers near 0.05 and 0.85 and six fitted lines, all but the L2 line on the true line; right, the learned alpha falling over the training epochs."}}
fig, (ax_f, ax_a) = plt.subplots(1, 2, figsize=(7.0, 3.4), gridspec_kw={"width_ratios": [1.6, 1]})
xs_, ys_, out_ = demo_data
ax_f.scatter(xs_[~out_], ys_[~out_], s=8, color="0.5", label="inliers")
ax_f.scatter(xs_[out_], ys_[out_], s=14, marker="x", color="0.2", label="outliers")
xx = np.linspace(0, 1, 2)
ax_f.plot(xx, demo["slope"] * xx + demo["shift"], color="k", lw=2, label="truth")
for i, label in enumerate(["L2", "Huber $H_{0.025}$", "$D_{0.025,40}$ (KL)", "general α=1, c=0.1", "adaptive"]):
    f0 = fits[label][0]
    ax_f.plot(xx, f0.slope * xx + f0.shift, color=color(i), ls="--" if i % 2 else "-", label=label)
ax_f.set(xlabel="x", ylabel="y", title=f"fits (seed {settings['demo_seeds'][0]})")
ax_f.legend(loc="upper left", bbox_to_anchor=(0.0, -0.3), ncol=2)
ad = fits["adaptive"][0]
ax_a.plot(np.linspace(0, demo["epochs"], len(ad.alpha_history)), ad.alpha_history, color=color(4))
ax_a.set(xlabel="epoch", ylabel="α", title="learned shape")
fig.tight_layout()
plt.show()

# %% tags=["hide-input"]
err = {label: np.mean([line_error(f) for f in fl]) for label, fl in fits.items()}
best = min(err.values())
demo_ok = (err["adaptive"] < 0.25 * err["L2"] and err["adaptive"] < 0.02
           and err["Huber $H_{0.025}$"] < 2 * best and err["$D_{0.025,40}$ (KL)"] < 2 * best
           and ad.alpha < 0.5 and ad.scale < demo["noise_sigma"])
display(Markdown(f"Adaptive loss: learned $\\alpha$ = **{ad.alpha:.4f}**, $c$ = **{ad.scale:.4f}**; "
                 "line errors: " + ", ".join(f"{k} {v:.4f}" for k, v in err.items()) + " (measured)."))
assert demo_ok

# %% [markdown]
# The robust losses all find the line; L2 (and the general loss at the blog's $\alpha = 2$, the
# same loss) is pulled towards the outliers. The adaptive loss drives $\alpha$ towards the Cauchy
# end of its range and shrinks $c$ below the inlier noise $\sigma = 0.025$ (values above): with
# 10 % gross outliers, heavy tails are the most likely model. $H_\alpha$ and
# $D_{\alpha,1/\alpha}$ with $\alpha$ set to the label-noise scale — no search — land within a
# factor of two of the best loss in the table.

# %% [markdown]
# (barron-pseudo-huber)=
# ## Pseudo-Huber between $D$ and $H$
#
# At $\alpha = 1$, $c^2\rho(x, 1, c) = c^2\left(\sqrt{1 + (x/c)^2} - 1\right)$ is the
# pseudo-Huber loss with transition $c$. It has the same quadratic $\tfrac12 x^2$ at zero as
# $H_c$ and $D_{c,1/c}$ (eq. 17), and the same asymptote $c|x| - c^2$ as $D_{c,1/c}$ (eq. 18),
# whereas $H_c$ approaches $c|x| - c^2/2$. Measured on a dense grid, pseudo-Huber lies *between*
# the paper's lower bound and the Huber loss, $D_{c,1/c} \le c^2\rho(x,1,c) \le H_c$; by eq. 21,
# Barron's $\rho(x, 1, c) \ge D_{c,c}$, i.e. label and prediction scale both equal to $c$.

# %% tags=["hide-input"]
xq = torch.linspace(-60, 60, 20 * settings["grid"] + 1, dtype=F64)
sandwich, gap = True, {}
for cq in (0.25, 1.0, 4.0):
    ph = cq**2 * barron.general_loss(xq, 1.0, cq)
    lower, upper = losses.kl_huber(xq, cq, 1 / cq), losses.huber(xq, cq)
    sandwich &= bool(((lower <= ph + 1e-12) & (ph <= upper + 1e-12)).all())
    gap[cq] = ((ph - lower).max().item() / cq**2, (upper - ph).max().item() / cq**2)
display(md_table(("$c$", "max $(\\mathrm{PH} - D_{c,1/c})/c^2$ (measured)",
                  "max $(H_c - \\mathrm{PH})/c^2$ (measured)"),
                 [(cq, f"{g[0]:.4f}", f"{g[1]:.4f}") for cq, g in gap.items()]))
display(Markdown(f"$D_{{c,1/c}} \\le$ pseudo-Huber $\\le H_c$ on all {xq.numel():,} grid points for "
                 f"$c \\in \\{{{', '.join(f'{v:g}' for v in gap)}\\}}$: **{sandwich}** (measured)."))
assert sandwich

# %% tags=["remove-cell"]
# The gap table against closed forms, with u = |x|/c: (PH − D_{c,1/c})/c² = √(1+u²) − u − e^{−u}
# peaks where u/√(1+u²) − 1 + e^{−u} = 0 (brentq: u ≈ 2.92, value 0.11255); the grid (spacing h
# in u) misses the peak by at most max|g''|/2·(h/2)² ≤ h²/100 (|g''| ≈ 0.02 there).
# (H_c − PH)/c² = u + 1/2 − √(1+u²) increases towards 1/2, so its maximum is at the grid's
# end u = 60/c: 1/2 − 1/(√(1+u²) + u).
u_peak = optimize.brentq(lambda v: v / math.sqrt(1 + v * v) - 1 + math.exp(-v), 0.1, 20.0, xtol=1e-15)
lower_gap_ref = math.sqrt(1 + u_peak**2) - u_peak - math.exp(-u_peak)
assert abs(lower_gap_ref - 0.11255) < 5e-6 and xq[-1].item() == 60.0
for cq, (g_lo, g_hi) in gap.items():
    h_u = (xq[1] - xq[0]).item() / cq
    assert -1e-13 <= lower_gap_ref - g_lo <= h_u**2 / 100 + 1e-13, (cq, g_lo)
    u_end = 60.0 / cq
    assert abs(g_hi - (0.5 - 1 / (math.sqrt(1 + u_end**2) + u_end))) < 1e-11, (cq, g_hi)
# "the same quadratic ½x² at zero" and "the same asymptote c|x| − c² as D_{c,1/c}, whereas H_c
# approaches c|x| − c²/2", from the closed forms: at u = 1e−3, PH/(x²/2) = 1 − u²/4 + O(u⁴),
# D_{c,1/c}/(x²/2) = 1 − u/3 + u²/12 + O(u³), H_c = x²/2; at u = 1e3, PH − (c|x| − c²) =
# c²/(√(1+u²) + u), D_{c,1/c} − (c|x| − c²) = c²e^{−u} (< 1e−400), H_c − (c|x| − c²) = c²/2.
for cq in gap:
    x0 = torch.tensor(1e-3 * cq, dtype=F64)
    u0, q0 = 1e-3, (x0**2 / 2).item()
    assert abs((cq**2 * barron.general_loss(x0, 1.0, cq)).item() / q0 - (1 - u0**2 / 4)) < 1e-12
    assert abs(losses.kl_huber(x0, cq, 1 / cq).item() / q0 - (1 - u0 / 3 + u0**2 / 12)) < 1e-10
    assert abs(losses.huber(x0, cq).item() / q0 - 1) < 1e-15
    x1 = torch.tensor(1e3 * cq, dtype=F64)
    u1, line = 1e3, (cq * x1 - cq**2).item()
    ph1 = (cq**2 * barron.general_loss(x1, 1.0, cq)).item()
    assert abs((ph1 - line) / (cq**2 / (math.sqrt(1 + u1**2) + u1)) - 1) < 1e-8, cq
    assert abs(losses.kl_huber(x1, cq, 1 / cq).item() - line) < 1e-12 * line, cq
    assert abs((losses.huber(x1, cq).item() - line) / (cq**2 / 2) - 1) < 1e-10, cq

# %% tags=["remove-input"] mystnb={"figure": {"caption": "Pseudo-Huber $c^2\\rho(x, 1, c)$ at $c = 1$ between the paper's lower bound $D_{c,1/c}$ and the Huber loss $H_c$, with the upper bound $D_{c/2,1/c}$ (dashed: the bounds); losses left, derivatives right.", "name": "fig-barron-pseudo-huber"}, "image": {"alt": "Two line plots against x from -5 to 5: four nearly overlapping V-shaped losses, pseudo-Huber between the KL lower bound and the Huber loss, and their four S-shaped derivatives."}}
cq = 1.0
xp = torch.linspace(-5, 5, settings["grid"], dtype=F64, requires_grad=True)
curves = {
    "$H_c$ (Huber)": losses.huber(xp, cq),
    "pseudo-Huber $c^2\\rho(x,1,c)$": cq**2 * barron.general_loss(xp, 1.0, cq),
    "$D_{c,1/c}$ (KL lower bound)": losses.kl_huber(xp, cq, 1 / cq),
    "$D_{c/2,1/c}$ (KL upper bound)": losses.kl_huber(xp, cq / 2, 1 / cq),
}
fig, (ax_l, ax_d) = plt.subplots(1, 2, figsize=(7.0, 3.0))
for i, (label, v) in enumerate(curves.items()):
    (dv,) = torch.autograd.grad(v.sum(), xp)
    ls = "--" if "bound" in label else "-"
    ax_l.plot(xp.detach(), v.detach(), color=color(i), ls=ls, label=label)
    ax_d.plot(xp.detach(), dv, color=color(i), ls=ls, label=label)
ax_l.set(xlabel="x", ylabel="loss", ylim=(0, 4), title="c = 1")
ax_d.set(xlabel="x", ylabel="derivative", title="derivatives")
fig.tight_layout()
fig.legend(*ax_l.get_legend_handles_labels(), loc="lower center", ncol=2, bbox_to_anchor=(0.5, 1.0))
plt.show()

# %% [markdown]
# (barron-toy)=
# ## The adaptive loss on the Section 5 toy problem
#
# Section 5 of {cite}`meyer2021huber` fits a degree-7 polynomial to samples of a degree-5 one
# with heavy-tailed label noise and finds that the best Huber $\alpha$ grows linearly with the
# noise scale. Does the adaptive loss find a good shape and scale by itself? We fit the same
# polynomial with the adaptive loss (α ∈ (0.001, 1.999) and $c$ learnt jointly with the
# coefficients by Adam) for Laplace, logistic and Cauchy noise, and report the learned
# $(\alpha, c)$ and the test RMSE next to L2.
#
# The training data come from the toy chapter's generator {py:func}`klhuber.toy.make_data` (one noise
# draw per family, multiplied by each scale, so that only the scale changes; fewer points at
# the quick profile), the test set is a fresh noise-free sample, and the fits use
# {py:func}`klhuber.related.barron.fit_polynomial` (Adam from a least-absolute-deviation start,
# one cosine-decayed learning rate); the full toy study, with its learning-rate grid and exact solver, is the
# toy-problem chapter's. For reference, the exact minimisers of the Huber loss on a small grid of
# $\alpha$ ({py:func}`klhuber.toy.exact_grid`). With one seed the test-RMSE curves over $\alpha$
# are flat and noisy, so the best grid $\alpha$ of a single case is only indicative.

# %% tags=["hide-input"]
noises = ["laplace", "logistic", "cauchy"]
scales = settings["toy_scales"]
toy_data = toy.make_data(noises, scales, (seed,), n=settings["toy_n"], n_test=16, common_noise=True)
dev = torch.device(device)  # the batched toy fits run on the notebook's device
x_tr = toy_data.x[0].to(dev)
Y = toy_data.y[:, :, 0].reshape(len(noises) * len(scales), -1).to(dev)  # (family, scale) rows
cases = [(nz, sc) for nz in noises for sc in scales]
x_te = torch.as_tensor(np.random.default_rng([seed, 99]).uniform(-toy.DELTA, toy.DELTA, 10_000))
y_te = toy.ground_truth(x_te).to(dev)
x_te = x_te.to(dev)
t0 = time.perf_counter()
toy_l2 = barron.fit_polynomial(x_tr, Y, x_te, y_te, "l2")
toy_ad = barron.fit_polynomial(x_tr, Y, x_te, y_te, "adaptive", steps=settings["toy_steps"])
huber_alphas = [0.01, 0.03, 0.1, 0.3, 1.0, 3.0]
# reference: the exact minimiser of the mean Huber loss for each α (the toy chapter's solver),
# evaluated on the same test set through the toy chapter's own design matrix
exact = toy.exact_grid(toy_data, huber_alphas, loss="huber", progress=False)
phi_te = toy.design_matrix(x_te.cpu(), toy_data.k, toy_data.basis, toy_data.delta)
pred_h = torch.as_tensor(exact.theta[:, :, 0]) @ phi_te.T  # (family, scale, α, test points)
h_rmse = ((pred_h - y_te.cpu()) ** 2).mean(-1).sqrt().reshape(len(cases), len(huber_alphas))
toy_seconds = time.perf_counter() - t0
toy_ad, toy_l2 = toy_ad.to("cpu"), toy_l2.to("cpu")
rows = []
for i, (nz, sc) in enumerate(cases):
    j = int(h_rmse[i].argmin())
    rows.append((nz, sc, f"{toy_l2.test_rmse[i]:.4f}", f"{h_rmse[i, j]:.4f} (α = {huber_alphas[j]})",
                 f"{toy_ad.test_rmse[i]:.4f}", f"{toy_ad.alpha[i]:.3f}", f"{toy_ad.scale[i]:.3f}"))
display(md_table(("noise", "scale", "L2 RMSE", "best exact $H_\\alpha$ on grid", "adaptive RMSE",
                  "learned $\\alpha$", "learned $c$"), rows))
display(Markdown(f"{len(cases)} adaptive fits with {settings['toy_steps']} Adam steps and "
                 f"{len(cases) * len(huber_alphas)} exact Huber fits, $N$ = {settings['toy_n']}, in "
                 f"{toy_seconds:.1f} s; the exact solver converged everywhere: "
                 f"**{bool(exact.converged.all())}** (measured)."))

# %% tags=["remove-input"] mystnb={"figure": {"caption": "The adaptive loss on the toy problem, one seed. Left: the learned scale $c$ (circles) and the best Huber $\\alpha$ of the exact grid (squares) against the noise scale. Right: the learned shape $\\alpha$, smallest for Cauchy noise.", "name": "fig-barron-toy"}, "image": {"alt": "Two log-scale plots against the noise scale for Laplace, logistic and Cauchy noise: the learned scale c rising in proportion to the noise, with the best grid alphas, and the learned shape alpha, nearly flat per noise family."}}
fig, (ax_c, ax_a) = plt.subplots(1, 2, figsize=(7.0, 3.2))
for k, nz in enumerate(noises):
    idx = [i for i, (n_, _) in enumerate(cases) if n_ == nz]
    ax_c.plot(scales, toy_ad.scale[idx], "o-", color=color(k), label=f"{nz}: learned c")
    best = [huber_alphas[int(h_rmse[i].argmin())] for i in idx]
    ax_c.plot(scales, best, "s:", color=color(k), alpha=0.6, label=None)
    ax_a.plot(scales, toy_ad.alpha[idx], "o-", color=color(k), label=nz)
ax_c.set(xlabel="noise scale", ylabel="c  /  best α", xscale="log", yscale="log",
         title="learned scale")
ax_a.set(xlabel="noise scale", ylabel="learned α (shape)", xscale="log", ylim=(0, 2),
         title="learned shape")
ax_a.legend()
fig.tight_layout()
plt.show()

# %% tags=["hide-input"]
mean_alpha = {nz: float(toy_ad.alpha[[i for i, (n_, _) in enumerate(cases) if n_ == nz]].mean())
              for nz in noises}
scale_increases = all(
    bool((toy_ad.scale[[i for i, (n_, _) in enumerate(cases) if n_ == nz]].diff() > 0).all())
    for nz in noises)
ratio = (toy_ad.test_rmse / h_rmse.min(dim=1).values).max().item()
c_ratio = {nz: [round(float(toy_ad.scale[i]) / sc, 3) for i, (n_, sc) in enumerate(cases) if n_ == nz]
           for nz in noises}
display(md_table(
    ("noise", "mean learned $\\alpha$", "learned $c$ / noise scale"),
    [(nz, f"{mean_alpha[nz]:.3f}", ", ".join(f"{v:.3f}" for v in c_ratio[nz])) for nz in noises]))
display(Markdown(f"$c$ increases with the noise scale for every noise: **{scale_increases}**; worst "
                 f"adaptive RMSE / best-grid Huber RMSE: **{ratio:.2f}** (measured)."))
toy_ok = (mean_alpha["cauchy"] < mean_alpha["laplace"] < mean_alpha["logistic"]
          and scale_increases and ratio < 1.5)
assert toy_ok

# %% tags=["remove-cell"]
# The next paragraph's claims, with explicit tolerances (measured at the quick profile: α spreads
# 0.16 / 0.25 / 0.17 over the scales, c/scale within a factor 1.10 / 1.11 / 1.34, L2 RMSE ≥ 33× the
# adaptive RMSE under Cauchy noise; the full profile, with more scales, is not measured here, so
# the limits keep a margin). "α moves less with the scale than between families": per family,
# the range of α over the scales does not overlap the neighbouring family's. "c grows in
# proportion": per family, the ratios c/scale agree within a factor 2.
# "L2 is far worse under Cauchy noise": at every scale at least 10× the adaptive RMSE.
alpha_of = {nz: toy_ad.alpha[[i for i, (n_, _) in enumerate(cases) if n_ == nz]] for nz in noises}
assert alpha_of["cauchy"].max() < alpha_of["laplace"].min(), alpha_of
assert alpha_of["laplace"].max() < alpha_of["logistic"].min(), alpha_of
assert all(max(v) / min(v) < 2 for v in c_ratio.values()), c_ratio
cauchy_rows = [i for i, (n_, _) in enumerate(cases) if n_ == "cauchy"]
assert all(toy_l2.test_rmse[i] > 10 * toy_ad.test_rmse[i] for i in cauchy_rows), toy_l2.test_rmse

# %% [markdown]
# So, by itself, the adaptive loss picks a shape that follows the tails of the noise (smallest
# $\alpha$ for Cauchy, largest for logistic). Because one noise draw per family is multiplied by
# each scale, the problem is scale-equivariant: the learned $\alpha$ moves far less with the scale
# than between the noise families (each family's range of α over the scales stays clear of
# the others', asserted) and $c$ grows nearly in proportion to it
# (ratios $c/\text{scale}$ printed above, within a factor 2 of each other per family) — the
# behaviour the KL interpretation asks of the transition point, obtained here without a search.
# Its test error stays within a factor 1.5 of the best exact Huber fit on the grid (ratio printed
# above); L2 is far worse under Cauchy noise (over 10 times the adaptive loss's test RMSE).

# %% tags=["remove-cell"]
elapsed = time.perf_counter() - t_start
_ = recorder.record(
    "seed003",
    paper=("ρ(x, α, c) with special cases L2 / pseudo-Huber / Cauchy / Geman–McClure / Welsch; "
           "adaptive α; demo: slope 0.7, shift 0.15, σ 0.025, 10 % outliers, Adam 0.01 × 2000"),
    ours=(f"special cases ≤ {max(special_errors.values()):.0e} rel. (float64), near-singular α ≤ "
          f"{max(near_errors):.0e}; ∫p = 1 ± {mass_err:.0e} on {len(masses)} (α, c); demo: adaptive "
          f"slope {ad.slope:.3f}, shift {ad.shift:.3f}, learned α = {ad.alpha:.3f}, "
          f"c = {ad.scale:.4f} (L2 slope {fits['L2'][0].slope:.3f}); toy: learned α follows the "
          f"tails (mean {mean_alpha['cauchy']:.2f} Cauchy < {mean_alpha['laplace']:.2f} Laplace < "
          f"{mean_alpha['logistic']:.2f} logistic), c grows with the noise scale"),
    status="verified",
    check=bool(special_ok and gradcheck_ok and mass_err < 1e-6 and demo_ok and sandwich and toy_ok),
    anchor="barron",
    note=f"{profile} profile {elapsed:.0f} s",
)

# %% [markdown]
# ## Library functions used
#
# {py:func}`klhuber.related.barron.general_loss`,
# {py:func}`klhuber.related.barron.general_loss_derivative`,
# {py:func}`klhuber.related.barron.log_partition`, {py:func}`klhuber.related.barron.nll`,
# {py:func}`klhuber.related.barron.density`, {py:class}`klhuber.related.barron.AdaptiveLoss`,
# {py:func}`klhuber.related.barron.outlier_line_data`, {py:func}`klhuber.related.barron.fit_line`,
# {py:func}`klhuber.related.barron.fit_polynomial`, {py:func}`klhuber.toy.make_data`,
# {py:func}`klhuber.toy.exact_grid`, {py:func}`klhuber.toy.design_matrix`,
# {py:func}`klhuber.losses.huber`, {py:func}`klhuber.losses.kl_huber`,
# {py:class}`klhuber.book.scorecard.Recorder`.
