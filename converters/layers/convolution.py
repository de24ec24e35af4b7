"""Convolution and Deconvolution (grouped, dilated, 1 to 3 spatial axes), with Caffe's blob
layouts: weights ``out x in/group x k...`` and ``in x out/group x k...`` respectively. With several
bottoms (of one shape) the same weights apply to each, one top per bottom."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from ..caffe.traits import Window, window
from ..errors import NetError, UnsupportedLayerError
from .fillers import weight_and_bias_fillers
from .registry import Converted, LayerContext, Shape, canonical_axis, check_count, check_int, register_layer


def convolution_window(ctx: LayerContext) -> tuple[int, Window]:
    """``(spatial axes, window)`` of a convolution layer, checked as Caffe's ``LayerSetUp`` checks it."""
    p = ctx.param("convolution_param")
    axis = int(p.get("axis"))
    shape = ctx.bottom_shapes[0] if ctx.bottom_shapes else None
    if shape is not None:
        dims = len(shape) - canonical_axis(axis, len(shape), ctx.where) - 1
        if canonical_axis(axis, len(shape), ctx.where) != 1:
            raise ValueError(f"{ctx.where}: convolution over axis {axis} is not supported (only 1)")
    elif ctx.blob_shapes:
        dims = len(ctx.blob_shapes[0]) - 2
    else:
        dims = 2
    if not 1 <= dims <= 3:
        raise ValueError(f"{ctx.where}: {dims} spatial axes (1 to 3 supported)")
    w = window(ctx.layer, dims)
    check_int(w.kernel, "kernel size", ctx.where)
    check_int(w.stride, "stride", ctx.where)
    check_int(w.dilation, "dilation", ctx.where)
    check_int(w.pad, "pad", ctx.where, low=0)
    if shape is not None:
        _check_bottoms(ctx)
    return dims, w


def _check_bottoms(ctx: LayerContext) -> None:
    """Caffe's ``BaseConvolutionLayer::Reshape``: every bottom has bottom 0's shape."""
    first = ctx.bottom_shapes[0]
    for name, shape in zip(ctx.bottoms[1:], ctx.bottom_shapes[1:], strict=True):
        if shape != first:
            raise NetError(
                f"{ctx.where}: all bottoms must have the same shape; '{ctx.bottoms[0]}' is "
                f"{list(first or ())}, '{name}' is {list(shape or ())}"
            )


def _output_length(size: int, extent: int, stride: int, pad: int, transposed: bool) -> int:
    """Caffe's output length along one axis (``compute_output_shape``; reversed for Deconvolution).
    Its division is C++'s, which truncates toward zero: a kernel larger than the padded input by
    less than the stride still gives one output (over zeros past the input's end)."""
    if transposed:
        return stride * (size - 1) + extent - 2 * pad
    span = size + 2 * pad - extent
    return (span // stride if span >= 0 else -(-span // stride)) + 1


def may_overhang(
    kernel: Sequence[int], stride: Sequence[int], pad: Sequence[int], dilation: Sequence[int]
) -> bool:
    """Whether some input size leaves this window's one output hanging past the padded input (a
    stride of 2 or more, and a kernel extent over twice the padding plus one)."""
    window = zip(kernel, stride, pad, dilation, strict=True)
    return any(s >= 2 and (k - 1) * d + 1 >= 2 * p + 2 for k, s, p, d in window)


def pad_far_end(
    x: Tensor, kernel: Sequence[int], stride: Sequence[int], pad: Sequence[int], dilation: Sequence[int]
) -> Tensor:
    """``x`` with zeros past its end along each axis where Caffe's one output overhangs the padded
    input (:func:`_output_length`: by less than the stride), so that a PyTorch convolution computes
    that output; else ``x`` (a kernel overhanging by a stride or more leaves Caffe no output, and
    PyTorch's convolution refuses it)."""
    extra = [
        over if 0 < (over := (k - 1) * d + 1 - size - 2 * p) < s else 0
        for size, k, s, p, d in zip(x.shape[2:], kernel, stride, pad, dilation, strict=True)
    ]
    if not any(extra):
        return x
    widths: list[int] = []  # F.pad lists the last axis first
    for more in reversed(extra):
        widths += [0, more]
    return F.pad(x, widths)


class _CaffeWindow:
    """A ``Conv{1,2,3}d`` that computes Caffe's one output where the kernel overhangs the padded
    input by less than the stride (:func:`pad_far_end`); the same parameters and state dict."""

    def forward(self, x: Tensor) -> Tensor:
        window = (self.kernel_size, self.stride, self.padding, self.dilation)  # type: ignore[attr-defined]
        return super().forward(pad_far_end(x, *window))  # type: ignore[misc]


class CaffeConv1d(_CaffeWindow, nn.Conv1d):
    pass


class CaffeConv2d(_CaffeWindow, nn.Conv2d):
    pass


class CaffeConv3d(_CaffeWindow, nn.Conv3d):
    pass


def _output_sizes(ctx: LayerContext, w: Window, transposed: bool) -> None:
    """Refuse a window that leaves no output (Caffe's top shape would not be positive)."""
    shape = ctx.bottom_shapes[0]
    if shape is None:
        return
    for size, k, s, p, d in zip(shape[2:], w.kernel, w.stride, w.pad, w.dilation, strict=True):
        extent = (k - 1) * d + 1
        out = _output_length(size, extent, s, p, transposed)
        if out < 1:
            raise NetError(
                f"{ctx.where}: kernel extent {extent}, stride {s}, pad {p} leave no output for an input "
                f"of size {size} (output size {out})"
            )


_TRANSPOSED = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


def conv_transpose(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int] | None = None,
    groups: int = 1,
) -> Tensor:
    """``F.conv_transpose{1,2,3}d`` (1 to 3 spatial axes), the same sums. Along an axis whose stride
    passes the kernel's extent the windows neither overlap nor touch: it runs at a stride of the
    extent, and the blocks are then spaced out with zeros. PyTorch's CPU kernels take time
    quadratic in such a stride (a width stride of 8,192 over a 4 x 3 x 5 input takes six seconds;
    the params fuzz target's 65,536, minutes); this takes time in proportion to the output."""
    dims = x.dim() - 2
    dilation = tuple(dilation) if dilation is not None else (1,) * dims
    extents = [(k - 1) * d + 1 for k, d in zip(weight.shape[2:], dilation, strict=True)]
    gaps = [s > e for s, e in zip(stride, extents, strict=True)]
    if not any(gaps):
        return _TRANSPOSED[dims](x, weight, bias, stride, padding, 0, groups, dilation)
    inner_stride = [e if gap else s for s, e, gap in zip(stride, extents, gaps, strict=True)]
    inner_pad = [0 if gap else p for p, gap in zip(padding, gaps, strict=True)]
    y = _TRANSPOSED[dims](x, weight, None, inner_stride, inner_pad, 0, groups, dilation)
    for axis, (gap, s, e, p) in enumerate(zip(gaps, stride, extents, padding, strict=True), start=2):
        if not gap:
            continue
        count = x.shape[axis]  # input positions: y holds count blocks of e along this axis
        blocks = y.unflatten(axis, (count, e))
        spaced = blocks.new_zeros((*blocks.shape[: axis + 1], s, *blocks.shape[axis + 2 :]))
        spaced.narrow(axis + 1, 0, e).copy_(blocks)
        length = (count - 1) * s + e - 2 * p
        y = spaced.flatten(axis, axis + 1).narrow(axis, p, length)
    return y if bias is None else y + bias.reshape(1, -1, *([1] * dims))


class _SpacedTranspose:
    """A ``nn.ConvTranspose{1,2,3}d`` whose forward is :func:`conv_transpose` (same parameters and
    state dict)."""

    def forward(self, x: Tensor, output_size: list[int] | None = None) -> Tensor:
        if x.dtype != self.weight.dtype and x.is_floating_point():  # type: ignore[attr-defined]
            # weights kept in float32 in a bf16 net (converters.graph.precision): it computes in theirs
            return self.forward(x.to(self.weight.dtype), output_size).to(x.dtype)  # type: ignore[attr-defined]
        if output_size is not None or self.padding_mode != "zeros" or any(self.output_padding):  # type: ignore[attr-defined]
            return super().forward(x, output_size)  # type: ignore[misc]
        return conv_transpose(
            x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups  # type: ignore[attr-defined]
        )


class ConvTranspose1d(_SpacedTranspose, nn.ConvTranspose1d):
    pass


class ConvTranspose2d(_SpacedTranspose, nn.ConvTranspose2d):
    pass


class ConvTranspose3d(_SpacedTranspose, nn.ConvTranspose3d):
    pass


def _top_shape(w: Window, out_channels: int, transposed: bool) -> Callable[[list[Shape]], Shape]:
    """The top's shape from the bottom's (Caffe's ``compute_output_shape``; torch's meta kernel
    would give the same, after importing sympy on its first call)."""

    def shape(bottoms: list[Shape]) -> Shape:
        sizes = (
            _output_length(size, (k - 1) * d + 1, s, p, transposed)
            for size, k, s, p, d in zip(bottoms[0][2:], w.kernel, w.stride, w.pad, w.dilation, strict=True)
        )
        return (bottoms[0][0], out_channels, *sizes)

    return shape


def _channels(ctx: LayerContext, in_channels: int) -> tuple[int, int, int]:
    p = ctx.param("convolution_param")
    group, out_channels = int(p.get("group")), int(p.get("num_output"))
    if group < 1:
        raise ValueError(f"{ctx.where}: group must be at least 1, got {group}")
    if out_channels < 1:
        raise ValueError(f"{ctx.where}: num_output must be at least 1, got {out_channels}")
    if in_channels % group or out_channels % group:
        raise ValueError(
            f"{ctx.where}: {in_channels} input and {out_channels} output channels are not "
            f"divisible by group {group}"
        )
    return group, in_channels, out_channels


def _refuse_in_place(ctx: LayerContext, w: Window, out_channels: int, transposed: bool) -> None:
    """A (de)convolution in place: Caffe's forward pass reads the one blob with the top's sizes
    where the shapes differ (it reshapes it first), and a 1x1 window's matrix product writes the
    blob it reads; otherwise each image goes through the column buffer before its output
    overwrites it, but the backward pass computes the weights' gradient from the output."""
    if not any(bottom == top for bottom, top in zip(ctx.bottoms, ctx.tops, strict=False)):
        return
    one_by_one = all(k == 1 for k in w.kernel) and all(s == 1 for s in w.stride) and not any(w.pad)
    shapes = [s for s in ctx.bottom_shapes if s is not None]
    if one_by_one:
        why = "Caffe's matrix product of a 1x1 window then writes the blob it is still reading"
    elif any(_top_shape(w, out_channels, transposed)([s]) != tuple(s) for s in shapes):
        why = "its top has another shape, and Caffe reshapes that one blob before reading it"
    else:
        why = "Caffe's backward pass then computes the weights' gradient from its output, not its input"
    ctx.refuse_in_place(why)


@register_layer("Convolution", bottoms=(1, None), tops=(1, None), equal=True)
def convolution(ctx: LayerContext) -> Converted:
    p = ctx.param("convolution_param")
    dims, w = convolution_window(ctx)
    group = max(1, int(p.get("group")))
    group, in_channels, out_channels = _channels(
        ctx, ctx.channels(1, 0, lambda s: s[1] * group if len(s) > 1 else 0)
    )
    bias = bool(p.get("bias_term"))
    blobs = [("weight", (out_channels, in_channels // group, *w.kernel))]
    check_count(blobs[0][1], "the weight blob", ctx.where)
    _output_sizes(ctx, w, transposed=False)
    _refuse_in_place(ctx, w, out_channels, transposed=False)
    overhangs = may_overhang(w.kernel, w.stride, w.pad, w.dilation)  # (only such a window needs CaffeConvNd)
    kinds = (CaffeConv1d, CaffeConv2d, CaffeConv3d) if overhangs else (nn.Conv1d, nn.Conv2d, nn.Conv3d)
    conv = kinds[dims - 1](
        in_channels, out_channels, w.kernel, w.stride, w.pad, w.dilation, group, bias, device="meta"
    )
    if bias:
        blobs.append(("bias", (out_channels,)))
    return Converted(
        module=conv,
        blobs=blobs,
        fillers=weight_and_bias_fillers(p, bias),
        per_bottom=len(ctx.bottoms) > 1,
        output_shape=_top_shape(w, out_channels, transposed=False),
    )


@register_layer("Deconvolution", bottoms=(1, None), tops=(1, None), equal=True)
def deconvolution(ctx: LayerContext) -> Converted:
    p = ctx.param("convolution_param")
    dims, w = convolution_window(ctx)
    group, in_channels, out_channels = _channels(ctx, ctx.channels(1, 0, lambda s: s[0]))
    bias = bool(p.get("bias_term"))
    blobs = [("weight", (in_channels, out_channels // group, *w.kernel))]
    check_count(blobs[0][1], "the weight blob", ctx.where)
    _output_sizes(ctx, w, transposed=True)
    _refuse_in_place(ctx, w, out_channels, transposed=True)
    deconv = (ConvTranspose1d, ConvTranspose2d, ConvTranspose3d)[dims - 1](
        in_channels, out_channels, w.kernel, w.stride, w.pad, 0, group, bias, w.dilation, device="meta"
    )
    if bias:
        blobs.append(("bias", (out_channels,)))
    return Converted(
        module=deconv,
        blobs=blobs,
        fillers=weight_and_bias_fillers(p, bias),
        per_bottom=len(ctx.bottoms) > 1,
        output_shape=_top_shape(w, out_channels, transposed=True),
    )


def im2col(x: Tensor, kernel: tuple[int, int], stride: tuple[int, int], pad: tuple[int, int],
           dilation: tuple[int, int]) -> Tensor:  # fmt: skip
    """Caffe's Im2col: every window's values as channels, channel-major then kernel row and column
    (the order of Caffe's ``im2col_cpu``), at each output position: ``N x C*kh*kw x H' x W'``."""
    x = pad_far_end(x, kernel, stride, pad, dilation)  # (Caffe's one overhanging output)
    h = (x.shape[2] + 2 * pad[0] - (dilation[0] * (kernel[0] - 1) + 1)) // stride[0] + 1
    w = (x.shape[3] + 2 * pad[1] - (dilation[1] * (kernel[1] - 1) + 1)) // stride[1] + 1
    columns = F.unfold(x, kernel, dilation=dilation, padding=pad, stride=stride)
    return columns.reshape(x.shape[0], -1, h, w)


@register_layer("Im2col", bottoms=1, tops=1)
def im2col_layer(ctx: LayerContext) -> Converted:
    shape = ctx.bottom_shape(0)
    if len(shape) != 4:
        raise UnsupportedLayerError(f"{ctx.where}: Im2col of a {len(shape)}-axis blob (only N x C x H x W)")
    w = window(ctx.layer, 2)
    if w.axis != 2:
        raise UnsupportedLayerError(f"{ctx.where}: Im2col with axis {w.axis - 1} (only the channel axis 1)")
    check_int(w.kernel, "kernel size", ctx.where)
    check_int(w.stride, "stride", ctx.where)
    check_int(w.pad, "pad", ctx.where, low=0)
    _output_sizes(ctx, w, transposed=False)  # (Caffe's Reshape gives an empty top, its forward stops)
    kwargs = {"kernel": w.kernel, "stride": w.stride, "pad": w.pad, "dilation": w.dilation}
    return Converted(function=im2col, kwargs=kwargs)
