"""Loading a caffemodel file reads each blob's bytes from the file straight into its parameter (one
copy, as a plain read makes: time and peak memory in benchmarks/load_caffemodel.py); the values are
the file's. What makes it fast is proven in tests/test_load_speed_copies.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from converters import load_caffe, write_weights
from converters.fcn.nets import net_definition


def test_parameters_loaded_from_a_file_hold_the_files_values(tmp_path) -> None:
    definition = net_definition("voc-fcn16s", "deploy", width=0.0625)
    source = load_caffe(definition, None, optimize=False)
    stored = {
        layer: [source.state_dict()[key].numpy().copy() for key in keys]
        for layer, keys in source.caffe.parameter_blobs.items()
    }
    write_weights(stored, tmp_path / "w.caffemodel")
    for optimize in (False, True):
        net = load_caffe(definition, tmp_path / "w.caffemodel", optimize=optimize)
        state = net.state_dict()
        for layer, keys in net.caffe.parameter_blobs.items():
            for key, expected in zip(keys, stored[layer], strict=True):
                assert np.array_equal(state[key].numpy().reshape(expected.shape), expected), key


def test_weights_given_as_a_dict_are_copied_and_left_alone() -> None:
    definition = net_definition("voc-fcn32s", "deploy", width=0.0625)
    weights = {
        layer: [np.full(shape, 0.5, np.float32) for shape in shapes]
        for layer, shapes in load_caffe(definition, None, device="meta").caffe.parameter_shapes.items()
    }
    net = load_caffe(definition, weights)
    net.conv1_1.weight.data.add_(1.0)
    assert float(weights["conv1_1"][0].max()) == 0.5


def test_safetensors_written_tensor_by_tensor_read_back_with_the_library(tmp_path) -> None:
    from safetensors import safe_open

    from converters.graph.converted import _write_safetensors

    state = {
        "w": torch.randn(3, 4),
        "i": torch.arange(5),
        "h": torch.randn(2, dtype=torch.bfloat16),
        "s": torch.tensor(1.5),
        "e": torch.zeros(0, 3),
        "b": torch.tensor([True, False]),
    }
    with open(tmp_path / "x.safetensors", "wb") as handle:
        _write_safetensors(handle, state, {"key": "value"})
    with safe_open(str(tmp_path / "x.safetensors"), framework="pt") as handle:
        assert handle.metadata() == {"key": "value"}
        assert sorted(handle.keys()) == sorted(state)
        for key, value in state.items():
            assert torch.equal(handle.get_tensor(key), value), key


def test_a_converted_file_loads_tensor_by_tensor_and_a_corrupt_header_is_refused_before_allocating(
    tmp_path: Path,
) -> None:
    import json

    from converters import load_converted, parse_text, save_converted
    from converters.errors import CaffeFormatError

    net = load_caffe(
        parse_text(
            'layer { name: "i" type: "Input" top: "data" '
            "input_param { shape { dim: 1 dim: 1 dim: 4 dim: 4 } } } "
            'layer { name: "c" type: "Convolution" bottom: "data" top: "c" '
            "convolution_param { num_output: 2 kernel_size: 3 } }"
        )
    )
    path = tmp_path / "x.safetensors"
    save_converted(net, path)
    x = torch.randn(1, 1, 4, 4)
    assert torch.equal(load_converted(path)(data=x)["c"], net(data=x)["c"])
    raw = path.read_bytes()
    length = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + length])
    header["c.weight"]["shape"] = [2_000_000, 1_000_000, 3, 3]  # 72 TB claimed in a few hundred bytes
    text = json.dumps(header).encode()
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(len(text).to_bytes(8, "little") + text + raw[8 + length :])
    with pytest.raises(CaffeFormatError, match="'c.weight' does not fit its place in the file"):
        load_converted(bad)
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(raw[:-10])
    with pytest.raises(CaffeFormatError, match="does not fit"):
        load_converted(cut)
    header = json.loads(raw[8 : 8 + length])
    assert header["c.bias"]["data_offsets"] == [0, 8] and header["c.weight"]["data_offsets"] == [8, 80]
    header["c.weight"]["data_offsets"] = [4, 76]  # over c.bias's second value: each tensor fits the file
    text = json.dumps(header).encode()
    overlapping = tmp_path / "overlapping.safetensors"
    overlapping.write_bytes(len(text).to_bytes(8, "little") + text + raw[8 + length :])
    with pytest.raises(CaffeFormatError, match="overlap in the file"):
        load_converted(overlapping)
    header = json.loads(raw[8 : 8 + length])
    header["empty"] = {"dtype": "F32", "shape": [0], "data_offsets": [20, 20]}  # inside c.weight: no memory
    text = json.dumps(header).encode()
    with_empty = tmp_path / "with_empty.safetensors"
    with_empty.write_bytes(len(text).to_bytes(8, "little") + text + raw[8 + length :])
    from converters.graph.converted import _tensors

    with _tensors(with_empty) as (get, keys, _):
        assert "empty" in keys and get("empty").shape == (0,)
        assert torch.equal(get("c.bias"), net.c.bias.detach())


def test_a_load_leaves_pythons_thread_switch_interval_as_it_found_it_also_when_it_fails(
    tmp_path: Path, monkeypatch
) -> None:
    """(It lowers it while the weights are read in the background.)"""
    import json
    import sys

    from converters import load_converted, save_converted
    from converters.caffe.formats import open_weights
    from converters.errors import CaffeFormatError, WeightsMismatchError

    tiny = Path(__file__).parent / "fixtures" / "tiny_fcn"
    prototxt, caffemodel = tiny / "deploy.prototxt", tiny / "tiny_fcn.caffemodel"
    blobs = {name: [np.array(b) for b in values] for name, values in open_weights(caffemodel).items()}
    blobs["conv1"][0] = np.zeros((2, 2, 2, 2), np.float32)  # found wrong while the graph is built
    write_weights(blobs, tmp_path / "wrong.caffemodel")
    real, seen = sys.setswitchinterval, []
    monkeypatch.setattr(sys, "setswitchinterval", lambda value: seen.append(value) or real(value))
    before = sys.getswitchinterval()
    try:
        real(0.002)
        load_caffe(prototxt, caffemodel)
        assert sys.getswitchinterval() == pytest.approx(0.002) and min(seen) < 0.002
        seen.clear()
        with pytest.raises(WeightsMismatchError):
            load_caffe(prototxt, tmp_path / "wrong.caffemodel")
        assert sys.getswitchinterval() == pytest.approx(0.002) and min(seen) < 0.002
        converted = tmp_path / "tiny.safetensors"  # a converted file is read in the background too
        save_converted(load_caffe(prototxt, caffemodel), converted)
        seen.clear()
        load_converted(converted)
        assert sys.getswitchinterval() == pytest.approx(0.002) and min(seen) < 0.002
        raw = converted.read_bytes()
        length = int.from_bytes(raw[:8], "little")
        header = json.loads(raw[8 : 8 + length])
        header["renamed"] = header.pop(next(k for k in header if k != "__metadata__"))
        text = json.dumps(header).encode()
        renamed = tmp_path / "renamed.safetensors"
        renamed.write_bytes(len(text).to_bytes(8, "little") + text + raw[8 + length :])
        seen.clear()
        with pytest.raises(CaffeFormatError, match="has no tensor"):  # found once the reads began
            load_converted(renamed)
        assert sys.getswitchinterval() == pytest.approx(0.002) and min(seen) < 0.002
    finally:
        real(before)
