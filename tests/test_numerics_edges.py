"""Issue 17: numerics at the edges and learnable scales that learn.

* Barron's general loss on its whole range (alpha in [-16, 3] and +-inf, float32 and float64):
  bound, sign and monotonicity properties, derivatives against mpmath, |x| = 1e20 in float32;
  log Z, the density and a sampler for every alpha >= 0 including inf.
* No NaN at the extremes of kl_huber, kl_huber_derivative, huber_bounds and laplace_kl
  (tiny, subnormal and infinite scales), with hypothesis.
* Learnable scales recover the noise scale of Laplace residuals.
"""

from __future__ import annotations

import math

import mpmath as mp
import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from scipy import integrate, stats
from torch import nn

from klhuber.losses import (
    AdaptiveKLHuberLoss,
    KLHuberLoss,
    huber_bounds,
    kl_huber,
    kl_huber_derivative,
    laplace_kl,
)
from klhuber.related import barron as B

F64, F32 = torch.float64, torch.float32
Tensor = torch.Tensor
TOL = {F64: 1e-13, F32: 1e-6}


pytestmark = pytest.mark.usefixtures("one_thread")


# --------------------------------------------------------------------------------------------
# Barron's general loss
# --------------------------------------------------------------------------------------------
def _barron_ref(x: float, a: float, c: float) -> tuple[float, float, float, float]:
    """(rho, d/dx, d/dc, d/dalpha) in 40-digit arithmetic; d/dalpha from its integral
    (b/4) int_0^L e^{alpha s/2} (e^{-s} - 1 + s) ds, L = log1p(z/b), checked against mp.diff."""
    with mp.workdps(40):
        x, a, c = mp.mpf(x), mp.mpf(a), mp.mpf(c)
        z = (x / c) ** 2
        if a == 2:
            return float(z / 2), float(x / c**2), float(-z / c), 0.0
        if mp.isinf(a):
            sg = 1 if a > 0 else -1
            f = mp.exp(sg * z / 2)
            return float(sg * mp.expm1(sg * z / 2)), float(x / c**2 * f), float(-z / c * f), 0.0
        b = abs(a - 2)
        rho = (b / a) * (mp.power(1 + z / b, a / 2) - 1) if a != 0 else mp.log1p(z / 2)
        f = mp.power(1 + z / b, a / 2 - 1)
        ell = mp.log1p(z / b)
        da = b / 4 * mp.quad(lambda s: mp.exp(a * s / 2) * (mp.exp(-s) - 1 + s), [0, ell])
        return float(rho), float(x / c**2 * f), float(-z / c * f), float(da)


def test_reference_alpha_derivative_is_the_derivative():
    for a, x in ((-7.3, 4.1), (0.4, 0.7), (2.6, 12.0), (1.3, 1e-2)):
        with mp.workdps(40):
            def rho(aa, x=x):
                b = abs(aa - 2)
                return (b / aa) * (mp.power(1 + mp.mpf(x) ** 2 / b, aa / 2) - 1)

            want = float(mp.diff(rho, mp.mpf(a)))
        assert _barron_ref(x, a, 1.0)[3] == pytest.approx(want, rel=1e-25)


def _points(dtype: torch.dtype, n: int, seed: int) -> tuple[Tensor, Tensor, Tensor]:
    rng = np.random.default_rng(seed)
    alpha = np.concatenate([rng.uniform(-16, 3, n), [-np.inf, np.inf, 0.0, 1.0, -2.0, 2.0] * 4])
    m = alpha.size
    scale = np.exp(rng.uniform(np.log(0.5), np.log(2), m))
    scale[::7] = 1.4e-5  # where the old d/dscale came out positive
    mags = np.where(rng.uniform(size=m) < 0.5, 10 * np.abs(rng.standard_normal(m)),
                    np.exp(rng.uniform(np.log(1e-4), np.log(1e4), m)))
    mags = np.where(np.isinf(alpha), np.minimum(mags, 12.0), mags)  # e^{z/2} stays finite
    x = scale * mags * np.sign(rng.uniform(-1, 1, m))
    return (torch.tensor(x, dtype=dtype), torch.tensor(alpha, dtype=dtype),
            torch.tensor(scale, dtype=dtype))



@pytest.mark.parametrize("dtype", [F64, F32])
def test_general_loss_derivatives_against_mpmath(dtype):
    """d/dx, d/dscale, d/dalpha (and rho) within 1e-13 (float64) / 1e-6 (float32) relative of
    mpmath where the value exceeds 1e-6, alpha in [-16, 3] and +-inf, x ~ 10 c |N(0,1)| and
    log-uniform |x|/c in [1e-4, 1e4], c in (0.5, 2) and 1.4e-5."""
    x, alpha, scale = _points(dtype, 300, seed=17)
    xg, ag, cg = (t.clone().requires_grad_() for t in (x, alpha, scale))
    loss = B.general_loss(xg, ag, cg)
    gx, ga, gc = torch.autograd.grad(loss.sum(), (xg, ag, cg))
    got = torch.stack([loss.detach(), gx, gc, ga], 1).double().numpy()
    ref = np.array([_barron_ref(*(float(t[i]) for t in (x, alpha, scale)))
                    for i in range(x.numel())])
    for j, name in enumerate(["rho", "d/dx", "d/dscale", "d/dalpha"]):
        m = np.abs(ref[:, j]) > 1e-6
        rel = np.abs(got[m, j] - ref[m, j]) / np.abs(ref[m, j])
        assert rel.max() <= TOL[dtype], (name, rel.max())
    # d/dscale <= 0 everywhere; the loss below its bound (alpha - 2)/alpha for alpha < 0
    assert (gc <= 0).all()
    a64 = alpha.double()
    neg = alpha < 0
    bound = torch.where(torch.isinf(a64), 1.0, (a64 - 2) / a64).to(dtype)
    assert (loss.detach()[neg] <= bound[neg]).all()
    assert torch.isfinite(loss).all() and torch.isfinite(gx).all() and torch.isfinite(ga).all()


@pytest.mark.parametrize("dtype", [F64, F32])
def test_general_loss_bound_sign_and_monotone_on_grids(dtype):
    """Dense grids in |x|/c up to 1e6 (where the old forms cancelled): loss <= (alpha-2)/alpha
    for alpha < 0, d/dscale <= 0 and the loss nondecreasing in |x|."""
    mags = torch.cat([torch.linspace(0, 50, 2001, dtype=F64),
                      torch.logspace(-8, 6, 2001, dtype=F64)]).sort().values.unique()
    alphas = [-math.inf, -16.0, -15.953064918518066, -12.57, -7.5, -2.0, -0.5, -1e-3, 0.0, 0.3,
              0.5, 1.0, 1.5, 1.999, 2.0, 2.001, 2.7, 3.0]
    for c in (1.4e-5, 0.7, 2.0):
        x = (mags * c).to(dtype)
        for a in alphas:
            if a > 2 and dtype == F32:
                xa = x[mags < 1e6]
            else:
                xa = x
            at = torch.tensor(a, dtype=dtype, requires_grad=True)
            ct = torch.tensor(c, dtype=dtype, requires_grad=True)
            loss = B.general_loss(xa, at, ct)
            assert not torch.isnan(loss).any()
            finite = torch.isfinite(loss)
            assert (loss[finite].diff() >= 0).all() if finite.sum() > 1 else True, (a, c)
            if a < 0:
                a64 = torch.tensor(a, dtype=F64)
                bound = 1.0 if a == -math.inf else ((a64 - 2) / a64).to(dtype)
                assert (loss <= bound).all(), (a, c)
            if bool(finite.all()):
                (gc,) = torch.autograd.grad(loss.sum(), ct)
                assert gc.item() <= 0
                for i in range(0, xa.numel(), 997):
                    (gci,) = torch.autograd.grad(B.general_loss(xa[i], at, ct), ct)
                    assert gci.item() <= 0, (a, c, xa[i].item(), gci.item())


def test_general_loss_float32_at_1e20():
    """Finite and correct at |x| = 1e20 in float32 wherever the true value is representable
    (the old implementation gave NaN for alpha in {0, 0.5, 1, -2})."""
    fmax = torch.finfo(F32).max
    for a in (-math.inf, -16.0, -2.0, -0.5, 0.0, 0.5, 1.0, 1.5):
        for xv in (1e20, -1e20, 3e38):
            x = torch.tensor(xv, dtype=F32, requires_grad=True)
            at = torch.tensor(a, dtype=F32, requires_grad=True)
            c = torch.tensor(0.8, dtype=F32, requires_grad=True)
            loss = B.general_loss(x, at, c)
            grads = torch.autograd.grad(loss, (x, c, at))
            ref = _barron_ref(float(x.detach()), a, float(c.detach()))
            got = [loss.item(), grads[0].item(), grads[1].item(), grads[2].item()]
            for g, r, name in zip(got, ref, ["rho", "d/dx", "d/dscale", "d/dalpha"]):
                if abs(r) < fmax:
                    assert math.isfinite(g), (a, xv, name)
                    assert abs(g - r) <= 1e-6 * abs(r) + 1e-30, (a, xv, name, g, r)
            # the Python-number alpha path agrees
            if abs(ref[0]) < fmax:
                assert B.general_loss(x.detach(), a, 0.8).item() == pytest.approx(ref[0],
                                                                                rel=1e-6)


# --------------------------------------------------------------------------------------------
# log Z, density, sampler for every alpha >= 0
# --------------------------------------------------------------------------------------------
def test_log_partition_for_every_alpha_against_quadrature():
    rng = np.random.default_rng(3)
    alphas = np.concatenate([rng.uniform(0, 3, 15), 3 + rng.exponential(2, 10),
                             np.exp(rng.uniform(np.log(3), np.log(1e6), 10)),
                             [3.0, 3.0 + 1e-9, 4.0, 1e3]])
    got = B.log_partition(torch.tensor(alphas, dtype=F64)).numpy()
    want = np.array([B.log_partition_quad(a) for a in alphas])
    assert np.abs(got - want).max() < 1e-6
    # the closed forms, exactly, and the quadrature agrees with them
    for a, lz in B.LOG_Z_CLOSED.items():
        assert B.log_partition(torch.tensor(a, dtype=F64)).item() == lz
        assert B.log_partition_quad(a) == pytest.approx(lz, abs=1e-12)
    assert B.LOG_Z_CLOSED[1.0] == pytest.approx(math.log(2 * math.e * float(mp.besselk(1, 1))),
                                                abs=1e-15)
    # gradients finite, 0 at inf, continuous across the table split at alpha = 3
    a = torch.tensor([0.0, 1.0, 2.9999, 3.0001, 50.0, math.inf], dtype=F64, requires_grad=True)
    (g,) = torch.autograd.grad(B.log_partition(a).sum(), a)
    assert torch.isfinite(g).all() and g[-1].item() == 0.0
    assert g[2].item() == pytest.approx(g[3].item(), abs=1e-4)
    with pytest.raises(ValueError, match="alpha"):
        B.log_partition(-0.5)


@pytest.mark.parametrize("alpha", [3.5, 4.0, 10.0, 100.0, 1e4, math.inf])
def test_density_integrates_to_one_for_large_alpha(alpha):
    def integrand(x: float) -> float:
        return B.density(torch.tensor(x, dtype=F64), alpha, 0.7).item()

    total, _ = integrate.quad(integrand, -30, 30, points=[-1, 0, 1], epsabs=1e-12, limit=200)
    assert total == pytest.approx(1.0, abs=1e-6)
    nll = B.nll(torch.tensor([0.0, 1.0], dtype=F64), alpha, 0.7)
    assert torch.isfinite(nll).all()


def _cdf(alpha: float) -> tuple[np.ndarray, np.ndarray]:
    th = np.linspace(-np.pi / 2, np.pi / 2, 40001)[1:-1]
    xs = np.sqrt(2) * np.tan(th)
    dens = B.density(torch.tensor(xs), alpha, 1.0).numpy() * np.sqrt(2) / np.cos(th) ** 2
    cdf = integrate.cumulative_trapezoid(dens, th, initial=0)
    return xs, cdf / cdf[-1]


@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0, 2.0, 4.0, math.inf])
def test_sampler_passes_ks_test(alpha):
    gen = torch.Generator().manual_seed(int(1000 * min(alpha, 9)))
    draws = B.sample(alpha, 2.5, (20_000,), generator=gen, dtype=F64)
    assert draws.shape == (20_000,) and draws.dtype == F64
    xs, cdf = _cdf(alpha)
    result = stats.kstest(draws.numpy() / 2.5, lambda q: np.interp(q, xs, cdf))
    assert result.pvalue > 1e-3
    # reproducible with the generator; per-draw alphas broadcast
    again = B.sample(alpha, 2.5, (20_000,), generator=torch.Generator().manual_seed(
        int(1000 * min(alpha, 9))), dtype=F64)
    assert torch.equal(draws, again)


def test_sampler_shapes_and_errors():
    alphas = torch.tensor([[0.0], [2.0], [math.inf]])
    out = B.sample(alphas, 1.0, (3, 500), generator=torch.Generator().manual_seed(0))
    assert out.shape == (3, 500) and out.dtype == torch.get_default_dtype()
    # Cauchy draws are much wider than Gaussian and alpha = inf ones
    q = out.abs().quantile(0.99, dim=1)
    assert q[0] > 3 * q[1] > 3 * q[2] / 1.5
    with pytest.raises(ValueError, match="alpha"):
        B.sample(-1.0, 1.0, (3,))
    with pytest.raises(ValueError, match="scale"):
        B.sample(1.0, 0.0, (3,))


@pytest.mark.parametrize("lo, hi", [(0.001, 1.999), (0.0, 3.0), (0.1, 0.7), (0.001, 2.999),
                                    (0.3, 1.1), (0.05, 1.9), (1.0, 10.0), (0.017, 0.333)])
def test_adaptive_loss_initial_alpha_is_the_midpoint_in_float32(lo, hi):
    loss = B.AdaptiveLoss(alpha_lo=lo, alpha_hi=hi, dtype=F32)
    want = torch.tensor(lo + (hi - lo) / 2, dtype=F32)
    assert torch.equal(loss.alpha, want.expand(1))
    assert loss.alpha.dtype == F32
    # the bounds still hold at the extremes of the latent
    with torch.no_grad():
        loss.latent_alpha.fill_(80.0)
    assert (loss.alpha <= hi).all()
    with torch.no_grad():
        loss.latent_alpha.fill_(-80.0)
    assert (loss.alpha >= lo).all()


def test_adaptive_loss_beyond_alpha_3():
    loss = B.AdaptiveLoss(alpha_lo=0.5, alpha_hi=20.0, dtype=F64)
    r = torch.randn(64, 1, dtype=F64)
    value = loss(r, torch.zeros_like(r))
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(loss.latent_alpha.grad).all()
    with pytest.raises(ValueError, match="alpha_hi"):
        B.AdaptiveLoss(alpha_hi=math.inf)


# --------------------------------------------------------------------------------------------
# No NaN at the extremes of the KL-Huber family
# --------------------------------------------------------------------------------------------
TINY = [5e-324, 1e-320, 1e-310, 1e-300, 1e-46, 1.4e-45, 1e-40, 1e-39, 1e-38, 1e-30]
HUGE = [1e30, 1e38, 3e38, 1e300, math.inf]
scales = st.one_of(st.sampled_from(TINY + HUGE + [1.0, 0.5, 3.0]),
                   st.floats(min_value=5e-324, max_value=math.inf, allow_nan=False,
                             allow_subnormal=True, exclude_min=False))
xs_ = st.one_of(st.sampled_from([0.0, -0.0, 5e-324, 1e-45, 1e-39, 1e-20, 1.0, -2.5, 1e20,
                                 3e38, -1e300]),
                st.floats(allow_nan=False, allow_infinity=False, allow_subnormal=True))


def _param(v: float, dtype: torch.dtype, as_tensor: bool) -> float | Tensor:
    return torch.tensor(v, dtype=dtype) if as_tensor else v


def _positive_in(v: float, dtype: torch.dtype) -> bool:
    return float(torch.tensor(v, dtype=dtype)) > 0


@settings(max_examples=300, deadline=None)
@given(x=xs_, alpha=scales, beta=scales, dtype=st.sampled_from([F32, F64]),
       tensors=st.booleans(), impl=st.sampled_from(["default", "autograd"]))
# |x|/beta overflows float32 while u phi(u) underflows: inf * 0 in the quadratic branch
@example(x=1e-45, alpha=1.0, beta=5e-324, dtype=F32, tensors=False, impl="autograd")
@example(x=5e-7, alpha=3e38, beta=1.4e-45, dtype=F32, tensors=True, impl="autograd")
def test_kl_huber_no_nan_at_extremes(x, alpha, beta, dtype, tensors, impl):
    if tensors and not (_positive_in(beta, dtype)):
        return  # a tensor beta that rounds to 0 is rejected (checked below)
    xt = torch.tensor([x, 0.0, -x], dtype=dtype, requires_grad=True)
    if not torch.isfinite(xt).all():
        return  # x beyond the dtype's range
    a, b = _param(alpha, dtype, tensors), _param(beta, dtype, tensors)
    v = kl_huber(xt, a, b, impl=impl)
    assert not torch.isnan(v).any(), (x, alpha, beta, v)
    assert (v >= 0).all()
    assert v[1].item() == 0.0  # D(0) = 0 for every alpha, beta
    a_eff = float(torch.tensor(alpha, dtype=dtype)) if tensors else alpha
    b_eff = float(torch.tensor(beta, dtype=dtype)) if tensors else beta
    if math.isinf(a_eff) or math.isinf(b_eff):
        assert (v == 0).all()  # the limit: D -> 0 as alpha or beta -> inf
    (g,) = torch.autograd.grad(v.sum(), xt)
    assert not torch.isnan(g[1]), (x, alpha, beta)
    if bool(torch.isfinite(v).all()) and math.isfinite(b_eff) and b_eff * torch.finfo(
            dtype).max >= 1:
        assert not torch.isnan(g).any(), (x, alpha, beta, g)
    for order in (1, 2):
        d = kl_huber_derivative(xt.detach(), a, b, order=order)
        assert not torch.isnan(d).any(), (order, x, alpha, beta, d)
        assert (d[1] == 0).all() if order == 1 else (d >= 0).all()


def _d_and_grads_ref(x: float, alpha: float, beta: float) -> tuple[float, float, float, float]:
    """Eq. 16 and its derivatives in x, alpha and beta, in mpmath (50 digits)."""
    with mp.workdps(50):
        x_, a_, b_ = mp.mpf(x), mp.mpf(alpha), mp.mpf(beta)
        u = abs(x_) / a_
        d = (a_ * mp.exp(-u) + abs(x_) - a_) / b_
        dx = mp.sign(x_) * (1 - mp.exp(-u)) / b_
        da = (mp.exp(-u) * (1 + u) - 1) / b_
        return float(d), float(dx), float(da), float(-d / b_)


def _as_float32(v: float) -> float:
    """v rounded to float32: inf beyond its largest number."""
    return float(np.float32(v)) if abs(v) < 3.4028235e38 else math.copysign(math.inf, v)


# alpha/beta overflows float32 (or nearly): the masked branches of the plain-operations path
# used to give NaN gradients in x, alpha and beta (0 * inf, inf - inf in the backward)
@pytest.mark.parametrize("x, alpha, beta", [(2e38, 1e38, 0.5), (1e38, 1e38, 0.5),
                                            (5e37, 1e38, 0.1), (-5e37, 1e38, 0.1),
                                            (1e30, 1e38, 1e-3), (3e38, 3e38, 1e-30),
                                            (1.0, 3e38, 1e-3)])
@pytest.mark.parametrize("tensors", [False, True], ids=["numbers", "tensors"])
def test_autograd_path_in_float32_where_alpha_over_beta_overflows(x, alpha, beta, tensors):
    """impl='autograd' in float32: the value is D rounded to float32 (inf only where D exceeds
    float32, e.g. not at x = 2e38, alpha = 1e38, beta = 0.5, where D = 2.27e38), and the
    gradients in x, alpha and beta are the derivatives rounded to float32, never NaN."""
    xt = torch.tensor([x], dtype=F32, requires_grad=True)
    a = torch.tensor(alpha, dtype=F32, requires_grad=True) if tensors else alpha
    b = torch.tensor(beta, dtype=F32, requires_grad=True) if tensors else beta
    v = kl_huber(xt, a, b, impl="autograd")
    grads = torch.autograd.grad(v.sum(), [xt, a, b] if tensors else [xt])
    a32, b32 = float(np.float32(alpha)), float(np.float32(beta))
    want = [_as_float32(r) for r in _d_and_grads_ref(float(np.float32(x)), a32, b32)]
    got = [v.item()] + [g.item() for g in grads]
    for name, g, w in zip(["D", "dD/dx", "dD/dalpha", "dD/dbeta"], got, want, strict=False):
        assert not math.isnan(g), (name, got, want)
        if math.isinf(w) or w == 0:
            assert g == w or abs(g) < 1e-30, (name, got, want)
        else:
            assert g == pytest.approx(w, rel=2e-6), (name, got, want)


def _d_and_grads_ref_exact(x: float, alpha: float, beta: float) -> list[float]:
    """D and its x-, alpha- and beta-derivatives in mpmath at 700 digits, enough for the
    cancellation in u - (1 - e^{-u}) down to u = 1e-320 (_d_and_grads_ref's 50 digits give 0
    there)."""
    with mp.workdps(700):  # u - (1 - e^{-u}) = u^2/2 - ... for u down to 1e-320
        x_, a_, b_ = mp.mpf(x), mp.mpf(alpha), mp.mpf(beta)
        u = abs(x_) / a_
        w = -mp.expm1(-u)  # 1 - e^{-u}
        d = a_ * (u - w) / b_
        dx = mp.sign(x_) * w / b_
        da = -(w - u * mp.exp(-u)) / b_
        return [float(v) for v in (d, dx, da, -d / b_)]


def _same_float(got: float, want: float, rel: float) -> bool:
    """Equal to rel, or both the same infinity, or both below 1e-300 in size."""
    if math.isinf(want) or math.isinf(got):
        return got == want
    if abs(want) < 1e-300:
        return abs(got) < 1e-300
    return abs(got - want) <= rel * abs(want)


# alpha/beta overflows float64: both paths used to return inf for a representable D (formed
# from alpha/beta or |x|/beta), and the plain-operations path NaN gradients (the incoming
# gradient times alpha/beta before the 1/alpha of u, and 0 * inf in masked branches)
OVERFLOWING_RATIO = [(0.9e308, 1.7e308, 0.5), (-0.9e308, 1.7e308, 0.5), (1e300, 1e300, 1e-10),
                     (3.0, 1e10, 1e-300), (1e11, 1e10, 1e-300), (-5e10, 1e10, 1e-300),
                     (1e-300, 1e10, 1e-300), (6e9, 1e10, 1e-300), (-4e9, 1e10, 1e-300),
                     (1e308, 1e300, 1e-9), (7.0, 1.0, 5e-309),
                     # |x|/beta finite in the linear branch (u = 0.518); |x|/beta overflowing
                     # in the quadratic branch (u = 1e-3) where D = 5e305 does not
                     (0.88e308, 1.7e308, 0.5), (1e7, 1e10, 1e-302)]


@pytest.mark.parametrize("x, alpha, beta", OVERFLOWING_RATIO)
@pytest.mark.parametrize("kinds", ["numbers", "tensors", "alpha tensor", "beta tensor"])
def test_float64_where_alpha_over_beta_overflows(x, alpha, beta, kinds):
    """Both paths in float64 where alpha/beta exceeds float64's largest number: D and its
    gradients in x, alpha and beta are the mpmath values rounded to float64 (inf only where the
    exact value exceeds float64), never NaN."""
    assert alpha / beta == math.inf
    want = _d_and_grads_ref_exact(x, alpha, beta)
    for impl in ("autograd", "default"):
        xt = torch.tensor([x], dtype=F64, requires_grad=True)
        a_t, b_t = kinds in ("tensors", "alpha tensor"), kinds in ("tensors", "beta tensor")
        a = torch.tensor(alpha, dtype=F64, requires_grad=True) if a_t else alpha
        b = torch.tensor(beta, dtype=F64, requires_grad=True) if b_t else beta
        v = kl_huber(xt, a, b, impl=impl)
        grads = torch.autograd.grad(v.sum(), [xt] + [a] * a_t + [b] * b_t)
        got = [v.item()] + [g.item() for g in grads]
        exp = [want[0], want[1]] + [want[2]] * a_t + [want[3]] * b_t
        names = ["D", "dD/dx"] + ["dD/dalpha"] * a_t + ["dD/dbeta"] * b_t
        for name, g, w in zip(names, got, exp, strict=True):
            assert not math.isnan(g), (impl, name, got, exp)
            assert _same_float(g, w, 4e-16 if name == "D" else TOL[F64]), (impl, name, got, exp)


@pytest.mark.parametrize("x, alpha, beta", [(0.9e308, 1.7e308, 0.5), (6e9, 1e10, 1e-300),
                                            (-5e10, 1e10, 1e-300), (-3.0, 1e-150, 2.0)])
def test_overflowing_ratio_branch_has_second_derivatives_and_torch_func(x, alpha, beta):
    """Scales outside impl='autograd''s plain range (a custom Function there): double
    backward, torch.func.hessian (forward over reverse), jacfwd (forward mode) and vmap give
    D'' = e^{-u}/(alpha beta) and D' against mpmath."""
    with mp.workdps(60):
        x_, a_, b_ = mp.mpf(x), mp.mpf(alpha), mp.mpf(beta)
        d1 = float(mp.sign(x_) * -mp.expm1(-abs(x_) / a_) / b_)
        d2 = float(mp.exp(-abs(x_) / a_) / (a_ * b_))
    xt = torch.tensor(x, dtype=F64, requires_grad=True)
    (g,) = torch.autograd.grad(kl_huber(xt, alpha, beta, impl="autograd"), xt,
                               create_graph=True)
    (h,) = torch.autograd.grad(g, xt)
    assert g.item() == pytest.approx(d1, rel=1e-15, abs=0)
    assert h.item() == pytest.approx(d2, rel=1e-14, abs=0)

    def f(z: Tensor) -> Tensor:
        return kl_huber(z, alpha, beta, impl="autograd")

    hess = torch.func.hessian(f)(torch.tensor(x, dtype=F64))
    assert hess.item() == pytest.approx(d2, rel=1e-14, abs=0)
    assert torch.func.jacfwd(f)(torch.tensor(x, dtype=F64)).item() == pytest.approx(
        d1, rel=1e-15, abs=0)
    zs = torch.tensor([x, -x], dtype=F64)
    grads = torch.func.vmap(torch.func.grad(f))(zs)
    assert grads.tolist() == pytest.approx([d1, -d1], rel=1e-15, abs=0)


@pytest.mark.parametrize("x, alpha, beta", [(1.75e308, 1e307, 0.97), (-1.7e308, 1e308, 0.6),
                                            (1e-200, 1e-210, 1e-105)])
@pytest.mark.parametrize("tensors", [False, True], ids=["numbers", "tensors"])
def test_autograd_path_outside_its_plain_range(x, alpha, beta, tensors):
    """impl='autograd' outside its plain range: where |x|/beta overflows although alpha/beta
    and D do not (D = 1.70e308 and 1.47e308 at the first two points), and at alpha/beta =
    1e-105, D and its x-gradient are the mpmath values rounded to float64."""
    want = _d_and_grads_ref_exact(x, alpha, beta)
    xt = torch.tensor([x], dtype=F64, requires_grad=True)
    a = torch.tensor(alpha, dtype=F64) if tensors else alpha
    b = torch.tensor(beta, dtype=F64) if tensors else beta
    v = kl_huber(xt, a, b, impl="autograd")
    (g,) = torch.autograd.grad(v.sum(), xt)
    assert v.item() == pytest.approx(want[0], rel=4e-16, abs=0)
    assert g.item() == pytest.approx(want[1], rel=1e-15, abs=0)


@pytest.mark.parametrize("x, alpha, beta", [(0.9e308, 1.7e308, 0.5), (-4e9, 1e10, 1e-300),
                                            (3.0, 1e-150, 2.0)])
def test_extreme_scales_function_in_forward_mode_and_double_backward(x, alpha, beta):
    """Tensor scales outside the plain range: torch.func.jacfwd (the jvp of impl='autograd''s
    Function and of the default path's, where a zero tangent meets dD/dbeta = -inf) gives
    dD/dalpha and dD/dbeta, and double backward gives d2D/(dx dalpha) = -sign(x) u e^{-u} /
    (alpha beta), all against mpmath."""
    with mp.workdps(60):
        x_, a_, b_ = mp.mpf(x), mp.mpf(alpha), mp.mpf(beta)
        u = abs(x_) / a_
        d = a_ * (u + mp.expm1(-u)) / b_
        want_da = float((mp.exp(-u) * (1 + u) - 1) / b_)
        want_db = float(-d / b_)
        want_dxda = float(-mp.sign(x_) * u * mp.exp(-u) / (a_ * b_))
    xt = torch.tensor([x], dtype=F64)
    a = torch.tensor(alpha, dtype=F64)
    b = torch.tensor(beta, dtype=F64)
    for impl in ("autograd", "default"):  # the default path's jvp: zero tangents, inf partials
        da, db = torch.func.jacfwd(lambda p, q, impl=impl: kl_huber(xt, p, q, impl=impl).sum(),
                                   argnums=(0, 1))(a, b)
        assert da.item() == pytest.approx(want_da, rel=1e-13, abs=0), impl
        assert db.item() == pytest.approx(want_db, rel=1e-13, abs=0), impl
    xg = xt.clone().requires_grad_(True)
    ag = a.clone().requires_grad_(True)
    (gx,) = torch.autograd.grad(kl_huber(xg, ag, beta, impl="autograd").sum(), xg,
                                create_graph=True)
    (gxa,) = torch.autograd.grad(gx.sum(), ag)
    assert gxa.item() == pytest.approx(want_dxda, rel=1e-13, abs=0)


KINDS = ["numbers", "tensors", "alpha tensor", "beta tensor"]


@settings(max_examples=400, deadline=None)
@given(x=xs_, alpha=scales, beta=scales, kinds=st.sampled_from(KINDS),
       impl=st.sampled_from(["autograd", "default"]))
@example(x=0.9e308, alpha=1.7e308, beta=0.5, kinds="tensors", impl="autograd")
@example(x=1.0, alpha=1e-300, beta=1e-300, kinds="tensors", impl="autograd")  # u = 1e300
@example(x=1e-45, alpha=1e-46, beta=1e-300, kinds="tensors", impl="autograd")  # D/beta = inf
@example(x=0.0, alpha=5e-324, beta=5e-324, kinds="tensors", impl="autograd")
@example(x=1e-20, alpha=1e-20, beta=1e30, kinds="numbers", impl="autograd")  # ratio 1e-50
def test_float64_value_and_gradients_against_mpmath_at_every_scale(x, alpha, beta, kinds, impl):
    """In float64 at every scale (tiny, subnormal, huge, infinite, extreme ratios), D and its
    gradients in x, alpha and beta are the mpmath values rounded to float64: within 1e-12
    where normal, the same infinity where the exact value overflows, below 1e-290 where it is
    below 1e-300, never NaN.  Checked where the scales are normal numbers, at x = 0 and where
    D and u^2 (u = |x|/alpha) are normal (elsewhere results rest on subnormal intermediates;
    the no-NaN test above covers them)."""
    a_t, b_t = kinds in ("tensors", "alpha tensor"), kinds in ("tensors", "beta tensor")
    if math.isinf(alpha) or math.isinf(beta):
        return  # the limits are checked by test_kl_huber_no_nan_at_extremes
    want = _d_and_grads_ref_exact(x, alpha, beta)
    normal = 2.3e-308  # float64's smallest normal number, rounded up
    if min(alpha, beta) < normal or (x != 0 and not (1e-300 <= want[0]
                                                     and abs(x) / alpha >= 1.5e-154)):
        return  # a subnormal scale, D or u^2 (u = |x|/alpha)
    xt = torch.tensor([x], dtype=F64, requires_grad=True)
    a = torch.tensor(alpha, dtype=F64, requires_grad=True) if a_t else alpha
    b = torch.tensor(beta, dtype=F64, requires_grad=True) if b_t else beta
    v = kl_huber(xt, a, b, impl=impl)
    got = [v.item()] + [g.item() for g in torch.autograd.grad(v.sum(), [xt] + [a] * a_t
                                                              + [b] * b_t)]
    exp = [want[0], want[1]] + [want[2]] * a_t + [want[3]] * b_t
    names = ["D", "dD/dx"] + ["dD/dalpha"] * a_t + ["dD/dbeta"] * b_t
    for name, g, w in zip(names, got, exp, strict=True):
        assert not math.isnan(g), (name, got, exp)
        if abs(w) < 1e-300:
            assert abs(g) < 1e-290, (name, got, exp)
        elif math.isinf(w) or abs(w) > 1.7976931348623157e308:
            assert g == math.copysign(math.inf, w), (name, got, exp)
        else:
            assert g == pytest.approx(w, rel=1e-12, abs=0), (name, got, exp)


@settings(max_examples=200, deadline=None)
@given(x=xs_, alpha=scales, dtype=st.sampled_from([F32, F64]), tensors=st.booleans())
def test_huber_bounds_no_nan_at_extremes(x, alpha, dtype, tensors):
    if tensors and not _positive_in(alpha, dtype):
        return
    xt = torch.tensor([x, 0.0, 1.0, -1e-3], dtype=dtype)
    lo, hi = huber_bounds(xt, _param(alpha, dtype, tensors))
    assert not (torch.isnan(lo).any() or torch.isnan(hi).any()), (x, alpha, lo, hi)
    assert (lo >= 0).all() and (lo <= hi).all()
    if math.isinf(float(torch.tensor(alpha, dtype=dtype))):  # the limits: x^2/2 and x^2
        fin = torch.isfinite(xt * xt)
        assert torch.equal(lo[fin], (0.5 * xt * xt)[fin]) and torch.equal(hi[fin], (xt * xt)[fin])


def test_extreme_values_named_in_the_issue():
    for dtype, a in ((F32, 1e-39), (F32, 1e-45), (F64, 1e-320)):
        for impl in ("default", "autograd"):
            x = torch.zeros(3, dtype=dtype, requires_grad=True)
            v = kl_huber(x, a, impl=impl)
            v.sum().backward()
            assert torch.equal(v, torch.zeros_like(v)) and torch.equal(x.grad, torch.zeros_like(v))
    x = torch.zeros(3, requires_grad=True)
    v = kl_huber(x, 1.0, 1e-39)
    v.sum().backward()
    assert torch.equal(v, torch.zeros(3)) and torch.equal(x.grad, torch.zeros(3))
    lo, hi = huber_bounds(torch.tensor([0.0, 1.0, 1e10]), 1e300)
    assert torch.equal(lo, torch.tensor([0.0, 0.5, 5e19])) and torch.equal(hi, torch.tensor(
        [0.0, 1.0, 1e20]))
    # a large float32 tensor takes the chunked path: same values for extreme scalars
    big = torch.linspace(-3, 3, 70_001)
    assert not torch.isnan(kl_huber(big, 1e-39)).any()
    assert not torch.isnan(kl_huber(big, math.inf)).any()
    torch.testing.assert_close(kl_huber(big, 1e-39), big.abs(), rtol=0, atol=0)


@settings(max_examples=200, deadline=None)
@given(sp=scales, sq=scales, d=st.floats(-1e6, 1e6))
def test_laplace_kl_no_nan_at_extremes(sp, sq, d):
    sp_t, sq_t = torch.tensor(sp, dtype=F64), torch.tensor(sq, dtype=F64)
    if math.isinf(sp) and math.isinf(sq):
        with pytest.raises(ValueError, match="scale_p and scale_q"):
            laplace_kl(torch.tensor(d, dtype=F64), sp_t, 0.0, sq_t)
        return
    v = laplace_kl(torch.tensor(d, dtype=F64), sp_t, 0.0, sq_t).item()
    assert not math.isnan(v) and v >= 0
    if math.isinf(sp) or math.isinf(sq):
        assert v == math.inf
    elif 1e-100 < sp < 1e100 and 1e-100 < sq < 1e100:  # against the closed form in mpmath
        with mp.workdps(40):
            b1, b2, dd = mp.mpf(sp), mp.mpf(sq), abs(mp.mpf(d))
            ref = (b1 * mp.exp(-dd / b1) + dd) / b2 + mp.log(b2 / b1) - 1
        assert v == pytest.approx(float(ref), rel=1e-9, abs=1e-12)


# --------------------------------------------------------------------------------------------
# Learnable scales that learn
# --------------------------------------------------------------------------------------------
def _laplace_residuals(s: float, n: int = 100_000, seed: int = 0) -> Tensor:
    u = torch.rand(n, generator=torch.Generator().manual_seed(seed), dtype=F64) - 0.5
    return -s * torch.sign(u) * torch.log1p(-2 * u.abs())


def _fit(module: nn.Module, r: Tensor, max_iter: int = 20) -> None:
    opt = torch.optim.LBFGS(module.parameters(), lr=1, max_iter=max_iter,
                            line_search_fn="strong_wolfe")
    zero = torch.zeros_like(r)

    def closure() -> Tensor:
        opt.zero_grad()
        value = module(r, zero)
        value.backward()
        return value

    opt.step(closure)


@pytest.mark.parametrize("s", [0.3, 3.0])
def test_both_scales_learnable_recover_the_noise_scale(s):
    """Cross-entropy objective (the default with two learnable scales): the theory gives
    alpha* = 0 and beta* = E|x| (the ML Laplace scale); beta recovers s within 5 %."""
    r = _laplace_residuals(s)
    m = AdaptiveKLHuberLoss().double()
    assert m.objective == "nll" and len(list(m.parameters())) == 2
    _fit(m, r)
    alpha, beta = m.alpha.item(), m.beta.item()
    assert beta == pytest.approx(s, rel=0.05)
    assert beta == pytest.approx(r.abs().mean().item(), rel=0.01)
    assert alpha < 0.02 * s
    # stationarity in beta for the learned alpha: beta = E[alpha e^{-|x|/alpha} + |x|]
    theory = (alpha * torch.exp(-r.abs() / alpha) + r.abs()).mean().item()
    assert beta == pytest.approx(theory, rel=1e-3)


@pytest.mark.parametrize("s", [0.3, 3.0])
def test_one_learnable_scale_minimises_the_full_kl(s):
    """KL of eq. 15 with one learnable scale: beta* = E[alpha e^{-|x|/alpha} + |x|] (recovers
    s within 5 % for a small label noise alpha = 0.1 s), and alpha* solves
    alpha E[(1 + u) e^{-u}] = beta, u = |x|/alpha."""
    r = _laplace_residuals(s, seed=1)
    m = AdaptiveKLHuberLoss(alpha=0.1 * s, learn_alpha=False).double()
    assert m.objective == "kl" and [n for n, _ in m.named_parameters()] == ["raw_beta"]
    _fit(m, r, max_iter=15)
    a, beta = 0.1 * s, m.beta.item()
    assert beta == pytest.approx(s, rel=0.05)
    assert beta == pytest.approx((a * torch.exp(-r.abs() / a) + r.abs()).mean().item(),
                                 rel=1e-4)
    m = AdaptiveKLHuberLoss(beta=s, learn_beta=False).double()
    _fit(m, r, max_iter=15)
    alpha = m.alpha.item()
    u = r.abs() / alpha
    assert (alpha * ((1 + u) * torch.exp(-u)).mean()).item() == pytest.approx(s, rel=1e-4)


def test_objective_validation_and_no_minimiser_combinations():
    with pytest.raises(ValueError, match="finite minimiser"):
        AdaptiveKLHuberLoss(objective="kl")
    with pytest.raises(ValueError, match="finite minimiser"):
        AdaptiveKLHuberLoss(learn_alpha=False, objective="d")
    with pytest.raises(ValueError, match="objective"):
        AdaptiveKLHuberLoss(objective="l2")
    # D alone decreases without bound in beta: the reason for the normalising terms
    r = _laplace_residuals(0.3, n=1000)
    d = [kl_huber(r, 0.1, b).mean().item() for b in (1.0, 10.0, 100.0)]
    assert d[0] > d[1] > d[2]


def test_parameters_passed_to_klhuberloss_stay_parameters_and_learn():
    beta = nn.Parameter(torch.tensor(1.0, dtype=F64))
    m = KLHuberLoss(alpha=0.03, beta=beta)
    assert [p for p in m.parameters()] == [beta] and dict(m.named_parameters())["beta"] is beta
    assert m.objective == "kl"
    r = _laplace_residuals(0.3, n=100_000, seed=2)
    opt = torch.optim.LBFGS(m.parameters(), lr=1, max_iter=15, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        opt.zero_grad()
        value = m(r, torch.zeros_like(r))
        value.backward()
        return value

    opt.step(closure)
    assert beta.item() == pytest.approx(0.3, rel=0.05)
    # both as parameters: the cross-entropy; fixed tensors stay buffers; numbers give D
    m2 = KLHuberLoss(nn.Parameter(torch.tensor(0.5)), nn.Parameter(torch.tensor(2.0)))
    assert len(list(m2.parameters())) == 2 and m2.objective == "nll"
    m3 = KLHuberLoss(torch.tensor(0.5), 2.0)
    assert list(m3.parameters()) == [] and "alpha" in dict(m3.named_buffers())
    assert m3.objective == "d"
    x = torch.randn(10)
    torch.testing.assert_close(m3(x, torch.zeros(10)), kl_huber(x, 0.5, 2.0).mean())
    # the added terms do not change the gradient with respect to the predictions
    p = torch.randn(10, dtype=F64, requires_grad=True)
    (g1,) = torch.autograd.grad(m2.double()(p, torch.zeros_like(p)), p)
    (g2,) = torch.autograd.grad(kl_huber(p, 0.5, 2.0).mean(), p)
    torch.testing.assert_close(g1, g2)
