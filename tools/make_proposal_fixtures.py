"""Golden fixtures for py-faster-rcnn's proposal layer, made by py-faster-rcnn's own Python code.

The oracle is ``lib/rpn/proposal_layer.py`` of rbgirshick/py-faster-rcnn with its own
``generate_anchors.py``, ``bbox_transform.py`` and ``cfg`` values, run on seeded numpy inputs.
Its Python 2 sources are read from a git clone (``git show``), turned into Python 3 in memory with
lib2to3, and run with three stand-ins that hold no arithmetic: a ``caffe.Layer`` base class, blobs
that keep what the layer writes, and ``nms`` bound to the repository's own ``py_cpu_nms`` (the
CPU and GPU kernels keep the same boxes but for overlaps exactly at the threshold). Nothing of
py-faster-rcnn is committed: only our net definitions and the inputs and outputs, in
``tests/fixtures/forks/<case>/`` (``net.prototxt``, ``io.npz``, ``case.json``).

    python tools/make_proposal_fixtures.py PY_FASTER_RCNN_GIT_DIR

needs numpy and pyyaml (``yaml.load`` reads the layer's ``param_str``); Python 3.11 (lib2to3).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import types
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests" / "fixtures" / "forks"

CASES = [
    # name, param_str, phase, (anchors, H, W), im_info, description
    ("faster_rcnn_proposal", "'feat_stride': 16", "TEST", (9, 14, 18), [224.0, 288.0, 1.0],
     "the ZF/VGG16 test nets' layer: 9 anchors (ratios 0.5, 1, 2 x scales 8, 16, 32), cfg.TEST "
     "(6000 / 300 / 0.7 / min_size 16)"),
    ("faster_rcnn_proposal_scaled", "'feat_stride': 16\n'scales': [4, 8, 16, 32]", "TEST", (12, 9, 12),
     [150.0, 190.0, 1.6], "scales from param_str, im_info scale 1.6 (min_size 16 x 1.6 at the input scale)"),
    ("faster_rcnn_proposal_train", "'feat_stride': 8", "TRAIN", (9, 11, 13), [90.0, 104.0, 0.5],
     "feat_stride 8, cfg.TRAIN (12000 / 2000 / 0.7 / 16), small image: every box through NMS"),
]


def _py3(source: str) -> str:
    from lib2to3 import refactor  # noqa: PLC0415  (deprecated module, Python <= 3.12)

    names = refactor.get_fixers_from_package("lib2to3.fixes")
    return str(refactor.RefactoringTool(names).refactor_string(source + "\n", "module"))


def _module(name: str, source: str, namespace: dict | None = None) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__dict__.update(namespace or {})
    exec(compile(_py3(source), name, "exec"), module.__dict__)  # noqa: S102  (the oracle's own code)
    sys.modules[name] = module
    return module


def load_oracle(git_dir: Path) -> type:
    def show(path: str) -> str:
        return subprocess.run(
            ["git", f"--git-dir={git_dir}", "show", f"HEAD:{path}"],
            check=True, capture_output=True, text=True,
        ).stdout  # fmt: skip

    caffe = types.ModuleType("caffe")
    caffe.Layer = type("Layer", (), {})
    sys.modules["caffe"] = caffe
    path = "lib/fast_rcnn/config.py"
    config = _module("fast_rcnn.config", show(path), {"__file__": path})
    fast_rcnn = types.ModuleType("fast_rcnn")
    fast_rcnn.config = config
    sys.modules["fast_rcnn"] = fast_rcnn
    sys.modules["fast_rcnn.bbox_transform"] = _module(
        "fast_rcnn.bbox_transform", show("lib/fast_rcnn/bbox_transform.py")
    )
    py_nms = _module("py_cpu_nms", show("lib/nms/py_cpu_nms.py"))
    wrapper = types.ModuleType("fast_rcnn.nms_wrapper")
    wrapper.nms = lambda dets, thresh, force_cpu=False: py_nms.py_cpu_nms(dets, thresh)
    sys.modules["fast_rcnn.nms_wrapper"] = wrapper
    anchors = show("lib/rpn/generate_anchors.py").split("if __name__ == '__main__':")[0]
    sys.modules["generate_anchors"] = _module("generate_anchors", anchors)
    layer = _module("proposal_layer", show("lib/rpn/proposal_layer.py"))
    return layer.ProposalLayer


class Blob:
    def __init__(self, data: np.ndarray | None = None) -> None:
        self.data = data

    def reshape(self, *shape: int) -> None:
        self.data = np.zeros(shape, np.float32)


def run_case(layer_class: type, param_str: str, phase: str, bottoms: list[np.ndarray]) -> list[np.ndarray]:
    import yaml

    if not hasattr(yaml, "_load_orig"):  # yaml.load(text) without a Loader, as PyYAML 3 allowed
        yaml._load_orig = yaml.load
        yaml.load = lambda text, Loader=yaml.SafeLoader: yaml._load_orig(text, Loader=Loader)
    layer = layer_class()
    layer.param_str_ = param_str
    layer.phase = phase
    tops = [Blob(), Blob()]
    layer.setup([Blob(b) for b in bottoms], tops)
    layer.forward([Blob(b) for b in bottoms], tops)
    return [t.data.astype(np.float32) for t in tops]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("git_dir", type=Path, help="git directory of rbgirshick/py-faster-rcnn")
    args = parser.parse_args()
    layer_class = load_oracle(args.git_dir)
    commit = subprocess.run(
        ["git", f"--git-dir={args.git_dir}", "rev-parse", "HEAD"], check=True, capture_output=True, text=True
    ).stdout.strip()
    for index, (name, param_str, phase, (anchors, h, w), info, description) in enumerate(CASES):
        rng = np.random.default_rng(20261206 + index)
        logits = rng.normal(0, 2, (1, 2, anchors, h, w)).astype(np.float32)
        prob = np.exp(logits - logits.max(1, keepdims=True))
        prob = (prob / prob.sum(1, keepdims=True)).reshape(1, 2 * anchors, h, w).astype(np.float32)
        deltas = rng.normal(0, 0.3, (1, 4 * anchors, h, w)).astype(np.float32)
        im_info = np.array([info], np.float32)
        rois, scores = run_case(layer_class, param_str, phase, [prob, deltas, im_info])
        folder = OUT / name
        folder.mkdir(parents=True, exist_ok=True)
        escaped = param_str.replace("\n", "\\n")
        (folder / "net.prototxt").write_text(
            'layer { name: "input" type: "Input" top: "scores" top: "deltas" top: "im_info" input_param { '
            f"shape {{ dim: 1 dim: {2 * anchors} dim: {h} dim: {w} }} "
            f"shape {{ dim: 1 dim: {4 * anchors} dim: {h} dim: {w} }} shape {{ dim: 1 dim: 3 }} }} }}\n"
            'layer { name: "proposal" type: "Python" bottom: "scores" bottom: "deltas" bottom: "im_info" '
            'top: "rois" top: "roi_scores" python_param { module: "rpn.proposal_layer" '
            f"layer: \"ProposalLayer\" param_str: \"{escaped}\" }} }}\n"
        )
        np.savez_compressed(
            folder / "io.npz",
            **{"run0/input:scores": prob, "run0/input:deltas": deltas, "run0/input:im_info": im_info,
               "run0/output:rois": rois, "run0/output:roi_scores": scores},
        )  # fmt: skip
        case = {
            "case": name,
            "description": "py-faster-rcnn's rpn.proposal_layer: " + description,
            "oracle": f"rbgirshick/py-faster-rcnn@{commit} lib/rpn/proposal_layer.py (numpy, py_cpu_nms)",
            "oracle_net": "net.prototxt",
            "layer_types": ["Input", "Python"],
            "phase": phase,
            "params": {},
            "runs": [{
                "prefix": "run0/",
                "inputs": {"scores": list(prob.shape), "deltas": list(deltas.shape), "im_info": [1, 3]},
                "outputs": {"rois": list(rois.shape), "roi_scores": list(scores.shape)},
            }],
        }  # fmt: skip
        (folder / "case.json").write_text(json.dumps(case, indent=1) + "\n")
        print(f"{name}: {rois.shape[0]} rois")
    return 0


if __name__ == "__main__":
    sys.exit(main())
