"""Whether a tensor's *values* can be read: shared by the input checks of the loss modules.

Value checks (``bool((scale > 0).all())``) need concrete data.  They are impossible on meta
tensors (shape-only tracing), inside :func:`torch.compile` graphs and inside ``torch.func``
transforms (``vmap``, ``grad``), where such a check would raise a confusing internal error or
break the graph; there the checks are skipped and shapes and dtypes alone are validated.
"""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["can_inspect", "is_compiling", "is_transformed"]


def is_compiling() -> bool:
    """True while :func:`torch.compile` traces the calling code."""
    try:
        return bool(torch.compiler.is_compiling())
    except AttributeError:  # pragma: no cover - torch < 2.3
        return False


def is_transformed(t: Tensor) -> bool:
    """True for functorch-wrapped tensors (inside ``torch.func`` transforms), whose values
    are not available."""
    functorch = getattr(torch._C, "_functorch", None)
    if functorch is None:  # pragma: no cover
        return False
    try:
        return bool(functorch.is_functorch_wrapped_tensor(t))
    except Exception:  # pragma: no cover - defensive
        return False


def can_inspect(t: Tensor) -> bool:
    """Whether data-dependent checks such as ``bool(t.all())`` are possible on ``t``."""
    return not (t.device.type == "meta" or is_compiling() or is_transformed(t))
