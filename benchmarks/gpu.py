"""The GPU table in one command: the paper's forward times (Tables 1 and 3, Tesla K40c) beside ours on
this machine's GPU in five configurations, a parity check of the GPU against the CPU, and FCN-8s
training iterations per second.

    python benchmarks/gpu.py [--out DIR] [--models voc-fcn8s ...] [--budget-s 450]
    ./benchmarks/gpu.sh [the same options]          # creates or reuses .venv first (scripts/venv.sh)
    python benchmarks/gpu.py --device cpu --quick   # the test mode: every code path, tiny, on the CPU

For each model (default: the nets of the paper's timing tables that have a definition: FCN-32s, which
is Table 1's FCN-VGG16, FCN-16s, FCN-8s of Table 3, FCN-AlexNet; FCN-GoogLeNet was never released and
is listed with its K40c figure only) the deploy net is built at full width with random fan-in-scaled
weights (the time does not depend on the values) and a 500x500 image-like input, and
``eval.timing.time_variant`` times it (median of 20 synchronised passes after 3 warm-up passes, the
paper's count) as:

- ``fp32``: plain IEEE fp32 (TF32 off), the reference; ``tf32``: TF32 convolutions and matmuls;
- ``channels_last``: the net and input in channels-last memory format (fp32, TF32 off);
- ``cuda_graphs``: the forward captured once in a CUDA graph and replayed (fp32, TF32 off);
- ``bf16``: under ``torch.autocast(dtype=bfloat16)``; ``all``: the four together.

Parity: the same net and input run on the CPU (the plain fp32 graph, Caffe's numbers within the
parity tests' tolerance) give the reference; each GPU row reports its largest absolute difference,
that difference over the largest CPU score, and the share of pixels whose argmax class agrees.
Training: the official ``voc-fcn8s`` train net (``converters.fcn.nets``) with the official solver
values (SGD, momentum 0.99, ``base_lr`` 1e-14, weight decay 5e-4, ``iter_size`` 1) through
``converters.load_solver``, random start weights (bilinear upsampling, ``reproduce.training.init``)
and one 500x500 picture with random labels, ``--train-iters`` timed iterations after
``--train-warmup``, with TF32 off (Caffe's arithmetic) and on.

Everything stays inside ``--budget-s`` seconds (default 450, counted from the start of the
process; 30 s under 8 minutes for Python's start, ``gpu.sh``'s probe and a step that outruns its
estimate): a step that would end past the budget, expected to take as long as the one before it
(the previous row of the model, the previous model, the previous training iteration), is skipped
with a note, and the last ``min(90, budget / 4)`` seconds are kept for training. The results go to
``--out`` (default ``results/gpu``), rewritten after each model so that a run killed from outside
keeps its finished rows: ``gpu.json`` (every number, the settings and the software versions),
``gpu.md`` (the tables printed) and ``gpu.png`` (a bar chart of the forward times beside the K40c's,
drawn with PIL as ``reproduce.training.log`` draws its plot).

Without a CUDA device it says so in one line and exits 2. ``--quick`` (any device; ``--device cpu``
needs it) runs the same code paths on tiny sizes: width 1/16 nets at 64x64, 2 timed passes, 2 training
iterations at 64x64; the configurations that need CUDA (TF32, CUDA graphs) report ``n/a on cpu``.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import resource
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

STARTED = time.monotonic()  # the budget counts from here (before torch loads)

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from converters import cli  # noqa: E402
from converters.errors import UsageError  # noqa: E402
from converters.fcn.nets import MODELS, net_definition  # noqa: E402
from converters.graph.builder import build_graph  # noqa: E402
from eval import timing  # noqa: E402
from eval.timing import MIN_RUNS, PaperTime, Variant, argmax_agreement, paper_times, synchronize  # noqa: E402

DEFAULT_MODELS = ("voc-fcn32s", "voc-fcn16s", "voc-fcn8s", "voc-fcn-alexnet")
PAPER_ONLY = {"fcn-googlenet": "not built: no FCN-GoogLeNet definition or weights were released"}
TRAIN_MODEL = "voc-fcn8s"
PROG = "python benchmarks/gpu.py"


@dataclass(frozen=True)
class Config:
    """One column of the table: a way to run the forward pass (an ``eval.timing.Variant``)."""

    key: str
    label: str
    variant: Variant


CONFIGS = (
    Config("fp32", "fp32 (TF32 off)", Variant()),
    Config("tf32", "TF32", Variant(tf32=True)),
    Config("channels_last", "channels-last", Variant(channels_last=True)),
    Config("cuda_graphs", "CUDA graphs", Variant(cuda_graphs=True)),
    Config("bf16", "bf16 autocast", Variant(autocast="bf16")),
    Config("all", "all four", Variant(channels_last=True, tf32=True, autocast="bf16", cuda_graphs=True)),
)


@dataclass(frozen=True)
class Settings:
    """Sizes and counts: the paper's (full) or tiny ones (``--quick``)."""

    size: tuple[int, int] = (500, 500)
    width: float = 1.0
    runs: int = MIN_RUNS
    warmup: int = 3
    train_size: tuple[int, int] = (500, 500)
    train_iters: int = 5
    train_warmup: int = 2


QUICK = Settings(
    size=(64, 64), width=1 / 16, runs=2, warmup=1, train_size=(64, 64), train_iters=2, train_warmup=1
)


class Budget:
    """Seconds left of ``seconds`` since ``start`` on ``clock``; ``reserve`` of them kept for training."""

    def __init__(
        self,
        seconds: float,
        *,
        start: float = STARTED,
        reserve: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.seconds, self.start, self.clock = float(seconds), start, clock
        self.reserve = min(90.0, self.seconds / 4) if reserve is None else float(reserve)

    def elapsed(self) -> float:
        return self.clock() - self.start

    def left(self, keep_reserve: bool = False) -> float:
        return self.seconds - self.elapsed() - (self.reserve if keep_reserve else 0.0)

    def fits(self, seconds: float, keep_reserve: bool = False) -> bool:
        """Whether a step expected to take ``seconds`` ends within the budget (and, with
        ``keep_reserve``, before the training's reserve)."""
        return self.left(keep_reserve) > 0 and self.left(keep_reserve) >= seconds


SKIPPED_BUDGET = "skipped: time budget spent"


# --------------------------------------------------------------------------------------------
# Forward passes.


def unavailable(variant: Variant, device: torch.device) -> str | None:
    """Why ``variant`` cannot run on ``device`` (``"n/a on cpu"``), or ``None``."""
    needs_cuda = variant.tf32 or (variant.cuda_graphs and not timing.cuda_graphs_supported(device))
    return f"n/a on {device.type}" if needs_cuda and device.type != "cuda" else None


def parity(reference: Mapping[str, torch.Tensor], outputs: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """Per output blob and overall (the worst blob): the largest absolute difference from the
    reference, that over the reference's largest magnitude, and the share of argmax agreement."""
    agreement = argmax_agreement(reference, outputs)
    by_output = {}
    for name, ref in reference.items():
        diff = float((outputs[name].float() - ref.float()).abs().max())
        scale = float(ref.float().abs().max())
        by_output[name] = {
            "max_abs": diff,
            "max_rel": diff / scale if scale > 0 else (0.0 if diff == 0 else math.inf),
            "argmax_agreement": agreement[name],
        }
    return {
        "max_abs": max(v["max_abs"] for v in by_output.values()),
        "max_rel": max(v["max_rel"] for v in by_output.values()),
        "argmax_agreement": min(v["argmax_agreement"] for v in by_output.values()),
        "by_output": by_output,
    }


def build_net(
    model: str, split: str, width: float, shapes: Mapping[str, Sequence[int]] | None = None, **options: Any
) -> torch.nn.Module:
    """``model``'s ``split`` net at ``width`` with random weights (seed 0); ``options`` go to
    ``build_graph`` (``device``, ``initialise``)."""
    return build_graph(
        net_definition(model, split, width=width), None, seed=0, input_shapes=shapes, **options
    )


def image_inputs(model: str, width: float, size: tuple[int, int]) -> dict[str, tuple[int, ...]]:
    """Batch-1 shapes at ``size`` of the deploy net's image inputs (from a build on the meta device)."""
    meta = build_graph(net_definition(model, "deploy", width=width), None, device="meta")
    return {name: (1, int(s[1]), *size) for name, s in meta.caffe.inputs.items() if len(s) == 4}


def paper_label(papers: Sequence[PaperTime]) -> str:
    """``FCN-8s, Table 3`` for the first (the model's own) published time."""
    if not papers:
        return "-"
    table = re.search(r"Table \d+", papers[0].source)
    return f"{papers[0].net}, {table.group(0)}" if table else papers[0].net


def bench_model(
    model: str,
    settings: Settings,
    device: torch.device,
    budget: Budget,
    say: Callable[[str], None] = lambda line: None,
    expected_s: float = 0.0,
) -> dict[str, Any]:
    """Every configuration of ``model`` timed on ``device``, each checked against the CPU; skipped
    when the ``expected_s`` it should take (the previous model's time) would end past the budget."""
    papers = paper_times(model)
    entry: dict[str, Any] = {
        "model": model,
        "paper": [asdict(p) for p in papers],
        "paper_label": paper_label(papers),
    }
    if model in PAPER_ONLY:
        return entry | {"skipped": PAPER_ONLY[model], "rows": []}
    if not budget.fits(expected_s, keep_reserve=True):
        return entry | {"skipped": SKIPPED_BUDGET, "rows": []}
    shapes = image_inputs(model, settings.width, settings.size)
    net = build_net(model, "deploy", settings.width, shapes)
    inputs = {
        name: timing.synthetic_input(*shape[2:], channels=shape[1], seed=i)
        for i, (name, shape) in enumerate(shapes.items())
    }
    with torch.inference_mode():
        start = time.perf_counter()
        reference = {k: v.detach().float() for k, v in timing._as_outputs(net(**inputs)).items()}
        cpu_ms = (time.perf_counter() - start) * 1000.0
    # The same weights on the device, built there as the project builds for a device (on the CPU too,
    # so that the tests run this path).
    on_device = build_net(model, "deploy", settings.width, shapes, device=device, initialise=False)
    on_device.load_state_dict(net.state_dict())
    feed = {k: v.to(device) for k, v in inputs.items()}
    entry |= {
        "input": list(settings.size),
        "width": settings.width,
        "parameters": timing.module_parameter_count(net),
        "cpu_reference_ms": cpu_ms,
        "cpu_threads": torch.get_num_threads(),
        "rows": [],
    }
    fp32_outputs = None
    expected = 0.0  # seconds: the longest row of this model so far (the next one is expected to take as long)
    for config in CONFIGS:
        row: dict[str, Any] = {"config": config.key, "label": config.label, "variant": config.variant.label}
        entry["rows"].append(row)
        reason = unavailable(config.variant, device)
        if reason is None and not budget.fits(expected, keep_reserve=True):
            reason = SKIPPED_BUDGET
        if reason is not None:
            row["status"] = reason
            continue
        began = budget.clock()
        try:
            timed, outputs = timing.time_variant(
                on_device, feed, config.variant, runs=settings.runs, warmup=settings.warmup, device=device
            )
        except (RuntimeError, ValueError) as exc:  # a configuration this GPU or build refuses: say so
            row["status"] = "error: " + cli.one_line(exc)
            say(f"{model} {config.label}: {row['status']}")
            continue
        finally:
            row["wall_s"] = budget.clock() - began
            expected = max(expected, row["wall_s"])
        row["status"] = "ok"
        row["timing"] = asdict(timed)
        row["parity"] = parity(reference, outputs)
        if fp32_outputs is None and config.key == "fp32":
            fp32_outputs = outputs
        if fp32_outputs is not None:
            row["agreement_vs_fp32"] = min(argmax_agreement(fp32_outputs, outputs).values())
        say(f"{model} {config.label}: {timed.median_ms:.2f} ms")
    del on_device, feed
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return entry


# --------------------------------------------------------------------------------------------
# Training.


def train_input_shapes(model: str, size: tuple[int, int]) -> dict[str, tuple[int, ...]]:
    """The train net's input blobs at ``size`` (labels and depth one channel), as ``reproduce.train``."""
    from reproduce.training.data import input_blobs

    return {
        blob: (1, 1 if kind == "label" or blob == "depth" else 3, *size)
        for blob, (kind, _) in input_blobs(model).items()
    }


def train_feeds(shapes: Mapping[str, Sequence[int]], classes: int = 21) -> dict[str, torch.Tensor]:
    """One picture-sized random input and random labels (a 20-pixel band of 255, ignored)."""
    rng = np.random.default_rng(0)
    feeds = {}
    for name, shape in shapes.items():
        if name == "label":
            label = rng.integers(0, classes, shape).astype(np.float32)
            label[..., :20] = 255
            feeds[name] = torch.from_numpy(label)
        else:
            feeds[name] = torch.from_numpy((rng.standard_normal(shape) * 60).astype(np.float32))
    return feeds


def bench_training(
    settings: Settings,
    device: torch.device,
    budget: Budget,
    model: str = TRAIN_MODEL,
    say: Callable[[str], None] = lambda line: None,
) -> dict[str, Any]:
    """Iterations per second of ``model``'s official train net and solver, TF32 off and on."""
    from reproduce.training.init import start_weights
    from reproduce.training.recipe import solver_parameter

    shapes = train_input_shapes(model, settings.train_size)
    result: dict[str, Any] = {
        "model": model,
        "input": list(settings.train_size),
        "width": settings.width,
        "warmup": settings.train_warmup,
        "iters": settings.train_iters,
        "rows": [],
    }
    if budget.left() <= 0:
        return result | {"skipped": SKIPPED_BUDGET}
    net = net_definition(model, "train", width=settings.width)
    param = solver_parameter(model, nets=False)
    param.remove("snapshot")
    param.set("train_net_param", net)
    result["solver"] = {
        k: param.get(k) for k in ("base_lr", "momentum", "weight_decay", "iter_size", "lr_policy")
    }
    meta = build_graph(net, phase="TRAIN", with_loss=True, input_shapes=shapes, device="meta", strict=False)
    start = start_weights(model, ["random"], meta.caffe.parameter_shapes, width=settings.width, seed=0)
    feeds = {k: v.to(device) for k, v in train_feeds(shapes).items()}
    expected = 0.0  # seconds: the previous row's (the next one is expected to take as long)
    for key, label, tf32 in (("fp32", "fp32 (TF32 off)", False), ("tf32", "TF32", True)):
        row: dict[str, Any] = {"config": key, "label": label}
        result["rows"].append(row)
        if tf32 and device.type != "cuda":
            row["status"] = f"n/a on {device.type}"
            continue
        if not budget.fits(expected):
            row["status"] = SKIPPED_BUDGET
            continue
        began = budget.clock()
        try:
            row |= _train_row(param, start.weights, shapes, feeds, settings, device, budget, tf32)
        except (RuntimeError, ValueError) as exc:
            row["status"] = "error: " + cli.one_line(exc)
        row["wall_s"] = expected = budget.clock() - began
        say(f"training {label}: {row.get('it_per_s', 0):.2f} it/s ({row['status']})")
    return result


def _train_row(
    param, weights, shapes, feeds, settings: Settings, device: torch.device, budget: Budget, tf32: bool
) -> dict[str, Any]:
    from converters.train import load_solver

    solver = load_solver(param, weights, device=device, input_shapes=shapes)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    seconds, losses = [], []
    status = "ok"
    with timing._fp32_precision(device, tf32):
        for i in range(settings.train_warmup + settings.train_iters):
            if seconds and not budget.fits(max(seconds)):
                status = f"cut short by the time budget after {len(seconds)} timed iterations"
                break
            synchronize(device)
            begin = time.perf_counter()
            losses.append(solver.step(feeds))
            synchronize(device)
            if i >= settings.train_warmup:
                seconds.append(time.perf_counter() - begin)
    median = statistics.median(seconds)
    peak = (
        torch.cuda.max_memory_allocated(device)
        if device.type == "cuda"
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    ) / 2**20
    return {
        "status": status,
        "seconds": seconds,
        "s_per_it": median,
        "it_per_s": 1.0 / median,
        "losses": losses,
        "peak_mib": peak,
        "peak_kind": "torch.cuda.max_memory_allocated" if device.type == "cuda" else "process RSS",
    }


# --------------------------------------------------------------------------------------------
# Reports.


def _ms(row: Mapping[str, Any]) -> float | None:
    return row["timing"]["median_ms"] if row.get("status") == "ok" else None


def _cell(row: Mapping[str, Any]) -> str:
    ms = _ms(row)
    if ms is not None:
        return f"{ms:.1f} ms" if ms >= 10 else f"{ms:.2f} ms"
    return "skipped (budget)" if row["status"] == SKIPPED_BUDGET else str(row["status"])


def _pct(x: float) -> str:
    return f"{100 * x:.3f}%"


def markdown(result: Mapping[str, Any]) -> str:
    """The three tables: forward times beside the K40c, parity against the CPU, training speed."""
    s = result["settings"]
    h, w = s["size"]
    lines = [
        f"# GPU timings: {result['device_name']}",
        "",
        f"torch {result['torch']}, CUDA {result['cuda'] or '-'}, cuDNN {result['cudnn'] or '-'}; "
        f"{h}x{w} input, batch 1, width {s['width']:g}, random weights; median of {s['runs']} synchronised "
        f"passes after {s['warmup']} warm-up"
        + (" (--quick: tiny nets, not the paper's sizes)" if result["quick"] else ""),
        "",
        "| net (paper) | model | K40c (paper) | "
        + " | ".join(c.label for c in CONFIGS)
        + " | best vs K40c |",
        "|---|---|---|" + "---|" * len(CONFIGS) + "---|",
    ]
    for entry in result["models"]:
        paper_ms = entry["paper"][0]["ms"] if entry["paper"] else None
        k40 = f"{paper_ms:.0f} ms" if paper_ms else "-"
        model = entry["model"] if entry["model"] not in PAPER_ONLY else "-"
        head = f"| {entry['paper_label']} | {model} | {k40} |"
        if entry.get("skipped"):
            lines.append(f"{head} {entry['skipped']} |" + " |" * len(CONFIGS))
            continue
        times = [t for t in (_ms(r) for r in entry["rows"]) if t]
        best = f"{paper_ms / min(times):.1f}x" if times and paper_ms else "-"
        best = "- (quick)" if result["quick"] else best  # tiny nets: no comparison with the paper's
        lines.append(f"{head} " + " | ".join(_cell(r) for r in entry["rows"]) + f" | {best} |")
    lines += [
        "",
        "K40c: the paper's forward time at 500x500 (CVPR 2015 Tables 1 and 3, 20 trials); a net without a "
        "time of its own (FCN-16s) shows its backbone's (FCN-VGG16, timed as FCN-32s). best vs K40c: the "
        "paper's time over our fastest configuration.",
        "",
        "## Parity: the device against the CPU (plain fp32 graph, same weights and input)",
        "",
        "| model | configuration | max abs error | max abs error / max CPU score | argmax agreement "
        "| argmax agreement vs device fp32 |",
        "|---|---|---|---|---|---|",
    ]
    for entry in result["models"]:
        for row in entry.get("rows", []):
            if row.get("status") != "ok":
                continue
            p = row["parity"]
            vs = row.get("agreement_vs_fp32")
            lines.append(
                f"| {entry['model']} | {row['label']} | {p['max_abs']:.3g} | {p['max_rel']:.3g} | "
                f"{_pct(p['argmax_agreement'])} | {_pct(vs) if vs is not None else '-'} |"
            )
    t = result["training"]
    th, tw = t["input"]
    lines += ["", f"## Training: {t['model']} at {th}x{tw}, batch 1, official solver values", ""]
    if t.get("solver"):
        lines.append(
            ", ".join(f"{k} {v}" for k, v in t["solver"].items()) + f"; {t['iters']} timed iterations "
            f"after {t['warmup']} warm-up; random start weights (bilinear upsampling)"
        )
        lines.append("")
    if t.get("skipped"):
        lines.append(t["skipped"])
    else:
        lines += [
            "| precision | it/s | s/it (median) | peak MiB | first losses | status |",
            "|---|---|---|---|---|---|",
        ]
        for row in t["rows"]:
            if "it_per_s" in row:
                losses = ", ".join(f"{v:.6g}" for v in row["losses"][:2])
                lines.append(
                    f"| {row['label']} | {row['it_per_s']:.2f} | {row['s_per_it']:.3f} | "
                    f"{row['peak_mib']:.0f} | {losses} | {row['status']} |"
                )
            else:
                lines.append(f"| {row['label']} | - | - | - | - | {row['status']} |")
    done = "" if result.get("complete", True) else " so far (the run goes on: a partial report)"
    lines += ["", f"total {result['elapsed_s']:.0f} s of a {result['budget_s']:.0f} s budget{done}"]
    lines += [f"note: {n}" for n in result["notes"]]
    return "\n".join(lines) + "\n"


_COLOURS = {
    "K40c": (150, 150, 150),
    "fp32": (31, 119, 180),
    "tf32": (255, 127, 14),
    "channels_last": (44, 160, 44),
    "cuda_graphs": (214, 39, 40),
    "bf16": (148, 103, 189),
    "all": (140, 86, 75),
}


def draw_plot(result: Mapping[str, Any]):
    """Horizontal bars per model: the K40c's time and each configuration's median, in ms (PIL)."""
    from PIL import Image, ImageDraw, ImageFont

    groups = []
    for entry in result["models"]:
        bars = [("K40c", "K40c (paper)", entry["paper"][0]["ms"])] if entry["paper"] else []
        bars += [(r["config"], r["label"], _ms(r)) for r in entry.get("rows", []) if _ms(r) is not None]
        groups.append((entry["model"] if entry["model"] not in PAPER_ONLY else entry["paper_label"], bars))
    bar_h, gap, left, right_pad = 12, 18, 150, 90
    width = 900
    height = 70 + sum(len(b) * bar_h + gap for _, b in groups) + 40
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    s = result["settings"]
    title = f"forward ms at {s['size'][0]}x{s['size'][1]}, {result['device_name']} vs the paper's K40c" + (
        " (quick mode)" if result["quick"] else ""
    )
    draw.text((10, 8), title, fill=(0, 0, 0), font=font)
    x = 10
    for key, colour in _COLOURS.items():  # legend
        draw.rectangle([x, 28, x + 10, 38], fill=colour)
        label = "K40c" if key == "K40c" else next(c.label for c in CONFIGS if c.key == key)
        draw.text((x + 14, 27), label, fill=(0, 0, 0), font=font)
        x += 16 + int(draw.textlength(label, font=font)) + 12
    top_ms = max([ms for _, bars in groups for _, _, ms in bars] or [1.0])
    scale = (width - left - right_pad) / top_ms
    y = 56
    for name, bars in groups:
        draw.text((10, y), name, fill=(0, 0, 0), font=font)
        for key, _, ms in bars:
            draw.rectangle([left, y, left + max(1, ms * scale), y + bar_h - 2], fill=_COLOURS.get(key))
            text = f"{ms:.0f} ms" if ms >= 100 else f"{ms:.3g} ms"
            draw.text((left + ms * scale + 4, y), text, fill=(60, 60, 60), font=font)
            y += bar_h
        y += gap
    t = result["training"]
    speed = "; ".join(f"{r['label']} {r['it_per_s']:.2f} it/s" for r in t["rows"] if "it_per_s" in r)
    draw.text(
        (10, height - 28),
        f"training {t['model']} at {t['input'][0]}x{t['input'][1]}: {speed or '-'}",
        fill=(0, 0, 0),
        font=font,
    )
    return image


def write_outputs(result: Mapping[str, Any], out: Path) -> list[Path]:
    """``gpu.json``, ``gpu.md``, ``gpu.png`` in ``out`` (each written atomically)."""
    from converters.atomic import atomic_write
    from reproduce.training.log import _finite_json

    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "gpu.json", out / "gpu.md", out / "gpu.png"]
    with atomic_write(paths[0], "w") as f:
        json.dump(_finite_json(result), f, indent=1)
    with atomic_write(paths[1], "w") as f:
        f.write(markdown(result))
    with atomic_write(paths[2], "wb") as f:
        draw_plot(result).save(f, format="PNG")
    return paths


# --------------------------------------------------------------------------------------------
# The command.


def no_cuda_reason() -> str:
    """Why there is no CUDA device, in a few words."""
    if torch.version.cuda is None:
        return f"torch {torch.__version__} is a CPU-only build"
    return f"torch {torch.__version__} (CUDA {torch.version.cuda}) sees no GPU"


def run(
    models: Sequence[str],
    device: torch.device,
    settings: Settings,
    budget: Budget,
    *,
    quick: bool = False,
    say: Callable[[str], None] = lambda line: None,
    checkpoint: Callable[[dict[str, Any]], None] = lambda result: None,
) -> dict[str, Any]:
    """Time every model, check parity, time training; the whole result as JSON-ready data.
    ``checkpoint`` gets the result so far after each model (``"complete": false``), so that a run
    killed from outside still leaves its finished rows."""
    result: dict[str, Any] = {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"cpu ({torch.get_num_threads()} threads)",
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if device.type == "cuda" else None,
        "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
        "gpu": _gpu_properties(device),
        "cpu_threads": torch.get_num_threads(),
        "quick": quick,
        "settings": asdict(settings),
        "budget_s": budget.seconds,
        "configs": [{"key": c.key, "label": c.label, "variant": c.variant.label} for c in CONFIGS],
        "models": [],
        "training": {
            "model": TRAIN_MODEL,
            "input": list(settings.train_size),
            "rows": [],
            "skipped": "not run yet",
        },
        "notes": [],
        "complete": False,
    }
    expected = 0.0  # seconds: the previous model's
    for model in models:
        began = budget.clock()
        result["models"].append(bench_model(model, settings, device, budget, say, expected))
        if result["models"][-1]["rows"]:  # built and timed (not skipped)
            expected = budget.clock() - began
        checkpoint(result | {"elapsed_s": budget.elapsed()})
    result["training"] = bench_training(settings, device, budget, say=say)
    skipped = [
        f"{e['model']} {r['label']}"
        for e in result["models"]
        for r in e.get("rows", [])
        if r.get("status") == SKIPPED_BUDGET
    ]
    skipped += [e["model"] for e in result["models"] if e.get("skipped") == SKIPPED_BUDGET]
    if result["training"].get("skipped") == SKIPPED_BUDGET:
        skipped.append("training")
    skipped += [f"training {r['label']}" for r in result["training"]["rows"] if r["status"] == SKIPPED_BUDGET]
    if skipped:
        result["notes"].append(f"the {budget.seconds:.0f} s budget ran out: skipped {', '.join(skipped)}")
    result["elapsed_s"] = budget.elapsed()
    result["complete"] = True
    return result


def _gpu_properties(device: torch.device) -> dict[str, Any] | None:
    if device.type != "cuda":
        return None
    p = torch.cuda.get_device_properties(device)
    return {
        "name": p.name,
        "capability": f"{p.major}.{p.minor}",
        "multiprocessors": p.multi_processor_count,
        "memory_mib": p.total_memory // 2**20,
    }


def build_parser() -> argparse.ArgumentParser:
    parser = cli.Parser(
        prog=PROG,
        description="The GPU table in one command: forward times beside the paper's K40c (TF32 off/on, "
        "channels-last, CUDA graphs, bf16), parity against the CPU, FCN-8s training it/s; JSON, Markdown "
        "and PNG in --out.",
    )
    parser.add_argument(
        "--out", default="results/gpu", help="folder for gpu.json, gpu.md, gpu.png (default results/gpu)"
    )
    parser.add_argument(
        "--models",
        nargs="+",
        default=list(DEFAULT_MODELS) + list(PAPER_ONLY),
        metavar="MODEL",
        help="FCN models (default: the paper's timing tables' nets)",
    )
    parser.add_argument(
        "--budget-s",
        type=float,
        default=450.0,
        help="seconds for the whole run: steps that would end past it are skipped (default 450)",
    )
    parser.add_argument("--device", default=None, help="cuda, cuda:1 ... (default cuda; cpu needs --quick)")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="test mode: tiny nets (width 1/16) at 64x64, 2 passes, 2 training iterations",
    )
    parser.add_argument("--train-iters", type=int, default=None, help="timed training iterations (default 5)")
    parser.add_argument(
        "--train-warmup", type=int, default=None, help="untimed training iterations (default 2)"
    )
    return parser


def _main(argv: Sequence[str] | None, started: float) -> int:
    args = build_parser().parse_args(argv)
    known = set(MODELS) | set(PAPER_ONLY)
    for model in args.models:
        if model not in known:
            raise UsageError(f"--models: unknown model {model!r}; one of {', '.join(sorted(known))}")
    if not args.budget_s > 0:
        raise UsageError(f"--budget-s must be positive, got {args.budget_s}")
    for name in ("train_iters", "train_warmup"):
        value = getattr(args, name)
        if value is not None and value < (1 if name == "train_iters" else 0):
            raise UsageError(
                f"--{name.replace('_', '-')} must be at least {1 if name == 'train_iters' else 0}"
            )
    cli.output_folder(args.out, "--out")
    if args.device is None and not torch.cuda.is_available():
        raise UsageError(
            f"no CUDA device ({no_cuda_reason()}): the GPU table needs one; "
            f"`{PROG} --device cpu --quick` runs its code paths on the CPU"
        )
    device = cli.device(args.device)
    if device.type != "cuda" and not args.quick:
        raise UsageError(
            f"--device {args.device} runs only with --quick (the test mode); the GPU table needs CUDA"
        )
    settings = QUICK if args.quick else Settings()
    overrides = {k: getattr(args, k) for k in ("train_iters", "train_warmup") if getattr(args, k) is not None}
    settings = Settings(**(asdict(settings) | overrides))
    budget = Budget(args.budget_s, start=started)

    def say(line: str) -> None:
        print(f"[{budget.elapsed():5.0f} s] {line}", file=sys.stderr, flush=True)

    out = Path(args.out)
    result = run(
        args.models,
        device,
        settings,
        budget,
        quick=args.quick,
        say=say,
        checkpoint=lambda partial: write_outputs(partial, out),
    )
    paths = write_outputs(result, out)
    sys.stdout.write(markdown(result))
    print("wrote " + ", ".join(map(str, paths)), file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None, *, started: float | None = None) -> int:
    """Run the command: 0 on success, 2 with one ``error:`` line without CUDA or on bad input.
    ``started``: when the budget began (default: when this module was imported, the process's start
    for the command)."""
    return cli.run(lambda: _main(argv, STARTED if started is None else started))


if __name__ == "__main__":
    sys.exit(main())
