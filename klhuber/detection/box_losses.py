"""Bounding-box regression losses of the paper, as plug-ins for torchvision's detectors.

Section 6 of the paper writes the box loss of one detector stage (the region proposal network,
the detection network, or RetinaNet's single regression head) with four hyper-parameters per
coordinate: the weight :math:`\\lambda`, the Huber transition point :math:`\\alpha` and the
target scale :math:`\\sigma` (the shift :math:`\\mu` is zero everywhere, footnote 3).

Targets (the box *parameterisation*) are those of eq. 22, 24, 27 and 28,

.. math::

    \\tilde t_x^* = \\frac{x^* - x_a}{\\sigma_x w_a}, \\qquad
    \\tilde t_w^* = \\frac{\\log(w^*/w_a)}{\\sigma_w},

and, for Appendix D (eq. 89-90), the *linear* width/height target
:math:`\\tilde t_w^* = (w^*/w_a - 1)/\\sigma_w`.  A torchvision ``BoxCoder`` with weights
``(1/σx, 1/σy, 1/σw, 1/σh)`` computes exactly the log form; :class:`LinearWHBoxCoder` computes
the linear one.

The loss :math:`\\ell` applied to the residual :math:`r = t - \\tilde t^*` (per coordinate; per box
for ``hiou``) is

* ``huber``: :math:`\\frac{\\lambda}{\\alpha} H_\\alpha(r)` (eq. 4, 26, 32);
* ``kl``: :math:`\\frac{\\lambda}{\\alpha} D_{\\alpha/2,\\,1/\\alpha}(r)` (eq. 16, 20, Appendix E);
* ``smooth_l1``: :math:`\\lambda\\,\\mathrm{SmoothL1}_{\\beta=\\alpha}(r)`, which equals ``huber``
  (:math:`\\mathrm{SmoothL1}_\\beta = H_\\beta/\\beta`); :math:`\\beta = 0` is plain L1;
* ``l1``: :math:`\\lambda\\,|r|` (``alpha`` unused; torchvision's RetinaNet);
* ``hiou``: :math:`\\lambda\\,(1+\\mathrm{IoU})^{\\gamma}(1-\\mathrm{IoU})` per box, with
  :math:`\\gamma` = ``alpha`` in [0, 1] (Wang and Zhang, arXiv 2020, supplement eqs. 11 and 13).

``kl`` is Appendix E: "we simply replace :math:`H_\\alpha` with :math:`D_{\\alpha/2,1/\\alpha}`
with no other modifications", i.e. the factor :math:`\\lambda/\\alpha` in front stays.  By
eq. 20 the ``kl`` loss is an upper bound of the ``huber`` loss with the same parameters.

.. rubric:: How λ meets torchvision's normalisation

The loss of a stage is :math:`\\frac{1}{N}\\sum_{i\\in\\text{pos}}\\sum_{c\\in\\{x,y,w,h\\}}
\\ell(r_{ic})`, where only the normaliser :math:`N` differs between stages, and it is kept
exactly as torchvision computes it (so that the ``torchvision`` preset reproduces torchvision):

* RPN: :math:`N` = number of *sampled* anchors (positives and negatives) in the batch,
  256 per image by default;
* RoI heads: :math:`N` = number of *sampled* proposals in the batch (torchvision's default is
  512 per image; the ``vgg16`` backbone of :func:`klhuber.detection.models.build_model` uses
  py-faster-rcnn's 128);
* RetinaNet: per image, :math:`N` = number of foreground anchors of that image, then the mean
  over images.

These are the normalisations of py-faster-rcnn (the implementation the paper experiments
with): its ``SmoothL1Loss`` layers (``sigma=3`` for the RPN, i.e. :math:`\\alpha = 1/9`) sum over
positives and coordinates and divide by the number of sampled anchors (RPN, outside weights
:math:`1/N`, one image per batch) or sampled RoIs (detection network, ``bottom[0]->num()``), and
Detectron's RetinaNet divides by the number of foreground anchors.  Therefore the :math:`\\lambda`
of the paper's Table 1 is used *unchanged*, as a plain multiplier on top of the framework's
normalisation: ``lam=1`` with ``alpha=1/9`` and ``sigma=1`` equals (to rounding) torchvision's RPN
loss ``smooth_l1_loss(beta=1/9, reduction="sum") / N``.  (Detectron2's RetinaNet divides by the
foreground count of the whole batch, smoothed over iterations, rather than per image; the two
agree in expectation.)

The *Publication* column (:math:`\\lambda = 10`) needs a remark.  In the Faster R-CNN paper
:math:`\\lambda = 10` goes with :math:`N_{reg} \\approx 2400` (anchor locations), so its effective
weight :math:`10/2400 \\approx 1/240` is close to the implementation's :math:`1/256`.  Meyer
instead interprets :math:`\\lambda = 10` as a factor 10 on the loss (eq. 21: prediction scale
:math:`w_a/10`, Table 2), and that is what this module implements: ``lam=10`` multiplies the
loss normalised by the number of sampled anchors / RoIs, as in the implementation.  If you want
the Faster R-CNN paper's literal normalisation instead, divide ``lam`` by
:math:`N_{reg}/N_{sampled}` (about 2400/256 for the RPN).

.. rubric:: Extension points

The kinds live in one registry (:func:`klhuber.interpret.loss_kind`: each kind's function,
accepted α and Table 2 label factor); :func:`register_box_loss_kind` adds a new ``kind``.  A kind receives predicted and target
*codes* ``(n, 4)`` of the positives and returns per-coordinate ``(n, 4)`` or per-box ``(n,)``
losses.  Because the IoU of two axis-aligned boxes is invariant under a per-axis positive affine
map, IoU-type losses can be computed from codes alone by decoding both against the unit box
(:func:`decode_against_unit_box`); that is how ``hiou`` (:func:`klhuber.related.harmonic.hiou_loss`)
works in all three stages without seeing the anchors.  Harmonic weighting (Wang and Zhang, eq. 1),
which couples the box loss to classification scores, lives in
:meth:`klhuber.detection.heads.KLRoIHeads.compute_loss` (``harmonic=``), the one stage with a
softmax classifier; per-sample losses come from :meth:`BoxRegressionLoss.per_sample`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from numbers import Real
from typing import Any

import torch
from torch import Tensor
from torchvision.models.detection._utils import BoxCoder

from klhuber.interpret import BoxLossConfig, LossKind, StageLoss, detector_stages, get_preset
from klhuber.interpret.kinds import BUILTIN_KINDS, loss_kind, register_loss_kind
from klhuber.interpret.kinds import loss_kinds as _registered_kinds
from klhuber.interpret.stage import WH_TARGETS

__all__ = [
    "ARCH_STAGE_OVERRIDES",
    "DEFAULT_XFORM_CLIP",
    "LOSS_KINDS",
    "WH_TARGETS",
    "BoxRegressionLoss",
    "LinearWHBoxCoder",
    "decode_against_unit_box",
    "loss_kinds",
    "make_box_coder",
    "register_box_loss_kind",
    "resolve_box_loss",
    "stage_losses",
]

#: Default clamp of the decoded log-size offsets, as torchvision (``log(1000 / 16)``).
DEFAULT_XFORM_CLIP = math.log(1000.0 / 16)

KindFn = Callable[[Tensor, Tensor, "BoxRegressionLoss"], Tensor]


def register_box_loss_kind(name: str, fn: KindFn, *, overwrite: bool = False) -> None:
    """Register a box-loss ``kind`` usable in :class:`BoxRegressionLoss`.

    ``fn(pred, target, loss)`` gets the predicted and target codes of the positive samples,
    both ``(n, 4)`` (target already divided by σ, eq. 24/28), and returns a tensor whose sum is
    the stage's un-normalised box loss (λ must be applied by ``fn``).  The kind joins the one
    registry of :func:`klhuber.interpret.loss_kind` (α > 0, no Table 2 reading); register a
    :class:`klhuber.interpret.LossKind` with :func:`klhuber.interpret.register_loss_kind` to
    declare another α domain or a label factor.
    """
    if not isinstance(name, str) or not name:
        raise ValueError("name must be a non-empty string")
    register_loss_kind(LossKind(name, fn), overwrite=overwrite)


def loss_kinds() -> tuple[str, ...]:
    """Names of the registered loss kinds (built-in and :func:`register_box_loss_kind`)."""
    return _registered_kinds()


#: The built-in kinds, the paper's (``huber``, ``kl``), the frameworks' (``smooth_l1``, ``l1``) and
#: the HIoU loss of the related work (``hiou``, γ = ``alpha`` in [0, 1], per box).
LOSS_KINDS: tuple[str, ...] = BUILTIN_KINDS


class LinearWHBoxCoder(BoxCoder):
    """Box coder with the linear width/height target of Appendix D (eq. 89-90).

    Centres as torchvision (eq. 22/24): :math:`t_x = w_x (x^* - x_a)/w_a`; sizes linear:
    :math:`t_w = w_w (w^*/w_a - 1)` instead of :math:`w_w \\log(w^*/w_a)` (eq. 27/28 with
    ``weights = 1/σ``).  Decoding inverts it, :math:`\\tilde w = (1 + t_w/w_w) w_a`, with the
    size ratio clamped to ``[0, exp(bbox_xform_clip)]`` (the same upper limit torchvision puts on
    ``exp(t_w/w_w)``), so that decoded boxes never have negative size.
    """

    def encode_single(self, reference_boxes: Tensor, proposals: Tensor) -> Tensor:
        """Encode ``reference_boxes`` (ground truth) relative to ``proposals`` (anchors)."""
        dtype, device = reference_boxes.dtype, reference_boxes.device
        wx, wy, ww, wh = torch.as_tensor(self.weights, dtype=dtype, device=device).unbind(0)
        ex_w = proposals[:, 2] - proposals[:, 0]
        ex_h = proposals[:, 3] - proposals[:, 1]
        ex_x = proposals[:, 0] + 0.5 * ex_w
        ex_y = proposals[:, 1] + 0.5 * ex_h
        gt_w = reference_boxes[:, 2] - reference_boxes[:, 0]
        gt_h = reference_boxes[:, 3] - reference_boxes[:, 1]
        gt_x = reference_boxes[:, 0] + 0.5 * gt_w
        gt_y = reference_boxes[:, 1] + 0.5 * gt_h
        return torch.stack(
            (
                wx * (gt_x - ex_x) / ex_w,
                wy * (gt_y - ex_y) / ex_h,
                ww * (gt_w / ex_w - 1.0),
                wh * (gt_h / ex_h - 1.0),
            ),
            dim=1,
        )

    def decode_single(self, rel_codes: Tensor, boxes: Tensor) -> Tensor:
        """Boxes ``(n, 4k)`` from codes ``(n, 4k)`` and reference boxes ``(n, 4)``."""
        boxes = boxes.to(rel_codes.dtype)
        widths = boxes[:, 2] - boxes[:, 0]
        heights = boxes[:, 3] - boxes[:, 1]
        ctr_x = boxes[:, 0] + 0.5 * widths
        ctr_y = boxes[:, 1] + 0.5 * heights
        wx, wy, ww, wh = self.weights
        dx = rel_codes[:, 0::4] / wx
        dy = rel_codes[:, 1::4] / wy
        max_ratio = math.exp(self.bbox_xform_clip)
        rw = torch.clamp(1.0 + rel_codes[:, 2::4] / ww, min=0.0, max=max_ratio)
        rh = torch.clamp(1.0 + rel_codes[:, 3::4] / wh, min=0.0, max=max_ratio)
        pred_ctr_x = dx * widths[:, None] + ctr_x[:, None]
        pred_ctr_y = dy * heights[:, None] + ctr_y[:, None]
        half_w = 0.5 * rw * widths[:, None]
        half_h = 0.5 * rh * heights[:, None]
        pred = torch.stack(
            (pred_ctr_x - half_w, pred_ctr_y - half_h, pred_ctr_x + half_w, pred_ctr_y + half_h),
            dim=2,
        )
        return pred.flatten(1)


def make_box_coder(
    sigma: Sequence[Any],
    wh_target: str = "log",
    bbox_xform_clip: float = DEFAULT_XFORM_CLIP,
) -> BoxCoder:
    """Box coder with weights ``1/σ`` (eq. 24, 28); ``wh_target`` ``"log"`` or ``"linear"``."""
    weights = _weights_from_sigma(sigma)
    if wh_target == "log":
        return BoxCoder(weights, bbox_xform_clip=bbox_xform_clip)
    if wh_target == "linear":
        return LinearWHBoxCoder(weights, bbox_xform_clip=bbox_xform_clip)
    raise ValueError(f"wh_target must be one of {WH_TARGETS}, got {wh_target!r}")


def decode_against_unit_box(coder: BoxCoder, codes: Tensor) -> Tensor:
    """Decode ``(n, 4)`` codes against the unit box ``[0, 0, 1, 1]``.

    The IoU of two boxes decoded from the same anchor does not depend on the anchor (the map
    from unit box to anchor is a per-axis positive affine map), so IoU losses can be computed
    from codes alone with this helper.
    """
    unit = codes.new_tensor([0.0, 0.0, 1.0, 1.0]).expand(codes.shape[0], 4)
    return coder.decode_single(codes, unit)


def _as_number(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (Real, Fraction)):
        raise ValueError(f"{name} must be a real number, got {value!r}")
    out = float(value)
    if not math.isfinite(out):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return out


def _weights_from_sigma(sigma: Sequence[Any]) -> tuple[float, float, float, float]:
    try:
        items = tuple(sigma)
    except TypeError as exc:
        raise ValueError(
            f"sigma must be 4 positive numbers (σx, σy, σw, σh), got {sigma!r}"
        ) from exc
    if len(items) != 4:
        raise ValueError(f"sigma must be 4 positive numbers (σx, σy, σw, σh), got {sigma!r}")
    weights = []
    for name, s in zip(("sigma_x", "sigma_y", "sigma_w", "sigma_h"), items):
        val = _as_number(s, name)
        if val <= 0:
            raise ValueError(f"{name} must be > 0, got {s!r}")
        # 1/σ exactly when σ is a Fraction (e.g. Fraction(1, 10) -> 10.0).
        weights.append(float(1 / Fraction(s)) if isinstance(s, Fraction) else 1.0 / val)
    return (weights[0], weights[1], weights[2], weights[3])


@dataclass(frozen=True, init=False)
class BoxRegressionLoss:
    """The box loss of one detector stage: a :class:`klhuber.interpret.StageLoss` (kind, λ, α,
    σ and width/height target) made executable, with the clamp of decoded sizes.

    Call it with predicted and target codes of the positive samples, ``(n, 4)`` each; it returns
    the *sum* over samples and coordinates of :math:`\\ell(t - \\tilde t^*)` (see the module
    docstring for :math:`\\ell`), which the detector modules divide by torchvision's normaliser.
    The residual is computed in float32 at least, so the loss is stable under float16/bfloat16
    autocast.  The loss is the kind's function of the registry of
    :func:`klhuber.interpret.loss_kind`, evaluated with the float values of ``lam`` and
    ``alpha``.

    Build it from a :class:`klhuber.interpret.StageLoss` with :meth:`from_stage`, or from the
    fields (``BoxRegressionLoss(kind, lam, alpha, sigma, wh_target, bbox_xform_clip)``), which
    are validated by the stage (the α each kind accepts is the registry's) after being
    converted to floats.  ``alpha`` is not used by ``l1`` and is stored as 0 there (the
    :math:`\\alpha \\to 0` limit).
    """

    stage: StageLoss
    bbox_xform_clip: float

    def __init__(
        self,
        kind: str = "huber",
        lam: Any = 1.0,
        alpha: Any = 1.0,
        sigma: Sequence[Any] = (1.0, 1.0, 1.0, 1.0),
        wh_target: str = "log",
        bbox_xform_clip: Any = DEFAULT_XFORM_CLIP,
    ) -> None:
        loss_kind(kind)  # an unknown kind is named before its parameters
        lam_f = _as_number(lam, "lam")
        if lam_f <= 0:
            raise ValueError(f"lam must be > 0, got {lam!r}")
        alpha_f = _as_number(alpha, "alpha")
        if alpha_f < 0:
            raise ValueError(f"alpha must be >= 0 for kind {kind!r}, got {alpha!r}")
        if kind == "l1":
            alpha_f = 0.0
        if wh_target not in WH_TARGETS:
            raise ValueError(f"wh_target must be one of {WH_TARGETS}, got {wh_target!r}")
        weights = _weights_from_sigma(sigma)
        clip = _as_number(bbox_xform_clip, "bbox_xform_clip")
        if clip <= 0:
            raise ValueError(f"bbox_xform_clip must be > 0, got {bbox_xform_clip!r}")
        stage = StageLoss(kind, lam_f, alpha_f, tuple(1.0 / w for w in weights), wh_target)
        object.__setattr__(self, "stage", stage)
        object.__setattr__(self, "bbox_xform_clip", clip)
        object.__setattr__(self, "_weights", weights)

    @classmethod
    def from_stage(cls, stage: Any, **overrides: Any) -> BoxRegressionLoss:
        """From a :class:`klhuber.interpret.StageLoss` (or any object with the same fields)."""
        if isinstance(stage, BoxRegressionLoss):
            return stage if not overrides else cls(**{**stage.as_dict(), **overrides})
        fields = {}
        for name in ("kind", "lam", "alpha", "sigma", "wh_target"):
            if not hasattr(stage, name):
                raise ValueError(f"stage must have a {name!r} field (a StageLoss), got {stage!r}")
            fields[name] = getattr(stage, name)
        fields.update(overrides)
        return cls(**fields)

    @property
    def kind(self) -> str:
        """The loss kind (a name of :func:`loss_kinds`)."""
        return self.stage.kind

    @property
    def lam(self) -> float:
        """:math:`\\lambda`, as a float."""
        return float(self.stage.lam)

    @property
    def alpha(self) -> float:
        """:math:`\\alpha` (HIoU's :math:`\\gamma` for ``hiou``), as a float."""
        return float(self.stage.alpha)

    @property
    def sigma(self) -> tuple[float, float, float, float]:
        """:math:`(\\sigma_x, \\sigma_y, \\sigma_w, \\sigma_h)`, as floats (``1 / weights``)."""
        sx, sy, sw, sh = (float(v) for v in self.stage.sigma)
        return (sx, sy, sw, sh)

    @property
    def wh_target(self) -> str:
        """``"log"`` (eq. 27) or ``"linear"`` (Appendix D)."""
        return self.stage.wh_target

    @property
    def weights(self) -> tuple[float, float, float, float]:
        """Box-coder weights :math:`(1/σ_x, 1/σ_y, 1/σ_w, 1/σ_h)` (eq. 24, 28)."""
        return self._weights  # type: ignore[attr-defined]

    def as_dict(self) -> dict[str, Any]:
        """Plain fields (for provenance JSON)."""
        return {
            "kind": self.kind,
            "lam": self.lam,
            "alpha": self.alpha,
            "sigma": list(self.sigma),
            "wh_target": self.wh_target,
            "bbox_xform_clip": self.bbox_xform_clip,
        }

    def box_coder(self) -> BoxCoder:
        """The torchvision-compatible coder for this stage's targets (log or linear, 1/σ)."""
        if self.wh_target == "linear":
            return LinearWHBoxCoder(self.weights, bbox_xform_clip=self.bbox_xform_clip)
        return BoxCoder(self.weights, bbox_xform_clip=self.bbox_xform_clip)

    def elementwise(self, pred: Tensor, target: Tensor) -> Tensor:
        """Per-coordinate (or per-box, for IoU kinds) loss of positive samples."""
        if pred.shape != target.shape:
            raise ValueError(
                f"pred and target shapes differ: {tuple(pred.shape)} vs {tuple(target.shape)}"
            )
        if pred.dtype in (torch.float16, torch.bfloat16):
            pred = pred.float()
        if target.dtype != pred.dtype:
            target = target.to(pred.dtype)
        return loss_kind(self.kind).fn(pred, target, self)

    def per_sample(self, pred: Tensor, target: Tensor) -> Tensor:
        """Loss per positive sample ``(n,)`` (summed over coordinates for coordinate kinds)."""
        values = self.elementwise(pred, target)
        return values.sum(dim=-1) if values.ndim == pred.ndim else values

    def __call__(self, pred: Tensor, target: Tensor) -> Tensor:
        """Sum over samples and coordinates; exactly 0 (with a graph) when there are none."""
        return self.elementwise(pred, target).sum()


# ----------------------------------------------------------------------------------------------
# From presets / configs to per-stage losses


#: Per-(preset, stage) losses that differ from the preset's ``proposal`` / ``detection``
#: columns, derived from the presets' architecture-specific stages
#: (:class:`klhuber.interpret.BoxLossConfig` ``retinanet``): torchvision's stock RetinaNet uses
#: plain L1 on codes with weights (1, 1, 1, 1) (``retinanet.py``: ``_loss_type = "l1"``), not
#: its RPN's smooth L1, so ``box_loss="torchvision"`` means "stock torchvision" for both
#: architectures.  (Detectron2's RetinaNet uses L1 with weights 1 as well,
#: ``configs/Base-RetinaNet.yaml``, which is already its preset's ``proposal`` stage.)
ARCH_STAGE_OVERRIDES: dict[tuple[str, str], BoxRegressionLoss] = {}


def _arch_stage_overrides() -> None:
    from klhuber.interpret import PRESETS

    for name, config in PRESETS.items():
        if config.retinanet is not None:
            ARCH_STAGE_OVERRIDES[(name, "retinanet")] = BoxRegressionLoss.from_stage(
                config.retinanet)


_arch_stage_overrides()


def resolve_box_loss(box_loss: str | BoxLossConfig) -> BoxLossConfig:
    """A :class:`klhuber.interpret.BoxLossConfig` from a preset name or a config.

    Strings go through :func:`klhuber.interpret.get_preset` (which raises ``ValueError``
    listing the valid names); configs (or objects with ``proposal`` and ``detection`` stages)
    are returned unchanged.
    """
    if isinstance(box_loss, str):
        return get_preset(box_loss)
    for name in ("proposal", "detection"):
        if not hasattr(box_loss, name):
            raise ValueError(
                "box_loss must be a preset name or a klhuber.interpret.BoxLossConfig "
                f"(with proposal/detection stages), got {box_loss!r}"
            )
    return box_loss


def stage_losses(box_loss: str | BoxLossConfig, arch: str) -> dict[str, BoxRegressionLoss]:
    """Per-stage losses of ``arch``: ``{"rpn", "roi"}`` for Faster R-CNN, ``{"retinanet"}``.

    ``config.proposal`` drives the RPN and RetinaNet's regression head (unless the config
    carries a ``retinanet`` stage, as the ``torchvision`` preset does), ``config.detection``
    the RoI heads (Table 1's *Proposal* and *Detection* columns); see
    :func:`klhuber.interpret.detector_stages`.
    """
    config = resolve_box_loss(box_loss)
    return {name: BoxRegressionLoss.from_stage(stage)
            for name, stage in detector_stages(config, arch).items()}
