# ruff: noqa: E501  (one prototxt layer per line)
"""Every fork-layer case made by an oracle (tests/fixtures/forks, tools/make_fork_fixtures.py):
brocolli-caffe for the Caffe-SSD layers, nearest Upsample, ReLU6, SegNet's unpooling (its
MaxUnPool) and BN (BVLC Scale); the fork oracle (brocolli-caffe with the forks' own layer
sources, tools/build_fork_oracle.sh) for Interp's shrink/pad/second-bottom forms, the BN layers of
SegNet (LEARN), PSPNet and brocolli, SegNet's Upsample, SENet's Axpy, ShuffleNet's ShuffleChannel
and YOLOv2's Reorg; OpenCV dnn for Interp, ShuffleChannel, Reorg, ROIPooling and
ConvolutionDepthwise. Our graph must give the oracle's value for every output of every run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from converters import load_caffe, parse_text
from converters.errors import NetError
from converters.graph.builder import build_graph
from tests.conftest import FIXTURES

FORKS = FIXTURES / "forks"
CASES = sorted(p.parent.name for p in FORKS.glob("*/case.json"))
TOLERANCE = 1e-5  # x max|expected|


def _run(
    folder: Path, prototxt: str, run: dict, inputs_key: str = "input", phase: str = "TEST", **options: Any
) -> tuple[dict, dict]:
    npz = np.load(folder / "io.npz")
    prefix = run["prefix"]
    names = [k.split(":", 1)[1] for k in npz.files if k.startswith(f"{prefix}{inputs_key}:")]
    inputs = {b: torch.from_numpy(npz[f"{prefix}{inputs_key}:{b}"]) for b in names}
    weights = folder / "weights.caffemodel"
    net = load_caffe(
        folder / prototxt,
        weights if weights.exists() else None,
        input_shapes={b: tuple(v.shape) for b, v in inputs.items()},
        outputs=list(run["outputs"]),
        phase=phase,
        **options,
    )
    with torch.no_grad():
        got = net(**inputs)
    return got, {b: npz[f"{prefix}output:{b}"] for b in run["outputs"]}


def _assert_close(name: str, got: dict, want: dict) -> None:
    for blob, expected in want.items():
        value = got[blob].numpy()
        assert value.shape == expected.shape, f"{name} {blob}: shape {value.shape} vs oracle {expected.shape}"
        scale = max(float(np.abs(expected).max()), 1e-6)
        error = float(np.abs(value - expected).max())
        assert error <= TOLERANCE * scale, f"{name} {blob}: max error {error:.3g} (max |value| {scale:.3g})"


def test_the_fork_fixtures_are_present() -> None:
    assert len(CASES) >= 12, "tests/fixtures/forks is missing: regenerate with tools/make_fork_fixtures.py"


@pytest.mark.parametrize("name", CASES)
def test_fork_layer_case_matches_its_oracle(name: str) -> None:
    folder = FORKS / name
    case = json.loads((folder / "case.json").read_text())
    for run in case["runs"]:
        got, want = _run(folder, "net.prototxt", run, phase=case.get("phase", "TEST"), **case.get("load_options", {}))
        _assert_close(f"{name} {run['prefix']}", got, want)


def test_segnet_unpooling_after_our_own_max_pooling_mask_matches_the_oracle() -> None:
    folder = FORKS / "segnet_unpool"
    case = json.loads((folder / "case.json").read_text())
    try:
        got, want = _run(folder, "full.prototxt", case["runs"][0], inputs_key="full_input")
    except NetError as exc:
        if "top" not in str(exc):
            raise
        pytest.skip(f"the Pooling converter has no mask top yet: {exc}")
    _assert_close("segnet_unpool (pooled here)", got, want)


def _net(layers: str, shape: tuple[int, ...] = (1, 4, 6, 8)) -> torch.nn.Module:
    dims = " ".join(f"dim: {d}" for d in shape)
    text = f'layer {{ name: "in" type: "Input" top: "data" input_param {{ shape {{ {dims} }} }} }}\n' + layers
    return build_graph(parse_text(text))


@pytest.mark.parametrize(
    ("layers", "message"),
    [
        (
            'layer { name: "i" type: "Interp" bottom: "data" top: "i" }',
            "layer 'i' (Interp): give zoom_factor",
        ),
        (
            'layer { name: "i" type: "Interp" bottom: "data" top: "i" interp_param { zoom_factor: 2 pad_beg: 1 } }',
            "must not be positive",
        ),
        (
            'layer { name: "u" type: "Upsample" bottom: "data" top: "u" upsample_param { upsample_h: 4 upsample_w: 4 } }',
            "needs the pooling mask",
        ),
        (
            'layer { name: "s" type: "ShuffleChannel" bottom: "data" top: "s" shuffle_channel_param { group: 3 } }',
            "cannot be shuffled",
        ),
        (
            'layer { name: "d" type: "DetectionOutput" bottom: "data" bottom: "data" bottom: "data" top: "d" '
            "detection_output_param { num_classes: 2 background_label_id: -1 } }",
            "share_location with background_label_id -1",
        ),
        (
            'layer { name: "p" type: "Permute" bottom: "data" top: "p" permute_param { order: 0 order: 4 } }',
            "names axis 4",
        ),
        (
            'layer { name: "i" type: "Interp" bottom: "data" top: "i" interp_param { zoom_factr: 2 } }',
            "interp_param.zoom_factr",
        ),
        (
            'layer { name: "i" type: "Interp" bottom: "data" bottom: "data" top: "i" interp_param { zoom_factor: 2 } }',
            "drop zoom_factor (the size would be ambiguous)",
        ),
        (
            'layer { name: "b" type: "BN" bottom: "data" top: "b" top: "m" top: "v" bn_param { bn_mode: INFERENCE } }',
            "only bn_mode LEARN has the batch mean and variance tops",
        ),
        (
            'layer { name: "b" type: "BN" bottom: "data" top: "b" top: "m" bn_param { frozen: true } }',
            "the four-blob BN has one top",
        ),
        (
            'layer { name: "p" type: "Proposal" bottom: "data" bottom: "data" bottom: "data" top: "p" '
            "proposal_param { ratio: 1 scale: 128 scale: 256 } }",
            "bottom 1 (deltas) must be N x 8 x H x W for 2 anchors, got [1, 4, 6, 8]",
        ),
        (
            'layer { name: "p" type: "Proposal" bottom: "data" bottom: "data" bottom: "data" top: "p" '
            "proposal_param { ratio: 1 } }",
            "must be N x 6 x H x W for 3 anchors",  # py-faster-rcnn's default scales 8, 16, 32
        ),
    ],
)
def test_a_wrong_fork_layer_is_one_line_naming_it(layers: str, message: str) -> None:
    with pytest.raises(NetError) as info:
        _net(layers)
    assert message in str(info.value) and "\n" not in str(info.value)


def _darknet_reorg(x: np.ndarray, stride: int, forward: bool) -> np.ndarray:
    """darknet's reorg_cpu loop, as the Caffe YOLOv2 ports call it (w, h, c of the bottom)."""
    batch, c, h, w = x.shape
    flat, out = x.ravel(), np.empty(x.size, dtype=x.dtype)
    out_c = c // (stride * stride)
    for b in range(batch):
        for k in range(c):
            for j in range(h):
                for i in range(w):
                    in_index = i + w * (j + h * (k + c * b))
                    c2, offset = k % out_c, k // out_c
                    w2, h2 = i * stride + offset % stride, j * stride + offset // stride
                    out_index = w2 + w * stride * (h2 + h * stride * (c2 + out_c * b))
                    if forward:
                        out[out_index] = flat[in_index]
                    else:
                        out[in_index] = flat[out_index]
    return out


def test_reorg_reverse_follows_darknets_index_arithmetic() -> None:
    # OpenCV has no reverse Reorg, so the reverse map is held to a transcription of the loop.
    x = torch.randn(2, 32, 2, 3)
    net = _net(
        'layer { name: "b" type: "Reorg" bottom: "data" top: "b" reorg_param { stride: 2 reverse: true } }',
        (2, 32, 2, 3),
    )
    got = net(data=x)["b"]
    assert tuple(got.shape) == (2, 8, 4, 6)
    assert np.array_equal(got.numpy().ravel(), _darknet_reorg(x.numpy(), 2, forward=True))
    forward = _net(
        'layer { name: "r" type: "Reorg" bottom: "data" top: "r" reorg_param { stride: 2 } }', (2, 8, 4, 6)
    )
    y = torch.randn(2, 8, 4, 6)
    assert np.array_equal(forward(data=y)["r"].numpy().ravel(), _darknet_reorg(y.numpy(), 2, forward=False))


def test_a_proposal_layer_without_image_size_or_output_rows_is_refused_in_one_line() -> None:
    def build(info: str, param: str, variant: str, images: int = 1) -> None:
        text = (
            'layer { name: "in" type: "Input" top: "s" top: "d" top: "i" input_param { '
            f"shape {{ dim: {images} dim: 2 dim: 3 dim: 4 }} shape {{ dim: {images} dim: 4 dim: 3 dim: 4 }} "
            f"shape {{ {info} }} }} }}\n"
            'layer { name: "p" type: "Proposal" bottom: "s" bottom: "d" bottom: "i" top: "p" '
            f"proposal_param {{ ratio: 1 scale: 64 {param} }} }}\n"
        )
        build_graph(parse_text(text), variants={"Proposal": variant})

    build("dim: 1 dim: 3", "", "brocolli-caffe")
    build("dim: 1 dim: 3", "", "py-faster-rcnn")
    for info, param, variant, images, message in [
        ("dim: 1 dim: 1", "", "brocolli-caffe", 1,
         "bottom 2 (im_info) must hold the image's height and width, got [1, 1]"),
        ("dim: 1 dim: 3", "post_nms_topn: 0", "brocolli-caffe", 1, "post_nms_topn must be at least 1"),
        ("dim: 1 dim: 2", "", "py-faster-rcnn", 1,
         "bottom 2 (im_info) must hold the image's height, width and scale, got [1, 2]"),
        ("dim: 2 dim: 3", "", "py-faster-rcnn", 2, "py-faster-rcnn's proposal layer takes one image, got a batch of 2"),
    ]:  # fmt: skip
        with pytest.raises(NetError) as error:
            build(info, param, variant, images)
        assert message in str(error.value) and "\n" not in str(error.value)


def test_an_unknown_variant_is_refused_naming_the_choices() -> None:
    with pytest.raises(ValueError, match=r"'Proposal' has no variant 'opencv' \(one of py-faster-rcnn, brocolli"):
        build_graph(parse_text('layer { name: "in" type: "Input" top: "x" }'), variants={"Proposal": "opencv"})
    with pytest.raises(ValueError, match="'ReLU' has no variant 'x' \\(none: it has one meaning\\)"):
        build_graph(parse_text('layer { name: "in" type: "Input" top: "x" }'), variants={"ReLU": "x"})


def test_bottoms_caffe_would_stop_on_are_refused_when_the_net_is_built() -> None:
    # Caffe-SSD's DetectionOutput Reshape: priors x 4 location and priors x classes confidence values
    detection = (
        'layer { name: "in" type: "Input" top: "loc" top: "conf" top: "prior" input_param { '
        "shape { dim: 1 dim: 40 } shape { dim: 1 dim: 30 } shape { dim: 1 dim: 2 dim: 32 } } }\n"
        'layer { name: "det" type: "DetectionOutput" bottom: "loc" bottom: "conf" bottom: "prior" top: "det" '
        "detection_output_param { num_classes: 3 nms_param { nms_threshold: 0.45 } } }\n"
    )
    with pytest.raises(NetError) as error:
        build_graph(parse_text(detection))
    assert "8 priors need 32 location and 24 confidence values per image, the bottoms give 40 and 30" in str(
        error.value
    )
    # Proposal reads the deltas at the scores' positions (the fork does not check; it reads past them)
    proposal = (
        'layer { name: "in" type: "Input" top: "s" top: "d" top: "i" input_param { '
        "shape { dim: 1 dim: 2 dim: 3 dim: 4 } shape { dim: 1 dim: 4 dim: 3 dim: 5 } shape { dim: 1 dim: 3 } } }\n"
        'layer { name: "p" type: "Proposal" bottom: "s" bottom: "d" bottom: "i" top: "p" '
        "proposal_param { ratio: 1 scale: 64 } }\n"
    )
    with pytest.raises(NetError) as error:
        build_graph(parse_text(proposal))
    assert "the deltas [1, 4, 3, 5] must cover the images and positions of the scores [1, 2, 3, 4]" in str(
        error.value
    )


def test_values_caffe_would_stop_on_are_one_line_errors_when_the_net_runs() -> None:
    rois = (
        'layer { name: "in" type: "Input" top: "data" top: "rois" input_param { '
        "shape { dim: 2 dim: 4 dim: 6 dim: 6 } shape { dim: 1 dim: 5 } } }\n"
        'layer { name: "roi" type: "ROIPooling" bottom: "data" bottom: "rois" top: "roi" '
        "roi_pooling_param { pooled_h: 2 pooled_w: 2 spatial_scale: 1 } }\n"
    )
    net = build_graph(parse_text(rois))
    with pytest.raises(ValueError, match=r"^ROIPooling: region 0 names image 2, the batch has 2$"):
        net(data=torch.zeros(2, 4, 6, 6), rois=torch.tensor([[2.0, 0, 0, 3, 3]]))
    unpool = (
        'layer { name: "in" type: "Input" top: "x" top: "mask" input_param { '
        "shape { dim: 1 dim: 1 dim: 2 dim: 2 } shape { dim: 1 dim: 1 dim: 2 dim: 2 } } }\n"
        'layer { name: "up" type: "Upsample" bottom: "x" bottom: "mask" top: "up" upsample_param { scale: 2 } }\n'
    )
    net = build_graph(parse_text(unpool))
    with pytest.raises(ValueError, match=r"^Upsample: mask index 16 is outside the 4 x 4 output"):
        net(x=torch.ones(1, 1, 2, 2), mask=torch.tensor([[[[0.0, 3.0], [8.0, 16.0]]]]))
