"""Normalisations: LRN (across and within channels), MVN and BatchNorm (Caffe's scale-factor blob)."""

from __future__ import annotations

import math
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .fillers import CONSTANT_ONE, CONSTANT_ZERO
from .gradients import gradient_only
from .pooling import CaffePooling
from .registry import Converted, LayerContext, check_count, register_layer
from .tracing import has_values, plain_inference


def lrn_within_channel(x: Tensor, size: int, alpha: float, beta: float) -> Tensor:
    """Caffe's LRN WITHIN_CHANNEL: ``x / (1 + alpha * avg(x^2 over size x size))^beta``."""
    pad = (size - 1) // 2
    pool = CaffePooling("AVE", (size, size), (1, 1), (pad, pad))
    return x * torch.pow(1 + alpha * pool(x * x), -beta)


def mvn(x: Tensor, normalize_variance: bool, across_channels: bool, eps: float) -> Tensor:
    """Caffe's MVN: each sample (or each sample's channel) minus its mean, divided by its standard
    deviation plus ``eps`` (the biased variance, as Caffe computes it); its gradient Caffe's."""
    start = 1 if across_channels else 2
    dims = list(range(start, x.dim()))
    centred = x - x.mean(dim=dims, keepdim=True) if dims else x - x
    if not normalize_variance:
        return centred
    variance = centred.pow(2).mean(dim=dims, keepdim=True) if dims else centred.pow(2)
    scale = (variance.sqrt() + eps).detach()
    y = (centred / scale).detach()
    if plain_inference(x):
        return y
    # Caffe's Backward_cpu: dx = (dy - mean(dy) - y mean(y dy)) / (std + eps), which leaves out
    # the eps in the variance term; this surrogate's Jacobian is exactly that. The division comes
    # first so that the centring sums its terms before they grow by 1 / (std + eps): with a zero
    # std they cancel exactly, as in Caffe, instead of swamping other layers' gradients.
    scaled = x / scale
    if dims:
        mean = scaled.mean(dim=dims, keepdim=True)
        surrogate = scaled - mean - y * (y * scaled).mean(dim=dims, keepdim=True)
    else:
        surrogate = scaled - scaled - y * y * scaled
    return y + gradient_only(surrogate)


def caffe_batch_norm(x: Tensor, mean: Tensor, var: Tensor, eps: float, global_stats: bool) -> Tensor:
    """Caffe's BatchNorm (no affine part): stored statistics, or the batch's own (biased) ones."""
    if global_stats:
        shape = [1, -1] + [1] * (x.dim() - 2)
        return (x - mean.reshape(shape)) / torch.sqrt(var.reshape(shape) + eps)
    dims = [0] + list(range(2, x.dim()))
    mu = x.mean(dim=dims, keepdim=True)
    centred = x - mu
    return centred / torch.sqrt(centred.pow(2).mean(dim=dims, keepdim=True) + eps)


class LocalResponseNorm(nn.LocalResponseNorm):
    """``nn.LocalResponseNorm``, computed in float32 for a reduced-precision input (PyTorch's CPU
    kernel it runs on, ``avg_pool3d``, has no bfloat16 one) and given back in the input's dtype."""

    def forward(self, x: Tensor) -> Tensor:
        if x.dtype in (torch.bfloat16, torch.float16):
            return super().forward(x.float()).to(x.dtype)
        return as_running_sum(x, super().forward(x), self.size)


def as_running_sum(x: Tensor, y: Tensor, size: int) -> Tensor:
    """``y``, LRN ACROSS_CHANNELS of ``x``, NaN where Caffe's is: Caffe's ``CrossChannelForward_cpu``
    keeps the window's sum of squares as a running sum over channels (add the square that enters,
    subtract the one that leaves), so a non-finite square (an infinity, a NaN, an overflow) leaves
    NaN (inf - inf, NaN - NaN) at every later channel of its pixel once it has left the window."""
    if not has_values(x) or x.dim() < 2 or x.shape[1] <= size // 2 + 1:
        return y
    bad = ~torch.isfinite(x * x)
    if not bool(bad.any()):
        return y
    left = torch.zeros_like(bad)
    after = size // 2 + 1  # the window of channel c holds channels c - size // 2 .. c + size // 2
    left[:, after:] = bad.cumsum(dim=1)[:, : x.shape[1] - after] > 0
    return y.masked_fill(left, math.nan)


@register_layer("LRN", bottoms=1, tops=1)
def lrn_layer(ctx: LayerContext) -> Converted:
    p = ctx.param("lrn_param")
    size, alpha, beta, k = (
        int(p.get("local_size")),
        float(p.get("alpha")),
        float(p.get("beta")),
        float(p.get("k")),
    )
    if size % 2 == 0:  # Caffe's LayerSetUp, for both regions
        raise ValueError(f"{ctx.where}: LRN needs an odd local_size, got {size}")
    shape = ctx.bottom_shape(0)
    if len(shape) != 4:
        raise ValueError(f"{ctx.where}: the input must have 4 axes, got {list(shape)}")
    n, c, h, w = shape  # Caffe's padded work blob must fit in a blob too
    padded = (
        (1, c + size - 1, h, w)
        if str(p.get("norm_region")) != "WITHIN_CHANNEL"
        else (n, c, h + size - 1, w + size - 1)
    )
    check_count(padded, f"local_size {size}: the padded work blob", ctx.where)
    if str(p.get("norm_region")) == "WITHIN_CHANNEL":
        in_place = ctx.tops[0] == ctx.bottoms[0]
        return Converted(
            function=lrn_within_in_place if in_place else lrn_within_channel,
            kwargs={"size": size, "alpha": alpha, "beta": beta},
            keeps_shape=True,
        )
    kwargs = {"size": size, "alpha": alpha, "beta": beta, "k": k}
    if ctx.tops[0] == ctx.bottoms[0]:
        return Converted(function=lrn_across_in_place, kwargs=kwargs, keeps_shape=True)
    # its backward reads the top's data: later layers computing in place over the top change it
    backward = partial(lrn_across_backward, **kwargs)
    module = LocalResponseNorm(size, alpha, beta, k)
    return Converted(module=module, keeps_shape=True, caffe_backward=backward)


def lrn_across_backward(
    dy: Tensor, bottom: Tensor, top: Tensor, in_place: bool, given: Tensor,
    size: int, alpha: float, beta: float, k: float,
) -> Tensor:  # fmt: skip
    """Caffe's LRN ACROSS_CHANNELS ``Backward_cpu``: ``s^-beta dy - 2 alpha beta / size x
    sum over the window of (dy top / s)``, on the top's data as the blob holds it when backward
    runs (``s`` as its forward pass kept it)."""
    scale = _lrn_scale(given, size, alpha, k)
    return scale.pow(-beta) * dy - 2 * alpha * beta / size * bottom * _window_sum(dy * top / scale, size)


def _window_sum(ratio: Tensor, size: int) -> Tensor:
    """Per channel c, the sum over channels c - (size - 1) / 2 .. c + size / 2 (Caffe's padded
    accumulation in its backward)."""
    padded = F.pad(ratio.unsqueeze(1), (0, 0, 0, 0, (size - 1) // 2, size // 2)).squeeze(1)
    return padded.unfold(1, size, 1).sum(-1)


def _lrn_scale(x: Tensor, size: int, alpha: float, k: float) -> Tensor:
    """LRN's ``k + alpha / size * sum of x^2`` over ``size`` channels centred on each."""
    squares = F.pad(x.pow(2).unsqueeze(1), (0, 0, 0, 0, size // 2, (size - 1) // 2)).squeeze(1)
    return k + alpha / size * squares.unfold(1, size, 1).sum(-1)


class _AcrossInPlace(torch.autograd.Function):
    """Caffe's LRN ACROSS_CHANNELS computed in place: ``Forward_cpu`` writes ``s^-beta`` over the
    input and then multiplies by "the input", giving ``s^(-2 beta)``; ``Backward_cpu`` writes
    ``s^-beta`` over the shared diff and multiplies it by "the top diff" (the incoming diff is
    lost), and reads the top where it would read the input."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, size: int, alpha: float, beta: float, k: float) -> Tensor:
        scale = _lrn_scale(x, size, alpha, k)
        top = as_running_sum(x, scale.pow(-2 * beta), size)
        ctx.save_for_backward(scale, top)
        ctx.constants = (size, alpha, beta)
        return top

    @staticmethod
    def backward(ctx: Any, dy: Tensor) -> tuple[Tensor | None, ...]:
        scale, top = ctx.saved_tensors
        size, alpha, beta = ctx.constants
        # s^-beta is written over the shared diff, then multiplied by "the top diff", itself
        diff = scale.pow(-2 * beta)
        ratio = diff * top / scale
        return diff - 2 * alpha * beta / size * top * _window_sum(ratio, size), None, None, None, None


class _WithinInPlace(torch.autograd.Function):
    """Caffe's LRN WITHIN_CHANNEL computed in place: the forward value as usual; its backward (its
    inner Split, Power, Pooling, Eltwise PROD layers) reads the input through the Split, which
    shares the blob the output overwrote, so the output ``y`` stands in for ``x`` where the product
    and the square read it: ``P dy + 2 y pool'(power'(y dy))``."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, size: int, alpha: float, beta: float) -> Tensor:
        top = lrn_within_channel(x, size, alpha, beta)
        ctx.save_for_backward(x, top)
        ctx.constants = (size, alpha, beta)
        return top

    @staticmethod
    def backward(ctx: Any, dy: Tensor) -> tuple[Tensor | None, ...]:
        x, top = ctx.saved_tensors
        size, alpha, beta = ctx.constants
        pad = (size - 1) // 2
        pool = CaffePooling("AVE", (size, size), (1, 1), (pad, pad))
        with torch.enable_grad():
            squares = x.detach().pow(2).requires_grad_(True)
            averaged = pool(squares)
            power = torch.pow(1 + alpha * averaged, -beta)
            (to_squares,) = torch.autograd.grad(power, squares, top * dy)
        return power.detach() * dy + 2 * top * to_squares, None, None, None


def lrn_within_in_place(x: Tensor, size: int, alpha: float, beta: float) -> Tensor:
    """Caffe's LRN WITHIN_CHANNEL whose top is its bottom (:class:`_WithinInPlace`)."""
    if plain_inference(x):
        return lrn_within_channel(x, size, alpha, beta)
    return _WithinInPlace.apply(x, size, alpha, beta)


def lrn_across_in_place(x: Tensor, size: int, alpha: float, beta: float, k: float) -> Tensor:
    """Caffe's LRN ACROSS_CHANNELS whose top is its bottom (:class:`_AcrossInPlace`)."""
    if plain_inference(x):
        return as_running_sum(x, _lrn_scale(x, size, alpha, k).pow(-2 * beta), size)
    return _AcrossInPlace.apply(x, size, alpha, beta, k)


@register_layer("MVN", bottoms=1, tops=1)
def mvn_layer(ctx: LayerContext) -> Converted:
    p = ctx.param("mvn_param")
    ctx.legacy_bottoms(0)
    kwargs = {
        "normalize_variance": bool(p.get("normalize_variance")),
        "across_channels": bool(p.get("across_channels")),
        "eps": float(p.get("eps")),
    }
    # Caffe's backward reads the top's data (and the deviation kept from the forward pass): later
    # layers computing in place over the top change it; in place, it also overwrites the top diff
    # it reads (with normalize_variance)
    backward = partial(mvn_backward, **kwargs)
    clobbers = kwargs["normalize_variance"] and ctx.tops[0] == ctx.bottoms[0]
    if len(ctx.bottom_shape(0)) < 4:  # Caffe's Reshape gives the top (num, channels, height, width)
        return Converted(
            function=mvn_legacy_4d, kwargs=kwargs, output_shape=lambda shapes: _legacy_4d(shapes[0]),
            caffe_backward=partial(mvn_backward_legacy_4d, **kwargs), clobbers_top_diff=clobbers,
        )  # fmt: skip
    return Converted(
        function=mvn, kwargs=kwargs, keeps_shape=True, caffe_backward=backward, clobbers_top_diff=clobbers
    )


def _legacy_4d(shape: tuple[int, ...]) -> tuple[int, ...]:
    """A shape of fewer than 4 axes as Blob's legacy accessors read it: the missing axes are 1."""
    return (*shape, *(1,) * (4 - len(shape)))


def mvn_legacy_4d(x: Tensor, normalize_variance: bool, across_channels: bool, eps: float) -> Tensor:
    """:func:`mvn` of a blob of fewer than 4 axes, its top of 4 as Caffe's MVN shapes it."""
    return mvn(x.reshape(_legacy_4d(tuple(x.shape))), normalize_variance, across_channels, eps)


def mvn_backward_legacy_4d(
    dy: Tensor, bottom: Tensor, top: Tensor, in_place: bool, given: Tensor, **constants: Any
) -> Tensor:
    """:func:`mvn_backward` for :func:`mvn_legacy_4d`: the bottom's gradient in the bottom's shape."""
    four = _legacy_4d(tuple(bottom.shape))
    dx = mvn_backward(dy, bottom.reshape(four), top, in_place, given.reshape(four), **constants)
    return dx.reshape(bottom.shape)


def mvn_backward(
    dy: Tensor, bottom: Tensor, top: Tensor, in_place: bool, given: Tensor,
    normalize_variance: bool, across_channels: bool, eps: float,
) -> Tensor:  # fmt: skip
    """Caffe's MVN ``Backward_cpu`` on the top's data as the blob holds it when backward runs:
    ``dy - mean(dy)``, and with ``normalize_variance`` ``(dy - mean(dy) - top mean(top dy)) / (std + eps)``
    (the deviation of the input it was given, as its forward pass kept it; in place, what its
    overwriting of the shared diff leaves)."""
    dims = list(range(1 if across_channels else 2, dy.dim()))

    def mean(t: Tensor) -> Tensor:
        return t.mean(dim=dims, keepdim=True) if dims else t

    if not normalize_variance:
        return dy - mean(dy)
    deviation = mean((given - mean(given)).pow(2)).sqrt() + eps
    if not in_place:
        return (dy - mean(dy) - top * mean(top * dy)) / deviation
    # in place the diffs share memory: each step overwrites the top diff the next one reads, which
    # leaves top s + s sum(top) (s = sum(top dy) over the n values); its last step, axpby(1, top
    # diff, -1/n, bottom diff), is scal then axpy without MKL (mkl_alternate.hpp, the OpenBLAS and
    # ATLAS builds), so on one buffer it gives -2/n times it; then over the deviation
    count = math.prod(dy.shape[d] for d in dims)
    s = mean(top * dy) * count
    return (top * s + s * mean(top) * count) * (-2 / count) / deviation


class BatchNorm(nn.Module):
    """Caffe's BatchNorm: normalises with stored mean/variance divided by the stored scale factor
    (or with the batch's statistics when ``use_global_stats`` is false)."""

    def __init__(
        self, channels: int, eps: float, use_global_stats: bool, moving_average_fraction: float = 0.999
    ) -> None:
        super().__init__()
        self.register_buffer("mean", torch.empty(channels, device="meta"))
        self.register_buffer("variance", torch.empty(channels, device="meta"))
        self.register_buffer("scale_factor", torch.empty(1, device="meta"))
        self.eps = eps
        self.use_global_stats = use_global_stats
        self.moving_average_fraction = moving_average_fraction

    def extra_repr(self) -> str:
        return f"channels={self.mean.shape[0]}, eps={self.eps}, use_global_stats={self.use_global_stats}"

    @torch.no_grad()
    def update_statistics(self, x: Tensor) -> None:
        """Caffe's moving averages in a training forward: ``f = maf f + 1``, ``mean = mu + maf mean``,
        ``variance = m/(m-1) var + maf variance`` (biased batch variance, ``m`` values per channel)."""
        dims = [0] + list(range(2, x.dim()))
        mu = x.mean(dim=dims)
        var = (x - mu.reshape([1, -1] + [1] * (x.dim() - 2))).pow(2).mean(dim=dims)
        m = x.numel() // max(1, x.shape[1] if x.dim() > 1 else 1)
        correction = m / (m - 1) if m > 1 else 1.0
        maf = self.moving_average_fraction
        self.scale_factor.mul_(maf).add_(1)
        self.mean.copy_(mu.to(self.mean.dtype) + self.mean * maf)
        self.variance.copy_(var.to(self.variance.dtype) * correction + self.variance * maf)

    def forward(self, x: Tensor) -> Tensor:
        if not self.use_global_stats:
            if self.training:
                self.update_statistics(x)
            return caffe_batch_norm(x, self.mean, self.variance, self.eps, False)
        factor = torch.where(
            self.scale_factor == 0, torch.zeros_like(self.scale_factor), 1 / self.scale_factor
        )
        return caffe_batch_norm(x, self.mean * factor, self.variance * factor, self.eps, True)


@register_layer("BatchNorm", bottoms=1, tops=1)
def batch_norm(ctx: LayerContext) -> Converted:
    p = ctx.param("batch_norm_param")
    channels = ctx.channels(1, 0, lambda s: math.prod(s))
    global_stats = bool(p.get("use_global_stats")) if "use_global_stats" in p else ctx.phase == "TEST"
    module = BatchNorm(channels, float(p.get("eps")), global_stats, float(p.get("moving_average_fraction")))
    blobs = [("mean", (channels,)), ("variance", (channels,)), ("scale_factor", (1,))]
    return Converted(
        module=module,
        blobs=blobs,
        fillers=[CONSTANT_ZERO] * 3,  # BatchNormLayer::LayerSetUp: every blob set to 0
        inference_fillers=[CONSTANT_ZERO, CONSTANT_ONE, CONSTANT_ONE],
        keeps_shape=True,
    )
