"""Softmax, Reduction and ArgMax (Caffe's tie order and output shapes)."""

from __future__ import annotations

import math
from functools import partial

import torch
from torch import Tensor

from ..errors import NetError
from .registry import Converted, LayerContext, canonical_axis, register_layer
from .tracing import has_values


@register_layer("Softmax", bottoms=1, tops=1)
def softmax(ctx: LayerContext) -> Converted:
    axis = canonical_axis(int(ctx.param("softmax_param").get("axis")), len(ctx.bottom_shape(0)), ctx.where)
    backward = partial(softmax_backward, axis=axis)
    return Converted(function=torch.softmax, kwargs={"dim": axis}, caffe_backward=backward)


def softmax_backward(
    dy: Tensor, bottom: Tensor, top: Tensor, in_place: bool, given: Tensor, axis: int
) -> Tensor:
    """Caffe's Softmax ``Backward_cpu``: ``(dy - sum(dy * top)) * top`` over ``axis``, on the top's
    data as the blob holds it when backward runs (later layers computing in place overwrite it)."""
    return (dy - (dy * top).sum(dim=axis, keepdim=True)) * top


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


@register_layer("Reduction", bottoms=1, tops=1)
def reduction_layer(ctx: LayerContext) -> Converted:
    p = ctx.param("reduction_param")
    axis = int(p.get("axis"))
    if ctx.bottom_shapes[0] is not None:
        canonical_axis(axis, len(ctx.bottom_shape(0)), ctx.where)
    kwargs = {"operation": str(p.get("operation")), "axis": axis, "coeff": float(p.get("coeff"))}
    return Converted(
        function=reduction,
        kwargs=kwargs,
        output_shape=lambda shapes: shapes[0][: canonical_axis(axis, len(shapes[0]))],
    )


def _ranked(values: Tensor, dim: int, top_k: int) -> tuple[Tensor, Tensor]:
    """The ``top_k`` largest along ``dim``, ties ranked by index, the higher index first (as Caffe's
    sort of (value, index) pairs); lines that hold a NaN as Caffe's ``std::partial_sort`` leaves them
    (:func:`caffe_partial_sort`)."""
    size = values.shape[dim]
    flipped = values.flip(dim)
    ordered, index = torch.sort(flipped, dim=dim, descending=True, stable=True)
    ordered, index = ordered.narrow(dim, 0, top_k), (size - 1 - index).narrow(dim, 0, top_k)
    if not has_values(values) or not values.is_floating_point() or not bool(values.isnan().any()):
        return ordered, index
    lines = values.movedim(dim, -1).reshape(-1, size)
    ordered_lines = ordered.movedim(dim, -1).reshape(-1, top_k).clone()
    index_lines = index.movedim(dim, -1).reshape(-1, top_k).clone()
    for row in lines.isnan().any(dim=1).nonzero().flatten().tolist():
        picked = caffe_partial_sort(lines[row].tolist(), top_k)
        ordered_lines[row] = torch.tensor([v for v, _ in picked], dtype=values.dtype)
        index_lines[row] = torch.tensor([i for _, i in picked], dtype=index.dtype)
    shape = [*values.movedim(dim, -1).shape[:-1], top_k]
    return (ordered_lines.reshape(shape).movedim(-1, dim), index_lines.reshape(shape).movedim(-1, dim))


def caffe_partial_sort(values: list[float], top_k: int) -> list[tuple[float, int]]:
    """The first ``top_k`` of Caffe's ``std::partial_sort`` of ``(value, index)`` pairs by
    ``std::greater`` (ArgMax, Accuracy), step by step as GCC's libstdc++ does it (a heap of the first
    ``top_k``, each later pair that compares greater than its top put in its place, then the heap
    sorted). Over a NaN the pairs are not ordered, and only these steps say which come out."""
    pairs = [(value, index) for index, value in enumerate(values)]

    def greater(a: tuple[float, int], b: tuple[float, int]) -> bool:  # pair b < pair a
        return b[0] < a[0] or (not a[0] < b[0] and b[1] < a[1])

    def push(hole: int, top: int, value: tuple[float, int]) -> None:
        parent = (hole - 1) // 2
        while hole > top and greater(pairs[parent], value):
            pairs[hole] = pairs[parent]
            hole, parent = parent, (parent - 1) // 2
        pairs[hole] = value

    def adjust(hole: int, length: int, value: tuple[float, int]) -> None:
        top, child = hole, hole
        while child < (length - 1) // 2:
            child = 2 * (child + 1)
            if greater(pairs[child], pairs[child - 1]):
                child -= 1
            pairs[hole] = pairs[child]
            hole = child
        if length % 2 == 0 and child == (length - 2) // 2:
            child = 2 * (child + 1)
            pairs[hole] = pairs[child - 1]
            hole = child - 1
        push(hole, top, value)

    def pop(length: int, result: int) -> None:  # the top to ``result``, its pair into the heap
        value, pairs[result] = pairs[result], pairs[0]
        adjust(0, length, value)

    if top_k >= 2:  # make the heap
        for parent in range((top_k - 2) // 2, -1, -1):
            adjust(parent, top_k, pairs[parent])
    for i in range(top_k, len(pairs)):
        if greater(pairs[i], pairs[0]):
            pop(top_k, i)
    for end in range(top_k - 1, 0, -1):  # sort the heap
        pop(end, end)
    return pairs[:top_k]


def argmax(x: Tensor, top_k: int, out_max_val: bool, axis: int | None) -> Tensor:
    """Caffe's ArgMax: indices (as floats) of the ``top_k`` largest values along ``axis``, or with no
    axis over each item's values, shaped ``(N, 1 or 2, top_k, 1, ...)`` as Caffe shapes them."""
    if axis is not None:
        axis = axis + x.dim() if axis < 0 else axis
        value, index = _ranked(x, axis, top_k)
        return value if out_max_val else index.to(x.dtype)
    value, index = _ranked(x.reshape(x.shape[0], math.prod(x.shape[1:])), 1, top_k)  # (no item: 0 x ...)
    trailing = [1] * (max(x.dim(), 3) - 3)
    parts = [index.to(x.dtype)] + ([value] if out_max_val else [])
    return torch.stack(parts, dim=1).reshape(x.shape[0], len(parts), top_k, *trailing)


@register_layer("ArgMax", bottoms=1, tops=1)
def argmax_layer(ctx: LayerContext) -> Converted:
    p = ctx.param("argmax_param")
    axis = int(p.get("axis")) if "axis" in p else None
    top_k, shape = int(p.get("top_k")), ctx.bottom_shape(0)
    if top_k < 1:
        raise NetError(f"{ctx.where}: top_k must be at least 1, got {top_k}")
    if axis is not None:
        axis = canonical_axis(axis, len(shape), ctx.where)
    size = shape[axis] if axis is not None else math.prod(shape[1:])
    if top_k > size:
        where = f"axis {axis}" if axis is not None else "each item"
        raise NetError(f"{ctx.where}: top_k {top_k} exceeds the {size} values of {where}")
    kwargs = {"top_k": int(p.get("top_k")), "out_max_val": bool(p.get("out_max_val")), "axis": axis}
    return Converted(function=argmax, kwargs=kwargs)
