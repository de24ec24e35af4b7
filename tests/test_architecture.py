"""The architecture's promises: one registry of layer types that every part of the Caffe -> torch
path serves (shapes, coordinate mapping, inspection, conversion, converted files), a new layer type
added in one place, and package floors that only import downwards."""

from __future__ import annotations

import ast
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import converters
from converters import Converted, parse_text, read_prototxt, register_layer, unregister_layer
from converters.caffe import geometry
from converters.caffe.netdef import layer_type
from converters.caffe.traits import DATA_LAYER_TYPES, bvlc_layer_types
from converters.errors import GeometryError
from converters.graph.shapes import blob_shapes, layer_parameter_counts, parameter_count
from converters.inspect import describe

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
LAYER_CASES = sorted(p.parent for p in (FIXTURES / "layers").glob("*/case.json"))
FIXTURE_NETS = (
    sorted(FIXTURES.glob("*/*/net.prototxt"))
    + sorted(FIXTURES.glob("*/*/deploy.prototxt"))
    + sorted(FIXTURES.glob("*/deploy.prototxt"))
    + sorted(FIXTURES.glob("*/net.prototxt"))
)


def test_every_registered_layer_type_runs_in_a_net_real_caffe_ran() -> None:
    """Each converter is held to Caffe by at least one fixture that Caffe made (tools/), so a type
    registered without one fails here."""
    covered: set[str] = set()
    for path in FIXTURE_NETS:
        covered |= {layer_type(layer) for layer in read_prototxt(path).getall("layer")}
    for case in LAYER_CASES:
        covered |= set(json.loads((case / "case.json").read_text())["layer_types"])
    missing = set(converters.registered_types()) - covered - DATA_LAYER_TYPES
    assert not missing, f"layer types with no Caffe-made fixture: {sorted(missing)}"


#: BVLC types whose Backward_cpu computes nothing to check: NOT_IMPLEMENTED (Accuracy, ArgMax,
#: Threshold) or an empty body (HDF5Output); data layers have no bottoms.
NO_CAFFE_BACKWARD = frozenset({"Accuracy", "ArgMax", "Threshold", "HDF5Output"}) | DATA_LAYER_TYPES


def test_every_bvlc_layer_type_has_a_converter_and_caffe_made_forward_and_backward_fixtures() -> None:
    """BVLC master's layer types, as the schema we ship names them (not a hand list): each one
    converts, runs in a fixture that real Caffe made, and where Caffe has a backward pass, has its
    gradients recorded by Caffe too."""
    types = bvlc_layer_types()
    assert {"Convolution", "LSTM", "RNN", "Clip", "Swish", "Filter", "SoftmaxWithLoss"} <= types
    assert not types - set(converters.registered_types()), "BVLC types without a converter"
    forward: set[str] = set()
    for path in FIXTURE_NETS:
        forward |= {layer_type(layer) for layer in read_prototxt(path).getall("layer")}
    backward: set[str] = set()
    for case in LAYER_CASES:
        spec = json.loads((case / "case.json").read_text())
        forward |= set(spec["layer_types"])
        if any(run.get("backward") for run in spec["runs"]):
            backward |= set(spec["layer_types"])
    assert not types - forward - DATA_LAYER_TYPES, "BVLC types without a Caffe-made forward fixture"
    assert not types - backward - NO_CAFFE_BACKWARD, "BVLC types without a Caffe-made backward fixture"


@pytest.mark.parametrize("case", LAYER_CASES, ids=[c.name for c in LAYER_CASES])
def test_shape_engine_gives_the_shapes_caffe_computed_for_every_run(case: Path) -> None:
    spec = json.loads((case / "case.json").read_text())
    net = read_prototxt(case / "net.prototxt")
    # Filter's tops are sized by the selector's values: before any data, Caffe (and the shape
    # engine) sizes them as the bottoms; what it recorded is after the forward pass.
    layers = net.getall("layer")
    by_data = {top for layer in layers if layer_type(layer) == "Filter" for top in layer.getall("top")}
    for run in spec["runs"]:
        shapes = blob_shapes(net, {k: tuple(v) for k, v in run["inputs"].items()})
        for blob, expected in run["outputs"].items():
            if blob not in by_data:
                assert shapes[blob] == tuple(expected), (case.name, run["prefix"], blob)
    counts = layer_parameter_counts(net, {k: tuple(v) for k, v in spec["runs"][0]["inputs"].items()})
    expected_counts = {layer: sum(math.prod(s) for s in shapes) for layer, shapes in spec["params"].items()}
    assert {layer: n for layer, (_, n) in counts.items() if n} == {
        k: v for k, v in expected_counts.items() if v
    }


@pytest.mark.parametrize("path", FIXTURE_NETS, ids=[f"{p.parent.name}/{p.name}" for p in FIXTURE_NETS])
def test_geometry_maps_or_refuses_cleanly_through_every_fixture_net(path: Path) -> None:
    net = read_prototxt(path)
    blobs = {top for layer in net.getall("layer") for top in layer.getall("top")}
    mapped = 0
    for blob in sorted(blobs):
        try:
            geometry.max_stride(net, blob)
            mapped += 1
        except GeometryError as exc:  # a layer without a fixed window: a one-line refusal naming it
            assert "\n" not in str(exc) and str(exc)
    assert mapped >= 1


@pytest.mark.parametrize("path", FIXTURE_NETS, ids=[f"{p.parent.name}/{p.name}" for p in FIXTURE_NETS])
def test_inspect_describes_every_fixture_net(path: Path) -> None:
    summary = describe(path)
    assert summary["num_layers"] == len(read_prototxt(path).getall("layer"))


class _ChannelGain(torch.nn.Module):
    """A toy learned layer: one gain per channel."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.gain = torch.nn.Parameter(torch.empty(channels, device="meta"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gain.reshape(1, -1, *([1] * (x.dim() - 2)))


GAIN_NET = """
layer { name: "input" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 5 dim: 6 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 4 kernel_size: 3 pad: 1 } }
layer { name: "gain" type: "ChannelGain" bottom: "conv" top: "gain" }
layer { name: "pool" type: "Pooling" bottom: "gain" top: "pool"
        pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
"""


def test_a_layer_type_added_in_one_place_serves_every_part_of_the_path(tmp_path: Path) -> None:
    """The recipe of docs/ARCHITECTURE.md: one decorated converter, nothing else."""

    @register_layer("ChannelGain")
    def channel_gain(ctx):  # noqa: ANN001, ANN202
        channels = ctx.bottom_shape(0)[1]
        return Converted(module=_ChannelGain(channels), blobs=[("gain", (channels,))], keeps_shape=True)

    try:
        net = parse_text(GAIN_NET)
        assert blob_shapes(net)["pool"] == (1, 4, 3, 3)
        assert layer_parameter_counts(net)["gain"] == ("ChannelGain", 4)
        assert parameter_count(net) == 4 * 3 * 3 * 3 + 4 + 4
        rng = np.random.default_rng(0)
        weights = {
            "conv": [rng.normal(size=(4, 3, 3, 3)).astype(np.float32), rng.normal(size=4).astype(np.float32)],
            "gain": [np.array([1.0, -2.0, 0.5, 3.0], np.float32)],
        }
        graph = converters.load_caffe(net, weights)
        x = torch.randn(1, 3, 5, 6)
        conv = torch.nn.functional.conv2d(
            x, torch.from_numpy(weights["conv"][0]), torch.from_numpy(weights["conv"][1]), padding=1
        )
        gained = conv * torch.tensor([1.0, -2.0, 0.5, 3.0]).reshape(1, 4, 1, 1)
        expected = torch.nn.functional.max_pool2d(gained, 2, 2, ceil_mode=True)  # Caffe rounds up
        torch.testing.assert_close(graph(data=x)["pool"], expected)
        saved = tmp_path / "gain.safetensors"
        converters.save_converted(graph, saved)
        torch.testing.assert_close(converters.load_converted(saved)(data=x)["pool"], expected)
        with pytest.raises(GeometryError, match="'gain' \\(ChannelGain\\)"):
            geometry.receptive_field(net, "pool")
    finally:
        unregister_layer("ChannelGain")


def test_registering_a_type_twice_is_refused_unless_overridden() -> None:
    with pytest.raises(ValueError, match="'ReLU' already has a converter.*override=True"):
        register_layer("ReLU")(lambda ctx: Converted(function=torch.relu, keeps_shape=True))
    original = converters.layers.registry._CONVERTERS["ReLU"]
    try:
        register_layer("ReLU", override=True)(lambda ctx: Converted(function=torch.abs, keeps_shape=True))
        net = converters.load_caffe(
            parse_text(
                'layer { name: "i" type: "Input" top: "x" '
                "input_param { shape { dim: 1 dim: 1 dim: 1 dim: 2 } } }"
                'layer { name: "r" type: "ReLU" bottom: "x" top: "y" }'
            )
        )
        assert net(x=torch.tensor([[[[-1.0, 2.0]]]]))["y"].tolist() == [[[[1.0, 2.0]]]]
    finally:
        register_layer("ReLU", override=True)(original)


# Which floors each package may import (its own and those below it). CLI modules (``python -m``
# entry points) are the top of their package and may reach the floors above it.
FLOORS = {
    "converters.caffe": {"converters.caffe", "converters.errors", "converters.atomic", "converters.spans"},
    "converters.layers": {
        "converters.caffe",
        "converters.errors",
        "converters.atomic",
        "converters.spans",
        "converters.layers",
    },
    "converters.graph": {
        "converters.caffe",
        "converters.errors",
        "converters.atomic",
        "converters.spans",
        "converters.cache_folder",
        "converters.layers",
        "converters.graph",
    },
    "converters.train": {
        "converters.caffe",
        "converters.errors",
        "converters.atomic",
        "converters.spans",
        "converters.cache_folder",
        "converters.layers",
        "converters.graph",
        "converters.train",
    },
    "converters.fcn": {
        "converters.caffe",
        "converters.errors",
        "converters.layers",
        "converters.graph",
        "converters.fcn",
    },
}
CLI_MODULES = {
    "converters.caffe2torch",
    "converters.inspect",
    "converters.__main__",
    "converters.train.__main__",
}


def _imports(path: Path, package: str) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
                names |= {module} if node.module else {f"{module}.{a.name}" for a in node.names}
            elif node.module:
                names.add(node.module)
    return names


def test_package_floors_import_only_downwards() -> None:
    offences = []
    for path in sorted((ROOT / "converters").rglob("*.py")):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        package = module.rsplit(".", 1)[0] if path.name != "__init__.py" else module.removesuffix(".__init__")
        if module in CLI_MODULES:
            continue
        floor = next((allowed for prefix, allowed in FLOORS.items() if module.startswith(prefix + ".")), None)
        for name in _imports(
            path, package if path.name != "__init__.py" else module.removesuffix(".__init__")
        ):
            if name.split(".")[0] in ("weights", "eval", "reproduce"):
                offences.append(f"{module} imports {name}")
            elif (
                floor is not None
                and name.startswith("converters.")
                and not any(name == allowed or name.startswith(allowed + ".") for allowed in floor)
            ):
                offences.append(f"{module} imports {name}")
    assert not offences, "\n".join(offences)


def test_the_caffe_floor_and_file_reading_need_no_torch() -> None:
    code = (
        "import sys, pkgutil, importlib, converters.caffe as c\n"
        "for m in pkgutil.iter_modules(c.__path__): importlib.import_module('converters.caffe.' + m.name)\n"
        "import converters; converters.read_prototxt\n"
        "import converters.fcn.nets, converters.fcn.datasets, weights\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "False"
