"""Parity with real Caffe on real models: every forward expectation in ../shared/real-caffe-models.

The expected outputs were computed by BVLC Caffe (see that folder's README); our graph must give
them within float32 tolerance, including the traps listed there (V1 legacy blobs, weights from
training nets, HDF5 weights, legacy inputs, in-place layers, fork fields).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from converters import load_caffe
from tests.conftest import need_shared

MODELS = [
    "cifar10_quick_v1",
    "cifar10_quick_v2",
    "cifar10_small_hdf5",
    "espcn",
    "lenet_mnist_v2",
    "mtcnn_pnet_rnet_onet_lnet",
    "nin_cifar10_v1",
    "open_nsfw_resnet50_1by2",
    "resnet20_cifar10",
    "vdsr",
]


def _runs(model: str) -> list[tuple[dict, object]]:
    folder = need_shared("real-caffe-models", model)
    spec = json.loads((folder / "EXPECTED-forward.json").read_text())
    return [(run, folder) for run in spec["runs"]]


def _close(got: np.ndarray, want: np.ndarray) -> None:
    assert got.shape == want.shape
    scale = max(float(np.abs(want).max()), 1e-6)
    assert float(np.abs(got - want).max()) <= 1e-4 * scale


@pytest.mark.parametrize("model", MODELS)
def test_forward_matches_caffe(model: str) -> None:
    for run, folder in _runs(model):
        npz = np.load(folder / run.get("npz", "EXPECTED-forward.npz"))
        net = load_caffe(folder / run["prototxt"], folder / run["weights"])
        inputs = {i["name"]: torch.from_numpy(npz[i["npz_key"]]) for i in run["inputs"]}
        with torch.no_grad():
            outputs = net(**inputs)
        assert sorted(outputs) == sorted(o["name"] for o in run["outputs"])
        for out in run["outputs"]:
            _close(outputs[out["name"]].numpy(), npz[out["npz_key"]])


@pytest.mark.parametrize("model", ["resnet20_cifar10", "nin_cifar10_v1", "cifar10_quick_v2"])
def test_intermediate_blobs_match_caffe(model: str) -> None:
    """Intermediate blobs hold the value after in-place layers, as Caffe's do."""
    for run, folder in _runs(model):
        npz = np.load(folder / run.get("npz", "EXPECTED-forward.npz"))
        net = load_caffe(folder / run["prototxt"], folder / run["weights"])
        inputs = {i["name"]: torch.from_numpy(npz[i["npz_key"]]) for i in run["inputs"]}
        for blob in run["intermediate_blobs"]:
            # Ask for the blob as an output by cutting the net after the layer that last wrote it.
            last = blob["holds_value_after_layer"]
            layers = [layer for layer, _ in net.caffe.layers]
            cut = net.caffe.definition.copy()
            cut.set("layer", cut.getall("layer")[: layers.index(last) + 1])
            sub = load_caffe(cut, folder / run["weights"], strict=False)
            with torch.no_grad():
                value = sub(**inputs)[blob["name"]]
            _close(value.numpy(), npz[blob["npz_key"]])


def test_batch_of_two_gives_each_item_its_own_result(real_models) -> None:
    folder = real_models / "resnet20_cifar10"
    run = json.loads((folder / "EXPECTED-forward.json").read_text())["runs"][0]
    npz = np.load(folder / "EXPECTED-forward.npz")
    net = load_caffe(folder / run["prototxt"], folder / run["weights"])
    x = torch.from_numpy(npz["input:data"])
    batch = torch.cat([x, torch.zeros_like(x)])
    with torch.no_grad():
        both = net(data=batch)["fc1"]
        single = net(data=x)["fc1"]
    _close(both[:1].numpy(), npz["output:fc1"])
    torch.testing.assert_close(both[:1], single, rtol=1e-5, atol=1e-5)


def test_training_net_weights_load_into_deploy_graph(real_models) -> None:
    """mtcnn det2's caffemodel holds a training net's extra layers (conv5-3): they are reported, not fatal."""
    folder = real_models / "mtcnn_pnet_rnet_onet_lnet"
    net = load_caffe(folder / "det2.prototxt", folder / "det2.caffemodel")
    assert "conv5-3" in net.caffe.unused_weights
    assert net.caffe.randomly_initialised == []


def test_v1_legacy_blob_shapes_become_caffe_shapes(real_models) -> None:
    """V1 stores an InnerProduct weight as (1, 1, M, K) and a bias as (1, 1, 1, N)."""
    folder = real_models / "cifar10_quick_v1"
    expected = json.loads((folder / "EXPECTED-blobs.json").read_text())
    (info,) = expected["files"].values()
    net = load_caffe(folder / "deploy.prototxt", folder / "cifar10_quick_iter_5000.caffemodel")
    state = net.state_dict()
    for layer in info["layers_with_blobs"]:
        keys = net.caffe.parameter_blobs[layer["name"]]
        for key, blob in zip(keys, layer["blobs"], strict=True):
            assert list(state[key].shape) == blob["caffe_shape"], key
