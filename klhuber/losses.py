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
the value overflows.  Moderate scalar scales keep the fast paths unchanged.

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
    The fused Function with its forward from :func:`torch.compile` (``dynamic=True``) on
    every device; the cases the fused path does not take compile the general Function
    (dynamic shapes too; first derivatives only).  ``KLHUBER_NO_COMPILE=1``, or a failed
    compilation (warned once), gives eager evaluation instead.
``"autograd"``
    The same formulas as plain differentiable tensor operations (a reference).

Every path meets the mpmath tolerances above (``tests/test_losses.py``).
"""

from __future__ import annotations

import contextlib
import functools
import math
import numbers
import os
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from klhuber import _fused
from klhuber._inspection import can_inspect as _can_inspect
from klhuber._inspection import is_compiling as _is_compiling
from klhuber._inspection import is_transformed as _is_transformed

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

Scalar = float | int
ParamLike = float | int | Tensor

_REDUCTIONS = ("none", "mean", "sum")
_IMPLS = ("default", "fused", "compiled", "autograd")

# ---------------------------------------------------------------------------------------------
# Polynomial approximations of phi(u) = (e^{-u} - 1 + u) / u^2 on [0, t).
#
# Taylor: phi(u) = sum_k (-u)^k / (k + 2)!.  Terms are kept until the truncation error is far
# below the unit roundoff of the dtype on [0, t).  The switch point t balances the polynomial
# against the cancellation of the direct branch |x| - alpha (1 - e^{-u}), whose relative error is
# about eps * u / g(u) (4.7 eps at u = 0.5, 2.7 eps at u = 1).
# ---------------------------------------------------------------------------------------------


#: dtype -> (switch point t, coefficients c_0..c_n of phi in powers of u).  Near-minimax
#: (Chebyshev-node interpolation of phi computed with mpmath at 50 digits); maximum relative
#: error of the polynomial on [0, t]: 1.5e-17 (float64, degree 9 on [0, 0.5]) and 3.4e-10
#: (float32, degree 7 on [0, 1.5]).  Above t the direct branch amplifies the error of exp by
#: e^{-t}/g(t) (5.7 at t = 0.5, 0.31 at t = 1.5), so a 2-ulp exp (CUDA's expf) stays far
#: inside the float32 tolerance.  ``tests/test_losses.py`` re-checks both against mpmath.
_PHI_U: dict[torch.dtype, tuple[float, tuple[float, ...]]] = {
    torch.float64: (0.5, (0.5, -0.16666666666666538, 0.04166666666658176, -0.008333333331155702,
                          0.0013888888604959755, -0.00019841248546681163, 2.4800612832459925e-05,
                          -2.7529613436538965e-06, 2.7077661631340097e-07,
                          -2.0367831165025622e-08)),
    torch.float32: (1.5, (0.4999999998734488, -0.16666665585560606, 0.04166651445294726,
                          -0.008332512549877314, 0.0013866992055587442, -0.00019520182875867133,
                          2.2131919772375405e-05, -1.533940728078253e-06)),
}
_fused.PHI.update(_PHI_U)  # the fused kernels evaluate the same polynomials
#: The same polynomials in powers of nu = -u (all coefficients positive).
_PHI: dict[torch.dtype, tuple[float, tuple[float, ...]]] = {
    dt: (t, tuple(c * (-1) ** k for k, c in enumerate(cs))) for dt, (t, cs) in _PHI_U.items()
}

_CHUNK = 32_000  # elements per chunk of the eager CPU kernel: below torch's grain size (32768)
_CHUNK_MIN = 65_536  # smaller tensors are processed in one go


def _opmath(dtype: torch.dtype) -> torch.dtype:
    """Computation dtype: float16/bfloat16 are evaluated in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _horner(u: Tensor, coeffs: tuple[float, ...]) -> Tensor:
    p = torch.full_like(u, coeffs[-1])
    for c in reversed(coeffs[:-1]):
        p = p * u + c
    return p


# ---------------------------------------------------------------------------------------------
# Input validation
# ---------------------------------------------------------------------------------------------


def _check_input(x: Any, name: str) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must have a floating-point dtype, got {x.dtype}")
    return x


def _check_param(value: Any, name: str, x: Tensor, *, allow_zero: bool) -> ParamLike:
    """Validate ``alpha``/``beta``: a real number or a floating tensor broadcastable to ``x``."""
    if type(value) is float and (value > 0 or (allow_zero and value == 0)):
        return value  # the common case, without the checks below (NaN fails both tests)
    bound = f"{name} >= 0" if allow_zero else f"{name} > 0"
    rng = "[0, inf)" if allow_zero else "(0, inf)"
    if isinstance(value, bool):
        raise TypeError(f"{name} must be a real number or a floating-point tensor, got bool")
    if isinstance(value, numbers.Real):
        v = float(value)
        if math.isnan(v) or v < 0 or (v == 0 and not allow_zero):
            raise ValueError(f"{name} must be in {rng} ({bound}), got {value!r}")
        return v
    if isinstance(value, Tensor):
        if not value.is_floating_point():
            raise TypeError(f"{name} must have a floating-point dtype, got {value.dtype}")
        try:
            shape = torch.broadcast_shapes(x.shape, value.shape)
        except RuntimeError:
            shape = None
        if shape != x.shape:
            raise ValueError(
                f"{name} of shape {tuple(value.shape)} does not broadcast to the input's shape "
                f"{tuple(x.shape)}")
        if value.device != x.device and value.dim() > 0:
            raise ValueError(f"{name} is on {value.device} but the input is on {x.device}")
        if _can_inspect(value) and value.numel() > 0:
            bad = (value < 0) | value.isnan() if allow_zero else ~(value > 0)
            if bool(bad.any()):
                raise ValueError(f"{name} must be in {rng} ({bound}) everywhere")
        return value
    raise TypeError(f"{name} must be a real number or a floating-point tensor, "
                    f"got {type(value).__name__}")


def _check_reduction(reduction: str) -> str:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    return reduction


def _check_impl(impl: str) -> str:
    if impl not in _IMPLS:
        raise ValueError(f"impl must be one of {_IMPLS}, got {impl!r}")
    return impl


def _check_pair(input: Any, target: Any) -> tuple[Tensor, Tensor]:
    input = _check_input(input, "input")
    target = _check_input(target, "target")
    if input.shape != target.shape:
        raise ValueError(f"target of shape {tuple(target.shape)} must have the input's shape "
                         f"{tuple(input.shape)}")
    return input, target


def _autocast_available(device_type: str) -> bool:
    """Whether :class:`torch.autocast` knows ``device_type`` (not e.g. ``"meta"``)."""
    available = getattr(getattr(torch, "amp", None), "is_autocast_available", None)
    if available is None:  # pragma: no cover - torch < 2.4
        return device_type in ("cpu", "cuda", "xpu", "mps", "hpu", "xla")
    return bool(available(device_type))


def _autocast_off(device_type: str) -> Any:
    """``torch.autocast(device_type, enabled=False)``, or a no-op context for devices autocast
    does not know (meta tensors: shapes and dtypes only, as torch functions give)."""
    if _autocast_available(device_type):
        return torch.autocast(device_type=device_type, enabled=False)
    return contextlib.nullcontext()


def _autocast_enabled(device_type: str) -> bool:
    if not _autocast_available(device_type):
        return False
    try:
        return bool(torch.is_autocast_enabled(device_type))
    except TypeError:  # pragma: no cover - torch < 2.4 signature
        if device_type == "cpu":
            return bool(torch.is_autocast_cpu_enabled())
        return bool(torch.is_autocast_enabled())


def _cast_param(p: ParamLike, dtype: torch.dtype, device: torch.device) -> ParamLike:
    if isinstance(p, Tensor):
        return p.to(device=device, dtype=dtype) if p.dtype != dtype or p.device != device else p
    return p


def _prepare(x: Tensor, alpha: ParamLike, beta: ParamLike,
             target: Tensor | None = None) -> tuple[Tensor, Tensor | None, ParamLike, ParamLike,
                                                     torch.dtype]:
    """Common dtype handling: type promotion like torch, half types in float32, autocast to
    float32 (as torch does for its regression losses).  Returns the cast tensors and the dtype
    of the result."""
    dtype = x.dtype
    for p in (target, alpha, beta):
        if isinstance(p, Tensor):
            dtype = torch.promote_types(dtype, p.dtype)
    if _autocast_enabled(x.device.type):
        dtype = torch.promote_types(dtype, torch.float32)
    work = _opmath(dtype)
    x = x.to(work) if x.dtype != work else x
    if target is not None and target.dtype != work:
        target = target.to(work)
    return x, target, _cast_param(alpha, work, x.device), _cast_param(beta, work, x.device), dtype


# ---------------------------------------------------------------------------------------------
# Elementwise kernels (no autograd): value, derivative and parameter derivatives of D.
# ---------------------------------------------------------------------------------------------


def _effective_scalar(p: float, dtype: torch.dtype) -> float:
    """A positive Python-number scale as the working dtype sees it: 0 below its smallest
    subnormal (the limit ``p -> 0``), else unchanged."""
    if 0 < p < torch.finfo(dtype).smallest_normal and float(torch.tensor(p, dtype=dtype)) == 0:
        return 0.0
    return p


def _recip_fits(p: float, dtype: torch.dtype) -> bool:
    """Whether 1/p of a positive number is finite in ``dtype`` (multiplying by the reciprocal
    is then safe; subnormal ``p`` need a division)."""
    return p * torch.finfo(dtype).max >= 1.0


def _recip_normal(p: float, dtype: torch.dtype) -> bool:
    """Whether 1/p of a positive number is a finite normal number in ``dtype``."""
    fi = torch.finfo(dtype)
    inv = 1.0 / p
    return fi.smallest_normal <= inv <= fi.max


def _div(t: Tensor, p: ParamLike) -> Tensor:
    """t / p for a positive scale: a multiplication by the reciprocal where that is a normal
    number in t's dtype (the fast path, as before), a true division for tensors, and
    :func:`_div_tiny` for extreme numbers (where 1/p overflows or underflows, and 0 * inf or
    inf * 0 would give NaN)."""
    if isinstance(p, Tensor):
        return t / p
    if _recip_normal(p, t.dtype):
        return t * (1.0 / p)
    return _div_tiny(t, p)


def _div_tiny(t: Tensor, p: float) -> Tensor:
    """t / p for a positive number that is extreme for t's dtype: divided in float64, where p
    is exact (float32 may round it to 0 or inf), and exactly 0 at t = 0, also in the gradient
    (where 0 * inf would be NaN)."""
    zero = t == 0
    t_safe = torch.where(zero, torch.ones_like(t), t)
    q = t_safe / p if t.dtype == torch.float64 else (t_safe.double() / p).to(t.dtype)
    return torch.where(zero, t * 0, q)


def _neg_u(a: Tensor, alpha: ParamLike) -> Tensor:
    """-u = -|x|/alpha, with the L1 limit alpha = 0 giving -inf (and 0 at x = 0)."""
    if isinstance(alpha, Tensor):
        nu = a / -alpha
        # alpha = 0 and x = 0: the L1 limit, u -> 0 (not 0/0)
        return torch.where(a == 0, torch.zeros((), dtype=a.dtype, device=a.device), nu)
    alpha = _effective_scalar(alpha, a.dtype)
    if alpha == 0:
        nu = torch.where(a == 0, 0.0, -math.inf).to(a.dtype)
        return torch.where(torch.isnan(a), a, nu)  # keeps NaN of a (and inf stays -inf)
    if not _recip_normal(alpha, a.dtype):  # 1/alpha over- or underflows: 0 * inf = NaN
        return -_div_tiny(a, alpha)
    return a * (-1.0 / alpha)


def _kernel(x: Tensor, alpha: ParamLike, beta: ParamLike, *, value: bool, deriv: bool,
            dalpha: bool = False) -> dict[str, Tensor]:
    """Evaluate D (eq. 16), dD/dx (Appendix B) and dD/dalpha on a tensor, without autograd.

    Keys of the result: ``"value"``, ``"deriv"``, ``"dalpha"`` (the last two already divided by
    beta).  dD/dbeta = -D/beta is left to the caller.  With nu = -u, phi(u) = sum_k nu^k/(k+2)!
    has positive coefficients; q = nu phi(u) = -g(u)/u.
    """
    t, coeffs = _PHI[x.dtype]
    a = x.abs()
    nu = _neg_u(a, alpha)
    small = nu > -t
    e = torch.exp(nu)
    q = nu * _horner(nu, coeffs)  # -g(u)/u on [0, t)
    out: dict[str, Tensor] = {}
    if value:
        ab = _div(a, beta)  # |x|/beta first: no spurious underflow of intermediate products
        tensors = isinstance(alpha, Tensor) or isinstance(beta, Tensor)
        if not tensors and _moderate(alpha, beta, x.dtype):
            out["value"] = torch.where(small, -(ab * q), ab - (alpha / beta) * (1.0 - e))
        else:
            # Extreme or tensor scales (subnormal, infinite, alpha/beta overflowing): the same
            # formulas, written so that no 0 * inf or inf - inf appears.  alpha = inf or
            # beta = inf give the limit 0; an overflowing alpha/beta gives inf.
            ratio = alpha / beta
            if tensors:
                ratio_ok = torch.isfinite(ratio)
                large = torch.where(ratio_ok, ab - ratio * (1.0 - e), ratio * ((-nu - 1.0) + e))
            elif math.isfinite(ratio) and ratio <= torch.finfo(x.dtype).max:
                large = ab - ratio * (1.0 - e)
            else:
                large = ratio * ((-nu - 1.0) + e)
            val_small = torch.where(q == 0, torch.zeros_like(q), -(ab * q))
            out["value"] = torch.where(small, val_small, large)
    if deriv:
        d = torch.where(small, -nu * (1.0 + q), 1.0 - e)  # 1 - e^{-u} = u (1 - u phi(u))
        out["deriv"] = _div(torch.copysign(d, x), beta)
    if dalpha:
        # dD/dalpha = -(1 - (1 + u) e^{-u}) / beta; below u = 2 via g, without cancellation.
        u = -nu
        g = torch.where(small, nu * q, (u - 1.0) + e)
        ue = torch.where(u < 1e4, u * e, torch.zeros((), dtype=u.dtype, device=u.device))
        h = torch.where(u < 2.0, u * u - (1.0 + u) * g, (1.0 - e) - ue)
        out["dalpha"] = _div(-h, beta)
    return out


def _sum_to(grad: Tensor, like: ParamLike) -> Tensor | None:
    if not isinstance(like, Tensor):
        return None
    if grad.shape != like.shape:
        grad = grad.sum_to_size(like.shape) if like.dim() > 0 else grad.sum()
    return grad.to(like.dtype)


def _scalar_param(p: ParamLike) -> bool:
    return not isinstance(p, Tensor) or p.numel() == 1


def _use_chunks(x: Tensor, alpha: ParamLike, beta: ParamLike) -> bool:
    return (x.device.type == "cpu" and x.numel() >= _CHUNK_MIN and _scalar_param(alpha)
            and _scalar_param(beta) and type(x) is Tensor and not _is_compiling()
            and not _is_transformed(x))


# ---------------------------------------------------------------------------------------------
# The autograd Function: D on (input - target) with optional reduction
# ---------------------------------------------------------------------------------------------


def _diff(input: Tensor, target: Tensor | None) -> Tensor:
    return input if target is None else input - target


class _Chunked:
    """Eager CPU evaluation of D and D' in cache-sized chunks with preallocated buffers.

    Branch-free form of the two-branch formula (``torch.where`` is slow on CPU): with
    ``uc = min(u, t)`` and ``q(uc) = uc phi(uc)``,

    * ``alpha g(u) = alpha uc q(uc) + alpha [(u - uc) + (min(e^{-u}, e^{-t}) - e^{-t})]``,
    * ``g'(u) = uc (1 - q(uc)) + (max(e^{-u}, e^{-t}) - e^{-u})``;

    the bracketed corrections are exactly 0 for ``u <= t`` and free of cancellation above.
    Chunks are smaller than torch's parallel grain size, so each operation runs on one core
    without OpenMP hand-offs; ``_MAX_WORKERS`` Python threads (default 1) share the chunks.
    """

    def __init__(self, dtype: torch.dtype, alpha: float, beta: float) -> None:
        t, coeffs = _PHI[dtype]  # powers of nu = -u
        L = _LOG2E
        # Work with m = -u log2(e), so that e^{-u} = exp2(m) (see _common).
        self.mt = -t * L
        self.et = 2.0 ** self.mt  # e^{-t}
        self.alpha, self.beta = alpha, beta
        self.m_scale = -L / alpha
        self.coeffs = [torch.tensor(c / L**k, dtype=dtype) for k, c in enumerate(coeffs)]
        self.zero = torch.zeros((), dtype=dtype)
        self.dtype = dtype

    def _buffers(self) -> list[Tensor]:
        return [torch.empty(_CHUNK, dtype=self.dtype) for _ in range(6)]

    def _common(self, buf: list[Tensor], xi: Tensor, ti: Tensor | None) -> tuple[Tensor, ...]:
        """Fills X = x, M = -u L, MC = -min(u, t) L, F = min(e^{-u}, e^{-t}) - e^{-t} and
        Q = -q(uc) L with L = log2(e) and q(uc) = uc phi(uc) = g(uc)/uc."""
        k = xi.numel()
        X, M, MC, F, Q = buf[:5] if k == _CHUNK else (b[:k] for b in buf[:5])
        if ti is not None:
            torch.sub(xi, ti, out=X)
        else:
            X = xi
        torch.abs(X, out=M)
        M.mul_(self.m_scale)
        # e^{-u} as exp2: torch's exp parallelises even chunks this small (MKL-VML path, grain
        # 2048), whose OpenMP wake-ups cost more than the work; exp2 stays on the thread.
        torch.exp2(M, out=F)
        F.sub_(self.et).clamp_(max=0.0)  # exactly 0 for u <= t
        torch.clamp(M, min=self.mt, out=MC)
        cs = self.coeffs
        torch.add(cs[-2], MC, alpha=float(cs[-1]), out=Q)
        for c in reversed(cs[:-2]):
            torch.addcmul(c, Q, MC, out=Q)
        Q.mul_(MC)
        return X, M, MC, F, Q

    # With these, exactly (all corrections vanish for u <= t):
    #   D    = (alpha/beta) g(u) = (alpha/beta) [MC Q / L^2 + ((MC - M) + L F) / L]
    #   D'   = sign(x) g'(u) / beta,   -L g'(u) = MC + MC Q / L + L F

    def value(self, buf: list[Tensor], xi: Tensor, ti: Tensor | None,
              out: Tensor | None) -> tuple[Tensor, float]:
        """Returns (V, s) with D = s * V (V written into ``out`` if given)."""
        X, M, MC, F, Q = self._common(buf, xi, ti)
        k = xi.numel()
        S = buf[5] if k == _CHUNK else buf[5][:k]
        return self._value_from(S, M, MC, F, Q, out)

    def _value_from(self, S: Tensor, M: Tensor, MC: Tensor, F: Tensor, Q: Tensor,
                    out: Tensor | None) -> tuple[Tensor, float]:
        L = _LOG2E
        ab = self.alpha / self.beta
        torch.sub(MC, M, out=S)
        S.add_(F, alpha=L).mul_(ab / L)
        # scale MC before the product MC Q (~u^2), which could underflow where D does not
        MC.mul_(ab / L**2)
        return torch.addcmul(S, MC, Q, out=S if out is None else out), 1.0

    def deriv(self, buf: list[Tensor], xi: Tensor, ti: Tensor | None, scale: float,
              out: Tensor, grad: Tensor | None = None) -> None:
        """out = scale * beta * D'(x) (times ``grad`` if given)."""
        X, M, MC, F, Q = self._common(buf, xi, ti)
        T = Q  # reused
        torch.addcmul(MC, MC, Q, value=1.0 / _LOG2E, out=T)
        T.add_(F, alpha=_LOG2E)  # -L g'(u)
        torch.sign(X, out=M)
        if grad is None:
            torch.addcmul(self.zero, T, M, value=-scale / _LOG2E, out=out)
        else:
            T.mul_(M)
            torch.mul(T, grad, out=out).mul_(-scale / _LOG2E)

    def value_deriv(self, buf: list[Tensor], xi: Tensor, ti: Tensor | None,
                    out: Tensor | None, dout: Tensor) -> tuple[Tensor, float]:
        """Value as in :meth:`value` and D' (into ``dout``) in one pass."""
        X, M, MC, F, Q = self._common(buf, xi, ti)
        k = xi.numel()
        S = buf[5] if k == _CHUNK else buf[5][:k]
        torch.addcmul(MC, MC, Q, value=1.0 / _LOG2E, out=dout)
        dout.add_(F, alpha=_LOG2E)  # -L g'(u)
        torch.sign(X, out=S)
        torch.addcmul(self.zero, dout, S, value=-1.0 / (_LOG2E * self.beta), out=dout)
        return self._value_from(S, M, MC, F, Q, out)


_LOG2E = 1.0 / math.log(2.0)
_POOL: Any = None
_POOL_PID = -1
#: Python threads sharing the chunks.  Measured on 2 shared cores, one thread is fastest (the
#: GIL serialises the short operations); more may pay off on large idle machines.
_MAX_WORKERS = 1


def _run_chunks(n: int, work: Callable[[list[Tensor], slice], Any],
                make_buffers: Callable[[], list[Tensor]]) -> list[Any]:
    """Apply ``work(buffers, slice)`` to all chunks of ``range(n)``, on up to
    ``torch.get_num_threads()`` threads, each with its own buffers.  Returns the results in
    chunk order."""
    global _POOL, _POOL_PID
    starts = list(range(0, n, _CHUNK))
    workers = max(1, min(torch.get_num_threads(), _MAX_WORKERS, len(starts)))
    if workers == 1:
        buf = make_buffers()
        return [work(buf, slice(s, s + _CHUNK)) for s in starts]
    if _POOL is None or _POOL_PID != os.getpid() or _POOL._max_workers < workers:
        # (re)create after a fork: the threads of a parent's pool do not exist in the child
        from concurrent.futures import ThreadPoolExecutor

        _POOL = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="klhuber")
        _POOL_PID = os.getpid()
    parts = [starts[w::workers] for w in range(workers)]
    inference = torch.is_inference_mode_enabled()

    def job(my_starts: list[int]) -> list[tuple[int, Any]]:
        # grad mode and inference mode are thread-local: mirror the caller's
        with torch.inference_mode(inference), torch.no_grad():
            buf = make_buffers()
            return [(s, work(buf, slice(s, s + _CHUNK))) for s in my_starts]

    futures = [_POOL.submit(job, p) for p in parts]
    results = dict(kv for fut in futures for kv in fut.result())
    return [results[s] for s in starts]


def _moderate(alpha: float, beta: float, dtype: torch.dtype) -> bool:
    """Scales for which the chunked kernel's products (1/alpha, alpha/beta, 1/beta) are finite
    and normal in ``dtype``; the rest (subnormal, infinite, extreme ratios) take ``_kernel``."""
    fi = torch.finfo(dtype)
    lo, hi = 16 * fi.smallest_normal, fi.max / 16
    ratio = alpha / beta if beta > 0 else math.inf
    return (lo <= alpha <= hi and lo <= beta <= hi and 1 / alpha <= hi and 1 / beta <= hi
            and lo <= ratio <= hi)


def _chunkable(input: Tensor, alpha: ParamLike, beta: ParamLike) -> bool:
    return (_use_chunks(input, alpha, beta) and input.is_contiguous()
            and float(alpha) > 0 and input.dtype in _PHI_U
            and _moderate(float(alpha), float(beta), input.dtype))


def _forward_eval(input: Tensor, target: Tensor | None, alpha: ParamLike, beta: ParamLike,
                  reduction: str, want_d: bool = False) -> tuple[Tensor, Tensor]:
    """The loss and, on the chunked CPU path when ``want_d``, D'(input - target) for backward
    (else an empty tensor)."""
    no_d = input.new_empty(0)
    if not _chunkable(input, alpha, beta) or (target is not None and not target.is_contiguous()):
        val = _kernel(_diff(input, target), alpha, beta, value=True, deriv=False)["value"]
        if reduction == "none":
            return val, no_d
        return (val.sum() if reduction == "sum" else val.mean()), no_d
    eng = _Chunked(input.dtype, float(alpha), float(beta))
    flat_in = input.view(-1)
    flat_t = None if target is None else target.view(-1)
    n = flat_in.numel()
    out = torch.empty(n, dtype=input.dtype) if reduction == "none" else None
    d = torch.empty(n, dtype=input.dtype) if want_d else None

    def work(buf: list[Tensor], sl: slice) -> float:
        xi, ti = flat_in[sl], None if flat_t is None else flat_t[sl]
        o = None if out is None else out[sl]
        v, scale = (eng.value(buf, xi, ti, o) if d is None
                    else eng.value_deriv(buf, xi, ti, o, d[sl]))
        return 0.0 if out is not None else float(v.sum()) * scale  # chunk sums in float64

    parts = _run_chunks(n, work, eng._buffers)
    d_out = no_d if d is None else d.view(input.shape)
    if out is not None:
        return out.view(input.shape), d_out
    total = torch.tensor(math.fsum(parts), dtype=input.dtype)
    return (total if reduction == "sum" else total / n), d_out


class _KLHuberFnBase(torch.autograd.Function):
    """D_{alpha,beta}(input - target) (eq. 16) with an analytic backward (Appendix B)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(input: Tensor, target: Tensor | None, alpha: ParamLike, beta: ParamLike,
                reduction: str, want_d: bool) -> tuple[Tensor, Tensor]:
        # Second output: D' for backward when the eager chunked CPU path computed it in the
        # same pass (one input-sized tensor), else empty; internal, never differentiated.
        return _forward_eval(input, target, alpha, beta, reduction, want_d)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[Tensor, Tensor]) -> None:
        input, target, alpha, beta, reduction, _ = inputs
        # (output[1] is not marked non-differentiable: functorch's jvp wrapper miscounts the
        # tangents of such outputs.  It is dropped by _apply_loss and receives no gradient.)
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
            gx, ga, gb = _backward_differentiable(input, target, alpha, beta, grad,
                                                  need_x, need_a, need_b)
        elif d.numel() > 0 and not (need_a or need_b):  # D' saved by the forward
            gx = (d * float(grad)) if ctx.reduction != "none" else d * grad
            ga = gb = None
        else:
            gx, ga, gb = _backward_eval(input, target, alpha, beta, grad, ctx.reduction,
                                        need_x, need_a, need_b)
        g_in = gx if ctx.needs_input_grad[0] else None
        g_t = (-gx if gx is not None else None) if (ctx.has_target and ctx.needs_input_grad[1]) \
            else None
        return g_in, g_t, ga, gb, None, None


def _apply_loss(input: Tensor, target: Tensor | None, alpha: ParamLike, beta: ParamLike,
                reduction: str, want_d: bool = False) -> Tensor:
    return _loss_fn().apply(input, target, alpha, beta, reduction, want_d)[0]


def _backward_eval(input: Tensor, target: Tensor | None, alpha: ParamLike, beta: ParamLike,
                   grad: Tensor, reduction: str, need_x: bool, need_a: bool,
                   need_b: bool) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
    """First-order backward, no graph: recompute D' (and the parameter derivatives)."""
    reduced = reduction != "none"
    fast = (need_x and not (need_a or need_b) and _chunkable(input, alpha, beta)
            and (target is None or target.is_contiguous()))
    if not fast:
        x = _diff(input, target)
        k = _kernel(x, alpha, beta, value=need_b, deriv=need_x, dalpha=need_a)
        gx = grad * k["deriv"] if need_x else None
        ga = _sum_to(grad * k["dalpha"], alpha) if need_a else None
        gb = _sum_to(-grad * k["value"] / beta, beta) if need_b else None
        return gx, ga, gb
    eng = _Chunked(input.dtype, float(alpha), float(beta))
    flat_in = input.view(-1)
    flat_t = None if target is None else target.view(-1)
    n = flat_in.numel()
    gx = torch.empty(n, dtype=input.dtype)
    if reduced:
        scale, flat_g = float(grad) / float(beta), None
    else:
        scale = 1.0 / float(beta)
        flat_g = grad.to(input.dtype).expand(input.shape).reshape(-1)

    def work(buf: list[Tensor], sl: slice) -> None:
        eng.deriv(buf, flat_in[sl], None if flat_t is None else flat_t[sl], scale, gx[sl],
                  None if flat_g is None else flat_g[sl])

    _run_chunks(n, work, eng._buffers)
    return gx.view(input.shape), None, None


def _backward_differentiable(input: Tensor, target: Tensor | None, alpha: ParamLike,
                             beta: ParamLike, grad: Tensor, need_x: bool, need_a: bool,
                             need_b: bool) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
    """Backward with a graph (double backward): built from differentiable pieces."""
    x = _diff(input, target)
    gx = grad * _deriv_fn().apply(x, alpha, beta) if need_x else None
    ga = gb = None
    if need_a:
        ga = _sum_to(grad * _dalpha_plain(x, alpha, beta), alpha)
    if need_b:
        gb = _sum_to(-grad * _apply_loss(x, None, alpha, beta, "none") / beta, beta)
    return gx, ga, gb


class _KLHuberDerivFnBase(torch.autograd.Function):
    """dD/dx = sign(x)(1 - e^{-|x|/alpha})/beta (Appendix B) with its analytic derivative
    d2D/dx2 = e^{-|x|/alpha}/(alpha beta)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x: Tensor, alpha: ParamLike, beta: ParamLike) -> Tensor:
        return _kernel(x, alpha, beta, value=False, deriv=True)["deriv"]

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
            gx = grad * _second_derivative_plain(x, alpha, beta)
        if ctx.alpha_t and ctx.needs_input_grad[1]:
            ga = _sum_to(grad * _deriv_dalpha_plain(x, alpha, beta), alpha)
        if ctx.beta_t and ctx.needs_input_grad[2]:
            gb = _sum_to(-grad * _deriv_fn().apply(x, alpha, beta) / beta, beta)
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
        x = _diff(input, target)
        tangent = torch.zeros_like(x)
        if t_input is not None or t_target is not None:
            dx = t_input if t_target is None else (t_target.neg() if t_input is None
                                                   else t_input - t_target)
            tangent = tangent + _KLHuberDerivFn.apply(x, alpha, beta) * dx
        if need_a:
            tangent = tangent + _dalpha_plain(x, alpha, beta) * t_alpha
        if need_b:
            tangent = tangent - _apply_loss(x, None, alpha, beta, "none") / beta * t_beta
        return _reduce(tangent, ctx.reduction), torch.zeros_like(d)


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
            tangent = tangent + _second_derivative_plain(x, alpha, beta) * t_x
        if ctx.alpha_t and t_alpha is not None:
            tangent = tangent + _deriv_dalpha_plain(x, alpha, beta) * t_alpha
        if ctx.beta_t and t_beta is not None:
            tangent = tangent - _KLHuberDerivFn.apply(x, alpha, beta) / beta * t_beta
        return tangent



def _loss_fn() -> type[_KLHuberFnBase]:
    return _KLHuberFnBase if _is_compiling() else _KLHuberFn


def _deriv_fn() -> type[_KLHuberDerivFnBase]:
    return _KLHuberDerivFnBase if _is_compiling() else _KLHuberDerivFn


def _deriv_dalpha_plain(x: Tensor, alpha: Tensor, beta: ParamLike) -> Tensor:
    """d/dalpha of D'(x) = sign(x)(1 - e^{-u})/beta: -sign(x) u e^{-u} / (alpha beta)."""
    u = -_neg_u(x.abs(), alpha)
    ue = torch.where(u < 1e4, u * torch.exp(-u), torch.zeros_like(u))
    term = torch.where(alpha > 0, ue / torch.where(alpha > 0, alpha, torch.ones_like(alpha)),
                       torch.zeros_like(u))
    return _div(-torch.sign(x) * term, beta)


def _second_derivative_plain(x: Tensor, alpha: ParamLike, beta: ParamLike) -> Tensor:
    """d2D/dx2 = e^{-|x|/alpha}/(alpha beta) (Appendix B); the L1 limit alpha = 0 gives 0 for
    x != 0 and +inf at x = 0."""
    a = x.abs()
    if not isinstance(beta, Tensor) and math.isinf(beta):  # the limit beta -> inf: 0
        return torch.where(torch.isnan(a), a, torch.zeros_like(a))
    if isinstance(alpha, Tensor):
        pos = alpha > 0
        safe = torch.where(pos, alpha, torch.ones_like(alpha))
        val = _div(torch.exp(-a / safe) / safe, beta)
        limit = torch.where(a == 0, math.inf, 0.0).to(val.dtype)
        limit = torch.where(torch.isnan(a), a, limit)  # keeps NaN of a
        out = torch.where(pos, val, limit)
    else:
        alpha = _effective_scalar(alpha, x.dtype)
        if alpha == 0:
            val = torch.where(a == 0, math.inf, 0.0).to(x.dtype)
            return torch.where(torch.isnan(a), a, val)  # keeps NaN of a
        # (e^{-u}/alpha)/beta: 0 where e^{-u} underflows, never 0/0 or 0 * inf (subnormal
        # scales)
        out = _div(_div(torch.exp(_neg_u(a, alpha)), alpha), beta)
    if isinstance(beta, Tensor):
        out = torch.where(torch.isinf(beta) & ~torch.isnan(a), torch.zeros_like(out), out)
    return out


def _dalpha_plain(x: Tensor, alpha: ParamLike, beta: ParamLike) -> Tensor:
    """dD/dalpha, differentiable: -(1 - (1 + u) e^{-u})/beta."""
    u = -_neg_u(x.abs(), alpha)
    t, coeffs = _PHI[x.dtype]
    small = u < t
    us = torch.where(small, u, torch.zeros_like(u))
    g_small = us * us * _horner(-us, coeffs)
    ul = torch.where(small, torch.full_like(u, t), torch.minimum(u, torch.full_like(u, 1e4)))
    el = torch.exp(-ul)
    h_small = us * us - (1.0 + us) * g_small
    h_large = (1.0 - el) - ul * el
    return _div(-torch.where(small, h_small, h_large), beta)


# ---------------------------------------------------------------------------------------------
# Plain (autograd-differentiable) formulation: impl="autograd" and impl="compiled"
# ---------------------------------------------------------------------------------------------


def _div_exact(t: Tensor, p: ParamLike) -> Tensor:
    """t / p; for a positive Python number that rounds to 0 in t's dtype, the limit (0 at
    t = 0, +-inf elsewhere) instead of 0/0."""
    if isinstance(p, Tensor):  # exactly 0 at t = 0, also in the gradient (subnormal p)
        return torch.where(t == 0, t * 0, t / p)
    if not _recip_normal(p, t.dtype):
        return _div_tiny(t, p)
    return t / p


def _small_branch(a: Tensor, ab: Tensor, m: Tensor, beta: ParamLike) -> Tensor:
    """:math:`(|x|/\\beta)\\,u\\varphi(u)` (``ab * m``) of the quadratic branch, also where
    ``|x|/beta`` overflows in ``a``'s dtype while ``m`` underflows (``inf * 0``): there the
    product is formed in float64 as ``|x| m / beta``.  The guard costs nothing for float64 and
    for moderate Python-number ``beta``; masked branches keep the gradient finite."""
    if a.dtype == torch.float64 or (not isinstance(beta, Tensor)
                                    and _recip_normal(beta, a.dtype)):
        return ab * m
    over = ~torch.isfinite(ab)
    v = torch.where(over, torch.zeros_like(ab), ab) * m
    b64 = beta.double() if isinstance(beta, Tensor) else beta
    y = torch.where(over, a, torch.zeros_like(a)).double() * m.double()
    return torch.where(over, (y / b64).to(a.dtype), v)


def _kl_huber_plain(x: Tensor, alpha: ParamLike, beta: ParamLike) -> Tensor:
    """Eq. 16 with plain tensor operations, safe for autograd in every branch."""
    t, coeffs = _PHI[x.dtype]
    a = x.abs()
    if not isinstance(alpha, Tensor):
        alpha = _effective_scalar(alpha, x.dtype)
        if alpha == 0:
            return _div_exact(a, beta)
    if isinstance(alpha, Tensor):
        pos = alpha > 0
        safe_alpha = torch.where(pos, alpha, torch.ones_like(alpha))
    else:
        pos, safe_alpha = None, alpha
    u = a / safe_alpha
    small = u < t
    us = torch.where(small, u, torch.zeros_like(u))
    ul = torch.where(small, torch.full_like(u, t), u)
    ab = _div_exact(a, beta)
    m = us * _horner(-us, coeffs)
    val_small = _small_branch(a, ab, m, beta)  # alpha u^2 phi(u) / beta
    tensors = isinstance(alpha, Tensor) or isinstance(beta, Tensor)
    if tensors:
        ratio = safe_alpha / beta
        ok = torch.isfinite(ratio)
        val_large = torch.where(ok, ab + ratio * torch.expm1(-ul), ratio * (ul + torch.expm1(-ul)))
        # alpha = inf (u = 0) with an overflowing |x|/beta: 0, not inf * 0 (nor in the grad)
        ab_s = torch.where(us == 0, torch.zeros_like(ab), ab)
        val_small = _small_branch(a, ab_s, m, beta)
    elif _moderate(alpha, beta, x.dtype):
        val_large = ab + (safe_alpha / beta) * torch.expm1(-ul)
    else:  # extreme scalars: no inf - inf, no 0 * inf; alpha = inf gives the limit 0
        ratio = alpha / beta
        if ratio <= torch.finfo(x.dtype).max:
            val_large = ab + ratio * torch.expm1(-ul)
        else:  # (alpha/beta) g(u), inf where alpha/beta overflows
            val_large = ratio * (ul + torch.expm1(-ul))
        # alpha = inf (u = 0) with an overflowing |x|/beta: 0, not inf * 0 (nor in the grad)
        ab_s = torch.where(us == 0, torch.zeros_like(ab), ab)
        val_small = _small_branch(a, ab_s, m, beta)
    val = torch.where(small, val_small, val_large)
    if pos is not None:
        val = torch.where(pos, val, ab)
    return val


def _reduce(val: Tensor, reduction: str) -> Tensor:
    """``reduction`` as torch does it: 'none', 'sum', or 'mean' (NaN for an empty input)."""
    if reduction == "none":
        return val
    if reduction == "sum":
        return val.sum()
    if reduction == "mean":
        return val.mean()
    raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")


def _loss_plain(input: Tensor, target: Tensor | None, alpha: ParamLike, beta: ParamLike,
                reduction: str) -> Tensor:
    return _reduce(_kl_huber_plain(_diff(input, target), alpha, beta), reduction)


@functools.cache
def _compiled(reduction: str) -> Callable[..., Tensor]:
    """torch.compile (dynamic shapes: one compilation for all sizes) of the custom Function,
    for the inputs the fused path does not take (tensor or extreme scales): inductor fuses
    the forward (with its reduction) into one kernel and the analytic backward, which
    recomputes D' from the inputs, into another.  First derivatives only."""

    def fn(input: Tensor, target: Tensor | None, alpha: ParamLike, beta: ParamLike) -> Tensor:
        return _apply_loss(input, target, alpha, beta, reduction)

    return torch.compile(fn, dynamic=True)


# ---------------------------------------------------------------------------------------------
# The fused path: one fused forward (D and D' in one pass), backward D' * grad
# ---------------------------------------------------------------------------------------------

_FUSED_DTYPES = (torch.float32, torch.float64)


@functools.lru_cache(maxsize=1024)
def _fused_scales(alpha: float, beta: float, dtype: torch.dtype) -> bool:
    """Python-number scales the fused kernels take: alpha > 0 and 1/alpha, 1/beta, alpha/beta
    normal numbers of ``dtype`` (cached: the check runs once per pair of scales)."""
    return alpha > 0 and _moderate(alpha, beta, dtype)


def _forward_ad_active() -> bool:
    """Whether a :func:`torch.autograd.forward_ad.dual_level` is open (dual tensors may flow)."""
    return getattr(torch.autograd.forward_ad, "_current_level", -1) >= 0


def _plain(t: Tensor) -> bool:
    return type(t) is Tensor or type(t) is nn.Parameter


def _fused_kind(input: Tensor, target: Tensor | None, alpha: ParamLike, beta: ParamLike,
                impl: str) -> str | None:
    """The fused forward that serves this call, or None for the general path.

    ``"kernel"`` (the C++ kernel: CPU), ``"compiled"`` (torch.compile with dynamic shapes:
    CUDA, or CPU with ``impl="compiled"``), ``"eager"`` (the same formulas as ~15 eager
    operations) or None: tensor scales, extreme scalars, dtypes other than float32/float64
    (half types come back here after their cast), tensor subclasses, tracing, torch.func
    transforms and forward-mode AD take the general path, which supports all of them.
    """
    if type(alpha) is not float or type(beta) is not float:
        if isinstance(alpha, Tensor) or isinstance(beta, Tensor):
            return None
        alpha, beta = float(alpha), float(beta)
    dtype = input.dtype
    if (dtype not in _FUSED_DTYPES or not _plain(input) or _is_compiling()
            or _forward_ad_active() or _is_transformed(input)):
        return None
    cpu = input.is_cpu
    if target is not None:
        if target.dtype != dtype or not _plain(target) or _is_transformed(target):
            return None
        if (not target.is_cpu) if cpu else (target.device != input.device):
            return None
    if not _fused_scales(alpha, beta, dtype):
        return None
    if cpu:
        if impl == "compiled":
            return "compiled"
        if _fused.cpu_kernel() is not None:
            return "kernel"
        if impl == "fused":
            return "compiled" if _fused.compile_available(input.device) else "eager"
        # no compiler: the eager fused formulas beat the general path's two kernels on small
        # tensors; large ones keep the chunked kernel
        return "eager" if input.numel() < _CHUNK_MIN else None
    device = input.device
    if device.type == "meta":
        return None
    if impl in ("fused", "compiled") or device.type == "cuda":
        if _fused.compile_available(device):
            return "compiled"
        return "eager" if impl == "fused" else None
    return None


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
            gx = _backward_differentiable(input, target, alpha, beta, grad, True, False,
                                          False)[0]
        else:
            gx = d * grad
        g_t = -gx if ctx.needs_input_grad[1] else None
        return (gx if ctx.needs_input_grad[0] else None), g_t, None, None, None, None


def _run_fused(kind: str, input: Tensor, target: Tensor | None, alpha: float, beta: float,
               reduction: str) -> Tensor:
    if torch.is_grad_enabled() and (input.requires_grad
                                    or (target is not None and target.requires_grad)):
        return _FusedFn.apply(input, target, alpha, beta, reduction, kind)
    with torch.no_grad():  # one compiled graph for inference, whatever the grad mode
        return _fused_forward(kind, input, target, alpha, beta, reduction, False)[0]


def _dispatch(input: Tensor, target: Tensor | None, alpha: ParamLike, beta: ParamLike,
              reduction: str, impl: str) -> Tensor:
    if impl != "autograd":
        # float32/float64 with Python-number scales: neither promotion nor autocast changes
        # the dtype, so the fused path needs none of _prepare's work
        kind = _fused_kind(input, target, alpha, beta, impl)
        if kind is not None:
            return _run_fused(kind, input, target, alpha, beta, reduction)
    input, target, alpha, beta, out_dtype = _prepare(input, alpha, beta, target)
    if input.dtype not in _PHI:  # pragma: no cover - _prepare guarantees f32/f64
        raise TypeError(f"unsupported dtype {input.dtype}")
    with _autocast_off(input.device.type):
        kind = None if impl == "autograd" else _fused_kind(input, target, alpha, beta, impl)
        if kind is not None:  # half types, computed in float32
            out = _run_fused(kind, input, target, alpha, beta, reduction)
        elif impl in ("default", "fused"):
            want_d = (torch.is_grad_enabled()
                      and (input.requires_grad or (target is not None and target.requires_grad))
                      and not any(isinstance(p, Tensor) and p.requires_grad
                                  for p in (alpha, beta)))
            out = _apply_loss(input, target, alpha, beta, reduction, want_d)
        elif impl == "autograd":
            out = _loss_plain(input, target, alpha, beta, reduction)
        else:
            out = _compiled(reduction)(input, target, alpha, beta)
    if out.dtype != out_dtype and out_dtype in (torch.float16, torch.bfloat16):
        out = out.to(out_dtype)
    return out


# ---------------------------------------------------------------------------------------------
# Public functional API
# ---------------------------------------------------------------------------------------------


def huber(x: Tensor, alpha: ParamLike) -> Tensor:
    r"""The Huber loss :math:`H_\alpha(x)` of eq. 4, elementwise.

    .. math:: H_\alpha(x) = \tfrac12 x^2 \text{ if } |x| \le \alpha, \quad
              \alpha(|x| - \tfrac12\alpha) \text{ otherwise.}

    Equal to ``torch.nn.functional.huber_loss(x, 0, delta=alpha, reduction="none")`` (bit for
    bit).  ``alpha`` (> 0) is a number or a tensor broadcastable to ``x``; gradients with
    respect to a tensor ``alpha`` are :math:`|x| - \alpha` in the linear part and 0 elsewhere.
    """
    x = _check_input(x, "x")
    alpha = _check_param(alpha, "alpha", x, allow_zero=False)
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
    :math:`D_{\beta/2,1}` (the reading of seed 002's "why β = 1?").
    """
    x = _check_input(x, "x")
    beta = _check_param(beta, "beta", x, allow_zero=True)
    if not isinstance(beta, Tensor):
        return torch.nn.functional.smooth_l1_loss(x, torch.zeros_like(x), reduction="none",
                                                  beta=beta)
    z = x.abs()
    safe = torch.where(beta > 0, beta, torch.ones_like(beta))
    return torch.where(z < beta, 0.5 * z * z / safe, z - 0.5 * beta)


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
        (:func:`torch.compile` with dynamic shapes) or ``"autograd"`` (plain tensor
        operations); see the module's "Implementations".
    """
    x = _check_input(x, "x")
    alpha = _check_param(alpha, "alpha", x, allow_zero=True)
    beta = _check_param(beta, "beta", x, allow_zero=False)
    _check_impl(impl)
    return _dispatch(x, None, alpha, beta, "none", impl)


def kl_huber_derivative(x: Tensor, alpha: ParamLike, beta: ParamLike = 1.0,
                        order: int = 1) -> Tensor:
    r"""Analytic derivatives of :math:`D_{\alpha,\beta}` (Appendix B, eq. 43–59).

    ``order=1``: :math:`D'(x) = \operatorname{sign}(x)\,(1 - e^{-|x|/\alpha})/\beta`, computed
    as :math:`-\operatorname{expm1}(-u)` without cancellation.  ``order=2``:
    :math:`D''(x) = e^{-|x|/\alpha}/(\alpha\beta)`, continuous at 0 with
    :math:`D''(0) = 1/(\alpha\beta)` (Claim 1).  For ``alpha = 0`` (the L1 limit) ``order=2``
    is 0 for :math:`x \ne 0` and ``inf`` at 0.  Both are differentiable with autograd.
    """
    x = _check_input(x, "x")
    alpha = _check_param(alpha, "alpha", x, allow_zero=True)
    beta = _check_param(beta, "beta", x, allow_zero=False)
    if order not in (1, 2):
        raise ValueError(f"order must be 1 or 2, got {order!r}")
    xw, _, a_, b_, out_dtype = _prepare(x, alpha, beta)
    with _autocast_off(x.device.type):
        if order == 1:
            out = _deriv_fn().apply(xw, a_, b_)
        else:
            out = _second_derivative_plain(xw, a_, b_)
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
    d = _dispatch(lp - lq, None, sp, sq, "none", "default")
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
    x = _check_input(x, "x")
    alpha = _check_param(alpha, "alpha", x, allow_zero=False)
    work = _opmath(x.dtype)
    if not isinstance(alpha, Tensor) and _moderate(alpha, alpha * alpha, work):
        inv = 1.0 / alpha
        return kl_huber(x, alpha, inv), kl_huber(x, alpha / 2, inv)
    return _huber_bounds_direct(x, alpha)


def _huber_bounds_direct(x: Tensor, alpha: ParamLike) -> tuple[Tensor, Tensor]:
    r"""Eq. 20 written in :math:`u = |x|/\alpha` so that no :math:`\alpha^2` or :math:`1/\alpha`
    appears: :math:`D_{\alpha,1/\alpha} = x^2\varphi(u)` and
    :math:`D_{\alpha/2,1/\alpha} = 2x^2\varphi(2u)` below the switch point ``t`` of
    :math:`\varphi`, :math:`\alpha(|x| - \alpha(1 - e^{-u}))` and
    :math:`\alpha(|x| - \tfrac{\alpha}{2}(1 - e^{-2u}))` above.  Used for tensor ``alpha``
    and for extreme scalars (``alpha**2`` or ``1/alpha`` not finite and normal in the dtype),
    where the limits are finite: :math:`x^2/2` and :math:`x^2` as :math:`\alpha \to \infty`,
    :math:`\alpha|x|`-like as :math:`\alpha \to 0`.  Differentiable with autograd."""
    out_dtype = x.dtype
    work = _opmath(out_dtype)
    xw = x.to(work)
    t, coeffs = _PHI[work]
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
        val_small = (k * a) * (a * _horner(-us, coeffs))  # k x^2 phi(k u)
        val_large = al_safe * (a + (half * al_safe) * torch.expm1(-ul))
        results.append(torch.where(small, val_small, val_large).to(out_dtype))
    return results[0], results[1]


def huber_loss(input: Tensor, target: Tensor, alpha: ParamLike = 1.0,
               reduction: str = "mean") -> Tensor:
    r"""Huber loss :math:`H_\alpha(\text{input} - \text{target})` (eq. 4) with torch's
    ``reduction`` semantics; equals ``torch.nn.functional.huber_loss(input, target,
    delta=alpha)``."""
    input, target = _check_pair(input, target)
    _check_reduction(reduction)
    alpha = _check_param(alpha, "alpha", input, allow_zero=False)
    if not isinstance(alpha, Tensor):
        return torch.nn.functional.huber_loss(input, target, reduction=reduction, delta=alpha)
    return _reduce(huber(input - target, alpha), reduction)


def kl_huber_loss(input: Tensor, target: Tensor, alpha: ParamLike = 1.0, beta: ParamLike = 1.0,
                  reduction: str = "mean", *, impl: str = "default") -> Tensor:
    r""":math:`D_{\alpha,\beta}(\text{input} - \text{target})` (eq. 16) with torch's
    ``reduction`` (``"none"``, ``"mean"``, ``"sum"``; the mean of an empty input is ``nan``
    and its sum 0, as in torch).

    The KL-divergence reading (eq. 15): ``target`` is a noisy label with Laplace noise of scale
    ``alpha``, ``input`` a prediction with Laplace uncertainty of scale ``beta``.  See
    :func:`kl_huber` for the parameters and ``impl``.
    """
    input, target = _check_pair(input, target)
    _check_reduction(reduction)
    alpha = _check_param(alpha, "alpha", input, allow_zero=True)
    beta = _check_param(beta, "beta", input, allow_zero=False)
    _check_impl(impl)
    return _dispatch(input, target, alpha, beta, reduction, impl)


# ---------------------------------------------------------------------------------------------
# Modules
# ---------------------------------------------------------------------------------------------


class HuberLoss(nn.Module):
    r"""Module form of :func:`huber_loss` (eq. 4); like :class:`torch.nn.HuberLoss` with
    ``delta=alpha``, but ``alpha`` may be a tensor (stored as a buffer)."""

    def __init__(self, alpha: ParamLike = 1.0, reduction: str = "mean") -> None:
        super().__init__()
        self.reduction = _check_reduction(reduction)
        if isinstance(alpha, Tensor):
            self.register_buffer("alpha", alpha.detach().clone())
        else:
            _check_param(alpha, "alpha", torch.zeros(()), allow_zero=False)
            self.alpha = float(alpha)

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        """:func:`huber_loss` of ``input - target``."""
        return huber_loss(input, target, self.alpha, self.reduction)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, reduction={self.reduction!r}"


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
        self.reduction = _check_reduction(reduction)
        self.impl = _check_impl(impl)
        for name, value, zero in (("alpha", alpha, True), ("beta", beta, False)):
            if isinstance(value, nn.Parameter):
                _check_param(value.detach(), name, value.detach(), allow_zero=False)
                self.register_parameter(name, value)
            elif isinstance(value, Tensor):
                self.register_buffer(name, value.detach().clone())
            else:
                _check_param(value, name, torch.zeros(()), allow_zero=zero)
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
        return _reduce(_objective_terms(val, alpha, beta, self.objective), self.reduction)

    def extra_repr(self) -> str:
        return (f"alpha={self.alpha}, beta={self.beta}, reduction={self.reduction!r}, "
                f"impl={self.impl!r}, objective={self.objective!r}")


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
        self.reduction = _check_reduction(reduction)
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
            _check_param(value, name, torch.zeros(()), allow_zero=False)
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
        input, target = _check_pair(input, target)
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
        return _reduce(_objective_terms(val, alpha, beta, self.objective), self.reduction)

    def extra_repr(self) -> str:
        return (f"shape={tuple(self.raw_alpha.shape)}, reduction={self.reduction!r}, "
                f"objective={self.objective!r}")
