"""Caffe net definitions (plus weights) as ``torch.fx`` graphs that compute what Caffe computes.

``load_caffe("deploy.prototxt", "weights.caffemodel")`` gives an ``nn.Module`` in eval mode whose
keyword inputs are the net's input blobs and whose result is a dict of its output blobs::

    net = load_caffe("voc-fcn8s/deploy.prototxt", "fcn8s-heavy-pascal.caffemodel")
    scores = net(data=x)["score"]
    print(net.code)            # the generated forward, one line per Caffe layer

:func:`build_graph` works in five phases, one function each: select the layers Caffe would
instantiate (:func:`select_layers`), size the inputs (:mod:`.inputs`), trace every layer's
converter on meta tensors into an ``fx.Graph`` (:func:`_trace`), load or fill the parameter blobs
(:func:`_load_blobs`), and record what was learned (:class:`CaffeNetInfo`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import keyword
import math
import operator
import os
import re
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, fx, nn

from ..caffe.forks import refuse_unimplemented_fields
from ..caffe.formats import FileWeights, open_weights, read_prototxt
from ..caffe.message import Message
from ..caffe.netdef import filter_layers, layer_type
from ..caffe.rules import first_invalid
from ..caffe.text import refuse_unknown_fields
from ..caffe.traits import is_loss_or_metric
from ..errors import CaffeFormatError, NetError, UnsupportedLayerError, WeightsMismatchError
from ..layers import Converted, LayerContext, converter_for, fill
from ..layers.fillers import caffe_filler, is_deterministic
from ..layers.registry import blob_counts, check_count, layer_variants, registered_types
from .devices import checked_device
from .inplace import (
    InPlaceBackward,
    InPlaceFinal,
    diff_left_unwritten,
    shared_value,
    without_backward,
)
from .inputs import input_shapes, is_source
from .lazy import LazyCaffeNet

Shape = tuple[int, ...]
PathLike = str | os.PathLike[str]

__all__ = ["CaffeNetInfo", "WeightsMismatchError", "build_graph", "load_caffe", "select_layers"]


@dataclasses.dataclass
class CaffeNetInfo:
    """What the builder learned about the net; kept on the module as ``net.caffe``."""

    name: str
    inputs: dict[str, Shape]
    """Input blob -> the shape declared by the net (or by ``input_shapes``), or a nominal one."""
    declared_inputs: frozenset[str]
    """Inputs whose shape was declared rather than guessed."""
    outputs: list[str]
    blob_shapes: dict[str, Shape]
    """Every blob's shape for the input shapes above (after in-place layers: the last value)."""
    layers: list[tuple[str, str]]
    """(layer name, type) of every layer in the graph, in order (names may repeat, as in Caffe)."""
    transform_params: dict[str, Message]
    """Input blob -> its data layer's ``transform_param`` (Caffe's preprocessing), if any."""
    unused_weights: list[str]
    """Layers in the weights file that the graph does not have (e.g. a training net's extras)."""
    randomly_initialised: list[str]
    """Layers whose parameters were not in the weights and were filled at random."""
    definition: Message
    """The V2 net definition the graph was built from (after filtering by phase)."""
    parameter_blobs: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    """Layer -> its Caffe blobs as state-dict keys, in Caffe's blob order. For a repeated name, the
    first layer's (where a caffemodel's blobs of that name go). A blob shared by name (``param {
    name: ... }``) is one tensor under each of its layers' keys."""
    bottom_shapes: dict[str, list[Shape]] = dataclasses.field(default_factory=dict)
    """Layer -> the shapes of its bottoms when it runs (for the input shapes above)."""
    parameter_shapes: dict[str, list[Shape]] = dataclasses.field(default_factory=dict)
    """Layer -> the shapes Caffe gives its parameter blobs, in Caffe's blob order."""
    parameter_fillers: dict[str, list[Message]] = dataclasses.field(default_factory=dict)
    """Layer -> the filler Caffe's ``LayerSetUp`` uses for each of its blobs, in Caffe's blob order."""
    variants: dict[str, str] = dataclasses.field(default_factory=dict)
    """Layer type -> the fork semantics it was built with, where chosen (``build_graph``'s ``variants``)."""
    filled_by_fillers: list[str] = dataclasses.field(default_factory=list)
    """Layers the weights did not cover whose fillers draw nothing at random (constant, bilinear,
    Caffe's constant-0 default): filled with Caffe's values, as Caffe fills them."""


@dataclasses.dataclass
class _Planned:
    """A layer with parameters, between tracing and loading."""

    name: str
    type: str
    attr: str
    converted: Converted
    stored: list[np.ndarray] | None
    params: list[Message] = dataclasses.field(default_factory=list)
    """The layer's ``param`` specs (``name`` shares a blob between layers; Caffe's ParamSpec)."""
    renamed: bool = False
    """Another layer of the same name came first: Caffe gives that one the caffemodel's blobs."""


@dataclasses.dataclass
class _Trace:
    graph: fx.Graph
    root: nn.Module
    outputs: list[str]
    nodes: dict[str, fx.Node]
    metas: dict[str, Tensor]
    bottom_shapes: dict[str, list[Shape]]
    planned: list[_Planned]


def select_layers(
    net: Message,
    *,
    phase: str = "TEST",
    level: int = 0,
    stages: Sequence[str] = (),
    with_loss: bool = False,
) -> list[Message]:
    """The layers Caffe instantiates for this state (upgraded from V1, filtered by phase, level and
    stages), without loss and accuracy layers unless ``with_loss``. Names may repeat, as Caffe
    allows: the graph gives each layer its own attribute, and a caffemodel's blobs go to the first
    layer of that name (Caffe's ``CopyTrainedLayersFrom``)."""
    if phase not in ("TEST", "TRAIN"):
        raise ValueError(f"phase must be 'TEST' or 'TRAIN', not {phase!r}")
    layers = filter_layers(net, phase, level, stages)
    layers = [layer for layer in layers if with_loss or not is_loss_or_metric(layer_type(layer))]
    # a misspelled field: Caffe refuses the net (a type without a converter is refused by type)
    known = set(registered_types())
    refuse_unknown_fields([layer for layer in layers if layer_type(layer) in known])
    refuse_unimplemented_fields(layers)  # a fork's field that changes the numbers in a way not followed
    for layer in layers:  # NaN, infinite or out-of-range parameter values (caffe.rules)
        problem = first_invalid(layer)
        if problem is not None:
            raise NetError(f"layer '{layer.get('name')}' ({layer_type(layer)}): {problem}")
    return layers


def build_graph(
    net: Message,
    weights: Mapping[str, list[np.ndarray]] | None = None,
    *,
    phase: str = "TEST",
    level: int = 0,
    stages: Sequence[str] = (),
    with_loss: bool = False,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    strict: bool = True,
    seed: int = 0,
    device: str | torch.device | None = None,
    initialise: bool = True,
    outputs: Sequence[str] | None = None,
    optimize: bool = False,
    variants: Mapping[str, str] | None = None,
) -> fx.GraphModule:
    """The net as a ``torch.fx.GraphModule`` in eval mode, its parameters from ``weights``.

    ``weights`` maps layer names to blobs as :func:`converters.read_weights` returns them; layers
    it lacks are filled from the prototxt's fillers (or fan-in scaled normals) when ``weights`` is
    ``None`` or ``strict`` is false, else raise :class:`WeightsMismatchError`. Loss and accuracy
    layers are dropped unless ``with_loss``; data layers' used tops become keyword inputs.
    ``initialise=False`` leaves parameters that have no stored weights uninitialised (for a state
    dict loaded next). ``outputs`` names the blobs to return (their final values, as Caffe's
    ``net.blobs`` holds them) instead of the net's outputs. ``device="meta"`` builds the graph and
    every shape without allocating or loading any parameter. ``optimize`` applies
    :func:`converters.graph.speed.optimize_for_cpu` (same state dict, Caffe's numbers within the
    parity tolerance; :func:`load_caffe` does by default on the CPU). ``variants`` picks a fork's
    semantics where forks compute a type differently (``{"Proposal": "brocolli-caffe"}``).

    Inputs whose shapes the net does not declare (an ``Input`` layer without ``shape``, or a data
    layer whose guessed size the net refuses) and ``input_shapes`` does not give make a
    :class:`~converters.graph.lazy.LazyCaffeNet`: built on its first call, for that call's shapes.
    """
    variants = _checked_variants(variants)
    layers = select_layers(net, phase=phase, level=level, stages=stages, with_loss=with_loss)
    consumed = {b for layer in layers if not is_source(layer) for b in layer.getall("bottom")}
    given = dict(input_shapes or {})
    shapes, declared, transforms = _inputs(layers, consumed, given, weights)
    target = checked_device(device) if device is not None else torch.device("cpu")
    guessed = set(shapes) - set(declared)
    if guessed and target.type != "meta":
        options = dict(
            phase=phase, level=level, stages=stages, with_loss=with_loss, strict=strict, seed=seed,
            initialise=initialise, outputs=outputs, optimize=optimize, variants=variants,
        )  # fmt: skip

        def build_for(found: dict[str, Shape], on: torch.device) -> fx.GraphModule:
            sized = {**given, **{b: found[b] for b in found if b not in given}}
            fast = bool(optimize) and on.type == "cpu"
            return build_graph(net, weights, input_shapes=sized, device=on, **{**options, "optimize": fast})  # type: ignore[arg-type]

        unsized = sorted(b for b in guessed if b in _shapeless_input_tops(layers))
        if unsized:  # an Input layer without a shape: never a size made up for it
            return LazyCaffeNet(build_for, unsized, target if device is not None else None)
        try:
            return _build(net, layers, weights, shapes, declared, transforms, phase, outputs, strict, seed,
                          initialise, target, optimize, variants)  # fmt: skip
        except UnsupportedLayerError:
            raise
        except (NetError, WeightsMismatchError):  # refused for a guessed size: size it from the call
            return LazyCaffeNet(build_for, sorted(guessed), target if device is not None else None)
    return _build(
        net, layers, weights, shapes, declared, transforms, phase, outputs, strict, seed, initialise, target,
        optimize, variants,
    )  # fmt: skip


def _checked_variants(variants: Mapping[str, str] | None) -> dict[str, str]:
    """``variants`` as a dict, each naming a type and one of the semantics its converter knows."""
    checked: dict[str, str] = {}
    for kind, variant in (variants or {}).items():
        known = layer_variants(kind)
        if variant not in known:
            choices = f"one of {', '.join(known)}" if known else "none: it has one meaning"
            raise ValueError(f"variants: layer type '{kind}' has no variant {variant!r} ({choices})")
        checked[kind] = variant
    return checked


def _shapeless_input_tops(layers: list[Message]) -> set[str]:
    """Tops of ``Input`` layers (legacy ``input:`` fields included) that declare no shape."""
    return {
        top
        for layer in layers
        if layer_type(layer) == "Input" and not layer.get("input_param").getall("shape")
        for top in layer.getall("top")
    }


def _build(
    net: Message,
    layers: list[Message],
    weights: Mapping[str, list[np.ndarray]] | None,
    shapes: dict[str, Shape],
    declared: set[str],
    transforms: dict[str, Message],
    phase: str,
    outputs: Sequence[str] | None,
    strict: bool,
    seed: int,
    initialise: bool,
    target: torch.device,
    optimize: bool,
    variants: Mapping[str, str],
) -> fx.GraphModule:
    trace = _trace(
        layers, shapes, weights, phase, outputs, set(shapes) - set(declared), variants,
        force_backward=bool(net.get("force_backward")),
    )  # fmt: skip
    module = fx.GraphModule(
        trace.root, trace.graph, class_name=_identifier(str(net.get("name") or "CaffeNet"), set())
    )
    shared = _shared_blobs(trace.planned)
    _check_parameter_memory(trace.planned, shared, target)
    _check_blob_memory(trace.metas, target)
    # Module.to_empty's empty_like on meta tensors imports sympy (0.3-0.9 s) on its first call
    module._apply(lambda t: torch.empty(t.shape, dtype=t.dtype, device=target))
    names = {str(layer.get("name")) for layer in layers}
    module.caffe = CaffeNetInfo(
        name=str(net.get("name") or ""),
        inputs=dict(shapes),
        declared_inputs=frozenset(declared),
        outputs=trace.outputs,
        blob_shapes={b: tuple(t.shape) for b, t in trace.metas.items()},
        layers=[(str(layer.get("name")), layer_type(layer)) for layer in layers],
        transform_params=transforms,
        unused_weights=sorted(set(weights or {}) - names),
        randomly_initialised=[],
        filled_by_fillers=[],
        variants=dict(variants),
        definition=_definition(net, layers),
        parameter_blobs=_first_per_name(
            (p.name, [f"{p.attr}.{a}" for a, _ in p.converted.blobs])
            for p in trace.planned
            if p.converted.blobs
        ),
        bottom_shapes=trace.bottom_shapes,
        parameter_shapes=_first_per_name(
            (p.name, [tuple(s) for _, s in p.converted.blobs]) for p in trace.planned if p.converted.blobs
        ),
        parameter_fillers=_first_per_name(
            (p.name, [caffe_filler(f) for f in _padded_fillers(p.converted.fillers, len(p.converted.blobs))])
            for p in trace.planned
            if p.converted.blobs
        ),
    )
    optimize = optimize and target.type != "meta"
    if optimize:  # the graph rewritten while the weights are still being read (a cold disk's wait)
        from .speed import rewrite_for_cpu

        rewrite_for_cpu(module)
    randomly, filled = _load_blobs(
        module,
        trace.planned,
        shared,
        weights,
        strict,
        seed,
        initialise and target.type != "meta",
        shapes,
        declared,
    )
    module.caffe.randomly_initialised, module.caffe.filled_by_fillers = randomly, filled
    module.eval()
    if optimize:
        from .speed import prepare_for_cpu

        prepare_for_cpu(module)
    return module


def _first_per_name(items: Iterable[tuple[str, Any]]) -> dict[str, Any]:
    """``{name: value}`` in net order; for a repeated name, its first layer's (where a caffemodel's
    blobs of that name go)."""
    out: dict[str, Any] = {}
    for name, value in items:
        out.setdefault(name, value)
    return out


def _inputs(
    layers: list[Message],
    consumed: set[str],
    given: Mapping[str, Sequence[int]],
    weights: Mapping[str, list[np.ndarray]] | None,
) -> tuple[dict[str, Shape], set[str], dict[str, Message]]:
    shapes, declared, transforms = input_shapes(layers, consumed, given, weights)
    sources = {top for layer in layers if is_source(layer) for top in layer.getall("top")}
    unknown = set(given) - sources  # a declared input the graph does not read (a dropped loss's label)
    if unknown:
        raise ValueError(f"input_shapes names {', '.join(sorted(unknown))}, which the net does not read")
    return shapes, declared, transforms


def _trace(
    layers: list[Message],
    shapes: dict[str, Shape],
    weights: Mapping[str, list[np.ndarray]] | None,
    phase: str,
    outputs: Sequence[str] | None,
    guessed: set[str] | None = None,
    variants: Mapping[str, str] | None = None,
    shared_last: Mapping[str, int] | None = None,
    force_backward: bool = False,
) -> _Trace:
    """Every layer's converter, called in order and run on meta tensors to learn its tops' shapes.

    Each layer is checked as Caffe's ``Net::Init`` and ``Layer::SetUp`` check it before its
    converter runs: its bottom and top counts, and that a top is written by a second layer only in
    place; every top's shape as ``Blob::Reshape`` checks it. ``guessed`` names the inputs whose
    shapes were guessed: blobs computed from them are marked so in each :class:`LayerContext`.
    ``shared_last`` gives, for blobs sharing memory with others (:attr:`Converted.shares_data`), the
    index of the last layer writing that memory under any of its names, where it comes after the
    blob's own last writer: the trace is run again with it when the first run finds such a blob.
    ``force_backward`` is the net's: it overrides the layers' ``propagate_down``, as in Caffe."""
    guessed_given = set(guessed or ())
    guessed = set(guessed_given)
    graph = fx.Graph()
    root = nn.Module()
    taken: set[str] = set()
    nodes: dict[str, fx.Node] = {}
    metas: dict[str, Tensor] = {}
    available: list[str] = []
    bottom_shapes: dict[str, list[Shape]] = {}
    planned: list[_Planned] = []
    producers: dict[str, str] = {}
    readers: dict[str, int] = {}  # blob -> the layers reading its current value so far
    names_seen: set[str] = set()
    for top, shape in shapes.items():
        nodes[top] = graph.placeholder(_identifier(top, taken))
        metas[top] = torch.empty(shape, device="meta")

    last_writer = {top: index for index, layer in enumerate(layers) for top in layer.getall("top")}
    for blob, index in (shared_last or {}).items():
        last_writer[blob] = max(last_writer[blob], index)
    sole_reader = _sole_readers(layers)
    diff_views: dict[str, fx.Node] = {}  # blob -> the node of the view sharing its bottom's diff
    writes: dict[str, int] = {}  # blob -> the last layer that wrote its values (not a memory-sharing view)
    inputs_written: set[str] = set()  # net inputs a layer computed in place (Caffe's outputs then)
    overwritten: dict[str, list[fx.Node]] = {}  # blob -> nodes waiting for its final value
    sharing: dict[str, list[str]] = {}  # blob -> the blobs sharing its memory (Reshape, Flatten, Split)
    aliases: list[fx.Node] = []
    for index, layer in enumerate(layers):
        name, kind = str(layer.get("name")), layer_type(layer)
        bottoms, tops = list(layer.getall("bottom")), list(layer.getall("top"))
        converter = converter_for(kind, name)
        blob_counts(kind).check(name, kind, len(bottoms), len(tops))
        _check_producers(name, kind, bottoms, tops, producers)
        _check_in_place_readers(name, kind, bottoms, tops, list(layer.getall("loss_weight")), readers)
        renamed = name in names_seen
        names_seen.add(name)
        if is_source(layer):
            available += [t for t in tops if t in nodes]
            continue
        missing = [b for b in bottoms if b not in nodes]
        if missing:
            raise NetError(
                f"layer '{name}' ({kind}) reads blob '{missing[0]}', which no earlier layer produces"
            )
        stored = None if renamed else (weights or {}).get(name)
        bottom_shapes.setdefault(name, [tuple(metas[b].shape) for b in bottoms])
        ctx = LayerContext(
            layer=layer,
            name=name,
            type=kind,
            bottoms=bottoms,
            tops=tops,
            bottom_shapes=[tuple(metas[b].shape) for b in bottoms],
            blob_shapes=[tuple(b.shape) for b in stored] if stored else None,
            phase=phase,
            guessed=any(b in guessed for b in bottoms),
            variant=(variants or {}).get(kind),
        )
        if ctx.guessed:
            guessed.update(tops)
        try:
            converted = converter(ctx)
        except NetError:
            raise
        except (ValueError, TypeError, ArithmeticError, IndexError, RuntimeError) as exc:  # torch: sizes
            if str(exc).startswith(f"layer '{name}'"):
                raise NetError(str(exc)) from None
            raise NetError(f"layer '{name}' ({kind}): {exc}") from None
        where = f"layer '{name}' ({kind})"
        for i, (_, blob_shape) in enumerate(converted.blobs):
            check_count(blob_shape, f"parameter blob {i}", where)
        params = list(layer.getall("param"))
        if len(params) > len(converted.blobs):
            raise NetError(
                f"{where} has {len(params)} param specs but only {len(converted.blobs)} parameter blobs "
                "(Caffe: too many params specified)"
            )
        if converted.role == "silence":  # a sink: what it swallows is what the net's users read
            continue
        for b in bottoms:
            if b in available:
                available.remove(b)
        if converted.repoints_bottom_diff and bottoms[0] in diff_views and sole_reader[index]:
            _cut_shared_diff(graph, nodes, diff_views.pop(bottoms[0]), taken)
        stopped = _stopped_bottoms(layer, where, len(bottoms), force_backward)
        per_bottom = converted.per_bottom and len(bottoms) > 1
        calls = [([b], [t]) for b, t in zip(bottoms, tops, strict=True)] if per_bottom else [(bottoms, tops)]
        firsts = list(range(len(bottoms))) if per_bottom else [0]
        attr = _identifier(name, taken) if per_bottom and converted.module is not None else ""
        for first, (call_bottoms, call_tops) in zip(firsts, calls, strict=True):
            args = tuple(
                _without_backward(graph, nodes[b], taken) if first + i in stopped else nodes[b]
                for i, b in enumerate(call_bottoms)
            )
            in_place = bool(set(call_tops) & set(call_bottoms))
            node_name = _identifier(name if in_place or len(call_tops) != 1 else call_tops[0], taken)
            if converted.module is not None:
                if not attr:  # the module's attribute: its (only) node's name, as before
                    attr = node_name
                if not hasattr(root, attr):
                    root.add_module(attr, converted.module)
                    planned.append(_Planned(name, kind, attr, converted, stored, params, renamed))
                node = graph.create_node("call_module", attr, args, name=node_name)
                call = converted.module
            else:
                node = graph.create_node(
                    "call_function", converted.function, args, dict(converted.kwargs), name=node_name
                )
                call = _partial(converted.function, converted.kwargs)
            result = _meta_result(name, kind, converted, call, call_bottoms, metas)
            for top, value, top_node in zip(
                call_tops,
                *_per_top(name, kind, converted, result, node, graph, call_tops, taken),
                strict=True,
            ):
                _check_top(where, top, tuple(value.shape))
                clobbers = top in call_bottoms and (converted.clobbers_top_diff or converted.reads_own_output)
                waiting = any(blob in overwritten for blob in sharing.get(top, [top]))
                if last_writer[top] > index or waiting or clobbers:
                    top_node = _in_place_backward(
                        graph, root, taken, name, converted, args, call_bottoms, top, top_node,
                        overwritten, last=last_writer[top] == index, sharing=sharing,
                    )  # fmt: skip
                nodes[top] = top_node
                metas[top] = value
                if converted.shares_data and top not in call_bottoms:
                    group = sharing.get(call_bottoms[0], [call_bottoms[0]]) + [top]
                    sharing.update(dict.fromkeys(group, group))
                    if converted.shares_diff:
                        diff_views[top] = top_node
                else:
                    writes[top] = index
                    if top in shapes:
                        inputs_written.add(top)
                    if top in call_bottoms and top in sharing:
                        aliases += alias_after_in_place(graph, nodes, sharing[top], top, taken)
                if top in available:
                    available.remove(top)
                available.append(top)

    # A layer whose Caffe backward reads its top's data reads it after every later layer that
    # computed in place on a blob sharing that memory: with such writes, trace again knowing them.
    later = {
        blob: last for blob, group in sharing.items()
        if (last := max(writes.get(member, -1) for member in group)) > last_writer[blob]
    }  # fmt: skip
    if later:
        return _trace(layers, shapes, weights, phase, outputs, guessed_given, variants, later, force_backward)
    if outputs is not None:
        unknown_blobs = [blob for blob in outputs if blob not in nodes]
        if unknown_blobs:
            raise ValueError(f"the net has no blob {', '.join(map(repr, unknown_blobs))}")
        outputs = list(outputs)
    else:
        outputs = [blob for blob in available if blob not in shapes or blob in inputs_written]
    sinks = any(node.op == "call_module" and not node.users for node in graph.nodes)
    if not outputs and not sinks:
        raise NetError("the net computes nothing: no layer produces an output blob")
    graph.output({blob: nodes[blob] for blob in outputs})
    for alias in reversed(aliases):  # (a blob no later layer reads and no output names)
        if not alias.users:
            graph.erase_node(alias)
    return _Trace(graph, root, outputs, nodes, metas, bottom_shapes, planned)


def _stopped_bottoms(layer: Message, where: str, count: int, force_backward: bool) -> set[int]:
    """The bottoms whose ``propagate_down`` is false (none where the net forces backward), checked
    as Caffe's ``Net::Init`` checks the field: once per bottom, or not at all."""
    given = [bool(value) for value in layer.getall("propagate_down")]
    if given and len(given) != count:
        raise NetError(
            f"{where} gives propagate_down {len(given)} times for {count} bottom(s); Caffe takes it once "
            "per bottom or not at all"
        )
    return set() if force_backward else {i for i, value in enumerate(given) if not value}


def _without_backward(graph: fx.Graph, node: fx.Node, taken: set[str]) -> fx.Node:
    name = _identifier(f"{node.name}_no_backward", taken)
    return graph.create_node("call_function", without_backward, (node,), name=name)


def _sole_readers(layers: list[Message]) -> list[bool]:
    """For each layer: whether it alone reads the value its first bottom holds then (Caffe inserts
    no Split there), counting every reader of that value, later ones included."""
    version: dict[str, int] = {}
    readers: dict[tuple[str, int], int] = {}
    first: list[tuple[str, int] | None] = []
    for layer in layers:
        bottoms = list(layer.getall("bottom"))
        for bottom in bottoms:
            key = (bottom, version.get(bottom, 0))
            readers[key] = readers.get(key, 0) + 1
        first.append((bottoms[0], version.get(bottoms[0], 0)) if bottoms else None)
        for top in layer.getall("top"):
            version[top] = version.get(top, 0) + 1
    return [key is not None and readers[key] == 1 for key in first]


def _cut_shared_diff(graph: fx.Graph, nodes: dict[str, fx.Node], view: fx.Node, taken: set[str]) -> None:
    """Caffe's Flatten reading, alone, a view that shares its bottom's diff: the view's gradient
    stops there (:func:`.inplace.diff_left_unwritten`), for every layer after it."""
    with graph.inserting_after(view):
        cut = graph.create_node(
            "call_function", diff_left_unwritten, (view,), name=_identifier(f"{view.name}_diff_cut", taken)
        )
    view.replace_all_uses_with(cut, delete_user_cb=lambda user: user is not cut)
    for blob, node in nodes.items():
        if node is view:
            nodes[blob] = cut


def alias_after_in_place(
    graph: fx.Graph, nodes: dict[str, fx.Node], group: list[str], written: str, taken: set[str]
) -> list[fx.Node]:
    """After a layer computed ``written`` in place: each other blob of its memory-sharing ``group``
    (Caffe's Reshape and Flatten tops share their bottom's memory) holds the new values in its own
    shape, for the layers after and the outputs, as Caffe's blob does (:func:`.inplace.shared_value`)."""
    made = []
    for blob in group:
        if blob != written:
            name = _identifier(f"{blob}_shared", taken)
            node = graph.create_node("call_function", shared_value, (nodes[written], nodes[blob]), name=name)
            nodes[blob] = node
            made.append(node)
    return made


def _check_producers(
    name: str, kind: str, bottoms: list[str], tops: list[str], producers: dict[str, str]
) -> None:
    """Caffe's rule for tops (``Net::AppendTop``): a blob that exists already may be written again
    only in place, as top ``i`` of a layer whose bottom ``i`` it is."""
    for i, top in enumerate(tops):
        in_place = i < len(bottoms) and bottoms[i] == top
        if top in producers and not in_place:
            raise NetError(
                f"layer '{name}' ({kind}) writes blob '{top}', which layer '{producers[top]}' already "
                "produces; Caffe rewrites a blob only in place (top i named as bottom i)"
            )
        producers.setdefault(top, name)


def _check_in_place_readers(
    name: str, kind: str, bottoms: list[str], tops: list[str], loss_weights: list[float],
    readers: dict[str, int],
) -> None:  # fmt: skip
    """Caffe's ``InsertSplits``: a blob value read by two layers (or read and weighted as a loss) is
    split, the readers' bottoms renamed but not an in-place top, which then has two producers
    (``Net::AppendTop`` stops): a layer computes in place only on a value it alone reads."""
    for bottom in bottoms:
        readers[bottom] = readers.get(bottom, 0) + 1
    for i, top in enumerate(tops):
        if i < len(bottoms) and bottoms[i] == top and readers[top] > 1:
            raise NetError(
                f"layer '{name}' ({kind}) computes blob '{top}' in place, but another layer reads the "
                f"same value of '{top}' (or this one reads it twice); Caffe refuses that (top produced "
                "by multiple sources): give the top a name of its own"
            )
    for i, top in enumerate(tops):
        readers[top] = int(i < len(loss_weights) and float(loss_weights[i]) != 0)


def _check_top(where: str, top: str, shape: Shape) -> None:
    """A top's shape as Caffe's ``Blob::Reshape`` and its forward pass accept it: at most INT_MAX
    values, and not empty (Caffe holds no data for a blob without values and stops at it)."""
    check_count(shape, f"top '{top}'", where)
    if 0 in shape:
        raise NetError(
            f"{where}: top '{top}' would have the empty shape {list(shape)}; Caffe cannot compute an "
            "empty blob"
        )


def _in_place_backward(
    graph: fx.Graph,
    root: nn.Module,
    taken: set[str],
    name: str,
    converted: Converted,
    args: tuple[fx.Node, ...],
    bottoms: list[str],
    top: str,
    node: fx.Node,
    overwritten: dict[str, list[fx.Node]],
    last: bool,
    sharing: Mapping[str, list[str]] | None = None,
) -> fx.Node:
    """The node for ``top`` when layers compute ``top`` in place (:mod:`.inplace`): before a later
    layer overwrites it, an :class:`InPlaceBackward` for a layer whose Caffe backward reads the
    data; at its last writer, the :class:`InPlaceFinal` that hands the final value to them."""
    wrap = converted.caffe_backward is not None and len(bottoms) == 1
    in_place = wrap and top == bottoms[0]
    if wrap and (not last or (in_place and (converted.clobbers_top_diff or converted.reads_own_output))):
        attr = _identifier(f"{name}_caffe_backward", taken)
        root.add_module(attr, InPlaceBackward(converted.caffe_backward, in_place=in_place))
        params = tuple(
            graph.get_attr(f"{node.target}.{param}") for param in converted.caffe_backward_params
        ) if node.op == "call_module" else ()  # fmt: skip
        node = graph.create_node("call_module", attr, (args[0], node, *params), name=attr)
        overwritten.setdefault(top, []).append(node)
    if not last:
        return node
    attr = _identifier(f"{top}_final", taken)
    root.add_module(attr, InPlaceFinal())
    waiting = [n for blob in (sharing or {}).get(top, [top]) for n in overwritten.pop(blob, [])]
    return graph.create_node("call_module", attr, (node, *waiting), name=attr)


def _meta_result(
    name: str, kind: str, converted: Converted, call: Any, bottoms: list[str], metas: dict[str, Tensor]
) -> Tensor | tuple[Tensor, ...]:
    """The layer's result on meta tensors (shapes only, nothing computed or allocated)."""
    meta_args = tuple(metas[b] for b in bottoms)
    try:
        with torch.no_grad():
            if converted.keeps_shape:
                return meta_args[0]
            if converted.output_shape is not None:
                shape = converted.output_shape([tuple(t.shape) for t in meta_args])
                if isinstance(shape, list):
                    return tuple(torch.empty(s, device="meta") for s in shape)
                return torch.empty(shape, device="meta")
            return call(*meta_args)
    except Exception as exc:  # noqa: BLE001  (any failure of the op on these shapes is the net's error)
        shapes_text = ", ".join(f"{b} {list(metas[b].shape)}" for b in bottoms)
        reason = " ".join(str(exc).split()) or type(exc).__name__  # torch's messages span lines
        raise NetError(f"layer '{name}' ({kind}) cannot run on {shapes_text}: {reason}") from None


def _per_top(
    name: str,
    kind: str,
    converted: Converted,
    result: Tensor | tuple[Tensor, ...],
    node: fx.Node,
    graph: fx.Graph,
    tops: list[str],
    taken: set[str],
) -> tuple[list[Tensor], list[fx.Node]]:
    """Each top's meta value and graph node."""
    if not tops:  # a sink (HDF5Output): the node runs for its effect
        return [], []
    if converted.same_for_all_tops:
        return [result] * len(tops), [node] * len(tops)
    if converted.outputs > 1 or len(tops) > 1:
        if not isinstance(result, tuple) or len(result) != len(tops):
            raise NetError(f"layer '{name}' ({kind}) gives {converted.outputs} results for {len(tops)} tops")
        top_nodes = [
            graph.create_node("call_function", operator.getitem, (node, i), name=_identifier(top, taken))
            for i, top in enumerate(tops)
        ]
        return list(result), top_nodes
    if len(tops) != 1:
        raise NetError(f"layer '{name}' ({kind}) has {len(tops)} tops; it makes one")
    return [result], [node]


Blob = tuple[int, int]
"""A parameter blob: (index in the planned layers, Caffe blob index)."""


def _shared_blobs(planned: list[_Planned]) -> dict[Blob, Blob]:
    """Blobs that share another layer's parameter (``param { name: ... }``) -> the owner's blob,
    the first one declared with that name, checked as Caffe's ``Net::AppendParam`` checks them."""
    owners: dict[str, Blob] = {}
    mults: dict[tuple[str, str], float] = {}
    shared: dict[Blob, Blob] = {}
    for i, plan in enumerate(planned):
        for j, spec in enumerate(plan.params):
            param = str(spec.get("name") or "") if "name" in spec else ""
            if not param:
                continue
            for field in ("lr_mult", "decay_mult"):
                if field in spec:
                    value = float(spec.get(field))
                    if mults.setdefault((param, field), value) != value:
                        raise NetError(
                            f"layer '{plan.name}' ({plan.type}): shared param '{param}' has {field} "
                            f"{value:g}, another layer sharing it has {mults[(param, field)]:g}"
                        )
            if param not in owners:
                owners[param] = (i, j)
                continue
            oi, oj = owners[param]
            owner = planned[oi]
            have, want = tuple(plan.converted.blobs[j][1]), tuple(owner.converted.blobs[oj][1])
            where = (
                f"layer '{plan.name}' ({plan.type}) cannot share param '{param}' (blob {j}) owned by layer "
                f"'{owner.name}'"
            )
            if str(spec.get("share_mode")) == "PERMISSIVE":
                if math.prod(have) != math.prod(want):
                    raise NetError(
                        f"{where}: count mismatch, the owner's blob is {list(want)}, this one {list(have)}"
                    )
                if have != want:
                    raise UnsupportedLayerError(
                        f"{where}: share_mode PERMISSIVE between shapes {list(want)} and {list(have)} is not "
                        "supported (only equal shapes)"
                    )
            elif have != want:
                raise NetError(
                    f"{where}: shape mismatch, the owner's blob is {list(want)}, this one {list(have)}"
                )
            shared[(i, j)] = (oi, oj)
    return shared


def _parameter_bytes(planned: list[_Planned], shared: Mapping[Blob, Blob]) -> int:
    """Bytes the parameters take once allocated (float32; a shared blob counts once)."""
    return sum(
        4 * math.prod(shape)
        for i, plan in enumerate(planned)
        for j, (_, shape) in enumerate(plan.converted.blobs)
        if (i, j) not in shared
    )


def memory_limit(device: torch.device | None = None) -> int | None:
    """The memory ``device`` can give in bytes, when known: a GPU's total memory; for the CPU the
    least of the machine's physical memory, the container's (cgroup) limit and what this process's
    address-space limit (``ulimit -v``) leaves."""
    try:
        if device is not None and device.type == "cuda":
            return int(torch.cuda.get_device_properties(device).total_memory)
        return min(int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES")), *_process_limits())
    except (AttributeError, OSError, ValueError, RuntimeError, AssertionError):
        return None


#: Where Linux says a container's memory limit (cgroup v2, then v1); "max" or a huge v1 value: none.
_CGROUP_LIMITS = ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes")


def _process_limits() -> list[int]:
    """The limits below physical memory that bind this process: the cgroup's, and the address space
    ``RLIMIT_AS`` leaves beyond what the process maps now."""
    limits = []
    for path in _CGROUP_LIMITS:
        try:
            with open(path) as handle:
                text = handle.read().strip()
        except OSError:
            continue
        if text.isdigit():
            limits.append(int(text))
            break
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_AS)[0]
        if soft != resource.RLIM_INFINITY:
            with open("/proc/self/statm") as handle:
                mapped = int(handle.read().split()[0]) * int(os.sysconf("SC_PAGE_SIZE"))
            limits.append(max(soft - mapped, 0))
    except (ImportError, OSError, ValueError, IndexError):
        pass
    return limits


def _check_parameter_memory(
    planned: list[_Planned], shared: Mapping[Blob, Blob], device: torch.device
) -> None:
    """Refuse, before allocating anything, parameters that cannot fit in the device's memory, with
    the one blob that is drawn or converted before it is copied into place."""
    if device.type not in ("cpu", "cuda"):
        return
    count, largest = max(
        ((math.prod(s), p.name) for p in planned for _, s in p.converted.blobs), default=(0, "")
    )
    need, limit = _parameter_bytes(planned, shared) + 4 * count, memory_limit(device)
    if limit is not None and need > limit:
        raise NetError(
            f"the net's parameters need {need / 2**30:.1f} GiB, more than the {limit / 2**30:.1f} GiB "
            f"of memory of {device.type} (the largest is layer '{largest}')"
        )


def _check_blob_memory(metas: Mapping[str, Tensor], device: torch.device) -> None:
    """Refuse, before anything runs, a net whose largest blob alone exceeds the device's memory at
    these input sizes (a huge zoom, a huge input): the forward pass could only fail allocating it."""
    if device.type not in ("cpu", "cuda") or not metas:
        return
    limit = memory_limit(device)
    blob, value = max(metas.items(), key=lambda item: item[1].numel())
    need = value.numel() * value.element_size()
    if limit is not None and need > limit:
        raise NetError(
            f"blob '{blob}' {list(value.shape)} needs {need / 2**30:.1f} GiB, more than the "
            f"{limit / 2**30:.1f} GiB of memory of {device.type}: give smaller inputs"
        )


def _load_blobs(
    module: fx.GraphModule,
    planned: list[_Planned],
    shared: Mapping[Blob, Blob],
    weights: Mapping[str, list[np.ndarray]] | None,
    strict: bool,
    seed: int,
    initialise: bool,
    shapes: dict[str, Shape],
    declared: set[str],
) -> tuple[list[str], list[str]]:
    """Stored blobs copied into the parameters (checked as Caffe checks them), missing ones filled,
    shared ones made one tensor; returns the layers filled at random and those filled by
    deterministic fillers where weights were given (Caffe's values)."""
    generator = torch.Generator().manual_seed(seed)
    stored: dict[Blob, list[tuple[str, np.ndarray]]] = {}
    for i, plan in enumerate(planned):
        converted = plan.converted
        if not converted.blobs or plan.stored is None:
            continue
        if len(plan.stored) != len(converted.blobs):
            raise WeightsMismatchError(
                f"layer '{plan.name}' has {len(plan.stored)} blobs in the weights file; the net expects "
                f"{len(converted.blobs)} ({', '.join(a for a, _ in converted.blobs)})"
            )
        for j, ((blob_attr, shape), array) in enumerate(zip(converted.blobs, plan.stored, strict=True)):
            if not _fits(tuple(array.shape), tuple(shape)):
                guessed = [f"{b}={'x'.join(map(str, shapes[b]))}" for b in shapes if b not in declared]
                hint = (
                    f" (the net does not declare the shape of {', '.join(guessed)}, which was guessed: "
                    "give input_shapes / --input-shape)"
                    if guessed
                    else ""
                )
                raise WeightsMismatchError(
                    f"layer '{plan.name}' blob {j} ({blob_attr}): the weights file has shape "
                    f"{list(array.shape)}, the net needs {list(shape)}{hint}"
                )
            stored.setdefault(shared.get((i, j), (i, j)), []).append((plan.name, array))

    randomly: list[str] = []
    filled: list[str] = []
    adopted: set[int] = set()  # ids of decoded arrays kept as parameters (each by one parameter)
    as_caffe: set[int] = set()  # planned layers filled with Caffe's own fillers
    covers_some = any(plan.stored is not None for plan in planned if plan.converted.blobs)
    for i, plan in enumerate(planned):
        converted = plan.converted
        if not converted.blobs or plan.stored is not None:
            continue
        if all(shared.get((i, j), (i, j)) in stored for j in range(len(converted.blobs))):
            continue  # every blob comes from the layers it shares them with
        fillers = _padded_fillers(converted.fillers, len(converted.blobs))
        if weights is not None and strict:
            drawn = [caffe_filler(f).get("type") for f in fillers if not is_deterministic(f)]
            if not drawn and covers_some:  # Caffe's LayerSetUp gives the same values every run
                filled.append(plan.name)
                as_caffe.add(i)
                if any(f is None for f in fillers):
                    warnings.warn(
                        f"layer '{plan.name}' ({plan.type}) has no weights in the caffemodel and its "
                        "prototxt gives no filler: Caffe's default fills it with zeros, and so does fcn-port",
                        stacklevel=4,
                    )
                continue
            if not covers_some:
                raise WeightsMismatchError(
                    f"layer '{plan.name}' ({plan.type}) has no weights in the caffemodel, which covers none "
                    "of the net's layers (the weights of another net?)"
                )
            again = (
                f" (an earlier layer is also named '{plan.name}': Caffe copies a caffemodel's blobs only "
                "into the first layer of a name)"
                if plan.renamed
                else ""
            )
            raise WeightsMismatchError(
                f"layer '{plan.name}' ({plan.type}) has no weights in the caffemodel{again}, and its "
                f"{drawn[0]} filler draws them at random; pass strict=False to fill it at random"
            )
        randomly.append(plan.name)

    for i, plan in enumerate(planned):
        sub = module.get_submodule(plan.attr)
        on_meta = module_device(sub) == "meta"
        count = len(plan.converted.blobs)
        if i in as_caffe:
            fillers = [caffe_filler(f) for f in _padded_fillers(plan.converted.fillers, count)]
        else:
            fillers = _padded_fillers(plan.converted.inference_fillers or plan.converted.fillers, count)
        for j, ((blob_attr, shape), filler) in enumerate(zip(plan.converted.blobs, fillers, strict=True)):
            if (i, j) in shared:
                continue
            values = stored.get((i, j))
            if values:
                first_name, first = values[0]
                for other_name, other in values[1:]:
                    if not np.array_equal(np.reshape(other, shape), np.reshape(first, shape)):
                        raise WeightsMismatchError(
                            f"layers '{first_name}' and '{other_name}' share blob {j} of '{plan.name}', "
                            "but the weights file holds different values for it"
                        )
                if not on_meta and isinstance(weights, FileWeights):
                    _read_blob(sub, blob_attr, first, weights, adopted)
                elif not on_meta:
                    with warnings.catch_warnings():  # read-only memory maps are fine: copied right away
                        warnings.simplefilter("ignore", UserWarning)
                        value = torch.from_numpy(np.asarray(first, dtype=np.float32))
                    _assign(sub, blob_attr, value)
            elif initialise and not on_meta:
                try:
                    drawn = fill(shape, filler, generator)
                except ValueError as exc:
                    raise NetError(f"layer '{plan.name}' ({plan.type}) blob {j}: {exc}") from None
                _assign(sub, blob_attr, drawn)

    for (i, j), (oi, oj) in shared.items():  # one tensor: training updates one parameter
        sharer = module.get_submodule(planned[i].attr)
        owner = module.get_submodule(planned[oi].attr)
        _alias(sharer, planned[i].converted.blobs[j][0], getattr(owner, planned[oi].converted.blobs[oj][0]))
    return randomly, filled


def _padded_fillers(fillers: Sequence[Message | None], count: int) -> list[Message | None]:
    """One filler per blob (``None``, Caffe's default, for those a converter leaves out)."""
    return list(fillers)[:count] + [None] * (count - len(fillers))


def _read_blob(
    module: nn.Module, attr: str, array: np.ndarray, weights: FileWeights, adopted: set[int]
) -> None:
    """``module.<attr>`` set to a blob of weights that :func:`load_caffe` read itself, without a
    copy of its own: the values read from the file in the background into an array that becomes
    the parameter's memory (one copy in all, as a plain read of the file makes; the file map's
    pages are never touched), or the decoded array kept as it is (HDF5, unpacked values), else
    copied. The parameter stays the same object; it never views the file, so a file changed, cut
    short or deleted after loading changes nothing in the net."""
    target = getattr(module, attr)
    own = weights.take(array)
    if own is None and weights.owned(array) and id(array) not in adopted:
        own = array
        adopted.add(id(array))
    plain = target.dtype == torch.float32 and target.device.type == "cpu" and target.is_contiguous()
    if own is not None and plain and own.size == target.numel():
        with torch.no_grad():
            target.data = torch.from_numpy(own).view(target.shape)
        return
    _assign_array(target, array if own is None else own)


def _empty_buffer(shape: tuple[int, ...]) -> np.ndarray:
    """Memory from PyTorch's allocator (64-byte aligned, no huge-page request) for a blob read from
    a file: numpy's own asks for huge pages, which makes reading into it up to twice as slow."""
    return torch.empty(shape, dtype=torch.float32).numpy()


def _assign_array(target: Tensor, array: np.ndarray) -> None:
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        target.copy_(torch.from_numpy(np.asarray(array, dtype=np.float32)).reshape(target.shape))


def _alias(module: nn.Module, attr: str, tensor: Tensor) -> None:
    """Make ``module.<attr>`` the very tensor (parameter or buffer) another layer owns."""
    if attr in module._parameters:
        module._parameters[attr] = tensor
    elif attr in module._buffers:
        module._buffers[attr] = tensor
    else:
        setattr(module, attr, tensor)


def module_device(module: nn.Module) -> str:
    """The device type of a module's first parameter or buffer (``"cpu"`` when it has none)."""
    for tensor in [*module.parameters(recurse=False), *module.buffers(recurse=False)]:
        return tensor.device.type
    return "cpu"


def _fits(stored: Shape, expected: Shape) -> bool:
    """Caffe's blob shape check, including legacy 4-D (num, channels, height, width) blobs, and
    C3D's 5-D (num, channels, length, height, width) ones the same way."""
    if stored == expected:
        return True
    if len(stored) in (4, 5) and len(expected) <= len(stored):
        return stored == (1,) * (len(stored) - len(expected)) + expected
    return False


def _assign(module: nn.Module, attr: str, value: Tensor) -> None:
    target = getattr(module, attr)
    with torch.no_grad():
        target.copy_(value.reshape(target.shape).to(target.dtype))


def _identifier(name: str, taken: set[str]) -> str:
    """A Python identifier for ``name``, unique in ``taken`` and not shadowing nn.Module members."""
    ident = re.sub(r"\W", "_", name) or "blob"
    if ident[0].isdigit():
        ident = "_" + ident
    if keyword.iskeyword(ident) or hasattr(nn.Module, ident) or ident in ("self", "torch", "ops"):
        ident += "_"
    base, i = ident, 1
    while ident in taken:
        i += 1
        ident = f"{base}_{i}"
    taken.add(ident)
    return ident


def _partial(function: Any, kwargs: dict[str, Any]) -> Any:
    return lambda *args: function(*args, **kwargs)


def _definition(net: Message, layers: list[Message]) -> Message:
    out = Message("NetParameter")
    if "name" in net:
        out.set("name", net.get("name"))
    out.set("layer", [layer.copy() for layer in layers])
    return out


def load_caffe(
    prototxt: PathLike | Message,
    caffemodel: PathLike | Mapping[str, list[np.ndarray]] | None = None,
    *,
    device: str | torch.device | None = None,
    optimize: bool | None = None,
    **options: Any,
) -> fx.GraphModule:
    """A Caffe net as a PyTorch module in eval mode: ``net(data=x)`` returns ``{blob: tensor}``.

    ``prototxt`` is a path or a parsed ``NetParameter``; ``caffemodel`` a ``.caffemodel`` /
    ``.caffemodel.h5`` path, a weights dict, or ``None`` for random weights. ``optimize`` (default:
    when ``device`` is the CPU) gives the fast CPU graph of :mod:`converters.graph.speed`;
    ``optimize=False`` keeps the plain one. Other options are those of :func:`build_graph`
    (``phase``, ``with_loss``, ``input_shapes``, ``strict``, ...).
    """
    with collector_paused():
        return _load_caffe(prototxt, caffemodel, device, optimize, options)


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off for a while: a load makes many small objects, and a
    full collection over everything torch has made costs about a quarter of the file's read time
    (benchmarks/load_caffemodel.py). Nothing is lost: it runs again on the next allocations."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _load_caffe(
    prototxt: PathLike | Message,
    caffemodel: PathLike | Mapping[str, list[np.ndarray]] | None,
    device: str | torch.device | None,
    optimize: bool | None,
    options: dict[str, Any],
) -> fx.GraphModule:
    if optimize is None:
        optimize = (checked_device(device) if device is not None else torch.device("cpu")).type == "cpu"
    options["optimize"] = optimize
    net = prototxt if isinstance(prototxt, Message) else read_prototxt(prototxt)
    if caffemodel is None or isinstance(caffemodel, Mapping):
        weights = caffemodel
    else:  # read straight from the file while the graph is built (benchmarks/load_caffemodel.py)
        weights = open_weights(caffemodel)
        if device is None or checked_device(device).type != "meta":
            names = (str(layer.get("name")) for kind in ("layer", "layers") for layer in net.getall(kind))
            weights.start_reading(names, _empty_buffer)  # only the layers this net may use
    try:
        on_cpu = device is None or checked_device(device).type == "cpu"
        if isinstance(weights, FileWeights) and optimize and on_cpu:
            from .speed import warm_up

            warm_up()  # while the weights are read: on a cold page cache, not after
        return build_graph(net, weights, device=device, **options)
    except CaffeFormatError as exc:
        if exc.path is None and not isinstance(prototxt, Message):
            raise exc.with_path(prototxt) from None
        raise
    finally:
        if isinstance(weights, FileWeights):
            weights.close()
