"""Backbones of the detectors: bodies, anchor generators and checkpoint mapping.

:func:`resnet_body`, :func:`mobilenet_body` and :func:`vgg_parts` build torchvision's bodies
(never downloading weights; frozen batch norm on pretrained weights, trainable from scratch, as
torchvision does); :func:`anchor_generator` gives every backbone's anchors (the builders'
defaults, or one base size per level); :func:`load_backbone_weights` maps a torchvision
*classification* checkpoint onto a detector's backbone and :func:`load_weights` loads a whole
detector.  :data:`klhuber.detection.config.BACKBONES` lists the names.

Small from-scratch backbones for detectors that learn on a laptop CPU.

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
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import mobilenet_backbone, resnet_fpn_backbone
from torchvision.ops import FeaturePyramidNetwork, FrozenBatchNorm2d
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from klhuber.detection.config import ARCHS, BACKBONES

__all__ = [
    "CONVNET4_ANCHOR_SIZES",
    "CONVNET4_CHANNELS",
    "ConvNet4FPN",
    "VGGBoxHead",
    "anchor_generator",
    "backbone_state_targets",
    "convnet4_anchor_generator",
    "convnet4_fpn",
    "load_backbone_weights",
    "load_weights",
    "mobilenet_body",
    "resnet_body",
    "retinanet_anchor_generator",
    "vgg_parts",
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

# ----------------------------------------------------------------------------------------------
# Anchors of every backbone


def anchor_generator(arch: str, backbone: str,
                     sizes: Sequence[float] | None = None) -> AnchorGenerator | None:
    """The anchors of ``arch`` on ``backbone``; aspect ratios 0.5, 1, 2 throughout.

    Without ``sizes``, the builders' defaults: RetinaNet 3 octave scales of 4 x stride per
    level (:func:`retinanet_anchor_generator`; VGG's one stride-16 map holds all 15 sizes),
    Faster R-CNN 128-512 px on VGG's map (py-faster-rcnn), 32-512 px on each of MobileNet's 3
    maps (torchvision's layout), :func:`convnet4_anchor_generator` for ``convnet4_fpn``, and
    ``None`` where torchvision's own default applies (Faster R-CNN on ResNet-FPN; RetinaNet on
    ``resnet50_fpn`` from scratch, torchvision's builder).

    With ``sizes`` (one base size per feature level): RetinaNet gets the 3 octave scales of
    each, Faster R-CNN one size per level, except on MobileNet (all sizes on each of its 3
    maps) and VGG (all sizes on its one map).
    """
    if arch not in ARCHS:
        raise ValueError(f"arch must be one of {ARCHS}, got {arch!r}")
    if backbone not in BACKBONES:
        raise ValueError(f"backbone must be one of {BACKBONES}, got {backbone!r}")
    if sizes is None:
        return _default_anchor_generator(arch, backbone)
    sizes = tuple(sizes)
    if backbone == "convnet4_fpn":
        return convnet4_anchor_generator(arch, sizes)
    if arch == "retinanet":
        per_level = tuple(tuple(int(round(s * 2 ** (k / 3))) for k in range(3)) for s in sizes)
        return AnchorGenerator(per_level, ((0.5, 1.0, 2.0),) * len(sizes))
    if backbone == "mobilenet_v3_fpn":  # 3 maps, all sizes on each (torchvision's layout)
        per_level = (tuple(int(round(s)) for s in sizes),) * 3
        return AnchorGenerator(per_level, ((0.5, 1.0, 2.0),) * 3)
    if backbone.startswith("vgg16"):  # one map
        return AnchorGenerator((tuple(int(round(s)) for s in sizes),), ((0.5, 1.0, 2.0),))
    per_level = tuple((int(round(s)),) for s in sizes)
    return AnchorGenerator(per_level, ((0.5, 1.0, 2.0),) * len(sizes))


def _default_anchor_generator(arch: str, backbone: str) -> AnchorGenerator | None:
    if backbone == "convnet4_fpn":
        return convnet4_anchor_generator(arch)
    if arch == "fasterrcnn":
        if backbone == "mobilenet_v3_fpn":
            return AnchorGenerator(((32, 64, 128, 256, 512),) * 3, ((0.5, 1.0, 2.0),) * 3)
        if backbone.startswith("vgg16"):
            return AnchorGenerator(((128, 256, 512),), ((0.5, 1.0, 2.0),))
        return None
    if backbone.startswith("resnet"):  # C3-C5 + P6/P7: 5 levels from stride 8 (torchvision's)
        return retinanet_anchor_generator(5, 8)
    if backbone == "mobilenet_v3_fpn":  # the last two stages (stride 16, 32) + P6/P7
        return retinanet_anchor_generator(4, 16)
    return AnchorGenerator(  # vgg16 / vgg16_bn: one map of stride 16
        (tuple(int(s * 2 ** (k / 3)) for s in (32, 64, 128, 256, 512) for k in range(3)),),
        ((0.5, 1.0, 2.0),),
    )


# ----------------------------------------------------------------------------------------------
# torchvision bodies


class VGGBoxHead(nn.Sequential):
    """fc6 / fc7 of VGG-16 on 7x7 RoI features (py-faster-rcnn's detection network)."""

    def __init__(self, classifier: nn.Sequential) -> None:
        # torchvision's VGG classifier: Linear, ReLU, Dropout, Linear, ReLU, Dropout, Linear.
        super().__init__(nn.Flatten(start_dim=1), *list(classifier.children())[:-1])
        self.out_channels = 4096


def vgg_parts(
    name: str, trainable: int | None, pretrained: bool
) -> tuple[nn.Module, nn.Sequential]:
    """VGG-16 up to conv5_3 (stride 16, 512 channels) and its fc6/fc7 classifier.

    ``trainable`` (0-5) is the number of trainable conv blocks counted from conv5; the default
    is 5 from scratch and 3 with a pretrained backbone (py-faster-rcnn fine-tunes ImageNet
    VGG-16 with conv1-conv2 frozen).
    """
    from torchvision.models import vgg16, vgg16_bn

    trainable = (3 if pretrained else 5) if trainable is None else trainable
    if not 0 <= trainable <= 5:
        raise ValueError(f"trainable_backbone_layers must be in [0, 5] for VGG, got {trainable}")
    vgg = (vgg16_bn if name == "vgg16_bn" else vgg16)(weights=None)
    layers = list(vgg.features.children())[:-1]  # conv5_3 + ReLU, stride 16
    if pretrained:  # frozen batch norm on pretrained weights (vgg16_bn), as torchvision does
        layers = [
            FrozenBatchNorm2d(m.num_features) if isinstance(m, nn.BatchNorm2d) else m
            for m in layers
        ]
    features = nn.Sequential(*layers)
    features.out_channels = 512
    block = 0
    for layer in layers:
        if isinstance(layer, nn.MaxPool2d):
            block += 1
        elif block < 5 - trainable:
            layer.requires_grad_(False)
    return features, vgg.classifier


def _resnet_name(backbone: str) -> str:
    return backbone.removesuffix("_fpn")


def retinanet_anchor_generator(num_levels: int, first_stride: int) -> AnchorGenerator:
    """RetinaNet anchors (3 scales x 3 ratios, size 4 x stride) for ``num_levels`` levels."""
    sizes = tuple(
        tuple(int(4 * first_stride * 2**level * 2 ** (k / 3)) for k in range(3))
        for level in range(num_levels)
    )
    return AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * num_levels)


def _norm(pretrained: bool) -> type[nn.Module]:
    # torchvision's rule: frozen batch norm on top of pretrained weights, trainable from scratch.
    return FrozenBatchNorm2d if pretrained else nn.BatchNorm2d


def resnet_body(backbone: str, trainable: int | None, pretrained: bool, **extra: Any) -> nn.Module:
    """torchvision's ResNet + FPN body for ``backbone`` (``resnet18_fpn`` ... ``resnet101_fpn``),
    never downloading weights: frozen batch norm and 3 trainable stages for pretrained weights,
    trainable batch norm and all 5 stages from scratch (``trainable`` overrides the count)."""
    default = 3 if pretrained else 5
    return resnet_fpn_backbone(
        backbone_name=_resnet_name(backbone),
        weights=None,
        norm_layer=_norm(pretrained),
        trainable_layers=default if trainable is None else trainable,
        **extra,
    )


def mobilenet_body(trainable: int | None, pretrained: bool, **extra: Any) -> nn.Module:
    """torchvision's MobileNetV3-Large + FPN body, never downloading weights (3 trainable
    stages for pretrained weights, all 6 from scratch; ``trainable`` overrides the count)."""
    default = 3 if pretrained else 6
    return mobilenet_backbone(
        backbone_name="mobilenet_v3_large",
        weights=None,
        fpn=True,
        norm_layer=_norm(pretrained),
        trainable_layers=default if trainable is None else trainable,
        **extra,
    )


# ----------------------------------------------------------------------------------------------
# Checkpoint mapping


def _load_state(path: str | Path, name: str) -> dict[str, Tensor]:
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{name} must be an existing file, got {str(path)!r}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("model", "state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise ValueError(f"{name} must hold a state dict, got {type(state).__name__}")
    return OrderedDict(state)


def backbone_state_targets(
    model: nn.Module, backbone: str, state: dict[str, Tensor]
) -> list[tuple[nn.Module, dict[str, Tensor]]]:
    """(module, its state dict) pairs mapped from a torchvision *classification* checkpoint."""
    if backbone.startswith("resnet"):
        body = model.backbone.body  # conv1, bn1, layer1-4: the classifier's names, without fc
        return [(body, {k: v for k, v in state.items() if not k.startswith("fc.")})]
    if backbone == "mobilenet_v3_fpn":  # body = IntermediateLayerGetter over ``features``
        feats = {
            k.removeprefix("features."): v for k, v in state.items() if k.startswith("features.")
        }
        return [(model.backbone.body, feats)]
    # vgg16 / vgg16_bn: conv layers (last max-pool dropped), plus fc6 / fc7 for Faster R-CNN
    n = len(model.backbone)
    feats = {}
    for key, value in state.items():
        if key.startswith("features."):
            index, _, rest = key.removeprefix("features.").partition(".")
            if int(index) < n:
                feats[f"{index}.{rest}"] = value
    pairs = [(model.backbone, feats)]
    if isinstance(model, FasterRCNN) and isinstance(model.roi_heads.box_head, VGGBoxHead):
        # classifier.0 (fc6) -> box_head.1, classifier.3 (fc7) -> box_head.4
        fc = {"0": "1", "3": "4"}
        head = {}
        for key, value in state.items():
            if key.startswith("classifier."):
                index, _, rest = key.removeprefix("classifier.").partition(".")
                if index in fc:
                    head[f"{fc[index]}.{rest}"] = value
        pairs.append((model.roi_heads.box_head, head))
    return pairs


def load_backbone_weights(model: nn.Module, backbone: str, path: str | Path) -> nn.Module:
    """Load a local torchvision *classification* checkpoint (e.g. ImageNet ``resnet50`` or
    ``vgg16`` weights) into the backbone of a model from :func:`klhuber.detection.models.build_model`.

    Every backbone parameter and buffer must be present with the right shape (else
    ``ValueError``); the classifier's last layer is ignored.  VGG's fc6/fc7 initialise the
    Faster R-CNN box head, as in py-faster-rcnn.
    """
    state = _load_state(path, "backbone_weights_path")
    for module, mapped in backbone_state_targets(model, backbone, state):
        wanted = {k for k in module.state_dict() if not k.endswith("num_batches_tracked")}
        missing = sorted(wanted - set(mapped))
        if missing:
            raise ValueError(
                f"backbone_weights_path does not match backbone {backbone!r}: missing "
                f"{len(missing)} entries, e.g. {missing[:3]}"
            )
        try:
            module.load_state_dict({k: mapped[k] for k in wanted}, strict=False)
        except RuntimeError as exc:
            raise ValueError(
                f"backbone_weights_path does not match backbone {backbone!r}: {exc}"
            ) from exc
    return model


def load_weights(model: nn.Module, weights_path: str | Path, strict: bool = True) -> nn.Module:
    """Load a local state dict (``torch.load(..., weights_only=True)``) into ``model``.

    Accepts a bare state dict or a checkpoint with a ``"model"`` (torchvision's references) or
    ``"state_dict"`` entry.  BatchNorm ``num_batches_tracked`` counters missing from the file
    (e.g. in torchvision checkpoints, which use frozen batch norm) are kept from the model.
    """
    state = _load_state(weights_path, "weights_path")
    for key, value in model.state_dict().items():
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = value
    model.load_state_dict(state, strict=strict)
    return model
