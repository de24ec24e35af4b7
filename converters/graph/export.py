"""Deployment formats: ONNX (checked with onnxruntime) and ``torch.export`` programs (``.pt2``,
loadable from C++ with AOTInductor or from Python with ``torch.export.load``).

Inputs and outputs keep the net's blob names. Height and width of every 4-axis input are dynamic
where the net allows it (a fully convolutional net: Crop offsets become slices of the reference
blob's size); a net that fixes them (InnerProduct, Reshape to fixed sizes) is exported at the
input shapes it was built for, and :class:`ExportReport` says which axes stayed dynamic.

What cannot export: layers whose output size depends on the data, such as Caffe-SSD's
``DetectionOutput``. Build the net up to that layer's inputs (``load_caffe(...,
outputs=["mbox_loc", "mbox_conf_flatten", "mbox_priorbox"])``), export that, and run the
decoding beside it (:class:`converters.layers.forks.ssd.DetectionOutput` in PyTorch).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
import os
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, fx, nn

from ..caffe.message import Message
from ..errors import UsageError

PathLike = str | os.PathLike[str]

__all__ = [
    "EXPORT_FORMATS",
    "NOT_EXPORTABLE",
    "ExportError",
    "ExportReport",
    "export_file",
    "export_onnx",
    "export_program",
]

#: Layer types whose output size depends on the values: no static graph can hold them.
NOT_EXPORTABLE = {
    "DetectionOutput": "its number of detections depends on the data (NMS)",
    "Proposal": "its number of regions depends on the data (NMS)",
}


class ExportError(UsageError):
    """A net that cannot be written in the asked format (names the layer and what to do instead)."""


#: What to install for ONNX export and its check: fcn-port is not on a package registry, so the
#: ``export`` extra only installs from a clone.
ONNX_INSTALL = "pip install onnx onnxscript onnxruntime (or, in a clone of fcn-port, pip install '.[export]')"


def onnxruntime_available() -> bool:
    """Whether onnxruntime imports (the ONNX check needs it; a broken install counts as missing)."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def require_onnx_exporter() -> None:
    """:class:`ExportError` saying what to install when the packages ONNX export needs are missing."""
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401  (torch.onnx's exporter needs it)
    except ImportError as exc:
        raise ExportError(f"ONNX export needs the {exc.name or 'onnx'} package: {ONNX_INSTALL}") from None


class _DropTorchvisionNotes(logging.Filter):
    """torch's ONNX exporter logs "torchvision is not installed. Skipping torchvision::nms" (and
    three more) on every export: notes about operators no Caffe net uses."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "torchvision is not installed" not in record.getMessage()


@contextlib.contextmanager
def _quiet_onnx_exporter() -> Iterator[None]:
    """Warnings and the torchvision notes of ``torch.onnx.export`` silenced for one export."""
    logger = logging.getLogger("torch.onnx._internal.exporter._registration")
    note_filter = _DropTorchvisionNotes()
    logger.addFilter(note_filter)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.removeFilter(note_filter)


@dataclasses.dataclass
class ExportReport:
    """What was written."""

    path: Path
    inputs: dict[str, tuple[int | str, ...]]
    """Input blob -> its shape in the file (a name such as ``"data_height"`` for a dynamic axis)."""
    outputs: list[str]
    max_error: float | None = None
    """Largest |onnxruntime - PyTorch| over the outputs, relative to the largest |output|, for a
    random input (ONNX with ``check=True``)."""


class _Positional(nn.Module):
    """The graph with positional inputs and a tuple of outputs, as exporters want."""

    def __init__(self, net: nn.Module, inputs: list[str], outputs: list[str]) -> None:
        super().__init__()
        self.net, self.inputs, self.outputs = net, inputs, outputs

    def forward(self, *args: Tensor) -> tuple[Tensor, ...]:
        result = self.net(**dict(zip(self.inputs, args, strict=True)))
        return tuple(result[name] for name in self.outputs)


def _live(net: fx.GraphModule) -> fx.GraphModule:
    """The graph without the layers its outputs do not need (sharing the parameters)."""
    live = fx.GraphModule(net, copy.deepcopy(net.graph), class_name=type(net).__name__)
    live.graph.eliminate_dead_code()
    live.recompile()
    live.caffe = net.caffe
    return live


def _check_exportable(net: fx.GraphModule) -> None:
    for node in net.graph.nodes:
        if node.op != "call_module":
            continue
        layer, kind = str(node.target), type(net.get_submodule(node.target)).__name__
        if kind in NOT_EXPORTABLE:
            raise ExportError(
                f"layer '{layer}' ({kind}) cannot be exported: {NOT_EXPORTABLE[kind]}; build the net up "
                "to its bottoms (load_caffe(..., outputs=[...])) and export that"
            )


def _example_inputs(net: nn.Module, input_shapes: dict[str, Sequence[int]] | None) -> dict[str, Tensor]:
    info = getattr(net, "caffe", None)
    if info is None:
        raise ExportError("export needs a graph from converters.load_caffe / build_graph (it has no .caffe)")
    shapes = {name: tuple(shape) for name, shape in info.inputs.items()}
    for name, shape in (input_shapes or {}).items():
        if name not in shapes:
            raise ExportError(f"input_shapes names '{name}', which the net does not read")
        shapes[name] = tuple(int(d) for d in shape)
    generator = torch.Generator().manual_seed(0)
    device = next((p.device for p in net.parameters()), torch.device("cpu"))
    indices = _index_inputs(info.definition)
    return {
        name: (torch.zeros(shape) if name in indices else torch.randn(shape, generator=generator)).to(device)
        for name, shape in shapes.items()
    }


#: Layer types and the bottoms they read as indices (a region's batch index, a mask position, a
#: word, a sequence flag): a random example there would be out of range; zeros are valid.
INDEX_BOTTOMS: dict[str, tuple[int, ...]] = {
    "ROIPooling": (1,), "PSROIPooling": (1,), "Upsample": (1,), "Embed": (0,), "BatchReindex": (1,),
    "Filter": (-1,), "LSTM": (1,), "RNN": (1,), "LSTMUnit": (2,), "Lstm": (1,),
}  # fmt: skip


def _index_inputs(definition: Message) -> set[str]:
    """The net's inputs some layer reads as indices (:data:`INDEX_BOTTOMS`)."""
    found: set[str] = set()
    for layer in definition.getall("layer"):
        bottoms = list(layer.getall("bottom"))
        for position in INDEX_BOTTOMS.get(str(layer.get("type")), ()):
            if -len(bottoms) <= position < len(bottoms):
                found.add(str(bottoms[position]))
    return found


def _dynamic_shapes(examples: dict[str, Tensor], dynamic: bool) -> tuple[Any, ...] | None:
    if not dynamic:
        return None
    auto = torch.export.Dim.AUTO
    return (tuple({2: auto, 3: auto} if value.dim() == 4 else {} for value in examples.values()),)


def _exported(net: nn.Module, examples: dict[str, Tensor], dynamic: bool) -> torch.export.ExportedProgram:
    from ..layers.structure import ConstantBlobs

    net = _live(net)
    _check_exportable(net)
    # DummyData's constant tops have the sizes it declares: the inputs they meet keep theirs
    dynamic = dynamic and not any(isinstance(m, ConstantBlobs) for m in net.modules())
    outputs = list(net.caffe.outputs)
    wrapper = _Positional(net, list(examples), outputs).eval()
    # fresh tensors: a failed dynamic attempt marks its examples' dims, which would make the static
    # retry dynamic too (and fail the same way)
    args = tuple(value.clone() for value in examples.values())
    try:
        return torch.export.export(
            wrapper, args, dynamic_shapes=_dynamic_shapes(examples, dynamic), strict=False
        )
    except Exception as exc:  # noqa: BLE001  (any tracing failure is this net's export error)
        if dynamic:
            return _exported(net, examples, False)
        raise ExportError(f"torch.export cannot trace this net: {str(exc).splitlines()[0]}") from None


def _input_shapes(
    program: torch.export.ExportedProgram, names: list[str]
) -> dict[str, tuple[int | str, ...]]:
    placeholders = [
        node
        for node in program.graph.nodes
        if node.op == "placeholder"
        and node.name not in program.graph_signature.inputs_to_parameters
        and node.name not in program.graph_signature.inputs_to_buffers
        and node.name not in program.graph_signature.inputs_to_lifted_tensor_constants
    ]
    shapes: dict[str, tuple[int | str, ...]] = {}
    for name, node in zip(names, placeholders, strict=False):
        value = node.meta.get("val")
        dims: list[int | str] = []
        for axis, size in enumerate(value.shape):
            if isinstance(size, int):
                dims.append(size)
            else:
                dims.append(f"{name}_{('height', 'width')[axis - 2] if axis in (2, 3) else axis}")
        shapes[name] = tuple(dims)
    return shapes


def export_program(
    net: nn.Module,
    path: PathLike,
    *,
    input_shapes: dict[str, Sequence[int]] | None = None,
    dynamic: bool = True,
) -> ExportReport:
    """Write ``net`` (from :func:`converters.load_caffe`) as a ``torch.export`` program (``.pt2``).

    The program is called differently from ``net``: its inputs are positional, in
    ``report.inputs`` order, and it returns a tuple in ``report.outputs`` order (the net itself
    takes keywords and returns a dict), as exported programs and AOTInductor's C++ runner want::

        report = export_program(net, "net.pt2")       # report.inputs: {"data": (1, 3, "data_height", ...)}
        program = torch.export.load("net.pt2").module()
        outputs = program(*(inputs[name] for name in report.inputs))       # a tuple
        by_blob = dict(zip(report.outputs, outputs))  # == net(**inputs), e.g. {"score": ...}

    Without the report, ``net.caffe.inputs`` and ``net.caffe.outputs`` give the same orders."""
    from ..atomic import atomic_path

    examples = _example_inputs(net, input_shapes)
    program = _exported(net, examples, dynamic)
    target = Path(path)
    with atomic_path(target) as tmp, open(tmp, "wb") as handle:
        torch.export.save(program, handle)  # to a file object: its folder inside is "archive"
    return ExportReport(target, _input_shapes(program, list(examples)), list(net.caffe.outputs))


def export_onnx(
    net: nn.Module,
    path: PathLike,
    *,
    input_shapes: dict[str, Sequence[int]] | None = None,
    dynamic: bool = True,
    opset: int = 18,
    check: bool = True,
    tolerance: float = 1e-4,
) -> ExportReport:
    """Write ``net`` (from :func:`converters.load_caffe`) as ONNX with the Caffe blob names.

    With ``check``, onnxruntime runs the file on a random input (of the built shapes, and of
    other heights and widths where they are dynamic) and the outputs must stay within
    ``tolerance`` x max|output| of PyTorch's; otherwise :class:`ExportError`."""
    require_onnx_exporter()
    from ..atomic import atomic_path

    examples = _example_inputs(net, input_shapes)
    program = _exported(net, examples, dynamic)
    shapes = _input_shapes(program, list(examples))
    outputs = list(net.caffe.outputs)
    target = Path(path)
    with _quiet_onnx_exporter():
        onnx_program = torch.onnx.export(
            program,
            (),
            dynamo=True,
            opset_version=opset,
            input_names=list(examples),
            output_names=outputs,
            verbose=False,
        )
    report = ExportReport(target, shapes, outputs)
    with atomic_path(target) as tmp:
        onnx_program.save(tmp)
        if check:  # a file that fails its check never replaces the target
            report.max_error = check_onnx(net, tmp, examples, shapes, tolerance)
    return report


def check_onnx(
    net: nn.Module,
    path: PathLike,
    examples: dict[str, Tensor],
    shapes: dict[str, tuple[int | str, ...]] | None = None,
    tolerance: float = 1e-4,
) -> float:
    """Run ``path`` with onnxruntime on ``examples`` (and, for dynamic axes, on inputs 8 pixels
    taller and 16 wider) and return the largest error relative to PyTorch's outputs."""
    try:
        import onnxruntime
    except ImportError:
        raise ExportError(
            f"checking ONNX needs onnxruntime: {ONNX_INSTALL}, or skip the check (check=False)"
        ) from None
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    runs = [examples]
    if shapes and any(isinstance(d, str) for s in shapes.values() for d in s):
        generator = torch.Generator().manual_seed(1)
        indices = _index_inputs(net.caffe.definition)
        grown = {
            name: [
                d + (8 if axis == 2 else 16) if isinstance(shapes[name][axis], str) else d
                for axis, d in enumerate(value.shape)
            ]
            for name, value in examples.items()
        }
        runs.append(
            {
                name: torch.zeros(size) if name in indices else torch.randn(size, generator=generator)
                for name, size in grown.items()
            }
        )
    worst = 0.0
    outputs = list(net.caffe.outputs)
    for inputs in runs:
        with torch.no_grad():
            want = net(
                **{k: v.to(next((p.device for p in net.parameters()), "cpu")) for k, v in inputs.items()}
            )
        got = session.run(outputs, {k: v.cpu().numpy() for k, v in inputs.items()})
        for name, value in zip(outputs, got, strict=True):
            expected = want[name].cpu().numpy()
            if value.shape != expected.shape:
                raise ExportError(f"ONNX output '{name}' has shape {value.shape}, PyTorch {expected.shape}")
            scale = max(float(np.abs(expected).max()), 1e-6) if expected.size else 1.0
            error = float(np.abs(value - expected).max()) / scale if expected.size else 0.0
            worst = max(worst, error)
            if error > tolerance:
                raise ExportError(f"ONNX output '{name}' differs from PyTorch by {error:.3g} x max|output|")
    return worst


def is_graph(net: Any) -> bool:
    """Whether ``net`` is a graph built by :func:`converters.load_caffe` (what the exporters take)."""
    return isinstance(net, fx.GraphModule) and hasattr(net, "caffe")


#: Deployment formats of the one format table (:data:`converters.graph.converted.FORMATS`).
EXPORT_FORMATS = frozenset({"onnx", "pt2"})


def export_file(net: nn.Module, path: PathLike, fmt: str) -> ExportReport:
    """Write ``net`` as ``fmt`` (``"onnx"``, checked with onnxruntime, or ``"pt2"``) at ``path``."""
    if fmt == "onnx":
        return export_onnx(net, path)
    if fmt == "pt2":
        return export_program(net, path)
    raise UsageError(f"unknown export format {fmt!r}: choose one of {', '.join(sorted(EXPORT_FORMATS))}")
