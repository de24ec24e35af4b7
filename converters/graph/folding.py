"""Caffe's BatchNorm and Scale after a convolution as one in-place pass, for CPU inference.

ResNets, DenseNets, Inceptions and MobileNet v2 follow each convolution with a BatchNorm (stored
statistics) and a Scale: four passes over every activation in Caffe (subtract the mean, divide by
the deviation, multiply by gamma, add beta), each writing a new blob. :func:`fold_batch_norms` runs
such a chain ``Convolution -> BatchNorm [-> Scale]`` (or ``Convolution -> Scale``), where nothing
else reads the blobs between, as the convolution followed, on its own output, by Caffe's first step
exactly (``y - mean``, the same float32 operation) and one multiply-add:

    (y - mean / f) * a + beta,  a = gamma / sqrt(var / f + eps)

(``f``: BatchNorm's stored scale factor, 0 read as 0 as Caffe does; ``gamma``, ``beta``: Scale's
weight and bias, 1 and 0 where there is none; ``a`` computed in float64 and rounded once). It
differs from Caffe's chain by a rounding or two of each output, where folding the statistics into
the convolution's weights would change the convolution's own sums (measured: ResNet-50's
probabilities 1.8x as far from Caffe as the plain graph, against at most 1.1x this way). The
convolution keeps its weights and its calibrated kernel (:mod:`.speed`). The parameters, buffers
and state dict are the net's own: the factors are derived (again whenever one of them changes),
and the chain itself runs for gradients, other devices and dtypes, tracing (exports keep Caffe's
layers), and statistics that give no finite factors.
"""

from __future__ import annotations

import torch
from torch import Tensor, fx, nn

from ..layers.normalization import BatchNorm
from ..layers.scale import Scale

__all__ = ["ConvNormScale", "fold_batch_norms"]

_Affine = tuple[Tensor | None, Tensor, Tensor]  # mean to subtract (or None), factor, shift; (1, C, 1, 1)


def tensors_key(*tensors: Tensor | None) -> tuple:
    """What changes when ``tensors`` do: the tensors themselves, their version counters (in-place
    writes) and their memory (``.data =``, as the loader and users assign, moves no version counter):
    the key of every cache derived from a layer's weights."""
    return tuple((id(t), t._version, t.data_ptr()) if t is not None else None for t in tensors)


class ConvNormScale(nn.Module):
    """``scale(batch_norm(conv(x)))`` (either of the two may be ``None``) with the two in one
    in-place pass after ``conv`` for float32 CPU inference. It registers nothing: ``conv``,
    ``batch_norm`` and ``scale`` stay the net's modules (state dict unchanged)."""

    def __init__(self, conv: nn.Module, batch_norm: BatchNorm | None, scale: Scale | None) -> None:
        super().__init__()
        self._parts = (conv, batch_norm, scale)  # a tuple: not registered as submodules
        self._affine: tuple[tuple, _Affine | None] | None = None

    @property
    def conv(self) -> nn.Module:
        return self._parts[0]

    def extra_repr(self) -> str:
        _, batch_norm, scale = self._parts
        return f"batch_norm={batch_norm is not None}, scale={scale is not None}"

    def _tensors(self) -> list[Tensor]:
        _, batch_norm, scale = self._parts
        out = []
        if batch_norm is not None:
            out += [batch_norm.mean, batch_norm.variance, batch_norm.scale_factor]
        if scale is not None:
            out += [scale.weight] + ([scale.bias] if scale.bias is not None else [])
        return out

    def _fast(self, y: Tensor) -> bool:
        from ..layers.tracing import plain_inference

        tensors = self._tensors()
        cpu = y.device.type == "cpu" and y.dtype == torch.float32 and y.dim() == 4
        same = all(t.device.type == "cpu" and t.dtype == torch.float32 for t in tensors)
        return cpu and same and plain_inference(y, *tensors)

    def affine(self) -> _Affine | None:
        """``(mean, factor, shift)`` for the current statistics and Scale (computed again when any of
        them changed: another tensor, an in-place write, or new memory through ``.data =``);
        ``None`` where they give no finite factors (the chain then runs as Caffe's)."""
        key = tensors_key(*self._tensors())
        if self._affine is None or self._affine[0] != key:
            self._affine = (key, _affine(*self._parts[1:]))
        return self._affine[1]

    def forward(self, x: Tensor) -> Tensor:
        conv, batch_norm, scale = self._parts
        y = conv(x)
        affine = self.affine() if self._fast(y) else None
        if affine is None:
            if batch_norm is not None:
                y = batch_norm(y)
            return scale(y) if scale is not None else y
        mean, factor, shift = affine
        if mean is not None:
            y.sub_(mean)  # Caffe's first step, the same float32 operation (y is the convolution's own)
        return torch.addcmul(shift, y, factor, out=y)


def _affine(batch_norm: BatchNorm | None, scale: Scale | None) -> _Affine | None:
    with torch.inference_mode(False), torch.no_grad():  # (computed again inside a forward)
        mean = None
        channels = (batch_norm.mean if batch_norm is not None else scale.weight).numel()  # type: ignore[union-attr]
        factor = torch.ones(channels, dtype=torch.float64)
        shift = torch.zeros(channels, dtype=torch.float64)
        if batch_norm is not None:
            stored = batch_norm.scale_factor.detach()
            inverse = torch.where(stored == 0, torch.zeros_like(stored), 1 / stored)  # as BatchNorm.forward
            mean = (batch_norm.mean.detach() * inverse).reshape(1, -1, 1, 1).contiguous()
            variance = (batch_norm.variance.detach() * inverse).double()
            factor = 1 / torch.sqrt(variance + batch_norm.eps)
        if scale is not None:
            gamma = scale.weight.detach().double().reshape(-1)
            factor = factor * gamma
            if scale.bias is not None:
                shift = scale.bias.detach().double().reshape(-1)
        factor32, shift32 = factor.float().reshape(1, -1, 1, 1), shift.float().reshape(1, -1, 1, 1)
        finite = [t for t in (mean, factor32, shift32) if t is not None]
        if not all(bool(torch.isfinite(t).all()) for t in finite):
            return None  # NaN or infinite statistics: Caffe's chain gives their own NaN pattern
        return mean, factor32, shift32


def _only_user(node: fx.Node) -> fx.Node | None:
    users = list(node.users)
    return users[0] if len(users) == 1 and len(users[0].args) == 1 and not users[0].kwargs else None


def _module(net: fx.GraphModule, node: fx.Node | None, kind: type) -> nn.Module | None:
    if node is None or node.op != "call_module":
        return None
    module = net.get_submodule(str(node.target))
    return module if isinstance(module, kind) else None


def fold_batch_norms(net: fx.GraphModule) -> list[str]:
    """Run every ``Convolution -> BatchNorm [-> Scale]`` and ``Convolution -> Scale`` chain of ``net``
    (stored statistics; a learned per-channel Scale; nothing else reading the blobs between) as a
    :class:`ConvNormScale`, in place; returns the convolutions' names."""
    folded = []
    for node in list(net.graph.nodes):
        conv = _module(net, node, nn.Conv2d)
        if conv is None or conv.weight.device.type != "cpu" or conv.weight.dtype != torch.float32:
            continue
        after = _only_user(node)
        batch_norm = _module(net, after, BatchNorm)
        if batch_norm is not None and not batch_norm.use_global_stats:
            continue
        last = after if batch_norm is not None else node
        scale_node = _only_user(last) if batch_norm is not None else after
        scale = _module(net, scale_node, Scale)
        channels = (conv.out_channels,)
        if scale is not None and not (
            scale.axis == 1 and scale.weight is not None and tuple(scale.weight.shape) == channels
            and (scale.bias is None or tuple(scale.bias.shape) == channels)
        ):  # fmt: skip
            scale = None
        if batch_norm is None and scale is None:
            continue
        end = scale_node if scale is not None else after
        name = f"{node.target}_with_norm"
        if "." in name or hasattr(net, name):
            continue
        module = ConvNormScale(conv, batch_norm, scale)  # (its factors: at its first use)
        net.add_module(name, module)
        with net.graph.inserting_after(end):
            replacement = net.graph.call_module(name, node.args, node.kwargs)
        end.replace_all_uses_with(replacement)
        for gone in [end, after] if end is not after else [end]:
            net.graph.erase_node(gone)
        net.graph.erase_node(node)
        folded.append(str(node.target))
    if folded:
        net.recompile()
    return folded
