"""klhuber: the executable companion to G. P. Meyer, *An Alternative Probabilistic
Interpretation of the Huber Loss* (CVPR 2021).

The loss functions of :mod:`klhuber.losses` are re-exported here.  Sub-packages are imported
lazily, so ``import klhuber.symbolic`` works without PyTorch installed.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LOSS_NAMES = (
    "huber",
    "kl_huber",
    "kl_huber_derivative",
    "laplace_kl",
    "huber_bounds",
    "smooth_l1",
    "huber_loss",
    "kl_huber_loss",
    "HuberLoss",
    "KLHuberLoss",
    "AdaptiveKLHuberLoss",
)
_SUBMODULES = (
    "book",
    "cli",
    "detection",
    "interpret",
    "losses",
    "plotting",
    "related",
    "results",
    "symbolic",
    "toy",
)

__all__ = ["__version__", *_LOSS_NAMES]


def __getattr__(name: str) -> Any:
    if name in _LOSS_NAMES:
        return getattr(importlib.import_module("klhuber.losses"), name)
    if name in _SUBMODULES:
        return importlib.import_module(f"klhuber.{name}")
    raise AttributeError(f"module 'klhuber' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LOSS_NAMES, *_SUBMODULES})
