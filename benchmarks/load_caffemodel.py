"""Time and extra peak memory of loading the 538 MB FCN-8s caffemodel into a PyTorch module,
beside a raw read of the file and OpenCV dnn's reader.

Writes (unless ``--path`` exists) a caffemodel with the official voc-fcn8s blob shapes and seeded
values (``benchmarks/parse_caffemodel.py`` makes it) and the voc-fcn8s deploy prototxt, warms the
page cache, then runs each measurement in a fresh Python process, round robin, ``--repeat`` times:

- raw read: ``open(path, "rb").read()``;
- ``load_caffe(prototxt, caffemodel)``: the default (fast CPU graph) and ``optimize=False``;
- ``python -m converters.caffe2torch PROTOTXT CAFFEMODEL -o OUT.safetensors --no-check`` (run
  in-process through its ``main``), and the same with its self-check;
- OpenCV dnn ``readNetFromCaffe`` when ``cv2`` (< 5) imports (see ``forward_cpu.py`` for a venv).

"Extra peak" is the process's peak RSS (``VmHWM``) minus its RSS after the imports, so the
interpreter, torch and cv2 themselves are not counted. Prints a Markdown table of medians.

Not run in CI: ``python benchmarks/load_caffemodel.py [--repeat 3] [--path FILE]``.
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

MODES = {
    "raw read (`f.read()`)": "raw",
    "**load_caffe** (default: fast CPU graph)": "load_caffe",
    "load_caffe(optimize=False)": "load_caffe_plain",
    "caffe2torch -> .safetensors, --no-check": "caffe2torch",
    "caffe2torch -> .safetensors, with its self-check": "caffe2torch_check",
    "OpenCV dnn readNetFromCaffe": "opencv",
}


def _status(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def _child(mode: str, prototxt: str, caffemodel: str, scratch: str) -> None:
    sys.path.insert(0, str(REPO))
    if mode == "opencv":
        try:
            import cv2
        except ImportError:
            print(json.dumps({"skipped": "cv2 is not importable"}))
            return
    elif mode != "raw":
        import torch  # noqa: F401  (imported before the baseline)

        from converters import load_caffe
        from converters.caffe2torch import main as caffe2torch
    base = _status("VmRSS")
    start = time.perf_counter()
    if mode == "raw":
        with open(caffemodel, "rb") as handle:
            handle.read()
    elif mode == "load_caffe":
        load_caffe(prototxt, caffemodel)
    elif mode == "load_caffe_plain":
        load_caffe(prototxt, caffemodel, optimize=False)
    elif mode in ("caffe2torch", "caffe2torch_check"):
        out = os.path.join(scratch, f"{os.getpid()}.safetensors")
        check = [] if mode == "caffe2torch_check" else ["--no-check"]
        code = caffe2torch([prototxt, caffemodel, "-o", out, *check])
        if code != 0:
            raise SystemExit(f"caffe2torch exited {code}")
        os.remove(out)
    elif mode == "opencv":
        cv2.dnn.readNetFromCaffe(prototxt, caffemodel)
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "extra_peak": _status("VmHWM") - base}))


def _measure(mode: str, prototxt: Path, caffemodel: Path, scratch: str) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", mode, str(prototxt), str(caffemodel), scratch],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--path", type=Path, help="caffemodel to use (written if it does not exist)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement (median shown)")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(*args.child)
        return 0
    if args.repeat < 1:
        print("error: --repeat must be at least 1", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="fcn8s-load-") as scratch:
        caffemodel = args.path or Path(scratch) / "fcn8s-sized.caffemodel"
        if not caffemodel.exists():
            print(f"writing {caffemodel} ...", file=sys.stderr)
            writer = REPO / "benchmarks" / "parse_caffemodel.py"
            subprocess.run([sys.executable, str(writer), "--write", str(caffemodel)], check=True)
        prototxt = Path(scratch) / "deploy.prototxt"
        subprocess.run(
            [
                sys.executable,
                "-c",
                "import sys; sys.path.insert(0, sys.argv[1]); from converters import write_prototxt; "
                "from converters.fcn.nets import net_definition; "
                "write_prototxt(net_definition('voc-fcn8s', 'deploy'), sys.argv[2])",
                str(REPO),
                str(prototxt),
            ],
            check=True,
        )
        size = caffemodel.stat().st_size
        with open(caffemodel, "rb") as handle:  # warm the page cache
            while handle.read(1 << 24):
                pass
        runs: dict[str, list[dict]] = {label: [] for label in MODES}
        for _ in range(args.repeat):  # round robin: load from other jobs hits every mode alike
            for label, mode in MODES.items():
                runs[label].append(_measure(mode, prototxt, caffemodel, scratch))
    load = os.getloadavg()[0]
    print(
        f"File: {size:,} bytes ({size / 1e6:.0f} MB); {os.cpu_count()} CPUs; median of {args.repeat} runs, "
        f"each in a fresh process, warm page cache; load average (1 min) at the end {load:.1f}."
    )
    print()
    print("| what | time (s) | x raw read | extra peak RSS (MB) | x file size |")
    print("|---|---:|---:|---:|---:|")
    raw = statistics.median(r["seconds"] for r in runs["raw read (`f.read()`)"])
    for label, results in runs.items():
        if any("skipped" in r for r in results):
            print(f"| {label} | - | - | - | - | ({results[0]['skipped']})")
            continue
        seconds = statistics.median(r["seconds"] for r in results)
        peak = statistics.median(r["extra_peak"] for r in results)
        print(f"| {label} | {seconds:.2f} | {seconds / raw:.2f} | {peak / 1e6:.0f} | {peak / size:.2f} |")
    print()
    print(
        "Targets (issue 11): load_caffe within 2x the raw read and 1.3x the file in extra peak memory; "
        "caffe2torch within 1.5x the file in peak memory."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
