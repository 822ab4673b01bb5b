"""Checks of klhuber.interpret that mutation testing (``make mutants``, module ``interpret``) found
missing: each one compares with a second, independent computation (IoU by hand, the stage
fields by name, the sweep preset's fields against its arguments)."""

from __future__ import annotations

import math
from fractions import Fraction as F
from types import SimpleNamespace

import pytest
import torch

from klhuber import interpret as ki
from klhuber.detection.box_losses import make_box_coder

# ----------------------------------------------------------------------------- HIoU kind


def _iou_by_hand(a, b):
    """IoU of two (x1, y1, x2, y2) boxes, in plain Python."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


def _decode_by_hand(code, weights):
    """torchvision's BoxCoder decoding against the unit box [0, 0, 1, 1] (centre 1/2, size 1)."""
    dx, dy, dw, dh = (c / w for c, w in zip(code, weights))
    cx, cy, w, h = 0.5 + dx, 0.5 + dy, math.exp(dw), math.exp(dh)
    return (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)


@pytest.mark.parametrize("gamma", [0.0, 0.5, 1.0])
def test_hiou_kind_is_lambda_times_hiou_of_the_decoded_boxes(gamma):
    sigma = (F(1, 10), F(1, 10), F(1, 5), F(1, 5))
    weights = tuple(1 / float(s) for s in sigma)
    pred = torch.tensor([[0.3, -0.2, 0.1, 0.4], [0.0, 0.0, 0.0, 0.0], [1.5, 0.7, -0.6, 0.2]],
                        dtype=torch.float64)
    target = torch.tensor([[0.1, 0.1, -0.2, 0.3], [0.0, 0.0, 0.0, 0.0], [-0.4, 0.2, 0.5, -0.1]],
                          dtype=torch.float64)
    lam = 2.5
    params = SimpleNamespace(lam=lam, alpha=gamma, box_coder=lambda: make_box_coder(sigma))
    kind = ki.loss_kind("hiou")
    assert kind.per_coordinate is False and kind.alpha_domain == "unit"
    got = kind.fn(pred, target, params)
    assert got.shape == (3,)
    for row, value in enumerate(got.tolist()):
        iou = _iou_by_hand(_decode_by_hand(pred[row].tolist(), weights),
                           _decode_by_hand(target[row].tolist(), weights))
        assert value == pytest.approx(lam * (1 + iou) ** gamma * (1 - iou), rel=1e-12, abs=1e-15)
    assert got[1].item() == 0.0  # identical boxes: IoU 1, no loss
    one = kind.fn(pred[2:], target[2:], params)  # a single box takes the general path too
    assert one.shape == (1,) and one.item() == pytest.approx(got[2].item(), rel=1e-15)


def test_hiou_kind_of_no_boxes_is_empty_and_differentiable():
    params = SimpleNamespace(lam=1.0, alpha=0.5, box_coder=lambda: make_box_coder((1, 1, 1, 1)))
    pred = torch.zeros((0, 4), requires_grad=True)
    out = ki.loss_kind("hiou").fn(pred, torch.zeros((0, 4)), params)
    assert out.shape == (0,)
    out.sum().backward()
    assert pred.grad is not None and pred.grad.shape == (0, 4)


# ----------------------------------------------------------------------------- detector stages


def test_detector_stages_maps_modules_to_stages():
    config = ki.get_preset("torchvision")
    assert config.retinanet is not None and config.retinanet != config.proposal
    faster = ki.detector_stages(config, "fasterrcnn")
    assert list(faster) == ["rpn", "roi"]
    assert faster["rpn"] is config.proposal and faster["roi"] is config.detection
    assert config.detector_stages("fasterrcnn") == faster
    # RetinaNet: the preset's own RetinaNet head where it has one ...
    assert ki.detector_stages(config, "retinanet") == {"retinanet": config.retinanet}
    assert config.detector_stages("retinanet")["retinanet"] is config.retinanet
    # ... else the proposal stage (the paper: RetinaNet's loss equals the RPN's)
    plain = ki.get_preset("implementation")
    assert plain.retinanet is None
    assert ki.detector_stages(plain, "retinanet") == {"retinanet": plain.proposal}
    # any object with the stage fields, without a retinanet attribute
    duck = SimpleNamespace(proposal="p", detection="d")
    assert ki.detector_stages(duck, "retinanet") == {"retinanet": "p"}
    assert ki.detector_stages(duck, "fasterrcnn") == {"rpn": "p", "roi": "d"}
    for arch in ("FasterRCNN", "ssd", ""):
        with pytest.raises(ValueError, match="arch must be"):
            ki.detector_stages(config, arch)


# ----------------------------------------------------------------------------- loss-kind registry


def test_loss_kind_rejects_what_it_cannot_use():
    fn = ki.loss_kind("l1").fn
    for bad in ({"name": ""}, {"name": None}, {"name": 3}):
        with pytest.raises(ValueError, match="^name must be a non-empty string$"):
            ki.LossKind(fn=fn, **bad)
    with pytest.raises(ValueError, match="fn must be callable"):
        ki.LossKind("broken", "not a function")
    with pytest.raises(ValueError, match="alpha_domain must be one of"):
        ki.LossKind("broken", fn, alpha_domain="negative")
    for domain in ("positive", "nonnegative", "zero", "unit"):  # the documented domains
        assert ki.LossKind("ok", fn, alpha_domain=domain).alpha_domain == domain


@pytest.fixture
def registry(monkeypatch):
    """The kinds registry, restored after the test."""
    from klhuber.interpret import kinds

    monkeypatch.setattr(kinds, "_REGISTRY", dict(kinds._REGISTRY))
    return kinds._REGISTRY


def test_register_loss_kind_adds_refuses_duplicates_and_overwrites(registry):
    fn = ki.loss_kind("l1").fn
    first = ki.LossKind("mutant_probe", fn, alpha_domain="zero", label_per_alpha=F(0))
    assert ki.register_loss_kind(first) is first
    assert ki.loss_kind("mutant_probe") is first and ki.loss_kinds()[-1] == "mutant_probe"
    second = ki.LossKind("mutant_probe", fn, alpha_domain="positive", label_per_alpha=F(1, 3))
    with pytest.raises(ValueError, match="already registered"):
        ki.register_loss_kind(second)
    assert ki.loss_kind("mutant_probe") is first  # the refused kind did not replace it
    assert ki.register_loss_kind(second, overwrite=True) is second
    assert ki.loss_kind("mutant_probe") is second
    assert ki.loss_kinds().count("mutant_probe") == 1
    with pytest.raises(ValueError, match="kind must be a LossKind, got str"):
        ki.register_loss_kind("huber")
    # a registered kind is usable by a stage and read with its own label factor
    stage = ki.StageLoss("mutant_probe", 2, 3, (1, 1, 1, 1))
    assert ki.interpret(stage).label_noise == (F(1), F(1), F(1), F(1))  # (1/3)·α·σ·s


# ----------------------------------------------------------------------------- conversions


@pytest.mark.parametrize("sigma, beta", [(3, F(1, 9)), (F(3, 2), F(4, 9)), (3.0, F(1, 9))])
def test_caffe_sigma_to_beta_is_exact_for_exact_sigma(sigma, beta):
    got = ki.caffe_sigma_to_beta(sigma)
    assert isinstance(got, F) and got == beta


@pytest.mark.parametrize("sigma", [0.3, 2.5, 7.1])
def test_caffe_sigma_to_beta_of_a_float_is_the_float_one_over_sigma_squared(sigma):
    got = ki.caffe_sigma_to_beta(sigma)
    assert type(got) is float and got == pytest.approx(1 / sigma**2, rel=1e-15)
    # and it is what torch's smooth_l1 needs to equal Caffe's SmoothL1Loss(sigma)
    r = torch.linspace(-3, 3, 61, dtype=torch.float64)
    caffe = torch.where(r.abs() < 1 / sigma**2, 0.5 * (sigma * r) ** 2, r.abs() - 0.5 / sigma**2)
    torch.testing.assert_close(torch.nn.functional.smooth_l1_loss(
        r, torch.zeros_like(r), beta=got, reduction="none"), caffe, rtol=1e-12, atol=1e-14)


_STAGE = ki.StageLoss("huber", 1, 1, (1, 1, 1, 1))


@pytest.mark.parametrize("call, name", [
    (lambda: ki.caffe_sigma_to_beta(-1), "sigma"),
    (lambda: ki.effective_lambda(-1, 1, 1), "loss_weight"),
    (lambda: ki.effective_lambda(1, -1, 1), "box_normaliser"),
    (lambda: ki.effective_lambda(1, 1, -1), "classification_normaliser"),
    (lambda: ki.from_smooth_l1(-1), "beta"),
    (lambda: ki.from_smooth_l1(1, bbox_reg_weights=(1, 1, 1)), "bbox_reg_weights"),
    (lambda: ki.from_smooth_l1(1, bbox_reg_weights=(1, 0, 1, 1)), r"bbox_reg_weights\[1\] \(y\)"),
    (lambda: ki.from_detectron2(-1), "smooth_l1_beta"),
    (lambda: ki.from_huber_loss(-1), "delta"),
    (lambda: ki.from_huber_loss(1, weight=-1), "weight"),
    (lambda: ki.StageLoss("huber", -1, 1, 1), "lam"),
    (lambda: ki.StageLoss("huber", 1, -1, 1), "alpha"),
    (lambda: ki.StageLoss("huber", 1, 1, (1, 1, 1)), "sigma"),
    (lambda: ki.interpret(_STAGE, -1), "anchor_w"),
    (lambda: ki.interpret(_STAGE, 1, -1), "anchor_h"),
    (lambda: ki.configure(-1, 1), r"label_noise\[0\] \(x\)"),
    (lambda: ki.configure(1, (1, 1, 1, -1)), r"prediction_noise\[3\] \(h\)"),
    (lambda: ki.configure(1, 1, sigma=(1, -1, 1, 1)), r"sigma\[1\] \(y\)"),
    (lambda: ki.configure(1, 1, lam=-1), "lam"),
    (lambda: ki.configure(1, 1, alpha=-1), "alpha"),
    (lambda: ki.alpha_sweep_preset(-0.5), "alpha"),
    (lambda: ki.alpha_sweep_preset(0.5, sigma=(1, 1, 0, 1)), r"sigma\[2\] \(w\)"),
    (lambda: ki.alpha_sweep_preset(0.5, sigma=(1, 1, 1)), "sigma"),
])
def test_messages_name_the_argument(call, name):
    """A bad value's message starts with the name of the argument the caller passed."""
    with pytest.raises(ValueError, match=rf"^{name} must"):
        call()


# ----------------------------------------------------------------------------- α-sweep presets


def test_alpha_sweep_preset_names_every_non_default_and_keeps_sigma_for_l1():
    sigma = (F(1, 10), F(1, 10), F(1, 5), F(1, 5))
    assert ki.alpha_sweep_preset(0.5).name == "sweep_alpha0.5"
    assert ki.alpha_sweep_preset(0.5, lam=2).name == "sweep_alpha0.5-lam2-sigma0.1,0.1,0.2,0.2"
    assert ki.alpha_sweep_preset(0.5, sigma=(1, 1, 1, 1)).name == "sweep_alpha0.5-lam1-sigma1,1,1,1"
    l1 = ki.alpha_sweep_preset(0, lam=3, sigma=(1, 2, 3, 4))
    assert l1.proposal == l1.detection == ki.StageLoss("l1", 3, 0, (1, 2, 3, 4))
    assert ki.alpha_sweep_preset(0).detection.sigma == sigma
    for name in ("sweep_alpha0.5-lam2-sigma0.1,0.1,0.2,0.2", "sweep_alpha0-lam3-sigma1,2,3,4"):
        assert ki.get_preset(name).name == name


def test_alpha_sweep_preset_says_what_it_holds_fixed():
    # the source line is what `klhuber interpret --preset sweep_alpha... --json` reports
    text = ("α sweep (controlled label noise): (λ/α)·H_α with λ and σ fixed in both stages; "
            "α = 0 is the L1 limit.")
    assert ki.alpha_sweep_preset(0.5).source == text
    assert ki.get_preset("sweep_alpha0-lam2-sigma1,1,1,1").source == text


def test_interpret_config_passes_both_anchor_sides():
    got = ki.interpret_config("implementation", 32, 64)
    for stage in ("proposal", "detection"):
        expected = ki.interpret(ki.get_preset("implementation").stage(stage), 32, 64)
        assert got[stage] == expected
        assert got[stage].anchor == (32, 64)
        # x scales with the width, y with the height
        assert got[stage].label_noise[1] == 2 * got[stage].label_noise[0]


# ----------------------------------------------------------------------------- library conversions


def test_conversions_keep_the_target_encoding_and_defaults():
    for stage in (ki.from_smooth_l1(F(1, 9), wh_target="linear"),
                  ki.from_detectron2(0.5, wh_target="linear"),
                  ki.from_huber_loss(1, wh_target="linear")):
        assert stage.wh_target == "linear"
    for stage in (ki.from_smooth_l1(F(1, 9)), ki.from_detectron2(0.5), ki.from_huber_loss(1)):
        assert stage.wh_target == "log" and stage.lam == 1  # default weight 1: λ = 1·δ for δ = 1


def test_from_detectron2_weight_and_the_l1_switch_of_fvcore():
    # detectron2's BBOX_REG_LOSS_WEIGHT is λ; weights (10, 10, 5, 5) are σ = (1/10, 1/10, 1/5, 1/5)
    stage = ki.from_detectron2(0.5, 2, (10, 10, 5, 5))
    assert (stage.kind, stage.lam, stage.alpha) == ("smooth_l1", 2, 0.5)
    assert stage.sigma == (F(1, 10), F(1, 10), F(1, 5), F(1, 5))
    # fvcore's smooth_l1_loss is L1 for beta < 1e-5 (and smooth L1 from 1e-5 on)
    tiny = ki.from_detectron2(1e-6, 3)
    assert (tiny.kind, tiny.alpha, tiny.lam) == ("l1", 0, 3) and isinstance(tiny.alpha, F)
    edge = ki.from_detectron2(1e-5)
    assert (edge.kind, edge.alpha) == ("smooth_l1", 1e-5)
    assert ki.from_detectron2(0.1).kind == "smooth_l1"
    # the reading of what fvcore computes: same loss values as the stage's own loss
    r = torch.linspace(-2, 2, 41, dtype=torch.float64)
    torch.testing.assert_close(tiny.loss(r), 3 * r.abs(), rtol=1e-15, atol=0)
    torch.testing.assert_close(ki.from_detectron2(0.1).loss(r), torch.nn.functional.smooth_l1_loss(
        r, torch.zeros_like(r), beta=0.1, reduction="none"), rtol=1e-12, atol=1e-15)


def test_from_huber_loss_default_weight_is_one():
    # F.huber_loss(delta) = H_delta = (λ/α) H_α with α = δ and λ = weight·δ
    stage = ki.from_huber_loss(F(1, 2))
    assert (stage.lam, stage.alpha) == (F(1, 2), F(1, 2))
    r = torch.linspace(-2, 2, 41, dtype=torch.float64)
    torch.testing.assert_close(stage.loss(r), torch.nn.functional.huber_loss(
        r, torch.zeros_like(r), delta=0.5, reduction="none"), rtol=1e-12, atol=1e-15)


# ----------------------------------------------------------------------------- kind functions


def _huber(r, a):
    return r * r / 2 if abs(r) <= a else a * (abs(r) - a / 2)


def _kl_huber(r, a, b):
    return (a * math.exp(-abs(r) / a) + abs(r) - a) / b


_CLOSED_FORMS = {  # per coordinate, with λ applied, from the definitions (eq. 4, 16, 26)
    "huber": lambda r, lam, a: lam / a * _huber(r, a),
    "smooth_l1": lambda r, lam, a: lam * (_huber(r, a) / a if a > 0 else abs(r)),
    "kl": lambda r, lam, a: lam / a * _kl_huber(r, a / 2, 1 / a),
    "l1": lambda r, lam, a: lam * abs(r),
}


@pytest.mark.parametrize("kind, alpha", [(k, a) for k in ("huber", "smooth_l1", "kl")
                                          for a in (0.7, 1.0, 2.5)]
                         + [("smooth_l1", 0.0), ("l1", 0.0)])
def test_kind_functions_are_their_closed_forms_of_pred_minus_target(kind, alpha):
    gen = torch.Generator().manual_seed(0)
    pred = torch.randn(6, 4, generator=gen, dtype=torch.float64) * 2
    target = torch.randn(6, 4, generator=gen, dtype=torch.float64) * 2
    lam = 1.9
    got = ki.loss_kind(kind).fn(pred, target, SimpleNamespace(lam=lam, alpha=alpha))
    expected = torch.tensor([[_CLOSED_FORMS[kind](p - t, lam, alpha) for p, t in zip(pr, ta)]
                             for pr, ta in zip(pred.tolist(), target.tolist())],
                            dtype=torch.float64)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-14)


# ----------------------------------------------------------------------------- to_* conversions


def test_to_conversions_give_the_same_loss_and_refuse_what_has_no_equivalent():
    stage = ki.StageLoss("huber", F(3, 2), F(1, 2), (F(1, 10), F(1, 10), F(1, 5), F(1, 5)))
    smooth = ki.to_smooth_l1(stage)
    huber = ki.to_huber_loss(stage)
    assert huber == {"delta": F(1, 2), "weight": 3, "bbox_reg_weights": (10, 10, 5, 5)}
    assert smooth == {"beta": F(1, 2), "weight": F(3, 2), "bbox_reg_weights": (10, 10, 5, 5)}
    assert ki.to_detectron2(stage) == {"SMOOTH_L1_BETA": F(1, 2), "BBOX_REG_LOSS_WEIGHT": F(3, 2),
                                       "BBOX_REG_WEIGHTS": (10, 10, 5, 5)}
    r = torch.linspace(-2, 2, 41, dtype=torch.float64)
    zero = torch.zeros_like(r)
    torch.testing.assert_close(float(huber["weight"]) * torch.nn.functional.huber_loss(
        r, zero, delta=float(huber["delta"]), reduction="none"), stage.loss(r))
    torch.testing.assert_close(float(smooth["weight"]) * torch.nn.functional.smooth_l1_loss(
        r, zero, beta=float(smooth["beta"]), reduction="none"), stage.loss(r))
    # smooth L1 with beta = 1 is a Huber loss with delta = 1
    assert ki.to_huber_loss(ki.StageLoss("smooth_l1", 2, 1, 1))["delta"] == 1
    kl = ki.StageLoss("kl", 1, 1, 1)
    with pytest.raises(ValueError, match=r"^kind='kl' \(D_\{α/2,1/α\}\) has no smooth_l1_loss"):
        ki.to_smooth_l1(kl)
    for no_delta in (kl, ki.StageLoss("l1", 1, 0, 1), ki.StageLoss("smooth_l1", 1, 0, 1)):
        with pytest.raises(ValueError, match=rf"^kind='{no_delta.kind}' with alpha="):
            ki.to_huber_loss(no_delta)


def test_linear_target_error_closed_form_and_input():
    for ratio in (0.5, 2, 3.0, F(1, 2)):
        got = ki.linear_target_error(ratio)
        assert type(got) is float
        assert got == pytest.approx(float(ratio) - 1 - math.log(float(ratio)), rel=1e-14)
    arr = ki.linear_target_error([0.5, 1, 2])
    assert arr.shape == (3,) and arr[1] == 0
    for bad in (0, -1, math.inf, math.nan):
        with pytest.raises(ValueError, match=r"^ratio \(w\*/w_a\) must be finite and > 0$"):
            ki.linear_target_error(bad)


def test_matched_ratio_range_ends():
    assert ki.matched_ratio_range(1) == (1, 1)  # IoU threshold 1: only the anchor's own size
    assert ki.matched_ratio_range(0.25, both_sides=True) == (0.5, 2)
    for bad in (0, -0.5, 1.5):
        with pytest.raises(ValueError, match="^iou_threshold must be in"):
            ki.matched_ratio_range(bad)


# ----------------------------------------------------------------------------- stages


def test_stage_loss_of_integers_and_of_whole_box_kinds():
    stage = ki.StageLoss("huber", 2, 1, 1)
    got = stage.loss(torch.tensor([0, 1, 3]))
    assert got.dtype == torch.get_default_dtype()
    torch.testing.assert_close(got, torch.tensor([0.0, 1.0, 5.0]))  # 2·H_1: 0, 1/2, 5/2
    with pytest.raises(ValueError, match="^kind 'hiou' is a loss of whole boxes"):
        ki.StageLoss("hiou", 1, F(1, 2), 1).loss(torch.zeros(3))
    with pytest.raises(ValueError, match="^stage must be one of"):
        ki.get_preset("implementation").stage("rpn")


def test_configure_box_loss_passes_kind_target_and_fixed_parameters_to_both_stages():
    config = ki.configure_box_loss(F(1, 20), F(1, 10), F(1, 5), kind="kl", wh_target="linear",
                                   alpha=F(1, 2))
    assert config.name == "custom"
    assert config.source.startswith("configure_box_loss(label_noise=Fraction(1, 20)")
    for stage, b2 in ((config.proposal, F(1, 10)), (config.detection, F(1, 5))):
        assert (stage.kind, stage.wh_target, stage.alpha) == ("kl", "linear", F(1, 2))
        reading = ki.interpret(stage)
        assert reading.label_noise == (F(1, 20),) * 4 and reading.prediction_noise == (b2,) * 4


# ----------------------------------------------------------------------------- exact numbers


def test_all_same_and_to_fraction():
    from klhuber.interpret._numbers import all_same, to_fraction

    assert all_same([0.5]) and all_same([F(1, 3)])
    assert all_same([1.0, 1.0 + 1e-13, 1.0 - 1e-13])
    assert not all_same([1.0, 1.0 + 1e-10])  # 1e-12 relative, not math.isclose's 1e-9
    assert not all_same([1.0, 1.5]) and not all_same([0.0, 0.5]) and not all_same([0.0, 1e-300])
    assert all_same([F(1, 3), F(1, 3)]) and not all_same([F(1, 3), F(1, 3) + F(1, 10**30)])
    assert to_fraction(0.1) == F(0.1) != F(1, 10)  # exact binary value without a limit
    assert to_fraction(0.1, 10) == F(1, 10)
    assert to_fraction(F(2, 3), 1) == F(2, 3)


def test_a_sweep_name_keeps_its_spelling():
    assert ki.get_preset("sweep_alpha0.50").name == "sweep_alpha0.50"
    assert ki.get_preset("sweep_alpha0.50").detection == ki.alpha_sweep_preset(0.5).detection


# ----------------------------------------------------------------------------- Table 2 cells


@pytest.mark.parametrize("value, symbol, text", [
    (3, "w_a", "3w_a"), (1, "w_a", "w_a"), (0, "w_a", "0"), (F(0), "", "0"), (0.0, "w_a", "0"),
    (1.0, "w_a", "1·w_a"), (0.25, "w_a", "0.25·w_a"), (0.25, "", "0.25"),
    (F(9, 2), "w", "9w/2"), (F(10, 3), "w", "3.333·w"), (F(10, 3), "", "3.333"),
    (F(10, 1), "w", "10w"), (F(11, 2), "w", "5.5·w"), (F(1, 1000), "w", "w/1000"),
    (F(1, 1001), "w", "0.000999·w"), (F(2, 5), "h_a", "2h_a/5"), (F(1, 9), "", "1/9"),
])
def test_format_scale_cells(value, symbol, text):
    assert ki.format_scale(value, symbol) == text


# ----------------------------------------------------------------------------- configure's checks


@pytest.mark.parametrize("call, message", [
    (lambda: ki.configure(F(1, 10), 1, kind="l1"),
     "label_noise must be 0 for kind='l1' (an L1 loss assumes exact labels)"),
    (lambda: ki.configure(0, 1, kind="l1", alpha=1), "alpha must be 0 for kind='l1', got 1"),
    (lambda: ki.configure(0, (1, 1, 2, 2), kind="l1", sigma=1),
     "inconsistent request: sigma / prediction_noise must equal lam for every coordinate"),
    (lambda: ki.configure(0, 1, kind="l1", sigma=2, lam=3),
     "inconsistent request: sigma / prediction_noise must equal lam for every coordinate"),
    (lambda: ki.configure(1e-300, 1e300),
     "label_noise / prediction_noise (x) is 0.0 in floating point: label_noise and "
     "prediction_noise must be within a float's range of each other (their ratio a positive "
     "finite number)"),
    (lambda: ki.configure(1e300, 1e-300),
     "label_noise / prediction_noise (x) is inf in floating point: label_noise and "
     "prediction_noise must be within a float's range of each other (their ratio a positive "
     "finite number)"),
    (lambda: ki.configure((1, 1, 1, 2), 1),
     "label_noise / prediction_noise must be the same for x, y, w and h (it equals α·λ, shared "
     "by the four coordinates); got (Fraction(1, 1), Fraction(1, 1), Fraction(1, 1), "
     "Fraction(2, 1))"),
    (lambda: ki.configure(1, 1, sigma=(1, 1, 1, 2)),
     "sigma is inconsistent with label_noise: label_noise / sigma must be the same for all "
     "coordinates"),
    (lambda: ki.configure(1, 1, alpha=2, lam=2),
     "over-determined request: the other fixed parameters imply lam = 1/2, not 2"),
    (lambda: ki.configure(1, 1, sigma=1, alpha=2),
     "over-determined request: the other fixed parameters imply alpha = 1, not 2"),
    (lambda: ki.configure(None, 1),
     "label_noise must be a number or a sequence of 4 numbers (x, y, w, h), got None"),
    (lambda: ki.StageLoss("hiou", 1, 1.5, 1),
     "alpha (HIoU gamma) must be in [0, 1] for kind='hiou', got 1.5"),
])
def test_refused_requests_say_why(call, message):
    with pytest.raises(ValueError) as info:
        call()
    assert str(info.value) == message


def test_configure_refuses_parameters_outside_the_floats_and_names_them():
    with pytest.raises(ValueError, match=r"^the request implies lam = inf, outside the positive"):
        ki.configure(1, 1, alpha=1e-310)
    with pytest.raises(ValueError, match=r"^the request implies sigma \(x\) = 0\.0, outside the"):
        ki.configure(1e-320, 1e-320, alpha=1e10)
    tiny = ki.configure(1e-300, 1e-300)  # tiny noises, but a representable ratio 1
    assert tiny.alpha == 1 and tiny.lam == 1 and tiny.sigma == (1e-300,) * 4


def test_configure_l1_keeps_fixed_lam_and_target():
    stage = ki.configure(0, F(1, 10), kind="l1", lam=3, wh_target="linear")
    assert (stage.kind, stage.lam, stage.alpha, stage.wh_target) == ("l1", 3, 0, "linear")
    assert stage.sigma == (F(3, 10),) * 4  # σ = λ b₂
    assert ki.configure(0, 1, kind="l1", alpha=0).lam == 1  # canonical λ = 1
    same = ki.configure(0, 1, kind="l1", sigma=2, lam=2)  # consistent: σ/b₂ = λ
    assert same.lam == 2 and same.sigma == (2,) * 4


def test_hiou_gamma_domain_is_the_closed_unit_interval():
    for gamma in (0, F(1, 2), 1):
        assert ki.StageLoss("hiou", 1, gamma, 1).alpha == gamma


def test_stage_fields_become_exact():
    stage = ki.StageLoss("huber", 2.0, 1.0, 10.0)
    assert isinstance(stage.lam, F) and isinstance(stage.alpha, F)
    assert all(isinstance(s, F) for s in stage.sigma)


def test_interpretation_lists_exactly_the_approximations_it_relies_on():
    h_approx = "H_α ≈ D_{α,1/α} (lower bound of eq. 20, used in eq. 21, 26, 32)"
    log_approx = "log(w*/w_a) ≈ w*/w_a − 1 and exp(·) ≈ 1 + · (eq. 30–32) for w, h"
    huber = ki.StageLoss("huber", 1, 1, 1)
    reading = ki.interpret(huber)
    assert reading.approximations == (h_approx, log_approx) and not reading.exact
    assert reading.stage is huber
    linear = ki.StageLoss("smooth_l1", 1, 1, 1, "linear")
    assert ki.interpret(linear).approximations == (h_approx,)
    exact = ki.interpret(ki.StageLoss("smooth_l1", 1, 0, 1, "linear"))  # β = 0: L1, exact
    assert exact.approximations == () and exact.exact
    assert ki.interpret(ki.StageLoss("kl", 1, 1, 1, "linear")).approximations == ()


@pytest.mark.parametrize("call, message", [
    (lambda: ki.StageLoss("huber", "1", 1, 1), "lam must be a real number, got '1'"),
    (lambda: ki.StageLoss("huber", True, 1, 1), "lam must be a real number, got True"),
    (lambda: ki.StageLoss("huber", 1, -1, 1), "alpha must be >= 0, got Fraction(-1, 1)"),
    (lambda: ki.StageLoss("huber", 0, 1, 1), "lam must be > 0, got Fraction(0, 1)"),
    (lambda: ki.interpret("implementation"), "stage must be a StageLoss, got str"),
    (lambda: ki.interpret(ki.StageLoss("hiou", 1, 1, 1)),
     "kind 'hiou' has no Laplace reading (Table 2)"),
])
def test_bad_numbers_and_stages_say_why(call, message):
    with pytest.raises(ValueError) as info:
        call()
    assert str(info.value) == message
