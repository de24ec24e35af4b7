"""Compute only the rows and columns that read the image; take the others from the first forward.

Past the constant band (:mod:`.border`), a chain's blobs still hold rows and columns that read the
outer padding and never the input (FCN-8s at 500 x 500: conv4_3's outer 7 of 88, conv3_3's outer
20 of 175): their values depend on the weights and the input's shape only. This module plans, for
one input shape, how a chain computes only what the image reaches:

- Each *end* ``s`` of a segment of the chain holds only the rows and columns that read the image
  (``image``); the layer after it reads a buffer (``buffers[s]``) made of those and of a ring of the
  blob's fixed values, kept from the first forward at this shape (:class:`EdgeCache`).
- Between two ends each layer computes the rows its successor reads (``computed[i]``, the window's
  preimage of the next layer's), and reads its input with the padding its window needs
  (``pads[i]``: zeros beyond the blob, which only convolutions take; a pooling window past its
  blob ends the planning).
- The last end (``last``) is made whole again for the rest of the net.

:func:`plan_crop` chooses the ends by least work, as :func:`.border.choose_stages` does: each
layer's multiply-adds over the rows it computes, plus :data:`COPY_COST` per value copied into a
buffer. The values are the plain graph's up to the convolution kernels' float rounding on maps of
another size (the border skipping's own terms); the fixed ones are the first forward's, exactly.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ..layers.tracing import is_channels_last

__all__ = ["AxisGeometry", "CropPlan", "EdgeCache", "Rect", "area", "part", "plan_crop", "ring"]

Span = tuple[int, int]
"""Rows ``[start, end)`` along one axis."""
Rect = tuple[Span, Span]
"""Rows and columns."""

#: Multiply-adds that copying one value costs, as far as choosing the ends goes (.border's too).
COPY_COST = 200


@dataclass(frozen=True)
class AxisGeometry:
    """One chain position along one axis, in the coordinates its readers see it in: the blob's
    length and the rows that read the image."""

    length: int
    image: Span


@dataclass(frozen=True)
class CropPlan:
    """For one input shape: which rows and columns each chain position computes (see the module)."""

    last: int
    """The last position computed in part; the layer after it reads it whole."""
    ends: frozenset[int]
    """Positions that hold only their image rect (``last`` among them)."""
    computed: dict[int, Rect]
    """Position -> the rect it holds (each position up to ``last``; an end's image rect, or more
    after a per-element layer)."""
    reads: dict[int, Rect]
    """Position -> the rect its layer reads from the blob before it (the data's for 0)."""
    images: dict[int, Rect]
    """Position -> its image rect."""
    shapes: dict[int, tuple[int, int]]
    """Position -> the whole blob's rows and columns."""
    buffers: dict[int, Rect]
    """End -> the rect the layer after it reads (the whole blob for ``last``)."""
    fills: dict[int, Rect]
    """End -> the part of its buffer its layer computed (its image rect, within the buffer); the
    rest of the buffer is kept."""
    pads: dict[int, tuple[Span, Span]]
    """Position -> the zeros its layer reads beyond its input, (before, after) per axis."""


def _preimage(window: object, out: Span, length: int) -> tuple[Span, Span]:
    """The input rows a layer's outputs ``out`` read, clipped to ``[0, length)``, and the padding
    rows beyond them (before, after)."""
    k, s, p = window.kernel, window.stride, window.pad  # type: ignore[attr-defined]
    start, end = out[0] * s - p, (out[1] - 1) * s - p + k
    return (max(0, start), min(length, end)), (max(0, -start), max(0, end - length))


def area(rect: Rect) -> int:
    """The values a rect covers (0 where it is empty)."""
    return max(0, rect[0][1] - rect[0][0]) * max(0, rect[1][1] - rect[1][0])


def plan_crop(
    geometry: Sequence[tuple[AxisGeometry, AxisGeometry]],
    windows: Sequence[tuple[object, object] | None],
    costs: Sequence[int],
    channels: Sequence[int],
    data: tuple[int, int],
    current: Sequence[float],
    must_end: Sequence[int] = (),
    produced: Sequence[Rect] | None = None,
    outside: Sequence[int] = (),
) -> CropPlan | None:
    """The least-work :class:`CropPlan` for a chain (``None`` where computing in part saves
    nothing): ``geometry[i]`` is position i's, ``windows[i]`` its layer's windows (``None`` for a
    per-element layer; a pooling's say so: ``pooling``), ``costs[i]`` its multiply-adds per output
    value over ``channels[i]``; position 0 is the first convolution, which reads the ``data``'s
    rows and columns with ``windows[0]``'s padding. ``must_end`` lists positions where the blob's
    coordinates change (the border skipping's stage ends): a segment may end there, not cross.
    ``current[i]`` is position i's work as it runs now (the copies after it included).
    ``produced[i]``, where a stage end's coordinates change, is its image rect as its layer makes
    it (default: ``geometry``'s). ``outside`` lists positions read outside the chain: they compute
    at least their image rect (a strided successor may read less), which their readers get whole."""
    count = len(geometry)
    shapes = [(g[0].length, g[1].length) for g in geometry]
    images: list[Rect] = [(g[0].image, g[1].image) for g in geometry]
    whole: list[Rect] = [((0, h), (0, w)) for h, w in shapes]
    windowed = [windows[i] is not None for i in range(count)]
    made = list(produced) if produced is not None else images
    forced = set(must_end)
    readers = set(outside)
    Pads = dict[int, tuple[Span, Span]]

    def segment(start: int, end: int) -> tuple[float, dict[int, Rect], dict[int, Rect], Pads]:
        """Positions start+1..end computing toward ``end``'s image: the work, the rect each holds,
        the rect each layer reads (from ``start``'s buffer, or the data's for start -1) and its
        padding; raises ValueError where the segment cannot run."""
        rects: dict[int, Rect] = {}
        reads: dict[int, Rect] = {}
        pads: Pads = {}
        for i in range(end, start, -1):
            if i == end:
                out = made[end]
            else:
                out = rects[i] if i not in readers else _union(rects[i], images[i])
                rects[i] = out
            limit = data if i == 0 else shapes[i - 1]
            if windows[i] is None:
                need, pad = out, ((0, 0), (0, 0))
            else:
                spans = [_preimage(windows[i][a], out[a], limit[a]) for a in range(2)]
                need, pad = (spans[0][0], spans[1][0]), (spans[0][1], spans[1][1])
                if windows[i][0].pooling and any(pad[0] + pad[1]):  # type: ignore[attr-defined]
                    raise ValueError("a pooling window past its blob")
                if area(need) == 0:
                    raise ValueError("a layer reading nothing")
            reads[i], pads[i] = need, pad
            if i - 1 == start:
                break
            if i - 1 in forced:
                raise ValueError("a stage end inside a segment")
            rects[i - 1] = need
        rects[end] = images[end]
        for i in range(start + 2, end + 1):  # a per-element layer holds what the layer before holds
            if windows[i] is not None:
                continue
            if i != end:
                rects[i] = rects[i - 1]
            elif rects[i - 1] != made[end]:
                if end in forced:  # (its coordinates change: only the image's rows shift as one)
                    raise ValueError("more than the image at a stage end")
                rects[end] = rects[i - 1]
        return sum(costs[i] * area(rects[i]) for i in range(start + 1, end + 1)), rects, reads, pads

    best: dict[int, tuple[float, list[int], dict[int, Rect], dict[int, Rect], Pads, dict[int, Rect]]] = {}
    for end in range(count - 1):
        if not windowed[end + 1] or area(images[end]) == 0:
            continue
        options = []
        for start in [-1, *best]:
            if start >= end:
                continue
            try:
                work, rects, reads, pads = segment(start, end)
            except ValueError:
                continue
            if start == -1:
                options.append((work, [], rects, reads, pads, {}))
                continue
            buffer = reads[start + 1]
            if area(_intersection(images[start], buffer)) == 0:
                continue
            cost, ends, before, before_reads, before_pads, buffers = best[start]
            copy = COPY_COST * channels[start] * area(buffer)
            options.append(
                (cost + copy + work, [*ends, start], {**before, **rects}, {**before_reads, **reads},
                 {**before_pads, **pads}, {**buffers, start: buffer})
            )  # fmt: skip
        if options:
            best[end] = min(options, key=lambda option: option[0])
    chosen = None
    for last, (cost, ends, rects, reads, pads, buffers) in best.items():
        if any(f <= last and f not in ends and f != last for f in forced):
            continue
        finish = cost + COPY_COST * channels[last] * area(whole[last]) + sum(current[last + 1 :])
        if chosen is None or finish < chosen[0]:
            chosen = (finish, last, ends, rects, reads, pads, {**buffers, last: whole[last]})
    if chosen is None or chosen[0] >= sum(current):
        return None
    _, last, ends, rects, reads, pads, buffers = chosen
    return CropPlan(
        last=last,
        ends=frozenset([*ends, last]),
        computed=rects,
        reads=reads,
        images={i: images[i] for i in range(last + 1)},
        shapes={i: shapes[i] for i in range(last + 1)},
        buffers=buffers,
        fills={end: _intersection(images[end], buffer) for end, buffer in buffers.items()},
        pads=pads,
    )


def _union(a: Rect, b: Rect) -> Rect:
    return tuple((min(x[0], y[0]), max(x[1], y[1])) for x, y in zip(a, b, strict=True))  # type: ignore[return-value]


def _intersection(a: Rect, b: Rect) -> Rect:
    return tuple((max(x[0], y[0]), min(x[1], y[1])) for x, y in zip(a, b, strict=True))  # type: ignore[return-value]


def part(x: Tensor, rect: Rect, origin: Rect) -> Tensor:
    """The view of ``x`` (which holds ``origin``) over ``rect``, along its last two axes."""
    (a, b), (c, d) = rect
    return x[..., a - origin[0][0] : b - origin[0][0], c - origin[1][0] : d - origin[1][0]]


def ring(outer: Rect, inner: Rect) -> list[Rect]:
    """``outer`` less ``inner`` as up to four rects: the rows above and below ``inner`` over
    ``outer``'s width, then the columns left and right of it over ``inner``'s rows."""
    (r0, r1), (c0, c1) = outer
    (i0, i1), (j0, j1) = inner
    rects = [((r0, i0), (c0, c1)), ((i1, r1), (c0, c1)), ((i0, i1), (c0, j0)), ((i0, i1), (j1, c1))]
    return [r for r in rects if area(r) > 0]


class EdgeCache:
    """The fixed values of one input shape's buffers, recorded from a whole forward and kept while
    the weights, dtype and device they came from stay (``key``); and, while it is the shape in use,
    the buffers themselves with those values in place (:meth:`assembled`)."""

    def __init__(self, key: tuple, wanted: int) -> None:
        self.key = key
        self.wanted = wanted
        self.strips: dict[object, list[Tensor]] = {}
        self.failed = False
        self._buffers: dict[object, Tensor] = {}
        self._busy: set[object] = set()
        self._lock = threading.Lock()

    @property
    def ready(self) -> bool:
        return not self.failed and len(self.strips) == self.wanted

    def record(self, name: object, blob: Tensor, outer: Rect, inner: Rect) -> None:
        """Keep ``blob``'s values over ``outer`` less ``inner`` (``blob`` starting at row and column
        0); a non-finite one spoils the recording (NaN can reach fixed values only through a
        kernel's tiles: the next forward records again)."""
        whole = ((0, int(blob.shape[-2])), (0, int(blob.shape[-1])))
        strips = [part(blob, rect, whole).clone() for rect in ring(outer, inner)]
        self.failed = self.failed or not all(bool(torch.isfinite(strip).all()) for strip in strips)
        self.strips[name] = strips

    def assemble(self, name: object, x: Tensor, outer: Rect, inner: Rect, source: Rect) -> Tensor:
        """The blob over ``outer``: ``x`` (which holds ``source``) over ``inner``, the kept values
        around it."""
        _check_holds(source, inner)
        rows, cols = outer
        shape = (*x.shape[:-2], rows[1] - rows[0], cols[1] - cols[0])
        layout = torch.channels_last if is_channels_last(x) else torch.contiguous_format
        out = torch.empty(shape, dtype=x.dtype, device=x.device, memory_format=layout)
        for rect, strip in zip(ring(outer, inner), self.strips[name], strict=True):
            part(out, rect, outer).copy_(strip)
        part(out, inner, outer).copy_(part(x, inner, source))
        return out

    @contextlib.contextmanager
    def assembled(self, name: object, x: Tensor, outer: Rect, inner: Rect, source: Rect) -> Iterator[Tensor]:
        """:meth:`assemble`'s blob, for use inside the block only: the buffer kept from the last
        forward with its fixed values in place, only ``x``'s rect written into it (a forward running
        beside another on the same buffer, or one that could not write into it, gets a new one)."""
        with self._lock:
            free = name not in self._busy
            self._busy.add(name)
        try:
            kept = self._buffers.get(name) if free else None
            if kept is None or not _writable_like(kept, x):
                kept = self.assemble(name, x, outer, inner, source)
                if free:
                    self._buffers[name] = kept
            else:
                _check_holds(source, inner)
                part(kept, inner, outer).copy_(part(x, inner, source))
            yield kept
        finally:
            if free:
                with self._lock:
                    self._busy.discard(name)

    def drop_buffers(self) -> None:
        """Let the kept buffers go (the fixed values stay): another shape is in use."""
        self._buffers = {}


def _check_holds(source: Rect, inner: Rect) -> None:
    if not all(h[0] <= i[0] and i[1] <= h[1] for i, h in zip(inner, source, strict=True)):
        raise RuntimeError(f"border skipping: the computed rect {source} misses the image's {inner}")


def _writable_like(buffer: Tensor, x: Tensor) -> bool:
    """Whether ``buffer`` can take ``x``'s values here: its batch, channels, dtype, device and layout,
    and, in a forward outside inference mode, not an inference-mode tensor (which that cannot write)."""
    return (
        buffer.shape[:-2] == x.shape[:-2]
        and buffer.dtype == x.dtype
        and buffer.device == x.device
        and is_channels_last(buffer) == is_channels_last(x)
        and (torch.is_inference_mode_enabled() or not buffer.is_inference())
    )
