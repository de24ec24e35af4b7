"""The first hour of a new user: ``pip install .`` from a clone into a fresh virtualenv, then every
console command from a folder outside the clone, as they would type it: ``fcn-port --help``, each
command's ``--help``, each command's happy path where it needs no download or dataset (convert a
small net, inspect it, list the weights, time it, segment a picture, score saved predictions), and
one bad input each, which must be exit 2 and one ``error:`` line.

Offline and quick: the fresh virtualenv borrows this environment's torch, numpy and the rest through
a ``.pth`` file (as ``tests/test_wheel.py`` does) and the package goes in with ``--no-deps
--no-build-isolation``; the commands run a few at a time."""

from __future__ import annotations

import concurrent.futures
import os
import shutil
import site
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import FIXTURES, REPO

pytestmark = pytest.mark.slow  # ~25 command starts, most importing torch: 30-40 s on 2 cores

TOP_LEVEL = ("converters", "weights", "eval", "reproduce")
# eval's other datasets share eval voc's parser (their --help: tests/test_cli_paths.py, in process)
HELPS = ["convert", "inspect", "weights", "timing", "segment", "demo", "train", "solve", "eval voc"]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update(PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1", PYTHONWARNINGS="")
    return env


def _run(command: list[str], cwd: Path, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout)


def _ok(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, f"{' '.join(result.args)}\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def user(tmp_path_factory) -> tuple[Path, Path]:
    """(the installed ``fcn-port`` script, the user's working folder outside the clone)."""
    root = tmp_path_factory.mktemp("journey")
    clone, venv, work = root / "clone", root / "venv", root / "work"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "*.part", "build")
    for name in TOP_LEVEL:
        shutil.copytree(REPO / name, clone / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md", "NOTICE"):
        if (REPO / name).exists():
            shutil.copy2(REPO / name, clone / name)
    work.mkdir()
    _ok(_run([sys.executable, "-m", "venv", "--without-pip", str(venv)], root))
    python = venv / "bin" / "python"
    purelib = Path(_ok(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                            work)).stdout.strip())
    borrowed = dict.fromkeys([sysconfig.get_paths()["purelib"], *site.getsitepackages()])
    (purelib / "_fcn_port_journey_dependencies.pth").write_text("\n".join(borrowed) + "\n")
    _ok(_run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
              "--no-build-isolation", "--no-index", "-q", "."], clone, timeout=300))  # pip install .
    for name in ("deploy.prototxt", "tiny_fcn.caffemodel"):
        shutil.copy(FIXTURES / "tiny_fcn" / name, work / name)
    (work / "adir").mkdir()
    (work / "afile").write_text("a file, not a folder")
    return venv / "bin" / "fcn-port", work


@pytest.fixture(scope="module")
def seen(user) -> dict[str, subprocess.CompletedProcess]:
    """Every command the journey types, run once: name -> what the user saw."""
    script, work = user
    convert = ["convert", "deploy.prototxt", "tiny_fcn.caffemodel", "-o", "tiny.safetensors"]
    converted = _run([str(script), *convert], work)
    rgb = np.random.default_rng(0).integers(0, 256, size=(40, 52, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(work / "photo.png")
    voc = work / "voc" / "VOC2011"
    for folder in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation", "../../predictions"):
        (voc / folder).mkdir(parents=True, exist_ok=True)
    labels = np.zeros((30, 40), dtype=np.uint8)
    labels[5:20, 10:30] = 15  # person
    for image_id in ("2011_000001", "2011_000002"):
        Image.fromarray(rgb[:30, :40]).save(voc / "JPEGImages" / f"{image_id}.jpg")
        Image.fromarray(labels).save(voc / "SegmentationClass" / f"{image_id}.png")
        Image.fromarray(labels).save(work / "predictions" / f"{image_id}.png")
    (voc / "ImageSets" / "Segmentation" / "val.txt").write_text("2011_000001\n2011_000002\n")
    commands = {
        "fcn-port --help": ["--help"],
        **{f"{words} --help": [*words.split(), "--help"] for words in HELPS},
        "inspect happy": ["inspect", "deploy.prototxt"],
        "weights happy": ["weights", "list"],
        "timing happy": ["timing", "--model", "deploy.prototxt", "--weights", "tiny_fcn.caffemodel",
                         "--size", "37x41", "--no-progress"],
        "segment happy": ["segment", "--model", "tiny.safetensors", "photo.png", "-o", "out",
                          "--no-progress"],
        "eval happy": ["eval", "voc", "--predictions", "predictions", "--voc-root", "voc",
                       "--split", "val2011", "--workers", "0", "--no-progress"],
        "convert bad": ["convert", "deploy.prototxt", "adir"],
        "inspect bad": ["inspect", "tiny.safetensors"],
        "weights bad": ["weights", "show", "no-such-model"],
        "eval bad": ["eval", "voc", "--predictions", "predictions", "--voc-root", "afile"],
        "timing bad": ["timing", "--warmup", "-1"],
        "segment bad": ["segment", "--model", "tiny.safetensors", "nope.jpg", "-o", "out2"],
        "demo bad": ["demo", "--no-such-option"],
        "train bad": ["train", "--no-such-option"],
        "solve bad": ["solve", "nope.prototxt"],
    }  # fmt: skip
    with concurrent.futures.ThreadPoolExecutor(max_workers=3) as pool:
        futures = {name: pool.submit(_run, [str(script), *argv], work) for name, argv in commands.items()}
        done = {name: future.result() for name, future in futures.items()}
    return {"convert happy": converted, **done}


def test_pip_install_dot_gives_a_working_fcn_port_that_lists_every_command(seen) -> None:
    listing = _ok(seen["fcn-port --help"]).stdout
    for command in ("convert", "inspect", "weights", "eval", "timing", "segment", "demo", "train", "solve"):
        assert f"\n  {command} " in listing, command


@pytest.mark.parametrize("words", HELPS)
def test_each_command_has_help_that_shows_how_it_was_typed(seen, words: str) -> None:
    out = _ok(seen[f"{words} --help"]).stdout
    assert out.startswith(f"usage: fcn-port {words} [-h]"), out.splitlines()[0]


def test_convert_then_inspect_then_segment_a_small_net_as_a_user_does(user, seen) -> None:
    _, work = user
    converted = _ok(seen["convert happy"])
    assert "self-check: passed" in converted.stdout and converted.stderr == ""
    assert converted.stdout.splitlines()[-1].startswith("wrote tiny.safetensors (safetensors, ")
    assert "Input" in _ok(seen["inspect happy"]).stdout
    assert "voc-fcn8s" in _ok(seen["weights happy"]).stdout
    assert "plain" in _ok(seen["timing happy"]).stdout or "fp32" in seen["timing happy"].stdout
    _ok(seen["segment happy"])
    assert (work / "out" / "photo.png").is_file() and (work / "out" / "photo.overlay.png").is_file()
    scored = _ok(seen["eval happy"]).stdout
    assert "2 images" in scored and "100.0" in scored


BAD = {
    "convert bad": "error: adir is a folder, not a file: give the .caffemodel or .caffemodel.h5 file",
    "inspect bad": "error: tiny.safetensors is a model fcn-port converted (safetensors, its net inside), "
    "not a Caffe file: use it as a model",
    "weights bad": "error: ",
    "eval bad": "error: VOC root afile is a file, not a folder (expected a VOC2011 folder or VOCdevkit)",
    "timing bad": "error: --warmup must be >= 0, got -1",
    "segment bad": "error: ",
    "demo bad": "error: ",
    "train bad": "error: ",
    "solve bad": "error: ",
}


@pytest.mark.parametrize(("name", "line"), BAD.items(), ids=list(BAD))
def test_each_command_answers_a_bad_input_with_exit_2_and_one_error_line(
    user, seen, name: str, line: str
) -> None:
    _, work = user
    result = seen[name]
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert result.stderr.startswith(line) and result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert not (work / "out2").exists()
