"""Layers that move blobs rather than compute: data layers (the graph's inputs), Silence, Split,
Dropout (identity at test time)."""

from __future__ import annotations

from torch import Tensor, nn

from ..caffe.traits import DATA_LAYER_TYPES
from ..errors import UnsupportedLayerError
from .registry import Converted, LayerContext, register_layer


def data_layer(ctx: LayerContext) -> Converted:
    """A layer that reads data from outside the net: its tops are the graph's inputs."""
    if ctx.bottoms:  # only Python layers get here: the other data types take no bottoms
        raise UnsupportedLayerError(
            f"{ctx.where} has bottoms: it computes in Python code that fcn-port cannot run; "
            "add a converter for it with @converters.register_layer('Python', override=True)"
        )
    return Converted(role="input")


# Caffe's bottom/top counts of each data layer type (ExactNumTopBlobs, MinTopBlobs, MaxTopBlobs).
_DATA_TOPS = {"Data": (1, 2), "ImageData": 2, "MemoryData": 2, "WindowData": 2, "AnnotatedData": (1, 2)}
for _type in sorted(DATA_LAYER_TYPES - {"Python"}):
    register_layer(_type, bottoms=0, tops=_DATA_TOPS.get(_type, (1, None)))(data_layer)
register_layer("Python")(data_layer)  # a Python layer's counts are its code's business


@register_layer("Silence", bottoms=(1, None), tops=0)
def silence(ctx: LayerContext) -> Converted:
    return Converted(role="silence")


def identity(x: Tensor) -> Tensor:
    """The blob itself (Split's tops all share their bottom's data)."""
    return x


@register_layer("Split", bottoms=1, tops=(1, None))
def split(ctx: LayerContext) -> Converted:
    return Converted(function=identity, same_for_all_tops=True)


@register_layer("Dropout", bottoms=1, tops=1)
def dropout(ctx: LayerContext) -> Converted:
    """Caffe's Dropout: identity in eval mode; in train mode each element is kept with probability
    1 - ratio and scaled by 1 / (1 - ratio) (``nn.Dropout`` does this arithmetic; Caffe's random
    masks themselves cannot be reproduced)."""
    ratio = float(ctx.param("dropout_param").get("dropout_ratio"))
    if not 0 <= ratio < 1:
        raise ValueError(f"{ctx.where}: dropout_ratio must be in [0, 1), got {ratio}")
    return Converted(module=nn.Dropout(ratio), keeps_shape=True)
