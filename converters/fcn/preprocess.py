"""Caffe's input preprocessing for the FCN models, and label maps as palette images.

The released FCN models take BGR float32 input with the per-channel ImageNet mean subtracted,
no scaling, in CHW layout (the official ``infer.py``). :func:`caffe_preprocess` does exactly that,
with the subtraction carried out in float64 and rounded once to float32, as numpy does there.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from .datasets import VOC_MEAN, palette

_PIL_PALETTE_SIZE = 256


def _as_hwc_uint8(image: np.ndarray | Image.Image) -> np.ndarray:
    if isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGB"))
    array = np.asarray(image)
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 RGB image (or HxW greyscale), got shape {array.shape}")
    if array.dtype != np.uint8:
        raise ValueError(f"expected uint8 pixels, got {array.dtype}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"empty image of shape {array.shape}")
    return array


def _bgr_minus_mean(rgb: np.ndarray, mean: Sequence[float]) -> np.ndarray:
    mean_array = np.asarray(mean, dtype=np.float64).reshape(-1)
    if mean_array.shape != (3,):
        raise ValueError(f"mean must have 3 values (B, G, R), got {len(mean_array)}")
    # One pass into the output: the difference is taken in float64 and rounded once to float32.
    bgr_chw = rgb[:, :, ::-1].transpose(2, 0, 1)
    out = np.empty(bgr_chw.shape, dtype=np.float32)
    np.subtract(bgr_chw, mean_array[:, None, None], out=out, casting="same_kind")
    return out


def caffe_preprocess(
    rgb_uint8_hwc: np.ndarray | Image.Image, mean: Sequence[float] = VOC_MEAN
) -> torch.Tensor:
    """One RGB uint8 HxWx3 image (array or PIL image) as the nets' input: a 1x3xHxW float32 tensor.

    Channels are reordered to B, G, R and ``mean`` (given in B, G, R order) is subtracted; pixel
    values are not scaled. A greyscale HxW image is replicated to three channels.
    Raises ``ValueError`` for any other shape or dtype.
    """
    chw = _bgr_minus_mean(_as_hwc_uint8(rgb_uint8_hwc), mean)
    return torch.from_numpy(np.ascontiguousarray(chw)).unsqueeze(0)


def caffe_preprocess_batch(
    images: Sequence[np.ndarray | Image.Image], mean: Sequence[float] = VOC_MEAN
) -> torch.Tensor:
    """Several same-sized RGB images as one Nx3xHxW float32 batch, each as :func:`caffe_preprocess`.

    Raises ``ValueError`` for an empty sequence or images of different sizes.
    """
    if len(images) == 0:
        raise ValueError("no images to preprocess")
    arrays = [_as_hwc_uint8(image) for image in images]
    sizes = {a.shape[:2] for a in arrays}
    if len(sizes) != 1:
        raise ValueError(f"images of different sizes cannot form one batch: {sorted(sizes)}")
    batch = np.stack([_bgr_minus_mean(a, mean) for a in arrays])
    return torch.from_numpy(batch)


def read_rgb(path: str | os.PathLike[str]) -> np.ndarray:
    """The image file at ``path`` as an HxWx3 uint8 RGB array (any mode PIL reads is converted)."""
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB")).copy()


def colorize(labels: np.ndarray | torch.Tensor, colours: np.ndarray) -> Image.Image:
    """A label map (HxW integers in 0..255) as a PIL palette ("P") image coloured by ``colours``.

    ``colours`` is an (N, 3) uint8 array (N <= 256) such as :func:`palette` returns; palette entries
    beyond N follow the VOC colour map, so 255 ("void") shows as (224, 224, 192) as in VOC's PNGs.
    Raises ``ValueError`` for labels outside 0..255 or a palette that PIL cannot hold.
    """
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu().numpy()
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"expected an HxW label map, got shape {labels.shape}")
    if labels.dtype.kind not in "iub":
        raise ValueError(f"expected integer labels, got {labels.dtype}")
    if labels.size and (labels.min() < 0 or labels.max() >= _PIL_PALETTE_SIZE):
        raise ValueError(f"labels must lie in 0..255 for a palette image, got {labels.min()}..{labels.max()}")
    colours = np.asarray(colours)
    if colours.ndim != 2 or colours.shape[1] != 3 or len(colours) > _PIL_PALETTE_SIZE:
        raise ValueError(f"expected an (N, 3) palette with N <= 256, got shape {colours.shape}")
    full = palette(_PIL_PALETTE_SIZE)
    full[: len(colours)] = colours.astype(np.uint8)
    height, width = labels.shape
    image = Image.frombytes("P", (width, height), np.ascontiguousarray(labels, dtype=np.uint8).tobytes())
    image.putpalette(full.reshape(-1).tolist())
    return image
