"""Real Caffe-written files (../shared/real-caffe-models) against EXPECTED-blobs.json.

The expectations were computed with Google protobuf and BVLC's caffe.proto (and h5py for HDF5),
an independent reader; nothing here is compared with numbers our own code produced.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import need_shared, shared_root

from converters import layer_type, read_net, read_prototxt, read_weights, upgrade_net
from converters.caffe.binary import decode_message, encode_message
from converters.caffe.formats import read_binary_net
from converters.caffe.message import Message
from converters.caffe.text import format_message, parse_text


def _weight_files() -> list[tuple[str, str]]:
    """(model dir, weights file) for every entry of every EXPECTED-blobs.json, or one skip marker."""
    root = shared_root()
    models = root / "real-caffe-models" if root else None
    if models is None or not models.is_dir():
        return [("absent", "absent")]
    out = []
    for expected in sorted(models.glob("*/EXPECTED-blobs.json")):
        for name in json.loads(expected.read_text())["files"]:
            out.append((expected.parent.name, name))
    return out


WEIGHT_FILES = _weight_files()
BINARY_FILES = [(d, f) for d, f in WEIGHT_FILES if not f.endswith(".h5")]
IDS = [f"{d}/{f}" for d, f in WEIGHT_FILES]
BINARY_IDS = [f"{d}/{f}" for d, f in BINARY_FILES]


def _load(model_dir: str, file_name: str) -> tuple[Path, dict]:
    folder = need_shared("real-caffe-models", model_dir)
    expected = json.loads((folder / "EXPECTED-blobs.json").read_text())["files"][file_name]
    return folder / file_name, expected


def _check_sum(values: np.ndarray, expected: float, where: str) -> None:
    """Exactly the correctly rounded sum for small blobs; big ones within float64 summation error."""
    if values.size <= 200_000:
        assert math.fsum(values.tolist()) == expected, where
    else:
        bound = 1e-12 * float(np.abs(values).sum())
        assert abs(float(values.sum()) - expected) <= bound, where


def _values(x: np.ndarray) -> list[float]:
    return [float(v) for v in x.reshape(-1).astype(np.float64)]


# ----------------------------------------------------------------------------------------------
# read_weights: every blob, every statistic

@pytest.mark.parametrize(("model_dir", "file_name"), WEIGHT_FILES, ids=IDS)
def test_read_weights_matches_expected_blobs(model_dir: str, file_name: str) -> None:
    path, expected = _load(model_dir, file_name)
    weights = read_weights(path)
    layers = expected["layers_with_blobs"]
    assert list(weights) == [layer["name"] for layer in layers]
    assert len(weights) == expected["num_layers_with_blobs"]
    for layer in layers:
        blobs = weights[layer["name"]]
        assert len(blobs) == len(layer["blobs"]), layer["name"]
        for blob, exp in zip(blobs, layer["blobs"], strict=True):
            where = f"{layer['name']}[{exp['index']}]"
            assert isinstance(blob, np.ndarray) and blob.dtype == np.float32, where
            assert list(blob.shape) == exp["stored_shape"], where
            assert blob.size == exp["count"], where
            flat = blob.reshape(-1).astype(np.float64)
            _check_sum(flat, exp["sum"], where)
            _check_sum(flat * flat, exp["sum_sq"], where)
            assert float(flat.min()) == exp["min"] and float(flat.max()) == exp["max"], where
            assert _values(flat[:5]) == exp["first5"], where
            assert _values(flat[-5:]) == exp["last5"], where


@pytest.mark.parametrize(("model_dir", "file_name"), BINARY_FILES, ids=BINARY_IDS)
def test_legacy_and_blobshape_dims(model_dir: str, file_name: str) -> None:
    """V1 blobs keep their legacy 4-D shape; V2 blobs their BlobShape, as the file stores them."""
    path, expected = _load(model_dir, file_name)
    net = read_binary_net(path)
    layers = {layer.get("name"): layer for field in ("layer", "layers") for layer in net.getall(field)}
    for layer in expected["layers_with_blobs"]:
        for blob, exp in zip(layers[layer["name"]].getall("blobs"), layer["blobs"], strict=True):
            legacy = [blob.get(k) for k in ("num", "channels", "height", "width")] if "num" in blob else None
            assert legacy == exp["legacy_nchw"]
            dims = list(blob.get("shape").get("dim")) if "shape" in blob else None
            assert dims == exp["blobshape_dim"]
            source = "double_data" if len(blob.getall("double_data")) else "data"
            assert source == exp["dtype_source"]
            assert len(blob.getall("diff")) == exp["n_diff"]


# ----------------------------------------------------------------------------------------------
# read_net: the layer list, net name, V1 enum types, unknown fields

@pytest.mark.parametrize(("model_dir", "file_name"), WEIGHT_FILES, ids=IDS)
def test_layer_list_matches_expected(model_dir: str, file_name: str) -> None:
    path, expected = _load(model_dir, file_name)
    net = read_net(path)
    rows = expected["all_layers"]["rows"]
    assert len(rows) == expected["num_layers_total"]
    if file_name.endswith(".h5"):
        found = [
            ["data", layer.get("name"), None, len(layer.getall("blobs"))] for layer in net.getall("layer")
        ]
        assert "name" not in net
    else:
        found = [
            [field, layer.get("name"), str(layer.get("type")), len(layer.getall("blobs"))]
            for field in ("layers", "layer")
            for layer in net.getall(field)
        ]
        assert net.get("name") == expected["net_name"]
        present = [f for f in ("name", "layers", "layer", "input", "input_dim", "input_shape") if f in net]
        assert sorted(present) == sorted(expected["top_level_fields_present"])
    assert found == rows


@pytest.mark.parametrize(("model_dir", "file_name"), BINARY_FILES, ids=BINARY_IDS)
def test_v1_enum_types_map_to_modern_names(model_dir: str, file_name: str) -> None:
    path, expected = _load(model_dir, file_name)
    net = read_net(path)
    layers = {layer.get("name"): layer for field in ("layer", "layers") for layer in net.getall(field)}
    for exp in expected["layers_with_blobs"]:
        layer = layers[exp["name"]]
        if exp["field"] == "layers":
            assert layer.type == "V1LayerParameter"
            assert str(layer.get("type")) == exp["type_v1_enum"]
            assert layer_type(layer) == exp["type_v2"]
        else:
            assert layer_type(layer) == exp["type"]
    upgraded = {layer.get("name"): layer for layer in upgrade_net(net).getall("layer")}
    for exp in expected["layers_with_blobs"]:
        assert upgraded[exp["name"]].get("type") == (exp.get("type_v2") or exp["type"])


def _unknown_counts(
    msg: Message, path: str, counts: dict[tuple[str, int, int], list[str]], layer: str
) -> None:
    for number, wire, _ in msg.unknown:
        counts.setdefault((path, number, wire), []).append(layer)
    for name, values in msg.fields():
        if isinstance(values, np.ndarray):
            continue
        for value in values:
            if isinstance(value, Message):
                spec = msg.field_spec(name)
                sub = f"{path}.{name}" if path else name
                if spec is not None and spec.repeated:
                    sub += "[]"
                owner = value.get("name") if name in ("layer", "layers") else layer
                _unknown_counts(value, sub, counts, owner)


@pytest.mark.parametrize(("model_dir", "file_name"), BINARY_FILES, ids=BINARY_IDS)
def test_unknown_fields_are_kept_where_the_file_has_them(model_dir: str, file_name: str) -> None:
    """Fork fields (unknown numbers, or known numbers with another wire type) are skipped, not lost."""
    path, expected = _load(model_dir, file_name)
    counts: dict[tuple[str, int, int], list[str]] = {}
    _unknown_counts(read_binary_net(path), "", counts, "")
    wanted = {
        (g["path"], g["field_number"], g["wire_type"]): g for g in expected["unknown_fields"]["groups"]
    }
    assert {key: len(v) for key, v in counts.items()} == {key: g["count"] for key, g in wanted.items()}
    for key, group in wanted.items():
        assert set(group["layers"]) <= set(counts[key])


# ----------------------------------------------------------------------------------------------
# Round trips

def _strip_unknown(msg: Message) -> None:
    msg.unknown = []
    for _, values in msg.fields():
        if not isinstance(values, np.ndarray):
            for value in values:
                if isinstance(value, Message):
                    _strip_unknown(value)


@pytest.mark.parametrize(("model_dir", "file_name"), BINARY_FILES, ids=BINARY_IDS)
def test_binary_reserialization_is_byte_exact(model_dir: str, file_name: str) -> None:
    path, expected = _load(model_dir, file_name)
    raw = path.read_bytes()
    net = read_binary_net(path)
    encoded = encode_message(net)
    assert len(encoded) == expected["reserialized_size_bytes"]
    assert encoded == raw
    assert decode_message(encoded) == net
    _strip_unknown(net)
    assert len(encode_message(net)) == expected["reserialized_size_without_unknown_fields_bytes"]


@pytest.mark.parametrize(("model_dir", "file_name"), BINARY_FILES, ids=BINARY_IDS)
def test_binary_model_survives_text_round_trip(model_dir: str, file_name: str) -> None:
    """Structure (not weights, not unknown binary fields) survives prototxt text and back."""
    path, _ = _load(model_dir, file_name)
    net = read_binary_net(path)
    for field in ("layer", "layers"):
        for layer in net.getall(field):
            layer.remove("blobs")
    _strip_unknown(net)
    assert parse_text(format_message(net)) == net


# ----------------------------------------------------------------------------------------------
# Prototxts: every one parses, the layer names agree with the weights, text round trips

def _prototxts() -> list[str]:
    root = shared_root()
    if root is None:
        return ["absent"]
    paths = sorted(root.glob("real-caffe-models/*/*.prototxt"))
    paths += sorted(root.glob("fcn-reference/**/*.prototxt"))
    return [str(p.relative_to(root)) for p in paths] or ["absent"]


PROTOTXTS = _prototxts()
_TOP_LEVEL_LAYER = re.compile(r"^(layers?)\s*:?\s*\{", re.MULTILINE)


@pytest.mark.parametrize("relative", PROTOTXTS)
def test_every_shared_prototxt_parses_and_round_trips(relative: str) -> None:
    path = need_shared(*Path(relative).parts)
    kind = "SolverParameter" if "solver" in path.name else "NetParameter"
    msg = read_prototxt(path, kind)
    assert parse_text(format_message(msg), kind) == msg
    if kind == "NetParameter":
        text = path.read_text()
        declared = _TOP_LEVEL_LAYER.findall(text)
        assert len(msg.getall("layer")) == declared.count("layer")
        assert len(msg.getall("layers")) == declared.count("layers")
        upgraded = upgrade_net(msg)
        assert all(layer.type == "LayerParameter" for layer in upgraded.getall("layer"))


@pytest.mark.parametrize(("model_dir", "file_name"), WEIGHT_FILES, ids=IDS)
def test_weights_and_paired_prototxt_agree_on_layer_names(model_dir: str, file_name: str) -> None:
    path, expected = _load(model_dir, file_name)
    load = expected["caffe_load"]
    if load.get("layers_in_weights_not_in_prototxt") is None:
        pytest.skip("BVLC Caffe could not load this net's prototxt (fork layers)")
    net = upgrade_net(read_prototxt(path.parent / load["prototxt"]))
    names = {layer.get("name") for layer in net.getall("layer")}
    extra = [name for name in read_weights(path) if name not in names]
    assert sorted(extra) == sorted(load["layers_in_weights_not_in_prototxt"])
    for layer in expected["layers_with_blobs"]:
        if any(blob["caffe_shape"] is not None for blob in layer["blobs"]):
            assert layer["name"] in names
