"""Layers that rearrange blobs: Concat, Slice, Flatten, Reshape, Crop and Tile."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ..errors import NetError
from .registry import Converted, LayerContext, Shape, canonical_axis, register_layer


def concat(*xs: Tensor, dim: int) -> Tensor:
    """Caffe's Concat along ``dim``."""
    return torch.cat(xs, dim=dim)


def _concat_shape(shapes: list[Shape], axis: int) -> Shape:
    first = list(shapes[0])
    axis = canonical_axis(axis, len(first))
    for shape in shapes[1:]:
        others_differ = len(shape) != len(first) or any(
            a != b for i, (a, b) in enumerate(zip(shape, first, strict=True)) if i != axis
        )
        if others_differ:
            raise ValueError(f"cannot concatenate shapes {[list(s) for s in shapes]} along axis {axis}")
    first[axis] = sum(shape[axis] for shape in shapes)
    return tuple(first)


@register_layer("Concat", bottoms=(1, None), tops=1)
def concat_layer(ctx: LayerContext) -> Converted:
    p = ctx.param("concat_param")
    axis = int(p.get("axis")) if "axis" in p or "concat_dim" not in p else int(p.get("concat_dim"))
    return Converted(
        function=concat, kwargs={"dim": axis}, output_shape=lambda shapes: _concat_shape(shapes, axis)
    )


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


def _same(x: Tensor) -> Tensor:
    """The blob itself (a Slice with one top)."""
    return x


def refuse_in_place(ctx: LayerContext) -> None:
    """Caffe's ``CHECK_NE(top[0], bottom[0])`` of layers that cannot run in place."""
    if ctx.tops and ctx.bottoms and ctx.tops[0] == ctx.bottoms[0]:
        raise NetError(f"{ctx.where} cannot compute in place: give its top a name of its own")


@register_layer("Slice", bottoms=1, tops=(1, None))
def slice_layer(ctx: LayerContext) -> Converted:
    p = ctx.param("slice_param")
    axis = int(p.get("axis")) if "axis" in p or "slice_dim" not in p else int(p.get("slice_dim"))
    points = tuple(int(v) for v in p.get("slice_point"))
    if len(ctx.tops) == 1 and not points:  # Caffe: the one top shares the bottom's data
        return Converted(function=_same, keeps_shape=True)
    if points and len(points) != len(ctx.tops) - 1:
        raise ValueError(
            f"layer '{ctx.name}': {len(points)} slice points for {len(ctx.tops)} tops (need one fewer)"
        )
    return Converted(
        function=caffe_slice,
        kwargs={"axis": axis, "points": points, "count": len(ctx.tops)},
        outputs=len(ctx.tops),
    )


@register_layer("Flatten", bottoms=1, tops=1)
def flatten(ctx: LayerContext) -> Converted:
    refuse_in_place(ctx)
    p = ctx.param("flatten_param")
    return Converted(
        function=torch.flatten, kwargs={"start_dim": int(p.get("axis")), "end_dim": int(p.get("end_axis"))}
    )


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


@register_layer("Reshape", bottoms=1, tops=1)
def reshape(ctx: LayerContext) -> Converted:
    refuse_in_place(ctx)
    p = ctx.param("reshape_param")
    dims = [int(d) for d in p.get("shape").get("dim")]
    return Converted(
        function=caffe_reshape,
        kwargs={"dims": tuple(dims), "axis": int(p.get("axis")), "num_axes": int(p.get("num_axes"))},
    )


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
            raise ValueError(f"crop of axis {i}: offset {offset} + size {want} exceeds {x.shape[i]}")
        if offset or want != x.shape[i]:
            x = x.narrow(i, offset, want)
    return x


@register_layer("Crop", bottoms=2, tops=1)
def crop(ctx: LayerContext) -> Converted:
    p = ctx.param("crop_param")
    return Converted(
        function=caffe_crop,
        kwargs={"axis": int(p.get("axis")), "offsets": tuple(int(o) for o in p.get("offset"))},
    )


def tile(x: Tensor, axis: int, tiles: int) -> Tensor:
    """Caffe's Tile: ``tiles`` copies of the blob along ``axis``."""
    axis = axis + x.dim() if axis < 0 else axis
    repeats = [1] * x.dim()
    repeats[axis] = tiles
    return x.repeat(repeats)


@register_layer("Tile", bottoms=1, tops=1)
def tile_layer(ctx: LayerContext) -> Converted:
    p = ctx.param("tile_param")
    if "tiles" not in p or int(p.get("tiles")) < 1:
        raise ValueError(f"layer '{ctx.name}': Tile needs tiles >= 1")
    return Converted(function=tile, kwargs={"axis": int(p.get("axis")), "tiles": int(p.get("tiles"))})
