r"""Barron's general and adaptive robust loss, connected to the KL view of the Huber loss.

J. T. Barron, *A General and Adaptive Robust Loss Function*, CVPR 2019,
defines for a residual :math:`x`, a shape :math:`\alpha \in [-\infty, \infty]` and a scale
:math:`c > 0`

.. math::

    \rho(x, \alpha, c) = \frac{|\alpha - 2|}{\alpha}
        \left[\left(\frac{(x/c)^2}{|\alpha - 2|} + 1\right)^{\alpha/2} - 1\right],

with the limits :math:`\alpha = 2` (L2, :math:`\tfrac12 (x/c)^2`), :math:`\alpha = 0`
(Cauchy/Lorentzian, :math:`\log(\tfrac12 (x/c)^2 + 1)`), :math:`\alpha = -\infty`
(Welsch/Leclerc, :math:`1 - e^{-\frac12 (x/c)^2}`) and :math:`\alpha = +\infty`
(:math:`e^{\frac12 (x/c)^2} - 1`); :math:`\alpha = 1` is the Charbonnier/pseudo-Huber loss
:math:`\sqrt{(x/c)^2 + 1} - 1` and :math:`\alpha = -2` Geman–McClure, :math:`2 (x/c)^2 / ((x/c)^2 + 4)`.

Numerics (our own formulation; one expression per region of :math:`\alpha`, selected with
``torch.where`` on *safe* inputs so that no unused branch can produce NaN):

* With :math:`b = |\alpha - 2|`, :math:`L = \operatorname{log1p}(z/b)` (:math:`z = (x/c)^2`;
  :math:`2\log(|x|/c) - \log b` where :math:`z/b` overflows) and :math:`u = \alpha L/2`:
  for :math:`\alpha < 1`, :math:`\rho = b\operatorname{expm1}(u)/\alpha`, in which nothing
  cancels, and :math:`\tfrac12 b L \operatorname{exprel}(u)` for :math:`|u| < 10^{-4}` (this
  includes :math:`\alpha = 0`, :math:`\operatorname{exprel}(u) = (e^u - 1)/u`). The loss stays
  below its bound :math:`(\alpha - 2)/\alpha` for :math:`\alpha < 0`.
* :math:`\alpha \ge 1`: with :math:`v = \tfrac{\alpha - 2}{2} L`:
  :math:`\rho = (z e^{v} + b \operatorname{expm1}(v))/\alpha`, which stays accurate as
  :math:`\alpha \to 2` (no :math:`1/|\alpha - 2|` blow-up; at most one bit lost to cancellation).
* :math:`\alpha \in \{2, \pm\infty\}`: the closed forms.
* The derivatives are analytic (a custom autograd Function; autograd through the forms above
  would subtract large terms): :math:`\partial\rho/\partial x = \frac{x}{c^2} f` and
  :math:`\partial\rho/\partial c = -\frac{z}{c} f` with the one factor
  :math:`f = e^{v} = (1 + z/b)^{\alpha/2 - 1}`, so :math:`\partial\rho/\partial c \le 0`
  exactly, and :math:`\partial\rho/\partial\alpha = \frac{b}{4}\int_0^L e^{\alpha s/2}
  (e^{-s} - 1 + s)\,ds`, a positive integrand (see ``_drho_dalpha``).
* float32 and half inputs are computed in float64 and rounded once (MPS, which has no float64,
  computes in float32).

Measured against 40/50-digit mpmath on 3,000 points (:math:`\alpha \in [-16, 3] \cup \{\pm\infty\}`,
:math:`c \in (0.5, 2)` and :math:`1.4\cdot10^{-5}`, :math:`x/c` normal and log-uniform in
:math:`[10^{-4}, 10^4]`): the largest relative errors of :math:`\rho`, :math:`\partial_x`,
:math:`\partial_c`, :math:`\partial_\alpha` are :math:`1.4\cdot10^{-14}` in float64 and
:math:`6\cdot10^{-8}` in float32 (``tests/test_numerics_edges.py`` asserts 1e-13 and 1e-6).
Beyond that range, for :math:`\alpha` in the thousands (:math:`u = \alpha L/2 > 20` with
:math:`L < 0.1`), :math:`\partial_\alpha` in float64 loses digits to cancellation in its scaled
closed form (relative error :math:`2.8\cdot10^{-12}` at :math:`L = 0.01`,
:math:`5\cdot10^{-10}` at :math:`L = 10^{-3}`, i.e. :math:`\alpha = 4\cdot10^4`).

:math:`\rho` is continuous in :math:`\alpha` everywhere, and smooth except at :math:`\alpha = 2`,
where :math:`\partial\rho/\partial\alpha` diverges like :math:`\tfrac{z}{4}\log\frac{1}{|\alpha-2|}`
(the loss behaves like :math:`(\alpha - 2)\log|\alpha - 2|`). At exactly :math:`\alpha = 2` (and
:math:`\pm\infty`) the returned :math:`\alpha`-gradient is 0, as in the reference implementation;
the learnable modules keep :math:`\alpha` strictly inside an interval that excludes 2 by default.

The adaptive loss is the negative log-likelihood of the density
:math:`p(x \mid \alpha, c) = e^{-\rho(x, \alpha, c)} / (c\,Z(\alpha))` (Barron 2019, eq. 16),
defined for every :math:`\alpha \ge 0` including :math:`\infty`.
:math:`Z(\alpha) = \int e^{-\rho(x, \alpha, 1)}dx` has the closed forms :data:`LOG_Z_CLOSED`
at :math:`\alpha = 0, 1, 2, \infty`; elsewhere we compute it by numerical integration (SciPy
``quad`` on the substitution :math:`x = \sqrt2 \tan\theta`, relative accuracy ~1e-13) on a grid
of :math:`\alpha \in [0, 3]` and of :math:`w = 1/\alpha \in [0, 1/3]` **at first use** (about
1 s, then cached in memory; no data file), and interpolate :math:`\log Z` with cubic Hermite
splines that are differentiable in :math:`\alpha`. :math:`\log Z` has a singular term
:math:`\tfrac14 (\alpha - 2)\log|\alpha - 2|` at :math:`\alpha = 2` (derived from the expansion of
:math:`\rho` above, and checked numerically); we subtract it before interpolating and add it back
afterwards, so the spline only sees a smooth remainder; in :math:`w` the function is smooth up to
:math:`w = 0`. Interpolation error: below 3e-7 in :math:`\log Z` on [0, 3] and 1e-6 everywhere
(tested; measured 8e-9). :func:`sample` draws from the density by rejection from a Cauchy
distribution.
"""

from __future__ import annotations

import functools
import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn

from klhuber._inspection import can_inspect
from klhuber._phi import PHI, horner
from klhuber._reduction import check_reduction, reduce

__all__ = [
    "ALPHA_RANGE_NLL",
    "AdaptiveLoss",
    "GeneralLoss",
    "LineFit",
    "PartitionTable",
    "density",
    "fit_line",
    "general_loss",
    "general_loss_derivative",
    "log_partition",
    "log_partition_quad",
    "nll",
    "outlier_line_data",
    "PolyFit",
    "fit_polynomial",
    "partition_table",
    "sample",
    "special_case_losses",
    "LOG_Z_CLOSED",
]

#: Range of the shape parameter for which the density, and so the adaptive loss, is defined:
#: every :math:`\alpha \ge 0` including :math:`\infty`.  (For :math:`\alpha < 0` the loss is
#: bounded and :math:`e^{-\rho}` is not integrable.)
ALPHA_RANGE_NLL: tuple[float, float] = (0.0, math.inf)

#: :math:`\log Z` is tabulated in :math:`\alpha` on :math:`[0, 3]` and in :math:`w = 1/\alpha`
#: on :math:`[0, 1/3]` (:math:`\alpha \ge 3`, with :math:`\alpha = \infty` at :math:`w = 0`).
_TABLE_SPLIT = 3.0

#: Closed forms of :math:`\log Z(\alpha)`: :math:`Z(0) = \pi\sqrt2` (Cauchy),
#: :math:`Z(1) = 2e\,K_1(1)` (from :math:`\int e^{-a\sqrt{1 + x^2}}dx = 2K_1(a)`),
#: :math:`Z(2) = \sqrt{2\pi}` (Gauss) and :math:`Z(\infty) = \int e^{1 - e^{x^2/2}}dx`
#: (a constant, evaluated to 30 digits with mpmath).
LOG_Z_CLOSED: dict[float, float] = {
    0.0: math.log(math.pi * math.sqrt(2.0)),
    1.0: 1.185495232349193,
    2.0: 0.5 * math.log(2 * math.pi),
    math.inf: 0.7052602544175697,
}

_HALF = (torch.float16, torch.bfloat16)


# --------------------------------------------------------------------------------------------
# input handling
# --------------------------------------------------------------------------------------------
def _float_dtype(*values: object) -> torch.dtype:
    for v in values:
        if isinstance(v, Tensor) and v.is_floating_point():
            return v.dtype
    return torch.get_default_dtype()


def _as(value: float | Tensor, dtype: torch.dtype, device: torch.device) -> Tensor:
    if isinstance(value, Tensor):
        return value.to(dtype=dtype, device=device)
    return torch.as_tensor(value, dtype=dtype, device=device)


def _prepare(x: float | Tensor, *params: float | Tensor) -> tuple[torch.dtype, list[Tensor]]:
    """Common dtype/device; half types are computed in float32 and cast back by the caller."""
    dtype = _float_dtype(x, *params)
    tensors = [v for v in (x, *params) if isinstance(v, Tensor)]
    device = tensors[0].device if tensors else torch.device("cpu")
    compute = torch.float32 if dtype in _HALF else dtype
    return dtype, [_as(v, compute, device) for v in (x, *params)]


def _check_broadcast(**tensors: float | Tensor) -> None:
    """ValueError naming the arguments and their shapes when the tensors do not broadcast."""
    shaped = {k: v.shape for k, v in tensors.items() if isinstance(v, Tensor)}
    try:
        torch.broadcast_shapes(*shaped.values())
    except RuntimeError:
        names = ", ".join(tensors)
        shapes = ", ".join(f"{k} {tuple(v)}" for k, v in shaped.items())
        raise ValueError(f"{names} must have shapes that broadcast together; got {shapes}"
                         ) from None


def _check_alpha(alpha: Tensor) -> None:
    if can_inspect(alpha) and torch.isnan(alpha).any():
        raise ValueError("alpha must be a real number in [-inf, inf]; got NaN")


def _check_scale(scale: Tensor) -> None:
    if can_inspect(scale) and not bool(((scale > 0) & torch.isfinite(scale)).all()):
        raise ValueError(f"scale must be finite and > 0 (allowed range (0, inf)); got {scale}")


def _check_alpha_nll(alpha: Tensor) -> None:
    if can_inspect(alpha) and not bool((alpha >= 0).all()):
        raise ValueError(
            f"alpha must be in [0, inf] for the density / adaptive loss (the density is not "
            f"normalisable for alpha < 0); got {alpha}")


def _exprel(u: Tensor) -> Tensor:
    """(exp(u) - 1) / u, smooth through u = 0 (series for |u| < 1e-4, error < 1e-18)."""
    small = u.abs() < 1e-4
    u_safe = torch.where(small, torch.ones_like(u), u)
    series = 1 + u * (0.5 + u * (1.0 / 6.0 + u / 24.0))
    return torch.where(small, series, torch.expm1(u_safe) / u_safe)


# --------------------------------------------------------------------------------------------
# the general loss
# --------------------------------------------------------------------------------------------
def _work_dtype(dtype: torch.dtype, device: torch.device) -> torch.dtype:
    """The dtype the general loss is computed in: float64 for float32 and half types (the
    result is then correctly rounded to about 1 ulp, and (x/c)^2 cannot overflow for any finite
    float32 x), the input's own dtype for float64 and on devices without float64 (MPS)."""
    if dtype == torch.float64 or device.type == "mps":
        return torch.float32 if dtype in _HALF else dtype
    return torch.float64


def _log1p_ratio(t: Tensor, z: Tensor, b: float | Tensor) -> Tensor:
    """L = log1p(z/b) with z = t^2, t = |x|/c; where z/b overflows, 2 log t - log b (the
    neglected log1p(b/z) is below 1e-308)."""
    y = z / b
    big = torch.isinf(y)
    if not bool(big.any()) if can_inspect(y) else False:
        return torch.log1p(y)
    b_t = b if isinstance(b, Tensor) else torch.as_tensor(b, dtype=t.dtype, device=t.device)
    t_safe = torch.where(big, t, torch.ones_like(t))
    return torch.where(big, 2 * torch.log(t_safe) - torch.log(b_t), torch.log1p(y))


def _rho_branch_low(z: Tensor, t: Tensor, a: float | Tensor) -> Tensor:
    """rho for finite alpha < 1: b expm1(u)/alpha with u = alpha L/2 (nothing cancels: expm1
    is accurate and b/alpha exact to an ulp), and 0.5 b L exprel(u) for |u| < 1e-4, which
    includes alpha = 0 (the Cauchy loss L = log1p(z/2))."""
    b = 2 - a
    ell = _log1p_ratio(t, z, b)
    u = 0.5 * a * ell
    small = u.abs() < 1e-4
    a_safe = torch.where(small, torch.ones_like(u), a * torch.ones_like(u)) \
        if isinstance(a, Tensor) else (a if a != 0 else 1.0)
    u_safe = torch.where(small, torch.zeros_like(u), u)
    series = 0.5 * b * ell * (1 + u * (0.5 + u * (1.0 / 6.0 + u / 24.0)))
    return torch.where(small, series, b * torch.expm1(u_safe) / a_safe)


def _rho_branch_high(z: Tensor, t: Tensor, a: float | Tensor) -> Tensor:
    """rho for 1 <= alpha < inf, alpha != 2: (z e^v + b expm1(v))/alpha with v = (alpha - 2)L/2
    (accurate as alpha -> 2), and b expm1(u)/alpha where z is too large for z e^v."""
    b = (a - 2).abs() if isinstance(a, Tensor) else abs(a - 2)
    ell = _log1p_ratio(t, z, b)
    v = 0.5 * (a - 2) * ell
    finite = z < 1e300
    if not isinstance(a, Tensor) and (bool(finite.all()) if can_inspect(z) else False):
        return (z * torch.exp(v) + b * torch.expm1(v)) / a
    z_safe = torch.where(finite, z, torch.zeros_like(z))
    near = (z_safe * torch.exp(v) + b * torch.expm1(v)) / a
    return torch.where(finite, near, b * torch.expm1(0.5 * a * ell) / a)


def _rho(x: Tensor, alpha: float | Tensor, scale: Tensor) -> Tensor:
    """rho(x, alpha, c) in x's dtype (no autograd needed: see _GeneralLossFn)."""
    t = (x / scale).abs()
    z = t * t
    if not isinstance(alpha, Tensor):
        if alpha == 2:
            return 0.5 * z
        if alpha == -math.inf:
            return -torch.expm1(-0.5 * z)
        if alpha == math.inf:
            return torch.expm1(0.5 * z)
        if alpha < 1:
            return _rho_branch_low(z, t, alpha)
        return _rho_branch_high(z, t, alpha)
    alpha, z = torch.broadcast_tensors(alpha, z)
    t = t.expand_as(z)
    is_two = alpha == 2
    is_neginf = alpha == -math.inf
    is_posinf = alpha == math.inf
    low = alpha < 1
    a_lo = torch.where(low & ~is_neginf, alpha, torch.full_like(alpha, 0.5))
    a_hi = torch.where(~low & ~is_two & ~is_posinf, alpha, torch.full_like(alpha, 1.5))
    loss = torch.where(low, _rho_branch_low(z, t, a_lo), _rho_branch_high(z, t, a_hi))
    half_z = 0.5 * z
    loss = torch.where(is_two, half_z, loss)
    loss = torch.where(is_neginf, -torch.expm1(-half_z), loss)
    return torch.where(is_posinf, torch.expm1(torch.where(is_posinf, half_z, 0.0)), loss)


# Gauss-Legendre nodes and weights on [0, 1] for the alpha-derivative (see _drho_dalpha)
_GL_N = 28


@functools.lru_cache(maxsize=8)
def _gauss_legendre(dtype: torch.dtype, device: torch.device) -> tuple[Tensor, Tensor]:
    nodes, weights = np.polynomial.legendre.leggauss(_GL_N)
    return (torch.tensor(0.5 * (nodes + 1), dtype=dtype, device=device),
            torch.tensor(0.5 * weights, dtype=dtype, device=device))


def _g(v: Tensor) -> Tensor:
    """g(v) = e^{-v} - 1 + v >= 0 without cancellation (the polynomial of the KL-Huber loss
    below its switch point)."""
    t, coeffs = PHI[v.dtype]
    small = v < t
    vs = torch.where(small, v, torch.zeros_like(v))
    return torch.where(small, vs * vs * horner(-vs, coeffs), torch.expm1(-v) + v)


def _exprel_d(w: Tensor) -> Tensor:
    """E'(w) = d/dw (e^w - 1)/w = ((w - 1) e^w + 1)/w^2: a series for |w| < 2 (30 terms,
    error < 1e-19), the closed form elsewhere."""
    small = w.abs() < 2
    ws = torch.where(small, w, torch.zeros_like(w))
    # E'(w) = sum_{k>=1} k w^{k-1} / (k+1)!
    coeffs = [k / math.factorial(k + 1) for k in range(1, 31)]
    series = torch.full_like(w, coeffs[-1])
    for c in reversed(coeffs[:-1]):
        series = series * ws + c
    wl = torch.where(small, torch.full_like(w, 3.0), w)
    closed = ((wl - 1) * torch.exp(wl) + 1) / (wl * wl)
    return torch.where(small, series, closed)


def _drho_dalpha(ell: Tensor, u: Tensor, v: Tensor, b: Tensor) -> Tensor:
    r""":math:`\partial\rho/\partial\alpha` for finite :math:`\alpha \ne 2`.

    Differentiating :math:`\partial\rho/\partial z = \tfrac12(1 + z/b)^{\alpha/2 - 1}` in
    :math:`\alpha` and integrating over :math:`z` gives (with :math:`s = \ln(1 + z'/b)`)

    .. math:: \frac{\partial\rho}{\partial\alpha} = \frac{b}{4}\int_0^L e^{\alpha s/2} g(s)\,ds
              = \frac{bL}{4} K, \quad K = \int_0^1 e^{u\tau} g(L\tau)\,d\tau,

    :math:`g(s) = e^{-s} - 1 + s \ge 0`: a positive integrand, where the textbook formula is
    a difference of terms that cancel to :math:`O(z^3)`.  :math:`K` is evaluated by
    Gauss-Legendre quadrature (28 nodes) for :math:`L \le 2, |u| \le 20`; otherwise in closed
    form, :math:`K = E(u - L) - E(u) + L E'(u)` with :math:`E(w) = (e^w - 1)/w`
    (for :math:`u > 1` as :math:`e^u [e^{-L}E(-v) - E(-u) + L g(u)/u^2]`, :math:`v = u - L`, so
    that nothing overflows before the end), and for :math:`u < -20` as
    :math:`L^2/(u^2(L - u))` minus its exact tail beyond :math:`\tau = 1`.
    """
    nodes, weights = _gauss_legendre(ell.dtype, ell.device)
    quad_region = (ell <= 2) & (u.abs() <= 20)
    lq = torch.where(quad_region, ell, torch.zeros_like(ell))[..., None]
    uq = torch.where(quad_region, u, torch.zeros_like(u))[..., None]
    k_quad = (torch.exp(uq * nodes) * _g(lq * nodes) * weights).sum(-1)

    # u > 1: scaled closed form
    pos = u > 1
    up = torch.where(pos, u, torch.full_like(u, 2.0))
    vp = torch.where(pos, v, torch.ones_like(v))
    lp = torch.where(pos, ell, torch.ones_like(ell))
    k_pos_scaled = torch.exp(-lp) * _exprel(-vp) - _exprel(-up) + lp * _g(up) / (up * up)

    # u < -20: Laplace-transform form plus its tail
    neg = u < -20
    un = torch.where(neg, u, torch.full_like(u, -30.0))
    ln = torch.where(neg, ell, torch.ones_like(ell))
    head = ln * ln / (un * un * (ln - un))
    tail = torch.exp(un) * (torch.exp(-ln) / (ln - un) + (1 - ln) / un + ln / (un * un))
    k_neg = head - tail

    # otherwise: plain closed form
    uc = torch.where(pos | neg, torch.zeros_like(u), u)
    lc = torch.where(pos | neg, torch.full_like(ell, 3.0), ell)
    k_plain = _exprel(uc - lc) - _exprel(uc) + lc * _exprel_d(uc)

    quarter_bl = 0.25 * b * ell
    out = torch.where(neg, quarter_bl * k_neg, quarter_bl * k_plain)
    # (bL/4) Ks e^u; beyond u = 700, e^u alone would overflow where the product does not
    huge = u > 700
    scaled = quarter_bl * k_pos_scaled * torch.exp(torch.where(pos & ~huge, u, 0.0))
    via_log = torch.exp(torch.where(huge, u, 0.0) + torch.log(quarter_bl * k_pos_scaled))
    out = torch.where(pos, torch.where(huge, via_log, scaled), out)
    return torch.where(quad_region, quarter_bl * k_quad, out)


def _partials(x: Tensor, alpha: Tensor, scale: Tensor,
              need_alpha: bool) -> tuple[Tensor, Tensor, Tensor | None]:
    r"""(:math:`\partial\rho/\partial x`, :math:`\partial\rho/\partial c`,
    :math:`\partial\rho/\partial\alpha`), broadcast to a common shape.

    :math:`\partial\rho/\partial x = \frac{x}{c^2} f` and
    :math:`\partial\rho/\partial c = -\frac{z}{c} f` with the single positive factor
    :math:`f = (1 + z/b)^{\alpha/2 - 1} = e^{(\alpha - 2)L/2}` (:math:`1, e^{\mp z/2}` at
    :math:`\alpha = 2, \pm\infty`): products, so no cancellation, and
    :math:`\partial\rho/\partial c \le 0` exactly.  The :math:`\alpha`-derivative is 0 at
    :math:`\alpha \in \{2, \pm\infty\}` (see the module docstring)."""
    r = x / scale
    t = r.abs()
    z = t * t
    alpha, z, t, r = torch.broadcast_tensors(alpha, z, t, r)
    scale = scale.expand_as(z)
    special = (alpha == 2) | torch.isinf(alpha)
    a = torch.where(special, torch.full_like(alpha, 1.5), alpha)
    b = (a - 2).abs()
    ell = _log1p_ratio(t, z, b)
    v = 0.5 * (a - 2) * ell
    f = torch.exp(v)
    half_z = torch.where(torch.isinf(alpha), 0.5 * z, torch.zeros_like(z))
    f = torch.where(alpha == 2, torch.ones_like(f), f)
    f = torch.where(alpha == -math.inf, torch.exp(-half_z), f)
    f = torch.where(alpha == math.inf, torch.exp(half_z), f)
    rf = r * f
    dx = rf / scale
    dc = -(r * rf) / scale
    da = None
    if need_alpha:
        da = torch.where(special, torch.zeros_like(z), _drho_dalpha(ell, 0.5 * a * ell, v, b))
    return dx, dc, da


def _sum_to(grad: Tensor, shape: torch.Size) -> Tensor:
    if grad.shape == shape:
        return grad
    return grad.sum_to_size(shape) if len(shape) > 0 else grad.sum()


class _GeneralLossFn(torch.autograd.Function):
    """rho(x, alpha, c) with the analytic partial derivatives of ``_partials`` (autograd
    through the loss formula would subtract large terms for alpha < 1)."""

    # forward / setup_context split and an automatic vmap rule: usable under torch.func
    generate_vmap_rule = True

    @staticmethod
    def forward(x: Tensor, alpha: float | Tensor, scale: Tensor) -> Tensor:
        return _rho(x, alpha, scale)

    @staticmethod
    def setup_context(ctx: object, inputs: tuple[Tensor, float | Tensor, Tensor],
                      output: Tensor) -> None:
        x, alpha, scale = inputs
        ctx.alpha_t = isinstance(alpha, Tensor)
        ctx.alpha = None if ctx.alpha_t else alpha
        ctx.save_for_backward(x, alpha if ctx.alpha_t else None, scale)

    @staticmethod
    def backward(ctx: object, grad: Tensor) -> tuple[Tensor | None, None | Tensor, Tensor | None]:
        x, alpha_s, scale = ctx.saved_tensors
        alpha = alpha_s if ctx.alpha_t else torch.as_tensor(ctx.alpha, dtype=x.dtype,
                                                             device=x.device)
        need_a = ctx.alpha_t and ctx.needs_input_grad[1]
        dx, dc, da = _partials(x, alpha, scale, need_a)
        gx = _sum_to(grad * dx, x.shape) if ctx.needs_input_grad[0] else None
        gc = _sum_to(grad * dc, scale.shape) if ctx.needs_input_grad[2] else None
        ga = _sum_to(grad * da, alpha.shape) if need_a else None
        return gx, ga, gc


def general_loss(x: float | Tensor, alpha: float | Tensor, scale: float | Tensor = 1.0) -> Tensor:
    r"""Barron's general robust loss :math:`\rho(x, \alpha, c)` (Barron 2019, with its limits).

    ``alpha`` may be any real number including ``±inf``; ``scale`` must be > 0. Parameters
    broadcast against ``x``. Differentiable in ``x``, ``alpha`` and ``scale``, with analytic
    derivatives (see ``_partials`` and the module docstring; the ``alpha``-gradient is 0
    at :math:`\alpha \in \{2, \pm\infty\}`). float32 and half inputs are computed in float64
    and returned in their own dtype (correctly rounded to about an ulp, finite wherever the
    true value is, e.g. at ``|x| = 1e20``).

    Raises ``ValueError`` for a NaN ``alpha``, a non-positive / non-finite ``scale``, or shapes
    that do not broadcast.
    """
    _check_broadcast(x=x, alpha=alpha, scale=scale)
    if isinstance(alpha, (int, float)):
        if math.isnan(alpha):
            raise ValueError("alpha must be a real number in [-inf, inf]; got NaN")
        dtype, (x, scale) = _prepare(x, scale)
        _check_scale(scale)
        work = _work_dtype(dtype, x.device)
        return _GeneralLossFn.apply(x.to(work), float(alpha), scale.to(work)).to(dtype)
    dtype, (x, alpha, scale) = _prepare(x, alpha, scale)
    _check_alpha(alpha)
    _check_scale(scale)
    work = _work_dtype(dtype, x.device)
    return _GeneralLossFn.apply(x.to(work), alpha.to(work), scale.to(work)).to(dtype)


def general_loss_derivative(x: float | Tensor, alpha: float | Tensor,
                            scale: float | Tensor = 1.0) -> Tensor:
    r""":math:`\partial\rho/\partial x = \frac{x}{c^2}\left(\frac{(x/c)^2}{|\alpha-2|} + 1\right)^{\alpha/2 - 1}`
    (Barron 2019), with the limits at :math:`\alpha = 2, \pm\infty`; used for the
    derivative figures and to test autograd."""
    _check_broadcast(x=x, alpha=alpha, scale=scale)
    dtype, (x, alpha, scale) = _prepare(x, alpha, scale)
    _check_alpha(alpha)
    _check_scale(scale)
    work = _work_dtype(dtype, x.device)
    dx, _, _ = _partials(x.to(work), alpha.to(work), scale.to(work), need_alpha=False)
    return dx.to(dtype)


def special_case_losses() -> dict[str, tuple[float, Callable[[Tensor], Tensor]]]:
    """The named special cases of :func:`general_loss` at ``scale = 1``, as
    ``name -> (alpha, closed form in z = x**2)`` (closed forms written to be accurate for small z).
    """
    return {
        "L2": (2.0, lambda z: 0.5 * z),
        "Charbonnier / pseudo-Huber": (1.0, lambda z: z / (torch.sqrt(z + 1) + 1)),
        "Cauchy / Lorentzian": (0.0, lambda z: torch.log1p(0.5 * z)),
        "Geman-McClure": (-2.0, lambda z: 2 * z / (z + 4)),
        "Welsch / Leclerc": (-math.inf, lambda z: -torch.expm1(-0.5 * z)),
    }


# --------------------------------------------------------------------------------------------
# partition function and the adaptive loss
# --------------------------------------------------------------------------------------------
def _rho_scalar(x: float, a: float) -> float:
    """Scalar float64 version of :func:`general_loss` at scale 1, for the quadrature
    (``inf`` where the loss overflows)."""
    z = x * x
    if a == 2:
        return 0.5 * z
    if a == math.inf:
        return math.expm1(0.5 * z) if z < 1400 else math.inf
    b = abs(a - 2)
    if z < math.inf:
        ell = math.log1p(z / b)
    else:  # |x| > 1.3e154 overflows x*x; log1p(z/b) = log z - log b to rounding there
        log_z = 2 * math.log(abs(x))
        ell = log_z - math.log(b)
    if a < 1:
        u = 0.5 * a * ell
        if abs(u) < 1e-4:
            return 0.5 * b * ell * (1 + u * (0.5 + u * (1 / 6 + u / 24)))
        return b * math.expm1(u) / a if u < 700 else math.inf
    v = 0.5 * (a - 2) * ell
    if v > 700:
        return math.inf
    if z == math.inf:  # z e^v = exp(log z + v) may be finite; b expm1(v) is negligible beside it
        t = log_z + v
        return math.exp(t) / a if t < 709 else math.inf
    return (z * math.exp(v) + b * math.expm1(v)) / a


def log_partition_quad(alpha: float) -> float:
    r""":math:`\log Z(\alpha)`, :math:`Z(\alpha) = \int_{-\infty}^{\infty} e^{-\rho(x, \alpha, 1)}dx`,
    by SciPy quadrature (float64, relative accuracy ~1e-13; closed forms at
    :math:`\alpha = 0, 2`), for every :math:`\alpha \ge 0` including ``inf``.  Reference values
    for the tables and the tests; not differentiable."""
    from scipy import integrate

    alpha = float(alpha)
    if not alpha >= 0:
        raise ValueError(f"alpha must be >= 0 (the density is not normalisable otherwise); got {alpha}")
    if alpha == 0:
        return math.log(math.pi * math.sqrt(2))
    if alpha == 2:
        return 0.5 * math.log(2 * math.pi)
    s2 = math.sqrt(2.0)

    def integrand(theta: float) -> float:  # x = sqrt(2) tan(theta), Cauchy-friendly
        c = math.cos(theta)
        if c <= 0:
            return 0.0
        x = s2 * math.tan(theta)
        r = _rho_scalar(x, alpha)
        return math.exp(-r) * s2 / (c * c) if r < 745 else 0.0

    # the integrand is negligible beyond x = 40 for alpha >= 1.5 (rho >= 39): a finite
    # upper limit keeps quad's samples where the mass is when alpha is large
    upper = math.atan(40.0 / s2) if alpha >= 1.5 else math.pi / 2
    value, _ = integrate.quad(integrand, 0.0, upper, epsabs=0.0, epsrel=1e-13, limit=500)
    return math.log(2 * value)


def _singular_part_np(alpha: np.ndarray) -> np.ndarray:
    d = alpha - 2
    safe = np.where(d == 0, 1.0, np.abs(d))
    return np.where(d == 0, 0.0, 0.25 * d * np.log(safe))


def _singular_part(alpha: Tensor) -> Tensor:
    r""":math:`\tfrac14(\alpha-2)\log|\alpha-2|`, the non-smooth part of :math:`\log Z` at 2."""
    d = alpha - 2
    zero = d == 0
    safe = torch.where(zero, torch.ones_like(d), d.abs())
    return torch.where(zero, torch.zeros_like(d), 0.25 * d * torch.log(safe))


@dataclass(frozen=True)
class PartitionTable:
    """Grid of alpha, log Z(alpha), and the smooth remainder g = log Z - singular part with
    its Hermite tangents, on [0, 3]; and (``w``, ``log_z_w``, ``tangent_w``) the same for
    alpha >= 3 in w = 1/alpha on [0, 1/3] (w = 0 is alpha = inf)."""

    alpha: np.ndarray
    log_z: np.ndarray
    remainder: np.ndarray
    tangent: np.ndarray
    w: np.ndarray = field(default_factory=lambda: np.zeros(0))
    log_z_w: np.ndarray = field(default_factory=lambda: np.zeros(0))
    tangent_w: np.ndarray = field(default_factory=lambda: np.zeros(0))


@functools.lru_cache(maxsize=1)
def partition_table() -> PartitionTable:
    r"""Compute (once per process) the tables of :math:`\log Z(\alpha)`: on :math:`[0, 3]` with
    step 0.005, refined to 0.0005 on [0, 0.1] and [1.9, 2.1] (about 1150 quadratures), and on
    :math:`w = 1/\alpha \in [0, 1/3]` with step 1/600 (200 quadratures; :math:`\log Z` is
    smooth in :math:`w` at 0, since :math:`\rho` is analytic in :math:`1/\alpha` there); about
    1 s in all."""
    grid = np.concatenate([
        np.arange(0.0, _TABLE_SPLIT + 1e-9, 0.005),
        np.arange(0.0, 0.1 + 1e-9, 0.0005),
        np.arange(1.9, 2.1 + 1e-9, 0.0005),
    ])
    grid = np.unique(np.round(grid, 10))
    log_z = np.array([log_partition_quad(a) for a in grid])
    remainder = log_z - _singular_part_np(grid)
    tangent = np.gradient(remainder, grid, edge_order=2)
    w = np.arange(0, 201) / 600.0
    log_z_w = np.array([LOG_Z_CLOSED[math.inf] if wi == 0 else log_partition_quad(1 / wi)
                        for wi in w])
    tangent_w = np.gradient(log_z_w, w, edge_order=2)
    return PartitionTable(grid, log_z, remainder, tangent, w, log_z_w, tangent_w)


@functools.lru_cache(maxsize=8)
def _table_tensors(dtype: torch.dtype, device: torch.device) -> tuple[Tensor, ...]:
    table = partition_table()
    return tuple(torch.tensor(a, dtype=dtype, device=device)
                 for a in (table.alpha, table.remainder, table.tangent, table.w, table.log_z_w,
                           table.tangent_w))


def _hermite(grid: Tensor, g: Tensor, m: Tensor, a: Tensor) -> Tensor:
    """Cubic Hermite interpolation of (grid, g, tangents m) at a, differentiable in a."""
    idx = torch.searchsorted(grid, a.detach().contiguous(), right=True) - 1
    idx = idx.clamp(0, grid.numel() - 2)
    # take(), not v[idx]: a 0-dim index tensor would be read as a Python int (no meta tensors)
    a0, a1 = grid.take(idx), grid.take(idx + 1)
    h = a1 - a0
    t = (a - a0) / h
    t2, t3 = t * t, t * t * t
    return ((2 * t3 - 3 * t2 + 1) * g.take(idx) + (t3 - 2 * t2 + t) * h * m.take(idx)
            + (-2 * t3 + 3 * t2) * g.take(idx + 1) + (t3 - t2) * h * m.take(idx + 1))


def log_partition(alpha: float | Tensor) -> Tensor:
    r""":math:`\log Z(\alpha)` for every :math:`\alpha \ge 0` including ``inf``,
    differentiable in ``alpha``: cubic Hermite interpolation of the quadrature tables (in
    :math:`\alpha` on [0, 3], in :math:`1/\alpha` above; error below 1e-6, tested), and the
    closed forms :data:`LOG_Z_CLOSED` exactly at :math:`\alpha = 0, 1, 2, \infty` (with the
    spline's gradient there).  Raises ``ValueError`` for :math:`\alpha < 0` or NaN."""
    dtype = _float_dtype(alpha)
    device = alpha.device if isinstance(alpha, Tensor) else torch.device("cpu")
    # float64 where the device has it, as the general loss: in float32 the spline's gradient
    # between knots lost up to 2.4e-3 (relative) to rounding
    compute = _work_dtype(dtype, device)
    alpha = _as(alpha, compute, device)
    _check_alpha_nll(alpha)
    grid, g, m, wgrid, wg, wm = _table_tensors(compute, device)
    low = alpha <= _TABLE_SPLIT
    a_lo = torch.where(low, alpha, torch.zeros_like(alpha))
    value_lo = _hermite(grid, g, m, a_lo) + _singular_part(a_lo)
    w = 1 / torch.where(low, torch.full_like(alpha, 2 * _TABLE_SPLIT), alpha)
    value_hi = _hermite(wgrid, wg, wm, w)
    value = torch.where(low, value_lo, value_hi)
    for a_c, lz in LOG_Z_CLOSED.items():
        exact = alpha == a_c
        value = value + torch.where(exact, (lz - value).detach(), torch.zeros_like(value))
    return value.to(dtype)


def nll(x: float | Tensor, alpha: float | Tensor, scale: float | Tensor = 1.0) -> Tensor:
    r"""The adaptive loss: :math:`-\log p(x \mid \alpha, c) = \rho(x, \alpha, c) + \log c +
    \log Z(\alpha)` (Barron 2019, eq. 16), for :math:`\alpha \in [0, \infty]`, :math:`c > 0`."""
    _check_broadcast(x=x, alpha=alpha, scale=scale)
    dtype, (x, alpha, scale) = _prepare(x, alpha, scale)
    _check_scale(scale)
    _check_alpha_nll(alpha)
    out = general_loss(x, alpha, scale) + torch.log(scale) + log_partition(alpha)
    return out.to(dtype)


def density(x: float | Tensor, alpha: float | Tensor, scale: float | Tensor = 1.0) -> Tensor:
    r"""The probability density :math:`p(x \mid \alpha, c) = e^{-\mathrm{nll}}`; integrates to 1."""
    return torch.exp(-nll(x, alpha, scale))


def sample(alpha: float | Tensor, scale: float | Tensor = 1.0, shape: tuple[int, ...] = (), *,
           generator: torch.Generator | None = None, dtype: torch.dtype | None = None,
           device: torch.device | str | None = None, max_rounds: int = 200) -> Tensor:
    r"""Draws from the density :func:`density` :math:`p(x \mid \alpha, c)`, for
    :math:`\alpha \ge 0` including ``inf``, by rejection sampling (Barron 2019, Sec. 4).

    Proposal: a Cauchy distribution of scale :math:`\sqrt2`, whose density is proportional to
    :math:`e^{-\rho(x, 0, 1)} = 1/(1 + x^2/2)`.  Since :math:`\rho` increases with
    :math:`\alpha`, :math:`e^{-\rho(x, \alpha, 1)} \le e^{-\rho(x, 0, 1)}`, and a proposal is
    accepted with probability :math:`e^{\rho(x, 0, 1) - \rho(x, \alpha, 1)} \le 1`; the
    acceptance rate is :math:`Z(\alpha)/Z(0) \ge Z(\infty)/Z(0) \approx 0.46`.  Accepted draws
    are multiplied by ``scale``.

    ``alpha`` and ``scale`` are numbers or tensors broadcastable to ``shape`` (one shape and
    scale per draw).  ``generator`` makes the draws reproducible.  The draws are computed in
    float64 and returned in ``dtype`` (default: the default dtype).  Raises ``ValueError`` for
    :math:`\alpha < 0` (not normalisable) or a non-positive scale.
    """
    dtype = dtype or torch.get_default_dtype()
    device = torch.device(device) if device is not None else (
        generator.device if generator is not None else torch.device("cpu"))
    work = torch.float64 if device.type != "mps" else torch.float32
    a = _as(alpha, work, device)
    c = _as(scale, work, device)
    if bool(torch.isnan(a).any()) or not bool((a >= 0).all()):
        raise ValueError(f"alpha must be in [0, inf] to sample (the density is not normalisable "
                         f"for alpha < 0); got {alpha}")
    _check_scale(c)
    shape = tuple(shape)
    a = a.expand(torch.broadcast_shapes(a.shape, shape)).reshape(-1)
    n = a.numel()
    if torch.broadcast_shapes(c.shape, shape) != shape and c.numel() != 1:
        raise ValueError(f"scale of shape {tuple(c.shape)} does not broadcast to {shape}")
    out = torch.empty(n, dtype=work, device=device)
    pending = torch.arange(n, device=device)
    s2 = math.sqrt(2.0)
    for _ in range(max_rounds):
        k = pending.numel()
        if k == 0:
            break
        u = torch.rand(k, generator=generator, dtype=work, device=device)
        v = torch.rand(k, generator=generator, dtype=work, device=device)
        x = s2 * torch.tan(math.pi * (u - 0.5))
        with torch.no_grad():
            log_accept = torch.log1p(0.5 * x * x) - general_loss(x, a[pending], 1.0)
        ok = torch.log(v) <= log_accept
        out[pending[ok]] = x[ok]
        pending = pending[~ok]
    else:
        if pending.numel() > 0:  # pragma: no cover - probability < 0.54**200
            raise RuntimeError("rejection sampling did not finish")
    return (out.reshape(shape) * c).to(dtype)


# --------------------------------------------------------------------------------------------
# modules
# --------------------------------------------------------------------------------------------
class GeneralLoss(nn.Module):
    r"""Barron's general loss with fixed :math:`\alpha` and :math:`c`:
    ``loss(input, target) = reduce(ρ(input - target, α, c))``."""

    def __init__(self, alpha: float = 1.0, scale: float = 1.0, reduction: str = "mean") -> None:
        super().__init__()
        if math.isnan(alpha):
            raise ValueError("alpha must be a real number in [-inf, inf]; got NaN")
        if not (scale > 0 and math.isfinite(scale)):
            raise ValueError(f"scale must be finite and > 0; got {scale}")
        check_reduction(reduction)
        self.alpha, self.scale, self.reduction = float(alpha), float(scale), reduction

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return reduce(general_loss(input - target, self.alpha, self.scale), self.reduction)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, scale={self.scale}, reduction={self.reduction!r}"


class AdaptiveLoss(nn.Module):
    r"""The adaptive robust loss: the NLL :func:`nll` with learnable shape and scale per dimension.

    :math:`\alpha = \alpha_{lo} + (\alpha_{hi} - \alpha_{lo})\,\sigma(\ell_\alpha)` (bounded via a
    sigmoid, :math:`[\alpha_{lo}, \alpha_{hi}] \subset [0, \infty)`), and
    :math:`c = c_{lo} + (c_{init} - c_{lo})\,\operatorname{softplus}(\ell_c)/\operatorname{softplus}(0)`
    (so the latent 0 gives ``scale_init``). ``alpha_lo == alpha_hi`` fixes α; ``scale_lo ==
    scale_init`` fixes c. Defaults follow the reference implementation: α ∈ (0.001, 1.999)
    starting at 1, c ≥ 1e-5 starting at 1. The residual's last dimension must be ``num_dims``
    (or 1, broadcast).

    What is learned, and why it has a finite minimiser: α and c minimise the negative
    log-likelihood :math:`\rho(x, \alpha, c) + \log c + \log Z(\alpha)` *including* its
    normalising terms. Without them the loss would decrease without bound as c grows; with
    them the expected NLL tends to :math:`+\infty` both as :math:`c \to 0` (the
    :math:`\rho` term) and as :math:`c \to \infty` (the :math:`\log c` term), so its
    minimiser in c is finite, and α lives in the closed interval
    :math:`[\alpha_{lo}, \alpha_{hi}]` (any finite :math:`\alpha_{hi}`; log Z is available for
    every α ≥ 0). The latent 0 gives exactly ``alpha_lo + (alpha_hi - alpha_lo)/2`` (rounded
    to the dtype) when ``alpha_init`` is not given.
    """

    def __init__(self, num_dims: int = 1, alpha_lo: float = 0.001, alpha_hi: float = 1.999,
                 alpha_init: float | None = None, scale_lo: float = 1e-5,
                 scale_init: float = 1.0, reduction: str = "mean",
                 dtype: torch.dtype | None = None) -> None:
        super().__init__()
        if not (0 <= alpha_lo <= alpha_hi < math.inf):
            raise ValueError(f"need 0 <= alpha_lo <= alpha_hi < inf (alpha_hi finite: the "
                             f"bounded parametrisation needs a finite interval); "
                             f"got alpha_lo={alpha_lo}, alpha_hi={alpha_hi}")
        midpoint = alpha_init is None
        if midpoint:
            alpha_init = alpha_lo + (alpha_hi - alpha_lo) / 2
        if alpha_lo < alpha_hi and not alpha_lo < alpha_init < alpha_hi:
            if midpoint:  # no float lies strictly between the ends
                raise ValueError(f"alpha_lo and alpha_hi must be equal (alpha fixed) or leave "
                                 f"room for an alpha_init strictly between them; got "
                                 f"alpha_lo={alpha_lo!r}, alpha_hi={alpha_hi!r}, adjacent floats")
            raise ValueError(f"alpha_init must be in (alpha_lo, alpha_hi) = ({alpha_lo}, "
                             f"{alpha_hi}); got {alpha_init}")
        if not scale_lo > 0:
            raise ValueError(f"scale_lo must be > 0; got {scale_lo}")
        if not scale_init >= scale_lo:
            raise ValueError(f"scale_init must be >= scale_lo = {scale_lo}; got {scale_init}")
        if not isinstance(num_dims, numbers.Integral) or isinstance(num_dims, bool):
            raise TypeError(f"num_dims must be a positive int; got {num_dims!r}")
        if num_dims < 1:
            raise ValueError(f"num_dims must be >= 1; got {num_dims}")
        check_reduction(reduction)
        dtype = dtype or torch.get_default_dtype()
        fmax = torch.finfo(dtype).max
        for name, value in (("alpha_hi", alpha_hi), ("scale_init", scale_init)):
            if not value <= fmax:
                raise ValueError(f"{name} must be at most {fmax:.3g}, the largest finite value "
                                 f"of the module's dtype {dtype}; got {value}")
        self.alpha_lo, self.alpha_hi = float(alpha_lo), float(alpha_hi)
        self.scale_lo, self.scale_init = float(scale_lo), float(scale_init)
        self.reduction = reduction
        if alpha_lo < alpha_hi:
            p = (alpha_init - alpha_lo) / (alpha_hi - alpha_lo)
            latent = 0.0 if midpoint else math.log(p / (1 - p))
            self.latent_alpha = nn.Parameter(torch.full((num_dims,), latent, dtype=dtype))
        else:
            self.register_buffer("latent_alpha", torch.zeros(num_dims, dtype=dtype))
        if scale_init > scale_lo:
            self.latent_scale = nn.Parameter(torch.zeros(num_dims, dtype=dtype))
        else:
            self.register_buffer("latent_scale", torch.zeros(num_dims, dtype=dtype))

    @property
    def alpha(self) -> Tensor:
        r"""Current shape parameter(s), shape ``(num_dims,)``.

        :math:`\alpha_{lo} + (\alpha_{hi} - \alpha_{lo})\sigma(\ell)`, written as
        ``mid + half * tanh(l / 2)`` with ``mid = lo + (hi - lo)/2`` and ``half = (hi - lo)/2``
        (the same function), so that the latent 0 gives exactly ``mid`` rounded to the dtype,
        and clamped to ``[lo, hi]`` against rounding."""
        lo, hi = self.alpha_lo, self.alpha_hi
        half = (hi - lo) / 2
        alpha = (lo + half) + half * torch.tanh(0.5 * self.latent_alpha)
        return alpha.clamp(lo, hi)

    @property
    def scale(self) -> Tensor:
        """Current scale parameter(s), shape ``(num_dims,)``."""
        sp0 = math.log(2.0)
        return self.scale_lo + (self.scale_init - self.scale_lo) * (
            nn.functional.softplus(self.latent_scale) / sp0)

    def nll(self, residual: Tensor) -> Tensor:
        """Element-wise NLL of a residual tensor (last dimension ``num_dims``)."""
        return nll(residual, self.alpha, self.scale)

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return reduce(self.nll(input - target), self.reduction)

    def extra_repr(self) -> str:
        return (f"alpha in [{self.alpha_lo}, {self.alpha_hi}], scale >= {self.scale_lo}, "
                f"reduction={self.reduction!r}")


# --------------------------------------------------------------------------------------------
# the blog's demo: linear regression with outliers
# --------------------------------------------------------------------------------------------
def outlier_line_data(n: int = 100, seed: int = 0, slope: float = 0.7, shift: float = 0.15,
                      noise: float = 0.025, outlier_fraction: float = 0.1,
                      dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor, Tensor]:
    """The data of the blog's demo (and of ``robust_loss_pytorch``'s example notebook):
    ``x ~ U(0, 1)``, ``y = slope x + shift + N(0, noise²)``; a fraction of the points (each
    with probability ``outlier_fraction``) is replaced by ``0.05 + 0.4 (1 - sign(y - 0.5))``,
    i.e. pushed to 0.05 or 0.85. Returns ``(x, y, is_outlier)``."""
    if n < 2:
        raise ValueError(f"n must be >= 2; got {n}")
    if not 0 <= outlier_fraction < 1:
        raise ValueError(f"outlier_fraction must be in [0, 1); got {outlier_fraction}")
    if not noise >= 0:
        raise ValueError(f"noise must be >= 0; got {noise}")
    rng = np.random.default_rng(seed)
    x = rng.uniform(size=n)
    y = slope * x + shift + rng.normal(scale=noise, size=n)
    flip = rng.uniform(size=n) > 1 - outlier_fraction
    y = np.where(flip, 0.05 + 0.4 * (1.0 - np.sign(y - 0.5)), y)
    return (torch.as_tensor(x, dtype=dtype), torch.as_tensor(y, dtype=dtype),
            torch.as_tensor(flip))


@dataclass
class LineFit:
    """Result of :func:`fit_line`."""

    loss: str
    slope: float
    shift: float
    alpha: float | None = None
    scale: float | None = None
    history: list[float] = field(default_factory=list)
    alpha_history: list[float] = field(default_factory=list)


def fit_line(x: Tensor, y: Tensor, loss: str, *, epochs: int = 2000, lr: float = 0.01,
             alpha: float | None = None, scale: float | None = None, seed: int = 0,
             record_every: int = 100) -> LineFit:
    r"""Fit ``y ≈ slope·x + shift`` with Adam (full batch), as in the blog's demo.

    ``loss`` is one of

    * ``"l2"``: :math:`\tfrac12 r^2`;
    * ``"huber"``: :math:`H_\alpha(r)` (:func:`klhuber.losses.huber`, ``alpha`` default 0.025);
    * ``"kl_huber"``: :math:`D_{\alpha, 1/\alpha}(r)` (:func:`klhuber.losses.kl_huber`, the lower
      bound of :math:`H_\alpha` in eq. 20; ``alpha`` default 0.025, the label-noise scale);
    * ``"general"``: :math:`\rho(r, \alpha, c)` with fixed ``alpha`` (default 2, as in the blog)
      and ``scale`` (default 0.1, as in the blog);
    * ``"adaptive"``: :class:`AdaptiveLoss` (α ∈ (0.001, 1.999) from 1, c from 1, both learnt).
    """
    torch.manual_seed(seed)
    model = nn.Linear(1, 1).to(dtype=x.dtype, device=x.device)
    params = list(model.parameters())
    adaptive: AdaptiveLoss | None = None
    if loss == "l2":
        def objective(r: Tensor) -> Tensor:
            return (0.5 * r**2).mean()
    elif loss in ("huber", "kl_huber"):
        from klhuber import losses

        a = 0.025 if alpha is None else alpha
        if loss == "huber":
            def objective(r: Tensor) -> Tensor:
                return losses.huber(r, a).mean()
        else:
            def objective(r: Tensor) -> Tensor:
                return losses.kl_huber(r, a, 1.0 / a).mean()
        alpha = a
    elif loss == "general":
        alpha = 2.0 if alpha is None else alpha
        scale = 0.1 if scale is None else scale

        def objective(r: Tensor) -> Tensor:
            return general_loss(r, alpha, scale).mean()
    elif loss == "adaptive":
        adaptive = AdaptiveLoss(num_dims=1, dtype=x.dtype).to(x.device)
        params += list(adaptive.parameters())

        def objective(r: Tensor) -> Tensor:
            return adaptive.nll(r[:, None]).mean()
    else:
        raise ValueError("loss must be one of 'l2', 'huber', 'kl_huber', 'general', 'adaptive'; "
                         f"got {loss!r}")
    optimizer = torch.optim.Adam(params, lr=lr)
    history: list[float] = []
    alpha_history: list[float] = []
    for epoch in range(epochs):
        residual = model(x[:, None])[:, 0] - y
        value = objective(residual)
        optimizer.zero_grad()
        value.backward()
        optimizer.step()
        if epoch % record_every == 0 or epoch == epochs - 1:
            history.append(value.item())
            if adaptive is not None:
                alpha_history.append(adaptive.alpha[0].item())
    if adaptive is not None:
        alpha, scale = adaptive.alpha[0].item(), adaptive.scale[0].item()
    return LineFit(loss=loss, slope=model.weight[0, 0].item(), shift=model.bias[0].item(),
                   alpha=alpha, scale=scale, history=history, alpha_history=alpha_history)


# --------------------------------------------------------------------------------------------
# Section 5 toy problem: polynomial fitting with losses of this module
# --------------------------------------------------------------------------------------------
def _legendre_features(x: Tensor, degree: int, delta: float) -> Tensor:
    """Legendre polynomials P_0..P_degree of x/delta (a well-conditioned basis), shape (N, K)."""
    u = x / delta
    feats = [torch.ones_like(u), u]
    for k in range(1, degree):
        feats.append(((2 * k + 1) * u * feats[k] - k * feats[k - 1]) / (k + 1))
    return torch.stack(feats[: degree + 1], dim=-1)


@dataclass
class PolyFit:
    """Result of :func:`fit_polynomial` for a batch of ``S`` fits: Legendre coefficients
    ``coef`` of shape ``(S, K)``, test RMSE per fit, and the learned α and c of the adaptive
    loss (``None`` otherwise)."""

    coef: Tensor
    test_rmse: Tensor
    alpha: Tensor | None = None
    scale: Tensor | None = None

    def to(self, device: str | torch.device) -> PolyFit:
        """The same result with every tensor moved to ``device``."""
        def move(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.to(device)

        return PolyFit(self.coef.to(device), self.test_rmse.to(device), move(self.alpha),
                       move(self.scale))


def fit_polynomial(x: Tensor, y: Tensor, x_test: Tensor, y_test: Tensor,
                   loss: Callable[[Tensor], Tensor] | str, *, degree: int = 7,
                   delta: float = 2.0, steps: int = 1000, lr: float = 0.01,
                   l1_init_iters: int = 30, n_fits: int | None = None) -> PolyFit:
    """Fit ``S`` polynomials of ``degree`` (the paper's K = D + 2 = 8 coefficients) at once, for
    the Section 5 toy problem (data from ``klhuber.toy.make_data``) with losses that
    ``klhuber.toy``'s solvers do not cover (Smooth L1 with Adam, the adaptive loss).

    Features are Legendre polynomials of ``x / delta``; ``x_test``/``y_test`` is a noise-free
    test set, and the test RMSE is reported per fit.

    ``y`` has shape ``(N,)`` or ``(S, N)`` (S data sets sharing ``x``); ``loss`` maps residuals
    ``(S, N)`` to element-wise losses (with ``n_fits=S`` and ``y`` of shape ``(N,)``, loss
    parameters of shape ``(S, 1)`` fit S variants of a loss to the same data), or is ``"adaptive"`` (one :class:`AdaptiveLoss` per
    fit, α ∈ (0.001, 1.999) and c learnt with the coefficients), or ``"l2"``.

    Optimisation: start from a least-absolute-deviation fit (``l1_init_iters`` IRLS steps, a
    robust start for every loss), then full-batch Adam for ``steps`` steps, the coefficients'
    learning rate decayed from ``lr`` to 0 by a cosine schedule (the adaptive loss's α and c keep
    ``lr``). Each fit's
    parameters only see its own loss, so the batch equals ``S`` separate runs.
    """
    feats = _legendre_features(x, degree, delta)
    y2 = y if y.ndim == 2 else y[None, :]
    if isinstance(loss, str) and loss == "l2":
        coef = torch.linalg.lstsq(feats, y2.T).solution.T
        pred = _legendre_features(x_test, degree, delta) @ coef.T
        return PolyFit(coef, ((pred.T - y_test) ** 2).mean(-1).sqrt())
    n_fits = y2.shape[0] if n_fits is None else n_fits
    if y2.shape[0] not in (1, n_fits):
        raise ValueError(f"y has {y2.shape[0]} rows but n_fits = {n_fits}")
    y2 = y2.expand(n_fits, -1)
    coef = torch.linalg.lstsq(feats, y2.T).solution.T  # (S, K)
    for _ in range(l1_init_iters):  # IRLS for least absolute deviations
        r = (feats @ coef.T).T - y2
        w = 1.0 / r.abs().clamp_min(1e-6)
        a = torch.einsum("sn,nk,nj->skj", w, feats, feats)
        b = torch.einsum("sn,nk,sn->sk", w, feats, y2)
        coef = torch.linalg.solve(a, b)
    coef = coef.clone().requires_grad_()
    groups = [{"params": [coef]}]
    adaptive = None
    if isinstance(loss, str):
        if loss != "adaptive":
            raise ValueError(f"loss must be a callable, 'l2' or 'adaptive'; got {loss!r}")
        adaptive = AdaptiveLoss(num_dims=n_fits, dtype=x.dtype).to(x.device)
        groups.append({"params": list(adaptive.parameters())})

        def objective(r: Tensor) -> Tensor:
            return adaptive.nll(r.T).mean(0).sum()
    else:
        def objective(r: Tensor) -> Tensor:
            return loss(r).mean(-1).sum()
    optimizer = torch.optim.Adam(groups, lr=lr)
    # cosine decay to 0 for the coefficients: a constant Adam step leaves them jittering at the
    # scale of ``lr``, which would blur the small RMSE differences between losses. The adaptive
    # loss's latent alpha and scale keep the constant rate (they may have far to travel from
    # their initial values, and their jitter barely moves the fit).
    def cosine(step: int) -> float:
        return 0.5 * (1 + math.cos(math.pi * min(step, steps) / max(steps, 1)))

    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, [cosine] + [lambda step: 1.0] * (len(groups) - 1))
    for _ in range(steps):
        r = (feats @ coef.T).T - y2
        value = objective(r)
        optimizer.zero_grad()
        value.backward()
        optimizer.step()
        schedule.step()
    coef = coef.detach()
    pred = (_legendre_features(x_test, degree, delta) @ coef.T).T
    rmse = ((pred - y_test) ** 2).mean(-1).sqrt()
    if adaptive is not None:
        return PolyFit(coef, rmse, adaptive.alpha.detach(), adaptive.scale.detach())
    return PolyFit(coef, rmse)
