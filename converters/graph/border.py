"""Skip the constant border of a large zero padding (FCN's ``pad: 100`` on conv1_1), exactly.

FCN pads its input by 100 zeros so that the coarse scores cover the whole image at any size.
Along each axis, the rows of a map early in the net fall into five runs: rows that feel the outer
edge (a later layer's own padding) at the top, a *band* of rows that feel neither the edge nor the
image, rows that feel the image, a second band, and rows that feel the outer edge at the bottom.
Every row of a band holds the same values: its window reads only band rows of the layer below (or
only the first layer's zeros), through the same weights. Removing some band rows therefore changes
nothing else, provided the removed count is a multiple of the cumulative stride (so every window
keeps its alignment with the image and with both edges) and a band survives at every layer.

:func:`skip_constant_border` rewrites a graph to do exactly that, with nothing approximated: the
first convolution runs with ``pad - R`` instead of ``pad`` (``R`` chosen per input size, per axis,
as large as those conditions allow), the following layers run unchanged on the smaller maps, and
at a chosen layer (and wherever an earlier blob is read outside the chain, e.g. FCN-8s' pool3) the
removed rows come back as copies of a band row. The values are the plain graph's up to float
rounding (convolution kernels may sum in another order on maps of another size).

The rows and columns between the bands and the image that read only the outer edge are not
constant, but they too never read the input: from the second inference forward at a size (the
weights unchanged), the chain's convolutions and poolings (each runs through :func:`windowed`)
compute only what the image reaches, and the blobs are completed with those values as the first
forward left them (:mod:`.cropping`; full-width FCN-8s at 500 x 500: 17% fewer multiply-adds in the
chain, 15 MB kept). The first forward at a size runs the chain whole and keeps them.

The arithmetic per axis is :func:`axis_regions` and :func:`removable`; :class:`BorderPlanner` is
the module that turns an input shape into a :class:`BorderPlan` (cached per shape).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn

from ..layers.tracing import is_channels_last, plain_inference, tracing
from .cropping import COPY_COST, AxisGeometry, CropPlan, EdgeCache, Rect, area, part, plan_crop
from .folding import tensors_key

__all__ = [
    "AxisRegions",
    "AxisWindow",
    "BorderPlan",
    "BorderPlanner",
    "axis_regions",
    "expand",
    "removable",
    "restore",
    "skip_constant_border",
    "windowed",
]


@dataclass(frozen=True)
class AxisWindow:
    """One layer's window along one axis: extent (dilated kernel), stride, padding, and for
    pooling Caffe's rounding (``ceil``) and whether the layer pads on any axis (its drop rule)."""

    kernel: int = 1
    stride: int = 1
    pad: int = 0
    pooling: bool = False
    ceil: bool = True
    any_pad: bool = False

    def size(self, length: int) -> int:
        """The output length for an input of ``length`` (Caffe's formulas)."""
        span = length + 2 * self.pad - self.kernel
        if not self.pooling:
            return _convolution_size(span, self.stride)
        pooled = (math.ceil(span / self.stride) if self.ceil else span // self.stride) + 1
        if self.any_pad and (pooled - 1) * self.stride >= length + self.pad:
            pooled -= 1
        return pooled


def _convolution_size(span: int, stride: int) -> int:
    """Caffe's convolution output length for ``span`` = input + 2 pad - kernel extent: ``span /
    stride + 1`` in C++'s integer division, which rounds toward zero (one output where the kernel
    overhangs the padded input by less than a stride)."""
    return (span // stride if span >= 0 else -(-span // stride)) + 1


@dataclass(frozen=True)
class AxisRegions:
    """Where a blob's rows (along one axis) feel the outer edge and the image."""

    length: int
    top: int
    """Rows ``[0, top)`` read the outer edge (a later layer's padding) through their windows."""
    image: tuple[int, int]
    """Rows ``[image[0], image[1])`` read the input."""
    bottom: int
    """Rows ``[length - bottom, length)`` read the outer edge."""

    @property
    def banded(self) -> bool:
        """Whether a row that feels neither edge nor image separates the image from each edge."""
        first, end = self.image
        return first < end and self.top < first and end < self.length - self.bottom


def axis_regions(length: int, first: AxisWindow, pad: int, chain: Sequence[AxisWindow]) -> list[AxisRegions]:
    """The regions of the first layer's output and of every chain layer's output, for an input of
    ``length`` rows and the first layer run with padding ``pad`` (instead of ``first.pad``)."""
    size = _convolution_size(length + 2 * pad - first.kernel, first.stride)
    if size < 1:
        raise ValueError(f"the first layer leaves no output for {length} rows and pad {pad}")
    # Output y reads padded rows [y*s, y*s + k - 1]; the input occupies [pad, pad + length).
    lo = max(0, -((pad - first.kernel + 1) // -first.stride))  # ceil((pad - k + 1) / s)
    hi = min(size, (pad + length - 1) // first.stride + 1)
    regions = [AxisRegions(size, 0, (lo, hi), 0)]
    for window in chain:
        previous = regions[-1]
        size = window.size(previous.length)
        k, s, p = window.kernel, window.stride, window.pad
        # Output y reads rows [y*s - p, y*s - p + k - 1] of the previous blob.
        top = min(size, max(0, -(-(previous.top + p) // s)))
        first_bottom = -(-(previous.length - previous.bottom + p - k + 1) // s)
        bottom = max(0, size - max(0, first_bottom))
        first_row, end_row = previous.image
        lo = max(0, -(-(first_row + p - k + 1) // s))
        hi = min(size, (end_row - 1 + p) // s + 1)
        regions.append(AxisRegions(size, top, (lo, hi), bottom))
    return regions


class _Chain(tuple):
    """A chain of windows as a cache key: its hash computed once (a chain's is 30 dataclass hashes)."""

    def __hash__(self) -> int:
        cached = self.__dict__.get("hash")
        if cached is None:
            cached = self.__dict__["hash"] = super().__hash__()
        return cached

    def __eq__(self, other: object) -> bool:
        return self is other or super().__eq__(other)

    __ne__ = object.__ne__


@functools.lru_cache(maxsize=4096)
def _chain_regions(
    length: int, first: AxisWindow, pad: int, chain: tuple[AxisWindow, ...]
) -> tuple[AxisRegions, ...]:
    """:func:`axis_regions`, remembered (the regions of a chain's prefix are a prefix of them)."""
    return tuple(axis_regions(length, first, pad, chain))


@functools.lru_cache(maxsize=4096)
def _banded_prefix(length: int, first: AxisWindow, pad: int, chain: tuple[AxisWindow, ...]) -> int:
    """How many of :func:`_chain_regions`' leading regions keep their bands."""
    regions = _chain_regions(length, first, pad, chain)
    return next((i for i, r in enumerate(regions) if not r.banded), len(regions))


def removable(
    length: int,
    first: AxisWindow,
    chain: Sequence[AxisWindow],
    strides: Sequence[int],
    upto: int | None = None,
) -> int:
    """The largest ``R`` (a multiple of every cumulative stride in ``strides``, at most the first
    layer's padding) for which every blob of ``chain`` (of its first ``upto`` layers) keeps a band
    on both sides when the first layer pads by ``pad - R``; 0 when none does. (Removing more rows
    only narrows the bands, so the valid counts are those up to the largest: a binary search
    finds it.)"""
    step = math.lcm(*strides) if strides else 1
    whole = chain if isinstance(chain, _Chain) else _Chain(chain)
    count = len(whole) if upto is None else upto

    def valid(steps: int) -> bool:
        pad = first.pad - steps * step
        return length + 2 * pad >= first.kernel and _banded_prefix(length, first, pad, whole) > count

    low, high = 0, first.pad // step  # valid(low) is assumed (nothing removed), high may not be
    while low < high:
        middle = (low + high + 1) // 2
        if valid(middle):
            low = middle
        else:
            high = middle - 1
    return low * step if low and valid(low) else 0


@dataclass(frozen=True)
class BorderPlan:
    """For one input shape: the first layer's padding, and for each stage end and each blob read
    outside the chain, the row and column indices that put band rows back (``None``: none)."""

    pad: tuple[int, int]
    lengths: dict[tuple[str, int], tuple[int, int]]
    """(kind, chain position) -> the reduced blob's (height, width), checked when expanding."""
    index: dict[tuple[str, int], tuple[Segments | None, Segments | None]]
    crop: CropPlan | None = None
    """Which rows and columns each position computes once the fixed ones are kept (:mod:`.cropping`)."""
    whole: dict[int, tuple[Rect, Rect]] = dataclasses.field(default_factory=dict)
    """Position read outside the chain -> (its whole blob, its image rect), in the plain graph's
    coordinates (what ``restore`` gives)."""
    edges: EdgeCache | None = None
    """This call's kept values: being recorded (``mode`` "record") or read ("crop")."""
    mode: str = "plain"


Segments = tuple[tuple[int, int, int, int], ...]
"""(source start, source end, target start, target end) runs along one axis; a one-row source
run longer in the target is that row repeated."""


def _band_segments(regions: AxisRegions, copies: int) -> Segments | None:
    """The runs that insert ``copies`` band rows into the band on each side of the image."""
    if copies == 0:
        return None
    top, (_, end), length = regions.top, regions.image, regions.length
    return (
        (0, top, 0, top),
        (top, top + 1, top, top + copies),
        (top, end, top + copies, end + copies),
        (end, end + 1, end + copies, end + 2 * copies),
        (end, length, end + 2 * copies, length + 2 * copies),
    )


class BorderPlanner(nn.Module):
    """The geometry of one chain (its first layer, then the layers after it); called on the chain's
    input, returns the :class:`BorderPlan` for its shape (cached).

    The chain runs in stages: in stage ``j`` (up to chain position ``stages[j]``) ``R_j`` rows are
    missing from each band, the largest count valid up to that position; at its end the blob gets
    ``R_j - R_(j+1)`` of them back (all of them after the last stage). ``outside`` lists positions
    whose blob is also read outside the chain: those readers get the full blob.

    Past the bands, rows and columns that read only the outer padding hold values fixed by the
    weights and the shape: from the second forward at a shape (in inference, the weights unchanged)
    the chain computes only what the image reaches and takes those from the first forward's
    (:mod:`.cropping`); ``costs`` and ``channels`` (per position: multiply-adds per output value,
    and output channels) choose where, ``layers`` are the chain's modules (whose parameters key the
    kept values). ``chain`` holds ``None`` for a per-element layer."""

    def __init__(
        self,
        first: tuple[AxisWindow, AxisWindow],
        chain: Sequence[tuple[AxisWindow, AxisWindow] | None],
        stages: Sequence[int],
        outside: Sequence[int] = (),
        *,
        costs: Sequence[int] = (),
        channels: Sequence[int] = (),
        layers: Sequence[nn.Module] = (),
    ) -> None:
        super().__init__()
        self.first = first
        self.stages = sorted(stages)
        self.whole_chain = [w or (AxisWindow(), AxisWindow()) for w in chain]
        self.windowed = [w is not None for w in chain]
        self.chain = self.whole_chain[: self.stages[-1]] if self.stages else []
        self.outside = sorted(outside)
        self.costs = list(costs)
        self.channels = list(channels)
        self.__dict__["_layers"] = list(layers)  # (not submodules: the net registers them)
        self._plans: dict[tuple[int, int], BorderPlan] = {}
        self._edges: dict[tuple[int, ...], EdgeCache] = {}

    def extra_repr(self) -> str:
        pad = (self.first[0].pad, self.first[1].pad)
        return f"pad={pad}, stages end at {self.stages}, outside readers at {self.outside}"

    def __getstate__(self) -> dict:
        return {**super().__getstate__(), "_edges": {}}

    def plan(self, height: int, width: int) -> BorderPlan:
        """The plan for an input of ``height`` x ``width``."""
        key = (height, width)
        cached = self._plans.get(key)
        if cached is not None:
            return cached
        axes = []
        for axis, length in enumerate((height, width)):
            first = self.first[axis]
            chain = [w[axis] for w in self.chain]
            strides = _cumulative_strides(first, chain)
            removed = [removable(length, first, chain[:e], strides[: e + 1]) for e in self.stages] + [0]
            axes.append((length, first, chain, strides, removed))
        lengths: dict[tuple[str, int], tuple[int, int]] = {}
        index: dict[tuple[str, int], tuple[Segments | None, Segments | None]] = {}

        def put(kind: str, position: int, stage_from: int, to_full: bool) -> None:
            parts = []
            for length, first, chain, strides, removed in axes:
                before = removed[stage_from]
                after = 0 if to_full else removed[stage_from + 1]
                regions = axis_regions(length, first, first.pad - before, chain[:position])[position]
                parts.append((regions.length, _band_segments(regions, (before - after) // strides[position])))
            lengths[kind, position] = (parts[0][0], parts[1][0])
            index[kind, position] = (parts[0][1], parts[1][1])

        for j, end in enumerate(self.stages):
            put("stage", end, j, False)
        for position in self.outside:
            if position > self.stages[-1]:
                continue
            j = next(j for j, end in enumerate(self.stages) if position <= end)
            put("outside", position, j + 1 if position == self.stages[j] else j, True)
        pads = (axes[0][1].pad - axes[0][4][0], axes[1][1].pad - axes[1][4][0])
        plan = BorderPlan(pads, lengths, index)
        if self.costs:
            plan = self._with_crop(plan, (height, width), [a[4] for a in axes])
        if len(self._plans) >= 64:
            self._plans.clear()
        self._plans[key] = plan
        return plan

    def _with_crop(self, plan: BorderPlan, size: tuple[int, int], removed: list[list[int]]) -> BorderPlan:
        """``plan`` with its :class:`CropPlan` (and the outside readers' whole blobs)."""
        count = len(self.whole_chain) + 1
        stage_of = [next((j for j, end in enumerate(self.stages) if i <= end), None) for i in range(count)]

        def regions(axis: int, cut: int) -> tuple[AxisRegions, ...]:
            first = self.first[axis]
            chain = _Chain(w[axis] for w in self.whole_chain)
            return _chain_regions(size[axis], first, first.pad - cut, chain)

        def geometry(i: int, after_expand: bool) -> tuple[AxisGeometry, AxisGeometry]:
            j = stage_of[i]
            if j is None:
                cuts = (0, 0)
            elif after_expand and i == self.stages[j]:
                cuts = (removed[0][j + 1], removed[1][j + 1])
            else:
                cuts = (removed[0][j], removed[1][j])
            return tuple(  # type: ignore[return-value]
                AxisGeometry(r.length, r.image) for r in (regions(a, cuts[a])[i] for a in range(2))
            )

        seen = [geometry(i, True) for i in range(count)]
        made = [geometry(i, False) for i in range(count)]
        area = [g[0].length * g[1].length for g in made]
        current = [self.costs[i] * area[i] for i in range(count)]
        for i in self.stages:
            current[i] += COPY_COST * self.channels[i] * seen[i][0].length * seen[i][1].length
        first_window = tuple(dataclasses.replace(self.first[a], pad=plan.pad[a]) for a in range(2))
        sliding = [w if on else None for w, on in zip(self.whole_chain, self.windowed, strict=True)]
        crop = plan_crop(
            seen,
            [first_window, *sliding],
            self.costs,
            self.channels,
            size,
            current,
            must_end=self.stages,
            produced=[(g[0].image, g[1].image) for g in made],
            outside=self.outside,
        )
        if crop is None:
            return plan
        whole = {}
        for position in self.outside:
            if position <= crop.last:
                full = [regions(a, 0)[position] for a in range(2)]
                whole[position] = (((0, full[0].length), (0, full[1].length)), (full[0].image, full[1].image))
        return dataclasses.replace(plan, crop=crop, whole=whole)

    def describe(self, height: int, width: int) -> str:
        """What the plan for an input of ``height`` x ``width`` skips, in a line."""
        plan = self.plan(height, width)
        pad = (self.first[0].pad, self.first[1].pad)
        text = f"first convolution padded {plan.pad} instead of {pad}"
        crop = plan.crop
        if crop is None:
            return text
        layers = [i for i in range(crop.last + 1) if i == 0 or self.windowed[i - 1]]
        work = [self.costs[i] * crop.shapes[i][0] * crop.shapes[i][1] for i in layers]
        done = [self.costs[i] * area(crop.computed[i]) for i in layers]
        return (
            f"{text}; from the second forward at this size, chain layers 0-{crop.last} compute only what "
            f"the image reaches ({sum(done) / sum(work):.0%} of their multiply-adds), {len(crop.ends)} blobs "
            "completed from the first forward's fixed values"
        )

    def keeps(self, shape: Sequence[int]) -> bool:
        """Whether the next inference forward on an input of ``shape`` (with the weights as they
        are) computes only what the image reaches, reading the values the first one kept."""
        edges = self._edges.get(tuple(int(d) for d in shape))
        return edges is not None and edges.ready and edges.key[-1] == tensors_key(*self._chain_parameters())

    def _chain_parameters(self) -> list[Tensor]:
        return [p for layer in self._layers for p in layer.parameters(recurse=False)]

    def forward(self, x: Tensor) -> BorderPlan:
        if tracing():  # exported or compiled programs get the plain computation
            return BorderPlan((self.first[0].pad, self.first[1].pad), {}, {})
        plan = self.plan(int(x.shape[-2]), int(x.shape[-1]))
        parameters = self._chain_parameters()
        if plan.crop is None or x.device.type != "cpu" or not plain_inference(x, *parameters):
            return plan  # (on a GPU, a CUDA graph may be capturing: recording reads values back)
        shape = tuple(int(d) for d in x.shape)  # (a batch of another size keeps its own)
        key = (x.dtype, x.device, tensors_key(*parameters))
        edges = self._edges.pop(shape, None)  # (put back last: the most recently used stay)
        if edges is None or edges.key != key or edges.failed:
            if len(self._edges) >= EDGE_SHAPES:
                self._edges.pop(next(iter(self._edges)))
            edges = EdgeCache(key, len(plan.crop.ends) + len(plan.whole))
        for other in self._edges.values():  # (only the shape in use keeps its buffers whole)
            other.drop_buffers()
        self._edges[shape] = edges
        return dataclasses.replace(plan, edges=edges, mode="crop" if edges.ready else "record")


#: Input shapes whose fixed values a chain keeps (the most recently used; full-width FCN-8s at 500 x 500,
#: batch 1: 15 MB each).
EDGE_SHAPES = 4


def _cumulative_strides(first: AxisWindow, chain: Sequence[AxisWindow]) -> list[int]:
    strides = [first.stride]
    for window in chain:
        strides.append(strides[-1] * window.stride)
    return strides


def windowed(layer: nn.Module, x: Tensor, plan: BorderPlan, position: int) -> Tensor:
    """Chain ``position``'s convolution or pooling ``layer`` on ``x``: the first one (0) with the
    plan's reduced padding; in a forward that reads kept values (:mod:`.cropping`) on the rows and
    columns the plan computes there; in one that records them, ``layer(x)`` after keeping ``x``'s."""
    crop, edges, previous = plan.crop, plan.edges, position - 1
    if crop is not None and edges is not None and previous in crop.ends:
        outer, inner = crop.buffers[previous], crop.fills[previous]
        if plan.mode != "record":  # (the buffer is read by this layer only: kept for the next forward)
            with edges.assembled(previous, x, outer, inner, crop.computed[previous]) as buffer:
                return _windowed(layer, buffer, plan, position)
        edges.record(previous, x, outer, inner)
    return _windowed(layer, x, plan, position)


def _windowed(layer: nn.Module, x: Tensor, plan: BorderPlan, position: int) -> Tensor:
    crop, previous = plan.crop, position - 1
    if crop is None or plan.mode != "crop" or position > crop.last:
        return _whole(layer, x, plan, position)
    if position == 0:
        held: Rect = ((0, int(x.shape[-2])), (0, int(x.shape[-1])))
    else:
        held = crop.buffers[previous] if previous in crop.ends else crop.computed[previous]
    if crop.reads[position] != held:  # (a strided layer may read less than the layer before holds)
        x = part(x, crop.reads[position], held)
    y = _on_rect(layer, x, crop.pads[position])
    (r0, r1), (c0, c1) = crop.computed[position]
    if tuple(y.shape[-2:]) != (r1 - r0, c1 - c0):  # the arithmetic and the layers disagree
        raise RuntimeError(
            f"border skipping: chain blob {position} is {tuple(y.shape[-2:])} in part, "
            f"the plan expected {(r1 - r0, c1 - c0)}"
        )
    return y


def _whole(layer: nn.Module, x: Tensor, plan: BorderPlan, position: int) -> Tensor:
    if position != 0 or plan.pad == tuple(layer.padding):  # type: ignore[arg-type]
        return layer(x)
    return _convolve(layer, x, plan.pad)


def _convolve(conv: nn.Module, x: Tensor, padding: tuple[int, int]) -> Tensor:
    """``conv(x)`` with ``padding`` instead of its own (a calibrated layer on its kernel)."""
    from .speed import FastConv2d

    if isinstance(conv, FastConv2d):
        return conv.convolve(x, padding)
    return F.conv2d(x, conv.weight, conv.bias, conv.stride, padding, conv.dilation, conv.groups)  # type: ignore[arg-type]


def _on_rect(layer: nn.Module, x: Tensor, pads: tuple[tuple[int, int], tuple[int, int]]) -> Tensor:
    """``layer`` on ``x`` with ``pads`` zeros (before, after per axis) instead of its own padding."""
    from ..layers.pooling import CaffePooling

    if isinstance(layer, CaffePooling):  # (the plan pads no pooling: its windows lie inside x)
        if any(layer.pad):
            layer = _unpadded(layer)
        return layer(x)
    (top, bottom), (left, right) = pads
    if top != bottom or left != right:
        x = F.pad(x, (left, right, top, bottom))
        top = left = 0
    return _convolve(layer, x, (top, left))


@functools.lru_cache(maxsize=64)
def _unpadded(layer: nn.Module) -> nn.Module:
    from ..layers.pooling import CaffePooling

    assert isinstance(layer, CaffePooling)
    return CaffePooling(layer.method, layer.kernel, layer.stride, (0,) * len(layer.pad), ceil=layer.ceil)


def _put_back(x: Tensor, plan: BorderPlan, key: tuple[str, int]) -> Tensor:
    if key not in plan.index:  # a traced forward: nothing was left out
        return x
    if tuple(x.shape[-2:]) != plan.lengths[key]:  # the arithmetic and the layers disagree
        raise RuntimeError(
            f"border skipping: chain blob {key[1]} is {tuple(x.shape[-2:])}, "
            f"the plan expected {plan.lengths[key]}"
        )
    rows, cols = plan.index[key]
    if rows is None and cols is None:
        return x
    height, width = x.shape[-2:]
    layout = torch.channels_last if is_channels_last(x) else torch.contiguous_format  # (.layout)
    shape = (*x.shape[:-2], _target_length(rows, height), _target_length(cols, width))
    out = torch.empty(shape, dtype=x.dtype, device=x.device, memory_format=layout)
    # One copy per pair of runs (a one-row run is broadcast over its band): on an Intel Xeon
    # (AVX-512, 2 threads) 2-6x faster than one gather over the flattened plane (FCN-8s's six: 12 ms
    # against 48 ms a forward)
    for a, b, t0, t1 in rows or ((0, height, 0, height),):
        for c, d, u0, u1 in cols or ((0, width, 0, width),):
            out[..., t0:t1, u0:u1] = x[..., a:b, c:d]
    return out


def _target_length(segments: Segments | None, length: int) -> int:
    return length if segments is None else segments[-1][3]


def expand(x: Tensor, plan: BorderPlan, position: int) -> Tensor:
    """The blob at the end of a stage (chain ``position``) with the band rows the next stage keeps
    (in a forward that computes only the image's rect there: that rect, as it is)."""
    if plan.mode == "crop" and position <= plan.crop.last:  # type: ignore[union-attr]
        return x
    return _put_back(x, plan, ("stage", position))


def restore(x: Tensor, plan: BorderPlan, position: int) -> Tensor:
    """The full blob at chain ``position``, for readers outside the chain."""
    crop, edges = plan.crop, plan.edges
    if crop is None or edges is None or position > crop.last:
        return _put_back(x, plan, ("outside", position))
    outer, image = plan.whole[position]
    if plan.mode == "record":
        full = _put_back(x, plan, ("outside", position))
        edges.record(("outside", position), full, outer, image)
        return full
    held = crop.computed[position]
    shift = [image[a][0] - crop.images[position][a][0] for a in range(2)]
    source = tuple((held[a][0] + shift[a], held[a][1] + shift[a]) for a in range(2))
    return edges.assemble(("outside", position), x, outer, image, source)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# Finding chains in a graph.

_POINTWISE_FUNCTIONS: set[Callable[..., Tensor]] = {torch.relu, torch.relu_, F.relu, F.leaky_relu}
_POINTWISE_MODULES = (nn.ReLU, nn.LeakyReLU, nn.LocalResponseNorm)


def _windows(module: nn.Module) -> tuple[AxisWindow, AxisWindow] | None:
    """The module's windows along height and width when it is a layer the chain can run."""
    from ..layers.pooling import CaffePooling

    if isinstance(module, nn.Conv2d) and not isinstance(module, nn.ConvTranspose2d):
        if module.padding_mode != "zeros" or isinstance(module.padding, str):
            return None
        return tuple(  # type: ignore[return-value]
            AxisWindow((k - 1) * d + 1, s, p)
            for k, s, p, d in zip(
                module.kernel_size, module.stride, module.padding, module.dilation, strict=True
            )
        )
    if isinstance(module, CaffePooling):
        if module.global_pooling or len(module.kernel) != 2 or getattr(module, "mask", False):
            return None
        any_pad = any(module.pad)
        return tuple(  # type: ignore[return-value]
            AxisWindow(k, s, p, pooling=True, ceil=module.ceil, any_pad=any_pad)
            for k, s, p in zip(module.kernel, module.stride, module.pad, strict=True)
        )
    if isinstance(module, _POINTWISE_MODULES):
        return AxisWindow(), AxisWindow()
    return None


def _node_windows(net: fx.GraphModule, node: fx.Node) -> tuple[AxisWindow, AxisWindow] | None:
    if len(node.args) < 1 or not isinstance(node.args[0], fx.Node):
        return None
    if any(isinstance(a, fx.Node) for a in node.args[1:]) or any(
        isinstance(v, fx.Node) for v in node.kwargs.values()
    ):
        return None
    if node.op == "call_module":
        return _windows(net.get_submodule(str(node.target)))
    if node.op == "call_function" and node.target in _POINTWISE_FUNCTIONS:
        return AxisWindow(), AxisWindow()
    return None


def _is_start(net: fx.GraphModule, node: fx.Node) -> bool:
    """A 2-D convolution whose padding covers a whole window on some axis."""
    if node.op != "call_module":
        return False
    module = net.get_submodule(str(node.target))
    windows = _windows(module)
    return (
        isinstance(module, nn.Conv2d)
        and windows is not None
        and any(w.pad >= w.kernel for w in windows)
        and len(node.args) == 1
        and not node.kwargs
    )


def _cost(node: fx.Node, net: fx.GraphModule, channels: int) -> tuple[int, int]:
    """(multiply-adds per output position, channels of the output)."""
    if node.op == "call_module":
        module = net.get_submodule(str(node.target))
        if isinstance(module, nn.Conv2d):
            kernel = math.prod(module.kernel_size)
            return module.out_channels * module.in_channels // module.groups * kernel, module.out_channels
    return channels, channels


def choose_stages(
    first: tuple[AxisWindow, AxisWindow],
    chain: Sequence[tuple[AxisWindow, AxisWindow]],
    costs: Sequence[int],
    channels: Sequence[int],
    size: tuple[int, int],
) -> list[int]:
    """Where stages should end (chain positions) for the least work at ``size``: the layers' work
    on the reduced blobs plus :data:`COPY_COST` per value copied when band rows come back.
    Empty when skipping saves nothing."""
    positions = len(chain) + 1
    removed, strides = [], []
    for axis in range(2):
        axis_chain = _Chain(w[axis] for w in chain)
        axis_strides = _cumulative_strides(first[axis], axis_chain)
        strides.append(axis_strides)
        removed.append(
            [
                removable(size[axis], first[axis], axis_chain, axis_strides[: e + 1], upto=e)
                for e in range(positions)
            ]
        )

    wholes = [_Chain(w[axis] for w in chain) for axis in range(2)]

    @functools.cache
    def lengths(axis: int, cut: int) -> list[int]:
        regions = _chain_regions(size[axis], first[axis], first[axis].pad - cut, wholes[axis])
        return [r.length for r in regions]

    @functools.cache
    def area(position: int, end: int | None) -> int:
        """The blob's area at ``position`` in the geometry of a stage ending at ``end`` (None: full)."""
        result = 1
        for axis in range(2):
            result *= lengths(axis, 0 if end is None else removed[axis][end])[position]
        return result

    def work(start: int, end: int, geometry: int | None) -> int:
        return sum(costs[i] * area(i, geometry) for i in range(start, end))

    best: dict[int, tuple[int, list[int]]] = {}
    for end in range(positions):
        if not any(removed[axis][end] for axis in range(2)):
            continue
        options = [(work(0, end + 1, end), [])]
        for previous, (cost, ends) in best.items():
            if previous < end:
                copy = COPY_COST * channels[previous] * area(previous, end)
                options.append((cost + copy + work(previous + 1, end + 1, end), [*ends, previous]))
        best[end] = min(options, key=lambda option: option[0])
    total, chosen = work(0, positions, None), []
    for end, (cost, ends) in best.items():
        finish = cost + COPY_COST * channels[end] * area(end, None) + work(end + 1, positions, None)
        if finish < total:
            total, chosen = finish, [*ends, end]
    return chosen


def skip_constant_border(net: fx.GraphModule, size: tuple[int, int] | None = None) -> fx.GraphModule:
    """``net`` itself, rewritten so that each convolution padded by more than its window (and the
    layers after it) skips the constant band of rows and columns; returns it for chaining.

    ``size`` is the input size used to choose where full blobs come back (default: the size the
    net declares for the convolution's input, else 500 x 500); any input size runs exactly.
    """
    for start in [n for n in net.graph.nodes if _is_start(net, n)]:
        _rewrite_chain(net, start, size)
    net.graph.lint()
    net.recompile()
    return net


def _rewrite_chain(net: fx.GraphModule, start: fx.Node, size: tuple[int, int] | None) -> None:
    from ..layers.pooling import CaffePooling

    first = _windows(net.get_submodule(str(start.target)))
    assert first is not None
    order = {n: i for i, n in enumerate(net.graph.nodes)}
    nodes, windows = [start], []
    node = start
    while True:
        followers = [u for u in node.users if u.args and u.args[0] is node and _node_windows(net, u)]
        if not followers:
            break
        node = min(followers, key=order.__getitem__)
        windows.append(_node_windows(net, node))
        nodes.append(node)
    costs, channels = [], []
    for n in nodes:
        cost, width = _cost(n, net, channels[-1] if channels else 0)
        costs.append(cost)
        channels.append(width)
    stages = choose_stages(first, windows, costs, channels, size or _declared_size(net, start))
    if not stages:
        return
    layers = [net.get_submodule(str(n.target)) if n.op == "call_module" else None for n in nodes]
    sliding = [isinstance(m, (nn.Conv2d, CaffePooling)) for m in layers]
    outside = [i for i in range(len(nodes)) if any(u is not (nodes[i + 1] if i + 1 < len(nodes) else None)
                                                   for u in nodes[i].users)]  # fmt: skip
    attr = _free_attr(net, f"border_{start.target}")
    net.add_module(
        attr,
        BorderPlanner(
            first,
            [w if on else None for w, on in zip(windows, sliding[1:], strict=True)],
            stages,
            outside,
            costs=costs,
            channels=channels,
            layers=[m for m in layers if m is not None],
        ),
    )
    graph = net.graph
    with graph.inserting_before(start):
        plan = graph.call_module(attr, (start.args[0],))
    for i, n in enumerate(nodes):
        if not sliding[i]:
            continue
        name = n.name
        with graph.inserting_before(n):
            layer = graph.get_attr(str(n.target))
            layer._rename(f"{name}_layer")
        with graph.inserting_after(n):
            call = graph.call_function(windowed, (layer, n.args[0], plan, i))
        n.replace_all_uses_with(call)
        graph.erase_node(n)
        _free_name(graph, name)
        call._rename(name)
        nodes[i] = call
    for i in range(len(nodes)):
        blob, chained = nodes[i], nodes[i + 1] if i + 1 < len(nodes) else None
        if i in stages:
            with graph.inserting_after(blob):
                expanded = graph.call_function(expand, (blob, plan, i))
            expanded._rename(f"{blob.name}_expanded")
            blob.replace_all_uses_with(expanded, delete_user_cb=lambda user, e=expanded: user is not e)
            blob = expanded
        readers = [u for u in blob.users if u is not chained]
        if readers and i in outside:
            with graph.inserting_after(blob):
                full = graph.call_function(restore, (blob, plan, i))
            full._rename(f"{blob.name}_full")
            for reader in readers:
                reader.replace_input_with(blob, full)


def _free_name(graph: fx.Graph, name: str) -> None:
    """Let a node take ``name`` again once the node that had it is gone (fx keeps names reserved)."""
    used = getattr(graph._graph_namespace, "_used_names", None)
    if isinstance(used, (set, dict)):
        used.discard(name) if isinstance(used, set) else used.pop(name, None)


def _free_attr(net: nn.Module, name: str) -> str:
    candidate, i = name.replace(".", "_"), 1
    while hasattr(net, candidate):
        i += 1
        candidate = f"{name}_{i}"
    return candidate


def _declared_size(net: fx.GraphModule, start: fx.Node) -> tuple[int, int]:
    info = getattr(net, "caffe", None)
    for name, shapes in (getattr(info, "bottom_shapes", None) or {}).items():
        if _attr_of(name, net) == start.target and shapes and len(shapes[0]) == 4:
            return int(shapes[0][2]), int(shapes[0][3])
    return 500, 500


def _attr_of(layer: str, net: fx.GraphModule) -> str | None:
    info = getattr(net, "caffe", None)
    blobs = (getattr(info, "parameter_blobs", None) or {}).get(layer)
    return blobs[0].split(".")[0] if blobs else None
