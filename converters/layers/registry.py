"""The one registry of layer converters.

A converter receives a :class:`LayerContext` (the layer's parameters, its bottoms' shapes, its
stored blobs' shapes) and returns a :class:`Converted`: a module or a function to call on the
bottoms, plus where each Caffe blob of the layer goes. Adding a layer type is one decorated
function in one module, which declares how many bottoms and tops the type takes (the builder
refuses other counts, naming the layer, before the converter runs)::

    @converters.register_layer("MyLayer", bottoms=1, tops=1)   # or (min, max), (min, None)
    def my_layer(ctx):
        return Converted(function=torch.sigmoid, keeps_shape=True)
"""

from __future__ import annotations

import dataclasses
import math
import weakref
from collections.abc import Callable, Sequence
from typing import Any

from torch import Tensor, nn

from ..caffe.message import Message
from ..errors import NetError, UnsupportedLayerError

Shape = tuple[int, ...]

__all__ = [
    "INT_MAX",
    "BlobCounts",
    "Converted",
    "Converter",
    "LayerContext",
    "Shape",
    "UnsupportedLayerError",
    "blob_counts",
    "canonical_axis",
    "check_count",
    "check_int",
    "converter_for",
    "register_layer",
    "registered_types",
    "unregister_layer",
]


@dataclasses.dataclass
class LayerContext:
    """Everything a converter may use about one layer."""

    layer: Message
    name: str
    type: str
    bottoms: list[str]
    tops: list[str]
    bottom_shapes: list[Shape | None]
    blob_shapes: list[Shape] | None
    """Shapes of the layer's blobs in the weights file (legacy 4-D shapes as stored), if any."""
    phase: str
    guessed: bool = False
    """Some bottom's shape comes from an input whose shape was guessed (neither declared by the net
    nor given): checks that relate the bottoms' sizes to each other may not hold for it."""
    variant: str | None = None
    """Which fork's semantics to follow where forks compute one type differently (``build_graph``'s
    ``variants``); ``None``: the type's default, the first of those it was registered with."""

    def param(self, field: str) -> Message:
        """The layer's ``<type>_param`` message (schema defaults when absent)."""
        return self.layer.get(field)

    @property
    def where(self) -> str:
        """How errors name this layer: ``layer 'name' (Type)``."""
        return f"layer '{self.name}' ({self.type})"

    def bottom_shape(self, index: int = 0) -> Shape:
        """The shape of bottom ``index``; an error naming the blob when it is unknown."""
        shape = self.bottom_shapes[index]
        if shape is None:
            raise ValueError(
                f"{self.where}: the shape of bottom '{self.bottoms[index]}' is "
                "unknown; give the input shapes (input_shapes=...)"
            )
        return shape

    def legacy_bottoms(self, *indices: int) -> None:
        """Refuse, naming the blob, a bottom among ``indices`` (default: all) with more than 4 axes:
        Caffe reads it through Blob's legacy num/channels/height/width accessors, whose CHECK stops
        at a fifth axis (fewer axes read as 1)."""
        for index in indices or range(len(self.bottoms)):
            shape = self.bottom_shapes[index] if index < len(self.bottom_shapes) else None
            if shape is not None and len(shape) > 4:
                blob = self.bottoms[index]
                raise NetError(
                    f"{self.where}: bottom '{blob}' has {len(shape)} axes {list(shape)}; Caffe reads it as "
                    "(num, channels, height, width), at most 4 axes: reshape it to 4 first"
                )

    def refuse_in_place(self, why: str) -> None:
        """Refuse a top named as its bottom (Caffe's in place): ``why`` says what Caffe then
        computes instead of the layer's function (it reads the one blob's memory as it writes it)."""
        for bottom, top in zip(self.bottoms, self.tops, strict=False):
            if bottom == top:
                raise NetError(
                    f"{self.where} computes blob '{top}' in place, but {why}: give its top a name of its own"
                )

    def channels(self, axis: int = 1, blob: int = 0, from_blob: Callable[[Shape], int] | None = None) -> int:
        """The size of ``axis`` of bottom 0, or else what the stored blob ``blob`` implies."""
        shape = self.bottom_shapes[0] if self.bottom_shapes else None
        if shape is not None:
            return shape[canonical_axis(axis, len(shape), self.where)]
        if self.blob_shapes and from_blob is not None and len(self.blob_shapes) > blob:
            return from_blob(self.blob_shapes[blob])
        return self.bottom_shape(0)[axis]


@dataclasses.dataclass
class Converted:
    """A converter's answer.

    Exactly one of ``module`` (called as ``self.<layer>(*bottoms)``) and ``function`` (called as
    ``function(*bottoms, **kwargs)``) is set, unless the layer has no computation (``role``
    ``"input"`` or ``"silence"``). ``blobs`` lists, in Caffe's blob order, the module attribute
    each stored blob loads into and the shape Caffe gives that blob. ``outputs`` > 1 means the call
    returns a tuple, one item per top; ``same_for_all_tops`` means every top gets the one result
    (Split).
    """

    module: nn.Module | None = None
    function: Callable[..., Any] | None = None
    kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    blobs: list[tuple[str, Shape]] = dataclasses.field(default_factory=list)
    fillers: list[Message | None] = dataclasses.field(default_factory=list)
    """Caffe's filler of each blob, as its ``LayerSetUp`` uses it when no weights are loaded; ``None``
    where the prototxt writes none and Caffe takes ``FillerParameter``'s default (constant 0)."""
    inference_fillers: list[Message | None] | None = None
    """The fillers for a net drawn at random to be *run* (``strict=False``, no weights), where
    Caffe's would give a net that computes nothing useful (BatchNorm's zero variance and scale
    factor); ``None``: :attr:`fillers`, unwritten ones drawn fan-in scaled."""
    outputs: int = 1
    same_for_all_tops: bool = False
    per_bottom: bool = False
    """The op runs on each bottom alone, with the same parameters, giving one top per bottom
    (Convolution and Deconvolution with several bottoms)."""
    role: str = "op"
    caffe_backward: Callable[[Tensor, Tensor, Tensor, bool, Tensor], Tensor] | None = None
    """For a layer whose Caffe ``Backward_cpu`` reads its blobs' data: the bottom diff from ``(top
    diff, bottom data, top data, in place, the input as the layer computed from it)`` (the last for
    what Caffe's forward pass keeps aside: Swish's sigmoid, MVN's deviation). Caffe reads the data
    when it runs backward, after later layers computing in place have overwritten the blob: the
    graph then feeds this the blob's final value (:mod:`converters.graph.inplace`)."""
    caffe_backward_params: tuple[str, ...] = ()
    """The module's parameters whose Caffe gradient also reads the blobs' data (SSD's Normalize:
    its scale's reads the top): :attr:`caffe_backward` then takes them after its five arguments and
    returns ``(bottom diff, *their diffs)``."""
    clobbers_top_diff: bool = False
    """Computed in place, Caffe's backward writes the bottom diff (the top diff's memory) before it
    has read the top diff, so :attr:`caffe_backward` applies even to the blob's last writer."""
    shares_data: bool = False
    """Caffe's top shares its bottom's memory (``ShareData``: Reshape, Flatten, Split, a Concat of
    one bottom, a Slice into one top), so a layer that
    later computes in place on either blob changes both: the graph gives the other blob the new
    values too (:func:`converters.graph.builder.alias_after_in_place`)."""
    shares_diff: bool = False
    """With :attr:`shares_data`: the top's diff is its bottom's memory too, shared when the layer
    reshapes (``ShareDiff``: Reshape, a Concat of one bottom, a Slice into one top), so a later
    :attr:`repoints_bottom_diff` layer reading the top cuts the gradient off from the bottom."""
    repoints_bottom_diff: bool = False
    """Caffe's backward points the bottom's diff at the top's instead of writing it (Flatten's
    ``bottom[0]->ShareDiff(*top[0])``): where the bottom is a :attr:`shares_diff` top that only this
    layer reads (no Split between them), the diff that view shared with its own bottom is left
    unwritten, and no gradient of this layer's top reaches the layers before the view."""
    reads_own_output: bool = False
    """Computed in place, Caffe's backward reads as "bottom data" the blob the layer has itself
    overwritten with its output, and that changes its gradient (BNLL; ReLU with a negative slope;
    Clip), so :attr:`caffe_backward` applies even to the blob's last writer."""
    keeps_shape: bool = False
    """The single output has its (first) bottom's shape: no shape inference run needed."""
    output_shape: Callable[[list[Shape]], Shape | list[Shape]] | None = None
    """The output shape (a list of them for several outputs) from the bottoms' shapes, where
    running the op on meta tensors is slow or impossible."""


Converter = Callable[[LayerContext], Converted]
_VARIANTS: dict[str, tuple[str, ...]] = {}
_CONVERTERS: dict[str, Converter] = {}

Count = int | tuple[int, int | None] | None
"""How many bottoms or tops a layer type takes: exactly ``n``, ``(min, max)`` (``max`` ``None``:
no limit), or ``None`` (not checked)."""


@dataclasses.dataclass(frozen=True)
class BlobCounts:
    """The bottom and top counts a layer type accepts, as Caffe's ``ExactNumBottomBlobs``,
    ``MinBottomBlobs``, ``MaxTopBlobs``, ``EqualNumBottomTopBlobs`` ... declare them."""

    bottoms: tuple[int, int | None] | None = None
    tops: tuple[int, int | None] | None = None
    equal: bool = False
    """As many tops as bottoms (Convolution: one top per bottom)."""

    def check(self, layer_name: str, layer_type: str, bottoms: int, tops: int) -> None:
        """Raise :class:`NetError` naming the layer when the counts are not accepted."""
        where = f"layer '{layer_name}' ({layer_type})"
        for what, have, limits in (("bottom", bottoms, self.bottoms), ("top", tops, self.tops)):
            if limits is None:
                continue
            low, high = limits
            if low <= have and (high is None or have <= high):
                continue
            if low == high:
                want = f"exactly {low}"
            elif high is None:
                want = f"at least {low}"
            else:
                want = f"{low} to {high}"
            raise NetError(f"{where} takes {want} {what}{'' if want.endswith(' 1') else 's'}, got {have}")
        if self.equal and bottoms != tops:
            raise NetError(f"{where} makes one top per bottom: it has {bottoms} bottoms and {tops} top(s)")


_COUNTS: dict[str, BlobCounts] = {}
_DECLARED: weakref.WeakKeyDictionary[Converter, dict[str, BlobCounts]] = weakref.WeakKeyDictionary()
"""Converter -> the counts declared for each type it was registered for."""


def _limits(count: Count, what: str) -> tuple[int, int | None] | None:
    if count is None:
        return None
    if isinstance(count, int):
        count = (count, count)
    low, high = count
    if (
        not isinstance(low, int)
        or low < 0
        or (high is not None and (not isinstance(high, int) or high < low))
    ):
        raise TypeError(f"register_layer: {what} must be n, (min, max) or (min, None), not {count!r}")
    return (low, high)


def register_layer(
    *types: str,
    bottoms: Count = None,
    tops: Count = None,
    equal: bool = False,
    override: bool = False,
    variants: Sequence[str] = (),
) -> Callable[[Converter], Converter]:
    """Register a converter function for one or more Caffe layer type names.

    ``bottoms`` and ``tops`` declare how many blobs the type takes (``1``, ``(2, None)``, ``(1, 2)``;
    ``None`` leaves it unchecked) and ``equal=True`` one top per bottom: the builder refuses other
    counts, naming the layer, before the converter runs. A type that already has a converter is
    refused unless ``override=True`` (a user replacing a built-in converter must say so).
    ``variants`` names the forks' semantics the converter can follow (``LayerContext.variant``),
    the default first."""
    if not types or not all(isinstance(t, str) and t for t in types):
        raise TypeError("register_layer takes one or more layer type names, e.g. register_layer('Interp')")
    counts = BlobCounts(_limits(bottoms, "bottoms"), _limits(tops, "tops"), bool(equal))

    def decorate(function: Converter) -> Converter:
        taken = [t for t in types if t in _CONVERTERS and _CONVERTERS[t] is not function]
        if taken and not override:
            owner = _CONVERTERS[taken[0]]
            raise ValueError(
                f"layer type '{taken[0]}' already has a converter ({owner.__module__}.{owner.__qualname__}); "
                "pass override=True to replace it"
            )
        try:
            declared: dict[str, BlobCounts] = _DECLARED.setdefault(function, {})
        except TypeError:  # a converter that takes no weak reference: counts as given
            declared = {}
        for layer_type in types:
            _CONVERTERS[layer_type] = function
            # Counts belong to (converter, type): registering a converter again without counts
            # (restoring a built-in after overriding it) keeps the counts it was declared with.
            if counts != BlobCounts():
                declared[layer_type] = counts
            _COUNTS[layer_type] = declared.get(layer_type, counts)
            _VARIANTS[layer_type] = tuple(variants)
        return function

    return decorate


def layer_variants(layer_type: str) -> tuple[str, ...]:
    """The forks' semantics a type's converter can follow, its default first (empty: one)."""
    return _VARIANTS.get(layer_type, ())


def blob_counts(layer_type: str) -> BlobCounts:
    """The bottom/top counts ``layer_type`` declared when it was registered (unchecked if none)."""
    return _COUNTS.get(layer_type, BlobCounts())


def registered_types() -> list[str]:
    """Every layer type with a converter, sorted."""
    return sorted(_CONVERTERS)


def converter_for(layer_type: str, layer_name: str) -> Converter:
    """The converter of ``layer_type``, or an :class:`UnsupportedLayerError` naming the layer."""
    try:
        return _CONVERTERS[layer_type]
    except KeyError:
        raise UnsupportedLayerError(
            f"layer '{layer_name}' has type '{layer_type}', which fcn-port cannot convert; "
            "add it with @converters.register_layer (see docs/ARCHITECTURE.md) "
            f"or check the spelling ({len(_CONVERTERS)} types are known: converters.registered_types())"
        ) from None


def canonical_axis(axis: int, ndim: int, where: str = "axis") -> int:
    """``axis`` in ``[0, ndim)`` (negative counts from the end), as Caffe's ``CanonicalAxisIndex``
    checks it."""
    if not -ndim <= axis < ndim:
        raise ValueError(f"{where}: axis {axis} is out of range for a {ndim}-axis blob")
    return axis + ndim if axis < 0 else axis


INT_MAX = 2**31 - 1
"""Caffe's limit on a blob's number of values (``Blob::Reshape``: "blob size exceeds INT_MAX"),
and on every integer in a layer's window (stored as C ``int``)."""


def check_count(shape: Sequence[int], what: str, where: str) -> None:
    """Refuse (:class:`NetError`) a blob shape Caffe's ``Blob::Reshape`` refuses: a negative axis,
    or more than ``INT_MAX`` values (checked before anything is allocated)."""
    shape = tuple(int(d) for d in shape)
    if any(d < 0 for d in shape):
        raise NetError(f"{where}: {what} would have the negative shape {list(shape)}")
    count = math.prod(shape)
    if count > INT_MAX:
        raise NetError(
            f"{where}: {what} of shape {list(shape)} would hold {count:,} values, more than Caffe's "
            f"limit of {INT_MAX:,} per blob"
        )


def check_int(values: Sequence[int], what: str, where: str, *, low: int = 1) -> None:
    """Refuse window values (kernel, stride, pad, dilation) below ``low`` or beyond Caffe's C ``int``."""
    values = [int(v) for v in values]
    if any(v < low for v in values):
        bound = "positive" if low == 1 else f"at least {low}"
        raise NetError(f"{where}: {what} must be {bound}, got {values}")
    if any(v > INT_MAX for v in values):
        raise NetError(f"{where}: {what} {values} exceeds Caffe's integer range (at most {INT_MAX})")


def unregister_layer(layer_type: str) -> None:
    """Forget the converter of ``layer_type`` (for tests and plugins that clean up after themselves)."""
    _CONVERTERS.pop(layer_type, None)
    _COUNTS.pop(layer_type, None)
