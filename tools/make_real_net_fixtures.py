#!/usr/bin/env python3
"""Reference outputs for the real nets of ``tests/real_nets.py`` (public definitions not in
``../shared``, written by our own code): real Caffe runs each with the seeded weights and inputs of
that module and this writes ``tests/fixtures/real_nets/<net>/`` (``io.npz``: the inputs and
outputs of each forward pass; ``case.json``). Run from the repository root with the oracle's
Python (tools/README.md)::

    GLOG_minloglevel=2 PYTHONPATH=/work/oracle/brocolli-caffe-9.0.2/python:. \\
        /work/oracle/venv/bin/python tools/make_real_net_fixtures.py [NET ...]

``c3d`` needs the fork oracle (``PYTHONPATH=/work/oracle/forks/src/python:.``), which is also a
BVLC Caffe: it makes every net's fixtures.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("GLOG_minloglevel", "2")

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from converters import format_message, parse_text  # noqa: E402
from converters.atomic import atomic_write  # noqa: E402
from tests.real_nets import (  # noqa: E402
    C3D_INPUT,
    FIXTURES,
    SEED,
    c3d_input,
    c3d_sport1m,
    lrcn_steps,
    lrcn_word_to_preds,
)
from tests.zoo import draw_weights  # noqa: E402

ORACLE = "BVLC Caffe 1.0 as packaged in the brocolli-caffe 9.0.2 sdist, CPU build, OpenBLAS 1 thread"
FORK_ORACLE = (
    "the fork oracle (tools/build_fork_oracle.sh): brocolli-caffe 9.0.2 plus C3D v1.0's Convolution3D and "
    "Pooling3D compiled from C3D's sources, CPU build, OpenBLAS 1 thread"
)


def run_steps(caffe, net_text: str, weights: dict, steps: list[dict], blobs: list[str]) -> dict:
    """Caffe's values of ``blobs`` after each forward pass of one net (its state carried)."""
    with tempfile.TemporaryDirectory() as tmp:
        proto = Path(tmp) / "net.prototxt"
        proto.write_text(net_text)
        net = caffe.Net(str(proto), caffe.TEST)
    for layer, arrays in weights.items():
        for blob, array in zip(net.params[layer], arrays, strict=True):
            blob.data[...] = array
    out = {}
    for k, inputs in enumerate(steps):
        for blob, value in inputs.items():
            net.blobs[blob].reshape(*value.shape)
            net.blobs[blob].data[...] = value
            out[f"step{k}/input:{blob}"] = value
        net.forward()
        for blob in blobs:
            out[f"step{k}/output:{blob}"] = np.array(net.blobs[blob].data, np.float32)
    return out


def make_lrcn(caffe) -> None:
    net = lrcn_word_to_preds()
    steps = lrcn_steps()
    shapes = {blob: value.shape for blob, value in steps[0].items()}
    weights = draw_weights(net, shapes, SEED)
    blobs = ["lstm1", "lstm2", "predict", "probs"]
    arrays = run_steps(caffe, format_message(net), weights, steps, blobs)
    folder = FIXTURES / "lrcn"
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_write(folder / "io.npz") as handle:
        np.savez_compressed(handle, **arrays)
    info = {
        "net": "LRCN captioning language model (BVLC/caffe examples/coco_caption/"
        "lrcn_word_to_preds.deploy.prototxt), written by tests/real_nets.py",
        "oracle": ORACLE,
        "seed": SEED,
        "steps": len(steps),
        "compared": blobs,
        "notes": [
            "one word per forward pass; step 0 starts the captions (cont 0), steps 1 and 2 continue "
            "them: the LSTMs start from the state the previous pass left",
        ],
    }
    with atomic_write(folder / "case.json") as handle:
        handle.write((json.dumps(info, indent=1) + "\n").encode())
    print("lrcn:", {k: v.shape for k, v in arrays.items() if k.startswith("step0/output")})


def make_c3d(caffe) -> None:
    if "C3DConvolution3D" not in caffe.layer_type_list():
        raise SystemExit(
            "c3d: run with the fork oracle's pycaffe (PYTHONPATH=/work/oracle/forks/src/python:.)"
        )
    ours = parse_text(c3d_sport1m())
    weights = draw_weights(ours, {"data": C3D_INPUT}, SEED)
    blobs = ["pool5", "fc6-1", "fc8-1", "prob"]
    arrays = run_steps(caffe, c3d_sport1m(oracle=True), weights, [{"data": c3d_input()}], blobs)
    folder = FIXTURES / "c3d"
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_write(folder / "io.npz") as handle:
        np.savez_compressed(handle, **arrays)
    info = {
        "net": "C3D's Sports-1M feature extractor (facebook/C3D C3D-v1.0/examples/c3d_feature_extraction/"
        "prototxt/c3d_sport1m_feature_extractor_frm.prototxt), written by tests/real_nets.py in C3D "
        "v1.0's V1 form",
        "oracle": FORK_ORACLE,
        "seed": SEED,
        "steps": 1,
        "compared": blobs,
        "notes": [
            "Caffe ran the same net as V2 layers with the oracle's C3D type names (c3d_sport1m(oracle=True))"
        ],
    }
    with atomic_write(folder / "case.json") as handle:
        handle.write((json.dumps(info, indent=1) + "\n").encode())
    print("c3d:", {k: v.shape for k, v in arrays.items() if "output" in k})


NETS = {"lrcn": make_lrcn, "c3d": make_c3d}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("nets", nargs="*", help=f"nets to regenerate (default: all of {', '.join(NETS)})")
    args = parser.parse_args()
    unknown = [n for n in args.nets if n not in NETS]
    if unknown:
        print(f"error: unknown net(s) {', '.join(unknown)}; known: {', '.join(NETS)}", file=sys.stderr)
        return 2
    import caffe

    caffe.set_mode_cpu()
    for name in args.nets or NETS:
        NETS[name](caffe)
    return 0


if __name__ == "__main__":
    sys.exit(main())
