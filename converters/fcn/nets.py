"""The official FCN nets (Long, Shelhamer, Darrell) as net-spec code, at any width.

``net_definition(model, split)`` builds the same ``NetParameter`` as the official repository's
``<model>/<split>.prototxt`` (its ``net.py`` output), layer by layer and parameter by parameter,
with every Crop offset derived by :mod:`converters.caffe.geometry`. ``split="deploy"`` gives the inference
net: ``Input`` layer(s) named ``input`` with 1xCx500x500 tops named as the data tops of the
inference graph, no Dropout (as the official ``voc-fcn8s/deploy.prototxt``) and no loss layers.

``width`` (0 < width <= 1) scales ``num_output`` of the feature layers (convolutions, fc6, fc7,
InnerProducts), keeping the class-score layers, their deconvolutions, kernels, strides, pads,
groups and crops; scaled counts are rounded to a multiple of the net's largest group (>= 1 group).

Also the ImageNet classifiers the FCNs are fine-tuned from (``BASE_MODELS``), as deploy nets with
one 1xCxHxW ``Input`` layer named ``input``: ``vgg16`` (ILSVRC-2014 VGG16, 224x224), ``caffenet``
(BVLC reference CaffeNet, 227x227) and ``googlenet`` (BVLC GoogLeNet without the auxiliary
classifiers, 224x224), with the layer names of their released caffemodels.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from ..caffe.message import Message
from ..caffe.netspec import NetSpec, Top, crop
from ..caffe.netspec import layers as L

__all__ = ["BASE_MODELS", "MODELS", "SPLITS", "net_definition"]

MODELS: tuple[str, ...] = (
    "voc-fcn32s",
    "voc-fcn16s",
    "voc-fcn8s",
    "voc-fcn8s-atonce",
    "voc-fcn-alexnet",
    "nyud-fcn32s-color",
    "nyud-fcn32s-hha",
    "nyud-fcn32s-color-hha",
    "nyud-fcn32s-color-d",
    "pascalcontext-fcn32s",
    "pascalcontext-fcn16s",
    "pascalcontext-fcn8s",
    "siftflow-fcn32s",
    "siftflow-fcn16s",
    "siftflow-fcn8s",
)
BASE_MODELS: tuple[str, ...] = ("vgg16", "caffenet", "googlenet")

_SPLITS_OF_DATASET = {
    "voc": ("train", "val"),
    "pascalcontext": ("train", "val"),
    "nyud": ("trainval", "test"),
    "siftflow": ("trainval", "test"),
}
SPLITS: dict[str, tuple[str, ...]] = {
    **{m: (*_SPLITS_OF_DATASET[m.split("-")[0]], "deploy") for m in MODELS},
    **{m: ("deploy",) for m in BASE_MODELS},
}

MEAN_BGR = (104.00699, 116.66877, 122.67892)  # as written in the official data layers' param_str
SEED = 1337
DEPLOY_SIZE = 500

_LEARN = [dict(lr_mult=1, decay_mult=1), dict(lr_mult=2, decay_mult=0)]
_FROZEN = [dict(lr_mult=0)]


@dataclasses.dataclass(frozen=True)
class _Model:
    dataset: str  # voc, pascalcontext, nyud, siftflow
    backbone: str  # vgg16 or alexnet
    stride: int  # 32, 16 or 8 (the finest skip)
    heads: tuple[tuple[str, int], ...]  # (name suffix, classes)
    modality: str = "color"  # nyud: color, hha, color-hha, color-d
    atonce: bool = False
    data_dir: str = "../data"
    normalize: bool = False


def _model(name: str) -> _Model:
    dataset = name.split("-")[0]
    stride = 32 if "fcn32s" in name or "alexnet" in name else 16 if "fcn16s" in name else 8
    if dataset == "voc":
        return _Model(
            "voc",
            "alexnet" if "alexnet" in name else "vgg16",
            stride,
            (("", 21),),
            atonce="atonce" in name,
            data_dir="../../data" if name == "voc-fcn16s" else "../data",
            normalize="alexnet" in name,
        )
    if dataset == "pascalcontext":
        return _Model("pascalcontext", "vgg16", stride, (("", 60),), data_dir="../../data")
    if dataset == "nyud":
        return _Model("nyud", "vgg16", stride, (("", 40),), modality=name.split("fcn32s-")[1])
    return _Model("siftflow", "vgg16", stride, (("_sem", 33), ("_geo", 3)))


class _Width:
    """Scales feature counts: ``round(count * width)`` to a multiple of ``multiple``, at least that."""

    def __init__(self, width: float, multiple: int = 1) -> None:
        self.width = width
        self.multiple = multiple

    def __call__(self, count: int) -> int:
        if self.width == 1.0:
            return count
        units = round(count * self.width / self.multiple)
        return max(1, units) * self.multiple


# ----------------------------------------------------------------------------------------------
# Data layers


def _param_str(items: dict[str, Any]) -> str:
    """The Python-literal ``param_str`` the official net.py writes (``str(dict)``), keys in the
    order the official prototxts show them.
    """
    return "{" + ", ".join(f"{key!r}: {value!r}" for key, value in items.items()) + "}"


def _data_layer(model: _Model, split: str) -> Top | tuple[Top, ...]:
    if model.dataset == "voc":
        if split == "train":
            params = {"sbdd_dir": f"{model.data_dir}/sbdd/dataset", "seed": SEED, "split": "train"}
            layer = "SBDDSegDataLayer"
        else:
            params = {"voc_dir": f"{model.data_dir}/pascal/VOC2011", "seed": SEED, "split": "seg11valid"}
            layer = "VOCSegDataLayer"
        params["mean"] = MEAN_BGR
        return L.Python(module="voc_layers", layer=layer, ntop=2, param_str=_param_str(params))
    if model.dataset == "pascalcontext":
        params = {
            "context_dir": f"{model.data_dir}/pascal-context",
            "seed": SEED,
            "split": split,
            "voc_dir": f"{model.data_dir}/pascal",
        }
        return L.Python(
            module="pascalcontext_layers",
            layer="PASCALContextSegDataLayer",
            ntop=2,
            param_str=_param_str(params),
        )
    if model.dataset == "nyud":
        names = {
            "color": ["color"],
            "hha": ["hha"],
            "color-hha": ["color", "hha"],
            "color-d": ["color", "depth"],
        }[model.modality] + ["label"]
        params = {"tops": names, "seed": SEED, "nyud_dir": f"{model.data_dir}/nyud", "split": split}
        return L.Python(
            module="nyud_layers", layer="NYUDSegDataLayer", ntop=len(names), param_str=_param_str(params)
        )
    params = {"siftflow_dir": f"{model.data_dir}/sift-flow", "seed": SEED, "split": split}
    return L.Python(
        module="siftflow_layers", layer="SIFTFlowSegDataLayer", ntop=3, param_str=_param_str(params)
    )


def _input(n: NetSpec, tops: dict[str, int], size: int) -> None:
    shapes = [dict(dim=[1, channels, size, size]) for channels in tops.values()]
    made = L.Input(name="input", ntop=len(tops), shape=shapes)
    for name, top in zip(tops, made if isinstance(made, tuple) else (made,), strict=True):
        n[name] = top


# ----------------------------------------------------------------------------------------------
# Backbones


def _conv_relu(
    n: NetSpec, bottom: Top, conv: str, relu: str, count: int, *, ks: int = 3, stride: int = 1, pad: int = 1
) -> Top:
    n[conv] = L.Convolution(bottom, kernel_size=ks, stride=stride, num_output=count, pad=pad, param=_LEARN)
    n[relu] = L.ReLU(n[conv], in_place=True)
    return n[relu]


def _sparse_conv_relu(
    n: NetSpec,
    name: str,
    relu: str,
    x: Top,
    count: int,
    ks: int,
    stride: int = 1,
    pad: int = 0,
    group: int = 1,
    param: list[dict[str, Any]] | None = None,
) -> Top:
    """A convolution + in-place ReLU writing only the fields that differ from Caffe's defaults, as
    the BVLC model-zoo prototxts spell them."""
    params: dict[str, Any] = dict(num_output=count, kernel_size=ks)
    if param is not None:
        params["param"] = param
    if pad:
        params["pad"] = pad
    if stride != 1:
        params["stride"] = stride
    if group != 1:
        params["group"] = group
    n[name] = L.Convolution(x, **params)
    n[relu] = L.ReLU(n[name], in_place=True)
    return n[relu]


def _vgg16_fc(n: NetSpec, bottom: Top, w: _Width, sfx: str, deploy: bool, first: str) -> dict[str, Top]:
    """The VGG16 trunk, fc6/fc7 as convolutions (pad 100 at conv1_1); returns pool3, pool4, fc7."""
    out: dict[str, Top] = {}
    x = bottom
    blocks = ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))
    for b, (count, depth) in enumerate(blocks, start=1):
        for i in range(1, depth + 1):
            conv = first if (b, i) == (1, 1) else f"conv{b}_{i}{sfx}"
            x = _conv_relu(n, x, conv, f"relu{b}_{i}{sfx}", w(count), pad=100 if (b, i) == (1, 1) else 1)
        n[f"pool{b}{sfx}"] = L.Pooling(x, pool="MAX", kernel_size=2, stride=2)
        x = out[f"pool{b}"] = n[f"pool{b}{sfx}"]
    x = _conv_relu(n, x, f"fc6{sfx}", f"relu6{sfx}", w(4096), ks=7, pad=0)
    if not deploy:
        n[f"drop6{sfx}"] = L.Dropout(x, dropout_ratio=0.5, in_place=True)
        x = n[f"drop6{sfx}"]
    x = _conv_relu(n, x, f"fc7{sfx}", f"relu7{sfx}", w(4096), ks=1, pad=0)
    if not deploy:
        n[f"drop7{sfx}"] = L.Dropout(x, dropout_ratio=0.5, in_place=True)
        x = n[f"drop7{sfx}"]
    out["fc7"] = x
    return out


def _caffenet_convs(n: NetSpec, bottom: Top, w: _Width, conv: Callable[..., Top], conv1_pad: int) -> Top:
    """conv1 ... pool5 of CaffeNet (LRN, grouped convolutions); ``conv(name, relu, x, count,
    kernel, stride, pad, group)`` writes each convolution the way its net spells the parameters."""
    x = conv("conv1", "relu1", bottom, w(96), 11, 4, conv1_pad, 1)
    n.pool1 = L.Pooling(x, pool="MAX", kernel_size=3, stride=2)
    n.norm1 = L.LRN(n.pool1, local_size=5, alpha=1e-4, beta=0.75)
    x = conv("conv2", "relu2", n.norm1, w(256), 5, 1, 2, 2)
    n.pool2 = L.Pooling(x, pool="MAX", kernel_size=3, stride=2)
    n.norm2 = L.LRN(n.pool2, local_size=5, alpha=1e-4, beta=0.75)
    x = conv("conv3", "relu3", n.norm2, w(384), 3, 1, 1, 1)
    x = conv("conv4", "relu4", x, w(384), 3, 1, 1, 2)
    x = conv("conv5", "relu5", x, w(256), 3, 1, 1, 2)
    n.pool5 = L.Pooling(x, pool="MAX", kernel_size=3, stride=2)
    return n.pool5


def _alexnet_fc(n: NetSpec, bottom: Top, w: _Width, deploy: bool) -> dict[str, Top]:
    """The CaffeNet trunk of FCN-AlexNet (pad 100 at conv1, fc6/fc7 as convolutions, no param specs)."""

    def conv(name: str, relu: str, x: Top, count: int, ks: int, stride: int, pad: int, group: int) -> Top:
        n[name] = L.Convolution(x, num_output=count, pad=pad, kernel_size=ks, group=group, stride=stride)
        n[relu] = L.ReLU(n[name], in_place=True)
        return n[relu]

    x = conv("fc6", "relu6", _caffenet_convs(n, bottom, w, conv, 100), w(4096), 6, 1, 0, 1)
    if not deploy:
        n.drop6 = L.Dropout(x, dropout_ratio=0.5, in_place=True)
        x = n.drop6
    x = conv("fc7", "relu7", x, w(4096), 1, 1, 0, 1)
    if not deploy:
        n.drop7 = L.Dropout(x, dropout_ratio=0.5, in_place=True)
        x = n.drop7
    return {"fc7": x}


# ----------------------------------------------------------------------------------------------
# Heads


def _score(n: NetSpec, name: str, bottom: Top, classes: int) -> Top:
    n[name] = L.Convolution(bottom, num_output=classes, kernel_size=1, pad=0, param=_LEARN)
    return n[name]


def _upsample(n: NetSpec, name: str, bottom: Top, classes: int, factor: int, kernel: int = 0) -> Top:
    """A frozen, bias-free Deconvolution upsampling by ``factor`` (kernel ``2 * factor`` unless given)."""
    deconv = dict(num_output=classes, kernel_size=kernel or 2 * factor, stride=factor, bias_term=False)
    n[name] = L.Deconvolution(bottom, convolution_param=deconv, param=_FROZEN)
    return n[name]


def _skip_head(
    n: NetSpec, model: _Model, trunk: dict[str, Top], reference: Top, h: str, classes: int, score_fr: Top
) -> Top:
    """Upsampling with skips (FCN-32s/16s/8s); returns the cropped full-resolution score."""
    if model.stride == 32:
        kernel = 63 if model.backbone == "alexnet" else 64
        up = _upsample(n, f"upscore{h}", score_fr, classes, 32, kernel)
    else:
        up = _upsample(n, f"upscore2{h}", score_fr, classes, 2)
        pool4 = trunk["pool4"]
        if model.atonce:
            n.scale_pool4 = L.Scale(pool4, filler=dict(type="constant", value=0.01), param=_FROZEN)
            pool4 = n.scale_pool4
        skip = _score(n, f"score_pool4{h}", pool4, classes)
        n[f"score_pool4{h}c"] = crop(skip, up)
        n[f"fuse_pool4{h}"] = L.Eltwise(up, n[f"score_pool4{h}c"], operation="SUM")
        if model.stride == 16:
            up = _upsample(n, f"upscore16{h}", n[f"fuse_pool4{h}"], classes, 16)
        else:
            up = _upsample(n, f"upscore_pool4{h}", n[f"fuse_pool4{h}"], classes, 2)
            pool3 = trunk["pool3"]
            if model.atonce:
                n.scale_pool3 = L.Scale(pool3, filler=dict(type="constant", value=1e-4), param=_FROZEN)
                pool3 = n.scale_pool3
            skip = _score(n, f"score_pool3{h}", pool3, classes)
            n[f"score_pool3{h}c"] = crop(skip, up)
            n[f"fuse_pool3{h}"] = L.Eltwise(up, n[f"score_pool3{h}c"], operation="SUM")
            up = _upsample(n, f"upscore8{h}", n[f"fuse_pool3{h}"], classes, 8)
    n[f"score{h}"] = crop(up, reference)
    return n[f"score{h}"]


def _loss(n: NetSpec, name: str, score: Top, label: Top, normalize: bool) -> None:
    n[name] = L.SoftmaxWithLoss(score, label, loss_param=dict(normalize=normalize, ignore_label=255))


# ----------------------------------------------------------------------------------------------
# Nets


def _fcn(name: str, split: str, width: float) -> Message:
    model = _model(name)
    deploy = split == "deploy"
    w = _Width(width, 2 if model.backbone == "alexnet" else 1)
    n = NetSpec()
    if model.modality == "color-hha":
        if deploy:
            _input(n, {"color": 3, "hha": 3}, DEPLOY_SIZE)
        else:
            n.color, n.hha, n.label = _data_layer(model, split)
        classes = model.heads[0][1]
        scores = []
        for modality in ("color", "hha"):
            trunk = _vgg16_fc(n, n[modality], w, modality, deploy, f"conv1_1{modality}")
            scores.append(_score(n, f"score_fr{modality}", trunk["fc7"], classes))
        n.score_fused = L.Eltwise(*scores, operation="SUM", coeff=[0.5, 0.5])
        up = _upsample(n, "upscore", n.score_fused, classes, 32)
        n.score = crop(up, n.color)
        if not deploy:
            _loss(n, "loss", n.score, n.label, model.normalize)
        return n.to_proto()

    first = "conv1_1"
    if deploy:
        channels = 4 if model.modality == "color-d" else 3
        _input(n, {"data": channels}, DEPLOY_SIZE)
        labels: list[Top] = []
    elif model.modality == "color-d":
        n.color, n.depth, n.label = _data_layer(model, split)
        n.data = L.Concat(n.color, n.depth)
        labels = [n.label]
    else:
        tops = _data_layer(model, split)
        n.data = tops[0]
        label_names = ["sem", "geo"] if model.dataset == "siftflow" else ["label"]
        for label_name, top in zip(label_names, tops[1:], strict=True):
            n[label_name] = top
        labels = [n[label_name] for label_name in label_names]
    if model.modality == "color-d":
        first = "conv1_1_bgrd"
    if model.backbone == "alexnet":
        trunk = _alexnet_fc(n, n.data, w, deploy)
    else:
        trunk = _vgg16_fc(n, n.data, w, "", deploy, first)
    for i, (h, classes) in enumerate(model.heads):
        score_fr = _score(n, f"score_fr{h}", trunk["fc7"], classes)
        score = _skip_head(n, model, trunk, n.data, h, classes, score_fr)
        if not deploy:
            _loss(n, "loss" if i == 0 else f"loss{h}", score, labels[i], model.normalize)
    return n.to_proto()


def _vgg16_classifier(w: _Width) -> Message:
    n = NetSpec()
    _input(n, {"data": 3}, 224)
    x = n.data
    for b, (count, depth) in enumerate(((64, 2), (128, 2), (256, 3), (512, 3), (512, 3)), start=1):
        for i in range(1, depth + 1):
            n[f"conv{b}_{i}"] = L.Convolution(x, num_output=w(count), pad=1, kernel_size=3)
            n[f"relu{b}_{i}"] = L.ReLU(n[f"conv{b}_{i}"], in_place=True)
            x = n[f"relu{b}_{i}"]
        n[f"pool{b}"] = L.Pooling(x, pool="MAX", kernel_size=2, stride=2)
        x = n[f"pool{b}"]
    _classifier_head(n, x, w)
    return n.to_proto()


def _caffenet_classifier(w: _Width) -> Message:
    n = NetSpec()
    _input(n, {"data": 3}, 227)

    def conv(name: str, relu: str, x: Top, count: int, ks: int, stride: int, pad: int, group: int) -> Top:
        return _sparse_conv_relu(n, name, relu, x, count, ks, stride, pad, group)

    _classifier_head(n, _caffenet_convs(n, n.data, w, conv, 0), w)
    return n.to_proto()


# (name, 1x1, 3x3 reduce, 3x3, 5x5 reduce, 5x5, pool projection) of BVLC GoogLeNet's inceptions
_INCEPTIONS = (
    ("3a", 64, 96, 128, 16, 32, 32),
    ("3b", 128, 128, 192, 32, 96, 64),
    ("4a", 192, 96, 208, 16, 48, 64),
    ("4b", 160, 112, 224, 24, 64, 64),
    ("4c", 128, 128, 256, 24, 64, 64),
    ("4d", 112, 144, 288, 32, 64, 64),
    ("4e", 256, 160, 320, 32, 128, 128),
    ("5a", 256, 160, 320, 32, 128, 128),
    ("5b", 384, 192, 384, 48, 128, 128),
)


def _googlenet_classifier(w: _Width) -> Message:
    """BVLC GoogLeNet (deploy: no auxiliary classifiers), layer names as in the BVLC model zoo."""
    n = NetSpec()
    _input(n, {"data": 3}, 224)

    def conv(name: str, relu: str, x: Top, count: int, ks: int, stride: int = 1, pad: int = 0) -> Top:
        return _sparse_conv_relu(n, name, relu, x, count, ks, stride, pad, param=_LEARN)

    def lrn(name: str, x: Top) -> Top:
        n[name] = L.LRN(x, local_size=5, alpha=1e-4, beta=0.75)
        return n[name]

    def pool(name: str, x: Top, ks: int, stride: int, method: str = "MAX", pad: int = 0) -> Top:
        params: dict[str, Any] = dict(pool=method, kernel_size=ks, stride=stride)
        if pad:
            params["pad"] = pad
        n[name] = L.Pooling(x, **params)
        return n[name]

    x = conv("conv1/7x7_s2", "conv1/relu_7x7", n.data, w(64), 7, 2, 3)
    x = lrn("pool1/norm1", pool("pool1/3x3_s2", x, 3, 2))
    x = conv("conv2/3x3_reduce", "conv2/relu_3x3_reduce", x, w(64), 1)
    x = conv("conv2/3x3", "conv2/relu_3x3", x, w(192), 3, pad=1)
    x = pool("pool2/3x3_s2", lrn("conv2/norm2", x), 3, 2)
    for name, c1, r3, c3, r5, c5, proj in _INCEPTIONS:
        if name == "4a":
            x = pool("pool3/3x3_s2", x, 3, 2)
        elif name == "5a":
            x = pool("pool4/3x3_s2", x, 3, 2)
        i = f"inception_{name}/"
        one = conv(i + "1x1", i + "relu_1x1", x, w(c1), 1)
        three = conv(i + "3x3_reduce", i + "relu_3x3_reduce", x, w(r3), 1)
        three = conv(i + "3x3", i + "relu_3x3", three, w(c3), 3, pad=1)
        five = conv(i + "5x5_reduce", i + "relu_5x5_reduce", x, w(r5), 1)
        five = conv(i + "5x5", i + "relu_5x5", five, w(c5), 5, pad=2)
        projection = conv(i + "pool_proj", i + "relu_pool_proj", pool(i + "pool", x, 3, 1, pad=1), w(proj), 1)
        branches = [one, three, five, projection]
        n[i + "output"] = L.Concat(*branches)
        x = n[i + "output"]
    x = pool("pool5/7x7_s1", x, 7, 1, "AVE")
    n["pool5/drop_7x7_s1"] = L.Dropout(x, dropout_ratio=0.4, in_place=True)
    n["loss3/classifier"] = L.InnerProduct(n["pool5/drop_7x7_s1"], num_output=1000)
    n.prob = L.Softmax(n["loss3/classifier"])
    return n.to_proto()


def _classifier_head(n: NetSpec, x: Top, w: _Width) -> None:
    n.fc6 = L.InnerProduct(x, num_output=w(4096))
    n.relu6 = L.ReLU(n.fc6, in_place=True)
    n.drop6 = L.Dropout(n.relu6, dropout_ratio=0.5, in_place=True)
    n.fc7 = L.InnerProduct(n.drop6, num_output=w(4096))
    n.relu7 = L.ReLU(n.fc7, in_place=True)
    n.drop7 = L.Dropout(n.relu7, dropout_ratio=0.5, in_place=True)
    n.fc8 = L.InnerProduct(n.drop7, num_output=1000)
    n.prob = L.Softmax(n.fc8)


def net_definition(model: str, split: str = "deploy", *, width: float = 1.0) -> Message:
    """The ``NetParameter`` of an official FCN model (``MODELS``) or base classifier (``BASE_MODELS``)
    for ``split`` (one of ``SPLITS[model]``), with ``num_output`` of the feature layers scaled by
    ``width``. Raises ``ValueError`` for an unknown model or split or a width outside (0, 1].
    """
    if model not in SPLITS:
        raise ValueError(f"unknown model '{model}' (one of {', '.join(MODELS + BASE_MODELS)})")
    if split not in SPLITS[model]:
        raise ValueError(f"model '{model}' has no split '{split}' (one of {', '.join(SPLITS[model])})")
    if isinstance(width, bool) or not isinstance(width, (int, float)) or not 0 < width <= 1:
        raise ValueError(f"width must be a number in (0, 1], got {width!r}")
    width = float(width)
    if model == "vgg16":
        return _vgg16_classifier(_Width(width))
    if model == "caffenet":
        return _caffenet_classifier(_Width(width, 2))
    if model == "googlenet":
        return _googlenet_classifier(_Width(width))
    return _fcn(model, split, width)
