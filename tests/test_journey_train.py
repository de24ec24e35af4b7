"""The training journey as a user walks it, in real processes: train a few iterations, press Ctrl-C,
resume with exactly the command the run printed, and let it score; then the same with ``torchrun``
and two processes. Each step asserts what the user sees: the exit status, the lines, the files left.

Tiny data the test makes (3 pictures of 64 x 64, tests/vocgen.py), a net at 1/16 width from
``--init random``: offline, a few seconds of training per step.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from vocgen import write_voc

from reproduce.training.log import read_log

REPO = Path(__file__).resolve().parent.parent
IDS = [f"2000_{i:06d}" for i in range(3)]


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """A user's folder: data/ in VOC's layout with a train list (the run goes to runs/ there)."""
    write_voc(tmp_path / "data", IDS, size=(64, 64))
    lists = tmp_path / "data" / "VOC2011" / "ImageSets" / "Segmentation"
    (lists / "train.txt").write_text("".join(i + "\n" for i in IDS))
    return tmp_path


TRAIN = [
    "voc-fcn32s", "--voc-root", "data", "--train-list", "train", "--val-split", "train", "--init", "random",
    "--width", "0.0625", "--base-lr", "1e-9", "--iterations", "20", "--score-every", "10", "--display", "1",
    "--out", "runs/first",
]  # fmt: skip


def _interrupt(
    command: list[str], cwd: Path, log: Path, *, group: bool = False
) -> subprocess.CompletedProcess:
    """Start ``command``, press Ctrl-C once two iterations are logged (as a terminal does: to the
    whole process group with ``group``), and wait for it to end."""
    process = subprocess.Popen(
        command, cwd=cwd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=group,
    )  # fmt: skip
    deadline = time.time() + 240
    while time.time() < deadline and process.poll() is None and len(read_log(log)) < 2:
        time.sleep(0.05)
    assert process.poll() is None, process.communicate()[1][-3000:]
    if group:
        os.killpg(process.pid, signal.SIGINT)
    else:
        process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=240)
    return subprocess.CompletedProcess(command, process.returncode, out, err)


def _hint(stderr: str) -> list[str]:
    """The command the interrupted run printed, as the user would paste it."""
    lines = [line for line in stderr.splitlines() if "resume with: " in line]
    assert len(lines) == 1, stderr[-3000:]
    words = shlex.split(lines[0].split("resume with: ", 1)[1])
    if words[0] == "fcn-port":
        return [sys.executable, "-m", "reproduce.cli", *words[1:]]
    assert words[0] == "torchrun", words
    return [sys.executable, "-m", "torch.distributed.run", *words[1:]]


def _check_finished(workspace: Path, done: subprocess.CompletedProcess, stopped: int) -> None:
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr and "\r" not in done.stderr  # no progress frames in a pipe
    assert f"resuming from runs/first/snapshots/train_iter_{stopped}.solverstate" in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("done: iteration 20;")
    run = workspace / "runs" / "first"
    records = read_log(run / "log.jsonl")
    assert [r["iter"] for r in records if "loss" in r] == list(range(1, 21))  # each iteration once
    assert [r["iter"] for r in records if "val" in r] == [10, 20]
    assert (run / "plot.png").is_file() and (run / "snapshots" / "train_iter_20.caffemodel").is_file()
    assert sorted(p.name for p in run.iterdir()) == [
        "log.jsonl", "plot.png", "run.json", "snapshots", "solver.prototxt", "train.prototxt", "val.prototxt",
    ]  # fmt: skip


@pytest.mark.slow
def test_ctrl_c_then_the_printed_resume_command_alone_finishes_and_scores_the_run(workspace: Path) -> None:
    command = [sys.executable, "-m", "reproduce.cli", "train", *TRAIN]
    stopped_run = _interrupt(command, workspace, workspace / "runs" / "first" / "log.jsonl")
    err = stopped_run.stderr
    assert stopped_run.returncode == 130, err[-3000:]
    assert "Traceback" not in err and "\r" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("interrupted at iteration ") and last.endswith(
        "resume with: fcn-port train voc-fcn32s --resume --out runs/first"
    )
    stopped = int(last.split("interrupted at iteration ", 1)[1].split(":")[0])
    assert 2 <= stopped < 20
    snapshots = workspace / "runs" / "first" / "snapshots"
    assert sorted(p.name for p in snapshots.iterdir()) == [
        f"train_iter_{stopped}.caffemodel", f"train_iter_{stopped}.solverstate",
    ]  # fmt: skip

    resumed = subprocess.run(
        _hint(err), cwd=workspace, env=_env(), capture_output=True, text=True, timeout=240
    )
    _check_finished(workspace, resumed, stopped)


@pytest.mark.slow
def test_the_same_journey_under_torchrun_with_two_processes(workspace: Path) -> None:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "reproduce.train", *TRAIN]  # fmt: skip
    refused = subprocess.run(
        [*command[:8], "voc-fcn32s", "--resume", "--out", "runs/none"],
        cwd=workspace, env=_env(), capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    errors = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: --resume: runs/none holds no run (no run.json); start it without --resume"], (
        refused.stderr
    )

    stopped_run = _interrupt(command, workspace, workspace / "runs" / "first" / "log.jsonl", group=True)
    err = stopped_run.stderr
    # the workers write their snapshot and the line; torchrun itself then reports its own SIGINT
    assert stopped_run.returncode != 0
    assert "broadcast_buffers" not in err and "FutureWarning" not in err
    assert err.count("interrupted at iteration ") == 1 and err.count("stopping after this iteration") == 1
    hint = next(line for line in err.splitlines() if "resume with: " in line)
    assert hint.endswith(
        "resume with: torchrun --standalone --nproc_per_node 2 -m reproduce.train voc-fcn32s --resume --out "
        "runs/first"
    )
    stopped = int(hint.split("interrupted at iteration ", 1)[1].split(":")[0])
    assert (workspace / "runs" / "first" / "snapshots" / f"train_iter_{stopped}.solverstate").is_file()

    alone = subprocess.run(
        [sys.executable, "-m", "reproduce.cli", "train", "voc-fcn32s", "--resume", "--out", "runs/first"],
        cwd=workspace, env=_env(), capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert alone.returncode == 2 and alone.stderr.count("\n") == 1
    assert "trained with 2 process(es), this is 1" in alone.stderr and "torchrun" in alone.stderr

    resumed = subprocess.run(
        _hint(err), cwd=workspace, env=_env(), capture_output=True, text=True, timeout=300
    )
    assert "broadcast_buffers" not in resumed.stderr
    _check_finished(workspace, resumed, stopped)


@pytest.mark.slow
def test_under_torchrun_a_setting_error_is_said_even_when_the_first_process_is_the_slowest(
    tmp_path: Path,
) -> None:
    # torchrun stops every process once one fails; the first process says the error, so the
    # others must not fail before it has (the run this guards against printed nothing)
    (tmp_path / "slow_first.py").write_text(
        "import os, sys, time\n"
        "if os.environ['RANK'] == '0':\n"
        "    time.sleep(4)\n"
        "from reproduce.train import main\n"
        "sys.exit(main())\n"
    )
    env = _env()
    env["PYTHONPATH"] = str(tmp_path) + os.pathsep + env["PYTHONPATH"]
    refused = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "slow_first", "voc-fcn32s", "--resume", "--out", "runs/none"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    errors = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
    assert refused.returncode != 0
    assert errors == ["error: --resume: runs/none holds no run (no run.json); start it without --resume"], (
        refused.stderr
    )
