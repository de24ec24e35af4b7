"""SegNet's and ENet's layers: ``Upsample`` with the pooling mask as second bottom (max
unpooling: every value goes to the position its max pooling took it from, the rest is 0) and the
fork ``BN`` layer (``bn_param``; blobs scale and shift, ``1 x C x 1 x 1``).

``BN`` also has a four-blob form (slope, bias, moving mean, moving variance statistic;
``bn_param`` with ``slope_filler``/``bias_filler``/``momentum``/``eps``/``frozen``); the blob count
or those fields select it. Two forks store the fourth blob differently: PSPNet's Caffe (and the
forks that copied its layer: ICNet, NVIDIA Caffe) keeps the moving *variance*, blobs
``1 x C x 1 x 1``; brocolli-caffe keeps the moving *inverse standard deviation*, blobs ``1 x C``.
The stored blobs' axes tell them apart; without weights the PSPNet form is built.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ...errors import NetError
from ..fillers import CONSTANT_ONE, CONSTANT_ZERO
from ..gradients import gradient_only
from ..registry import Converted, LayerContext, check_count, register_layer
from ..tracing import index_out_of_range, tracing
from .yolo import nearest_upsample_layer


def max_unpool(x: Tensor, mask: Tensor, height: int, width: int) -> Tensor:
    """``x`` scattered into a zero ``height x width`` map per channel at the indices ``mask`` holds
    (``h * width + w``, stored as floats by Caffe's max pooling); of two values sent to one
    position, the later one, as SegNet's loop leaves it."""
    n, c = x.shape[0], x.shape[1]
    index = mask.reshape(n, c, -1).to(torch.int64)
    bad = index_out_of_range(index, height * width)
    if bad is not None:  # SegNet's Upsample stops here ("upsample top index out of range")
        raise NetError(
            f"Upsample: mask index {bad} is "
            f"outside the {height} x {width} output: does the mask come from the matching pooling?"
        )
    # Where two pooling windows chose one position (overlapping windows), SegNet's loop leaves the
    # later window's value: take, per output position, the last source that names it.
    values = x.reshape(n, c, -1)
    sources = torch.arange(values.shape[2], device=x.device).expand_as(index)
    last = torch.full((n, c, height * width), -1, dtype=torch.int64, device=x.device)
    last = last.scatter_reduce(2, index, sources, reduce="amax")
    zero = torch.zeros((), dtype=x.dtype, device=x.device)
    out = torch.where(last >= 0, values.gather(2, last.clamp(min=0)), zero)
    if torch.is_grad_enabled() and x.requires_grad and not tracing():
        # SegNet's backward gives every source the gradient at the position it names (both windows
        # of an overlap): the gradient of a scatter-add, carried on the same values
        spread = x.new_zeros((n, c, height * width)).scatter_add(2, index, values)
        out = out.detach() + gradient_only(spread)
    return out.reshape(n, c, height, width)


class Unpool(nn.Module):
    """SegNet's ``Upsample`` with a mask: the output size is ``upsample_h x upsample_w``, or the
    input size times the scale minus ``pad_out``."""

    def __init__(
        self, size: tuple[int, int] | None, scale: tuple[int, int], pad_out: tuple[int, int]
    ) -> None:
        super().__init__()
        self.size, self.scale, self.pad_out = size, scale, pad_out

    def extra_repr(self) -> str:
        return f"size={self.size}" if self.size else f"scale={self.scale}, pad_out={self.pad_out}"

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        if self.size is not None:
            height, width = self.size
        else:
            height = x.shape[-2] * self.scale[0] - self.pad_out[0]
            width = x.shape[-1] * self.scale[1] - self.pad_out[1]
        return max_unpool(x, mask, height, width)


def _unpool_layer(ctx: LayerContext) -> Converted:
    p = ctx.param("upsample_param")
    for shape in ctx.bottom_shapes:
        if shape is not None and len(shape) != 4:
            raise ValueError(f"{ctx.where}: bottoms must have 4 axes (N, C, H, W), got {list(shape)}")
    if ctx.bottom_shapes[0] is not None and ctx.bottom_shapes[1] is not None:
        if ctx.bottom_shapes[0] != ctx.bottom_shapes[1]:
            raise ValueError(
                f"{ctx.where}: the mask {list(ctx.bottom_shapes[1])} must have the shape of the "
                f"values {list(ctx.bottom_shapes[0])}"
            )
    if "upsample_h" in p and "upsample_w" in p:
        size = (int(p.get("upsample_h")), int(p.get("upsample_w")))
        if min(size) <= 1:
            raise ValueError(f"{ctx.where}: upsample_h and upsample_w must be greater than 1")
        return Converted(module=Unpool(size, (1, 1), (0, 0)))
    if "scale_h" in p or "scale_w" in p:
        if "scale" in p or not ("scale_h" in p and "scale_w" in p):
            raise ValueError(f"{ctx.where}: give upsample_h and upsample_w, or scale, or scale_h and scale_w")
        scale = (int(p.get("scale_h")), int(p.get("scale_w")))
    else:
        scale = (int(p.get("scale")),) * 2
    if min(scale) <= 1:
        raise ValueError(f"{ctx.where}: the scale must be greater than 1, got {scale}")
    pad_out = (int(bool(p.get("pad_out_h"))), int(bool(p.get("pad_out_w"))))
    for pad, s, axis in zip(pad_out, scale, "hw", strict=True):
        if pad and s != 2:
            raise ValueError(f"{ctx.where}: pad_out_{axis} needs scale 2 along {axis}")
    values = ctx.bottom_shapes[0]
    if values is not None:
        top = (*values[:2], values[2] * scale[0] - pad_out[0], values[3] * scale[1] - pad_out[1])
        check_count(top, f"with scale {list(scale)} the top", ctx.where)
    return Converted(module=Unpool(None, scale, pad_out))


@register_layer("Upsample", bottoms=(1, 2), tops=1)
def upsample(ctx: LayerContext) -> Converted:
    """Two bottoms (values, pooling mask): SegNet's unpooling; one bottom: the YOLO forks'
    nearest-neighbour upsampling."""
    if len(ctx.bottoms) == 2:
        return _unpool_layer(ctx)
    if len(ctx.bottoms) == 1:
        return nearest_upsample_layer(ctx)
    raise ValueError(f"{ctx.where}: takes one bottom (nearest) or two (values and pooling mask)")


class SegNetBN(nn.Module):
    """SegNet's BN: ``INFERENCE`` is ``x * scale + shift`` (statistics folded into the blobs);
    ``LEARN`` normalises by the batch's own mean and variance ``E[x^2] - E[x]^2`` (eps 1e-9) first,
    in every phase; with ``tops`` 2 or 3 it also returns that mean and variance (``1 x C x 1 x 1``)
    as SegNet's extra tops."""

    def __init__(self, channels: int, learn: bool, tops: int = 1) -> None:
        super().__init__()
        self.learn, self.tops = learn, tops
        self.scale = nn.Parameter(torch.empty(1, channels, 1, 1, device="meta"))
        self.shift = nn.Parameter(torch.empty(1, channels, 1, 1, device="meta"))

    def extra_repr(self) -> str:
        return "LEARN (batch statistics)" if self.learn else "INFERENCE"

    def forward(self, x: Tensor) -> Tensor | tuple[Tensor, ...]:
        if not self.learn:
            return x * self.scale + self.shift
        dims = [0, *range(2, x.dim())]
        mean = x.mean(dim=dims, keepdim=True)
        variance = (x * x).mean(dim=dims, keepdim=True) - mean * mean
        y = (x - mean) / torch.sqrt(variance + 1e-9) * self.scale + self.shift
        if self.tops > 1:
            return (y, mean.reshape(1, -1, 1, 1), variance.reshape(1, -1, 1, 1))[: self.tops]
        return y


class MovingBN(nn.Module):
    """The four-blob BN: ``(x - mean) * inv_std * slope + bias`` with the stored moving mean and
    the stored statistic (PSPNet's variance: ``inv_std = (variance + eps) ** -0.5``;
    brocolli-caffe's inverse std as it is) in TEST or when ``frozen``; the batch's own mean and
    biased variance otherwise, and then (in training mode) the stored statistics move towards the
    batch's: ``stored = (1 - momentum) batch + momentum stored``, as both forks' forward does.

    ``fixed_mults`` holds the ``(lr_mult, decay_mult)`` PSPNet's layer imposes on its blobs (the
    statistics never learn; with ``frozen`` nothing does); brocolli-caffe imposes none."""

    def __init__(
        self,
        channels: int,
        batch_statistics: bool,
        eps: float,
        stores_variance: bool,
        momentum: float = 0.9,
        frozen: bool = False,
    ) -> None:
        super().__init__()
        self.batch_statistics, self.eps, self.stores_variance = batch_statistics, eps, stores_variance
        self.momentum, self.frozen = momentum, frozen
        self.statistic = "variance" if stores_variance else "inv_std"
        for name in ("slope", "bias", "mean", self.statistic):
            setattr(self, name, nn.Parameter(torch.empty(1, channels, 1, 1, device="meta")))
        self.fixed_mults: dict[int, tuple[float, float]] = {}

    def extra_repr(self) -> str:
        kind = "batch statistics" if self.batch_statistics else f"moving mean and {self.statistic}"
        return f"{kind}, eps={self.eps}"

    def forward(self, x: Tensor) -> Tensor:
        if self.batch_statistics:
            dims = [0, *range(2, x.dim())]
            mean = x.mean(dim=dims, keepdim=True)
            centred = x - mean
            variance = centred.pow(2).mean(dim=dims, keepdim=True)
            inv_std = torch.pow(variance + self.eps, -0.5)
            if self.training and not x.is_meta:
                self._move(mean, variance if self.stores_variance else inv_std)
            return centred * inv_std * self.slope + self.bias
        slope, bias, mean, stored = (getattr(self, n) for n in ("slope", "bias", "mean", self.statistic))
        if self.frozen:  # both forks' backward gives a frozen layer's blobs no diff
            slope, bias, mean, stored = (t.detach() for t in (slope, bias, mean, stored))
        inv_std = torch.pow(stored + self.eps, -0.5) if self.stores_variance else stored
        return (x - mean) * inv_std * slope + bias

    @torch.no_grad()
    def _move(self, mean: Tensor, statistic: Tensor) -> None:
        keep = torch.tensor(self.momentum, dtype=torch.float32)
        take = torch.tensor(1, dtype=torch.float32) - keep  # the fork's Dtype(1) - momentum, in float
        stored = getattr(self, self.statistic)
        self.mean.copy_(take * mean.detach().reshape(self.mean.shape) + keep * self.mean)
        stored.copy_(take * statistic.detach().reshape(stored.shape) + keep * stored)


_MOVING_FIELDS = ("slope_filler", "bias_filler", "momentum", "eps", "frozen")


@register_layer("BN", bottoms=1, tops=(1, 3))
def bn(ctx: LayerContext) -> Converted:
    """SegNet's BN (``LEARN`` may add the batch mean and variance as tops 2 and 3), or the
    four-blob BN of PSPNet / brocolli-caffe."""
    ctx.legacy_bottoms(0)
    p = ctx.param("bn_param")
    channels = ctx.channels(1, 0, lambda s: s[1] if len(s) == 4 else s[-1])
    four = any(k in p for k in _MOVING_FIELDS) or bool(ctx.blob_shapes and len(ctx.blob_shapes) == 4)
    if four:
        if "bn_mode" in p or "scale_filler" in p or "shift_filler" in p:
            raise ValueError(f"{ctx.where}: bn_param mixes SegNet's fields with the four-blob BN's")
        if len(ctx.tops) != 1:
            raise ValueError(f"{ctx.where}: the four-blob BN has one top, not {len(ctx.tops)}")
        stored = tuple(ctx.blob_shapes[0]) if ctx.blob_shapes else (1, channels, 1, 1)
        stores_variance = len(stored) != 2  # brocolli-caffe's blobs are 1 x C
        frozen = bool(p.get("frozen"))
        module = MovingBN(
            channels, not frozen and ctx.phase == "TRAIN", float(p.get("eps")), stores_variance,
            float(p.get("momentum")), frozen,
        )  # fmt: skip
        if stores_variance:  # PSPNet's LayerSetUp: statistics never learn; frozen, nothing does
            module.fixed_mults = {i: (0.0, 0.0) for i in ((0, 1, 2, 3) if frozen else (2, 3))}
        # PSPNet starts the moving variance at 1 when frozen and at 0 otherwise; brocolli at 1
        last = CONSTANT_ONE if frozen or not stores_variance else CONSTANT_ZERO
        return Converted(
            module=module,
            blobs=[(name, stored) for name in ("slope", "bias", "mean", module.statistic)],
            fillers=[p.get("slope_filler", None), p.get("bias_filler", None), CONSTANT_ZERO, last],
        )
    learn = str(p.get("bn_mode")) == "LEARN"
    if len(ctx.tops) > 1 and not learn:
        raise ValueError(f"{ctx.where}: only bn_mode LEARN has the batch mean and variance tops")
    shape = (1, channels, 1, 1)
    return Converted(
        module=SegNetBN(channels, learn, tops=len(ctx.tops)),
        blobs=[("scale", shape), ("shift", shape)],
        fillers=[p.get("scale_filler", None), p.get("shift_filler", None)],
        outputs=len(ctx.tops),
    )
