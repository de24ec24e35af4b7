"""Damaged pictures and labels in a dataset (the ``vocdata`` fuzz target found them ending in PIL's
bare ``image file is truncated``): one :class:`DatasetError` naming the file, whichever reader
(evaluation, ``fcn-port train``) meets it."""

from __future__ import annotations

from pathlib import Path

import pytest
from vocgen import write_voc

from eval.datasets import DatasetError, VOCSegmentation

IDS = ["2000_000000", "2000_000001"]


@pytest.fixture
def voc(tmp_path: Path) -> Path:
    write_voc(tmp_path, IDS, size=(24, 16))
    return tmp_path


def _cut(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize("folder, suffix", [("JPEGImages", ".jpg"), ("SegmentationClass", ".png")])
def test_a_truncated_picture_or_label_is_one_dataset_error_naming_the_file(voc: Path, folder, suffix) -> None:
    damaged = voc / "VOC2011" / folder / f"{IDS[1]}{suffix}"
    _cut(damaged)
    dataset = VOCSegmentation(voc, "val2011")
    dataset[0]  # the sound sample still reads
    with pytest.raises(DatasetError, match=rf"^{damaged}: cannot read the image \(") as caught:
        dataset[1]
    assert "\n" not in str(caught.value)


def test_a_label_png_of_another_mode_is_still_named_as_such(voc: Path) -> None:
    from PIL import Image

    label = voc / "VOC2011" / "SegmentationClass" / f"{IDS[0]}.png"
    Image.new("RGB", (24, 16)).save(label)
    with pytest.raises(DatasetError, match="expected a palette \\(P\\) or greyscale PNG of labels, not RGB"):
        VOCSegmentation(voc, "val2011")[0]


def test_a_split_list_that_is_not_text_is_one_dataset_error_naming_it(voc: Path) -> None:
    listed = voc / "VOC2011" / "ImageSets" / "Segmentation" / "val.txt"
    listed.write_bytes(b"2000_000000\n\xed\xa7\n")
    with pytest.raises(DatasetError, match=rf"^split list {listed} is not text \(byte 12 is not UTF-8\)"):
        VOCSegmentation(voc, "val2011")


@pytest.mark.parametrize("kind", ["fifo", "folder"])
def test_a_fifo_or_folder_where_a_picture_belongs_is_named_as_such_not_missing(voc: Path, kind: str) -> None:
    import os

    picture = voc / "VOC2011" / "JPEGImages" / f"{IDS[1]}.jpg"
    picture.unlink()
    os.mkfifo(picture) if kind == "fifo" else picture.mkdir()
    expected = "is a FIFO" if kind == "fifo" else "is a folder, not a file"
    with pytest.raises(DatasetError, match=rf"{picture}:? {expected}"):
        VOCSegmentation(voc, "val2011")
