"""The Caffe-made fixtures under tests/fixtures (written by real Caffe, see tools/): our reader
against what Caffe wrote and what Caffe's ``net.params`` held (``case.json``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import FIXTURES

from converters import read_net, read_prototxt, read_weights
from converters.caffe.binary import encode_message
from converters.caffe.formats import read_binary_net

CAFFEMODELS = sorted(FIXTURES.glob("**/*.caffemodel")) if FIXTURES.is_dir() else []
IDS = [str(p.relative_to(FIXTURES)) for p in CAFFEMODELS]


def _need(paths: list[Path]) -> None:
    if not paths:
        pytest.skip("no Caffe-made fixtures in tests/fixtures")


@pytest.mark.parametrize("path", CAFFEMODELS or [None], ids=IDS or ["none"])
def test_caffe_written_caffemodel_reserialises_byte_exactly(path: Path | None) -> None:
    if path is None:
        _need([])
    assert encode_message(read_binary_net(path)) == path.read_bytes()


# Caffe-made weights with a case.json recording the blob shapes Caffe's net.params held (the solver
# fixtures' snapshots record their values in expected.npz instead: tests/test_train_solver.py).
WITH_CASE = [p for p in CAFFEMODELS if (p.parent / "case.json").exists()]


@pytest.mark.parametrize(
    "path", WITH_CASE or [None], ids=[str(p.relative_to(FIXTURES)) for p in WITH_CASE] or ["none"]
)
def test_blob_shapes_are_those_caffe_loaded(path: Path | None) -> None:
    if path is None:
        _need([])
    case = path.parent / "case.json"
    params = json.loads(case.read_text()).get("params", {})
    weights = read_weights(path)
    for layer, shapes in params.items():
        assert [list(blob.shape) for blob in weights[layer]] == shapes, layer
    prototxts = sorted(path.parent.glob("*.prototxt"))
    if prototxts:
        names = {layer.get("name") for layer in read_prototxt(prototxts[0]).getall("layer")}
        assert set(params) <= names


def test_tiny_fcn_hdf5_and_binary_hold_the_same_weights() -> None:
    binary = FIXTURES / "tiny_fcn" / "tiny_fcn.caffemodel"
    hdf5 = FIXTURES / "tiny_fcn" / "tiny_fcn.caffemodel.h5"
    if not (binary.exists() and hdf5.exists()):
        pytest.skip("needs tests/fixtures/tiny_fcn (Caffe-made)")
    from_binary, from_hdf5 = read_weights(binary), read_weights(hdf5)
    assert sorted(from_binary) == sorted(from_hdf5) == list(from_hdf5)
    for name, blobs in from_binary.items():
        assert len(blobs) == len(from_hdf5[name])
        for a, b in zip(blobs, from_hdf5[name], strict=True):
            assert a.shape == b.shape and a.dtype == b.dtype == np.float32
            assert np.array_equal(a, b), name
    # both files list every layer of the net Caffe saved, parameterless ones included
    binary_layers = {layer.get("name") for layer in read_net(binary).getall("layer")}
    assert binary_layers == {layer.get("name") for layer in read_net(hdf5).getall("layer")}
