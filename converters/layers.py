"""One converter function per Caffe layer type, registered with :func:`register_layer`.

A converter receives a :class:`LayerContext` (the layer's parameters, its bottoms' shapes, its
stored blobs) and returns a :class:`Converted`: a module or a function to call on the bottoms,
plus where each Caffe blob of the layer goes. Users add their own types the same way::

    @converters.register_layer("MyLayer")
    def my_layer(ctx):
        return Converted(function=torch.sigmoid, keeps_shape=True)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import ops
from .message import Message

Shape = tuple[int, ...]


class UnsupportedLayerError(ValueError):
    """A layer whose type has no converter (names the layer and its type)."""


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

    def bottom_shape(self, index: int = 0) -> Shape:
        shape = self.bottom_shapes[index]
        if shape is None:
            raise ValueError(
                f"layer '{self.name}' ({self.type}): the shape of bottom '{self.bottoms[index]}' is "
                "unknown; give the input shapes (input_shapes=...)"
            )
        return shape

    def channels(self, axis: int = 1, blob: int = 0, from_blob: Callable[[Shape], int] | None = None) -> int:
        """The size of ``axis`` of bottom 0, or else what the stored blob ``blob`` implies."""
        shape = self.bottom_shapes[0] if self.bottom_shapes else None
        if shape is not None:
            return shape[axis if axis >= 0 else axis + len(shape)]
        if self.blob_shapes and from_blob is not None and len(self.blob_shapes) > blob:
            return from_blob(self.blob_shapes[blob])
        return self.bottom_shape(0)[axis]


@dataclasses.dataclass
class Converted:
    """A converter's answer.

    Exactly one of ``module`` (called as ``self.<layer>(*bottoms)``) and ``function`` (called as
    ``function(*bottoms, **kwargs)``) is set, unless the layer has no computation (``role``
    ``"silence"``). ``blobs`` lists, in Caffe's blob order, the module attribute each stored blob
    loads into and the shape Caffe gives that blob. ``outputs`` > 1 means the call returns a tuple,
    one item per top; ``same_for_all_tops`` means every top gets the one result (Split).
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
LAYER_CONVERTERS: dict[str, Converter] = {}

DATA_LAYER_TYPES = frozenset(
    {
        "Input", "Data", "ImageData", "HDF5Data", "MemoryData", "DummyData", "WindowData",
        "AnnotatedData", "VideoData", "Python",
    }
)  # fmt: skip


def is_loss_or_metric(layer_type: str) -> bool:
    """Whether a layer type only serves training or scoring (dropped from inference graphs)."""
    return layer_type.endswith("Loss") or layer_type == "Accuracy"


def register_layer(*types: str) -> Callable[[Converter], Converter]:
    """Register a converter function for one or more Caffe layer type names."""

    def decorate(function: Converter) -> Converter:
        for layer_type in types:
            LAYER_CONVERTERS[layer_type] = function
        return function

    return decorate


def converter_for(layer_type: str, layer_name: str) -> Converter:
    """The converter of ``layer_type``, or an :class:`UnsupportedLayerError` naming the layer."""
    try:
        return LAYER_CONVERTERS[layer_type]
    except KeyError:
        known = ", ".join(sorted(LAYER_CONVERTERS))
        raise UnsupportedLayerError(
            f"layer '{layer_name}' has type '{layer_type}', which fcn-port cannot convert "
            f"(supported: {known}); register one with converters.register_layer"
        ) from None


# ----------------------------------------------------------------------------------------------
# Parameter helpers


def _spatial(param: Message, name: str, h: str, w: str, dims: int, default: int | None) -> tuple[int, ...]:
    """A per-spatial-axis value from ``name`` (repeated or single) or its ``_h``/``_w`` pair."""
    if h in param or w in param:
        if dims != 2:
            raise ValueError(f"{h}/{w} only apply to 2-D spatial inputs")
        return (int(param.get(h)), int(param.get(w)))
    values = param.get(name)
    values = list(values) if isinstance(values, (list, tuple, np.ndarray)) else [values]
    values = [v for v in values if v is not None]
    if not values:
        if default is None:
            raise ValueError(f"'{name}' is required")
        return (default,) * dims
    if len(values) == 1:
        return (int(values[0]),) * dims
    if len(values) != dims:
        raise ValueError(f"'{name}' has {len(values)} values for {dims} spatial axes")
    return tuple(int(v) for v in values)


def _concat_shape(shapes: list[Shape], axis: int) -> Shape:
    first = list(shapes[0])
    axis = _axis(axis, len(first))
    for shape in shapes[1:]:
        others_differ = len(shape) != len(first) or any(
            a != b for i, (a, b) in enumerate(zip(shape, first, strict=True)) if i != axis
        )
        if others_differ:
            raise ValueError(f"cannot concatenate shapes {[list(s) for s in shapes]} along axis {axis}")
    first[axis] = sum(shape[axis] for shape in shapes)
    return tuple(first)


def _axis(axis: int, ndim: int | None) -> int:
    if axis >= 0 or ndim is None:
        return axis
    return axis + ndim


def _singular_spatial(param: Message, name: str, h: str, w: str, default: int | None) -> tuple[int, int]:
    if h in param or w in param:
        return (int(param.get(h)), int(param.get(w)))
    if name in param:
        return (int(param.get(name)),) * 2
    if default is None:
        raise ValueError(f"'{name}' (or {h} and {w}) is required")
    return (default, default)


# ----------------------------------------------------------------------------------------------
# Inputs, in-place helpers and simple activations


@register_layer(*sorted(DATA_LAYER_TYPES))
def data_layer(ctx: LayerContext) -> Converted:
    return Converted(role="input")


@register_layer("Silence")
def silence(ctx: LayerContext) -> Converted:
    return Converted(role="silence")


@register_layer("Split")
def split(ctx: LayerContext) -> Converted:
    return Converted(function=_identity, same_for_all_tops=True)


def _identity(x: Tensor) -> Tensor:
    return x


@register_layer("Dropout")
def dropout(ctx: LayerContext) -> Converted:
    ratio = float(ctx.param("dropout_param").get("dropout_ratio"))
    return Converted(module=nn.Dropout(ratio), keeps_shape=True)


@register_layer("ReLU")
def relu(ctx: LayerContext) -> Converted:
    slope = float(ctx.param("relu_param").get("negative_slope"))
    if slope == 0:
        return Converted(function=torch.relu, keeps_shape=True)
    return Converted(function=F.leaky_relu, kwargs={"negative_slope": slope}, keeps_shape=True)


@register_layer("Sigmoid")
def sigmoid(ctx: LayerContext) -> Converted:
    return Converted(function=torch.sigmoid, keeps_shape=True)


@register_layer("TanH")
def tanh(ctx: LayerContext) -> Converted:
    return Converted(function=torch.tanh, keeps_shape=True)


@register_layer("AbsVal")
def absval(ctx: LayerContext) -> Converted:
    return Converted(function=torch.abs, keeps_shape=True)


@register_layer("BNLL")
def bnll(ctx: LayerContext) -> Converted:
    return Converted(function=F.softplus, keeps_shape=True)


@register_layer("ELU")
def elu(ctx: LayerContext) -> Converted:
    return Converted(
        function=F.elu, kwargs={"alpha": float(ctx.param("elu_param").get("alpha"))}, keeps_shape=True
    )


@register_layer("Power")
def power(ctx: LayerContext) -> Converted:
    p = ctx.param("power_param")
    return Converted(
        function=ops.power,
        kwargs={
            "power": float(p.get("power")),
            "scale": float(p.get("scale")),
            "shift": float(p.get("shift")),
        },
        keeps_shape=True,
    )


@register_layer("Exp")
def exp(ctx: LayerContext) -> Converted:
    p = ctx.param("exp_param")
    base, scale, shift = float(p.get("base")), float(p.get("scale")), float(p.get("shift"))
    log_base = 1.0 if base == -1 else math.log(base)
    return Converted(
        function=ops.power_exp,
        kwargs={"log_base": log_base, "scale": scale, "shift": shift},
        keeps_shape=True,
    )


@register_layer("Threshold")
def threshold(ctx: LayerContext) -> Converted:
    value = float(ctx.param("threshold_param").get("threshold"))
    return Converted(function=ops.threshold, kwargs={"threshold": value}, keeps_shape=True)


@register_layer("Log")
def log(ctx: LayerContext) -> Converted:
    p = ctx.param("log_param")
    base = float(p.get("base"))
    base_scale = 1.0 if base == -1 else 1 / math.log(base)
    kwargs = {"base_scale": base_scale, "scale": float(p.get("scale")), "shift": float(p.get("shift"))}
    return Converted(function=ops.log, kwargs=kwargs, keeps_shape=True)


@register_layer("MVN")
def mvn(ctx: LayerContext) -> Converted:
    p = ctx.param("mvn_param")
    kwargs = {
        "normalize_variance": bool(p.get("normalize_variance")),
        "across_channels": bool(p.get("across_channels")),
        "eps": float(p.get("eps")),
    }
    return Converted(function=ops.mvn, kwargs=kwargs, keeps_shape=True)


@register_layer("Reduction")
def reduction(ctx: LayerContext) -> Converted:
    p = ctx.param("reduction_param")
    axis = int(p.get("axis"))
    kwargs = {"operation": str(p.get("operation")), "axis": axis, "coeff": float(p.get("coeff"))}
    return Converted(
        function=ops.reduction,
        kwargs=kwargs,
        output_shape=lambda shapes: shapes[0][: _axis(axis, len(shapes[0]))],
    )


@register_layer("Tile")
def tile(ctx: LayerContext) -> Converted:
    p = ctx.param("tile_param")
    if "tiles" not in p or int(p.get("tiles")) < 1:
        raise ValueError(f"layer '{ctx.name}': Tile needs tiles >= 1")
    return Converted(function=ops.tile, kwargs={"axis": int(p.get("axis")), "tiles": int(p.get("tiles"))})


@register_layer("ArgMax")
def argmax(ctx: LayerContext) -> Converted:
    p = ctx.param("argmax_param")
    axis = int(p.get("axis")) if "axis" in p else None
    kwargs = {"top_k": int(p.get("top_k")), "out_max_val": bool(p.get("out_max_val")), "axis": axis}
    return Converted(function=ops.argmax, kwargs=kwargs)


@register_layer("Softmax")
def softmax(ctx: LayerContext) -> Converted:
    axis = int(ctx.param("softmax_param").get("axis"))
    ndim = len(ctx.bottom_shapes[0]) if ctx.bottom_shapes[0] is not None else None
    return Converted(function=torch.softmax, kwargs={"dim": _axis(axis, ndim)})


@register_layer("Flatten")
def flatten(ctx: LayerContext) -> Converted:
    p = ctx.param("flatten_param")
    return Converted(
        function=torch.flatten, kwargs={"start_dim": int(p.get("axis")), "end_dim": int(p.get("end_axis"))}
    )


@register_layer("Reshape")
def reshape(ctx: LayerContext) -> Converted:
    p = ctx.param("reshape_param")
    dims = [int(d) for d in p.get("shape").get("dim")]
    return Converted(
        function=ops.caffe_reshape,
        kwargs={"dims": tuple(dims), "axis": int(p.get("axis")), "num_axes": int(p.get("num_axes"))},
    )


@register_layer("Concat")
def concat(ctx: LayerContext) -> Converted:
    p = ctx.param("concat_param")
    axis = int(p.get("axis")) if "axis" in p or "concat_dim" not in p else int(p.get("concat_dim"))
    return Converted(
        function=ops.concat, kwargs={"dim": axis}, output_shape=lambda shapes: _concat_shape(shapes, axis)
    )


@register_layer("Slice")
def slice_layer(ctx: LayerContext) -> Converted:
    p = ctx.param("slice_param")
    axis = int(p.get("axis")) if "axis" in p or "slice_dim" not in p else int(p.get("slice_dim"))
    points = tuple(int(v) for v in p.get("slice_point"))
    if points and len(points) != len(ctx.tops) - 1:
        raise ValueError(
            f"layer '{ctx.name}': {len(points)} slice points for {len(ctx.tops)} tops (need one fewer)"
        )
    return Converted(
        function=ops.caffe_slice,
        kwargs={"axis": axis, "points": points, "count": len(ctx.tops)},
        outputs=len(ctx.tops),
    )


@register_layer("Eltwise")
def eltwise(ctx: LayerContext) -> Converted:
    p = ctx.param("eltwise_param")
    operation = str(p.get("operation"))
    coeffs = tuple(float(c) for c in p.get("coeff"))
    if coeffs and operation != "SUM":
        raise ValueError(f"layer '{ctx.name}': Eltwise coefficients only apply to SUM")
    if coeffs and len(coeffs) != len(ctx.bottoms):
        raise ValueError(f"layer '{ctx.name}': {len(coeffs)} coefficients for {len(ctx.bottoms)} bottoms")
    if operation == "SUM":
        return Converted(
            function=ops.eltwise_sum, kwargs={"coeffs": coeffs} if coeffs else {}, keeps_shape=True
        )
    if operation == "PROD":
        return Converted(function=ops.eltwise_prod, keeps_shape=True)
    return Converted(function=ops.eltwise_max, keeps_shape=True)


@register_layer("Crop")
def crop(ctx: LayerContext) -> Converted:
    p = ctx.param("crop_param")
    return Converted(
        function=ops.caffe_crop,
        kwargs={"axis": int(p.get("axis")), "offsets": tuple(int(o) for o in p.get("offset"))},
    )


@register_layer("Pooling")
def pooling(ctx: LayerContext) -> Converted:
    p = ctx.param("pooling_param")
    method = str(p.get("pool"))
    ceil = str(p.get("round_mode")) == "CEIL"
    if bool(p.get("global_pooling")):
        return Converted(module=ops.CaffePooling(method, (1, 1), (1, 1), (0, 0), global_pooling=True))
    kernel = _singular_spatial(p, "kernel_size", "kernel_h", "kernel_w", None)
    stride = _singular_spatial(p, "stride", "stride_h", "stride_w", 1)
    pad = _singular_spatial(p, "pad", "pad_h", "pad_w", 0)
    if any(pd >= k for pd, k in zip(pad, kernel, strict=True)):
        raise ValueError(f"layer '{ctx.name}': pooling pad {pad} must be smaller than the kernel {kernel}")
    return Converted(module=ops.CaffePooling(method, kernel, stride, pad, ceil=ceil))


@register_layer("LRN")
def lrn(ctx: LayerContext) -> Converted:
    p = ctx.param("lrn_param")
    size, alpha, beta, k = (
        int(p.get("local_size")),
        float(p.get("alpha")),
        float(p.get("beta")),
        float(p.get("k")),
    )
    if str(p.get("norm_region")) == "WITHIN_CHANNEL":
        return Converted(
            function=ops.lrn_within_channel,
            kwargs={"size": size, "alpha": alpha, "beta": beta},
            keeps_shape=True,
        )
    if size % 2 == 0:
        raise ValueError(f"layer '{ctx.name}': LRN across channels needs an odd local_size, got {size}")
    return Converted(module=nn.LocalResponseNorm(size, alpha, beta, k), keeps_shape=True)


# ----------------------------------------------------------------------------------------------
# Layers with parameters


def _conv_geometry(
    ctx: LayerContext,
) -> tuple[int, tuple[int, ...], tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    p = ctx.param("convolution_param")
    axis = int(p.get("axis"))
    shape = ctx.bottom_shapes[0]
    if shape is not None:
        dims = len(shape) - _axis(axis, len(shape)) - 1
    elif ctx.blob_shapes:
        dims = len(ctx.blob_shapes[0]) - 2
    else:
        dims = 2
    if axis not in (1, -len(shape) + 1 if shape else 1):
        raise ValueError(f"layer '{ctx.name}': convolution over axis {axis} is not supported (only 1)")
    if not 1 <= dims <= 3:
        raise ValueError(f"layer '{ctx.name}': {dims} spatial axes (1 to 3 supported)")
    kernel = _spatial(p, "kernel_size", "kernel_h", "kernel_w", dims, None)
    stride = _spatial(p, "stride", "stride_h", "stride_w", dims, 1)
    pad = _spatial(p, "pad", "pad_h", "pad_w", dims, 0)
    dilation = _spatial(p, "dilation", "__none__", "__none__", dims, 1)
    return dims, kernel, stride, pad, dilation


@register_layer("Convolution")
def convolution(ctx: LayerContext) -> Converted:
    p = ctx.param("convolution_param")
    dims, kernel, stride, pad, dilation = _conv_geometry(ctx)
    group = int(p.get("group"))
    out_channels = int(p.get("num_output"))
    in_channels = ctx.channels(1, 0, lambda s: s[1] * group if len(s) > 1 else 0)
    if in_channels % group or out_channels % group:
        raise ValueError(
            f"layer '{ctx.name}': {in_channels} input and {out_channels} output channels are not "
            f"divisible by group {group}"
        )
    bias = bool(p.get("bias_term"))
    conv = (nn.Conv1d, nn.Conv2d, nn.Conv3d)[dims - 1](
        in_channels, out_channels, kernel, stride, pad, dilation, group, bias, device="meta"
    )
    blobs = [("weight", (out_channels, in_channels // group, *kernel))]
    if bias:
        blobs.append(("bias", (out_channels,)))
    return Converted(module=conv, blobs=blobs, fillers=_fillers(p, bias))


@register_layer("Deconvolution")
def deconvolution(ctx: LayerContext) -> Converted:
    p = ctx.param("convolution_param")
    dims, kernel, stride, pad, dilation = _conv_geometry(ctx)
    group = int(p.get("group"))
    out_channels = int(p.get("num_output"))
    in_channels = ctx.channels(1, 0, lambda s: s[0])
    if in_channels % group or out_channels % group:
        raise ValueError(
            f"layer '{ctx.name}': {in_channels} input and {out_channels} output channels are not "
            f"divisible by group {group}"
        )
    bias = bool(p.get("bias_term"))
    deconv = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)[dims - 1](
        in_channels, out_channels, kernel, stride, pad, 0, group, bias, dilation, device="meta"
    )
    blobs = [("weight", (in_channels, out_channels // group, *kernel))]
    if bias:
        blobs.append(("bias", (out_channels,)))
    return Converted(module=deconv, blobs=blobs, fillers=_fillers(p, bias))


def _fillers(p: Message, bias: bool) -> list[Message | None]:
    fillers = [p.get("weight_filler") if "weight_filler" in p else None]
    if bias:
        fillers.append(p.get("bias_filler") if "bias_filler" in p else _CONSTANT_ZERO)
    return fillers


_CONSTANT_ZERO = Message("FillerParameter", type="constant", value=0.0)
_CONSTANT_ONE = Message("FillerParameter", type="constant", value=1.0)


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
        return ops.inner_product(x, self.weight, self.bias, self.axis, self.transpose)


@register_layer("InnerProduct")
def inner_product(ctx: LayerContext) -> Converted:
    p = ctx.param("inner_product_param")
    axis = int(p.get("axis"))
    transpose = bool(p.get("transpose"))
    out_features = int(p.get("num_output"))
    shape = ctx.bottom_shapes[0]
    if shape is not None:
        start = _axis(axis, len(shape))
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
    return Converted(module=module, blobs=blobs, fillers=_fillers(p, bias))


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
        return ops.scale_by_blob(x, self.weight if scale is None else scale, self.axis, self.bias)


def _scale_shape(ctx: LayerContext, axis: int, num_axes: int, what: str) -> tuple[int, Shape]:
    shape = ctx.bottom_shape(0)
    start = _axis(axis, len(shape))
    end = len(shape) if num_axes == -1 else start + num_axes
    if not 0 <= start <= end <= len(shape):
        raise ValueError(
            f"layer '{ctx.name}': {what} axis {axis}, num_axes {num_axes} do not fit {list(shape)}"
        )
    return start, tuple(shape[start:end])


@register_layer("Scale")
def scale(ctx: LayerContext) -> Converted:
    p = ctx.param("scale_param")
    bias = bool(p.get("bias_term"))
    if len(ctx.bottoms) == 2:
        start = _axis(int(p.get("axis")), len(ctx.bottom_shape(0)))
        bias_shape = tuple(ctx.bottom_shape(1)) if bias else None
        module = Scale(start, None, bias_shape)
        blobs = [("bias", bias_shape)] if bias_shape is not None else []
        fillers = [p.get("bias_filler") if "bias_filler" in p else _CONSTANT_ZERO] if bias else []
        return Converted(module=module, blobs=blobs, fillers=fillers, keeps_shape=True)
    start, shape = _scale_shape(ctx, int(p.get("axis")), int(p.get("num_axes")), "scale")
    module = Scale(start, shape, shape if bias else None)
    blobs = [("weight", shape)] + ([("bias", shape)] if bias else [])
    fillers = [p.get("filler") if "filler" in p else _CONSTANT_ONE]
    if bias:
        fillers.append(p.get("bias_filler") if "bias_filler" in p else _CONSTANT_ZERO)
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


@register_layer("Bias")
def bias_layer(ctx: LayerContext) -> Converted:
    p = ctx.param("bias_param")
    if len(ctx.bottoms) == 2:
        return Converted(
            module=Bias(_axis(int(p.get("axis")), len(ctx.bottom_shape(0))), None), keeps_shape=True
        )
    start, shape = _scale_shape(ctx, int(p.get("axis")), int(p.get("num_axes")), "bias")
    fillers = [p.get("filler") if "filler" in p else _CONSTANT_ZERO]
    return Converted(module=Bias(start, shape), blobs=[("bias", shape)], fillers=fillers, keeps_shape=True)


class BatchNorm(nn.Module):
    """Caffe's BatchNorm: normalises with stored mean/variance divided by the stored scale factor
    (or with the batch's statistics when ``use_global_stats`` is false)."""

    def __init__(self, channels: int, eps: float, use_global_stats: bool) -> None:
        super().__init__()
        self.register_buffer("mean", torch.empty(channels, device="meta"))
        self.register_buffer("variance", torch.empty(channels, device="meta"))
        self.register_buffer("scale_factor", torch.empty(1, device="meta"))
        self.eps = eps
        self.use_global_stats = use_global_stats

    def extra_repr(self) -> str:
        return f"channels={self.mean.shape[0]}, eps={self.eps}, use_global_stats={self.use_global_stats}"

    def forward(self, x: Tensor) -> Tensor:
        if not self.use_global_stats:
            return ops.caffe_batch_norm(x, self.mean, self.variance, self.eps, False)
        factor = torch.where(
            self.scale_factor == 0, torch.zeros_like(self.scale_factor), 1 / self.scale_factor
        )
        return ops.caffe_batch_norm(x, self.mean * factor, self.variance * factor, self.eps, True)


@register_layer("BatchNorm")
def batch_norm(ctx: LayerContext) -> Converted:
    p = ctx.param("batch_norm_param")
    channels = ctx.channels(1, 0, lambda s: math.prod(s))
    global_stats = bool(p.get("use_global_stats")) if "use_global_stats" in p else ctx.phase == "TEST"
    module = BatchNorm(channels, float(p.get("eps")), global_stats)
    blobs = [("mean", (channels,)), ("variance", (channels,)), ("scale_factor", (1,))]
    return Converted(
        module=module, blobs=blobs, fillers=[_CONSTANT_ZERO, _CONSTANT_ONE, _CONSTANT_ONE], keeps_shape=True
    )


@register_layer("PReLU")
def prelu(ctx: LayerContext) -> Converted:
    p = ctx.param("prelu_param")
    shared = bool(p.get("channel_shared"))
    channels = 1 if shared else ctx.channels(1, 0, lambda s: math.prod(s))
    module = nn.PReLU(channels, device="meta")
    filler = p.get("filler") if "filler" in p else Message("FillerParameter", type="constant", value=0.25)
    return Converted(
        module=module, blobs=[("weight", () if shared else (channels,))], fillers=[filler], keeps_shape=True
    )


# ----------------------------------------------------------------------------------------------
# Training-only layers (kept when a graph is built with losses)


@register_layer("SoftmaxWithLoss")
def softmax_with_loss(ctx: LayerContext) -> Converted:
    loss = ctx.param("loss_param")
    if "normalization" in loss or "normalize" not in loss:
        normalization = str(loss.get("normalization"))
    else:
        normalization = "VALID" if bool(loss.get("normalize")) else "BATCH_SIZE"
    ignore = int(loss.get("ignore_label")) if "ignore_label" in loss else None
    axis = int(ctx.param("softmax_param").get("axis"))
    return Converted(
        function=ops.softmax_with_loss,
        kwargs={"axis": axis, "ignore_label": ignore, "normalization": normalization},
        role="loss",
        output_shape=lambda shapes: (),
    )


@register_layer("Accuracy")
def accuracy(ctx: LayerContext) -> Converted:
    p = ctx.param("accuracy_param")
    ignore = int(p.get("ignore_label")) if "ignore_label" in p else None
    axis = int(p.get("axis"))
    per_class = len(ctx.tops) > 1
    kwargs = {"axis": axis, "top_k": int(p.get("top_k")), "ignore_label": ignore, "per_class": per_class}
    if per_class:
        classes = lambda shapes: [(), (shapes[0][_axis(axis, len(shapes[0]))],)]  # noqa: E731
        return Converted(function=ops.accuracy, kwargs=kwargs, role="loss", outputs=2, output_shape=classes)
    return Converted(function=ops.accuracy, kwargs=kwargs, role="loss", output_shape=lambda shapes: ())


# ----------------------------------------------------------------------------------------------
# Fillers (used when a layer has no stored weights)


def fill(shape: Sequence[int], filler: Message | None, generator: torch.Generator) -> Tensor:
    """A tensor drawn as Caffe's ``filler`` would draw it; without one, a fan-in scaled normal
    (std ``sqrt(2 / fan_in)``), which keeps activations alive through deep nets."""
    shape = tuple(shape)
    fan_in = math.prod(shape[1:]) if len(shape) > 1 else max(1, math.prod(shape))
    fan_out = shape[0] * math.prod(shape[2:]) if len(shape) > 1 else fan_in
    kind = str(filler.get("type")) if filler is not None else "msra"
    if kind == "constant":
        return torch.full(shape, float(filler.get("value")))
    if kind == "gaussian":
        return torch.randn(shape, generator=generator) * float(filler.get("std")) + float(filler.get("mean"))
    if kind == "uniform":
        low, high = float(filler.get("min")), float(filler.get("max"))
        return torch.rand(shape, generator=generator) * (high - low) + low
    if kind in ("xavier", "msra"):
        norm = str(filler.get("variance_norm")) if filler is not None else "FAN_IN"
        n = {"FAN_IN": fan_in, "FAN_OUT": fan_out, "AVERAGE": (fan_in + fan_out) / 2}[norm]
        if kind == "xavier":
            bound = math.sqrt(3 / n)
            return (torch.rand(shape, generator=generator) * 2 - 1) * bound
        return torch.randn(shape, generator=generator) * math.sqrt(2 / n)
    if kind == "bilinear":
        return bilinear_kernel(shape)
    if kind == "positive_unitball":
        values = torch.rand(shape, generator=generator)
        return values / values.reshape(shape[0], -1).sum(dim=1).reshape([-1] + [1] * (len(shape) - 1))
    raise ValueError(f"filler type '{kind}' is not supported")


def bilinear_kernel(shape: Sequence[int]) -> Tensor:
    """Caffe's bilinear filler: the upsampling kernel FCN's deconvolutions start from."""
    kh, kw = shape[-2], shape[-1]

    def axis_weights(k: int) -> Tensor:
        f = math.ceil(k / 2)
        c = (2 * f - 1 - f % 2) / (2 * f)
        x = torch.arange(k, dtype=torch.float64)
        return 1 - torch.abs(x / f - c)

    kernel = (axis_weights(kh)[:, None] * axis_weights(kw)[None, :]).to(torch.float32)
    return kernel.expand(*shape).clone()
