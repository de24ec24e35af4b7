"""Real nets of public repositories (tests/real_nets.py) run with seeded random weights to what
real Caffe computed for them (tools/make_real_net_fixtures.py)."""

from __future__ import annotations

import json

import numpy as np
import torch

from converters import build_graph, parse_text
from tests.real_nets import C3D_INPUT, FIXTURES, SEED, c3d_input, c3d_sport1m, lrcn_steps, lrcn_word_to_preds
from tests.zoo import draw_weights


def _close(got: torch.Tensor, want: np.ndarray, what: str) -> None:
    assert got.shape == want.shape, f"{what}: shape {tuple(got.shape)} vs Caffe {want.shape}"
    scale = max(float(np.abs(want).max()), 1e-6)
    error = float(np.abs(got.numpy() - want).max())
    assert error <= 1e-4 * scale, f"{what}: max error {error:g} (scale {scale:g})"


def test_lrcn_captioning_net_generates_word_by_word_as_caffe_does() -> None:
    """LRCN's language model, one word per pass: the LSTMs carry their state between passes (a
    caption starts where cont is 0), the second one reads the image features as static input."""
    folder = FIXTURES / "lrcn"
    info = json.loads((folder / "case.json").read_text())
    io = np.load(folder / "io.npz")
    net = lrcn_word_to_preds()
    steps = lrcn_steps()
    shapes = {blob: value.shape for blob, value in steps[0].items()}
    model = build_graph(net, draw_weights(net, shapes, SEED), outputs=info["compared"])
    for k, inputs in enumerate(steps):
        for blob, value in inputs.items():
            assert np.array_equal(value, io[f"step{k}/input:{blob}"]), f"step {k}: input {blob} drifted"
        with torch.no_grad():
            got = model(**{blob: torch.from_numpy(value) for blob, value in inputs.items()})
        for blob in info["compared"]:
            _close(got[blob], io[f"step{k}/output:{blob}"], f"step {k} {blob}")


def test_c3d_sport1m_net_as_c3d_writes_it_gives_the_forks_outputs() -> None:
    """C3D v1.0's own form (V1 layers, CONVOLUTION3D / POOLING3D with kernel_depth, temporal_stride
    and temporal_pad, a VIDEO_DATA source) converts and gives what C3D's own layers computed."""
    folder = FIXTURES / "c3d"
    info = json.loads((folder / "case.json").read_text())
    io = np.load(folder / "io.npz")
    net = parse_text(c3d_sport1m())
    clip = c3d_input()
    assert np.array_equal(clip, io["step0/input:data"])
    model = build_graph(net, draw_weights(net, {"data": C3D_INPUT}, SEED), input_shapes={"data": C3D_INPUT},
                        outputs=info["compared"])  # fmt: skip
    with torch.no_grad():
        got = model(data=torch.from_numpy(clip))
    for blob in info["compared"]:
        _close(got[blob], io[f"step0/output:{blob}"], blob)


def test_a_caffemodel_in_c3d_v1_binary_layout_loads_with_c3ds_5d_shapes() -> None:
    """C3D v1.0's Caffe writes blobs as (num, channels, length, height, width) with the values in
    field 6, where BVLC has ``diff`` (the Sports-1M model is such a file): written here by Google
    protobuf from C3D's field numbers, it reads back value for value and loads into the net."""
    from converters import load_caffe, read_weights

    folder = FIXTURES / "c3d_caffemodel"
    values = np.load(folder / "values.npz")
    weights = read_weights(folder / "c3d_v1.caffemodel")
    assert sorted(weights) == ["conv1a", "fc6"]
    for key in values.files:
        layer, index = key.split("/")
        assert weights[layer][int(index)].shape == values[key].shape
        assert np.array_equal(weights[layer][int(index)], values[key]), key
    shapes = {"data": (1, 2, 4, 6, 6)}
    net = load_caffe(folder / "c3d_v1.prototxt", folder / "c3d_v1.caffemodel", input_shapes=shapes)
    state = net.state_dict()
    assert np.array_equal(state["conv1a.weight"].numpy(), values["conv1a/0"])
    assert np.array_equal(state["fc6.weight"].numpy(), values["fc6/0"].reshape(5, 54))
    with torch.no_grad():
        assert net(data=torch.ones(1, 2, 4, 6, 6))["fc6"].shape == (1, 5)
