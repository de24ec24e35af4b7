"""Caffe's fillers: how a layer's blobs are drawn when no stored weights are given."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from ..caffe.message import Message

CONSTANT_ZERO = Message("FillerParameter", type="constant", value=0.0)
CONSTANT_ONE = Message("FillerParameter", type="constant", value=1.0)


def filler_or(param: Message, field: str, default: Message | None) -> Message | None:
    """``param.<field>`` when written, else ``default``."""
    return param.get(field) if field in param else default


def weight_and_bias_fillers(param: Message, bias: bool) -> list[Message | None]:
    """Fillers of a Convolution/InnerProduct layer: ``weight_filler`` (default: fan-in scaled
    normal) and, with a bias, ``bias_filler`` (Caffe's default: constant 0)."""
    fillers = [filler_or(param, "weight_filler", None)]
    if bias:
        fillers.append(filler_or(param, "bias_filler", CONSTANT_ZERO))
    return fillers


def caffe_filler(filler: Message | None) -> Message:
    """The filler Caffe uses for a blob whose converter gives ``filler`` (``None``: the prototxt
    writes none, and ``FillerParameter``'s defaults make it constant 0)."""
    return filler if filler is not None else Message("FillerParameter")


#: Filler types that draw nothing at random: Caffe gives every run the same values.
DETERMINISTIC_FILLERS = frozenset({"constant", "bilinear"})


def is_deterministic(filler: Message | None) -> bool:
    """Whether Caffe fills a blob with ``filler`` (as :func:`caffe_filler` reads it) the same way
    on every run."""
    return str(caffe_filler(filler).get("type")) in DETERMINISTIC_FILLERS


def fill(shape: Sequence[int], filler: Message | None, generator: torch.Generator) -> Tensor:
    """A tensor drawn as Caffe's ``filler`` would draw it; without one, a fan-in scaled normal
    (std ``sqrt(2 / fan_in)``), which keeps activations alive through deep nets."""
    shape = tuple(shape)
    count = math.prod(shape)
    # Caffe's XavierFiller / MSRAFiller: fan_in = count / shape(0) (1 for a 1-D blob), fan_out =
    # count / shape(1) (count for a 1-D blob)
    fan_in = count // shape[0] if shape and shape[0] else 1
    fan_out = count // shape[1] if len(shape) > 1 and shape[1] else count
    kind = str(filler.get("type")) if filler is not None else "msra"
    if kind == "constant":
        return torch.full(shape, float(filler.get("value")))
    if kind == "gaussian":
        values = torch.randn(shape, generator=generator).mul_(float(filler.get("std")))  # in place:
        values = values.add_(float(filler.get("mean")))  # a blob of a GiB needs one GiB, not three
        sparse = int(filler.get("sparse"))
        if sparse >= 0 and shape:  # Caffe: keep each value with probability sparse / num_outputs
            keep = torch.rand(shape, generator=generator) < sparse / shape[0]
            values = values.mul_(keep)
        return values
    if kind == "uniform":
        low, high = float(filler.get("min")), float(filler.get("max"))
        return torch.rand(shape, generator=generator).mul_(high - low).add_(low)
    if kind in ("xavier", "msra"):
        norm = str(filler.get("variance_norm")) if filler is not None else "FAN_IN"
        n = max({"FAN_IN": fan_in, "FAN_OUT": fan_out, "AVERAGE": (fan_in + fan_out) / 2}[norm], 1)
        if kind == "xavier":
            bound = math.sqrt(3 / n)
            return torch.rand(shape, generator=generator).mul_(2).sub_(1).mul_(bound)
        return torch.randn(shape, generator=generator).mul_(math.sqrt(2 / n))
    if kind == "bilinear":
        if len(shape) != 4 or shape[2] != shape[3]:  # Caffe's BilinearFiller CHECKs both
            raise ValueError(f"the bilinear filler needs a square 4-D kernel, got {list(shape)}")
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
