"""Full-width voc-fcn8s forward time on the CPU at 500x500: our graph against OpenCV dnn.

Both run the same net with the same random weights: the deploy definition of
``converters.fcn.nets`` and fan-in-scaled random weights are written to a temporary prototxt and
caffemodel; our graph loads them with ``converters.load_caffe``, OpenCV with
``cv2.dnn.readNetFromCaffe``. The passes alternate (ours, OpenCV, ours, ...) so that load from
other jobs on a shared machine hits both alike. Prints a Markdown table: median and minimum of
``--runs`` passes after one warm-up each, and the largest absolute difference of the ``score``
output from our plain fp32 graph, and each pass's CPU time (all threads; spin-waiting counts).

OpenCV is optional (``opencv-python-headless<5``: version 5 dropped the Caffe reader). Keep it out
of the project's environment; e.g. a separate venv that also sees the project's packages:

    python -m venv /work/bench-venv
    /work/bench-venv/bin/pip install --no-deps "opencv-python-headless<5"
    echo "$PWD/.venv/lib/python3.11/site-packages" > /work/bench-venv/lib/python3.11/site-packages/main.pth
    /work/bench-venv/bin/python benchmarks/forward_cpu.py

Not run in CI: ``python benchmarks/forward_cpu.py [--runs 5] [--size 500x500] [--variants ...]``.

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
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from converters import load_caffe, optimize_for_cpu, write_prototxt, write_weights  # noqa: E402
from converters.fcn.nets import net_definition  # noqa: E402
from eval.timing import parse_size, synthetic_input  # noqa: E402

VARIANTS = ("plain", "default", "nnpack_only", "channels_last", "compile", "compile_frozen")
"""``plain``: ``load_caffe(..., optimize=False)``, fp32 NCHW (the reference); ``default``: what
``load_caffe`` returns on the CPU (border skipping + NNPACK + in-place ReLU); ``nnpack_only``:
``optimize_for_cpu(border=False)``; the others are the plain graph under PyTorch's options."""


def export_weights(module: torch.nn.Module) -> dict[str, list[np.ndarray]]:
    """The module's parameters as Caffe blobs per layer (``module.caffe.parameter_blobs`` order)."""
    state = module.state_dict()
    return {
        layer: [state[key].detach().cpu().numpy().copy() for key in keys]
        for layer, keys in module.caffe.parameter_blobs.items()
    }


def ours(prototxt: Path, caffemodel: Path, variant: str) -> Callable[[torch.Tensor], np.ndarray]:
    """Our graph under ``variant`` as a function of the input tensor returning ``score``."""
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

    def run(x: torch.Tensor) -> np.ndarray:
        if variant in ("channels_last", "compile_frozen"):
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            return net(data=x)["score"].contiguous().numpy()

    return run


def opencv(prototxt: Path, caffemodel: Path) -> Callable[[torch.Tensor], np.ndarray] | None:
    """OpenCV dnn's forward of the same files, or ``None`` when cv2 (< 5) is not importable."""
    try:
        import cv2
    except ImportError:
        return None
    net = cv2.dnn.readNetFromCaffe(str(prototxt), str(caffemodel))
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)

    def run(x: torch.Tensor) -> np.ndarray:
        net.setInput(np.ascontiguousarray(x.numpy()))
        return net.forward("score")

    return run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="timed passes per implementation (default 5)")
    parser.add_argument("--size", default="500x500", help="input HxW (default 500x500)")
    parser.add_argument(
        "--variants",
        default="plain,default,nnpack_only",
        help=f"our graph's variants, comma-separated from {', '.join(VARIANTS)} "
        "(default plain,default,nnpack_only)",
    )
    parser.add_argument("--threads", type=int, default=None, help="threads for both (default: torch's)")
    args = parser.parse_args(argv)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown or args.runs < 1:
        message = f"unknown variant {unknown[0]!r}" if unknown else "--runs must be >= 1"
        print(f"error: {message}", file=sys.stderr)
        return 2
    if "plain" not in variants:
        variants.insert(0, "plain")
    height, width = parse_size(args.size)
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()

    with tempfile.TemporaryDirectory() as tmp:
        prototxt, caffemodel = Path(tmp) / "fcn8s.prototxt", Path(tmp) / "fcn8s.caffemodel"
        definition = net_definition("voc-fcn8s", "deploy")
        write_prototxt(definition, prototxt)
        write_weights(export_weights(load_caffe(definition, None, optimize=False)), caffemodel)
        runners: dict[str, Callable[[torch.Tensor], np.ndarray]] = {
            f"ours ({v})": ours(prototxt, caffemodel, v) for v in variants
        }
        cv_run = opencv(prototxt, caffemodel)
        if cv_run is not None:
            import cv2

            cv2.setNumThreads(threads)
            runners[f"OpenCV dnn {cv2.__version__}"] = cv_run
        x = synthetic_input(height, width)
        outputs = {name: run(x) for name, run in runners.items()}  # warm-up (and compilation)
        times: dict[str, list[float]] = {name: [] for name in runners}
        cpu: dict[str, list[float]] = {name: [] for name in runners}
        for _ in range(args.runs):
            for name, run in runners.items():
                start, start_cpu = time.perf_counter(), time.process_time()
                run(x)
                times[name].append(time.perf_counter() - start)
                cpu[name].append(time.process_time() - start_cpu)

    reference = outputs["ours (plain)"]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"# voc-fcn8s forward on the CPU, {height}x{width}, {threads} threads, torch {torch.__version__}")
    print(f"# {args.runs} interleaved runs each; load average 1 min after the runs: {load:.1f}")
    print()
    cv_name = next((n for n in runners if n.startswith("OpenCV")), None)
    cv_median = statistics.median(times[cv_name]) if cv_name else None
    print(
        "| implementation | median s | min s | x OpenCV (median) | CPU s (median, all threads) "
        "| max abs diff of score vs ours (plain) | argmax agreement |"
    )
    print("|---|---|---|---|---|---|---|")
    for name in runners:
        out = outputs[name]
        if out.shape != reference.shape:
            diff, agree = f"shape {out.shape} vs {reference.shape}", "-"
        else:
            diff = f"{float(np.abs(out - reference).max()):.3g}"
            agree = f"{100 * float((out.argmax(1) == reference.argmax(1)).mean()):.3f}%"
        median, fastest = statistics.median(times[name]), min(times[name])
        ratio = f"{median / cv_median:.2f}" if cv_median else "-"
        used = statistics.median(cpu[name])
        print(f"| {name} | {median:.3f} | {fastest:.3f} | {ratio} | {used:.2f} | {diff} | {agree} |")
    print()
    print(f"score magnitude: max |score| {float(np.abs(reference).max()):.3g} (random fan-in-scaled weights)")
    if cv_run is None:
        print(
            'OpenCV dnn: not importable here; install "opencv-python-headless<5" in a separate venv '
            "(see this script's docstring) and run the script with that venv's python"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
