"""Argument types and checks of the public functions of :mod:`klhuber.losses`: the input
tensors, the scales ``alpha`` and ``beta`` and ``impl=``."""

from __future__ import annotations

import math
import numbers
from typing import Any

import torch
from torch import Tensor

from klhuber._inspection import can_inspect as _can_inspect

ParamLike = float | int | Tensor


IMPLS = ("default", "fused", "compiled", "autograd")
#: the floating-point dtypes the losses compute in (float8 has no arithmetic on most devices)
FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _check_tensor_kind(t: Tensor, name: str) -> None:
    """A dense tensor of a dtype in :data:`FLOAT_DTYPES`, or a TypeError naming ``name``."""
    if t.dtype not in FLOAT_DTYPES:
        kind = "a floating-point" if not t.is_floating_point() else "float16, bfloat16, float32 or float64"
        raise TypeError(f"{name} must have {kind} dtype, got {t.dtype}")
    if t.layout != torch.strided:
        raise TypeError(f"{name} must be a dense (strided) tensor, got layout {t.layout}")


def check_input(x: Any, name: str) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    _check_tensor_kind(x, name)
    return x


def check_param(value: Any, name: str, x: Tensor, *, allow_zero: bool) -> ParamLike:
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
        _check_tensor_kind(value, name)
        try:
            shape = torch.broadcast_shapes(x.shape, value.shape)
        except RuntimeError:
            shape = None
        if shape != x.shape:
            raise ValueError(
                f"{name} of shape {tuple(value.shape)} does not broadcast to the input's shape "
                f"{tuple(x.shape)}")
        # torch lets a 0-d CPU tensor meet a tensor on any device, nothing else
        if value.device != x.device and (value.dim() > 0 or value.device.type != "cpu"):
            raise ValueError(f"{name} is on {value.device} but the input is on {x.device}")
        if _can_inspect(value) and value.numel() > 0:
            bad = (value < 0) | value.isnan() if allow_zero else ~(value > 0)
            if bool(bad.any()):
                raise ValueError(f"{name} must be in {rng} ({bound}) everywhere")
        return value
    raise TypeError(f"{name} must be a real number or a floating-point tensor, "
                    f"got {type(value).__name__}")


def check_impl(impl: str) -> str:
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
    return impl


def check_pair(input: Any, target: Any) -> tuple[Tensor, Tensor]:
    input = check_input(input, "input")
    target = check_input(target, "target")
    if input.shape != target.shape:
        raise ValueError(f"target of shape {tuple(target.shape)} must have the input's shape "
                         f"{tuple(input.shape)}")
    return input, target
