"""The README's main job: the offline tour on the bundled Caffe-made model."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import FIXTURES, REPO


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
    assert keep.stat().st_size > 0


def test_quickstart_on_a_folder_without_a_model_is_a_one_line_error(tmp_path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "reproduce.quickstart", "--model-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert done.returncode == 2 and done.stderr.startswith("error: ") and done.stderr.count("\n") == 1


def test_the_bundled_model_is_in_the_repository() -> None:
    assert (FIXTURES / "tiny_fcn" / "tiny_fcn.caffemodel").is_file()
