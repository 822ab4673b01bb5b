"""Tests of klhuber.detection.models and klhuber.detection.box_losses.

Small on purpose (2 images of 64x64, MobileNetV3-FPN): the whole file runs in well under 90 s on
one CPU core.  Heavy backbones are only built on the ``meta`` device (no memory, no init cost).
"""

from __future__ import annotations

import copy
import math
import subprocess
import sys
from dataclasses import dataclass
from fractions import Fraction

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")

import torch.nn.functional as F  # noqa: E402
from torchvision.models.detection import (  # noqa: E402
    RetinaNet,
    fasterrcnn_mobilenet_v3_large_fpn,
    fasterrcnn_resnet50_fpn,
    retinanet_resnet50_fpn,
)
from torchvision.models.detection.anchor_utils import AnchorGenerator  # noqa: E402
from torchvision.models.detection.backbone_utils import mobilenet_backbone  # noqa: E402
from torchvision.models.detection.rpn import RPNHead  # noqa: E402
from torchvision.ops import box_iou  # noqa: E402
from torchvision.ops.feature_pyramid_network import LastLevelP6P7  # noqa: E402

from klhuber import losses  # noqa: E402
from klhuber.detection import box_losses as bl  # noqa: E402
from klhuber.detection import models as dm  # noqa: E402

SIZE = 64
NUM_CLASSES = 3
TINY = {"min_size": SIZE, "max_size": SIZE}


pytestmark = pytest.mark.usefixtures("one_thread_module")


# ---------------------------------------------------------------------------------------------
# Configs built directly (duck-typed like klhuber.interpret.StageLoss / BoxLossConfig), so that
# these tests do not depend on the presets' values.


@dataclass(frozen=True)
class Stage:
    kind: str = "huber"
    lam: object = 1
    alpha: object = 1
    sigma: tuple = (1, 1, 1, 1)
    wh_target: str = "log"


@dataclass(frozen=True)
class Config:
    name: str
    proposal: Stage
    detection: Stage
    source: str = "test"


F_ = Fraction
SIG_C = (F_(1, 20), F_(1, 20), F_(1, 10), F_(1, 10))
SIG_IMPL = (F_(1, 10), F_(1, 10), F_(1, 5), F_(1, 5))
HAND_CONFIGS = {
    "huber": Config("h", Stage("huber", F_(1, 4), 1, SIG_C), Stage("huber", 1, 1, SIG_C)),
    "huber_impl": Config("i", Stage("huber", 1, F_(1, 9)), Stage("huber", 1, 1, SIG_IMPL)),
    "kl": Config("k", Stage("kl", 2, F_(1, 9)), Stage("kl", F_(1, 2), 1, SIG_IMPL)),
    "smooth_l1": Config("s", Stage("smooth_l1", 3, F_(1, 9)), Stage("smooth_l1", 1, 0, SIG_IMPL)),
    "l1": Config("l", Stage("l1", 1, 1, SIG_C), Stage("l1", 2, 1, SIG_IMPL)),
    "hiou": Config("u", Stage("hiou", 1, F_(1, 2)), Stage("hiou", 2, 1, SIG_C, "linear")),
    "linear": Config(
        "d", Stage("huber", 1, F_(1, 9), wh_target="linear"), Stage("kl", 1, 1, SIG_C, "linear")
    ),
}


def _presets() -> dict:
    try:
        from klhuber import interpret
    except ImportError:
        return {}
    return {name: interpret.get_preset(name) for name in interpret.PRESETS}


PRESETS = _presets()
ALL_CONFIGS = {**HAND_CONFIGS, **{f"preset:{k}": v for k, v in PRESETS.items()}}


# ---------------------------------------------------------------------------------------------
# Independent reference computations (written from the paper, not from the module)


def ref_decode(codes: torch.Tensor, anchors: torch.Tensor, stage) -> torch.Tensor:
    """Inverse of :func:`ref_encode` (x = t_x σ_x w_a + x_a, w = exp(t_w σ_w) w_a or linear)."""
    sx, sy, sw, sh = (float(s) for s in stage.sigma)
    wa, ha = anchors[:, 2] - anchors[:, 0], anchors[:, 3] - anchors[:, 1]
    xa, ya = anchors[:, 0] + wa / 2, anchors[:, 1] + ha / 2
    x, y = codes[:, 0] * sx * wa + xa, codes[:, 1] * sy * ha + ya
    if stage.wh_target == "linear":
        w, h = (1 + codes[:, 2] * sw) * wa, (1 + codes[:, 3] * sh) * ha
    else:
        w, h = torch.exp(codes[:, 2] * sw) * wa, torch.exp(codes[:, 3] * sh) * ha
    return torch.stack((x - w / 2, y - h / 2, x + w / 2, y + h / 2), dim=1)


def some_anchors(n: int, seed: int = 11) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    xy = 100 * torch.rand(n, 2, generator=g, dtype=torch.float64)
    wh = 5 + 60 * torch.rand(n, 2, generator=g, dtype=torch.float64)
    return torch.cat((xy, xy + wh), dim=1)


def ref_elementwise(stage, pred, target, anchors=None) -> torch.Tensor:
    """Per-coordinate loss of eq. 26/32 (huber), Appendix E (kl), smooth L1, L1 from
    klhuber.losses; HIoU per box from klhuber.related.harmonic on boxes decoded from anchors."""
    lam, alpha = float(stage.lam), float(stage.alpha)
    r = pred - target
    if stage.kind == "huber":
        return lam / alpha * losses.huber(r, alpha)
    if stage.kind == "kl":
        return lam / alpha * losses.kl_huber(r, alpha / 2, 1 / alpha)
    if stage.kind == "smooth_l1":
        return lam * (r.abs() if alpha == 0 else losses.smooth_l1(r, alpha))
    if stage.kind == "l1":
        return lam * r.abs()
    if stage.kind == "hiou":
        from klhuber.related.harmonic import hiou_loss

        anchors = some_anchors(len(pred)) if anchors is None else anchors
        a, b = ref_decode(pred, anchors, stage), ref_decode(target, anchors, stage)
        return lam * hiou_loss(a, b, alpha, reduction="none")
    raise AssertionError(stage.kind)


def ref_closed_form(stage, pred, target, anchors=None) -> torch.Tensor:
    """The same from closed forms with torch/torchvision only (eq. 4 via smooth L1, eq. 16)."""
    lam, alpha = float(stage.lam), float(stage.alpha)
    r = pred - target
    a = r.abs()
    if stage.kind == "hiou":
        anchors = some_anchors(len(pred), seed=12) if anchors is None else anchors
        iou = torch.diag(
            box_iou(ref_decode(pred, anchors, stage), ref_decode(target, anchors, stage))
        )
        return lam * (1 + iou) ** alpha * (1 - iou)
    if stage.kind == "kl":  # (λ/α) D_{α/2,1/α}(r) = λ (α/2 e^{-2|r|/α} + |r| - α/2)
        return lam * (alpha / 2 * torch.exp(-2 * a / alpha) + a - alpha / 2)
    if stage.kind == "l1" or alpha == 0:
        return lam * a
    return lam * F.smooth_l1_loss(r, torch.zeros_like(r), beta=alpha, reduction="none")


def ref_encode(gt: torch.Tensor, anchors: torch.Tensor, stage) -> torch.Tensor:
    """Targets of eq. 22, 24, 27, 28 (log) or Appendix D eq. 89-90 (linear), μ = 0."""
    sx, sy, sw, sh = (float(s) for s in stage.sigma)
    wa, ha = anchors[:, 2] - anchors[:, 0], anchors[:, 3] - anchors[:, 1]
    xa, ya = anchors[:, 0] + wa / 2, anchors[:, 1] + ha / 2
    w, h = gt[:, 2] - gt[:, 0], gt[:, 3] - gt[:, 1]
    x, y = gt[:, 0] + w / 2, gt[:, 1] + h / 2
    if stage.wh_target == "linear":
        tw, th = w / wa - 1, h / ha - 1
    else:
        tw, th = torch.log(w / wa), torch.log(h / ha)
    return torch.stack(((x - xa) / wa / sx, (y - ya) / ha / sy, tw / sw, th / sh), dim=1)


def stages_of(config, arch: str) -> dict:
    stages = bl.stage_losses(config, arch)
    return stages


def raw_stage(config, arch: str, which: str):
    """The StageLoss the module should use (framework overrides included)."""
    override = bl.ARCH_STAGE_OVERRIDES.get((getattr(config, "name", None), which))
    if override is not None:
        return override
    return config.detection if which == "roi" else config.proposal


# ---------------------------------------------------------------------------------------------
# Data and models


def batch(with_boxes: bool = True, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    images = [torch.rand(3, SIZE, SIZE, generator=g) for _ in range(2)]
    if with_boxes:
        targets = [
            {
                "boxes": torch.tensor([[4.0, 6.0, 36.0, 44.0], [30.0, 20.0, 60.0, 40.0]]),
                "labels": torch.tensor([1, 2]),
            },
            {"boxes": torch.tensor([[10.0, 12.0, 50.0, 58.0]]), "labels": torch.tensor([2])},
        ]
    else:
        targets = [
            {"boxes": torch.zeros((0, 4)), "labels": torch.zeros((0,), dtype=torch.int64)}
            for _ in range(2)
        ]
    return images, targets


def stock_retinanet_mobilenet() -> RetinaNet:
    """What build_model('retinanet', backbone='mobilenet_v3_fpn') is meant to be, built from
    torchvision's public pieces with torchvision's stock head."""
    body = mobilenet_backbone(
        backbone_name="mobilenet_v3_large",
        weights=None,
        fpn=True,
        norm_layer=torch.nn.BatchNorm2d,
        trainable_layers=6,
        extra_blocks=LastLevelP6P7(256, 256),
    )
    anchors = dm._retinanet_anchors(4, 16)
    return RetinaNet(body, NUM_CLASSES, anchor_generator=anchors, **TINY)


@pytest.fixture(scope="module")
def tiny_fasterrcnn():
    torch.manual_seed(0)
    return dm.build_model(
        "fasterrcnn", NUM_CLASSES, HAND_CONFIGS["huber"], backbone="mobilenet_v3_fpn", **TINY
    )


@pytest.fixture(scope="module")
def tiny_retinanet():
    torch.manual_seed(0)
    return dm.build_model(
        "retinanet", NUM_CLASSES, HAND_CONFIGS["huber"], backbone="mobilenet_v3_fpn", **TINY
    )


def with_loss(model, config):
    return dm.attach_box_loss(copy.deepcopy(model), config)


def run_losses(model, images, targets, seed: int = 123) -> dict:
    model.train()
    torch.manual_seed(seed)
    return model(images, targets)


# ---------------------------------------------------------------------------------------------
# The torchvision preset is torchvision


def _torchvision_config():
    if "torchvision" in PRESETS:
        return PRESETS["torchvision"]
    return Config(
        "torchvision",
        Stage("smooth_l1", 1, F_(1, 9)),
        Stage("smooth_l1", 1, F_(1, 9), SIG_IMPL),
    )


def _assert_same_losses(ours, stock, with_boxes):
    """``ours`` and ``stock`` (same weights) give the same training losses on one batch; the
    stock losses are returned."""
    images, targets = batch(with_boxes)
    expected = run_losses(stock, images, targets)
    got = run_losses(ours, images, targets)
    assert set(got) == set(expected)
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=1e-6, atol=1e-7)
    return expected


@pytest.mark.parametrize("with_boxes", [True, False])
def test_torchvision_preset_equals_stock_fasterrcnn(with_boxes):
    torch.manual_seed(0)
    stock = fasterrcnn_mobilenet_v3_large_fpn(
        weights=None, weights_backbone=None, num_classes=NUM_CLASSES, **TINY
    )
    ours = dm.build_model(
        "fasterrcnn", NUM_CLASSES, _torchvision_config(), backbone="mobilenet_v3_fpn", **TINY
    )
    assert list(ours.state_dict()) == list(stock.state_dict())
    ours.load_state_dict(stock.state_dict())
    assert ours.roi_heads.box_coder.weights == stock.roi_heads.box_coder.weights == (10, 10, 5, 5)
    expected = _assert_same_losses(ours, stock, with_boxes)
    if with_boxes:
        assert expected["loss_box_reg"] > 0 and expected["loss_rpn_box_reg"] > 0


@pytest.mark.parametrize("with_boxes", [True, False])
def test_torchvision_preset_equals_stock_retinanet(with_boxes):
    torch.manual_seed(0)
    stock = stock_retinanet_mobilenet()
    ours = dm.build_model(
        "retinanet", NUM_CLASSES, _torchvision_config(), backbone="mobilenet_v3_fpn", **TINY
    )
    assert list(ours.state_dict()) == list(stock.state_dict())
    ours.load_state_dict(stock.state_dict())
    expected = _assert_same_losses(ours, stock, with_boxes)
    if with_boxes:
        assert expected["bbox_regression"] > 0


def test_attach_to_stock_model_keeps_weights_and_outputs():
    torch.manual_seed(0)
    stock = stock_retinanet_mobilenet()
    ours = dm.attach_box_loss(copy.deepcopy(stock), _torchvision_config())
    for (k1, v1), (k2, v2) in zip(stock.state_dict().items(), ours.state_dict().items()):
        assert k1 == k2 and torch.equal(v1, v2)
    images, _ = batch()
    stock.eval()
    ours.eval()
    with torch.no_grad():
        a, b = stock(images), ours(images)
    for da, db in zip(a, b):
        for key in da:
            torch.testing.assert_close(da[key], db[key])


def test_same_seed_same_init_as_torchvision():
    torch.manual_seed(7)
    stock = stock_retinanet_mobilenet()
    torch.manual_seed(7)
    ours = dm.build_model(
        "retinanet", NUM_CLASSES, HAND_CONFIGS["kl"], backbone="mobilenet_v3_fpn", **TINY
    )
    for (k1, v1), (k2, v2) in zip(stock.state_dict().items(), ours.state_dict().items()):
        assert k1 == k2 and torch.equal(v1, v2), k1


# ---------------------------------------------------------------------------------------------
# State-dict keys equal torchvision's builders' (meta device: no memory, no init cost)


@pytest.mark.parametrize(
    ("arch", "backbone", "builder"),
    [
        ("fasterrcnn", "resnet50_fpn", fasterrcnn_resnet50_fpn),
        ("retinanet", "resnet50_fpn", retinanet_resnet50_fpn),
        ("fasterrcnn", "mobilenet_v3_fpn", fasterrcnn_mobilenet_v3_large_fpn),
    ],
)
def test_state_dict_keys_equal_torchvision(arch, backbone, builder):
    with torch.device("meta"):
        ours = dm.build_model(arch, 91, HAND_CONFIGS["kl"], backbone=backbone)
        stock = builder(weights=None, weights_backbone=None, num_classes=91)
    a, b = ours.state_dict(), stock.state_dict()
    assert list(a) == list(b)
    assert all(a[k].shape == b[k].shape for k in a)


@pytest.mark.parametrize("arch", dm.ARCHS)
@pytest.mark.parametrize("backbone", dm.BACKBONES)
def test_every_backbone_builds(arch, backbone):
    with torch.device("meta"):
        model = dm.build_model(arch, 5, HAND_CONFIGS["linear"], backbone=backbone)
    assert model.klhuber_arch == arch and model.klhuber_backbone == backbone
    if arch == "fasterrcnn":
        assert isinstance(model.rpn, dm.KLRegionProposalNetwork)
        assert isinstance(model.roi_heads, dm.KLRoIHeads)
        assert isinstance(model.roi_heads.box_coder, bl.LinearWHBoxCoder)
        assert model.roi_heads.box_coder.weights == (20.0, 20.0, 10.0, 10.0)
    else:
        assert isinstance(model.head.regression_head, dm.KLRetinaNetRegressionHead)
        assert model.box_coder is model.head.regression_head.box_coder
    if backbone.startswith("vgg16"):
        names = {k.split(".")[0] for k in model.state_dict()}
        assert "backbone" in names
        assert not any(k.startswith("backbone.fpn") for k in model.state_dict())


def test_vgg16_is_py_faster_rcnn_shaped():
    with torch.device("meta"):
        model = dm.build_model("fasterrcnn", 81, _torchvision_config(), backbone="vgg16")
    assert model.backbone.out_channels == 512
    assert model.rpn.anchor_generator.sizes == ((128, 256, 512),)
    assert model.roi_heads.fg_bg_sampler.batch_size_per_image == 128
    assert model.roi_heads.box_predictor.cls_score.in_features == 4096
    assert model.transform.min_size == (600,)
    with torch.device("meta"):
        frozen = dm.build_model(
            "fasterrcnn", 81, _torchvision_config(), backbone="vgg16", trainable_backbone_layers=3
        )
    convs = [m for m in frozen.backbone if isinstance(m, torch.nn.Conv2d)]
    assert [c.weight.requires_grad for c in convs] == [False] * 4 + [True] * 9  # conv1-2 frozen


# ---------------------------------------------------------------------------------------------
# Box coders


@pytest.mark.parametrize("wh_target", bl.WH_TARGETS)
def test_coder_matches_equations(wh_target):
    stage = Stage("huber", 1, 1, SIG_C, wh_target)
    coder = bl.BoxRegressionLoss.from_stage(stage).box_coder()
    g = torch.Generator().manual_seed(3)
    anchors = torch.rand(20, 2, generator=g, dtype=torch.float64) * 50
    anchors = torch.cat(
        (anchors, anchors + 5 + 40 * torch.rand(20, 2, generator=g, dtype=torch.float64)), 1
    )
    gt = anchors + 4 * torch.randn(20, 4, generator=g, dtype=torch.float64)
    codes = coder.encode_single(gt, anchors)
    torch.testing.assert_close(codes, ref_encode(gt, anchors, stage))
    torch.testing.assert_close(coder.decode_single(codes, anchors), gt)


def test_linear_decode_never_negative():
    coder = bl.LinearWHBoxCoder((1.0, 1.0, 1.0, 1.0))
    boxes = coder.decode_single(
        torch.tensor([[0.0, 0.0, -3.0, 1e6]]), torch.tensor([[0.0, 0, 10, 10]])
    )
    w, h = boxes[0, 2] - boxes[0, 0], boxes[0, 3] - boxes[0, 1]
    assert w == 0 and math.isclose(h.item(), 10 * math.exp(coder.bbox_xform_clip), rel_tol=1e-6)


# ---------------------------------------------------------------------------------------------
# Each config's loss on hand-built batches == independent computation


def _rand(shape, seed, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return scale * torch.randn(*shape, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("name", sorted(ALL_CONFIGS))
def test_rpn_loss_hand_built(name):
    config = ALL_CONFIGS[name]
    loss = stages_of(config, "fasterrcnn")["rpn"]
    rpn = dm.KLRegionProposalNetwork(
        AnchorGenerator(),
        RPNHead(4, 3),
        0.7,
        0.3,
        10_000,
        1.0,
        {"training": 10, "testing": 10},
        {"training": 10, "testing": 10},
        0.7,
        box_loss=loss,
    )
    labels = [torch.tensor([1.0, 0, -1, 1, 0, 0]), torch.tensor([0.0, -1, 1, 0])]
    pred, target = _rand((10, 4), 1, 0.5), _rand((10, 4), 2, 0.5)
    objectness = _rand((10, 1), 3)
    obj_loss, box_loss = rpn.compute_loss(objectness, pred, labels, list(target.split([6, 4])))
    lab = torch.cat(labels)
    pos, sampled = lab == 1, lab >= 0
    stage = raw_stage(config, "fasterrcnn", "rpn")
    p, t = pred[pos], target[pos]
    torch.testing.assert_close(box_loss, ref_elementwise(stage, p, t).sum() / sampled.sum())
    torch.testing.assert_close(box_loss, ref_closed_form(stage, p, t).sum() / sampled.sum())
    torch.testing.assert_close(
        obj_loss, F.binary_cross_entropy_with_logits(objectness.flatten()[sampled], lab[sampled])
    )


def _roi_batch(heads, seed):
    """Eight proposals of two images (labels 0 = background) with random logits, regressions
    and targets drawn from ``seed``, ``seed + 1``, ``seed + 2``; and the heads' losses on them."""
    labels = [torch.tensor([0, 1, 2, 0, 2]), torch.tensor([1, 0, 0])]
    n = 8
    class_logits = _rand((n, NUM_CLASSES), seed)
    box_regression = _rand((n, 4 * NUM_CLASSES), seed + 1, 0.3)
    targets = _rand((n, 4), seed + 2, 0.3)
    losses = heads.compute_loss(class_logits, box_regression, labels,
                                list(targets.split([5, 3])))
    return torch.cat(labels), class_logits, box_regression, targets, losses


@pytest.mark.parametrize("name", sorted(ALL_CONFIGS))
def test_roi_loss_hand_built(name, tiny_fasterrcnn):
    config = ALL_CONFIGS[name]
    heads = with_loss(tiny_fasterrcnn, config).roi_heads
    lab, class_logits, box_regression, targets, (cls_loss, box_loss) = _roi_batch(heads, 4)
    n = len(lab)
    idx = torch.where(lab > 0)[0]
    chosen = box_regression.view(n, NUM_CLASSES, 4)[idx, lab[idx]]
    stage = raw_stage(config, "fasterrcnn", "roi")
    t = targets[idx]
    torch.testing.assert_close(box_loss, ref_elementwise(stage, chosen, t).sum() / n)
    torch.testing.assert_close(box_loss, ref_closed_form(stage, chosen, t).sum() / n)
    torch.testing.assert_close(cls_loss, F.cross_entropy(class_logits, lab))


@pytest.mark.parametrize("name", sorted(ALL_CONFIGS))
def test_retinanet_loss_hand_built(name, tiny_retinanet):
    config = ALL_CONFIGS[name]
    head = with_loss(tiny_retinanet, config).head.regression_head
    stage = raw_stage(config, "retinanet", "retinanet")
    anchors = [
        torch.tensor(
            [[0.0, 0, 20, 20], [10, 10, 50, 40], [5, 5, 25, 45], [0, 0, 64, 64]],
            dtype=torch.float64,
        )
    ] * 2
    targets = [
        {"boxes": torch.tensor([[2.0, 1, 22, 18], [12, 8, 47, 44]], dtype=torch.float64)},
        {"boxes": torch.tensor([[6.0, 4, 30, 40]], dtype=torch.float64)},
    ]
    matched = [torch.tensor([0, 1, -1, -2]), torch.tensor([-1, -1, 0, 0])]
    regression = _rand((2, 4, 4), 7, 0.4)
    got = head.compute_loss(targets, {"bbox_regression": regression}, anchors, matched)
    per_image = []
    for t, reg, a, m in zip(targets, regression, anchors, matched):
        fg = m >= 0
        codes = ref_encode(t["boxes"][m[fg]], a[fg], stage)
        value = ref_elementwise(stage, reg[fg], codes, a[fg]).sum()
        per_image.append(value / max(1, int(fg.sum())))
    torch.testing.assert_close(got, sum(per_image) / 2)


def test_appendix_e_loss_bounds_huber():
    """Eq. 20: (λ/α) D_{α/2,1/α} ≥ (λ/α) H_α, so the kl kind is never below the huber kind."""
    r = torch.linspace(-3, 3, 601, dtype=torch.float64)
    for alpha in (1 / 9, 0.5, 1.0):
        kl = bl.BoxRegressionLoss("kl", 2.0, alpha).elementwise(r, torch.zeros_like(r))
        hub = bl.BoxRegressionLoss("huber", 2.0, alpha).elementwise(r, torch.zeros_like(r))
        assert torch.all(kl >= hub - 1e-12)


# ---------------------------------------------------------------------------------------------
# No positives -> box loss exactly zero; gradients finite


@pytest.mark.parametrize("name", sorted(HAND_CONFIGS))
@pytest.mark.parametrize("arch", dm.ARCHS)
def test_box_loss_zero_without_positives(name, arch, tiny_fasterrcnn, tiny_retinanet):
    base = tiny_fasterrcnn if arch == "fasterrcnn" else tiny_retinanet
    model = with_loss(base, HAND_CONFIGS[name])
    images, targets = batch(with_boxes=False)
    out = run_losses(model, images, targets)
    box_keys = (
        ("loss_box_reg", "loss_rpn_box_reg") if arch == "fasterrcnn" else ("bbox_regression",)
    )
    for key in box_keys:
        assert out[key].item() == 0.0, key
    total = sum(out.values())
    model.zero_grad()
    total.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("name", sorted(ALL_CONFIGS))
@pytest.mark.parametrize("arch", dm.ARCHS)
def test_gradients_finite(name, arch, tiny_fasterrcnn, tiny_retinanet):
    base = tiny_fasterrcnn if arch == "fasterrcnn" else tiny_retinanet
    model = with_loss(base, ALL_CONFIGS[name])
    images, targets = batch()
    out = run_losses(model, images, targets)
    assert all(torch.isfinite(v) for v in out.values())
    model.zero_grad()
    sum(out.values()).backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    if arch == "retinanet":
        assert model.head.regression_head.bbox_reg.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("kind", bl.LOSS_KINDS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_low_precision_inputs(kind, dtype):
    loss = bl.BoxRegressionLoss(kind, 1.0, 1 / 9)
    pred = (_rand((50, 4), 8, 30.0)).to(dtype).requires_grad_()
    value = loss(pred, torch.zeros(50, 4, dtype=dtype))
    assert value.dtype in (torch.float32, torch.float64) and torch.isfinite(value)
    value.backward()
    assert torch.isfinite(pred.grad).all()


def test_eval_mode_detections_with_linear_target(tiny_fasterrcnn, tiny_retinanet):
    images, _ = batch()
    for base in (tiny_fasterrcnn, tiny_retinanet):
        model = with_loss(base, HAND_CONFIGS["linear"]).eval()
        with torch.no_grad():
            detections = model(images)
        assert len(detections) == 2
        for det in detections:
            boxes = det["boxes"]
            assert torch.isfinite(boxes).all()
            assert (boxes[:, 2:] >= boxes[:, :2]).all()


# ---------------------------------------------------------------------------------------------
# Presets, weights files, validation, lazy import


@pytest.mark.skipif(not PRESETS, reason="klhuber.interpret not available")
def test_preset_names_resolve():
    for name, config in PRESETS.items():
        stages = bl.stage_losses(name, "fasterrcnn")
        assert stages["rpn"] == bl.BoxRegressionLoss.from_stage(config.proposal)
        assert stages["roi"] == bl.BoxRegressionLoss.from_stage(config.detection)
    with pytest.raises(ValueError):
        bl.stage_losses("no-such-preset", "fasterrcnn")


def test_weights_path_roundtrip(tmp_path, tiny_retinanet):
    state = tiny_retinanet.state_dict()
    plain, wrapped = tmp_path / "w.pt", tmp_path / "ckpt.pt"
    torch.save(state, plain)
    # torchvision-reference style checkpoint, without BatchNorm counters (as frozen-BN files)
    torch.save(
        {"model": {k: v for k, v in state.items() if "num_batches_tracked" not in k}, "epoch": 3},
        wrapped,
    )
    for path in (plain, wrapped):
        torch.manual_seed(99)
        model = dm.build_model(
            "retinanet",
            NUM_CLASSES,
            HAND_CONFIGS["l1"],
            backbone="mobilenet_v3_fpn",
            weights_path=str(path),
            **TINY,
        )
        loaded = model.state_dict()
        assert all(
            torch.equal(loaded[k], v) for k, v in state.items() if "num_batches_tracked" not in k
        )
    with pytest.raises(ValueError, match="weights_path"):
        dm.load_weights(model, tmp_path / "missing.pt")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"kind": "l2"}, "kind"),
        ({"lam": 0}, "lam"),
        ({"lam": float("nan")}, "lam"),
        ({"alpha": 0}, "alpha"),
        ({"alpha": -1, "kind": "smooth_l1"}, "alpha"),
        ({"sigma": (1, 1, 1)}, "sigma"),
        ({"sigma": (1, 1, 0, 1)}, "sigma_w"),
        ({"wh_target": "sqrt"}, "wh_target"),
    ],
)
def test_box_loss_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        bl.BoxRegressionLoss(**kwargs)


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        (("yolo", 3), {}, "arch"),
        (("fasterrcnn", 3), {"backbone": "resnet34"}, "backbone"),
        (("fasterrcnn", 1), {}, "num_classes"),
        (("fasterrcnn", 3), {"bbox_reg_weights": (1, 1, 1, 1)}, "bbox_reg_weights"),
        (("fasterrcnn", 3), {"box_loss": object()}, "box_loss"),
    ],
)
def test_build_model_validation(args, kwargs, match):
    kwargs.setdefault("box_loss", HAND_CONFIGS["huber"])
    with pytest.raises(ValueError, match=match):
        dm.build_model(*args, **kwargs)


def test_attach_rejects_other_models():
    with pytest.raises(ValueError, match="FasterRCNN or RetinaNet"):
        dm.attach_box_loss(torch.nn.Linear(2, 2), HAND_CONFIGS["huber"])


def test_register_kind_extension_point():
    name = "test_scaled_l1"
    if name not in bl.loss_kinds():
        bl.register_box_loss_kind(name, lambda p, t, s: 3 * s.lam * (p - t).abs())
    with pytest.raises(ValueError, match="already registered"):
        bl.register_box_loss_kind(name, lambda p, t, s: p)
    loss = bl.BoxRegressionLoss(name, 2.0, 1.0)
    assert loss(torch.ones(2, 4), torch.zeros(2, 4)).item() == 48.0


def test_package_import_is_lazy():
    code = (
        "import sys, klhuber.detection as d; "
        "assert 'torchvision' not in sys.modules, 'torchvision imported'; "
        "assert 'klhuber.detection.models' not in sys.modules; "
        "assert callable(d.build_model); "
        "[getattr(d, name) for name in d.__all__]"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# ---------------------------------------------------------------------------------------------
# Related work hooks: HIoU kind and Harmonic weighting (seed 004)


@pytest.mark.skipif("torchvision_retinanet" not in PRESETS, reason="preset not available")
def test_torchvision_retinanet_override_is_the_preset():
    override = bl.ARCH_STAGE_OVERRIDES[("torchvision", "retinanet")]
    assert override == bl.BoxRegressionLoss.from_stage(PRESETS["torchvision_retinanet"].proposal)
    assert bl.stage_losses("torchvision", "retinanet")["retinanet"] == override


@pytest.mark.parametrize("detach", ["none", "both"])
def test_harmonic_roi_loss(detach, tiny_fasterrcnn):
    from klhuber.related.harmonic import harmonic_loss

    heads = dm.attach_box_loss(
        copy.deepcopy(tiny_fasterrcnn), HAND_CONFIGS["kl"], harmonic=detach
    ).roi_heads
    lab, class_logits, box_regression, targets, (cls_loss, box_loss) = _roi_batch(heads, 14)
    n = len(lab)
    pos, neg = torch.where(lab > 0)[0], torch.where(lab == 0)[0]
    chosen = box_regression.view(n, NUM_CLASSES, 4)[pos, lab[pos]]
    stage = HAND_CONFIGS["kl"].detection
    reg = ref_elementwise(stage, chosen, targets[pos]).sum(dim=1)
    ce = F.cross_entropy(class_logits, lab, reduction="none")
    p = torch.softmax(class_logits, dim=1)[pos, lab[pos]]
    torch.testing.assert_close(
        cls_loss, (ce[neg].sum() + ((1 + torch.exp(-reg)) * ce[pos]).sum()) / n
    )
    torch.testing.assert_close(box_loss, ((1 + p) * reg).sum() / n)
    total = ce[neg].sum() + harmonic_loss(class_logits[pos], lab[pos], reg, reduction="sum")
    torch.testing.assert_close(cls_loss + box_loss, total / n)


def test_harmonic_model_trains_and_validates():
    torch.manual_seed(0)
    model = dm.build_model(
        "fasterrcnn",
        NUM_CLASSES,
        HAND_CONFIGS["huber"],
        backbone="mobilenet_v3_fpn",
        harmonic="none",
        **TINY,
    )
    images, targets = batch()
    out = run_losses(model, images, targets)
    sum(out.values()).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    with pytest.raises(ValueError, match="harmonic"):
        dm.attach_box_loss(copy.deepcopy(model), HAND_CONFIGS["huber"], harmonic="sometimes")
    with pytest.raises(ValueError, match="fasterrcnn only"), torch.device("meta"):
        dm.build_model("retinanet", 3, HAND_CONFIGS["huber"], "mobilenet_v3_fpn", harmonic="none")


def test_hiou_is_anchor_free():
    """IoU of two boxes decoded from one anchor does not depend on the anchor."""
    loss = bl.BoxRegressionLoss("hiou", 1.0, 0.5, SIG_IMPL)
    pred, target = _rand((30, 4), 17, 0.5), _rand((30, 4), 18, 0.5)
    stage = Stage("hiou", 1, 0.5, SIG_IMPL)
    expected = ref_closed_form(stage, pred, target, some_anchors(30, seed=19))
    torch.testing.assert_close(loss.per_sample(pred, target), expected)
    with pytest.raises(ValueError, match="gamma"):
        bl.BoxRegressionLoss("hiou", 1.0, 1.5)


# ---------------------------------------------------------------------------------------------
# Local ImageNet-style backbone weights (torchvision classification checkpoints)


def test_backbone_weights_resnet(tmp_path):
    from torchvision.models import resnet18
    from torchvision.ops import FrozenBatchNorm2d

    torch.manual_seed(3)
    classifier = resnet18(weights=None)
    path = tmp_path / "resnet18.pth"
    torch.save(classifier.state_dict(), path)
    model = dm.build_model(
        "fasterrcnn",
        NUM_CLASSES,
        HAND_CONFIGS["huber"],
        backbone="resnet18_fpn",
        backbone_weights_path=path,
        **TINY,
    )
    body = model.backbone.body
    assert torch.equal(body.conv1.weight, classifier.conv1.weight)
    assert torch.equal(body.layer3[1].bn2.running_var, classifier.layer3[1].bn2.running_var)
    assert isinstance(body.bn1, FrozenBatchNorm2d)
    assert not body.layer1[0].conv1.weight.requires_grad  # trainable layers default to 3
    assert body.layer2[0].conv1.weight.requires_grad
    images, targets = batch()
    assert all(torch.isfinite(v) for v in run_losses(model, images, targets).values())
    with pytest.raises(ValueError, match="does not match"):
        dm.build_model(
            "retinanet", 3, HAND_CONFIGS["huber"], "mobilenet_v3_fpn", backbone_weights_path=path
        )


def test_backbone_weights_mobilenet(tmp_path):
    from torchvision.models import mobilenet_v3_large

    torch.manual_seed(4)
    classifier = mobilenet_v3_large(weights=None)
    path = tmp_path / "mnv3.pth"
    torch.save({"model": classifier.state_dict()}, path)
    model = dm.build_model(
        "retinanet",
        NUM_CLASSES,
        HAND_CONFIGS["kl"],
        backbone="mobilenet_v3_fpn",
        backbone_weights_path=path,
        **TINY,
    )
    ours = model.backbone.body.state_dict()
    for key, value in classifier.features.state_dict().items():
        if not key.endswith("num_batches_tracked"):
            assert torch.equal(ours[key], value), key


@pytest.mark.parametrize("name", ["vgg16", "vgg16_bn"])
def test_backbone_weights_vgg_mapping(name):
    """Every VGG backbone / fc6-fc7 entry is found in a torchvision VGG checkpoint (meta)."""
    import torchvision.models as tvm

    with torch.device("meta"):
        model = dm._build_fasterrcnn(name, 81, None, {}, pretrained=True)
        model = dm.attach_box_loss(model, HAND_CONFIGS["huber"])
        state = getattr(tvm, name)(weights=None).state_dict()
    pairs = dm._backbone_targets(model, name, state)
    assert len(pairs) == 2
    for module, mapped in pairs:
        for key, value in module.state_dict().items():
            assert mapped[key].shape == value.shape, key
    convs = [m for m in model.backbone if isinstance(m, torch.nn.Conv2d)]
    assert [c.weight.requires_grad for c in convs] == [False] * 4 + [True] * 9


def test_pretrained_resnet50_keys_match_torchvision_checkpoints():
    """With frozen batch norm the keys are those of torchvision's COCO checkpoints."""
    with torch.device("meta"):
        ours = dm._build_fasterrcnn("resnet50_fpn", 91, None, {}, pretrained=True)
        stock = fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=91)
    expected = [k for k in stock.state_dict() if not k.endswith("num_batches_tracked")]
    assert list(ours.state_dict()) == expected
