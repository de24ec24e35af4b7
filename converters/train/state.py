"""Caffe's snapshot files: the ``.caffemodel`` (``Net::ToProto``: every layer's definition with its
blobs) and the ``.solverstate`` (``SolverState``: iter, learned_net, history, current_step), in
binary protobuf or Caffe's HDF5 layout (``/iter``, ``/learned_net``, ``/current_step``,
``/history/<i>``)."""

from __future__ import annotations

import dataclasses
import os
from typing import TYPE_CHECKING, Any

import numpy as np

from ..atomic import atomic_write
from ..caffe.formats import array_to_blob, blob_array, read_binary_net, sniff_format, write_caffemodel
from ..caffe.message import Message
from ..errors import CaffeFormatError, SolverError

if TYPE_CHECKING:
    from .solver import Solver


@dataclasses.dataclass
class SolverStateFile:
    """A solverstate's contents."""

    iter: int
    learned_net: str
    current_step: int
    history: list[np.ndarray]


def read_state(path: str | os.PathLike[str], shapes: list[tuple[int, ...]] | None = None) -> SolverStateFile:
    """Read a binary or HDF5 solverstate (told apart by content, not by name). With ``shapes`` (the
    solver's history blobs), an HDF5 history blob of another size is refused before it is read."""
    if not os.path.isfile(path):
        raise SolverError(f"{path}: no such solverstate file")
    fmt = sniff_format(path)
    if fmt == "hdf5":
        try:
            return _read_hdf5_state(path, shapes)
        except SolverError:
            raise
        except (OSError, KeyError, ValueError, TypeError, RuntimeError) as exc:  # h5py's errors
            raise SolverError(f"{path}: not a readable HDF5 solverstate ({_one_line(exc)})") from None
    if fmt != "binary":
        raise SolverError(f"{path}: a text file, not a .solverstate (binary SolverState or HDF5)")
    try:
        state = read_binary_net(path, "SolverState")
    except CaffeFormatError as exc:
        raise SolverError(f"{path}: not a valid .solverstate: {exc.reason}") from None
    history = [blob_array(b, path, f"history blob {i}") for i, b in enumerate(state.getall("history"))]
    return SolverStateFile(
        iter=int(state.get("iter")),
        learned_net=str(state.get("learned_net")) if "learned_net" in state else "",
        current_step=int(state.get("current_step")),
        history=[np.array(h, dtype=np.float32) for h in history],
    )


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _hdf5_dataset(group: Any, key: str, path: Any, what: str) -> Any:
    """``group[key]`` when it is a dataset stored in this file (not a group, nor a soft or
    external link, which Caffe never writes)."""
    import h5py

    link = group.get(key, getlink=True)
    if link is None:
        raise SolverError(f"{path}: not a Caffe HDF5 solverstate (no {what})")
    if not isinstance(link, h5py.HardLink):
        raise SolverError(f"{path}: {what} is a {type(link).__name__}; Caffe writes datasets here")
    item = group[key]
    if not isinstance(item, h5py.Dataset):
        raise SolverError(f"{path}: {what} is a group; Caffe writes a dataset here")
    return item


def _scalar(dataset: Any, path: Any, what: str) -> int:
    if dataset.size < 1 or dataset.dtype.kind not in "iuf":
        raise SolverError(f"{path}: {what} holds no number")
    value = np.asarray(dataset[(0,) * len(dataset.shape)] if dataset.shape else dataset[()]).reshape(-1)[0]
    if not np.isfinite(value) or not -(2**31) <= value < 2**31:
        raise SolverError(f"{path}: {what} {value} is not a 32-bit integer, as Caffe stores it")
    return int(value)


def _read_hdf5_state(path: Any, shapes: list[tuple[int, ...]] | None) -> SolverStateFile:
    import h5py

    from ..graph.builder import memory_limit

    with h5py.File(path, "r") as f:
        iteration = _scalar(_hdf5_dataset(f, "iter", path, "/iter"), path, "/iter")
        step = _scalar(_hdf5_dataset(f, "current_step", path, "/current_step"), path, "/current_step") \
            if "current_step" in f else 0  # fmt: skip
        link = f.get("history", getlink=True)
        if not isinstance(link, h5py.HardLink) or not isinstance(f["history"], h5py.Group):
            raise SolverError(f"{path}: not a Caffe HDF5 solverstate (no /history group)")
        group = f["history"]
        keys = sorted(group.keys())
        if sorted(keys, key=lambda k: int(k) if k.isdigit() else -1) != [str(i) for i in range(len(keys))]:
            raise SolverError(
                f"{path}: /history holds {keys[:6]}...; Caffe names its blobs 0 to {len(keys) - 1}"
            )
        datasets = [_hdf5_dataset(group, str(i), path, f"/history/{i}") for i in range(len(keys))]
        limit = memory_limit()
        for i, data in enumerate(datasets):  # sizes checked before anything is read
            count = int(np.prod(data.shape, dtype=np.int64))
            if shapes is not None and i < len(shapes) and count != int(np.prod(shapes[i], dtype=np.int64)):
                raise SolverError(
                    f"{path}: history blob {i} holds {count} values, the solver's {int(np.prod(shapes[i]))}"
                )
            if count > 2**31 - 1 or (limit is not None and 4 * count > limit):
                raise SolverError(
                    f"{path}: history blob {i} declares {count:,} values, more than fit in memory"
                )
            if data.dtype.kind not in "iuf":
                raise SolverError(f"{path}: history blob {i} is not numeric ({data.dtype})")
        history = [np.asarray(data[()], dtype=np.float32) for data in datasets]
        learned = b""
        if "learned_net" in f:
            name = _hdf5_dataset(f, "learned_net", path, "/learned_net")
            if name.size * name.dtype.itemsize > 65536:  # a file name, read only when it is one
                raise SolverError(f"{path}: /learned_net is not a file name ({name.shape}, {name.dtype})")
            learned = name[()]
        learned = learned.tobytes() if isinstance(learned, np.ndarray) else learned
        learned = (
            learned.rstrip(b"\0").decode("utf-8", "replace") if isinstance(learned, bytes) else str(learned)
        )
        return SolverStateFile(iter=iteration, learned_net=learned, current_step=step, history=history)


def _model_message(solver: Solver, diffs: list[np.ndarray] | None) -> Message:
    """``Net::ToProto``: the train net's layers in order, each with its blobs."""
    weights = solver.weights()
    diff_of: dict[tuple[str, int], np.ndarray] = {}
    if diffs is not None:  # a shared blob's diff is its owner's
        diff_of = {key: diffs[index] for key, index in solver.owner_of.items()}
    net = Message("NetParameter")
    definition = solver.net.caffe.definition
    if "name" in definition:
        net.set("name", definition.get("name"))
    for layer in definition.getall("layer"):
        out = layer.copy()
        name = str(layer.get("name"))
        out.remove("blobs")
        for i, array in enumerate(weights.get(name, [])):
            blob = array_to_blob(array)
            if (name, i) in diff_of:
                blob.set("diff", np.asarray(diff_of[(name, i)], dtype=np.float32).reshape(-1))
            out.add("blobs", blob)
        net.add("layer", out)
    return net


def _write_hdf5_model(solver: Solver, path: str, diffs: list[np.ndarray] | None) -> None:
    import h5py

    weights = solver.weights()
    with atomic_write(path) as handle, h5py.File(handle, "w") as f:
        data, diff = f.create_group("data"), f.create_group("diff")
        for layer in solver.net.caffe.definition.getall("layer"):
            name = str(layer.get("name"))
            group = data.create_group(name)
            diff_group = diff.create_group(name)
            for i, array in enumerate(weights.get(name, [])):
                group.create_dataset(str(i), data=array)
                index = solver.owner_of[(name, i)]
                values = diffs[index] if diffs is not None else np.zeros_like(array)
                diff_group.create_dataset(
                    str(i), data=np.asarray(values, dtype=np.float32).reshape(array.shape)
                )


def _fixed_string(text: str) -> Any:
    """A NUL-terminated fixed-length string, as HDF5's ``H5LTmake_dataset_string`` writes it."""
    raw = text.encode("utf-8") + b"\0"
    return np.array(raw, dtype=f"S{len(raw)}")


def write_snapshot(
    solver: Solver, stem: str, fmt: str, diffs: list[np.ndarray] | None = None
) -> tuple[str, str]:
    """Write ``<stem>.caffemodel`` + ``<stem>.solverstate`` (or the ``.h5`` pair); returns the paths."""
    if not 0 <= solver.iter < 2**31:  # SolverState.iter is an int32: checked before any file is written
        raise SolverError(f"iteration {solver.iter} does not fit a solverstate's 32-bit iter: no snapshot")
    folder = os.path.dirname(stem)
    if folder and not os.path.isdir(folder):
        raise SolverError(f"snapshot folder '{folder}' does not exist: create it or change snapshot_prefix")
    history = [
        h.detach().cpu().numpy().astype(np.float32).reshape(solver.blob_shapes[i % len(solver.blob_shapes)])
        for i, h in enumerate(solver.history)
    ]
    if fmt == "hdf5":
        import h5py

        model_path, state_path = f"{stem}.caffemodel.h5", f"{stem}.solverstate.h5"
        _write_hdf5_model(solver, model_path, diffs)
        with atomic_write(state_path) as handle, h5py.File(handle, "w") as f:
            f.create_dataset("iter", data=np.array([solver.iter], dtype=np.int32))
            f.create_dataset("learned_net", data=_fixed_string(model_path))
            f.create_dataset("current_step", data=np.array([solver.current_step], dtype=np.int32))
            group = f.create_group("history")
            for i, h in enumerate(history):
                group.create_dataset(str(i), data=h)
        return model_path, state_path
    model_path, state_path = f"{stem}.caffemodel", f"{stem}.solverstate"
    write_caffemodel(_model_message(solver, diffs), model_path)
    state = Message(
        "SolverState",
        iter=solver.iter,
        learned_net=model_path,
        history=[array_to_blob(h) for h in history],
        current_step=solver.current_step,
    )
    write_caffemodel(state, state_path)
    return model_path, state_path
