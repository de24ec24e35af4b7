"""A user's journey: segment a folder of photos, one of them broken, with the tiny Caffe-made model
installed with the package (``reproduce/data/tiny_fcn``), through the ``fcn-port`` command as a
user types it. What the user sees is asserted: the exit code, one ``error:`` line per broken file
naming it and nothing else on stderr, the good photos' files written whole, nothing partial left,
and no output folder at all when nothing could be written. The photos are made here."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from reproduce.quickstart import DEFAULT_MODEL

REPO = Path(__file__).resolve().parent.parent
MODEL = [str(DEFAULT_MODEL / "deploy.prototxt"), str(DEFAULT_MODEL / "tiny_fcn.caffemodel")]


def _photo(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, size=(6, 7, 3), dtype=np.uint8)
    return np.kron(blocks, np.ones((8, 8, 1), dtype=np.uint8))[:37, :41]  # the size io.npz was made at


def _encoded(picture: np.ndarray, fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, format=fmt)
    return buffer.getvalue()


def _fcn_port(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "reproduce.cli", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=300, stdin=subprocess.DEVNULL)


def test_a_folder_with_broken_photos_gets_one_line_per_broken_one_and_the_good_ones_written(tmp_path) -> None:
    photos = tmp_path / "holiday"
    (photos / "day2").mkdir(parents=True)
    Image.fromarray(_photo(1)).save(photos / "beach.jpg")
    jpeg = _encoded(_photo(2), "JPEG")
    (photos / "cut.jpg").write_bytes(jpeg[: len(jpeg) // 2])  # the copy stopped half-way
    png = _encoded(_photo(3), "PNG")
    (photos / "day2" / "cut.png").write_bytes(png[: len(png) * 2 // 3])
    Image.fromarray(_photo(4)).save(photos / "day2" / "hill.png")
    (photos / "day2" / "empty.jpg").write_bytes(b"")  # not even a header
    out = tmp_path / "out"

    done = _fcn_port("segment", "--model", *MODEL, str(photos), "-o", str(out))

    assert done.returncode == 2, done.stderr
    lines = done.stderr.splitlines()
    broken = [photos / "cut.jpg", photos / "day2" / "cut.png", photos / "day2" / "empty.jpg"]
    assert len(lines) == len(broken) and all(line.startswith("error: ") for line in lines), done.stderr
    for path in broken:
        assert sum(line.startswith(f"error: {path}: ") for line in lines) == 1, (path, done.stderr)
    assert "Traceback" not in done.stderr
    assert "segmented 2 of 5 image(s)" in done.stdout and "4 files in" in done.stdout
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert written == ["beach.overlay.png", "beach.png", "day2/hill.overlay.png", "day2/hill.png"]
    for name in ("beach.png", "day2/hill.png"):
        with Image.open(out / name) as labels:
            labels.load()  # whole files
            assert labels.mode == "P" and labels.size == (41, 37)

    one_at_a_time = tmp_path / "one"
    again = _fcn_port("segment", "--model", *MODEL, str(photos), "-o", str(one_at_a_time), "--batch-size=1")
    assert again.returncode == 2 and again.stderr == done.stderr
    for name in ("beach.png", "day2/hill.png"):
        assert (one_at_a_time / name).read_bytes() == (out / name).read_bytes()

    nothing = tmp_path / "nothing"
    (nothing / "photos").mkdir(parents=True)
    (nothing / "photos" / "cut.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    last = _fcn_port("segment", "--model", *MODEL, str(nothing / "photos"), "-o", str(nothing / "out"))
    assert last.returncode == 2 and last.stderr.count("\n") == 1 and "cut.jpg" in last.stderr
    assert sorted(p.name for p in nothing.iterdir()) == ["photos"]  # no empty output folder
