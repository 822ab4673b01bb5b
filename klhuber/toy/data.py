r"""The data of the toy problem: the polynomial, the noise families, the feature bases.

:func:`make_data` draws seeded training and test data for a grid of (family, scale, seed)
(:class:`ToyData`), in one of the feature bases :data:`BASES` (:func:`design_matrix`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import Tensor

from klhuber.toy._common import _check_positive_grid, _check_positive_int, _check_seeds

__all__ = ["BASES", "DELTA", "FAMILIES", "K_PAPER", "MAX_SCALE", "N_TRAIN", "PAPER_FAMILIES",
           "STUDENT_T_DF", "THETA_STAR", "ToyData", "design_matrix", "ground_truth", "make_data",
           "sample_standard_noise"]

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
#: Feature bases.
BASES = ("legendre", "scaled", "monomial")
#: Largest noise scale :func:`make_data` accepts (its per-scale seed is ``round(scale * 1e9)``,
#: and squared residuals must stay finite in float64).
MAX_SCALE = 1e100

_FAMILY_ID = {name: i for i, name in enumerate(FAMILIES)}
_FAMILY_TITLE = {"laplace": "Laplace", "logistic": "Logistic", "cauchy": "Cauchy",
                 "normal": "Normal", "student_t": f"Student-t ({STUDENT_T_DF:g} d.o.f.)"}




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
