"""Small from-scratch backbones for detectors that learn on a laptop CPU.

The paper's backbones (VGG-16, ResNet-101) need GPU-days on COCO.  To test its claims on two CPU
cores, :func:`convnet4_fpn` builds a plain 4-stage ConvNet (two 3x3 conv + batch-norm + ReLU
layers per stage, each stage halving the resolution) under torchvision's
:class:`~torchvision.ops.FeaturePyramidNetwork`.  On 64-px images it gives feature maps of
stride 4, 8, 16 and 32 (16x16 down to 2x2), enough for objects of 8-48 px;
:func:`convnet4_anchor_generator` gives anchors matched to those strides for both
architectures.  It is offered by :func:`klhuber.detection.models.build_model` as
``backbone="convnet4_fpn"``.

Measured on two CPU cores (2026-12, torch 2.14, 64-px synthetic shapes, batch 16):
see ``klhuber.detection.experiments.CPU`` for the schedule and the results it reaches.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from torch import Tensor, nn
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

__all__ = [
    "CONVNET4_ANCHOR_SIZES",
    "CONVNET4_CHANNELS",
    "ConvNet4FPN",
    "convnet4_anchor_generator",
    "convnet4_fpn",
]

#: Output channels of the four stages (strides 4, 8, 16, 32).
CONVNET4_CHANNELS: tuple[int, int, int, int] = (32, 64, 96, 128)
#: Anchor base size per pyramid level (strides 4, 8, 16, 32), in pixels.
CONVNET4_ANCHOR_SIZES: tuple[float, float, float, float] = (8.0, 16.0, 32.0, 64.0)


def _conv_bn_relu(cin: int, cout: int, stride: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True)]


class ConvNet4FPN(nn.Module):
    """A 4-stage ConvNet with an FPN; ``forward`` returns an ``OrderedDict`` of feature maps
    (``"0"``-``"3"`` at strides 4-32, plus ``"pool"`` at stride 64 when ``extra_pool``), as
    torchvision's ``BackboneWithFPN`` does, and has the ``out_channels`` attribute the
    detectors read.

    Args:
        channels: output channels of the four stages.
        fpn_channels: channels of every pyramid level.
        extra_pool: add torchvision's ``LastLevelMaxPool`` level (Faster R-CNN's RPN uses it;
            RetinaNet does not need it).
    """

    def __init__(self, channels: tuple[int, ...] = CONVNET4_CHANNELS, fpn_channels: int = 64,
                 extra_pool: bool = True) -> None:
        super().__init__()
        channels = tuple(int(c) for c in channels)
        if len(channels) != 4 or min(channels) < 1:
            raise ValueError(f"channels must be 4 positive ints, got {channels!r}")
        if int(fpn_channels) != fpn_channels or fpn_channels < 1:
            raise ValueError(f"fpn_channels must be an int >= 1, got {fpn_channels!r}")
        stem = channels[0]
        self.stem = nn.Sequential(*_conv_bn_relu(3, stem, 2))
        stages = []
        cin = stem
        for cout in channels:
            stages.append(nn.Sequential(*_conv_bn_relu(cin, cout, 2), *_conv_bn_relu(cout, cout, 1)))
            cin = cout
        self.stages = nn.ModuleList(stages)
        self.fpn = FeaturePyramidNetwork(list(channels), int(fpn_channels),
                                         extra_blocks=LastLevelMaxPool() if extra_pool else None)
        self.out_channels = int(fpn_channels)
        for m in self.modules():
            if isinstance(m, nn.Conv2d) and m not in set(self.fpn.modules()):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        x = self.stem(x)
        feats: OrderedDict[str, Tensor] = OrderedDict()
        for i, stage in enumerate(self.stages):
            x = stage(x)
            feats[str(i)] = x
        return self.fpn(feats)


def convnet4_fpn(*, fpn_channels: int = 64, extra_pool: bool = True, **extra: Any) -> ConvNet4FPN:
    """The ``convnet4_fpn`` backbone (see :class:`ConvNet4FPN`); ``extra`` may hold
    ``channels``."""
    return ConvNet4FPN(fpn_channels=fpn_channels, extra_pool=extra_pool, **extra)


def convnet4_anchor_generator(arch: str, sizes: tuple[float, ...] = CONVNET4_ANCHOR_SIZES,
                              num_levels: int | None = None) -> AnchorGenerator:
    """Anchors for :class:`ConvNet4FPN`: one base size per level (strides 4, 8, 16, 32, and 64
    for Faster R-CNN's extra pooled level), aspect ratios 0.5, 1, 2.

    Faster R-CNN (``arch="fasterrcnn"``): one size per level, as torchvision's FPN detectors;
    the pooled level repeats the last size doubled.  RetinaNet: three octave scales
    :math:`2^{k/3}` per size, as in the RetinaNet paper.
    """
    sizes = tuple(float(s) for s in sizes)
    if arch == "retinanet":
        levels = len(sizes) if num_levels is None else num_levels
        per_level = tuple(tuple(int(round(s * 2 ** (k / 3))) for k in range(3))
                          for s in sizes[:levels])
        return AnchorGenerator(per_level, ((0.5, 1.0, 2.0),) * len(per_level))
    if arch != "fasterrcnn":
        raise ValueError(f"arch must be 'fasterrcnn' or 'retinanet', got {arch!r}")
    all_sizes = sizes if len(sizes) > 4 else sizes + (2 * sizes[-1],)
    levels = len(all_sizes) if num_levels is None else num_levels
    per_level = tuple((int(round(s)),) for s in all_sizes[:levels])
    return AnchorGenerator(per_level, ((0.5, 1.0, 2.0),) * len(per_level))
