"""CPU forward time of our graph against onnxruntime (on our own ONNX export of the same net) and
OpenCV dnn: voc-fcn8s at 500x500, a ResNet-50 classifier and an SSD detector (MobileNet-SSD) from
``../shared/caffe-zoo``.

Every implementation runs the same net with the same weights: voc-fcn8s is the deploy definition
of ``converters.fcn.nets`` with fan-in-scaled random weights; a zoo net is its ``deploy.prototxt``
with the seeded weights and inputs of ``tests/zoo.py``. Both are written to a temporary prototxt
and caffemodel: our graph loads them with ``converters.load_caffe``, OpenCV with
``cv2.dnn.readNetFromCaffe``, onnxruntime runs ``converters.export_onnx`` of our plain graph (so
its graph keeps the pad-100 border our default graph skips). The passes alternate (ours,
onnxruntime, OpenCV, ours, ...) so that load from other jobs on a shared machine hits all alike.
Before each table a line says which kernel each convolution of the default graph ran
(ours or NNPACK's where its calibration kept and raced it, else the one PyTorch picked for that
layer's input at that thread count, and how many run their BatchNorm / Scale in one pass). A zoo
net's ``DetectionOutput`` (MobileNet-SSD's NMS, which ONNX export refuses) is left out for every
implementation: the tables time the net up to its bottoms.
For each thread count of ``--threads`` (default ``2,1``: torch's ``set_num_threads``,
onnxruntime's ``intra_op_num_threads``, OpenCV's ``setNumThreads``) it prints a Markdown table:
median and minimum of at least ``--runs`` passes after one warm-up each (a small net gets more),
the ratio to onnxruntime, the largest difference of the output from our plain fp32 graph, and each
pass's CPU time.

onnxruntime: the benchmark installs it itself where it is missing, with what our ONNX export needs
(``onnx``, ``onnxscript``): ``pip install --target`` into ``~/.cache/fcn-port/bench-site``, used from
there after the environment's own packages (``--no-install``: leave its rows out instead; offline,
the install fails with a note and its rows are left out). OpenCV is optional
(``opencv-python-headless<5``: version 5 dropped the Caffe reader). Keep it out of the project's
environment; e.g. a separate venv that also sees the project's packages:

    python -m venv /work/bench-venv
    /work/bench-venv/bin/pip install --no-deps "opencv-python-headless<5"
    echo "$PWD/.venv/lib/python3.11/site-packages" > /work/bench-venv/lib/python3.11/site-packages/main.pth
    /work/bench-venv/bin/python benchmarks/forward_cpu.py

Not run in CI: ``python benchmarks/forward_cpu.py [--net voc-fcn8s,resnet50,mobilenet_ssd]
[--runs 5] [--size 500x500] [--threads 2,1] [--variants ...] [--no-install]``.

Earlier figures (voc-fcn8s only, before onnxruntime was added, and with the earlier default that
ran every eligible convolution on NNPACK's Winograd kernels; the default now keeps NNPACK only
where its calibration finds it more precise, see ``converters/graph/speed.py``):

Measured on the project's 2-core machine (AMD EPYC, AVX2; torch 2.13 CPU, OpenCV 4.14, 500x500,
5 interleaved runs; 2026-12-02, other jobs holding the load average at 11-12, so absolute times
are 3-4x a quiet run's and only same-run ratios mean much):

| implementation | median s | min s | x OpenCV | CPU s | max abs diff vs plain | argmax agreement |
|---|---|---|---|---|---|---|
| ours, plain (``optimize=False``) | 28.90 | 22.47 | 1.32 | 4.53 | 0 | 100% |
| ours, default (border skipping + NNPACK + in-place ReLU) | 15.81 | 12.68 | 0.72 | 2.59 | 3.2e-4 | 100% |
| ours, NNPACK only (``optimize_for_cpu(border=False)``) | 18.56 | 15.04 | 0.85 | 3.17 | 3.2e-4 | 99.999% |
| OpenCV dnn | 21.89 | 19.24 | 1.00 | 4.01 | 4.3e-4 | 99.999% |

A quiet run on 2026-12-02 (load 1.4; OpenCV from the oracle's venv): plain 1.605 s (0.97x), default
0.957 s (0.58x; CPU 1.85 s), NNPACK only 1.141 s (0.69x), OpenCV 1.662 s (CPU 3.18 s).
An earlier run in the loaded conditions gave default 0.75x, NNPACK only 0.79x, plain 1.13x OpenCV; a
later one at load 6-8: default 4.40 s (0.76x; CPU 2.21 s), NNPACK only 4.74 s (0.82x), plain 7.71 s
(1.33x), OpenCV 5.79 s (CPU 3.75 s).
A quiet run on 2026-11-25 (load about 1): plain 4.28 s, NNPACK only 2.33 s, channels_last 3.65 s,
OpenCV 3.51 s, BVLC Caffe 4.50 s (the oracle of tools/, OpenBLAS, 2 threads; run separately);
inductor with frozen weights (``compile_frozen``) 3.28 s. |score| reaches 96, so the differences
are below 4e-6 of the largest score; the parity tests hold the default graph to Caffe's outputs.

With OpenCV from the oracle's venv instead of a separate one:
``PYTHONPATH=.venv/lib/python3.11/site-packages /work/oracle/venv/bin/python benchmarks/forward_cpu.py``.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from converters import load_caffe, optimize_for_cpu, write_prototxt, write_weights  # noqa: E402
from converters.fcn.nets import net_definition  # noqa: E402
from converters.graph import heap  # noqa: E402
from converters.graph.precision import cpu_model  # noqa: E402
from eval.timing import parse_size, synthetic_input  # noqa: E402

VARIANTS = ("plain", "default", "nnpack_only", "channels_last", "compile", "compile_frozen")
"""``plain``: ``load_caffe(..., optimize=False)``, fp32 NCHW (the reference); ``default``: what
``load_caffe`` returns on the CPU (border skipping + BatchNorm/Scale in one pass + calibrated kernels +
in-place ReLU); ``nnpack_only`` (its old name kept): ``optimize_for_cpu(border=False)``; the others are
the plain graph under PyTorch's options."""

#: Seconds of rest before each timed pass (at most four passes' time): the worker threads of the
#: implementation that ran last (onnxruntime's spin after a run by default, and OpenMP's) would
#: otherwise still hold the cores at the start of the next one's pass and slow it down.
PAUSE = 0.5
#: Each implementation runs at least ``--runs`` passes, and as many more (up to MAX_PASSES) as fill
#: MIN_SECONDS of our plain graph's time.
MIN_SECONDS = 2.0
MAX_PASSES = 40
ZOO = REPO.parent / "shared" / "caffe-zoo"
NOT_EXPORTED = {"DetectionOutput"}
SITE = Path.home() / ".cache" / "fcn-port" / "bench-site"

Feeds = dict[str, np.ndarray]
Runner = Callable[[Feeds], np.ndarray]


def export_weights(module: torch.nn.Module) -> dict[str, list[np.ndarray]]:
    """The module's parameters as Caffe blobs per layer (``module.caffe.parameter_blobs`` order)."""
    state = module.state_dict()
    return {
        layer: [state[key].detach().cpu().numpy().copy() for key in keys]
        for layer, keys in module.caffe.parameter_blobs.items()
    }


def net_files(name: str, size: tuple[int, int], folder: Path, zoo: Path) -> tuple[Path, Path, Feeds]:
    """``name``'s prototxt and caffemodel written into ``folder``, and its input feeds."""
    prototxt, caffemodel = folder / f"{name}.prototxt", folder / f"{name}.caffemodel"
    if name == "voc-fcn8s":
        definition = net_definition("voc-fcn8s", "deploy")
        write_prototxt(definition, prototxt)
        write_weights(export_weights(load_caffe(definition, None, optimize=False)), caffemodel)
        return prototxt, caffemodel, {"data": synthetic_input(*size).numpy()}
    if not (zoo / name / "deploy.prototxt").is_file():
        raise SystemExit(f"error: no {name}/deploy.prototxt under {zoo} (give --zoo, or a net it holds)")
    from tests import zoo as zoo_nets

    net, shapes = zoo_nets.load(zoo / name)
    # an SSD's DetectionOutput (NMS) cannot be exported to ONNX: every implementation runs the net
    # up to its bottoms (the convolutional body, where the time goes)
    net.set("layer", [layer for layer in net.getall("layer") if layer.get("type") not in NOT_EXPORTED])
    write_prototxt(net, prototxt)
    write_weights(zoo_nets.draw_weights(net, shapes), caffemodel)
    return prototxt, caffemodel, zoo_nets.draw_inputs(shapes)


def ours(prototxt: Path, caffemodel: Path, variant: str, output: str) -> Runner:
    """Our graph under ``variant`` as a function of the feeds returning blob ``output``."""
    if variant == "default":  # what every user and evaluator gets on the CPU
        net = load_caffe(prototxt, caffemodel)
    else:
        net = load_caffe(prototxt, caffemodel, optimize=False)
    if variant == "nnpack_only":
        net = optimize_for_cpu(net, border=False)
    elif variant == "channels_last":
        net = copy.deepcopy(net).to(memory_format=torch.channels_last)
    elif variant == "compile":
        net = torch.compile(net)
    elif variant == "compile_frozen":  # inductor with weights frozen as constants: oneDNN prepacked
        import torch._inductor.config as inductor_config  # convolutions with fused ReLU

        inductor_config.freezing = True
        net = torch.compile(copy.deepcopy(net).to(memory_format=torch.channels_last))

    def run(feeds: Feeds) -> np.ndarray:
        inputs = {k: torch.from_numpy(v) for k, v in feeds.items()}
        if variant in ("channels_last", "compile_frozen"):
            inputs = {k: v.contiguous(memory_format=torch.channels_last) if v.dim() == 4 else v
                      for k, v in inputs.items()}  # fmt: skip
        with torch.inference_mode():
            return net(**inputs)[output].contiguous().numpy()

    return run


#: What onnxruntime's rows need: the runtime, and the packages of our ONNX export (``torch.onnx``'s).
ONNX_PACKAGES = ("onnxruntime", "onnx", "onnxscript")


def import_onnxruntime(install: bool) -> Any:
    """onnxruntime, the missing ones of :data:`ONNX_PACKAGES` installed first into :data:`SITE` where
    ``install``; ``None`` where it cannot be had (not installed, or the install failed)."""
    if SITE.is_dir() and str(SITE) not in sys.path:
        sys.path.append(str(SITE))  # after the environment's own packages: they win
    missing = [name for name in ONNX_PACKAGES if importlib.util.find_spec(name) is None]
    if missing and install:
        print(f"# installing {', '.join(missing)} into {SITE} ...", file=sys.stderr)
        done = subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--target", str(SITE), *missing], check=False
        )
        if done.returncode != 0:
            print("# the install failed (offline?): onnxruntime's rows are left out", file=sys.stderr)
        if str(SITE) not in sys.path:
            sys.path.append(str(SITE))
        importlib.invalidate_caches()
    if any(importlib.util.find_spec(name) is None for name in ONNX_PACKAGES):
        return None
    import onnxruntime

    return onnxruntime


def onnxruntime_runner(
    module: Any, prototxt: Path, caffemodel: Path, folder: Path, output: str, threads: int
) -> Runner:
    """onnxruntime on ``converters.export_onnx`` of our plain graph, ``threads`` intra-op threads."""
    from converters import export_onnx

    path = folder / f"{prototxt.stem}.onnx"
    if not path.exists():
        export_onnx(load_caffe(prototxt, caffemodel, optimize=False), path, check=False)
    options = module.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = module.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]

    def run(feeds: Feeds) -> np.ndarray:
        return session.run([output if output in names else names[0]], feeds)[0]

    return run


def opencv(prototxt: Path, caffemodel: Path, output: str, threads: int) -> Runner | None:
    """OpenCV dnn's forward of the same files, or ``None`` when cv2 (< 5) is not importable."""
    try:
        import cv2
    except ImportError:
        return None
    cv2.setNumThreads(threads)
    net = cv2.dnn.readNetFromCaffe(str(prototxt), str(caffemodel))
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)

    def run(feeds: Feeds) -> np.ndarray:
        for name, value in feeds.items():
            net.setInput(np.ascontiguousarray(value), name)
        return net.forward(output)

    return run


def _output(prototxt: Path) -> str:
    """The blob the tables compare: the net's last output (``score`` for the FCNs)."""
    net = load_caffe(prototxt, None, optimize=False, device="meta")
    return "score" if "score" in net.caffe.outputs else net.caffe.outputs[-1]


def table(name: str, runners: dict[str, Runner], feeds: Feeds, runs: int, threads: int) -> list[str]:
    """Time ``runners`` alternately on ``feeds``; the Markdown rows of one table."""
    torch.set_num_threads(threads)
    outputs = {label: run(feeds) for label, run in runners.items()}  # warm-up (and compilation)
    started = time.perf_counter()
    runners["ours (plain)"](feeds)
    once = time.perf_counter() - started
    # a small net gets more passes: at 20-30 ms a pass, three medians would be mostly noise
    passes = max(runs, min(MAX_PASSES, math.ceil(MIN_SECONDS / max(once, 1e-3))))
    times: dict[str, list[float]] = {label: [] for label in runners}
    cpu: dict[str, list[float]] = {label: [] for label in runners}
    rest = min(PAUSE, 4 * once)
    for _ in range(passes):
        for label, run in runners.items():
            time.sleep(rest)
            start, start_cpu = time.perf_counter(), time.process_time()
            run(feeds)
            times[label].append(time.perf_counter() - start)
            cpu[label].append(time.process_time() - start_cpu)
    reference = outputs["ours (plain)"]
    ort = next((label for label in runners if label.startswith("onnxruntime")), None)
    ort_median = statistics.median(times[ort]) if ort else None
    lines = [
        f"### {name}, {threads} thread(s), {passes} passes each",
        "",
        "| implementation | median s | min s | x onnxruntime (median) | CPU s (median) "
        "| max abs diff vs ours (plain) | argmax agreement |",
        "|---|---|---|---|---|---|---|",
    ]
    for label in runners:
        out = outputs[label]
        if out.shape != reference.shape:
            diff, agree = f"shape {out.shape} vs {reference.shape}", "-"
        else:
            diff = f"{float(np.abs(out - reference).max()):.3g}"
            axis = 1 if out.ndim > 1 else 0
            agree = f"{100 * float((out.argmax(axis) == reference.argmax(axis)).mean()):.3f}%"
        median, fastest = statistics.median(times[label]), min(times[label])
        ratio = f"{median / ort_median:.2f}" if ort_median else "-"
        used = statistics.median(cpu[label])
        lines.append(f"| {label} | {median:.3f} | {fastest:.3f} | {ratio} | {used:.2f} | {diff} | {agree} |")
    lines += ["", f"max |output| {float(np.abs(reference).max()):.3g}", ""]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("--net", default="voc-fcn8s,resnet50,mobilenet_ssd",
                        help="nets, comma-separated: voc-fcn8s and folders of --zoo (default: the three)")
    parser.add_argument("--zoo", type=Path, default=ZOO, help=f"the caffe-zoo folder (default {ZOO})")
    parser.add_argument("--runs", type=int, default=5, help="timed passes per implementation (default 5)")
    parser.add_argument("--size", default="500x500", help="voc-fcn8s's input HxW (default 500x500)")
    parser.add_argument(
        "--variants",
        default="plain,default",
        help=f"our graph's variants, comma-separated from {', '.join(VARIANTS)} (default plain,default)",
    )
    parser.add_argument("--threads", default="2,1", help="thread counts, comma-separated (default 2,1)")
    parser.add_argument("--no-install", action="store_true",
                        help=f"where onnxruntime (or onnx, onnxscript for the export) is missing, leave its "
                             f"rows out instead of installing them into {SITE}")
    args = parser.parse_args(argv)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in VARIANTS]
    try:
        thread_counts = [int(t) for t in args.threads.split(",") if t.strip()]
    except ValueError:
        thread_counts = []
    if unknown or args.runs < 1 or not thread_counts or min(thread_counts) < 1:
        message = f"unknown variant {unknown[0]!r}" if unknown else "--runs and --threads must be >= 1"
        print(f"error: {message}", file=sys.stderr)
        return 2
    if "plain" not in variants:
        variants.insert(0, "plain")
    size = parse_size(args.size)
    ort = import_onnxruntime(not args.no_install)

    print(f"# CPU forward, torch {torch.__version__}, onnxruntime {ort.__version__ if ort else 'absent'}")
    print(f"# at least {args.runs} interleaved runs each (small nets: up to {MAX_PASSES}, "
          f"{MIN_SECONDS:g} s of passes); CPU: {cpu_model()}")  # fmt: skip
    print()
    with tempfile.TemporaryDirectory() as tmp:
        for name in [n.strip() for n in args.net.split(",") if n.strip()]:
            prototxt, caffemodel, feeds = net_files(name, size, Path(tmp), args.zoo)
            output = _output(prototxt)
            shown = f"{name} ({'x'.join(map(str, next(iter(feeds.values())).shape))}, output {output})"
            for threads in thread_counts:
                torch.set_num_threads(threads)  # PyTorch's kernel choice may depend on it
                print(f"# {name}, {threads} thread(s): {kernel_summary(prototxt, caffemodel, feeds)}")
                runners: dict[str, Runner] = {
                    f"ours ({v})": ours(prototxt, caffemodel, v, output) for v in variants
                }
                if ort is not None:
                    runners[f"onnxruntime {ort.__version__}"] = onnxruntime_runner(
                        ort, prototxt, caffemodel, Path(tmp), output, threads
                    )
                cv_run = opencv(prototxt, caffemodel, output, threads)
                if cv_run is not None:
                    import cv2

                    runners[f"OpenCV dnn {cv2.__version__}"] = cv_run
                print("\n".join(table(shown, runners, feeds, args.runs, threads)))
                sys.stdout.flush()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"load average (1 min) at the end: {load:.1f}")
    if heap.kept():
        print("C heap: freed memory kept from the default graph's first forward on (converters.graph.heap), "
              f"for every row after it, plain included ({heap.KEEP_ENV}=0 turns it off)")
    if ort is None:
        print("onnxruntime: not importable (nor installed): its rows are left out")
    return 0


def kernel_summary(prototxt: Path, caffemodel: Path, feeds: Feeds) -> str:
    """Which kernel each 2-D convolution of the default graph runs on ``feeds``
    (``converters.kernel_choices``), as counts per kernel, naming the layers on a kernel other than
    PyTorch's own and counting those whose BatchNorm / Scale run in one pass after them and those
    that run their ReLU."""
    from collections import Counter

    from converters.graph.border import BorderPlanner
    from converters.graph.speed import FAST_KERNELS, kernel_choices

    inputs = {k: torch.from_numpy(v) for k, v in feeds.items()}
    net = load_caffe(prototxt, caffemodel)
    choices = kernel_choices(net, inputs)
    folded = sum(text.endswith(" in one pass") for text in choices.values())
    fused = sum(text.endswith(" + its ReLU in the layer") for text in choices.values())
    kernels = {name: text.split(" ")[0] for name, text in choices.items()}
    counts = Counter(kernels.values())
    ours = [f"{name} ({kernel})" for name, kernel in kernels.items() if kernel in FAST_KERNELS]
    shown = ", ".join(f"{count} {kernel}" for kernel, count in counts.most_common())
    fast = f"; not PyTorch's: {', '.join(ours)}" if ours else ""
    folding = f"; {folded} with their BatchNorm/Scale in one pass after them" if folded else ""
    relus = f"; {fused} with their ReLU inside them" if fused else ""
    first = next(iter(inputs.values()))
    border = "".join(
        f"; border skipping: {m.describe(int(first.shape[-2]), int(first.shape[-1]))}"
        for m in net.modules() if isinstance(m, BorderPlanner)
    )  # fmt: skip
    return f"default graph's convolutions: {shown}{fast}{folding}{relus}{border}"


if __name__ == "__main__":
    sys.exit(main())
