"""Registry models end to end: a caffemodel in the cache -> fetch (found, sha256 recorded) -> our
net definition -> converters.load_caffe, and the same through ``python -m converters.caffe2torch NAME``.
The weights are random (the real file is 217 MiB and needs the network), written with the project's
caffemodel writer; the tests check that the module weights are the file's and that the outputs are
the record's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import converters
import weights
from converters.caffe2torch import main as caffe2torch
from converters.fcn.nets import net_definition
from weights.cache import read_checksums

MODEL = "voc-fcn-alexnet"


@pytest.fixture(scope="module")
def cached(tmp_path_factory) -> tuple[Path, dict[str, list[np.ndarray]]]:
    """A weights cache holding random voc-fcn-alexnet weights under the official file name."""
    cache = tmp_path_factory.mktemp("cache")
    record = weights.get(MODEL)
    reference = converters.load_caffe(net_definition(record.net, "deploy"))  # random init
    blobs: dict[str, list[np.ndarray]] = {}
    for name, parameter in reference.named_parameters():
        layer, _ = name.rsplit(".", 1)
        blobs.setdefault(layer, []).append(parameter.detach().numpy().copy())
    converters.write_weights(blobs, weights.cached_path(record.name, cache))
    return cache, blobs


def _assert_weights(net: torch.nn.Module, blobs: dict[str, list[np.ndarray]]) -> None:
    loaded = dict(net.named_parameters())
    for layer, arrays in blobs.items():
        for suffix, array in zip(("weight", "bias"), arrays, strict=False):
            assert np.array_equal(loaded[f"{layer}.{suffix}"].detach().numpy(), array), layer


@pytest.mark.slow
def test_load_builds_the_registry_net_with_the_cached_weights(cached) -> None:
    cache, blobs = cached
    record = weights.get(MODEL)
    net = weights.load(record.name, device="cpu", cache_dir=cache, progress=False)
    path = weights.cached_path(record.name, cache)
    assert read_checksums(cache)[record.filename]["sha256"] == weights.verify(str(path)).sha256
    _assert_weights(net, blobs)
    with torch.no_grad():
        out = net(data=torch.zeros(1, 3, 48, 64))
    assert list(out) == [o.blob for o in record.outputs]
    assert tuple(out["score"].shape) == (1, record.num_classes["score"], 48, 64)


@pytest.mark.slow
def test_caffe2torch_converts_a_registry_model_in_one_step(cached, tmp_path, capsys) -> None:
    cache, blobs = cached
    output = tmp_path / "alexnet.safetensors"
    assert caffe2torch([MODEL, "--cache-dir", str(cache), "-o", str(output)]) == 0
    report = capsys.readouterr().out
    assert "self-check: passed" in report and "BGR" in report  # the record's input modality is reported
    _assert_weights(converters.load_converted(output), blobs)


def test_a_model_without_released_weights_is_a_one_line_error(capsys) -> None:
    assert caffe2torch(["nyud-fcn32s-color-d"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and error.count("\n") == 1 and "no released weights" in error
