"""The public zoo (``../shared/caffe-zoo``): every net converts with the default ``load_caffe`` (no
option beyond its input sizes) and gives its reference's outputs (real Caffe, or OpenCV dnn where
no Caffe build runs it; ``tests/fixtures/zoo/<net>/case.json`` says which) on seeded weights and
inputs (``tests/zoo.py``): every output, and the blob before a final Softmax or Sigmoid, within
1e-4 of the largest value."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from converters import load_caffe
from tests import zoo
from tests.conftest import need_shared

NETS = sorted(p.name for p in zoo.FIXTURES.glob("*") if (p / "case.json").exists())
TOLERANCE = 1e-4  # x max|expected|


@pytest.mark.parametrize("name", NETS)
def test_the_zoo_net_gives_its_references_outputs(name: str) -> None:
    folder = need_shared("caffe-zoo", name)
    case = json.loads((zoo.FIXTURES / name / "case.json").read_text())
    net_def, shapes = zoo.load(folder)
    weights = zoo.draw_weights(net_def, shapes)
    inputs = {b: torch.from_numpy(v) for b, v in zoo.draw_inputs(shapes).items()}
    expected = np.load(zoo.FIXTURES / name / "io.npz")
    blobs = [key.split(":", 1)[1] for key in expected.files]
    net = load_caffe(net_def, weights, input_shapes=shapes, outputs=blobs)
    with torch.no_grad():
        got = net(**{b: v for b, v in inputs.items() if b in net.caffe.inputs})
    for blob in blobs:
        want = expected[f"output:{blob}"]
        value = zoo.subsample(got[blob].numpy(), case.get("subsample", {}).get(blob, 1))
        value = value.reshape(want.shape) if value.size == want.size else value
        assert value.shape == want.shape, f"{name} {blob}: {value.shape}, {case['reference']}: {want.shape}"
        scale = max(float(np.abs(want).max()), 1e-6)
        error = float(np.abs(value - want).max())
        where = f"{name} {blob}: max error {error:.3g} of {scale:.3g} ({case['reference']})"
        assert error <= TOLERANCE * scale, where
