"""The named box-loss configurations: Table 1's columns, Appendix D/E, torchvision, detectron2.

Presets are data: :class:`~klhuber.interpret.BoxLossConfig` values with exact Fractions and the
source of every number.  :func:`get_preset` also understands the names of
:func:`alpha_sweep_preset`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from fractions import Fraction

from klhuber.interpret._numbers import Number, check_four, check_number
from klhuber.interpret.stage import STAGES, BoxLossConfig, Interpretation, StageLoss, interpret

__all__ = [
    "PAPER_PRESETS",
    "PRESETS",
    "SWEEP_PREFIX",
    "alpha_sweep_preset",
    "get_preset",
    "interpret_config",
]

#: The presets of the paper's Table 1, in its column order.
PAPER_PRESETS: tuple[str, ...] = (
    "publication", "implementation", "experiment_a", "experiment_b", "experiment_c")

_F = Fraction
_IMPL_DET_SIGMA = (_F(1, 10), _F(1, 10), _F(1, 5), _F(1, 5))
_EXP_SIGMA = (_F(1, 20), _F(1, 20), _F(1, 10), _F(1, 10))


def _experiment(letter: str, lam_proposal: Number, lam_detection: Number) -> BoxLossConfig:
    """Table 1's column 'Experiment <letter>': λ·H_1 in both stages on the targets of
    ``_EXP_SIGMA``, with the stages' λ."""
    return BoxLossConfig(
        f"experiment_{letter.lower()}",
        StageLoss("huber", lam_proposal, 1, _EXP_SIGMA),
        StageLoss("huber", lam_detection, 1, _EXP_SIGMA),
        f"Table 1 'Experiment {letter}' (Meyer 2021, Section 7.1).",
    )


def _both_stages(base: BoxLossConfig, name: str, source: str, **changes: str) -> BoxLossConfig:
    """``base`` with the same fields changed in both stages (Appendices D and E)."""
    return BoxLossConfig(name, replace(base.proposal, **changes),
                         replace(base.detection, **changes), source)


def _build_presets() -> dict[str, BoxLossConfig]:
    # torchvision's stock RetinaNet head: plain L1 on codes with weights (1, 1, 1, 1)
    # (retinanet.py: _loss_type = "l1"); its RPN uses smooth L1, so the "torchvision" preset
    # carries this stage for RetinaNet.
    torchvision_retinanet = StageLoss("l1", 1, 0, (1, 1, 1, 1))
    implementation = BoxLossConfig(
        "implementation",
        StageLoss("huber", 1, _F(1, 9), (1, 1, 1, 1)),
        StageLoss("huber", 1, 1, _IMPL_DET_SIGMA),
        "Table 1 'Implementation' = py-faster-rcnn (Girshick 2015): RPN SmoothL1Loss sigma = 3 "
        "(β = 1/σ² = 1/9) on unnormalised targets; RoI head sigma = 1 with "
        "BBOX_NORMALIZE_STDS = (0.1, 0.1, 0.2, 0.2).",
    )
    presets = {
        "publication": BoxLossConfig(
            "publication",
            StageLoss("huber", 10, 1, (1, 1, 1, 1)),
            StageLoss("huber", 10, 1, (1, 1, 1, 1)),
            "Table 1 'Publication': λ·H_1 with λ = 10 as stated in the Faster R-CNN paper "
            "(Ren et al. 2015, eq. 1), unnormalised targets.",
        ),
        "implementation": implementation,
        "experiment_a": _experiment("A", _F(1, 4), _F(1, 2)),
        "experiment_b": _experiment("B", _F(1, 2), 1),
        "experiment_c": _experiment("C", _F(1, 4), 1),
        "appendix_d": _both_stages(
            implementation, "appendix_d",
            "Appendix D / Table 5 'Approximation': the Implementation preset with the linear "
            "targets t_w = w/w_a − 1, t_h = h/h_a − 1 (eq. 89–90), 'no other changes'; Table 5's "
            "'Original' row equals Table 3's Implementation row (44.7 / 23.1 / 23.8).",
            wh_target="linear",
        ),
        "appendix_e": _both_stages(
            implementation, "appendix_e",
            "Appendix E / Table 6: H_α replaced by D_{α/2,1/α} 'with no other modifications' "
            "in the Implementation preset (Table 6's H_α row equals Table 3's Implementation "
            "row).",
            kind="kl",
        ),
        "torchvision": BoxLossConfig(
            "torchvision",
            StageLoss("smooth_l1", 1, _F(1, 9), (1, 1, 1, 1)),
            StageLoss("smooth_l1", 1, _F(1, 9), _IMPL_DET_SIGMA),
            "torchvision 0.29 models/detection: rpn.py RegionProposalNetwork.compute_loss = "
            "F.smooth_l1_loss(beta=1/9, reduction='sum') / sampled_inds.numel(), BoxCoder "
            "weights (1, 1, 1, 1); roi_heads.py fastrcnn_loss = F.smooth_l1_loss(beta=1/9, "
            "reduction='sum') / labels.numel(), bbox_reg_weights default (10, 10, 5, 5). "
            "Both divide by the number of sampled examples (256 anchors, 512 RoIs per image), "
            "as py-faster-rcnn does, so λ = 1. RetinaNet: the torchvision_retinanet preset's "
            "head (L1, weights (1, 1, 1, 1)), not the RPN's loss.",
            retinanet=torchvision_retinanet,
        ),
        "torchvision_retinanet": BoxLossConfig(
            "torchvision_retinanet",
            torchvision_retinanet,
            torchvision_retinanet,
            "torchvision 0.29 retinanet.py RetinaNetRegressionHead: _loss_type = 'l1', "
            "BoxCoder weights (1, 1, 1, 1), summed over foreground anchors and divided by "
            "max(1, num_foreground) like the focal loss, so λ = 1. Single-stage: both fields "
            "hold the same head.",
        ),
        "detectron2": BoxLossConfig(
            "detectron2",
            StageLoss("l1", 1, 0, (1, 1, 1, 1)),
            StageLoss("l1", 1, 0, _IMPL_DET_SIGMA),
            "detectron2 config/defaults.py: MODEL.RPN.SMOOTH_L1_BETA = 0.0 (L1), "
            "BBOX_REG_LOSS_WEIGHT = 1.0, BBOX_REG_WEIGHTS = (1, 1, 1, 1), RPN loss / "
            "(BATCH_SIZE_PER_IMAGE · num_images); MODEL.ROI_BOX_HEAD.SMOOTH_L1_BETA = 0.0, "
            "BBOX_REG_LOSS_WEIGHT = 1.0, BBOX_REG_WEIGHTS = (10, 10, 5, 5), RoI loss / number "
            "of sampled RoIs (fast_rcnn.py). RetinaNet: defaults.py SMOOTH_L1_LOSS_BETA = 0.1, "
            "overridden to 0.0 in configs/Base-RetinaNet.yaml.",
        ),
    }
    return presets


#: Named box-loss configurations (Table 1 columns, Appendix D/E variants, libraries).
PRESETS: dict[str, BoxLossConfig] = _build_presets()


#: Prefix of the names of :func:`alpha_sweep_preset`'s configurations.
SWEEP_PREFIX = "sweep_alpha"


def alpha_sweep_preset(alpha: Number, *, lam: Number = 1,
                       sigma: Sequence[Number] = _IMPL_DET_SIGMA) -> BoxLossConfig:
    r"""A box loss :math:`(\lambda/\alpha) H_\alpha` with a chosen :math:`\alpha` in both stages
    (the controlled-label-noise experiment of the detectors chapter).

    ``alpha = 0`` gives the L1 limit (``kind="l1"``).  :math:`\lambda` and :math:`\sigma` are
    held fixed, so in the KL reading (Table 2) only the label-noise scale
    :math:`\alpha\sigma w_a` changes; the prediction-noise scale :math:`\sigma w_a/\lambda`
    stays.  The name, ``"sweep_alpha<alpha>"`` (e.g. ``sweep_alpha0.70711``), is understood by
    :func:`get_preset`, so a training config can store it as a string.
    """
    alpha = check_number(alpha, "alpha", allow_zero=True)
    sig = check_four(sigma, "sigma")
    if sig == _IMPL_DET_SIGMA and lam == 1:
        name = f"{SWEEP_PREFIX}{float(alpha):.5g}"
    else:
        name = (f"{SWEEP_PREFIX}{float(alpha):.5g}-lam{float(lam):.5g}-sigma"
                + ",".join(f"{float(v):.5g}" for v in sig))
    stage = StageLoss("l1", lam, 0, sig) if alpha == 0 else StageLoss("huber", lam, alpha, sig)
    return BoxLossConfig(name, stage, stage,
                         "α sweep (controlled label noise): (λ/α)·H_α with λ and σ fixed in "
                         "both stages; α = 0 is the L1 limit.")


def _parse_sweep_name(name: str) -> BoxLossConfig:
    body = name[len(SWEEP_PREFIX):]
    parts = body.split("-")
    try:
        alpha = float(parts[0])
        lam: Number = 1
        sigma: Sequence[Number] = _IMPL_DET_SIGMA
        for part in parts[1:]:
            if part.startswith("lam"):
                lam = float(part[3:])
            elif part.startswith("sigma"):
                sigma = tuple(float(v) for v in part[5:].split(","))
            else:
                raise ValueError(part)
    except ValueError:
        raise ValueError(f"unknown box-loss preset {name!r}: a sweep name is "
                         f"'{SWEEP_PREFIX}<alpha>[-lam<lam>][-sigma<sx>,<sy>,<sw>,<sh>]', e.g. "
                         f"'{SWEEP_PREFIX}0.5'") from None
    config = alpha_sweep_preset(alpha, lam=lam, sigma=sigma)
    return replace(config, name=name)


def get_preset(name: str | BoxLossConfig) -> BoxLossConfig:
    """The preset called ``name`` (a :class:`BoxLossConfig` is returned unchanged).

    Besides :data:`PRESETS`, names of :func:`alpha_sweep_preset` (``"sweep_alpha<alpha>"``) are
    understood."""
    if isinstance(name, BoxLossConfig):
        return name
    if isinstance(name, str) and name.startswith(SWEEP_PREFIX):
        return _parse_sweep_name(name)
    try:
        return PRESETS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown box-loss preset {name!r}; valid names: "
                         f"{', '.join(PRESETS)}, or {SWEEP_PREFIX}<alpha>") from None



def interpret_config(config: str | BoxLossConfig, anchor_w: Number = 1,
                     anchor_h: Number = 1) -> dict[str, Interpretation]:
    """:func:`interpret` both stages of a preset: ``{"proposal": ..., "detection": ...}``."""
    config = get_preset(config)
    return {s: interpret(config.stage(s), anchor_w, anchor_h) for s in STAGES}
