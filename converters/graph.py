"""Caffe net definitions (plus weights) as ``torch.fx`` graphs that compute what Caffe computes.

``load_caffe("deploy.prototxt", "weights.caffemodel")`` gives an ``nn.Module`` in eval mode whose
keyword inputs are the net's input blobs and whose result is a dict of its output blobs::

    net = load_caffe("voc-fcn8s/deploy.prototxt", "fcn8s-heavy-pascal.caffemodel")
    scores = net(data=x)["score"]
    print(net.code)            # the generated forward, one line per Caffe layer
"""

from __future__ import annotations

import dataclasses
import keyword
import operator
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, fx, nn

from .errors import CaffeFormatError
from .formats import read_prototxt, read_weights
from .layers import (
    DATA_LAYER_TYPES,
    Converted,
    LayerContext,
    converter_for,
    fill,
    is_loss_or_metric,
)
from .message import Message
from .netdef import layer_type, upgrade_net

Shape = tuple[int, ...]
PathLike = str | os.PathLike[str]
NOMINAL_SPATIAL = 500  # shape inference only, for data layers that declare no size (the FCN deploy size)


class WeightsMismatchError(ValueError):
    """Stored weights that do not fit the net (names the layer, the blob and both shapes)."""


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
    """(layer name, type) of every layer in the graph, in order."""
    transform_params: dict[str, Message]
    """Input blob -> its data layer's ``transform_param`` (Caffe's preprocessing), if any."""
    unused_weights: list[str]
    """Layers in the weights file that the graph does not have (e.g. a training net's extras)."""
    randomly_initialised: list[str]
    """Layers whose parameters were not in the weights and were filled at random."""
    definition: Message
    """The V2 net definition the graph was built from (after filtering by phase)."""
    parameter_blobs: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    """Layer -> its Caffe blobs as state-dict keys, in Caffe's blob order."""
    bottom_shapes: dict[str, list[Shape]] = dataclasses.field(default_factory=dict)
    """Layer -> the shapes of its bottoms when it runs (for the input shapes above)."""


def state_meets_rule(rule: Message, phase: str, level: int, stages: Sequence[str]) -> bool:
    """Caffe's NetStateRule test: phase, level bounds, required and forbidden stages."""
    if "phase" in rule and str(rule.get("phase")) != phase:
        return False
    if "min_level" in rule and level < int(rule.get("min_level")):
        return False
    if "max_level" in rule and level > int(rule.get("max_level")):
        return False
    if any(stage not in stages for stage in rule.get("stage")):
        return False
    return not any(stage in stages for stage in rule.get("not_stage"))


def filter_layers(
    net: Message, phase: str = "TEST", level: int = 0, stages: Sequence[str] = ()
) -> list[Message]:
    """The V2 layers of ``net`` that Caffe instantiates for this phase, level and stages."""
    kept = []
    for layer in upgrade_net(net).getall("layer"):
        includes, excludes = layer.getall("include"), layer.getall("exclude")
        if includes and excludes:
            raise CaffeFormatError(f"layer '{layer.get('name')}' has both include and exclude rules")
        included = not includes
        if excludes and any(state_meets_rule(r, phase, level, stages) for r in excludes):
            included = False
        if includes and any(state_meets_rule(r, phase, level, stages) for r in includes):
            included = True
        if included:
            kept.append(layer)
    return kept


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


def _fits(stored: Shape, expected: Shape) -> bool:
    """Caffe's blob shape check, including legacy 4-D (num, channels, height, width) blobs."""
    if stored == expected:
        return True
    if len(stored) == 4 and len(expected) <= 4:
        return stored == (1,) * (4 - len(expected)) + expected
    return False


def _input_shapes(
    layers: list[Message],
    used: set[str],
    given: Mapping[str, Sequence[int]],
    weights: Mapping[str, list[np.ndarray]] | None,
) -> tuple[dict[str, Shape], set[str], dict[str, Message]]:
    """Shapes for every used data-layer top: declared, given, or guessed (channels from the
    weights of the first layer that reads it, spatial size from the crop size or nominal)."""
    shapes: dict[str, Shape] = {}
    declared: set[str] = set()
    transforms: dict[str, Message] = {}
    for layer in layers:
        kind = layer_type(layer)
        if kind not in DATA_LAYER_TYPES or layer.getall("bottom"):
            continue
        tops = list(layer.getall("top"))
        declared_shapes = [tuple(int(d) for d in s.get("dim")) for s in layer.get("input_param").get("shape")]
        if kind == "Input" and len(declared_shapes) not in (0, 1, len(tops)):
            raise CaffeFormatError(
                f"Input layer '{layer.get('name')}' has {len(tops)} tops but {len(declared_shapes)} shapes"
            )
        for i, top in enumerate(tops):
            if top not in used:
                continue
            if "transform_param" in layer:
                transforms[top] = layer.get("transform_param")
            if top in given:
                shapes[top] = tuple(int(d) for d in given[top])
                declared.add(top)
            elif kind == "Input" and declared_shapes:
                shapes[top] = declared_shapes[i if len(declared_shapes) > 1 else 0]
                declared.add(top)
            else:
                crop = int(layer.get("transform_param").get("crop_size")) if "transform_param" in layer else 0
                shapes[top] = (1, 0, crop, crop)
    # Guessed inputs: channels from the weights (else 3), batch and spatial size of a declared input
    # (else the crop size, else nominal).
    known = {b: shapes[b][1] for b in declared if len(shapes[b]) > 1}
    like = next((shapes[b] for b in shapes if b in declared and len(shapes[b]) == 4), None)
    for blob, shape in shapes.items():
        if blob not in declared:
            channels = _guess_channels(blob, layers, weights, known) or 3
            size = (shape[2], shape[3]) if shape[2] else (like[2:] if like else (NOMINAL_SPATIAL,) * 2)
            shapes[blob] = (like[0] if like else 1, channels, *size)
    return shapes, declared, transforms


def _guess_channels(
    blob: str,
    layers: list[Message],
    weights: Mapping[str, list[np.ndarray]] | None,
    known: Mapping[str, int],
) -> int | None:
    """The channels of an undeclared input, from the weights of the first convolution reading it
    (through channel-keeping layers and channel Concats), or ``None`` without such evidence.

    At a Concat, inputs of unknown size take 3 channels (an image) except the last, which takes the
    rest: BGR + depth for the NYUD early-fusion net."""
    for layer in layers:
        if blob not in layer.getall("bottom"):
            continue
        kind = layer_type(layer)
        stored = (weights or {}).get(layer.get("name"))
        tops = layer.getall("top")
        if kind == "Convolution" and stored:
            return int(stored[0].shape[-3]) * int(layer.get("convolution_param").get("group"))
        if kind == "Deconvolution" and stored:
            return int(stored[0].shape[0])
        if kind == "Concat" and tops and _concat_axis(layer) == 1:
            total = _guess_channels(tops[0], layers, weights, known)
            if total is None:
                return None
            bottoms = list(layer.getall("bottom"))
            unknown = [b for b in bottoms if b not in known]
            rest = total - sum(known[b] for b in bottoms if b in known) - 3 * (len(unknown) - 1)
            return rest if blob == unknown[-1] and rest >= 1 else 3
        if kind not in _CHANNEL_KEEPING or not tops:
            return None
        blob = tops[0]
    return None


def _concat_axis(layer: Message) -> int:
    p = layer.get("concat_param")
    return int(p.get("axis")) if "axis" in p or "concat_dim" not in p else int(p.get("concat_dim"))


_CHANNEL_KEEPING = frozenset(
    {"Split", "Dropout", "ReLU", "PReLU", "Scale", "Bias", "Power", "BatchNorm", "TanH", "Pooling", "LRN"}
)


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
) -> fx.GraphModule:
    """The net as a ``torch.fx.GraphModule`` in eval mode, its parameters from ``weights``.

    ``weights`` maps layer names to blobs as :func:`converters.read_weights` returns them; layers
    it lacks are filled from the prototxt's fillers (or fan-in scaled normals) when ``weights`` is
    ``None`` or ``strict`` is false, else raise :class:`WeightsMismatchError`. Loss and accuracy
    layers are dropped unless ``with_loss``; data layers' used tops become keyword inputs.
    ``initialise=False`` leaves parameters that have no stored weights uninitialised (for a state
    dict loaded next). ``outputs`` names the blobs to return (their final values, as Caffe's
    ``net.blobs`` holds them) instead of the net's outputs.
    """
    if phase not in ("TEST", "TRAIN"):
        raise ValueError(f"phase must be 'TEST' or 'TRAIN', not {phase!r}")
    layers = filter_layers(net, phase, level, stages)
    layers = [layer for layer in layers if with_loss or not is_loss_or_metric(layer_type(layer))]
    names = [str(layer.get("name")) for layer in layers]
    duplicates = {n for n in names if names.count(n) > 1}
    if duplicates:
        raise CaffeFormatError(f"layer names are not unique: {', '.join(sorted(duplicates))}")

    consumed: set[str] = set()
    for layer in layers:
        if layer_type(layer) not in DATA_LAYER_TYPES or layer.getall("bottom"):
            consumed.update(layer.getall("bottom"))
    shapes, declared, transforms = _input_shapes(layers, consumed, input_shapes or {}, weights)
    unknown = set(input_shapes or {}) - set(shapes)
    if unknown:
        raise ValueError(f"input_shapes names {', '.join(sorted(unknown))}, which the net does not read")

    graph = fx.Graph()
    root = nn.Module()
    taken: set[str] = set()
    nodes: dict[str, fx.Node] = {}
    metas: dict[str, Tensor] = {}
    available: list[str] = []
    bottom_shapes: dict[str, list[Shape]] = {}
    plans: list[tuple[str, str, str, Converted, list[np.ndarray] | None]] = []
    for top, shape in shapes.items():
        node = graph.placeholder(_identifier(top, taken))
        nodes[top] = node
        metas[top] = torch.empty(shape, device="meta")

    for layer in layers:
        name, kind = str(layer.get("name")), layer_type(layer)
        bottoms, tops = list(layer.getall("bottom")), list(layer.getall("top"))
        if kind in DATA_LAYER_TYPES and not bottoms:
            available += [t for t in tops if t in nodes]
            continue
        missing = [b for b in bottoms if b not in nodes]
        if missing:
            raise CaffeFormatError(
                f"layer '{name}' ({kind}) reads blob '{missing[0]}', which no earlier layer produces"
            )
        stored = (weights or {}).get(name)
        bottom_shapes[name] = [tuple(metas[b].shape) for b in bottoms]
        ctx = LayerContext(
            layer=layer,
            name=name,
            type=kind,
            bottoms=bottoms,
            tops=tops,
            bottom_shapes=[tuple(metas[b].shape) for b in bottoms],
            blob_shapes=[tuple(b.shape) for b in stored] if stored else None,
            phase=phase,
        )
        try:
            converted = converter_for(kind, name)(ctx)
        except (ValueError, TypeError) as exc:
            if str(exc).startswith(f"layer '{name}'"):
                raise
            raise ValueError(f"layer '{name}' ({kind}): {exc}") from None
        for b in bottoms:
            if b in available:
                available.remove(b)
        if converted.role == "silence":
            continue
        args = tuple(nodes[b] for b in bottoms)
        meta_args = tuple(metas[b] for b in bottoms)
        node_name = _identifier(name if set(tops) & set(bottoms) or len(tops) != 1 else tops[0], taken)
        if converted.module is not None:
            attr = node_name if node_name.isidentifier() else _identifier(name, taken)
            root.add_module(attr, converted.module)
            node = graph.create_node("call_module", attr, args, name=node_name)
            call = converted.module
            plans.append((name, kind, attr, converted, stored))
        else:
            node = graph.create_node(
                "call_function", converted.function, args, dict(converted.kwargs), name=node_name
            )
            call = _partial(converted.function, converted.kwargs)
        try:
            with torch.no_grad():
                if converted.keeps_shape:
                    result = meta_args[0]
                elif converted.output_shape is not None:
                    shape = converted.output_shape([tuple(t.shape) for t in meta_args])
                    result = (
                        tuple(torch.empty(s, device="meta") for s in shape)
                        if isinstance(shape, list)
                        else torch.empty(shape, device="meta")
                    )
                else:
                    result = call(*meta_args)
        except Exception as exc:
            shapes_text = ", ".join(f"{b} {list(metas[b].shape)}" for b in bottoms)
            raise ValueError(f"layer '{name}' ({kind}) cannot run on {shapes_text}: {exc}") from None
        if converted.same_for_all_tops:
            results, top_nodes = [result] * len(tops), [node] * len(tops)
        elif converted.outputs > 1 or len(tops) > 1:
            if not isinstance(result, tuple) or len(result) != len(tops):
                raise ValueError(
                    f"layer '{name}' ({kind}) gives {converted.outputs} results for {len(tops)} tops"
                )
            results = list(result)
            top_nodes = []
            for i, top in enumerate(tops):
                item = graph.create_node(
                    "call_function", operator.getitem, (node, i), name=_identifier(top, taken)
                )
                top_nodes.append(item)
        else:
            if len(tops) != 1:
                raise ValueError(f"layer '{name}' ({kind}) has {len(tops)} tops; it makes one")
            results, top_nodes = [result], [node]
        for top, value, top_node in zip(tops, results, top_nodes, strict=True):
            nodes[top] = top_node
            metas[top] = value
            if top in available:
                available.remove(top)
            available.append(top)

    if outputs is not None:
        unknown_blobs = [blob for blob in outputs if blob not in nodes]
        if unknown_blobs:
            raise ValueError(f"the net has no blob {', '.join(map(repr, unknown_blobs))}")
        outputs = list(outputs)
    else:
        outputs = [blob for blob in available if blob not in shapes]
    if not outputs:
        raise ValueError("the net computes nothing: no layer produces an output blob")
    graph.output({blob: nodes[blob] for blob in outputs})
    module = fx.GraphModule(root, graph, class_name=_identifier(str(net.get("name") or "CaffeNet"), set()))

    target = torch.device(device) if device is not None else torch.device("cpu")
    module.to_empty(device=target)
    generator = torch.Generator().manual_seed(seed)
    randomly: list[str] = []
    parameter_blobs: dict[str, list[str]] = {}
    for name, kind, attr, converted, stored in plans:
        if not converted.blobs:
            continue
        sub = module.get_submodule(attr)
        parameter_blobs[name] = [f"{attr}.{blob_attr}" for blob_attr, _ in converted.blobs]
        if stored is None:
            if weights is not None and strict:
                raise WeightsMismatchError(
                    f"layer '{name}' ({kind}) has no weights in the caffemodel; "
                    "pass strict=False to fill it at random"
                )
            randomly.append(name)
            if not initialise:
                continue
            for (blob_attr, shape), filler in zip(
                converted.blobs, _pad(converted.fillers, len(converted.blobs)), strict=True
            ):
                _assign(sub, blob_attr, fill(shape, filler, generator))
            continue
        if len(stored) != len(converted.blobs):
            raise WeightsMismatchError(
                f"layer '{name}' has {len(stored)} blobs in the weights file; the net expects "
                f"{len(converted.blobs)} ({', '.join(a for a, _ in converted.blobs)})"
            )
        for i, ((blob_attr, shape), array) in enumerate(zip(converted.blobs, stored, strict=True)):
            if not _fits(tuple(array.shape), tuple(shape)):
                guessed = [f"{b}={'x'.join(map(str, shapes[b]))}" for b in shapes if b not in declared]
                hint = (
                    f" (the net does not declare the shape of {', '.join(guessed)}, which was guessed: "
                    "give input_shapes / --input-shape)"
                    if guessed
                    else ""
                )
                raise WeightsMismatchError(
                    f"layer '{name}' blob {i} ({blob_attr}): the weights file has shape "
                    f"{list(array.shape)}, the net needs {list(shape)}{hint}"
                )
            _assign(
                sub, blob_attr, torch.from_numpy(np.array(array, dtype=np.float32, copy=True)).reshape(shape)
            )
    unused = sorted(set(weights or {}) - set(names))
    module.eval()
    module.caffe = CaffeNetInfo(
        name=str(net.get("name") or ""),
        inputs=dict(shapes),
        declared_inputs=frozenset(declared),
        outputs=outputs,
        blob_shapes={b: tuple(t.shape) for b, t in metas.items()},
        layers=[(str(layer.get("name")), layer_type(layer)) for layer in layers],
        transform_params=transforms,
        unused_weights=unused,
        randomly_initialised=randomly,
        definition=_definition(net, layers),
        parameter_blobs=parameter_blobs,
        bottom_shapes=bottom_shapes,
    )
    return module


def _pad(fillers: list[Message | None], count: int) -> list[Message | None]:
    return list(fillers) + [None] * (count - len(fillers))


def _assign(module: nn.Module, attr: str, value: Tensor) -> None:
    target = getattr(module, attr)
    with torch.no_grad():
        target.copy_(value.reshape(target.shape).to(target.dtype))


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
    **options: Any,
) -> fx.GraphModule:
    """A Caffe net as a PyTorch module in eval mode: ``net(data=x)`` returns ``{blob: tensor}``.

    ``prototxt`` is a path or a parsed ``NetParameter``; ``caffemodel`` a ``.caffemodel`` /
    ``.caffemodel.h5`` path, a weights dict, or ``None`` for random weights. Other options are
    those of :func:`build_graph` (``phase``, ``with_loss``, ``input_shapes``, ``strict``, ...).
    """
    net = prototxt if isinstance(prototxt, Message) else read_prototxt(prototxt)
    if caffemodel is None or isinstance(caffemodel, Mapping):
        weights = caffemodel
    else:
        weights = read_weights(caffemodel)
    try:
        return build_graph(net, weights, device=device, **options)
    except CaffeFormatError as exc:
        if exc.path is None and not isinstance(prototxt, Message):
            raise exc.with_path(prototxt) from None
        raise
