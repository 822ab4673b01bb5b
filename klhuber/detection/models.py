"""Faster R-CNN and RetinaNet from torchvision with the paper's box-regression losses.

:func:`build_model` builds torchvision's detector (``torchvision.models.detection``) on one of
the backbones of :mod:`klhuber.detection.backbones`, never downloading weights, and then puts
the box loss of :mod:`klhuber.detection.box_losses` into it with
:func:`klhuber.detection.heads.attach_box_loss` (the same for both architectures).  The
``torchvision`` preset reproduces torchvision's losses (to float rounding; tested).

Class-count convention is torchvision's: ``num_classes`` *includes* the background class
(index 0), for both architectures.

The names that used to live here (the loss modules, ``attach_box_loss``, the backbones'
helpers, ``load_weights``, ``ARCHS``, ``BACKBONES``) are importable from here still; they are
documented in :mod:`klhuber.detection.heads`, :mod:`klhuber.detection.backbones` and
:mod:`klhuber.detection.config`.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

from torch import nn
from torchvision.models.detection import (
    FasterRCNN,
    RetinaNet,
    fasterrcnn_mobilenet_v3_large_fpn,
    fasterrcnn_resnet50_fpn,
    retinanet_resnet50_fpn,
)
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.retinanet import RetinaNetHead
from torchvision.ops import MultiScaleRoIAlign as TorchvisionMultiScaleRoIAlign
from torchvision.ops.feature_pyramid_network import LastLevelP6P7

from klhuber.detection.backbones import (
    VGGBoxHead,
    anchor_generator,
    backbone_state_targets,
    convnet4_fpn,
    load_backbone_weights,
    load_weights,
    mobilenet_body,
    resnet_body,
    retinanet_anchor_generator,
    vgg_parts,
)
from klhuber.detection.box_losses import resolve_box_loss, stage_losses
from klhuber.detection.config import ARCHS, BACKBONES
from klhuber.detection.heads import (
    HARMONIC_CHOICES,
    KLRegionProposalNetwork,
    KLRetinaNetHead,
    KLRetinaNetRegressionHead,
    KLRoIHeads,
    attach_box_loss,
)
from klhuber.detection.roi_align import MultiScaleRoIAlign
from klhuber.interpret import BoxLossConfig

__all__ = ["PY_FASTER_RCNN_DEFAULTS", "build_model"]

# Importable from here as before (documented in their own modules).
_REEXPORTED = (ARCHS, BACKBONES, HARMONIC_CHOICES, KLRegionProposalNetwork, KLRetinaNetHead,
               KLRetinaNetRegressionHead, KLRoIHeads, load_backbone_weights)
_retinanet_anchors = retinanet_anchor_generator
_backbone_targets = backbone_state_targets

#: py-faster-rcnn's end-to-end training/test settings (``experiments/cfgs/faster_rcnn_end2end``
#: and ``lib/fast_rcnn/config.py``) as torchvision ``FasterRCNN`` keyword arguments; used by
#: default for the ``vgg16`` backbones, every one overridable through ``build_model``'s kwargs.
PY_FASTER_RCNN_DEFAULTS: dict[str, Any] = {
    "min_size": 600,
    "max_size": 1000,
    "rpn_pre_nms_top_n_train": 12000,
    "rpn_post_nms_top_n_train": 2000,
    "rpn_pre_nms_top_n_test": 6000,
    "rpn_post_nms_top_n_test": 300,
    "rpn_nms_thresh": 0.7,
    "rpn_fg_iou_thresh": 0.7,
    "rpn_bg_iou_thresh": 0.3,
    "rpn_batch_size_per_image": 256,
    "rpn_positive_fraction": 0.5,
    "box_fg_iou_thresh": 0.5,
    "box_bg_iou_thresh": 0.5,
    "box_batch_size_per_image": 128,
    "box_positive_fraction": 0.25,
    "box_nms_thresh": 0.3,
    "box_detections_per_img": 100,
}


def _build_fasterrcnn(
    backbone: str, num_classes: int, trainable: int | None, kwargs: dict, pretrained: bool
) -> FasterRCNN:
    if backbone == "resnet50_fpn" and not pretrained:
        return fasterrcnn_resnet50_fpn(
            weights=None,
            weights_backbone=None,
            num_classes=num_classes,
            trainable_backbone_layers=trainable,
            **kwargs,
        )
    if backbone == "mobilenet_v3_fpn" and not pretrained:
        return fasterrcnn_mobilenet_v3_large_fpn(
            weights=None,
            weights_backbone=None,
            num_classes=num_classes,
            trainable_backbone_layers=trainable,
            **kwargs,
        )
    if backbone == "mobilenet_v3_fpn":  # as torchvision's builder, with frozen batch norm
        kwargs = {
            "rpn_score_thresh": 0.05,
            "rpn_anchor_generator": anchor_generator("fasterrcnn", backbone),
            **kwargs,
        }
        return FasterRCNN(mobilenet_body(trainable, pretrained), num_classes, **kwargs)
    if backbone.startswith("resnet"):
        return FasterRCNN(resnet_body(backbone, trainable, pretrained), num_classes, **kwargs)
    if backbone == "convnet4_fpn":
        return _build_convnet4_fasterrcnn(num_classes, trainable, kwargs, pretrained)
    # vgg16 / vgg16_bn: py-faster-rcnn's network on conv5_3 (one map, stride 16).
    features, classifier = vgg_parts(backbone, trainable, pretrained)
    defaults = dict(PY_FASTER_RCNN_DEFAULTS)
    defaults["rpn_anchor_generator"] = anchor_generator("fasterrcnn", backbone)
    defaults["box_roi_pool"] = TorchvisionMultiScaleRoIAlign(
        featmap_names=["0"], output_size=7, sampling_ratio=2
    )
    kwargs = {**defaults, **kwargs}
    box_head = kwargs.pop("box_head", None)
    if box_head is None:
        box_head = VGGBoxHead(classifier)
    box_predictor = kwargs.pop("box_predictor", None)
    if box_predictor is None:
        box_predictor = FastRCNNPredictor(4096, num_classes)
    return FasterRCNN(features, None, box_head=box_head, box_predictor=box_predictor, **kwargs)


def _no_pretrained_convnet4(trainable: int | None, pretrained: bool) -> None:
    if pretrained:
        raise ValueError("backbone 'convnet4_fpn' has no pretrained weights; train it from scratch")
    if trainable is not None:
        raise ValueError("trainable_backbone_layers does not apply to 'convnet4_fpn' (all layers "
                         "train)")


def _build_convnet4_fasterrcnn(num_classes: int, trainable: int | None, kwargs: dict,
                               pretrained: bool) -> FasterRCNN:
    """Faster R-CNN on :class:`~klhuber.detection.backbones.ConvNet4FPN`: its anchors and a
    two-layer box head 256 wide (torchvision's is 1024) unless ``kwargs`` give others."""
    _no_pretrained_convnet4(trainable, pretrained)
    body = convnet4_fpn(extra_pool=True)
    defaults: dict[str, Any] = {"rpn_anchor_generator": anchor_generator("fasterrcnn",
                                                                         "convnet4_fpn")}
    if kwargs.get("box_head") is None and kwargs.get("box_predictor") is None:
        defaults["box_head"] = TwoMLPHead(body.out_channels * 7 * 7, 256)
        defaults["box_predictor"] = FastRCNNPredictor(256, num_classes)
        num_classes_arg = None
    else:
        num_classes_arg = num_classes
    merged = {**defaults, **{k: v for k, v in kwargs.items() if v is not None}}
    return FasterRCNN(body, num_classes_arg, **merged)


def _build_retinanet(
    backbone: str, num_classes: int, trainable: int | None, kwargs: dict, pretrained: bool
) -> RetinaNet:
    """torchvision's RetinaNet on ``backbone`` (stock head; the box loss is attached after)."""
    if backbone == "resnet50_fpn" and not pretrained:
        return retinanet_resnet50_fpn(
            weights=None,
            weights_backbone=None,
            num_classes=num_classes,
            trainable_backbone_layers=trainable,
            **kwargs,
        )
    head_norm = None
    if backbone.startswith("resnet"):
        # As torchvision's retinanet_resnet50_fpn: C3-C5 + P6/P7 from P5, 5 levels, stride 8.
        body = resnet_body(
            backbone,
            trainable,
            pretrained,
            returned_layers=[2, 3, 4],
            extra_blocks=LastLevelP6P7(256, 256),
        )
    elif backbone == "convnet4_fpn":
        _no_pretrained_convnet4(trainable, pretrained)
        body = convnet4_fpn(extra_pool=False)
        head_norm = partial(nn.GroupNorm, 16)  # GroupNorm in the head: stable from scratch
    elif backbone == "mobilenet_v3_fpn":
        # The last two stages (stride 16, 32) + P6/P7: 4 levels.
        body = mobilenet_body(trainable, pretrained, extra_blocks=LastLevelP6P7(256, 256))
    else:  # vgg16 / vgg16_bn: one map of stride 16
        body, _ = vgg_parts(backbone, trainable, pretrained)
    anchors = kwargs.pop("anchor_generator", None) or anchor_generator("retinanet", backbone)
    head = kwargs.pop("head", None)
    if head is None:  # parameters created in torchvision's order: classification first
        head = RetinaNetHead(body.out_channels, anchors.num_anchors_per_location()[0],
                             num_classes, norm_layer=head_norm)
    return RetinaNet(body, num_classes, anchor_generator=anchors, head=head, **kwargs)


def build_model(
    arch: str,
    num_classes: int,
    box_loss: str | BoxLossConfig = "torchvision",
    backbone: str = "resnet50_fpn",
    weights_path: str | Path | None = None,
    *,
    backbone_weights_path: str | Path | None = None,
    harmonic: str | None = None,
    anchor_sizes: Sequence[float] | None = None,
    box_head_dim: int | None = None,
    **kwargs: Any,
) -> nn.Module:
    """A torchvision detector with the box loss of the paper.

    Args:
        arch: ``"fasterrcnn"`` or ``"retinanet"``.
        num_classes: number of classes *including* background (torchvision's convention).
        box_loss: a preset name of :mod:`klhuber.interpret` (``"publication"``,
            ``"implementation"``, ``"experiment_a"``, ..., ``"torchvision"``) or a
            :class:`klhuber.interpret.BoxLossConfig`, resolved once here.  ``proposal`` drives the RPN and
            RetinaNet's head, ``detection`` the RoI heads; box-coder weights are
            :math:`1/\\sigma` (eq. 24, 28) and the loss is :math:`(\\lambda/\\alpha) H_\\alpha`
            (eq. 26, 32), :math:`(\\lambda/\\alpha) D_{\\alpha/2,1/\\alpha}` (Appendix E) or the
            linear size target (Appendix D); see :mod:`klhuber.detection.box_losses`.
        backbone: one of :data:`klhuber.detection.config.BACKBONES`.  No pretrained weights are ever downloaded; from
            scratch, the backbone uses trainable batch norm, as torchvision does.
        weights_path: optional local state dict of the whole detector
            (:func:`klhuber.detection.backbones.load_weights`).
        backbone_weights_path: optional local torchvision *classification* checkpoint for the
            backbone (ImageNet weights, as the paper's experiments use;
            :func:`klhuber.detection.backbones.load_backbone_weights`).  As torchvision does with pretrained backbones,
            batch norm is then frozen (``FrozenBatchNorm2d``) and ``trainable_backbone_layers``
            defaults to 3 (py-faster-rcnn's conv1-conv2 frozen, for VGG).
        harmonic: optional Harmonic weighting of the RoI heads' losses (related work: the Harmonic loss of Wang and Zhang;
            Faster R-CNN only): one of :data:`klhuber.detection.heads.HARMONIC_CHOICES`, see
            :meth:`klhuber.detection.heads.KLRoIHeads.compute_loss`.  ``None`` (default) is the paper's setting.
        anchor_sizes: optional base anchor size per feature level
            (:func:`klhuber.detection.backbones.anchor_generator`); ``None`` keeps the
            backbone's anchors.
        box_head_dim: optional width of Faster R-CNN's two-layer box head (torchvision's is
            1024); the builder's head is made first and then replaced, so a seed gives the
            same weights as training scripts that swapped the head after building.
        **kwargs: passed to torchvision's ``FasterRCNN`` / ``RetinaNet`` (``min_size``,
            ``max_size``, ``rpn_batch_size_per_image``, ``anchor_generator``, ...), plus
            ``trainable_backbone_layers``.  ``bbox_reg_weights`` is not accepted: it is
            :math:`1/\\sigma` of ``box_loss``.

    Returns:
        A model in training mode; ``model(images, targets)`` returns the loss dict
        (``loss_classifier``, ``loss_box_reg``, ``loss_objectness``, ``loss_rpn_box_reg`` or
        ``classification``, ``bbox_regression``); in eval mode, detections.  With
        ``backbone="resnet50_fpn"`` (and ``"mobilenet_v3_fpn"`` for Faster R-CNN) the
        ``state_dict`` keys equal torchvision's builders', so torchvision checkpoints load.
    """
    if arch not in ARCHS:
        raise ValueError(f"arch must be one of {ARCHS}, got {arch!r}")
    if backbone not in BACKBONES:
        raise ValueError(f"backbone must be one of {BACKBONES}, got {backbone!r}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(
            f"num_classes must be an int >= 2 (background included), got {num_classes!r}"
        )
    if "bbox_reg_weights" in kwargs:
        raise ValueError("bbox_reg_weights is set by box_loss (1/sigma); do not pass it")
    if arch == "retinanet" and harmonic is not None:
        raise ValueError("harmonic weighting is available for fasterrcnn only (softmax RoI heads)")
    if arch == "retinanet" and box_head_dim is not None:
        raise ValueError("box_head_dim applies to fasterrcnn only")
    config = resolve_box_loss(box_loss)  # the one resolution of the preset
    stages = stage_losses(config, arch)
    trainable = kwargs.pop("trainable_backbone_layers", None)
    pretrained = backbone_weights_path is not None
    if anchor_sizes is not None:
        key = "anchor_generator" if arch == "retinanet" else "rpn_anchor_generator"
        kwargs[key] = anchor_generator(arch, backbone, anchor_sizes)
    if arch == "fasterrcnn":
        model = _build_fasterrcnn(backbone, num_classes, trainable, dict(kwargs), pretrained)
        if box_head_dim is not None:
            channels = model.backbone.out_channels
            model.roi_heads.box_head = TwoMLPHead(channels * 7 * 7, box_head_dim)
            model.roi_heads.box_predictor = FastRCNNPredictor(box_head_dim, num_classes)
        # the same pooling, with a faster backward pass on the CPU (it has no parameters)
        if type(model.roi_heads.box_roi_pool) is TorchvisionMultiScaleRoIAlign:
            model.roi_heads.box_roi_pool = MultiScaleRoIAlign.like(model.roi_heads.box_roi_pool)
    else:
        model = _build_retinanet(backbone, num_classes, trainable, dict(kwargs), pretrained)
    attach_box_loss(model, config, harmonic=harmonic, stages=stages)
    model.klhuber_arch = arch
    model.klhuber_backbone = backbone
    if backbone_weights_path is not None:
        load_backbone_weights(model, backbone, backbone_weights_path)
    if weights_path is not None:
        load_weights(model, weights_path)
    return model
