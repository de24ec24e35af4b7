"""``python -m converters.inspect FILE [--json]``: what a Caffe file holds.

Prints the layers of a ``.prototxt``, binary ``.caffemodel`` or ``.caffemodel.h5`` (recognised by
content): name, type (V1 enum types mapped to today's names), bottoms and tops, blob shapes and
the number of parameters per layer and in total. A prototxt has no blobs; its layers' settings
(``*_param``) are shown instead. Weight values are never read, so a big caffemodel is quick.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import struct
import sys
import zipfile
from typing import Any

import numpy as np

from . import cli
from .caffe.forks import fork_fields
from .caffe.formats import blob_array, read_net, sniff_format
from .caffe.message import Message, unknown_named_fields
from .caffe.netdef import layer_type
from .errors import CaffeFormatError, UsageError

_FORMAT_NAMES = {
    "text": "prototxt (protobuf text format)",
    "binary": "caffemodel (protobuf binary NetParameter)",
    "hdf5": "caffemodel.h5 (Caffe HDF5 weights)",
}
_SETTINGS_WIDTH = 72


def to_jsonable(value: Any) -> Any:
    """A message or field value as plain JSON data (messages become dicts, repeated fields lists)."""
    if isinstance(value, Message):
        out: dict[str, Any] = {}
        for name, values in value.fields():
            spec = value.field_spec(name)
            raw = values.tolist() if isinstance(values, np.ndarray) else values
            items = [to_jsonable(v) for v in raw]
            repeated = spec.repeated if spec is not None else len(items) > 1
            out[name] = items if repeated else items[-1]
        return out
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    return value


def _settings(layer: Message) -> dict[str, Any]:
    return {name: to_jsonable(layer.get(name)) for name, _ in layer.fields() if name.endswith("_param")}


def _settings_text(settings: dict[str, Any], unknown: frozenset[str] = frozenset()) -> str:
    """Settings on one line; fields whose dotted path is in ``unknown`` are marked with ``?``."""

    def key(path: str) -> str:
        return path.rsplit(".", 1)[-1] + ("?" if path in unknown else "")

    def render(value: Any, path: str = "") -> str:
        if isinstance(value, dict):
            inner = " ".join(f"{key(path + k)}: {render(v, path + k + '.')}" for k, v in value.items())
            return "{ " + inner + " }"
        if isinstance(value, list):
            if len(value) == 1:
                return render(value[0], path)
            return "[" + ", ".join(render(v, path) for v in value) + "]"
        if isinstance(value, str):
            return value if value.isidentifier() and value.isupper() else json.dumps(value)
        if isinstance(value, bool):
            return "true" if value else "false"
        return str(value)

    return " ".join(f"{key(name)} {render(value, name + '.')}" for name, value in settings.items())


# --- files that are not Caffe's: what fcn-port and PyTorch write -------------------------------------

_READS = "inspect reads Caffe files (.prototxt, .caffemodel, .caffemodel.h5)"


def _use_as_model(path: str) -> str:
    return (
        f"use it as a model (fcn-port segment --model {path} ..., converters.load_converted), or run "
        f"fcn-port inspect on the prototxt and caffemodel it came from; {_READS}"
    )


def _safetensors_metadata(head: bytes, size: int) -> dict[str, Any] | None:
    """The ``__metadata__`` of a safetensors file from its first bytes (``{}`` without one), or
    ``None`` when the bytes are not a safetensors header."""
    if len(head) < 10 or head[8:9] != b"{":
        return None
    (length,) = struct.unpack("<Q", head[:8])
    if length > size - 8 or length > len(head) - 8:
        return {} if length <= size - 8 else None
    try:
        header = json.loads(head[8 : 8 + length])
    except (ValueError, UnicodeDecodeError):
        return None
    return header.get("__metadata__") or {} if isinstance(header, dict) else None


def _onnx_model(head: bytes) -> bool:
    """Whether ``head`` starts as an ONNX ModelProto does: ir_version (field 1, a small varint), then
    one of the model's next fields (producer, domain, version, doc string, graph, opsets). A Caffe
    NetParameter never starts with a varint field 1 (its field 1 is the net's name, a string)."""
    if len(head) < 3 or head[0] != 0x08 or not 1 <= head[1] <= 64:
        return False
    return head[2] in (0x12, 0x1A, 0x22, 0x28, 0x32, 0x3A, 0x42)


def _zip_kind(path: str) -> str:
    """What a zip archive written by PyTorch is: ``"pt2"``, ``"fcn-port pt"``, ``"pt"`` or ``"zip"``."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            if any(name.endswith("/archive_format") or name == "archive_format" for name in names):
                return "pt2"
            pickles = [name for name in names if name.endswith("/data.pkl") or name == "data.pkl"]
            if pickles:
                return "fcn-port pt" if b"fcn_port.format" in archive.read(pickles[0]) else "pt"
    except (zipfile.BadZipFile, OSError, ValueError):
        pass
    return "zip"


def other_file(path: str | os.PathLike[str]) -> str | None:
    """What ``path`` is, and what to do with it, when it is a file fcn-port or PyTorch writes
    (converted ``.safetensors``/``.pt``, ``.pt2`` programs, ONNX models) rather than a Caffe file;
    ``None`` for anything else (a Caffe file, or one that is nothing known)."""
    path = os.fspath(path)
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as handle:
            head = handle.read(65536)
    except OSError:
        return None
    metadata = _safetensors_metadata(head, size)
    if metadata is not None:
        if "fcn_port.format" in metadata:
            what = "a model fcn-port converted (safetensors, its net inside), not a Caffe file"
            return f"{path} is {what}: {_use_as_model(path)}"
        return f"{path} is a safetensors file (PyTorch weights, not from fcn-port convert): {_READS}"
    if head.startswith(b"PK\x03\x04"):
        kind = _zip_kind(path)
        if kind == "fcn-port pt":
            what = "a model fcn-port converted (.pt state dict, its net inside), not a Caffe file"
            return f"{path} is {what}: {_use_as_model(path)}"
        if kind == "pt2":
            return (
                f"{path} is a torch.export program (.pt2), not a Caffe file: load it with "
                f"torch.export.load({path!r}).module() and call it with the inputs in order "
                "(it returns a tuple); " + _READS
            )
        if kind == "pt":
            return (
                f"{path} is a PyTorch file (torch.save), not a Caffe file: load it with torch.load; {_READS}"
            )
        return f"{path} is a zip archive, not a Caffe file: {_READS}"
    if head.startswith(b"\x80") and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return f"{path} is a Python pickle (an old torch.save file?), not a Caffe file: {_READS}"
    if _onnx_model(head):
        return (
            f"{path} is an ONNX model, not a Caffe file: run it with onnxruntime "
            f"(onnxruntime.InferenceSession({path!r})) or view it with Netron; {_READS}"
        )
    return None


def describe(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A JSON-ready summary of a Caffe file: format, net name, inputs, layers, parameter counts.

    ``inputs`` lists the legacy ``input:`` blobs and the tops of ``Input`` layers, each with its
    declared shape (``None`` when it has none). A layer's ``unknown_fields`` lists the fields
    caffe.proto does not have: field numbers for binary files, ``{"field", "line", "column"}``
    for a prototxt (building a graph refuses those). Raises :class:`CaffeFormatError` when the
    file cannot be read, or is one fcn-port or PyTorch writes (:func:`other_file` says which and
    what to do with it); :class:`UsageError` for a folder.
    """
    if os.path.isdir(path):
        raise UsageError(f"{os.fspath(path)} is a folder, not a file: {_READS}")
    other = other_file(path)
    if other is not None:
        raise CaffeFormatError(other)
    fmt = sniff_format(path)
    net = read_net(path)
    layers: list[dict[str, Any]] = []
    version = None
    if fmt != "hdf5":
        version = "V1" if "layers" in net else "V2"
    for field in ("layers", "layer"):
        for layer in net.getall(field):
            layer = fork_fields(layer)  # a caffemodel's fork fields, decoded by the layer's type
            name = layer.get("name")
            entry: dict[str, Any] = {
                "name": name,
                "type": layer_type(layer) if "type" in layer else None,
            }
            if layer.type == "V1LayerParameter" and "type" in layer:
                entry["type_stored"] = str(layer.get("type"))
            entry["bottoms"] = list(layer.get("bottom"))
            entry["tops"] = list(layer.get("top"))
            blobs = layer.getall("blobs")
            if fmt == "text" and not blobs:
                entry["blobs"] = None
                entry["params"] = None
            else:
                shapes = [
                    list(blob_array(blob, path, f"blob {i} of layer '{name}'").shape)
                    for i, blob in enumerate(blobs)
                ]
                entry["blobs"] = shapes
                entry["params"] = sum(math.prod(shape) for shape in shapes)
            entry["settings"] = _settings(layer)
            if layer.unknown:
                entry["unknown_fields"] = sorted({number for number, _, _ in layer.unknown})
            named = unknown_named_fields(layer)
            if named:
                entry["unknown_fields"] = [
                    {"field": field, "line": at[0] if at else None, "column": at[1] if at else None}
                    for field, at in named
                ]
            layers.append(entry)
    inputs = [
        {"name": name, "shape": shape} for name, shape in _legacy_inputs(net) + _input_layer_inputs(net)
    ]
    counted = [entry["params"] for entry in layers if entry["params"] is not None]
    return {
        "file": os.fspath(path),
        "format": {"text": "prototxt", "binary": "caffemodel", "hdf5": "hdf5"}[fmt],
        "format_description": _FORMAT_NAMES[fmt],
        "size_bytes": os.path.getsize(path),
        "net_name": net.get("name") if "name" in net else None,
        "version": version,
        "inputs": inputs,
        "num_layers": len(layers),
        "num_layers_with_blobs": sum(1 for entry in layers if entry["blobs"]),
        "total_params": sum(counted) if fmt != "text" else None,
        "unknown_fields": _count_unknown(net),
        "unknown_top_level_fields": sorted({n for n, _ in net.fields() if net.field_spec(n) is None}),
        "layers": layers,
    }


def _legacy_inputs(net: Message) -> list[tuple[str, list[int] | None]]:
    names = list(net.getall("input"))
    shapes = [list(shape.get("dim")) for shape in net.getall("input_shape")]
    dims = list(net.getall("input_dim"))
    if not shapes and len(dims) == 4 * len(names):
        shapes = [dims[4 * i : 4 * i + 4] for i in range(len(names))]
    return [(name, shapes[i] if i < len(shapes) else None) for i, name in enumerate(names)]


def _input_layer_inputs(net: Message) -> list[tuple[str, list[int] | None]]:
    """The tops of ``Input`` layers with their shapes (one shape for every top, or one each, as
    Caffe's InputLayer takes them)."""
    found: list[tuple[str, list[int] | None]] = []
    for layer in net.getall("layer"):
        if str(layer.get("type")) != "Input":
            continue
        tops = list(layer.get("top"))
        shapes = [list(shape.get("dim")) for shape in layer.get("input_param").get("shape")]
        for i, top in enumerate(tops):
            shape = shapes[0] if len(shapes) == 1 else shapes[i] if len(shapes) == len(tops) else None
            found.append((top, shape))
    return found


def _count_unknown(msg: Message) -> int:
    """Fields caffe.proto does not know: skipped binary fields, and text fields kept by name."""
    count = len(msg.unknown)
    for name, values in msg.fields():
        if msg.type is not None and msg.field_spec(name) is None:
            count += len(values)
            continue
        if not isinstance(values, np.ndarray):
            count += sum(_count_unknown(v) for v in values if isinstance(v, Message))
    return count


def _shape_text(shape: list[int]) -> str:
    return "x".join(str(d) for d in shape) if shape else "scalar"


def format_table(summary: dict[str, Any]) -> str:
    """The human-readable report: a header, one aligned row per layer, and totals."""
    version = f", {summary['version']} layers" if summary["version"] else ""
    lines = [
        f"file:    {summary['file']} ({summary['size_bytes']:,} bytes)",
        f"format:  {summary['format_description']}{version}",
    ]
    if summary["net_name"] is not None:
        lines.append(f"net:     {summary['net_name']}")
    for entry in summary["inputs"]:
        shape = _shape_text(entry["shape"]) if entry["shape"] is not None else "?"
        lines.append(f"input:   {entry['name']} {shape}")
    text_mode = summary["format"] == "prototxt"
    header = ["#", "layer", "type", "bottoms -> tops", "settings" if text_mode else "blobs", "params"]
    if text_mode:
        header.pop()
    rows = []
    for index, entry in enumerate(summary["layers"]):
        type_text = entry["type"] or "-"
        if "type_stored" in entry:
            type_text += f" ({entry['type_stored']})"
        flow = (", ".join(entry["bottoms"]) + " -> " + ", ".join(entry["tops"])).strip()
        if entry["blobs"] is None:
            detail = _settings_text(entry["settings"], frozenset(_named_unknown(entry)))
            if len(detail) > _SETTINGS_WIDTH:
                detail = detail[: _SETTINGS_WIDTH - 3] + "..."
        else:
            detail = ", ".join(_shape_text(shape) for shape in entry["blobs"])
        row = [str(index), entry["name"] or "", type_text, flow if flow != "->" else "", detail]
        if not text_mode:
            row.append(f"{entry['params']:,}" if entry["params"] else "")
        rows.append(row)
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    right = {0, 5}

    def render(row: list[str]) -> str:
        cells = [cell.rjust(widths[i]) if i in right else cell.ljust(widths[i]) for i, cell in enumerate(row)]
        return "  ".join(cells).rstrip()

    lines.append("")
    lines.append(render(header))
    lines.append(render(["-" * w for w in widths]))
    lines.extend(render(row) for row in rows)
    lines.append("")
    total = f"{summary['num_layers']} layers, {summary['num_layers_with_blobs']} with blobs"
    if summary["total_params"] is not None:
        total += f", {summary['total_params']:,} parameters"
    lines.append(f"total:   {total}")
    top = summary["unknown_top_level_fields"]
    not_a_net = bool(top) and not summary["layers"]
    named = [(entry["name"], field) for entry in summary["layers"] for field in _named_unknown_entries(entry)]
    for layer_name, field in named:
        line = f" (line {field['line']})" if field["line"] is not None else ""
        lines.append(f"unknown: layer '{layer_name}': {field['field']}{line}")
    if named:
        lines.append(
            f"note:    {len(named)} field(s) of layers are in no Caffe schema fcn-port knows (marked '?'; "
            "a misspelling or an unknown fork's field): building a graph from this net is refused"
        )
    elif summary["unknown_fields"] and not not_a_net:
        what = "kept as written" if text_mode else "skipped"
        lines.append(
            f"note:    {summary['unknown_fields']} field(s) unknown to BVLC caffe.proto (a fork's "
            f"extensions) were {what}"
        )
    if not_a_net:
        hint = " (a solver prototxt?)" if {"base_lr", "net", "train_net", "max_iter"} & set(top) else ""
        lines.append(f"note:    not a net definition{hint}: its fields are {', '.join(top)}")
    return "\n".join(lines) + "\n"


def _named_unknown_entries(entry: dict[str, Any]) -> list[dict[str, Any]]:
    return [f for f in entry.get("unknown_fields", []) if isinstance(f, dict)]


def _named_unknown(entry: dict[str, Any]) -> list[str]:
    return [f["field"] for f in _named_unknown_entries(entry)]


PROG = "python -m converters.inspect"


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    """The command-line interface of ``python -m converters.inspect`` (``prog``: the command as the
    user typed it, e.g. ``fcn-port inspect``)."""
    parser = cli.Parser(
        prog=prog,
        description="Show the layers, types, bottoms/tops, blob shapes and parameter counts of a Caffe "
        "file: .prototxt, .caffemodel or .caffemodel.h5 (recognised by content, not by extension).",
    )
    parser.add_argument("file", help="a .prototxt, .caffemodel or .caffemodel.h5 file")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    return parser


def main(argv: list[str] | None = None, prog: str = PROG) -> int:
    """Run the CLI; return the exit status (0 on success, 2 on an unreadable file;
    :func:`converters.cli.run`). ``prog``: the command as typed, for its usage lines."""

    def body() -> int:
        args = build_parser(prog).parse_args(argv)
        if not os.path.isdir(args.file):  # a folder: describe says what inspect reads
            cli.input_file(args.file, args.file)
        summary = describe(args.file)
        output = json.dumps(summary, indent=2) + "\n" if args.json else format_table(summary)
        sys.stdout.write(output)
        return 0

    return cli.run(body)


if __name__ == "__main__":
    sys.exit(main())
