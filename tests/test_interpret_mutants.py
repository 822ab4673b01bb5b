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
