"""Faster CPU inference for converted graphs that keeps Caffe's precision.

``load_caffe`` applies :func:`optimize_for_cpu` by default when the net is built on the CPU
(``optimize=False`` keeps the plain graph). It skips the constant band that a large first padding
(FCN's pad 100) leaves around the image (:mod:`.border`: exact, only fewer rows computed), runs in
place the ReLUs whose input has no other reader, and moves to NNPACK (bundled with PyTorch) only
those stride-1 convolutions with 2x2 to 8x8 kernels that NNPACK computes *as precisely as* the
direct kernel (oneDNN) on this machine, with this layer's own weights. Parameter names and the
state dict do not change.

The rule (issue 20: the default graph's error against Caffe at most twice the plain graph's, on
every net). NNPACK's fast algorithms are not direct sums: 3x3 kernels run as Winograd F(6x6, 3x3)
(``wt8x8``), whose transforms multiply the float rounding of the input and the kernel by constants
that grow fast with the tile size (Lavin and Gray, "Fast Algorithms for Convolutional Neural
Networks", CVPR 2016, measured it; Barabasz, Anderson, Soodhalter and Gregg, "Error analysis and
improving the accuracy of Winograd convolution for deep neural networks", ACM TOMS 46(4), 2020:
the error bound of F(m, r) grows exponentially with m + r), while the other sizes run as FFTs over
8x8 or 16x16 tiles, whose error grows only as the logarithm of the tile (Higham, *Accuracy and
Stability of Numerical Algorithms*, 2nd ed., section 24.1) and whose channel sums are blocked, so
they are often *more* precise than a direct sum. Which way a layer goes depends on its weights,
its channel count, NNPACK's cache blocking (taken from this CPU) and the direct kernel oneDNN picks
for this CPU's instruction set, so no constant decides it: :func:`calibrate` runs each candidate
layer once at load on a small seeded probe (three images: zero-mean, positive as after a ReLU, and
nearly constant; :data:`PROBE_SIZE` output rows and columns; at most :data:`PROBE_CHANNELS` of its
output channels, every input channel) through NNPACK, through the direct kernel and in float64,
and keeps NNPACK only where its error, both root-mean-square and largest, is no larger than
:data:`RMS_RATIO` (one half) and :data:`MAX_RATIO` (one) times the direct kernel's on every
probe image. On this machine (AMD EPYC, AVX2) that refuses every Winograd layer (its error is 2-40x the
direct one's) and keeps the FFT layers with many input channels (0.1-0.4x; those with few, near
1x, are refused too). The probe is small and runs on one thread: on full-width FCN-8s all its
layers' calibrations take about a tenth of one forward pass of the net (``benchmarks/precision.py``
prints the time per net). It runs at load (``optimize_for_cpu``), and again, at the next forward,
only when a layer's weights change (their version counter moves: ``load_state_dict``, an optimiser
step, a new tensor). Its answers are kept in ``calibration.json`` in the weights cache folder
(``$FCN_PORT_CACHE``, else ``~/.cache/fcn-port``), keyed by this machine (CPU model and instruction
set, PyTorch version), the rule's constants, the layer's geometry and a digest of exactly the
weights the probe reads: a net loaded again on the same machine is not probed again
(:data:`CALIBRATION_CACHE` ``= None`` turns that off).
:func:`kernel_choices` says which kernel each convolution runs and why.

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
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn

from .border import BorderPlanner, skip_constant_border
from .precision import cpu_model

__all__ = [
    "KernelChoice",
    "NNPACKConv2d",
    "calibrate",
    "direct_kernel",
    "kernel_choices",
    "nnpack_available",
    "optimize_for_cpu",
    "save_calibrations",
]

_NNPACK: bool | None = None

#: NNPACK is kept for a layer only if, on every probe image, its root-mean-square error against
#: float64 is at most RMS_RATIO times the direct kernel's and its largest error at most MAX_RATIO
#: times the direct kernel's: only where it is clearly *more* precise. A ratio just under 1 on the
#: probe is not enough: the real inputs are not the probe's, and the net's error mixes many layers'
#: (MTCNN's ONet, with four FFT layers at 0.7-0.8x on the probe, came out 1.5x as far from Caffe as
#: the plain graph; at 0.5x none of the nets in tests/precision_cases.py moves off the plain one).
RMS_RATIO = 0.5
MAX_RATIO = 1.0
#: Output rows and columns of the probe (more than one 6x6 Winograd tile, one 8x8 FFT tile).
PROBE_SIZE = 8
#: Output channels the probe computes (evenly spread over the layer's; every input channel is used).
PROBE_CHANNELS = 16
#: Input values the probe may hold (three images); a layer with more input channels than that allows
#: is not probed and keeps the direct kernel: exact as the plain graph, its time bounded (a
#: million-channel layer would otherwise take a minute and gigabytes at load).
PROBE_VALUES = 2**22
_PROBE_SEED = 20261206
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


@dataclass(frozen=True)
class KernelChoice:
    """Which kernel a convolution runs on the CPU, and the calibration that chose it."""

    kernel: str  # "nnpack-winograd", "nnpack-fft" or the direct kernel ("onednn", "slow2d", ...)
    nnpack: str  # the NNPACK mode measured ("" where none was)
    nnpack_error: float  # worst probe image: NNPACK's RMS error / the direct kernel's (nan: not run)
    nnpack_max_error: float  # the same for the largest error
    seconds: float  # the calibration's time
    cached: bool = False  # read from the calibration file, not probed now

    def __str__(self) -> str:
        if not self.nnpack:
            return self.kernel
        if math.isnan(self.nnpack_error):
            return f"{self.kernel} ({self.nnpack} not probed)"
        verdict = "kept" if self.kernel == self.nnpack else "refused"
        return (f"{self.kernel} ({self.nnpack} {verdict}: rms error x{self.nnpack_error:.2g}, "
                f"max x{self.nnpack_max_error:.2g} of the direct kernel's)")  # fmt: skip


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


def _relative_errors(got: Tensor, reference: Tensor) -> tuple[Tensor, Tensor]:
    """Per image: RMS and largest error of ``got`` against ``reference``, over the reference's RMS."""
    error = (got.double() - reference).flatten(1)
    scale = reference.flatten(1).pow(2).mean(1).sqrt().clamp_min(torch.finfo(torch.float32).tiny)
    return error.pow(2).mean(1).sqrt() / scale, error.abs().amax(1) / scale


def calibrate(conv: NNPACKConv2d) -> KernelChoice:
    """Run ``conv`` (its own weights) on a seeded probe through NNPACK, the direct kernel and
    float64, and choose NNPACK only where it is no less precise (module docstring: the rule). It
    runs on one thread: on a tiny probe, waking a second one costs more than it saves, and far
    more on a busy machine (the kernels' sums do not depend on the thread count)."""
    started = time.perf_counter()
    key = _calibration_key(conv)
    known = _calibrations().get(key) if key else None
    if known is not None:
        return KernelChoice(*known, seconds=time.perf_counter() - started, cached=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        choice = _calibrate(conv, started)
    finally:
        torch.set_num_threads(threads)
    if key and not math.isnan(choice.nnpack_error):
        store = _calibrations()
        store.pop(key, None)
        store[key] = [choice.kernel, choice.nnpack, choice.nnpack_error, choice.nnpack_max_error]
        _CALIBRATION_STATE["dirty"] = True
    return choice


_CALIBRATION_STATE: dict = {"entries": None, "dirty": False, "path": None}


@functools.cache
def _machine() -> str:
    """This machine as far as the kernels' sums go: CPU model, instruction set, PyTorch build."""
    capability = getattr(torch.backends.cpu, "get_cpu_capability", lambda: "")()
    return f"{platform.machine()}|{cpu_model()}|{capability}|torch {torch.__version__}"


def _calibration_key(conv: nn.Conv2d) -> str:
    """A digest of what the calibration's answer depends on: the machine, the layer's geometry and
    the weights (and bias) of the output channels the probe computes."""
    weight = conv.weight.detach()
    if weight.device.type != "cpu" or weight.dtype != torch.float32 or CALIBRATION_CACHE is None:
        return ""
    pick = _probe_channels(weight.shape[0])
    rule = (RMS_RATIO, MAX_RATIO, PROBE_SIZE, PROBE_CHANNELS, PROBE_VALUES, _PROBE_SEED)
    digest = hashlib.sha256(f"{_machine()}|{rule}|{tuple(weight.shape)}|{tuple(conv.padding)}".encode())
    rows = pick.numpy()
    digest.update(weight.numpy()[rows].tobytes())  # numpy: torch's index_select takes milliseconds here
    if conv.bias is not None:
        digest.update(b"bias" + conv.bias.detach().numpy()[rows].tobytes())
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
                if isinstance(loaded, dict):
                    entries = {k: v for k, v in loaded.items() if _valid_entry(k, v)}
        except (OSError, ValueError):
            entries = {}
        _CALIBRATION_STATE.update(entries=entries, dirty=False, path=path)
    return _CALIBRATION_STATE["entries"]


def _valid_entry(key: object, value: object) -> bool:
    return (
        isinstance(key, str)
        and len(key) == 64
        and isinstance(value, list)
        and len(value) == 4
        and all(isinstance(v, str) for v in value[:2])
        and all(isinstance(v, (int, float)) and math.isfinite(v) for v in value[2:])
    )


def save_calibrations() -> None:
    """Write new calibrations to the cache file (atomically; a folder that cannot be written to
    keeps nothing, silently: the next load calibrates again)."""
    path = _CALIBRATION_STATE["path"]
    if not _CALIBRATION_STATE["dirty"] or path is None:
        return
    from ..atomic import atomic_write

    entries = _CALIBRATION_STATE["entries"]
    kept = dict(list(entries.items())[-CALIBRATION_ENTRIES:])
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path, "w") as handle:
            json.dump(kept, handle, separators=(",", ":"))
    except OSError:
        return
    _CALIBRATION_STATE["dirty"] = False


def _probe_channels(out_channels: int) -> Tensor:
    """The output channels the probe computes, evenly spread."""
    return torch.linspace(0, out_channels - 1, min(out_channels, PROBE_CHANNELS)).round().long().unique()


def _calibrate(conv: NNPACKConv2d, started: float) -> KernelChoice:
    weight, bias = conv.weight.detach(), conv.bias.detach() if conv.bias is not None else None
    out_channels, in_channels, kernel_h, kernel_w = weight.shape
    pick = _probe_channels(out_channels)
    weight = weight.index_select(0, pick).contiguous()
    bias = bias.index_select(0, pick).contiguous() if bias is not None else None
    # Padding of at least the kernel is computed as zeros in the input (NNPACKConv2d.nnpack): the
    # probe keeps only as much of it as one window sees.
    pad_h, pad_w = min(conv.padding[0], kernel_h - 1), min(conv.padding[1], kernel_w - 1)
    height = max(1, PROBE_SIZE + kernel_h - 1 - 2 * pad_h)
    width = max(1, PROBE_SIZE + kernel_w - 1 - 2 * pad_w)
    mode = _nnpack_mode((kernel_h, kernel_w))
    if 3 * in_channels * height * width > PROBE_VALUES:  # too wide to probe cheaply: keep it exact
        seconds = time.perf_counter() - started
        return KernelChoice("direct (too wide to probe)", mode, math.nan, math.nan, seconds)
    generator = torch.Generator().manual_seed(_PROBE_SEED)
    noise = torch.randn(3, in_channels, height, width, generator=generator)
    probe = torch.stack([noise[0], noise[1].abs(), 1 + 0.05 * noise[2]])  # signed, after ReLU, flat
    direct = direct_kernel(probe, weight, padding=(pad_h, pad_w))
    with torch.no_grad():
        reference = F.conv2d(probe.double(), weight.double(), None if bias is None else bias.double(),
                             padding=(pad_h, pad_w))  # fmt: skip
        plain = F.conv2d(probe, weight, bias, padding=(pad_h, pad_w))
        zero = torch.zeros(weight.shape[0]) if bias is None else bias
        fast = torch.cat([  # NNPACK's batch path, and its single-image (inference) path
            torch._nnpack_spatial_convolution(probe, weight, zero, [pad_h, pad_w], [1, 1]),
            torch._nnpack_spatial_convolution(probe[:1], weight, zero, [pad_h, pad_w], [1, 1]),
        ])
    plain_rms, plain_max = _relative_errors(plain, reference)
    fast_rms, fast_max = _relative_errors(fast, torch.cat([reference, reference[:1]]))
    plain_rms, plain_max = torch.cat([plain_rms, plain_rms[:1]]), torch.cat([plain_max, plain_max[:1]])
    tiny = torch.finfo(torch.float64).tiny
    rms_ratio = float((fast_rms / plain_rms.clamp_min(tiny)).max())
    max_ratio = float((fast_max / plain_max.clamp_min(tiny)).max())
    precise = bool((fast_rms <= RMS_RATIO * plain_rms).all() and (fast_max <= MAX_RATIO * plain_max).all())
    seconds = time.perf_counter() - started
    return KernelChoice(mode if precise else direct, mode, rms_ratio, max_ratio, seconds)


class NNPACKConv2d(nn.Conv2d):
    """A ``Conv2d`` that runs on NNPACK for float32 CPU inference where :func:`calibrate` finds
    NNPACK as precise as the direct kernel for its current weights, else as ``Conv2d``."""

    choice: KernelChoice | None = None
    _calibrated_for: tuple | None = None

    def _weights_key(self) -> tuple:
        bias = self.bias
        return (id(self.weight), self.weight._version, id(bias), None if bias is None else bias._version)

    def kernel_choice(self) -> KernelChoice:
        """The calibrated choice for the current weights (calibrating again if they changed)."""
        key = self._weights_key()
        if self.choice is None or key != self._calibrated_for:
            self.choice = calibrate(self)
            self._calibrated_for = key
        return self.choice

    def _nnpack_ok(self, x: Tensor) -> bool:
        from ..layers.tracing import tracing

        grad = torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad)
        cpu = x.device.type == "cpu" and x.dtype == torch.float32 and x.dim() == 4
        if not cpu or grad or tracing() or self.weight.device.type != "cpu":
            return False
        return self.kernel_choice().kernel.startswith("nnpack")

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
        and conv.weight.device.type == "cpu"
        and conv.weight.dtype == torch.float32
    )


def kernel_choices(net: nn.Module, inputs: Mapping[str, Tensor] | None = None) -> dict[str, str]:
    """``{module name: kernel}`` for every 2-D convolution of ``net`` as it runs float32 inference on
    the CPU: a calibrated layer says its choice and the error ratios behind it; any other names the
    kernel PyTorch picks for it ("onednn", "slow2d", ...). PyTorch's pick depends on the input's
    size and the thread count: with ``inputs`` (the net's feeds) one forward runs and each layer
    is named by what it picked for the input it got there; without, or for a convolution the
    forward does not call as a module (the border skipping's first one), on a 16 x 16 input."""
    picked: dict[str, str] = {}
    if inputs is not None:
        convolutions = [(n, m) for n, m in net.named_modules() if isinstance(m, nn.Conv2d)]

        def record(name: str, conv: nn.Conv2d, x: Tensor) -> None:
            args = (conv.weight, conv.stride, conv.padding, conv.dilation, conv.groups)
            picked[name] = direct_kernel(x, *args)  # type: ignore[arg-type]

        hooks = [
            conv.register_forward_pre_hook(lambda m, a, n=n: record(n, m, a[0])) for n, conv in convolutions
        ]
        try:
            with torch.inference_mode():
                net(**inputs)
        finally:
            for hook in hooks:
                hook.remove()
    out = {}
    for name, module in net.named_modules():
        if isinstance(module, NNPACKConv2d):
            choice = module.kernel_choice()
            if name in picked and not choice.kernel.startswith("nnpack"):
                choice = dataclasses.replace(choice, kernel=picked[name])
            out[name] = str(choice)
        elif isinstance(module, nn.Conv2d) and module.weight.device.type == "cpu":
            probe = torch.zeros(1, module.in_channels, 16, 16)
            groups = module.groups
            out[name] = picked.get(name) or direct_kernel(
                probe, module.weight, module.stride, (0, 0), module.dilation, groups
            )
    return out


# Layers whose gradient does not need their own output, so a ReLU may overwrite it.
_RELU_SAFE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


def optimize_for_cpu(net: fx.GraphModule, *, border: bool = True) -> fx.GraphModule:
    """``net`` itself, its suitable convolutions moved to NNPACK where it is as precise (calibrated
    here, on their weights: module docstring), its ReLUs made in-place where
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
                fast.kernel_choice()  # calibrated now, at load, not on the first forward
                setattr(net, name, fast)
        save_calibrations()
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
