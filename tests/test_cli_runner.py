"""converters.cli: the one runner every command uses (error line, Ctrl-C, closed pipe) and --device."""

from __future__ import annotations

import errno

import pytest
import torch

from converters import cli
from converters.errors import CaffeFormatError, UsageError


def test_a_user_error_is_one_error_line_and_exit_2(capsys) -> None:
    def body() -> int:
        raise CaffeFormatError("layer 'conv1': bad\n  second line", "net.prototxt", line=3)

    assert cli.run(body) == 2
    captured = capsys.readouterr()
    assert captured.err == "error: net.prototxt: line 3: layer 'conv1': bad second line\n"
    assert captured.out == ""


def test_an_os_error_names_the_file_without_errno_text(capsys) -> None:
    def body() -> int:
        raise FileNotFoundError(errno.ENOENT, "No such file or directory", "missing.caffemodel")

    assert cli.run(body) == 2
    assert capsys.readouterr().err == "error: missing.caffemodel: No such file or directory\n"


def test_a_worker_error_shows_the_workers_last_line(capsys) -> None:
    text = (
        "Caught ValueError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n"
        '  File "x.py", line 1\nValueError: image 2008_000002.jpg is truncated'
    )

    def body() -> int:
        raise RuntimeError(text)

    assert cli.run(body) == 2
    assert capsys.readouterr().err == "error: image 2008_000002.jpg is truncated\n"


def test_a_bug_keeps_its_traceback() -> None:
    def body() -> int:
        raise TypeError("a bug")

    with pytest.raises(TypeError, match="a bug"):
        cli.run(body)


def test_ctrl_c_exits_130_with_at_most_the_given_line(capsys) -> None:
    def body() -> int:
        raise KeyboardInterrupt

    assert cli.run(body) == 130
    assert capsys.readouterr().err == ""
    assert cli.run(body, interrupted="interrupted; resumes next time") == 130
    assert capsys.readouterr().err == "interrupted; resumes next time\n"


def test_help_and_argument_errors_return_their_status(capsys) -> None:
    parser = cli.Parser(prog="p")
    parser.add_argument("--n", type=int)
    assert cli.run(lambda: parser.parse_args(["--help"]) and 0) == 0
    assert "usage: p" in capsys.readouterr().out
    assert cli.run(lambda: parser.parse_args(["--n", "x"]) and 0) == 2
    assert capsys.readouterr().err == "error: argument --n: invalid int value: 'x' (see --help)\n"


def test_the_body_status_is_returned() -> None:
    assert cli.run(lambda: 1) == 1
    assert cli.run(lambda: None) == 0


def test_long_messages_are_bounded() -> None:
    assert len(cli.one_line(ValueError("x" * 5000))) == cli.MAX_MESSAGE


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on machines without CUDA")
def test_cuda_on_a_machine_without_it_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="CUDA is not available here"):
        cli.device("cuda")
    with pytest.raises(UsageError, match="CUDA is not available here"):
        cli.device("cuda:1")


@pytest.mark.parametrize("text", ["gpu", "cuda:x", "meta"])
def test_bad_device_names_are_usage_errors(text: str) -> None:
    with pytest.raises(UsageError, match="--device"):
        cli.device(text)


def test_device_defaults() -> None:
    assert cli.device(None, default="cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert cli.device(None).type == expected
    assert cli.device("cpu") == torch.device("cpu")


def test_torchs_cpu_allocator_failing_is_one_out_of_memory_line_not_a_traceback(capsys) -> None:
    """A forward pass whose workspace the machine cannot give (the params fuzz target met one: a
    grouped Deconvolution asking 6 GiB) ends as one line, like a CUDA out-of-memory does."""

    def body() -> int:
        raise RuntimeError(
            "[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: "
            "you tried to allocate 6442549248 bytes. Error code 12 (Cannot allocate memory)"
        )

    assert cli.run(body) == cli.EXIT_BAD_INPUT
    assert capsys.readouterr().err == "error: out of memory (an operation asked for 6.0 GiB)\n"
