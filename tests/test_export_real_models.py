"""ONNX export of the real models written by Caffe in public projects (../shared/real-caffe-models):
the exported file, run by onnxruntime on the inputs Caffe was given, must give the outputs Caffe
computed (EXPECTED-forward.json / .npz), within the tolerance of the graph parity tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from converters import export_onnx, load_caffe
from tests.conftest import need_shared
from tests.test_graph_real_models import MODELS

onnxruntime = pytest.importorskip(
    "onnxruntime", reason="the export extra (onnx, onnxruntime) is not installed"
)

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("model", MODELS)
def test_a_real_caffe_model_exported_to_onnx_gives_caffes_outputs(model: str, tmp_path: Path) -> None:
    folder = need_shared("real-caffe-models", model)
    spec = json.loads((folder / "EXPECTED-forward.json").read_text())
    for index, run in enumerate(spec["runs"]):
        npz = np.load(folder / run.get("npz", "EXPECTED-forward.npz"))
        inputs = {i["name"]: npz[i["npz_key"]] for i in run["inputs"]}
        net = load_caffe(
            folder / run["prototxt"],
            folder / run["weights"],
            input_shapes={name: value.shape for name, value in inputs.items()},
        )
        path = tmp_path / f"{model}-{index}.onnx"
        export_onnx(net, path, dynamic=False)
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        names = [o["name"] for o in run["outputs"]]
        got = session.run(names, {name: value.astype(np.float32) for name, value in inputs.items()})
        for out, value in zip(run["outputs"], got, strict=True):
            want = npz[out["npz_key"]]
            assert value.shape == want.shape, (model, out["name"])
            scale = max(float(np.abs(want).max()), 1e-6)
            assert float(np.abs(value - want).max()) <= 1e-4 * scale, (model, out["name"])
