"""Layers that rearrange blobs: Concat, Slice, Flatten, Reshape, Crop and Tile."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from ..caffe.traits import concat_axis, slice_axis
from ..errors import NetError
from .registry import Converted, LayerContext, Shape, canonical_axis, register_layer
from .tracing import index_out_of_range


def concat(*xs: Tensor, dim: int) -> Tensor:
    """Caffe's Concat along ``dim``."""
    return torch.cat(xs, dim=dim)


def _concat_shape(shapes: list[Shape], axis: int) -> Shape:
    first = list(shapes[0])
    axis = canonical_axis(axis, len(first), "the concat axis")
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
    axis = concat_axis(ctx.layer)
    one = len(ctx.bottoms) == 1  # Caffe's top then shares the bottom's data and diff
    if not one:
        ctx.refuse_in_place(
            "Caffe's Concat reshapes that blob to its larger top before copying its bottoms in (new, "
            "zeroed memory for the first of them)"
        )
    return Converted(
        function=concat, kwargs={"dim": axis}, output_shape=lambda shapes: _concat_shape(shapes, axis),
        shares_data=one, shares_diff=one,
    )  # fmt: skip


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
    axis = slice_axis(ctx.layer)
    points = tuple(int(v) for v in p.get("slice_point"))
    shape = ctx.bottom_shape(0)
    size = shape[canonical_axis(axis, len(shape), ctx.where)]  # (Caffe reads it for one top too)
    if len(ctx.tops) == 1 and not points:  # Caffe: the one top shares the bottom's data and diff
        return Converted(function=_same, keeps_shape=True, shares_data=True, shares_diff=True)
    if points and len(points) != len(ctx.tops) - 1:
        raise ValueError(
            f"layer '{ctx.name}': {len(points)} slice points for {len(ctx.tops)} tops (need one fewer)"
        )
    if len(ctx.tops) > size:
        raise ValueError(f"{ctx.where}: {len(ctx.tops)} tops but the sliced axis has only {size} values")
    if points and (list(points) != sorted(set(points)) or points[0] <= 0 or points[-1] > size):
        raise ValueError(f"{ctx.where}: slice points {list(points)} must increase within (0, {size}]")
    if not points and size % len(ctx.tops):
        raise ValueError(f"{ctx.where}: {len(ctx.tops)} tops do not divide the sliced axis of {size} evenly")
    return Converted(
        function=caffe_slice,
        kwargs={"axis": axis, "points": points, "count": len(ctx.tops)},
        outputs=len(ctx.tops),
    )


@register_layer("Flatten", bottoms=1, tops=1)
def flatten(ctx: LayerContext) -> Converted:
    refuse_in_place(ctx)
    p = ctx.param("flatten_param")
    ndim = len(ctx.bottom_shape(0))
    start = canonical_axis(int(p.get("axis")), ndim, ctx.where)
    end = canonical_axis(int(p.get("end_axis")), ndim, ctx.where)
    if start > end + 1:  # (Caffe's Blob::count(start, end + 1) checks start <= end + 1)
        raise ValueError(
            f"{ctx.where}: axis {int(p.get('axis'))} comes after end_axis {int(p.get('end_axis'))}"
        )
    if start == end + 1:  # Caffe flattens no axis into one of size 1 there
        return Converted(
            function=torch.unsqueeze, kwargs={"dim": start}, shares_data=True, repoints_bottom_diff=True
        )
    return Converted(
        function=torch.flatten,
        kwargs={"start_dim": int(p.get("axis")), "end_dim": int(p.get("end_axis"))},
        shares_data=True,
        repoints_bottom_diff=True,
    )


def reshaped(shape: Sequence[int], dims: Sequence[int], axis: int, num_axes: int) -> Shape:
    """The top shape of Caffe's Reshape, checked as its ``LayerSetUp``/``Reshape`` check it: axes
    ``[axis, axis+num_axes)`` replaced by ``dims`` (0 copies the bottom's axis, one -1 infers)."""
    ndim = len(shape)
    start = axis + ndim + 1 if axis < 0 else axis
    end = ndim if num_axes == -1 else start + num_axes
    if num_axes < -1 or not 0 <= start <= ndim or end > ndim:
        raise ValueError(
            f"axis {axis} and num_axes {num_axes} do not fit the {ndim}-axis bottom {list(shape)}"
        )
    if sum(d == -1 for d in dims) > 1 or any(d < -1 for d in dims):
        raise ValueError(f"the new shape {list(dims)} may hold one -1 and no other negative value")
    new: list[int] = []
    for i, d in enumerate(dims):
        if d == 0:
            if start + i >= ndim:
                raise ValueError(
                    f"the new shape {list(dims)} copies (0) an axis the bottom {list(shape)} lacks"
                )
            new.append(shape[start + i])
        else:
            new.append(d)
    count, known = (
        math.prod(shape),
        math.prod(d for d in new if d != -1) * math.prod(shape[:start] + shape[end:]),
    )
    if -1 in new:
        if known == 0 or count % known:
            raise ValueError(
                f"the bottom's {count} values cannot take the shape {list(dims)} "
                f"(divisible by {known} needed)"
            )
        new[new.index(-1)] = count // known
    top = (*shape[:start], *new, *shape[end:])
    if math.prod(top) != count:
        raise ValueError(
            f"the new shape {list(top)} holds {math.prod(top)} values, the bottom {list(shape)} {count}"
        )
    return top


def caffe_reshape(x: Tensor, dims: Sequence[int], axis: int, num_axes: int) -> Tensor:
    """Caffe's Reshape: axes ``[axis, axis+num_axes)`` replaced by ``dims`` (0 copies, -1 infers)."""
    return x.reshape(reshaped(tuple(x.shape), dims, axis, num_axes))


@register_layer("Reshape", bottoms=1, tops=1)
def reshape(ctx: LayerContext) -> Converted:
    refuse_in_place(ctx)
    p = ctx.param("reshape_param")
    dims = tuple(int(d) for d in p.get("shape").get("dim"))
    axis, num_axes = int(p.get("axis")), int(p.get("num_axes"))
    return Converted(
        function=caffe_reshape,
        kwargs={"dims": dims, "axis": axis, "num_axes": num_axes},
        output_shape=lambda shapes: reshaped(shapes[0], dims, axis, num_axes),
        shares_data=True,
        shares_diff=True,
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
    data, reference = ctx.bottom_shape(0), ctx.bottom_shape(1)
    start = canonical_axis(int(p.get("axis")), len(data), ctx.where)
    offsets = list(p.get("offset"))
    if len(offsets) > 1 and start + len(offsets) != len(data):
        raise ValueError(
            f"{ctx.where}: {len(offsets)} offsets for the {len(data) - start} axes from axis {start} on "
            "(give one offset, or one per axis)"
        )
    if len(reference) < len(data):
        raise ValueError(
            f"{ctx.where}: the reference '{ctx.bottoms[1]}' {list(reference)} has fewer axes than "
            f"'{ctx.bottoms[0]}' {list(data)}"
        )
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
    canonical_axis(int(p.get("axis")), len(ctx.bottom_shape(0)), ctx.where)  # (Caffe's Reshape checks it)
    return Converted(function=tile, kwargs={"axis": int(p.get("axis")), "tiles": int(p.get("tiles"))})


def batch_reindex(data: Tensor, permut: Tensor) -> Tensor:
    """Caffe's BatchReindex: the items of ``data`` (first axis) in the order ``permut`` lists
    (integer indices stored as floats; one may repeat or be left out)."""
    index = permut.reshape(-1).to(torch.int64)
    bad = index_out_of_range(index, data.shape[0])
    if bad is not None:
        raise NetError(f"BatchReindex: index {bad} is outside the batch of {data.shape[0]}")
    return data.index_select(0, index)


@register_layer("BatchReindex", bottoms=2, tops=1)
def batch_reindex_layer(ctx: LayerContext) -> Converted:
    permut = ctx.bottom_shape(1)
    if len(permut) != 1:
        raise ValueError(f"{ctx.where}: the index bottom must have one axis, got {list(permut)}")
    return Converted(function=batch_reindex, output_shape=lambda s: (s[1][0], *s[0][1:]))


def filter_items(*bottoms: Tensor) -> Tensor | tuple[Tensor, ...]:
    """Caffe's Filter: the items (first axis) of each bottom but the last whose entry in the last
    bottom, the selector ``(N, 1, ...)``, is non-zero; one top per filtered bottom."""
    *data, selector = bottoms
    keep = torch.nonzero(selector.detach().reshape(selector.shape[0], -1)[:, 0]).reshape(-1)
    picked = tuple(blob.index_select(0, keep) for blob in data)
    return picked if len(picked) > 1 else picked[0]


@register_layer("Filter", bottoms=(2, None), tops=(1, None))
def filter_layer(ctx: LayerContext) -> Converted:
    if len(ctx.tops) != len(ctx.bottoms) - 1:
        raise NetError(
            f"{ctx.where} makes one top per bottom but the last (the selector): it has "
            f"{len(ctx.bottoms)} bottoms and {len(ctx.tops)} top(s)"
        )
    selector = ctx.bottom_shape(len(ctx.bottoms) - 1)
    if any(size != 1 for size in selector[1:]):
        raise NetError(f"{ctx.where}: the selector '{ctx.bottoms[-1]}' {list(selector)} must be (N, 1, ...)")
    for name, shape in zip(ctx.bottoms[:-1], ctx.bottom_shapes[:-1], strict=True):
        if shape is not None and shape[0] != selector[0] and not ctx.guessed:
            raise NetError(
                f"{ctx.where}: '{name}' {list(shape)} must have the selector's {selector[0]} items "
                "on its first axis"
            )
    tops = len(ctx.tops)
    # Caffe sizes the tops as the bottoms before the first forward pass; the real count is the data's
    return Converted(
        function=filter_items,
        outputs=tops,
        output_shape=lambda s: list(s[:-1]) if tops > 1 else s[0],
    )
