"""The conversion journey as a user walks it: a small prototxt + caffemodel converted on the command
line to ONNX and to a ``.pt2`` program, each run the way the README shows and compared with the
net in process; what the command prints (the check's verdict, no stray warnings) and the files it
leaves are part of what is checked."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from converters import load_caffe
from converters.caffe2torch import main
from tests.conftest import FIXTURES, REPO

TINY = FIXTURES / "tiny_fcn"
PROTOTXT, CAFFEMODEL = TINY / "deploy.prototxt", TINY / "tiny_fcn.caffemodel"


def _have(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def _command(module: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``python -m MODULE ARGS`` as a user runs it, in ``cwd``."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONWARNINGS")}
    env["PYTHONPATH"] = str(REPO)
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow
def test_a_tiny_net_converted_to_onnx_prints_its_check_and_runs_in_onnxruntime_like_the_net(
    tmp_path: Path,
) -> None:
    if not _have("onnx") or not _have("onnxscript"):
        pytest.skip("ONNX export needs onnx and onnxscript (pip install onnx onnxscript onnxruntime)")
    done = _command("converters.caffe2torch", str(PROTOTXT), str(CAFFEMODEL), "-o", "tiny.onnx", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""  # no "torchvision is not installed" notes, no warnings
    lines = done.stdout.splitlines()
    assert re.fullmatch(r"wrote tiny\.onnx \(onnx, \d+ KiB\) in [\d.]+ s", lines[-1]), lines[-1]
    check = next(line for line in lines if line.startswith("self-check: "))
    if not _have("onnxruntime"):
        assert "skipped: onnxruntime is not installed" in check and "pip install onnxruntime" in check
        pytest.skip("onnxruntime is not installed: the file was written, not run (pip install onnxruntime)")
    assert check.startswith("self-check: passed: onnxruntime gives PyTorch's outputs within "), check
    assert "data 1x3x37x41, and data 1x3x45x57: height and width are dynamic" in check
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.onnx"]
    looked = _command("converters.inspect", "tiny.onnx", cwd=tmp_path)  # what did I just write?
    assert looked.returncode == 2 and looked.stdout == ""
    assert looked.stderr.startswith("error: tiny.onnx is an ONNX model, not a Caffe file: run it with ")

    import onnxruntime

    session = onnxruntime.InferenceSession(str(tmp_path / "tiny.onnx"), providers=["CPUExecutionProvider"])
    x = torch.from_numpy(np.random.default_rng(0).normal(size=(1, 3, 50, 63)).astype(np.float32) * 50)
    (got,) = session.run(["score"], {"data": x.numpy()})
    with torch.no_grad():
        want = load_caffe(PROTOTXT, CAFFEMODEL)(data=x)["score"].numpy()
    assert got.shape == want.shape == (1, 3, 50, 63)
    assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()


def test_without_onnxruntime_an_onnx_conversion_says_the_check_was_skipped_and_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("onnx", reason="ONNX export needs onnx (pip install onnx onnxscript onnxruntime)")
    pytest.importorskip("onnxscript", reason="ONNX export needs onnxscript")
    from converters.graph import export

    monkeypatch.setattr(export, "onnxruntime_available", lambda: False)
    assert main([str(PROTOTXT), str(CAFFEMODEL), "-o", str(tmp_path / "tiny.onnx")]) == 0
    out = capsys.readouterr().out
    assert (
        "self-check: skipped: onnxruntime is not installed, so the ONNX file was not run (to check it: "
        "pip install onnxruntime (or, in a clone of fcn-port, pip install '.[export]'))"
    ) in out
    assert "fcn-port[export]" not in out and (tmp_path / "tiny.onnx").is_file()


def test_without_onnx_the_error_names_the_packages_to_install_not_an_unpublished_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx raises ImportError
    assert main([str(PROTOTXT), str(CAFFEMODEL), "-o", str(tmp_path / "tiny.onnx")]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""  # refused before the conversion: no report printed
    assert captured.err.count("\n") == 1
    assert captured.err.strip() == (
        "error: ONNX export needs the onnx package: pip install onnx onnxscript onnxruntime "
        "(or, in a clone of fcn-port, pip install '.[export]')"
    )
    assert list(tmp_path.iterdir()) == []


def test_a_pt2_conversion_prints_its_check_and_leaves_only_the_file(tmp_path: Path, capsys) -> None:
    assert main([str(PROTOTXT), str(CAFFEMODEL), "-o", str(tmp_path / "tiny.pt2")]) == 0
    out = capsys.readouterr().out
    assert "self-check: passed: the reloaded program gives the net's outputs within " in out
    assert "(data [1, 3, 32, 32])" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.pt2"]


def _readme_block(marker: str) -> str:
    """The README's Python block that contains ``marker``."""
    blocks = re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(), flags=re.S)
    found = [block for block in blocks if marker in block]
    assert len(found) == 1, f"README has {len(found)} python blocks with {marker!r}"
    return found[0]


def test_the_readme_example_calls_a_pt2_positionally_and_an_onnx_session_by_name_and_both_give_the_nets_dict(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    block = _readme_block('export_program(net, "net.pt2")')
    shutil.copy(PROTOTXT, tmp_path / "deploy.prototxt")
    shutil.copy(CAFFEMODEL, tmp_path / "weights.caffemodel")
    monkeypatch.chdir(tmp_path)
    pt2_part, _, onnx_part = block.partition("import onnxruntime")
    names: dict = {}
    with torch.no_grad():
        exec(compile(pt2_part, "README.md", "exec"), names)
    expected, scores, outputs = names["expected"], names["scores"], names["outputs"]
    assert isinstance(expected, dict) and isinstance(outputs, tuple)
    assert scores.keys() == expected.keys() == {"score"}
    assert scores["score"].shape == (1, 3, 64, 80)
    scale = float(expected["score"].abs().max())  # the fast CPU graph and the program round apart
    assert float((scores["score"] - expected["score"]).abs().max()) <= 1e-5 * scale
    if not (_have("onnxruntime") and _have("onnx") and _have("onnxscript")):
        pytest.skip("the README's ONNX half needs onnx, onnxscript and onnxruntime (not installed)")
    with torch.no_grad():
        exec(compile("import onnxruntime" + onnx_part, "README.md", "exec"), names)
    assert isinstance(names["onnx_outputs"], list) and names["onnx_scores"].keys() == {"score"}
    want = expected["score"].numpy()
    assert np.abs(names["onnx_scores"]["score"] - want).max() <= 1e-5 * np.abs(want).max()
