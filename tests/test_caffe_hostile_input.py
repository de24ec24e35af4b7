"""Hostile and unusual input to the file readers: refused with one CaffeFormatError naming the file
and where, never a crash, a hang or a huge allocation (issue 9).

Golden sources: protobuf's text parser as Caffe uses it (checked with real Caffe, the C++ parser
of libprotobuf 3.21 in /work/oracle: ``input_dim: 010`` is 8, ``09`` and ``010.5`` are refused, a
float field refuses ``010`` and ``0x10``), caffe.proto (unknown fields) Caffe's ``Blob::Reshape``
checks (``kMaxBlobAxes`` = 32, no negative dimension, at most INT_MAX values) and the HDF5 file
format's datatype message.
"""

from __future__ import annotations

import gc
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest

from converters import CaffeFormatError, Message, load_caffe, read_prototxt, read_weights, write_caffemodel
from converters.caffe.text import parse_text
from converters.errors import NetError

# ----------------------------------------------------------------------------------------------
# Text format: numbers


@pytest.mark.parametrize(("literal", "expected"), [("010", 8), ("0", 0), ("07", 7), ("0x1F", 31), ("00", 0)])
def test_integers_with_a_leading_zero_are_octal_as_in_protobuf(literal: str, expected: int) -> None:
    assert parse_text(f"input_dim: {literal}").get("input_dim") == [expected]
    assert parse_text(f"input_dim: -{literal}").get("input_dim") == [-expected]


@pytest.mark.parametrize(
    ("literal", "words"),
    [("09", "leading zero must be in octal"), ("0128", "leading zero must be in octal"),
     ("010.5", "must be integers"), ("00.5", "must be integers"), ("1e", "not a number"),
     ("12abc", "not a number"), ("1.5.3", "not a number")],
)  # fmt: skip
def test_malformed_numbers_are_refused_with_line_and_column(literal: str, words: str) -> None:
    with pytest.raises(CaffeFormatError) as info:
        parse_text(f'name: "n"\n  input_dim: {literal}')
    assert (info.value.line, info.value.column) == (2, 14)
    assert words in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("literal", ["010", "07", "00", "0x10"])
def test_float_fields_refuse_octal_and_hex_integers_as_protobuf_does(literal: str) -> None:
    with pytest.raises(CaffeFormatError, match="decimal number"):
        parse_text(f"layer {{ loss_weight: {literal} }}")


@pytest.mark.parametrize(("literal", "expected"), [("0", 0.0), ("0.5", 0.5), ("0e1", 0.0), ("5.", 5.0)])
def test_float_fields_take_decimal_numbers_starting_with_zero(literal: str, expected: float) -> None:
    assert parse_text(f"layer {{ loss_weight: {literal} }}").get("layer")[0].get("loss_weight") == [expected]


def test_integers_too_long_for_64_bits_are_refused_not_a_python_limit_error() -> None:
    for field in ("input_dim", "layer { fork_value"):
        closing = " }" if "{" in field else ""
        with pytest.raises(CaffeFormatError, match="out of range"):
            parse_text(f"{field}: {'9' * 5000}{closing}")


# ----------------------------------------------------------------------------------------------
# Text format: string escapes


@pytest.mark.parametrize(
    ("escape", "expected"),
    [(r"\ud83d\ude00", "\U0001f600"), (r"\U0001F600", "\U0001f600"), (r"\U0010FFFF", "\U0010ffff"),
     (r"\u00e9", "é"), (r"\uD7FF", "\ud7ff"), (r"\x4", "\x04")],
)  # fmt: skip
def test_unicode_escapes_and_surrogate_pairs_make_characters(escape: str, expected: str) -> None:
    assert parse_text(f'name: "a{escape}"').get("name") == "a" + expected


@pytest.mark.parametrize(
    ("escape", "words"),
    [(r"\ud800", "lone UTF-16 surrogate"), (r"\udc00", "lone UTF-16 surrogate"),
     (r"\ud800\u0041", "lone UTF-16 surrogate"), (r"\U0000D800", "lone UTF-16 surrogate"),
     (r"\U00110000", "past U+10FFFF"), (r"\UFFFFFFFF", "past U+10FFFF"), (r"\u12", "4 hex digits"),
     (r"\U1234567", "8 hex digits"), (r"\xg", "hex digits"), (r"\q", "unknown escape")],
)  # fmt: skip
def test_bad_string_escapes_are_refused_at_their_line_and_column(
    tmp_path: Path, escape: str, words: str
) -> None:
    path = tmp_path / "bad.prototxt"
    path.write_text(f'layer {{\n  name: "ab{escape}"\n}}\n')
    with pytest.raises(CaffeFormatError) as info:
        read_prototxt(path)
    assert (info.value.line, info.value.column) == (2, 12)  # the backslash
    assert words in str(info.value) and str(path) in str(info.value)


def test_a_lone_surrogate_in_a_python_string_is_refused_not_an_encode_error() -> None:
    with pytest.raises(CaffeFormatError, match="surrogate"):
        parse_text('name: "a\ud800b"')


# ----------------------------------------------------------------------------------------------
# Text format: linear time


def _tokenizer_time(text: str) -> float:
    """The best of five reads, with the garbage collector off (its full passes grow with the
    number of live objects and would make a linear reader look superlinear on a busy machine)."""
    best = float("inf")
    gc.collect()
    gc.disable()
    try:
        for _ in range(5):
            start = time.perf_counter()
            try:
                parse_text(text)
            except CaffeFormatError:
                pass
            best = min(best, time.perf_counter() - start)
    finally:
        gc.enable()
    return best


_PATHOLOGICAL = {
    "digits": ("name: ", "1", "x"),
    "digit-dots": ("name: ", "1.", ""),
    "exponents": ("name: ", "1e-1e-", ""),
    "zeros": ("input_dim: ", "0", ""),
    "hex-escapes": ('name: "', "\\x41", '"'),
    "unicode-escapes": ('name: "', "\\u00e9\\ud83d\\ude00", '"'),
    "unterminated-string": ('name: "', "a", ""),
    "unterminated-escapes": ("name: '", "\\'", ""),
    "dotted-names": ("", "a.", ""),
    "comment-lines": ("", "# x\n", ""),
    "many-fields": ("", "input_dim: 1 ", ""),
    "many-layers": ("", 'layer { name: "a" top: "b" } ', ""),
}


@pytest.mark.parametrize("case", sorted(_PATHOLOGICAL))
def test_pathological_prototxts_take_time_linear_in_their_size(case: str) -> None:
    # On 8x the text a linear reader takes 8x longer, a quadratic one 64x (the old tokenizer: over
    # 20 s for 20 KB of digits). Comparing 25 KB with 200 KB against a bound of 32x leaves room for
    # a noisy machine without timing absolute numbers.
    prefix, unit, suffix = _PATHOLOGICAL[case]
    small, large = (prefix + unit * (n // len(unit)) + suffix for n in (25_000, 200_000))
    t_small, t_large = _tokenizer_time(small), _tokenizer_time(large)
    assert t_large < max(32 * t_small, 0.05), (t_small, t_large)


# ----------------------------------------------------------------------------------------------
# Unknown and misspelled fields

_MISSPELLED = """name: "t"
input: "data" input_dim: 1 input_dim: 1 input_dim: 8 input_dim: 8
layer {
  name: "pool1" type: "Pooling" bottom: "data" top: "pool1"
  pooling_param {
    pool: MAX kernel_size: 2
    strde: 2
  }
}
"""


def test_misspelled_field_is_refused_with_layer_field_and_line(tmp_path: Path) -> None:
    path = tmp_path / "typo.prototxt"
    path.write_text(_MISSPELLED)
    net = read_prototxt(path)  # reading keeps it (inspect shows it)
    assert net.get("layer")[0].get("pooling_param").get("strde") == 2
    with pytest.raises(NetError) as info:
        load_caffe(path)
    text = str(info.value)
    assert "'pool1'" in text and "pooling_param.strde" in text and "line 7, column 5" in text
    assert str(path) in text and "\n" not in text
    assert "in none of the" in text and "BVLC caffe.proto (master)" in text and "SegNet" in text


def test_misspelled_field_in_a_v1_layer_is_refused_too(tmp_path: Path) -> None:
    path = tmp_path / "typo_v1.prototxt"
    path.write_text(
        'input: "data" input_dim: 1 input_dim: 1 input_dim: 8 input_dim: 8\n'
        'layers {\n  name: "pool1" type: POOLING bottom: "data" top: "pool1"\n'
        "  pooling_parm { pool: MAX kernel_size: 2 }\n}\n"
    )
    with pytest.raises(NetError, match=r"line 4, column 3: layer 'pool1': field 'pooling_parm'"):
        load_caffe(path)


def test_unknown_fields_of_layers_the_graph_does_not_build_are_not_refused(tmp_path: Path) -> None:
    path = tmp_path / "train_only.prototxt"
    path.write_text(
        _MISSPELLED.replace("strde: 2", "stride: 2")
        + 'layer { name: "aug" type: "ReLU" bottom: "data" top: "aug" include { phase: TRAIN } '
        "fork_param { zoom: 2 } }\n"
        + 'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "pool1" bottom: "data" top: "loss" '
        "loss_param { normalise: true } }\n"
    )
    net = load_caffe(path)
    assert net.caffe.layers == [("input", "Input"), ("pool1", "Pooling")]
    with pytest.raises(NetError, match="loss_param.normalise"):
        load_caffe(path, with_loss=True)


# ----------------------------------------------------------------------------------------------
# Binary weights: blob shapes numpy refuses though the count matches


def _caffemodel(tmp_path: Path, blob: Message, name: str = "w.caffemodel") -> Path:
    path = tmp_path / name
    layer = Message("LayerParameter", name="conv", blobs=[blob])
    write_caffemodel(Message("NetParameter", layer=[layer]), path)
    return path


@pytest.mark.parametrize(
    ("dims", "values", "words"),
    [([-2, -2], 4, "negative dimension"), ([-1, 4], 0, "negative dimension"),
     ([1] * 33, 1, "33 axes"), ([1] * 70, 1, "70 axes"), ([2**40, 0], 0, "more than 2^31 - 1"),
     ([0, 2**40], 0, "more than 2^31 - 1"), ([2**62] * 32, 0, "more than 2^31 - 1"),
     ([65536, 65536], 0, "more than 2^31 - 1"), ([2**63 - 1, 2**63 - 1, 0], 0, "more than 2^31 - 1")],
)  # fmt: skip
def test_blob_shapes_caffe_refuses_are_refused_naming_file_layer_and_blob(
    tmp_path: Path, dims: list[int], values: int, words: str
) -> None:
    blob = Message("BlobProto", shape=Message("BlobShape", dim=dims), data=np.ones(values, np.float32))
    path = _caffemodel(tmp_path, blob)
    with pytest.raises(CaffeFormatError) as info:
        read_weights(path)
    text = str(info.value)
    assert words in text and str(path) in text and "blob 0 of layer 'conv'" in text
    assert len(text) < 400 and "\n" not in text


def test_negative_legacy_dimensions_are_refused(tmp_path: Path) -> None:
    blob = Message("BlobProto", num=-1, channels=-1, height=2, width=2, data=np.ones(4, np.float32))
    with pytest.raises(CaffeFormatError, match="negative dimension"):
        read_weights(_caffemodel(tmp_path, blob))


@pytest.mark.parametrize(("dims", "shape"), [([1] * 32, (1,) * 32), ([0, 5], (0, 5)), ([3, 0, 7], (3, 0, 7))])
def test_blob_shapes_caffe_takes_are_read(tmp_path: Path, dims: list[int], shape: tuple[int, ...]) -> None:
    count = int(np.prod(shape))
    blob = Message("BlobProto", shape=Message("BlobShape", dim=dims), data=np.arange(count, dtype=np.float32))
    (array,) = read_weights(_caffemodel(tmp_path, blob))["conv"]
    assert array.shape == shape


def test_non_utf8_layer_names_in_a_caffemodel_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "bad_name.caffemodel"
    layer = b"\x0a\x02\xff\xfe"  # LayerParameter.name (field 1) = b"\xff\xfe"
    path.write_bytes(b"\xa2\x06" + bytes([len(layer)]) + layer)  # NetParameter.layer (field 100)
    with pytest.raises(CaffeFormatError, match="not valid UTF-8") as info:
        read_weights(path)
    assert str(path) in str(info.value)


# ----------------------------------------------------------------------------------------------
# HDF5 weights


def _h5(tmp_path: Path, build: Callable[[h5py.Group], None], name: str = "w.h5") -> Path:
    path = tmp_path / name
    with h5py.File(path, "w") as handle:
        build(handle.create_group("data").create_group("conv"))
    return path


def test_hdf5_dataset_larger_than_the_file_is_refused_before_reading(tmp_path: Path) -> None:
    path = _h5(tmp_path, lambda g: g.create_dataset("0", shape=(25000, 25000), dtype="f4"))
    assert path.stat().st_size < 10_000
    tracemalloc.start()
    try:
        with pytest.raises(CaffeFormatError, match="more than the .*-byte file can hold") as info:
            read_weights(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 50_000_000 and "/data/conv/0" in str(info.value) and str(path) in str(info.value)


def test_compressed_hdf5_datasets_within_deflate_ratio_are_read(tmp_path: Path) -> None:
    zeros = np.zeros((200, 200), np.float32)  # 160 KB that deflate packs into a few hundred bytes
    path = _h5(tmp_path, lambda g: g.create_dataset("0", data=zeros, compression="gzip"))
    assert path.stat().st_size < zeros.nbytes
    np.testing.assert_array_equal(read_weights(path)["conv"][0], zeros)


@pytest.mark.parametrize(
    ("build", "words"),
    [(lambda g: g.create_dataset("0", data=h5py.Empty("f4")), r"empty \(null\) dataspace"),
     (lambda g: g.create_dataset("0", shape=(2**31, 0), dtype="f4"), r"more than 2\^31 - 1"),
     (lambda g: g.create_dataset("0", data=np.zeros((1,) * 32, "f4")), None)],
    ids=["null-dataspace", "huge-by-zero", "32-axes"],
)  # fmt: skip
def test_hdf5_dataspaces_caffe_cannot_take_are_refused(
    tmp_path: Path, build: Callable[[h5py.Group], None], words: str | None
) -> None:
    path = _h5(tmp_path, build)
    if words is None:
        assert read_weights(path)["conv"][0].shape == (1,) * 32
        return
    with pytest.raises(CaffeFormatError, match=words) as info:
        read_weights(path)
    assert "/data/conv/0" in str(info.value)


def test_non_utf8_hdf5_layer_names_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "w.h5"
    with h5py.File(path, "w") as handle:
        handle.create_group(b"data/conv\xff").create_dataset("0", data=np.ones(3, "f4"))
    with pytest.raises(CaffeFormatError, match=r"layer group name b'conv\\xff' is not valid UTF-8"):
        read_weights(path)


def test_corrupt_hdf5_datatype_is_a_caffe_format_error_not_h5py_value_error(tmp_path: Path) -> None:
    path = _h5(tmp_path, lambda g: g.create_dataset("0", data=np.arange(6, dtype="f4")))
    raw = bytearray(path.read_bytes())
    # an IEEE float32 datatype message: precision 32, exponent at bit 23 (8 bits), mantissa at 0
    # (23 bits), exponent bias 127 (HDF5 file format, datatype message, floating-point class)
    properties = bytes.fromhex("2000170800177f000000")
    assert raw.count(properties) == 1
    raw[raw.index(properties) + 7] = 0x40  # exponent bias 127 + 2^14: no numpy type holds it
    path.write_bytes(bytes(raw))
    with pytest.raises(CaffeFormatError, match="/data/conv/0 cannot be read") as info:
        read_weights(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_a_fifo_is_refused_before_it_is_opened_not_waited_on(tmp_path: Path) -> None:
    """Opening a FIFO waits for a writer: every reader refuses one by what it is, in one line (run
    in a child process, so a regression fails by its timeout instead of hanging the suite)."""
    import os
    import subprocess
    import sys

    fifo = tmp_path / "net.prototxt"
    os.mkfifo(fifo)
    (tmp_path / "solver.prototxt").write_text(f'net: "{fifo}" lr_policy: "fixed"')
    code = (
        "import sys, converters\n"
        "for call in (converters.read_prototxt, converters.read_weights, converters.load_solver):\n"
        "    arg = sys.argv[2] if call is converters.load_solver else sys.argv[1]\n"
        "    try:\n        call(arg)\n    except ValueError as exc:\n        print(exc)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(fifo), str(tmp_path / "solver.prototxt")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 3, done.stdout + done.stderr
    assert all("is a FIFO, not a file" in line for line in lines), lines
