"""RoIAlign with a vectorised CPU backward pass, for training Faster R-CNN on a CPU.

torchvision's CPU kernel for the backward pass of ``roi_align`` recomputes the bilinear
weights of every sample point for every channel and adds the gradients one element at a time
on one thread.  In the ``cpu`` profile's Faster R-CNN (64 FPN channels, 64 RoIs per image)
it takes about half of each training step.  :func:`roi_align` keeps torchvision's forward
pass as it is (its outputs are bit-identical) and computes the same gradient in the backward
pass as one sparse matrix product: the bilinear weights are computed once per sample point
and shared by all channels.  Only the order of the floating-point additions differs from
torchvision's, so gradients agree to rounding (tested in float64 and float32).

The fast path is taken on the CPU, in float32 and float64, with a fixed ``sampling_ratio``
(> 0, as Faster R-CNN's pooler uses); everything else (CUDA, half precision, the adaptive
sampling ratio) is torchvision's ``roi_align`` unchanged.  :class:`MultiScaleRoIAlign` is
torchvision's pooler of the same name on top of :func:`roi_align`;
:func:`klhuber.detection.models.build_model` gives every Faster R-CNN one.
"""

from __future__ import annotations

from typing import Any

import torch
import torchvision
from torch import Tensor
from torchvision.ops import MultiScaleRoIAlign as _TorchvisionMultiScaleRoIAlign
from torchvision.ops import poolers as _poolers
from torchvision.ops import roi_align as _torchvision_roi_align

__all__ = ["MultiScaleRoIAlign", "roi_align", "uses_fast_backward"]


def _pair(output_size: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    if isinstance(output_size, int):
        return output_size, output_size
    if len(output_size) == 1:
        return int(output_size[0]), int(output_size[0])
    return int(output_size[0]), int(output_size[1])


def uses_fast_backward(input: Tensor, sampling_ratio: int) -> bool:
    """Whether :func:`roi_align` computes the backward pass itself (CPU, float32/64,
    ``sampling_ratio > 0``) rather than leaving it to torchvision."""
    return (input.device.type == "cpu" and input.dtype in (torch.float32, torch.float64)
            and sampling_ratio > 0)


def _axis_samples(start: Tensor, length: Tensor, pooled: int, grid: int, size: int,
                  aligned: bool) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Sample coordinates along one axis, as torchvision's CPU kernel computes them.

    ``start`` and ``length`` are per RoI (``K``); returns the low and high pixel index, the
    weight of each and whether the point lies inside (``K x pooled*grid``).
    """
    if not aligned:
        length = length.clamp_min(1.0)
    bin_size = (length / pooled)[:, None]
    bins = torch.arange(pooled, dtype=start.dtype, device=start.device).repeat_interleave(grid)
    steps = (torch.arange(grid, dtype=start.dtype, device=start.device) + 0.5).repeat(pooled)
    # y = roi_start + ph * bin_size + (iy + .5) * bin_size / grid, in this order
    pos = start[:, None] + bins * bin_size + steps * bin_size / grid
    inside = (pos >= -1.0) & (pos <= size)
    pos = pos.clamp_min(0.0)
    low = pos.floor().long()  # pos >= 0, so floor is C's truncation
    at_edge = low >= size - 1
    low = torch.where(at_edge, torch.full_like(low, size - 1), low)
    high = torch.where(at_edge, low, low + 1)
    pos = torch.where(at_edge, low.to(pos.dtype), pos)
    frac = pos - low.to(pos.dtype)
    return low, high, 1.0 - frac, frac, inside


def _backward_matrix(rois: Tensor, shape: torch.Size, output_size: tuple[int, int],
                     spatial_scale: float, sampling_ratio: int, aligned: bool) -> Tensor:
    """The sparse matrix ``M`` (``N*H*W x K*PH*PW``) with ``grad_input = M @ grad_output``
    (both with channels last): the transpose of RoIAlign's linear map."""
    n, _, height, width = shape
    ph, pw = output_size
    grid = sampling_ratio
    offset = 0.5 if aligned else 0.0
    batch = rois[:, 0].long()
    x0 = rois[:, 1] * spatial_scale - offset
    y0 = rois[:, 2] * spatial_scale - offset
    x1 = rois[:, 3] * spatial_scale - offset
    y1 = rois[:, 4] * spatial_scale - offset
    y_lo, y_hi, y_wlo, y_whi, y_in = _axis_samples(y0, y1 - y0, ph, grid, height, aligned)
    x_lo, x_hi, x_wlo, x_whi, x_in = _axis_samples(x0, x1 - x0, pw, grid, width, aligned)
    k = rois.shape[0]
    # every (y sample, x sample) pair, K x PH*G x PW*G, then its four corners
    ys = [(y_lo, y_wlo), (y_hi, y_whi)]
    xs = [(x_lo, x_wlo), (x_hi, x_whi)]
    inside = (y_in[:, :, None] & x_in[:, None, :])
    rows, weights = [], []
    for y_idx, y_w in ys:
        for x_idx, x_w in xs:
            weight = (y_w[:, :, None] * x_w[:, None, :]) / (grid * grid)
            rows.append((batch[:, None, None] * height + y_idx[:, :, None]) * width
                        + x_idx[:, None, :])
            weights.append(torch.where(inside, weight, torch.zeros_like(weight)))
    # output bin of each sample point: (k, y // G, x // G)
    bin_y = torch.arange(ph * grid, device=rois.device) // grid
    bin_x = torch.arange(pw * grid, device=rois.device) // grid
    cols = ((torch.arange(k, device=rois.device)[:, None, None] * ph + bin_y[None, :, None])
            * pw + bin_x[None, None, :]).expand(k, ph * grid, pw * grid)
    indices = torch.stack([torch.cat([r.reshape(-1) for r in rows]),
                           cols.reshape(-1).repeat(4)])
    values = torch.cat([w.reshape(-1) for w in weights])
    return torch.sparse_coo_tensor(indices, values, (n * height * width, k * ph * pw),
                                   check_invariants=False)


class _RoIAlignFastBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, input: Tensor, rois: Tensor, output_size: tuple[int, int],
                spatial_scale: float, sampling_ratio: int, aligned: bool) -> Tensor:
        ctx.save_for_backward(rois)
        ctx.shape = input.shape
        ctx.args = (output_size, spatial_scale, sampling_ratio, aligned)
        return _torchvision_roi_align(input, rois, output_size, spatial_scale, sampling_ratio,
                                      aligned)

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor | None, ...]:
        if not ctx.needs_input_grad[0]:
            return (None,) * 6
        (rois,) = ctx.saved_tensors
        n, c, height, width = ctx.shape
        matrix = _backward_matrix(rois, ctx.shape, *ctx.args)
        k = rois.shape[0]
        ph, pw = ctx.args[0]
        grad_rows = grad_output.permute(0, 2, 3, 1).reshape(k * ph * pw, c)
        grad_input = torch.sparse.mm(matrix, grad_rows.to(matrix.dtype))
        grad_input = grad_input.view(n, height, width, c).permute(0, 3, 1, 2)
        return grad_input.contiguous(), None, None, None, None, None


def roi_align(input: Tensor, boxes: Tensor, output_size: int | tuple[int, int] | list[int],
              spatial_scale: float = 1.0, sampling_ratio: int = -1,
              aligned: bool = False) -> Tensor:
    """``torchvision.ops.roi_align`` with the vectorised CPU backward pass of this module.

    Arguments and result are torchvision's; ``boxes`` must be a ``K x 5`` tensor
    ``(batch index, x1, y1, x2, y2)``.  The forward pass is torchvision's; where
    :func:`uses_fast_backward` is true, so is the gradient to rounding.
    """
    size = _pair(output_size)
    if (not isinstance(boxes, Tensor) or boxes.dim() != 2 or boxes.shape[1] != 5
            or not uses_fast_backward(input, sampling_ratio) or not input.requires_grad):
        return _torchvision_roi_align(input, boxes, size, spatial_scale, sampling_ratio,
                                      aligned)
    if input.dim() != 4:
        raise ValueError(f"input must be N x C x H x W, got shape {tuple(input.shape)}")
    return _RoIAlignFastBackward.apply(input, boxes.to(input.dtype), size,
                                       float(spatial_scale), int(sampling_ratio), aligned)


class MultiScaleRoIAlign(_TorchvisionMultiScaleRoIAlign):
    """torchvision's ``MultiScaleRoIAlign`` (same arguments, no parameters) pooling each
    level with :func:`roi_align`."""

    def forward(self, x: dict[str, Tensor], boxes: list[Tensor],
                image_shapes: list[tuple[int, int]]) -> Tensor:
        """Pool each image's ``boxes`` (``x1, y1, x2, y2`` in image pixels) from the feature maps
        ``x`` at the level torchvision's pooler assigns them; returns ``K x C x PH x PW``."""
        features = _poolers._filter_input(x, self.featmap_names)
        if self.scales is None or self.map_levels is None:
            self.scales, self.map_levels = _poolers._setup_scales(
                features, image_shapes, self.canonical_scale, self.canonical_level)
        if torchvision._is_tracing() or not uses_fast_backward(features[0],
                                                                self.sampling_ratio):
            return super().forward(x, boxes, image_shapes)
        rois = _poolers._convert_to_roi_format(boxes)
        if len(features) == 1:
            return roi_align(features[0], rois, self.output_size, self.scales[0],
                             self.sampling_ratio)
        levels = self.map_levels(boxes)
        result = features[0].new_zeros((len(rois), features[0].shape[1], *self.output_size))
        for level, (feature, scale) in enumerate(zip(features, self.scales)):
            in_level = torch.where(levels == level)[0]
            result[in_level] = roi_align(feature, rois[in_level], self.output_size, scale,
                                         self.sampling_ratio).to(result.dtype)
        return result

    @classmethod
    def like(cls, pooler: _TorchvisionMultiScaleRoIAlign) -> MultiScaleRoIAlign:
        """This pooler with the settings of torchvision's ``pooler``."""
        return cls(pooler.featmap_names, pooler.output_size, pooler.sampling_ratio,
                   canonical_scale=pooler.canonical_scale,
                   canonical_level=pooler.canonical_level)
