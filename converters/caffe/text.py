"""Protobuf text format (``.prototxt``) for Caffe messages: a parser and a writer.

The parser accepts what Caffe writes and what people hand-edit: ``#`` comments, ``field: value``,
``field { }``, ``field: { }`` and ``field < >``, list values ``[a, b]``, quoted strings with C
escapes and adjacent-string concatenation, enums, ``true``/``false``/``True``/``False``, hex and
exponent numbers, ``inf``/``nan``, optional ``;``/``,`` separators. Fields the schema does not know
(Caffe forks add many) are kept as they are written. Errors name the file, line and column.
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np

from ..errors import CaffeFormatError
from .message import Ident, Message
from .schema import ENUMS, MESSAGES, VARINT_TYPES, FieldSpec

_TOKEN = re.compile(
    r"""
    (?P<space>[ \t\r\f\v]+|\#[^\n]*)
  | (?P<newline>\n)
  | (?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
  | (?P<number>(?:0[xX][0-9a-fA-F]+|(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?[fF]?)(?![A-Za-z0-9_.]))
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)
  | (?P<punct>[{}<>:\[\],;\-])
    """,
    re.VERBOSE,
)
_INT_RANGES = {
    "int32": (-(1 << 31), (1 << 31) - 1),
    "int64": (-(1 << 63), (1 << 63) - 1),
    "uint32": (0, (1 << 32) - 1),
    "uint64": (0, (1 << 64) - 1),
}
_SIMPLE_ESCAPES = {
    "n": 10, "t": 9, "r": 13, "a": 7, "b": 8, "f": 12, "v": 11,
    "\\": 92, "'": 39, '"': 34, "?": 63,
}  # fmt: skip
_FLOAT_WORDS = {"inf": math.inf, "infinity": math.inf, "nan": math.nan}


class _Token:
    __slots__ = ("kind", "text", "line", "column")

    def __init__(self, kind: str, text: str, line: int, column: int) -> None:
        self.kind, self.text, self.line, self.column = kind, text, line, column


def _tokenize(text: str, path: Any) -> list[_Token]:
    tokens: list[_Token] = []
    line, line_start, pos, n = 1, 0, 0, len(text)
    match = _TOKEN.match
    while pos < n:
        m = match(text, pos)
        if m is None:
            raise CaffeFormatError(
                f"unexpected character {text[pos]!r}", path, line=line, column=pos - line_start + 1
            )
        kind = m.lastgroup
        if kind == "newline":
            line += 1
            line_start = m.end()
        elif kind != "space":
            tokens.append(_Token(kind, m.group(), line, pos - line_start + 1))  # type: ignore[arg-type]
        pos = m.end()
    tokens.append(_Token("eof", "", line, pos - line_start + 1))
    return tokens


def _unescape(quoted: str, token: _Token, path: Any) -> bytes:
    body = quoted[1:-1]
    if "\\" not in body:
        return body.encode("utf-8")
    out = bytearray()
    i = 0
    while i < len(body):
        ch = body[i]
        if ch != "\\":
            out += ch.encode("utf-8")
            i += 1
            continue
        i += 1
        esc = body[i]
        if esc in _SIMPLE_ESCAPES:
            out.append(_SIMPLE_ESCAPES[esc])
            i += 1
        elif esc in "xX":
            digits = re.match(r"[0-9a-fA-F]{1,2}", body[i + 1 :])
            if not digits:
                raise CaffeFormatError("bad \\x escape", path, line=token.line, column=token.column)
            out.append(int(digits.group(), 16))
            i += 1 + len(digits.group())
        elif esc in "01234567":
            digits = re.match(r"[0-7]{1,3}", body[i:])
            assert digits is not None
            out.append(int(digits.group(), 8) & 0xFF)
            i += len(digits.group())
        elif esc in "uU":
            width = 4 if esc == "u" else 8
            digits = body[i + 1 : i + 1 + width]
            if not re.fullmatch(rf"[0-9a-fA-F]{{{width}}}", digits):
                raise CaffeFormatError(
                    f"bad \\{esc} escape", path, line=token.line, column=token.column
                )
            out += chr(int(digits, 16)).encode("utf-8")
            i += 1 + width
        else:
            raise CaffeFormatError(
                f"unknown escape '\\{esc}' in string", path, line=token.line, column=token.column
            )
    return bytes(out)


MAX_DEPTH = 100  # as protobuf's text parser: deeper nesting is refused, not a RecursionError


class _Parser:
    def __init__(self, text: str, path: Any) -> None:
        self.path = path
        self.tokens = _tokenize(text, path)
        self.i = 0
        self.depth = 0

    # -- token helpers ---------------------------------------------------------------------
    def peek(self) -> _Token:
        return self.tokens[self.i]

    def next(self) -> _Token:
        token = self.tokens[self.i]
        self.i += 1
        return token

    def error(self, message: str, token: _Token | None = None) -> CaffeFormatError:
        token = token or self.peek()
        return CaffeFormatError(message, self.path, line=token.line, column=token.column)

    def accept(self, text: str) -> bool:
        token = self.peek()
        if token.kind == "punct" and token.text == text:
            self.i += 1
            return True
        return False

    def expect(self, text: str) -> None:
        if not self.accept(text):
            token = self.peek()
            found = "end of file" if token.kind == "eof" else repr(token.text)
            raise self.error(f"expected '{text}', found {found}")

    # -- grammar ---------------------------------------------------------------------------
    def message(self, type_name: str | None, close: str | None) -> Message:
        msg = Message(type_name)
        spec = MESSAGES.get(type_name) if type_name else None
        while True:
            token = self.peek()
            if token.kind == "eof":
                if close is not None:
                    raise self.error(f"expected '{close}' before end of file")
                return msg
            if close is not None and token.kind == "punct" and token.text == close:
                self.i += 1
                return msg
            if token.kind != "ident":
                raise self.error(f"expected a field name, found {token.text!r}")
            self.i += 1
            field = spec.by_name.get(token.text) if spec else None
            self.field(msg, token, field)
            if not self.accept(";"):
                self.accept(",")

    def field(self, msg: Message, name: _Token, field: FieldSpec | None) -> None:
        has_colon = self.accept(":")
        token = self.peek()
        is_block = token.kind == "punct" and token.text in "{<"
        if field is not None and field.is_message and not is_block and not (
            token.kind == "punct" and token.text == "["
        ):
            raise self.error(f"field '{name.text}' is a message and needs '{{ ... }}'", token)
        if not has_colon and not is_block:
            raise self.error(f"expected ':' after field name '{name.text}'", token)
        if field is not None and not field.repeated and name.text in msg:
            raise self.error(f"non-repeated field '{name.text}' is specified more than once", name)
        if token.kind == "punct" and token.text == "[":
            self.i += 1
            if field is not None and not field.repeated:
                raise self.error(f"field '{name.text}' is not repeated and cannot take a list", token)
            if not self.accept("]"):
                while True:
                    msg.add(name.text, self.value(name, field))
                    if self.accept("]"):
                        break
                    self.expect(",")
            return
        msg.add(name.text, self.value(name, field))

    def value(self, name: _Token, field: FieldSpec | None) -> Any:
        token = self.peek()
        if token.kind == "punct" and token.text in "{<":
            self.i += 1
            if field is not None and not field.is_message:
                raise self.error(f"field '{name.text}' is a {field.type}, not a message", token)
            if self.depth >= MAX_DEPTH:
                raise self.error(f"messages nested more than {MAX_DEPTH} deep", token)
            self.depth += 1
            msg = self.message(field.type if field else None, "}" if token.text == "{" else ">")
            self.depth -= 1
            return msg
        if field is not None and field.is_message:
            raise self.error(f"field '{name.text}' is a message and needs '{{ ... }}'", token)
        start = self.peek()
        negative = self.accept("-")
        token = self.next()
        if negative and token.kind in ("number", "ident"):
            # errors about a negative value point at its '-'
            token = _Token(token.kind, token.text, start.line, start.column)
        if token.kind == "string" and not negative:
            raw = _unescape(token.text, token, self.path)
            while self.peek().kind == "string":
                following = self.next()
                raw += _unescape(following.text, following, self.path)
            return self.convert_string(raw, name, field, token)
        if token.kind == "number":
            return self.convert_number(("-" if negative else "") + token.text, name, field, token)
        if token.kind == "ident":
            return self.convert_ident(token.text, negative, name, field, token)
        found = "end of file" if token.kind == "eof" else repr(token.text)
        raise self.error(f"expected a value for field '{name.text}', found {found}", token)

    # -- conversions -----------------------------------------------------------------------
    def convert_string(self, raw: bytes, name: _Token, field: FieldSpec | None, token: _Token) -> Any:
        if field is not None and field.type not in ("string", "bytes"):
            raise self.error(f"field '{name.text}' is a {field.type}, not a string", token)
        if field is not None and field.type == "bytes":
            return raw
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            if field is None:
                return raw
            raise self.error(f"string for field '{name.text}' is not valid UTF-8", token) from None

    def convert_number(self, text: str, name: _Token, field: FieldSpec | None, token: _Token) -> Any:
        is_int = re.fullmatch(r"-?(0[xX][0-9a-fA-F]+|[0-9]+)", text) is not None
        if field is None:
            return _parse_int(text) if is_int else _parse_float(text)
        type_name = field.type
        if field.is_enum:
            if not is_int:
                raise self.error(f"field '{name.text}' takes an enum value, got {text}", token)
            number = _parse_int(text)
            value_name = ENUMS[type_name].by_number.get(number)
            if value_name is None:
                raise self.error(f"{number} is not a value of enum {type_name}", token)
            return Ident(value_name)
        if type_name == "bool":
            if text in ("0", "1"):
                return text == "1"
            raise self.error(f"field '{name.text}' takes true or false, got {text}", token)
        if type_name in _INT_RANGES:
            if not is_int:
                raise self.error(f"field '{name.text}' takes an integer, got {text}", token)
            value = _parse_int(text)
            low, high = _INT_RANGES[type_name]
            if not low <= value <= high:
                raise self.error(f"{value} is out of range for {type_name} field '{name.text}'", token)
            return value
        if type_name in ("float", "double"):
            value = _parse_float(text)
            return float(np.float32(value)) if type_name == "float" else value
        raise self.error(f"field '{name.text}' is a {type_name}, not a number", token)

    def convert_ident(
        self, text: str, negative: bool, name: _Token, field: FieldSpec | None, token: _Token
    ) -> Any:
        lowered = text.lower()
        if lowered in _FLOAT_WORDS and (field is None or field.type in ("float", "double")):
            value = -_FLOAT_WORDS[lowered] if negative else _FLOAT_WORDS[lowered]
            return value
        if negative:
            raise self.error(f"unexpected '-' before {text!r}", token)
        if field is None:
            if text in ("true", "True"):
                return True
            if text in ("false", "False"):
                return False
            return Ident(text)
        if field.type == "bool":
            if text in ("true", "True", "t"):
                return True
            if text in ("false", "False", "f"):
                return False
            raise self.error(f"field '{name.text}' takes true or false, got {text}", token)
        if field.is_enum:
            values = ENUMS[field.type].by_name
            if text not in values:
                raise self.error(
                    f"'{text}' is not a value of {field.type} (one of {', '.join(values)})", token
                )
            return Ident(text)
        raise self.error(f"field '{name.text}' is a {field.type}, got the name {text!r}", token)


def _parse_int(text: str) -> int:
    sign = -1 if text.startswith("-") else 1
    digits = text.lstrip("-")
    if digits[:2] in ("0x", "0X"):
        return sign * int(digits, 16)
    if len(digits) > 1 and digits.startswith("0") and digits.isdigit():
        return sign * int(digits, 8)
    return sign * int(digits)


def _parse_float(text: str) -> float:
    if re.fullmatch(r"-?0[xX][0-9a-fA-F]+", text):
        return float(_parse_int(text))
    return float(text.rstrip("fF"))


def parse_text(text: str, type_name: str = "NetParameter", path: Any = None) -> Message:
    """Parse protobuf text format into a :class:`Message` of ``type_name``."""
    return _Parser(text, path).message(type_name, None)


# ----------------------------------------------------------------------------------------------
# Writing

def _quote(value: str | bytes) -> str:
    raw = value.encode("utf-8") if isinstance(value, str) else value
    out = []
    for byte in raw:
        if byte == 0x22:
            out.append('\\"')
        elif byte == 0x5C:
            out.append("\\\\")
        elif byte == 0x0A:
            out.append("\\n")
        elif byte == 0x09:
            out.append("\\t")
        elif byte == 0x0D:
            out.append("\\r")
        elif 0x20 <= byte < 0x7F:
            out.append(chr(byte))
        else:
            out.append(f"\\{byte:03o}")
    return '"' + "".join(out) + '"'


def _format_float(value: float, single: bool) -> str:
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if single:
        return str(np.float32(value))
    return repr(float(value))


def _format_scalar(value: Any, field: FieldSpec | None) -> str:
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, Ident):
        return str(value)
    if isinstance(value, (str, bytes)):
        return _quote(value)
    if field is not None and field.type in VARINT_TYPES | {"bool"} or isinstance(
        value, (int, np.integer)
    ):
        return str(int(value))
    return _format_float(float(value), field is not None and field.type == "float")


def format_message(msg: Message, indent: int = 0) -> str:
    """``msg`` in protobuf text format, two spaces per level, as Caffe writes prototxts.

    Binary fields the schema does not know (``msg.unknown``) have no text form and are left out.
    """
    lines: list[str] = []
    _format_into(msg, indent, lines)
    return "\n".join(lines) + ("\n" if lines else "")


def _format_into(msg: Message, indent: int, lines: list[str]) -> None:
    pad = "  " * indent
    for name, values in msg.fields():
        field = msg.field_spec(name)
        if isinstance(values, np.ndarray):
            single = values.dtype == np.float32
            lines.extend(f"{pad}{name}: {_format_float(float(v), single)}" for v in values.tolist())
            continue
        for value in values:
            if isinstance(value, Message):
                lines.append(f"{pad}{name} {{")
                _format_into(value, indent + 1, lines)
                lines.append(f"{pad}}}")
            else:
                lines.append(f"{pad}{name}: {_format_scalar(value, field)}")
