"""Faster CPU inference for converted graphs, keeping Caffe's numbers within the parity tolerance.

``load_caffe`` applies :func:`optimize_for_cpu` by default when the net is built on the CPU
(``optimize=False`` keeps the plain graph). It skips the constant band that a large first padding
(FCN's pad 100) leaves around the image (:mod:`.border`: exact, only fewer rows computed), runs
stride-1 convolutions with kernels from 2x2 to 8x8 through NNPACK
(Winograd and FFT convolutions, bundled with PyTorch) and ReLUs in place where their input has no
other reader. Parameter names and the state dict do not change. Winograd/FFT results differ from a
direct convolution by float rounding: on full-width FCN-8s about 4e-6 of the largest score, far
inside the 1e-4 that every parity test allows (the tests run the optimised graph against Caffe's
outputs too). Convolutions fall back to PyTorch's own kernel for gradients, CUDA tensors and other
dtypes, so an optimised graph still trains and moves between devices.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn

from .border import BorderPlanner, skip_constant_border

__all__ = ["NNPACKConv2d", "nnpack_available", "optimize_for_cpu"]

_NNPACK: bool | None = None


def nnpack_available() -> bool:
    """Whether this PyTorch build has NNPACK and it initialised on this CPU."""
    global _NNPACK
    if _NNPACK is None:
        try:
            _NNPACK = bool(torch._nnpack_available())
        except (AttributeError, RuntimeError):
            _NNPACK = False
    return _NNPACK


class NNPACKConv2d(nn.Conv2d):
    """A ``Conv2d`` that runs on NNPACK for float32 CPU inference, else as ``Conv2d``."""

    def _nnpack_ok(self, x: Tensor) -> bool:
        from ..layers.tracing import tracing

        grad = torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad)
        cpu = x.device.type == "cpu" and x.dtype == torch.float32 and x.dim() == 4
        return cpu and not grad and not tracing()

    def forward(self, x: Tensor) -> Tensor:
        if not self._nnpack_ok(x):
            return super().forward(x)
        return self.nnpack(x, self.padding)  # type: ignore[arg-type]

    def nnpack(self, x: Tensor, padding: tuple[int, int]) -> Tensor:
        """The convolution on NNPACK with ``padding`` instead of the module's (float32 CPU input)."""
        pad_h, pad_w = padding
        kernel_h, kernel_w = self.kernel_size
        if pad_h >= kernel_h or pad_w >= kernel_w:  # NNPACK wants padding smaller than the kernel
            x = F.pad(x, [pad_w, pad_w, pad_h, pad_h])
            pad_h = pad_w = 0
        bias = self.bias if self.bias is not None else torch.zeros(self.out_channels, dtype=x.dtype)
        return torch._nnpack_spatial_convolution(
            x.contiguous(), self.weight.contiguous(), bias, [pad_h, pad_w], [1, 1]
        )


def _suits_nnpack(conv: nn.Module) -> bool:
    return (
        type(conv) is nn.Conv2d
        and conv.stride == (1, 1)
        and conv.dilation == (1, 1)
        and conv.groups == 1
        and isinstance(conv.padding, tuple)
        and all(2 <= k <= 8 for k in conv.kernel_size)
    )


# Layers whose gradient does not need their own output, so a ReLU may overwrite it.
_RELU_SAFE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


def optimize_for_cpu(net: fx.GraphModule, *, border: bool = True) -> fx.GraphModule:
    """``net`` itself, its suitable convolutions moved to NNPACK, its ReLUs made in-place where
    nothing else reads their input and (``border``) the constant band of a large first padding
    skipped (:func:`.border.skip_constant_border`); returns it for chaining. Applying it twice
    changes nothing more."""
    if nnpack_available():
        for name, module in list(net.named_children()):
            if _suits_nnpack(module):
                fast = NNPACKConv2d(
                    module.in_channels,
                    module.out_channels,
                    module.kernel_size,
                    padding=module.padding,
                    bias=module.bias is not None,
                    device="meta",
                )
                fast.weight, fast.bias = module.weight, module.bias
                fast.train(module.training)
                setattr(net, name, fast)
    for node in net.graph.nodes:
        source = node.args[0] if node.args else None
        if (
            node.op == "call_function"
            and node.target is torch.relu
            and isinstance(source, fx.Node)
            and source.op == "call_module"
            and isinstance(net.get_submodule(source.target), _RELU_SAFE)
            and len(source.users) == 1
        ):
            node.target = torch.relu_
    net.recompile()
    if border and not any(isinstance(m, BorderPlanner) for m in net.modules()):
        skip_constant_border(net)
    return net
