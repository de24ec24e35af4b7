"""python -m converters.caffe2torch: format from the suffix, destination and device checked first,
input shapes, a self-check at a size the net accepts that runs before the file is kept."""

from __future__ import annotations

import argparse
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import converters
from converters import caffe2torch, load_caffe
from converters.caffe2torch import main, parse_input_shape

REPO = Path(__file__).resolve().parent.parent



def _conv(stride: int) -> str:
    return (
        'layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1" '
        f"convolution_param {{ num_output: 4 kernel_size: 3 stride: {stride} }} }}\n"
    )


def _fcn(n: int, side: int) -> str:
    """A fully convolutional net declaring an n x 3 x side x side input."""
    return f'name: "tinyfcn"\ninput: "data"\ninput_dim: {n}\ninput_dim: 3\ninput_dim: {side}\n' \
        f"input_dim: {side}\n" + _conv(1)


CLASSIFIER = (
    'name: "tinycls"\ninput: "data"\ninput_dim: 2\ninput_dim: 3\ninput_dim: 150\ninput_dim: 150\n'
    + _conv(2)
    + 'layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1" '
    "pooling_param { pool: MAX kernel_size: 4 stride: 4 } }\n"
    'layer { name: "fc" type: "InnerProduct" bottom: "pool1" top: "fc" '
    "inner_product_param { num_output: 5 } }\n"
)


def _write(tmp_path: Path, name: str, text: str) -> tuple[str, str]:
    """A prototxt and a caffemodel of seeded random weights for it."""
    prototxt = tmp_path / f"{name}.prototxt"
    prototxt.write_text(text)
    torch.manual_seed(0)
    net = load_caffe(prototxt)
    state = net.state_dict()
    blobs = {layer: [state[k].numpy() for k in keys] for layer, keys in net.caffe.parameter_blobs.items()}
    caffemodel = tmp_path / f"{name}.caffemodel"
    converters.write_weights(blobs, caffemodel)
    return str(prototxt), str(caffemodel)


def _error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_a_fixed_size_classifier_is_checked_at_its_declared_size(tmp_path, capsys) -> None:
    files = _write(tmp_path, "cls", CLASSIFIER)
    assert main([*files, "-o", str(tmp_path / "cls.pt")]) == 0
    out = capsys.readouterr().out
    assert "self-check: passed" in out and "data [1, 3, 150, 150] -> fc [1, 5]" in out  # 150 px, batch 1
    assert (tmp_path / "cls.pt").is_file()


def test_a_fully_convolutional_net_is_checked_shrunk_at_batch_1(tmp_path, capsys) -> None:
    files = _write(tmp_path, "fcn", _fcn(2, 300))
    assert main([*files, "-o", str(tmp_path / "fcn.safetensors")]) == 0
    out = capsys.readouterr().out
    assert "data: 2x3x300x300" in out and "data [1, 3, 32, 32] -> conv1 [1, 4, 30, 30]" in out
    huge = _write(tmp_path, "huge", _fcn(1_000_000, 20))  # 4.8 GB at the declared batch
    assert main([*huge, "-o", str(tmp_path / "huge.safetensors")]) == 0
    assert "data [1, 3, 20, 20] -> conv1 [1, 4, 18, 18]" in capsys.readouterr().out


def test_a_self_check_too_large_for_memory_is_refused_before_anything_is_written(
    tmp_path, capsys, monkeypatch
) -> None:
    files = _write(tmp_path, "cls", CLASSIFIER)
    monkeypatch.setattr(caffe2torch, "SELF_CHECK_MAX_BYTES", 10_000)
    assert main([*files, "-o", str(tmp_path / "cls.pt")]) == 2
    err = _error(capsys)
    assert "data 1x3x150x150" in err and "--no-check" in err
    assert not (tmp_path / "cls.pt").exists()
    assert main([*files, "-o", str(tmp_path / "cls.pt"), "--no-check"]) == 0


def test_a_failed_self_check_keeps_nothing_and_leaves_an_existing_file(tmp_path, capsys, monkeypatch) -> None:
    files = _write(tmp_path, "fcn", _fcn(1, 20))
    output = tmp_path / "fcn.pt"
    output.write_bytes(b"the user's file")
    monkeypatch.setattr(caffe2torch, "self_check", lambda *args: "FAILED: outputs differ by 1")
    assert main([*files, "-o", str(output)]) == 1
    captured = capsys.readouterr()
    assert "self-check: FAILED" in captured.out and "nothing written" in captured.err
    assert output.read_bytes() == b"the user's file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fcn.caffemodel", "fcn.prototxt", "fcn.pt"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-o", "net.h5"], "net.h5: unknown suffix '.h5': a converted file ends in .safetensors, .pt"),
        (["-o", "net"], "net: no suffix"),
        (["-o", "x.safetensors", "--format", "pt"], "names a safetensors file but --format is pt"),
        (["-o", "x.pt", "--format", "tflite"], "--format tflite: choose one of safetensors, pt"),
        (["-o", "x.pt", "--format", "onnx"], "x.pt names a .pt file but --format is onnx"),
        (["-o", "x.onnx", "--format", "pt"], "x.onnx names an ONNX file but --format is pt: use"),
        (["--input-shape", "data=32"], "bad input shape 'data=32'"),
        (["--input-shape", "nothere=32x32"], "the net has no input 'nothere' (it reads data)"),
    ],
)
def test_bad_options_are_one_line_before_any_output(tmp_path, capsys, monkeypatch, args, message) -> None:
    files = _write(tmp_path, "fcn", _fcn(1, 20))
    monkeypatch.chdir(tmp_path)
    assert main([*files, *args]) == 2
    assert message in _error(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fcn.caffemodel", "fcn.prototxt"]


def test_the_format_is_the_suffix_and_format_only_names_the_default(tmp_path, capsys, monkeypatch) -> None:
    files = _write(tmp_path, "fcn", _fcn(1, 20))
    monkeypatch.chdir(tmp_path)
    assert main([*files, "--format", "pt"]) == 0
    assert "wrote fcn.pt (pt," in capsys.readouterr().out
    assert main([*files, "-o", "b.pth"]) == 0
    assert (tmp_path / "b.pth").read_bytes()[:2] == b"PK"  # torch.save's zip
    assert main([*files]) == 0
    assert (tmp_path / "fcn.safetensors").read_bytes()[8:9] == b"{"


def test_an_unwritable_destination_fails_before_the_conversion(tmp_path, capsys, monkeypatch) -> None:
    files = _write(tmp_path, "fcn", _fcn(1, 20))

    def never(*args, **kwargs):
        raise AssertionError("converted before checking the destination")

    monkeypatch.setattr("weights.models.load_model", never)
    (tmp_path / "folder.pt").mkdir()
    for output, expected in [
        ("/proc/x.safetensors", "cannot write /proc/x.safetensors: "),
        (str(tmp_path / "no" / "x.pt"), "does not exist"),
        (str(tmp_path / "folder.pt"), "is a folder"),
    ]:
        assert main([*files, "-o", output]) == 2
        err = _error(capsys)
        assert expected in err and ".part" not in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on machines without CUDA")
def test_cuda_without_a_gpu_is_one_line_before_converting(tmp_path, capsys) -> None:
    files = _write(tmp_path, "fcn", _fcn(1, 20))
    assert main([*files, "-o", str(tmp_path / "x.pt"), "--device", "cuda"]) == 2
    assert "CUDA is not available" in _error(capsys)
    assert not (tmp_path / "x.pt").exists()


def test_height_and_width_alone_keep_the_nets_batch_and_channels(tmp_path, capsys) -> None:
    files = _write(tmp_path, "fcn", _fcn(2, 20))
    assert main([*files, "-o", str(tmp_path / "x.pt"), "--input-shape", "data=32x40"]) == 0
    out = capsys.readouterr().out
    assert "data: 2x3x32x40" in out and "data [1, 3, 32, 32]" in out  # checked shrunk to 32 px, batch 1


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("data=1,3,224,224", ("data", (1, 3, 224, 224), False)),
        ("data=1x3x224x224", ("data", (1, 3, 224, 224), False)),
        ("data=224x300", ("data", (224, 300), True)),
        ("im_info=1,3", ("im_info", (1, 3), False)),
    ],
)
def test_input_shape_forms(text: str, expected: tuple) -> None:
    assert parse_input_shape(text) == expected


@pytest.mark.parametrize(
    "text", ["data=32", "data=3x32x32", "data=1,3x32,32", "data=0x5", "=1,3", "data", "d=ax2"]
)
def test_input_shape_refusals(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="bad input shape"):
        parse_input_shape(text)


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_the_converted_file_follows_the_umask(tmp_path, capsys, umask) -> None:
    files = _write(tmp_path, "fcn", _fcn(1, 20))
    old = os.umask(umask)
    try:
        assert main([*files, "-o", str(tmp_path / "x.safetensors")]) == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "x.safetensors").stat().st_mode) == 0o666 & ~umask


def test_help_does_not_import_torch() -> None:
    code = (
        "import runpy, sys\nsys.argv = ['caffe2torch', '--help']\n"
        "try:\n    runpy.run_module('converters.caffe2torch', run_name='__main__')\n"
        "except SystemExit as exit_:\n    assert exit_.code == 0, exit_.code\n"
        "print('torch' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "usage: python -m converters.caffe2torch" in done.stdout and done.stdout.strip().endswith("False")


def test_a_registry_model_not_in_the_cache_is_not_downloaded_unasked(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("FCN_PORT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr("weights.api._interactive", lambda: False)
    monkeypatch.chdir(tmp_path)
    assert main(["voc-fcn8s"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    assert captured.err.startswith("error: voc-fcn8s weights (fcn8s-heavy-pascal.caffemodel, about 513 MiB)")
    assert "add --download" in captured.err
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_the_python_api_names_the_format_of_a_suffix_as_the_command_does() -> None:
    from converters.errors import UsageError
    from converters.graph.converted import format_for

    with pytest.raises(UsageError, match="x.onnx names an ONNX file but --format is pt"):
        format_for("x.onnx", "pt")
