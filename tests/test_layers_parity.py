"""Every layer case made by real Caffe (tests/fixtures/layers, tools/make_layer_fixtures.py):
our graph must give Caffe's value for every blob Caffe recorded, for every run (odd sizes, 1x1,
batch 2, in-place chains, losses)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from converters import load_caffe
from converters.errors import NetError
from tests.conftest import FIXTURES, REPO, assert_gradients_match_caffe, seeded_total

CASES = sorted(p.parent.name for p in (FIXTURES / "layers").glob("*/case.json"))


def _case(name: str) -> tuple[dict, Path]:
    folder = FIXTURES / "layers" / name
    return json.loads((folder / "case.json").read_text()), folder


def test_the_fixtures_are_present() -> None:
    assert len(CASES) >= 30, "tests/fixtures/layers is missing: regenerate with tools/make_layer_fixtures.py"


@pytest.mark.parametrize("name", CASES)
def test_layer_case_matches_caffe(name: str) -> None:
    case, folder = _case(name)
    npz = np.load(folder / "io.npz")
    losses = any(kind.endswith("Loss") or kind == "Accuracy" for kind in case["layer_types"])
    net = None
    for run in case["runs"]:
        prefix = run["prefix"]
        shapes = {blob: tuple(shape) for blob, shape in run["inputs"].items()}
        if net is None or not case.get("stateful"):  # stateful: the runs continue on one net
            net = load_caffe(
                folder / "net.prototxt",
                folder / "weights.caffemodel",
                with_loss=losses,
                input_shapes=shapes,
                outputs=list(run["outputs"]),
                **case.get("load_options", {}),
            )
        inputs = {blob: torch.from_numpy(npz[f"{prefix}input:{blob}"]) for blob in run["inputs"]}
        with torch.no_grad():
            got = net(**inputs)
        for blob in run["outputs"]:
            want = npz[f"{prefix}output:{blob}"]
            value = got[blob].numpy()
            assert value.shape == want.shape, (
                f"{name} {prefix}{blob}: shape {value.shape} vs Caffe {want.shape}"
            )
            nan = np.isnan(want)
            assert np.array_equal(np.isnan(value), nan), (
                f"{name} {prefix}{blob}: NaN where Caffe has none or not"
            )
            if want.size and nan.all():
                continue
            # -FLT_MAX (an empty MAX window) and infinities (a Log of 0) must match exactly and stay
            # out of the error scale.
            extreme = (np.abs(want) == np.finfo(np.float32).max) | np.isinf(want)
            assert np.array_equal(value[extreme], want[extreme]), (
                f"{name} {prefix}{blob}: -FLT_MAX or an infinity differs"
            )
            want, value = want[~nan & ~extreme], value[~nan & ~extreme]
            scale = max(float(np.abs(want).max()), 1e-6) if want.size else 1.0
            error = float(np.abs(value - want).max()) if want.size else 0.0
            assert error <= 1e-4 * scale, f"{name} {prefix}{blob}: max error {error:g} (scale {scale:g})"


def test_tiny_fcn_from_caffemodel_and_from_hdf5_match_caffe() -> None:
    folder = FIXTURES / "tiny_fcn"
    case = json.loads((folder / "case.json").read_text())
    npz = np.load(folder / "io.npz")
    for weights in ("tiny_fcn.caffemodel", "tiny_fcn.caffemodel.h5"):
        net = load_caffe(folder / "deploy.prototxt", folder / weights, outputs=["score", "score_fr"])
        for run in case["runs"]:
            prefix = run["prefix"]
            inputs = {blob: torch.from_numpy(npz[f"{prefix}input:{blob}"]) for blob in run["inputs"]}
            with torch.no_grad():
                got = net(**inputs)
            for blob in ("score", "score_fr"):
                want = npz[f"{prefix}output:{blob}"]
                assert got[blob].shape == want.shape
                assert float(np.abs(got[blob].numpy() - want).max()) <= 1e-4 * float(np.abs(want).max())


def test_fixture_files_read_back_as_their_generator_wrote_them() -> None:
    """The fixture script's own consistency check (runs without Caffe)."""
    done = subprocess.run(
        [sys.executable, str(REPO / "tools" / "make_layer_fixtures.py"), "--check"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_nan_accuracy_when_every_label_is_ignored_as_in_caffe() -> None:
    case, folder = _case("softmax_loss")
    nan_runs = [
        run
        for run in case["runs"]
        if math.isnan(float(np.load(folder / "io.npz")[f"{run['prefix']}output:accuracy"]))
    ]
    assert nan_runs, "the fixture should hold Caffe's all-ignored run"


def _backward_cases() -> list[str]:
    return [name for name in CASES if any(run.get("backward") for run in _case(name)[0]["runs"])]


@pytest.mark.parametrize("name", _backward_cases())
def test_layer_case_gradients_match_caffes_backward_pass(name: str) -> None:
    """Caffe's backward pass, recorded with the fixture: the seeded diffs of the net's final tops
    (a loss top's diff is its loss weight) give every input's and parameter's diff."""
    case, folder = _case(name)
    npz = np.load(folder / "io.npz")
    net = None
    for run in case["runs"]:
        prefix = run["prefix"]
        shapes = {blob: tuple(shape) for blob, shape in run["inputs"].items()}
        if net is None or not case.get("stateful"):
            net = load_caffe(folder / "net.prototxt", folder / "weights.caffemodel", with_loss=True,
                             input_shapes=shapes, outputs=list(run["outputs"]), optimize=False,
                             **case.get("load_options", {}))  # fmt: skip
        net.zero_grad(set_to_none=True)
        inputs = {b: torch.from_numpy(npz[f"{prefix}input:{b}"]).requires_grad_(True) for b in run["inputs"]}
        seeded_total(net, run, npz, net(**inputs)).backward()
        assert_gradients_match_caffe(name, prefix, npz, net, inputs)


def test_hdf5_output_writes_the_datasets_caffe_writes_once_per_net(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import h5py

    folder = FIXTURES / "hdf5_output"
    inputs = {name: torch.from_numpy(value) for name, value in np.load(folder / "inputs.npz").items()}
    monkeypatch.chdir(tmp_path)  # file_name is relative, as Caffe opened it in its working folder
    net = load_caffe(folder / "net.prototxt")
    assert net(**inputs) == {}  # every blob goes to the file: the net returns nothing
    with h5py.File(folder / "caffe_output.h5", "r") as want, h5py.File(tmp_path / "output.h5", "r") as got:
        assert sorted(got) == sorted(want) == ["data", "label"]
        for name in want:
            assert got[name].dtype == want[name].dtype and got[name].shape == want[name].shape
            assert np.array_equal(got[name][()], want[name][()]), name
    with pytest.raises(RuntimeError, match="writes one batch per net"):
        net(**inputs)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["output.h5"]


def test_infogain_loss_reads_its_matrix_from_source_as_caffe_reads_a_binaryproto(tmp_path: Path) -> None:
    """H from ``infogain_loss_param.source`` (a binary BlobProto, as Caffe's ReadProtoFromBinaryFile
    reads it) gives what Caffe gave with the same H as a third bottom; a missing file is one line
    naming the layer."""
    from converters import Message, read_prototxt
    from converters.caffe.binary import encode_message
    from converters.caffe.formats import array_to_blob

    case, folder = _case("losses_master")
    npz = np.load(folder / "io.npz")
    run = case["runs"][0]
    prefix = run["prefix"]
    (tmp_path / "H.binaryproto").write_bytes(encode_message(array_to_blob(npz[f"{prefix}input:H"])))
    definition = read_prototxt(folder / "net.prototxt")
    info = next(layer for layer in definition.getall("layer") if layer.get("name") == "info")
    info.set("bottom", ["scaled", "label"])
    info.set("infogain_loss_param", Message("InfogainLossParameter", source=str(tmp_path / "H.binaryproto")))
    shapes = {blob: tuple(shape) for blob, shape in run["inputs"].items()}
    net = load_caffe(definition, folder / "weights.caffemodel", with_loss=True, input_shapes=shapes,
                     outputs=["info"])  # fmt: skip
    with torch.no_grad():
        got = net(**{b: torch.from_numpy(npz[f"{prefix}input:{b}"]) for b in run["inputs"]})
    want = float(npz[f"{prefix}output:info"])
    assert abs(float(got["info"]) - want) <= 1e-5 * abs(want)
    info.set("infogain_loss_param", Message("InfogainLossParameter", source=str(tmp_path / "nope")))
    with pytest.raises(NetError, match=r"layer 'info' \(InfogainLoss\): cannot read the infogain matrix"):
        load_caffe(definition, folder / "weights.caffemodel", with_loss=True, input_shapes=shapes)


def test_an_exported_recurrent_net_starts_each_call_from_a_zero_state(tmp_path: Path) -> None:
    """Eager calls carry the recurrent state as Caffe does; a traced export cannot hold state, so
    it starts every call from zeros (a fresh net's first call), and the eager net carries on."""
    from converters.graph.export import export_file

    folder = FIXTURES / "layers" / "recurrent_carry"
    shapes = {"x": (3, 2, 4), "cont": (3, 2)}
    x, cont = torch.randn(3, 2, 4), torch.ones(3, 2)
    net = load_caffe(folder / "net.prototxt", folder / "weights.caffemodel", input_shapes=shapes)
    with torch.no_grad():
        first = net(x=x, cont=cont)["lstm"]
        carried = net(x=x, cont=cont)["lstm"]
    assert not torch.equal(first, carried)  # the second call continued the first's sequences
    export_file(net, tmp_path / "net.pt2", "pt2")
    exported = torch.export.load(tmp_path / "net.pt2").module()
    with torch.no_grad():
        assert torch.equal(exported(x, cont)[0], first)
        third = net(x=x, cont=cont)["lstm"]  # the eager net went on from its second call
    assert not torch.equal(third, first) and not torch.equal(third, carried)


def test_a_loss_over_a_large_map_is_caffes_running_float_sum_to_the_bit() -> None:
    """SoftmaxWithLoss over 50,000 positions: Caffe adds the terms one after another in float, which
    a pairwise sum misses by several roundings (9 units in the last place here)."""
    case, folder = _case("softmax_loss_large")
    npz = np.load(folder / "io.npz")
    run = case["runs"][0]
    net = load_caffe(folder / "net.prototxt", folder / "weights.caffemodel", with_loss=True,
                     input_shapes={b: tuple(s) for b, s in run["inputs"].items()})  # fmt: skip
    with torch.no_grad():
        got = net(**{b: torch.from_numpy(npz[f"run0/input:{b}"]) for b in run["inputs"]})
    for blob in ("loss_sum", "loss_valid"):
        assert got[blob].item() == float(npz[f"run0/output:{blob}"]), blob
