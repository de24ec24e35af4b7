"""Real fork models from public projects (../shared/real-caffe-models) run to the fork's outputs:
the Caffe-SSD face detector (Normalize, PriorBox, Permute, DetectionOutput) and ENet (SegNet's BN
and mask Upsample, max pooling with its mask top), both as brocolli-caffe computed them
(tools/make_fork_fixtures.py --real; only the outputs are committed)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from converters import load_caffe
from tests.conftest import FIXTURES, need_shared

REAL = FIXTURES / "forks_real"


def _expected(name: str) -> tuple[dict, dict[str, np.ndarray]]:
    info = json.loads((REAL / f"{name}.json").read_text())
    return info, dict(np.load(REAL / f"{name}.npz"))


def _input(shape: list[int]) -> torch.Tensor:
    return torch.from_numpy((np.random.default_rng(0).normal(0, 1, shape) * 50).astype(np.float32))


def _load(name: str, weights: str, outputs: list[str]) -> tuple[torch.nn.Module, list[int]]:
    """The real model of ../shared with the input size its fixture was made at."""
    folder = need_shared("real-caffe-models", name)
    shape = json.loads((REAL / f"{name}.json").read_text())["inputs"]["data"]
    net = load_caffe(
        folder / "deploy.prototxt", folder / weights, input_shapes={"data": tuple(shape)}, outputs=outputs
    )
    return net, shape


def _close(blob: str, got: torch.Tensor, want: np.ndarray, tolerance: float = 1e-4) -> float:
    value = got.detach().numpy()
    assert value.shape == want.shape, f"{blob}: shape {value.shape} vs Caffe {want.shape}"
    error = float(np.abs(value - want).max())
    scale = max(float(np.abs(want).max()), 1e-6)
    assert error <= tolerance * scale, f"{blob}: max error {error:.3g} (max |value| {scale:.3g})"
    return error / scale


def test_the_ssd_face_detector_gives_the_forks_detections() -> None:
    _, want = _expected("yufacedetectnet_v2_ssd")
    net, shape = _load("yufacedetectnet_v2_ssd", "yufacedetectnet-open-v2.caffemodel", list(want))
    with torch.no_grad():
        got = net(data=_input(shape))
    for blob in ("mbox_loc", "mbox_conf_flatten", "mbox_priorbox"):
        _close(blob, got[blob], want[blob])
    detections, expected = got["detection_out"].numpy(), want["detection_out"]
    assert detections.shape == expected.shape and expected.shape[2] > 10
    assert np.array_equal(detections[..., :2], expected[..., :2])  # image ids and labels, in order
    assert np.abs(detections[..., 2:] - expected[..., 2:]).max() <= 1e-4


def test_enet_with_segnet_bn_and_unpooling_gives_the_forks_scores() -> None:
    _, want = _expected("enet_cityscapes")
    net, shape = _load("enet_cityscapes", "cityscapes_weights.caffemodel", list(want))
    assert len(net.caffe.unused_weights) > 80  # the training net's BN layers, merged in the deploy
    with torch.no_grad():
        got = net(data=_input(shape))
    for blob in want:
        _close(blob, got[blob], want[blob])
    assert torch.equal(got["deconv6_0_0"].argmax(1), torch.from_numpy(want["deconv6_0_0"]).argmax(1))


@pytest.mark.parametrize("name", ["yufacedetectnet_v2_ssd", "enet_cityscapes"])
def test_the_real_fork_fixtures_record_their_oracle(name: str) -> None:
    info, want = _expected(name)
    assert "brocolli-caffe" in info["oracle"] and want


def _program_outputs(net: torch.nn.Module, path, x: torch.Tensor) -> dict[str, torch.Tensor]:
    from converters import export_program

    report = export_program(net, path, dynamic=False)
    program = torch.export.load(str(path)).module()
    with torch.no_grad():
        values = program(x)  # positional, in report.inputs order
    return dict(zip(report.outputs, values, strict=True))


@pytest.mark.slow
def test_enet_as_a_torch_export_program_gives_the_forks_scores(tmp_path) -> None:
    _, want = _expected("enet_cityscapes")
    net, shape = _load("enet_cityscapes", "cityscapes_weights.caffemodel", list(want))
    got = _program_outputs(net, tmp_path / "enet.pt2", _input(shape))
    for blob in want:
        _close(blob, got[blob], want[blob])


@pytest.mark.slow
def test_the_ssd_face_detector_heads_as_a_torch_export_program_give_the_forks_values(tmp_path) -> None:
    _, want = _expected("yufacedetectnet_v2_ssd")
    heads = ["mbox_loc", "mbox_conf_flatten", "mbox_priorbox"]
    net, shape = _load("yufacedetectnet_v2_ssd", "yufacedetectnet-open-v2.caffemodel", heads)
    got = _program_outputs(net, tmp_path / "faces.pt2", _input(shape))
    for blob in heads:
        _close(blob, got[blob], want[blob])
