"""Values with another gradient: :func:`gradient_only` carries a gradient into a computed value
without changing it, for the layers whose Caffe backward is not the derivative of their forward."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .tracing import tracing


class _GradientOnly(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, t: Tensor) -> Tensor:
        return torch.zeros_like(t)

    @staticmethod
    def backward(ctx: Any, dy: Tensor) -> Tensor:
        return dy


def gradient_only(t: Tensor) -> Tensor:
    """Zeros shaped like ``t`` through which autograd passes the gradient on to ``t`` unchanged, so
    that ``value + gradient_only(t) * factor`` is ``value`` exactly, its gradient ``factor`` towards
    ``t``. ``(t - t.detach()) * factor`` would give NaN where ``t`` is infinite or NaN (inf - inf)."""
    if torch.is_grad_enabled() and t.requires_grad and not tracing():
        return _GradientOnly.apply(t)
    return torch.zeros_like(t)
