"""Seeded property tests: random messages of every caffe.proto type survive binary and text form.

Each case is a random message of the schema (every field type: ints at their limits, enums, UTF-8
strings, raw bytes, float32 and float64 specials, nested and repeated messages). The check is
read(write(x)) == x, for the binary encoder/decoder and for the text writer/parser, and that the
binary form of the text round trip is byte-identical.
"""

from __future__ import annotations

import math
import random
import struct

import numpy as np

from converters import Ident, Message
from converters.caffe.binary import ARRAY_FIELDS, decode_message, encode_message
from converters.caffe.schema import ENUMS, MESSAGES, FieldSpec
from converters.caffe.text import format_message, parse_text

_INT_LIMITS = {
    "int32": (-(2**31), 2**31 - 1),
    "int64": (-(2**63), 2**63 - 1),
    "uint32": (0, 2**32 - 1),
    "uint64": (0, 2**64 - 1),
}
_FLOAT32_SPECIALS = [0.0, -0.0, math.inf, -math.inf, math.nan, 1.401298464324817e-45, 3.4028234663852886e38,
                     0.1, -2.5]  # fmt: skip
_DOUBLE_SPECIALS = [0.0, -0.0, math.inf, -math.inf, math.nan, 5e-324, 1.7976931348623157e308, 0.1, 1 / 3]


def _float32(rng: random.Random) -> float:
    if rng.random() < 0.3:
        return float(np.float32(rng.choice(_FLOAT32_SPECIALS)))
    # any finite float32 bit pattern
    while True:
        value = struct.unpack("<f", struct.pack("<I", rng.getrandbits(32)))[0]
        if math.isfinite(value):
            return value


def _double(rng: random.Random) -> float:
    if rng.random() < 0.3:
        return rng.choice(_DOUBLE_SPECIALS)
    while True:
        value = struct.unpack("<d", struct.pack("<Q", rng.getrandbits(64)))[0]
        if math.isfinite(value):
            return value


def _string(rng: random.Random) -> str:
    alphabet = 'az09_ ."\\\'\n\t\r\x00\x7fé漢\U0001f600{}#:'
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 10)))


def _scalar(field: FieldSpec, rng: random.Random) -> object:
    if field.is_enum:
        names = [n for n, v in ENUMS[field.type].by_name.items() if v >= 0]  # text-only fork names aside
        return Ident(rng.choice(names))
    if field.type in _INT_LIMITS:
        low, high = _INT_LIMITS[field.type]
        return rng.choice([low, high, 0, 1, -1 if low < 0 else 2, rng.randint(low, high)])
    if field.type == "bool":
        return rng.random() < 0.5
    if field.type == "float":
        return _float32(rng)
    if field.type == "double":
        return _double(rng)
    if field.type == "string":
        return _string(rng)
    return bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 12)))


def random_message(type_name: str, rng: random.Random, depth: int = 0) -> Message:
    msg = Message(type_name)
    spec = MESSAGES[type_name]
    # Only fields read back by number: a second fork's fields are read by name (converters.caffe.forks).
    fields = [f for f in spec.by_name.values() if spec.by_number.get(f.number) is f]
    for field in rng.sample(fields, k=min(len(fields), rng.randint(0, 6))):
        if field.is_message:
            if depth >= 3:
                continue
            count = rng.randint(1, 2) if field.repeated else 1
            values: list[object] = [random_message(field.type, rng, depth + 1) for _ in range(count)]
        else:
            count = rng.randint(1, 4) if field.repeated else 1
            values = [_scalar(field, rng) for _ in range(count)]
        if (type_name, field.name) in ARRAY_FIELDS:
            dtype = np.float64 if field.type == "double" else np.float32
            msg.set(field.name, np.array(values, dtype=dtype))
        elif field.repeated:
            msg.set(field.name, values)
        else:
            msg.set(field.name, values[0])
    return msg


# (No pytest import: tests/test_caffe_formats_protobuf.py reuses random_message with Google protobuf.)
TYPES = ["NetParameter", "LayerParameter", "V1LayerParameter", "BlobProto", "SolverParameter", "Datum"]


def test_random_messages_binary_round_trip() -> None:
    for type_name in TYPES:
        rng = random.Random(f"binary-{type_name}")
        for _ in range(150):
            msg = random_message(type_name, rng)
            encoded = encode_message(msg)
            decoded = decode_message(encoded, type_name)
            assert decoded == msg, format_message(msg)
            assert encode_message(decoded) == encoded


def test_random_messages_text_round_trip() -> None:
    for type_name in TYPES:
        rng = random.Random(f"text-{type_name}")
        for _ in range(150):
            msg = random_message(type_name, rng)
            text = format_message(msg)
            parsed = parse_text(text, type_name)
            assert parsed == msg, text
            assert encode_message(parsed) == encode_message(msg)


def test_every_message_type_round_trips() -> None:
    rng = random.Random(7)
    for type_name in MESSAGES:
        for _ in range(5):
            msg = random_message(type_name, rng, depth=2)
            assert decode_message(encode_message(msg), type_name) == msg, type_name
            assert parse_text(format_message(msg), type_name) == msg, type_name
