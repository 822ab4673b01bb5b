r"""The box loss of one stage in the paper's parameters, its reading (Table 2) and the inverse.

:class:`StageLoss` is the model of a stage's box loss (kind, λ, α, σ, size target), shared by
the interpretation and the detectors (:class:`klhuber.detection.box_losses.BoxRegressionLoss`
wraps one); :class:`BoxLossConfig` holds the stages of a detector.  :func:`interpret` reads a
stage as label and prediction noise (eq. 26, 32); :func:`configure` inverts it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from klhuber.interpret._numbers import (
    COORDINATES,
    Number,
    all_same,
    check_four,
    check_number,
)
from klhuber.interpret.kinds import loss_kind, loss_kinds

__all__ = [
    "KINDS",
    "STAGES",
    "WH_TARGETS",
    "BoxLossConfig",
    "Interpretation",
    "StageLoss",
    "configure",
    "configure_box_loss",
    "detector_stages",
    "interpret",
]

#: The kinds with a Laplace reading (Table 2): every built-in kind but ``hiou``.
KINDS: tuple[str, ...] = tuple(k for k in loss_kinds() if loss_kind(k).label_per_alpha is not None)
#: Width and height target encodings, ``log`` (eq. 27) or ``linear`` (Appendix D, eq. 89–90).
WH_TARGETS: tuple[str, ...] = ("log", "linear")
#: The stages of a :class:`BoxLossConfig` (Table 1's two columns per preset).
STAGES: tuple[str, ...] = ("proposal", "detection")


@dataclass(frozen=True)
class StageLoss:
    r"""The box-regression loss of one stage, in the paper's parameters (Table 1).

    Per coordinate :math:`c \in (x, y, w, h)` the stage penalises the residual
    :math:`r_c = t_c - t_c^*/\sigma_c` (eq. 24, 28 with :math:`\mu = 0`, footnote 3) with
    the loss of ``kind`` (module docstring), weighted by ``lam``.  Integers are stored as
    :class:`~fractions.Fraction` so that arithmetic stays exact.

    Parameters
    ----------
    kind:
        ``"huber"`` (:math:`\tfrac{\lambda}{\alpha}H_\alpha`, eq. 26), ``"smooth_l1"``
        (the same function, as torch/detectron2 spell it), ``"kl"``
        (:math:`\tfrac{\lambda}{\alpha}D_{\alpha/2,1/\alpha}`, Appendix E), ``"l1"``
        (:math:`\lambda|r|`, requires ``alpha=0``), or any other registered kind
        (:func:`loss_kinds`: ``hiou``, and kinds registered by users; those have no Table 2
        reading).
    lam:
        :math:`\lambda > 0`, relative to the per-sampled-example normalisation (module
        docstring).
    alpha:
        :math:`\alpha > 0` (transition point of :math:`H_\alpha`; torch's ``beta``); ``0``
        for ``kind="l1"`` and allowed for ``kind="smooth_l1"`` (torch's ``beta=0`` is L1,
        label noise 0); HIoU's :math:`\gamma \in [0, 1]` for ``kind="hiou"``.
    sigma:
        :math:`(\sigma_x, \sigma_y, \sigma_w, \sigma_h)`, all :math:`> 0`; the reciprocal of
        torchvision's/detectron2's ``BoxCoder`` weights.  A single number is broadcast.
    wh_target:
        ``"log"`` (:math:`t_w = \log(w/w_a)`, eq. 27) or ``"linear"``
        (:math:`t_w = w/w_a - 1`, Appendix D).
    """

    kind: str = "huber"
    lam: Number = 1
    alpha: Number = 1
    sigma: tuple[Number, Number, Number, Number] = (1, 1, 1, 1)
    wh_target: str = "log"

    def __post_init__(self) -> None:
        kind = loss_kind(self.kind)
        if self.wh_target not in WH_TARGETS:
            raise ValueError(f"wh_target must be one of {WH_TARGETS}, got {self.wh_target!r}")
        object.__setattr__(self, "lam", check_number(self.lam, "lam"))
        alpha = check_number(self.alpha, "alpha", allow_zero=True)
        kind.check_alpha(alpha)
        object.__setattr__(self, "alpha", alpha)
        object.__setattr__(self, "sigma", check_four(self.sigma, "sigma"))

    @property
    def label_factor(self) -> Number:
        r"""The label scale in units of :math:`\sigma_c s_c`: :math:`\alpha`, :math:`\alpha/2` or 0
        (the kind's :meth:`LossKind.label_factor`)."""
        return loss_kind(self.kind).label_factor(self.alpha)

    def loss(self, residual: Any) -> Any:
        """Evaluate the stage's per-coordinate loss of ``residual`` (a float tensor/array).

        The kind's function (``LossKind.fn``, the one the detectors use) at
        ``(residual, 0)``, in the dtype of ``residual``; for checks and plots.
        """
        import torch

        kind = loss_kind(self.kind)
        if not kind.per_coordinate:
            raise ValueError(f"kind {self.kind!r} is a loss of whole boxes, not of one residual; "
                             f"evaluate it with klhuber.detection.box_losses.BoxRegressionLoss")
        r = torch.as_tensor(residual)
        if not torch.is_floating_point(r):
            r = r.to(torch.get_default_dtype())
        return kind.fn(r, torch.zeros_like(r), _FloatParams(float(self.lam), float(self.alpha)))


@dataclass(frozen=True)
class _FloatParams:
    lam: float
    alpha: float


@dataclass(frozen=True)
class BoxLossConfig:
    """The box losses of a detector: one :class:`StageLoss` per stage, and where it comes from.

    ``proposal`` is the region proposal network (and RetinaNet's single regression head,
    whose loss the paper says equals the RPN's, Section 7.2); ``detection`` is the RoI head.
    ``retinanet``, when given, is RetinaNet's head where a framework's RetinaNet differs from
    its RPN (torchvision's stock RetinaNet uses L1, its RPN smooth L1); by default RetinaNet
    uses ``proposal``.  :meth:`detector_stages` maps the stages onto an architecture.
    """

    name: str
    proposal: StageLoss
    detection: StageLoss
    source: str = ""
    retinanet: StageLoss | None = None

    def detector_stages(self, arch: str) -> dict[str, StageLoss]:
        """The stage of each loss-carrying module of ``arch`` (see :func:`detector_stages`)."""
        return detector_stages(self, arch)

    def stage(self, stage: str) -> StageLoss:
        """``"proposal"`` or ``"detection"``."""
        if stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
        return getattr(self, stage)


def detector_stages(config: Any, arch: str) -> dict[str, Any]:
    """The stage of each loss-carrying module of ``arch``.

    ``{"rpn": proposal, "roi": detection}`` for ``"fasterrcnn"`` (Table 1's *Proposal* and
    *Detection* columns) and ``{"retinanet": retinanet or proposal}`` for ``"retinanet"``.
    ``config`` is a :class:`BoxLossConfig` or any object with the same stage fields.
    """
    if arch == "fasterrcnn":
        return {"rpn": config.proposal, "roi": config.detection}
    if arch == "retinanet":
        return {"retinanet": getattr(config, "retinanet", None) or config.proposal}
    raise ValueError(f"arch must be 'fasterrcnn' or 'retinanet', got {arch!r}")


@dataclass(frozen=True)
class Interpretation:
    r"""The Laplace scales a stage's loss assumes (Table 2), per coordinate (x, y, w, h).

    ``label_noise`` are the scales :math:`b_1` of the label distributions of
    :math:`x^*, y^*, w^*, h^*`; ``prediction_noise`` the scales :math:`b_2` of
    :math:`\tilde x, \tilde y, \tilde w, \tilde h`; both in the units of the anchor
    (pixels when the anchor is given in pixels).  ``approximations`` lists what the reading
    relies on (empty when the correspondence is exact).
    """

    label_noise: tuple[Number, Number, Number, Number]
    prediction_noise: tuple[Number, Number, Number, Number]
    anchor: tuple[Number, Number]
    stage: StageLoss
    approximations: tuple[str, ...] = field(default=())

    @property
    def exact(self) -> bool:
        return not self.approximations

    def as_dict(self) -> dict[str, Number]:
        """``{"x*": ..., "y*": ..., "w*": ..., "h*": ..., "x~": ..., ...}`` (Table 2 rows)."""
        out = {f"{c}*": v for c, v in zip(COORDINATES, self.label_noise)}
        out.update({f"{c}~": v for c, v in zip(COORDINATES, self.prediction_noise)})
        return out


def interpret(stage: StageLoss, anchor_w: Number = 1, anchor_h: Number = 1) -> Interpretation:
    r"""Interpreted label- and prediction-noise scales of ``stage`` for one anchor (Table 2).

    Eq. 26 (centre) and eq. 32 (size): with :math:`s = (w_a, h_a, w_a, h_a)`,

    * label noise :math:`b_{1,c} = \alpha\,\sigma_c\, s_c` (``huber``/``smooth_l1``, via
      :math:`H_\alpha \approx D_{\alpha,1/\alpha}`), :math:`\tfrac{\alpha}{2}\sigma_c s_c`
      (``kl``, exact), :math:`0` (``l1``);
    * prediction noise :math:`b_{2,c} = \sigma_c\, s_c / \lambda`.

    With the default ``anchor_w = anchor_h = 1`` the scales are the coefficients of
    :math:`w_a` and :math:`h_a` printed in Table 2.  Fractions in, Fractions out.
    """
    if not isinstance(stage, StageLoss):
        raise ValueError(f"stage must be a StageLoss, got {type(stage).__name__}")
    w = check_number(anchor_w, "anchor_w")
    h = check_number(anchor_h, "anchor_h")
    size = (w, h, w, h)
    kind = loss_kind(stage.kind)
    label = tuple(stage.label_factor * s * z for s, z in zip(stage.sigma, size))
    prediction = tuple(s * z / stage.lam for s, z in zip(stage.sigma, size))
    approximations = []
    if kind.approximation and stage.alpha != 0:
        approximations.append(kind.approximation)
    if stage.wh_target == "log":
        approximations.append("log(w*/w_a) ≈ w*/w_a − 1 and exp(·) ≈ 1 + · (eq. 30–32) for w, h")
    return Interpretation(label, prediction, (w, h), stage, tuple(approximations))


def configure(label_noise: Number | Sequence[Number], prediction_noise: Number | Sequence[Number],
              *, lam: Number | None = None, alpha: Number | None = None,
              sigma: Number | Sequence[Number] | None = None, kind: str = "huber",
              wh_target: str = "log") -> StageLoss:
    r"""The :class:`StageLoss` whose interpretation is (``label_noise``, ``prediction_noise``).

    Both are given relative to the anchor size (the coefficients of Table 2), as one number
    for all coordinates or as :math:`(x, y, w, h)`.  Inverting :func:`interpret`:
    :math:`\sigma_c = \lambda\, b_{2,c}` and :math:`\alpha = b_{1,c}/\sigma_c` (twice that for
    ``kind="kl"``).

    **Degrees of freedom.**  A stage has 6 parameters :math:`(\lambda, \alpha, \sigma_{x..h})`
    and the interpretation 8 numbers, but :math:`\alpha` and :math:`\lambda` are shared by
    the four coordinates, so the ratio :math:`b_{1,c}/b_{2,c} = \alpha\lambda` (``huber``)
    must be the same for all four — otherwise no stage realises the request and this raises.
    Given the ratio, one degree of freedom is left: every
    :math:`(\lambda, \alpha, \sigma) \to (k\lambda, \alpha/k, k\sigma)` gives the same
    interpretation, and in fact the *same loss of the decoded box*, since
    :math:`\tfrac{\lambda}{\alpha}H_\alpha(\Delta/\sigma) = H_{b_1}(\Delta)/(b_1 b_2)` for the
    anchor-relative displacement :math:`\Delta`; only the scale of the network's raw output
    (and so its initialisation and effective learning rate) changes.

    **Canonical choice.**  Fix any of ``lam``, ``alpha``, ``sigma``; if none is fixed,
    ``alpha = 1`` (the choice of the paper's Experiments A–C: the transition at one
    normalised unit, so :math:`\sigma` *is* the label noise).  Fixing more than one is
    allowed when consistent.  For ``kind="l1"`` the label noise must be 0, ``alpha`` is 0
    and the canonical choice is ``lam = 1``.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    b1 = check_four(label_noise, "label_noise", allow_zero=(kind == "l1"))
    b2 = check_four(prediction_noise, "prediction_noise")
    fixed_sigma = None if sigma is None else check_four(sigma, "sigma")
    fixed_lam = None if lam is None else check_number(lam, "lam")
    if kind == "l1":
        if any(b != 0 for b in b1):
            raise ValueError("label_noise must be 0 for kind='l1' (an L1 loss assumes exact labels)")
        if alpha not in (None, 0):
            raise ValueError(f"alpha must be 0 for kind='l1', got {alpha!r}")
        if fixed_sigma is None:
            lam_value = Fraction(1) if fixed_lam is None else fixed_lam
            fixed_sigma = tuple(lam_value * b for b in b2)
        lam_values = [s / b for s, b in zip(fixed_sigma, b2)]
        if not all_same(lam_values) or (fixed_lam is not None
                                     and not all_same([lam_values[0], fixed_lam])):
            raise ValueError("inconsistent request: sigma / prediction_noise must equal lam "
                             "for every coordinate")
        return StageLoss("l1", lam_values[0], 0, fixed_sigma, wh_target)
    factor = Fraction(1, 2) if kind == "kl" else Fraction(1)
    ratios = [x / y for x, y in zip(b1, b2)]  # = α·λ·factor for every coordinate
    for ratio_c, c in zip(ratios, COORDINATES):
        if not 0 < ratio_c < math.inf:
            raise ValueError(
                f"label_noise / prediction_noise ({c}) is {float(ratio_c)!r} in floating "
                f"point: label_noise and prediction_noise must be within a float's range of "
                f"each other (their ratio a positive finite number)")
    if not all_same(ratios):
        raise ValueError(
            "label_noise / prediction_noise must be the same for x, y, w and h (it equals α·λ, "
            f"shared by the four coordinates); got {tuple(ratios)}")
    ratio = ratios[0] / factor  # α·λ
    fixed_alpha = None if alpha is None else check_number(alpha, "alpha")
    if fixed_sigma is not None:
        alphas = [x / (factor * s) for x, s in zip(b1, fixed_sigma)]
        if not all_same(alphas):
            raise ValueError("sigma is inconsistent with label_noise: label_noise / sigma must "
                             "be the same for all coordinates")
        alpha_value = alphas[0]
    elif fixed_alpha is not None:
        alpha_value = fixed_alpha
    elif fixed_lam is not None:
        alpha_value = ratio / fixed_lam
    else:
        alpha_value = Fraction(1)  # canonical
    lam_value = ratio / alpha_value
    sigma_value = tuple(x / (factor * alpha_value) for x in b1)
    checks = ((fixed_alpha, alpha_value, "alpha"), (fixed_lam, lam_value, "lam"))
    for wanted, got, name in checks:
        if wanted is not None and not all_same([wanted, got]):
            raise ValueError(f"over-determined request: the other fixed parameters imply "
                             f"{name} = {got}, not {wanted}")
    if fixed_sigma is not None:
        sigma_value = fixed_sigma
    derived = (("lam", lam_value), ("alpha", alpha_value),
               *((f"sigma ({c})", v) for c, v in zip(COORDINATES, sigma_value)))
    for name, value in derived:
        if not 0 < value < math.inf:
            raise ValueError(
                f"the request implies {name} = {float(value)!r}, outside the positive finite "
                f"floats: choose label_noise, prediction_noise and the fixed lam/alpha/sigma "
                f"closer to 1")
    return StageLoss(kind, lam_value, alpha_value, sigma_value, wh_target)


def configure_box_loss(label_noise: Number | Sequence[Number],
                       proposal_prediction_noise: Number | Sequence[Number],
                       detection_prediction_noise: Number | Sequence[Number], *,
                       name: str = "custom", kind: str = "huber", wh_target: str = "log",
                       **fixed: Any) -> BoxLossConfig:
    """Both stages from one label noise and two prediction noises (the paper's recipe).

    Section 7.1: "the label noise should not change between the two networks while the
    prediction noise should".  ``fixed`` (``lam``, ``alpha``, ``sigma``) is passed to
    :func:`configure` for both stages.
    """
    proposal = configure(label_noise, proposal_prediction_noise, kind=kind,
                         wh_target=wh_target, **fixed)
    detection = configure(label_noise, detection_prediction_noise, kind=kind,
                          wh_target=wh_target, **fixed)
    return BoxLossConfig(name, proposal, detection,
                         f"configure_box_loss(label_noise={label_noise!r}, ...)")
