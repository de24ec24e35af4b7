"""InnerProduct: the axes from ``axis`` on flattened, then a matrix product with Caffe's weight layout."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .fillers import weight_and_bias_fillers
from .registry import Converted, LayerContext, canonical_axis, register_layer


def inner_product(x: Tensor, weight: Tensor, bias: Tensor | None, axis: int, transpose: bool) -> Tensor:
    """Caffe's InnerProduct: axes ``axis..`` flattened, then a matrix product."""
    axis = axis + x.dim() if axis < 0 else axis
    flat = x.flatten(axis) if axis < x.dim() - 1 else x
    return F.linear(flat, weight.t() if transpose else weight, bias)


class InnerProduct(nn.Module):
    """Caffe's InnerProduct: axes ``axis..`` flattened, then ``x @ W.T + b`` (``W`` stored as Caffe does)."""

    def __init__(self, in_features: int, out_features: int, bias: bool, axis: int, transpose: bool) -> None:
        super().__init__()
        shape = (in_features, out_features) if transpose else (out_features, in_features)
        self.weight = nn.Parameter(torch.empty(shape, device="meta"))
        self.bias = nn.Parameter(torch.empty(out_features, device="meta")) if bias else None
        self.axis = axis
        self.transpose = transpose

    def extra_repr(self) -> str:
        return f"weight={tuple(self.weight.shape)}, axis={self.axis}, transpose={self.transpose}"

    def forward(self, x: Tensor) -> Tensor:
        return inner_product(x, self.weight, self.bias, self.axis, self.transpose)


@register_layer("InnerProduct", bottoms=1, tops=1)
def inner_product_layer(ctx: LayerContext) -> Converted:
    p = ctx.param("inner_product_param")
    axis = int(p.get("axis"))
    transpose = bool(p.get("transpose"))
    out_features = int(p.get("num_output"))
    shape = ctx.bottom_shapes[0]
    if shape is not None:
        start = canonical_axis(axis, len(shape))
        in_features = math.prod(shape[start:])
    elif ctx.blob_shapes:
        stored = ctx.blob_shapes[0]
        in_features = stored[-2] if transpose else stored[-1]
    else:
        ctx.bottom_shape(0)
        raise AssertionError
    bias = bool(p.get("bias_term"))
    module = InnerProduct(in_features, out_features, bias, axis, transpose)
    blobs = [("weight", tuple(module.weight.shape))]
    if bias:
        blobs.append(("bias", (out_features,)))
    return Converted(module=module, blobs=blobs, fillers=weight_and_bias_fillers(p, bias))
