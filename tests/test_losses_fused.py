"""The fused path of the KL loss (issue 19): which calls take it, what it computes, and that it
compiles once for every shape.

D_{alpha,beta} is eq. 16 of Meyer, *An Alternative Probabilistic Interpretation of the Huber
Loss* (CVPR 2021), D' its derivative (Appendix B).  Accuracy against mpmath is checked in
``tests/test_losses.py`` (``fused_impl``).
"""

from __future__ import annotations

import math

import pytest
import torch

from klhuber import _dispatch, _fused
from klhuber.losses import KLHuberLoss, kl_huber, kl_huber_derivative, kl_huber_loss

HAS_KERNEL = _fused.cpu_kernel() is not None
needs_kernel = pytest.mark.skipif(not HAS_KERNEL, reason="no C++ compiler for the kernel")


def _grad_fn_name(t: torch.Tensor) -> str:
    return type(t.grad_fn).__name__


@pytest.fixture
def eager_fused(monkeypatch: pytest.MonkeyPatch) -> None:
    """No C++ kernel and no torch.compile: the fused path's eager fallback."""
    monkeypatch.setattr(_fused, "cpu_kernel", lambda: None)
    monkeypatch.setenv("KLHUBER_NO_COMPILE", "1")


# ---------------------------------------------------------------------------------------------
# Compilations
# ---------------------------------------------------------------------------------------------


def test_compiled_path_compiles_at_most_twice_over_50_shapes():
    """impl="compiled" (torch.compile, dynamic shapes): 50 shapes (n, 4), 50 scale pairs,
    one compilation (at most two allowed) where the old per-shape compile made 50."""
    torch._dynamo.reset()
    _fused._compiled_fwd.cache_clear()
    _fused._BROKEN.clear()
    before = _fused.compilations()
    for k, n in enumerate(range(3, 3 + 11 * 50, 11)):
        x = torch.randn(n, 4, requires_grad=True)
        t = torch.randn(n, 4)
        alpha, beta = 0.25 + 0.05 * k, 1.0 + 0.1 * k
        loss = kl_huber_loss(x, t, alpha, beta, impl="compiled")
        assert _grad_fn_name(loss) == "_FusedFnBackward"
        loss.backward()
        ref = kl_huber_loss(x.detach(), t, alpha, beta, impl="autograd")
        assert torch.allclose(loss.detach(), ref, rtol=2e-6)
        assert torch.allclose(x.grad, kl_huber_derivative(x.detach() - t, alpha, beta) / x.numel(),
                              rtol=2e-6, atol=1e-12)
    assert _fused.compilations() - before <= 2


@needs_kernel
@pytest.mark.parametrize("impl", ["default", "fused"])
def test_kernel_path_needs_no_compilation_per_shape(impl):
    """The C++ kernel is built once per machine (cached on disk); no shape compiles."""
    x = torch.randn(2, 4, requires_grad=True)
    kl_huber_loss(x, torch.zeros_like(x), impl=impl).backward()
    before = _fused.compilations()
    for n in range(3, 3 + 11 * 50, 11):
        x = torch.randn(n, 4, requires_grad=True)
        loss = kl_huber_loss(x, torch.zeros_like(x), 0.5, 2.0, impl=impl)
        assert _grad_fn_name(loss) == "_FusedFnBackward"
        loss.backward()
    assert _fused.compilations() == before


# ---------------------------------------------------------------------------------------------
# Which path a call takes
# ---------------------------------------------------------------------------------------------


@needs_kernel
def test_default_routes():
    x = torch.randn(64, 4, requires_grad=True)
    t = torch.randn(64, 4)
    assert _grad_fn_name(kl_huber_loss(x, t)) == "_FusedFnBackward"
    assert _grad_fn_name(kl_huber(x, 0.5, 2.0)) == "_FusedFnBackward"
    assert _grad_fn_name(kl_huber_loss(x, t, 1, 2)) == "_FusedFnBackward"  # int scales
    # tensor or extreme scales, half types after their cast, autograd reference
    assert _grad_fn_name(kl_huber_loss(x, t, torch.tensor(0.5))) != "_FusedFnBackward"
    assert _grad_fn_name(kl_huber_loss(x, t, 1e-320, 1.0)) != "_FusedFnBackward"
    assert _grad_fn_name(kl_huber_loss(x, t, impl="autograd")) != "_FusedFnBackward"
    # no autograd: the kernel's result directly, no graph
    with torch.no_grad():
        assert kl_huber_loss(x, t).grad_fn is None
    assert kl_huber_loss(x.detach(), t).grad_fn is None
    # forward-mode AD and torch.func transforms take the general path (with a jvp rule)
    with torch.autograd.forward_ad.dual_level():
        xd = torch.autograd.forward_ad.make_dual(x.detach(), torch.ones_like(x))
        out = kl_huber_loss(xd, t, 0.5, 2.0, "sum")
        tangent = torch.autograd.forward_ad.unpack_dual(out).tangent
    assert torch.allclose(tangent, kl_huber_derivative(x.detach() - t, 0.5, 2.0).sum(),
                          rtol=1e-6)


def test_half_types_are_computed_in_float32():
    x32 = torch.linspace(-5, 5, 201)
    for dtype in (torch.float16, torch.bfloat16):
        x = x32.to(dtype).requires_grad_()
        v = kl_huber(x, 0.5, 2.0)
        assert v.dtype == dtype
        assert torch.equal(v, kl_huber(x.detach().float(), 0.5, 2.0).to(dtype))
        v.sum().backward()
        assert x.grad.dtype == dtype and torch.isfinite(x.grad).all()


# ---------------------------------------------------------------------------------------------
# Values and gradients on every fused forward
# ---------------------------------------------------------------------------------------------

FUSED = [pytest.param("fused", marks=needs_kernel), "compiled", "eager"]


def _impl(kind: str, request: pytest.FixtureRequest) -> str:
    if kind == "eager":
        request.getfixturevalue("eager_fused")
        return "fused"
    return kind


@pytest.mark.parametrize("kind", FUSED)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_reductions_gradients_and_target_gradient(kind, dtype, request):
    impl = _impl(kind, request)
    gen = torch.Generator().manual_seed(0)
    x0 = torch.randn(37, 3, generator=gen, dtype=dtype) * 3
    t0 = torch.randn(37, 3, generator=gen, dtype=dtype)
    for reduction in ("mean", "sum", "none"):
        x = x0.clone().requires_grad_()
        t = t0.clone().requires_grad_()
        out = kl_huber_loss(x, t, 0.7, 1.3, reduction, impl=impl)
        ref = kl_huber_loss(x0, t0, 0.7, 1.3, reduction, impl="autograd")
        rtol = 1e-6 if dtype == torch.float32 else 1e-13
        assert out.shape == ref.shape and torch.allclose(out.detach(), ref, rtol=rtol)
        w = torch.rand(out.shape, generator=gen, dtype=dtype)
        (out * w).sum().backward()
        d = kl_huber_derivative(x0 - t0, 0.7, 1.3)
        scale = w / x0.numel() if reduction == "mean" else w
        assert torch.allclose(x.grad, d * scale, rtol=rtol, atol=1e-30)
        assert torch.equal(t.grad, -x.grad)


@pytest.mark.parametrize("kind", FUSED)
def test_special_values(kind, request):
    impl = _impl(kind, request)
    x = torch.tensor([math.nan, math.inf, -math.inf, 0.0, -0.0, 1e-30, -3e38, 1.0],
                     requires_grad=True)
    v = kl_huber_loss(x, torch.zeros_like(x), 0.5, 2.0, "none", impl=impl)
    v.sum().backward()
    v = v.detach()
    assert math.isnan(v[0]) and math.isnan(x.grad[0])
    assert v[1] == math.inf and v[2] == math.inf
    assert x.grad[1] == 0.5 and x.grad[2] == -0.5
    assert v[3] == 0 and v[4] == 0 and x.grad[3] == 0 and x.grad[4] == 0
    assert torch.isfinite(v[5:]).all() and torch.isfinite(x.grad[1:]).all()
    assert v[5] == 0  # x^2/(2 alpha beta) = 5e-61 underflows in float32
    assert x.grad[5] == pytest.approx(1e-30, rel=1e-6)


@pytest.mark.parametrize("kind", FUSED)
def test_empty_input(kind, request):
    impl = _impl(kind, request)
    x = torch.empty(0, 4, requires_grad=True)
    assert math.isnan(kl_huber_loss(x, torch.empty(0, 4), impl=impl).item())
    s = kl_huber_loss(x, torch.empty(0, 4), reduction="sum", impl=impl)
    assert s == 0
    s.backward()
    assert x.grad.shape == (0, 4)
    assert kl_huber_loss(x, torch.empty(0, 4), reduction="none", impl=impl).shape == (0, 4)


@pytest.mark.parametrize("kind", FUSED)
def test_double_backward_and_retain_graph(kind, request):
    """create_graph=True: the backward is differentiable (D'' of Appendix B); a retained graph
    gives the same gradient twice."""
    impl = _impl(kind, request)
    x = torch.linspace(-4, 4, 41, dtype=torch.float64, requires_grad=True)
    t = torch.zeros(41, dtype=torch.float64)
    loss = kl_huber_loss(x, t, 0.5, 2.0, "sum", impl=impl)
    (g,) = torch.autograd.grad(loss, x, create_graph=True)
    assert torch.allclose(g, kl_huber_derivative(x.detach(), 0.5, 2.0), rtol=1e-13)
    (h,) = torch.autograd.grad(g.sum(), x)
    assert torch.allclose(h, kl_huber_derivative(x.detach(), 0.5, 2.0, order=2), rtol=1e-12)
    hess = torch.autograd.functional.hessian(
        lambda z: kl_huber_loss(z, t[:5], 0.5, 2.0, impl=impl), x.detach()[:5])
    assert torch.allclose(torch.diagonal(hess),
                          kl_huber_derivative(x.detach()[:5], 0.5, 2.0, order=2) / 5,
                          rtol=1e-12)
    loss = kl_huber_loss(x, t, 0.5, 2.0, impl=impl)
    (g1,) = torch.autograd.grad(loss, x, retain_graph=True)
    (g2,) = torch.autograd.grad(loss, x)
    assert torch.equal(g1, g2)
    assert torch.autograd.gradgradcheck(
        lambda z: kl_huber_loss(z, t[:6], 0.7, 1.3, "none", impl=impl), (x.detach()[:6]
                                                                       .requires_grad_(),))


@pytest.mark.parametrize("kind", FUSED)
def test_non_contiguous_and_module(kind, request):
    impl = _impl(kind, request)
    base = torch.randn(8, 6, dtype=torch.float64)
    x = base.t().requires_grad_()  # not contiguous
    t = torch.randn(6, 8, dtype=torch.float64)
    out = kl_huber_loss(x, t, 0.3, 1.0, "none", impl=impl)
    assert torch.allclose(out, kl_huber_loss(x.detach().contiguous(), t, 0.3, 1.0, "none",
                                             impl="autograd"), rtol=1e-13)
    out.sum().backward()
    assert torch.allclose(x.grad, kl_huber_derivative(x.detach() - t, 0.3, 1.0), rtol=1e-13)
    module = KLHuberLoss(0.3, 1.0, impl=impl)
    assert torch.allclose(module(x, t), out.mean(), rtol=1e-13)


@needs_kernel
def test_kernel_threads_on_large_tensors():
    """Above 131,072 elements the kernel splits the work over torch's thread count; the sum is
    accumulated in float64 per thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        gen = torch.Generator().manual_seed(1)
        x = (torch.randn(300_001, generator=gen) * 4).requires_grad_()
        t = torch.randn(300_001, generator=gen)
        for reduction in ("sum", "mean", "none"):
            out = kl_huber_loss(x, t, 0.5, 2.0, reduction)
            ref = kl_huber_loss(x.detach().double(), t.double(), 0.5, 2.0, reduction,
                                impl="autograd")
            assert torch.allclose(out.double(), ref, rtol=1e-6)
        loss = kl_huber_loss(x, t, 0.5, 2.0)
        loss.backward()
        d = kl_huber_derivative(x.detach() - t, 0.5, 2.0) / x.numel()
        assert torch.allclose(x.grad, d, rtol=1e-6, atol=1e-20)
    finally:
        torch.set_num_threads(before)


def test_compile_failure_falls_back_to_eager(monkeypatch):
    def broken(reduction):
        raise RuntimeError("no compiler")

    monkeypatch.setattr(_fused, "_compiled_fwd", broken)
    monkeypatch.setattr(_fused, "_BROKEN", set())
    x = torch.randn(10, requires_grad=True)
    with pytest.warns(RuntimeWarning, match="torch.compile"):
        out = kl_huber_loss(x, torch.zeros(10), 0.5, 2.0, impl="compiled")
    assert torch.allclose(out, kl_huber_loss(x.detach(), torch.zeros(10), 0.5, 2.0,
                                             impl="autograd"), rtol=1e-6)
    assert not _fused.compile_available()  # not tried again in this process
    out.backward()
    assert torch.isfinite(x.grad).all()


def test_general_compiled_path_follows_the_compile_rules(monkeypatch):
    """impl="compiled" with a tensor scale takes the general Function under torch.compile;
    like the compiled fused forward it stays eager with KLHUBER_NO_COMPILE=1, and a failed
    compilation warns once and falls back to the same values."""
    from klhuber import _functions

    x = torch.randn(10, requires_grad=True)
    alpha = torch.tensor(0.5)
    expected = kl_huber_loss(x.detach(), torch.zeros(10), alpha, 2.0, impl="autograd")

    def must_not_compile(reduction):
        raise AssertionError("compiled although KLHUBER_NO_COMPILE=1")

    monkeypatch.setattr(_functions, "compiled", must_not_compile)
    monkeypatch.setattr(_fused, "_BROKEN", set())
    monkeypatch.setenv("KLHUBER_NO_COMPILE", "1")
    out = kl_huber_loss(x, torch.zeros(10), alpha, 2.0, impl="compiled")
    torch.testing.assert_close(out, expected)
    monkeypatch.delenv("KLHUBER_NO_COMPILE")

    def broken(reduction):
        def call(*args):
            raise RuntimeError("no compiler")
        return call

    monkeypatch.setattr(_functions, "compiled", broken)
    with pytest.warns(RuntimeWarning, match="torch.compile"):
        out = kl_huber_loss(x, torch.zeros(10), alpha, 2.0, impl="compiled")
    torch.testing.assert_close(out, expected)
    assert not _fused.compile_available()  # not tried again in this process
    out.backward()
    torch.testing.assert_close(x.grad, kl_huber_derivative(x.detach(), 0.5, 2.0) / 10)
    # an error that the eager call raises too is the inputs' own: raised, and not counted as
    # a failed compilation
    monkeypatch.setattr(_fused, "_BROKEN", set())

    def input_error(*args, **kwargs):
        raise ValueError("bad input")

    monkeypatch.setattr(_functions, "apply_loss", input_error)
    with pytest.raises(ValueError, match="bad input"):
        kl_huber_loss(x, torch.zeros(10), alpha, 2.0, impl="compiled")
    assert _fused.compile_available()


def test_no_kernel_without_compiler(monkeypatch, tmp_path):
    """Without a C++ compiler the kernel is None and the default path still works."""
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    monkeypatch.setenv("KLHUBER_CACHE", str(tmp_path))
    _fused.cpu_kernel.cache_clear()
    try:
        assert _fused.cpu_kernel() is None
        x = torch.randn(100, requires_grad=True)
        out = kl_huber_loss(x, torch.zeros(100), 0.5, 2.0)
        out.backward()
        assert torch.allclose(out, kl_huber_loss(x.detach(), torch.zeros(100), 0.5, 2.0,
                                                 impl="autograd"), rtol=1e-6)
    finally:
        _fused.cpu_kernel.cache_clear()


def test_meta_tensors_take_the_general_path():
    x = torch.empty(5, 4, device="meta")
    out = kl_huber_loss(x, torch.empty(5, 4, device="meta"), 0.5, 2.0, "none")
    assert out.device.type == "meta" and out.shape == (5, 4)
    assert _dispatch.fused_kind(x, None, 0.5, 2.0, "fused") is None
