r"""What a detector's box-regression loss assumes about its labels (Section 6, Appendix D–E).

Section 6 of Meyer (CVPR 2021) reads the box loss of Faster R-CNN through the approximation
:math:`H_\alpha(x) \approx D_{\alpha,1/\alpha}(x)` (eq. 20–21).  A stage (the region proposal
network, or the detection/RoI head, or RetinaNet's single head) regresses the normalised
targets :math:`\tilde t^* = (t^* - \mu)/\sigma` (eq. 24, 28) with the loss
:math:`\tfrac{\lambda}{\alpha} H_\alpha(t - \tilde t^*)` per coordinate, and

.. math::

    \tfrac{\lambda}{\alpha} H_\alpha(t_x - \tilde t_x^*)
        \approx D_{\alpha\sigma_x w_a,\ \sigma_x w_a/\lambda}(\tilde x - x^*)
    \qquad\text{(eq. 26; eq. 32 for } w, h\text{)},

i.e. the loss is (an upper bound of) the KL divergence between a Laplace distribution of
the *label* with scale :math:`b_1 = \alpha\sigma w_a` and one of the *prediction* with scale
:math:`b_2 = \sigma w_a/\lambda`.  This module turns that reading into a library:

* :class:`StageLoss` / :class:`BoxLossConfig` and the :data:`PRESETS` of Table 1, plus what
  torchvision 0.29 and detectron2 actually compute;
* :func:`interpret` (Table 2) and its inverse :func:`configure`;
* :func:`table1` / :func:`table2`, generated from the presets (never stored);
* conversions between torch ``smooth_l1_loss(beta)``, detectron2 ``SMOOTH_L1_BETA``,
  ``huber_loss(delta)``, py-faster-rcnn's ``sigma`` and the paper's :math:`(\lambda, \alpha)`;
* noise estimation from paired boxes (:func:`estimate_box_noise`) or residuals
  (:func:`estimate_residual_noise`), turned into hyper-parameters (:func:`suggest_box_loss`);
* Appendix D: the linear width target :math:`t_w = w/w_a - 1` (:func:`linear_target_error`);
* the ``klhuber interpret`` command (:func:`configure_parser`).

The package's modules: ``kinds`` (the registry of loss kinds, :func:`loss_kind`), ``stage``
(:class:`StageLoss`, :class:`BoxLossConfig`, :func:`interpret`, :func:`configure`),
``presets`` (:data:`PRESETS`, :func:`get_preset`), ``conversions`` (torch / detectron2 /
py-faster-rcnn parameters, Appendix D), ``tables`` (:func:`table1`, :func:`table2`), ``noise``
(noise estimation and its bootstrap) and ``cli``.  Every name is importable from
``klhuber.interpret``.

**Loss kinds.**  Per coordinate, with residual :math:`r = t - \tilde t^*` and :math:`s` the
anchor width (for :math:`x, w`) or height (for :math:`y, h`):

* ``huber``: :math:`\tfrac{\lambda}{\alpha} H_\alpha(r)` (eq. 26); label scale
  :math:`\alpha\sigma s`, prediction scale :math:`\sigma s/\lambda` (approximately, via
  :math:`H_\alpha \approx D_{\alpha,1/\alpha}`);
* ``smooth_l1``: :math:`\lambda\,\mathrm{SmoothL1}_{\beta=\alpha}(r)` — the same function,
  since :math:`\mathrm{SmoothL1}_\beta = H_\beta/\beta`; the kind records how the source
  spells it;
* ``kl``: :math:`\tfrac{\lambda}{\alpha} D_{\alpha/2,1/\alpha}(r)` (Appendix E); label scale
  :math:`\alpha\sigma s/2`, prediction scale :math:`\sigma s/\lambda` (exact);
* ``l1``: :math:`\lambda |r|`, the :math:`\alpha \to 0` limit; label scale 0, prediction
  scale :math:`\sigma s/\lambda` (exact).

``smooth_l1`` with :math:`\alpha = 0` is torch's ``smooth_l1_loss(beta=0)``, i.e. L1, and reads
like ``l1`` (label scale 0, exact).  Each kind's function, accepted α and label factor are
declared once, in the registry of :func:`loss_kind` (:func:`register_loss_kind` adds kinds;
``hiou``, the HIoU loss of the related work, has no Laplace reading).

**The weight.** :math:`\lambda` is the factor in front of the box loss summed over the positive
examples' four coordinates **and divided by the number of examples the stage's
classification loss is averaged over** (sampled anchors for an RPN, sampled RoIs for a
detection head, foreground anchors for RetinaNet).  This is the normalisation of
py-faster-rcnn (RPN: outside weights :math:`1/N_{\text{sampled}}`; RoI head: the
SmoothL1Loss layer divides by the number of RoIs), whose weights the paper calls
:math:`\lambda = 1`, and of torchvision 0.29 (``rpn.py``: ``... / sampled_inds.numel()``;
``roi_heads.py``: ``box_loss / labels.numel()``; ``retinanet.py``: ``/ max(1,
num_foreground)`` like its focal loss) and detectron2 (RPN: ``/ (batch_size_per_image *
num_images)``; RoI head: ``/ gt_classes.numel()``).  A loss written with another normaliser
maps to :math:`\lambda` through :func:`effective_lambda`.  Only :math:`\lambda` relative to
the other loss terms (and the learning rate) is meaningful, so the *prediction* scale is the
least transferable number of the interpretation; the *label* scale does not depend on it.
"""

from __future__ import annotations

from klhuber.interpret import presets as _presets
from klhuber.interpret import stage as _stage
from klhuber.interpret._numbers import COORDINATES as _COORDINATES
from klhuber.interpret.cli import configure_parser
from klhuber.interpret.conversions import (
    caffe_sigma_to_beta,
    effective_lambda,
    from_detectron2,
    from_huber_loss,
    from_smooth_l1,
    linear_target_error,
    matched_ratio_range,
    to_detectron2,
    to_huber_loss,
    to_smooth_l1,
)
from klhuber.interpret.kinds import LossKind, loss_kind, loss_kinds, register_loss_kind
from klhuber.interpret.noise import (
    BoxNoiseEstimate,
    NoiseFit,
    estimate_box_noise,
    estimate_residual_noise,
    fit_laplace_scale,
    suggest_box_loss,
    synthetic_annotations,
)
from klhuber.interpret.presets import alpha_sweep_preset, get_preset, interpret_config
from klhuber.interpret.stage import (
    BoxLossConfig,
    Interpretation,
    StageLoss,
    configure,
    configure_box_loss,
    detector_stages,
    interpret,
)
from klhuber.interpret.tables import Table, format_scale, table1, table2

__all__ = [
    "COORDINATES",
    "KINDS",
    "PAPER_PRESETS",
    "PRESETS",
    "WH_TARGETS",
    "BoxLossConfig",
    "BoxNoiseEstimate",
    "Interpretation",
    "LossKind",
    "NoiseFit",
    "StageLoss",
    "Table",
    "caffe_sigma_to_beta",
    "configure",
    "configure_box_loss",
    "configure_parser",
    "detector_stages",
    "effective_lambda",
    "estimate_box_noise",
    "estimate_residual_noise",
    "fit_laplace_scale",
    "format_scale",
    "from_detectron2",
    "from_huber_loss",
    "from_smooth_l1",
    "SWEEP_PREFIX",
    "alpha_sweep_preset",
    "get_preset",
    "interpret",
    "interpret_config",
    "linear_target_error",
    "loss_kind",
    "loss_kinds",
    "matched_ratio_range",
    "register_loss_kind",
    "suggest_box_loss",
    "synthetic_annotations",
    "table1",
    "table2",
    "to_detectron2",
    "to_huber_loss",
    "to_smooth_l1",
]

# The data, restated here with their descriptions (the API reference documents this package).

#: Box coordinates, in the order of ``StageLoss.sigma``.
COORDINATES: tuple[str, ...] = _COORDINATES
#: The loss kinds that have a Laplace reading, as the module docstring explains (huber,
#: smooth_l1, kl and l1).
KINDS: tuple[str, ...] = _stage.KINDS
#: Width and height target encodings, ``log`` (eq. 27) or ``linear`` (Appendix D, eq. 89–90).
WH_TARGETS: tuple[str, ...] = _stage.WH_TARGETS
#: The presets of the paper's Table 1, in its column order.
PAPER_PRESETS: tuple[str, ...] = _presets.PAPER_PRESETS
#: Named box-loss configurations (Table 1 columns, Appendix D/E variants, libraries).
PRESETS: dict[str, BoxLossConfig] = _presets.PRESETS
#: Prefix of the names of :func:`alpha_sweep_preset`'s configurations.
SWEEP_PREFIX: str = _presets.SWEEP_PREFIX
