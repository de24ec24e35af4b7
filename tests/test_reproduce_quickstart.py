"""The README's main job: the offline tour on the Caffe-made tiny model installed with the package."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from reproduce.quickstart import DEFAULT_MODEL
from tests.conftest import FIXTURES, REPO
from tests.test_wheel import installed  # noqa: F401 - the fixture: the wheel in a fresh virtualenv


def test_quickstart_agrees_with_caffe(tmp_path) -> None:
    keep = tmp_path / "tiny.safetensors"
    done = subprocess.run(
        [sys.executable, "-m", "reproduce.quickstart", "--keep", str(keep)],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "all steps agree with Caffe" in done.stdout
    assert done.stdout.count(" OK") == 4 and "DIFFERS" not in done.stdout
    assert keep.stat().st_size > 0 and f"wrote {keep} (" in done.stdout


def test_quickstart_prints_no_path_of_a_file_that_is_gone_when_it_exits(tmp_path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "reproduce.quickstart"], capture_output=True, text=True, cwd=tmp_path
    )
    assert done.returncode == 0, done.stdout + done.stderr
    for path in re.findall(r"(/\S+\.safetensors)", done.stdout):
        assert Path(path).exists(), f"the quickstart names {path}, which is gone"
    assert "--keep FILE keeps the file" in done.stdout


def test_quickstart_on_a_folder_without_a_model_is_a_one_line_error(tmp_path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "reproduce.quickstart", "--model-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert done.returncode == 2 and done.stderr.startswith("error: ") and done.stderr.count("\n") == 1


def test_the_bundled_model_is_the_package_s_copy_of_the_caffe_made_fixture() -> None:
    assert DEFAULT_MODEL.is_relative_to(REPO / "reproduce")
    fixture = FIXTURES / "tiny_fcn"
    names = sorted(p.name for p in fixture.iterdir())
    assert names == sorted(p.name for p in DEFAULT_MODEL.iterdir())
    for name in names:
        assert (DEFAULT_MODEL / name).read_bytes() == (fixture / name).read_bytes(), name


@pytest.mark.slow
def test_the_quickstart_runs_from_an_installed_wheel_outside_the_source_tree(installed) -> None:  # noqa: F811
    _, python, work = installed
    done = subprocess.run([str(python), "-m", "reproduce.quickstart"], capture_output=True, text=True,
                          cwd=work, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "all steps agree with Caffe" in done.stdout
    assert str(REPO) not in done.stdout  # the installed copy of the model, not the checkout's
