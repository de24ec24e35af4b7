"""Element-wise activations: ReLU (leaky), Sigmoid, TanH, AbsVal, BNLL, ELU, Power, Exp, Log,
Threshold, PReLU, Clip and Swish, with Caffe's formulas where PyTorch has none, and each type's
Caffe backward where in-place computation makes it differ (``Converted.caffe_backward``)."""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..caffe.message import Message
from ..errors import NetError
from .fillers import filler_or
from .gradients import gradient_only
from .registry import Converted, LayerContext, register_layer
from .tracing import tracing


def power(x: Tensor, power: float, scale: float, shift: float) -> Tensor:
    """Caffe's Power: ``(shift + scale * x) ** power`` (where ``power * scale`` is 0, the constant
    ``shift ** power`` whatever ``x`` holds), and Caffe's gradient (:func:`power_backward`: it divides
    the top by the base, so a base of exactly 0 gives not a number where PyTorch's pow gives 0)."""
    return with_caffe_gradient(_power_values, power_backward, x, power=power, scale=scale, shift=shift)


def _power_values(x: Tensor, power: float, scale: float, shift: float) -> Tensor:
    if power * scale == 0 and not tracing():  # (Caffe's forward then sets the constant, reading no input)
        value = 1.0 if power == 0 else float(torch.tensor(shift, dtype=x.dtype).pow(power))
        return torch.full_like(x, value)
    y = x * scale if scale != 1 else x
    if shift != 0:
        y = y + shift
    return y if power == 1 else torch.pow(y, power)


class _CaffeGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, values: Callable[..., Tensor], backward: Callable[..., Tensor],
                constants: dict[str, float]) -> Tensor:  # fmt: skip
        y = values(x, **constants)
        ctx.save_for_backward(x, y)
        ctx.backward, ctx.constants = backward, constants
        return y

    @staticmethod
    def backward(ctx: Any, dy: Tensor) -> tuple[Tensor | None, ...]:
        x, y = ctx.saved_tensors
        return ctx.backward(dy, x, y, False, x, **ctx.constants), None, None, None


def with_caffe_gradient(
    values: Callable[..., Tensor], backward: Callable[..., Tensor], x: Tensor, **constants: float
) -> Tensor:
    """``values(x, **constants)``; where autograd records it, with Caffe's gradient instead of
    PyTorch's: ``backward(dy, x, y, False, x, **constants)``, a :attr:`Converted.caffe_backward` of
    the layer computed out of place."""
    if not (torch.is_grad_enabled() and x.requires_grad) or tracing():
        return values(x, **constants)
    return _CaffeGradient.apply(x, values, backward, constants)


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


# ---- Caffe's Backward_cpu of each type, (top diff, bottom data, top data) -> bottom diff, used
# where later in-place layers have overwritten the data it reads (Converted.caffe_backward)


def relu_backward(
    dy: Tensor, bottom: Tensor, top: Tensor, in_place: bool, given: Tensor, slope: float
) -> Tensor:
    return dy * ((bottom > 0).to(dy.dtype) + slope * (bottom <= 0).to(dy.dtype))


def elu_backward(
    dy: Tensor, bottom: Tensor, top: Tensor, in_place: bool, given: Tensor, alpha: float
) -> Tensor:
    return dy * ((bottom > 0).to(dy.dtype) + (alpha + top) * (bottom <= 0).to(dy.dtype))


#: Caffe's ``kBNLL_THRESHOLD`` (bnll_layer.cpp): exp's argument is capped here.
BNLL_THRESHOLD = 50.0


def bnll_backward(dy: Tensor, bottom: Tensor, top: Tensor, in_place: bool, given: Tensor) -> Tensor:
    e = torch.exp(bottom.clamp(max=BNLL_THRESHOLD))
    return dy * e / (e + 1)


def sigmoid_backward(dy: Tensor, bottom: Tensor, top: Tensor, in_place: bool, given: Tensor) -> Tensor:
    return dy * top * (1 - top)


def tanh_backward(dy: Tensor, bottom: Tensor, top: Tensor, in_place: bool, given: Tensor) -> Tensor:
    return dy * (1 - top * top)


def exp_backward(
    dy: Tensor, bottom: Tensor, top: Tensor, in_place: bool, given: Tensor, inner_scale: float
) -> Tensor:
    return dy * top * inner_scale


def log_backward(
    dy: Tensor, bottom: Tensor, top: Tensor, in_place: bool, given: Tensor,
    scale: float, shift: float, base_scale: float,
) -> Tensor:  # fmt: skip
    # in place, Caffe writes this factor over the top diff before multiplying by the top diff
    factor = (scale * base_scale) / (bottom * scale + shift)
    return factor * (factor if in_place else dy)


def power_backward(
    dy: Tensor, bottom: Tensor, top: Tensor, in_place: bool, given: Tensor,
    power: float, scale: float, shift: float,
) -> Tensor:  # fmt: skip
    diff_scale = power * scale
    if diff_scale == 0:
        return torch.zeros_like(dy)
    if power == 1:
        factor = torch.full_like(dy, diff_scale)
    elif power == 2:
        factor = bottom * (diff_scale * scale) + diff_scale * shift
    elif shift == 0:
        factor = top / bottom * power
    else:
        factor = top / (bottom * scale + shift) * diff_scale
    # in place, Caffe writes this factor over the top diff before multiplying by the top diff
    return factor * (factor if in_place else dy)


@register_layer("ReLU", bottoms=1, tops=1)
def relu(ctx: LayerContext) -> Converted:
    slope = float(ctx.param("relu_param").get("negative_slope"))
    backward = partial(relu_backward, slope=slope)
    if slope == 0:
        return Converted(function=torch.relu, keeps_shape=True, caffe_backward=backward)
    kwargs = {"negative_slope": slope}
    # in place with a negative slope, Caffe's mask (bottom > 0) reads the output: positive where x < 0
    return Converted(function=F.leaky_relu, kwargs=kwargs, keeps_shape=True, caffe_backward=backward,
                     reads_own_output=slope < 0)  # fmt: skip


@register_layer("Sigmoid", bottoms=1, tops=1)
def sigmoid(ctx: LayerContext) -> Converted:
    return Converted(function=torch.sigmoid, keeps_shape=True, caffe_backward=sigmoid_backward)


@register_layer("TanH", bottoms=1, tops=1)
def tanh(ctx: LayerContext) -> Converted:
    return Converted(function=torch.tanh, keeps_shape=True, caffe_backward=tanh_backward)


@register_layer("AbsVal", bottoms=1, tops=1)
def absval(ctx: LayerContext) -> Converted:
    if ctx.tops[0] == ctx.bottoms[0]:
        raise NetError(
            f"{ctx.where} cannot compute in place (Caffe refuses it): give its top a name of its own"
        )
    return Converted(function=torch.abs, keeps_shape=True)


@register_layer("BNLL", bottoms=1, tops=1)
def bnll(ctx: LayerContext) -> Converted:
    # in place, Caffe's backward reads its own output as the bottom: the gradient of softplus(y)
    return Converted(
        function=F.softplus, keeps_shape=True, caffe_backward=bnll_backward, reads_own_output=True
    )


@register_layer("ELU", bottoms=1, tops=1)
def elu(ctx: LayerContext) -> Converted:
    alpha = float(ctx.param("elu_param").get("alpha"))
    backward = partial(elu_backward, alpha=alpha)
    # in place with a negative alpha, the output is positive where x < 0 and Caffe's mask reads it
    return Converted(function=F.elu, kwargs={"alpha": alpha}, keeps_shape=True, caffe_backward=backward,
                     reads_own_output=alpha < 0)  # fmt: skip


@register_layer("Power", bottoms=1, tops=1)
def power_layer(ctx: LayerContext) -> Converted:
    p = ctx.param("power_param")
    kwargs = {"power": float(p.get("power")), "scale": float(p.get("scale")), "shift": float(p.get("shift"))}
    backward = partial(power_backward, **kwargs)
    return Converted(
        function=power, kwargs=kwargs, keeps_shape=True, caffe_backward=backward, clobbers_top_diff=True
    )


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
    backward = partial(exp_backward, inner_scale=kwargs["log_base"] * kwargs["scale"])
    return Converted(function=power_exp, kwargs=kwargs, keeps_shape=True, caffe_backward=backward)


@register_layer("Log", bottoms=1, tops=1)
def log_layer(ctx: LayerContext) -> Converted:
    p = ctx.param("log_param")
    log_base = _log_of_base(float(p.get("base")), ctx)
    if log_base == 0:
        raise ValueError(f"{ctx.where}: base 1 has no logarithm (log(1) = 0)")
    kwargs = {"base_scale": 1 / log_base, "scale": float(p.get("scale")), "shift": float(p.get("shift"))}
    backward = partial(log_backward, **kwargs)
    return Converted(
        function=log, kwargs=kwargs, keeps_shape=True, caffe_backward=backward, clobbers_top_diff=True
    )


@register_layer("Threshold", bottoms=1, tops=1)
def threshold_layer(ctx: LayerContext) -> Converted:
    value = float(ctx.param("threshold_param").get("threshold"))
    return Converted(function=threshold, kwargs={"threshold": value}, keeps_shape=True)


@register_layer("PReLU", bottoms=1, tops=1)
def prelu(ctx: LayerContext) -> Converted:
    ctx.legacy_bottoms()
    if len(ctx.bottom_shape(0)) < 2:  # Caffe's LayerSetUp CHECK
        raise NetError(f"{ctx.where}: the bottom needs at least 2 axes, got {list(ctx.bottom_shape(0))}")
    p = ctx.param("prelu_param")
    shared = bool(p.get("channel_shared"))
    channels = 1 if shared else ctx.channels(1, 0, lambda s: math.prod(s))
    module = nn.PReLU(channels, device="meta")
    filler = filler_or(p, "filler", Message("FillerParameter", type="constant", value=0.25))
    return Converted(
        module=module, blobs=[("weight", () if shared else (channels,))], fillers=[filler], keeps_shape=True
    )


def clip(x: Tensor, low: float, high: float) -> Tensor:
    """Caffe's Clip: ``max(min, min(x, max))`` (NaN gives ``min``), its gradient passing where
    ``min <= x <= max``."""
    capped = torch.where(x > high, torch.full_like(x, high), x)
    y = torch.where(capped > low, capped, torch.full_like(x, low))
    inside = ((x >= low) & (x <= high)).to(x.dtype)
    return y.detach() + gradient_only(x) * inside


def clip_backward(
    dy: Tensor, bottom: Tensor, top: Tensor, in_place: bool, given: Tensor, low: float, high: float
) -> Tensor:
    return dy * ((bottom >= low) & (bottom <= high)).to(dy.dtype)


@register_layer("Clip", bottoms=1, tops=1)
def clip_layer(ctx: LayerContext) -> Converted:
    p = ctx.param("clip_param")
    if "min" not in p or "max" not in p:
        raise NetError(f"{ctx.where}: clip_param needs min and max (both required in Caffe's schema)")
    kwargs = {"low": float(p.get("min")), "high": float(p.get("max"))}
    backward = partial(clip_backward, **kwargs)
    # in place, the clipped output lies in [min, max]: Caffe's mask passes the gradient everywhere
    return Converted(
        function=clip, kwargs=kwargs, keeps_shape=True, caffe_backward=backward, reads_own_output=True
    )


def swish(x: Tensor, beta: float) -> Tensor:
    """Caffe's Swish: ``x sigmoid(beta x)``."""
    return x * torch.sigmoid(x * beta if beta != 1 else x)


def swish_backward(
    dy: Tensor, bottom: Tensor, top: Tensor, in_place: bool, given: Tensor, beta: float
) -> Tensor:
    """BVLC master's Swish ``Backward_cpu``: ``dy (beta top + s (1 - beta top))`` with ``s`` the
    sigmoid its forward pass kept (of the input as it was) and ``top`` the blob as it is."""
    kept = torch.sigmoid(given * beta if beta != 1 else given)
    return dy * (beta * top + kept * (1 - beta * top))


@register_layer("Swish", bottoms=1, tops=1)
def swish_layer(ctx: LayerContext) -> Converted:
    beta = float(ctx.param("swish_param").get("beta"))
    backward = partial(swish_backward, beta=beta)
    return Converted(function=swish, kwargs={"beta": beta}, keeps_shape=True, caffe_backward=backward)
