"""Evaluation throughput: decode only, inference only, and end to end, in images/s.

Generates (in a temporary folder) a VOC-layout dataset of VOC-sized images (500x375 JPEGs with palette
labels, ``tests/vocgen.py``) and measures, on ``--device``:

- decode only: the evaluation DataLoader (``--workers`` processes, pinned memory on CUDA) reading and
  preprocessing every image and label, no model;
- inference only: the net's forward pass, argmax and the on-device confusion update on one image held
  on the device, repeated (so no decoding or copying);
- end to end: ``eval.runner.evaluate_model`` over the dataset (decoding overlapped with inference).

The net is an official FCN definition (``converters.fcn.nets``, ``--model``, optionally narrowed by
``--width`` for CPU runs) with random weights, or ``--weights NAME`` for cached registry weights. End to
end should be close to inference only (the GPU bound) when decoding keeps up.

    python benchmarks/eval_throughput.py --device cuda --count 200
    python benchmarks/eval_throughput.py --device cpu --count 8 --width 0.125   # the CPU smoke run

Measured on the project's 2-core CPU machine (shared with other jobs, load average 4-6, so the
model figures swing 4x between runs; 2026-11-25), voc-fcn8s at width 0.125 with random weights,
500x375 images: decode only 54-68 images/s (0-2 workers; 21 before the dataset's one-pass
preprocessing replaced ``caffe_preprocess``, which takes ~15 ms per VOC image); inference only 0.9-3.9;
end to end 0.95-2.0. On two cores the workers and the net share the CPUs, so these say nothing about
the GPU bound. No GPU was available to this job: run it on one at full width to check it.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from eval.datasets import VOCSegmentation  # noqa: E402
from eval.metrics import ConfusionMatrix  # noqa: E402
from eval.runner import evaluate_model, make_loader  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build_net(model: str, width: float, weights_name: str | None, device: torch.device) -> torch.nn.Module:
    """The net to time: cached registry weights, or the official definition with random weights."""
    if weights_name:
        import weights

        return weights.load(weights_name, device=device)
    from converters import load_caffe
    from converters.fcn.nets import net_definition

    return load_caffe(net_definition(model, "deploy", width=width), None, device=device, strict=False).eval()


def decode_only(dataset: VOCSegmentation, workers: int, device: torch.device) -> float:
    loader = make_loader(dataset, batch_size=1, workers=workers, pin_memory=device.type == "cuda")
    start = time.perf_counter()
    count = 0
    for batch in loader:
        count += len(batch["id"])
    return count / (time.perf_counter() - start)


def inference_only(net, dataset: VOCSegmentation, device: torch.device, repeats: int) -> float:
    sample = dataset[0]
    data = sample["inputs"]["color"].unsqueeze(0).to(device)
    label = sample["labels"]["semantic"].unsqueeze(0).to(device)
    matrix = ConfusionMatrix(21, device)
    with torch.inference_mode():
        for _ in range(2):  # warm-up (cuDNN algorithm choice, allocator)
            net(data=data)
        _sync(device)
        start = time.perf_counter()
        for _ in range(repeats):
            matrix.update(label, net(data=data)["score"].argmax(dim=1))
        _sync(device)
    return repeats / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--count", type=int, default=50, help="images in the generated dataset")
    parser.add_argument("--size", default="500x375", help="WIDTHxHEIGHT of the images")
    parser.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1))
    parser.add_argument("--model", default="voc-fcn8s", help="official FCN definition to time")
    parser.add_argument("--width", type=float, default=1.0, help="scale the feature layers (CPU runs)")
    parser.add_argument("--weights", help="registry name: time the cached real weights instead")
    parser.add_argument("--repeats", type=int, default=None, help="forward passes for inference only")
    args = parser.parse_args()

    from vocgen import write_voc

    device = torch.device(args.device)
    width, height = (int(v) for v in args.size.lower().split("x"))
    with tempfile.TemporaryDirectory() as folder:
        ids = [f"2000_{i:06d}" for i in range(args.count)]
        write_voc(folder, ids, size=(width, height), seed=0)
        dataset = VOCSegmentation(folder, "val2011")
        net = build_net(args.model, args.width, args.weights, device)
        rows = [
            ("decode only", decode_only(dataset, args.workers, device)),
            ("inference only", inference_only(net, dataset, device, args.repeats or args.count)),
        ]
        _sync(device)
        result = evaluate_model(net, dataset, device=device, workers=args.workers)
        rows.append(("end to end", result.images_per_second))
    name = args.weights or (f"{args.model} (random weights, width {args.width})")
    print(f"{name}, {args.count} images of {width}x{height}, {args.workers} workers, device {device}")
    if device.type == "cuda":
        print(f"GPU: {torch.cuda.get_device_name(device)}")
    print("| stage | images/s |")
    print("|---|---|")
    for stage, rate in rows:
        print(f"| {stage} | {rate:.2f} |")


if __name__ == "__main__":
    main()
