"""Element-wise activations: ReLU (leaky), Sigmoid, TanH, AbsVal, BNLL, ELU, Power, Exp, Log,
Threshold and PReLU, with Caffe's formulas where PyTorch has none."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..caffe.message import Message
from ..errors import NetError
from .fillers import filler_or
from .registry import Converted, LayerContext, register_layer


def power(x: Tensor, power: float, scale: float, shift: float) -> Tensor:
    """Caffe's Power: ``(shift + scale * x) ** power``."""
    y = x * scale if scale != 1 else x
    if shift != 0:
        y = y + shift
    return y if power == 1 else torch.pow(y, power)


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


@register_layer("ReLU", bottoms=1, tops=1)
def relu(ctx: LayerContext) -> Converted:
    slope = float(ctx.param("relu_param").get("negative_slope"))
    if slope == 0:
        return Converted(function=torch.relu, keeps_shape=True)
    return Converted(function=F.leaky_relu, kwargs={"negative_slope": slope}, keeps_shape=True)


@register_layer("Sigmoid", bottoms=1, tops=1)
def sigmoid(ctx: LayerContext) -> Converted:
    return Converted(function=torch.sigmoid, keeps_shape=True)


@register_layer("TanH", bottoms=1, tops=1)
def tanh(ctx: LayerContext) -> Converted:
    return Converted(function=torch.tanh, keeps_shape=True)


@register_layer("AbsVal", bottoms=1, tops=1)
def absval(ctx: LayerContext) -> Converted:
    if ctx.tops[0] == ctx.bottoms[0]:
        raise NetError(
            f"{ctx.where} cannot compute in place (Caffe refuses it): give its top a name of its own"
        )
    return Converted(function=torch.abs, keeps_shape=True)


@register_layer("BNLL", bottoms=1, tops=1)
def bnll(ctx: LayerContext) -> Converted:
    return Converted(function=F.softplus, keeps_shape=True)


@register_layer("ELU", bottoms=1, tops=1)
def elu(ctx: LayerContext) -> Converted:
    return Converted(
        function=F.elu, kwargs={"alpha": float(ctx.param("elu_param").get("alpha"))}, keeps_shape=True
    )


@register_layer("Power", bottoms=1, tops=1)
def power_layer(ctx: LayerContext) -> Converted:
    p = ctx.param("power_param")
    kwargs = {"power": float(p.get("power")), "scale": float(p.get("scale")), "shift": float(p.get("shift"))}
    return Converted(function=power, kwargs=kwargs, keeps_shape=True)


def _log_of_base(base: float, ctx: LayerContext) -> float:
    """``ln(base)``; Caffe writes e as ``base: -1`` and refuses other bases that are not positive
    or equal 1 (``LayerSetUp``'s CHECKs)."""
    if base == -1:
        return 1.0
    if not base > 0:
        raise ValueError(f"{ctx.where}: base must be strictly positive (or -1 for e), got {base:g}")
    return math.log(base)


@register_layer("Exp", bottoms=1, tops=1)
def exp(ctx: LayerContext) -> Converted:
    p = ctx.param("exp_param")
    kwargs = {
        "log_base": _log_of_base(float(p.get("base")), ctx),
        "scale": float(p.get("scale")),
        "shift": float(p.get("shift")),
    }
    return Converted(function=power_exp, kwargs=kwargs, keeps_shape=True)


@register_layer("Log", bottoms=1, tops=1)
def log_layer(ctx: LayerContext) -> Converted:
    p = ctx.param("log_param")
    log_base = _log_of_base(float(p.get("base")), ctx)
    if log_base == 0:
        raise ValueError(f"{ctx.where}: base 1 has no logarithm (log(1) = 0)")
    kwargs = {"base_scale": 1 / log_base, "scale": float(p.get("scale")), "shift": float(p.get("shift"))}
    return Converted(function=log, kwargs=kwargs, keeps_shape=True)


@register_layer("Threshold", bottoms=1, tops=1)
def threshold_layer(ctx: LayerContext) -> Converted:
    value = float(ctx.param("threshold_param").get("threshold"))
    return Converted(function=threshold, kwargs={"threshold": value}, keeps_shape=True)


@register_layer("PReLU", bottoms=1, tops=1)
def prelu(ctx: LayerContext) -> Converted:
    p = ctx.param("prelu_param")
    shared = bool(p.get("channel_shared"))
    channels = 1 if shared else ctx.channels(1, 0, lambda s: math.prod(s))
    module = nn.PReLU(channels, device="meta")
    filler = filler_or(p, "filler", Message("FillerParameter", type="constant", value=0.25))
    return Converted(
        module=module, blobs=[("weight", () if shared else (channels,))], fillers=[filler], keeps_shape=True
    )
