"""The non-VOC datasets on tiny generated copies of their layouts: label handling as the official data
layers define it (void -> 255, label shifts, Context's 459 -> 59 mapping), inputs, and the CLIs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

import eval.runner as runner
from eval import context, nyud, sbd, siftflow
from eval.datasets import (
    SIFTFLOW_SUBDIR,
    ContextSegmentation,
    DatasetError,
    NYUDSegmentation,
    SBDSegmentation,
    SIFTFlowSegmentation,
)
from eval.models import LoadedModel

RNG_SEED = 1234


def rgb_image(rng, height, width) -> np.ndarray:
    return rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)


# --- SIFT Flow ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def siftflow_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("siftflow")
    rng = np.random.default_rng(RNG_SEED)
    for kind in ("Images", "SemanticLabels", "GeoLabels"):
        (root / kind / SIFTFLOW_SUBDIR).mkdir(parents=True)
    ids = ["coast_a1", "street_b2", "forest_c3"]
    truth = {}
    for image_id in ids:
        Image.fromarray(rgb_image(rng, 16, 16)).save(root / "Images" / SIFTFLOW_SUBDIR / f"{image_id}.png")
        (root / "Images" / SIFTFLOW_SUBDIR / f"{image_id}.png").rename(
            root / "Images" / SIFTFLOW_SUBDIR / f"{image_id}.jpg"
        )
        semantic = rng.integers(0, 34, size=(16, 16)).astype(np.int32)  # 0 void, 1..33 classes
        geometric = rng.integers(-1, 4, size=(16, 16)).astype(np.int16)  # -1 and 0 void, 1..3 classes
        scipy.io.savemat(root / "SemanticLabels" / SIFTFLOW_SUBDIR / f"{image_id}.mat", {"S": semantic})
        scipy.io.savemat(root / "GeoLabels" / SIFTFLOW_SUBDIR / f"{image_id}.mat", {"S": geometric})
        truth[image_id] = (semantic, geometric)
    (root / "test.txt").write_text("\n".join(ids) + "\n")
    return root, truth


def test_siftflow_labels_shift_to_zero_based_with_255_void(siftflow_root) -> None:
    root, truth = siftflow_root
    dataset = SIFTFlowSegmentation(root, "test")
    assert [h.name for h in dataset.heads] == ["semantic", "geometric"]
    for index, image_id in enumerate(dataset.ids):
        semantic, geometric = truth[image_id]
        sample = dataset[index]
        got_semantic = sample["labels"]["semantic"].numpy()
        got_geometric = sample["labels"]["geometric"].numpy()
        for value in range(34):
            expected = 255 if value == 0 else value - 1
            assert (got_semantic[semantic == value] == expected).all()
        for value in (-1, 0, 1, 2, 3):
            expected = 255 if value <= 0 else value - 1
            assert (got_geometric[geometric == value] == expected).all()
    assert sample["inputs"]["color"].dtype == torch.float32 and sample["inputs"]["color"].shape == (3, 16, 16)


def test_siftflow_input_is_bgr_minus_the_layer_mean(siftflow_root) -> None:
    root, _ = siftflow_root
    dataset = SIFTFlowSegmentation(root, "test")
    image_id = dataset.ids[0]
    with Image.open(root / "Images" / SIFTFLOW_SUBDIR / f"{image_id}.jpg") as image:
        rgb = np.array(image, dtype=np.float32)
    expected = (rgb[:, :, ::-1] - np.array((114.578, 115.294, 108.353), dtype=np.float32)).transpose(2, 0, 1)
    assert np.array_equal(dataset[0]["inputs"]["color"].numpy(), expected)


class TwoHeadNet(torch.nn.Module):
    """Predicts (per pixel) semantic class = R mod 33 and geometric class = G mod 3 of the raw image."""

    mean = torch.tensor((114.578, 115.294, 108.353), dtype=torch.float32).view(1, 3, 1, 1)

    def forward(self, data: torch.Tensor) -> dict[str, torch.Tensor]:
        bgr = torch.round(data + self.mean)
        red, green = bgr[:, 2].long(), bgr[:, 1].long()
        semantic = torch.nn.functional.one_hot(red % 33, 33).permute(0, 3, 1, 2).float()
        geometric = torch.nn.functional.one_hot(green % 3, 3).permute(0, 3, 1, 2).float()
        return {"score_sem": semantic, "score_geo": geometric}


def test_siftflow_cli_scores_both_heads(siftflow_root, tmp_path, monkeypatch) -> None:
    root, truth = siftflow_root
    two_heads = LoadedModel(TwoHeadNet(), "two heads")
    monkeypatch.setattr(runner, "load_trained_model", lambda spec, device: two_heads)
    out = tmp_path / "r.json"
    saved = tmp_path / "pred"
    args = (
        f"--model x --siftflow-root {root} --workers 0 --no-progress --json {out} --save-predictions {saved}"
    )
    assert siftflow.main(args.split()) == 0
    report = json.loads(out.read_text())
    assert set(report["heads"]) == {"semantic", "geometric"}
    # expected confusion from the saved PNG images' own pixels (PNG, lossless), computed with loops
    for head, column, n, raw_index in (("semantic", 0, 33, 0), ("geometric", 1, 3, 1)):
        expected = np.zeros((n, n), dtype=np.int64)
        for image_id, labels in truth.items():
            with Image.open(root / "Images" / SIFTFLOW_SUBDIR / f"{image_id}.jpg") as image:
                rgb = np.array(image)
            raw = labels[raw_index].astype(np.int64)
            guess = rgb[:, :, column].astype(np.int64) % n
            for truth_value, predicted in zip(raw.ravel(), guess.ravel(), strict=True):
                if truth_value >= 1:
                    expected[truth_value - 1, predicted] += 1
        assert np.array_equal(np.array(report["heads"][head]["confusion"]), expected), head
        assert (saved / head / f"{next(iter(truth))}.png").is_file()
    semantic = report["heads"]["semantic"]
    assert all(semantic["per_class_iu"][c] is None for c in (8, 10, 15))  # cow, desert, moon left out
    # the saved predictions evaluate to the same confusion
    again = tmp_path / "again.json"
    args = f"--predictions {saved} --siftflow-root {root} --workers 0 --no-progress --json {again}"
    assert siftflow.main(args.split()) == 0
    assert (
        json.loads(again.read_text())["heads"]["geometric"]["confusion"]
        == report["heads"]["geometric"]["confusion"]
    )


# --- NYUDv2 ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def nyud_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("nyud")
    rng = np.random.default_rng(RNG_SEED + 1)
    for folder in ("data/images", "data/hha", "data/depth", "segmentation"):
        (root / folder).mkdir(parents=True)
    ids = ["5001", "5002"]
    truth = {}
    for image_id in ids:
        Image.fromarray(rgb_image(rng, 12, 10)).save(root / "data" / "images" / f"img_{image_id}.png")
        Image.fromarray(rgb_image(rng, 12, 10)).save(root / "data" / "hha" / f"img_{image_id}.png")
        depth = rng.integers(500, 10000, size=(12, 10)).astype(np.uint16)
        Image.fromarray(depth).save(root / "data" / "depth" / f"img_{image_id}.png")
        label = rng.integers(0, 41, size=(12, 10)).astype(np.uint8)  # 0 void, 1..40
        scipy.io.savemat(root / "segmentation" / f"img_{image_id}.mat", {"segmentation": label})
        truth[image_id] = (label, depth)
    (root / "test.txt").write_text("\n".join(ids) + "\n")
    return root, truth


def test_nyud_labels_and_inputs(nyud_root) -> None:
    root, truth = nyud_root
    dataset = NYUDSegmentation(root, "test", ["color", "hha", "depth", "color-depth"])
    sample = dataset[0]
    label, depth = truth[dataset.ids[0]]
    got = sample["labels"]["semantic"].numpy()
    assert (got[label == 0] == 255).all() and np.array_equal(got[label > 0], label[label > 0] - 1)
    log_depth = sample["inputs"]["depth"].numpy()
    assert log_depth.shape == (1, 12, 10)
    assert np.allclose(log_depth[0], np.log(depth.astype(np.float64)) - 7.844, atol=1e-5)
    with Image.open(root / "data" / "hha" / f"img_{dataset.ids[0]}.png") as image:
        hha = np.array(image, dtype=np.float32)
    assert np.array_equal(sample["inputs"]["hha"].numpy()[0], hha[:, :, 0] - np.float32(132.431))
    color = sample["inputs"]["color"].numpy()
    with Image.open(root / "data" / "images" / f"img_{dataset.ids[0]}.png") as image:
        rgb = np.array(image, dtype=np.float32)
    assert np.array_equal(color[0], rgb[:, :, 2] - np.float32(116.190))  # B channel first
    fused = sample["inputs"]["color-depth"].numpy()
    assert (
        fused.shape == (4, 12, 10)
        and np.array_equal(fused[:3], color)
        and np.array_equal(fused[3], log_depth[0])
    )


class LateFusionNet(torch.nn.Module):
    """Two inputs like nyud-fcn32s-color-hha; predicts class (R + HHA's first channel) mod 40."""

    def forward(self, color: torch.Tensor, hha: torch.Tensor) -> dict[str, torch.Tensor]:
        assert color.shape[1] == 3 and hha.shape[1] == 3
        red = torch.round(color[:, 2] + 92.318).long()
        first = torch.round(hha[:, 0] + 132.431).long()
        return {"score": torch.nn.functional.one_hot((red + first) % 40, 40).permute(0, 3, 1, 2).float()}


def test_nyud_cli_feeds_color_and_hha_by_input_name(nyud_root, tmp_path, monkeypatch) -> None:
    root, truth = nyud_root
    model = LoadedModel(LateFusionNet(), "late fusion", "nyud-fcn32s-color-hha", ["color", "hha"])
    monkeypatch.setattr(runner, "load_trained_model", lambda spec, device: model)
    out = tmp_path / "r.json"
    assert nyud.main(f"--model x --nyud-root {root} --workers 0 --no-progress --json {out}".split()) == 0
    expected = np.zeros((40, 40), dtype=np.int64)
    for image_id, (label, _) in truth.items():
        with Image.open(root / "data" / "images" / f"img_{image_id}.png") as image:
            red = np.array(image)[:, :, 0].astype(np.int64)
        with Image.open(root / "data" / "hha" / f"img_{image_id}.png") as image:
            first = np.array(image)[:, :, 0].astype(np.int64)
        guess = (red + first) % 40
        for truth_value, predicted in zip(label.ravel(), guess.ravel(), strict=True):
            if truth_value > 0:
                expected[truth_value - 1, predicted] += 1
    report = json.loads(out.read_text())
    assert np.array_equal(np.array(report["heads"]["semantic"]["confusion"]), expected)
    assert report["heads"]["semantic"]["published"]["mean_iu"] == 32.8  # CVPR Table 4, RGB-HHA


def test_nyud_wrong_input_override_is_refused(nyud_root, monkeypatch, capsys) -> None:
    root, _ = nyud_root
    model = LoadedModel(LateFusionNet(), "late fusion", None, ["color", "hha"])
    monkeypatch.setattr(runner, "load_trained_model", lambda spec, device: model)
    assert nyud.main(f"--model x --nyud-root {root} --workers 0 --input color=rgb".split()) == 2
    assert "provides color, hha, depth, color-depth" in capsys.readouterr().err


# --- PASCAL-Context and SBD --------------------------------------------------------------------


def test_context_maps_full_labels_to_the_59_class_task(tmp_path) -> None:
    voc = tmp_path / "VOCdevkit" / "VOC2010"
    (voc / "JPEGImages").mkdir(parents=True)
    (voc / "ImageSets" / "Main").mkdir(parents=True)
    (tmp_path / "context" / "trainval").mkdir(parents=True)
    (voc / "ImageSets" / "Main" / "val.txt").write_text("2008_000001\n")
    Image.fromarray(np.zeros((4, 6, 3), np.uint8)).save(voc / "JPEGImages" / "2008_000001.jpg")
    # full-label ids (labels.txt): 2 aeroplane, 397 table, 19 bedclothes, 80 cloth, 458 wood; 1 accordion
    # and 0 are not in the 59-class task and become background 0
    full = np.array([[2, 397, 19, 80, 458, 1], [0, 2, 2, 458, 3, 23]], dtype=np.uint16)
    scipy.io.savemat(tmp_path / "context" / "trainval" / "2008_000001.mat", {"LabelMap": full})
    dataset = ContextSegmentation(tmp_path, tmp_path / "context", "val")
    label = dataset[0]["labels"]["semantic"].numpy()
    assert label.tolist() == [[1, 11, 52, 28, 59, 0], [0, 1, 1, 59, 0, 2]]
    full[0, 3] = 85  # computer
    scipy.io.savemat(tmp_path / "context" / "trainval" / "2008_000001.mat", {"LabelMap": full})
    assert dataset[0]["labels"]["semantic"].numpy()[0, 3] == 29
    assert dataset.heads[0].num_classes == 60 and dataset.heads[0].classes[52] == "bedcloth"


def test_sbd_reads_gtcls_segmentation(tmp_path) -> None:
    root = tmp_path / "benchmark_RELEASE" / "dataset"
    (root / "img").mkdir(parents=True)
    (root / "cls").mkdir()
    label = np.array([[0, 15, 15], [255, 3, 0]], dtype=np.uint8)
    scipy.io.savemat(
        root / "cls" / "2008_000002.mat", {"GTcls": {"Segmentation": label, "CategoriesPresent": [3]}}
    )
    Image.fromarray(np.zeros((2, 3, 3), np.uint8)).save(root / "img" / "2008_000002.jpg")
    (root / "val.txt").write_text("2008_000002\n")
    dataset = SBDSegmentation(tmp_path, "val")
    assert np.array_equal(dataset[0]["labels"]["semantic"].numpy(), label)


@pytest.mark.parametrize(
    ("main", "options", "fragment"),
    [
        (context.main, ["--voc-root", "{tmp}", "--context-root", "{tmp}"], "not a VOC 2010 root"),
        (sbd.main, ["--sbd-root", "{tmp}"], "not an SBD root"),
        (nyud.main, ["--nyud-root", "{tmp}"], "not an NYUDv2 root"),
        (siftflow.main, ["--siftflow-root", "{tmp}"], "not a SIFT Flow root"),
    ],
)
def test_missing_roots_give_one_clear_error(main, options, fragment, tmp_path, capsys) -> None:
    args = ["--predictions", str(tmp_path)] + [o.format(tmp=tmp_path) for o in options]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and fragment in err and err.count("\n") == 1


def test_dataset_error_names_missing_file(nyud_root) -> None:
    root, _ = nyud_root
    (root / "broken.txt").write_text("5001\n9999\n")
    with pytest.raises(DatasetError, match="img_9999"):
        NYUDSegmentation(root, "broken")
    with pytest.raises(DatasetError, match="no split list"):
        NYUDSegmentation(root, "nonexistent")


@pytest.mark.parametrize("mean", [(104.00698793, 116.66876762, 122.67891434), (114.578, 115.294, 108.353)])
def test_fast_caffe_input_equals_caffe_preprocess(mean) -> None:
    from converters.fcn.preprocess import caffe_preprocess
    from eval.datasets import caffe_input

    rng = np.random.default_rng(9)
    rgb = rng.integers(0, 256, size=(37, 53, 3), dtype=np.uint8)
    float32_mean = tuple(float(v) for v in np.float32(mean))
    for m in (mean, float32_mean):
        expected = caffe_preprocess(rgb, mean=m)[0]
        got = caffe_input(rgb, m)
        assert got.dtype == torch.float32 and torch.equal(got, expected)
    # the float32 data layers (in_ -= float32 mean) give the same numbers with the float32-rounded mean
    layer = (rgb[:, :, ::-1].astype(np.float32) - np.float32(mean)).transpose(2, 0, 1)
    assert np.array_equal(caffe_input(rgb, float32_mean).numpy(), layer)
