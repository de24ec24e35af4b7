"""Protobuf wire format for Caffe messages: decoding from a buffer and encoding to chunks.

Blob values are never turned into Python numbers: packed floats become ``numpy`` views of the
buffer they were read from (zero-copy), unpacked ones a single vectorised copy.
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Iterable
from typing import Any

import numpy as np

from ..errors import CaffeFormatError
from .message import Ident, Message
from .schema import ENUMS, MESSAGES, VARINT_TYPES, WIRE_NUMBERS, FieldSpec

VARINT, FIXED64, LENGTH, START_GROUP, END_GROUP, FIXED32 = 0, 1, 2, 3, 4, 5
MAX_DEPTH = 100

_WIRE_TYPE_OF = {
    "float": FIXED32,
    "double": FIXED64,
    "string": LENGTH,
    "bytes": LENGTH,
}
_ARRAY_DTYPES = {"float": np.dtype("<f4"), "double": np.dtype("<f8")}
# Repeated float fields that hold weights: decoded to one ndarray; others become lists.
ARRAY_FIELDS = frozenset(
    {
        ("BlobProto", "data"),
        ("BlobProto", "diff"),
        ("BlobProto", "double_data"),
        ("BlobProto", "double_diff"),
        ("Datum", "float_data"),
    }
)


def _expected_wire_type(spec: FieldSpec) -> int:
    if spec.is_message:
        return LENGTH
    if spec.is_enum or spec.type in VARINT_TYPES:
        return VARINT
    return _WIRE_TYPE_OF[spec.type]


class _Decoder:
    """Walks one buffer; every read is bounds-checked against the enclosing message's end."""

    def __init__(self, buf: Any, path: Any = None) -> None:
        self.buf = buf
        self.path = path

    def error(self, message: str, offset: int) -> CaffeFormatError:
        return CaffeFormatError(message, self.path, offset=offset)

    def varint(self, pos: int, end: int) -> tuple[int, int]:
        buf = self.buf
        result = 0
        shift = 0
        start = pos
        while True:
            if pos >= end:
                raise self.error("truncated varint", start)
            byte = buf[pos]
            pos += 1
            result |= (byte & 0x7F) << shift
            if byte < 0x80:
                return result, pos
            shift += 7
            if shift >= 70:
                raise self.error("varint longer than 10 bytes", start)

    def skip_group(self, number: int, pos: int, end: int, depth: int) -> int:
        """Position after the END_GROUP that closes group ``number``."""
        while True:
            if pos >= end:
                raise self.error(f"unterminated group for field {number}", pos)
            key, pos = self.varint(pos, end)
            wire = key & 7
            if wire == END_GROUP:
                if key >> 3 != number:
                    raise self.error("mismatched end of group", pos)
                return pos
            _, pos = self.skip_value(key >> 3, wire, pos, end, depth + 1)

    def skip_value(self, number: int, wire: int, pos: int, end: int, depth: int) -> tuple[Any, int]:
        """The raw value of an unknown field (int or buffer slice) and the position after it."""
        if depth > MAX_DEPTH:
            raise self.error("messages nested too deeply", pos)
        if wire == VARINT:
            return self.varint(pos, end)
        if wire == FIXED64:
            if pos + 8 > end:
                raise self.error(f"truncated 8-byte value of field {number}", pos)
            return self.buf[pos : pos + 8], pos + 8
        if wire == FIXED32:
            if pos + 4 > end:
                raise self.error(f"truncated 4-byte value of field {number}", pos)
            return self.buf[pos : pos + 4], pos + 4
        if wire == LENGTH:
            length, start = self.varint(pos, end)
            if length > end - start:
                raise self.error(f"field {number} claims {length} bytes but only {end - start} remain", pos)
            return self.buf[start : start + length], start + length
        if wire == START_GROUP:
            start = pos
            pos = self.skip_group(number, pos, end, depth)
            return self.buf[start:pos], pos
        raise self.error(f"invalid wire type {wire} for field {number}", pos)

    def message(self, type_name: str, pos: int, end: int, depth: int = 0) -> Message:
        if depth > MAX_DEPTH:
            raise self.error("messages nested too deeply", pos)
        msg = Message(type_name)
        by_number = MESSAGES[type_name].by_number
        arrays: dict[str, list[np.ndarray]] = {}
        while pos < end:
            key_pos = pos
            key, pos = self.varint(pos, end)
            number, wire = key >> 3, key & 7
            if number == 0:
                raise self.error("field number 0 is invalid", key_pos)
            spec = by_number.get(number)
            if spec is None:
                raw, pos = self.skip_value(number, wire, pos, end, depth)
                msg.unknown.append((number, wire, raw))
                continue
            expected = _expected_wire_type(spec)
            if spec.repeated and wire == LENGTH and expected != LENGTH:
                pos = self.packed(msg, spec, pos, end, arrays)
                continue
            if wire != expected:
                # A fork reusing a known number with another wire type: keep it as unknown.
                raw, pos = self.skip_value(number, wire, pos, end, depth)
                msg.unknown.append((number, wire, raw))
                continue
            if spec.type in _ARRAY_DTYPES and spec.repeated:
                pos = self.unpacked_array(spec, key_pos, pos, end, arrays)
                continue
            value, pos = self.scalar_or_message(spec, wire, pos, end, depth)
            if spec.repeated:
                msg.add(spec.name, value)
            elif spec.is_message and spec.name in msg:
                _merge(msg.get(spec.name), value)
            else:
                msg.set(spec.name, value)
        for name, parts in arrays.items():
            array = parts[0] if len(parts) == 1 else np.concatenate(parts)
            msg.set(name, array if (type_name, name) in ARRAY_FIELDS else array.tolist())
        return msg

    def scalar_or_message(
        self, spec: FieldSpec, wire: int, pos: int, end: int, depth: int
    ) -> tuple[Any, int]:
        if wire == VARINT:
            raw, pos = self.varint(pos, end)
            return _varint_value(spec, raw), pos
        if wire == FIXED32:
            if pos + 4 > end:
                raise self.error(f"truncated float of field '{spec.name}'", pos)
            return struct.unpack_from("<f", self.buf, pos)[0], pos + 4
        if wire == FIXED64:
            if pos + 8 > end:
                raise self.error(f"truncated double of field '{spec.name}'", pos)
            return struct.unpack_from("<d", self.buf, pos)[0], pos + 8
        length, start = self.varint(pos, end)
        if length > end - start:
            raise self.error(f"field '{spec.name}' claims {length} bytes but only {end - start} remain", pos)
        stop = start + length
        if spec.is_message:
            return self.message(spec.type, start, stop, depth + 1), stop
        raw = bytes(self.buf[start:stop])
        if spec.type == "bytes":
            return raw, stop
        try:
            return raw.decode("utf-8"), stop
        except UnicodeDecodeError:
            raise self.error(f"field '{spec.name}' is not valid UTF-8", start) from None

    def packed(
        self, msg: Message, spec: FieldSpec, pos: int, end: int, arrays: dict[str, list[np.ndarray]]
    ) -> int:
        length, start = self.varint(pos, end)
        if length > end - start:
            raise self.error(
                f"packed field '{spec.name}' claims {length} bytes but only {end - start} remain",
                pos,
            )
        stop = start + length
        dtype = _ARRAY_DTYPES.get(spec.type)
        if dtype is not None:
            if length % dtype.itemsize:
                raise self.error(
                    f"packed field '{spec.name}' has {length} bytes, not a multiple of {dtype.itemsize}",
                    start,
                )
            view = np.frombuffer(self.buf, dtype=dtype, count=length // dtype.itemsize, offset=start)
            arrays.setdefault(spec.name, []).append(view)
            return stop
        values = []
        while start < stop:
            raw, start = self.varint(start, stop)
            values.append(_varint_value(spec, raw))
        msg.extend(spec.name, values)
        return stop

    def unpacked_array(
        self,
        spec: FieldSpec,
        key_pos: int,
        pos: int,
        end: int,
        arrays: dict[str, list[np.ndarray]],
    ) -> int:
        """Decode a run of unpacked float/double elements of one field with a few numpy steps.

        The run is found in windows that grow fourfold, so the work stays linear in the run's
        length even when runs of different fields alternate.
        """
        dtype = _ARRAY_DTYPES[spec.type]
        key_len = pos - key_pos
        stride = key_len + dtype.itemsize
        available = (end - key_pos) // stride
        if available == 0:
            raise self.error(f"truncated value of field '{spec.name}'", pos)
        buf = self.buf
        if available == 1 or buf[key_pos + stride : key_pos + stride + key_len] != buf[key_pos:pos]:
            # A run of one (fields interleaved element by element): plain Python is cheaper.
            one = np.frombuffer(bytes(buf[pos : pos + dtype.itemsize]), dtype=dtype).astype(dtype)
            arrays.setdefault(spec.name, []).append(one)
            return pos + dtype.itemsize
        key = np.frombuffer(buf, dtype=np.uint8, count=key_len, offset=key_pos)
        count, window = 0, 16
        while count < available:
            take = min(window, available - count)
            start = key_pos + count * stride
            block = np.frombuffer(buf, dtype=np.uint8, count=take * stride, offset=start)
            same = np.all(block.reshape(take, stride)[:, :key_len] == key, axis=1)
            if not same.all():
                count += int(np.argmin(same))
                break
            count += take
            window *= 4
        block = np.frombuffer(buf, dtype=np.uint8, count=count * stride, offset=key_pos)
        values = block.reshape(count, stride)[:, key_len:].copy().view(dtype).reshape(count)
        arrays.setdefault(spec.name, []).append(values)
        return key_pos + count * stride


def _varint_value(spec: FieldSpec, raw: int) -> Any:
    type_name = spec.type
    if type_name == "bool":
        return raw != 0
    if type_name in ("int32", "int64") or spec.is_enum:
        if raw >= 1 << 63:
            raw -= 1 << 64
        if type_name == "int32" or spec.is_enum:
            raw = ((raw + (1 << 31)) % (1 << 32)) - (1 << 31)
        if spec.is_enum:
            name = ENUMS[type_name].by_number.get(raw)
            return Ident(name) if name is not None else raw
        return raw
    if type_name == "uint32":
        return raw & 0xFFFFFFFF
    return raw & 0xFFFFFFFFFFFFFFFF


def _merge(target: Message, source: Message) -> None:
    """Protobuf merge of a repeated occurrence of a singular message field."""
    for name, values in source.fields():
        spec = target.field_spec(name)
        if spec is not None and spec.repeated:
            target.extend(name, values)
        elif spec is not None and spec.is_message and name in target:
            _merge(target.get(name), values[-1])
        else:
            target.set(name, values[-1])
    target.unknown.extend(source.unknown)


def decode_message(
    buf: Any, type_name: str = "NetParameter", path: Any = None, start: int = 0, end: int | None = None
) -> Message:
    """Decode the message ``type_name`` from ``buf[start:end]`` (bytes, memoryview or mmap)."""
    end = len(buf) if end is None else end
    return _Decoder(buf, path).message(type_name, start, end)


# ----------------------------------------------------------------------------------------------
# Encoding


def _varint_bytes(value: int) -> bytes:
    if value < 0:
        value += 1 << 64
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _key(number: int, wire: int) -> bytes:
    return _varint_bytes((number << 3) | wire)


def _scalar_bytes(spec: FieldSpec, value: Any) -> bytes:
    type_name = spec.type
    if spec.is_enum:
        if isinstance(value, str):
            name, value = value, ENUMS[type_name].by_name.get(value)
            if value is None:
                raise ValueError(f"'{name}' is not a value of enum {type_name}")
            if value < 0:  # a fork's name read from text whose number BVLC gives another value
                raise ValueError(
                    f"'{name}' of {type_name} is a fork's value known by name only (BVLC gives its "
                    "number to another value): it cannot be written in binary form"
                )
        return _varint_bytes(int(value))
    if type_name == "bool":
        return b"\x01" if value else b"\x00"
    if type_name in VARINT_TYPES:
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise ValueError(f"field '{spec.name}' needs an integer, got {value!r}")
        return _varint_bytes(int(value))
    if type_name == "float":
        return struct.pack("<f", float(value))
    if type_name == "double":
        return struct.pack("<d", float(value))
    if type_name == "string":
        return str(value).encode("utf-8")
    return bytes(value)


def _encode_field(field: FieldSpec, values: Any, out: list[Any]) -> int:
    """Append the encoding of one field's values to ``out``; return the bytes added."""
    total = 0
    if field.is_message:
        for value in values:
            body: list[Any] = []
            length = _encode_into(value, body)
            head = _key(field.number, LENGTH) + _varint_bytes(length)
            out.append(head)
            out.extend(body)
            total += len(head) + length
    elif field.type in _ARRAY_DTYPES and (field.packed or isinstance(values, np.ndarray)):
        array = np.ascontiguousarray(values, dtype=_ARRAY_DTYPES[field.type]).reshape(-1)
        if field.packed:
            data = memoryview(array).cast("B")
            head = _key(field.number, LENGTH) + _varint_bytes(len(data))
            out.append(head)
            out.append(data)
            total += len(head) + len(data)
        else:
            wire = FIXED32 if field.type == "float" else FIXED64
            key = np.frombuffer(_key(field.number, wire), dtype=np.uint8)
            rows = np.empty((array.size, key.size + array.itemsize), dtype=np.uint8)
            rows[:, : key.size] = key
            rows[:, key.size :] = array.view(np.uint8).reshape(array.size, array.itemsize)
            out.append(rows.tobytes())
            total += rows.size
    elif field.repeated and field.packed:
        body_bytes = b"".join(_scalar_bytes(field, v) for v in values)
        head = _key(field.number, LENGTH) + _varint_bytes(len(body_bytes))
        out.append(head + body_bytes)
        total += len(head) + len(body_bytes)
    else:
        wire = _expected_wire_type(field)
        key = _key(field.number, wire)
        for value in values if field.repeated else values[-1:]:
            raw = _scalar_bytes(field, value)
            chunk = key + (_varint_bytes(len(raw)) + raw if wire == LENGTH else raw)
            out.append(chunk)
            total += len(chunk)
    return total


def _unknown_bytes(number: int, wire: int, raw: Any) -> bytes:
    if wire == VARINT:
        return _key(number, wire) + _varint_bytes(raw)
    if wire == LENGTH:
        return _key(number, wire) + _varint_bytes(len(raw)) + bytes(raw)
    return _key(number, wire) + bytes(raw)


def _encode_into(msg: Message, out: list[Any]) -> int:
    """Append the encoding of ``msg`` to ``out`` (bytes or memoryviews); return its length.

    Fields go in field-number order, known and unknown alike, as Caffe's protobuf writes them.
    """
    spec = msg.spec
    items: list[tuple[int, int, Any]] = []
    for index, (name, values) in enumerate(msg.fields()):
        field = spec.by_name.get(name) if spec is not None else None
        if field is None:
            raise ValueError(
                f"field '{name}' of {msg.type or 'an unknown message'} is not in caffe.proto "
                "and cannot be written in binary form"
            )
        if field.number <= 0:  # a second fork's field known by name: written under that fork's number
            number = WIRE_NUMBERS.get((msg.type, name))
            if number is None:
                raise ValueError(
                    f"field '{name}' of {msg.type} is known by name only (a fork's field with no agreed "
                    "number) and cannot be written in binary form"
                )
            field = dataclasses.replace(field, number=number)
        items.append((field.number, index, (field, values)))
    numbers = [number for number, _, _ in items]
    if len(set(numbers)) != len(numbers):
        raise ValueError(
            f"{msg.type} mixes two forks' fields that share a field number: it cannot be written in "
            "binary form"
        )
    for index, unknown in enumerate(msg.unknown):
        items.append((unknown[0], len(items) + index, unknown))
    items.sort(key=lambda item: (item[0], item[1]))
    total = 0
    for _, _, item in items:
        if isinstance(item[0], FieldSpec):
            total += _encode_field(item[0], item[1], out)
        else:
            chunk = _unknown_bytes(*item)
            out.append(chunk)
            total += len(chunk)
    return total


def encode_chunks(msg: Message) -> list[Any]:
    """The wire encoding of ``msg`` as a list of byte chunks (big arrays are not copied)."""
    out: list[Any] = []
    _encode_into(msg, out)
    return out


def encode_message(msg: Message) -> bytes:
    """The wire encoding of ``msg`` as one bytes object."""
    return b"".join(bytes(c) if isinstance(c, memoryview) else c for c in encode_chunks(msg))


def write_chunks(chunks: Iterable[Any], file: Any) -> None:
    """Write encoded chunks to an open binary file."""
    for chunk in chunks:
        file.write(chunk)
