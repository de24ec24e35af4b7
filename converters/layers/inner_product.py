"""InnerProduct: the axes from ``axis`` on flattened, then a matrix product with Caffe's weight layout."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import NetError
from .fillers import weight_and_bias_fillers
from .registry import Converted, LayerContext, canonical_axis, register_layer
from .tracing import index_out_of_range


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
    ctx.refuse_in_place("Caffe's matrix product then writes the blob it is still reading")
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


class Embed(nn.Module):
    """Caffe's Embed: each input value, an integer index below ``input_dim``, replaced by its row of
    the ``input_dim x num_output`` weight (plus the bias); the top is the bottom's shape plus the
    output axis. An index out of range stops Caffe; it is one line here."""

    def __init__(self, input_dim: int, num_output: int, bias: bool) -> None:
        super().__init__()
        self.input_dim = input_dim
        self.weight = nn.Parameter(torch.empty(input_dim, num_output, device="meta"))
        self.bias = nn.Parameter(torch.empty(num_output, device="meta")) if bias else None

    def forward(self, index: Tensor) -> Tensor:
        rows = index.to(torch.int64)  # Caffe: static_cast<int> of the stored float
        bad = index_out_of_range(rows, self.input_dim)
        if bad is not None:
            raise NetError(f"Embed: index {bad} is outside [0, {self.input_dim})")
        out = F.embedding(rows, self.weight)
        return out + self.bias if self.bias is not None else out


@register_layer("Embed", bottoms=1, tops=1)
def embed(ctx: LayerContext) -> Converted:
    p = ctx.param("embed_param")
    input_dim, num_output = int(p.get("input_dim")), int(p.get("num_output"))
    if input_dim < 1 or num_output < 1:
        raise ValueError(f"{ctx.where}: embed_param needs input_dim and num_output of at least 1")
    bias = bool(p.get("bias_term"))
    blobs = [("weight", (input_dim, num_output))] + ([("bias", (num_output,))] if bias else [])
    module = Embed(input_dim, num_output, bias)
    return Converted(module=module, blobs=blobs, fillers=weight_and_bias_fillers(p, bias))
