"""What Caffe layer types are, independent of PyTorch: which ones feed data, which only train or
score, which act position by position, and how a layer's window (kernel, stride, pad, dilation)
is written. Every other module asks here rather than keeping its own list."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from ..errors import CaffeFormatError
from .message import Message

#: Layers that produce blobs from outside the net (their tops become the graph's inputs).
BVLC_DATA_LAYER_TYPES = frozenset(
    {"Input", "Data", "ImageData", "HDF5Data", "MemoryData", "DummyData", "WindowData", "Python"}
)

#: The forks' data layers, left in the deploy and test files people have: SSD's AnnotatedData,
#: C3D's VideoData, SegNet's DenseImageData, DeepLab v2's ImageSegData, HED's ImageLabelmapData,
#: OpenPose's CPMData, FlowNet 2.0's CustomData, py-R-FCN's BoxData, multi-label forks'
#: MultiLabelImageData. What they read is outside the net: their tops are the graph's inputs.
FORK_DATA_LAYER_TYPES = frozenset(
    {
        "AnnotatedData", "VideoData", "DenseImageData", "ImageSegData", "ImageLabelmapData",
        "CPMData", "CustomData", "BoxData", "MultiLabelImageData",
    }
)  # fmt: skip

DATA_LAYER_TYPES = BVLC_DATA_LAYER_TYPES | FORK_DATA_LAYER_TYPES

#: Layers whose top at a position depends only on the bottoms at that position (same shape out as
#: in): coordinate maps pass through them unchanged, and they keep the channel count.
POINTWISE_TYPES = frozenset(
    {
        "AbsVal", "BatchNorm", "Bias", "BNLL", "Clip", "Dropout", "Eltwise", "ELU", "Exp", "Log",
        "LRN", "MVN", "Power", "PReLU", "ReLU", "Scale", "Sigmoid", "Split", "Swish", "TanH",
        "Threshold",
    }
)  # fmt: skip

#: Layers whose tops have their first bottom's channel count.
CHANNEL_KEEPING_TYPES = POINTWISE_TYPES | {"Pooling"}

#: Layers with a spatial window written in ``convolution_param``.
CONVOLUTION_TYPES = frozenset({"Convolution", "Deconvolution", "Im2col"})


def is_data_layer(layer_type: str) -> bool:
    """Whether a layer type produces input blobs."""
    return layer_type in DATA_LAYER_TYPES


def is_loss_or_metric(layer_type: str) -> bool:
    """Whether a layer type only serves training or scoring (dropped from inference graphs)."""
    return layer_type.endswith("Loss") or layer_type == "Accuracy"


def concat_axis(layer: Message) -> int:
    """The axis a Concat joins along (``axis``, else the legacy ``concat_dim``); both given are
    refused, as Caffe's ``ConcatLayer::LayerSetUp`` refuses them."""
    return _axis_or_legacy(layer, "concat_param", "concat_dim")


def slice_axis(layer: Message) -> int:
    """The axis a Slice cuts along (``axis``, else the legacy ``slice_dim``); both given are
    refused, as Caffe's ``SliceLayer::LayerSetUp`` refuses them."""
    return _axis_or_legacy(layer, "slice_param", "slice_dim")


def _axis_or_legacy(layer: Message, param: str, legacy: str) -> int:
    p = layer.get(param)
    if "axis" in p and legacy in p:
        where = f"layer '{layer.get('name')}' ({layer.get('type')})"
        raise CaffeFormatError(f"{where}: give {param}.axis or its legacy {legacy}, not both")
    return int(p.get(legacy)) if legacy in p else int(p.get("axis"))


@dataclasses.dataclass(frozen=True)
class Window:
    """A convolution's or pooling's window, one value per spatial axis (a single value applies to
    every axis when the number of spatial axes was not known)."""

    axis: int
    """The first spatial axis (1 + the channel axis)."""
    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    pad: tuple[int, ...]
    dilation: tuple[int, ...]
    global_pooling: bool = False

    @property
    def effective_kernel(self) -> tuple[int, ...]:
        """The kernel's extent once dilated: ``(kernel - 1) * dilation + 1`` per axis."""
        kernel, dilation = _broadcast(self.kernel, self.dilation)
        return tuple((k - 1) * d + 1 for k, d in zip(kernel, dilation, strict=True))


def _broadcast(*values: tuple[int, ...]) -> list[tuple[int, ...]]:
    n = max(len(v) for v in values)
    return [v * n if len(v) == 1 else v for v in values]


def _repeated(
    param: Message, name: str, h: str, w: str, dims: int | None, default: int | None, where: str,
    lone: int | None = None,
) -> tuple[int, ...]:
    """A per-spatial-axis value from ``name`` (repeated, as Convolution writes it) or its
    ``_h``/``_w`` pair; one value stands for every axis. ``lone``: the value of the half of the pair
    left out (else both halves are required)."""
    if h in param or w in param:
        if dims not in (None, 2):
            raise CaffeFormatError(f"{where}: {h}/{w} only apply to 2-D inputs")
        if (h not in param or w not in param) and lone is None:
            raise CaffeFormatError(f"{where}: give both {h} and {w}, or {name}")
        if name in param:
            raise CaffeFormatError(f"{where}: give {name} or {h} and {w}, not both")
        return tuple(int(param.get(key)) if key in param else lone for key in (h, w))  # type: ignore[misc]
    values = param.get(name)
    values = list(values) if isinstance(values, (list, tuple)) else [values]
    values = [int(v) for v in values if v is not None]
    if name not in param or not values:
        if default is None:
            raise CaffeFormatError(f"{where} has no {name}")
        values = [default]
    if dims is None or len(values) == dims:
        return tuple(values)
    if len(values) == 1:
        return (values[0],) * dims
    raise CaffeFormatError(f"{where}: {name} has {len(values)} values for {dims} spatial axes")


def window(layer: Message, dims: int | None = None) -> Window:
    """The window of a Convolution/Deconvolution/Im2col or Pooling layer, as Caffe's
    ``LayerSetUp`` reads it. ``dims`` (the number of spatial axes) expands single values; without
    it they stay single. Raises :class:`CaffeFormatError` naming the layer for a missing kernel,
    half an ``_h``/``_w`` pair, or a wrong number of values."""
    kind, name = str(layer.get("type")), layer.get("name")
    where = f"layer '{name}' ({kind})"
    if kind in CONVOLUTION_TYPES:
        p = layer.get("convolution_param")
        return Window(
            axis=int(p.get("axis")) + 1,
            kernel=_repeated(p, "kernel_size", "kernel_h", "kernel_w", dims, None, where),
            stride=_repeated(p, "stride", "stride_h", "stride_w", dims, 1, where),
            # (Caffe's BaseConvolutionLayer reads pad_h and pad_w alone too, the other at its default 0;
            # a lone kernel_h or stride_h leaves the other 0, which it refuses or divides by)
            pad=_repeated(p, "pad", "pad_h", "pad_w", dims, 0, where, lone=0),
            dilation=_repeated(p, "dilation", "__none_h", "__none_w", dims, 1, where),
        )
    if kind != "Pooling":
        raise CaffeFormatError(f"{where} has no window")
    p = layer.get("pooling_param")
    n = dims or 1
    if bool(p.get("global_pooling")):
        if "kernel_size" in p or "kernel_h" in p or "kernel_w" in p:
            raise CaffeFormatError(f"{where}: global pooling takes no kernel size")
        stride = _repeated(p, "stride", "stride_h", "stride_w", dims, 1, where)
        pad = _repeated(p, "pad", "pad_h", "pad_w", dims, 0, where)
        if any(v != 1 for v in stride) or any(v != 0 for v in pad):
            raise CaffeFormatError(f"{where}: global pooling takes only stride 1 and pad 0")
        return Window(2, (1,) * n, (1,) * n, (0,) * n, (1,) * n, global_pooling=True)
    if "kernel_size" not in p and "kernel_h" not in p and "kernel_w" not in p:
        raise CaffeFormatError(f"pooling layer '{name}' has no kernel size")
    if "kernel_size" in p and ("kernel_h" in p) != ("kernel_w" in p):
        # Caffe's PoolingLayer::LayerSetUp takes kernel_size and leaves a lone kernel_h or kernel_w unread
        size = int(p.get("kernel_size"))
        kernel = (size,) * (dims or 1)
    else:
        kernel = _repeated(p, "kernel_size", "kernel_h", "kernel_w", dims, None, where)
    stride = _repeated(p, "stride", "stride_h", "stride_w", dims, 1, where)
    pad = _repeated(p, "pad", "pad_h", "pad_w", dims, 0, where)
    return Window(2, kernel, stride, pad, (1,) * len(kernel))


def check_positive(values: Sequence[int], what: str, where: str) -> None:
    """Caffe's CHECK_GT(value, 0) on a window component."""
    if any(v <= 0 for v in values):
        raise CaffeFormatError(f"{where}: {what} must be positive, got {list(values)}")


#: ``LayerParameter`` fields of BVLC master whose layer types are not the field's name in
#: CamelCase (``recurrent_param`` serves LSTM and RNN); ``None``: the field belongs to no one type.
_PARAM_FIELD_TYPES: dict[str, tuple[str, ...] | None] = {
    "transform_param": None,
    "loss_param": None,
    "recurrent_param": ("LSTM", "RNN"),
    "argmax_param": ("ArgMax",),
    "elu_param": ("ELU",),
    "hdf5_data_param": ("HDF5Data",),
    "hdf5_output_param": ("HDF5Output",),
    "lrn_param": ("LRN",),
    "mvn_param": ("MVN",),
    "prelu_param": ("PReLU",),
    "relu_param": ("ReLU",),
    "spp_param": ("SPP",),
    "tanh_param": ("TanH",),
}

#: BVLC master's registered types that its schema cannot name: no parameter message of their own
#: and no V1 enum value (``REGISTER_LAYER_CLASS`` in batch_reindex_layer.cpp, filter_layer.cpp,
#: lstm_unit_layer.cpp).
UNNAMED_BVLC_TYPES = ("BatchReindex", "Filter", "LSTMUnit")


def bvlc_layer_types() -> frozenset[str]:
    """Every layer type of BVLC master, read from the schema fcn-port ships (BVLC's own messages,
    before any fork's additions): the V1 enum's types under their current names, the types named by
    ``LayerParameter``'s ``<type>_param`` fields, and :data:`UNNAMED_BVLC_TYPES`."""
    from .schema import SCHEMA_TEXT, V1_TYPE_NAMES

    enum = SCHEMA_TEXT.split("enum V1LayerParameter.LayerType ", 1)[1].split("\n", 1)[0]
    types = {V1_TYPE_NAMES[value.split("=")[0]] for value in enum.split()} - {""}
    lines = SCHEMA_TEXT.split("message LayerParameter\n", 1)[1].split("\nmessage ", 1)[0].splitlines()
    for line in lines:
        field = line.split()[1]
        if not field.endswith("_param"):
            continue
        camel = "".join(part.title() for part in field[: -len("_param")].split("_"))
        named = _PARAM_FIELD_TYPES.get(field, (camel,))
        types.update(named or ())
    return frozenset(types | set(UNNAMED_BVLC_TYPES))
