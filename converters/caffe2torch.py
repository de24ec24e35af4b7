"""Convert a Caffe net to PyTorch weights: ``python -m converters.caffe2torch``.

    python -m converters.caffe2torch deploy.prototxt weights.caffemodel -o net.safetensors
    python -m converters.caffe2torch voc-fcn8s            # a registry model, fetched if needed

Writes the graph's state dict with the net definition inside (``.safetensors`` by default, a
``.pt`` state dict on request), prints a report (layers, parameters, inputs and their
preprocessing) and a self-check: the written file is loaded back and must give the same outputs
as the converted graph on a random input.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import torch

from .errors import CaffeFormatError
from .graph.converted import FORMATS, load_converted, save_converted

SELF_CHECK_MAX_SIDE = 128


def _parse_shape(text: str) -> tuple[str, tuple[int, ...]]:
    name, _, dims = text.partition("=")
    try:
        shape = tuple(int(d) for d in dims.replace("x", ",").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad input shape {text!r}: use NAME=N,C,H,W") from None
    if not name or not shape or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"bad input shape {text!r}: use NAME=N,C,H,W")
    return name, shape


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m converters.caffe2torch",
        description="Convert a Caffe net (prototxt + caffemodel, or a registry model name) to PyTorch "
        "weights with the net definition inside, and check the result.",
    )
    p.add_argument("source", help="a .prototxt (then CAFFEMODEL is required) or a registry model name")
    p.add_argument("caffemodel", nargs="?", help=".caffemodel or .caffemodel.h5 weights")
    p.add_argument("-o", "--output", help="output file (default: <name>.safetensors in the current folder)")
    p.add_argument("--format", choices=FORMATS, help="output format (default: from the suffix; safetensors)")
    p.add_argument(
        "--input-shape",
        action="append",
        type=_parse_shape,
        default=[],
        metavar="NAME=N,C,H,W",
        help="shape of an input blob the prototxt does not declare (repeatable)",
    )
    p.add_argument("--no-check", action="store_true", help="skip the self-check forward pass")
    p.add_argument("--cache-dir", help="weights cache for registry models")
    p.add_argument("--device", default="cpu", help="device for the self-check (default cpu)")
    return p


def _self_check(module: torch.nn.Module, output: str, device: str) -> str:
    info = module.caffe
    inputs = {}
    generator = torch.Generator().manual_seed(0)
    for name, shape in info.inputs.items():
        shape = tuple(shape[:2]) + tuple(min(s, SELF_CHECK_MAX_SIDE) for s in shape[2:])
        inputs[name] = (torch.randn(shape, generator=generator) * 50).to(device)
    module = module.to(device)
    reloaded = load_converted(output, device=device)
    with torch.no_grad():
        expected = module(**inputs)
        got = reloaded(**inputs)
    worst = 0.0
    for blob, value in expected.items():
        if not torch.isfinite(value).all():
            return f"FAILED: output '{blob}' has non-finite values"
        worst = max(worst, float((got[blob] - value).abs().max()) if value.numel() else 0.0)
    if worst != 0.0:
        return f"FAILED: the written file gives outputs differing by up to {worst:g}"
    shapes = ", ".join(f"{k} {list(v.shape)}" for k, v in expected.items())
    sizes = ", ".join(f"{k} {list(v.shape)}" for k, v in inputs.items())
    return f"passed: reloaded file gives identical outputs ({sizes} -> {shapes})"


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


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        from weights.models import load_model  # the one model builder (registry names included)

        started = time.perf_counter()
        if args.caffemodel is None and os.path.exists(args.source):
            raise ValueError("a prototxt needs its CAFFEMODEL (or give a registry model name)")
        spec = [args.source] if args.caffemodel is None else [args.source, args.caffemodel]
        loaded = load_model(spec, "cpu", input_shapes=dict(args.input_shape), cache_dir=args.cache_dir)
        module, record = loaded.net, loaded.record
        if args.caffemodel is None:
            stem = args.source
        else:
            stem = Path(args.caffemodel).name.removesuffix(".h5").removesuffix(".caffemodel")
        output = args.output or f"{stem}.{args.format or 'safetensors'}"
        fmt = save_converted(module, output, args.format)
        elapsed = time.perf_counter() - started
        for line in report(module, record):
            print(line)
        size = os.path.getsize(output)
        amount = f"{size / 2**20:.1f} MiB" if size >= 2**20 else f"{size / 1024:.0f} KiB"
        print(f"wrote {output} ({fmt}, {amount}) in {elapsed:.1f} s")
        if not args.no_check:
            result = _self_check(module, output, args.device)
            print(f"self-check: {result}")
            if result.startswith("FAILED"):
                return 1
        return 0
    except (CaffeFormatError, ValueError, OSError, KeyError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
