"""Eltwise: SUM (with coefficients), PROD and MAX of same-shaped bottoms."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from ..errors import NetError
from .registry import Converted, LayerContext, register_layer
from .tracing import plain_inference


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
    """Caffe's Eltwise MAX (``eltwise_layer.cpp``): bottom 0 only where it is greater than bottom 1
    (a tie, or a NaN in bottom 0, takes bottom 1), then a later bottom only where it is greater than
    the maximum so far; each position's gradient goes to the one bottom taken (Caffe's mask), where
    PyTorch's maximum would split it between ties and propagate every NaN."""
    out = torch.where(xs[0] > xs[1], xs[0], xs[1])
    for x in xs[2:]:
        out = torch.where(x > out, x, out)
    return out


def caffe_max_index(xs: Sequence[Tensor]) -> Tensor:
    """The bottom Caffe's Eltwise MAX takes at each position (``eltwise_layer.cpp``): bottom 0 only
    where it is greater than bottom 1 (a tie goes to bottom 1), then a later bottom only where it
    is greater than the maximum so far (a tie stays)."""
    with torch.no_grad():
        first = xs[0] > xs[1]
        index = torch.where(first, 0, 1)
        top = torch.where(first, xs[0], xs[1])
        for i, x in enumerate(xs[2:], start=2):
            greater = x > top
            index = torch.where(greater, i, index)
            top = torch.where(greater, x, top)
    return index


class _SumInPlace(torch.autograd.Function):
    """Caffe's Eltwise SUM computed in place over bottom 0: ``Forward_cpu`` zeroes the top (bottom
    0's memory) before adding the bottoms, so bottom 0 adds nothing; ``Backward_cpu`` scales the
    shared diff by coeff 0 for bottom 0 first, and every later bottom reads that scaled diff."""

    @staticmethod
    def forward(ctx: Any, coeffs: tuple[float, ...], *xs: Tensor) -> Tensor:
        ctx.coeffs = coeffs
        return _sum_leaving_first(coeffs, xs)

    @staticmethod
    def backward(ctx: Any, dy: Tensor) -> tuple[Tensor | None, ...]:
        first = dy * ctx.coeffs[0] if ctx.coeffs[0] != 1 else dy
        return (None, first, *(first * c if c != 1 else first for c in ctx.coeffs[1:]))


def eltwise_sum_in_place(*xs: Tensor, coeffs: Sequence[float] = ()) -> Tensor:
    """Caffe's Eltwise SUM whose top is its bottom 0 (:class:`_SumInPlace`): the other bottoms'
    weighted sum."""
    coeffs = tuple(coeffs) or (1.0,) * len(xs)
    if plain_inference(*xs):
        return _sum_leaving_first(coeffs, xs)
    return _SumInPlace.apply(coeffs, *xs)


def _sum_leaving_first(coeffs: Sequence[float], xs: Sequence[Tensor]) -> Tensor:
    out = torch.zeros_like(xs[0])
    for x, c in zip(xs[1:], coeffs[1:], strict=True):
        out = out + x * c if c != 1 else out + x
    return out


class _MaxInPlace(torch.autograd.Function):
    """Caffe's Eltwise MAX computed in place over bottom 0: ``Forward_cpu`` sets the top (bottom 0's
    memory) to -FLT_MAX before comparing, so the maximum leaves bottom 0 out; ``Backward_cpu``
    writes bottom 0's diff (zero wherever another bottom won) over the shared diff before the other
    bottoms read it, so every diff is zero."""

    @staticmethod
    def forward(ctx: Any, *xs: Tensor) -> Tensor:
        ctx.count = len(xs)
        return _max_leaving_first(xs)

    @staticmethod
    def backward(ctx: Any, dy: Tensor) -> tuple[Tensor, ...]:
        return tuple(torch.zeros_like(dy) for _ in range(ctx.count))


def eltwise_max_in_place(*xs: Tensor) -> Tensor:
    """Caffe's Eltwise MAX whose top is its bottom 0 (:class:`_MaxInPlace`)."""
    if plain_inference(*xs):
        return _max_leaving_first(xs)
    return _MaxInPlace.apply(*xs)


def _max_leaving_first(xs: Sequence[Tensor]) -> Tensor:
    out = torch.full_like(xs[0], -torch.finfo(xs[0].dtype).max)
    for i, x in enumerate(xs[1:]):  # (Caffe's comparisons: bottom 1 wins ties against -FLT_MAX)
        out = torch.where(out > x, out, x) if i == 0 else torch.where(x > out, x, out)
    return out


class _ProdInPlace(torch.autograd.Function):
    """Caffe's Eltwise PROD computed in place over bottom 0: the product as usual (each value is read
    before it is written), but ``Backward_cpu`` first writes bottom 0's diff over the shared top
    diff, so the incoming diff is lost: with ``stable_prod_grad`` bottom 0 gets ``P^2`` (P the
    product of the other bottoms) and bottom i ``T (P / b_i) P^2`` (T the top, which bottom 0's
    data has become); without it, bottom 0 gets 1 and bottom i ``T / b_i``."""

    @staticmethod
    def forward(ctx: Any, stable: bool, *xs: Tensor) -> Tensor:
        top = eltwise_prod(*xs)
        ctx.stable = stable
        ctx.save_for_backward(top, *xs)
        return top

    @staticmethod
    def backward(ctx: Any, dy: Tensor) -> tuple[Tensor | None, ...]:
        top, *xs = ctx.saved_tensors
        if not ctx.stable:
            return (None, torch.ones_like(dy), *(top / x for x in xs[1:]))
        shared = eltwise_prod(*xs[1:]) if len(xs) > 2 else xs[1]
        shared = shared * shared
        others = []
        for i in range(1, len(xs)):
            rest = [x for j, x in enumerate(xs[1:], start=1) if j != i]
            others.append((eltwise_prod(top, *rest) if rest else top) * shared)
        return (None, shared, *others)


def eltwise_prod_in_place(*xs: Tensor, stable: bool = True) -> Tensor:
    """Caffe's Eltwise PROD whose top is its bottom 0 (:class:`_ProdInPlace`)."""
    if plain_inference(*xs):
        return eltwise_prod(*xs)
    return _ProdInPlace.apply(stable, *xs)


@register_layer("Eltwise", bottoms=(2, None), tops=1)
def eltwise(ctx: LayerContext) -> Converted:
    p = ctx.param("eltwise_param")
    operation = str(p.get("operation"))
    coeffs = tuple(float(c) for c in p.get("coeff"))
    if coeffs and len(coeffs) != len(ctx.bottoms):
        raise ValueError(f"layer '{ctx.name}': {len(coeffs)} coefficients for {len(ctx.bottoms)} bottoms")
    if coeffs and operation == "PROD":  # (Caffe's LayerSetUp; MAX takes them and leaves them unread)
        raise ValueError(f"layer '{ctx.name}': Eltwise coefficients only apply to SUM, not PROD")
    first = ctx.bottom_shape(0)
    for name, shape in zip(ctx.bottoms[1:], ctx.bottom_shapes[1:], strict=True):
        if shape is not None and shape != first:  # BVLC's Reshape CHECK (the oracle's fork dropped it)
            raise NetError(
                f"{ctx.where}: all bottoms must have the same shape; '{ctx.bottoms[0]}' is {list(first)}, "
                f"'{name}' is {list(shape)}"
            )
    in_place = ctx.tops[0] == ctx.bottoms[0]  # (Caffe computes in place over bottom 0 only)
    if operation == "SUM":
        function = eltwise_sum_in_place if in_place else eltwise_sum
        return Converted(function=function, kwargs={"coeffs": coeffs} if coeffs else {}, keeps_shape=True)
    if operation == "PROD":
        if in_place:
            stable = bool(p.get("stable_prod_grad"))
            return Converted(function=eltwise_prod_in_place, kwargs={"stable": stable}, keeps_shape=True)
        return Converted(function=eltwise_prod, keeps_shape=True)
    return Converted(function=eltwise_max_in_place if in_place else eltwise_max, keeps_shape=True)
