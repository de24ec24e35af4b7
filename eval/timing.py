"""Forward-pass timing of the FCN nets, as the paper timed them, and Table 1's static columns.

``python -m eval.timing --model voc-fcn8s --size 500x500 --device cuda`` builds the net (with
``--weights``, else the cached released weights, else random fan-in-scaled ones: the time does not
depend on the values), runs ``--warmup`` passes, then times ``--runs`` passes (at least 20, the
paper's count), synchronising the device around each, and prints the median, the spread and the
paper's Tesla K40c figure with the speed-up. ``--channels-last``, ``--tf32``, ``--autocast bf16|fp16`` and
``--compile`` (``--freeze``: with inductor weight freezing) and ``--cuda-graphs`` (the forward captured
once in a ``torch.cuda.CUDAGraph`` on static input buffers, replayed for the timed runs) each add a
row, reported with its argmax agreement against plain fp32. ``--precision bf16`` adds the row that
``segment`` and the evaluators run with the same option (weights cast to bfloat16 once,
:mod:`converters.graph.precision`) and prints its speed-up over fp32; it and ``--autocast bf16``
are refused in one line where neither AMX nor AVX-512 BF16 (nor a CUDA GPU with bf16) is there.

Static columns of Table 1, computed from the net definition (see :func:`static_columns`):

- *conv layers*: Convolution layers on the longest path from the input to the coarse score (the
  blob the first Deconvolution upsamples), counting the classifier turned convolution (fc6, fc7)
  and the class scorer (score_fr), but no skip scorer and no upsampling. This is the paper's
  count: VGG16 13 + 3 = 16, AlexNet 5 + 3 = 8.
- *receptive field* and *max stride*: of one unit of the coarse score, in input pixels
  (``converters.caffe.geometry``).
- *parameters*: weights of the built module, less those of the upsampling (Deconvolution) layers,
  as the paper counts (FCN-VGG16 134M, FCN-AlexNet 57M).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from converters import cli
from converters.caffe.message import Message
from converters.caffe.netdef import layer_type
from converters.graph.precision import add_precision_option, check_precision, reduced
from converters.graph.speed import optimize_for_cpu
from weights.models import ModelError, load_model

MIN_RUNS = 20


class TimingError(ValueError):
    """A problem the user can fix (bad option, missing file, missing module); one line."""


# --------------------------------------------------------------------------------------------
# The paper's timings (CVPR 2015): Tesla K40c, 500x500 input, averaged over 20 trials.


@dataclass(frozen=True)
class PaperTime:
    """One published forward time and where it is printed."""

    net: str
    ms: float
    source: str


_VGG16_FAMILIES = ("voc-fcn32s", "voc-fcn16s", "voc-fcn8s", "pascalcontext-", "nyud-", "siftflow-")


def paper_times(model: str) -> list[PaperTime]:
    """The paper's K40c forward times that apply to ``model``, from ``weights.published``.

    The model's own rows (Table 3's ~175 ms for FCN-8s), then the Table 1 row of its backbone
    (FCN-VGG16 210 ms for the VGG16 nets, FCN-AlexNet 50 ms). Empty for other nets, or when
    ``weights.published`` is not available.
    """
    from weights import published

    rows = list(published.lookup_all(model=model))
    backbone = None
    if model.endswith("alexnet"):
        backbone = "FCN-AlexNet"
    elif model.startswith(_VGG16_FAMILIES):
        backbone = "FCN-VGG16"
    rows += [r for r in published.TABLE1 if r.method == backbone and r not in rows]
    times: list[PaperTime] = []
    for row in rows:
        for key in ("inference_ms", "forward_ms"):
            value = row.get(key)
            entry = PaperTime(row.method, float(value), str(row.source)) if value else None
            if entry is not None and entry not in times:
                times.append(entry)
    return times


# --------------------------------------------------------------------------------------------
# Static columns from the net definition.


_UPSAMPLING = {"Deconvolution"}


def _test_phase_layers(net: Message) -> list[Message]:
    """The layers Caffe instantiates in the TEST phase (``converters.graph.filter_layers``)."""
    from converters.caffe.netdef import filter_layers

    return filter_layers(net, "TEST")


def coarse_score_blob(net: Message) -> str:
    """The blob the first upsampling layer reads (``score_fr`` in the FCNs): the coarsest scores.

    Without upsampling layers, the top of the last layer. Raises ``TimingError`` for an empty net.
    """
    layers = _test_phase_layers(net)
    for layer in layers:
        if layer_type(layer) in _UPSAMPLING:
            return str(layer.get("bottom")[0])
    if not layers or not layer.get("top"):
        raise TimingError("the net has no layers with outputs")
    return str(layers[-1].get("top")[0])


@dataclass(frozen=True)
class StaticColumns:
    """Table 1's columns that follow from the net's structure.

    ``parameters`` leaves out the upsampling (Deconvolution) layers, as the paper's counts do
    (FCN-VGG16 134M, FCN-AlexNet 57M: the convolutionalized classifier with its class scorer);
    ``all_parameters`` counts everything.
    """

    conv_layers: int
    receptive_field: int | None  # None: the blob has no spatial mapping (a classifier's output)
    max_stride: int | None
    parameters: int | None
    all_parameters: int | None
    coarse_blob: str


def conv_depth(net: Message, target: str) -> int:
    """Convolution layers on the longest path from the net's inputs to blob ``target``."""
    depth: dict[str, int] = {}
    for layer in _test_phase_layers(net):
        known = [depth[str(b)] for b in layer.get("bottom") if str(b) in depth]
        d = max(known, default=0) + (1 if layer_type(layer) == "Convolution" else 0)
        for top in layer.get("top"):
            depth[str(top)] = d
    if target not in depth:
        raise TimingError(f"blob {target!r} is not produced by the net")
    return depth[target]


def definition_parameter_counts(net: Message) -> dict[str, tuple[str, int]] | None:
    """Per layer name: (type, learnable values) of the definition's layers with parameters
    (:func:`converters.graph.shapes.layer_parameter_counts`: undeclared inputs are 3-channel
    images). ``None`` when the shapes cannot be worked out from the definition."""
    from converters.graph.shapes import layer_parameter_counts

    try:
        return layer_parameter_counts(net)
    except ValueError:  # GeometryError, NetError: the definition alone does not size the net
        return None


def definition_parameter_count(net: Message, *, upsampling: bool = True) -> int | None:
    """Total parameters of the definition (``None`` if unknown); ``upsampling=False`` leaves out
    the Deconvolution layers."""
    counts = definition_parameter_counts(net)
    if counts is None:
        return None
    return sum(n for kind, n in counts.values() if upsampling or kind not in _UPSAMPLING)


def module_parameter_count(module: torch.nn.Module) -> int:
    """Elements of all parameters of ``module`` (each shared tensor counted once)."""
    seen: set[int] = set()
    total = 0
    for p in module.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    return total


def static_columns(net: Message, module: torch.nn.Module | None = None) -> StaticColumns:
    """Table 1's conv layers, receptive field and max stride of ``net``; parameters of ``module``.

    The parameter count is the built module's, less the definition's upsampling weights; without
    a module both come from the definition (``None`` if unknown).
    """
    from converters.caffe import geometry
    from converters.errors import GeometryError

    target = coarse_score_blob(net)
    depth = conv_depth(net, target)
    try:
        rf: int | None = geometry.receptive_field(net, target)
        stride: int | None = geometry.max_stride(net, target)
    except GeometryError:  # not fully convolutional: no input coordinates behind the output
        rf = stride = None
    total = definition_parameter_count(net)
    without_upsampling = definition_parameter_count(net, upsampling=False)
    if module is not None:
        built = module_parameter_count(module)
        known = total is not None and without_upsampling is not None
        upsampling = total - without_upsampling if known else 0
        total, without_upsampling = built, built - upsampling
    return StaticColumns(depth, rf, stride, without_upsampling, total, target)


# --------------------------------------------------------------------------------------------
# Timing.


@dataclass(frozen=True)
class Variant:
    """One way to run the net: memory format, TF32, autocast dtype, torch.compile, CUDA graphs."""

    channels_last: bool = False
    tf32: bool = False
    autocast: str | None = None  # "bf16" | "fp16"
    compile: bool = False
    freeze: bool = False  # with compile: inductor freezes the weights (prepacked, fused convolutions)
    cpu_fast: bool = False  # converters.optimize_for_cpu: border skipping, calibrated kernels, ...
    cuda_graphs: bool = False  # captured once in a CUDA graph on static input buffers, replayed
    precision: str = "fp32"  # "bf16": as segment and eval run it (converters.graph.precision)

    @property
    def label(self) -> str:
        parts = [
            "channels_last" if self.channels_last else "",
            "tf32" if self.tf32 else "",
            f"autocast {self.autocast}" if self.autocast else "",
            ("compile (frozen)" if self.freeze else "compile") if self.compile else "",
            "cuda_graphs" if self.cuda_graphs else "",
            "cpu_fast" if self.cpu_fast else "",
            self.precision if self.precision != "fp32" else "",
        ]
        return " + ".join(p for p in parts if p) or "fp32"


@dataclass
class TimingRow:
    """Measured times of one variant (milliseconds) and its agreement with plain fp32."""

    variant: str
    times_ms: list[float]
    median_ms: float
    q1_ms: float
    q3_ms: float
    min_ms: float
    max_ms: float
    images_per_s: float
    first_call_ms: float
    argmax_agreement: float | None = None
    agreement_by_output: dict[str, float] = field(default_factory=dict)


_AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@contextlib.contextmanager
def _fp32_precision(device: torch.device, tf32: bool) -> Iterator[None]:
    """TF32 for CUDA convolutions and matmuls on or off (``off`` is plain IEEE fp32), restored after."""
    if device.type != "cuda":
        yield
        return
    conv = getattr(getattr(torch.backends.cudnn, "conv", None), "fp32_precision", None)
    if conv is not None:  # the newer API; never mixed with the legacy flags
        matmul = torch.backends.cuda.matmul.fp32_precision
        value = "tf32" if tf32 else "ieee"
        torch.backends.cudnn.conv.fp32_precision = value
        torch.backends.cuda.matmul.fp32_precision = value
        try:
            yield
        finally:
            torch.backends.cudnn.conv.fp32_precision = conv
            torch.backends.cuda.matmul.fp32_precision = matmul
        return
    old = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = tf32
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = old


def synchronize(device: torch.device) -> None:
    """Wait for all queued work on ``device`` (no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def cuda_graphs_supported(device: torch.device) -> bool:
    """Whether CUDA graphs can be captured on ``device`` (a CUDA device; tests replace this)."""
    return device.type == "cuda"


def capture_cuda_graph(
    forward: Callable[[], dict[str, torch.Tensor]], device: torch.device
) -> tuple[Callable[[], None], dict[str, torch.Tensor]]:
    """Capture ``forward`` (which reads static input buffers) in a ``torch.cuda.CUDAGraph``.

    Two passes on a side stream first (cuDNN/cuBLAS workspaces and the allocator settle outside the
    capture, as PyTorch's documentation asks), then one captured pass. Returns the graph's ``replay``
    and the static outputs it rewrites on each replay. The only CUDA calls of the variant: tests
    replace this function to run the replay loop on the CPU.
    """
    stream = torch.cuda.Stream(device)
    stream.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(stream):
        for _ in range(2):
            forward()
    torch.cuda.current_stream(device).wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        outputs = forward()
    return graph.replay, outputs


def _as_outputs(result: Any) -> dict[str, torch.Tensor]:
    if isinstance(result, Mapping):
        return {str(k): v for k, v in result.items()}
    if isinstance(result, torch.Tensor):
        return {"output": result}
    if isinstance(result, Sequence):
        return {f"output{i}": v for i, v in enumerate(result)}
    raise TypeError(f"unexpected forward result {type(result).__name__}")


def argmax_agreement(
    reference: Mapping[str, torch.Tensor], other: Mapping[str, torch.Tensor]
) -> dict[str, float]:
    """Per output blob: the fraction of positions whose argmax over channels (dim 1) is the same."""
    agreement = {}
    for name, ref in reference.items():
        if name not in other:
            raise ValueError(f"output {name!r} missing from the compared run")
        a = ref.float().argmax(dim=1) if ref.dim() > 1 else ref
        b = other[name].float().argmax(dim=1) if other[name].dim() > 1 else other[name]
        agreement[name] = float((a == b).float().mean().item())
    return agreement


def summarize(variant: str, times_ms: Sequence[float], batch: int, first_call_ms: float) -> TimingRow:
    """Median, quartiles, extremes and throughput of the timed passes."""
    if not times_ms:
        raise ValueError("no timed runs")
    ordered = sorted(times_ms)
    q = np.percentile(np.asarray(ordered), [25, 75])
    median = statistics.median(ordered)
    return TimingRow(
        variant=variant,
        times_ms=list(times_ms),
        median_ms=median,
        q1_ms=float(q[0]),
        q3_ms=float(q[1]),
        min_ms=ordered[0],
        max_ms=ordered[-1],
        images_per_s=batch * 1000.0 / median if median > 0 else math.inf,
        first_call_ms=first_call_ms,
    )


def time_variant(
    net: torch.nn.Module,
    inputs: Mapping[str, torch.Tensor],
    variant: Variant,
    *,
    runs: int = MIN_RUNS,
    warmup: int = 3,
    device: torch.device | str = "cpu",
    clock: Callable[[], float] = time.perf_counter,
    progress: bool = False,
) -> tuple[TimingRow, dict[str, torch.Tensor]]:
    """Time ``runs`` forward passes of ``net(**inputs)`` under ``variant`` after ``warmup`` passes.

    Each pass is bracketed by device synchronisation, so a time is the full latency of one
    forward. The module is copied (not changed) for channels_last/compile. Returns the summary
    and the last pass's outputs (float32, on the CPU) for agreement checks. ``progress``: a bar
    over the passes on stderr.
    """
    if runs < 1:
        raise TimingError(f"--runs must be >= 1, got {runs}")
    if warmup < 0:
        raise TimingError(f"--warmup must be >= 0, got {warmup}")
    device = torch.device(device)
    if variant.tf32 and device.type != "cuda":
        raise TimingError("--tf32 applies to CUDA devices only")
    if variant.cpu_fast and device.type != "cpu":
        raise TimingError("--cpu-fast applies to the CPU only")
    if variant.cuda_graphs and not cuda_graphs_supported(device):
        raise TimingError("--cuda-graphs applies to CUDA devices only")
    if variant.cuda_graphs and variant.compile:
        raise TimingError(
            "--cuda-graphs does not combine with --compile (torch.compile's mode='reduce-overhead' is "
            "its own CUDA graphs)"
        )
    model = optimize_for_cpu(copy.deepcopy(net)) if variant.cpu_fast else net
    feed = dict(inputs)
    if variant.channels_last:
        model = copy.deepcopy(model).to(memory_format=torch.channels_last)
        feed = {
            k: v.contiguous(memory_format=torch.channels_last) if v.dim() == 4 else v for k, v in feed.items()
        }
    if variant.precision != "fp32":  # a reduced copy of the weights, made once (the net is unchanged)
        model = reduced(model, variant.precision, device, option="--precision")
    if variant.compile:
        model = torch.compile(model)  # compiled lazily, at the first (untimed) pass below
    sources = feed
    if variant.cuda_graphs:  # the graph reads fixed buffers: each timed run copies the input into them
        feed = {k: v.clone() for k, v in feed.items()}
    autocast = (
        torch.autocast(device.type, dtype=_AUTOCAST_DTYPES[variant.autocast])
        if variant.autocast
        else contextlib.nullcontext()
    )

    def forward() -> dict[str, torch.Tensor]:
        with autocast:
            return _as_outputs(model(**feed))

    times: list[float] = []
    bar = _progress_bar(variant.label, max(1, warmup) + runs, progress)
    freezing = contextlib.nullcontext()
    if variant.compile and variant.freeze:
        import torch._inductor.config as inductor_config

        freezing = inductor_config.patch(freezing=True)
    with torch.inference_mode(), _fp32_precision(device, variant.tf32), freezing:
        synchronize(device)
        start = clock()
        outputs = forward()
        synchronize(device)
        first = (clock() - start) * 1000.0
        bar.update()
        for _ in range(max(0, warmup - 1)):
            outputs = forward()
            bar.update()
        step = forward
        if variant.cuda_graphs:
            replay, static_outputs = capture_cuda_graph(forward, device)

            def step() -> dict[str, torch.Tensor]:
                for name, buffer in feed.items():
                    buffer.copy_(sources[name], non_blocking=True)
                replay()
                return static_outputs

        synchronize(device)
        for _ in range(runs):
            start = clock()
            outputs = step()
            synchronize(device)
            times.append((clock() - start) * 1000.0)
            bar.update()
    bar.close()
    batch = next(iter(feed.values())).shape[0] if feed else 1
    row = summarize(variant.label, times, batch, first)
    return row, {k: v.detach().float().cpu() for k, v in outputs.items()}


def _progress_bar(label: str, total: int, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc=f"timing {label}", unit="pass", file=sys.stderr, disable=not enabled,
                leave=False)


def run_variants(
    net: torch.nn.Module,
    inputs: Mapping[str, torch.Tensor],
    variants: Sequence[Variant],
    *,
    runs: int = MIN_RUNS,
    warmup: int = 3,
    device: torch.device | str = "cpu",
    progress: bool = False,
) -> list[TimingRow]:
    """Plain fp32 first, then every variant, each with argmax agreement against the fp32 outputs."""
    baseline, reference = time_variant(
        net, inputs, Variant(), runs=runs, warmup=warmup, device=device, progress=progress
    )
    baseline.argmax_agreement = 1.0
    rows = [baseline]
    for variant in variants:
        if variant == Variant():
            continue
        row, outputs = time_variant(
            net, inputs, variant, runs=runs, warmup=warmup, device=device, progress=progress
        )
        row.agreement_by_output = argmax_agreement(reference, outputs)
        row.argmax_agreement = min(row.agreement_by_output.values()) if row.agreement_by_output else None
        rows.append(row)
    return rows


def requested_variants(
    channels_last: bool,
    tf32: bool,
    autocast: str | None,
    compile_: bool,
    freeze: bool = False,
    cpu_fast: bool = False,
    cuda_graphs: bool = False,
    precision: str = "fp32",
) -> list[Variant]:
    """One variant per requested option, plus their combination when more than one is asked for
    (``cuda_graphs`` last among the singles, then ``precision``)."""
    singles = [Variant(cpu_fast=True)] if cpu_fast else []
    if channels_last:
        singles.append(Variant(channels_last=True))
    if tf32:
        singles.append(Variant(tf32=True))
    if autocast:
        singles.append(Variant(autocast=autocast))
    if compile_:
        singles.append(Variant(compile=True, freeze=freeze))
    if cuda_graphs:
        singles.append(Variant(cuda_graphs=True))
    if precision != "fp32":
        singles.append(Variant(precision=precision))
    if len(singles) > 1:
        singles.append(
            Variant(
                channels_last, tf32, autocast, compile_, freeze and compile_, cpu_fast, cuda_graphs, precision
            )
        )
    return singles


# --------------------------------------------------------------------------------------------
# Building the net.


def parse_size(text: str) -> tuple[int, int]:
    """``"500x500"`` (height x width) or ``"500"`` as ``(height, width)``; ``TimingError`` otherwise."""
    parts = text.lower().replace("×", "x").split("x")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise TimingError(f"--size must look like 500x500, got {text!r}") from None
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or min(values) < 1:
        raise TimingError(f"--size must look like 500x500 with positive sides, got {text!r}")
    return values[0], values[1]


def _channels(shape: Sequence[int] | None) -> int:
    return int(shape[1]) if shape is not None and len(shape) == 4 else 3


def synthetic_input(
    height: int, width: int, channels: int = 3, batch: int = 1, seed: int = 0
) -> torch.Tensor:
    """A smooth, image-like preprocessed input: blurred noise in roughly the range Caffe feeds."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(batch, channels, max(1, height // 16), max(1, width // 16), generator=generator)
    smooth = torch.nn.functional.interpolate(
        coarse, size=(height, width), mode="bilinear", align_corners=False
    )
    noise = torch.rand(batch, channels, height, width, generator=generator)
    return ((0.85 * smooth + 0.15 * noise) * 255.0 - 118.0).float()


# --------------------------------------------------------------------------------------------
# Reports.


def _fmt_count(n: int | None) -> str:
    if n is None:
        return "?"
    return f"{n / 1e6:.1f}M" if n >= 100_000 else str(n)


def markdown_report(result: Mapping[str, Any]) -> str:
    """The timing result as Markdown: static columns, then one row per variant beside the paper."""
    s = result["static"]
    lines = [
        f"# Forward time: {result['model']} at {result['size'][0]}x{result['size'][1]} "
        f"on {result['device_name']}",
        "",
        f"weights: {result['weights']}; {result['runs']} timed runs after {result['warmup']} warm-up; "
        f"torch {result['torch']}, {result['threads']} CPU threads",
        "",
        "| parameters | conv layers | receptive field | max stride | coarse score blob | with upsampling |",
        "|---|---|---|---|---|---|",
        f"| {_fmt_count(s['parameters'])} | {s['conv_layers']} | {s['receptive_field'] or '-'} "
        f"| {s['max_stride'] or '-'} | {s['coarse_blob']} | {_fmt_count(s['all_parameters'])} |",
        "",
    ]
    lines += [f"note: {note}" for note in result.get("notes", [])]
    lines += [""] if result.get("notes") else []
    papers = result["paper"]
    paper_head = " | ".join(f"paper {p['net']} (K40c)" for p in papers)
    speed_head = " | ".join(f"speed-up vs {p['net']}" for p in papers)
    header = "| variant | median ms | IQR ms | min-max ms | images/s | argmax agreement"
    header += (" | " + paper_head + " | " + speed_head) if papers else ""
    lines.append(header + " |")
    lines.append("|" + "---|" * (6 + 2 * len(papers)))
    for row in result["rows"]:
        cells = [
            row["variant"],
            f"{row['median_ms']:.1f}",
            f"{row['q3_ms'] - row['q1_ms']:.1f}",
            f"{row['min_ms']:.1f}-{row['max_ms']:.1f}",
            f"{row['images_per_s']:.2f}",
            "reference" if row["variant"] == "fp32" else f"{100 * row['argmax_agreement']:.3f}%",
        ]
        cells += [f"{p['ms']:.0f} ms" for p in papers]
        cells += [f"{p['ms'] / row['median_ms']:.2f}x" for p in papers]
        lines.append("| " + " | ".join(cells) + " |")
    if papers:
        lines.append("")
        lines.extend(f"- {p['net']}: {p['source']}" for p in papers)
    lines.append("- speed-up = paper time / our median (above 1: faster than the paper's K40c)")
    return "\n".join(lines) + "\n"


def reduced_precision_speedups(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """For each bf16 row, its speed-up over the same variant in fp32 and its argmax agreement:
    ``bf16: 1.84x the speed of fp32, argmax agreement 99.812%``."""
    by_label = {row["variant"]: row for row in rows}
    lines = []
    for row in rows:
        label = row["variant"]
        parts = label.split(" + ")
        if "bf16" not in parts:
            continue
        base = by_label.get(" + ".join(p for p in parts if p != "bf16") or "fp32")
        if base is None or not row["median_ms"]:
            continue
        agreement = row.get("argmax_agreement")
        agree = f", argmax agreement {100 * agreement:.3f}%" if agreement is not None else ""
        lines.append(
            f"{label}: {base['median_ms'] / row['median_ms']:.2f}x the speed of {base['variant']}{agree}"
        )
    return lines


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{device.type} ({torch.get_num_threads()} threads)"


PAPER_SIZE = (500, 500)


def _image_inputs(module: Any, size: tuple[int, int]) -> dict[str, tuple[int, ...]]:
    """Batch-1 shapes of the net's image (4-axis) inputs at ``size``."""
    return {
        name: (1, _channels(shape), *size)
        for name, shape in module.caffe.inputs.items()
        if len(shape) == 4
    }


def choose_size(module: Any, requested: tuple[int, int] | None) -> tuple[tuple[int, int], list[str]]:
    """The input size to time ``module`` at, and notes: ``requested`` (default the paper's 500x500)
    when the net takes it with its weights (fully convolutional), else the declared size of its
    input. ``TimingError`` when ``requested`` was given for a net whose weights fix another size."""
    from converters.caffe2torch import probe_input_shapes

    size = requested or PAPER_SIZE
    shapes = _image_inputs(module, size)
    if not shapes or probe_input_shapes(module, shapes) is not None:
        return size, []
    declared = next(tuple(s[2:]) for s in module.caffe.inputs.values() if len(s) == 4)
    text = "x".join(map(str, declared))
    if requested is not None and tuple(requested) != declared:
        raise TimingError(
            f"--size {requested[0]}x{requested[1]}: the net is not fully convolutional (its weights fix "
            f"the input at {text}); leave out --size to time it at {text}"
        )
    return (int(declared[0]), int(declared[1])), [
        f"not fully convolutional: timed at its declared input size {text}"
    ]


def size_notes(size: tuple[int, int], papers: Sequence[PaperTime]) -> list[str]:
    """A warning when the paper's times are compared with a size far (over 10% a side) from
    its 500x500."""
    far = any(abs(s - p) > 0.1 * p for s, p in zip(size, PAPER_SIZE, strict=True))
    if not papers or not far:
        return []
    return [
        f"timed at {size[0]}x{size[1]}, the paper at {PAPER_SIZE[0]}x{PAPER_SIZE[1]}: the speed-ups below "
        "compare different input sizes"
    ]


def measure(
    model: str,
    size: tuple[int, int] | None,
    *,
    device: str,
    runs: int = MIN_RUNS,
    warmup: int = 3,
    variants: Sequence[Variant] = (),
    caffemodel: str | None = None,
    random_weights: bool = False,
    progress: bool = False,
) -> dict[str, Any]:
    """Build ``model`` (name or prototxt), time it, and return the full result as JSON-ready data.

    ``size``: height and width (``None``: the paper's 500x500, or the declared size of a net that
    is not fully convolutional; :func:`choose_size`). Weights: ``caffemodel``, else the registry's
    cached file for ``model`` unless ``random_weights``, else random (the time does not depend on
    the values; the argmax agreement of variants does).
    """
    if runs < MIN_RUNS:
        raise TimingError(f"--runs must be at least {MIN_RUNS} (the paper averaged 20 trials), got {runs}")
    dev = cli.device(device)
    torch.manual_seed(0)
    spec = [model, caffemodel] if caffemodel else [model]
    try:
        source = "random" if random_weights else "cached"
        # The plain graph is the reference row; the CPU default (optimize_for_cpu) is the cpu_fast row.
        loaded = load_model(spec, dev, weights=source, progress=False, optimize=False)
    except ModelError as exc:
        raise TimingError(str(exc)) from None
    module = loaded.net
    size, notes = choose_size(module, size)
    definition = module.caffe.definition
    caffemodel = str(loaded.weights_path) if loaded.weights_path else None
    inputs = {
        name: synthetic_input(*size, channels=_channels(shape), seed=i).to(dev)
        for i, (name, shape) in enumerate(module.caffe.inputs.items())
    }
    static = static_columns(definition, module)
    papers = paper_times(Path(model).resolve().parent.name if Path(model).suffix == ".prototxt" else model)
    notes += size_notes(size, papers)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    rows = run_variants(module, inputs, variants, runs=runs, warmup=warmup, device=dev, progress=progress)
    return {
        "model": model,
        "size": list(size),
        "device": str(dev),
        "device_name": _device_name(dev),
        "weights": caffemodel or "random (fan-in scaled; timing does not depend on values)",
        "runs": runs,
        "warmup": warmup,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "static": asdict(static),
        "paper": [asdict(p) for p in papers],
        "notes": notes,
        "rows": [asdict(r) for r in rows],
    }


PROG = "python -m eval.timing"


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    """The ``python -m eval.timing`` argument parser (``prog``: the command as the user typed it,
    e.g. ``fcn-port timing``)."""
    parser = cli.Parser(
        prog=prog,
        description="Time FCN forward passes (median of >= 20 synchronised runs) beside the paper's K40c.",
    )
    parser.add_argument(
        "--model", default="voc-fcn8s",
        help="registry name or any deploy .prototxt (a net that is not fully convolutional runs at its "
        "declared input size)",
    )
    parser.add_argument(
        "--weights",
        default=None,
        help="caffemodel to load (default: the cached released one, else random: timing never downloads, "
        "the time does not depend on the values)",
    )
    parser.add_argument("--random-weights", action="store_true", help="random weights even if cached")
    parser.add_argument(
        "--size", default=None,
        help="input HxW (default 500x500, the paper's; for a net that is not fully convolutional, "
        "its declared size)",
    )
    parser.add_argument("--device", default=None, help="cuda, cpu, cuda:1 ... (default: cuda if available)")
    parser.add_argument(
        "--runs", type=int, default=MIN_RUNS, help=f"timed runs, >= {MIN_RUNS} (default {MIN_RUNS})"
    )
    parser.add_argument("--warmup", type=int, default=3, help="untimed warm-up runs (default 3)")
    parser.add_argument("--channels-last", action="store_true", help="also time channels_last memory format")
    parser.add_argument(
        "--cpu-fast",
        action="store_true",
        help="also time the default CPU graph, converters.optimize_for_cpu (border skipping, BatchNorm/Scale "
        "in one pass, each convolution on the kernel its calibration finds as precise and faster, "
        "channels-last blobs between them, in-place ReLU); always timed on the CPU beside the plain fp32 "
        "graph",
    )
    parser.add_argument("--tf32", action="store_true", help="also time TF32 convolutions/matmuls (CUDA)")
    parser.add_argument(
        "--autocast", choices=sorted(_AUTOCAST_DTYPES),
        help="also time under torch.autocast (mixed precision, weights cast at every call; bf16 needs the "
        "hardware --precision bf16 needs)",
    )
    add_precision_option(
        parser,
        help="bf16: also time the net in bfloat16 as segment and eval run it (weights cast once; CPUs with "
        "AMX or AVX-512 BF16, GPUs with bf16; refused elsewhere unless FCN_PORT_FORCE_BF16=1), with its "
        "speed-up and argmax agreement against fp32 (default fp32: no extra row)",
    )
    parser.add_argument("--compile", action="store_true", help="also time torch.compile")
    parser.add_argument(
        "--freeze",
        action="store_true",
        help="with --compile: freeze the weights into the compiled graph (inductor freezing; faster on CPU)",
    )
    parser.add_argument(
        "--cuda-graphs",
        action="store_true",
        help="also time the forward captured in a CUDA graph and replayed (CUDA; combines with "
        "--channels-last, --tf32, --autocast)",
    )
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's)")
    parser.add_argument(
        "--json",
        nargs="?",
        const="-",
        default=None,
        metavar="PATH",
        help="write the result as JSON to PATH (or stdout when no PATH is given) instead of Markdown",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def check_paths(args: argparse.Namespace) -> None:
    """Paths of the wrong kind, named as what they are, before a model loads."""
    if os.path.isdir(args.model):
        raise TimingError(
            f"--model {args.model} is a folder: give a registry name, a deploy .prototxt or a converted file"
        )
    if cli.looks_like_path(args.model):  # else a registry name
        cli.input_file(args.model, f"--model {args.model}", "give a deploy .prototxt or a converted file")
    if args.weights is not None:
        cli.input_file(args.weights, f"--weights {args.weights}", "give a .caffemodel or .caffemodel.h5 file")
    if args.json not in (None, "-"):
        cli.output_file(args.json, "--json", "timing.json")


def _main(argv: Sequence[str] | None, prog: str = PROG) -> int:
    args = build_parser(prog).parse_args(argv)
    size = parse_size(args.size) if args.size is not None else None
    if args.warmup < 0:
        raise TimingError(f"--warmup must be >= 0, got {args.warmup}")
    check_paths(args)
    if args.threads is not None:
        if args.threads < 1:
            raise TimingError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    device = cli.device(args.device)
    if args.freeze and not args.compile:
        raise TimingError("--freeze applies to --compile")
    if args.cuda_graphs and device.type != "cuda":
        raise TimingError("--cuda-graphs applies to CUDA devices only")
    if args.cuda_graphs and args.compile:
        raise TimingError(
            "--cuda-graphs does not combine with --compile (torch.compile's mode='reduce-overhead' is "
            "its own CUDA graphs)"
        )
    cpu_fast = args.cpu_fast or device.type == "cpu"  # the CPU default is timed beside the plain graph
    if args.precision != "fp32" and args.autocast:
        raise TimingError(
            f"--precision {args.precision} and --autocast {args.autocast} would mix two reduced-precision "
            "mechanisms in one row: time one at a time"
        )
    support = check_precision(args.precision, device)  # one line, exit 2: no bf16 hardware
    if args.autocast == "bf16":
        support = check_precision("bf16", device, option="--autocast")
    variants = requested_variants(
        args.channels_last, args.tf32, args.autocast, args.compile, args.freeze, cpu_fast, args.cuda_graphs,
        args.precision,
    )
    if args.tf32 and device.type != "cuda":
        raise TimingError("--tf32 applies to CUDA devices only")
    result = measure(
        args.model,
        size,
        device=str(device),
        runs=args.runs,
        warmup=args.warmup,
        variants=variants,
        caffemodel=args.weights,
        random_weights=args.random_weights,
        progress=not args.no_progress,
    )
    if support is not None:
        result["notes"].append(f"bf16 rows computed in {support.label}")
        result["notes"].extend(reduced_precision_speedups(result["rows"]))
    if args.json is None:
        sys.stdout.write(markdown_report(result))
    elif args.json == "-":
        json.dump(result, sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        from converters.atomic import atomic_write

        with atomic_write(args.json, "w") as out:
            json.dump(result, out, indent=1)
        sys.stdout.write(markdown_report(result))
    return 0


def main(argv: Sequence[str] | None = None, prog: str = PROG) -> int:
    """Run the command; 0 on success, 2 with one ``error:`` line on bad input, 130 on Ctrl-C.
    ``prog``: the command as typed, for its usage lines (``fcn-port timing`` passes its own)."""
    return cli.run(lambda: _main(argv, prog))


if __name__ == "__main__":
    sys.exit(main())
