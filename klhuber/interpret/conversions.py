r"""Conversions between the paper's :math:`(\lambda, \alpha, \sigma)` and the frameworks'
parameters, and the linear size target of Appendix D.

torch ``smooth_l1_loss(beta)`` / ``huber_loss(delta)``, detectron2's ``SMOOTH_L1_BETA``,
py-faster-rcnn's ``sigma`` and another normaliser's loss weight (:func:`effective_lambda`).
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any

import numpy as np

from klhuber.interpret._numbers import Number, check_four, check_number
from klhuber.interpret.stage import StageLoss

__all__ = [
    "caffe_sigma_to_beta",
    "effective_lambda",
    "from_detectron2",
    "from_huber_loss",
    "from_smooth_l1",
    "linear_target_error",
    "matched_ratio_range",
    "to_detectron2",
    "to_huber_loss",
    "to_smooth_l1",
]


def caffe_sigma_to_beta(sigma: Number) -> Number:
    r"""py-faster-rcnn's ``smooth_l1_loss_param { sigma }`` → transition point :math:`\beta = 1/\sigma^2`."""
    sigma = check_number(sigma, "sigma")
    return 1 / (Fraction(sigma) ** 2 if isinstance(sigma, Fraction) else sigma**2)


def effective_lambda(loss_weight: Number, box_normaliser: Number,
                     classification_normaliser: Number) -> Number:
    r"""The paper's :math:`\lambda` of a box loss ``loss_weight · Σ loss / box_normaliser``.

    :math:`\lambda = w \cdot N_{\text{cls}} / N_{\text{box}}` (module docstring): e.g. the
    RPN of the Faster R-CNN *publication*, ``10 · Σ / N_reg`` with :math:`N_{\text{reg}}
    \approx 2400` anchor locations and :math:`N_{\text{cls}} = 256`, is
    :math:`\lambda \approx 1.07` in this convention (Table 1 takes the printed 10), and a
    ``reduction="mean"`` over the :math:`4N_{\text{pos}}` positive coordinates with the
    classification averaged over :math:`N` sampled anchors is :math:`\lambda = N/(4N_{\text{pos}})`.
    """
    return (check_number(loss_weight, "loss_weight") * check_number(classification_normaliser,
            "classification_normaliser") / check_number(box_normaliser, "box_normaliser"))


def _bbox_weights_to_sigma(weights: Any) -> tuple[Number, ...]:
    weights = check_four(weights, "bbox_reg_weights")
    return tuple(1 / w for w in weights)


def from_smooth_l1(beta: Number, *, weight: Number = 1, bbox_reg_weights: Any = (1, 1, 1, 1),
                   wh_target: str = "log") -> StageLoss:
    r"""``weight · F.smooth_l1_loss(input, target * bbox_reg_weights, beta=beta)`` → :class:`StageLoss`.

    torch's :math:`\mathrm{SmoothL1}_\beta = H_\beta/\beta` (:math:`|x|` for :math:`\beta = 0`),
    so :math:`\alpha = \beta`, :math:`\lambda = ` ``weight`` and
    :math:`\sigma = 1/` ``bbox_reg_weights``; ``beta = 0`` gives ``kind="l1"``.  ``weight``
    must already be in the per-sampled-example convention (see :func:`effective_lambda`).
    """
    beta = check_number(beta, "beta", allow_zero=True)
    sigma = _bbox_weights_to_sigma(bbox_reg_weights)
    kind = "l1" if beta == 0 else "smooth_l1"
    return StageLoss(kind, weight, beta, sigma, wh_target)


def from_detectron2(smooth_l1_beta: Number, bbox_reg_loss_weight: Number = 1,
                    bbox_reg_weights: Any = (1, 1, 1, 1), *, wh_target: str = "log") -> StageLoss:
    """detectron2's ``SMOOTH_L1_BETA``, ``BBOX_REG_LOSS_WEIGHT``, ``BBOX_REG_WEIGHTS`` → :class:`StageLoss`.

    detectron2 (fvcore) ``smooth_l1_loss`` has torch's definition, L1 for ``beta < 1e-5``.
    """
    beta = check_number(smooth_l1_beta, "smooth_l1_beta", allow_zero=True)
    if isinstance(beta, float) and beta < 1e-5:
        beta = Fraction(0)
    return from_smooth_l1(beta, weight=bbox_reg_loss_weight, bbox_reg_weights=bbox_reg_weights,
                          wh_target=wh_target)


def from_huber_loss(delta: Number, *, weight: Number = 1, bbox_reg_weights: Any = (1, 1, 1, 1),
                    wh_target: str = "log") -> StageLoss:
    r"""``weight · F.huber_loss(input, target * bbox_reg_weights, delta=delta)`` → :class:`StageLoss`.

    :math:`w H_\delta = \tfrac{\lambda}{\alpha}H_\alpha` with :math:`\alpha = \delta`,
    :math:`\lambda = w\delta`.
    """
    delta = check_number(delta, "delta")
    weight = check_number(weight, "weight")
    return StageLoss("huber", weight * delta, delta, _bbox_weights_to_sigma(bbox_reg_weights),
                     wh_target)


def to_smooth_l1(stage: StageLoss) -> dict[str, Any]:
    """``{"beta", "weight", "bbox_reg_weights"}`` for ``weight · F.smooth_l1_loss(..., beta)``.

    Raises for ``kind="kl"`` (no smooth-L1 equivalent).
    """
    if stage.kind == "kl":
        raise ValueError("kind='kl' (D_{α/2,1/α}) has no smooth_l1_loss equivalent")
    return {"beta": stage.alpha, "weight": stage.lam,
            "bbox_reg_weights": tuple(1 / s for s in stage.sigma)}


def to_huber_loss(stage: StageLoss) -> dict[str, Any]:
    """``{"delta", "weight", "bbox_reg_weights"}`` for ``weight · F.huber_loss(..., delta)``.

    Raises for ``kind="l1"`` (``delta`` would be 0) and ``kind="kl"``.
    """
    if stage.kind in ("l1", "kl") or stage.alpha == 0:
        raise ValueError(f"kind={stage.kind!r} with alpha={stage.alpha} has no "
                         f"huber_loss(delta > 0) equivalent")
    return {"delta": stage.alpha, "weight": stage.lam / stage.alpha,
            "bbox_reg_weights": tuple(1 / s for s in stage.sigma)}


def to_detectron2(stage: StageLoss) -> dict[str, Any]:
    """``{"SMOOTH_L1_BETA", "BBOX_REG_LOSS_WEIGHT", "BBOX_REG_WEIGHTS"}`` (detectron2 config keys)."""
    values = to_smooth_l1(stage)
    return {"SMOOTH_L1_BETA": values["beta"], "BBOX_REG_LOSS_WEIGHT": values["weight"],
            "BBOX_REG_WEIGHTS": values["bbox_reg_weights"]}


def linear_target_error(ratio: Any) -> Any:
    r"""Error of the linear target, :math:`(r - 1) - \log r` for :math:`r = w^*/w_a` (eq. 30, 89).

    Always :math:`\ge 0` (zero only at :math:`r = 1`); :math:`\approx (r-1)^2/2` near 1.
    Works on floats and numpy arrays; ``ratio`` must be :math:`> 0`.
    """
    r = np.asarray(ratio, dtype=float)
    if np.any(~np.isfinite(r)) or np.any(r <= 0):
        raise ValueError("ratio (w*/w_a) must be finite and > 0")
    out = np.expm1(np.log(r)) - np.log(r)  # (r − 1) − log r, accurate near r = 1
    return float(out) if out.ndim == 0 else out


def matched_ratio_range(iou_threshold: float, *, both_sides: bool = False) -> tuple[float, float]:
    r"""Range of :math:`w^*/w_a` a positive match allows, for concentric boxes.

    If only the width differs, :math:`\mathrm{IoU} = \min(r, 1/r)`, so
    :math:`r \in [\tau, 1/\tau]`; if width and height scale together (``both_sides``),
    :math:`\mathrm{IoU} = \min(r, 1/r)^2` and :math:`r \in [\sqrt\tau, 1/\sqrt\tau]`.
    Concentric boxes give the widest range; any offset narrows it.
    """
    tau = float(iou_threshold)
    if not 0 < tau <= 1:
        raise ValueError(f"iou_threshold must be in (0, 1], got {iou_threshold!r}")
    low = math.sqrt(tau) if both_sides else tau
    return low, 1 / low
