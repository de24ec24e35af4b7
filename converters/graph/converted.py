"""Converted weights on disk: ``.safetensors`` (default) or ``.pt``, carrying their net definition.

A converted file holds the graph's state dict and, as metadata, the Caffe net definition it was
built from, so :func:`load_converted` rebuilds the same graph without the prototxt. A ``.pt`` file is
a plain state dict (``model.load_state_dict(torch.load(path))`` works on the graph and on the named
FCN modules); the definition rides in the state dict's ``_metadata`` under ``"fcn_port"``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections import OrderedDict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import fx, nn

from .. import spans
from ..atomic import atomic_write
from ..caffe.text import format_message, parse_text
from ..errors import CaffeFormatError, UsageError
from .builder import build_graph, collector_paused
from .devices import checked_device

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


_FORMAT_NAMES = {"onnx": "an ONNX", "pt2": "a .pt2", "pt": "a .pt", "safetensors": "a safetensors"}


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
            f"{os.fspath(path)} names {_FORMAT_NAMES.get(named, 'a ' + named)} file but --format is {fmt}: "
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
        "fcn_port.variants": json.dumps(info.variants),
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


@contextlib.contextmanager
def _tensors(
    path: str | os.PathLike[str],
) -> Iterator[tuple[Callable[[str], torch.Tensor], list[str], dict[str, str]]]:
    """``(get tensor by key, keys, metadata)`` of a converted file; a safetensors file's tensors are
    read in the background (:class:`converters.spans.SpanReader`) from here on, each into a tensor
    of its own that ``get`` hands out (a caller that keeps each holds the parameters once)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(9)
    except OSError as exc:
        raise CaffeFormatError(exc.strerror or str(exc), path) from None
    if head[:2] == b"PK":  # torch.save's zip container
        try:
            blob: Any = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except Exception as exc:
            raise CaffeFormatError(f"not a converted .pt file ({exc})", path) from None
        metadata = getattr(blob, "_metadata", None) or {}
        if not isinstance(blob, dict) or PT_METADATA_KEY not in metadata:
            raise CaffeFormatError(
                "a .pt file without fcn-port's net definition (not written by caffe2torch)", path
            )
        yield (lambda key: blob[key].clone()), list(blob), dict(metadata[PT_METADATA_KEY])
        return
    if head[8:9] != b"{":  # safetensors: an 8-byte header length, then the JSON header
        raise CaffeFormatError("neither a safetensors file nor a .pt file written by fcn-port", path)
    with open(path, "rb", buffering=0) as handle:
        entries, metadata, start, size = _safetensors_header(handle, path)
        places: dict[str, tuple[int, int]] = {}  # key -> (offset in the file, bytes), where it fits
        for key, (dtype, shape, (begin, end)) in entries.items():
            itemsize = torch.empty((), dtype=dtype).element_size()
            if not any(d < 0 for d in shape) and math.prod(shape) * itemsize == end - begin >= 0 <= begin:
                places[key] = (start + begin, end - begin)
        ordered = sorted(places.items(), key=lambda item: item[1])
        filled = [item for item in ordered if item[1][1]]  # (an empty tensor overlaps nothing)
        for (key, (offset, length)), (after, (next_offset, _)) in zip(filled, filled[1:], strict=False):
            if offset + length > next_offset:  # (safetensors forbids it: memory would exceed the file)
                raise CaffeFormatError(f"tensors '{key}' and '{after}' overlap in the file", path)

        def allocate(key: str) -> Callable[[], tuple[torch.Tensor, Any]]:
            def made() -> tuple[torch.Tensor, Any]:
                dtype, shape, _ = entries[key]
                tensor = torch.empty(shape, dtype=dtype)
                return tensor, tensor.view(-1).view(torch.uint8).numpy()

            return made

        fits = {key: place for key, place in ordered if sum(place) <= size}
        reader = spans.SpanReader(handle, [(key, *place, allocate(key)) for key, place in fits.items()])

        def get(key: str) -> torch.Tensor:
            if key not in fits:
                raise CaffeFormatError(f"tensor '{key}' does not fit its place in the file", path)
            try:
                return reader.wait()[key]
            except spans.ShortFile as exc:
                inside = next((k for k, (o, n) in ordered if o <= exc.offset < o + n), key)
                raise CaffeFormatError(f"the file ends inside tensor '{inside}'", path) from None
            except OSError as exc:
                raise CaffeFormatError(exc.strerror or str(exc), path) from None

        try:  # (read while the caller builds its net)
            yield get, list(entries), metadata
        finally:
            reader.stop()


_SAFETENSORS_TYPES = {name: dtype for dtype, name in _SAFETENSORS_DTYPES.items()}


def _safetensors_header(
    handle: Any, path: Any
) -> tuple[dict[str, tuple[torch.dtype, list[int], tuple[int, int]]], dict[str, str], int, int]:
    """``(key -> (dtype, shape, byte range), metadata, data start, file size)`` of a safetensors
    file, read with plain file reads (no memory map: pages of the file are not kept in memory)."""
    size = os.fstat(handle.fileno()).st_size
    length = int.from_bytes(handle.read(8), "little")
    if not 2 <= length <= min(size - 8, 100 << 20):
        raise CaffeFormatError("not a safetensors file (bad header length)", path)
    try:
        header = json.loads(handle.read(length))
        metadata = {str(k): str(v) for k, v in (header.pop("__metadata__", None) or {}).items()}
        entries = {
            key: (
                _SAFETENSORS_TYPES[v["dtype"]],
                [int(d) for d in v["shape"]],
                tuple(int(o) for o in v["data_offsets"]),
            )
            for key, v in header.items()
        }
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CaffeFormatError(f"not a safetensors file ({exc})", path) from None
    return entries, metadata, 8 + length, size


def _materialise(
    module: nn.Module, get: Callable[[str], torch.Tensor], keys: list[str], device: torch.device, path: Any
) -> None:
    """Give the meta-device ``module`` the file's tensors, each read once and kept as is (parameters
    shared between layers stay one tensor: the file's copies must agree)."""
    made: dict[int, torch.Tensor] = {}
    wanted: set[str] = set()
    for prefix, sub in module.named_modules(remove_duplicate=False):
        for table, is_parameter in ((sub._parameters, True), (sub._buffers, False)):
            for name, value in list(table.items()):
                if value is None:
                    continue
                if not is_parameter and name in sub._non_persistent_buffers_set:  # (no values to keep)
                    table[name] = torch.empty(value.shape, dtype=value.dtype, device=device)
                    continue
                key = f"{prefix}.{name}" if prefix else name
                wanted.add(key)
                if key not in keys:
                    raise CaffeFormatError(f"the file has no tensor '{key}'", path)
                if id(value) in made:  # a shared parameter: one tensor, its copies must agree
                    if not torch.equal(get(key).to(device), made[id(value)]):
                        raise CaffeFormatError(f"the copies of shared parameter '{key}' differ", path)
                    table[name] = made[id(value)]
                    continue
                tensor = get(key).to(device)
                if tuple(tensor.shape) != tuple(value.shape) or tensor.dtype != value.dtype:
                    raise CaffeFormatError(
                        f"tensor '{key}' is {tensor.dtype} {list(tensor.shape)}, the net needs "
                        f"{value.dtype} {list(value.shape)}",
                        path,
                    )
                new = nn.Parameter(tensor, requires_grad=value.requires_grad) if is_parameter else tensor
                made[id(value)] = new
                table[name] = new
    extra = sorted(set(keys) - wanted)
    if extra:
        raise CaffeFormatError(f"the file has tensors the net does not: {', '.join(extra[:4])}", path)


def load_converted(
    path: str | os.PathLike[str], *, device: str | torch.device | None = None, optimize: bool | None = None
) -> fx.GraphModule:
    """The graph saved by :func:`save_converted` (or ``python -m converters.caffe2torch``);
    ``optimize`` as in :func:`converters.load_caffe` (default: the fast graph on the CPU)."""
    with collector_paused():  # (as load_caffe: a collection over torch's objects costs tens of ms)
        return _load_converted(path, device, optimize)


def _load_converted(
    path: str | os.PathLike[str], device: str | torch.device | None, optimize: bool | None
) -> fx.GraphModule:
    target = checked_device(device) if device is not None else torch.device("cpu")
    with _tensors(path) as (get, keys, metadata):
        if "fcn_port.prototxt" not in metadata:
            raise CaffeFormatError("the file has no net definition: it was not written by fcn-port", path)
        net = parse_text(metadata["fcn_port.prototxt"], path=path)
        shapes = json.loads(metadata.get("fcn_port.input_shapes", "{}"))
        variants = json.loads(metadata.get("fcn_port.variants", "{}"))
        module = build_graph(
            net, None, input_shapes=shapes, device="meta", initialise=False, variants=variants
        )
        _materialise(module, get, keys, target, path)
    module.caffe.randomly_initialised = []
    if optimize if optimize is not None else target.type == "cpu":
        from .speed import optimize_for_cpu

        optimize_for_cpu(module)
    return module
