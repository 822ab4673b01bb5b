# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
#   mystnb:
#     render_markdown_format: myst
# ---

# %% [markdown]
# (faster-rcnn-loss)=
# # Reading Faster R-CNN's loss
#
# Section 6 of {cite}`meyer2021huber` reads the box-regression loss of Faster R-CNN
# {cite}`ren2015faster` through the bounds of {ref}`bounds`: after undoing the box
# parameterisation, $(\lambda/\alpha)H_\alpha$ of a normalised target is a KL divergence between
# a label distribution and a prediction distribution whose scales are fractions of the anchor
# size. This chapter derives those scales symbolically (eq. 22–32) — exactly for the centre,
# to first order for the log-width — regenerates the paper's Table 2 from them, quantifies the
# linear width target of Appendix D, and ends with a summary of every claim checked in the
# theory chapters.
#
# **Run time**: quick ≈ 10 s on 2 CPU cores (it re-runs all theory checks for the summary);
# full ≈ 15 s. Re-run it alone: `klhuber book run faster_rcnn_loss --profile quick`.

# %% tags=["parameters"]
profile = "quick"  # "quick" (laptop, minutes) or "full" (paper scale)
device = "cpu"  # "cpu" or "cuda"
seed = 0
artefacts_dir = None  # set by the book runner: where scorecard rows are written
results_dir = "../results"  # committed full-profile results (GPU runs) live here

# %%
import matplotlib.pyplot as plt
import numpy as np
import sympy as sp
from IPython.display import Markdown, display

from klhuber import symbolic
from klhuber.paper_values import tables as paper
from klhuber.plotting import color, use_style
from klhuber.scorecard import Recorder

use_style()
recorder = Recorder("faster_rcnn_loss", artefacts_dir, profile, device)
settings = {"quick": {"dense_points": 300, "minimax_grid": 60},
            "full": {"dense_points": 5000, "minimax_grid": 300}}[profile]

# %% [markdown]
# ## Centre coordinates (eq. 22–26)
#
# The target for the centre's $x$-coordinate is the offset from the anchor in anchor widths,
#
# ```{math}
# :label: faster-rcnn-loss-eq22
# t_x^* = \frac{x^* - x_a}{w_a},
# ```
#
# and the implementation normalises it with constants $\mu_x$, $\sigma_x$ (eq. 24),
# $\tilde t_x^* = (t_x^* - \mu_x)/\sigma_x$. The residual is then an exact rescaling of the
# distance between the decoded prediction $\tilde x = (t_x\sigma_x + \mu_x)w_a + x_a$ and the
# ground truth (eq. 25), so eq. 21 gives
#
# ```{math}
# :label: faster-rcnn-loss-eq26
# \frac{\lambda}{\alpha} H_\alpha(t_x - \tilde t_x^*) \approx
#   D_{\alpha\sigma_x w_a,\ \sigma_x w_a/\lambda}(\tilde x - x^*):
# ```
#
# a label distribution of scale $\alpha\sigma_x w_a$ and a prediction distribution of scale
# $\sigma_x w_a/\lambda$, with "≈" meaning the sandwich of eq. 20 (the upper bound has label scale
# $\alpha\sigma_x w_a/2$). The paper's publication loss $\lambda H_1(t_x - t_x^*)$ (eq. 23) is the
# special case $\alpha = \sigma_x = 1$, $\mu_x = 0$.

# %%
center = symbolic.claim_center_interpretation()
display(center)
assert center.holds, center.detail

# %% [markdown]
# ## Width and height (eq. 27–32)
#
# The width target is logarithmic, $t_w^* = \log(w^*/w_a)$ (eq. 27), normalised as in eq. 28, and
# the residual is exactly a difference of logarithms,
#
# ```{math}
# :label: faster-rcnn-loss-eq29
# t_w - \tilde t_w^* = \frac{\log\tilde w - \log w^*}{\sigma_w},
#   \qquad \tilde w = \exp(t_w\sigma_w + \mu_w)\,w_a .
# ```
#
# With the first-order approximation $\log(w^*/w_a) \approx w^*/w_a - 1$ (eq. 30) the paper obtains
#
# ```{math}
# :label: faster-rcnn-loss-eq32
# \frac{\lambda}{\alpha} H_\alpha(t_w - \tilde t_w^*) \approx
#   D_{\alpha\sigma_w,\ \sigma_w/\lambda}(\log\tilde w - \log w^*) \approx
#   D_{\alpha\sigma_w w_a,\ \sigma_w w_a/\lambda}(\tilde w - w^*).
# ```
#
# The check expands the residual about $\tilde w = w^* = w_a$: the first-order term is
# $(\tilde w - w^*)/(\sigma_w w_a)$ and the second-order term shows its relative error,
# $\approx (\tilde w + w^*)/(2w_a) - 1$. It also records an exact form (ours): since
# $\log\tilde w - \log w^* = (\tilde w - w^*)/L$ with $L$ the *logarithmic mean* of $\tilde w$ and
# $w^*$, eq. 32 holds exactly with $w_a$ replaced by $L$, a width between the prediction and the
# ground truth.

# %%
size = symbolic.claim_size_interpretation()
display(size)
assert size.holds, size.detail

# %% [markdown]
# The formulas, as {py:func}`klhuber.symbolic.interpreted_scales` returns them (the case study's
# interpretation code is tested against these):

# %%
rows = ["| coordinate | label scale | prediction scale |", "|---|---|---|"]
for coordinate, (label, prediction) in symbolic.interpreted_scales().items():
    rows.append(f"| {coordinate} | ${sp.latex(label)}$ | ${sp.latex(prediction)}$ |")
display(Markdown("\n".join(rows)))

# %% [markdown]
# (faster-rcnn-loss-table2)=
# ## Table 2 from the formulas
#
# Evaluating the formulas at the hyper-parameters of the paper's Table 1 regenerates its Table 2.
# Each cell shows the value computed here and, after the slash, the value printed in the paper
# (labelled *paper*); the check compares all 80 cells exactly.

# %%
table2 = symbolic.claim_table2()
display(table2)
assert table2.holds, table2.detail

computed = symbolic.table2_from_formulas()
columns = [(preset, stage) for preset in paper.PRESET_COLUMNS for stage in paper.STAGES]
header = "| scale | " + " | ".join(f"{preset} {stage}" for preset, stage in columns) + " |"
lines = [header, "|---" * (len(columns) + 1) + "|"]
for row in paper.TABLE2_ROWS:
    cells = [f"${sp.latex(computed[preset][stage][row])}$ / {paper.TABLE2_PRINTED[preset][stage][row]}"
             for preset, stage in columns]
    lines.append(f"| {row} | " + " | ".join(cells) + " |")
display(Markdown("**Table 2** — computed from eq. 26/32 (ours) / printed (paper); "
                 "`*` rows: label scale, `~` rows: prediction scale.\n\n" + "\n".join(lines)))

# %% [markdown]
# ## The linear width target (Appendix D)
#
# Appendix D trains Faster R-CNN with $t_w^* = w^*/w_a - 1$ (eq. 89) instead of the logarithm, to
# validate eq. 30 experimentally (Table 5, see the detector chapters). For the linear target the
# residual is *exactly* $(\tilde w - w^*)/(\sigma_w w_a)$, so eq. 32 becomes exact. How far apart
# are the two targets? With $r = w^*/w_a$, the difference $e(r) = (r - 1) - \log r$ is second
# order, with the exact bounds
#
# ```{math}
# :label: faster-rcnn-loss-appd-bound
# \frac{(r-1)^2}{2\max(1, r)^2} \le (r - 1) - \log r \le \frac{(r-1)^2}{2\min(1, r)^2}.
# ```

# %%
linear = symbolic.claim_linear_target()
display(linear)
assert linear.holds, linear.detail

# %%
e_expr = linear.expressions["e(r)"]
(r_sym,) = e_expr.free_symbols
e_fn = sp.lambdify(r_sym, e_expr, "numpy")
ratios = np.linspace(0.4, 2.5, 400)
fig, ax = plt.subplots(figsize=(6.0, 3.4))
ax.plot(ratios, ratios - 1, color=color(0), label="linear target r − 1")
ax.plot(ratios, np.log(ratios), color=color(1), label="log target log r")
ax.fill_between(ratios, np.log(ratios), ratios - 1, color=color(2), alpha=0.25,
                label="difference e(r)")
for r_edge in (0.5, 2.0):
    ax.axvline(r_edge, color="0.5", ls=":", lw=0.8)
ax.set(xlabel="r = w*/w_a", ylabel="target (σ = 1, μ = 0)",
       title="Appendix D: linear vs log width target")
ax.legend()
plt.show()
assert np.all(e_fn(ratios) >= 0)

# %% [markdown]
# The dotted lines mark $r = 1/2$ and $r = 2$, where a width-only change of a box centred on its
# anchor has IoU 0.5, the loosest matching threshold. There the two targets differ by 28 % and
# 44 % of the log target: eq. 30 is a first-order statement and the matching threshold does not
# make the difference small, which is worth keeping in mind when reading Table 5.

# %%
_ = recorder.record("eq22-32",
                    paper="λ/α H_α ≈ D_{ασw_a, σw_a/λ} for x, y (eq. 26) and w, h (eq. 32); Table 2",
                    ours=("eq. 23/25/29 exact; x, y exact via eq. 21; w, h first order (error term "
                          "−(a²−b²)ε²/(2σ)); exact with the log-mean width; Table 2: 80/80 cells"),
                    status="verified", check=center.holds and size.holds and table2.holds,
                    anchor="faster-rcnn-loss", note=size.paper_note)

# %% [markdown]
# (faster-rcnn-loss-summary)=
# ## Summary of the theory chapters
#
# Every statement checked in {ref}`regression-to-kl`, {ref}`laplace-kl`, {ref}`bounds` and this
# chapter, re-run here (the build fails if any does not hold). *Ours* marks results beyond the
# paper.

# %%
results = symbolic.verify_all(**settings)
display(Markdown(symbolic.summary_markdown(results)))
display(Markdown(f"**{sum(r.holds for r in results)} of {len(results)} claims hold**, "
                 f"checked in {sum(r.seconds for r in results):.1f} s (measured)."))
assert len(results) >= 12 and all(r.holds for r in results)

# %% [markdown]
# Where the paper's own steps are wrong or imprecise (none of these changes a result):

# %%
display(Markdown(symbolic.paper_notes_markdown(results)))

# %% [markdown]
# ## Library functions used
#
# {py:func}`klhuber.symbolic.claim_center_interpretation`,
# {py:func}`klhuber.symbolic.claim_size_interpretation`, {py:func}`klhuber.symbolic.claim_table2`,
# {py:func}`klhuber.symbolic.table2_from_formulas`, {py:func}`klhuber.symbolic.interpreted_scales`,
# {py:func}`klhuber.symbolic.claim_linear_target`, {py:func}`klhuber.symbolic.verify_all`,
# {py:func}`klhuber.symbolic.summary_markdown`,
# {py:func}`klhuber.symbolic.paper_notes_markdown`.
