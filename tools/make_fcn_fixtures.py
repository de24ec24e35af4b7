#!/usr/bin/env python3
"""Regenerate the FCN parity fixtures (tests/fixtures/fcn/<model>/) with real Caffe.

Our code only writes the net definitions (``converters.fcn.nets.net_definition`` at a small width,
saved with ``converters.write_prototxt``) and draws the parameter values and inputs from seeded
generators (``tests/fixtures/fcn/seeded_weights.py``, shared with the tests). Real Caffe (pycaffe, the
oracle of /work/shared/caffe-oracle.md) builds each net, takes the values, saves them with
``Net::save``, loads the saved file into a fresh net and computes every output. Run it with the
oracle's Python::

    PYTHONPATH=/work/oracle/brocolli-caffe-9.0.2/python:. GLOG_minloglevel=2 \\
        /work/oracle/venv/bin/python tools/make_fcn_fixtures.py [MODEL ...]

Each fixture folder holds ``deploy.prototxt`` (the definition Caffe ran), ``io.npz`` (keys
``input:<blob>:<run>`` and ``output:<blob>:<run>``) and ``case.json`` (runs, width, seeds, the
weight plan and its digest, Caffe's version). The caffemodels are not kept (tens of MB): the tests
regenerate the same arrays from the plan and seed, and the script checks that the caffemodel Caffe
saved reads back (``converters.read_weights``) exactly equal to them.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import io
import json
import os
import re
import shutil
import sys
import tempfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# One BLAS thread: the same summation order on every regeneration (set before Caffe loads).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("GLOG_minloglevel", "2")

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from converters import Message, format_message, read_prototxt, read_weights  # noqa: E402
from converters.fcn.nets import MODELS, net_definition  # noqa: E402

FIXTURES = REPO / "tests" / "fixtures" / "fcn"
ORACLE = "BVLC Caffe 1.0 as packaged in the brocolli-caffe 9.0.2 sdist, CPU build, OpenBLAS 1 thread"
WIDTH = 1 / 16  # conv1 64 -> 4 channels, fc6/fc7 4096 -> 256; class counts kept
INPUT_STD = 50.0  # inputs ~ N(0, 50^2): the spread of mean-subtracted pixels
SCALE_VALUES = {"scale_pool4": 0.37, "scale_pool3": 0.05}  # at-once; official fillers: 0.01, 1e-4
BILINEAR_MODELS = ("voc-fcn16s", "nyud-fcn32s-hha")
FULL = "voc-fcn8s-full"

Shape = tuple[int, ...]


@dataclass(frozen=True)
class Fixture:
    """One fixture folder: which definition, which spatial sizes and batches Caffe runs."""

    folder: str
    model: str
    width: float
    sizes: tuple[Shape, ...]  # (N, H, W) per run; channels come from the definition
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def deconvolution_fill(self) -> str:
        return "bilinear" if self.model in BILINEAR_MODELS and self.width != 1.0 else "fan_in"


ONE = (1, 1, 1)
MID = (1, 64, 80)
BATCH2 = (2, 17, 23)
# A different odd size per model (score maps of 1x3, 3x1, 2x2 ... cells), keeping every folder small.
ODD = {
    "voc-fcn32s": (1, 25, 59),
    "voc-fcn16s": (1, 59, 25),
    "voc-fcn8s": (1, 37, 53),
    "voc-fcn8s-atonce": (1, 33, 47),
    "voc-fcn-alexnet": (1, 31, 45),
    "nyud-fcn32s-color": (1, 27, 41),
    "nyud-fcn32s-hha": (1, 29, 35),
    "nyud-fcn32s-color-hha": (1, 23, 61),
    "nyud-fcn32s-color-d": (1, 35, 27),
    "pascalcontext-fcn32s": (1, 21, 33),
    "pascalcontext-fcn16s": (1, 27, 29),
    "pascalcontext-fcn8s": (1, 33, 23),
    "siftflow-fcn32s": (1, 29, 31),
    "siftflow-fcn16s": (1, 25, 39),
    "siftflow-fcn8s": (1, 41, 27),
}
WITH_MID = ("voc-fcn8s", "voc-fcn-alexnet", "siftflow-fcn16s")
WITH_BATCH2 = ("voc-fcn8s", "voc-fcn-alexnet", "nyud-fcn32s-color-hha", "pascalcontext-fcn16s")


def fixtures() -> dict[str, Fixture]:
    """Every fixture folder by name: the 15 models at ``WIDTH`` and the full-width voc-fcn8s."""
    out = {}
    for model in MODELS:
        sizes = [ONE, ODD[model]]
        if model in WITH_MID:
            sizes.append(MID)
        if model in WITH_BATCH2:
            sizes.append(BATCH2)
        notes = []
        if model in BILINEAR_MODELS:
            notes.append("deconvolutions hold the fixed bilinear kernels (as the official weights)")
        else:
            notes.append("deconvolutions hold random fan-in scaled weights (not bilinear)")
        if model == "voc-fcn8s-atonce":
            notes.append(
                "Scale blobs per channel around 0.37 (scale_pool4) and 0.05 (scale_pool3), "
                "not the prototxt fillers 0.01 / 1e-4"
            )
        out[model] = Fixture(model, model, WIDTH, tuple(sizes), tuple(notes))
    out[FULL] = Fixture(
        FULL,
        "voc-fcn8s",
        1.0,
        ((1, 64, 64), (1, 45, 67)),
        ("full width; the 538 MB of weights are not kept: make_weights(plan, seed) regenerates them",),
    )
    return out


def seed_of(name: str) -> int:
    """A stable seed per fixture folder (adding a fixture never changes another's values)."""
    return zlib.crc32(f"fcn-parity:{name}".encode())


def load_seeded_weights() -> Any:
    """tests/fixtures/fcn/seeded_weights.py, the generator the tests import too."""
    path = FIXTURES / "seeded_weights.py"
    spec = importlib.util.spec_from_file_location("fcn_seeded_weights", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"error: cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --------------------------------------------------------------------------------------------------
# Definitions, plans, inputs


def input_channels(net: Message) -> dict[str, int]:
    """Input blob -> channels, from the definition's Input layer(s)."""
    out: dict[str, int] = {}
    for layer in net.getall("layer"):
        if layer.get("type") != "Input":
            continue
        shapes = layer.get("input_param").get("shape")
        for top, shape in zip(layer.get("top"), shapes, strict=True):
            out[top] = int(shape.get("dim")[1])
    return out


def weight_plan(net: Message, caffe_shapes: dict[str, list[Shape]], deconvolution_fill: str) -> list[dict]:
    """The ``make_weights`` plan: Caffe's parameter blobs in layer order, with how to fill each."""
    layers = {layer.get("name"): layer for layer in net.getall("layer")}
    plan = []
    for name, shapes in caffe_shapes.items():
        layer = layers[name]
        kind = layer.get("type")
        entry: dict[str, Any] = {"layer": name, "type": kind, "shapes": [list(s) for s in shapes]}
        if kind == "Convolution":
            entry["fill"] = "fan_in"
        elif kind == "Deconvolution":
            conv = layer.get("convolution_param")
            stride = list(conv.get("stride")) or [1]
            entry["stride"] = [int(stride[0]), int(stride[-1])]
            entry["group"] = int(conv.get("group"))
            entry["fill"] = deconvolution_fill
        elif kind == "Scale":
            entry["fill"] = "scale"
            entry["value"] = SCALE_VALUES[name]
        else:
            raise ValueError(f"{name}: no fill rule for {kind} parameters")
        plan.append(entry)
    return plan


def make_inputs(rng: np.random.RandomState, channels: dict[str, int], size: Shape) -> dict[str, np.ndarray]:
    """Seeded N(0, INPUT_STD^2) float32 inputs of batch/height/width ``size``, per input blob."""
    n, h, w = size
    return {
        blob: (INPUT_STD * rng.standard_normal((n, c, h, w))).astype(np.float32)
        for blob, c in channels.items()
    }


# --------------------------------------------------------------------------------------------------
# Caffe


def import_caffe() -> Any:
    try:
        import caffe
    except ImportError as exc:
        print(
            f"error: cannot import pycaffe ({exc}); set PYTHONPATH as the module docstring says",
            file=sys.stderr,
        )
        raise SystemExit(2) from None
    caffe.set_mode_cpu()
    return caffe


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_read_back(path: Path, expected: dict[str, list[np.ndarray]]) -> None:
    """Caffe's saved caffemodel must hold exactly ``expected`` (read with ``converters.read_weights``)."""
    read = read_weights(path)
    if list(read) != list(expected):
        raise AssertionError(f"{path.name}: layers {list(read)} != {list(expected)}")
    for name, blobs in expected.items():
        got = read[name]
        if len(got) != len(blobs) or not all(
            a.shape == b.shape and np.array_equal(a, b) for a, b in zip(got, blobs, strict=True)
        ):
            raise AssertionError(f"{path.name}: layer {name} differs from the values given to Caffe")


def make_fixture(caffe: Any, seeded: Any, fixture: Fixture, out_dir: Path) -> dict:
    """Write one fixture folder (via a staging folder swapped into place); return its case.json."""
    definition = net_definition(fixture.model, "deploy", width=fixture.width)
    text = format_message(definition)
    seed = seed_of(fixture.folder)
    input_seed = seed_of(fixture.folder + ":inputs")
    channels = input_channels(definition)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{fixture.folder}.", dir=out_dir.parent))
    staging.chmod(0o755)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            proto = work / "deploy.prototxt"
            proto.write_text(text)
            net = caffe.Net(str(proto), caffe.TEST)
            caffe_shapes = {name: [tuple(b.data.shape) for b in blobs] for name, blobs in net.params.items()}
            plan = weight_plan(definition, caffe_shapes, fixture.deconvolution_fill)
            weights = seeded.make_weights(plan, seed)
            for name, blobs in net.params.items():
                for blob, value in zip(blobs, weights[name], strict=True):
                    if blob.data.shape != value.shape:
                        raise AssertionError(f"{name}: Caffe wants {blob.data.shape}, made {value.shape}")
                    blob.data[...] = value
            model = work / "weights.caffemodel"
            net.save(str(model))
            del net
            check_read_back(model, weights)
            caffemodel = {"sha256": file_sha256(model), "bytes": model.stat().st_size}

            net = caffe.Net(str(proto), caffe.TEST, weights=str(model))
            rng = np.random.RandomState(input_seed)
            arrays: dict[str, np.ndarray] = {}
            runs = []
            for index, size in enumerate(fixture.sizes):
                inputs = make_inputs(rng, channels, size)
                for blob, value in inputs.items():
                    net.blobs[blob].reshape(*value.shape)
                    net.blobs[blob].data[...] = value
                    arrays[f"input:{blob}:{index}"] = value
                net.forward()
                outputs = {}
                for blob in net.outputs:
                    value = np.array(net.blobs[blob].data, dtype=np.float32, copy=True)
                    arrays[f"output:{blob}:{index}"] = value
                    outputs[blob] = list(value.shape)
                runs.append({"inputs": {b: list(v.shape) for b, v in inputs.items()}, "outputs": outputs})
            del net

        (staging / "deploy.prototxt").write_text(text)
        if read_prototxt(staging / "deploy.prototxt") != definition:
            raise AssertionError(f"{fixture.folder}: deploy.prototxt does not read back as the definition")
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **arrays)
        (staging / "io.npz").write_bytes(buffer.getvalue())
        info = {
            "folder": fixture.folder,
            "model": fixture.model,
            "definition": {"split": "deploy", "width": fixture.width},
            "oracle": ORACLE,
            "caffe_version": getattr(caffe, "__version__", "unknown"),
            "runs": runs,
            "inputs": {
                "blobs": channels,
                "seed": input_seed,
                "rng": "numpy.random.RandomState(seed).standard_normal, run by run, blob by blob",
                "std": INPUT_STD,
            },
            "weights": {
                "seed": seed,
                "generator": "tests/fixtures/fcn/seeded_weights.py: make_weights(plan, seed)",
                "deconvolution_fill": fixture.deconvolution_fill,
                "digest": seeded.weights_digest(weights),
                "count": int(sum(b.size for blobs in weights.values() for b in blobs)),
                "sum": float(
                    sum(float(b.astype(np.float64).sum()) for blobs in weights.values() for b in blobs)
                ),
                "caffemodel_saved_by_caffe": caffemodel,
                "plan": plan,
            },
            "notes": [
                "outputs are Caffe's after loading the caffemodel it saved (Net::save) into a fresh net",
                "ReLUs run in place; deploy nets have no Dropout",
                *fixture.notes,
            ],
        }
        (staging / "case.json").write_text(to_json(info))
        swap_into_place(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return info


def to_json(value: Any) -> str:
    """Indented JSON with lists of numbers (shapes, strides) kept on one line."""
    text = json.dumps(value, indent=1)
    return (
        re.sub(r"\[[-0-9.e,\s]*\]", lambda m: re.sub(r"\s+", "", m.group(0)).replace(",", ", "), text) + "\n"
    )


def swap_into_place(staging: Path, target: Path) -> None:
    """Replace ``target`` by the fully written ``staging`` folder (never a half-written fixture)."""
    if target.exists():
        old = target.with_name(f".{target.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        target.rename(old)
        staging.rename(target)
        shutil.rmtree(old)
    else:
        staging.rename(target)


def folder_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main(argv: list[str] | None = None) -> int:
    table = fixtures()
    parser = argparse.ArgumentParser(
        description="Regenerate the FCN parity fixtures (tests/fixtures/fcn/) with real Caffe (pycaffe).",
        epilog=f"fixtures: {', '.join(table)}",
    )
    parser.add_argument("fixtures", nargs="*", metavar="FIXTURE", help="folders to regenerate (default: all)")
    parser.add_argument("--out", type=Path, default=FIXTURES, help=f"fixture root (default {FIXTURES})")
    args = parser.parse_args(argv)
    unknown = [name for name in args.fixtures if name not in table]
    if unknown:
        print(f"error: unknown fixture {unknown[0]!r} (one of {', '.join(table)})", file=sys.stderr)
        return 2
    caffe = import_caffe()
    seeded = load_seeded_weights()
    for name in args.fixtures or list(table):
        target = args.out / name
        info = make_fixture(caffe, seeded, table[name], target)
        shapes = ", ".join("x".join(map(str, next(iter(r["inputs"].values())))) for r in info["runs"])
        print(f"{name}: runs {shapes}; {folder_size(target) / 1024:.0f} KiB", flush=True)
    print(f"total {folder_size(args.out) / 1024:.0f} KiB under {args.out}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)
