"""A schema-aware protobuf message value, shared by the binary and text readers and writers."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from .schema import MESSAGES, FieldSpec, MessageSpec

_MISSING = object()


class Ident(str):
    """An enum value name: written without quotes in text format."""

    __slots__ = ()

    def __repr__(self) -> str:
        return str(self)


class Message:
    """A protobuf message: an ordered mapping of field name -> list of values.

    ``type`` names the schema message (``"NetParameter"``, ``"LayerParameter"`` ...) or is ``None``
    for a message the schema does not know (a Caffe fork's extension). Repeated float fields of
    blobs hold one ``numpy.ndarray`` instead of a list. ``unknown`` keeps binary fields whose
    number or wire type the schema does not know, as ``(number, wire_type, raw)``; fields the
    schema does not know that were read from text keep their names as ordinary fields (see
    :func:`unknown_named_fields`). ``positions`` maps field names to the ``(line, column)`` where
    the text reader first met them (empty for other messages); it takes no part in equality. The message
    type is positional-only, so ``Message("LayerParameter", type="Input")`` sets the field ``type``.
    """

    __slots__ = ("type", "_fields", "unknown", "positions")

    def __init__(self, type: str | None = None, /, **fields: Any) -> None:
        self.type = type
        self._fields: dict[str, Any] = {}
        self.unknown: list[tuple[int, int, Any]] = []
        self.positions: dict[str, tuple[int, int]] = {}
        for name, value in fields.items():
            spec = self.field_spec(name)
            if spec is not None and spec.repeated:
                self._fields[name] = value if isinstance(value, np.ndarray) else list(value)
            else:
                self._fields[name] = [value]

    @property
    def spec(self) -> MessageSpec | None:
        """The schema of this message, if known."""
        return MESSAGES.get(self.type) if self.type else None

    def field_spec(self, name: str) -> FieldSpec | None:
        """The schema of field ``name``, if known."""
        spec = self.spec
        return spec.by_name.get(name) if spec else None

    def __contains__(self, name: object) -> bool:
        return name in self._fields and len(self._fields[name]) > 0

    def get(self, name: str, default: Any = _MISSING) -> Any:
        """The value of ``name``: the last one for a singular field, all of them for a repeated one.

        When absent: ``default`` if given, else the schema default (``[]`` for repeated fields,
        an empty message for message fields, ``None`` for fields the schema does not know).
        """
        spec = self.field_spec(name)
        if name in self:
            values = self._fields[name]
            return values if spec is not None and spec.repeated else values[-1]
        if default is not _MISSING:
            return default
        if spec is None:
            return None
        if spec.repeated:
            return []
        if spec.is_message:
            return Message(spec.type)
        return spec.default

    def getall(self, name: str) -> Any:
        """All values of ``name`` (a list, or an ndarray for blob data); empty when absent."""
        return self._fields.get(name, [])

    def add(self, name: str, value: Any) -> None:
        """Append ``value`` to field ``name``."""
        values = self._fields.setdefault(name, [])
        if isinstance(values, np.ndarray):
            self._fields[name] = np.concatenate([values, np.atleast_1d(value)])
        else:
            values.append(value)

    def extend(self, name: str, values: Any) -> None:
        """Append several values (a list or an ndarray) to field ``name``."""
        current = self._fields.get(name)
        if current is None or len(current) == 0:
            self._fields[name] = values if isinstance(values, np.ndarray) else list(values)
        elif isinstance(values, np.ndarray) or isinstance(current, np.ndarray):
            self._fields[name] = np.concatenate([np.asarray(current), np.asarray(values)])
        else:
            current.extend(values)

    def set(self, name: str, value: Any) -> None:
        """Replace field ``name`` by ``value`` (a list or an ndarray for a repeated field)."""
        spec = self.field_spec(name)
        if spec is not None and spec.repeated:
            self._fields[name] = value if isinstance(value, np.ndarray) else list(value)
        else:
            self._fields[name] = [value]

    def remove(self, name: str) -> None:
        """Delete field ``name`` if present."""
        self._fields.pop(name, None)

    def fields(self) -> Iterator[tuple[str, Any]]:
        """``(name, values)`` for every present field, in first-seen order."""
        return ((k, v) for k, v in self._fields.items() if len(v) > 0)

    def copy(self) -> Message:
        """A deep copy of the message structure; arrays are shared, not copied."""
        out = Message(self.type)
        for name, values in self.fields():
            if isinstance(values, np.ndarray):
                out._fields[name] = values
            else:
                out._fields[name] = [v.copy() if isinstance(v, Message) else v for v in values]
        out.unknown = list(self.unknown)
        out.positions = dict(self.positions)
        return out

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Message) or self.type != other.type:
            return NotImplemented if not isinstance(other, Message) else False
        mine, theirs = dict(self.fields()), dict(other.fields())
        if mine.keys() != theirs.keys():
            return False
        for name, values in mine.items():
            if not _values_equal(values, theirs[name]):
                return False
        return [(n, w, bytes(r) if not isinstance(r, int) else r) for n, w, r in self.unknown] == [
            (n, w, bytes(r) if not isinstance(r, int) else r) for n, w, r in other.unknown
        ]

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        from .text import format_message

        body = format_message(self, indent=1)
        return f"<{self.type or 'Message'}\n{body}>" if body else f"<{self.type or 'Message'}>"


def unknown_named_fields(msg: Message) -> list[tuple[str, tuple[int, int] | None]]:
    """Fields of ``msg`` (at any depth) that caffe.proto does not have, kept by name: only the text
    reader keeps these (binary ones are numbered, in ``Message.unknown``). Each is
    ``(dotted path, (line, column) or None)``, e.g. ``("pooling_param.strde", (14, 5))``; the
    fields inside an unknown message are not listed separately."""
    found: list[tuple[str, tuple[int, int] | None]] = []
    _collect_unknown(msg, "", found)
    return found


def _collect_unknown(msg: Message, prefix: str, found: list[tuple[str, tuple[int, int] | None]]) -> None:
    spec = msg.spec
    for name, values in msg.fields():
        if spec is None or name not in spec.by_name:
            if msg.type is not None:
                found.append((prefix + name, msg.positions.get(name)))
            continue
        if not isinstance(values, np.ndarray):
            for value in values:
                if isinstance(value, Message):
                    _collect_unknown(value, f"{prefix}{name}.", found)


def _values_equal(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        a_arr, b_arr = np.asarray(a), np.asarray(b)
        return a_arr.shape == b_arr.shape and bool(np.array_equal(a_arr, b_arr, equal_nan=True))
    if len(a) != len(b):
        return False
    for x, y in zip(a, b, strict=True):
        if isinstance(x, float) and isinstance(y, float) and x != x and y != y:
            continue  # both NaN
        if type(x) is bool or type(y) is bool:
            if type(x) is not type(y) or x != y:
                return False
        elif x != y:
            return False
    return True
