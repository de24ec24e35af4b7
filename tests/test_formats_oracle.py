"""The text parser against Google protobuf's own, with BVLC caffe.proto: the real-parser oracle.

``GOLDEN`` holds the binary serialisation Google protobuf 4.25.9 (Python, upb) produced after
``text_format.Parse`` of each text in ``CASES`` into the caffe.proto message compiled from the
brocolli-caffe 9.0.2 sdist (BVLC Caffe 1.0 with extra detection layers; the fields used here are
BVLC's). Our parser plus our binary writer must give the same bytes. ``REJECTED`` are texts
Google protobuf refuses; we must refuse them too, with a CaffeFormatError.

Two deliberate differences, not tested here: a field caffe.proto does not know is kept (Caffe
forks add many; protobuf refuses it), and Python protobuf keeps an unknown escape such as
``"\\q"`` as the two characters, while protobuf's C++ tokenizer (the one Caffe uses) reports
it as an error, as we do.

Regenerate, with an environment holding protobuf 4.25 and a compiled ``caffe_pb2`` (see
``../shared/caffe-oracle.md``)::

    PYTHONPATH=<caffe build>/include/caffe/proto <oracle venv>/bin/python tests/test_formats_oracle.py

which also cross-checks 3,660 random messages of every caffe.proto type (binary and text, both
directions) against Google protobuf; all came out byte-identical on 2026-11-25.
"""

# ruff: noqa: E501  (the cases and their golden bytes read best one per line)

from __future__ import annotations

import sys

CASES = [
    ("comments-and-blocks", "NetParameter", '# c\nname: "n" # trailing\nlayer { name: "a" type: "ReLU" bottom: "x" top: "x" }\n'),
    ("colon-before-brace", "NetParameter", 'layer: { name: "a" include: { phase: TRAIN } }'),
    ("angle-brackets", "NetParameter", 'layer < name: "a" param < lr_mult: 2 > >'),
    ("separators", "NetParameter", 'layer { name: "a"; type: "X", top: "t"; }'),
    ("list-values", "NetParameter", 'layer { top: ["a", "b"] convolution_param { pad: [1, 2, 3] kernel_size: [] } }'),
    ("string-escapes", "NetParameter", r'name: "q\"b\\t\tn\na\x41o\101\'"'),
    ("single-quotes", "NetParameter", r"name: 'it\'s'"),
    ("concatenation", "NetParameter", 'name: "a" \'b\' "c"'),
    ("unicode", "NetParameter", 'name: "naïve 漢字"'),
    ("ints", "NetParameter", 'layer { convolution_param { num_output: 0x1F axis: -3 group: 010 } } input_dim: -2147483648 input_dim: 2147483647'),
    ("int64-and-uint64", "NetParameter", 'input_shape { dim: 9223372036854775807 dim: -9223372036854775808 dim: 0 }'),
    ("uint32-max", "NetParameter", 'layer { convolution_param { num_output: 4294967295 } }'),
    ("floats", "NetParameter", 'layer { param { lr_mult: 1e-3 decay_mult: -2.5E+2 } param { lr_mult: .5 decay_mult: 3 } loss_weight: 1.0f loss_weight: 0.1 loss_weight: 16777217 }'),
    ("float-words", "NetParameter", 'layer { loss_weight: inf loss_weight: -inf loss_weight: Infinity loss_weight: -infinity loss_weight: nan }'),
    ("float32-rounding", "NetParameter", 'layer { loss_weight: 3.4028235e38 loss_weight: 1e-45 loss_weight: 0.30000001192092896 loss_weight: 2.7182818284590452353602874713527 }'),
    ("bools", "NetParameter", 'force_backward: True debug_info: t layer { convolution_param { bias_term: False } propagate_down: true propagate_down: f propagate_down: 1 propagate_down: 0 }'),
    ("enums", "NetParameter", 'layer { include { phase: TEST } pooling_param { pool: AVE engine: CUDNN } } state { phase: 0 }'),
    ("enum-by-number", "NetParameter", 'layer { pooling_param { pool: 2 } eltwise_param { operation: 0 } }'),
    ("v1-layers", "NetParameter", 'layers { name: "c" type: CONVOLUTION blobs_lr: 1 blobs_lr: 2 weight_decay: 1 weight_decay: 0 } layers { name: "l" type: 21 }'),
    ("legacy-inputs", "NetParameter", 'input: "data" input_dim: 1 input_dim: 3 input_dim: 227 input_dim: 227'),
    ("input-shape", "NetParameter", 'input: "a" input_shape { dim: 1 dim: 2 } input: "b" input_shape { dim: 3 }'),
    ("nested-order", "NetParameter", 'layer { top: "t" name: "n" blobs { shape { dim: 2 } data: 1 data: 2 } type: "T" bottom: "b" }'),
    ("blob-legacy-and-double", "BlobProto", 'num: 1 channels: 1 height: 1 width: 2 double_data: 0.1 double_data: -1e300 diff: 0.5'),
    ("solver", "SolverParameter", 'net: "train.prototxt" base_lr: 1e-10 lr_policy: "fixed" momentum: 0.99 max_iter: 100000 solver_mode: GPU random_seed: -1 test_iter: 736 test_interval: 999999999 type: "SGD" weight_decay: 0.0005 test_initialization: false'),
    ("datum-bytes", "Datum", r'data: "\000\001\377abc" channels: 3 float_data: 1.5 encoded: true'),
    ("crlf-tabs", "NetParameter", 'name:\t"a"\r\nlayer {\r\n\tname: "b"\r\n}\r\n'),
    ("empty", "NetParameter", ''),
    ("only-comments", "NetParameter", '# nothing\n   # here\n'),
]

REJECTED = [
    ("unterminated-block", "NetParameter", 'layer { name: "a"'),
    ("missing-colon", "NetParameter", 'name "a"'),
    ("duplicate-singular", "NetParameter", 'name: "a" name: "b"'),
    ("unknown-enum", "NetParameter", 'layer { include { phase: TRIAN } }'),
    ("enum-number-out-of-range", "NetParameter", 'layer { include { phase: 7 } }'),
    ("float-for-int", "NetParameter", 'layer { convolution_param { num_output: 1.5 } }'),
    ("negative-uint", "NetParameter", 'layer { convolution_param { num_output: -1 } }'),
    ("int32-overflow", "NetParameter", 'input_dim: 2147483648'),
    ("uint32-overflow", "NetParameter", 'layer { convolution_param { num_output: 4294967296 } }'),
    ("string-for-int", "NetParameter", 'input_dim: "3"'),
    ("int-for-string", "NetParameter", 'name: 3'),
    ("scalar-for-message", "NetParameter", 'layer: 3'),
    ("message-for-scalar", "NetParameter", 'name { }'),
    ("bad-bool", "NetParameter", 'force_backward: yes'),
    ("unterminated-string", "NetParameter", 'name: "abc'),
    ("stray-close", "NetParameter", 'layer { } }'),
    ("list-for-singular", "NetParameter", 'name: ["a"]'),
    ("singular-message-twice", "NetParameter", 'layer { convolution_param { num_output: 1 } convolution_param { pad: 2 } }'),
]

GOLDEN: dict[str, str] = {
    "comments-and-blocks": "0a016ea2060f0a0161120452654c551a0178220178",
    "colon-before-brace": "a206070a016142020800",
    "angle-brackets": "a2060a0a016132051d00000040",
    "separators": "a206090a0161120158220174",
    "list-values": "a2060f220161220162d20606180118021803",
    "string-escapes": "0a0d7122625c74096e0a61416f4127",
    "single-quotes": "0a0469742773",
    "concatenation": "0a03616263",
    "unicode": "0a0d6e61c3af766520e6bca2e5ad97",
    "ints": "2080808080f8ffffffff0120ffffffff07a20613d20610081f28088001fdffffffffffffffff01",
    "int64-and-uint64": "42160a14ffffffffffffffff7f8080808080808080800100",
    "uint32-max": "a20609d2060608ffffffff0f",
    "floats": "a206272d0000803f2dcdcccc3d2d0000804b320a1d6f12833a2500007ac3320a1d0000003f2500004040",
    "float-words": "a206192d0000807f2d000080ff2d0000807f2d000080ff2d0000c07f",
    "float32-rounding": "a206142dffff7f7f2d010000002d9a99993e2d54f82d40",
    "bools": "28013801a2060d5801580058015800d206021000",
    "enums": "32020800a2060b42020801ca070408015802",
    "enum-by-number": "a2060af206020800ca07020802",
    "v1-layers": "121922016328043d0000803f3d00000040450000803f4500000000120522016c2815",
    "legacy-inputs": "1a04646174612001200320e30120e301",
    "input-shape": "1a01611a016242040a02010242030a0103",
    "nested-order": "a2061d0a016e1201541a01622201743a0f2a080000803f000000403a030a0102",
    "blob-legacy-and-double": "080110011801200232040000003f42109a9999999999b93f9c7500883ce437fe",
    "solver": "18e00520ff93ebdc032dffe6db2e38a08d06420566697865645da4707d3f656f12033a880101a001ffffffffffffffffff01c2010e747261696e2e70726f746f747874800200c20203534744",
    "datum-bytes": "080322060001ff616263350000c03f3801",
    "crlf-tabs": "0a0161a206030a0162",
    "empty": "",
    "only-comments": "",
}


def _regenerate() -> None:
    """Print GOLDEN and check REJECTED with Google protobuf (needs caffe_pb2 on the path)."""
    import caffe_pb2  # type: ignore[import-not-found]
    from google.protobuf import text_format  # type: ignore[import-not-found]

    print("GOLDEN = {")
    for ident, type_name, text in CASES:
        message = getattr(caffe_pb2, type_name)()
        text_format.Parse(text, message)
        print(f'    "{ident}": "{message.SerializeToString().hex()}",')
    print("}")
    for ident, type_name, text in REJECTED:
        try:
            text_format.Parse(text, getattr(caffe_pb2, type_name)())
            print(f"# NOT rejected by protobuf: {ident}")
        except text_format.ParseError as exc:
            print(f"# rejected {ident}: {exc}")


def _cross_check_random(per_type: int = 60) -> None:
    """Random messages of every type (tests/test_formats_roundtrip.py's generator): our binary
    bytes, re-serialised by Google protobuf, must come back identical; our text must parse in
    Google protobuf to the same bytes; Google's text must parse in ours to the same bytes."""
    import random
    from pathlib import Path

    import caffe_pb2  # type: ignore[import-not-found]
    import numpy as np
    from google.protobuf import text_format  # type: ignore[import-not-found]

    here = Path(__file__).resolve().parent
    sys.path[:0] = [str(here.parent), str(here)]
    from test_formats_roundtrip import random_message  # type: ignore[import-not-found]

    from converters import Message
    from converters.binary import decode_message, encode_message
    from converters.schema import MESSAGES
    from converters.text import format_message, parse_text

    def known_to_google(type_name: str, name: str) -> bool:
        cls = getattr(caffe_pb2, type_name, None)
        field = cls.DESCRIPTOR.fields_by_name.get(name) if cls is not None else None
        return field is not None and field.number == MESSAGES[type_name].by_name[name].number

    def prune(msg: Message) -> Message:  # drop fields this caffe.proto lacks (it predates a few)
        for name, values in list(msg.fields()):
            if not known_to_google(msg.type, name):
                msg.remove(name)
            elif not isinstance(values, np.ndarray):
                for value in values:
                    if isinstance(value, Message):
                        prune(value)
        return msg

    rng = random.Random(2026)
    checked = 0
    for type_name in MESSAGES:
        cls = getattr(caffe_pb2, type_name, None)
        if cls is None:
            continue
        for _ in range(per_type):
            ours = encode_message(prune(random_message(type_name, rng)))
            google = cls()
            google.ParseFromString(ours)
            assert google.SerializeToString() == ours, type_name
            again = cls()
            text_format.Parse(format_message(decode_message(ours, type_name)), again)
            assert again.SerializeToString() == ours, type_name
            assert encode_message(parse_text(text_format.MessageToString(google), type_name)) == ours
            checked += 1
    print(f"# cross-checked {checked} random messages with Google protobuf: all identical")


if __name__ == "__main__":
    _regenerate()
    _cross_check_random()
    sys.exit(0)

import pytest  # noqa: E402

from converters import CaffeFormatError  # noqa: E402
from converters.binary import encode_message  # noqa: E402
from converters.text import parse_text  # noqa: E402


def test_every_case_has_a_golden_serialisation() -> None:
    assert sorted(GOLDEN) == sorted(ident for ident, _, _ in CASES)


@pytest.mark.parametrize(("ident", "type_name", "text"), CASES, ids=[case[0] for case in CASES])
def test_parse_gives_the_bytes_google_protobuf_gives(ident: str, type_name: str, text: str) -> None:
    assert encode_message(parse_text(text, type_name)).hex() == GOLDEN[ident]


@pytest.mark.parametrize(("ident", "type_name", "text"), REJECTED, ids=[case[0] for case in REJECTED])
def test_texts_google_protobuf_refuses_are_refused(ident: str, type_name: str, text: str) -> None:
    with pytest.raises(CaffeFormatError) as info:
        parse_text(text, type_name, path="case.prototxt")
    assert info.value.line == 1 and info.value.column is not None
