"""Checks of klhuber.related (Barron's general and adaptive loss, the Harmonic and HIoU losses)
that mutation testing (``make mutants``, module ``related``) found missing: the defaults of the
functions and modules, the errors and the parameter they name, degenerate and non-square boxes,
which harmonic factor each ``detach`` choice holds constant, float32 derivatives rounded once,
and the scalar loss and partition function behind the density. Each compares with an
independent reference: a closed form, mpmath, torch's own distributions, or a documented
contract."""

from __future__ import annotations

import math
import warnings

import mpmath as mp
import numpy as np
import pytest
import torch
from scipy import special
from torch.nn import functional as F

from klhuber.related import barron as B
from klhuber.related import harmonic as H

F64 = torch.float64


def _rho_mp(x: float, a: float) -> mp.mpf:
    """Barron's rho(x, a, 1) and its limits a = 2, inf (Barron 2019, eq. 1) at 50 digits."""
    with mp.workdps(50):
        z = mp.mpf(x) ** 2
        if a == 2:
            return z / 2
        if a == math.inf:
            return mp.expm1(z / 2)
        a = mp.mpf(a)
        b = abs(a - 2)
        return b / a * mp.expm1(a / 2 * mp.log1p(z / b))


def _drho_mp(x: float, a: float, c: float) -> float:
    """d rho / dx = x/c^2 (z/|a-2| + 1)^(a/2 - 1), z = (x/c)^2 (Barron 2019), at 50 digits."""
    with mp.workdps(50):
        xm, cm, am = mp.mpf(x), mp.mpf(c), mp.mpf(a)
        z = (xm / cm) ** 2
        return float(xm / cm**2 * (z / abs(am - 2) + 1) ** (am / 2 - 1))


# --------------------------------------------------------------------------------------------
# Barron: the scalar loss and the partition function behind the density
# --------------------------------------------------------------------------------------------
def _x_for_u(a: float, u: float) -> float:
    """The x at which u = a/2 log1p(x^2/|a-2|) takes the value u (near the series switch)."""
    return math.sqrt(abs(a - 2) * math.expm1(2 * u / a))


RHO_SCALAR_POINTS = (
    [(_x_for_u(a, u), a) for a in (1e-3, 2e-4) for u in (0.99e-4, 0.9e-4, 0.5e-4)]
    + [(0.3, 2.0), (3.0, 2.0), (0.5, math.inf), (2.0, math.inf), (10.0, math.inf),
       (0.7, 0.5), (1e3, 0.3), (0.5, 1.0), (4.0, 1.5), (2.0, 2.5), (3.0, 7.0)])


@pytest.mark.parametrize(("x", "a"), RHO_SCALAR_POINTS)
def test_scalar_loss_of_the_quadrature_matches_rho_in_every_branch(x, a):
    """``_rho_scalar`` (the integrand of ``log_partition_quad``) is rho at scale 1, including
    the L2 and alpha = inf limits and the series for |alpha/2 log1p(z/b)| < 1e-4."""
    want = float(_rho_mp(x, a))
    assert B._rho_scalar(x, a) == pytest.approx(want, rel=1e-14, abs=0)


@pytest.mark.parametrize(("x", "a"), [(1e200, 0.5), (-1e200, 0.3), (1e200, 1.0), (1e160, 1.5),
                                      (1e300, 1.0)])
def test_scalar_loss_stays_finite_where_only_x_squared_overflows(x, a):
    """|x| > 1.3e154 overflows x*x, but rho grows like |x|^a and is finite for a < 2."""
    want = float(_rho_mp(x, a))
    assert math.isfinite(want)
    assert B._rho_scalar(x, a) == pytest.approx(want, rel=1e-12, abs=0)


@pytest.mark.parametrize(("x", "a"), [(40.0, math.inf), (40.0, 1e6), (1e200, 2.0),
                                      (1e200, 2.5)])
def test_scalar_loss_is_inf_where_rho_overflows(x, a):
    assert not math.isfinite(float(_rho_mp(x, a)))  # the true value exceeds float64
    assert B._rho_scalar(x, a) == math.inf


def test_log_partition_quad_at_alpha_inf_is_the_closed_constant():
    """Z(inf) = integral of exp(1 - exp(x^2/2)) (mpmath), the constant in LOG_Z_CLOSED."""
    with mp.workdps(30):
        ref = float(mp.log(2 * mp.quad(lambda x: mp.exp(-mp.expm1(x * x / 2)), [0, 1, 2, 4, 8])))
    assert B.log_partition_quad(math.inf) == pytest.approx(ref, abs=1e-12)
    assert B.LOG_Z_CLOSED[math.inf] == pytest.approx(ref, abs=1e-15)



def test_singular_part_of_log_z_is_zero_at_two_without_floating_point_warnings():
    """1/4 (alpha - 2) log|alpha - 2| (the non-smooth term of log Z), 0 at alpha = 2 (its
    limit) without a divide-by-zero or invalid-value warning."""
    alpha = np.array([0.0, 0.5, 1.0, 1.999, 2.0, 2.001, 3.0, 7.5])
    d = alpha - 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = B._singular_part_np(alpha)
    want = np.array([0.25 * di * math.log(abs(di)) if di != 0 else 0.0 for di in d])
    np.testing.assert_allclose(got, want, rtol=1e-15, atol=0)
    assert got[alpha == 2][0] == 0.0


# --------------------------------------------------------------------------------------------
# Barron: the loss and its three partial derivatives, in every region of the implementation
# --------------------------------------------------------------------------------------------
def _rho_and_partials_mp(x: float, a: float, c: float) -> list[float]:
    """rho(x, a, c) and d/dx, d/dalpha, d/dc (Barron 2019, eq. 1) at 60 digits; d/dalpha by
    mpmath's numerical differentiation, the others in closed form."""
    with mp.workdps(60):
        xm, am, cm = mp.mpf(x), mp.mpf(a), mp.mpf(c)

        def rho(aa: mp.mpf) -> mp.mpf:
            b = abs(aa - 2)
            return b / aa * mp.expm1(aa / 2 * mp.log1p((xm / cm) ** 2 / b))

        z = (xm / cm) ** 2
        f = (1 + z / abs(am - 2)) ** (am / 2 - 1)
        return [float(rho(am)), float(xm / cm**2 * f), float(mp.diff(rho, am)),
                float(-z / cm * f)]


#: (x, alpha) with scale 1.3 covering each form of rho and of d rho / d alpha: the quadrature
#: region (L <= 2), the closed forms for u = alpha L / 2 > 1, u < -20 and in between, u > 700,
#: x / c whose square is >= 1e300 or overflows float64, and alpha on both sides of 1 and 2
REGION_POINTS = [(0.7, 1.5), (10.0, 1.5), (10.0, 0.1), (10.0, -2.0), (40.0, -10.0),
                 (1e4, -10.0), (3.0, -30.0), (1.43e4, 100.0), (50.0, 3.0), (1e3, 0.5),
                 (-5.0, 0.999), (1e-3, 0.3), (-1e150, 0.5), (2e150, 2.5), (1e200, -3.0),
                 (-1e200, 1.5), (1e200, 1.0), (1e-200, 1.7)]


def test_loss_and_gradients_match_mpmath_in_every_region_one_point_at_a_time():
    for x, a in REGION_POINTS:
        want = _rho_and_partials_mp(x, a, 1.3)
        xt = torch.tensor(x, dtype=F64, requires_grad=True)
        at = torch.tensor(a, dtype=F64, requires_grad=True)
        ct = torch.tensor(1.3, dtype=F64, requires_grad=True)
        value = B.general_loss(xt, at, ct)
        got = [value.item(), *(g.item() for g in torch.autograd.grad(value, (xt, at, ct)))]
        assert got == pytest.approx(want, rel=1e-12, abs=0), (x, a)
        # the number-alpha path: the same value and x, scale gradients
        xt2 = xt.detach().requires_grad_()
        value2 = B.general_loss(xt2, a, ct)
        gx2, gc2 = torch.autograd.grad(value2, (xt2, ct))
        assert [value2.item(), gx2.item(), gc2.item()] == pytest.approx(
            [want[0], want[1], want[3]], rel=1e-12, abs=0), (x, a)


def test_loss_and_gradients_match_mpmath_with_every_region_in_one_batch():
    """One call with a per-element alpha: each element takes its own branch."""
    want = torch.tensor([_rho_and_partials_mp(x, a, 1.3) for x, a in REGION_POINTS], dtype=F64)
    x = torch.tensor([x for x, _ in REGION_POINTS], dtype=F64, requires_grad=True)
    alpha = torch.tensor([a for _, a in REGION_POINTS], dtype=F64, requires_grad=True)
    scale = torch.full_like(x, 1.3).requires_grad_()
    value = B.general_loss(x, alpha, scale)
    gx, ga, gc = torch.autograd.grad(value.sum(), (x, alpha, scale))
    got = torch.stack([value.detach(), gx, ga, gc], dim=1)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=0)
    torch.testing.assert_close(B.general_loss_derivative(x.detach(), alpha.detach(), 1.3),
                               want[:, 1], rtol=1e-12, atol=0)


def test_gradients_at_the_closed_form_alphas():
    """alpha = 2, +-inf: d/dx = x/c^2 (e^{-+z/2}), d/dc = -z/c (e^{-+z/2}); the alpha-gradient
    is 0 there (module docstring)."""
    x = torch.tensor([-3.0, -0.4, 0.0, 0.9, 2.5], dtype=F64, requires_grad=True)
    c = 1.3
    z = (x.detach() / c) ** 2
    for a0, f in ((2.0, torch.ones_like(z)), (-math.inf, torch.exp(-z / 2)),
                  (math.inf, torch.exp(z / 2))):
        alpha = torch.full_like(x, a0).requires_grad_()
        scale = torch.tensor(c, dtype=F64, requires_grad=True)
        gx, ga, gc = torch.autograd.grad(B.general_loss(x, alpha, scale).sum(),
                                         (x, alpha, scale))
        torch.testing.assert_close(gx, x.detach() / c**2 * f, rtol=1e-14, atol=0)
        torch.testing.assert_close(gc, (-z / c * f).sum(), rtol=1e-14, atol=0)
        assert (ga == 0).all()


def test_gradients_of_broadcast_parameters_pass_gradcheck():
    """alpha of shape (4,) and scale of shape (3, 1) against x of shape (3, 4): each parameter's
    gradient is summed over the dimensions it was broadcast along (finite differences)."""
    x = torch.tensor([[-2.0, -0.3, 0.2, 1.5], [0.5, 3.0, -1.0, 0.1], [4.0, -6.0, 0.8, -0.05]],
                     dtype=F64, requires_grad=True)
    alpha = torch.tensor([-3.0, 0.4, 1.2, 2.6], dtype=F64, requires_grad=True)
    scale = torch.tensor([[0.8], [1.3], [2.0]], dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(B.general_loss, (x, alpha, scale), eps=1e-6, atol=1e-7)
    for a in (-3.0, 0.4, 2.6):  # number alpha
        assert torch.autograd.gradcheck(lambda x, s, a=a: B.general_loss(x, a, s), (x, scale),
                                        eps=1e-6, atol=1e-7)


def test_gradient_only_for_the_inputs_that_require_it():
    x = torch.tensor([0.5, -2.0], dtype=F64, requires_grad=True)
    alpha = torch.tensor(0.7, dtype=F64)
    scale = torch.tensor(1.3, dtype=F64, requires_grad=True)
    value = B.general_loss(x, alpha, scale).sum()
    gx, gc = torch.autograd.grad(value, (x, scale))
    want = [_rho_and_partials_mp(v, 0.7, 1.3) for v in (0.5, -2.0)]
    torch.testing.assert_close(gx, torch.tensor([w[1] for w in want], dtype=F64), rtol=1e-12,
                               atol=0)
    torch.testing.assert_close(gc, torch.tensor(sum(w[3] for w in want), dtype=F64), rtol=1e-12,
                               atol=0)
    assert alpha.grad is None


def test_vmap_handles_x_whose_square_overflows():
    """Under torch.vmap (values not inspectable) |x|/c = 1e200 still gives the finite rho."""
    x = torch.tensor([[1e200, -3.0], [2.0, -1e200]], dtype=F64)
    for a in (0.5, -3.0, 1.5):
        got = torch.func.vmap(lambda row, a=a: B.general_loss(row, a, 1.3))(x)
        want = torch.tensor([[_rho_and_partials_mp(v, a, 1.3)[0] for v in row]
                             for row in x.tolist()], dtype=F64)
        torch.testing.assert_close(got, want, rtol=1e-12, atol=0)


@pytest.mark.parametrize(("alpha", "scale", "message"), [
    (torch.tensor([0.5, math.nan]), 1.0, r"alpha must be a real number in \[-inf, inf\]"),
    (1.0, math.inf, r"scale must be finite and > 0"),
    (1.0, math.nan, r"scale must be finite and > 0"),
    (1.0, torch.tensor([1.0, 0.0]), r"scale must be finite and > 0"),
    (torch.tensor([0.5, 1.0]), torch.tensor([2.0, -1.0]), r"scale must be finite and > 0"),
])
def test_general_loss_rejects_nan_alpha_and_scale_outside_0_inf(alpha, scale, message):
    x = torch.tensor([0.5, 1.0])
    with pytest.raises(ValueError, match=message):
        B.general_loss(x, alpha, scale)
    with pytest.raises(ValueError, match=message):
        B.general_loss_derivative(x, alpha, scale)


# --------------------------------------------------------------------------------------------
# Barron: density and the derivative function
# --------------------------------------------------------------------------------------------
def test_density_is_gaussian_and_cauchy_with_the_given_scale_and_scale_one_by_default():
    x = torch.linspace(-5, 5, 41, dtype=F64)
    s = 0.7
    gauss = torch.distributions.Normal(torch.zeros((), dtype=F64), s).log_prob(x).exp()
    torch.testing.assert_close(B.density(x, 2.0, s), gauss, rtol=1e-12, atol=0)
    cauchy = torch.distributions.Cauchy(torch.zeros((), dtype=F64), s * math.sqrt(2))
    torch.testing.assert_close(B.density(x, 0.0, s), cauchy.log_prob(x).exp(), rtol=1e-12, atol=0)
    unit = torch.distributions.Normal(torch.zeros((), dtype=F64), 1.0).log_prob(x).exp()
    torch.testing.assert_close(B.density(x, 2.0), unit, rtol=1e-12, atol=0)


def test_derivative_function_uses_scale_one_by_default():
    x = torch.linspace(-6, 6, 25, dtype=F64)
    # alpha = 1: x / sqrt(x^2 + 1); alpha = 0: 2x / (x^2 + 2)
    torch.testing.assert_close(B.general_loss_derivative(x, 1.0), x / torch.sqrt(x**2 + 1),
                               rtol=1e-14, atol=0)
    torch.testing.assert_close(B.general_loss_derivative(x, 0.0), 2 * x / (x**2 + 2),
                               rtol=1e-14, atol=0)


@pytest.mark.parametrize("bad", ["alpha", "scale"])
def test_derivative_function_rejects_shapes_that_do_not_broadcast(bad):
    x = torch.ones(3, dtype=F64)
    args = {"alpha": 1.0, "scale": 1.0}
    args[bad] = torch.ones(2, dtype=F64)
    with pytest.raises(ValueError,
                       match=rf"x, alpha, scale must have shapes that broadcast.*{bad} \(2,\)"):
        B.general_loss_derivative(x, args["alpha"], args["scale"])


def test_float32_derivative_is_computed_in_float64_and_rounded_once():
    """float32 inputs are computed in float64 and rounded once (module docstring): within an ulp
    of the exact derivative at the float32 inputs, where float32 arithmetic is many ulps off."""
    xs = torch.tensor([0.5, -3.0, 10.0, 100.0, -1e3], dtype=torch.float32)
    a32_03 = float(torch.tensor(0.3, dtype=torch.float32))
    for alpha in (-7.3, 0.3, 1.7, 3.3):
        a32 = float(torch.tensor(alpha, dtype=torch.float32))
        got = B.general_loss_derivative(xs, alpha, 0.9)
        assert got.dtype == torch.float32
        c32 = float(torch.tensor(0.9, dtype=torch.float32))
        want = torch.tensor([_drho_mp(v, a32, c32) for v in xs.tolist()], dtype=F64)
        torch.testing.assert_close(got.to(F64), want, rtol=2**-23, atol=0)
    # a 0-dim x with a vector scale, and a vector x with a 0-dim scale tensor
    scales = torch.tensor([0.3, 0.9, 7.7], dtype=torch.float32)
    for x0 in (-70.0, 3.1, 1e3):
        got = B.general_loss_derivative(torch.tensor(x0, dtype=torch.float32), 0.3, scales)
        want = torch.tensor([_drho_mp(x0, a32_03, c) for c in scales.tolist()], dtype=F64)
        torch.testing.assert_close(got.to(F64), want, rtol=2**-23, atol=0)


# --------------------------------------------------------------------------------------------
# Barron: the modules
# --------------------------------------------------------------------------------------------
def test_general_loss_module_defaults_are_charbonnier_scale_one_mean():
    inp = torch.tensor([-3.0, -0.5, 0.0, 0.25, 4.0], dtype=F64)
    tgt = torch.tensor([1.0, 0.5, -2.0, 0.25, 0.0], dtype=F64)
    r = inp - tgt
    torch.testing.assert_close(B.GeneralLoss()(inp, tgt), (torch.sqrt(r**2 + 1) - 1).mean(),
                               rtol=1e-14, atol=0)


@pytest.mark.parametrize("scale", [0.0, -1.0, math.inf, math.nan])
def test_general_loss_module_rejects_a_scale_outside_0_inf(scale):
    with pytest.raises(ValueError, match=r"scale must be finite and > 0"):
        B.GeneralLoss(scale=scale)


def test_adaptive_loss_forward_is_the_nll_of_input_minus_target():
    """Defaults: alpha = 1 (the midpoint of (0.001, 1.999)), scale 1, mean; the NLL is
    sqrt(r^2 + 1) - 1 + log Z(1), Z(1) = 2 e K_1(1)."""
    inp = torch.tensor([[-3.0], [-0.5], [0.0], [2.5]], dtype=F64)
    tgt = torch.tensor([[1.0], [0.5], [-2.0], [0.5]], dtype=F64)
    r = inp - tgt
    log_z1 = math.log(2 * math.e * special.k1(1.0))
    want = (torch.sqrt(r**2 + 1) - 1 + log_z1).mean()
    torch.testing.assert_close(B.AdaptiveLoss(dtype=F64)(inp, tgt), want, rtol=1e-12, atol=0)


def test_adaptive_loss_with_alpha_fixed_at_zero_is_the_cauchy_nll():
    """alpha_lo = 0 is allowed (the density exists for every alpha >= 0)."""
    loss = B.AdaptiveLoss(alpha_lo=0.0, alpha_hi=0.0, scale_lo=0.5, scale_init=0.5,
                          reduction="none", dtype=F64)
    r = torch.linspace(-6, 6, 13, dtype=F64)[:, None]
    cauchy = torch.distributions.Cauchy(torch.zeros((), dtype=F64), 0.5 * math.sqrt(2))
    torch.testing.assert_close(loss(r, torch.zeros_like(r)), -cauchy.log_prob(r),
                               rtol=1e-12, atol=0)
    assert B.AdaptiveLoss(alpha_lo=0.0, alpha_hi=1.0, dtype=F64).alpha.item() == 0.5


@pytest.mark.parametrize(("lo", "hi"), [(1.0, 2.0), (0.5, 4.5), (0.7, 2.5), (0.1, 1.999)])
def test_adaptive_loss_starts_exactly_at_the_midpoint_of_any_alpha_interval(lo, hi):
    """Without alpha_init, alpha starts at exactly alpha_lo + (alpha_hi - alpha_lo)/2 (class
    docstring), not at a value one rounding away from it."""
    loss = B.AdaptiveLoss(num_dims=2, alpha_lo=lo, alpha_hi=hi, dtype=F64)
    assert loss.alpha.tolist() == [lo + (hi - lo) / 2] * 2


@pytest.mark.parametrize(("lo", "hi", "init"), [(0.5, 3.0, 1.2), (0.0, 0.4, 0.3), (1.0, 7.0, 6.5)])
def test_adaptive_loss_starts_at_the_given_alpha_init(lo, hi, init):
    loss = B.AdaptiveLoss(num_dims=3, alpha_lo=lo, alpha_hi=hi, alpha_init=init, dtype=F64)
    torch.testing.assert_close(loss.alpha, torch.full((3,), init, dtype=F64), rtol=1e-14, atol=0)


def test_adaptive_loss_accepts_the_largest_finite_value_of_its_dtype():
    fmax = torch.finfo(torch.float32).max
    loss = B.AdaptiveLoss(alpha_hi=fmax, scale_init=fmax, dtype=torch.float32)
    assert loss.alpha.item() == pytest.approx(0.001 + (fmax - 0.001) / 2, rel=1e-7)
    assert loss.scale.item() == fmax


@pytest.mark.parametrize(("kwargs", "error", "message"), [
    ({"alpha_hi": math.inf}, ValueError, r"need 0 <= alpha_lo <= alpha_hi < inf"),
    ({"alpha_hi": math.inf, "alpha_init": 1.0}, ValueError,
     r"need 0 <= alpha_lo <= alpha_hi < inf"),
    ({"alpha_init": 0.001}, ValueError, r"alpha_init must be in \(alpha_lo, alpha_hi\)"),
    ({"alpha_init": 1.999}, ValueError, r"alpha_init must be in \(alpha_lo, alpha_hi\)"),
    # adjacent floats: no midpoint exists, and no alpha_init was given to blame
    ({"alpha_lo": 1.0, "alpha_hi": math.nextafter(1.0, 2.0)}, ValueError,
     r"alpha_lo and alpha_hi must be equal \(alpha fixed\) or leave room"),
    ({"num_dims": True}, TypeError, r"num_dims must be a positive int"),
    ({"num_dims": 2.5}, TypeError, r"num_dims must be a positive int"),
    ({"alpha_hi": 1e39, "dtype": torch.float32}, ValueError,
     r"alpha_hi must be at most 3.4e\+38"),
    ({"scale_init": 1e39, "dtype": torch.float32}, ValueError,
     r"scale_init must be at most 3.4e\+38"),
])
def test_adaptive_loss_errors_name_the_parameter_and_its_range(kwargs, error, message):
    with pytest.raises(error, match=message):
        B.AdaptiveLoss(**kwargs)


# --------------------------------------------------------------------------------------------
# Harmonic loss
# --------------------------------------------------------------------------------------------
def _smooth_l1(t: torch.Tensor) -> torch.Tensor:
    return torch.where(t.abs() < 1, 0.5 * t**2, t.abs() - 0.5)


# which factors each choice holds constant: (beta_r, beta_c)
DETACHED = {"none": (False, False), "both": (True, True), "beta_r": (True, False),
            "beta_c": (False, True)}


@pytest.mark.parametrize("module", [False, True], ids=["function", "module"])
@pytest.mark.parametrize("detach", list(DETACHED))
def test_each_detach_choice_holds_exactly_its_factors_constant(detach, module):
    """Gradients in the regression offset t and in the probability p (supplement eq. 5, 10):
    d/dt = (1 + p + e^{-L} log p) L'(t), without the e^{-L} log p term when beta_r is
    detached; d/dp = L - (1 + e^{-L})/p, without the L when beta_c is detached."""
    r_det, c_det = DETACHED[detach]
    p = torch.tensor([0.05, 0.3, 0.6, 0.95], dtype=F64, requires_grad=True)
    t = torch.tensor([-2.0, 0.4, -0.3, 1.5], dtype=F64, requires_grad=True)
    logits = torch.stack([torch.log(p), torch.log1p(-p)], dim=1)
    labels = torch.zeros(4, dtype=torch.long)
    reg = _smooth_l1(t)
    if module:
        value = H.HarmonicLoss(detach=detach, reduction="sum")(logits, labels, reg)
    else:
        value = H.harmonic_loss(logits, labels, reg, detach=detach, reduction="sum")
    gp, gt = torch.autograd.grad(value, (p, t))
    pd, lreg = p.detach(), reg.detach()
    want_t = (1 + pd + (0 if r_det else torch.exp(-lreg) * torch.log(pd))) * t.detach().clamp(-1, 1)
    want_p = (0 if c_det else lreg) - (1 + torch.exp(-lreg)) / pd
    torch.testing.assert_close(gt, want_t, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(gp, want_p, rtol=1e-12, atol=1e-14)


def test_harmonic_factors_default_keeps_both_factors_differentiable():
    ce = torch.tensor([0.1, 1.0, 3.0], dtype=F64, requires_grad=True)
    reg = torch.tensor([0.0, 0.5, 2.0], dtype=F64, requires_grad=True)
    w_cls, w_reg = H.harmonic_factors(ce, reg)
    torch.testing.assert_close(w_cls, 1 + torch.exp(-reg.detach()))
    torch.testing.assert_close(w_reg, 1 + torch.exp(-ce.detach()))
    (g_reg,) = torch.autograd.grad(w_cls.sum(), reg)
    (g_ce,) = torch.autograd.grad(w_reg.sum(), ce)
    torch.testing.assert_close(g_reg, -torch.exp(-reg.detach()))
    torch.testing.assert_close(g_ce, -torch.exp(-ce.detach()))


def test_harmonic_loss_module_defaults_to_the_mean():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(6, 3, generator=g, dtype=F64)
    labels = torch.randint(0, 3, (6,), generator=g)
    reg = torch.rand(6, generator=g, dtype=F64)
    ce = F.cross_entropy(logits, labels, reduction="none")
    want = ((1 + torch.exp(-reg)) * ce + (1 + torch.exp(-ce)) * reg).mean()
    torch.testing.assert_close(H.HarmonicLoss()(logits, labels, reg), want)


def test_harmonic_loss_accepts_a_zero_regression_loss():
    """reg_loss >= 0: a sample with L = 0 has the loss (1 + e^0) CE = 2 CE."""
    logits = torch.tensor([[2.0, -1.0, 0.5], [0.0, 1.0, 0.0]], dtype=F64)
    labels = torch.tensor([0, 2])
    got = H.harmonic_loss(logits, labels, torch.zeros(2, dtype=F64), reduction="none")
    torch.testing.assert_close(got, 2 * F.cross_entropy(logits, labels, reduction="none"))


@pytest.mark.parametrize("which", ["cls_logits", "labels", "reg_loss"])
def test_harmonic_loss_names_the_argument_that_is_not_a_tensor(which):
    args = {"cls_logits": torch.zeros(2, 3), "labels": torch.zeros(2, dtype=torch.long),
            "reg_loss": torch.zeros(2)}
    args[which] = args[which].tolist()
    with pytest.raises(TypeError, match=rf"^{which} must be a torch.Tensor; got list"):
        H.harmonic_loss(**args)


@pytest.mark.parametrize(("labels_shape", "reg_shape"), [((5,), (5,)), ((4,), (4, 1))])
def test_harmonic_loss_rejects_labels_or_reg_loss_not_matching_n(labels_shape, reg_shape):
    logits = torch.zeros(4, 3)
    labels = torch.zeros(labels_shape, dtype=torch.long)
    with pytest.raises(ValueError, match=r"labels and reg_loss must have shape \(N,\)"):
        H.harmonic_loss(logits, labels, torch.zeros(reg_shape))


def test_harmonic_and_hiou_check_only_shapes_on_meta_tensors():
    """Meta tensors hold no values: the losses give shapes and skip the value checks."""
    logits = torch.empty(3, 5, device="meta")
    labels = torch.empty(3, dtype=torch.long, device="meta")
    reg = torch.empty(3, device="meta")
    assert H.harmonic_loss(logits, labels, reg, reduction="none").shape == (3,)
    boxes = torch.empty(3, 4, device="meta")
    assert H.hiou_loss(boxes, boxes, 0.5, reduction="none").shape == (3,)
    assert H.box_iou_pairwise(boxes, boxes).shape == (3,)
    assert H.hiou_from_iou(torch.empty(3, device="meta"), 0.5).shape == (3,)


# --------------------------------------------------------------------------------------------
# IoU and HIoU
# --------------------------------------------------------------------------------------------
def test_iou_of_non_square_offset_and_small_boxes():
    """IoU = intersection / union worked out by hand, for rectangles away from the origin
    (x1 != y1, width != height) and for boxes of area well below 1."""
    b1 = torch.tensor([[1.0, 2.0, 5.0, 3.0],    # 4 x 1
                       [2.0, 1.0, 3.0, 7.0],    # 1 x 6
                       [0.1, 0.2, 0.3, 0.3]],   # 0.2 x 0.1
                      dtype=F64)
    b2 = torch.tensor([[3.0, 1.0, 4.0, 4.0],    # 1 x 3, overlap 1 x 1
                       [0.0, 3.0, 10.0, 4.0],   # 10 x 1, overlap 1 x 1
                       [0.2, 0.2, 0.4, 0.25]],  # 0.2 x 0.05, overlap 0.1 x 0.05
                      dtype=F64)
    want = torch.tensor([1 / (4 + 3 - 1), 1 / (6 + 10 - 1), 0.005 / (0.02 + 0.01 - 0.005)],
                        dtype=F64)
    torch.testing.assert_close(H.box_iou_pairwise(b1, b2), want, rtol=1e-12, atol=0)
    torch.testing.assert_close(H.box_iou_pairwise(b2, b1), want, rtol=1e-12, atol=0)
    torch.testing.assert_close(H.hiou_loss(b1, b2, 0.5, "none"), (1 + want) ** 0.5 * (1 - want),
                               rtol=1e-12, atol=0)


def test_degenerate_boxes_are_allowed_and_have_iou_zero():
    """x2 >= x1 and y2 >= y1: zero width or height is a valid (empty) box."""
    flat = torch.tensor([[1.0, 1.0, 3.0, 1.0], [1.0, 1.0, 1.0, 3.0], [2.0, 2.0, 2.0, 2.0]],
                        dtype=F64)
    full = torch.tensor([[0.0, 0.0, 4.0, 4.0]], dtype=F64).expand(3, 4)
    torch.testing.assert_close(H.box_iou_pairwise(flat, full), torch.zeros(3, dtype=F64))
    torch.testing.assert_close(H.box_iou_pairwise(flat, flat), torch.zeros(3, dtype=F64))
    torch.testing.assert_close(H.hiou_loss(flat, full, 0.5, "none"), torch.ones(3, dtype=F64))


@pytest.mark.parametrize("dtype", [torch.bool, torch.complex64])
def test_boxes_that_are_not_real_tensors_are_a_type_error(dtype):
    ok = torch.tensor([[0.0, 0.0, 1.0, 1.0]])
    with pytest.raises(TypeError, match=r"pred_boxes must be a real \(float or integer\) tensor"):
        H.hiou_loss(ok.to(dtype), ok)


def test_box_functions_name_the_bad_argument():
    ok = torch.tensor([[0.0, 0.0, 1.0, 1.0]])
    bad = torch.tensor([[1.0, 0.0, 0.0, 1.0]])  # x2 < x1
    with pytest.raises(TypeError, match=r"^pred_boxes must be a torch.Tensor"):
        H.hiou_loss(ok.tolist(), ok)
    with pytest.raises(ValueError, match=r"^boxes1 must satisfy x2 >= x1"):
        H.box_iou_pairwise(bad, ok)
    with pytest.raises(ValueError, match=r"^boxes2 must satisfy x2 >= x1"):
        H.box_iou_pairwise(ok, bad)
    with pytest.raises(TypeError, match=r"^iou must be a torch.Tensor"):
        H.hiou_from_iou([0.5], 0.5)


@pytest.mark.parametrize("gamma", [True, "0.5"])
def test_gamma_that_is_not_a_real_number_is_a_type_error(gamma):
    boxes = torch.tensor([[0.0, 0.0, 1.0, 1.0]])
    with pytest.raises(TypeError, match=r"gamma must be a (finite )?real number"):
        H.hiou_loss(boxes, boxes, gamma=gamma)
    with pytest.raises(TypeError, match=r"gamma must be a (finite )?real number"):
        H.hiou_from_iou(torch.tensor([0.5]), gamma)
    with pytest.raises(TypeError, match=r"gamma must be a (finite )?real number"):
        H.HIoULoss(gamma=gamma)


def test_hiou_module_defaults_to_gamma_one_half_and_the_mean():
    pred = torch.tensor([[0.0, 0.0, 2.0, 2.0], [1.0, 1.0, 3.0, 2.0]], dtype=F64)
    target = torch.tensor([[1.0, 1.0, 3.0, 3.0], [1.0, 1.0, 2.0, 2.0]], dtype=F64)
    iou = torch.tensor([1 / 7, 1 / 2], dtype=F64)
    want = ((1 + iou) ** 0.5 * (1 - iou)).mean()
    torch.testing.assert_close(H.HIoULoss()(pred, target), want, rtol=1e-12, atol=0)


@pytest.mark.parametrize("u", [0.0, 1e-12, -1e-12, 3e-5, -3e-5, 9.99e-5, -9.99e-5, 1e-4, -1e-4,
                               1e-3, -1e-3, 1.0, -1.0, 30.0, -30.0])
def test_exprel_is_expm1_over_u_on_both_sides_of_its_series_switch(u):
    with mp.workdps(40):
        want = float(mp.mpf(1) if u == 0 else mp.expm1(mp.mpf(u)) / mp.mpf(u))
    got = B._exprel(torch.tensor([u], dtype=F64)).item()
    assert got == pytest.approx(want, rel=4.5e-16, abs=0)  # 2 ulp


@pytest.mark.parametrize("fixed", ["alpha", "scale"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_adaptive_loss_fixed_parameters_are_buffers_of_the_requested_dtype(fixed, dtype):
    bounds = ({"alpha_lo": 1.0, "alpha_hi": 1.0} if fixed == "alpha"
              else {"scale_lo": 2.0, "scale_init": 2.0})
    loss = B.AdaptiveLoss(num_dims=3, dtype=dtype, **bounds)
    latent = getattr(loss, f"latent_{fixed}")
    assert latent.dtype == dtype and latent.shape == (3,)
    assert f"latent_{fixed}" in dict(loss.named_buffers())
    assert f"latent_{fixed}" not in dict(loss.named_parameters())


@pytest.mark.parametrize("w", [-2.5, -1.999, -1.5, -1.0, -0.3, 0.0, 0.4, 1.0, 1.5, 1.999, 2.5])
def test_exprel_derivative_matches_mpmath_on_both_sides_of_its_series_switch(w):
    """E'(w) = ((w - 1) e^w + 1) / w^2 (1/2 at w = 0), series for |w| < 2, closed form beyond."""
    with mp.workdps(40):
        wm = mp.mpf(w)
        want = float(mp.mpf(1) / 2 if w == 0 else ((wm - 1) * mp.exp(wm) + 1) / wm**2)
    got = B._exprel_d(torch.tensor([w], dtype=F64)).item()
    assert got == pytest.approx(want, rel=1e-14, abs=0)


#: (x, alpha) where L = log1p(z/b) > 2 (outside the quadrature) and u = alpha L / 2 is small or
#: moderate: the plain closed form of d rho / d alpha, with E'(u) near the series switch |u| = 2,
#: and L in the hundreds with |u| <= 20
PLAIN_FORM_POINTS = [(10.0, 1e-4), (10.0, -1e-4), (65.9, -0.4), (30.0, 0.3), (1e100, 0.05),
                     (-1e100, -0.05), (500.0, -0.3), (1e100, 0.0065), (-1e100, 0.008),
                     (14.35, -16.4), (-14.0, -16.9), (1e100, -0.09), (30.0, 1e-3)]


@pytest.mark.parametrize(("x", "a"), PLAIN_FORM_POINTS)
def test_alpha_gradient_matches_mpmath_in_the_plain_closed_form(x, a):
    want = _rho_and_partials_mp(x, a, 1.0)[2]
    xt = torch.tensor([x], dtype=F64)
    at = torch.tensor([a], dtype=F64, requires_grad=True)
    (ga,) = torch.autograd.grad(B.general_loss(xt, at, 1.0).sum(), (at,))
    assert ga.item() == pytest.approx(want, rel=1e-12, abs=0)


@pytest.mark.parametrize(("a", "u"), [(a, s * m) for a, s in ((1e-3, 1), (2e-4, 1), (-1e-3, -1))
                                      for m in (0.999e-4, 0.99e-4, 0.9e-4)])
@pytest.mark.parametrize("tensor_alpha", [False, True])
def test_loss_at_the_series_switch_of_the_low_branch_matches_mpmath(a, u, tensor_alpha):
    """rho = 1/2 b L exprel(u) for |u| < 1e-4: its cubic term is visible at 1e-14."""
    x = _x_for_u(a, u)
    want = float(_rho_mp(x, a))
    alpha = torch.tensor([a], dtype=F64) if tensor_alpha else a
    got = B.general_loss(torch.tensor([x, -x], dtype=F64), alpha, 1.0)
    torch.testing.assert_close(got, torch.tensor([want, want], dtype=F64), rtol=1e-14, atol=0)


def test_scalar_loss_is_finite_and_exact_at_alpha_1_up_to_1e305():
    """At alpha = 1 rho(x) = sqrt(1 + x^2) - 1 is finite for every finite x: the path for
    |x| > 1.3e154 (x*x overflows) keeps it, where the alpha < 1 formula would give inf."""
    for x in (1e305, -1e305, 1e250):
        assert B._rho_scalar(x, 1.0) == pytest.approx(float(_rho_mp(x, 1.0)), rel=1e-12, abs=0)


def test_scalar_loss_never_raises_where_it_overflows():
    """Around exp(log z + v) = max float (alpha = 1.5, |x| ~ 4e205) the scalar loss is either
    rho to 1e-12 or inf, never an OverflowError from math.exp."""
    for x in np.geomspace(3e205, 5e205, 200).tolist():
        r = B._rho_scalar(x, 1.5)
        assert r == math.inf or r == pytest.approx(float(_rho_mp(x, 1.5)), rel=1e-12, abs=0)


# --------------------------------------------------------------------------------------------
# Barron: switch points of d rho / d alpha, the series of the low branch, the log Z tables
# --------------------------------------------------------------------------------------------
def test_alpha_gradient_on_meta_tensors_builds_its_quadrature_nodes_on_the_input_device():
    """Shape-only tracing of the alpha-gradient (meta tensors; test_meta_tensors_give_shapes_...
    covers the forward): the Gauss-Legendre nodes of d rho / d alpha are made on the input's
    device, as they must be for CUDA inputs (CPU nodes would mix devices)."""
    x = torch.empty(2, 3, dtype=F64, device="meta", requires_grad=True)
    alpha = torch.empty(3, dtype=F64, device="meta", requires_grad=True)
    scale = torch.empty((), dtype=F64, device="meta", requires_grad=True)
    gx, ga, gc = torch.autograd.grad(B.general_loss(x, alpha, scale).sum(), (x, alpha, scale))
    assert [(g.device.type, tuple(g.shape)) for g in (gx, ga, gc)] == [
        ("meta", (2, 3)), ("meta", (3,)), ("meta", ())]


def _x_at_u(a: float, u: float) -> float:
    """The x (scale 1) at which u = a/2 log1p(x^2/|a - 2|), evaluated in float64 as the
    alpha-gradient evaluates it, is exactly u (searched among the floats next to the exact
    solution)."""
    x0 = _x_for_u(a, u)
    lo = hi = x0
    for _ in range(3000):
        for x in (lo, hi):
            t = torch.tensor(x, dtype=F64)
            if (0.5 * torch.tensor(a, dtype=F64) * torch.log1p(t * t / abs(a - 2))).item() == u:
                return x
        lo, hi = math.nextafter(lo, 0.0), math.nextafter(hi, math.inf)
    raise AssertionError(f"no float x gives u = {u} at alpha = {a}")


#: (u, L) with u = alpha L / 2 <= -20 and small L = log1p(x^2/|alpha - 2|), i.e. alpha in the
#: hundreds or thousands below 0: u = -20 exactly (the last point of the quadrature) and just
#: beyond it (the Laplace-transform form K_neg)
NEG_SWITCH_POINTS = [(-20.0, 0.1), (-20.0, 0.01), (-20.0, 0.001), (-20.3, 0.01), (-20.7, 0.1),
                     (-20.7, 0.01), (-21.0, 0.01), (-21.0, 0.001)]


@pytest.mark.parametrize(("u", "ell"), NEG_SWITCH_POINTS)
def test_alpha_gradient_at_the_negative_switch_u_minus_20_with_small_L_matches_mpmath(u, ell):
    """Around u = -20 with L << 1 the plain closed form E(u - L) - E(u) + L E'(u) would lose
    digits to cancellation (terms ~1/20 for K ~ L^2/(2|u|^3): 1e-10 relative at L = 0.01);
    the quadrature (|u| <= 20) and K_neg (u < -20) keep d rho / d alpha within the 1e-12 of
    the other region tests (mpmath, closed-form derivative at 50 digits via mp.diff)."""
    a = 2 * u / ell
    x = _x_at_u(a, u) if u in (-20.0, -21.0) else _x_for_u(a, u)
    want = _rho_and_partials_mp(x, a, 1.0)[2]
    at = torch.tensor([a], dtype=F64, requires_grad=True)
    (ga,) = torch.autograd.grad(B.general_loss(torch.tensor([x], dtype=F64), at, 1.0).sum(), at)
    assert ga.item() == pytest.approx(want, rel=1e-12, abs=0)


@pytest.mark.parametrize("a", [1e-3, 0.01, 0.3, 0.9, -1e-3, -0.01, -0.5, -3.0])
@pytest.mark.parametrize("m", [0.999e-4, 0.95e-4, 0.9e-4])
@pytest.mark.parametrize("tensor_alpha", [False, True])
def test_series_of_the_low_branch_is_rho_to_2_ulp_just_below_its_switch(a, m, tensor_alpha):
    """rho = 1/2 b L (1 + u/2 + u^2/6 + u^3/24) for |u| < 1e-4: the truncation error
    (u^4/120 < 1e-18) is far below rounding, so rho is within 2 ulp of mpmath (the tolerance of
    the exprel test), where its cubic term u^3/24 is 7 ulp at |u| = 1e-4."""
    x = _x_for_u(a, math.copysign(m, a))
    want = float(_rho_mp(x, a))
    alpha = torch.tensor([a], dtype=F64) if tensor_alpha else a
    got = B.general_loss(torch.tensor([x], dtype=F64), alpha, 1.0).item()
    assert got == pytest.approx(want, rel=4.5e-16, abs=0)


def _dlog_z_mp(a: float) -> float:
    """d log Z / d alpha = -E[d rho / d alpha] under e^{-rho(x, alpha, 1)} / Z (mpmath
    quadrature, 20 digits, closed-form d rho / d alpha; alpha > 0, alpha != 2)."""
    with mp.workdps(20):
        am = mp.mpf(a)
        s, b = (1 if am > 2 else -1), abs(am - 2)

        def rho_and_d(x: mp.mpf) -> tuple[mp.mpf, mp.mpf]:
            z = x * x
            y = 1 + z / b
            ya = y ** (am / 2)
            d = 2 * s / am**2 * (ya - 1) + b / am * ya * (mp.log(y) / 2 - am * z * s / (2 * b**2 * y))
            return b / am * (ya - 1), d

        def weighted(x: mp.mpf) -> mp.mpf:
            r, d = rho_and_d(x)
            return mp.exp(-r) * d

        pts = [0, 1, 2, 4, 8, mp.inf]
        return float(-mp.quad(weighted, pts) / mp.quad(lambda x: mp.exp(-rho_and_d(x)[0]), pts))


def test_log_partition_at_the_table_split_is_the_end_knot_of_the_alpha_table():
    """log_partition documents its tables as "in alpha on [0, 3], in 1/alpha above": at
    alpha = 3 exactly the spline is at the alpha table's end knot, so log Z is the tabulated
    quadrature value and its gradient the knot's tangent plus d/dalpha of the singular term
    (alpha - 2) log|alpha - 2| / 4 (= 1/4 at 3), to the spline's rounding. (The 1/alpha table
    gives a gradient 3.3e-6 away there, its own end tangent.) Both tables' end tangents agree
    with mpmath's -E[d rho / d alpha] to 1e-4 (measured 3.0e-5 and 5.3e-5)."""
    table = B.partition_table()
    assert table.alpha[-1] == B._TABLE_SPLIT == 3.0
    a = torch.tensor(3.0, dtype=F64, requires_grad=True)
    value = B.log_partition(a)
    (g,) = torch.autograd.grad(value, a)
    assert value.item() == table.log_z[-1]
    assert g.item() == pytest.approx(table.tangent[-1] + 0.25, rel=0, abs=1e-10)
    assert g.item() == pytest.approx(_dlog_z_mp(3.0), rel=1e-4, abs=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_log_partition_of_low_precision_alpha_is_the_float64_spline_rounded_once(dtype):
    """A float32 or half alpha is evaluated on the float64 spline and rounded once (like the
    general loss): log Z and its gradient between the knots equal the float64 ones at the
    same alpha to the output dtype's rounding. (In float32 arithmetic the gradient lost up to
    2.4e-3 relative at alpha = 2.82.)"""
    alphas = torch.cat([torch.linspace(0.01, 3.5, 701), torch.tensor([5.0, 40.0, 1e3])]).to(dtype)
    a = alphas.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(B.log_partition(a).sum(), a)
    a64 = alphas.to(F64).requires_grad_(True)
    v64 = B.log_partition(a64)
    (g64,) = torch.autograd.grad(v64.sum(), a64)
    assert B.log_partition(alphas).dtype == g.dtype == dtype
    assert torch.equal(B.log_partition(alphas), v64.detach().to(dtype))
    assert torch.equal(g, g64.to(dtype))


# kills klhuber.related.barron.x__hermite__mutmut_8 and _9 (searchsorted right=True -> left):
# at a knot the left interval's end is used, whose derivative carries the rounding of t = 1
# (up to 3e-7 relative) instead of the tangent itself
@pytest.mark.parametrize("table", ["alpha", "1/alpha"])
def test_log_partition_spline_has_the_tabulated_value_and_tangent_at_every_knot(table):
    """The cubic Hermite spline interpolates the table: at every knot its value is the
    tabulated value exactly and its derivative the tabulated tangent (float64; a few ulp on
    the interior knots, whose right-hand piece starts there; the last knot is the end of the
    last piece, where the rounding of t = 1 enters)."""
    grid, g, m, wgrid, wg, wm = B._table_tensors(torch.float64, torch.device("cpu"))
    knots, values, tangents = (grid, g, m) if table == "alpha" else (wgrid, wg, wm)
    at = knots.clone().requires_grad_(True)
    spline = B._hermite(knots, values, tangents, at)
    (slope,) = torch.autograd.grad(spline.sum(), at)
    assert torch.equal(spline.detach(), values)
    torch.testing.assert_close(slope[:-1], tangents[:-1], rtol=1e-15, atol=0)
    torch.testing.assert_close(slope[-1:], tangents[-1:], rtol=1e-11, atol=0)
