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


def read_state(path: str | os.PathLike[str]) -> SolverStateFile:
    """Read a binary or HDF5 solverstate (told apart by content, not by name)."""
    if not os.path.isfile(path):
        raise SolverError(f"{path}: no such solverstate file")
    fmt = sniff_format(path)
    if fmt == "hdf5":
        import h5py

        with h5py.File(path, "r") as f:
            if "iter" not in f or "history" not in f:
                raise SolverError(f"{path}: not a Caffe HDF5 solverstate (no /iter or /history)")
            history = [np.asarray(f["history"][str(i)], dtype=np.float32) for i in range(len(f["history"]))]
            learned = f["learned_net"][()] if "learned_net" in f else b""
            learned = learned.tobytes() if isinstance(learned, np.ndarray) else learned
            learned = learned.rstrip(b"\0").decode("utf-8") if isinstance(learned, bytes) else str(learned)
            return SolverStateFile(
                iter=int(np.asarray(f["iter"]).reshape(-1)[0]),
                learned_net=learned,
                current_step=int(np.asarray(f["current_step"]).reshape(-1)[0]) if "current_step" in f else 0,
                history=history,
            )
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
