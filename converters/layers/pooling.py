"""Pooling (MAX, AVE; global; 1 to 3 spatial axes) with Caffe's output sizes and borders, and
MAX pooling's second top: the argmax mask, as Caffe computes it."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..caffe.message import Message
from ..caffe.traits import window
from ..errors import NetError
from .registry import Converted, LayerContext, Shape, check_int, register_layer


def caffe_pooled_size(size: int, kernel: int, stride: int, pad: int, any_pad: bool, ceil: bool) -> int:
    """The pooled length Caffe gives: ceil (or floor) rounding, then its rule dropping a last
    window that would start in the right padding (applied only when the layer has padding)."""
    span = size + 2 * pad - kernel
    pooled = (math.ceil(span / stride) if ceil else math.floor(span / stride)) + 1
    if any_pad and (pooled - 1) * stride >= size + pad:
        pooled -= 1
    return pooled


def _torch_pooled_size(size: int, kernel: int, stride: int, pad: int) -> int:
    pooled = (size + 2 * pad - kernel + stride - 1) // stride + 1
    if (pooled - 1) * stride >= size + pad:
        pooled -= 1
    return pooled


class CaffePooling(nn.Module):
    """Caffe's MAX / AVE pooling over the last ``len(kernel)`` axes (1 to 3 spatial axes).

    Output sizes follow Caffe's rounding; max windows that fall wholly in padding give
    ``-FLT_MAX``; average divisors count padding up to ``size + pad`` but not beyond, as Caffe does.
    PyTorch's own kernels run whenever they give the same result.
    """

    def __init__(
        self,
        method: str,
        kernel: Sequence[int],
        stride: Sequence[int],
        pad: Sequence[int],
        *,
        ceil: bool = True,
        global_pooling: bool = False,
        mask: bool = False,
    ) -> None:
        super().__init__()
        if method not in ("MAX", "AVE"):
            raise ValueError(f"pooling method {method} is not supported (only MAX and AVE)")
        if mask and (method != "MAX" or len(kernel) != 2):
            raise ValueError("only 2-D MAX pooling gives a mask")
        self.method = method
        self.kernel = tuple(kernel)
        self.stride = tuple(stride)
        self.pad = tuple(pad)
        self.ceil = ceil
        self.global_pooling = global_pooling
        self.mask = mask

    def extra_repr(self) -> str:
        mask = ", with mask" if self.mask else ""
        if self.global_pooling:
            return f"{self.method}, global{mask}"
        return (
            f"{self.method}, kernel={self.kernel}, stride={self.stride}, pad={self.pad}, "
            f"round={'ceil' if self.ceil else 'floor'}{mask}"
        )

    def _window(self, sizes: tuple[int, ...]) -> tuple[Shape, Shape, Shape, Shape]:
        """``(kernel, stride, pad, pooled sizes)`` over spatial ``sizes``; ``ValueError`` when
        nothing is left."""
        dims = len(sizes)
        if self.global_pooling:
            kernel, stride, pad = sizes, (1,) * dims, (0,) * dims
        else:
            kernel, stride, pad = self.kernel, self.stride, self.pad
        any_pad = any(pad)
        out = tuple(
            caffe_pooled_size(s, k, st, p, any_pad, self.ceil)
            for s, k, st, p in zip(sizes, kernel, stride, pad, strict=True)
        )
        if min(out) < 1:
            raise ValueError(
                f"pooling a {'x'.join(map(str, sizes))} input with kernel {kernel}, stride {stride}, "
                f"pad {pad} leaves no output"
            )
        return kernel, stride, pad, out

    def top_shapes(self, bottoms: list[Shape]) -> Shape | list[Shape]:
        """The top's shape (and the mask's, the same) for a bottom of shape ``bottoms[0]``."""
        shape = bottoms[0]
        dims = len(self.kernel)
        if len(shape) < dims + 1:
            raise ValueError(f"{dims}-D pooling needs at least {dims + 1} axes, got {list(shape)}")
        top = (*shape[:-dims], *self._window(tuple(shape[-dims:]))[3])
        return [top, top] if self.mask else top

    def forward(self, x: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        from .tracing import tracing

        if self.method != "MAX" or self.mask or not x.is_floating_point() or tracing():
            return self._pool(x)
        if x.device.type != "cpu":  # no host sync there (a CUDA graph may be capturing): always
            return self._pool(caffe_max_operand(x))
        y = self._pool(x)
        if not bool(torch.isfinite(y.detach().sum())):  # (a NaN or an infinity in a window: rare)
            y = self._pool(caffe_max_operand(x))
        return y

    def _pool(self, x: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        dims = len(self.kernel)
        sizes = tuple(x.shape[-dims:])
        kernel, stride, pad, out = self._window(sizes)
        if self.mask:
            return max_pool_with_mask(x, kernel, stride, pad, out)
        native = all(2 * p <= k for p, k in zip(pad, kernel, strict=True)) and out == tuple(
            _torch_pooled_size(s, k, st, p) for s, k, st, p in zip(sizes, kernel, stride, pad, strict=True)
        )
        pool_max = (F.max_pool1d, F.max_pool2d, F.max_pool3d)[dims - 1]
        pool_avg = (F.avg_pool1d, F.avg_pool2d, F.avg_pool3d)[dims - 1]
        if native and self.ceil:
            if self.method == "MAX":
                if dims == 2 and x.is_floating_point() and _plain_inference(x):
                    return max_pool_pairwise(x, kernel, stride, pad)
                return pool_max(x, kernel, stride, pad, ceil_mode=True)
            return pool_avg(x, kernel, stride, pad, ceil_mode=True, count_include_pad=True)
        # General case: pad explicitly so that every window Caffe visits exists, pool without
        # padding, and keep exactly Caffe's number of outputs. Windows that start past the padded
        # input (a stride beyond the input) see nothing: -FLT_MAX, or a sum of 0.
        inside = _windows_inside(sizes, stride, pad, out)
        widths: list[int] = []
        for s, k, st, p, o in reversed(list(zip(sizes, kernel, stride, pad, inside, strict=True))):
            widths += [p, max(0, (o - 1) * st + k - p - s)]
        empty = torch.finfo(x.dtype).min if self.method == "MAX" else 0.0
        if self.method == "MAX":
            padded = F.pad(x, widths, value=empty)
            y = pool_max(padded, kernel, stride)
        else:
            padded = F.pad(x, widths)
            y = (
                pool_avg(padded, kernel, stride, divisor_override=1)
                if dims > 1
                else (F.avg_pool1d(padded, kernel, stride) * kernel[0])
            )
        index = (Ellipsis,) + tuple(slice(0, o) for o in inside)
        y = _extend(y[index], inside, out, empty)
        if self.method == "AVE":
            divisor = torch.ones((), dtype=x.dtype, device=x.device)
            for axis, (s, k, st, p, o) in enumerate(zip(sizes, kernel, stride, pad, out, strict=True)):
                starts = torch.arange(o, device=x.device) * st - p
                counts = torch.clamp(starts + k, max=s + p) - starts
                shape = [1] * dims
                shape[axis] = o
                divisor = divisor * counts.to(x.dtype).reshape(shape)
            y = y / divisor
        return y


def caffe_max_operand(x: Tensor) -> Tensor:
    """``x`` as Caffe's MAX pooling sees it: each window's maximum starts at -FLT_MAX and takes a
    value only where it is greater (``caffe/src/caffe/layers/pooling_layer.cpp``), so NaN never wins
    and neither does -inf: both count as -FLT_MAX (a window of nothing else gives -FLT_MAX, where
    PyTorch's maximum gives NaN or -inf). Its gradient reaches every other value, +inf included
    (``nan_to_num``'s stops at every value that is not finite: a window's +inf maximum got none)."""
    lowest = torch.finfo(x.dtype).min
    return torch.where(torch.isnan(x) | (x == -math.inf), torch.full_like(x, lowest), x)


def _plain_inference(x: Tensor) -> bool:
    from .tracing import plain_inference

    return x.dim() >= 3 and plain_inference(x)


def max_pool_pairwise(x: Tensor, kernel: Sequence[int], stride: Sequence[int], pad: Sequence[int]) -> Tensor:
    """``F.max_pool2d(x, kernel, stride, pad, ceil_mode=True)`` (floating point), the same values (NaN
    included), as running maxima over strided views, rows then columns, padding left out:
    5-12x faster than PyTorch's CPU kernel, which also computes the argmax indices, on VGG's 2x2 pools
    and ResNet's 3x3 stride-2 one (``benchmarks/forward_cpu.py``). A channels-last ``x`` (a
    channels-last convolution's output: ``converters.graph.layout``) gives a channels-last result.
    Inference only: on ties PyTorch's kernel sends the gradient to one input, ``maximum`` splits it."""
    from .tracing import is_channels_last

    layout = torch.channels_last if is_channels_last(x) else torch.contiguous_format
    y = x
    for axis, k, s, p in zip((-2, -1), kernel, stride, pad, strict=True):
        y = _running_max(y, axis, k, s, p, layout)
    return y


def _running_max(
    x: Tensor, axis: int, kernel: int, stride: int, pad: int, layout: torch.memory_format
) -> Tensor:
    """Max pooling along one axis (PyTorch's ceil-mode windows, padding left out of each window)."""
    size = x.shape[axis]
    pooled = _torch_pooled_size(size, kernel, stride, pad)
    shape = list(x.shape)
    shape[axis] = pooled
    out = torch.empty(shape, dtype=x.dtype, device=x.device, memory_format=layout)

    def rows(start: int, count: int) -> Tensor:  # every stride-th row from start, count of them
        view = x.narrow(axis, start, (count - 1) * stride + 1)
        return view[(Ellipsis, slice(None, None, stride)) + (slice(None),) * (-1 - axis)]

    # windows wholly inside the input: strided views, one running maximum over the kernel's rows
    first = -(-pad // stride)
    last = min(pooled - 1, (size - kernel + pad) // stride)
    if last >= first:
        count, inside = last - first + 1, out.narrow(axis, first, last - first + 1)
        start = first * stride - pad
        if kernel == 1:
            inside.copy_(rows(start, count))
        else:
            torch.maximum(rows(start, count), rows(start + 1, count), out=inside)
            for i in range(2, kernel):
                torch.maximum(inside, rows(start + i, count), out=inside)
    # windows that reach into the padding (or past the end, ceil mode): what of them lies inside
    for o in [o for o in range(pooled) if not first <= o <= last]:
        begin, end = max(o * stride - pad, 0), min(o * stride - pad + kernel, size)
        target = out.narrow(axis, o, 1)
        target.copy_(x.narrow(axis, begin, 1))
        for i in range(begin + 1, end):
            torch.maximum(target, x.narrow(axis, i, 1), out=target)
    return out


def _windows_inside(
    sizes: Sequence[int], stride: Sequence[int], pad: Sequence[int], out: Sequence[int]
) -> tuple[int, ...]:
    """Per axis, how many of the ``out`` windows start inside the padded input."""
    return tuple(
        min(o, (s + 2 * p - 1) // st + 1) for s, st, p, o in zip(sizes, stride, pad, out, strict=True)
    )


def _extend(y: Tensor, inside: Sequence[int], out: Sequence[int], value: float) -> Tensor:
    """``y`` (``inside`` windows per axis) grown to ``out`` windows per axis with ``value``."""
    if tuple(inside) == tuple(out):
        return y
    widths: list[int] = []
    for i, o in reversed(list(zip(inside, out, strict=True))):
        widths += [0, o - i]
    return F.pad(y, widths, value=value)


def max_pool_with_mask(
    x: Tensor, kernel: Sequence[int], stride: Sequence[int], pad: Sequence[int], out: Sequence[int]
) -> tuple[Tensor, Tensor]:
    """Caffe's 2-D MAX pooling with its mask top: each window's maximum and, as a float, its index
    into the bottom's H*W plane. As in Caffe, a window is clipped to the input (padding is never a
    candidate), the first maximum in row-major order wins, only values above -FLT_MAX (so no NaN)
    count, and a window without one gives -FLT_MAX and index -1."""
    n, c, h, w = x.shape
    inside = _windows_inside((h, w), stride, pad, out)
    (kh, kw), (sh, sw), (ph, pw), (oh, ow) = kernel, stride, pad, inside
    widths = [pw, max(0, (ow - 1) * sw + kw - pw - w), ph, max(0, (oh - 1) * sh + kh - ph - h)]
    lowest = torch.finfo(x.dtype).min
    values = F.pad(torch.nan_to_num(x, nan=-math.inf), widths, value=-math.inf)
    # (float32 at least: bfloat16 holds integers exactly only up to 256, the mask must index any plane)
    index = torch.arange(h * w, dtype=torch.promote_types(x.dtype, torch.float32), device=x.device)
    index = index.reshape(1, 1, h, w)
    index = F.pad(index, widths, value=-1.0)
    windows = F.unfold(values.reshape(n * c, 1, *values.shape[-2:]), (kh, kw), stride=(sh, sw))
    where = F.unfold(index, (kh, kw), stride=(sh, sw))
    rows, cols = (values.shape[-2] - kh) // sh + 1, (values.shape[-1] - kw) // sw + 1
    arg = windows.argmax(dim=1, keepdim=True)  # the first maximum of each window (row-major)
    best = torch.gather(windows, 1, arg).squeeze(1)
    picked = torch.gather(where.expand(n * c, -1, -1), 1, arg).squeeze(1)
    found = best > lowest
    top = torch.where(found, best, torch.full_like(best, lowest))
    mask = torch.where(found, picked, torch.full_like(picked, -1.0))
    shape = (n, c, rows, cols)
    top, mask = top.reshape(shape)[..., :oh, :ow], mask.reshape(shape)[..., :oh, :ow]
    return _extend(top, inside, out, lowest), _extend(mask, inside, out, -1.0)


def pooling_rounds_up(p: Message) -> bool:
    """Whether a pooling layer's output size rounds up: BVLC's ``round_mode`` (CEIL by default),
    or the ``ceil_mode: false`` of OpenCV's schema (and the DenseNet releases made with it), which
    rounds down."""
    if "ceil_mode" in p:
        return bool(p.get("ceil_mode"))
    return str(p.get("round_mode")) == "CEIL"


@register_layer("Pooling", bottoms=1, tops=(1, 2))
def pooling(ctx: LayerContext) -> Converted:
    p = ctx.param("pooling_param")
    method = str(p.get("pool"))
    if method not in ("MAX", "AVE"):
        raise ValueError(f"{ctx.where}: pooling method {method} is not supported (only MAX and AVE)")
    mask = len(ctx.tops) == 2
    if mask and method != "MAX":
        raise NetError(f"{ctx.where}: only MAX pooling has a second top (the mask); {method} makes one top")
    shape = ctx.bottom_shapes[0] if ctx.bottom_shapes else None
    if shape is not None and len(shape) != 4:
        raise NetError(
            f"{ctx.where}: the input must have 4 axes (num, channels, height, width), got {list(shape)}"
        )
    ctx.refuse_in_place(
        f"Caffe's {method} pooling sets its top to {'-FLT_MAX' if method == 'MAX' else '0'} before reading "
        "its bottom, the same memory in place, so that every output is that value"
    )
    w = window(ctx.layer, 2)
    outputs = 2 if mask else 1
    if w.global_pooling:
        module = CaffePooling(method, (1, 1), (1, 1), (0, 0), global_pooling=True, mask=mask)
        return Converted(module=module, outputs=outputs, output_shape=module.top_shapes)
    check_int(w.kernel, "kernel size", ctx.where)
    check_int(w.stride, "stride", ctx.where)
    check_int(w.pad, "pad", ctx.where, low=0)
    if any(pd >= k for pd, k in zip(w.pad, w.kernel, strict=True)):
        raise ValueError(f"{ctx.where}: pad {list(w.pad)} must be smaller than the kernel {list(w.kernel)}")
    ceil = pooling_rounds_up(p)
    module = CaffePooling(method, w.kernel, w.stride, w.pad, ceil=ceil, mask=mask)
    return Converted(module=module, outputs=outputs, output_shape=module.top_shapes)


class SpatialPyramidPooling(nn.Module):
    """Caffe's SPP: for each level ``l`` below ``pyramid_height``, a pooling of ``2^l x 2^l`` bins
    over the whole input (kernel ``ceil(size / bins)``, stride the kernel, padding half the
    shortfall rounded up, Caffe's ceil rounding), each flattened to ``(N, C * bins^2)`` and
    concatenated; a pyramid of height 1 is the one pooling, unflattened ``(N, C, 1, 1)``."""

    def __init__(self, method: str, pyramid_height: int) -> None:
        super().__init__()
        self.method = method
        self.pyramid_height = pyramid_height

    def extra_repr(self) -> str:
        return f"{self.method}, pyramid_height={self.pyramid_height}"

    def forward(self, x: Tensor) -> Tensor:
        height, width = x.shape[-2:]
        levels = []
        for level in range(self.pyramid_height):
            geometry = spp_level_geometry(level, height, width)
            levels.append(CaffePooling(self.method, *geometry)(x))
        if self.pyramid_height == 1:
            return levels[0]
        return torch.cat([y.flatten(1) for y in levels], dim=1)


def spp_level_geometry(level: int, height: int, width: int) -> tuple[tuple[int, int], ...]:
    """Kernel, stride and pad of SPP's pooling at ``level`` (``SPPLayer::GetPoolingParam``); an
    error when the padding reaches the kernel, which Caffe's pooling refuses."""
    bins = 2**level
    kernel = tuple(math.ceil(size / bins) for size in (height, width))
    pad = tuple((k * bins - size + 1) // 2 for k, size in zip(kernel, (height, width), strict=True))
    if any(p >= k for p, k in zip(pad, kernel, strict=True)):
        raise ValueError(
            f"SPP: level {level} ({bins}x{bins} bins) of a {height}x{width} input needs pad {list(pad)} "
            f"against kernel {list(kernel)}; Caffe's pooling refuses a pad that reaches the kernel: "
            "use a smaller pyramid_height or a larger input"
        )
    return kernel, kernel, pad


@register_layer("SPP", bottoms=1, tops=1)
def spp(ctx: LayerContext) -> Converted:
    p = ctx.param("spp_param")
    method = str(p.get("pool"))
    if method not in ("MAX", "AVE"):
        raise ValueError(f"{ctx.where}: pooling method {method} is not supported (only MAX and AVE)")
    height = int(p.get("pyramid_height"))
    if height < 1:
        raise NetError(f"{ctx.where}: spp_param needs pyramid_height of at least 1")
    shape = ctx.bottom_shape(0)
    if len(shape) != 4:
        raise NetError(f"{ctx.where}: the input must have 4 axes (N, C, H, W), got {list(shape)}")
    for level in range(height):
        try:
            spp_level_geometry(level, shape[2], shape[3])
        except ValueError as exc:
            raise NetError(f"{ctx.where}: {str(exc).removeprefix('SPP: ')}") from None

    def output_shape(shapes: list[Shape]) -> Shape:
        n, c = shapes[0][:2]
        return (n, c, 1, 1) if height == 1 else (n, c * sum(4**level for level in range(height)))

    return Converted(module=SpatialPyramidPooling(method, height), output_shape=output_shape)
