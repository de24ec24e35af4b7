"""The one registry of layer converters.

A converter receives a :class:`LayerContext` (the layer's parameters, its bottoms' shapes, its
stored blobs' shapes) and returns a :class:`Converted`: a module or a function to call on the
bottoms, plus where each Caffe blob of the layer goes. Adding a layer type is one decorated
function in one module::

    @converters.register_layer("MyLayer")
    def my_layer(ctx):
        return Converted(function=torch.sigmoid, keeps_shape=True)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from torch import nn

from ..caffe.message import Message
from ..errors import UnsupportedLayerError

Shape = tuple[int, ...]

__all__ = [
    "Converted",
    "Converter",
    "LayerContext",
    "Shape",
    "UnsupportedLayerError",
    "canonical_axis",
    "converter_for",
    "register_layer",
    "registered_types",
    "unregister_layer",
]


@dataclasses.dataclass
class LayerContext:
    """Everything a converter may use about one layer."""

    layer: Message
    name: str
    type: str
    bottoms: list[str]
    tops: list[str]
    bottom_shapes: list[Shape | None]
    blob_shapes: list[Shape] | None
    """Shapes of the layer's blobs in the weights file (legacy 4-D shapes as stored), if any."""
    phase: str

    def param(self, field: str) -> Message:
        """The layer's ``<type>_param`` message (schema defaults when absent)."""
        return self.layer.get(field)

    @property
    def where(self) -> str:
        """How errors name this layer: ``layer 'name' (Type)``."""
        return f"layer '{self.name}' ({self.type})"

    def bottom_shape(self, index: int = 0) -> Shape:
        """The shape of bottom ``index``; an error naming the blob when it is unknown."""
        shape = self.bottom_shapes[index]
        if shape is None:
            raise ValueError(
                f"{self.where}: the shape of bottom '{self.bottoms[index]}' is "
                "unknown; give the input shapes (input_shapes=...)"
            )
        return shape

    def channels(self, axis: int = 1, blob: int = 0, from_blob: Callable[[Shape], int] | None = None) -> int:
        """The size of ``axis`` of bottom 0, or else what the stored blob ``blob`` implies."""
        shape = self.bottom_shapes[0] if self.bottom_shapes else None
        if shape is not None:
            return shape[canonical_axis(axis, len(shape), self.where)]
        if self.blob_shapes and from_blob is not None and len(self.blob_shapes) > blob:
            return from_blob(self.blob_shapes[blob])
        return self.bottom_shape(0)[axis]


@dataclasses.dataclass
class Converted:
    """A converter's answer.

    Exactly one of ``module`` (called as ``self.<layer>(*bottoms)``) and ``function`` (called as
    ``function(*bottoms, **kwargs)``) is set, unless the layer has no computation (``role``
    ``"input"`` or ``"silence"``). ``blobs`` lists, in Caffe's blob order, the module attribute
    each stored blob loads into and the shape Caffe gives that blob. ``outputs`` > 1 means the call
    returns a tuple, one item per top; ``same_for_all_tops`` means every top gets the one result
    (Split).
    """

    module: nn.Module | None = None
    function: Callable[..., Any] | None = None
    kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    blobs: list[tuple[str, Shape]] = dataclasses.field(default_factory=list)
    fillers: list[Message | None] = dataclasses.field(default_factory=list)
    outputs: int = 1
    same_for_all_tops: bool = False
    role: str = "op"
    keeps_shape: bool = False
    """The single output has its (first) bottom's shape: no shape inference run needed."""
    output_shape: Callable[[list[Shape]], Shape | list[Shape]] | None = None
    """The output shape (a list of them for several outputs) from the bottoms' shapes, where
    running the op on meta tensors is slow or impossible."""


Converter = Callable[[LayerContext], Converted]
_CONVERTERS: dict[str, Converter] = {}


def register_layer(*types: str, override: bool = False) -> Callable[[Converter], Converter]:
    """Register a converter function for one or more Caffe layer type names.

    A type that already has a converter is refused unless ``override=True`` (a user replacing a
    built-in converter must say so)."""
    if not types or not all(isinstance(t, str) and t for t in types):
        raise TypeError("register_layer takes one or more layer type names, e.g. register_layer('Interp')")

    def decorate(function: Converter) -> Converter:
        taken = [t for t in types if t in _CONVERTERS and _CONVERTERS[t] is not function]
        if taken and not override:
            owner = _CONVERTERS[taken[0]]
            raise ValueError(
                f"layer type '{taken[0]}' already has a converter ({owner.__module__}.{owner.__qualname__}); "
                "pass override=True to replace it"
            )
        for layer_type in types:
            _CONVERTERS[layer_type] = function
        return function

    return decorate


def registered_types() -> list[str]:
    """Every layer type with a converter, sorted."""
    return sorted(_CONVERTERS)


def converter_for(layer_type: str, layer_name: str) -> Converter:
    """The converter of ``layer_type``, or an :class:`UnsupportedLayerError` naming the layer."""
    try:
        return _CONVERTERS[layer_type]
    except KeyError:
        raise UnsupportedLayerError(
            f"layer '{layer_name}' has type '{layer_type}', which fcn-port cannot convert; "
            "add it with @converters.register_layer (see docs/ARCHITECTURE.md) "
            f"or check the spelling ({len(_CONVERTERS)} types are known: converters.registered_types())"
        ) from None


def canonical_axis(axis: int, ndim: int, where: str = "axis") -> int:
    """``axis`` in ``[0, ndim)`` (negative counts from the end), as Caffe's ``CanonicalAxisIndex``
    checks it."""
    if not -ndim <= axis < ndim:
        raise ValueError(f"{where}: axis {axis} is out of range for a {ndim}-axis blob")
    return axis + ndim if axis < 0 else axis


def unregister_layer(layer_type: str) -> None:
    """Forget the converter of ``layer_type`` (for tests and plugins that clean up after themselves)."""
    _CONVERTERS.pop(layer_type, None)
