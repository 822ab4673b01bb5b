"""Faster R-CNN and RetinaNet from torchvision with the paper's box-regression losses.

:func:`build_model` builds torchvision's detectors (``torchvision.models.detection``) with one of
the backbones in :data:`BACKBONES`, never downloading weights, and puts the box loss of
:mod:`klhuber.detection.box_losses` into them through three small subclasses of torchvision's
own modules:

* :class:`KLRegionProposalNetwork` overrides ``RegionProposalNetwork.compute_loss``;
* :class:`KLRoIHeads` overrides the training branch of ``RoIHeads.forward`` (the only place
  where torchvision calls its module-level ``fastrcnn_loss``) and exposes
  :meth:`KLRoIHeads.compute_loss`;
* :class:`KLRetinaNetRegressionHead` overrides ``RetinaNetRegressionHead.compute_loss``.

Each also replaces the module's ``box_coder`` by one with weights :math:`1/\\sigma` (eq. 24, 28)
and the log or linear size target (eq. 27, Appendix D eq. 89-90), so encoding for the loss and
decoding at inference agree.  Nothing in torchvision is patched; sampling, matching and
normalisation are torchvision's (see :mod:`klhuber.detection.box_losses` for how the paper's
:math:`\\lambda` maps onto torchvision's normalisers), so the ``torchvision`` preset reproduces
torchvision's losses (to float rounding; tested).  :func:`attach_box_loss` does the same to a
torchvision model you built yourself.

Class-count convention is torchvision's: ``num_classes`` *includes* the background class
(index 0), for both architectures.
"""

from __future__ import annotations

from collections import OrderedDict
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection import (
    FasterRCNN,
    RetinaNet,
    fasterrcnn_mobilenet_v3_large_fpn,
    fasterrcnn_resnet50_fpn,
    retinanet_resnet50_fpn,
)
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import mobilenet_backbone, resnet_fpn_backbone
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.retinanet import (
    RetinaNetClassificationHead,
    RetinaNetHead,
    RetinaNetRegressionHead,
)
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.models.detection.rpn import RegionProposalNetwork
from torchvision.ops import FrozenBatchNorm2d, MultiScaleRoIAlign
from torchvision.ops.feature_pyramid_network import LastLevelP6P7

from klhuber.detection.backbones import convnet4_anchor_generator, convnet4_fpn
from klhuber.detection.box_losses import BoxRegressionLoss, resolve_box_loss, stage_losses

__all__ = [
    "ARCHS",
    "BACKBONES",
    "HARMONIC_CHOICES",
    "PY_FASTER_RCNN_DEFAULTS",
    "KLRegionProposalNetwork",
    "KLRetinaNetHead",
    "KLRetinaNetRegressionHead",
    "KLRoIHeads",
    "attach_box_loss",
    "build_model",
    "load_backbone_weights",
    "load_weights",
]

ARCHS = ("fasterrcnn", "retinanet")
#: ``harmonic=`` values of :class:`KLRoIHeads` (seed 004): which harmonic factors are constants.
HARMONIC_CHOICES = ("none", "both", "beta_r", "beta_c")
#: Backbone names.  ``vgg16`` is the paper's Faster R-CNN backbone (conv5_3, stride 16, one
#: feature map, no FPN); ``resnet101_fpn`` the paper's RetinaNet backbone; ``mobilenet_v3_fpn``
#: and ``resnet18_fpn`` are small ones for CPU runs and tests.  ``vgg16_bn`` is VGG-16 with
#: batch norm, easier to train from scratch.  ``convnet4_fpn`` is a 4-stage 32-128-channel
#: ConvNet with a 64-channel FPN (:mod:`klhuber.detection.backbones`), sized for 64-px images
#: on a CPU: the backbone of the ``cpu`` experiment profile.
BACKBONES = (
    "vgg16",
    "vgg16_bn",
    "resnet101_fpn",
    "resnet50_fpn",
    "resnet18_fpn",
    "mobilenet_v3_fpn",
    "convnet4_fpn",
)

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


# ----------------------------------------------------------------------------------------------
# Loss plumbing: subclasses of torchvision's modules


class KLRegionProposalNetwork(RegionProposalNetwork):
    """torchvision's RPN with a configurable box loss (Table 1, *Proposal* column).

    Loss: :math:`\\frac{1}{N}\\sum_{\\text{pos}}\\sum_c \\ell(t_c - \\tilde t_c^*)` with
    :math:`N` the number of sampled anchors in the batch, as torchvision (and py-faster-rcnn).
    With ``BoxRegressionLoss(kind="huber", lam=1, alpha=1/9)`` this is torchvision's
    ``smooth_l1_loss(beta=1/9, reduction="sum") / N``.  Sampling consumes the random number
    generator exactly as torchvision does.
    """

    def __init__(self, *args: Any, box_loss: BoxRegressionLoss, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.box_loss = box_loss
        self.box_coder = box_loss.box_coder()

    @classmethod
    def from_torchvision(
        cls, rpn: RegionProposalNetwork, box_loss: BoxRegressionLoss
    ) -> KLRegionProposalNetwork:
        """Same sub-modules and settings as ``rpn`` (no new parameters), new box loss."""
        new = cls(
            rpn.anchor_generator,
            rpn.head,
            fg_iou_thresh=rpn.proposal_matcher.high_threshold,
            bg_iou_thresh=rpn.proposal_matcher.low_threshold,
            batch_size_per_image=rpn.fg_bg_sampler.batch_size_per_image,
            positive_fraction=rpn.fg_bg_sampler.positive_fraction,
            pre_nms_top_n=dict(rpn._pre_nms_top_n),
            post_nms_top_n=dict(rpn._post_nms_top_n),
            nms_thresh=rpn.nms_thresh,
            score_thresh=rpn.score_thresh,
            box_loss=box_loss,
        )
        new.min_size = rpn.min_size
        new.train(rpn.training)
        return new

    def compute_loss(
        self,
        objectness: Tensor,
        pred_bbox_deltas: Tensor,
        labels: list[Tensor],
        regression_targets: list[Tensor],
    ) -> tuple[Tensor, Tensor]:
        """Objectness (BCE, as torchvision) and box loss normalised by sampled anchors."""
        sampled_pos_inds, sampled_neg_inds = self.fg_bg_sampler(labels)
        sampled_pos_inds = torch.where(torch.cat(sampled_pos_inds, dim=0))[0]
        sampled_neg_inds = torch.where(torch.cat(sampled_neg_inds, dim=0))[0]
        sampled_inds = torch.cat([sampled_pos_inds, sampled_neg_inds], dim=0)

        objectness = objectness.flatten()
        labels_cat = torch.cat(labels, dim=0)
        targets = torch.cat(regression_targets, dim=0)

        box_loss = self.box_loss(pred_bbox_deltas[sampled_pos_inds], targets[sampled_pos_inds])
        box_loss = box_loss / max(1, sampled_inds.numel())
        objectness_loss = F.binary_cross_entropy_with_logits(
            objectness[sampled_inds], labels_cat[sampled_inds]
        )
        return objectness_loss, box_loss


class KLRoIHeads(RoIHeads):
    """torchvision's box RoI heads with a configurable box loss (Table 1, *Detection* column).

    Loss: :math:`\\frac{1}{N}\\sum_{\\text{pos}}\\sum_c \\ell(t_c - \\tilde t_c^*)` on the
    class-specific box of each positive proposal, :math:`N` the number of sampled proposals in
    the batch, as torchvision's ``fastrcnn_loss`` (and py-faster-rcnn with 128 RoIs per image).
    Box-only (no mask / keypoint branches).  ``bbox_reg_weights`` are taken from the loss
    (:math:`1/\\sigma`); torchvision's defaults (10, 10, 5, 5) are
    :math:`\\sigma = (1/10, 1/10, 1/5, 1/5)`.
    """

    def __init__(
        self,
        *args: Any,
        box_loss: BoxRegressionLoss,
        harmonic: str | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs["bbox_reg_weights"] = box_loss.weights
        super().__init__(*args, **kwargs)
        self.box_loss = box_loss
        self.box_coder = box_loss.box_coder()
        if harmonic is not None and harmonic not in HARMONIC_CHOICES:
            raise ValueError(
                f"harmonic must be None or one of {HARMONIC_CHOICES}, got {harmonic!r}"
            )
        self.harmonic = harmonic

    @classmethod
    def from_torchvision(
        cls, heads: RoIHeads, box_loss: BoxRegressionLoss, harmonic: str | None = None
    ) -> KLRoIHeads:
        """Same sub-modules and settings as ``heads`` (no new parameters), new box loss."""
        if heads.has_mask() or heads.has_keypoint():
            raise ValueError("KLRoIHeads supports box heads only (no mask or keypoint branch)")
        new = cls(
            heads.box_roi_pool,
            heads.box_head,
            heads.box_predictor,
            fg_iou_thresh=heads.proposal_matcher.high_threshold,
            bg_iou_thresh=heads.proposal_matcher.low_threshold,
            batch_size_per_image=heads.fg_bg_sampler.batch_size_per_image,
            positive_fraction=heads.fg_bg_sampler.positive_fraction,
            score_thresh=heads.score_thresh,
            nms_thresh=heads.nms_thresh,
            detections_per_img=heads.detections_per_img,
            box_loss=box_loss,
            harmonic=harmonic,
        )
        new.train(heads.training)
        return new

    def compute_loss(
        self,
        class_logits: Tensor,
        box_regression: Tensor,
        labels: list[Tensor],
        regression_targets: list[Tensor],
    ) -> tuple[Tensor, Tensor]:
        """Cross entropy (as torchvision) and box loss normalised by sampled proposals.

        With ``harmonic`` set, positive proposals use the Harmonic loss of seed 004 (eq. 1):
        their cross entropy is weighted by :math:`1 + e^{-\\mathcal L_{reg}}` and their box loss
        by :math:`1 + p` (``harmonic`` names the factors treated as constants, as the
        ``detach`` argument of :func:`klhuber.related.harmonic.harmonic_factors`); negatives
        keep plain cross entropy; both sums are still divided by the number of sampled
        proposals.
        """
        labels_cat = torch.cat(labels, dim=0)
        targets = torch.cat(regression_targets, dim=0)
        pos = torch.where(labels_cat > 0)[0]
        labels_pos = labels_cat[pos]
        n = class_logits.shape[0]
        box_regression = box_regression.reshape(n, box_regression.size(-1) // 4, 4)
        pred_pos = box_regression[pos, labels_pos]
        norm = max(1, labels_cat.numel())
        if self.harmonic is None:
            classification_loss = F.cross_entropy(class_logits, labels_cat)
            box_loss = self.box_loss(pred_pos, targets[pos]) / norm
            return classification_loss, box_loss

        from klhuber.related.harmonic import harmonic_factors

        ce = F.cross_entropy(class_logits, labels_cat, reduction="none")
        reg = self.box_loss.per_sample(pred_pos, targets[pos])
        w_cls, w_reg = harmonic_factors(ce[pos], reg, self.harmonic)
        classification_loss = (ce.sum() + ((w_cls - 1) * ce[pos]).sum()) / max(1, ce.numel())
        box_loss = (w_reg * reg).sum() / norm
        return classification_loss, box_loss

    def forward(
        self,
        features: dict[str, Tensor],
        proposals: list[Tensor],
        image_shapes: list[tuple[int, int]],
        targets: list[dict[str, Tensor]] | None = None,
    ) -> tuple[list[dict[str, Tensor]], dict[str, Tensor]]:
        """Inference: torchvision's.  Training: torchvision's sampling, then
        :meth:`compute_loss` in place of torchvision's module-level ``fastrcnn_loss``."""
        if not self.training:
            return super().forward(features, proposals, image_shapes, targets)
        if self.has_mask() or self.has_keypoint():
            raise ValueError("KLRoIHeads supports box heads only (no mask or keypoint branch)")
        if targets is None:
            raise ValueError("targets should not be None in training mode")
        for t in targets:
            if t["boxes"].dtype not in (torch.float, torch.double, torch.half):
                raise TypeError(f"target boxes must of float type, instead got {t['boxes'].dtype}")
            if t["labels"].dtype != torch.int64:
                raise TypeError(
                    f"target labels must of int64 type, instead got {t['labels'].dtype}"
                )
        proposals, _, labels, regression_targets = self.select_training_samples(proposals, targets)
        box_features = self.box_roi_pool(features, proposals, image_shapes)
        box_features = self.box_head(box_features)
        class_logits, box_regression = self.box_predictor(box_features)
        loss_classifier, loss_box_reg = self.compute_loss(
            class_logits, box_regression, labels, regression_targets
        )
        return [], {"loss_classifier": loss_classifier, "loss_box_reg": loss_box_reg}


class KLRetinaNetRegressionHead(RetinaNetRegressionHead):
    """RetinaNet's regression head with a configurable box loss (the paper's RetinaNet runs use
    the *Proposal* column of Table 1, section 7.2).

    Loss: per image :math:`\\frac{1}{N_{fg}}\\sum_{\\text{fg}}\\sum_c \\ell(t_c - \\tilde t_c^*)`,
    then the mean over images, as torchvision.  Stock torchvision uses
    ``BoxRegressionLoss(kind="l1", lam=1, sigma=(1, 1, 1, 1))``.
    """

    def __init__(
        self,
        in_channels: int,
        num_anchors: int,
        norm_layer: Any = None,
        *,
        box_loss: BoxRegressionLoss,
    ) -> None:
        super().__init__(in_channels, num_anchors, norm_layer=norm_layer)
        self.box_loss = box_loss
        self.box_coder = box_loss.box_coder()

    @classmethod
    def from_torchvision(
        cls, head: RetinaNetRegressionHead, box_loss: BoxRegressionLoss
    ) -> KLRetinaNetRegressionHead:
        """Adopt ``head``'s layers (no new parameters, no random numbers drawn)."""
        new = cls.__new__(cls)
        nn.Module.__init__(new)
        new.conv = head.conv
        new.bbox_reg = head.bbox_reg
        new._loss_type = head._loss_type
        new.box_loss = box_loss
        new.box_coder = box_loss.box_coder()
        new.train(head.training)
        return new

    def compute_loss(
        self,
        targets: list[dict[str, Tensor]],
        head_outputs: dict[str, Tensor],
        anchors: list[Tensor],
        matched_idxs: list[Tensor],
    ) -> Tensor:
        """Box loss per image over foreground anchors / their count, mean over images.

        Same value as torchvision's per-image loop (up to float rounding), but the loss is
        evaluated once for the whole batch (each foreground anchor weighted by
        1 / (its image's count x images)), so an expensive ``kind`` costs one call per step,
        not one per image.
        """
        bbox_regression = head_outputs["bbox_regression"]
        preds, codes, weights = [], [], []
        num_images = max(1, len(targets))
        for targets_i, regression_i, anchors_i, matched_i in zip(
            targets, bbox_regression, anchors, matched_idxs
        ):
            fg = torch.where(matched_i >= 0)[0]
            matched_gt = targets_i["boxes"][matched_i[fg]]
            preds.append(regression_i[fg, :])
            codes.append(self.box_coder.encode_single(matched_gt, anchors_i[fg]))
            scale = 1.0 / (max(1, fg.numel()) * num_images)
            weights.append(torch.full((fg.numel(),), scale, device=regression_i.device))
        per_anchor = self.box_loss.per_sample(torch.cat(preds), torch.cat(codes))
        return (per_anchor * torch.cat(weights).to(per_anchor.dtype)).sum()


class KLRetinaNetHead(RetinaNetHead):
    """RetinaNet head whose regression branch is :class:`KLRetinaNetRegressionHead`.

    Parameters are created in the same order as torchvision's ``RetinaNetHead`` (classification
    branch first), so a fixed seed gives the same initial weights as torchvision.
    """

    def __init__(
        self,
        in_channels: int,
        num_anchors: int,
        num_classes: int,
        norm_layer: Any = None,
        *,
        box_loss: BoxRegressionLoss,
    ) -> None:
        nn.Module.__init__(self)  # RetinaNetHead.__init__ would build a second regression head
        self.classification_head = RetinaNetClassificationHead(
            in_channels, num_anchors, num_classes, norm_layer=norm_layer
        )
        self.regression_head = KLRetinaNetRegressionHead(
            in_channels, num_anchors, norm_layer=norm_layer, box_loss=box_loss
        )


# ----------------------------------------------------------------------------------------------
# Attaching losses to models


def attach_box_loss(
    model: nn.Module, box_loss: Any = "torchvision", harmonic: str | None = None
) -> nn.Module:
    """Put the box loss ``box_loss`` (preset name or ``BoxLossConfig``) into a torchvision
    ``FasterRCNN`` or ``RetinaNet`` in place and return it.

    Modules are swapped for the subclasses of this module that share the original layers, so
    ``state_dict`` keys and values are unchanged.  Also sets ``model.box_coder`` of a RetinaNet
    (used to decode detections) and records the config as ``model.klhuber_box_loss``.
    ``harmonic`` (Faster R-CNN only) switches on Harmonic weighting in the RoI heads
    (:meth:`KLRoIHeads.compute_loss`).
    """
    config = resolve_box_loss(box_loss)
    if isinstance(model, FasterRCNN):
        stages = stage_losses(config, "fasterrcnn")
        model.rpn = KLRegionProposalNetwork.from_torchvision(model.rpn, stages["rpn"])
        model.roi_heads = KLRoIHeads.from_torchvision(model.roi_heads, stages["roi"], harmonic)
    elif isinstance(model, RetinaNet):
        if harmonic is not None:
            raise ValueError(
                "harmonic weighting is available for fasterrcnn only (softmax RoI heads)"
            )
        stages = stage_losses(config, "retinanet")
        loss = stages["retinanet"]
        model.head.regression_head = KLRetinaNetRegressionHead.from_torchvision(
            model.head.regression_head, loss
        )
        model.box_coder = model.head.regression_head.box_coder
    else:
        raise ValueError(
            f"model must be a torchvision FasterRCNN or RetinaNet, got {type(model).__name__}"
        )
    model.klhuber_box_loss = config
    model.klhuber_stage_losses = stages
    return model


# ----------------------------------------------------------------------------------------------
# Backbones


class _VGGBoxHead(nn.Sequential):
    """fc6 / fc7 of VGG-16 on 7x7 RoI features (py-faster-rcnn's detection network)."""

    def __init__(self, classifier: nn.Sequential) -> None:
        # torchvision's VGG classifier: Linear, ReLU, Dropout, Linear, ReLU, Dropout, Linear.
        super().__init__(nn.Flatten(start_dim=1), *list(classifier.children())[:-1])
        self.out_channels = 4096


def _vgg_parts(
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


def _retinanet_anchors(num_levels: int, first_stride: int) -> AnchorGenerator:
    """RetinaNet anchors (3 scales x 3 ratios, size 4 x stride) for ``num_levels`` levels."""
    sizes = tuple(
        tuple(int(4 * first_stride * 2**level * 2 ** (k / 3)) for k in range(3))
        for level in range(num_levels)
    )
    return AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * num_levels)


def _norm(pretrained: bool) -> type[nn.Module]:
    # torchvision's rule: frozen batch norm on top of pretrained weights, trainable from scratch.
    return FrozenBatchNorm2d if pretrained else nn.BatchNorm2d


def _resnet_body(backbone: str, trainable: int | None, pretrained: bool, **extra: Any) -> nn.Module:
    default = 3 if pretrained else 5
    return resnet_fpn_backbone(
        backbone_name=_resnet_name(backbone),
        weights=None,
        norm_layer=_norm(pretrained),
        trainable_layers=default if trainable is None else trainable,
        **extra,
    )


def _mobilenet_body(trainable: int | None, pretrained: bool, **extra: Any) -> nn.Module:
    default = 3 if pretrained else 6
    return mobilenet_backbone(
        backbone_name="mobilenet_v3_large",
        weights=None,
        fpn=True,
        norm_layer=_norm(pretrained),
        trainable_layers=default if trainable is None else trainable,
        **extra,
    )


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
            "rpn_anchor_generator": AnchorGenerator(
                ((32, 64, 128, 256, 512),) * 3, ((0.5, 1.0, 2.0),) * 3
            ),
            **kwargs,
        }
        return FasterRCNN(_mobilenet_body(trainable, pretrained), num_classes, **kwargs)
    if backbone.startswith("resnet"):
        return FasterRCNN(_resnet_body(backbone, trainable, pretrained), num_classes, **kwargs)
    if backbone == "convnet4_fpn":
        return _build_convnet4_fasterrcnn(num_classes, trainable, kwargs, pretrained)
    # vgg16 / vgg16_bn: py-faster-rcnn's network on conv5_3 (one map, stride 16).
    features, classifier = _vgg_parts(backbone, trainable, pretrained)
    defaults = dict(PY_FASTER_RCNN_DEFAULTS)
    defaults["rpn_anchor_generator"] = AnchorGenerator(((128, 256, 512),), ((0.5, 1.0, 2.0),))
    defaults["box_roi_pool"] = MultiScaleRoIAlign(
        featmap_names=["0"], output_size=7, sampling_ratio=2
    )
    kwargs = {**defaults, **kwargs}
    box_head = kwargs.pop("box_head", None)
    if box_head is None:
        box_head = _VGGBoxHead(classifier)
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
    defaults: dict[str, Any] = {"rpn_anchor_generator": convnet4_anchor_generator("fasterrcnn")}
    if kwargs.get("box_head") is None and kwargs.get("box_predictor") is None:
        defaults["box_head"] = TwoMLPHead(body.out_channels * 7 * 7, 256)
        defaults["box_predictor"] = FastRCNNPredictor(256, num_classes)
        num_classes_arg = None
    else:
        num_classes_arg = num_classes
    merged = {**defaults, **{k: v for k, v in kwargs.items() if v is not None}}
    return FasterRCNN(body, num_classes_arg, **merged)


def _build_retinanet(
    backbone: str,
    num_classes: int,
    trainable: int | None,
    kwargs: dict,
    loss: BoxRegressionLoss,
    pretrained: bool,
) -> RetinaNet:
    head_norm = None
    if backbone == "resnet50_fpn" and not pretrained:
        model = retinanet_resnet50_fpn(
            weights=None,
            weights_backbone=None,
            num_classes=num_classes,
            trainable_backbone_layers=trainable,
            **kwargs,
        )
        model.head.regression_head = KLRetinaNetRegressionHead.from_torchvision(
            model.head.regression_head, loss
        )
        return model
    if backbone.startswith("resnet"):
        # As torchvision's retinanet_resnet50_fpn: C3-C5 + P6/P7 from P5, 5 levels, stride 8.
        body = _resnet_body(
            backbone,
            trainable,
            pretrained,
            returned_layers=[2, 3, 4],
            extra_blocks=LastLevelP6P7(256, 256),
        )
        anchors = _retinanet_anchors(5, 8)
    elif backbone == "convnet4_fpn":
        _no_pretrained_convnet4(trainable, pretrained)
        body = convnet4_fpn(extra_pool=False)
        anchors = convnet4_anchor_generator("retinanet")
        head_norm = partial(nn.GroupNorm, 16)  # GroupNorm in the head: stable from scratch
    elif backbone == "mobilenet_v3_fpn":
        # The last two stages (stride 16, 32) + P6/P7: 4 levels.
        body = _mobilenet_body(trainable, pretrained, extra_blocks=LastLevelP6P7(256, 256))
        anchors = _retinanet_anchors(4, 16)
    else:  # vgg16 / vgg16_bn: one map of stride 16
        body, _ = _vgg_parts(backbone, trainable, pretrained)
        anchors = AnchorGenerator(
            (tuple(int(s * 2 ** (k / 3)) for s in (32, 64, 128, 256, 512) for k in range(3)),),
            ((0.5, 1.0, 2.0),),
        )
    if kwargs.get("anchor_generator") is not None:
        anchors = kwargs.pop("anchor_generator")
    kwargs.pop("anchor_generator", None)
    head = kwargs.pop("head", None)
    if head is None:
        head = KLRetinaNetHead(
            body.out_channels, anchors.num_anchors_per_location()[0], num_classes,
            norm_layer=head_norm, box_loss=loss
        )
    elif not isinstance(head.regression_head, KLRetinaNetRegressionHead):
        head.regression_head = KLRetinaNetRegressionHead.from_torchvision(
            head.regression_head, loss
        )
    return RetinaNet(body, num_classes, anchor_generator=anchors, head=head, **kwargs)


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


def _backbone_targets(
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
    if isinstance(model, FasterRCNN) and isinstance(model.roi_heads.box_head, _VGGBoxHead):
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
    ``vgg16`` weights) into the backbone of a model from :func:`build_model`.

    Every backbone parameter and buffer must be present with the right shape (else
    ``ValueError``); the classifier's last layer is ignored.  VGG's fc6/fc7 initialise the
    Faster R-CNN box head, as in py-faster-rcnn.
    """
    state = _load_state(path, "backbone_weights_path")
    for module, mapped in _backbone_targets(model, backbone, state):
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


def build_model(
    arch: str,
    num_classes: int,
    box_loss: Any = "torchvision",
    backbone: str = "resnet50_fpn",
    weights_path: str | Path | None = None,
    *,
    backbone_weights_path: str | Path | None = None,
    harmonic: str | None = None,
    **kwargs: Any,
) -> nn.Module:
    """A torchvision detector with the box loss of the paper.

    Args:
        arch: ``"fasterrcnn"`` or ``"retinanet"``.
        num_classes: number of classes *including* background (torchvision's convention).
        box_loss: a preset name of :mod:`klhuber.interpret` (``"publication"``,
            ``"implementation"``, ``"experiment_a"``, ..., ``"torchvision"``) or a
            :class:`klhuber.interpret.BoxLossConfig`.  ``proposal`` drives the RPN and
            RetinaNet's head, ``detection`` the RoI heads; box-coder weights are
            :math:`1/\\sigma` (eq. 24, 28) and the loss is :math:`(\\lambda/\\alpha) H_\\alpha`
            (eq. 26, 32), :math:`(\\lambda/\\alpha) D_{\\alpha/2,1/\\alpha}` (Appendix E) or the
            linear size target (Appendix D); see :mod:`klhuber.detection.box_losses`.
        backbone: one of :data:`BACKBONES`.  No pretrained weights are ever downloaded; from
            scratch, the backbone uses trainable batch norm, as torchvision does.
        weights_path: optional local state dict of the whole detector (:func:`load_weights`).
        backbone_weights_path: optional local torchvision *classification* checkpoint for the
            backbone (ImageNet weights, as the paper's experiments use;
            :func:`load_backbone_weights`).  As torchvision does with pretrained backbones,
            batch norm is then frozen (``FrozenBatchNorm2d``) and ``trainable_backbone_layers``
            defaults to 3 (py-faster-rcnn's conv1-conv2 frozen, for VGG).
        harmonic: optional Harmonic weighting of the RoI heads' losses (related work, seed 004;
            Faster R-CNN only): one of :data:`HARMONIC_CHOICES`, see
            :meth:`KLRoIHeads.compute_loss`.  ``None`` (default) is the paper's setting.
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
    config = resolve_box_loss(box_loss)
    stages = stage_losses(config, arch)
    trainable = kwargs.pop("trainable_backbone_layers", None)
    pretrained = backbone_weights_path is not None
    if arch == "fasterrcnn":
        model = _build_fasterrcnn(backbone, num_classes, trainable, dict(kwargs), pretrained)
        model = attach_box_loss(model, config, harmonic=harmonic)
    else:
        if harmonic is not None:
            raise ValueError(
                "harmonic weighting is available for fasterrcnn only (softmax RoI heads)"
            )
        model = _build_retinanet(
            backbone, num_classes, trainable, dict(kwargs), stages["retinanet"], pretrained
        )
        model.box_coder = model.head.regression_head.box_coder
        model.klhuber_box_loss = config
        model.klhuber_stage_losses = stages
    model.klhuber_arch = arch
    model.klhuber_backbone = backbone
    if backbone_weights_path is not None:
        load_backbone_weights(model, backbone, backbone_weights_path)
    if weights_path is not None:
        load_weights(model, weights_path)
    return model
