"""Scale and Bias: a learned (or second-bottom) factor or offset broadcast from ``axis`` on."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..errors import NetError
from .fillers import CONSTANT_ONE, CONSTANT_ZERO
from .registry import Converted, LayerContext, Shape, canonical_axis, register_layer


def scale_by_blob(x: Tensor, scale: Tensor, axis: int, bias: Tensor | None = None) -> Tensor:
    """``x * scale (+ bias)``, with ``scale``'s axes aligned to ``x``'s axes from ``axis`` on."""
    axis = axis + x.dim() if axis < 0 else axis
    shape = [1] * axis + list(scale.shape) + [1] * (x.dim() - axis - scale.dim())
    y = x * scale.reshape(shape)
    if bias is not None:
        y = y + bias.reshape(shape)
    return y


class Scale(nn.Module):
    """Caffe's Scale: ``x * scale (+ bias)``, the scale learned or given as a second bottom."""

    def __init__(self, axis: int, shape: Shape | None, bias_shape: Shape | None) -> None:
        super().__init__()
        self.axis = axis
        self.weight = nn.Parameter(torch.empty(shape, device="meta")) if shape is not None else None
        self.bias = nn.Parameter(torch.empty(bias_shape, device="meta")) if bias_shape is not None else None

    def extra_repr(self) -> str:
        return f"axis={self.axis}, learned={self.weight is not None}, bias={self.bias is not None}"

    def forward(self, x: Tensor, scale: Tensor | None = None) -> Tensor:
        return scale_by_blob(x, self.weight if scale is None else scale, self.axis, self.bias)


def _scale_shape(ctx: LayerContext, axis: int, num_axes: int, what: str) -> tuple[int, Shape]:
    shape = ctx.bottom_shape(0)
    start = canonical_axis(axis, len(shape), ctx.where)
    end = len(shape) if num_axes == -1 else start + num_axes
    if not 0 <= start <= end <= len(shape):
        raise ValueError(
            f"layer '{ctx.name}': {what} axis {axis}, num_axes {num_axes} do not fit {list(shape)}"
        )
    return start, tuple(shape[start:end])


def _second_bottom_axis(ctx: LayerContext, axis: int) -> int:
    """The axis a second-bottom scale or bias starts at, its shape checked as BVLC's ``Reshape``
    checks it: it must match the first bottom's axes from there (a 0-axis one applies anywhere)."""
    shape, other = ctx.bottom_shape(0), ctx.bottom_shape(1)
    start = 0 if len(other) == 0 else canonical_axis(axis, len(shape), ctx.where)
    if tuple(shape[start : start + len(other)]) != tuple(other):
        raise NetError(
            f"{ctx.where}: bottom '{ctx.bottoms[1]}' of shape {list(other)} does not match bottom "
            f"'{ctx.bottoms[0]}' {list(shape)} from axis {start}"
        )
    return start


@register_layer("Scale", bottoms=(1, 2), tops=1)
def scale(ctx: LayerContext) -> Converted:
    p = ctx.param("scale_param")
    bias = bool(p.get("bias_term"))
    if len(ctx.bottoms) == 2:
        start = _second_bottom_axis(ctx, int(p.get("axis")))
        bias_shape = tuple(ctx.bottom_shape(1)) if bias else None
        module = Scale(start, None, bias_shape)
        blobs = [("bias", bias_shape)] if bias_shape is not None else []
        fillers = [p.get("bias_filler") if "bias_filler" in p else CONSTANT_ZERO] if bias else []
        return Converted(module=module, blobs=blobs, fillers=fillers, keeps_shape=True)
    start, shape = _scale_shape(ctx, int(p.get("axis")), int(p.get("num_axes")), "scale")
    module = Scale(start, shape, shape if bias else None)
    blobs = [("weight", shape)] + ([("bias", shape)] if bias else [])
    fillers = [p.get("filler") if "filler" in p else CONSTANT_ONE]
    if bias:
        fillers.append(p.get("bias_filler") if "bias_filler" in p else CONSTANT_ZERO)
    return Converted(module=module, blobs=blobs, fillers=fillers, keeps_shape=True)


class Bias(nn.Module):
    """Caffe's Bias: ``x + bias``, the bias learned or given as a second bottom."""

    def __init__(self, axis: int, shape: Shape | None) -> None:
        super().__init__()
        self.axis = axis
        self.bias = nn.Parameter(torch.empty(shape, device="meta")) if shape is not None else None

    def forward(self, x: Tensor, bias: Tensor | None = None) -> Tensor:
        b = self.bias if bias is None else bias
        shape = [1] * self.axis + list(b.shape) + [1] * (x.dim() - self.axis - b.dim())
        return x + b.reshape(shape)


@register_layer("Bias", bottoms=(1, 2), tops=1)
def bias_layer(ctx: LayerContext) -> Converted:
    p = ctx.param("bias_param")
    if len(ctx.bottoms) == 2:
        return Converted(module=Bias(_second_bottom_axis(ctx, int(p.get("axis"))), None), keeps_shape=True)
    start, shape = _scale_shape(ctx, int(p.get("axis")), int(p.get("num_axes")), "bias")
    fillers = [p.get("filler") if "filler" in p else CONSTANT_ZERO]
    return Converted(module=Bias(start, shape), blobs=[("bias", shape)], fillers=fillers, keeps_shape=True)
