"""First forward pass against the next ones, each net in a fresh Python process (issue 20: "first
call as fast as the next"; nothing per shape that costs more than a fraction of a forward).

For each net: ``load_caffe`` (the default CPU graph, weights from the net's files as a user loads
them), then forward passes 1, 2 and 3 on the same seeded input. The table gives the load, the first
pass, the median of the next two and their ratio, plus the first pass at a second input size where
the net takes one (a new shape: what a user feeding photos of several sizes meets). voc-fcn8s is
the deploy net of ``converters.fcn.nets`` at 500x500 (second size 375x500); the others are
``../shared/caffe-zoo`` deploy nets with the seeded weights and inputs of ``tests/zoo.py`` (their
declared size only). The calibration of the default graph's convolutions is kept per machine
(``converters/graph/speed.py``); each child gets an empty cache folder, so the load includes it.

Not run in CI: ``python benchmarks/first_call.py [--net voc-fcn8s,resnet50,...] [--threads 2]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_NETS = "voc-fcn8s,resnet50,inception_v3,densenet121,mobilenet_ssd"


def _child(name: str, folder: str, zoo: str, threads: int) -> None:
    sys.path.insert(0, str(REPO))
    import torch

    torch.set_num_threads(threads)
    sys.path.insert(0, str(REPO / "benchmarks"))
    from forward_cpu import net_files

    from converters import load_caffe
    from eval.timing import synthetic_input

    prototxt, caffemodel, feeds = net_files(name, (500, 500), Path(folder), Path(zoo))
    started = time.perf_counter()
    net = load_caffe(prototxt, caffemodel)
    load = time.perf_counter() - started
    inputs = {k: torch.from_numpy(v) for k, v in feeds.items()}
    passes = []
    with torch.inference_mode():
        for _ in range(3):
            started = time.perf_counter()
            net(**inputs)
            passes.append(time.perf_counter() - started)
        other = None
        if name == "voc-fcn8s":  # a fully convolutional net: a photo of another size
            started = time.perf_counter()
            net(data=synthetic_input(375, 500))
            other = time.perf_counter() - started
    print(json.dumps({"load": load, "passes": passes, "other_size": other}))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--net", default=DEFAULT_NETS, help=f"nets, comma-separated (default {DEFAULT_NETS})")
    zoo = str(REPO.parent / "shared" / "caffe-zoo")
    parser.add_argument("--zoo", default=zoo, help="the caffe-zoo folder")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(args.child[0], args.child[1], args.zoo, args.threads)
        return 0
    print("| net | load s | first pass s | next passes s | first / next | first pass at a new size s |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in args.net.split(","):
        with tempfile.TemporaryDirectory(prefix="first-call-") as folder:
            env = {**os.environ, "FCN_PORT_CACHE": str(Path(folder) / "cache")}
            command = [sys.executable, __file__, "--zoo", args.zoo, "--threads", str(args.threads)]
            out = subprocess.run(
                [*command, "--child", name, folder, args.zoo], capture_output=True, text=True, env=env
            )
            if out.returncode != 0:
                print(f"| {name} | failed: {out.stderr.strip().splitlines()[-1:]} |||||")
                continue
            result = json.loads(out.stdout.strip().splitlines()[-1])
            first, later = result["passes"][0], statistics.median(result["passes"][1:])
            other = result["other_size"]
            print(
                f"| {name} | {result['load']:.2f} | {first:.3f} | {later:.3f} | {first / later:.2f} | "
                f"{'-' if other is None else f'{other:.3f}'} |"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
