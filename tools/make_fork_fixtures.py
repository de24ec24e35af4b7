#!/usr/bin/env python3
# ruff: noqa: E501  (one prototxt layer per line)
"""Regenerate the fork-layer fixtures (tests/fixtures/forks/) with the oracles.

Each case is a small net that uses a Caffe fork's layer types (``net.prototxt``, what fcn-port
converts) and the outputs an independent implementation of the fork computed for seeded inputs:

- ``caffe``: brocolli-caffe 9.0.2 (BVLC Caffe 1.0 plus the Caffe-SSD layers, BN, nearest
  Upsample, ReLU6, MaxUnPool), built as tools/README.md says. Where the fork's layer has another
  name there (SegNet's unpooling is its ``MaxUnPool``, a depthwise type is a grouped
  ``Convolution``), the net it ran is ``oracle.prototxt``: the same net with that layer renamed.
- ``forks``: the same build plus the forks' own layer sources (tools/build_fork_oracle.sh):
  PSPNet's ``Interp`` and four-blob BN (as ``PSPBN``), brocolli's own four-blob ``BN`` (its build
  never registers it) and SegNet's BN (as ``SegNetBN`` with ``segnet_bn_param``). Our nets use the
  forks' names; ``oracle.prototxt`` uses the oracle's, and the weights are rewritten with the
  forks' type names (``weights.caffemodel`` then holds just names, types and blobs). Run these
  cases with ``PYTHONPATH=/work/oracle/forks/src/python``.
- ``opencv``: OpenCV dnn's Caffe importer (``cv2.dnn.readNetFromCaffe``), an independent second
  reader that implements DeepLab's ``Interp``, ``ShuffleChannel``, ``Axpy`` and
  ``ConvolutionDepthwise``; the weights it reads are saved by the Caffe oracle.

Run from the repository root with the oracle's Python::

    GLOG_minloglevel=2 PYTHONPATH=/work/oracle/brocolli-caffe-9.0.2/python \\
        /work/oracle/venv/bin/python tools/make_fork_fixtures.py [CASE ...]

Files per case: ``net.prototxt``, maybe ``oracle.prototxt`` and ``weights.caffemodel``, ``io.npz``
(``run<i>/input:<blob>``, ``run<i>/output:<blob>``) and ``case.json`` (oracle, layer types, runs).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("GLOG_minloglevel", "2")

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "tests" / "fixtures" / "forks"
ORACLES = {
    "caffe": "brocolli-caffe 9.0.2 (BVLC Caffe 1.0 + Caffe-SSD layers), CPU, OpenBLAS 1 thread",
    "forks": "brocolli-caffe 9.0.2 + PSPNet's Interp and BN + SegNet's BN (+ FlowNet 2.0's Accum, "
    "ChannelNorm, FlowWarp and CTPN's Transpose, Reverse, Lstm), compiled from the forks' sources "
    "(tools/build_fork_oracle.sh), CPU, OpenBLAS 1 thread",
    "opencv": "OpenCV dnn readNetFromCaffe (opencv-python-headless 4.x)",
}

Shape = tuple[int, ...]


@dataclass
class Case:
    name: str
    oracle: str
    net: str
    runs: list[dict[str, Shape]]
    description: str
    oracle_net: str | None = None
    inputs: Callable[[np.random.Generator, str, Shape], np.ndarray] | None = None
    params: Callable[[np.random.Generator, str, list[Shape]], list[np.ndarray]] | None = None
    outputs: list[str] = field(default_factory=list)
    recorded: list[str] = field(default_factory=list)
    """Blobs of the oracle net (not outputs of ours) to keep, e.g. a pooling mask."""
    phase: str = "TEST"
    types: dict[str, str] = field(default_factory=dict)
    """Oracle layer type -> the fork's type, for the weights file (``forks`` cases)."""
    load_options: dict[str, Any] = field(default_factory=dict)
    """Options the test passes to ``load_caffe`` (a fork's ``variants``)."""
    backward: bool = False
    """Also run the oracle's backward pass (``force_backward``), as tools/make_layer_fixtures.py
    does: every output gets a seeded diff (``top_diff:<blob>``); the inputs' diffs (``grad:<blob>``)
    and the parameters' (``param_grad:<layer>/<j>``, in the fork's blob order) are recorded. Every
    diff is zeroed first, as in a fresh net: FlowWarp writes no flow diff where it fills, Accum none
    for its reference bottom, CTPN's Lstm none for its continuation (Caffe would leave old values)."""
    stateful: bool = False
    """The runs share one net and its state (CTPN's Lstm with a continuation bottom starts from the
    previous pass's final state): the test reuses one converted net for every run."""
    differs: dict[str, str] = field(default_factory=dict)
    """``opencv`` cases: output blob -> why OpenCV's value is not the fork's. Kept as
    ``run<i>/opencv:<blob>``, not as an output: tests/test_forks_layers.py holds these to the
    fork's kernels and shows OpenCV's value differs."""
    blob_orders: dict[str, tuple[int, ...]] = field(default_factory=dict)
    """Oracle layer type -> the fork's blob order as indices of the oracle's blobs (BVLC's LSTM
    holds ``W_x, b, W_h``, CTPN's Lstm ``W_x, W_h, b``)."""
    weights: Callable[[np.random.Generator], dict[str, tuple[str, list[np.ndarray]]]] | None = None
    """The weights (layer -> type and blobs) to write where no Caffe here can build the layer
    (the GPU-only FlowNet types in ``opencv`` cases)."""
    notes: list[str] = field(default_factory=list)


def input_layer(blobs: dict[str, Shape]) -> str:
    shapes = " ".join("shape { " + " ".join(f"dim: {d}" for d in s) + " }" for s in blobs.values())
    tops = " ".join(f'top: "{b}"' for b in blobs)
    return f'layer {{ name: "input" type: "Input" {tops} input_param {{ {shapes} }} }}\n'


def default_params(rng: np.random.Generator, layer: str, shapes: list[Shape]) -> list[np.ndarray]:
    out = []
    for i, shape in enumerate(shapes):
        if i == 0 and len(shape) == 4:
            fan_in = int(np.prod(shape[1:]))
            out.append(rng.normal(0, np.sqrt(2.0 / fan_in), shape))
        else:
            out.append(rng.normal(0, 0.5, shape))
    return out


def bn_params(rng: np.random.Generator, layer: str, shapes: list[Shape]) -> list[np.ndarray]:
    """The four-blob BN: slope, bias, moving mean, and a positive moving variance or inverse std."""
    slope, bias, mean, statistic = shapes
    return [
        rng.normal(1, 0.5, slope),
        rng.normal(0, 0.5, bias),
        rng.normal(0, 0.5, mean),
        rng.uniform(0.5, 2.0, statistic),
    ]


def normalize_params(rng: np.random.Generator, layer: str, shapes: list[Shape]) -> list[np.ndarray]:
    return [rng.normal(10, 3, shapes[0])]


def detection_inputs(rng: np.random.Generator, blob: str, shape: Shape) -> np.ndarray:
    if blob == "conf":
        return rng.uniform(0, 1, shape)
    if blob == "loc":
        return rng.normal(0, 0.4, shape)
    return rng.normal(0, 1, shape)


def roi_inputs(rng: np.random.Generator, blob: str, shape: Shape) -> np.ndarray:
    if blob != "rois":
        return rng.normal(0, 1, shape)
    return np.array(
        [
            [0, 1.0, 1.0, 8.0, 9.0],
            [1, 0.0, 0.0, 21.0, 17.0],
            [0, 4.5, 2.5, 7.5, 3.5],  # halves: C's round goes away from zero
            [1, 18.0, 14.0, 30.0, 25.0],  # past the map's edge
            [0, 6.0, 6.0, 5.0, 5.0],  # inverted: the forks' 1x1 / 0.1 minimum
        ]
    )


def proposal_inputs(rng: np.random.Generator, blob: str, shape: Shape) -> np.ndarray:
    if blob == "scores":
        return rng.uniform(0, 1, shape)
    if blob == "deltas":
        return rng.normal(0, 0.3, shape)
    return np.tile(np.array([90.0, 120.0, 1.0])[: shape[1]], (shape[0], 1))  # im_info: h, w, scale


def flow_inputs(rng: np.random.Generator, blob: str, shape: Shape) -> np.ndarray:
    """Images N(0, 1); flows N(0, 2.5) (some pixels warp from outside the image) with a few set on
    the edges: x + fx = W - 0.5 (right neighbour clamped), = W (outside), y + fy = 0 and = H - 1."""
    if blob != "flow":
        return rng.normal(0, 1, shape)
    flow = rng.normal(0, 2.5, shape)
    n, _, h, w = shape
    flow[:, 0, 0, 0] = w - 0.5
    flow[:, 0, 1, 0] = w
    flow[:, 1, min(2, h - 1), 1] = -min(2, h - 1)
    flow[:, 1, 0, 2] = h - 1
    return flow


def norm_inputs(rng: np.random.Generator, blob: str, shape: Shape) -> np.ndarray:
    """N(0, 1) with every channel 0 at some positions (norm 0: the fork's gradient there is 0)."""
    x = rng.normal(0, 1, shape)
    x[..., ::3, ::2] = 0
    return x


def continuation_inputs() -> Callable[[np.random.Generator, str, Shape], np.ndarray]:
    """x N(0, 1); CTPN's Lstm continuation, run by run: a sequence cut at step 2, then one carrying
    the first run's final state (1 at step 0) and cut at step 1."""
    conts = iter([[1.0, 1.0, 0.0, 1.0, 1.0], [1.0, 0.0, 1.0, 1.0, 1.0]])

    def make(rng: np.random.Generator, blob: str, shape: Shape) -> np.ndarray:
        return np.reshape(next(conts), shape) if blob == "cont" else rng.normal(0, 1, shape)

    return make


def augmentation_weights(rng: np.random.Generator) -> dict[str, tuple[str, list[np.ndarray]]]:
    """DataAugmentation's blobs (iteration count, per-pixel mean, per-channel mean): a count of 0
    (the first pass recomputes the means, as OpenCV always does) and a trained net's 5000."""

    def blobs(count: float, mean_shape: Shape) -> list[np.ndarray]:
        return [np.full((1, 1, 1, 1), count), rng.uniform(0, 1, mean_shape), rng.uniform(-0.5, 0.5, (1, 3, 1, 1))]

    return {
        "aug": ("DataAugmentation", blobs(0, (1, 3, 5, 7))),
        "aug_pixel": ("DataAugmentation", blobs(0, (1, 3, 5, 7))),
        "aug_trained": ("DataAugmentation", blobs(5000, (1, 3, 5, 7))),
        "aug_crop": ("DataAugmentation", blobs(5000, (1, 3, 6, 6))),
    }


def build_cases() -> list[Case]:
    cases: list[Case] = []
    # ---------------- brocolli-caffe
    bn = ('layer { name: "bn" type: "BN" bottom: "data" top: "bn" bn_param { bn_mode: INFERENCE '
          'scale_filler { type: "constant" value: 1 } shift_filler { type: "constant" value: 0.001 } } }\n')
    cases.append(Case(
        "segnet_bn", "caffe", input_layer({"data": (2, 3, 5, 7)}) + bn,
        [{"data": (2, 3, 5, 7)}, {"data": (1, 3, 1, 1)}],
        "SegNet/ENet BN in INFERENCE mode (x * scale + shift, blobs 1 x C x 1 x 1): the oracle "
        "runs BVLC Scale with a bias on the same values; weights.caffemodel is written with the "
        "oracle's caffe_pb2 (the BN blob shapes), not by fcn-port",
        oracle_net=input_layer({"data": (2, 3, 5, 7)})
        + 'layer { name: "bn" type: "Scale" bottom: "data" top: "bn" scale_param { bias_term: true } }\n',
        params=lambda rng, name, shapes: [rng.normal(1, 0.5, shapes[0]), rng.normal(0, 0.5, shapes[1])],
    ))
    cases.append(Case(
        "upsample_nearest", "caffe",
        input_layer({"data": (1, 2, 3, 4)})
        + 'layer { name: "up2" type: "Upsample" bottom: "data" top: "up2" upsample_param { scale: 2 } }\n'
        + 'layer { name: "up3" type: "Upsample" bottom: "data" top: "up3" upsample_param { scale: 3 } }\n'
        + 'layer { name: "up1" type: "Upsample" bottom: "data" top: "up1" }\n'
        + 'layer { name: "upw" type: "Upsample" bottom: "flat" top: "upw" upsample_param { scale: 2 dims_num: 3 } }\n',
        [{"data": (1, 2, 3, 4)}, {"data": (2, 3, 5, 1)}],
        "the YOLO forks' nearest Upsample: scale 2, 3, the default (1), and dims_num 3 (last axis only)",
    ))
    # dims_num 3 needs a 3-axis bottom: reshape first (Reshape is BVLC)
    cases[-1].net = cases[-1].net.replace(
        'layer { name: "upw"',
        'layer { name: "flat" type: "Reshape" bottom: "data" top: "flat" reshape_param { shape { dim: 0 dim: 0 dim: -1 } } }\n'
        'layer { name: "upw"',
    )
    pool = ('layer { name: "pool" type: "Pooling" bottom: "data" top: "pool" top: "mask" '
            "pooling_param { pool: MAX kernel_size: 2 stride: 2 } }\n")
    unpool_net = input_layer({"pool": (1, 3, 4, 5), "mask": (1, 3, 4, 5)}) + (
        'layer { name: "up" type: "Upsample" bottom: "pool" bottom: "mask" top: "up" '
        "upsample_param { scale: 2 } }\n"
        'layer { name: "up_hw" type: "Upsample" bottom: "pool" bottom: "mask" top: "up_hw" '
        "upsample_param { upsample_h: 7 upsample_w: 9 } }\n"
        'layer { name: "up_pad" type: "Upsample" bottom: "pool" bottom: "mask" top: "up_pad" '
        "upsample_param { scale: 2 pad_out_h: true pad_out_w: true } }\n"
    )
    unpool_oracle = input_layer({"data": (1, 3, 7, 9)}) + pool + (
        'layer { name: "up" type: "MaxUnPool" bottom: "pool" bottom: "mask" top: "up" max_unpool_param { dst_h: 8 dst_w: 10 } }\n'
        'layer { name: "up_hw" type: "MaxUnPool" bottom: "pool" bottom: "mask" top: "up_hw" max_unpool_param { dst_h: 7 dst_w: 9 } }\n'
        'layer { name: "up_pad" type: "MaxUnPool" bottom: "pool" bottom: "mask" top: "up_pad" max_unpool_param { dst_h: 7 dst_w: 9 } }\n'
    )
    cases.append(Case(
        "segnet_unpool", "caffe", unpool_net, [{"data": (1, 3, 7, 9)}],
        "SegNet's Upsample with the max-pooling mask (scale 2; upsample_h/w; pad_out_h/w): the "
        "oracle pools a 7x9 input (ceil: 4x5 with mask) and unpools with its MaxUnPool, the same "
        "scatter; net.prototxt reads pool and mask as inputs, full.prototxt pools too",
        oracle_net=unpool_oracle, recorded=["pool", "mask"],
    ))
    cases.append(Case(
        "ssd_normalize_permute", "caffe",
        input_layer({"data": (1, 4, 3, 5)})
        + 'layer { name: "norm" type: "Normalize" bottom: "data" top: "norm" norm_param { across_spatial: false '
        'scale_filler { type: "constant" value: 20 } channel_shared: false } }\n'
        + 'layer { name: "norm_all" type: "Normalize" bottom: "data" top: "norm_all" norm_param { across_spatial: true channel_shared: true } }\n'
        + 'layer { name: "norm_eps" type: "Normalize" bottom: "data" top: "norm_eps" norm_param { across_spatial: false eps: 0.5 } }\n'
        + 'layer { name: "perm" type: "Permute" bottom: "norm" top: "perm" permute_param { order: 0 order: 2 order: 3 order: 1 } }\n'
        + 'layer { name: "perm2" type: "Permute" bottom: "data" top: "perm2" permute_param { order: 1 order: 0 } }\n',
        [{"data": (1, 4, 3, 5)}, {"data": (2, 4, 1, 2)}],
        "Normalize (per position / per sample, per-channel / shared scale, eps) and Permute "
        "(full order; a partial order completed with the remaining axes)",
        params=normalize_params,
    ))
    priors = (
        'layer { name: "pb1" type: "PriorBox" bottom: "feat" bottom: "image" top: "pb1" prior_box_param { '
        "min_size: 8 max_size: 16 aspect_ratio: 2 flip: true clip: false variance: 0.1 variance: 0.1 "
        "variance: 0.2 variance: 0.2 } }\n"
        'layer { name: "pb2" type: "PriorBox" bottom: "feat" bottom: "image" top: "pb2" prior_box_param { '
        "min_size: 10 min_size: 20 aspect_ratio: 2 aspect_ratio: 3 aspect_ratio: 2 flip: false clip: true "
        "variance: 0.1 step: 6 offset: 0.25 } }\n"
        'layer { name: "pb3" type: "PriorBox" bottom: "feat" bottom: "image" top: "pb3" prior_box_param { '
        "min_size: 30.5 max_size: 60 aspect_ratio: 0.5 flip: true clip: true img_h: 50 img_w: 40 "
        "step_h: 7 step_w: 5 } }\n"
    )
    cases.append(Case(
        "ssd_priorbox", "caffe", input_layer({"feat": (1, 2, 3, 4), "image": (1, 3, 24, 30)}) + priors,
        [{"feat": (1, 2, 3, 4), "image": (1, 3, 24, 30)}, {"feat": (2, 2, 5, 2), "image": (2, 3, 41, 17)}],
        "PriorBox: min/max sizes, aspect ratios with flip and a repeat, clip, one or four variances, "
        "step, step_h/w, img_h/w, offset; sizes from the image bottom",
    ))
    for name, param, desc in [
        ("ssd_detection", "num_classes: 3 share_location: true background_label_id: 0 "
         "nms_param { nms_threshold: 0.45 top_k: 20 } code_type: CENTER_SIZE keep_top_k: 10 "
         "confidence_threshold: 0.3",
         "CENTER_SIZE, shared locations, threshold, NMS top_k and keep_top_k across classes"),
        ("ssd_detection_corner", "num_classes: 3 share_location: false background_label_id: 2 "
         "nms_param { nms_threshold: 0.3 eta: 0.8 } code_type: CORNER confidence_threshold: 0.5",
         "CORNER, one location per class, background 2, adaptive NMS (eta)"),
        ("ssd_detection_corner_size", "num_classes: 3 background_label_id: 1 "
         "nms_param { nms_threshold: 0.6 top_k: 5 } code_type: CORNER_SIZE variance_encoded_in_target: true "
         "keep_top_k: 7",
         "CORNER_SIZE with variance encoded in the target, background 1, no threshold"),
        ("ssd_detection_none", "num_classes: 3 nms_param { nms_threshold: 0.45 } code_type: CENTER_SIZE "
         "confidence_threshold: 0.999",
         "nothing above the threshold: the fork's rows of -1 with the image id"),
    ]:
        loc_classes = 3 if "share_location: false" in param else 1
        net = (
            input_layer({"feat": (1, 2, 3, 4), "image": (1, 3, 24, 32), "loc": (2, 48 * 4 * loc_classes),
                         "conf": (2, 48 * 3)})
            + priors.split("\n")[0].replace('"pb1"', '"prior"', 2) + "\n"
            + 'layer { name: "det" type: "DetectionOutput" bottom: "loc" bottom: "conf" bottom: "prior" '
            f'top: "det" detection_output_param {{ {param} }} }}\n'
        )
        cases.append(Case(
            name, "caffe", net,
            [{"feat": (1, 2, 3, 4), "image": (1, 3, 24, 32), "loc": (2, 48 * 4 * loc_classes), "conf": (2, 48 * 3)}],
            "DetectionOutput: " + desc, inputs=detection_inputs,
        ))
    cases.append(Case(
        "relu6", "caffe",
        input_layer({"data": (2, 3, 4, 5)})
        + 'layer { name: "r6" type: "ReLU6" bottom: "data" top: "r6" }\n'
        + 'layer { name: "r6_leaky" type: "ReLU6" bottom: "data" top: "r6_leaky" relu6_param { negative_slope: 0.1 threshold: 2.5 } }\n',
        [{"data": (2, 3, 4, 5)}],
        "ReLU6, plain and with negative_slope and threshold", inputs=lambda rng, b, s: rng.normal(0, 5, s),
    ))
    dw = ('layer { name: "dw" type: "DepthwiseConvolution" bottom: "data" top: "dw" '
          "convolution_param { num_output: 4 group: 4 kernel_size: 3 pad: 1 stride: 2 } }\n"
          'layer { name: "dw2" type: "DepthwiseConvolution" bottom: "dw" top: "dw2" '
          "convolution_param { num_output: 8 kernel_size: 3 bias_term: false } }\n")
    cases.append(Case(
        "depthwise_convolution", "caffe", input_layer({"data": (1, 4, 7, 8)}) + dw,
        [{"data": (1, 4, 7, 8)}, {"data": (2, 4, 5, 5)}],
        "DepthwiseConvolution (a Convolution with group = channels, given or left out; "
        "channel multiplier 2): the oracle runs grouped Convolutions",
        oracle_net=input_layer({"data": (1, 4, 7, 8)}) + dw.replace('"DepthwiseConvolution"', '"Convolution"').replace(
            "num_output: 8 kernel_size", "num_output: 8 group: 4 kernel_size"),
    ))
    for name, anchors, maps, param, desc in [
        ("proposal", 6, (2, 6, 8),
         "feat_stride: 16 base_size: 16 min_size: 16 ratio: 0.5 ratio: 1 ratio: 2 scale: 64 scale: 128 "
         "pre_nms_topn: 60 post_nms_topn: 25 nms_thresh: 0.6",
         "two images, 3 ratios x 2 scales, boxes clipped to im_info and small ones scored 0, "
         "pre_nms_topn, greedy NMS, post_nms_topn, rois and scores"),
        ("proposal_all", 9, (1, 10, 14),
         "min_size: 1 ratio: 0.5 ratio: 1 ratio: 2 scale: 128 scale: 256 scale: 512 feat_stride: 8",
         "one top, every proposal through NMS (the defaults 6000 / 300 / 0.7), stride 8"),
        ("proposal_ties", 3, (2, 5, 7),
         "min_size: 40 ratio: 0.5 ratio: 1 ratio: 2 scale: 32 pre_nms_topn: 1000 post_nms_topn: 300",
         "most boxes under min_size, scored 0: the rois of equal score come out in the order the "
         "fork's partial quicksort leaves them"),
    ]:
        n, h, w = maps
        blobs = {"scores": (n, 2 * anchors, h, w), "deltas": (n, 4 * anchors, h, w), "im_info": (n, 3)}
        tops = 'top: "rois"' if name == "proposal_all" else 'top: "rois" top: "roi_scores"'
        cases.append(Case(
            name, "caffe",
            input_layer(blobs)
            + f'layer {{ name: "proposal" type: "Proposal" bottom: "scores" bottom: "deltas" bottom: "im_info" {tops} '
            f"proposal_param {{ {param} }} }}\n",
            [blobs], "brocolli-caffe's Proposal (PVANet's C++ port, scales in pixels): " + desc,
            inputs=proposal_inputs, load_options={"variants": {"Proposal": "brocolli-caffe"}},
        ))
    # ---------------- the fork oracle (tools/build_fork_oracle.sh)
    interp = (
        'layer { name: "shrink" type: "Interp" bottom: "data" top: "shrink" interp_param { shrink_factor: 2 } }\n'
        'layer { name: "shrink3" type: "Interp" bottom: "data" top: "shrink3" interp_param { shrink_factor: 3 } }\n'
        'layer { name: "shrink_zoom" type: "Interp" bottom: "data" top: "shrink_zoom" interp_param { shrink_factor: 3 zoom_factor: 2 } }\n'
        'layer { name: "zoom_pad" type: "Interp" bottom: "data" top: "zoom_pad" interp_param { zoom_factor: 2 pad_beg: -1 pad_end: -2 } }\n'
        'layer { name: "shrink_pad" type: "Interp" bottom: "data" top: "shrink_pad" interp_param { shrink_factor: 2 pad_beg: -2 pad_end: -1 } }\n'
        'layer { name: "size_pad" type: "Interp" bottom: "data" top: "size_pad" interp_param { height: 6 width: 11 pad_beg: -1 } }\n'
        'layer { name: "zoom" type: "Interp" bottom: "data" top: "zoom" interp_param { zoom_factor: 3 } }\n'
        'layer { name: "down" type: "Interp" bottom: "data" top: "down" interp_param { height: 3 width: 2 } }\n'
    )
    cases.append(Case(
        "interp_pspnet", "forks", input_layer({"data": (1, 3, 7, 9)}) + interp,
        [{"data": (1, 3, 7, 9)}, {"data": (2, 2, 10, 6)}],
        "PSPNet's (DeepLab v2's) Interp run by its own source: shrink_factor, shrink and zoom, "
        "pad_beg/pad_end cropping with zoom, shrink and height/width, zoom alone, a downsize",
    ))
    second = (
        'layer { name: "like_ref" type: "Interp" bottom: "data" bottom: "ref" top: "like_ref" }\n'
        'layer { name: "like_ref_pad" type: "Interp" bottom: "data" bottom: "ref" top: "like_ref_pad" interp_param { pad_beg: -1 pad_end: -1 } }\n'
    )
    cases.append(Case(
        "interp_second_bottom", "forks", input_layer({"data": (2, 3, 6, 8), "ref": (2, 1, 11, 5)}) + second,
        [{"data": (2, 3, 6, 8), "ref": (2, 1, 11, 5)}],
        "Interp sized by a second bottom (the form some PSPNet descendants add: the size of bottom "
        "1, pads still crop, no size field allowed). PSPNet's Interp takes one bottom, so the "
        "oracle runs its Interp with height/width set to the reference's 11 x 5: the same kernel "
        "with the size given the other way",
        oracle_net=input_layer({"data": (2, 3, 6, 8), "ref": (2, 1, 11, 5)})
        + second.replace(' bottom: "ref"', "").replace(
            'top: "like_ref" }', 'top: "like_ref" interp_param { height: 11 width: 5 } }').replace(
            "interp_param { pad_beg", "interp_param { height: 11 width: 5 pad_beg"),
    ))
    four_blob = (
        'layer { name: "bn" type: "BN" bottom: "data" top: "bn" bn_param { eps: 0.0001 } }\n'
        'layer { name: "bn_frozen" type: "BN" bottom: "data" top: "bn_frozen" bn_param { frozen: true } }\n'
    )
    for fork, oracle_type, phase in [("pspnet", "PSPBN", "TEST"), ("pspnet", "PSPBN", "TRAIN"),
                                      ("brocolli", "BN", "TEST"), ("brocolli", "BN", "TRAIN")]:
        stats = "moving statistics in both layers" if phase == "TEST" else "batch statistics, moving ones when frozen"
        stored = ("the moving variance, blobs 1 x C x 1 x 1" if fork == "pspnet"
                  else "the moving inverse std, blobs 1 x C")
        cases.append(Case(
            f"bn_{fork}_{phase.lower()}", "forks", input_layer({"data": (2, 3, 4, 5)}) + four_blob,
            [{"data": (2, 3, 4, 5)}, {"data": (1, 3, 2, 7)}],
            f"{fork}'s four-blob BN ({stored}) in {phase}: {stats}; eps 1e-4 and the default",
            oracle_net=input_layer({"data": (2, 3, 4, 5)}) + four_blob.replace('"BN"', f'"{oracle_type}"'),
            params=bn_params, phase=phase, types={oracle_type: "BN"},
        ))
    segnet = (
        'layer { name: "bn" type: "BN" bottom: "data" top: "bn" top: "bn_mean" top: "bn_var" bn_param { bn_mode: LEARN } }\n'
        'layer { name: "bn1" type: "BN" bottom: "data" top: "bn1" bn_param { bn_mode: LEARN '
        'scale_filler { type: "constant" value: 1 } shift_filler { type: "constant" value: 0 } } }\n'
        'layer { name: "bn_inf" type: "BN" bottom: "data" top: "bn_inf" bn_param { bn_mode: INFERENCE } }\n'
    )
    for phase in ("TEST", "TRAIN"):
        cases.append(Case(
            f"segnet_bn_learn_{phase.lower()}", "forks", input_layer({"data": (3, 4, 5, 6)}) + segnet,
            [{"data": (3, 4, 5, 6)}],
            f"SegNet's BN run by its own source in {phase}: LEARN normalises by the batch (with the "
            "batch mean and variance as tops 2 and 3, as compute_bn_statistics.py reads them), "
            "INFERENCE is x * scale + shift. One run: SegNet's layer sizes its buffers once",
            oracle_net=input_layer({"data": (3, 4, 5, 6)})
            + segnet.replace('"BN"', '"SegNetBN"').replace("bn_param {", "segnet_bn_param {"),
            inputs=lambda rng, b, s: rng.normal(2, 3, s), phase=phase, types={"SegNetBN": "BN"},
        ))
    pools = (
        'layer { name: "pool" type: "Pooling" bottom: "data" top: "pool" top: "mask" '
        "pooling_param { pool: MAX kernel_size: 2 stride: 2 } }\n"
        'layer { name: "pool32" type: "Pooling" bottom: "data" top: "pool32" top: "mask32" '
        "pooling_param { pool: MAX kernel_h: 3 kernel_w: 2 stride_h: 3 stride_w: 2 } }\n"
    )
    upsample = (
        'layer { name: "up" type: "Upsample" bottom: "pool" bottom: "mask" top: "up" upsample_param { scale: 2 } }\n'
        'layer { name: "up_hw" type: "Upsample" bottom: "pool" bottom: "mask" top: "up_hw" upsample_param { upsample_h: 7 upsample_w: 9 } }\n'
        'layer { name: "up_pad" type: "Upsample" bottom: "pool" bottom: "mask" top: "up_pad" upsample_param { scale: 2 pad_out_h: true pad_out_w: true } }\n'
        'layer { name: "up32" type: "Upsample" bottom: "pool32" bottom: "mask32" top: "up32" upsample_param { scale_h: 3 scale_w: 2 } }\n'
    )
    cases.append(Case(
        "segnet_upsample", "forks", input_layer({"data": (2, 3, 7, 9)}) + pools + upsample,
        [{"data": (2, 3, 7, 9)}],
        "SegNet's (and ENet's) Upsample run by its own source after BVLC max pooling with its mask "
        "top: scale 2, upsample_h/w, pad_out_h/w, scale_h 3 x scale_w 2. One run: the layer keeps "
        "its first output size",
        oracle_net=input_layer({"data": (2, 3, 7, 9)}) + pools
        + upsample.replace('"Upsample"', '"SegNetUpsample"').replace("upsample_param {", "segnet_upsample_param {"),
    ))
    overlap = (
        'layer { name: "pool" type: "Pooling" bottom: "data" top: "pool" top: "mask" '
        "pooling_param { pool: MAX kernel_size: 3 stride: 2 } }\n"
        'layer { name: "decoded" type: "Eltwise" bottom: "pool" bottom: "noise" top: "decoded" }\n'
        'layer { name: "up" type: "Upsample" bottom: "decoded" bottom: "mask" top: "up" '
        "upsample_param { upsample_h: 7 upsample_w: 9 } }\n"
    )
    cases.append(Case(
        "segnet_upsample_overlap", "forks", input_layer({"data": (2, 3, 7, 9), "noise": (2, 3, 3, 4)}) + overlap,
        [{"data": (2, 3, 7, 9), "noise": (2, 3, 3, 4)}],
        "SegNet's Upsample after overlapping 3x3 stride-2 max pooling, the unpooled values differing "
        "per window (pooled + noise): where two windows chose one position, the later window's value "
        "stays, as SegNet's loop leaves it",
        oracle_net=input_layer({"data": (2, 3, 7, 9), "noise": (2, 3, 3, 4)})
        + overlap.replace('"Upsample"', '"SegNetUpsample"').replace("upsample_param {", "segnet_upsample_param {"),
        inputs=lambda rng, b, s: rng.normal(0, 1, s) if b == "data" else rng.uniform(-3, 3, s),
    ))
    axpy_inputs = {"scale": (2, 6, 1, 1), "x": (2, 6, 3, 4), "y": (2, 6, 3, 4)}
    cases.append(Case(
        "senet_axpy", "forks",
        input_layer(axpy_inputs)
        + 'layer { name: "axpy" type: "Axpy" bottom: "scale" bottom: "x" bottom: "y" top: "axpy" }\n',
        [axpy_inputs, {"scale": (1, 6, 1, 1), "x": (1, 6, 2, 5), "y": (1, 6, 2, 5)}],
        "SENet's Axpy run by its own source (hujie-frank/SENet's axpy_layer.cpp): scale * x + y",
    ))
    cases.append(Case(
        "shufflenet_shuffle_channel", "forks",
        input_layer({"data": (2, 12, 3, 4)})
        + 'layer { name: "shuffle3" type: "ShuffleChannel" bottom: "data" top: "shuffle3" shuffle_channel_param { group: 3 } }\n'
        + 'layer { name: "shuffle4" type: "ShuffleChannel" bottom: "data" top: "shuffle4" shuffle_channel_param { group: 4 } }\n'
        + 'layer { name: "shuffle1" type: "ShuffleChannel" bottom: "data" top: "shuffle1" }\n',
        [{"data": (2, 12, 3, 4)}, {"data": (1, 12, 5, 2)}],
        "ShuffleNet's ShuffleChannel run by its own source (farmingyard/ShuffleNet): group 3, 4 and "
        "the default 1",
    ))
    reorg_inputs = {"data": (2, 8, 4, 6), "data9": (1, 9, 6, 3)}
    cases.append(Case(
        "yolov2_reorg", "forks",
        input_layer(reorg_inputs)
        + 'layer { name: "reorg" type: "Reorg" bottom: "data" top: "reorg" reorg_param { stride: 2 } }\n'
        + 'layer { name: "reorg_back" type: "Reorg" bottom: "data" top: "reorg_back" reorg_param { stride: 2 reverse: true } }\n'
        + 'layer { name: "reorg3" type: "Reorg" bottom: "data9" top: "reorg3" reorg_param { stride: 3 } }\n'
        + 'layer { name: "reorg3_back" type: "Reorg" bottom: "data9" top: "reorg3_back" reorg_param { stride: 3 reverse: true } }\n',
        [reorg_inputs],
        "YOLOv2's Reorg run by a Caffe port's own source (gklz1982/caffe-yolov2): stride 2 and 3, "
        "forward and reverse. One run: the layer sizes itself once",
    ))
    # ---------------- FlowNet 2.0 and CTPN run by the fork oracle (their own CPU code)
    accum_inputs = {"a": (2, 2, 5, 7), "b": (2, 3, 8, 4), "ref": (2, 1, 9, 11)}
    accum = (
        'layer { name: "accum" type: "Accum" bottom: "a" bottom: "b" top: "accum" }\n'
        'layer { name: "accum_size" type: "Accum" bottom: "a" bottom: "b" top: "accum_size" accum_param { top_height: 10 top_width: 12 } }\n'
        'layer { name: "accum_small" type: "Accum" bottom: "a" bottom: "b" top: "accum_small" accum_param { top_height: 12 top_width: 6 } }\n'
        'layer { name: "accum_div" type: "Accum" bottom: "a" bottom: "b" top: "accum_div" accum_param { size_divisible_by: 3 } }\n'
        'layer { name: "accum_ref" type: "Accum" bottom: "a" bottom: "b" bottom: "ref" top: "accum_ref" accum_param { have_reference: true } }\n'
        'layer { name: "accum_one" type: "Accum" bottom: "a" top: "accum_one" accum_param { top_height: 6 top_width: 9 } }\n'
    )
    cases.append(Case(
        "flownet_accum", "forks", input_layer(accum_inputs) + accum,
        [accum_inputs, {"a": (1, 1, 6, 3), "b": (1, 2, 4, 5), "ref": (1, 1, 7, 6)}],
        "FlowNet 2.0's Accum run by its own CPU code, with its backward pass: the largest bottom size, "
        "top_height/top_width larger on both sides (used) or on one (ignored), size_divisible_by 3 "
        "(rounded up), have_reference (the last bottom's size, not concatenated), one bottom; "
        "align-corners bilinear resizing, channels concatenated",
        backward=True,
    ))
    cases.append(Case(
        "flownet_accum_divisible_by_zero", "forks",
        input_layer(accum_inputs)
        + 'layer { name: "accum_div0" type: "Accum" bottom: "a" bottom: "b" top: "accum_div0" '
          'accum_param { size_divisible_by: 0 top_height: 10 top_width: 12 } }\n'
        + 'layer { name: "accum_ref_div0" type: "Accum" bottom: "a" bottom: "b" bottom: "ref" '
          'top: "accum_ref_div0" accum_param { have_reference: true size_divisible_by: 0 } }\n',
        [accum_inputs],
        "FlowNet 2.0's Accum with size_divisible_by 0: its float ceil(h / 0.0) * 0 is NaN, whose int "
        "on x86 is INT_MIN, so no size is asked and top_height/top_width stay unread (the largest "
        "bottom size); with have_reference it is unread",
    ))
    warp_inputs = {"image": (2, 3, 6, 7), "flow": (2, 2, 6, 7)}
    cases.append(Case(
        "flownet_flow_warp", "forks",
        input_layer(warp_inputs)
        + 'layer { name: "warp" type: "FlowWarp" bottom: "image" bottom: "flow" top: "warp" }\n'
        + 'layer { name: "warp_nan" type: "FlowWarp" bottom: "image" bottom: "flow" top: "warp_nan" flow_warp_param { fill_value: NOT_A_NUMBER } }\n',
        [warp_inputs, {"image": (1, 2, 5, 4), "flow": (1, 2, 5, 4)}],
        "FlowNet 2.0's FlowWarp run by its own CPU code, with its backward pass: fill ZERO and "
        "NOT_A_NUMBER, flows that leave the image and land on its edges",
        inputs=flow_inputs, backward=True,
        notes=["the fork's backward writes no flow diff where it fills (old values stay in Caffe); "
               "the generator zeroes every diff before each backward pass, so 0 is recorded there, "
               "the derivative of the constant fill"],
    ))
    cases.append(Case(
        "flownet_channel_norm", "forks",
        input_layer({"data": (2, 3, 4, 5)}) + 'layer { name: "norm" type: "ChannelNorm" bottom: "data" top: "norm" }\n',
        [{"data": (2, 3, 4, 5)}, {"data": (1, 1, 3, 2)}],
        "FlowNet 2.0's ChannelNorm run by its own CPU code, with its backward pass g x / (norm + 1e-9) "
        "(0 where every channel is 0)",
        inputs=norm_inputs, backward=True,
    ))
    shuffle = {"data": (2, 3, 4, 5), "seq": (4, 2, 3)}
    cases.append(Case(
        "ctpn_transpose_reverse", "forks",
        input_layer(shuffle)
        + 'layer { name: "t_ctpn" type: "Transpose" bottom: "data" top: "t_ctpn" transpose_param { dim: 3 dim: 2 dim: 0 dim: 1 } }\n'
        + 'layer { name: "t_swap" type: "Transpose" bottom: "seq" top: "t_swap" transpose_param { dim: 1 dim: 0 dim: 2 } }\n'
        + 'layer { name: "r_seq" type: "Reverse" bottom: "seq" top: "r_seq" reverse_param { axis: 0 } }\n'
        + 'layer { name: "r_h" type: "Reverse" bottom: "data" top: "r_h" reverse_param { axis: 2 } }\n'
        + 'layer { name: "r_default" type: "Reverse" bottom: "data" top: "r_default" }\n',
        [shuffle, {"data": (1, 2, 3, 1), "seq": (5, 1, 2)}],
        "CTPN's Transpose (its deploy net's 3 2 0 1, a 3-axis swap) and Reverse (axis 0 as CTPN "
        "uses it, axis 2, the default), run by CTPN's own code with the backward pass",
        backward=True,
    ))
    lstm = (
        'layer { name: "lstm" type: "Lstm" bottom: "x" top: "lstm" lstm_param { num_output: 3 } }\n'
        'layer { name: "lstm_clipped" type: "Lstm" bottom: "x" top: "lstm_clipped" lstm_param { num_output: 4 clipping_threshold: 0.05 } }\n'
        'layer { name: "lstm_cont" type: "Lstm" bottom: "x" bottom: "cont" top: "lstm_cont" lstm_param { num_output: 3 } }\n'
    )
    lstm_inputs = {"x": (5, 1, 2, 3), "cont": (5, 1)}
    cases.append(Case(
        "ctpn_lstm", "forks", input_layer(lstm_inputs) + lstm, [lstm_inputs, lstm_inputs],
        "CTPN's own Lstm run by its CPU code with the backward pass, batch 1: no continuation (cont "
        "t > 0 from zeros), clipping_threshold 0.05 (gradients clipped), a continuation cut mid-"
        "sequence whose second run starts from the first run's final state",
        inputs=continuation_inputs(), backward=True, stateful=True,
        notes=[
            "batch 1 only: with N > 1 CTPN's Forward_cpu adds sample 0's W_h h(t-1) to every "
            "sample's gates (caffe_add of h_to_gate, not h_to_gate_t; its .cu is right); fcn-port "
            "follows the .cu, held to BVLC's LSTM in ctpn_lstm_batch",
            "CTPN's W_h gradient takes every step's h(t-1) whatever cont is (also its .cu)",
        ],
    ))
    batch_oracle = (
        input_layer({"x": (4, 3, 5)})
        + 'layer { name: "cont" type: "DummyData" top: "cont0" top: "cont1" dummy_data_param { '
        "shape { dim: 1 dim: 3 } shape { dim: 3 dim: 3 } "
        'data_filler { type: "constant" value: 0 } data_filler { type: "constant" value: 1 } } }\n'
        + 'layer { name: "cont_all" type: "Concat" bottom: "cont0" bottom: "cont1" top: "cont" concat_param { axis: 0 } }\n'
        + 'layer { name: "lstm" type: "LSTM" bottom: "x" bottom: "cont" top: "lstm" recurrent_param { num_output: 4 } }\n'
    )
    cases.append(Case(
        "ctpn_lstm_batch", "forks",
        input_layer({"x": (4, 3, 5)}) + 'layer { name: "lstm" type: "Lstm" bottom: "x" top: "lstm" lstm_param { num_output: 4 } }\n',
        [{"x": (4, 3, 5)}],
        "CTPN's Lstm on a batch of 3 (as CTPN's deploy net runs it: N = the feature map's rows), as "
        "its .cu computes it: the oracle is BVLC's LSTM with cont 0 at step 0 and 1 after (the same "
        "gates, order and cell), its blobs W_x, b, W_h stored in CTPN's order W_x, W_h, b",
        oracle_net=batch_oracle, types={"LSTM": "Lstm"}, blob_orders={"LSTM": (0, 2, 1)}, backward=True,
        notes=["CTPN's own Forward_cpu is wrong for N > 1 (sample 0's recurrent term for every "
               "sample), so it is not this case's oracle"],
    ))
    # ---------------- OpenCV dnn
    cases.append(Case(
        "interp", "opencv",
        input_layer({"data": (1, 3, 5, 6)})
        + 'layer { name: "zoom" type: "Interp" bottom: "data" top: "zoom" interp_param { zoom_factor: 3 } }\n'
        + 'layer { name: "size" type: "Interp" bottom: "data" top: "size" interp_param { height: 11 width: 4 } }\n'
        + 'layer { name: "zoom2" type: "Interp" bottom: "size" top: "zoom2" interp_param { zoom_factor: 2 } }\n',
        [{"data": (1, 3, 5, 6)}, {"data": (2, 2, 9, 4)}],
        "DeepLab's Interp: zoom_factor, height/width, a chain (OpenCV refuses shrink_factor alone, "
        "ignores it beside zoom_factor and ignores pad_beg/pad_end, so those are not in this case)",
    ))
    cases.append(Case(
        "shuffle_channel", "opencv",
        input_layer({"data": (1, 6, 3, 4)})
        + 'layer { name: "shuffle2" type: "ShuffleChannel" bottom: "data" top: "shuffle2" shuffle_channel_param { group: 2 } }\n'
        + 'layer { name: "shuffle3" type: "ShuffleChannel" bottom: "data" top: "shuffle3" shuffle_channel_param { group: 3 } }\n',
        [{"data": (1, 6, 3, 4)}, {"data": (2, 6, 2, 5)}],
        "ShuffleChannel (group 2, 3)",
    ))
    axpy_inputs = {"scale": (1, 6, 1, 1), "x": (1, 6, 3, 4), "y": (1, 6, 3, 4)}
    cases.append(Case(
        "axpy", "caffe",
        input_layer(axpy_inputs)
        + 'layer { name: "axpy" type: "Axpy" bottom: "scale" bottom: "x" bottom: "y" top: "axpy" }\n',
        [axpy_inputs, {"scale": (2, 6, 1, 1), "x": (2, 6, 2, 5), "y": (2, 6, 2, 5)}],
        "SENet's Axpy, top = scale * x + y (bottoms scale, x, y, as hujie-frank/SENet's "
        "axpy_layer.cpp): the oracle runs it as BVLC Reshape + Scale (axis 0) + Eltwise SUM. "
        "OpenCV dnn computes scale * y + x instead, so it is not this layer's oracle",
        oracle_net=input_layer(axpy_inputs)
        + 'layer { name: "flat" type: "Reshape" bottom: "scale" top: "flat" reshape_param { shape { dim: 0 dim: 0 } } }\n'
        + 'layer { name: "ax" type: "Scale" bottom: "x" bottom: "flat" top: "ax" scale_param { axis: 0 } }\n'
        + 'layer { name: "axpy" type: "Eltwise" bottom: "ax" bottom: "y" top: "axpy" eltwise_param { operation: SUM } }\n',
    ))
    cases.append(Case(
        "reorg", "opencv",
        input_layer({"data": (1, 8, 4, 6)})
        + 'layer { name: "reorg" type: "Reorg" bottom: "data" top: "reorg" reorg_param { stride: 2 } }\n',
        [{"data": (1, 8, 4, 6)}, {"data": (2, 12, 6, 4)}],
        "YOLOv2's Reorg, stride 2 (darknet's reorg_cpu as the Caffe ports call it; OpenCV has no "
        "reverse and refuses stride 3 here)",
    ))
    rois = {"data": (2, 8, 9, 11), "rois": (5, 5)}
    cases.append(Case(
        "roi_pooling", "opencv",
        input_layer(rois)
        + 'layer { name: "roi" type: "ROIPooling" bottom: "data" bottom: "rois" top: "roi" roi_pooling_param { pooled_h: 3 pooled_w: 2 spatial_scale: 0.5 } }\n'
        + 'layer { name: "roi1" type: "ROIPooling" bottom: "data" bottom: "rois" top: "roi1" roi_pooling_param { pooled_h: 4 pooled_w: 4 spatial_scale: 0.25 } }\n'
        + 'layer { name: "psroi" type: "PSROIPooling" bottom: "data" bottom: "rois" top: "psroi" psroi_pooling_param { spatial_scale: 0.5 output_dim: 2 group_size: 2 } }\n',
        [rois],
        "Fast R-CNN's ROIPooling (two scales, bins that overlap, leave the map or are empty) and "
        "R-FCN's PSROIPooling; regions with halves to round, in both images",
        inputs=roi_inputs,
    ))
    cases.append(Case(
        "convolution_depthwise", "opencv",
        input_layer({"data": (1, 4, 6, 7)})
        + 'layer { name: "dw" type: "ConvolutionDepthwise" bottom: "data" top: "dw" '
        "convolution_param { num_output: 4 kernel_size: 3 pad: 1 } }\n",
        [{"data": (1, 4, 6, 7)}],
        "ConvolutionDepthwise without group (one filter per channel); weights saved by the Caffe "
        "oracle from a grouped Convolution",
        oracle_net=input_layer({"data": (1, 4, 6, 7)})
        + 'layer { name: "dw" type: "Convolution" bottom: "data" top: "dw" '
        "convolution_param { num_output: 4 group: 4 kernel_size: 3 pad: 1 } }\n",
    ))
    # ---------------- FlowNet 2.0's layers read by OpenCV dnn (Correlation, Resample and
    # DataAugmentation have only CUDA code in the fork); `differs`: where OpenCV is not the fork
    corr_inputs = {"a": (2, 3, 7, 9), "b": (2, 3, 7, 9)}
    cases.append(Case(
        "flownet_correlation", "opencv",
        input_layer(corr_inputs)
        + 'layer { name: "corr" type: "Correlation" bottom: "a" bottom: "b" top: "corr" correlation_param { pad: 4 kernel_size: 1 max_displacement: 4 stride_1: 1 stride_2: 2 } }\n'
        + 'layer { name: "corr_k3" type: "Correlation" bottom: "a" bottom: "b" top: "corr_k3" correlation_param { kernel_size: 3 max_displacement: 1 } }\n'
        + 'layer { name: "corr_s2" type: "Correlation" bottom: "a" bottom: "b" top: "corr_s2" correlation_param { pad: 2 kernel_size: 3 max_displacement: 2 stride_1: 2 stride_2: 1 } }\n'
        + 'layer { name: "corr_abs" type: "Correlation" bottom: "a" bottom: "b" top: "corr_abs" correlation_param { pad: 1 kernel_size: 1 max_displacement: 1 do_abs: true } }\n'
        + 'layer { name: "corr_sub" type: "Correlation" bottom: "a" bottom: "b" top: "corr_sub" correlation_param { pad: 1 kernel_size: 3 max_displacement: 2 stride_2: 2 correlation_type: SUBTRACT } }\n',
        [corr_inputs, {"a": (1, 5, 10, 6), "b": (1, 5, 10, 6)}],
        "FlowNet 2.0's Correlation (MULTIPLY): FlowNetC's pad 4 / kernel 1 / stride_2 2 form, a 3x3 "
        "kernel without padding, stride_1 2 with padding, do_abs (read, unused by the fork's kernels)",
        differs={"corr_sub": "OpenCV computes MULTIPLY whatever correlation_type says; the fork's "
                 "CorrelateDataSubtract kernel averages |a - b|"},
    ))
    resample_inputs = {"data": (1, 2, 4, 5), "ref": (1, 1, 8, 10)}
    cases.append(Case(
        "flownet_resample", "opencv",
        input_layer(resample_inputs)
        + 'layer { name: "up_nearest" type: "Resample" bottom: "data" top: "up_nearest" resample_param { width: 15 height: 8 type: NEAREST } }\n'
        + 'layer { name: "up_ref" type: "Resample" bottom: "data" bottom: "ref" top: "up_ref" resample_param { type: NEAREST } }\n'
        + 'layer { name: "up_linear" type: "Resample" bottom: "data" top: "up_linear" resample_param { width: 9 height: 7 type: LINEAR } }\n'
        + 'layer { name: "down_linear" type: "Resample" bottom: "data" top: "down_linear" resample_param { width: 3 height: 2 type: LINEAR } }\n'
        + 'layer { name: "down_nearest" type: "Resample" bottom: "data" top: "down_nearest" resample_param { width: 2 height: 2 type: NEAREST } }\n',
        [resample_inputs, {"data": (2, 3, 4, 5), "ref": (2, 1, 12, 10)}],
        "FlowNet 2.0's Resample where OpenCV (its Resize) computes the same: NEAREST enlargement by "
        "whole factors (3 x 2 by size; 2 x 2 and 2 x 3 from a reference bottom); CUBIC is refused by OpenCV",
        differs={
            "up_linear": "OpenCV samples x * W_in / W_out; the fork's kernel x * fx + fy / 2 - 0.5 "
            "with the triangle filter, normalised over the pixels inside",
            "down_linear": "the fork widens the filter by the factor when shrinking (antialias, the "
            "default); OpenCV does not",
            "down_nearest": "OpenCV takes floor(x * fx); the fork rounds x * fx + fy / 2 - 0.5",
        },
    ))
    cases.append(Case(
        "flownet_data_augmentation", "opencv",
        input_layer({"data": (1, 3, 5, 7)})
        + 'layer { name: "aug" type: "DataAugmentation" bottom: "data" top: "aug" augmentation_param { recompute_mean: 1000 mean_per_pixel: false } }\n'
        + 'layer { name: "aug_pixel" type: "DataAugmentation" bottom: "data" top: "aug_pixel" augmentation_param { recompute_mean: 1 mean_per_pixel: true } }\n'
        + 'layer { name: "aug_trained" type: "DataAugmentation" bottom: "data" top: "aug_trained" augmentation_param { '
        "recompute_mean: 1000 mean_per_pixel: false augment_during_test: false } }\n"
        + 'layer { name: "aug_crop" type: "DataAugmentation" bottom: "data" top: "aug_crop" augmentation_param { '
        "recompute_mean: 1000 mean_per_pixel: true crop_width: 4 crop_height: 5 } }\n",
        [{"data": (1, 3, 5, 7)}, {"data": (1, 3, 6, 4)}],
        "FlowNet 2.0's DataAugmentation in TEST (no augmentation) where OpenCV computes the same: "
        "the first pass (stored iteration count 0) recomputes the mean from the batch and subtracts "
        "it per channel; weights.caffemodel is written by the generator (no CPU Caffe builds the layer)",
        weights=augmentation_weights,
        differs={
            "aug_pixel": "with mean_per_pixel the fork subtracts the recomputed per-pixel mean (the "
            "input itself: 0 for a batch of 1); OpenCV 4.14 gives the input minus its per-channel mean",
            "aug_trained": "a trained net's count (5000) is past recompute_mean: the fork subtracts "
            "the stored per-channel mean; OpenCV recomputes it from every input",
            "aug_crop": "OpenCV ignores crop_width/crop_height; the fork crops the centre (blending "
            "the last row 0.95 : 0.05 where the crop reaches it) and subtracts the stored mean (at "
            "another size: its per-channel mean)",
        },
    ))
    cases.append(Case(
        "flownet_flow_warp_opencv", "opencv",
        input_layer(warp_inputs)
        + 'layer { name: "warp" type: "FlowWarp" bottom: "image" bottom: "flow" top: "warp" }\n'
        + 'layer { name: "warp_nan" type: "FlowWarp" bottom: "image" bottom: "flow" top: "warp_nan" flow_warp_param { fill_value: NOT_A_NUMBER } }\n',
        [{"image": (1, 3, 6, 7), "flow": (1, 2, 6, 7)}, {"image": (2, 2, 5, 4), "flow": (2, 2, 5, 4)}],
        "FlowNet 2.0's FlowWarp read by OpenCV (fill ZERO), the second reader beside flownet_flow_warp",
        inputs=flow_inputs,
        differs={"warp_nan": "OpenCV reads a 'FillParameter' field no prototxt has and fills 0; the "
                 "fork fills NaN (held to the fork in flownet_flow_warp)"},
    ))
    accum_one = {"a": (1, 2, 5, 7), "b": (1, 3, 8, 4), "ref": (1, 1, 9, 11)}
    cases.append(Case(
        "flownet_accum_opencv", "opencv",
        input_layer(accum_one)
        + "\n".join(line for line in accum.split("\n") if '"accum"' in line or "accum_size" in line or "accum_ref" in line)
        + "\n" + 'layer { name: "accum_div" type: "Accum" bottom: "a" bottom: "b" top: "accum_div" accum_param { size_divisible_by: 3 } }\n',
        [accum_one, {"a": (1, 1, 6, 3), "b": (1, 2, 4, 5), "ref": (1, 1, 7, 6)}],
        "FlowNet 2.0's Accum read by OpenCV, batch 1 (OpenCV lays a batch out per bottom, not per "
        "image): the largest size, top_height/top_width, have_reference",
        differs={"accum_div": "OpenCV rounds max / size_divisible_by down (integer division), so it "
                 "keeps the largest size; the fork rounds up (held to the fork in flownet_accum)"},
    ))
    return cases


def layer_types(text: str) -> list[str]:
    import re

    return sorted(set(re.findall(r'type: "(\w+)"', text)) - {"constant"})


def make_case(case: Case, out_dir: Path) -> dict:
    import caffe

    caffe.set_mode_cpu()
    rng = np.random.default_rng(sum(map(ord, case.name)))
    if case.backward:  # Caffe computes the inputs' diffs only when asked
        case.net = "force_backward: true\n" + case.net
        case.oracle_net = case.oracle_net and "force_backward: true\n" + case.oracle_net
    (out_dir / "net.prototxt").write_text(case.net)
    oracle_text = case.oracle_net or case.net
    if case.oracle_net:
        (out_dir / "oracle.prototxt").write_text(case.oracle_net)
    proto = out_dir / ("oracle.prototxt" if case.oracle_net else "net.prototxt")
    if case.oracle == "forks":
        missing = {"Interp", "PSPBN", "SegNetBN", "BN"} - set(caffe.layer_type_list())
        if missing:
            raise SystemExit(f"{case.name}: this Caffe lacks {sorted(missing)}: use the fork oracle's pycaffe")
    phase = caffe.TRAIN if case.phase == "TRAIN" else caffe.TEST
    net = caffe.Net(str(proto), phase) if case.oracle in ("caffe", "forks") or case.oracle_net else None
    params = {}
    for name, blobs in (net.params if net is not None else {}).items():
        fill = case.params or default_params
        values = fill(rng, name, [tuple(b.data.shape) for b in blobs])
        for blob, value in zip(blobs, values, strict=True):
            blob.data[...] = value.astype(np.float32)
        order = case.blob_orders.get(net.layer_dict[name].type, range(len(blobs)))
        params[name] = [list(blobs[j].data.shape) for j in order]
    weights = None
    if params:
        weights = out_dir / "weights.caffemodel"
        net.save(str(weights))
    if case.types:
        weights_with_fork_types(weights, case.types, case.blob_orders)
    if case.weights is not None:
        weights = out_dir / "weights.caffemodel"
        params = write_weights(weights, case.name, case.weights(rng))
    if case.name == "segnet_bn":  # the fork's blob shapes: 1 x C x 1 x 1
        from caffe.proto import caffe_pb2

        saved = caffe_pb2.NetParameter()
        saved.name = "segnet_bn"
        layer = saved.layer.add()
        layer.name, layer.type = "bn", "BN"
        for blob in net.params["bn"]:
            proto = layer.blobs.add()
            proto.shape.dim.extend([1, blob.data.shape[0], 1, 1])
            proto.data.extend(blob.data.astype(np.float32).ravel().tolist())
        weights.write_bytes(saved.SerializeToString())
        params = {"bn": [[1, c[0], 1, 1] for c in params["bn"]]}
    arrays: dict[str, np.ndarray] = {}
    runs = []
    if case.name == "segnet_unpool":
        (out_dir / "full.prototxt").write_text(input_layer({"data": (1, 3, 7, 9)}) + "\n".join(
            [pool.strip() for pool in [oracle_text.split("\n")[1]]]) + "\n" + "\n".join(
            line for line in case.net.split("\n")[1:] if line))
    for i, shapes in enumerate(case.runs):
        prefix = f"run{i}/"
        inputs = {}
        for blob, shape in shapes.items():
            make = case.inputs or (lambda r, b, s: r.normal(0, 1, s))
            inputs[blob] = make(rng, blob, shape).astype(np.float32)
        outputs: dict[str, np.ndarray] = {}
        if case.oracle in ("caffe", "forks"):
            for blob, value in inputs.items():
                net.blobs[blob].reshape(*value.shape)
            net.reshape()
            for blob, value in inputs.items():
                net.blobs[blob].data[...] = value
            net.forward()
            tops = [t for t in net.outputs if t not in inputs]
            for t in tops + case.recorded:
                outputs[t] = np.array(net.blobs[t].data, dtype=np.float32)
            if case.backward:
                arrays.update(oracle_backward(net, case, prefix, inputs, outputs, rng))
        else:
            import cv2

            cvnet = cv2.dnn.readNetFromCaffe(str(out_dir / "net.prototxt"), str(weights) if weights else None)
            for blob, value in inputs.items():
                cvnet.setInput(value, blob)
            names = [n for n in layer_outputs(case.net)]
            for name, value in zip(names, cvnet.forward(names), strict=True):
                if name in case.differs:  # OpenCV's value, kept to show where it is not the fork's
                    arrays[f"{prefix}opencv:{name}"] = np.array(value, dtype=np.float32)
                else:
                    outputs[name] = np.array(value, dtype=np.float32)
        if case.recorded:  # the inputs of net.prototxt are the oracle's recorded blobs
            full_inputs = inputs
            inputs = {b: outputs.pop(b) for b in case.recorded}
            for blob, value in full_inputs.items():
                arrays[f"{prefix}full_input:{blob}"] = value
        for blob, value in inputs.items():
            arrays[f"{prefix}input:{blob}"] = value
        for blob, value in outputs.items():
            arrays[f"{prefix}output:{blob}"] = value
        runs.append({
            "prefix": prefix,
            "inputs": {b: list(v.shape) for b, v in inputs.items()},
            "outputs": {b: list(v.shape) for b, v in outputs.items()},
        })
        if case.backward:
            runs[-1]["backward"] = True
    np.savez_compressed(out_dir / "io.npz", **arrays)
    info = {
        "case": case.name,
        "description": case.description,
        "oracle": ORACLES[case.oracle],
        "oracle_net": "oracle.prototxt" if case.oracle_net else "net.prototxt",
        "layer_types": layer_types(case.net),
        "phase": case.phase,
        "params": params,
        "runs": runs,
    }
    if case.load_options:
        info["load_options"] = case.load_options
    if case.stateful:
        info["stateful"] = True
    if case.differs:
        info["differs"] = case.differs
    if case.notes:
        info["notes"] = case.notes
    (out_dir / "case.json").write_text(json.dumps(info, indent=1) + "\n")
    return info


def weights_with_fork_types(
    path: Path, types: dict[str, str], orders: dict[str, tuple[int, ...]] | None = None
) -> None:
    """Rewrite a caffemodel saved by the oracle as the fork would hold it: each layer's name, the
    fork's type name and its blobs in the fork's order (no oracle-only parameter fields)."""
    from caffe.proto import caffe_pb2

    saved = caffe_pb2.NetParameter()
    saved.ParseFromString(path.read_bytes())
    out = caffe_pb2.NetParameter()
    out.name = saved.name
    for layer in saved.layer:
        if not layer.blobs:
            continue
        kept = out.layer.add()
        kept.name, kept.type = layer.name, types.get(layer.type, layer.type)
        order = (orders or {}).get(layer.type, range(len(layer.blobs)))
        kept.blobs.extend(layer.blobs[j] for j in order)
    path.write_bytes(out.SerializeToString())


def write_weights(path: Path, name: str, layers: dict[str, tuple[str, list[np.ndarray]]]) -> dict:
    """A caffemodel holding ``layers`` (name -> type and blobs, float32, with shapes); the shapes by
    layer, for case.json."""
    from caffe.proto import caffe_pb2

    saved = caffe_pb2.NetParameter()
    saved.name = name
    for layer_name, (kind, blobs) in layers.items():
        layer = saved.layer.add()
        layer.name, layer.type = layer_name, kind
        for value in blobs:
            blob = layer.blobs.add()
            blob.shape.dim.extend(value.shape)
            blob.data.extend(value.astype(np.float32).ravel().tolist())
    path.write_bytes(saved.SerializeToString())
    return {layer: [list(v.shape) for v in blobs] for layer, (_, blobs) in layers.items()}


def oracle_backward(
    net, case: Case, prefix: str, inputs: dict[str, np.ndarray], outputs: dict[str, np.ndarray],
    rng: np.random.Generator,
) -> dict[str, np.ndarray]:
    """The oracle's backward pass after its forward: every diff zeroed (a fresh net's), each output
    seeded with N(0, 1), ``Net::Backward``; the seeds, the inputs' diffs and the parameters' diffs
    (in the fork's blob order, ``case.blob_orders``)."""
    arrays = {}
    for blob in net.blobs.values():
        blob.diff[...] = 0
    for layer in net.layers:
        for blob in layer.blobs:
            blob.diff[...] = 0
    for blob in outputs:
        diff = rng.normal(0, 1, net.blobs[blob].diff.shape).astype(np.float32)
        net.blobs[blob].diff[...] = diff
        arrays[f"{prefix}top_diff:{blob}"] = diff
    net.backward()
    for blob in inputs:
        arrays[f"{prefix}grad:{blob}"] = np.array(net.blobs[blob].diff, dtype=np.float32, copy=True)
    for name, layer in zip(net._layer_names, net.layers, strict=True):
        order = case.blob_orders.get(layer.type, range(len(layer.blobs)))
        for j, k in enumerate(order):
            arrays[f"{prefix}param_grad:{name}/{j}"] = np.array(layer.blobs[k].diff, dtype=np.float32, copy=True)
    return arrays


def layer_outputs(text: str) -> list[str]:
    """Names of the non-input layers, in order (their single top has the layer's name)."""
    import re

    return [n for n in re.findall(r'layer \{ name: "(\w+)"', text) if n != "input"]


REAL = Path(os.environ.get("FCN_PORT_SHARED", REPO.parent / "shared")) / "real-caffe-models"
REAL_OUT = REPO / "tests" / "fixtures" / "forks_real"


def real_input(shape: Shape) -> np.ndarray:
    """The input the real-model fixtures use (the tests draw it again: nothing large is stored)."""
    return (np.random.default_rng(0).normal(0, 1, shape) * 50).astype(np.float32)


def make_real_yufacedetectnet(caffe) -> dict:
    """The Caffe-SSD face detector at 120x160, run by brocolli-caffe as published."""
    folder = REAL / "yufacedetectnet_v2_ssd"
    net = caffe.Net(str(folder / "deploy.prototxt"), str(folder / "yufacedetectnet-open-v2.caffemodel"), caffe.TEST)
    shape = (1, 3, 120, 160)
    net.blobs["data"].reshape(*shape)
    net.reshape()
    net.blobs["data"].data[...] = real_input(shape)
    net.forward()
    keep = ["mbox_loc", "mbox_conf_flatten", "mbox_priorbox", "detection_out"]
    return {"inputs": {"data": list(shape)}, "arrays": {b: np.array(net.blobs[b].data) for b in keep},
            "oracle": ORACLES["caffe"], "prototxt": "deploy.prototxt"}


def make_real_enet(caffe) -> dict:
    """ENet (SegNet's BN and Upsample) at 32x64, run by the fork oracle with SegNet's own BN and
    Upsample (renamed SegNetBN / SegNetUpsample there), the weights copied from the caffemodel by
    layer name."""
    import re

    from caffe.proto import caffe_pb2

    if not {"SegNetBN", "SegNetUpsample"} <= set(caffe.layer_type_list()):
        raise SystemExit("enet_cityscapes: use the fork oracle's pycaffe (tools/build_fork_oracle.sh)")
    folder = REAL / "enet_cityscapes"
    text = (folder / "deploy.prototxt").read_text()
    text = re.sub(r'type: "BN"', 'type: "SegNetBN"', text).replace("bn_param {", "segnet_bn_param {")
    text = re.sub(r'type: "Upsample"', 'type: "SegNetUpsample"', text).replace("upsample_param {", "segnet_upsample_param {")
    shape = (1, 3, 32, 64)
    text = text.replace("dim: 512\n      dim: 1024", "dim: 32\n      dim: 64")
    with tempfile.TemporaryDirectory() as tmp:
        proto = Path(tmp) / "oracle.prototxt"
        proto.write_text(text)
        net = caffe.Net(str(proto), caffe.TEST)
    saved = caffe_pb2.NetParameter()
    saved.ParseFromString((folder / "cityscapes_weights.caffemodel").read_bytes())
    stored = {layer.name: layer for layer in saved.layer}
    for name, blobs in net.params.items():
        for blob, proto_blob in zip(blobs, stored[name].blobs, strict=True):
            blob.data[...] = np.array(proto_blob.data, dtype=np.float32).reshape(blob.data.shape)
    net.blobs["data"].data[...] = real_input(shape)
    net.forward()
    keep = [*net.outputs, "bn0_1", "upsample4_0_4"]
    return {"inputs": {"data": list(shape)}, "arrays": {b: np.array(net.blobs[b].data) for b in keep},
            "oracle": ORACLES["forks"] + "; ENet's BN and Upsample are SegNet's own", "prototxt": "deploy.prototxt"}


def make_real(names: list[str]) -> None:
    import caffe

    caffe.set_mode_cpu()
    REAL_OUT.mkdir(parents=True, exist_ok=True)
    for name, make in [("yufacedetectnet_v2_ssd", make_real_yufacedetectnet), ("enet_cityscapes", make_real_enet)]:
        if names and name not in names:
            continue
        result = make(caffe)
        np.savez_compressed(REAL_OUT / f"{name}.npz", **{k: v.astype(np.float32) for k, v in result.pop("arrays").items()})
        result["input"] = "np.random.default_rng(0).normal(0, 1, shape) * 50, float32"
        (REAL_OUT / f"{name}.json").write_text(json.dumps(result, indent=1) + "\n")
        print(name, "written")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("cases", nargs="*")
    parser.add_argument("--real", action="store_true", help="the real fork models of ../shared instead")
    args = parser.parse_args(argv)
    if args.real:
        make_real(args.cases)
        return 0
    cases = build_cases()
    chosen = [c for c in cases if not args.cases or c.name in args.cases]
    for case in chosen:
        OUT.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{case.name}", dir=OUT))
        try:
            info = make_case(case, staging)
            target = OUT / case.name
            if target.exists():
                shutil.rmtree(target)
            staging.rename(target)
            print(case.name, [r["outputs"] for r in info["runs"]][0])
        except Exception:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
