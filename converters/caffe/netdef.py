"""Net definitions in today's form: V1 ``layers`` and legacy ``input`` fields upgraded as Caffe does."""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import CaffeFormatError
from .message import Ident, Message
from .schema import MESSAGES, V1_TYPE_NAMES

_V2_FIELDS = MESSAGES["LayerParameter"].by_name


def layer_type(layer: Message) -> str:
    """The modern type name of a V2 or V1 layer (``"Convolution"``; V1 enums mapped)."""
    value = layer.get("type")
    if layer.type == "V1LayerParameter":
        return V1_TYPE_NAMES.get(str(value), str(value))
    return str(value)


def upgrade_v1_layer(v1: Message) -> Message:
    """A ``LayerParameter`` equivalent to a V1 layer (BVLC's V1 -> V2 upgrade)."""
    layer = Message("LayerParameter")
    params: list[Message] = []

    def param(index: int) -> Message:
        while len(params) <= index:
            params.append(Message("ParamSpec"))
        return params[index]

    for name, values in v1.fields():
        if name == "type":
            layer.set("type", layer_type(v1))
        elif name == "param":
            for i, value in enumerate(values):
                param(i).set("name", value)
        elif name == "blob_share_mode":
            for i, value in enumerate(values):
                param(i).set("share_mode", Ident(str(value)))
        elif name == "blobs_lr":
            for i, value in enumerate(values):
                param(i).set("lr_mult", float(value))
        elif name == "weight_decay":
            for i, value in enumerate(values):
                param(i).set("decay_mult", float(value))
        elif name == "layer":
            raise CaffeFormatError(
                f"layer '{v1.get('name')}' is in the V0 format (pre-2014 Caffe), which is not supported"
            )
        elif name in _V2_FIELDS:
            layer.set(name, values) if _V2_FIELDS[name].repeated else layer.set(name, values[-1])
        elif v1.field_spec(name) is None:  # unknown to caffe.proto: kept, so building refuses it
            layer.extend(name, values)
    if params:
        layer.set("param", params)
    layer.unknown = list(v1.unknown)
    layer.positions = dict(v1.positions)
    return layer


def upgrade_net(net: Message) -> Message:
    """A copy of ``net`` with only V2 ``layer`` entries: legacy inputs become one ``Input`` layer
    named ``input`` placed first, and V1 ``layers`` are upgraded.
    """
    if "layer" in net and "layers" in net:
        raise CaffeFormatError("net mixes V1 'layers' and V2 'layer' entries; Caffe refuses this")
    out = net.copy()
    layers = [upgrade_v1_layer(v1) for v1 in net.getall("layers")] + [
        layer.copy() for layer in net.getall("layer")
    ]
    inputs = net.getall("input")
    if inputs:
        shapes = [s.copy() for s in net.getall("input_shape")]
        dims = net.getall("input_dim")
        if not shapes and dims:
            if len(dims) != 4 * len(inputs):
                raise CaffeFormatError(
                    f"{len(inputs)} legacy inputs need {4 * len(inputs)} input_dim values, found {len(dims)}"
                )
            shapes = [Message("BlobShape", dim=list(dims[4 * i : 4 * i + 4])) for i in range(len(inputs))]
        if len(shapes) not in (0, len(inputs)) and len(shapes) != 1:
            raise CaffeFormatError(f"{len(inputs)} legacy inputs but {len(shapes)} input_shape entries")
        input_layer = Message("LayerParameter", name="input", type="Input", top=list(inputs))
        if shapes:
            input_layer.set("input_param", Message("InputParameter", shape=shapes))
        layers.insert(0, input_layer)
    for name in ("input", "input_shape", "input_dim", "layers", "layer"):
        out.remove(name)
    out.set("layer", layers)
    return out


def merged_state(phase: str, states: Sequence[Message]) -> tuple[str, int, list[str]]:
    """A ``NetState`` as Caffe's solver builds it: ``phase``, level 0, no stages, then each of
    ``states`` merged in order (``MergeFrom``: a set phase or level replaces, stages append)."""
    level, stages = 0, []
    for state in states:
        if "phase" in state:
            phase = str(state.get("phase"))
        if "level" in state:
            level = int(state.get("level"))
        stages += [str(s) for s in state.getall("stage")]
    return phase, level, stages


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
    """The V2 layers of ``net`` that Caffe instantiates for this phase, level and stages, to which
    the stages of the net's own ``state`` are added (Caffe's ``Net(file, phase, level, stages)``
    keeps them, and replaces its phase and level)."""
    state = net.get("state") if "state" in net else None
    if isinstance(state, Message):
        stages = [*(str(s) for s in state.getall("stage")), *stages]
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
