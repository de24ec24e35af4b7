"""Readable ``nn.Module`` classes for the FCN families, built from the same layers as the generic graph.

Each class spells out its forward pass (trunk, score layers, skips, upsampling, crops) the way the
paper draws it. Its layers are made by the generic converters from the model's net definition
(:mod:`converters.fcn.nets`), so parameter names are Caffe's layer names and a state dict moves
freely between a named model, the generic graph and a converted file. Crop offsets come from
coordinate mapping through the net (:func:`converters.caffe.geometry.crop_offsets`), never typed in::

    model = fcn.create("voc-fcn8s").load_caffe("fcn8s-heavy-pascal.caffemodel")
    score = model(data=x)["score"]
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from ..caffe.geometry import crop_offsets
from ..layers.eltwise import eltwise_sum
from ..layers.shape import caffe_crop
from .nets import net_definition

VGG_BLOCKS = ((1, 2), (2, 2), (3, 3), (4, 3), (5, 3))


class FCN(nn.Module):
    """Base of the named FCN models: layers from the model's definition, offsets from geometry."""

    family: ClassVar[tuple[str, ...]] = ()
    """The registry/definition names this class implements."""

    def __init__(self, model: str | None = None, *, width: float = 1.0) -> None:
        super().__init__()
        model = model or self.family[0]
        if model not in self.family:
            raise ValueError(f"{type(self).__name__} implements {', '.join(self.family)}, not {model!r}")
        from ..graph.builder import build_graph

        self.model = model
        self.definition = net_definition(model, "deploy", width=width)
        generic = build_graph(self.definition)
        for name, module in generic.named_children():
            self.add_module(name, module)
        self.inputs = dict(generic.caffe.inputs)
        self.offsets: dict[str, tuple[int, ...]] = crop_offsets(self.definition)
        self.eval()

    def load_caffe(self, caffemodel: str | os.PathLike[str] | Mapping[str, list[np.ndarray]]) -> FCN:
        """Load Caffe weights (a caffemodel path or a :func:`converters.read_weights` dict)."""
        from ..graph.builder import load_caffe

        self.load_state_dict(load_caffe(self.definition, caffemodel).state_dict())
        return self

    def crop(self, x: Tensor, like: Tensor, layer: str) -> Tensor:
        """Caffe's Crop of ``x`` to ``like``'s spatial size at the offset geometry gives ``layer``."""
        return caffe_crop(x, like, 2, self.offsets[layer])

    def vgg16(self, x: Tensor, suffix: str = "", first: str = "conv1_1") -> dict[str, Tensor]:
        """The fully convolutional VGG16 trunk: pool3, pool4 and fc7 (after its ReLU; the inference
        definition has no dropout)."""
        taps = {}
        for block, convs in VGG_BLOCKS:
            for i in range(1, convs + 1):
                name = first if (block, i) == (1, 1) else f"conv{block}_{i}{suffix}"
                x = torch.relu(self.get_submodule(name)(x))
            x = self.get_submodule(f"pool{block}{suffix}")(x)
            taps[f"pool{block}"] = x
        x = torch.relu(self.get_submodule(f"fc6{suffix}")(x))
        taps["fc7"] = torch.relu(self.get_submodule(f"fc7{suffix}")(x))
        return taps


class FCN32s(FCN):
    """FCN-32s: VGG16 scores upsampled 32x in one step (VOC, Context, NYUD single-stream nets)."""

    family = ("voc-fcn32s", "pascalcontext-fcn32s", "nyud-fcn32s-color", "nyud-fcn32s-hha")

    def forward(self, data: Tensor) -> dict[str, Tensor]:
        fc7 = self.vgg16(data)["fc7"]
        upscore = self.upscore(self.score_fr(fc7))
        return {"score": self.crop(upscore, data, "score")}


class FCN16s(FCN):
    """FCN-16s: 2x upsampled scores fused with pool4's, then 16x upsampling."""

    family = ("voc-fcn16s", "pascalcontext-fcn16s")

    def forward(self, data: Tensor) -> dict[str, Tensor]:
        taps = self.vgg16(data)
        upscore2 = self.upscore2(self.score_fr(taps["fc7"]))
        score_pool4c = self.crop(self.score_pool4(taps["pool4"]), upscore2, "score_pool4c")
        upscore16 = self.upscore16(upscore2 + score_pool4c)
        return {"score": self.crop(upscore16, data, "score")}


class FCN8s(FCN):
    """FCN-8s: fused with pool4's and pool3's scores, then 8x upsampling."""

    family = ("voc-fcn8s", "pascalcontext-fcn8s")

    def skip(self, pool: Tensor, name: str) -> Tensor:
        """Score a pooling layer for a skip (the at-once model scales it first)."""
        return self.get_submodule(f"score_{name}")(pool)

    def forward(self, data: Tensor) -> dict[str, Tensor]:
        taps = self.vgg16(data)
        upscore2 = self.upscore2(self.score_fr(taps["fc7"]))
        score_pool4c = self.crop(self.skip(taps["pool4"], "pool4"), upscore2, "score_pool4c")
        upscore_pool4 = self.upscore_pool4(upscore2 + score_pool4c)
        score_pool3c = self.crop(self.skip(taps["pool3"], "pool3"), upscore_pool4, "score_pool3c")
        upscore8 = self.upscore8(upscore_pool4 + score_pool3c)
        return {"score": self.crop(upscore8, data, "score")}


class FCN8sAtOnce(FCN8s):
    """FCN-8s trained all at once: pool3 and pool4 are scaled (learned Scale layers) before scoring."""

    family = ("voc-fcn8s-atonce",)

    def skip(self, pool: Tensor, name: str) -> Tensor:
        return self.get_submodule(f"score_{name}")(self.get_submodule(f"scale_{name}")(pool))


class FCNAlexNet(FCN):
    """FCN-AlexNet: CaffeNet's trunk (LRN, grouped convolutions), one 32x upsampling step."""

    family = ("voc-fcn-alexnet",)

    def forward(self, data: Tensor) -> dict[str, Tensor]:
        x = self.norm1(self.pool1(torch.relu(self.conv1(data))))
        x = self.norm2(self.pool2(torch.relu(self.conv2(x))))
        x = torch.relu(self.conv4(torch.relu(self.conv3(x))))
        x = self.pool5(torch.relu(self.conv5(x)))
        x = torch.relu(self.fc7(torch.relu(self.fc6(x))))
        upscore = self.upscore(self.score_fr(x))
        return {"score": self.crop(upscore, data, "score")}


class NYUDEarlyFusion(FCN32s):
    """NYUD color-depth FCN-32s: one VGG16 stream on the 4-channel (BGR + log depth) input."""

    family = ("nyud-fcn32s-color-d",)

    def forward(self, data: Tensor) -> dict[str, Tensor]:
        fc7 = self.vgg16(data, first="conv1_1_bgrd")["fc7"]
        upscore = self.upscore(self.score_fr(fc7))
        return {"score": self.crop(upscore, data, "score")}


class NYUDLateFusion(FCN):
    """NYUD color-HHA FCN-32s: two VGG16 streams whose scores are summed with the definition's
    Eltwise coefficients, then upsampled 32x."""

    family = ("nyud-fcn32s-color-hha",)

    def __init__(self, model: str | None = None, *, width: float = 1.0) -> None:
        super().__init__(model, width=width)
        fused = next(layer for layer in self.definition.getall("layer") if layer.get("name") == "score_fused")
        self.fusion_coeffs = tuple(float(c) for c in fused.get("eltwise_param").get("coeff"))

    def forward(self, color: Tensor, hha: Tensor) -> dict[str, Tensor]:
        color_score = self.score_frcolor(self.vgg16(color, "color", "conv1_1color")["fc7"])
        hha_score = self.score_frhha(self.vgg16(hha, "hha", "conv1_1hha")["fc7"])
        upscore = self.upscore(eltwise_sum(color_score, hha_score, coeffs=self.fusion_coeffs))
        return {"score": self.crop(upscore, color, "score")}


class SIFTFlowFCN(FCN):
    """SIFT Flow FCN-32s/16s/8s: one VGG16 trunk, two heads (33 semantic and 3 geometric classes)."""

    family = ("siftflow-fcn32s", "siftflow-fcn16s", "siftflow-fcn8s")

    def head(self, taps: dict[str, Tensor], data: Tensor, task: str) -> Tensor:
        """One task's scores: the stride of the model decides how many skips are fused."""
        score = self.get_submodule(f"score_fr_{task}")(taps["fc7"])
        if self.model == "siftflow-fcn32s":
            return self.crop(self.get_submodule(f"upscore_{task}")(score), data, f"score_{task}")
        up = self.get_submodule(f"upscore2_{task}")(score)
        pool4 = self.crop(
            self.get_submodule(f"score_pool4_{task}")(taps["pool4"]), up, f"score_pool4_{task}c"
        )
        if self.model == "siftflow-fcn16s":
            return self.crop(self.get_submodule(f"upscore16_{task}")(up + pool4), data, f"score_{task}")
        up = self.get_submodule(f"upscore_pool4_{task}")(up + pool4)
        pool3 = self.crop(
            self.get_submodule(f"score_pool3_{task}")(taps["pool3"]), up, f"score_pool3_{task}c"
        )
        return self.crop(self.get_submodule(f"upscore8_{task}")(up + pool3), data, f"score_{task}")

    def forward(self, data: Tensor) -> dict[str, Tensor]:
        taps = self.vgg16(data)
        return {"score_sem": self.head(taps, data, "sem"), "score_geo": self.head(taps, data, "geo")}


CLASSES: tuple[type[FCN], ...] = (
    FCN32s,
    FCN16s,
    FCN8s,
    FCN8sAtOnce,
    FCNAlexNet,
    NYUDEarlyFusion,
    NYUDLateFusion,
    SIFTFlowFCN,
)
MODEL_CLASSES: dict[str, type[FCN]] = {model: cls for cls in CLASSES for model in cls.family}


def create(model: str, *, width: float = 1.0) -> FCN:
    """The named module for an official FCN model (random weights until :meth:`FCN.load_caffe`)."""
    try:
        cls = MODEL_CLASSES[model]
    except KeyError:
        raise ValueError(f"no FCN model {model!r}; choose one of {', '.join(MODEL_CLASSES)}") from None
    return cls(model, width=width)
