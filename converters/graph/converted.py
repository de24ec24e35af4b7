"""Converted weights on disk: ``.safetensors`` (default) or ``.pt``, carrying their net definition.

A converted file holds the graph's state dict and, as metadata, the Caffe net definition it was
built from, so :func:`load_converted` rebuilds the same graph without the prototxt. A ``.pt`` file is
a plain state dict (``model.load_state_dict(torch.load(path))`` works on the graph and on the named
FCN modules); the definition rides in the state dict's ``_metadata`` under ``"fcn_port"``.
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
from torch import fx

from ..atomic import atomic_write
from ..caffe.text import format_message, parse_text
from ..errors import CaffeFormatError, UsageError
from .builder import build_graph

FORMAT_VERSION = "1"
PT_METADATA_KEY = "fcn_port"
#: Converted-file formats: name -> the file suffixes that name it (the first is the usual one).
#: The one table of formats: ``caffe2torch --format`` and the suffix check read it.
FORMATS: dict[str, tuple[str, ...]] = {
    "safetensors": (".safetensors",),
    "pt": (".pt", ".pth"),
    "onnx": (".onnx",),  # deployment formats: written by converters.graph.export, not reloaded here
    "pt2": (".pt2",),
}


def format_for(path: str | os.PathLike[str], fmt: str | None = None) -> str:
    """The format of a converted file at ``path``: its suffix decides (:data:`FORMATS`); ``fmt``,
    when given, must agree. ``UsageError`` (one line, naming the path) for an unknown format, an
    unknown suffix, or a suffix that names the other format."""
    if fmt is not None and fmt not in FORMATS:
        raise UsageError(f"unknown format {fmt!r}: choose one of {', '.join(FORMATS)}")
    suffix = Path(path).suffix.lower()
    named = next((name for name, suffixes in FORMATS.items() if suffix in suffixes), None)
    known = ", ".join(s for suffixes in FORMATS.values() for s in suffixes)
    if named is None:
        what = f"unknown suffix {suffix!r}" if suffix else "no suffix"
        raise UsageError(f"{os.fspath(path)}: {what}: a converted file ends in {known}")
    if fmt is not None and fmt != named:
        raise UsageError(
            f"{os.fspath(path)} names a {named} file but --format is {fmt}: "
            f"use the suffix {FORMATS[fmt][0]} (the suffix decides the format)"
        )
    return named


def _metadata(module: fx.GraphModule) -> dict[str, str]:
    info = module.caffe
    # Every input's shape, guessed ones too: the stored weights fit them, so a reload need not guess.
    declared = {name: list(shape) for name, shape in info.inputs.items()}
    return {
        "fcn_port.format": FORMAT_VERSION,
        "fcn_port.prototxt": format_message(info.definition),
        "fcn_port.input_shapes": json.dumps(declared),
        "fcn_port.outputs": json.dumps(info.outputs),
    }


def save_converted(module: fx.GraphModule, path: str | os.PathLike[str], fmt: str | None = None) -> str:
    """Write ``module``'s weights and net definition to ``path`` atomically; returns the format."""
    fmt = format_for(path, fmt)
    if fmt in ("onnx", "pt2"):
        from .export import export_file

        export_file(module, path, fmt)
        return fmt
    original = module.state_dict()
    state = OrderedDict((k, v.detach().to("cpu").contiguous()) for k, v in original.items())
    seen: set[int] = set()
    for key, value in state.items():  # a shared parameter is written under each layer, as Caffe does
        if value.untyped_storage().data_ptr() in seen:
            state[key] = value.clone()
        seen.add(value.untyped_storage().data_ptr())
    metadata = _metadata(module)
    with atomic_write(path) as handle:
        if fmt == "safetensors":
            _write_safetensors(handle, state, metadata)
        else:
            state._metadata = OrderedDict(getattr(original, "_metadata", {}))  # type: ignore[attr-defined]
            state._metadata[PT_METADATA_KEY] = metadata  # type: ignore[attr-defined]
            torch.save(state, handle)
    return fmt


_SAFETENSORS_DTYPES = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
    torch.bool: "BOOL",
}  # fmt: skip


def _write_safetensors(handle: Any, state: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """The safetensors format written tensor by tensor (``safetensors.torch.save`` builds the whole
    file in memory first: twice the parameters at the peak)."""
    header: dict[str, Any] = {"__metadata__": metadata}
    offset = 0
    for key in sorted(state):
        tensor = state[key]
        size = tensor.numel() * tensor.element_size()
        header[key] = {
            "dtype": _SAFETENSORS_DTYPES[tensor.dtype],
            "shape": list(tensor.shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the data start 8-byte aligned, as safetensors writes it
    handle.write(len(text).to_bytes(8, "little"))
    handle.write(text)
    for key in sorted(state):
        tensor = state[key].contiguous().reshape(-1)
        if tensor.numel():
            handle.write(memoryview(tensor.view(torch.uint8).numpy()))


def _read(path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    try:
        with open(path, "rb") as handle:
            head = handle.read(9)
    except OSError as exc:
        raise CaffeFormatError(exc.strerror or str(exc), path) from None
    if head[:2] == b"PK":  # torch.save's zip container
        try:
            blob: Any = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise CaffeFormatError(f"not a converted .pt file ({exc})", path) from None
        metadata = getattr(blob, "_metadata", None) or {}
        if not isinstance(blob, dict) or PT_METADATA_KEY not in metadata:
            raise CaffeFormatError(
                "a .pt file without fcn-port's net definition (not written by caffe2torch)", path
            )
        return dict(blob), dict(metadata[PT_METADATA_KEY])
    if head[8:9] != b"{":  # safetensors: an 8-byte header length, then the JSON header
        raise CaffeFormatError("neither a safetensors file nor a .pt file written by fcn-port", path)
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(os.fspath(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            state = {key: handle.get_tensor(key) for key in handle.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CaffeFormatError(f"not a safetensors file ({exc})", path) from None
    return state, metadata


def load_converted(
    path: str | os.PathLike[str], *, device: str | torch.device | None = None, optimize: bool | None = None
) -> fx.GraphModule:
    """The graph saved by :func:`save_converted` (or ``python -m converters.caffe2torch``);
    ``optimize`` as in :func:`converters.load_caffe` (default: the fast graph on the CPU)."""
    state, metadata = _read(path)
    if "fcn_port.prototxt" not in metadata:
        raise CaffeFormatError("the file has no net definition: it was not written by fcn-port", path)
    net = parse_text(metadata["fcn_port.prototxt"], path=path)
    shapes = json.loads(metadata.get("fcn_port.input_shapes", "{}"))
    module = build_graph(net, None, input_shapes=shapes, device=device, initialise=False)
    module.load_state_dict(state, strict=True)
    module.caffe.randomly_initialised = []
    if optimize if optimize is not None else torch.device(device or "cpu").type == "cpu":
        from .speed import optimize_for_cpu

        optimize_for_cpu(module)
    return module
