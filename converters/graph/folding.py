"""Caffe's BatchNorm and Scale folded into the convolution before them, for CPU inference.

ResNets, MobileNets and most nets since 2015 follow each convolution with a BatchNorm (stored
statistics) and a Scale: two more passes over every activation, each an affine map per channel.
:func:`fold_batch_norms` gives such a chain ``Convolution -> BatchNorm [-> Scale]`` (or
``Convolution -> Scale``), where nothing else reads the intermediate blobs, one convolution whose
weights and bias are the composition, computed in float64 and rounded once:

    w' = w * a,  b' = (b - mean / f) * a * gamma + beta,  a = gamma / sqrt(var / f + eps)

(``f``: BatchNorm's stored scale factor, 0 read as 0 as Caffe does; ``gamma``, ``beta``: Scale's
weight and bias, 1 and 0 where there is none). The folded convolution is calibrated like any other
(:mod:`.speed`). The parameters, buffers and state dict are the net's own: the folded weights are
derived (again whenever one of them changes), and the chain itself runs for gradients, other
devices and dtypes, and tracing (exports keep Caffe's layers).
"""

from __future__ import annotations

import torch
from torch import Tensor, fx, nn

from ..layers.normalization import BatchNorm
from ..layers.scale import Scale

__all__ = ["FoldedConv2d", "fold_batch_norms"]


class FoldedConv2d(nn.Module):
    """``scale(batch_norm(conv(x)))`` (either of the two may be ``None``) as one convolution for
    float32 CPU inference. It registers nothing: ``conv``, ``batch_norm`` and ``scale`` stay the net's
    modules (state dict unchanged)."""

    def __init__(
        self, conv: nn.Conv2d, batch_norm: BatchNorm | None, scale: Scale | None,
        speed_input: tuple[int, int] | None = None,
    ) -> None:  # fmt: skip
        super().__init__()
        self._parts = (conv, batch_norm, scale)  # a tuple: not registered as submodules
        self.speed_input = speed_input
        self._folded: tuple[tuple, nn.Conv2d] | None = None

    def extra_repr(self) -> str:
        conv, batch_norm, scale = self._parts
        parts = ", ".join(f"{k}={v is not None}" for k, v in (("batch_norm", batch_norm), ("scale", scale)))
        return f"out_channels={conv.out_channels}, {parts}"

    def _tensors(self) -> list[Tensor]:
        conv, batch_norm, scale = self._parts
        out = [conv.weight, conv.bias]
        if batch_norm is not None:
            out += [batch_norm.mean, batch_norm.variance, batch_norm.scale_factor]
        if scale is not None:
            out += [scale.weight, scale.bias]
        return out

    def _key(self) -> tuple:
        return tuple((id(t), t._version) if t is not None else None for t in self._tensors())

    def _fast(self, x: Tensor) -> bool:
        from ..layers.tracing import tracing

        tensors = [t for t in self._tensors() if t is not None]
        grad = torch.is_grad_enabled() and (x.requires_grad or any(t.requires_grad for t in tensors))
        cpu = x.device.type == "cpu" and x.dtype == torch.float32
        same = all(t.device.type == "cpu" and t.dtype == torch.float32 for t in tensors)
        return cpu and same and not grad and not tracing()

    def folded(self) -> nn.Conv2d | None:
        """The folded convolution for the current parameters (folded again when any of them changed);
        ``None`` where a parameter or the composition is not finite (the chain then runs as Caffe's)."""
        key = self._key()
        if self._folded is None or self._folded[0] != key:
            self._folded = (key, _fold(*self._parts, self.speed_input))
        return self._folded[1]

    def forward(self, x: Tensor) -> Tensor:
        folded = self.folded() if self._fast(x) else None
        if folded is not None:
            return folded(x)
        conv, batch_norm, scale = self._parts
        x = conv(x)
        if batch_norm is not None:
            x = batch_norm(x)
        return scale(x) if scale is not None else x


def _fold(
    conv: nn.Conv2d, batch_norm: BatchNorm | None, scale: Scale | None, speed_input: tuple[int, int] | None
) -> nn.Conv2d | None:
    from .speed import FastConv2d, _suits_calibration

    with torch.inference_mode(False), torch.no_grad():  # (folded again inside a forward: normal tensors)
        weight = conv.weight.detach().double()
        bias = torch.zeros(weight.shape[0], dtype=torch.float64)
        if conv.bias is not None:
            bias = conv.bias.detach().double()
        factor = torch.ones(weight.shape[0], dtype=torch.float64)
        if batch_norm is not None:
            stored = batch_norm.scale_factor.detach().double()
            inverse = torch.where(stored == 0, torch.zeros_like(stored), 1 / stored)
            mean = batch_norm.mean.detach().double() * inverse
            variance = batch_norm.variance.detach().double() * inverse
            factor = 1 / torch.sqrt(variance + batch_norm.eps)
            bias = (bias - mean) * factor
        if scale is not None:
            gamma = scale.weight.detach().double().reshape(-1)
            factor = factor * gamma
            bias = bias * gamma + (scale.bias.detach().double().reshape(-1) if scale.bias is not None else 0)
        kind = FastConv2d if _suits_calibration(conv) else nn.Conv2d
        geometry = {"stride": conv.stride, "padding": conv.padding, "dilation": conv.dilation}
        folded = kind(conv.in_channels, conv.out_channels, conv.kernel_size, **geometry, groups=conv.groups,
                      padding_mode=conv.padding_mode, device="meta")  # fmt: skip
        weight, bias = (weight * factor.reshape(-1, 1, 1, 1)).float(), bias.float()
        if not (torch.isfinite(weight).all() and torch.isfinite(bias).all()):
            return None  # NaN or infinite statistics or weights: Caffe's chain gives their own NaN pattern
        folded.weight = nn.Parameter(weight, requires_grad=False)
        folded.bias = nn.Parameter(bias, requires_grad=False)
        if isinstance(folded, FastConv2d):
            folded.speed_input = speed_input
            folded.kernel_choice()
    return folded.eval()


def _only_user(node: fx.Node) -> fx.Node | None:
    users = list(node.users)
    return users[0] if len(users) == 1 and len(users[0].args) == 1 and not users[0].kwargs else None


def _module(net: fx.GraphModule, node: fx.Node | None, kind: type) -> nn.Module | None:
    if node is None or node.op != "call_module":
        return None
    module = net.get_submodule(str(node.target))
    return module if type(module) is kind else None


def fold_batch_norms(
    net: fx.GraphModule, speed_inputs: dict[str, tuple[int, int]] | None = None
) -> list[str]:
    """Fold every ``Convolution -> BatchNorm [-> Scale]`` and ``Convolution -> Scale`` chain of ``net``
    (stored statistics; a learned per-channel Scale; nothing else reading the blobs between) into a
    :class:`FoldedConv2d` in place; returns the folded convolutions' names. ``speed_inputs``: the
    layers' input sizes for the calibration's speed probe (``speed.declared_input_sizes``)."""
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
        name = f"{node.target}_folded"
        if "." in name or hasattr(net, name):
            continue
        module = FoldedConv2d(conv, batch_norm, scale, (speed_inputs or {}).get(str(node.target)))
        module.folded()  # folded and calibrated now, at load, not on the first forward
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
