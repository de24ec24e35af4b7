"""Caffe's layer arithmetic as PyTorch functions and modules, exact where PyTorch's defaults differ.

Everything here works on any batch size, any spatial size Caffe accepts, CPU or CUDA, and on
``meta`` tensors (used to infer blob shapes without computing).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "CaffePooling",
    "caffe_crop",
    "caffe_pooled_size",
    "eltwise_max",
    "eltwise_prod",
    "eltwise_sum",
    "scale_by_blob",
    "caffe_reshape",
    "caffe_slice",
    "caffe_batch_norm",
    "lrn_within_channel",
    "power",
    "softmax_with_loss",
    "accuracy",
    "inner_product",
    "concat",
    "power_exp",
    "threshold",
    "log",
    "mvn",
    "reduction",
    "tile",
    "argmax",
]


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
    ) -> None:
        super().__init__()
        if method not in ("MAX", "AVE"):
            raise ValueError(f"pooling method {method} is not supported (only MAX and AVE)")
        self.method = method
        self.kernel = tuple(kernel)
        self.stride = tuple(stride)
        self.pad = tuple(pad)
        self.ceil = ceil
        self.global_pooling = global_pooling

    def extra_repr(self) -> str:
        if self.global_pooling:
            return f"{self.method}, global"
        return (
            f"{self.method}, kernel={self.kernel}, stride={self.stride}, pad={self.pad}, "
            f"round={'ceil' if self.ceil else 'floor'}"
        )

    def forward(self, x: Tensor) -> Tensor:
        dims = len(self.kernel)
        sizes = tuple(x.shape[-dims:])
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
        native = all(2 * p <= k for p, k in zip(pad, kernel, strict=True)) and out == tuple(
            _torch_pooled_size(s, k, st, p) for s, k, st, p in zip(sizes, kernel, stride, pad, strict=True)
        )
        pool_max = (F.max_pool1d, F.max_pool2d, F.max_pool3d)[dims - 1]
        pool_avg = (F.avg_pool1d, F.avg_pool2d, F.avg_pool3d)[dims - 1]
        if native and self.ceil:
            if self.method == "MAX":
                return pool_max(x, kernel, stride, pad, ceil_mode=True)
            return pool_avg(x, kernel, stride, pad, ceil_mode=True, count_include_pad=True)
        # General case: pad explicitly so that every window Caffe visits exists, pool without
        # padding, and keep exactly Caffe's number of outputs.
        widths: list[int] = []
        for s, k, st, p, o in reversed(list(zip(sizes, kernel, stride, pad, out, strict=True))):
            widths += [p, max(0, (o - 1) * st + k - p - s)]
        if self.method == "MAX":
            padded = F.pad(x, widths, value=torch.finfo(x.dtype).min)
            y = pool_max(padded, kernel, stride)
        else:
            padded = F.pad(x, widths)
            y = (
                pool_avg(padded, kernel, stride, divisor_override=1)
                if dims > 1
                else (F.avg_pool1d(padded, kernel, stride) * kernel[0])
            )
        index = (Ellipsis,) + tuple(slice(0, o) for o in out)
        y = y[index]
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


def caffe_crop(x: Tensor, reference: Tensor, axis: int, offsets: Sequence[int]) -> Tensor:
    """Caffe's Crop: axes ``axis..`` of ``x`` cut to ``reference``'s size, starting at ``offsets``
    (one offset for all those axes, or one per axis)."""
    axis = axis + x.dim() if axis < 0 else axis
    cropped = x.dim() - axis
    if len(offsets) not in (0, 1, cropped):
        raise ValueError(f"crop needs 0, 1 or {cropped} offsets, got {len(offsets)}")
    for i in range(axis, x.dim()):
        offset = 0 if not offsets else offsets[0] if len(offsets) == 1 else offsets[i - axis]
        want = reference.shape[i]
        if offset + want > x.shape[i]:
            raise ValueError(
                f"crop of axis {i}: offset {offset} + size {want} exceeds the input's {x.shape[i]}"
            )
        if offset or want != x.shape[i]:
            x = x.narrow(i, offset, want)
    return x


def eltwise_sum(*xs: Tensor, coeffs: Sequence[float] = ()) -> Tensor:
    """Caffe's Eltwise SUM, with optional per-bottom coefficients."""
    if not coeffs:
        out = xs[0]
        for x in xs[1:]:
            out = out + x
        return out
    out = xs[0] * coeffs[0] if coeffs[0] != 1 else xs[0]
    for x, c in zip(xs[1:], coeffs[1:], strict=True):
        out = out + x * c if c != 1 else out + x
    return out


def eltwise_prod(*xs: Tensor) -> Tensor:
    """Caffe's Eltwise PROD."""
    out = xs[0]
    for x in xs[1:]:
        out = out * x
    return out


def eltwise_max(*xs: Tensor) -> Tensor:
    """Caffe's Eltwise MAX."""
    out = xs[0]
    for x in xs[1:]:
        out = torch.maximum(out, x)
    return out


def scale_by_blob(x: Tensor, scale: Tensor, axis: int, bias: Tensor | None = None) -> Tensor:
    """``x * scale (+ bias)``, with ``scale``'s axes aligned to ``x``'s axes from ``axis`` on."""
    axis = axis + x.dim() if axis < 0 else axis
    shape = [1] * axis + list(scale.shape) + [1] * (x.dim() - axis - scale.dim())
    y = x * scale.reshape(shape)
    if bias is not None:
        y = y + bias.reshape(shape)
    return y


def inner_product(x: Tensor, weight: Tensor, bias: Tensor | None, axis: int, transpose: bool) -> Tensor:
    """Caffe's InnerProduct: axes ``axis..`` flattened, then a matrix product."""
    axis = axis + x.dim() if axis < 0 else axis
    flat = x.flatten(axis) if axis < x.dim() - 1 else x
    return F.linear(flat, weight.t() if transpose else weight, bias)


def caffe_reshape(x: Tensor, dims: Sequence[int], axis: int, num_axes: int) -> Tensor:
    """Caffe's Reshape: axes ``[axis, axis+num_axes)`` replaced by ``dims`` (0 copies, -1 infers)."""
    ndim = x.dim()
    start = axis + ndim + 1 if axis < 0 else axis
    end = ndim if num_axes == -1 else start + num_axes
    if not 0 <= start <= ndim or end > ndim:
        raise ValueError(f"reshape axis {axis} / num_axes {num_axes} do not fit a {ndim}-D blob")
    new = []
    for i, d in enumerate(dims):
        if d == 0:
            new.append(x.shape[start + i])
        else:
            new.append(d)
    shape = list(x.shape[:start]) + new + list(x.shape[end:])
    return x.reshape(shape)


def caffe_slice(x: Tensor, axis: int, points: Sequence[int], count: int) -> tuple[Tensor, ...]:
    """Caffe's Slice into ``count`` parts at ``points`` (or equal parts when no points are given)."""
    axis = axis + x.dim() if axis < 0 else axis
    size = x.shape[axis]
    if points:
        bounds = [0, *points, size]
    else:
        if size % count:
            raise ValueError(f"cannot slice axis {axis} of size {size} into {count} equal parts")
        step = size // count
        bounds = [i * step for i in range(count + 1)]
    return tuple(x.narrow(axis, a, b - a) for a, b in zip(bounds[:-1], bounds[1:], strict=True))


def caffe_batch_norm(x: Tensor, mean: Tensor, var: Tensor, eps: float, global_stats: bool) -> Tensor:
    """Caffe's BatchNorm (no affine part): stored statistics, or the batch's own (biased) ones."""
    if global_stats:
        shape = [1, -1] + [1] * (x.dim() - 2)
        return (x - mean.reshape(shape)) / torch.sqrt(var.reshape(shape) + eps)
    dims = [0] + list(range(2, x.dim()))
    mu = x.mean(dim=dims, keepdim=True)
    centred = x - mu
    return centred / torch.sqrt(centred.pow(2).mean(dim=dims, keepdim=True) + eps)


def lrn_within_channel(x: Tensor, size: int, alpha: float, beta: float) -> Tensor:
    """Caffe's LRN WITHIN_CHANNEL: ``x / (1 + alpha * avg(x^2 over size x size))^beta``."""
    pad = (size - 1) // 2
    pool = CaffePooling("AVE", (size, size), (1, 1), (pad, pad))
    return x * torch.pow(1 + alpha * pool(x * x), -beta)


def power(x: Tensor, power: float, scale: float, shift: float) -> Tensor:
    """Caffe's Power: ``(shift + scale * x) ** power``."""
    y = x * scale if scale != 1 else x
    if shift != 0:
        y = y + shift
    return y if power == 1 else torch.pow(y, power)


def softmax_with_loss(
    score: Tensor, label: Tensor, axis: int, ignore_label: int | None, normalization: str
) -> Tensor:
    """Caffe's SoftmaxWithLoss value (a 0-D tensor), with its normalization modes."""
    axis = axis + score.dim() if axis < 0 else axis
    log_prob = F.log_softmax(score, dim=axis)
    log_prob = torch.clamp(log_prob, min=math.log(torch.finfo(torch.float32).tiny))
    moved = log_prob.movedim(axis, -1).reshape(-1, score.shape[axis])
    target = label.reshape(-1).long()
    valid = torch.ones_like(target, dtype=torch.bool) if ignore_label is None else target != ignore_label
    safe = torch.where(valid, target, torch.zeros_like(target))
    picked = moved.gather(1, safe.unsqueeze(1)).squeeze(1)
    total = -(picked * valid.to(picked.dtype)).sum()
    outer = math.prod(score.shape[:axis])
    inner = math.prod(score.shape[axis + 1 :])
    if normalization == "FULL":
        normalizer = torch.tensor(float(outer * inner), device=score.device)
    elif normalization == "VALID":
        normalizer = (
            valid.sum().to(score.dtype)
            if ignore_label is not None
            else torch.tensor(float(outer * inner), device=score.device)
        )
    elif normalization == "BATCH_SIZE":
        normalizer = torch.tensor(float(outer), device=score.device)
    elif normalization == "NONE":
        normalizer = torch.tensor(1.0, device=score.device)
    else:
        raise ValueError(f"unknown loss normalization {normalization}")
    return total / torch.clamp(normalizer.to(score.dtype), min=1.0)


def accuracy(
    score: Tensor, label: Tensor, axis: int, top_k: int, ignore_label: int | None, per_class: bool = False
) -> Tensor | tuple[Tensor, Tensor]:
    """Caffe's Accuracy: the share of non-ignored positions whose label is among the ``top_k``
    scores (ties ranked by class index, higher first; NaN when every label is ignored), and with
    ``per_class`` also each class's accuracy (0 for classes that do not occur)."""
    axis = axis + score.dim() if axis < 0 else axis
    classes = score.shape[axis]
    moved = score.movedim(axis, -1).reshape(-1, classes)
    target = label.reshape(-1).long()
    valid = torch.ones_like(target, dtype=torch.bool) if ignore_label is None else target != ignore_label
    safe = torch.where(valid, target, torch.zeros_like(target))
    true_score = moved.gather(1, safe.unsqueeze(1))
    index = torch.arange(classes, device=score.device).unsqueeze(0)
    ahead = (moved > true_score) | ((moved == true_score) & (index > safe.unsqueeze(1)))
    correct = (ahead.sum(dim=1) < top_k) & valid
    overall = correct.sum().to(score.dtype) / valid.sum().to(score.dtype)
    if not per_class:
        return overall
    seen = torch.bincount(safe[valid], minlength=classes).to(score.dtype)
    hits = torch.bincount(safe[correct], minlength=classes).to(score.dtype)
    return overall, torch.where(seen > 0, hits / seen.clamp(min=1), torch.zeros_like(seen))


def concat(*xs: Tensor, dim: int) -> Tensor:
    """Caffe's Concat along ``dim``."""
    return torch.cat(xs, dim=dim)


def power_exp(x: Tensor, log_base: float, scale: float, shift: float) -> Tensor:
    """Caffe's Exp: ``base ** (shift + scale * x)``, given ``log(base)``."""
    return torch.exp((shift + scale * x) * log_base)


def threshold(x: Tensor, threshold: float) -> Tensor:
    """Caffe's Threshold: 1 where ``x > threshold``, else 0."""
    return (x > threshold).to(x.dtype)


def log(x: Tensor, base_scale: float, scale: float, shift: float) -> Tensor:
    """Caffe's Log: ``log(shift + scale * x) / log(base)``, given ``1 / log(base)``."""
    y = x * scale if scale != 1 else x
    if shift != 0:
        y = y + shift
    y = torch.log(y)
    return y * base_scale if base_scale != 1 else y


def mvn(x: Tensor, normalize_variance: bool, across_channels: bool, eps: float) -> Tensor:
    """Caffe's MVN: each sample (or each sample's channel) minus its mean, divided by its standard
    deviation plus ``eps`` (the biased variance, as Caffe computes it)."""
    start = 1 if across_channels else 2
    dims = list(range(start, x.dim()))
    centred = x - x.mean(dim=dims, keepdim=True) if dims else x - x
    if not normalize_variance:
        return centred
    variance = centred.pow(2).mean(dim=dims, keepdim=True) if dims else centred.pow(2)
    return centred / (variance.sqrt() + eps)


def reduction(x: Tensor, operation: str, axis: int, coeff: float) -> Tensor:
    """Caffe's Reduction over all axes from ``axis`` on (SUM, ASUM, SUMSQ, MEAN), times ``coeff``."""
    axis = axis + x.dim() if axis < 0 else axis
    flat = x.reshape(*x.shape[:axis], -1)
    if operation == "SUM":
        y = flat.sum(dim=-1)
    elif operation == "ASUM":
        y = flat.abs().sum(dim=-1)
    elif operation == "SUMSQ":
        y = flat.pow(2).sum(dim=-1)
    elif operation == "MEAN":
        y = flat.mean(dim=-1)
    else:
        raise ValueError(f"unknown reduction {operation}")
    return y * coeff if coeff != 1 else y


def tile(x: Tensor, axis: int, tiles: int) -> Tensor:
    """Caffe's Tile: ``tiles`` copies of the blob along ``axis``."""
    axis = axis + x.dim() if axis < 0 else axis
    repeats = [1] * x.dim()
    repeats[axis] = tiles
    return x.repeat(repeats)


def _ranked(values: Tensor, dim: int, top_k: int) -> tuple[Tensor, Tensor]:
    """The ``top_k`` largest along ``dim``, ties ranked by index, the higher index first (as Caffe's
    sort of (value, index) pairs)."""
    size = values.shape[dim]
    flipped = values.flip(dim)
    ordered, index = torch.sort(flipped, dim=dim, descending=True, stable=True)
    return ordered.narrow(dim, 0, top_k), (size - 1 - index).narrow(dim, 0, top_k)


def argmax(x: Tensor, top_k: int, out_max_val: bool, axis: int | None) -> Tensor:
    """Caffe's ArgMax: indices (as floats) of the ``top_k`` largest values along ``axis``, or with no
    axis over each item's values, shaped ``(N, 1 or 2, top_k, 1, ...)`` as Caffe shapes them."""
    if axis is not None:
        axis = axis + x.dim() if axis < 0 else axis
        value, index = _ranked(x, axis, top_k)
        return value if out_max_val else index.to(x.dtype)
    value, index = _ranked(x.reshape(x.shape[0], -1), 1, top_k)
    trailing = [1] * (max(x.dim(), 3) - 3)
    parts = [index.to(x.dtype)] + ([value] if out_max_val else [])
    return torch.stack(parts, dim=1).reshape(x.shape[0], len(parts), top_k, *trailing)
