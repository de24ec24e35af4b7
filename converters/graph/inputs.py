"""The graph's inputs: which data-layer tops the net reads, and their shapes (declared, given, or
inferred from the weights of the layers that read them)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from ..caffe.message import Message
from ..caffe.netdef import layer_type
from ..caffe.traits import CHANNEL_KEEPING_TYPES, DATA_LAYER_TYPES, concat_axis
from ..errors import NetError
from ..layers.registry import INT_MAX

Shape = tuple[int, ...]
NOMINAL_SPATIAL = 500  # shape inference only, for data layers that declare no size (the FCN deploy size)
MAX_INPUT_AXES = 32  # Caffe's kMaxBlobAxes


def is_source(layer: Message) -> bool:
    """Whether a layer produces input blobs (a data layer without bottoms)."""
    if layer_type(layer) == "DummyData":  # (constant fillers: tops the graph computes)
        from ..layers.structure import dummy_data_tops

        return any(value is None for _, value in dummy_data_tops(layer))
    return layer_type(layer) in DATA_LAYER_TYPES and not layer.getall("bottom")


def check_input_shape(blob: str, shape: Sequence[int], where: str) -> Shape:
    """``shape`` as Caffe accepts it: at most 32 axes, none negative, at most INT_MAX values
    (``Blob::Reshape``), and none zero (Caffe holds no data for an empty blob and stops at it)."""
    shape = tuple(int(d) for d in shape)
    if len(shape) > MAX_INPUT_AXES:
        raise NetError(f"{where}: input '{blob}' has {len(shape)} axes (Caffe allows {MAX_INPUT_AXES})")
    if any(d < 0 for d in shape):
        raise NetError(f"{where}: input '{blob}' has a negative dimension {list(shape)}")
    if any(d == 0 for d in shape):
        raise NetError(
            f"{where}: input '{blob}' has a zero dimension {list(shape)}; Caffe cannot compute an empty blob"
        )
    if math.prod(shape) > INT_MAX:
        raise NetError(
            f"{where}: input '{blob}' of shape {list(shape)} holds {math.prod(shape):,} values, more than "
            f"Caffe's limit of {INT_MAX:,} per blob"
        )
    return shape


def input_shapes(
    layers: list[Message],
    used: set[str],
    given: Mapping[str, Sequence[int]],
    weights: Mapping[str, list[np.ndarray]] | None,
) -> tuple[dict[str, Shape], set[str], dict[str, Message]]:
    """``(shapes, declared, transform params)`` for every used data-layer top: declared by an Input
    layer, given in ``given``, or guessed (channels from the weights of the first layer that reads
    it, spatial size from the crop size, a declared input, or nominal)."""
    shapes: dict[str, Shape] = {}
    declared: set[str] = set()
    transforms: dict[str, Message] = {}
    for layer in layers:
        if not is_source(layer):
            continue
        kind, name = layer_type(layer), layer.get("name")
        where = f"layer '{name}' ({kind})"
        tops = list(layer.getall("top"))
        written = [s.get("dim") for s in layer.get("input_param").get("shape")]
        if kind == "Input" and len(written) not in (0, 1, len(tops)):
            raise NetError(f"Input layer '{name}' has {len(tops)} tops but {len(written)} shapes")
        if kind == "DummyData":
            from ..layers.structure import dummy_data_tops

            dummy_shapes = [shape for shape, _ in dummy_data_tops(layer)]
        for i, top in enumerate(tops):
            if top not in used:
                continue
            if not top.isprintable() or not top.strip():
                raise NetError(f"{where}: input blob {top!r} cannot be a keyword input of the graph; name it")
            if "transform_param" in layer:
                transforms[top] = layer.get("transform_param")
            if top in given:
                shapes[top] = check_input_shape(top, given[top], "input_shapes")
                declared.add(top)
            elif kind == "Input" and written:
                shapes[top] = check_input_shape(top, written[i if len(written) > 1 else 0], where)
                declared.add(top)
            elif kind == "DummyData":
                shapes[top] = check_input_shape(top, dummy_shapes[i], where)
                declared.add(top)
            else:
                crop = int(layer.get("transform_param").get("crop_size")) if "transform_param" in layer else 0
                shapes[top] = (1, 0, crop, crop)
    known = {b: shapes[b][1] for b in declared if len(shapes[b]) > 1}
    like = next((shapes[b] for b in shapes if b in declared and len(shapes[b]) == 4), None)
    for blob, shape in shapes.items():
        if blob not in declared:
            channels = _guess_channels(blob, layers, weights, known) or 3
            size = (shape[2], shape[3]) if shape[2] else (like[2:] if like else (NOMINAL_SPATIAL,) * 2)
            shapes[blob] = (like[0] if like else 1, channels, *size)
    return shapes, declared, transforms


def _guess_channels(
    blob: str,
    layers: list[Message],
    weights: Mapping[str, list[np.ndarray]] | None,
    known: Mapping[str, int],
    depth: int = 0,
) -> int | None:
    """The channels of an undeclared input, from the weights of the first convolution reading it
    (through channel-keeping layers and channel Concats), or ``None`` without such evidence.

    At a Concat, inputs of unknown size take 3 channels (an image) except the last, which takes the
    rest: BGR + depth for the NYUD early-fusion net."""
    if depth > len(layers):
        return None
    for layer in layers:
        if blob not in layer.getall("bottom"):
            continue
        kind = layer_type(layer)
        stored = (weights or {}).get(layer.get("name"))
        tops = layer.getall("top")
        if kind == "Convolution" and stored and len(stored[0].shape) >= 3:
            return int(stored[0].shape[-3]) * max(1, int(layer.get("convolution_param").get("group")))
        if kind == "Deconvolution" and stored and len(stored[0].shape) >= 1:
            return int(stored[0].shape[0])
        if kind == "Concat" and tops and concat_axis(layer) == 1:
            total = _guess_channels(tops[0], layers, weights, known, depth + 1)
            if total is None:
                return None
            bottoms = list(layer.getall("bottom"))
            unknown = [b for b in bottoms if b not in known]
            rest = total - sum(known[b] for b in bottoms if b in known) - 3 * (len(unknown) - 1)
            return rest if blob == unknown[-1] and rest >= 1 else 3
        if kind not in CHANNEL_KEEPING_TYPES or not tops:
            return None
        blob = tops[0]
    return None
