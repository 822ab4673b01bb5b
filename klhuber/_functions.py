r"""The custom :class:`torch.autograd.Function`\ s behind :mod:`klhuber.losses`:

* the general Function (``_KLHuberFn``): :math:`D` of ``input - target`` with an analytic
  backward, double backward and forward-mode AD, and the Function of :math:`D'` it uses;
* the fused Function (``_FusedFn``): one fused forward pass (:mod:`klhuber._fused`) that also
  writes :math:`D'`, and a backward that is one product;
* the plain differentiable formulation (``impl="autograd"``) and the :func:`torch.compile` of
  the general Function (``impl="compiled"`` where the fused path does not apply).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from klhuber import _fused
from klhuber._chunked import backward_eval, forward_eval
from klhuber._inspection import is_compiling as _is_compiling
from klhuber._kernels import (
    dalpha_plain,
    deriv_dalpha_plain,
    diff,
    kernel,
    kl_huber_plain,
    second_derivative_plain,
    sum_to,
    times_or_zero,
)
from klhuber._reduction import reduce
from klhuber._validation import ParamLike


class _KLHuberFnBase(torch.autograd.Function):
    """D_{alpha,beta}(input - target) (eq. 16) with an analytic backward (Appendix B)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(input: Tensor, target: Tensor | None, alpha: ParamLike, beta: ParamLike,
                reduction: str, want_d: bool) -> tuple[Tensor, Tensor]:
        # Second output: D' for backward when the eager chunked CPU path computed it in the
        # same pass (one input-sized tensor), else empty; internal, never differentiated.
        return forward_eval(input, target, alpha, beta, reduction, want_d)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[Tensor, Tensor]) -> None:
        input, target, alpha, beta, reduction, _ = inputs
        # (output[1] is not marked non-differentiable: functorch's jvp wrapper miscounts the
        # tangents of such outputs.  It is dropped by apply_loss and receives no gradient.)
        ctx.reduction = reduction
        ctx.has_target = target is not None
        ctx.alpha_t = isinstance(alpha, Tensor)
        ctx.beta_t = isinstance(beta, Tensor)
        ctx.alpha = None if ctx.alpha_t else alpha
        ctx.beta = None if ctx.beta_t else beta
        saved = (input, target if ctx.has_target else None,
                 alpha if ctx.alpha_t else None, beta if ctx.beta_t else None, output[1])
        ctx.save_for_backward(*saved)
        ctx.save_for_forward(*saved)

    @staticmethod
    def backward(ctx: Any, grad: Tensor, _grad_d: Tensor | None) -> tuple[Tensor | None, ...]:
        input, target, alpha_s, beta_s, d = ctx.saved_tensors
        alpha = alpha_s if ctx.alpha_t else ctx.alpha
        beta = beta_s if ctx.beta_t else ctx.beta
        need_x = ctx.needs_input_grad[0] or ctx.needs_input_grad[1]
        need_a = ctx.alpha_t and ctx.needs_input_grad[2]
        need_b = ctx.beta_t and ctx.needs_input_grad[3]
        if ctx.reduction == "mean":
            grad = grad / input.numel()
        if torch.is_grad_enabled():
            gx, ga, gb = backward_differentiable(input, target, alpha, beta, grad,
                                                 need_x, need_a, need_b)
        elif d.numel() > 0 and not (need_a or need_b):  # D' saved by the forward
            gx = (d * float(grad)) if ctx.reduction != "none" else d * grad
            ga = gb = None
        else:
            gx, ga, gb = backward_eval(input, target, alpha, beta, grad, ctx.reduction,
                                       need_x, need_a, need_b)
        g_in = gx if ctx.needs_input_grad[0] else None
        g_t = (-gx if gx is not None else None) if (ctx.has_target and ctx.needs_input_grad[1]) \
            else None
        return g_in, g_t, ga, gb, None, None


def apply_loss(input: Tensor, target: Tensor | None, alpha: ParamLike, beta: ParamLike,
               reduction: str, want_d: bool = False) -> Tensor:
    return _loss_fn().apply(input, target, alpha, beta, reduction, want_d)[0]


def backward_differentiable(input: Tensor, target: Tensor | None, alpha: ParamLike,
                            beta: ParamLike, grad: Tensor, need_x: bool, need_a: bool,
                            need_b: bool) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
    """Backward with a graph (double backward): built from differentiable pieces."""
    x = diff(input, target)
    gx = grad * deriv_fn().apply(x, alpha, beta) if need_x else None
    ga = gb = None
    if need_a:
        ga = sum_to(grad * dalpha_plain(x, alpha, beta), alpha)
    if need_b:
        gb = sum_to(-grad * apply_loss(x, None, alpha, beta, "none") / beta, beta)
    return gx, ga, gb


class _KLHuberDerivFnBase(torch.autograd.Function):
    """dD/dx = sign(x)(1 - e^{-|x|/alpha})/beta (Appendix B) with its analytic derivative
    d2D/dx2 = e^{-|x|/alpha}/(alpha beta)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x: Tensor, alpha: ParamLike, beta: ParamLike) -> Tensor:
        return kernel(x, alpha, beta, value=False, deriv=True)["deriv"]

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Tensor) -> None:
        x, alpha, beta = inputs
        ctx.alpha_t = isinstance(alpha, Tensor)
        ctx.beta_t = isinstance(beta, Tensor)
        ctx.alpha = None if ctx.alpha_t else alpha
        ctx.beta = None if ctx.beta_t else beta
        saved = (x, alpha if ctx.alpha_t else None, beta if ctx.beta_t else None)
        ctx.save_for_backward(*saved)
        ctx.save_for_forward(*saved)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        x, alpha_s, beta_s = ctx.saved_tensors
        alpha = alpha_s if ctx.alpha_t else ctx.alpha
        beta = beta_s if ctx.beta_t else ctx.beta
        gx = ga = gb = None
        if ctx.needs_input_grad[0]:
            gx = grad * second_derivative_plain(x, alpha, beta)
        if ctx.alpha_t and ctx.needs_input_grad[1]:
            ga = sum_to(grad * deriv_dalpha_plain(x, alpha, beta), alpha)
        if ctx.beta_t and ctx.needs_input_grad[2]:
            gb = sum_to(-grad * deriv_fn().apply(x, alpha, beta) / beta, beta)
        return gx, ga, gb


class _KLHuberFn(_KLHuberFnBase):
    """:class:`_KLHuberFnBase` plus forward-mode AD (Dynamo cannot trace a custom ``jvp``, so
    the base class is used while compiling)."""

    @staticmethod
    def jvp(ctx: Any, t_input: Tensor | None, t_target: Tensor | None, t_alpha: Tensor | None,
            t_beta: Tensor | None, _t_red: Any, _t_want: Any) -> tuple[Tensor, Tensor]:
        """Forward-mode derivative (torch.func.jvp / jacfwd / hessian); the second output (the
        internal D') gets a zero tangent."""
        input, target, alpha_s, beta_s, d = ctx.saved_tensors
        alpha = alpha_s if ctx.alpha_t else ctx.alpha
        beta = beta_s if ctx.beta_t else ctx.beta
        need_a = ctx.alpha_t and t_alpha is not None
        need_b = ctx.beta_t and t_beta is not None
        x = diff(input, target)
        tangent = torch.zeros_like(x)
        if t_input is not None or t_target is not None:
            dx = t_input if t_target is None else (t_target.neg() if t_input is None
                                                   else t_input - t_target)
            tangent = tangent + times_or_zero(dx, _KLHuberDerivFn.apply(x, alpha, beta))
        if need_a:
            tangent = tangent + times_or_zero(t_alpha, dalpha_plain(x, alpha, beta))
        if need_b:
            tangent = tangent + times_or_zero(
                t_beta, -apply_loss(x, None, alpha, beta, "none") / beta)
        return reduce(tangent, ctx.reduction), torch.zeros_like(d)


class _KLHuberDerivFn(_KLHuberDerivFnBase):
    """:class:`_KLHuberDerivFnBase` plus forward-mode AD."""

    @staticmethod
    def jvp(ctx: Any, t_x: Tensor | None, t_alpha: Tensor | None,
            t_beta: Tensor | None) -> Tensor:
        x, alpha_s, beta_s = ctx.saved_tensors
        alpha = alpha_s if ctx.alpha_t else ctx.alpha
        beta = beta_s if ctx.beta_t else ctx.beta
        tangent = torch.zeros_like(x)
        if t_x is not None:
            tangent = tangent + times_or_zero(t_x, second_derivative_plain(x, alpha, beta))
        if ctx.alpha_t and t_alpha is not None:
            tangent = tangent + times_or_zero(t_alpha, deriv_dalpha_plain(x, alpha, beta))
        if ctx.beta_t and t_beta is not None:
            tangent = tangent + times_or_zero(t_beta,
                                              -_KLHuberDerivFn.apply(x, alpha, beta) / beta)
        return tangent


def _loss_fn() -> type[_KLHuberFnBase]:
    return _KLHuberFnBase if _is_compiling() else _KLHuberFn


def deriv_fn() -> type[_KLHuberDerivFnBase]:
    return _KLHuberDerivFnBase if _is_compiling() else _KLHuberDerivFn


def loss_plain(input: Tensor, target: Tensor | None, alpha: ParamLike, beta: ParamLike,
               reduction: str) -> Tensor:
    return reduce(kl_huber_plain(diff(input, target), alpha, beta), reduction)


@functools.cache
def compiled(reduction: str) -> Callable[..., Tensor]:
    """torch.compile (dynamic shapes: one compilation for all sizes) of the custom Function,
    for the inputs the fused path does not take (tensor or extreme scales): inductor fuses
    the forward (with its reduction) into one kernel and the analytic backward, which
    recomputes D' from the inputs, into another.  First derivatives only."""

    def fn(input: Tensor, target: Tensor | None, alpha: ParamLike, beta: ParamLike) -> Tensor:
        return apply_loss(input, target, alpha, beta, reduction)

    return torch.compile(fn, dynamic=True)


def run_compiled(input: Tensor, target: Tensor | None, alpha: ParamLike, beta: ParamLike,
                 reduction: str) -> Tensor:
    """The general Function under :func:`compiled`, or eagerly where compiling is off or not
    possible: the rules of the compiled fused forward (``KLHUBER_NO_COMPILE=1``, no Triton on
    CUDA, an earlier failure in this process).  A failed compilation warns once and is not
    tried again; an error of the inputs themselves is raised by the eager call as usual."""
    if _fused.compile_available(input.device):
        try:
            return compiled(reduction)(input, target, alpha, beta)
        except Exception as err:  # no C++ compiler / Triton, unsupported platform, ...
            out = apply_loss(input, target, alpha, beta, reduction)  # raises input errors
            import warnings

            _fused.mark_compile_broken(err)
            warnings.warn(f"klhuber: torch.compile of the KL loss failed ({err!r:.200}); "
                          "using eager evaluation", RuntimeWarning, stacklevel=4)
            return out
    return apply_loss(input, target, alpha, beta, reduction)


def _fused_forward(kind: str, input: Tensor, target: Tensor | None, alpha: float, beta: float,
                   reduction: str, want_d: bool) -> tuple[Tensor, Tensor | None]:
    if kind == "kernel":
        return _fused.cpu_forward(_fused.cpu_kernel(), input.contiguous(),
                                  None if target is None else target.contiguous(), alpha, beta,
                                  reduction, want_d)
    return _fused.compiled_forward(input, target, alpha, beta, reduction, want_d,
                                   compiled=kind == "compiled")


class _FusedFn(torch.autograd.Function):
    """D_{alpha,beta}(input - target) (eq. 16): the forward is one fused pass that also writes
    D' (Appendix B, scaled for the reduction), the backward one product ``D' * grad``.  With
    ``create_graph=True`` the backward is built from the differentiable pieces of the general
    path instead, so double backward works."""

    @staticmethod
    def forward(ctx: Any, input: Tensor, target: Tensor | None, alpha: float, beta: float,
                reduction: str, kind: str) -> Tensor:
        val, d = _fused_forward(kind, input, target, alpha, beta, reduction, True)
        ctx.save_for_backward(input, target, d)
        ctx.params = (alpha, beta, reduction)
        return val

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        input, target, d = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph=True: differentiable backward
            alpha, beta, reduction = ctx.params
            if reduction == "mean":
                grad = grad / input.numel()
            gx = backward_differentiable(input, target, alpha, beta, grad, True, False,
                                         False)[0]
        else:
            gx = d * grad
        g_t = -gx if ctx.needs_input_grad[1] else None
        return (gx if ctx.needs_input_grad[0] else None), g_t, None, None, None, None


def run_fused(kind: str, input: Tensor, target: Tensor | None, alpha: float, beta: float,
              reduction: str) -> Tensor:
    if torch.is_grad_enabled() and (input.requires_grad
                                    or (target is not None and target.requires_grad)):
        return _FusedFn.apply(input, target, alpha, beta, reduction, kind)
    with torch.no_grad():  # one compiled graph for inference, whatever the grad mode
        return _fused_forward(kind, input, target, alpha, beta, reduction, False)[0]
