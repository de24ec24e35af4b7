"""``python -m reproduce.segment`` and ``reproduce.segment.segment``: the official demo image and
synthetic pictures, through small FCN nets (our net definitions at 1/16 width) with seeded random
weights saved as caffemodels under the official file names (so the registry record is found) and as
a converted file. Expected colours come from the VOC colour map written out here and from the
official demo output; expected inputs are built here with numpy."""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

import converters
import weights
from converters.fcn.nets import net_definition
from reproduce.segment import HeadResult, main, read_image, segment

DATA = Path(__file__).resolve().parent.parent / "reproduce" / "data"
WIDTH = 0.0625
#: The first VOC colours (devkit's VOClabelcolormap): background, aeroplane, bicycle, bird, boat, ..., person.
VOC_COLOURS = {
    0: (0, 0, 0),
    1: (128, 0, 0),
    2: (0, 128, 0),
    3: (128, 128, 0),
    4: (0, 0, 128),
    15: (192, 128, 128),
}
#: NYUD log-depth and HHA means of nyud_layers.py, SIFT Flow's of siftflow_layers.py (B, G, R).
NYUD_MEAN_BGR = (116.190, 97.203, 92.318)
NYUD_MEAN_LOGD = 7.844


def _write_net(folder: Path, model: str, filename: str, seed: int = 0) -> tuple[Path, Path]:
    """A deploy prototxt and a caffemodel of ``model`` at 1/16 width with seeded random weights."""
    folder.mkdir(parents=True, exist_ok=True)
    definition = net_definition(model, width=WIDTH)
    torch.manual_seed(seed)
    net = converters.load_caffe(definition)
    blobs: dict[str, list[np.ndarray]] = {}
    for name, tensor in net.state_dict().items():
        layer, _ = name.rsplit(".", 1)
        blobs.setdefault(layer, []).append(tensor.detach().numpy().copy())
    prototxt, caffemodel = folder / "deploy.prototxt", folder / filename
    converters.write_prototxt(definition, prototxt)
    converters.write_weights(blobs, caffemodel)
    return prototxt, caffemodel


@pytest.fixture(scope="module")
def voc(tmp_path_factory) -> tuple[Path, Path]:
    """voc-fcn8s (small) under its official caffemodel name."""
    return _write_net(tmp_path_factory.mktemp("voc"), "voc-fcn8s", "fcn8s-heavy-pascal.caffemodel")


@pytest.fixture(scope="module")
def converted(voc, tmp_path_factory) -> Path:
    """The same net as a converted file (which carries no registry record)."""
    path = tmp_path_factory.mktemp("converted") / "small-fcn8s.safetensors"
    converters.save_converted(converters.load_caffe(*voc), path)
    return path


def _png16_rgb(path: Path, rgb16: np.ndarray) -> None:
    """A 16-bit RGB PNG written by hand (Pillow cannot write one)."""
    height, width, _ = rgb16.shape
    rows = b"".join(b"\x00" + rgb16[y].astype(">u2").tobytes() for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def _picture(seed: int, height: int = 40, width: int = 56) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, size=(height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8)
    return np.kron(base, np.ones((8, 8, 1), dtype=np.uint8))[:height, :width]  # blocks, not noise


def _labels_png(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        assert image.mode == "P"
        return np.asarray(image).copy()


def _run(args: list[str], capsys) -> tuple[int, str, str]:
    code = main(args + ["--no-progress"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_the_demo_image_gets_a_palette_png_an_overlay_scores_and_a_legend(
    converted, tmp_path, capsys
) -> None:
    out = tmp_path / "out"
    code, stdout, _ = _run(
        [
            "--model",
            str(converted),
            str(DATA / "image.jpg"),
            "-o",
            str(out),
            "--record",
            "voc-fcn8s",
            "--scores",
            "--legend",
            "--device",
            "cpu",
        ],
        capsys,
    )
    assert code == 0, stdout
    assert sorted(p.name for p in out.iterdir()) == [
        "image.legend.png",
        "image.overlay.png",
        "image.png",
        "image.scores.npy",
    ]
    labels = _labels_png(out / "image.png")
    with Image.open(out / "image.png") as image:
        colours = np.asarray(image.getpalette()[: 3 * 21], dtype=np.uint8).reshape(21, 3)
    for index, colour in VOC_COLOURS.items():
        assert tuple(colours[index]) == colour
    scores = np.load(out / "image.scores.npy")
    assert scores.dtype == np.float32 and scores.shape == (21, 500, 334)
    assert np.array_equal(scores.argmax(axis=0), labels)
    photo = np.asarray(Image.open(DATA / "image.jpg").convert("RGB")).astype(np.float64)
    expected = np.rint(0.5 * photo + 0.5 * colours[labels].astype(np.float64)).astype(np.uint8)
    with Image.open(out / "image.overlay.png") as overlay:
        assert overlay.mode == "RGB" and np.abs(np.asarray(overlay).astype(int) - expected).max() <= 1
    with Image.open(out / "image.legend.png") as legend:
        shown = {tuple(c) for c in np.asarray(legend.convert("RGB")).reshape(-1, 3)}
    for index in np.unique(labels):
        assert tuple(colours[index]) in shown
    absent = [i for i in range(1, 21) if i not in np.unique(labels)]
    assert all(tuple(colours[i]) not in shown for i in absent)

    loaded = weights.load_model(converted, "cpu")
    result = loaded.segment(DATA / "image.jpg", record="voc-fcn8s")  # the Python API, same numbers
    assert np.array_equal(result.labels, labels)
    assert np.array_equal(result.scores, scores)
    assert result.classes_present == tuple(weights.get("voc-fcn8s").classes[i] for i in np.unique(labels))
    assert result.colour.mode == "P" and result.overlay.size == (334, 500)


def test_the_official_demo_output_renders_in_its_own_colours() -> None:
    with Image.open(DATA / "output.png") as official:
        rgb = np.asarray(official.convert("RGB"))
    codes = {(0, 0, 0): 0, (0, 128, 0): 2, (192, 128, 128): 15}  # background, bicycle, person
    labels = np.zeros(rgb.shape[:2], dtype=np.int64)
    for colour, index in codes.items():
        labels[(rgb == colour).all(axis=2)] = index
    assert all(((rgb == c).all(axis=2)).any() for c in codes)
    photo = read_image(DATA / "image.jpg")
    head = HeadResult(
        "score",
        weights.get("voc-fcn8s").classes,
        weights.get("voc-fcn8s").outputs[0].palette(),
        labels,
        photo,
    )
    assert np.array_equal(np.asarray(head.colour.convert("RGB")), rgb)
    assert head.classes_present == ("background", "bicycle", "person")
    legend = head.legend()
    assert legend.height > 3 * 16 and legend.width > 60


@pytest.fixture(scope="module")
def formats(tmp_path_factory) -> Path:
    """One picture as PNG, lossless WebP, 16-bit RGB PNG and EXIF-rotated PNG; a grey one as 8 and
    16 bits."""
    folder = tmp_path_factory.mktemp("formats")
    rgb = _picture(1)
    Image.fromarray(rgb).save(folder / "base.png")
    Image.fromarray(rgb).save(folder / "lossless.webp", lossless=True)
    _png16_rgb(folder / "deep.png", rgb.astype(np.uint16) * 256 + 7)  # low bytes are dropped
    stored = np.rot90(rgb, k=1)  # orientation 6: turn 90 degrees clockwise to display
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(np.ascontiguousarray(stored)).save(folder / "rotated.png", exif=exif)
    grey = _picture(2)[:, :, 0]
    Image.fromarray(grey).save(folder / "grey8.png")
    Image.fromarray(grey.astype(np.uint16) * 257).save(folder / "grey16.png")
    return folder


def test_read_image_applies_exif_orientation_and_reduces_16_bits(formats) -> None:
    base = np.asarray(Image.open(formats / "base.png"))
    assert np.array_equal(read_image(formats / "rotated.png"), base)
    assert np.array_equal(read_image(formats / "deep.png"), base)
    assert np.array_equal(read_image(formats / "lossless.webp"), base)
    grey = np.asarray(Image.open(formats / "grey8.png"))
    assert np.array_equal(read_image(formats / "grey16.png"), np.repeat(grey[:, :, None], 3, axis=2))


def test_every_format_and_orientation_segments_like_the_plain_png(voc, formats, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    code, _, err = _run(
        ["--model", str(voc[0]), str(voc[1]), str(formats), "-o", str(out), "--scores"], capsys
    )
    assert code == 0, err
    base = _labels_png(out / "base.png")
    assert base.shape == (40, 56)
    for name in ("lossless", "deep", "rotated"):
        assert np.array_equal(_labels_png(out / f"{name}.png"), base), name
        scores, base_scores = np.load(out / f"{name}.scores.npy"), np.load(out / "base.scores.npy")
        assert np.abs(scores - base_scores).max() <= 1e-5 * np.abs(base_scores).max(), name
    assert np.array_equal(_labels_png(out / "grey16.png"), _labels_png(out / "grey8.png"))


def test_a_folder_is_searched_recursively_and_batches_give_the_one_by_one_results(
    voc, tmp_path, capsys
) -> None:
    photos = tmp_path / "photos"
    (photos / "sub").mkdir(parents=True)
    for i, name in enumerate(("a.png", "b.jpg", "sub/c.png")):
        Image.fromarray(_picture(10 + i)).save(photos / name, quality=95)
    Image.fromarray(_picture(20, 32, 48)).save(photos / "odd.png")  # another size: its own batch
    (photos / "notes.txt").write_text("not an image")
    previous = os.umask(0o027)
    try:
        outputs = {}
        for batch in ("4", "1"):
            out = tmp_path / f"out{batch}"
            code, stdout, err = _run(
                [
                    "--model",
                    str(voc[0]),
                    str(voc[1]),
                    str(photos),
                    "-o",
                    str(out),
                    "--batch-size",
                    batch,
                    "--scores",
                ],
                capsys,
            )
            assert code == 0, err
            assert "segmented 4 image(s)" in stdout
            outputs[batch] = out
    finally:
        os.umask(previous)
    files = sorted(str(p.relative_to(outputs["4"])) for p in outputs["4"].rglob("*") if p.is_file())
    assert files == sorted(
        f"{stem}{suffix}"
        for stem in ("a", "b", "odd", "sub/c")
        for suffix in (".png", ".overlay.png", ".scores.npy")
    )
    for name in files:
        path4, path1 = outputs["4"] / name, outputs["1"] / name
        assert os.stat(path4).st_mode & 0o777 == 0o640, name  # 0666 less the umask, as open() gives
        if name.endswith(".npy"):
            batched, single = np.load(path4), np.load(path1)  # float noise of a batched convolution only
            assert np.abs(batched - single).max() <= 1e-5 * np.abs(single).max(), name
        elif not name.endswith("overlay.png"):
            assert np.array_equal(_labels_png(path4), _labels_png(path1)), name


def test_sift_flow_writes_both_heads_in_their_palettes(tmp_path, capsys) -> None:
    prototxt, caffemodel = _write_net(tmp_path / "net", "siftflow-fcn32s", "siftflow-fcn32s-heavy.caffemodel")
    Image.fromarray(_picture(3)).save(tmp_path / "street.png")
    out = tmp_path / "out"
    code, _, err = _run(
        ["--model", str(prototxt), str(caffemodel), str(tmp_path / "street.png"), "-o", str(out), "--legend"],
        capsys,
    )
    assert code == 0, err
    for blob, classes in (("score_sem", 33), ("score_geo", 3)):
        labels = _labels_png(out / f"street.{blob}.png")
        assert labels.shape == (40, 56) and labels.max() < classes
        assert (out / f"street.{blob}.overlay.png").is_file() and (
            out / f"street.{blob}.legend.png"
        ).is_file()
    assert not (out / "street.png").exists()


def test_nyud_color_hha_takes_its_hha_pictures_from_a_folder(tmp_path, capsys) -> None:
    prototxt, caffemodel = _write_net(
        tmp_path / "net", "nyud-fcn32s-color-hha", "nyud-fcn32s-color-hha-heavy.caffemodel"
    )
    (tmp_path / "images").mkdir()
    (tmp_path / "hha").mkdir()
    Image.fromarray(_picture(4)).save(tmp_path / "images" / "room.jpg", quality=95)
    Image.fromarray(_picture(5)).save(tmp_path / "hha" / "room.png")
    out = tmp_path / "out"
    args = ["--model", str(prototxt), str(caffemodel), str(tmp_path / "images"), "-o", str(out)]
    code, _, err = _run(args, capsys)
    assert code == 2 and "--input hha=" in err and not out.exists()
    code, _, err = _run(args + ["--input", f"hha={tmp_path / 'hha'}"], capsys)
    assert code == 0, err
    labels = _labels_png(out / "room.png")
    assert labels.max() < 40
    result = segment(
        [prototxt, caffemodel],
        tmp_path / "images" / "room.jpg",
        inputs={"hha": tmp_path / "hha" / "room.png"},
        device="cpu",
    )
    assert np.array_equal(result.labels, labels)
    assert len(result.classes) == 40 and result.classes[0] == "wall"


def test_the_color_depth_net_gets_bgr_and_log_depth_as_the_nyud_layer_makes_them(tmp_path) -> None:
    prototxt, caffemodel = _write_net(tmp_path / "net", "nyud-fcn32s-color-d", "mine.caffemodel")
    rgb = _picture(6)
    depth = (np.arange(40 * 56, dtype=np.uint16).reshape(40, 56) % 3000 + 500).astype(np.uint16)
    Image.fromarray(depth).save(tmp_path / "depth.png")
    net = converters.load_caffe(prototxt, caffemodel)
    result = segment(net, rgb, inputs={"depth": tmp_path / "depth.png"}, record="nyud-fcn32s-color-d")
    bgr = rgb[:, :, ::-1].astype(np.float64) - np.asarray(NYUD_MEAN_BGR)
    log_depth = np.log(depth.astype(np.float64)) - NYUD_MEAN_LOGD
    x = np.concatenate([bgr.transpose(2, 0, 1), log_depth[None]]).astype(np.float32)[None]
    with torch.no_grad():
        expected = net(data=torch.from_numpy(x))["score"][0]
    assert np.allclose(result.scores, expected.numpy(), atol=1e-3 * float(expected.abs().max()))
    assert np.array_equal(result.labels, expected.argmax(0).numpy())


def test_a_model_without_record_gets_generic_names_and_the_run_says_so(voc, tmp_path, capsys) -> None:
    mine = tmp_path / "mine.caffemodel"
    mine.write_bytes(voc[1].read_bytes())
    Image.fromarray(_picture(7)).save(tmp_path / "x.png")
    code, stdout, err = _run(
        [
            "--model",
            str(voc[0]),
            str(mine),
            str(tmp_path / "x.png"),
            "-o",
            str(tmp_path / "o"),
            "--overlay-format",
            "jpg",
            "--legend",
        ],
        capsys,
    )
    assert code == 0, err
    assert "note:" in stdout and "no registry record" in stdout and "class_0" in stdout
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["x.legend.png", "x.overlay.jpg", "x.png"]
    with Image.open(tmp_path / "o" / "x.overlay.jpg") as overlay:
        assert overlay.format == "JPEG" and overlay.size == (56, 40)
    result = segment(converters.load_caffe(voc[0], mine), tmp_path / "x.png")
    assert result.classes == tuple(f"class_{i}" for i in range(21))
    assert any("no registry record" in note for note in result.notes)


def _bad_cases(tmp: Path, voc: tuple[Path, Path]) -> dict[str, tuple[list[str], str]]:
    (tmp / "empty").mkdir()
    (tmp / "broken.jpg").write_bytes(b"not a jpeg at all")
    (tmp / "file").write_text("x")
    Image.fromarray(_picture(8)).save(tmp / "ok.png")
    (tmp / "clash").mkdir()
    Image.fromarray(_picture(8)).save(tmp / "clash" / "ok.overlay.png")
    (tmp / "two").mkdir()
    Image.fromarray(_picture(8)).save(tmp / "two" / "ok.png")
    model = [str(voc[0]), str(voc[1])]
    return {
        "missing image": (model + [str(tmp / "nope.jpg")], "nope.jpg"),
        "empty folder": (model + [str(tmp / "empty")], "no image files"),
        "unreadable image": (model + [str(tmp / "broken.jpg")], "broken.jpg"),
        "same output twice": (model + [str(tmp / "ok.png"), str(tmp / "two")], "ok.png"),
        "unknown kind": (model + [str(tmp / "ok.png"), "--input", "infrared=x"], "infrared"),
        "extra input the net lacks": (
            model + [str(tmp / "ok.png"), "--input", f"hha={tmp / 'ok.png'}"],
            "hha",
        ),
        "zero batch": (model + [str(tmp / "ok.png"), "--batch-size", "0"], "--batch-size"),
        "prototxt alone": ([str(voc[0]), str(tmp / "ok.png")], "weights"),
        "unknown model": (["voc-fcn9s", str(tmp / "ok.png")], "voc-fcn9s"),
        "classifier": (model + [str(tmp / "ok.png"), "--record", "vgg16"], "classifier"),
        "no images": (model, "no images"),
        "not a device": (model + [str(tmp / "ok.png"), "--device", "abacus"], "--device"),
        "an image named like another's overlay": (
            model + [str(tmp / "ok.png"), str(tmp / "clash")],
            "ok.overlay.png",
        ),
    }


@pytest.mark.parametrize(
    "case",
    [
        "missing image",
        "empty folder",
        "unreadable image",
        "same output twice",
        "unknown kind",
        "extra input the net lacks",
        "zero batch",
        "prototxt alone",
        "unknown model",
        "classifier",
        "no images",
        "not a device",
        "an image named like another's overlay",
    ],
)
def test_bad_input_is_one_error_line_exit_2_and_no_output(case, voc, tmp_path, capsys) -> None:
    args, expected = _bad_cases(tmp_path, voc)[case]
    out = tmp_path / "out"
    code, stdout, err = _run(["--model", *args, "-o", str(out)], capsys)
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1 and expected in err, err
    assert not out.exists() or not any(out.rglob("*"))


def test_an_output_path_that_is_a_file_is_refused(voc, tmp_path, capsys) -> None:
    Image.fromarray(_picture(9)).save(tmp_path / "ok.png")
    (tmp_path / "taken").write_text("keep me")
    code, _, err = _run(
        ["--model", str(voc[0]), str(voc[1]), str(tmp_path / "ok.png"), "-o", str(tmp_path / "taken")], capsys
    )
    assert code == 2 and err.startswith("error: ") and "not a folder" in err
    assert (tmp_path / "taken").read_text() == "keep me"


def test_python_api_takes_arrays_pil_images_and_files_alike(voc, tmp_path) -> None:
    rgb = _picture(11)
    Image.fromarray(rgb).save(tmp_path / "p.png")
    loaded = weights.load_model([voc[0], voc[1]], "cpu")
    from_file = loaded.segment(tmp_path / "p.png")
    from_array = segment(loaded, rgb)
    from_pil = segment(loaded, Image.open(io.BytesIO((tmp_path / "p.png").read_bytes())))
    assert np.array_equal(from_file.labels, from_array.labels)
    assert np.array_equal(from_file.labels, from_pil.labels)
    assert from_file.labels.shape == (40, 56) and from_file.scores.shape == (21, 40, 56)
    assert set(from_file.classes_present) <= set(weights.get("voc-fcn8s").classes)


class _Recorder:
    """A stand-in net that keeps its inputs and scores 40 classes (class = pixel row % 40)."""

    def __init__(self) -> None:
        self.inputs: dict[str, torch.Tensor] = {}

    def __call__(self, **inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        self.inputs = inputs
        first = next(iter(inputs.values()))
        n, _, h, w = first.shape
        rows = torch.arange(h).remainder(40)
        scores = torch.nn.functional.one_hot(rows, 40).T[None, :, :, None].expand(n, 40, h, w)
        return {"score": scores.float()}


def test_the_hha_net_takes_hha_pictures_as_its_images_minus_the_hha_mean(tmp_path) -> None:
    hha = _picture(12)
    Image.fromarray(hha).save(tmp_path / "hha.png")
    net = _Recorder()
    model = weights.LoadedModel(net, "recorder", input_names=["data"])
    result = segment(model, tmp_path / "hha.png", record="nyud-fcn32s-hha")
    expected = hha.astype(np.float32) - np.float32([132.431, 94.076, 118.477])  # nyud_layers.py, as stored
    assert np.array_equal(net.inputs["data"][0].numpy(), expected.transpose(2, 0, 1))
    assert np.array_equal(result.labels[:, 0], np.arange(40) % 40)
    assert np.array_equal(result.main.photo, hha)  # the overlay goes on the HHA picture itself


def test_the_late_fusion_net_gets_bgr_minus_the_nyud_mean_and_the_hha_picture(tmp_path) -> None:
    rgb, hha = _picture(13), _picture(14)
    net = _Recorder()
    model = weights.LoadedModel(net, "recorder", input_names=["color", "hha"])
    segment(model, rgb, inputs={"hha": hha}, record="nyud-fcn32s-color-hha")
    bgr = rgb[:, :, ::-1].astype(np.float64) - np.asarray(NYUD_MEAN_BGR)
    assert np.allclose(net.inputs["color"][0].numpy(), bgr.transpose(2, 0, 1), atol=1e-4)
    assert np.allclose(net.inputs["hha"][0].numpy()[0], hha[:, :, 0] - 132.431, atol=1e-4)
    with pytest.raises(ValueError, match="also needs a hha image"):
        segment(model, rgb, record="nyud-fcn32s-color-hha")
    with pytest.raises(ValueError, match="the hha image is 32x24"):
        segment(model, rgb, inputs={"hha": _picture(15, 24, 32)}, record="nyud-fcn32s-color-hha")


def test_max_side_runs_the_net_on_a_smaller_picture_and_answers_at_full_size() -> None:
    net = _Recorder()
    model = weights.LoadedModel(net, "recorder", input_names=["data"])
    result = segment(model, _picture(16, 80, 112), record="nyud-fcn32s-color", max_side=56)
    assert tuple(net.inputs["data"].shape) == (1, 3, 40, 56)
    assert result.labels.shape == (80, 112) and result.scores.shape == (40, 80, 112)
    # Net row k scores class k; bilinear doubling (half-pixel centres) gives rows 2k and 2k+1 class k.
    assert np.array_equal(result.labels[:, 5], np.arange(80) // 2)
    small = segment(model, _picture(17, 40, 56), record="nyud-fcn32s-color", max_side=56)
    assert tuple(net.inputs["data"].shape) == (1, 3, 40, 56) and small.labels.shape == (40, 56)


def test_max_side_on_the_command_line_gives_full_size_results_and_spares_small_images(
    voc, tmp_path, capsys
) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(_picture(18, 80, 112)).save(photos / "big.png")
    Image.fromarray(_picture(19, 40, 56)).save(photos / "small.png")
    out = tmp_path / "out"
    code, _, err = _run(
        ["--model", str(voc[0]), str(voc[1]), str(photos), "-o", str(out), "--max-side", "56", "--scores"],
        capsys,
    )
    assert code == 0, err
    assert _labels_png(out / "big.png").shape == (80, 112) and np.load(out / "big.scores.npy").shape == (
        21,
        80,
        112,
    )
    alone = segment([voc[0], voc[1]], photos / "small.png")
    assert np.array_equal(_labels_png(out / "small.png"), alone.labels)  # under the limit: untouched
    code, _, err = _run(
        ["--model", str(voc[0]), str(voc[1]), str(photos), "-o", str(out), "--max-side", "0"], capsys
    )
    assert code == 2 and "--max-side" in err


def _stand_in(model: str, inputs: tuple[str, ...] = ("data",)) -> weights.LoadedModel:
    """A recorder net that says it has ``model``'s official deploy definition, as a converted file does."""
    net = _Recorder()
    net.caffe = SimpleNamespace(definition=net_definition(model, "deploy"), outputs=["score"])
    return weights.LoadedModel(net, f"{model}.safetensors", input_names=list(inputs))


def test_a_converted_official_net_is_recognised_by_its_net_definition() -> None:
    result = segment(
        _stand_in("nyud-fcn32s-color-hha", ("color", "hha")), _picture(20), inputs={"hha": _picture(22)}
    )
    assert result.classes == weights.get("nyud-fcn32s-color-hha").classes and len(result.classes) == 40
    assert any("nyud-fcn32s-color-hha by its net definition" in note for note in result.notes)


def test_nyud_colour_and_hha_share_a_net_so_neither_is_guessed() -> None:
    notes = segment(_stand_in("nyud-fcn32s-hha"), _picture(21)).notes
    assert any("nyud-fcn32s-color and of nyud-fcn32s-hha" in note for note in notes)
    assert any("no registry record" in note for note in notes)


def test_an_output_folder_inside_the_input_folder_is_not_segmented_again(voc, tmp_path, capsys) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(_picture(23)).save(photos / "x.png")
    args = ["--model", str(voc[0]), str(voc[1]), str(photos), "-o", str(photos / "segmented")]
    for _ in range(2):
        code, stdout, err = _run(args, capsys)
        assert code == 0 and "segmented 1 image(s)" in stdout, err
    assert sorted(p.name for p in (photos / "segmented").iterdir()) == ["x.overlay.png", "x.png"]


def test_the_readme_example_picture_is_small_and_starts_with_the_demo_overlay() -> None:
    path = Path(__file__).resolve().parent.parent / "docs" / "segment-example.png"
    assert path.stat().st_size < 200_000
    with Image.open(path) as picture:
        panel = np.asarray(picture.convert("RGB"))[:, :334].astype(int)
    with Image.open(DATA / "output.png") as official:
        colours = np.asarray(official.convert("RGB")).astype(int)
    photo = np.asarray(Image.open(DATA / "image.jpg").convert("RGB")).astype(int)
    expected = (photo + colours + 1) // 2  # half photo, half the official label colour
    assert panel.shape == expected.shape
    assert np.abs(panel - expected).mean() < 4  # 256-colour quantisation only


def test_ctrl_c_exits_130_leaving_only_whole_files(voc, tmp_path, capsys, monkeypatch) -> None:
    from reproduce import segment as module

    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(3):
        Image.fromarray(_picture(30 + i)).save(photos / f"p{i}.png")
    real_run, calls = module.Segmenter.run, []

    def interrupted_run(self, samples):
        calls.append(len(samples))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_run(self, samples)

    monkeypatch.setattr(module.Segmenter, "run", interrupted_run)
    out = tmp_path / "out"
    code, _, _ = _run(
        ["--model", str(voc[0]), str(voc[1]), str(photos), "-o", str(out), "--batch-size", "1"], capsys
    )
    assert code == 130 and calls == [1, 1]
    assert sorted(p.name for p in out.iterdir()) == ["p0.overlay.png", "p0.png"]  # no .part files
    assert _labels_png(out / "p0.png").shape == (40, 56)


def test_an_image_too_large_for_memory_is_one_line_saying_how_to_scale_it(
    converted, monkeypatch
) -> None:
    """A 9000-pixel photo runs out of memory in the forward pass (torch's allocator fails, or the
    graph builder refuses a blob larger than memory): one SegmentError naming the picture, its size
    and --max-side, not an allocator traceback."""
    from reproduce.segment import SegmentError

    loaded = weights.load_model(converted, "cpu")

    def out_of_memory(**inputs):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory")

    monkeypatch.setattr(loaded.net, "forward", out_of_memory)
    expected = r"image.jpg: a 500 x 334 input needs more memory than this cpu has: segment it scaled down"
    with pytest.raises(SegmentError, match=expected):
        loaded.segment(DATA / "image.jpg", record="voc-fcn8s")


def test_name_caffemodel_segments_with_the_registry_net_and_those_weights_not_a_download(
    voc, tmp_path, capsys, monkeypatch
) -> None:
    """``--model voc-fcn32s my.caffemodel photos/``: the caffemodel is the model's weights, not an
    image, and nothing is fetched. (The registry's full-width net would need a 513 MiB file, so the
    builder is watched and answers with the small net.)"""
    from reproduce import segment as module

    monkeypatch.setenv("FCN_PORT_CACHE", str(tmp_path / "empty-cache"))
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(_picture(41)).save(photos / "p.png")
    specs = []

    def watched(spec, device=None, **options):
        specs.append(list(spec))
        return weights.load_model(list(voc), device)

    monkeypatch.setattr(module, "load_model", watched)
    out = tmp_path / "out"
    code, stdout, err = _run(["--model", "voc-fcn32s", str(voc[1]), str(photos), "-o", str(out)], capsys)
    assert code == 0, err
    assert specs == [["voc-fcn32s", str(voc[1])]]
    assert sorted(p.name for p in out.iterdir()) == ["p.overlay.png", "p.png"]
    cache = tmp_path / "empty-cache"  # nothing fetched: it holds at most the kept NNPACK calibrations
    assert not cache.exists() or [p.name for p in cache.iterdir()] == ["calibration.json"]


def test_a_caffemodel_alone_as_model_is_one_line_naming_the_prototxt_caffemodel_form(
    voc, tmp_path, capsys
) -> None:
    Image.fromarray(_picture(42)).save(tmp_path / "p.png")
    args = ["--model", str(voc[1]), str(tmp_path / "p.png"), "-o", str(tmp_path / "out")]
    code, _, err = _run(args, capsys)
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1
    assert f"--model PROTOTXT {voc[1]}" in err and f"--model NAME {voc[1]}" in err
    assert not (tmp_path / "out").exists()
    with pytest.raises(weights.ModelError, match="PROTOTXT"):  # the builder says the same to Python
        weights.load_model(voc[1])


def _truncated(path: Path, picture: np.ndarray) -> None:
    """``picture`` saved in the format of ``path``'s suffix, cut in the middle of its pixel data:
    the header reads, the pixels do not."""
    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, format="PNG" if path.suffix == ".png" else "JPEG")
    data = buffer.getvalue()
    path.write_bytes(data[: len(data) * 2 // 3])


@pytest.mark.parametrize("batch_size", ["1", "4"])
def test_a_truncated_image_in_a_batch_is_one_line_and_the_good_ones_are_written(
    voc, tmp_path, capsys, batch_size
) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(_picture(43)).save(photos / "a.png")
    _truncated(photos / "b.jpg", _picture(44))
    Image.fromarray(_picture(45)).save(photos / "c.png")
    out = tmp_path / "out"
    code, stdout, err = _run(
        ["--model", *map(str, voc), str(photos), "-o", str(out), "--batch-size", batch_size], capsys
    )
    assert code == 2
    assert err.count("\n") == 1 and err.startswith(f"error: {photos / 'b.jpg'}: cannot read the image"), err
    assert sorted(p.name for p in out.iterdir()) == ["a.overlay.png", "a.png", "c.overlay.png", "c.png"]
    assert "segmented 2 of 3 image(s)" in stdout
    one_by_one = segment(list(voc), photos / "c.png")
    assert np.array_equal(_labels_png(out / "c.png"), one_by_one.labels)


def test_when_no_image_can_be_read_no_output_folder_is_left(voc, tmp_path, capsys) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    _truncated(photos / "a.png", _picture(46))
    _truncated(photos / "b.jpg", _picture(47))
    out = tmp_path / "new" / "out"
    code, _, err = _run(["--model", *map(str, voc), str(photos), "-o", str(out)], capsys)
    assert code == 2 and err.count("\n") == 2 and err.count("cannot read the image") == 2
    assert not (tmp_path / "new").exists()
