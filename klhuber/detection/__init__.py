"""Object detectors (Section 7, Appendices D-E): torchvision's Faster R-CNN and RetinaNet with
the paper's interpretable box-regression losses.

* :func:`build_model` - :mod:`klhuber.detection.models` (a torchvision detector, then
  :func:`attach_box_loss`);
* :func:`attach_box_loss` and the loss modules (:class:`KLRoIHeads`, ...) -
  :mod:`klhuber.detection.heads`;
* :class:`BoxRegressionLoss`, :class:`LinearWHBoxCoder`, :func:`stage_losses` -
  :mod:`klhuber.detection.box_losses`;
* bodies, anchor generators, checkpoint mapping and the small CPU backbone ``convnet4_fpn`` -
  :mod:`klhuber.detection.backbones`;
* the options of a training run (:class:`~klhuber.detection.config.TrainConfig`, the source
  of ``klhuber detect train``'s flags) - :mod:`klhuber.detection.config`; the training loop -
  :mod:`klhuber.detection.engine`;
* experiment profiles and grids - :mod:`klhuber.detection.experiments`; tables, confidence
  intervals and verdicts from finished runs - :mod:`klhuber.detection.report`.

Everything is imported lazily: ``import klhuber.detection`` imports neither torchvision nor the
training / data modules (``klhuber.detection.data``, ``engine``, ``evaluate``, ``cli``, ...),
which are reached as ``klhuber.detection.<name>`` on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "build_model": "models",
    "attach_box_loss": "heads",
    "load_weights": "backbones",
    "load_backbone_weights": "backbones",
    "ARCHS": "config",
    "BACKBONES": "config",
    "HARMONIC_CHOICES": "heads",
    "PY_FASTER_RCNN_DEFAULTS": "models",
    "KLRegionProposalNetwork": "heads",
    "KLRoIHeads": "heads",
    "KLRetinaNetHead": "heads",
    "KLRetinaNetRegressionHead": "heads",
    "BoxRegressionLoss": "box_losses",
    "LinearWHBoxCoder": "box_losses",
    "make_box_coder": "box_losses",
    "decode_against_unit_box": "box_losses",
    "loss_kinds": "box_losses",
    "LOSS_KINDS": "box_losses",
    "WH_TARGETS": "box_losses",
    "register_box_loss_kind": "box_losses",
    "resolve_box_loss": "box_losses",
    "stage_losses": "box_losses",
}
_SUBMODULES = (
    "backbones",
    "box_losses",
    "config",
    "heads",
    "models",
    "data",
    "synthetic",
    "engine",
    "evaluate",
    "cli",
    "experiments",
    "report",
)

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        module = importlib.import_module(f"klhuber.detection.{_EXPORTS[name]}")
        return getattr(module, name)
    if name in _SUBMODULES:
        return importlib.import_module(f"klhuber.detection.{name}")
    raise AttributeError(f"module 'klhuber.detection' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS, *_SUBMODULES})
