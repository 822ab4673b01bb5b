r"""The Huber loss and the KL-of-Laplaces loss family of Meyer (CVPR 2021).

Equation numbers refer to G. P. Meyer, *An Alternative Probabilistic Interpretation of the
Huber Loss* (CVPR 2021, arXiv:1911.02088) and its appendices.

* :func:`huber` -- the Huber loss :math:`H_\alpha` (eq. 4).
* :func:`kl_huber` -- the proposed loss (eq. 16)

  .. math:: D_{\alpha,\beta}(x) = \frac{\alpha e^{-|x|/\alpha} + |x| - \alpha}{\beta},

  with its analytic derivatives (Appendix B) in :func:`kl_huber_derivative`.
* :func:`laplace_kl` -- the KL divergence of two Laplace distributions (eq. 15, Appendix A).
* :func:`huber_bounds` -- the bounds :math:`D_{\alpha,1/\alpha} \le H_\alpha \le D_{\alpha/2,1/\alpha}`
  of eq. 20 (Appendix C).
* :func:`smooth_l1` -- PyTorch's Smooth L1 loss written as :math:`H_\beta/\beta`.
* :func:`huber_loss`, :func:`kl_huber_loss` and the modules :class:`HuberLoss`,
  :class:`KLHuberLoss`, :class:`AdaptiveKLHuberLoss` with ``reduction=`` as in :mod:`torch.nn`.

.. rubric:: Numerics

With :math:`u = |x|/\alpha` and :math:`g(u) = e^{-u} - 1 + u = \operatorname{expm1}(-u) + u`,
:math:`D_{\alpha,\beta}(x) = \alpha\,g(u)/\beta`.  The direct formula cancels catastrophically for
small :math:`u`, so :math:`g(u) = u^2 \varphi(u)` is evaluated with a polynomial approximation of
:math:`\varphi(u) = (e^{-u} - 1 + u)/u^2` on :math:`[0, t)` (``t`` chosen per dtype) and as
:math:`|x| - \alpha(1 - e^{-u})` above ``t``, where nothing cancels.  The first derivative
:math:`\operatorname{sign}(x)(1 - e^{-u})/\beta` uses :math:`1 - e^{-u} = u(1 - u\varphi(u))` below
``t``.  Against mpmath on 12,000 points with :math:`|x|/\alpha \in [10^{-30}, 10^6]` the
maximum relative error of value and derivative is below 5 eps in float64 and 3 eps in float32
(``tests/test_losses.py``).  float16 and bfloat16 inputs are computed in float32 and rounded once;
under :class:`torch.autocast` the loss is computed and returned in float32, as torch does for its
regression losses.

Extreme scales (subnormal, below the dtype's range, huge or infinite :math:`\alpha`, :math:`\beta`)
give no NaN: where :math:`1/\alpha` or :math:`1/\beta` is not a normal number of the dtype the
kernels divide (in float64) instead of multiplying by the reciprocal, and they return the limits:
:math:`D = 0` at :math:`x = 0` for every scale, :math:`D \to 0` as :math:`\alpha \to \infty` or
:math:`\beta \to \infty`, the L1 limit for an :math:`\alpha` that rounds to 0, and ``inf`` where
the value overflows.  Where :math:`|x|/\beta` or :math:`\alpha/\beta` exceeds the dtype's
largest number, the numerator :math:`\alpha\,g(u)` (or :math:`|x|\,u\varphi(u)`, both at most
:math:`|x|`) is formed before the division by :math:`\beta`, so the value is ``inf`` only where
:math:`D` is (e.g. :math:`D = 2.27 \cdot 10^{38}` at :math:`x = 2 \cdot 10^{38}`,
:math:`\alpha = 10^{38}`, :math:`\beta = 0.5` in float32).  One exception: with moderate
number scales (the fast paths below) a :math:`D` within a factor 16/15 of the dtype's largest
number may be ``inf``.  Values are never NaN.  ``impl="autograd"`` evaluates float32 in
float64; it takes autograd through plain operations where :math:`\alpha`, :math:`\beta` and
:math:`\alpha/\beta` lie in :math:`[10^{-100}, 10^{100}]` and the closed-form derivatives of
Appendix B elsewhere (a custom Function, with double backward, forward mode and
:mod:`torch.func`).  On both paths, in float64, the gradients in :math:`x`, :math:`\alpha` and
:math:`\beta` agree with the exact ones (mpmath) to :math:`10^{-12}` relative, and are ``inf``
where those overflow, wherever the scales, :math:`D` and :math:`u^2` are normal numbers
(``tests/test_numerics_edges.py``); where a subnormal intermediate enters they lose accuracy.
Moderate scalar scales keep the fast paths unchanged.

.. rubric:: Implementations (``impl=``)

``"default"``
    Picks the fastest accurate path for the call.  On the CPU, for float32/float64 (and half
    types, computed in float32) with number scales (``alpha``, ``beta`` Python numbers whose
    reciprocals and ratio are normal numbers of the dtype), the **fused path**: a custom
    :class:`torch.autograd.Function` whose forward is one pass of a C++ kernel (built with the
    system compiler at first use and cached in ``$KLHUBER_CACHE``, default
    ``~/.cache/klhuber``) that writes the loss, or its sum, and :math:`D'` (Appendix B), and
    whose backward is one product :math:`D' \cdot` ``grad``.  It keeps that one input-sized
    tensor for backward.  On CUDA the same Function gets its forward from
    :func:`torch.compile` with dynamic shapes (one Triton kernel; one compilation per
    reduction, not per shape).  Without autograd the kernel's result is returned directly.
    Everything else (tensor or extreme scales, forward-mode AD, :mod:`torch.func` transforms,
    tracing by :func:`torch.compile`, meta tensors) takes the general path: a custom
    Function with an analytic backward that, on large CPU tensors, works branch-free in
    cache-sized chunks and writes :math:`D'` in the same pass, and elsewhere recomputes it.
    Both paths support double backward (with ``create_graph=True`` the fused backward is
    built from differentiable pieces); the general path also forward-mode AD
    (:func:`torch.func.jvp`, :func:`torch.func.jacfwd`, :func:`torch.func.hessian`),
    :func:`torch.func.grad`, :func:`torch.func.vmap`, :func:`torch.compile` and
    :class:`torch.autocast`.  Without a C++ compiler (or with ``KLHUBER_NO_KERNEL=1``) the
    fused path on the CPU evaluates the same formulas with about 15 eager operations for
    small tensors and leaves large ones to the chunked kernel.
``"fused"``
    The fused path wherever it applies (on the CPU without a compiler through
    :func:`torch.compile` or eager operations), else the general path.
``"compiled"``
    :func:`torch.compile` with dynamic shapes (``dynamic=True``), also on the CPU.  Where the
    fused path applies (float32/float64, half types computed in float32, with number scales as
    above; any device but meta tensors), the fused Function with its forward from
    :func:`torch.compile` instead of the C++ kernel, and its backward and double backward as
    for ``"fused"``.  That forward is evaluated eagerly for tensors with fewer than two
    elements and after a failed compilation (warned once; not tried again in the process), on
    the CPU also with ``KLHUBER_NO_COMPILE=1``; on other devices, where the compiled forward
    is not available (no Triton on CUDA, ``KLHUBER_NO_COMPILE=1``, an earlier failed
    compilation), the call takes the general Function instead.  All other calls (tensor or
    extreme scales, forward-mode AD, :mod:`torch.func` transforms, tensor subclasses, meta
    tensors) run the general Function under :func:`torch.compile` (``dynamic=True``, one
    compilation per reduction; first derivatives only), or eagerly under the same rules as
    the compiled forward (``KLHUBER_NO_COMPILE=1``, no Triton on CUDA, an earlier failed
    compilation: warned once).
``"autograd"``
    The same formulas as plain differentiable tensor operations (a reference; float32 is
    evaluated in float64 and rounded back).

Every path meets the mpmath tolerances above (``tests/test_losses.py``).
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import torch
from torch import Tensor, nn

from klhuber._dispatch import autocast_off, dispatch, prepare
from klhuber._functions import deriv_fn
from klhuber._inspection import can_inspect as _can_inspect
from klhuber._kernels import huber_bounds_direct, moderate, second_derivative_plain
from klhuber._phi import opmath
from klhuber._reduction import check_reduction, reduce
from klhuber._validation import ParamLike, check_impl, check_input, check_pair, check_param

__all__ = [
    "AdaptiveKLHuberLoss",
    "HuberLoss",
    "KLHuberLoss",
    "huber",
    "huber_bounds",
    "huber_loss",
    "kl_huber",
    "kl_huber_derivative",
    "kl_huber_loss",
    "laplace_kl",
    "smooth_l1",
]

# ---------------------------------------------------------------------------------------------
# Functions
# ---------------------------------------------------------------------------------------------


def huber(x: Tensor, alpha: ParamLike) -> Tensor:
    r"""The Huber loss :math:`H_\alpha(x)` of eq. 4, elementwise.

    .. math:: H_\alpha(x) = \tfrac12 x^2 \text{ if } |x| \le \alpha, \quad
              \alpha(|x| - \tfrac12\alpha) \text{ otherwise.}

    Equal to ``torch.nn.functional.huber_loss(x, 0, delta=alpha, reduction="none")`` (bit for
    bit).  ``alpha`` (> 0) is a number or a tensor broadcastable to ``x``; gradients with
    respect to a tensor ``alpha`` are :math:`|x| - \alpha` in the linear part and 0 elsewhere.
    """
    x = check_input(x, "x")
    alpha = check_param(alpha, "alpha", x, allow_zero=False)
    if not isinstance(alpha, Tensor):
        return torch.nn.functional.huber_loss(x, torch.zeros_like(x), reduction="none",
                                              delta=alpha)
    z = x.abs()
    return torch.where(z < alpha, 0.5 * z * z, alpha * (z - 0.5 * alpha))


def smooth_l1(x: Tensor, beta: ParamLike) -> Tensor:
    r"""PyTorch's Smooth L1 loss, elementwise: :math:`H_\beta(x)/\beta` (eq. 4), and
    :math:`|x|` for ``beta = 0``.

    .. math:: \mathrm{SmoothL1}_\beta(x) = \tfrac{1}{2\beta} x^2 \text{ if } |x| < \beta, \quad
              |x| - \tfrac12\beta \text{ otherwise.}

    Equal to ``torch.nn.functional.smooth_l1_loss(x, 0, beta=beta, reduction="none")``.  By the
    bounds of eq. 20 and the scaling of eq. 21 it lies between :math:`D_{\beta,1}` and
    :math:`D_{\beta/2,1}`, label noise of scale about ``beta`` and prediction noise of scale 1:
    the book's reading of "why β = 1?" for the box-regression loss of Fast R-CNN (Girshick,
    ICCV 2015).
    """
    x = check_input(x, "x")
    beta = check_param(beta, "beta", x, allow_zero=True)
    if not isinstance(beta, Tensor):
        return torch.nn.functional.smooth_l1_loss(x, torch.zeros_like(x), reduction="none",
                                                  beta=beta)
    z = x.abs()
    safe = torch.where(beta > 0, beta, torch.ones_like(beta))
    # x = 0 takes the quadratic branch also at beta = 0: there the loss is 0 for every beta,
    # so its beta-gradient is 0 (the linear branch's -1/2 holds only for x != 0)
    return torch.where((z < beta) | (z == 0), 0.5 * z * z / safe, z - 0.5 * beta)


def kl_huber(x: Tensor, alpha: ParamLike, beta: ParamLike = 1.0, *,
             impl: str = "default") -> Tensor:
    r"""The proposed loss :math:`D_{\alpha,\beta}(x)` of eq. 16, elementwise.

    .. math:: D_{\alpha,\beta}(x) = \frac{\alpha e^{-|x|/\alpha} + |x| - \alpha}{\beta}

    It is the KL divergence of two Laplace distributions (eq. 15) with label scale
    :math:`b_1 = \alpha` and prediction scale :math:`b_2 = \beta`, shifted so that its minimum
    is 0.  It is quadratic near 0 (:math:`x^2/(2\alpha\beta)`, eq. 17), linear far away
    (:math:`(|x| - \alpha)/\beta`, eq. 18), twice differentiable (Appendix B) and bounds the
    Huber loss (eq. 20).

    Parameters
    ----------
    x:
        Floating-point tensor (float64, float32, float16 or bfloat16; half types are computed
        in float32).
    alpha:
        Label-noise scale, ``alpha >= 0``: a number or a tensor broadcastable to ``x``.
        ``alpha = 0`` gives the L1 limit :math:`|x|/\beta` exactly.
    beta:
        Prediction-noise scale, ``beta > 0``: a number or a tensor broadcastable to ``x``.
    impl:
        ``"default"`` (the fastest accurate path for the input: the fused kernel where it
        applies, else the general custom autograd Function), ``"fused"``, ``"compiled"``
        (the same Functions with their forward from :func:`torch.compile` with dynamic shapes)
        or ``"autograd"`` (plain tensor operations); see the module's "Implementations".
    """
    x = check_input(x, "x")
    alpha = check_param(alpha, "alpha", x, allow_zero=True)
    beta = check_param(beta, "beta", x, allow_zero=False)
    check_impl(impl)
    return dispatch(x, None, alpha, beta, "none", impl)


def kl_huber_derivative(x: Tensor, alpha: ParamLike, beta: ParamLike = 1.0,
                        order: int = 1) -> Tensor:
    r"""Analytic derivatives of :math:`D_{\alpha,\beta}` (Appendix B, eq. 43–59).

    ``order=1``: :math:`D'(x) = \operatorname{sign}(x)\,(1 - e^{-|x|/\alpha})/\beta`, computed
    as :math:`-\operatorname{expm1}(-u)` without cancellation.  ``order=2``:
    :math:`D''(x) = e^{-|x|/\alpha}/(\alpha\beta)`, continuous at 0 with
    :math:`D''(0) = 1/(\alpha\beta)` (Claim 1).  For ``alpha = 0`` (the L1 limit) ``order=2``
    is 0 for :math:`x \ne 0` and ``inf`` at 0.  Both are differentiable with autograd.
    """
    x = check_input(x, "x")
    alpha = check_param(alpha, "alpha", x, allow_zero=True)
    beta = check_param(beta, "beta", x, allow_zero=False)
    if order not in (1, 2):
        raise ValueError(f"order must be 1 or 2, got {order!r}")
    xw, _, a_, b_, out_dtype = prepare(x, alpha, beta)
    with autocast_off(x.device.type):
        if order == 1:
            out = deriv_fn().apply(xw, a_, b_)
        else:
            out = second_derivative_plain(xw, a_, b_)
    return out.to(out_dtype) if out.dtype != out_dtype else out


def laplace_kl(loc_p: Tensor | float, scale_p: ParamLike, loc_q: Tensor | float,
               scale_q: ParamLike) -> Tensor:
    r"""KL divergence :math:`D(p\,\|\,q)` of two Laplace distributions (eq. 15, Appendix A).

    .. math:: D = \frac{b_1 e^{-|\mu_1 - \mu_2|/b_1} + |\mu_1 - \mu_2|}{b_2}
                  + \log\frac{b_2}{b_1} - 1

    with :math:`p = \mathrm{Laplace}(\mu_1, b_1)` (``loc_p``, ``scale_p``) and
    :math:`q = \mathrm{Laplace}(\mu_2, b_2)`.  Written as
    :math:`D_{b_1,b_2}(\mu_1 - \mu_2) + (r - 1 - \log r)` with :math:`r = b_1/b_2` (eq. 16 plus
    the constant terms), so it is accurate when the two distributions are close.  All four
    arguments broadcast and are differentiable (shapes that do not broadcast raise
    ``ValueError``); scales must be positive.
    """
    tensors = [v for v in (loc_p, scale_p, loc_q, scale_q) if isinstance(v, Tensor)]
    dtype = torch.get_default_dtype()
    device = tensors[0].device if tensors else None
    for v in tensors:
        dtype = torch.promote_types(dtype, v.dtype) if v.is_floating_point() else dtype
    args = {}
    for name, v in (("loc_p", loc_p), ("scale_p", scale_p), ("loc_q", loc_q),
                    ("scale_q", scale_q)):
        if isinstance(v, Tensor):
            if not v.is_floating_point():
                raise TypeError(f"{name} must have a floating-point dtype, got {v.dtype}")
            args[name] = v.to(dtype)
        elif isinstance(v, numbers.Real) and not isinstance(v, bool):
            args[name] = torch.tensor(float(v), dtype=dtype, device=device)
        else:
            raise TypeError(f"{name} must be a real number or a tensor, got {type(v).__name__}")
    try:
        torch.broadcast_shapes(*(a.shape for a in args.values()))
    except RuntimeError:
        shapes = ", ".join(f"{k} {tuple(a.shape)}" for k, a in args.items())
        raise ValueError(f"loc_p, scale_p, loc_q and scale_q must have shapes that broadcast "
                         f"together; got {shapes}") from None
    for name in ("scale_p", "scale_q"):
        s = args[name]
        if _can_inspect(s) and s.numel() > 0 and bool(~(s > 0).all()):
            raise ValueError(f"{name} must be in (0, inf] (positive) everywhere")
    sp_, sq_ = args["scale_p"], args["scale_q"]
    if (_can_inspect(sp_) and _can_inspect(sq_) and sp_.numel() > 0 and sq_.numel() > 0
            and bool((torch.isinf(sp_) & torch.isinf(sq_)).any())):
        raise ValueError("scale_p and scale_q are both inf: the KL divergence has no limit "
                         "there (it depends on how they grow); allowed range (0, inf] for "
                         "each, not both inf")
    lp, sp, lq, sq = torch.broadcast_tensors(args["loc_p"], args["scale_p"], args["loc_q"],
                                             args["scale_q"])
    d = dispatch(lp - lq, None, sp, sq, "none", "default")
    r = sp / sq
    const = (r - 1.0) - torch.log(r)
    # r (nearly) 0 or inf (subnormal or infinite scales): r - 1 + log(b2) - log(b1), no
    # inf - inf and no overflowing 1/r in the gradient;
    # one infinite scale: the KL is +inf (the limit)
    fi = torch.finfo(r.dtype)
    out_of_range = (r < 4 * fi.smallest_normal) | (r > fi.max / 4)  # 1/r not finite
    if bool(out_of_range.any()) if _can_inspect(r) else True:
        inf_scale = torch.isinf(sp) | torch.isinf(sq)
        finite_sp = torch.where(inf_scale, torch.ones_like(sp), sp)
        finite_sq = torch.where(inf_scale, torch.ones_like(sq), sq)
        alt = (r - 1.0) + (torch.log(finite_sq) - torch.log(finite_sp))
        alt = torch.where(inf_scale, torch.full_like(alt, math.inf), alt)
        r_in = torch.where(out_of_range, torch.ones_like(r), r)  # no 0/0 in the unused branch
        const = torch.where(out_of_range, alt, (r_in - 1.0) - torch.log(r_in))
        d = torch.where(inf_scale, torch.zeros_like(d), d)
    return d + const


def huber_bounds(x: Tensor, alpha: ParamLike) -> tuple[Tensor, Tensor]:
    r"""The bounds of eq. 20 (proved in Appendix C, Claims 3–5):

    .. math:: D_{\alpha,1/\alpha}(x) \le H_\alpha(x) \le D_{\alpha/2,1/\alpha}(x).

    Returns ``(lower, upper)``.  ``alpha`` (> 0) is a number or a broadcastable tensor.
    """
    x = check_input(x, "x")
    alpha = check_param(alpha, "alpha", x, allow_zero=False)
    work = opmath(x.dtype)
    if not isinstance(alpha, Tensor) and moderate(alpha, alpha * alpha, work):
        inv = 1.0 / alpha
        return kl_huber(x, alpha, inv), kl_huber(x, alpha / 2, inv)
    return huber_bounds_direct(x, alpha)


def huber_loss(input: Tensor, target: Tensor, alpha: ParamLike = 1.0,
               reduction: str = "mean") -> Tensor:
    r"""Huber loss :math:`H_\alpha(\text{input} - \text{target})` (eq. 4) with torch's
    ``reduction`` semantics; equals ``torch.nn.functional.huber_loss(input, target,
    delta=alpha)``."""
    input, target = check_pair(input, target)
    check_reduction(reduction)
    alpha = check_param(alpha, "alpha", input, allow_zero=False)
    if not isinstance(alpha, Tensor):
        return torch.nn.functional.huber_loss(input, target, reduction=reduction, delta=alpha)
    return reduce(huber(input - target, alpha), reduction)


def kl_huber_loss(input: Tensor, target: Tensor, alpha: ParamLike = 1.0, beta: ParamLike = 1.0,
                  reduction: str = "mean", *, impl: str = "default") -> Tensor:
    r""":math:`D_{\alpha,\beta}(\text{input} - \text{target})` (eq. 16) with torch's
    ``reduction`` (``"none"``, ``"mean"``, ``"sum"``; the mean of an empty input is ``nan``
    and its sum 0, as in torch).

    The KL-divergence reading (eq. 15): ``target`` is a noisy label with Laplace noise of scale
    ``alpha``, ``input`` a prediction with Laplace uncertainty of scale ``beta``.  See
    :func:`kl_huber` for the parameters and ``impl``.
    """
    input, target = check_pair(input, target)
    check_reduction(reduction)
    alpha = check_param(alpha, "alpha", input, allow_zero=True)
    beta = check_param(beta, "beta", input, allow_zero=False)
    check_impl(impl)
    return dispatch(input, target, alpha, beta, reduction, impl)

# ---------------------------------------------------------------------------------------------
# Modules
# ---------------------------------------------------------------------------------------------


class HuberLoss(nn.Module):
    r"""Module form of :func:`huber_loss` (eq. 4); like :class:`torch.nn.HuberLoss` with
    ``delta=alpha``, but ``alpha`` may be a tensor (stored as a buffer)."""

    def __init__(self, alpha: ParamLike = 1.0, reduction: str = "mean") -> None:
        super().__init__()
        self.reduction = check_reduction(reduction)
        if isinstance(alpha, Tensor):
            self.register_buffer("alpha", alpha.detach().clone())
        else:
            check_param(alpha, "alpha", torch.zeros(()), allow_zero=False)
            self.alpha = float(alpha)

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        """:func:`huber_loss` of ``input - target``."""
        return huber_loss(input, target, self.alpha, self.reduction)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, reduction={self.reduction!r}"


class KLHuberLoss(nn.Module):
    r"""Module form of :func:`kl_huber_loss`: :math:`D_{\alpha,\beta}` of eq. 16 with fixed
    ``alpha`` (label-noise scale) and ``beta`` (prediction-noise scale).

    Numbers are stored as attributes and tensors as buffers (fixed).  An
    :class:`~torch.nn.Parameter` stays a parameter of the module (``parameters()`` lists it,
    an optimiser can learn it), and then the module no longer returns :math:`D` alone, which
    has no finite minimiser in a scale (it decreases as :math:`\alpha` or :math:`\beta`
    grows), but the objective of :class:`AdaptiveKLHuberLoss` (``objective=None`` picks it:
    the KL divergence of eq. 15 for one learnable scale, the cross-entropy ``"nll"`` for two).
    Those objectives differ from :math:`D` by terms that do not depend on ``input``, so the
    gradients with respect to the predictions are unchanged.  The learnable values are used
    as they are (no reparametrisation): they must stay positive, for which
    :class:`AdaptiveKLHuberLoss` (softplus) is the safer choice.
    """

    def __init__(self, alpha: ParamLike = 1.0, beta: ParamLike = 1.0, reduction: str = "mean",
                 *, impl: str = "default", objective: str | None = None) -> None:
        super().__init__()
        self.reduction = check_reduction(reduction)
        self.impl = check_impl(impl)
        for name, value, zero in (("alpha", alpha, True), ("beta", beta, False)):
            if isinstance(value, nn.Parameter):
                check_param(value.detach(), name, value.detach(), allow_zero=False)
                self.register_parameter(name, value)
            elif isinstance(value, Tensor):
                self.register_buffer(name, value.detach().clone())
            else:
                check_param(value, name, torch.zeros(()), allow_zero=zero)
                setattr(self, name, float(value))
        self.objective = _resolve_objective(objective, isinstance(alpha, nn.Parameter),
                                            isinstance(beta, nn.Parameter))

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        """:func:`kl_huber_loss` of ``input - target`` (plus the terms of ``objective``)."""
        if self.objective == "d":
            return kl_huber_loss(input, target, self.alpha, self.beta, self.reduction,
                                 impl=self.impl)
        val = kl_huber_loss(input, target, self.alpha, self.beta, "none", impl=self.impl)
        alpha, beta = self.alpha, self.beta
        if isinstance(alpha, Tensor):
            alpha = alpha.to(val.dtype)
        if isinstance(beta, Tensor):
            beta = beta.to(val.dtype)
        return reduce(_objective_terms(val, alpha, beta, self.objective), self.reduction)

    def extra_repr(self) -> str:
        return (f"alpha={self.alpha}, beta={self.beta}, reduction={self.reduction!r}, "
                f"impl={self.impl!r}, objective={self.objective!r}")


class AdaptiveKLHuberLoss(nn.Module):
    r"""The KL-Huber loss with learnable scales, minimising an objective with a finite minimiser.

    :math:`\alpha = \mathrm{softplus}(\rho_\alpha)` (label-noise scale) and
    :math:`\beta = \mathrm{softplus}(\rho_\beta)` (prediction-noise scale) are kept positive by
    the softplus parametrisation.  :math:`D_{\alpha,\beta}` (eq. 16) alone cannot be learned:
    it decreases without bound as :math:`\beta` (or :math:`\alpha`) grows.  The objective,
    per element :math:`x = \text{input} - \text{target}`, is therefore (``objective=``):

    ``"kl"`` -- the full KL divergence of eq. 15,
        :math:`\mathrm{KL}(\mathrm{Laplace}(y, \alpha)\,\|\,\mathrm{Laplace}(\hat y, \beta))
        = D_{\alpha,\beta}(x) + \frac{\alpha}{\beta} + \log\frac{\beta}{\alpha} - 1`.
        With **one** learnable scale its minimiser is finite: for :math:`\beta`,
        :math:`\beta^* = E[\alpha e^{-|x|/\alpha} + |x|]` (set the derivative
        :math:`(\beta - E[\alpha e^{-|x|/\alpha} + |x|])/\beta^2` to 0); for :math:`\alpha`,
        the root of :math:`\alpha\,E[(1 + |x|/\alpha)e^{-|x|/\alpha}] = \beta`, which exists
        because the left side grows from 0 to :math:`\infty`.  With **both** learnable it has
        none (at :math:`\alpha = \beta \to \infty` the KL tends to 0), so that combination
        raises ``ValueError``.

    ``"nll"`` -- the cross-entropy, i.e. the Laplace negative log-likelihood of the label
        :math:`y \sim \mathrm{Laplace}(\text{target}, \alpha)` under the prediction
        :math:`\mathrm{Laplace}(\text{input}, \beta)` with its normalising term,
        :math:`E_y[|y - \hat y|/\beta + \log 2\beta] = D_{\alpha,\beta}(x) + \alpha/\beta +
        \log 2\beta` (= KL + the entropy :math:`1 + \log 2\alpha` of the label distribution).
        It increases in :math:`\alpha` and, for fixed :math:`\alpha`, has its minimum at
        :math:`\beta^* = E[\alpha e^{-|x|/\alpha} + |x|]`; with both learnable the minimiser is
        :math:`\alpha^* = 0`, :math:`\beta^* = E|x|`, the maximum-likelihood Laplace scale of
        the residuals (for Laplace(0, s) residuals, s).  The data only identify the total noise,
        so this objective attributes it to the prediction.

    ``"d"`` -- :math:`D_{\alpha,\beta}` alone (eq. 16), only without learnable scales.

    ``objective=None`` (default) picks ``"kl"`` for one learnable scale, ``"nll"`` for two and
    ``"d"`` for none.  ``include_constants=False`` is the older spelling of ``"d"`` (and is
    honoured even with a learnable scale, for backward compatibility, though that scale then
    has no finite minimiser).
    The added terms do not depend on ``input``: the gradients with respect to the predictions
    are those of :math:`D_{\alpha,\beta}`.

    Parameters
    ----------
    alpha, beta:
        Initial scales (> 0, and finite and nonzero in the default dtype, in which the
        parameters are created).
    shape:
        Shape of the parameters, a tuple of positive ints broadcast against the input (e.g.
        ``(4,)`` for one scale per box coordinate).
    learn_alpha, learn_beta:
        Which scales are :class:`~torch.nn.Parameter`\ s (the others are buffers).
    """

    def __init__(self, alpha: float = 1.0, beta: float = 1.0, reduction: str = "mean", *,
                 shape: tuple[int, ...] = (), learn_alpha: bool = True, learn_beta: bool = True,
                 include_constants: bool = True, objective: str | None = None) -> None:
        super().__init__()
        self.reduction = check_reduction(reduction)
        self.include_constants = include_constants
        if not include_constants:
            if objective not in (None, "d"):
                raise ValueError(f"include_constants=False means objective='d'; got "
                                 f"objective={objective!r}")
            # D alone, as before, even with a learnable scale (an explicit opt-out, kept for
            # backward compatibility; such a scale has no finite minimiser)
            self.objective = "d"
        else:
            self.objective = _resolve_objective(objective, learn_alpha, learn_beta)
        shape = _check_shape(shape)
        dtype = torch.get_default_dtype()
        for name, value, learn in (("alpha", alpha, learn_alpha), ("beta", beta, learn_beta)):
            check_param(value, name, torch.zeros(()), allow_zero=False)
            _check_representable(value, name, dtype)
            raw = _inv_softplus(torch.full(shape, float(value), dtype=dtype))
            if learn:
                setattr(self, f"raw_{name}", nn.Parameter(raw))
            else:
                self.register_buffer(f"raw_{name}", raw)

    @property
    def alpha(self) -> Tensor:
        """The current label-noise scale softplus(raw_alpha)."""
        return torch.nn.functional.softplus(self.raw_alpha)

    @property
    def beta(self) -> Tensor:
        """The current prediction-noise scale softplus(raw_beta)."""
        return torch.nn.functional.softplus(self.raw_beta)

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        """The objective (see the class docstring) of ``input - target``, reduced."""
        input, target = check_pair(input, target)
        alpha, beta = self.alpha, self.beta
        try:
            ok = torch.broadcast_shapes(alpha.shape, input.shape) == input.shape
        except RuntimeError:
            ok = False
        if not ok:
            raise ValueError(f"input of shape {tuple(input.shape)} does not match the parameter "
                             f"shape {tuple(alpha.shape)} (they must broadcast to the input)")
        alpha = alpha.to(input.dtype)
        beta = beta.to(input.dtype)
        val = kl_huber_loss(input, target, alpha, beta, reduction="none")
        return reduce(_objective_terms(val, alpha, beta, self.objective), self.reduction)

    def extra_repr(self) -> str:
        return (f"shape={tuple(self.raw_alpha.shape)}, reduction={self.reduction!r}, "
                f"objective={self.objective!r}")

# ---------------------------------------------------------------------------------------------
# Helpers of the modules
# ---------------------------------------------------------------------------------------------


_OBJECTIVES = ("d", "kl", "nll")


def _resolve_objective(objective: str | None, learn_alpha: bool, learn_beta: bool) -> str:
    """The objective a module minimises (see :class:`AdaptiveKLHuberLoss`)."""
    if objective is None:
        if not (learn_alpha or learn_beta):
            return "d"
        return "nll" if (learn_alpha and learn_beta) else "kl"
    if objective not in _OBJECTIVES:
        raise ValueError(f"objective must be one of {_OBJECTIVES} or None, got {objective!r}")
    if objective == "d" and (learn_alpha or learn_beta):
        raise ValueError(
            "objective='d' with a learnable scale has no finite minimiser (D decreases without "
            "bound as alpha or beta grows); use objective='kl' (one learnable scale) or 'nll'")
    if objective == "kl" and learn_alpha and learn_beta:
        raise ValueError(
            "objective='kl' with both scales learnable has no finite minimiser (the KL of two "
            "Laplace distributions with alpha = beta -> inf tends to 0); use objective='nll', "
            "whose minimiser is alpha = 0, beta = E|x|")
    return objective


def _objective_terms(val: Tensor, alpha: Tensor | float, beta: Tensor | float,
                     objective: str) -> Tensor:
    """Add to D (elementwise ``val``) the terms that make ``objective`` out of it."""
    if objective == "d":
        return val
    alpha_t = alpha if isinstance(alpha, Tensor) else torch.as_tensor(alpha, dtype=val.dtype)
    beta_t = beta if isinstance(beta, Tensor) else torch.as_tensor(beta, dtype=val.dtype)
    r = alpha_t / beta_t
    if objective == "kl":  # eq. 15: + alpha/beta + log(beta/alpha) - 1
        return val + ((r - 1.0) - torch.log(r))
    # cross-entropy E_{y ~ Laplace(target, alpha)}[-log Laplace(y | input, beta)]
    return val + (r + torch.log(2.0 * beta_t))


def _check_shape(shape: Any) -> tuple[int, ...]:
    """A parameter shape: an int or a sequence of positive ints (``()`` for one scalar)."""
    if isinstance(shape, numbers.Integral) and not isinstance(shape, bool):
        shape = (shape,)
    try:
        dims = tuple(shape)
    except TypeError:
        raise TypeError(f"shape must be a tuple of positive ints, got "
                        f"{type(shape).__name__}") from None
    for d in dims:
        if not isinstance(d, numbers.Integral) or isinstance(d, bool):
            raise TypeError(f"shape must be a tuple of positive ints, got {shape!r}")
        if d < 1:
            raise ValueError(f"shape must be a tuple of positive ints (each >= 1), got {shape!r}")
    return tuple(int(d) for d in dims)


def _check_representable(value: float, name: str, dtype: torch.dtype) -> None:
    """An initial scale must be finite and nonzero once stored in ``dtype``."""
    fi = torch.finfo(dtype)
    tiny = fi.smallest_normal * fi.eps  # the smallest subnormal
    v = float(value)
    if not (v <= fi.max and float(torch.tensor(v, dtype=dtype)) > 0):
        raise ValueError(f"{name} must be in [{tiny:.3g}, {fi.max:.3g}], the positive finite "
                         f"range of the module's dtype {dtype} (the default dtype), got {value!r}")


def _inv_softplus(v: Tensor) -> Tensor:
    # log(expm1(v)), stable for large v
    return v + torch.log(-torch.expm1(-v))
