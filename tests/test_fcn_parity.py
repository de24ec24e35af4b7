"""Our FCN graphs compute what real Caffe computed, for all 15 nets (tests/fixtures/fcn/).

The fixtures were made by BVLC Caffe (``tools/make_fcn_fixtures.py``): narrow (width 1/16) deploy
nets of every official model, plus full-width voc-fcn8s, with seeded fan-in scaled weights (random
deconvolutions except in two models; non-default at-once Scale values), run on several input
sizes (1x1, odd sizes, 64x80, batch 2). The weights are regenerated here from the seed and plan
recorded in each ``case.json``, checked against the digest of what Caffe was given.
"""

from __future__ import annotations

import functools
import importlib.util
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from converters import format_message, load_caffe, read_prototxt
from converters.fcn import create
from converters.fcn.nets import MODELS, net_definition
from converters.graph.speed import nnpack_available, optimize_for_cpu

ROOT = Path(__file__).resolve().parent / "fixtures" / "fcn"
FULL = "voc-fcn8s-full"
RELATIVE_TOLERANCE = 1e-4  # max abs error <= RELATIVE_TOLERANCE * max |Caffe's output|


def _load_seeded_weights() -> Any:
    spec = importlib.util.spec_from_file_location("fcn_seeded_weights", ROOT / "seeded_weights.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


seeded_weights = _load_seeded_weights()
FOLDERS = sorted(p.parent.name for p in ROOT.glob("*/case.json"))
SMALL = [folder for folder in FOLDERS if folder != FULL]


@functools.cache
def case(folder: str) -> dict:
    return json.loads((ROOT / folder / "case.json").read_text())


@functools.cache
def arrays(folder: str) -> dict[str, np.ndarray]:
    with np.load(ROOT / folder / "io.npz") as npz:
        return {key: npz[key] for key in npz.files}


def regenerate_weights(folder: str) -> dict[str, list[np.ndarray]]:
    """The arrays Caffe was given, regenerated from the fixture's plan and seed."""
    info = case(folder)["weights"]
    return seeded_weights.make_weights(info["plan"], info["seed"])


@functools.cache
def weights(folder: str) -> dict[str, list[np.ndarray]]:
    """``regenerate_weights``, kept for the narrow fixtures (the full-width one is 538 MB)."""
    assert folder != FULL
    return regenerate_weights(folder)


@functools.cache
def graph(folder: str) -> torch.nn.Module:
    return load_caffe(ROOT / folder / "deploy.prototxt", weights(folder))


def run_inputs(folder: str, run: int) -> dict[str, torch.Tensor]:
    blobs = case(folder)["runs"][run]["inputs"]
    return {blob: torch.from_numpy(arrays(folder)[f"input:{blob}:{run}"]) for blob in blobs}


def assert_matches_caffe(got: torch.Tensor, expected: np.ndarray, what: str) -> None:
    """Max abs error within tolerance; the same argmax over classes wherever Caffe's top two scores
    differ by at least that tolerance (near-ties may flip on float32 noise)."""
    assert tuple(got.shape) == expected.shape, f"{what}: shape {tuple(got.shape)} != Caffe's {expected.shape}"
    ours = got.detach().numpy().astype(np.float64)
    theirs = expected.astype(np.float64)
    tolerance = RELATIVE_TOLERANCE * float(np.abs(theirs).max())
    error = np.abs(ours - theirs)
    worst = np.unravel_index(int(error.argmax()), error.shape)
    assert error.max() <= tolerance, (
        f"{what}: max abs error {error.max():.4g} > {tolerance:.4g} (1e-4 * max|Caffe|) at (n, c, y, x) = "
        f"{tuple(int(i) for i in worst)}: ours {ours[worst]:.6g}, Caffe {theirs[worst]:.6g}"
    )
    top_two = np.sort(theirs, axis=1)[:, -2:]
    clear = (top_two[:, 1] - top_two[:, 0]) >= tolerance
    differ = (ours.argmax(axis=1) != theirs.argmax(axis=1)) & clear
    assert not differ.any(), (
        f"{what}: argmax differs at {int(differ.sum())} of {int(clear.sum())} clear pixels"
    )


def test_every_model_has_a_fixture() -> None:
    assert set(SMALL) == set(MODELS)
    assert FULL in FOLDERS


@pytest.mark.parametrize("folder", FOLDERS)
def test_fixture_prototxt_is_todays_definition(folder: str) -> None:
    """The definition Caffe ran is what ``net_definition`` gives now (else regenerate the fixtures)."""
    info = case(folder)
    definition = net_definition(info["model"], info["definition"]["split"], width=info["definition"]["width"])
    assert (ROOT / folder / "deploy.prototxt").read_text() == format_message(definition)
    assert read_prototxt(ROOT / folder / "deploy.prototxt") == definition


@pytest.mark.parametrize("folder", SMALL)
def test_regenerated_weights_are_those_caffe_was_given(folder: str) -> None:
    info = case(folder)["weights"]
    regenerated = weights(folder)
    assert seeded_weights.weights_digest(regenerated) == info["digest"]
    assert sum(b.size for blobs in regenerated.values() for b in blobs) == info["count"]


def test_fixtures_cover_the_sizes_and_fills_that_matter() -> None:
    """1x1, odd, mid-size and batch-2 runs; random and bilinear deconvolutions; at-once scales."""
    spatial = {tuple(shape[2:]) for f in SMALL for run in case(f)["runs"] for shape in run["inputs"].values()}
    assert (1, 1) in spatial and (64, 80) in spatial
    assert any(h % 2 and w % 2 and h != w for h, w in spatial)
    batch2 = {f for f in SMALL for run in case(f)["runs"] if next(iter(run["inputs"].values()))[0] == 2}
    assert "nyud-fcn32s-color-hha" in batch2 and len(batch2) >= 2
    fills = {f: case(f)["weights"]["deconvolution_fill"] for f in SMALL}
    assert 1 <= list(fills.values()).count("bilinear") <= 2
    scales = [e for e in case("voc-fcn8s-atonce")["weights"]["plan"] if e["type"] == "Scale"]
    assert {e["layer"]: e["value"] for e in scales} == {"scale_pool4": 0.37, "scale_pool3": 0.05}
    stored = weights("voc-fcn8s-atonce")
    assert stored["scale_pool4"][0].min() > 0.1 and stored["scale_pool3"][0].max() < 0.1


@pytest.mark.parametrize(
    ("folder", "run"), [(folder, run) for folder in SMALL for run in range(len(case(folder)["runs"]))]
)
def test_graph_matches_caffe(folder: str, run: int) -> None:
    """Twice: from the second forward at a size, the default graph computes only the rows and columns
    that read the image (converters.graph.cropping)."""
    for call in range(2):
        with torch.no_grad():
            got = graph(folder)(**run_inputs(folder, run))
        expected_blobs = case(folder)["runs"][run]["outputs"]
        assert set(got) == set(expected_blobs)
        for blob in expected_blobs:
            what = f"{folder} run {run} {blob} call {call}"
            assert_matches_caffe(got[blob], arrays(folder)[f"output:{blob}:{run}"], what)


@pytest.mark.parametrize("folder", SMALL)
def test_named_module_matches_caffe(folder: str) -> None:
    info = case(folder)
    module = create(info["model"], width=info["definition"]["width"]).load_caffe(weights(folder))
    run = 1  # the odd-sized run
    with torch.no_grad():
        got = module(**run_inputs(folder, run))
    assert set(got) == set(info["runs"][run]["outputs"])
    for blob in got:
        assert_matches_caffe(got[blob], arrays(folder)[f"output:{blob}:{run}"], f"named {folder} {blob}")


def test_full_width_voc_fcn8s_matches_caffe() -> None:
    info = case(FULL)
    regenerated = regenerate_weights(FULL)
    assert seeded_weights.weights_digest(regenerated) == info["weights"]["digest"]
    net = load_caffe(ROOT / FULL / "deploy.prototxt", regenerated)
    del regenerated
    for run in range(len(info["runs"])):
        for call in range(2):  # (the second reads the fixed values the first kept)
            with torch.no_grad():
                got = net(**run_inputs(FULL, run))
            what = f"{FULL} run {run} call {call}"
            assert_matches_caffe(got["score"], arrays(FULL)[f"output:score:{run}"], what)
    if nnpack_available():  # the CPU-optimised graph (border skipping, calibrated NNPACK) too
        optimize_for_cpu(net)
        for run in range(len(info["runs"])):
            with torch.no_grad():
                got = net(**run_inputs(FULL, run))
            assert_matches_caffe(
                got["score"], arrays(FULL)[f"output:score:{run}"], f"{FULL} run {run} optimised"
            )
