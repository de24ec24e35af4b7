"""NetSpec: build Caffe ``NetParameter`` messages from Python, in the manner of pycaffe's net spec.

Usage::

    from converters.caffe.netspec import NetSpec, layers as L, crop

    n = NetSpec()
    n.data = L.Input(name="input", shape=dict(dim=[1, 3, 500, 500]))
    n.conv1 = L.Convolution(n.data, num_output=64, kernel_size=3, pad=100,
                            param=[dict(lr_mult=1, decay_mult=1), dict(lr_mult=2, decay_mult=0)])
    n.relu1 = L.ReLU(n.conv1, in_place=True)
    n.up = L.Deconvolution(n.relu1, convolution_param=dict(num_output=21, kernel_size=4, stride=2))
    n.score = crop(n.up, n.data)          # offset derived by converters.caffe.geometry
    net = n.to_proto()                    # a Message("NetParameter")

Keyword arguments of a layer go, in this order of preference: ``*_param`` and ``param`` to the
layer itself; otherwise to the layer type's own parameter message (``Convolution`` ->
``convolution_param``, ``Deconvolution`` -> ``convolution_param``, ``Python`` -> ``python_param``
...) when it has such a field; otherwise to a ``LayerParameter`` field (``loss_weight``,
``include`` ...). Any other name raises :class:`NetSpecError`. Lists fill repeated fields, dicts
fill nested messages, strings name enum values. Fields are written in field-number order, as
protobuf writes them.

A layer is named after its first top (the attribute it was assigned to), unless ``name=`` is given;
an in-place layer (``in_place=True``) writes its bottom's blob name as its top.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from .message import Ident, Message
from .schema import ENUMS, MESSAGES, FieldSpec

__all__ = [
    "NetSpec",
    "NetSpecError",
    "Top",
    "build_message",
    "crop",
    "layers",
    "net_difference",
]

_INT_RANGES = {
    "int32": (-(2**31), 2**31 - 1),
    "int64": (-(2**63), 2**63 - 1),
    "uint32": (0, 2**32 - 1),
    "uint64": (0, 2**64 - 1),
}

# Layer types whose parameter message is not named after the type.
_PARAM_FIELD_OF_TYPE = {
    "Deconvolution": "convolution_param",
    "Im2col": "convolution_param",
}

# Keyword arguments that steer the net spec rather than fill a protobuf field.
_CONTROL_KEYWORDS = ("ntop", "in_place", "name")


class NetSpecError(ValueError):
    """A net specification that does not fit Caffe's schema or graph rules."""


# ----------------------------------------------------------------------------------------------
# Values -> messages


def _convert_scalar(field: FieldSpec, value: Any, where: str) -> Any:
    type_name = field.type
    if field.is_message:
        if isinstance(value, Message):
            if value.type != type_name:
                raise NetSpecError(f"{where}: expected a {type_name} message, got {value.type}")
            return value.copy()
        if isinstance(value, dict):
            return build_message(type_name, value, where=where)
        raise NetSpecError(f"{where}: expected a dict for message {type_name}, got {value!r}")
    if field.is_enum:
        enum = ENUMS[type_name]
        if isinstance(value, str) and value in enum.by_name:
            return Ident(value)
        is_int = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
        if is_int and int(value) in enum.by_number:
            return Ident(enum.by_number[int(value)])
        raise NetSpecError(f"{where}: {value!r} is not a value of {type_name} ({', '.join(enum.by_name)})")
    if type_name == "bool":
        if isinstance(value, (bool, np.bool_)):
            return bool(value)
        raise NetSpecError(f"{where}: expected true or false, got {value!r}")
    if type_name in _INT_RANGES:
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
            if isinstance(value, (float, np.floating)) and float(value).is_integer():
                value = int(value)
            else:
                raise NetSpecError(f"{where}: expected an integer, got {value!r}")
        low, high = _INT_RANGES[type_name]
        if not low <= int(value) <= high:
            raise NetSpecError(f"{where}: {value} is out of range for {type_name}")
        return int(value)
    if type_name in ("float", "double"):
        numeric = isinstance(value, (int, float, np.integer, np.floating))
        if isinstance(value, (bool, np.bool_)) or not numeric:
            raise NetSpecError(f"{where}: expected a number, got {value!r}")
        return float(np.float32(value)) if type_name == "float" else float(value)
    if type_name == "string":
        if not isinstance(value, str):
            raise NetSpecError(f"{where}: expected a string, got {value!r}")
        return value
    if type_name == "bytes":
        if isinstance(value, str):
            return value.encode("utf-8")
        if isinstance(value, (bytes, bytearray)):
            return bytes(value)
        raise NetSpecError(f"{where}: expected bytes, got {value!r}")
    raise NetSpecError(f"{where}: unsupported field type {type_name}")  # pragma: no cover


def _set_field(msg: Message, name: str, value: Any, where: str) -> None:
    field = msg.field_spec(name)
    if field is None:
        raise NetSpecError(f"{where}: {msg.type} has no field '{name}'")
    here = f"{where}.{name}"
    if field.repeated:
        values = list(value) if isinstance(value, (list, tuple, np.ndarray)) else [value]
        msg.set(name, [_convert_scalar(field, v, here) for v in values])
    else:
        if isinstance(value, (list, tuple)):
            raise NetSpecError(f"{here}: field is not repeated and cannot take a list")
        msg.set(name, _convert_scalar(field, value, here))


def _in_field_order(msg: Message) -> Message:
    """``msg`` with its fields rearranged into field-number order (the order protobuf writes)."""
    spec = msg.spec
    if spec is None:
        return msg
    ordered = sorted(msg.fields(), key=lambda item: spec.by_name[item[0]].number)
    out = Message(msg.type)
    for name, values in ordered:
        out.extend(name, values)
    return out


def build_message(type_name: str, values: dict[str, Any], *, where: str | None = None) -> Message:
    """A ``Message(type_name)`` filled from ``values`` (nested dicts, lists, enum names), checked
    against the schema and with fields in field-number order. Raises :class:`NetSpecError`.
    """
    if type_name not in MESSAGES:
        raise NetSpecError(f"unknown message type {type_name}")
    msg = Message(type_name)
    for name, value in values.items():
        _set_field(msg, name, value, where or type_name)
    return _in_field_order(msg)


# ----------------------------------------------------------------------------------------------
# Graph of layer functions and their tops


class Top:
    """One output blob of a layer function in a net spec."""

    __slots__ = ("fn", "index")

    def __init__(self, fn: _LayerFunction, index: int) -> None:
        self.fn = fn
        self.index = index

    def __repr__(self) -> str:
        return f"<Top {self.index} of {self.fn.type_name}>"


class _LayerFunction:
    """A layer to be: its type, bottoms, keyword parameters and tops."""

    def __init__(self, type_name: str, bottoms: Iterable[Any], params: dict[str, Any]) -> None:
        self.type_name = type_name
        self.bottoms: list[Top] = []
        for bottom in bottoms:
            if not isinstance(bottom, Top):
                raise NetSpecError(f"{type_name}: bottoms must be tops of other layers, got {bottom!r}")
            self.bottoms.append(bottom)
        params = dict(params)
        self.ntop = int(params.pop("ntop", 1))
        self.in_place = bool(params.pop("in_place", False))
        self.name: str | None = params.pop("name", None)
        self.auto_crop = bool(params.pop("_auto_crop", False))
        if self.in_place and (self.ntop != 1 or len(self.bottoms) != 1):
            raise NetSpecError(f"{type_name}: in_place needs exactly one bottom and one top")
        self.params = params
        self.tops = tuple(Top(self, i) for i in range(self.ntop))
        # Fail early on names the schema does not know.
        self.layer_fields(where=type_name)

    def layer_fields(self, where: str) -> Message:
        """The ``LayerParameter`` fields this function's keywords set (no name, type, tops)."""
        layer = Message("LayerParameter")
        own_param = _PARAM_FIELD_OF_TYPE.get(self.type_name, _param_field_name(self.type_name))
        own_type = MESSAGES["LayerParameter"].by_name[own_param].type if own_param else None
        own_values: dict[str, Any] = {}
        layer_spec = MESSAGES["LayerParameter"].by_name
        for key, value in self.params.items():
            if key in ("name", "type", "bottom", "top"):
                raise NetSpecError(f"{where}: '{key}' is set by the net spec, not by a keyword")
            if key.endswith("_param") or key == "param":
                if key not in layer_spec:
                    raise NetSpecError(f"{where}: LayerParameter has no field '{key}'")
                if key == own_param and isinstance(value, dict):
                    own_values = {**value, **own_values}
                    continue
                _set_field(layer, key, value, where)
            elif own_type is not None and key in MESSAGES[own_type].by_name:
                own_values[key] = value
            elif key in layer_spec:
                _set_field(layer, key, value, where)
            else:
                known = f"{own_param} nor " if own_param else ""
                raise NetSpecError(
                    f"{where}: unknown parameter '{key}' (neither a field of {known}LayerParameter)"
                )
        if own_values:
            layer.set(own_param, build_message(own_type, own_values, where=f"{where}.{own_param}"))
        return layer


def _param_field_name(type_name: str) -> str | None:
    """The ``*_param`` field of ``LayerParameter`` whose message is ``<type_name>Parameter``."""
    for name, field in MESSAGES["LayerParameter"].by_name.items():
        if name.endswith("_param") and field.type.lower() == f"{type_name}Parameter".lower():
            return name
    return None


class _Layers:
    """``layers.Convolution(bottom, ..., **params)`` -> a :class:`Top` (or a tuple of tops)."""

    def __getattr__(self, type_name: str) -> Any:
        if type_name.startswith("_"):
            raise AttributeError(type_name)

        def make(*bottoms: Top, **params: Any) -> Top | tuple[Top, ...]:
            fn = _LayerFunction(type_name, bottoms, params)
            if fn.ntop == 0:
                return ()
            return fn.tops[0] if fn.ntop == 1 else fn.tops

        make.__name__ = type_name
        return make


layers = _Layers()


def crop(bottom: Top, like: Top, **params: Any) -> Top:
    """A ``Crop`` layer cropping ``bottom`` to the spatial size of ``like``, with ``axis`` and
    ``offset`` derived from the coordinate mapping of the two blobs when the net is built
    (:func:`converters.caffe.geometry.crop_offsets`), as the official net spec's ``coord_map.crop`` does.
    """
    if "crop_param" in params or "offset" in params or "axis" in params:
        raise NetSpecError("crop(): axis and offset come from the geometry; use layers.Crop to set them")
    fn = _LayerFunction("Crop", (bottom, like), {**params, "_auto_crop": True})
    return fn.tops[0]


class NetSpec:
    """A net under construction: assign tops to attributes (``n.conv1 = layers.Convolution(...)``)
    or items (``n["conv1"] = ...``); :meth:`to_proto` turns them into a ``NetParameter``.
    """

    def __init__(self, name: str | None = None) -> None:
        super().__setattr__("_tops", {})
        super().__setattr__("_name", name)

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value

    def __getattr__(self, name: str) -> Top:
        try:
            return self._tops[name]
        except KeyError:
            raise AttributeError(f"net spec has no top '{name}'") from None

    def __setitem__(self, name: str, value: Any) -> None:
        if not isinstance(value, Top):
            raise NetSpecError(f"'{name}': only tops of layers can be assigned to a net spec, got {value!r}")
        if name in self._tops:
            raise NetSpecError(f"top name '{name}' is assigned twice")
        self._tops[name] = value

    def __getitem__(self, name: str) -> Top:
        return self._tops[name]

    def __contains__(self, name: object) -> bool:
        return name in self._tops

    @property
    def tops(self) -> dict[str, Top]:
        """The assigned tops, by name, in assignment order."""
        return dict(self._tops)

    def to_proto(self) -> Message:
        """The ``NetParameter``: layers in dependency order (each layer after its bottoms, otherwise in
        assignment order), crops made by :func:`crop` with their offsets filled in.
        """
        names: dict[Top, str] = {top: name for name, top in self._tops.items()}
        autonames: dict[str, int] = {}
        ordered: list[_LayerFunction] = []
        seen: set[int] = set()

        def top_name(top: Top) -> str:
            if top not in names:
                if top.fn.in_place:
                    names[top] = top_name(top.fn.bottoms[0])
                else:
                    autonames[top.fn.type_name] = autonames.get(top.fn.type_name, 0) + 1
                    names[top] = f"{top.fn.type_name}{autonames[top.fn.type_name]}"
            return names[top]

        def visit(fn: _LayerFunction) -> None:
            if id(fn) in seen:
                return
            seen.add(id(fn))
            for bottom in fn.bottoms:
                visit(bottom.fn)
            ordered.append(fn)

        for top in self._tops.values():
            visit(top.fn)

        # Tops not assigned to the net spec but assigned by the caller later get names first-come.
        layer_messages: list[Message] = []
        auto_crops: list[str] = []
        layer_names: set[str] = set()
        for fn in ordered:
            first_top_name = top_name(fn.tops[0]) if fn.tops else None
            if fn.in_place:
                # The layer is named after the attribute its top was assigned to, its top is the bottom.
                assigned = [n for n, t in self._tops.items() if t is fn.tops[0]]
                layer_name = fn.name or (assigned[0] if assigned else first_top_name)
                top_names = [top_name(fn.bottoms[0])]
                names[fn.tops[0]] = top_names[0]
            else:
                layer_name = fn.name or first_top_name or f"{fn.type_name}{len(layer_messages) + 1}"
                top_names = [top_name(t) for t in fn.tops]
            if layer_name in layer_names:
                raise NetSpecError(f"two layers are named '{layer_name}'")
            layer_names.add(layer_name)
            fields = fn.layer_fields(where=layer_name)
            layer = Message("LayerParameter", name=layer_name, type=fn.type_name)
            layer.set("bottom", [top_name(b) for b in fn.bottoms])
            layer.set("top", top_names)
            for field_name, values in fields.fields():
                layer.extend(field_name, values)
            layer_messages.append(_in_field_order(layer))
            if fn.auto_crop:
                auto_crops.append(layer_name)

        net = Message("NetParameter")
        if self._name:
            net.set("name", self._name)
        net.set("layer", layer_messages)
        if auto_crops:
            from .geometry import fill_crop_offsets

            fill_crop_offsets(net, auto_crops)
        return net


# ----------------------------------------------------------------------------------------------
# Comparing nets


def _describe(value: Any) -> str:
    if isinstance(value, Message):
        from .text import format_message

        return "{ " + " ".join(format_message(value).split()) + " }"
    return repr(value)


def _message_difference(expected: Message, actual: Message, path: str) -> str | None:
    if expected.type != actual.type:
        return f"{path}: message type {actual.type} instead of {expected.type}"
    mine, theirs = dict(expected.fields()), dict(actual.fields())
    for name in list(mine) + [n for n in theirs if n not in mine]:
        here = f"{path}.{name}" if path else name
        if name not in theirs:
            return f"{here}: missing (expected {_describe_all(mine[name])})"
        if name not in mine:
            return f"{here}: unexpected {_describe_all(theirs[name])}"
        a, b = mine[name], theirs[name]
        if len(a) != len(b):
            return f"{here}: {len(b)} values {_describe_all(b)} instead of {len(a)} {_describe_all(a)}"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            item = f"{here}[{i}]" if len(a) > 1 else here
            if isinstance(x, Message) and isinstance(y, Message):
                found = _message_difference(x, y, item)
                if found:
                    return found
            elif not _scalar_equal(x, y):
                return f"{item}: {_describe(y)} instead of {_describe(x)}"
    return None


def _scalar_equal(x: Any, y: Any) -> bool:
    if isinstance(x, Message) or isinstance(y, Message):
        return False
    if isinstance(x, bool) or isinstance(y, bool):
        return type(x) is type(y) and x == y
    if isinstance(x, float) and isinstance(y, float) and x != x and y != y:
        return True
    return bool(x == y)


def _describe_all(values: Any) -> str:
    return "[" + ", ".join(_describe(v) for v in values) + "]"


def net_difference(expected: Message, actual: Message) -> str | None:
    """The first difference between two ``NetParameter`` messages, or ``None`` when they are equal.

    Layers are compared one by one, in order and field by field; the answer names the layer and
    the field path, e.g. ``layer 'score' (Crop): crop_param.offset: 18 instead of 19``.
    """
    for name in ("name", "input", "input_shape", "input_dim", "force_backward", "state"):
        a, b = expected.getall(name), actual.getall(name)
        if len(a) != len(b) or not all(
            (_message_difference(x, y, "") is None)
            if isinstance(x, Message) and isinstance(y, Message)
            else _scalar_equal(x, y)
            for x, y in zip(a, b, strict=True)
        ):
            return f"net {name}: {_describe_all(b)} instead of {_describe_all(a)}"
    mine, theirs = expected.getall("layer"), actual.getall("layer")
    for i, (a, b) in enumerate(zip(mine, theirs, strict=False)):
        label = f"layer {i} '{a.get('name')}' ({a.get('type')})"
        found = _message_difference(a, b, "")
        if found:
            return f"{label}: {found}"
    if len(mine) != len(theirs):
        extra = theirs[len(mine) :] if len(theirs) > len(mine) else mine[len(theirs) :]
        which = "unexpected" if len(theirs) > len(mine) else "missing"
        return f"{len(theirs)} layers instead of {len(mine)}; {which}: " + ", ".join(
            f"'{layer.get('name')}'" for layer in extra
        )
    return None
