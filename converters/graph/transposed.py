"""Transposed convolutions (Caffe's ``Deconvolution``: FCN's upsampling) on a faster kernel where a
calibration finds it no less precise than PyTorch's, for float32 CPU inference.

PyTorch runs a transposed convolution on oneDNN's kernel, which for FCN's large upsampling kernels
takes a tenth of a second's share of a forward (FCN-8s's ``upscore8``, 16x16 at stride 8 over 21
channels: 26 ms on an Intel Xeon, 2 threads; FCN-32s's 64x64 at stride 32: 32 ms). Where each kernel
side is a whole number of strides, :func:`.kernels.phase_conv_transpose2d` forms the same products
as one small matrix product per kernel tap over every phase of the output (10 and 9 ms there), the
taps added in Caffe's order. :class:`FastConvTranspose2d` runs it where :func:`calibrate` keeps it:
on a seeded probe with the layer's own weights, its RMS and largest error against float64 within
``SAME_PRODUCTS_RMS_RATIO`` and ``SAME_PRODUCTS_MAX_RATIO`` of PyTorch's kernel's (the rule of
:mod:`.speed` for kernels of the same products: it forms no other), and a race at the layer's input
size at the net's declared input finding it faster. On FCN's layers it measures 0.6-0.8x PyTorch's
RMS error. The answers are kept with :mod:`.speed`'s, in the same file, keyed the same way.
"""

from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..layers.convolution import ConvTranspose2d, conv_transpose
from ..layers.tracing import plain_inference
from . import heap as _heap
from . import speed
from .folding import tensors_key
from .kernels import phase_conv_transpose2d, phase_taps

__all__ = ["PHASE_GEMM", "FastConvTranspose2d", "calibrate", "suits_phase_gemm"]

#: The kernel's name in kernel choices and the calibration file.
PHASE_GEMM = "phase-gemm"
#: The name of PyTorch's own kernel for a transposed convolution (oneDNN's on x86 builds).
DIRECT = "pytorch"
#: Input rows and columns the precision probe adds to a tap's reach (so that some outputs take
#: every tap and some the edges).
PROBE_MARGIN = 3


def suits_phase_gemm(module: nn.Module) -> bool:
    """Whether ``module`` is a float32 CPU 2-D transposed convolution the phase kernel computes: one
    group, no dilation or output padding, zero padding, each kernel side a whole number of strides,
    a stride above one, and an unfolded input no larger than the output (its column buffer)."""
    if not isinstance(module, nn.ConvTranspose2d) or module.weight.device.type != "cpu":
        return False
    if module.weight.dtype != torch.float32 or module.padding_mode != "zeros":
        return False
    (k_h, k_w), (s_h, s_w) = module.kernel_size, module.stride
    return (
        module.groups == 1
        and tuple(module.dilation) == (1, 1)
        and not any(module.output_padding)
        and isinstance(module.padding, tuple)
        and k_h % s_h == 0
        and k_w % s_w == 0
        and s_h * s_w > 1
        and module.in_channels * (k_h // s_h) * (k_w // s_w) <= module.out_channels * s_h * s_w
    )


class FastConvTranspose2d(ConvTranspose2d):
    """A ``ConvTranspose2d`` that, for float32 CPU inference, runs the kernel :func:`calibrate` chose
    for its current weights, and otherwise (gradients, other devices and dtypes, tracing, an
    ``output_size``) runs as the plain layer. Same parameters and state dict."""

    choice: speed.KernelChoice | None = None
    #: The layer's input rows and columns at the net's declared input, where known: the race's.
    speed_input: tuple[int, int] | None = None
    _calibrated_for: tuple | None = None
    _taps: tuple[tuple, Tensor] | None = None  # (weights key, phase_taps of them)

    def __getstate__(self) -> dict:
        return {**super().__getstate__(), "_taps": None}  # (made again where needed)

    def kernel_choice(self) -> speed.KernelChoice:
        """The calibrated choice for the current weights (calibrating again if they changed)."""
        key = tensors_key(self.weight, self.bias)
        if self.choice is None or key != self._calibrated_for:
            self.choice = calibrate(self)
            self._calibrated_for = key
        return self.choice

    def forward(self, x: Tensor, output_size: list[int] | None = None) -> Tensor:
        fast = (
            output_size is None
            and x.device.type == "cpu"
            and x.dtype == torch.float32
            and x.dim() == 4
            and self.weight.device.type == "cpu"
            and self.weight.dtype == torch.float32
            and plain_inference(x, self.weight)
        )
        if not fast or self.kernel_choice().kernel != PHASE_GEMM:
            return super().forward(x, output_size)
        if _heap.kept() is None:  # the first fast-path forward in this process
            _heap.keep_freed_memory()
        key = self._calibrated_for
        if self._taps is None or self._taps[0] != key:
            self._taps = (key, phase_taps(self.weight, self.stride))  # type: ignore[arg-type]
        kernel, stride, padding = self.kernel_size, self.stride, self.padding
        return phase_conv_transpose2d(x, self._taps[1], self.bias, kernel, stride, padding)  # type: ignore[arg-type]


def _pick(module: nn.ConvTranspose2d) -> Tensor:
    return speed._probe_channels(module.out_channels)


def _key(module: nn.ConvTranspose2d) -> str:
    """A digest of what the calibration's answer depends on (as :mod:`.speed`'s for convolutions)."""
    weight = module.weight.detach()
    if speed.CALIBRATION_CACHE is None:
        return ""
    pick = _pick(module)
    rule = ("transposed", speed._CALIBRATION_FORMAT, speed.SAME_PRODUCTS_RMS_RATIO,
            speed.SAME_PRODUCTS_MAX_RATIO, speed.PROBE_CHANNELS, speed.PROBE_VALUES, PROBE_MARGIN,
            speed._PROBE_SEED, speed.SPEED_MACS, speed.SPEED_ROUNDS, speed.SPEED_MARGIN)  # fmt: skip
    geometry = (tuple(weight.shape), tuple(module.stride), tuple(module.padding), torch.get_num_threads(),
                getattr(module, "speed_input", None))  # fmt: skip
    rows = pick.numpy()
    bias = module.bias.detach().numpy()[rows] if module.bias is not None else None
    return speed.calibration_digest(rule, geometry, weight.numpy()[:, rows], bias)


def calibrate(module: FastConvTranspose2d) -> speed.KernelChoice:
    """PyTorch's kernel, or the phase kernel where, with this layer's weights, it is within the rule
    on a seeded probe (module docstring) and faster on the race; kept in the calibration file."""
    if not suits_phase_gemm(module):
        return speed.KernelChoice(DIRECT, (), 0.0)
    return speed.kept_choice(_key(module), lambda started: _calibrate(module, started))


def _calibrate(module: FastConvTranspose2d, started: float) -> speed.KernelChoice:
    weight = module.weight.detach()
    bias = module.bias.detach() if module.bias is not None else None
    channels, _, k_h, k_w = weight.shape
    stride, padding, kernel = tuple(module.stride), tuple(module.padding), (k_h, k_w)
    pick = _pick(module)
    # input rows: every tap's reach, a margin, and what the padding crops
    height = k_h // stride[0] + PROBE_MARGIN + -(-2 * padding[0] // stride[0])
    width = k_w // stride[1] + PROBE_MARGIN + -(-2 * padding[1] // stride[1])
    part = weight.index_select(1, pick).contiguous()
    if max(3 * channels * height * width, part.numel()) > speed.PROBE_VALUES:
        unprobed = (speed.Measured(PHASE_GEMM, math.nan, math.nan),)
        return speed.KernelChoice(f"{DIRECT} (too wide to probe)", unprobed, time.perf_counter() - started)
    part_bias = bias.index_select(0, pick).contiguous() if bias is not None else None
    generator = torch.Generator().manual_seed(speed._PROBE_SEED)
    noise = torch.randn(3, channels, height, width, generator=generator)
    probe = torch.stack([noise[0], noise[1].abs(), 1 + 0.05 * noise[2]])  # signed, after ReLU, flat
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.no_grad():
            exact_bias = None if part_bias is None else part_bias.double()
            reference = F.conv_transpose2d(probe.double(), part.double(), exact_bias, stride, padding)
            plain = conv_transpose(probe, part, part_bias, stride, padding)
            got = phase_conv_transpose2d(probe, phase_taps(part, stride), part_bias, kernel, stride, padding)
            plain_rms, plain_max = speed._relative_errors(plain, reference)
            rms, largest = speed._relative_errors(got, reference)
    finally:
        torch.set_num_threads(threads)
    tiny = torch.finfo(torch.float64).tiny
    measured = speed.Measured(
        PHASE_GEMM,
        float((rms / plain_rms.clamp_min(tiny)).max()),
        float((largest / plain_max.clamp_min(tiny)).max()),
        identical=torch.equal(got, plain),
    )
    kernel_name = DIRECT
    if measured.precise:
        times = _race(module)
        if times:
            measured = speed.Measured(measured.kernel, measured.rms, measured.max, times[1] / times[0],
                                      measured.identical)  # fmt: skip
            if times[1] < speed.SPEED_MARGIN * times[0]:
                kernel_name = PHASE_GEMM
    return speed.KernelChoice(kernel_name, (measured,), time.perf_counter() - started)


def _race(module: FastConvTranspose2d) -> tuple[float, float] | None:
    """Seconds PyTorch's kernel and the phase kernel take for ``module`` on one image of its input
    size at the net's declared input (16 x 16 where unknown), every channel, rows cut to
    ``speed.SPEED_MACS`` multiply-adds (``speed.best_times``)."""
    weight = module.weight.detach()
    bias = module.bias.detach() if module.bias is not None else None
    channels, outputs, k_h, k_w = weight.shape
    stride, padding = tuple(module.stride), tuple(module.padding)
    declared, width = module.speed_input or (16, 16)
    per_row = channels * outputs * k_h * k_w * width
    height = max(k_h // stride[0] + 1, min(declared, speed.SPEED_MACS // max(1, per_row)))
    fewest = -(-(2 * padding[0] - k_h + 1) // stride[0]) + 1  # input rows that give an output row
    height = max(height, min(declared, fewest))  # (a padding larger than the cut rows' output)
    if channels * height * width > speed.PROBE_VALUES:
        return None
    generator = torch.Generator().manual_seed(speed._PROBE_SEED)
    x = torch.randn(1, channels, height, width, generator=generator).abs_()
    taps = phase_taps(weight, stride)  # type: ignore[arg-type]
    kernel = (k_h, k_w)
    times = speed.best_times({
        DIRECT: lambda: conv_transpose(x, weight, bias, stride, padding),
        PHASE_GEMM: lambda: phase_conv_transpose2d(x, taps, bias, kernel, stride, padding),
    })  # fmt: skip
    return times[DIRECT], times[PHASE_GEMM]
