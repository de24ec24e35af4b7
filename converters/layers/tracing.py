"""Whether an op runs on real values: checks that read tensor values (a mask index, a region's
image index) are skipped on the meta device (the shape engine) and while a graph is traced for
export or compilation; and how the inference-only fast paths see their input (:func:`plain_inference`,
:func:`is_channels_last`)."""

from __future__ import annotations

import sys

import torch
from torch import Tensor


def tracing() -> bool:
    """Whether the forward is being traced (torch.export, torch.compile, TorchScript, ONNX). A
    tracer that was never imported is not tracing: looking ``torch.onnx`` up imports it (torch
    loads it lazily), which cost the first forward pass 0.2 s."""
    compiler, onnx = sys.modules.get("torch.compiler"), sys.modules.get("torch.onnx")
    return bool(
        (compiler is not None and (compiler.is_compiling() or getattr(compiler, "is_exporting", bool)()))
        or torch.jit.is_tracing()
        or (onnx is not None and onnx.is_in_onnx_export())
    )


def plain_inference(*tensors: Tensor) -> bool:
    """Whether a forward over ``tensors`` (its input and parameters) needs neither autograd nor a
    traced graph, so that an inference-only kernel may compute it."""
    grad = torch.is_grad_enabled() and any(t.requires_grad for t in tensors)
    return not grad and not tracing()


def is_channels_last(x: object) -> bool:
    """Whether ``x`` is a 4-D tensor laid out channels-last (and not also contiguous: one channel,
    or one pixel, is both), as a channels-last convolution leaves it (``converters.graph.layout``)."""
    return (
        isinstance(x, Tensor)
        and x.dim() == 4
        and not x.is_contiguous()
        and x.is_contiguous(memory_format=torch.channels_last)
    )


def has_values(tensor: Tensor) -> bool:
    """Whether ``tensor``'s values can be read now (not on the meta device, not being traced)."""
    return not tensor.is_meta and not tracing()


def index_out_of_range(index: Tensor, size: int) -> int | None:
    """An integer index of ``index`` outside ``[0, size)`` (the lowest if one is negative, else the
    highest), or ``None`` when all are inside or the values cannot be read (:func:`has_values`)."""
    if not has_values(index) or not index.numel():
        return None
    low, high = int(index.min()), int(index.max())
    return low if low < 0 else high if high >= size else None
