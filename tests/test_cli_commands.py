"""Every command keeps the README's promise: --help exits 0; a bad argument exits 2 with one
``error:`` line and no traceback; Ctrl-C exits 130 quietly with nothing partial left."""

from __future__ import annotations

import importlib
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from tests.conftest import REPO

TINY_PROTOTXT = REPO / "tests" / "fixtures" / "tiny_fcn" / "deploy.prototxt"

COMMANDS = [
    "converters.inspect",
    "converters.caffe2torch",
    "weights.__main__",
    "eval.voc",
    "eval.sbd",
    "eval.context",
    "eval.nyud",
    "eval.siftflow",
    "eval.timing",
    "reproduce.demo",
    "reproduce.quickstart",
    "reproduce.table1",
    "reproduce.table2",
    "reproduce.table3",
    "reproduce.nyud",
    "reproduce.siftflow",
    "reproduce.context",
    "reproduce.segment",
    "reproduce.cli",
    "converters.train.__main__",
]


def _one_error_line(err: str) -> str:
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("module", COMMANDS)
def test_a_bad_argument_exits_2_with_one_error_line(module: str, capsys) -> None:
    main = importlib.import_module(module).main
    assert main(["--no-such-option"]) == 2
    captured = capsys.readouterr()
    _one_error_line(captured.err)  # the option, or a required argument missing
    assert captured.out == ""


@pytest.mark.parametrize("module", COMMANDS)
def test_help_exits_0(module: str, capsys) -> None:
    main = importlib.import_module(module).main
    assert main(["--help"]) == 0
    assert capsys.readouterr().out.startswith("usage: ")


@pytest.mark.parametrize("module", ["converters.caffe2torch", "eval.voc", "reproduce.table2"])
def test_a_bad_argument_end_to_end(module: str) -> None:
    done = subprocess.run([sys.executable, "-m", module, "--no-such-option"], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2 and done.stdout == ""
    _one_error_line(done.stderr)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on machines without CUDA")
@pytest.mark.parametrize(
    ("module", "args"),
    [
        ("reproduce.demo", []),
        ("converters.caffe2torch", ["voc-fcn8s"]),
        ("eval.timing", ["--model", "voc-fcn8s"]),
        ("eval.voc", ["--model", "voc-fcn8s", "--voc-root", "."]),
    ],
)
def test_cuda_on_a_machine_without_it_is_one_line(module: str, args: list[str], tmp_path, capsys,
                                                  monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FCN_PORT_CACHE", str(tmp_path / "cache"))
    main = importlib.import_module(module).main
    assert main([*args, "--device", "cuda"]) == 2
    assert "CUDA is not available here" in _one_error_line(capsys.readouterr().err)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("module", "target", "args"),
    [
        ("converters.caffe2torch", "weights.models.load_model", ["voc-fcn8s", "-o", "out.safetensors"]),
        ("reproduce.demo", "reproduce.demo.resolve_weights", ["--output", "out.png"]),
        ("reproduce.table1", "reproduce.table1.build", []),
        ("eval.timing", "eval.timing.measure", ["--json", "out.json"]),
        ("converters.inspect", "converters.inspect.describe", [str(TINY_PROTOTXT)]),
    ],
)
def test_ctrl_c_exits_130_quietly(module: str, target: str, args: list[str], tmp_path, capsys,
                                  monkeypatch) -> None:
    def interrupted(*_args, **_kwargs):
        raise KeyboardInterrupt

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(target, interrupted)
    assert importlib.import_module(module).main(args) == 130
    assert capsys.readouterr().err == "" and list(tmp_path.iterdir()) == []


def test_ctrl_c_during_a_conversion_end_to_end_leaves_nothing(tmp_path) -> None:
    """A real SIGINT while caffe2torch writes: exit 130, no traceback, no file, no temporary file."""
    script = (
        "import sys, time\n"
        "import converters.graph.converted as converted\n"
        "def slow(*args, **kwargs):\n"
        "    open(sys.argv[-1] + '.started', 'w').close()\n"
        "    time.sleep(60)\n"
        "converted.save_converted = slow\n"
        "from converters.caffe2torch import main\n"
        "sys.exit(main(sys.argv[1:-1]))\n"
    )
    prototxt = tmp_path / "n.prototxt"
    prototxt.write_text('name: "n"\ninput: "data"\ninput_dim: 1\ninput_dim: 1\ninput_dim: 4\ninput_dim: 4\n'
                        'layer { name: "c" type: "Convolution" bottom: "data" top: "c" '
                        "convolution_param { num_output: 1 kernel_size: 1 } }\n")
    import numpy as np

    import converters

    converters.write_weights({"c": [np.ones((1, 1, 1, 1), np.float32), np.zeros(1, np.float32)]},
                             tmp_path / "n.caffemodel")
    output = tmp_path / "out" / "n.safetensors"
    output.parent.mkdir()
    marker = tmp_path / "marker"
    child = subprocess.Popen(
        [sys.executable, "-c", script, str(prototxt), str(tmp_path / "n.caffemodel"), "-o", str(output),
         str(marker)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    deadline = time.monotonic() + 60
    while not (tmp_path / "marker.started").exists() and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    child.send_signal(signal.SIGINT)
    _, err = child.communicate(timeout=60)
    assert child.returncode == 130 and err == "", err
    assert list(output.parent.iterdir()) == []
