"""Caffe HDF5 weights (``.caffemodel.h5``: ``/data/<layer>/<blob index>``) through h5py."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import need_shared

from converters import CaffeFormatError, read_net, read_prototxt, read_weights, sniff_format, write_weights


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and bool(np.array_equal(a, b))


def test_reads_the_caffe_layout_made_with_h5py(tmp_path: Path) -> None:
    path = tmp_path / "net.caffemodel.h5"
    with h5py.File(path, "w") as handle:
        data = handle.create_group("data")
        data.create_group("relu1")  # parameterless layers get an empty group
        conv = data.create_group("conv1")
        conv.create_dataset("0", data=np.arange(24, dtype=np.float32).reshape(2, 3, 2, 2))
        conv.create_dataset("1", data=np.array([0.5, -1.0], dtype=np.float64))
        data.create_group("bn").create_dataset("0", data=np.array(7, dtype=np.int32))
    assert sniff_format(path) == "hdf5"
    weights = read_weights(path)
    assert list(weights) == ["bn", "conv1"]  # HDF5 name order; empty groups left out
    assert weights["conv1"][0].shape == (2, 3, 2, 2) and weights["conv1"][0].dtype == np.float32
    assert weights["conv1"][0].reshape(-1).tolist() == list(range(24))
    assert weights["conv1"][1].dtype == np.float32 and weights["conv1"][1].tolist() == [0.5, -1.0]
    assert weights["bn"][0].shape == () and weights["bn"][0] == 7
    net = read_net(path)
    assert [(layer.get("name"), len(layer.getall("blobs"))) for layer in net.get("layer")] == [
        ("bn", 1), ("conv1", 2), ("relu1", 0),
    ]  # fmt: skip


def test_write_weights_hdf5_layout_and_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    weights = {
        "conv1": [rng.standard_normal((4, 3, 3, 3), dtype=np.float32), rng.standard_normal(4, np.float32)],
        "fc": [rng.standard_normal((10, 36), dtype=np.float32)],
        "odd name-1.x": [np.float32([1.0])],
    }
    path = tmp_path / "w.caffemodel.h5"
    write_weights(weights, path, fmt="hdf5")
    with h5py.File(path, "r") as handle:
        assert list(handle) == ["data"]
        assert handle["data/conv1/0"].dtype == np.float32 and handle["data/conv1/0"].shape == (4, 3, 3, 3)
        assert np.array_equal(handle["data/fc/0"][()], weights["fc"][0])
    back = read_weights(path)
    assert sorted(back) == sorted(weights)
    for name, blobs in weights.items():
        assert all(_same(a, b) for a, b in zip(blobs, back[name], strict=True))


def test_real_hdf5_weights_convert_both_ways(tmp_path: Path) -> None:
    path = need_shared("real-caffe-models", "cifar10_small_hdf5", "cifar10_small.caffemodel.h5")
    weights = read_weights(path)
    binary = tmp_path / "cifar10_small.caffemodel"
    write_weights(weights, binary)
    again = tmp_path / "again.caffemodel.h5"
    write_weights(read_weights(binary), again, fmt="hdf5")
    for other in (read_weights(binary), read_weights(again)):
        assert list(other) == list(weights)
        for name, blobs in weights.items():
            assert all(_same(a, b) for a, b in zip(blobs, other[name], strict=True))


def _make(path: Path, build: object) -> Path:
    with h5py.File(path, "w") as handle:
        build(handle)  # type: ignore[operator]
    return path


@pytest.mark.parametrize(
    ("build", "words"),
    [
        (lambda f: f.create_dataset("weights", data=np.zeros(3)), "no /data group"),
        (lambda f: f.create_dataset("data", data=np.zeros(3)), "no /data group"),
        (lambda f: f.create_group("data").create_dataset("conv", data=np.zeros(3)), "not a group"),
        (lambda f: f.create_group("data/conv").create_dataset("weight", data=np.zeros(3)), "numbered"),
        (lambda f: [f.create_dataset(f"data/conv/{i}", data=np.zeros(1)) for i in (0, 2)], "numbered"),
        (lambda f: f.create_dataset("data/conv/0", data=np.array([b"text"])), "not a numeric dataset"),
        (lambda f: f.create_group("data/conv/0"), "not a numeric dataset"),
    ],
    ids=["no-data", "data-is-dataset", "layer-is-dataset", "named-blob", "gap", "strings", "group-blob"],
)
def test_other_hdf5_layouts_are_refused(tmp_path: Path, build: object, words: str) -> None:
    path = _make(tmp_path / "other.h5", build)
    with pytest.raises(CaffeFormatError, match=words) as info:
        read_weights(path)
    assert str(path) in str(info.value)


def test_truncated_and_corrupt_hdf5(tmp_path: Path) -> None:
    good = tmp_path / "good.h5"
    write_weights({f"layer{i}": [np.full((16, 16), i, np.float32)] for i in range(4)}, good, fmt="hdf5")
    raw = good.read_bytes()
    path = tmp_path / "bad.h5"
    for cut in range(8, len(raw), max(1, len(raw) // 60)):
        path.write_bytes(raw[:cut])
        with pytest.raises(CaffeFormatError) as info:
            read_weights(path)
        assert str(path) in str(info.value)
    path.write_bytes(raw[:8] + bytes(range(256)) * 4)  # HDF5 signature, garbage after
    with pytest.raises(CaffeFormatError, match="HDF5"):
        read_weights(path)


def test_hdf5_is_not_a_prototxt(tmp_path: Path) -> None:
    path = tmp_path / "w.prototxt"
    write_weights({"a": [np.zeros(2, np.float32)]}, path, fmt="hdf5")
    with pytest.raises(CaffeFormatError, match="HDF5"):
        read_prototxt(path)


def test_failed_write_leaves_no_file(tmp_path: Path) -> None:
    path = tmp_path / "w.caffemodel.h5"
    with pytest.raises(ValueError):
        write_weights({"a": [np.zeros(2, np.float32)], "b": [np.array(["not", "numbers"])]}, path, fmt="hdf5")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="HDF5 group name"):  # a "/" would nest groups
        write_weights({"inception_3a/1x1": [np.zeros(2, np.float32)]}, path, fmt="hdf5")
    assert list(tmp_path.iterdir()) == []
