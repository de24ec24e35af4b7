"""Layers that move blobs rather than compute: data layers (the graph's inputs), Silence, Split,
Dropout (identity at test time), and HDF5Output (a sink that writes its bottoms to a file)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from ..caffe.message import Message
from ..caffe.traits import DATA_LAYER_TYPES
from ..errors import NetError, UnsupportedLayerError
from .registry import Converted, Converter, LayerContext, Shape, register_layer
from .tracing import has_values

#: ``python_param.module`` -> the converter of the well-known Python layers that compute (the FCN
#: data layers, ``voc_layers`` and the rest, take no bottoms: their tops are inputs like any data
#: layer's).
PYTHON_LAYERS: dict[str, Converter] = {}


def python_layer(module: str) -> Callable[[Converter], Converter]:
    """Register the converter of the Python layers whose ``python_param.module`` is ``module``."""

    def decorate(function: Converter) -> Converter:
        if module in PYTHON_LAYERS:
            raise ValueError(f"Python layer module '{module}' already has a converter")
        PYTHON_LAYERS[module] = function
        return function

    return decorate


def data_layer(ctx: LayerContext) -> Converted:
    """A layer that reads data from outside the net: its tops are the graph's inputs. A Python layer
    with bottoms computes: converted when its module is a well-known one (:data:`PYTHON_LAYERS`)."""
    if ctx.bottoms:  # only Python layers get here: the other data types take no bottoms
        module = str(ctx.param("python_param").get("module"))
        if module in PYTHON_LAYERS:
            return PYTHON_LAYERS[module](ctx)
        known = ", ".join(sorted(PYTHON_LAYERS))
        raise UnsupportedLayerError(
            f"{ctx.where} has bottoms: it computes in Python code (module '{module}') that fcn-port "
            f"cannot run (known modules: {known}); add a converter for it with "
            "@converters.register_layer('Python', override=True)"
        )
    return Converted(role="input")


def dummy_data_tops(layer: Message) -> list[tuple[Shape, float | None]]:
    """Each top of a DummyData layer: its shape and its constant value, or ``None`` where its
    filler is random (Caffe draws it anew at every forward pass), as ``DummyDataLayer::LayerSetUp``
    reads them: ``shape`` (one for every top or one each) or the legacy ``num``, ``channels``,
    ``height`` and ``width`` (each one or one per top), not both; ``data_filler`` none (zeros), one
    or one per top."""
    where = f"layer '{layer.get('name')}' (DummyData)"
    p, count = layer.get("dummy_data_param"), len(layer.getall("top"))

    def pick(values: list, what: str) -> list:
        if len(values) not in (1, count):
            raise NetError(
                f"{where}: {what} given {len(values)} times for {count} top(s); give it once, or once per top"
            )
        return [values[i if len(values) > 1 else 0] for i in range(count)]

    legacy = {f: [int(v) for v in p.getall(f)] for f in ("num", "channels", "height", "width")}
    shapes = [tuple(int(d) for d in s.getall("dim")) for s in p.getall("shape")]
    if any(legacy.values()):
        if shapes:
            raise NetError(f"{where}: give dummy_data_param.shape or num/channels/height/width, not both")
        columns = [pick(values, f"dummy_data_param.{field}") for field, values in legacy.items()]
        shapes = [tuple(dims) for dims in zip(*columns, strict=True)]
    else:
        shapes = pick(shapes, "dummy_data_param.shape")
    fillers = list(p.getall("data_filler"))
    values: list[float | None] = [0.0] * count
    if fillers:
        values = [float(f.get("value")) if str(f.get("type")) == "constant" else None
                  for f in pick(fillers, "dummy_data_param.data_filler")]  # fmt: skip
    return list(zip(shapes, values, strict=True))


class ConstantBlobs(nn.Module):
    """DummyData whose fillers are all constant: its tops, the same values at every forward pass."""

    def __init__(self, tops: list[tuple[Shape, float]]) -> None:
        super().__init__()
        self.tops = tops
        self.register_buffer("anchor", torch.empty(0, device="meta"), persistent=False)  # (its device)

    def extra_repr(self) -> str:
        return ", ".join(f"{list(shape)}={value:g}" for shape, value in self.tops)

    def forward(self) -> Tensor | tuple[Tensor, ...]:
        made = tuple(torch.full(shape, value, device=self.anchor.device) for shape, value in self.tops)
        return made if len(made) > 1 else made[0]


def dummy_data(ctx: LayerContext) -> Converted:
    """DummyData: constant fillers (Caffe's default is 0) make tops the graph computes; a random
    filler makes every top an input of the shapes the layer declares (feed what Caffe drew)."""
    tops = dummy_data_tops(ctx.layer)
    for top, (shape, _) in zip(ctx.tops, tops, strict=True):
        if any(d < 0 for d in shape):
            raise NetError(f"{ctx.where}: top '{top}' has a negative dimension {list(shape)}")
    if any(value is None for _, value in tops):
        return Converted(role="input")
    made = [shape for shape, _ in tops]
    return Converted(
        module=ConstantBlobs(tops),  # type: ignore[arg-type]
        outputs=len(tops),
        output_shape=lambda shapes: made if len(made) > 1 else made[0],
    )


# Caffe's bottom/top counts of each data layer type (ExactNumTopBlobs, MinTopBlobs, MaxTopBlobs).
_DATA_TOPS = {"Data": (1, 2), "ImageData": 2, "MemoryData": 2, "WindowData": 2, "AnnotatedData": (1, 2)}
for _type in sorted(DATA_LAYER_TYPES - {"Python", "DummyData"}):
    register_layer(_type, bottoms=0, tops=_DATA_TOPS.get(_type, (1, None)))(data_layer)
register_layer("DummyData", bottoms=0, tops=(1, None))(dummy_data)
register_layer("Python")(data_layer)  # a Python layer's counts are its code's business


@register_layer("Silence", bottoms=(1, None), tops=0)
def silence(ctx: LayerContext) -> Converted:
    return Converted(role="silence")


class HDF5Output(nn.Module):
    """Caffe's HDF5Output: writes its two bottoms to ``file_name`` as the float datasets ``data``
    and ``label``, each in Caffe's legacy 4-D shape (N, C, H, W; missing axes 1). Caffe writes
    one batch per net (a second forward pass finds the datasets there and stops); so does this
    module, with a one-line error. The file is written whole or not at all."""

    _is_impure = True  # a side effect: graph passes must keep it

    def __init__(self, file_name: str) -> None:
        super().__init__()
        self.file_name = file_name
        self.written = False

    def extra_repr(self) -> str:
        return f"file_name={self.file_name!r}"

    def forward(self, data: Tensor, label: Tensor) -> None:
        if not has_values(data):
            return None
        if self.written:
            raise RuntimeError(
                f"HDF5Output: '{self.file_name}' holds this net's batch already; Caffe writes one batch "
                "per net (its second forward pass stops): build the net again to write another"
            )
        if data.shape[0] != label.shape[0]:
            raise ValueError(
                f"HDF5Output: data {list(data.shape)} and label {list(label.shape)} must have the same "
                "batch size"
            )
        import h5py

        from ..atomic import atomic_path

        arrays = {name: legacy_4d(blob) for name, blob in (("data", data), ("label", label))}
        with atomic_path(Path(self.file_name)) as tmp, h5py.File(tmp, "w") as file:
            for name, array in arrays.items():
                file.create_dataset(name, data=array)
        self.written = True
        return None


def legacy_4d(blob: Tensor) -> np.ndarray:
    """A blob's float32 values in Caffe's legacy (num, channels, height, width) shape."""
    if blob.dim() > 4:
        raise ValueError(f"HDF5Output: a blob of {blob.dim()} axes {list(blob.shape)} has no 4-D form")
    shape = list(blob.shape) + [1] * (4 - blob.dim())
    return blob.detach().to("cpu", torch.float32).reshape(shape).numpy()


@register_layer("HDF5Output", bottoms=2, tops=0)
def hdf5_output(ctx: LayerContext) -> Converted:
    name = str(ctx.param("hdf5_output_param").get("file_name"))
    if not name:
        raise ValueError(f"{ctx.where}: hdf5_output_param needs a file_name")
    for blob, shape in zip(ctx.bottoms, ctx.bottom_shapes, strict=True):
        if shape is not None and len(shape) > 4:
            raise ValueError(f"{ctx.where}: '{blob}' {list(shape)} has more axes than the 4 Caffe writes")
    return Converted(module=HDF5Output(name), outputs=0, output_shape=lambda shapes: [])


def identity(x: Tensor) -> Tensor:
    """The blob itself (Split's tops all share their bottom's data)."""
    return x


@register_layer("Split", bottoms=1, tops=(1, None))
def split(ctx: LayerContext) -> Converted:
    # Caffe's Split tops share the bottom's data (a layer in place on one changes all), each its own diff
    return Converted(function=identity, same_for_all_tops=True, shares_data=True)


@register_layer("Dropout", bottoms=1, tops=1)
def dropout(ctx: LayerContext) -> Converted:
    """Caffe's Dropout: identity in eval mode; in train mode each element is kept with probability
    1 - ratio and scaled by 1 / (1 - ratio) (``nn.Dropout`` does this arithmetic; Caffe's random
    masks themselves cannot be reproduced)."""
    p = ctx.param("dropout_param")
    ratio = float(p.get("dropout_ratio"))  # (finite: caffe.rules refuses NaN and infinity)
    scaled = "scale_train" not in p or bool(p.get("scale_train"))
    sampled = bool(p.get("sample_weights_test"))
    if not 0 <= ratio < 1:  # Caffe's release build takes it (DCHECKs only); its training mask would not
        why = (
            f"{ctx.where}: dropout_ratio {ratio:g} cannot train (Caffe keeps each value with probability "
            f"1 - ratio and scales it by 1 / (1 - ratio)): give a ratio in [0, 1); a test net runs with it"
        )
        if ctx.phase == "TRAIN" or sampled:
            raise NetError(why)
        return Converted(module=TestOnlyDropout(ratio, scaled, why), keeps_shape=True)
    if not scaled:
        return Converted(module=UnscaledDropout(ratio), keeps_shape=True)
    if sampled:
        return Converted(module=SampledDropout(ratio), keeps_shape=True)
    return Converted(module=nn.Dropout(ratio), keeps_shape=True)


class TestOnlyDropout(nn.Module):
    """A Dropout whose ratio is outside [0, 1), as Caffe tests it: the identity, or with
    ``scale_train: false`` a product by 1 - ratio. Training it is refused with ``why``."""

    def __init__(self, ratio: float, scaled: bool, why: str) -> None:
        super().__init__()
        self.ratio, self.scaled, self.why = ratio, scaled, why

    def extra_repr(self) -> str:
        return f"ratio={self.ratio}, scale_train={self.scaled}, test only"

    def forward(self, x: Tensor) -> Tensor:
        if self.training:
            raise NetError(self.why)
        return x if self.scaled else x * (1.0 - self.ratio)


class SampledDropout(nn.Dropout):
    """SegNet's Dropout with ``sample_weights_test: true`` (Bayesian SegNet): the random mask, scaled
    by 1 / (1 - ratio), in testing too (Monte Carlo samples: each call draws anew)."""

    def forward(self, x: Tensor) -> Tensor:
        return torch.nn.functional.dropout(x, self.p, training=True)


class UnscaledDropout(nn.Module):
    """The Dropout of py-faster-rcnn's fork (and CTPN's, OpenCV's) with ``scale_train: false``:
    training keeps each element with probability 1 - ratio, unscaled; testing multiplies by
    1 - ratio (the published Faster R-CNN models' fc6 and fc7)."""

    def __init__(self, ratio: float) -> None:
        super().__init__()
        self.ratio = ratio

    def extra_repr(self) -> str:
        return f"ratio={self.ratio}, scale_train=False"

    def forward(self, x: Tensor) -> Tensor:
        if self.training:
            return x * (torch.rand_like(x) >= self.ratio).to(x.dtype)
        return x * (1.0 - self.ratio)


class ParameterBlob(nn.Module):
    """Caffe's Parameter layer: no bottoms, one learnable blob as its top."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(shape, device="meta"))

    def forward(self) -> Tensor:
        return self.weight.clone()  # the top, not the parameter object (gradients flow back to it)


@register_layer("Parameter", bottoms=0, tops=1)
def parameter_layer(ctx: LayerContext) -> Converted:
    shape = tuple(int(d) for d in ctx.param("parameter_param").get("shape").get("dim"))
    if any(d < 1 for d in shape):
        raise ValueError(f"{ctx.where}: parameter_param shape {list(shape)} must have positive dimensions")
    return Converted(module=ParameterBlob(shape), blobs=[("weight", shape)], output_shape=lambda s: shape)
