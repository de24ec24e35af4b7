"""The evaluation sets of the official FCN models, read as the official data layers read them.

Every dataset yields samples ``{"index", "id", "inputs": {modality: float32 CxHxW tensor},
"labels": {head: uint8 HxW tensor}}``. Inputs are preprocessed as the dataset's Caffe data layer
did (RGB -> BGR, that layer's mean subtracted, CHW); labels use 255 for "ignore".

Layouts (the directory you pass as the dataset root):

- PASCAL VOC: a year folder with ``JPEGImages/<id>.jpg`` and ``SegmentationClass/<id>.png`` (palette
  PNGs, 255 on borders and ambiguous regions), or a ``VOCdevkit`` folder (or its parent) holding it.
- SBD: the ``dataset`` folder of ``benchmark_RELEASE`` (``img/<id>.jpg``, ``cls/<id>.mat``, ``val.txt``).
- PASCAL-Context: the VOC 2010 folder (``JPEGImages``, ``ImageSets/Main/val.txt``) and the Context
  annotations folder (``trainval/<id>.mat`` with ``LabelMap``, the 459 full labels).
- NYUDv2 (the FCN authors' ``nyud.tar.gz``): ``data/images/img_<id>.png``, ``data/depth/img_<id>.png``,
  ``data/hha/img_<id>.png``, ``segmentation/img_<id>.mat`` (``segmentation``, 0 void, 1..40).
- SIFT Flow: ``Images/``, ``SemanticLabels/``, ``GeoLabels/``, each with the
  ``spatial_envelope_256x256_static_8outdoorcategories`` sub-folder (labels in ``.mat`` ``S``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from converters.fcn.datasets import (
    CONTEXT_CLASSES,
    CONTEXT_FULL_LABEL,
    CONTEXT_MEAN,
    NYUD_CLASSES,
    NYUD_MEAN_BGR,
    NYUD_MEAN_HHA,
    NYUD_MEAN_LOGD,
    SIFTFLOW_ABSENT_CLASSES,
    SIFTFLOW_GEOMETRIC_CLASSES,
    SIFTFLOW_MEAN,
    SIFTFLOW_SEMANTIC_CLASSES,
    VOC_CLASSES,
    VOC_MEAN,
)
from converters.fcn.preprocess import caffe_preprocess

SPLITS_DIR = Path(__file__).resolve().parent / "splits"
IGNORE_LABEL = 255

SIFTFLOW_SUBDIR = "spatial_envelope_256x256_static_8outdoorcategories"


class DatasetError(ValueError):
    """A dataset root is missing, malformed or lacks files of the requested split (one clear line)."""


@dataclass(frozen=True)
class Head:
    """One labelling of a dataset (SIFT Flow has two): its classes and classes left out of averages."""

    name: str
    classes: tuple[str, ...]
    exclude: tuple[int, ...] = ()

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def read_split(path: Path) -> list[str]:
    """The image ids of a split file (one per line, blank lines skipped)."""
    try:
        text = path.read_text()
    except OSError as error:
        raise DatasetError(f"cannot read split list {path}: {error.strerror or error}") from None
    except UnicodeDecodeError as error:
        raise DatasetError(
            f"split list {path} is not text (byte {error.start} is not UTF-8): one image id per line"
        ) from None
    return [line.strip() for line in text.splitlines() if line.strip()]


def packaged_split(name: str) -> list[str]:
    """A split list shipped with the package (``eval/splits/<name>.txt``)."""
    return read_split(SPLITS_DIR / f"{name}.txt")


def _pixels(path: Path, modes: Sequence[str] | None = None, convert: str | None = None) -> np.ndarray:
    """The pixels of the image at ``path`` (converted to ``convert``; its mode one of ``modes``):
    a file PIL cannot read or decode whole (truncated, damaged, a bomb) is one
    :class:`DatasetError` naming it."""
    try:
        with Image.open(path) as image:
            if modes is not None and image.mode not in modes:
                raise DatasetError(
                    f"{path}: expected a palette (P) or greyscale PNG of labels, not {image.mode}"
                )
            return np.array(image.convert(convert) if convert else image)
    except DatasetError:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        reason = " ".join(str(error).split()) or type(error).__name__
        raise DatasetError(f"{path}: cannot read the image ({reason})") from None


def _rgb(path: Path) -> np.ndarray:
    return _pixels(path, convert="RGB")


def caffe_input(rgb: np.ndarray, mean: Sequence[float]) -> torch.Tensor:
    """An HxWx3 uint8 RGB image as a 3xHxW float32 BGR tensor minus ``mean`` (B, G, R)."""
    return caffe_preprocess(rgb, mean=mean)[0]


def _color_input(path: Path, mean: Sequence[float]) -> torch.Tensor:
    return caffe_input(_rgb(path), mean)


def _palette_label(path: Path) -> np.ndarray:
    return _pixels(path, modes=("P", "L")).astype(np.uint8, copy=False)


def _loadmat(path: Path) -> dict:
    import scipy.io

    try:
        return scipy.io.loadmat(str(path))
    except (OSError, ValueError) as error:
        raise DatasetError(f"cannot read {path}: {error}") from None


class SegmentationDataset(torch.utils.data.Dataset):
    """Base class: a list of ids, input modalities to load, and labels per head."""

    name: str = ""
    heads: tuple[Head, ...] = ()
    modalities: tuple[str, ...] = ("color",)

    def __init__(
        self, ids: Sequence[str], modalities: Sequence[str] | None = None, limit: int | None = None
    ) -> None:
        self.ids = list(ids) if limit is None else list(ids)[:limit]
        wanted = tuple(self.modalities[:1]) if modalities is None else tuple(modalities)
        unknown = [m for m in wanted if m not in self.modalities]
        if unknown:
            raise DatasetError(
                f"{self.name} has no input {unknown[0]!r}; it provides {', '.join(self.modalities)}"
            )
        self.wanted = wanted
        self.check_files()

    def __len__(self) -> int:
        return len(self.ids)

    def files(self, image_id: str) -> list[Path]:
        """The files one sample needs (checked up front so a bad root fails at once)."""
        raise NotImplementedError

    def layout(self) -> str:
        """What the root should contain, for error messages."""
        raise NotImplementedError

    def check_files(self) -> None:
        """Raise :class:`DatasetError` naming the first missing file and how many are missing."""
        if not self.ids:
            raise DatasetError(f"{self.name}: the split list is empty")
        missing = [p for i in self.ids for p in self.files(i) if not p.is_file()]
        odd = [p for p in missing if os.path.lexists(p)]
        if odd:  # there, but a folder, a FIFO (which would block the reader), a device, a dead link
            from converters.caffe.formats import refuse_special_file

            path = odd[0]
            if path.is_dir():
                raise DatasetError(f"{self.name}: {path} is a folder, not a file")
            try:
                refuse_special_file(path)
            except ValueError as error:
                raise DatasetError(f"{self.name}: {error}") from None
            raise DatasetError(f"{self.name}: {path} is not a regular file (a broken link?)")
        if missing:
            raise DatasetError(
                f"{self.name}: {len(missing)} file(s) of the split are missing, first {missing[0]} "
                f"(expected {self.layout()})"
            )

    def load_input(self, image_id: str, modality: str) -> torch.Tensor:
        raise NotImplementedError

    def load_labels(self, image_id: str) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def __getitem__(self, index: int) -> dict:
        image_id = self.ids[index]
        inputs = {m: self.load_input(image_id, m) for m in self.wanted}
        labels = {h: torch.from_numpy(np.ascontiguousarray(v)) for h, v in self.load_labels(image_id).items()}
        return {"index": index, "id": image_id, "inputs": inputs, "labels": labels}


def _check_root(root: Path, what: str, expected: str = "") -> None:
    """A dataset root that is missing or a file, named as what it is (:class:`DatasetError`)."""
    if root.is_dir():
        return
    extra = f" ({expected})" if expected else ""
    if root.exists():
        raise DatasetError(f"{what} {root} is a file, not a folder{extra}")
    raise DatasetError(f"{what} {root} does not exist{extra}")


def _find_dir(root: Path, candidates: Sequence[str], marker: str) -> Path | None:
    for candidate in candidates:
        path = root / candidate if candidate else root
        if (path / marker).is_dir():
            return path
    return None


class VOCSegmentation(SegmentationDataset):
    """PASCAL VOC segmentation (``seg11valid``, VOC2011 ``val``, VOC2012 ``val``), as ``voc_layers.py``."""

    name = "PASCAL VOC"
    heads = (Head("semantic", VOC_CLASSES),)
    SPLITS = {"seg11valid": "VOC2011", "val2011": "VOC2011", "val2012": "VOC2012"}
    ALIASES = {"voc2011-val": "val2011", "voc2012-val": "val2012", "2011val": "val2011", "2012val": "val2012"}

    def __init__(
        self,
        root: str | os.PathLike[str],
        split: str = "seg11valid",
        modalities: Sequence[str] | None = None,
        limit: int | None = None,
    ) -> None:
        split = self.ALIASES.get(split, split)
        if split not in self.SPLITS:
            raise DatasetError(f"unknown VOC split {split!r}; choose from {', '.join(self.SPLITS)}")
        self.split = split
        self.root = self.year_dir(Path(root), self.SPLITS[split], strict=split != "seg11valid")
        if split == "seg11valid":
            ids = packaged_split("seg11valid")
        else:
            list_path = self.root / "ImageSets" / "Segmentation" / "val.txt"
            if not list_path.is_file():
                raise DatasetError(f"{self.root}: no ImageSets/Segmentation/val.txt (the devkit's val list)")
            ids = read_split(list_path)
        super().__init__(ids, modalities, limit)

    @staticmethod
    def year_dir(root: Path, year: str, strict: bool = True) -> Path:
        """The folder with JPEGImages/SegmentationClass: ``root`` itself, ``root/VOC20xx`` or
        ``root/VOCdevkit/VOC20xx``. Without ``strict``, another year's folder is accepted."""
        _check_root(root, "VOC root", f"expected a {year} folder or VOCdevkit")
        years = [year] if strict else [year, "VOC2012", "VOC2011"]
        candidates = [""] + [f"{y}" for y in years] + [f"VOCdevkit/{y}" for y in years]
        found = _find_dir(root, candidates, "SegmentationClass")
        if found is None or not (found / "JPEGImages").is_dir():
            raise DatasetError(
                f"{root} is not a PASCAL VOC root: expected JPEGImages/ and SegmentationClass/ in it, "
                f"in {root}/{year} or in {root}/VOCdevkit/{year}"
            )
        if found == root and strict and root.name.upper().startswith("VOC20") and root.name != year:
            raise DatasetError(f"{root} is {root.name}, but this split needs {year}")
        return found

    def layout(self) -> str:
        return f"{self.root}/JPEGImages/<id>.jpg and {self.root}/SegmentationClass/<id>.png"

    def files(self, image_id: str) -> list[Path]:
        files = [self.root / "SegmentationClass" / f"{image_id}.png"]
        if self.wanted:
            files.append(self.root / "JPEGImages" / f"{image_id}.jpg")
        return files

    def load_input(self, image_id: str, modality: str) -> torch.Tensor:
        return _color_input(self.root / "JPEGImages" / f"{image_id}.jpg", VOC_MEAN)

    def load_labels(self, image_id: str) -> dict[str, np.ndarray]:
        return {"semantic": _palette_label(self.root / "SegmentationClass" / f"{image_id}.png")}


class SBDSegmentation(SegmentationDataset):
    """SBD (Hariharan et al.) ``val`` (or ``train``), as the official ``SBDDSegDataLayer`` reads it."""

    name = "SBD"
    heads = (Head("semantic", VOC_CLASSES),)

    def __init__(
        self,
        root: str | os.PathLike[str],
        split: str = "val",
        modalities: Sequence[str] | None = None,
        limit: int | None = None,
    ) -> None:
        root = Path(root)
        _check_root(root, "SBD root", "expected benchmark_RELEASE/dataset with img/ and cls/")
        found = _find_dir(root, ["", "dataset", "benchmark_RELEASE/dataset"], "cls")
        if found is None or not (found / "img").is_dir():
            raise DatasetError(
                f"{root} is not an SBD root: expected img/ and cls/ (benchmark_RELEASE/dataset) in it"
            )
        self.root = found
        self.split = split
        super().__init__(read_split(found / f"{split}.txt"), modalities, limit)

    def layout(self) -> str:
        return f"{self.root}/img/<id>.jpg and {self.root}/cls/<id>.mat"

    def files(self, image_id: str) -> list[Path]:
        files = [self.root / "cls" / f"{image_id}.mat"]
        if self.wanted:
            files.append(self.root / "img" / f"{image_id}.jpg")
        return files

    def load_input(self, image_id: str, modality: str) -> torch.Tensor:
        return _color_input(self.root / "img" / f"{image_id}.jpg", VOC_MEAN)

    def load_labels(self, image_id: str) -> dict[str, np.ndarray]:
        path = self.root / "cls" / f"{image_id}.mat"
        try:
            label = _loadmat(path)["GTcls"][0]["Segmentation"][0]
        except (KeyError, IndexError, ValueError):
            raise DatasetError(f"{path}: no GTcls.Segmentation") from None
        return {"semantic": np.asarray(label).astype(np.uint8)}


class ContextSegmentation(SegmentationDataset):
    """PASCAL-Context, 59 classes plus background (0), as ``pascalcontext_layers.py`` maps them."""

    name = "PASCAL-Context"
    heads = (Head("semantic", CONTEXT_CLASSES),)

    def __init__(
        self,
        voc_root: str | os.PathLike[str],
        context_root: str | os.PathLike[str],
        split: str = "val",
        modalities: Sequence[str] | None = None,
        limit: int | None = None,
    ) -> None:
        _check_root(Path(voc_root), "VOC root", "expected a VOC2010 folder or VOCdevkit")
        _check_root(Path(context_root), "PASCAL-Context root", "expected trainval/<id>.mat")
        self.voc_root = _find_dir(Path(voc_root), ["", "VOC2010", "VOCdevkit/VOC2010"], "JPEGImages")
        if self.voc_root is None or not (self.voc_root / "ImageSets" / "Main").is_dir():
            raise DatasetError(
                f"{voc_root} is not a VOC 2010 root: expected JPEGImages/ and ImageSets/Main/ in it, "
                "in VOC2010/ or in VOCdevkit/VOC2010/"
            )
        context_root = Path(context_root)
        found = _find_dir(context_root, ["", "trainval"], "trainval")
        if found is None:
            raise DatasetError(f"{context_root} is not a PASCAL-Context root: expected trainval/<id>.mat")
        self.context_root = found
        self.split = split
        super().__init__(read_split(self.voc_root / "ImageSets" / "Main" / f"{split}.txt"), modalities, limit)
        self._lookup = np.zeros(max(CONTEXT_FULL_LABEL) + 1, dtype=np.uint8)
        for task_label, full_label in enumerate(CONTEXT_FULL_LABEL, start=1):
            self._lookup[full_label] = task_label

    def layout(self) -> str:
        return f"{self.voc_root}/JPEGImages/<id>.jpg and {self.context_root}/trainval/<id>.mat"

    def files(self, image_id: str) -> list[Path]:
        files = [self.context_root / "trainval" / f"{image_id}.mat"]
        if self.wanted:
            files.append(self.voc_root / "JPEGImages" / f"{image_id}.jpg")
        return files

    def load_input(self, image_id: str, modality: str) -> torch.Tensor:
        return _color_input(self.voc_root / "JPEGImages" / f"{image_id}.jpg", CONTEXT_MEAN)

    def load_labels(self, image_id: str) -> dict[str, np.ndarray]:
        path = self.context_root / "trainval" / f"{image_id}.mat"
        try:
            full = np.asarray(_loadmat(path)["LabelMap"]).astype(np.int64)
        except KeyError:
            raise DatasetError(f"{path}: no LabelMap") from None
        inside = (full >= 0) & (full < len(self._lookup))
        label = np.zeros(full.shape, dtype=np.uint8)
        label[inside] = self._lookup[full[inside]]
        return {"semantic": label}


class NYUDSegmentation(SegmentationDataset):
    """NYUDv2, 40 classes (Gupta et al.), with colour, HHA and log-depth inputs, as ``nyud_layers.py``.

    Modalities: ``color`` (BGR minus mean), ``hha`` (minus mean), ``depth`` (log depth minus mean,
    1 channel) and ``color-depth`` (the 4-channel early-fusion input: colour then log depth).
    """

    name = "NYUDv2"
    heads = (Head("semantic", NYUD_CLASSES),)
    modalities = ("color", "hha", "depth", "color-depth")

    def __init__(
        self,
        root: str | os.PathLike[str],
        split: str = "test",
        modalities: Sequence[str] | None = None,
        limit: int | None = None,
    ) -> None:
        root = Path(root)
        _check_root(root, "NYUDv2 root", "expected the FCN authors' nyud.tar.gz layout")
        found = _find_dir(root, ["", "nyud"], "segmentation")
        if found is None or not (found / "data").is_dir():
            raise DatasetError(
                f"{root} is not an NYUDv2 root: expected data/images/, data/hha/, data/depth/ and "
                "segmentation/ (the FCN authors' nyud.tar.gz layout)"
            )
        self.root = found
        self.split = split
        own = found / f"{split}.txt"
        if own.is_file():
            ids = read_split(own)
        elif (SPLITS_DIR / f"nyud-{split}.txt").is_file():
            ids = packaged_split(f"nyud-{split}")
        else:
            raise DatasetError(f"{found}: no split list {split}.txt")
        super().__init__(ids, modalities, limit)

    def layout(self) -> str:
        return f"{self.root}/data/{{images,hha,depth}}/img_<id>.png and {self.root}/segmentation/img_<id>.mat"

    def _path(self, kind: str, image_id: str) -> Path:
        folder = {"color": "images", "hha": "hha", "depth": "depth"}[kind]
        return self.root / "data" / folder / f"img_{image_id}.png"

    def files(self, image_id: str) -> list[Path]:
        files = [self.root / "segmentation" / f"img_{image_id}.mat"]
        for modality in self.wanted:
            for kind in ("color", "depth") if modality == "color-depth" else (modality,):
                files.append(self._path(kind, image_id))
        return files

    def load_input(self, image_id: str, modality: str) -> torch.Tensor:
        if modality == "color":
            return _color_input(self._path("color", image_id), NYUD_MEAN_BGR)
        if modality == "hha":
            hha = _pixels(self._path("hha", image_id)).astype(np.float32)
            hha -= np.float32(NYUD_MEAN_HHA)
            return torch.from_numpy(np.ascontiguousarray(hha.transpose(2, 0, 1)))
        if modality == "depth":
            depth = _pixels(self._path("depth", image_id)).astype(np.float32)
            with np.errstate(divide="ignore"):
                log_depth = np.log(depth) - np.float32(NYUD_MEAN_LOGD[0])
            return torch.from_numpy(log_depth[np.newaxis].astype(np.float32))
        return torch.cat([self.load_input(image_id, "color"), self.load_input(image_id, "depth")], dim=0)

    def load_labels(self, image_id: str) -> dict[str, np.ndarray]:
        path = self.root / "segmentation" / f"img_{image_id}.mat"
        try:
            label = np.asarray(_loadmat(path)["segmentation"]).astype(np.uint8)
        except KeyError:
            raise DatasetError(f"{path}: no 'segmentation' array") from None
        return {"semantic": label - np.uint8(1)}  # 0 (void) wraps to 255


class SIFTFlowSegmentation(SegmentationDataset):
    """SIFT Flow: 33 semantic and 3 geometric classes, as ``siftflow_layers.py`` reads them."""

    name = "SIFT Flow"
    heads = (
        Head("semantic", SIFTFLOW_SEMANTIC_CLASSES, exclude=SIFTFLOW_ABSENT_CLASSES),
        Head("geometric", SIFTFLOW_GEOMETRIC_CLASSES),
    )

    def __init__(
        self,
        root: str | os.PathLike[str],
        split: str = "test",
        modalities: Sequence[str] | None = None,
        limit: int | None = None,
    ) -> None:
        root = Path(root)
        _check_root(root, "SIFT Flow root", "expected Images/, SemanticLabels/ and GeoLabels/")
        found = _find_dir(root, ["", "SiftFlowDataset", "sift-flow"], "SemanticLabels")
        if found is None or not (found / "GeoLabels").is_dir() or not (found / "Images").is_dir():
            raise DatasetError(
                f"{root} is not a SIFT Flow root: expected Images/, SemanticLabels/ and GeoLabels/ "
                f"(each with {SIFTFLOW_SUBDIR}/) in it"
            )
        self.root = found
        self.split = split
        own = found / f"{split}.txt"
        if own.is_file():
            ids = read_split(own)
        elif (SPLITS_DIR / f"siftflow-{split}.txt").is_file():
            ids = packaged_split(f"siftflow-{split}")
        else:
            raise DatasetError(f"{found}: no split list {split}.txt")
        super().__init__(ids, modalities, limit)

    def layout(self) -> str:
        return f"{self.root}/{{Images,SemanticLabels,GeoLabels}}/{SIFTFLOW_SUBDIR}/<id>.{{jpg,mat}}"

    def files(self, image_id: str) -> list[Path]:
        kinds = ("SemanticLabels", "GeoLabels")
        files = [self.root / kind / SIFTFLOW_SUBDIR / f"{image_id}.mat" for kind in kinds]
        if self.wanted:
            files.append(self.root / "Images" / SIFTFLOW_SUBDIR / f"{image_id}.jpg")
        return files

    def load_input(self, image_id: str, modality: str) -> torch.Tensor:
        return _color_input(self.root / "Images" / SIFTFLOW_SUBDIR / f"{image_id}.jpg", SIFTFLOW_MEAN)

    def load_labels(self, image_id: str) -> dict[str, np.ndarray]:
        labels = {}
        for head, kind in (("semantic", "SemanticLabels"), ("geometric", "GeoLabels")):
            path = self.root / kind / SIFTFLOW_SUBDIR / f"{image_id}.mat"
            try:
                raw = np.asarray(_loadmat(path)["S"]).astype(np.int64)
            except KeyError:
                raise DatasetError(f"{path}: no 'S' array") from None
            if head == "geometric":
                raw[raw == -1] = 0
            labels[head] = ((raw - 1) % 256).astype(np.uint8)  # 0 (void) -> 255
        return labels
