"""``python -m reproduce.train``: the official recipe's pieces and a reduced-width FCN-32s run end to
end on a synthetic VOC-layout dataset (tests/vocgen.py), from a stand-in "vgg16" in a temporary
weights cache (the real one is 528 MB).

The stand-in base passes each colour channel's sign through the trunk (conv1_1 splits every BGR
channel into its positive and negative part, every later layer copies channel ``j % inputs``), so a
reduced-width FCN-32s trained from it can learn the synthetic images' colour -> class map within a
few dozen iterations; a random trunk at this width carries too little to show learning in CI time.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from vocgen import write_voc

import converters
import weights
from converters.caffe.text import format_message, parse_text
from converters.errors import SolverError
from converters.fcn.nets import net_definition
from converters.graph.builder import build_graph
from converters.layers.fillers import bilinear_kernel
from converters.train import load_solver
from eval.datasets import SegmentationDataset, SIFTFlowSegmentation
from eval.metrics import scores
from reproduce.train import _resolve_init, _Stop, main
from reproduce.training import data as training_data
from reproduce.training.init import bilinear_diagonal, start_weights
from reproduce.training.log import read_log
from reproduce.training.recipe import RECIPES, solver_parameter
from reproduce.training.scoring import Scorer

REPO = Path(__file__).resolve().parent.parent
WIDTH = 0.125


def _stand_in_vgg16(width: float) -> dict[str, list[np.ndarray]]:
    """VGG16 classifier blobs (InnerProduct fc6/fc7/fc8) whose trunk carries the colours."""
    net = converters.load_caffe(net_definition("vgg16", "deploy", width=width))
    blobs: dict[str, list[np.ndarray]] = {}
    for name, parameter in net.named_parameters():
        layer, kind = name.rsplit(".", 1)
        a = np.zeros(tuple(parameter.shape), np.float32)
        if kind == "weight" and layer == "conv1_1":
            for j in range(a.shape[0]):
                a[j, (j // 2) % 3, 1, 1] = (1 if j % 2 == 0 else -1) / 64
        elif kind == "weight" and layer in ("fc6", "fc7"):
            k = 7 if layer == "fc6" else 1
            v = a.reshape(a.shape[0], a.shape[1] // (k * k), k, k)
            for j in range(v.shape[0]):
                v[j, j % v.shape[1], k // 2, k // 2] = 1
        elif kind == "weight" and layer == "fc8":
            a = np.random.default_rng(0).normal(size=a.shape).astype(np.float32) * 0.01
        elif kind == "weight":
            for j in range(a.shape[0]):
                a[j, j % a.shape[1], a.shape[2] // 2, a.shape[3] // 2] = 1
        blobs.setdefault(layer, []).append(a)
    return blobs


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    """A weights cache holding the stand-in VGG16 under the official file name."""
    folder = tmp_path_factory.mktemp("cache")
    converters.write_weights(_stand_in_vgg16(WIDTH), weights.cached_path("vgg16", folder))
    return folder


def _voc(root: Path, count: int, size: int, seed: int = 0) -> Path:
    ids = [f"2000_{i:06d}" for i in range(count)]
    write_voc(root, ids, size=(size, size), seed=seed)
    (root / "VOC2011" / "ImageSets" / "Segmentation" / "train.txt").write_text("".join(i + "\n" for i in ids))
    return root


@pytest.fixture(scope="module")
def small_voc(tmp_path_factory) -> Path:
    return _voc(tmp_path_factory.mktemp("voc"), 6, 64)


def _args(voc: Path, cache: Path, out: Path, *extra: str) -> list[str]:
    return [
        "voc-fcn32s", "--voc-root", str(voc), "--train-list", "train", "--val-split", "train",
        "--init", "vgg16", "--cache-dir", str(cache), "--width", str(WIDTH), "--out", str(out),
        "--no-progress", "--display", "1", *extra,
    ]  # fmt: skip


def _caffemodel(out: Path, iteration: int) -> dict[str, list[np.ndarray]]:
    return converters.read_weights(out / "snapshots" / f"train_iter_{iteration}.caffemodel")


def _env() -> dict[str, str]:
    """The environment of a child process (one thread, as ``one_thread``)."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


# ----------------------------------------------------------------------------------------------
# The recipe


def test_the_generated_solvers_are_the_official_solver_prototxts_field_by_field(fcn_reference) -> None:
    for model in RECIPES:
        official = parse_text((fcn_reference / model / "solver.prototxt").read_text(), "SolverParameter")
        ours = parse_text(format_message(solver_parameter(model)), "SolverParameter")
        assert [f for f, _ in ours.fields()] == [f for f, _ in official.fields()], model
        for field, values in official.fields():
            assert ours.getall(field) == values, (model, field)


def test_the_schedule_is_solve_py_s() -> None:
    assert RECIPES["voc-fcn32s"].iterations == 100000 and RECIPES["voc-fcn32s"].score_interval == 4000
    assert RECIPES["voc-fcn8s-atonce"].iterations == 300000
    assert RECIPES["siftflow-fcn16s"].score_interval == 2000 and len(RECIPES["siftflow-fcn16s"].heads) == 2
    assert RECIPES["pascalcontext-fcn32s"].score_interval == 8000
    assert RECIPES["voc-fcn16s"].init == "voc-fcn32s" and RECIPES["voc-fcn-alexnet"].init == "caffenet"


def test_the_image_order_is_the_official_layers_python2_randint_stream() -> None:
    # Python 2's random.seed(1337) is init_by_array([1337]) (as numpy's RandomState([1337])), and its
    # randint(0, n - 1) is int(random() * n) with random() = genrand_res53 (numpy's random_sample).
    reference = np.random.RandomState([training_data.SEED])
    n = 8498
    expected = [int(reference.random_sample() * n) for _ in range(50)]
    assert training_data.official_order(n, 50) == expected
    python3 = random.Random(training_data.SEED)
    assert [python3.randint(0, n - 1) for _ in range(50)] != expected  # Python 3's randint differs


def test_n_processes_take_the_samples_one_process_takes_with_n_times_the_iter_size() -> None:
    one = [training_data.slot(i, 0, 1, 4, p) for i in range(3) for p in range(4)]
    two = sorted(training_data.slot(i, r, 2, 2, p) for i in range(3) for r in range(2) for p in range(2))
    assert one == two == list(range(12))


def test_bilinear_deconvolutions_are_caffes_bilinear_kernels_on_the_diagonal() -> None:
    for size in (4, 16, 64):
        weight = np.full((3, 3, size, size), 7.0, np.float32)
        made = bilinear_diagonal(weight)
        kernel = bilinear_kernel((1, 1, size, size))[0, 0].numpy()
        for i in range(3):
            assert np.allclose(made[i, i], kernel, atol=1e-7)
        assert made[0, 1].max() == made[0, 1].min() == 7.0  # off the diagonal: left as it was
    odd = bilinear_diagonal(np.zeros((1, 1, 63, 63), np.float32))[0, 0]
    assert odd[31, 31] == odd.max() == 1.0 and np.allclose(odd, odd[::-1, ::-1])


def test_vgg16_starts_fcn32s_with_fc6_fc7_as_convolutions_zero_scores_and_bilinear_upsampling(cache) -> None:
    model = "voc-fcn32s"
    net = net_definition(model, "train", width=WIDTH)
    shapes = {"data": (1, 3, 64, 64), "label": (1, 1, 64, 64)}
    meta = build_graph(net, phase="TRAIN", with_loss=True, input_shapes=shapes, device="meta", strict=False)
    start = start_weights(model, ["vgg16"], meta.caffe.parameter_shapes, cache_dir=cache, width=WIDTH)
    base = _stand_in_vgg16(WIDTH)
    assert start.dropped == ["fc8"] and "score_fr" not in start.weights
    assert np.array_equal(start.weights["fc6"][0].reshape(base["fc6"][0].shape), base["fc6"][0])
    assert start.weights["fc6"][0].ndim == 4 and start.weights["fc6"][0].shape[2:] == (7, 7)
    param = solver_parameter(model, nets=False)
    param.set("train_net_param", net)
    solver = load_solver(param, start.weights, input_shapes=shapes)
    state = solver.net.state_dict()
    assert not state["score_fr.weight"].any() and not state["score_fr.bias"].any()  # Caffe's default filler
    upscore = state["upscore.weight"].numpy()
    assert (
        np.allclose(upscore[5, 5], bilinear_kernel((1, 1, 64, 64))[0, 0].numpy()) and upscore[5, 6].max() == 0
    )
    assert np.array_equal(state["conv3_2.weight"].numpy(), base["conv3_2"][0])


# ----------------------------------------------------------------------------------------------
# The command


def test_help_exits_0(capsys) -> None:
    assert main(["--help"]) == 0
    assert "--init" in capsys.readouterr().out


def test_a_missing_dataset_root_is_one_line_naming_the_option_the_variable_and_the_download(
    tmp_path, capsys, monkeypatch
) -> None:
    monkeypatch.delenv("FCN_PORT_SBD", raising=False)
    out = tmp_path / "run"
    assert main(["voc-fcn32s", "--voc-root", str(tmp_path), "--out", str(out)]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith("error: ")
    assert "--sbd-root" in error and "FCN_PORT_SBD" in error and "benchmark" in error
    assert not out.exists()


def test_missing_base_weights_are_one_line_saying_how_to_fetch_them(tmp_path, small_voc, capsys) -> None:
    out = tmp_path / "run"
    args = _args(small_voc, tmp_path / "empty-cache", out, "--iterations", "1")
    assert main(args) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "python -m weights fetch vgg16" in error and "--download" in error
    assert not (out / "snapshots").exists() or not any((out / "snapshots").iterdir())


@pytest.mark.slow
def test_a_reduced_fcn32s_learns_the_synthetic_training_set(tmp_path, cache, one_thread) -> None:
    voc = _voc(tmp_path / "voc", 8, 128)
    out = tmp_path / "run"
    status = main(_args(voc, cache, out, "--iterations", "80", "--score-every", "40", "--score-initial",
                        "--base-lr", "3e-8", "--momentum", "0.9"))  # fmt: skip
    assert status == 0
    records = read_log(out / "log.jsonl")
    scored = [r for r in records if "val" in r]
    assert [r["iter"] for r in scored] == [0, 40, 80]
    first, last = scored[0]["val"], scored[-1]["val"]
    # all pixels start as background: mean IU about 2; training from single images with momentum is
    # noisy (a few points either way from one run to the next), so the bounds leave room
    assert last["semantic"]["mean_iu"] > 20 and last["semantic"]["mean_iu"] > 5 * first["semantic"]["mean_iu"]
    assert last["semantic"]["pixel_acc"] > 2 * first["semantic"]["pixel_acc"]
    assert last["loss"] < 0.8 * first["loss"]
    losses = [r["loss"] for r in records if "loss" in r]
    assert len(losses) == 80 and np.mean(losses[-20:]) < 0.8 * np.mean(losses[:20])
    image = __import__("PIL.Image", fromlist=["Image"]).open(out / "plot.png")
    assert image.size == (800, 560)
    assert (out / "solver.prototxt").is_file() and (out / "train.prototxt").is_file()
    assert (out / "snapshots" / "train_iter_80.solverstate").is_file()


@pytest.mark.slow
def test_resuming_after_ctrl_c_gives_the_parameters_of_an_uninterrupted_run(
    tmp_path, cache, small_voc, one_thread
) -> None:
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    common = ("--iterations", "8", "--score-every", "0", "--base-lr", "1e-8", "--snapshot-every", "100")
    assert main(_args(small_voc, cache, whole, *common)) == 0
    command = [sys.executable, "-m", "reproduce.train", *_args(small_voc, cache, parts, *common)]
    process = subprocess.Popen(command, cwd=REPO, env=_env(), stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and len(read_log(parts / "log.jsonl")) < 2:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    stopped = max(int(p.stem.split("_")[-1]) for p in (parts / "snapshots").glob("*.solverstate"))
    assert 2 <= stopped < 8, stderr
    assert "--resume" in stderr
    assert main([*_args(small_voc, cache, parts, *common), "--resume"]) == 0
    a, b = _caffemodel(whole, 8), _caffemodel(parts, 8)
    assert a.keys() == b.keys()
    for layer in a:
        for x, y in zip(a[layer], b[layer], strict=True):
            assert np.array_equal(x, y), layer
    iters = [r["iter"] for r in read_log(parts / "log.jsonl")]
    assert iters == list(range(1, 9))  # the log of a resumed run has each iteration once


@pytest.mark.slow
def test_two_gloo_processes_give_the_parameters_of_one_process_with_iter_size_2(
    tmp_path, cache, small_voc, one_thread
) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    common = ("--iterations", "3", "--score-every", "0", "--base-lr", "1e-8")
    assert main([*_args(small_voc, cache, one, *common), "--iter-size", "2"]) == 0
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "reproduce.train", *_args(small_voc, cache, two, *common), "--iter-size", "1",
    ]  # fmt: skip
    done = subprocess.run(command, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    a, b = _caffemodel(one, 3), _caffemodel(two, 3)
    moved = 0
    start = start_weights(
        "voc-fcn32s", ["vgg16"], {k: [x.shape for x in v] for k, v in a.items()}, cache_dir=cache, width=WIDTH
    ).weights
    for layer in a:
        for i, (x, y) in enumerate(zip(a[layer], b[layer], strict=True)):
            scale = float(np.abs(x).max()) or 1.0
            assert np.allclose(x, y, rtol=0, atol=1e-5 * scale), layer
            if layer in start and not np.array_equal(x, start[layer][i]):
                moved += 1
    assert moved > 10  # the runs did train (the comparison is not between two untouched nets)
    losses_one = [r["loss"] for r in read_log(one / "log.jsonl")]
    losses_two = [r["loss"] for r in read_log(two / "log.jsonl")]
    assert np.allclose(losses_one, losses_two, rtol=1e-5)
    assert torch.distributed.is_available()


def test_the_feeds_are_the_official_data_layers_tops_for_every_model() -> None:
    for model in RECIPES:
        for split in (RECIPES[model].train_split, RECIPES[model].val_split):
            net = net_definition(model, split, width=0.0625)
            python = [layer for layer in net.getall("layer") if str(layer.get("type")) == "Python"]
            assert len(python) == 1, model
            assert list(python[0].getall("top")) == list(training_data.input_blobs(model)), (model, split)


def test_the_colour_depth_net_starts_from_vgg16_with_the_mean_colour_filter_for_depth(cache) -> None:
    model = "nyud-fcn32s-color-d"
    net = net_definition(model, "trainval", width=WIDTH)
    shapes = {"color": (1, 3, 64, 64), "depth": (1, 1, 64, 64), "label": (1, 1, 64, 64)}
    meta = build_graph(net, phase="TRAIN", with_loss=True, input_shapes=shapes, device="meta", strict=False)
    start = start_weights(model, ["vgg16"], meta.caffe.parameter_shapes, cache_dir=cache, width=WIDTH)
    conv1 = _stand_in_vgg16(WIDTH)["conv1_1"]
    bgrd = start.weights["conv1_1_bgrd"]
    assert np.array_equal(bgrd[0][:, :3], conv1[0]) and np.allclose(bgrd[0][:, 3], conv1[0].mean(axis=1))
    assert np.array_equal(bgrd[1], conv1[1]) and "conv1_1" not in start.weights


def test_the_colour_hha_net_takes_one_start_per_stream(cache) -> None:
    model = "nyud-fcn32s-color-hha"
    net = net_definition(model, "trainval", width=WIDTH)
    shapes = {"color": (1, 3, 64, 64), "hha": (1, 3, 64, 64), "label": (1, 1, 64, 64)}
    meta = build_graph(net, phase="TRAIN", with_loss=True, input_shapes=shapes, device="meta", strict=False)
    start = start_weights(model, ["vgg16"], meta.caffe.parameter_shapes, cache_dir=cache, width=WIDTH)
    base = _stand_in_vgg16(WIDTH)
    for stream in ("color", "hha"):
        assert np.array_equal(start.weights[f"conv4_2{stream}"][0], base["conv4_2"][0])
    assert "score_frcolor" not in start.weights and "upscore" in start.weights


class _Memory(SegmentationDataset):
    """A SIFT Flow-like dataset held in memory (two heads)."""

    name = "memory"
    heads = SIFTFlowSegmentation.heads

    def __init__(self, count: int) -> None:
        rng = np.random.default_rng(1)
        self.samples = [
            (
                torch.from_numpy(rng.normal(size=(3, 40, 48)).astype(np.float32) * 50),
                {
                    "semantic": rng.integers(0, 33, (40, 48)).astype(np.uint8),
                    "geometric": np.where(
                        rng.random((40, 48)) < 0.1, 255, rng.integers(0, 3, (40, 48))
                    ).astype(np.uint8),
                },
            )
            for _ in range(count)
        ]
        super().__init__([str(i) for i in range(count)])

    def files(self, image_id: str) -> list[Path]:
        return []

    def load_input(self, image_id: str, modality: str) -> torch.Tensor:
        return self.samples[int(image_id)][0]

    def load_labels(self, image_id: str) -> dict[str, np.ndarray]:
        return self.samples[int(image_id)][1]


def test_scoring_gives_score_py_s_metrics_for_each_head_and_the_mean_loss() -> None:
    model = "siftflow-fcn16s"
    dataset = _Memory(3)
    scorer = Scorer(RECIPES[model], dataset, width=0.0625)
    net = build_graph(
        net_definition(model, "test", width=0.0625), phase="TEST", with_loss=True, strict=False, seed=3,
        input_shapes={"data": (1, 3, 40, 48), "sem": (1, 1, 40, 48), "geo": (1, 1, 40, 48)},
        outputs=["score_sem", "score_geo", "loss", "loss_geo"],
    )  # fmt: skip
    result = scorer(dict(net.named_parameters()))
    matrices = {"semantic": np.zeros((33, 33)), "geometric": np.zeros((3, 3))}
    loss = 0.0
    with torch.no_grad():
        for i in range(3):
            x, labels = dataset.samples[i]
            sem, geo = (
                torch.from_numpy(labels[h].astype(np.float32))[None, None] for h in ("semantic", "geometric")
            )
            out = net(data=x[None], sem=sem, geo=geo)
            loss += float(out["loss"]) + float(out["loss_geo"])
            for head, blob in (("semantic", "score_sem"), ("geometric", "score_geo")):
                truth, predicted = labels[head].ravel().astype(int), out[blob][0].argmax(0).numpy().ravel()
                n = matrices[head].shape[0]
                keep = truth < n
                matrices[head] += np.bincount(n * truth[keep] + predicted[keep], minlength=n * n).reshape(
                    n, n
                )
    assert result["loss"] == pytest.approx(loss / 3, rel=1e-6)
    for head, matrix in matrices.items():
        expected = scores(matrix, exclude=dataset.heads[0 if head == "semantic" else 1].exclude).metrics()
        assert result[head]["mean_iu"] == pytest.approx(expected["mean_iu"])
        assert result[head]["pixel_acc"] == pytest.approx(expected["pixel_acc"])
        assert result[head]["fw_iu"] == pytest.approx(expected["fw_iu"])


def _train_shapes(model: str, split: str = "train") -> dict[str, list[tuple[int, ...]]]:
    net = net_definition(model, split, width=WIDTH)
    shapes = {blob: (1, 1 if kind == "label" else 3, 64, 64) for blob, (kind, _) in
              training_data.input_blobs(model).items()}  # fmt: skip
    meta = build_graph(net, phase="TRAIN", with_loss=True, input_shapes=shapes, device="meta", strict=False)
    return meta.caffe.parameter_shapes


def test_the_next_stage_starts_from_the_previous_one_by_name(tmp_path) -> None:
    rng = np.random.default_rng(0)
    previous = {layer: [rng.normal(size=s).astype(np.float32) for s in shapes]
                for layer, shapes in _train_shapes("voc-fcn32s").items()}  # fmt: skip
    converters.write_weights(previous, weights.cached_path("voc-fcn32s", tmp_path))  # the "released" 32s
    start = start_weights(
        "voc-fcn16s", ["voc-fcn32s"], _train_shapes("voc-fcn16s"), cache_dir=tmp_path, width=WIDTH
    )
    assert start.dropped == ["upscore"]
    for layer in ("conv1_1", "fc7", "score_fr"):
        assert all(np.array_equal(a, b) for a, b in zip(start.weights[layer], previous[layer], strict=True))
    assert "score_pool4" not in start.weights  # new: Caffe's filler (zero)
    for layer in ("upscore2", "upscore16"):
        weight = start.weights[layer][0]
        assert np.allclose(weight[3, 3], bilinear_kernel((1, 1) + weight.shape[2:])[0, 0].numpy())
    (tmp_path / "run" / "snapshots").mkdir(parents=True)
    converters.write_weights(previous, tmp_path / "run" / "snapshots" / "train_iter_8.caffemodel")
    (tmp_path / "run" / "snapshots" / "train_iter_8.solverstate").write_bytes(b"")
    assert _resolve_init([str(tmp_path / "run")]) == [
        str(tmp_path / "run" / "snapshots" / "train_iter_8.caffemodel")
    ]


def test_fcn_alexnet_starts_from_caffenet_with_fc6_fc7_as_convolutions(tmp_path) -> None:
    net = converters.load_caffe(net_definition("caffenet", "deploy", width=WIDTH))
    blobs: dict[str, list[np.ndarray]] = {}
    for name, parameter in net.named_parameters():
        blobs.setdefault(name.rsplit(".", 1)[0], []).append(parameter.detach().numpy().copy())
    converters.write_weights(blobs, weights.cached_path("caffenet", tmp_path))
    shapes = _train_shapes("voc-fcn-alexnet")
    start = start_weights("voc-fcn-alexnet", ["caffenet"], shapes, cache_dir=tmp_path, width=WIDTH)
    assert start.dropped == ["fc8"] and start.weights["fc6"][0].shape[2:] == (6, 6)
    assert np.array_equal(start.weights["fc6"][0].reshape(blobs["fc6"][0].shape), blobs["fc6"][0])
    assert np.array_equal(start.weights["conv2"][0], blobs["conv2"][0])  # grouped convolution kept
    assert start.weights["upscore"][0].shape[2:] == (63, 63)


def test_sigterm_asks_for_a_snapshot_and_only_a_second_ctrl_c_aborts(capsys) -> None:
    stop = _Stop()
    stop._handler(signal.SIGTERM, None)
    stop._handler(signal.SIGTERM, None)  # torchrun's SIGTERM after the terminal's Ctrl-C: no abort
    assert stop.requested
    stop._handler(signal.SIGINT, None)
    with pytest.raises(KeyboardInterrupt):
        stop._handler(signal.SIGINT, None)
    assert capsys.readouterr().err.count("stopping after this iteration") == 1


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[1, 2]", "holds a list, not the run's settings"),
        ('"voc-fcn32s"', "holds a str, not the run's settings"),
        ("{not json", "is not a readable run.json"),
        ('{"model": null}', "'model' is None"),
        ('{"model": "voc-fcn32s", "width": null}', "'width' is None"),
        ('{"model": "voc-fcn32s", "base_lr": "fast"}', "'base_lr' is 'fast'"),
        ('{"model": "voc-fcn32s", "iter_size": 1.5}', "'iter_size' is 1.5"),
        ('{"model": "voc-fcn32s", "momentum": NaN}', "'momentum' is nan"),
        ('{"model": "voc-fcn32s", "init": [1]}', "'init' is [1]"),
        ('{"model": "voc-fcn32s", "width": 2.0}', "'width' is 2.0"),
        ('{"model": "voc-fcn32s", "seed": 9223372036854775808}', "'seed' is 9223372036854775808"),
        ('{"model": "voc-fcn32s", "base_lr": -1}', "'base_lr' is -1"),
        ('{"model": "voc-fcn32s", "iterations": -5}', "'iterations' is -5"),
        ('{"model": "voc-fcn32s", "processes": null}', "'processes' is None"),
        ('{"model": "voc-fcn32s", "roots": ["voc"]}', "'roots' is ['voc']"),
    ],
)
def test_a_damaged_run_json_is_one_line_on_resume(
    content, message, tmp_path, cache, small_voc, capsys
) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "run.json").write_text(content)
    assert main([*_args(small_voc, cache, out), "--resume"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --resume: ") and message in err and "\n" not in err


def test_a_moved_run_folder_resumes_from_its_own_caffemodel(tmp_path, monkeypatch) -> None:
    """A solverstate names its caffemodel by the path it was written at; Caffe reads that path. A
    resumed run folder reads the caffemodel beside the solverstate first, so a moved or copied run
    never picks up another run's weights left at the old path."""
    folder = Path(__file__).parent / "fixtures" / "solvers" / "resume_sgd"
    moved = tmp_path / "moved"
    moved.mkdir()
    for name in ("train_iter_5.solverstate", "train_iter_5.caffemodel"):
        (moved / name).write_bytes((folder / "caffe_snapshot" / name).read_bytes())
    monkeypatch.chdir(tmp_path)  # the path the solverstate names now holds another net's weights
    (tmp_path / "snap").mkdir()
    stale = {"conv1": [np.zeros((1, 1, 1, 1), np.float32)]}
    converters.write_weights(stale, tmp_path / "snap" / "train_iter_5.caffemodel")
    solver = converters.load_solver(folder / "solver.prototxt", folder / "init.caffemodel")
    with pytest.raises(SolverError, match="layer 'conv1'"):
        solver.restore(moved / "train_iter_5.solverstate")  # as Caffe: the path as written
    solver.restore(moved / "train_iter_5.solverstate", beside=True)
    assert solver.iter == 5


def test_a_label_of_another_size_than_its_picture_is_one_line_naming_the_image() -> None:
    """Caffe's loss refuses scores and labels of different sizes; the feeds say so first, naming
    the image, instead of a crash (or a silent broadcast) inside the loss."""
    from converters.errors import UsageError
    from reproduce.training.data import feeds_of

    sample = {
        "id": "2008_000123",
        "inputs": {"color": torch.zeros(3, 40, 60)},
        "labels": {"semantic": torch.zeros(40, 50, dtype=torch.uint8)},
    }
    expected = r"2008_000123: its pictures and labels differ in size \(data 40x60, label 40x50\)"
    with pytest.raises(UsageError, match=expected):
        feeds_of("voc-fcn32s", sample)
    sample["labels"]["semantic"] = torch.zeros(40, 60, dtype=torch.uint8)
    assert feeds_of("voc-fcn32s", sample)["label"].shape == (1, 1, 40, 60)


def test_the_image_order_keeps_a_bounded_window_and_still_gives_the_same_stream_far_out_and_back() -> None:
    n = 8498
    reference = np.random.RandomState([training_data.SEED])
    stream = [int(reference.random_sample() * n) for _ in range(30_000)]
    order = training_data.OfficialOrder(n)
    assert [order[k] for k in (0, 1, 29_999, 12_345, 3)] == [stream[k] for k in (0, 1, 29_999, 12_345, 3)]
    assert len(order._drawn) <= 2 * order.WINDOW


def test_a_huge_iter_size_does_not_draw_the_next_iterations_sample_ahead_of_this_ones() -> None:
    class Recording(training_data.FeedSource):
        def __init__(self) -> None:
            super().__init__("voc-fcn32s", dataset=[0] * 10)  # type: ignore[arg-type]
            self.loaded: list[int] = []

        def _load(self, k: int) -> dict:
            self.loaded.append(k)
            self.order[k]
            return {}

    source = Recording()
    try:
        next_feeds = training_data.pass_feeds(source, 0, 0, 1, 2**31 - 1)
        next_feeds()
        next_feeds()
        source._pool.shutdown(wait=True)
        assert max(source.loaded) <= 3 and len(source.order._drawn) <= 2 * source.order.WINDOW
    finally:
        source.close()
