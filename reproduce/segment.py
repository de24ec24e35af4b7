"""Segment your own images with any FCN model: colour label maps, overlays, scores and legends.

    python -m reproduce.segment --model voc-fcn8s photo.jpg holidays/ -o out/
    python -m reproduce.segment --model nyud-fcn32s-color-hha images/ --input hha=hha/ -o out/

    from reproduce.segment import segment
    result = segment("voc-fcn8s", "photo.jpg")      # or a weights.LoadedModel, or loaded.segment(...)
    result.labels, result.scores, result.colour, result.overlay, result.classes_present

``--model`` is what the evaluators take (a registry name, a converted ``.safetensors``/``.pt`` file,
``PROTOTXT CAFFEMODEL``, or ``NAME CAFFEMODEL``: the registry net with other weights), built by
:func:`weights.load_model`; a registry model's weights missing from the cache follow the download
rule of every command (:func:`weights.obtain`: ``--download`` fetches them, a terminal is asked,
anything else gets one ``error:`` line). The registry record supplies the
preprocessing (mean, channel order), the class names and the palette; converted files of official
nets are recognised by their net definition; any other model gets the VOC mean, the VOC colour map
and the names ``class_0, class_1, ...`` (``--record NAME`` borrows a registry model's instead).

Inputs: the positional images feed the model's first input kind (``color``, or ``hha`` for the
HHA-only NYUD net); the others come from ``--input KIND=PATH`` (``hha``, ``depth``), a file for a
single image or a folder holding a file with the same relative name (any image suffix) for each
image. Colour images may be JPEG, PNG, WebP, BMP, TIFF ..., 8 or 16 bits (16-bit pixels are reduced
to their high byte, as Pillow does for 16-bit RGB), with EXIF orientation applied; depth is a
single-channel (16-bit) PNG read as raw values, HHA an 8-bit 3-channel PNG (as in the NYUDv2 files
of the FCN authors).

Outputs, for an input ``DIR/a/b.jpg`` given as ``DIR`` (folders are searched recursively and their
layout kept): ``OUT/a/b.png`` (palette PNG: pixel value = class index, colours = the model's
palette), ``OUT/a/b.overlay.png`` (the colours blended over the photo, ``--alpha``), with
``--scores`` ``OUT/a/b.scores.npy`` (float32 C x H x W, the net's raw scores) and with ``--legend``
``OUT/a/b.legend.png`` (a swatch, the class index, name and share of pixels for each class present);
``--overlay-format jpg`` or ``webp`` makes smaller overlays.
Models with two heads (SIFT Flow) write each head's files with the output blob in the name:
``b.score_sem.png``, ``b.score_geo.png``, ``b.score_geo.overlay.png`` ... Every file is written
atomically; images of the same size go through the net together (``--batch-size``). An image that
cannot be read (its header, or its pixels: a truncated copy) is one ``error:`` line naming it; the
others are still written, and the exit code is then 2. ``--max-side``
runs the net on large pictures scaled down and scales the scores back to the picture's size.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont, ImageOps, UnidentifiedImageError

from converters.atomic import atomic_write, check_writable
from converters.fcn.datasets import VOC_MEAN, palette
from converters.fcn.preprocess import caffe_preprocess, colorize
from weights.api import add_download_option
from weights.models import CAFFEMODEL_SUFFIXES, PROTOTXT_SUFFIXES, LoadedModel, ModelError, load_model
from weights.registry import WeightsRecord, find_by_definition

ImageSource = Union[str, os.PathLike, Image.Image, np.ndarray]  # noqa: UP007 - a runtime alias (3.10)
"""An image file path, a PIL image or an HxW / HxWx3 array."""

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".ppm", ".pgm", ".pnm", ".gif")
KINDS = ("color", "hha", "depth")
_SOURCE_KINDS = {"color": ("color",), "hha": ("hha",), "color-depth": ("color", "depth")}
EXIT_OK = 0


class SegmentError(ValueError):
    """An image, input or output the user can fix (one line naming it)."""


# --- reading images -------------------------------------------------------------------------------


def _name(source: ImageSource) -> str:
    return os.fspath(source) if isinstance(source, (str, os.PathLike)) else f"<{type(source).__name__}>"


_UNREADABLE = (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError, ValueError)


def _unreadable(source: str | os.PathLike, exc: BaseException) -> SegmentError:
    if isinstance(exc, FileNotFoundError):
        return SegmentError(f"{os.fspath(source)}: no such image file")
    detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return SegmentError(f"{os.fspath(source)}: cannot read the image ({detail})")


def _out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is an allocation failing (torch's CPU and CUDA allocators, Python's own, or
    the graph builder refusing a blob larger than the device's memory)."""
    text = str(exc).lower()
    phrases = ("can't allocate memory", "out of memory", "posix_memalign", "gib of memory of")
    return isinstance(exc, MemoryError) or any(phrase in text for phrase in phrases)


def _open_oriented(source: str | os.PathLike) -> Image.Image:
    """The decoded image file, turned as its EXIF orientation says (a copy; the file is closed)."""
    try:
        with Image.open(source) as image:
            image.load()
            return ImageOps.exif_transpose(image)
    except _UNREADABLE as exc:
        raise _unreadable(source, exc) from None


def _rgb8(image: Image.Image) -> np.ndarray:
    """A PIL image as HxWx3 uint8 RGB; 16/32-bit greyscale reduced to its high byte of 16 bits."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        values = np.clip(np.asarray(image, dtype=np.int64), 0, 65535) >> 8
        grey = values.astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if image.mode == "F":
        grey = np.clip(np.asarray(image, dtype=np.float64), 0, 255).round().astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    return np.asarray(image.convert("RGB")).copy()


def _from_array(array: np.ndarray, kind: str, name: str) -> np.ndarray:
    array = np.asarray(array)
    if kind == "depth":
        if array.ndim == 3 and array.shape[2] == 1:
            array = array[:, :, 0]
        if array.ndim != 2:
            raise SegmentError(f"{name}: a depth image has one channel, got shape {array.shape}")
        return array.astype(np.float32)
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] != 3:
        raise SegmentError(f"{name}: expected an HxWx3 RGB image (or HxW greyscale), got shape {array.shape}")
    if array.dtype == np.uint16:
        array = (array >> 8).astype(np.uint8)
    if array.dtype != np.uint8:
        raise SegmentError(f"{name}: expected uint8 (or uint16) pixels, got {array.dtype}")
    return array


def read_image(source: ImageSource, kind: str = "color") -> np.ndarray:
    """One input picture as an array, EXIF orientation applied: ``color`` and ``hha`` as HxWx3 uint8
    (RGB as stored), ``depth`` as HxW float32 raw values. Raises :class:`SegmentError` naming the file."""
    if kind not in KINDS:
        raise SegmentError(f"unknown input kind {kind!r}; choose from {', '.join(KINDS)}")
    name = _name(source)
    if isinstance(source, np.ndarray):
        return _from_array(source, kind, name)
    if isinstance(source, Image.Image):
        return _from_image(ImageOps.exif_transpose(source), kind, name)
    return _from_image(_open_oriented(source), kind, name)


def _from_image(image: Image.Image, kind: str, name: str) -> np.ndarray:
    if kind != "depth":
        return _rgb8(image)
    if image.mode not in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F", "L"):
        raise SegmentError(f"{name}: a depth image has one channel, got a {image.mode} image")
    return np.asarray(image, dtype=np.float32).copy()


def image_size(source: str | os.PathLike) -> tuple[int, int]:
    """``(height, width)`` of an image file after its EXIF orientation, reading only its header."""
    try:
        with Image.open(source) as image:
            width, height = image.size
            orientation = image.getexif().get(0x0112, 1)
    except _UNREADABLE as exc:
        raise _unreadable(source, exc) from None
    return (width, height) if orientation in (5, 6, 7, 8) else (height, width)


# --- results ---------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class HeadResult:
    """One output head of one image: labels, scores and the pictures made from them."""

    blob: str
    classes: tuple[str, ...]
    palette: np.ndarray
    """(C, 3) uint8 RGB colour per class."""
    labels: np.ndarray
    """HxW int64 class indices (argmax of the scores)."""
    photo: np.ndarray
    """The HxWx3 uint8 picture the overlay is drawn on."""
    scores: np.ndarray | None = None
    """CxHxW float32 raw scores of the net (``None`` for labels from elsewhere)."""
    alpha: float = 0.5
    task: str = "semantic"

    @property
    def present(self) -> tuple[int, ...]:
        """Indices of the classes that label at least one pixel, ascending."""
        return tuple(int(v) for v in np.unique(self.labels))

    @property
    def classes_present(self) -> tuple[str, ...]:
        """Names of the classes that label at least one pixel, in class order."""
        return tuple(self._class_name(i) for i in self.present)

    def _class_name(self, index: int) -> str:
        return self.classes[index] if 0 <= index < len(self.classes) else f"class_{index}"

    @property
    def colour(self) -> Image.Image:
        """The label map as a palette ("P") PNG-ready image: pixel value = class index."""
        return colorize(self.labels, self.palette)

    @property
    def overlay(self) -> Image.Image:
        """The class colours blended over the photo: ``(1 - alpha) * photo + alpha * colour``."""
        colours = np.asarray(self.palette, dtype=np.float32)[np.clip(self.labels, 0, len(self.palette) - 1)]
        blend = (1.0 - self.alpha) * self.photo.astype(np.float32) + self.alpha * colours
        return Image.fromarray(np.clip(np.rint(blend), 0, 255).astype(np.uint8), "RGB")

    def legend(self, title: str | None = None) -> Image.Image:
        """A picture listing each class present: colour swatch, index, name and share of pixels."""
        counts = np.bincount(self.labels.reshape(-1), minlength=max(self.present, default=0) + 1)
        total = max(int(self.labels.size), 1)
        rows = [(i, self._class_name(i), 100.0 * counts[i] / total) for i in self.present]
        return legend_image(rows, self.palette, title=title)


@dataclass(frozen=True, eq=False)
class Segmentation:
    """The model's heads for one image; the first head's results are at the top level."""

    heads: Mapping[str, HeadResult]
    source: str = ""
    notes: tuple[str, ...] = ()

    @property
    def main(self) -> HeadResult:
        """The first (main) head: the semantic one."""
        return next(iter(self.heads.values()))

    @property
    def labels(self) -> np.ndarray:
        """HxW int64 class indices of the main head."""
        return self.main.labels

    @property
    def scores(self) -> np.ndarray | None:
        """CxHxW float32 scores of the main head."""
        return self.main.scores

    @property
    def colour(self) -> Image.Image:
        """The main head's label map as a palette image."""
        return self.main.colour

    @property
    def overlay(self) -> Image.Image:
        """The main head's colours over the photo."""
        return self.main.overlay

    @property
    def classes(self) -> tuple[str, ...]:
        """The main head's class names, in output-channel order."""
        return self.main.classes

    @property
    def classes_present(self) -> tuple[str, ...]:
        """Names of the main head's classes that label at least one pixel."""
        return self.main.classes_present

    def legend(self, title: str | None = None) -> Image.Image:
        """The main head's legend picture (see :meth:`HeadResult.legend`)."""
        return self.main.legend(title)


def _font(size: int = 14) -> Any:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def legend_image(
    rows: Sequence[tuple[int, str, float]], colours: np.ndarray, *, title: str | None = None
) -> Image.Image:
    """A white RGB picture with one line per ``(class index, name, percent of pixels)``: a colour
    swatch, the index, the name and the share, in columns."""
    font = _font(14)
    line, swatch, pad = 22, 16, 8
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    columns = [[str(i) for i, _, _ in rows], [n for _, n, _ in rows], [f"{p:.1f}%" for _, _, p in rows]]
    widths = [max([int(measure.textlength(t, font=font)) for t in column] + [0]) for column in columns]
    width = pad + swatch + sum(w + 2 * pad for w in widths)
    if title:
        width = max(width, int(measure.textlength(title, font=font)) + 2 * pad)
    height = 2 * pad + line * (len(rows) + (1 if title else 0))
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    y = pad
    if title:
        draw.text((pad, y), title, fill="black", font=font)
        y += line
    for index, name, percent in rows:
        colour = tuple(int(c) for c in colours[index]) if index < len(colours) else (224, 224, 192)
        draw.rectangle([pad, y + 2, pad + swatch, y + 2 + swatch], fill=colour, outline="black")
        x = pad + swatch + 2 * pad
        text = str(index)
        draw.text((x + widths[0] - measure.textlength(text, font=font), y + 2), text, fill="black", font=font)
        x += widths[0] + 2 * pad
        draw.text((x, y + 2), name, fill="black", font=font)
        x += widths[1] + 2 * pad
        text = f"{percent:.1f}%"
        draw.text((x + widths[2] - measure.textlength(text, font=font), y + 2), text, fill="black", font=font)
        y += line
    return image


def montage(images: Sequence[Image.Image], gap: int = 8) -> Image.Image:
    """Pictures side by side on white, tops aligned (e.g. an overlay and its legend)."""
    if not images:
        raise ValueError("montage of no images")
    width = sum(i.width for i in images) + gap * (len(images) - 1)
    result = Image.new("RGB", (width, max(i.height for i in images)), "white")
    x = 0
    for image in images:
        result.paste(image.convert("RGB"), (x, 0))
        x += image.width + gap
    return result


# --- the model side --------------------------------------------------------------------------------


@dataclass(frozen=True)
class NetInput:
    """How one net input is made: the input kinds concatenated along channels, and their means."""

    blob: str
    kinds: tuple[str, ...]
    means: tuple[tuple[float, ...], ...]


@dataclass(frozen=True)
class HeadSpec:
    """One scored output: its blob, task, class names (``None``: generic, from the channel count)."""

    blob: str
    task: str
    classes: tuple[str, ...] | None


@dataclass
class Sample:
    """One image's inputs for the net (``{kind: array}``, reduced by ``max_side``), the photo at
    full size (for the overlay; the results come back at its size) and where it came from."""

    arrays: dict[str, np.ndarray]
    photo: np.ndarray
    source: str

    @property
    def size(self) -> tuple[int, int]:
        """``(height, width)`` the net sees."""
        first = next(iter(self.arrays.values()))
        return first.shape[0], first.shape[1]

    @property
    def original_size(self) -> tuple[int, int]:
        """``(height, width)`` of the picture and of the results."""
        return self.photo.shape[0], self.photo.shape[1]


def fit_size(size: tuple[int, int], max_side: int | None) -> tuple[int, int]:
    """``size`` (height, width) scaled down so that its longer side is at most ``max_side``."""
    height, width = size
    if not max_side or max(height, width) <= max_side:
        return size
    scale = max_side / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def _resized(array: np.ndarray, size: tuple[int, int], kind: str) -> np.ndarray:
    if array.shape[:2] == size:
        return array
    if kind == "depth":  # raw values: no blending across depth edges
        image = Image.fromarray(array.astype(np.float32))
        return np.asarray(image.resize(size[::-1], Image.Resampling.NEAREST))
    return np.asarray(Image.fromarray(array).resize(size[::-1], Image.Resampling.BILINEAR))


def _first_device(net: Any, fallback: Any) -> torch.device:
    parameters = getattr(net, "parameters", None)
    if parameters is not None:
        for parameter in parameters():
            return parameter.device
    return torch.device(fallback or "cpu")


class Segmenter:
    """A model fitted to pictures: which kinds of image feed which input, which outputs are scored,
    with which classes and palette. :meth:`prepare` decodes one image (and its companions),
    :meth:`run` segments a list of same-sized samples in one forward pass."""

    def __init__(
        self,
        model: LoadedModel,
        *,
        record: WeightsRecord | None = None,
        alpha: float = 0.5,
        allow_tf32: bool = False,
        max_side: int | None = None,
    ) -> None:
        if not 0.0 <= alpha <= 1.0:
            raise SegmentError(f"alpha must lie in 0..1, got {alpha}")
        if max_side is not None and max_side < 1:
            raise SegmentError(f"max_side must be at least 1, got {max_side}")
        self.max_side = max_side
        self.model = model
        self.record = record if record is not None else model.record
        self.alpha = alpha
        self.allow_tf32 = allow_tf32
        self.device = _first_device(model.net, None)
        self.notes: list[str] = []
        info = getattr(model.net, "caffe", None)
        outputs = list(getattr(info, "outputs", []) or [])
        matches: list[str] = []
        if self.record is None and getattr(info, "definition", None) is not None:
            matches = find_by_definition(info.definition)
            if len(matches) == 1:
                import weights

                self.record = weights.get(matches[0])
                name = matches[0]
                self.notes.append(f"{model.description} is {name} by its net definition: its record applies")
        if self.record is not None:
            self._from_record(self.record, outputs)
        else:
            self.inputs = [NetInput(name, ("color",), (tuple(VOC_MEAN),)) for name in model.input_names]
            self.heads = [HeadSpec(blob, "semantic", None) for blob in outputs]
            alike = f" (its net definition is that of {' and of '.join(matches)})" if matches else ""
            self.notes.append(
                f"{model.description} has no registry record{alike}: VOC mean and colour map, class names "
                "class_0, class_1, ... (--record NAME, or record=NAME in Python, borrows a registry model's)"
            )
        if not self.heads:
            raise SegmentError(f"{model.description} has no outputs to segment with")
        kinds: list[str] = []
        for spec in self.inputs:
            kinds += [k for k in spec.kinds if k not in kinds]
        self.kinds = tuple(kinds)

    def _from_record(self, record: WeightsRecord, outputs: list[str]) -> None:
        if record.kind != "fcn":
            raise SegmentError(f"{record.name} is an ImageNet classifier, not a segmentation model")
        by_blob = {spec.blob: spec for spec in record.inputs}
        self.inputs = []
        for name in self.model.input_names:
            spec = by_blob.get(name)
            if spec is None:
                raise SegmentError(
                    f"the net's input {name!r} is not one of {record.name}'s ({', '.join(by_blob)}): "
                    "is this the right --record?"
                )
            kinds = _SOURCE_KINDS[spec.source]
            mean = tuple(spec.mean or ())
            means = (mean[:3], mean[3:]) if len(kinds) == 2 else (mean,)
            self.inputs.append(NetInput(name, kinds, means))
        missing = [o.blob for o in record.outputs if outputs and o.blob not in outputs]
        if missing:
            raise SegmentError(
                f"the net has no output {missing[0]!r} of {record.name} (it has {', '.join(outputs)}): "
                "is this the right --record?"
            )
        self.heads = [HeadSpec(o.blob, o.task, tuple(o.classes)) for o in record.outputs]

    @property
    def main_kind(self) -> str:
        """The kind of picture the positional images are (``color``, or ``hha`` for HHA-only nets)."""
        return self.kinds[0]

    @property
    def extra_kinds(self) -> tuple[str, ...]:
        """The kinds that come from ``--input KIND=PATH`` (e.g. ``hha``, ``depth``)."""
        return self.kinds[1:]

    def prepare(self, image: ImageSource, extras: Mapping[str, ImageSource] | None = None) -> Sample:
        """Decode ``image`` (the main kind) and ``extras`` (``{kind: picture}``); all must share a size."""
        extras = dict(extras or {})
        unknown = [k for k in extras if k not in self.extra_kinds]
        if unknown:
            wanted = ", ".join(self.extra_kinds) or "none"
            raise SegmentError(
                f"--input {unknown[0]}=...: this model takes no {unknown[0]} input (extra inputs: {wanted})"
            )
        missing = [k for k in self.extra_kinds if k not in extras]
        if missing:
            raise SegmentError(
                f"{self.model.description} also needs a {missing[0]} image "
                f"(--input {missing[0]}=PATH, or inputs={{{missing[0]!r}: ...}})"
            )
        arrays = {self.main_kind: read_image(image, self.main_kind)}
        for kind in self.extra_kinds:
            arrays[kind] = read_image(extras[kind], kind)
        size = arrays[self.main_kind].shape[:2]
        for kind, array in arrays.items():
            if array.shape[:2] != size:
                source = _name(extras.get(kind, image))
                raise SegmentError(
                    f"{source}: the {kind} image is {array.shape[1]}x{array.shape[0]}, "
                    f"the {self.main_kind} image {_name(image)} {size[1]}x{size[0]}"
                )
        photo = arrays[self.main_kind]
        net_size = fit_size(size, self.max_side)
        arrays = {kind: _resized(array, net_size, kind) for kind, array in arrays.items()}
        return Sample(arrays, photo, _name(image))

    def _tensor(self, spec: NetInput, sample: Sample) -> torch.Tensor:
        parts = []
        for kind, mean in zip(spec.kinds, spec.means, strict=True):
            array = sample.arrays[kind]
            if kind == "color":
                parts.append(caffe_preprocess(array, mean)[0])
            elif kind == "hha":
                hha = array.astype(np.float32) - np.asarray(mean, dtype=np.float32)
                parts.append(torch.from_numpy(np.ascontiguousarray(hha.transpose(2, 0, 1))))
            else:  # depth: natural log minus the log-depth mean, as the NYUD data layer
                with np.errstate(divide="ignore"):
                    log_depth = np.log(array) - np.float32(mean[0])
                parts.append(torch.from_numpy(log_depth[np.newaxis].astype(np.float32)))
        return torch.cat(parts) if len(parts) > 1 else parts[0]

    def run(self, samples: Sequence[Sample]) -> list[Segmentation]:
        """Segment ``samples`` of one net size in one forward pass; scores reduced by ``max_side`` are
        scaled back to each picture's size (bilinear) before the argmax."""
        if not samples:
            return []
        size = samples[0].size
        if any(s.size != size for s in samples):
            raise SegmentError("images of different sizes cannot share a batch")
        inputs = {
            spec.blob: torch.stack([self._tensor(spec, s) for s in samples]).to(self.device)
            for spec in self.inputs
        }
        flags = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = self.allow_tf32
        try:
            with torch.inference_mode():
                try:
                    outputs = self.model.net(**inputs)
                except (MemoryError, RuntimeError, ValueError) as exc:
                    if not _out_of_memory(exc):
                        raise
                    names = ", ".join(_name(s.source) for s in samples)
                    raise SegmentError(
                        f"{names}: a {size[0]} x {size[1]} input needs more memory than this "
                        f"{self.device.type} has: segment it scaled down with --max-side (e.g. --max-side "
                        "2000) or one at a time (--batch-size 1)"
                    ) from None
                checked = self._heads(outputs, len(samples), size)
                segmentations = []
                for i, sample in enumerate(samples):
                    heads = {}
                    for spec, (classes, tensor) in checked.items():
                        scores = tensor[i : i + 1].float()
                        if sample.original_size != size:
                            scores = torch.nn.functional.interpolate(
                                scores, size=sample.original_size, mode="bilinear", align_corners=False
                            )
                        heads[spec.blob] = HeadResult(
                            blob=spec.blob, classes=classes, palette=palette(len(classes)),
                            labels=scores[0].argmax(dim=0).to("cpu", torch.int64).numpy(),
                            photo=sample.photo, scores=scores[0].cpu().numpy(), alpha=self.alpha,
                            task=spec.task,
                        )
                    segmentations.append(Segmentation(heads, sample.source, tuple(self.notes)))
        finally:
            torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = flags
        return segmentations

    def _heads(self, outputs: Mapping[str, torch.Tensor], count: int, size: tuple[int, int]) -> dict:
        results = {}
        for spec in self.heads:
            if spec.blob not in outputs:
                raise SegmentError(f"the net has no output {spec.blob!r} (it has {', '.join(outputs)})")
            tensor = outputs[spec.blob]
            if tensor.dim() != 4 or tensor.shape[0] != count:
                raise SegmentError(
                    f"output {spec.blob!r} has shape {tuple(tensor.shape)}; "
                    f"expected {count} x C x H x W scores"
                )
            if tuple(tensor.shape[2:]) != size:
                raise SegmentError(
                    f"output {spec.blob!r} is {tensor.shape[3]}x{tensor.shape[2]} pixels, the image "
                    f"{size[1]}x{size[0]}: the net does not crop its scores to the input"
                )
            channels = int(tensor.shape[1])
            classes = spec.classes or tuple(f"class_{i}" for i in range(channels))
            if len(classes) != channels:
                raise SegmentError(
                    f"output {spec.blob!r} scores {channels} classes, the record names {len(classes)}: "
                    "is this the right --record?"
                )
            results[spec] = (classes, tensor)
        return results


def _as_loaded(model: Any, device: Any, precision: str | None = None) -> LoadedModel:
    """``model`` ready to segment in ``precision`` (``None``: as built, fp32 for a spec): a spec is
    built in it; a net or model built in fp32 runs on a bf16 copy of its weights (itself unchanged)."""
    from dataclasses import replace

    from converters.graph.precision import check_precision, precision_of, reduced

    if isinstance(model, LoadedModel):
        if device is not None:
            model.net.to(device)  # type: ignore[attr-defined]
        if precision is None or precision == precision_of(model.net):
            return model
        net = reduced(model.net, precision)  # type: ignore[arg-type]
        return replace(model, net=net, precision=precision)
    if isinstance(model, torch.nn.Module) and hasattr(model, "caffe"):
        if device is not None:
            model.to(device)
        if precision is None:
            precision = precision_of(model)
        net = reduced(model, precision)
        names = list(model.caffe.inputs)
        return LoadedModel(net, type(model).__name__, input_names=names, precision=precision)
    precision = precision or "fp32"
    check_precision(precision, device if device is not None else "cpu", option="precision")
    return load_model(model, device, precision=precision)


def segment(
    model: LoadedModel | torch.nn.Module | str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    image: ImageSource,
    *,
    inputs: Mapping[str, ImageSource] | None = None,
    device: str | torch.device | None = None,
    record: str | WeightsRecord | None = None,
    alpha: float = 0.5,
    max_side: int | None = None,
    precision: str | None = None,
) -> Segmentation:
    """Segment one picture.

    ``model``: a :class:`weights.LoadedModel`, a net built by ``converters.load_caffe`` /
    ``load_converted``, or a spec for :func:`weights.load_model` (registry name, converted file,
    ``[PROTOTXT, CAFFEMODEL]``). ``image``: a file, PIL image or RGB array (EXIF orientation applied);
    ``inputs``: the other pictures a NYUD model needs, ``{"hha": ...}`` or ``{"depth": ...}``.
    ``record`` (a registry name or record) gives classes, palette and preprocessing to a model
    without one. ``max_side`` runs the net on the picture scaled down to that longest side (faster,
    less memory; no longer Caffe's numbers) and scales the scores back. ``precision="bf16"``
    computes in bfloat16 where the CPU has AMX or AVX-512 BF16 (or the GPU bf16), refused in one
    line elsewhere (:mod:`converters.graph.precision`; scores stay float32; default: as the model
    was built, fp32 for a spec). Returns labels,
    scores, the colour label map, the overlay and the classes present, all at the picture's size.
    """
    loaded = _as_loaded(model, device, precision)
    if isinstance(record, str):
        import weights

        record = weights.get(record)
    segmenter = Segmenter(loaded, record=record, alpha=alpha, max_side=max_side)
    return segmenter.run([segmenter.prepare(image, inputs)])[0]


# --- files -----------------------------------------------------------------------------------------


@dataclass
class Job:
    """One input image, its companions by kind, and the output stem (relative path, no suffix)."""

    image: Path
    stem: Path
    extras: dict[str, Path] = field(default_factory=dict)


def find_images(
    paths: Sequence[str | os.PathLike[str]], skip: str | os.PathLike[str] | None = None
) -> list[Job]:
    """Files as given, folders searched recursively for image files (sorted, leaving out the folder
    ``skip``: the output folder); output stems keep the folders' layout. Raises :class:`SegmentError`
    for a missing path, an empty folder, or two inputs that would write the same outputs."""
    skipped = Path(skip).resolve() if skip is not None else None
    jobs: list[Job] = []
    for text in paths:
        path = Path(text)
        if path.is_dir():
            found = sorted(
                p for p in path.rglob("*")
                if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
                and (skipped is None or not p.resolve().is_relative_to(skipped))
            )
            if not found:
                raise SegmentError(f"{path}: no image files ({', '.join(IMAGE_SUFFIXES)}) in this folder")
            jobs += [Job(p, p.relative_to(path).with_suffix("")) for p in found]
        elif path.is_file():
            jobs.append(Job(path, Path(path.stem)))
        else:
            raise SegmentError(f"{path}: no such image file or folder")
    seen: dict[Path, Path] = {}
    for job in jobs:
        if job.stem in seen:
            raise SegmentError(
                f"{job.image} and {seen[job.stem]} would both write {job.stem}.png: segment them separately"
            )
        seen[job.stem] = job.image
    return jobs


def attach_extras(jobs: Sequence[Job], extras: Mapping[str, str]) -> None:
    """Give each job its ``--input KIND=PATH`` picture: PATH itself for a single image, else the file
    in folder PATH with the job's relative name and any image suffix."""
    for kind, text in extras.items():
        path = Path(text)
        if path.is_file():
            if len(jobs) != 1:
                raise SegmentError(f"--input {kind}={text} is one file for {len(jobs)} images: give a folder")
            jobs[0].extras[kind] = path
            continue
        if not path.is_dir():
            raise SegmentError(f"--input {kind}={text}: no such file or folder")
        index: dict[Path, list[Path]] = {}
        for found in sorted(path.rglob("*")):
            if found.is_file() and found.suffix.lower() in IMAGE_SUFFIXES:
                index.setdefault(found.relative_to(path).with_suffix(""), []).append(found)
        for job in jobs:
            candidates = index.get(job.stem, [])
            if not candidates:
                raise SegmentError(
                    f"--input {kind}={text}: no {job.stem}.png (or other image) for {job.image}"
                )
            if len(candidates) > 1:
                raise SegmentError(
                    f"--input {kind}={text}: {len(candidates)} files for {job.image} "
                    f"({', '.join(p.name for p in candidates)})"
                )
            job.extras[kind] = candidates[0]


def output_paths(
    out: Path, stem: Path, heads: Sequence[str], overlay_format: str = "png"
) -> dict[str, dict[str, Path]]:
    """``{head blob: {"labels"|"overlay"|"scores"|"legend": path}}``; the head's blob is in the
    names only when the model has several heads."""
    result = {}
    for blob in heads:
        base = out / (f"{stem}.{blob}" if len(heads) > 1 else str(stem))
        result[blob] = {
            "labels": base.with_name(base.name + ".png"),
            "overlay": base.with_name(f"{base.name}.overlay.{overlay_format}"),
            "scores": base.with_name(base.name + ".scores.npy"),
            "legend": base.with_name(base.name + ".legend.png"),
        }
    return result


#: Pillow format and options of each ``--overlay-format``.
OVERLAY_FORMATS = {"png": ("PNG", {}), "jpg": ("JPEG", {"quality": 92}), "webp": ("WEBP", {"quality": 90})}


def _save_image(image: Image.Image, path: Path) -> None:
    kind, options = OVERLAY_FORMATS.get(path.suffix.lower().lstrip("."), ("PNG", {}))
    with atomic_write(path) as handle:
        image.save(handle, format=kind, **options)


def _save_npy(array: np.ndarray, path: Path) -> None:
    with atomic_write(path) as handle:
        np.save(handle, array, allow_pickle=False)


def write_outputs(
    result: Segmentation, paths: Mapping[str, Mapping[str, Path]], *, scores: bool, legend: bool
) -> list[Path]:
    """Write one image's files (labels and overlay; scores and legend on request), atomically."""
    written = []
    for blob, head in result.heads.items():
        where = paths[blob]
        where["labels"].parent.mkdir(parents=True, exist_ok=True)
        _save_image(head.colour, where["labels"])
        _save_image(head.overlay, where["overlay"])
        written += [where["labels"], where["overlay"]]
        if scores and head.scores is not None:
            _save_npy(head.scores, where["scores"])
            written.append(where["scores"])
        if legend:
            title = f"{blob} ({head.task})" if len(result.heads) > 1 else None
            _save_image(head.legend(title), where["legend"])
            written.append(where["legend"])
    return written


# --- command line ----------------------------------------------------------------------------------


def build_parser(prog: str = "python -m reproduce.segment") -> argparse.ArgumentParser:
    """The command line of ``python -m reproduce.segment`` (also ``fcn-port segment``)."""
    from converters.cli import Parser
    from converters.graph.precision import add_precision_option

    parser = Parser(
        prog=prog,
        description="Segment images with an FCN model: a colour label PNG (pixel = class index) and an "
        "overlay for each image, on request the raw scores (.npy) and a legend of the classes present.",
        epilog="Outputs for DIR/a/b.jpg: OUT/a/b.png, OUT/a/b.overlay.png, OUT/a/b.scores.npy (--scores), "
        "OUT/a/b.legend.png (--legend); two-head models (SIFT Flow) put the output blob in the names "
        "(b.score_sem.png, b.score_geo.png ...). Exit 0; 2 with one error: line for bad input, or for each "
        "image that cannot be read (the others are still written).",
    )
    parser.add_argument(
        "--model", nargs="+", required=True, metavar="MODEL",
        help="registry name (voc-fcn8s ...), converted .safetensors/.pt file, PROTOTXT CAFFEMODEL, or "
        "NAME CAFFEMODEL (a registry net with other weights)",
    )
    parser.add_argument("images", nargs="*", metavar="IMAGE_OR_FOLDER", help="images, or folders of images")
    parser.add_argument("-o", "--output", required=True, metavar="OUT", help="folder for the results")
    parser.add_argument(
        "--input", action="append", metavar="KIND=PATH",
        help="the other pictures a NYUD model takes: hha=DIR or depth=DIR (same relative names as the "
        "images, any image suffix), or a file for a single image",
    )
    parser.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--batch-size", type=int, default=4, help="same-size images per forward (default 4)")
    parser.add_argument("--scores", action="store_true", help="also write the raw scores (C x H x W .npy)")
    parser.add_argument("--legend", action="store_true", help="also write a legend of the classes present")
    parser.add_argument(
        "--max-side", type=int, metavar="PIXELS",
        help="run the net on images scaled down to this longest side, scores scaled back (faster, less "
        "memory, not Caffe's numbers; default: full size)",
    )
    parser.add_argument(
        "--overlay-format", choices=tuple(OVERLAY_FORMATS), default="png",
        help="file format of the overlays (default png; jpg and webp are smaller)",
    )
    parser.add_argument("--alpha", type=float, default=0.5, help="overlay colour opacity (default 0.5)")
    parser.add_argument(
        "--record", metavar="NAME",
        help="take preprocessing, classes and palette from this registry model (for converted files)",
    )
    parser.add_argument("--cache-dir", metavar="DIR", help="weights cache for registry models")
    add_download_option(parser)
    parser.add_argument("--allow-tf32", action="store_true", help="let CUDA use TensorFloat-32 (Caffe: fp32)")
    add_precision_option(parser)  # --precision {fp32,bf16}
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def _split_model(values: Sequence[str], images: Sequence[str]) -> tuple[list[str], list[str]]:
    """``--model`` swallows the images that follow it: keep one value, or two when the second is a
    caffemodel (``PROTOTXT CAFFEMODEL``, ``NAME CAFFEMODEL``) or follows a prototxt."""
    take = 1
    if len(values) > 1:
        second = Path(values[1])
        if second.name.lower().endswith(CAFFEMODEL_SUFFIXES):
            take = 2
        elif Path(values[0]).suffix.lower() in PROTOTXT_SUFFIXES:  # the weights, unless an image
            take = 1 if second.suffix.lower() in IMAGE_SUFFIXES or second.is_dir() else 2
    return list(values[:take]), list(values[take:]) + list(images)


def _missing_folders(folder: Path) -> list[Path]:
    """``folder`` and its parents that do not exist yet, deepest first."""
    missing = []
    for candidate in (folder, *folder.parents):
        if candidate.exists():
            break
        missing.append(candidate)
    return missing


def _remove_empty(folders: Sequence[Path]) -> None:
    """Remove the folders this run made (deepest first) that hold nothing; stop at the first that does."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return


def _batches(jobs: Sequence[Job], sizes: Sequence[tuple[int, int]], batch_size: int) -> list[list[int]]:
    groups: dict[tuple[int, int], list[int]] = {}
    for index, size in enumerate(sizes):
        groups.setdefault(size, []).append(index)
    return [
        members[i : i + batch_size] for members in groups.values() for i in range(0, len(members), batch_size)
    ]


def _report(message: str) -> None:
    """One image that could not be segmented: one ``error:`` line (above the progress bar)."""
    from tqdm import tqdm

    tqdm.write(f"error: {message}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    """Segment as ``args`` ask; returns the exit code (errors users can cause raise ``ValueError``).

    An image that cannot be read (its header or its pixels) is reported in one ``error:`` line and
    left out; the others are segmented and written whatever the batch size, and the exit code is 2."""
    from converters.cli import EXIT_BAD_INPUT
    from converters.cli import device as parse_device
    from converters.graph.precision import check_precision
    from eval.models import parse_assignments

    spec, images = _split_model(args.model, args.images)
    if not images:
        raise SegmentError("no images given: name image files or folders after the model")
    if args.batch_size < 1:
        raise SegmentError("--batch-size must be at least 1")
    if args.max_side is not None and args.max_side < 1:
        raise SegmentError("--max-side must be at least 1")
    if not 0.0 <= args.alpha <= 1.0:
        raise SegmentError("--alpha must lie in 0..1")
    out = Path(args.output)
    if out.exists() and not out.is_dir():
        raise SegmentError(f"-o {out}: exists and is not a folder")
    extras = parse_assignments(args.input, "--input")
    unknown = [k for k in extras if k not in KINDS]
    if unknown:
        raise SegmentError(f"--input {unknown[0]}=...: kinds are {', '.join(KINDS[1:])}")
    jobs = find_images(images, skip=out)
    attach_extras(jobs, extras)
    record = None
    if args.record:
        import weights

        record = weights.get(args.record)
    device = parse_device(args.device)
    support = check_precision(args.precision, device)  # one line and exit 2 before anything loads
    if len(spec) == 1 and Path(spec[0]).suffix.lower() in PROTOTXT_SUFFIXES:
        raise SegmentError(
            f"{spec[0]} is a net definition; give its weights too: --model {spec[0]} CAFFEMODEL"
        )
    if len(spec) == 1 and spec[0].lower().endswith(CAFFEMODEL_SUFFIXES):
        raise SegmentError(
            f"{spec[0]} holds weights only; give the net with it: --model PROTOTXT {spec[0]}, or "
            f"--model NAME {spec[0]} for a registry net (e.g. voc-fcn8s)"
        )
    # Every header read before the model is built: batches by the size the net sees; an image whose
    # header cannot be read is reported and left out.
    failures = 0
    readable, sizes = [], []
    for job in jobs:
        try:
            sizes.append(fit_size(image_size(job.image), args.max_side))
        except SegmentError as exc:
            _report(str(exc))
            failures += 1
            continue
        readable.append(job)
    if not readable:
        return EXIT_BAD_INPUT
    model = load_model(
        spec, device, cache_dir=args.cache_dir, download=args.download, precision=args.precision
    )
    random = list(model.net.caffe.randomly_initialised)
    if random:
        more = " ..." if len(random) > 4 else ""
        raise ModelError(f"the weights lack layer(s) {', '.join(random[:4])}{more}: segmenting needs them")
    segmenter = Segmenter(
        model, record=record, alpha=args.alpha, allow_tf32=args.allow_tf32, max_side=args.max_side
    )
    if segmenter.main_kind in extras:
        kind = segmenter.main_kind
        raise SegmentError(f"--input {kind}=...: the images given are the {kind} input")
    missing = [k for k in segmenter.extra_kinds if k not in extras]
    if missing:
        raise SegmentError(
            f"{model.description} also needs {missing[0]} images: give them with --input {missing[0]}=DIR"
        )
    stray = [k for k in extras if k not in segmenter.extra_kinds]
    if stray:
        raise SegmentError(f"--input {stray[0]}=...: {model.description} takes no {stray[0]} input")
    if support is not None:
        print(f"note: computing in {support.label}; outputs are float32")
    for note in segmenter.notes:
        print(f"note: {note}")
    jobs = readable
    heads = [h.blob for h in segmenter.heads]
    paths = [output_paths(out, job.stem, heads, args.overlay_format) for job in jobs]
    owners: dict[Path, Path] = {}
    for job, files in zip(jobs, paths, strict=True):
        for path in (p for where in files.values() for p in where.values()):
            if owners.setdefault(path, job.image) != job.image:
                raise SegmentError(f"{job.image} and {owners[path]} would both write {path}: segment apart")
    created = _missing_folders(out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        check_writable(out / "segment.png", "-o")
        started = time.perf_counter()
        written, bad = _segment_all(segmenter, jobs, sizes, paths, args)
    finally:
        _remove_empty(created)  # an output folder this run made is not left behind empty
    seconds = time.perf_counter() - started
    total = len(jobs) + failures
    failures += bad
    counted = f"{total - failures} of {total}" if failures else f"{total}"
    where = f"{written} files in {out}" if written else "nothing written"
    on = f"{device} in {args.precision}" if support is not None else f"{device}"
    print(f"segmented {counted} image(s) with {model.description} on {on} in {seconds:.1f} s: {where}")
    return EXIT_BAD_INPUT if failures else EXIT_OK


def _segment_all(
    segmenter: Segmenter, jobs: Sequence[Job], sizes: Sequence[tuple[int, int]],
    paths: Sequence[Mapping[str, Mapping[str, Path]]], args: argparse.Namespace,
) -> tuple[int, int]:
    """Segment ``jobs`` in batches of one size, decoding the next batch and writing the last one's
    files while a batch runs. An image whose pixels cannot be read is reported and left out of its
    batch. Returns (files written, images left out)."""
    from tqdm import tqdm

    written = bad = 0
    writers = concurrent.futures.ThreadPoolExecutor(max_workers=2)
    reader = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    pending: list[concurrent.futures.Future] = []
    batches = _batches(jobs, sizes, args.batch_size)

    def load(batch: list[int]) -> tuple[list[int], list[Sample], list[str]]:
        kept, samples, failed = [], [], []
        for i in batch:
            try:
                samples.append(segmenter.prepare(jobs[i].image, jobs[i].extras))
                kept.append(i)
            except SegmentError as exc:
                failed.append(str(exc))
        return kept, samples, failed

    bar = tqdm(total=len(jobs), unit="img", desc="segment", file=sys.stderr,
               disable=True if args.no_progress else None, dynamic_ncols=True)
    try:
        upcoming = reader.submit(load, batches[0])
        for number, batch in enumerate(batches):
            kept, samples, failed = upcoming.result()
            if number + 1 < len(batches):  # the next batch decodes while this one runs
                upcoming = reader.submit(load, batches[number + 1])
            for message in failed:
                _report(message)
            bad += len(failed)
            results = segmenter.run(samples)
            for future in pending:  # one batch of files in flight while the next one runs
                written += len(future.result())
            pending = [
                writers.submit(write_outputs, result, paths[i], scores=args.scores, legend=args.legend)
                for i, result in zip(kept, results, strict=True)
            ]
            bar.update(len(batch))
        for future in pending:
            written += len(future.result())
        pending = []
    finally:
        bar.close()
        reader.shutdown(wait=True, cancel_futures=True)
        writers.shutdown(wait=True, cancel_futures=True)
        for future in pending:  # files finished before an error or Ctrl-C still count
            if future.done() and not future.cancelled() and future.exception() is None:
                written += len(future.result())
    return written, bad


def main(argv: Sequence[str] | None = None, prog: str = "python -m reproduce.segment") -> int:
    """Parse ``argv`` and segment: 0 on success, 2 with one ``error:`` line on bad input, 130 on
    Ctrl-C (files already written are complete; none is left half-written)."""
    from converters.cli import run as run_command

    return run_command(lambda: run(build_parser(prog).parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
