"""``fcn-port COMMAND`` (reproduce.cli) and ``python -m converters``: one dispatcher in front of the
``python -m`` commands, declared as the ``fcn-port`` console script."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from converters.inspect import main as inspect_main
from reproduce import cli

REPO = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
EVERYDAY = ("convert", "inspect", "weights", "eval", "timing", "segment", "train")


def test_pyproject_declares_the_fcn_port_console_script() -> None:
    text = (REPO / "pyproject.toml").read_text()  # tomllib is Python 3.11+
    section = text.split("[project.scripts]", 1)[1].split("\n[", 1)[0]
    assert 'fcn-port = "reproduce.cli:main"' in section.splitlines()


@pytest.mark.parametrize("argv", [[], ["--help"], ["-h"]])
def test_fcn_port_alone_or_with_help_lists_every_command_and_exits_0(argv, capsys) -> None:
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    for command in EVERYDAY:
        assert f"\n  {command} " in out, command
    assert "python -m converters.caffe2torch" in out and "python -m reproduce.segment" in out


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["frobnicate"], "unknown command 'frobnicate'"),
        (["eval"], "eval needs a dataset first"),
        (["eval", "--model", "voc-fcn8s"], "eval needs a dataset first"),
        (["eval", "kitti"], "unknown dataset 'kitti'"),
    ],
)
def test_a_bad_command_is_one_error_line_and_exit_2(argv, expected, capsys) -> None:
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and expected in err


def test_a_command_runs_the_module_it_names(capsys) -> None:
    prototxt = next(FIXTURES.rglob("*.prototxt"))
    assert inspect_main([str(prototxt)]) == 0
    direct = capsys.readouterr().out
    assert cli.main(["inspect", str(prototxt)]) == 0
    assert capsys.readouterr().out == direct and direct


def test_eval_takes_the_dataset_as_its_next_word(capsys) -> None:
    assert cli.main(["eval", "voc", "--help"]) == 0
    assert "--voc-root" in capsys.readouterr().out
    assert cli.main(["eval", "siftflow", "--help"]) == 0
    assert "--voc-root" not in capsys.readouterr().out


def test_segment_help_names_fcn_port_in_its_usage(capsys) -> None:
    assert cli.main(["segment", "--help"]) == 0
    assert capsys.readouterr().out.startswith("usage: fcn-port segment")


def test_a_command_whose_module_is_absent_says_it_is_not_available(monkeypatch, capsys) -> None:
    missing = cli.Command("train", ("reproduce.no_such_module", "converters.no_such.__main__"), "train")
    monkeypatch.setattr(cli, "COMMANDS", tuple(missing if c.name == "train" else c for c in cli.COMMANDS))
    assert cli.main(["--help"]) == 0
    assert "not available in this installation" in capsys.readouterr().out
    assert cli.main(["train", "--help"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: train is not available") and err.count("\n") == 1


def test_train_runs_when_a_training_command_exists(capsys) -> None:
    module = next(
        (m for m in ("reproduce.train", "converters.train.__main__") if importlib.util.find_spec(m)), None
    )
    if module is None:
        assert cli.main(["train", "--help"]) == 2
        assert "not available" in capsys.readouterr().err
    else:
        assert cli.main(["train", "--help"]) == 0
        assert "usage:" in capsys.readouterr().out


def test_python_m_converters_prints_the_commands_instead_of_refusing() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "converters"], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "cannot be directly executed" not in result.stderr
    assert result.stdout.startswith("usage: python -m converters COMMAND")
    assert "python -m reproduce.segment" in result.stdout


def test_python_m_converters_runs_a_command_like_fcn_port(capsys) -> None:
    from converters.__main__ import main

    assert main(["weights", "list"]) == 0
    assert "voc-fcn8s" in capsys.readouterr().out


def test_solve_runs_any_caffe_solver_through_converters_train(capsys) -> None:
    assert cli.main(["solve", "--help"]) == 0
    assert "python -m converters.train" in capsys.readouterr().out


def test_ctrl_c_while_the_first_imports_load_exits_130_without_a_traceback(monkeypatch, capsys) -> None:
    """``fcn-port`` imports torch before any command runs: a Ctrl-C there ends the run as one during
    the command does (exit 130, nothing printed), not with a KeyboardInterrupt traceback."""
    import builtins

    real_import = builtins.__import__

    def interrupted(name, *args, **kwargs):
        if name == "converters.cli":
            raise KeyboardInterrupt
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", interrupted)
    assert cli.main(["inspect", "--help"]) == 130
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_the_command_list_is_printed_without_loading_torch() -> None:
    """``fcn-port --help`` answers at once: finding the commands imports no command (2 s of torch)."""
    code = (
        "import sys, contextlib, io\n"
        "from reproduce.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()): status = main(['--help'])\n"
        "print(status, 'torch' in sys.modules)\n"
    )
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == ["0", "False"], done.stderr
