"""Layers of the mobile-net forks: ``ShuffleChannel`` (ShuffleNet), ``ReLU6``, the depthwise
convolution type names (``ConvolutionDepthwise``, ``DepthwiseConvolution``) and ``Axpy``
(SENet's ``a * x + y``)."""

from __future__ import annotations

from functools import partial

import torch
from torch import Tensor

from ..activations import with_caffe_gradient
from ..convolution import convolution
from ..registry import Converted, LayerContext, register_layer


def shuffle_channels(x: Tensor, group: int) -> Tensor:
    """ShuffleNet's channel shuffle: ``C = group x (C / group)`` transposed to ``(C / group) x group``."""
    n, c = x.shape[0], x.shape[1]
    rest = x.shape[2:]
    return x.reshape(n, group, c // group, *rest).transpose(1, 2).reshape(n, c, *rest)


@register_layer("ShuffleChannel", bottoms=1, tops=1)
def shuffle_channel(ctx: LayerContext) -> Converted:
    ctx.legacy_bottoms(0)
    group = int(ctx.param("shuffle_channel_param").get("group"))
    channels = ctx.bottom_shape(0)[1]
    if group < 1 or channels % group:
        raise ValueError(f"{ctx.where}: {channels} channels cannot be shuffled in {group} groups")
    return Converted(function=shuffle_channels, kwargs={"group": group}, keeps_shape=True)


def _relu6_values(x: Tensor, negative_slope: float, threshold: float) -> Tensor:
    # (the slope's term also without a slope: 0 x -inf gives the fork's NaN for an input of -inf)
    y = torch.clamp(x, min=0) + negative_slope * torch.clamp(x, max=0)
    return torch.clamp(y, max=threshold)


def relu6_backward(
    dy: Tensor, bottom: Tensor, top: Tensor | None, in_place: bool, given: Tensor,
    negative_slope: float = 0.0, threshold: float = 6.0,
) -> Tensor:  # fmt: skip
    """The fork's ``Backward_cpu``: ``dy * ((x > 0) + negative_slope * (x <= 0)) * (x < threshold)``
    on its bottom data ``x`` (0 at exactly 0 without a slope, and at exactly the threshold)."""
    inside = (bottom > 0).to(dy.dtype) + negative_slope * (bottom <= 0).to(dy.dtype)
    return dy * inside * (bottom < threshold).to(dy.dtype)


def relu6(x: Tensor, negative_slope: float = 0.0, threshold: float = 6.0) -> Tensor:
    """``min(max(x, 0) + negative_slope * min(x, 0), threshold)``, as the fork computes it, and its
    gradient (:func:`relu6_backward`; PyTorch's clamps pass it at exactly 0 and the threshold)."""
    return with_caffe_gradient(
        _relu6_values, relu6_backward, x, negative_slope=negative_slope, threshold=threshold
    )


@register_layer("ReLU6", bottoms=1, tops=1)
def relu6_layer(ctx: LayerContext) -> Converted:
    p = ctx.param("relu6_param")
    kwargs = {"negative_slope": float(p.get("negative_slope")), "threshold": float(p.get("threshold"))}
    # its backward reads the bottom: in place, its own output (with a negative slope: positive
    # where x < 0), and after later in-place layers, their values
    return Converted(
        function=relu6, kwargs=kwargs, keeps_shape=True, caffe_backward=partial(relu6_backward, **kwargs),
        reads_own_output=kwargs["negative_slope"] < 0,
    )  # fmt: skip


@register_layer("ConvolutionDepthwise", "DepthwiseConvolution", bottoms=(1, None), tops=(1, None), equal=True)
def depthwise_convolution(ctx: LayerContext) -> Converted:
    """A Convolution with one group per input channel unless ``group`` says otherwise (the forks'
    prototxts often leave ``group`` out; the weights are ``out x 1 x kh x kw``)."""
    p = ctx.param("convolution_param")
    layer = ctx.layer.copy()
    layer.set("type", "Convolution")  # the same window and blobs as a Convolution
    if int(p.get("group")) == 1:
        channels = ctx.channels(1, 0, lambda s: s[0] if len(s) == 4 and s[1] == 1 else 0)
        if channels < 1:
            raise ValueError(f"{ctx.where}: the input's channels are unknown; give the input shapes")
        param = layer.get("convolution_param").copy()
        param.set("group", channels)
        layer.set("convolution_param", param)
    ctx = LayerContext(
        layer, ctx.name, ctx.type, ctx.bottoms, ctx.tops, ctx.bottom_shapes, ctx.blob_shapes, ctx.phase
    )
    return convolution(ctx)


def axpy(a: Tensor, x: Tensor, y: Tensor) -> Tensor:
    """SENet's Axpy: ``a`` (N x C, or N x C x 1 x 1) times ``x`` plus ``y``."""
    return a.reshape(a.shape[0], a.shape[1], *([1] * (x.dim() - 2))) * x + y


@register_layer("Axpy", bottoms=3, tops=1)
def axpy_layer(ctx: LayerContext) -> Converted:
    ctx.legacy_bottoms(1)
    if len(ctx.bottoms) != 3:
        raise ValueError(f"{ctx.where}: takes three bottoms (a, x, y), got {len(ctx.bottoms)}")
    a, x, y = (ctx.bottom_shape(i) for i in range(3))
    if x != y or a[:2] != x[:2] or any(d != 1 for d in a[2:]):
        raise ValueError(
            f"{ctx.where}: needs a of N x C x 1 x 1 and x, y of one shape; "
            f"got {list(a)}, {list(x)}, {list(y)}"
        )
    return Converted(function=axpy, output_shape=lambda shapes: shapes[1])
