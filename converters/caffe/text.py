"""Protobuf text format (``.prototxt``) for Caffe messages: a parser and a writer.

The parser accepts what Caffe writes and what people hand-edit: ``#`` comments, ``field: value``,
``field { }``, ``field: { }`` and ``field < >``, list values ``[a, b]``, quoted strings with C
escapes and adjacent-string concatenation, enums, ``true``/``false``/``True``/``False``, integers
in decimal, ``0x`` hex and ``0`` octal, exponent numbers, ``inf``/``nan``, optional ``;``/``,``
separators, with protobuf's rules (``09`` and ``010.5`` are errors, float fields take decimal
numbers only; a lone UTF-16 surrogate or an escape past U+10FFFF is an error). Tokenizing is linear
in the file's length. Fields the schema does not know (Caffe forks add many, and misspellings) are
kept as they are written, with their line and column in ``Message.positions``;
:func:`refuse_unknown_fields` refuses them where a net is built. Errors name the file, line and
column.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from typing import Any

import numpy as np

from ..errors import CaffeFormatError, NetError
from .fork_names import FORK_FIELD_NAMES
from .message import Ident, Message, unknown_named_fields
from .schema import ENUMS, MESSAGES, VARINT_TYPES, FieldSpec
from .traits import DATA_LAYER_TYPES

# Every alternative is unambiguous (no two quantifiers can split the same text), so a match costs
# time linear in its length and the tokenizer is linear in the file's length. A number token is
# the whole run of characters that can continue a number (an identifier glued to a number is one
# bad token, as in protobuf's tokenizer); its form is checked afterwards (see _number_form).
_TOKEN = re.compile(
    r"""
    (?P<space>[ \t\r\f\v]+|\#[^\n]*)
  | (?P<newline>\n)
  | (?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
  | (?P<number>(?:[0-9]|\.[0-9])[0-9A-Za-z_.]*(?:(?<=[eE])[+-][0-9A-Za-z_.]*)*)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)
  | (?P<punct>[{}<>:\[\],;\-])
    """,
    re.VERBOSE,
)
_DECIMAL = re.compile(r"0|[1-9][0-9]*")
_HEX = re.compile(r"0[xX][0-9a-fA-F]+")
_OCTAL = re.compile(r"0[0-7]+")
_FLOAT = re.compile(r"(?:(?:0|[1-9][0-9]*)(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?[fF]?")
_HEX_DIGITS = re.compile(r"[0-9a-fA-F]{1,2}")
_OCTAL_DIGITS = re.compile(r"[0-7]{1,3}")
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
            placeholder = re.match(r"\$\{?\w+\}?", text[pos:])
            hint = (
                f" (the template placeholder {placeholder.group(0)}: substitute it first, as the "
                "net's own run scripts do, e.g. DeepLab's)"
                if placeholder
                else ""
            )
            raise CaffeFormatError(
                f"unexpected character {text[pos]!r}{hint}", path, line=line, column=pos - line_start + 1
            )
        kind = m.lastgroup
        if kind == "number":
            _number_form(m.group(), path, line, pos - line_start + 1)
        if kind == "newline":
            line += 1
            line_start = m.end()
        elif kind != "space":
            tokens.append(_Token(kind, m.group(), line, pos - line_start + 1))  # type: ignore[arg-type]
        pos = m.end()
    tokens.append(_Token("eof", "", line, pos - line_start + 1))
    return tokens


def _number_form(text: str, path: Any, line: int, column: int) -> str:
    """``"decimal"``, ``"hex"``, ``"octal"`` or ``"float"``: the form of a number token, checked as
    protobuf's tokenizer checks it (``010`` is octal 8; ``09`` and ``010.5`` are errors)."""
    if _DECIMAL.fullmatch(text):
        return "decimal"
    if _HEX.fullmatch(text):
        return "hex"
    if _OCTAL.fullmatch(text):
        return "octal"
    if text[0] == "0" and len(text) > 1 and text[1] in "0123456789":
        reason = (
            "numbers starting with a leading zero must be in octal"
            if text.isdigit()
            else "hex and octal numbers must be integers"
        )
    elif _FLOAT.fullmatch(text):
        return "float"
    else:
        reason = "not a number (a space is needed between a number and a name)"
    shown = text if len(text) <= 40 else text[:37] + "..."
    raise CaffeFormatError(f"invalid number {shown!r}: {reason}", path, line=line, column=column)


def _unescape(quoted: str, token: _Token, path: Any) -> bytes:
    """The bytes of a quoted string token, C escapes decoded as protobuf's text parser does."""
    body = quoted[1:-1]
    if "\\" not in body:
        return _utf8(body, 0, token, path)
    out = bytearray()
    i, n = 0, len(body)

    def error(message: str, at: int) -> CaffeFormatError:
        # strings hold no newline, so the escape's column is the token's plus its offset
        return CaffeFormatError(message, path, line=token.line, column=token.column + 1 + at)

    while i < n:
        slash = body.find("\\", i)
        if slash < 0:
            out += _utf8(body[i:], i, token, path)
            break
        if slash > i:
            out += _utf8(body[i:slash], i, token, path)
        esc = body[slash + 1]  # the token's pattern puts a character after every backslash
        i = slash + 2
        if esc in _SIMPLE_ESCAPES:
            out.append(_SIMPLE_ESCAPES[esc])
        elif esc in "xX":
            digits = _HEX_DIGITS.match(body, i)
            if not digits:
                raise error("\\x escape without hex digits", slash)
            out.append(int(digits.group(), 16))
            i = digits.end()
        elif esc in "01234567":
            digits = _OCTAL_DIGITS.match(body, i - 1)
            assert digits is not None
            out.append(int(digits.group(), 8) & 0xFF)
            i = digits.end()
        elif esc in "uU":
            code, i = _code_point(body, slash, esc, error)
            out += chr(code).encode("utf-8")
        else:
            shown = esc if esc.isprintable() else f"U+{ord(esc):04X}"
            raise error(f"unknown escape '\\{shown}' in string", slash)
    return bytes(out)


def _code_point(body: str, slash: int, esc: str, error: Any) -> tuple[int, int]:
    """The character of a ``\\uXXXX`` / ``\\UXXXXXXXX`` escape at ``body[slash]`` (a UTF-16 pair of
    ``\\u`` escapes makes one character) and the position after it; lone surrogates and values
    past U+10FFFF are errors."""
    width = 4 if esc == "u" else 8
    digits = body[slash + 2 : slash + 2 + width]
    if len(digits) != width or not all(c in "0123456789abcdefABCDEF" for c in digits):
        raise error(f"\\{esc} escape needs {width} hex digits", slash)
    code, end = int(digits, 16), slash + 2 + width
    if 0xD800 <= code < 0xDC00:
        low = body[end : end + 6]
        if (
            len(low) == 6
            and low[:2] == "\\u"
            and all(c in "0123456789abcdefABCDEF" for c in low[2:])
            and 0xDC00 <= int(low[2:], 16) < 0xE000
        ):
            return 0x10000 + ((code - 0xD800) << 10) + (int(low[2:], 16) - 0xDC00), end + 6
    if 0xD800 <= code < 0xE000:
        raise error(f"\\{esc}{digits} is a lone UTF-16 surrogate, not a character", slash)
    if code > 0x10FFFF:
        raise error(f"\\{esc}{digits} is past U+10FFFF, the last Unicode character", slash)
    return code, end


def _utf8(text: str, at: int, token: _Token, path: Any) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:  # a lone surrogate in a str given to parse_text
        raise CaffeFormatError(
            "string holds a lone UTF-16 surrogate, not a character",
            path,
            line=token.line,
            column=token.column + 1 + at + exc.start,
        ) from None


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
            if token.text not in msg.positions:
                msg.positions[token.text] = (token.line, token.column)
            if not self.accept(";"):
                self.accept(",")

    def field(self, msg: Message, name: _Token, field: FieldSpec | None) -> None:
        has_colon = self.accept(":")
        token = self.peek()
        is_block = token.kind == "punct" and token.text in "{<"
        if (
            field is not None
            and field.is_message
            and not is_block
            and not (token.kind == "punct" and token.text == "[")
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
        form = _number_form(text.lstrip("-"), self.path, token.line, token.column)
        is_int = form != "float"
        if is_int and len(text) > 24:  # longer than any 64-bit integer in any base
            raise self.error(f"{text[:24]}... is out of range for a 64-bit integer", token)
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
            if form in ("hex", "octal"):  # as protobuf: "Expect a decimal number"
                raise self.error(f"field '{name.text}' takes a decimal number, got {text}", token)
            value = _parse_float(text)
            if type_name == "double":
                return value
            with np.errstate(over="ignore"):  # past float32's range: +-inf, as Caffe's parser gives
                return float(np.float32(value))
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
    """An integer token (decimal, ``0x`` hex or ``0`` octal, as protobuf reads them), maybe negative."""
    sign = -1 if text.startswith("-") else 1
    digits = text.lstrip("-")
    if digits[:2] in ("0x", "0X"):
        return sign * int(digits, 16)
    if len(digits) > 1 and digits.startswith("0"):
        return sign * int(digits, 8)
    return sign * int(digits)


def _parse_float(text: str) -> float:
    """A decimal number token (``1``, ``.5``, ``1e-3``, ``2.5f``) as a Python float."""
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
    if field is not None and field.type in VARINT_TYPES | {"bool"} or isinstance(value, (int, np.integer)):
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


def refuse_unknown_fields(layers: Iterable[Message]) -> None:
    """Raise :class:`NetError` naming the layer, the field and its line for the first field of
    ``layers`` that neither BVLC's caffe.proto nor a known fork's schema has (a misspelling, or a
    fork not covered), as Caffe refuses such a prototxt. Only fields read from text carry names;
    unknown fields of
    binary files (numbered) are left alone, since released caffemodels carry fork fields."""
    for layer in layers:
        unknown = unknown_named_fields(layer)
        is_data = str(layer.get("type")) in DATA_LAYER_TYPES and not layer.getall("bottom")
        unknown = [  # a data layer's and transform_param's fork fields cannot change the graph
            (path, where)
            for path, where in unknown
            if not (
                (is_data or path.startswith("transform_param.")) and path.split(".")[-1] in FORK_FIELD_NAMES
            )
        ]
        if not unknown:
            continue
        path, where = unknown[0]
        line, column = where if where is not None else (None, None)
        others = f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""
        from .forks import SCHEMAS_CONSULTED

        raise NetError(
            f"layer '{layer.get('name')}': field '{path}'{others} is in none of the {len(SCHEMAS_CONSULTED)} "
            f"Caffe schemas fcn-port knows ({', '.join(SCHEMAS_CONSULTED)}); fix the spelling or "
            "remove it",
            line=line,
            column=column,
        )
