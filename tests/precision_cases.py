"""Every forward fixture that holds inputs and the outputs real Caffe (or a fork's oracle) computed
for them, as one list of cases that run a net built either way (``load_caffe``'s default graph or
``optimize=False``): the precision bound of issue 20 (``tests/test_precision_bound.py``) and its
table (``benchmarks/precision.py``) read them.

The groups and the tests whose loading each one repeats: ``layers`` (tests/test_layers_parity.py),
``forks`` (tests/test_forks_layers.py), ``tiny_fcn``, ``fcn`` (tests/test_fcn_parity.py, the
full-width voc-fcn8s included), ``real_nets`` (tests/test_real_nets.py), and from ``../shared``
where it is present ``forks_real`` (tests/test_forks_real_models.py), ``real_models``
(tests/test_graph_real_models.py) and ``zoo`` (tests/test_zoo.py). Left out: the solver fixtures
(training steps, not a forward) and ``hdf5_output`` (what the HDF5Output layer writes).
"""

from __future__ import annotations

import functools
import importlib.util
import json
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from converters import load_caffe, parse_text
from converters.graph.border import BorderPlanner
from tests.conftest import FIXTURES, shared_root

#: A case's result: per compared blob, the pairs (ours, reference) over its runs.
Pairs = dict[str, list[tuple[np.ndarray, np.ndarray]]]


@dataclass(frozen=True)
class Case:
    """One fixture: ``run(optimize)`` builds its net(s) with ``load_caffe(..., optimize=optimize)``
    (``None``: the default), runs every recorded input and gives ``Pairs``; ``nets(optimize)`` the
    nets alone (for the kernel table and timing), with one run's inputs each."""

    name: str
    run: Callable[[bool | None], Pairs]
    nets: Callable[[bool | None], list[tuple[torch.nn.Module, dict[str, torch.Tensor]]]]
    heavy: bool = False  # over ~10 s for both graphs on the 2-core CI machine
    needs: tuple[str, ...] = field(default=())  # the ../shared folder it reads, if any


def _options(optimize: bool | None) -> dict[str, Any]:
    return {} if optimize is None else {"optimize": optimize}


def _forward(net: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """The net's outputs; where the border skipping keeps fixed values (FCN's chains), those of a
    second forward at the size, which reads them (the first records them)."""
    with torch.no_grad():
        if any(isinstance(m, BorderPlanner) for m in net.modules()):
            net(**inputs)
        return {blob: value.detach().numpy() for blob, value in net(**inputs).items()}


def _add(pairs: Pairs, blob: str, got: np.ndarray, want: np.ndarray) -> None:
    pairs.setdefault(blob, []).append((got, want))


# --- layers and forks: net.prototxt (+ weights.caffemodel), runs with prefixes ----------------------


def _prefixed_case(group: str, folder: Path) -> Case:
    info = json.loads((folder / "case.json").read_text())
    losses = any(kind.endswith("Loss") or kind == "Accuracy" for kind in info.get("layer_types", ()))
    weights = folder / "weights.caffemodel"

    def inputs_of(run: dict, npz: Any) -> dict[str, torch.Tensor]:
        prefix = run["prefix"]
        names = run["inputs"] if "inputs" in run else [
            k.split(":", 1)[1] for k in npz.files if k.startswith(f"{prefix}input:")
        ]  # fmt: skip
        return {b: torch.from_numpy(npz[f"{prefix}input:{b}"]) for b in names}

    def build(run: dict, inputs: dict[str, torch.Tensor], optimize: bool | None) -> torch.nn.Module:
        extra = {"with_loss": True} if group == "layers" and losses else {}
        if group == "forks":
            extra["phase"] = info.get("phase", "TEST")
        return load_caffe(
            folder / "net.prototxt",
            weights if weights.exists() else None,
            input_shapes={b: tuple(v.shape) for b, v in inputs.items()},
            outputs=list(run["outputs"]),
            **extra,
            **info.get("load_options", {}),
            **_options(optimize),
        )

    def run(optimize: bool | None) -> Pairs:
        npz = np.load(folder / "io.npz")
        pairs: Pairs = {}
        net = None
        for one in info["runs"]:
            inputs = inputs_of(one, npz)
            if net is None or not info.get("stateful"):
                net = build(one, inputs, optimize)
            got = _forward(net, inputs)
            for blob in one["outputs"]:
                _add(pairs, blob, got[blob], npz[f"{one['prefix']}output:{blob}"])
        return pairs

    def nets(optimize: bool | None) -> list:
        npz = np.load(folder / "io.npz")
        one = info["runs"][0]
        inputs = inputs_of(one, npz)
        return [(build(one, inputs, optimize), inputs)]

    return Case(f"{group}/{folder.name}", run, nets)


# --- tiny_fcn ------------------------------------------------------------------------------------------


def _tiny_fcn_case() -> Case:
    folder = FIXTURES / "tiny_fcn"
    info = json.loads((folder / "case.json").read_text())
    blobs = ["score", "score_fr"]

    def build(optimize: bool | None) -> torch.nn.Module:
        return load_caffe(folder / "deploy.prototxt", folder / "tiny_fcn.caffemodel", outputs=blobs,
                          **_options(optimize))  # fmt: skip

    def inputs_of(one: dict, npz: Any) -> dict[str, torch.Tensor]:
        return {b: torch.from_numpy(npz[f"{one['prefix']}input:{b}"]) for b in one["inputs"]}

    def run(optimize: bool | None) -> Pairs:
        npz = np.load(folder / "io.npz")
        net, pairs = build(optimize), {}
        for one in info["runs"]:
            got = _forward(net, inputs_of(one, npz))
            for blob in blobs:
                _add(pairs, blob, got[blob], npz[f"{one['prefix']}output:{blob}"])
        return pairs

    def nets(optimize: bool | None) -> list:
        return [(build(optimize), inputs_of(info["runs"][0], np.load(folder / "io.npz")))]

    return Case("tiny_fcn", run, nets)


# --- the FCN nets (narrow, and full-width voc-fcn8s) -----------------------------------------------------

FCN = FIXTURES / "fcn"
FCN_FULL = "voc-fcn8s-full"


@functools.cache
def _seeded_weights() -> Any:
    spec = importlib.util.spec_from_file_location("fcn_seeded_weights", FCN / "seeded_weights.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _fcn_case(name: str) -> Case:
    folder = FCN / name
    info = json.loads((folder / "case.json").read_text())

    def build(optimize: bool | None) -> torch.nn.Module:
        plan = info["weights"]
        weights = _seeded_weights().make_weights(plan["plan"], plan["seed"])
        return load_caffe(folder / "deploy.prototxt", weights, **_options(optimize))

    def inputs_of(k: int, npz: Any) -> dict[str, torch.Tensor]:
        return {b: torch.from_numpy(npz[f"input:{b}:{k}"]) for b in info["runs"][k]["inputs"]}

    def run(optimize: bool | None) -> Pairs:
        npz = np.load(folder / "io.npz")
        net, pairs = build(optimize), {}
        for k, one in enumerate(info["runs"]):
            got = _forward(net, inputs_of(k, npz))
            for blob in one["outputs"]:
                _add(pairs, blob, got[blob], npz[f"output:{blob}:{k}"])
        return pairs

    def nets(optimize: bool | None) -> list:
        return [(build(optimize), inputs_of(len(info["runs"]) - 1, np.load(folder / "io.npz")))]

    return Case(f"fcn/{name}", run, nets, heavy=name == FCN_FULL)


# --- real nets written here (LRCN, C3D) --------------------------------------------------------------------


def _lrcn_case() -> Case:
    from tests import real_nets
    from tests.zoo import draw_weights

    folder = real_nets.FIXTURES / "lrcn"
    info = json.loads((folder / "case.json").read_text())

    def build(optimize: bool | None) -> tuple[torch.nn.Module, list[dict[str, torch.Tensor]]]:
        net, steps = real_nets.lrcn_word_to_preds(), real_nets.lrcn_steps()
        shapes = {blob: value.shape for blob, value in steps[0].items()}
        weights = draw_weights(net, shapes, real_nets.SEED)
        model = load_caffe(net, weights, outputs=info["compared"], **_options(optimize))
        return model, [{b: torch.from_numpy(v) for b, v in s.items()} for s in steps]

    def run(optimize: bool | None) -> Pairs:
        npz = np.load(folder / "io.npz")
        model, steps = build(optimize)
        pairs: Pairs = {}
        for k, inputs in enumerate(steps):
            got = _forward(model, inputs)
            for blob in info["compared"]:
                _add(pairs, blob, got[blob], npz[f"step{k}/output:{blob}"])
        return pairs

    def nets(optimize: bool | None) -> list:
        model, steps = build(optimize)
        return [(model, steps[0])]

    return Case("real_nets/lrcn", run, nets)


def _c3d_case() -> Case:
    from tests.real_nets import C3D_INPUT, SEED, c3d_input, c3d_sport1m
    from tests.real_nets import FIXTURES as REAL
    from tests.zoo import draw_weights

    folder = REAL / "c3d"
    info = json.loads((folder / "case.json").read_text())

    def build(optimize: bool | None) -> torch.nn.Module:
        net = parse_text(c3d_sport1m())
        return load_caffe(net, draw_weights(net, {"data": C3D_INPUT}, SEED), input_shapes={"data": C3D_INPUT},
                          outputs=info["compared"], **_options(optimize))  # fmt: skip

    def run(optimize: bool | None) -> Pairs:
        npz = np.load(folder / "io.npz")
        got = _forward(build(optimize), {"data": torch.from_numpy(c3d_input())})
        return {blob: [(got[blob], npz[f"step0/output:{blob}"])] for blob in info["compared"]}

    def nets(optimize: bool | None) -> list:
        return [(build(optimize), {"data": torch.from_numpy(c3d_input())})]

    return Case("real_nets/c3d", run, nets, heavy=True)


# --- ../shared: the forks' real models, the real Caffe models, the zoo ----------------------------------


def _forks_real_case(name: str, weights: str) -> Case:
    folder = FIXTURES / "forks_real"
    info = json.loads((folder / f"{name}.json").read_text())
    shape = info["inputs"]["data"]

    def build(optimize: bool | None) -> tuple[torch.nn.Module, dict[str, np.ndarray], dict]:
        model = shared_root() / "real-caffe-models" / name  # type: ignore[operator]
        want = dict(np.load(folder / f"{name}.npz"))
        blobs = [b for b in want if b != "detection_out"]  # detections: a list, compared in their own test
        net = load_caffe(model / "deploy.prototxt", model / weights, input_shapes={"data": tuple(shape)},
                         outputs=blobs, **_options(optimize))  # fmt: skip
        x = torch.from_numpy((np.random.default_rng(0).normal(0, 1, shape) * 50).astype(np.float32))
        return net, {b: want[b] for b in blobs}, {"data": x}

    def run(optimize: bool | None) -> Pairs:
        net, want, inputs = build(optimize)
        got = _forward(net, inputs)
        return {blob: [(got[blob], value)] for blob, value in want.items()}

    def nets(optimize: bool | None) -> list:
        net, _, inputs = build(optimize)
        return [(net, inputs)]

    return Case(f"forks_real/{name}", run, nets, needs=("real-caffe-models", name))


def _real_model_case(name: str) -> Case:
    def runs() -> tuple[Path, list[dict]]:
        folder = shared_root() / "real-caffe-models" / name  # type: ignore[operator]
        return folder, json.loads((folder / "EXPECTED-forward.json").read_text())["runs"]

    def inputs_of(one: dict, npz: Any) -> dict[str, torch.Tensor]:
        return {i["name"]: torch.from_numpy(npz[i["npz_key"]]) for i in one["inputs"]}

    def run(optimize: bool | None) -> Pairs:
        folder, spec = runs()
        pairs: Pairs = {}
        for k, one in enumerate(spec):
            npz = np.load(folder / one.get("npz", "EXPECTED-forward.npz"))
            net = load_caffe(folder / one["prototxt"], folder / one["weights"], **_options(optimize))
            got = _forward(net, inputs_of(one, npz))
            for out in one["outputs"]:
                _add(pairs, f"{k}:{out['name']}" if len(spec) > 1 else out["name"], got[out["name"]],
                     npz[out["npz_key"]])  # fmt: skip
        return pairs

    def nets(optimize: bool | None) -> list:
        folder, spec = runs()
        out = []
        for one in spec:
            npz = np.load(folder / one.get("npz", "EXPECTED-forward.npz"))
            net = load_caffe(folder / one["prototxt"], folder / one["weights"], **_options(optimize))
            out.append((net, inputs_of(one, npz)))
        return out

    return Case(f"real_models/{name}", run, nets, needs=("real-caffe-models", name))


#: Zoo nets whose two forwards take over ~10 s on the 2-core machine.
ZOO_HEAVY = frozenset(
    {"alexnet", "densenet121", "faster_rcnn_zf", "icnet", "inception_v3", "openpose_coco", "pspnet50_ade20k",
     "resnet50", "se_bn_inception"}
)  # fmt: skip


def _zoo_case(name: str) -> Case:
    from tests import zoo

    case_info = json.loads((zoo.FIXTURES / name / "case.json").read_text())

    def build(optimize: bool | None) -> tuple[torch.nn.Module, dict[str, torch.Tensor], Any]:
        folder = shared_root() / "caffe-zoo" / name  # type: ignore[operator]
        net_def, shapes = zoo.load(folder)
        expected = np.load(zoo.FIXTURES / name / "io.npz")
        blobs = [key.split(":", 1)[1] for key in expected.files]
        net = load_caffe(net_def, zoo.draw_weights(net_def, shapes), input_shapes=shapes, outputs=blobs,
                         **_options(optimize))  # fmt: skip
        inputs = {b: torch.from_numpy(v) for b, v in zoo.draw_inputs(shapes).items() if b in net.caffe.inputs}
        return net, inputs, expected

    def run(optimize: bool | None) -> Pairs:
        net, inputs, expected = build(optimize)
        got = _forward(net, inputs)
        pairs: Pairs = {}
        for key in expected.files:
            blob = key.split(":", 1)[1]
            want = expected[key]
            value = zoo.subsample(got[blob], case_info.get("subsample", {}).get(blob, 1))
            _add(pairs, blob, value.reshape(want.shape) if value.size == want.size else value, want)
        return pairs

    def nets(optimize: bool | None) -> list:
        net, inputs, _ = build(optimize)
        return [(net, inputs)]

    return Case(f"zoo/{name}", run, nets, heavy=name in ZOO_HEAVY, needs=("caffe-zoo", name))


REAL_MODELS = ("cifar10_quick_v1", "cifar10_quick_v2", "cifar10_small_hdf5", "espcn", "lenet_mnist_v2",
               "mtcnn_pnet_rnet_onet_lnet", "nin_cifar10_v1", "open_nsfw_resnet50_1by2", "resnet20_cifar10",
               "vdsr")  # fmt: skip
FORKS_REAL = (("yufacedetectnet_v2_ssd", "yufacedetectnet-open-v2.caffemodel"),
              ("enet_cityscapes", "cityscapes_weights.caffemodel"))  # fmt: skip


def cases() -> Iterator[Case]:
    """Every case, in a fixed order (those that need ``../shared`` last)."""
    for group in ("layers", "forks"):
        for folder in sorted(p.parent for p in (FIXTURES / group).glob("*/case.json")):
            yield _prefixed_case(group, folder)
    yield _tiny_fcn_case()
    for folder in sorted(p.parent.name for p in FCN.glob("*/case.json")):
        yield _fcn_case(folder)
    yield _lrcn_case()
    yield _c3d_case()
    for name, weights in FORKS_REAL:
        yield _forks_real_case(name, weights)
    for name in REAL_MODELS:
        yield _real_model_case(name)
    from tests import zoo

    for name in sorted(p.name for p in zoo.FIXTURES.glob("*") if (p / "case.json").exists()):
        yield _zoo_case(name)


@dataclass(frozen=True)
class BlobError:
    """Max |ours - reference| of one blob over a case's runs, for the default and the plain graph,
    and the blob's scale (max |reference|). NaN and -FLT_MAX entries (Caffe's empty MAX windows)
    and infinities (where ours are the same ones) stay out, as in the parity tests."""

    blob: str
    default: float
    plain: float
    scale: float


def max_error(pairs: list[tuple[np.ndarray, np.ndarray]]) -> tuple[float, float]:
    """(max |ours - reference|, max |reference|) over the pairs."""
    error = scale = 0.0
    for got, want in pairs:
        got = np.asarray(got, np.float64).reshape(want.shape) if got.size == want.size else got
        want = np.asarray(want, np.float64)
        if got.shape != want.shape:
            continue
        infinite = np.isinf(want)  # (an infinity must be the same one: else the error is infinite)
        if infinite.any() and not np.array_equal(got[infinite], want[infinite]):
            error = math.inf
        keep = np.isfinite(want) & (np.abs(want) != np.finfo(np.float32).max)
        if not keep.any():
            continue
        error = max(error, float(np.abs(got[keep] - want[keep]).max()))
        scale = max(scale, float(np.abs(want[keep]).max()))
    return error, scale


def compare(default: Pairs, plain: Pairs) -> list[BlobError]:
    """Per blob, the two graphs' errors against the reference."""
    out = []
    for blob in default:
        d, scale = max_error(default[blob])
        p, _ = max_error(plain[blob])
        out.append(BlobError(blob, d, p, scale))
    return out
