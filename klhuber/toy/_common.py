"""Input checks and work splitting shared by the modules of :mod:`klhuber.toy` (internal)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch


def _check_positive_grid(values: Any, name: str) -> np.ndarray:
    try:
        raw = np.asarray(values)
        if raw.dtype.kind in "bUS":  # booleans and strings are not scales
            raise TypeError
        arr = np.atleast_1d(np.asarray(values, dtype=np.float64))
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a non-empty 1-d sequence of positive numbers, got "
                        f"{values!r}") from None
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-d sequence of positive numbers")
    if not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise ValueError(f"{name} must be finite and > 0 (allowed range (0, inf)), got {arr.tolist()}")
    return arr


def _check_seeds(seeds: Any) -> tuple[int, ...]:
    values = np.atleast_1d(np.asarray(seeds))
    if values.dtype == bool or not (np.issubdtype(values.dtype, np.integer)
                                    or np.issubdtype(values.dtype, np.floating)):
        raise TypeError(f"seeds must be integers >= 0, got {seeds!r}")
    if values.ndim != 1 or not np.all(np.isfinite(values)) or np.any(values != np.round(values)):
        raise ValueError(f"seeds must be a 1-d sequence of integers >= 0 (no fractions), "
                         f"got {values.tolist()}")
    seeds = tuple(int(s) for s in values)
    if not seeds:
        raise ValueError("seeds must be a non-empty sequence of integers")
    if any(s < 0 for s in seeds):
        raise ValueError(f"seeds must be >= 0, got {seeds}")
    return seeds


def _check_finite_at_least(value: Any, name: str, low: float, *, allow_inf: bool = False,
                           strict: bool = False) -> float:
    """A real number >= ``low`` (> with ``strict``), finite unless ``allow_inf``."""
    if isinstance(value, (bool, str)):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    try:
        value = float(value)  # also numpy scalars and 0-d arrays
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a real number, got {value!r}") from None
    bad = (math.isnan(value) or (value == math.inf and not allow_inf)
           or (value <= low if strict else value < low))
    if bad:
        upper = "inf]" if allow_inf else "inf)"
        raise ValueError(f"{name} must be in {'(' if strict else '['}{low:g}, {upper}, "
                         f"got {value!r}")
    return value


#: Largest noise scale :func:`make_data` accepts (its per-scale seed is ``round(scale * 1e9)``,


def _check_positive_int(value: Any, name: str, minimum: int = 1) -> int:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
        if not isinstance(value, str):
            raise TypeError(f"{name} must be an integer >= {minimum}, got {value!r}") from None
    if (isinstance(value, (bool, str)) or not math.isfinite(number) or int(value) != value
            or int(value) < minimum):
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)



def _default_max_elements(device: torch.device, dtype: torch.dtype, copies: int,
                          cpu_default: int) -> int:
    """Largest block (elements of the residual tensor) that fits: on CUDA 80% of free memory
    shared by ``copies`` residual-sized tensors; on the CPU a cache-friendly ``cpu_default``."""
    if device.type != "cuda":
        return cpu_default
    free, _ = torch.cuda.mem_get_info(device)
    itemsize = torch.empty((), dtype=dtype).element_size()
    return max(1_000_000, int(0.8 * free / (copies * itemsize)))


def _chunks(total: int, size: int) -> list[tuple[int, int]]:
    return [(i, min(i + size, total)) for i in range(0, total, size)]
