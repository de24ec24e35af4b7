"""Time and extra peak memory of loading the 538 MB FCN-8s caffemodel into a PyTorch module,
beside a raw read of the file, on a warm and on a cold page cache (issue 20's "loading at disk speed").

Writes (unless ``--path`` exists) a caffemodel with the official voc-fcn8s blob shapes and seeded
values (``benchmarks/parse_caffemodel.py`` makes it) and the voc-fcn8s deploy prototxt, then runs
each measurement in a fresh Python process, round robin, ``--repeat`` times:

- raw read: ``open(path, "rb").read()``;
- ``load_caffe(prototxt, caffemodel)``: the default (fast CPU graph) and ``optimize=False``;
- ``load_converted`` of the same weights written by ``caffe2torch`` (``.safetensors``, 513 MB: the
  net's parameters only), default graph (its cold runs drop that file's pages);
- with ``--baseline DIR`` (another checkout, e.g. ``git worktree add DIR <commit>``), the same two
  with that checkout's code, in the same round robin: a before/after table from one run;
- warm page cache only (``--no-tools`` skips them): ``python -m converters.caffe2torch PROTOTXT
  CAFFEMODEL -o OUT.safetensors --no-check`` (run in-process through its ``main``), the same with
  its self-check, and OpenCV dnn ``readNetFromCaffe`` when ``cv2`` (< 5) imports.

Warm: the file was just read whole. Cold: the file's pages are dropped from the page cache right
before the process starts: ``posix_fadvise(POSIX_FADV_DONTNEED)`` on the file (the default,
``--drop file``: this file only, so jobs sharing the machine keep their cache), or the kernel's
whole cache with ``--drop global`` (``sync; echo 1 > /proc/sys/vm/drop_caches``, root only; falls
back to the file's pages). The table says which was done and how much of the file was still
resident after the drop (``mincore``).

The "code warmed" rows build the net once on the meta device first (in the same process, before
the clock starts), so they leave out what a first build costs however the weights are read (first
calls into the graph code; torch's lazy import of sympy, about 1 s, which a load no longer
triggers). The default graph calibrates its convolutions once per machine and weights and
keeps the answers in ``calibration.json`` in the cache folder (``converters/graph/speed.py``):
every child uses one scratch cache folder, filled by an untimed load before the rounds, so the
default rows are a user's every load after the first; the "first load on this machine" row gives
each run an empty cache folder, so it calibrates.

"Extra peak" is the process's peak RSS (``VmHWM``) minus its RSS after the imports, so the
interpreter and torch themselves are not counted; "x file" divides it by the file's size, "x raw
read" divides a time by the raw read's median on the same cache. Prints a Markdown table of medians.

Not run in CI: ``python benchmarks/load_caffemodel.py [--repeat 3] [--path FILE] [--baseline DIR]``.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import json
import mmap
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# label -> (mode, runs on a cold cache too)
MODES = {
    "raw read (`f.read()`)": ("raw", True),
    "**load_caffe** (default: fast CPU graph)": ("load_caffe", True),
    "load_caffe(optimize=False)": ("load_caffe_plain", True),
    "load_caffe, its code warmed (a meta build first)": ("load_caffe_warmed", True),
    "load_caffe(optimize=False), its code warmed": ("load_caffe_plain_warmed", True),
    "load_caffe, first load on this machine (no kept calibration)": ("load_caffe_uncalibrated", True),
    "load_converted of the same weights converted (.safetensors, 513 MB)": ("load_converted", True),
}
BASELINE_MODES = {
    "baseline: load_caffe (default)": ("load_caffe", True),
    "baseline: load_caffe(optimize=False)": ("load_caffe_plain", True),
    "baseline: load_caffe, its code warmed": ("load_caffe_warmed", True),
}
TOOL_MODES = {
    "caffe2torch -> .safetensors, --no-check": ("caffe2torch", False),
    "caffe2torch -> .safetensors, with its self-check": ("caffe2torch_check", False),
    "OpenCV dnn readNetFromCaffe": ("opencv", False),
}


def _status(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def _child(mode: str, prototxt: str, caffemodel: str, scratch: str, repo: str) -> None:
    sys.path.insert(0, repo)
    if mode == "opencv":
        try:
            import cv2
        except ImportError:
            print(json.dumps({"skipped": "cv2 is not importable"}))
            return
    elif mode != "raw":
        import torch  # noqa: F401  (imported before the baseline)

        from converters import load_caffe, load_converted
        from converters.caffe2torch import main as caffe2torch
    if mode.endswith("_warmed"):  # first-use costs (torch's lazy imports, ...) paid before the clock
        load_caffe(prototxt, None, device="meta")
        mode = mode.removesuffix("_warmed")
    base = _status("VmRSS")
    start = time.perf_counter()
    if mode == "raw":
        with open(caffemodel, "rb") as handle:
            handle.read()
    elif mode == "load_caffe":
        load_caffe(prototxt, caffemodel)
    elif mode == "load_caffe_plain":
        load_caffe(prototxt, caffemodel, optimize=False)
    elif mode == "load_converted":
        load_converted(_converted(scratch))
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


def _converted(scratch: str) -> str:
    return os.path.join(scratch, "converted.safetensors")


def _measure(mode: str, prototxt: Path, caffemodel: Path, scratch: str, repo: Path) -> dict:
    cache = Path(scratch) / "cache"  # the calibrations the default rows read (kept by the warm-up)
    if mode.endswith("_uncalibrated"):
        cache = Path(tempfile.mkdtemp(dir=scratch, prefix="empty-cache-"))
        mode = mode.removesuffix("_uncalibrated")
    out = subprocess.run(
        [sys.executable, __file__, "--child", mode, str(prototxt), str(caffemodel), scratch, str(repo)],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "FCN_PORT_CACHE": str(cache)},
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def _warm(path: Path) -> None:
    with open(path, "rb") as handle:
        while handle.read(1 << 24):
            pass


def resident_fraction(path: Path) -> float | None:
    """The share of the file's pages in the page cache (``mincore``), or ``None`` where unknown."""
    name = ctypes.util.find_library("c")
    size = path.stat().st_size
    if name is None or size == 0:
        return None
    libc = ctypes.CDLL(name, use_errno=True)
    pages = -(-size // mmap.PAGESIZE)
    vector = (ctypes.c_ubyte * pages)()
    with open(path, "rb") as handle:
        mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_COPY)  # nothing faulted in
    try:
        anchor = ctypes.c_char.from_buffer(mapped)
        code = libc.mincore(ctypes.c_void_p(ctypes.addressof(anchor)), ctypes.c_size_t(size), vector)
        del anchor
    finally:
        mapped.close()
    if code != 0:
        return None
    return sum(v & 1 for v in vector) / pages


def drop_cache(path: Path, how: str) -> str:
    """Drop ``path`` from the page cache; say how (``global`` asks the kernel to drop all of it)."""
    if how == "global":
        try:
            os.sync()
            with open("/proc/sys/vm/drop_caches", "w") as control:
                control.write("1\n")
            return "the whole page cache (`echo 1 > /proc/sys/vm/drop_caches`)"
        except OSError:
            pass  # not root, or a read-only /proc/sys: the file's pages at least
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fdatasync(fd)  # dirty pages cannot be dropped
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    fallback = " (`/proc/sys/vm/drop_caches` was not writable)" if how == "global" else ""
    return f"the file's pages (`posix_fadvise(DONTNEED)`){fallback}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--path", type=Path, help="caffemodel to use (written if it does not exist)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement (median shown)")
    parser.add_argument("--baseline", type=Path, help="another checkout whose load_caffe is timed alongside")
    parser.add_argument(
        "--drop",
        choices=("file", "global"),
        default="file",
        help="cold cache: drop the file's pages (default) or the whole page cache (root)",
    )
    parser.add_argument("--no-cold", action="store_true", help="warm page cache only")
    parser.add_argument("--no-tools", action="store_true", help="skip caffe2torch and OpenCV")
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(*args.child)
        return 0
    if args.repeat < 1:
        print("error: --repeat must be at least 1", file=sys.stderr)
        return 2
    if args.baseline is not None and not (args.baseline / "converters" / "__init__.py").is_file():
        print(f"error: --baseline {args.baseline}: no converters/ package there", file=sys.stderr)
        return 2
    jobs: dict[str, tuple[str, bool, Path]] = {label: (*spec, REPO) for label, spec in MODES.items()}
    if args.baseline is not None:
        jobs.update({label: (*spec, args.baseline.resolve()) for label, spec in BASELINE_MODES.items()})
    if not args.no_tools:
        jobs.update({label: (*spec, REPO) for label, spec in TOOL_MODES.items()})
    caches = ("warm",) if args.no_cold else ("warm", "cold")
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
        subprocess.run(
            [sys.executable, "-m", "converters.caffe2torch", str(prototxt), str(caffemodel), "-o",
             _converted(scratch), "--no-check"],
            check=True, cwd=REPO, capture_output=True,
        )  # fmt: skip
        for repo in {spec[2] for spec in jobs.values()}:  # untimed: keeps calibrations, as a first load
            _measure("load_caffe", prototxt, caffemodel, scratch, repo)
        runs: dict[tuple[str, str], list[dict]] = {}
        dropped, resident = "", []
        for _ in range(args.repeat):  # round robin: load from other jobs hits every mode alike
            for cache in caches:
                for label, (mode, cold_too, repo) in jobs.items():
                    if cache == "cold" and not cold_too:
                        continue
                    if cache == "warm":
                        _warm(caffemodel)
                    elif mode == "load_converted":
                        drop_cache(Path(_converted(scratch)), args.drop)
                    else:
                        dropped = drop_cache(caffemodel, args.drop)
                        resident.append(resident_fraction(caffemodel))
                    runs.setdefault((label, cache), []).append(
                        _measure(mode, prototxt, caffemodel, scratch, repo)
                    )
    load = os.getloadavg()[0]
    print(
        f"File: {size:,} bytes ({size / 1e6:.0f} MB); {os.cpu_count()} CPUs; median of {args.repeat} runs, "
        f"each in a fresh process, round robin; load average (1 min) at the end {load:.1f}."
    )
    if "cold" in caches:
        known = [r for r in resident if r is not None]
        left = f"; at most {max(known):.1%} of the file resident after a drop (mincore)" if known else ""
        print(f"Cold cache: dropped {dropped} before each cold run{left}.")
    if args.baseline is not None:
        print(f"Baseline: the code of {args.baseline}.")
    print()
    print("| what | cache | time (s) | x raw read | extra peak RSS (MB) | x file size |")
    print("|---|---|---:|---:|---:|---:|")
    raw_label = next(iter(MODES))
    raw = {cache: statistics.median(r["seconds"] for r in runs[(raw_label, cache)]) for cache in caches}
    for cache in caches:
        for label in jobs:
            results = runs.get((label, cache))
            if results is None:
                continue
            if any("skipped" in r for r in results):
                print(f"| {label} | {cache} | - | - | - | - | ({results[0]['skipped']})")
                continue
            seconds = statistics.median(r["seconds"] for r in results)
            peak = statistics.median(r["extra_peak"] for r in results)
            print(
                f"| {label} | {cache} | {seconds:.2f} | {seconds / raw[cache]:.2f} | {peak / 1e6:.0f} "
                f"| {peak / size:.2f} |"
            )
    print()
    print(
        "Targets (issue 20): load_caffe within 1.2x the raw read and 1.1x the file in extra peak memory, "
        "warm and cold; caffe2torch within 1.5x the file in peak memory (issue 11)."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
