"""Training speed of full-width FCN-8s at 500x500: our solver against real Caffe's, same net, same data.

Both run the official ``voc-fcn8s`` train net (``converters.fcn.nets``) with its Python data layer
replaced by an ``Input`` layer (``data`` 1x3xHxW, ``label`` 1x1xHxW), the official solver values
(SGD, momentum 0.99, ``base_lr`` 1e-14, weight decay 5e-4, ``iter_size`` 1), the same fan-in-scaled
random weights (bilinear upsampling, as training starts) and the same image and labels. Ours is
``converters.load_solver(...).step(feeds)``; Caffe's is ``caffe.SGDSolver(...).step(1)`` of the
oracle (``../shared/caffe-oracle.md``), run in its own process. Prints iterations/s (median over
``--iters`` after one warm-up iteration) and peak memory: resident set of the process for the CPU,
``torch.cuda.max_memory_allocated`` on a GPU (when one is available; Caffe's GPU build is not
part of the oracle).

    python benchmarks/train_speed.py [--iters 3] [--size 500x500] [--caffe-python PATH]

Not run in CI (one full-width iteration takes tens of seconds on a CPU).

Measured once on the project's shared 2-core machine (2026-12-02, torch 2.13 CPU, 2 threads, 500x500,
2 timed iterations each after a warm-up, run one after the other under a load average of about 12
from other jobs, so both are slower than on a quiet machine):

| solver | it/s | s/it (median) | peak MiB |
|---|---|---|---|
| ours, CPU | 0.022 | 44.85 | 3524 (RSS) |
| BVLC Caffe, CPU (oracle, OpenBLAS) | 0.011 | 91.96 | 6195 (RSS) |

First losses 730685 (ours) and 730916 (Caffe): same net, weights and data, different Dropout
masks. At 64x64 (same load) the order was reversed (ours 20 s, Caffe 7 s per iteration): a profile
puts 4.5 s of ours in fc6's backward (oneDNN, 4096x512x7x7 kernel on a 3x3 output; without oneDNN
the same convolution's forward + backward took half the time), 1.3 s in the update. No GPU was
available to measure.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from converters import write_prototxt, write_weights  # noqa: E402
from converters.caffe.message import Ident, Message  # noqa: E402
from converters.caffe.netdef import layer_type  # noqa: E402
from converters.caffe.text import format_message  # noqa: E402
from converters.fcn.nets import net_definition  # noqa: E402
from converters.graph.builder import build_graph  # noqa: E402
from converters.layers.fillers import bilinear_kernel  # noqa: E402
from converters.train import load_solver  # noqa: E402
from reproduce.training.recipe import solver_parameter  # noqa: E402

ORACLE = Path("/work/oracle")
CAFFE_PYTHON = ORACLE / "venv" / "bin" / "python"
CAFFE_PATH = ORACLE / "brocolli-caffe-9.0.2" / "python"
MODEL = "voc-fcn8s"


def input_net(model: str, height: int, width: int) -> Message:
    """The model's train net with ``Input`` layers in place of its Python data layer."""
    net = net_definition(model, "train")
    layers = []
    for layer in net.getall("layer"):
        if layer_type(layer) == "Python":
            tops = list(layer.getall("top"))
            shapes = [Message("BlobShape", dim=[1, 1 if t == "label" else 3, height, width]) for t in tops]
            layer = Message(
                "LayerParameter", name="input", type="Input", top=tops,
                input_param=Message("InputParameter", shape=shapes),
            )  # fmt: skip
        layers.append(layer)
    net.set("layer", layers)
    return net


def make_case(folder: Path, height: int, width: int) -> dict[str, np.ndarray]:
    """Write ``train.prototxt``, ``solver.prototxt``, ``init.caffemodel``, ``feeds.npz``; return the feeds."""
    net = input_net(MODEL, height, width)
    write_prototxt(net, folder / "train.prototxt")
    param = solver_parameter(MODEL, nets=False)
    param.set("train_net", str(folder / "train.prototxt"))  # Caffe reads it from the working directory
    param.remove("snapshot")
    param.set("snapshot_prefix", str(folder / "snap"))
    param.set("solver_mode", Ident("CPU"))
    (folder / "solver.prototxt").write_text(format_message(param))
    graph = build_graph(net, phase="TRAIN", with_loss=True, seed=0)  # fan-in scaled normals
    blobs: dict[str, list[np.ndarray]] = {}
    state = graph.state_dict()
    for layer, keys in graph.caffe.parameter_blobs.items():
        blobs[layer] = [
            state[k].numpy().reshape(s)
            for k, s in zip(keys, graph.caffe.parameter_shapes[layer], strict=True)
        ]
        if "up" in layer:
            blobs[layer] = [bilinear_kernel(blobs[layer][0].shape).numpy()]
    write_weights(blobs, folder / "init.caffemodel")
    rng = np.random.default_rng(0)
    feeds = {
        "data": (rng.standard_normal((1, 3, height, width)) * 60).astype(np.float32),
        "label": rng.integers(0, 21, (1, 1, height, width)).astype(np.float32),
    }
    feeds["label"][:, :, :20] = 255
    np.savez(folder / "feeds.npz", **feeds)
    return feeds


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def time_ours(folder: Path, feeds: dict[str, np.ndarray], iters: int, device: str) -> dict:
    solver = load_solver(folder / "solver.prototxt", str(folder / "init.caffemodel"), device=device)
    x = {k: torch.from_numpy(v).to(device) for k, v in feeds.items()}
    times, losses = [], []
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    for i in range(iters + 1):
        start = time.perf_counter()
        losses.append(solver.step(x))
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        if i:
            times.append(time.perf_counter() - start)
    memory = torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else peak_rss_mib()
    return {"seconds": times, "losses": losses, "peak_mib": memory}


CAFFE_SCRIPT = textwrap.dedent(
    """
    import json, resource, sys, time
    import numpy as np
    import caffe
    folder, iters = sys.argv[1], int(sys.argv[2])
    caffe.set_mode_cpu()
    solver = caffe.SGDSolver(folder + "/solver.prototxt")
    solver.net.copy_from(folder + "/init.caffemodel")
    feeds = np.load(folder + "/feeds.npz")
    for name in ("data", "label"):
        solver.net.blobs[name].data[...] = feeds[name]
    times, losses = [], []
    for i in range(iters + 1):
        start = time.perf_counter()
        solver.step(1)
        if i:
            times.append(time.perf_counter() - start)
        losses.append(float(solver.net.blobs["loss"].data))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": times, "losses": losses, "peak_mib": peak}))
    """
)


def time_caffe(folder: Path, iters: int, python: Path) -> dict | None:
    if not python.is_file():
        return None
    env = dict(os.environ, GLOG_minloglevel="2", PYTHONPATH=str(CAFFE_PATH))
    done = subprocess.run(
        [str(python), "-c", CAFFE_SCRIPT, str(folder), str(iters)], env=env, capture_output=True, text=True
    )
    if done.returncode:
        print(f"Caffe failed: {done.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])


def _row(name: str, result: dict | None) -> str:
    if result is None:
        return f"| {name} | - | - | - | not available |"
    median = statistics.median(result["seconds"])
    return (
        f"| {name} | {1 / median:.3f} | {median:.2f} | {result['peak_mib']:.0f} | "
        f"first losses {', '.join(f'{v:.6g}' for v in result['losses'][:2])} |"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=3, help="timed iterations (after one warm-up)")
    parser.add_argument("--size", default="500x500", help="WIDTHxHEIGHT")
    parser.add_argument("--caffe-python", type=Path, default=CAFFE_PYTHON, help="the oracle's Python")
    parser.add_argument("--no-caffe", action="store_true")
    args = parser.parse_args(argv)
    width, height = (int(v) for v in args.size.lower().split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        feeds = make_case(folder, height, width)
        caffe = None if args.no_caffe else time_caffe(folder, args.iters, args.caffe_python)
        ours = time_ours(folder, feeds, args.iters, "cpu")
        gpu = time_ours(folder, feeds, args.iters, "cuda") if torch.cuda.is_available() else None
    threads = torch.get_num_threads()
    print(
        f"{MODEL} training at {width}x{height}, batch 1, official SGD values; {args.iters} timed iterations "
        f"after one warm-up; torch {torch.__version__}, {threads} CPU threads; load {os.getloadavg()[0]:.1f}"
    )
    print()
    print("| solver | it/s | s/it (median) | peak MiB | |")
    print("|---|---|---|---|---|")
    print(_row("ours, CPU", ours))
    print(_row("BVLC Caffe, CPU (oracle, OpenBLAS)", caffe))
    print(_row(f"ours, {torch.cuda.get_device_name() if gpu else 'GPU'}", gpu))
    return 0


if __name__ == "__main__":
    sys.exit(main())
