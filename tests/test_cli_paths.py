"""A path of the wrong kind is named as what it is, in every command that takes paths (convert,
inspect, eval, timing): a folder where a file goes, a file where a folder goes, an output into a
folder that does not exist or under a file. One ``error:`` line, exit 2, nothing written. And each
command's ``--help`` shows the command as the user typed it."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from reproduce.cli import main as fcn_port
from tests.conftest import FIXTURES

TINY = FIXTURES / "tiny_fcn"
PROTOTXT, CAFFEMODEL = str(TINY / "deploy.prototxt"), str(TINY / "tiny_fcn.caffemodel")
NET = [PROTOTXT, CAFFEMODEL]

CASES = [
    # convert
    (
        ["convert", PROTOTXT, "adir"],
        "adir is a folder, not a file: give the .caffemodel or .caffemodel.h5 file",
    ),
    (["convert", "adir", CAFFEMODEL], "adir is a folder, not a net definition: give the .prototxt file"),
    (["convert", "adir"], "adir is a folder: give PROTOTXT CAFFEMODEL (two files) or a registry model name"),
    (
        ["convert", PROTOTXT, "afile/x.caffemodel"],
        "afile/x.caffemodel does not exist: afile is a file, not a folder",
    ),
    (
        ["convert", *NET, "-o", "adir"],
        "-o adir is a folder: give a file name, e.g. adir/tiny_fcn.safetensors",
    ),
    (["convert", *NET, "-o", "afile/x.pt"], "cannot write afile/x.pt: afile is a file, not a folder"),
    (["convert", *NET, "-o", "nodir/x.pt"], "cannot write nodir/x.pt: the folder nodir does not exist"),
    (["convert", *NET, "--plugin", "adir"], "--plugin adir is a folder, not a file: give a Python file"),
    (["convert", "voc-fcn8s", "--cache-dir", "afile"], "--cache-dir afile is a file, not a folder"),
    (
        ["convert", *NET, "-o", "x.onnx", "--format", "pt"],
        "x.onnx names an ONNX file but --format is pt: use the",
    ),
    (
        ["convert", "afile/x.prototxt", CAFFEMODEL],
        "afile/x.prototxt does not exist: afile is a file, not a folder",
    ),
    # inspect
    (["inspect", "afile/x.prototxt"], "afile/x.prototxt does not exist: afile is a file, not a folder"),
    (["inspect", "nope.prototxt"], "nope.prototxt does not exist"),
    (["inspect", "adir"], "adir is a folder, not a file: inspect reads Caffe files (.prototxt, .caffemodel"),
    # eval
    (
        ["eval", "voc", "--model", *NET, "--voc-root", "afile"],
        "VOC root afile is a file, not a folder (expected",
    ),
    (
        ["eval", "voc", "--model", "adir", "--voc-root", "adir"],
        "--model adir is a folder: give a registry name,",
    ),
    (
        ["eval", "voc", "--model", *NET, "--voc-root", "adir", "--json", "adir"],
        "--json adir is a folder: give a",
    ),
    (
        ["eval", "voc", "--model", *NET, "--voc-root", "adir", "--json", "afile/r.json"],
        "cannot write afile/r.json: afile is a file, not a folder",
    ),
    (
        ["eval", "voc", "--model", *NET, "--voc-root", "adir", "--save-predictions", "afile/p"],
        "--save-predictions afile/p: afile is a file, not a folder",
    ),
    (["eval", "sbd", "--model", *NET, "--sbd-root", "afile"], "SBD root afile is a file, not a folder"),
    (["eval", "nyud", "--model", *NET, "--nyud-root", "afile"], "NYUDv2 root afile is a file, not a folder"),
    (
        ["eval", "siftflow", "--model", *NET, "--siftflow-root", "afile"],
        "SIFT Flow root afile is a file, not a",
    ),
    (
        ["eval", "context", "--model", *NET, "--voc-root", "adir", "--context-root", "afile"],
        "PASCAL-Context root afile is a file, not a folder",
    ),
    # timing
    (
        ["timing", "--model", "afile/x.prototxt"],
        "--model afile/x.prototxt does not exist: afile is a file, not a",
    ),
    (
        ["timing", "--model", "adir"],
        "--model adir is a folder: give a registry name, a deploy .prototxt or a",
    ),
    (["timing", "--model", PROTOTXT, "--weights", "adir"], "--weights adir is a folder, not a file: give a"),
    (
        ["timing", "--model", PROTOTXT, "--json", "afile/t.json"],
        "cannot write afile/t.json: afile is a file,",
    ),
    (["timing", "--model", PROTOTXT, "--warmup", "-1"], "--warmup must be >= 0, got -1"),
]


@pytest.mark.parametrize(
    ("argv", "message"), CASES, ids=[" ".join(c[0][:2]) + f" {i}" for i, c in enumerate(CASES)]
)
def test_a_path_of_the_wrong_kind_is_named_as_what_it_is_in_one_line_and_nothing_is_written(
    argv: list[str], message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "adir").mkdir()
    (tmp_path / "afile").write_text("not a folder")
    assert fcn_port(argv) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("error: ") and captured.err.count("\n") == 1, captured.err
    assert captured.err.startswith(f"error: {message}"), captured.err
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["adir", "afile"]


USAGE = [
    ("convert", "converters.caffe2torch", "python -m converters.caffe2torch"),
    ("inspect", "converters.inspect", "python -m converters.inspect"),
    ("timing", "eval.timing", "python -m eval.timing"),
    ("eval voc", "eval.voc", "python -m eval.voc"),
    ("eval sbd", "eval.sbd", "python -m eval.sbd"),
    ("eval context", "eval.context", "python -m eval.context"),
    ("eval nyud", "eval.nyud", "python -m eval.nyud"),
    ("eval siftflow", "eval.siftflow", "python -m eval.siftflow"),
]


@pytest.mark.parametrize(("words", "module", "typed"), USAGE, ids=[u[0] for u in USAGE])
def test_help_shows_the_command_as_the_user_typed_it(words: str, module: str, typed: str, capsys) -> None:
    assert fcn_port([*words.split(), "--help"]) == 0
    assert capsys.readouterr().out.startswith(f"usage: fcn-port {words} [-h]")
    assert importlib.import_module(module).main(["--help"]) == 0
    assert capsys.readouterr().out.startswith(f"usage: {typed} [-h]")
    assert fcn_port([*words.split(), "--no-such-option"]) == 2
    assert capsys.readouterr().err.startswith("error: ")


@pytest.mark.parametrize(
    ("argv", "typed"),
    [
        (["/venv/bin/fcn-port", "weights", "list"], "fcn-port weights"),
        (["/venv/bin/fcn-port", "eval", "nyud", "--help"], "fcn-port eval nyud"),
        (["/repo/converters/__main__.py", "solve", "--help"], "python -m converters solve"),
        (["/repo/reproduce/cli.py", "demo"], "python -m reproduce.cli demo"),
        (["/repo/weights/__main__.py", "list"], "python -m weights"),  # run as itself
        (["/venv/bin/pytest", "-q"], "python -m weights"),  # called from Python
        (["/venv/bin/fcn-port", "--help"], "python -m weights"),
    ],
)
def test_every_commands_parser_names_the_command_as_the_process_was_started(argv, typed, monkeypatch) -> None:
    from converters.cli import Parser, typed_prog

    assert typed_prog("python -m weights", argv) == typed
    assert typed_prog("fcn-port convert", argv) == "fcn-port convert"  # a prog the dispatcher gave stays
    monkeypatch.setattr("sys.argv", argv)
    assert Parser(prog="python -m weights").format_usage().startswith(f"usage: {typed} [-h]")
