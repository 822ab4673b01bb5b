"""Tests of klhuber.toy (Section 5 / Figure 2): data, solvers, theory, summaries, CLI."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import integrate, optimize, sparse, stats

from klhuber import losses, toy
from klhuber.paper_values import toy as paper

SMALL = dict(n=1500, n_test=400)


@pytest.fixture(scope="module")
def data() -> toy.ToyData:
    return toy.make_data(("laplace", "cauchy"), (0.5, 2.0), (0, 1), **SMALL)


# --------------------------------------------------------------------------------- set-up


def test_paper_setup_constants() -> None:
    assert toy.THETA_STAR == paper.SETUP["theta_star"]
    assert toy.N_TRAIN == paper.SETUP["n_train"]
    assert toy.DELTA == paper.SETUP["delta"]
    assert toy.K_PAPER == paper.SETUP["K"] == paper.SETUP["D"] + 2
    assert set(paper.SETUP["families"]) == set(toy.PAPER_FAMILIES)


def test_ground_truth_polynomial() -> None:
    x = np.linspace(-2, 2, 9)
    expected = 6 * x**5 - 3 * x**4 - 25 * x**3 + 15 * x**2 + 20 * x - 10
    np.testing.assert_allclose(toy.ground_truth(x), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("basis", toy.BASES)
def test_theta_star_in_every_basis_reproduces_f(basis: str) -> None:
    d = toy.make_data(("normal",), (1.0,), (0,), n=50, n_test=50, basis=basis)
    f = d.phi[0] @ d.theta_star
    np.testing.assert_allclose(f.numpy(), toy.ground_truth(d.x[0].numpy()), atol=1e-9)


def test_legendre_features_are_orthonormal() -> None:
    # Gauss-Legendre quadrature integrates the products exactly: E[phi phi^T] = I under U[-d, d]
    nodes, weights = np.polynomial.legendre.leggauss(20)
    phi = toy.design_matrix(torch.as_tensor(nodes * toy.DELTA), 8, "legendre")
    gram = phi.T @ (torch.as_tensor(weights / 2)[:, None] * phi)
    np.testing.assert_allclose(gram.numpy(), np.eye(8), atol=1e-12)


def test_data_seeded_and_scaled() -> None:
    a = toy.make_data(("logistic",), (0.5, 2.0), (3,), n=200, n_test=10)
    b = toy.make_data(("logistic",), (0.5, 2.0), (3,), n=200, n_test=10)
    c = toy.make_data(("logistic",), (0.5, 2.0), (4,), n=200, n_test=10)
    assert torch.equal(a.y, b.y) and not torch.equal(a.y, c.y)
    # common noise: the noise at scale s is s times the same standard draw
    cn = toy.make_data(("cauchy",), (0.5, 2.0), (0,), n=200, n_test=10, common_noise=True)
    eps = cn.y[0, :, 0] - torch.as_tensor(toy.ground_truth(cn.x[0].numpy()))
    np.testing.assert_allclose((eps[1] / 2.0).numpy(), (eps[0] / 0.5).numpy(), rtol=1e-9)


def test_noise_families_have_the_stated_scale() -> None:
    rng = np.random.default_rng(0)
    e = toy.sample_standard_noise("laplace", 200_000, rng)
    assert abs(np.mean(np.abs(e)) - 1.0) < 0.01  # Laplace(b=1): E|e| = b
    e = toy.sample_standard_noise("cauchy", 200_000, rng)
    assert abs(np.median(np.abs(e)) - 1.0) < 0.02  # Cauchy(gamma=1): median |e| = gamma


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(families=("gaussian",)), "family"),
        (dict(families=()), "families"),
        (dict(scales=(1.0, 0.0)), "scales"),
        (dict(scales=(-1.0,)), "scales"),
        (dict(scales=()), "scales"),
        (dict(seeds=()), "seeds"),
        (dict(k=5), "k must be >= D"),
    ],
)
def test_bad_input(kwargs: dict, match: str) -> None:
    args = dict(families=("laplace",), scales=(1.0,), seeds=(0,), n=20, n_test=5)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        toy.make_data(**args)


def test_bad_grids(data: toy.ToyData) -> None:
    with pytest.raises(ValueError, match="alphas"):
        toy.gd_grid(data, [], [1.0], iterations=2, progress=False)
    with pytest.raises(ValueError, match="lrs"):
        toy.gd_grid(data, [1.0], [0.0], iterations=2, progress=False)
    with pytest.raises(ValueError, match="alphas"):
        toy.exact_grid(data, [float("nan")], progress=False)
    with pytest.raises(ValueError, match="loss"):
        toy.exact_grid(data, [1.0], loss="l3", progress=False)
    with pytest.raises(ValueError, match="family"):
        toy.asymptotic_variance("gauss", 1.0)
    with pytest.raises(ValueError, match="profile"):
        toy.get_config("huge")
    with pytest.raises(ValueError, match="k must be"):
        toy.get_config("quick", k=3)


# --------------------------------------------------------------------------------- losses


@pytest.mark.parametrize("loss", ["huber", "kl"])
def test_psi_equals_autograd_of_library_loss(loss: str) -> None:
    r = torch.linspace(-7, 7, 1001, dtype=torch.float64, requires_grad=True)
    for alpha in (0.05, 0.7, 3.0):
        value = losses.huber(r, alpha) if loss == "huber" else losses.kl_huber(r, alpha, 1 / alpha)
        (grad,) = torch.autograd.grad(value.sum(), r)
        np.testing.assert_allclose(toy.psi(r.detach(), loss, alpha).numpy(), grad.numpy(),
                                   rtol=1e-12, atol=1e-14)
        a = torch.full((1,), alpha, dtype=torch.float64)
        buf = r.detach().clone()[:, None]
        np.testing.assert_allclose(toy._psi_inplace(buf, loss, a)[:, 0].numpy(), grad.numpy(),
                                   rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("loss", ["huber", "kl"])
def test_fast_loss_values_match_library(loss: str) -> None:
    r = torch.linspace(-9, 9, 2001, dtype=torch.float64)
    for alpha in (0.05, 1.0, 4.0):
        ref = toy._loss_value(r, loss, alpha)
        np.testing.assert_allclose(toy._loss_value_fast(r, loss, alpha).numpy(), ref.numpy(),
                                   rtol=1e-9, atol=1e-12 * alpha * alpha)


def test_formulas_table_has_every_loss_once() -> None:
    assert tuple(toy.FORMULAS) == toy.LOSSES
    assert [f.name for f in toy.FORMULAS.values()] == list(toy.LOSSES)
    assert sorted(f.kernel_code for f in toy.FORMULAS.values()) == [0, 1, 2, 3]
    assert set(toy.ALPHA_LOSSES) <= set(toy.LOSSES)


@pytest.mark.parametrize("loss", ["huber", "kl_lower", "l2"])
def test_formulas_dpsi_newton_and_irls_agree_with_psi(loss: str) -> None:
    f = toy.loss_formulas(loss)
    r = torch.linspace(-7, 7, 1000, dtype=torch.float64)  # no r = 0 (kinks, 0/0)
    for alpha in (0.05, 0.7, 3.0):
        rg = r.clone().requires_grad_(True)
        (dpsi,) = torch.autograd.grad(f.psi(rg, alpha).sum(), rg)
        np.testing.assert_allclose(f.dpsi(r, alpha).numpy(), dpsi.numpy(), rtol=1e-12, atol=1e-14)
        psi_n, weight = f.newton(r, alpha, 1e-9)
        np.testing.assert_allclose(psi_n.numpy(), f.psi(r, alpha).numpy(), rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(weight.numpy(), dpsi.numpy(), rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose((f.irls_weight(r, alpha, 1e-9) * r).numpy(),
                                   f.psi(r, alpha).numpy(), rtol=1e-12, atol=1e-14)


def test_kl_is_an_alias_of_kl_lower(data: toy.ToyData) -> None:
    assert toy.canonical_loss("kl") == "kl_lower" == toy.canonical_loss("kl_lower")
    assert toy.loss_formulas("kl") is toy.FORMULAS["kl_lower"]
    with pytest.raises(ValueError, match="loss must be one of"):
        toy.canonical_loss("kl_upper")
    r = torch.linspace(-3, 3, 61, dtype=torch.float64)
    assert torch.equal(toy.psi(r, "kl", 0.7), toy.psi(r, "kl_lower", 0.7))
    kw = dict(iterations=20, progress=False)
    a, b = (toy.gd_grid(data, (0.5, 2.0), (1.0,), loss=name, **kw) for name in ("kl", "kl_lower"))
    np.testing.assert_array_equal(a.theta, b.theta)
    ea, eb = (toy.exact_grid(data, (0.5,), loss=name, progress=False) for name in ("kl", "kl_lower"))
    np.testing.assert_array_equal(ea.theta, eb.theta)
    assert (toy.asymptotic_variance("logistic", 0.8, loss="kl")
            == toy.asymptotic_variance("logistic", 0.8, loss="kl_lower"))


# --------------------------------------------------------------------------------- exact solver


def _objective_np(theta: np.ndarray, phi: np.ndarray, y: np.ndarray, loss: str, a: float) -> float:
    r = torch.as_tensor(y - phi @ theta)
    return float(toy._loss_value(r, loss, a).mean())


@pytest.mark.parametrize("loss", ["huber", "kl"])
def test_exact_solver_is_the_minimiser(data: toy.ToyData, loss: str) -> None:
    alphas = (0.05, 0.4, 3.0)
    ex = toy.exact_grid(data, alphas, loss=loss, progress=False)
    assert ex.converged.all()
    phi = data.phi[1].numpy()
    for fi, si, ai in [(0, 0, 0), (1, 1, 1), (1, 0, 2)]:
        y = data.y[fi, si, 1].numpy()
        th = ex.theta[fi, si, 1, ai]
        # stationarity: the gradient of the mean loss vanishes
        g = phi.T @ toy.psi(torch.as_tensor(y - phi @ th), loss, alphas[ai]).numpy() / len(y)
        assert np.abs(g).max() < 1e-9 * max(alphas[ai], 1.0)
        # and no general-purpose optimiser started there finds a lower objective
        f0 = _objective_np(th, phi, y, loss, alphas[ai])
        res = optimize.minimize(_objective_np, th + 1e-3, args=(phi, y, loss, alphas[ai]),
                                method="Nelder-Mead", options={"maxiter": 400})
        assert f0 <= res.fun + 1e-12


def test_continuation_equals_cold_start() -> None:
    data = toy.make_data(("cauchy",), (1.0,), (0, 1), n=800, n_test=100)
    alphas = (0.05, 0.3, 2.0)
    swept = toy.exact_grid(data, alphas, progress=False)
    for ai, a in enumerate(alphas):
        cold = toy.exact_grid(data, (a,), progress=False)
        np.testing.assert_allclose(swept.theta[..., ai, :], cold.theta[..., 0, :], atol=1e-7)


def test_exact_l2_is_least_squares_and_l1_is_lad(data: toy.ToyData) -> None:
    l2 = toy.exact_grid(data, loss="l2", progress=False)
    phi, y = data.phi[0].numpy(), data.y[0, 0, 0].numpy()
    np.testing.assert_allclose(l2.theta[0, 0, 0, 0], np.linalg.lstsq(phi, y, rcond=None)[0],
                               atol=1e-10)
    l1 = toy.exact_grid(data, loss="l1", progress=False)
    assert l1.converged.all()
    n, k = phi.shape
    a_eq = sparse.hstack([sparse.csr_matrix(phi), sparse.eye(n), -sparse.eye(n)]).tocsr()
    lp = optimize.linprog(np.r_[np.zeros(k), np.ones(2 * n)] / n, A_eq=a_eq, b_eq=y,
                          bounds=[(None, None)] * k + [(0, None)] * (2 * n), method="highs")
    assert l1.objective[0, 0, 0, 0] <= lp.fun * (1 + 1e-9)
    np.testing.assert_allclose(l1.theta[0, 0, 0, 0], lp.x[:k], atol=1e-6)


def test_exact_rmse_is_scale_equivariant() -> None:
    # common noise: RMSE(alpha * s, s) = s * RMSE(alpha, 1) for the exact minimiser
    d = toy.make_data(("logistic",), (1.0, 3.0), (0,), common_noise=True, **SMALL)
    alphas = np.array([0.1, 0.5, 2.0])
    r1 = toy.exact_grid(d, alphas, progress=False).rmse[0, 0, 0]
    r3 = toy.exact_grid(d, 3.0 * alphas, progress=False).rmse[0, 1, 0]
    np.testing.assert_allclose(r3, 3.0 * r1, rtol=1e-6)


# --------------------------------------------------------------------------------- gradient descent


def test_gd_reaches_the_exact_minimiser() -> None:
    data = toy.make_data(("cauchy",), (1.0,), (0,), n=800, n_test=200)
    alphas = (0.2, 2.0)
    gd = toy.gd_grid(data, alphas, (1.0, 16.0), iterations=200, dtype=torch.float64,
                     progress=False)
    ex = toy.exact_grid(data, alphas, progress=False)
    best, _ = gd.best_over_lr()
    np.testing.assert_allclose(best, ex.rmse, rtol=1e-3)


def test_batched_gd_equals_per_config_loop(data: toy.ToyData) -> None:
    gd = toy.gd_grid(data, (0.3, 1.5), (1.0, 4.0), iterations=40, dtype=torch.float64,
                     progress=False)
    for fi, si, se, ai, li in [(0, 0, 0, 0, 0), (1, 1, 1, 1, 1), (0, 1, 1, 0, 1)]:
        ref = toy.gd_reference_loop(data, (0.3, 1.5)[ai], (1.0, 4.0)[li], family_index=fi,
                                    scale_index=si, seed_index=se, iterations=40,
                                    dtype=torch.float64)
        if not gd.diverged[fi, si, se, ai, li]:
            np.testing.assert_allclose(gd.theta[fi, si, se, ai, li], ref, rtol=1e-9, atol=1e-9)


def test_divergence_is_marked_and_never_scored(data: toy.ToyData) -> None:
    gd = toy.gd_grid(data, (1.0,), (0.5, 50.0), loss="l2", iterations=60, check_every=10,
                     progress=False)
    assert not gd.diverged[..., 0].any() and gd.diverged[..., 1].all()
    assert (gd.status[..., 1] == 2).all() and (gd.stop_iteration[..., 1] <= 10).all()
    assert (gd.status[..., 0] != 2).all()
    assert np.isnan(gd.rmse[..., 1]).all() and np.isfinite(gd.rmse[..., 0]).all()
    best, idx = gd.best_over_lr()
    assert np.isfinite(best).all() and (idx == 0).all()
    # a curve where every learning rate diverged gives NaN, which the summary leaves out
    rmse = np.array(best[..., :1].repeat(3, axis=-1))
    rmse[0, 0, 0, :] = np.nan
    summ = toy.summarize(rmse, (0.1, 1.0, 10.0), data.scales, data.families)
    assert summ["laplace"]["n_missing"][0] == 1
    json.dumps(summ, allow_nan=False)


def test_checkpoint_resume(data: toy.ToyData, tmp_path: Path, monkeypatch) -> None:
    kw = dict(iterations=20, progress=False, checkpoint_dir=tmp_path, max_elements=20_000)
    first = toy.gd_grid(data, (0.5, 2.0), (1.0,), **kw)
    assert len(list(tmp_path.glob("gd_huber_*.pt"))) > 1

    def boom(*args, **kwargs):
        raise AssertionError("should have resumed from the checkpoint")

    monkeypatch.setattr(toy.gd, "_gd_chunk", boom)
    second = toy.gd_grid(data, (0.5, 2.0), (1.0,), **kw)
    np.testing.assert_array_equal(first.theta, second.theta)
    np.testing.assert_array_equal(first.status, second.status)
    np.testing.assert_array_equal(first.stop_iteration, second.stop_iteration)


def test_deadline_stops_between_chunks_and_resumes(data: toy.ToyData, tmp_path: Path,
                                                   monkeypatch) -> None:
    import time

    kw = dict(iterations=20, progress=False, checkpoint_dir=tmp_path, max_elements=20_000)
    real = toy._gd_chunk
    calls = []

    def slow(*args, **kwargs):
        calls.append(1)
        out = real(*args, **kwargs)
        time.sleep(0.3)  # the deadline passes during the first chunk
        return out

    monkeypatch.setattr(toy.gd, "_gd_chunk", slow)
    with pytest.raises(toy.StoppedEarly, match="deadline"):
        toy.gd_grid(data, (0.5, 2.0), (1.0,), deadline=time.monotonic() + 0.1, **kw)
    assert len(calls) == 1 and len(list(tmp_path.glob("gd_huber_*.pt"))) == 1
    resumed = toy.gd_grid(data, (0.5, 2.0), (1.0,), **kw)
    n_chunks = len(list(tmp_path.glob("gd_huber_*.pt")))
    assert n_chunks >= 2 and len(calls) == n_chunks  # the first chunk was not recomputed
    fresh = toy.gd_grid(data, (0.5, 2.0), (1.0,), iterations=20, progress=False)
    np.testing.assert_array_equal(resumed.theta, fresh.theta)


def _kernel_available() -> bool:
    return toy._cpu_kernel(toy.K_PAPER) is not None


def test_float32_agrees_with_float64(data: toy.ToyData, one_thread) -> None:
    kw = dict(iterations=150, progress=False, retire_tol=0.0)
    f32 = toy.gd_grid(data, (0.2, 1.0), (1.0, 8.0), **kw)
    f64 = toy.gd_grid(data, (0.2, 1.0), (1.0, 8.0), dtype=torch.float64, **kw)
    assert f64.backend == "torch"
    # (float32 may retire a configuration that reached an exact fixed point: status 1, not 0)
    np.testing.assert_array_equal(f32.status == 2, f64.status == 2)
    ok = f64.status != 2
    np.testing.assert_allclose(f32.rmse[ok], f64.rmse[ok], rtol=1e-4)
    np.testing.assert_allclose(f32.theta[ok], f64.theta[ok], rtol=1e-4, atol=1e-4)


@pytest.mark.skipif(not _kernel_available(), reason="no C++ compiler for the fused kernel")
@pytest.mark.parametrize("loss", toy.LOSSES)
def test_kernel_equals_torch_backend(data: toy.ToyData, loss: str, one_thread) -> None:
    alphas = (0.3, 2.0) if loss in toy.ALPHA_LOSSES else (1.0,)
    lrs = (0.01, 0.1) if loss == "l1" else (0.5, 1.5)
    kw = dict(loss=loss, iterations=60, progress=False, retire_tol=0.0)
    ker = toy.gd_grid(data, alphas, lrs, backend="kernel", **kw)
    ref = toy.gd_grid(data, alphas, lrs, backend="torch", **kw)
    assert ker.backend == "kernel" and ref.backend == "torch"
    np.testing.assert_allclose(ker.theta, ref.theta, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(ker.objective, ref.objective, rtol=1e-4)


def test_retired_converged_equals_running_on(one_thread) -> None:
    # float64: a configuration retired as converged ends where running all iterations ends,
    # to the stated tolerance (retire_tol relative test RMSE)
    data = toy.make_data(("laplace", "cauchy"), (0.5,), (0,), n=800, n_test=200)
    kw = dict(iterations=400, check_every=20, dtype=torch.float64, progress=False,
              lr_reference="curvature")
    tol = 1e-6
    early = toy.gd_grid(data, (0.1, 1.0, 5.0), (0.25, 1.0), retire_tol=tol, **kw)
    full = toy.gd_grid(data, (0.1, 1.0, 5.0), (0.25, 1.0), retire_tol=0.0, **kw)
    conv = early.status == 1
    assert conv.mean() > 0.5 and (early.stop_iteration[conv] < 400).all()
    assert (full.stop_iteration[full.status == 0] == 400).all()
    np.testing.assert_allclose(early.rmse[conv], full.rmse[conv], rtol=tol)


def test_curvature_learning_rates_reach_the_exact_minimiser(one_thread) -> None:
    data = toy.make_data(("logistic",), (1.0,), (0,), n=800, n_test=200)
    alphas = (0.05, 0.5, 5.0)
    gd = toy.gd_grid(data, alphas, (0.25, 1.0, 1.8), iterations=400, dtype=torch.float64,
                     lr_reference="curvature", progress=False)
    ex = toy.exact_grid(data, alphas, progress=False)
    lam_gram = float(toy._lr_reference(data.phi)[0])
    # the curvature at small alpha is a fraction of the Gram matrix's: larger steps there
    assert gd.step_reference[..., 0].max() < 0.5 * lam_gram
    assert gd.step_reference.max() <= lam_gram * (1 + 1e-9)
    best, _ = gd.best_over_lr()
    np.testing.assert_allclose(best, ex.rmse, rtol=1e-4)


# --------------------------------------------------------------------------------- theory


def test_asymptotic_variance_laplace_closed_form() -> None:
    for a in (0.1, 1.0, 3.0):
        closed = (2 - 2 * (1 + a) * math.exp(-a)) / (1 - math.exp(-a)) ** 2
        assert toy.asymptotic_variance("laplace", a) == pytest.approx(closed, rel=1e-9)
    # limits: alpha -> infinity is the variance (L2), alpha -> 0 is 1/(4 f(0)^2) (L1)
    assert toy.asymptotic_variance("normal", 40.0) == pytest.approx(1.0, rel=1e-9)
    assert toy.asymptotic_variance("cauchy", 1e-4) == pytest.approx(math.pi**2 / 4, rel=1e-3)


@pytest.mark.parametrize("a", [1e-9, 1e-6, 1e-3, 0.1, 1.0, 3.0, 30.0])
def test_asymptotic_variance_laplace_against_mpmath_far_below_the_noise_scale(a: float) -> None:
    # V(a) = 2 (1 - (1 + a) e^-a) / (1 - e^-a)^2 for unit Laplace noise, evaluated at 50 digits:
    # both the numerator and the denominator cancel in float64 when a << 1
    import mpmath

    with mpmath.workdps(50):
        x = mpmath.mpf(a)
        closed = float(2 * (1 - (1 + x) * mpmath.exp(-x)) / (-mpmath.expm1(-x)) ** 2)
    assert toy.asymptotic_variance("laplace", a) == pytest.approx(closed, rel=1e-9)


RATIOS = [1e-200, 1e-30, 1e-8, 1e-3, 0.7, 3.0, 1e3, 1e6, 1e30, 1e100]


def _closed_form_variance(family: str, loss: str, r: float) -> float:
    """V(r) at unit scale in closed form, in mpmath: Laplace (both losses), Normal and
    Cauchy (Huber), from E[psi^2] and E[psi'] written with erf/atan and exp."""
    import mpmath

    # the moments cancel to O(r^3) for small r: 40 digits plus three per decade below 1
    with mpmath.workdps(40 + 3 * max(0, -math.floor(math.log10(r)))):
        x = mpmath.mpf(r)
        if family == "laplace" and loss == "kl_lower":  # E[e^{-k|e|}] = 1/(1+k)
            return float(2 * (x + 1) / (x + 2))
        if family == "laplace":
            return float(2 * (1 - (1 + x) * mpmath.exp(-x)) / (-mpmath.expm1(-x)) ** 2)
        if family == "normal":
            ep = mpmath.erf(x / mpmath.sqrt(2))
            e2 = ep - 2 * x * mpmath.npdf(x) + x * x * mpmath.erfc(x / mpmath.sqrt(2))
        else:  # cauchy
            ep = 2 * mpmath.atan(x) / mpmath.pi
            e2 = 2 * (x - mpmath.atan(x)) / mpmath.pi + x * x * 2 * mpmath.acot(x) / mpmath.pi
        return float(e2 / ep**2)


@pytest.mark.parametrize("r", RATIOS)
@pytest.mark.parametrize("family, loss", [("laplace", "huber"), ("laplace", "kl_lower"),
                                          ("normal", "huber"), ("cauchy", "huber")])
def test_asymptotic_variance_closed_forms_for_every_ratio(family: str, loss: str, r: float) -> None:
    """From 1e-200 to 1e100 times the noise scale: the integrals used to underflow (0/0 below
    1e-154), miss the density's bulk (V = 0 for Normal noise at alpha = 1e6) or the peak of
    e^{-e/alpha} (a ZeroDivisionError for the KL bound at alpha = 1e-8)."""
    want = _closed_form_variance(family, loss, r)
    # (measured: at most 1.1e-14 on the dense grid below)
    assert toy.asymptotic_variance(family, r, 1.0, loss) == pytest.approx(want, rel=3e-14, abs=0)
    # V(alpha; s) = s^2 V(alpha/s; 1)
    assert toy.asymptotic_variance(family, 4 * r, 4.0, loss) == pytest.approx(16 * want,
                                                                             rel=3e-14, abs=0)


def _mp_pdf(family: str):
    """The unit-scale noise density of ``family`` in mpmath, for e >= 0."""
    import mpmath

    return {"normal": lambda e: mpmath.npdf(e),
            "logistic": lambda e: mpmath.exp(-e) / (1 + mpmath.exp(-e)) ** 2,
            "cauchy": lambda e: 1 / (mpmath.pi * (1 + e * e)),
            "laplace": lambda e: mpmath.exp(-e) / 2,
            "student_t": lambda e: 2 / (mpmath.sqrt(3) * mpmath.pi) * (1 + e * e / 3) ** -2}[family]


@pytest.mark.parametrize("family, loss", [("laplace", "huber"), ("laplace", "kl_lower"),
                                          ("normal", "huber"), ("cauchy", "huber")])
def test_asymptotic_variance_closed_forms_on_a_dense_grid(family: str, loss: str) -> None:
    """31 ratios from 1e-200 to 1e100 and 13 around the switch at r = 1 (measured: at most
    1.1e-14, Cauchy at 1e75)."""
    ratios = [*np.geomspace(1e-200, 1e100, 31), *np.geomspace(0.5, 3.0, 13), 1.0]
    for r in map(float, ratios):
        want = _closed_form_variance(family, loss, r)
        assert toy.asymptotic_variance(family, r, 1.0, loss) == pytest.approx(want, rel=3e-14, abs=0), r


@pytest.mark.parametrize("family", ["laplace", "logistic", "cauchy", "normal", "student_t"])
@pytest.mark.parametrize("loss", ["huber", "kl_lower"])
def test_asymptotic_variance_limits_and_mpmath_for_every_family(family: str, loss: str) -> None:
    """V -> 1/(4 f(0)^2) (L1) as alpha/s -> 0 and the noise variance (L2) as alpha/s -> inf;
    in between, mpmath's quadrature of E[psi^2] / E[psi']^2 (measured: at most 6.5e-16)."""
    import mpmath

    res = toy.optimal_alpha_constant(family, loss, lo=0.5, hi=2.0)  # (only for v_l1, v_l2)
    assert toy.asymptotic_variance(family, 1e-200, 1.0, loss) == pytest.approx(res["v_l1"],
                                                                              rel=2e-14, abs=0)
    if math.isfinite(res["v_l2"]):
        assert toy.asymptotic_variance(family, 1e100, 1.0, loss) == pytest.approx(
            res["v_l2"], rel=2e-14, abs=0)
    pdf = _mp_pdf(family)
    # (1, 1.95, 1e4 and 17782.8: where quad without split points and a tight tolerance was up to
    # 2.8e-12 off for Cauchy and Student-t noise)
    for r in (1e-3, 0.7, 1.0, 1.95, 30.0, 1e3, 1e4, 17782.794100389227, 1e5):
        with mpmath.workdps(25):
            x = mpmath.mpf(r)
            pts = sorted({mpmath.mpf(0), x, mpmath.mpf(1), 40 * x}) + [mpmath.inf]
            if loss == "huber":
                below = [p for p in pts if p <= x]
                e2 = (2 * mpmath.quad(lambda e: e * e * pdf(e), below)
                      + 2 * x * x * mpmath.quad(pdf, [x] + [p for p in pts if p > x]))
                ep = 2 * mpmath.quad(pdf, below)
            else:
                e2 = 2 * mpmath.quad(lambda e, x=x: (x * mpmath.expm1(-e / x)) ** 2 * pdf(e), pts)
                ep = 2 * mpmath.quad(lambda e, x=x: mpmath.exp(-e / x) * pdf(e), pts)
            want = float(e2 / ep**2)
        assert toy.asymptotic_variance(family, r, 1.0, loss) == pytest.approx(want, rel=1e-14, abs=0), r


# where quad's default tolerances were 2.7e-14 and 6.2e-14 off (Cauchy at r = 10^-0.5, Student-t
# at 0.62), and quad without the split points 8.1e-13 (Cauchy at 1e30); the reference splits at
# every second power of ten up to 1e58, so that no part of the heavy tail is skipped
@pytest.mark.parametrize("family, r", [("cauchy", 0.31622776601683794),
                                       ("student_t", 0.6199378522630605), ("cauchy", 1e30),
                                       ("student_t", 1e30)])
def test_asymptotic_variance_kl_for_heavy_tails_against_mpmath(family: str, r: float) -> None:
    import mpmath

    pdf = _mp_pdf(family)
    with mpmath.workdps(30):
        x = mpmath.mpf(r)
        pts = sorted({mpmath.mpf(0), x, 40 * x, *(mpmath.mpf(10) ** k for k in range(0, 60, 2))})
        e2 = 2 * mpmath.quad(lambda e: (x * mpmath.expm1(-e / x)) ** 2 * pdf(e), [*pts, mpmath.inf])
        ep = 2 * mpmath.quad(lambda e: mpmath.exp(-e / x) * pdf(e), [*pts, mpmath.inf])
        want = float(e2 / ep**2)
    assert toy.asymptotic_variance(family, r, 1.0, "kl_lower") == pytest.approx(want, rel=1e-14, abs=0)


def test_asymptotic_variance_rejects_a_ratio_above_1e100() -> None:
    with pytest.raises(ValueError, match=r"alpha/scale must be at most 1e\+100"):
        toy.asymptotic_variance("normal", 1e101)
    with pytest.raises(ValueError, match="alpha=1.0, scale=1e-101"):
        toy.asymptotic_variance("normal", 1.0, 1e-101)


def test_optimal_alpha_constant_finds_the_l1_limit_from_a_tiny_lower_end() -> None:
    # V(a) -> 1 / (4 f(0)^2) = 1 from above as a -> 0 for Laplace noise: the median is best,
    # however small the search starts
    res = toy.optimal_alpha_constant("laplace", lo=1e-8)
    assert (res["c"], res["boundary"]) == (0.0, "lower")
    assert res["v_min"] == pytest.approx(1.0, rel=1e-6)


def test_asymptotic_variance_kl_matches_direct_integration() -> None:
    a = 0.8
    d = stats.logistic()

    def psi(e: float) -> float:
        return a * math.copysign(1 - math.exp(-abs(e) / a), e)

    e2 = integrate.quad(lambda e: psi(e) ** 2 * d.pdf(e), -np.inf, np.inf)[0]
    ep = integrate.quad(lambda e: math.exp(-abs(e) / a) * d.pdf(e), -np.inf, np.inf)[0]
    assert toy.asymptotic_variance("logistic", a, loss="kl") == pytest.approx(e2 / ep**2,
                                                                            rel=1e-7)


def test_optimal_alpha_scales_linearly() -> None:
    for fam in ("logistic", "cauchy", "student_t"):
        c = toy.optimal_alpha_constant(fam)["c"]
        assert 0 < c < math.inf
        for s in (0.5, 3.0):
            v = [toy.asymptotic_variance(fam, c * s * f, s) for f in (0.9, 1.0, 1.1)]
            assert v[1] < v[0] and v[1] < v[2]  # c * s minimises V at scale s
            assert toy.asymptotic_variance(fam, c * s, s) == pytest.approx(
                s * s * toy.asymptotic_variance(fam, c), rel=1e-9)
    assert toy.optimal_alpha_constant("laplace")["boundary"] == "lower"  # the median is best
    assert toy.optimal_alpha_constant("normal")["boundary"] == "upper"  # the mean is best


def test_theory_predicts_the_exact_solver_rmse() -> None:
    # Monte Carlo: E[RMSE^2] ~ V(alpha) K / N with orthonormal features
    d = toy.make_data(("logistic",), (1.0,), tuple(range(24)), n=3000, n_test=3000)
    ex = toy.exact_grid(d, (2.0,), progress=False)
    mse = float(np.mean(ex.rmse**2))
    assert mse == pytest.approx(toy.theory_rmse("logistic", 2.0, 1.0, n=3000) ** 2, rel=0.35)


# --------------------------------------------------------------------------------- summaries


def test_linear_fit_and_best_alpha() -> None:
    fit = toy.linear_fit([1, 2, 3, 4], [3, 5, 7, 9])
    assert fit["slope"] == pytest.approx(2) and fit["intercept"] == pytest.approx(1)
    assert fit["r2"] == pytest.approx(1)
    assert toy.linear_fit([1, 2], [1, 1])["r2"] is None  # constant: R^2 undefined
    assert toy.linear_fit([1, float("nan")], [1, 2])["slope"] is None
    best, val = toy.best_alpha(np.array([[3.0, 1.0, np.nan], [np.nan] * 3]), [0.1, 1.0, 10.0])
    assert best[0] == 1.0 and val[0] == 1.0 and np.isnan(best[1])


def _tiny_config() -> toy.ToyConfig:
    return toy.get_config("quick", families=("laplace",), scales=(0.5, 1.5),
                          seeds=(0, 1), alphas=(0.1, 1.0), lrs=(1.0, 16.0), iterations=30,
                          n=600, n_test=200, exact_losses=("huber", "kl", "l1", "l2"),
                          gd_losses=("huber", "l2"), extra_gd_bases=("scaled",))


def test_run_payload_is_json_and_complete() -> None:
    payload = toy.run(config=_tiny_config(), progress=False)
    text = json.dumps(payload, allow_nan=False)
    assert "NaN" not in text
    assert set(payload["methods"]) == {"exact", "gd", "gd_scaled"}
    s = payload["methods"]["gd"]["huber"]["summary"]["laplace"]
    assert len(s["curve_best"]) == 2 and set(s["curve_fit"]) == {"slope", "intercept", "r2", "n"}
    assert payload["theory"]["laplace"]["huber"]["c"] == 0.0
    assert payload["methods"]["gd"]["huber"]["gd_vs_exact"]["relative_median"] >= 0
    assert payload["methods"]["exact"]["huber"]["converged_fraction"] == 1.0
    gd = payload["methods"]["gd"]["huber"]
    assert set(gd["diverged_fraction_by_family"]) == {"laplace"}
    assert sum(gd["status_counts"].values()) == 2 * 2 * 2 * 2
    assert "diverged" in gd["best_alpha_rule"]


def test_cli_writes_results_and_figure(tmp_path: Path, monkeypatch) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from klhuber import cli
    from klhuber.results import load_results

    monkeypatch.setitem(toy.PROFILES, "quick", replace(_tiny_config(), extra_gd_bases=()))
    rc = cli.main(["toy", "--profile", "quick", "--device", "cpu", "--out", str(tmp_path),
                   "--no-progress"])
    assert rc == 0
    doc = load_results(tmp_path / "toy_quick.json")
    assert doc["provenance"]["device"].startswith("cpu") and doc["profile"] == "quick"
    assert (tmp_path / "fig2_quick.png").stat().st_size > 0
    assert (tmp_path / "fig2_quick.svg").exists()
    assert not (tmp_path / "checkpoints" / "quick").exists()
    fig = toy.plot_fig2(doc, stat="seeds")
    toy.plot_rmse_curves(doc, "laplace")
    assert len(fig.axes) == 1
    assert len(toy.plot_rmse_panels(doc, doc["config"]["families"]).axes) == len(
        doc["config"]["families"])


def test_cli_stop_after_s_exits_cleanly_without_results(tmp_path: Path, monkeypatch,
                                                        capsys) -> None:
    # the resume itself is tested on gd_grid (test_deadline_stops_between_chunks_and_resumes)
    from klhuber import cli

    monkeypatch.setitem(toy.PROFILES, "quick", replace(_tiny_config(), extra_gd_bases=()))
    rc = cli.main(["toy", "--profile", "quick", "--out", str(tmp_path), "--no-progress",
                   "--stop-after-s", "0"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "stopped early" in out and "NOT written" in out
    assert not (tmp_path / "toy_quick.json").exists()
    assert not list(tmp_path.glob("fig2_*"))


def test_cli_no_gd_writes_exact_only_file(tmp_path: Path, monkeypatch) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from klhuber import cli
    from klhuber.results import load_results

    monkeypatch.setitem(toy.PROFILES, "quick", replace(_tiny_config(), extra_gd_bases=()))
    rc = cli.main(["toy", "--profile", "quick", "--no-gd", "--out", str(tmp_path),
                   "--no-progress"])
    assert rc == 0
    doc = load_results(tmp_path / "toy_quick_exact.json")
    assert not (tmp_path / "toy_quick.json").exists()
    assert doc["methods"]["gd"] == {} and doc["config"]["gd_losses"] == []
    assert doc["methods"]["exact"]["huber"]["converged_fraction"] == 1.0
    assert (tmp_path / "fig2_quick_exact.png").stat().st_size > 0
