"""Losses related to the Huber loss, that the book compares with the KL view of
Meyer (CVPR 2021).

* :mod:`klhuber.related.barron`: Barron's general and adaptive robust loss (Barron, CVPR 2019).
* :mod:`klhuber.related.harmonic`: the Harmonic loss and the HIoU loss (Wang and Zhang, arXiv 2020).
* :mod:`klhuber.related.symbolic`: sympy checks of the Harmonic/HIoU supplement (Wang and Zhang).

Smooth L1 (Girshick, ICCV 2015) is :func:`klhuber.losses.smooth_l1`; its chapter uses :mod:`klhuber.losses`
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
