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
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from converters import write_weights  # noqa: E402
from tests import zoo  # noqa: E402

ZOO = ROOT.parent / "shared" / "caffe-zoo"


FORK_ORACLE = Path("/work/oracle/forks/src/python")  # tools/build_fork_oracle.sh
BVLC_ORACLE = Path("/work/oracle/brocolli-caffe-9.0.2/python")
FORK_TYPES = {"BN", "Interp", "ShuffleChannel", "Axpy", "Reorg"}


def caffe_prototxt(folder: Path, shapes: dict, out: Path, fork: bool) -> Path:
    """The deploy net as our own text for Caffe: the layers Caffe instantiates in TEST (loss layers
    dropped), the data layers replaced by one Input layer of the compared sizes (Caffe loads the
    weights at the declared size), and for the fork oracle its renamed types (PSPNet's BN as PSPBN,
    SegNet's BN and Upsample as SegNetBN / SegNetUpsample with their renamed parameters)."""

    from converters import read_prototxt
    from converters.graph.builder import select_layers

    layers = select_layers(read_prototxt(folder / "deploy.prototxt"))
    path = out / ("fork.prototxt" if fork else "caffe.prototxt")
    path.write_text(layers_text(layers, shapes, fork))
    return path


def layers_text(layers: list, shapes: dict, fork: bool = False) -> str:
    """``layers`` as a prototxt whose inputs are one Input layer of ``shapes`` (data layers left out)."""
    import re

    from converters.caffe.text import format_message
    from converters.graph.inputs import is_source

    dims = " ".join("shape { " + " ".join(f"dim: {d}" for d in s) + " }" for s in shapes.values())
    tops = " ".join(f'top: "{b}"' for b in shapes)
    text = [f'layer {{ name: "zoo_input" type: "Input" {tops} input_param {{ {dims} }} }}']
    for layer in layers:
        if is_source(layer):
            continue
        body = format_message(layer)
        kind = str(layer.get("type"))
        if fork and kind == "BN":
            segnet = "bn_mode" in layer.get("bn_param") or "scale_filler" in layer.get("bn_param")
            body = re.sub(r'type: "BN"', 'type: "SegNetBN"' if segnet else 'type: "PSPBN"', body)
            if segnet:
                body = body.replace("bn_param {", "segnet_bn_param {")
        if fork and kind == "Upsample" and len(layer.getall("bottom")) == 2:
            body = body.replace('type: "Upsample"', 'type: "SegNetUpsample"')
            body = body.replace("upsample_param {", "segnet_upsample_param {")
        text.append("layer {\n" + body + "}")
    return "\n".join(text) + "\n"


def composite_reference(
    folder: Path, caffemodel: Path, inputs: dict, blobs: list[str], tmp: Path
) -> dict | str:
    """A net with py-faster-rcnn's Python proposal layer, which no Caffe build here runs whole: BVLC
    Caffe runs the layers before the proposals, py-faster-rcnn's own ``proposal_layer.py``
    (``tools/make_proposal_fixtures.py``, its git directory in ``PY_FASTER_RCNN_GIT``) makes the
    rois, and OpenCV runs the layers after them (ROIPooling and the head, which brocolli-caffe lacks)."""
    import cv2

    from converters import read_prototxt
    from converters.graph.builder import select_layers
    from converters.graph.inputs import is_source

    sys.path.insert(0, str(ROOT / "tools"))
    import make_proposal_fixtures as proposals

    layers = select_layers(read_prototxt(folder / "deploy.prototxt"))
    index = next(
        i for i, layer in enumerate(layers) if str(layer.get("type")) == "Python" and layer.getall("bottom")
    )
    rpn = layers[index]
    after, later = set(rpn.getall("top")), []
    for layer in layers[index + 1 :]:
        if after & set(layer.getall("bottom")):
            after |= set(layer.getall("top"))
            later.append(layer)
    trunk = [layer for layer in layers if layer is not rpn and all(layer is not x for x in later)]
    made = {t for layer in trunk for t in layer.getall("top")}
    needed = sorted({b for layer in [rpn, *later] for b in layer.getall("bottom") if b in made})
    shapes = {b: v.shape for b, v in inputs.items()}
    trunk_file = tmp / "trunk.prototxt"
    trunk_file.write_text(layers_text([x for x in trunk if not is_source(x)], shapes))
    first = run_caffe(trunk_file, caffemodel, inputs, needed + [b for b in blobs if b in made], BVLC_ORACLE)
    if isinstance(first, str):
        return first
    values = {**inputs, **first}
    oracle = proposals.load_oracle(Path(os.environ["PY_FASTER_RCNN_GIT"]))
    param = str(rpn.get("python_param").get("param_str"))
    try:
        tops = proposals.run_case(oracle, param, "TEST", [values[b] for b in rpn.getall("bottom")])
    finally:  # its stand-ins (a caffe module among them) must not reach the next Caffe run
        for name in ("caffe", "fast_rcnn", "fast_rcnn.config", "fast_rcnn.bbox_transform",
                     "fast_rcnn.nms_wrapper", "generate_anchors", "proposal_layer", "py_cpu_nms"):
            sys.modules.pop(name, None)
    for top, value in zip(rpn.getall("top"), tops, strict=False):
        values[top] = value
    head_blobs = {b for x in later for b in x.getall("bottom")} - after | set(rpn.getall("top"))
    head_inputs = {b: values[b] for b in sorted(head_blobs)}
    head_file = tmp / "head.prototxt"
    head_file.write_text(layers_text(later, {b: v.shape for b, v in head_inputs.items()}))
    net = cv2.dnn.readNetFromCaffe(str(head_file), str(caffemodel))
    for blob, value in head_inputs.items():
        net.setInput(value, blob)
    wanted = [b for b in blobs if b in after and b not in rpn.getall("top")]
    for blob, value in zip(wanted, net.forward(wanted), strict=True):
        values[blob] = np.array(value, np.float32)
    return {b: values[b] for b in [*blobs, *rpn.getall("top")[:1]]}


def _caffe(
    prototxt: Path, caffemodel: Path, inputs: dict, blobs: list[str], queue: multiprocessing.Queue, path: str
) -> None:
    try:
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
        sys.path.insert(0, path)
        sys.modules.pop("caffe", None)  # the stand-in of make_proposal_fixtures, if it ran here
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


def run_caffe(prototxt: Path, caffemodel: Path, inputs: dict, blobs: list[str], path: Path) -> dict | str:
    """Caffe (pycaffe at ``path``) in a child process (a failed CHECK aborts the process)."""
    queue: multiprocessing.Queue = multiprocessing.Queue()
    args = (prototxt, caffemodel, inputs, blobs, queue, str(path))
    child = multiprocessing.Process(target=_caffe, args=args)
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
        try:
            values = net.forward(blobs)
            return {b: np.array(v, np.float32) for b, v in zip(blobs, values, strict=True)}
        except cv2.error:  # OpenCV names outputs by layer, and fuses some blobs away: each it gives
            from converters import read_prototxt
            from converters.graph.builder import select_layers

            layers = select_layers(read_prototxt(prototxt))
            producer = {t: str(x.get("name")) for x in layers for t in x.getall("top")}
            found = {}
            for blob in blobs:
                for name in dict.fromkeys([blob, producer.get(blob, blob)]):
                    try:
                        found[blob] = np.array(net.forward(name), np.float32)
                        break
                    except cv2.error:
                        continue
            if not found:
                raise
            return found
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
    result, reference, notes = reference_outputs(folder, net, shapes, weights, inputs, blobs, opencv_only)
    if isinstance(result, str):
        return f"{name}: no reference ({notes})"
    out = zoo.FIXTURES / name
    out.mkdir(parents=True, exist_ok=True)
    steps = {b: zoo.subsample_step(v.shape) for b, v in result.items()}
    stored = {f"output:{b}": zoo.subsample(v, steps[b]) for b, v in result.items()}
    np.savez_compressed(out / "io.npz", **stored)
    case = {
        "net": name,
        "reference": reference,
        "inputs": {b: list(s) for b, s in shapes.items()},
        "outputs": {b: list(v.shape) for b, v in result.items()},
        "seed": zoo.SEED,
        "subsample": {b: s for b, s in steps.items() if s > 1},
        "not_used": notes,
    }
    (out / "case.json").write_text(json.dumps(case, indent=1) + "\n")
    return f"{name}: {reference}"


def reference_outputs(
    folder: Path,
    net: Any,
    shapes: dict,
    weights: dict,
    inputs: dict,
    blobs: list[str],
    opencv_only: bool = False,
) -> tuple[dict | str, str | None, dict]:
    """The reference's values of ``blobs`` (or why none ran), its name, and notes on what was
    tried: Caffe (the BVLC or the fork oracle), the composite for py-faster-rcnn nets, OpenCV."""
    with tempfile.TemporaryDirectory() as tmp:
        caffemodel = Path(tmp) / "weights.caffemodel"
        write_weights(weights, caffemodel)
        notes = {}
        result: dict | str = "not tried"
        reference = None
        if not opencv_only:
            fork = bool(FORK_TYPES & {str(layer.get("type")) for layer in net.getall("layer")})
            prototxt = caffe_prototxt(folder, shapes, Path(tmp), fork)
            result = run_caffe(prototxt, caffemodel, inputs, blobs, FORK_ORACLE if fork else BVLC_ORACLE)
            reference = (
                "the fork oracle (brocolli-caffe 9.0.2 with PSPNet's Interp and BN, SegNet's BN and "
                "Upsample, ShuffleNet's ShuffleChannel: tools/build_fork_oracle.sh), CPU"
                if fork
                else "BVLC Caffe 1.0 (brocolli-caffe 9.0.2), CPU"
            )
            if isinstance(result, str):
                notes["caffe"] = result
        python_rpn = any(
            str(layer.get("type")) == "Python"
            and str(layer.get("python_param").get("module")) == "rpn.proposal_layer"
            for layer in net.getall("layer")
        )
        if isinstance(result, str) and python_rpn:
            result = composite_reference(folder, caffemodel, inputs, blobs, Path(tmp))
            reference = (
                "BVLC Caffe 1.0 (brocolli-caffe 9.0.2) up to the proposals, py-faster-rcnn's own "
                "proposal_layer.py, OpenCV dnn for ROIPooling and the head"
            )
            if isinstance(result, str):
                notes["composite"] = result
        if isinstance(result, str):
            prototxt, changed = opencv_prototxt(folder, Path(tmp))
            if changed:
                notes["opencv_net"] = changed
            result = run_opencv(prototxt, caffemodel, inputs, blobs)
            import cv2

            reference = f"OpenCV dnn {cv2.__version__} (readNetFromCaffe)"
            if isinstance(result, str):
                notes["opencv"] = result
    if "opencv" in notes:  # OpenCV was the last resort and failed too
        return "no reference", None, notes
    return result, reference, notes


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
