"""The offline tour: ``python -m reproduce.quickstart``.

On the small FCN-style model installed with the package (``reproduce/data/tiny_fcn``, written by
real Caffe, with the outputs Caffe computed), it shows the whole path without Caffe and without a network:

1. inspect the caffemodel and its HDF5 twin (layers, blob shapes, parameters);
2. round-trip the weights through our binary writer and reader, bit for bit;
3. convert the net to PyTorch (``.safetensors`` with the definition inside) and load it back;
4. run it on Caffe's recorded inputs and compare with Caffe's recorded outputs.

Exit code 0 when every step agrees with Caffe, 1 when a comparison fails, 2 on bad input.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

from converters import cli
from converters.atomic import check_writable

#: The tiny model real Caffe wrote (a copy of ``tests/fixtures/tiny_fcn``), installed with the package.
DEFAULT_MODEL = Path(__file__).resolve().parent / "data" / "tiny_fcn"
TOLERANCE = 1e-4  # of the largest expected magnitude, as for every parity claim in the project


def parser() -> argparse.ArgumentParser:
    p = cli.Parser(
        prog="python -m reproduce.quickstart",
        description="Inspect, round-trip and convert a Caffe-made model, and compare the PyTorch "
        "graph with the outputs real Caffe computed. Offline.",
    )
    p.add_argument(
        "--model-dir",
        type=Path,
        default=DEFAULT_MODEL,
        help="folder with deploy.prototxt, *.caffemodel, io.npz and case.json (default: bundled tiny_fcn)",
    )
    p.add_argument("--keep", type=Path, help="also write the converted .safetensors here")
    return p


def run(model_dir: Path, keep: Path | None = None) -> bool:
    """Run the tour, printing each step; True when everything agreed with Caffe."""
    import torch

    from converters import load_caffe, load_converted, read_weights, save_converted, write_weights
    from converters.inspect import main as inspect_main

    prototxt = model_dir / "deploy.prototxt"
    caffemodels = sorted(model_dir.glob("*.caffemodel")) + sorted(model_dir.glob("*.caffemodel.h5"))
    case_file, npz_file = model_dir / "case.json", model_dir / "io.npz"
    for needed in (prototxt, case_file, npz_file):
        if not needed.is_file():
            raise FileNotFoundError(
                f"{needed} is missing (expected a model folder like {DEFAULT_MODEL})"
            )
    if not caffemodels:
        raise FileNotFoundError(f"no .caffemodel or .caffemodel.h5 in {model_dir}")
    case = json.loads(case_file.read_text())
    recorded = np.load(npz_file)
    ok = True

    print(f"== 1. inspect {caffemodels[0].name}")
    inspect_main([str(caffemodels[0])])

    print("\n== 2. round trip through our writer and reader")
    for path in caffemodels:
        weights = read_weights(path)
        with tempfile.TemporaryDirectory() as tmp:
            again = read_weights(write_and_return(write_weights, weights, Path(tmp) / "copy.caffemodel"))
        same = weights.keys() == again.keys() and all(
            len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
            for a, b in zip(weights.values(), again.values(), strict=True)
        )
        count = sum(blob.size for blobs in weights.values() for blob in blobs)
        print(f"{path.name}: {len(weights)} layers, {count:,} values, identical after the round trip: {same}")
        ok &= same

    print("\n== 3. convert to PyTorch and load the converted file")
    with tempfile.TemporaryDirectory() as tmp:
        target = keep or Path(tmp) / "converted.safetensors"
        net = load_caffe(prototxt, caffemodels[0])
        save_converted(net, target)
        converted = load_converted(target)
        size = f"{target.stat().st_size / 1024:.0f} KiB"
        wrote = f"wrote {target} ({size})" if keep else f"converted ({size}; --keep FILE keeps the file)"
        print(f"{wrote}; the generated forward:")
        print("\n".join("    " + line for line in converted.code.strip().splitlines()))

        print("\n== 4. compare with the outputs real Caffe computed")
        for path in caffemodels:
            graph = converted if path == caffemodels[0] else load_caffe(prototxt, path)
            for run_spec in case["runs"]:
                prefix = run_spec["prefix"]
                inputs = {b: torch.from_numpy(recorded[f"{prefix}input:{b}"]) for b in run_spec["inputs"]}
                with torch.no_grad():
                    outputs = graph(**inputs)
                for blob, value in outputs.items():
                    key = f"{prefix}output:{blob}"
                    if key not in recorded:
                        continue
                    want = recorded[key]
                    error = float(np.abs(value.numpy() - want).max())
                    scale = float(np.abs(want).max())
                    agree = error <= TOLERANCE * max(scale, 1e-6)
                    ok &= agree
                    shape = "x".join(map(str, next(iter(inputs.values())).shape))
                    source = "converted file" if graph is converted else path.name
                    print(
                        f"{source:>24}  input {shape:<12} {blob}: max |ours - Caffe| = {error:.2e} "
                        f"(largest |value| {scale:.3g}) {'OK' if agree else 'DIFFERS'}"
                    )
    print("\nall steps agree with Caffe" if ok else "\nsome steps disagree with Caffe")
    return ok


def write_and_return(writer, weights, path: Path) -> Path:  # noqa: ANN001
    writer(weights, path)
    return path


def main(argv: list[str] | None = None) -> int:
    """Run the tour: 0 when every step agrees with Caffe, 1 when one does not, 2 on bad input."""

    def body() -> int:
        args = parser().parse_args(argv)
        if args.keep is not None:
            from converters.graph.converted import format_for

            format_for(args.keep)  # the suffix names a converted-file format
            check_writable(args.keep, "--keep")
        return 0 if run(args.model_dir, args.keep) else 1

    return cli.run(body)


if __name__ == "__main__":
    sys.exit(main())
