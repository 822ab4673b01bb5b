r"""Elementwise formulas of :math:`D_{\alpha,\beta}` (eq. 16 of Meyer, CVPR 2021), its
derivatives (Appendix B) and the bounds of eq. 20, on tensors:

* :func:`kernel` -- value, :math:`D'` and :math:`\partial D/\partial\alpha` without autograd
  (the forward and backward of the general autograd Function);
* the ``*_plain`` functions -- the same formulas as plain differentiable tensor operations
  (``impl="autograd"``, second derivatives, parameter derivatives);
* the scale arithmetic both share (:func:`div`, :func:`neg_u`, :func:`moderate`), which keeps
  extreme scales (subnormal, huge or infinite) free of NaN.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from klhuber._phi import PHI, horner, opmath
from klhuber._validation import ParamLike


def effective_scalar(p: float, dtype: torch.dtype) -> float:
    """A positive Python-number scale as the working dtype sees it: 0 below its smallest
    subnormal (the limit ``p -> 0``), else unchanged."""
    if 0 < p < torch.finfo(dtype).smallest_normal and float(torch.tensor(p, dtype=dtype)) == 0:
        return 0.0
    return p


def recip_normal(p: float, dtype: torch.dtype) -> bool:
    """Whether 1/p of a positive number is a finite normal number in ``dtype``."""
    fi = torch.finfo(dtype)
    inv = 1.0 / p
    return fi.smallest_normal <= inv <= fi.max


def moderate(alpha: float, beta: float, dtype: torch.dtype) -> bool:
    """Scales for which the chunked kernel's products (1/alpha, alpha/beta, 1/beta) are finite
    and normal in ``dtype``; the rest (subnormal, infinite, extreme ratios) take ``kernel``."""
    fi = torch.finfo(dtype)
    lo, hi = 16 * fi.smallest_normal, fi.max / 16
    ratio = alpha / beta if beta > 0 else math.inf
    return (lo <= alpha <= hi and lo <= beta <= hi and 1 / alpha <= hi and 1 / beta <= hi
            and lo <= ratio <= hi)


def div(t: Tensor, p: ParamLike) -> Tensor:
    """t / p for a positive scale: a multiplication by the reciprocal where that is a normal
    number in t's dtype (the fast path, as before), a true division for tensors, and
    :func:`div_tiny` for extreme numbers (where 1/p overflows or underflows, and 0 * inf or
    inf * 0 would give NaN)."""
    if isinstance(p, Tensor):
        return t / p
    if recip_normal(p, t.dtype):
        return t * (1.0 / p)
    return div_tiny(t, p)


def div_tiny(t: Tensor, p: float) -> Tensor:
    """t / p for a positive number that is extreme for t's dtype: divided in float64, where p
    is exact (float32 may round it to 0 or inf), and exactly 0 at t = 0, also in the gradient
    (where 0 * inf would be NaN)."""
    zero = t == 0
    t_safe = torch.where(zero, torch.ones_like(t), t)
    q = t_safe / p if t.dtype == torch.float64 else (t_safe.double() / p).to(t.dtype)
    return torch.where(zero, t * 0, q)


def neg_u(a: Tensor, alpha: ParamLike) -> Tensor:
    """-u = -|x|/alpha, with the L1 limit alpha = 0 giving -inf (and 0 at x = 0)."""
    if isinstance(alpha, Tensor):
        # alpha = 0, the L1 limit: -inf (0 at x = 0, NaN kept), taken by a where, so that no
        # a / 0 enters the graph (its gradient would make the second derivatives NaN there)
        zero = alpha == 0
        nu = a / -torch.where(zero, torch.ones_like(alpha), alpha)
        limit = torch.where(a == 0, 0.0, -math.inf).to(a.dtype)
        nu = torch.where(zero, torch.where(torch.isnan(a), a, limit), nu)
        # alpha = 0 and x = 0: the L1 limit, u -> 0 (not 0/0)
        return torch.where(a == 0, torch.zeros((), dtype=a.dtype, device=a.device), nu)
    alpha = effective_scalar(alpha, a.dtype)
    if alpha == 0:
        nu = torch.where(a == 0, 0.0, -math.inf).to(a.dtype)
        return torch.where(torch.isnan(a), a, nu)  # keeps NaN of a (and inf stays -inf)
    if not recip_normal(alpha, a.dtype):  # 1/alpha over- or underflows: 0 * inf = NaN
        return -div_tiny(a, alpha)
    return a * (-1.0 / alpha)


def kernel(x: Tensor, alpha: ParamLike, beta: ParamLike, *, value: bool, deriv: bool,
           dalpha: bool = False) -> dict[str, Tensor]:
    """Evaluate D (eq. 16), dD/dx (Appendix B) and dD/dalpha on a tensor, without autograd.

    Keys of the result: ``"value"``, ``"deriv"``, ``"dalpha"`` (the last two already divided by
    beta).  dD/dbeta = -D/beta is left to the caller.  With nu = -u, phi(u) = sum_k nu^k/(k+2)!
    has positive coefficients; q = nu phi(u) = -g(u)/u.
    """
    t, coeffs = PHI[x.dtype]
    a = x.abs()
    if not isinstance(alpha, Tensor):  # below the dtype's smallest subnormal: the L1 limit,
        alpha = effective_scalar(alpha, x.dtype)  # in the value as in u (and the derivatives)
    nu = neg_u(a, alpha)
    small = nu > -t
    e = torch.exp(nu)
    q = nu * horner(nu, coeffs)  # -g(u)/u on [0, t)
    out: dict[str, Tensor] = {}
    if value:
        ab = div(a, beta)  # |x|/beta first: no spurious underflow of intermediate products
        tensors = isinstance(alpha, Tensor) or isinstance(beta, Tensor)
        if not tensors and moderate(alpha, beta, x.dtype):
            out["value"] = torch.where(small, -(ab * q), ab - (alpha / beta) * (1.0 - e))
        else:
            # Extreme or tensor scales (subnormal, infinite, alpha/beta overflowing): the same
            # formulas, written so that no 0 * inf or inf - inf appears.  alpha = inf or
            # beta = inf give the limit 0.  Where |x|/beta or alpha/beta overflows, the
            # numerator comes first, |x| - alpha (1 - e^{-u}) or |x| u phi(u), both at most
            # |x|: inf only where D is.
            ratio = alpha / beta
            wide = div(a - alpha * (1.0 - e), beta)
            finite_ab = torch.isfinite(ab)
            if tensors:
                large = torch.where(torch.isfinite(ratio) & finite_ab, ab - ratio * (1.0 - e),
                                    wide)
            elif ratio <= torch.finfo(x.dtype).max:
                large = torch.where(finite_ab, ab - ratio * (1.0 - e), wide)
            else:
                large = wide
            val_small = torch.where(finite_ab, -(ab * q), div(-(a * q), beta))
            out["value"] = torch.where(small, val_small, large)
    if deriv:
        d = torch.where(small, -nu * (1.0 + q), 1.0 - e)  # 1 - e^{-u} = u (1 - u phi(u))
        out["deriv"] = div(torch.copysign(d, x), beta)
    if dalpha:
        # dD/dalpha = -(1 - (1 + u) e^{-u}) / beta; below u = 2 via g, without cancellation.
        u = -nu
        g = torch.where(small, nu * q, (u - 1.0) + e)
        ue = torch.where(u < 1e4, u * e, torch.zeros((), dtype=u.dtype, device=u.device))
        h = torch.where(u < 2.0, u * u - (1.0 + u) * g, (1.0 - e) - ue)
        out["dalpha"] = div(-h, beta)
    return out


def sum_to(grad: Tensor, like: ParamLike) -> Tensor | None:
    if not isinstance(like, Tensor):
        return None
    if grad.shape != like.shape:
        grad = grad.sum_to_size(like.shape) if like.dim() > 0 else grad.sum()
    return grad.to(like.dtype)


def diff(input: Tensor, target: Tensor | None) -> Tensor:
    return input if target is None else input - target


def deriv_dalpha_plain(x: Tensor, alpha: Tensor, beta: ParamLike) -> Tensor:
    """d/dalpha of D'(x) = sign(x)(1 - e^{-u})/beta: -sign(x) u e^{-u} / (alpha beta)."""
    u = -neg_u(x.abs(), alpha)
    ue = torch.where(u < 1e4, u * torch.exp(-u), torch.zeros_like(u))
    term = torch.where(alpha > 0, ue / torch.where(alpha > 0, alpha, torch.ones_like(alpha)),
                       torch.zeros_like(u))
    return div(-torch.sign(x) * term, beta)


def second_derivative_plain(x: Tensor, alpha: ParamLike, beta: ParamLike) -> Tensor:
    """d2D/dx2 = e^{-|x|/alpha}/(alpha beta) (Appendix B); the L1 limit alpha = 0 gives 0 for
    x != 0 and +inf at x = 0."""
    a = x.abs()
    if not isinstance(beta, Tensor) and math.isinf(beta):  # the limit beta -> inf: 0
        return torch.where(torch.isnan(a), a, torch.zeros_like(a))
    if isinstance(alpha, Tensor):
        pos = alpha > 0
        safe = torch.where(pos, alpha, torch.ones_like(alpha))
        val = div(torch.exp(-a / safe) / safe, beta)
        limit = torch.where(a == 0, math.inf, 0.0).to(val.dtype)
        limit = torch.where(torch.isnan(a), a, limit)  # keeps NaN of a
        out = torch.where(pos, val, limit)
    else:
        alpha = effective_scalar(alpha, x.dtype)
        if alpha == 0:
            val = torch.where(a == 0, math.inf, 0.0).to(x.dtype)
            return torch.where(torch.isnan(a), a, val)  # keeps NaN of a
        # (e^{-u}/alpha)/beta: 0 where e^{-u} underflows, never 0/0 or 0 * inf (subnormal
        # scales)
        out = div(div(torch.exp(neg_u(a, alpha)), alpha), beta)
    if isinstance(beta, Tensor):
        out = torch.where(torch.isinf(beta) & ~torch.isnan(a), torch.zeros_like(out), out)
    return out


def dalpha_plain(x: Tensor, alpha: ParamLike, beta: ParamLike) -> Tensor:
    """dD/dalpha, differentiable: -(1 - (1 + u) e^{-u})/beta."""
    u = -neg_u(x.abs(), alpha)
    t, coeffs = PHI[x.dtype]
    small = u < t
    us = torch.where(small, u, torch.zeros_like(u))
    g_small = us * us * horner(-us, coeffs)
    ul = torch.where(small, torch.full_like(u, t), torch.minimum(u, torch.full_like(u, 1e4)))
    el = torch.exp(-ul)
    h_small = us * us - (1.0 + us) * g_small
    h_large = (1.0 - el) - ul * el
    return div(-torch.where(small, h_small, h_large), beta)


def kl_huber_plain(x: Tensor, alpha: ParamLike, beta: ParamLike) -> Tensor:
    r"""Eq. 16 for ``impl="autograd"``: autograd through plain tensor operations where the
    scales are in the plain range (:func:`plain_scales`), closed-form derivatives elsewhere.

    A float32 ``x`` is evaluated in float64 and the result rounded back: no product of
    float32 numbers overflows there (:math:`|x|/\beta` and :math:`\alpha/\beta` are below
    :math:`10^{84}`), so the value is ``inf`` only where :math:`D` itself exceeds float32, and
    the gradient is finite wherever the derivative is.  In float32 a masked branch with an
    overflowing :math:`\alpha/\beta` gave NaN gradients (``0 * inf`` in the backward of the
    branch not taken, and ``inf - inf`` in that of :math:`u + e^{-u} - 1`).  A Python-number
    ``alpha`` below float32's smallest subnormal is still the L1 limit, as on the other paths."""
    if not isinstance(alpha, Tensor):
        alpha = effective_scalar(alpha, x.dtype)
    if x.dtype == torch.float32:
        wide = lambda p: p.double() if isinstance(p, Tensor) else p  # noqa: E731
        return _kl_huber_plain(x.double(), wide(alpha), wide(beta)).to(x.dtype)
    return _kl_huber_plain(x, alpha, beta)


def _kl_huber_plain(x: Tensor, alpha: ParamLike, beta: ParamLike) -> Tensor:
    """:func:`kl_huber_plain` for a float64 ``x``: autograd through plain operations where the
    scales are in the plain range (:func:`plain_scales`, elementwise for tensors),
    :class:`_ExtremeScalesFn` (the same formulas with closed-form derivatives) elsewhere,
    including alpha = 0, where autograd would multiply an overflowing (or underflowing)
    ``alpha/beta``, ``|x|/beta`` or ``1/alpha`` into a gradient that is finite."""
    t, coeffs = PHI[x.dtype]
    a = x.abs()
    if not (isinstance(alpha, Tensor) or isinstance(beta, Tensor)):
        if plain_scales(alpha, beta):
            return _plain(a, alpha, beta, t, coeffs)
        return _ExtremeScalesFn.apply(a, alpha, beta)
    # Each part is formed from |x| = 0 and scales 1 where it is not taken, so that no inf
    # meets the zero gradient of the mask (0 * inf = NaN)
    ok = plain_scales(alpha, beta)
    zero, one = torch.zeros_like(a), torch.ones_like(a)
    return torch.where(ok, _plain(torch.where(ok, a, zero), torch.where(ok, alpha, one),
                                  torch.where(ok, beta, one), t, coeffs),
                       _ExtremeScalesFn.apply(torch.where(ok, zero, a),
                                              torch.where(ok, one, alpha),
                                              torch.where(ok, one, beta)))


#: impl="autograd" takes autograd through plain operations where alpha, beta and alpha/beta
#: lie in [1/PLAIN_RANGE, PLAIN_RANGE], and :class:`_ExtremeScalesFn` elsewhere.
PLAIN_RANGE = 1e100


def plain_scales(alpha: ParamLike, beta: ParamLike) -> bool | Tensor:
    """Whether (elementwise, for tensors) the scales lie in the range of :data:`PLAIN_RANGE`:
    there no intermediate of :func:`_plain` or of its gradient overflows or underflows."""
    lo, hi = 1 / PLAIN_RANGE, PLAIN_RANGE
    ratio = alpha / beta
    if isinstance(ratio, Tensor):
        return ((alpha >= lo) & (alpha <= hi) & (beta >= lo) & (beta <= hi) & (ratio >= lo)
                & (ratio <= hi))
    return lo <= alpha <= hi and lo <= beta <= hi and lo <= ratio <= hi


def _plain(a: Tensor, alpha: ParamLike, beta: ParamLike, t: float,
           coeffs: tuple[float, ...]) -> Tensor:
    """Eq. 16 at |x| = a for scales in the plain range: (a/beta) u phi(u) below the switch
    point t, (a - alpha(1 - e^{-u}))/beta above (one division by beta, whose gradient is then
    -D/beta; u capped at 1e4, where e^{-u} = 0).  The quadratic branch is formed from a = 0
    where it is not taken, and u beyond the cap from 0: no u = inf or a/beta = inf meets the
    zero gradient of a mask (0 * inf = NaN)."""
    u = a / alpha
    small, big = u < t, u > 1e4
    zero = torch.zeros_like(a)
    a_s = torch.where(small, a, zero)
    us = a_s / alpha
    ul = torch.where(small, torch.full_like(a, t),
                     torch.where(big, torch.full_like(a, 1e4), torch.where(big, zero, a) / alpha))
    val_small = (a_s / beta) * (us * horner(-us, coeffs))
    val_large = (a + alpha * torch.expm1(-ul)) / beta
    return torch.where(small, val_small, val_large)


class _ExtremeScalesFn(torch.autograd.Function):
    r"""Eq. 16 at :math:`a = |x|` for scales outside the plain range (:func:`plain_scales`):
    tiny, huge, zero (the L1 limit) or infinite, or with an extreme :math:`\alpha/\beta`
    (``impl="autograd"``).

    The value is :math:`(a/\beta)\,u\varphi(u)` below the switch point and
    :math:`a/\beta - (\alpha/\beta)(1 - e^{-u})` above, as on the plain path; where
    :math:`a/\beta` overflows or :math:`\alpha/\beta` is not a normal number, the numerator
    (:math:`a\,u\varphi(u)` or :math:`a - \alpha(1 - e^{-u})`, at most :math:`a`) comes first:
    the value is ``inf`` only where :math:`D` is.  Autograd through these operations would
    multiply the incoming gradient by an overflowing :math:`a/\beta` or :math:`\alpha/\beta`
    before the :math:`1/\alpha` of :math:`u` (``inf``, or NaN where it meets a 0), or lose the
    :math:`e^{-u}` term where :math:`\alpha/\beta` underflows.  The derivatives are therefore
    the closed forms of Appendix B, written with differentiable operations (double backward,
    forward mode and :mod:`torch.func` work as for the other Functions):
    :math:`\partial D/\partial a = (1 - e^{-u})/\beta`,
    :math:`\partial D/\partial\alpha = -(1 - (1 + u)e^{-u})/\beta` (:func:`dalpha_plain`; at
    :math:`\alpha = 0` the one-sided limit :math:`-1/\beta`, 0 at :math:`x = 0`) and
    :math:`\partial D/\partial\beta = -D/\beta`."""

    generate_vmap_rule = True

    @staticmethod
    def forward(a: Tensor, alpha: ParamLike, beta: ParamLike) -> Tensor:
        t, coeffs = PHI[a.dtype]
        nu = neg_u(a, alpha)
        m = (0.0 - nu) * horner(nu, coeffs)  # u phi(u); +0.0 at u = 0, so D(0) = +0.0
        ab = div(a, beta)  # (a/beta) m where a/beta is finite: no underflow of a m
        finite_ab = torch.isfinite(ab)
        small = torch.where(finite_ab, ab * m, div(a * m, beta))
        # a/beta - (alpha/beta)(1 - e^{-u}) where both terms are normal numbers (subnormal a
        # and alpha, as a - alpha(1 - e^{-u}) would lose them), else the numerator first
        fi = torch.finfo(a.dtype)
        ratio = alpha / beta
        direct = ab + ratio * torch.expm1(nu)
        numerator_first = div(a + alpha * torch.expm1(nu), beta)
        if isinstance(ratio, Tensor):
            ratio_ok = (ratio >= fi.smallest_normal) & (ratio <= fi.max)
        else:
            ratio_ok = fi.smallest_normal <= ratio <= fi.max
        large = torch.where(finite_ab & ratio_ok, direct, numerator_first)
        return torch.where(nu > -t, small, large)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Tensor) -> None:
        a, alpha, beta = inputs
        ctx.alpha_t, ctx.beta_t = isinstance(alpha, Tensor), isinstance(beta, Tensor)
        ctx.alpha = None if ctx.alpha_t else alpha
        ctx.beta = None if ctx.beta_t else beta
        saved = (a, alpha if ctx.alpha_t else None, beta if ctx.beta_t else None, output)
        ctx.save_for_backward(*saved)
        ctx.save_for_forward(*saved)

    @staticmethod
    def _saved(ctx: Any) -> tuple[Tensor, ParamLike, ParamLike, Tensor]:
        a, alpha_s, beta_s, out = ctx.saved_tensors
        return (a, alpha_s if ctx.alpha_t else ctx.alpha, beta_s if ctx.beta_t else ctx.beta,
                out)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        a, alpha, beta, out = _ExtremeScalesFn._saved(ctx)
        ga = gal = gbe = None
        if ctx.needs_input_grad[0]:
            ga = div(grad * -torch.expm1(neg_u(a, alpha)), beta)
        if ctx.needs_input_grad[1]:  # False for a number
            gal = sum_to(times_or_zero(grad, dalpha_plain(a, alpha, beta)), alpha)
        if ctx.needs_input_grad[2]:
            gbe = sum_to(times_or_zero(grad, -out / beta), beta)
        return ga, gal, gbe

    @staticmethod
    def jvp(ctx: Any, t_a: Tensor | None, t_alpha: Tensor | None,
            t_beta: Tensor | None) -> Tensor:
        a, alpha, beta, out = _ExtremeScalesFn._saved(ctx)
        tangent = torch.zeros_like(out)
        if t_a is not None:
            tangent = tangent + div(-torch.expm1(neg_u(a, alpha)) * t_a, beta)
        if t_alpha is not None:  # None for a number
            tangent = tangent + times_or_zero(t_alpha, dalpha_plain(a, alpha, beta))
        if t_beta is not None:
            tangent = tangent + times_or_zero(t_beta, -out / beta)
        return tangent


def times_or_zero(factor: Tensor, partial: Tensor) -> Tensor:
    """factor * partial, 0 where factor is 0: a zero gradient or tangent (torch.func passes
    zeros, not None) times a partial derivative that overflowed to inf carries no change
    (plain multiplication would give NaN).  Used by every custom Function's jvp."""
    product = factor * partial
    return torch.where(factor == 0, torch.zeros_like(product), product)


def huber_bounds_direct(x: Tensor, alpha: ParamLike) -> tuple[Tensor, Tensor]:
    r"""Eq. 20 written in :math:`u = |x|/\alpha` so that no :math:`\alpha^2` or :math:`1/\alpha`
    appears: :math:`D_{\alpha,1/\alpha} = x^2\varphi(u)` and
    :math:`D_{\alpha/2,1/\alpha} = 2x^2\varphi(2u)` below the switch point ``t`` of
    :math:`\varphi`, :math:`\alpha(|x| - \alpha(1 - e^{-u}))` and
    :math:`\alpha(|x| - \tfrac{\alpha}{2}(1 - e^{-2u}))` above.  Used for tensor ``alpha``
    and for extreme scalars (``alpha**2`` or ``1/alpha`` not finite and normal in the dtype),
    where the limits are finite: :math:`x^2/2` and :math:`x^2` as :math:`\alpha \to \infty`,
    :math:`\alpha|x|`-like as :math:`\alpha \to 0`.  Differentiable with autograd."""
    out_dtype = x.dtype
    work = opmath(out_dtype)
    xw = x.to(work)
    t, coeffs = PHI[work]
    a = xw.abs()
    if isinstance(alpha, Tensor):
        al = alpha.to(device=x.device, dtype=work)
    else:
        al = torch.tensor(alpha, dtype=work, device=x.device)
    pos = al > 0
    al_safe = torch.where(pos, al, torch.ones_like(al))
    results = []
    infinite = torch.isinf(al_safe)  # alpha = inf: u = 0 (not inf/inf at |x| = inf)
    for k, half in ((1.0, 1.0), (2.0, 0.5)):
        u = torch.where(infinite, torch.zeros_like(a), k * (a / al_safe))
        small = u < t
        us = torch.where(small, u, torch.zeros_like(u))
        ul = torch.where(small, torch.full_like(u, t), u)
        val_small = (k * a) * (a * horner(-us, coeffs))  # k x^2 phi(k u)
        val_large = al_safe * (a + (half * al_safe) * torch.expm1(-ul))
        results.append(torch.where(small, val_small, val_large).to(out_dtype))
    return results[0], results[1]
