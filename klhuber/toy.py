r"""Section 5 of Meyer (CVPR 2021): the polynomial toy problem behind Figure 2.

The paper fits a polynomial with :math:`K = D + 2 = 8` coefficients to
:math:`N = 10\,000` noisy samples :math:`y_i = F_{\theta^*}(x_i) + \epsilon`, :math:`x_i \sim U[-\delta,
\delta]`, :math:`\delta = 2`, :math:`\theta^* = [6, -3, -25, 15, 20, -10]` (leading coefficient first),
by minimising the summed Huber loss :math:`H_\alpha` (eq. 4) with gradient descent, and picks the
learning rate and :math:`\alpha` by grid search on the test RMSE of a noise-free test set.
Figure 2 plots the best :math:`\alpha` against the noise scale for Laplace, Logistic and Cauchy noise.

This module provides

* :func:`make_data` -- seeded data for the three paper families plus Normal and Student-t
  (extensions);
* :func:`gd_grid` -- the paper's solver: gradient descent over the whole grid (family, scale, seed,
  :math:`\alpha`, learning rate) as one batched tensor program on CPU or CUDA, with divergence
  detection (a diverged configuration is marked and never scored), chunked with optional
  checkpoints;
* :func:`exact_grid` -- the exact minimiser of the convex objective by a batched safeguarded
  Newton / IRLS method (no learning rate);
* :func:`asymptotic_variance`, :func:`optimal_alpha_constant` -- the asymptotic variance
  :math:`V(\alpha) = E[\psi_\alpha(\epsilon)^2] / E[\psi_\alpha'(\epsilon)]^2` of the M-estimator and
  the :math:`\alpha` that minimises it, by numerical integration;
* :func:`summarize`, :func:`linear_fit`, :func:`run` -- best :math:`\alpha` per (family, scale)
  over seeds and the linear fits of Figure 2; :func:`plot_fig2`, :func:`plot_rmse_curves`;
* the command line ``klhuber toy --profile quick|full --device cpu|cuda --out DIR``.

Losses: ``"huber"`` is :math:`H_\alpha` (:func:`klhuber.losses.huber`), ``"kl"`` is
:math:`D_{\alpha,1/\alpha}` (eq. 16, :func:`klhuber.losses.kl_huber`), the lower bound of eq. 20,
and ``"l1"``/``"l2"`` are the two limits :math:`\alpha \to 0` and :math:`\alpha \to \infty`.

Choices the paper leaves open (all parameters of :class:`ToyConfig`):

* **Features.**  The polynomial is represented in a basis of :math:`t = x/\delta \in [-1, 1]`:
  ``"legendre"`` (default) uses :math:`\sqrt{2k+1}\,P_k(t)`, orthonormal under the uniform
  distribution, so the Gram matrix is close to the identity and gradient descent is well
  conditioned; ``"scaled"`` uses :math:`t^k`; ``"monomial"`` the raw :math:`x^k` (the most literal
  reading of the paper, very ill conditioned).  All bases span the same functions, so the exact
  minimiser and the test RMSE do not depend on the basis; only gradient descent does.
* **Objective.**  The *mean* loss over the :math:`N` points (same minimiser as the sum).  Learning
  rates are given relative to :math:`1/\lambda_{\max}` of the training Gram matrix
  :math:`\Phi^\top\Phi/N`, so a relative rate of 1 is the classic step size of the quadratic.
* **Initialisation** :math:`\theta = 0`; a fixed number of iterations.
* **Seeds.**  Training inputs and the test set depend on the seed only; the noise depends on
  (seed, family, scale) (independent draws), or on (seed, family) with ``common_noise=True``.
* **Test RMSE** on ``n_test`` noise-free points computed as :math:`\sqrt{d^\top G d}` with
  :math:`d = \theta - \theta^*` and :math:`G` the test Gram matrix (exact, since
  :math:`F_{\theta^*}` lies in the model space when :math:`K \ge D`).

Location-scale equivariance.  Because the model contains :math:`F_{\theta^*}`, writing
:math:`\theta = \theta^* + s\varphi` for noise :math:`s\epsilon_0` gives
:math:`\sum_i H_\alpha(s\epsilon_{0,i} - s\phi_i^\top\varphi) = s^2 \sum_i H_{\alpha/s}(\epsilon_{0,i} -
\phi_i^\top\varphi)`, so the exact minimiser satisfies :math:`\mathrm{RMSE}(s, \alpha) = s\,
\mathrm{RMSE}(1, \alpha/s)`: the best :math:`\alpha` of the *exact* estimator is exactly
proportional to the noise scale for every location-scale family, and its asymptotic value is
:math:`c_f s` with :math:`c_f` from :func:`optimal_alpha_constant`.

Best :math:`\alpha`.  :func:`summarize` reports the best grid :math:`\alpha` of the seed-averaged
test MSE (``curve_best``, with a 68% bootstrap interval over seeds) and the per-seed best
:math:`\alpha` (mean, std); GD uses the best non-diverged learning rate per :math:`\alpha`.

Profiles (:data:`PROFILES`).  ``quick`` (the book on 2 CPU cores): the three paper families,
4 scales, 3 seeds, 11 :math:`\alpha`, 3 learning rates, 150 iterations, GD for :math:`H_\alpha`
only.  ``full``: five families, 12 scales in [0.25, 3], 10 seeds, 40 :math:`\alpha` in
[0.01, 30], 2,000 iterations, GD for every loss plus GD on the raw monomials, with three
learning rates per alpha relative to the loss curvature at that alpha (0.25, 1, 1.8 times
:math:`1/\lambda_{\max}(H_\alpha)`; the reasons are in :class:`ToyConfig`).  On 2 CPU cores the
fused float32 kernel and early retirement of converged runs (:func:`gd_grid`) make it about
20 minutes of wall time when the cores are free (88 minutes measured with other jobs sharing
them): ``OMP_NUM_THREADS=1 klhuber toy --profile full --device cpu [--stop-after-s S]``.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import io
import json
import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "FIG2_R2_THRESHOLD",
    "FamilyVerdict",
    "Figure2Verdict",
    "committed_results",
    "figure2_verdict",
    "BASES",
    "DELTA",
    "FAMILIES",
    "K_PAPER",
    "LOSSES",
    "N_TRAIN",
    "PAPER_FAMILIES",
    "PROFILES",
    "THETA_STAR",
    "ExactResult",
    "GDResult",
    "StoppedEarly",
    "ToyConfig",
    "ToyData",
    "asymptotic_variance",
    "best_alpha",
    "configure_parser",
    "design_matrix",
    "exact_grid",
    "gd_grid",
    "get_config",
    "ground_truth",
    "linear_fit",
    "make_data",
    "optimal_alpha_constant",
    "plot_fig2",
    "plot_rmse_curves",
    "plot_rmse_panels",
    "psi",
    "run",
    "sample_standard_noise",
    "summarize",
    "theory_rmse",
]

#: Ground-truth coefficients of Section 5, leading coefficient first:
#: :math:`F(x) = 6x^5 - 3x^4 - 25x^3 + 15x^2 + 20x - 10`.
THETA_STAR: tuple[float, ...] = (6.0, -3.0, -25.0, 15.0, 20.0, -10.0)
#: Half-width of the input interval.
DELTA = 2.0
#: Training points per experiment.
N_TRAIN = 10_000
#: Number of fitted coefficients, :math:`K = D + 2`.
K_PAPER = len(THETA_STAR) + 2
#: The paper's three noise families (Figure 2 panels a-c).
PAPER_FAMILIES = ("laplace", "logistic", "cauchy")
#: All supported noise families (Normal and Student-t are extensions).
FAMILIES = ("laplace", "logistic", "cauchy", "normal", "student_t")
#: Degrees of freedom of the Student-t noise family.
STUDENT_T_DF = 3.0
#: The losses scored (H_alpha, D_{alpha,1/alpha}, and the limits L1, L2).
LOSSES = ("huber", "kl", "l1", "l2")
ALPHA_LOSSES = ("huber", "kl")
#: Feature bases.
BASES = ("legendre", "scaled", "monomial")
METHODS = ("gd", "exact", "theory")

_FAMILY_ID = {name: i for i, name in enumerate(FAMILIES)}


# ---------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------


def _check_family(family: str) -> str:
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")
    return family


def _check_families(families: Sequence[str]) -> tuple[str, ...]:
    if isinstance(families, str):
        families = (families,)
    families = tuple(families)
    if not families:
        raise ValueError("families must be a non-empty sequence of " + repr(FAMILIES))
    for f in families:
        _check_family(f)
    return families


def _check_loss(loss: str) -> str:
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    return loss


def _check_positive_grid(values: Any, name: str) -> np.ndarray:
    try:
        raw = np.asarray(values)
        if raw.dtype.kind in "bUS":  # booleans and strings are not scales
            raise TypeError
        arr = np.atleast_1d(np.asarray(values, dtype=np.float64))
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a non-empty 1-d sequence of positive numbers, got "
                        f"{values!r}") from None
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-d sequence of positive numbers")
    if not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise ValueError(f"{name} must be finite and > 0 (allowed range (0, inf)), got {arr.tolist()}")
    return arr


def _check_seeds(seeds: Any) -> tuple[int, ...]:
    values = np.atleast_1d(np.asarray(seeds))
    if values.dtype == bool or not (np.issubdtype(values.dtype, np.integer)
                                    or np.issubdtype(values.dtype, np.floating)):
        raise TypeError(f"seeds must be integers >= 0, got {seeds!r}")
    if values.ndim != 1 or not np.all(np.isfinite(values)) or np.any(values != np.round(values)):
        raise ValueError(f"seeds must be a 1-d sequence of integers >= 0 (no fractions), "
                         f"got {values.tolist()}")
    seeds = tuple(int(s) for s in values)
    if not seeds:
        raise ValueError("seeds must be a non-empty sequence of integers")
    if any(s < 0 for s in seeds):
        raise ValueError(f"seeds must be >= 0, got {seeds}")
    return seeds


def _check_finite_at_least(value: Any, name: str, low: float, *, allow_inf: bool = False,
                           strict: bool = False) -> float:
    """A real number >= ``low`` (> with ``strict``), finite unless ``allow_inf``."""
    if isinstance(value, (bool, str)):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    try:
        value = float(value)  # also numpy scalars and 0-d arrays
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a real number, got {value!r}") from None
    bad = (math.isnan(value) or (value == math.inf and not allow_inf)
           or (value <= low if strict else value < low))
    if bad:
        upper = "inf]" if allow_inf else "inf)"
        raise ValueError(f"{name} must be in {'(' if strict else '['}{low:g}, {upper}, "
                         f"got {value!r}")
    return value


#: Largest noise scale :func:`make_data` accepts (its per-scale seed is ``round(scale * 1e9)``,
#: and squared residuals must stay finite in float64).
MAX_SCALE = 1e100


def _check_positive_int(value: Any, name: str, minimum: int = 1) -> int:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
        if not isinstance(value, str):
            raise TypeError(f"{name} must be an integer >= {minimum}, got {value!r}") from None
    if (isinstance(value, (bool, str)) or not math.isfinite(number) or int(value) != value
            or int(value) < minimum):
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------


def ground_truth(x: Tensor | np.ndarray, theta: Sequence[float] = THETA_STAR) -> Tensor | np.ndarray:
    """:math:`F_\\theta(x)` for coefficients ``theta`` given leading coefficient first (Horner)."""
    out = x * 0.0
    for c in theta:
        out = out * x + c
    return out


def sample_standard_noise(family: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` draws of the unit-scale, zero-centred noise of ``family``.

    The scale parameter multiplies these draws: Laplace scale :math:`b`, Logistic scale
    :math:`s`, Cauchy scale :math:`\\gamma`, Normal standard deviation :math:`\\sigma`, and the
    scale of a Student-t with ``STUDENT_T_DF`` degrees of freedom.
    """
    _check_family(family)
    n = _check_positive_int(n, "n")
    if family == "laplace":
        return rng.laplace(0.0, 1.0, n)
    if family == "logistic":
        return rng.logistic(0.0, 1.0, n)
    if family == "cauchy":
        return rng.standard_cauchy(n)
    if family == "normal":
        return rng.standard_normal(n)
    return rng.standard_t(STUDENT_T_DF, n)


def design_matrix(x: Tensor, k: int, basis: str = "legendre", delta: float = DELTA) -> Tensor:
    """Features :math:`\\phi_j(x)`, :math:`j = 0..K-1`, as the last dimension of the result.

    ``"legendre"``: :math:`\\sqrt{2j+1}\\,P_j(x/\\delta)`; ``"scaled"``: :math:`(x/\\delta)^j`;
    ``"monomial"``: :math:`x^j`.
    """
    if basis not in BASES:
        raise ValueError(f"basis must be one of {BASES}, got {basis!r}")
    k = _check_positive_int(k, "k")
    t = x if basis == "monomial" else x / delta
    cols = [torch.ones_like(t)]
    if basis == "legendre":
        if k > 1:
            cols.append(t)
        for j in range(2, k):  # Bonnet recursion
            cols.append(((2 * j - 1) * t * cols[-1] - (j - 1) * cols[-2]) / j)
        cols = [c * math.sqrt(2 * j + 1) for j, c in enumerate(cols)]
    else:
        for _ in range(1, k):
            cols.append(cols[-1] * t)
    return torch.stack(cols[:k], dim=-1)


def _theta_star_in_basis(k: int, basis: str, delta: float, theta: Sequence[float]) -> np.ndarray:
    """Coefficients of :math:`F_{\\theta^*}` in ``basis`` (exact interpolation at Chebyshev nodes)."""
    nodes = np.cos(np.pi * (np.arange(4 * k) + 0.5) / (4 * k)) * delta
    x = torch.as_tensor(nodes, dtype=torch.float64)
    phi = design_matrix(x, k, basis, delta).numpy()
    sol, *_ = np.linalg.lstsq(phi, ground_truth(nodes, theta), rcond=None)
    return sol


@dataclass
class ToyData:
    """Training/test data of a grid of (family, scale, seed), in a given feature basis.

    Shapes: ``x`` (seeds, N); ``y`` (families, scales, seeds, N); ``phi`` (seeds, N, K);
    ``gram_test`` (seeds, K, K) = :math:`\\Phi_{test}^\\top\\Phi_{test}/n_{test}`;
    ``theta_star`` (K,) in the basis.  All float64 on the CPU.
    """

    families: tuple[str, ...]
    scales: np.ndarray
    seeds: tuple[int, ...]
    k: int
    basis: str
    delta: float
    x: Tensor
    y: Tensor
    phi: Tensor
    gram_test: Tensor
    theta_star: Tensor
    theta: tuple[float, ...] = THETA_STAR

    @property
    def n(self) -> int:
        return int(self.x.shape[-1])

    def with_basis(self, basis: str) -> ToyData:
        """The same samples represented in another feature basis."""
        phi = design_matrix(self.x, self.k, basis, self.delta)
        # the test Gram matrix transforms with the change of basis T: phi_new = phi_old T
        t = torch.linalg.lstsq(self.phi[0], phi[0]).solution
        gram = t.mT @ self.gram_test @ t
        ts = torch.as_tensor(_theta_star_in_basis(self.k, basis, self.delta, self.theta))
        return replace(self, basis=basis, phi=phi, gram_test=gram, theta_star=ts)


def make_data(
    families: Sequence[str] = PAPER_FAMILIES,
    scales: Sequence[float] = (1.0,),
    seeds: Sequence[int] = (0,),
    *,
    n: int = N_TRAIN,
    n_test: int = N_TRAIN,
    k: int = K_PAPER,
    basis: str = "legendre",
    delta: float = DELTA,
    theta: Sequence[float] = THETA_STAR,
    common_noise: bool = False,
) -> ToyData:
    """Seeded training and test data for every (family, scale, seed) of a grid.

    Raises ``ValueError`` for an unknown family, a non-positive scale, empty grids, or
    ``k < len(theta)`` (the model must contain the ground truth, :math:`K \\ge D`).
    """
    families = _check_families(families)
    scales = _check_positive_grid(scales, "scales")
    if np.any(scales > MAX_SCALE):
        raise ValueError(f"scales must be in (0, {MAX_SCALE:g}], got {scales.tolist()}")
    seeds = _check_seeds(seeds)
    n = _check_positive_int(n, "n")
    n_test = _check_positive_int(n_test, "n_test")
    k = _check_positive_int(k, "k")
    theta = tuple(float(t) for t in theta)
    if not theta:
        raise ValueError("theta must be non-empty")
    if k < len(theta):
        raise ValueError(f"k must be >= D = len(theta) = {len(theta)} (K >= D), got k={k}")
    if not (delta > 0 and math.isfinite(delta)):
        raise ValueError(f"delta must be finite and > 0, got {delta}")
    xs, xts = [], []
    y = np.empty((len(families), len(scales), len(seeds), n))
    for si, seed in enumerate(seeds):
        x = np.random.default_rng([seed, 0]).uniform(-delta, delta, n)
        xs.append(x)
        xts.append(np.random.default_rng([seed, 1]).uniform(-delta, delta, n_test))
        clean = ground_truth(x, theta)
        for fi, fam in enumerate(families):
            for ci, scale in enumerate(scales):
                key = [seed, 3, _FAMILY_ID[fam]] if common_noise else [
                    seed, 2, _FAMILY_ID[fam], int(round(scale * 1e9))]
                eps = sample_standard_noise(fam, n, np.random.default_rng(key))
                y[fi, ci, si] = clean + scale * eps
    x = torch.as_tensor(np.stack(xs))
    xt = torch.as_tensor(np.stack(xts))
    phi = design_matrix(x, k, basis, delta)
    phit = design_matrix(xt, k, basis, delta)
    gram = phit.mT @ phit / n_test
    ts = torch.as_tensor(_theta_star_in_basis(k, basis, delta, theta))
    return ToyData(families, scales, seeds, k, basis, delta, x, torch.as_tensor(y), phi, gram, ts,
                   theta)


def _test_rmse(theta: Tensor, data: ToyData, seed_dim: int) -> Tensor:
    """Test RMSE of coefficients ``theta`` (..., K) whose dimension ``seed_dim`` indexes seeds."""
    d = theta.to(torch.float64) - data.theta_star.to(theta.device)
    g = data.gram_test.to(theta.device)
    shape = [1] * (theta.dim() - 1)
    shape[seed_dim] = g.shape[0]
    g = g.reshape(*shape, data.k, data.k)
    return torch.einsum("...i,...ij,...j->...", d, g, d).clamp_min(0).sqrt()


# ---------------------------------------------------------------------------------------------
# Losses: value (from klhuber.losses) and influence function psi = rho'
# ---------------------------------------------------------------------------------------------


def _loss_value(r: Tensor, loss: str, alpha: Tensor | float) -> Tensor:
    from klhuber import losses

    if loss == "huber":
        return losses.huber(r, alpha)
    if loss == "kl":
        return losses.kl_huber(r, alpha, 1.0 / alpha)
    if loss == "l1":
        return r.abs()
    return 0.5 * r * r


def _loss_value_fast(r: Tensor, loss: str, alpha: Tensor | float) -> Tensor:
    r"""The same values as :func:`_loss_value` with fewer operations (exact solver's line search).

    ``huber``: with :math:`h = \min(|r|, \alpha)`, :math:`H_\alpha(r) = h(|r| - h/2)`;
    ``kl``: :math:`\alpha^2 (u + \mathrm{expm1}(-u))`, :math:`u = |r|/\alpha` (absolute error of
    a few ulps of :math:`\alpha|r|`, enough to compare line-search candidates).
    """
    if loss == "huber" and not isinstance(alpha, Tensor):  # one fused kernel
        return torch.nn.functional.huber_loss(r, r.new_zeros(()).expand_as(r), reduction="none",
                                              delta=alpha)
    a = r.abs()
    if loss == "huber":
        h = torch.minimum(a, alpha)
        return h * (a - 0.5 * h)
    if loss == "kl":
        u = a / alpha
        return (u + torch.expm1(-u)) * (alpha * alpha)
    return _loss_value(r, loss, alpha)


def psi(r: Tensor, loss: str, alpha: Tensor | float = 1.0) -> Tensor:
    """Influence function :math:`\\psi = \\rho'` of each loss (the gradient used by GD).

    ``huber``: :math:`\\psi_\\alpha(r) = \\mathrm{clamp}(r, -\\alpha, \\alpha)`;
    ``kl`` (:math:`D_{\\alpha,1/\\alpha}`): :math:`\\alpha\\,\\mathrm{sign}(r)(1 - e^{-|r|/\\alpha})`;
    ``l1``: :math:`\\mathrm{sign}(r)`; ``l2`` (:math:`r^2/2`): :math:`r`.
    """
    _check_loss(loss)
    if loss == "huber":
        if isinstance(alpha, Tensor):
            return torch.clamp(r, min=-alpha, max=alpha)
        return r.clamp(-alpha, alpha)
    if loss == "kl":
        return -alpha * torch.expm1(-r.abs() / alpha) * torch.sign(r)
    if loss == "l1":
        return torch.sign(r)
    return r


def _psi_inplace(r: Tensor, loss: str, alpha: Tensor) -> Tensor:
    if loss == "huber":
        return torch.clamp(r, min=-alpha, max=alpha, out=r)
    if loss == "l2":
        return r
    if loss == "l1":
        return r.sign_()
    s = torch.sign(r)
    return r.abs_().div_(alpha).neg_().expm1_().mul_(s).mul_(-alpha)


# ---------------------------------------------------------------------------------------------
# Gradient descent over the grid (paper's solver)
# ---------------------------------------------------------------------------------------------


@dataclass
class GDResult:
    """GD over (family, scale, seed, alpha, lr); arrays shaped (F, S, seeds, A, L[, K]).

    ``status``: 0 ran to the end, 1 converged early (retired: continuing could not have moved
    the test RMSE by more than ``retire_tol`` relative), 2 diverged (never scored: its ``rmse``
    is NaN).  ``stop_iteration``: the iteration at which the configuration stopped
    (``iterations`` for status 0).  ``objective``: final mean loss; ``rmse``: test RMSE;
    ``theta``: final coefficients (basis); ``step_reference``: the eigenvalue the relative
    learning rates divide, per (F, S, seeds, A) (see ``lr_reference`` of :func:`gd_grid`).
    """

    loss: str
    basis: str
    alphas: np.ndarray
    lrs: np.ndarray
    iterations: int
    rmse: np.ndarray
    objective: np.ndarray
    grad_norm: np.ndarray
    status: np.ndarray
    theta: np.ndarray
    wall_time_s: float
    stop_iteration: np.ndarray | None = None
    step_reference: np.ndarray | None = None
    lr_reference: str = "gram"
    retire_tol: float = 0.0
    backend: str = "torch"

    @property
    def diverged(self) -> np.ndarray:
        return self.status == 2

    @property
    def converged_early(self) -> np.ndarray:
        return self.status == 1

    def best_over_lr(self) -> tuple[np.ndarray, np.ndarray]:
        """(rmse, lr index) of the best non-diverged learning rate per (F, S, seed, A); NaN if none."""
        r = np.where(self.diverged, np.inf, self.rmse)
        r = np.where(np.isfinite(r), r, np.inf)
        idx = np.argmin(r, axis=-1)
        best = np.take_along_axis(r, idx[..., None], axis=-1)[..., 0]
        best = np.where(np.isfinite(best), best, np.nan)
        return best, idx


class StoppedEarly(RuntimeError):
    """Raised by :func:`gd_grid` / :func:`run` when ``deadline`` passed before a new chunk started.

    Every finished chunk is in the checkpoint folder, so the same call resumes.
    """


def _lr_reference(phi: Tensor) -> Tensor:
    """:math:`\\lambda_{\\max}(\\Phi^\\top\\Phi/N)` per seed (float64)."""
    gram = phi.mT @ phi / phi.shape[-2]
    return torch.linalg.eigvalsh(gram)[..., -1]


def _curvature_reference(data: ToyData, alphas: np.ndarray, loss: str) -> np.ndarray:
    r""":math:`\lambda_{\max}(H_\alpha)`, :math:`H_\alpha = \Phi^\top \mathrm{diag}(\psi_\alpha'(\hat r))
    \Phi / N`, per (pair, seed, alpha): the curvature of the mean loss at a robust pilot fit.

    :math:`\hat r` are the residuals of a least-absolute-deviations pilot (30 IRLS iterations of
    :func:`_l1_irls`, float64).  ``psi'`` is :math:`1\{|r| \le \alpha\}` for ``huber`` and
    :math:`e^{-|r|/\alpha}` for ``kl``; the result is floored at :math:`10^{-4}
    \lambda_{\max}(\Phi^\top\Phi/N)`.  Other losses: :math:`\lambda_{\max}` of the Gram matrix.
    """
    phi = data.phi.to(torch.float64)
    nseed, n, k = phi.shape
    pairs = len(data.families) * len(data.scales)
    lam_g = _lr_reference(phi)  # (seeds,)
    out = np.broadcast_to(lam_g.numpy()[None, :, None], (pairs, nseed, len(alphas))).copy()
    if loss not in ALPHA_LOSSES:
        return out
    iu = torch.triu_indices(k, k)
    quad = (phi[..., iu[0]] * phi[..., iu[1]]).contiguous()
    y = data.y.reshape(pairs, nseed, n).permute(1, 2, 0).to(torch.float64).contiguous()
    pilot, *_ = _l1_irls(phi, quad, y, 30)
    r = torch.baddbmm(y, phi, pilot, alpha=-1.0).abs()  # (seeds, N, pairs)
    for ai, a in enumerate(alphas):
        w = (r <= a).to(torch.float64) if loss == "huber" else torch.exp(-r / float(a))
        hq = torch.bmm(w.mT, quad) / n  # (seeds, pairs, K(K+1)/2)
        h = torch.zeros(nseed, pairs, k, k, dtype=torch.float64)
        h[:, :, iu[0], iu[1]] = hq
        h[:, :, iu[1], iu[0]] = hq
        lam = torch.linalg.eigvalsh(h)[..., -1]  # (seeds, pairs)
        out[:, :, ai] = torch.maximum(lam, 1e-4 * lam_g[:, None]).mT.numpy()
    return out


# --- fused CPU kernel -------------------------------------------------------------------------

#: C++ source of the fused float32 CPU kernel of :func:`gd_grid` (``backend="kernel"``).  One
#: tile is ``W = 8`` configurations sharing a design matrix and a target vector; per iteration
#: one pass over the N rows computes :math:`r = y - \phi_i^\top\Theta`, :math:`\psi(r)` and
#: :math:`g \mathrel{+}= \phi_i \psi(r)` with :math:`\Theta` and :math:`g` in registers, so
#: nothing of size N x configurations is ever stored (compute-bound, not memory-bound).
_KERNEL_SRC = r"""
#include <cmath>
#include <math.h>
#include <stdint.h>
#define W 8
typedef float v8 __attribute__((vector_size(32)));
typedef int v8i __attribute__((vector_size(32)));
static inline v8 vmin(v8 a, v8 b) { return a < b ? a : b; }
static inline v8 vmax(v8 a, v8 b) { return a > b ? a : b; }
/* exp(x) for x <= 0, inline (no call that would spill the registers): x = n ln2 + f,
   |f| <= ln2/2, exp(f) by its degree-6 Taylor polynomial (relative error < 2e-7). */
static inline v8 vexp(v8 x) {
  const v8 z = {0};
  x = vmax(x, z - 87.0f);
  v8 n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  v8 f = (x - n * 0.693145751953125f) - n * 1.428606765330187e-06f;
  v8 p = z + 1.0f / 720.0f;
  p = p * f + 1.0f / 120.0f; p = p * f + 1.0f / 24.0f; p = p * f + 1.0f / 6.0f;
  p = p * f + 0.5f; p = p * f + 1.0f; p = p * f + 1.0f;
  v8i e = (__builtin_convertvector(n, v8i) + 127) << 23;
  return p * (v8)e;
}
static inline v8 vabs(v8 a) { return a < 0 ? -a : a; }
static inline v8 vpsi(v8 r, v8 a, v8 ia, int loss) {
  const v8 zero = {0}, one = zero + 1.0f;
  if (loss == 0) return vmin(vmax(r, -a), a);
  if (loss == 1) { v8 m = a - a * vexp(-vabs(r) * ia); return r > 0 ? m : (r < 0 ? -m : zero); }
  if (loss == 2) return r > 0 ? one : (r < 0 ? -one : zero);
  return r;
}
static inline double rho1(float r, float a, int loss) {
  double x = fabs((double)r);
  if (loss == 0) { double h = x < a ? x : a; return h * (x - 0.5 * h); }
  if (loss == 1) { double u = x / a; return (double)a * a * (u + expm1(-u)); }
  if (loss == 2) return x;
  return 0.5 * x * x;
}
static inline v8 resid(const float* p, float yi, const v8* t) {
  v8 r = (v8){0} + yi, r2 = (v8){0};
  int k = 0;
  for (; k + 1 < KK; k += 2) { r -= p[k] * t[k]; r2 -= p[k + 1] * t[k + 1]; }
  if (KK & 1) r -= p[KK - 1] * t[KK - 1];
  return r + r2;
}
template <int LOSS>
static void tile(int n, const float* phi, const float* y, float* th, const float* al,
                 const float* st, int iters, float* grad, double* obj, float* last) {
  v8 t[KK], g[KK], d[KK], a, s, ia;
  for (int k = 0; k < KK; k++) for (int w = 0; w < W; w++) { t[k][w] = th[k * W + w]; d[k][w] = 0; }
  for (int w = 0; w < W; w++) { a[w] = al[w]; s[w] = st[w]; ia[w] = 1.0f / al[w]; }
  for (int it = 0; it <= iters; it++) {
    for (int k = 0; k < KK; k++) g[k] = (v8){0};
    for (int i = 0; i < n; i++) {
      const float* p = phi + (int64_t)i * KK;
      v8 r = vpsi(resid(p, y[i], t), a, ia, LOSS);
      for (int k = 0; k < KK; k++) g[k] += p[k] * r;
    }
    if (it == iters) break;
    for (int k = 0; k < KK; k++) { v8 nt = t[k] + s * g[k]; d[k] = nt - t[k]; t[k] = nt; }
  }
  double o[W];
  for (int w = 0; w < W; w++) o[w] = 0.0;
  for (int i = 0; i < n; i++) {
    v8 r = resid(phi + (int64_t)i * KK, y[i], t);
    for (int w = 0; w < W; w++) o[w] += rho1(r[w], a[w], LOSS);
  }
  for (int k = 0; k < KK; k++) for (int w = 0; w < W; w++) {
    th[k * W + w] = t[k][w]; grad[k * W + w] = g[k][w]; last[k * W + w] = d[k][w];
  }
  for (int w = 0; w < W; w++) obj[w] = o[w] / n;
}
extern "C" int kernel_k(void) { return KK; }
extern "C" void gd_tiles(int n, int loss, const float* phi, const float* y, int t0, int t1,
                         const int* tile_seed, const int* tile_y, float* theta, const float* alpha,
                         const float* step, int iters, float* grad, double* obj, float* last) {
  for (int t = t0; t < t1; t++) {
    const float* p = phi + (int64_t)tile_seed[t] * n * KK;
    const float* yy = y + (int64_t)tile_y[t] * n;
    int64_t o = (int64_t)t * KK * W, q = (int64_t)t * W;
    switch (loss) {
      case 0: tile<0>(n, p, yy, theta + o, alpha + q, step + q, iters, grad + o, obj + q, last + o); break;
      case 1: tile<1>(n, p, yy, theta + o, alpha + q, step + q, iters, grad + o, obj + q, last + o); break;
      case 2: tile<2>(n, p, yy, theta + o, alpha + q, step + q, iters, grad + o, obj + q, last + o); break;
      default: tile<3>(n, p, yy, theta + o, alpha + q, step + q, iters, grad + o, obj + q, last + o);
    }
  }
}
"""
_KERNEL_W = 8
_LOSS_CODE = {"huber": 0, "kl": 1, "l1": 2, "l2": 3}


@functools.cache
def _cpu_kernel(k: int) -> Any:
    """The compiled fused kernel for K = ``k`` (ctypes library), or None without a C++ compiler.

    Compiled once per source, K and CPU with ``-O3 -march=native`` (no ``-ffast-math``, which
    would change the floating-point mode of the whole process) and cached in
    ``$KLHUBER_CACHE`` (default ``~/.cache/klhuber``).  ``KLHUBER_NO_KERNEL=1`` disables it.
    """
    import ctypes
    import os
    import platform
    import shutil
    import subprocess
    import tempfile

    if os.environ.get("KLHUBER_NO_KERNEL"):
        return None
    cxx = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
    if not cxx:
        return None
    try:
        cpu = Path("/proc/cpuinfo").read_text().split("\n\n")[0]
    except OSError:
        cpu = ""
    tag = hashlib.sha256("\0".join([_KERNEL_SRC, str(k), cxx, platform.machine(), cpu]).encode())
    cache = Path(os.environ.get("KLHUBER_CACHE", Path.home() / ".cache" / "klhuber"))
    so = cache / f"toy_gd_kernel_{tag.hexdigest()[:16]}.so"
    if not so.exists():
        base = [cxx, "-O3", "-march=native", "-fno-math-errno", "-fno-trapping-math", "-shared",
                "-fPIC", f"-DKK={k}"]
        try:
            cache.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=cache) as tmp:
                src = Path(tmp) / "kernel.cpp"
                src.write_text(_KERNEL_SRC)
                out = Path(tmp) / "kernel.so"
                proc = subprocess.run(base + ["-o", str(out), str(src), "-lm"], capture_output=True,
                                      timeout=300)
                if proc.returncode != 0:
                    return None
                os.replace(out, so)
        except (OSError, subprocess.SubprocessError):
            return None
    lib = ctypes.CDLL(str(so))
    p, i = ctypes.c_void_p, ctypes.c_int
    lib.gd_tiles.argtypes = [i, i, p, p, i, i, p, p, p, p, p, i, p, p, p]
    lib.gd_tiles.restype = None
    return lib if lib.kernel_k() == k else None


def _kernel_threads() -> int:
    """Threads of the fused kernel: ``$KLHUBER_GD_THREADS``, else the usable cores.

    Independent of torch's intra-op threads, so ``OMP_NUM_THREADS=1`` (advisable for torch's
    small ops when other jobs share the cores: spin-waiting OpenMP barriers crawl there) still
    runs the kernel on every core.
    """
    import os

    env = os.environ.get("KLHUBER_GD_THREADS")
    if env:
        return _check_positive_int(int(env), "KLHUBER_GD_THREADS")
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


class _KernelBackend:
    """Runs windows of GD on the active configurations with the fused CPU kernel (float32)."""

    name = "kernel"

    def __init__(self, lib: Any, phi: Tensor, y: Tensor, loss: str, threads: int) -> None:
        self.lib, self.loss, self.threads = lib, _LOSS_CODE[loss], max(1, threads)
        self.phi = np.ascontiguousarray(phi.to(torch.float32).numpy())  # (S, N, K)
        self.npair = y.shape[1]
        self.y = np.ascontiguousarray(y.to(torch.float32).numpy()).reshape(-1, y.shape[-1])
        self.n, self.k = self.phi.shape[1], self.phi.shape[2]

    def advance(self, seed: np.ndarray, pair: np.ndarray, alpha: np.ndarray, step: np.ndarray,
                theta: np.ndarray, iters: int) -> tuple[np.ndarray, ...]:
        from concurrent.futures import ThreadPoolExecutor

        w, k = _KERNEL_W, self.k
        group = seed.astype(np.int64) * self.npair + pair  # sorted: columns ordered by group
        starts = np.r_[0, np.flatnonzero(np.diff(group)) + 1]
        counts = np.diff(np.r_[starts, group.size])
        tiles_per = -(-counts // w)
        first_tile = np.r_[0, np.cumsum(tiles_per)[:-1]]
        rank = np.arange(group.size) - np.repeat(starts, counts)
        tile = np.repeat(first_tile, counts) + rank // w
        lane = rank % w
        nt = int(tiles_per.sum())
        th = np.zeros((nt, k, w), np.float32)
        al = np.ones((nt, w), np.float32)
        st = np.zeros((nt, w), np.float32)
        th[tile, :, lane] = theta
        al[tile, lane] = alpha
        st[tile, lane] = step
        t_seed = np.ascontiguousarray(np.repeat(seed[starts], tiles_per), np.int32)
        t_y = np.ascontiguousarray(np.repeat(group[starts], tiles_per), np.int32)
        grad = np.zeros_like(th)
        last = np.zeros_like(th)
        obj = np.zeros((nt, w), np.float64)

        def call(span: tuple[int, int]) -> None:
            self.lib.gd_tiles(self.n, self.loss, self.phi.ctypes.data, self.y.ctypes.data,
                              span[0], span[1], t_seed.ctypes.data, t_y.ctypes.data,
                              th.ctypes.data, al.ctypes.data, st.ctypes.data, int(iters),
                              grad.ctypes.data, obj.ctypes.data, last.ctypes.data)

        # small spans handed out dynamically (balanced when another process shares the cores)
        nthreads = min(self.threads, nt)
        size = max(1, -(-nt // (8 * nthreads)))
        spans = [(a, min(a + size, nt)) for a in range(0, nt, size)]
        if nthreads == 1:
            for span in spans:
                call(span)
        else:  # ctypes releases the GIL: one Python thread per core
            with ThreadPoolExecutor(nthreads) as pool:
                list(pool.map(call, spans))
        return (th[tile, :, lane].astype(np.float64), grad[tile, :, lane].astype(np.float64),
                obj[tile, lane], last[tile, :, lane].astype(np.float64))


class _TorchBackend:
    """Runs windows of GD with torch (any device and dtype), blocked over rows.

    Per row block: ``r = y[pair] - Phi_blk Theta`` (one ``baddbmm`` for all configurations of a
    seed), :math:`\\psi` in place, ``g += Phi_blk^T psi(r)``; the block is sized so that ``r``
    has at most ``block_elements`` entries (a cache-sized block on the CPU, all rows on CUDA).
    """

    name = "torch"

    def __init__(self, phi: Tensor, y: Tensor, loss: str, block_elements: int) -> None:
        self.phi, self.loss, self.block = phi, loss, block_elements
        self.n = phi.shape[1]
        self.phit = phi.mT.contiguous()
        self.yt = y.permute(0, 2, 1).contiguous()  # (S, N, pairs)

    def advance(self, seed: np.ndarray, pair: np.ndarray, alpha: np.ndarray, step: np.ndarray,
                theta: np.ndarray, iters: int) -> tuple[np.ndarray, ...]:
        phi, dt, dev = self.phi, self.phi.dtype, self.phi.device
        nseed, n, k = phi.shape
        order = np.argsort(seed, kind="stable")
        counts = np.bincount(seed, minlength=nseed)
        m = int(counts.max())
        pos = np.arange(seed.size) - np.repeat(np.r_[0, np.cumsum(counts)[:-1]], counts)
        s_idx, p_idx = seed[order], pos
        th = torch.zeros(nseed, k, m, dtype=dt)
        al = torch.ones(nseed, 1, m, dtype=dt)
        st = torch.zeros(nseed, 1, m, dtype=dt)
        pr = torch.zeros(nseed, 1, m, dtype=torch.long)
        th[s_idx, :, p_idx] = torch.as_tensor(theta[order], dtype=dt)
        al[s_idx, 0, p_idx] = torch.as_tensor(alpha[order], dtype=dt)
        st[s_idx, 0, p_idx] = torch.as_tensor(step[order], dtype=dt)
        pr[s_idx, 0, p_idx] = torch.as_tensor(pair[order])
        th, al, st, pr = (v.to(dev) for v in (th, al, st, pr))
        nb = max(1, min(n, self.block // max(nseed * m, 1)))
        g = torch.zeros(nseed, k, m, dtype=dt, device=dev)
        last = torch.zeros_like(th)
        obj = torch.zeros(nseed, m, dtype=torch.float64, device=dev)
        for it in range(iters + 1):
            g.zero_()
            for r0 in range(0, n, nb):
                r1 = min(n, r0 + nb)
                yb = torch.gather(self.yt[:, r0:r1], 2, pr.expand(nseed, r1 - r0, m))
                r = torch.baddbmm(yb, phi[:, r0:r1], th, alpha=-1.0)
                if it == iters:
                    obj += _loss_value(r, self.loss, al).sum(1, dtype=torch.float64)
                _psi_inplace(r, self.loss, al)
                g.baddbmm_(self.phit[:, :, r0:r1], r)
            if it == iters:
                break
            new = th + st * g
            last = new - th
            th = new
        obj /= n

        def back(v: Tensor) -> np.ndarray:
            return v.cpu().double().numpy()

        inv = np.empty_like(order)
        inv[order] = np.arange(order.size)
        s_o, p_o = s_idx[inv], p_idx[inv]
        return (back(th)[s_o, :, p_o], back(g)[s_o, :, p_o], back(obj)[s_o, p_o],
                back(last)[s_o, :, p_o])


def _check_iterations(iterations: int, check_every: int) -> list[int]:
    """Iterations after which divergence and convergence are checked: early ones (10, 30) for
    divergence, then every ``check_every``, and the last."""
    its = {c for c in (10, 30) if c < iterations}
    its |= set(range(check_every, iterations, check_every))
    return sorted(its | {iterations})


def _gd_chunk(backend: Any, seed: np.ndarray, pair: np.ndarray, alpha: np.ndarray,
              step: np.ndarray, obj0: np.ndarray, loss: str, iterations: int, check_every: int,
              div_factor: float, retire_tol: float, gram: np.ndarray, theta_star: np.ndarray,
              tick: Callable[[int], None] | None) -> dict[str, np.ndarray]:
    r"""GD for C configurations (arrays over columns, ordered by (seed, pair)); returns per column
    ``theta`` (C, K), ``obj``, ``grad_norm``, ``status``, ``stop``.

    After each check iteration (:func:`_check_iterations`) a configuration is *diverged* (status
    2) if its objective or coefficients are not finite, or its objective is above
    ``div_factor`` times its initial value (or, at the end, above its initial value).  It is
    *converged* (status 1) if the rest of the run cannot move the fit by more than
    ``retire_tol`` times its current test RMSE (so the test RMSE cannot change by more than that,
    relative): with :math:`v` the net displacement of :math:`\theta` over the last window (in
    the test-Gram norm, i.e. function space) per iteration and :math:`\rho \le 1` the
    per-iteration contraction of :math:`v` over the last windows (the larger of the last two),
    the remaining movement is estimated by :math:`v \sum_{j=1}^{R} \rho^j` (:math:`v R` when
    it does not contract).  A last step of exactly zero is a fixed point of the iteration
    (rounding included): continuing would change nothing.  Retired configurations leave the
    batch (compaction), so a window only costs what is still running.
    """
    c, k = seed.size, theta_star.size
    theta = np.zeros((c, k))
    prev = np.zeros((c, k))
    obj = obj0.copy()
    grad_norm = np.full(c, np.nan)
    status = np.zeros(c, np.int8)
    stop = np.full(c, iterations, np.int32)
    prev_v = np.full(c, np.nan)
    prev_rho = np.ones(c)
    active = np.arange(c)
    it, prev_w = 0, 0
    for nxt in _check_iterations(iterations, check_every):
        if active.size == 0:
            break
        th, g, ob, last = backend.advance(seed[active], pair[active], alpha[active],
                                          step[active], theta[active], nxt - it)
        if tick is not None:
            tick(nxt - it)
        w, it = nxt - it, nxt
        theta[active], obj[active] = th, ob
        grad_norm[active] = np.linalg.norm(g, axis=1) / backend.n
        with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
            bad = (~np.isfinite(ob) | (ob > div_factor * obj0[active])
                   | ~np.isfinite(th).all(1) | ~np.isfinite(g).all(1))
            if it == iterations:
                bad |= ob > obj0[active]
            gm = gram[seed[active]]
            disp = th - prev[active]
            v = np.sqrt(np.clip(np.einsum("ci,cij,cj->c", disp, gm, disp), 0, None)) / w
            d = th - theta_star
            rmse = np.sqrt(np.clip(np.einsum("ci,cij,cj->c", d, gm, d), 0, None))
            pv = prev_v[active]
            rho = np.where(pv > 0, (v / pv) ** (2.0 / (w + prev_w)), 1.0)
            rho = np.minimum(np.where(np.isfinite(rho), rho, 1.0), 1.0)
            rho_use = np.maximum(rho, prev_rho[active])
            rem = iterations - it
            geo = np.where(rho_use < 1, rho_use * (1 - rho_use**rem)
                           / np.maximum(1 - rho_use, 1e-300), rem)
            fixed = (last == 0).all(1)
            conv = ~bad & (it < iterations) & (fixed | (v * geo <= retire_tol * rmse))
        prev_v[active], prev_rho[active], prev[active] = v, rho, th
        prev_w = w
        done = bad | conv
        status[active[bad]] = 2
        status[active[conv]] = 1
        stop[active[done]] = it
        theta[active[bad]] = 0.0
        active = active[~done]
    if tick is not None and it < iterations:
        tick(iterations - it)
    return {"theta": theta, "obj": obj, "grad_norm": grad_norm, "status": status, "stop": stop}


def _default_max_elements(device: torch.device, dtype: torch.dtype, copies: int,
                          cpu_default: int) -> int:
    """Largest block (elements of the residual tensor) that fits: on CUDA 80% of free memory
    shared by ``copies`` residual-sized tensors; on the CPU a cache-friendly ``cpu_default``."""
    if device.type != "cuda":
        return cpu_default
    free, _ = torch.cuda.mem_get_info(device)
    itemsize = torch.empty((), dtype=dtype).element_size()
    return max(1_000_000, int(0.8 * free / (copies * itemsize)))


def _chunks(total: int, size: int) -> list[tuple[int, int]]:
    return [(i, min(i + size, total)) for i in range(0, total, size)]


def _initial_objective(y: Tensor, alphas: np.ndarray, loss: str) -> np.ndarray:
    """Mean loss at :math:`\\theta = 0` per (pairs, seeds, alpha), float64."""
    y = y.to(torch.float64)
    return np.stack([_loss_value(y, loss, float(a)).mean(-1).numpy() for a in alphas], -1)


def gd_grid(
    data: ToyData,
    alphas: Sequence[float],
    lrs: Sequence[float],
    *,
    loss: str = "huber",
    iterations: int = 1000,
    check_every: int = 100,
    div_factor: float = 10.0,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    max_elements: int | None = None,
    checkpoint_dir: str | Path | None = None,
    progress: bool = True,
    lr_reference: str = "gram",
    retire_tol: float = 1e-6,
    backend: str = "auto",
    deadline: float | None = None,
) -> GDResult:
    """Gradient descent on the mean loss for every (family, scale, seed, alpha, lr) at once.

    The update of every configuration is :math:`\\theta \\mathrel{+}= \\eta / N\\,
    \\Phi^\\top\\psi(y - \\Phi\\theta)` from :math:`\\theta = 0`, with :math:`\\eta =` ``lr`` /
    :math:`\\lambda`: ``lr_reference="gram"`` takes :math:`\\lambda = \\lambda_{\\max}(\\Phi^\\top
    \\Phi/N)` (per seed), ``"curvature"`` the largest eigenvalue of the loss Hessian at
    :math:`\\alpha` at a robust pilot fit (``_curvature_reference``, per family, scale, seed
    and alpha; for ``l1``/``l2`` the Gram matrix), so that a relative rate of 1 is the classic
    step of the local quadratic at every alpha.

    Backends: ``"kernel"`` (CPU, float32) a fused C++ kernel compiled on first use that keeps
    the coefficients and gradients of 8 configurations in registers while it streams the rows;
    ``"torch"`` (any device/dtype) one ``baddbmm`` per block of rows for all configurations of
    a seed (``r`` never exceeds a cache-sized block on the CPU); ``"auto"`` takes the kernel when
    it applies and compiles.  Configurations retire when they diverge or converge (status 1/2,
    see ``_gd_chunk``); they are then removed from the batch.  For ``l1``/``l2`` pass
    ``alphas=[1.0]`` (unused).

    Work is split into chunks of whole (family, scale) pairs (or alpha slices) with at most
    ``max_elements`` = configurations x N; with ``checkpoint_dir`` each finished chunk is saved
    atomically under a key of all inputs and reused on a re-run (resume).  With ``deadline`` (a
    ``time.monotonic()`` value) no chunk starts after it: :class:`StoppedEarly` is raised.
    """
    if progress:  # the notebook-aware bar only when one is shown (no widget warnings)
        from tqdm.auto import tqdm
    else:
        from tqdm import tqdm

    from klhuber.results import atomic_write_bytes

    _check_loss(loss)
    alphas = _check_positive_grid(alphas, "alphas")
    lrs = _check_positive_grid(lrs, "lrs")
    iterations = _check_positive_int(iterations, "iterations")
    check_every = _check_positive_int(check_every, "check_every")
    if lr_reference not in ("gram", "curvature"):
        raise ValueError(f"lr_reference must be 'gram' or 'curvature', got {lr_reference!r}")
    if backend not in ("auto", "kernel", "torch"):
        raise ValueError(f"backend must be 'auto', 'kernel' or 'torch', got {backend!r}")
    if not (retire_tol >= 0):
        raise ValueError(f"retire_tol must be >= 0, got {retire_tol}")
    _check_finite_at_least(div_factor, "div_factor", 1.0, allow_inf=True)
    device = torch.device(device)
    nf, ns, nseed = len(data.families), len(data.scales), len(data.seeds)
    na, nl, k, n = len(alphas), len(lrs), data.k, data.n
    lib = None
    if backend != "torch" and device.type == "cpu" and dtype == torch.float32:
        lib = _cpu_kernel(k)
    if backend == "kernel" and lib is None:
        raise RuntimeError("backend='kernel' needs device='cpu', dtype=float32 and a C++ compiler")
    backend_name = "kernel" if lib is not None else "torch"
    if max_elements is None:
        max_elements = _default_max_elements(device, dtype, 4, 24_000_000)
    per_pair = nseed * n * na * nl
    pairs = nf * ns
    block = max(1, min(pairs, max_elements // max(per_pair, 1)))
    a_block = na if per_pair <= max_elements else max(1, max_elements // (nseed * n * nl))
    tasks = [(p0, p1, a0, a1) for p0, p1 in _chunks(pairs, block) for a0, a1 in _chunks(na, a_block)]
    key = None
    if checkpoint_dir is not None:
        h = hashlib.sha256()
        for part in (data.y.numpy().tobytes(), data.phi.numpy().tobytes(), alphas.tobytes(),
                     lrs.tobytes(), repr((loss, iterations, check_every, div_factor, str(dtype),
                                          block, a_block, lr_reference, retire_tol,
                                          backend_name, "v2")).encode()):
            h.update(part)
        key = h.hexdigest()[:16]
        checkpoint_dir = Path(checkpoint_dir)
    t0 = time.perf_counter()
    y_all = data.y.reshape(pairs, nseed, n)
    if lr_reference == "curvature":
        lam = _curvature_reference(data, alphas, loss)  # (pairs, seeds, A)
    else:
        lam = np.broadcast_to(_lr_reference(data.phi).numpy()[None, :, None],
                              (pairs, nseed, na)).copy()
    gram = data.gram_test.numpy()
    theta_star = data.theta_star.numpy()
    theta_out = np.zeros((pairs, nseed, na, nl, k))
    obj_out = np.full((pairs, nseed, na, nl), np.nan)
    gn_out = np.full((pairs, nseed, na, nl), np.nan)
    status_out = np.zeros((pairs, nseed, na, nl), dtype=np.int8)
    stop_out = np.zeros((pairs, nseed, na, nl), dtype=np.int32)
    phi_dev = data.phi.to(device=device, dtype=dtype)
    block_elements = 1 << 18 if device.type == "cpu" else max_elements
    bar = tqdm(total=len(tasks) * iterations, desc=f"GD {loss}", unit="it", disable=not progress,
               leave=False)
    names = ("theta", "obj", "grad_norm", "status", "stop")
    for ti, (p0, p1, a0, a1) in enumerate(tasks):
        ckpt = None if key is None else checkpoint_dir / f"gd_{loss}_{key}_{ti:04d}.pt"
        npair, nal = p1 - p0, a1 - a0
        shape = (nseed, npair, nal, nl)
        if ckpt is not None and ckpt.exists():
            saved = torch.load(ckpt, map_location="cpu", weights_only=True)
            out = {name: saved[name].numpy() for name in names}
            bar.update(iterations)
        else:
            if deadline is not None and time.monotonic() >= deadline:
                bar.close()
                raise StoppedEarly(f"GD {loss}: deadline reached before chunk {ti + 1}/"
                                   f"{len(tasks)}; {ti} chunks done")
            # columns ordered (seed, pair, alpha, lr): one group per (seed, pair)
            s_i, p_i, a_i, l_i = (v.ravel() for v in np.meshgrid(
                np.arange(nseed), np.arange(p0, p1), np.arange(a0, a1), np.arange(nl),
                indexing="ij"))
            y = y_all[p0:p1].permute(1, 0, 2)  # (seeds, npair, N)
            step = lrs[l_i] / lam[p_i, s_i, a_i] / n
            obj0 = _initial_objective(y_all[p0:p1], alphas[a0:a1], loss)[p_i - p0, s_i, a_i - a0]
            if lib is not None:
                be: Any = _KernelBackend(lib, data.phi, y, loss, _kernel_threads())
            else:
                be = _TorchBackend(phi_dev, y.to(device=device, dtype=dtype), loss,
                                   block_elements)
            res = _gd_chunk(be, s_i, p_i - p0, alphas[a_i], step, obj0, loss, iterations,
                            check_every, div_factor, retire_tol, gram, theta_star, bar.update)
            # back to (pairs, seeds, alphas, lrs) order
            out = {name: v.reshape(*shape, *v.shape[1:]).swapaxes(0, 1)
                   for name, v in res.items()}
            if ckpt is not None:
                buf = io.BytesIO()
                torch.save({name: torch.as_tensor(np.ascontiguousarray(v))
                            for name, v in out.items()}, buf)
                atomic_write_bytes(ckpt, buf.getvalue())
        theta_out[p0:p1, :, a0:a1] = out["theta"]
        obj_out[p0:p1, :, a0:a1] = out["obj"]
        gn_out[p0:p1, :, a0:a1] = out["grad_norm"]
        status_out[p0:p1, :, a0:a1] = out["status"]
        stop_out[p0:p1, :, a0:a1] = out["stop"]
    bar.close()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    wall = time.perf_counter() - t0
    shape = (nf, ns, nseed, na, nl)
    theta_t = torch.as_tensor(theta_out.reshape(*shape, k))
    rmse = _test_rmse(theta_t, data, seed_dim=2).numpy()
    status = status_out.reshape(shape)
    rmse = np.where(status == 2, np.nan, rmse)
    return GDResult(loss, data.basis, alphas, lrs, iterations, rmse, obj_out.reshape(shape),
                    gn_out.reshape(shape), status, theta_out.reshape(*shape, k), wall,
                    stop_iteration=stop_out.reshape(shape),
                    step_reference=lam.reshape(nf, ns, nseed, na), lr_reference=lr_reference,
                    retire_tol=float(retire_tol), backend=backend_name)


def gd_reference_loop(data: ToyData, alpha: float, lr: float, *, family_index: int = 0,
                      scale_index: int = 0, seed_index: int = 0, loss: str = "huber",
                      iterations: int = 1000, dtype: torch.dtype = torch.float32) -> np.ndarray:
    """One configuration at a time (the unbatched reference of ``benchmarks/bench_toy.py``).

    Returns the final coefficients (K,).  Same update as :func:`gd_grid`, no divergence checks.
    """
    phi = data.phi[seed_index].to(dtype)
    y = data.y[family_index, scale_index, seed_index].to(dtype)
    step = lr / float(_lr_reference(data.phi[seed_index])) / data.n
    theta = torch.zeros(data.k, dtype=dtype)
    for _ in range(iterations):
        r = y - phi @ theta
        theta = theta + step * (phi.T @ psi(r, loss, alpha))
    return theta.double().numpy()


# ---------------------------------------------------------------------------------------------
# Exact solver: batched safeguarded Newton / IRLS
# ---------------------------------------------------------------------------------------------


@dataclass
class ExactResult:
    """Exact minimisers over (family, scale, seed, alpha); arrays shaped (F, S, seeds, A[, K])."""

    loss: str
    alphas: np.ndarray
    rmse: np.ndarray
    objective: np.ndarray
    theta: np.ndarray
    iterations: np.ndarray
    converged: np.ndarray
    wall_time_s: float


def _newton_terms(r: Tensor, loss: str, alpha: Tensor | float, eta: float) -> tuple[Tensor, Tensor]:
    """(psi(r), Newton weights psi'(r)); for ``l1`` the IRLS weights 1/max(|r|, eta)."""
    a = r.abs()
    if loss == "huber":
        return torch.clamp(r, min=-alpha, max=alpha), (a <= alpha).to(r.dtype)
    if loss == "kl":
        e = torch.exp(-a / alpha)
        return torch.copysign(alpha * (1.0 - e), r), e
    if loss == "l1":
        return torch.sign(r), 1.0 / a.clamp_min(eta)
    return r, torch.ones_like(r)


def _irls_weights(r: Tensor, loss: str, alpha: Tensor | float, eta: float) -> Tensor:
    """IRLS / MM weights psi(r)/r: a step with them never increases the objective."""
    a = r.abs()
    if loss == "huber":
        return torch.clamp(alpha / a.clamp_min(1e-300), max=1.0)
    if loss == "kl":
        u = a / alpha
        return torch.where(u > 1e-8, -torch.expm1(-u) / u.clamp_min(1e-300), 1.0 - u / 2)
    if loss == "l1":
        return 1.0 / a.clamp_min(eta)
    return torch.ones_like(r)


def _exact_block(phi: Tensor, quad: Tensor, y: Tensor, alpha: Tensor, loss: str, tol: float,
                 max_iter: int, theta0: Tensor | None = None
                 ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Exact minimiser for phi (seeds, N, K), quad (seeds, N, K(K+1)/2), y (seeds, N, M).

    Each iteration takes the full Newton step where it lowers the objective; only the
    configurations where it does not try the half Newton step and the IRLS step.
    """
    seeds, n, k = phi.shape
    m = y.shape[-1]
    iu = torch.triu_indices(k, k, device=phi.device)
    eye = torch.eye(k, dtype=phi.dtype, device=phi.device)
    if theta0 is None:  # least squares start (seeds, K, M)
        theta = torch.linalg.solve(phi.mT @ phi, phi.mT @ y)
    else:
        theta = theta0.clone()
    its = torch.zeros(seeds, m, dtype=torch.long, device=phi.device)
    conv = torch.zeros(seeds, m, dtype=torch.bool, device=phi.device)
    if loss == "l2":
        conv[:] = True
        return theta, _loss_value(y - phi @ theta, loss, alpha).mean(1), its, conv
    eta = 1e-9 * float(y.abs().mean())

    def objective(th: Tensor, ya: Tensor, a: Tensor) -> Tensor:
        return _loss_value_fast(torch.baddbmm(ya, phi, th, alpha=-1.0), loss, a).mean(1)

    def solve(w: Tensor, g: Tensor) -> Tensor:
        hq = torch.bmm(w.mT, quad) / n  # (seeds, M', K(K+1)/2)
        h = torch.zeros(seeds, w.shape[-1], k, k, dtype=phi.dtype, device=phi.device)
        h[:, :, iu[0], iu[1]] = hq
        h[:, :, iu[1], iu[0]] = hq
        ridge = 1e-12 * h.diagonal(dim1=-2, dim2=-1).sum(-1).clamp_min(1e-300)
        d, _ = torch.linalg.solve_ex(h + ridge[..., None, None] * eye, g.mT[..., None])
        d = d[..., 0].mT
        return torch.where(torch.isfinite(d), d, torch.zeros_like(d))

    active = torch.ones(seeds, m, dtype=torch.bool, device=phi.device)
    # one alpha for the whole block (the continuation sweep): scalar fast paths
    scalar = float(alpha[0]) if bool((alpha == alpha[0]).all()) else None
    obj = objective(theta, y, alpha if scalar is None else scalar)
    for _ in range(max_iter):
        if not bool(active.any()):
            break
        cols = active.any(0).nonzero()[:, 0]  # configurations active in any seed
        ya, ta = y[:, :, cols], theta[:, :, cols]
        aa = alpha[cols] if scalar is None else scalar
        ra = torch.baddbmm(ya, phi, ta, alpha=-1.0)
        ps, wn = _newton_terms(ra, loss, aa, eta)
        g = phi.mT @ ps / n  # minus the gradient of the mean loss
        dn = solve(wn, g)
        best_obj = objective(ta + dn, ya, aa)
        old = obj[:, cols]
        better = best_obj < old
        best_step = torch.where(better[:, None, :], dn, torch.zeros_like(dn))
        best_obj = torch.where(better, best_obj, old)
        fail = ~better.all(0)
        if bool(fail.any()):  # safeguard: half Newton step and the IRLS (MM) step
            sub = fail.nonzero()[:, 0]
            ys, ts, rs = ya[:, :, sub], ta[:, :, sub], ra[:, :, sub]
            as_ = aa if scalar is not None else aa[sub]
            di = solve(_irls_weights(rs, loss, as_, eta), g[:, :, sub])
            bo, bs = best_obj[:, sub], best_step[:, :, sub]
            for d in (0.5 * dn[:, :, sub], di):
                o = objective(ts + d, ys, as_)
                b = o < bo
                bo = torch.where(b, o, bo)
                bs = torch.where(b[:, None, :], d, bs)
            best_obj[:, sub], best_step[:, :, sub] = bo, bs
        act = active[:, cols]
        best_step = best_step * act[:, None, :]
        new_theta = ta + best_step
        small = best_step.norm(dim=1) <= tol * (1.0 + new_theta.norm(dim=1))
        stuck = best_obj >= old  # no candidate lowers the objective: optimal to rounding
        done = act & (small | stuck)
        theta[:, :, cols] = new_theta
        obj[:, cols] = torch.where(act, best_obj, old)
        its[:, cols] += act.long()
        conv[:, cols] |= done
        active[:, cols] = act & ~done
    return theta, obj, its, conv


def _l1_polish(phi: Tensor, y: Tensor, theta: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    r"""Vertex through the K smallest residuals, and its LP optimality certificate.

    An L1 minimiser interpolates K points (a basis B).  With :math:`s_i = \mathrm{sign}(r_i)`
    off B, the vertex is optimal iff :math:`\Phi_B^\top u = -\sum_{i \notin B} s_i \phi_i` has
    :math:`\|u\|_\infty \le 1` (the dual of the LP).  Returns (theta, objective, certified).
    """
    seeds, n, k = phi.shape
    m = y.shape[-1]
    r = torch.baddbmm(y, phi, theta, alpha=-1.0)
    sel = r.abs().topk(k, dim=1, largest=False).indices  # (seeds, K, M)
    phi_b = torch.gather(phi[:, None, :, :].expand(seeds, m, n, k), 2,
                         sel.mT[..., None].expand(-1, -1, -1, k))  # (seeds, M, K, K)
    y_b = torch.gather(y, 1, sel).mT[..., None]  # (seeds, M, K, 1)
    pol, info = torch.linalg.solve_ex(phi_b, y_b)
    pol = pol[..., 0].mT
    ok = (info == 0) & torch.isfinite(pol).all(1)
    pol = torch.where(ok[:, None, :], pol, theta)
    rp = torch.baddbmm(y, phi, pol, alpha=-1.0)
    obj = rp.abs().mean(1)
    sgn = torch.sign(rp).scatter_(1, sel, 0.0)
    g = phi.mT @ sgn  # (seeds, K, M)
    u, info_u = torch.linalg.solve_ex(phi_b.mT, -g.mT[..., None])
    cert = ok & (info_u == 0) & (u[..., 0].abs().amax(-1) <= 1.0 + 1e-9)
    return pol, obj, cert


def _l1_irls(phi: Tensor, quad: Tensor, y: Tensor, iterations: int
             ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Least absolute deviations: IRLS with weights :math:`1/\\max(|r|, \\eta_t)`, finished exactly.

    :math:`\\eta_t` starts at the median absolute least-squares residual and shrinks by 0.7 per
    iteration down to :math:`10^{-10}` of it.  From iteration 30 on, every 10 iterations the
    vertex through the K smallest residuals is tried and kept when the LP optimality
    certificate holds (:func:`_l1_polish`); ``converged`` means certified optimal.  Uncertified
    fits end with the IRLS iterate or the vertex, whichever has the lower objective.
    """
    seeds, n, k = phi.shape
    iu = torch.triu_indices(k, k, device=phi.device)
    theta = torch.linalg.solve(phi.mT @ phi, phi.mT @ y)
    r = torch.baddbmm(y, phi, theta, alpha=-1.0)
    eta0 = r.abs().median(dim=1).values  # (seeds, M)
    done = torch.zeros_like(eta0, dtype=torch.bool)
    its = torch.zeros_like(eta0, dtype=torch.long)
    for t in range(iterations):
        eta = (eta0 * max(0.7**t, 1e-10))[:, None, :]
        w = 1.0 / r.abs().clamp_min(eta)
        hq = torch.bmm(w.mT, quad)
        h = torch.zeros(seeds, y.shape[-1], k, k, dtype=phi.dtype, device=phi.device)
        h[:, :, iu[0], iu[1]] = hq
        h[:, :, iu[1], iu[0]] = hq
        rhs = (phi.mT @ (w * y)).mT[..., None]
        new, info = torch.linalg.solve_ex(h, rhs)
        new = new[..., 0].mT
        ok = (info == 0)[:, None, :] & torch.isfinite(new).all(1, keepdim=True) & ~done[:, None, :]
        theta = torch.where(ok, new, theta)
        its += (~done).long()
        if (t >= 30 and t % 10 == 0) or t == iterations - 1:
            pol, _, cert = _l1_polish(phi, y, theta)
            theta = torch.where((cert & ~done)[:, None, :], pol, theta)
            done |= cert
            if bool(done.all()):
                break
        r = torch.baddbmm(y, phi, theta, alpha=-1.0)
    obj = torch.baddbmm(y, phi, theta, alpha=-1.0).abs().mean(1)
    pol, obj_p, _ = _l1_polish(phi, y, theta)  # uncertified: keep the vertex if it is lower
    take = ~done & (obj_p < obj)
    theta = torch.where(take[:, None, :], pol, theta)
    return theta, torch.where(take, obj_p, obj), its, done


def _lad_linprog(phi: np.ndarray, y: np.ndarray) -> np.ndarray | None:
    r"""Least absolute deviations by linear programming (HiGHS), or None if it fails.

    Solves the dual :math:`\max_u y^\top u` subject to :math:`\Phi^\top u = 0`,
    :math:`-1 \le u \le 1` (K equality rows, so it is fast); the coefficients are minus the
    multipliers of the equality constraints.
    """
    from scipy.optimize import linprog

    res = linprog(-y, A_eq=phi.T, b_eq=np.zeros(phi.shape[1]), bounds=(-1.0, 1.0),
                  method="highs-ipm")
    if res.status != 0 or res.eqlin is None:
        return None
    return -np.asarray(res.eqlin.marginals, dtype=np.float64)


def _finish_lad(phi: Tensor, y: Tensor, theta: Tensor, obj: Tensor, done: Tensor
                ) -> tuple[Tensor, Tensor, Tensor]:
    """Solve the LAD fits that IRLS left uncertified by linear programming (exact optimum)."""
    from concurrent.futures import ThreadPoolExecutor

    todo = (~done).nonzero().tolist()
    phi_np, y_np = phi.cpu().numpy(), y.cpu().numpy()
    with ThreadPoolExecutor(max(1, torch.get_num_threads())) as pool:  # HiGHS releases the GIL
        sols = list(pool.map(lambda t: _lad_linprog(phi_np[t[0]], y_np[t[0], :, t[1]]), todo))
    for (se, mi), sol in zip(todo, sols):
        if sol is None:
            continue
        th = torch.as_tensor(sol, dtype=theta.dtype, device=theta.device)
        ob = (y[se, :, mi] - phi[se] @ th).abs().mean()
        if ob <= obj[se, mi] * (1 + 1e-12):
            theta[se, :, mi], obj[se, mi] = th, ob
        done[se, mi] = True
    return theta, obj, done


def exact_grid(
    data: ToyData,
    alphas: Sequence[float] = (1.0,),
    *,
    loss: str = "huber",
    tol: float = 1e-9,
    max_iter: int = 100,
    device: str | torch.device = "cpu",
    max_elements: int | None = None,
    l1_iterations: int = 300,
    progress: bool = True,
) -> ExactResult:
    r"""Exact minimiser of the mean loss for every (family, scale, seed, alpha), in float64.

    Batched over (family, scale, seed); the alphas are swept from the largest to the smallest,
    each solve starting from the previous solution (continuation; the first from least
    squares).  Each iteration takes the Newton step (Hessian :math:`\Phi^\top
    \mathrm{diag}(\psi'(r))\Phi / N`) where it lowers the objective, else the best of the half
    Newton step and the IRLS / MM step (weights :math:`\psi(r)/r`, never an increase).  It stops
    when the step is below ``tol`` relative to :math:`1 + \|\theta\|` or no candidate lowers the
    objective.  ``l2`` is solved in closed form, ``l1`` by at most ``l1_iterations`` of IRLS
    finished by an LP-certified vertex (``_l1_irls``), and the fits it leaves uncertified by
    linear programming with HiGHS (alphas are ignored for both).
    """
    if progress:  # the notebook-aware bar only when one is shown (no widget warnings)
        from tqdm.auto import tqdm
    else:
        from tqdm import tqdm

    _check_loss(loss)
    alphas = _check_positive_grid(alphas, "alphas")
    max_iter = _check_positive_int(max_iter, "max_iter")
    _check_finite_at_least(tol, "tol", 0.0)
    device = torch.device(device)
    if loss in ("l1", "l2"):
        alphas = alphas[:1]
    nf, ns, nseed, na, k, n = (len(data.families), len(data.scales), len(data.seeds), len(alphas),
                               data.k, data.n)
    if max_elements is None:
        max_elements = _default_max_elements(device, torch.float64, 16, 6_000_000)
    phi = data.phi.to(device)
    iu = torch.triu_indices(k, k)
    quad = (phi[..., iu[0].to(device)] * phi[..., iu[1].to(device)]).contiguous()
    pairs = nf * ns
    block = max(1, max_elements // (nseed * n))
    y_all = data.y.reshape(pairs, nseed, n)
    theta_out = torch.zeros(pairs, nseed, na, k, dtype=torch.float64)
    obj_out = torch.zeros(pairs, nseed, na, dtype=torch.float64)
    its_out = torch.zeros(pairs, nseed, na, dtype=torch.long)
    conv_out = torch.zeros(pairs, nseed, na, dtype=torch.bool)
    order = np.argsort(-alphas, kind="stable")
    t0 = time.perf_counter()
    tasks = _chunks(pairs, block)
    bar = tqdm(total=len(tasks) * na, desc=f"exact {loss}", disable=not progress, leave=False)
    for p0, p1 in tasks:
        y = y_all[p0:p1].permute(1, 2, 0).to(device).contiguous()  # (seeds, N, pairs)
        theta = None
        if loss == "l1":
            theta, ob, it, cv = _l1_irls(phi, quad, y, l1_iterations)
            theta, ob, cv = _finish_lad(phi, y, theta, ob, cv)
            theta_out[p0:p1, :, 0] = theta.permute(2, 0, 1).cpu()
            obj_out[p0:p1, :, 0] = ob.mT.cpu()
            its_out[p0:p1, :, 0] = it.mT.cpu()
            conv_out[p0:p1, :, 0] = cv.mT.cpu()
            bar.update(1)
            continue
        for ai in order:
            a_vec = torch.full((p1 - p0,), float(alphas[ai]), dtype=torch.float64, device=device)
            theta, ob, it, cv = _exact_block(phi, quad, y, a_vec, loss, tol, max_iter, theta)
            theta_out[p0:p1, :, ai] = theta.permute(2, 0, 1).cpu()
            obj_out[p0:p1, :, ai] = ob.mT.cpu()
            its_out[p0:p1, :, ai] = it.mT.cpu()
            conv_out[p0:p1, :, ai] = cv.mT.cpu()
            bar.update(1)
    bar.close()
    wall = time.perf_counter() - t0
    shape = (nf, ns, nseed, na)
    theta = theta_out.reshape(*shape, k)
    rmse = _test_rmse(theta, data, seed_dim=2).numpy()
    obj = obj_out.reshape(shape).numpy()
    rmse = np.where(np.isfinite(obj), rmse, np.nan)
    return ExactResult(loss, alphas, rmse, obj, theta.numpy(), its_out.reshape(shape).numpy(),
                       conv_out.reshape(shape).numpy(), wall)


# ---------------------------------------------------------------------------------------------
# Theory: asymptotic variance of the M-estimator
# ---------------------------------------------------------------------------------------------


def _scipy_dist(family: str, scale: float = 1.0) -> Any:
    from scipy import stats

    _check_family(family)
    return {
        "laplace": stats.laplace,
        "logistic": stats.logistic,
        "cauchy": stats.cauchy,
        "normal": stats.norm,
    }.get(family, lambda scale: stats.t(STUDENT_T_DF, scale=scale))(scale=scale)


def asymptotic_variance(family: str, alpha: float, scale: float = 1.0, loss: str = "huber") -> float:
    """:math:`V(\\alpha) = E[\\psi_\\alpha(\\epsilon)^2] / E[\\psi_\\alpha'(\\epsilon)]^2` for noise
    ``family`` with ``scale`` (numerical integration; ``loss`` is ``"huber"`` or ``"kl"``).

    For a linear model with features of Gram matrix :math:`G`, the M-estimator is asymptotically
    normal with covariance :math:`V(\\alpha) G^{-1} / N`, so the expected squared test error is
    about :math:`V(\\alpha) K / N` with orthonormal features (:func:`theory_rmse`).
    """
    from scipy import integrate

    _check_positive_grid(alpha, "alpha")
    _check_positive_grid(scale, "scale")
    if loss not in ALPHA_LOSSES:
        raise ValueError(f"loss must be one of {ALPHA_LOSSES}, got {loss!r}")
    a, d = float(alpha), _scipy_dist(family, scale)
    if loss == "huber":
        e2 = 2 * integrate.quad(lambda e: e * e * d.pdf(e), 0, a, limit=200)[0] + 2 * a * a * d.sf(a)
        ep = 2 * (d.cdf(a) - 0.5)
    else:
        e2 = 2 * integrate.quad(lambda e: (a * math.expm1(-e / a)) ** 2 * d.pdf(e), 0, np.inf,
                                limit=400)[0]
        ep = 2 * integrate.quad(lambda e: math.exp(-e / a) * d.pdf(e), 0, np.inf, limit=400)[0]
    return float(e2 / ep**2)


@functools.lru_cache(maxsize=65536)
def _unit_variance(family: str, u: float, loss: str) -> float:
    return asymptotic_variance(family, u, 1.0, loss)


def theory_rmse(family: str, alpha: float, scale: float, n: int = N_TRAIN, k: int = K_PAPER,
                loss: str = "huber") -> float:
    """Asymptotic test RMSE :math:`\\sqrt{V(\\alpha) K / N}` (orthonormal features).

    Uses :math:`V(\\alpha; s) = s^2 V(\\alpha/s; 1)` (location-scale equivariance).
    ``alpha`` and ``scale`` must be finite and > 0 (with a finite ratio), ``n`` and ``k``
    integers >= 1.
    """
    _check_family(family)
    _check_finite_at_least(alpha, "alpha", 0.0, strict=True)
    _check_finite_at_least(scale, "scale", 0.0, strict=True)
    n = _check_positive_int(n, "n")
    k = _check_positive_int(k, "k")
    u = float(np.float64(alpha) / np.float64(scale))
    if not 0 < u < math.inf:
        raise ValueError(f"alpha / scale must be a positive finite number, got "
                         f"alpha={alpha!r}, scale={scale!r}")
    return math.sqrt(scale * scale * _unit_variance(family, u, loss) * k / n)


def optimal_alpha_constant(family: str, loss: str = "huber", *, lo: float = 1e-3,
                           hi: float = 1e3) -> dict[str, Any]:
    """The :math:`c_f` with :math:`\\alpha^*(s) = c_f\\,s` minimising :math:`V` (unit scale).

    Searches :math:`\\alpha \\in [lo, hi]` (log scale).  When the minimum is at an end of the
    interval, ``c`` is reported as the limit (0: L1 / the median is best, e.g. Laplace;
    ``inf``: L2 / the mean is best, e.g. Normal) and ``boundary`` says which.
    """
    from scipy import optimize

    _check_family(family)
    lo = _check_finite_at_least(lo, "lo", 0.0, strict=True)
    hi = _check_finite_at_least(hi, "hi", 0.0, strict=True)
    if not lo < hi:
        raise ValueError(f"lo must be < hi (the search interval [lo, hi]), got lo={lo!r}, "
                         f"hi={hi!r}")

    def f(la: float) -> float:
        return asymptotic_variance(family, math.exp(la), 1.0, loss)

    res = optimize.minimize_scalar(f, bounds=(math.log(lo), math.log(hi)), method="bounded",
                                   options={"xatol": 1e-6})
    c = math.exp(res.x)
    boundary = None
    v_l1 = _v_limit(family, "l1")
    v_l2 = _v_limit(family, "l2")
    # a minimum at an end of the interval, or one no better than a limit (flat plateau), is the limit
    if c < lo * 1.01 or res.fun >= v_l1 * (1.0 - 1e-9):
        c, boundary = 0.0, "lower"
    elif c > hi / 1.01 or res.fun >= v_l2 * (1.0 - 1e-9):
        c, boundary = math.inf, "upper"
    return {"family": family, "loss": loss, "c": c, "boundary": boundary, "v_min": float(res.fun),
            "v_l1": v_l1, "v_l2": v_l2}


def _v_limit(family: str, which: str) -> float:
    d = _scipy_dist(family)
    if which == "l1":  # median: 1 / (4 f(0)^2)
        return float(1.0 / (4.0 * d.pdf(0.0) ** 2))
    var = float(d.var())
    return var if math.isfinite(var) else math.inf


# ---------------------------------------------------------------------------------------------
# Summaries
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# Profiles and the end-to-end run
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ToyConfig:
    r"""Every choice of the experiment (see the module docstring for the defaults' reasons).

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
            "rmse": _finite_or_none(res.rmse if loss in ALPHA_LOSSES else res.rmse[..., 0]),
            "converged_fraction": float(res.converged.mean()),
            "iterations_max": int(res.iterations.max()),
            "wall_time_s": res.wall_time_s,
        }
        if loss in ALPHA_LOSSES:
            entry["summary"] = summarize(res.rmse, cfg.alphas, cfg.scales, cfg.families)
            entry["regret"] = _regret(res.rmse, cfg, c_huber if loss == "huber" else c_kl)
        methods["exact"][loss] = entry
        log(f"exact {loss}: {res.wall_time_s:.1f} s, converged {entry['converged_fraction']:.3f}")
    timings["exact"] = time.perf_counter() - t
    t = time.perf_counter()
    runs = [("gd", loss, cfg.basis) for loss in cfg.gd_losses]
    runs += [(f"gd_{b}", "huber", b) for b in cfg.extra_gd_bases]
    for method, loss, basis in runs:
        alphas = cfg.alphas if loss in ALPHA_LOSSES else (1.0,)
        lrs = cfg.lrs if loss in ALPHA_LOSSES else cfg.l_lrs
        if loss == "l1":
            # sign-gradient descent: the step does not shrink, so scan the rates of the Huber grid
            lrs = cfg.l1_lrs or tuple(np.asarray(cfg.lrs) * min(cfg.alphas))
        d_b = data if basis == data.basis else data.with_basis(basis)
        res = gd_grid(d_b, alphas, lrs, loss=loss, iterations=cfg.iterations,
                      check_every=cfg.check_every, device=device, dtype=dtype,
                      checkpoint_dir=checkpoint_dir, progress=progress,
                      lr_reference=cfg.lr_reference if loss in ALPHA_LOSSES else "gram",
                      retire_tol=cfg.retire_tol, deadline=deadline)
        if basis != data.basis:  # coefficients back to the reference basis: theta_ref = T theta_b
            tmat = torch.linalg.lstsq(data.phi[0], d_b.phi[0]).solution.numpy()
            res.theta = np.einsum("ij,...j->...i", tmat, res.theta)
        entry = _gd_summary(res, exact_res.get(loss), data)
        entry["lrs"] = list(map(float, lrs))
        entry["basis"] = basis
        if loss in ALPHA_LOSSES:
            best, _ = res.best_over_lr()
            entry["summary"] = summarize(best, cfg.alphas, cfg.scales, cfg.families)
            entry["regret"] = _regret(best, cfg, c_huber if loss == "huber" else c_kl)
        else:
            entry["rmse"] = _finite_or_none(res.best_over_lr()[0][..., 0])
        methods.setdefault(method, {})[loss] = entry
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
        for loss in ALPHA_LOSSES:
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


# ---------------------------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------------------------

_METHOD_STYLE = {
    "gd": ("GD grid search (paper's method)", 0, "o"),
    "exact": ("exact minimiser", 1, "s"),
    "theory": ("asymptotic theory $c_f s$", 2, None),
}
_FAMILY_TITLE = {"laplace": "Laplace", "logistic": "Logistic", "cauchy": "Cauchy",
                 "normal": "Normal", "student_t": f"Student-t ({STUDENT_T_DF:g} d.o.f.)"}


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
            entry = results["methods"].get(method, {}).get(loss)
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
        th = results.get("theory", {}).get(fam, {}).get(loss)
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
    axes[0].set_ylabel(r"best $\alpha$" + (" ($D_{\\alpha,1/\\alpha}$)" if loss == "kl" else ""))
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
        ex = results["methods"].get("exact", {}).get(loss)
        if ex is not None:
            ax.plot(alphas, mean_curve(ex, si), "-", color=c, label=f"s={scales[si]:g} exact")
        gd = results["methods"].get("gd", {}).get(loss)
        if gd is not None:
            ax.plot(alphas, mean_curve(gd, si), "o", ms=3, color=c, label=f"s={scales[si]:g} GD")
        th = results.get("theory", {}).get(family, {}).get(loss)
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


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """``klhuber toy --profile quick|full --device cpu|cuda --out DIR``."""
    parser.add_argument("--profile", choices=tuple(PROFILES), default="quick")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--out", default="results/toy", help="output folder")
    parser.add_argument("--families", nargs="+", choices=FAMILIES, default=None)
    parser.add_argument("--iterations", type=int, default=None, help="GD iterations")
    parser.add_argument("--seeds", type=int, default=None, help="number of seeds")
    parser.add_argument("--no-gd", action="store_true",
                        help="exact solver and theory only (the part of 'full' a CPU runs in "
                             "minutes); writes toy_<profile>_exact.json")
    parser.add_argument("--no-resume", action="store_true",
                        help="ignore GD checkpoints of an earlier interrupted run")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--stop-after-s", type=float, default=None, metavar="SECONDS",
                        help="start no new GD chunk after SECONDS; finished chunks stay in the "
                             "checkpoints (re-run the same command to resume) and the final "
                             "JSON is not written")
    parser.set_defaults(func=_cli_main)


def _cli_main(args: argparse.Namespace) -> int:
    import shutil
    import sys

    from klhuber.results import atomic_write_bytes, save_results

    device = args.device
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("--device cuda requested but CUDA is not available")
    overrides: dict[str, Any] = {}
    if args.families:
        overrides["families"] = tuple(args.families)
    if args.iterations is not None:
        overrides["iterations"] = args.iterations
    if args.seeds is not None:
        overrides["seeds"] = tuple(range(_check_positive_int(args.seeds, "--seeds")))
    if args.no_gd:
        overrides.update(gd_losses=(), extra_gd_bases=())
    cfg = get_config(args.profile, **overrides)
    stem = args.profile + ("_exact" if args.no_gd else "")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ckpt = out / "checkpoints" / stem
    if args.no_resume and ckpt.exists():
        shutil.rmtree(ckpt)
    t0 = time.perf_counter()
    deadline = None
    if args.stop_after_s is not None:
        if not args.stop_after_s >= 0:
            raise SystemExit(f"--stop-after-s must be >= 0, got {args.stop_after_s}")
        deadline = time.monotonic() + args.stop_after_s
    try:
        payload = run(args.profile, device, config=cfg, progress=not args.no_progress,
                      checkpoint_dir=ckpt, log=lambda s: print(s, flush=True), deadline=deadline)
    except StoppedEarly as exc:
        print(f"stopped early after {time.perf_counter() - t0:.0f} s (--stop-after-s "
              f"{args.stop_after_s:g}): {exc}. Checkpoints kept in {ckpt}; run the same command "
              f"again to resume. {out / f'toy_{stem}.json'} was NOT written.", flush=True)
        return 0
    payload["profile"] = args.profile
    wall = time.perf_counter() - t0
    command = "klhuber toy " + " ".join(sys.argv[2:]) if len(sys.argv) > 1 else "klhuber toy"
    path = save_results(out / f"toy_{stem}.json", payload, command=command,
                        device=device, wall_time_s=wall)
    import matplotlib

    matplotlib.use("Agg")
    from klhuber.plotting import use_style

    use_style(svg=False)
    figures = {f"fig2_{stem}": plot_fig2(
        payload, title=f"Figure 2 ({args.profile} profile, {device})")}
    if set(cfg.families) - set(PAPER_FAMILIES):
        figures[f"fig2_all_families_{stem}"] = plot_fig2(
            payload, families=cfg.families, title=f"All noise families ({args.profile} profile)")
    for name, fig in figures.items():
        for ext in ("png", "svg"):
            buf = io.BytesIO()
            fig.savefig(buf, format=ext, dpi=150)
            atomic_write_bytes(out / f"{name}.{ext}", buf.getvalue())
    shutil.rmtree(ckpt, ignore_errors=True)
    print(json.dumps({"results": str(path), "wall_time_s": round(wall, 1),
                      "timings": {k: round(v, 1) for k, v in payload["timings"].items()}}))
    return 0


# ---------------------------------------------------------------------------------------------
# The verdict on Figure 2, computed once from a results payload


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
    for ``n_boot`` resamples of the seeds of ``rmse`` (S, seeds, A)."""
    n_seeds = rmse.shape[1]
    sq = np.where(np.isfinite(rmse), rmse, np.nan) ** 2
    picks = rng.integers(0, n_seeds, (n_boot, n_seeds))
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN (all diverged) slices
        curve = np.nanmean(sq[:, picks], axis=2)  # (S, B, A)
    curve = np.where(np.isfinite(curve), curve, np.inf)
    best = alphas[np.argmin(curve, axis=-1)]  # (S, B)
    x = scales - scales.mean()
    yc = best - best.mean(axis=0)
    slopes = (x @ yc) / (x @ x)
    ss_tot = np.sum(yc**2, axis=0)
    ss_res = np.sum((yc - slopes[None, :] * x[:, None]) ** 2, axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        r2s = np.where(ss_tot > 0, 1.0 - ss_res / ss_tot, 0.0)
    return slopes, r2s


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
