"""Reference outputs for the public zoo (``../shared/caffe-zoo``): each deploy prototxt run as it is,
with the seeded weights and inputs of ``tests/zoo.py``, by real BVLC Caffe (brocolli-caffe, the
oracle of tools/README.md) where it runs the net, else by OpenCV dnn (``cv2.dnn.readNetFromCaffe``,
the same prototxt and a caffemodel we write). Writes ``tests/fixtures/zoo/<net>/io.npz`` (the
compared blobs) and ``case.json`` (reference, shapes, why the other one was not used); nothing of
the third-party prototxts is committed.

    GLOG_minloglevel=2 PYTHONPATH=/work/oracle/brocolli-caffe-9.0.2/python:. \\
        /work/oracle/venv/bin/python tools/make_zoo_fixtures.py [NET ...] [--opencv-only]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from converters import write_weights  # noqa: E402
from tests import zoo  # noqa: E402

ZOO = ROOT.parent / "shared" / "caffe-zoo"


def _caffe(
    prototxt: Path, caffemodel: Path, inputs: dict, blobs: list[str], queue: multiprocessing.Queue
) -> None:
    try:
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
        import caffe

        caffe.set_mode_cpu()
        net = caffe.Net(str(prototxt), str(caffemodel), caffe.TEST)
        for blob, value in inputs.items():
            net.blobs[blob].reshape(*value.shape)
            net.blobs[blob].data[...] = value
        net.reshape()
        net.forward()
        queue.put({b: np.array(net.blobs[b].data, np.float32) for b in blobs})
    except BaseException as exc:  # noqa: BLE001
        queue.put(f"{type(exc).__name__}: {exc}")


def run_caffe(prototxt: Path, caffemodel: Path, inputs: dict, blobs: list[str]) -> dict | str:
    """Caffe in a child process (a failed CHECK aborts the process)."""
    queue: multiprocessing.Queue = multiprocessing.Queue()
    child = multiprocessing.Process(target=_caffe, args=(prototxt, caffemodel, inputs, blobs, queue))
    child.start()
    result = None
    while result is None:  # read before joining: a large result fills the pipe until it is read
        try:
            result = queue.get(timeout=5)
        except Exception:  # noqa: BLE001  (queue.Empty)
            if not child.is_alive():
                break
    child.join(60)
    if result is None:
        return f"Caffe stopped (exit code {child.exitcode})"
    return result


def run_opencv(prototxt: Path, caffemodel: Path, inputs: dict, blobs: list[str]) -> dict | str:
    try:
        import cv2

        cv2.setNumThreads(1)
        net = cv2.dnn.readNetFromCaffe(str(prototxt), str(caffemodel))
        for blob, value in inputs.items():
            net.setInput(value, blob)
        values = net.forward(blobs)
        return {b: np.array(v, np.float32) for b, v in zip(blobs, values, strict=True)}
    except Exception as exc:  # noqa: BLE001
        return f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1][:300]}"


def opencv_prototxt(folder: Path, out: Path) -> tuple[Path, str | None]:
    """The net as OpenCV runs it: py-faster-rcnn's Python proposal layer given as OpenCV's own
    ``Proposal`` with the same settings (OpenCV cannot run Python layers); other nets unchanged."""
    from converters import read_prototxt
    from converters.caffe.message import Message
    from converters.caffe.text import format_message
    from converters.layers.forks.rcnn import FASTER_RCNN_RPN

    net = read_prototxt(folder / "deploy.prototxt")
    changed = None
    for layer in net.getall("layer"):
        python = layer.get("python_param")
        if str(layer.get("type")) == "Python" and str(python.get("module")) == "rpn.proposal_layer":
            text = str(python.get("param_str"))
            stride = int(text.split(":")[1].split(",")[0]) if "'feat_stride'" in text else 16
            pre, post, threshold, min_size = FASTER_RCNN_RPN["TEST"]
            layer.set("type", "Proposal")
            layer.remove("python_param")
            layer.set("proposal_param", Message(
                "ProposalParameter", feat_stride=stride, base_size=16, min_size=int(min_size),
                ratio=[0.5, 1.0, 2.0], scale=[8.0, 16.0, 32.0], pre_nms_topn=pre, post_nms_topn=post,
                nms_thresh=threshold,
            ))  # fmt: skip
            changed = (
                f"layer '{layer.get('name')}' (Python rpn.proposal_layer) given to OpenCV as its Proposal "
                "layer with the same settings (feat_stride, ratios 0.5/1/2, scales 8/16/32, cfg.TEST)"
            )
    if changed is None:
        return folder / "deploy.prototxt", None
    path = out / "opencv.prototxt"
    path.write_text(format_message(net))
    return path, changed


def make(name: str, opencv_only: bool) -> str:
    folder = ZOO / name
    net, shapes = zoo.load(folder)
    weights = zoo.draw_weights(net, shapes)
    inputs = zoo.draw_inputs(shapes)
    blobs = zoo.compared_blobs(net, shapes)
    with tempfile.TemporaryDirectory() as tmp:
        caffemodel = Path(tmp) / "weights.caffemodel"
        write_weights(weights, caffemodel)
        notes = {}
        result: dict | str = "not tried"
        reference = None
        if not opencv_only:
            result = run_caffe(folder / "deploy.prototxt", caffemodel, inputs, blobs)
            reference = "BVLC Caffe 1.0 (brocolli-caffe 9.0.2), CPU"
            if isinstance(result, str):
                notes["caffe"] = result
        if isinstance(result, str):
            prototxt, changed = opencv_prototxt(folder, Path(tmp))
            if changed:
                notes["opencv_net"] = changed
            result = run_opencv(prototxt, caffemodel, inputs, blobs)
            import cv2

            reference = f"OpenCV dnn {cv2.__version__} (readNetFromCaffe)"
            if isinstance(result, str):
                notes["opencv"] = result
    if isinstance(result, str) or "opencv" in notes:
        return f"{name}: no reference ({notes})"
    out = zoo.FIXTURES / name
    out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out / "io.npz", **{f"output:{b}": v for b, v in result.items()})
    case = {
        "net": name,
        "reference": reference,
        "inputs": {b: list(s) for b, s in shapes.items()},
        "outputs": {b: list(v.shape) for b, v in result.items()},
        "seed": zoo.SEED,
        "not_used": notes,
    }
    (out / "case.json").write_text(json.dumps(case, indent=1) + "\n")
    return f"{name}: {reference}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("nets", nargs="*", help="zoo folder names (default: all)")
    parser.add_argument("--opencv-only", action="store_true", help="use OpenCV dnn as the reference")
    args = parser.parse_args()
    names = args.nets or sorted(p.name for p in ZOO.iterdir() if (p / "deploy.prototxt").exists())
    for name in names:
        print(make(name, args.opencv_only), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
