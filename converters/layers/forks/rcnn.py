"""Region pooling of the R-CNN family: Fast/Faster R-CNN's ``ROIPooling`` (max over each bin of a
region, regions rounded to the feature grid) and R-FCN's ``PSROIPooling`` (position-sensitive
average pooling: bin ``(i, j)`` reads its own group of channels). Regions are rows
``[batch index, x1, y1, x2, y2]`` in image pixels; the arithmetic is the forks' float arithmetic."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..registry import Converted, LayerContext, register_layer


def _round(x: Tensor) -> Tensor:
    """C's ``round``: halves away from zero (``torch.round`` rounds them to even)."""
    return torch.sign(x) * torch.floor(torch.abs(x) + 0.5)


def _bins(start: Tensor, size: Tensor, bins: int, limit: int) -> tuple[Tensor, Tensor]:
    """Integer ``[start, end)`` of each of ``bins`` bins of ``size`` from ``start``, clipped to
    ``[0, limit]`` (float arithmetic, as the forks compute it)."""
    index = torch.arange(bins, dtype=torch.float32, device=size.device)
    lo = torch.floor(index * size + start).clamp(0, limit)
    hi = torch.ceil((index + 1) * size + start).clamp(0, limit)
    return lo, hi


def _offset_bins(size: Tensor, bins: int, start: Tensor, limit: int) -> tuple[Tensor, Tensor]:
    """Fast R-CNN's bins: ``floor(i * size) + start`` to ``ceil((i + 1) * size) + start``, clipped."""
    index = torch.arange(bins, dtype=torch.float32, device=size.device)
    lo = (torch.floor(index * size) + start).clamp(0, limit)
    hi = (torch.ceil((index + 1) * size) + start).clamp(0, limit)
    return lo, hi


def _masks(lo: Tensor, hi: Tensor, length: int) -> Tensor:
    """``bins x length`` booleans: position inside each bin."""
    position = torch.arange(length, dtype=torch.float32, device=lo.device)
    return (position[None, :] >= lo[:, None]) & (position[None, :] < hi[:, None])


class ROIPooling(nn.Module):
    """Fast R-CNN's ROI max pooling to ``pooled_h x pooled_w``; an empty bin gives 0."""

    def __init__(self, pooled_h: int, pooled_w: int, spatial_scale: float) -> None:
        super().__init__()
        self.pooled_h, self.pooled_w, self.spatial_scale = pooled_h, pooled_w, spatial_scale

    def extra_repr(self) -> str:
        return f"pooled={self.pooled_h}x{self.pooled_w}, spatial_scale={self.spatial_scale}"

    def forward(self, x: Tensor, rois: Tensor) -> Tensor:
        height, width = x.shape[2], x.shape[3]
        scale = torch.tensor(self.spatial_scale, dtype=torch.float32, device=x.device)
        rois = rois.reshape(rois.shape[0], -1).float()
        out = []
        for r in range(rois.shape[0]):
            roi = rois[r]
            x1, y1, x2, y2 = (_round(roi[i] * scale) for i in range(1, 5))
            roi_h = torch.clamp(y2 - y1 + 1, min=1)
            roi_w = torch.clamp(x2 - x1 + 1, min=1)
            # Fast R-CNN: floor(ph * bin) and ceil((ph + 1) * bin), then the rounded start, clipped.
            hlo, hhi = _offset_bins(roi_h / self.pooled_h, self.pooled_h, y1, height)
            wlo, whi = _offset_bins(roi_w / self.pooled_w, self.pooled_w, x1, width)
            feature = x.index_select(0, roi[0].long().reshape(1))[0]  # C x H x W
            low = torch.finfo(x.dtype).min
            mask_w = _masks(wlo, whi, width)  # pw x W
            mask_h = _masks(hlo, hhi, height)  # ph x H
            by_w = torch.where(mask_w[None, None], feature[:, :, None, :], low).amax(-1)  # C x H x pw
            pooled = torch.where(mask_h[None, :, :, None], by_w[:, None, :, :], low).amax(2)  # C x ph x pw
            empty = (hhi <= hlo)[:, None] | (whi <= wlo)[None, :]
            out.append(torch.where(empty[None], torch.zeros_like(pooled), pooled))
        return torch.stack(out) if out else x.new_zeros((0, x.shape[1], self.pooled_h, self.pooled_w))


@register_layer("ROIPooling", bottoms=2, tops=1)
def roi_pooling(ctx: LayerContext) -> Converted:
    p = ctx.param("roi_pooling_param")
    pooled_h, pooled_w = int(p.get("pooled_h")), int(p.get("pooled_w"))
    if pooled_h < 1 or pooled_w < 1:
        raise ValueError(f"{ctx.where}: pooled_h and pooled_w must be positive, got {pooled_h}x{pooled_w}")
    if len(ctx.bottoms) != 2:
        raise ValueError(f"{ctx.where}: takes two bottoms (the features and the regions)")
    module = ROIPooling(pooled_h, pooled_w, float(p.get("spatial_scale")))
    return Converted(module=module, output_shape=lambda s: (s[1][0], s[0][1], pooled_h, pooled_w))


class PSROIPooling(nn.Module):
    """R-FCN's position-sensitive ROI pooling: ``output_dim x group x group`` averages, bin
    ``(i, j)`` over channels ``(c * group + i) * group + j``; an empty bin gives 0."""

    def __init__(self, output_dim: int, group: int, spatial_scale: float) -> None:
        super().__init__()
        self.output_dim, self.group, self.spatial_scale = output_dim, group, spatial_scale

    def extra_repr(self) -> str:
        return f"output_dim={self.output_dim}, group_size={self.group}, spatial_scale={self.spatial_scale}"

    def forward(self, x: Tensor, rois: Tensor) -> Tensor:
        height, width = x.shape[2], x.shape[3]
        g = self.group
        scale = torch.tensor(self.spatial_scale, dtype=torch.float32, device=x.device)
        rois = rois.reshape(rois.shape[0], -1).float()
        out = []
        for r in range(rois.shape[0]):
            roi = rois[r]
            x1, y1 = _round(roi[1]) * scale, _round(roi[2]) * scale
            x2, y2 = (_round(roi[3]) + 1) * scale, (_round(roi[4]) + 1) * scale
            roi_w = torch.clamp(x2 - x1, min=0.1)
            roi_h = torch.clamp(y2 - y1, min=0.1)
            hlo, hhi = _bins(y1, roi_h / g, g, height)
            wlo, whi = _bins(x1, roi_w / g, g, width)
            feature = x.index_select(0, roi[0].long().reshape(1))[0]
            feature = feature.reshape(self.output_dim, g, g, height, width)
            mask_h = _masks(hlo, hhi, height).to(x.dtype)  # g x H
            mask_w = _masks(wlo, whi, width).to(x.dtype)  # g x W
            total = torch.einsum("cijhw,ih,jw->cij", feature, mask_h, mask_w)
            area = ((hhi - hlo)[:, None] * (whi - wlo)[None, :]).to(x.dtype)
            empty = area <= 0
            out.append(
                torch.where(empty[None], torch.zeros_like(total), total / torch.where(empty, 1.0, area)[None])
            )
        return torch.stack(out) if out else x.new_zeros((0, self.output_dim, g, g))


@register_layer("PSROIPooling", bottoms=2, tops=1)
def psroi_pooling(ctx: LayerContext) -> Converted:
    p = ctx.param("psroi_pooling_param")
    output_dim, group = int(p.get("output_dim")), int(p.get("group_size"))
    if output_dim < 1 or group < 1:
        raise ValueError(f"{ctx.where}: output_dim and group_size must be positive")
    if len(ctx.bottoms) != 2:
        raise ValueError(f"{ctx.where}: takes two bottoms (the score maps and the regions)")
    channels = ctx.bottom_shape(0)[1]
    if channels != output_dim * group * group:
        raise ValueError(
            f"{ctx.where}: {channels} input channels, but output_dim x group_size^2 is "
            f"{output_dim * group * group}"
        )
    module = PSROIPooling(output_dim, group, float(p.get("spatial_scale")))
    return Converted(module=module, output_shape=lambda s: (s[1][0], output_dim, group, group))
