"""Blob shapes and parameter counts of a net definition: the graph builder run on the meta device
(nothing allocated), so every layer type the builder handles is sized exactly as it runs."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

from torch import fx

from ..caffe.message import Message
from ..errors import GeometryError, NetError
from . import inputs
from .builder import build_graph, select_layers
from .inputs import is_source

Shape = tuple[int, ...]

__all__ = ["blob_shapes", "layer_parameter_counts", "parameter_count"]


def _check_declared(inputs: Iterable[str], declared: Iterable[str]) -> None:
    guessed = sorted(set(inputs) - set(declared))
    if guessed:
        names = ", ".join(guessed)
        raise GeometryError(f"data layer tops {names} have no declared shape: give the shapes of {names}")


def _meta_graph(
    net: Message, input_shapes: Mapping[str, Sequence[int]] | None, phase: str, strict_inputs: bool
) -> fx.GraphModule:
    given = {k: tuple(v) for k, v in (input_shapes or {}).items()}
    module = build_graph(net, None, phase=phase, with_loss=True, input_shapes=given, device="meta")
    if strict_inputs:
        _check_declared(module.caffe.inputs, module.caffe.declared_inputs)
    return module


def blob_shapes(
    net: Message, input_shapes: Mapping[str, Sequence[int]] | None = None, *, phase: str = "TEST"
) -> dict[str, Shape]:
    """The shape of every blob (its last version) as Caffe would reshape the net. ``Input`` layers
    give their own shapes; other data layers' tops need ``input_shapes``. Raises
    :class:`GeometryError` naming the layer when a shape does not work out."""
    layers = select_layers(net, phase=phase, with_loss=True)
    if all(is_source(layer) for layer in layers):  # nothing computed: the inputs are all there is
        tops = {top for layer in layers for top in layer.getall("top")}
        shapes, declared, _ = inputs.input_shapes(layers, tops, input_shapes or {}, None)
        _check_declared(shapes, declared)
        return shapes
    try:
        return dict(_meta_graph(net, input_shapes, phase, True).caffe.blob_shapes)
    except NetError as exc:
        raise GeometryError(str(exc)) from None


def layer_parameter_counts(
    net: Message, input_shapes: Mapping[str, Sequence[int]] | None = None, *, phase: str = "TEST"
) -> dict[str, tuple[str, int]]:
    """Layer name -> (type, learnable values) for every layer of ``net`` that has parameters.
    Inputs without a declared shape take their nominal size (parameter counts rarely depend on
    it; an InnerProduct after them does)."""
    try:
        module = _meta_graph(net, input_shapes, phase, False)
    except NetError as exc:
        raise GeometryError(str(exc)) from None
    kinds = dict(module.caffe.layers)
    return {
        name: (kinds[name], sum(math.prod(s) for s in shapes))
        for name, shapes in module.caffe.parameter_shapes.items()
    }


def parameter_count(
    net: Message, input_shapes: Mapping[str, Sequence[int]] | None = None, *, phase: str = "TEST"
) -> int:
    """The number of learnable values (all parameter blobs) of ``net``."""
    return sum(n for _, n in layer_parameter_counts(net, input_shapes, phase=phase).values())
