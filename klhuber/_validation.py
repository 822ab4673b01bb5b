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


def check_input(x: Any, name: str) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must have a floating-point dtype, got {x.dtype}")
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
