"""Channels-last activations between the convolutions that run on oneDNN's channels-last kernel.

A convolution calibrated to ``onednn-nhwc`` (:mod:`.speed`) returns its output channels-last
(``torch.channels_last``: each pixel's channels side by side): oneDNN's fastest layout on both CPUs
met, where a contiguous (NCHW) output costs a reorder of the whole blob, in and out, at every layer
(VGG's conv1_2: a third of its time). The next layers read it as it is where that gives the same
numbers as a contiguous blob: convolutions (each converts to the layout of its own calibrated
kernel), element-wise layers, MAX pooling, Crop, Concat and the border skipping's copies; a layer
that reads only its bottoms' shapes (SSD's PriorBox) takes any layout. Every
other reader, and the net's outputs, get it contiguous again through :func:`nchw`: their numbers
(sums over channels, softmax, ...) stay the plain graph's, and the caller gets the blobs it always
got. Convolutions whose kernel takes a contiguous blob convert it themselves (:func:`contiguous`),
and where two or more read the same blob they read one conversion of it
(:func:`converters.graph.speed.share_conversions`). The conversion is a copy by the faster, for each
shape, of PyTorch's 4-D copy and a transposed copy of each image's pixels x channels matrix.
"""

from __future__ import annotations

import math
import operator
import time
from collections.abc import Callable

import torch
from torch import Tensor, fx, nn

from ..layers import eltwise, shape
from ..layers.pooling import CaffePooling
from ..layers.tracing import is_channels_last, tracing
from . import border
from .folding import ConvNormScale

__all__ = ["channels_last_readers", "contiguous", "convolution_readers", "is_channels_last", "nchw"]


def nchw(x: Tensor) -> Tensor:
    """``x`` contiguous (NCHW) where it is channels-last; itself otherwise (and when traced). The
    same values as ``x.contiguous()`` (a copy), by the faster of two copies for this shape
    (:func:`contiguous`)."""
    if tracing() or not is_channels_last(x):
        return x
    return contiguous(x)


def contiguous(x: Tensor) -> Tensor:
    """``x.contiguous()``, the same values; for a channels-last 4-D CPU blob of plain inference, by
    the faster of two copies for its shape (:func:`_copier`)."""
    eligible = is_channels_last(x) and x.device.type == "cpu" and not x.requires_grad and not tracing()
    if not eligible or math.prod(x.shape) < RACE_VALUES:
        return x.contiguous()
    key = (tuple(x.shape), x.dtype, torch.get_num_threads())
    times = _COPY_TIMES.setdefault(key, [[], []])
    if min(len(t) for t in times) >= RACE_RUNS:  # raced: the faster
        return _COPIES[min((0, 1), key=lambda i: min(times[i]))](x)
    which = 0 if len(times[0]) <= len(times[1]) else 1  # in turns, each run a conversion the net needs
    began = time.perf_counter()
    out = _COPIES[which](x)
    times[which].append(time.perf_counter() - began)
    return out


def _by_transposes(x: Tensor) -> Tensor:
    """``x.contiguous()`` of a channels-last CPU ``x``, each image's pixels x channels matrix copied
    transposed (PyTorch's blocked 2-D transpose: on an Intel Xeon, 2 threads, 2-3x faster than the
    4-D copy on maps of 56 x 56 and more, slower on 28 x 28)."""
    batch, channels, height, width = x.shape
    out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    pixels = x.permute(0, 2, 3, 1).reshape(batch, height * width, channels)  # (a view: channels-last)
    planes = out.view(batch, channels, height * width)
    for image in range(batch):
        planes[image].copy_(pixels[image].t())
    return out


_COPIES = (Tensor.contiguous, _by_transposes)
#: Per shape, dtype and thread count: the times of each copy's runs so far (the race).
_COPY_TIMES: dict[tuple, list[list[float]]] = {}
#: Runs of each copy before the faster one is kept for a shape: the conversions the net makes anyway,
#: in turns (nothing is copied only to be timed), so a shape's first ``2 * RACE_RUNS`` conversions race.
RACE_RUNS = 2
#: Values below which a blob is converted by ``contiguous()`` without a race (both copies take
#: microseconds there).
RACE_VALUES = 1 << 16


# Readers that give the same numbers on a channels-last blob (per-element arithmetic, copies,
# MAX) and whose outputs may then be channels-last too.
_PASS_FUNCTIONS: set[Callable[..., object]] = {
    torch.relu, torch.relu_, torch.flatten, torch.permute, operator.getitem,
    eltwise.eltwise_sum, eltwise.eltwise_prod, eltwise.eltwise_max,
    shape.concat, shape.caffe_crop, border.expand, border.restore,
}  # fmt: skip


def _passes(net: fx.GraphModule, node: fx.Node) -> bool:
    if node.op == "call_function" and node.target is border.windowed:  # (layer, input, plan, position)
        module = net.get_submodule(str(node.args[0].target))  # type: ignore[union-attr]
    elif node.op == "call_function":
        return node.target in _PASS_FUNCTIONS
    elif node.op != "call_module":
        return False
    else:
        module = net.get_submodule(str(node.target))
    if isinstance(module, CaffePooling):
        return module.method == "MAX" and not module.mask
    return isinstance(module, nn.ReLU) or _produces(net, node)


def _reads_shapes_only(net: fx.GraphModule, node: fx.Node) -> bool:
    """Whether ``node`` reads only its inputs' shapes (SSD's PriorBox): any layout will do, so no
    conversion is made for it."""
    if node.op != "call_module":
        return False
    return bool(getattr(net.get_submodule(str(node.target)), "reads_shapes_only", False))


def _produces(net: fx.GraphModule, node: fx.Node) -> bool:
    """Whether ``node`` is a calibrated convolution (alone or with its BatchNorm and Scale): it may
    return a channels-last blob, and it takes any."""
    return _convolution(net, node) is not None


def _convolution(net: fx.GraphModule, node: fx.Node) -> nn.Module | None:
    """The calibrated convolution ``node`` calls (``None`` for any other node)."""
    from .speed import FastConv2d

    if node.op == "call_function" and node.target is border.windowed:  # (layer, input, plan, position)
        layer = node.args[0]
        module = net.get_submodule(str(layer.target)) if isinstance(layer, fx.Node) else None
    elif node.op == "call_module":
        module = net.get_submodule(str(node.target))
        module = module.conv if isinstance(module, ConvNormScale) else module
    else:
        return None
    return module if isinstance(module, FastConv2d) else None


def _maybe_channels_last(net: fx.GraphModule) -> dict[fx.Node, set[fx.Node]]:
    """Each blob that may be channels-last -> the convolutions it may come so from."""
    maybe: dict[fx.Node, set[fx.Node]] = {}
    for node in net.graph.nodes:
        inputs = [a for a in node.all_input_nodes if a in maybe]
        if _produces(net, node):
            maybe[node] = {node}
        elif inputs and _passes(net, node):
            maybe[node] = set().union(*(maybe[a] for a in inputs))
    return maybe


def convolution_readers(net: fx.GraphModule) -> dict[nn.Module, list[nn.Module]]:
    """Each calibrated convolution -> the calibrated convolutions that read its output as it is
    (through readers that keep a channels-last blob so); after :func:`channels_last_readers`."""
    maybe = _maybe_channels_last(net)
    readers: dict[nn.Module, list[nn.Module]] = {}
    for node in net.graph.nodes:
        if _produces(net, node):
            readers.setdefault(_convolution(net, node), [])  # type: ignore[arg-type]
            producers = set().union(*(maybe[a] for a in node.all_input_nodes if a in maybe))
            for producer in producers:
                readers.setdefault(_convolution(net, producer), []).append(_convolution(net, node))  # type: ignore[arg-type]
    return readers


def channels_last_readers(net: fx.GraphModule) -> list[nn.Module]:
    """Give every reader of a blob that may be channels-last (a convolution's output, through
    readers that keep it so) and that does not take it so, ``nchw(blob)`` instead, in ``net``'s
    graph; returns the convolutions whose input may be channels-last, and marks
    ``channels_last_output`` on those whose output reaches such a convolution.
    Applying it twice changes nothing more."""
    graph = net.graph
    maybe = _maybe_channels_last(net)
    readers: list[nn.Module] = []
    converted: dict[fx.Node, fx.Node] = {}
    for node in list(graph.nodes):
        inputs = [a for a in node.all_input_nodes if a in maybe]
        if not inputs or (node.op == "call_function" and node.target is nchw):
            continue
        if _reads_shapes_only(net, node):
            continue
        if _passes(net, node):
            if _produces(net, node):
                readers.append(_convolution(net, node))  # type: ignore[arg-type]
                for producer in set().union(*(maybe[a] for a in inputs)):
                    _convolution(net, producer).channels_last_output = True  # type: ignore[union-attr]
            continue
        for value in inputs:
            if value not in converted:
                with graph.inserting_after(value):
                    converted[value] = graph.call_function(nchw, (value,))
                converted[value]._rename(f"{value.name}_nchw")
            node.replace_input_with(value, converted[value])
    net.recompile()
    return readers
