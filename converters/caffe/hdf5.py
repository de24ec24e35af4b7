"""Caffe's HDF5 weights layout (``Net::ToHDF5``): float datasets ``/data/<layer>/<blob index>``."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ..errors import CaffeFormatError

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def read_hdf5_weights(path: str | os.PathLike[str]) -> dict[str, list[np.ndarray]]:
    """Layer name -> float32 blobs (in blob-index order) of a ``.caffemodel.h5`` file.

    Layers come in the file's (alphabetical) order; layers without blobs are left out.
    """
    return {name: blobs for name, blobs in read_hdf5_layers(path).items() if blobs}


def read_hdf5_layers(path: str | os.PathLike[str]) -> dict[str, list[np.ndarray]]:
    """Every layer group of a ``.caffemodel.h5`` file -> its float32 blobs (``[]`` for an empty group).

    Caffe writes a group for every layer, parameterless ones included; the file keeps no layer
    types and no net order, so layers come in the file's (alphabetical) order. Anything that is
    not Caffe's layout, or that the file cannot hold (a dataset declaring more bytes than the file
    has), raises :class:`CaffeFormatError` naming the file and the dataset, before it is read.
    """
    import h5py

    try:
        handle = h5py.File(path, "r")
    except OSError as exc:
        raise CaffeFormatError(f"cannot open as HDF5 ({_one_line(exc)})", path) from None
    try:
        with handle:
            return _read_layers(handle, path)
    except CaffeFormatError:
        raise
    except _H5PY_ERRORS as exc:  # corrupt or truncated inside the file
        raise CaffeFormatError(f"cannot read HDF5 weights ({_one_line(exc)})", path) from None


# What h5py raises for a corrupt file: HDF5's own errors are OSError/KeyError/RuntimeError, a
# datatype numpy cannot represent a ValueError or TypeError.
_H5PY_ERRORS = (OSError, KeyError, RuntimeError, ValueError, TypeError, OverflowError)
# gzip/deflate, the strongest filter HDF5 ships, packs at most ~1032 bytes into one.
_MAX_COMPRESSION = 1100


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def _name(raw: Any, what: str, path: str | os.PathLike[str]) -> str:
    if isinstance(raw, bytes):  # h5py gives bytes for names that are not UTF-8
        raise CaffeFormatError(f"{what} {raw!r} is not valid UTF-8: not Caffe weights", path)
    return raw


def _read_layers(handle: Any, path: str | os.PathLike[str]) -> dict[str, list[np.ndarray]]:
    import h5py

    file_size = os.path.getsize(path)
    data = handle.get("data")
    if not isinstance(data, h5py.Group):
        raise CaffeFormatError(
            "HDF5 file has no /data group: not Caffe weights (expected /data/<layer>/<blob>)",
            path,
        )
    weights: dict[str, list[np.ndarray]] = {}
    for raw_name, group in data.items():
        layer_name = _name(raw_name, "layer group name", path)
        if not isinstance(group, h5py.Group):
            raise CaffeFormatError(
                f"/data/{layer_name} is not a group: not Caffe weights (expected /data/<layer>/<blob>)",
                path,
            )
        keys = [_name(key, f"a dataset name in /data/{layer_name}:", path) for key in group.keys()]
        if sorted(keys) != sorted(str(i) for i in range(len(keys))):
            shown = sorted(keys)[:8] + (["..."] if len(keys) > 8 else [])
            raise CaffeFormatError(
                f"/data/{layer_name} holds {shown}, not blobs numbered 0, 1, ...: not Caffe weights",
                path,
            )
        blobs = []
        for index in range(len(keys)):
            where = f"/data/{layer_name}/{index}"
            try:
                blobs.append(_read_blob(group[str(index)], file_size, path, where))
            except CaffeFormatError:
                raise
            except _H5PY_ERRORS as exc:
                raise CaffeFormatError(
                    f"{where} cannot be read ({_one_line(exc)}): a corrupt file?", path
                ) from None
        weights[layer_name] = blobs
    return weights


def _read_blob(dataset: Any, file_size: int, path: str | os.PathLike[str], where: str) -> np.ndarray:
    """One blob as float32, its shape and size checked before any value is read."""
    import h5py

    from .formats import check_blob_shape

    if not isinstance(dataset, h5py.Dataset) or dataset.dtype.kind not in "fiu":
        raise CaffeFormatError(f"{where} is not a numeric dataset: not Caffe weights", path)
    shape = dataset.shape
    if shape is None:
        raise CaffeFormatError(f"{where} has an empty (null) dataspace: no values, not a blob", path)
    count = check_blob_shape(tuple(int(d) for d in shape), path, where)
    size = count * dataset.dtype.itemsize
    filtered = dataset.id.get_create_plist().get_nfilters() > 0
    limit = file_size * (_MAX_COMPRESSION if filtered else 1)
    if size > limit:
        raise CaffeFormatError(
            f"{where} declares {' x '.join(map(str, shape))} values ({size:,} bytes), more than the "
            f"{file_size:,}-byte file can hold: a corrupt or hostile file",
            path,
        )
    return np.asarray(dataset[()], dtype=np.float32)


def write_hdf5_weights(weights: dict[str, list[np.ndarray]], path: str | os.PathLike[str]) -> None:
    """Write weights in Caffe's HDF5 layout (``/data/<layer>/<i>``, float32), atomically.

    Layer names must be usable as HDF5 group names: no ``/`` (it would nest groups) and not
    ``.`` or empty; otherwise ``ValueError`` and no file is written.
    """
    import h5py

    from ..atomic import atomic_write

    for layer_name in weights:
        if not layer_name or "/" in layer_name or layer_name == ".":
            raise ValueError(
                f"layer name {layer_name!r} cannot be an HDF5 group name; write a binary .caffemodel instead"
            )

    with atomic_write(path) as handle:
        with h5py.File(handle, "w") as out:
            data = out.create_group("data")
            for layer_name, blobs in weights.items():
                group = data.create_group(layer_name)
                for index, blob in enumerate(blobs):
                    group.create_dataset(str(index), data=np.asarray(blob, dtype=np.float32))
