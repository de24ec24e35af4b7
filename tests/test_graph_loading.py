"""Loading a caffemodel file copies each blob once into its parameter and gives the file map's pages
back as it goes (peak memory: benchmarks/load_caffemodel.py); the values are the file's."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from converters import load_caffe, read_weights, write_weights
from converters.fcn.nets import net_definition
from converters.graph import builder


def test_parameters_loaded_from_a_file_hold_the_files_values(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(builder, "_CHUNK", 1000)  # many chunks, most not ending on a page
    definition = net_definition("voc-fcn16s", "deploy", width=0.0625)
    source = load_caffe(definition, None, optimize=False)
    stored = {
        layer: [source.state_dict()[key].numpy().copy() for key in keys]
        for layer, keys in source.caffe.parameter_blobs.items()
    }
    write_weights(stored, tmp_path / "w.caffemodel")
    net = load_caffe(definition, tmp_path / "w.caffemodel")
    state = net.state_dict()
    for layer, keys in net.caffe.parameter_blobs.items():
        for key, expected in zip(keys, stored[layer], strict=True):
            assert np.array_equal(state[key].numpy().reshape(expected.shape), expected), key


def test_released_pages_of_the_file_map_read_back_unchanged(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(builder, "_CHUNK", 3000)
    values = np.random.default_rng(0).standard_normal(50_000).astype(np.float32)
    write_weights({"layer": [values]}, tmp_path / "w.caffemodel")
    array = read_weights(tmp_path / "w.caffemodel")["layer"][0]
    mapped, _ = builder._file_map(array)
    assert mapped is not None  # the reader maps the file: pages are really released here
    target = torch.empty(values.size)
    builder._copy_and_release(target, array)
    assert np.array_equal(target.numpy(), values)
    assert np.array_equal(np.asarray(array).reshape(-1), values)


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
