"""Caffe preprocessing and VOC palettes, against independent numpy code and published VOC colours."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from converters.fcn.datasets import VOC_MEAN as VOC_MEAN_BGR
from converters.fcn.datasets import palette
from converters.fcn.preprocess import caffe_preprocess, caffe_preprocess_batch, colorize, read_rgb
from tests.conftest import need_shared


def _official_infer_py_steps(rgb: np.ndarray) -> np.ndarray:
    # The official infer.py: float32 array, reverse channels, in-place subtract a float64 mean, CHW.
    x = np.array(rgb, dtype=np.float32)
    x = x[:, :, ::-1]
    x -= np.array((104.00698793, 116.66876762, 122.67891434))
    return x.transpose((2, 0, 1))


def test_preprocess_matches_official_steps_bit_for_bit() -> None:
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, size=(7, 5, 3), dtype=np.uint8)
    out = caffe_preprocess(rgb)
    assert out.shape == (1, 3, 7, 5) and out.dtype == torch.float32
    np.testing.assert_array_equal(out[0].numpy(), _official_infer_py_steps(rgb))


def test_preprocess_channel_order_and_mean() -> None:
    rgb = np.zeros((2, 3, 3), dtype=np.uint8)
    rgb[..., 0] = 200  # red
    out = caffe_preprocess(rgb)[0]
    # Channel 0 is blue (0 - 104.0...), channel 2 is red (200 - 122.6...).
    assert torch.allclose(out[0], torch.full((2, 3), -104.00698793))
    assert torch.allclose(out[1], torch.full((2, 3), -116.66876762))
    assert torch.allclose(out[2], torch.full((2, 3), 200 - 122.67891434))


def test_preprocess_custom_mean_pil_and_greyscale() -> None:
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4)
    out = caffe_preprocess(grey, mean=(1.0, 2.0, 3.0))
    np.testing.assert_allclose(out[0, 0].numpy(), grey - 1.0)
    np.testing.assert_allclose(out[0, 2].numpy(), grey - 3.0)
    rgb = np.random.default_rng(1).integers(0, 256, size=(4, 6, 3), dtype=np.uint8)
    assert torch.equal(caffe_preprocess(Image.fromarray(rgb)), caffe_preprocess(rgb))


@pytest.mark.parametrize(
    "bad",
    [np.zeros((4, 4, 4), np.uint8), np.zeros((4, 4, 3), np.float32), np.zeros((0, 4, 3), np.uint8)],
)
def test_preprocess_rejects_bad_images(bad: np.ndarray) -> None:
    with pytest.raises(ValueError):
        caffe_preprocess(bad)


def test_preprocess_rejects_bad_mean() -> None:
    with pytest.raises(ValueError, match="3 values"):
        caffe_preprocess(np.zeros((2, 2, 3), np.uint8), mean=(1.0, 2.0))


def test_batch_equals_single_images() -> None:
    rng = np.random.default_rng(2)
    images = [rng.integers(0, 256, size=(5, 4, 3), dtype=np.uint8) for _ in range(3)]
    batch = caffe_preprocess_batch(images)
    assert batch.shape == (3, 3, 5, 4)
    for i, image in enumerate(images):
        assert torch.equal(batch[i : i + 1], caffe_preprocess(image))
    with pytest.raises(ValueError, match="different sizes"):
        caffe_preprocess_batch([images[0], np.zeros((4, 4, 3), np.uint8)])
    with pytest.raises(ValueError):
        caffe_preprocess_batch([])


def test_default_mean_is_the_published_one() -> None:
    assert VOC_MEAN_BGR == (104.00698793, 116.66876762, 122.67891434)


# Published PASCAL VOC colours (VOCdevkit colour map; the VOC2012 devkit documentation).
VOC_COLOURS = {
    0: (0, 0, 0),  # background
    1: (128, 0, 0),  # aeroplane
    2: (0, 128, 0),  # bicycle
    3: (128, 128, 0),  # bird
    5: (128, 0, 128),  # bottle
    12: (64, 0, 128),  # dog
    15: (192, 128, 128),  # person
    20: (0, 64, 128),  # tvmonitor
    255: (224, 224, 192),  # void / boundary
}


@pytest.mark.parametrize("label,colour", sorted(VOC_COLOURS.items()))
def test_palette_matches_voc_colours(label: int, colour: tuple[int, int, int]) -> None:
    colours = palette(256)
    assert colours.shape == (256, 3) and colours.dtype == np.uint8
    assert tuple(int(c) for c in colours[label]) == colour


def test_palette_any_size_is_a_prefix_and_unique() -> None:
    big = palette(600)  # e.g. more labels than a PIL palette holds
    assert big.shape == (600, 3)
    np.testing.assert_array_equal(big[:21], palette(21))
    assert len({tuple(c) for c in big}) == 600
    assert palette(0).shape == (0, 3)


def test_palette_agrees_with_official_demo_output(fcn_reference) -> None:
    # The official demo output (RGB) shows bicycle and person in the VOC colours.
    output = np.asarray(Image.open(fcn_reference / "demo" / "output.png").convert("RGB"))
    colours = {tuple(int(v) for v in c) for c in output.reshape(-1, 3)}
    ours = palette(21)
    assert colours == {tuple(int(v) for v in ours[i]) for i in (0, 2, 15)}


def test_colorize_round_trips_labels_and_colours(tmp_path) -> None:
    labels = np.array([[0, 1, 15], [20, 255, 2]], dtype=np.int64)
    image = colorize(labels, palette(21))
    assert image.mode == "P" and image.size == (3, 2)
    path = tmp_path / "out.png"
    image.save(path)
    with Image.open(path) as reread:
        np.testing.assert_array_equal(np.asarray(reread), labels)
        rgb = np.asarray(reread.convert("RGB"))
    assert tuple(rgb[0, 2]) == (192, 128, 128)
    assert tuple(rgb[1, 1]) == (224, 224, 192)
    custom = colorize(torch.tensor([[0, 1]]), np.array([[1, 2, 3], [4, 5, 6]], np.uint8))
    assert tuple(np.asarray(custom.convert("RGB"))[0, 1]) == (4, 5, 6)


@pytest.mark.parametrize(
    "labels", [np.array([[0, 256]]), np.array([[-1, 0]]), np.zeros((2, 2, 2), int), np.zeros((2, 2))]
)
def test_colorize_rejects_bad_labels(labels: np.ndarray) -> None:
    with pytest.raises(ValueError):
        colorize(labels, palette(21))


def test_read_rgb(tmp_path) -> None:
    rgba = np.zeros((3, 4, 4), np.uint8)
    rgba[..., 1] = 77
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    rgb = read_rgb(tmp_path / "a.png")
    assert rgb.shape == (3, 4, 3) and rgb.dtype == np.uint8 and int(rgb[0, 0, 1]) == 77


def test_demo_image_reads(fcn_reference) -> None:
    rgb = read_rgb(need_shared("fcn-reference", "demo", "image.jpg"))
    assert rgb.shape == (500, 334, 3)
