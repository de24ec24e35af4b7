"""One record per official FCN caffemodel and per ImageNet base net: everything needed to use it.

Like torchvision's weight enums, a ``WeightsRecord`` carries where the file is (URL, mirrors, file
name, checksum and its source), which net it belongs to (``net_definition()`` builds it with our
own net-specification code), what goes in (input blobs, modality, mean, channel order), what comes
out (output blobs, class names in output order, palette) and how well it does (rows of
``weights.published``).
"""

from __future__ import annotations

import difflib
import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING

from converters.fcn.datasets import (
    BVLC_MEAN_BGR,
    CONTEXT_CLASSES,
    CONTEXT_MEAN,
    NYUD_CLASSES,
    NYUD_MEAN_BGR,
    NYUD_MEAN_HHA,
    NYUD_MEAN_LOGD,
    SIFTFLOW_GEOMETRIC_CLASSES,
    SIFTFLOW_MEAN,
    SIFTFLOW_SEMANTIC_CLASSES,
    VGG_MEAN_BGR,
    VOC_CLASSES,
    VOC_MEAN,
)

from . import published

if TYPE_CHECKING:
    import numpy as np
    import torch
    from PIL import Image

    from converters import Message

BERKELEY = "http://dl.caffe.berkeleyvision.org/"
README_URL = "https://github.com/shelhamer/fcn.berkeleyvision.org"
PAPER_PAMI = "Shelhamer, Long, Darrell: Fully Convolutional Networks for Semantic Segmentation, PAMI 2016 " \
             "(arXiv 1605.06211)"
PAPER_CVPR = "Long, Shelhamer, Darrell: Fully Convolutional Networks for Semantic Segmentation, CVPR 2015 " \
             "(arXiv 1411.4038)"


@dataclass(frozen=True)
class InputSpec:
    """One input blob: its name, channel count, what it holds, and how to prepare it."""

    blob: str
    channels: int
    modality: str
    channel_order: str
    mean: tuple[float, ...] | None
    preprocessing: str
    source: str = "color"
    """The dataset input that feeds this blob (``eval.datasets`` modality: color, hha, color-depth)."""


@dataclass(frozen=True)
class OutputSpec:
    """One output blob of scores: its name, the task, and the class names in channel order."""

    blob: str
    task: str
    classes: tuple[str, ...]
    num_classes: int
    label_note: str = ""

    def palette(self) -> np.ndarray:
        """An (num_classes, 3) uint8 RGB colour per class: the PASCAL VOC colour map (for VOC the
        official one; for the other datasets the same bit-interleaving generator)."""
        from converters.fcn.datasets import palette

        return palette(self.num_classes)


@dataclass(frozen=True)
class WeightsRecord:
    """Everything about one set of official weights."""

    name: str
    title: str
    kind: str
    url: str | None
    filename: str | None
    net: str
    inputs: tuple[InputSpec, ...]
    outputs: tuple[OutputSpec, ...]
    dataset: str
    mirrors: tuple[str, ...] = ()
    approx_size: int | None = None
    size_note: str = ""
    sha1: str | None = None
    sha256: str | None = None
    checksum_source: str | None = None
    paper: str = PAPER_PAMI
    source: str = README_URL
    license: str = "BSD-2 / BVLC model license (unrestricted use)"
    notes: str = ""

    @property
    def released(self) -> bool:
        """Whether weights were published for this net (the color-depth NYUD net has none)."""
        return self.url is not None

    @property
    def urls(self) -> tuple[str, ...]:
        """The official URL followed by the known mirrors."""
        return ((self.url,) if self.url else ()) + self.mirrors

    @property
    def classes(self) -> tuple[str, ...]:
        """Class names of the first (main) output, in output-channel order."""
        return self.outputs[0].classes

    @property
    def palette(self) -> np.ndarray:
        """Colours of the first (main) output's classes, ``(C, 3)`` uint8 RGB (``outputs[i].palette()``
        for the others)."""
        return self.outputs[0].palette()

    @property
    def approx_size_text(self) -> str:
        """The file's size in words (``about 513 MiB``), ``""`` when not known."""
        return f"about {self.approx_size / 2**20:.0f} MiB" if self.approx_size else ""

    @property
    def num_classes(self) -> dict[str, int]:
        """``{output blob: number of classes}``."""
        return {out.blob: out.num_classes for out in self.outputs}

    @property
    def mean(self) -> tuple[float, ...] | None:
        """The mean of the first input (for single-image nets: per B, G, R channel)."""
        return self.inputs[0].mean

    @property
    def metrics(self) -> tuple[published.PublishedMetrics, ...]:
        """Published results for this net (released weights and the paper's models), from
        ``weights.published``."""
        return tuple(published.for_model(self.name))

    def metric(self, dataset: str, split: str,
               weights: str | None = None) -> published.PublishedMetrics | None:
        """The most complete published row for this net on ``dataset``/``split`` (see
        ``published.lookup``: released weights' rows first, else the paper's)."""
        return published.lookup(self.name, dataset, split, weights)

    def preprocess(self, image: np.ndarray | Image.Image) -> dict[str, torch.Tensor]:
        """The keyword inputs of the net for one RGB uint8 HxWx3 image: ``{"data": 1x3xHxW}``, BGR,
        minus this record's mean (``converters.fcn.preprocess.caffe_preprocess``). ``ValueError`` for nets
        whose inputs are not a single BGR image (HHA, depth: prepare those as ``inputs`` describe)."""
        if len(self.inputs) != 1 or self.inputs[0].modality != "BGR image":
            kinds = ", ".join(f"{spec.blob} ({spec.modality})" for spec in self.inputs)
            raise ValueError(f"{self.name} takes {kinds}; preprocess() handles a single BGR image input only")
        from converters.fcn.preprocess import caffe_preprocess

        spec = self.inputs[0]
        assert spec.mean is not None
        return {spec.blob: caffe_preprocess(image, mean=spec.mean)}

    def net_definition(self, split: str = "deploy") -> Message:
        """The net as a ``NetParameter`` message, built by ``converters.fcn.nets`` (imported on demand)."""
        from converters.fcn.nets import net_definition

        return net_definition(self.net, split)


def _image(mean: tuple[float, ...], note: str = "") -> InputSpec:
    text = "RGB uint8 -> BGR float32, subtract the per-channel mean, no scaling, HWC -> CHW; any size"
    return InputSpec("data", 3, "BGR image", "BGR", mean, text + (f"; {note}" if note else ""))


def _voc_out() -> tuple[OutputSpec, ...]:
    return (OutputSpec("score", "semantic", VOC_CLASSES, 21, "label 255 = void (ignored)"),)


def _fcn(name: str, title: str, filename: str, dataset: str, inputs: tuple[InputSpec, ...],
         outputs: tuple[OutputSpec, ...], approx_mib: int, notes: str = "",
         checksum: published.PublishedChecksum | None = None,
         size_note: str = "estimated from the parameter count") -> WeightsRecord:
    sha1 = checksum.hexdigest if checksum is not None and checksum.algorithm == "sha1" else None
    sha256 = checksum.hexdigest if checksum is not None and checksum.algorithm == "sha256" else None
    return WeightsRecord(
        name=name, title=title, kind="fcn", url=BERKELEY + filename, filename=filename, net=name,
        inputs=inputs, outputs=outputs, dataset=dataset, approx_size=approx_mib << 20, size_note=size_note,
        sha1=sha1, sha256=sha256, checksum_source=str(checksum.source) if checksum is not None else None,
        notes=notes,
    )


_NYUD_OUT = (OutputSpec("score", "semantic", NYUD_CLASSES, 40,
                        "dataset labels 1-40 map to outputs 0-39; 0 (void) becomes 255"),)
_CONTEXT_OUT = (OutputSpec("score", "semantic", CONTEXT_CLASSES, 60,
                           "output 0 is background (unlabelled), 1-59 the 59-class task"),)
_SIFT_OUT = (
    OutputSpec("score_sem", "semantic", SIFTFLOW_SEMANTIC_CLASSES, 33,
               "dataset labels 1-33 map to outputs 0-32; void becomes 255; cow, desert and moon are absent "
               "from the test set and excluded from evaluation"),
    OutputSpec("score_geo", "geometric", SIFTFLOW_GEOMETRIC_CLASSES, 3,
               "dataset labels 1-3 map to outputs 0-2; void (-1/0) becomes 255"),
)
_HHA = InputSpec("hha", 3, "HHA", "HHA", NYUD_MEAN_HHA, source="hha", preprocessing=
                 "HHA encoding of depth (Gupta et al. ECCV 2014) as a uint8 image, float32, subtract the "
                 "per-channel mean, HWC -> CHW; channel order as stored in the HHA PNG")
_COLOR = InputSpec("color", 3, "BGR image", "BGR", NYUD_MEAN_BGR, _image(NYUD_MEAN_BGR).preprocessing)
_SIFT_NOTE = ("the official README warns that its semantic evaluation was not quite right (missing classes); "
              "the geometric evaluation is fine")

FCN_RECORDS: tuple[WeightsRecord, ...] = (
    _fcn("voc-fcn32s", "FCN-32s PASCAL", "fcn32s-heavy-pascal.caffemodel", "voc", (_image(VOC_MEAN),),
         _voc_out(), 513, "single stream, stride 32; fine-tuned from VGG16; trained with SBD train"),
    _fcn("voc-fcn16s", "FCN-16s PASCAL", "fcn16s-heavy-pascal.caffemodel", "voc", (_image(VOC_MEAN),),
         _voc_out(), 513, "two streams, stride 16; fine-tuned from voc-fcn32s"),
    _fcn("voc-fcn8s", "FCN-8s PASCAL", "fcn8s-heavy-pascal.caffemodel", "voc", (_image(VOC_MEAN),),
         _voc_out(), 513, "three streams, stride 8; fine-tuned from voc-fcn16s",
         checksum=published.checksum_for("fcn8s-heavy-pascal.caffemodel"),
         size_note="published"),
    _fcn("voc-fcn8s-atonce", "FCN-8s PASCAL at-once", "fcn8s-atonce-pascal.caffemodel", "voc",
         (_image(VOC_MEAN),), _voc_out(), 513,
         "all-at-once training from VGG16 with scaled skip connections (scale layers in the net)"),
    _fcn("voc-fcn-alexnet", "FCN-AlexNet PASCAL", "fcn-alexnet-pascal.caffemodel", "voc",
         (_image(VOC_MEAN),), _voc_out(), 217,
         "CaffeNet architecture, stride 32; gradient accumulation, normalized loss, standard momentum"),
    _fcn("nyud-fcn32s-color", "FCN-32s NYUDv2 Color", "nyud-fcn32s-color-heavy.caffemodel", "nyud",
         (_image(NYUD_MEAN_BGR),), _NYUD_OUT, 513, "color (BGR) input"),
    _fcn("nyud-fcn32s-hha", "FCN-32s NYUDv2 HHA", "nyud-fcn32s-hha-heavy.caffemodel", "nyud",
         (InputSpec("data", 3, "HHA", "HHA", NYUD_MEAN_HHA, _HHA.preprocessing, source="hha"),),
         _NYUD_OUT, 513,
         "HHA input only"),
    _fcn("nyud-fcn32s-color-hha", "FCN-32s NYUDv2 Late Color-HHA", "nyud-fcn32s-color-hha-heavy.caffemodel",
         "nyud", (_COLOR, _HHA), _NYUD_OUT, 1026,
         "two VGG16 streams (color, HHA) whose score_fr are summed (late fusion)"),
    WeightsRecord(
        name="nyud-fcn32s-color-d", title="FCN-32s NYUDv2 Early Color-Depth", kind="fcn", url=None,
        filename=None, net="nyud-fcn32s-color-d",
        inputs=(InputSpec("data", 4, "BGR image + log depth", "BGRD", NYUD_MEAN_BGR + NYUD_MEAN_LOGD,
                          "color: RGB -> BGR float32 minus the BGR mean; depth: PNG as float32, natural log, "
                          "minus the log-depth mean; concatenated along channels (B, G, R, D), HWC -> CHW",
                          source="color-depth"),),
        outputs=_NYUD_OUT, dataset="nyud",
        notes="no released weights: the official repository has its net definition but no caffemodel-url; "
              "4-channel early fusion (BGR + log depth)",
    ),
    _fcn("pascalcontext-fcn32s", "FCN-32s PASCAL-Context", "pascalcontext-fcn32s-heavy.caffemodel",
         "pascalcontext", (_image(CONTEXT_MEAN),), _CONTEXT_OUT, 513, "59-class task plus background"),
    _fcn("pascalcontext-fcn16s", "FCN-16s PASCAL-Context", "pascalcontext-fcn16s-heavy.caffemodel",
         "pascalcontext", (_image(CONTEXT_MEAN),), _CONTEXT_OUT, 513, "59-class task plus background"),
    _fcn("pascalcontext-fcn8s", "FCN-8s PASCAL-Context", "pascalcontext-fcn8s-heavy.caffemodel",
         "pascalcontext", (_image(CONTEXT_MEAN),), _CONTEXT_OUT, 513, "59-class task plus background"),
    _fcn("siftflow-fcn32s", "FCN-32s SIFT Flow", "siftflow-fcn32s-heavy.caffemodel", "siftflow",
         (_image(SIFTFLOW_MEAN),), _SIFT_OUT, 513, "two heads: semantic and geometric; " + _SIFT_NOTE),
    _fcn("siftflow-fcn16s", "FCN-16s SIFT Flow", "siftflow-fcn16s-heavy.caffemodel", "siftflow",
         (_image(SIFTFLOW_MEAN),), _SIFT_OUT, 513, "two heads: semantic and geometric; " + _SIFT_NOTE),
    _fcn("siftflow-fcn8s", "FCN-8s SIFT Flow", "siftflow-fcn8s-heavy.caffemodel", "siftflow",
         (_image(SIFTFLOW_MEAN),), _SIFT_OUT, 513, "two heads: semantic and geometric; " + _SIFT_NOTE),
)

_IMAGENET_OUT = (OutputSpec("prob", "classification", (), 1000, "ILSVRC-2012 synsets; names not bundled"),)
_CAFFENET_SHA1 = published.checksum_for("bvlc_reference_caffenet.caffemodel", "sha1")
_GOOGLENET_SHA1 = published.checksum_for("bvlc_googlenet.caffemodel", "sha1")

BASE_RECORDS: tuple[WeightsRecord, ...] = (
    WeightsRecord(
        name="vgg16", title="VGG16 ILSVRC-2014 (VGG team)", kind="base",
        url="http://www.robots.ox.ac.uk/~vgg/software/very_deep/caffe/VGG_ILSVRC_16_layers.caffemodel",
        filename="VGG_ILSVRC_16_layers.caffemodel", net="vgg16",
        inputs=(InputSpec("data", 3, "BGR image", "BGR", VGG_MEAN_BGR,
                          "RGB -> BGR float32, subtract the per-channel mean, 224x224 crops"),),
        outputs=_IMAGENET_OUT, dataset="imagenet", approx_size=528 << 20,
        size_note="estimated from the parameter count (138M)",
        paper="Simonyan, Zisserman: Very Deep Convolutional Networks for Large-Scale Image Recognition "
              "(arXiv 1409.1556)",
        source="https://gist.github.com/ksimonyan/211839e770f7b538e2d8",
        license="CC BY 4.0 (VGG model page)",
        notes="the base that voc-fcn32s, the NYUD, PASCAL-Context and SIFT Flow nets are fine-tuned from",
    ),
    WeightsRecord(
        name="caffenet", title="BVLC CaffeNet (reference AlexNet variant)", kind="base",
        url=BERKELEY + "bvlc_reference_caffenet.caffemodel", filename="bvlc_reference_caffenet.caffemodel",
        net="caffenet",
        inputs=(InputSpec("data", 3, "BGR image", "BGR", BVLC_MEAN_BGR,
                          "RGB -> BGR float32, subtract the ILSVRC-2012 mean image (about these per-channel "
                          "values), 227x227 crops"),),
        outputs=_IMAGENET_OUT, dataset="imagenet", approx_size=233 << 20,
        size_note="estimated from the parameter count (61M)",
        sha1=_CAFFENET_SHA1.hexdigest if _CAFFENET_SHA1 else None,
        checksum_source=str(_CAFFENET_SHA1.source) if _CAFFENET_SHA1 else None,
        paper="Krizhevsky, Sutskever, Hinton: ImageNet Classification with Deep CNNs, NIPS 2012 "
              "(replication)",
        source="https://github.com/BVLC/caffe/tree/master/models/bvlc_reference_caffenet",
        license="unrestricted (BVLC model license)",
        notes="the base of voc-fcn-alexnet",
    ),
    WeightsRecord(
        name="googlenet", title="BVLC GoogLeNet", kind="base",
        url=BERKELEY + "bvlc_googlenet.caffemodel", filename="bvlc_googlenet.caffemodel", net="googlenet",
        inputs=(InputSpec("data", 3, "BGR image", "BGR", BVLC_MEAN_BGR,
                          "RGB -> BGR float32, subtract the per-channel mean, 224x224 crops"),),
        outputs=_IMAGENET_OUT, dataset="imagenet", approx_size=51 << 20,
        size_note="estimated from the parameter count (7M)",
        sha1=_GOOGLENET_SHA1.hexdigest if _GOOGLENET_SHA1 else None,
        checksum_source=str(_GOOGLENET_SHA1.source) if _GOOGLENET_SHA1 else None,
        paper="Szegedy et al.: Going Deeper with Convolutions (arXiv 1409.4842) (replication)",
        source="https://github.com/BVLC/caffe/tree/master/models/bvlc_googlenet",
        license="unrestricted (BVLC model license)",
        notes="the base of FCN-GoogLeNet (CVPR Table 1), whose weights were never released",
    ),
)

RECORDS: dict[str, WeightsRecord] = {record.name: record for record in FCN_RECORDS + BASE_RECORDS}


class UnknownWeightsError(ValueError):
    """No registry record has that name."""


def names() -> list[str]:
    """Every registry name, FCN models first, then the ImageNet bases."""
    return list(RECORDS)


def records() -> list[WeightsRecord]:
    """Every registry record, in ``names()`` order."""
    return list(RECORDS.values())


def get(name: str) -> WeightsRecord:
    """The record called ``name``; ``UnknownWeightsError`` (a ``ValueError``) naming close matches if none."""
    record = RECORDS.get(name) or RECORDS.get(name.strip().lower())
    if record is not None:
        return record
    close = difflib.get_close_matches(name.strip().lower(), list(RECORDS), n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}?" if close else f"known: {', '.join(RECORDS)}"
    raise UnknownWeightsError(f"unknown weights {name!r}; {hint}")


def find_by_filename(filename: str) -> WeightsRecord | None:
    """The record whose caffemodel is called ``filename``, or ``None``."""
    return next((r for r in RECORDS.values() if r.filename == filename), None)


@functools.lru_cache(maxsize=1)
def _deploy_texts() -> dict[str, str]:
    from converters.caffe.text import format_message

    return {r.name: format_message(r.net_definition("deploy")) for r in RECORDS.values() if r.kind == "fcn"}


def find_by_definition(definition: Message) -> list[str]:
    """The FCN records whose deploy net definition is exactly ``definition`` (a parsed
    ``NetParameter``, e.g. ``net.caffe.definition`` of a converted file): usually one, none for
    another net, two for NYUD colour and HHA (one net, different inputs)."""
    from converters.caffe.text import format_message

    text = format_message(definition)
    return [name for name, official in _deploy_texts().items() if official == text]


def find_by_url(url: str) -> WeightsRecord | None:
    """The record with ``url`` as its official URL or one of its mirrors, or ``None``."""
    return next((r for r in RECORDS.values() if url in r.urls), None)
