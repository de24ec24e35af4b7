#!/usr/bin/env python3
"""Regenerate the golden layer fixtures (tests/fixtures/layers/, tests/fixtures/tiny_fcn/) with real Caffe.

Our own code writes every net definition (``converters.Message`` -> ``converters.write_prototxt``) and
draws every input and parameter value from a seeded generator; real Caffe (pycaffe, the oracle built as
tools/README.md says) only saves the weights files and computes the outputs. Run it with the oracle's
Python and ``PYTHONPATH`` pointing at pycaffe::

    GLOG_minloglevel=2 PYTHONPATH=/work/oracle/brocolli-caffe-9.0.2/python \\
        /work/oracle/venv/bin/python tools/make_layer_fixtures.py [CASE ...]

``--check`` needs no Caffe: it reads the committed fixtures back with ``converters`` and checks that
the files agree with each other (the project's own venv is enough).
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import shutil
import sys
import tempfile
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Single-threaded BLAS: the same summation order on every regeneration (set before Caffe loads).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("GLOG_minloglevel", "2")

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from converters import (  # noqa: E402
    CaffeFormatError,
    Ident,
    Message,
    format_message,
    read_prototxt,
    read_weights,
    write_prototxt,
)
from converters.atomic import atomic_write  # noqa: E402

FIXTURES = REPO / "tests" / "fixtures"
LAYERS_DIR = FIXTURES / "layers"
TINY_FCN_DIR = FIXTURES / "tiny_fcn"
IN_PLACE_REFUSED_DIR = FIXTURES / "in_place_refused"
HDF5_OUTPUT_DIR = FIXTURES / "hdf5_output"
ORACLE = "BVLC Caffe 1.0 as packaged in the brocolli-caffe 9.0.2 sdist, CPU build, OpenBLAS 1 thread"
FORK_ORACLE = (
    "the fork oracle (tools/build_fork_oracle.sh): brocolli-caffe 9.0.2 plus BVLC master's layers it "
    "lacks, compiled from BVLC's sources, CPU build, OpenBLAS 1 thread"
)
IGNORE_LABEL = 255

Shape = tuple[int, ...]
Arrays = list[np.ndarray]


# --------------------------------------------------------------------------------------------------
# Net definitions: plain dicts, turned into schema-checked Messages


def to_message(type_name: str, fields: dict[str, Any]) -> Message:
    """A ``Message`` of schema type ``type_name`` from a dict (nested dicts for sub-messages).

    Enum values are given as strings; a scalar given for a repeated field becomes a one-item list.
    """
    msg = Message(type_name)
    for name, value in fields.items():
        spec = msg.field_spec(name)
        if spec is None:
            raise KeyError(f"{type_name} has no field {name!r} in converters.caffe.schema")
        values = list(value) if spec.repeated and isinstance(value, (list, tuple)) else [value]
        for item in values:
            if spec.is_message:
                item = to_message(spec.type, item)
            elif spec.is_enum:
                item = Ident(item)
            elif spec.type == "float":
                item = float(np.float32(item))  # what Caffe (and our text reader) hold
            msg.add(name, item)
    return msg


def L(
    name: str, type_: str, bottom: list[str] | str, top: list[str] | str | None = None, **params: Any
) -> dict:
    """One layer as a dict; ``top`` defaults to the layer name."""
    bottom = [bottom] if isinstance(bottom, str) else list(bottom)
    top = [name] if top is None else ([top] if isinstance(top, str) else list(top))
    return {"name": name, "type": type_, "bottom": bottom, "top": top, **params}


def net_message(name: str, inputs: dict[str, Shape], layers: list[dict]) -> Message:
    """An Input-layer net: one ``Input`` layer with a top (and a shape) per input blob, then ``layers``."""
    input_layer = {
        "name": "input",
        "type": "Input",
        "top": list(inputs),
        "input_param": {"shape": [{"dim": list(shape)} for shape in inputs.values()]},
    }
    return to_message("NetParameter", {"name": name, "layer": [input_layer, *layers]})


def oracle_text(net: Message) -> str:
    """The prototxt Caffe is given: ours, with BVLC's ``round_mode`` spelled as this fork wants it.

    The brocolli fork replaces BVLC's ``PoolingParameter.round_mode`` (enum, field 13, CEIL=0,
    FLOOR=1) with ``ceil_mode`` (bool, field 13, default true).
    """
    text = format_message(net)
    return text.replace("round_mode: FLOOR", "ceil_mode: false").replace(
        "round_mode: CEIL", "ceil_mode: true"
    )


# --------------------------------------------------------------------------------------------------
# Seeded values


def seed_of(name: str) -> int:
    """A stable seed per case, so adding a case never changes another one's values."""
    return zlib.crc32(name.encode("utf-8"))


def normal(rng: np.random.Generator, std: float, shape: Shape, mean: float = 0.0) -> np.ndarray:
    return (mean + std * rng.standard_normal(shape)).astype(np.float32)


def _pair(param: dict, key: str, default: int) -> tuple[int, int]:
    """(h, w) of a ConvolutionParameter size: ``key_h``/``key_w``, else repeated ``key``."""
    if f"{key}_h" in param:
        return int(param[f"{key}_h"]), int(param[f"{key}_w"])
    value = param.get(key, default)
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    return (int(values[0]), int(values[-1]))


def default_params(rng: np.random.Generator, layer: dict, shapes: list[Shape]) -> Arrays:
    """Seeded parameter values: fan-in scaled weights (std sqrt(2 / fan_in)), random biases,
    non-default Scale and PReLU values."""
    kind = layer["type"]
    if kind in ("Convolution", "Deconvolution", "InnerProduct"):
        w = shapes[0]
        if kind == "Convolution":
            fan_in = math.prod(w[1:])
        elif kind == "Deconvolution":
            conv = layer.get("convolution_param", {})
            stride_h, stride_w = _pair(conv, "stride", 1)
            # Each output pixel sums (in / group) channels times about kh*kw / (sh*sw) taps.
            fan_in = max(1.0, w[0] / conv.get("group", 1) * w[2] * w[3] / (stride_h * stride_w))
        else:
            fan_in = w[0] if layer.get("inner_product_param", {}).get("transpose") else w[1]
        values = [normal(rng, math.sqrt(2.0 / fan_in), w)]
        values += [normal(rng, 0.2, s) for s in shapes[1:]]
        return values
    if kind == "Scale":
        # One bottom: blobs are [scale, bias?]; two bottoms: the scale is bottom 1, blobs are [bias?].
        scale_count = 0 if len(layer["bottom"]) == 2 else 1
        return [
            normal(rng, 0.5, s, mean=1.0) if i < scale_count else normal(rng, 0.5, s)
            for i, s in enumerate(shapes)
        ]
    if kind == "PReLU":
        return [rng.uniform(-0.6, 0.9, shapes[0]).astype(np.float32)]
    if kind in ("Bias", "Embed", "Parameter"):
        return [normal(rng, 0.5, s) for s in shapes]
    if kind in ("LSTM", "RNN"):  # matrices N(0, 1 / fan_in): the gates neither saturate nor vanish
        return [normal(rng, 0.4, s) if len(s) == 1 else normal(rng, math.sqrt(1.0 / s[1]), s) for s in shapes]
    raise ValueError(f"layer {layer['name']!r} ({kind}) needs explicit parameter values")


def c3d_params(rng: np.random.Generator, layer: dict, shapes: list[Shape]) -> Arrays:
    """C3D's blobs: weights fan-in scaled, the 5-D bias small."""
    w = shapes[0]
    fan_in = math.prod(w[1:]) if layer["type"] == "Convolution3D" else w[0] * math.prod(w[2:]) / 8
    return [normal(rng, math.sqrt(2.0 / fan_in), w)] + [normal(rng, 0.2, s) for s in shapes[1:]]


def batchnorm_blobs(factor: float) -> Callable[[np.random.Generator, dict, list[Shape]], Arrays]:
    """BatchNorm blobs as Caffe stores them: mean * factor, variance * factor, [factor]."""

    def fill(rng: np.random.Generator, layer: dict, shapes: list[Shape]) -> Arrays:
        mean = normal(rng, 0.7, shapes[0])
        variance = rng.uniform(0.2, 2.5, shapes[1]).astype(np.float32)
        return [
            (mean * np.float32(factor)).astype(np.float32),
            (variance * np.float32(factor)).astype(np.float32),
            np.full(shapes[2], factor, dtype=np.float32),
        ]

    return fill


def normal_input(rng: np.random.Generator, blob: str, shape: Shape, run: int) -> np.ndarray:
    return normal(rng, 1.0, shape)


def positive_input(rng: np.random.Generator, blob: str, shape: Shape, run: int) -> np.ndarray:
    return rng.uniform(0.1, 3.0, shape).astype(np.float32)


def lrn_input(rng: np.random.Generator, blob: str, shape: Shape, run: int) -> np.ndarray:
    return normal(rng, 2.0, shape)


def argmax_input(rng: np.random.Generator, blob: str, shape: Shape, run: int) -> np.ndarray:
    """N(0, 1) rounded to multiples of 0.5: many ties, so the tie order is recorded too."""
    return (np.round(rng.standard_normal(shape) * 2.0) / 2.0).astype(np.float32)


def non_finite_video(rng: np.random.Generator, blob: str, shape: Shape, run: int) -> np.ndarray:
    """:func:`argmax_input` of a ``(2, 2, 4, 4, 6)`` video with NaN and infinities placed: the first
    2x2x2 window of sample 0, channel 0 holds only -inf and NaN, +inf ties across windows of
    channel 1, and sample 1 has a lone NaN and a lone -inf among finite values."""
    x = argmax_input(rng, blob, shape, run)
    x[0, 0, 0:2, 0:2, 0:2] = -np.inf
    x[0, 0, 0, 0, 0] = x[0, 0, 1, 1, 1] = np.nan
    x[0, 1, 1, 1, 2] = x[0, 1, 2, 2, 3] = np.inf
    x[1, 0, 2, 3, 5] = np.nan
    x[1, 1, 3, 2, 4] = -np.inf
    return x


def non_finite_input(rng: np.random.Generator, blob: str, shape: Shape, run: int) -> np.ndarray:
    """Multiples of 0.5 (ties), a tenth of them each NaN, +inf and -inf."""
    values = np.array([-1.0, -0.5, 0.0, 0.5, 1.0, 2.0, np.nan, np.inf, -np.inf], np.float32)
    weights = np.array([0.7 / 6] * 6 + [0.1] * 3)
    return rng.choice(values, size=shape, p=weights / weights.sum()).astype(np.float32)


def _finite_at_even(x: np.ndarray) -> np.ndarray:
    """``x`` with its values at even row and column indices made finite (0.25)."""
    x[..., ::2, ::2] = np.where(np.isfinite(x[..., ::2, ::2]), x[..., ::2, ::2], np.float32(0.25))
    return x


def nan_scores_input(rng: np.random.Generator, blob: str, shape: Shape, run: int) -> np.ndarray:
    """Scores from few values (ties), a quarter of them NaN, some infinite; labels in [0, 7)."""
    if blob == "label":
        return rng.integers(0, 7, shape).astype(np.float32)
    values = np.array([-1.0, 0.0, 0.5, 1.0, 2.0, np.inf, -np.inf, np.nan], np.float32)
    weights = np.array([0.13, 0.13, 0.13, 0.13, 0.13, 0.05, 0.05, 0.25])
    return rng.choice(values, size=shape, p=weights / weights.sum()).astype(np.float32)


def mvn_input(rng: np.random.Generator, blob: str, shape: Shape, run: int) -> np.ndarray:
    """N(0.7, 2): a mean and a variance that normalization visibly changes."""
    return normal(rng, 2.0, shape, mean=0.7)


def loss_input(rng: np.random.Generator, blob: str, shape: Shape, run: int) -> np.ndarray:
    """Scores ~ N(0, 2); labels in [0, classes) with about 1 in 5 set to the ignore label.

    Run 1's labels are all valid; run 2's are all ignored (Caffe clamps the loss normalizer at 1;
    Accuracy is 0/0).
    """
    if blob != "label":
        return normal(rng, 2.0, shape)
    classes = 4
    labels = rng.integers(0, classes, shape)
    ignored = rng.random(shape) < 0.2
    if run != 1:  # run 1: every label valid
        labels[ignored] = IGNORE_LABEL
    if run == 2:
        labels[...] = IGNORE_LABEL
    return labels.astype(np.float32)


def inputs_by_blob(**makers: Callable[[np.random.Generator, Shape], np.ndarray]):
    """An input maker that draws each blob with its own function (others: N(0, 1))."""

    def make(rng: np.random.Generator, blob: str, shape: Shape, run: int) -> np.ndarray:
        draw = makers.get(blob)
        return (draw(rng, shape) if draw else normal(rng, 1.0, shape)).astype(np.float32)

    return make


def integers(low: int, high: int) -> Callable[[np.random.Generator, Shape], np.ndarray]:
    """Integers in ``[low, high)`` as floats (Caffe's labels and indices)."""
    return lambda rng, shape: rng.integers(low, high, shape).astype(np.float32)


def labels_with_ignored(classes: int) -> Callable[[np.random.Generator, Shape], np.ndarray]:
    """Labels in ``[0, classes)``, about one in five the ignore label."""

    def draw(rng: np.random.Generator, shape: Shape) -> np.ndarray:
        labels = rng.integers(0, classes, shape)
        return np.where(rng.uniform(size=shape) < 0.2, IGNORE_LABEL, labels).astype(np.float32)

    return draw


def targets_with(value: float) -> Callable[[np.random.Generator, Shape], np.ndarray]:
    """Targets uniform in [0, 1], about one in five exactly ``value``."""

    def draw(rng: np.random.Generator, shape: Shape) -> np.ndarray:
        targets = rng.uniform(0, 1, shape)
        return np.where(rng.uniform(size=shape) < 0.2, value, targets).astype(np.float32)

    return draw


def uniform(low: float, high: float) -> Callable[[np.random.Generator, Shape], np.ndarray]:
    return lambda rng, shape: rng.uniform(low, high, shape).astype(np.float32)


def probabilities(rng: np.random.Generator, shape: Shape) -> np.ndarray:
    """Rows (axis 1) that sum to 1, none below 1e-3."""
    values = rng.uniform(0.05, 1.0, shape)
    return (values / values.sum(axis=1, keepdims=True)).astype(np.float32)


# --------------------------------------------------------------------------------------------------
# The cases


@dataclass
class Case:
    name: str
    description: str
    layers: list[dict]
    runs: list[dict[str, Shape]]
    make_input: Callable[[np.random.Generator, str, Shape, int], np.ndarray] = normal_input
    params: dict[str, Callable[[np.random.Generator, dict, list[Shape]], Arrays]] = field(
        default_factory=dict
    )
    notes: list[str] = field(default_factory=list)
    load_options: dict[str, Any] = field(default_factory=dict)
    """Options the parity test passes to ``load_caffe`` (e.g. ``strict: False``)."""
    backward: bool = False
    """Also run Caffe's backward pass (``force_backward``): non-loss tops get seeded diffs, loss
    tops their loss weights; the inputs' and every parameter's diffs are recorded."""
    oracle: str = ORACLE
    """Which Caffe made it: :data:`FORK_ORACLE` for BVLC master's types brocolli lacks (run those
    cases with ``PYTHONPATH=/work/oracle/forks/src/python``)."""
    oracle_types: dict[str, str] = field(default_factory=dict)
    """Our type -> the oracle's name for the layer computing it (the fork oracle keeps BVLC
    master's InfogainLoss as ``InfogainLossMaster`` beside Caffe 1.0's)."""
    oracle_edits: tuple[tuple[str, str], ...] = ()
    """Further text edits for the oracle's net (its names for a fork's parameter messages)."""
    seed_outputs: bool = True
    """With ``backward``: seed the diffs of the outputs that are not losses; off, the losses (and
    the tops given a ``loss_weight``) alone drive Caffe's backward pass."""
    net_outputs_only: bool = False
    """Record (and seed diffs into) only the net's outputs, the blobs no layer reads: a seeded diff
    of a blob a layer reads stays where a backward pass leaves that blob's diff unwritten (a Reshape
    whose top a Flatten reads), which is no gradient any net computes."""
    stateful: bool = False
    """The runs share one net and its state (Caffe's recurrent layers carry theirs from one pass
    to the next): the parity test reuses one converted net for every run (all of one shape)."""
    input_grads: bool = True
    """With ``backward``: ask Caffe for the inputs' diffs (``force_backward``); off for layers that
    refuse to backpropagate to an index input (Embed, BatchReindex): parameter diffs only."""

    @property
    def inputs(self) -> list[str]:
        return list(self.runs[0])


def conv(num_output: int, **kw: Any) -> dict:
    return {"convolution_param": {"num_output": num_output, **kw}}


def pool(method: str, **kw: Any) -> dict:
    return {"pooling_param": {"pool": method, **kw}}


def pool_pair(prefix: str, bottom: str, **kw: Any) -> list[dict]:
    """MAX and AVE pooling layers with the same geometry."""
    return [
        L(f"{prefix}_max", "Pooling", bottom, **pool("MAX", **kw)),
        L(f"{prefix}_ave", "Pooling", bottom, **pool("AVE", **kw)),
    ]


def scales_near_one(rng: np.random.Generator, layer: dict, shapes: list[Shape]) -> Arrays:
    """Scale blobs N(1, 0.5): a Normalize's learned scale, away from zero."""
    return [normal(rng, 0.5, s, mean=1.0) for s in shapes]


def runs(*shapes: Shape, blob: str = "data") -> list[dict[str, Shape]]:
    return [{blob: s} for s in shapes]


def recurrent(num_output: int, **kw: Any) -> dict:
    return {"num_output": num_output, "weight_filler": {"type": "uniform", "min": -0.5, "max": 0.5}, **kw}


def sequence_inputs(rng: np.random.Generator, blob: str, shape: Shape, run: int) -> np.ndarray:
    """Recurrent inputs: ``cont`` (T, N) mostly 1, 0 at a few sequence starts (every sequence
    at t = 0 after the first run, one 0.5 in the first); the others N(0, 1)."""
    if blob != "cont":
        return normal(rng, 1.0, shape)
    cont = (rng.uniform(0, 1, shape) > 0.2).astype(np.float32)
    cont[0, :] = 1.0 if run == 0 else 0.0
    if run == 0:
        cont[1, 0] = 0.5
    return cont


def two_input_runs(names: tuple[str, ...], *shape_sets: tuple[Shape, ...]) -> list[dict[str, Shape]]:
    return [dict(zip(names, shapes, strict=True)) for shapes in shape_sets]


#: Cases without Caffe's backward pass: ArgMax, Threshold and Accuracy have none (NOT_IMPLEMENTED),
#: and forcing one through the others' inputs stops Caffe (softmax_loss's backward is
#: softmax_loss_backward's); pool_max_mask's windows that start past the input have mask -1, and
#: Caffe's MAX backward writes to bottom_diff[-1] (memory corruption, then a crash), and so do
#: pool_max_nan's windows of NaN and -inf only; argmax_accuracy_nan is ArgMax and Accuracy only;
#: lrn_non_finite's backward carries NaN as its running sum does (tools/differential_fuzz.py).
WITHOUT_BACKWARD = frozenset(
    {"argmax", "argmax_accuracy_nan", "lrn_non_finite", "softmax_loss", "pool_max_mask", "pool_max_nan"}
)


#: The fork oracle's names for C3D v1.0's layers and their parameter messages (tools/build_fork_oracle.sh
#: compiles them in beside BVLC's N-D layers); a name a case does not use changes nothing.
C3D_ORACLE: dict[str, Any] = {
    "oracle": FORK_ORACLE + "; C3D v1.0's layers ported to its Blob API (tools/build_fork_oracle.sh)",
    "oracle_types": {"Convolution3D": "C3DConvolution3D", "Pooling3D": "C3DPooling3D",
                     "Deconvolution3D": "C3DDeconvolution3D"},
    "oracle_edits": (("convolution3d_param {", "c3d_convolution3d_param {"),
                     ("pooling3d_param {", "c3d_pooling3d_param {")),
}

def build_cases() -> list[Case]:
    cases = [
        # ---- Convolution
        Case(
            "conv_basic",
            "3x3 convolution, pad 1, stride 1, bias",
            [L("conv", "Convolution", "data", **conv(4, kernel_size=3, pad=1))],
            runs((1, 3, 7, 9), (2, 3, 5, 6), (1, 3, 1, 1)),
        ),
        Case(
            "conv_stride_pad",
            "3x3 stride 2 pad 2, and 4x4 stride 3 unpadded (output size floors)",
            [
                L("conv_s2p2", "Convolution", "data", **conv(4, kernel_size=3, stride=2, pad=2)),
                L("conv_k4s3", "Convolution", "data", **conv(2, kernel_size=4, stride=3)),
            ],
            runs((1, 3, 8, 9), (2, 3, 5, 4), (1, 3, 4, 4)),
        ),
        Case(
            "conv_rect",
            "rectangular kernel_h/kernel_w, pad_h/pad_w, stride_h/stride_w",
            [
                L(
                    "conv",
                    "Convolution",
                    "data",
                    **conv(3, kernel_h=3, kernel_w=5, pad_h=1, pad_w=2, stride_h=1, stride_w=2),
                )
            ],
            runs((1, 2, 7, 9), (2, 2, 3, 6), (1, 2, 1, 1)),
        ),
        Case(
            "conv_lone_pad",
            "pad_h or pad_w alone (Convolution, Deconvolution, Im2col): the other at its default 0",
            [
                L("conv", "Convolution", "data", **conv(3, kernel_size=3, pad_w=1)),
                L("deconv", "Deconvolution", "data", **conv(2, kernel_size=3, stride=2, pad_h=1)),
                L("cols", "Im2col", "data", convolution_param={"kernel_size": [2], "pad_w": 1}),
            ],
            runs((1, 2, 5, 6), (2, 2, 3, 4)),
            backward=True,
            notes=["BaseConvolutionLayer::LayerSetUp reads pad_h and pad_w when either is given; "
                   "Pooling needs both"],
        ),
        Case(
            "conv_group",
            "group 2 (4 -> 6) with bias, and depthwise group 4 without bias",
            [
                L("conv_g2", "Convolution", "data", **conv(6, kernel_size=3, pad=1, group=2)),
                L(
                    "conv_dw",
                    "Convolution",
                    "data",
                    **conv(4, kernel_size=3, pad=1, group=4, bias_term=False),
                ),
            ],
            runs((1, 4, 6, 7), (2, 4, 3, 3), (1, 4, 1, 1)),
        ),
        Case(
            "conv_kernel_over_input",
            "Kernels larger than the padded input by less than the stride: Caffe's C++ division "
            "truncates toward zero, so it computes one output over zeros past the input's end "
            "(kernel 3 stride 2; kernel 11 stride 4 pad 1 as AlexNet's conv1; dilation 2 stride 3), "
            "and Im2col the same; the second run's sizes leave every window inside",
            [
                L("k3s2", "Convolution", "a", **conv(2, kernel_size=3, stride=2)),
                L("cols", "Im2col", "a", convolution_param={"kernel_size": [3], "stride": [2]}),
                L("k11s4", "Convolution", "b", **conv(3, kernel_size=11, stride=4, pad=1)),
                L("dilated", "Convolution", "c", **conv(2, kernel_size=3, stride=3, dilation=2, pad=[0, 1])),
            ],
            two_input_runs(("a", "b", "c"), ((1, 2, 2, 5), (1, 2, 7, 8), (2, 2, 3, 2)),
                           ((2, 2, 12, 13), (1, 2, 15, 19), (1, 2, 11, 9))),
        ),
        Case(
            "conv_dilation",
            "dilation 2 pad 2, and per-axis repeated dilation [2, 3] with pad [2, 3]",
            [
                L("conv_d2", "Convolution", "data", **conv(2, kernel_size=3, pad=2, dilation=2)),
                L("conv_d23", "Convolution", "data", **conv(2, kernel_size=3, pad=[2, 3], dilation=[2, 3])),
            ],
            runs((1, 3, 9, 11), (2, 3, 5, 5), (1, 3, 1, 1)),
        ),
        Case(
            "conv_1x1_nobias",
            "1x1 convolutions without bias, stride 1 and stride 2",
            [
                L("conv_1x1", "Convolution", "data", **conv(3, kernel_size=1, bias_term=False)),
                L("conv_1x1_s2", "Convolution", "data", **conv(2, kernel_size=1, stride=2, bias_term=False)),
            ],
            runs((1, 5, 6, 7), (2, 5, 1, 1), (1, 5, 3, 2)),
        ),
        # ---- Deconvolution (random weights, never bilinear)
        Case(
            "deconv_s2",
            "kernel 4 stride 2 with bias; rectangular kernel/stride/pad without bias",
            [
                L("deconv", "Deconvolution", "data", **conv(2, kernel_size=4, stride=2)),
                L(
                    "deconv_rect",
                    "Deconvolution",
                    "data",
                    **conv(
                        2, kernel_h=3, kernel_w=2, stride_h=1, stride_w=2, pad_h=1, pad_w=0, bias_term=False
                    ),
                ),
            ],
            runs((1, 3, 5, 7), (2, 3, 1, 1), (1, 3, 4, 4)),
        ),
        Case(
            "deconv_pad_group",
            "kernel 3 stride 2 pad 1 group 2 with bias; kernel 4 stride 2 pad 1 group = channels",
            [
                L("deconv_g2", "Deconvolution", "data", **conv(6, kernel_size=3, stride=2, pad=1, group=2)),
                L(
                    "deconv_dw",
                    "Deconvolution",
                    "data",
                    **conv(4, kernel_size=4, stride=2, pad=1, group=4, bias_term=False),
                ),
            ],
            runs((1, 4, 5, 6), (2, 4, 1, 1), (1, 4, 3, 3)),
        ),
        Case(
            "deconv_s32_k63",
            "odd kernel 63 at stride 32 (as FCN-AlexNet's upscore), bias",
            [L("upscore", "Deconvolution", "data", **conv(1, kernel_size=63, stride=32))],
            runs((1, 2, 2, 3), (1, 2, 1, 1)),
        ),
        Case(
            "deconv_s32_group",
            "kernel 64 stride 32, group = channels, no bias (FCN-32s upscore with random weights)",
            [
                L(
                    "upscore",
                    "Deconvolution",
                    "data",
                    **conv(2, kernel_size=64, stride=32, group=2, bias_term=False),
                )
            ],
            runs((1, 2, 2, 2), (1, 2, 1, 1)),
        ),
        # ---- Pooling (Caffe rounds output sizes up by default)
        Case(
            "pool_k2s2",
            "MAX/AVE kernel 2 stride 2 (the FCN-VGG pools): odd sizes and 1x1 overhang",
            pool_pair("pool", "data", kernel_size=2, stride=2),
            runs((1, 2, 1, 1), (1, 2, 5, 7), (2, 2, 6, 6), (1, 2, 1, 4)),
        ),
        Case(
            "pool_k3s2",
            "MAX/AVE kernel 3 stride 2 unpadded (AlexNet pools): the last window overhangs",
            pool_pair("pool", "data", kernel_size=3, stride=2),
            runs((1, 2, 7, 8), (2, 2, 6, 6), (1, 2, 3, 4)),
            notes=["AVE divides by the window clipped to the input where it overhangs without padding"],
        ),
        Case(
            "pool_pad_drop",
            "MAX/AVE kernel 3 stride 3 pad 2: windows start in the padding; Caffe drops "
            "a last window that would start in the padding ((out-1)*stride >= H+pad)",
            pool_pair("pool", "data", kernel_size=3, stride=3, pad=2),
            runs((1, 2, 4, 5), (1, 2, 7, 6), (1, 2, 1, 1), (2, 2, 3, 3)),
            notes=["sizes: H=4 -> 2 (ceil gives 3, last dropped), 5 -> 3, 7 -> 3, 6 -> 3, 3 -> 2, 1 -> 1"],
        ),
        Case(
            "pool_pad_s2",
            "MAX/AVE kernel 3 stride 2 pad 1 (ResNet-style): AVE divisor counts padding but not past H+pad",
            pool_pair("pool", "data", kernel_size=3, stride=2, pad=1),
            runs((1, 2, 7, 7), (1, 2, 8, 5), (2, 2, 1, 1), (1, 2, 2, 3)),
        ),
        Case(
            "pool_kernel_lt_stride",
            "MAX/AVE kernel 2 stride 3, unpadded and pad 1 (rows skipped)",
            pool_pair("pool", "data", kernel_size=2, stride=3)
            + pool_pair("pool_p1", "data", kernel_size=2, stride=3, pad=1),
            runs((1, 2, 7, 8), (1, 2, 1, 1), (2, 2, 5, 4)),
        ),
        Case(
            "pool_rect",
            "MAX/AVE kernel_h 2 kernel_w 3, stride_h 1 stride_w 2, pad_h 1 pad_w 0",
            pool_pair("pool", "data", kernel_h=2, kernel_w=3, stride_h=1, stride_w=2, pad_h=1, pad_w=0),
            runs((1, 2, 5, 7), (2, 2, 4, 3), (1, 2, 1, 3)),
        ),
        Case(
            "pool_global",
            "global MAX/AVE pooling",
            pool_pair("pool", "data", global_pooling=True),
            runs((1, 3, 5, 7), (2, 3, 1, 1), (1, 3, 4, 1)),
        ),
        Case(
            "pool_floor",
            "round_mode FLOOR (MAX/AVE kernel 3 stride 2 pad 1, kernel 2 stride 2)",
            pool_pair("pool", "data", kernel_size=3, stride=2, pad=1, round_mode="FLOOR")
            + pool_pair("pool_k2", "data", kernel_size=2, stride=2, round_mode="FLOOR"),
            runs((1, 2, 7, 8), (1, 2, 5, 4), (2, 2, 2, 3)),
            notes=[
                "net.prototxt says BVLC 'round_mode: FLOOR'; the fork that computed it spells it "
                "'ceil_mode: false' (same field number 13, opposite values). weights.caffemodel holds "
                "no pooling layer params worth reading: take the net from net.prototxt"
            ],
        ),
        # ---- Crop
        Case(
            "crop_spatial",
            "Crop from axis 2 (one offset, per-axis offsets, no offset), axis 3 and axis -1",
            [
                L("crop_a2", "Crop", ["a", "ref"], crop_param={"axis": 2, "offset": 2}),
                L("crop_a2_hw", "Crop", ["a", "ref"], crop_param={"axis": 2, "offset": [1, 3]}),
                L("crop_a2_zero", "Crop", ["a", "ref"], crop_param={"axis": 2}),
                L("crop_a3", "Crop", ["a", "ref"], crop_param={"axis": 3, "offset": 1}),
                L("crop_neg1", "Crop", ["a", "ref"], crop_param={"axis": -1, "offset": 2}),
            ],
            two_input_runs(
                ("a", "ref"),
                ((1, 4, 9, 11), (1, 2, 5, 6)),
                ((2, 4, 7, 8), (2, 1, 3, 3)),
                ((1, 4, 6, 6), (1, 1, 1, 1)),
            ),
        ),
        Case(
            "crop_channels_batch",
            "Crop from axis 1 (one offset, one per axis) and axis 0 (batch too), "
            "default axis 2 with one offset",
            [
                L("crop_a1", "Crop", ["a", "ref"], crop_param={"axis": 1, "offset": 1}),
                L("crop_a1_each", "Crop", ["a", "ref"], crop_param={"axis": 1, "offset": [0, 2, 1]}),
                L("crop_a0", "Crop", ["a", "ref"], crop_param={"axis": 0, "offset": [1, 0, 1, 2]}),
                L("crop_default", "Crop", ["a", "ref"], crop_param={"offset": 1}),
            ],
            two_input_runs(
                ("a", "ref"),
                ((2, 4, 9, 11), (1, 2, 5, 6)),
                ((3, 5, 6, 7), (2, 3, 2, 2)),
                ((2, 4, 4, 4), (1, 1, 1, 1)),
            ),
        ),
        # ---- Eltwise
        Case(
            "eltwise",
            "SUM (plain, coeff 0.5/0.5, 1/-1, three bottoms 1/-2/0.5), PROD and MAX of 2 and 3",
            [
                L("sum", "Eltwise", ["a", "b"], eltwise_param={"operation": "SUM"}),
                L("sum_half", "Eltwise", ["a", "b"], eltwise_param={"operation": "SUM", "coeff": [0.5, 0.5]}),
                L("diff", "Eltwise", ["a", "b"], eltwise_param={"operation": "SUM", "coeff": [1, -1]}),
                L(
                    "sum3",
                    "Eltwise",
                    ["a", "b", "c"],
                    eltwise_param={"operation": "SUM", "coeff": [1, -2, 0.5]},
                ),
                L("prod", "Eltwise", ["a", "b"], eltwise_param={"operation": "PROD"}),
                L("prod3", "Eltwise", ["a", "b", "c"], eltwise_param={"operation": "PROD"}),
                L("max", "Eltwise", ["a", "b"], eltwise_param={"operation": "MAX"}),
                L("max3", "Eltwise", ["a", "b", "c"], eltwise_param={"operation": "MAX"}),
                L("default_op", "Eltwise", ["a", "b"]),
            ],
            two_input_runs(("a", "b", "c"), *[(s, s, s) for s in ((1, 3, 4, 5), (2, 3, 1, 1), (1, 3, 7, 3))]),
            notes=["default_op has no eltwise_param: the default operation is SUM"],
        ),
        Case(
            "eltwise_max_coeff",
            "MAX of 2 and 3 with coefficients, which Caffe takes and leaves unread",
            [
                L("max", "Eltwise", ["a", "b"], eltwise_param={"operation": "MAX", "coeff": [-1, 0.5]}),
                L("max3", "Eltwise", ["a", "b", "c"], eltwise_param={"operation": "MAX", "coeff": [2, 0, 1]}),
            ],
            two_input_runs(("a", "b", "c"), *[(s, s, s) for s in ((1, 3, 4, 5), (2, 2, 1, 3))]),
            backward=True,
            notes=["EltwiseLayer::LayerSetUp refuses coefficients for PROD only"],
        ),
        Case(
            "dummy_data_constants",
            "DummyData with constant fillers: two tops of one shape each with its value, and a legacy "
            "num/channels/height/width layer with no filler (zeros), summed with and multiplied into "
            "the input",
            [
                L("dummy", "DummyData", [], ["c1", "c2"], dummy_data_param={
                    "shape": [{"dim": [1, 2, 3, 4]}],
                    "data_filler": [{"type": "constant", "value": 0.5}, {"type": "constant", "value": -2.0}],
                }),
                L("legacy", "DummyData", [], "z",
                  dummy_data_param={"num": [1], "channels": [2], "height": [3], "width": [4]}),
                L("sum", "Eltwise", ["data", "c1", "c2", "z"], eltwise_param={"coeff": [1, 2, 1, 3]}),
                L("prod", "Eltwise", ["sum", "c2"], eltwise_param={"operation": "PROD"}),
            ],
            runs((1, 2, 3, 4)),
            backward=True,
        ),  # fmt: skip
        # ---- Scale, BatchNorm
        Case(
            "scale_channel",
            "learned Scale per channel with and without bias, and a scalar Scale (num_axes 0)",
            [
                L("scale_bias", "Scale", "data", scale_param={"axis": 1, "num_axes": 1, "bias_term": True}),
                L("scale_nobias", "Scale", "data", scale_param={"bias_term": False}),
                L("scale_scalar", "Scale", "data", scale_param={"num_axes": 0, "bias_term": True}),
            ],
            runs((1, 3, 4, 5), (2, 3, 1, 1), (1, 3, 6, 2)),
            notes=["scale_scalar's scale blob has 0 axes (shape [])"],
        ),
        Case(
            "scale_shaped",
            "Scale with num_axes -1 (C,H,W), and two-bottom Scale (bottom 1 is the scale, "
            "shape (C,H) at axis 1) with and without a learned bias",
            [
                L("scale_all", "Scale", "x", scale_param={"num_axes": -1, "bias_term": True}),
                L("scale_by_s", "Scale", ["x", "s"], scale_param={"axis": 1, "bias_term": True}),
                L("scale_by_s_nobias", "Scale", ["x", "s"], scale_param={"axis": 1}),
            ],
            two_input_runs(("x", "s"), ((1, 3, 4, 5), (3, 4)), ((2, 3, 4, 5), (3, 4))),
            notes=["scale_by_s has one blob: blobs[0] is its bias (the scale comes from bottom 's')"],
        ),
        Case(
            "batchnorm_scale",
            "BatchNorm with stored scale factors 0.5, 999.98, 1 (no batch_norm_param) "
            "and 0, each followed by an in-place Scale with bias",
            [
                L("bn_half", "BatchNorm", "data", batch_norm_param={"use_global_stats": True}),
                L("bn_half_scale", "Scale", "bn_half", "bn_half", scale_param={"bias_term": True}),
                L("bn_big", "BatchNorm", "data", batch_norm_param={"use_global_stats": True, "eps": 0.001}),
                L("bn_big_scale", "Scale", "bn_big", "bn_big", scale_param={"bias_term": True}),
                L("bn_default", "BatchNorm", "data"),
                L("bn_default_scale", "Scale", "bn_default", "bn_default", scale_param={"bias_term": True}),
                L("bn_zero", "BatchNorm", "data", batch_norm_param={"use_global_stats": True}),
                L("bn_zero_scale", "Scale", "bn_zero", "bn_zero", scale_param={"bias_term": True}),
            ],
            runs((1, 4, 3, 5), (2, 4, 1, 1), (1, 4, 6, 6)),
            params={
                "bn_half": batchnorm_blobs(0.5),
                "bn_big": batchnorm_blobs(999.98),
                "bn_default": batchnorm_blobs(1.0),
                "bn_zero": batchnorm_blobs(0.0),
            },
            notes=[
                "blobs are mean*factor, variance*factor, [factor]; Caffe divides by the factor, and "
                "uses 0 for mean and variance when the factor is 0 (bn_zero: x / sqrt(eps))",
                "bn_default has no batch_norm_param: in the TEST phase it uses the stored statistics",
                "BatchNorm and Scale run in place: blob bn_* holds the value after Scale",
            ],
        ),
        # ---- LRN
        Case(
            "lrn",
            "LRN ACROSS_CHANNELS (size 5 alpha 0.5 beta 0.75 k 2; size 3 alpha 1 beta 0.5 k 1; "
            "AlexNet's size 5 alpha 1e-4) and WITHIN_CHANNEL (size 3 alpha 0.3 beta 0.75 k 2)",
            [
                L(
                    "lrn_across",
                    "LRN",
                    "data",
                    lrn_param={"local_size": 5, "alpha": 0.5, "beta": 0.75, "k": 2.0},
                ),
                L("lrn_across_k1", "LRN", "data", lrn_param={"local_size": 3, "alpha": 1.0, "beta": 0.5}),
                L("lrn_alexnet", "LRN", "data", lrn_param={"local_size": 5, "alpha": 0.0001, "beta": 0.75}),
                L(
                    "lrn_within",
                    "LRN",
                    "data",
                    lrn_param={
                        "local_size": 3,
                        "alpha": 0.3,
                        "beta": 0.75,
                        "k": 2.0,
                        "norm_region": "WITHIN_CHANNEL",
                    },
                ),
            ],
            runs((1, 7, 5, 6), (2, 7, 1, 1), (1, 7, 4, 3)),
            make_input=lrn_input,
            notes=[
                "inputs ~ N(0, 2)",
                "WITHIN_CHANNEL ignores k: Caffe computes x * (1 + alpha * avepool(x^2))^-beta with an AVE "
                "pool of kernel local_size, pad (local_size-1)/2, stride 1 (Caffe's AVE border divisor)",
            ],
        ),
        # ---- Element-wise activations
        Case(
            "dropout_ratio_outside",
            "Dropout ratios 1 and -0.5 in TEST: the input passes through",
            [
                L("drop_one", "Dropout", "data", dropout_param={"dropout_ratio": 1.0}),
                L("drop_negative", "Dropout", "data", dropout_param={"dropout_ratio": -0.5}),
            ],
            runs((1, 2, 3, 4)),
            notes=["Caffe's release build takes any ratio: DropoutLayer::LayerSetUp's checks of it "
                   "are DCHECKs, compiled out"],
        ),
        Case(
            "activations",
            "ReLU, ReLU negative_slope 0.1, PReLU per channel and shared, Sigmoid, TanH, "
            "Power (2, 0.5, 1), (1, -2, 0.3), (3, 1.5, -0.2), Dropout 0.3 in TEST",
            [
                L("relu", "ReLU", "data"),
                L("leaky", "ReLU", "data", relu_param={"negative_slope": 0.1}),
                L("prelu", "PReLU", "data"),
                L("prelu_shared", "PReLU", "data", prelu_param={"channel_shared": True}),
                L("sigmoid", "Sigmoid", "data"),
                L("tanh", "TanH", "data"),
                L("power_sq", "Power", "data", power_param={"power": 2.0, "scale": 0.5, "shift": 1.0}),
                L("power_lin", "Power", "data", power_param={"power": 1.0, "scale": -2.0, "shift": 0.3}),
                L("power_cube", "Power", "data", power_param={"power": 3.0, "scale": 1.5, "shift": -0.2}),
                L("dropout", "Dropout", "data", dropout_param={"dropout_ratio": 0.3}),
            ],
            runs((1, 3, 4, 5), (2, 3, 1, 1), (1, 3, 5, 2)),
            notes=["Power computes (shift + scale * x) ^ power", "Dropout is the identity in TEST"],
        ),
        Case(
            "power_fractional",
            "Power with fractional and negative exponents on positive inputs",
            [
                L("power_sqrt", "Power", "data", power_param={"power": 0.5, "scale": 2.0, "shift": 0.5}),
                L("power_inv", "Power", "data", power_param={"power": -1.0, "shift": 1.0}),
                L("power_1_5", "Power", "data", power_param={"power": 1.5, "scale": 0.7}),
            ],
            runs((1, 2, 3, 4), (2, 2, 1, 1)),
            make_input=positive_input,
            notes=["inputs ~ U(0.1, 3)"],
        ),
        Case(
            "power_zero_base",
            "Power's gradient where its base is exactly 0 (Caffe divides the top by the base: not a "
            "number, where PyTorch's pow gives 0): a cube of inputs holding zeros, a shifted cube "
            "whose base is 0 at 0.5; and Power with scale 0 over a Log's NaN (Caffe sets the "
            "constant shift ** power without reading its input), with Caffe's backward pass",
            [
                L("cube", "Power", "data", power_param={"power": 3.0}),
                L("shifted", "Power", "data", power_param={"power": 3.0, "scale": 2.0, "shift": -1.0}),
                L("logged", "Log", "data", log_param={"shift": 0.25}),
                L("constant", "Power", "logged", power_param={"power": 3.0, "scale": 0.0, "shift": 2.0}),
            ],
            runs((2, 2, 3, 4), (1, 2, 2, 3)),
            make_input=argmax_input,
            notes=["inputs are multiples of 0.5: zeros, 0.5 and negatives (the Log's NaN)"],
        ),
        # ---- Softmax, InnerProduct, Flatten, Reshape
        Case(
            "softmax",
            "Softmax over axis 1 (default), axis 2 and axis -1",
            [
                L("softmax", "Softmax", "data"),
                L("softmax_a2", "Softmax", "data", softmax_param={"axis": 2}),
                L("softmax_last", "Softmax", "data", softmax_param={"axis": -1}),
            ],
            runs((1, 4, 3, 5), (2, 4, 1, 1), (1, 4, 2, 6)),
        ),
        Case(
            "inner_product",
            "InnerProduct on a 4-D input (axis 1 flattens C,H,W), no bias, axis 2, transpose",
            [
                L("ip", "InnerProduct", "data", inner_product_param={"num_output": 6}),
                L(
                    "ip_nobias",
                    "InnerProduct",
                    "data",
                    inner_product_param={"num_output": 2, "bias_term": False},
                ),
                L("ip_axis2", "InnerProduct", "data", inner_product_param={"num_output": 3, "axis": 2}),
                L(
                    "ip_transpose",
                    "InnerProduct",
                    "data",
                    inner_product_param={"num_output": 4, "transpose": True},
                ),
            ],
            runs((1, 3, 4, 5), (2, 3, 4, 5)),
            notes=["ip_transpose stores its weight as (K, num_output) = (60, 4)"],
        ),
        Case(
            "flatten_unit_axis",
            "Flatten whose axis is end_axis + 1 (nothing flattened): a unit axis inserted there",
            [
                L("unit_at_1", "Flatten", "data", flatten_param={"axis": 1, "end_axis": 0}),
                L("unit_at_end", "Flatten", "data", flatten_param={"axis": -1, "end_axis": -2}),
                L("unit_scaled", "Scale", "unit_at_1", scale_param={"axis": 0, "num_axes": 0}),
            ],
            runs((2, 3, 4), (1, 2, 5)),
            backward=True,
            notes=["Caffe's top: the axes before axis, count(axis, end_axis + 1) = 1, the axes after "
                   "end_axis"],
        ),
        Case(
            "flatten_reshape",
            "Flatten (default, axis 1..2, axis 2) and Reshape (0 and -1 dims, axis/num_axes)",
            [
                L("flat", "Flatten", "data"),
                L("flat_12", "Flatten", "data", flatten_param={"axis": 1, "end_axis": 2}),
                L("flat_2", "Flatten", "data", flatten_param={"axis": 2}),
                L("reshape_0m1", "Reshape", "data", reshape_param={"shape": {"dim": [0, -1]}}),
                L("reshape_pairs", "Reshape", "data", reshape_param={"shape": {"dim": [0, 0, -1, 2]}}),
                L(
                    "reshape_axis",
                    "Reshape",
                    "data",
                    reshape_param={"shape": {"dim": [-1]}, "axis": 1, "num_axes": 2},
                ),
            ],
            runs((1, 3, 4, 6), (2, 3, 2, 2), (1, 3, 1, 2)),
        ),
        # ---- Slice, Concat, Split, Silence
        Case(
            "slice_concat_split",
            "Slice channels at [1, 3], Slice rows in halves, Concat axis 1 and 2, Split, Silence",
            [
                L(
                    "slice_c",
                    "Slice",
                    "data",
                    ["s0", "s1", "s2"],
                    slice_param={"axis": 1, "slice_point": [1, 3]},
                ),
                L("slice_h", "Slice", "data", ["h0", "h1"], slice_param={"axis": 2}),
                L("concat_c", "Concat", ["s2", "s0"]),
                L("concat_h", "Concat", ["h1", "h0"], concat_param={"axis": 2}),
                L("split", "Split", "data", ["split_a", "split_b"]),
                L("silence", "Silence", ["s1"], []),
            ],
            runs((1, 6, 4, 5), (2, 6, 2, 1), (1, 6, 6, 3)),
        ),
        # ---- Loss and accuracy (labels are an input blob)
        Case(
            "softmax_loss",
            "SoftmaxWithLoss with ignore_label 255 and normalization VALID/FULL/BATCH_SIZE/NONE, "
            "default, legacy normalize false; Accuracy (top 1 with per-class top, top 2)",
            [
                L(
                    "loss_valid",
                    "SoftmaxWithLoss",
                    ["score", "label"],
                    loss_param={"ignore_label": IGNORE_LABEL, "normalization": "VALID"},
                ),
                L(
                    "loss_full",
                    "SoftmaxWithLoss",
                    ["score", "label"],
                    loss_param={"ignore_label": IGNORE_LABEL, "normalization": "FULL"},
                ),
                L(
                    "loss_batch",
                    "SoftmaxWithLoss",
                    ["score", "label"],
                    loss_param={"ignore_label": IGNORE_LABEL, "normalization": "BATCH_SIZE"},
                ),
                L(
                    "loss_none",
                    "SoftmaxWithLoss",
                    ["score", "label"],
                    loss_param={"ignore_label": IGNORE_LABEL, "normalization": "NONE"},
                ),
                L(
                    "loss_default",
                    "SoftmaxWithLoss",
                    ["score", "label"],
                    loss_param={"ignore_label": IGNORE_LABEL},
                ),
                L(
                    "loss_normalize_false",
                    "SoftmaxWithLoss",
                    ["score", "label"],
                    loss_param={"ignore_label": IGNORE_LABEL, "normalize": False},
                ),
                L(
                    "accuracy",
                    "Accuracy",
                    ["score", "label"],
                    ["accuracy", "per_class"],
                    accuracy_param={"ignore_label": IGNORE_LABEL},
                ),
                L(
                    "accuracy_top2",
                    "Accuracy",
                    ["score", "label"],
                    accuracy_param={"ignore_label": IGNORE_LABEL, "top_k": 2},
                ),
            ],
            two_input_runs(
                ("score", "label"),
                ((2, 4, 3, 5), (2, 1, 3, 5)),
                ((1, 4, 1, 1), (1, 1, 1, 1)),
                ((1, 4, 2, 2), (1, 1, 2, 2)),
            ),
            make_input=loss_input,
            notes=[
                "scores ~ N(0, 2); labels in 0..3, in run0 about 1 in 5 = 255 (ignored); run1 all valid",
                "run2: every label ignored: losses are 0 (normalizer clamped at 1), accuracy is NaN (0/0)",
                "loss layers compute their value in TEST too; loss_weight does not scale the top",
                "no two-top SoftmaxWithLoss: this Caffe cannot set one up "
                "(its internal Softmax inherits the loss_weights)",
            ],
        ),
        Case(
            "softmax_loss_backward",
            "SoftmaxWithLoss's backward pass after a Scale: ignore_label with VALID, FULL, BATCH_SIZE "
            "and NONE normalization, loss_weight 0.5, classes on axis 2",
            [
                L("scaled", "Scale", ["score"], scale_param={"bias_term": True, "axis": 1, "num_axes": 1}),
                *[L(f"loss_{mode.lower()}", "SoftmaxWithLoss", ["scaled", "label"],
                    loss_param={"ignore_label": IGNORE_LABEL, "normalization": mode})
                  for mode in ("VALID", "FULL", "BATCH_SIZE", "NONE")],
                L("loss_half", "SoftmaxWithLoss", ["scaled", "label"], loss_weight=[0.5],
                  loss_param={"ignore_label": IGNORE_LABEL}),
                L("loss_axis2", "SoftmaxWithLoss", ["scaled", "label2"], softmax_param={"axis": 2}),
            ],
            two_input_runs(("score", "label", "label2"), ((2, 4, 3, 5), (2, 1, 3, 5), (2, 4, 1, 5)),
                           ((1, 4, 3, 2), (1, 1, 3, 2), (1, 4, 1, 2))),
            make_input=inputs_by_blob(label=labels_with_ignored(4), label2=integers(0, 3),
                                      score=uniform(-2, 2)),
            backward=True,
            input_grads=False,
        ),
        # ---- In place
        Case(
            "inplace_chain",
            "conv -> ReLU in place -> Scale in place -> MAX pool: blob 'conv' holds the value after Scale",
            [
                L("conv", "Convolution", "data", **conv(4, kernel_size=3, pad=1)),
                L("relu", "ReLU", "conv", "conv"),
                L("scale", "Scale", "conv", "conv", scale_param={"bias_term": True}),
                L("pool", "Pooling", "conv", **pool("MAX", kernel_size=2, stride=2)),
            ],
            runs((1, 3, 6, 7), (2, 3, 1, 1)),
            notes=["conv, relu and scale share the blob 'conv': only its final value (after Scale) exists"],
        ),
        Case(
            "lrn_in_place",
            "LRN computed in place: ACROSS_CHANNELS (Caffe writes s^-beta over the input before "
            "multiplying by it: s^(-2 beta); its backward loses the incoming diff) with sizes 3 and "
            "5, WITHIN_CHANNEL (the value as usual; its backward reads the output where the input "
            "was), and an LRN whose top a BNLL then overwrites in place (its backward reads the top), "
            "with Caffe's backward pass",
            [
                L("a", "Convolution", "data", **conv(5, kernel_size=1)),
                L("lrn", "LRN", "a", "a", lrn_param={"local_size": 3, "alpha": 0.5, "beta": 0.75, "k": 1.5}),
                L("b", "Convolution", "data", **conv(5, kernel_size=1)),
                L("lrn5", "LRN", "b", "b", lrn_param={"local_size": 5, "alpha": 2.0, "beta": 0.4}),
                L("c", "Convolution", "data", **conv(3, kernel_size=1)),
                L("lrn_within", "LRN", "c", "c",
                  lrn_param={"local_size": 3, "alpha": 0.5, "beta": 0.75, "norm_region": "WITHIN_CHANNEL"}),
                L("d", "Convolution", "data", **conv(4, kernel_size=1)),
                L("lrn_d", "LRN", "d", lrn_param={"local_size": 3, "alpha": 0.9, "beta": 0.2, "k": 1.1}),
                L("lrn_d_bnll", "BNLL", "lrn_d", "lrn_d"),
            ],
            runs((1, 3, 4, 5), (2, 3, 3, 2)),
        ),
        Case(
            "normalize_in_place",
            "SSD's Normalize computed in place (per position with a scale per channel; per sample with "
            "a shared scale): the usual values, and a backward that writes the bottom diff over the "
            "top diff it then subtracts from it, leaving the input's gradient zero (the scale's as "
            "usual), with Caffe's backward pass",
            [
                L("a", "Convolution", "data", **conv(4, kernel_size=1)),
                L("norm", "Normalize", "a", "a", norm_param={"across_spatial": False}),
                L("after_a", "Convolution", "a", **conv(2, kernel_size=1)),
                L("b", "Convolution", "data", **conv(3, kernel_size=1)),
                L("norm_all", "Normalize", "b", "b",
                  norm_param={"across_spatial": True, "channel_shared": True}),
                L("after_b", "Convolution", "b", **conv(2, kernel_size=1)),
            ],
            runs((2, 3, 4, 5), (1, 3, 2, 3)),
            params={"norm": scales_near_one, "norm_all": scales_near_one},
        ),
        Case(
            "normalize_top_overwritten",
            "SSD's Normalize whose top later layers overwrite in place: its scale's gradient reads the "
            "top's data as Caffe's backward finds it (after a Power, a ReLU with a negative slope and "
            "a Scale, in place), the input's as usual; a scale per channel and per position, a shared "
            "one per sample, and a Normalize itself in place then overwritten, with Caffe's backward "
            "pass",
            [
                L("a", "Convolution", "data", **conv(4, kernel_size=1)),
                L("norm", "Normalize", "a", "norm", norm_param={"across_spatial": False}),
                L("norm_power", "Power", "norm", "norm", power_param={"scale": 1.5, "shift": -0.2}),
                L("norm_relu", "ReLU", "norm", "norm", relu_param={"negative_slope": 0.3}),
                L("b", "Convolution", "data", **conv(3, kernel_size=1)),
                L("norm_all", "Normalize", "b", "norm_all",
                  norm_param={"across_spatial": True, "channel_shared": True}),
                L("norm_all_scale", "Scale", "norm_all", "norm_all", scale_param={"bias_term": True}),
                L("c", "Convolution", "data", **conv(3, kernel_size=1)),
                L("norm_in", "Normalize", "c", "c", norm_param={"across_spatial": False}),
                L("norm_in_power", "Power", "c", "c", power_param={"scale": -2.0, "shift": 0.5}),
            ],
            runs((2, 3, 4, 5), (1, 3, 2, 3)),
            params=dict.fromkeys(("norm", "norm_all", "norm_in"), scales_near_one),
            notes=["norm_in computed in place: its input's gradient is zero (normalize_in_place)"],
        ),
        Case(
            "normalize_backward_order",
            "SSD's Normalize backward where its sums cancel: over one channel (the normalised value is "
            "the input's sign, its gradient a difference of nearly equal terms) and across positions "
            "over one value per sample (after a global average pooling), and a learned scale of exactly "
            "0 on one channel (the fork's scale gradient divides by it), with Caffe's backward pass",
            [
                L("one", "Normalize", "data", norm_param={"across_spatial": False}),
                L("pooled", "Pooling", "data", pooling_param={"pool": "AVE", "global_pooling": True}),
                L("single", "Normalize", "pooled",
                  norm_param={"across_spatial": True, "channel_shared": True}),
                L("c", "Convolution", "data", **conv(3, kernel_size=1)),
                L("zero_scaled", "Normalize", "c",
                  norm_param={"across_spatial": False, "channel_shared": False}),
            ],
            runs((2, 1, 4, 5), (1, 1, 3, 3)),
            params={"one": scales_near_one, "single": scales_near_one,
                    "zero_scaled": lambda rng, layer, shapes: [np.float32([1.25, 0.0, 0.75])]},
            notes=["zero_scaled's scale is 1.25, 0, 0.75: Caffe's gradient of the 0 is 0/0"],
        ),
        Case(
            "relu6_backward",
            "ReLU6 (the mobile forks') forward and backward on inputs holding exactly 0 and the "
            "threshold: plain, with a negative slope and threshold 2.5, and in place: followed by a "
            "Power in place (its backward reads the Power's values), and with a negative slope as its "
            "blob's last writer (its backward reads its own output), with Caffe's backward pass",
            [
                L("r6", "ReLU6", "data"),
                L("r6_leaky", "ReLU6", "data", relu6_param={"negative_slope": 0.1, "threshold": 2.5}),
                L("a", "Power", "data", power_param={"scale": 1.0}),
                L("a_r6", "ReLU6", "a", "a"),
                L("a_power", "Power", "a", "a", power_param={"scale": 3.0, "shift": -1.5}),
                L("b", "Power", "data", power_param={"scale": 1.0}),
                L("b_r6", "ReLU6", "b", "b", relu6_param={"negative_slope": -0.5, "threshold": 4.0}),
            ],
            runs((2, 3, 4, 5), (1, 2, 3, 3)),
            make_input=lambda rng, blob, shape, run: rng.choice(
                np.array([-2.0, -0.5, 0.0, 0.0, 1.25, 2.5, 4.0, 6.0, 6.0, 7.5], np.float32), size=shape
            ),
        ),
        Case(
            "relu6_non_finite",
            "ReLU6 over NaN and infinities: min(max(x, 0) + slope min(x, 0), threshold) gives NaN for "
            "-inf without a slope (0 x -inf), -inf with one, the threshold for +inf; with Caffe's "
            "backward pass",
            [
                L("r6", "ReLU6", "data"),
                L("r6_leaky", "ReLU6", "data", relu6_param={"negative_slope": 0.1, "threshold": 2.5}),
            ],
            runs((2, 3, 4, 5)),
            make_input=non_finite_input,
        ),
        Case(
            "lrn_non_finite",
            "LRN ACROSS_CHANNELS over NaN and infinities: Caffe's running sum of squares over channels "
            "(add the square entering the window, subtract the one leaving) leaves NaN at every later "
            "channel of a pixel once a non-finite square has left the window; local_size 5 and 3, "
            "and in place (forward only: Caffe's backward runs the same sum over its ratios)",
            [
                L("lrn5", "LRN", "data", lrn_param={"local_size": 5, "alpha": 0.5, "beta": 0.75}),
                L("lrn3", "LRN", "data", lrn_param={"local_size": 3, "alpha": 1.5, "beta": 0.5, "k": 2.0}),
                L("copy", "Power", "data", power_param={"scale": 1.0}),
                L("copy_lrn", "LRN", "copy", "copy", lrn_param={"local_size": 3}),
            ],
            runs((2, 9, 3, 4)),
            make_input=lambda rng, blob, shape, run: np.where(
                rng.random(shape) < 0.06,
                rng.choice(np.array([np.nan, np.inf, -np.inf], np.float32), size=shape),
                normal(rng, 1.0, shape),
            ).astype(np.float32),
        ),
        Case(
            "pool_max_non_finite_backward",
            "MAX pooling's backward over NaN and infinities: Caffe's mask names each window's first "
            "maximum, +inf included, and never a NaN or -inf; every window holds a finite value (its "
            "first row and column of even index), so no mask is -1; 2x2 stride 2, 3x3 stride 2 pad 1, "
            "with Caffe's backward pass",
            [
                L("max2", "Pooling", "data", **pool("MAX", kernel_size=2, stride=2)),
                L("max3_pad", "Pooling", "data", **pool("MAX", kernel_size=3, stride=2, pad=1)),
            ],
            runs((2, 3, 6, 8)),
            make_input=lambda rng, blob, shape, run: _finite_at_even(non_finite_input(rng, blob, shape, run)),
        ),
        Case(
            "eltwise_max_ties",
            "Eltwise MAX on inputs with ties (ReLU'd zeros, equal values): Caffe's mask gives a tie "
            "between bottoms 0 and 1 to bottom 1 and a tie with a later bottom to the earlier one, "
            "and the whole gradient goes there (PyTorch's maximum splits it), two and three bottoms, "
            "with Caffe's backward pass",
            [
                L("a", "ReLU", "x"),
                L("b", "ReLU", "y"),
                L("c", "ReLU", "z"),
                L("max2", "Eltwise", ["a", "b"], eltwise_param={"operation": "MAX"}),
                L("max3", "Eltwise", ["a", "b", "c"], eltwise_param={"operation": "MAX"}),
                L("max3_raw", "Eltwise", ["z", "x", "y"], eltwise_param={"operation": "MAX"}),
            ],
            [{"x": (2, 3, 4, 5), "y": (2, 3, 4, 5), "z": (2, 3, 4, 5)}],
            make_input=lambda rng, blob, shape, run: rng.choice(
                np.array([-1.0, 0.0, 0.5, 1.0, 1.0, 2.0], np.float32), size=shape
            ),
        ),
        Case(
            "eltwise_max_non_finite",
            "Eltwise MAX over NaN and infinities: Caffe takes bottom 0 only where it is greater than "
            "bottom 1 (so a NaN in bottom 0 takes bottom 1, one in bottom 1 stays), then a later "
            "bottom only where it is greater; two and three bottoms, with Caffe's backward pass",
            [
                L("max2", "Eltwise", ["x", "y"], eltwise_param={"operation": "MAX"}),
                L("max3", "Eltwise", ["x", "y", "z"], eltwise_param={"operation": "MAX"}),
            ],
            [{"x": (2, 3, 4, 5), "y": (2, 3, 4, 5), "z": (2, 3, 4, 5)}],
            make_input=non_finite_input,
            backward=True,
        ),
        Case(
            "argmax_accuracy_nan",
            "ArgMax and Accuracy over scores with NaN: Caffe's std::partial_sort of (value, index) "
            "pairs by std::greater, whose order a NaN breaks, leaves what GCC's heap steps give; "
            "ArgMax per image (top_k 4 with out_max_val) and over axis 1 (top_k 1, 3), Accuracy "
            "(top_k 1; top_k 3 with per-class accuracies)",
            [
                L("argmax_c", "ArgMax", "score", argmax_param={"axis": 1}),
                L("argmax_c_top3", "ArgMax", "score",
                  argmax_param={"axis": 1, "top_k": 3, "out_max_val": True}),
                L("argmax_top4", "ArgMax", "score", argmax_param={"top_k": 4, "out_max_val": True}),
                L("accuracy", "Accuracy", ["score", "label"]),
                L("accuracy_top3", "Accuracy", ["score", "label"], ["accuracy_top3", "per_class"],
                  accuracy_param={"top_k": 3}),
            ],
            [{"score": (6, 7, 3, 2), "label": (6, 3, 2)}],
            make_input=nan_scores_input,
        ),
        Case(
            "eltwise_in_place",
            "Eltwise computed in place over its bottom 0: SUM (Caffe zeroes the top, bottom 0's "
            "memory, before adding: bottom 0 adds nothing) with coefficients, MAX (the top starts at "
            "-FLT_MAX: bottom 0 drops out, and every diff is zero), PROD (the product as usual, but "
            "its backward overwrites the incoming diff first; stable_prod_grad on and off), with "
            "Caffe's backward pass",
            [
                L("a", "Convolution", "data", **conv(3, kernel_size=1)),
                L("b", "Convolution", "data", **conv(3, kernel_size=1)),
                L("c", "Convolution", "data", **conv(3, kernel_size=1)),
                L("sum", "Eltwise", ["a", "b", "c"], "a", eltwise_param={"coeff": [2.0, -0.5, 1.5]}),
                L("d", "Convolution", "data", **conv(3, kernel_size=1)),
                L("sum2", "Eltwise", ["d", "b"], "d"),
                L("e", "Convolution", "data", **conv(3, kernel_size=1)),
                L("max", "Eltwise", ["e", "b", "c"], "e", eltwise_param={"operation": "MAX"}),
                L("f", "Convolution", "data", **conv(3, kernel_size=1)),
                L("prod", "Eltwise", ["f", "c"], "f", eltwise_param={"operation": "PROD"}),
                L("g", "Convolution", "data", **conv(3, kernel_size=1)),
                L("prod3", "Eltwise", ["g", "b", "c"], "g",
                  eltwise_param={"operation": "PROD", "stable_prod_grad": False}),
            ],
            runs((1, 2, 4, 5), (2, 2, 3, 2)),
        ),
        Case(
            "inplace_backward_reads",
            "Layers whose Caffe backward reads data that computing in place overwrites: BNLL, ReLU "
            "with a negative slope and ELU with a negative alpha as the last writer of their blob "
            "(each reads its own output as its bottom), and Softmax and MVN followed by a Scale in "
            "place (each reads the Scale's output as its top)",
            [
                L("bnll_conv", "Convolution", "data", **conv(3, kernel_size=1)),
                L("bnll", "BNLL", "bnll_conv", "bnll_conv"),
                L("relu_conv", "Convolution", "data", **conv(3, kernel_size=1)),
                L("relu", "ReLU", "relu_conv", "relu_conv", relu_param={"negative_slope": -0.3}),
                L("elu_conv", "Convolution", "data", **conv(3, kernel_size=1)),
                L("elu", "ELU", "elu_conv", "elu_conv", elu_param={"alpha": -0.5}),
                L("softmax_conv", "Convolution", "data", **conv(4, kernel_size=1)),
                L("softmax", "Softmax", "softmax_conv"),
                L("softmax_scale", "Scale", "softmax", "softmax", scale_param={"bias_term": True}),
                L("mvn_conv", "Convolution", "data", **conv(3, kernel_size=1)),
                L("mvn", "MVN", "mvn_conv"),
                L("mvn_scale", "Scale", "mvn", "mvn", scale_param={"bias_term": True}),
                L("mvn_mean", "MVN", "mvn_conv", mvn_param={"normalize_variance": False}),
                L("mvn_mean_power", "Power", "mvn_mean", "mvn_mean", power_param={"scale": -1.5}),
            ],
            runs((1, 3, 4, 5), (2, 3, 2, 3)),
            notes=[
                "blobs computed in place hold only their last value (bnll_conv: BNLL's output)",
                "Caffe's BNLL backward reads bottom data: in place, its own output",
            ],
        ),
        Case(
            "shared_memory_in_place",
            "Reshape and Flatten tops share their bottom's memory in Caffe: a layer computing in place "
            "on either blob afterwards changes both (the blobs Caffe records, and a Pooling that reads "
            "the bottom after a ReLU in place on the Flatten)",
            [
                L("conv", "Convolution", "data", **conv(3, kernel_size=1)),
                L("flat", "Flatten", "conv"),
                L("flat_relu", "ReLU", "flat", "flat", relu_param={"negative_slope": 0.2}),
                L("pool", "Pooling", "conv", **pool("MAX", kernel_size=2, stride=1)),
                L("conv2", "Convolution", "data", **conv(2, kernel_size=1)),
                L("reshaped", "Reshape", "conv2", reshape_param={"shape": {"dim": [0, -1, 1]}}),
                L("reshaped_power", "Power", "reshaped", "reshaped",
                  power_param={"scale": 2.0, "shift": 0.5}),
            ],
            runs((1, 3, 4, 5), (2, 3, 2, 3)),
            notes=[
                "conv holds flat's values after the ReLU (in conv's shape), and pool reads them",
                "conv2 holds the values after reshaped_power",
                "computing in place on the bottom after the Reshape read it is refused by Caffe (probe "
                "in_place_after_reader)",
            ],
        ),
        Case(
            "shared_memory_backward",
            "Caffe's backward through blobs sharing memory: a layer reading its top in backward, a later "
            "layer computing in place on a Reshape or Flatten of that top (MVN -> Reshape -> Sigmoid in "
            "place; Softmax -> Flatten -> Reshape -> TanH in place); and a Flatten reading a Reshape's "
            "top, which re-points the Reshape's diff away from its bottom's in backward, so nothing "
            "reaches the layers before (Scale -> Reshape -> Power in place -> Flatten), unless a Split "
            "stands between them (the Reshape's top read by a Flatten and a TanH)",
            [
                L("mvn", "MVN", "data", mvn_param={"across_channels": True}),
                L("mvn_view", "Reshape", "mvn", reshape_param={"shape": {"dim": [0, -1]}}),
                L("mvn_sigmoid", "Sigmoid", "mvn_view", "mvn_view"),
                L("softmax", "Softmax", "data"),
                L("softmax_flat", "Flatten", "softmax"),
                L("softmax_view", "Reshape", "softmax_flat", reshape_param={"shape": {"dim": [0, 3, -1]}}),
                L("softmax_tanh", "TanH", "softmax_view", "softmax_view"),
                L("scale", "Scale", "data", scale_param={"axis": 1, "num_axes": 1, "bias_term": True}),
                L("scale_view", "Reshape", "scale", reshape_param={"shape": {"dim": [0, 0, -1, 1]}}),
                L("scale_power", "Power", "scale_view", "scale_view", power_param={"scale": 2.0}),
                L("scale_flat", "Flatten", "scale_view"),
                L("scale2", "Scale", "data", scale_param={"axis": 1, "num_axes": 1}),
                L("scale2_view", "Reshape", "scale2", reshape_param={"shape": {"dim": [0, -1]}}),
                L("scale2_flat", "Flatten", "scale2_view"),
                L("scale2_tanh", "TanH", "scale2_view"),
            ],
            runs((1, 3, 4, 5), (2, 3, 2, 3)),
            notes=[
                "MVN's backward reads its top after mvn_sigmoid overwrote the memory it shares",
                "Softmax's backward reads its top after softmax_tanh, two views away",
                "scale's parameter diffs and its part of data's diff are zero: scale_flat's backward "
                "points scale_view's diff at its own, and scale's diff is left as it was (zero)",
                "scale2_view is split between scale2_flat and scale2_tanh: its diff reaches scale2",
                "only the net's outputs are recorded and seeded (scale's diff would keep a seed)",
            ],
            net_outputs_only=True,
        ),
        Case(
            "shared_memory_split_concat_slice",
            "Split's tops, a Concat's top of one bottom and a Slice's top of one share their bottom's "
            "memory in Caffe: a layer computing in place on one of them changes the others and the "
            "bottom for the layers after (Split -> ReLU in place on one top, Power on the other; "
            "Concat and Slice -> ELU in place, then a Power on the bottom), and a Flatten reading "
            "the Concat's or the Slice's top alone cuts the gradient off from the layers before, as "
            "after a Reshape, with Caffe's backward pass",
            [
                L("conv", "Convolution", "data", **conv(3, kernel_size=1)),
                L("split", "Split", "conv", ["split_a", "split_b"]),
                L("split_relu", "ReLU", "split_a", "split_a"),
                L("split_power", "Power", "split_b", power_param={"scale": 2.0}),
                L("conv2", "Convolution", "data", **conv(3, kernel_size=1)),
                L("concat", "Concat", "conv2"),
                L("concat_elu", "ELU", "concat", "concat", elu_param={"alpha": 0.5}),
                L("conv2_power", "Power", "conv2", power_param={"shift": 1.0}),
                L("conv3", "Convolution", "data", **conv(3, kernel_size=1)),
                L("slice", "Slice", "conv3"),
                L("slice_elu", "ELU", "slice", "slice"),
                L("conv3_power", "Power", "conv3", power_param={"scale": 0.5}),
                L("scale", "Scale", "data", scale_param={"axis": 1, "num_axes": 1, "bias_term": True}),
                L("scale_concat", "Concat", "scale"),
                L("scale_flat", "Flatten", "scale_concat"),
                L("scale2", "Scale", "data", scale_param={"axis": 1, "num_axes": 1}),
                L("scale2_slice", "Slice", "scale2"),
                L("scale2_flat", "Flatten", "scale2_slice"),
            ],
            runs((1, 3, 4, 5), (2, 3, 2, 3)),
            notes=[
                "split_power reads split_b after split_relu: the ReLU's values",
                "conv2_power and conv3_power read their bottoms after the ELUs: the ELUs' values",
                "scale's and scale2's parameter diffs are zero (the Flatten cuts them off)",
                "only the net's outputs are recorded and seeded",
            ],
            net_outputs_only=True,
        ),
        # ---- More element-wise activations (each branch from one input, then an in-place chain)
        Case(
            "activations_more",
            "AbsVal, BNLL, ELU alpha 0.4, Exp (base e; base 2 scale 0.5 shift -0.3), Log on positive "
            "values (base e; base 10 scale 2 shift 0.5), and an in-place chain "
            "Power -> ELU -> BNLL -> Log -> Exp",
            [
                L("absval", "AbsVal", "data"),
                L("bnll", "BNLL", "data"),
                L("elu", "ELU", "data", elu_param={"alpha": 0.4}),
                L("exp", "Exp", "data"),
                L("exp2", "Exp", "data", exp_param={"base": 2.0, "scale": 0.5, "shift": -0.3}),
                L("positive", "Power", "absval", power_param={"shift": 0.1}),
                L("log", "Log", "positive"),
                L("log10", "Log", "positive", log_param={"base": 10.0, "scale": 2.0, "shift": 0.5}),
                L("chain", "Power", "data", power_param={"scale": 1.5}),
                L("chain_elu", "ELU", "chain", "chain", elu_param={"alpha": 2.0}),
                L("chain_bnll", "BNLL", "chain", "chain"),
                L("chain_log", "Log", "chain", "chain", log_param={"base": 2.0, "scale": 3.0}),
                L("chain_exp", "Exp", "chain", "chain", exp_param={"scale": -0.5}),
            ],
            runs((1, 3, 4, 5), (2, 3, 1, 1), (1, 3, 5, 3)),
            notes=[
                "ELU: x if x > 0 else alpha * (exp(x) - 1)",
                "Exp: base^(shift + scale * x); base -1 (the default) means e",
                "Log: log_base(shift + scale * x); 'positive' = |x| + 0.1 keeps the inputs positive",
                "BNLL: log(1 + exp(x)) (Caffe evaluates x + log(1 + exp(-x)) for x > 0)",
                "chain, chain_elu, chain_bnll, chain_log and chain_exp share the blob 'chain': only its "
                "final value (after Exp) exists; BNLL > 0 keeps the in-place Log defined",
                "AbsVal does not allow in-place computation in Caffe",
            ],
        ),
        # ---- Bias
        Case(
            "bias",
            "learned Bias (axis 1 num_axes 1; num_axes 0 scalar; axis 2 num_axes 2) and a two-bottom "
            "Bias (bottom 1 is the bias, shape (C, H) at axis 1)",
            [
                L("bias_channel", "Bias", "x", bias_param={"axis": 1, "num_axes": 1}),
                L("bias_scalar", "Bias", "x", bias_param={"num_axes": 0}),
                L("bias_hw", "Bias", "x", bias_param={"axis": 2, "num_axes": 2}),
                L("bias_by_b", "Bias", ["x", "b"]),
            ],
            two_input_runs(("x", "b"), ((1, 3, 4, 5), (3, 4)), ((2, 3, 4, 5), (3, 4))),
            notes=[
                "learned bias values ~ N(0, 0.5)",
                "bias_scalar's blob has 0 axes (shape [])",
                "bias_by_b has no blobs: the bias is bottom 'b', broadcast from axis 1 (default)",
            ],
        ),
        # ---- ArgMax
        Case(
            "argmax",
            "ArgMax over C*H*W per image (top_k 1; top_k 3 with out_max_val) and over axis 1 "
            "(top_k 1; top_k 2 with out_max_val), on inputs with many ties; Threshold 0.5 (neither "
            "has a backward pass in Caffe)",
            [
                L("argmax", "ArgMax", "data"),
                L("argmax_top3_val", "ArgMax", "data", argmax_param={"top_k": 3, "out_max_val": True}),
                L("argmax_c", "ArgMax", "data", argmax_param={"axis": 1}),
                L(
                    "argmax_c_top2_val",
                    "ArgMax",
                    "data",
                    argmax_param={"axis": 1, "top_k": 2, "out_max_val": True},
                ),
                L("threshold", "Threshold", "data", threshold_param={"threshold": 0.5}),
            ],
            runs((1, 4, 3, 5), (2, 4, 1, 1), (2, 4, 2, 3)),
            make_input=argmax_input,
            notes=[
                "Threshold: 1 where x > threshold, else 0 (the ties at 0.5 give 0)",
                "inputs are N(0, 1) rounded to multiples of 0.5, so values tie often",
                "Caffe sorts (value, index) pairs descending: among equal values the largest index comes "
                "first",
                "without axis: top shape (N, 1, top_k, 1) for a 4-D input (at least 3 axes); "
                "with out_max_val (N, 2, top_k, 1): [n, 0] indices into C*H*W, [n, 1] values",
                "with axis: the bottom's shape with shape[axis] = top_k; out_max_val gives values only",
                "indices are stored as float32",
            ],
        ),
        # ---- Reduction
        Case(
            "reduction",
            "Reduction SUM, ASUM, SUMSQ, MEAN at axis 0, 1 and 2 (coeff != 1), plus default SUM and "
            "MEAN at axis -1",
            [
                L(
                    f"{op.lower()}_a{axis}",
                    "Reduction",
                    "data",
                    reduction_param={"operation": op, "axis": axis, "coeff": coeff},
                )
                for op, coeffs in (
                    ("SUM", (0.5, -1.5, 2.0)),
                    ("ASUM", (-0.25, 3.0, 0.75)),
                    ("SUMSQ", (1.5, 0.2, -2.0)),
                    ("MEAN", (4.0, -0.5, 1.25)),
                )
                for axis, coeff in zip((0, 1, 2), coeffs, strict=True)
            ]
            + [
                L("sum_default", "Reduction", "data"),
                L("mean_last", "Reduction", "data", reduction_param={"operation": "MEAN", "axis": -1}),
            ],
            runs((1, 3, 4, 5), (2, 3, 1, 1), (2, 2, 3, 2)),
            notes=[
                "Reduction reduces every axis from 'axis' to the end; the top keeps the axes before it: "
                "axis 0 gives shape [] (a scalar), axis 1 (N,), axis 2 (N, C)",
                "the default is SUM at axis 0 with coeff 1",
                "MEAN is SUM times coeff / (number of reduced elements)",
            ],
        ),
        # ---- Tile
        Case(
            "tile",
            "Tile axis 1 tiles 3, axis 2 tiles 2, axis 0 tiles 2 and axis -1 tiles 1",
            [
                L("tile_c3", "Tile", "data", tile_param={"axis": 1, "tiles": 3}),
                L("tile_h2", "Tile", "data", tile_param={"axis": 2, "tiles": 2}),
                L("tile_n2", "Tile", "data", tile_param={"axis": 0, "tiles": 2}),
                L("tile_w1", "Tile", "data", tile_param={"axis": -1, "tiles": 1}),
            ],
            runs((1, 2, 3, 4), (2, 2, 1, 1), (1, 3, 2, 5)),
            notes=["Tile repeats the whole block from 'axis' on: like numpy.tile, not numpy.repeat"],
        ),
        # ---- MVN
        Case(
            "mvn",
            "MVN default, normalize_variance false, across_channels true (with and without variance), "
            "eps 0.1",
            [
                L("mvn", "MVN", "data"),
                L("mvn_mean_only", "MVN", "data", mvn_param={"normalize_variance": False}),
                L("mvn_across", "MVN", "data", mvn_param={"across_channels": True}),
                L(
                    "mvn_across_mean_only",
                    "MVN",
                    "data",
                    mvn_param={"across_channels": True, "normalize_variance": False},
                ),
                L("mvn_eps", "MVN", "data", mvn_param={"eps": 0.1}),
                L("mvn_across_eps", "MVN", "data", mvn_param={"across_channels": True, "eps": 0.5}),
            ],
            runs((1, 3, 4, 5), (2, 3, 1, 1), (2, 2, 3, 2)),
            make_input=mvn_input,
            notes=[
                "inputs ~ N(0.7, 2)",
                "Caffe computes (x - mean) / (sqrt(var) + eps) with the biased variance E((x - mean)^2): "
                "eps is added to the standard deviation, not to the variance; the default eps is 1e-9",
                "the mean and variance are per (n, c) over H*W, or per n over C*H*W with across_channels",
            ],
        ),
        Case(
            "mvn_fewer_axes",
            "MVN of blobs of 1, 2 and 3 axes (across channels, default, mean only), forward and backward",
            [
                L("mvn_1d", "MVN", "a", mvn_param={"across_channels": True}),
                L("mvn_2d", "MVN", "b", mvn_param={"across_channels": True}),
                L("mvn_3d", "MVN", "c"),
                L("mvn_3d_mean_only", "MVN", "c", mvn_param={"normalize_variance": False}),
            ],
            two_input_runs(("a", "b", "c"), ((5,), (2, 3), (2, 3, 4)), ((3,), (1, 4), (1, 2, 5))),
            make_input=mvn_input,
            backward=True,
            notes=["Caffe's MVN Reshape gives its top (num, channels, height, width): a blob of fewer "
                   "axes reads as 1 on the missing ones, and its top has 4"],
        ),
        # ---- Several bottoms, second tops, shared parameters, repeated names (Caffe's Net::Init)
        Case(
            "conv_multi_bottom",
            "Convolution and Deconvolution with two and three bottoms: the same weights applied to each "
            "bottom, one top per bottom",
            [
                L(
                    "conv",
                    "Convolution",
                    ["a", "b"],
                    ["conv_a", "conv_b"],
                    **conv(4, kernel_size=3, pad=1, stride=2),
                ),
                L(
                    "conv3",
                    "Convolution",
                    ["a", "b", "c"],
                    ["conv3_a", "conv3_b", "conv3_c"],
                    **conv(2, kernel_size=1, bias_term=False),
                ),
                L(
                    "deconv",
                    "Deconvolution",
                    ["a", "b"],
                    ["deconv_a", "deconv_b"],
                    **conv(2, kernel_size=4, stride=2),
                ),
            ],
            two_input_runs(("a", "b", "c"), *[(s, s, s) for s in ((1, 3, 5, 7), (2, 3, 1, 1), (1, 3, 4, 4))]),
            notes=["BaseConvolutionLayer: every bottom must have bottom 0's shape; top i = layer(bottom i)"],
        ),
        Case(
            "pool_max_nan",
            "MAX pooling over NaN and -inf: an AVE pooling's windows past the input (no padding, so "
            "Caffe keeps them) divide 0 by 0, and a Log of 0 gives -inf; Caffe's MAX takes a value "
            "only where it exceeds the running maximum, which starts at -FLT_MAX, so NaN and -inf "
            "never win and a window of nothing else gives -FLT_MAX; ceil, padded, rectangular and "
            "global windows",
            [
                L("ave", "Pooling", "data", **pool("AVE", kernel_size=1, stride=2)),
                L("max_ceil", "Pooling", "ave", **pool("MAX", kernel_size=2, stride=2)),
                L("max_pad", "Pooling", "ave", **pool("MAX", kernel_size=3, stride=2, pad=1)),
                L("max_wide", "Pooling", "ave", **pool("MAX", kernel_h=1, kernel_w=3, stride=1)),
                L("max_global", "Pooling", "ave", pooling_param={"pool": "MAX", "global_pooling": True}),
                L("zero", "Power", "data", power_param={"scale": 0.0}),
                L("log", "Log", "zero"),
                L("mixed", "Concat", ["log", "data"], concat_param={"axis": 3}),
                L("max_log", "Pooling", "mixed", **pool("MAX", kernel_h=2, kernel_w=3, stride=3)),
                L("max_log_pad", "Pooling", "log", **pool("MAX", kernel_size=2, stride=1, pad=1)),
            ],
            runs((1, 2, 5, 6), (2, 3, 3, 7)),
            notes=["the last columns (and rows) of ave are NaN: AVE windows past a 6- or 7-wide input"],
        ),
        Case(
            "pool_max_mask",
            "MAX pooling with a second top (the argmax mask): kernel 2 stride 2 (ceil overhang), kernel 3 "
            "stride 2 pad 1, kernel 3 stride 3 pad 2 (windows start in the padding), rectangular, FLOOR and "
            "global, on inputs with many ties",
            [
                L("pool", "Pooling", "data", ["pool", "pool_mask"], **pool("MAX", kernel_size=2, stride=2)),
                L(
                    "pool_p1",
                    "Pooling",
                    "data",
                    ["pool_p1", "pool_p1_mask"],
                    **pool("MAX", kernel_size=3, stride=2, pad=1),
                ),
                L(
                    "pool_p2",
                    "Pooling",
                    "data",
                    ["pool_p2", "pool_p2_mask"],
                    **pool("MAX", kernel_size=3, stride=3, pad=2),
                ),
                L(
                    "pool_rect",
                    "Pooling",
                    "data",
                    ["pool_rect", "pool_rect_mask"],
                    **pool("MAX", kernel_h=2, kernel_w=3, stride_h=1, stride_w=2, pad_h=1, pad_w=0),
                ),
                L(
                    "pool_floor",
                    "Pooling",
                    "data",
                    ["pool_floor", "pool_floor_mask"],
                    **pool("MAX", kernel_size=3, stride=2, pad=1, round_mode="FLOOR"),
                ),
                L(
                    "pool_global",
                    "Pooling",
                    "data",
                    ["pool_global", "pool_global_mask"],
                    **pool("MAX", global_pooling=True),
                ),
                L(
                    "pool_gap",
                    "Pooling",
                    "data",
                    ["pool_gap", "pool_gap_mask"],
                    **pool("MAX", kernel_size=2, stride=3),
                ),
                L(
                    "pool_far",
                    "Pooling",
                    "data",
                    ["pool_far", "pool_far_mask"],
                    **pool("MAX", kernel_size=3, stride=100),
                ),
                L("pool_gap_ave", "Pooling", "data", **pool("AVE", kernel_size=2, stride=3)),
                L("pool_far_ave", "Pooling", "data", **pool("AVE", kernel_size=3, stride=100)),
            ],
            runs((1, 2, 5, 7), (2, 2, 1, 3), (1, 3, 6, 6), (1, 2, 4, 5)),
            make_input=argmax_input,
            notes=[
                "inputs are N(0, 1) rounded to multiples of 0.5, so values tie often",
                "the mask is the index h * W + w of the window's maximum in the bottom's H x W plane, as a "
                "float; windows are clipped to the input (padding is never picked); the first maximum in "
                "row-major order wins (Caffe compares with >)",
                "pool_gap (kernel 2 stride 3 on a width of 3) and pool_far (stride 100) have windows that "
                "start past the input: MAX gives -FLT_MAX and mask -1; AVE gives 0/0 = NaN (pool_gap_ave) "
                "or 0 (pool_far_ave: the clipped window's size is negative)",
            ],
        ),
        Case(
            "shared_params",
            "Parameters shared by name: two convolutions sharing weights and bias, a third sharing only the "
            "weights (its own bias), a Deconvolution sharing a convolution's weights (same shape), and "
            "InnerProducts sharing with share_mode PERMISSIVE",
            [
                L(
                    "conv1",
                    "Convolution",
                    "data",
                    param=[{"name": "w"}, {"name": "b"}],
                    **conv(3, kernel_size=3, pad=1),
                ),
                L(
                    "conv2",
                    "Convolution",
                    "conv1",
                    param=[{"name": "w"}, {"name": "b"}],
                    **conv(3, kernel_size=3, pad=1),
                ),
                L("conv3", "Convolution", "data", param=[{"name": "w"}], **conv(3, kernel_size=3, pad=1)),
                L(
                    "deconv",
                    "Deconvolution",
                    "conv2",
                    param=[{"name": "w"}],
                    **conv(3, kernel_size=3, bias_term=False),
                ),
                L(
                    "ip1",
                    "InnerProduct",
                    "conv1",
                    param=[{"name": "ipw"}],
                    inner_product_param={"num_output": 2},
                ),
                L(
                    "ip2",
                    "InnerProduct",
                    "conv3",
                    param=[{"name": "ipw", "share_mode": "PERMISSIVE"}, {}],
                    inner_product_param={"num_output": 2},
                ),
            ],
            runs((1, 3, 4, 5), (1, 3, 4, 5)),
            notes=[
                "Caffe saves a shared blob under every layer that uses it (the same values)",
                "the values are set layer by layer: a shared blob holds the last layer's values",
                "InnerProduct weights depend on the input size: both runs are 4x5",
            ],
        ),
        Case(
            "duplicate_names",
            "Two layers named 'relu' (ReLU, then Sigmoid) and two Convolutions named 'conv' of the same "
            "shape: Caffe copies the caffemodel's 'conv' blobs into the first one only",
            [
                L("relu", "ReLU", "data", "x"),
                L("relu", "Sigmoid", "x", "y"),
                L("conv", "Convolution", "data", "conv_a", **conv(2, kernel_size=3, pad=1)),
                L(
                    "conv",
                    "Convolution",
                    "y",
                    "conv_b",
                    **conv(
                        2,
                        kernel_size=3,
                        pad=1,
                        weight_filler={"type": "constant", "value": 0.25},
                        bias_filler={"type": "constant", "value": -0.5},
                    ),
                ),
            ],
            runs((1, 3, 4, 5), (2, 3, 1, 1)),
            load_options={"strict": False},
            notes=[
                "weights.caffemodel holds two layers named 'conv' (the first's values, then the second's)",
                "CopyTrainedLayersFrom gives each of them to the first layer named 'conv', so it ends with "
                "the second entry's values; the second 'conv' keeps its fillers (constant 0.25, bias -0.5)",
                "build with strict=False: the second 'conv' has no weights of its own",
            ],
        ),
    ]
    for case in cases:  # Caffe's backward pass too, where every layer of the case has one
        case.backward = case.name not in WITHOUT_BACKWARD
    names = [c.name for c in cases]
    assert len(names) == len(set(names)), "case names must be unique"
    cases += [
        # ---- BVLC's losses, forward and backward (issue 18)
        Case(
            "losses_regression",
            "EuclideanLoss (default and loss_weight 2) and SigmoidCrossEntropyLoss (default, and "
            "normalization BATCH_SIZE), with Caffe's backward pass",
            [
                L("euclid", "EuclideanLoss", ["a", "b"]),
                L("euclid_w2", "EuclideanLoss", ["a", "b"], loss_weight=[2.0]),
                L("sce", "SigmoidCrossEntropyLoss", ["score", "target"]),
                L("sce_batch", "SigmoidCrossEntropyLoss", ["score", "target"],
                  loss_param={"normalization": "BATCH_SIZE"}),
            ],
            two_input_runs(("a", "b", "score", "target"), ((2, 3, 4, 5), (2, 3, 4, 5), (3, 5), (3, 5)),
                           ((1, 7), (1, 7), (2, 2, 3), (2, 2, 3))),
            make_input=inputs_by_blob(score=uniform(-4, 4), target=uniform(0, 1)),
            backward=True,
        ),
        Case(
            "propagate_down",
            "propagate_down: false on a bottom: no gradient from that layer (a Power beside another "
            "reader of the same convolution; the second bottom of a Concat), and on a layer computing "
            "in place (a ReLU, then a Scale whose parameters still learn), where Caffe skips the "
            "backward pass of the blob's earlier writers; EuclideanLosses drive Caffe's backward pass "
            "(no force_backward, which would override the field)",
            [
                L("conv", "Convolution", "data", **conv(3, kernel_size=1)),
                L("p", "Power", "conv", propagate_down=[False], power_param={"scale": 2.0}),
                L("q", "Power", "conv", power_param={"scale": 3.0, "shift": 0.5}),
                L("loss_pq", "EuclideanLoss", ["p", "q"]),
                L("conv2", "Convolution", "data", **conv(3, kernel_size=1)),
                L("relu2", "ReLU", "conv2", "conv2", propagate_down=[False]),
                L("power2", "Power", "conv2", "conv2", power_param={"scale": 1.5, "shift": 0.2}),
                L("conv3", "Convolution", "data", **conv(3, kernel_size=1)),
                L("scale3", "Scale", "conv3", "conv3", propagate_down=[False],
                  scale_param={"bias_term": True}),
                L("loss_23", "EuclideanLoss", ["conv2", "conv3"]),
                L("conv4", "Convolution", "data", **conv(2, kernel_size=1)),
                L("conv5", "Convolution", "data", **conv(2, kernel_size=1)),
                L("cat45", "Concat", ["conv4", "conv5"], propagate_down=[True, False]),
                L("cat54", "Concat", ["conv5", "conv4"]),
                L("loss_cat", "EuclideanLoss", ["cat45", "cat54"]),
            ],
            runs((2, 3, 4, 5), (1, 3, 2, 3)),
            notes=[
                "conv's gradient comes from q alone, conv5's from cat54 alone",
                "conv2 and conv3 get no gradient: relu2 and scale3 mark their blobs as needing none",
            ],
            backward=True,
            input_grads=False,
        ),
        Case(
            "losses_classification",
            "HingeLoss L1 and L2, MultinomialLogisticLoss on probabilities, ContrastiveLoss "
            "(margin 1.5, legacy and current), with Caffe's backward pass",
            [
                L("hinge_l1", "HingeLoss", ["score", "label"]),
                L("hinge_l2", "HingeLoss", ["score", "label"], hinge_loss_param={"norm": "L2"}),
                L("mlogistic", "MultinomialLogisticLoss", ["prob", "label"]),
                L("contrastive", "ContrastiveLoss", ["x1", "x2", "similar"],
                  contrastive_loss_param={"margin": 1.5}),
                L("contrastive_legacy", "ContrastiveLoss", ["x1", "x2", "similar"],
                  contrastive_loss_param={"margin": 1.5, "legacy_version": True}),
            ],
            two_input_runs(("score", "label", "prob", "x1", "x2", "similar"),
                           ((4, 5), (4,), (4, 5), (4, 3, 1, 1), (4, 3, 1, 1), (4,)),
                           ((2, 5, 1, 1), (2,), (2, 5, 1, 1), (2, 6, 1, 1), (2, 6, 1, 1), (2,))),
            make_input=inputs_by_blob(label=integers(0, 5), prob=probabilities, similar=integers(0, 2),
                                      x1=uniform(-0.6, 0.6), x2=uniform(-0.6, 0.6)),
            backward=True,
        ),
        Case(
            "softmax_loss_large",
            "SoftmaxWithLoss over a 4-class 1 x 250 x 200 map, normalization NONE, and VALID with "
            "ignored labels: the value is Caffe's running float sum of the 50,000 terms",
            [
                L("loss_sum", "SoftmaxWithLoss", ["score", "label"], loss_param={"normalization": "NONE"}),
                L("loss_valid", "SoftmaxWithLoss", ["score", "label_ignored"],
                  loss_param={"ignore_label": IGNORE_LABEL, "normalization": "VALID"}),
            ],
            two_input_runs(("score", "label", "label_ignored"),
                           ((1, 4, 250, 200), (1, 1, 250, 200), (1, 1, 250, 200))),
            make_input=inputs_by_blob(score=lambda rng, shape: np.round(rng.uniform(-4, 4, shape) * 16) / 16,
                                      label=integers(0, 4), label_ignored=labels_with_ignored(4)),
            notes=["scores are multiples of 1/16 (a smaller fixture); no backward pass recorded"],
        ),
        # ---- BVLC's other missing types (issue 18)
        Case(
            "embed_reindex",
            "Embed (with and without bias) and BatchReindex, each under a EuclideanLoss, with "
            "Caffe's backward pass to the parameters (Caffe backpropagates to neither index input)",
            [
                L("embed", "Embed", ["index"], embed_param={"num_output": 4, "input_dim": 6}),
                L("embed_nobias", "Embed", ["index"],
                  embed_param={"num_output": 3, "input_dim": 6, "bias_term": False}),
                L("reindex", "BatchReindex", ["data", "permut"]),
                L("scaled", "Scale", ["reindex"]),
                L("loss_embed", "EuclideanLoss", ["embed", "t1"]),
                L("loss_nobias", "EuclideanLoss", ["embed_nobias", "t2"]),
                L("loss_scaled", "EuclideanLoss", ["scaled", "t3"]),
            ],
            two_input_runs(("index", "data", "permut", "t1", "t2", "t3"),
                           ((2, 3), (3, 2, 5, 4), (4,), (2, 3, 4), (2, 3, 3), (4, 2, 5, 4)),
                           ((5,), (2, 2, 3, 3), (2,), (5, 4), (5, 3), (2, 2, 3, 3))),
            make_input=inputs_by_blob(index=integers(0, 6), permut=integers(0, 2)),
            backward=True,
            input_grads=False,
        ),
        Case(
            "im2col_parameter",
            "Im2col (kernel 3, stride 2, pad 1; kernel 2 x 3, dilation 2) and a Parameter blob, "
            "with Caffe's backward pass",
            [
                L("im2col", "Im2col", ["data"],
                  convolution_param={"kernel_size": [3], "stride": [2], "pad": [1]}),
                L("im2col_dilated", "Im2col", ["data"],
                  convolution_param={"kernel_h": 2, "kernel_w": 3, "dilation": [2]}),
                L("param", "Parameter", [], ["param"], parameter_param={"shape": {"dim": [2, 3]}}),
            ],
            runs((1, 2, 7, 8), (2, 3, 5, 6)),
            backward=True,
        ),
        Case(
            "clip_swish",
            "BVLC master's Clip (min -0.5 max 0.8; min above max) and Swish (beta 1 and 1.7), and "
            "ReLU -> Clip -> Swish in place, with Caffe's backward pass",
            [
                L("clip", "Clip", "data", clip_param={"min": -0.5, "max": 0.8}),
                L("clip_crossed", "Clip", "data", clip_param={"min": 0.3, "max": -0.2}),
                L("swish", "Swish", "data"),
                L("swish_beta", "Swish", "data", swish_param={"beta": 1.7}),
                L("chain", "Power", "data", power_param={"scale": 2.0}),
                L("chain_relu", "ReLU", "chain", "chain"),
                L("chain_clip", "Clip", "chain", "chain", clip_param={"min": 0.25, "max": 1.5}),
                L("chain_swish", "Swish", "chain", "chain"),
            ],
            runs((1, 3, 4, 5), (2, 2, 1, 3)),
            make_input=argmax_input,
            backward=True,
            oracle=FORK_ORACLE,
            notes=["inputs are multiples of 0.5: some sit on Clip's bounds (its gradient passes there)"],
        ),
        Case(
            "clip_non_finite",
            "BVLC master's Clip over NaN and infinities: max(min, min(x, max)) gives min for a NaN and "
            "a bound for an infinity, and its gradient passes only inside the bounds, with Caffe's "
            "backward pass",
            [L("clip", "Clip", "data", clip_param={"min": -0.5, "max": 0.8})],
            runs((2, 3, 4, 5)),
            make_input=non_finite_input,
            backward=True,
            oracle=FORK_ORACLE,
        ),
        Case(
            "inplace_backward_kept",
            "Backward through in-place chains where Caffe's forward pass kept something aside: Swish "
            "(its sigmoid) overwritten by a Clip and a Swish in place, a Clip in place as the last "
            "writer (it reads its own clipped output), MVN computed in place then a Scale in place "
            "(its deviation), and MVN in place as the last writer (its backward overwrites the diff "
            "it reads), with Caffe's backward pass",
            [
                L("chain", "Power", "data", power_param={"scale": -1.5}),
                L("swish", "Swish", "chain", "chain"),
                L("clip", "Clip", "chain", "chain", clip_param={"min": -1.3, "max": 0.45}),
                L("swish_beta", "Swish", "chain", "chain", swish_param={"beta": 1.7}),
                L("relu", "ReLU", "chain", "relu"),
                L("last", "Power", "data", power_param={"scale": 2.0}),
                L("last_clip", "Clip", "last", "last", clip_param={"min": -0.5, "max": 0.8}),
                L("mvn", "Power", "data", power_param={"scale": 1.5, "shift": 0.2}),
                L("mvn_norm", "MVN", "mvn", "mvn"),
                L("mvn_scale", "Scale", "mvn", "mvn", scale_param={"bias_term": True}),
                L("mvn_last", "Power", "data", power_param={"scale": 0.5, "shift": -0.1}),
                L("mvn_last_norm", "MVN", "mvn_last", "mvn_last", mvn_param={"across_channels": True}),
            ],
            runs((1, 4, 8, 4), (2, 4, 2, 5)),
            backward=True,
            oracle=FORK_ORACLE,
        ),
        Case(
            "conv_nd",
            "N-D Convolution and Deconvolution (BVLC's im2col_nd): 3 spatial axes with a kernel, stride, "
            "pad and dilation per axis and 2 groups, and 1 spatial axis, with Caffe's backward pass",
            [
                L("conv3d", "Convolution", "video",
                  **conv(4, kernel_size=[3, 2, 3], stride=[1, 2, 1], pad=[1, 0, 1], dilation=[1, 1, 2],
                         group=2)),
                L("deconv3d", "Deconvolution", "conv3d",
                  **conv(2, kernel_size=[2, 3, 2], stride=[2, 1, 2], pad=[0, 1, 1])),
                L("conv1d", "Convolution", "signal", **conv(3, kernel_size=[3], stride=[2], pad=[1])),
            ],
            two_input_runs(("video", "signal"), ((1, 2, 4, 5, 6), (2, 2, 7)), ((2, 2, 3, 4, 5), (1, 2, 4))),
            backward=True,
        ),
        Case(
            "losses_master",
            "BVLC master's SigmoidCrossEntropyLoss (default BATCH_SIZE; ignore_label 2 with VALID; "
            "ignore_label 0, which int(target) matches for every target below 1; FULL; NONE; "
            "legacy normalize) and InfogainLoss (softmax inside; H as a bottom; VALID with "
            "ignore_label, FULL, BATCH_SIZE, classes on axis 2, the prob top), after a Scale so that "
            "Caffe's backward pass reaches the Scale's parameters",
            [
                L("scaled", "Scale", ["score"],
                  scale_param={"bias_term": True, "axis": 1, "num_axes": 1}),
                L("sce", "SigmoidCrossEntropyLoss", ["scaled", "target"]),
                L("sce_valid", "SigmoidCrossEntropyLoss", ["scaled", "target"],
                  loss_param={"ignore_label": 2, "normalization": "VALID"}),
                L("sce_ignore0", "SigmoidCrossEntropyLoss", ["scaled", "target"],
                  loss_param={"ignore_label": 0, "normalization": "VALID"}),
                L("sce_full", "SigmoidCrossEntropyLoss", ["scaled", "target"],
                  loss_param={"normalization": "FULL"}, loss_weight=[0.5]),
                L("sce_none", "SigmoidCrossEntropyLoss", ["scaled", "target"],
                  loss_param={"normalization": "NONE"}),
                L("sce_normalize", "SigmoidCrossEntropyLoss", ["scaled", "target"],
                  loss_param={"normalize": True}),
                L("info", "InfogainLoss", ["scaled", "label", "H"],
                  loss_param={"ignore_label": IGNORE_LABEL}),
                L("info_full", "InfogainLoss", ["scaled", "label", "H"],
                  loss_param={"ignore_label": IGNORE_LABEL, "normalization": "FULL"}),
                L("info_batch", "InfogainLoss", ["scaled", "label", "H"], ["info_batch", "info_prob"],
                  loss_param={"ignore_label": IGNORE_LABEL, "normalization": "BATCH_SIZE"},
                  loss_weight=[1.0, 0.0]),
                L("info_axis2", "InfogainLoss", ["scaled", "label2", "H2"],
                  infogain_loss_param={"axis": 2}),
            ],
            two_input_runs(("score", "target", "label", "H", "label2", "H2"),
                           ((2, 4, 3, 5), (2, 4, 3, 5), (2, 1, 3, 5), (1, 1, 4, 4), (2, 4, 1, 5), (3, 3)),
                           ((1, 4, 3, 2), (1, 4, 3, 2), (1, 1, 3, 2), (1, 1, 4, 4), (1, 4, 1, 2), (3, 3))),
            make_input=inputs_by_blob(score=uniform(-3, 3), target=targets_with(2.0),
                                      label=labels_with_ignored(4), H=uniform(0, 1), label2=integers(0, 3),
                                      H2=uniform(0, 1)),
            backward=True,
            input_grads=False,
            oracle=FORK_ORACLE,
            oracle_types={"InfogainLoss": "InfogainLossMaster",
                          "SigmoidCrossEntropyLoss": "SigmoidCrossEntropyLossMaster"},
            notes=["targets are uniform in [0, 1], about one in five exactly 2 (sce_valid ignores those)"],
        ),
        # ---- C3D v1.0's 3-D layers, compiled into the fork oracle (tools/build_fork_oracle.sh)
        Case(
            "c3d_layers",
            "C3D's Convolution3D (kernel_depth 3, temporal_pad 1, pad 1; temporal_stride 2, stride 2, "
            "no bias), Pooling3D (MAX 2x2x2 stride 2 on odd sizes: C3D's ceil rounding keeps a last "
            "window past the input; AVE kernel_depth 3 with spatial pad 1) and Deconvolution3D, with "
            "C3D's backward pass (MAX: every tied maximum gets the gradient)",
            [
                L("conv3d", "Convolution3D", "video",
                  convolution3d_param={"num_output": 4, "kernel_size": 3, "kernel_depth": 3, "pad": 1,
                                       "temporal_pad": 1}),
                L("conv3d_s2", "Convolution3D", "video",
                  convolution3d_param={"num_output": 3, "kernel_size": 2, "kernel_depth": 2, "stride": 2,
                                       "temporal_stride": 2, "bias_term": False}),
                L("pool_max", "Pooling3D", "conv3d",
                  pooling3d_param={"pool": "MAX", "kernel_size": 2, "kernel_depth": 2, "stride": 2,
                                   "temporal_stride": 2}),
                L("pool_ave", "Pooling3D", "conv3d",
                  pooling3d_param={"pool": "AVE", "kernel_size": 3, "kernel_depth": 3, "stride": 2,
                                   "temporal_stride": 1, "pad": 1}),
                L("pool_ties", "Pooling3D", "video",
                  pooling3d_param={"pool": "MAX", "kernel_size": 3, "kernel_depth": 2, "stride": 2,
                                   "temporal_stride": 1}),
                L("deconv3d", "Deconvolution3D", "conv3d_s2",
                  convolution3d_param={"num_output": 2, "kernel_size": 3, "kernel_depth": 2, "stride": 2,
                                       "temporal_stride": 2, "pad": 1}),
            ],
            runs((2, 2, 5, 7, 7), (2, 2, 5, 7, 7), blob="video"),
            make_input=argmax_input,
            params={"conv3d": c3d_params, "conv3d_s2": c3d_params, "deconv3d": c3d_params},
            backward=True,
            **C3D_ORACLE,
            notes=["C3D's layers keep the shapes of their setup: both runs are 2 x 2 x 5 x 7 x 7",
                   "the input is multiples of 0.5 (pool_ties reads it directly: its windows tie often)",
                   "C3D's bias blob is 5-D: (1, 1, 1, 1, num_output)"],
        ),
        Case(
            "c3d_kernel_over_input",
            "C3D's Convolution3D with a kernel larger than the padded input by less than the stride "
            "(C3D's sizes divide in C++, truncating toward zero: one output over zeros past the "
            "input's end), in time and in space, with C3D's backward pass",
            [
                L("over", "Convolution3D", "video",
                  convolution3d_param={"num_output": 3, "kernel_size": 3, "kernel_depth": 3, "stride": 2,
                                       "temporal_stride": 2}),
                L("over_padded", "Convolution3D", "video",
                  convolution3d_param={"num_output": 2, "kernel_size": 5, "kernel_depth": 2, "stride": 3,
                                       "temporal_stride": 3, "pad": 1, "bias_term": False}),
            ],
            runs((2, 2, 2, 2, 2), blob="video"),
            params={"over": c3d_params, "over_padded": c3d_params},
            backward=True,
            **C3D_ORACLE,
        ),
        Case(
            "c3d_pool_past_input",
            "C3D's Pooling3D with windows that start past the input (its ceil sizes keep them): MAX "
            "gives -FLT_MAX there (kernel 1 stride 2 on an even size; kernel_depth 3 temporal_stride "
            "2), AVE -0, with C3D's backward pass",
            [
                L("max_past", "Pooling3D", "video",
                  pooling3d_param={"pool": "MAX", "kernel_size": 1, "kernel_depth": 3, "stride": 2,
                                   "temporal_stride": 2}),
                L("ave_past", "Pooling3D", "video",
                  pooling3d_param={"pool": "AVE", "kernel_size": 1, "kernel_depth": 1, "stride": 2,
                                   "temporal_stride": 1}),
            ],
            runs((2, 2, 4, 4, 6), blob="video"),
            make_input=argmax_input,
            backward=True,
            **C3D_ORACLE,
        ),
        Case(
            "c3d_max_non_finite",
            "C3D's MAX Pooling3D over NaN and infinities: its std::max from -FLT_MAX never takes a NaN "
            "or -inf, so a window of nothing else gives -FLT_MAX, and +inf wins; disjoint and "
            "overlapping windows, with C3D's backward pass (every element equal to its window's "
            "maximum, +inf included, gets the gradient)",
            [
                L("max_disjoint", "Pooling3D", "video",
                  pooling3d_param={"pool": "MAX", "kernel_size": 2, "kernel_depth": 2, "stride": 2,
                                   "temporal_stride": 2}),
                L("max_overlap", "Pooling3D", "video",
                  pooling3d_param={"pool": "MAX", "kernel_size": 3, "kernel_depth": 2, "stride": 1,
                                   "temporal_stride": 1}),
            ],
            runs((2, 2, 4, 4, 6), blob="video"),
            make_input=non_finite_video,
            backward=True,
            **C3D_ORACLE,
        ),
        Case(
            "infogain_caffe_1_0",
            "Caffe 1.0's InfogainLoss (the brocolli oracle's: on probabilities, H as a third bottom), "
            "after a Scale and a Softmax so that Caffe's backward pass reaches the Scale's parameters",
            [
                L("scaled", "Scale", ["score"], scale_param={"bias_term": True, "axis": 1}),
                L("prob", "Softmax", ["scaled"]),
                L("infogain", "InfogainLoss", ["prob", "label", "H"]),
                L("infogain_w", "InfogainLoss", ["prob", "label", "H"], loss_weight=[0.5]),
            ],
            two_input_runs(("score", "label", "H"), ((4, 5), (4,), (1, 1, 5, 5)),
                           ((2, 5, 1, 1), (2, 1, 1, 1), (1, 1, 5, 5))),
            make_input=inputs_by_blob(score=uniform(-3, 3), label=integers(0, 5), H=uniform(0, 1)),
            backward=True,
            input_grads=False,
            load_options={"variants": {"InfogainLoss": "caffe-1.0"}},
        ),
        Case(
            "sce_caffe_1_0",
            "Caffe 1.0's SigmoidCrossEntropyLoss (the brocolli oracle's), which divides by N and reads "
            "neither loss_param.normalization nor ignore_label",
            [
                L("sce_full", "SigmoidCrossEntropyLoss", ["score", "target"],
                  loss_param={"normalization": "FULL", "ignore_label": 0}),
                L("sce_none", "SigmoidCrossEntropyLoss", ["score", "target"],
                  loss_param={"normalization": "NONE"}),
            ],
            two_input_runs(("score", "target"), ((2, 3, 4), (2, 3, 4)), ((3, 5), (3, 5))),
            make_input=inputs_by_blob(score=uniform(-3, 3), target=uniform(0, 1)),
            backward=True,
            load_options={"variants": {"SigmoidCrossEntropyLoss": "caffe-1.0"}},
        ),
        Case(
            "recurrent",
            "LSTM (plain, with a static input, with expose_hidden) and RNN (plain; static input and "
            "expose_hidden), 4 time steps, sequences restarting mid-batch, with Caffe's backward pass",
            [
                L("lstm", "LSTM", ["x", "cont"], recurrent_param=recurrent(3)),
                L("lstm_static", "LSTM", ["x", "cont", "x_static"], recurrent_param=recurrent(2)),
                L("lstm_exposed", "LSTM", ["x", "cont", "h0", "c0"], ["lstm_exposed", "lstm_h", "lstm_c"],
                  recurrent_param=recurrent(3, expose_hidden=True)),
                L("rnn", "RNN", ["x", "cont"], recurrent_param=recurrent(4)),
                L("rnn_exposed", "RNN", ["x", "cont", "x_static", "rnn_h0"], ["rnn_exposed", "rnn_h"],
                  recurrent_param=recurrent(3, expose_hidden=True)),
            ],
            two_input_runs(("x", "cont", "x_static", "h0", "c0", "rnn_h0"),
                           ((4, 2, 5), (4, 2), (2, 3), (1, 2, 3), (1, 2, 3), (1, 2, 3)),
                           ((4, 3, 5), (4, 3), (3, 3), (1, 3, 3), (1, 3, 3), (1, 3, 3))),
            make_input=sequence_inputs,
            backward=True,
            notes=[
                "x is (T, N, C), cont (T, N); cont is 0 where a sequence starts, one 0.5 in run 0",
                "Caffe carries the final state of a forward pass into the next: run 1 starts every "
                "sequence anew (cont 0 at t = 0), so its values do not depend on run 0",
            ],
        ),
        Case(
            "lstm_unit",
            "LSTMUnit on its own (c_prev, gate inputs, cont of 0, 1 and 0.5), with Caffe's backward pass",
            [L("unit", "LSTMUnit", ["c_prev", "gates", "cont"], ["c", "h"])],
            two_input_runs(("c_prev", "gates", "cont"), ((1, 3, 2), (1, 3, 8), (1, 3)),
                           ((1, 2, 4), (1, 2, 16), (1, 2))),
            make_input=inputs_by_blob(cont=lambda rng, shape: np.resize(np.float32([0, 1, 0.5]), shape)),
            backward=True,
        ),
        Case(
            "recurrent_carry",
            "LSTM and RNN run twice on one net: the second pass continues the first's sequences "
            "(cont 1 at t = 0), so it starts from the state the first left",
            [
                L("lstm", "LSTM", ["x", "cont"], recurrent_param=recurrent(3)),
                L("rnn", "RNN", ["x", "cont"], recurrent_param=recurrent(2)),
            ],
            two_input_runs(("x", "cont"), ((3, 2, 4), (3, 2)), ((3, 2, 4), (3, 2))),
            make_input=inputs_by_blob(cont=lambda rng, shape: np.ones(shape, np.float32)),
            stateful=True,
        ),
        Case(
            "spp_filter",
            "SPP (pyramid heights 1, 2 and 3; MAX and AVE) on odd sizes, and Filter of four blobs by a "
            "selector, between a Scale and EuclideanLosses so that Caffe's backward pass reaches them "
            "(it needs a loss, and cannot be forced through Filter's selector)",
            [
                L("scaled", "Scale", ["data"], scale_param={"bias_term": True}),
                L("spp1", "SPP", ["scaled"], spp_param={"pyramid_height": 1}),
                L("spp2_ave", "SPP", ["scaled"], spp_param={"pyramid_height": 2, "pool": "AVE"}),
                L("spp3", "SPP", ["scaled"], spp_param={"pyramid_height": 3}),
                L("spp3_ave", "SPP", ["scaled"], spp_param={"pyramid_height": 3, "pool": "AVE"}),
                L("filter", "Filter", ["scaled", "spp3", "t_a", "t_b", "select"],
                  ["picked", "picked_spp", "t_picked", "t_picked_spp"]),
                L("loss_spp1", "EuclideanLoss", ["spp1", "t_spp1"]),
                L("loss_spp2", "EuclideanLoss", ["spp2_ave", "t_spp2"]),
                L("loss_spp3", "EuclideanLoss", ["spp3_ave", "t_spp3"]),
                L("loss_picked", "EuclideanLoss", ["picked", "t_picked"]),
                L("loss_picked_spp", "EuclideanLoss", ["picked_spp", "t_picked_spp"]),
            ],
            two_input_runs(("data", "select", "t_spp1", "t_spp2", "t_spp3", "t_a", "t_b"),
                           ((3, 2, 7, 9), (3, 1), (3, 2, 1, 1), (3, 10), (3, 42), (3, 2, 7, 9), (3, 42)),
                           ((4, 2, 6, 13), (4,), (4, 2, 1, 1), (4, 10), (4, 42), (4, 2, 6, 13), (4, 42))),
            make_input=inputs_by_blob(select=lambda rng, shape: (np.arange(shape[0]) % 2 == 0)
                                      .astype(np.float32).reshape(shape)),
            backward=True,
            input_grads=False,
            notes=["Filter keeps the items whose selector is non-zero (every other one here)"],
        ),
    ]
    return cases


# --------------------------------------------------------------------------------------------------
# Writing


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """An ``.npz`` with fixed zip timestamps (identical bytes on every regeneration), written atomically."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for key, array in arrays.items():
            member = io.BytesIO()
            np.lib.format.write_array(member, np.array(array, order="C"), allow_pickle=False)
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, member.getvalue())
    with atomic_write(path) as handle:
        handle.write(buffer.getvalue())


def write_json(path: Path, data: dict) -> None:
    with atomic_write(path) as handle:
        handle.write((json.dumps(data, indent=1) + "\n").encode("utf-8"))


def declared_tops(layers: list[dict]) -> list[str]:
    """Every top the net declares, in first-produced order (Caffe's automatic split blobs are not ours)."""
    seen: list[str] = []
    for layer in layers:
        for top in layer["top"]:
            if top not in seen:
                seen.append(top)
    return seen


def load_caffe() -> Any:
    try:
        import caffe
    except ImportError as exc:
        print(f"error: cannot import pycaffe ({exc}); see tools/README.md for PYTHONPATH", file=sys.stderr)
        raise SystemExit(2) from None
    caffe.set_mode_cpu()
    return caffe


def caffe_net(caffe, proto: Path, state: dict[str, Any] | None = None, weights: Path | None = None) -> Any:
    """``caffe.Net`` of ``proto`` in ``state``'s ``phase`` (TEST by default), ``level`` and ``stages``
    (as :func:`converters.load_caffe` takes them)."""
    state = state or {}
    phase = caffe.TRAIN if state.get("phase", "TEST") == "TRAIN" else caffe.TEST
    extra = {"weights": str(weights)} if weights is not None else {}
    level, stages = int(state.get("level", 0)), list(state.get("stages", ()))
    return caffe.Net(str(proto), phase, level=level, stages=stages, **extra)


def fill_and_save(
    caffe, net_text: str, layers: list[dict], rng: np.random.Generator, params, work: Path, model_name: str,
    state: dict[str, Any] | None = None,
) -> tuple[Path, Path, dict[str, Arrays]]:
    """Build the net in Caffe (in ``state``'s phase, level and stages: TEST, 0, none by default), set
    every parameter blob from ``rng``, save it; return the paths and values."""
    proto = work / "oracle.prototxt"
    proto.write_text(net_text)
    net = caffe_net(caffe, proto, state)
    by_name = {layer["name"]: layer for layer in layers}
    filled = []
    # Every layer with blobs, in net order (net.params keeps one layer per name).
    for name, layer in zip(net._layer_names, net.layers, strict=True):
        blobs = layer.blobs
        if not len(blobs):
            continue
        shapes = [tuple(b.data.shape) for b in blobs]
        fill = params.get(name, default_params)
        arrays = fill(rng, by_name[name], shapes)
        if [a.shape for a in arrays] != shapes:
            raise AssertionError(f"{name}: made {[a.shape for a in arrays]}, Caffe wants {shapes}")
        for blob, array in zip(blobs, arrays, strict=True):
            blob.data[...] = array
        filled.append((name, blobs))
    # What Caffe holds once every layer is set (a shared blob: the last values set; a repeated name:
    # the last layer's, as a weights file read into a dict gives it).
    values: dict[str, Arrays] = {
        name: [np.array(b.data, dtype=np.float32, copy=True) for b in blobs] for name, blobs in filled
    }
    model = work / model_name
    net.save(str(model))
    return proto, model, values


def forward_runs(
    caffe,
    proto: Path,
    model: Path,
    case_inputs: list[str],
    shapes_per_run: list[dict[str, Shape]],
    tops: list[str],
    make_input,
    rng: np.random.Generator,
    keep: Callable[[str], bool] = lambda blob: True,
    backward: bool = False,
    loss_tops: frozenset[str] = frozenset(),
    seed_outputs: bool = True,
    input_grads: bool = True,
    state: dict[str, Any] | None = None,
    seeded: frozenset[str] | None = None,
) -> tuple[dict[str, np.ndarray], list[dict]]:
    """Load the saved files afresh in Caffe and run every input shape; inputs and kept tops by run
    (and with ``backward``, the seeded top diffs and the diffs Caffe's backward pass gives: inputs'
    ``grad:<blob>``, parameters' ``param_grad:<layer>/<blob index>``); ``seeded`` names the tops
    whose diffs are seeded, where not all of them."""
    net = caffe_net(caffe, proto, state, weights=model)
    arrays: dict[str, np.ndarray] = {}
    run_info = []
    for index, shapes in enumerate(shapes_per_run):
        prefix = f"run{index}/"
        for blob in case_inputs:
            value = make_input(rng, blob, shapes[blob], index)
            net.blobs[blob].reshape(*shapes[blob])
            net.blobs[blob].data[...] = value
            arrays[f"{prefix}input:{blob}"] = value
        net.forward()
        outputs = {}
        for blob in tops:
            if blob in case_inputs or not keep(blob):
                continue
            value = np.array(net.blobs[blob].data, dtype=np.float32, copy=True)
            arrays[f"{prefix}output:{blob}"] = value
            outputs[blob] = list(value.shape)
        info = {"prefix": prefix, "inputs": {b: list(shapes[b]) for b in case_inputs}, "outputs": outputs}
        if backward:
            for layer in net.layers:  # Net::Backward accumulates into the parameter diffs
                for blob in layer.blobs:
                    blob.diff[...] = 0
            for blob in outputs:
                if blob not in loss_tops and seed_outputs and (seeded is None or blob in seeded):
                    # (a loss top's diff is its loss weight)
                    diff = normal(rng, 1.0, tuple(net.blobs[blob].diff.shape))
                    net.blobs[blob].diff[...] = diff
                    arrays[f"{prefix}top_diff:{blob}"] = diff
            net.backward()
            for blob in case_inputs if input_grads else ():
                arrays[f"{prefix}grad:{blob}"] = np.array(net.blobs[blob].diff, dtype=np.float32, copy=True)
            for name, layer in zip(net._layer_names, net.layers, strict=True):
                for j, blob in enumerate(layer.blobs):  # a repeated name: its first layer's
                    value = np.array(blob.diff, dtype=np.float32, copy=True)
                    arrays.setdefault(f"{prefix}param_grad:{name}/{j}", value)
            info["backward"] = True
        run_info.append(info)
    return arrays, run_info


def same_stored_shape(read: tuple[int, ...], caffe: tuple[int, ...]) -> bool:
    """Shapes agree, allowing for Caffe's 0-axis blobs.

    Caffe writes a 0-axis blob (a scalar Scale, num_axes 0) with no ``shape`` and no legacy dims, and
    reads such a blob back as shape (); ``converters.read_weights`` reports it as (1,).
    """
    return read == caffe or (caffe == () and read == (1,))


def check_weights_file(path: Path, expected: dict[str, Arrays]) -> None:
    """``converters.read_weights`` must give back exactly the values Caffe was given."""
    read = read_weights(path)
    # Caffe's HDF5 groups do not track creation order: HDF5 lists them by name, not in net order.
    in_order = path.suffix != ".h5"
    if (list(read) if in_order else sorted(read)) != (list(expected) if in_order else sorted(expected)):
        raise AssertionError(f"{path.name}: layers {list(read)} != {list(expected)}")
    for name, arrays in expected.items():
        got = read[name]
        if len(got) != len(arrays):
            raise AssertionError(f"{path.name}: {name} has {len(got)} blobs, expected {len(arrays)}")
        for i, (a, b) in enumerate(zip(got, arrays, strict=True)):
            if not same_stored_shape(a.shape, b.shape) or not np.array_equal(a.reshape(b.shape), b):
                raise AssertionError(f"{path.name}: {name} blob {i}: {a.shape} vs {b.shape} or values differ")


def replace_dir(staging: Path, target: Path) -> None:
    """Swap a fully written staging folder into place (world-readable, like a checkout)."""
    staging.chmod(0o755)
    for path in staging.iterdir():
        path.chmod(0o644)
    if target.exists():
        old = target.with_name(f".{target.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        target.rename(old)
        staging.rename(target)
        shutil.rmtree(old)
    else:
        staging.rename(target)


def make_case(caffe, case: Case, out_dir: Path) -> dict:
    seed = seed_of(case.name)
    rng = np.random.default_rng(seed)
    net = net_message(case.name, dict(case.runs[0]), case.layers)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{case.name}.", dir=out_dir.parent))
    try:
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            text = oracle_text(net)
            for ours, theirs in case.oracle_types.items():
                text = text.replace(f'type: "{ours}"', f'type: "{theirs}"')
            for old, new in case.oracle_edits:
                text = text.replace(old, new)
            if case.backward and case.input_grads:  # inputs' diffs too (Input layers need none otherwise)
                text = "force_backward: true\n" + text
            proto, model, values = fill_and_save(
                caffe, text, case.layers, rng, case.params, work, "weights.caffemodel"
            )
            tops = declared_tops(case.layers)
            read = {b for layer in case.layers for b in layer.get("bottom", []) if b not in layer["top"]}
            if case.net_outputs_only:
                tops = [t for t in tops if t not in read]
            loss_tops = frozenset(
                t for layer in case.layers
                if layer["type"].endswith("Loss") or layer.get("loss_weight") for t in layer["top"]
            )  # fmt: skip
            arrays, run_info = forward_runs(
                caffe, proto, model, case.inputs, case.runs, tops, case.make_input, rng,
                backward=case.backward, loss_tops=loss_tops, input_grads=case.input_grads,
                seed_outputs=case.seed_outputs,
            )  # fmt: skip
            shutil.copyfile(model, staging / "weights.caffemodel")
        write_prototxt(net, staging / "net.prototxt")
        write_npz(staging / "io.npz", arrays)
        layer_types = sorted({layer["type"] for layer in case.layers})
        info = {
            "case": case.name,
            "description": case.description,
            "layer_types": layer_types,
            "inputs": case.inputs,
            "outputs": [t for t in tops if t not in case.inputs],
            "params": {name: [list(a.shape) for a in arrays_] for name, arrays_ in values.items()},
            "runs": run_info,
            "notes": case.notes,
            "seed": seed,
            "oracle": case.oracle,
        }
        if case.load_options:
            info["load_options"] = case.load_options
        if case.stateful:
            info["stateful"] = True
        write_json(staging / "case.json", info)
        # Read back with our own readers.
        if read_prototxt(staging / "net.prototxt") != net:
            raise AssertionError(f"{case.name}: net.prototxt does not read back as written")
        check_weights_file(staging / "weights.caffemodel", values)
        replace_dir(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return info


# --------------------------------------------------------------------------------------------------
# The tiny FCN


TINY_FCN_CLASSES = 3
TINY_FCN_RUNS: list[dict[str, Shape]] = [{"data": (1, 3, 37, 41)}, {"data": (2, 3, 1, 1)}]
TINY_FCN_KEPT = ("score", "score_fr")


def tiny_fcn_layers() -> list[dict]:
    """A two-pool FCN: conv pad 100, ceil max pools, an fc6-like 3x3 unpadded conv, 1x1 scores,
    2x upsampling (random weights), a cropped pool1 skip fused by Eltwise SUM, 2x upsampling back,
    and a crop to ``data``.

    Coordinate maps to ``data`` (x_data = a * x + b): pool1 2x-98.5; fc/score_fr 4x-93.5;
    upscore2 2x-96.5 so score_pool1 is cropped by 1; upscore x-98 so the final crop offset is 98.
    """
    return [
        L("conv1", "Convolution", "data", **conv(4, kernel_size=3, pad=100)),
        L("relu1", "ReLU", "conv1", "conv1"),
        L("pool1", "Pooling", "conv1", **pool("MAX", kernel_size=2, stride=2)),
        L("conv2", "Convolution", "pool1", **conv(8, kernel_size=3, pad=1)),
        L("relu2", "ReLU", "conv2", "conv2"),
        L("pool2", "Pooling", "conv2", **pool("MAX", kernel_size=2, stride=2)),
        L("fc", "Convolution", "pool2", **conv(8, kernel_size=3)),
        L("relu_fc", "ReLU", "fc", "fc"),
        L("score_fr", "Convolution", "fc", **conv(TINY_FCN_CLASSES, kernel_size=1)),
        L(
            "upscore2",
            "Deconvolution",
            "score_fr",
            **conv(TINY_FCN_CLASSES, kernel_size=4, stride=2, bias_term=False),
        ),
        L("score_pool1", "Convolution", "pool1", **conv(TINY_FCN_CLASSES, kernel_size=1)),
        L("score_pool1c", "Crop", ["score_pool1", "upscore2"], crop_param={"axis": 2, "offset": 1}),
        L("fuse_pool1", "Eltwise", ["upscore2", "score_pool1c"], eltwise_param={"operation": "SUM"}),
        L(
            "upscore",
            "Deconvolution",
            "fuse_pool1",
            **conv(TINY_FCN_CLASSES, kernel_size=4, stride=2, group=TINY_FCN_CLASSES, bias_term=False),
        ),
        L("score", "Crop", ["upscore", "data"], crop_param={"axis": 2, "offset": 98}),
    ]


def make_tiny_fcn(caffe, out_dir: Path) -> dict:
    layers = tiny_fcn_layers()
    net = net_message("tiny_fcn", dict(TINY_FCN_RUNS[0]), layers)
    seed = seed_of("tiny_fcn")
    rng = np.random.default_rng(seed)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".tiny_fcn.", dir=out_dir.parent))
    try:
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            proto, model, values = fill_and_save(
                caffe, oracle_text(net), layers, rng, {}, work, "tiny_fcn.caffemodel"
            )
            saved = caffe.Net(str(proto), caffe.TEST, weights=str(model))
            saved.save_hdf5(str(work / "tiny_fcn.caffemodel.h5"))
            arrays, run_info = forward_runs(
                caffe,
                proto,
                model,
                ["data"],
                TINY_FCN_RUNS,
                declared_tops(layers),
                normal_input,
                rng,
                keep=lambda blob: blob in TINY_FCN_KEPT,
            )
            # The HDF5 weights must make Caffe compute the same outputs.
            h5_net = caffe.Net(str(proto), caffe.TEST)
            h5_net.copy_from(str(work / "tiny_fcn.caffemodel.h5"))
            for index, shapes in enumerate(TINY_FCN_RUNS):
                h5_net.blobs["data"].reshape(*shapes["data"])
                h5_net.blobs["data"].data[...] = arrays[f"run{index}/input:data"]
                h5_net.forward()
                if not np.array_equal(h5_net.blobs["score"].data, arrays[f"run{index}/output:score"]):
                    raise AssertionError("Caffe's outputs differ between the .caffemodel and the .h5 weights")
            shutil.copyfile(model, staging / "tiny_fcn.caffemodel")
            shutil.copyfile(work / "tiny_fcn.caffemodel.h5", staging / "tiny_fcn.caffemodel.h5")
        write_prototxt(net, staging / "deploy.prototxt")
        write_npz(staging / "io.npz", arrays)
        info = {
            "case": "tiny_fcn",
            "description": "a tiny two-pool FCN (conv pad 100, ceil max pools, random 2x deconvolutions, "
            "pool1 skip cropped by 1 and fused by Eltwise SUM, final crop offset 98 to data)",
            "layer_types": sorted({layer["type"] for layer in layers}),
            "inputs": ["data"],
            "outputs": list(TINY_FCN_KEPT),
            "params": {name: [list(a.shape) for a in arrays_] for name, arrays_ in values.items()},
            "runs": run_info,
            "notes": [
                "io.npz keeps only the net output 'score' and the coarse scores 'score_fr'",
                "tiny_fcn.caffemodel.h5 was written by Caffe (Net::ToHDF5); Caffe gives identical "
                "outputs from it",
                "relu1, relu2 and relu_fc run in place",
            ],
            "seed": seed,
            "oracle": ORACLE,
        }
        write_json(staging / "case.json", info)
        if read_prototxt(staging / "deploy.prototxt") != net:
            raise AssertionError("tiny_fcn: deploy.prototxt does not read back as written")
        check_weights_file(staging / "tiny_fcn.caffemodel", values)
        check_weights_file(staging / "tiny_fcn.caffemodel.h5", values)
        replace_dir(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return info


# --------------------------------------------------------------------------------------------------
# Refusal probes: what real Caffe does with nets a user may get wrong (tools/README.md records it)


def _probe_net(shapes: dict[str, Shape], *layers: str) -> str:
    """An Input-layer prototxt (one top per entry of ``shapes``) followed by ``layers``."""
    tops = "".join(f' top: "{b}"' for b in shapes)
    dims = "".join(" shape {" + "".join(f" dim: {d}" for d in s) + " }" for s in shapes.values())
    return (
        f'layer {{ name: "input" type: "Input"{tops} input_param {{{dims} }} }}\n' + "\n".join(layers) + "\n"
    )


def _layer(name: str, kind: str, bottoms: str, tops: str, extra: str = "") -> str:
    """One layer in text form; ``bottoms`` and ``tops`` are space-separated blob names."""
    blobs = "".join(f' bottom: "{b}"' for b in bottoms.split()) + "".join(
        f' top: "{t}"' for t in tops.split()
    )
    return f'layer {{ name: "{name}" type: "{kind}"{blobs} {extra} }}'


IMG = {"data": (1, 3, 8, 8)}
TWO = {"a": (1, 3, 4, 4), "b": (1, 3, 4, 4)}
CONV = "convolution_param { num_output: 4 kernel_size: 3 %s }"
PROBES: dict[str, str] = {
    "conv_group_0": _probe_net(IMG, _layer("c", "Convolution", "data", "c", CONV % "group: 0")),
    "log_base_1": _probe_net(IMG, _layer("l", "Log", "data", "l", "log_param { base: 1 }")),
    "log_base_0": _probe_net(IMG, _layer("l", "Log", "data", "l", "log_param { base: 0 }")),
    "exp_base_neg2": _probe_net(IMG, _layer("e", "Exp", "data", "e", "exp_param { base: -2 }")),
    "conv_no_bottom": _probe_net(IMG, _layer("c", "Convolution", "", "c", CONV % "")),
    "relu_two_tops": _probe_net(IMG, _layer("r", "ReLU", "data", "r r2")),
    "eltwise_one_bottom": _probe_net(IMG, _layer("e", "Eltwise", "data", "e")),
    "ip_no_top": _probe_net(
        IMG, _layer("ip", "InnerProduct", "data", "", "inner_product_param { num_output: 2 }")
    ),
    "slice_one_top": _probe_net(IMG, _layer("s", "Slice", "data", "s")),
    "input_negative_dim": _probe_net({"data": (1, -3, 8, 8)}, _layer("r", "ReLU", "data", "r")),
    "input_zero_dim_conv": _probe_net(
        {"data": (1, 3, 0, 8)}, _layer("c", "Convolution", "data", "c", CONV % "")
    ),
    "input_zero_batch_conv": _probe_net(
        {"data": (0, 3, 8, 8)}, _layer("c", "Convolution", "data", "c", CONV % "")
    ),
    "input_zero_batch_relu": _probe_net({"data": (0, 3, 8, 8)}, _layer("r", "ReLU", "data", "r")),
    "conv_huge_kernel": _probe_net(
        IMG,
        _layer(
            "c", "Convolution", "data", "c", "convolution_param { num_output: 4 kernel_size: 2147483647 }"
        ),
    ),
    "conv_huge_stride": _probe_net(IMG, _layer("c", "Convolution", "data", "c", CONV % "stride: 2147483647")),
    # kernel 3 over a 2-pixel input: C++'s division truncates (2 - 3) / 2 to 0, so stride 2 gives
    # one output (over a zero past the input's end) and stride 1 gives none
    "conv_kernel_over_input_s2": _probe_net(
        {"data": (1, 3, 2, 2)}, _layer("c", "Convolution", "data", "c", CONV % "stride: 2")
    ),
    "conv_kernel_over_input_s1": _probe_net(
        {"data": (1, 3, 2, 2)}, _layer("c", "Convolution", "data", "c", CONV % "")
    ),
    "conv_huge_pad": _probe_net(IMG, _layer("c", "Convolution", "data", "c", CONV % "pad: 1000000")),
    "input_with_bottom": _probe_net(
        IMG, _layer("in2", "Input", "data", "x", "input_param { shape { dim: 1 } }")
    ),
    "ip_over_int_max": _probe_net(
        {"data": (1, 16)},
        _layer("ip", "InnerProduct", "data", "ip", "inner_product_param { num_output: 1073741824 }"),
    ),
    "eltwise_shapes_differ": _probe_net(
        {"a": (1, 3, 4, 4), "b": (1, 3, 5, 5)}, _layer("e", "Eltwise", "a b", "e")
    ),
    "scale_two_bottoms_differ": _probe_net({"x": (1, 3, 4, 5), "s": (4,)}, _layer("s", "Scale", "x s", "y")),
    "bias_two_bottoms_differ": _probe_net({"x": (1, 3, 4, 5), "b": (4,)}, _layer("b", "Bias", "x b", "y")),
    "lrn_two_bottoms": _probe_net(TWO, _layer("n", "LRN", "a b", "n")),
    "mvn_two_bottoms": _probe_net(TWO, _layer("n", "MVN", "a b", "n")),
    "power_two_bottoms": _probe_net(TWO, _layer("p", "Power", "a b", "p")),
    "softmax_axis_4": _probe_net(IMG, _layer("s", "Softmax", "data", "s", "softmax_param { axis: 4 }")),
    "conv_stride_w_only": _probe_net(IMG, _layer("c", "Convolution", "data", "c", CONV % "stride_w: 2")),
    "pool_stride_w_only": _probe_net(
        IMG, _layer("p", "Pooling", "data", "p", "pooling_param { pool: MAX kernel_size: 3 stride_w: 2 }")
    ),
    "pool_huge_pad": _probe_net(
        IMG, _layer("p", "Pooling", "data", "p", "pooling_param { kernel_size: 3 pad: 5 }")
    ),
    "pool_3d_input": _probe_net(
        {"data": (1, 3, 8)}, _layer("p", "Pooling", "data", "p", "pooling_param { kernel_size: 2 }")
    ),
    "pool_ave_two_tops": _probe_net(
        IMG, _layer("p", "Pooling", "data", "p m", "pooling_param { pool: AVE kernel_size: 2 stride: 2 }")
    ),
    "reduction_axis_4": _probe_net(IMG, _layer("r", "Reduction", "data", "r", "reduction_param { axis: 4 }")),
    "reduction_empty_axis": _probe_net(
        {"data": (2, 0, 3)},
        _layer("r", "Reduction", "data", "r", "reduction_param { operation: MEAN axis: 1 }"),
    ),
    "scale_axis_int_max": _probe_net(
        IMG, _layer("s", "Scale", "data", "s", "scale_param { axis: 2147483647 }")
    ),
    "conv_two_bottoms_one_top": _probe_net(TWO, _layer("c", "Convolution", "a b", "c", CONV % "")),
    "conv_two_bottoms_differ": _probe_net(
        {"a": (1, 3, 4, 4), "b": (1, 3, 5, 4)}, _layer("c", "Convolution", "a b", "ca cb", CONV % "")
    ),
    "top_from_two_layers": _probe_net(
        IMG, _layer("r1", "ReLU", "data", "x"), _layer("r2", "Sigmoid", "data", "x")
    ),
    # in place on a blob another layer already read: the split Caffe inserts renames the bottom,
    # not the top, so the top has two producers; the in-place layer as the only reader is fine
    "in_place_after_reader": _probe_net(
        IMG, _layer("c", "Convolution", "data", "c", CONV % ""), _layer("p", "Pooling", "c", "p",
        "pooling_param { pool: MAX kernel_size: 2 }"), _layer("r", "ReLU", "c", "c"),
    ),
    "in_place_on_input_after_reader": _probe_net(
        IMG, _layer("c", "Convolution", "data", "c", CONV % ""), _layer("r", "ReLU", "data", "data"),
    ),
    "in_place_twice_same_version": _probe_net(
        IMG, _layer("e", "Eltwise", "data data", "data"),
    ),
    "in_place_then_reader": _probe_net(
        IMG, _layer("c", "Convolution", "data", "c", CONV % ""), _layer("r", "ReLU", "c", "c"),
        _layer("p", "Pooling", "c", "p", "pooling_param { pool: MAX kernel_size: 2 }"),
        _layer("s", "Sigmoid", "c", "s"),
    ),
    "shared_param_shape_differs": _probe_net(
        IMG,
        _layer("c1", "Convolution", "data", "c1", 'param { name: "w" } ' + CONV % ""),
        _layer(
            "c2",
            "Convolution",
            "data",
            "c2",
            'param { name: "w" } convolution_param { num_output: 4 kernel_size: 1 }',
        ),
    ),
    "shared_param_lr_differs": _probe_net(
        IMG,
        _layer("c1", "Convolution", "data", "c1", 'param { name: "w" lr_mult: 1 } ' + CONV % ""),
        _layer("c2", "Convolution", "data", "c2", 'param { name: "w" lr_mult: 2 } ' + CONV % ""),
    ),
    "too_many_params": _probe_net(IMG, _layer("r", "ReLU", "data", "r", "param { lr_mult: 0 }")),
    "flatten_in_place": _probe_net(IMG, _layer("f", "Flatten", "data", "data")),
    "crop_one_bottom": _probe_net(IMG, _layer("c", "Crop", "data", "c")),
    "tile_zero": _probe_net(IMG, _layer("t", "Tile", "data", "t", "tile_param { tiles: 0 }")),
    "argmax_top_k_too_big": _probe_net(
        IMG, _layer("a", "ArgMax", "data", "a", "argmax_param { axis: 1 top_k: 4 }")
    ),
    "pool_global_with_stride": _probe_net(
        IMG, _layer("p", "Pooling", "data", "p", "pooling_param { pool: MAX global_pooling: true stride: 2 }")
    ),
    "conv_kernel_size_and_kernel_h": _probe_net(
        IMG,
        _layer(
            "c",
            "Convolution",
            "data",
            "c",
            "convolution_param { num_output: 4 kernel_size: 3 kernel_h: 3 kernel_w: 1 }",
        ),
    ),
    "softmax_loss_label_count": _probe_net(
        {"score": (2, 4, 3, 3), "label": (2, 1, 3, 2)}, _layer("l", "SoftmaxWithLoss", "score label", "l")
    ),
    "accuracy_top_k_too_big": _probe_net(
        {"score": (2, 4, 3, 3), "label": (2, 1, 3, 3)},
        _layer("a", "Accuracy", "score label", "a", "accuracy_param { top_k: 5 }"),
    ),
    "crop_axis_9": _probe_net(
        {"a": (1, 3, 8, 8), "b": (1, 3, 4, 4)}, _layer("c", "Crop", "a b", "c", "crop_param { axis: 9 }")
    ),
    "reshape_two_inferred": _probe_net(
        IMG, _layer("r", "Reshape", "data", "r", "reshape_param { shape { dim: -1 dim: -1 } }")
    ),
    "slice_point_beyond": _probe_net(
        IMG, _layer("s", "Slice", "data", "a b", "slice_param { slice_point: 9 }")
    ),
    "lrn_within_even_size": _probe_net(
        IMG, _layer("n", "LRN", "data", "n", "lrn_param { local_size: 4 norm_region: WITHIN_CHANNEL }")
    ),
    "duplicate_layer_names": _probe_net(
        IMG, _layer("r", "ReLU", "data", "x"), _layer("r", "Sigmoid", "x", "y")
    ),
    "concat_axis_and_concat_dim": _probe_net(
        TWO, _layer("c", "Concat", "a b", "c", "concat_param { axis: 1 concat_dim: 1 }")
    ),
    "slice_axis_and_slice_dim": _probe_net(
        IMG, _layer("s", "Slice", "data", "s1 s2", "slice_param { axis: 2 slice_dim: 2 }")
    ),
    "slice_one_top_axis_out_of_range": _probe_net({"data": (2,)}, _layer("s", "Slice", "data", "s")),
    "pool_kernel_size_and_lone_kernel_w": _probe_net(
        IMG, _layer("p", "Pooling", "data", "p", "pooling_param { pool: MAX kernel_size: 2 kernel_w: 3 }")
    ),
    "pool_kernel_size_and_kernel_h_w": _probe_net(
        IMG,
        _layer("p", "Pooling", "data", "p", "pooling_param { pool: MAX kernel_size: 2 kernel_h: 3 "
               "kernel_w: 3 }"),
    ),
    # the file's own state: Caffe's Net(file, phase, level, stages) keeps its stages, replaces its level
    "net_state_stage_in_file": 'state { stage: "deploy" level: 3 }\n' + _probe_net(
        IMG, _layer("a", "ReLU", "data", "a", 'include { stage: "deploy" }'),
        _layer("b", "Sigmoid", "data", "b", "include { min_level: 1 }"), _layer("c", "TanH", "data", "c"),
    ),
    "tile_axis_out_of_range": _probe_net(
        {"data": (3,)}, _layer("t", "Tile", "data", "t", "tile_param { axis: -2 tiles: 4 }")
    ),
    "priorbox_lone_img_w": _probe_net(
        {"data": (1, 2, 3, 3), "image": (1, 3, 30, 30)},
        _layer("p", "PriorBox", "data image", "p", "prior_box_param { min_size: 4 clip: false img_w: 3 }"),
    ),
    "priorbox_step_and_step_h": _probe_net(
        {"data": (1, 2, 3, 3), "image": (1, 3, 30, 30)},
        _layer("p", "PriorBox", "data image", "p",
               "prior_box_param { min_size: 4 clip: false step: 8 step_h: 8 step_w: 8 }"),
    ),
    "prelu_one_axis": _probe_net({"data": (3,)}, _layer("p", "PReLU", "data", "p")),
    "dummy_data_shape_and_num": _probe_net(
        IMG, _layer("d", "DummyData", "", "d", "dummy_data_param { shape { dim: 1 } num: 1 }")
    ),
    "dummy_data_two_fillers_three_tops": _probe_net(
        IMG, _layer("d", "DummyData", "", "d1 d2 d3", "dummy_data_param { shape { dim: 1 dim: 2 } "
                    'data_filler { value: 1 } data_filler { value: 2 } }'),
    ),
    "dummy_data_two_shapes_three_tops": _probe_net(
        IMG,
        _layer("d", "DummyData", "", "d1 d2 d3", "dummy_data_param { shape { dim: 1 } shape { dim: 2 } }"),
    ),
    "dummy_data_legacy_without_width": _probe_net(
        IMG, _layer("d", "DummyData", "", "d", "dummy_data_param { num: 1 channels: 2 height: 3 }"),
    ),
    "dummy_data_gaussian": _probe_net(
        IMG, _layer("d", "DummyData", "", "d", 'dummy_data_param { shape { dim: 2 dim: 3 } '
                    'data_filler { type: "gaussian" } }'),
        _layer("s", "Sigmoid", "d", "s"),
    ),
    "conv_pad_w_only": _probe_net(IMG, _layer("c", "Convolution", "data", "c", CONV % "pad_w: 1")),
    "deconv_pad_h_only": _probe_net(
        IMG, _layer("d", "Deconvolution", "data", "d", CONV % "stride: 2 pad_h: 1")
    ),
}


def probe_refusals(names: list[str]) -> int:
    """Build each probe net in real Caffe (a subprocess each: Caffe aborts on a failed CHECK) and
    print what it did: its tops' shapes after a forward pass, or the check that failed."""
    import subprocess

    script = (
        "import sys, caffe; caffe.set_mode_cpu(); net = caffe.Net(sys.argv[1], caffe.TEST); net.forward(); "
        "print('runs: ' + ', '.join(f'{k} {list(v.data.shape)}' for k, v in net.blobs.items()))"
    )
    for name in names or list(PROBES):
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "net.prototxt"
            path.write_text(PROBES[name])
            done = subprocess.run(
                [sys.executable, "-c", script, str(path)], capture_output=True, text=True, timeout=120
            )
        lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
        fatal = [line for line in lines if line.startswith(("F", "runs:", "Traceback"))] or lines[-1:]
        verdict = fatal[0] if fatal else f"exit {done.returncode}"
        print(f"{name}: rc={done.returncode} {verdict}")
    return 0


# --------------------------------------------------------------------------------------------------
# Checking committed fixtures without Caffe


def check_fixture_dir(directory: Path, prototxt: str, weights: list[str]) -> list[str]:
    """Problems found in one fixture folder: its files read with ``converters`` and agree with case.json."""
    problems: list[str] = []
    try:
        info = json.loads((directory / "case.json").read_text())
        net = read_prototxt(directory / prototxt)
        stored = [read_weights(directory / name) for name in weights]
        with np.load(directory / "io.npz", allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except (OSError, ValueError, CaffeFormatError) as exc:
        return [f"{directory.name}: {exc}"]
    named = {layer.get("name") for layer in net.getall("layer")}
    for weights_read in stored:
        read_shapes = {k: [tuple(a.shape) for a in v] for k, v in weights_read.items()}
        want_shapes = {k: [tuple(s) for s in v] for k, v in info["params"].items()}
        if read_shapes.keys() != want_shapes.keys() or not all(
            len(read_shapes[k]) == len(want_shapes[k])
            and all(same_stored_shape(a, b) for a, b in zip(read_shapes[k], want_shapes[k], strict=True))
            for k in want_shapes
        ):
            problems.append(f"{directory.name}: weights shapes differ from case.json")
        if not set(weights_read) <= named:
            problems.append(f"{directory.name}: weights name layers the prototxt lacks")
    for other in stored[1:]:
        for name, blobs in other.items():
            if not all(np.array_equal(a, b) for a, b in zip(blobs, stored[0][name], strict=True)):
                problems.append(f"{directory.name}: weights files disagree on {name}")
    expected_keys = set()
    for run in info["runs"]:
        for kind in ("inputs", "outputs"):
            for blob, shape in run[kind].items():
                key = f"{run['prefix']}{kind[:-1]}:{blob}"
                expected_keys.add(key)
                if key not in arrays or list(arrays[key].shape) != shape:
                    problems.append(f"{directory.name}: {key} missing or not shaped {shape}")
    for run in info["runs"]:  # a backward run's diffs: seeded tops, inputs, parameters
        if not run.get("backward"):
            continue
        prefix = run["prefix"]
        for key in arrays:
            kind, _, blob = key[len(prefix) :].partition(":") if key.startswith(prefix) else ("", "", "")
            shape = {"top_diff": run["outputs"], "grad": run["inputs"]}.get(kind, {}).get(blob)
            if kind == "param_grad" or (shape is not None and list(arrays[key].shape) == shape):
                expected_keys.add(key)
    if set(arrays) != expected_keys:
        problems.append(
            f"{directory.name}: io.npz keys {sorted(set(arrays) ^ expected_keys)} not in case.json"
        )
    return problems


def check_all() -> int:
    problems: list[str] = []
    count = 0
    for directory in sorted(p for p in LAYERS_DIR.iterdir() if p.is_dir() and not p.name.startswith(".")):
        problems += check_fixture_dir(directory, "net.prototxt", ["weights.caffemodel"])
        count += 1
    problems += check_fixture_dir(
        TINY_FCN_DIR, "deploy.prototxt", ["tiny_fcn.caffemodel", "tiny_fcn.caffemodel.h5"]
    )
    for line in problems:
        print(line, file=sys.stderr)
    size = sum(p.stat().st_size for p in LAYERS_DIR.rglob("*") if p.is_file())
    tiny = sum(p.stat().st_size for p in TINY_FCN_DIR.rglob("*") if p.is_file())
    print(
        f"checked {count} layer cases ({size / 1e6:.2f} MB) and tiny_fcn ({tiny / 1e3:.0f} KB): "
        f"{len(problems)} problem(s)"
    )
    return 1 if problems else 0


# --------------------------------------------------------------------------------------------------
# HDF5Output: the file Caffe writes


def make_hdf5_output(caffe, out_dir: Path) -> None:
    """A net whose HDF5Output takes a 4-D blob (through a ReLU) and a 2-D label: Caffe's file
    (``caffe_output.h5``), the inputs that made it (``inputs.npz``) and the net (``net.prototxt``,
    its ``file_name`` relative: Caffe ran in a scratch folder)."""
    inputs = {"data": (2, 3, 2, 3), "label": (2, 5)}
    layers = [
        L("relu", "ReLU", "data", "r"),
        L("out", "HDF5Output", ["r", "label"], [], hdf5_output_param={"file_name": "output.h5"}),
    ]
    net = net_message("hdf5_output", inputs, layers)
    rng = np.random.default_rng(seed_of("hdf5_output"))
    values = {blob: normal(rng, 1.0, shape) for blob, shape in inputs.items()}
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "net.prototxt").write_text(oracle_text(net))
        here = os.getcwd()
        os.chdir(work)  # Caffe opens file_name from its working folder
        try:
            oracle = caffe.Net("net.prototxt", caffe.TEST)
            for blob, value in values.items():
                oracle.blobs[blob].data[...] = value
            oracle.forward()
            del oracle  # closes the file
        finally:
            os.chdir(here)
        shutil.copyfile(work / "output.h5", out_dir / "caffe_output.h5")
    write_prototxt(net, out_dir / "net.prototxt")
    write_npz(out_dir / "inputs.npz", values)
    print(f"hdf5_output: {', '.join(f'{b}{s}' for b, s in inputs.items())}")


#: Layers Caffe computes in place on memory it overwrites as it reads it (``converters`` refuses
#: them): one net each, a copy of its bottom computed in place, ``(layers, input shapes)``.
IN_PLACE_REFUSED: dict[str, tuple[list[dict], Shape]] = {
    "pool_ave": ([L("pool", "Pooling", "x", "x", **pool("AVE", kernel_size=3, pad=1))], (1, 2, 4, 5)),
    "pool_max": ([L("pool", "Pooling", "x", "x", **pool("MAX", kernel_size=3, pad=1))], (1, 2, 4, 5)),
    "pool_max_s2": ([L("pool", "Pooling", "x", "x", **pool("MAX", kernel_size=2, stride=2))], (1, 2, 4, 6)),
    "conv_1x1": ([L("conv", "Convolution", "x", "x", **conv(3, kernel_size=1))], (2, 3, 4, 5)),
    "conv_other_shape": ([L("conv", "Convolution", "x", "x", **conv(2, kernel_size=3, pad=1))], (2, 3, 4, 5)),
    "conv_3x3": ([L("conv", "Convolution", "x", "x", **conv(3, kernel_size=3, pad=1))], (2, 3, 4, 5)),
    "deconv_1x1": ([L("deconv", "Deconvolution", "x", "x", **conv(3, kernel_size=1))], (2, 3, 4, 5)),
    "inner_product": ([L("ip", "InnerProduct", "x", "x", inner_product_param={"num_output": 6})], (2, 6)),
    "concat": ([L("y", "Power", "data", "y"), L("concat", "Concat", ["x", "y"], "x")], (1, 2, 3, 4)),
}  # fmt: skip


def make_in_place_refused(caffe, out_dir: Path) -> None:
    """For each net of :data:`IN_PLACE_REFUSED` (``<name>.prototxt``, weights ``<name>.caffemodel``
    as Caffe saved them): Caffe's forward pass (``<name>/input:data``, ``<name>/output:x``) and
    its backward pass from a seeded diff (``<name>/top_diff:x``, ``<name>/grad:data``,
    ``<name>/param_grad:<layer>/<j>``), where Caffe's memory stays in bounds, in ``io.npz``."""
    arrays: dict[str, np.ndarray] = {}
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, (layers, shape) in IN_PLACE_REFUSED.items():
        rng = np.random.default_rng(seed_of(f"in_place_{name}"))
        layers = [L("copy", "Power", "data", "x"), *layers]
        net = net_message(name, {"data": shape}, layers)
        backward = not name.startswith("pool_max")  # (its mask stays -1: Caffe writes before the blob)
        text = ("force_backward: true\n" if backward else "") + oracle_text(net)
        with tempfile.TemporaryDirectory() as tmp:
            proto, model, _ = fill_and_save(caffe, text, layers, rng, {}, Path(tmp), "w.caffemodel")
            oracle = caffe.Net(str(proto), caffe.TEST, weights=str(model))
            value = normal(rng, 1.0, shape)
            oracle.blobs["data"].data[...] = value
            oracle.forward()
            arrays[f"{name}/input:data"] = value
            arrays[f"{name}/output:x"] = np.array(oracle.blobs["x"].data, dtype=np.float32, copy=True)
            if backward:
                diff = normal(rng, 1.0, oracle.blobs["x"].diff.shape)
                oracle.blobs["x"].diff[...] = diff
                oracle.backward()
                arrays[f"{name}/top_diff:x"] = diff
                arrays[f"{name}/grad:data"] = np.array(oracle.blobs["data"].diff, dtype=np.float32, copy=True)
                for layer_name, layer in zip(oracle._layer_names, oracle.layers, strict=True):
                    for j, blob in enumerate(layer.blobs):
                        grad = np.array(blob.diff, dtype=np.float32, copy=True)
                        arrays[f"{name}/param_grad:{layer_name}/{j}"] = grad
            shutil.copyfile(model, out_dir / f"{name}.caffemodel")
        write_prototxt(net, out_dir / f"{name}.prototxt")
        print(f"in_place_refused {name}: x {list(arrays[f'{name}/output:x'].shape)}")
    write_npz(out_dir / "io.npz", arrays)


EXTRA_FIXTURES = {
    "tiny_fcn": lambda caffe: make_tiny_fcn(caffe, TINY_FCN_DIR),
    "hdf5_output": lambda caffe: make_hdf5_output(caffe, HDF5_OUTPUT_DIR),
    "in_place_refused": lambda caffe: make_in_place_refused(caffe, IN_PLACE_REFUSED_DIR),
}


# --------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "cases", nargs="*", help="case names to regenerate (default: all, tiny_fcn and hdf5_output)"
    )
    parser.add_argument("--list", action="store_true", help="print the case names and exit")
    parser.add_argument(
        "--check",
        action="store_true",
        help="check the committed fixtures with converters (no Caffe needed) and exit",
    )
    parser.add_argument(
        "--probe",
        action="store_true",
        help="build the refusal probe nets (PROBES, or those named) in Caffe and print what it did",
    )
    args = parser.parse_args(argv)
    if args.probe:
        load_caffe()
        return probe_refusals(args.cases)
    cases = build_cases()
    known = {c.name: c for c in cases}
    if args.list:
        print("\n".join([*known, *EXTRA_FIXTURES]))
        return 0
    if args.check:
        return check_all()
    unknown = [name for name in args.cases if name not in known and name not in EXTRA_FIXTURES]
    if unknown:
        print(f"error: unknown case(s) {', '.join(unknown)}; see --list", file=sys.stderr)
        return 2
    caffe = load_caffe()
    selected = args.cases or [*known, *EXTRA_FIXTURES]
    for name in selected:
        if name in EXTRA_FIXTURES:
            EXTRA_FIXTURES[name](caffe)
            print(name)
            continue
        info = make_case(caffe, known[name], LAYERS_DIR / name)
        outs = ", ".join(f"{b}{tuple(s)}" for b, s in info["runs"][0]["outputs"].items())
        print(f"{name}: {len(info['runs'])} runs; run0 {outs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
