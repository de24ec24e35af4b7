"""Normalisations: LRN (across and within channels), MVN and BatchNorm (Caffe's scale-factor blob)."""

from __future__ import annotations

import math
from functools import partial

import torch
from torch import Tensor, nn

from .fillers import CONSTANT_ONE, CONSTANT_ZERO
from .pooling import CaffePooling
from .registry import Converted, LayerContext, check_count, register_layer


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
    return y + surrogate - surrogate.detach()


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
        return super().forward(x)


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
        return Converted(
            function=lrn_within_channel,
            kwargs={"size": size, "alpha": alpha, "beta": beta},
            keeps_shape=True,
        )
    return Converted(module=LocalResponseNorm(size, alpha, beta, k), keeps_shape=True)


@register_layer("MVN", bottoms=1, tops=1)
def mvn_layer(ctx: LayerContext) -> Converted:
    p = ctx.param("mvn_param")
    if len(ctx.bottom_shape(0)) > 4:  # Caffe reads num/channels/height/width
        raise ValueError(f"{ctx.where}: the input has {len(ctx.bottom_shape(0))} axes; MVN takes at most 4")
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
    return Converted(
        function=mvn, kwargs=kwargs, keeps_shape=True, caffe_backward=backward, clobbers_top_diff=clobbers
    )


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
