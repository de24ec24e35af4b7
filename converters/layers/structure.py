"""Layers that move blobs rather than compute: data layers (the graph's inputs), Silence, Split,
Dropout (identity at test time)."""

from __future__ import annotations

from torch import Tensor, nn

from ..caffe.traits import DATA_LAYER_TYPES
from .registry import Converted, LayerContext, register_layer


@register_layer(*sorted(DATA_LAYER_TYPES))
def data_layer(ctx: LayerContext) -> Converted:
    return Converted(role="input")


@register_layer("Silence")
def silence(ctx: LayerContext) -> Converted:
    return Converted(role="silence")


def identity(x: Tensor) -> Tensor:
    """The blob itself (Split's tops all share their bottom's data)."""
    return x


@register_layer("Split")
def split(ctx: LayerContext) -> Converted:
    return Converted(function=identity, same_for_all_tops=True)


@register_layer("Dropout")
def dropout(ctx: LayerContext) -> Converted:
    ratio = float(ctx.param("dropout_param").get("dropout_ratio"))
    return Converted(module=nn.Dropout(ratio), keeps_shape=True)
