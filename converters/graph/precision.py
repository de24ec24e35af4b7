"""Optional reduced precision (bfloat16) for inference, where the hardware computes it.

Two functions are the whole policy: :func:`bf16_support` decides from the device (on the CPU: the
``amx_bf16`` / ``avx512_bf16`` flags of ``/proc/cpuinfo`` and of ``torch.cpu.get_capabilities()``;
on CUDA: ``torch.cuda.is_bf16_supported()``) and :func:`reduced` applies it. ``segment``, the
evaluators and ``eval.timing`` take ``--precision {fp32,bf16}`` (default fp32) and
``weights.load_model(..., precision=)`` the same; all of them come here.

How bf16 is applied: the net's floating-point parameters and buffers are cast to bfloat16 once
(in place for a net built for the purpose, else a bf16 copy of the parameters used through
``torch.func.functional_call``), floating-point inputs are cast at the entrance, every output is
returned as float32 (scoring code is unchanged). On the CPU, 4-D inputs and weights are made
channels-last (oneDNN's AMX and AVX-512 BF16 convolutions take that layout; on the NCHW blobs of the
fast graph, FCN-8s at 500x500 ran 2.3x slower), and transposed convolutions keep float32 weights and
compute in float32 (:func:`_float32_on_cpu`). Measured against ``torch.autocast`` on the FCN
nets, the argmax agreement with fp32 is the same (98.95% against 98.95% on FCN-8s at width 0.25,
random weights; 99.8% both on the tiny fixture net), while the cast is made once rather than at
every forward (FCN-8s: 538 MB of weights read and 269 MB written per call under autocast) and the
CPU fast graph's NNPACK convolutions, which only take float32, step aside for oneDNN's bf16
kernels instead of silently staying in fp32 as they do under autocast.

On a CPU without AMX or AVX-512 BF16, bf16 is refused in one line (oneDNN emulates it there, tens of
times slower than fp32). ``FCN_PORT_FORCE_BF16=1`` allows it anyway (tests, curious users); the
result is then labelled "forced, emulated: not representative".
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..errors import UsageError

__all__ = [
    "FORCE_ENV",
    "PRECISIONS",
    "ReducedPrecision",
    "Support",
    "add_precision_option",
    "bf16_support",
    "check_precision",
    "cpu_bf16_features",
    "cpu_model",
    "reduced",
]

PRECISIONS = ("fp32", "bf16")
FORCE_ENV = "FCN_PORT_FORCE_BF16"
_CPU_FEATURES = ("amx_bf16", "avx512_bf16")
_DTYPES = {"bf16": torch.bfloat16}


def _proc_cpuinfo_field(names: tuple[str, ...], path: str = "/proc/cpuinfo") -> str | None:
    """The first processor's value of the first of ``names`` in ``/proc/cpuinfo`` (``None`` where
    there is none)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                key, sep, value = line.partition(":")
                if sep and key.strip() in names:
                    return value.strip()
    except OSError:
        pass
    return None


def _proc_cpuinfo_flags(path: str = "/proc/cpuinfo") -> set[str]:
    """The ``flags`` of the first processor in ``/proc/cpuinfo`` (empty where there is none)."""
    return set((_proc_cpuinfo_field(("flags", "Features"), path) or "").split())


def cpu_model() -> str:
    """This CPU's model name (``/proc/cpuinfo``, else what ``platform`` says)."""
    import platform

    return _proc_cpuinfo_field(("model name",)) or platform.processor() or platform.machine()


def _torch_cpu_flags() -> set[str]:
    """The bf16 features ``torch.cpu.get_capabilities()`` reports as present (empty if it cannot)."""
    capabilities = getattr(torch.cpu, "get_capabilities", None)
    if capabilities is None:
        return set()
    try:
        found = capabilities()
    except (RuntimeError, OSError):
        return set()
    return {name for name in _CPU_FEATURES if found.get(name) is True}


def cpu_bf16_features() -> tuple[str, ...]:
    """The CPU's native bf16 features among ``amx_bf16`` and ``avx512_bf16`` (either source counts)."""
    found = (_proc_cpuinfo_flags() & set(_CPU_FEATURES)) | _torch_cpu_flags()
    return tuple(name for name in _CPU_FEATURES if name in found)


def _forced() -> bool:
    return os.environ.get(FORCE_ENV, "").strip().lower() not in ("", "0", "false", "no")


@dataclass(frozen=True)
class Support:
    """Whether bf16 may run on a device: ``native`` (the hardware computes it), ``forced``
    (``FCN_PORT_FORCE_BF16`` allows it without), ``features`` (what was found) and ``reason``
    (why not, one line, when neither)."""

    native: bool
    forced: bool
    features: tuple[str, ...]
    device: str
    reason: str = ""

    @property
    def allowed(self) -> bool:
        return self.native or self.forced

    @property
    def label(self) -> str:
        """A bf16 run described: ``bf16 (amx_bf16)``, ``bf16 (forced, emulated: not representative)``."""
        if self.native:
            return f"bf16 ({', '.join(self.features)})" if self.features else "bf16"
        return "bf16 (forced, emulated: not representative)"


def bf16_support(device: torch.device | str = "cpu") -> Support:
    """Whether ``device`` computes bfloat16 natively, or the environment forces it (:data:`FORCE_ENV`)."""
    device = torch.device(device)
    forced = _forced()
    if device.type == "cpu":
        features = cpu_bf16_features()
        reason = "" if features else "needs a CPU with AMX or AVX-512 BF16 (this one has neither)"
        return Support(bool(features), forced, features, "cpu", reason)
    if device.type == "cuda":
        native = bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
        name = torch.cuda.get_device_name(device) if torch.cuda.is_available() else "CUDA device"
        reason = "" if native else f"needs a GPU that computes bf16 (this {name} does not)"
        return Support(native, forced, ("cuda",) if native else (), str(device), reason)
    return Support(False, forced, (), str(device), f"is supported on the CPU and CUDA, not on {device.type}")


def check_precision(
    precision: str, device: torch.device | str = "cpu", *, option: str = "--precision"
) -> Support | None:
    """``None`` for fp32; for bf16 the :class:`Support` when allowed, else :class:`UsageError` with
    one line: ``--precision bf16 needs a CPU with AMX or AVX-512 BF16 (this one has neither): use fp32``
    (``option``: the option's name; one without a leading dash is written ``precision='bf16'``)."""
    what = f"{option} {precision}" if option.startswith("-") else f"{option}={precision!r}"
    if precision not in PRECISIONS:
        raise UsageError(f"{what}: choose from {', '.join(PRECISIONS)}")
    if precision == "fp32":
        return None
    support = bf16_support(device)
    if not support.allowed:
        raise UsageError(f"{what} {support.reason}: use fp32")
    return support


def add_precision_option(parser: Any, help: str | None = None) -> None:
    """``--precision {fp32,bf16}`` (default fp32) on an ``argparse`` parser: segment and every
    evaluator take it as is; ``eval.timing`` with its own ``help``."""
    parser.add_argument(
        "--precision", choices=PRECISIONS, default="fp32",
        help=help or "bf16: compute in bfloat16 (faster on CPUs with AMX or AVX-512 BF16 and on GPUs "
        f"with bf16; refused elsewhere unless {FORCE_ENV}=1; outputs stay float32). Default fp32: "
        "Caffe's arithmetic",
    )


class ReducedPrecision(nn.Module):
    """``net`` computed in ``dtype``: floating inputs cast on the way in, every floating output
    returned as float32. ``in_place``: ``net``'s own parameters are cast (a net built for the
    purpose); otherwise ``net`` is left as it is and runs on a reduced copy of its parameters and
    buffers (half its float32 size). ``caffe`` (the net's :class:`CaffeNetInfo`) stays readable."""

    def __init__(
        self, net: nn.Module, dtype: torch.dtype = torch.bfloat16, *, in_place: bool = False
    ) -> None:
        super().__init__()
        self.net = net
        self.dtype = dtype
        self.precision = next(k for k, v in _DTYPES.items() if v == dtype)
        if hasattr(net, "caffe"):
            self.caffe = net.caffe
        self._float32 = _float32_on_cpu(net)
        self._copies: dict[str, torch.Tensor] | None = None
        named = [*net.named_parameters(), *net.named_buffers()]  # (a shared one once: it is tied)
        if in_place:
            with torch.no_grad():
                for name, tensor in dict(named).items():
                    tensor.data = self._cast(name, tensor)
        else:
            self._copies = {name: self._cast(name, tensor) for name, tensor in named}

    def _cast(self, name: str, tensor: torch.Tensor) -> torch.Tensor:
        """A parameter or buffer as this net computes with it: floating ones in ``dtype`` (on the
        CPU a transposed convolution's stay float32, and 4-D ones are made channels-last), others
        as they are."""
        if not tensor.is_floating_point():
            return tensor
        cpu = tensor.device.type == "cpu"
        if cpu and name in self._float32:
            return tensor.float()
        layout = torch.channels_last if cpu and tensor.dim() == 4 else torch.preserve_format
        return tensor.to(self.dtype, memory_format=layout)

    def forward(self, *args: Any, **inputs: Any) -> Any:
        args = tuple(self._in(a) for a in args)
        inputs = {k: self._in(v) for k, v in inputs.items()}
        if self._copies is None:
            out = self.net(*args, **inputs)
        else:
            out = torch.func.functional_call(self.net, self._copies, args=args, kwargs=inputs, strict=False)
        return _as_float32(out)

    def _in(self, value: Any) -> Any:
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            if value.device.type == "cpu" and value.dim() == 4:  # (oneDNN's bf16 kernels want it)
                return value.to(self.dtype, memory_format=torch.channels_last)
            return value.to(self.dtype)
        return value

    def _apply(self, fn: Any, recurse: bool = True) -> ReducedPrecision:  # .to(device) moves the copies too
        super()._apply(fn, recurse)
        if self._copies is not None:
            self._copies = {k: self._cast(k, fn(v)) for k, v in self._copies.items()}
        return self


def _float32_on_cpu(net: nn.Module) -> frozenset[str]:
    """The parameters and buffers of ``net``'s transposed convolutions: on the CPU they compute in
    float32 within a bf16 net (they take their input's dtype back after). oneDNN's bf16 kernel for
    them is slow for the large kernels of FCN's upsampling (measured on an Intel Xeon with AMX,
    torch 2.13, 2 threads, 21 channels in and out: 64x64 kernel at stride 32 on 16x16 maps, 1400 ms
    against 56 ms in float32; 32x32 at stride 16, 334 ms against 50 ms; 16x16 at stride 8, 54 ms
    against 44 ms), and these layers are a small part of a net's work."""
    kept = []
    for prefix, module in net.named_modules(remove_duplicate=False):
        if isinstance(module, nn.modules.conv._ConvTransposeNd):
            names = [n for n, _ in module.named_parameters(recurse=False)]
            names += [n for n, _ in module.named_buffers(recurse=False)]
            kept += [f"{prefix}.{n}" if prefix else n for n in names]
    return frozenset(kept)


def _as_float32(out: Any) -> Any:
    if isinstance(out, torch.Tensor):
        return out.float() if out.is_floating_point() else out
    if isinstance(out, Mapping):
        return {k: _as_float32(v) for k, v in out.items()}
    if isinstance(out, (tuple, list)):
        return type(out)(_as_float32(v) for v in out)
    return out


def reduced(
    net: nn.Module,
    precision: str,
    device: torch.device | str | None = None,
    *,
    in_place: bool = False,
    option: str = "precision",
) -> nn.Module:
    """``net`` to run in ``precision``: itself for fp32 (and for a net already in it), else a
    :class:`ReducedPrecision` around it, after :func:`check_precision` on ``device`` (default: the
    device of its parameters). ``in_place`` casts ``net``'s own parameters (no copy)."""
    if device is None:
        first = next(iter(net.parameters()), None)
        device = first.device if first is not None else torch.device("cpu")
    check_precision(precision, device, option=option)
    if precision == "fp32":
        if isinstance(net, ReducedPrecision):
            raise UsageError("this net was built in bf16; build it again in fp32 (precision='fp32')")
        return net
    if isinstance(net, ReducedPrecision) and net.precision == precision:
        return net
    return ReducedPrecision(net, _DTYPES[precision], in_place=in_place)


def precision_of(net: Any) -> str:
    """``bf16`` for a net wrapped by :func:`reduced`, else ``fp32``."""
    return net.precision if isinstance(net, ReducedPrecision) else "fp32"
