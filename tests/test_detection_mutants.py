"""Checks of klhuber.detection that mutation testing (``make mutants``, module ``detection``)
found missing: the RetinaNet heads built directly (the library builds torchvision's and converts
them, so their constructors had no test), a box loss's plain fields, defaults and error
messages, the box coders' multi-class decoding, size limits and dtypes, and the detector modules
against torchvision's own on edge batches (one sampled anchor or proposal, images without
foreground, one image), in eval mode and with the settings they copy."""

from __future__ import annotations

import copy
import json
import math
import re
from fractions import Fraction
from functools import partial

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection import FasterRCNN, RetinaNet
from torchvision.models.detection._utils import BoxCoder
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.retinanet import RetinaNetHead, RetinaNetRegressionHead
from torchvision.models.detection.roi_heads import RoIHeads, fastrcnn_loss
from torchvision.models.detection.rpn import RegionProposalNetwork, RPNHead
from torchvision.ops import MultiScaleRoIAlign

from klhuber.detection import box_losses as bl
from klhuber.detection.heads import (
    HARMONIC_CHOICES,
    KLRegionProposalNetwork,
    KLRetinaNetHead,
    KLRetinaNetRegressionHead,
    KLRoIHeads,
    attach_box_loss,
)
from klhuber.interpret import PRESETS, kinds

LOSS = bl.BoxRegressionLoss("huber", lam=2, alpha=0.5, sigma=(0.5, 0.25, 2, 4))


@pytest.mark.parametrize("norm_layer", [None, partial(nn.GroupNorm, 4)])
def test_kl_retinanet_head_is_torchvisions_head_with_the_box_loss(norm_layer):
    torch.manual_seed(0)
    ours = KLRetinaNetHead(8, 3, 5, norm_layer=norm_layer, box_loss=LOSS)
    torch.manual_seed(0)
    stock = RetinaNetHead(8, 3, 5, norm_layer=norm_layer)
    # the same layers, created in the same order: a seed gives torchvision's initial weights
    ours_state, stock_state = ours.state_dict(), stock.state_dict()
    assert list(ours_state) == list(stock_state)
    assert all(torch.equal(ours_state[k], stock_state[k]) for k in stock_state)
    assert type(ours.regression_head) is KLRetinaNetRegressionHead
    assert ours.regression_head.box_loss is LOSS
    assert ours.regression_head.box_coder.weights == LOSS.weights == (2.0, 4.0, 0.5, 0.25)
    features = [torch.randn(2, 8, 6, 6), torch.randn(2, 8, 3, 3)]
    got, expected = ours(features), stock(features)
    assert set(got) == set(expected) == {"cls_logits", "bbox_regression"}
    for key in expected:
        assert torch.equal(got[key], expected[key])


def test_kl_retinanet_regression_head_built_directly_equals_the_converted_one():
    torch.manual_seed(1)
    direct = KLRetinaNetRegressionHead(8, 3, box_loss=LOSS)
    torch.manual_seed(1)
    converted = KLRetinaNetRegressionHead.from_torchvision(RetinaNetRegressionHead(8, 3), LOSS)
    assert direct.state_dict().keys() == converted.state_dict().keys()
    for key, value in converted.state_dict().items():
        assert torch.equal(direct.state_dict()[key], value)
    assert direct.box_loss is LOSS and direct.box_coder.weights == LOSS.weights
    # the same loss on the same matches
    anchors = [torch.tensor([[0.0, 0.0, 8.0, 8.0], [4.0, 4.0, 20.0, 12.0], [0.0, 0.0, 2.0, 2.0]])]
    targets = [{"boxes": torch.tensor([[1.0, 0.5, 9.0, 7.0], [5.0, 3.0, 19.0, 13.0]])}]
    outputs = {"bbox_regression": torch.randn(1, 3, 4)}
    matched = [torch.tensor([0, 1, -1])]
    assert torch.equal(direct.compute_loss(targets, outputs, anchors, matched),
                       converted.compute_loss(targets, outputs, anchors, matched))


def test_box_loss_as_dict_gives_the_plain_fields_and_rebuilds_the_loss():
    fields = LOSS.as_dict()
    assert fields == {"kind": "huber", "lam": 2.0, "alpha": 0.5, "sigma": [0.5, 0.25, 2.0, 4.0],
                      "wh_target": "log", "bbox_xform_clip": bl.DEFAULT_XFORM_CLIP}
    assert json.loads(json.dumps(fields)) == fields  # for provenance JSON
    assert bl.BoxRegressionLoss(**fields).as_dict() == fields
    linear = bl.BoxRegressionLoss("l1", alpha=3, wh_target="linear", bbox_xform_clip=2.5)
    assert linear.as_dict() == {"kind": "l1", "lam": 1.0, "alpha": 0.0,
                                "sigma": [1.0, 1.0, 1.0, 1.0], "wh_target": "linear",
                                "bbox_xform_clip": 2.5}


# ---------------------------------------------------------------------------------------------
# Box coders: the linear width/height target of Appendix D (eq. 89-90) and make_box_coder.
# References are closed forms in plain Python floats or torchvision's own BoxCoder.

SIGMA = (0.3, 0.45, 0.7, 0.15)  # σx, σy, σw, σh: all different, 1/σ not exact in float32
ANCHORS = ((3.0, -2.0, 7.0, 8.0), (-5.0, 1.0, 1.0, 3.5))  # w_a ≠ h_a, away from the origin
GT = ((4.0, -1.0, 10.0, 5.0), (-6.5, 0.0, -1.0, 5.0))  # every size grows in one, shrinks in one


def _centre_size(box):
    w, h = box[2] - box[0], box[3] - box[1]
    return box[0] + w / 2, box[1] + h / 2, w, h


def _linear_codes(box, anchor):
    """Eq. 22/24 for the centres, Appendix D (t_w = (w/w_a - 1)/σ_w) for the sizes."""
    (x, y, w, h), (xa, ya, wa, ha) = _centre_size(box), _centre_size(anchor)
    sx, sy, sw, sh = SIGMA
    return [(x - xa) / (sx * wa), (y - ya) / (sy * ha), (w / wa - 1) / sw, (h / ha - 1) / sh]


def _decoded(codes, anchor, wh_target, clip=bl.DEFAULT_XFORM_CLIP):
    """The box of ``codes``: size ratio exp(min(σ t, clip)) (log, as torchvision) or
    1 + σ t clamped to [0, exp(clip)] (linear)."""
    xa, ya, wa, ha = _centre_size(anchor)
    sx, sy, sw, sh = SIGMA
    tx, ty, tw, th = codes
    if wh_target == "log":
        rw, rh = math.exp(min(tw * sw, clip)), math.exp(min(th * sh, clip))
    else:
        rw, rh = (min(max(1 + t * s, 0.0), math.exp(clip)) for t, s in ((tw, sw), (th, sh)))
    x, y, w, h = xa + tx * sx * wa, ya + ty * sy * ha, rw * wa, rh * ha
    return [x - w / 2, y - h / 2, x + w / 2, y + h / 2]


def _f64(rows):
    return torch.tensor(rows, dtype=torch.float64)


def test_linear_coder_encodes_float64_boxes_to_float64_precision():
    coder = bl.make_box_coder(SIGMA, "linear")
    codes = coder.encode_single(_f64(GT), _f64(ANCHORS))
    assert codes.dtype == torch.float64
    want = _f64([_linear_codes(b, a) for b, a in zip(GT, ANCHORS)])
    assert (want > 0).any(0).all() and (want < 0).any(0).all()  # both signs per coordinate
    # the weights 1/σ enter in the boxes' dtype: float32 weights would be off by ~1e-8
    torch.testing.assert_close(codes, want, rtol=1e-13, atol=1e-13)
    # the centres are torchvision's (eq. 22/24), also to float64 precision
    stock = BoxCoder(tuple(1 / s for s in SIGMA)).encode_single(_f64(GT), _f64(ANCHORS))
    torch.testing.assert_close(codes[:, :2], stock[:, :2], rtol=1e-13, atol=1e-13)


def test_box_loss_defaults_are_huber_with_unit_parameters():
    """BoxRegressionLoss(): (λ/α) H_α with λ = α = 1, which is torch's smooth L1 (β = 1), on
    the codes of torchvision's BoxCoder with weights (1, 1, 1, 1)."""
    loss = bl.BoxRegressionLoss()
    target = _f64([[0.1, -0.2, 0.3, 0.05], [-0.6, 0.4, 0.0, -1.0]])
    pred = target + _f64([[-2.5, 0.3, 1.7, -0.05], [0.9, -1.4, -0.2, 3.0]])  # |r| < 1 and > 1
    torch.testing.assert_close(loss(pred, target),
                               F.smooth_l1_loss(pred, target, beta=1.0, reduction="sum"))
    coder, stock = loss.box_coder(), BoxCoder((1.0, 1.0, 1.0, 1.0))
    torch.testing.assert_close(coder.encode_single(_f64(GT), _f64(ANCHORS)),
                               stock.encode_single(_f64(GT), _f64(ANCHORS)))
    assert coder.bbox_xform_clip == stock.bbox_xform_clip


def test_from_stage_of_a_box_loss_keeps_it_or_applies_the_overrides():
    sigma = (Fraction(1, 49), Fraction(1, 3), Fraction(1, 10), Fraction(1, 5))
    loss = bl.BoxRegressionLoss("kl", 2, Fraction(1, 9), sigma, "linear", 2.5)
    assert loss.weights == (49.0, 3.0, 10.0, 5.0)  # 1/σ exactly for a Fraction σ
    same = bl.BoxRegressionLoss.from_stage(loss)
    assert same == loss and same.weights == (49.0, 3.0, 10.0, 5.0)
    changed = bl.BoxRegressionLoss.from_stage(loss, lam=3, wh_target="log")
    assert (changed.kind, changed.lam, changed.alpha) == ("kl", 3.0, 1 / 9)
    assert (changed.wh_target, changed.bbox_xform_clip) == ("log", 2.5)
    assert changed.weights == pytest.approx((49.0, 3.0, 10.0, 5.0), rel=1e-15)
    assert (loss.lam, loss.wh_target) == (2.0, "linear")  # the loss itself is unchanged


def test_sigma_may_be_any_real_number_type():
    sigma = (np.float32(0.3), np.int64(2), 0.45, Fraction(1, 3))
    loss = bl.BoxRegressionLoss(sigma=sigma)
    assert loss.weights == (1 / float(np.float32(0.3)), 0.5, 1 / 0.45, 3.0)
    assert loss.sigma == pytest.approx([float(s) for s in sigma], rel=1e-15)


_SIGMA_NAMES = ("sigma_x", "sigma_y", "sigma_w", "sigma_h")


def _sigma_with(index, value):
    return tuple(value if i == index else 1.0 for i in range(4))


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"lam": 0}, "lam must be > 0, got 0"),
    ({"lam": -0.5}, "lam must be > 0, got -0.5"),
    ({"lam": "1"}, "lam must be a real number, got '1'"),
    ({"lam": math.inf}, "lam must be finite, got inf"),
    ({"alpha": "1"}, "alpha must be a real number, got '1'"),
    ({"alpha": math.nan}, "alpha must be finite, got nan"),
    ({"bbox_xform_clip": 0}, "bbox_xform_clip must be > 0, got 0"),
    ({"bbox_xform_clip": -1.0}, "bbox_xform_clip must be > 0, got -1.0"),
    ({"bbox_xform_clip": None}, "bbox_xform_clip must be a real number, got None"),
    ({"bbox_xform_clip": math.inf}, "bbox_xform_clip must be finite, got inf"),
    *[({"sigma": _sigma_with(i, 0.0)}, f"{name} must be > 0, got 0.0")
      for i, name in enumerate(_SIGMA_NAMES)],
    *[({"sigma": _sigma_with(i, True)}, f"{name} must be a real number, got True")
      for i, name in enumerate(_SIGMA_NAMES)],
    *[({"sigma": _sigma_with(i, -math.inf)}, f"{name} must be finite, got -inf")
      for i, name in enumerate(_SIGMA_NAMES)],
])
def test_box_loss_errors_name_the_parameter_and_the_allowed_range(kwargs, message):
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        bl.BoxRegressionLoss(**kwargs)


def test_make_box_coder_defaults_to_torchvisions_log_target():
    coder = bl.make_box_coder(SIGMA)
    assert not isinstance(coder, bl.LinearWHBoxCoder)
    stock = BoxCoder(tuple(1 / s for s in SIGMA))
    torch.testing.assert_close(coder.encode_single(_f64(GT), _f64(ANCHORS)),
                               stock.encode_single(_f64(GT), _f64(ANCHORS)))
    assert coder.bbox_xform_clip == stock.bbox_xform_clip == bl.DEFAULT_XFORM_CLIP


# three classes' codes per row (n, 12), as the RoI heads decode them; sizes clamped on every
# side: class 0 inside the limits, class 1 wider than exp(clip) and of negative height (linear),
# class 2 of negative width and taller than exp(clip)
MULTI_CLASS_CODES = (
    (0.7, -1.3, 0.9, -0.4, -0.5, 0.8, 100.0, -9.0, 1.1, -0.2, -3.0, 500.0),
    (-0.4, 0.6, -0.3, 0.5, 0.2, -0.9, 95.0, -7.0, -1.2, 0.3, -2.0, 450.0),
)


@pytest.mark.parametrize("wh_target", ["log", "linear"])
@pytest.mark.parametrize("clip", [None, 0.5, 1.5])
@pytest.mark.parametrize("source", ["make_box_coder", "BoxRegressionLoss.box_coder"])
def test_coder_decodes_each_class_with_its_size_limits(source, wh_target, clip):
    given = {} if clip is None else {"bbox_xform_clip": clip}
    if source == "make_box_coder":
        coder = bl.make_box_coder(SIGMA, wh_target, **given)
    else:
        coder = bl.BoxRegressionLoss("huber", 1, 1, SIGMA, wh_target, **given).box_coder()
    clip = bl.DEFAULT_XFORM_CLIP if clip is None else clip
    assert coder.bbox_xform_clip == clip
    got = coder.decode_single(_f64(MULTI_CLASS_CODES), _f64(ANCHORS))
    assert got.shape == (2, 12)
    want = [sum((_decoded(row[4 * k:4 * k + 4], anchor, wh_target, clip) for k in range(3)), [])
            for row, anchor in zip(MULTI_CLASS_CODES, ANCHORS)]
    torch.testing.assert_close(got, _f64(want))
    boxes = got.view(2, 3, 4)  # (row, class, box)
    sizes = boxes[..., 2:] - boxes[..., :2]  # (row, class, [w, h])
    anchor_sizes = _f64([_centre_size(a)[2:] for a in ANCHORS])
    torch.testing.assert_close(sizes[:, 1, 0], math.exp(clip) * anchor_sizes[:, 0])
    torch.testing.assert_close(sizes[:, 2, 1], math.exp(clip) * anchor_sizes[:, 1])
    if wh_target == "linear":
        assert (sizes[:, 1, 1] == 0).all() and (sizes[:, 2, 0] == 0).all()


@pytest.mark.parametrize(("codes_dtype", "anchors_dtype"),
                         [(torch.float32, torch.float64), (torch.float64, torch.float32)])
def test_linear_decode_keeps_the_codes_dtype_as_torchvision(codes_dtype, anchors_dtype):
    codes = _f64(MULTI_CLASS_CODES)[:, :4].to(codes_dtype)
    anchors = _f64(ANCHORS).to(anchors_dtype)
    got = bl.make_box_coder(SIGMA, "linear").decode_single(codes, anchors)
    stock = BoxCoder(tuple(1 / s for s in SIGMA)).decode_single(codes, anchors)
    assert got.dtype == stock.dtype == codes_dtype
    want = [_decoded(row, anchor, "linear") for row, anchor in
            zip(codes.double().tolist(), anchors.double().tolist())]
    torch.testing.assert_close(got, _f64(want).to(codes_dtype))


# ---------------------------------------------------------------------------------------------
# Box losses: the registry and the dtype of the loss


@pytest.fixture
def private_registry(monkeypatch):
    """Kinds registered by a test are dropped afterwards."""
    monkeypatch.setattr(kinds, "_REGISTRY", dict(kinds._REGISTRY))


def test_register_box_loss_kind_overwrite_replaces_the_kind(private_registry):
    pred, target = torch.tensor([[1.0, -2.0, 0.5, 4.0]]), torch.zeros(1, 4)
    bl.register_box_loss_kind("test_abs", lambda p, t, s: s.lam * (p - t).abs())
    assert bl.BoxRegressionLoss("test_abs", 2.0)(pred, target).item() == 15.0
    with pytest.raises(ValueError, match="already registered"):
        bl.register_box_loss_kind("test_abs", lambda p, t, s: s.lam * (p - t) ** 2)
    bl.register_box_loss_kind("test_abs", lambda p, t, s: s.lam * (p - t) ** 2, overwrite=True)
    assert bl.BoxRegressionLoss("test_abs", 2.0)(pred, target).item() == 42.5
    assert bl.loss_kinds().count("test_abs") == 1


@pytest.mark.parametrize("pred_dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_loss_is_computed_in_the_predictions_dtype_not_the_targets(pred_dtype):
    """float64 targets (boxes encoded in float64) do not promote a float32 (or autocast
    float16) prediction's loss: the residual is formed in float32 at least, in pred's dtype."""
    loss = bl.BoxRegressionLoss("l1", lam=3.0)
    pred = torch.tensor([[0.1, -2.0, 0.25, 1.0]]).to(pred_dtype)
    target = torch.tensor([[0.1, 0.5, -0.75, 1.0]], dtype=torch.float64)
    want = 3.0 * (pred.float() - target.float()).abs()
    got = loss.elementwise(pred, target)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, want)
    assert loss(pred, target).dtype == torch.float32


def test_arch_stage_overrides_hold_the_losses_the_retinanet_head_uses():
    for name, config in PRESETS.items():
        override = bl.ARCH_STAGE_OVERRIDES.get((name, "retinanet"))
        assert (override is None) == (config.retinanet is None), name
        if override is not None:
            assert override == bl.stage_losses(name, "retinanet")["retinanet"]
    assert set(bl.ARCH_STAGE_OVERRIDES) == {(name, "retinanet") for name, config in
                                            PRESETS.items() if config.retinanet is not None}
    # torchvision's stock RetinaNet: L1 on codes of weights (1, 1, 1, 1)
    stock = bl.ARCH_STAGE_OVERRIDES[("torchvision", "retinanet")]
    assert stock.weights == RetinaNet(_TinyBackbone(), 3).box_coder.weights == (1, 1, 1, 1)
    pred, target = torch.randn(5, 4, dtype=torch.float64), torch.randn(5, 4, dtype=torch.float64)
    torch.testing.assert_close(stock(pred, target), F.l1_loss(pred, target, reduction="sum"))


def test_arch_stage_overrides_rebuilds_the_same_losses_when_called_again(monkeypatch):
    """The import-time table, rebuilt by calling its builder into an empty dict (so that a
    change to the builder shows, which the import-time call alone would hide)."""
    rebuilt: dict = {}
    monkeypatch.setattr(bl, "ARCH_STAGE_OVERRIDES", rebuilt)
    bl._arch_stage_overrides()
    want = {(name, "retinanet") for name, config in PRESETS.items() if config.retinanet is not None}
    assert want and set(rebuilt) == want
    for name, arch in want:
        assert rebuilt[(name, arch)] == bl.BoxRegressionLoss.from_stage(PRESETS[name].retinanet)
        assert rebuilt[(name, arch)] is not None


# ---------------------------------------------------------------------------------------------
# The detector modules against torchvision's own: tiny modules (a one-layer backbone) and
# hand-built float64 batches; the torchvision preset must give torchvision's losses


class _TinyBackbone(nn.Conv2d):
    """One convolution of stride 4 and 8 channels: detectors built in milliseconds."""

    def __init__(self) -> None:
        super().__init__(3, 8, 3, stride=4, padding=1)
        self.out_channels = 8


def _tiny_fasterrcnn() -> FasterRCNN:
    return FasterRCNN(_TinyBackbone(), num_classes=3, min_size=32, max_size=32,
                      rpn_anchor_generator=AnchorGenerator(((8, 16),), ((0.5, 1.0, 2.0),)),
                      box_roi_pool=MultiScaleRoIAlign(["0"], 7, 2))


def _tiny_retinanet() -> RetinaNet:
    return RetinaNet(_TinyBackbone(), 3, min_size=32, max_size=32,
                     anchor_generator=AnchorGenerator(((8,),), ((0.5, 1.0, 2.0),)))


def _roi_heads(cls=RoIHeads, **kwargs):
    """Box RoI heads of 3 classes on the 8-channel features of a 32x32 image (stride 4)."""
    settings = {"fg_iou_thresh": 0.5, "bg_iou_thresh": 0.5, "batch_size_per_image": 16,
                "positive_fraction": 0.25, "score_thresh": 0.05, "nms_thresh": 0.5,
                "detections_per_img": 100, **kwargs}
    if cls is RoIHeads:  # KLRoIHeads takes its box-coder weights from the box loss
        settings["bbox_reg_weights"] = None
    return cls(MultiScaleRoIAlign(["0"], 7, 2), TwoMLPHead(8 * 49, 32), FastRCNNPredictor(32, 3),
               **settings)


TV_RPN, TV_ROI = (bl.stage_losses("torchvision", "fasterrcnn")[k] for k in ("rpn", "roi"))
TV_RETINANET = bl.stage_losses("torchvision", "retinanet")["retinanet"]


def _same(got, want):
    """Equal to float64 rounding (tensors or tuples of tensors)."""
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-15)


def _randn(generator, *shape, scale=1.0):
    return scale * torch.randn(*shape, generator=generator, dtype=torch.float64)


# RPN anchors per image: 1 foreground, 0 background, -1 ignored (not sampled)
RPN_LABELS = {
    "one sampled anchor": [[-1.0, 1.0, -1.0], [-1.0, -1.0]],
    "images with 2, 0 and 1 positives": [[1.0, 0, -1, 1, 0], [0.0, 0, -1], [-1.0, 1, 0]],
}


def _rpn_batch(labels, seed=0):
    g = torch.Generator().manual_seed(seed)
    sizes = [len(lab) for lab in labels]
    n = sum(sizes)
    targets = _randn(g, n, 4, scale=0.3)
    return (_randn(g, n, 1), _randn(g, n, 4, scale=0.3),
            [torch.tensor(lab, dtype=torch.float64) for lab in labels], list(targets.split(sizes)))


# RoI proposals per image: class 0 background, 1 and 2 foreground
ROI_LABELS = {
    "one sampled proposal": [[2]],
    "images with 3, 0 and 1 positives": [[0, 1, 2, 0, 2], [0, 0], [1]],
}


def _roi_batch(labels, seed=0, num_classes=3):
    g = torch.Generator().manual_seed(seed)
    sizes = [len(lab) for lab in labels]
    n = sum(sizes)
    targets = _randn(g, n, 4, scale=0.3)
    return (_randn(g, n, num_classes), _randn(g, n, 4 * num_classes, scale=0.3),
            [torch.tensor(lab) for lab in labels], list(targets.split(sizes)))


def _sampled_losses(rpn, batch, seed=1):
    torch.manual_seed(seed)  # the sampler draws a permutation
    return rpn.compute_loss(*batch)


@pytest.mark.parametrize("case", sorted(RPN_LABELS))
def test_rpn_box_loss_is_torchvisions_for_any_number_of_sampled_anchors(case):
    torch.manual_seed(0)
    stock = _tiny_fasterrcnn().rpn
    ours = KLRegionProposalNetwork.from_torchvision(stock, TV_RPN)
    batch = _rpn_batch(RPN_LABELS[case])
    want = _sampled_losses(stock, batch)
    _same(_sampled_losses(ours, batch), want)
    assert want[1] > 0


@pytest.mark.parametrize("case", sorted(ROI_LABELS))
def test_roi_losses_are_torchvisions_for_any_number_of_sampled_proposals(case):
    torch.manual_seed(0)
    ours = KLRoIHeads.from_torchvision(_roi_heads(), TV_ROI)
    batch = _roi_batch(ROI_LABELS[case])
    want = fastrcnn_loss(*batch)
    _same(ours.compute_loss(*batch), want)
    assert want[1] > 0


def test_attach_box_loss_defaults_to_torchvisions_losses():
    torch.manual_seed(0)
    stock = _tiny_fasterrcnn()
    ours = attach_box_loss(copy.deepcopy(stock))
    assert ours.rpn.box_coder.weights == stock.rpn.box_coder.weights == (1, 1, 1, 1)
    assert ours.roi_heads.box_coder.weights == stock.roi_heads.box_coder.weights == (10, 10, 5, 5)
    rpn_batch = _rpn_batch(RPN_LABELS["images with 2, 0 and 1 positives"])
    _same(_sampled_losses(ours.rpn, rpn_batch), _sampled_losses(stock.rpn, rpn_batch))
    roi_batch = _roi_batch(ROI_LABELS["images with 3, 0 and 1 positives"])
    _same(ours.roi_heads.compute_loss(*roi_batch), fastrcnn_loss(*roi_batch))

    stock_retinanet = _tiny_retinanet()
    ours_retinanet = attach_box_loss(copy.deepcopy(stock_retinanet))
    assert ours_retinanet.box_coder.weights == stock_retinanet.box_coder.weights
    batch = _retinanet_batch(3, torch.float32)
    torch.testing.assert_close(ours_retinanet.head.regression_head.compute_loss(*batch),
                               stock_retinanet.head.regression_head.compute_loss(*batch))


@pytest.mark.parametrize("detach", HARMONIC_CHOICES)
@pytest.mark.parametrize("case", sorted(ROI_LABELS))
def test_harmonic_roi_losses_and_their_gradients(detach, case):
    """Wang and Zhang's eq. 1 on positives, plain cross entropy on negatives, both over the
    number of sampled proposals; ``detach`` names the factors that are constants."""
    lam = 0.7
    heads = KLRoIHeads.from_torchvision(_roi_heads(), bl.BoxRegressionLoss("l1", lam, sigma=SIGMA),
                                        harmonic=detach)
    logits, regression, labels, targets = _roi_batch(ROI_LABELS[case], seed=5)
    logits.requires_grad_(True)
    regression.requires_grad_(True)
    got = heads.compute_loss(logits, regression, labels, targets)
    got_grads = torch.autograd.grad(sum(got), (logits, regression))

    lab, target = torch.cat(labels), torch.cat(targets)
    n, pos = len(lab), torch.where(lab > 0)[0]
    ce = F.cross_entropy(logits, lab, reduction="none")
    reg = lam * (regression.view(n, 3, 4)[pos, lab[pos]] - target[pos]).abs().sum(dim=1)
    beta_r, beta_c = torch.exp(-reg), torch.exp(-ce[pos])  # 1 + beta_c = 1 + p
    if detach in ("both", "beta_r"):
        beta_r = beta_r.detach()
    if detach in ("both", "beta_c"):
        beta_c = beta_c.detach()
    want = ((ce.sum() + (beta_r * ce[pos]).sum()) / n, ((1 + beta_c) * reg).sum() / n)
    _same(got, want)
    _same(got_grads, torch.autograd.grad(sum(want), (logits, regression)))


# RetinaNet: the same four anchors in every image; per image its boxes and the anchors' matches
# (-1, -2: background / between thresholds): 3 foreground anchors, none, 2
RETINANET_ANCHORS = [[0.0, 0, 20, 20], [10, 10, 50, 40], [5, 5, 25, 45], [0, 0, 64, 64]]
RETINANET_IMAGES = [
    ([[2.0, 1, 22, 18], [12, 8, 47, 44]], [0, 1, 0, -1]),
    ([], [-1, -1, -2, -1]),
    ([[6.0, 4, 30, 40]], [-1, -1, 0, 0]),
]


def _retinanet_batch(num_images, dtype, device="cpu"):
    g = torch.Generator().manual_seed(7)
    images = RETINANET_IMAGES[:num_images]
    targets = [{"boxes": torch.tensor(boxes, dtype=dtype).reshape(-1, 4).to(device)}
               for boxes, _ in images]
    outputs = {"bbox_regression": _randn(g, num_images, 4, 4, scale=0.4).to(dtype).to(device)}
    anchors = [torch.tensor(RETINANET_ANCHORS, dtype=dtype, device=device)] * num_images
    matched = [torch.tensor(m, device=device) for _, m in images]
    return targets, outputs, anchors, matched


@pytest.fixture
def default_dtype(request):
    before = torch.get_default_dtype()
    torch.set_default_dtype(request.param)
    yield request.param
    torch.set_default_dtype(before)


@pytest.mark.parametrize("default_dtype", [torch.float32, torch.float64], indirect=True)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("num_images", [1, 3])
def test_retinanet_loss_is_torchvisions_mean_over_images(num_images, dtype, default_dtype):
    """Per image the loss over its foreground anchors / their count, then the mean over the
    images, in the inputs' dtype whatever torch's default dtype (as torchvision)."""
    stock = RetinaNetRegressionHead(8, 3)
    ours = KLRetinaNetRegressionHead.from_torchvision(stock, TV_RETINANET)
    batch = _retinanet_batch(num_images, dtype)
    want = stock.compute_loss(*batch)
    got = ours.compute_loss(*batch)
    assert got.dtype == want.dtype == dtype
    # one weight per anchor against torchvision's division per image: rounding only (the
    # weights were float32 for float64 losses once, 1.6e-8 off)
    tol = 1e-14 if dtype == torch.float64 else 1e-6
    torch.testing.assert_close(got, want, rtol=tol, atol=0)
    assert want > 0


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_retinanet_loss_on_cuda_equals_the_cpu_loss():
    head = KLRetinaNetRegressionHead.from_torchvision(RetinaNetRegressionHead(8, 3), LOSS)
    want = head.compute_loss(*_retinanet_batch(3, torch.float64))
    got = head.compute_loss(*_retinanet_batch(3, torch.float64, device="cuda"))
    assert got.device.type == "cuda"
    torch.testing.assert_close(got.cpu(), want)


def test_attach_box_loss_uses_the_stages_given():
    rpn_loss = bl.BoxRegressionLoss("kl", 2.0, 0.5, SIGMA)
    roi_loss = bl.BoxRegressionLoss("l1", 3.0, sigma=(0.5, 0.25, 2, 4), wh_target="linear")
    torch.manual_seed(0)
    model = attach_box_loss(_tiny_fasterrcnn(), "torchvision",
                            stages={"rpn": rpn_loss, "roi": roi_loss})
    assert model.klhuber_stage_losses == {"rpn": rpn_loss, "roi": roi_loss}
    assert model.klhuber_box_loss == PRESETS["torchvision"]
    assert model.rpn.box_loss is rpn_loss and model.roi_heads.box_loss is roi_loss
    assert model.rpn.box_coder.weights == pytest.approx([1 / s for s in SIGMA])
    assert isinstance(model.roi_heads.box_coder, bl.LinearWHBoxCoder)
    assert model.roi_heads.box_coder.weights == (2.0, 4.0, 0.5, 0.25)
    logits, regression, labels, targets = _roi_batch(ROI_LABELS["images with 3, 0 and 1 positives"])
    lab, target = torch.cat(labels), torch.cat(targets)
    pos = torch.where(lab > 0)[0]
    chosen = regression.view(len(lab), 3, 4)[pos, lab[pos]]
    _same(model.roi_heads.compute_loss(logits, regression, labels, targets)[1],
          3.0 * (chosen - target[pos]).abs().sum() / len(lab))

    model = attach_box_loss(_tiny_retinanet(), "torchvision", stages={"retinanet": roi_loss})
    assert model.klhuber_stage_losses == {"retinanet": roi_loss}
    assert model.klhuber_box_loss == PRESETS["torchvision"]
    assert model.head.regression_head.box_loss is roi_loss
    assert model.box_coder is model.head.regression_head.box_coder
    assert model.box_coder.weights == (2.0, 4.0, 0.5, 0.25)


# ---------------------------------------------------------------------------------------------
# Converted modules keep torchvision's settings and inference


def test_converted_rpn_proposes_the_same_boxes_as_torchvision():
    torch.manual_seed(0)
    head = RPNHead(8, 6)
    with torch.no_grad():  # objectness spread well beyond the score threshold
        for p in head.parameters():
            p.normal_(0.0, 0.3)
    stock = RegionProposalNetwork(AnchorGenerator(((8, 16),), ((0.5, 1.0, 2.0),)), head,
                                  0.6, 0.2, 64, 0.4, {"training": 60, "testing": 50},
                                  {"training": 25, "testing": 20}, 0.6, score_thresh=0.8)
    stock.min_size = 3.0
    ours = KLRegionProposalNetwork.from_torchvision(stock.eval(), TV_RPN)
    assert not ours.training
    images = ImageList(torch.zeros(2, 3, 32, 32), [(32, 32), (28, 30)])
    features = {"0": torch.randn(2, 8, 8, 8, generator=torch.Generator().manual_seed(1))}
    with torch.no_grad():
        want, _ = stock(images, features)
        got, _ = ours(images, features)
        stock.score_thresh = 0.0  # the threshold matters on this batch
        assert sum(map(len, stock(images, features)[0])) > sum(map(len, want))
    assert [len(b) for b in got] == [len(b) for b in want]
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)


def _roi_inputs():
    g = torch.Generator().manual_seed(3)
    xy = 20 * torch.rand(2, 10, 2, generator=g)
    proposals = list(torch.cat((xy, xy + 4 + 8 * torch.rand(2, 10, 2, generator=g)), dim=2))
    features = {"0": torch.randn(2, 8, 8, 8, generator=g)}
    targets = [{"boxes": torch.tensor([[2.0, 3, 14, 20]]), "labels": torch.tensor([1])},
               {"boxes": torch.tensor([[5.0, 5, 25, 15], [1, 1, 9, 30]]),
                "labels": torch.tensor([2, 1])}]
    return features, proposals, [(32, 32), (32, 32)], targets


def test_converted_roi_heads_detect_as_torchvision_in_eval_mode():
    torch.manual_seed(0)
    stock = _roi_heads(score_thresh=0.0, nms_thresh=0.9, detections_per_img=3).eval()
    ours = KLRoIHeads.from_torchvision(stock, TV_ROI)
    features, proposals, shapes, targets = _roi_inputs()
    with torch.no_grad():
        for given in (None, targets):  # targets are only checked in eval mode
            want, _ = stock(features, proposals, shapes, given)
            got, losses = ours(features, proposals, shapes, given)
            assert losses == {}
            assert [len(d["boxes"]) for d in want] == [3, 3]  # detections_per_img
            for a, b in zip(got, want):
                assert a.keys() == b.keys()
                for key in b:
                    torch.testing.assert_close(a[key], b[key])
        integer_boxes = [{**t, "boxes": t["boxes"].long()} for t in targets]
        for heads in (stock, ours):
            with pytest.raises(TypeError, match="float type"):
                heads(features, proposals, shapes, integer_boxes)


@pytest.mark.parametrize("branch", ["mask", "keypoint"])
def test_roi_heads_with_a_mask_or_keypoint_branch_are_refused(branch):
    extra = {f"{branch}_roi_pool": MultiScaleRoIAlign(["0"], 14, 2),
             f"{branch}_head": nn.Identity(), f"{branch}_predictor": nn.Identity()}
    with pytest.raises(ValueError, match="box heads only"):
        KLRoIHeads.from_torchvision(_roi_heads(**extra), TV_ROI)
    heads = _roi_heads(KLRoIHeads, box_loss=TV_ROI, **extra).train()
    features, proposals, shapes, targets = _roi_inputs()
    with pytest.raises(ValueError, match="box heads only"):
        heads(features, proposals, shapes, targets)
