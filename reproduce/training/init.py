"""Where a training run starts: the weights ``solve.py`` copies into the fresh train net.

- a base classifier (``vgg16``, ``caffenet``): the registry's ILSVRC caffemodel, its InnerProduct
  fc6/fc7 cast as convolutions by :func:`converters.graph.surgery.convolutionize` (fc8 and the
  softmax dropped), then copied by layer name (``solver.net.copy_from`` of the authors'
  ``vgg16-fcn.caffemodel``);
- a previous stage (``voc-fcn32s`` run's snapshot, any ``.caffemodel``/``.h5``) or a registry FCN
  (``voc-fcn32s``: the released weights, fine-tuned): copied by layer name;
- ``random``: every layer drawn at random, offline: weights from a Gaussian of standard deviation
  ``sqrt(2 / fan_in)`` (Caffe's ``msra`` filler; ``seed`` draws them), biases 0;
- ``none``: nothing copied (every layer from its filler: the official train nets declare none, so
  Caffe's default constant 0 applies and the net cannot learn).

Layers the source lacks keep Caffe's fillers (``FillerParameter``'s default is constant 0: the new
score layers start at zero); afterwards every layer whose name contains ``up`` gets bilinear
kernels on its diagonal (the official ``surgery.interp``). The colour-depth NYUD net gets its
4-channel ``conv1_1_bgrd`` from VGG16's ``conv1_1`` (colour as is, depth as the mean over colours),
and the colour-HHA net takes one source per stream (``surgery.transplant`` with a suffix).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import weights as registry
from converters.caffe.formats import read_weights
from converters.fcn.nets import BASE_MODELS, MODELS, net_definition
from converters.graph.surgery import convolutionize

__all__ = ["InitError", "Start", "bilinear_diagonal", "interp_layers", "random_weights", "start_weights"]

Blobs = dict[str, list[np.ndarray]]


class InitError(ValueError):
    """The start weights cannot be had (not downloaded, unreadable, wrong shapes): one line."""


@dataclass
class Start:
    """The weights a run starts from and what happened to each layer."""

    weights: Blobs
    source: str
    copied: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)  # in the source, not in the net

    def summary(self) -> str:
        """One line for the log."""
        dropped = f"; dropped {', '.join(self.dropped)}" if self.dropped else ""
        return f"start: {self.source}: copied {len(self.copied)} layers{dropped}"


def random_weights(parameter_shapes: Mapping[str, list[tuple[int, ...]]], seed: int = 0) -> Blobs:
    """Every layer's blobs drawn as Caffe's ``msra`` filler draws weights (Gaussian, standard
    deviation ``sqrt(2 / fan_in)``, fan_in = the blob's size over its first axis), biases (and any
    other blob of one axis) 0, from ``numpy``'s generator seeded with ``seed``."""
    rng = np.random.default_rng(seed)
    blobs: Blobs = {}
    for layer in sorted(parameter_shapes):
        out = []
        for shape in parameter_shapes[layer]:
            shape = tuple(int(d) for d in shape)
            if len(shape) < 2:
                out.append(np.zeros(shape, np.float32))
                continue
            fan_in = max(1, int(np.prod(shape[1:])))
            out.append(rng.standard_normal(shape, dtype=np.float32) * np.float32(np.sqrt(2.0 / fan_in)))
        blobs[layer] = out
    return blobs


def _registry_file(name: str, cache_dir: str | os.PathLike[str] | None, download: bool) -> Path:
    record = registry.get(name)
    path = registry.cached_path(record.name, cache_dir)
    if path.is_file():
        return path
    try:  # the download rule of every command: --download fetches, a terminal is asked, else one line
        return registry.obtain(record.name, download=True if download else None, cache_dir=cache_dir)
    except registry.api.NotDownloadedError:
        raise InitError(
            f"--init {name}: {record.filename} is not in the weights cache {path.parent}; add --download, "
            f"run `python -m weights fetch {name}` (from {record.url}), or pass --init FILE.caffemodel"
        ) from None


def _read(path: Path, what: str) -> Blobs:
    try:
        return read_weights(path)
    except (OSError, ValueError) as error:
        raise InitError(f"--init {what}: cannot read {path}: {error}") from None


def _base_weights(name: str, path: Path, width: float) -> Blobs:
    """A base classifier's weights with fc6/fc7 as convolutions (the authors' ``*-fcn.caffemodel``)."""
    stored = _read(path, name)
    net = net_definition(name, "deploy", width=width)
    try:
        _, cast = convolutionize(net, stored, layers=["fc6", "fc7"])
    except ValueError as error:
        raise InitError(f"--init {name}: {path} does not fit the {name} net: {error}") from None
    return cast  # fc8 stays: it is dropped by name when copied, as the authors' transplant drops it


def source_weights(
    source: str,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    download: bool = False,
    width: float = 1.0,
) -> Blobs:
    """The blobs of one ``--init`` source: a file, a base classifier (convolutionized) or a registry FCN."""
    path = Path(source).expanduser()
    if path.is_file():
        return _read(path, source)
    if source in BASE_MODELS:
        return _base_weights(source, _registry_file(source, cache_dir, download), width)
    if source in MODELS:
        try:
            return _read(_registry_file(source, cache_dir, download), source)
        except registry.api.NotReleasedError as error:
            raise InitError(f"--init {source}: {error}") from None
    if os.sep in source or source.endswith((".caffemodel", ".h5")):
        raise InitError(f"--init {source}: no such file")
    raise InitError(
        f"--init {source}: not a file, a base net ({', '.join(BASE_MODELS)}) or a registry model "
        f"({', '.join(MODELS)})"
    )


def interp_layers(layer_names: Sequence[str]) -> list[str]:
    """The layers ``solve.py`` makes bilinear: every parameter layer whose name contains ``up``."""
    return [name for name in layer_names if "up" in name]


def bilinear_diagonal(weight: np.ndarray) -> np.ndarray:
    """``weight`` (``m x k x h x h``, ``m == k`` or ``k == 1``) with bilinear upsampling kernels on
    its diagonal (the official ``surgery.upsample_filt``/``interp``), the rest left as it is."""
    m, k, h, w = weight.shape
    if (m != k and k != 1) or h != w:
        raise InitError(
            f"cannot make a {list(weight.shape)} deconvolution bilinear (needs m == k and h == w)"
        )
    factor = (h + 1) // 2
    center = factor - 1 if h % 2 == 1 else factor - 0.5
    grid = np.arange(h, dtype=np.float64)
    axis = 1 - np.abs(grid - center) / factor
    out = np.array(weight, dtype=np.float32, copy=True)
    out[range(m), range(k) if k == m else 0] = (axis[:, None] * axis[None, :]).astype(np.float32)
    return out


def _transplant(
    target: Blobs, shapes: Mapping[str, list[tuple[int, ...]]], source: Blobs, suffix: str, start: Start
) -> None:
    """``surgery.transplant``: copy by name (+ ``suffix``), a blob of another shape but the same size
    copied flat, blobs beyond the net's dropped."""
    for name, blobs in source.items():
        new = name + suffix
        if new not in shapes:
            start.dropped.append(name)
            continue
        out = []
        for i, shape in enumerate(shapes[new]):
            if i >= len(blobs):
                break
            blob = np.asarray(blobs[i], dtype=np.float32)
            if blob.size != int(np.prod(shape)):
                raise InitError(
                    f"--init {start.source}: layer '{name}' blob {i} has shape {list(blob.shape)}, the net's "
                    f"'{new}' needs {list(shape)} (another width or class count?)"
                )
            out.append(blob.reshape(shape))
        if len(out) == len(shapes[new]):
            target[new] = out
            start.copied.append(new)


def start_weights(
    model: str,
    sources: Sequence[str],
    parameter_shapes: Mapping[str, list[tuple[int, ...]]],
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    download: bool = False,
    width: float = 1.0,
    seed: int = 0,
) -> Start:
    """The weights ``model``'s train net (its layers' blob shapes in ``parameter_shapes``) starts from,
    copied from ``sources`` (one, or two for ``nyud-fcn32s-color-hha``: colour then HHA stream), with
    the ``up`` layers made bilinear. Layers not returned are left to Caffe's fillers."""
    sources = [s for s in sources if s]
    start = Start({}, " + ".join(sources) or "none")
    if sources == ["none"]:
        sources = []
    if sources == ["random"]:
        upsampling = set(interp_layers(list(parameter_shapes)))  # bilinear below, as ever
        drawn = {k: v for k, v in parameter_shapes.items() if k not in upsampling}
        start.weights = random_weights(drawn, seed)
        start.copied = list(start.weights)
        start.source = f"random (fan-in Gaussian, seed {seed})"
        sources = []
    if model == "nyud-fcn32s-color-hha":
        if len(sources) not in (0, 1, 2):
            raise InitError("--init: nyud-fcn32s-color-hha takes one source, or two (colour, HHA)")
        streams = list(zip(("color", "hha"), sources * 2 if len(sources) == 1 else sources, strict=False))
        for suffix, source in streams:
            _transplant(
                start.weights,
                parameter_shapes,
                source_weights(source, cache_dir=cache_dir, download=download, width=width),
                suffix,
                start,
            )
    else:
        if len(sources) > 1:
            raise InitError(f"--init: {model} takes one source")
        for source in sources:
            blobs = source_weights(source, cache_dir=cache_dir, download=download, width=width)
            if model == "nyud-fcn32s-color-d" and "conv1_1" in blobs and "conv1_1_bgrd" in parameter_shapes:
                color = np.asarray(blobs["conv1_1"][0], dtype=np.float32)
                depth = color.mean(axis=1, keepdims=True)
                blobs = {
                    **blobs,
                    "conv1_1_bgrd": [np.concatenate([color, depth], axis=1), blobs["conv1_1"][1]],
                }
                blobs.pop("conv1_1")
            _transplant(start.weights, parameter_shapes, blobs, "", start)
    for name in interp_layers(list(parameter_shapes)):
        shape = parameter_shapes[name][0]
        weight = start.weights[name][0] if name in start.weights else np.zeros(shape, dtype=np.float32)
        start.weights[name] = [bilinear_diagonal(weight)] + list(start.weights.get(name, [None])[1:])
    return start
