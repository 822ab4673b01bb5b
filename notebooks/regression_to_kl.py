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
# (regression-to-kl)=
# # From regression to KL divergence
#
# Regression with a loss $\mathcal L$ is maximum-likelihood estimation for the noise density
# $\propto e^{-\mathcal L}$. {cite}`meyer2021huber` (Sections 3.2 and 4) replaces the likelihood of
# a noisy label by the KL divergence between a *label* distribution and a *prediction*
# distribution. This chapter restates eq. 5–14 and checks each step with sympy: the Gaussian
# negative log-likelihood is the $L_2$ loss, the KL divergence differs from the cross entropy by
# a constant, and a noise-free (Dirac) label turns the cross entropy back into the negative
# log-likelihood.
#
# **Run time**: quick ≈ 5 s on 2 CPU cores; full: the same (everything here is exact algebra).
# Re-run it alone: `klhuber book run regression_to_kl --profile quick`.

# %% tags=["parameters", "remove-cell"]
profile = "quick"  # "quick" (laptop, minutes) or "full" (paper scale)
device = "cpu"  # "cpu" or "cuda"
seed = 0
artefacts_dir = None  # set by the book runner: where scorecard rows are written
results_dir = "../results"  # committed full-profile results (GPU runs) live here

# %% tags=["remove-cell"]
from IPython.display import display

from klhuber import symbolic
from klhuber.book.scorecard import Recorder

recorder = Recorder("regression_to_kl", artefacts_dir, profile, device)

# %% [markdown]
# ## Maximum likelihood and the $L_2$ loss
#
# Model the data as $y_i = F_\theta(x_i) + \epsilon$ (eq. 5). Maximising the likelihood is
# minimising the negative log-likelihood,
#
# (regression-to-kl-eq6)=
# ```{math}
# :nowrap:
# \begin{equation}
# \begin{aligned}
# \hat\theta &= \arg\max_\theta \prod_{i=0}^N p(y_i \mid x_i, \theta)\\
#            &= \arg\min_\theta -\sum_{i=0}^N \log p(y_i \mid x_i, \theta).
# \end{aligned} \tag{6}
# \end{equation}
# ```
#
# For zero-mean Gaussian noise of standard deviation $\sigma$ (eq. 7),
#
# (regression-to-kl-eq8)=
# ```{math}
# -\log p(y_i \mid x_i, \theta) = \log\sqrt{2\pi\sigma^2}
#   + \frac{(y_i - F_\theta(x_i))^2}{2\sigma^2}, \tag{8}
# ```
#
# so for a fixed $\sigma$ the minimiser of {ref}`(6) <regression-to-kl-eq6>` is the least-squares
# estimate (eq. 9). The check below integrates the density, differentiates the negative
# log-likelihood and compares its gradient with that of the squared residual.

# %% tags=["remove-input"]
gaussian = symbolic.claim_gaussian_nll()
display(gaussian)
assert gaussian.holds, gaussian.detail

# %% [markdown]
# ## Noisy labels: minimise a KL divergence
#
# The paper's model has a hidden true value $y_i^*$ seen through a noisy label and through the
# model's prediction (eq. 10–11):
#
# (regression-to-kl-eq10)=
# ```{math}
# y_i^* = y_i + \epsilon_1, \qquad y_i^* = F_\theta(x_i) + \epsilon_2 . \tag{10, 11}
# ```
#
# Instead of a likelihood of the hidden $y_i^*$ one minimises the KL divergence between the label
# distribution $p(y_i^* \mid y_i)$ and the prediction distribution $q(y_i^* \mid x_i, \theta)$,
#
# (regression-to-kl-eq12)=
# ```{math}
# :nowrap:
# \begin{equation}
# \begin{aligned}
# \hat\theta &= \arg\min_\theta \sum_{i=0}^N D\big(p(y_i^*\mid y_i)\,\|\,q(y_i^*\mid x_i,\theta)\big)\\
#  &= \arg\min_\theta -\sum_{i=0}^N \int_{-\infty}^{\infty} p(y_i^*\mid y_i)
#    \log q(y_i^*\mid x_i,\theta)\, dy_i^* ,
# \end{aligned} \tag{12}
# \end{equation}
# ```
#
# because $D(p\|q) = H(p, q) - H(p)$ (eq. 33) and the entropy $H(p)$ does not depend on $\theta$.
# With Laplace noise on both sides (eq. 13–14),
#
# (regression-to-kl-eq13)=
# ```{math}
# :nowrap:
# \begin{equation}
# \begin{aligned}
# p(y_i^*\mid y_i) &= \frac{1}{2b_1} e^{-|y_i^* - y_i|/b_1},\\
# q(y_i^*\mid x_i,\theta) &= \frac{1}{2b_2} e^{-|y_i^* - F_\theta(x_i)|/b_2}.
# \end{aligned} \tag{13, 14}
# \end{equation}
# ```
#
# The paper states without proof that a Dirac label turns {ref}`(12) <regression-to-kl-eq12>` into the
# negative log-likelihood. We make "Dirac" precise as the limit $b_1 \to 0^+$ of the Laplace
# label {ref}`(13, 14) <regression-to-kl-eq13>`, for a Laplace prediction and for a Gaussian one (where the
# limit is exactly {ref}`(8) <regression-to-kl-eq8>`).

# %% tags=["remove-input"]
kl_ce = symbolic.claim_kl_cross_entropy()
display(kl_ce)
assert kl_ce.holds, kl_ce.detail

# %% [markdown]
# For a Laplace label of scale $b_1$ and a Gaussian prediction the cross entropy is
# $\log\sqrt{2\pi\sigma^2} + \big((y - F)^2 + 2b_1^2\big)/(2\sigma^2)$: label noise only adds a
# constant, so with Gaussian predictions it does not change the minimiser. The Laplace–Laplace
# case of the next chapter is different: there the label scale changes the *shape* of the loss.

# %% tags=["remove-cell"]
_ = recorder.record(
    "eq8-14",
    paper="minimising KL = minimising cross entropy; Dirac label ⇒ NLL (eq. 6–14)",
    ours="; ".join(f"{r.name}: {'holds' if r.holds else 'fails'}" for r in (gaussian, kl_ce)),
    status="verified",
    check=gaussian.holds and kl_ce.holds,
    anchor="regression-to-kl",
)

# %% [markdown]
# ## Library functions used
#
# {py:func}`klhuber.symbolic.claim_gaussian_nll`, {py:func}`klhuber.symbolic.claim_kl_cross_entropy`,
# {py:class}`klhuber.symbolic.ClaimResult`, {py:class}`klhuber.book.scorecard.Recorder`.
