"""Caffe's backward pass through layers computed in place.

Layers that compute in place share one blob. When Caffe runs a layer's ``Backward_cpu``, that blob
holds the value the *last* of them wrote, so a layer whose backward reads its bottom's or top's
data (ReLU's mask, Sigmoid's ``y (1 - y)``) reads the chain's final value rather than its own.
For ``conv -> ReLU -> Dropout`` (all in place) this changes nothing; for ``ReLU -> Scale with a
bias``, ``ELU -> Log`` or ``Softmax -> Scale`` in place it changes the gradient, and training on
Caffe followed it. A layer whose backward reads its bottom reads, computed in place, its own
output even as the blob's last writer (BNLL: :attr:`Converted.reads_own_output`). Some
types' backward (Log, Power) also writes the bottom diff, which in place is the top diff, before
reading the top diff (:attr:`Converted.clobbers_top_diff`).

The graph keeps those numbers: a layer with :attr:`Converted.caffe_backward` whose blob a later
layer overwrites in place gets an :class:`InPlaceBackward` node after it, and the last writer of
the blob an :class:`InPlaceFinal` node that hands the final value to them. Without autograd (no
gradient needed, or while tracing for export) both pass their input through unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from ..layers.tracing import plain_inference

Backward = Callable[[Tensor, Tensor, Tensor, bool, Tensor], Tensor]


class _Slot:
    """The final value of one blob in one forward pass, set when its last writer has run."""

    value: Tensor | None = None


class _CaffeBackward(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any, x: Tensor, y: Tensor, slot: _Slot, backward: Backward, in_place: bool, *params: Tensor
    ) -> Tensor:
        ctx.save_for_backward(x, *params)
        ctx.slot, ctx.backward, ctx.in_place = slot, backward, in_place
        return y.clone()

    @staticmethod
    def backward(ctx: Any, dy: Tensor) -> tuple[Tensor | None, ...]:
        x, *params = ctx.saved_tensors
        final = ctx.slot.value
        if final is None:  # the final writer never ran: nothing overwrote the data
            raise RuntimeError("a layer computed in place lost its blob's final value")
        bottom = final if ctx.in_place else x
        if not params:
            return ctx.backward(dy, bottom, final, ctx.in_place, x), None, None, None, None
        dx, *dparams = ctx.backward(dy, bottom, final, ctx.in_place, x, *params)
        return (dx, None, None, None, None, *dparams)


class InPlaceBackward(nn.Module):
    """After a layer whose blob later layers overwrite in place: the same values, whose gradient is
    the layer's Caffe backward on the blob's final value (and its parameters', where given after
    ``y``: :attr:`Converted.caffe_backward_params`)."""

    def __init__(self, backward: Backward, in_place: bool) -> None:
        super().__init__()
        self.backward = backward
        self.in_place = in_place

    def forward(self, x: Tensor, y: Tensor, *params: Tensor) -> Tensor:
        if plain_inference(x, y):
            return y
        slot = _Slot()
        out = _CaffeBackward.apply(x, y.detach(), slot, self.backward, self.in_place, *params)
        out._caffe_inplace_slot = slot  # type: ignore[attr-defined]
        return out


class InPlaceFinal(nn.Module):
    """After the last layer writing a blob in place: hands its value to the earlier writers'
    :class:`InPlaceBackward` outputs (passed as the other arguments) and returns it."""

    def forward(self, final: Tensor, *earlier: Tensor) -> Tensor:
        for tensor in earlier:
            slot = getattr(tensor, "_caffe_inplace_slot", None)
            if slot is not None:  # (a blob sharing the final writer's memory: in its own shape)
                slot.value = final.detach().reshape(tensor.shape)
        return final


class _SharedValue(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, written: Tensor, blob: Tensor) -> Tensor:
        return written.detach().reshape(blob.shape).clone()

    @staticmethod
    def backward(ctx: Any, dy: Tensor) -> tuple[Tensor | None, ...]:
        return None, dy


def shared_value(written: Tensor, blob: Tensor) -> Tensor:
    """``blob`` after a layer computed ``written`` in place, where Caffe's two blobs share memory
    (a Reshape or Flatten top and its bottom): ``written``'s values in ``blob``'s shape. Its
    gradient goes to ``blob`` alone, as Caffe's split of ``blob`` routes a later reader's diff."""
    if plain_inference(written, blob):
        return written.reshape_as(blob)
    return _SharedValue.apply(written, blob)


def diff_left_unwritten(view: Tensor) -> Tensor:
    """A Reshape's top (or a one-bottom Concat's, a one-top Slice's) that only a Flatten reads: the
    same values, and no gradient for the layers before it. Caffe's Reshape shares its bottom's diff
    with its top when it reshapes; Flatten's backward then points that top's diff at its own, so
    the shared diff is never written (:attr:`Converted.repoints_bottom_diff`)."""
    return view.detach()


def without_backward(x: Tensor) -> Tensor:
    """A bottom whose layer says ``propagate_down: false``: the same values, and no gradient from
    this layer (its parameters still learn). Computed in place too: Caffe then skips the backward
    pass of the layers that wrote the blob before, since it marks the blob's name as needing none
    (``Net::Init``, ``blobs_skip_backp``)."""
    return x.detach() if x.requires_grad else x

