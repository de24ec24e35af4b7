"""Coordinate mapping through a Caffe net: crop offsets, receptive field, stride.

Every spatial layer relates the coordinates of its top to those of its bottom affinely, per spatial
axis: ``bottom = scale * top + shift``.

- Convolution, Pooling, Im2col: ``scale = stride``, ``shift = (kernel - 1) / 2 * dilation - pad``.
- Deconvolution: the inverse, ``scale = 1 / stride``,
  ``shift = (pad - (kernel - 1) / 2 * dilation) / stride``.
- Crop: ``bottom = top + offset`` (first bottom only; the second only gives the size).
- Pointwise layers (ReLU, Dropout, Eltwise, LRN, Scale, BatchNorm, ...) and channel Concat: identity.
- Anything else (InnerProduct, data layers, global pooling, Reshape ...): no mapping; walks stop there.

A Crop layer's offset is derived as the official net specification derives it (pycaffe's
``coord_map.crop``): walk back from the blob to crop and from the reference blob to their first
common ancestor, compose the maps, and require the result to be a pure integer shift ``>= 0``
(equal scales, integral offset). Arithmetic is exact (fractions), so "not integral" is exact too.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Iterable
from fractions import Fraction

from ..errors import CaffeFormatError, GeometryError
from .message import Message
from .netdef import filter_layers
from .traits import CONVOLUTION_TYPES, DATA_LAYER_TYPES, POINTWISE_TYPES, concat_axis, window

__all__ = [
    "CoordMap",
    "GeometryError",
    "coord_map",
    "crop_offsets",
    "fill_crop_offsets",
    "max_stride",
    "receptive_field",
]

Vec = tuple[Fraction, ...]


# ----------------------------------------------------------------------------------------------
# Affine maps


def _broadcast(*vectors: Vec) -> list[Vec]:
    length = max(len(v) for v in vectors)
    out = []
    for v in vectors:
        if len(v) == length:
            out.append(tuple(v))
        elif len(v) == 1:
            out.append(tuple(v) * length)
        else:
            raise GeometryError(f"spatial parameters of {len(v)} and {length} axes do not match")
    return out


@dataclasses.dataclass(frozen=True)
class CoordMap:
    """``there = scale * here + shift`` per spatial axis (length-1 tuples apply to every axis).

    ``axis`` is the first spatial axis the map concerns (``None``: any, as for pointwise layers).
    """

    axis: int | None
    scale: Vec
    shift: Vec

    @staticmethod
    def identity() -> CoordMap:
        return CoordMap(None, (Fraction(1),), (Fraction(0),))

    def __call__(self, coordinate: Fraction | int) -> Vec:
        """The image of ``coordinate`` (the same value on every axis)."""
        return tuple(a * coordinate + b for a, b in zip(self.scale, self.shift, strict=True))

    def then(self, outer: CoordMap) -> CoordMap:
        """The map ``outer(self(x))``."""
        if self.axis is None:
            axis = outer.axis
        elif outer.axis is None or outer.axis == self.axis:
            axis = self.axis
        else:
            raise GeometryError(
                f"maps over spatial axes from {self.axis} and from {outer.axis} do not compose"
            )
        a1, b1, a2, b2 = _broadcast(self.scale, self.shift, outer.scale, outer.shift)
        return CoordMap(
            axis,
            tuple(x * y for x, y in zip(a2, a1, strict=True)),
            tuple(a * b + c for a, b, c in zip(a2, b1, b2, strict=True)),
        )

    def inverse(self) -> CoordMap:
        """The map back: ``here = (there - shift) / scale``."""
        return CoordMap(
            self.axis,
            tuple(1 / a for a in self.scale),
            tuple(-b / a for a, b in zip(self.scale, self.shift, strict=True)),
        )


# ----------------------------------------------------------------------------------------------
# Layer parameters


def _fractions(values: Iterable[int | float]) -> Vec:
    return tuple(Fraction(v) for v in values)


def _window(layer: Message) -> tuple[int, Vec, Vec, Vec] | None:
    """``(first spatial axis, stride, effective kernel, pad)`` of a conv/deconv/pooling layer,
    or ``None`` for global pooling."""
    try:
        w = window(layer)
    except CaffeFormatError as exc:
        raise GeometryError(str(exc)) from None
    if w.global_pooling:
        return None
    return w.axis, _fractions(w.stride), _fractions(w.effective_kernel), _fractions(w.pad)


def _written_crop(layer: Message) -> tuple[int, tuple[int, ...]]:
    p = layer.get("crop_param")
    return int(p.get("axis")), tuple(int(v) for v in p.get("offset")) or (0,)


def _is_channel_concat(layer: Message) -> bool:
    return concat_axis(layer) == 1


def _layer_map(layer: Message, crops: dict[str, tuple[int, tuple[int, ...]]]) -> CoordMap | None:
    """The map from a layer's top coordinates to its (mapped) bottoms' coordinates, if defined."""
    kind = str(layer.get("type"))
    if kind in CONVOLUTION_TYPES or kind == "Pooling":
        window = _window(layer)
        if window is None:
            return None
        axis, stride, kernel, pad = window
        stride, kernel, pad = _broadcast(stride, kernel, pad)
        centre = tuple((k - 1) / 2 for k in kernel)
        if kind == "Deconvolution":
            return CoordMap(
                axis,
                tuple(1 / s for s in stride),
                tuple((p - c) / s for s, c, p in zip(stride, centre, pad, strict=True)),
            )
        return CoordMap(axis, stride, tuple(c - p for c, p in zip(centre, pad, strict=True)))
    if kind in POINTWISE_TYPES or (kind == "Concat" and _is_channel_concat(layer)):
        return CoordMap.identity()
    if kind == "Crop":
        axis, offset = crops.get(layer.get("name")) or _written_crop(layer)
        return CoordMap(axis, (Fraction(1),), _fractions(offset))
    return None


def _mapped_bottoms(layer: Message, bottoms: list[int]) -> list[int]:
    return bottoms[:1] if str(layer.get("type")) == "Crop" else bottoms


# ----------------------------------------------------------------------------------------------
# The blob graph (every in-place write is a new version of the blob)


class _Graph:
    def __init__(self, net: Message, phase: str = "TEST") -> None:
        self.layers: list[Message] = filter_layers(net, phase)
        self.names: list[str] = []  # node -> blob name
        self.producer: list[int | None] = []  # node -> layer index
        self.bottoms: list[list[int]] = []
        self.tops: list[list[int]] = []
        self.latest: dict[str, int] = {}
        for index, layer in enumerate(self.layers):
            bottoms = []
            for name in layer.getall("bottom"):
                if name not in self.latest:
                    self.latest[name] = self._node(name, None)
                bottoms.append(self.latest[name])
            tops = []
            for name in layer.getall("top"):
                self.latest[name] = self._node(name, index)
                tops.append(self.latest[name])
            self.bottoms.append(bottoms)
            self.tops.append(tops)

    def _node(self, name: str, producer: int | None) -> int:
        self.names.append(name)
        self.producer.append(producer)
        return len(self.names) - 1

    def blob(self, name: str) -> int:
        if name not in self.latest:
            raise GeometryError(f"the net has no blob '{name}'")
        return self.latest[name]

    def layer_index(self, name: str) -> int:
        for index, layer in enumerate(self.layers):
            if layer.get("name") == name:
                return index
        raise GeometryError(f"the net has no layer '{name}'")

    def walk_back(self, start: int, crops: dict[str, tuple[int, tuple[int, ...]]]) -> dict[int, CoordMap]:
        """Breadth-first from ``start`` through mapped layers: node -> map from start's coordinates
        to the node's coordinates.
        """
        maps = {start: CoordMap.identity()}
        queue = deque([start])
        while queue:
            node = queue.popleft()
            index = self.producer[node]
            if index is None:
                continue
            layer = self.layers[index]
            step = _layer_map(layer, crops)
            if step is None:
                continue
            for bottom in _mapped_bottoms(layer, self.bottoms[index]):
                if bottom not in maps:
                    maps[bottom] = maps[node].then(step)
                    queue.append(bottom)
        return maps


# ----------------------------------------------------------------------------------------------
# Crops


def _map_between(graph: _Graph, source: int, target: int, crops: dict) -> CoordMap:
    """The map from ``target`` coordinates to ``source`` coordinates via their first common ancestor."""
    from_maps = graph.walk_back(source, crops)
    to_maps = graph.walk_back(target, crops)
    common = next((node for node in to_maps if node in from_maps), None)
    if common is None:
        raise GeometryError(
            f"blobs '{graph.names[source]}' and '{graph.names[target]}' are not connected by spatial layers"
        )
    return to_maps[common].then(from_maps[common].inverse())


def coord_map(net: Message, blob: str, reference: str, *, phase: str = "TEST") -> CoordMap:
    """The map from coordinates of blob ``reference`` to coordinates of blob ``blob`` (latest
    versions of both), through their first common ancestor; crops use their written offsets.
    """
    graph = _Graph(net, phase)
    return _map_between(graph, graph.blob(blob), graph.blob(reference), {})


def _derive_crop(graph: _Graph, index: int, crops: dict) -> tuple[int, tuple[int, ...]]:
    layer = graph.layers[index]
    name = layer.get("name")
    bottoms = graph.bottoms[index]
    if len(bottoms) != 2:
        raise GeometryError(f"crop layer '{name}' needs two bottoms, has {len(bottoms)}")
    try:
        mapping = _map_between(graph, bottoms[0], bottoms[1], crops)
    except GeometryError as error:
        raise GeometryError(f"crop layer '{name}': {error}") from None
    if any(a != 1 for a in mapping.scale):
        ratio = ", ".join(str(a) for a in mapping.scale)
        raise GeometryError(
            f"crop layer '{name}': '{graph.names[bottoms[0]]}' and '{graph.names[bottoms[1]]}' have "
            f"different scales (ratio {ratio})"
        )
    if any(b.denominator != 1 for b in mapping.shift):
        raise GeometryError(
            f"crop layer '{name}': the offset {', '.join(str(b) for b in mapping.shift)} is not integral"
        )
    if any(b < 0 for b in mapping.shift):
        raise GeometryError(
            f"crop layer '{name}': negative offset {', '.join(str(b) for b in mapping.shift)} "
            f"('{graph.names[bottoms[0]]}' is smaller than '{graph.names[bottoms[1]]}')"
        )
    axis = 2 if mapping.axis is None else mapping.axis
    return axis, tuple(int(b) for b in mapping.shift)


def _crop_geometry(graph: _Graph, derive: set[str] | None) -> dict[str, tuple[int, tuple[int, ...]]]:
    crops: dict[str, tuple[int, tuple[int, ...]]] = {}
    for index, layer in enumerate(graph.layers):
        if str(layer.get("type")) != "Crop":
            continue
        name = layer.get("name")
        if derive is None or name in derive:
            crops[name] = _derive_crop(graph, index, crops)
    return crops


def crop_offsets(net: Message, *, phase: str = "TEST") -> dict[str, tuple[int, ...]]:
    """For every Crop layer (in net order), the offsets derived from the geometry, as the official
    net specification computes them; offsets written in ``net`` are ignored (later crops see the
    derived offsets of earlier ones). Raises :class:`GeometryError` if a crop has no valid offset.
    """
    return {name: offset for name, (_, offset) in _crop_geometry(_Graph(net, phase), None).items()}


def fill_crop_offsets(net: Message, layer_names: Iterable[str] | None = None) -> None:
    """Write the derived ``crop_param { axis offset }`` into the named Crop layers of ``net`` (all
    Crop layers when ``None``), in place; the others keep their written offsets.
    """
    wanted = None if layer_names is None else set(layer_names)
    done: dict[str, tuple[int, tuple[int, ...]]] = {}
    for phase in ("TEST", "TRAIN"):
        done.update({k: v for k, v in _crop_geometry(_Graph(net, phase), wanted).items() if k not in done})
    missing = (wanted or set()) - set(done)
    if missing:
        raise GeometryError(f"no Crop layer named {', '.join(sorted(missing))}")
    for layer in net.getall("layer"):
        name = layer.get("name")
        if str(layer.get("type")) == "Crop" and name in done:
            axis, offset = done[name]
            layer.set("crop_param", Message("CropParameter", axis=axis, offset=list(offset)))


# ----------------------------------------------------------------------------------------------
# Receptive field and stride


@dataclasses.dataclass(frozen=True)
class _Span:
    """Unit ``x`` of a blob sees input coordinates ``[stride * x + low, stride * x + high]``."""

    stride: Vec
    low: Vec
    high: Vec
    max_stride: Vec
    exact: bool = True  # False once a Deconvolution (position-dependent window) is on a path


def _span(graph: _Graph, node: int, memo: dict[int, _Span]) -> _Span:
    if node in memo:
        return memo[node]
    index = graph.producer[node]
    one, zero = (Fraction(1),), (Fraction(0),)
    if index is None or str(graph.layers[index].get("type")) in DATA_LAYER_TYPES:
        memo[node] = _Span(one, zero, zero, one)
        return memo[node]
    layer = graph.layers[index]
    kind, name = str(layer.get("type")), layer.get("name")
    bottoms = graph.bottoms[index]
    tops = graph.tops[index]
    if len(bottoms) == len(tops) and len(tops) > 1:
        bottoms = [bottoms[tops.index(node)]]
    if (
        kind in CONVOLUTION_TYPES
        or kind == "Pooling"
        or (kind == "LRN" and str(layer.get("lrn_param").get("norm_region")) == "WITHIN_CHANNEL")
    ):
        if kind == "LRN":
            size = int(layer.get("lrn_param").get("local_size"))
            axis, stride, kernel, pad = 2, one, (Fraction(size),), (Fraction((size - 1) // 2),)
        else:
            window = _window(layer)
            if window is None:
                raise GeometryError(f"global pooling '{name}' sees the whole input")
            axis, stride, kernel, pad = window
        spans = [_span(graph, b, memo) for b in bottoms]
        below = _merge(spans, name)
        s, lo, hi, ms, st, k, p = _broadcast(
            below.stride, below.low, below.high, below.max_stride, stride, kernel, pad
        )
        if kind == "Deconvolution":
            # Top unit y sees bottom units in [(y + pad - kernel + 1) / stride, (y + pad) / stride].
            new_stride = tuple(a / b for a, b in zip(s, st, strict=True))
            result = _Span(
                new_stride,
                tuple(a + b * (d - c + 1) / e for a, b, c, d, e in zip(lo, s, k, p, st, strict=True)),
                tuple(a + b * d / e for a, b, d, e in zip(hi, s, p, st, strict=True)),
                ms,
                False,
            )
            memo[node] = result
            return result
        new_stride = tuple(a * b for a, b in zip(s, st, strict=True))
        result = _Span(
            new_stride,
            tuple(a - b * c for a, b, c in zip(lo, s, p, strict=True)),
            tuple(a + b * (c - 1 - d) for a, b, c, d in zip(hi, s, k, p, strict=True)),
            tuple(max(a, b) for a, b in zip(ms, new_stride, strict=True)),
            below.exact,
        )
    elif kind in POINTWISE_TYPES or (kind == "Concat" and _is_channel_concat(layer)):
        result = _merge([_span(graph, b, memo) for b in bottoms], name)
    elif kind == "Crop":
        below = _span(graph, bottoms[0], memo)
        _, offset = _written_crop(layer)
        s, lo, hi, ms, off = _broadcast(
            below.stride, below.low, below.high, below.max_stride, _fractions(offset)
        )
        result = _Span(
            s,
            tuple(a + b * c for a, b, c in zip(lo, s, off, strict=True)),
            tuple(a + b * c for a, b, c in zip(hi, s, off, strict=True)),
            ms,
            below.exact,
        )
    else:
        raise GeometryError(f"layer '{name}' ({kind}) has no spatial coordinate mapping")
    memo[node] = result
    return result


def _merge(spans: list[_Span], name: str) -> _Span:
    if len(spans) == 1:
        return spans[0]
    strides = _broadcast(*(s.stride for s in spans))
    if any(s != strides[0] for s in strides):
        raise GeometryError(f"layer '{name}' joins blobs of different strides")
    lows = _broadcast(*(s.low for s in spans))
    highs = _broadcast(*(s.high for s in spans))
    maxes = _broadcast(*(s.max_stride for s in spans))
    return _Span(
        strides[0],
        tuple(min(v) for v in zip(*lows, strict=True)),
        tuple(max(v) for v in zip(*highs, strict=True)),
        tuple(max(v) for v in zip(*maxes, strict=True)),
        all(s.exact for s in spans),
    )


def _as_int(values: Iterable[Fraction], what: str) -> int:
    values = list(values)
    biggest = max(values)
    if biggest.denominator != 1:
        raise GeometryError(f"{what} {biggest} is not an integer")
    return int(biggest)


def receptive_field(net: Message, blob: str, *, phase: str = "TEST") -> int:
    """The side, in input pixels, of the input window one unit of ``blob`` sees (the largest over
    spatial axes and over all paths from the inputs). Raises :class:`GeometryError` for paths
    through layers with no fixed window (Deconvolution, InnerProduct, global pooling ...).
    """
    graph = _Graph(net, phase)
    span = _span(graph, graph.blob(blob), {})
    if not span.exact:
        raise GeometryError(f"the receptive field of '{blob}' passes a Deconvolution and depends on position")
    return _as_int((h - lo + 1 for lo, h in zip(span.low, span.high, strict=True)), "receptive field")


def max_stride(net: Message, blob: str, *, phase: str = "TEST") -> int:
    """The largest stride (input pixels per unit) of any blob on the paths from the inputs to ``blob``
    (Table 1 of the FCN paper: 32 for the VGG16 and AlexNet nets at fc7 and at the output).
    """
    graph = _Graph(net, phase)
    return _as_int(_span(graph, graph.blob(blob), {}).max_stride, "stride")
