"""CTPN's layers (tianzhi0549/CTPN's Caffe): ``Transpose`` (an axis permutation), ``Reverse`` (one
axis flipped) and its own recurrent ``Lstm`` (not BVLC's ``LSTM``: one layer, blobs ``W_x``,
``W_h``, ``b``, an optional per-step continuation bottom).

``Lstm`` computes what CTPN's CUDA code computes (lstm_layer.cu; CTPN ran on the GPU). Its CPU
forward differs for a batch of more than one sequence: it adds sample 0's recurrent term
``W_h h(t-1)`` to every sample's gates (``caffe_add`` of ``h_to_gate``, not ``h_to_gate_t``).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...errors import NetError
from ..fillers import filler_or
from ..gradients import gradient_only
from ..registry import Converted, LayerContext, check_count, register_layer
from ..tracing import tracing


def _refuse_in_place(ctx: LayerContext) -> None:
    if ctx.bottoms[0] == ctx.tops[0]:
        raise NetError(f"{ctx.where}: cannot compute in place (CTPN refuses it); give the top another name")


@register_layer("Transpose", bottoms=1, tops=1)
def transpose(ctx: LayerContext) -> Converted:
    """``transpose_param.dim``: top axis ``i`` is bottom axis ``dim[i]`` (``x.permute(dim)``)."""
    _refuse_in_place(ctx)
    dims = [int(d) for d in ctx.param("transpose_param").get("dim")]
    ndim = len(ctx.bottom_shape(0))
    if sorted(dims) != list(range(ndim)):
        raise NetError(
            f"{ctx.where}: dim {dims} must name each of the bottom's {ndim} axes once (0 to {ndim - 1})"
        )
    return Converted(function=torch.permute, kwargs={"dims": dims})


@register_layer("Reverse", bottoms=1, tops=1)
def reverse(ctx: LayerContext) -> Converted:
    """``reverse_param.axis`` (``[0, axes)``; CTPN takes no negative axis) in reverse order."""
    _refuse_in_place(ctx)
    axis = int(ctx.param("reverse_param").get("axis"))
    ndim = len(ctx.bottom_shape(0))
    if not 0 <= axis < ndim:
        raise NetError(f"{ctx.where}: axis {axis} must be in [0, {ndim}) for a {ndim}-axis bottom")
    return Converted(function=torch.flip, kwargs={"dims": [axis]}, keeps_shape=True)


def _clip_gradient(threshold: float) -> Callable[[Tensor], Tensor]:
    """A gradient hook clamping to ``[-threshold, threshold]`` (CTPN's ``caffe_bound`` of the gate
    pre-activation diffs)."""

    def clip(gradient: Tensor) -> Tensor:
        return gradient.clamp(-threshold, threshold)

    return clip


class CTPNLstm(nn.Module):
    """CTPN's ``Lstm``: ``x`` is ``T x N x ...`` (``I`` = the values per step and sample), the top
    ``T x N x H``; gates ``pre = W_x x + b + cont W_h h(t-1)``, ordered i, f, o, g (sigmoid, sigmoid,
    sigmoid, tanh), ``c = cont f c(t-1) + i g``, ``h = o tanh(c)``. Without the continuation bottom
    ``cont`` is ``t > 0`` from a zero state; with it (``T`` values, a batch of one) ``cont`` is
    ``clip[t]`` and the state starts from the previous forward pass's final one (the first starts
    from zeros; :meth:`reset` forgets it).

    Gradients are CTPN's: ``clipping_threshold`` > 0 clips each gate's pre-activation gradient,
    and ``W_h``'s gradient takes every step's ``h(t-1)`` whatever ``cont`` is (the kernels' gemm over
    all steps), while ``h(t-1)``'s is scaled by ``cont``."""

    def __init__(self, input_features: int, hidden: int, clipping_threshold: float) -> None:
        super().__init__()
        self.hidden, self.clipping_threshold = hidden, clipping_threshold
        self.W_x = nn.Parameter(torch.empty(4 * hidden, input_features, device="meta"))
        self.W_h = nn.Parameter(torch.empty(4 * hidden, hidden, device="meta"))
        self.b = nn.Parameter(torch.empty(4 * hidden, device="meta"))
        self._carried: tuple[Tensor, Tensor] | None = None

    def extra_repr(self) -> str:
        return f"hidden={self.hidden}, clipping_threshold={self.clipping_threshold}"

    def reset(self) -> None:
        """Forget the final state of the last forward pass (the next one with a continuation
        bottom starts from zeros)."""
        self._carried = None

    def forward(self, x: Tensor, clip: Tensor | None = None) -> Tensor:
        steps, batch, hidden = x.shape[0], x.shape[1], self.hidden
        gates_x = F.linear(x.reshape(steps, batch, -1), self.W_x, self.b)
        zero = x.new_zeros(batch, hidden)
        h, c = zero, zero
        if clip is not None:
            if clip.numel() != steps:
                raise ValueError(f"Lstm: the continuation has {clip.numel()} values for {steps} steps")
            cont = clip.detach().reshape(steps, 1, 1).to(x.dtype)
            carried = self._carried if not tracing() else None  # an exported graph starts from zeros
            if carried is not None and tuple(carried[0].shape) == (batch, hidden):
                h, c = (s.to(gates_x.dtype) for s in carried)  # (carried from a float32 run into bf16)
        else:
            cont = (torch.arange(steps, device=x.device) > 0).to(x.dtype).reshape(steps, 1, 1)
        route = torch.is_grad_enabled() and not tracing() and (self.W_h.requires_grad or x.requires_grad)
        outputs = []
        for t in range(steps):
            k = cont[t]
            if route and clip is not None:
                # W_h's gradient from every step, unscaled by cont; h(t-1)'s scaled by it
                with_weight = F.linear(h.detach(), self.W_h)
                pre = gates_x[t] + k * F.linear(h, self.W_h.detach()) + gradient_only(with_weight)
            else:
                pre = gates_x[t] + k * F.linear(h, self.W_h)
            if self.clipping_threshold > 0 and pre.requires_grad and not tracing():
                pre.register_hook(_clip_gradient(self.clipping_threshold))
            i, f, o = (torch.sigmoid(pre[:, j * hidden : (j + 1) * hidden]) for j in range(3))
            g = torch.tanh(pre[:, 3 * hidden :])
            c = k * f * c + i * g
            h = o * torch.tanh(c)
            outputs.append(h)
        if not tracing():
            self._carried = (h.detach(), c.detach())
        return torch.stack(outputs, 0)


@register_layer("Lstm", bottoms=(1, 2), tops=1)
def lstm(ctx: LayerContext) -> Converted:
    """CTPN's Lstm; blobs ``W_x (4H x I)``, ``W_h (4H x H)``, ``b (4H)`` with ``lstm_param``'s fillers."""
    p = ctx.param("lstm_param")
    hidden = int(p.get("num_output"))
    if hidden < 1:
        raise NetError(f"{ctx.where}: lstm_param needs num_output of at least 1")
    shape = ctx.bottom_shape(0)
    if len(shape) < 2:
        raise NetError(f"{ctx.where}: the bottom must be T x N x ..., got {list(shape)}")
    steps, batch, features = shape[0], shape[1], math.prod(shape[2:])
    if len(ctx.bottoms) == 2:
        clip = ctx.bottom_shape(1)
        if not clip or math.prod(clip) != clip[0] or clip[0] != steps or batch != 1:
            raise NetError(
                f"{ctx.where}: the continuation bottom must hold one value per step ({steps}) for a "
                f"batch of 1 (CTPN reads clip[t + n] for sample n); got {list(clip)} for x {list(shape)}"
            )
    for blob, name in (((4 * hidden, features), "W_x"), ((4 * hidden, hidden), "W_h")):
        check_count(blob, f"the blob {name}", ctx.where)
    module = CTPNLstm(features, hidden, float(p.get("clipping_threshold")))
    return Converted(
        module=module,
        blobs=[("W_x", (4 * hidden, features)), ("W_h", (4 * hidden, hidden)), ("b", (4 * hidden,))],
        fillers=[filler_or(p, "weight_filler", None), filler_or(p, "weight_filler", None),
                 filler_or(p, "bias_filler", None)],
        output_shape=lambda shapes: (shapes[0][0], shapes[0][1], hidden),
    )  # fmt: skip
