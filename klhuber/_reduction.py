"""``reduction=`` as in :mod:`torch.nn`: the check of the argument and the reduction itself,
shared by :mod:`klhuber.losses` and :mod:`klhuber.related`."""

from __future__ import annotations

from torch import Tensor

REDUCTIONS = ("none", "mean", "sum")


def check_reduction(reduction: str) -> str:
    """``reduction`` if it is one of :data:`REDUCTIONS`, else ``ValueError``."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    return reduction


def reduce(val: Tensor, reduction: str) -> Tensor:
    """``reduction`` as torch does it: 'none', 'sum', or 'mean' (NaN for an empty input)."""
    if reduction == "none":
        return val
    if reduction == "sum":
        return val.sum()
    if reduction == "mean":
        return val.mean()
    raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
