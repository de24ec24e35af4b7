"""Convert a Caffe net to PyTorch weights: ``python -m converters.caffe2torch``.

    python -m converters.caffe2torch deploy.prototxt weights.caffemodel -o net.safetensors
    python -m converters.caffe2torch voc-fcn8s --download # a registry model, fetched if needed

Writes the graph's state dict with the net definition inside (the ``-o`` suffix decides the
format: ``.safetensors``, or ``.pt`` for a plain state dict), or exports it (``.onnx``, ``.pt2``),
prints a report (layers, parameters, inputs and their preprocessing) and a self-check: the written
file is loaded back and must give the same outputs as the converted graph on a random input (an
ONNX file is run by onnxruntime; without onnxruntime the line says the check was skipped and what
to install). The file is checked before it is kept: on any failure nothing is left at the output
path (a file already there stays as it was). Paths of the wrong kind (a folder for a file, a file
for a folder) are refused in one line before anything loads.

The self-check runs at batch 1 with the declared channels, at a size the net accepts: height and
width shrink to at most 128 px only where the weights still fit (fully convolutional nets); a
fixed-size classifier runs at its declared size (VGG16 224 px, CaffeNet 227 px). A check that
would need more than 2 GiB for its blobs is refused before anything is written.
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import sys
import time
import warnings
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import cli
from .errors import UsageError

if TYPE_CHECKING:  # torch is imported after the arguments are parsed: --help stays fast
    import torch

SELF_CHECK_MAX_SIDE = 32  # small: the check proves the file, not the net; FCNs pad by 100 anyway
SELF_CHECK_MAX_BYTES = 2 * 2**30
SHAPE_USAGE = "use NAME=N,C,H,W, NAME=NxCxHxW, or NAME=HxW (keeping the net's N and C)"

Shape = tuple[int, ...]


class SelfCheckFailed(Exception):
    """The written file does not reproduce the converted graph (the file is not kept)."""


def parse_input_shape(text: str) -> tuple[str, Shape, bool]:
    """``--input-shape`` as ``(blob, shape, spatial_only)``: ``data=1,3,224,224`` and
    ``data=1x3x224x224`` give the whole shape, ``data=224x224`` only height and width."""
    name, sep, dims = text.partition("=")
    name, dims = name.strip(), dims.strip().lower().replace("×", "x")
    if not sep or not name or not dims or ("," in dims and "x" in dims):
        raise argparse.ArgumentTypeError(f"bad input shape {text!r}: {SHAPE_USAGE}")
    parts = dims.split("," if "," in dims else "x")
    try:
        shape = tuple(int(d) for d in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad input shape {text!r}: {SHAPE_USAGE}") from None
    if min(shape) < 1:
        raise argparse.ArgumentTypeError(f"bad input shape {text!r}: every dimension must be at least 1")
    if "," in dims or len(shape) == 4:
        return name, shape, False
    if len(shape) == 2:
        return name, shape, True
    raise argparse.ArgumentTypeError(f"bad input shape {text!r}: {SHAPE_USAGE}")


PROG = "python -m converters.caffe2torch"


def parser(prog: str = PROG) -> argparse.ArgumentParser:
    """The ``python -m converters.caffe2torch`` argument parser (no torch needed); ``prog``: the
    command as the user typed it (``fcn-port convert`` passes its own)."""
    p = cli.Parser(
        prog=prog,
        description="Convert a Caffe net (prototxt + caffemodel, or a registry model name) to PyTorch "
        "weights with the net definition inside, and check the result before keeping it.",
    )
    p.add_argument("source", help="a .prototxt (then CAFFEMODEL is required) or a registry model name")
    p.add_argument("caffemodel", nargs="?", help=".caffemodel or .caffemodel.h5 weights")
    p.add_argument(
        "-o",
        "--output",
        help="output file; its suffix decides the format: .safetensors, or .pt/.pth for a plain "
        "state dict, .onnx (checked with onnxruntime when it is installed) or .pt2 (torch.export, "
        "checked by reloading) for deployment (default: <name>.safetensors in the current folder)",
    )
    p.add_argument(
        "--format",
        metavar="FORMAT",
        help="safetensors, pt, onnx or pt2: the default output name's format, else only checked "
        "against the -o suffix",
    )
    p.add_argument(
        "--input-shape",
        action="append",
        type=parse_input_shape,
        default=[],
        metavar="NAME=SHAPE",
        help="shape of an input blob: N,C,H,W or NxCxHxW, or HxW to keep the net's N and C (repeatable)",
    )
    p.add_argument(
        "--plugin",
        action="append",
        default=[],
        metavar="FILE.py",
        help="a Python file whose @converters.register_layer converters run first (repeatable)",
    )
    p.add_argument(
        "--variant",
        action="append",
        type=parse_variant,
        default=[],
        metavar="TYPE=NAME",
        help="a fork's semantics for a layer type that forks compute differently, e.g. "
        "Proposal=brocolli-caffe (default: Proposal=py-faster-rcnn) (repeatable)",
    )
    p.add_argument("--no-check", action="store_true", help="skip the self-check forward pass")
    p.add_argument("--cache-dir", help="weights cache for registry models")
    from weights.api import add_download_option  # torch-free: --help stays fast

    add_download_option(p)
    p.add_argument("--device", default="cpu", help="device for the self-check (default cpu)")
    return p


def parse_variant(text: str) -> tuple[str, str]:
    """``TYPE=NAME`` of ``--variant``."""
    kind, sep, name = text.partition("=")
    if not sep or not kind or not name:
        raise argparse.ArgumentTypeError(f"{text!r}: give TYPE=NAME, e.g. Proposal=brocolli-caffe")
    return kind, name


# --- input shapes --------------------------------------------------------------------------------


def complete_input_shapes(spec: Sequence[str], given: Sequence[tuple[str, Shape, bool]]) -> dict[str, Shape]:
    """``--input-shape`` values as whole shapes: a ``HxW`` one takes N and C from the net's
    declared (or guessed) shape of that input. ``UsageError`` for an input the net does not read
    or one without height and width."""
    full = {name: shape for name, shape, spatial in given if not spatial}
    spatial = {name: shape for name, shape, is_spatial in given if is_spatial}
    if not spatial:
        return full
    from converters import read_prototxt, read_weights

    from .graph.builder import select_layers
    from .graph.inputs import input_shapes, is_source

    if len(spec) == 2:
        net, weights = read_prototxt(spec[0]), read_weights(spec[1])
    else:
        from weights.registry import UnknownWeightsError, get

        try:
            net, weights = get(spec[0]).net_definition("deploy"), None
        except UnknownWeightsError:
            return full  # the model builder names the problem
    layers = select_layers(net)
    consumed = {b for layer in layers if not is_source(layer) for b in layer.getall("bottom")}
    known, _, _ = input_shapes(layers, consumed, full, weights)
    for name, (height, width) in spatial.items():
        if name not in known:
            reads = ", ".join(known) or "nothing"
            raise UsageError(f"--input-shape {name}=...: the net has no input {name!r} (it reads {reads})")
        shape = known[name]
        if len(shape) < 3:
            raise UsageError(
                f"--input-shape {name}={height}x{width}: input {name!r} has shape "
                f"{'x'.join(map(str, shape))}, no height and width; give its whole shape"
            )
        full[name] = (*shape[:-2], height, width)
    return full


# --- self-check ----------------------------------------------------------------------------------


def probe_input_shapes(module: Any, shapes: Mapping[str, Shape]) -> Any:
    """The net built on the meta device at ``shapes`` if it runs there with the same parameter
    shapes as ``module`` and no empty blob appears; else ``None``."""
    from .graph.builder import build_graph

    try:
        meta = build_graph(
            module.caffe.definition, None, input_shapes=dict(shapes), device="meta", initialise=False
        )
    except Exception:  # any refusal means only: not at this size  # noqa: BLE001
        return None
    if meta.caffe.parameter_shapes != module.caffe.parameter_shapes:
        return None  # the weights fix the size (InnerProduct): not fully convolutional
    empty_before = any(0 in s for s in module.caffe.blob_shapes.values())
    if not empty_before and any(0 in s for s in meta.caffe.blob_shapes.values()):
        return None
    return meta


def blob_bytes(module: Any) -> int:
    """Bytes of float32 blobs a forward pass of a (meta) graph holds at most."""
    return 4 * sum(math.prod(s) for s in module.caffe.blob_shapes.values())


def self_check_shapes(module: Any, max_side: int = SELF_CHECK_MAX_SIDE) -> dict[str, Shape]:
    """The input shapes of the self-check: batch 1 and the declared channels, height and width
    shrunk to ``max_side`` where the net still takes them with the same weights, else the declared
    size. ``UsageError`` when even that needs more than ``SELF_CHECK_MAX_BYTES``."""
    declared = {name: tuple(shape) for name, shape in module.caffe.inputs.items()}
    one = {name: (1, *shape[1:]) if shape else shape for name, shape in declared.items()}
    small = {
        name: (*shape[:-2], min(shape[-2], max_side), min(shape[-1], max_side)) if len(shape) == 4 else shape
        for name, shape in one.items()
    }
    candidates: list[dict[str, Shape]] = []
    for shapes in (small, one, declared):
        if shapes not in candidates:
            candidates.append(shapes)
    for shapes in candidates:
        meta = probe_input_shapes(module, shapes) if shapes != declared else module
        if meta is None:
            continue
        need = blob_bytes(meta)
        if need > SELF_CHECK_MAX_BYTES:
            sizes = ", ".join(f"{k} {'x'.join(map(str, v))}" for k, v in shapes.items())
            raise UsageError(
                f"self-check at {sizes} would need about {need / 2**30:.1f} GiB of blobs "
                f"(limit {SELF_CHECK_MAX_BYTES / 2**30:.0f} GiB): give a smaller --input-shape, "
                "or --no-check"
            )
        return shapes
    return declared  # not reached: the declared shapes always build


def self_check_inputs(shapes: Mapping[str, Shape], device: Any) -> dict[str, Any]:
    """The seeded random inputs of the self-check."""
    import torch

    generator = torch.Generator().manual_seed(0)
    return {name: (torch.randn(s, generator=generator) * 50).to(device) for name, s in shapes.items()}


def run_outputs(module: Any, inputs: Mapping[str, Any]) -> dict[str, Any]:
    """``module``'s outputs on ``inputs``, without gradients and without oneDNN, whose convolutions
    keep a reordered copy of each kernel (fc6's is 411 MB): the self-check stays near the file's size."""
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch's note on TF32 for Intel GPUs
        with torch.no_grad(), torch.backends.mkldnn.flags(enabled=False):
            return dict(module(**inputs))


def self_check(
    path: str | os.PathLike[str], device: Any, inputs: Mapping[str, Any], expected: Mapping[str, Any]
) -> str:
    """Load the converted file at ``path`` and compare its outputs on ``inputs`` with ``expected``
    (the converted graph's, computed before it was released so that the file's parameters can take
    its memory); the verdict as a line starting with ``passed`` or ``FAILED``."""
    import torch

    from .graph.converted import load_converted

    got = run_outputs(load_converted(path, device=device, optimize=False), inputs)
    worst = 0.0
    for blob, value in expected.items():
        if not torch.isfinite(value).all():
            return f"FAILED: output '{blob}' has non-finite values"
        worst = max(worst, float((got[blob] - value).abs().max()) if value.numel() else 0.0)
    if worst != 0.0:
        return f"FAILED: the written file gives outputs differing by up to {worst:g}"
    out = ", ".join(f"{k} {list(v.shape)}" for k, v in expected.items())
    sizes = ", ".join(f"{k} {list(v.shape)}" for k, v in inputs.items())
    return f"passed: reloaded file gives identical outputs ({sizes} -> {out})"


# --- report --------------------------------------------------------------------------------------


def report(module: torch.nn.Module, record: Any = None) -> list[str]:
    """Human-readable lines describing a converted graph."""
    info = module.caffe
    params = sum(p.numel() for p in module.parameters())
    kinds = Counter(kind for _, kind in info.layers)
    lines = [
        f"net: {info.name or '(unnamed)'}",
        f"layers: {len(info.layers)} ({', '.join(f'{n} {k}' for k, n in kinds.most_common())})",
        f"parameters: {params:,}",
        "inputs:",
    ]
    for name, shape in info.inputs.items():
        declared = "" if name in info.declared_inputs else " (not declared; nominal shape)"
        lines.append(f"  {name}: {'x'.join(map(str, shape))}{declared}")
        transform = info.transform_params.get(name)
        if transform is not None and len(dict(transform.fields())):
            fields = ", ".join(f"{k}={v if len(v) > 1 else v[0]}" for k, v in transform.fields())
            lines.append(f"    preprocessing (transform_param): {fields}")
    if record is not None:
        lines.append(f"preprocessing ({record.name}):")
        for spec in record.inputs:
            mean = f", mean {spec.channel_order} {spec.mean}" if spec.mean else ""
            lines.append(f"  {spec.blob}: {spec.modality}{mean}; {spec.preprocessing}")
    lines.append(f"outputs: {', '.join(f'{b} {list(info.blob_shapes[b])}' for b in info.outputs)}")
    if info.unused_weights:
        lines.append(f"weights not used (not in the net): {', '.join(info.unused_weights)}")
    return lines


# --- command -------------------------------------------------------------------------------------


def load_plugin(path: str) -> None:
    """Run the Python file ``path`` (its ``register_layer`` calls add layer types); one-line
    ``UsageError`` when it is missing or fails."""
    import importlib.util

    if not os.path.isfile(path):
        raise UsageError(f"--plugin {path}: no such file")
    name = "fcn_port_plugin_" + Path(path).stem.replace("-", "_")
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise UsageError(f"--plugin {path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # noqa: BLE001  (the user's code: report it in one line)
        message = str(exc).splitlines()[0] if str(exc) else ""
        raise UsageError(f"--plugin {path}: {type(exc).__name__}: {message}") from None
    sys.modules[name] = module


def check_paths(args: argparse.Namespace, stem: str, output: str) -> None:
    """Paths of the wrong kind, named as what they are, before anything is loaded: a folder given
    for the prototxt or the caffemodel, a file for the cache folder, an output that is a folder or
    lies under a file."""
    if args.caffemodel is None:
        if os.path.isdir(args.source):
            raise UsageError(
                f"{args.source} is a folder: give PROTOTXT CAFFEMODEL (two files) or a registry model name"
            )
        if os.path.exists(args.source):
            raise UsageError(f"{args.source} needs its CAFFEMODEL (or give a registry model name)")
    else:
        if os.path.isdir(args.source):
            raise UsageError(f"{args.source} is a folder, not a net definition: give the .prototxt file")
        if cli.looks_like_path(args.source):  # else a registry name: NAME CAFFEMODEL
            cli.input_file(args.source, args.source, "give the net's .prototxt file")
        cli.input_file(args.caffemodel, args.caffemodel, "give the .caffemodel or .caffemodel.h5 file")
    for plugin in args.plugin:
        cli.input_file(plugin, f"--plugin {plugin}", "give a Python file")
    if args.cache_dir is not None:
        cli.output_folder(args.cache_dir, "--cache-dir")
    suffix = FORMATS_SUFFIX.get(args.format or "", "")
    cli.output_file(output, "-o", f"{stem}{suffix or '.safetensors'}")


def _convert(argv: Sequence[str] | None, prog: str) -> int:
    args = parser(prog).parse_args(argv)
    from .graph.converted import FORMATS

    if args.format is not None and args.format not in FORMATS:
        raise UsageError(f"--format {args.format}: choose one of {', '.join(FORMATS)}")
    if args.caffemodel is None:
        stem = Path(args.source).name
    else:
        stem = Path(args.caffemodel).name.removesuffix(".h5").removesuffix(".caffemodel")
    output = args.output or f"{stem}{FORMATS[args.format or 'safetensors'][0]}"
    check_paths(args, stem, output)
    fmt = output_format(output, args.format)
    if fmt == "onnx":  # before the (long) conversion
        from .graph.export import require_onnx_exporter

        require_onnx_exporter()
    from weights.models import load_model  # the one model builder (registry names included)

    from .atomic import atomic_path
    from .graph.converted import save_converted

    device = cli.device(args.device, default="cpu")

    for plugin in args.plugin:
        load_plugin(plugin)
    started = time.perf_counter()
    spec = [args.source] if args.caffemodel is None else [args.source, args.caffemodel]
    shapes = complete_input_shapes(spec, args.input_shape)
    # Built on the self-check's device, as the reloaded file will be: both graphs are made alike.
    # The plain graph: the file holds parameters only, and the check needs no fast path (whose
    # FFT convolutions transform fc6's 411 MB kernel on every call).
    variants = dict(args.variant)
    loaded = load_model(  # registry weights by the one download rule: --download, else ask or refuse
        spec,
        device,
        input_shapes=shapes,
        cache_dir=args.cache_dir,
        optimize=False,
        variants=variants,
        download=args.download,
    )
    module, record = loaded.net, loaded.record
    check_shapes = None if args.no_check or fmt == "onnx" else self_check_shapes(module)
    for line in report(module, record):
        print(line)
    with atomic_path(output) as written:
        if fmt == "onnx":
            print(f"self-check: {export_onnx_checked(module, written, check=not args.no_check)}")
        elif fmt == "pt2":
            from .graph.export import export_program

            exported = export_program(module, written)
            if check_shapes is not None:  # the program's fixed axes (the batch) as built, the rest small
                shapes = {
                    name: tuple(
                        d if isinstance(d, int) else check_shapes[name][i] for i, d in enumerate(dims)
                    )
                    for name, dims in exported.inputs.items()
                }
                result = self_check_program(module, written, self_check_inputs(shapes, device))
                print(f"self-check: {result}")
                if result.startswith("FAILED"):
                    raise SelfCheckFailed(result)
        else:
            save_converted(module, written, fmt)
        size = os.path.getsize(written)
        if check_shapes is not None and fmt not in ("onnx", "pt2"):
            inputs = self_check_inputs(check_shapes, device)
            expected = run_outputs(module, inputs)
            del module, loaded  # the reloaded file's parameters take the converted graph's memory
            gc.collect()
            result = self_check(written, device, inputs, expected)
            print(f"self-check: {result}")
            if result.startswith("FAILED"):
                raise SelfCheckFailed(result)
    elapsed = time.perf_counter() - started
    amount = f"{size / 2**20:.1f} MiB" if size >= 2**20 else f"{size / 1024:.0f} KiB"
    print(f"wrote {output} ({fmt}, {amount}) in {elapsed:.1f} s")
    return cli.EXIT_OK


#: ``--format`` name -> the suffix of a default output name.
FORMATS_SUFFIX = {"safetensors": ".safetensors", "pt": ".pt", "onnx": ".onnx", "pt2": ".pt2"}
_FORMAT_ARTICLES = {"safetensors": "a safetensors", "pt": "a .pt", "onnx": "an ONNX", "pt2": "a .pt2"}


def output_format(output: str, fmt: str | None) -> str:
    """The format ``-o OUTPUT`` names (its suffix decides), refused in one line when ``--format``
    names another."""
    from .graph.converted import FORMATS, format_for

    named = format_for(output)
    if fmt is not None and fmt != named:
        raise UsageError(
            f"{output} names {_FORMAT_ARTICLES.get(named, named)} file but --format is {fmt}: "
            f"use the suffix {FORMATS[fmt][0]} (the suffix decides the format)"
        )
    return named


def export_onnx_checked(module: Any, path: str, *, check: bool) -> str:
    """Write ``module`` as ONNX at ``path``, checked with onnxruntime where it is installed; the
    check's verdict (or why there was none) as one line."""
    from .graph.export import ONNX_INSTALL, export_onnx, onnxruntime_available

    if not check:
        export_onnx(module, path, check=False)
        return "skipped (--no-check): the ONNX file was not run"
    if not onnxruntime_available():
        export_onnx(module, path, check=False)
        return (
            "skipped: onnxruntime is not installed, so the ONNX file was not run "
            f"(to check it: {ONNX_INSTALL.replace('pip install onnx onnxscript ', 'pip install ')})"
        )
    written = export_onnx(module, path, check=True)
    built = {name: tuple(shape) for name, shape in module.caffe.inputs.items()}
    sizes = ", ".join(f"{k} {'x'.join(map(str, v))}" for k, v in built.items())
    if any(isinstance(d, str) for v in written.inputs.values() for d in v):
        grown = {
            k: [
                d + (8 if i == 2 else 16) if isinstance(written.inputs[k][i], str) else d
                for i, d in enumerate(v)
            ]
            for k, v in built.items()
        }
        sizes += ", and " + ", ".join(f"{k} {'x'.join(map(str, v))}" for k, v in grown.items())
        sizes += ": height and width are dynamic"
    error = written.max_error or 0.0
    return f"passed: onnxruntime gives PyTorch's outputs within {error:.2g} x max|output| ({sizes})"


def self_check_program(module: Any, path: str, inputs: Mapping[str, Any]) -> str:
    """Reload the ``.pt2`` program at ``path`` and run it on ``inputs`` beside ``module``; the
    verdict as a line starting with ``passed`` or ``FAILED``."""
    import torch

    expected = run_outputs(module, inputs)
    program = torch.export.load(path).module()
    with torch.no_grad():
        got = dict(
            zip(module.caffe.outputs, program(*(inputs[name] for name in module.caffe.inputs)), strict=True)
        )
    worst = 0.0
    for blob, value in expected.items():
        if not torch.isfinite(value).all():
            return f"FAILED: output '{blob}' has non-finite values"
        if got[blob].shape != value.shape:
            return f"FAILED: output '{blob}' has shape {list(got[blob].shape)}, PyTorch {list(value.shape)}"
        scale = max(float(value.abs().max()), 1e-6) if value.numel() else 1.0
        worst = max(worst, float((got[blob] - value).abs().max()) / scale if value.numel() else 0.0)
    if worst > 1e-5:
        return f"FAILED: the reloaded program's outputs differ by up to {worst:.3g} x max|output|"
    sizes = ", ".join(f"{k} {list(v.shape)}" for k, v in inputs.items())
    return f"passed: the reloaded program gives the net's outputs within {worst:.2g} x max|output| ({sizes})"


def main(argv: Sequence[str] | None = None, prog: str = PROG) -> int:
    """Run the command; 0 on success, 1 when the self-check fails (nothing written), 2 on bad input.
    ``prog``: the command as typed, for ``--help`` and usage lines (``fcn-port convert``)."""

    def body() -> int:
        try:
            return _convert(argv, prog)
        except SelfCheckFailed:
            print("nothing written: the converted file failed its self-check", file=sys.stderr)
            return cli.EXIT_FAILED

    return cli.run(body)


if __name__ == "__main__":
    sys.exit(main())
