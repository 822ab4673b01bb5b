"""Tests of klhuber.detection.backbones: the small CPU backbone and its anchors."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")

from torchvision.models.detection import FasterRCNN, RetinaNet  # noqa: E402

from klhuber.detection import backbones as bb  # noqa: E402
from klhuber.detection import build_model  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread_module")


def test_feature_maps_strides_and_channels():
    net = bb.ConvNet4FPN(fpn_channels=48)
    feats = net(torch.zeros(2, 3, 64, 96))
    assert list(feats) == ["0", "1", "2", "3", "pool"]
    assert [tuple(f.shape[-2:]) for f in feats.values()] == [(16, 24), (8, 12), (4, 6), (2, 3),
                                                            (1, 2)]
    assert all(f.shape[:2] == (2, 48) for f in feats.values())
    assert net.out_channels == 48
    no_pool = bb.ConvNet4FPN(extra_pool=False)(torch.zeros(1, 3, 64, 64))
    assert list(no_pool) == ["0", "1", "2", "3"]


@pytest.mark.parametrize("kwargs", [{"channels": (8, 8, 8)}, {"channels": (8, 8, 0, 8)},
                                    {"fpn_channels": 0}, {"fpn_channels": 2.5}])
def test_bad_sizes_are_rejected(kwargs):
    with pytest.raises(ValueError, match="channels"):
        bb.ConvNet4FPN(**kwargs)


def test_anchor_generators_match_the_levels():
    frcnn = bb.convnet4_anchor_generator("fasterrcnn")
    assert frcnn.sizes == ((8,), (16,), (32,), (64,), (128,))
    assert frcnn.num_anchors_per_location() == [3] * 5
    retina = bb.convnet4_anchor_generator("retinanet")
    assert retina.sizes[0] == (8, 10, 13) and len(retina.sizes) == 4
    assert retina.num_anchors_per_location() == [9] * 4
    # five sizes given: no extra pooled size appended
    assert len(bb.convnet4_anchor_generator("fasterrcnn", (8, 16, 32, 64, 96)).sizes) == 5
    with pytest.raises(ValueError, match="arch"):
        bb.convnet4_anchor_generator("yolo")


@pytest.mark.parametrize("arch", ["fasterrcnn", "retinanet"])
def test_build_model_trains_and_predicts(arch):
    torch.manual_seed(0)
    model = build_model(arch, 3, "experiment_b", backbone="convnet4_fpn", min_size=64,
                        max_size=64)
    assert isinstance(model, FasterRCNN if arch == "fasterrcnn" else RetinaNet)
    assert model.backbone.out_channels == 64
    images = [torch.rand(3, 64, 64), torch.rand(3, 64, 64)]
    targets = [{"boxes": torch.tensor([[8.0, 8.0, 30.0, 40.0]]), "labels": torch.tensor([1])},
               {"boxes": torch.tensor([[20.0, 4.0, 60.0, 24.0]]), "labels": torch.tensor([2])}]
    losses = model(images, targets)
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    grads = [p.grad for p in model.backbone.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    model.eval()
    with torch.no_grad():
        out = model(images)
    assert len(out) == 2 and all(o["boxes"].shape[-1] == 4 for o in out)
    if arch == "fasterrcnn":  # the small box head, not torchvision's 1024-wide one
        assert model.roi_heads.box_head.fc7.out_features == 256
    else:  # GroupNorm in the head
        assert any(isinstance(m, torch.nn.GroupNorm) for m in model.head.modules())


def test_convnet4_options_that_do_not_apply_are_errors(tmp_path):
    with pytest.raises(ValueError, match="trainable_backbone_layers"):
        build_model("fasterrcnn", 3, backbone="convnet4_fpn", trainable_backbone_layers=2)
    weights = tmp_path / "w.pt"
    torch.save({}, weights)
    with pytest.raises(ValueError, match="pretrained"):
        build_model("retinanet", 3, backbone="convnet4_fpn", backbone_weights_path=weights)
