"""Evaluation throughput: decode only, inference only, and end to end at batch 1 and batched, in images/s.

Generates (in a temporary folder) a VOC-layout dataset of images of mixed sizes (JPEGs with palette
labels, ``tests/vocgen.py``; by default VOC's common sizes 500x375, 375x500, 500x333 and 500x500 in
turn) and measures, on ``--device``:

- decode only: the evaluation DataLoader (``--workers`` processes, pinned memory on CUDA) reading and
  preprocessing every image and label, no model;
- inference only: the net's forward pass, argmax and the on-device confusion update on the first
  image held on the device, repeated (so no decoding or copying), alone and as a batch of copies;
- end to end: ``eval.runner.evaluate_model`` over the dataset (decoding overlapped with inference),
  at batch 1 and at ``--batch-size`` (images grouped by size, ``SizeGroupedBatchSampler``), each after
  an untimed pass over one batch of every size (per-shape set-up not counted); the two
  confusion matrices are checked to be equal. When the first batch's predictions differ from one at
  a time ones (float rounding flipping near-tied argmaxes, common with random weights), the runner
  falls back to one at a time and the batched row then shows no gain: the note says so.

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

Mixed sizes (2026-12-02, same machine, load average 2-3.5; ``--count 32 --width 0.125 --workers 1``,
the four default sizes in turn, batch 1 vs 4): decode only 136 images/s; inference only 3.4 (batch 1)
vs 8.8 (batch 4); end to end 9.4 (batch 1) vs 7.6 (batch 4). The end-to-end batched row ran one image
at a time: with these random weights, the first batch's predictions differed from one-at-a-time ones
(argmax near-ties flipped by the batched convolutions' rounding), so the runner fell back (its note is
printed) and the row measures that fallback, not batching; the confusion matrices were equal. The
inference rows swing several-fold between runs here (a 16-image run: 11.3 vs 9.8). On the CPU batching
is not expected to gain much (each convolution already uses every core); the gain it is for is on a
GPU, not measured: no GPU was available to this job.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
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


def inference_only(
    net, dataset: VOCSegmentation, device: torch.device, repeats: int, batch: int = 1
) -> float:
    """Images/s of forward + argmax + confusion update on ``batch`` copies of the first image."""
    sample = dataset[0]
    data = sample["inputs"]["color"].unsqueeze(0).expand(batch, -1, -1, -1).contiguous().to(device)
    label = sample["labels"]["semantic"].unsqueeze(0).expand(batch, -1, -1).contiguous().to(device)
    matrix = ConfusionMatrix(21, device)
    with torch.inference_mode():
        for _ in range(2):  # warm-up (cuDNN algorithm choice, allocator)
            net(data=data)
        _sync(device)
        start = time.perf_counter()
        passes = max(1, repeats // batch)
        for _ in range(passes):
            matrix.update(label, net(data=data)["score"].argmax(dim=1))
        _sync(device)
    return passes * batch / (time.perf_counter() - start)


def write_mixed(folder: str, count: int, sizes: list[tuple[int, int]]) -> None:
    """``count`` images cycling through ``sizes`` (width, height), in one val2011 split list."""
    from vocgen import write_voc

    ids = [f"2000_{i:06d}" for i in range(count)]
    for i, image_id in enumerate(ids):
        write_voc(folder, [image_id], size=sizes[i % len(sizes)], seed=i)
    split = Path(folder) / "VOC2011" / "ImageSets" / "Segmentation" / "val.txt"
    split.write_text("".join(f"{i}\n" for i in ids))


def parse_sizes(text: str) -> list[tuple[int, int]]:
    """``"500x375,375x500"`` as [(500, 375), (375, 500)] (width x height)."""
    sizes = []
    for item in text.split(","):
        width, height = (int(v) for v in item.lower().split("x"))
        sizes.append((width, height))
    return sizes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--count", type=int, default=48, help="images in the generated dataset")
    parser.add_argument(
        "--sizes",
        default="500x375,375x500,500x333,500x500",
        help="WIDTHxHEIGHT of the images, comma-separated, used in turn (VOC's common sizes)",
    )
    parser.add_argument("--batch-size", type=int, default=4, help="the batched end-to-end run")
    parser.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1))
    parser.add_argument("--model", default="voc-fcn8s", help="official FCN definition to time")
    parser.add_argument("--width", type=float, default=1.0, help="scale the feature layers (CPU runs)")
    parser.add_argument("--weights", help="registry name: time the cached real weights instead")
    parser.add_argument("--repeats", type=int, default=None, help="forward passes for inference only")
    args = parser.parse_args()

    device = torch.device(args.device)
    sizes = parse_sizes(args.sizes)
    with tempfile.TemporaryDirectory() as folder:
        write_mixed(folder, args.count, sizes)
        dataset = VOCSegmentation(folder, "val2011")
        net = build_net(args.model, args.width, args.weights, device)
        repeats = args.repeats or args.count
        rows = [
            ("decode only", decode_only(dataset, args.workers, device)),
            ("inference only, batch 1", inference_only(net, dataset, device, repeats)),
            (
                f"inference only, batch {args.batch_size}",
                inference_only(net, dataset, device, repeats, args.batch_size),
            ),
        ]
        _sync(device)
        # One untimed pass per configuration over a full batch of each size: per-shape set-up (cuDNN
        # algorithm choice, the CPU graph's border plans) is paid before the timed runs.
        warm = VOCSegmentation(folder, "val2011", limit=min(args.count, len(sizes) * args.batch_size))
        for batch_size in (1, args.batch_size):
            evaluate_model(net, warm, device=device, workers=args.workers, batch_size=batch_size)
        single = evaluate_model(net, dataset, device=device, workers=args.workers)
        rows.append(("end to end, batch 1", single.images_per_second))
        batched = evaluate_model(
            net, dataset, device=device, workers=args.workers, batch_size=args.batch_size
        )
        rows.append((f"end to end, batch {args.batch_size} (grouped by size)", batched.images_per_second))
        same = np.array_equal(single.matrices["semantic"], batched.matrices["semantic"])
    name = args.weights or (f"{args.model} (random weights, width {args.width})")
    shown = ", ".join(f"{w}x{h}" for w, h in sizes)
    print(f"{name}, {args.count} images of sizes {shown} in turn, {args.workers} workers, device {device}")
    if device.type == "cuda":
        print(f"GPU: {torch.cuda.get_device_name(device)}")
    print(f"confusion matrix at batch {args.batch_size} equal to batch 1: {'yes' if same else 'NO'}")
    for note in batched.notes:
        print(f"note: {note}")
    print("| stage | images/s |")
    print("|---|---|")
    for stage, rate in rows:
        print(f"| {stage} | {rate:.2f} |")


if __name__ == "__main__":
    main()
