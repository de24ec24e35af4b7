"""C3D's 3-D layers (facebook/C3D v1.0, the Caffe of the Sports-1M model, and v1.1): Convolution3D,
Deconvolution3D and Pooling3D on ``(N, C, L, H, W)`` blobs, as C3D's ``convolution3d_layer.cpp``,
``deconvolution3d_layer.cpp`` and ``pool3d_layer.cpp`` compute them.

C3D v1.0 writes them as V1 layers (``type: CONVOLUTION3D``) with its fields in
``convolution_param`` / ``pooling_param`` (``kernel_depth``, ``temporal_stride``,
``temporal_pad``); v1.1 as ``Convolution3D`` / ``Pooling3D`` with ``convolution3d_param`` /
``pooling3d_param``. Both read the same fields with the same defaults. The kernel is square in
space (``kernel_size``) and ``kernel_depth`` long in time; ``filter_group`` only splits C3D's
matrix product (every group sees every channel) and ``group`` is never read, so neither changes
the numbers. The bias blob is C3D's 5-D ``(1, 1, 1, 1, num_output)``.
"""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...caffe.message import Message
from ...errors import NetError
from ..activations import with_caffe_gradient
from ..convolution import conv_transpose, pad_far_end
from ..fillers import weight_and_bias_fillers
from ..pooling import caffe_max_operand
from ..registry import Converted, LayerContext, check_count, register_layer


def _c3d_param(ctx: LayerContext, v11: str, v10: str) -> Message:
    """The layer's fields: v1.1's message when written, else v1.0's (``convolution_param`` /
    ``pooling_param`` carrying C3D's added fields)."""
    return ctx.param(v11) if v11 in ctx.layer else ctx.param(v10)


def _volume(ctx: LayerContext) -> tuple[int, ...]:
    shape = ctx.bottom_shape(0)
    if len(shape) != 5:
        raise NetError(f"{ctx.where}: the input must have 5 axes (N, C, L, H, W), got {list(shape)}")
    return shape


def _one(p: Message, name: str, default: int | None) -> int | None:
    """A field's value: C3D's fields are single, and BVLC's repeated ``kernel_size``/``stride``/
    ``pad`` (which carry them in v1.0's ``convolution_param``) hold one value there."""
    if p.field_spec(name) is None or name not in p:
        return default
    value = p.get(name)
    if isinstance(value, list):
        return int(value[0]) if value else default
    return int(value)


def _window(ctx: LayerContext, p: Message) -> tuple[tuple[int, ...], ...]:
    """(kernel, stride, pad) over (L, H, W), checked as C3D's SetUp checks them."""
    size, depth = _one(p, "kernel_size", None), _one(p, "kernel_depth", None)
    if size is None or depth is None:
        raise NetError(f"{ctx.where}: C3D needs kernel_size and kernel_depth")
    spatial_stride, spatial_pad = _one(p, "stride", 1), _one(p, "pad", 0)
    kernel = (depth, size, size)
    stride = (_one(p, "temporal_stride", 1), spatial_stride, spatial_stride)
    pad = (_one(p, "temporal_pad", 0), spatial_pad, spatial_pad)
    if min(kernel) < 1 or min(stride) < 1 or min(pad) < 0:
        raise NetError(
            f"{ctx.where}: kernel {list(kernel)} and stride {list(stride)} must be at least 1, "
            f"pad {list(pad)} at least 0 (depth, height, width)"
        )
    return kernel, stride, pad  # type: ignore[return-value]


class Convolution3D(nn.Module):
    """C3D's Convolution3D: a cross-correlation over (L, H, W) with zero padding and floor sizes,
    weights ``(out, in, kd, k, k)``; with ``transpose``, its Deconvolution3D, weights
    ``(in, out, kd, k, k)``."""

    def __init__(
        self,
        channels: int,
        num_output: int,
        kernel: tuple[int, ...],
        stride: tuple[int, ...],
        pad: tuple[int, ...],
        bias: bool,
        transpose: bool = False,
    ) -> None:
        super().__init__()
        shape = (channels, num_output) if transpose else (num_output, channels)
        self.weight = nn.Parameter(torch.empty(*shape, *kernel, device="meta"))
        self.bias = nn.Parameter(torch.empty(1, 1, 1, 1, num_output, device="meta")) if bias else None
        self.stride, self.pad, self.transpose = stride, pad, transpose

    def extra_repr(self) -> str:
        kind = "transposed, " if self.transpose else ""
        return f"{kind}weight={tuple(self.weight.shape)}, stride={self.stride}, pad={self.pad}"

    def forward(self, x: Tensor) -> Tensor:
        bias = self.bias.reshape(-1) if self.bias is not None else None
        if self.transpose:
            return conv_transpose(x, self.weight, bias, self.stride, self.pad)
        x = pad_far_end(x, self.weight.shape[2:], self.stride, self.pad, (1, 1, 1))
        return F.conv3d(x, self.weight, bias, self.stride, self.pad)


def _convolution(ctx: LayerContext, transpose: bool) -> Converted:
    p = _c3d_param(ctx, "convolution3d_param", "convolution_param")
    num_output = int(p.get("num_output"))
    if num_output < 1:
        raise NetError(f"{ctx.where}: num_output must be at least 1")
    shape = _volume(ctx)
    kernel, stride, pad = _window(ctx, p)
    bias = bool(p.get("bias_term"))
    if transpose:
        # C3D v1.1's Deconvolution3D reads bias_term from convolution_param, not its own message
        if "convolution3d_param" in ctx.layer:
            bias = bool(ctx.param("convolution_param").get("bias_term"))
        module = Convolution3D(shape[1], num_output, kernel, stride, pad, bias, transpose=True)
    else:
        # C3D's sizes divide in C++ (truncating toward zero): a kernel larger than the padded input
        # by less than the stride still gives one output, over zeros past the input's end
        spans = [size + 2 * q - k for size, q, k in zip(shape[2:], pad, kernel, strict=True)]
        if any(span <= -s for span, s in zip(spans, stride, strict=True)):
            raise NetError(
                f"{ctx.where}: the kernel {list(kernel)} is larger than the padded input {list(shape)}"
            )
        module = Convolution3D(shape[1], num_output, kernel, stride, pad, bias)
    blobs = [("weight", tuple(module.weight.shape))]
    if bias:
        blobs.append(("bias", (1, 1, 1, 1, num_output)))
    return Converted(module=module, blobs=blobs, fillers=weight_and_bias_fillers(p, bias))


@register_layer("Convolution3D", bottoms=1, tops=1)
def convolution3d(ctx: LayerContext) -> Converted:
    return _convolution(ctx, transpose=False)


@register_layer("Deconvolution3D", bottoms=1, tops=1)
def deconvolution3d(ctx: LayerContext) -> Converted:
    return _convolution(ctx, transpose=True)


def pooled_sizes(
    shape: tuple[int, ...], kernel: tuple[int, ...], stride: tuple[int, ...], pad: tuple[int, ...]
) -> tuple[int, ...]:
    """C3D's pooled (L, H, W): ``ceil((size + 2 pad - kernel) / stride) + 1``, with no temporal
    padding and no dropping of a last window that starts past the input."""
    return tuple(
        math.ceil((size + 2 * q - k) / s) + 1
        for size, k, s, q in zip(shape[2:], kernel, stride, pad, strict=True)
    )


class Pooling3D(nn.Module):
    """C3D's Pooling3D. MAX: each window clipped to the input, its maximum as C3D's ``std::max``
    takes it from -FLT_MAX (NaN and -inf never win: a window of nothing else gives -FLT_MAX), and
    its gradient to *every* element equal to the maximum, as C3D's backward gives it. AVE: the real
    elements' sum over the window clipped to the padded input in space and to the input in time."""

    def __init__(
        self, method: str, kernel: tuple[int, ...], stride: tuple[int, ...], pad: tuple[int, ...]
    ) -> None:
        super().__init__()
        self.method, self.kernel, self.stride, self.pad = method, kernel, stride, pad

    def extra_repr(self) -> str:
        return f"{self.method}, kernel={self.kernel}, stride={self.stride}, pad={self.pad}"

    def forward(self, x: Tensor) -> Tensor:
        out = pooled_sizes(tuple(x.shape), self.kernel, self.stride, self.pad)
        if min(out) < 1:
            raise NetError(
                f"Pooling3D: a {list(x.shape)} input leaves no output for kernel {list(self.kernel)}"
            )
        if self.method == "MAX":  # (C3D refuses padding for MAX: only ceil's windows past the end)
            window = {"kernel": self.kernel, "stride": self.stride, "out": out}
            return with_caffe_gradient(_max_values, _max_backward, x, **window)  # type: ignore[arg-type]
        padded = _padded(x, self.kernel, self.stride, self.pad, out, 0.0)
        views = _windows(padded, self.kernel, self.stride, out)
        return torch.stack(views).sum(dim=0) / self._divisor(tuple(x.shape), out, x)

    def _divisor(self, shape: tuple[int, ...], out: tuple[int, ...], x: Tensor) -> Tensor:
        """Per output position: the window's extent clipped to ``size + pad`` (space) and to the
        input (time, where there is no padding)."""
        divisor = torch.ones((), dtype=x.dtype, device=x.device)
        for axis, (size, k, s, q, o) in enumerate(
            zip(shape[2:], self.kernel, self.stride, self.pad, out, strict=True)
        ):
            starts = torch.arange(o, device=x.device) * s - q
            counts = (torch.clamp(starts + k, max=size + q) - starts).to(x.dtype)
            view = [1, 1, 1]
            view[axis] = o
            divisor = divisor * counts.reshape(view)
        return divisor


def _padded(
    x: Tensor, kernel: tuple[int, ...], stride: tuple[int, ...], pad: tuple[int, ...], out: tuple[int, ...],
    fill: float,
) -> Tensor:  # fmt: skip
    """``x`` padded with ``fill`` by ``pad`` before each axis and to the last window's end after it."""
    widths: list[int] = []  # F.pad lists the last axis first
    for size, k, s, q, o in reversed(list(zip(x.shape[2:], kernel, stride, pad, out, strict=True))):
        widths += [q, max(0, (o - 1) * s + k - q - size)]
    return F.pad(x, widths, value=fill)


def _windows(
    padded: Tensor, kernel: tuple[int, ...], stride: tuple[int, ...], out: tuple[int, ...]
) -> list[Tensor]:
    """One strided view of ``padded`` per offset in the window: view ``(a, b, c)`` holds element
    ``(a, b, c)`` of every window."""
    views = []
    for offset in itertools.product(*(range(k) for k in kernel)):
        axes = (slice(i, i + (o - 1) * s + 1, s) for i, o, s in zip(offset, out, stride, strict=True))
        views.append(padded[(Ellipsis, *axes)])
    return views


def _max_values(x: Tensor, kernel: tuple[int, ...], stride: tuple[int, ...], out: tuple[int, ...]) -> Tensor:
    lowest = torch.finfo(x.dtype).min
    operand = _padded(caffe_max_operand(x), kernel, stride, (0, 0, 0), out, lowest)
    views = _windows(operand, kernel, stride, out)
    best = views[0].clone()
    for view in views[1:]:
        torch.maximum(best, view, out=best)
    return best


def _max_backward(
    dy: Tensor, x: Tensor, y: Tensor, in_place: bool, given: Tensor,
    kernel: tuple[int, ...], stride: tuple[int, ...], out: tuple[int, ...],
) -> Tensor:  # fmt: skip
    """C3D's MAX backward: each element gets ``top_diff * (bottom == top)`` of every window that
    holds it (so a NaN or infinite top diff reaches the others as NaN, 0 x inf)."""
    lowest = torch.finfo(x.dtype).min
    padded = _padded(x, kernel, stride, (0, 0, 0), out, lowest)
    grad = torch.zeros_like(padded)
    views, diff_views = _windows(padded, kernel, stride, out), _windows(grad, kernel, stride, out)
    for values, diffs in zip(views, diff_views, strict=True):
        diffs += dy * (values == y).to(dy.dtype)
    return grad[(Ellipsis, *(slice(0, size) for size in x.shape[2:]))]


@register_layer("Pooling3D", bottoms=1, tops=1)
def pooling3d(ctx: LayerContext) -> Converted:
    p = _c3d_param(ctx, "pooling3d_param", "pooling_param")
    method = str(p.get("pool"))
    if method not in ("MAX", "AVE"):
        raise NetError(f"{ctx.where}: pooling method {method} is not supported (C3D implements MAX and AVE)")
    shape = _volume(ctx)
    kernel, stride, pad = _window(ctx, p)
    if method == "MAX" and max(pad) > 0:
        raise NetError(
            f"{ctx.where}: C3D implements padding only for AVE pooling (its SetUp refuses MAX with pad)"
        )
    out = pooled_sizes(shape, kernel, stride, pad)
    if min(out) < 1:
        raise NetError(f"{ctx.where}: pooling {list(shape)} with kernel {list(kernel)} leaves no output")
    padded = [(o - 1) * s + k for o, s, k in zip(out, stride, kernel, strict=True)]  # what forward pads to
    check_count((*shape[:2], *padded), f"with stride {list(stride)} the padded work blob", ctx.where)
    module = Pooling3D(method, kernel, stride, pad)
    return Converted(
        module=module, output_shape=lambda s: (*s[0][:2], *pooled_sizes(tuple(s[0]), kernel, stride, pad))
    )
