"""Checks of klhuber.detection that mutation testing (``make mutants``, module ``detection``)
found missing: the RetinaNet heads built directly (the library builds torchvision's and converts
them, so their constructors had no test) and a box loss's plain fields."""

from __future__ import annotations

import json
from functools import partial

import pytest
import torch
from torch import nn
from torchvision.models.detection.retinanet import RetinaNetHead, RetinaNetRegressionHead

from klhuber.detection import box_losses as bl
from klhuber.detection.heads import KLRetinaNetHead, KLRetinaNetRegressionHead

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
