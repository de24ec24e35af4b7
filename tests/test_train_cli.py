"""python -m converters.train and its data sources (HDF5Data, ImageData) read without Caffe.

The HDF5 case is the iter_size fixture made by real Caffe (tools/make_solver_fixtures.py): Caffe's
HDF5Data layer read those files, so reaching Caffe's parameters shows the reading order is Caffe's.
This Caffe build has no OpenCV, hence no ImageData golden numbers: the ImageData tests check
Caffe's documented transform (data_transformer.cpp) on images whose pixels we choose.
"""

from __future__ import annotations

import shutil
import signal
from pathlib import Path

import numpy as np
import pytest

import converters
from converters.errors import SolverError
from converters.train import __main__ as cli
from converters.train.data import HDF5Source, ImageSource

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "solvers"


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one torch thread per test


@pytest.fixture
def hdf5_case(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The iter_size fixture copied to a scratch folder (snapshots go to snap/ there)."""
    folder = tmp_path / "case"
    shutil.copytree(FIXTURES / "iter_size", folder)
    (folder / "snap").mkdir()
    monkeypatch.chdir(folder)
    return folder


def test_the_command_trains_an_hdf5_net_to_caffes_parameters(hdf5_case: Path, capsys) -> None:
    status = cli.main(["solver.prototxt", "--weights", "init.caffemodel", "--iters", "10", "--no-progress"])
    assert status == 0
    assert "iteration 10" in capsys.readouterr().out
    snapshot = converters.read_weights(hdf5_case / "snap" / "train_iter_10.caffemodel")
    expected = np.load(hdf5_case / "expected.npz")
    for key in [k for k in expected.files if k.startswith("param/")]:
        _, layer, i = key.split("/")
        scale = float(np.abs(expected[key]).max())
        assert float(np.abs(snapshot[layer][int(i)] - expected[key]).max()) <= 1e-4 * scale, key


def test_the_command_snapshots_every_n_iterations_and_continues_from_a_snapshot(hdf5_case: Path) -> None:
    solver_text = (hdf5_case / "solver.prototxt").read_text() + "snapshot: 2\nmax_iter: 4\n"
    (hdf5_case / "solver.prototxt").write_text(solver_text)
    assert cli.main(["solver.prototxt", "--weights", "init.caffemodel", "--no-progress"]) == 0
    written = sorted(p.name for p in (hdf5_case / "snap").iterdir())
    assert written == [f"train_iter_{i}.{e}" for i in (2, 4) for e in ("caffemodel", "solverstate")]
    assert cli.main(["solver.prototxt", "--snapshot", "snap/train_iter_4.solverstate", "--iters", "1",
                     "--no-progress"]) == 0  # fmt: skip
    assert (hdf5_case / "snap" / "train_iter_5.solverstate").is_file()


def test_ctrl_c_finishes_the_iteration_writes_a_snapshot_and_exits_130(
    hdf5_case: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    original = converters.Solver.step

    def step_then_ctrl_c(self: converters.Solver, feeds: object, iters: int = 1) -> float:
        loss = original(self, feeds, iters)
        if self.iter == 3:
            signal.raise_signal(signal.SIGINT)
        return loss

    monkeypatch.setattr(converters.Solver, "step", step_then_ctrl_c)
    status = cli.main(["solver.prototxt", "--weights", "init.caffemodel", "--iters", "50", "--no-progress"])
    assert status == 130
    assert sorted(p.name for p in (hdf5_case / "snap").iterdir()) == [
        "train_iter_3.caffemodel", "train_iter_3.solverstate",
    ]  # fmt: skip
    assert "--snapshot" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["missing.prototxt"], "no such solver file"),
        (["solver.prototxt", "--weights", "w", "--snapshot", "s"], "not allowed with argument"),
        (["solver.prototxt", "--iters", "-1"], "argument --iters: must be an integer >= 1, got '-1'"),
        (["solver.prototxt", "--iters", "0"], "argument --iters: must be an integer >= 1, got '0'"),
    ],
)
def test_bad_command_lines_are_one_error_line_and_exit_2(
    hdf5_case: Path, argv: list[str], message: str, capsys
) -> None:
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err


def test_nets_with_other_data_layers_are_told_to_use_the_python_api(tmp_path: Path, capsys) -> None:
    shutil.copy(FIXTURES / "sgd_fixed" / "net.prototxt", tmp_path / "net.prototxt")
    shutil.copy(FIXTURES / "sgd_fixed" / "solver.prototxt", tmp_path / "solver.prototxt")
    assert cli.main([str(tmp_path / "solver.prototxt"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "layer 'input' (Input)" in err and "Python API" in err and "\n" not in err
    assert not any(p.suffix in (".caffemodel", ".solverstate") for p in tmp_path.rglob("*"))


def test_hdf5_source_reads_rows_in_order_across_files_and_wraps(tmp_path: Path) -> None:
    import h5py

    for name, start in (("a.h5", 0), ("b.h5", 3)):
        with h5py.File(tmp_path / name, "w") as f:
            f["x"] = np.arange(start, start + 3, dtype=np.float64).reshape(3, 1)
            f["y"] = np.arange(start, start + 3, dtype=np.int32)
    (tmp_path / "list.txt").write_text("a.h5 b.h5\n")
    layer = converters.parse_text(
        'layer { name: "d" type: "HDF5Data" top: "x" top: "y" '
        'hdf5_data_param { source: "list.txt" batch_size: 4 } }'
    ).getall("layer")[0]
    source = HDF5Source(layer, tmp_path)
    assert source.shapes() == {"x": (4, 1), "y": (4,)}
    batches = [source() for _ in range(3)]
    assert [b["x"][:, 0].tolist() for b in batches] == [[0, 1, 2, 3], [4, 5, 0, 1], [2, 3, 4, 5]]
    assert batches[0]["y"].dtype == np.float32 and batches[1]["y"].tolist() == [4, 5, 0, 1]


def _image_net(tmp_path: Path, transform: str, extra: str = "") -> object:
    from PIL import Image

    pixels = np.zeros((4, 6, 3), np.uint8)
    pixels[..., 0] = np.arange(24).reshape(4, 6)  # red
    pixels[..., 2] = 200  # blue
    Image.fromarray(pixels).save(tmp_path / "a.png")
    Image.fromarray(255 - pixels).save(tmp_path / "b.png")
    (tmp_path / "list.txt").write_text("a.png 3\nb.png 7\n")
    return converters.parse_text(
        f'layer {{ name: "d" type: "ImageData" top: "data" top: "label" transform_param {{ {transform} }}'
        f' image_data_param {{ source: "list.txt" batch_size: 2 {extra} }} }}'
    ).getall("layer")[0]


def test_image_source_gives_bgr_minus_mean_times_scale_with_labels(tmp_path: Path) -> None:
    layer = _image_net(tmp_path, "mean_value: 10 mean_value: 20 mean_value: 30 scale: 0.5")
    batch = ImageSource(layer, tmp_path)()
    assert batch["data"].shape == (2, 3, 4, 6) and batch["label"].tolist() == [3, 7]
    first = batch["data"][0]
    np.testing.assert_array_equal(first[0], np.full((4, 6), (200 - 10) * 0.5))  # B
    np.testing.assert_array_equal(first[1], np.full((4, 6), (0 - 20) * 0.5))  # G
    np.testing.assert_array_equal(first[2], (np.arange(24).reshape(4, 6) - 30) * 0.5)  # R


def test_image_source_crops_the_centre_outside_training_and_resizes(tmp_path: Path) -> None:
    layer = _image_net(tmp_path, "crop_size: 2 mirror: true")
    test = ImageSource(layer, tmp_path, phase="TEST", seed=3)
    centre = [[8, 9], [14, 15]]  # rows 1-2, cols 2-3; mirrored at random in TEST too, as Caffe's
    test_crops = {tuple(test()["data"][0, 2].reshape(-1)) for _ in range(30)}
    assert test_crops == {(8, 9, 14, 15), (9, 8, 15, 14)}
    unmirrored = ImageSource(_image_net(tmp_path, "crop_size: 2"), tmp_path, phase="TEST")()
    np.testing.assert_array_equal(unmirrored["data"][0, 2], centre)
    train = ImageSource(layer, tmp_path, seed=3)
    crops = {tuple(train()["data"][0, 2].reshape(-1)) for _ in range(30)}
    assert len(crops) > 4  # random offsets and mirrors in TRAIN
    resized = ImageSource(_image_net(tmp_path, "", "new_height: 8 new_width: 12"), tmp_path)()
    assert resized["data"].shape == (2, 3, 8, 12)
    np.testing.assert_array_equal(resized["data"][0, 0], np.full((8, 12), 200))


def test_the_command_trains_a_classifier_reading_an_image_data_layer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    _image_net(tmp_path, "crop_size: 4 mirror: true mean_value: 100 scale: 0.01")
    (tmp_path / "net.prototxt").write_text(
        'layer { name: "d" type: "ImageData" top: "data" top: "label" '
        "transform_param { crop_size: 4 mirror: true mean_value: 100 scale: 0.01 } "
        'image_data_param { source: "list.txt" batch_size: 2 shuffle: true } }\n'
        'layer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc" '
        'inner_product_param { num_output: 8 weight_filler { type: "xavier" } } }\n'
        'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc" bottom: "label" top: "loss" }\n'
    )
    (tmp_path / "solver.prototxt").write_text(
        'net: "net.prototxt" base_lr: 0.1 lr_policy: "fixed" max_iter: 3 snapshot_prefix: "cls" '
        "random_seed: 5"
    )
    monkeypatch.chdir(tmp_path)
    assert cli.main(["solver.prototxt", "--no-progress", "--device", "cpu"]) == 0
    weights = converters.read_weights(tmp_path / "cls_iter_3.caffemodel")
    assert weights["fc"][0].shape == (8, 48) and np.isfinite(weights["fc"][0]).all()
    assert cli.main(["solver.prototxt", "--no-progress", "--device", "nonsense"]) == 2
    assert "--device" in capsys.readouterr().err


def test_a_missing_snapshot_folder_is_refused_before_the_first_iteration(hdf5_case: Path, capsys) -> None:
    """Caffe finds a missing snapshot folder at its first snapshot, after training; the command says
    so before it trains, and writes nothing."""
    (hdf5_case / "snap").rmdir()
    assert cli.main(["solver.prototxt", "--weights", "init.caffemodel", "--iters", "3", "--no-progress"]) == 2
    captured = capsys.readouterr()
    assert "snapshot folder" in captured.err and "does not exist" in captured.err
    assert "iteration" not in captured.out
    assert not (hdf5_case / "snap").exists()


def _hdf5_layer() -> object:
    return converters.parse_text(
        'layer { name: "d" type: "HDF5Data" top: "x" '
        'hdf5_data_param { source: "list.txt" batch_size: 2 } }'
    ).getall("layer")[0]


def test_hostile_training_data_is_one_line_before_it_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A FIFO where a data file belongs, an HDF5 file declaring more data than memory (a few KB
    on disk: chunked, never written) and an image too large to decode are each a SolverError
    line, checked before anything is opened or allocated."""
    import os

    import h5py
    from PIL import Image

    from converters.graph import builder

    os.mkfifo(tmp_path / "pipe.h5")
    (tmp_path / "list.txt").write_text("pipe.h5\n")
    with pytest.raises(SolverError, match=r"pipe.h5: is a FIFO, not a file"):
        HDF5Source(_hdf5_layer(), tmp_path)

    with h5py.File(tmp_path / "huge.h5", "w") as f:
        f.create_dataset("x", shape=(36000, 3, 100, 100), dtype="f4", chunks=(1, 3, 100, 100))
    assert (tmp_path / "huge.h5").stat().st_size < 100_000
    (tmp_path / "list.txt").write_text("huge.h5\n")
    monkeypatch.setattr(builder, "memory_limit", lambda device=None: 2**30)  # a 1 GiB machine
    with pytest.raises(SolverError, match=r"huge.h5 declares 4.0 GiB of data, more than the 1.0 GiB"):
        HDF5Source(_hdf5_layer(), tmp_path)

    Image.new("L", (9000, 9000)).save(tmp_path / "big.png")
    (tmp_path / "images.txt").write_text("big.png 1\n")
    layer = converters.parse_text(
        'layer { name: "img" type: "ImageData" top: "data" top: "label" '
        'image_data_param { source: "images.txt" batch_size: 1 } }'
    ).getall("layer")[0]
    with pytest.raises(SolverError, match=r"image .*big.png \(9000 x 9000\) needs 2.7 GiB to read"):
        ImageSource(layer, tmp_path)


def test_a_mean_file_of_another_shape_than_the_image_is_refused_in_one_line(tmp_path: Path) -> None:
    """Caffe's DataTransformer CHECKs the mean's channels, height and width against the image's
    (before the crop); a mean of the image's shape is subtracted pixel by pixel."""
    from converters.caffe.binary import encode_message
    from converters.caffe.formats import array_to_blob

    mean = tmp_path / "mean.binaryproto"
    for shape in [(1, 3, 2, 2), (1, 1, 4, 6)]:
        mean.write_bytes(encode_message(array_to_blob(np.ones(shape, np.float32))))
        layer = _image_net(tmp_path, 'mean_file: "mean.binaryproto" crop_size: 2')
        with pytest.raises(SolverError, match=r"mean_file 'mean.binaryproto' is .* must be equal") as caught:
            ImageSource(layer, tmp_path, phase="TEST")
        assert "\n" not in str(caught.value)
    values = np.arange(72, dtype=np.float32).reshape(1, 3, 4, 6)
    mean.write_bytes(encode_message(array_to_blob(values)))
    layer = _image_net(tmp_path, 'mean_file: "mean.binaryproto" crop_size: 2')
    batch = ImageSource(layer, tmp_path, phase="TEST")()
    np.testing.assert_array_equal(batch["data"][0, 2], np.array([[8, 9], [14, 15]]) - values[0, 2, 1:3, 2:4])
