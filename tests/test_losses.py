"""klhuber.losses: values, accuracy against mpmath, gradients, transforms and properties.

Equation numbers refer to Meyer, *An Alternative Probabilistic Interpretation of the Huber
Loss* (CVPR 2021).
"""

from __future__ import annotations

import functools
import math

import mpmath
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from klhuber import _chunked, _dispatch, _fused, _phi
from klhuber.losses import (
    AdaptiveKLHuberLoss,
    HuberLoss,
    KLHuberLoss,
    huber,
    huber_bounds,
    huber_loss,
    kl_huber,
    kl_huber_derivative,
    kl_huber_loss,
    laplace_kl,
    smooth_l1,
)

F64 = torch.float64
ALL_DTYPES = (torch.float64, torch.float32, torch.float16, torch.bfloat16)
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def naive_kl_huber(x: torch.Tensor, alpha, beta) -> torch.Tensor:
    """Eq. 16 as written (fine in float64 away from tiny |x|/alpha)."""
    a = x.abs()
    return (alpha * torch.exp(-a / alpha) + a - alpha) / beta


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Exercise the chunked eager CPU kernel on small tensors (the fused C++ kernel, which
    the default path prefers, switched off)."""
    monkeypatch.setattr(_chunked, "CHUNK", 1024)
    monkeypatch.setattr(_chunked, "CHUNK_MIN", 0)
    monkeypatch.setattr(_fused, "cpu_kernel", lambda: None)


@pytest.fixture(params=["kernel", "eager", "compiled"])
def fused_impl(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The ``impl=`` that reaches each fused forward on the CPU: the C++ kernel
    (``impl="fused"``), its eager fallback (no kernel, no torch.compile) and torch.compile
    with dynamic shapes (``impl="compiled"``)."""
    if request.param == "kernel" and _fused.cpu_kernel() is None:
        pytest.skip("no C++ compiler for the fused kernel")
    if request.param == "eager":
        monkeypatch.setattr(_fused, "cpu_kernel", lambda: None)
        monkeypatch.setenv("KLHUBER_NO_COMPILE", "1")
    return "compiled" if request.param == "compiled" else "fused"


# ---------------------------------------------------------------------------------------------
# mpmath reference (computed once per module)
# ---------------------------------------------------------------------------------------------

N_ACC = 12_000
ALPHAS = (1e-3, 0.1, 1.0, 7.5, 1e3)
BETAS = (1e-2, 1.0, 3.0)


def _mp_reference(x: np.ndarray, alpha: np.ndarray, beta: np.ndarray) -> tuple[np.ndarray, ...]:
    """D (eq. 16) and D' (Appendix B) with mpmath; expm1 and 80 digits so that
    expm1(-u) + u does not cancel even at u = 1e-30."""
    val = np.empty(len(x))
    der = np.empty(len(x))
    with mpmath.workdps(80):
        for i, (xi, ai, bi) in enumerate(zip(x.tolist(), alpha.tolist(), beta.tolist())):
            X, A, B = mpmath.mpf(xi), mpmath.mpf(ai), mpmath.mpf(bi)
            u = abs(X) / A
            em = mpmath.expm1(-u)
            val[i] = float(A * (em + u) / B)
            der[i] = float(mpmath.sign(X) * (-em) / B)
    return val, der


@functools.cache
def _accuracy_reference() -> dict[torch.dtype, dict[str, np.ndarray]]:
    """|x|/alpha log-uniform in [1e-30, 1e6], several alpha and beta, both signs; the reference
    is evaluated at the inputs rounded to each dtype (3 s of mpmath; read-only)."""
    rng = np.random.default_rng(1234)
    u = 10.0 ** rng.uniform(-30, 6, N_ACC)
    u[:4] = (1e-30, 1e6, 0.5, 1.0)
    alpha = rng.choice(ALPHAS, N_ACC)
    beta = rng.choice(BETAS, N_ACC)
    x = rng.choice([-1.0, 1.0], N_ACC) * u * alpha
    out = {}
    for dtype in (torch.float64, torch.float32):
        xs, al, be = (torch.tensor(v, dtype=F64).to(dtype).double().numpy()
                      for v in (x, alpha, beta))
        val, der = _mp_reference(xs, al, be)
        out[dtype] = {"x": xs, "alpha": al, "beta": be, "value": val, "deriv": der}
    return out


#: computed once in the fork server of ``make mutants`` (tests/mutation/fastest_first.py),
#: not once per mutant: mpmath and numpy only, no klhuber code, so no mutant could change it
MUTATION_WARMUP = (_accuracy_reference,)


@pytest.fixture(scope="module")
def accuracy_points() -> dict[torch.dtype, dict[str, np.ndarray]]:
    """The mpmath reference points of :func:`_accuracy_reference`."""
    return _accuracy_reference()


def _max_ulps(ours: np.ndarray, ref: np.ndarray, dtype: torch.dtype) -> float:
    """Max relative error in units of eps; below the smallest normal number the absolute error
    must stay within one subnormal-range ulp (0 is right where the true value underflows)."""
    info = torch.finfo(dtype)
    normal = np.abs(ref) >= info.tiny
    assert np.all(np.isfinite(ours))
    if (~normal).any():
        assert np.max(np.abs(ours[~normal] - ref[~normal])) <= info.tiny * info.eps * 2
    return float(np.max(np.abs(ours[normal] - ref[normal]) / np.abs(ref[normal])) / info.eps)


TOL = {torch.float64: 1e-14, torch.float32: 5e-7}
MEASURED: dict[str, float] = {}


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("impl", [
    "default", "autograd",
    pytest.param("compiled", marks=pytest.mark.slow),  # ~25 s cold (inductor start-up)
])
def test_accuracy_vs_mpmath_tensor_params(accuracy_points, dtype, impl):
    pts = accuracy_points[dtype]
    x = torch.tensor(pts["x"], dtype=dtype, requires_grad=True)
    alpha = torch.tensor(pts["alpha"], dtype=dtype)
    beta = torch.tensor(pts["beta"], dtype=dtype)
    val = kl_huber(x, alpha, beta, impl=impl)
    val.sum().backward()
    eps = torch.finfo(dtype).eps
    ulps_v = _max_ulps(val.detach().double().numpy(), pts["value"], dtype)
    ulps_d = _max_ulps(x.grad.double().numpy(), pts["deriv"], dtype)
    MEASURED[f"{impl} {dtype} value"] = ulps_v
    MEASURED[f"{impl} {dtype} deriv"] = ulps_d
    assert ulps_v * eps <= TOL[dtype], ulps_v
    assert ulps_d * eps <= TOL[dtype], ulps_d
    d1 = kl_huber_derivative(x.detach(), alpha, beta)
    assert _max_ulps(d1.double().numpy(), pts["deriv"], dtype) * eps <= TOL[dtype]


def _scalar_param_points(pts: dict, dtype: torch.dtype, device: str = "cpu"):
    """Per (alpha, beta) of the grid: the points' mask, x (requires grad, on ``device``) and
    the scales as the dtype rounds them (Python numbers: the scalar-parameter paths)."""
    for a in ALPHAS:
        for b in BETAS:
            sel = (pts["alpha"] == np.float64(torch.tensor(a, dtype=dtype).item())) & \
                  (pts["beta"] == np.float64(torch.tensor(b, dtype=dtype).item()))
            x = torch.tensor(pts["x"][sel], dtype=dtype, device=device, requires_grad=True)
            a_, b_ = float(torch.tensor(a, dtype=dtype)), float(torch.tensor(b, dtype=dtype))
            yield sel, x, a_, b_


def _record_and_check(key: str, pts: dict, sel, val: torch.Tensor, grad: torch.Tensor,
                      dtype: torch.dtype, where: tuple) -> None:
    """Worst ulps of value and derivative against mpmath: kept in MEASURED under ``key`` and
    held to TOL."""
    ulps_v = _max_ulps(val.detach().double().cpu().numpy(), pts["value"][sel], dtype)
    ulps_d = _max_ulps(grad.double().cpu().numpy(), pts["deriv"][sel], dtype)
    MEASURED[key + " value"] = max(MEASURED.get(key + " value", 0), ulps_v)
    MEASURED[key + " deriv"] = max(MEASURED.get(key + " deriv", 0), ulps_d)
    eps = torch.finfo(dtype).eps
    assert ulps_v * eps <= TOL[dtype], (*where, ulps_v)
    assert ulps_d * eps <= TOL[dtype], (*where, ulps_d)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_accuracy_vs_mpmath_chunked_scalar_params(accuracy_points, dtype, small_chunks):
    """The chunked, branch-free CPU kernel (float alpha and beta) on the same points."""
    pts = accuracy_points[dtype]
    for sel, x, a_, b_ in _scalar_param_points(pts, dtype):
        val = kl_huber_loss(x, torch.zeros_like(x), a_, b_, reduction="none")
        kl_huber_loss(x, torch.zeros_like(x), a_, b_, reduction="sum").backward()
        _record_and_check(f"chunked {dtype}", pts, sel, val, x.grad, dtype, (a_, b_))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_accuracy_vs_mpmath_fused_scalar_params(accuracy_points, dtype, fused_impl, request):
    """The fused forward (C++ kernel, eager fallback, torch.compile) with its one-product
    backward, on the same points and within the same tolerances."""
    pts = accuracy_points[dtype]
    key = f"fused ({request.node.callspec.params['fused_impl']}) {dtype}"
    for sel, x, a_, b_ in _scalar_param_points(pts, dtype):
        val = kl_huber_loss(x, torch.zeros_like(x), a_, b_, "none", impl=fused_impl)
        loss = kl_huber_loss(x, torch.zeros_like(x), a_, b_, "sum", impl=fused_impl)
        assert type(loss.grad_fn).__name__ == "_FusedFnBackward"
        loss.backward()
        _record_and_check(key, pts, sel, val, x.grad, dtype, (a_, b_))


def _check_extreme_scale_ratios(dtype: torch.dtype, impls: tuple[str, ...]) -> None:
    u = np.logspace(-30, 6, 400)
    eps = torch.finfo(dtype).eps
    for a, b in ((1e3, 1e-2), (1e-3, 1e2), (10.0, 1e-3)):
        a_, b_ = (float(torch.tensor(v, dtype=dtype)) for v in (a, b))
        x = torch.tensor(u * a_, dtype=dtype)
        xs = x.double().numpy()
        val, der = _mp_reference(xs, np.full_like(xs, a_), np.full_like(xs, b_))
        cases = [(impl, a_) for impl in impls]
        if "default" in impls:
            cases.append(("default", torch.tensor(a_, dtype=dtype)))
        for impl, alpha in cases:
            xr = x.clone().requires_grad_()
            v = kl_huber_loss(xr, torch.zeros_like(xr), alpha, b_, "none", impl=impl)
            (g,) = torch.autograd.grad(v.sum(), xr)
            assert _max_ulps(v.detach().double().numpy(), val, dtype) * eps <= TOL[dtype], \
                (a, b, impl)
            assert _max_ulps(g.double().numpy(), der, dtype) * eps <= TOL[dtype], (a, b, impl)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_accuracy_extreme_scale_ratios(dtype, small_chunks):
    """Dense sweep of |x|/alpha for large and small alpha/beta: no intermediate product may
    underflow where D itself does not (every path)."""
    _check_extreme_scale_ratios(dtype, ("default", "autograd"))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_accuracy_extreme_scale_ratios_fused(dtype, fused_impl):
    """The same sweep through the fused forwards."""
    _check_extreme_scale_ratios(dtype, (fused_impl,))


def test_report_measured_ulps(capsys):
    """Prints the measured maximum errors (run with -s to see them)."""
    with capsys.disabled():
        for key, ulps in sorted(MEASURED.items()):
            print(f"\n  max rel error {key}: {ulps:.2f} eps", end="")
    assert all(math.isfinite(v) for v in MEASURED.values())


def test_polynomial_coefficients_vs_mpmath():
    for dtype, (t, coeffs) in _phi.PHI_U.items():
        worst = 0.0
        with mpmath.workdps(50):
            for u in np.linspace(0, t, 101)[1:]:
                U = mpmath.mpf(float(u))
                phi = (mpmath.expm1(-U) + U) / U**2
                p = sum(mpmath.mpf(c) * U**k for k, c in enumerate(coeffs))
                worst = max(worst, float(abs(p / phi - 1)))
        assert worst < (1e-16 if dtype == torch.float64 else 1e-9), (dtype, worst)


# ---------------------------------------------------------------------------------------------
# Values and torch equalities
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("alpha", [0.1, 1.0, 10.0])
def test_huber_equals_torch(alpha):
    x = torch.linspace(-30, 30, 20_001, dtype=F64)
    ref = F.huber_loss(x, torch.zeros_like(x), delta=alpha, reduction="none")
    assert torch.equal(huber(x, alpha), ref)
    assert torch.equal(huber(x, torch.tensor(alpha, dtype=F64)), ref)
    assert torch.equal(huber(x.float(), torch.tensor([alpha])), ref.float().clone()
                       .copy_(F.huber_loss(x.float(), torch.zeros_like(x.float()), delta=alpha,
                                           reduction="none")))


def test_huber_tensor_alpha_gradient():
    x = torch.tensor([-3.0, -0.5, 0.0, 0.5, 3.0], dtype=F64)
    alpha = torch.tensor(1.0, dtype=F64, requires_grad=True)
    huber(x, alpha).sum().backward()
    assert alpha.grad.item() == pytest.approx(2 * (3.0 - 1.0))


@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0, 2.0])
def test_smooth_l1_equals_torch(beta):
    x = torch.linspace(-5, 5, 2001, dtype=F64)
    ref = F.smooth_l1_loss(x, torch.zeros_like(x), beta=beta, reduction="none")
    assert torch.equal(smooth_l1(x, beta), ref)
    assert torch.allclose(smooth_l1(x, torch.tensor(beta, dtype=F64)), ref, rtol=0, atol=1e-15)
    if beta > 0:  # smooth_l1 = H_beta / beta
        assert torch.allclose(ref, huber(x, beta) / beta, rtol=1e-15, atol=1e-15)
    else:
        assert torch.equal(ref, x.abs())


def test_kl_huber_matches_eq16_moderate_range():
    x = torch.linspace(-20, 20, 4001, dtype=F64)
    for alpha, beta in [(1.0, 1.0), (0.5, 2.0), (3.0, 0.1)]:
        for impl in ("default", "autograd"):
            ours = kl_huber(x, alpha, beta, impl=impl)
            ref = naive_kl_huber(x, alpha, beta)
            assert torch.allclose(ours, ref, rtol=1e-12, atol=1e-13 * alpha / beta)


def test_exact_zero_at_zero_and_symmetry():
    x = torch.tensor([0.0, -0.0], dtype=F64, requires_grad=True)
    v = kl_huber(x, 1.0)
    assert torch.equal(v.detach(), torch.zeros(2, dtype=F64))
    v.sum().backward()
    assert torch.equal(x.grad.abs(), torch.zeros(2, dtype=F64))


@pytest.mark.parametrize("impl", ["default", "autograd"])
def test_alpha_zero_is_l1(impl):
    x = torch.tensor([-3.0, -1e-300, 0.0, 2.5, 1e300], dtype=F64, requires_grad=True)
    beta = 2.0
    v = kl_huber(x, 0.0, beta, impl=impl)
    assert torch.equal(v.detach(), x.detach().abs() / beta)
    v.sum().backward()
    assert torch.equal(x.grad, torch.sign(x.detach()) / beta)
    # tensor alpha with zeros, mixed with positive entries
    x2 = x.detach().clone().requires_grad_()
    alpha = torch.tensor([0.0, 0.0, 0.0, 1.0, 0.0], dtype=F64)
    v2 = kl_huber(x2, alpha, beta, impl=impl)
    expect = x.detach().abs() / beta
    expect[3] = naive_kl_huber(torch.tensor(2.5, dtype=F64), 1.0, beta)
    assert torch.allclose(v2.detach(), expect, rtol=1e-15, atol=0)
    v2.sum().backward()
    assert torch.isfinite(x2.grad).all()
    assert x2.grad[0].item() == -1 / beta and x2.grad[4].item() == 1 / beta


def test_kl_huber_derivative_second_order():
    x = torch.linspace(-5, 5, 101, dtype=F64)
    for alpha, beta in [(1.0, 1.0), (0.3, 2.0)]:
        d2 = kl_huber_derivative(x, alpha, beta, order=2)
        assert torch.allclose(d2, torch.exp(-x.abs() / alpha) / (alpha * beta), rtol=1e-14)
        assert kl_huber_derivative(torch.zeros(1, dtype=F64), alpha, beta, order=2).item() \
            == pytest.approx(1 / (alpha * beta), rel=1e-15)  # Appendix B, Claim 1
    l1 = kl_huber_derivative(torch.tensor([-1.0, 0.0, 1.0]), 0.0, 1.0, order=2)
    assert l1.tolist() == [0.0, math.inf, 0.0]


def test_double_backward_matches_second_derivative():
    x = torch.linspace(-4, 4, 81, dtype=F64, requires_grad=True)
    (g,) = torch.autograd.grad(kl_huber(x, 0.7, 1.3).sum(), x, create_graph=True)
    (h,) = torch.autograd.grad(g.sum(), x)
    assert torch.allclose(h, kl_huber_derivative(x.detach(), 0.7, 1.3, order=2), rtol=1e-13)


def test_laplace_kl_matches_torch_distributions():
    gen = torch.Generator().manual_seed(0)
    n = 2000
    lp, lq = torch.randn(n, generator=gen, dtype=F64) * 3, torch.randn(n, generator=gen,
                                                                        dtype=F64) * 3
    sp = torch.rand(n, generator=gen, dtype=F64) * 5 + 1e-3
    sq = torch.rand(n, generator=gen, dtype=F64) * 5 + 1e-3
    ref = torch.distributions.kl_divergence(torch.distributions.Laplace(lp, sp),
                                            torch.distributions.Laplace(lq, sq))
    ours = laplace_kl(lp, sp, lq, sq)
    assert torch.allclose(ours, ref, rtol=1e-12, atol=1e-13)
    # differentiable in all four arguments, gradients equal to torch's
    args = [t.clone().requires_grad_() for t in (lp[:50], sp[:50], lq[:50], sq[:50])]
    g_ours = torch.autograd.grad(laplace_kl(*args).sum(), args)
    g_ref = torch.autograd.grad(torch.distributions.kl_divergence(
        torch.distributions.Laplace(args[0], args[1]),
        torch.distributions.Laplace(args[2], args[3])).sum(), args)
    for a, b in zip(g_ours, g_ref):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-12)
    assert torch.autograd.gradcheck(laplace_kl, [t[:6] for t in args])
    # identical distributions: exactly 0; eq. 16 is eq. 15 when b1 = b2 (Section 4.1)
    assert laplace_kl(0.3, 0.7, 0.3, 0.7).item() == 0.0
    x = torch.linspace(-3, 3, 61, dtype=F64)
    assert torch.allclose(laplace_kl(x, 0.8, torch.zeros_like(x), 0.8), kl_huber(x, 0.8, 0.8),
                          rtol=1e-15, atol=1e-16)


def test_huber_bounds_dense_grid():
    """Eq. 20.  For |x| >> alpha the upper gap alpha^2 e^{-2|x|/alpha}/2 drops below one ulp
    of H, so the comparison allows 2 ulps of rounding."""
    x = torch.linspace(-50, 50, 20_001, dtype=F64)
    slack = 1 + 4 * torch.finfo(F64).eps
    for alpha in (0.01, 0.1, 1.0, 10.0):
        lo, hi = huber_bounds(x, alpha)
        h = huber(x, alpha)
        assert bool((lo <= h * slack).all()) and bool((h <= hi * slack).all())
        inner = x.abs() <= 10 * alpha  # where the gaps are far above rounding: strict
        assert bool((lo[inner] <= h[inner]).all()) and bool((h[inner] <= hi[inner]).all())
    alpha = torch.tensor([0.5, 2.0], dtype=F64)
    lo, hi = huber_bounds(x[:, None].expand(-1, 2), alpha)
    h = huber(x[:, None].expand(-1, 2), alpha)
    assert bool((lo <= h * slack).all()) and bool((h <= hi * slack).all())


# ---------------------------------------------------------------------------------------------
# Reductions, modules, validation, NaN
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_reductions_like_torch(reduction):
    gen = torch.Generator().manual_seed(0)
    inp, tgt = torch.randn(7, 4, generator=gen), torch.randn(7, 4, generator=gen)
    elem = kl_huber(inp - tgt, 0.5, 2.0)
    expect = {"none": elem, "mean": elem.mean(), "sum": elem.sum()}[reduction]
    for impl in ("default", "autograd"):
        got = kl_huber_loss(inp, tgt, 0.5, 2.0, reduction, impl=impl)
        assert got.shape == expect.shape
        assert torch.allclose(got, expect, rtol=1e-6, atol=1e-7)
    assert torch.equal(huber_loss(inp, tgt, 0.7, reduction),
                       F.huber_loss(inp, tgt, delta=0.7, reduction=reduction))
    assert torch.allclose(huber_loss(inp, tgt, torch.tensor(0.7), reduction),
                          F.huber_loss(inp, tgt, delta=0.7, reduction=reduction))


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_empty_input_like_torch(reduction):
    e = torch.empty(0, 4, requires_grad=True)
    ref = F.smooth_l1_loss(e, torch.empty(0, 4), reduction=reduction)
    for impl in ("default", "autograd"):
        got = kl_huber_loss(e, torch.empty(0, 4), reduction=reduction, impl=impl)
        assert got.shape == ref.shape
        assert torch.equal(got.isnan(), ref.isnan())
        if reduction == "sum":
            assert got.item() == 0.0
        got.sum().backward()
    h = huber_loss(torch.empty(0), torch.empty(0), reduction=reduction)
    assert h.shape == ref.shape[:0] if reduction != "none" else h.shape == (0,)


def test_modules():
    gen = torch.Generator().manual_seed(1)
    inp, tgt = torch.randn(10, 4, generator=gen), torch.randn(10, 4, generator=gen)
    assert torch.equal(HuberLoss(0.3)(inp, tgt), F.huber_loss(inp, tgt, delta=0.3))
    sigma = torch.tensor([0.1, 0.1, 0.2, 0.2])
    m = KLHuberLoss(sigma, 1 / 9, reduction="sum")
    assert torch.allclose(m(inp, tgt), kl_huber(inp - tgt, sigma, 1 / 9).sum(), rtol=1e-6)
    assert "alpha" in dict(m.named_buffers())
    assert "reduction='sum'" in repr(m)


def test_adaptive_loss():
    gen = torch.Generator().manual_seed(2)
    inp, tgt = torch.randn(64, 4, generator=gen, dtype=F64), torch.randn(64, 4, generator=gen,
                                                                          dtype=F64)
    m = AdaptiveKLHuberLoss(alpha=0.5, beta=2.0, shape=(4,)).double()
    assert torch.allclose(m.alpha, torch.full((4,), 0.5, dtype=F64))
    assert torch.allclose(m.beta, torch.full((4,), 2.0, dtype=F64))
    loss = m(inp, tgt)
    # both scales learnable: the cross-entropy = KL (eq. 15) + the entropy 1 + log(2 alpha) of
    # the label distribution (issue 17: the KL alone has no finite minimiser in both scales)
    assert m.objective == "nll"
    ref = (laplace_kl(tgt, m.alpha, inp, m.beta) + 1 + torch.log(2 * m.alpha)).mean()
    assert torch.allclose(loss, ref, rtol=1e-12)
    kl_only = AdaptiveKLHuberLoss(alpha=0.5, beta=2.0, shape=(4,), learn_alpha=False).double()
    assert kl_only.objective == "kl"
    assert torch.allclose(kl_only(inp, tgt),
                          laplace_kl(tgt, kl_only.alpha, inp, kl_only.beta).mean(), rtol=1e-12)
    loss.backward()
    assert m.raw_alpha.grad is not None and torch.isfinite(m.raw_alpha.grad).all()
    assert m.raw_beta.grad is not None and torch.isfinite(m.raw_beta.grad).all()
    # optimising the scales keeps them positive and lowers the loss
    opt = torch.optim.Adam(m.parameters(), lr=0.1)
    first = m(inp, tgt).item()
    for _ in range(50):
        opt.zero_grad()
        m(inp, tgt).backward()
        opt.step()
    assert m(inp, tgt).item() < first
    assert bool((m.alpha > 0).all()) and bool((m.beta > 0).all())
    with pytest.raises(ValueError, match="input"):
        m(torch.randn(3, 5, dtype=F64), torch.randn(3, 5, dtype=F64))
    fixed = AdaptiveKLHuberLoss(1.0, 1.0, learn_beta=False, include_constants=False)
    assert [n for n, _ in fixed.named_parameters()] == ["raw_alpha"]
    x = torch.randn(5)
    assert torch.allclose(fixed(x, torch.zeros(5)), kl_huber(x, 1.0, 1.0).mean(), rtol=1e-6)


@pytest.mark.parametrize("call, exc, name", [
    (lambda: kl_huber(torch.ones(3), -1.0), ValueError, "alpha"),
    (lambda: kl_huber(torch.ones(3), float("nan")), ValueError, "alpha"),
    (lambda: kl_huber(torch.ones(3), torch.tensor([1.0, -1.0, 1.0])), ValueError, "alpha"),
    (lambda: kl_huber(torch.ones(3), 1.0, 0.0), ValueError, "beta"),
    (lambda: kl_huber(torch.ones(3), 1.0, torch.tensor([1.0, 0.0, 1.0])), ValueError, "beta"),
    (lambda: kl_huber(torch.ones(3), torch.ones(2)), ValueError, "alpha"),
    (lambda: kl_huber(torch.ones(3), torch.ones(2, 3)), ValueError, "alpha"),
    (lambda: kl_huber(torch.ones(3, dtype=torch.int64), 1.0), TypeError, "x"),
    (lambda: kl_huber([1.0, 2.0], 1.0), TypeError, "x"),
    (lambda: kl_huber(torch.ones(3), "1"), TypeError, "alpha"),
    (lambda: kl_huber(torch.ones(3), torch.ones(3, dtype=torch.int32)), TypeError, "alpha"),
    (lambda: kl_huber(torch.ones(3), 1.0, impl="fast"), ValueError, "impl"),
    (lambda: kl_huber_loss(torch.ones(3), torch.ones(4)), ValueError, "target"),
    (lambda: kl_huber_loss(torch.ones(3), torch.ones(3), reduction="avg"), ValueError,
     "reduction"),
    (lambda: kl_huber_loss(torch.ones(3), torch.ones(3, dtype=torch.long)), TypeError, "target"),
    (lambda: huber(torch.ones(3), 0.0), ValueError, "alpha"),
    (lambda: huber_loss(torch.ones(3), torch.ones(3), -1.0), ValueError, "alpha"),
    (lambda: smooth_l1(torch.ones(3), -0.5), ValueError, "beta"),
    (lambda: kl_huber_derivative(torch.ones(3), 1.0, order=3), ValueError, "order"),
    (lambda: laplace_kl(0.0, -1.0, 0.0, 1.0), ValueError, "scale_p"),
    (lambda: laplace_kl(0.0, 1.0, 0.0, 0.0), ValueError, "scale_q"),
    (lambda: KLHuberLoss(alpha=-1.0), ValueError, "alpha"),
    (lambda: AdaptiveKLHuberLoss(beta=0.0), ValueError, "beta"),
])
def test_validation_names_the_argument(call, exc, name):
    with pytest.raises(exc, match=name):
        call()


def test_nan_in_nan_out():
    x = torch.tensor([float("nan"), 1.0, float("inf"), -float("inf")], dtype=F64)
    v = kl_huber(x, 1.0)
    assert math.isnan(v[0].item()) and v[1].item() == pytest.approx(math.exp(-1))
    assert v[2].item() == math.inf and v[3].item() == math.inf
    assert math.isnan(kl_huber_loss(x, torch.zeros_like(x)).item())
    assert math.isnan(kl_huber(x, 1.0, impl="autograd")[0].item())


# ---------------------------------------------------------------------------------------------
# Gradients, dtypes, transforms
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("impl", ["default", "autograd"])
def test_gradcheck_all_arguments(impl):
    gen = torch.Generator().manual_seed(3)
    x = (torch.randn(6, 4, generator=gen, dtype=F64) * 2).requires_grad_()
    t = torch.randn(6, 4, generator=gen, dtype=F64).requires_grad_()
    a = (torch.rand(4, generator=gen, dtype=F64) + 0.2).requires_grad_()
    b = (torch.rand(1, 4, generator=gen, dtype=F64) + 0.2).requires_grad_()
    for red in ("none", "mean", "sum"):
        def f(x, t, a, b, red=red):
            return kl_huber_loss(x, t, a, b, red, impl=impl)
        assert torch.autograd.gradcheck(f, (x, t, a, b))
        if impl == "default":
            assert torch.autograd.gradgradcheck(f, (x, t, a, b))
    a0 = torch.tensor(0.8, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, a: kl_huber(x, a, 1.5, impl=impl), (x, a0))
    assert torch.autograd.gradcheck(lambda x, a, b: kl_huber_derivative(x, a, b), (x, a, b))


def test_gradcheck_chunked_path(small_chunks, monkeypatch):
    monkeypatch.setattr(_chunked, "CHUNK", 128)
    gen = torch.Generator().manual_seed(4)
    x = (torch.randn(3000, generator=gen, dtype=F64) * 2).requires_grad_()
    t = torch.randn(3000, generator=gen, dtype=F64)
    for red in ("none", "mean", "sum"):
        chunked = kl_huber_loss(x, t, 0.7, 1.3, red)
        plain = kl_huber_loss(x, t, 0.7, 1.3, red, impl="autograd")
        assert torch.allclose(chunked, plain, rtol=1e-14, atol=1e-15)
        g1, = torch.autograd.grad(chunked.sum(), x)
        g2, = torch.autograd.grad(plain.sum(), x)
        assert torch.allclose(g1, g2, rtol=1e-13, atol=1e-16)
    xs, ts = x[:300].detach().requires_grad_(), t[:300]
    assert torch.autograd.gradcheck(lambda x: kl_huber_loss(x, ts, 0.7, 1.3, "mean"), (xs,))
    a = torch.tensor(0.7, dtype=F64, requires_grad=True)
    b = torch.tensor(1.3, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, a, b: kl_huber_loss(x, ts, a, b, "sum"),
                                    (xs, a, b))


@pytest.mark.parametrize("workers", [1, 2])
def test_chunked_threads_inference_mode_and_weighted_grad(small_chunks, monkeypatch, workers):
    monkeypatch.setattr(_chunked, "MAX_WORKERS", workers)
    x = torch.randn(10_000, dtype=torch.float32, requires_grad=True)
    t = torch.randn(10_000)
    w = torch.rand(10_000)
    (g,) = torch.autograd.grad((kl_huber_loss(x, t, 0.3, 2.0, "none") * w).sum(), x)
    assert torch.allclose(g, w * kl_huber_derivative(x.detach() - t, 0.3, 2.0), rtol=1e-6,
                          atol=1e-12)
    with torch.inference_mode():
        v = kl_huber_loss(x, t, 0.3, 2.0, "none")
        s = kl_huber_loss(x, t, 0.3, 2.0, "sum")
    assert torch.allclose(v.sum(), s, rtol=1e-5)
    # elementwise, no target: the input is left untouched and the gradient is D'
    xe = torch.randn(10_000, dtype=F64, requires_grad=True)
    before = xe.detach().clone()
    ve = kl_huber(xe, 0.3, 2.0)
    assert torch.equal(xe.detach(), before)
    (ge,) = torch.autograd.grad(ve.sum(), xe)
    assert torch.allclose(ve, kl_huber(before, 0.3, 2.0, impl="autograd"), rtol=1e-14)
    assert torch.allclose(ge, kl_huber_derivative(before, 0.3, 2.0), rtol=1e-14, atol=1e-300)
    # non-contiguous input takes the unchunked path and agrees
    xt = torch.randn(200, 100, dtype=F64).t()
    assert torch.allclose(kl_huber(xt, 0.5), kl_huber(xt.contiguous(), 0.5), rtol=1e-15)


@pytest.mark.parametrize("dtype", ALL_DTYPES)
def test_finite_gradients_everywhere(dtype):
    big = torch.finfo(dtype).max / 4
    x = torch.tensor([0.0, -0.0, 1e-30, -1e-8, 0.5, -3.0, 1e4, -big, big], dtype=torch.float64)
    x = x.to(dtype).requires_grad_()
    for alpha in (1.0, 1e-3, torch.tensor([0.5] * 9, dtype=dtype), 0.0):
        for impl in ("default", "autograd"):
            v = kl_huber(x, alpha, 2.0, impl=impl)
            assert v.dtype == dtype
            (g,) = torch.autograd.grad(v.sum(), x)
            assert g.dtype == dtype and torch.isfinite(g).all(), (alpha, impl, g)
            assert g.abs().max().item() <= 0.5 * (1 + 1e-2)
            assert torch.isfinite(v[:-2]).all()
    # half precision agrees with float32 to the half dtype's resolution
    xf = torch.linspace(-8, 8, 1001)
    ref = kl_huber(xf, 0.5, 1.0)
    got = kl_huber(xf.to(dtype), 0.5, 1.0).float()
    eps = max(torch.finfo(dtype).eps, 2 * torch.finfo(torch.float32).eps)
    assert torch.allclose(got, ref.to(dtype).float(), rtol=eps, atol=eps)


def test_alpha_beta_gradients_match_analytic():
    x = torch.linspace(-6, 6, 121, dtype=F64)
    a = torch.tensor(0.7, dtype=F64, requires_grad=True)
    b = torch.tensor(1.9, dtype=F64, requires_grad=True)
    ga, gb = torch.autograd.grad(kl_huber(x, a, b).sum(), (a, b))
    u = x.abs() / 0.7
    dalpha = -(1 - (1 + u) * torch.exp(-u)) / 1.9
    dbeta = -naive_kl_huber(x, 0.7, 1.9) / 1.9
    assert ga.item() == pytest.approx(dalpha.sum().item(), rel=1e-12)
    assert gb.item() == pytest.approx(dbeta.sum().item(), rel=1e-12)


def test_forward_mode_jacfwd_and_hessian():
    x = torch.linspace(-3, 3, 7, dtype=F64)  # includes x = 0
    hess = torch.func.hessian(lambda v: kl_huber(v, 0.7, 1.3).sum())(x)
    assert torch.allclose(torch.diagonal(hess), kl_huber_derivative(x, 0.7, 1.3, order=2),
                          rtol=1e-14)
    assert torch.count_nonzero(hess - torch.diag(torch.diagonal(hess))) == 0
    jac = torch.func.jacfwd(lambda v: kl_huber(v, 0.7, 1.3))(x)
    assert torch.allclose(torch.diagonal(jac), kl_huber_derivative(x, 0.7, 1.3), rtol=1e-14)
    t = torch.randn(7, dtype=F64)
    args = (x.clone().requires_grad_(), t.requires_grad_(),
            torch.tensor(0.7, dtype=F64, requires_grad=True),
            torch.tensor(1.3, dtype=F64, requires_grad=True))
    for red in ("none", "mean", "sum"):
        assert torch.autograd.gradcheck(lambda *a, red=red: kl_huber_loss(*a, red), args,
                                        check_forward_ad=True)
    assert torch.autograd.gradcheck(lambda x, t, a, b: kl_huber_derivative(x, a, b), args,
                                    check_forward_ad=True)


def test_torch_func_grad_and_vmap():
    x = torch.linspace(-3, 3, 13, dtype=F64)
    g = torch.func.grad(lambda v: kl_huber(v, 0.8, 1.2).sum())(x)
    assert torch.allclose(g, kl_huber_derivative(x, 0.8, 1.2), rtol=1e-14)
    batch = torch.randn(5, 7, dtype=F64)
    tgt = torch.randn(5, 7, dtype=F64)
    per = torch.func.vmap(lambda i, t: kl_huber_loss(i, t, 0.5, 2.0))(batch, tgt)
    assert torch.allclose(per, kl_huber_loss(batch, tgt, 0.5, 2.0, "none").mean(1), rtol=1e-14)
    gper = torch.func.vmap(torch.func.grad(lambda i, t: kl_huber_loss(i, t, 0.5, 2.0)))(batch,
                                                                                       tgt)
    assert torch.allclose(gper, kl_huber_derivative(batch - tgt, 0.5, 2.0) / 7, rtol=1e-14)
    alphas = torch.tensor([0.3, 1.0, 3.0], dtype=F64)
    ga = torch.func.vmap(torch.func.grad(lambda a: kl_huber(x, a, 1.0).sum()))(alphas)
    for i, a in enumerate(alphas.tolist()):
        at = torch.tensor(a, dtype=F64, requires_grad=True)
        (ref,) = torch.autograd.grad(kl_huber(x, at, 1.0).sum(), at)
        assert ga[i].item() == pytest.approx(ref.item(), rel=1e-13)


def test_autocast_cpu():
    x = torch.linspace(-4, 4, 101, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = torch.nn.functional.linear(x[:, None], torch.ones(1, 1)).squeeze(1)
        assert y.dtype == torch.bfloat16
        v = kl_huber_loss(y, torch.zeros_like(y), 0.5, 1.0, "none")
    assert v.dtype == torch.float32
    assert torch.allclose(v, kl_huber(y.float(), 0.5), rtol=1e-6)
    v.sum().backward()
    assert torch.isfinite(x.grad).all()


@pytest.mark.parametrize("path", ["fused", "chunked", "general"])
def test_saves_at_most_one_new_input_sized_tensor(path, monkeypatch):
    """Besides references to its inputs, backward keeps at most D' (the fused path and the
    chunked CPU path write it in the forward pass; the general path recomputes it)."""
    if path != "fused":
        monkeypatch.setattr(_fused, "cpu_kernel", lambda: None)
    if path == "chunked":
        monkeypatch.setattr(_chunked, "CHUNK", 256)
        monkeypatch.setattr(_chunked, "CHUNK_MIN", 0)
    elif path == "general":
        monkeypatch.setattr(_chunked, "CHUNK_MIN", 10**9)
        monkeypatch.setattr(_dispatch, "fused_kind", lambda *args: None)
    x = torch.randn(1000, requires_grad=True)
    t = torch.randn(1000)
    for reduction in ("mean", "none"):
        saved: list[torch.Tensor] = []

        def pack(tensor, saved=saved):
            saved.append(tensor)
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = kl_huber_loss(x, t, 0.5, 2.0, reduction)
        inputs = {x.untyped_storage().data_ptr(), t.untyped_storage().data_ptr()}
        new = [s for s in saved if s.numel() > 1 and s.untyped_storage().data_ptr() not in inputs]
        assert len(new) == (0 if path == "general" else 1)
        assert all(s.numel() == 1000 for s in new)
        (g,) = torch.autograd.grad(loss.sum(), x)
        assert torch.allclose(g, kl_huber_derivative(x.detach() - t, 0.5, 2.0)
                              / (1000 if reduction == "mean" else 1), rtol=1e-6, atol=1e-12)


def test_compile_default_and_compiled_impl():
    torch._dynamo.reset()
    x = torch.linspace(-5, 5, 64, dtype=torch.float32, requires_grad=True)
    t = torch.zeros(64)
    ref = kl_huber_loss(x, t, 0.5, 2.0)
    (gref,) = torch.autograd.grad(ref, x)
    out = kl_huber_loss(x, t, 0.5, 2.0, impl="compiled")
    (g,) = torch.autograd.grad(out, x)
    assert torch.allclose(out, ref, rtol=1e-6) and torch.allclose(g, gref, rtol=1e-6, atol=1e-9)
    compiled_default = torch.compile(lambda i, tt: kl_huber_loss(i, tt, 0.5, 2.0),
                                     fullgraph=True)  # no graph break in the default path
    out2 = compiled_default(x, t)
    (g2,) = torch.autograd.grad(out2, x)
    assert torch.allclose(out2, ref, rtol=1e-6) and torch.allclose(g2, gref, rtol=1e-6,
                                                                   atol=1e-9)


# ---------------------------------------------------------------------------------------------
# Properties (hypothesis): eq. 17-21
# ---------------------------------------------------------------------------------------------

finite_x = st.floats(-1e6, 1e6, allow_nan=False)
pos = st.floats(1e-3, 1e3)


@settings(max_examples=150, deadline=None)
@given(x=finite_x, alpha=pos)
def test_property_bounds_eq20(x, alpha):
    xt = torch.tensor([x], dtype=F64)
    lo, hi = huber_bounds(xt, alpha)
    h = huber(xt, alpha).item()
    slack = 4 * torch.finfo(F64).eps * h  # rounding, see test_huber_bounds_dense_grid
    assert lo.item() <= h + slack and h <= hi.item() + slack


@settings(max_examples=150, deadline=None)
@given(x=finite_x, alpha=pos, beta=pos, gamma=st.floats(1e-2, 1e2), lam=st.floats(1e-2, 1e2))
def test_property_scaling_eq21(x, alpha, beta, gamma, lam):
    xt = torch.tensor([x], dtype=F64)
    lhs = kl_huber(gamma * xt, alpha, beta)
    rhs = kl_huber(xt, alpha / gamma, beta / gamma)
    atol = 1e-300  # subnormal results carry fewer digits
    assert torch.allclose(lhs, rhs, rtol=1e-13, atol=atol)
    assert torch.allclose(lam * kl_huber(xt, alpha, beta), kl_huber(xt, alpha, beta / lam),
                          rtol=1e-13, atol=atol)


@settings(max_examples=150, deadline=None)
@given(x=finite_x, y=finite_x, alpha=pos, beta=pos)
def test_property_symmetry_and_convexity(x, y, alpha, beta):
    xt = torch.tensor([x, -x, y, 0.5 * (x + y)], dtype=F64)
    d = kl_huber(xt, alpha, beta)
    assert d[0].item() == d[1].item() and d[0].item() >= 0
    mid, chord = d[3].item(), 0.5 * (d[0].item() + d[2].item())
    assert mid <= chord * (1 + 1e-14) + 1e-300
    g = kl_huber_derivative(torch.tensor(sorted([x, y]), dtype=F64), alpha, beta)
    assert g[0].item() <= g[1].item()  # convex: D' is non-decreasing


@settings(max_examples=150, deadline=None)
@given(r=st.floats(1e-12, 1e-3), alpha=pos, beta=pos, sign=st.sampled_from([-1.0, 1.0]))
def test_property_small_x_limit_eq17(r, alpha, beta, sign):
    x = torch.tensor([sign * r * alpha], dtype=F64)
    quad = x.item() ** 2 / (2 * alpha * beta)
    # D = x^2/(2 alpha beta) (1 - u/3 + ...), so the relative gap is about u/3
    assert abs(kl_huber(x, alpha, beta).item() / quad - 1) <= r / 3 * (1 + 1e-6) + 1e-14


@settings(max_examples=150, deadline=None)
@given(r=st.floats(40.0, 1e6), alpha=pos, beta=pos)
def test_property_large_x_limit_eq18(r, alpha, beta):
    x = torch.tensor([r * alpha], dtype=F64)
    lin = (x.item() - alpha) / beta
    # D - (|x| - alpha)/beta = alpha e^{-u}/beta
    assert abs(kl_huber(x, alpha, beta).item() - lin) <= alpha / beta * math.exp(-r) \
        + 4e-16 * abs(lin)


# ---------------------------------------------------------------------------------------------
# CUDA (run by the lead on a GPU machine)
# ---------------------------------------------------------------------------------------------


@cuda
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_cuda_accuracy(accuracy_points, dtype):
    pts = accuracy_points[dtype]
    x = torch.tensor(pts["x"], dtype=dtype, device="cuda", requires_grad=True)
    alpha = torch.tensor(pts["alpha"], dtype=dtype, device="cuda")
    beta = torch.tensor(pts["beta"], dtype=dtype, device="cuda")
    for impl in ("default", "autograd"):
        x.grad = None
        v = kl_huber(x, alpha, beta, impl=impl)
        v.sum().backward()
        eps = torch.finfo(dtype).eps
        assert _max_ulps(v.detach().double().cpu().numpy(), pts["value"], dtype) * eps \
            <= TOL[dtype]
        assert _max_ulps(x.grad.double().cpu().numpy(), pts["deriv"], dtype) * eps \
            <= TOL[dtype]


@cuda
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", ALL_DTYPES)
def test_cuda_gradients_autocast_compile(dtype):
    x = torch.linspace(-1e3, 1e3, 4097, device="cuda").to(dtype).requires_grad_()
    t = torch.zeros_like(x)
    for impl in ("default", "autograd", "compiled"):
        v = kl_huber_loss(x, t, 0.5, 2.0, impl=impl)
        (g,) = torch.autograd.grad(v, x)
        assert torch.isfinite(g).all()
    with torch.autocast("cuda", dtype=torch.float16):
        y = torch.nn.functional.linear(x.float()[:, None], torch.ones(1, 1, device="cuda"))
        v = kl_huber_loss(y, torch.zeros_like(y), 0.5, 1.0)
    assert v.dtype == torch.float32
    v.backward()
    ref = kl_huber_loss(x.detach().double().cpu(), t.double().cpu(), 0.5, 2.0, "none")
    got = kl_huber_loss(x.detach(), t, 0.5, 2.0, "none").double().cpu()
    eps = torch.finfo(dtype).eps
    # float32/64: a few ulps (CUDA's exp is accurate to 1-2 ulps); half types are computed in
    # float32 and rounded once
    rtol = 2 * eps if dtype in (torch.float16, torch.bfloat16) else 8 * eps
    assert torch.allclose(got, ref.to(dtype).double(), rtol=rtol, atol=0)


@cuda
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_cuda_fused_accuracy_and_compilations(accuracy_points, dtype):
    """The default CUDA path with number scales (the fused Function, its forward compiled
    with dynamic shapes): mpmath tolerances, and one compilation for 50 shapes."""
    pts = accuracy_points[dtype]
    for sel, x, a_, b_ in _scalar_param_points(pts, dtype, "cuda"):
        val = kl_huber_loss(x, torch.zeros_like(x), a_, b_, "none")
        loss = kl_huber_loss(x, torch.zeros_like(x), a_, b_, "sum")
        assert type(loss.grad_fn).__name__ == "_FusedFnBackward"
        loss.backward()
        _record_and_check(f"cuda fused {dtype}", pts, sel, val, x.grad, dtype, (a_, b_))
    before = _fused.compilations()
    for n in range(3, 3 + 11 * 50, 11):
        x = torch.randn(n, 4, dtype=dtype, device="cuda", requires_grad=True)
        kl_huber_loss(x, torch.zeros_like(x), 0.5, 2.0).backward()
    assert _fused.compilations() - before <= 2
