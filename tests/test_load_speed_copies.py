"""What makes ``load_caffe`` of a caffemodel run at the speed of a plain read of the file (issue 20;
the timings are benchmarks/load_caffemodel.py's, not a test's): each blob's bytes go from the file
straight into its parameter, one copy as ``read`` makes, with no copy through the file map or numpy
and none of the map's pages touched; decoded blobs (HDF5, unpacked or double values) become the
parameters without a copy. The parameters never view the file: a file rewritten, cut short or deleted
after loading changes nothing in the net (a view of a private map would see an in-place rewrite, and
would die of SIGBUS reading a page past a truncated end)."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from converters import CaffeFormatError, load_caffe, parse_text, spans, write_weights
from converters.caffe import formats
from converters.graph import builder

NET = parse_text(
    'layer { name: "in" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 8 dim: 8 } } } '
    'layer { name: "conv_a_long_name" type: "Convolution" bottom: "data" top: "c" '
    "convolution_param { num_output: 4 kernel_size: 3 } } "
    'layer { name: "ip" type: "InnerProduct" bottom: "c" top: "ip" inner_product_param { num_output: 5 } }'
)
SHAPES = {"conv_a_long_name": [(4, 3, 3, 3), (4,)], "ip": [(5, 144), (5,)]}


def _weights(seed: int = 0) -> dict[str, list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    return {
        layer: [rng.standard_normal(s).astype(np.float32) for s in shapes] for layer, shapes in SHAPES.items()
    }


def _state(net: torch.nn.Module) -> dict[str, np.ndarray]:
    return {key: value.detach().numpy().copy() for key, value in net.state_dict().items()}


def _expected(net: torch.nn.Module, weights: dict[str, list[np.ndarray]]) -> dict[str, np.ndarray]:
    """State dict key -> the flat values the file holds for it."""
    return {
        key: blob.reshape(-1)
        for layer, blobs in weights.items()
        for key, blob in zip(net.caffe.parameter_blobs[layer], blobs, strict=True)
    }


def _spy(monkeypatch: pytest.MonkeyPatch) -> dict[str, list]:
    """Record what load_caffe's FileWeights did with each blob, and every fallback copy."""
    seen: dict[str, list] = {"opened": [], "read": [], "taken": [], "copied": []}
    real_open, real_read_span = builder.open_weights, spans.read_span
    real_take, real_assign = formats.FileWeights.take, builder._assign_array

    def opened(path):
        weights = real_open(path)
        seen["opened"].append(weights)
        return weights

    def read_span(handle, offset, view, lock, stopped):
        seen["read"].append((offset, view.nbytes))  # (in the order the pieces are claimed: one reader)
        real_read_span(handle, offset, view, lock, stopped)

    def take(self, array):
        own = real_take(self, array)
        seen["taken"].append((array, own))
        return own

    def assign(target, array):
        seen["copied"].append(array)
        real_assign(target, array)

    monkeypatch.setattr(builder, "open_weights", opened)
    monkeypatch.setattr(spans, "read_span", read_span)
    monkeypatch.setattr(formats.FileWeights, "take", take)
    monkeypatch.setattr(builder, "_assign_array", assign)
    return seen


@pytest.mark.parametrize("optimize", [False, True])
def test_every_packed_blob_is_read_from_the_file_into_its_parameter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, optimize: bool
) -> None:
    weights = _weights()
    write_weights({**weights, "not_in_the_net": [np.ones(1000, np.float32)]}, tmp_path / "w.caffemodel")
    seen = _spy(monkeypatch)
    monkeypatch.setattr(spans, "READERS", 1)  # one reader: the pieces in the order it claims them
    net = load_caffe(NET, tmp_path / "w.caffemodel", optimize=optimize)  # reads only what it uses:
    (opened,) = seen["opened"]
    with formats.open_weights(tmp_path / "w.caffemodel") as again:  # where each blob's values lie
        places = sorted((again.file_offset(blob), blob.nbytes) for layer in SHAPES for blob in again[layer])
    assert seen["read"] == places and not seen["copied"]  # each blob once, whole, in file order
    assert len({offset % 4 for offset, _ in places}) > 1  # values unaligned in the file are read too
    parameters = dict(net.named_parameters())
    expected = _expected(net, weights)
    assert len(seen["taken"]) == len(expected)
    for (view, own), key in zip(seen["taken"], expected, strict=True):
        parameter = parameters[key].detach()
        assert own is not None and own.ctypes.data % 64 == 0  # read into memory of its own, aligned
        assert parameter.data_ptr() == own.ctypes.data  # which the parameter keeps: no second copy
        assert not np.shares_memory(parameter.numpy(), view)  # never a view of the file
        assert np.array_equal(parameter.numpy().reshape(-1), expected[key]), key
    assert opened._handle is None and opened._reader is not None
    assert not any(thread.is_alive() for thread in opened._reader.threads)


@pytest.mark.parametrize("readers, pread", [(1, True), (2, True), (3, True), (2, False)])
def test_background_readers_read_every_piece_once_whatever_their_number(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, readers: int, pread: bool
) -> None:
    """Several readers, each claiming the next piece of the file: blobs larger than a piece are read
    by more than one of them, every byte once, and the values are the file's. Without ``pread``
    (Windows), one reader seeks and reads."""
    weights = _weights(6)
    write_weights(weights, tmp_path / "w.caffemodel")
    seen = _spy(monkeypatch)
    monkeypatch.setattr(spans, "READERS", readers)
    monkeypatch.setattr(spans, "PREAD", pread and spans.PREAD)
    monkeypatch.setattr(spans, "READ_PIECE", 256)  # ip's 2880 bytes in 12 pieces
    net = load_caffe(NET, tmp_path / "w.caffemodel", optimize=False)
    (opened,) = seen["opened"]
    assert len(opened._reader.threads) == (readers if spans.PREAD else 1)
    with formats.open_weights(tmp_path / "w.caffemodel") as again:
        ip_weight = again["ip"][0]
        start = again.file_offset(ip_weight)
    ip_pieces = sorted(piece for piece in seen["read"] if start <= piece[0] < start + ip_weight.nbytes)
    assert ip_pieces == [(start + k, min(256, ip_weight.nbytes - k)) for k in range(0, ip_weight.nbytes, 256)]
    for key, value in _expected(net, weights).items():
        assert np.array_equal(net.state_dict()[key].numpy().reshape(-1), value), key


def test_a_load_peaks_at_one_copy_of_the_weights(tmp_path: Path) -> None:
    """Peak memory of a load, in a fresh process: the parameters (one copy of the values) plus the
    parse and the graph, under 1.1x the file; the file map's pages holding the values are never
    read, so they are not counted (the loader that copied through the map peaked at 1.5x here)."""
    if not Path("/proc/self/status").exists():
        pytest.skip("needs /proc/self/status (Linux)")
    net = (
        'layer { name: "in" type: "Input" top: "data" input_param { shape { dim: 1 dim: 4096 } } } '
        'layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" '
        "inner_product_param { num_output: 4096 } }"
    )
    path = tmp_path / "big.caffemodel"
    write_weights({"ip": [np.ones((4096, 4096), np.float32), np.ones(4096, np.float32)]}, path)
    code = f"""
import json, sys
sys.path.insert(0, {str(Path(__file__).resolve().parent.parent)!r})
from converters import load_caffe, parse_text
def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
net = parse_text({net!r})
load_caffe(net, None, device="meta")  # the imports and the graph code, nothing allocated
base = status("VmRSS")
loaded = load_caffe(net, {str(path)!r}, optimize=False)
print(json.dumps({{"extra": status("VmHWM") - base, "sum": float(loaded.ip.weight.sum())}}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    size = path.stat().st_size
    assert result["sum"] == 4096 * 4096
    assert result["extra"] < 1.1 * size, (result["extra"], size)


def test_hdf5_and_decoded_blobs_become_the_parameters_without_a_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("h5py")
    weights = _weights(1)
    write_weights(weights, tmp_path / "w.caffemodel.h5", fmt="hdf5")
    seen = _spy(monkeypatch)
    net = load_caffe(NET, tmp_path / "w.caffemodel.h5")
    (opened,) = seen["opened"]
    assert not seen["read"] and [own for _, own in seen["taken"]] == [None] * 4 and not seen["copied"]
    parameters = dict(net.named_parameters())
    for layer, blobs in opened.items():
        for key, blob in zip(net.caffe.parameter_blobs[layer], blobs, strict=True):
            assert np.shares_memory(parameters[key].detach().numpy(), blob)  # kept, not copied
    for key, value in _expected(net, weights).items():
        assert np.array_equal(net.state_dict()[key].numpy().reshape(-1), value), key


def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    return bytes([*out, value])


def _key(number: int, wire: int) -> bytes:
    return _varint(number << 3 | wire)


def _ld(number: int, payload: bytes) -> bytes:
    return _key(number, 2) + _varint(len(payload)) + payload


def test_unpacked_and_double_blobs_load_as_stored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Blobs the reader decodes (unpacked floats, double_data) are kept as parameters, each once."""
    weights = _weights(2)

    def blob(array: np.ndarray, how: str) -> bytes:
        dims = _ld(7, _ld(1, b"".join(_varint(d) for d in array.shape)))
        if how == "unpacked":
            return dims + b"".join(_key(5, 5) + struct.pack("<f", v) for v in array.reshape(-1))
        return dims + _ld(8, array.astype(np.float64).tobytes())

    layers = b""
    for layer, (w, b) in weights.items():
        body = _ld(1, layer.encode()) + _ld(7, blob(w, "unpacked")) + _ld(7, blob(b, "double"))
        layers += _ld(100, body)
    (tmp_path / "w.caffemodel").write_bytes(layers)
    seen = _spy(monkeypatch)
    net = load_caffe(NET, tmp_path / "w.caffemodel")
    assert not seen["read"] and [own for _, own in seen["taken"]] == [None] * 4 and not seen["copied"]
    for key, value in _expected(net, weights).items():
        assert np.array_equal(net.state_dict()[key].numpy().reshape(-1), value), key


@pytest.mark.parametrize("change", ["rewritten in place", "cut short", "deleted", "replaced"])
def test_a_file_changed_after_loading_changes_nothing_in_the_net(tmp_path: Path, change: str) -> None:
    path = tmp_path / "w.caffemodel"
    write_weights(_weights(3), path)
    net = load_caffe(NET, path)
    before = _state(net)
    x = torch.randn(1, 3, 8, 8)
    out = net(data=x)["ip"]
    if change == "rewritten in place":
        size = path.stat().st_size
        with open(path, "r+b") as handle:
            handle.write(b"\xff" * size)
    elif change == "cut short":
        os.truncate(path, 0)  # a view of a private map of it would die of SIGBUS below
    elif change == "deleted":
        path.unlink()
    else:
        write_weights(_weights(4), path)
    after = _state(net)
    assert before.keys() == after.keys() and all(np.array_equal(before[k], after[k]) for k in before)
    assert torch.equal(net(data=x)["ip"], out)


def test_a_file_cut_short_between_parse_and_read_is_a_format_error(tmp_path: Path) -> None:
    path = tmp_path / "w.caffemodel"
    write_weights(_weights(), path)
    with formats.open_weights(path) as weights:
        array = weights["ip"][0]
        offset = weights.file_offset(array)
        assert offset is not None
        os.truncate(path, offset + 8)
        with pytest.raises(CaffeFormatError, match="became shorter while it was read"):
            weights.readinto(array, np.empty_like(array))
    assert weights._handle is None


def test_a_file_cut_short_while_it_loads_is_a_format_error(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "w.caffemodel"
    write_weights(_weights(), path)
    real_open = builder.open_weights

    def open_then_cut(where):
        weights = real_open(where)
        os.truncate(where, 100)  # after the parse, before the background reads
        return weights

    monkeypatch.setattr(builder, "open_weights", open_then_cut)
    with pytest.raises(CaffeFormatError, match="became shorter while it was read"):
        load_caffe(NET, path)


def test_closing_stops_the_background_reads(tmp_path: Path) -> None:
    path = tmp_path / "w.caffemodel"
    write_weights({"ip": [np.ones((1024, 1024), np.float32)]}, path)
    weights = formats.open_weights(path)
    weights.start_reading()
    weights.close()
    assert weights._reader is not None and weights._handle is None
    assert not any(thread.is_alive() for thread in weights._reader.threads)
    assert weights.take(weights["ip"][0]) is None


def test_background_reads_into_memory_of_their_own_by_default(tmp_path: Path) -> None:
    """Without a loader's allocator, each blob lands in private anonymous memory (torch-free)."""
    weights = _weights(5)
    write_weights(weights, tmp_path / "w.caffemodel")
    with formats.open_weights(tmp_path / "w.caffemodel") as opened:
        opened.start_reading(["ip"])
        conv_weight, ip_weight = opened["conv_a_long_name"][0], opened["ip"][0]
        own = opened.take(ip_weight)
        assert opened.take(conv_weight) is None  # not asked for: the loader copies it if it must
        assert own is not None and own.flags.writeable and not np.shares_memory(own, ip_weight)
        assert own.ctypes.data % 64 == 0 and np.array_equal(own, weights["ip"][0])
        assert opened.take(ip_weight) is None  # handed out once


def test_a_read_error_in_a_background_reader_is_a_one_line_format_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A disk error (EIO) met by a reader thread reaches the loader as a CaffeFormatError naming the
    file, for a caffemodel and for a converted file, and no reader is left running."""
    import errno

    from converters import load_converted, save_converted

    path = tmp_path / "w.caffemodel"
    write_weights(_weights(7), path)
    converted = tmp_path / "w.safetensors"
    save_converted(load_caffe(NET, path, optimize=False), converted)
    if not spans.PREAD:
        pytest.skip("the reader seeks and reads where the system has no pread")

    def failing(fd, buffers, offset):
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(spans.os, "preadv", failing)
    seen = _spy(monkeypatch)
    with pytest.raises(CaffeFormatError, match="Input/output error") as caught:
        load_caffe(NET, path)
    assert str(path) in str(caught.value)
    (opened,) = seen["opened"]
    assert not any(thread.is_alive() for thread in opened._reader.threads)
    with pytest.raises(CaffeFormatError, match="Input/output error") as caught:
        load_converted(converted)
    assert str(converted) in str(caught.value)


def test_readers_that_overlap_give_back_the_switch_interval_once_the_last_one_finishes(
    tmp_path: Path,
) -> None:
    """Two loads reading at once (threads of a server): the interval stays low while either reads and
    is the one found before the first once both are done, whichever finishes first."""
    import sys

    path = tmp_path / "bytes"
    path.write_bytes(bytes(range(256)) * 64)
    before = sys.getswitchinterval()
    try:
        sys.setswitchinterval(0.003)
        for last_first in (False, True):
            with open(path, "rb", buffering=0) as handle:
                spans_ = [("all", 0, 1024, lambda: (buffer := bytearray(1024), buffer))]
                first, second = spans.SpanReader(handle, spans_), spans.SpanReader(handle, spans_)
                assert sys.getswitchinterval() == pytest.approx(spans.READING_SWITCH_INTERVAL)
                (second if last_first else first).wait()
                assert sys.getswitchinterval() == pytest.approx(spans.READING_SWITCH_INTERVAL)
                (first if last_first else second).stop()
                assert sys.getswitchinterval() == pytest.approx(0.003)
                first.stop()  # (again: a reader finishes once)
                assert sys.getswitchinterval() == pytest.approx(0.003)
    finally:
        sys.setswitchinterval(before)
