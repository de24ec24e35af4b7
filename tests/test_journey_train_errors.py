"""What a user of ``fcn-port train`` / ``fcn-port solve`` sees when something is off (issue 19's
training items): one ``error:`` line naming the file and the value, exit 2, no traceback; runs that
say what they do (the start weights, the loss at ``--display``, a resume's changes, a divergence).

Runs are in-process, on a 3-image VOC-layout set of 64 x 64 pictures (tests/vocgen.py), at width
1/16 from ``--init random``: a few seconds each.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from vocgen import write_voc

from converters.caffe.text import parse_text
from converters.train import __main__ as solve
from reproduce.train import _Stop, main
from reproduce.training.log import read_log

pytestmark = pytest.mark.usefixtures("one_thread")

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "solvers"
IDS = [f"2000_{i:06d}" for i in range(3)]


def _voc(root: Path) -> Path:
    write_voc(root, IDS, size=(64, 64))
    (root / "VOC2011" / "ImageSets" / "Segmentation" / "train.txt").write_text("".join(i + "\n" for i in IDS))
    return root


@pytest.fixture
def voc(tmp_path: Path) -> Path:
    return _voc(tmp_path / "voc")


@pytest.fixture(scope="module")
def start(tmp_path_factory) -> str:
    """A caffemodel of fan-in Gaussian weights for the width-1/16 voc-fcn32s train net (made here, so
    that the tests need no ``--init random``, which they test separately)."""
    import converters
    from converters.fcn.nets import net_definition
    from converters.graph.builder import build_graph

    net = net_definition("voc-fcn32s", "train", width=0.0625)
    shapes = {"data": (1, 3, 64, 64), "label": (1, 1, 64, 64)}
    meta = build_graph(net, phase="TRAIN", with_loss=True, input_shapes=shapes, device="meta", strict=False)
    rng = np.random.default_rng(0)
    blobs = {}
    for layer, blob_shapes in meta.caffe.parameter_shapes.items():
        if layer.startswith("up"):
            continue
        blobs[layer] = [
            (rng.standard_normal(shape) * np.sqrt(2 / np.prod(shape[1:]))).astype(np.float32)
            if len(shape) > 1
            else np.zeros(shape, np.float32)
            for shape in blob_shapes
        ]
    path = tmp_path_factory.mktemp("start") / "fan-in.caffemodel"
    converters.write_weights(blobs, path)
    return str(path)


def _train(voc: Path, out: Path, *extra: str) -> list[str]:
    return [
        "voc-fcn32s", "--voc-root", str(voc), "--train-list", "train", "--val-split", "train",
        "--width", "0.0625", "--out", str(out), "--no-progress", *extra,
    ]  # fmt: skip


def _one_error(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("error: "), err
    assert "Traceback" not in err, err
    return lines[-1]


def _label_png(path: Path, label: np.ndarray) -> None:
    image = Image.fromarray(label.astype(np.uint8), mode="L").convert("P")
    image.save(path)


# ----------------------------------------------------------------------------------------------
# 1, 2: labels


def test_a_label_value_outside_the_classes_is_one_line_naming_the_label_file_and_the_value(
    voc: Path, start: str, tmp_path: Path, capsys
) -> None:
    path = voc / "VOC2011" / "SegmentationClass" / f"{IDS[1]}.png"
    label = np.array(Image.open(path))
    label[10:20, 10:20] = 30  # not 255: a value no class of the 21 has
    _label_png(path, label)
    out = tmp_path / "run"
    args = _train(voc, out, "--init", start, "--iterations", "6", "--score-every", "0")
    assert main(args) == 2
    line = _one_error(capsys)
    assert str(path) in line and "label value 30 is not a class of semantic (0..20) nor 255" in line
    assert not out.exists()  # a new run refused before its first snapshot leaves no folder


@pytest.mark.parametrize("score_every", ["0", "1"])
def test_a_label_of_another_size_than_its_picture_is_refused_naming_the_file_with_and_without_scoring(
    voc: Path, start: str, tmp_path: Path, capsys, score_every: str
) -> None:
    path = voc / "VOC2011" / "SegmentationClass" / f"{IDS[0]}.png"
    _label_png(path, np.zeros((64, 50), np.uint8))
    (voc / "VOC2011" / "ImageSets" / "Segmentation" / "train.txt").write_text(IDS[0] + "\n")
    assert main(_train(voc, tmp_path / "run", "--init", start, "--iterations", "1",
                       "--score-every", score_every)) == 2  # fmt: skip
    line = _one_error(capsys)
    assert str(path) in line and "differ in size (data 64x64, label 64x50)" in line


def test_an_out_path_that_is_a_file_is_one_line_saying_so(
    voc: Path, start: str, tmp_path: Path, capsys
) -> None:
    (tmp_path / "afile").write_text("mine")
    assert (
        main(_train(voc, tmp_path / "afile", "--init", start, "--iterations", "1", "--score-every", "0")) == 2
    )
    line = _one_error(capsys)
    assert line == f"error: --out {tmp_path / 'afile'}: is a file, not a folder: give a run folder"
    assert (tmp_path / "afile").read_text() == "mine"


# ----------------------------------------------------------------------------------------------
# 3: the start


def test_init_none_says_in_one_warning_line_that_every_weight_starts_at_zero(
    voc: Path, tmp_path: Path, capsys
) -> None:
    assert (
        main(_train(voc, tmp_path / "run", "--init", "none", "--iterations", "1", "--score-every", "0")) == 0
    )
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1
    assert (
        "starts at 0" in warnings[0] and "cannot learn" in warnings[0] and "docs/TRAINING.md" in warnings[0]
    )


def test_init_random_starts_offline_from_fan_in_weights_drawn_by_the_seed(voc: Path, tmp_path: Path) -> None:
    import converters

    for name, seed in (("a", "1"), ("b", "1"), ("c", "2")):
        args = _train(voc, tmp_path / name, "--init", "random", "--iterations", "1", "--score-every", "0",
                      "--base-lr", "0", "--seed", seed)  # fmt: skip
        assert main(args) == 0
    a, b, c = (converters.read_weights(tmp_path / n / "snapshots" / "train_iter_1.caffemodel") for n in "abc")
    weight = a["conv3_1"][0]
    fan_in = int(np.prod(weight.shape[1:]))
    assert weight.std() == pytest.approx(np.sqrt(2 / fan_in), rel=0.1) and not a["conv3_1"][1].any()
    assert np.array_equal(a["conv3_1"][0], b["conv3_1"][0]) and not np.array_equal(weight, c["conv3_1"][0])
    upscore = a["upscore"][0]
    assert upscore[0, 1].max() == 0 and upscore[0, 0].max() > 0  # bilinear on the diagonal, as ever


@pytest.mark.slow
def test_the_offline_first_run_of_docs_training_md_works_as_written(tmp_path: Path) -> None:
    """The commands of docs/TRAINING.md's "A first run, offline" block, run as written (with this
    checkout's Python) in an empty folder."""
    import subprocess
    import sys

    text = (Path(__file__).resolve().parent.parent / "docs" / "TRAINING.md").read_text()
    section = text.split("## A first run, offline", 1)[1]
    block = section.split("```sh\n", 1)[1].split("```", 1)[0].replace("\\\n", " ")
    repo = Path(__file__).resolve().parent.parent
    commands = [line.split("  #")[0] for line in block.splitlines() if line.strip()]
    assert len(commands) == 3 and "--init random" in commands[1] and "--resume" in commands[2]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(repo))
    for line in commands:
        line = line.replace("fcn-port ", f"{sys.executable} -m reproduce.cli ")
        line = line.replace("python tests/vocgen.py", f"{sys.executable} {repo / 'tests' / 'vocgen.py'}")
        done = subprocess.run(
            line, shell=True, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
        )
        assert done.returncode == 0, (line, done.stderr[-2000:])
    assert "resume: --iterations 30 (was 20)" in done.stderr
    records = read_log(tmp_path / "runs" / "first" / "log.jsonl")
    assert [r["iter"] for r in records if "val" in r] == [10, 20, 30]
    losses = [r["loss"] for r in records if "loss" in r]
    assert len(losses) == 6 and losses[-1] < losses[0] and max(losses[-3:]) < 1e4  # as the docs say
    assert (tmp_path / "runs" / "first" / "snapshots" / "train_iter_30.caffemodel").is_file()


# ----------------------------------------------------------------------------------------------
# 4: values


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--base-lr", "nan", "argument --base-lr: must be a number >= 0, got 'nan'"),
        ("--base-lr", "-1", "argument --base-lr: must be a number >= 0, got '-1'"),
        ("--base-lr", "inf", "argument --base-lr: must be a number >= 0, got 'inf'"),
        ("--momentum", "5", "argument --momentum: must be a number in [0, 1], got '5'"),
        ("--momentum", "nan", "argument --momentum: must be a number in [0, 1], got 'nan'"),
        ("--val-limit", "-1", "argument --val-limit: must be an integer in [1, 2147483647], got '-1'"),
        ("--val-limit", "0", "argument --val-limit: must be an integer in [1, 2147483647], got '0'"),
        ("--iterations", "-1", "argument --iterations: must be an integer in [0, 2147483647], got '-1'"),
        ("--score-every", "-2", "argument --score-every: must be an integer in [0, 2147483647], got '-2'"),
        (
            "--snapshot-every", "-2",
            "argument --snapshot-every: must be an integer in [0, 2147483647], got '-2'",
        ),
        ("--display", "-1", "argument --display: must be an integer in [0, 2147483647], got '-1'"),
        ("--iter-size", "0", "argument --iter-size: must be an integer in [1, 2147483647], got '0'"),
        ("--width", "0", "argument --width: must be a number in (0, 1], got '0'"),
        ("--width", "nan", "argument --width: must be a number in (0, 1], got 'nan'"),
        ("--seed", "-1", "argument --seed: must be an integer in [0, 4294967295], got '-1'"),
    ],
)
def test_every_numeric_option_of_train_refuses_a_value_out_of_its_range_in_one_line(
    option: str, value: str, message: str, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "run"
    assert main(["voc-fcn32s", "--out", str(out), option, value]) == 2
    assert _one_error(capsys) == f"error: {message} (see --help)"
    assert not out.exists()


@pytest.fixture
def hdf5_case(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "case"
    shutil.copytree(FIXTURES / "iter_size", folder)
    (folder / "snap").mkdir()
    monkeypatch.chdir(folder)
    return folder


def test_solve_refuses_zero_iterations_in_one_line_and_writes_nothing(hdf5_case: Path, capsys) -> None:
    assert solve.main(["solver.prototxt", "--weights", "init.caffemodel", "--iters", "0"]) == 2
    assert _one_error(capsys) == "error: argument --iters: must be an integer >= 1, got '0' (see --help)"
    assert not list((hdf5_case / "snap").iterdir())


def test_solve_writes_no_progress_frames_into_a_redirected_stderr(hdf5_case: Path) -> None:
    import subprocess
    import sys

    repo = Path(__file__).resolve().parent.parent
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(repo))
    command = [sys.executable, "-m", "converters.train", "solver.prototxt", "--weights", "init.caffemodel",
               "--iters", "3"]  # fmt: skip
    done = subprocess.run(command, cwd=hdf5_case, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "\r" not in done.stderr and "it/s" not in done.stderr
    assert done.stdout.strip().splitlines()[-1].startswith("iteration 3, loss ")


def test_a_second_ctrl_c_aborts_solve_at_once_with_one_line(
    hdf5_case: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    import converters

    original = converters.Solver.step

    def step_then_two_ctrl_c(self: converters.Solver, feeds: object, iters: int = 1) -> float:
        if self.iter == 2:
            signal.raise_signal(signal.SIGINT)
            signal.raise_signal(signal.SIGINT)
        return original(self, feeds, iters)

    monkeypatch.setattr(converters.Solver, "step", step_then_two_ctrl_c)
    assert (
        solve.main(["solver.prototxt", "--weights", "init.caffemodel", "--iters", "10", "--no-progress"])
        == 130
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == "aborted at the second Ctrl-C: no snapshot of the iteration under way"
    assert not list((hdf5_case / "snap").iterdir())
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_diverging_solve_stops_in_one_line_naming_the_iteration_and_keeps_the_last_good_snapshot(
    hdf5_case: Path, capsys
) -> None:
    text = (hdf5_case / "solver.prototxt").read_text()
    param = parse_text(text, "SolverParameter")
    param.set("base_lr", 1e30)
    param.set("snapshot", 1)
    from converters.caffe.text import format_message

    (hdf5_case / "solver.prototxt").write_text(format_message(param))
    assert (
        solve.main(["solver.prototxt", "--weights", "init.caffemodel", "--iters", "10", "--no-progress"]) == 2
    )
    line = _one_error(capsys)
    stopped = int(line.split("iteration ", 1)[1].split(":")[0])
    assert "training diverged" in line and "--keep-going-on-nan" in line
    written = sorted(int(p.stem.split("_")[-1]) for p in (hdf5_case / "snap").glob("*.solverstate"))
    assert written == list(range(1, stopped)) and f"train_iter_{stopped - 1}.solverstate" in line
    assert solve.main(["solver.prototxt", "--weights", "init.caffemodel", "--iters", "4", "--no-progress",
                       "--keep-going-on-nan"]) == 0  # fmt: skip


def test_a_diverging_run_stops_in_one_line_keeps_its_last_good_snapshot_and_its_log_stays_json(
    voc: Path, start: str, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "run"
    args = _train(voc, out, "--init", start, "--iterations", "8", "--score-every", "0", "--base-lr", "1",
                  "--display", "1", "--snapshot-every", "1")  # fmt: skip
    assert main(args) == 2
    line = _one_error(capsys)
    stopped = int(line.split("iteration ", 1)[1].split(":")[0])
    assert "training diverged" in line and "--keep-going-on-nan" in line
    snapshots = sorted(int(p.stem.split("_")[-1]) for p in (out / "snapshots").glob("*.solverstate"))
    assert snapshots == list(range(1, stopped))
    for raw in (out / "log.jsonl").read_text().splitlines():
        json.loads(raw, parse_constant=lambda token: pytest.fail(f"{token} in log.jsonl"))
    assert read_log(out / "log.jsonl")[-1] == {**read_log(out / "log.jsonl")[-1], "iter": stopped}
    keep = tmp_path / "keep"
    args = _train(voc, keep, "--init", start, "--iterations", "8", "--score-every", "0", "--base-lr", "1",
                  "--display", "1", "--keep-going-on-nan")  # fmt: skip
    assert main(args) == 0
    for raw in (keep / "log.jsonl").read_text().splitlines():
        json.loads(raw, parse_constant=lambda token: pytest.fail(f"{token} in log.jsonl"))
    assert any(r["loss"] is None for r in read_log(keep / "log.jsonl"))


# ----------------------------------------------------------------------------------------------
# 5, 6: resume, solver.prototxt


def test_options_given_with_resume_that_change_the_net_or_the_optimisation_are_refused_in_one_line(
    voc: Path, start: str, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "run"
    assert main(_train(voc, out, "--init", start, "--iterations", "2", "--score-every", "0")) == 0
    capsys.readouterr()
    cases = (("--width", "0.125", "0.125", "0.0625"), ("--base-lr", "1e-5", "1e-05", "1e-10"),
             ("--init", "none", "none", start))  # fmt: skip
    for option, value, shown, stored in cases:
        assert main(["voc-fcn32s", "--resume", "--out", str(out), "--iterations", "4", option, value]) == 2
        line = _one_error(capsys)
        assert f"--resume: {option} {shown} differs from the run's {stored}" in line
    resume = ["voc-fcn32s", "--resume", "--out", str(out), "--iterations", "3", "--width", "0.0625"]
    assert main([*resume, "--download", "--score-initial", "--val-limit", "1", "--score-every", "5"]) == 0
    err = capsys.readouterr().err
    assert (
        "resume: --val-limit 1 (was none); --iterations 3 (was 2); --score-every 5 (was 0); --score-initial "
        "scores the resumed weights first; --download not used (the run continues from its snapshot)"
    ) in err
    assert [r["iter"] for r in read_log(out / "log.jsonl") if "val" in r] == [2, 3]


def test_a_resume_whose_iterations_are_reached_says_the_run_is_complete(
    voc: Path, start: str, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "run"
    assert main(_train(voc, out, "--init", start, "--iterations", "3", "--score-every", "0")) == 0
    capsys.readouterr()
    assert main(["voc-fcn32s", "--resume", "--out", str(out)]) == 0
    assert main(["voc-fcn32s", "--resume", "--out", str(out), "--iterations", "2"]) == 0
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2 and all("already complete" in line and "iteration 3" in line for line in lines)


def test_the_run_folders_solver_prototxt_holds_the_runs_own_settings(
    voc: Path, start: str, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    args = _train(voc, out, "--init", start, "--iterations", "2", "--score-every", "2",
                  "--base-lr", "1e-9", "--momentum", "0.9", "--display", "1", "--snapshot-every", "5",
                  "--val-limit", "2")  # fmt: skip
    assert main(args) == 0
    param = parse_text((out / "solver.prototxt").read_text(), "SolverParameter")
    assert param.getall("test_iter") == [2] and param.get("test_interval") == 2
    assert param.get("max_iter") == 2 and param.get("snapshot") == 5 and param.get("display") == 1
    assert param.get("base_lr") == pytest.approx(1e-9) and param.get("momentum") == pytest.approx(0.9)
    assert param.get("snapshot_prefix") == "snapshots/train"
    assert param.get("train_net") == "train.prototxt" and param.getall("test_net") == ["val.prototxt"]


# ----------------------------------------------------------------------------------------------
# 7, 8, 18: what the console shows


def test_without_progress_the_loss_reaches_the_console_and_a_run_shorter_than_display_logs_its_last_loss(
    voc: Path, start: str, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "run"
    assert (
        main(_train(voc, out, "--init", start, "--iterations", "3", "--score-every", "0")) == 0
    )  # display 20
    err = capsys.readouterr().err
    assert "iteration 3: loss " in err and "scoring 0 every" not in err and "no scoring" in err
    assert [r["iter"] for r in read_log(out / "log.jsonl") if "loss" in r] == [3]
    plot = np.asarray(Image.open(out / "plot.png").convert("RGB"))
    loss_panel = plot[24:280]
    assert (loss_panel == (31, 119, 180)).all(axis=-1).any()  # the loss point is drawn, not "nothing yet"


def test_a_second_ctrl_c_aborts_with_one_line(capsys) -> None:
    stop = _Stop()
    stop._handler(signal.SIGINT, None)
    with pytest.raises(KeyboardInterrupt):
        stop._handler(signal.SIGINT, None)
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1].startswith("aborted at the second Ctrl-C: no snapshot")


# ----------------------------------------------------------------------------------------------
# issue 21: special files and huge pictures in train's data


def test_a_fifo_as_split_list_or_picture_is_refused_before_it_is_opened(
    voc: Path, start: str, tmp_path: Path, capsys
) -> None:
    lists = voc / "VOC2011" / "ImageSets" / "Segmentation"
    (lists / "train.txt").unlink()
    os.mkfifo(lists / "train.txt")
    assert main(_train(voc, tmp_path / "a", "--init", start, "--iterations", "1", "--score-every", "0")) == 2
    assert "train.txt: is a FIFO, not a file" in _one_error(capsys)
    (lists / "train.txt").unlink()
    (lists / "train.txt").write_text(IDS[0] + "\n")
    picture = voc / "VOC2011" / "JPEGImages" / f"{IDS[0]}.jpg"
    picture.unlink()
    os.mkfifo(picture)
    assert main(_train(voc, tmp_path / "b", "--init", start, "--iterations", "1", "--score-every", "0")) == 2
    assert _one_error(capsys) == f"error: {picture}: is a FIFO, not a file: give the path of a file"


def test_a_picture_too_large_for_memory_is_refused_from_its_header_before_decoding(
    voc: Path, start: str, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    from converters.graph import builder

    picture = voc / "VOC2011" / "JPEGImages" / f"{IDS[0]}.jpg"
    Image.new("RGB", (9000, 9000)).save(picture, quality=10)
    label = voc / "VOC2011" / "SegmentationClass" / f"{IDS[0]}.png"
    _label_png(label, np.zeros((9000, 9000), np.uint8))
    (voc / "VOC2011" / "ImageSets" / "Segmentation" / "train.txt").write_text(IDS[0] + "\n")
    monkeypatch.setattr(builder, "memory_limit", lambda device=None: 2**30)  # a 1 GiB machine
    assert (
        main(_train(voc, tmp_path / "run", "--init", start, "--iterations", "1", "--score-every", "0")) == 2
    )
    line = _one_error(capsys)
    assert "(9000 x 9000) needs 2.7 GiB to read, more than the 1.0 GiB" in line


def test_a_picture_the_net_cannot_train_on_in_memory_is_refused_from_its_header_before_it_is_read(
    voc: Path, start: str, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    from converters.graph import builder

    picture = voc / "VOC2011" / "JPEGImages" / f"{IDS[0]}.jpg"
    Image.new("RGB", (2000, 2000)).save(picture, quality=10)  # 48 MB of pixels: decodes in 0.5 GiB
    _label_png(voc / "VOC2011" / "SegmentationClass" / f"{IDS[0]}.png", np.zeros((2000, 2000), np.uint8))
    (voc / "VOC2011" / "ImageSets" / "Segmentation" / "train.txt").write_text(IDS[0] + "\n")
    monkeypatch.setattr(builder, "memory_limit", lambda device=None: 2**29)  # a 0.5 GiB machine
    args = _train(voc, tmp_path / "run", "--init", start, "--iterations", "1", "--score-every", "0")
    assert main(args) == 2
    line = _one_error(capsys)
    assert (
        "(2000 x 2000) needs about" in line
        and "GiB to train on, more than the 0.5 GiB of memory of cpu" in line
    )
    assert not (tmp_path / "run").exists()


def test_the_command_solve_prints_after_ctrl_c_continues_the_run_alone_to_the_iterations_asked_for(
    hdf5_case: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    import shlex

    import converters

    original = converters.Solver.step

    def step_then_ctrl_c(self: converters.Solver, feeds: object, iters: int = 1) -> float:
        loss = original(self, feeds, iters)
        if self.iter == 3:
            signal.raise_signal(signal.SIGINT)
        return loss

    monkeypatch.setattr(converters.Solver, "step", step_then_ctrl_c)
    assert (
        solve.main(["solver.prototxt", "--weights", "init.caffemodel", "--iters", "5", "--no-progress"])
        == 130
    )
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line == (
        "interrupted at iteration 3: continue with: fcn-port solve solver.prototxt --snapshot "
        "snap/train_iter_3.solverstate --iters 2"
    )
    monkeypatch.setattr(converters.Solver, "step", original)
    words = shlex.split(line.split("continue with: ", 1)[1])
    assert words[:2] == ["fcn-port", "solve"]
    assert solve.main(words[2:]) == 0
    assert sorted(p.name for p in (hdf5_case / "snap").glob("*.solverstate")) == [
        "train_iter_3.solverstate", "train_iter_5.solverstate",
    ]  # fmt: skip


def test_init_of_a_registry_net_missing_from_the_cache_asks_on_a_terminal_as_every_command_does(
    voc: Path, tmp_path: Path, capsys, monkeypatch
) -> None:
    """The one download rule: on a terminal ``--init vgg16`` asks before fetching 528 MB; a "no" is
    one error line naming --download, and nothing is fetched."""
    import io

    from weights import api

    monkeypatch.setattr(api, "_interactive", lambda: True)
    monkeypatch.setattr("sys.stdin", io.StringIO("n\n"))
    monkeypatch.setattr(api, "fetch", lambda *a, **k: pytest.fail("fetched without a yes"))
    argv = [*_train(voc, tmp_path / "run"), "--init", "vgg16", "--cache-dir", str(tmp_path / "cache")]
    assert main([*argv, "--iterations", "1"]) == 2
    err = capsys.readouterr().err
    assert "Download vgg16 weights" in err and "[y/N]" in err
    assert err.count("error: ") == 1
    assert "error: --init vgg16: VGG_ILSVRC_16_layers.caffemodel is not in the weights cache" in err
    assert "add --download" in err


@pytest.mark.parametrize("option", ["--iter-size", "--iterations", "--display", "--score-every"])
def test_counts_past_caffes_int32_solver_fields_are_refused_in_one_line(option: str, capsys) -> None:
    """They go into solver.prototxt's int32 fields; a run.json holding one (the runjson fuzz target
    gave iter_size 2^31) is refused by the same check."""
    assert main(["voc-fcn32s", option, str(2**31)]) == 2
    line = _one_error(capsys)
    assert f"{option}: must be an integer in [" in line and ", 2147483647], got '2147483648'" in line
