"""Multi-scale RoIAlign that can be differentiated twice (CosReg's double backprop).

RoIAlign is linear in the features: with the boxes fixed, pooled = A x for a sparse matrix A of
bilinear sampling weights, so its backward is grad_x = Aᵀ grad_pooled, and the backward of that
backward is A again. torchvision registers no double backward for `roi_align` ("double backwards
on roi_align not supported"), which made CosReg fail on the MetaGraspNet model at both gradient
levels. `_RoIAlign` / `_RoIAlignAdjoint` are the pair A, Aᵀ as autograd functions whose
backwards are each other, built on torchvision's kernels (`roi_align`, `_roi_align_backward`).
No gradient flows to the boxes (as in torchvision: proposals are detached).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.ops import MultiScaleRoIAlign
from torchvision.ops.poolers import _convert_to_roi_format, _filter_input, _setup_scales


class _RoIAlign(torch.autograd.Function):
    """pooled = A x."""

    @staticmethod
    def forward(ctx, features, rois, output_size, spatial_scale, sampling_ratio, aligned):
        ctx.save_for_backward(rois)
        ctx.config = (tuple(features.shape), output_size, spatial_scale, sampling_ratio, aligned)
        return torch.ops.torchvision.roi_align(
            features, rois, spatial_scale, output_size[0], output_size[1], sampling_ratio, aligned
        )

    @staticmethod
    def backward(ctx, grad_pooled):
        (rois,) = ctx.saved_tensors
        return _RoIAlignAdjoint.apply(grad_pooled, rois, *ctx.config), None, None, None, None, None


class _RoIAlignAdjoint(torch.autograd.Function):
    """grad_x = Aᵀ grad_pooled (torchvision's backward kernel); its own backward is A."""

    @staticmethod
    def forward(ctx, grad_pooled, rois, feature_shape, output_size, spatial_scale, sampling_ratio, aligned):
        ctx.save_for_backward(rois)
        ctx.config = (output_size, spatial_scale, sampling_ratio, aligned)
        batch, channels, height, width = feature_shape
        return torch.ops.torchvision._roi_align_backward(
            grad_pooled.contiguous(),
            rois,
            spatial_scale,
            output_size[0],
            output_size[1],
            batch,
            channels,
            height,
            width,
            sampling_ratio,
            aligned,
        )

    @staticmethod
    def backward(ctx, grad_grad_x):
        (rois,) = ctx.saved_tensors
        return _RoIAlign.apply(grad_grad_x, rois, *ctx.config), None, None, None, None, None, None


def roi_align(
    features: Tensor,
    rois: Tensor,
    output_size: tuple[int, int],
    spatial_scale: float,
    sampling_ratio: int,
    aligned: bool = False,
) -> Tensor:
    """torchvision's `roi_align` (rois as (K, 5) [batch index, x1, y1, x2, y2]), twice differentiable."""
    return _RoIAlign.apply(
        features, rois.to(features.dtype), tuple(output_size), float(spatial_scale), int(sampling_ratio), bool(aligned)
    )


class TwiceDifferentiableMultiScaleRoIAlign(MultiScaleRoIAlign):
    """torchvision's `MultiScaleRoIAlign` (same level assignment, scales and output), pooling with
    the twice-differentiable `roi_align` above."""

    def forward(self, x: dict[str, Tensor], boxes: list[Tensor], image_shapes: list[tuple[int, int]]) -> Tensor:
        features = _filter_input(x, self.featmap_names)
        if self.scales is None or self.map_levels is None:
            self.scales, self.map_levels = _setup_scales(
                features, image_shapes, self.canonical_scale, self.canonical_level
            )
        rois = _convert_to_roi_format(boxes)
        if len(features) == 1:
            return roi_align(features[0], rois, self.output_size, self.scales[0], self.sampling_ratio)
        levels = self.map_levels(boxes)
        pooled = features[0].new_zeros((len(rois), features[0].shape[1], *self.output_size))
        for level, (feature, scale) in enumerate(zip(features, self.scales)):
            index = torch.where(levels == level)[0]
            pooled = pooled.index_put(
                (index,), roi_align(feature, rois[index], self.output_size, scale, self.sampling_ratio).to(pooled.dtype)
            )
        return pooled
