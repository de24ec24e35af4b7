"""caffe2torch -o net.onnx / net.pt2 (the deployment formats of the one format table) and
--plugin (a file whose register_layer calls run first)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from converters import load_caffe, registered_types, unregister_layer
from converters.caffe2torch import main
from tests.conftest import FIXTURES

BN = FIXTURES / "forks" / "segnet_bn"


def _error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    return err


def test_caffe2torch_writes_onnx_that_onnxruntime_runs_like_pytorch(tmp_path: Path) -> None:
    onnxruntime = pytest.importorskip("onnxruntime", reason="the export extra is not installed")
    out = tmp_path / "bn.onnx"
    assert main([str(BN / "net.prototxt"), str(BN / "weights.caffemodel"), "-o", str(out)]) == 0
    x = np.random.default_rng(0).normal(size=(2, 3, 5, 7)).astype(np.float32)
    (got,) = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(
        ["bn"], {"data": x}
    )
    with torch.no_grad():
        want = load_caffe(BN / "net.prototxt", BN / "weights.caffemodel")(data=torch.from_numpy(x))["bn"]
    assert np.abs(got - want.detach().numpy()).max() <= 1e-6 * float(want.abs().max())


def test_caffe2torch_writes_a_torch_export_program(tmp_path: Path) -> None:
    out = tmp_path / "bn.pt2"
    assert main([str(BN / "net.prototxt"), str(BN / "weights.caffemodel"), "-o", str(out)]) == 0
    program = torch.export.load(str(out))
    x = torch.randn(2, 3, 4, 9)  # the batch size is the one built (2); height and width are free
    want = load_caffe(BN / "net.prototxt", BN / "weights.caffemodel")(data=x)["bn"]
    with torch.no_grad():
        (got,) = program.module()(x)
    assert torch.equal(got, want)


def test_a_format_that_disagrees_with_the_suffix_is_an_error(tmp_path: Path, capsys) -> None:
    out = tmp_path / "bn.pt2"
    code = main(
        [str(BN / "net.prototxt"), str(BN / "weights.caffemodel"), "-o", str(out), "--format", "onnx"]
    )
    assert code == 2 and "--format is onnx" in _error(capsys) and not out.exists()


PLUGIN = """
import torch
from converters import Converted, register_layer

@register_layer("PluginDouble")
def double(ctx):
    return Converted(function=torch.mul, kwargs={"other": 2.0}, keeps_shape=True)
"""


def test_a_plugin_adds_a_layer_type_before_the_conversion(tmp_path: Path) -> None:
    plugin = tmp_path / "my_layers.py"
    plugin.write_text(PLUGIN)
    net = BN.parent.parent / "forks" / "segnet_bn" / "net.prototxt"
    text = net.read_text() + 'layer { name: "twice" type: "PluginDouble" bottom: "bn" top: "twice" }\n'
    prototxt = tmp_path / "net.prototxt"
    prototxt.write_text(text)
    out = tmp_path / "net.safetensors"
    try:
        assert (
            main([str(prototxt), str(BN / "weights.caffemodel"), "-o", str(out), "--plugin", str(plugin)])
            == 0
        )
        assert "PluginDouble" in registered_types() and out.exists()
    finally:
        unregister_layer("PluginDouble")


def test_a_plugin_that_fails_is_one_line_naming_it(tmp_path: Path, capsys) -> None:
    plugin = tmp_path / "broken.py"
    plugin.write_text("raise RuntimeError('no such layer library')\n")
    out = tmp_path / "bn.safetensors"
    code = main(
        [str(BN / "net.prototxt"), str(BN / "weights.caffemodel"), "-o", str(out), "--plugin", str(plugin)]
    )
    err = _error(capsys)
    assert code == 2 and "--plugin" in err and "no such layer library" in err and not out.exists()
    code = main(
        [str(BN / "net.prototxt"), str(BN / "weights.caffemodel"), "--plugin", str(tmp_path / "none.py")]
    )
    assert code == 2 and "none.py does not exist" in _error(capsys)
