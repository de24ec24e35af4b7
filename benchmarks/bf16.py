"""bf16 against fp32 on the FCN nets: forward time side by side, argmax agreement, mean IU change.

For each ``--models`` net (default the three PASCAL VOC FCNs), built as the commands build it (the
default CPU graph; cached released weights when the cache has them, else seeded random ones), and
its bf16 twin as ``--precision bf16`` runs it (:mod:`converters.graph.precision`: weights cast once,
float32 outputs), it prints:

- the forward time at ``--size`` (default the paper's 500x500) in fp32 and in bf16, best and median
  of ``--runs`` passes taken in turn (fp32, bf16, fp32, ...), and the speed-up;
- the argmax agreement of the two over every pixel of a small VOC-style set (``tests/vocgen.py``
  makes ``--images`` of them; ``--voc-root`` takes real PASCAL VOC, ``--split``, ``--limit``);
- the mean IU of each on that set and its change (bf16 minus fp32, in points). With random weights
  the mean IU itself means nothing; its change still says how much bf16 moves the score.

Where the CPU has neither AMX nor AVX-512 BF16, it says that bf16 is not supported here and measures
nothing; ``FCN_PORT_FORCE_BF16=1`` measures anyway, labelled "forced, emulated: not representative"
(oneDNN emulates bf16 there, tens of times slower than fp32), and then defaults to a quarter-width
net at 128x128 on four 96x72 images so that it ends in minutes (``--width``, ``--size``,
``--images``, ``--image-size`` override).

    python benchmarks/bf16.py                                    # where AMX / AVX-512 BF16 exist
    python benchmarks/bf16.py --voc-root ~/data/VOCdevkit --limit 50
    FCN_PORT_FORCE_BF16=1 python benchmarks/bf16.py --models voc-fcn8s   # anywhere, not representative

Measured on the project's Intel Xeon (2026-12-07, 2 cores, AMX and AVX-512 BF16, torch 2.13,
2 threads; random weights, forward at 500x500, 8 generated 500x375 images), on the final code of
that stop (bf16 blobs channels-last, transposed convolutions in float32):

| net | fp32 ms (best / median) | bf16 ms (best / median) | speed-up | agreement | mean IU fp32 / bf16 |
|---|---|---|---|---|---|
| voc-fcn32s | 1154 / 1156 | 321 / 322 | 3.59x | 98.976% | 1.32 / 1.33 (+0.01) |
| voc-fcn16s | 1134 / 1164 | 311 / 312 | 3.73x | 98.785% | 1.32 / 1.32 (+0.00) |
| voc-fcn8s | 1189 / 1190 | 330 / 332 | 3.59x | 98.892% | 1.40 / 1.41 (+0.01) |

(an earlier run that hour: 4.50x, 4.10x, 4.12x, the same agreement). Before bf16 ran channels-last
with float32 transposed convolutions it gave 0.54x (FCN-32s: its 64x64 upsampling took 1.6 s in
oneDNN's bf16 kernel), 1.36x and 1.95x. With random weights the mean IU itself means nothing; its
change is the point.

On the project's AMD EPYC (2026-12-06, AVX2 only, 2 cores shared with other jobs, load average 8):
``bf16 is not supported here: AMD EPYC has neither AMX nor AVX-512 BF16``.
Forced (``FCN_PORT_FORCE_BF16=1``, emulated: the times are not representative, the agreement is
bf16's), random weights at width 0.25, forward at 128x128, 4 generated 96x72 images:

| net | fp32 ms (best / median) | bf16 ms (best / median) | speed-up | argmax agreement | mean IU change |
|---|---|---|---|---|---|
| voc-fcn32s | 997 / 1064 | 2639 / 2748 | 0.39x | 99.020% | +0.00 |
| voc-fcn16s | 1776 / 2337 | 7816 / 8815 | 0.27x | 99.081% | +0.01 |
| voc-fcn8s | 1189 / 1529 | 4457 / 4587 | 0.33x | 99.005% | +0.00 |

(mean IU of random weights on that set: 1.2-1.3 in both precisions). At full width (``--width 1
--size 48 --runs 1 --images 2 --image-size 64x48``, random weights, one pass each): voc-fcn32s
1765 ms fp32 / 37158 ms emulated bf16, agreement 98.861%, mean IU +0.01; voc-fcn16s 2000 / 24080
ms, 98.796%, +0.00; voc-fcn8s 1502 / 23507 ms, 98.958%, -0.01.
Not yet measured with the released weights (none cached here).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from converters.graph.precision import bf16_support, reduced  # noqa: E402
from eval.timing import parse_size, synthetic_input  # noqa: E402

VOC_MODELS = ("voc-fcn32s", "voc-fcn16s", "voc-fcn8s")
VOC_CLASSES = 21


def build_net(model: str, width: float) -> tuple[torch.nn.Module, str]:
    """The default CPU graph of ``model`` with cached weights (width 1) or seeded random ones."""
    torch.manual_seed(0)
    if width == 1.0:
        from weights.models import load_model

        loaded = load_model(model, "cpu", weights="cached", progress=False)
        return loaded.net, "cached" if loaded.weights_path else "random"  # type: ignore[return-value]
    from converters import load_caffe
    from converters.fcn.nets import net_definition

    net = load_caffe(net_definition(model, "deploy", width=width), None, strict=False).eval()
    return net, f"random, width {width}"


def time_pair(fp32: torch.nn.Module, bf16: torch.nn.Module, x: torch.Tensor, runs: int) -> dict:
    """Best and median milliseconds of each, passes taken in turn after one untimed pass each."""
    times: dict[str, list[float]] = {"fp32": [], "bf16": []}
    with torch.inference_mode():
        fp32(data=x)
        bf16(data=x)
        for _ in range(runs):
            for name, net in (("fp32", fp32), ("bf16", bf16)):
                start = time.perf_counter()
                net(data=x)
                times[name].append(1000 * (time.perf_counter() - start))
    return {k: {"best": min(v), "median": statistics.median(v)} for k, v in times.items()}


def agreement(fp32: torch.nn.Module, bf16: torch.nn.Module, dataset) -> dict:
    """Argmax agreement over every pixel, and both mean IUs where the net scores VOC's 21 classes."""
    from eval.metrics import ConfusionMatrix, scores

    same = total = 0
    matrices = {"fp32": ConfusionMatrix(VOC_CLASSES), "bf16": ConfusionMatrix(VOC_CLASSES)}
    voc_like = True
    with torch.inference_mode():
        for index in range(len(dataset)):
            sample = dataset[index]
            x = sample["inputs"]["color"][None]
            a = fp32(data=x)["score"]
            b = bf16(data=x)["score"]
            assert b.dtype == torch.float32
            pa, pb = a.argmax(dim=1), b.argmax(dim=1)
            same += int((pa == pb).sum())
            total += pa.numel()
            voc_like = voc_like and a.shape[1] == VOC_CLASSES
            if voc_like:
                label = sample["labels"]["semantic"][None]
                matrices["fp32"].update(label, pa)
                matrices["bf16"].update(label, pb)
    result = {"agreement": same / total, "pixels": total}
    if voc_like:
        result.update({k: scores(m.numpy()).mean_iu for k, m in matrices.items()})
    return result


def make_dataset(args: argparse.Namespace, folder: str):
    from eval.datasets import VOCSegmentation

    if args.voc_root:
        return VOCSegmentation(args.voc_root, args.split, ["color"], args.limit), f"PASCAL VOC {args.split}"
    from vocgen import write_voc

    ids = [f"2000_{i:06d}" for i in range(args.images)]
    width, height = args.image_size
    write_voc(folder, ids, size=(width, height), seed=1)
    described = f"{args.images} generated VOC-style images of {width}x{height} (tests/vocgen.py)"
    return VOCSegmentation(folder, "val2011", ["color"]), described


def _wxh(text: str) -> tuple[int, int]:
    width, height = (int(v) for v in text.lower().split("x"))
    return width, height


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(VOC_MODELS))
    parser.add_argument("--size", help="forward size HxW (default 500x500; forced emulation: 128x128)")
    parser.add_argument("--width", type=float, help="feature width (default 1; forced emulation: 0.25)")
    parser.add_argument("--runs", type=int, default=3, help="timed passes of each (default 3)")
    parser.add_argument("--voc-root", help="real PASCAL VOC (VOCdevkit or VOC2011/VOC2012) instead")
    parser.add_argument("--split", default="seg11valid", help="with --voc-root (default seg11valid)")
    parser.add_argument("--limit", type=int, help="with --voc-root: the first N images")
    parser.add_argument("--images", type=int, help="generated images (default 8; forced emulation: 4)")
    parser.add_argument("--image-size", type=_wxh, help="generated WxH (default 500x375; emulation: 96x72)")
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    support = bf16_support("cpu")
    capabilities = getattr(torch.cpu, "get_capabilities", dict)()
    name = str(capabilities.get("cpu_name") or "this CPU")
    if not support.allowed:
        print(
            f"bf16 is not supported here: {name} has neither AMX nor AVX-512 BF16 "
            "(nothing measured; FCN_PORT_FORCE_BF16=1 measures it anyway, emulated: not representative)"
        )
        return 0
    emulated = not support.native
    size = parse_size(args.size) if args.size else ((128, 128) if emulated else (500, 500))
    width = args.width if args.width is not None else (0.25 if emulated else 1.0)
    args.images = args.images or (4 if emulated else 8)
    args.image_size = args.image_size or ((96, 72) if emulated else (500, 375))
    print(f"# bf16 against fp32: {support.label}")
    print()
    print(
        f"{name}, torch {torch.__version__}, {torch.get_num_threads()} threads; forward at "
        f"{size[0]}x{size[1]}, {args.runs} passes of each in turn"
    )
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        dataset, described = make_dataset(args, folder)
        print(f"agreement and mean IU on {described}")
        print()
        print("| net | weights | fp32 ms (best / median) | bf16 ms (best / median) | speed-up (median) "
              "| argmax agreement | mean IU fp32 | mean IU bf16 | change |")
        print("|---|---|---|---|---|---|---|---|---|")
        for model in args.models:
            fp32, weights = build_net(model, width)
            bf16 = reduced(fp32, "bf16", "cpu")
            x = synthetic_input(*size)
            times = time_pair(fp32, bf16, x, args.runs)
            agree = agreement(fp32, bf16, dataset)
            speed = times["fp32"]["median"] / times["bf16"]["median"]
            miou = (
                [f"{agree['fp32']:.2f}", f"{agree['bf16']:.2f}", f"{agree['bf16'] - agree['fp32']:+.2f}"]
                if "fp32" in agree else ["-", "-", "-"]
            )
            print(
                f"| {model} | {weights} | {times['fp32']['best']:.0f} / {times['fp32']['median']:.0f} "
                f"| {times['bf16']['best']:.0f} / {times['bf16']['median']:.0f} | {speed:.2f}x "
                f"| {100 * agree['agreement']:.3f}% | " + " | ".join(miou) + " |",
                flush=True,
            )
            rows.append({"model": model, "weights": weights, "times_ms": times, "speed_up": speed, **agree})
    if emulated:
        print()
        print("forced, emulated: not representative (this CPU computes bf16 in software; the times say "
              "nothing about a CPU with AMX or AVX-512 BF16)")
    if args.json:
        payload = {"support": support.label, "size": size, "width": width, "data": described, "rows": rows}
        Path(args.json).write_text(json.dumps(payload, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
