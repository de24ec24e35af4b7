"""The public zoo of ``../shared/caffe-zoo``: each net's input sizes, its seeded random weights and
inputs, and the blobs compared with the reference. Shared by ``tools/make_zoo_fixtures.py`` (which
runs the reference: real Caffe, or OpenCV dnn where no Caffe build runs the net) and
``tests/test_zoo.py`` (which runs ours); only the reference's outputs are committed."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np

from converters import read_prototxt
from converters.caffe.message import Message
from converters.graph.builder import build_graph

FIXTURES = Path(__file__).parent / "fixtures" / "zoo"
SEED = 20261206

#: Types whose final output the comparison also reads before: a Softmax or Sigmoid at the end
#: flattens differences that the blob before it shows.
SQUASHING = ("Softmax", "Sigmoid")


def input_shapes(folder: Path) -> dict[str, tuple[int, ...]]:
    """The input sizes SOURCE.txt gives (``input: data=1x3x224x224``)."""
    text = (folder / "SOURCE.txt").read_text()
    return {
        m.group(1): tuple(int(v) for v in m.group(2).split("x"))
        for m in re.finditer(r"^input: (\w+)=([\dx]+)", text, re.M)
    }


def _fan_in(shape: tuple[int, ...]) -> int:
    return max(1, math.prod(shape[1:])) if len(shape) > 1 else 1


def draw_weights(
    net: Message, shapes: dict[str, tuple[int, ...]], seed: int = SEED
) -> dict[str, list[np.ndarray]]:
    """Seeded weights for every parameter blob, by layer type and blob index: fan-in scaled normal
    weights (half the variance of He's, so that deep plain nets stay finite), small biases,
    BatchNorm statistics with positive variances and a scale factor of 1, Scale values near 1."""
    meta = build_graph(net, input_shapes=shapes, device="meta")
    kinds = dict(meta.caffe.layers)
    rng = np.random.default_rng(seed)
    weights: dict[str, list[np.ndarray]] = {}
    for layer, blob_shapes in meta.caffe.parameter_shapes.items():
        kind = kinds[layer]
        blobs = []
        for i, shape in enumerate(blob_shapes):
            size = shape if shape else (1,)
            if kind == "BatchNorm":
                value = [rng.normal(0, 0.2, size), rng.uniform(0.5, 1.5, size), np.ones(size)][i]
            elif kind == "BN" and len(blob_shapes) == 4:  # slope, bias, mean, variance
                value = [rng.normal(1, 0.1, size), rng.normal(0, 0.1, size), rng.normal(0, 0.2, size),
                         rng.uniform(0.5, 1.5, size)][i]  # fmt: skip
            elif kind in ("Scale", "BN") and i == 0:
                value = rng.normal(1, 0.1, size)
            elif kind == "PReLU":
                value = rng.uniform(0.1, 0.4, size)
            elif kind == "Normalize":
                value = rng.uniform(5, 20, size)
            elif i == 0 and len(shape) > 1:
                value = rng.normal(0, math.sqrt(1.0 / _fan_in(shape)), size)
            else:
                value = rng.normal(0, 0.05, size)
            blobs.append(np.asarray(value, np.float32).reshape(shape))
        weights[layer] = blobs
    return weights


def draw_inputs(shapes: dict[str, tuple[int, ...]], seed: int = SEED) -> dict[str, np.ndarray]:
    """Seeded inputs: images in [-1, 1]; an ``im_info`` row (height, width, 1) for detection nets."""
    rng = np.random.default_rng(seed + 1)
    inputs = {}
    for blob, shape in shapes.items():
        if blob == "im_info":
            image = next(s for b, s in shapes.items() if len(s) == 4)
            inputs[blob] = np.array([[image[2], image[3], 1.0]], np.float32)
        else:
            inputs[blob] = rng.uniform(-1, 1, shape).astype(np.float32)
    return inputs


def compared_blobs(net: Message, shapes: dict[str, tuple[int, ...]]) -> list[str]:
    """The net's outputs, the bottom of each final Softmax or Sigmoid, and the bottoms of a final
    DetectionOutput (with random weights it may well detect nothing: its inputs still differ)."""
    meta = build_graph(net, input_shapes=shapes, device="meta")
    blobs = list(meta.caffe.outputs)
    for layer in meta.caffe.definition.getall("layer"):
        tops = list(layer.getall("top"))
        kind = str(layer.get("type"))
        if kind in (*SQUASHING, "DetectionOutput") and tops and tops[0] in meta.caffe.outputs:
            bottoms = layer.getall("bottom")[: None if kind == "DetectionOutput" else 1]
            blobs += [str(b) for b in bottoms if b != tops[0] and b not in blobs]
    return blobs


MAX_STORED = 1 << 19  # values of one stored blob; larger maps keep every k-th row and column


def subsample_step(shape: tuple[int, ...]) -> int:
    """The row and column step that keeps a stored blob under :data:`MAX_STORED` values (1: all)."""
    size = math.prod(shape)
    if size <= MAX_STORED or len(shape) < 3:
        return 1
    return math.ceil(math.sqrt(size / MAX_STORED))


def subsample(value: np.ndarray, step: int) -> np.ndarray:
    """Every ``step``-th row and column of the last two axes (the blob itself for step 1)."""
    return value if step == 1 else np.ascontiguousarray(value[..., ::step, ::step])


def load(folder: Path) -> tuple[Message, dict[str, tuple[int, ...]]]:
    return read_prototxt(folder / "deploy.prototxt"), input_shapes(folder)
