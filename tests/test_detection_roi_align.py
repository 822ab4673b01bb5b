"""klhuber.detection.roi_align: torchvision's RoIAlign forward, a vectorised CPU backward."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
import torchvision
from torchvision.ops import MultiScaleRoIAlign as TorchvisionMultiScaleRoIAlign

from klhuber.detection import roi_align as ra
from klhuber.detection.models import build_model


def _rois(k: int, batch: int, dtype: torch.dtype, seed: int = 0) -> torch.Tensor:
    """RoIs of every kind: inside, partly and wholly outside the map, tiny, on the edge."""
    gen = torch.Generator().manual_seed(seed)
    index = torch.randint(0, batch, (k,), generator=gen).to(dtype)
    corner = torch.rand(k, 2, generator=gen, dtype=dtype) * 44 - 8
    size = torch.rand(k, 2, generator=gen, dtype=dtype) * 30
    size[:4] = 0.05                                    # smaller than a pixel
    corner[4] = torch.tensor([-30.0, -30.0])           # wholly outside (top left)
    corner[5] = torch.tensor([40.0, 30.0])             # wholly outside (bottom right)
    corner[6], size[6] = torch.tensor([0.0, 0.0]), torch.tensor([34.0, 26.0])  # the whole map
    boxes = torch.cat([corner, corner + size], 1)
    return torch.cat([index[:, None], boxes], 1)


def _grads(fn, x, rois, grad_out, *args):
    x = x.detach().requires_grad_(True)
    out = fn(x, rois, *args)
    (grad,) = torch.autograd.grad(out, x, grad_out)
    return out, grad


@pytest.mark.parametrize("dtype, rtol", [(torch.float64, 1e-13), (torch.float32, 2e-6)])
@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("output_size, scale, ratio", [((7, 7), 0.5, 2), ((3, 5), 1.0, 1),
                                                        ((4, 2), 0.25, 3)])
def test_forward_is_torchvisions_and_gradient_agrees(dtype, rtol, aligned, output_size, scale,
                                                     ratio):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(3, 4, 13, 17, generator=gen, dtype=dtype)
    rois = _rois(40, 3, dtype)
    grad_out = torch.randn(40, 4, *output_size, generator=gen, dtype=dtype)
    args = (output_size, scale, ratio, aligned)
    ref, ref_grad = _grads(torchvision.ops.roi_align, x, rois, grad_out, *args)
    out, grad = _grads(ra.roi_align, x, rois, grad_out, *args)
    assert out.grad_fn is not None and "RoIAlignFastBackward" in type(out.grad_fn).__name__
    assert torch.equal(out, ref)  # the forward pass is torchvision's own
    assert grad.dtype == dtype and grad.shape == x.shape
    scale_of = ref_grad.abs().max()
    assert scale_of > 0
    assert (grad - ref_grad).abs().max() <= rtol * scale_of
    # x < 0 and x > 0 of the map: a mirrored map and mirrored RoIs give mirrored gradients
    width = x.shape[-1] / scale
    mirrored = rois.clone()
    mirrored[:, 1], mirrored[:, 3] = width - rois[:, 3], width - rois[:, 1]
    _, grad_m = _grads(ra.roi_align, x.flip(-1), mirrored, grad_out.flip(-1), *args)
    _, ref_m = _grads(torchvision.ops.roi_align, x.flip(-1), mirrored, grad_out.flip(-1), *args)
    assert (grad_m - ref_m).abs().max() <= rtol * ref_m.abs().max()


def test_gradcheck_float64():
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(2, 2, 6, 7, generator=gen, dtype=torch.float64, requires_grad=True)
    rois = torch.tensor([[0, 0.3, 0.7, 5.1, 4.3], [1, -1.2, 2.2, 3.9, 7.5],
                         [1, 2.05, 1.15, 2.45, 1.6]], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda t: ra.roi_align(t, rois, (3, 2), 1.0, 2), (x,))


def test_each_point_spreads_to_its_four_pixels():
    """One RoI, one bin, one sample: the gradient is the bilinear weights (closed form)."""
    x = torch.zeros(1, 1, 4, 5, dtype=torch.float64, requires_grad=True)
    # the sample is at the RoI's centre, (x, y) = (1.25, 2.5)
    rois = torch.tensor([[0, 0.75, 2.0, 1.75, 3.0]], dtype=torch.float64)
    out = ra.roi_align(x, rois, 1, 1.0, 1)
    (grad,) = torch.autograd.grad(out, x, torch.ones_like(out))
    expected = torch.zeros(4, 5, dtype=torch.float64)
    expected[2, 1], expected[2, 2] = 0.5 * 0.75, 0.5 * 0.25
    expected[3, 1], expected[3, 2] = 0.5 * 0.75, 0.5 * 0.25
    assert torch.allclose(grad[0, 0], expected, rtol=0, atol=1e-15)


def test_empty_rois_and_no_gradient():
    x = torch.randn(2, 3, 5, 5, requires_grad=True)
    out = ra.roi_align(x, torch.zeros(0, 5), (2, 2), 1.0, 2)
    assert out.shape == (0, 3, 2, 2)
    (grad,) = torch.autograd.grad(out.sum(), x)
    assert torch.equal(grad, torch.zeros_like(x))
    plain = ra.roi_align(x.detach(), _rois(8, 2, torch.float32), (2, 2), 1.0, 2)
    assert plain.grad_fn is None


@pytest.mark.parametrize("case", ["adaptive ratio", "list of boxes"])
def test_other_cases_are_torchvisions_own(case):
    x = torch.randn(2, 3, 9, 9, requires_grad=True)
    rois = _rois(8, 2, torch.float32)
    ratio = -1 if case == "adaptive ratio" else 2
    boxes = [rois[:3, 1:], rois[3:, 1:]] if case == "list of boxes" else rois
    out = ra.roi_align(x, boxes, (2, 2), 0.5, ratio)
    ref = torchvision.ops.roi_align(x, boxes, (2, 2), 0.5, ratio)
    assert "RoIAlignFastBackward" not in type(out.grad_fn).__name__
    assert torch.equal(out, ref)
    assert not ra.uses_fast_backward(x, ratio) or case == "list of boxes"


def test_fast_path_only_on_the_cpu_in_float32_and_float64():
    assert ra.uses_fast_backward(torch.zeros(1, dtype=torch.float32), 2)
    assert ra.uses_fast_backward(torch.zeros(1, dtype=torch.float64), 1)
    assert not ra.uses_fast_backward(torch.zeros(1, dtype=torch.float32), 0)
    for dtype in (torch.float16, torch.bfloat16):
        assert not ra.uses_fast_backward(torch.zeros(1, dtype=dtype), 2)
    assert not ra.uses_fast_backward(torch.zeros(1, device="meta"), 2)


def test_bad_input_shape_is_rejected():
    x = torch.randn(3, 9, 9, requires_grad=True)
    with pytest.raises(ValueError, match="input must be N x C x H x W"):
        ra.roi_align(x, _rois(8, 1, torch.float32), 2, 1.0, 2)


@pytest.mark.parametrize("levels", [1, 4])
def test_multiscale_pooler_matches_torchvisions(levels):
    gen = torch.Generator().manual_seed(3)
    names = [str(i) for i in range(levels)]
    features = OrderedDict((name, torch.randn(2, 4, 32 >> i, 24 >> i, generator=gen,
                                              dtype=torch.float64))
                           for i, name in enumerate(names))
    boxes = []
    for _ in range(2):  # small and large boxes, so that every level gets some
        corner = torch.rand(30, 2, generator=gen, dtype=torch.float64) * 60
        side = 2 ** (torch.rand(30, 1, generator=gen, dtype=torch.float64) * 6 + 1)  # 2..128
        size = side * (0.75 + 0.5 * torch.rand(30, 2, generator=gen, dtype=torch.float64))
        boxes.append(torch.cat([corner, corner + size], 1))
    shapes = [(128, 96), (128, 96)]
    ref_pool = TorchvisionMultiScaleRoIAlign(names, 7, 2, canonical_scale=16)
    pool = ra.MultiScaleRoIAlign.like(ref_pool)
    assert (pool.featmap_names, pool.output_size, pool.sampling_ratio) == (
        ref_pool.featmap_names, ref_pool.output_size, ref_pool.sampling_ratio)

    def run(p):
        leaves = OrderedDict((k, v.clone().requires_grad_(True)) for k, v in features.items())
        out = p(leaves, boxes, shapes)
        grads = torch.autograd.grad(out, list(leaves.values()), torch.ones_like(out))
        return out, grads

    ref, ref_grads = run(ref_pool)
    out, grads = run(pool)
    assert torch.equal(out, ref)
    for g, r in zip(grads, ref_grads):
        assert (g - r).abs().max() <= 1e-13 * max(r.abs().max(), 1.0)
    if levels == 4:
        assert all(r.abs().sum() > 0 for r in ref_grads)  # every level was used


def test_build_model_gives_faster_rcnn_the_pooler():
    model = build_model("fasterrcnn", 3, "implementation", backbone="convnet4_fpn")
    assert type(model.roi_heads.box_roi_pool) is ra.MultiScaleRoIAlign
    assert not list(model.roi_heads.box_roi_pool.parameters())
    # torchvision's pooler passed in keeps its settings; a user's own pooler class is kept
    passed = build_model("fasterrcnn", 3, "implementation", backbone="convnet4_fpn",
                         box_roi_pool=TorchvisionMultiScaleRoIAlign(["0", "1"], 5, 1))
    pool = passed.roi_heads.box_roi_pool
    assert type(pool) is ra.MultiScaleRoIAlign
    assert (pool.featmap_names, pool.output_size, pool.sampling_ratio) == (["0", "1"], (5, 5), 1)

    class OwnPooler(TorchvisionMultiScaleRoIAlign):
        pass

    own = build_model("fasterrcnn", 3, "implementation", backbone="convnet4_fpn",
                      box_roi_pool=OwnPooler(["0"], 7, 2))
    assert type(own.roi_heads.box_roi_pool) is OwnPooler
