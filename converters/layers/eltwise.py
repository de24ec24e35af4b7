"""Eltwise: SUM (with coefficients), PROD and MAX of same-shaped bottoms."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ..errors import NetError
from .registry import Converted, LayerContext, register_layer


def eltwise_sum(*xs: Tensor, coeffs: Sequence[float] = ()) -> Tensor:
    """Caffe's Eltwise SUM, with optional per-bottom coefficients."""
    if not coeffs:
        out = xs[0]
        for x in xs[1:]:
            out = out + x
        return out
    out = xs[0] * coeffs[0] if coeffs[0] != 1 else xs[0]
    for x, c in zip(xs[1:], coeffs[1:], strict=True):
        out = out + x * c if c != 1 else out + x
    return out


def eltwise_prod(*xs: Tensor) -> Tensor:
    """Caffe's Eltwise PROD."""
    out = xs[0]
    for x in xs[1:]:
        out = out * x
    return out


def eltwise_max(*xs: Tensor) -> Tensor:
    """Caffe's Eltwise MAX."""
    out = xs[0]
    for x in xs[1:]:
        out = torch.maximum(out, x)
    return out


@register_layer("Eltwise", bottoms=(2, None), tops=1)
def eltwise(ctx: LayerContext) -> Converted:
    p = ctx.param("eltwise_param")
    operation = str(p.get("operation"))
    coeffs = tuple(float(c) for c in p.get("coeff"))
    if coeffs and operation != "SUM":
        raise ValueError(f"layer '{ctx.name}': Eltwise coefficients only apply to SUM")
    if coeffs and len(coeffs) != len(ctx.bottoms):
        raise ValueError(f"layer '{ctx.name}': {len(coeffs)} coefficients for {len(ctx.bottoms)} bottoms")
    first = ctx.bottom_shape(0)
    for name, shape in zip(ctx.bottoms[1:], ctx.bottom_shapes[1:], strict=True):
        if shape is not None and shape != first:  # BVLC's Reshape CHECK (the oracle's fork dropped it)
            raise NetError(
                f"{ctx.where}: all bottoms must have the same shape; '{ctx.bottoms[0]}' is {list(first)}, "
                f"'{name}' is {list(shape)}"
            )
    if operation == "SUM":
        return Converted(function=eltwise_sum, kwargs={"coeffs": coeffs} if coeffs else {}, keeps_shape=True)
    if operation == "PROD":
        return Converted(function=eltwise_prod, keeps_shape=True)
    return Converted(function=eltwise_max, keeps_shape=True)
