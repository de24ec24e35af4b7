#!/usr/bin/env python3
"""Regenerate tests/fixtures/solvers/test_nets/: what real Caffe's solver prints when it tests.

Our code writes the net and solver definitions and draws the initial weights and the HDF5 data
from a seeded numpy generator. Real Caffe (pycaffe, the oracle of tools/README.md) saves the
initial weights, loads them into its solver and runs ``solver.solve()`` in a subprocess whose glog
output goes to stderr; the ``Iteration N, Testing net (#k)``, ``Test loss`` and ``Test net output``
lines it prints, and its ``display`` lines (smoothed loss, ``Train net output``, ``lr``), are parsed
into ``expected.json``. Those values are Caffe's own, printed with six
significant digits. Run from the repository root with the oracle's Python::

    PYTHONPATH=/work/oracle/brocolli-caffe-9.0.2/python /work/oracle/venv/bin/python \\
        tools/make_solver_test_fixtures.py
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "tests" / "fixtures" / "solvers" / "test_nets"
ORACLE = "BVLC Caffe 1.0 as packaged in the brocolli-caffe 9.0.2 sdist, CPU build, OpenBLAS 1 thread"

NET = """name: "tested"
layer { name: "data" type: "HDF5Data" top: "data" top: "label" include { phase: TRAIN }
  hdf5_data_param { source: "train.txt" batch_size: 2 } }
layer { name: "data" type: "HDF5Data" top: "data" top: "label" include { phase: TEST stage: "val" }
  hdf5_data_param { source: "val.txt" batch_size: 3 } }
layer { name: "data" type: "HDF5Data" top: "data" top: "label" include { phase: TEST stage: "small" }
  hdf5_data_param { source: "small.txt" batch_size: 1 } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 2 decay_mult: 0 }
  convolution_param { num_output: 4 kernel_size: 3 pad: 1 } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "score" type: "Convolution" bottom: "conv1" top: "score"
  convolution_param { num_output: 3 kernel_size: 1 } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "score" bottom: "label" top: "loss"
  loss_param { ignore_label: 255 } }
layer { name: "accuracy" type: "Accuracy" bottom: "score" bottom: "label" top: "accuracy"
  include { phase: TEST } accuracy_param { ignore_label: 255 } }
layer { name: "probe" type: "Pooling" bottom: "score" top: "probe" include { phase: TEST stage: "small" }
  pooling_param { pool: AVE global_pooling: true } }
"""

SOLVER = """net: "net.prototxt"
test_iter: 3
test_iter: 2
test_state { stage: "val" }
test_state { stage: "small" }
test_interval: 4
test_compute_loss: true
base_lr: 0.5
momentum: 0.9
weight_decay: 0.0005
lr_policy: "fixed"
max_iter: 8
display: 3
average_loss: 2
snapshot_after_train: false
snapshot_prefix: "snap/train"
solver_mode: CPU
"""

FILES = {"train.txt": {"part0.h5": 6, "part1.h5": 4}, "val.txt": {"val.h5": 7}, "small.txt": {"small.h5": 3}}


def _write_inputs(folder: Path, rng: np.random.RandomState) -> None:
    import h5py

    for listing, files in FILES.items():
        for name, rows in files.items():
            with h5py.File(folder / name, "w") as f:
                f.create_dataset("data", data=rng.normal(0, 1, (rows, 3, 5, 6)).astype(np.float32))
                labels = rng.randint(0, 3, (rows, 1, 5, 6)).astype(np.float32)
                labels[rng.uniform(size=labels.shape) < 0.1] = 255
                f.create_dataset("label", data=labels)
        (folder / listing).write_text("".join(f"{name}\n" for name in files))


RUN = """
import caffe
caffe.set_mode_cpu()
solver = caffe.get_solver("solver.prototxt")
solver.net.copy_from("init.caffemodel")
solver.solve()
"""

_TESTING = re.compile(r"Iteration (\d+), Testing net \(#(\d+)\)")
_LOSS = re.compile(r"Test loss: (\S+)")
_OUTPUT = re.compile(r"Test net output #(\d+): (\S+) = (\S+)(?: \(\* (\S+) = (\S+) loss\))?")
_DISPLAY = re.compile(r"Iteration (\d+)(?: \(.*\))?, loss = (\S+)")
_TRAIN = re.compile(r"Train net output #(\d+): (\S+) = (\S+)")
_RATE = re.compile(r"Iteration (\d+), lr = (\S+)")


def _parse_display(log: str) -> list[dict]:
    shown: list[dict] = []
    for line in log.splitlines():
        if m := _DISPLAY.search(line):
            shown.append({"iter": int(m.group(1)), "smoothed_loss": float(m.group(2)), "outputs": []})
        elif (m := _TRAIN.search(line)) and shown:
            shown[-1]["outputs"].append(
                {"index": int(m.group(1)), "name": m.group(2), "value": float(m.group(3))}
            )
        elif (m := _RATE.search(line)) and shown and int(m.group(1)) == shown[-1]["iter"]:
            shown[-1]["lr"] = float(m.group(2))
    return shown


def _parse(log: str) -> list[dict]:
    tests: list[dict] = []
    for line in log.splitlines():
        if m := _TESTING.search(line):
            tests.append({"iter": int(m.group(1)), "net": int(m.group(2)), "outputs": []})
        elif (m := _LOSS.search(line)) and tests:
            tests[-1]["loss"] = float(m.group(1))
        elif (m := _OUTPUT.search(line)) and tests:
            entry = {"index": int(m.group(1)), "name": m.group(2), "value": float(m.group(3))}
            if m.group(4):
                entry["loss_weight"] = float(m.group(4))
            tests[-1]["outputs"].append(entry)
    return tests


def main() -> int:
    import caffe

    caffe.set_mode_cpu()
    rng = np.random.RandomState(7)
    staging = Path(tempfile.mkdtemp(prefix=".test_nets", dir=OUT.parent))
    try:
        (staging / "net.prototxt").write_text(NET)
        (staging / "solver.prototxt").write_text(SOLVER)
        _write_inputs(staging, rng)
        cwd = os.getcwd()
        os.chdir(staging)
        try:
            net = caffe.Net("net.prototxt", caffe.TRAIN)
            for blobs in net.params.values():
                for blob in blobs:
                    fan_in = int(np.prod(blob.data.shape[1:])) if blob.data.ndim > 1 else 1
                    blob.data[...] = rng.normal(0, np.sqrt(2.0 / fan_in), blob.data.shape)
            net.save("init.caffemodel")
            env = dict(os.environ, GLOG_logtostderr="1", GLOG_minloglevel="0", OPENBLAS_NUM_THREADS="1")
            done = subprocess.run([sys.executable, "-c", RUN], env=env, capture_output=True, text=True)
            if done.returncode:
                raise SystemExit(done.stderr[-3000:])
        finally:
            os.chdir(cwd)
        tests = _parse(done.stderr)
        assert [(t["iter"], t["net"]) for t in tests] == [(i, n) for i in (0, 4, 8) for n in (0, 1)], tests
        shown = _parse_display(done.stderr)
        assert [d["iter"] for d in shown] == [0, 3, 6], shown
        expected = {"oracle": ORACLE, "tests": tests, "display": shown}
        (staging / "expected.json").write_text(json.dumps(expected, indent=1) + "\n")
        shutil.rmtree(staging / "snap", ignore_errors=True)
        if OUT.exists():
            shutil.rmtree(OUT)
        staging.rename(OUT)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    print(json.dumps(tests, indent=1)[:1500])
    return 0


if __name__ == "__main__":
    sys.exit(main())
