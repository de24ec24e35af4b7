"""``python -m converters.inspect``: table and JSON reports, checked against EXPECTED-blobs.json."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import FIXTURES, REPO, need_shared

from converters import write_weights
from converters.inspect import main


def run_cli(*args: str | os.PathLike[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "converters.inspect", *map(str, args)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


def run_json(path: Path, capsys: pytest.CaptureFixture[str]) -> dict:
    assert main([str(path), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def _expected(model_dir: str, file_name: str) -> tuple[Path, dict]:
    folder = need_shared("real-caffe-models", model_dir)
    return folder / file_name, json.loads((folder / "EXPECTED-blobs.json").read_text())["files"][file_name]


REAL = [
    ("cifar10_quick_v1", "cifar10_quick_iter_5000.caffemodel"),
    ("mtcnn_pnet_rnet_onet_lnet", "det2.caffemodel"),
    ("yufacedetectnet_v2_ssd", "yufacedetectnet-open-v2.caffemodel"),
    ("cifar10_small_hdf5", "cifar10_small.caffemodel.h5"),
]


@pytest.mark.parametrize(("model_dir", "file_name"), REAL, ids=[f for _, f in REAL])
def test_json_report_matches_expected_blobs(
    model_dir: str, file_name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path, expected = _expected(model_dir, file_name)
    report = run_json(path, capsys)
    assert report["num_layers"] == expected["num_layers_total"]
    assert report["num_layers_with_blobs"] == expected["num_layers_with_blobs"]
    assert [layer["name"] for layer in report["layers"]] == [row[1] for row in expected["all_layers"]["rows"]]
    by_name = {layer["name"]: layer for layer in report["layers"]}
    total = 0
    for layer in expected["layers_with_blobs"]:
        found = by_name[layer["name"]]
        assert found["blobs"] == [blob["stored_shape"] for blob in layer["blobs"]]
        assert found["params"] == sum(blob["count"] for blob in layer["blobs"])
        assert found["type"] == (layer.get("type_v2") or layer["type"])
        if layer["field"] == "layers":
            assert found["type_stored"] == layer["type_v1_enum"]
        total += found["params"]
    assert report["total_params"] == total
    assert report["net_name"] == expected["net_name"]
    unknown = expected["unknown_fields"]
    assert report["unknown_fields"] == (unknown["count"] if unknown else 0)
    assert report["size_bytes"] == expected["size_bytes"]


def test_table_report_is_aligned_with_totals(capsys: pytest.CaptureFixture[str]) -> None:
    path, expected = _expected("cifar10_quick_v1", "cifar10_quick_iter_5000.caffemodel")
    assert main([str(path)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.lstrip().startswith("#"))
    starts = [lines[header].index(word) for word in ("layer", "type", "bottoms", "blobs")]
    rows = lines[header + 2 : header + 2 + expected["num_layers_total"]]
    assert len(rows) == 13
    for row, exp in zip(rows, expected["all_layers"]["rows"], strict=True):
        assert row[starts[0] :].split()[0] == exp[1]
        assert row[starts[1] : starts[2]].rstrip().endswith(f"({exp[2]})")  # V1 enum name kept
    conv1 = next(row for row in rows if row[starts[0] :].startswith("conv1 "))
    assert "32x3x5x5, 1x1x1x32" in conv1 and conv1.rstrip().endswith("2,432")  # 2400 + 32
    total = sum(b["count"] for layer in expected["layers_with_blobs"] for b in layer["blobs"])
    assert f"13 layers, 5 with blobs, {total:,} parameters" in out
    assert "Convolution (CONVOLUTION)" in out and "SoftmaxWithLoss (SOFTMAX_LOSS)" in out


def test_prototxt_report_shows_layer_settings(capsys: pytest.CaptureFixture[str]) -> None:
    path = need_shared("fcn-reference", "voc-fcn8s", "deploy.prototxt")
    report = run_json(path, capsys)
    assert report["format"] == "prototxt" and report["total_params"] is None
    layers = {layer["name"]: layer for layer in report["layers"]}
    assert layers["input"]["settings"]["input_param"]["shape"] == [{"dim": [1, 3, 500, 500]}]
    conv = layers["conv1_1"]["settings"]["convolution_param"]
    assert conv["num_output"] == 64 and conv["pad"] == [100] and conv["kernel_size"] == [3]
    assert layers["upscore8"]["settings"]["convolution_param"]["bias_term"] is False
    assert layers["score"]["type"] == "Crop" and layers["score"]["bottoms"] == ["upscore8", "data"]
    assert main([str(path)]) == 0
    table = capsys.readouterr().out
    assert "convolution_param { num_output: 64 pad: 100 kernel_size: 3" in table


def test_solver_prototxt_is_pointed_out(capsys: pytest.CaptureFixture[str]) -> None:
    path = need_shared("fcn-reference", "voc-fcn8s", "solver.prototxt")
    assert main([str(path)]) == 0
    out = capsys.readouterr().out
    assert "0 layers" in out and "not a net definition (a solver prototxt?)" in out and "base_lr" in out
    assert "fork" not in out


def test_legacy_input_prototxt(capsys: pytest.CaptureFixture[str]) -> None:
    path = need_shared("real-caffe-models", "mtcnn_pnet_rnet_onet_lnet", "det1.prototxt")
    report = run_json(path, capsys)
    assert report["inputs"] == [{"name": "data", "shape": [1, 3, 12, 12]}]


def test_hdf5_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "w.bin"  # recognised by content
    weights = {"b": [np.zeros((2, 3), np.float32)], "a": [np.zeros(4, np.float32), np.zeros(1, np.float32)]}
    write_weights(weights, path, fmt="hdf5")
    with h5py.File(path, "a") as handle:
        handle["data"].create_group("relu")
    report = run_json(path, capsys)
    assert report["format"] == "hdf5"
    assert [(layer["name"], layer["blobs"], layer["params"]) for layer in report["layers"]] == [
        ("a", [[4], [1]], 5), ("b", [[2, 3]], 6), ("relu", [], 0),
    ]  # fmt: skip
    assert report["total_params"] == 11


def test_help_and_exit_codes() -> None:
    result = run_cli("--help")
    assert result.returncode == 0 and "usage" in result.stdout and "--json" in result.stdout
    result = run_cli()
    assert result.returncode == 2 and result.stderr.startswith("error:") and result.stderr.count("\n") == 1


def _bad_files(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    files: dict[str, tuple[Path, str]] = {}

    def add(name: str, data: bytes, words: str) -> None:
        path = tmp_path / name
        path.write_bytes(data)
        files[name] = (path, words)

    add("empty.caffemodel", b"", "empty")
    rng = np.random.default_rng(3)
    add("noise.caffemodel", b"\x00" + rng.integers(0, 256, 4000, dtype=np.uint8).tobytes(), "byte")
    good = tmp_path / "good.caffemodel"
    write_weights({"conv": [np.ones((8, 8), np.float32)]}, good)
    add("truncated.caffemodel", good.read_bytes()[:150], "byte")
    add("huge.caffemodel", b"\xa2\x06" + bytes([0x80, 0x80, 0x80, 0x80, 0x28]) + b"\x00" * 8, "claims")
    add("syntax.prototxt", b'name: "x"\nlayer {\n  name: "a"\n  type "ReLU"\n}\n', "line 4, column 8")
    with h5py.File(tmp_path / "other.h5", "w") as handle:
        handle.create_dataset("weights", data=np.zeros(3))
    files["other.h5"] = (tmp_path / "other.h5", "no /data group")
    files["missing.caffemodel"] = (tmp_path / "missing.caffemodel", "missing.caffemodel does not exist")
    files["a-directory"] = (tmp_path, "is a folder, not a file")
    return files


def test_bad_input_gives_one_error_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, (path, words) in _bad_files(tmp_path).items():
        assert main([str(path)]) == 2, name
        captured = capsys.readouterr()
        assert captured.out == "", name
        assert captured.err.startswith("error: ") and captured.err.count("\n") == 1, (name, captured.err)
        assert words in captured.err, (name, captured.err)
        assert str(path) in captured.err, (name, captured.err)


def test_bad_input_through_the_real_command_has_no_traceback(tmp_path: Path) -> None:
    files = _bad_files(tmp_path)
    for name in ("noise.caffemodel", "syntax.prototxt", "other.h5", "huge.caffemodel"):
        path, words = files[name]
        result = run_cli(path, "--json")
        assert result.returncode == 2, name
        assert result.stdout == "" and "Traceback" not in result.stderr, name
        assert result.stderr.startswith("error: ") and words in result.stderr, name


def test_real_command_on_a_caffemodel(tmp_path: Path) -> None:
    path = tmp_path / "w.caffemodel"
    write_weights({"conv": [np.ones((3, 2, 1, 1), np.float32), np.ones(3, np.float32)]}, path)
    result = run_cli(path)
    assert result.returncode == 0, result.stderr
    assert "3x2x1x1, 3" in result.stdout and "1 layers, 1 with blobs, 9 parameters" in result.stdout
    data = json.loads(run_cli(path, "--json").stdout)
    assert data["layers"][0]["blobs"] == [[3, 2, 1, 1], [3]]


# ----------------------------------------------------------------------------------------------
# The tiny Caffe-made FCN fixture (tests/fixtures/tiny_fcn), when present


def _tiny(name: str) -> Path:
    path = FIXTURES / "tiny_fcn" / name
    if not path.exists():
        pytest.skip(f"needs {path.relative_to(REPO)} (the Caffe-made tiny FCN fixture)")
    return path


def test_tiny_fcn_caffemodel_h5_and_prototxt_agree(capsys: pytest.CaptureFixture[str]) -> None:
    binary = run_json(_tiny("tiny_fcn.caffemodel"), capsys)
    hdf5 = run_json(_tiny("tiny_fcn.caffemodel.h5"), capsys)
    deploy = run_json(_tiny("deploy.prototxt"), capsys)
    # both weight files were written by Caffe from one net: same blobs, same shapes
    with_blobs = {layer["name"]: layer["blobs"] for layer in binary["layers"] if layer["blobs"]}
    assert with_blobs == {layer["name"]: layer["blobs"] for layer in hdf5["layers"] if layer["blobs"]}
    assert binary["total_params"] == hdf5["total_params"] > 0
    assert binary["total_params"] == sum(math.prod(s) for blobs in with_blobs.values() for s in blobs)
    assert set(with_blobs) <= {layer["name"] for layer in deploy["layers"]}
    assert sorted(layer["name"] for layer in hdf5["layers"]) == [layer["name"] for layer in hdf5["layers"]]


def test_json_lists_the_inputs_of_input_layers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report = run_json(FIXTURES / "tiny_fcn" / "deploy.prototxt", capsys)
    assert report["inputs"] == [{"name": "data", "shape": [1, 3, 37, 41]}]
    path = tmp_path / "two.prototxt"
    path.write_text(
        'layer { name: "in" type: "Input" top: "a" top: "b" input_param { shape { dim: 2 dim: 3 } } }\n'
        'layer { name: "in2" type: "Input" top: "c" top: "d"\n'
        "  input_param { shape { dim: 1 } shape { dim: 4 } } }\n"
        'layer { name: "in3" type: "Input" top: "e" }\n'
    )
    assert run_json(path, capsys)["inputs"] == [
        {"name": "a", "shape": [2, 3]}, {"name": "b", "shape": [2, 3]}, {"name": "c", "shape": [1]},
        {"name": "d", "shape": [4]}, {"name": "e", "shape": None},
    ]  # fmt: skip
    assert main([str(path)]) == 0
    assert "input:   a 2x3\n" in capsys.readouterr().out


def test_prototxt_table_has_a_header_row(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(FIXTURES / "tiny_fcn" / "deploy.prototxt")]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.lstrip().startswith("#"))
    assert lines[header].split() == ["#", "layer", "type", "bottoms", "->", "tops", "settings"]
    assert set(lines[header + 1].replace(" ", "")) == {"-"}
    assert lines[header + 2].split()[:3] == ["0", "input", "Input"]


def test_misspelled_fields_are_shown_and_marked(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "typo.prototxt"
    path.write_text(
        'input: "data" input_dim: 1 input_dim: 1 input_dim: 8 input_dim: 8\n'
        'layer {\n  name: "pool1" type: "Pooling" bottom: "data" top: "pool1"\n'
        "  pooling_param { pool: MAX kernel_size: 2\n    strde: 2 }\n  typo_top: 1\n}\n"
    )
    report = run_json(path, capsys)
    assert report["layers"][0]["unknown_fields"] == [
        {"field": "pooling_param.strde", "line": 5, "column": 5},
        {"field": "typo_top", "line": 6, "column": 3},
    ]
    assert report["layers"][0]["settings"]["pooling_param"]["strde"] == 2
    assert main([str(path)]) == 0
    table = capsys.readouterr().out
    assert "pooling_param { pool: MAX kernel_size: 2 strde?: 2 }" in table
    assert "unknown: layer 'pool1': pooling_param.strde (line 5)" in table
    assert "unknown: layer 'pool1': typo_top (line 6)" in table
    assert "in no Caffe schema fcn-port knows" in table


@pytest.fixture(scope="module")
def written_by_us(tmp_path_factory) -> Path:
    """The tiny FCN as fcn-port writes it: .safetensors, .pt, .pt2 and (with onnx) .onnx, plus a
    plain torch.save file and a safetensors file of someone else's weights."""
    import safetensors.torch
    import torch

    from converters import load_caffe, save_converted
    from converters.graph.export import export_program

    folder = tmp_path_factory.mktemp("ours")
    tiny = FIXTURES / "tiny_fcn"
    net = load_caffe(tiny / "deploy.prototxt", tiny / "tiny_fcn.caffemodel", optimize=False)
    save_converted(net, folder / "net.safetensors")
    save_converted(net, folder / "net.pt")
    export_program(net, folder / "net.pt2")
    try:  # an ONNX model as onnx itself writes it (the exporter's own: tests/test_journey_convert.py)
        import onnx.helper

        graph = onnx.helper.make_graph(
            [onnx.helper.make_node("Relu", ["data"], ["score"])], "tiny",
            [onnx.helper.make_tensor_value_info("data", onnx.TensorProto.FLOAT, [1, 3, 4, 4])],
            [onnx.helper.make_tensor_value_info("score", onnx.TensorProto.FLOAT, [1, 3, 4, 4])],
        )
        onnx.save(onnx.helper.make_model(graph), str(folder / "net.onnx"))
    except ImportError:
        pass
    torch.save({"w": torch.zeros(2)}, folder / "theirs.pt")
    safetensors.torch.save_file({"w": torch.zeros(2)}, str(folder / "theirs.safetensors"))
    return folder


OURS = {
    "net.safetensors": "net.safetensors is a model fcn-port converted (safetensors, its net inside), not a "
    "Caffe file: use it as a model (fcn-port segment --model net.safetensors ..., converters.load_converted)",
    "net.pt": "net.pt is a model fcn-port converted (.pt state dict, its net inside), not a Caffe file: "
    "use it as a model",
    "net.pt2": "net.pt2 is a torch.export program (.pt2), not a Caffe file: load it with "
    "torch.export.load('net.pt2').module() and call it with the inputs in order (it returns a tuple)",
    "net.onnx": "net.onnx is an ONNX model, not a Caffe file: run it with onnxruntime",
    "theirs.pt": "theirs.pt is a PyTorch file (torch.save), not a Caffe file: load it with torch.load",
    "theirs.safetensors": "theirs.safetensors is a safetensors file (PyTorch weights, not from fcn-port",
}
READS = "inspect reads Caffe files (.prototxt, .caffemodel, .caffemodel.h5)"


@pytest.mark.parametrize(("name", "says"), OURS.items(), ids=list(OURS))
def test_inspect_names_a_file_fcn_port_or_pytorch_wrote_and_says_what_to_do_instead(
    written_by_us: Path, name: str, says: str, monkeypatch, capsys
) -> None:
    if not (written_by_us / name).exists():
        pytest.skip(f"{name} needs the onnx package to be written (pip install onnx)")
    monkeypatch.chdir(written_by_us)
    assert main([name]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1, captured.err
    assert captured.err.startswith(f"error: {says}"), captured.err
    assert captured.err.rstrip().endswith(READS)
