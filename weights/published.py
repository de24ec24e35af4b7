"""Every published FCN number the port is measured against, as data, each row with its source.

Metrics are in percent: pixel accuracy, mean (class) accuracy, mean IU, frequency-weighted IU
(CVPR 2015, Section 5). ``None`` means the source does not give that number. Other figures
(forward time, parameter count, geometric accuracy, ...) are in ``extra``.

Rows say which weights they describe: ``"released"`` for the caffemodels behind the official
``caffemodel-url`` files (the "heavy" models of the official README / PAMI 2016), ``"paper"`` for the
models of the CVPR 2015 tables (trained differently; not downloadable), ``"baseline"`` for other
methods in the same tables. ``model`` is the registry name where one exists (``voc-fcn8s``), else a
descriptive name (``fcn-googlenet``, ``sds``).

    >>> lookup("voc-fcn8s", "voc2011", "seg11valid").mean_iu
    65.5126
    >>> lookup("voc-fcn8s", "voc", "seg11valid").mean_iu   # the evaluation harness's names
    65.5126
"""

from __future__ import annotations

from dataclasses import dataclass, field

METRICS = ("pixel_acc", "mean_acc", "mean_iu", "fw_iu")


@dataclass(frozen=True)
class Source:
    """Where a number was published: work, table or section, and an arXiv id or URL where there is one."""

    work: str
    where: str
    arxiv: str | None = None
    url: str | None = None

    def __str__(self) -> str:
        ref = f" (arXiv {self.arxiv})" if self.arxiv else (f" ({self.url})" if self.url else "")
        return f"{self.work}, {self.where}{ref}"


@dataclass(frozen=True)
class PublishedMetrics:
    """One published result row."""

    model: str
    method: str
    weights: str
    dataset: str
    split: str
    pixel_acc: float | None = None
    mean_acc: float | None = None
    mean_iu: float | None = None
    fw_iu: float | None = None
    extra: tuple[tuple[str, float], ...] = ()
    source: Source = field(default_factory=lambda: Source("?", "?"))
    note: str = ""

    def metrics(self) -> dict[str, float]:
        """The four standard metrics this row gives (absent ones left out)."""
        values = {name: getattr(self, name) for name in METRICS}
        return {name: value for name, value in values.items() if value is not None}

    def get(self, name: str) -> float | None:
        """A standard metric or an ``extra`` figure by name, or ``None``."""
        if name in METRICS:
            return getattr(self, name)
        return dict(self.extra).get(name)


CVPR_ARXIV = "1411.4038"
PAMI_ARXIV = "1605.06211"
CVPR = "Long, Shelhamer, Darrell: Fully Convolutional Networks for Semantic Segmentation, CVPR 2015"
README = "Official FCN repository README (fcn.berkeleyvision.org; models of PAMI 2016)"
README_URL = "https://github.com/shelhamer/fcn.berkeleyvision.org"
REEVAL = "wkentaro/fcn (Chainer port) README, re-evaluation of the converted heavy Caffe models"
REEVAL_URL = "https://github.com/wkentaro/fcn"


def _row(model: str, method: str, weights: str, dataset: str, split: str,
         values: tuple[float | None, float | None, float | None, float | None], source: Source,
         extra: dict[str, float] | None = None, note: str = "") -> PublishedMetrics:
    pixel_acc, mean_acc, mean_iu, fw_iu = values
    return PublishedMetrics(model, method, weights, dataset, split, pixel_acc, mean_acc, mean_iu, fw_iu,
                            tuple((extra or {}).items()), source, note)


_T1 = Source(CVPR, "Table 1", CVPR_ARXIV)
#: CVPR Table 1: backbones cast into FCN-32s form. Forward time: 500x500 input, Tesla K40c, 20 trials.
TABLE1: tuple[PublishedMetrics, ...] = (
    _row("voc-fcn-alexnet", "FCN-AlexNet", "paper", "voc2011", "val", (None, None, 39.8, None), _T1,
         {"forward_ms": 50, "conv_layers": 8, "params_millions": 57, "receptive_field": 355,
          "max_stride": 32}),
    _row("voc-fcn32s", "FCN-VGG16", "paper", "voc2011", "val", (None, None, 56.0, None), _T1,
         {"forward_ms": 210, "conv_layers": 16, "params_millions": 134, "receptive_field": 404,
          "max_stride": 32}),
    _row("fcn-googlenet", "FCN-GoogLeNet", "paper", "voc2011", "val", (None, None, 42.5, None), _T1,
         {"forward_ms": 59, "conv_layers": 22, "params_millions": 6, "receptive_field": 907,
          "max_stride": 32},
         note="no FCN-GoogLeNet weights were released"),
    _row("voc-fcn32s", "FCN-VGG16 + extra data", "paper", "voc2011", "val-subset", (None, None, 59.4, None),
         _T1, note="trained with extra data; evaluated on the val subset"),
    _row("voc-fcn-alexnet", "FCN-AlexNet + extra data", "paper", "voc2011", "val-subset",
         (None, None, 48.0, None), _T1, note="trained with extra data; evaluated on the val subset"),
)

_T2 = Source(CVPR, "Table 2", CVPR_ARXIV)
#: CVPR Table 2: skip architectures on seg11valid (the 736-image subset of VOC 2011 val).
TABLE2: tuple[PublishedMetrics, ...] = (
    _row("fcn32s-fixed", "FCN-32s-fixed", "paper", "voc2011", "seg11valid", (83.0, 59.7, 45.4, 72.0), _T2,
         note="only the last layer fine-tuned"),
    _row("voc-fcn32s", "FCN-32s", "paper", "voc2011", "seg11valid", (89.1, 73.3, 59.4, 81.4), _T2),
    _row("voc-fcn16s", "FCN-16s", "paper", "voc2011", "seg11valid", (90.0, 75.7, 62.4, 83.0), _T2),
    _row("voc-fcn8s", "FCN-8s", "paper", "voc2011", "seg11valid", (90.3, 75.9, 62.7, 83.2), _T2),
)

_T3 = Source(CVPR, "Table 3", CVPR_ARXIV)
#: CVPR Table 3: mean IU on the VOC 2011 and 2012 test sets, and inference time.
TABLE3: tuple[PublishedMetrics, ...] = (
    _row("r-cnn", "R-CNN", "baseline", "voc2011", "test", (None, None, 47.9, None), _T3),
    _row("sds", "SDS", "baseline", "voc2011", "test", (None, None, 52.6, None), _T3, {"inference_ms": 50_000},
         note="inference ~50 s"),
    _row("sds", "SDS", "baseline", "voc2012", "test", (None, None, 51.6, None), _T3, {"inference_ms": 50_000},
         note="inference ~50 s"),
    _row("voc-fcn8s", "FCN-8s", "paper", "voc2011", "test", (None, None, 62.7, None), _T3,
         {"inference_ms": 175}, note="inference ~175 ms"),
    _row("voc-fcn8s", "FCN-8s", "paper", "voc2012", "test", (None, None, 62.2, None), _T3,
         {"inference_ms": 175}, note="inference ~175 ms"),
)

_T4 = Source(CVPR, "Table 4", CVPR_ARXIV)
#: CVPR Table 4: NYUDv2 (40 classes), test split.
TABLE4: tuple[PublishedMetrics, ...] = (
    _row("gupta-et-al", "Gupta et al.", "baseline", "nyud", "test", (60.3, None, 28.6, 47.0), _T4),
    _row("nyud-fcn32s-color", "FCN-32s RGB", "paper", "nyud", "test", (60.0, 42.2, 29.2, 43.9), _T4),
    _row("nyud-fcn32s-color-d", "FCN-32s RGBD", "paper", "nyud", "test", (61.5, 42.4, 30.5, 45.5), _T4),
    _row("nyud-fcn32s-hha", "FCN-32s HHA", "paper", "nyud", "test", (57.1, 35.2, 24.2, 40.4), _T4),
    _row("nyud-fcn32s-color-hha", "FCN-32s RGB-HHA", "paper", "nyud", "test", (64.3, 44.9, 32.8, 48.0), _T4),
    _row("nyud-fcn16s-color-hha", "FCN-16s RGB-HHA", "paper", "nyud", "test", (65.4, 46.1, 34.0, 49.5), _T4,
         note="no FCN-16s NYUD weights were released"),
)

_T5 = Source(CVPR, "Table 5", CVPR_ARXIV)
#: CVPR Table 5: SIFT Flow, semantic metrics plus geometric pixel accuracy.
TABLE5: tuple[PublishedMetrics, ...] = (
    _row("siftflow-fcn16s", "FCN-16s", "paper", "siftflow", "test", (85.2, 51.7, 39.5, 76.1), _T5,
         {"geometric_acc": 94.3}),
    _row("siftflow-fcn16s", "FCN-16s", "paper", "siftflow-geometric", "test", (94.3, None, None, None), _T5,
         note="the geometric head: Table 5's geometric accuracy (pixel accuracy over its 3 classes)"),
)

_CTX = Source(CVPR, "appendix (arXiv v2), PASCAL-Context", CVPR_ARXIV)
#: arXiv v2 appendix: PASCAL-Context val, 59-class task (``pascalcontext``) and 33-class task.
CONTEXT: tuple[PublishedMetrics, ...] = (
    _row("pascalcontext-fcn32s", "FCN-32s", "paper", "pascalcontext", "val", (63.8, 42.7, 31.8, 48.3), _CTX),
    _row("pascalcontext-fcn16s", "FCN-16s", "paper", "pascalcontext", "val", (65.7, 46.2, 34.8, 50.7), _CTX),
    _row("pascalcontext-fcn8s", "FCN-8s", "paper", "pascalcontext", "val", (65.9, 46.5, 35.1, 51.0), _CTX),
    _row("pascalcontext-fcn32s", "FCN-32s", "paper", "pascalcontext-33", "val", (69.8, 65.1, 50.4, 54.9),
         _CTX),
    _row("pascalcontext-fcn16s", "FCN-16s", "paper", "pascalcontext-33", "val", (71.8, 68.0, 53.4, 57.5),
         _CTX),
    _row("pascalcontext-fcn8s", "FCN-8s", "paper", "pascalcontext-33", "val", (71.8, 67.6, 53.5, 57.7), _CTX),
)

_RM = Source(README, "model list", PAMI_ARXIV, README_URL)
#: The official README: mean IU of the released ("heavy") PASCAL models.
RELEASED: tuple[PublishedMetrics, ...] = (
    _row("voc-fcn32s", "FCN-32s PASCAL", "released", "voc2011", "seg11valid", (None, None, 63.6, None), _RM),
    _row("voc-fcn16s", "FCN-16s PASCAL", "released", "voc2011", "seg11valid", (None, None, 65.0, None), _RM),
    _row("voc-fcn8s", "FCN-8s PASCAL", "released", "voc2011", "seg11valid", (None, None, 65.5, None), _RM),
    _row("voc-fcn8s", "FCN-8s PASCAL", "released", "voc2012", "test", (None, None, 67.2, None), _RM),
    _row("voc-fcn8s-atonce", "FCN-8s PASCAL at-once", "released", "voc2011", "seg11valid",
         (None, None, 65.4, None), _RM),
    _row("voc-fcn-alexnet", "FCN-AlexNet PASCAL", "released", "voc2011", "seg11valid",
         (None, None, 48.0, None), _RM),
)

_RE = Source(REEVAL, "evaluation table", None, REEVAL_URL)
#: Four-decimal re-evaluation of the released PASCAL models on seg11valid (a faithful port lands within
#: a few hundredths of these).
REEVALUATION: tuple[PublishedMetrics, ...] = (
    _row("voc-fcn32s", "FCN-32s", "released", "voc2011", "seg11valid",
         (90.4810, 76.4824, 63.6261, 83.4580), _RE),
    _row("voc-fcn16s", "FCN-16s", "released", "voc2011", "seg11valid",
         (90.9971, 78.0710, 65.0050, 84.2614), _RE),
    _row("voc-fcn8s", "FCN-8s", "released", "voc2011", "seg11valid",
         (91.2212, 77.6146, 65.5126, 84.5445), _RE),
    _row("voc-fcn8s-atonce", "FCN-8s at-once", "released", "voc2011", "seg11valid",
         (91.1288, 78.4979, 65.3998, 84.4326), _RE),
)

#: Every row, in the order above.
ALL: tuple[PublishedMetrics, ...] = (
    TABLE1 + TABLE2 + TABLE3 + TABLE4 + TABLE5 + CONTEXT + RELEASED + REEVALUATION
)


@dataclass(frozen=True)
class PublishedChecksum:
    """A published checksum of a released file."""

    filename: str
    algorithm: str
    hexdigest: str
    source: Source
    note: str = ""


_OPENCV = Source("OpenCV test-data download list (opencv_extra, download_models.py)", "fcn8s entry",
                 url="https://github.com/opencv/opencv_extra")
_ZOO = Source("Caffe Model Zoo pre-release FCN entries", "model-zoo gist metadata")
_BVLC = Source("BVLC Caffe model readme", "front matter", url="https://github.com/BVLC/caffe/tree/master/models")
_DATA = Source("dataset distribution", "published md5")

#: Known checksums. Only ``fcn8s-heavy-pascal.caffemodel`` of the released FCN files has one; the
#: pre-release model-zoo files are listed so that they are not mistaken for the heavy models.
CHECKSUMS: tuple[PublishedChecksum, ...] = (
    PublishedChecksum("fcn8s-heavy-pascal.caffemodel", "sha1", "c449ea74dd7d83751d1357d6a8c323fcf4038962",
                      _OPENCV, "about 513 MiB (537,963,159 bytes for a re-saved file of the same net)"),
    PublishedChecksum("fcn-32s-pascal.caffemodel", "sha1", "9ef2dbc22768bd562ba5eec2ad6cae3f499141d0", _ZOO,
                      "pre-release model-zoo net, not the heavy voc-fcn32s"),
    PublishedChecksum("fcn-32s-pascalcontext.caffemodel", "sha1", "adbbd504c280e2b8966fc32e32ada2a2ecf13603",
                      _ZOO, "pre-release model-zoo net, not the heavy pascalcontext-fcn32s"),
    PublishedChecksum("fcn-8s-pascalcontext.caffemodel", "sha1", "591e7d8bbc1c55ff151b6984bde85ff5160aee31",
                      _ZOO, "pre-release model-zoo net, not the heavy pascalcontext-fcn8s"),
    PublishedChecksum("bvlc_reference_caffenet.caffemodel", "sha1",
                      "4c8d77deb20ea792f84eb5e6d0a11ca0a8660a46", _BVLC),
    PublishedChecksum("bvlc_googlenet.caffemodel", "sha1", "405fc5acd08a3bb12de8ee5e23a96bec22f08204", _BVLC),
    PublishedChecksum("VOCtrainval_11-May-2012.tar", "md5", "6cd6e144f989b92b3379bac3b3de84fd", _DATA),
    PublishedChecksum("benchmark.tgz", "md5", "2b2af8a6cff7365684e002c08be823a6", _DATA, "SBD"),
)


_PROTOTXTS = Source("Official FCN repository prototxts", "Crop layer offsets", PAMI_ARXIV, README_URL)

#: The ``crop_param.offset`` of each Crop layer in the official prototxts, in net order (the nets pad
#: conv1_1 by 100 and crop back to the input). All NYUD FCN-32s nets use 19.
CROP_OFFSETS: dict[str, tuple[int, ...]] = {
    "voc-fcn32s": (19,),
    "voc-fcn16s": (5, 27),
    "voc-fcn8s": (5, 9, 31),
    "voc-fcn8s-atonce": (5, 9, 31),
    "voc-fcn-alexnet": (18,),
    "nyud-fcn32s-color": (19,),
    "nyud-fcn32s-hha": (19,),
    "nyud-fcn32s-color-hha": (19,),
    "nyud-fcn32s-color-d": (19,),
}
CROP_OFFSETS_SOURCE = _PROTOTXTS


def checksum_for(filename: str, algorithm: str | None = None) -> PublishedChecksum | None:
    """The published checksum of ``filename`` (optionally of one ``algorithm``), or ``None``."""
    for entry in CHECKSUMS:
        if entry.filename == filename and (algorithm is None or entry.algorithm == algorithm):
            return entry
    return None


_DATASET_ALIASES = {
    "pascal": "voc", "pascal-voc": "voc", "nyudv2": "nyud", "nyu": "nyud", "sift-flow": "siftflow",
    "pascal-context": "pascalcontext", "context": "pascalcontext", "pascalcontext-59": "pascalcontext",
    "sift-flow-geometric": "siftflow-geometric", "siftflow-geo": "siftflow-geometric",
}
_VOC_SPLITS = {
    "seg11valid": ("voc2011", "seg11valid"), "val2011": ("voc2011", "val"), "val2012": ("voc2012", "val"),
    "test2011": ("voc2011", "test"), "test2012": ("voc2012", "test"), "seg12test": ("voc2012", "test"),
}


def canonical(dataset: str, split: str) -> tuple[str, str]:
    """The ``(dataset, split)`` names used in this module for a harness's names: ``("voc", "seg11valid")``
    -> ``("voc2011", "seg11valid")``, ``("voc", "val2012")`` -> ``("voc2012", "val")``,
    ``("sift-flow", "test")`` -> ``("siftflow", "test")``. Names already canonical pass through."""
    dataset = _DATASET_ALIASES.get(dataset.lower(), dataset.lower())
    split = split.lower()
    if dataset == "voc" and split in _VOC_SPLITS:
        return _VOC_SPLITS[split]
    if dataset in ("voc2011", "voc2012") and split.startswith(("val", "test")) and split[-4:].isdigit():
        split = split[:-4]
    return dataset, split


def lookup_all(model: str | None = None, dataset: str | None = None, split: str | None = None,
               weights: str | None = None) -> list[PublishedMetrics]:
    """Every row matching the given fields (``None`` matches anything), in table order. ``dataset`` and
    ``split`` may use a harness's names (see :func:`canonical`)."""
    if dataset is not None and split is not None:
        dataset, split = canonical(dataset, split)
    elif dataset is not None:
        dataset = _DATASET_ALIASES.get(dataset.lower(), dataset.lower())
    return [row for row in ALL
            if (model is None or row.model == model) and (dataset is None or row.dataset == dataset)
            and (split is None or row.split == split) and (weights is None or row.weights == weights)]


def lookup(model: str, dataset: str, split: str, weights: str | None = None) -> PublishedMetrics | None:
    """The most complete row for ``model`` on ``dataset``/``split``, or ``None``.

    ``weights="released"`` or ``"paper"`` picks rows of those weights only; the default takes the
    released weights' rows if there are any, else the paper's (check ``row.weights``: the paper's
    models are not the released caffemodels). "Most complete" = gives the most of the four metrics,
    then the most digits (so the four-decimal re-evaluation of the released PASCAL models wins over
    the README's one-decimal mean IU)."""
    if weights is None:
        return lookup(model, dataset, split, "released") or lookup(model, dataset, split, "paper")
    rows = lookup_all(model, dataset, split, weights)
    if not rows:
        return None

    def completeness(row: PublishedMetrics) -> tuple[int, int]:
        values = row.metrics().values()
        digits = max((len(f"{v:.4f}".rstrip("0").split(".")[1]) for v in values), default=0)
        return (len(values), digits)

    return max(rows, key=completeness)


def for_model(model: str) -> list[PublishedMetrics]:
    """Every row about ``model`` (released and paper numbers alike)."""
    return lookup_all(model)
