"""Binary .caffemodel (protobuf wire format): hand-made files, writers, bad input.

The files here are assembled byte by byte with the small encoder below (field numbers from BVLC
caffe.proto), independently of converters.caffe.binary.
"""

from __future__ import annotations

import random
import struct
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from converters import (
    CaffeFormatError,
    layer_type,
    read_net,
    read_prototxt,
    read_weights,
    sniff_format,
    upgrade_net,
    write_caffemodel,
    write_weights,
)
from converters.caffe.binary import decode_message, encode_message

# ----------------------------------------------------------------------------------------------
# A minimal independent protobuf encoder for the tests

VARINT, FIXED64, LENGTH, START_GROUP, END_GROUP, FIXED32 = 0, 1, 2, 3, 4, 5


def varint(value: int) -> bytes:
    value &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def key(number: int, wire: int) -> bytes:
    return varint(number << 3 | wire)


def ld(number: int, payload: bytes) -> bytes:
    """A length-delimited field."""
    return key(number, LENGTH) + varint(len(payload)) + payload


def vi(number: int, value: int) -> bytes:
    return key(number, VARINT) + varint(value)


def text(number: int, value: str) -> bytes:
    return ld(number, value.encode())


def packed_floats(number: int, values: list[float]) -> bytes:
    return ld(number, struct.pack(f"<{len(values)}f", *values))


def unpacked_floats(number: int, values: list[float]) -> bytes:
    return b"".join(key(number, FIXED32) + struct.pack("<f", v) for v in values)


# caffe.proto numbers
NET_NAME, NET_LAYERS_V1, NET_LAYER = 1, 2, 100
LAYER_NAME, LAYER_TYPE, LAYER_BOTTOM, LAYER_TOP, LAYER_BLOBS = 1, 2, 3, 4, 7
V1_BOTTOM, V1_TOP, V1_NAME, V1_TYPE, V1_BLOBS = 2, 3, 4, 5, 6
BLOB_NUM, BLOB_CHANNELS, BLOB_HEIGHT, BLOB_WIDTH = 1, 2, 3, 4
BLOB_DATA, BLOB_DIFF, BLOB_SHAPE, BLOB_DOUBLE_DATA = 5, 6, 7, 8
SHAPE_DIM = 1


def blob_with_shape(dims: list[int], body: bytes) -> bytes:
    return ld(BLOB_SHAPE, ld(SHAPE_DIM, b"".join(varint(d) for d in dims))) + body


def v2_layer(name: str, type_name: str, *blobs: bytes, extra: bytes = b"") -> bytes:
    body = text(LAYER_NAME, name) + text(LAYER_TYPE, type_name) + extra
    body += b"".join(ld(LAYER_BLOBS, blob) for blob in blobs)
    return ld(NET_LAYER, body)


def write(tmp_path: Path, data: bytes, name: str = "model.caffemodel") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


# ----------------------------------------------------------------------------------------------
# Reading hand-made files


def test_v2_blobs_packed_unpacked_and_double(tmp_path: Path) -> None:
    w = [0.5, -1.25, 3.0, 1e-7, -0.0, 7.5]
    data = text(NET_NAME, "hand") + v2_layer(
        "conv",
        "Convolution",
        blob_with_shape([2, 3, 1, 1], packed_floats(BLOB_DATA, w)),
        blob_with_shape([2], unpacked_floats(BLOB_DATA, [0.25, -2.0])),
    ) + v2_layer("relu", "ReLU") + v2_layer(
        "ip", "InnerProduct", blob_with_shape([3], ld(BLOB_DOUBLE_DATA, struct.pack("<3d", 0.1, 2.0, -1e300)))
    )
    weights = read_weights(write(tmp_path, data))
    assert list(weights) == ["conv", "ip"]
    conv_w, conv_b = weights["conv"]
    assert conv_w.shape == (2, 3, 1, 1) and conv_w.dtype == np.float32
    assert conv_w.reshape(-1).tolist() == [float(np.float32(v)) for v in w]
    assert conv_b.tolist() == [0.25, -2.0]
    (ip,) = weights["ip"]
    assert ip.dtype == np.float32
    assert ip.tolist() == [float(np.float32(0.1)), 2.0, float("-inf")]  # double -> float32 overflows


def test_blob_without_any_shape_is_a_0d_scalar_as_in_caffe(tmp_path: Path) -> None:
    # Caffe writes a 0-d parameter (channel-shared PReLU slope, scalar Scale) with no shape at all
    path = write(tmp_path, v2_layer("prelu", "PReLU", packed_floats(BLOB_DATA, [0.25])))
    (slope,) = read_weights(path)["prelu"]
    assert slope.shape == () and float(slope) == 0.25
    write_weights({"prelu": [slope]}, tmp_path / "again.caffemodel")
    again = (tmp_path / "again.caffemodel").read_bytes()
    expected = ld(LAYER_BLOBS, packed_floats(BLOB_DATA, [0.25]))  # no shape field, as Caffe writes it
    assert again == ld(NET_LAYER, text(LAYER_NAME, "prelu") + expected)
    three = v2_layer("x", "Scale", packed_floats(BLOB_DATA, [1, 2, 3]))
    several = write(tmp_path, three, "several.caffemodel")
    with pytest.raises(CaffeFormatError, match=r"shape \[\] \(1 values\) but holds 3"):
        read_weights(several)  # Caffe's FromProto refuses this too (count 1 != 3)


def test_double_data_wins_over_data_as_in_caffe(tmp_path: Path) -> None:
    body = packed_floats(BLOB_DATA, [1, 2]) + ld(BLOB_DOUBLE_DATA, struct.pack("<2d", 3.5, 4.5))
    path = write(tmp_path, v2_layer("x", "Scale", blob_with_shape([2], body)))
    assert read_weights(path)["x"][0].tolist() == [3.5, 4.5]  # Blob::FromProto prefers double_data


def test_packed_and_unpacked_runs_of_one_field_concatenate(tmp_path: Path) -> None:
    body = packed_floats(BLOB_DATA, [1, 2]) + unpacked_floats(BLOB_DATA, [3]) + packed_floats(BLOB_DATA, [4])
    weights = read_weights(write(tmp_path, v2_layer("x", "Scale", blob_with_shape([4], body))))
    assert weights["x"][0].tolist() == [1, 2, 3, 4]


def test_interleaved_unpacked_fields_decode_in_linear_time(tmp_path: Path) -> None:
    n = 20_000  # data (5) and diff (6) elements alternating: each run is one element long
    body = b"".join(
        key(BLOB_DATA, FIXED32) + struct.pack("<f", i) + key(BLOB_DIFF, FIXED32) + struct.pack("<f", -i)
        for i in range(n)
    )
    body = ld(BLOB_SHAPE, ld(SHAPE_DIM, varint(n))) + body
    path = write(tmp_path, ld(NET_LAYER, text(LAYER_NAME, "x") + ld(LAYER_BLOBS, body)))
    start = time.perf_counter()
    net = read_net(path)
    assert time.perf_counter() - start < 8.0  # a rescan per run would take minutes
    blob = net.get("layer")[0].get("blobs")[0]
    assert np.array_equal(blob.get("data"), np.arange(n, dtype=np.float32))
    assert np.array_equal(blob.get("diff"), -np.arange(n, dtype=np.float32))
    assert read_weights(path)["x"][0].shape == (n,)


def test_v1_layers_enum_types_and_legacy_dims(tmp_path: Path) -> None:
    legacy = vi(BLOB_NUM, 1) + vi(BLOB_CHANNELS, 1) + vi(BLOB_HEIGHT, 2) + vi(BLOB_WIDTH, 3)
    layer = (
        text(V1_BOTTOM, "data") + text(V1_TOP, "ip") + text(V1_NAME, "ip") + vi(V1_TYPE, 14)
        + ld(V1_BLOBS, legacy + packed_floats(BLOB_DATA, [1, 2, 3, 4, 5, 6]))
        + ld(V1_BLOBS, vi(BLOB_NUM, 1) + vi(BLOB_CHANNELS, 1) + vi(BLOB_HEIGHT, 1) + vi(BLOB_WIDTH, 2)
             + packed_floats(BLOB_DATA, [7, 8]))
    )  # fmt: skip
    relu = ld(NET_LAYERS_V1, vi(V1_TYPE, 18))
    path = write(tmp_path, text(NET_NAME, "old") + ld(NET_LAYERS_V1, layer) + relu)
    weights = read_weights(path)
    assert [b.shape for b in weights["ip"]] == [(1, 1, 2, 3), (1, 1, 1, 2)]  # legacy 4-D, as stored
    assert weights["ip"][0].reshape(-1).tolist() == [1, 2, 3, 4, 5, 6]
    net = read_net(path)
    v1 = net.get("layers")
    assert [str(layer.get("type")) for layer in v1] == ["INNER_PRODUCT", "RELU"]
    assert [layer_type(layer) for layer in v1] == ["InnerProduct", "ReLU"]
    assert v1[0].get("name") == "ip" and v1[0].get("bottom") == ["data"]
    assert [layer.get("type") for layer in upgrade_net(net).get("layer")] == ["InnerProduct", "ReLU"]


def test_legacy_dims_win_over_blob_shape_as_in_caffe(tmp_path: Path) -> None:
    legacy = vi(BLOB_NUM, 2) + vi(BLOB_CHANNELS, 3) + vi(BLOB_HEIGHT, 1) + vi(BLOB_WIDTH, 1)
    blob = blob_with_shape([6], legacy + packed_floats(BLOB_DATA, [0] * 6))
    assert read_weights(write(tmp_path, v2_layer("a", "B", blob)))["a"][0].shape == (2, 3, 1, 1)


def test_unknown_fields_of_every_wire_type_are_skipped_and_kept(tmp_path: Path) -> None:
    group = key(901, START_GROUP) + vi(1, 5) + key(2, START_GROUP) + key(2, END_GROUP) + key(901, END_GROUP)
    unknowns = (
        vi(900, 2**63 + 5) + group + key(902, FIXED64) + b"\x01" * 8 + ld(903, b"\xff\x00anything")
        + key(904, FIXED32) + b"\x00\x00\x80\x3f"
    )  # fmt: skip
    blob = packed_floats(BLOB_DATA, [1, 2]) + ld(BLOB_SHAPE, ld(SHAPE_DIM, varint(2))) + vi(77, 1)
    layer_body = text(LAYER_NAME, "conv") + text(LAYER_TYPE, "Convolution")
    # field 147 is swish_param (a message) in BVLC; a fork writes it as a varint: kept as unknown
    layer_body += ld(LAYER_BLOBS, blob) + vi(147, 1) + unknowns + ld(10001, b"fork")
    data = text(NET_NAME, "n") + ld(NET_LAYER, layer_body) + unknowns
    path = write(tmp_path, data)
    assert read_weights(path)["conv"][0].tolist() == [1, 2]
    net = read_net(path)
    in_order = [(900, 0), (901, 3), (902, 1), (903, 2), (904, 5)]
    assert [(n, w) for n, w, _ in net.unknown] == in_order
    layer = net.get("layer")[0]
    assert [(n, w) for n, w, _ in layer.unknown] == [(147, 0), *in_order, (10001, 2)]
    assert "swish_param" not in layer
    assert layer.get("blobs")[0].unknown[0][:2] == (77, 0)
    assert encode_message(net) == data  # every field already in number order: byte-exact


def test_fields_in_any_order_last_scalar_wins_messages_merge(tmp_path: Path) -> None:
    conv1 = ld(106, vi(1, 8) + vi(4, 3))  # convolution_param: num_output 8, kernel_size 3
    conv2 = ld(106, vi(3, 1) + vi(4, 5))  # a second occurrence: pad 1, kernel_size 5 (repeated)
    body = ld(LAYER_BLOBS, blob_with_shape([1], packed_floats(BLOB_DATA, [9]))) + text(LAYER_NAME, "first")
    body += conv1 + text(LAYER_TYPE, "Convolution") + text(LAYER_NAME, "second") + conv2
    layer = read_net(write(tmp_path, ld(NET_LAYER, body))).get("layer")[0]
    assert layer.get("name") == "second"
    conv = layer.get("convolution_param")
    assert conv.get("num_output") == 8 and conv.get("pad") == [1] and conv.get("kernel_size") == [3, 5]


def test_format_is_recognised_by_content_not_extension(tmp_path: Path) -> None:
    layer = v2_layer("a", "B", blob_with_shape([1], packed_floats(BLOB_DATA, [1])))
    binary = write(tmp_path, text(NET_NAME, "n") + layer, "weights.prototxt")
    prototxt = write(tmp_path, b'name: "n"\nlayer { name: "a" type: "B" }\n', "net.caffemodel")
    assert sniff_format(binary) == "binary" and sniff_format(prototxt) == "text"
    assert read_weights(binary)["a"][0].tolist() == [1.0]
    assert read_net(prototxt).get("layer")[0].get("name") == "a"
    assert read_prototxt(prototxt).get("name") == "n"
    with pytest.raises(CaffeFormatError, match="holds no weights"):
        read_weights(prototxt)


# ----------------------------------------------------------------------------------------------
# Writers and round trips


def test_write_weights_round_trip_and_wire_layout(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    weights = {
        "conv": [rng.standard_normal((4, 3, 2, 2), dtype=np.float32), np.arange(4, dtype=np.float32)],
        "fc": [rng.standard_normal((5, 7), dtype=np.float32)],
        "scalar": [np.float32([2.5])],
    }
    path = tmp_path / "w.caffemodel"
    write_weights(weights, path)
    back = read_weights(path)
    assert list(back) == list(weights)
    for name, blobs in weights.items():
        for a, b in zip(blobs, back[name], strict=True):
            assert a.shape == b.shape and np.array_equal(a, b)
    # Caffe's own layout, fields in number order: layer (100) { name (1), blobs (7) { data (5,
    # packed), shape (7) { dim (1, packed) } } }
    expected = b"".join(
        ld(NET_LAYER, text(LAYER_NAME, name) + b"".join(
            ld(LAYER_BLOBS, packed_floats(BLOB_DATA, blob.reshape(-1).tolist())
               + ld(BLOB_SHAPE, ld(SHAPE_DIM, b"".join(varint(d) for d in blob.shape))))
            for blob in blobs))
        for name, blobs in weights.items()
    )  # fmt: skip
    assert path.read_bytes() == expected


def _random_blob(rng: np.random.Generator) -> np.ndarray:
    ndim = int(rng.integers(0, 5))
    shape = tuple(int(d) for d in rng.integers(0, 5, size=ndim))
    values = rng.standard_normal(shape).astype(np.float32)
    special = np.array([np.inf, -np.inf, np.nan, -0.0, 1e-45, 3.4e38], dtype=np.float32)
    if values.size:
        flat = values.reshape(-1)
        flat[: min(flat.size, 3)] = rng.choice(special, size=min(flat.size, 3))
    return values


def test_random_weights_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(20261125)
    for trial in range(60):
        weights = {f"layer{i}/x": [_random_blob(rng) for _ in range(int(rng.integers(1, 4)))]
                   for i in range(int(rng.integers(1, 5)))}  # fmt: skip
        path = tmp_path / f"r{trial}.caffemodel"
        write_weights(weights, path)
        back = read_weights(path)
        assert list(back) == list(weights)
        for name, blobs in weights.items():
            for a, b in zip(blobs, back[name], strict=True):
                assert a.shape == b.shape and np.array_equal(a, b, equal_nan=True), name
        net = read_net(path)
        assert decode_message(encode_message(net)) == net


def test_write_caffemodel_of_a_full_net_and_no_partial_file(tmp_path: Path) -> None:
    source = (
        b'name: "n" input: "data" input_dim: [1, 3, 4, 4]\n'
        b'layer { name: "c" type: "Convolution" bottom: "data" top: "c"\n'
        b'  convolution_param { num_output: 2 kernel_size: 3 weight_filler { type: "xavier" } }\n'
        b"  param { lr_mult: 1 } param { lr_mult: 2 decay_mult: 0 } }\n"
    )
    net = read_prototxt(write(tmp_path, source, "n.prototxt"))
    path = tmp_path / "n.caffemodel"
    write_caffemodel(net, path)
    assert read_net(path) == net
    # a fork field with no binary encoding cannot be written: an error, and no file at all
    forked = read_prototxt(write(tmp_path, b'layer { name: "u" zoom_x_param { scale: 2 } }', "f.prototxt"))
    target = tmp_path / "forked.caffemodel"
    with pytest.raises(ValueError, match="zoom_x_param"):
        write_caffemodel(forked, target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.prototxt", "n.caffemodel", "n.prototxt"]


# ----------------------------------------------------------------------------------------------
# Bad input: one clear CaffeFormatError naming the file, fast, without big allocations


def _small_model_chunks() -> list[bytes]:
    return [
        text(NET_NAME, "small"),
        v2_layer("conv", "Convolution", blob_with_shape([2, 2], packed_floats(BLOB_DATA, [1, 2, 3, 4])),
                 blob_with_shape([2], unpacked_floats(BLOB_DATA, [5, 6]))),
        v2_layer("relu", "ReLU", extra=text(LAYER_BOTTOM, "conv") + text(LAYER_TOP, "conv")),
        v2_layer("fc", "InnerProduct", blob_with_shape([1], ld(BLOB_DOUBLE_DATA, struct.pack("<d", 0.5)))),
    ]  # fmt: skip


def test_truncated_at_every_offset(tmp_path: Path) -> None:
    chunks = _small_model_chunks()
    data = b"".join(chunks)
    boundaries = {sum(len(c) for c in chunks[:i]) for i in range(len(chunks) + 1)}
    path = tmp_path / "cut.caffemodel"
    for cut in range(len(data)):
        path.write_bytes(data[:cut])
        if cut in boundaries:  # a prefix of whole top-level fields is a valid, shorter net
            if cut:
                read_weights(path)
            continue
        with pytest.raises(CaffeFormatError) as info:
            read_weights(path)
        assert str(path) in str(info.value), cut
        if cut >= 2:  # a lone b"\n" (the first key byte) is also an empty prototxt
            assert info.value.offset is not None and 0 <= info.value.offset <= cut, cut


def test_truncated_real_sized_file_is_reported_with_offset(tmp_path: Path) -> None:
    path = tmp_path / "w.caffemodel"
    write_weights({"a": [np.ones((64, 64), np.float32)], "b": [np.ones(10, np.float32)]}, path)
    raw = path.read_bytes()
    rng = random.Random(7)
    for cut in sorted(rng.sample(range(1, len(raw) - 1), 40)):
        path.write_bytes(raw[:cut])
        with pytest.raises(CaffeFormatError, match=r"byte \d+"):
            read_weights(path)


def test_random_bytes_never_crash(tmp_path: Path) -> None:
    rng = random.Random(12345)
    path = tmp_path / "noise.caffemodel"
    outcomes = {"error": 0, "parsed": 0}
    start = time.perf_counter()
    for _ in range(400):
        size = rng.choice([1, 2, 5, 17, 100, 1000, 5000])
        path.write_bytes(bytes(rng.getrandbits(8) for _ in range(size)))
        try:
            read_weights(path)
            outcomes["parsed"] += 1
        except CaffeFormatError as exc:
            assert str(path) in str(exc)
            outcomes["error"] += 1
    assert outcomes["error"] > 300
    assert time.perf_counter() - start < 20


def test_mutated_model_bytes_never_crash(tmp_path: Path) -> None:
    data = bytearray(b"".join(_small_model_chunks()))
    rng = random.Random(99)
    path = tmp_path / "mutant.caffemodel"
    for _ in range(300):
        mutant = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            mutant[rng.randrange(len(mutant))] = rng.getrandbits(8)
        path.write_bytes(bytes(mutant))
        try:
            read_net(path)
            read_weights(path)
        except CaffeFormatError:
            pass


def test_empty_file(tmp_path: Path) -> None:
    path = write(tmp_path, b"")
    for reader in (read_weights, read_net):
        with pytest.raises(CaffeFormatError, match="empty") as info:
            reader(path)
        assert str(path) in str(info.value)


@pytest.mark.parametrize(
    "data",
    [
        key(NET_LAYER, LENGTH) + varint(10 * 2**30) + b"\x00" * 16,  # a layer claiming 10 GiB
        ld(NET_LAYER, ld(LAYER_BLOBS, key(BLOB_DATA, LENGTH) + varint(10 * 2**30) + b"\x00" * 8)),
        ld(NET_LAYER, key(LAYER_NAME, LENGTH) + varint(2**63) + b"ab"),
        key(NET_LAYER, LENGTH) + b"\xff" * 11,  # a varint longer than 10 bytes
    ],
    ids=["layer-10GiB", "packed-data-10GiB", "string-2^63", "overlong-varint"],
)
def test_huge_claimed_lengths_fail_fast_without_allocating(tmp_path: Path, data: bytes) -> None:
    path = write(tmp_path, data)
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(CaffeFormatError, match=r"byte \d+") as info:
            read_weights(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - start < 1.0
    assert peak < 1 << 20
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (key(NET_NAME, 6) + b"\x00", "wire type"),
        (key(NET_NAME, 7) + b"\x00", "wire type"),
        (b"\x02\x00", "field number 0"),
        (text(NET_NAME, "") + ld(NET_NAME, b"\xff\xfe"), "UTF-8"),
        (key(901, START_GROUP) + vi(1, 1), "group"),
        (key(901, START_GROUP) + key(902, END_GROUP), "group"),
        (v2_layer("a", "B", blob_with_shape([3], packed_floats(BLOB_DATA, [1, 2]))), "shape"),
        (v2_layer("a", "B", blob_with_shape([1], ld(BLOB_DATA, b"\x00" * 6))), "multiple of 4"),
    ],
    ids=["wire-6", "wire-7", "field-0", "bad-utf8", "open-group", "mismatched-group", "count-vs-shape",
         "ragged-packed"],
)  # fmt: skip
def test_malformed_messages(tmp_path: Path, data: bytes, words: str) -> None:
    path = write(tmp_path, data)
    with pytest.raises(CaffeFormatError, match=words) as info:
        read_weights(path)
    assert str(path) in str(info.value)


def test_another_protobuf_message_is_not_a_caffemodel(tmp_path: Path) -> None:
    """A mean file (a BlobProto, .binaryproto) decodes as a NetParameter with no known field."""
    mean = vi(BLOB_NUM, 1) + vi(BLOB_CHANNELS, 3) + vi(BLOB_HEIGHT, 1) + vi(BLOB_WIDTH, 1)
    path = write(tmp_path, mean + packed_floats(BLOB_DATA, [104.0, 117.0, 123.0]), "mean.binaryproto")
    with pytest.raises(CaffeFormatError, match="not a .caffemodel") as info:
        read_weights(path)
    assert str(path) in str(info.value)


def test_deep_nesting_is_an_error_not_a_crash(tmp_path: Path) -> None:
    depth = 20000
    groups = b"".join(key(901, START_GROUP) for _ in range(depth)) + b"".join(
        key(901, END_GROUP) for _ in range(depth)
    )
    with pytest.raises(CaffeFormatError, match="nested"):
        read_weights(write(tmp_path, groups))
    # known messages nested through a fork's length-delimited field are not parsed at all
    nested = b"\x00"
    for _ in range(2000):
        nested = ld(903, nested)
    assert read_net(write(tmp_path, nested, "n.caffemodel")).unknown[0][:2] == (903, LENGTH)


def test_a_second_forks_field_is_written_under_its_forks_number_and_a_mix_is_refused() -> None:
    from converters.caffe.binary import encode_message
    from converters.caffe.message import Message

    upsample = Message("UpsampleParameter", scale=2)
    upsample.set("dims_num", 3)  # the YOLO forks' field 2 (brocolli-caffe's caffe.proto), a varint
    assert encode_message(upsample) == bytes([0x08, 0x02, 0x10, 0x03])
    bn = Message("BNParameter")
    bn.set("momentum", 0.5)  # PSPNet's / brocolli's field 3, a float
    assert encode_message(bn) == bytes([0x1D]) + struct.pack("<f", 0.5)
    bn.set("bn_mode", "INFERENCE")  # SegNet's field 3 too
    with pytest.raises(ValueError, match="BNParameter mixes two forks' fields that share a field number"):
        encode_message(bn)
    assert encode_message(Message("UpsampleParameter", scale=2)) == bytes([0x08, 0x02])
