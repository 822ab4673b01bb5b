"""Checks of klhuber.losses that mutation testing (``make mutants``, module ``losses``) found
missing: the errors name the parameter they are about, the modules keep what they are given
(default scale, buffers, reduction, implementation), and smooth L1 with a zero tensor scale has
finite gradients. Each compares with an independent reference (torch's own losses or the
closed form)."""

from __future__ import annotations

import math
import re

import mpmath
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from klhuber import losses

X = torch.tensor([-2.5, -0.4, 0.0, 0.3, 1.7], dtype=torch.float64)
T = torch.tensor([0.5, -1.0, 0.2, 0.3, -0.6], dtype=torch.float64)


# ------------------------------------------------------------------ errors name their parameter


@pytest.mark.parametrize(("call", "error", "message"), [
    (lambda: losses.smooth_l1([1.0], 1.0), TypeError, "x must be a torch.Tensor, got list"),
    (lambda: losses.smooth_l1(X, -1.0), ValueError, "beta must be in [0, inf) (beta >= 0), got -1.0"),
    (lambda: losses.huber(X, 0.0), ValueError, "alpha must be in (0, inf) (alpha > 0), got 0.0"),
    (lambda: losses.kl_huber(X, 1.0, -2), ValueError, "beta must be in (0, inf) (beta > 0), got -2"),
    (lambda: losses.HuberLoss(alpha=0.0), ValueError,
     "alpha must be in (0, inf) (alpha > 0), got 0.0"),
    (lambda: losses.HuberLoss(alpha=-1), ValueError,
     "alpha must be in (0, inf) (alpha > 0), got -1"),
])
def test_errors_name_the_parameter_and_its_range(call, error, message):
    with pytest.raises(error, match=re.escape(message)):
        call()


#: each public function: how to call it with one argument replaced, its scale parameters with
#: whether 0 is allowed (eq. 4 needs α > 0; D_{α,β} allows α = 0, the L1 limit, but β > 0)
CALLS = {
    "huber": (lambda x=X, alpha=1.0: losses.huber(x, alpha), "x", {"alpha": False}),
    "smooth_l1": (lambda x=X, beta=1.0: losses.smooth_l1(x, beta), "x", {"beta": True}),
    "kl_huber": (lambda x=X, alpha=1.0, beta=1.0: losses.kl_huber(x, alpha, beta), "x",
                 {"alpha": True, "beta": False}),
    "kl_huber_derivative": (lambda x=X, alpha=1.0, beta=1.0:
                            losses.kl_huber_derivative(x, alpha, beta), "x",
                            {"alpha": True, "beta": False}),
    "huber_bounds": (lambda x=X, alpha=1.0: losses.huber_bounds(x, alpha), "x", {"alpha": False}),
    "huber_loss": (lambda x=X, alpha=1.0: losses.huber_loss(x, T, alpha), "input",
                   {"alpha": False}),
    "kl_huber_loss": (lambda x=X, alpha=1.0, beta=1.0: losses.kl_huber_loss(x, T, alpha, beta),
                      "input", {"alpha": True, "beta": False}),
}


@pytest.mark.parametrize("name", list(CALLS))
def test_every_function_names_its_bad_input(name):
    call, x_name, _ = CALLS[name]
    with pytest.raises(TypeError, match=re.escape(f"{x_name} must be a torch.Tensor, got list")):
        call(x=[1.0, 2.0])
    with pytest.raises(TypeError, match=re.escape(
            f"{x_name} must have a floating-point dtype, got torch.int64")):
        call(x=torch.arange(5))


@pytest.mark.parametrize(("name", "param"), [(n, p) for n, c in CALLS.items() for p in c[2]])
def test_every_scale_is_checked_against_its_own_range(name, param):
    call, _, scales = CALLS[name]
    zero_ok = scales[param]
    bound, rng = (f"{param} >= 0", "[0, inf)") if zero_ok else (f"{param} > 0", "(0, inf)")
    for bad in (-0.5, float("nan")) + (() if zero_ok else (0.0, 0)):
        with pytest.raises(ValueError, match=re.escape(f"{param} must be in {rng} ({bound}), "
                                                       f"got {bad!r}")):
            call(**{param: bad})
    with pytest.raises(ValueError, match=re.escape(f"{param} must be in {rng} ({bound}) "
                                                   "everywhere")):
        call(**{param: torch.tensor([1.0, -1.0, 1.0, 1.0, 1.0], dtype=torch.float64)})
    if zero_ok:  # 0 is a valid value, as a number and in a tensor
        for zero in (0.0, torch.zeros(5, dtype=torch.float64)):
            assert torch.isfinite(call(**{param: zero})).all()


def test_huber_loss_defaults_to_alpha_one_and_takes_a_tensor_alpha():
    assert torch.equal(losses.huber_loss(X, T), torch.nn.functional.huber_loss(X, T))
    alpha = torch.tensor([0.5, 1.0, 2.0, 0.25, 3.0], dtype=torch.float64)
    want = torch.stack([torch.nn.functional.huber_loss(X[i], T[i], delta=float(a))
                        for i, a in enumerate(alpha)])
    torch.testing.assert_close(losses.huber_loss(X, T, alpha, "none"), want, rtol=1e-15, atol=0)
    torch.testing.assert_close(losses.huber_loss(X, T, alpha, "sum"), want.sum(), rtol=1e-15,
                               atol=0)


# ------------------------------------------------------------------------------- HuberLoss


def test_huber_loss_module_defaults_to_alpha_one_like_torch():
    got = losses.HuberLoss()(X, T)
    want = torch.nn.functional.huber_loss(X, T, delta=1.0)
    assert torch.equal(got, want)


def test_huber_loss_module_keeps_a_tensor_alpha_as_a_buffer_and_its_reduction():
    alpha = torch.tensor([0.5, 1.0, 2.0, 0.25, 3.0], dtype=torch.float64)
    module = losses.HuberLoss(alpha=alpha, reduction="sum")
    assert set(dict(module.named_buffers())) == {"alpha"}
    assert torch.equal(module.alpha, alpha) and module.alpha is not alpha
    want = sum(torch.nn.functional.huber_loss(X[i:i + 1], T[i:i + 1], delta=float(a),
                                              reduction="sum") for i, a in enumerate(alpha))
    torch.testing.assert_close(module(X, T), want, rtol=1e-15, atol=0)
    # a float alpha with reduction "none": elementwise, as torch's
    elementwise = losses.HuberLoss(alpha=0.5, reduction="none")(X, T)
    assert torch.equal(elementwise,
                       torch.nn.functional.huber_loss(X, T, delta=0.5, reduction="none"))


# ------------------------------------------------------------------------------ KLHuberLoss


def test_kl_huber_loss_module_passes_its_impl(monkeypatch):
    seen = []
    real = losses.kl_huber_loss

    def spy(*args, **kwargs):
        seen.append(kwargs.get("impl"))
        return real(*args, **kwargs)

    monkeypatch.setattr(losses, "kl_huber_loss", spy)
    for impl in ("autograd", "fused"):
        losses.KLHuberLoss(alpha=0.5, beta=2.0, impl=impl)(X, T)
    assert seen == ["autograd", "fused"]


def test_adaptive_module_repr_shows_its_shape_reduction_and_objective():
    module = losses.AdaptiveKLHuberLoss(shape=(3,), reduction="sum")
    assert "shape=(3,), reduction='sum', objective='nll'" in repr(module)


# ------------------------------------------------------------------------------ smooth L1


def test_smooth_l1_with_a_zero_tensor_beta_is_l1_with_finite_gradients():
    x = X.clone().requires_grad_(True)
    beta = torch.tensor([0.0, 0.0, 0.0, 1.0, 0.0], dtype=torch.float64)
    value = losses.smooth_l1(x, beta)
    want = torch.stack([torch.nn.functional.smooth_l1_loss(X[i], torch.zeros(()).double(),
                                                           beta=float(b))
                        for i, b in enumerate(beta)])
    torch.testing.assert_close(value, want, rtol=1e-15, atol=0)
    value.sum().backward()
    assert torch.isfinite(x.grad).all()
    torch.testing.assert_close(x.grad, torch.tensor([-1.0, -1.0, 0.0, 0.3, 1.0]).double())


def _d(x, alpha, beta):
    """D_{α,β}(x) of eq. 16, written out."""
    return (alpha * torch.exp(-x.abs() / alpha) + x.abs() - alpha) / beta


@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
def test_kl_huber_loss_module_with_a_learnable_alpha_adds_the_kl_terms(reduction):
    # one learnable scale: objective "kl" = D + α/β − 1 − log(α/β) (eq. 15), elementwise
    # before the reduction
    # (the fixed scale is a Python float not exact in float32: it must be used in float64)
    alpha = torch.nn.Parameter(torch.tensor([0.5, 1.0, 2.0, 0.25, 3.0], dtype=torch.float64))
    beta = 1.7
    module = losses.KLHuberLoss(alpha=alpha, beta=beta, reduction=reduction)
    assert module.objective == "kl"
    a = alpha.detach()
    want = _d(X - T, a, beta) + a / beta - 1 - torch.log(a / beta)
    want = {"none": want, "sum": want.sum(), "mean": want.mean()}[reduction]
    torch.testing.assert_close(module(X, T), want, rtol=1e-13, atol=1e-15)
    # the other way round: a fixed float alpha, a learnable beta
    beta_p = torch.nn.Parameter(torch.tensor([0.5, 1.0, 2.0, 0.25, 3.0], dtype=torch.float64))
    module = losses.KLHuberLoss(alpha=0.3, beta=beta_p, reduction="none")
    b = beta_p.detach()
    want = _d(X - T, 0.3, b) + 0.3 / b - 1 - torch.log(0.3 / b)
    torch.testing.assert_close(module(X, T), want, rtol=1e-13, atol=1e-15)


def test_kl_huber_loss_module_computes_the_terms_in_the_inputs_precision(monkeypatch):
    # float32 learnable scalar scales, float64 inputs: the terms are computed in float64 (the
    # scales are converted first; a 0-dim float32 tensor alone would keep its terms in float32),
    # so they match the closed form to float64 rounding
    alpha = torch.nn.Parameter(torch.tensor(0.3, dtype=torch.float32))
    beta = torch.nn.Parameter(torch.tensor(1.7, dtype=torch.float32))
    module = losses.KLHuberLoss(alpha=alpha, beta=beta, reduction="none", impl="autograd")
    assert module.objective == "nll"
    out = module(X, T)
    assert out.dtype == torch.float64
    # cross-entropy: D + α/β + log(2β), at the float32 values of the scales
    a, b = float(alpha.detach()), float(beta.detach())
    want = _d(X - T, a, b) + a / b + math.log(2 * b)
    torch.testing.assert_close(out, want, rtol=1e-13, atol=1e-15)
    seen = []
    real = losses.kl_huber_loss
    monkeypatch.setattr(losses, "kl_huber_loss",
                        lambda *a, **k: seen.append(k.get("impl")) or real(*a, **k))
    module(X, T)
    assert seen == ["autograd"]


# ---------------------------------------------------------------------------- huber_bounds


def _bounds_mpmath(x: float, alpha: float) -> tuple[float, float]:
    """D_{α,1/α}(x) and D_{α/2,1/α}(x) of eq. 20, in 50-digit arithmetic."""
    mpmath = pytest.importorskip("mpmath")
    with mpmath.workdps(50):
        a, z = mpmath.mpf(alpha), abs(mpmath.mpf(x))
        lower = a * (a * mpmath.exp(-z / a) + z - a)
        upper = a * (a / 2 * mpmath.exp(-2 * z / a) + z - a / 2)
        return float(lower), float(upper)


@pytest.mark.parametrize("alpha", [1e-160, 3e160])  # α² or 1/α not a normal float64
def test_huber_bounds_at_extreme_scalar_alphas_match_mpmath(alpha):
    x = torch.tensor([-3.0, 0.1, 0.7, 5.0, 40.0], dtype=torch.float64) * alpha
    lower, upper = losses.huber_bounds(x, alpha)
    want = [_bounds_mpmath(float(v), alpha) for v in x]
    torch.testing.assert_close(lower, torch.tensor([w[0] for w in want], dtype=torch.float64),
                               rtol=1e-14, atol=0)
    torch.testing.assert_close(upper, torch.tensor([w[1] for w in want], dtype=torch.float64),
                               rtol=1e-14, atol=0)


# a tensor alpha, or (bfloat16 only: float16 cannot hold x at such scales) a scalar alpha whose
# square is below float32's normal range
@pytest.mark.parametrize(("dtype", "scalar"), [(torch.float16, False), (torch.bfloat16, False),
                                               (torch.bfloat16, True)])
def test_huber_bounds_in_half_precision_are_computed_in_float32_and_rounded_once(dtype, scalar):
    # Both bounds are computed in float32 and rounded to the
    # input's dtype once, so they are the correctly rounded values: within half a unit in the
    # last place of the half type (plus float32's own rounding, far below it)
    gen = torch.Generator().manual_seed(0)
    if scalar:
        alpha = 2.0 ** -70
        x = (torch.randn(400, generator=gen, dtype=torch.float64) * 3 * alpha).to(dtype)
        alpha_v = torch.full((400,), alpha, dtype=torch.float64)
    else:
        x = (torch.randn(400, generator=gen, dtype=torch.float64) * 3).to(dtype)
        alpha = alpha_v = (torch.rand(400, generator=gen, dtype=torch.float64) * 2 + 0.05).to(dtype)
    lower, upper = losses.huber_bounds(x, alpha)
    assert lower.dtype == upper.dtype == dtype
    eps = torch.finfo(dtype).eps
    for got, index in ((lower, 0), (upper, 1)):
        want = torch.tensor([_bounds_mpmath(float(v), float(a))[index]
                             for v, a in zip(x, alpha_v)],
                            dtype=torch.float64)
        err = (got.double() - want).abs() / want.abs().clamp_min(torch.finfo(dtype).tiny)
        assert float(err.max()) <= 0.5 * eps * (1 + 2 ** -8), (dtype, index, float(err.max()) / eps)


def _ulps(got: torch.Tensor, want: float) -> float:
    """|got − want| in units in the last place of ``want`` in got's dtype (subnormals too)."""
    fi = torch.finfo(got.dtype)
    mantissa = round(-math.log2(fi.eps))
    exponent = math.frexp(abs(want))[1] - 1 if want else -10**6
    ulp = 2.0 ** (max(exponent, math.log2(fi.smallest_normal)) - mantissa)
    return abs(float(got) - want) / ulp


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("alpha", [0.7, 1.37])
def test_huber_bounds_with_a_zero_dim_alpha_in_half_precision_are_correctly_rounded(dtype,
                                                                                   alpha):
    # a 0-dim float32 alpha does not promote a half-precision x in torch's type promotion, so
    # this checks that the bounds are computed in float32 and not in the half type: within
    # half a unit in the last place of the exact value (plus float32's own rounding)
    gen = torch.Generator().manual_seed(1)
    x = (torch.randn(300, generator=gen, dtype=torch.float64) * 3 * alpha).to(dtype)
    alpha_t = torch.tensor(alpha)
    lower, upper = losses.huber_bounds(x, alpha_t)
    for got, index in ((lower, 0), (upper, 1)):
        worst = max(_ulps(g, _bounds_mpmath(float(v), float(alpha_t))[index])
                    for g, v in zip(got, x))
        assert worst <= 0.5 + 2 ** -8, (dtype, index, worst)


# --------------------------------------------------------------------- AdaptiveKLHuberLoss


def test_adaptive_module_shape_accepts_an_int_and_refuses_what_is_not_a_positive_int():
    assert losses.AdaptiveKLHuberLoss(shape=3).raw_alpha.shape == (3,)
    assert losses.AdaptiveKLHuberLoss(shape=(1, 2)).raw_beta.shape == (1, 2)
    for bad in (True, (2, True), (2, 1.0)):
        with pytest.raises(TypeError, match=re.escape("shape must be a tuple of positive ints")):
            losses.AdaptiveKLHuberLoss(shape=bad)
    with pytest.raises(ValueError, match=re.escape(
            "shape must be a tuple of positive ints (each >= 1), got (2, 0)")):
        losses.AdaptiveKLHuberLoss(shape=(2, 0))


def test_adaptive_module_initial_scales_must_be_representable_in_the_default_dtype():
    fi = torch.finfo(torch.float32)
    assert torch.get_default_dtype() == torch.float32
    smallest = fi.smallest_normal * fi.eps  # 2**-149, the smallest float32 subnormal
    message = (f"alpha must be in [{smallest:.3g}, {fi.max:.3g}], the positive finite range of "
               "the module's dtype torch.float32 (the default dtype), got ")
    for bad in (1e-46, 1e39):  # rounds to 0, overflows to inf
        with pytest.raises(ValueError, match=re.escape(message + repr(bad))):
            losses.AdaptiveKLHuberLoss(alpha=bad)
    for edge in (smallest, fi.max):  # the ends of the range are accepted
        module = losses.AdaptiveKLHuberLoss(alpha=edge)
        assert float(module.alpha.detach()) > 0


@pytest.mark.parametrize(("objective", "learn_alpha", "learn_beta"), [
    ("d", False, False), ("kl", True, False), ("kl", False, True), ("nll", True, True),
    ("nll", True, False), ("nll", False, False)])
def test_adaptive_module_takes_every_objective_that_has_a_minimiser(objective, learn_alpha,
                                                                     learn_beta):
    module = losses.AdaptiveKLHuberLoss(objective=objective, learn_alpha=learn_alpha,
                                        learn_beta=learn_beta)
    assert module.objective == objective
    assert torch.isfinite(module(X.float(), T.float()))


@pytest.mark.parametrize(("objective", "learn_alpha", "learn_beta", "message"), [
    ("d", True, False, "objective='d' with a learnable scale has no finite minimiser"),
    ("d", False, True, "objective='d' with a learnable scale has no finite minimiser"),
    ("kl", True, True, "objective='kl' with both scales learnable has no finite minimiser"),
    ("l2", True, True, "objective must be one of ('d', 'kl', 'nll') or None, got 'l2'")])
def test_adaptive_module_refuses_objectives_without_a_minimiser(objective, learn_alpha,
                                                                learn_beta, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        losses.AdaptiveKLHuberLoss(objective=objective, learn_alpha=learn_alpha,
                                   learn_beta=learn_beta)


# ------------------------------------------------------------------------------ laplace_kl


def test_laplace_kl_with_one_tensor_among_numbers_is_eq_15():
    loc_p = torch.tensor([-1.0, 0.0, 0.5, 2.0], dtype=torch.float64)
    got = losses.laplace_kl(loc_p, 0.7, 0.25, 1.9)
    d = (loc_p - 0.25).abs()
    want = (0.7 * torch.exp(-d / 0.7) + d) / 1.9 + math.log(1.9 / 0.7) - 1  # eq. 15
    torch.testing.assert_close(got, want, rtol=1e-14, atol=1e-15)
    got_q = losses.laplace_kl(0.25, 0.7, loc_p, 1.9)  # the tensor in another place
    torch.testing.assert_close(got_q, want, rtol=1e-14, atol=1e-15)


def test_laplace_kl_computes_in_the_promoted_dtype_of_its_arguments():
    # float16 tensors alone, or among numbers: the default dtype (float32) is part of the
    # promotion, so the result is float32 (and computed in it)
    loc = torch.tensor([-1.0, 0.0, 0.5, 2.0], dtype=torch.float16)
    got = losses.laplace_kl(loc, 0.7, 0.25, 1.9)
    assert got.dtype == torch.float32
    half = [torch.tensor(v, dtype=torch.float16) for v in (0.7, 0.25, 1.9)]
    only_half = losses.laplace_kl(loc, *half)
    assert only_half.dtype == torch.float32
    torch.testing.assert_close(only_half, losses.laplace_kl(loc.float(), *(h.float() for h in half)),
                               rtol=0, atol=0)
    d = (loc.double() - 0.25).abs()
    want = (0.7 * torch.exp(-d / 0.7) + d) / 1.9 + math.log(1.9 / 0.7) - 1
    torch.testing.assert_close(got.double(), want, rtol=2e-7, atol=1e-7)


@pytest.mark.parametrize(("args", "error", "message"), [
    ((X, True, 0.0, 1.0), TypeError, "scale_p must be a real number or a tensor, got bool"),
    ((X, 1.0, "0", 1.0), TypeError, "loc_q must be a real number or a tensor, got str"),
    ((torch.zeros(2, 3), 1.0, torch.zeros(4), 1.0), ValueError,
     "loc_p, scale_p, loc_q and scale_q must have shapes that broadcast together; got "
     "loc_p (2, 3), scale_p (), loc_q (4,), scale_q ()"),
    ((0.0, math.inf, 0.0, math.inf), ValueError, "scale_p and scale_q are both inf"),
    ((X, 0.0, 0.0, 1.0), ValueError, "scale_p must be in (0, inf] (positive) everywhere"),
])
def test_laplace_kl_names_its_bad_argument(args, error, message):
    with pytest.raises(error, match=re.escape(message)):
        losses.laplace_kl(*args)


def _laplace_kl_mpmath(loc_p, scale_p, loc_q, scale_q):
    """Eq. 15 in 60-digit arithmetic."""
    mpmath = pytest.importorskip("mpmath")
    with mpmath.workdps(60):
        b1, b2 = mpmath.mpf(scale_p), mpmath.mpf(scale_q)
        d = abs(mpmath.mpf(loc_p) - mpmath.mpf(loc_q))
        return float((b1 * mpmath.exp(-d / b1) + d) / b2 + mpmath.log(b2 / b1) - 1)


@pytest.mark.parametrize(("scale_p", "scale_q"), [
    (1e-310, 1.0),                    # r subnormal: 1/r is not finite
    (3e-300, 5e10),                   # r below 4 x the smallest normal float64
    (1e308, 2.0),                     # r above max/4
    (1e10 * (1 + 1e-6), 1e10),        # close scales: the constant (r - 1)^2/2 is 5e-13
])
def test_laplace_kl_at_extreme_and_close_scale_ratios_matches_mpmath(scale_p, scale_q):
    loc = torch.tensor([0.0, 1e-3, 2.0], dtype=torch.float64)
    got = losses.laplace_kl(loc, scale_p, 0.0, scale_q)
    want = torch.tensor([_laplace_kl_mpmath(float(v), scale_p, 0.0, scale_q) for v in loc],
                        dtype=torch.float64)
    torch.testing.assert_close(got, want, rtol=1e-9, atol=0)


def test_laplace_kl_of_an_infinite_scale_is_infinite_also_under_vmap():
    scale_q = torch.tensor([1.0, math.inf, 1e-310, 2.0], dtype=torch.float64)
    loc = torch.zeros(4, dtype=torch.float64)
    direct = losses.laplace_kl(loc, 1.0, 0.0, scale_q)
    assert math.isinf(direct[1]) and direct[1] > 0
    # the other entries, in range and out of it, in one tensor: eq. 15 in 60 digits
    for i in (0, 2, 3):
        want = _laplace_kl_mpmath(0.0, 1.0, 0.0, float(scale_q[i]))
        assert math.isclose(float(direct[i]), want, rel_tol=1e-12), (i, float(direct[i]), want)
    # under torch.func.vmap no data-dependent branch can be taken: the out-of-range handling
    # must then be applied unconditionally, with the same values
    mapped = torch.func.vmap(lambda q: losses.laplace_kl(loc[0], 1.0, 0.0, q))(scale_q)
    torch.testing.assert_close(mapped, direct, rtol=1e-15, atol=0)


def test_kl_huber_loss_module_defaults_and_ranges():
    assert torch.equal(losses.KLHuberLoss()(X, T), losses.kl_huber_loss(X, T, 1.0, 1.0))
    # alpha = 0 is the L1 limit (allowed); beta = 0 is not
    torch.testing.assert_close(losses.KLHuberLoss(alpha=0.0, reduction="none")(X, T),
                               (X - T).abs(), rtol=1e-15, atol=0)
    with pytest.raises(ValueError, match=re.escape("beta must be in (0, inf) (beta > 0), got 0.0")):
        losses.KLHuberLoss(beta=0.0)
    # a learnable scale must start positive (an optimiser could not leave 0)
    for name in ("alpha", "beta"):
        with pytest.raises(ValueError, match=re.escape(
                f"{name} must be in (0, inf) ({name} > 0) everywhere")):
            losses.KLHuberLoss(**{name: torch.nn.Parameter(torch.zeros(5, dtype=torch.float64))})


def test_kl_huber_loss_module_keeps_an_explicit_objective():
    alpha = torch.nn.Parameter(torch.tensor(0.5, dtype=torch.float64))
    assert losses.KLHuberLoss(alpha=alpha).objective == "kl"  # the default for one scale
    assert losses.KLHuberLoss(alpha=alpha, objective="nll").objective == "nll"


def test_adaptive_module_refuses_an_input_its_scales_do_not_broadcast_to():
    module = losses.AdaptiveKLHuberLoss(shape=(3,))
    with pytest.raises(ValueError, match=re.escape(
            "input of shape (5,) does not match the parameter shape (3,) (they must broadcast to "
            "the input)")):
        module(X.float(), T.float())
    assert module(torch.zeros(2, 3), torch.ones(2, 3)).shape == ()


@pytest.mark.parametrize(("learn_beta", "reduction"), [(True, "sum"), (False, "none"),
                                                        (True, "mean")])
def test_adaptive_module_value_is_the_closed_form_in_the_inputs_precision(learn_beta, reduction):
    module = losses.AdaptiveKLHuberLoss(alpha=0.3, beta=1.7, reduction=reduction,
                                        learn_beta=learn_beta)
    a = float(module.alpha.detach())  # the float32 scales the module holds, exactly
    b = float(module.beta.detach())
    d = _d(X - T, a, b)
    if learn_beta:  # both learnable: cross-entropy D + α/β + log(2β)
        want = d + a / b + math.log(2 * b)
    else:  # alpha alone: KL, D + α/β − 1 − log(α/β)
        want = d + a / b - 1 - math.log(a / b)
    want = {"none": want, "sum": want.sum(), "mean": want.mean()}[reduction]
    got = module(X, T)
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, want, rtol=1e-13, atol=1e-15)


def test_adaptive_module_defaults():
    module = losses.AdaptiveKLHuberLoss()
    torch.testing.assert_close(module.alpha.detach(), torch.tensor(1.0), rtol=1e-6, atol=0)
    torch.testing.assert_close(module.beta.detach(), torch.tensor(1.0), rtol=1e-6, atol=0)
    assert module.include_constants is True and module.objective == "nll"
    plain = losses.AdaptiveKLHuberLoss(include_constants=False)
    assert plain.include_constants is False and plain.objective == "d"


# ------------------------------------------------------------------ kernels: extreme scales


@pytest.mark.parametrize("p", [1e40, 3e-44, 1.3e-45])  # beyond float32's range; subnormal in it
def test_div_tiny_divides_by_the_exact_number_not_its_float32_rounding(p):
    # 1e40 is inf in float32 (t / inf would give 0); 3e-44 and 1.3e-45 are float32
    # subnormals that float32 rounds by 7 % and 8 %: the quotient must be t / p in float64,
    # rounded once to float32
    from klhuber._kernels import div_tiny

    t = torch.tensor([1e30, -3.0, 2.0**-130, 1e-20], dtype=torch.float32)
    got = div_tiny(t, p)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, (t.double() / p).float(), rtol=0, atol=0)


def test_div_tiny_is_zero_at_zero_with_a_zero_gradient():
    # exactly 0 at t = 0 in value and gradient (t / p there would be 0 * inf = NaN in the
    # gradient of an extreme p); the other entries keep their gradient 1 / p
    from klhuber._kernels import div_tiny

    for dtype in (torch.float32, torch.float64):
        t = torch.tensor([0.0, 2.0, -0.0], dtype=dtype, requires_grad=True)
        q = div_tiny(t, 1e-300 if dtype == torch.float64 else 3e-44)
        q.sum().backward()
        assert q[0].item() == 0.0 and q[2].item() == 0.0
        assert t.grad[0].item() == 0.0 and t.grad[2].item() == 0.0
        assert t.grad[1].item() > 0


# ------------------------------------------------- second derivatives at the L1 limit alpha = 0


@pytest.mark.parametrize("mode", ["reverse", "forward"])
def test_second_derivatives_at_a_zero_tensor_alpha_are_the_l1_limits(mode):
    # D at alpha = 0 is |x|/beta: for x != 0 every second derivative involving alpha tends to
    # 0 (u e^{-u} and u^2 e^{-u} vanish as u = |x|/alpha -> inf), exactly so at alpha = 1e-4;
    # d2D/dx2 is 0 for x != 0 and +inf at x = 0 (Appendix B). No NaN from a / 0 in the graph
    # (double backward, and forward-over-reverse via torch.func.hessian).
    x = torch.tensor([-2.0, 0.5, 3.0], dtype=torch.float64)
    alpha0 = torch.zeros(3, dtype=torch.float64)

    def hess(alpha):
        if mode == "forward":
            h = torch.func.hessian(lambda v, a: losses.kl_huber(v, a, 1.3).sum(), argnums=(0, 1))
            return h(x, alpha)
        xs, a = x.clone().requires_grad_(), alpha.clone().requires_grad_()
        gx, ga = torch.autograd.grad(losses.kl_huber(xs, a, 1.3).sum(), (xs, a),
                                     create_graph=True)
        rows = [torch.autograd.grad(g[i], (xs, a), retain_graph=True) for g in (gx, ga)
                for i in range(3)]
        return ((torch.stack([r[0] for r in rows[:3]]), torch.stack([r[1] for r in rows[:3]])),
                (torch.stack([r[0] for r in rows[3:]]), torch.stack([r[1] for r in rows[3:]])))

    at_zero, near_zero = hess(alpha0), hess(torch.full((3,), 1e-4, dtype=torch.float64))
    for row0, row1 in zip(at_zero, near_zero):
        for block0, block1 in zip(row0, row1):
            assert torch.isfinite(block0).all(), block0
            torch.testing.assert_close(block0, block1, rtol=0, atol=1e-300)
            assert (block0 == 0).all()
    # and at x = 0 the curvature in x is the documented +inf, the alpha entries 0
    xs = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    a = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    (gx,) = torch.autograd.grad(losses.kl_huber(xs, a, 1.3).sum(), xs, create_graph=True)
    hxx, hxa = torch.autograd.grad(gx.sum(), (xs, a))
    assert hxx.item() == math.inf and hxa.item() == 0.0


def test_smooth_l1_beta_gradient_at_zero_residual_is_zero():
    # at x = 0 the loss is 0 for every beta >= 0, so its beta-gradient is 0, also at beta = 0
    # (the linear branch's -1/2 is the slope only for x != 0)
    x = torch.tensor([0.0, 0.0, 0.5, -0.5], dtype=torch.float64, requires_grad=True)
    beta = torch.tensor([0.0, 0.3, 0.0, 0.0], dtype=torch.float64, requires_grad=True)
    losses.smooth_l1(x, beta).sum().backward()
    assert beta.grad.tolist() == [0.0, 0.0, -0.5, -0.5]
    assert x.grad.tolist() == [0.0, 0.0, 1.0, -1.0]


def test_laplace_kl_with_meta_tensors_and_number_parameters():
    # the number parameters are made on the tensors' device (here meta), not on the CPU
    mu = torch.empty(5, device="meta")
    out = losses.laplace_kl(mu, 1.0, 0.0, torch.empty(5, device="meta"))
    assert out.device.type == "meta" and out.shape == (5,)
    out = losses.laplace_kl(0.0, torch.empty(2, 3, device="meta"), mu.new_empty(3), 2.0)
    assert out.device.type == "meta" and out.shape == (2, 3)


def test_kl_huber_loss_module_computes_in_the_input_dtype_with_a_narrower_scale():
    # a float32 (or bfloat16) alpha parameter with a float64 (float32) input: the loss is that
    # of the input's dtype, with the parameter's value converted exactly
    x = torch.linspace(-1, 1, 8, dtype=torch.float64).reshape(2, 4)
    for param_dtype, in_dtype, rtol in ((torch.float32, torch.float64, 1e-14),
                                        (torch.bfloat16, torch.float32, 1e-6)):
        alpha = torch.full((4,), 0.1, dtype=param_dtype)
        module = losses.KLHuberLoss(alpha=torch.nn.Parameter(alpha.clone()), beta=3.0,
                                    reduction="none")
        wide = losses.KLHuberLoss(alpha=torch.nn.Parameter(alpha.to(in_dtype)), beta=3.0,
                                  reduction="none")
        xi = x.to(in_dtype)
        got, want = module(xi, torch.zeros_like(xi)), wide(xi, torch.zeros_like(xi))
        assert got.dtype == in_dtype
        torch.testing.assert_close(got, want, rtol=rtol, atol=0)


def test_adaptive_kl_huber_loss_returns_the_input_dtype():
    # the module's parameters are converted to the input's dtype, as torch.nn losses do
    for in_dtype, double in ((torch.float16, False), (torch.bfloat16, False),
                             (torch.float32, True)):
        module = losses.AdaptiveKLHuberLoss(alpha=0.3, beta=0.7, shape=(4,), learn_beta=False,
                                            reduction="none")
        if double:
            module = module.double()
        x = torch.linspace(-2, 2, 12).reshape(3, 4).to(in_dtype)
        out = module(x, torch.zeros_like(x))
        assert out.dtype == in_dtype
        ref = losses.AdaptiveKLHuberLoss(alpha=0.3, beta=0.7, shape=(4,), learn_beta=False,
                                         reduction="none").double()
        want = ref(x.double(), torch.zeros(3, 4, dtype=torch.float64))
        eps = torch.finfo(in_dtype).eps
        torch.testing.assert_close(out.double(), want, rtol=4 * eps, atol=0)


def test_number_alpha_below_or_in_the_subnormal_range_on_the_plain_path():
    # float32: 1e-46 rounds to 0 (the L1 limit |x|/beta), 1e-40 is a subnormal scale kept as is
    x = torch.tensor([1e-40, 2.0])
    l1 = losses.kl_huber(x, 1e-46, 1.0, impl="autograd")
    torch.testing.assert_close(l1, x, rtol=0, atol=0)
    d = losses.kl_huber(x, 1e-40, 1.0, impl="autograd")  # alpha/e at x = alpha
    assert math.isclose(d[0].item(), 1e-40 / math.e, rel_tol=1e-4) and d[1].item() == 2.0
    # float64: 1e-320 is a subnormal float64 (0 in float32): D, not the L1 limit
    x64 = torch.tensor([1e-320, 2.0], dtype=torch.float64)
    d64 = losses.kl_huber(x64, 1e-320, 1.0, impl="autograd")
    assert math.isclose(d64[0].item(), 1e-320 / math.e, rel_tol=1e-2) and d64[1].item() == 2.0


def test_extreme_number_scales_keep_the_quadratic_branch():
    # scales outside the chunked kernel's moderate range (alpha/beta below 16 tiny): the
    # quadratic branch alpha g(u) / beta with g(u) = e^-u - 1 + u, here at u = 0.1 and u = 1
    x = torch.tensor([1e-301, 0.0], dtype=torch.float64)
    d = losses.kl_huber(x, 1e-300, 1e10, impl="autograd")
    assert math.isclose(d[0].item(), 1e-300 * (math.exp(-0.1) - 0.9) / 1e10, rel_tol=1e-8)
    assert d[1].item() == 0.0
    x32 = torch.tensor([1e-30, 0.0])
    d32 = losses.kl_huber(x32, 1e-30, 1e10, impl="autograd")
    want = float(torch.tensor(1e-30)) * math.exp(-1) / 1e10  # u = 1 exactly in float32
    assert math.isclose(d32[0].item(), want, rel_tol=1e-2) and d32[1].item() == 0.0


def test_kl_huber_derivative_defaults_and_half_dtypes():
    x = torch.tensor([-1.5, -0.2, 0.0, 0.3, 2.0], dtype=torch.float64)
    for order in (1, 2):
        # beta defaults to 1
        assert torch.equal(losses.kl_huber_derivative(x, 0.7, order=order),
                           losses.kl_huber_derivative(x, 0.7, 1.0, order=order))
        # half inputs are computed in float32 and returned in their own dtype, rounded once
        for half in (torch.float16, torch.bfloat16):
            got = losses.kl_huber_derivative(x.to(half), 0.7, 1.3, order=order)
            want = losses.kl_huber_derivative(x.to(half).double(), 0.7, 1.3, order=order)
            assert got.dtype == half
            torch.testing.assert_close(got, want.to(half), rtol=0, atol=0)


def test_laplace_kl_with_extreme_and_ordinary_scale_ratios_together():
    # r = b1/b2 of 1e-320 (1/r overflows) beside ordinary ratios: r - 1 + log(b2) - log(b1)
    # for the first, r - 1 - log r for the others, in one call
    import mpmath

    sp = torch.tensor([1e-320, 0.5, 3.0], dtype=torch.float64)
    got = losses.laplace_kl(0.0, sp, 0.0, 1.0)
    want = [float(mpmath.mpf(float(s)) - 1 - mpmath.log(mpmath.mpf(float(s)))) for s in sp]
    torch.testing.assert_close(got, torch.tensor(want, dtype=torch.float64), rtol=1e-14, atol=0)


def test_laplace_kl_with_an_infinite_scale_under_vmap():
    # under vmap the range check cannot look at the values; an infinite scale must still give
    # the limit +inf (not inf - inf), and finite ones their value
    sp = torch.tensor([[math.inf], [0.5]], dtype=torch.float64)
    got = torch.func.vmap(lambda s: losses.laplace_kl(0.0, s, 0.0, 1.0))(sp)
    assert got[0].item() == math.inf
    assert math.isclose(got[1].item(), 0.5 - 1 - math.log(0.5), rel_tol=1e-14)


def test_adaptive_loss_rejects_a_zero_initial_scale_with_the_open_interval():
    # 0 is out of (0, inf) for an initial scale: the message states that range (not the
    # representable range of the dtype, which is for tiny positive values)
    for name in ("alpha", "beta"):
        with pytest.raises(ValueError, match=rf"^{name} must be in \(0, inf\) \({name} > 0\), "
                                             r"got 0\.0$"):
            losses.AdaptiveKLHuberLoss(**{name: 0.0})


# ------------------------------------------------- tensor kinds the losses cannot compute in


@pytest.mark.parametrize(("call", "error", "message"), [
    (lambda: losses.huber(X, torch.ones(5, dtype=torch.float8_e4m3fn)), TypeError,
     "alpha must have float16, bfloat16, float32 or float64 dtype, got torch.float8_e4m3fn"),
    (lambda: losses.kl_huber(X, 1.0, torch.ones((), dtype=torch.float8_e5m2)), TypeError,
     "beta must have float16, bfloat16, float32 or float64 dtype, got torch.float8_e5m2"),
    (lambda: losses.kl_huber(X.to(torch.float8_e4m3fn), 1.0, 1.0), TypeError,
     "x must have float16, bfloat16, float32 or float64 dtype, got torch.float8_e4m3fn"),
    (lambda: losses.smooth_l1(X, torch.ones(5, dtype=torch.float64).to_sparse()), TypeError,
     "beta must be a dense (strided) tensor, got layout torch.sparse_coo"),
    (lambda: losses.huber(X.to_sparse(), 1.0), TypeError,
     "x must be a dense (strided) tensor, got layout torch.sparse_coo"),
    (lambda: losses.huber(X, torch.tensor(1.0, device="meta")), ValueError,
     "alpha is on meta but the input is on cpu"),
    (lambda: losses.huber(X, torch.zeros(5, dtype=torch.int32)), TypeError,
     "alpha must have a floating-point dtype, got torch.int32"),
])
def test_float8_sparse_and_misplaced_0d_scales_are_named(call, error, message):
    """float8 and sparse tensors have no arithmetic the losses could use: they are named with
    the allowed kinds instead of torch's internal NotImplementedError; a 0-d scale may only be
    on another device than the input if it is on the CPU (as torch allows)."""
    with pytest.raises(error, match=re.escape(message)):
        call()


def test_an_empty_float32_scale_and_a_0d_cpu_scale_with_a_meta_input_are_accepted():
    assert losses.huber(torch.empty(0), torch.empty(0)).shape == (0,)
    out = losses.kl_huber(torch.ones(3, device="meta"), torch.tensor(0.5), torch.tensor(2.0))
    assert out.shape == (3,) and out.device.type == "meta"


# --------------------------------------- argument checks (losses survivors, session 12, helper-31)

ZERO = torch.zeros_like(X)


# kills klhuber._validation.x_check_pair__mutmut_13 (the target is named "XXtargetXX")
@pytest.mark.parametrize("call", [
    lambda t: losses.huber_loss(X, t),
    lambda t: losses.kl_huber_loss(X, t, 0.5, 2.0),
    lambda t: losses.HuberLoss()(X, t),
    lambda t: losses.KLHuberLoss()(X, t),
])
def test_a_bad_target_is_named_target(call):
    with pytest.raises(TypeError, match=re.escape("target must be a torch.Tensor, got list")):
        call([0.5, -1.0, 0.2, 0.3, -0.6])
    with pytest.raises(TypeError, match=re.escape(
            "target must have a floating-point dtype, got torch.int64")):
        call(torch.arange(5))


# kills klhuber._validation.x_check_param__mutmut_25, _26, _27 (an int 0 scale where 0 is
# allowed is rejected), _27 (every int scale where 0 is not allowed is rejected) and _26 (a
# NumPy scale in (0, 1) is rejected); the references are torch's own losses and the closed form
# D_{0,beta}(x) = |x|/beta (the L1 limit of eq. 16, exact)
@pytest.mark.parametrize(("call", "reference"), [
    (lambda: losses.smooth_l1(X, 0), lambda: F.smooth_l1_loss(X, ZERO, beta=0.0, reduction="none")),
    (lambda: losses.smooth_l1(X, np.float64(0.0)), lambda: X.abs()),
    (lambda: losses.smooth_l1(X, np.float64(0.5)),
     lambda: F.smooth_l1_loss(X, ZERO, beta=0.5, reduction="none")),
    (lambda: losses.smooth_l1(X, 2), lambda: F.smooth_l1_loss(X, ZERO, beta=2.0, reduction="none")),
    (lambda: losses.huber(X, 2), lambda: F.huber_loss(X, ZERO, delta=2.0, reduction="none")),
    (lambda: losses.huber(X, np.float64(0.5)),
     lambda: F.huber_loss(X, ZERO, delta=0.5, reduction="none")),
    (lambda: losses.huber(X, np.float32(0.25)),
     lambda: F.huber_loss(X, ZERO, delta=0.25, reduction="none")),
    (lambda: losses.huber_loss(X, T, 3), lambda: F.huber_loss(X, T, delta=3.0)),
    (lambda: losses.kl_huber(X, 0, 2), lambda: X.abs() / 2),
    (lambda: losses.kl_huber(X, np.int64(0), np.float64(0.5)), lambda: X.abs() / 0.5),
    (lambda: losses.kl_huber_loss(X, T, 0, 4, reduction="none"), lambda: (X - T).abs() / 4),
    (lambda: losses.HuberLoss(alpha=2)(X, T), lambda: F.huber_loss(X, T, delta=2.0)),
    (lambda: losses.KLHuberLoss(alpha=0, beta=2, reduction="sum")(X, T),
     lambda: ((X - T).abs() / 2).sum()),
])
def test_int_and_numpy_scales_are_accepted(call, reference):
    torch.testing.assert_close(call(), reference(), rtol=1e-15, atol=0.0)


# kills klhuber._validation.x_check_param__mutmut_46 (one-element tensor scales, 0-d or of
# shape (1,), are no longer checked, and a negative, zero or NaN scale gives a silent value)
@pytest.mark.parametrize("shape", [(), (1,)])
@pytest.mark.parametrize(("call", "param", "zero_ok"), [
    (lambda s: losses.huber(X, s), "alpha", False),
    (lambda s: losses.smooth_l1(X, s), "beta", True),
    (lambda s: losses.kl_huber(X, s, 1.0), "alpha", True),
    (lambda s: losses.kl_huber(X, 1.0, s), "beta", False),
    (lambda s: losses.huber_loss(X, T, s), "alpha", False),
    (lambda s: losses.kl_huber_loss(X, T, 1.0, s), "beta", False),
])
def test_one_element_tensor_scales_are_range_checked(shape, call, param, zero_ok):
    bound, rng = (f"{param} >= 0", "[0, inf)") if zero_ok else (f"{param} > 0", "(0, inf)")
    message = re.escape(f"{param} must be in {rng} ({bound}) everywhere")
    bads = (-1.0, float("nan")) + (() if zero_ok else (0.0, -0.0))
    for bad in bads:
        for dtype in (torch.float64, torch.float32):
            with pytest.raises(ValueError, match=message):
                call(torch.full(shape, bad, dtype=dtype))
    with pytest.raises(ValueError, match=message):
        call(torch.full(shape, -1.0, dtype=torch.float64, requires_grad=True))


# kills klhuber._validation.x_check_param__mutmut_41 (a 0-d scale on CPU with an input on
# another device, here meta, is rejected); the expected result is what torch's own ops give on
# meta: a meta tensor of the input's shape and dtype
@pytest.mark.parametrize(("call", "n_out"), [
    (lambda x, s: losses.huber(x, s), 1),
    (lambda x, s: losses.smooth_l1(x, s), 1),
    (lambda x, s: losses.kl_huber(x, s, s), 1),
    (lambda x, s: losses.huber_bounds(x, s), 2),
    (lambda x, s: losses.kl_huber_loss(x, x, s, s, reduction="none"), 1),
])
def test_a_0d_cpu_scale_goes_with_a_meta_input(call, n_out):
    x = torch.empty(2, 3, dtype=torch.float64, device="meta")
    out = call(x, torch.tensor(0.5, dtype=torch.float64))
    outs = out if n_out > 1 else (out,)
    assert len(outs) == n_out
    reference = torch.nn.functional.huber_loss(x, x, reduction="none")  # torch's meta result
    for o in outs:
        assert (o.device, o.shape, o.dtype) == (reference.device, reference.shape, reference.dtype)


# kills klhuber._validation.x_check_param__mutmut_42 (a 1-d scale on another device than the
# input passes the check and fails later inside torch with a RuntimeError)
@pytest.mark.parametrize(("call", "param"), [
    (lambda s: losses.huber(X, s), "alpha"),
    (lambda s: losses.smooth_l1(X, s), "beta"),
    (lambda s: losses.kl_huber(X, s, 1.0), "alpha"),
    (lambda s: losses.kl_huber(X, 1.0, s), "beta"),
    (lambda s: losses.kl_huber_loss(X, T, 1.0, s), "beta"),
])
@pytest.mark.parametrize("shape", [(5,), (1,)])
def test_a_scale_on_another_device_is_named(call, param, shape):
    scale = torch.ones(shape, dtype=torch.float64, device="meta")
    with pytest.raises(ValueError, match=re.escape(f"{param} is on meta but the input is on cpu")):
        call(scale)


# ------------- defaults, double backward, the plain path at extremes (losses survivors, helper-30)


# kills klhuber.losses.x_kl_huber_loss__mutmut_1 and _2 (default alpha or beta 2.0)
def test_kl_huber_loss_defaults_to_alpha_one_and_beta_one():
    want = _d(X - T, 1.0, 1.0)
    torch.testing.assert_close(losses.kl_huber_loss(X, T, reduction="none"), want,
                               rtol=1e-13, atol=1e-15)
    torch.testing.assert_close(losses.kl_huber_loss(X, T), want.mean(), rtol=1e-13, atol=1e-15)


# kills klhuber.losses.x_smooth_l1__mutmut_50 (z <= beta: the quadratic branch at |x| = beta,
# where 0.5 * z * z overflows)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_smooth_l1_with_a_tensor_beta_at_the_switch_point_is_torchs(dtype):
    big = 1e200 if dtype == torch.float64 else 3e38
    x = torch.tensor([big, -big, 2.0, -0.5, 3.0], dtype=dtype)
    beta = torch.tensor([big, big, 2.0, 0.5, 1.0], dtype=dtype)
    got = losses.smooth_l1(x, beta)
    want = torch.stack([torch.nn.functional.smooth_l1_loss(xi, torch.zeros_like(xi),
                                                           beta=float(bi), reduction="none")
                        for xi, bi in zip(x, beta)])
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, want, rtol=0, atol=0)


# kills klhuber.losses.xǁAdaptiveKLHuberLossǁ__init____mutmut_13 and _14 (objective="d" no
# longer accepted with include_constants=False)
def test_adaptive_module_without_constants_accepts_objective_d():
    module = losses.AdaptiveKLHuberLoss(alpha=0.5, beta=2.0, include_constants=False,
                                        objective="d", reduction="none")
    assert module.objective == "d"
    x, t = X.float(), T.float()
    alpha, beta = float(module.alpha.detach()), float(module.beta.detach())
    torch.testing.assert_close(module(x, t), _d(x - t, alpha, beta), rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match=re.escape(
            "include_constants=False means objective='d'; got objective='kl'")):
        losses.AdaptiveKLHuberLoss(include_constants=False, objective="kl")


# kills klhuber.losses.xǁAdaptiveKLHuberLossǁ__init____mutmut_34 (the scale checked against
# None: AttributeError for a tensor scale)
def test_adaptive_module_takes_a_zero_dim_tensor_scale_and_refuses_a_vector():
    module = losses.AdaptiveKLHuberLoss(alpha=torch.tensor(0.5), beta=torch.tensor(2.0))
    torch.testing.assert_close(module.alpha, torch.tensor(0.5), rtol=1e-6, atol=0)
    torch.testing.assert_close(module.beta, torch.tensor(2.0), rtol=1e-6, atol=0)
    for name in ("alpha", "beta"):
        with pytest.raises(ValueError, match=re.escape(f"{name} of shape (2,) does not broadcast")):
            losses.AdaptiveKLHuberLoss(**{name: torch.tensor([1.0, 2.0])})


# kills klhuber.losses.x_kl_huber__mutmut_40 (impl=None: tensor scales go to torch.compile,
# whose backward does not support double backward)
def test_kl_huber_with_a_tensor_alpha_has_the_second_derivative_of_appendix_b():
    x = X.clone().requires_grad_(True)
    alpha = torch.tensor(0.7, dtype=torch.float64)
    g, = torch.autograd.grad(losses.kl_huber(x, alpha, 1.5).sum(), x, create_graph=True)
    h, = torch.autograd.grad(g.sum(), x)
    torch.testing.assert_close(h, torch.exp(-X.abs() / 0.7) / (0.7 * 1.5), rtol=1e-13, atol=0)


# kills klhuber.losses.x_laplace_kl__mutmut_95, _105, _106 (impl None / "XXdefaultXX" /
# "DEFAULT": torch.compile, no double backward)
def test_laplace_kl_has_the_second_derivative_of_eq_15_in_the_location():
    loc = X.clone().requires_grad_(True)
    g, = torch.autograd.grad(losses.laplace_kl(loc, 0.7, 0.25, 1.9).sum(), loc,
                             create_graph=True)
    h, = torch.autograd.grad(g.sum(), loc)
    d = (X - 0.25).abs()
    torch.testing.assert_close(h, torch.exp(-d / 0.7) / (0.7 * 1.9), rtol=1e-13, atol=0)


# kills klhuber._kernels.x_kl_huber_plain__mutmut_88 (tensor scales with an overflowing
# alpha/beta) and _133 (number scales with an overflowing alpha/beta): inf / inf = NaN at
# x = +-inf, where D = inf
@pytest.mark.parametrize("tensors", [True, False])
def test_plain_path_is_infinite_at_infinite_x_with_an_overflowing_scale_ratio(tensors):
    x = torch.tensor([math.inf, -math.inf, 0.0], dtype=torch.float64)
    alpha, beta = 1e300, 1e-300
    if tensors:
        alpha = torch.tensor(alpha, dtype=torch.float64)
        beta = torch.tensor(beta, dtype=torch.float64)
    got = losses.kl_huber(x, alpha, beta, impl="autograd")
    assert got.tolist() == [math.inf, math.inf, 0.0]


# kills klhuber._kernels.x_kl_huber_plain__mutmut_124 (alpha * beta for alpha / beta with a
# subnormal alpha)
@pytest.mark.parametrize(("dtype", "alpha"), [(torch.float64, 1e-310), (torch.float32, 1e-40)])
def test_plain_path_with_a_subnormal_alpha_is_eq_16(dtype, alpha):
    u = torch.tensor([3.0, -3.0, 1.0, 10.0], dtype=torch.float64)
    alpha = float(torch.tensor(alpha, dtype=dtype))  # the number the dtype holds
    x = (u * alpha).to(dtype)
    u = x.double() / alpha  # exactly the x given, in units of alpha
    want = alpha * (torch.exp(-u.abs()) - 1 + u.abs()) / 4.0  # alpha g(u) / beta
    got = losses.kl_huber(x, alpha, 4.0, impl="autograd")
    rtol = 1e-10 if dtype == torch.float64 else 1e-3  # subnormal results: few digits
    torch.testing.assert_close(got.double(), want, rtol=rtol, atol=0)


# kills klhuber._kernels.x_kl_huber_plain__mutmut_171 (+alpha/beta), _178 (a >= 0),
# _179 (a > 1), _180 (alpha * beta): at alpha = 0 the value is |x|/beta and the
# alpha-gradient the one-sided limit -1/beta for x != 0 (0 at x = 0), as
# dD/dalpha = -(1 - (1 + u) e^{-u})/beta gives as alpha -> 0+
def test_plain_path_at_a_zero_tensor_alpha_is_l1_with_the_one_sided_alpha_gradient():
    x = torch.tensor([1.0, -2.0, 0.0, 0.5, -0.25, 3.0], dtype=torch.float64)
    beta = torch.tensor([2.0, 2.0, 2.0, 2.0, 0.5, math.inf], dtype=torch.float64)
    alpha = torch.zeros(6, dtype=torch.float64, requires_grad=True)
    val = losses.kl_huber(x, alpha, beta, impl="autograd")
    torch.testing.assert_close(val, x.abs() / beta, rtol=0, atol=0)
    g, = torch.autograd.grad(val.sum(), alpha)
    want = torch.where(x != 0, -1.0 / beta, torch.zeros_like(x))
    torch.testing.assert_close(g, want, rtol=0, atol=0)


# ------------------ the kernel's outputs, dtypes, devices and extreme scales (losses survivors,
# helper-28)
F64, F32 = torch.float64, torch.float32
INF = math.inf


def _close(got: torch.Tensor, want: torch.Tensor, rtol: float, atol: float) -> None:
    """|got - want| <= atol + rtol |want| elementwise, same shape (torch.testing.assert_close's
    rule, without its first-call import cost)."""
    assert got.shape == want.shape, (got.shape, want.shape)
    g, w = got.double(), want.double()
    bad = ~((g - w).abs() <= atol + rtol * w.abs())
    assert not bool(bad.any()), (g[bad].tolist(), w[bad].tolist())


def _mp_d(x: float, alpha: float, beta: float) -> float:
    """D_{alpha,beta}(x) (eq. 16) with mpmath (expm1: no cancellation), rounded to float."""
    with mpmath.workdps(60):
        X, A, B = mpmath.mpf(x), mpmath.mpf(alpha), mpmath.mpf(beta)
        u = abs(X) / A
        return float(A * (mpmath.expm1(-u) + u) / B)


# kills klhuber._kernels.x_kernel__mutmut_1 (dalpha computed by default)
def test_kernel_returns_only_the_requested_quantities():
    from klhuber._kernels import kernel

    x = torch.tensor([-2.0, 0.3, 5.0], dtype=F64)
    assert set(kernel(x, 0.7, 1.3, value=True, deriv=False)) == {"value"}
    assert set(kernel(x, 0.7, 1.3, value=False, deriv=True)) == {"deriv"}
    assert set(kernel(x, 0.7, 1.3, value=False, deriv=False, dalpha=True)) == {"dalpha"}


def _dalpha_ref(x: torch.Tensor, alpha: float, beta: float) -> torch.Tensor:
    """dD/dalpha = -(1 - (1 + u) e^{-u}) / beta in float64."""
    u = x.double().abs() / alpha
    return -(-torch.expm1(-u) - u * torch.exp(-u)) / beta


# kills klhuber._kernels.x_kernel__mutmut_156, _159 (the u >= 1e4 zero made in the default
# dtype: a 0-dim float32 input gives a float64 dD/dalpha) and _157, _160 (the zero made on the
# default device)
def test_kernel_dalpha_keeps_the_inputs_dtype_and_device_whatever_the_defaults():
    from klhuber._kernels import kernel

    alpha, beta = 0.7, 1.3
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        for v in (3.0, 2e4 * alpha):
            x = torch.tensor(v, dtype=F32)  # 0-dim: a 0-dim float64 zero would promote
            got = kernel(x, alpha, beta, value=False, deriv=False, dalpha=True)["dalpha"]
            assert got.dtype == F32 and got.shape == ()
            _close(got, _dalpha_ref(x, alpha, beta), rtol=5e-7, atol=0)
    finally:
        torch.set_default_dtype(old)
    x = torch.tensor([0.5, 3.0, -2e4 * alpha], dtype=F64)
    with torch.device("meta"):  # a default device other than the input's
        got = kernel(x, alpha, beta, value=False, deriv=False, dalpha=True)["dalpha"]
    assert got.device == x.device and got.dtype == F64
    _close(got, _dalpha_ref(x, alpha, beta), rtol=1e-14, atol=0)


# kills klhuber._kernels.x_kernel__mutmut_169 (u^2 - (1 + u) g(u), which cancels, used up to
# u = 3 instead of 2: 11 eps in float32)
def test_alpha_gradient_has_no_cancellation_for_u_between_2_and_3():
    # the kernel's backward (tensor alpha, no graph) against the closed form in float64,
    # within the float32 tolerance of tests/test_losses.py (5e-7); measured: 1.4 eps = 1.7e-7
    for alpha in (0.7, 1.0, 3.3, 1e-3, 1e3):
        u = torch.linspace(2.0, 3.0, 401, dtype=F64)[:-1]
        x = (u * alpha).to(F32)
        a = torch.full(x.shape, alpha, dtype=F32, requires_grad=True)
        (ga,) = torch.autograd.grad(losses.kl_huber(x, a, 1.0).sum(), a)
        ref = _dalpha_ref(x, float(a[0]), 1.0)
        rel = ((ga.double() - ref).abs() / ref.abs()).max().item()
        assert rel <= 5e-7, (alpha, rel)


# kills klhuber._kernels.x_kernel__mutmut_67 (ratio / g instead of ratio * g where a tensor
# alpha/beta overflows: inf / inf = NaN at |x| = inf)
@pytest.mark.parametrize(("dtype", "alpha", "beta"), [(F64, 1e300, 1e-300), (F32, 1e30, 1e-30)])
def test_tensor_scales_with_an_overflowing_ratio_give_inf_at_infinite_x(dtype, alpha, beta):
    x = torch.tensor([INF, -INF, 2.0], dtype=dtype)
    a, b = torch.tensor(alpha, dtype=dtype), torch.tensor(beta, dtype=dtype)
    got = losses.kl_huber(x, a, b)
    assert got[:2].tolist() == [INF, INF]
    # x = 2: quadratic, x^2/(2 alpha beta) (u = 2/alpha < 1e-29: the next term, -u/3, is
    # far below rounding)
    want = 4.0 / (2.0 * float(a) * float(b))
    _close(got[2:], torch.tensor([want], dtype=F64), rtol=1e-6, atol=0)


# kills klhuber._kernels.x_kernel__mutmut_77 (|x|/beta + (alpha/beta)(1 - e^{-u}) in the
# branch of extreme scalar scales with a finite ratio)
def test_extreme_scalar_scales_with_a_finite_ratio_match_the_closed_form():
    x = torch.tensor([1e308, 5e307, -1e308, 1.5e308], dtype=F64)
    got = losses.kl_huber(x, 1e308, 1.0)  # 1e308 > max/16: not moderate
    want = torch.tensor([_mp_d(v, 1e308, 1.0) for v in x.tolist()], dtype=F64)
    _close(got, want, rtol=1e-14, atol=0)
    # a subnormal alpha (float64): u = 10 and 3
    x = torch.tensor([1e-309, -3e-310], dtype=F64)
    got = losses.kl_huber(x, 1e-310, 1.0)
    want = torch.tensor([_mp_d(v, 1e-310, 1.0) for v in x.tolist()], dtype=F64)
    _close(got, want, rtol=0, atol=4 * 5e-324)


# kills klhuber._kernels.x_kernel__mutmut_82 (ratio / g: inf / inf = NaN at |x| = inf),
# _83 (g - 2 e^{-u}) and _86 (u - 2 + e^{-u}): both < 0 for u in [0.5, 1.2), giving -inf
@pytest.mark.parametrize(("dtype", "alpha", "beta", "xs"), [
    (F64, 1e300, 1e-300, [INF, -INF, 1e300, 6e299, -1.2e300, 5e300]),  # alpha/beta = inf
    (F32, 1e30, 1e-10, [INF, -INF, 1e31, 2e30]),  # alpha/beta = 1e40 > float32's max
])
def test_extreme_scalar_scales_with_an_overflowing_ratio_give_plus_inf(dtype, alpha, beta, xs):
    # D = (alpha/beta) g(|x|/alpha) with g > 0 for x != 0: it overflows to +inf
    got = losses.kl_huber(torch.tensor(xs, dtype=dtype), alpha, beta)
    assert got.tolist() == [INF] * len(xs)


# kills klhuber._recip_normal mutants klhuber._kernels.x_recip_normal__mutmut_4 (checks p
# instead of 1/p) and _5 (2/p): a beta whose reciprocal is subnormal in float32 must be divided
# by in float64, not multiplied by its float32-rounded reciprocal
def test_an_extreme_beta_is_divided_by_exactly():
    beta = 1.5e38  # normal in float32, 1/beta = 6.7e-39 subnormal
    x = torch.tensor([1e10, -3e10, 7.123e12, 12345.678, 2.5e20], dtype=F32)
    # alpha = 1e-30: u >= 1e34, D = |x|/beta - alpha/beta (1 - e^{-u}) = |x|/beta to 1e-40
    got = losses.kl_huber(x, 1e-30, beta)
    assert got.dtype == F32
    assert torch.equal(got, (x.double().abs() / beta).float()), got - (x.double().abs() / beta).float()


# --------------- the fused kernel's scale bounds, alpha = 0 and dtypes under a float64 default
# (losses survivors, helper-29)
@pytest.fixture
def default_float64():
    """torch's default dtype set to float64 for the test (restored afterwards)."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


# kills klhuber._kernels.x_moderate__mutmut_6 (hi = max * 16 admits alpha/beta = inf) and
# x_moderate__mutmut_11 (alpha * beta instead of alpha / beta): both send alpha/beta = 1e310
# (inf in float64) to the fused kernel, where |x|/beta - (alpha/beta)(1 - e^{-u}) is inf - inf.
def test_overflowing_ratio_gives_inf_not_nan():
    alpha, beta = 1e300, 1e-10
    x = torch.tensor([1e301, -1e299, 1e290], dtype=torch.float64)
    got = losses.kl_huber(x, alpha, beta)
    # closed form (alpha/beta) g(u), g(u) = u - 1 + e^{-u}: 1e310 * g(10) overflows, but
    # 1e310 * g(0.1) = 4.84e307 does not (the kernel forms alpha g(u) first); the last,
    # u = 1e-10, is alpha g(u) / beta with the Taylor series of g
    assert math.isinf(got[0].item()) and got[0].item() > 0
    with mpmath.workdps(40):
        u1 = mpmath.mpf(1e299) / mpmath.mpf(alpha)
        want = float(mpmath.mpf(alpha) * (u1 - 1 + mpmath.exp(-u1)) / mpmath.mpf(beta))
    assert got[1].item() == pytest.approx(want, rel=1e-15, abs=0)
    u = 1e-10
    g = u * u / 2 - u**3 / 6 + u**4 / 24
    assert got[2].item() == pytest.approx(alpha * g / beta, rel=1e-14, abs=0)


# kills klhuber._kernels.x_neg_u__mutmut_23 (the L1 limit of a tensor alpha = 0 taken at
# |x| == 1 instead of x == 0 gives D = 0 at |x| = 1)
def test_tensor_alpha_zero_is_l1_at_unit_distance():
    x = torch.tensor([-1.0, 1.0, 2.0, 0.0], dtype=torch.float64)
    got = losses.kl_huber(x, torch.tensor(0.0, dtype=torch.float64), 2.0)
    torch.testing.assert_close(got, x.abs() / 2.0, rtol=0, atol=0)


# kills klhuber._kernels.x_neg_u__mutmut_62 (alpha = 0 as a number: the -inf/0 constant built in
# the default dtype leaks float64 into a float32 result)
def test_scalar_alpha_zero_keeps_float32_under_float64_default(default_float64):
    x = torch.tensor([-1.5, 0.0, 2.0], dtype=torch.float32)
    got = losses.kl_huber(x, 0.0, 2.0)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, x.abs() / 2.0, rtol=0, atol=0)


# kills klhuber._kernels.x_neg_u__mutmut_15 (the same for a tensor alpha with zeros)
def test_tensor_alpha_zero_keeps_float32_under_float64_default(default_float64):
    x = torch.tensor([-1.5, 0.0, 2.0], dtype=torch.float32)
    alpha = torch.tensor([0.0, 1.0, 0.0], dtype=torch.float32)
    got = losses.kl_huber(x, alpha, 2.0)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, torch.tensor([0.75, 0.0, 1.0], dtype=torch.float32), rtol=0,
                               atol=0)


# kills klhuber._kernels.x_second_derivative_plain__mutmut_67 (D'' of the L1 limit alpha = 0
# built in the default dtype: the forward-mode tangent of D' becomes float64 for float32 x)
def test_jvp_of_derivative_at_alpha_zero_keeps_float32(default_float64):
    x = torch.tensor([-1.5, 0.0, 2.0], dtype=torch.float32)
    t = torch.ones(3, dtype=torch.float32)
    _, tangent = torch.func.jvp(lambda z: losses.kl_huber_derivative(z, 0.0, 2.0), (x,), (t,))
    assert tangent.dtype == torch.float32
    # D'' of the L1 limit: 0 for x != 0, +inf at x = 0
    assert tangent.tolist() == [0.0, math.inf, 0.0]


# impl="autograd" evaluates float32 in float64: the result is cast back to float32 (first
# written to kill a mutant of the float64 guard that the quadratic branch had before)
def test_autograd_impl_tensor_beta_keeps_float32():
    x = torch.tensor([-1.5, 0.25, 2.0], dtype=torch.float32)
    got = losses.kl_huber(x, 1.0, torch.tensor(2.0), impl="autograd")
    assert got.dtype == torch.float32
    xd = x.double().abs()
    ref = (xd - 1.0 + torch.exp(-xd)) / 2.0  # (alpha/beta) g(|x|/alpha), alpha = 1, beta = 2
    torch.testing.assert_close(got.double(), ref, rtol=2e-7, atol=0)


F32_INFO = torch.finfo(torch.float32)
LO32, HI32 = 16 * F32_INFO.smallest_normal, F32_INFO.max / 16  # the bounds of klhuber's "moderate" scales


def _d_closed_form(x: torch.Tensor, alpha: float, beta: float) -> list[float]:
    """D_{alpha,beta}(x) = (|x| - alpha(1 - e^{-|x|/alpha}))/beta in float64 (Python floats;
    no cancellation for the |x| >> alpha used below)."""
    return [(v - alpha * -math.expm1(-v / alpha)) / beta for v in x.double().abs().tolist()]


# The fused C++ kernel, which serves Python-number scales on the "moderate" side of the bounds
# 16 * smallest_normal and max/16 (inclusive) for scales and alpha/beta, accumulates the
# reduction in float64: the mean of float32 losses near float32's max is finite.  Each case
# sits exactly on (or just inside) one bound; a mutant that moves it sends the call to the
# general path, whose float32 sum overflows to inf.
# kills klhuber._kernels.x_moderate__mutmut_5 (lo = 17 * smallest_normal), _7 (hi = max/17),
# _13 (alpha/beta only for beta > 1), _18 (lo < alpha), _19 (alpha < hi), _20 (lo < beta),
# _28 (lo < alpha/beta), _29 (alpha/beta < hi)
@pytest.mark.parametrize(("alpha", "beta", "xs"), [
    pytest.param(16.5 * F32_INFO.smallest_normal, 1.0, [3e38, -3e38], id="alpha-16.5-smallest-normal"),
    pytest.param(LO32, 1.0, [3e38, -3e38], id="alpha-at-lo"),
    pytest.param(F32_INFO.max / 16.5, 1.0, [3e38, -3e38], id="alpha-max-over-16.5"),
    pytest.param(HI32, 1.0, [3e38, -3e38], id="alpha-at-hi"),
    pytest.param(1.0, LO32, [57.0, -57.0], id="beta-at-lo"),
    pytest.param(2 * LO32, 2.0, [3e38, -3e38, 3e38, -3e38], id="ratio-at-lo"),
    pytest.param(HI32 / 2, 0.5, [1.5e38, -1.5e38], id="ratio-at-hi"),
    pytest.param(1.0, 1.0, [3e38, -3e38], id="unit-scales"),
])
def test_fused_mean_near_float32_max_is_finite(alpha, beta, xs):
    from klhuber import _fused
    if _fused.cpu_kernel() is None:
        pytest.skip("no C++ kernel: the eager fused path sums in float32")
    x = torch.tensor(xs, dtype=torch.float32)
    got = losses.kl_huber_loss(x, torch.zeros_like(x), alpha, beta, reduction="mean")
    ref = math.fsum(_d_closed_form(x, alpha, beta)) / len(xs)
    assert got.dtype == torch.float32
    assert math.isfinite(got.item())
    assert got.item() == pytest.approx(ref, rel=2 * F32_INFO.eps, abs=0)


# kills klhuber._kernels.x_moderate__mutmut_21 (beta < hi: beta = max/16 leaves the fused kernel,
# whose float32 sum is accumulated in float64; the general path's float32 sum loses the 1023
# small terms next to the large one, about 8 eps here, against 1 eps)
def test_fused_sum_at_largest_moderate_beta_is_accumulated_in_float64():
    from klhuber import _fused
    if _fused.cpu_kernel() is None:
        pytest.skip("no C++ kernel: the eager fused path sums in float32")
    alpha, beta = 8.0, HI32  # alpha/beta = 2**-121, inside the moderate range
    x = torch.tensor([2.0**124] + [2.0**100] * 1023, dtype=torch.float32)
    got = losses.kl_huber_loss(x, torch.zeros_like(x), alpha, beta, reduction="sum")
    ref = math.fsum(_d_closed_form(x, alpha, beta))
    assert got.item() == pytest.approx(ref, rel=3 * F32_INFO.eps, abs=0)


def _mp_second_derivatives(x: float, alpha: float) -> tuple[float, float]:
    """d2D/dalpha2 and d2D/(dalpha dx) of D_{alpha,1}(x) with mpmath (50 digits):
    dD/dalpha = -(1 - (1 + u) e^{-u}), u = |x|/alpha."""
    import mpmath

    with mpmath.workdps(50):
        u = mpmath.mpf(abs(x)) / alpha
        daa = u * u * mpmath.exp(-u) / alpha
        dax = -mpmath.sign(x) * u * mpmath.exp(-u) / alpha
        return float(daa), float(dax)


# kills klhuber._kernels.x_dalpha_plain__mutmut_9 (u <= t instead of u < t: at u = t exactly the
# polynomial branch of dD/dalpha is differentiated at its end point, 6-7 eps off in float64
# against 0.4 eps for the direct branch)
@pytest.mark.parametrize("alpha", [1.0, 2.0, 0.25])
def test_second_alpha_derivatives_at_the_switch_point(alpha):
    t = 0.5  # the float64 switch point of phi (klhuber._phi)
    x0 = t * alpha  # exact: u = |x|/alpha = t
    x = torch.tensor([x0, -x0], dtype=torch.float64, requires_grad=True)
    a = torch.tensor(alpha, dtype=torch.float64, requires_grad=True)
    loss = losses.kl_huber_loss(x, torch.zeros_like(x), a, 1.0, reduction="sum")
    (ga,) = torch.autograd.grad(loss, a, create_graph=True)
    hx, ha = torch.autograd.grad(ga, (x, a))
    daa, dax = _mp_second_derivatives(x0, alpha)
    eps = torch.finfo(torch.float64).eps
    assert ha.item() == pytest.approx(2 * daa, rel=2 * eps, abs=0)
    assert hx[0].item() == pytest.approx(dax, rel=2 * eps, abs=0)
    assert hx[1].item() == pytest.approx(-dax, rel=2 * eps, abs=0)


@pytest.mark.parametrize("call", [
    lambda x, s: losses.huber(x, s),
    lambda x, s: losses.kl_huber(x, 1.0, s),
])
def test_a_1d_cpu_scale_with_a_meta_input_is_named(call):
    """Only a 0-d CPU scale may meet an input on another device (torch's rule); a 1-d one is
    named with both devices."""
    with pytest.raises(ValueError, match=re.escape("is on cpu but the input is on meta")):
        call(torch.ones(3, device="meta"), torch.ones(3))


# kills klhuber._kernels.x__kl_huber_plain__mutmut_90 and _127 (the alpha = inf guard of the
# quadratic branch tests us == 1 instead of us == 0, for tensor and for extreme number scales):
# in float64, |x|/beta overflows for x = 1e300, beta = 1e-10, and u phi(u) is 0 at alpha = inf,
# so the product must be the limit 0, not inf * 0
@pytest.mark.parametrize("alpha_tensor", [False, True], ids=["number-alpha", "tensor-alpha"])
@pytest.mark.parametrize("beta_tensor", [False, True], ids=["number-beta", "tensor-beta"])
@pytest.mark.parametrize("impl", ["default", "autograd"])
def test_infinite_alpha_is_the_zero_limit_where_x_over_beta_overflows(alpha_tensor, beta_tensor,
                                                                       impl):
    f64 = torch.float64
    x = torch.tensor([1e300, -1e300, 0.0, 1.0], dtype=f64, requires_grad=True)
    alpha = torch.tensor(math.inf, dtype=f64) if alpha_tensor else math.inf
    beta = torch.tensor(1e-10, dtype=f64) if beta_tensor else 1e-10
    value = losses.kl_huber(x, alpha, beta, impl=impl)
    (grad,) = torch.autograd.grad(value.sum(), x)
    assert value.tolist() == [0.0] * 4
    assert grad.abs().tolist() == [0.0] * 4


# kills klhuber.losses.x_laplace_kl__mutmut_95, _105, _106, x_kl_huber__mutmut_40 and
# x_kl_huber_loss__mutmut_43 (the impl passed on as None or a misspelt "default"): dispatch
# then falls through to torch.compile, which costs seconds per new shape and dtype; the
# default call of each public function never compiles on the CPU
@pytest.mark.parametrize("call", ["kl_huber", "kl_huber_loss", "laplace_kl", "kl_huber_module"])
def test_the_default_call_never_compiles_on_the_cpu(call, monkeypatch):
    from klhuber import _dispatch

    def refuse(*args, **kwargs):
        raise AssertionError("the default call reached torch.compile")

    monkeypatch.setattr(_dispatch, "run_compiled", refuse)
    x = torch.tensor([-2.0, -0.1, 0.0, 0.3, 4.0], requires_grad=True)
    alpha = torch.tensor(0.7, requires_grad=True)  # the tensor-scale path as well
    for a in (0.7, alpha):
        if call == "kl_huber":
            out = losses.kl_huber(x, a, 1.5)
        elif call == "kl_huber_loss":
            out = losses.kl_huber_loss(x, torch.zeros(5), a, 1.5)
        elif call == "laplace_kl":
            out = losses.laplace_kl(x, a, torch.zeros(5), 1.5)
        else:
            out = losses.KLHuberLoss(alpha=a, beta=1.5)(x, torch.zeros(5))
        out.sum().backward()
    assert torch.isfinite(x.grad).all()


# kills klhuber._kernels.x_effective_scalar__mutmut_2 and _12 (the rounding test never true):
# a Python-number alpha below float32's smallest subnormal (1e-46) is the documented L1 limit
# alpha = 0, not a positive alpha; at x = +-1.4e-45 the difference shows (u would be 14)
@pytest.mark.parametrize("impl", ["default", "autograd"])
def test_an_alpha_that_rounds_to_zero_in_float32_is_the_l1_limit(impl):
    x = torch.tensor([1.4e-45, -1.4e-45, 0.0, 2.0], requires_grad=True)
    beta = 1e-30
    value = losses.kl_huber(x, 1e-46, beta, impl=impl)
    (grad,) = torch.autograd.grad(value.sum(), x)
    l1 = losses.kl_huber(x.detach(), 0.0, beta, impl=impl)
    assert value.tolist() == l1.tolist()  # |x|/beta
    assert grad[[0, 1, 3]].tolist() == (torch.sign(x.detach()) / beta)[[0, 1, 3]].tolist()
    first = losses.kl_huber_derivative(x.detach(), 1e-46, beta, order=1)
    second = losses.kl_huber_derivative(x.detach(), 1e-46, beta, order=2)
    assert first.tolist() == losses.kl_huber_derivative(x.detach(), 0.0, beta, order=1).tolist()
    assert second.tolist() == [0.0, 0.0, math.inf, 0.0]


# kills the mutants of klhuber._kernels.plain_scales (its bounds, each comparison at the
# boundary, the ratio, and/or): the documented plain range of impl="autograd" is
# [1e-100, 1e100] for alpha, beta and alpha/beta, both ends included, for numbers and
# elementwise for tensors
PLAIN_RANGE_CASES = [
    (1e100, 1.0, True), (1e-100, 1.0, True), (1.0, 1e100, True), (1e-100, 1e-100, True),
    (1e100, 1e100, True), (1e50, 1e-50, True), (0.01, 1e98, True),  # alpha/beta = 1e+-100
    (1.0000000000000002e100, 1.0, False), (9.999999999999999e-101, 1.0, False),
    (1.0, 1.0000000000000002e100, False), (1e-100, 9.999999999999999e-101, False),
    (1e101, 1e10, False), (1e-101, 1e-10, False), (1e10, 1e101, False), (1e-10, 1e-101, False),
    (1e60, 1e-60, False), (1e-60, 1e60, False), (1.0, 1.0, True), (3.0, 0.5, True),
]


def test_plain_range_of_the_autograd_path():
    from klhuber._kernels import plain_scales

    for alpha, beta, want in PLAIN_RANGE_CASES:
        assert plain_scales(alpha, beta) is want, (alpha, beta)
    alphas = torch.tensor([c[0] for c in PLAIN_RANGE_CASES], dtype=torch.float64)
    betas = torch.tensor([c[1] for c in PLAIN_RANGE_CASES], dtype=torch.float64)
    got = plain_scales(alphas, betas)
    assert got.tolist() == [c[2] for c in PLAIN_RANGE_CASES]
    assert 1e50 / 1e-50 == 1e100 and 0.01 / 1e98 == 1e-100  # the boundary cases' ratios


# kills klhuber._kernels.kl_huber_plain's float32 widening dropped for tensor scales: the
# float32 ratio 3e38 / 1e-3 overflows to inf, so alpha = 3e38 would leave the plain range,
# whose float64 ratio 3e41 is inside it (both give D; the route is what differs)
def test_float32_tensor_scales_are_classified_in_float64():
    from klhuber import _kernels

    seen = []
    original = _kernels.plain_scales

    def spy(alpha, beta):
        out = original(alpha, beta)
        seen.append((alpha.dtype if isinstance(alpha, torch.Tensor) else None, out))
        return out

    x = torch.tensor([1e38, -2e37], dtype=torch.float32, requires_grad=True)
    a = torch.tensor(3e38, dtype=torch.float32)
    b = torch.tensor(1e-3, dtype=torch.float32)
    try:
        _kernels.plain_scales = spy
        losses.kl_huber(x, a, b, impl="autograd")
    finally:
        _kernels.plain_scales = original
    assert len(seen) == 1 and seen[0][0] == torch.float64 and bool(seen[0][1].all())
