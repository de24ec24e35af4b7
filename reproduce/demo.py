"""The official FCN demo: segment PASCAL VOC 2007_000129 with voc-fcn8s, compare with Caffe's output.

``python -m reproduce.demo`` preprocesses the bundled demo image as Caffe does, runs voc-fcn8s,
writes the colour label map (``demo-output.png`` by default) and reports the fraction of pixels
whose label agrees with the official ``output.png`` of the FCN repository. The released weights
(513 MB) come from the weights cache; when they are missing the download rule of every command
applies (``weights.obtain``): ``--download`` fetches them, a terminal is asked, anything else gets
one ``error:`` line naming the cache and ``--download``, and exit 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from converters import cli
from converters.atomic import atomic_write, check_writable
from converters.fcn.datasets import VOC_MEAN, palette
from converters.fcn.preprocess import caffe_preprocess, colorize, read_rgb
from weights.api import add_download_option

DATA_DIR = Path(__file__).resolve().parent / "data"
DEMO_IMAGE = DATA_DIR / "image.jpg"
DEMO_REFERENCE = DATA_DIR / "output.png"
MODEL = "voc-fcn8s"
NUM_CLASSES = 21


class DemoError(ValueError):
    """Something the user can fix (missing weights, unreadable image ...); one line."""


@dataclass(frozen=True)
class Agreement:
    """How many pixels carry the same label in two label maps."""

    same: int
    total: int

    @property
    def fraction(self) -> float:
        return self.same / self.total if self.total else float("nan")


def _colour_codes(rgb: np.ndarray) -> np.ndarray:
    rgb = rgb.astype(np.int64)
    return (rgb[:, 0] << 16) | (rgb[:, 1] << 8) | rgb[:, 2]


def labels_from_colours(rgb: np.ndarray, colours: np.ndarray) -> np.ndarray:
    """An HxWx3 colour image painted with ``colours`` (N x 3) as an HxW label map.

    Raises ``DemoError`` if a pixel has a colour that is not in the palette.
    """
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise DemoError(f"expected an HxWx3 colour image, got shape {rgb.shape}")
    codes = _colour_codes(rgb.reshape(-1, 3)).reshape(rgb.shape[:2])
    palette_codes = _colour_codes(np.asarray(colours))
    order = np.argsort(palette_codes, kind="stable")
    positions = np.searchsorted(palette_codes[order], codes)
    positions = np.clip(positions, 0, len(order) - 1)
    found = palette_codes[order][positions] == codes
    if not found.all():
        y, x = np.argwhere(~found)[0]
        raise DemoError(f"colour {tuple(int(v) for v in rgb[y, x])} at ({y}, {x}) is not in the palette")
    return order[positions]


def read_label_image(path: str | Path, colours: np.ndarray) -> np.ndarray:
    """A label PNG as an HxW label map: palette images by index, colour images through ``colours``."""
    with Image.open(path) as image:
        if image.mode in ("P", "L", "I", "I;16"):
            return np.asarray(image).astype(np.int64)
        return labels_from_colours(np.asarray(image.convert("RGB")), colours)


def agreement(prediction: np.ndarray, reference: np.ndarray) -> Agreement:
    """Pixels of ``prediction`` equal to ``reference`` (same HxW shapes, else ``DemoError``)."""
    if prediction.shape != reference.shape:
        raise DemoError(f"label maps differ in size: {prediction.shape} vs {reference.shape}")
    return Agreement(int((prediction == reference).sum()), int(prediction.size))


def segment(
    net: Callable[..., Mapping[str, torch.Tensor]],
    rgb: np.ndarray,
    *,
    output_blob: str = "score",
    mean: Sequence[float] = VOC_MEAN,
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """Label map (HxW int64) of ``net`` for one RGB image: Caffe preprocessing, forward, argmax."""
    x = caffe_preprocess(rgb, mean).to(device)
    with torch.inference_mode():
        outputs = net(data=x)
    if output_blob not in outputs:
        raise DemoError(f"the net has no output {output_blob!r} (it has {', '.join(outputs)})")
    scores = outputs[output_blob]
    return scores[0].argmax(dim=0).cpu().numpy().astype(np.int64)


@dataclass(frozen=True)
class DemoResult:
    """What the demo produced."""

    output: Path
    labels: np.ndarray
    agreement: Agreement | None
    classes_present: tuple[int, ...]


def run_demo(
    net: Callable[..., Mapping[str, torch.Tensor]],
    image: str | Path = DEMO_IMAGE,
    output: str | Path = "demo-output.png",
    reference: str | Path | None = DEMO_REFERENCE,
    *,
    device: torch.device | str = "cpu",
) -> DemoResult:
    """Segment ``image`` with ``net``, write the colour label map to ``output`` (atomically), and
    compare it with the ``reference`` label image when one is given."""
    try:
        rgb = read_rgb(image)
    except OSError as exc:
        raise DemoError(f"cannot read image {image}: {exc}") from None
    labels = segment(net, rgb, device=device)
    if labels.shape != rgb.shape[:2]:
        raise DemoError(f"the net's output is {labels.shape}, the image {rgb.shape[:2]}")
    if labels.min() < 0 or labels.max() > 255:
        raise DemoError("the net predicts labels outside 0..255")
    colours = palette(NUM_CLASSES)
    picture = colorize(labels, colours)
    output = Path(output)
    with atomic_write(output, "wb") as out:
        picture.save(out, format="PNG")
    agree = None
    if reference is not None:
        try:
            reference_labels = read_label_image(reference, palette(256))
        except OSError as exc:
            raise DemoError(f"cannot read reference {reference}: {exc}") from None
        agree = agreement(labels, reference_labels)
    present = tuple(int(v) for v in np.unique(labels))
    return DemoResult(output, labels, agree, present)


def resolve_weights(caffemodel: str | None, download: bool | None) -> Path:
    """The caffemodel to use: ``caffemodel`` if given, else the cached voc-fcn8s weights by the
    download rule of every command (:func:`weights.obtain`: fetched with ``download=True``, asked
    for on a terminal with ``None``, else one line naming the cache and ``--download``)."""
    if caffemodel is not None:
        path = Path(caffemodel)
        if not path.is_file():
            raise DemoError(f"no such caffemodel: {caffemodel}")
        return path
    import weights

    return weights.obtain(MODEL, download=download)


def load_net(prototxt: str | None, caffemodel: Path, device: str | torch.device) -> torch.nn.Module:
    """voc-fcn8s (or the net in ``prototxt``) with ``caffemodel`` loaded, in eval mode."""
    from weights.models import load_model

    if prototxt is not None and not Path(prototxt).is_file():
        raise DemoError(f"no such prototxt: {prototxt}")
    return load_model([prototxt or MODEL, caffemodel], device).net


def _class_name(label: int) -> str:
    try:
        import weights

        return f"{label} {weights.get(MODEL).classes[label]}"
    except Exception:  # the names are decoration only
        return str(label)


def build_parser() -> argparse.ArgumentParser:
    parser = cli.Parser(
        prog="python -m reproduce.demo",
        description="Segment the official FCN demo image with voc-fcn8s and compare with Caffe's output.png.",
    )
    parser.add_argument("--image", default=str(DEMO_IMAGE), help="RGB image (default: the bundled one)")
    parser.add_argument("--output", default="demo-output.png", help="colour label map to write")
    parser.add_argument(
        "--reference",
        default=None,
        help="label image to compare with (default: the official output.png, for the default image)",
    )
    parser.add_argument("--weights", default=None, help="caffemodel (default: voc-fcn8s, weights cache)")
    parser.add_argument("--prototxt", default=None, help="net definition (default: voc-fcn8s deploy)")
    add_download_option(parser)
    parser.add_argument("--device", default="cpu", help="cpu, cuda ... (default cpu)")
    return parser


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    reference = args.reference
    if reference is None and Path(args.image).resolve() == DEMO_IMAGE:
        reference = DEMO_REFERENCE
    device = cli.device(args.device, default="cpu")
    check_writable(args.output, "--output")  # before the weights are read
    try:  # the image before the weights: a wrong --image is not reported as missing weights
        read_rgb(args.image)
    except OSError as exc:
        raise DemoError(f"cannot read image {args.image}: {exc.strerror or cli.one_line(exc)}") from None
    caffemodel = resolve_weights(args.weights, args.download)
    net = load_net(args.prototxt, caffemodel, device)
    result = run_demo(net, args.image, args.output, reference, device=device)
    print(
        f"wrote {result.output} ({result.labels.shape[1]}x{result.labels.shape[0]}; classes "
        f"{', '.join(_class_name(c) for c in result.classes_present)})"
    )
    if result.agreement is not None:
        a = result.agreement
        print(f"pixel agreement with {reference}: {100 * a.fraction:.3f}% ({a.same} of {a.total} pixels)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo; 0 on success, 2 with one ``error:`` line on bad input, 130 on Ctrl-C."""
    return cli.run(lambda: _main(argv))


if __name__ == "__main__":
    sys.exit(main())
