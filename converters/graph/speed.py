"""Faster CPU inference for converted graphs that keeps Caffe's precision.

``load_caffe`` applies :func:`optimize_for_cpu` by default when the net is built on the CPU
(``optimize=False`` keeps the plain graph). It skips the constant band that a large first padding
(FCN's pad 100) leaves around the image (:mod:`.border`: exact, only fewer rows computed; from the
second forward at a size, only the rows and columns that read the image: :mod:`.cropping`), runs in
place the ReLUs whose input has no other reader (inside the convolution before them, where that is
one of its layers: :func:`fuse_relus`), and gives each convolution (one group, dilation 1)
the kernel a calibration at load chooses for it on this machine, with this layer's own weights: the
direct kernel PyTorch picks (oneDNN), or a candidate that is *more precise* than it (or, for a kernel
of the same products, as precise; or gives its very numbers) and faster. Parameter names and the
state dict do not change.

The candidates (:func:`candidate_kernels`): ours in :mod:`.kernels`, Winograd F(2x2, 3x3) for 3x3
stride-1 layers (``winograd-f2``: 2.25x fewer multiplications, transforms that only add) and
im2col + one matrix product, Caffe's own way (``gemm``: the BLAS's blocked sums, then the bias); NNPACK's
(bundled with PyTorch) for stride-1 2x2-8x8 kernels: Winograd F(6x6, 3x3) for 3x3 (``nnpack-winograd``)
and FFT tiles for the others (``nnpack-fft``); and oneDNN's channels-last kernel (``onednn-nhwc``,
for any layer: it skips the reorder of the whole blob into oneDNN's blocked layout and back that
the direct kernel does at every call, and its output stays channels-last for the layers after it,
:mod:`.layout`; its weights are reordered into oneDNN's blocked layout once and kept beside the
layer's, where the direct kernel reorders them at every call, which on ResNet-50's 7x7 maps is
half its time: :func:`prepared_weights`); and oneDNN's direct kernel itself on a prepacked
convolution (``onednn-packed``: its weights reordered once, the layer's ReLU applied as it writes;
the direct kernel's very numbers, so, where the probe finds them so, it runs wherever the race
finds it faster at all, with no margin: on the Xeon below ResNet-50's forward 4-7% faster).

The rule (issue 20: the default graph's error against Caffe at most twice the plain graph's, on
every net). Fast algorithms are not direct sums: F(6x6, 3x3)'s transforms multiply the float
rounding of the input and the kernel by constants that grow fast with the tile size (Lavin and Gray,
"Fast Algorithms for Convolutional Neural Networks", CVPR 2016, measured it; Barabasz, Anderson,
Soodhalter and Gregg, "Error analysis and improving the accuracy of Winograd convolution for deep
neural networks", ACM TOMS 46(4), 2020: the error bound of F(m, r) grows exponentially with m + r),
while F(2x2, 3x3) only adds and subtracts, FFTs' error grows as the logarithm of the tile (Higham,
*Accuracy and Stability of Numerical Algorithms*, 2nd ed., section 24.1), and blocked channel sums
(the BLAS's, NNPACK's) are often *more* precise than a direct kernel's long running sums. Which way
a layer goes depends on its weights, its channel count, the kernels' blocking (taken from this CPU)
and the direct kernel oneDNN picks for this CPU's instruction set, so no constant decides it.
:func:`calibrate` first runs each candidate once on a small seeded probe (three images: zero-mean,
positive as after a ReLU, and nearly constant; :data:`PROBE_SIZE` output rows and columns; at most
:data:`PROBE_CHANNELS` of its output channels, every input channel) beside the direct kernel and
float64, and keeps a candidate only where its error, both root-mean-square and largest, is no larger
than :data:`RMS_RATIO` (one half) and :data:`MAX_RATIO` (one) times the direct kernel's on every
probe image (for a kernel that forms the same products and only sums them in another order,
:data:`SAME_PRODUCTS`: :data:`SAME_PRODUCTS_RMS_RATIO` and :data:`SAME_PRODUCTS_MAX_RATIO`, 1.25 and
2), or where its outputs are the direct kernel's bit for bit (``gemm`` on a 1x1 layer: oneDNN
computes it as the same matrix product). Then, where any was kept, it races the kept ones and
the direct kernel on a speed probe (the layer's own input at the net's declared size, cut to
:data:`SPEED_MACS`: ``_race``, each kernel with the layer's ReLU) at the process's thread count, and
the fastest runs (a candidate only if :data:`SPEED_MARGIN` faster; ``onednn-packed`` giving the direct
kernel's numbers, if faster at all). On this machine (AMD EPYC, AVX2) that refuses every F(6x6, 3x3)
layer (its error is 3-40x the direct one's) and every layer with few input channels; on full-width
FCN-8s, ``winograd-f2`` runs conv3_2 to conv5_3 (0.3-0.5x the direct kernel's error, 0.7-0.8x its
time), ``gemm`` runs ``fc6`` (0.1x the error; 0.4x the time of the direct kernel, which reorders its
400 MB of weights at every call) and ``fc7`` (the same numbers, 0.4x the time), ``onednn-nhwc``
conv1_1 to conv3_1 (0.8-1.15x the error, 0.4-0.95x the time; and the layers after them read its
channels-last output as it is). On an Intel Xeon with AVX-512 and AMX (the other machine this
project has met) the direct kernel oneDNN picks there is the most precise one: on full-width FCN-8s
every 3x3 layer keeps it (``winograd-f2`` 1.3-2.5x its RMS error, ``gemm`` 1.4-1.6x,
``onednn-nhwc`` 2-6x; most of them run ``onednn-packed``, its numbers), ``gemm`` runs ``fc6``
(0.75x the error, 0.2x the time) and the 1x1 layers, and conv1_1 ``gemm`` (its channels-last win
does not survive the reorder back that conv1_2 needs).
The precision probe
runs on one thread; on full-width FCN-8s it takes about a tenth of one forward pass
(``benchmarks/precision.py`` prints the time per net); the race takes longer (fc6 alone: seconds),
once per machine and weights. Both run at load (``optimize_for_cpu``), and again, at the next
forward, only when a layer's weights change (their version counter moves: ``load_state_dict``, an
optimiser step, a new tensor). Their answers are kept in ``calibration.json`` in the weights cache
folder (``$FCN_PORT_CACHE``, else ``~/.cache/fcn-port``), keyed by this machine (CPU model and
instruction set, PyTorch version, thread count), the rule's constants, the layer's geometry and a
digest of exactly the weights the probe reads: a net loaded again on the same machine is not probed
again (:data:`CALIBRATION_CACHE` ``= None`` turns that off). A layer's race counts the reorders
its layout costs the layers around it: where its input may come channels-last it runs on such an
input, where its output may reach a channels-last reader the reorder into that layout is counted,
and once every layer has chosen, :func:`settle_layouts` races again, counting the reorder back, a
channels-last layer none of whose readers kept that layout; where two or more layers then take one
channels-last blob contiguous, they read one conversion of it (:func:`share_conversions`).
Transposed convolutions whose kernel is a whole number of strides (FCN's upsampling) get the same
treatment with one candidate, the phase kernel (:mod:`.transposed`). :func:`kernel_choices` says
which kernel each convolution runs and why.

Convolutions fall back to PyTorch's own kernel for gradients, CUDA tensors and other dtypes, so an
optimised graph still trains and moves between devices.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import os
import platform
import stat
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn

from ..layers.convolution import CaffeConv2d, pad_far_end
from ..layers.eltwise import eltwise_max, eltwise_prod, eltwise_sum
from ..layers.tracing import plain_inference
from . import heap as _heap
from .border import BorderPlanner, skip_constant_border, windowed
from .folding import ConvNormScale, fold_batch_norms, tensors_key
from .kernels import (
    BAND_VALUES,
    gemm_conv2d,
    winograd_f2_conv2d,
    winograd_f2_conv2d_nhwc,
    winograd_f2_weights,
)
from .layout import channels_last_readers, contiguous, is_channels_last
from .precision import cpu_model

__all__ = [
    "FAST_KERNELS",
    "FastConv2d",
    "KernelChoice",
    "Measured",
    "calibrate",
    "candidate_kernels",
    "direct_kernel",
    "fuse_relus",
    "kernel_choices",
    "nnpack_available",
    "optimize_for_cpu",
    "prepare_for_cpu",
    "prepared_weights",
    "rewrite_for_cpu",
    "run_kernel",
    "save_calibrations",
    "settle_layouts",
    "share_conversions",
    "warm_up",
]

_NNPACK: bool | None = None

#: A candidate kernel is kept for a layer only if, on every probe image, its root-mean-square error against
#: float64 is at most RMS_RATIO times the direct kernel's and its largest error at most MAX_RATIO
#: times the direct kernel's: only where it is clearly *more* precise. A ratio just under 1 on the
#: probe is not enough: the real inputs are not the probe's, and the net's error mixes many layers'
#: (MTCNN's ONet, with four FFT layers at 0.7-0.8x on the probe, came out 1.5x as far from Caffe as
#: the plain graph; at 0.5x none of the nets in tests/precision_cases.py moves off the plain one).
RMS_RATIO = 0.5
MAX_RATIO = 1.0
#: The kernels that form the direct kernel's very products (the same float32 multiplications) and
#: only sum them in another order: oneDNN's channels-last and grouped kernels, im2col + GEMM, and for
#: transposed convolutions the phase kernel (:mod:`.transposed`).
SAME_PRODUCTS = ("gemm", "onednn-forced", "onednn-nhwc", "onednn-packed", "phase-gemm")
#: Such a kernel is kept where its RMS error is at most SAME_PRODUCTS_RMS_RATIO times the direct
#: kernel's and its largest at most SAME_PRODUCTS_MAX_RATIO times (on every probe image). Its
#: error is a sum's rounding, as the direct kernel's and Caffe's own (a third order, im2col +
#: BLAS), so on the probe it is the direct kernel's give or take the order's luck (oneDNN's
#: channels-last kernel on FCN-8s's 3x3 layers: 0.8-1.15x RMS, 0.9-1.7x largest): the distance to
#: Caffe, two independent roundings, grows by at most sqrt((1 + 1.25^2) / 2) = 1.13x in RMS. Not so
#: for the transforms (Winograd, FFT), whose error grows with the tile's values and which the
#: probe need not show (MTCNN's ONet above): those keep RMS_RATIO. Measured against real Caffe
#: on ResNet-50 with nine seeds of weights (2026-12-06, the softmax's largest error over the plain
#: graph's): 0.43-1.75 (mean 0.99) with this rule, 0.47-1.95 (mean 1.10) with 1.0 and 1.5, and
#: 0.29-1.59 (mean 0.94) without the channels-last kernel: the spread is the metric's, not the rule's.
SAME_PRODUCTS_RMS_RATIO = 1.25
SAME_PRODUCTS_MAX_RATIO = 2.0
#: Output rows and columns of the probe (more than one 6x6 Winograd tile, one 8x8 FFT tile).
PROBE_SIZE = 8
#: Output channels the probe computes (evenly spread over the layer's; every input channel is used).
PROBE_CHANNELS = 16
#: Input values the probe may hold (three images), and weights it may copy (a grouped layer's are all
#: probed); a layer with more than that allows is not probed and keeps the direct kernel: exact as the
#: plain graph, its time bounded (a million-channel layer would otherwise take a minute and gigabytes
#: at load).
PROBE_VALUES = 2**22
_PROBE_SEED = 20261206
#: The speed probe (among the kernels the precision probe kept, and the direct one): a square output
#: of the largest of these sizes whose multiply-adds stay within SPEED_MACS (else the smallest), over
#: every channel: large enough that each kernel runs as it does on real maps (FCN-8s's fc6 is
#: 16 x 16), small enough that a layer's race costs tens of milliseconds, once per machine.
SPEED_SIZES = (8, 16, 32, 64)
SPEED_MACS = 1_000_000_000
#: A candidate replaces the direct kernel only when the race finds it faster by this factor: on
#: sub-millisecond layers the race's times are mostly noise, and a tie keeps PyTorch's own kernel
#: (not so the prepacked direct kernel where the probe finds its numbers the direct kernel's: it is
#: that kernel less work, and any lead will do).
SPEED_MARGIN = 0.95
#: Timed rounds of the race (the best of each kernel's counts: a shared 2-core machine's times vary
#: twofold from one run to the next), fewer once the rounds have taken SPEED_SECONDS.
SPEED_ROUNDS = 3
SPEED_SECONDS = 0.1
#: Values the transformed weights of a ``winograd-f2`` layer (kept: 16/9 of its weights) or of an
#: NNPACK layer (made at every call: 64 a kernel in 8x8 tiles) may hold (2^24: 64 MB; VGG's largest
#: 3x3 layer needs 4.2 million for ours, 16.8 million for NNPACK's): a larger layer is not offered
#: them (FCN's fc6 on NNPACK's FFT: over 1 GB at each call, and 2.6x the file in memory at the
#: first load, when it was raced). The same bound holds the weights oneDNN's channels-last kernel
#: reorders at every call.
TRANSFORMED_VALUES = 1 << 24
#: The file, in the weights cache folder, that keeps calibrations; ``None``: none kept or read.
CALIBRATION_CACHE: str | None = "calibration.json"
#: Calibrations the file keeps (the newest); a larger or damaged file is read as empty.
CALIBRATION_ENTRIES = 4096
_CALIBRATION_BYTES = 4 << 20


def nnpack_available() -> bool:
    """Whether this PyTorch build has NNPACK and it initialised on this CPU."""
    global _NNPACK
    if _NNPACK is None:
        try:
            _NNPACK = bool(torch._nnpack_available())
        except (AttributeError, RuntimeError):
            _NNPACK = False
    return _NNPACK


#: The kernels a calibrated layer may run instead of the direct one (``converters.graph.kernels``
#: for ours, NNPACK's two modes; ``phase-gemm`` for transposed convolutions, :mod:`.transposed`).
FAST_KERNELS = (
    "winograd-f2", "gemm", "nnpack-winograd", "nnpack-fft", "onednn-forced", "onednn-nhwc", "onednn-packed",
    "phase-gemm",
)  # fmt: skip


@dataclass(frozen=True)
class Measured:
    """One candidate kernel as the calibration measured it: on the precision probe, the worst
    image's RMS and largest error as multiples of the direct kernel's (nan: not probed); on the
    speed probe, its time as a multiple of the direct kernel's (nan: not timed). ``identical``: its
    probe outputs were the direct kernel's, bit for bit (the same sums: a 1x1 layer's matrix product)."""

    kernel: str
    rms: float
    max: float
    time: float = math.nan
    identical: bool = False

    @property
    def precise(self) -> bool:
        """Within the rule: RMS error at most :data:`RMS_RATIO`, largest at most :data:`MAX_RATIO` of
        the direct kernel's (for :data:`SAME_PRODUCTS`, :data:`SAME_PRODUCTS_RMS_RATIO` and
        :data:`SAME_PRODUCTS_MAX_RATIO`), or the direct kernel's own numbers."""
        if self.kernel in SAME_PRODUCTS:
            rms, largest = SAME_PRODUCTS_RMS_RATIO, SAME_PRODUCTS_MAX_RATIO
        else:
            rms, largest = RMS_RATIO, MAX_RATIO
        return self.identical or (self.rms <= rms and self.max <= largest)

    def describe(self, chosen: str) -> str:
        if math.isnan(self.rms):
            return f"{self.kernel} not probed"
        verdict = "kept" if self.kernel == chosen else "slower" if self.precise else "refused"
        speed = "" if math.isnan(self.time) else f", time x{self.time:.2g}"
        if self.identical:
            return f"{self.kernel} {verdict}: the direct kernel's numbers{speed}"
        return f"{self.kernel} {verdict}: rms error x{self.rms:.2g}, max x{self.max:.2g}{speed}"


@dataclass(frozen=True)
class KernelChoice:
    """Which kernel a convolution runs on the CPU, and the calibration that chose it."""

    kernel: str  # one of FAST_KERNELS, or the direct kernel ("onednn", "slow2d", ...)
    measured: tuple[Measured, ...]  # the candidates beside the direct kernel
    seconds: float  # the calibration's time
    cached: bool = False  # read from the calibration file, not probed now

    def __str__(self) -> str:
        if not self.measured:
            return self.kernel
        return f"{self.kernel} ({'; '.join(m.describe(self.kernel) for m in self.measured)})"


def candidate_kernels(conv: nn.Conv2d) -> tuple[str, ...]:
    """The kernels besides the direct one that can compute ``conv`` (a float32 CPU ``Conv2d`` of
    dilation 1): for one group, ours (``winograd-f2`` for 3x3 stride 1, ``gemm`` for any), and
    NNPACK's mode for stride-1 kernels of 2x2 to 8x8 where this PyTorch has NNPACK; for several
    groups (MobileNet's depthwise layers), oneDNN's kernel even where PyTorch would pick its slow
    grouped loop (``onednn-forced``); and, where the weights they keep reordered are within
    :data:`TRANSFORMED_VALUES` (not FCN's fc6, whose 400 MB the race would copy once more at a
    first load), oneDNN's channels-last kernel (``onednn-nhwc``) and, for one group, oneDNN's
    direct kernel on weights reordered once, with the layer's ReLU applied as it writes
    (``onednn-packed``: the direct kernel's numbers, without its reorder of the weights at every
    call and a pass over its output)."""
    onednn = torch.backends.mkldnn.is_available()
    if conv.groups > 1:
        return ("onednn-forced", "onednn-nhwc") if onednn else ()
    kernel, stride = tuple(conv.kernel_size), tuple(conv.stride)
    # transformed weights (ours kept beside the layer's, NNPACK's made at every call, 8x8 tiles at
    # least) within TRANSFORMED_VALUES
    small = conv.weight.numel() * 16 // 9 <= TRANSFORMED_VALUES
    names = ["winograd-f2"] if kernel == (3, 3) and stride == (1, 1) and small else []
    names.append("gemm")
    tiles = conv.out_channels * conv.in_channels * 64 <= TRANSFORMED_VALUES
    if stride == (1, 1) and all(2 <= k <= 8 for k in kernel) and tiles and nnpack_available():
        names.append(_nnpack_mode(kernel))
    if onednn and conv.weight.numel() <= TRANSFORMED_VALUES:  # (it reorders the weights at every call)
        names.append("onednn-nhwc")
        if packed_direct_available():
            names.append("onednn-packed")
    return tuple(names)


@functools.cache
def packed_direct_available() -> bool:
    """Whether this PyTorch has oneDNN's prepacked convolution (``torch.ops.mkldnn_prepacked``)."""
    try:
        return torch.backends.mkldnn.is_available() and callable(torch.ops.mkldnn_prepacked.conv2d_prepack)
    except (AttributeError, RuntimeError):
        return False


def _nnpack_mode(kernel_size: tuple[int, int]) -> str:
    # NNPACK's automatic choice for these sizes: Winograd F(6x6, 3x3) for 3x3, else FFT tiles.
    return "nnpack-winograd" if tuple(kernel_size) == (3, 3) else "nnpack-fft"


def direct_kernel(x: Tensor, weight: Tensor, stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=1) -> str:
    """The name of the kernel PyTorch picks for ``F.conv2d`` on these arguments ("onednn" for
    oneDNN/MKL-DNN, else PyTorch's backend name in lower case)."""
    try:
        backend = torch._C._select_conv_backend(
            x, weight, None, list(stride), list(padding), list(dilation), False, [0, 0], groups, None
        )
        name = str(backend).rsplit(".", 1)[-1].lower()
    except (AttributeError, RuntimeError, TypeError):
        return "pytorch"
    return "onednn" if name.startswith("mkldnn") else name


#: The kernels that run on prepared weights (:func:`prepared_weights`).
PREPARED_KERNELS = ("winograd-f2", "onednn-nhwc", "onednn-packed")


def prepared_weights(
    kernel: str, weight: Tensor, stride: tuple[int, int], padding: tuple[int, int], groups: int,
    input_shape: tuple[int, ...], bias: Tensor | None = None, relu: bool = False,
) -> Any:  # fmt: skip
    """The weights as ``kernel`` wants them, made once and kept beside the layer's (``None`` where it
    reads the layer's own): ``winograd-f2``'s transformed kernels; for ``onednn-nhwc``, the weights
    reordered into the blocked layout oneDNN's channels-last kernel picks for ``input_shape`` (what
    it does at every call otherwise; the sums, and so the numbers, are the same at any shape); for
    ``onednn-packed``, oneDNN's prepacked convolution with these ``bias``, ``padding`` and ``relu``
    (the weights in the direct kernel's blocked layout; any input shape runs on them)."""
    weight = weight.detach()
    if kernel == "winograd-f2":
        return winograd_f2_weights(weight)
    if kernel == "onednn-nhwc":
        return torch._C._nn.mkldnn_reorder_conv2d_weight(
            weight.contiguous().to_mkldnn(), list(padding), list(stride), [1, 1], groups, list(input_shape)
        )
    if kernel == "onednn-packed":
        bias = None if bias is None else bias.detach().contiguous()
        return torch.ops.mkldnn_prepacked.conv2d_prepack(
            weight.contiguous(), bias, list(stride), list(padding), [1, 1], groups, list(input_shape),
            "relu" if relu else "none",
        )  # fmt: skip
    return None


def run_kernel(
    kernel: str, x: Tensor, weight: Tensor, bias: Tensor | None, stride: tuple[int, int],
    padding: tuple[int, int], prepared: Any = None, groups: int = 1, relu: bool = False,
) -> Tensor:  # fmt: skip
    """``F.conv2d(x, weight, bias, stride, padding, 1, groups)`` (float32 CPU) on ``kernel`` (one of
    :data:`FAST_KERNELS`; anything else: the direct kernel), and then ``relu`` a ReLU (oneDNN's
    kernels apply it as they write their output; the same values). ``prepared``: the kept
    :func:`prepared_weights` of ``kernel`` (for ``onednn-packed``, made with these ``bias``,
    ``padding`` and ``relu``), else they are made here where it needs them."""
    if kernel == "onednn-packed":  # (a contiguous input: the direct kernel's, blocked inside oneDNN)
        if prepared is None:
            prepared = prepared_weights(kernel, weight, stride, padding, groups, tuple(x.shape), bias, relu)
        return torch.ops.mkldnn_prepacked.conv2d_run(contiguous(x), prepared)
    if relu and kernel == "onednn-nhwc" and prepared is not None:
        x = x.contiguous(memory_format=torch.channels_last)
        return torch.ops.mkldnn._convolution_pointwise(
            x, prepared, bias, list(padding), list(stride), [1, 1], groups, "relu", [], ""
        )
    y = _convolution(kernel, x, weight, bias, stride, padding, prepared, groups)
    return y.relu_() if relu else y


def _convolution(
    kernel: str, x: Tensor, weight: Tensor, bias: Tensor | None, stride: tuple[int, int],
    padding: tuple[int, int], prepared: Tensor | None, groups: int,
) -> Tensor:  # fmt: skip
    if kernel == "onednn-nhwc":  # channels-last in and out (oneDNN's even where PyTorch would pick another)
        x = x.contiguous(memory_format=torch.channels_last)
        if prepared is None:
            return torch.mkldnn_convolution(x, weight.contiguous(), bias, padding, stride, (1, 1), groups)
        return torch.ops.mkldnn._convolution_pointwise(
            x, prepared, bias, list(padding), list(stride), [1, 1], groups, "none", [], ""
        )
    if kernel == "gemm":  # (a 1x1 layer's takes a channels-last input as it is, and keeps it so)
        return gemm_conv2d(x, weight.contiguous(), bias, stride, padding)
    if kernel == "winograd-f2":  # a channels-last input is taken as it is, and kept so
        transformed = winograd_f2_weights(weight) if prepared is None else prepared
        if is_channels_last(x):
            return winograd_f2_conv2d_nhwc(x, transformed, bias, padding)
        return winograd_f2_conv2d(contiguous(x), transformed, bias, padding)
    x = contiguous(x)
    if kernel == "onednn-forced":
        weight = weight.contiguous()
        return torch.mkldnn_convolution(x, weight, bias, padding, stride, (1, 1), groups)
    if kernel.startswith("nnpack") and nnpack_available():  # (which also initialises NNPACK)
        pad_h, pad_w = padding
        kernel_h, kernel_w = weight.shape[-2:]
        if pad_h >= kernel_h or pad_w >= kernel_w:  # NNPACK wants padding smaller than the kernel
            x = F.pad(x, [pad_w, pad_w, pad_h, pad_h])
            pad_h = pad_w = 0
        bias = bias if bias is not None else torch.zeros(weight.shape[0], dtype=x.dtype)
        return torch._nnpack_spatial_convolution(x, weight.contiguous(), bias, [pad_h, pad_w], [1, 1])
    return F.conv2d(x, weight, bias, stride, padding, 1, groups)


def _relative_errors(got: Tensor, reference: Tensor) -> tuple[Tensor, Tensor]:
    """Per image: RMS and largest error of ``got`` against ``reference``, over the reference's RMS."""
    error = (got.double() - reference).flatten(1)
    scale = reference.flatten(1).pow(2).mean(1).sqrt().clamp_min(torch.finfo(torch.float32).tiny)
    return error.pow(2).mean(1).sqrt() / scale, error.abs().amax(1) / scale


def calibrate(conv: FastConv2d) -> KernelChoice:
    """Run ``conv`` (its own weights) on a seeded probe through each candidate kernel, the direct
    kernel and float64, keep the candidates no less precise than the direct kernel (module
    docstring: the rule), and of those and the direct kernel choose the fastest on a speed probe.
    The precision probe runs on one thread (on a tiny probe, waking a second one costs more than it
    saves; the kernels' sums do not depend on the thread count), the speed probe on the process's."""
    return kept_choice(_calibration_key(conv), lambda started: _calibrate(conv, started))


def kept_choice(key: str, calibrate_now: Callable[[float], KernelChoice]) -> KernelChoice:
    """The calibration kept under ``key`` in the calibration file, else ``calibrate_now(started)``'s
    (given the time it started), kept there where it probed every candidate (``key`` empty: nothing
    is read or kept)."""
    started = time.perf_counter()
    known = _calibrations().get(key) if key else None
    if known is not None and _valid_entry(key, known):  # (checked when used: a load reads a few)
        measured = tuple(
            Measured(name, rms, largest, math.nan if seconds < 0 else seconds, bool(identical))
            for name, rms, largest, seconds, identical in known[1]
        )
        return KernelChoice(known[0], measured, time.perf_counter() - started, cached=True)
    choice = calibrate_now(started)
    if key and choice.measured and not any(math.isnan(m.rms) for m in choice.measured):
        store = _calibrations()
        store.pop(key, None)
        store[key] = [choice.kernel, [[m.kernel, m.rms, m.max, -1.0 if math.isnan(m.time) else m.time,
                                       m.identical] for m in choice.measured]]  # fmt: skip
        _CALIBRATION_STATE["dirty"] = True
    return choice


_CALIBRATION_STATE: dict = {"entries": None, "dirty": False, "path": None}
# 5: oneDNN's channels-last kernel among the candidates; 6: on weights reordered once, always
# oneDNN's, and the race counting the reorder into a channels-last reader. Entries: [kernel,
# [[candidate, rms, max, time or -1, identical], ...]]
# 8: oneDNN's prepacked direct kernel among the candidates, the race running each with the layer's
# ReLU; 9: ``gemm`` adding the bias to the finished sums
_CALIBRATION_FORMAT = 9


@functools.cache
def _machine() -> str:
    """This machine as far as the kernels' sums go: CPU model, instruction set, PyTorch build."""
    capability = getattr(torch.backends.cpu, "get_cpu_capability", lambda: "")()
    return f"{platform.machine()}|{cpu_model()}|{capability}|torch {torch.__version__}"


def _calibration_key(conv: nn.Conv2d) -> str:
    """A digest of what the calibration's answer depends on: the machine and its thread count, the
    rule, the layer's geometry and the weights (and bias) of the output channels the probe computes."""
    weight = conv.weight.detach()
    if weight.device.type != "cpu" or weight.dtype != torch.float32 or CALIBRATION_CACHE is None:
        return ""
    pick = _probe_channels(weight.shape[0], conv.groups)
    if len(pick) * weight[0].numel() > PROBE_VALUES:  # not probed (_calibrate), nothing to keep
        return ""
    rule = (_CALIBRATION_FORMAT, RMS_RATIO, MAX_RATIO, SAME_PRODUCTS, SAME_PRODUCTS_RMS_RATIO,
            SAME_PRODUCTS_MAX_RATIO, PROBE_SIZE, PROBE_CHANNELS, PROBE_VALUES,
            _PROBE_SEED, SPEED_MACS, SPEED_SIZES, SPEED_ROUNDS, SPEED_MARGIN, BAND_VALUES,
            nnpack_available())  # fmt: skip
    geometry = (tuple(weight.shape), tuple(conv.stride), tuple(conv.padding), conv.groups,
                torch.get_num_threads(), getattr(conv, "speed_input", None),
                getattr(conv, "channels_last_input", False),
                getattr(conv, "channels_last_output", False),
                getattr(conv, "contiguous_output", False), getattr(conv, "relu", False))  # fmt: skip
    rows = pick.numpy()
    bias = conv.bias.detach().numpy()[rows] if conv.bias is not None else None
    return calibration_digest(rule, geometry, weight.numpy()[rows], bias)


def calibration_digest(rule: tuple, geometry: tuple, weights: np.ndarray, bias: np.ndarray | None) -> str:
    """The calibration file's key: this machine, the rule's constants, the layer's geometry and the
    weights (and bias) its probe reads (numpy: torch's index_select takes milliseconds here)."""
    digest = hashlib.sha256(f"{_machine()}|{rule}|{geometry}".encode())
    digest.update(np.ascontiguousarray(weights).tobytes())
    if bias is not None:
        digest.update(b"bias" + np.ascontiguousarray(bias).tobytes())
    return digest.hexdigest()


def _calibration_path() -> Path | None:
    if CALIBRATION_CACHE is None:
        return None
    try:
        from ..cache_folder import cache_dir

        return cache_dir() / CALIBRATION_CACHE
    except Exception:  # noqa: BLE001  (no cache folder to use: nothing kept)
        return None


def _calibrations() -> dict[str, list]:
    """The kept calibrations, read once per process (a missing, special, huge or damaged file: none)."""
    path = _calibration_path()
    if _CALIBRATION_STATE["entries"] is None or _CALIBRATION_STATE["path"] != path:
        entries: dict[str, list] = {}
        try:
            status = os.stat(path) if path is not None else None
            if status is not None and stat.S_ISREG(status.st_mode) and status.st_size <= _CALIBRATION_BYTES:
                loaded = json.loads(path.read_text(encoding="utf-8"))  # type: ignore[union-attr]
                if isinstance(loaded, dict):  # entries are checked when used (calibrate) and saved
                    entries = loaded
        except (OSError, ValueError, RecursionError):
            entries = {}
        _CALIBRATION_STATE.update(entries=entries, dirty=False, path=path)
    return _CALIBRATION_STATE["entries"]


def _valid_entry(key: object, value: object) -> bool:
    def measured(item: object) -> bool:
        return (
            isinstance(item, list)
            and len(item) == 5
            and item[0] in FAST_KERNELS
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in item[1:4])
            and all(math.isfinite(v) for v in item[1:4])
            and isinstance(item[4], bool)
        )

    return (
        isinstance(key, str)
        and len(key) == 64
        and isinstance(value, list)
        and len(value) == 2
        and isinstance(value[0], str)
        and 0 < len(value[0]) <= 64
        and isinstance(value[1], list)
        and 0 < len(value[1]) <= len(FAST_KERNELS)
        and all(measured(item) for item in value[1])
    )


def save_calibrations() -> None:
    """Write new calibrations to the cache file (atomically; a folder that cannot be written to
    keeps nothing, silently: the next load calibrates again)."""
    path = _CALIBRATION_STATE["path"]
    if not _CALIBRATION_STATE["dirty"] or path is None:
        return
    from ..atomic import atomic_write

    entries = _CALIBRATION_STATE["entries"]
    kept = dict([item for item in entries.items() if _valid_entry(*item)][-CALIBRATION_ENTRIES:])
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path, "w") as handle:
            json.dump(kept, handle, separators=(",", ":"))
    except OSError:
        return
    _CALIBRATION_STATE["dirty"] = False


def _probe_channels(out_channels: int, groups: int = 1) -> Tensor:
    """The output channels the probe computes, evenly spread (all of a grouped layer's: each group
    reads its own input channels)."""
    if groups > 1:
        return torch.arange(out_channels)
    return torch.linspace(0, out_channels - 1, min(out_channels, PROBE_CHANNELS)).round().long().unique()


def _probe_input_length(output: int, kernel: int, stride: int, pad: int) -> int:
    return max(1, (output - 1) * stride + kernel - 2 * pad)


def _calibrate(conv: FastConv2d, started: float) -> KernelChoice:
    candidates = candidate_kernels(conv)
    weight, bias = conv.weight.detach(), conv.bias.detach() if conv.bias is not None else None
    out_channels, group_channels, kernel_h, kernel_w = weight.shape
    groups = conv.groups
    in_channels = group_channels * groups
    stride = tuple(conv.stride)
    # Padding of at least the kernel is computed as zeros in the input: the probes keep only as much
    # of it as one window sees.
    padding = (min(conv.padding[0], kernel_h - 1), min(conv.padding[1], kernel_w - 1))
    height = _probe_input_length(PROBE_SIZE, kernel_h, stride[0], padding[0])
    width = _probe_input_length(PROBE_SIZE, kernel_w, stride[1], padding[1])
    pick = _probe_channels(out_channels, groups)
    if max(3 * in_channels * height * width, len(pick) * weight[0].numel()) > PROBE_VALUES:  # too wide
        unprobed = tuple(Measured(name, math.nan, math.nan) for name in candidates)
        return KernelChoice("direct (too wide to probe)", unprobed, time.perf_counter() - started)
    part = weight.index_select(0, pick).contiguous()
    part_bias = bias.index_select(0, pick).contiguous() if bias is not None else None
    generator = torch.Generator().manual_seed(_PROBE_SEED)
    noise = torch.randn(3, in_channels, height, width, generator=generator)
    probe = torch.stack([noise[0], noise[1].abs(), 1 + 0.05 * noise[2]])  # signed, after ReLU, flat
    direct = direct_kernel(probe, part, stride, padding, (1, 1), groups)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.no_grad():
            exact_bias = None if part_bias is None else part_bias.double()
            reference = F.conv2d(probe.double(), part.double(), exact_bias, stride, padding, 1, groups)
            plain = F.conv2d(probe, part, part_bias, stride, padding, 1, groups)
            plain_rms, plain_max = _relative_errors(plain, reference)
            measured = []
            tiny = torch.finfo(torch.float64).tiny
            for name in candidates:
                # (the prepacked kernel with the ReLU it would run inside: compared after one)
                inside = name == "onednn-packed" and getattr(conv, "relu", False)
                got = run_kernel(name, probe, part, part_bias, stride, padding, None, groups, inside)
                identical = torch.equal(got, plain.relu() if inside else plain)
                rms, largest = _relative_errors(got, reference.relu() if inside else reference)
                base_rms, base_max = plain_rms, plain_max
                if inside:
                    base_rms, base_max = _relative_errors(plain.relu(), reference.relu())
                if name.startswith("nnpack"):  # its single-image (inference) path too, beside the batch one
                    single = run_kernel(name, probe[:1], part, part_bias, stride, padding)
                    identical = identical and torch.equal(single, plain[:1])
                    single_rms, single_max = _relative_errors(single, reference[:1])
                    rms, largest = torch.cat([rms, single_rms]), torch.cat([largest, single_max])
                    base_rms = torch.cat([plain_rms, plain_rms[:1]])
                    base_max = torch.cat([plain_max, plain_max[:1]])
                measured.append(Measured(name, float((rms / base_rms.clamp_min(tiny)).max()),
                                         float((largest / base_max.clamp_min(tiny)).max()),
                                         identical=identical))  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    precise = [m.kernel for m in measured if m.precise]
    kernel = direct
    if precise:
        times = _race(conv, [direct, *precise], padding)
        if times:
            measured = [
                dataclasses.replace(m, time=times[m.kernel] / times[direct]) if m.kernel in times else m
                for m in measured
            ]
            # (the prepacked direct kernel, where the probe found its numbers the direct kernel's, is
            # that kernel less work: it need not be faster by the margin, only faster)
            same = {m.kernel for m in measured if m.kernel == "onednn-packed" and m.identical}
            margins = {k: 1.0 if k in same else SPEED_MARGIN for k in times}
            faster = {k: t for k, t in times.items() if k != direct and t < margins[k] * times[direct]}
            if faster:
                kernel = min(faster, key=faster.__getitem__)
    return KernelChoice(kernel, tuple(measured), time.perf_counter() - started)


def _race(conv: nn.Conv2d, kernels: list[str], padding: tuple[int, int]) -> dict[str, float]:
    """Seconds each of ``kernels`` (the direct one first) takes for ``conv`` on the speed probe, with
    the layer's ReLU where it runs one (inside the kernel, or as a pass after it): the best of up
    to :data:`SPEED_ROUNDS` runs taken in turns, after one warm-up run each (fewer rounds once the
    race has taken :data:`SPEED_SECONDS`; a warm-up longer than that is the time). The probe is
    one image, every channel; where the layer's input size at the net's declared input is known
    (``speed_input``), that input with the layer's padding, cut to fewer rows where its
    multiply-adds pass :data:`SPEED_MACS` (keeping at least 64 outputs, 4 rows and an eighth of
    them: PSPNet's conv5_4, 4096 channels, raced on 2 of its 60 rows, chose im2col + GEMM, which
    takes 1.6x the direct kernel's time on all 60; and the rows' parity to the stride: oneDNN runs
    a stride-2 layer on 13 rows at half its speed on 14); else the largest square output of
    :data:`SPEED_SIZES` within :data:`SPEED_MACS` (else the smallest). ({} where the probe would
    be too wide to hold.)"""
    weight, bias = conv.weight.detach(), conv.bias.detach() if conv.bias is not None else None
    out_channels, group_channels, kernel_h, kernel_w = weight.shape
    per_pixel = out_channels * group_channels * kernel_h * kernel_w
    in_channels = group_channels * conv.groups
    stride = tuple(conv.stride)
    declared = getattr(conv, "speed_input", None)
    if declared is not None:
        padding = tuple(conv.padding)
        height, width = declared
        out_h = (height + 2 * padding[0] - kernel_h) // stride[0] + 1
        out_w = (width + 2 * padding[1] - kernel_w) // stride[1] + 1
        if out_h < 1 or out_w < 1:
            return {}
        fewest = min(out_h, max(-(-64 // out_w), -(-out_h // 8), 4))  # an eighth of the rows, 4 at least
        rows = max(fewest, min(out_h, SPEED_MACS // max(1, per_pixel * out_w)))
        held = PROBE_VALUES // max(1, in_channels * width)  # input rows the probe may hold
        rows = max(1, min(rows, (held - kernel_h) // stride[0] + 1))  # a wide map: fewer rows, not none
        # output rows left out, even: the input keeps its parity, and a row at least (where the padding
        # is large, the probe's rows are then mostly padding)
        cut = min((out_h - rows) // 2 * 2, (height - 1) // stride[0] // 2 * 2)
        height -= cut * stride[0]
    else:
        fitting = [s for s in SPEED_SIZES if s * s * per_pixel <= SPEED_MACS]
        size = max(fitting) if fitting else min(SPEED_SIZES)
        height = _probe_input_length(size, kernel_h, stride[0], padding[0])
        width = _probe_input_length(size, kernel_w, stride[1], padding[1])
    if in_channels * height * width > PROBE_VALUES:
        return {}
    generator = torch.Generator().manual_seed(_PROBE_SEED)
    x = torch.randn(1, in_channels, height, width, generator=generator).abs_()  # as after a ReLU
    # a layer whose input may come channels-last from the layer before races every kernel on such
    # an input and counts the reorder of a contiguous output back (the chain's case: the
    # channels-last kernel, Winograd and a 1x1 gemm keep the layout; the others pay both reorders
    # they would pay there); any other layer, on a contiguous input
    chain = getattr(conv, "channels_last_input", False)
    if chain:
        x = x.contiguous(memory_format=torch.channels_last)
    # (and a layer whose output reaches such a layer counts that reorder too: MobileNet's conv0);
    # a layer whose every reader takes a contiguous blob (settle_layouts) counts the reorder of a
    # channels-last output back instead
    out_of_chain = getattr(conv, "contiguous_output", False)
    into_chain = (chain or getattr(conv, "channels_last_output", False)) and not out_of_chain
    shape = tuple(x.shape)
    relu = getattr(conv, "relu", False)  # (each kernel with the layer's ReLU: inside it, or a pass after)
    prepared = {name: prepared_weights(name, weight, stride, padding, conv.groups, shape, bias, relu)
                for name in kernels}  # fmt: skip

    def run(name: str) -> None:
        y = run_kernel(name, x, weight, bias, stride, padding, prepared[name], conv.groups, relu)
        if into_chain and not is_channels_last(y):
            y.contiguous(memory_format=torch.channels_last)
        elif out_of_chain and is_channels_last(y):
            y.contiguous()

    return best_times({name: functools.partial(run, name) for name in kernels})


def best_times(runs: Mapping[str, Callable[[], object]]) -> dict[str, float]:
    """Seconds each of ``runs`` takes: the best of up to :data:`SPEED_ROUNDS` runs taken in turns,
    after one warm-up run each (fewer rounds once they have taken :data:`SPEED_SECONDS`; a warm-up
    longer than that is the time)."""
    times, rounds = {}, {}
    with torch.no_grad():
        for name, run in runs.items():  # warm-up (primitives, workspaces); a long one is the time
            began = time.perf_counter()
            run()
            times[name] = time.perf_counter() - began
            rounds[name] = [] if times[name] > SPEED_SECONDS else [math.inf]
        started = time.perf_counter()
        for _ in range(SPEED_ROUNDS):
            for name in [k for k in runs if rounds[k]]:
                began = time.perf_counter()
                runs[name]()
                rounds[name].append(time.perf_counter() - began)
            if time.perf_counter() - started > SPEED_SECONDS:
                break
    return {name: min(rounds[name]) if rounds[name] else times[name] for name in runs}


class FastConv2d(nn.Conv2d):
    """A ``Conv2d`` that, for float32 CPU inference, runs the kernel :func:`calibrate` chose for its
    current weights (a precise candidate where one is faster, else the direct kernel), and otherwise
    (gradients, other devices and dtypes, tracing) runs as ``Conv2d``."""

    choice: KernelChoice | None = None
    #: The layer's input rows and columns at the net's declared input, where known: the speed probe's.
    speed_input: tuple[int, int] | None = None
    #: Whether its input may come channels-last from the layer before (:mod:`.layout`): then the race
    #: times every kernel on a channels-last input, with the reorder of a contiguous output back
    #: (each pays the reorders it would pay in a chain of channels-last layers).
    channels_last_input: bool = False
    #: Whether its output may reach such a layer: then the race counts a contiguous output's reorder.
    channels_last_output: bool = False
    #: Whether every reader takes its output contiguous (:func:`settle_layouts`: none of them runs a
    #: kernel that keeps a channels-last blob): then the race counts a channels-last output's reorder.
    contiguous_output: bool = False
    #: Whether the ReLU after it runs as part of this layer (:func:`rewrite_for_cpu` fuses one that is
    #: the only reader of its output): oneDNN's channels-last kernel applies it as it writes.
    relu: bool = False
    #: Whether its window may overhang the padded input, where Caffe computes one output over zeros
    #: past the input's end (:func:`converters.layers.convolution.pad_far_end`).
    pads_far_end: bool = False
    _calibrated_for: tuple | None = None
    _prepared: tuple[tuple, Any] | None = None  # ((weights key, kernel, ...), its prepared weights)

    def extra_repr(self) -> str:
        return super().extra_repr() + (", relu=True" if self.relu else "")

    def __getstate__(self) -> dict:
        state = super().__getstate__()  # (the kept weights are made again where needed: oneDNN's
        return {**state, "_prepared": None}  # blocked ones cannot be copied or saved)

    def _weights_key(self) -> tuple:
        return tensors_key(self.weight, self.bias)

    def kernel_choice(self) -> KernelChoice:
        """The calibrated choice for the current weights (calibrating again if they changed)."""
        key = self._weights_key()
        if self.choice is None or key != self._calibrated_for:
            self.choice = calibrate(self)
            self._calibrated_for = key
            self._prepared = None
        return self.choice

    def _fast_kernel(self, x: Tensor) -> str | None:
        """The calibrated kernel for ``x`` where one of ours or NNPACK's may run it, else ``None``."""
        cpu = x.device.type == "cpu" and x.dtype == torch.float32 and x.dim() == 4
        if not (cpu and self.weight.device.type == "cpu" and plain_inference(x, self.weight)):
            return None
        if _heap.kept() is None:  # the first fast-path forward in this process
            _heap.keep_freed_memory()
        kernel = self.kernel_choice().kernel
        return kernel if kernel in FAST_KERNELS else None

    def forward(self, x: Tensor) -> Tensor:
        return self.convolve(x, self.padding)  # type: ignore[arg-type]

    def convolve(self, x: Tensor, padding: tuple[int, int]) -> Tensor:
        """The convolution with ``padding`` instead of the module's, on the calibrated kernel where it
        applies (the border skipping runs the first layer so)."""
        if self.pads_far_end:
            x = pad_far_end(x, self.kernel_size, self.stride, padding, self.dilation)
        kernel = self._fast_kernel(x)
        if kernel is None:
            if x.device.type == "cpu" and x.dtype == torch.float32:
                x = contiguous(x)  # a channels-last input (from a layer before) runs the plain kernel
            if tuple(padding) == tuple(self.padding):
                y = super().forward(x)
            else:
                y = F.conv2d(x, self.weight, self.bias, self.stride, padding, self.dilation, self.groups)
            if not self.relu:
                return y
            return y.relu_() if plain_inference(y) else torch.relu(y)  # (in place: no second blob)
        # (kernel_choice, just run, keyed the choice on the current weights: the same key serves)
        prepared = self._prepared_weights(kernel, padding, tuple(x.shape), self._calibrated_for)
        stride, groups = self.stride, self.groups
        return run_kernel(kernel, x, self.weight, self.bias, stride, padding, prepared, groups, self.relu)  # type: ignore[arg-type]

    def prepared_weights(self, kernel: str, padding: tuple[int, int], shape: tuple[int, ...]) -> Any:
        """:func:`prepared_weights` of ``kernel`` for the current weights, kept until they change
        (oneDNN's blocked ones are made for the first input ``shape``: another gives the same
        numbers, and oneDNN reorders them again only where it would pick another blocking; the
        prepacked direct kernel's also until the padding it runs with changes: from the second
        forward at a size the border skipping runs most of FCN's layers without)."""
        return self._prepared_weights(kernel, padding, shape, self._weights_key())

    def _prepared_weights(
        self, kernel: str, padding: tuple[int, int], shape: tuple[int, ...], weights_key: tuple | None
    ) -> Any:  # fmt: skip
        key: tuple = (weights_key, kernel)
        if kernel == "onednn-packed":  # (the bias, padding and ReLU are the prepacked convolution's)
            key += (tuple(padding), self.relu)
        if self._prepared is None or self._prepared[0] != key:
            stride, groups = tuple(self.stride), self.groups
            made = prepared_weights(kernel, self.weight, stride, padding, groups, shape, self.bias, self.relu)  # type: ignore[arg-type]
            self._prepared = (key, made)
        return self._prepared[1]


def warm_up() -> None:
    """Do now what the fast path's first use in this process would do (``load_caffe`` calls it while
    the weights are read): NNPACK's initialisation, this machine's description (the calibration
    key's) and reading the kept calibrations."""
    nnpack_available()
    _machine()
    _calibrations()


def _suits_calibration(conv: nn.Module) -> bool:
    return (
        type(conv) in (nn.Conv2d, CaffeConv2d)
        and conv.dilation == (1, 1)
        and isinstance(conv.padding, tuple)
        and conv.padding_mode == "zeros"
        and conv.weight.device.type == "cpu"
        and conv.weight.dtype == torch.float32
    )


def kernel_choices(net: nn.Module, inputs: Mapping[str, Tensor] | None = None) -> dict[str, str]:
    """``{module name: kernel}`` for every 2-D convolution of ``net`` as it runs float32 inference on
    the CPU: a calibrated layer says its choice and the measurements behind it (and, where its
    BatchNorm and Scale run after it in one pass, or its ReLU runs inside it, says so); any other
    names the kernel PyTorch picks for it ("onednn", "slow2d", ...). PyTorch's pick depends on the
    input's size and the thread count: with ``inputs`` (the net's feeds) one forward runs and each
    layer is named by what it picked for the input it got there; without, or for a convolution the
    forward does not call as a module (the border skipping's first one), on a 16 x 16 input. A
    transposed convolution the fast path calibrated (:mod:`.transposed`) says its choice too."""
    from .transposed import FastConvTranspose2d

    modules = dict(net.named_modules())
    names = {id(m): n for n, m in modules.items()}
    notes = {}  # convolution -> what runs after it in the same pass
    for module in modules.values():
        if isinstance(module, ConvNormScale):
            conv, batch_norm, scale = module._parts
            with_ = [names.get(id(m), "?") for m in (batch_norm, scale) if m is not None]
            notes[names.get(id(conv), "?")] = f" + {' and '.join(with_)} in one pass"
        elif isinstance(module, FastConv2d) and module.relu:
            notes[names.get(id(module), "?")] = " + its ReLU in the layer"
    convolutions = {name: (m, notes.get(name, "")) for name, m in modules.items() if isinstance(m, nn.Conv2d)}
    picked: dict[str, str] = {}
    if inputs is not None:

        def record(name: str, conv: nn.Conv2d, x: Tensor) -> None:
            args = (conv.weight, conv.stride, conv.padding, conv.dilation, conv.groups)
            picked[name] = direct_kernel(x, *args)  # type: ignore[arg-type]

        hooks = [
            conv.register_forward_pre_hook(lambda m, a, n=n: record(n, m, a[0]))
            for n, (conv, _) in convolutions.items()
        ]
        try:
            with torch.inference_mode():
                net(**inputs)
        finally:
            for hook in hooks:
                hook.remove()
    out = {}
    for name, (module, note) in convolutions.items():
        if isinstance(module, FastConv2d):
            choice = module.kernel_choice()
            if name in picked and choice.kernel not in FAST_KERNELS:
                choice = dataclasses.replace(choice, kernel=picked[name])
            out[name] = str(choice) + note
        elif module.weight.device.type == "cpu":
            probe = torch.zeros(1, module.in_channels, 16, 16)
            out[name] = (picked.get(name) or direct_kernel(
                probe, module.weight, module.stride, (0, 0), module.dilation, module.groups
            )) + note  # fmt: skip
    for name, module in modules.items():
        if isinstance(module, FastConvTranspose2d):
            out[name] = str(module.kernel_choice())
    return out


def declared_input_sizes(net: nn.Module) -> dict[str, tuple[int, int]]:
    """``{module name: (rows, columns)}`` of each 4-D-input layer's bottom at the net's declared input
    shapes (``net.caffe``); empty where the net has none or guessed any of them."""
    info = getattr(net, "caffe", None)
    if info is None or set(info.inputs) - set(info.declared_inputs):
        return {}
    out = {}
    for layer, keys in info.parameter_blobs.items():
        shapes = info.bottom_shapes.get(layer) or []
        if keys and shapes and len(shapes[0]) == 4:
            out[keys[0].rsplit(".", 1)[0]] = (int(shapes[0][2]), int(shapes[0][3]))
    return out


# Layers whose gradient does not need their own output, so a ReLU may overwrite it.
_RELU_SAFE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d,
              ConvNormScale)  # fmt: skip
# (Eltwise's three return a new blob when given two or more: ResNet's sums before their ReLU)
_RELU_SAFE_FUNCTIONS = (eltwise_sum, eltwise_prod, eltwise_max)


def optimize_for_cpu(net: fx.GraphModule, *, border: bool = True) -> fx.GraphModule:
    """``net`` itself, its BatchNorm and Scale layers run as one pass after their convolutions
    (:mod:`.folding`), its convolutions on the kernel calibrated here for their weights (module
    docstring), its ReLUs made in-place where nothing else reads their input and (``border``) the
    constant band of a large first padding skipped (:func:`.border.skip_constant_border`); returns
    it for chaining. Applying it twice changes nothing more. It is :func:`rewrite_for_cpu` then
    :func:`prepare_for_cpu`."""
    return prepare_for_cpu(rewrite_for_cpu(net, border=border))


def rewrite_for_cpu(net: fx.GraphModule, *, border: bool = True) -> fx.GraphModule:
    """The part of :func:`optimize_for_cpu` that reads no weight values, only the net's layers and
    declared shapes (``load_caffe`` runs it while the weights are read; the parameters must stay
    the same objects until :func:`prepare_for_cpu`): the layers swapped, folded and rewired."""
    from .transposed import FastConvTranspose2d, suits_phase_gemm

    inputs = declared_input_sizes(net)
    called = {node.target for node in net.graph.nodes if node.op == "call_module"}
    for name, module in list(net.named_children()):
        if name not in called:
            continue
        if _suits_calibration(module):
            fast: nn.Module = FastConv2d(
                module.in_channels, module.out_channels, module.kernel_size, stride=module.stride,
                padding=module.padding, groups=module.groups, bias=module.bias is not None, device="meta",
            )  # fmt: skip
        elif suits_phase_gemm(module):
            fast = FastConvTranspose2d(
                module.in_channels, module.out_channels, module.kernel_size, stride=module.stride,
                padding=module.padding, bias=module.bias is not None, device="meta",
            )  # fmt: skip
        else:
            continue
        fast.weight, fast.bias = module.weight, module.bias
        fast.pads_far_end = isinstance(module, CaffeConv2d)
        fast.train(module.training)
        fast.speed_input = inputs.get(name)
        setattr(net, name, fast)
    fold_batch_norms(net)
    for node in net.graph.nodes:
        source = node.args[0] if node.args else None
        if (
            node.op == "call_function"
            and node.target is torch.relu
            and isinstance(source, fx.Node)
            and len(source.users) == 1
            and (
                source.op == "call_module" and isinstance(net.get_submodule(source.target), _RELU_SAFE)
                or source.op == "call_function"
                and source.target in _RELU_SAFE_FUNCTIONS
                and len(source.args) > 1
            )
        ):
            node.target = torch.relu_
    if border and not any(isinstance(m, BorderPlanner) for m in net.modules()):
        skip_constant_border(net)
    for conv in channels_last_readers(net):
        conv.channels_last_input = True
    fuse_relus(net)  # (which recompiles the graph's code)
    return net


def fuse_relus(net: fx.GraphModule) -> list[str]:
    """Fold each in-place ReLU whose input is a :class:`FastConv2d`'s output, read by nothing else,
    into that layer (``relu=True``): its node goes, and its readers read the layer's output, which
    is the ReLU's. Returns the layers' names; recompiles ``net``'s code."""
    fused = []
    for node in list(net.graph.nodes):
        source = node.args[0] if node.args else None
        if not (node.op == "call_function" and node.target is torch.relu_ and len(node.args) == 1):
            continue
        if not (isinstance(source, fx.Node) and len(source.users) == 1):
            continue
        chained = source.op == "call_function" and source.target is windowed
        if source.op == "call_module":
            layer = str(source.target)
        elif chained and source.args[0].op == "get_attr":  # (a layer of the border skipping's chain)
            layer = str(source.args[0].target)
        else:
            continue
        conv = net.get_submodule(layer)
        if type(conv) is not FastConv2d or conv.relu:
            continue
        conv.relu = True
        node.replace_all_uses_with(source)
        net.graph.erase_node(node)
        fused.append(layer)
    net.recompile()
    return fused


def prepare_for_cpu(net: fx.GraphModule) -> fx.GraphModule:
    """The rest of :func:`optimize_for_cpu`, for the weights ``net`` holds now: the BatchNorm/Scale
    factors derived and every convolution calibrated (or its kept calibration read), now rather
    than on the first forward; the calibrations saved. (A kernel's prepared weights, a copy of the
    layer's, are made now where all of them are small (:data:`PREPARE_AT_LOAD_SHARE`), else at its
    first use: the load's memory stays near the file's. In a small net each oneDNN layer runs once
    now, so that oneDNN makes its kernels now: :data:`WARM_AT_LOAD_MACS`.)"""
    from .transposed import FastConvTranspose2d

    for module in net.modules():
        if isinstance(module, ConvNormScale):
            module.affine()
        elif isinstance(module, (FastConv2d, FastConvTranspose2d)):
            module.kernel_choice()
    settle_layouts(net)
    share_conversions(net)
    save_calibrations()
    _prepare_at_load(net)
    _warm_at_load(net)
    return net


#: A kernel's prepared weights (oneDNN's blocked, Winograd's transformed) are made at load where all
#: of the net's together hold at most this share of its parameters' values, or PREPARE_AT_LOAD_VALUES
#: (16 MB) if more, else at each layer's first use, so that a load's memory stays near the file's
#: (full-width FCN-8s on the EPYC: 44 MB of Winograd weights, 8% of its 538 MB, wait for the first
#: forward). Made at load, the first forward skips them: MobileNet-SSD's 19 channels-last layers
#: (1.2 MB, 5.1% of its weights) took 11 ms of a 24 ms forward's first run.
PREPARE_AT_LOAD_SHARE = 0.05
PREPARE_AT_LOAD_VALUES = 1 << 22


def _prepare_at_load(net: nn.Module) -> None:
    """Make the prepared weights of every calibrated layer whose kernel keeps some, where their size
    allows (:data:`PREPARE_AT_LOAD_SHARE`, :data:`PREPARE_AT_LOAD_VALUES`) and the layer's input size
    at the net's declared input is known."""
    layers = [
        m for m in net.modules()
        if isinstance(m, FastConv2d) and m.choice is not None
        and m.choice.kernel in PREPARED_KERNELS
        and m.speed_input is not None and m.weight.device.type == "cpu" and m.weight.dtype == torch.float32
    ]  # fmt: skip
    size = sum(m.weight.numel() * (16 / 9 if m.choice.kernel == "winograd-f2" else 1) for m in layers)  # type: ignore[union-attr]
    allowed = max(PREPARE_AT_LOAD_VALUES, PREPARE_AT_LOAD_SHARE * sum(p.numel() for p in net.parameters()))
    if not layers or size > allowed:
        return
    with torch.no_grad():
        for m in layers:
            m.prepared_weights(m.choice.kernel, tuple(m.padding), (1, m.in_channels, *m.speed_input))  # type: ignore[union-attr, arg-type, misc]


#: A net whose oneDNN convolutions hold at most this many multiply-adds at its declared input (one
#: image) runs each of them once at load, on zeros of that size: oneDNN makes its kernel for a layer's
#: shape at the layer's first call, which in a small net is a large share of the first forward
#: (MobileNet-SSD, 1.2 billion: its first forward took 1.7x the next, about 12 ms more; 1.2x after).
#: Larger nets skip it (the load would grow by most of a forward; their first forward is within
#: 1.2x the next), as do nets whose border skipping runs other shapes than the declared ones.
WARM_AT_LOAD_MACS = 1 << 31


def _warm_at_load(net: nn.Module) -> None:
    """Run every calibrated convolution on a oneDNN kernel once on zeros of its input size at the
    net's declared input, where the net is small (:data:`WARM_AT_LOAD_MACS`)."""
    if any(isinstance(m, BorderPlanner) for m in net.modules()):
        return
    layers = [
        m for m in net.modules()
        if isinstance(m, FastConv2d) and m.choice is not None and m.choice.kernel.startswith("onednn")
        and m.speed_input is not None and m.weight.device.type == "cpu" and m.weight.dtype == torch.float32
    ]  # fmt: skip
    macs = 0
    for m in layers:
        (k_h, k_w), (s_h, s_w), (p_h, p_w) = m.kernel_size, m.stride, m.padding  # type: ignore[misc]
        rows = (m.speed_input[0] + 2 * p_h - k_h) // s_h + 1  # type: ignore[index]
        cols = (m.speed_input[1] + 2 * p_w - k_w) // s_w + 1  # type: ignore[index]
        macs += m.weight.numel() * max(rows, 0) * max(cols, 0)
    if not layers or macs > WARM_AT_LOAD_MACS:
        return
    with torch.no_grad():
        for m in layers:
            try:
                m(torch.zeros(1, m.in_channels, *m.speed_input))  # type: ignore[misc]
            except (RuntimeError, ValueError):  # (a size the layer refuses: its first call will say so)
                return


def _keeps_channels_last(conv: FastConv2d) -> bool:
    """Whether ``conv``'s calibrated kernel takes a channels-last input as it is (and keeps it so)."""
    kernel = conv.kernel_choice().kernel
    one_by_one = tuple(conv.kernel_size) == (1, 1) and tuple(conv.stride) == (1, 1) and not any(conv.padding)  # type: ignore[arg-type]
    return kernel in ("onednn-nhwc", "winograd-f2") or (kernel == "gemm" and one_by_one)


def settle_layouts(net: fx.GraphModule) -> list[str]:
    """Calibrate again, counting the reorder of its output back to contiguous, each convolution on
    oneDNN's channels-last kernel none of whose readers keeps a channels-last blob (their kernels were
    chosen after its race, which counted the reorder of a contiguous output into such a chain: on an
    Intel Xeon with AVX-512, FCN-8s's conv1_1 took 8 ms channels-last and its reorder back 48 ms,
    the direct kernel 22 ms). Repeats until no choice changes; returns the layers whose choice did."""
    from .layout import convolution_readers

    names = {module: name for name, module in net.named_modules()}
    readers = convolution_readers(net)  # (the graph does not change here, only the choices)
    changed: list[str] = []
    while True:
        settled = [
            conv for conv, reading in readers.items()
            if conv.kernel_choice().kernel == "onednn-nhwc" and not conv.contiguous_output
            and not any(_keeps_channels_last(r) for r in reading)
        ]  # fmt: skip
        if not settled:
            return changed
        for conv in settled:
            conv.contiguous_output = True
            conv.choice = None
            if conv.kernel_choice().kernel != "onednn-nhwc":
                changed.append(names.get(conv, "?"))


def _layer_input(node: fx.Node) -> object:
    """The blob a layer's node reads: a module's first argument, or the border skipping's
    ``windowed(layer, x, plan, position)``'s ``x``."""
    if node.op == "call_module" and node.args:
        return node.args[0]
    if node.op == "call_function" and node.target is windowed:
        return node.args[1]
    return None


def share_conversions(net: fx.GraphModule) -> list[str]:
    """Give the convolutions that read one blob which may be channels-last, two or more of them on
    kernels that take it contiguous (ResNet's first blocks of a stage: the shortcut and the first
    1x1 layer, each made it contiguous on its own), one ``nchw`` of it to read instead: one copy of
    the blob where each made its own (the same values). Returns the blobs' names; recompiles ``net``.
    Which kernel a layer runs may change later (new weights): every kernel takes either layout."""
    from .layout import _convolution, _maybe_channels_last, nchw

    shared = []
    maybe = _maybe_channels_last(net)
    for blob in [n for n in net.graph.nodes if n in maybe]:
        readers = [
            user for user in blob.users
            if _layer_input(user) is blob
            and (conv := _convolution(net, user)) is not None and not _keeps_channels_last(conv)
        ]  # fmt: skip
        if len(readers) < 2:
            continue
        with net.graph.inserting_after(blob):
            converted = net.graph.call_function(nchw, (blob,))
        converted._rename(f"{blob.name}_nchw")
        for reader in readers:
            reader.replace_input_with(blob, converted)
        shared.append(blob.name)
    net.recompile()
    return shared
