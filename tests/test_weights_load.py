"""weights.load end to end: a caffemodel in the cache -> fetch (found, sha256 recorded) -> our net
definition -> converters.load_caffe. The weights are random (the real file is 217 MiB and needs the
network), written with the project's caffemodel writer; the test checks that the module weights are
the file's and that the outputs are the record's."""

from __future__ import annotations

import numpy as np
import pytest

import weights
from weights.cache import read_checksums


@pytest.mark.slow
def test_load_builds_the_registry_net_with_the_cached_weights(tmp_path):
    torch = pytest.importorskip("torch")
    converters = pytest.importorskip("converters")
    fcn_nets = pytest.importorskip("converters.fcn_nets")
    if not hasattr(converters, "load_caffe"):
        pytest.skip("converters.load_caffe is not available yet")
    record = weights.get("voc-fcn-alexnet")
    reference = converters.load_caffe(fcn_nets.net_definition(record.net, "deploy"))  # random init
    blobs: dict[str, list[np.ndarray]] = {}
    for name, parameter in reference.named_parameters():
        layer, _ = name.rsplit(".", 1)
        blobs.setdefault(layer, []).append(parameter.detach().numpy().copy())
    path = weights.cached_path(record.name, tmp_path)
    converters.write_weights(blobs, path)

    net = weights.load(record.name, device="cpu", cache_dir=tmp_path, progress=False)
    assert read_checksums(tmp_path)[record.filename]["sha256"] == weights.verify(str(path)).sha256
    loaded = dict(net.named_parameters())
    for layer, arrays in blobs.items():
        for suffix, array in zip(("weight", "bias"), arrays, strict=False):
            assert np.array_equal(loaded[f"{layer}.{suffix}"].detach().numpy(), array), layer
    with torch.no_grad():
        out = net(data=torch.zeros(1, 3, 48, 64))
    assert list(out) == [o.blob for o in record.outputs]
    assert tuple(out["score"].shape) == (1, record.num_classes["score"], 48, 64)
