"""Region pooling of the R-CNN family: Fast/Faster R-CNN's ``ROIPooling`` (max over each bin of a
region, regions rounded to the feature grid) and R-FCN's ``PSROIPooling`` (position-sensitive
average pooling: bin ``(i, j)`` reads its own group of channels). Regions are rows
``[batch index, x1, y1, x2, y2]`` in image pixels; the arithmetic is the forks' float arithmetic.
Faster R-CNN's ``Proposal`` (brocolli-caffe's C++ layer) makes such regions from anchors and NMS."""

from __future__ import annotations

import ast
import math
import re
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..registry import Converted, LayerContext, register_layer
from ..structure import python_layer
from ..tracing import has_values


def _image_indices(rois: Tensor, images: int, layer: str, first: int) -> Tensor:
    """The regions' image indices, which the forks CHECK are the batch's (``first``: the number of
    the first row, for the message)."""
    index = rois[:, 0].long()
    if has_values(index) and index.numel():
        bad = ((index < 0) | (index >= images)).nonzero()
        if bad.numel():
            r = int(bad[0, 0])
            named = int(index[r])
            raise ValueError(f"{layer}: region {first + r} names image {named}, the batch has {images}")
    return index


#: Values a chunk of regions may hold in one pooling step: regions are pooled together, a chunk
#: at a time, so 65,536 small regions take one step and big maps stay within a few hundred MB.
CHUNK_VALUES = 1 << 24


def _chunks(regions: int, values_per_region: int) -> list[tuple[int, int]]:
    step = max(1, CHUNK_VALUES // max(1, values_per_region))
    return [(start, min(regions, start + step)) for start in range(0, regions, step)]


def _round(x: Tensor) -> Tensor:
    """C's ``round``: halves away from zero (``torch.round`` rounds them to even)."""
    return torch.sign(x) * torch.floor(torch.abs(x) + 0.5)


def _bins(start: Tensor, size: Tensor, bins: int, limit: int) -> tuple[Tensor, Tensor]:
    """Integer ``[start, end)`` of each of ``bins`` bins of ``size`` from ``start`` (one row per
    region), clipped to ``[0, limit]`` (float arithmetic, as the forks compute it)."""
    index = torch.arange(bins, dtype=torch.float32, device=size.device)[None, :]
    lo = torch.floor(index * size[:, None] + start[:, None]).clamp(0, limit)
    hi = torch.ceil((index + 1) * size[:, None] + start[:, None]).clamp(0, limit)
    return lo, hi


def _offset_bins(size: Tensor, bins: int, start: Tensor, limit: int) -> tuple[Tensor, Tensor]:
    """Fast R-CNN's bins: ``floor(i * size) + start`` to ``ceil((i + 1) * size) + start``, clipped
    (one row per region)."""
    index = torch.arange(bins, dtype=torch.float32, device=size.device)[None, :]
    lo = (torch.floor(index * size[:, None]) + start[:, None]).clamp(0, limit)
    hi = (torch.ceil((index + 1) * size[:, None]) + start[:, None]).clamp(0, limit)
    return lo, hi


def _masks(lo: Tensor, hi: Tensor, length: int) -> Tensor:
    """``regions x bins x length`` booleans: position inside each bin."""
    position = torch.arange(length, dtype=torch.float32, device=lo.device)
    return (position >= lo[..., None]) & (position < hi[..., None])


class ROIPooling(nn.Module):
    """Fast R-CNN's ROI max pooling to ``pooled_h x pooled_w``; an empty bin gives 0."""

    def __init__(self, pooled_h: int, pooled_w: int, spatial_scale: float) -> None:
        super().__init__()
        self.pooled_h, self.pooled_w, self.spatial_scale = pooled_h, pooled_w, spatial_scale

    def extra_repr(self) -> str:
        return f"pooled={self.pooled_h}x{self.pooled_w}, spatial_scale={self.spatial_scale}"

    def forward(self, x: Tensor, rois: Tensor) -> Tensor:
        channels, height, width = x.shape[1], x.shape[2], x.shape[3]
        ph, pw = self.pooled_h, self.pooled_w
        rois = rois.flatten(1).float()  # (flatten: no proposal left gives 0 x 5)
        per_region = channels * height * (width + pw * width + ph * pw)
        out = [self._pool(x, rois[a:b], a) for a, b in _chunks(rois.shape[0], per_region)]
        return torch.cat(out) if out else x.new_zeros((0, channels, ph, pw))

    def _pool(self, x: Tensor, rois: Tensor, first: int) -> Tensor:
        height, width = x.shape[2], x.shape[3]
        scale = torch.tensor(self.spatial_scale, dtype=torch.float32, device=x.device)
        x1, y1, x2, y2 = (_round(rois[:, i] * scale) for i in range(1, 5))
        roi_h = torch.clamp(y2 - y1 + 1, min=1)
        roi_w = torch.clamp(x2 - x1 + 1, min=1)
        # Fast R-CNN: floor(ph * bin) and ceil((ph + 1) * bin), then the rounded start, clipped.
        hlo, hhi = _offset_bins(roi_h / self.pooled_h, self.pooled_h, y1, height)  # R x ph
        wlo, whi = _offset_bins(roi_w / self.pooled_w, self.pooled_w, x1, width)  # R x pw
        feature = x.index_select(0, _image_indices(rois, x.shape[0], "ROIPooling", first))  # R x C x H x W
        low = torch.finfo(x.dtype).min
        mask_w = _masks(wlo, whi, width)[:, None, None]  # R x 1 x 1 x pw x W
        mask_h = _masks(hlo, hhi, height)[:, None, :, :, None]  # R x 1 x ph x H x 1
        by_w = torch.where(mask_w, feature[:, :, :, None, :], low).amax(-1)  # R x C x H x pw
        pooled = torch.where(mask_h, by_w[:, :, None], low).amax(3)  # R x C x ph x pw
        empty = (hhi <= hlo)[:, :, None] | (whi <= wlo)[:, None, :]  # R x ph x pw
        return torch.where(empty[:, None], torch.zeros_like(pooled), pooled)


def _check_regions(ctx: LayerContext) -> None:
    """The regions bottom holds five values per region (batch index, x1, y1, x2, y2), as Caffe's
    loops read them (it checks nothing and reads past a shorter row)."""
    shape = ctx.bottom_shape(1)
    if len(shape) < 2 or math.prod(shape[1:]) != 5:
        raise ValueError(
            f"{ctx.where}: the regions '{ctx.bottoms[1]}' {list(shape)} must be R x 5 (batch index, x1, y1, "
            "x2, y2 per region)"
        )


@register_layer("ROIPooling", bottoms=2, tops=1)
def roi_pooling(ctx: LayerContext) -> Converted:
    p = ctx.param("roi_pooling_param")
    pooled_h, pooled_w = int(p.get("pooled_h")), int(p.get("pooled_w"))
    if pooled_h < 1 or pooled_w < 1:
        raise ValueError(f"{ctx.where}: pooled_h and pooled_w must be positive, got {pooled_h}x{pooled_w}")
    if len(ctx.bottoms) != 2:
        raise ValueError(f"{ctx.where}: takes two bottoms (the features and the regions)")
    _check_regions(ctx)
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
        rois = rois.flatten(1).float()  # (flatten: no proposal left gives 0 x 5)
        per_region = 2 * x.shape[1] * x.shape[2] * x.shape[3]
        out = [self._pool(x, rois[a:b], a) for a, b in _chunks(rois.shape[0], per_region)]
        return torch.cat(out) if out else x.new_zeros((0, self.output_dim, self.group, self.group))

    def _pool(self, x: Tensor, rois: Tensor, first: int) -> Tensor:
        height, width = x.shape[2], x.shape[3]
        g = self.group
        scale = torch.tensor(self.spatial_scale, dtype=torch.float32, device=x.device)
        x1, y1 = _round(rois[:, 1]) * scale, _round(rois[:, 2]) * scale
        x2, y2 = (_round(rois[:, 3]) + 1) * scale, (_round(rois[:, 4]) + 1) * scale
        roi_w = torch.clamp(x2 - x1, min=0.1)
        roi_h = torch.clamp(y2 - y1, min=0.1)
        hlo, hhi = _bins(y1, roi_h / g, g, height)  # R x g
        wlo, whi = _bins(x1, roi_w / g, g, width)
        feature = x.index_select(0, _image_indices(rois, x.shape[0], "PSROIPooling", first))
        feature = feature.reshape(-1, self.output_dim, g, g, height, width)
        mask_h = _masks(hlo, hhi, height).to(x.dtype)  # R x g x H
        mask_w = _masks(wlo, whi, width).to(x.dtype)  # R x g x W
        total = torch.einsum("rcijhw,rih,rjw->rcij", feature, mask_h, mask_w)
        area = ((hhi - hlo)[:, :, None] * (whi - wlo)[:, None, :]).to(x.dtype)  # R x g x g
        empty = area <= 0
        mean = total / torch.where(empty, 1.0, area)[:, None]
        return torch.where(empty[:, None], torch.zeros_like(total), mean)


@register_layer("PSROIPooling", bottoms=2, tops=1)
def psroi_pooling(ctx: LayerContext) -> Converted:
    p = ctx.param("psroi_pooling_param")
    output_dim, group = int(p.get("output_dim")), int(p.get("group_size"))
    if output_dim < 1 or group < 1:
        raise ValueError(f"{ctx.where}: output_dim and group_size must be positive")
    if len(ctx.bottoms) != 2:
        raise ValueError(f"{ctx.where}: takes two bottoms (the score maps and the regions)")
    _check_regions(ctx)
    channels = ctx.bottom_shape(0)[1]
    if channels != output_dim * group * group:
        raise ValueError(
            f"{ctx.where}: {channels} input channels, but output_dim x group_size^2 is "
            f"{output_dim * group * group}"
        )
    module = PSROIPooling(output_dim, group, float(p.get("spatial_scale")))
    return Converted(module=module, output_shape=lambda s: (s[1][0], output_dim, group, group))


def proposal_anchors(base_size: int, ratios: list[float], scales: list[float]) -> Tensor:
    """brocolli-caffe's anchors (ratio-major, ``A x 4`` corners around ``(base_size - 1) / 2``):
    per ratio a ``sqrt(base^2 / ratio)`` wide box, per scale the half sizes
    ``0.5 * int(w * scale / base_size - 1 + 0.5)`` -- scales in pixels, not in base sizes."""
    rows = []
    center = np.float32(0.5) * np.float32(base_size - 1)
    for ratio in ratios:
        width = np.sqrt(np.float32(base_size * base_size) / np.float32(ratio), dtype=np.float32)
        height = np.float32(width * np.float32(ratio))
        for scale in scales:
            # float products, then double arithmetic and C's truncating int cast, as the fork's ROUND
            sizes = [float(np.float32(side * np.float32(scale))) / base_size - 1 for side in (width, height)]
            half_w, half_h = (np.float32(0.5) * np.float32(int(size + 0.5)) for size in sizes)
            rows.append([center - half_w, center - half_h, center + half_w, center + half_h])
    return torch.tensor(np.array(rows, dtype=np.float32).reshape(-1, 4))


def fork_sort_order(scores: np.ndarray, num_top: int) -> np.ndarray:
    """The order in which brocolli-caffe's ``Proposal`` leaves ``scores`` (descending) after its
    partial quicksort: the first element of each range is the pivot, a two-pointer pass swaps a
    smaller value from the left with a larger one from the right, values equal to the pivot stay
    where they are, the pivot then goes to the last larger-or-equal slot, the left part is sorted
    and the right part only where it starts before ``num_top``. Equal scores come out in the order
    this leaves them, which a stable sort would not reproduce. Each pass is done with whole-array
    operations: its swaps pair the k-th smaller value from the left with the k-th larger from the
    right while the first lies before the second."""
    values = np.asarray(scores, dtype=np.float32).copy()
    order = np.arange(values.size)
    ranges = [(0, values.size - 1)]
    while ranges:
        start, end = ranges.pop()
        if end <= start:
            continue
        pivot = values[start]
        segment = values[start + 1 : end + 1]
        smaller = np.flatnonzero(segment < pivot) + start + 1  # ascending
        larger = np.flatnonzero(segment > pivot)[::-1] + start + 1  # descending
        if not smaller.size and not larger.size:
            continue  # all equal to the pivot: the fork moves nothing here
        pairs = min(smaller.size, larger.size)
        swaps = int(np.count_nonzero(smaller[:pairs] < larger[:pairs]))
        left, right = smaller[:swaps], larger[:swaps]
        values[left], values[right] = values[right], values[left].copy()
        order[left], order[right] = order[right], order[left].copy()
        if swaps:
            after = larger[swaps] if larger.size > swaps and larger[swaps] > left[-1] else left[-1]
        else:
            after = larger[0] if larger.size else start
        if after > start:
            values[[start, after]] = values[[after, start]]
            order[[start, after]] = order[[after, start]]
        if start < after - 1:
            ranges.append((start, after - 1))
        if after + 1 < num_top and after + 1 < end:
            ranges.append((after + 1, end))
    return order


def _proposal_overlap(box: Tensor, others: Tensor) -> Tensor:
    """The fork's IoU of ``box`` with each row of ``others`` (pixel areas ``+ 1``; boxes apart on an
    axis overlap 0 even where the ``+ 1`` would give a sliver)."""
    apart = (box[0] > others[:, 2]) | (box[1] > others[:, 3])
    apart |= (box[2] < others[:, 0]) | (box[3] < others[:, 1])
    width = (torch.minimum(box[2], others[:, 2]) - torch.maximum(box[0], others[:, 0]) + 1).clamp(min=0)
    height = (torch.minimum(box[3], others[:, 3]) - torch.maximum(box[1], others[:, 1]) + 1).clamp(min=0)
    inter = width * height
    area = (box[2] - box[0] + 1) * (box[3] - box[1] + 1)
    areas = (others[:, 2] - others[:, 0] + 1) * (others[:, 3] - others[:, 1] + 1)
    return torch.where(apart, torch.zeros_like(inter), inter / (area + areas - inter))


def anchor_grid(
    anchors: list[list[float]], rows: int, cols: int, stride: float, dtype: torch.dtype, device: torch.device
) -> Tensor:
    """Every anchor at every position of a ``rows x cols`` map, ``stride`` pixels apart, as
    ``(rows * cols * A) x 4`` corners in ``dtype``, ordered by row, column, anchor."""
    base = torch.tensor(anchors, dtype=dtype, device=device)
    ys = torch.arange(rows, dtype=dtype, device=device) * stride
    xs = torch.arange(cols, dtype=dtype, device=device) * stride
    shift = torch.stack(torch.broadcast_tensors(xs[None, :], ys[:, None], xs[None, :], ys[:, None]), -1)
    return (shift[:, :, None, :] + base).reshape(-1, 4)


def apply_deltas(boxes: Tensor, d: Tensor) -> Tensor:
    """Faster R-CNN's box regression (``bbox_transform_inv``): centres moved by ``d[:, :2]`` times
    the pixel sides (``+ 1``), sides scaled by ``exp(d[:, 2:])``; corners out."""
    w = boxes[:, 2] - boxes[:, 0] + 1
    h = boxes[:, 3] - boxes[:, 1] + 1
    cx = d[:, 0] * w + (boxes[:, 0] + 0.5 * w)
    cy = d[:, 1] * h + (boxes[:, 1] + 0.5 * h)
    pw, ph = torch.exp(d[:, 2]) * w, torch.exp(d[:, 3]) * h
    return torch.stack([cx - 0.5 * pw, cy - 0.5 * ph, cx + 0.5 * pw, cy + 0.5 * ph], 1)


class ProposalSettings(nn.Module):
    """What both proposal layers are made of: anchors (constants: graphs are built on the meta
    device), feature stride, minimum box side, pre- and post-NMS counts, NMS threshold, and
    whether the scores are a second top."""

    def __init__(
        self, anchors: Tensor | np.ndarray, stride: float, min_size: float, pre: int, post: int,
        threshold: float, scores: bool,
    ) -> None:  # fmt: skip
        super().__init__()
        self.anchors = anchors.tolist()
        self.stride, self.min_size, self.pre, self.post = stride, min_size, pre, post
        self.threshold, self.scores = threshold, scores

    def extra_repr(self) -> str:
        return (
            f"anchors={len(self.anchors)}, feat_stride={self.stride:g}, min_size={self.min_size:g}, "
            f"pre_nms_topn={self.pre}, post_nms_topn={self.post}, nms_thresh={self.threshold:g}"
        )


class Proposal(ProposalSettings):
    """Faster R-CNN's region proposals as brocolli-caffe's C++ ``Proposal`` computes them: every
    anchor at every position moved by its deltas, clipped to the image (``im_info``'s first two
    values, of the first image), scored 0 if smaller than ``min_size``, the best ``pre_nms_topn``
    kept, greedy NMS to ``post_nms_topn``. Returns rows ``[image, x1, y1, x2, y2]`` of every image
    (and their scores): as many as NMS keeps."""


    def _image(self, scores: Tensor, deltas: Tensor, height: Tensor, width: Tensor) -> tuple[Tensor, Tensor]:
        count, rows, cols = len(self.anchors), scores.shape[-2], scores.shape[-1]
        boxes = anchor_grid(self.anchors, rows, cols, self.stride, scores.dtype, scores.device)
        d = deltas.reshape(count, 4, rows, cols).permute(2, 3, 0, 1).reshape(-1, 4)
        box = apply_deltas(boxes, d)
        limit = torch.stack([width, height, width, height]) - 1
        box = torch.minimum(box, limit).clamp(min=0)
        big = ((box[:, 2] - box[:, 0] + 1) >= self.min_size) & ((box[:, 3] - box[:, 1] + 1) >= self.min_size)
        foreground = scores[count:].permute(1, 2, 0).reshape(-1)
        score = big.to(foreground.dtype) * foreground
        ranked = fork_sort_order(score.detach().cpu().numpy(), self.pre)[: min(self.pre, score.numel())]
        order = torch.from_numpy(ranked).to(score.device)
        box, score = box[order], score[order]
        index = _greedy_nms(box, self.threshold, self.post, _proposal_overlap)
        return box[index], score[index]

    def forward(self, scores: Tensor, deltas: Tensor, im_info: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        info = im_info.reshape(-1)
        rois, values = [], []
        for n in range(scores.shape[0]):
            box, score = self._image(scores[n], deltas[n], info[0], info[1])
            rois.append(torch.cat([torch.full_like(box[:, :1], n), box], 1))
            values.append(score)
        out = torch.cat(rois, 0)
        return (out, torch.cat(values, 0)) if self.scores else out


def faster_rcnn_anchors(base_size: float, ratios: list[float], scales: list[float]) -> np.ndarray:
    """py-faster-rcnn's anchors (``generate_anchors.py``, ratio-major, ``A x 4`` float64 corners):
    the ``base_size`` square around ``(base_size - 1) / 2``, per ratio a box of the same area with
    sides rounded half to even (``np.round``), per scale that box times ``scale`` -- scales in base
    sizes (8, 16, 32 are 128, 256, 512 pixels)."""
    side = float(base_size)
    center = 0.5 * (side - 1)
    rows = []
    for ratio in ratios:
        width = float(np.round(np.sqrt(side * side / ratio)))
        height = float(np.round(width * ratio))
        for scale in scales:
            w, h = width * scale, height * scale
            half_w, half_h = 0.5 * (w - 1), 0.5 * (h - 1)
            rows.append([center - half_w, center - half_h, center + half_w, center + half_h])
    return np.array(rows, dtype=np.float64).reshape(-1, 4)


class FasterRCNNProposal(ProposalSettings):
    """Region proposals as py-faster-rcnn's ``rpn.proposal_layer`` computes them (the layer the
    published Faster R-CNN models ran; OpenCV's ``Proposal`` follows it): anchors of
    :func:`faster_rcnn_anchors` at every position moved by the deltas (float32, as
    ``bbox_transform_inv``), clipped to ``im_info``'s height and width, boxes with a side under
    ``min_size * im_info[2]`` removed, the best ``pre_nms_topn`` by score, greedy NMS dropping
    overlaps above ``nms_thresh``, the first ``post_nms_topn`` kept (a count of 0 keeps all). One
    image, as the layer asserts; returns rows ``[0, x1, y1, x2, y2]`` (and ``R x 1`` scores).
    Equal scores keep the order of a stable descending sort (numpy's unstable quicksort may
    differ there)."""


    def forward(self, scores: Tensor, deltas: Tensor, im_info: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        count = len(self.anchors)
        rows, cols = scores.shape[-2], scores.shape[-1]
        grid = anchor_grid(self.anchors, rows, cols, self.stride, torch.float64, scores.device)
        box = apply_deltas(grid.to(deltas.dtype), deltas[0].permute(1, 2, 0).reshape(-1, 4))
        info = im_info.reshape(-1).to(box.dtype)
        limit = torch.stack([info[1], info[0], info[1], info[0]]) - 1
        box = torch.maximum(torch.minimum(box, limit), torch.zeros_like(limit))
        smallest = self.min_size * info[2]
        keep = ((box[:, 2] - box[:, 0] + 1) >= smallest) & ((box[:, 3] - box[:, 1] + 1) >= smallest)
        score = scores[0, count:].permute(1, 2, 0).reshape(-1)
        box, score = box[keep], score[keep]
        order = torch.sort(score, descending=True, stable=True).indices
        if self.pre > 0:
            order = order[: self.pre]
        box, score = box[order], score[order]
        kept = _greedy_nms(box, self.threshold, self.post)
        box, score = box[kept], score[kept]
        rois = torch.cat([torch.zeros_like(box[:, :1]), box], 1)
        return (rois, score[:, None]) if self.scores else rois


def pixel_iou(box: Tensor, others: Tensor) -> Tensor:
    """The IoU of ``box`` with each row of ``others``, pixel areas (sides ``+ 1``), as
    py-faster-rcnn's NMS computes it."""
    width = (torch.minimum(box[2], others[:, 2]) - torch.maximum(box[0], others[:, 0]) + 1).clamp(min=0)
    height = (torch.minimum(box[3], others[:, 3]) - torch.maximum(box[1], others[:, 1]) + 1).clamp(min=0)
    inter = width * height
    area = (box[2] - box[0] + 1) * (box[3] - box[1] + 1)
    return inter / (area + (others[:, 2] - others[:, 0] + 1) * (others[:, 3] - others[:, 1] + 1) - inter)


def _greedy_nms(box: Tensor, threshold: float, limit: int, overlap: Any = pixel_iou) -> Tensor:
    """Indices of the boxes (sorted best first) that greedy NMS keeps: a box survives unless an
    earlier kept box overlaps it (``overlap``) by more than ``threshold``; at most ``limit`` (all
    when ``limit`` <= 0)."""
    alive = torch.ones(box.shape[0], dtype=torch.bool, device=box.device)
    kept: list[int] = []
    for i in range(box.shape[0]):
        if not bool(alive[i]):
            continue
        kept.append(i)
        if 0 < limit == len(kept):
            break
        alive[i + 1 :] &= overlap(box[i], box[i + 1 :]) <= threshold
    return torch.tensor(kept, dtype=torch.long, device=box.device)


#: py-faster-rcnn's ``cfg.TEST`` / ``cfg.TRAIN`` RPN settings (lib/fast_rcnn/config.py): pre-NMS
#: top-n, post-NMS top-n, NMS threshold, minimum box side at the original image scale.
FASTER_RCNN_RPN = {"TEST": (6000, 300, 0.7, 16.0), "TRAIN": (12000, 2000, 0.7, 16.0)}


def _check_proposal_bottoms(ctx: LayerContext, count: int) -> None:
    """Scores N x 2A x H x W and deltas N x 4A x H x W at the same positions, and an ``im_info``
    holding at least what the variant reads."""
    for i, per in ((0, 2), (1, 4)):
        shape = ctx.bottom_shapes[i]
        if shape is not None and (len(shape) != 4 or shape[1] != per * count):
            what = "scores" if i == 0 else "deltas"
            raise ValueError(
                f"{ctx.where}: bottom {i} ({what}) must be N x {per * count} x H x W for {count} "
                f"anchors, got {list(shape)}"
            )
    scores, deltas = ctx.bottom_shapes[0], ctx.bottom_shapes[1]
    if scores is not None and deltas is not None and (scores[0], *scores[2:]) != (deltas[0], *deltas[2:]):
        raise ValueError(
            f"{ctx.where}: the deltas {list(deltas)} must cover the images and positions of the scores "
            f"{list(scores)}"
        )


def faster_rcnn_proposal(
    ctx: LayerContext, stride: float, base: float, ratios: list[float], scales: list[float],
    pre: int, post: int, threshold: float, min_size: float,
) -> Converted:  # fmt: skip
    """The py-faster-rcnn proposal layer for these settings (shared by ``Proposal`` and
    ``Python`` ``rpn.proposal_layer``)."""
    if not ratios or not scales:
        raise ValueError(f"{ctx.where}: give at least one ratio and one scale")
    if min(ratios) <= 0 or min(scales) <= 0:
        raise ValueError(f"{ctx.where}: ratios and scales must be positive")
    if not all(math.isfinite(v) for v in (stride, base, threshold, min_size, *ratios, *scales)):
        raise ValueError(f"{ctx.where}: the proposal settings must be finite numbers")
    if base < 1 or stride <= 0:
        raise ValueError(f"{ctx.where}: base_size must be at least 1 and feat_stride positive")
    count = len(ratios) * len(scales)
    _check_proposal_bottoms(ctx, count)
    scores = ctx.bottom_shapes[0]
    if scores is not None and scores[0] != 1:
        raise ValueError(
            f"{ctx.where}: py-faster-rcnn's proposal layer takes one image, got a batch of {scores[0]}"
        )
    info = ctx.bottom_shapes[2]
    if info is not None and math.prod(info) < 3:
        raise ValueError(
            f"{ctx.where}: bottom 2 (im_info) must hold the image's height, width and scale, got {list(info)}"
        )
    anchors = faster_rcnn_anchors(base, ratios, scales)
    module = FasterRCNNProposal(anchors, stride, min_size, pre, post, threshold, len(ctx.tops) == 2)

    def shape(shapes: list[tuple[int, ...]]) -> tuple[int, ...] | list[tuple[int, ...]]:
        rows = max(post, 1)  # as many as NMS keeps once it runs
        return [(rows, 5), (rows, 1)] if len(ctx.tops) == 2 else (rows, 5)

    return Converted(module=module, output_shape=shape, outputs=len(ctx.tops))


#: How ``Proposal`` layers are read: py-faster-rcnn's semantics (the default: OpenCV's and most
#: ports'), or brocolli-caffe's C++ port (``variants={"Proposal": "brocolli-caffe"}``).
PROPOSAL_VARIANTS = ("py-faster-rcnn", "brocolli-caffe")


@register_layer("Proposal", bottoms=3, tops=(1, 2), variants=PROPOSAL_VARIANTS)
def proposal(ctx: LayerContext) -> Converted:
    """bottoms: scores (N x 2A x H x W, background then foreground), deltas (N x 4A x H x W),
    im_info (height, width, scale)."""
    p = ctx.param("proposal_param")
    ratios, scales = [float(r) for r in p.get("ratio")], [float(s) for s in p.get("scale")]
    if ctx.variant == "brocolli-caffe":
        return _brocolli_proposal(ctx, p, ratios, scales)
    return faster_rcnn_proposal(
        ctx, float(p.get("feat_stride")), float(p.get("base_size")), ratios or [0.5, 1.0, 2.0],
        scales or [8.0, 16.0, 32.0], int(p.get("pre_nms_topn")), int(p.get("post_nms_topn")),
        float(p.get("nms_thresh")), float(p.get("min_size")),
    )  # fmt: skip


def _brocolli_proposal(ctx: LayerContext, p: Any, ratios: list[float], scales: list[float]) -> Converted:
    """brocolli-caffe's C++ ``Proposal`` (PVANet's port): scales in pixels, ``min_size`` not
    scaled, small boxes scored 0 rather than removed, the fork's sort order."""
    if not ratios or not scales:
        raise ValueError(f"{ctx.where}: give at least one ratio and one scale in proposal_param")
    if min(ratios) <= 0:
        raise ValueError(f"{ctx.where}: ratios must be positive, got {min(ratios):g}")
    base = int(p.get("base_size"))
    if base < 1 or int(p.get("feat_stride")) < 1:
        raise ValueError(f"{ctx.where}: base_size and feat_stride must be at least 1")
    count = len(ratios) * len(scales)  # checked against the bottoms before any anchor is made
    _check_proposal_bottoms(ctx, count)
    anchors = proposal_anchors(base, ratios, scales)
    info = ctx.bottom_shapes[2]
    if info is not None and math.prod(info) < 2:
        raise ValueError(
            f"{ctx.where}: bottom 2 (im_info) must hold the image's height and width, got {list(info)}"
        )
    post = int(p.get("post_nms_topn"))
    if post < 1:  # the fork writes past its buffer of post_nms_topn indices
        raise ValueError(f"{ctx.where}: post_nms_topn must be at least 1")
    module = Proposal(
        anchors,
        int(p.get("feat_stride")),
        int(p.get("min_size")),
        int(p.get("pre_nms_topn")),
        post,
        float(p.get("nms_thresh")),
        len(ctx.tops) == 2,
    )

    def shape(shapes: list[tuple[int, ...]]) -> tuple[int, ...] | list[tuple[int, ...]]:
        rows = shapes[0][0] * post  # Caffe's shape before the first forward; then as many as kept
        return [(rows, 5), (rows,)] if len(ctx.tops) == 2 else (rows, 5)

    return Converted(module=module, output_shape=shape, outputs=len(ctx.tops))


def python_param_str(ctx: LayerContext) -> dict[str, Any]:
    """A Python layer's ``param_str`` as the dict its ``yaml.load`` reads (py-faster-rcnn writes
    ``"'feat_stride': 16"``; one key per line, or comma-separated, braces or not): quoted or bare
    keys, numbers, and lists or tuples of numbers; a one-line error naming the layer otherwise."""
    text = str(ctx.param("python_param").get("param_str")).strip()
    if not text:
        return {}
    body = text[1:-1] if text.startswith("{") and text.endswith("}") else text
    body = re.sub(r"\s*\n\s*", ", ", body.strip())  # a block mapping: one key per line
    quoted = re.sub(r"(^|,)\s*([A-Za-z_]\w*)\s*:", r"\1'\2':", body)  # YAML's bare keys, quoted
    try:
        value = ast.literal_eval("{" + quoted + "}")
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        raise ValueError(f"{ctx.where}: param_str {text!r} is not a mapping of names to numbers") from None
    return {str(k): v for k, v in value.items()}


def _numbers(ctx: LayerContext, settings: dict[str, Any], key: str, default: list[float]) -> list[float]:
    value = settings.get(key, default)
    values = list(value) if isinstance(value, list | tuple) else [value]
    if not values or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        raise ValueError(f"{ctx.where}: param_str '{key}' must be a number or numbers, got {value!r}")
    return [float(v) for v in values]


@python_layer("rpn.proposal_layer")
def python_proposal(ctx: LayerContext) -> Converted:
    """py-faster-rcnn's ``rpn.proposal_layer.ProposalLayer``: ``feat_stride`` and ``scales``
    (default 8, 16, 32) from ``param_str``, ratios 0.5, 1, 2 and base size 16 of
    ``generate_anchors``, and the phase's ``cfg`` RPN settings (:data:`FASTER_RCNN_RPN`)."""
    if len(ctx.bottoms) != 3 or len(ctx.tops) not in (1, 2):
        raise ValueError(
            f"{ctx.where}: rpn.proposal_layer takes 3 bottoms (scores, deltas, im_info) and gives 1 or 2 "
            f"tops, got {len(ctx.bottoms)} and {len(ctx.tops)}"
        )
    settings = python_param_str(ctx)
    if "feat_stride" not in settings:
        raise ValueError(f"{ctx.where}: rpn.proposal_layer needs 'feat_stride' in param_str")
    (stride,) = _numbers(ctx, settings, "feat_stride", [])[:1]
    scales = _numbers(ctx, settings, "scales", [8.0, 16.0, 32.0])
    ratios = _numbers(ctx, settings, "ratios", [0.5, 1.0, 2.0])
    pre, post, threshold, min_size = FASTER_RCNN_RPN[ctx.phase]
    return faster_rcnn_proposal(ctx, stride, 16.0, ratios, scales, pre, post, threshold, min_size)
