"""Caffe-SSD's layers (weiliu89/caffe ``ssd`` branch): ``Normalize``, ``Permute``, ``PriorBox`` and
``DetectionOutput`` (box decoding, confidence threshold, per-class NMS with ``top_k`` and ``eta``,
``keep_top_k``, ``share_location``, the three code types), computed in Caffe's order and float
arithmetic."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ...caffe.message import Message
from ...errors import NetError
from ..fillers import CONSTANT_ONE
from ..registry import Converted, LayerContext, register_layer
from ..tracing import tracing


class Normalize(nn.Module):
    """L2 normalisation over C x H x W per sample (``across_spatial``) or over C per position
    (``sqrt(sum x^2 + eps)``), then a learned scale, one per channel or shared.

    In training, the gradients are Caffe-SSD's, in the order of its float operations (a cancelling
    difference, as with one channel, then rounds as the fork's does): the input's scales the
    normalisation's gradient by the scale *after* projecting it (``s * J g``, where the exact one is
    ``J (s g)``; the two differ when the scale differs between channels, and SSD nets were trained
    with the fork's), and the scale's is ``sum(top * dy) / scale`` (not a number where the scale is
    0). Computed in place (``in_place``), the input's gradient is zero, as the fork's backward
    leaves it: it writes the bottom diff over the top diff it then subtracts from it."""

    def __init__(
        self, channels: int, across_spatial: bool, channel_shared: bool, eps: float, in_place: bool = False
    ) -> None:
        super().__init__()
        self.across_spatial, self.channel_shared, self.eps = across_spatial, channel_shared, eps
        self.in_place = in_place
        self.scale = nn.Parameter(torch.empty(() if channel_shared else (channels,), device="meta"))

    def extra_repr(self) -> str:
        return f"across_spatial={self.across_spatial}, channel_shared={self.channel_shared}, eps={self.eps}"

    def _norm(self, x: Tensor) -> Tensor:
        """The fork's norms, shaped to broadcast over ``x``."""
        if self.across_spatial:
            return torch.sqrt((x * x).flatten(1).sum(1) + self.eps).reshape(-1, *([1] * (x.dim() - 1)))
        return torch.sqrt((x * x).sum(1, keepdim=True) + self.eps)

    def _normalised(self, x: Tensor, norm: Tensor) -> Tensor:
        return x * (1.0 / norm) if self.across_spatial else x / norm

    def _scale(self, scale: Tensor, dims: int) -> Tensor:
        return scale.reshape(()) if self.channel_shared else scale.reshape(1, -1, *([1] * (dims - 2)))

    def forward(self, x: Tensor) -> Tensor:
        scale = self._scale(self.scale, x.dim())
        if not (torch.is_grad_enabled() and (x.requires_grad or self.scale.requires_grad)) or tracing():
            return self._normalised(x, self._norm(x)) * scale
        return _NormalizeGradients.apply(x, self.scale, self)

    def input_gradient(self, x: Tensor, norm: Tensor, dy: Tensor, scale: Tensor) -> Tensor:
        """The fork's bottom diff for top diff ``dy``: ``(dy - x * sum(x * dy) / norm^2) / norm``
        (the sum over the norm's axes), times the scale, in the fork's order of operations."""
        product = x * dy
        if self.across_spatial:
            dots = product.flatten(1).sum(1).reshape(norm.shape)
            dx = dy - x * (dots / norm / norm)
            dx = dx * (1.0 / norm.double()).float()  # (the fork's Dtype(1.0 / norm): a double quotient)
        else:
            dots = product.sum(1, keepdim=True)
            dx = (dy - (x * dots) / norm.pow(2)) / norm
        return dx * self._scale(scale, x.dim())

    def scale_gradient(self, top: Tensor, dy: Tensor, scale: Tensor) -> Tensor:
        """The fork's scale diff: ``sum(top * dy) / scale``, from the top's data as it reads it."""
        product = top * dy
        if self.channel_shared:
            return (product.sum() / scale).reshape(scale.shape)
        # (per item, then added: the fork's order)
        per_item = product.reshape(*product.shape[:2], -1).sum(2) / scale
        return per_item.sum(0)

    def caffe_backward(
        self, dy: Tensor, bottom: Tensor, top: Tensor, in_place: bool, given: Tensor, scale: Tensor
    ) -> tuple[Tensor, Tensor]:
        """The fork's backward where a later layer computed in place over the top: the input's
        gradient as usual (from the input and the kept norms; zero computed in place), the scale's
        from the top's data as Caffe then reads it."""
        if in_place:
            dx = torch.zeros_like(dy)
        else:
            x = given.detach()
            dx = self.input_gradient(x, self._norm(x), dy, scale.detach())
        return dx, self.scale_gradient(top, dy, scale.detach())


class _NormalizeGradients(torch.autograd.Function):
    """:class:`Normalize`'s forward, with the fork's backward (:meth:`Normalize.input_gradient`,
    :meth:`Normalize.scale_gradient`)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, scale: Tensor, module: Normalize) -> Tensor:
        norm = module._norm(x)
        top = module._normalised(x, norm) * module._scale(scale, x.dim())
        ctx.module = module
        ctx.save_for_backward(x, norm, top, scale)
        return top

    @staticmethod
    def backward(ctx: Any, dy: Tensor) -> tuple[Tensor | None, Tensor | None, None]:
        x, norm, top, scale = ctx.saved_tensors
        module: Normalize = ctx.module
        dx = dscale = None
        if ctx.needs_input_grad[0]:
            dx = torch.zeros_like(dy) if module.in_place else module.input_gradient(x, norm, dy, scale)
        if ctx.needs_input_grad[1]:
            dscale = module.scale_gradient(top, dy, scale)
        return dx, dscale, None


@register_layer("Normalize", bottoms=1, tops=1)
def normalize(ctx: LayerContext) -> Converted:
    ctx.legacy_bottoms(0)
    p = ctx.param("norm_param")
    channels = ctx.channels(1, 0, lambda s: s[-1])
    shared = bool(p.get("channel_shared"))
    in_place = ctx.tops[0] == ctx.bottoms[0]
    module = Normalize(channels, bool(p.get("across_spatial")), shared, float(p.get("eps")), in_place)
    return Converted(
        module=module,
        blobs=[("scale", () if shared else (channels,))],  # shared: a 0-axis blob, as the fork saves it
        fillers=[p.get("scale_filler", CONSTANT_ONE)],
        keeps_shape=True,
        caffe_backward=module.caffe_backward,  # (its scale's gradient reads the top)
        caffe_backward_params=("scale",),
    )


@register_layer("Permute", bottoms=1, tops=1)
def permute(ctx: LayerContext) -> Converted:
    order = [int(o) for o in ctx.param("permute_param").get("order")]
    ndim = len(ctx.bottom_shape(0))
    for axis in order:
        if not 0 <= axis < ndim:
            raise ValueError(f"{ctx.where}: order {order} names axis {axis} of a {ndim}-axis blob")
    if len(set(order)) != len(order):
        raise ValueError(f"{ctx.where}: order {order} repeats an axis")
    order += [axis for axis in range(ndim) if axis not in order]
    return Converted(function=torch.permute, kwargs={"dims": tuple(order)})


def _aspect_ratios(ratios: list[float], flip: bool) -> list[float]:
    out = [1.0]
    for ar in ratios:
        if any(abs(ar - seen) < 1e-6 for seen in out):
            continue
        out.append(ar)
        if flip:
            out.append(float(np.float32(1.0 / ar)))  # kept as a float, as the fork does
    return out


class PriorBox(nn.Module):
    """SSD's default boxes for a feature map (bottom 0) on an image (bottom 1): ``1 x 2 x (H*W*P*4)``,
    corners normalised by the image size, then the variances."""

    def __init__(
        self,
        min_sizes: list[float],
        max_sizes: list[float],
        ratios: list[float],
        clip: bool,
        variance: list[float],
        image_size: tuple[int, int] | None,
        step: tuple[float, float] | None,
        offset: float,
    ) -> None:
        super().__init__()
        self.min_sizes, self.max_sizes, self.ratios = min_sizes, max_sizes, ratios
        self.clip, self.variance, self.image_size, self.step, self.offset = (
            clip,
            variance,
            image_size,
            step,
            offset,
        )
        # Box sizes per prior, in the fork's order: per min size its square box, the
        # sqrt(min * max) box, then one box per aspect ratio other than 1. The fork truncates the
        # sizes to int (``int min_size_ = min_sizes_[s]``) and keeps the ratios as floats.
        sizes: list[tuple[float, float]] = []
        for i, min_size in enumerate(min_sizes):
            m = int(min_size)
            sizes.append((float(m), float(m)))
            if max_sizes:
                side = float(np.float32(math.sqrt(m * int(max_sizes[i]))))
                sizes.append((side, side))
            for ar in ratios:
                if abs(ar - 1.0) < 1e-6:
                    continue
                root = np.float32(math.sqrt(np.float32(ar)))
                sizes.append((float(np.float32(m * root)), float(np.float32(m / root))))
        self.box_sizes = sizes
        """Box (width, height) per prior; a constant of the layer (not a buffer: graphs are moved
        with ``to_empty``)."""

    reads_shapes_only = True
    """Only the bottoms' shapes are read: a channels-last bottom is taken as it is
    (:mod:`converters.graph.layout`)."""

    def extra_repr(self) -> str:
        return f"min_sizes={self.min_sizes}, max_sizes={self.max_sizes}, aspect_ratios={self.ratios}"

    _kept: tuple[tuple, Tensor] | None = None  # ((sizes, device), the boxes computed for them)

    def __getstate__(self) -> dict:
        return {**super().__getstate__(), "_kept": None}

    def forward(self, feature: Tensor, image: Tensor) -> Tensor:
        """The boxes depend on the two bottoms' sizes only: those computed for the last sizes are
        kept and a copy returned (recomputed while traced, so that an export keeps the arithmetic)."""
        if tracing() or feature.is_meta:
            return self._boxes(feature, image)
        key = (tuple(feature.shape[2:]), tuple(image.shape[2:]), feature.device)
        if self._kept is None or self._kept[0] != key:
            self._kept = (key, self._boxes(feature, image))
        return self._kept[1].clone()

    def _boxes(self, feature: Tensor, image: Tensor) -> Tensor:
        height, width = feature.shape[2], feature.shape[3]
        img_h, img_w = self.image_size if self.image_size else (image.shape[2], image.shape[3])
        device = feature.device
        if self.step is not None:
            step_h = torch.tensor(self.step[0], dtype=torch.float32, device=device)
            step_w = torch.tensor(self.step[1], dtype=torch.float32, device=device)
        else:
            step_h = torch.tensor(img_h, dtype=torch.float32, device=device) / height
            step_w = torch.tensor(img_w, dtype=torch.float32, device=device) / width
        f32 = torch.float32
        cy = (torch.arange(height, dtype=f32, device=device) + self.offset) * step_h  # float, as Caffe's
        cx = (torch.arange(width, dtype=f32, device=device) + self.offset) * step_w
        cy = cy.to(torch.float64).reshape(-1, 1, 1)
        cx = cx.to(torch.float64).reshape(1, -1, 1)
        sizes = torch.tensor(self.box_sizes, dtype=torch.float64, device=device)
        half_w = sizes[:, 0].reshape(1, 1, -1) / 2.0
        half_h = sizes[:, 1].reshape(1, 1, -1) / 2.0
        shape = (height, width, half_w.shape[-1])
        boxes = torch.stack(
            [
                ((cx - half_w) / img_w).expand(shape),
                ((cy - half_h) / img_h).expand(shape),
                ((cx + half_w) / img_w).expand(shape),
                ((cy + half_h) / img_h).expand(shape),
            ],
            dim=-1,
        ).to(f32)  # H x W x P x 4
        boxes = boxes.reshape(1, -1)
        if self.clip:
            boxes = boxes.clamp(0.0, 1.0)
        variance = torch.tensor(self.variance, dtype=f32, device=device)
        variances = variance.reshape(1, -1).expand(boxes.shape[1] // 4, 4).reshape(1, -1)
        return torch.stack([boxes, variances], dim=1)


@register_layer("PriorBox", bottoms=2, tops=1)
def prior_box(ctx: LayerContext) -> Converted:
    ctx.legacy_bottoms()
    p = ctx.param("prior_box_param")
    if len(ctx.bottoms) != 2:
        raise ValueError(f"{ctx.where}: takes two bottoms (the feature map and the image)")
    min_sizes = [float(v) for v in p.get("min_size")]
    max_sizes = [float(v) for v in p.get("max_size")]
    if not min_sizes or any(v <= 0 for v in min_sizes):
        raise ValueError(f"{ctx.where}: give one or more positive min_size")
    if max_sizes and (
        len(max_sizes) != len(min_sizes) or any(m <= n for m, n in zip(max_sizes, min_sizes, strict=True))
    ):
        raise ValueError(f"{ctx.where}: max_size needs one value greater than each min_size")
    ratios = _aspect_ratios([float(v) for v in p.get("aspect_ratio")], bool(p.get("flip")))
    variance = [float(v) for v in p.get("variance")] or [0.1]
    if len(variance) not in (1, 4) or any(v <= 0 for v in variance):
        raise ValueError(f"{ctx.where}: give one or four positive variances, got {variance}")
    if len(variance) == 1:
        variance = variance * 4
    image_size = _pair(ctx, p, "img_size", "img_h", "img_w", int)
    step = _pair(ctx, p, "step", "step_h", "step_w", float)
    module = PriorBox(
        min_sizes, max_sizes, ratios, bool(p.get("clip")), variance, image_size, step, float(p.get("offset"))
    )
    priors = len(ratios) * len(min_sizes) + len(max_sizes)

    def shape(shapes: list[tuple[int, ...]]) -> tuple[int, ...]:
        return (1, 2, shapes[0][2] * shapes[0][3] * priors * 4)

    return Converted(module=module, output_shape=shape)


def _pair(ctx: LayerContext, p: Message, name: str, h: str, w: str, kind: type) -> tuple[Any, Any] | None:
    """PriorBox's ``name`` or its ``h``/``w`` pair as Caffe-SSD's ``LayerSetUp`` reads them: not both,
    and a pair's halves both positive (a half left out is 0); ``None`` where neither is given."""
    if h in p or w in p:
        if name in p:
            raise NetError(f"{ctx.where}: give {name} or {h} and {w}, not both")
        pair = (kind(p.get(h)), kind(p.get(w)))
        if min(pair) <= 0:
            raise NetError(f"{ctx.where}: {h} and {w} must both be given and positive, got {list(pair)}")
        return pair
    return (kind(p.get(name)),) * 2 if name in p else None


# --------------------------------------------------------------------------------------------------
# DetectionOutput

CODE_TYPES = ("CORNER", "CENTER_SIZE", "CORNER_SIZE")


def decode_boxes(loc: Tensor, priors: Tensor, variances: Tensor, code_type: str, encoded: bool) -> Tensor:
    """Caffe-SSD's ``DecodeBBox`` for ``loc`` (P x 4) against ``priors`` (P x 4, corners): float
    arithmetic, halves taken in double as the fork does."""
    var = torch.ones_like(variances) if encoded else variances
    if code_type == "CORNER":
        return priors + var * loc
    pw = priors[:, 2] - priors[:, 0]
    ph = priors[:, 3] - priors[:, 1]
    if code_type == "CORNER_SIZE":
        size = torch.stack([pw, ph, pw, ph], dim=1)
        return priors + var * loc * size
    pcx = ((priors[:, 0].double() + priors[:, 2].double()) / 2.0).float()
    pcy = ((priors[:, 1].double() + priors[:, 3].double()) / 2.0).float()
    cx = var[:, 0] * loc[:, 0] * pw + pcx
    cy = var[:, 1] * loc[:, 1] * ph + pcy
    w = torch.exp((var[:, 2] * loc[:, 2]).double()).float() * pw
    h = torch.exp((var[:, 3] * loc[:, 3]).double()).float() * ph
    cx, cy, w, h = cx.double(), cy.double(), w.double(), h.double()
    return torch.stack([cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0], dim=1).float()


def box_sizes(boxes: Tensor) -> Tensor:
    """``BBoxSize`` of normalised boxes: width x height, 0 for an inverted box."""
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    return torch.where((w < 0) | (h < 0), torch.zeros_like(w), w * h)


def jaccard(boxes: Tensor, sizes: Tensor) -> Tensor:
    """Pairwise ``JaccardOverlap`` of normalised boxes (K x K), in float as Caffe-SSD computes it."""
    a, b = boxes[:, None, :], boxes[None, :, :]
    disjoint = (
        (b[..., 0] > a[..., 2]) | (b[..., 2] < a[..., 0]) | (b[..., 1] > a[..., 3]) | (b[..., 3] < a[..., 1])
    )
    iw = torch.minimum(a[..., 2], b[..., 2]) - torch.maximum(a[..., 0], b[..., 0])
    ih = torch.minimum(a[..., 3], b[..., 3]) - torch.maximum(a[..., 1], b[..., 1])
    inter = iw * ih
    overlap = inter / (sizes[:, None] + sizes[None, :] - inter)
    return torch.where(disjoint | (iw <= 0) | (ih <= 0), torch.zeros_like(overlap), overlap)


def nms(
    boxes: Tensor, scores: Tensor, threshold: float, nms_threshold: float, eta: float, top_k: int
) -> list[int]:
    """``ApplyNMSFast``: scores above ``threshold`` in descending order (stable), the first
    ``top_k``, then greedy suppression by overlap > the (eta-adapted) NMS threshold."""
    candidates = torch.nonzero(scores > threshold).flatten()
    if candidates.numel() == 0:
        return []
    order = torch.sort(scores[candidates], descending=True, stable=True).indices
    candidates = candidates[order]
    if top_k > -1:
        candidates = candidates[:top_k]
    chosen = boxes[candidates]
    overlaps = jaccard(chosen, box_sizes(chosen)).tolist()
    kept: list[int] = []
    adaptive = nms_threshold
    for i in range(len(overlaps)):
        row = overlaps[i]
        keep = all(row[j] <= adaptive for j in kept)
        if keep:
            kept.append(i)
            if eta < 1 and adaptive > 0.5:
                adaptive *= eta
    return [int(candidates[i]) for i in kept]


class DetectionOutput(nn.Module):
    """SSD's detections: ``1 x 1 x K x 7`` rows ``[image, label, score, xmin, ymin, xmax, ymax]``,
    by image, then by label, then by score; ``1 x 1 x N x 7`` of -1 (image ids in column 0) when
    nothing is detected. The number of rows depends on the data, so this layer runs eagerly."""

    def __init__(
        self,
        num_classes: int,
        share_location: bool,
        background: int,
        nms_threshold: float,
        top_k: int,
        eta: float,
        code_type: str,
        encoded: bool,
        keep_top_k: int,
        threshold: float,
        clip: bool = False,
    ) -> None:
        super().__init__()
        self.clip = clip  # OpenCV's clip: decoded boxes clamped to [0, 1] before NMS
        self.num_classes, self.share_location, self.background = num_classes, share_location, background
        self.nms_threshold, self.top_k, self.eta = nms_threshold, top_k, eta
        self.code_type, self.encoded, self.keep_top_k, self.threshold = (
            code_type,
            encoded,
            keep_top_k,
            threshold,
        )

    def extra_repr(self) -> str:
        return (
            f"num_classes={self.num_classes}, code_type={self.code_type}, nms={self.nms_threshold}, "
            f"top_k={self.top_k}, keep_top_k={self.keep_top_k}, confidence_threshold={self.threshold}"
        )

    def forward(self, loc: Tensor, conf: Tensor, prior: Tensor) -> Tensor:
        num = loc.shape[0]
        loc_classes = 1 if self.share_location else self.num_classes
        num_priors = prior.shape[2] // 4
        if loc.shape[1] != num_priors * loc_classes * 4 or conf.shape[1] != num_priors * self.num_classes:
            raise ValueError(
                f"DetectionOutput: {num_priors} priors need {num_priors * loc_classes * 4} location and "
                f"{num_priors * self.num_classes} confidence values per image, "
                f"got {loc.shape[1]} and {conf.shape[1]}"
            )
        priors = prior[0, 0].reshape(num_priors, 4).float()
        variances = prior[0, 1].reshape(num_priors, 4).float()
        rows: list[Tensor] = []
        for i in range(num):
            locs = loc[i].reshape(num_priors, loc_classes, 4).float()
            scores = conf[i].reshape(num_priors, self.num_classes).float()
            decoded = {
                c: decode_boxes(locs[:, c], priors, variances, self.code_type, self.encoded)
                for c in range(loc_classes)
                if self.share_location or c != self.background
            }
            if self.clip:
                decoded = {c: boxes.clamp(0, 1) for c, boxes in decoded.items()}
            kept: dict[int, list[int]] = {}
            for label in range(self.num_classes):
                if label == self.background:
                    continue
                boxes = decoded[0 if self.share_location else label]
                indices = nms(
                    boxes, scores[:, label], self.threshold, self.nms_threshold, self.eta, self.top_k
                )
                if indices:
                    kept[label] = indices
            total = sum(len(v) for v in kept.values())
            if self.keep_top_k > -1 and total > self.keep_top_k:
                pairs = [
                    (float(scores[idx, label]), label, idx) for label, ids in kept.items() for idx in ids
                ]
                pairs.sort(key=lambda t: -t[0])
                trimmed: dict[int, list[int]] = {}
                for _, label, idx in pairs[: self.keep_top_k]:
                    trimmed.setdefault(label, []).append(idx)
                kept = trimmed
            for label in sorted(kept):
                ids = torch.tensor(kept[label], dtype=torch.int64, device=loc.device)
                boxes = decoded[0 if self.share_location else label][ids]
                head = torch.tensor([[float(i), float(label)]], device=loc.device).expand(len(ids), 2)
                rows.append(torch.cat([head, scores[ids, label : label + 1], boxes], dim=1))
        if not rows:
            out = torch.full((num, 7), -1.0, dtype=torch.float32, device=loc.device)
            out[:, 0] = torch.arange(num, dtype=torch.float32, device=loc.device)
            return out.reshape(1, 1, num, 7)
        return torch.cat(rows).reshape(1, 1, -1, 7)


@register_layer("DetectionOutput", bottoms=3, tops=1)
def detection_output(ctx: LayerContext) -> Converted:
    p = ctx.param("detection_output_param")
    if len(ctx.bottoms) != 3:
        raise ValueError(f"{ctx.where}: takes three bottoms (locations, confidences, priors)")
    if "num_classes" not in p or int(p.get("num_classes")) < 1:
        raise ValueError(f"{ctx.where}: detection_output_param needs num_classes")
    if bool(p.get("share_location")) and int(p.get("background_label_id")) == -1:
        raise ValueError(
            f"{ctx.where}: share_location with background_label_id -1 leaves the fork no location "
            "predictions to decode (Caffe-SSD stops with 'Could not find location predictions')"
        )
    loc, conf, prior = ctx.bottom_shapes
    if prior is not None and (len(prior) != 3 or prior[1] != 2 or prior[2] % 4):
        raise ValueError(
            f"{ctx.where}: the priors '{ctx.bottoms[2]}' {list(prior)} must be 1 x 2 x 4P (a PriorBox's "
            "boxes and variances)"
        )
    if loc is not None and conf is not None and loc[0] != conf[0]:
        raise ValueError(
            f"{ctx.where}: the locations '{ctx.bottoms[0]}' {list(loc)} and confidences '{ctx.bottoms[1]}' "
            f"{list(conf)} must hold the same number of images"
        )
    if loc is not None and conf is not None and prior is not None:  # Caffe-SSD's Reshape checks
        priors = prior[2] // 4 if len(prior) > 2 else 0
        loc_classes = 1 if bool(p.get("share_location")) else int(p.get("num_classes"))
        need_loc, need_conf = priors * loc_classes * 4, priors * int(p.get("num_classes"))
        have_loc, have_conf = (s[1] if len(s) > 1 else 1 for s in (loc, conf))
        if need_loc != have_loc or need_conf != have_conf:
            raise ValueError(
                f"{ctx.where}: {priors} priors need {need_loc} location and {need_conf} confidence values "
                f"per image, the bottoms give {have_loc} and {have_conf}"
            )
    nms_param = p.get("nms_param")
    nms_threshold = float(nms_param.get("nms_threshold"))
    eta = float(nms_param.get("eta"))
    if nms_threshold < 0 or not 0 < eta <= 1:
        raise ValueError(f"{ctx.where}: nms_threshold must be >= 0 and eta in (0, 1]")
    module = DetectionOutput(
        num_classes=int(p.get("num_classes")),
        share_location=bool(p.get("share_location")),
        background=int(p.get("background_label_id")),
        nms_threshold=nms_threshold,
        top_k=int(nms_param.get("top_k")) if "top_k" in nms_param else -1,
        eta=eta,
        code_type=str(p.get("code_type")),
        encoded=bool(p.get("variance_encoded_in_target")),
        keep_top_k=int(p.get("keep_top_k")),
        threshold=float(p.get("confidence_threshold")) if "confidence_threshold" in p else -math.inf,
        clip=bool(p.get("clip")),
    )
    # The row count depends on the data: give a nominal shape for the shape engine.
    return Converted(module=module, output_shape=lambda shapes: (1, 1, shapes[0][0], 7))
