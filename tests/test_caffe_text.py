"""Protobuf text format (.prototxt): what Caffe writes and what people hand-edit, and its errors."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import numpy as np
import pytest

from converters import CaffeFormatError, Ident, Message, read_prototxt, upgrade_net, write_prototxt
from converters.caffe.text import format_message, parse_text


def _layer(text: str) -> Message:
    return parse_text(text).get("layer")[0]


# ----------------------------------------------------------------------------------------------
# Syntax accepted


def test_fields_blocks_comments_and_separators() -> None:
    net = parse_text(
        """# a net
        name: "tiny"   # trailing comment
        layer {
          name: "conv" type: "Convolution"; bottom: "data", top: "conv"
          convolution_param: { num_output: 8 kernel_size: 3 }
          param < lr_mult: 1 >
          param { lr_mult: 2 decay_mult: 0 }
        }
        """
    )
    assert net.get("name") == "tiny"
    layer = net.get("layer")[0]
    assert (layer.get("name"), layer.get("type"), layer.get("bottom"), layer.get("top")) == (
        "conv", "Convolution", ["data"], ["conv"],
    )  # fmt: skip
    conv = layer.get("convolution_param")
    assert conv.get("num_output") == 8 and conv.get("kernel_size") == [3]
    assert [p.get("lr_mult") for p in layer.get("param")] == [1.0, 2.0]
    assert layer.get("param")[1].get("decay_mult") == 0.0
    assert layer.get("param")[0].get("decay_mult") == 1.0  # caffe.proto default


def test_repeated_fields_and_list_syntax() -> None:
    layer = _layer('layer { top: "a" top: "b" top: ["c", "d"] convolution_param { pad: [1, 2] pad: 3 } }')
    assert layer.get("top") == ["a", "b", "c", "d"]
    assert layer.get("convolution_param").get("pad") == [1, 2, 3]


@pytest.mark.parametrize(
    ("literal", "expected"),
    [
        (r'"plain"', "plain"),
        (r'"tab\tnewline\nquote\"backslash\\"', 'tab\tnewline\nquote"backslash\\'),
        (r"'single \'quoted\''", "single 'quoted'"),
        (r'"\x41\102\u00e9"', "ABé"),
        (r'"adjacent " "strings" ' + r"'concatenate'", "adjacent stringsconcatenate"),
        ('"utf-8 ü direct"', "utf-8 ü direct"),
    ],
)
def test_string_escapes_and_concatenation(literal: str, expected: str) -> None:
    assert parse_text(f"name: {literal}").get("name") == expected


@pytest.mark.parametrize(
    ("literal", "expected"),
    [
        ("1", 1.0), ("-2", -2.0), ("0.5", 0.5), (".25", 0.25), ("1e-3", 1e-3), ("2.5E+2", 250.0),
        ("-1.5e2", -150.0), ("3f", 3.0), ("1.0F", 1.0), ("inf", math.inf), ("-inf", -math.inf),
        ("Infinity", math.inf), ("-Infinity", -math.inf),
    ],
)  # fmt: skip
def test_float_literals(literal: str, expected: float) -> None:
    value = _layer(f"layer {{ param {{ lr_mult: {literal} }} }}").get("param")[0].get("lr_mult")
    assert value == float(np.float32(expected))  # lr_mult is a float field: float32 precision


def test_nan_and_float32_rounding() -> None:
    assert math.isnan(_layer("layer { param { lr_mult: nan } }").get("param")[0].get("lr_mult"))
    # float fields hold float32 values, as Caffe's parser stores them
    assert _layer("layer { param { lr_mult: 0.1 } }").get("param")[0].get("lr_mult") == float(np.float32(0.1))


@pytest.mark.parametrize(
    ("literal", "expected"),
    [("16", 16), ("0x10", 16), ("0X1f", 31), ("010", 8), ("0", 0)],
)
def test_integer_literals(literal: str, expected: int) -> None:
    assert _layer(f"layer {{ convolution_param {{ num_output: {literal} }} }}").get(
        "convolution_param"
    ).get("num_output") == expected


def test_negative_and_64_bit_integers() -> None:
    net = parse_text("layer { convolution_param { axis: -1 } } input_shape { dim: 9000000000 }")
    assert net.get("layer")[0].get("convolution_param").get("axis") == -1
    assert net.get("input_shape")[0].get("dim") == [9_000_000_000]


@pytest.mark.parametrize(
    ("literal", "expected"),
    [("true", True), ("True", True), ("t", True), ("1", True), ("false", False), ("False", False),
     ("f", False), ("0", False)],
)  # fmt: skip
def test_booleans(literal: str, expected: bool) -> None:
    assert parse_text(f"force_backward: {literal}").get("force_backward") is expected


def test_enums_by_name_and_number() -> None:
    layer = _layer("layer { include { phase: TEST } pooling_param { pool: 1 } }")
    assert layer.get("include")[0].get("phase") == "TEST"
    assert isinstance(layer.get("include")[0].get("phase"), Ident)
    assert layer.get("pooling_param").get("pool") == "AVE"  # PoolMethod AVE = 1 in caffe.proto


def test_unknown_fork_fields_are_kept() -> None:
    layer = _layer(
        'layer { name: "up" type: "Upsample" zoom_param { scale: 2 mode: BILINEAR label: "x" } '
        "bn_extra_param: { frozen: True eps: 1e-5 } }"
    )
    upsample = layer.get("zoom_param")
    assert upsample.type is None
    assert (upsample.get("scale"), upsample.get("mode"), upsample.get("label")) == (2, "BILINEAR", "x")
    extra = layer.get("bn_extra_param")
    assert extra.get("frozen") is True and extra.get("eps") == 1e-5
    again = parse_text(format_message(parse_text(format_message(Message("NetParameter", layer=[layer])))))
    assert again.get("layer")[0] == layer


# ----------------------------------------------------------------------------------------------
# Legacy nets


def test_legacy_input_dim_becomes_input_layer() -> None:
    net = parse_text(
        'input: "data" input_dim: 1 input_dim: 3 input_dim: 227 input_dim: 227\n'
        'layer { name: "relu" type: "ReLU" bottom: "data" top: "data" }'
    )
    assert net.get("input") == ["data"] and net.get("input_dim") == [1, 3, 227, 227]
    upgraded = upgrade_net(net)
    first = upgraded.get("layer")[0]
    assert first.get("type") == "Input" and first.get("top") == ["data"]
    assert first.get("input_param").get("shape")[0].get("dim") == [1, 3, 227, 227]
    assert [layer.get("name") for layer in upgraded.get("layer")][1:] == ["relu"]
    assert "input" not in upgraded and "input_dim" not in upgraded


def test_legacy_input_shape_becomes_input_layer() -> None:
    net = parse_text('input: "a" input_shape { dim: 1 dim: 3 dim: 8 dim: 8 } input: "b" '
                     "input_shape { dim: 2 }")
    first = upgrade_net(net).get("layer")[0]
    assert first.get("top") == ["a", "b"]
    assert [s.get("dim") for s in first.get("input_param").get("shape")] == [[1, 3, 8, 8], [2]]


def test_wrong_number_of_input_dims_is_an_error() -> None:
    with pytest.raises(CaffeFormatError, match="input_dim"):
        upgrade_net(parse_text('input: "data" input_dim: 1 input_dim: 3'))


def test_v1_layers_with_enum_types() -> None:
    net = parse_text(
        'layers { name: "c" type: CONVOLUTION bottom: "data" top: "c" blobs_lr: 1 blobs_lr: 2 '
        "weight_decay: 1 weight_decay: 0 convolution_param { num_output: 4 kernel_size: 3 } }\n"
        'layers { name: "fc" type: INNER_PRODUCT bottom: "c" top: "fc" }\n'
        'layers { name: "loss" type: 21 bottom: "fc" top: "loss" }'
    )
    types = [str(v1.get("type")) for v1 in net.get("layers")]
    assert types == ["CONVOLUTION", "INNER_PRODUCT", "SOFTMAX_LOSS"]  # 21 = SOFTMAX_LOSS
    upgraded = upgrade_net(net).get("layer")
    assert [layer.get("type") for layer in upgraded] == ["Convolution", "InnerProduct", "SoftmaxWithLoss"]
    params = upgraded[0].get("param")
    assert [(p.get("lr_mult"), p.get("decay_mult")) for p in params] == [(1.0, 1.0), (2.0, 0.0)]
    assert upgraded[0].get("convolution_param").get("num_output") == 4


def test_mixing_v1_and_v2_layers_is_refused() -> None:
    with pytest.raises(CaffeFormatError, match="mixes"):
        upgrade_net(parse_text('layer { name: "a" } layers { name: "b" }'))


# ----------------------------------------------------------------------------------------------
# Errors: file, line and column


@pytest.mark.parametrize(
    ("text", "line", "column", "words"),
    [
        ('name: "x"\nlayer {\n  name: "a"\n', 4, 1, "expected '}'"),
        ('layer {\n  name "a"\n}', 2, 8, "expected ':'"),
        ("layer {\n  convolution_param { num_output: 1.5 }\n}", 2, 35, "integer"),
        ("layer {\n  include { phase: TRIAN }\n}", 2, 20, "TRIAN"),
        ('name: "a"\nname: "b"', 2, 1, "more than once"),
        ('layer { name: "a" }\n  @', 2, 3, "unexpected character"),
        ('name: "unterminated\n', 1, 7, "unexpected character"),
        ("layer { convolution_param { num_output: 99999999999 } }", 1, 41, "out of range"),
        ("layer { convolution_param { num_output: -1 } }", 1, 41, "out of range"),
        ('name: "bad \\q escape"', 1, 12, "escape"),
        ("layer: 3", 1, 8, "needs '{"),
        ("name { }", 1, 6, "not a message"),
        ('layer { type: "A" } }', 1, 21, "field name"),
        ("force_backward: maybe", 1, 17, "true or false"),
        ("layer { param { lr_mult: - } }", 1, 28, "value"),
        ("name: [", 1, 7, "not repeated"),
        ("layer { top: [\"a\" \"b\"", 1, 22, "expected ','"),
    ],
)
def test_syntax_errors_name_file_line_and_column(
    tmp_path: Path, text: str, line: int, column: int, words: str
) -> None:
    path = tmp_path / "bad.prototxt"
    path.write_text(text)
    with pytest.raises(CaffeFormatError) as info:
        read_prototxt(path)
    error = info.value
    assert (error.line, error.column) == (line, column), str(error)
    assert words in str(error)
    assert str(path) in str(error) and f"line {line}, column {column}" in str(error)
    assert "\n" not in str(error)


def test_deep_nesting_is_an_error_not_a_crash() -> None:
    depth = 5000
    with pytest.raises(CaffeFormatError, match="nested"):
        parse_text("layer { " + "x { " * depth + "}" * (depth + 1))


def test_windows_files_with_bom_and_crlf(tmp_path: Path) -> None:
    path = tmp_path / "win.prototxt"
    path.write_bytes(b'\xef\xbb\xbfname: "w"\r\nlayer {\r\n\tname: "a"\r\n}\r\n')
    net = read_prototxt(path)
    assert net.get("name") == "w" and net.get("layer")[0].get("name") == "a"


def test_binary_and_empty_files_are_not_prototxts(tmp_path: Path) -> None:
    empty = tmp_path / "empty.prototxt"
    empty.write_bytes(b"")
    with pytest.raises(CaffeFormatError, match="empty"):
        read_prototxt(empty)
    binary = tmp_path / "model.prototxt"
    binary.write_bytes(b"\n\x03abc\x12\x00" + bytes(range(256)))
    with pytest.raises(CaffeFormatError, match="not a text prototxt"):
        read_prototxt(binary)
    with pytest.raises(CaffeFormatError, match="No such file"):
        read_prototxt(tmp_path / "missing.prototxt")


# ----------------------------------------------------------------------------------------------
# Writing and round trips


def test_writer_output_is_plain_caffe_style(tmp_path: Path) -> None:
    net = Message("NetParameter", name="n")
    net.add("layer", Message("LayerParameter", name="p", type="Pooling", top=["p"],
                             pooling_param=Message("PoolingParameter", pool=Ident("MAX"), kernel_size=2)))
    path = tmp_path / "out.prototxt"
    write_prototxt(net, path)
    assert path.read_text() == (
        'name: "n"\nlayer {\n  name: "p"\n  type: "Pooling"\n  top: "p"\n  pooling_param {\n'
        "    pool: MAX\n    kernel_size: 2\n  }\n}\n"
    )
    assert read_prototxt(path) == net


_FLOATS = [0.0, -0.0, 1.0, 0.1, -2.5e-8, 3.4028234663852886e38, 1.401298464324817e-45, math.inf,
           -math.inf]  # fmt: skip


def _random_string(rng: random.Random) -> str:
    alphabet = 'ab_/.-"\\\n\t \x01é€'
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 8)))


def _random_layer(rng: random.Random) -> Message:
    layer = Message("LayerParameter", name=_random_string(rng), type=rng.choice(["Convolution", "ReLU"]))
    layer.set("bottom", [_random_string(rng) for _ in range(rng.randint(0, 3))])
    conv = Message("ConvolutionParameter", num_output=rng.randint(0, 2**32 - 1))
    conv.set("pad", [rng.randint(0, 9) for _ in range(rng.randint(0, 3))])
    conv.set("axis", rng.randint(-(2**31), 2**31 - 1))
    conv.set("bias_term", rng.random() < 0.5)
    conv.set("engine", Ident(rng.choice(["DEFAULT", "CAFFE", "CUDNN"])))
    filler = Message("FillerParameter", std=float(np.float32(rng.choice(_FLOATS + [rng.uniform(-1e3, 1e3)]))))
    conv.set("weight_filler", filler)
    layer.set("convolution_param", conv)
    if rng.random() < 0.5:
        layer.set("include", [Message("NetStateRule", phase=Ident(rng.choice(["TRAIN", "TEST"])))])
    layer.set("loss_weight", [float(np.float32(rng.uniform(-5, 5))) for _ in range(rng.randint(0, 2))])
    return layer


def test_random_nets_survive_text_round_trip() -> None:
    rng = random.Random(20261125)
    for _ in range(150):
        net = Message("NetParameter", name=_random_string(rng))
        net.set("layer", [_random_layer(rng) for _ in range(rng.randint(0, 4))])
        net.set("input_dim", [rng.randint(-(2**31), 2**31 - 1) for _ in range(rng.randint(0, 4))])
        assert parse_text(format_message(net)) == net


# ----------------------------------------------------------------------------------------------
# Literals as real Caffe's parser reads them (tests/fixtures/text_format/literals.json, written by
# tools/make_text_format_fixtures.py with BVLC Caffe and libprotobuf's C++ TextFormat)

_LITERALS = json.loads((Path(__file__).parent / "fixtures" / "text_format" / "literals.json").read_text())
# Caffe takes these but makes a string that is not UTF-8 (lone surrogates, \777) or copies the
# escape through as text (past U+10FFFF); our string fields hold text, so we refuse them.
_REFUSED_ON_PURPOSE = {r"\U00110000"}


@pytest.mark.parametrize(
    "case", _LITERALS["cases"], ids=[f"{c['kind']}:{c['literal']}" for c in _LITERALS["cases"]]
)
def test_literals_are_read_as_caffe_reads_them(case: dict) -> None:
    kind, literal = case["kind"], case["literal"]
    text = {
        "int": f"input_dim: {literal}",
        "float": f"layer {{ loss_weight: {literal} }}",
        "string": f'layer {{ name: "{literal}" }}',
    }[kind]
    odd_string = case.get("value") == "not UTF-8" or literal in _REFUSED_ON_PURPOSE
    refused_on_purpose = kind == "string" and odd_string
    if not case["accepted"] or refused_on_purpose:
        with pytest.raises(CaffeFormatError):
            parse_text(text)
        return
    net = parse_text(text)
    if kind == "int":
        assert net.get("input_dim") == [case["value"]]
    elif kind == "float":
        (value,) = net.get("layer")[0].get("loss_weight")
        if literal == "nan":  # Caffe's Power layer turns a nan scale into 0: only acceptance is known
            assert math.isnan(value)
        else:
            assert value == float(case["value"])
    else:
        assert net.get("layer")[0].get("name").encode("utf-8").hex() == case["value"]
