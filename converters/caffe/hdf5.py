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
    types and no net order, so layers come in the file's (alphabetical) order.
    """
    import h5py

    try:
        handle = h5py.File(path, "r")
    except OSError as exc:
        raise CaffeFormatError(f"cannot open as HDF5 ({exc})", path) from None
    try:
        with handle:
            return _read_layers(handle, path)
    except (OSError, KeyError, RuntimeError) as exc:  # corrupt or truncated inside the file
        raise CaffeFormatError(f"cannot read HDF5 weights ({exc})", path) from None


def _read_layers(handle: Any, path: str | os.PathLike[str]) -> dict[str, list[np.ndarray]]:
    import h5py

    data = handle.get("data")
    if not isinstance(data, h5py.Group):
        raise CaffeFormatError(
            "HDF5 file has no /data group: not Caffe weights (expected /data/<layer>/<blob>)",
            path,
        )
    weights: dict[str, list[np.ndarray]] = {}
    for layer_name, group in data.items():
        if not isinstance(group, h5py.Group):
            raise CaffeFormatError(
                f"/data/{layer_name} is not a group: not Caffe weights "
                "(expected /data/<layer>/<blob>)",
                path,
            )
        keys = list(group.keys())
        if sorted(keys) != sorted(str(i) for i in range(len(keys))):
            raise CaffeFormatError(
                f"/data/{layer_name} holds {sorted(keys)}, not blobs numbered 0, 1, ...: "
                "not Caffe weights",
                path,
            )
        blobs = []
        for index in range(len(keys)):
            dataset = group[str(index)]
            if not isinstance(dataset, h5py.Dataset) or dataset.dtype.kind not in "fiu":
                raise CaffeFormatError(
                    f"/data/{layer_name}/{index} is not a numeric dataset: not Caffe weights",
                    path,
                )
            blobs.append(np.asarray(dataset[()], dtype=np.float32))
        weights[layer_name] = blobs
    return weights


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
