"""The paper's box losses inside torchvision's detectors: three small subclasses of
torchvision's own modules and :func:`attach_box_loss`, which swaps them in.

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
torchvision's losses (to float rounding; tested).  The modules share the original layers, so
``state_dict`` keys and values are unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection import FasterRCNN, RetinaNet
from torchvision.models.detection.retinanet import (
    RetinaNetClassificationHead,
    RetinaNetHead,
    RetinaNetRegressionHead,
)
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.models.detection.rpn import RegionProposalNetwork

from klhuber.detection.box_losses import BoxRegressionLoss, resolve_box_loss, stage_losses
from klhuber.interpret import BoxLossConfig

__all__ = [
    "HARMONIC_CHOICES",
    "KLRegionProposalNetwork",
    "KLRetinaNetHead",
    "KLRetinaNetRegressionHead",
    "KLRoIHeads",
    "attach_box_loss",
]

#: The ``harmonic=`` values of :class:`KLRoIHeads` (the Harmonic loss of Wang and Zhang); each
#: names the harmonic factors treated as constants.
HARMONIC_CHOICES = ("none", "both", "beta_r", "beta_c")


# ----------------------------------------------------------------------------------------------
# Loss plumbing: subclasses of torchvision's modules


def _use_box_loss(module: nn.Module, box_loss: BoxRegressionLoss) -> None:
    """Give ``module`` (an RPN, RoI heads or RetinaNet regression head) ``box_loss`` and the
    box coder of that loss's targets."""
    module.box_loss = box_loss
    module.box_coder = box_loss.box_coder()


def _sampling(module: RegionProposalNetwork | RoIHeads) -> dict[str, Any]:
    """The matching thresholds and the sampling of a torchvision RPN or RoI heads, as keyword
    arguments of its constructor."""
    return {
        "fg_iou_thresh": module.proposal_matcher.high_threshold,
        "bg_iou_thresh": module.proposal_matcher.low_threshold,
        "batch_size_per_image": module.fg_bg_sampler.batch_size_per_image,
        "positive_fraction": module.fg_bg_sampler.positive_fraction,
    }


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
        _use_box_loss(self, box_loss)

    @classmethod
    def from_torchvision(
        cls, rpn: RegionProposalNetwork, box_loss: BoxRegressionLoss
    ) -> KLRegionProposalNetwork:
        """Same sub-modules and settings as ``rpn`` (no new parameters), new box loss."""
        new = cls(
            rpn.anchor_generator,
            rpn.head,
            **_sampling(rpn),
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
        _use_box_loss(self, box_loss)
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
            **_sampling(heads),
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

        With ``harmonic`` set, positive proposals use the Harmonic loss of Wang and Zhang (their eq. 1):
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
        _use_box_loss(self, box_loss)

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
        _use_box_loss(new, box_loss)
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
            # float64 weights for float64 losses (torchvision divides in the loss's dtype);
            # float32 for float32 and narrower, as before
            weight_dtype = torch.promote_types(regression_i.dtype, torch.float32)
            weights.append(torch.full((fg.numel(),), scale, dtype=weight_dtype,
                                      device=regression_i.device))
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
    model: nn.Module,
    box_loss: str | BoxLossConfig = "torchvision",
    harmonic: str | None = None,
    *,
    stages: Mapping[str, BoxRegressionLoss] | None = None,
) -> nn.Module:
    """Put the box loss ``box_loss`` (preset name or ``BoxLossConfig``) into a torchvision
    ``FasterRCNN`` or ``RetinaNet`` in place and return it.

    Modules are swapped for the subclasses of this module that share the original layers, so
    ``state_dict`` keys and values are unchanged (and no random numbers are drawn).  Also sets
    ``model.box_coder`` of a RetinaNet (used to decode detections) and records the config as
    ``model.klhuber_box_loss`` and the per-stage losses as ``model.klhuber_stage_losses``.
    ``harmonic`` (Faster R-CNN only) switches on Harmonic weighting in the RoI heads
    (:meth:`KLRoIHeads.compute_loss`).  ``stages``, the
    :func:`~klhuber.detection.box_losses.stage_losses` of ``box_loss`` when the caller has them
    already (as :func:`klhuber.detection.models.build_model`), are used as given.
    """
    config = resolve_box_loss(box_loss)
    if isinstance(model, FasterRCNN):
        stages = dict(stages) if stages is not None else stage_losses(config, "fasterrcnn")
        model.rpn = KLRegionProposalNetwork.from_torchvision(model.rpn, stages["rpn"])
        model.roi_heads = KLRoIHeads.from_torchvision(model.roi_heads, stages["roi"], harmonic)
    elif isinstance(model, RetinaNet):
        if harmonic is not None:
            raise ValueError(
                "harmonic weighting is available for fasterrcnn only (softmax RoI heads)"
            )
        stages = dict(stages) if stages is not None else stage_losses(config, "retinanet")
        model.head.regression_head = KLRetinaNetRegressionHead.from_torchvision(
            model.head.regression_head, stages["retinanet"]
        )
        model.box_coder = model.head.regression_head.box_coder
    else:
        raise ValueError(
            f"model must be a torchvision FasterRCNN or RetinaNet, got {type(model).__name__}"
        )
    model.klhuber_box_loss = config
    model.klhuber_stage_losses = stages
    return model
