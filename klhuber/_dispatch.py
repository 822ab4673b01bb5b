"""Which implementation serves a call of :mod:`klhuber.losses`: dtype promotion and autocast
(:func:`prepare`), the choice of the fused forward (:func:`fused_kind`) and the dispatch to the
fused, general, plain or compiled path (:func:`dispatch`)."""

from __future__ import annotations

import contextlib
import functools
from typing import Any

import torch
from torch import Tensor, nn

from klhuber import _chunked, _fused
from klhuber._functions import apply_loss, loss_plain, run_compiled, run_fused
from klhuber._inspection import is_compiling as _is_compiling
from klhuber._inspection import is_transformed as _is_transformed
from klhuber._kernels import moderate
from klhuber._phi import PHI, opmath
from klhuber._validation import ParamLike


def _autocast_available(device_type: str) -> bool:
    """Whether :class:`torch.autocast` knows ``device_type`` (not e.g. ``"meta"``)."""
    available = getattr(getattr(torch, "amp", None), "is_autocast_available", None)
    if available is None:  # pragma: no cover - torch < 2.4
        return device_type in ("cpu", "cuda", "xpu", "mps", "hpu", "xla")
    return bool(available(device_type))


def autocast_off(device_type: str) -> Any:
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


def prepare(x: Tensor, alpha: ParamLike, beta: ParamLike,
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
    work = opmath(dtype)
    x = x.to(work) if x.dtype != work else x
    if target is not None and target.dtype != work:
        target = target.to(work)
    return x, target, _cast_param(alpha, work, x.device), _cast_param(beta, work, x.device), dtype


_FUSED_DTYPES = (torch.float32, torch.float64)


@functools.lru_cache(maxsize=1024)
def _fused_scales(alpha: float, beta: float, dtype: torch.dtype) -> bool:
    """Python-number scales the fused kernels take: alpha > 0 and 1/alpha, 1/beta, alpha/beta
    normal numbers of ``dtype`` (cached: the check runs once per pair of scales)."""
    return alpha > 0 and moderate(alpha, beta, dtype)


def _forward_ad_active() -> bool:
    """Whether a :func:`torch.autograd.forward_ad.dual_level` is open (dual tensors may flow)."""
    return getattr(torch.autograd.forward_ad, "_current_level", -1) >= 0


def _plain(t: Tensor) -> bool:
    return type(t) is Tensor or type(t) is nn.Parameter


def fused_kind(input: Tensor, target: Tensor | None, alpha: ParamLike, beta: ParamLike,
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
        return "eager" if input.numel() < _chunked.CHUNK_MIN else None
    device = input.device
    if device.type == "meta":
        return None
    if impl in ("fused", "compiled") or device.type == "cuda":
        if _fused.compile_available(device):
            return "compiled"
        return "eager" if impl == "fused" else None
    return None


def dispatch(input: Tensor, target: Tensor | None, alpha: ParamLike, beta: ParamLike,
             reduction: str, impl: str) -> Tensor:
    if impl != "autograd":
        # float32/float64 with Python-number scales: neither promotion nor autocast changes
        # the dtype, so the fused path needs none of prepare's work
        kind = fused_kind(input, target, alpha, beta, impl)
        if kind is not None:
            return run_fused(kind, input, target, alpha, beta, reduction)
    input, target, alpha, beta, out_dtype = prepare(input, alpha, beta, target)
    if input.dtype not in PHI:  # pragma: no cover - prepare guarantees f32/f64
        raise TypeError(f"unsupported dtype {input.dtype}")
    with autocast_off(input.device.type):
        kind = None if impl == "autograd" else fused_kind(input, target, alpha, beta, impl)
        if kind is not None:  # half types, computed in float32
            out = run_fused(kind, input, target, alpha, beta, reduction)
        elif impl in ("default", "fused"):
            want_d = (torch.is_grad_enabled()
                      and (input.requires_grad or (target is not None and target.requires_grad))
                      and not any(isinstance(p, Tensor) and p.requires_grad
                                  for p in (alpha, beta)))
            out = apply_loss(input, target, alpha, beta, reduction, want_d)
        elif impl == "autograd":
            out = loss_plain(input, target, alpha, beta, reduction)
        else:
            out = run_compiled(input, target, alpha, beta, reduction)
    if out.dtype != out_dtype and out_dtype in (torch.float16, torch.bfloat16):
        out = out.to(out_dtype)
    return out
