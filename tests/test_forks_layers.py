# ruff: noqa: E501  (one prototxt layer per line)
"""Every fork-layer case made by an oracle (tests/fixtures/forks, tools/make_fork_fixtures.py):
brocolli-caffe for the Caffe-SSD layers, nearest Upsample, ReLU6, SegNet's unpooling (its
MaxUnPool) and BN (BVLC Scale); the fork oracle (brocolli-caffe with the forks' own layer
sources, tools/build_fork_oracle.sh) for Interp's shrink/pad/second-bottom forms, the BN layers of
SegNet (LEARN), PSPNet and brocolli, SegNet's Upsample, SENet's Axpy, ShuffleNet's ShuffleChannel,
YOLOv2's Reorg, FlowNet 2.0's Accum, FlowWarp and ChannelNorm and CTPN's Transpose, Reverse and Lstm
(with their backward passes); OpenCV dnn for Interp, ShuffleChannel, Reorg, ROIPooling,
ConvolutionDepthwise and FlowNet 2.0's Correlation, Resample, DataAugmentation, FlowWarp and Accum.
Our graph must give the oracle's value for every output of every run."""

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
from tests.conftest import FIXTURES, assert_gradients_match_caffe

FORKS = FIXTURES / "forks"
CASES = sorted(p.parent.name for p in FORKS.glob("*/case.json"))
TOLERANCE = 1e-5  # x max|expected|


def _inputs(folder: Path, run: dict, inputs_key: str = "input") -> dict[str, torch.Tensor]:
    npz = np.load(folder / "io.npz")
    prefix = run["prefix"]
    names = [k.split(":", 1)[1] for k in npz.files if k.startswith(f"{prefix}{inputs_key}:")]
    return {b: torch.from_numpy(npz[f"{prefix}{inputs_key}:{b}"]) for b in names}


def _load(folder: Path, prototxt: str, run: dict, inputs: dict, outputs: list[str], **options: Any) -> Any:
    weights = folder / "weights.caffemodel"
    return load_caffe(
        folder / prototxt,
        weights if weights.exists() else None,
        input_shapes={b: tuple(v.shape) for b, v in inputs.items()},
        outputs=outputs,
        **options,
    )


def _run(
    folder: Path,
    prototxt: str,
    run: dict,
    inputs_key: str = "input",
    phase: str = "TEST",
    net: Any = None,
    **options: Any,
) -> tuple[dict, dict]:
    """Our outputs and the oracle's for one run (on ``net`` when given: a stateful case's)."""
    npz = np.load(folder / "io.npz")
    inputs = _inputs(folder, run, inputs_key)
    net = net or _load(folder, prototxt, run, inputs, list(run["outputs"]), phase=phase, **options)
    with torch.no_grad():
        got = net(**inputs)
    return got, {b: npz[f"{run['prefix']}output:{b}"] for b in run["outputs"]}


def _assert_close(name: str, got: dict, want: dict) -> None:
    for blob, expected in want.items():
        value = got[blob].detach().numpy()
        assert value.shape == expected.shape, f"{name} {blob}: shape {value.shape} vs oracle {expected.shape}"
        nan = np.isnan(expected)  # FlowWarp's NOT_A_NUMBER fill: NaN exactly where the oracle has it
        assert np.array_equal(np.isnan(value), nan), f"{name} {blob}: NaN where the oracle has none or v.v."
        value, expected = value[~nan], expected[~nan]
        scale = max(float(np.abs(expected).max(initial=0)), 1e-6)
        error = float(np.abs(value - expected).max(initial=0))
        assert error <= TOLERANCE * scale, f"{name} {blob}: max error {error:.3g} (max |value| {scale:.3g})"


def test_the_fork_fixtures_are_present() -> None:
    assert len(CASES) >= 12, "tests/fixtures/forks is missing: regenerate with tools/make_fork_fixtures.py"


@pytest.mark.parametrize("name", CASES)
def test_fork_layer_case_matches_its_oracle(name: str) -> None:
    folder = FORKS / name
    case = json.loads((folder / "case.json").read_text())
    net = None
    for run in case["runs"]:
        if case.get("stateful") and net is None:  # one net for every run: its state carries over
            net = _load(folder, "net.prototxt", run, _inputs(folder, run), list(run["outputs"]))
        got, want = _run(
            folder, "net.prototxt", run, phase=case.get("phase", "TEST"), net=net, **case.get("load_options", {})
        )
        _assert_close(f"{name} {run['prefix']}", got, want)


def test_a_priorbox_keeps_its_boxes_per_size_and_gives_each_call_its_own_copy() -> None:
    """PriorBox's boxes depend on the bottoms' sizes only, so the layer keeps the last ones: one net
    run at the oracle's two sizes, again and back gives the oracle's boxes each time, and writing
    into an output does not reach the next call's."""
    folder = FORKS / "ssd_priorbox"
    runs = json.loads((folder / "case.json").read_text())["runs"]
    first, second = runs[0], runs[1]
    net = _load(folder, "net.prototxt", first, _inputs(folder, first), list(first["outputs"]))
    for run in (first, first, second, second, first):
        got, want = _run(folder, "net.prototxt", run, net=net)
        _assert_close(f"ssd_priorbox {run['prefix']}", got, want)
        for blob in got.values():
            blob.fill_(7.0)


BACKWARD_CASES = [
    name for name in CASES if any(r.get("backward") for r in json.loads((FORKS / name / "case.json").read_text())["runs"])
]


@pytest.mark.parametrize("name", BACKWARD_CASES)
def test_fork_layer_gradients_match_the_oracles_backward_pass(name: str) -> None:
    """The oracle's backward pass, recorded with the fixture (every diff zeroed first): the seeded
    diffs of the outputs give every input's and parameter's diff."""
    folder = FORKS / name
    case = json.loads((folder / "case.json").read_text())
    npz = np.load(folder / "io.npz")
    net = None
    for run in case["runs"]:
        prefix = run["prefix"]
        inputs = {b: v.requires_grad_(True) for b, v in _inputs(folder, run).items()}
        if net is None or not case.get("stateful"):
            net = _load(folder, "net.prototxt", run, inputs, list(run["outputs"]), optimize=False)
        net.zero_grad(set_to_none=True)
        out = net(**inputs)
        total = sum((out[b] * torch.from_numpy(npz[f"{prefix}top_diff:{b}"])).sum() for b in run["outputs"])
        total.backward()
        assert_gradients_match_caffe(name, prefix, npz, net, inputs)


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


# ---------------------------------------------------------------- FlowNet 2.0 and CTPN beyond the oracles
# Correlation, Resample and DataAugmentation have only CUDA code in FlowNet 2.0: where OpenCV dnn
# (the second reader) computes otherwise (case.json "differs"), ours is held to a loop-by-loop
# transcription of the fork's kernel below, and OpenCV's recorded value is shown to differ.


def _case(name: str) -> tuple[Path, dict, Any]:
    folder = FORKS / name
    return folder, json.loads((folder / "case.json").read_text()), np.load(folder / "io.npz")


def _ours(folder: Path, run: dict, blobs: list[str]) -> dict[str, np.ndarray]:
    inputs = _inputs(folder, run)
    net = _load(folder, "net.prototxt", run, inputs, blobs)
    with torch.no_grad():
        return {b: v.numpy() for b, v in net(**inputs).items()}


def _cu_correlation(a: np.ndarray, b: np.ndarray, pad: int, k: int, d: int, s1: int, s2: int, subtract: bool) -> np.ndarray:
    """correlation_layer.cu's CorrelateData / CorrelateDataSubtract, one output value at a time."""
    n, c, h, w = a.shape
    a, b = (np.pad(v.astype(np.float64), ((0, 0), (0, 0), (pad, pad), (pad, pad))) for v in (a, b))
    r = (k - 1) // 2
    grid_r = d // s2
    grid = 2 * grid_r + 1
    out_h, out_w = (int(np.ceil((size + 2 * pad - 2 * (d + r)) / s1)) for size in (h, w))
    out = np.zeros((n, grid * grid, out_h, out_w))
    for item in range(n):
        for ch in range(grid * grid):
            s2o, s2p = (ch % grid - grid_r) * s2, (ch // grid - grid_r) * s2
            for y in range(out_h):
                for x in range(out_w):
                    x1, y1 = x * s1 + r + d, y * s1 + r + d
                    p1 = a[item, :, y1 - r : y1 + r + 1, x1 - r : x1 + r + 1]
                    p2 = b[item, :, y1 + s2p - r : y1 + s2p + r + 1, x1 + s2o - r : x1 + s2o + r + 1]
                    out[item, ch, y, x] = (np.abs(p1 - p2) if subtract else p1 * p2).sum() / (k * k * c)
    return out


def test_correlation_subtract_is_the_forks_mean_absolute_difference_where_opencv_multiplies() -> None:
    folder, case, npz = _case("flownet_correlation")
    assert "corr_sub" in case["differs"]
    for run in case["runs"]:
        inputs = _inputs(folder, run)
        a, b = inputs["a"].numpy(), inputs["b"].numpy()
        ours = _ours(folder, run, ["corr_sub"])["corr_sub"]
        np.testing.assert_allclose(ours, _cu_correlation(a, b, 1, 3, 2, 1, 2, True), rtol=1e-5, atol=1e-6)
        opencv = npz[f"{run['prefix']}opencv:corr_sub"]
        np.testing.assert_allclose(opencv, _cu_correlation(a, b, 1, 3, 2, 1, 2, False), rtol=1e-4, atol=1e-5)
        assert not np.allclose(ours, opencv, atol=1e-3)


def _cu_round(x: np.float32) -> int:
    return int(np.sign(x) * np.floor(np.abs(x) + np.float32(0.5)))


def _cu_resample(x: np.ndarray, out_h: int, out_w: int, mode: str, antialias: bool = True) -> np.ndarray:
    """resample_layer.cu's NearestNeighborKernel / InterpolationKernel, one output value at a time."""
    n, c, in_h, in_w = x.shape
    flat = x.astype(np.float32).reshape(n * c, -1)
    fx, fy = np.float32(in_w) / np.float32(out_w), np.float32(in_h) / np.float32(out_h)
    half = np.float32(0.5)

    def cubic(v: float) -> float:
        v = abs(v)
        return v * v * (1.5 * v - 2.5) + 1.0 if v <= 1 else (v * (v * (-0.5 * v + 2.5) - 4.0) + 2.0 if v < 2 else 0.0)

    def triangle(v: float) -> float:
        return v + 1 if -1 <= v < 0 else (1 - v if 0 <= v <= 1 else 0.0)

    wide = antialias and (fx > 1 or fy > 1)
    ax, ay = (1 / float(fx), 1 / float(fy)) if wide else (1.0, 1.0)
    filt, width = (cubic, 4) if mode == "CUBIC" else (triangle, 2)
    rx = 2 if fx < 1 else int(np.ceil(width / ax))
    ry = 2 if fy < 1 else int(np.ceil(width / ay))
    out = np.zeros((n * c, out_h, out_w), np.float32)
    for plane in range(n * c):
        for yo in range(out_h):
            for xo in range(out_w):
                x_in = np.float32(xo) * fx + fy / np.float32(2) - half
                y_in = np.float32(yo) * fy + fx / np.float32(2) - half
                if mode == "NEAREST":
                    out[plane, yo, xo] = flat.reshape(-1)[plane * in_h * in_w + _cu_round(y_in) * in_w + _cu_round(x_in)]
                    continue
                total = weight = 0.0
                for yy in range(_cu_round(y_in) - ry, _cu_round(y_in) + ry + 1):
                    for xx in range(_cu_round(x_in) - rx, _cu_round(x_in) + rx + 1):
                        if 0 <= yy < in_h and 0 <= xx < in_w:
                            w = ax * filt(ax * float(x_in - xx)) * ay * filt(ay * float(y_in - yy))
                            total += w * float(flat[plane, yy * in_w + xx])
                            weight += w
                out[plane, yo, xo] = 0.0 if weight == 0 else total / weight
    return out.reshape(n, c, out_h, out_w)


def test_resample_follows_the_forks_kernels_where_opencv_resizes_otherwise() -> None:
    folder, case, npz = _case("flownet_resample")
    sizes = {"up_linear": (7, 9, "LINEAR"), "down_linear": (2, 3, "LINEAR"), "down_nearest": (2, 2, "NEAREST")}
    assert set(case["differs"]) == set(sizes)
    for run in case["runs"]:
        x = _inputs(folder, run)["data"].numpy()
        ours = _ours(folder, run, list(sizes))
        for blob, (h, w, mode) in sizes.items():
            want = _cu_resample(x, h, w, mode)
            np.testing.assert_allclose(ours[blob], want, rtol=0, atol=TOLERANCE * float(np.abs(want).max()), err_msg=blob)
            opencv = npz[f"{run['prefix']}opencv:{blob}"]
            assert not np.allclose(ours[blob], opencv, atol=1e-3), blob


def test_resample_cubic_and_unantialiased_shrinking_follow_the_forks_kernel() -> None:
    # OpenCV refuses CUBIC: no second reader; the kernel's transcription is the reference
    layers = (
        'layer { name: "cubic_up" type: "Resample" bottom: "data" top: "cubic_up" resample_param { width: 11 height: 9 type: CUBIC } }\n'
        'layer { name: "cubic_down" type: "Resample" bottom: "data" top: "cubic_down" resample_param { width: 3 height: 4 type: CUBIC } }\n'
        'layer { name: "cubic_mixed" type: "Resample" bottom: "data" top: "cubic_mixed" resample_param { width: 2 height: 13 type: CUBIC } }\n'
        'layer { name: "linear_sharp" type: "Resample" bottom: "data" top: "linear_sharp" resample_param { width: 4 height: 3 antialias: false } }\n'
    )
    x = torch.randn(2, 3, 6, 7, generator=torch.Generator().manual_seed(0))
    got = _net(layers, (2, 3, 6, 7))(data=x)
    for blob, (h, w, mode, antialias) in {
        "cubic_up": (9, 11, "CUBIC", True), "cubic_down": (4, 3, "CUBIC", True),
        "cubic_mixed": (13, 2, "CUBIC", True), "linear_sharp": (3, 4, "LINEAR", False),
    }.items():  # fmt: skip
        want = _cu_resample(x.numpy(), h, w, mode, antialias)
        scale = float(np.abs(want).max())  # float32 sums of weights of both signs: error relative to the values'
        np.testing.assert_allclose(got[blob].numpy(), want, rtol=0, atol=TOLERANCE * scale, err_msg=blob)


def _cu_centre_crop(x: np.ndarray, height: int, width: int) -> np.ndarray:
    """data_augmentation_layer.cu's SpatialAugmentation with the identity coefficients of TEST."""
    n, c, h, w = x.shape
    out = np.zeros((n, c, height, width), np.float32)
    ox, oy = np.float32(-0.5 * width + 0.5 * w), np.float32(-0.5 * height + 0.5 * h)
    for y in range(height):
        for xo in range(width):
            xpos = min(max(np.float32(xo) + ox, np.float32(0)), np.float32(w) - np.float32(1.05))
            ypos = min(max(np.float32(y) + oy, np.float32(0)), np.float32(h) - np.float32(1.05))
            tx, ty = int(np.floor(xpos)), int(np.floor(ypos))
            dx, dy = xpos - np.float32(tx), ypos - np.float32(ty)
            tl, tr = x[:, :, ty, tx], x[:, :, ty, tx + 1]
            bl, br = x[:, :, ty + 1, tx], x[:, :, ty + 1, tx + 1]
            out[:, :, y, xo] = (1 - dx) * (1 - dy) * tl + dx * dy * br + (1 - dx) * dy * bl + dx * (1 - dy) * tr
    return out


def test_data_augmentation_subtracts_a_trained_nets_stored_mean_where_opencv_recomputes_it() -> None:
    from converters import read_weights

    folder, case, npz = _case("flownet_data_augmentation")
    assert set(case["differs"]) == {"aug_pixel", "aug_trained", "aug_crop"}
    stored = read_weights(folder / "weights.caffemodel")
    for run in case["runs"]:
        x = _inputs(folder, run)["data"].numpy()
        ours = _ours(folder, run, list(case["differs"]))
        np.testing.assert_array_equal(ours["aug_pixel"], np.zeros_like(x))  # the first pass's mean is x
        np.testing.assert_allclose(ours["aug_trained"], x - stored["aug_trained"][2].reshape(1, 3, 1, 1), atol=1e-6)
        # the stored per-pixel mean (6 x 6) is not the crop's size: its per-channel mean everywhere
        mean = stored["aug_crop"][1].reshape(1, 3, 6, 6).mean(axis=(2, 3), keepdims=True)
        np.testing.assert_allclose(ours["aug_crop"], _cu_centre_crop(x, 5, 4) - mean, rtol=1e-5, atol=1e-6)
        for blob in case["differs"]:
            opencv = npz[f"{run['prefix']}opencv:{blob}"]
            assert opencv.shape != ours[blob].shape or not np.allclose(ours[blob], opencv, atol=1e-3), blob


def test_data_augmentation_recomputes_its_mean_while_the_count_allows_and_subtracts_given_values() -> None:
    layers = (
        'layer { name: "running" type: "DataAugmentation" bottom: "data" top: "running" augmentation_param { recompute_mean: 2 mean_per_pixel: true } }\n'
        'layer { name: "values" type: "DataAugmentation" bottom: "data" top: "values" augmentation_param { mean: 0.5 mean: -1 mean: 2 mean_per_pixel: false '
        'translate { rand_type: "uniform_bernoulli" spread: 0.4 } } }\n'
    )
    net = _net(layers, (2, 3, 4, 5))
    seeded = torch.Generator().manual_seed(0)
    batches = [torch.randn(2, 3, 4, 5, generator=seeded) for _ in range(3)]
    means = [batches[0].mean(0, keepdim=True), (batches[0].mean(0, keepdim=True) + batches[1].mean(0, keepdim=True)) / 2]
    means.append(means[1])  # the count (3) is past recompute_mean: the mean stays
    for x, mean in zip(batches, means, strict=True):
        out = net(data=x)
        torch.testing.assert_close(out["running"], x - mean, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(out["values"], x - torch.tensor([0.5, -1.0, 2.0]).reshape(1, 3, 1, 1))


def test_flow_warp_fills_nan_and_accum_rounds_sizes_up_where_opencv_does_not() -> None:
    folder, case, npz = _case("flownet_flow_warp_opencv")
    for run in case["runs"]:
        ours = _ours(folder, run, ["warp_nan"])["warp_nan"]
        opencv = npz[f"{run['prefix']}opencv:warp_nan"]
        assert np.isnan(ours).any() and not np.isnan(opencv).any()
        np.testing.assert_array_equal(opencv[np.isnan(ours)], 0)
    folder, case, npz = _case("flownet_accum_opencv")
    for run in case["runs"]:
        ours = _ours(folder, run, ["accum_div"])["accum_div"]
        opencv = npz[f"{run['prefix']}opencv:accum_div"]
        a, b = run["inputs"]["a"], run["inputs"]["b"]
        largest = (max(a[2], b[2]), max(a[3], b[3]))
        rounded = tuple(-(-side // 3) * 3 for side in largest)  # used when larger on both sides
        assert opencv.shape[2:] == largest
        assert ours.shape[2:] == (rounded if min(r - m for r, m in zip(rounded, largest, strict=True)) > 0 else largest)
    assert _ours(folder, case["runs"][0], ["accum_div"])["accum_div"].shape[2:] == (9, 9)  # OpenCV: 8 x 7


def test_ctpn_lstm_computes_each_sequence_of_a_batch_alone_as_its_cuda_code_does() -> None:
    # CTPN's Forward_cpu gives every sample sample 0's recurrent term; its .cu (followed here) does not
    layers = 'layer { name: "l" type: "Lstm" bottom: "data" top: "l" lstm_param { num_output: 4 weight_filler { type: "gaussian" std: 0.5 } } }\n'
    net = build_graph(parse_text(
        'layer { name: "in" type: "Input" top: "data" input_param { shape { dim: 6 dim: 3 dim: 5 } } }\n' + layers
    ), strict=False)  # fmt: skip
    x = torch.randn(6, 3, 5, generator=torch.Generator().manual_seed(0))
    batch = net(data=x)["l"]
    for n in range(3):
        module = next(m for m in net.modules() if m.__class__.__name__ == "CTPNLstm")
        alone = module(x[:, n : n + 1])
        torch.testing.assert_close(batch[:, n : n + 1], alone)


@pytest.mark.parametrize(
    ("layers", "message"),
    [
        ('layer { name: "c" type: "Correlation" bottom: "data" bottom: "data" top: "c" correlation_param { kernel_size: 2 max_displacement: 1 } }',
         "layer 'c' (Correlation): kernel_size must be odd"),
        ('layer { name: "c" type: "Correlation" bottom: "data" bottom: "data" top: "c" correlation_param { kernel_size: 3 max_displacement: 4 } }',
         "is too small for max_displacement 4"),
        ('layer { name: "r" type: "Resample" bottom: "data" top: "r" resample_param { width: 3 height: 3 type: AREA } }',
         "type AREA is refused by the fork"),
        ('layer { name: "r" type: "Resample" bottom: "data" top: "r" resample_param { width: 2 height: 12 type: NEAREST } }',
         "NEAREST from 6 x 8 to 12 x 2 reads outside the image"),
        ('layer { name: "a" type: "DataAugmentation" bottom: "data" top: "a" augmentation_param { augment_during_test: true crop_width: 4 crop_height: 4 zoom { spread: 0.1 } } }',
         "zoom draws random augmentations (augment_during_test)"),
        ('layer { name: "w" type: "FlowWarp" bottom: "data" bottom: "data" top: "w" }',
         "its flow N x 2 x H x W"),
        ('layer { name: "t" type: "Transpose" bottom: "data" top: "data" transpose_param { dim: 0 dim: 1 dim: 3 dim: 2 } }',
         "cannot compute in place"),
        ('layer { name: "t" type: "Transpose" bottom: "data" top: "t" transpose_param { dim: 0 dim: 1 dim: 1 dim: 2 } }',
         "must name each of the bottom's 4 axes once"),
        ('layer { name: "r" type: "Reverse" bottom: "data" top: "r" reverse_param { axis: -1 } }',
         "axis -1 must be in [0, 4)"),
        ('layer { name: "l" type: "Lstm" bottom: "data" bottom: "data" top: "l" lstm_param { num_output: 2 } }',
         "for a batch of 1"),
    ],
)  # fmt: skip
def test_a_wrong_flownet_or_ctpn_layer_is_one_line_naming_it(layers: str, message: str) -> None:
    with pytest.raises(NetError) as info:
        _net(layers)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_flownet_fields_in_a_caffemodel_are_read_by_the_layers_type() -> None:
    # flow_warp_param is 159, the YOLOv2 forks' reorg_param; coeff_schedule_param is 148, BVLC's clip_param
    from converters.caffe.binary import decode_message, encode_message
    from converters.caffe.forks import fork_fields
    from converters.caffe.message import Message

    layer = Message("LayerParameter", name="w", type="FlowWarp")
    layer.set("flow_warp_param", Message("FlowWarpParameter", fill_value="NOT_A_NUMBER"))
    read = fork_fields(decode_message(encode_message(layer), "LayerParameter"))
    assert str(read.get("flow_warp_param").get("fill_value")) == "NOT_A_NUMBER"
    aug = Message("LayerParameter", name="a", type="DataAugmentation")
    aug.set("coeff_schedule_param", Message("CoeffScheduleParameter", half_life=50000.0, final_coeff=2.0))
    aug.set("augmentation_param", Message("AugmentationParameter", recompute_mean=1000))
    read = fork_fields(decode_message(encode_message(aug), "LayerParameter"))
    assert read.get("coeff_schedule_param").get("final_coeff") == 2.0 and "clip_param" not in read
    p = read.get("augmentation_param")
    assert p.get("recompute_mean") == 1000 and p.get("mean_per_pixel") is True and p.get("max_multiplier") == 255
    resample = _net('layer { name: "r" type: "Resample" bottom: "data" top: "r" resample_param { width: 3 height: 2 } }')
    assert "LINEAR, antialias=True" in repr(resample.r)


def test_the_flownet2_layers_of_opencvs_caffe_tests_all_convert() -> None:
    """OpenCV dnn's Caffe importer tests run FlowNet 2.0 with these fork types (its test_layers and
    test_caffe_importer cases): each converts here, and each has a fixture its oracle made
    (tests/test_architecture.py checks that for every registered type)."""
    from converters import registered_types

    flownet2 = {"Correlation", "Resample", "FlowWarp", "Accum", "DataAugmentation", "ChannelNorm"}
    assert flownet2 <= set(registered_types())


def test_region_pooling_in_chunks_gives_what_one_step_gives_and_names_the_bad_region_by_its_row(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from converters.layers.forks import rcnn

    generator = torch.Generator().manual_seed(5)
    x = torch.randn(2, 8, 9, 11, generator=generator)
    rois = torch.rand(37, 5, generator=generator) * 40
    rois[:, 0] = (rois[:, 0] > 20).float()
    layers = [rcnn.ROIPooling(3, 2, 0.25), rcnn.PSROIPooling(2, 2, 0.25)]
    whole = [layer(x, rois) for layer in layers]
    monkeypatch.setattr(rcnn, "CHUNK_VALUES", 1)  # one region per chunk
    for layer, expected in zip(layers, whole, strict=True):
        torch.testing.assert_close(layer(x, rois), expected, rtol=0, atol=0)
        bad = rois.clone()
        bad[30, 0] = 7
        with pytest.raises(ValueError, match=rf"^{type(layer).__name__}: region 30 names image 7, the batch has 2$"):
            layer(x, bad)


@pytest.mark.parametrize("optimize", [False, True])
def test_region_pooling_over_no_regions_gives_empty_outputs_as_caffe_does(optimize: bool) -> None:
    """A proposal layer may keep no region (all under its min_size): Caffe reshapes the regions to 0 x 5
    and every layer after them to 0 rows; the pooling then must not fail on the empty regions."""
    net = load_caffe(
        parse_text(
            'layer { name: "in" type: "Input" top: "data" top: "rois" '
            "input_param { shape { dim: 1 dim: 8 dim: 6 dim: 6 } shape { dim: 1 dim: 5 } } } "
            'layer { name: "roi" type: "ROIPooling" bottom: "data" bottom: "rois" top: "roi" '
            "roi_pooling_param { pooled_h: 2 pooled_w: 2 spatial_scale: 0.5 } } "
            'layer { name: "ps" type: "PSROIPooling" bottom: "data" bottom: "rois" top: "ps" '
            "psroi_pooling_param { output_dim: 2 group_size: 2 spatial_scale: 0.5 } } "
            'layer { name: "fc" type: "InnerProduct" bottom: "roi" top: "fc" inner_product_param { num_output: 3 } } '
            'layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" } '
            'layer { name: "best" type: "ArgMax" bottom: "prob" top: "best" }'
        ),
        None,
        optimize=optimize,
    )
    with torch.no_grad():
        out = net(data=torch.randn(1, 8, 6, 6), rois=torch.zeros(0, 5))
    assert tuple(out["ps"].shape) == (0, 2, 2, 2) and tuple(out["best"].shape) == (0, 1, 1)
