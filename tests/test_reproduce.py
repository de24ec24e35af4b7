"""reproduce.demo plumbing with stand-in nets (agreement, output writing, CLI), and the table scripts."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from converters.fcn.preprocess import caffe_preprocess, read_rgb
from reproduce import demo
from tests.conftest import REPO

VOC_PERSON = (192, 128, 128)
VOC_BICYCLE = (0, 128, 0)


class ConstantNet(torch.nn.Module):
    """A stand-in net that scores class ``label`` highest at every pixel and records its input."""

    def __init__(self, label: int, num_classes: int = 21) -> None:
        super().__init__()
        self.label, self.num_classes = label, num_classes
        self.seen: list[torch.Tensor] = []

    def forward(self, data: torch.Tensor) -> dict[str, torch.Tensor]:
        self.seen.append(data.clone())
        scores = torch.zeros(data.shape[0], self.num_classes, *data.shape[2:])
        scores[:, self.label] = 1.0
        return {"score": scores}


def _fraction_of_colour(path, colour) -> float:
    rgb = np.asarray(Image.open(path).convert("RGB"))
    return float((rgb == np.array(colour, np.uint8)).all(axis=2).mean())


def test_bundled_demo_files_are_the_official_ones(fcn_reference) -> None:
    for name in ("image.jpg", "output.png"):
        assert (demo.DATA_DIR / name).read_bytes() == (fcn_reference / "demo" / name).read_bytes()


@pytest.mark.parametrize("label,colour", [(15, VOC_PERSON), (2, VOC_BICYCLE), (0, (0, 0, 0))])
def test_agreement_with_official_output_counts_pixels(tmp_path, label: int, colour) -> None:
    net = ConstantNet(label)
    result = demo.run_demo(net, demo.DEMO_IMAGE, tmp_path / "out.png", demo.DEMO_REFERENCE)
    expected = _fraction_of_colour(demo.DEMO_REFERENCE, colour)
    assert 0.0 < expected < 1.0
    assert result.agreement.total == 500 * 334
    assert result.agreement.fraction == pytest.approx(expected, abs=1e-12)
    assert result.classes_present == (label,)


def test_demo_feeds_caffe_preprocessed_image_and_writes_palette_png(tmp_path) -> None:
    net = ConstantNet(15)
    out = tmp_path / "out.png"
    demo.run_demo(net, demo.DEMO_IMAGE, out, None)
    assert len(net.seen) == 1
    assert torch.equal(net.seen[0], caffe_preprocess(read_rgb(demo.DEMO_IMAGE)))
    with Image.open(out) as written:
        assert written.mode == "P" and written.size == (334, 500)
        assert (np.asarray(written) == 15).all()
        assert tuple(np.asarray(written.convert("RGB"))[0, 0]) == VOC_PERSON
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"]  # no temporary files left


def test_agreement_uses_position_not_just_histogram(tmp_path) -> None:
    # Reference: left half person, right half bicycle; prediction: the mirror image.
    reference = np.zeros((4, 6, 3), np.uint8)
    reference[:, :3] = VOC_PERSON
    reference[:, 3:] = VOC_BICYCLE
    Image.fromarray(reference).save(tmp_path / "ref.png")
    labels = demo.read_label_image(tmp_path / "ref.png", demo.palette(256))
    assert (labels[:, :3] == 15).all() and (labels[:, 3:] == 2).all()
    mirrored = labels[:, ::-1]
    assert demo.agreement(mirrored, labels).fraction == 0.0
    assert demo.agreement(labels, labels).same == 24


def test_unknown_colour_and_size_mismatch_are_errors(tmp_path) -> None:
    with pytest.raises(demo.DemoError, match="not in the palette"):
        demo.labels_from_colours(np.full((2, 2, 3), 7, np.uint8), demo.palette(21))
    with pytest.raises(demo.DemoError, match="differ in size"):
        demo.agreement(np.zeros((2, 2), int), np.zeros((2, 3), int))


def test_missing_output_blob_is_an_error(tmp_path) -> None:
    def net(data: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"prob": torch.zeros(1, 21, *data.shape[2:])}

    with pytest.raises(demo.DemoError, match="no output 'score'"):
        demo.run_demo(net, demo.DEMO_IMAGE, tmp_path / "o.png", None)
    assert not (tmp_path / "o.png").exists()


def _run(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=180,
        env={**os.environ, **(env or {})},
    )


def test_demo_cli_without_weights_says_what_is_missing(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("FCN_PORT_CACHE", str(tmp_path))
    monkeypatch.setattr("weights.api._interactive", lambda: False)  # the download rule: no terminal
    assert demo.main(["--output", str(tmp_path / "o.png")]) == 2
    line = capsys.readouterr().err.strip()
    assert len(line.splitlines()) == 1 and line.startswith("error: voc-fcn8s weights (")
    assert "fcn8s-heavy-pascal.caffemodel, about 513 MiB" in line
    assert f"not in the cache {tmp_path}; add --download (or give the caffemodel path)" in line
    assert not (tmp_path / "o.png").exists()


TINY_SCORER = """
layer { name: "input" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 500 dim: 334 } } }
layer { name: "score" type: "Convolution" bottom: "data" top: "score"
        convolution_param { num_output: 21 kernel_size: 1 } }
"""


def test_demo_cli_end_to_end_with_a_tiny_caffemodel(tmp_path) -> None:
    import converters

    (tmp_path / "tiny.prototxt").write_text(TINY_SCORER)
    bias = np.zeros(21, np.float32)
    bias[15] = 1.0  # a 1x1 scorer with zero weights: "person" everywhere
    weights = {"score": [np.zeros((21, 3, 1, 1), np.float32), bias]}
    converters.write_weights(weights, tmp_path / "tiny.caffemodel")
    out = tmp_path / "seg.png"
    result = _run([
        "-m", "reproduce.demo", "--prototxt", str(tmp_path / "tiny.prototxt"),
        "--weights", str(tmp_path / "tiny.caffemodel"), "--output", str(out),
    ])
    assert result.returncode == 0, result.stderr
    expected = _fraction_of_colour(demo.DEMO_REFERENCE, VOC_PERSON)
    assert f"{100 * expected:.3f}%" in result.stdout
    with Image.open(out) as written:
        assert (np.asarray(written) == 15).all()


def test_demo_cli_help_and_bad_image(tmp_path, capsys) -> None:
    assert demo.main(["--help"]) == 0
    assert "--download" in capsys.readouterr().out
    (tmp_path / "w.caffemodel").write_bytes(b"")
    assert demo.main(["--image", str(REPO / "reproduce" / "data" / "image.jpg"),
                      "--output", str(tmp_path / "o.png"), "--weights", str(tmp_path / "none")]) == 2
    assert capsys.readouterr().err.startswith("error: no such caffemodel")


def test_demo_reports_a_missing_image_before_missing_weights(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("FCN_PORT_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setattr("weights.api._interactive", lambda: False)
    for weights_args in ([], ["--weights", str(tmp_path / "none.caffemodel")]):
        assert demo.main(["--image", str(tmp_path / "nope.jpg"), "--output", str(tmp_path / "o.png"),
                          *weights_args]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith(f"error: cannot read image {tmp_path / 'nope.jpg'}")
        assert "No such file" in err and "weights" not in err and "caffemodel" not in err


# ---------------------------------------------------------------------------------------------
# Table scripts: paper figures from weights.published, measured ones from result files.


@pytest.fixture
def hermetic(tmp_path, monkeypatch):
    """An empty weights cache, no dataset variables, and an empty results folder."""
    monkeypatch.setenv("FCN_PORT_CACHE", str(tmp_path / "cache"))
    for name in ("FCN_PORT_VOC2011", "FCN_PORT_RESULTS"):
        monkeypatch.delenv(name, raising=False)
    results = tmp_path / "results"
    results.mkdir()
    return results


def _eval_json(path, pixel_acc, mean_acc, mean_iu, fw_iu, images=736, limited=False) -> None:
    # The shape `python -m eval.voc --json` writes (only the fields the tables read).
    import json

    head = {"pixel_acc": pixel_acc, "mean_acc": mean_acc, "mean_iu": mean_iu, "fw_iu": fw_iu}
    path.write_text(json.dumps({"dataset": "voc", "split": "seg11valid", "images": images,
                                "limited": limited, "heads": {"semantic": head}}))


def _timing_json(path, median_ms, device_name="cpu (2 threads)") -> None:
    import json

    row = {"variant": "fp32", "median_ms": median_ms}
    path.write_text(json.dumps({"device_name": device_name, "rows": [row]}))


def _table_row(text: str, *first_cells: str) -> list[str]:
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[: len(first_cells)] == list(first_cells):
            return cells
    raise AssertionError(f"no row starting {first_cells} in:\n{text}")


def test_markdown_helpers() -> None:
    from reproduce.tables import fmt, markdown_table

    assert markdown_table(["a", "b"], [["1", "2"]]) == ["| a | b |", "|---|---|", "| 1 | 2 |"]
    assert (fmt(None), fmt(float("nan"))) == ("-", "-")
    assert (fmt(65.51264, 2), fmt(175, 0, " ms")) == ("65.51", "175 ms")


def test_table2_without_results_lists_what_is_missing(hermetic, capsys) -> None:
    from reproduce import table2

    assert table2.main(["--results", str(hermetic)]) == 0
    out = capsys.readouterr().out
    assert _table_row(out, "FCN-8s", "paper")[2:6] == ["90.3", "75.9", "62.7", "83.2"]  # CVPR Table 2
    missing = [line for line in out.splitlines() if line.startswith("missing: ")]
    assert len(missing) == 4  # 32s, 16s, 8s, 8s at-once
    fcn8s = next(line for line in missing if line.startswith("missing: voc-fcn8s on"))
    assert "python -m eval.voc --model voc-fcn8s --split seg11valid" in fcn8s
    assert "python -m weights fetch voc-fcn8s" in fcn8s and "FCN_PORT_VOC2011" in fcn8s


def test_table2_shows_measured_scores_and_delta(hermetic, capsys) -> None:
    from reproduce import table2

    _eval_json(hermetic / "voc-fcn8s-voc2011-seg11valid.json", 91.2, 77.6, 65.5, 84.5)
    assert table2.main(["--results", str(hermetic)]) == 0
    out = capsys.readouterr().out
    row = _table_row(out, "FCN-8s", "measured (voc-fcn8s)")
    assert row[2:6] == ["91.20", "77.60", "65.50", "84.50"]
    # Released figures (four-decimal re-evaluation): 91.2212 77.6146 65.5126 84.5445.
    assert "mean_iu: -0.01" in row[6] and "pixel_acc: -0.02" in row[6]
    assert not any(line.startswith("missing: voc-fcn8s on") for line in out.splitlines())


def test_limited_evaluation_is_flagged(hermetic, capsys) -> None:
    from reproduce import table2

    _eval_json(hermetic / "voc-fcn32s-voc2011-seg11valid.json", 90, 76, 63, 83, images=10, limited=True)
    assert table2.main(["--results", str(hermetic)]) == 0
    assert "covers only 10 images" in capsys.readouterr().out


def test_unreadable_result_file_is_one_line_error(hermetic, capsys) -> None:
    from reproduce import table2

    (hermetic / "voc-fcn8s-voc2011-seg11valid.json").write_text("{not json")
    assert table2.main(["--results", str(hermetic)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot read result file") and len(err.strip().splitlines()) == 1


def test_table1_static_columns_and_speed_up(hermetic, capsys) -> None:
    from reproduce import table1

    _timing_json(hermetic / "timing-voc-fcn32s-cpu.json", 420.0)
    assert table1.main(["--results", str(hermetic), "--no-build"]) == 0
    out = capsys.readouterr().out
    vgg = _table_row(out, "FCN-VGG16", "voc-fcn32s")
    assert vgg[2] == "56.0" and vgg[5] == "210 ms"  # CVPR Table 1
    assert vgg[6] == "420 ms (cpu (2 threads)), 0.50x the paper's speed"
    assert vgg[7:] == ["16 / 16", "134M / 134.3M", "404 / 404", "32 / 32"]
    alex = _table_row(out, "FCN-AlexNet", "voc-fcn-alexnet")
    assert alex[7:] == ["8 / 8", "57M / 57.0M", "355 / 355", "32 / 32"]
    assert "missing: forward time of voc-fcn-alexnet" in out
    assert "FCN-GoogLeNet weights were released" in out


def test_table3_inference_time_and_test_server_note(hermetic, capsys) -> None:
    from reproduce import table3

    _timing_json(hermetic / "timing-voc-fcn8s-cuda.json", 35.0, "NVIDIA H100")
    assert table3.main(["--results", str(hermetic)]) == 0
    out = capsys.readouterr().out
    assert _table_row(out, "FCN-8s", "paper")[2:] == ["62.7", "62.2", "~175 ms"]  # CVPR Table 3
    assert _table_row(out, "SDS", "paper")[4] == "~50 s"
    measured = _table_row(out, "FCN-8s", "measured voc-fcn8s")
    assert measured[4] == "35 ms (NVIDIA H100), 5.00x the paper's speed"
    assert "missing: VOC 2011/2012 test mean IU" in out


def test_siftflow_table_reads_both_heads(hermetic, capsys) -> None:
    import json

    from reproduce import siftflow

    heads = {
        "semantic": {"pixel_acc": 85.0, "mean_acc": 51.0, "mean_iu": 39.0, "fw_iu": 76.0},
        "geometric": {"pixel_acc": 94.0, "mean_acc": 90.0, "mean_iu": 88.0, "fw_iu": 89.0},
    }
    (hermetic / "siftflow-fcn16s-siftflow-test.json").write_text(
        json.dumps({"images": 200, "limited": False, "heads": heads})
    )
    assert siftflow.main(["--results", str(hermetic)]) == 0
    out = capsys.readouterr().out
    assert _table_row(out, "FCN-16s", "paper")[2:7] == ["85.2", "51.7", "39.5", "76.1", "94.3"]  # Table 5
    row = _table_row(out, "FCN-16s", "measured (siftflow-fcn16s)")
    assert row[2:7] == ["85.00", "51.00", "39.00", "76.00", "94.00"]
    assert "geom. acc: -0.30" in row[7] and "mean_iu: -0.50" in row[7]
    assert "missing:" not in out


def test_nyud_and_context_tables_name_unreleased_and_missing(hermetic, capsys) -> None:
    from reproduce import context, nyud

    assert nyud.main(["--results", str(hermetic)]) == 0
    out = capsys.readouterr().out
    assert _table_row(out, "FCN-32s RGB-HHA", "paper")[2:6] == ["64.3", "44.9", "32.8", "48.0"]  # Table 4
    assert "FCN-16s RGB-HHA: no FCN-16s NYUD weights were released" in out
    assert "missing: nyud-fcn32s-hha on nyud test" in out and "FCN_PORT_NYUD" in out
    assert context.main(["--results", str(hermetic)]) == 0
    out = capsys.readouterr().out
    assert _table_row(out, "FCN-8s", "paper")[2:6] == ["65.9", "46.5", "35.1", "51.0"]  # arXiv v2 appendix
    assert "--voc-root $FCN_PORT_VOC2010 --context-root $FCN_PORT_CONTEXT" in out


def test_run_option_makes_missing_results(hermetic, tmp_path, monkeypatch, capsys) -> None:
    from reproduce import table2, table3, tables

    calls = []

    def fake_timing(model, device, output):
        calls.append(("timing", model, device, output))
        _timing_json(output, 350.0)

    def fake_eval(model, dataset, roots, output):
        calls.append(("eval", model, dataset.split, roots, output))
        _eval_json(output, 91.0, 77.0, 65.0, 84.0)

    monkeypatch.setattr(tables, "run_timing", fake_timing)
    monkeypatch.setattr(tables, "run_eval", fake_eval)
    assert table3.main(["--results", str(hermetic), "--run"]) == 0
    assert calls[0][:2] == ("timing", "voc-fcn8s") and calls[0][3].parent == hermetic
    assert "350 ms" in capsys.readouterr().out
    # Evaluation runs only with the weights cached and the data folder named.
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "fcn8s-heavy-pascal.caffemodel").write_bytes(b"stand-in")
    monkeypatch.setenv("FCN_PORT_VOC2011", str(tmp_path / "voc"))
    assert table2.main(["--results", str(hermetic), "--run"]) == 0
    evals = [c for c in calls if c[0] == "eval"]
    assert [c[1] for c in evals] == ["voc-fcn8s"]
    assert evals[0][2:4] == ("seg11valid", [("--voc-root", str(tmp_path / "voc"))])
    assert _table_row(capsys.readouterr().out, "FCN-8s", "measured (voc-fcn8s)")[4] == "65.00"


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_the_demo_output_follows_the_umask(tmp_path, umask) -> None:
    old = os.umask(umask)
    try:
        demo.run_demo(ConstantNet(15), demo.DEMO_IMAGE, tmp_path / "out.png", None)
    finally:
        os.umask(old)
    assert (tmp_path / "out.png").stat().st_mode & 0o777 == 0o666 & ~umask


def test_run_shows_the_childs_progress_and_names_its_error(capfd) -> None:
    from reproduce import tables

    progress = "import sys; sys.stderr.write('timing fp32: 50%\\r'); sys.stderr.flush()"
    tables.run_command([sys.executable, "-c", progress], "timing x")
    err = capfd.readouterr().err
    assert "running: -c" in err and "timing fp32: 50%" in err
    failing = progress + "; sys.stderr.write('error: no CUDA here\\n'); sys.exit(2)"
    with pytest.raises(ValueError, match="^timing x failed: no CUDA here$"):
        tables.run_command([sys.executable, "-c", failing], "timing x")
    assert "error: no CUDA here" in capfd.readouterr().err  # shown as it came, too
