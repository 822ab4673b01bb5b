r"""Section 5 of Meyer (CVPR 2021): the polynomial toy problem behind Figure 2.

The paper fits a polynomial with :math:`K = D + 2 = 8` coefficients to
:math:`N = 10\,000` noisy samples :math:`y_i = F_{\theta^*}(x_i) + \epsilon`, :math:`x_i \sim U[-\delta,
\delta]`, :math:`\delta = 2`, :math:`\theta^* = [6, -3, -25, 15, 20, -10]` (leading coefficient first),
by minimising the summed Huber loss :math:`H_\alpha` (eq. 4) with gradient descent, and picks the
learning rate and :math:`\alpha` by grid search on the test RMSE of a noise-free test set.
Figure 2 plots the best :math:`\alpha` against the noise scale for Laplace, Logistic and Cauchy noise.

This package provides

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

Losses (:data:`LOSSES`, one table of formulas :data:`FORMULAS`): ``"huber"`` is
:math:`H_\alpha` (:func:`klhuber.losses.huber`), ``"kl_lower"`` is :math:`D_{\alpha,1/\alpha}`
(eq. 16, :func:`klhuber.losses.kl_huber`), the lower bound of eq. 20, and ``"l1"``/``"l2"`` are
the two limits :math:`\alpha \to 0` and :math:`\alpha \to \infty`.  ``"kl"``, its name before
the rename, is an alias (:data:`LOSS_ALIASES`) and stays the key of :math:`D_{\alpha,1/\alpha}`
in the configuration and results files (``results/toy/*.json``); it is not the detection box
loss's ``"kl"`` kind, :math:`D_{\alpha/2,1/\alpha}`.

The package's modules: ``data`` (the polynomial, noise families, feature bases,
:func:`make_data`), ``formulas`` (value, :math:`\psi`, :math:`\psi'` and IRLS weight per
loss), ``gd`` (:func:`gd_grid`, with the fused C++ kernel compiled at first use and its torch
fallback), ``exact`` (:func:`exact_grid`), ``theory`` (:func:`asymptotic_variance`,
:func:`optimal_alpha_constant`), ``summary`` (:func:`summarize`), ``experiment``
(:class:`ToyConfig`, :data:`PROFILES`, :func:`run`), ``verdict`` (:func:`figure2_verdict`,
:func:`committed_results`), ``plots`` and ``cli``.  Every name is importable from
``klhuber.toy``.

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

from klhuber.toy import data as _data
from klhuber.toy import experiment as _experiment
from klhuber.toy import formulas as _formulas
from klhuber.toy import verdict as _verdict
from klhuber.toy._kernel import _cpu_kernel
from klhuber.toy.cli import _cli_main, configure_parser
from klhuber.toy.data import (
    ToyData,
    design_matrix,
    ground_truth,
    make_data,
    sample_standard_noise,
)
from klhuber.toy.exact import ExactResult, exact_grid
from klhuber.toy.experiment import ToyConfig, get_config, run
from klhuber.toy.formulas import (
    LossFormulas,
    _loss_value,
    _loss_value_fast,
    _psi_inplace,
    canonical_loss,
    loss_formulas,
    psi,
)
from klhuber.toy.gd import (
    GDResult,
    StoppedEarly,
    _gd_chunk,
    _lr_reference,
    gd_grid,
    gd_reference_loop,
)
from klhuber.toy.plots import plot_fig2, plot_rmse_curves, plot_rmse_panels
from klhuber.toy.summary import best_alpha, linear_fit, summarize
from klhuber.toy.theory import asymptotic_variance, optimal_alpha_constant, theory_rmse
from klhuber.toy.verdict import (
    FamilyVerdict,
    Figure2Verdict,
    _bootstrap_growth,
    committed_results,
    figure2_verdict,
)

__all__ = [
    "FIG2_R2_THRESHOLD",
    "FamilyVerdict",
    "Figure2Verdict",
    "committed_results",
    "figure2_verdict",
    "BASES",
    "DELTA",
    "FAMILIES",
    "FORMULAS",
    "K_PAPER",
    "LOSSES",
    "LOSS_ALIASES",
    "LossFormulas",
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
    "canonical_loss",
    "configure_parser",
    "design_matrix",
    "exact_grid",
    "gd_grid",
    "get_config",
    "ground_truth",
    "linear_fit",
    "loss_formulas",
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

# The data, restated here with their descriptions (the API reference documents this package).

#: Ground-truth coefficients of Section 5, leading coefficient first:
#: :math:`F(x) = 6x^5 - 3x^4 - 25x^3 + 15x^2 + 20x - 10`.
THETA_STAR: tuple[float, ...] = _data.THETA_STAR
#: Half-width of the input interval.
DELTA: float = _data.DELTA
#: Training points per experiment.
N_TRAIN: int = _data.N_TRAIN
#: Number of fitted coefficients, :math:`K = D + 2`.
K_PAPER: int = _data.K_PAPER
#: The paper's three noise families (Figure 2 panels a-c).
PAPER_FAMILIES: tuple[str, ...] = _data.PAPER_FAMILIES
#: All supported noise families (Normal and Student-t are extensions).
FAMILIES: tuple[str, ...] = _data.FAMILIES
#: Degrees of freedom of the Student-t noise family.
STUDENT_T_DF: float = _data.STUDENT_T_DF
#: Feature bases.
BASES: tuple[str, ...] = _data.BASES
#: Largest noise scale :func:`make_data` accepts.
MAX_SCALE: float = _data.MAX_SCALE
#: The losses scored (H_alpha, D_{alpha,1/alpha}, and the limits L1, L2).
LOSSES: tuple[str, ...] = _formulas.LOSSES
#: The losses with a transition point alpha.
ALPHA_LOSSES: tuple[str, ...] = _formulas.ALPHA_LOSSES
#: Further accepted loss names, ``"kl"`` (the name of ``"kl_lower"`` before the rename, and its
#: key in results files).
LOSS_ALIASES: dict[str, str] = _formulas.LOSS_ALIASES
#: Every loss of :data:`LOSSES` and its formulas (:class:`LossFormulas`).
FORMULAS: dict[str, LossFormulas] = _formulas.FORMULAS
#: The ``quick`` and ``full`` configurations.
PROFILES: dict[str, ToyConfig] = _experiment.PROFILES
#: The least share of variance (R²) that the line through the best α per scale must explain, with
#: a positive slope, for Figure 2's "near linear" (:func:`figure2_verdict`).
FIG2_R2_THRESHOLD: float = _verdict.FIG2_R2_THRESHOLD
#: Committed full-profile results files, most complete first.
COMMITTED_FILES: tuple[str, ...] = _verdict.COMMITTED_FILES

# Names outside __all__ that were importable from the single module before the split (also the
# private ones that the tests and benchmarks reach).
_ = (gd_reference_loop, _cpu_kernel,
     _cli_main, _loss_value, _loss_value_fast, _psi_inplace, _gd_chunk, _lr_reference,
     _bootstrap_growth)
del _
