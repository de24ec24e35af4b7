"""Generate a small dataset in the PASCAL VOC devkit layout, for tests and benchmarks.

Each image is a grid of flat colour cells; each cell's class has its own colour (:data:`CLASS_COLOURS`).
The label PNGs are palette images, as VOC's: the class of each cell, a 255 ("void") band along every
cell boundary and the image border, and one 255 "ignore" rectangle, so that every labelled pixel
lies at least ``band`` pixels from a colour edge (JPEG artefacts cannot move it to another colour).

    python tests/vocgen.py OUT --count 50 --size 500x375   # VOC-sized images for a benchmark
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

#: RGB colour of each class that appears (classes 8..20 never do): the corners of the RGB cube.
CLASS_COLOURS: dict[int, tuple[int, int, int]] = {
    0: (0, 0, 0),
    1: (255, 0, 0),
    2: (0, 255, 0),
    3: (0, 0, 255),
    4: (255, 255, 0),
    5: (255, 0, 255),
    6: (0, 255, 255),
    7: (255, 255, 255),
}


def _voc_palette() -> list[int]:
    colours = []
    for label in range(256):
        r = g = b = 0
        value = label
        for bit in range(8):
            r |= ((value >> 0) & 1) << (7 - bit)
            g |= ((value >> 1) & 1) << (7 - bit)
            b |= ((value >> 2) & 1) << (7 - bit)
            value >>= 3
        colours += [r, g, b]
    return colours


def make_sample(
    rng: np.random.Generator, height: int, width: int, band: int = 3
) -> tuple[np.ndarray, np.ndarray]:
    """One (RGB uint8 HxWx3 image, uint8 HxW label map with 255 bands) pair."""
    rows, cols = int(rng.integers(1, 4)), int(rng.integers(2, 4))
    row_edges = np.linspace(0, height, rows + 1).astype(int)
    col_edges = np.linspace(0, width, cols + 1).astype(int)
    classes = list(CLASS_COLOURS)
    image = np.zeros((height, width, 3), dtype=np.uint8)
    label = np.zeros((height, width), dtype=np.uint8)
    for r in range(rows):
        for c in range(cols):
            cls = int(rng.choice(classes))
            cell = np.s_[row_edges[r] : row_edges[r + 1], col_edges[c] : col_edges[c + 1]]
            image[cell] = CLASS_COLOURS[cls]
            label[cell] = cls
    for edge in row_edges:
        label[max(0, edge - band) : edge + band, :] = 255
    for edge in col_edges:
        label[:, max(0, edge - band) : edge + band] = 255
    top, left = int(rng.integers(0, height // 2)), int(rng.integers(0, width // 2))
    label[top : top + height // 6 + 1, left : left + width // 6 + 1] = 255
    return image, label


def write_voc(
    root: str | os.PathLike[str],
    ids: Sequence[str],
    *,
    year: str = "VOC2011",
    size: tuple[int, int] | None = None,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Write ``root/<year>/{JPEGImages,SegmentationClass,ImageSets/Segmentation/val.txt}`` for ``ids``.

    ``size`` is (width, height); by default each image gets its own size between 40 and 72 pixels.
    Returns the label maps by id (what the label PNGs hold).
    """
    rng = np.random.default_rng(seed)
    base = Path(root) / year
    for folder in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (base / folder).mkdir(parents=True, exist_ok=True)
    palette = _voc_palette()
    labels = {}
    for image_id in ids:
        width, height = size if size else (int(rng.integers(40, 73)), int(rng.integers(40, 73)))
        image, label = make_sample(rng, height, width)
        Image.fromarray(image).save(base / "JPEGImages" / f"{image_id}.jpg", quality=95, subsampling=0)
        png = Image.frombytes("P", (label.shape[1], label.shape[0]), np.ascontiguousarray(label).tobytes())
        png.putpalette(palette)
        png.save(base / "SegmentationClass" / f"{image_id}.png")
        labels[image_id] = label
    (base / "ImageSets" / "Segmentation" / "val.txt").write_text("".join(f"{i}\n" for i in ids))
    return labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="folder to create (gets OUT/VOC2011/...)")
    parser.add_argument("--count", type=int, default=50)
    parser.add_argument("--size", default="500x375", help="WIDTHxHEIGHT")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))
    ids = [f"2000_{i:06d}" for i in range(args.count)]
    write_voc(args.out, ids, size=(width, height), seed=args.seed)
    print(f"wrote {len(ids)} images to {Path(args.out) / 'VOC2011'}")


if __name__ == "__main__":
    main()
