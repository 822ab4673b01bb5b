"""Tests for klhuber.related.barron: Barron's general and adaptive robust loss."""

from __future__ import annotations

import math

import mpmath as mp
import numpy as np
import pytest
import torch
from scipy import integrate

from klhuber.related import barron as B

F64 = torch.float64


pytestmark = pytest.mark.usefixtures("one_thread")


def _reference(x: float, a: float) -> float:
    """rho(x, a, 1) in 80-digit arithmetic (general formula, a not in {0, 2, ±inf})."""
    with mp.workdps(80):
        z = mp.mpf(x) ** 2
        a = mp.mpf(a)
        b = abs(a - 2)
        return float((b / a) * (mp.power(1 + z / b, a / 2) - 1))


@pytest.mark.parametrize("name", list(B.special_case_losses()))
def test_special_cases_closed_forms(name):
    alpha, closed = B.special_case_losses()[name]
    x = torch.linspace(-50, 50, 2001, dtype=F64)
    x = torch.cat([x, torch.tensor([1e-10, -1e-6, 1e-3], dtype=F64)])
    z = x**2
    got = B.general_loss(x, alpha, 1.0)
    want = closed(z)
    rel = ((got - want).abs() / want.abs().clamp_min(1e-300))[z > 0]
    assert rel.max().item() <= 1e-12
    assert (got[z == 0] == 0).all()


@pytest.mark.parametrize("scale", [0.1, 1.0, 7.5])
def test_scale_enters_as_x_over_c(scale):
    x = torch.linspace(-5, 5, 101, dtype=F64)
    for a in (-3.0, 0.0, 0.5, 1.0, 2.0, 4.0):
        torch.testing.assert_close(B.general_loss(x, a, scale), B.general_loss(x / scale, a, 1.0),
                                   rtol=1e-13, atol=0)


ALPHAS = [1e-12, -1e-12, 1e-7, 0.3, 1 - 1e-9, 1.0 + 1e-9, 1.5, 2 - 1e-9, 2 + 1e-9, 2 - 1e-13,
          2 + 1e-13, 2.5, 5.0, -5.0, -1e6, 1e3]


@pytest.mark.parametrize("alpha", ALPHAS)
def test_general_formula_and_near_singular_alpha(alpha):
    for xv in (1e-8, 1e-3, 0.5, 1.0, 3.0, 30.0):
        if alpha > 100 and xv > 3:
            continue  # exp overflow territory of the reference comparison is not interesting
        got = B.general_loss(torch.tensor(xv, dtype=F64), alpha).item()
        ref = _reference(xv, alpha)
        assert abs(got - ref) <= 1e-12 * abs(ref), (alpha, xv, got, ref)


def test_limits_are_continuous():
    x = torch.linspace(-10, 10, 201, dtype=F64)
    for a0 in (0.0, 2.0):
        for eps in (1e-9, -1e-9):
            # near alpha = 2 the difference is ~ eps * z/4 * log(z/eps) (not Lipschitz in alpha)
            diff = (B.general_loss(x, a0 + eps) - B.general_loss(x, a0)).abs().max().item()
            assert diff < 1e-6
    big = B.general_loss(x, -1e8)
    torch.testing.assert_close(big, B.general_loss(x, -math.inf), rtol=1e-6, atol=1e-7)


def test_monotone_in_alpha_and_x():
    x = torch.linspace(0, 10, 101, dtype=F64)
    alphas = [-math.inf, -10, -2, -0.5, 0, 0.5, 1, 1.5, 2, 3]
    losses = torch.stack([B.general_loss(x, a) for a in alphas])
    assert (losses.diff(dim=0) >= -1e-15).all()  # increasing in alpha
    assert (losses.diff(dim=1) >= 0).all()  # increasing in |x|


def test_derivative_matches_autograd_and_closed_form():
    x = torch.linspace(-6, 6, 121, dtype=F64, requires_grad=True)
    for a in (-math.inf, -2.0, 0.0, 0.5, 1.0, 1.9999999, 2.0, 3.0):
        (g,) = torch.autograd.grad(B.general_loss(x, a, 1.3).sum(), x)
        torch.testing.assert_close(g, B.general_loss_derivative(x.detach(), a, 1.3),
                                   rtol=1e-12, atol=1e-14)
    # alpha = 1: x / (c^2 sqrt((x/c)^2 + 1))
    xd = x.detach()
    torch.testing.assert_close(B.general_loss_derivative(xd, 1.0, 2.0),
                               xd / (4 * torch.sqrt((xd / 2) ** 2 + 1)), rtol=1e-13, atol=0)


def test_gradcheck_x_alpha_scale():
    for a0 in (-3.0, -0.7, 1e-6, 0.0, 0.4, 1.0, 1.7, 2.6):
        x = torch.tensor([-2.0, -0.3, 0.2, 1.5], dtype=F64, requires_grad=True)
        alpha = torch.tensor(a0, dtype=F64, requires_grad=True)
        scale = torch.tensor(0.8, dtype=F64, requires_grad=True)
        assert torch.autograd.gradcheck(B.general_loss, (x, alpha, scale), eps=1e-6, atol=1e-7)


def test_alpha_gradient_is_finite_at_special_values():
    x = torch.linspace(-3, 3, 13, dtype=F64)
    for a0 in (0.0, 2.0, -math.inf, math.inf, 1.0):
        alpha = torch.tensor(a0, dtype=F64, requires_grad=True)
        scale = torch.tensor(1.0, dtype=F64, requires_grad=True)
        B.general_loss(x, alpha, scale).sum().backward()
        assert torch.isfinite(alpha.grad) and torch.isfinite(scale.grad)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_low_precision(dtype):
    x = torch.linspace(-20, 20, 401)
    for a in (-math.inf, -2.0, 0.0, 1e-3, 1.0, 1.999, 2.0, 2.001, 3.0):
        want = B.general_loss(x.to(F64), a)
        got = B.general_loss(x.to(dtype), a)
        assert got.dtype == dtype and torch.isfinite(got).all()
        tol = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 2e-2}[dtype]
        assert ((got.to(F64) - want).abs() <= tol * want.abs() + 1e-7).all()


def test_bad_input():
    with pytest.raises(ValueError, match="scale"):
        B.general_loss(1.0, 1.0, 0.0)
    with pytest.raises(ValueError, match="scale"):
        B.general_loss(1.0, 1.0, -1.0)
    with pytest.raises(ValueError, match="alpha"):
        B.general_loss(1.0, math.nan, 1.0)
    with pytest.raises(ValueError, match="alpha"):
        B.nll(1.0, -0.5, 1.0)
    with pytest.raises(ValueError, match="alpha"):
        B.log_partition(-0.5)  # (issue 17: every alpha >= 0 is now supported, 3.5 included)
    with pytest.raises(ValueError, match="alpha_lo"):
        B.AdaptiveLoss(alpha_lo=-1.0)
    with pytest.raises(ValueError, match="scale_lo"):
        B.AdaptiveLoss(scale_lo=0.0)
    with pytest.raises(ValueError, match="reduction"):
        B.GeneralLoss(reduction="avg")


def test_partition_closed_forms_and_quadrature():
    assert B.log_partition_quad(0.0) == pytest.approx(math.log(math.pi * math.sqrt(2)), abs=0)
    assert B.log_partition_quad(2.0) == pytest.approx(0.5 * math.log(2 * math.pi), abs=0)
    # the quadrature is continuous onto the closed forms
    assert B.log_partition_quad(1e-9) == pytest.approx(math.log(math.pi * math.sqrt(2)), abs=1e-8)
    assert B.log_partition_quad(2 + 1e-9) == pytest.approx(0.5 * math.log(2 * math.pi), abs=1e-8)
    # against 30-digit mpmath quadrature
    for a in (0.05, 1.0, 2.5):
        with mp.workdps(30):
            a_m = mp.mpf(a)
            b = abs(a_m - 2)
            ref = mp.log(2 * mp.quad(lambda x, b=b, a_m=a_m: mp.exp(-(b / a_m) * (mp.power(1 + x * x / b, a_m / 2) - 1)),
                                     [0, 1, 10, 100, mp.inf]))
        assert B.log_partition_quad(a) == pytest.approx(float(ref), abs=1e-12)


def test_log_partition_interpolation_accuracy():
    rng = np.random.default_rng(0)
    alphas = np.concatenate([rng.uniform(0, 3, 40), rng.uniform(0, 0.01, 10),
                             2 + rng.uniform(-0.01, 0.01, 10), [0.0, 2.0, 3.0, 1.0]])
    got = B.log_partition(torch.tensor(alphas, dtype=F64)).numpy()
    want = np.array([B.log_partition_quad(a) for a in alphas])
    assert np.abs(got - want).max() < 3e-7


def test_log_partition_gradient_matches_finite_differences():
    for a0 in (0.05, 0.7, 1.3, 1.95, 2.05, 2.8):
        a = torch.tensor(a0, dtype=F64, requires_grad=True)
        (g,) = torch.autograd.grad(B.log_partition(a), a)
        h = 1e-4
        fd = (B.log_partition_quad(a0 + h) - B.log_partition_quad(a0 - h)) / (2 * h)
        assert g.item() == pytest.approx(fd, abs=2e-4)


@pytest.mark.parametrize("alpha", [0.0, 0.001, 0.1, 0.5, 1.0, 1.5, 1.9, 1.999, 2.0, 2.001, 2.5, 3.0])
@pytest.mark.parametrize("scale", [0.3, 2.0])
def test_density_integrates_to_one(alpha, scale):
    def p(x: float) -> float:
        return B.density(torch.tensor(x, dtype=F64), alpha, scale).item()

    # substitution x = scale * sqrt(2) tan(theta) for the Cauchy-like tails at alpha = 0
    c = scale * math.sqrt(2)

    def integrand(t: float) -> float:
        co = math.cos(t)
        return 0.0 if co <= 0 else p(c * math.tan(t)) * c / (co * co)

    total, _ = integrate.quad(integrand, -math.pi / 2, math.pi / 2, epsabs=1e-11, limit=200)
    assert total == pytest.approx(1.0, abs=1e-6)


def test_nll_is_gaussian_and_cauchy_at_the_ends():
    x = torch.linspace(-4, 4, 41, dtype=F64)
    s = torch.tensor(0.7, dtype=F64)
    gauss = -torch.distributions.Normal(torch.zeros((), dtype=F64), s).log_prob(x)
    torch.testing.assert_close(B.nll(x, 2.0, s), gauss, rtol=1e-12, atol=1e-12)
    cauchy = -torch.distributions.Cauchy(torch.zeros((), dtype=F64), s * math.sqrt(2)).log_prob(x)
    torch.testing.assert_close(B.nll(x, 0.0, s), cauchy, rtol=1e-12, atol=1e-12)


def test_adaptive_module_bounds_and_gradients():
    loss = B.AdaptiveLoss(num_dims=2, dtype=F64)
    assert torch.allclose(loss.alpha, torch.tensor(1.0, dtype=F64))
    assert torch.allclose(loss.scale, torch.tensor(1.0, dtype=F64))
    with torch.no_grad():
        loss.latent_alpha.fill_(50.0)
        loss.latent_scale.fill_(-50.0)
    assert (loss.alpha <= 1.999).all() and (loss.scale >= 1e-5).all()
    with torch.no_grad():
        loss.latent_alpha.fill_(0.3)
        loss.latent_scale.fill_(0.2)
    inp = torch.randn(64, 2, dtype=F64)
    value = loss(inp, torch.zeros_like(inp))
    value.backward()
    assert torch.isfinite(loss.latent_alpha.grad).all() and torch.isfinite(loss.latent_scale.grad).all()
    fixed = B.AdaptiveLoss(alpha_lo=1.0, alpha_hi=1.0, scale_lo=0.5, scale_init=0.5, dtype=F64)
    assert list(fixed.parameters()) == []
    assert fixed.alpha.item() == 1.0 and fixed.scale.item() == 0.5


def test_adaptive_learns_the_shape_of_the_data():
    """Gaussian data pushes alpha up to the top of (0, 2); Cauchy data pushes it to 0."""
    torch.manual_seed(0)
    results = {}
    for name, sample in (("gauss", torch.randn(4000, 1, dtype=F64) * 0.5),
                         ("cauchy", torch.distributions.Cauchy(0.0, 0.5).sample((4000, 1)).to(F64))):
        loss = B.AdaptiveLoss(dtype=F64)
        opt = torch.optim.Adam(loss.parameters(), lr=0.05)
        for _ in range(300):
            opt.zero_grad()
            value = loss(sample, torch.zeros_like(sample))
            value.backward()
            opt.step()
        results[name] = loss.alpha.item()
    assert results["gauss"] > 1.8
    assert results["cauchy"] < 0.3


def test_general_module():
    m = B.GeneralLoss(alpha=0.0, scale=2.0, reduction="sum")
    a, b = torch.randn(10, dtype=F64), torch.randn(10, dtype=F64)
    torch.testing.assert_close(m(a, b), torch.log1p(0.5 * ((a - b) / 2) ** 2).sum())


def test_outlier_data_and_fits():
    x, y, out = B.outlier_line_data(n=100, seed=0)
    assert x.shape == y.shape == out.shape == (100,)
    inl = ~out
    resid = y[inl] - (0.7 * x[inl] + 0.15)
    assert resid.std().item() == pytest.approx(0.025, rel=0.3)
    assert set(np.round(y[out].numpy().astype(float), 6).tolist()) <= {0.05, 0.85}
    l2 = B.fit_line(x, y, "l2", epochs=2000)
    ad = B.fit_line(x, y, "adaptive", epochs=2000)
    assert abs(ad.slope - 0.7) < 0.05 and abs(ad.shift - 0.15) < 0.03
    assert abs(ad.slope - 0.7) < abs(l2.slope - 0.7)
    assert 0.001 <= ad.alpha <= 1.999
    with pytest.raises(ValueError, match="loss"):
        B.fit_line(x, y, "l3", epochs=1)


def test_tensor_and_number_alpha_paths_agree():
    x = torch.linspace(-30, 30, 601, dtype=F64)
    for a in [-math.inf, -1e6, -2.0, -1e-9, 0.0, 1e-9, 0.5, 1.0, 1.5, 2 - 1e-12, 2.0, 2 + 1e-12,
              3.0, 40.0]:
        xs = x if a < 10 else x / 10
        want = B.general_loss(xs, a, 1.7)
        got = B.general_loss(xs, torch.tensor(a, dtype=F64), 1.7)
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    per_element = torch.tensor([-math.inf, -2.0, 0.0, 1.0, 2.0, 5.0], dtype=F64)
    xs = torch.full_like(per_element, 1.3)
    want = torch.stack([B.general_loss(xs[i], a.item()) for i, a in enumerate(per_element)])
    torch.testing.assert_close(B.general_loss(xs, per_element), want, rtol=1e-15, atol=0)


def test_polynomial_fits_on_the_toy_data():
    from klhuber import toy

    data = toy.make_data(("laplace",), (0.2,), (1,), n=500, n_test=10)
    x, y = data.x[0], data.y[0, 0, 0]
    xt = torch.linspace(-2, 2, 401, dtype=F64)
    yt = toy.ground_truth(xt)
    l2 = B.fit_polynomial(x, y, xt, yt, "l2")
    assert l2.test_rmse.shape == (1,) and l2.test_rmse.item() < 0.1
    betas = torch.tensor([[0.05], [0.2], [5.0]], dtype=F64)
    hub = B.fit_polynomial(x, y, xt, yt, lambda r: torch.where(r.abs() < betas, 0.5 * r**2,
                                                               betas * (r.abs() - 0.5 * betas)),
                           n_fits=3, steps=300)
    assert hub.test_rmse.shape == (3,) and (hub.test_rmse < 0.1).all()
    # the batch equals separate runs
    one = B.fit_polynomial(x, y, xt, yt, lambda r: torch.where(r.abs() < 0.2, 0.5 * r**2,
                                                               0.2 * (r.abs() - 0.1)), steps=300)
    torch.testing.assert_close(one.coef[0], hub.coef[1], rtol=1e-9, atol=1e-9)
    ad = B.fit_polynomial(x, y, xt, yt, "adaptive", steps=300)
    assert ad.alpha.shape == ad.scale.shape == (1,) and ad.test_rmse.item() < 0.1
    with pytest.raises(ValueError, match="loss"):
        B.fit_polynomial(x, y, xt, yt, "l3")
    with pytest.raises(ValueError, match="n_fits"):
        B.fit_polynomial(x, torch.stack([y, y]), xt, yt, "adaptive", n_fits=3)


def test_meta_tensors_give_shapes_not_internal_errors():
    """Shape-only tracing (meta tensors): value checks are skipped, shapes broadcast."""
    x = torch.empty(3, 4, device="meta")
    a = torch.empty(4, device="meta")
    assert B.general_loss(x, 1.0, 1.0).shape == (3, 4)
    assert B.general_loss(x, a, a).shape == (3, 4)
    assert B.nll(x, 1.0, 1.0).shape == (3, 4)
    assert B.density(x, a, 2.0).shape == (3, 4)
    assert B.log_partition(torch.empty(2, device="meta")).shape == (2,)
    with pytest.raises(ValueError, match="broadcast"):
        B.general_loss(x, torch.empty(5, device="meta"), 1.0)


def test_vmap_matches_the_batched_call_and_checks_still_run_outside():
    r = torch.randn(5, 3, dtype=F64)
    per_row = torch.func.vmap(lambda row: B.general_loss(row, 0.5, 0.7).sum())(r)
    torch.testing.assert_close(per_row, B.general_loss(r, 0.5, 0.7).sum(dim=1))
    a = torch.tensor([0.5, 1.5, -2.0], dtype=F64)  # tensor alpha: the analytic backward, vmapped
    g = torch.func.vmap(torch.func.grad(lambda row: B.general_loss(row, a, 0.7).sum()))(r)
    x = r.clone().requires_grad_()
    B.general_loss(x, a, 0.7).sum().backward()
    torch.testing.assert_close(g, x.grad)
    with pytest.raises(ValueError, match="scale"):
        B.general_loss(r, 0.5, -0.7)


def test_log_partition_of_a_zero_dim_tensor_matches_the_vector_call():
    alphas = torch.tensor([0.0, 0.37, 1.0, 2.5, 7.0, math.inf], dtype=F64)
    batch = B.log_partition(alphas)
    for a, want in zip(alphas, batch):
        assert B.log_partition(a).item() == want.item()
