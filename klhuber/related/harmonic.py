r"""The Harmonic loss and the Harmonic IoU (HIoU) loss.

K. Wang and L. Zhang, *Reconcile Prediction Consistency for Balanced Object Detection*
(arXiv 2020), supplementary material. Equation numbers below are the supplement's.

**Harmonic loss** (supplement eq. 1/6), for a positive sample with classification probability
:math:`p` of its true class and regression loss :math:`\mathcal L_{reg}` (e.g. Smooth L1 summed
over the box coordinates):

.. math::

    \mathcal L_{Har} = (1 + \beta_r)\,\mathrm{CE}(p, y) + (1 + \beta_c)\,\mathcal L_{reg},
    \qquad \beta_r = e^{-\mathcal L_{reg}},\quad \beta_c = e^{-\mathrm{CE}} = p .

*Which factors are detached.* The supplement differentiates **through both harmonic factors**:
eq. 2–5 keep :math:`\partial\beta_r/\partial t\cdot\mathrm{CE}` in the gradient with respect to the
regression offset :math:`t`, giving :math:`(1 + p + e^{-\mathcal L(t)}\log p)\,\mathcal L'(t)`, and
eq. 10 keeps :math:`\partial\beta_c/\partial p\cdot\mathcal L_{reg}`, giving
:math:`\mathcal L_{reg} - (1 + e^{-\mathcal L_{reg}})/p`. So by default (``detach="none"``)
nothing is detached, and autograd reproduces eq. 5 and eq. 10 (tested, and checked with sympy in
``klhuber.related.symbolic``). ``detach="both"`` (or ``"beta_r"`` / ``"beta_c"``) treats the
factors as constant weights instead, a common implementation choice that the supplement does not
use; then the gradients are :math:`(1+p)\mathcal L'(t)` and :math:`-(1+e^{-\mathcal L})/p`.

**HIoU loss** (supplement eq. 11): :math:`\mathcal L_{HIoU} = (1 + \mathrm{IoU})^{\gamma}
(1 - \mathrm{IoU})`, with derivative (eq. 12)
:math:`(1+\mathrm{IoU})^{\gamma-1}\left((\gamma-1) - (\gamma+1)\mathrm{IoU}\right)`; it decreases on
all of :math:`\mathrm{IoU} \in [0, 1]` iff :math:`\gamma \le 1` (eq. 13), so ``gamma`` must lie in
``[0, 1]`` (γ = 0 is the plain IoU loss :math:`1 - \mathrm{IoU}`). Nothing is detached.

How they relate to the KL interpretation: the harmonic factor :math:`1 + p` multiplies the
regression loss, i.e. it rescales the prediction-noise scale :math:`\beta` of
:math:`D_{\alpha,\beta}` per sample (by eq. 21, :math:`\lambda D_{\alpha,\beta} =
D_{\alpha,\beta/\lambda}`): confident samples are treated as having
:math:`1/(1+p)` times the prediction uncertainty, while the label-noise scale α is untouched.
"""

from __future__ import annotations

import math
import numbers

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from klhuber._reduction import check_reduction, reduce

__all__ = [
    "DETACH_CHOICES",
    "HIoULoss",
    "HarmonicLoss",
    "box_iou_pairwise",
    "harmonic_factors",
    "harmonic_loss",
    "hiou_from_iou",
    "hiou_loss",
]

DETACH_CHOICES = ("none", "both", "beta_r", "beta_c")


def _values_checkable(*tensors: Tensor) -> bool:
    """Whether the *values* of ``tensors`` can be checked: not on the meta device (which holds
    no values) and not inside a functorch transform such as ``torch.vmap`` (where a value
    check is data-dependent control flow).  Shapes are always checked."""
    if any(t.device.type == "meta" for t in tensors):
        return False
    return not torch._C._are_functorch_transforms_active()


def _check_tensor(value: object, name: str) -> None:
    if not isinstance(value, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor; got {type(value).__name__}")


def harmonic_factors(ce: Tensor, reg_loss: Tensor, detach: str = "none") -> tuple[Tensor, Tensor]:
    r"""The harmonic factors :math:`(1 + \beta_r, 1 + \beta_c) = (1 + e^{-\mathcal L_{reg}},
    1 + e^{-\mathrm{CE}})` (supplement eq. 1, 4); ``detach`` as in :func:`harmonic_loss`."""
    if detach not in DETACH_CHOICES:
        raise ValueError(f"detach must be one of {DETACH_CHOICES}; got {detach!r}")
    beta_r = torch.exp(-reg_loss)
    beta_c = torch.exp(-ce)
    if detach in ("both", "beta_r"):
        beta_r = beta_r.detach()
    if detach in ("both", "beta_c"):
        beta_c = beta_c.detach()
    return 1 + beta_r, 1 + beta_c


def harmonic_loss(cls_logits: Tensor, labels: Tensor, reg_loss: Tensor, *,
                  detach: str = "none", reduction: str = "mean") -> Tensor:
    r"""Harmonic loss of positive samples (supplement eq. 1):
    :math:`(1 + e^{-\mathcal L_{reg}})\,\mathrm{CE} + (1 + p)\,\mathcal L_{reg}`.

    Parameters
    ----------
    cls_logits:
        ``(N, C)`` classification logits of the positive samples.
    labels:
        ``(N,)`` class indices.
    reg_loss:
        ``(N,)`` per-sample regression loss :math:`\mathcal L(d_i, \hat d_i) \ge 0` (e.g.
        :func:`klhuber.losses.smooth_l1` summed over the four box coordinates).
    detach:
        ``"none"`` (default, as in the supplement's gradients eq. 5 and 10), ``"both"``,
        ``"beta_r"`` or ``"beta_c"``: which harmonic factors are constants for autograd.
    reduction:
        ``"none"``, ``"mean"`` or ``"sum"``.
    """
    for value, name in ((cls_logits, "cls_logits"), (labels, "labels"), (reg_loss, "reg_loss")):
        _check_tensor(value, name)
    if cls_logits.ndim != 2:
        raise ValueError(f"cls_logits must have shape (N, C); got {tuple(cls_logits.shape)}")
    if reg_loss.shape != labels.shape or labels.ndim != 1 or labels.shape[0] != cls_logits.shape[0]:
        raise ValueError("labels and reg_loss must have shape (N,) matching cls_logits (N, C); got "
                         f"{tuple(labels.shape)}, {tuple(reg_loss.shape)}, {tuple(cls_logits.shape)}")
    if _values_checkable(reg_loss) and bool((reg_loss < 0).any()):
        raise ValueError("reg_loss must be >= 0 (a loss value per sample)")
    ce = F.cross_entropy(cls_logits, labels, reduction="none")
    w_cls, w_reg = harmonic_factors(ce, reg_loss, detach)
    return reduce(w_cls * ce + w_reg * reg_loss, reduction)


def _check_gamma(gamma: float) -> None:
    # any real number type (int, float, numpy scalars), not bool
    if isinstance(gamma, bool) or not isinstance(gamma, numbers.Real):
        raise TypeError(f"gamma must be a real number in [0, 1]; got {type(gamma).__name__}")
    if not 0.0 <= float(gamma) <= 1.0:
        raise ValueError(
            f"gamma must be in [0, 1] (for gamma > 1 the HIoU loss is not monotone in IoU, "
            f"supplement eq. 13); got {gamma!r}")


def hiou_from_iou(iou: Tensor, gamma: float) -> Tensor:
    r""":math:`(1 + \mathrm{IoU})^{\gamma}(1 - \mathrm{IoU})` (supplement eq. 11) for IoU in [0, 1].

    Unlike :func:`hiou_loss`, any finite ``gamma`` is accepted here, so that the non-monotone
    shapes for γ > 1 can be plotted (eq. 13)."""
    if isinstance(gamma, bool) or not isinstance(gamma, numbers.Real):
        raise TypeError(f"gamma must be a finite real number; got {type(gamma).__name__}")
    if not math.isfinite(gamma):
        raise ValueError(f"gamma must be a finite number; got {gamma!r}")
    _check_tensor(iou, "iou")
    if _values_checkable(iou) and bool(((iou < 0) | (iou > 1)).any()):
        raise ValueError("iou must lie in [0, 1]")
    return (1 + iou) ** gamma * (1 - iou)


def _check_boxes(boxes: Tensor, name: str) -> None:
    _check_tensor(boxes, name)
    if boxes.ndim != 2 or boxes.shape[-1] != 4:
        raise ValueError(f"{name} must have shape (N, 4) as (x1, y1, x2, y2); got {tuple(boxes.shape)}")
    if boxes.dtype == torch.bool or boxes.is_complex():
        raise TypeError(f"{name} must be a real (float or integer) tensor; got {boxes.dtype}")
    if not _values_checkable(boxes):
        return
    if not bool(torch.isfinite(boxes).all()):
        raise ValueError(f"{name} must be finite")
    if bool(((boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])).any()):
        raise ValueError(f"{name} must satisfy x2 >= x1 and y2 >= y1 (boxes as (x1, y1, x2, y2))")


def box_iou_pairwise(boxes1: Tensor, boxes2: Tensor, eps: float = 1e-7) -> Tensor:
    """IoU of corresponding rows of two ``(N, 4)`` box tensors ``(x1, y1, x2, y2)``;
    differentiable. ``eps`` guards the union of two empty boxes."""
    _check_boxes(boxes1, "boxes1")
    _check_boxes(boxes2, "boxes2")
    if boxes1.shape != boxes2.shape:
        raise ValueError(f"box tensors must have the same shape; got {tuple(boxes1.shape)} "
                         f"and {tuple(boxes2.shape)}")
    lt = torch.maximum(boxes1[:, :2], boxes2[:, :2])
    rb = torch.minimum(boxes1[:, 2:], boxes2[:, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[:, 0] * wh[:, 1]
    area1 = (boxes1[:, 2] - boxes1[:, 0]) * (boxes1[:, 3] - boxes1[:, 1])
    area2 = (boxes2[:, 2] - boxes2[:, 0]) * (boxes2[:, 3] - boxes2[:, 1])
    union = area1 + area2 - inter
    return inter / union.clamp(min=eps)


def hiou_loss(pred_boxes: Tensor, target_boxes: Tensor, gamma: float = 0.5,
              reduction: str = "mean") -> Tensor:
    r"""HIoU loss :math:`(1 + \mathrm{IoU})^{\gamma}(1 - \mathrm{IoU})` of corresponding boxes
    (supplement eq. 11), ``(N, 4)`` tensors as ``(x1, y1, x2, y2)``; ``gamma`` in [0, 1] (eq. 13).

    Raises ``ValueError`` for γ outside [0, 1], boxes with x2 < x1 or y2 < y1, or a bad shape,
    and ``TypeError`` for a γ that is not a real number or boxes that are not a real tensor.
    Under ``torch.vmap`` (and for meta tensors) only shapes are checked, not values.
    """
    _check_gamma(gamma)
    _check_boxes(pred_boxes, "pred_boxes")
    _check_boxes(target_boxes, "target_boxes")
    iou = box_iou_pairwise(pred_boxes, target_boxes)
    return reduce((1 + iou) ** gamma * (1 - iou), reduction)


class HarmonicLoss(nn.Module):
    """Module form of :func:`harmonic_loss`: ``forward(cls_logits, labels, reg_loss)``."""

    def __init__(self, detach: str = "none", reduction: str = "mean") -> None:
        super().__init__()
        if detach not in DETACH_CHOICES:
            raise ValueError(f"detach must be one of {DETACH_CHOICES}; got {detach!r}")
        check_reduction(reduction)
        self.detach, self.reduction = detach, reduction

    def forward(self, cls_logits: Tensor, labels: Tensor, reg_loss: Tensor) -> Tensor:
        return harmonic_loss(cls_logits, labels, reg_loss, detach=self.detach,
                             reduction=self.reduction)


class HIoULoss(nn.Module):
    """Module form of :func:`hiou_loss`: ``forward(pred_boxes, target_boxes)``."""

    def __init__(self, gamma: float = 0.5, reduction: str = "mean") -> None:
        super().__init__()
        _check_gamma(gamma)
        check_reduction(reduction)
        self.gamma, self.reduction = float(gamma), reduction

    def forward(self, pred_boxes: Tensor, target_boxes: Tensor) -> Tensor:
        return hiou_loss(pred_boxes, target_boxes, self.gamma, self.reduction)
