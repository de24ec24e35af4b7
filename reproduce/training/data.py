"""Training and validation data of each FCN model, fed as the official Python data layers feed it.

The official layers (``voc_layers.py``, ``nyud_layers.py``, ``siftflow_layers.py``,
``pascalcontext_layers.py``) give one whole image per iteration (batch 1, no crop, no flip, no
scaling), preprocessed as Caffe expects (RGB -> BGR, minus the layer's mean, CHW), labels with 255
for "ignore". In training they seed Python's ``random`` with 1337 and draw the next image with
``random.randint(0, n - 1)``: the first draw at set-up, one after every forward. They ran under
Python 2, whose ``randint`` is ``int(random() * n)`` on the same Mersenne Twister stream that
``random.seed(1337)`` gives in Python 3; :func:`official_order` reproduces that sequence, so sample
``k`` of a run is the image Caffe's layer gave at its ``k``-th forward.

Sample ``k`` is a pure function of ``k`` (no state to save): a run resumed at iteration ``i`` sees the
images an uninterrupted run would. With ``W`` processes and ``iter_size`` ``s``, process ``r`` takes
sample ``(i * W + r) * s + p`` at pass ``p`` of iteration ``i``: one stream dealt out, so ``W``
processes see the images one process sees with ``iter_size`` ``W * s``.
"""

from __future__ import annotations

import os
import random
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from converters.caffe.formats import refuse_special_file
from converters.errors import UsageError
from eval.datasets import (
    IGNORE_LABEL,
    ContextSegmentation,
    DatasetError,
    NYUDSegmentation,
    SBDSegmentation,
    SegmentationDataset,
    SIFTFlowSegmentation,
    VOCSegmentation,
    read_split,
)

__all__ = [
    "SEED",
    "DataRoots",
    "FeedSource",
    "OfficialOrder",
    "VOCListSegmentation",
    "check_sample_files",
    "input_blobs",
    "load_feeds",
    "official_order",
    "train_dataset",
    "val_dataset",
]

SEED = 1337  # the seed in every official train.prototxt's param_str
#: Files of a sample read as images (their size is checked from the header first).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")

#: Environment variables of the dataset roots (the evaluators' names, plus SBD's).
ROOT_VARIABLES = {
    "sbd": "FCN_PORT_SBD",
    "voc": "FCN_PORT_VOC2011",
    "voc2010": "FCN_PORT_VOC2010",
    "context": "FCN_PORT_CONTEXT",
    "nyud": "FCN_PORT_NYUD",
    "siftflow": "FCN_PORT_SIFTFLOW",
}
#: Where each dataset comes from (for "missing" messages).
DOWNLOADS = {
    "sbd": "SBD benchmark.tgz, http://home.bharathh.info/pubs/codes/SBD/download.html "
    "(its benchmark_RELEASE/dataset folder)",
    "voc": "VOC2011 (or VOC2012) devkit, http://host.robots.ox.ac.uk/pascal/VOC/",
    "voc2010": "VOC2010 devkit, http://host.robots.ox.ac.uk/pascal/VOC/voc2010/",
    "context": "PASCAL-Context trainval annotations, https://cs.stanford.edu/~roozbeh/pascal-context/",
    "nyud": "the FCN authors' nyud.tar.gz, http://people.eecs.berkeley.edu/~sgupta/depth/nyud.tar.gz "
    "(see the official data/nyud/README.md)",
    "siftflow": "SiftFlowDataset.zip, http://www.cs.unc.edu/~jtighe/Papers/ECCV10/",
}
#: The command-line option of each root.
ROOT_OPTIONS = {
    "sbd": "--sbd-root",
    "voc": "--voc-root",
    "voc2010": "--voc2010-root",
    "context": "--context-root",
    "nyud": "--nyud-root",
    "siftflow": "--siftflow-root",
}


class OfficialOrder:
    """The image indices the official data layers draw: ``random.seed(seed)``, then Python 2's
    ``randint(0, n - 1)`` (``int(random() * n)``) at set-up and after every forward.

    Only the last :attr:`WINDOW` draws are kept, so memory stays bounded however far a run goes; an
    index before them is drawn again from the seed."""

    WINDOW = 4096

    def __init__(self, n: int, seed: int = SEED) -> None:
        if n <= 0:
            raise ValueError("the training split is empty")
        self.n = n
        self.seed = seed
        self._lock = threading.Lock()  # the loader threads draw too
        self._restart()

    def _restart(self) -> None:
        self._rng = random.Random(self.seed)
        self._first = 0
        self._drawn: list[int] = []

    def __getitem__(self, k: int) -> int:
        if k < 0:
            raise IndexError(f"sample {k} is before the first draw")
        with self._lock:
            if k < self._first:
                self._restart()
            while self._first + len(self._drawn) <= k:
                missing = k + 1 - self._first - len(self._drawn)
                draw, n = self._rng.random, self.n
                self._drawn.extend(int(draw() * n) for _ in range(min(missing, self.WINDOW)))
                if len(self._drawn) > 2 * self.WINDOW:
                    dropped = len(self._drawn) - self.WINDOW
                    del self._drawn[:dropped]
                    self._first += dropped
            return self._drawn[k - self._first]


def official_order(n: int, count: int, seed: int = SEED) -> list[int]:
    """The first ``count`` indices (of ``n`` images) the official training layers draw."""
    order = OfficialOrder(n, seed)
    return [order[k] for k in range(count)]


@dataclass(frozen=True)
class DataRoots:
    """Dataset roots (options first, else the environment variables in :data:`ROOT_VARIABLES`)."""

    sbd: str | None = None
    voc: str | None = None
    voc2010: str | None = None
    context: str | None = None
    nyud: str | None = None
    siftflow: str | None = None

    def need(self, key: str) -> str:
        """The root called ``key``; :class:`DatasetError` naming the option, the variable and where to
        get the data when it is not given."""
        value = getattr(self, key) or os.environ.get(ROOT_VARIABLES[key])
        if not value:
            raise DatasetError(
                f"this model needs {ROOT_OPTIONS[key]} (or ${ROOT_VARIABLES[key]}): {DOWNLOADS[key]}"
            )
        return value


class _RefusingSpecialFiles:
    """A dataset mixin: its up-front file check refuses a sample file that is a FIFO, socket or
    device by name ("is a FIFO, not a file"), before the dataset's own check calls it missing."""

    def check_files(self) -> None:
        for image_id in self.ids:  # type: ignore[attr-defined]
            for path in self.files(image_id):  # type: ignore[attr-defined]
                refuse_special_file(path)
        super().check_files()  # type: ignore[misc]


class _SBD(_RefusingSpecialFiles, SBDSegmentation):
    pass


class _VOC(_RefusingSpecialFiles, VOCSegmentation):
    pass


class _Context(_RefusingSpecialFiles, ContextSegmentation):
    pass


class _NYUD(_RefusingSpecialFiles, NYUDSegmentation):
    pass


class _SIFTFlow(_RefusingSpecialFiles, SIFTFlowSegmentation):
    pass


class VOCListSegmentation(_RefusingSpecialFiles, VOCSegmentation):
    """A VOC-layout folder read through any list ``ImageSets/Segmentation/<split>.txt`` (for training
    on VOC's own ``train`` list or on your own data in VOC's layout)."""

    def __init__(self, root: str | os.PathLike[str], split: str, limit: int | None = None) -> None:
        self.split = split
        self.root = self.year_dir(Path(root), "VOC2011", strict=False)
        listed = self.root / "ImageSets" / "Segmentation" / f"{split}.txt"
        refuse_special_file(listed)  # a FIFO would block the reader
        ids = read_split(listed)
        SegmentationDataset.__init__(self, ids, None, limit)


def _nyud_modalities(model: str) -> tuple[str, ...]:
    modality = model.split("fcn32s-")[1]
    return {
        "color": ("color",),
        "hha": ("hha",),
        "color-hha": ("color", "hha"),
        "color-d": ("color", "depth"),
    }[modality]


def input_blobs(model: str) -> dict[str, tuple[str, str]]:
    """The train/val net's data-layer tops: ``{blob: ("input", modality) | ("label", head)}``."""
    dataset = model.split("-")[0]
    if dataset == "siftflow":
        return {"data": ("input", "color"), "sem": ("label", "semantic"), "geo": ("label", "geometric")}
    if dataset == "nyud":
        modalities = _nyud_modalities(model)
        if len(modalities) == 1:
            return {"data": ("input", modalities[0]), "label": ("label", "semantic")}
        return {**{m: ("input", m) for m in modalities}, "label": ("label", "semantic")}
    return {"data": ("input", "color"), "label": ("label", "semantic")}


#: Where each dataset's split lists may lie under its root: (folders tried, list path in them).
_LISTS = {
    "sbd": (("", "dataset", "benchmark_RELEASE/dataset"), "{split}.txt"),
    "voc": (("", "VOC2011", "VOC2012", "VOCdevkit/VOC2011", "VOCdevkit/VOC2012"),
            "ImageSets/Segmentation/{split}.txt"),
    "voc2010": (("", "VOC2010", "VOCdevkit/VOC2010"), "ImageSets/Main/{split}.txt"),
    "nyud": (("", "nyud"), "{split}.txt"),
    "siftflow": (("", "SiftFlowDataset", "sift-flow"), "{split}.txt"),
}  # fmt: skip


def _refuse_special_lists(key: str, root: str, splits: Sequence[str]) -> None:
    """A split list that is a FIFO, socket or device is refused before anything opens it (the
    readers would wait for a writer forever): one line naming it."""
    folders, pattern = _LISTS[key]
    for folder in folders:
        for split in splits:
            refuse_special_file(Path(root) / folder / pattern.format(split=split))


def _modalities(model: str) -> tuple[str, ...]:
    return _nyud_modalities(model) if model.startswith("nyud") else ("color",)


def train_dataset(model: str, roots: DataRoots, train_list: str | None = None) -> SegmentationDataset:
    """The official training split of ``model``: SBD ``train`` (8,498 images; SBD ``val`` is never
    used) for VOC, NYUDv2 ``trainval``, SIFT Flow ``trainval``, PASCAL-Context ``train``.

    ``train_list`` (VOC models only) trains on ``<voc-root>/ImageSets/Segmentation/<list>.txt``
    instead (a VOC-layout folder)."""
    dataset = model.split("-")[0]
    modalities = _modalities(model)
    if dataset == "voc":
        if train_list:
            return VOCListSegmentation(roots.need("voc"), train_list)
        _refuse_special_lists("sbd", roots.need("sbd"), ["train"])
        return _SBD(roots.need("sbd"), "train", modalities)
    if train_list:
        raise DatasetError("--train-list is for the VOC models (a VOC-layout folder)")
    if dataset == "pascalcontext":
        _refuse_special_lists("voc2010", roots.need("voc2010"), ["train"])
        return _Context(roots.need("voc2010"), roots.need("context"), "train", modalities)
    if dataset == "nyud":
        _refuse_special_lists("nyud", roots.need("nyud"), ["trainval", "train", "val"])
        return _nyud_trainval(roots.need("nyud"), modalities)
    _refuse_special_lists("siftflow", roots.need("siftflow"), ["trainval", "test"])
    return _siftflow_trainval(roots.need("siftflow"), modalities)


SPLITS_DIR = Path(__file__).resolve().parent / "splits"


def _with_ids(dataset: SegmentationDataset, ids: Sequence[str], split: str) -> SegmentationDataset:
    dataset.ids = list(ids)
    dataset.split = split
    dataset.check_files()
    return dataset


def _nyud_trainval(root: str, modalities: Sequence[str]) -> SegmentationDataset:
    """NYUD's ``trainval`` split (795 images): the root's ``trainval.txt``, else ``train.txt`` (the
    root's or the official list shipped here) followed by ``val.txt``."""
    try:
        return _NYUD(root, "trainval", modalities)
    except DatasetError as error:
        if "no split list" not in str(error):
            raise
    dataset = _NYUD(root, "val", modalities)
    own = dataset.root / "train.txt"
    train = read_split(own if own.is_file() else SPLITS_DIR / "nyud-train.txt")
    return _with_ids(dataset, train + dataset.ids, "trainval")


def _siftflow_trainval(root: str, modalities: Sequence[str]) -> SegmentationDataset:
    """SIFT Flow's ``trainval`` split (2,488 images): the root's ``trainval.txt``, else the official
    list shipped here."""
    dataset = _SIFTFlow(root, "test", modalities)
    own = dataset.root / "trainval.txt"
    return _with_ids(
        dataset, read_split(own if own.is_file() else SPLITS_DIR / "siftflow-trainval.txt"), "trainval"
    )


def val_dataset(model: str, roots: DataRoots, val_split: str | None = None) -> SegmentationDataset:
    """The split ``solve.py`` scores: VOC ``seg11valid`` (736 images of VOC2011 val not in SBD train),
    NYUDv2 ``test``, SIFT Flow ``test``, PASCAL-Context ``val``; ``val_split`` names another
    (VOC: ``val2011``, ``val2012`` or any list of the VOC root)."""
    dataset = model.split("-")[0]
    modalities = _modalities(model)
    if dataset == "voc":
        split = val_split or "seg11valid"
        _refuse_special_lists("voc", roots.need("voc"), ["val", split])
        if split in VOCSegmentation.SPLITS or split in VOCSegmentation.ALIASES:
            return _VOC(roots.need("voc"), split, modalities)
        return VOCListSegmentation(roots.need("voc"), split)
    if dataset == "pascalcontext":
        _refuse_special_lists("voc2010", roots.need("voc2010"), [val_split or "val"])
        return _Context(roots.need("voc2010"), roots.need("context"), val_split or "val", modalities)
    if dataset == "nyud":
        _refuse_special_lists("nyud", roots.need("nyud"), [val_split or "test"])
        return _NYUD(roots.need("nyud"), val_split or "test", modalities)
    _refuse_special_lists("siftflow", roots.need("siftflow"), [val_split or "test"])
    return _SIFTFlow(roots.need("siftflow"), val_split or "test", modalities)


def feeds_of(
    model: str,
    sample: Mapping,
    device: torch.device | None = None,
    *,
    dataset: SegmentationDataset | None = None,
) -> dict[str, torch.Tensor]:
    """One dataset sample as the net's input blobs: ``1xCxHxW`` float32 inputs and ``1x1xHxW``
    float32 labels (Caffe keeps labels in float blobs). Pictures and labels must have one size, and
    (given the ``dataset``) every label value must be a class of its head or 255 (ignore), as Caffe's
    ``SoftmaxWithLoss`` requires: else one :class:`UsageError` naming the image (and its files)."""
    feeds = {}
    for blob, (kind, key) in input_blobs(model).items():
        if kind == "input":
            value = sample["inputs"][key].unsqueeze(0)
        else:
            label = sample["labels"][key]
            if dataset is not None:
                _check_label_values(label, key, sample, dataset)
            value = label.to(torch.float32)[None, None]
        feeds[blob] = value.to(device) if device is not None else value
    sizes = {blob: tuple(value.shape[-2:]) for blob, value in feeds.items()}
    if len(set(sizes.values())) > 1:  # Caffe's loss refuses a label of another size than its scores
        described = ", ".join(f"{blob} {h}x{w}" for blob, (h, w) in sizes.items())
        raise UsageError(
            f"{_described(sample, dataset)}: its pictures and labels differ in size ({described}): "
            "they must match"
        )
    return feeds


def _described(sample: Mapping, dataset: SegmentationDataset | None) -> str:
    """The sample's id, with its files when the dataset can name them."""
    name = str(sample.get("id", "a sample"))
    if dataset is None or "id" not in sample:
        return name
    try:
        files = dataset.files(sample["id"])
    except (NotImplementedError, KeyError, ValueError):
        return name
    return f"{name} ({', '.join(str(f) for f in files)})" if files else name


def _check_label_values(
    label: torch.Tensor, head: str, sample: Mapping, dataset: SegmentationDataset
) -> None:
    classes = {h.name: h.num_classes for h in dataset.heads}.get(head)
    if classes is None:
        return
    bad = label[(label.to(torch.int64) >= classes) & (label.to(torch.int64) != IGNORE_LABEL)]
    if bad.numel():
        values = sorted({int(v) for v in bad.unique()[:5].tolist()})
        shown = ", ".join(str(v) for v in values)
        raise UsageError(
            f"{_described(sample, dataset)}: label value{'s' if len(values) > 1 else ''} {shown} "
            f"{'are' if len(values) > 1 else 'is'} not a class of {head} (0..{classes - 1}) nor "
            f"{IGNORE_LABEL} (ignore)"
        )


def check_sample_files(dataset: SegmentationDataset, image_id: str) -> list[tuple[Path, int, int]]:
    """Refuse, before any is opened, a sample file that is not a regular file (a FIFO would block the
    loader) and an image whose declared size needs more memory than this machine has (a
    decompression bomb): one line naming the file. Returns each image's (path, width, height)."""
    from converters.train.data import check_image_file

    try:
        files = dataset.files(image_id)
    except NotImplementedError:
        return []
    where = f"{dataset.name} {image_id}"
    sizes = []
    for path in files:
        if path.suffix.lower() in IMAGE_SUFFIXES:
            sizes.append((path, *check_image_file(path, where)))
        else:
            refuse_special_file(path)
    return sizes


#: A check of a picture's size before it is read: ``fits(path, width, height)`` raises if the net
#: cannot run on it.
Fits = Callable[[Path, int, int], None]


def load_feeds(
    model: str,
    dataset: SegmentationDataset,
    index: int,
    device: torch.device | None = None,
    *,
    fits: Fits | None = None,
) -> dict[str, torch.Tensor]:
    """Sample ``index`` of ``dataset`` as feeds, its files checked first (:func:`check_sample_files`,
    and ``fits`` for each picture's declared size), its sizes and label values after
    (:func:`feeds_of`)."""
    sizes = check_sample_files(dataset, dataset.ids[index])
    if fits is not None:
        for path, width, height in sizes:
            fits(path, width, height)
    return feeds_of(model, dataset[index], device, dataset=dataset)


class FeedSource:
    """Sample ``k`` of the official random order as feeds, loaded ahead in background threads."""

    def __init__(
        self,
        model: str,
        dataset: SegmentationDataset,
        *,
        seed: int = SEED,
        device: torch.device | None = None,
        prefetch: int = 2,
        fits: Fits | None = None,
    ) -> None:
        self.model = model
        self.fits = fits
        self.dataset = dataset
        self.order = OfficialOrder(len(dataset), seed)
        self.device = device
        self._pool = ThreadPoolExecutor(max_workers=max(1, prefetch))
        self._pending: dict[int, Future] = {}
        self.prefetch = prefetch

    def image_id(self, k: int) -> str:
        """The id of sample ``k``."""
        return self.dataset.ids[self.order[k]]

    def _load(self, k: int) -> dict[str, torch.Tensor]:
        return load_feeds(self.model, self.dataset, self.order[k], fits=self.fits)

    def get(self, k: int, upcoming: Sequence[int] = ()) -> dict[str, torch.Tensor]:
        """The feeds of sample ``k``; starts loading ``upcoming`` samples meanwhile."""
        future = self._pending.pop(k, None)
        for j in list(upcoming)[: self.prefetch]:
            # a sample further ahead than the order keeps (the next iteration's, with a huge
            # iter_size) is loaded when it is reached, not drawn ahead of the ones before it
            if j not in self._pending and 0 < j - k <= OfficialOrder.WINDOW:
                self._pending[j] = self._pool.submit(self._load, j)
        feeds = future.result() if future is not None else self._load(k)
        for stale in [j for j in self._pending if j < k]:
            self._pending.pop(stale).cancel()
        if self.device is not None:
            feeds = {name: value.to(self.device, non_blocking=True) for name, value in feeds.items()}
        return feeds

    def close(self) -> None:
        """Stop the loader threads."""
        self._pool.shutdown(wait=False, cancel_futures=True)


def slot(iteration: int, rank: int, world: int, iter_size: int, pass_index: int) -> int:
    """The sample index of pass ``pass_index`` of ``iteration`` on process ``rank`` of ``world``."""
    return (iteration * world + rank) * iter_size + pass_index


def pass_feeds(
    source: FeedSource, iteration: int, rank: int, world: int, iter_size: int, *, seed: int = SEED
) -> Callable[[], dict[str, torch.Tensor]]:
    """A callable for ``Solver.step``: each call gives the next pass's feeds and seeds torch's
    random generator with the sample's index (so Dropout's masks depend only on the sample, and a
    resumed or a multi-process run draws the masks an uninterrupted single-process run draws)."""
    state = {"pass": 0}

    def next_feeds() -> dict[str, torch.Tensor]:
        p = state["pass"]
        state["pass"] += 1
        k = slot(iteration, rank, world, iter_size, p)
        upcoming = [k + 1, k + 2] if p + 1 < iter_size else [slot(iteration + 1, rank, world, iter_size, 0)]
        torch.manual_seed(seed * 1_000_003 + k)
        return source.get(k, upcoming)

    return next_feeds


def as_numpy_label(label: torch.Tensor) -> np.ndarray:
    """A label blob back as an ``HxW`` uint8 array (for checks)."""
    return label.reshape(label.shape[-2:]).to(torch.uint8).numpy()
