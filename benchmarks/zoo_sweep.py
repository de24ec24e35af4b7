"""Public Caffe nets, converted as a user would (default ``load_caffe``, only the input sizes given),
against a reference, with OpenCV dnn's result beside ours: prints a table and writes JSON.

Per net: whether fcn-port converts and runs it, the reference (real BVLC Caffe; the fork oracle
for PSPNet/SegNet/ShuffleNet types; for py-faster-rcnn nets Caffe up to the proposals plus
py-faster-rcnn's own proposal code plus OpenCV's ROIPooling head; OpenCV dnn where no Caffe build
runs the net), and the largest error over the compared blobs (every output and the blob before a
final Softmax/Sigmoid) relative to the reference's largest value, for fcn-port and for OpenCV dnn.
"Exact" is within 1e-4. Weights and inputs are seeded (``tests/zoo.py``).

The 66 nets beyond ``../shared/caffe-zoo`` that the README's figures come from are listed in
``benchmarks/zoo_sweep_nets.tsv`` (repository, path, commit, sha256, input sizes): a folder per net
holding the file as ``deploy.prototxt`` and a ``SOURCE.txt`` with those fields reproduces them.

Needs the oracle environment of tools/README.md (pycaffe, the fork oracle, opencv-python-headless
< 5, torch) and py-faster-rcnn's git directory in PY_FASTER_RCNN_GIT for its nets:

    GLOG_minloglevel=2 PYTHONPATH=. PY_FASTER_RCNN_GIT=... /work/oracle/venv/bin/python \\
        benchmarks/zoo_sweep.py ../shared/caffe-zoo /work/sweep-zoo --json sweep.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tools")]

EXACT = 1e-4


def relative_error(got: dict, want: dict) -> float:
    """Largest |got - want| over the blobs, relative to each blob's largest |want| (inf when a blob is
    missing or its shape differs)."""
    worst = 0.0
    for blob, expected in want.items():
        value = got.get(blob)
        if value is None:
            return float("inf")
        value = np.asarray(value, np.float32)
        if value.size == expected.size:
            value = value.reshape(expected.shape)
        if value.shape != expected.shape:
            return float("inf")
        scale = max(float(np.abs(expected).max()), 1e-6)
        worst = max(worst, float(np.abs(value - expected).max()) / scale)
    return worst


def sweep(folder: Path) -> dict:
    import tempfile

    import make_zoo_fixtures as oracle
    import torch

    from converters import load_caffe, write_weights
    from tests import zoo

    row: dict = {"net": folder.name, "family": "", "ours": "", "reference": None, "ours_error": None,
                 "opencv": "", "opencv_error": None}  # fmt: skip
    for line in (folder / "SOURCE.txt").read_text().splitlines():
        if line.startswith("family:"):
            row["family"] = line.split(":", 1)[1].strip()
    try:
        net, shapes = zoo.load(folder)
        weights = zoo.draw_weights(net, shapes)
        inputs = zoo.draw_inputs(shapes)
        blobs = zoo.compared_blobs(net, shapes)
        started = time.perf_counter()
        graph = load_caffe(net, weights, input_shapes=shapes, outputs=blobs)
        with torch.no_grad():
            got = graph(**{b: torch.from_numpy(v) for b, v in inputs.items() if b in graph.caffe.inputs})
        ours = {b: v.numpy() for b, v in got.items()}
        row["ours"] = f"runs ({time.perf_counter() - started:.1f} s)"
    except Exception as exc:  # noqa: BLE001  (a row of the table, not a crash of the sweep)
        row["ours"] = f"fails: {type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
        return row
    try:
        reference, name, notes = oracle.reference_outputs(folder, net, shapes, weights, inputs, blobs)
    except Exception as exc:  # noqa: BLE001
        reference, name = f"{type(exc).__name__}: {exc}", None
        notes = {"error": traceback.format_exc(limit=1)}
    row["reference"] = name
    row["notes"] = notes
    if isinstance(reference, str):
        row["reference"] = f"none ({'; '.join(f'{k}: {str(v)[:80]}' for k, v in notes.items())})"
    else:
        reference = {b: reference[b] for b in blobs}  # a composite reference also gives its rois
        row["ours_error"] = relative_error(ours, reference)
    if name and name.startswith("OpenCV"):
        row["opencv"], row["opencv_error"] = "is the reference", 0.0
        return row
    with tempfile.TemporaryDirectory() as tmp:
        caffemodel = Path(tmp) / "w.caffemodel"
        write_weights(weights, caffemodel)
        prototxt, _ = oracle.opencv_prototxt(folder, Path(tmp))
        result = oracle.run_opencv(prototxt, caffemodel, inputs, blobs)
    if isinstance(result, str):
        row["opencv"] = f"fails: {result[:160]}"
    else:
        given = [b for b in blobs if b in result]
        row["opencv"] = "runs" if len(given) == len(blobs) else f"runs (gives {', '.join(given)} only)"
        if not isinstance(reference, str):
            row["opencv_error"] = relative_error(result, {b: reference[b] for b in given})
    return row


def _cell(error: float | None) -> str:
    if error is None:
        return "-"
    return "exact" if error <= EXACT else ("wrong shape" if error == float("inf") else f"{error:.1e}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="+", type=Path, help="zoo folders (a net a folder, SOURCE.txt)")
    parser.add_argument("--json", type=Path, help="write the rows here")
    parser.add_argument("--only", nargs="*", default=None, help="net names to run")
    parser.add_argument("--merge", action="store_true", help="replace only these nets' rows in --json")
    args = parser.parse_args()
    nets = sorted(
        (p for folder in args.folders for p in folder.iterdir() if (p / "deploy.prototxt").exists()),
        key=lambda p: p.name,
    )
    if args.only:
        nets = [p for p in nets if p.name in args.only]
    rows = []
    print("| net | family | fcn-port | reference | fcn-port error | OpenCV dnn | OpenCV error |")
    print("|---|---|---|---|---|---|---|")
    for path in nets:
        row = sweep(path)
        rows.append(row)
        print(
            f"| {row['net']} | {row['family']} | {row['ours']} | {row['reference'] or '-'} | "
            f"{_cell(row['ours_error'])} | {row['opencv'] or '-'} | {_cell(row['opencv_error'])} |",
            flush=True,
        )
        if args.json:
            kept = json.loads(args.json.read_text()) if args.merge and args.json.exists() else []
            done = {r["net"] for r in rows}
            merged = sorted([r for r in kept if r["net"] not in done] + rows, key=lambda r: r["net"])
            args.json.write_text(json.dumps(merged, indent=1, default=str) + "\n")
    referenced = [r for r in rows if r["ours_error"] is not None]
    ours = sum(1 for r in referenced if r["ours_error"] <= EXACT)
    theirs = sum(1 for r in referenced if r["opencv_error"] is not None and r["opencv_error"] <= EXACT)
    print(f"\n{len(rows)} nets, {len(referenced)} with a reference: exact fcn-port {ours}, OpenCV {theirs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
