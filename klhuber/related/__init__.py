"""Losses related to the Huber loss, from the companion documents (seeds 002-004).

* :mod:`klhuber.related.barron`: Barron's general and adaptive robust loss (seed 003).
* :mod:`klhuber.related.harmonic`: the Harmonic loss and the HIoU loss (seed 004).
* :mod:`klhuber.related.symbolic`: sympy checks of the Harmonic/HIoU supplement (seed 004).

Smooth L1 (seed 002) is :func:`klhuber.losses.smooth_l1`; its chapter uses :mod:`klhuber.losses`
and :mod:`klhuber.toy` directly. Sub-modules are imported lazily.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["barron", "harmonic", "symbolic"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return importlib.import_module(f"klhuber.related.{name}")
    raise AttributeError(f"module 'klhuber.related' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
