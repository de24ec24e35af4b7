"""Training data that the ``solvedata`` fuzz target (tests/fuzz/surfaces.py) found mishandled:
each is now one line naming the file, from the data source and from ``python -m converters.train``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import converters
from converters.errors import SolverError
from converters.train import __main__ as cli
from converters.train.data import HDF5Source, ImageSource

pytestmark = pytest.mark.usefixtures("one_thread")

NET = """name: "two_files"
layer { name: "d" type: "HDF5Data" top: "x" top: "y" hdf5_data_param { source: "list.txt" batch_size: 3 } }
layer { name: "ip" type: "InnerProduct" bottom: "x" top: "ip" inner_product_param { num_output: 2 } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "y" top: "loss" }
"""


def _two_files(folder: Path, second_rows: tuple[int, ...]) -> None:
    import h5py

    for name, rows in (("a.h5", (5,)), ("b.h5", second_rows)):
        with h5py.File(folder / name, "w") as f:
            f["x"] = np.ones((2, *rows), np.float32)
            f["y"] = np.zeros(2, np.float32)
    (folder / "list.txt").write_text("a.h5\nb.h5\n")


def test_a_second_hdf5_file_whose_rows_have_another_shape_is_one_line_naming_it(tmp_path: Path) -> None:
    _two_files(tmp_path, (2, 3, 3))
    layer = converters.parse_text(NET).getall("layer")[0]
    source = HDF5Source(layer, tmp_path)
    expected = r"b\.h5: rows of 'x' are \[2, 3, 3\], those of the first file \[5\]"
    with pytest.raises(SolverError, match=expected):
        source()  # the third row comes from b.h5


def test_solve_over_hdf5_files_of_two_row_shapes_exits_2_with_one_line(tmp_path: Path, capsys) -> None:
    _two_files(tmp_path, (4,))
    (tmp_path / "net.prototxt").write_text(NET)
    (tmp_path / "solver.prototxt").write_text(
        'net: "net.prototxt"\nbase_lr: 0.01\nlr_policy: "fixed"\nmax_iter: 2\nsnapshot_after_train: false\n'
    )
    assert cli.main([str(tmp_path / "solver.prototxt"), "--no-progress"]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and error[0].startswith("error: ") and "b.h5" in error[0], error


@pytest.mark.parametrize("kind", ["HDF5Data", "ImageData"])
def test_a_source_list_that_is_not_text_is_one_line_naming_it(tmp_path: Path, kind: str) -> None:
    (tmp_path / "list.txt").write_bytes(b"a.h5\n\xff\xfe\n")
    param = "hdf5_data_param" if kind == "HDF5Data" else "image_data_param"
    layer = converters.parse_text(
        f'layer {{ name: "d" type: "{kind}" top: "x" top: "y" '
        f'{param} {{ source: "list.txt" batch_size: 1 }} }}'
    ).getall("layer")[0]
    source = HDF5Source if kind == "HDF5Data" else ImageSource
    with pytest.raises(SolverError, match=r"source .*list\.txt is not text \(byte 5 is not UTF-8\)"):
        source(layer, tmp_path)
