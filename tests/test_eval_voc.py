"""``python -m eval.voc`` end to end on a generated VOC-layout dataset (JPEGs, palette labels, 255 bands).

The model is a 1x1 convolution that classifies each pixel by its nearest class colour, with two pairs
of classes deliberately swapped, so the expected confusion follows from the generated labels alone.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from vocgen import CLASS_COLOURS, write_voc

import eval.runner as runner
from eval import voc
from eval.datasets import VOC_MEAN, VOCSegmentation, packaged_split
from eval.metrics import scores
from eval.models import LoadedModel

REPO = Path(__file__).resolve().parent.parent
SWAP = {3: 5, 5: 3, 2: 6, 6: 2}  # the model predicts SWAP.get(c, c) for a pixel of class c
IDS = packaged_split("seg11valid")[:5]


class ColourNet(torch.nn.Module):
    """Nearest-colour classifier on Caffe-preprocessed input: score_k = 2 x.m_k - |m_k|^2."""

    def __init__(self, swap: dict[int, int] | None = None, num_classes: int = 21) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, num_classes, 1)
        weight = torch.zeros(num_classes, 3, 1, 1)
        bias = torch.full((num_classes,), -1e9)
        for cls, rgb in CLASS_COLOURS.items():
            centre = torch.tensor(rgb[::-1], dtype=torch.float32) - torch.tensor(
                VOC_MEAN, dtype=torch.float32
            )
            out = (swap or {}).get(cls, cls)
            weight[out, :, 0, 0] = 2 * centre
            bias[out] = -(centre * centre).sum()
        with torch.no_grad():
            self.conv.weight.copy_(weight)
            self.conv.bias.copy_(bias)

    def forward(self, data: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"score": self.conv(data)}


def expected_confusion(labels: dict[str, np.ndarray], swap: dict[int, int], n: int = 21) -> np.ndarray:
    hist = np.zeros((n, n), dtype=np.int64)
    for label in labels.values():
        for cls in np.unique(label):
            if cls != 255:
                hist[cls, swap.get(int(cls), int(cls))] += int((label == cls).sum())
    return hist


@pytest.fixture(scope="module")
def voc_root(tmp_path_factory) -> tuple[Path, dict[str, np.ndarray]]:
    root = tmp_path_factory.mktemp("voc")
    labels = write_voc(root, IDS, seed=7)
    return root, labels


@pytest.fixture
def colour_model(monkeypatch):
    def fake_resolve(spec, device):
        return LoadedModel(ColourNet(SWAP).to(device), f"colour net {spec[0]}", None, ["data"])

    monkeypatch.setattr(runner, "load_trained_model", fake_resolve)


def test_generated_labels_are_voc_like(voc_root) -> None:
    root, labels = voc_root
    png = Image.open(root / "VOC2011" / "SegmentationClass" / f"{IDS[0]}.png")
    assert png.mode == "P"
    label = np.array(png)
    assert np.array_equal(label, labels[IDS[0]])
    assert (label[0] == 255).all() and (label == 255).mean() < 0.8 and len(np.unique(label)) > 1


def test_cli_end_to_end_matches_expected_confusion(voc_root, colour_model, tmp_path, capsys) -> None:
    root, labels = voc_root
    out_json = tmp_path / "r.json"
    saved = tmp_path / "pred"
    code = voc.main(
        f"--model toy --voc-root {root} --device cpu --workers 0 --limit {len(IDS)} --json {out_json} "
        f"--save-predictions {saved} --no-progress".split()
    )
    assert code == 0
    report = json.loads(out_json.read_text())
    head = report["heads"]["semantic"]
    expected = expected_confusion(labels, SWAP)
    assert np.array_equal(np.array(head["confusion"]), expected)
    reference = scores(expected)
    for key in ("pixel_acc", "mean_acc", "mean_iu", "fw_iu"):
        assert head[key] == pytest.approx(getattr(reference, key))
    assert head["per_class_iu"][3] == 0.0 and head["per_class_iu"][20] is None
    assert report["images"] == len(IDS)
    text = capsys.readouterr().out
    assert "mean IU" in text and "aeroplane" in text and "images/s" in text

    # saved predictions: palette PNGs, one per image, the swapped class everywhere outside 255
    for image_id, label in labels.items():
        png = Image.open(saved / f"{image_id}.png")
        assert png.mode == "P"
        predicted = np.array(png)
        inside = label != 255
        assert np.array_equal(predicted[inside], np.vectorize(lambda c: SWAP.get(c, c))(label[inside]))

    # --predictions on the saved folder gives the same confusion without a model
    again = tmp_path / "again.json"
    code = voc.main(
        f"--predictions {saved} --voc-root {root} --json {again} --split val2011 --workers 0 "
        "--no-progress".split()
    )
    assert code == 0
    assert json.loads(again.read_text())["heads"]["semantic"]["confusion"] == head["confusion"]


def test_workers_and_limit(voc_root, colour_model, tmp_path) -> None:
    root, labels = voc_root
    out_json = tmp_path / "r.json"
    code = voc.main(
        f"--model toy --voc-root {root / 'VOC2011'} --workers 2 --limit 3 --device cpu --json {out_json} "
        "--no-progress".split()
    )
    assert code == 0
    report = json.loads(out_json.read_text())
    expected = expected_confusion({i: labels[i] for i in IDS[:3]}, SWAP)
    assert report["images"] == 3 and np.array_equal(report["heads"]["semantic"]["confusion"], expected)


def test_val2011_reads_the_devkit_list(voc_root) -> None:
    root, _ = voc_root
    dataset = VOCSegmentation(root, "val2011")
    assert dataset.ids == IDS
    sample = dataset[0]
    assert sample["inputs"]["color"].shape[0] == 3 and sample["labels"]["semantic"].dtype == torch.uint8
    with pytest.raises(ValueError, match="VOC2012"):
        VOCSegmentation(root, "val2012")


def test_check_against_published_figures(voc_root, colour_model, monkeypatch, capsys) -> None:
    root, labels = voc_root
    reference = scores(expected_confusion(labels, SWAP))
    figures = {"pixel_acc": reference.pixel_acc + 0.05, "mean_iu": reference.mean_iu - 0.05}
    monkeypatch.setattr(runner, "published_figures", lambda *a: (figures, "test figures"))
    args = [
        "--model",
        "toy",
        "--voc-root",
        str(root),
        "--split",
        "val2011",
        "--workers",
        "0",
        "--no-progress",
        "--check",
    ]
    assert voc.main(args) == 0
    figures["mean_iu"] = reference.mean_iu + 0.5
    assert voc.main(args) == 1
    assert voc.main(args + ["--tolerance", "1"]) == 0
    assert "test figures" in capsys.readouterr().out


def test_check_without_published_figures_is_an_input_error(
    voc_root, colour_model, monkeypatch, capsys
) -> None:
    monkeypatch.setattr(runner, "published_figures", lambda *a: ({}, ""))
    root, _ = voc_root
    code = voc.main(
        f"--model toy --voc-root {root} --split val2011 --workers 0 --no-progress --check".split()
    )
    assert code == 2
    assert capsys.readouterr().err.startswith("error: --check: no published figures")


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "eval.voc", *args], cwd=REPO, capture_output=True, text=True, timeout=120
    )


def test_bad_inputs_exit_2_with_one_line(voc_root, tmp_path, capsys) -> None:
    root, _ = voc_root
    result = run_cli("--predictions", str(tmp_path), "--voc-root", str(tmp_path / "nowhere"))
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert result.stderr.startswith("error: VOC root") and "Traceback" not in result.stderr
    assert not list(tmp_path.iterdir())

    def one_error(*args: str, split: str = "val2011") -> str:
        assert voc.main([*args, "--split", split, "--workers", "0", "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1
        return err

    assert "predictions folder" in one_error("--predictions", str(tmp_path / "no"), "--voc-root", str(root))
    assert "unknown split" in one_error("--predictions", str(tmp_path), "--voc-root", str(root), split="x")
    assert voc.main(["--voc-root", str(root)]) == 2
    assert "required" in capsys.readouterr().err
    assert "a does not exist" in one_error(
        "--predictions", str(tmp_path), "--voc-root", str(root), "--json", str(tmp_path / "a" / "b.json")
    )
    assert "--limit" in one_error("--predictions", str(tmp_path), "--voc-root", str(root), "--limit", "0")


def test_help_exits_0(capsys) -> None:
    assert voc.main(["--help"]) == 0
    assert "--save-predictions" in capsys.readouterr().out


def test_missing_image_names_the_file(tmp_path) -> None:
    labels = write_voc(tmp_path, IDS[:2], seed=1)
    (tmp_path / "VOC2011" / "JPEGImages" / f"{IDS[1]}.jpg").unlink()
    with pytest.raises(ValueError, match=f"{IDS[1]}.jpg"):
        VOCSegmentation(tmp_path, "val2011", ["color"])
    assert len(VOCSegmentation(tmp_path, "val2011", ()).ids) == len(labels)  # labels alone are complete


def test_bad_prediction_files_are_refused(voc_root, tmp_path, capsys) -> None:
    root, labels = voc_root
    for image_id, label in labels.items():
        Image.fromarray(np.zeros_like(label)).save(tmp_path / f"{image_id}.png")
    first = tmp_path / f"{IDS[0]}.png"
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(first)
    code = voc.main(
        [
            "--predictions",
            str(tmp_path),
            "--voc-root",
            str(root),
            "--split",
            "val2011",
            "--workers",
            "0",
            "--no-progress",
        ]
    )
    assert code == 2 and "pixels" in capsys.readouterr().err
    Image.fromarray(np.full_like(labels[IDS[0]], 40)).save(first)
    code = voc.main(
        [
            "--predictions",
            str(tmp_path),
            "--voc-root",
            str(root),
            "--split",
            "val2011",
            "--workers",
            "2",
            "--no-progress",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "holds class 40" in err and err.count("\n") == 1


def test_batched_equals_one_at_a_time_on_equal_sizes(tmp_path) -> None:
    ids = [f"2000_{i:06d}" for i in range(4)]
    labels = write_voc(tmp_path, ids, size=(48, 40), seed=3)
    dataset = VOCSegmentation(tmp_path, "val2011")
    net = ColourNet(SWAP)
    single = runner.evaluate_model(net, dataset, batch_size=1)
    batched = runner.evaluate_model(net, dataset, batch_size=2)
    assert np.array_equal(single.matrices["semantic"], batched.matrices["semantic"])
    assert np.array_equal(single.matrices["semantic"], expected_confusion(labels, SWAP))
    assert batched.notes == []


COLOUR_NET_PROTOTXT = """name: "colour_net"
layer { name: "input" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 40 dim: 40 } } }
layer { name: "score" type: "Convolution" bottom: "data" top: "score"
        convolution_param { num_output: 21 kernel_size: 1 } }
"""


def write_colour_caffe_model(folder: Path) -> tuple[Path, Path]:
    """ColourNet as a Caffe prototxt + binary caffemodel (written by the converters' writer)."""
    from converters import write_weights

    net = ColourNet(SWAP)
    prototxt = folder / "colour.prototxt"
    prototxt.write_text(COLOUR_NET_PROTOTXT)
    caffemodel = folder / "colour.caffemodel"
    blobs = [net.conv.weight.detach().numpy().copy(), net.conv.bias.detach().numpy().copy()]
    write_weights({"score": blobs}, caffemodel)
    return prototxt, caffemodel


def test_cli_with_prototxt_and_caffemodel(voc_root, tmp_path) -> None:
    root, labels = voc_root
    prototxt, caffemodel = write_colour_caffe_model(tmp_path)
    out_json = tmp_path / "r.json"
    args = f"--model {prototxt} {caffemodel} --voc-root {root} --split val2011 --workers 0 --no-progress"
    assert voc.main([*args.split(), "--json", str(out_json)]) == 0
    report = json.loads(out_json.read_text())
    assert np.array_equal(report["heads"]["semantic"]["confusion"], expected_confusion(labels, SWAP))


def test_cli_with_converted_file(voc_root, tmp_path) -> None:
    import converters.graph.converted as converted
    from converters import load_caffe

    root, labels = voc_root
    prototxt, caffemodel = write_colour_caffe_model(tmp_path)
    path = tmp_path / "colour.pt"  # (.safetensors: see the report; a 0x80 header byte is sniffed as pickle)
    converted.save_converted(load_caffe(prototxt, caffemodel), path)
    out_json = tmp_path / "r.json"
    args = f"--model {path} --voc-root {root} --split val2011 --workers 0 --no-progress --json {out_json}"
    assert voc.main(args.split()) == 0
    report = json.loads(out_json.read_text())
    assert np.array_equal(report["heads"]["semantic"]["confusion"], expected_confusion(labels, SWAP))


def test_model_errors_are_one_line(voc_root, tmp_path, capsys) -> None:
    root, _ = voc_root
    base = f"--voc-root {root} --split val2011 --workers 0 --no-progress".split()
    assert voc.main(["--model", "no-such-model", *base]) == 2
    assert "unknown model 'no-such-model'" in capsys.readouterr().err
    assert voc.main(["--model", str(tmp_path / "x.prototxt"), *base]) == 2
    assert "give its caffemodel too" in capsys.readouterr().err
    assert voc.main(["--model", str(tmp_path / "missing.safetensors"), *base]) == 2
    assert "does not exist" in capsys.readouterr().err
    prototxt, _ = write_colour_caffe_model(tmp_path)
    wrong = tmp_path / "other.caffemodel"
    from converters import write_weights

    write_weights({"other": [np.zeros((1,), np.float32)]}, wrong)
    assert voc.main(["--model", str(prototxt), str(wrong), *base]) == 2
    assert "has no weights" in capsys.readouterr().err
    prototxt.write_text(COLOUR_NET_PROTOTXT.replace("num_output: 21", "num_output: 7"))
    small = torch.nn.Conv2d(3, 7, 1)
    write_weights({"score": [small.weight.detach().numpy(), small.bias.detach().numpy()]}, wrong)
    assert voc.main(["--model", str(prototxt), str(wrong), *base]) == 2
    assert "scores 7 classes, but the semantic labels have 21" in capsys.readouterr().err


def test_official_demo_output_scores_against_its_label(fcn_reference, tmp_path) -> None:
    """The official demo's label (a real VOC palette PNG with 255 borders) and its RGB-coloured output,
    evaluated through --predictions; the expected confusion is counted here pixel by pixel."""
    demo = fcn_reference / "demo"
    voc_dir = tmp_path / "VOC2012"
    for folder in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc_dir / folder).mkdir(parents=True)
    (voc_dir / "JPEGImages" / "demo.jpg").write_bytes((demo / "image.jpg").read_bytes())
    (voc_dir / "SegmentationClass" / "demo.png").write_bytes((demo / "label.png").read_bytes())
    (voc_dir / "ImageSets" / "Segmentation" / "val.txt").write_text("demo\n")
    predictions = tmp_path / "pred"
    predictions.mkdir()
    (predictions / "demo.png").write_bytes((demo / "output.png").read_bytes())

    label = np.array(Image.open(demo / "label.png"))
    rgb = np.array(Image.open(demo / "output.png").convert("RGB"))
    colour_of = {c: tuple(v) for c, v in enumerate(runner.palette(21).tolist())}
    class_of = {v: c for c, v in colour_of.items()}
    expected = np.zeros((21, 21), dtype=np.int64)
    for truth, colour in zip(label.ravel().tolist(), map(tuple, rgb.reshape(-1, 3).tolist()), strict=True):
        if truth != 255:
            expected[truth, class_of[colour]] += 1
    out = tmp_path / "r.json"
    args = f"--predictions {predictions} --voc-root {tmp_path} --split val2012 --workers 0 --no-progress"
    assert voc.main([*args.split(), "--json", str(out)]) == 0
    head = json.loads(out.read_text())["heads"]["semantic"]
    assert np.array_equal(np.array(head["confusion"]), expected)
    assert expected.sum() == int((label != 255).sum())


def test_rgb_prediction_with_unknown_colour_is_refused(tmp_path) -> None:
    path = tmp_path / "p.png"
    image = np.zeros((4, 5, 3), np.uint8)
    image[2, 3] = (1, 2, 3)
    Image.fromarray(image).save(path)
    with pytest.raises(ValueError, match=r"colour \(1, 2, 3\) at \(3, 2\)"):
        runner.read_prediction(path, 21)
    image[2, 3] = (128, 0, 0)  # aeroplane
    Image.fromarray(image).save(path)
    assert runner.read_prediction(path, 21)[2, 3] == 1


def test_check_without_published_figures_fails_before_evaluating(
    voc_root, tmp_path, capsys, monkeypatch
) -> None:
    from eval import runner

    root, _ = voc_root
    prototxt, caffemodel = write_colour_caffe_model(tmp_path)

    def never(*args, **kwargs):
        raise AssertionError("evaluated before checking for published figures")

    monkeypatch.setattr(runner, "evaluate_model", never)
    monkeypatch.setattr(runner, "evaluate_predictions", never)
    common = ["--voc-root", str(root), "--split", "val2011", "--workers", "0", "--no-progress", "--check"]
    assert voc.main(["--model", str(prototxt), str(caffemodel), *common]) == 2
    assert "--check: no published figures to compare with" in capsys.readouterr().err
    assert voc.main(["--predictions", str(tmp_path), *common, "--published", "voc-fcn8s"]) == 2
    assert "--check: no published figures for voc-fcn8s on voc val2011" in capsys.readouterr().err


def test_output_paths_are_checked_before_the_model_loads(voc_root, tmp_path, capsys, monkeypatch) -> None:
    from eval import runner

    root, _ = voc_root
    monkeypatch.setattr(runner, "load_trained_model", lambda *a: (_ for _ in ()).throw(AssertionError))
    (tmp_path / "file.txt").write_text("")
    common = ["--model", "voc-fcn8s", "--voc-root", str(root), "--split", "val2011", "--device", "cpu"]
    assert voc.main([*common, "--json", "/proc/r.json"]) == 2
    assert "cannot write /proc/r.json" in capsys.readouterr().err
    assert voc.main([*common, "--save-predictions", str(tmp_path / "file.txt")]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err


def write_mixed_sizes(root: Path) -> tuple[list[str], dict[str, np.ndarray]]:
    """11 images of four sizes, interleaved: 5 of 48x40, 3 of 40x56, 2 of 56x48, 1 of 44x44."""
    sizes = [(48, 40)] * 5 + [(40, 56)] * 3 + [(56, 48)] * 2 + [(44, 44)]
    order = [0, 5, 8, 1, 10, 6, 2, 3, 9, 7, 4]  # sizes interleaved in the split list
    ids = [f"2000_{i:06d}" for i in range(len(sizes))]
    labels: dict[str, np.ndarray] = {}
    for i, (image_id, size) in enumerate(zip(ids, sizes, strict=True)):
        labels |= write_voc(root, [image_id], size=size, seed=20 + i)
    listed = [ids[i] for i in order]
    split = root / "VOC2011" / "ImageSets" / "Segmentation" / "val.txt"
    split.write_text("".join(f"{i}\n" for i in listed))
    return listed, labels


class _CountingBar:
    def __init__(self) -> None:
        self.count = 0

    def update(self, n: int = 1) -> None:
        self.count += n

    def close(self) -> None:
        pass


def test_batch_4_on_mixed_sizes_gives_the_batch_1_confusion_and_counts_each_image_once(
    tmp_path, monkeypatch
) -> None:
    ids, labels = write_mixed_sizes(tmp_path / "voc")
    dataset = VOCSegmentation(tmp_path / "voc", "val2011")
    batches: list[tuple[int, int, int]] = []

    class Recording(ColourNet):
        def forward(self, data: torch.Tensor) -> dict[str, torch.Tensor]:
            batches.append(tuple(data.shape[0:1]) + tuple(data.shape[2:]))
            return super().forward(data)

    bars: list[_CountingBar] = []
    monkeypatch.setattr(runner, "_progress", lambda *a, **k: bars.append(_CountingBar()) or bars[-1])
    net = Recording(SWAP)
    single = runner.evaluate_model(net, dataset, batch_size=1)
    batches.clear()
    batched = runner.evaluate_model(net, dataset, batch_size=4, save_dir=tmp_path / "out")
    assert np.array_equal(batched.matrices["semantic"], single.matrices["semantic"])
    assert np.array_equal(batched.matrices["semantic"], expected_confusion(labels, SWAP))
    assert batched.images == single.images == len(ids) and batched.notes == []
    assert [bar.count for bar in bars] == [len(ids), len(ids)]
    assert sorted(p.stem for p in (tmp_path / "out").glob("*.png")) == sorted(ids)
    # Only the first batch of several images is run again one at a time (the agreement check).
    full = [b for b in batches if b[0] > 1]
    assert full[0][0] == 4 and batches[1 : 1 + 4] == [(1, *full[0][1:])] * 4
    counted = [batches[0], *batches[5:]]
    assert sum(b[0] for b in counted) == len(ids)
    assert sorted(b[0] for b in counted) == [1, 1, 2, 3, 4]  # 48x40: 4 + 1; 40x56: 3; 56x48: 2; 44x44: 1


@pytest.mark.parametrize(
    ("kind", "message"), [("file", "is a file, not a folder"), ("missing", "does not exist")]
)
def test_predictions_that_are_a_file_or_missing_are_named_as_such(voc_root, tmp_path, capsys, kind, message):
    root, _ = voc_root
    predictions = tmp_path / "predictions"
    if kind == "file":
        predictions.write_text("not a folder")
    code = voc.main(
        f"--predictions {predictions} --voc-root {root} --split val2011 --workers 0 --no-progress".split()
    )
    err = capsys.readouterr().err
    assert code == 2 and err == f"error: predictions folder {predictions} {message}\n"
